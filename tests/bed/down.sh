#!/usr/bin/env bash
# Stops what up.sh started: workers (worker.sh), agents, coordinator,
# containerd instances with every container, network namespaces, and the
# bed directory.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=alive.sh
. "$HERE/alive.sh"
BED_DIR=${OI_BED_DIR:-/tmp/oi-bed}
export OI_BED_DIR=$BED_DIR

stop_pid() {
  local f=$1 pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

# workers first: their kubelets, then what kubelets changed on the host
"$HERE/worker.sh" teardown
for f in "$BED_DIR"/agents/*/pid; do stop_pid "$f"; done
stop_pid "$BED_DIR/coordinator/pid"
"$HERE/containerd.sh" teardown
echo "down: nothing of the bed is left"
