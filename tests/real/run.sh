#!/usr/bin/env bash
# Real-stack tier: the agent against a real containerd from the test bed.
# Installs what it needs, builds and side-loads the test image, runs the
# `real_containerd` tests, and tears everything down (also on failure).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "real tier: needs root (containerd)" >&2; exit 1; }

export OI_BED_DIR=${OI_BED_DIR:-/tmp/oi-bed-real}
BED="$ROOT/tests/bed"
cleanup() { "$BED/containerd.sh" teardown >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup

bash "$ROOT/tests/setup.sh"
SOCK=$("$BED/containerd.sh" start real1)
mkdir -p "$OI_BED_DIR/images"
"$BED/image.sh" build oi-test/busybox:1 "$OI_BED_DIR/images/busybox.tar" --cmd sh >/dev/null
"$BED/image.sh" import "$OI_BED_DIR/images/busybox.tar" "$SOCK" >/dev/null

export OI_REAL_CRI_SOCKET=$SOCK
export OI_REAL_IMAGE=docker.io/oi-test/busybox:1
(cd "$ROOT" && cargo build --quiet -p oi-agent)
export OI_AGENT_BIN="$ROOT/target/debug/oi-agent"
cd "$ROOT"
cargo test -p oi-tests --test real_containerd -- --ignored --test-threads=1
