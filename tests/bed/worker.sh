#!/usr/bin/env bash
# Workers for the bed: each its own containerd in its own network namespace,
# joined to a cluster with `oi node join --no-systemd` (a real node token,
# real discovery and TLS bootstrap), its kubelet and `oi node network` run
# in that namespace only (`nsenter --net`: they stay in the host's mount
# namespace, so runc sees the volume mounts). Pod networking is the
# cluster's bridge CNI (Debian's plugins in /usr/lib/cni); the add-ons'
# images (kube-proxy, CoreDNS) and the test busybox are side-loaded. Needs
# root, a running bed (up.sh) and a ready cluster.
#
#   worker.sh join NAME CLUSTER [--addr A.B.C.D/24] [--version V]
#   worker.sh kubeadm-join NAME CLUSTER [--addr A.B.C.D/24]
#                            the same with a stock `kubeadm join` (the line
#                            `oi cluster token create` prints), in a private
#                            mount namespace whose /etc/kubernetes and
#                            /var/lib/kubelet are the worker's directories;
#                            its kubelet runs there too (enough for the join
#                            and the API server reaching it; pods' volumes
#                            would be invisible to runc, so it registers
#                            with a NoSchedule taint: no pods run on it)
#   worker.sh stop NAME      stop its kubelet and containerd; forget it
#   worker.sh teardown       stop every worker and undo the kubelet's host
#                            side effects (sysctls, kubepods cgroups, logs)
#
# Environment: OI_BED_DIR (default /tmp/oi-bed), OI_BIN (the oi binary),
# OI_CONFIG (its admin config), OI_BED_NETNS_PREFIX. Workers live in $OI_BED_DIR/workers.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=alive.sh
. "$HERE/alive.sh"
BED_DIR=${OI_BED_DIR:-/tmp/oi-bed}
export OI_BED_DIR=$BED_DIR
NETNS_PREFIX=${OI_BED_NETNS_PREFIX:-oi-}
WORKERS=$BED_DIR/workers
OI=${OI_BIN:-$ROOT/target/debug/oi}
export OI_CONFIG=${OI_CONFIG:-$BED_DIR/coordinator/data/admin.conf}
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
CNI_BIN=${OI_BED_CNI_BIN:-/usr/lib/cni}
# The workers' kubelets see the host's disk, which the build caches fill
# (a cold test run takes ~30 GB): with the default thresholds (imagefs 15%,
# nodefs 10% free) a nearly full build disk puts DiskPressure on every
# worker, which evicts pods and stops scheduling (seen in a cold CI run).
# The bed evicts only when the disk is really about to run out.
EVICTION='evictionHard: {"memory.available": "100Mi", "nodefs.available": "1Gi", "imagefs.available": "1Gi", "nodefs.inodesFree": "5%"}'

die() { echo "worker.sh: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: containerd, network namespaces and the kubelet need it"

# The host state a kubelet changes, saved once before the first worker.
save_host() {
  [ -f "$WORKERS/host.saved" ] && return
  mkdir -p "$WORKERS"
  {
    for s in "${SYSCTLS[@]}"; do echo "sysctl $s $(sysctl -n "$s")"; done
    for d in /var/log/pods /var/log/containers /var/lib/cni /run/xtables.lock; do [ -e "$d" ] && echo "existed $d"; done
    true
  } >"$WORKERS/host.saved"
}

restore_host() {
  [ -f "$WORKERS/host.saved" ] || return 0
  local kind a b
  while read -r kind a b; do
    if [ "$kind" = sysctl ]; then sysctl -qw "$a=$b"; fi
  done <"$WORKERS/host.saved"
  # the kubelet's logs, libcni's result cache, kube-proxy's lock file
  for d in /var/log/pods /var/log/containers /var/lib/cni /run/xtables.lock; do
    grep -qx "existed $d" "$WORKERS/host.saved" || rm -rf "$d"
  done
  # kubepods cgroups, deepest first (rmdir removes only empty ones)
  find /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods* /sys/fs/cgroup/*/oibed-* -depth -type d -exec rmdir {} + 2>/dev/null || true
  rm -f "$WORKERS/host.saved"
}

# Every kubelet of the bed shares the host's cgroup hierarchies, and a
# kubelet kills and removes pod cgroups under its root that it does not
# know: each worker's kubelet gets its own cgroupRoot, made here in every
# v1 hierarchy (cpuset needs its cpus and mems copied from the parent).
cgroup_root() { echo "/oibed-$NETNS_PREFIX$1"; }
make_cgroup_root() {
  local root d
  root=$(cgroup_root "$1")
  for d in /sys/fs/cgroup/*/; do
    [ "$d" = /sys/fs/cgroup/unified/ ] && continue
    mkdir -p "$d${root#/}"
  done
  if [ -d /sys/fs/cgroup/cpuset ]; then
    cat /sys/fs/cgroup/cpuset/cpuset.cpus >"/sys/fs/cgroup/cpuset$root/cpuset.cpus"
    cat /sys/fs/cgroup/cpuset/cpuset.mems >"/sys/fs/cgroup/cpuset$root/cpuset.mems"
  fi
}
remove_cgroup_root() {
  find /sys/fs/cgroup/*/"$(cgroup_root "$1" | sed 's|^/||')" -depth -type d -exec rmdir {} + 2>/dev/null || true
}

stop_one() {
  local name=$1 dir=$WORKERS/$1 f
  for f in network.pid kubelet.pid; do
    [ -f "$dir/$f" ] || continue
    local pid
    pid=$(cat "$dir/$f")
    if alive "$pid"; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do alive "$pid" || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  "$HERE/containerd.sh" stop "$name" >/dev/null 2>&1 || true
  umount -R "$dir/root" 2>/dev/null || true
  remove_cgroup_root "$name"
  rm -rf "$dir"
}

join() {
  local name=$1 cluster=$2 addr= version=
  shift 2
  while [ $# -gt 0 ]; do
    case $1 in
    --addr) addr=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    *) die "unknown option $1" ;;
    esac
  done
  local dir=$WORKERS/$name
  [ -e "$dir" ] && die "worker $name exists; worker.sh stop $name first"
  [ -n "$version" ] || version=$("$OI" cluster get "$cluster" -o json | sed -n 's/.*"kubernetesVersion": "\(.*\)".*/\1/p')
  [ -n "$version" ] || die "cluster $cluster not found"
  local kubelet
  kubelet=$("$HERE/kubernetes.sh" build --version "$version" --what kubelet)/kubelet
  save_host
  mkdir -p "$dir"
  local sock
  if [ -n "$addr" ]; then
    sock=$("$HERE/containerd.sh" start "$name" --netns --addr "$addr" --cni-bin "$CNI_BIN")
  else
    sock=$("$HERE/containerd.sh" start "$name" --netns --cni-bin "$CNI_BIN")
  fi
  "$HERE/image.sh" build oi-test/busybox:1 "$WORKERS/busybox.tar" --cmd sh >/dev/null
  "$HERE/image.sh" import "$WORKERS/busybox.tar" "$sock" >/dev/null
  "$HERE/k8s-images.sh" build --role worker --versions "$version" >/dev/null
  "$HERE/k8s-images.sh" import --role worker --versions "$version" "$sock"
  # The bed's namespaces have no default route: the service range goes
  # out eth0, where kube-proxy's rules take it (a host with a default route
  # needs nothing).
  local service_cidr
  service_cidr=$("$OI" cluster get "$cluster" -o json | sed -n 's/.*"serviceCidr": "\(.*\)".*/\1/p')
  ip -n "$NETNS_PREFIX$name" route replace "$service_cidr" dev eth0
  "$OI" cluster token create "$cluster" --ttl 1h --description "bed worker $name" -o json >"$dir/token.json"
  local endpoint token hash
  endpoint=$(sed -n 's/.*"endpoint": "\(.*\)".*/\1/p' "$dir/token.json")
  token=$(sed -n 's/.*"token": "\([a-z0-9]\{6\}\.[a-z0-9]\{16\}\)".*/\1/p' "$dir/token.json")
  hash=$(sed -n 's/.*"caCertHash": "\(.*\)".*/\1/p' "$dir/token.json")
  rm -f "$dir/token.json"
  # The sandbox cannot lower the OOM score; the bed may have swap; pod logs
  # stay in the worker's directory.
  make_cgroup_root "$name"
  cat >"$dir/kubelet-patch.yaml" <<YAML
oomScoreAdj: 0
failSwapOn: false
podLogsDir: $dir/pod-logs
healthzPort: 10248
cgroupRoot: $(cgroup_root "$name")
$EVICTION
YAML
  nsenter --net="/run/netns/$NETNS_PREFIX$name" -- env OI_NODE_TOKEN="$token" "$OI" node join \
    --endpoint "$endpoint" --ca-cert-hash "$hash" --name "$name" \
    --kubelet "$kubelet" --cri-socket "$sock" --allow-cgroup-v1 \
    --dir "$dir/node" --root-dir "$dir/root" --kubelet-config-patch "$dir/kubelet-patch.yaml" \
    --cni-conf-dir "$BED_DIR/$name/cni/net.d" --cni-bin-dir "$CNI_BIN" --cni-state-dir "$dir/cni-state" \
    --no-systemd >"$dir/join.out"
  local cmd
  cmd=$(sed -n 's/^  \(.*kubelet --config=.*\)$/\1/p' "$dir/join.out")
  [ -n "$cmd" ] || { cat "$dir/join.out" >&2; die "oi node join printed no kubelet command"; }
  local netcmd
  netcmd=$(sed -n 's/^  \(.* node network .*\)$/\1/p' "$dir/join.out")
  [ -n "$netcmd" ] || { cat "$dir/join.out" >&2; die "oi node join printed no node network command"; }
  # shellcheck disable=SC2086 # the printed command line, split as printed
  setsid nsenter --net="/run/netns/$NETNS_PREFIX$name" -- $cmd >"$dir/kubelet.log" 2>&1 </dev/null &
  echo $! >"$dir/kubelet.pid"
  # shellcheck disable=SC2086 # the printed command line, split as printed
  setsid nsenter --net="/run/netns/$NETNS_PREFIX$name" -- $netcmd >"$dir/network.log" 2>&1 </dev/null &
  echo $! >"$dir/network.pid"
  # as `oi node join` does under systemd: once the kubelet holds its own
  # credential, the bootstrap kubeconfig (the token) leaves the disk
  for _ in $(seq 600); do
    [ -f "$dir/node/kubelet.conf" ] && break
    alive "$(cat "$dir/kubelet.pid")" || { tail -n 20 "$dir/kubelet.log" >&2; die "the kubelet of $name exited"; }
    sleep 0.1
  done
  [ -f "$dir/node/kubelet.conf" ] || { tail -n 20 "$dir/kubelet.log" >&2; die "the kubelet of $name did not bootstrap within 60 s"; }
  rm -f "$dir/node/bootstrap-kubelet.conf"
  echo "worker.sh: $name joined $cluster (kubelet $version, log $dir/kubelet.log)"
}

# kubeadm_join NAME CLUSTER [--addr A/24]
kubeadm_join() {
  local name=$1 cluster=$2 addr=
  shift 2
  [ "${1:-}" = --addr ] && addr=${2:-}
  [ -n "$addr" ] || die "kubeadm-join needs --addr A.B.C.D/LEN (the kubelet's --node-ip)"
  local dir=$WORKERS/$name
  [ -e "$dir" ] && die "worker $name exists; worker.sh stop $name first"
  local version bin
  version=$("$OI" cluster get "$cluster" -o json | sed -n 's/.*"kubernetesVersion": "\(.*\)".*/\1/p')
  [ -n "$version" ] || die "cluster $cluster not found"
  bin=$("$HERE/kubernetes.sh" build --version "$version" --what kubelet,kubeadm)
  save_host
  mkdir -p "$dir/etc" "$dir/varlib" "$dir/patches"
  local sock
  if [ -n "$addr" ]; then
    sock=$("$HERE/containerd.sh" start "$name" --netns --addr "$addr")
  else
    sock=$("$HERE/containerd.sh" start "$name" --netns)
  fi
  "$OI" cluster token create "$cluster" --ttl 1h --description "bed kubeadm worker $name" -o json >"$dir/token.json"
  local line
  line=$(sed -n 's/.*"kubeadmJoinCommand": "kubeadm \(.*\)".*/\1/p' "$dir/token.json")
  rm -f "$dir/token.json"
  [ -n "$line" ] || die "oi cluster token create printed no kubeadm line"
  # kubeadm's own patch mechanism for what this host needs (cgroup v1,
  # swap, an OOM score the sandbox cannot lower)
  make_cgroup_root "$name"
  cat >"$dir/patches/kubeletconfiguration+merge.yaml" <<YAML
cgroupRoot: $(cgroup_root "$name")
$EVICTION
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
cgroupDriver: cgroupfs
YAML
  cat >"$dir/run.sh" <<SH
set -e
mkdir -p /etc/kubernetes /var/lib/kubelet
mount --bind "$dir/etc" /etc/kubernetes
mount --bind "$dir/varlib" /var/lib/kubelet
exec "$bin/kubeadm" $line --node-name "$name" --cri-socket "unix://$sock" \
  --patches "$dir/patches" --ignore-preflight-errors=all
SH
  # shellcheck disable=SC2016
  setsid nsenter --net="/run/netns/$NETNS_PREFIX$name" -- unshare -m --propagation private \
    bash "$dir/run.sh" >"$dir/kubeadm.log" 2>&1 </dev/null &
  local kpid=$!
  echo "$kpid" >"$dir/kubeadm.pid"
  # kubeadm writes the kubelet's files, then waits for a kubelet: start it
  # in kubeadm's mount namespace, with the flags kubeadm chose.
  for _ in $(seq 300); do
    [ -f "$dir/varlib/config.yaml" ] && [ -f "$dir/varlib/kubeadm-flags.env" ] && break
    alive "$kpid" || { cat "$dir/kubeadm.log" >&2; die "kubeadm join failed"; }
    sleep 0.1
  done
  [ -f "$dir/varlib/config.yaml" ] || { cat "$dir/kubeadm.log" >&2; die "kubeadm wrote no kubelet config"; }
  local flags
  flags=$(sed -n 's/^KUBELET_KUBEADM_ARGS="\(.*\)"$/\1/p' "$dir/varlib/kubeadm-flags.env")
  # shellcheck disable=SC2086 # kubeadm's flags, split as kubeadm wrote them
  setsid nsenter --mount="/proc/$kpid/ns/mnt" --net="/run/netns/$NETNS_PREFIX$name" -- \
    "$bin/kubelet" --config=/var/lib/kubelet/config.yaml \
    --bootstrap-kubeconfig=/etc/kubernetes/bootstrap-kubelet.conf \
    --kubeconfig=/etc/kubernetes/kubelet.conf --container-runtime-endpoint="unix://$sock" \
    --node-ip="${addr%/*}" --register-with-taints=oneinfra.io/bed-no-pods=true:NoSchedule \
    $flags >"$dir/kubelet.log" 2>&1 </dev/null &
  echo $! >"$dir/kubelet.pid"
  local rc=0
  wait "$kpid" || rc=$?
  [ "$rc" = 0 ] || { tail -n 20 "$dir/kubeadm.log" >&2; die "kubeadm join exited $rc"; }
  grep -q "This node has joined the cluster" "$dir/kubeadm.log" || die "kubeadm join did not say it joined"
  echo "worker.sh: $name joined $cluster with kubeadm join (kubelet $version, log $dir/kubelet.log)"
}

case ${1:-} in
kubeadm-join) shift; [ $# -ge 2 ] || die "usage: worker.sh kubeadm-join NAME CLUSTER [--addr A/24]"; kubeadm_join "$@" ;;
join) shift; [ $# -ge 2 ] || die "usage: worker.sh join NAME CLUSTER [--addr A/24] [--version V]"; join "$@" ;;
stop) [ $# = 2 ] || die "usage: worker.sh stop NAME"; stop_one "$2"
  [ -n "$(find "$WORKERS" -mindepth 1 -maxdepth 1 -type d 2>/dev/null)" ] || restore_host ;;
teardown)
  for d in "$WORKERS"/*/; do [ -d "$d" ] && stop_one "$(basename "$d")"; done
  restore_host
  rm -rf "$WORKERS" ;;
*) die "usage: worker.sh join|kubeadm-join NAME CLUSTER | stop NAME | teardown" ;;
esac
