#!/usr/bin/env bash
# End-to-end check of the test bed: two containerd instances (one in its own
# network namespace), a busybox image built and imported into both,
# host-network containers through ctr, traffic between them over the bed
# bridge, a CRI host-network pod (when Python grpcio is available), then
# teardown and a check that nothing is left behind.
#
#   tests/bed/selftest.sh
#
# Uses its own bed dir (OI_BED_DIR defaults to /tmp/oi-bed-selftest) so it
# does not disturb a bed in /tmp/oi-bed. Prints 'N passed, N failed'.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OI_BED_DIR=${OI_BED_DIR:-/tmp/oi-bed-selftest}
PY=${OI_BED_PYTHON:-python3}
CD=$HERE/containerd.sh
IMG=$HERE/image.sh
pass=0 fail=0 skip=0

ok() { echo "ok   - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { # check DESCRIPTION CMD...  (CMD's output shown only on failure)
	local what=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$what"
	else
		bad "$what"
		[[ -z $out ]] || printf '%s\n' "$out" | sed 's/^/       /'
	fi
}

cleanup() { "$CD" teardown >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$HERE/install-deps.sh"
"$CD" teardown >/dev/null 2>&1 || true

A=$("$CD" start st-a)
B=$("$CD" start st-b --netns)
check "st-a answers on $A" ctr --address "$A" version
check "st-b answers on $B" ctr --address "$B" version
for s in "$A" "$B"; do
	check "cri plugin ok on $s" bash -c "ctr --address '$s' plugins ls | awk '\$2 == \"cri\" {print \$NF}' | grep -qx ok"
	check "sandbox image present on $s" bash -c "ctr --address '$s' -n k8s.io images ls -q | grep -qx localhost/oi-bed/pause:1"
done
addr_b=$(cat "$OI_BED_DIR/st-b/addr")
ip_b=${addr_b%/*}

work=$(mktemp -d)
trap 'cleanup; rm -rf "$work"' EXIT
d1=$("$IMG" build busybox:bed "$work/bb1.tar" --cmd sh 2>/dev/null)
d2=$("$IMG" build busybox:bed "$work/bb2.tar" --cmd sh 2>/dev/null)
check "image build is reproducible ($d1)" test "$d1" = "$d2"
check "image archives are byte-identical" cmp -s "$work/bb1.tar" "$work/bb2.tar"
"$IMG" import "$work/bb1.tar" st-a 2>/dev/null
"$IMG" import "$work/bb1.tar" st-b 2>/dev/null
check "import names the image docker.io/library/busybox:bed" bash -c \
	"ctr --address '$B' -n k8s.io images ls -q | grep -qx docker.io/library/busybox:bed"

out=$("$CD" run st-a --rm docker.io/library/busybox:bed t1 sh -c 'echo run-ok' 2>&1 || true)
check "ctr run --net-host on st-a" test "$out" = run-ok
out=$("$CD" run st-b --rm docker.io/library/busybox:bed t2 ip -o -4 addr show eth0 2>&1 || true)
check "container on st-b sees the netns address $ip_b" grep -q "inet $addr_b" <<<"$out"

# a listener in st-b's netns, reached from the root namespace over the bridge
"$CD" run st-b -d docker.io/library/busybox:bed srv sh -c 'echo pong | nc -l -p 7777' >/dev/null
got=""
for _ in $(seq 50); do
	got=$(timeout 2 busybox nc "$ip_b" 7777 </dev/null 2>/dev/null || true)
	[[ -z $got ]] || break
	sleep 0.1
done
check "root namespace reaches st-b's container at $ip_b:7777" test "$got" = pong
check "st-b does not see the root namespace's interfaces" bash -c \
	"! '$CD' run st-b --rm docker.io/library/busybox:bed t3 ip -o addr show oibr0 >/dev/null 2>&1"

if "$PY" -c 'import grpc, grpc_tools' 2>/dev/null &&
	compgen -G "$HOME/.cargo/registry/src/*/k8s-cri-*/proto/v1.proto" >/dev/null; then
	check "CRI host-network pod on st-a" "$PY" "$HERE/cri-smoke.py" "$A"
	check "CRI host-network pod on st-b (netns)" "$PY" "$HERE/cri-smoke.py" "$B" --expect-addr "$ip_b"
else
	echo "skip - CRI smoke (needs Python grpcio + grpcio-tools and the k8s-cri crate's v1.proto; see README)"
	skip=$((skip + 1))
fi

# leave a container running and kill containerd hard: stop must still clean up
"$CD" run st-a -d docker.io/library/busybox:bed oi-selftest-orphan sleep 1001337 >/dev/null
kill -9 "$(cat "$OI_BED_DIR/st-a/containerd.pid")"
veth_b=$(cat "$OI_BED_DIR/st-b/veth")
"$CD" teardown 2>/dev/null
leftover_procs() { # containerd and shims of our bed, and the orphan
	local p cmd
	for p in /proc/[0-9]*; do
		cmd=$(tr '\0' ' ' 2>/dev/null <"$p/cmdline") || continue
		case $(readlink "$p/exe" 2>/dev/null) in
		*/containerd*) [[ $cmd != *"$OI_BED_DIR/"* ]] || echo "${p#/proc/} $cmd" ;;
		*) [[ $cmd != "sleep 1001337 " ]] || echo "${p#/proc/} $cmd" ;;
		esac
	done
}
check "no mounts left" bash -c "! grep -qF '$OI_BED_DIR/' /proc/self/mounts"
check "no netns left" bash -c "! ip netns list | grep -q '^oi-st-b'"
check "no veth left ($veth_b)" bash -c "! ip link show '$veth_b' >/dev/null 2>&1"
check "no processes left" test -z "$(leftover_procs)"
check "no cgroups left" test -z "$(find /sys/fs/cgroup -maxdepth 3 -type d -name oi-selftest-orphan)"
check "bed dir removed" test ! -e "$OI_BED_DIR"

echo "$pass passed, $fail failed, $skip skipped"
[[ $fail -eq 0 ]]
