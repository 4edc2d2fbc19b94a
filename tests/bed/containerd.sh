#!/usr/bin/env bash
# Private containerd instances for tests and local bring-up (no systemd).
#
#   containerd.sh start NAME [--netns] [--addr 10.213.0.N/24] [--cni-bin DIR]
#   containerd.sh stop NAME
#   containerd.sh status [NAME]
#   containerd.sh teardown
#   containerd.sh sock NAME
#   containerd.sh ctr NAME ARGS...     (ctr on NAME's socket, namespace k8s.io)
#   containerd.sh run NAME ARGS...     (ctr run --net-host, state kept in NAME's dir)
#
# See tests/bed/README.md for details.
set -euo pipefail

PROG=${0##*/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BED_DIR=${OI_BED_DIR:-/tmp/oi-bed}
BRIDGE=${OI_BED_BRIDGE:-oibr0}
BRIDGE_ADDR=${OI_BED_BRIDGE_ADDR:-10.213.0.1/24}
NETNS_PREFIX=${OI_BED_NETNS_PREFIX:-oi-}
PAUSE_IMAGE=${OI_BED_PAUSE_IMAGE:-localhost/oi-bed/pause:1}
START_TIMEOUT=${OI_BED_START_TIMEOUT:-30}
CONTAINERD=${OI_BED_CONTAINERD:-containerd}

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

usage() {
	cat <<EOF
usage:
  $PROG start NAME [--netns] [--addr A.B.C.D/LEN] [--snapshotter S]
      Start containerd instance NAME with root, state, config and socket under
      \$OI_BED_DIR/NAME (default /tmp/oi-bed/NAME), import the sandbox image
      ($PAUSE_IMAGE) into its k8s.io namespace, and print the socket path.
      --netns   run it in network namespace ${NETNS_PREFIX}NAME, wired by a veth
                pair to bridge $BRIDGE ($BRIDGE_ADDR) in the root namespace
      --addr    the address inside the namespace (default: next free one in
                the bridge subnet, from .10 on)
      --snapshotter  overlayfs or native (default: overlayfs if an overlay
                mount works under \$OI_BED_DIR, else native)
  $PROG stop NAME      stop NAME, kill and delete its containers, unmount and
                       remove everything of it (its netns and veth too)
  $PROG status [NAME]  show instances (name, pid, state, netns, address, socket)
  $PROG sock NAME      print the socket path of NAME
  $PROG ctr NAME ARGS...   ctr --address <sock of NAME> -n k8s.io ARGS...
  $PROG run NAME ARGS...   ctr run --net-host with NAME's snapshotter and
                       runc root/FIFOs kept in NAME's dir; ARGS as for ctr run
                       (e.g. -d --rm IMAGE ID CMD...)
  $PROG teardown       stop all instances, remove the bridge (when no other
                       port is left on it) and the bed dir
EOF
}

need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 ||
			die "'$c' not found; run tests/bed/install-deps.sh"
	done
}

check_name() {
	[[ ${1:-} =~ ^[a-z0-9][a-z0-9_-]{0,23}$ ]] ||
		die "bad instance name '${1:-}': use 1-24 chars of [a-z0-9_-], starting with a letter or digit"
}

[[ $BED_DIR == /* ]] || BED_DIR=$PWD/$BED_DIR
[[ $BED_DIR =~ ^/[A-Za-z0-9._/-]+$ ]] ||
	die "OI_BED_DIR '$BED_DIR' must be a path of [A-Za-z0-9._/-] (it goes into config.toml)"
BED_DIR=${BED_DIR%/}

idir() { printf '%s/%s\n' "$BED_DIR" "$1"; }

pid_alive() {
	local pid=$1
	[[ -n $pid && -d /proc/$pid ]] || return 1
	# a zombie or an unrelated process that reused the pid does not count
	[[ $(awk '/^State:/ {print $2}' "/proc/$pid/status" 2>/dev/null) != Z ]]
}

instance_pid() {
	local d pid exe
	d=$(idir "$1")
	[[ -f $d/containerd.pid ]] || return 1
	pid=$(cat "$d/containerd.pid")
	pid_alive "$pid" || return 1
	# make sure the pid is still our containerd
	exe=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" || true)
	[[ $exe == *"--config $d/config.toml"* ]] || return 1
	echo "$pid"
}

ctr_() {
	local name=$1
	shift
	ctr --address "$(idir "$name")/containerd.sock" "$@"
}

# Does an overlay mount work in directory $1?
overlay_works() {
	local t
	t=$(mktemp -d "$1/.ovl-test.XXXXXX")
	mkdir -p "$t/l" "$t/u" "$t/w" "$t/m"
	local ok=1
	if mount -t overlay overlay -o "lowerdir=$t/l,upperdir=$t/u,workdir=$t/w" "$t/m" 2>/dev/null; then
		ok=0
		umount "$t/m"
	fi
	rm -rf "$t"
	return $ok
}

# interface names: at most 15 chars; derived from the bed dir and the name
veth_host_name() {
	local h
	h=$(printf '%s/%s' "$BED_DIR" "$1" | sha256sum | cut -c1-8)
	echo "oiv$h"
}

ensure_bridge() {
	if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
		ip link add "$BRIDGE" type bridge
		ip addr add "$BRIDGE_ADDR" dev "$BRIDGE"
	fi
	ip link set "$BRIDGE" up
}

# next free host address in the bridge subnet (only /24 is supported for
# automatic choice), from .10 on
next_addr() {
	local net=${BRIDGE_ADDR%/*} len=${BRIDGE_ADDR#*/}
	[[ $len == 24 ]] || die "pick an address with --addr (automatic choice needs a /24 bridge, not /$len)"
	local prefix=${net%.*} n used
	used=$(
		ip -4 -o addr show 2>/dev/null | awk '{print $4}'
		for n in $(ip netns list 2>/dev/null | awk '{print $1}'); do
			ip -n "$n" -4 -o addr show 2>/dev/null | awk '{print $4}'
		done
		cat "$BED_DIR"/*/addr 2>/dev/null || true
	)
	for n in $(seq 10 254); do
		if ! grep -qx "$prefix.$n/$len" <<<"$used"; then
			echo "$prefix.$n/$len"
			return
		fi
	done
	die "no free address left in $prefix.0/24"
}

gen_config() {
	local d=$1 snap=$2 cni_bin=${3:-$1/cni/bin}
	cat <<EOF
# generated by tests/bed/containerd.sh -- do not edit, it is rewritten on start
version = 2
root = "$d/root"
state = "$d/state"
oom_score = 0
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$d/containerd.sock"

[ttrpc]
  address = "$d/containerd.sock.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "$d/opt"

  [plugins."io.containerd.grpc.v1.cri"]
    # the sandbox cannot lower oom_score_adj (no CAP_SYS_RESOURCE): without
    # this runc fails with "can't get final child's PID from pipe"
    restrict_oom_score_adj = true
    # built from busybox-static and imported on start: no registry here
    sandbox_image = "$PAUSE_IMAGE"
    netns_mounts_under_state_dir = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    disable_apparmor = true
    systemd_cgroup = false

    [plugins."io.containerd.grpc.v1.cri".cni]
      # a private conf dir keeps the host's /etc/cni/net.d out of the
      # picture: empty on hypervisors (host-network pods only); on workers
      # oi node network writes the bridge network there (--cni-bin names
      # the plugins, e.g. Debian's /usr/lib/cni)
      bin_dir = "$cni_bin"
      conf_dir = "$d/cni/net.d"

    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "$snap"
      default_runtime_name = "runc"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"

        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          # private runc state, so instances never see each other's containers
          Root = "$d/runc"
          SystemdCgroup = false
EOF
}

cmd_start() {
	local name=${1:-}
	check_name "$name"
	shift
	local netns=0 addr="" snap=${OI_BED_SNAPSHOTTER:-} cni_bin=""
	while [[ $# -gt 0 ]]; do
		case $1 in
		--netns) netns=1; shift ;;
		--cni-bin) [[ $# -ge 2 ]] || die "--cni-bin needs a directory"; cni_bin=$2; shift 2 ;;
		--addr) [[ $# -ge 2 ]] || die "--addr needs A.B.C.D/LEN"; addr=$2; shift 2 ;;
		--snapshotter) [[ $# -ge 2 ]] || die "--snapshotter needs a value"; snap=$2; shift 2 ;;
		*) die "unknown option '$1' (see '$PROG --help')" ;;
		esac
	done
	[[ -z $addr || $netns == 1 ]] || die "--addr needs --netns"
	[[ -z $addr || $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+/[0-9]+$ ]] || die "--addr wants A.B.C.D/LEN, got '$addr'"
	[[ $(id -u) == 0 ]] || die "must run as root (containerd, mounts and netns need it)"
	need "$CONTAINERD" ctr runc ip nsenter setsid mount umount sha256sum jq
	[[ -x /bin/busybox ]] || die "/bin/busybox not found; run tests/bed/install-deps.sh"

	local d pid
	d=$(idir "$name")
	# unix socket paths are limited to 107 bytes
	((${#d} + 23 <= 107)) || die "socket path $d/containerd.sock.ttrpc is too long; use a shorter OI_BED_DIR"
	if pid=$(instance_pid "$name"); then
		die "instance '$name' is already running (pid $pid); run '$PROG stop $name' first"
	fi
	if [[ -e $d ]]; then
		note "cleaning leftovers of a previous '$name'"
		cmd_stop "$name" >/dev/null
	fi
	local ns=$NETNS_PREFIX$name
	if [[ $netns == 1 ]] && ip netns list | awk '{print $1}' | grep -qx "$ns"; then
		die "network namespace $ns already exists (not from this bed dir?); delete it with 'ip netns delete $ns' or pick another name"
	fi

	mkdir -p "$d"/{root,state,runc,opt,cni/bin,cni/net.d}
	if [[ -z $snap ]]; then
		if overlay_works "$d"; then snap=overlayfs; else snap=native; fi
	fi
	[[ $snap == overlayfs || $snap == native ]] || die "--snapshotter must be overlayfs or native"
	echo "$snap" >"$d/snapshotter"
	gen_config "$d" "$snap" "$cni_bin" >"$d/config.toml"

	local -a pre=()
	if [[ $netns == 1 ]]; then
		[[ -n $addr ]] || addr=$(next_addr)
		local vh
		vh=$(veth_host_name "$name")
		ensure_bridge
		ip netns add "$ns"
		echo "$ns" >"$d/netns"
		ip link add "$vh" type veth peer name eth0 netns "$ns"
		echo "$vh" >"$d/veth"
		ip link set "$vh" master "$BRIDGE"
		ip link set "$vh" up
		ip -n "$ns" link set lo up
		ip -n "$ns" addr add "$addr" dev eth0
		ip -n "$ns" link set eth0 up
		echo "$addr" >"$d/addr"
		# nsenter --net switches only the network namespace. 'ip netns exec'
		# would also unshare the mount namespace and remount /sys, which
		# hides /sys/fs/cgroup from runc and the rootfs mounts from us.
		pre=(nsenter "--net=/run/netns/$ns" --)
	fi

	local sock=$d/containerd.sock
	# record the real pid: the inner shell writes its own pid, then execs
	# shellcheck disable=SC2016
	setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$d/containerd.pid" \
		${pre[@]+"${pre[@]}"} "$CONTAINERD" --config "$d/config.toml" \
		</dev/null >>"$d/containerd.log" 2>&1 &
	local i pid=""
	for ((i = 0; i < START_TIMEOUT * 10; i++)); do
		if [[ -S $sock ]] && ctr --address "$sock" version >/dev/null 2>&1; then
			break
		fi
		if ((i > 5)) && ! pid=$(instance_pid "$name"); then
			tail -n 20 "$d/containerd.log" >&2 || true
			die "containerd '$name' exited during start; see $d/containerd.log, then clean up with '$PROG stop $name'"
		fi
		sleep 0.1
	done
	ctr --address "$sock" version >/dev/null 2>&1 ||
		die "containerd '$name' did not answer on $sock within ${START_TIMEOUT}s; see $d/containerd.log (stop it with '$PROG stop $name')"
	if ! ctr --address "$sock" plugins ls 2>/dev/null | awk '$2 == "cri" {print $NF}' | grep -qx ok; then
		die "the CRI plugin of '$name' is not ok; see $d/containerd.log and 'ctr --address $sock plugins ls', then '$PROG stop $name'"
	fi

	# sandbox image: built once per bed dir, imported into every instance
	local pause=$BED_DIR/.images/pause.tar
	if [[ ! -f $pause ]]; then
		mkdir -p "$BED_DIR/.images"
		"$HERE/image.sh" pause "$pause" >/dev/null 2>&1 ||
			die "could not build the sandbox image; try '$HERE/image.sh pause $pause'"
	fi
	local out
	out=$("$HERE/image.sh" import "$pause" "$sock" --snapshotter "$snap" 2>&1) || {
		printf '%s\n' "$out" >&2
		die "could not import the sandbox image into '$name'"
	}
	echo "$sock"
}

# kill and delete all tasks and containers of every namespace of instance $1
cleanup_containers() {
	local name=$1 ns id
	for ns in $(ctr_ "$name" namespaces ls -q 2>/dev/null); do
		for id in $(ctr_ "$name" -n "$ns" tasks ls -q 2>/dev/null); do
			ctr_ "$name" -n "$ns" tasks kill -a -s SIGKILL "$id" >/dev/null 2>&1 || true
		done
		for id in $(ctr_ "$name" -n "$ns" tasks ls -q 2>/dev/null); do
			local i
			for ((i = 0; i < 50; i++)); do
				ctr_ "$name" -n "$ns" tasks delete "$id" >/dev/null 2>&1 && break
				sleep 0.1
			done
		done
		for id in $(ctr_ "$name" -n "$ns" containers ls -q 2>/dev/null); do
			ctr_ "$name" -n "$ns" containers delete "$id" >/dev/null 2>&1 || true
		done
	done
}

# pids of processes of instance dir $1: containerd and shims whose command
# line names the dir, and container processes (in their own mount namespace)
# whose root mount comes from the dir -- e.g. left over when a shim died.
# (/proc/PID/root reads "/" for those, hence mountinfo.)
pids_using() {
	local d=$1 p cmd exe mnt self
	self=$(readlink /proc/self/ns/mnt)
	for p in /proc/[0-9]*; do
		p=${p#/proc/}
		mnt=$(readlink "/proc/$p/ns/mnt" 2>/dev/null) || continue
		if [[ $mnt != "$self" ]]; then
			if awk -v d="$d/" '$5 == "/" && index($0, d) {f = 1} END {exit !f}' "/proc/$p/mountinfo" 2>/dev/null; then
				echo "$p"
			fi
			continue
		fi
		exe=$(readlink "/proc/$p/exe" 2>/dev/null) || continue
		[[ ${exe##*/} == containerd* ]] || continue
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
		[[ $cmd == *"$d/"* ]] && echo "$p"
	done
	return 0
}

cmd_stop() {
	local name=${1:-}
	check_name "$name"
	local d pid ns vh i
	d=$(idir "$name")
	if [[ ! -d $d ]]; then
		note "no instance '$name' under $BED_DIR"
		return 0
	fi
	if pid=$(instance_pid "$name"); then
		cleanup_containers "$name"
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 100; i++)); do
			pid_alive "$pid" || break
			sleep 0.1
		done
		if pid_alive "$pid"; then
			note "containerd '$name' (pid $pid) ignored SIGTERM; killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	fi
	# containers left behind (containerd died, or 'ctr run' without
	# --runc-root used the shared /run/containerd/runc): every runc state
	# whose bundle or rootfs lies in our dir is force-deleted, which kills
	# its processes and removes its cgroups
	if command -v runc >/dev/null; then
		# runc roots: $d/runc/<ns> (CRI), $d/runc/ctr/<ns> ('run' helper),
		# /run/containerd/runc/<ns> (plain 'ctr run')
		local st id
		while IFS= read -r st; do
			grep -qF "\"$d/" "$st" 2>/dev/null || continue
			id=$(dirname "$st")
			runc --root "$(dirname "$id")" delete --force "$(basename "$id")" >/dev/null 2>&1 || true
		done < <(find "$d/runc" /run/containerd/runc -mindepth 3 -maxdepth 4 -name state.json 2>/dev/null)
	fi
	local p left
	for ((i = 0; i < 50; i++)); do
		left=$(pids_using "$d")
		[[ -n $left ]] || break
		# shellcheck disable=SC2086
		kill -KILL $left 2>/dev/null || true
		sleep 0.1
	done
	[[ -z ${left:-} ]] || note "processes still using $d: $left"
	# for bundles still present (tasks not deleted through containerd):
	# remove their cgroups (cgroupfs paths from config.json; rmdir only
	# removes empty ones) and their shim sockets, which live in
	# /run/containerd/s/<sha256(address/ns/id)> and which a killed shim
	# could not remove
	local b cg c
	for b in "$d"/state/io.containerd.runtime.v2.task/*/*/; do
		[[ -d $b ]] || continue
		b=${b%/}
		cg=$(jq -r '.linux.cgroupsPath // empty' "$b/config.json" 2>/dev/null || true)
		if [[ $cg == /* && $cg != */../* ]]; then
			for c in /sys/fs/cgroup/"$cg" /sys/fs/cgroup/*/"$cg"; do
				if [[ -d $c ]]; then rmdir "$c" 2>/dev/null || true; fi
			done
		fi
		rm -f "/run/containerd/s/$(printf '%s/%s/%s' "$d/containerd.sock" "$(basename "$(dirname "$b")")" "$(basename "$b")" | sha256sum | cut -d' ' -f1)"
	done
	# unmount everything below the instance dir, deepest first
	local m
	while read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || note "could not unmount $m"
	done < <(awk -v d="$d/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r)
	if [[ -f $d/veth ]]; then
		vh=$(cat "$d/veth")
		ip link del "$vh" 2>/dev/null || true
	fi
	if [[ -f $d/netns ]]; then
		ns=$(cat "$d/netns")
		ip netns delete "$ns" 2>/dev/null || true
	fi
	rm -rf "$d" || die "could not remove $d; see 'mount | grep $d'"
	note "stopped '$name'"
}

# ctr against instance NAME, namespace k8s.io (override with -n after NAME)
cmd_ctr() {
	local name=${1:-}
	check_name "$name"
	shift
	local d
	d=$(idir "$name")
	[[ -S $d/containerd.sock ]] || die "instance '$name' is not running; '$PROG start $name' first"
	exec ctr --address "$d/containerd.sock" -n "${OI_BED_NAMESPACE:-k8s.io}" "$@"
}

# 'ctr run' with host network, the instance's snapshotter, and runc state
# and FIFOs inside the instance dir (so stop/teardown leave nothing behind)
cmd_run() {
	local name=${1:-}
	check_name "$name"
	shift
	local d
	d=$(idir "$name")
	[[ -S $d/containerd.sock ]] || die "instance '$name' is not running; '$PROG start $name' first"
	mkdir -p "$d/fifo"
	exec ctr --address "$d/containerd.sock" -n "${OI_BED_NAMESPACE:-k8s.io}" run --net-host \
		--snapshotter "$(cat "$d/snapshotter")" --runc-root "$d/runc/ctr" --fifo-dir "$d/fifo" "$@"
}

cmd_status() {
	local only=${1:-} d name pid state ns addr
	printf '%-12s %-8s %-8s %-10s %-16s %s\n' NAME PID STATE NETNS ADDR SOCKET
	[[ -d $BED_DIR ]] || return 0
	for d in "$BED_DIR"/*/; do
		[[ -f $d/config.toml ]] || continue
		name=$(basename "$d")
		[[ -z $only || $only == "$name" ]] || continue
		if pid=$(instance_pid "$name"); then
			state=running
			ctr_ "$name" version >/dev/null 2>&1 || state=no-answer
		else
			pid=- state=stopped
		fi
		ns=$(cat "$d/netns" 2>/dev/null || echo -)
		addr=$(cat "$d/addr" 2>/dev/null || echo -)
		printf '%-12s %-8s %-8s %-10s %-16s %s\n' "$name" "$pid" "$state" "$ns" "$addr" "${d}containerd.sock"
	done
}

cmd_teardown() {
	local d
	if [[ -d $BED_DIR ]]; then
		for d in "$BED_DIR"/*/; do
			[[ -d $d ]] || continue
			cmd_stop "$(basename "$d")"
		done
	fi
	if ip link show "$BRIDGE" >/dev/null 2>&1; then
		if [[ -z $(ip -o link show master "$BRIDGE" 2>/dev/null) ]]; then
			ip link del "$BRIDGE"
		else
			note "bridge $BRIDGE still has ports of another bed; leaving it"
		fi
	fi
	rm -rf "$BED_DIR"
	# empty dirs that runc, shims and ctr create on demand (MkdirAll) in
	# shared places; rmdir leaves anything still in use alone
	local c
	for c in /sys/fs/cgroup/*/k8s.io /sys/fs/cgroup/*/default; do
		if [[ -d $c ]]; then rmdir "$c" 2>/dev/null || true; fi
	done
	for c in /run/containerd/runc/* /run/containerd/fifo/* /run/containerd/runc \
		/run/containerd/fifo /run/containerd/s /run/containerd; do
		if [[ -d $c ]]; then rmdir "$c" 2>/dev/null || true; fi
	done
	note "teardown done"
}

case ${1:-} in
start) shift; cmd_start "$@" ;;
stop) shift; cmd_stop "$@" ;;
status) shift; cmd_status "$@" ;;
teardown) shift; cmd_teardown ;;
sock) shift; check_name "${1:-}"; echo "$(idir "$1")/containerd.sock" ;;
ctr) shift; cmd_ctr "$@" ;;
run) shift; cmd_run "$@" ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
