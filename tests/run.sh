#!/usr/bin/env bash
# The project's test command (README.md). Tiers run fastest first:
#   1. format and lint
#   2. unit tests and the in-process integration tests (real QUIC + mTLS,
#      fake container runtime)
#   3. real-stack tests against containerd (installs what it needs; root)
# Set OI_TIERS to run a subset, e.g. OI_TIERS="unit" or OI_TIERS="lint unit".
set -euo pipefail
cd "$(dirname "$0")/.."
tiers=${OI_TIERS:-"lint unit real"}

step() { printf '\n==> %s\n' "$*"; }

step "setup (installs missing build and test packages)"
bash tests/setup.sh

for tier in $tiers; do
  case "$tier" in
    lint)
      step "cargo fmt --check"
      cargo fmt --all -- --check
      step "cargo clippy --all-targets -- -D warnings"
      cargo clippy --workspace --all-targets --quiet -- -D warnings
      ;;
    unit)
      step "unit and in-process integration tests"
      cargo test --workspace
      ;;
    real)
      if [ -x tests/real/run.sh ]; then
        step "real-stack tests (containerd)"
        bash tests/real/run.sh
      else
        step "real-stack tier: none yet"
      fi
      ;;
    *) echo "unknown tier $tier (use lint, unit, real)" >&2; exit 2 ;;
  esac
done
