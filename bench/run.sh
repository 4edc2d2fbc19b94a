#!/usr/bin/env bash
# Builds in release and runs the benchmarks, printing their figures.
#
#   bash bench/run.sh [fleet|schedule|agent|density|all]      (default: all)
#
# Environment:
#   OI_BENCH_AGENTS   fleet sizes to run, default "1000 10000"
#   OI_BENCH_OUT      where JSON figures go, default /tmp/oi-bench-results
#   OI_BENCH_FLEET_ARGS, OI_BENCH_AGENT_ARGS
#                     extra flags for `oi-bench fleet` / `oi-bench agent-footprint`
#   OI_BENCH_DENSITY_ARGS
#                     flags for bench/density.sh (e.g. "--profile dense");
#                     `all` runs density with the default and the dense profile
#   OI_BED_DIR        test bed dir for the agent benchmark, default
#                     /tmp/oi-bed-bench (never the shared default bed)
# See bench/README.md for what is measured and the recorded results.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
WHAT=${1:-all}
OUT=${OI_BENCH_OUT:-/tmp/oi-bench-results}
mkdir -p "$OUT"

case $WHAT in
fleet | schedule | agent | density | all) ;;
*) echo "usage: bash bench/run.sh [fleet|schedule|agent|density|all]" >&2; exit 2 ;;
esac

cd "$ROOT"
cargo build --release --quiet -p oi-bench -p oi-agent
# Run a copy, so that a concurrent build cannot swap the binary under the
# running benchmark (the fleet restarts its coordinator from it).
BIN=$(mktemp -d /tmp/oi-bench-bin.XXXXXX)
BED_UP=0
cleanup() {
	if [ "$BED_UP" = 1 ]; then "$ROOT/tests/bed/containerd.sh" teardown >/dev/null 2>&1 || true; fi
	rm -rf "$BIN"
}
trap cleanup EXIT
cp target/release/oi-bench target/release/oi-agent "$BIN/"

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r); load $(cut -d' ' -f1-3 /proc/loadavg); $(date -u +%FT%TZ)"

run_fleet() {
	local n
	ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
	for n in ${OI_BENCH_AGENTS:-1000 10000}; do
		# shellcheck disable=SC2086
		"$BIN/oi-bench" fleet --agents "$n" --json "$OUT/fleet-$n.json" ${OI_BENCH_FLEET_ARGS:-}
	done
}

run_agent() {
	[ "$(id -u)" = 0 ] || { echo "agent footprint: needs root (containerd)" >&2; exit 1; }
	export OI_BED_DIR=${OI_BED_DIR:-/tmp/oi-bed-bench}
	case $OI_BED_DIR in
	/tmp/oi-bed | /tmp/oi-bed/) echo "refusing the shared default bed dir $OI_BED_DIR" >&2; exit 1 ;;
	esac
	BED="$ROOT/tests/bed"
	BED_UP=1
	"$BED/containerd.sh" teardown >/dev/null 2>&1 || true
	bash "$ROOT/tests/setup.sh"
	local sock
	sock=$("$BED/containerd.sh" start bench1)
	"$BED/image.sh" build oi-test/busybox:1 "$BIN/busybox.tar" --cmd sh >/dev/null
	"$BED/image.sh" import "$BIN/busybox.tar" "$sock" >/dev/null
	# shellcheck disable=SC2086
	"$BIN/oi-bench" agent-footprint --cri-socket "$sock" --agent-bin "$BIN/oi-agent" \
		--json "$OUT/agent-footprint.json" ${OI_BENCH_AGENT_ARGS:-}
}

run_schedule() {
	"$BIN/oi-bench" schedule
}

run_density() {
	# shellcheck disable=SC2086
	bash "$HERE/density.sh" ${1:-${OI_BENCH_DENSITY_ARGS:-}}
}

case $WHAT in
fleet) run_fleet ;;
schedule) run_schedule ;;
agent) run_agent ;;
density) run_density ;;
all) run_schedule; run_fleet; run_agent; run_density "--profile default"; run_density "--profile dense" ;;
esac
