#!/usr/bin/env bash
# The project's test command (README.md). Tiers run fastest first:
#   1. format and lint
#   2. unit tests and the in-process integration tests (real QUIC + mTLS,
#      fake container runtime)
#   3. real stack (root; installs what it needs): the agent against
#      containerd, rendered control planes from Kubernetes built from
#      Debian's source, and end to end (tests/real/run.sh)
#   4. packaging: systemd units, sysusers/tmpfiles, .deb packages
#      (tests/packaging.sh; installs cargo-deb)
# Set OI_TIERS to run a subset, e.g. OI_TIERS="unit" or OI_TIERS="lint unit".
set -euo pipefail
cd "$(dirname "$0")/.."
tiers=${OI_TIERS:-"lint unit real package"}

step() { printf '\n==> %s\n' "$*"; }

step "setup (installs missing build and test packages)"
bash tests/setup.sh

for tier in $tiers; do
  case "$tier" in
    lint)
      # A machine without rustfmt or clippy (and no way to add them) skips
      # that check, loudly, and goes on with the other tiers.
      for tool in rustfmt clippy; do
        sub=${tool/rustfmt/fmt}
        if ! cargo "$sub" --version >/dev/null 2>&1; then
          rustup component add "$tool" >/dev/null 2>&1 || true
        fi
      done
      if cargo fmt --version >/dev/null 2>&1; then
        step "cargo fmt --check"
        cargo fmt --all -- --check
      else
        printf '\n!!!!! LINT SKIPPED: cargo fmt is not installed and `rustup component add rustfmt` failed !!!!!\n' >&2
      fi
      step "crate boundaries: oi links neither the coordinator nor the agent"
      # (kube is allowed: `oi node join` reads cluster-info and the kubelet
      # configuration from the cluster's API, as kubeadm does)
      linked=$(cargo tree -p oi-cli -e normal --prefix none --quiet |
        grep -E '^(oi-coordinator|oi-agent|rusqlite|etcd-client|libsqlite3-sys) ' || true)
      if [ -n "$linked" ]; then
        printf 'oi-cli links what it must not:\n%s\n' "$linked" >&2
        exit 1
      fi
      if cargo clippy --version >/dev/null 2>&1; then
        step "cargo clippy --all-targets -- -D warnings"
        cargo clippy --workspace --all-targets --quiet -- -D warnings
      else
        printf '\n!!!!! LINT SKIPPED: cargo clippy is not installed and `rustup component add clippy` failed !!!!!\n' >&2
      fi
      ;;
    unit)
      step "unit and in-process integration tests"
      cargo test --workspace
      ;;
    real)
      step "real stack: containerd, Kubernetes control planes, end to end"
      bash tests/real/run.sh
      ;;
    package)
      if ! command -v cargo-deb >/dev/null; then
        step "installing cargo-deb"
        cargo install --quiet --locked cargo-deb
      fi
      step "packaging: units, sysusers/tmpfiles, .deb packages"
      bash tests/packaging.sh
      ;;
    *) echo "unknown tier $tier (use lint, unit, real, package)" >&2; exit 2 ;;
  esac
done
