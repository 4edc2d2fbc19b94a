#!/usr/bin/env bash
# Control-plane density with the real components: single-replica clusters
# (Kubernetes and etcd built from Go modules by tests/bed/kubernetes.sh,
# haproxy from Debian) on ONE private hypervisor of the test bed, created
# through `oi`.
#
#   bash bench/density.sh [--profile default|dense] [--kubernetes-version V]
#                         [--sequential N] [--parallel M]
#                         [--settle SECONDS] [--idle SECONDS]
#
# --kubernetes-version: default, the matrix's default (newest) version.
#
# Prints, per profile:
#   * create-to-ready (`oi cluster create --wait`, i.e. until /readyz answers
#     through the ingress) p50/p99, for N clusters one after the other and
#     for M clusters created at once;
#   * per control plane (etcd + apiserver + controller-manager + scheduler,
#     with their sandbox): PSS and RSS, and idle CPU over --idle SECONDS,
#     starting --settle SECONDS after the last cluster became ready (a
#     controller-manager's start-up work goes on for a while after /readyz);
#   * the same per component kind;
#   * the projected number of control planes per 24 GiB.
# The hypervisor advertises 64 CPUs so that CPU requests never stop the
# packing: the point is what the components really use. Uses its own bed
# (directory, bridge, subnet, ports) and removes it at the end.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=default SEQ=10 PAR=10 IDLE=60 SETTLE=60 VERSION=
while [ $# -gt 0 ]; do
  case $1 in
  --profile) PROFILE=$2; shift 2 ;;
  --kubernetes-version) VERSION=$2; shift 2 ;;
  --sequential) SEQ=$2; shift 2 ;;
  --parallel) PAR=$2; shift 2 ;;
  --idle) IDLE=$2; shift 2 ;;
  --settle) SETTLE=$2; shift 2 ;;
  *) echo "usage: $0 [--profile default|dense] [--kubernetes-version V] [--sequential N] [--parallel M] [--settle SECONDS] [--idle SECONDS]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "density: needs root (containerd, network namespaces)" >&2; exit 1; }

export OI_BED_DIR=/tmp/oi-bed-density OI_BED_SUBNET=10.215.0 OI_BED_BRIDGE=oibr-dens \
  OI_BED_NETNS_PREFIX=oid- OI_COORDINATOR_PORT=7643 OI_API_PORT=7644 OI_METRICS_PORT=9641 \
  OI_BED_PRIVATE=1 OI_BED_CLUSTER="" OI_COORD_PROFILE=$PROFILE OI_AGENT_CPU_MILLIS=64000 \
  OI_PROFILE=release
# The default version is the matrix's newest, which is also the newest the
# bed builds (a unit test keeps tests/bed/versions.tsv and the matrix equal).
[ -n "$VERSION" ] || VERSION=$("$ROOT/tests/bed/kubernetes.sh" versions | tail -n 1)
export OI_BED_VERSIONS=$VERSION
# `oi --wait` looks every 100 ms, so the figures are not rounded up to its
# default 500 ms poll.
export OI_POLL_INTERVAL_MS=100
OI="$ROOT/target/release/oi"
export OI_CONFIG=$OI_BED_DIR/coordinator/data/admin.conf
HV=hv-private-1
SOCK=$OI_BED_DIR/$HV/containerd.sock
WORK=$(mktemp -d /tmp/oi-density.XXXXXX)
trap 'bash "$ROOT/tests/bed/down.sh" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT

pct() { # pct P < numbers: the P-th percentile (nearest rank)
  sort -n | awk -v p="$1" '{a[NR] = $1} END {if (NR == 0) {print "-"; exit} i = int((p / 100) * NR + 0.999); if (i < 1) i = 1; if (i > NR) i = NR; print a[i]}'
}
mean() { awk '{s += $1; n++} END {if (n) printf "%.1f", s / n; else print "-"}'; }

echo "==> density ($PROFILE): bring up a bed with one private hypervisor (release build)"
bash "$ROOT/tests/bed/down.sh" >/dev/null 2>&1 || true
bash "$ROOT/tests/bed/up.sh" >"$WORK/up.log" 2>&1 || { tail -20 "$WORK/up.log"; exit 1; }

create() { # create NAME: seconds until ready
  local t0 t1
  t0=$(date +%s.%N)
  "$OI" cluster create "$1" --kubernetes-version "$VERSION" --wait --timeout 10m >"$WORK/$1.log" 2>&1 ||
    { echo "density: $1 did not become ready" >&2; tail -5 "$WORK/$1.log" >&2; return 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f\n", b - a}'
}

echo "==> $SEQ clusters, one after the other"
for i in $(seq 1 "$SEQ"); do create "seq-$i" >>"$WORK/seq.times"; done
echo "==> $PAR clusters at once"
for i in $(seq 1 "$PAR"); do create "par-$i" >"$WORK/par-$i.time" & done
wait
: >"$WORK/par.times"
for f in "$WORK"/par-*.time; do if [ -e "$f" ]; then cat "$f" >>"$WORK/par.times"; fi; done

echo "==> settling for ${SETTLE}s, then measuring every control plane over ${IDLE}s"
sleep "$SETTLE"
# pid -> cluster, for every task of ours on the private hypervisor
ctr --address "$SOCK" -n k8s.io tasks ls | awk 'NR > 1 && $3 == "RUNNING" {print $1, $2}' >"$WORK/tasks"
: >"$WORK/pids"
while read -r id pid; do
  comp=$(ctr --address "$SOCK" -n k8s.io containers info "$id" 2>/dev/null |
    sed -n 's/.*"oneinfra.io\/component": "\([^"]*\)".*/\1/p' | head -n 1)
  [ -n "$comp" ] || continue
  # the task and its children (haproxy workers and the like)
  for p in $pid $(pgrep -P "$pid" || true); do echo "$comp $p" >>"$WORK/pids"; done
done <"$WORK/tasks"
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
while read -r c p; do echo "$c $p $(ticks "$p")"; done <"$WORK/pids" >"$WORK/cpu0"
sleep "$IDLE"
hz=$(getconf CLK_TCK)
while read -r c p t0; do
  t1=$(ticks "$p")
  pss=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || echo 0)
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)
  echo "$c $pss $rss $((t1 - t0))"
done <"$WORK/cpu0" >"$WORK/per-task"
# per component kind: "seq-1/apiserver-0" -> apiserver
awk -v hz="$hz" -v idle="$IDLE" '
  {k = $1; sub(/^[^\/]*\//, "", k); sub(/-[0-9]+$/, "", k)
   pss[k] += $2; cpu[k] += $4; if (!(($1) in seen)) {seen[$1] = 1; n[k]++}}
  END {for (k in pss) printf "%s %.1f %.1f\n", k, pss[k] / 1024 / n[k], cpu[k] * 1000 / hz / idle / n[k]}' \
  "$WORK/per-task" | sort >"$WORK/per-kind"
awk '{k = $1; sub(/\/.*/, "", k); print k, $2, $3, $4}' "$WORK/per-task" | awk -v hz="$hz" -v idle="$IDLE" '
  {pss[$1] += $2; rss[$1] += $3; cpu[$1] += $4}
  END {for (c in pss) printf "%s %.1f %.1f %.1f\n", c, pss[c] / 1024, rss[c] / 1024, cpu[c] * 1000 / hz / idle}' |
  sort >"$WORK/per-cluster"

n=$(wc -l <"$WORK/per-cluster")
pss_mean=$(awk '{print $2}' "$WORK/per-cluster" | mean)
rss_mean=$(awk '{print $3}' "$WORK/per-cluster" | mean)
cpu_mean=$(awk '{print $4}' "$WORK/per-cluster" | mean)
pss_p99=$(awk '{print $2}' "$WORK/per-cluster" | pct 99)
host_avail=$(awk '/^MemAvailable:/ {printf "%.1f", $2 / 1048576}' /proc/meminfo)
cat <<TXT

density, profile $PROFILE, Kubernetes $VERSION, one private hypervisor ($(nproc) cores, $(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo))
  control planes measured        $n
  create-to-ready, sequential    p50 $(pct 50 <"$WORK/seq.times") s   p99 $(pct 99 <"$WORK/seq.times") s   (n=$SEQ)
  create-to-ready, $PAR at once    p50 $(pct 50 <"$WORK/par.times") s   p99 $(pct 99 <"$WORK/par.times") s
  PSS per control plane          mean $pss_mean MiB   p99 $pss_p99 MiB   (RSS mean $rss_mean MiB)
  idle CPU per control plane     mean $cpu_mean mCPU over ${IDLE}s, ${SETTLE}s after the last was ready
  projected per 24 GiB           $(awk -v m="$pss_mean" 'BEGIN {printf "%d", 24 * 1024 / m}') control planes (by PSS)
  host MemAvailable after        $host_avail GiB
TXT
echo "per component, mean over control planes (kind PSS-MiB mCPU):"
column -t "$WORK/per-kind"
echo "per cluster (name PSS-MiB RSS-MiB mCPU):"
column -t "$WORK/per-cluster"
