#!/usr/bin/env bash
# Real-stack tier. Installs what it needs, and tears down what it starts
# (also on failure):
#   1. the agent against a real containerd (tests/tests/real_containerd.rs);
#   2. kubelets of every version of the matrix on this host's cgroups
#      (tests/bed/kubelet-cgroup.sh);
#   3. rendered control planes of every version in the matrix run as host
#      processes from binaries built from Go modules
#      (tests/tests/render_host.rs);
#   4. end to end: coordinator, hypervisors with their own containerd in
#      their own network namespaces, clusters via `oi` and kubectl
#      (tests/e2e/run.sh).
# OI_REAL_PARTS selects parts, e.g. OI_REAL_PARTS="containerd e2e".
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "real tier: needs root (containerd)" >&2; exit 1; }
parts=${OI_REAL_PARTS:-"containerd kubelet render e2e"}
BED="$ROOT/tests/bed"
bash "$ROOT/tests/setup.sh"
cd "$ROOT"

for part in $parts; do
  case $part in
  containerd)
    echo "==> real: the agent against containerd"
    (
      export OI_BED_DIR=/tmp/oi-bed-real
      cleanup() { "$BED/containerd.sh" teardown >/dev/null 2>&1 || true; }
      trap cleanup EXIT
      cleanup
      SOCK=$("$BED/containerd.sh" start real1)
      mkdir -p "$OI_BED_DIR/images"
      "$BED/image.sh" build oi-test/busybox:1 "$OI_BED_DIR/images/busybox.tar" --cmd sh >/dev/null
      "$BED/image.sh" import "$OI_BED_DIR/images/busybox.tar" "$SOCK" >/dev/null
      cargo build --quiet -p oi-agent --bins
      OI_REAL_CRI_SOCKET=$SOCK OI_REAL_IMAGE=docker.io/oi-test/busybox:1 \
        OI_AGENT_BIN="$ROOT/target/debug/oi-agent" \
        cargo test -p oi-tests --test real_containerd -- --ignored --test-threads=1
    )
    ;;
  kubelet)
    echo "==> real: kubelets of every version on this host's cgroups"
    bash "$BED/kubelet-cgroup.sh" --versions all
    ;;
  render)
    echo "==> real: rendered control planes as host processes (every version of the matrix)"
    # Each version's control-plane binaries and its etcd, built from Go
    # modules and cached by version (tests/bed/kubernetes.sh).
    for v in $("$BED/kubernetes.sh" versions); do
      "$BED/kubernetes.sh" build --version "$v" >/dev/null
      read -r etcd _ < <("$BED/kubernetes.sh" pairing "$v")
      "$BED/kubernetes.sh" etcd --version "$etcd" >/dev/null
    done
    cargo test -p oi-tests --test render_host -- --ignored --test-threads=1
    ;;
  e2e)
    echo "==> real: end to end"
    bash "$ROOT/tests/e2e/run.sh"
    ;;
  *) echo "unknown part $part (use containerd, kubelet, render, e2e)" >&2; exit 2 ;;
  esac
done
