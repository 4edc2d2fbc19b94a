#!/usr/bin/env bash
# Checks the control-plane images of k8s-images.sh inside a bed containerd:
# builds them (or takes them from the cache), imports them into an instance
# in its own network namespace, runs every binary with --version, serves
# etcd's /health on plain HTTP, puts haproxy (two threads) in front of it as
# a TCP proxy, reaches both from the root namespace over the bed bridge,
# soft-stops haproxy, tears down and checks nothing is left.
#
#   tests/bed/k8s-images-selftest.sh
#
# Own bed dir (OI_BED_DIR defaults to /tmp/oi-bed-k8simg); the image cache
# (/var/cache/oneinfra/images) is kept. Prints 'N passed, N failed'.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export OI_BED_DIR=${OI_BED_DIR:-/tmp/oi-bed-k8simg}
PY=${OI_BED_PYTHON:-python3}
CD=$HERE/containerd.sh
KI=$HERE/k8s-images.sh
REPO=localhost/oneinfra
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
contains() { # contains NEEDLE TEXT
	grep -qF -- "$1" <<<"$2" || { printf 'expected %s in:\n%s\n' "$1" "$2"; return 1; }
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}'; }

cleanup() { "$CD" teardown >/dev/null 2>&1 || true; }
trap cleanup EXIT

"$HERE/install-deps.sh"
cleanup
# the default: the newest version, and the etcd it pairs with
V=$("$HERE/kubernetes.sh" versions | tail -n 1)
read -r E _ < <("$HERE/kubernetes.sh" pairing "$V")

# --- build (cold or cached), then a second call that must hit the cache
t0=$(now)
mapfile -t tars < <("$KI" build --repo "$REPO")
echo "#    build: $(since "$t0") s"
check "build printed 5 tarballs" test "${#tars[@]}" -eq 5
for t in "${tars[@]}"; do
	check "$(basename "$t") exists ($(($(stat -c %s "$t" 2>/dev/null || echo 0) / 1048576)) MiB)" test -s "$t"
done
before=$(stat -c %Y "${tars[@]}")
t0=$(now)
mapfile -t again < <("$KI" build --repo "$REPO")
took=$(since "$t0")
check "second build is a cache hit (${took} s, tarballs untouched)" \
	test "$(stat -c %Y "${again[@]}")" = "$before"
check "second build under 3 s" awk -v t="$took" 'BEGIN {exit !(t < 3)}'
mapfile -t names < <("$KI" names --repo "$REPO")
want=("$REPO/kube-apiserver:v$V" "$REPO/kube-controller-manager:v$V"
	"$REPO/kube-scheduler:v$V" "$REPO/etcd:$E-0" "$REPO/haproxy:2.6")
check "image names are ${want[*]}" test "${names[*]}" = "${want[*]}"

one_layer() { # the manifest of tarball $1 has exactly one uncompressed layer
	local t=$1 m
	m=$(tar -xOf "$t" index.json | jq -r '.manifests[0].digest' | cut -d: -f2)
	tar -xOf "$t" "blobs/sha256/$m" |
		jq -e '(.layers | length) == 1 and .layers[0].mediaType == "application/vnd.oci.image.layer.v1.tar"' >/dev/null
}
for t in "${tars[@]}"; do
	check "$(basename "$t" .tar): one uncompressed layer" one_layer "$t"
done
in_image() { # in_image TAR PATH: the layer holds PATH
	local t=$1 p=$2 m l
	m=$(tar -xOf "$t" index.json | jq -r '.manifests[0].digest' | cut -d: -f2)
	l=$(tar -xOf "$t" "blobs/sha256/$m" | jq -r '.layers[0].digest' | cut -d: -f2)
	# no grep -q: it would stop reading early, and pipefail sees tar die of SIGPIPE
	tar -xOf "$t" "blobs/sha256/$l" | tar -t | grep -x "${p#/}" >/dev/null
}
dir=$(dirname "${tars[0]}")
check "haproxy image holds libgcc_s.so.1 (glibc dlopens it)" in_image "$dir/haproxy-2.6.tar" /lib/x86_64-linux-gnu/libgcc_s.so.1
check "etcd image holds etcd" in_image "$dir/etcd-$E-0.tar" /usr/local/bin/etcd

# --- import into an instance with its own netns
S=$("$CD" start ki-a --netns)
addr=$(cat "$OI_BED_DIR/ki-a/addr")
ip=${addr%/*}
t0=$(now)
"$KI" import --repo "$REPO" ki-a 2>&1 | sed 's/^/#    /'
echo "#    import: $(since "$t0") s"
listed=$(ctr --address "$S" -n k8s.io images ls -q)
for n in "${want[@]}"; do
	check "$n is in ki-a's k8s.io namespace" grep -qx "$n" <<<"$listed"
done
t0=$(now)
out=$("$KI" import --repo "$REPO" "$S" 2>&1)
check "second import skips what is there ($(since "$t0") s)" test -z "$out"

# --- every binary runs and names its version
run() { "$CD" run ki-a --rm "$@" 2>&1; }
for b in kube-apiserver kube-controller-manager kube-scheduler; do
	out=$(run "$REPO/$b:v$V" "v-$b" "/usr/local/bin/$b" --version || true)
	check "$b --version says Kubernetes v$V" contains "Kubernetes v$V" "$out"
done
out=$(run "$REPO/etcd:$E-0" v-etcd /usr/local/bin/etcd --version || true)
check "etcd --version says $E" contains "etcd Version: $E" "$out"
out=$(run "$REPO/haproxy:2.6" v-haproxy /usr/local/sbin/haproxy -v || true)
check "haproxy -v says 2.6" contains "HAProxy version 2.6." "$out"
out=$(run "$REPO/haproxy:2.6" vv-haproxy /usr/local/sbin/haproxy -vv || true)
check "haproxy -vv: OpenSSL and Lua load" bash -c \
	"grep -q 'Running on OpenSSL version' <<<\"\$1\" && grep -q 'Built with Lua version' <<<\"\$1\"" _ "$out"

# --- etcd serving /health on plain HTTP in ki-a's netns
logs=$OI_BED_DIR/ki-a/logs
mkdir -p "$logs"
"$CD" run ki-a -d --log-uri "file://$logs/etcd.log" "$REPO/etcd:$E-0" ki-etcd \
	/usr/local/bin/etcd --name ki --data-dir /var/lib/etcd \
	--listen-client-urls http://0.0.0.0:2379 --advertise-client-urls "http://$ip:2379" \
	--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
	--initial-cluster ki=http://127.0.0.1:2380 >/dev/null
wait_http() { # wait_http URL EXPECTED
	local got="" i
	for ((i = 0; i < 100; i++)); do
		got=$(curl -fsS --max-time 2 "$1" 2>/dev/null || true)
		[[ $got != *"$2"* ]] || { echo "$got"; return 0; }
		sleep 0.1
	done
	echo "no '$2' from $1 (last: '$got')"
	return 1
}
check "etcd /health from the root namespace at $ip:2379" wait_http "http://$ip:2379/health" '"health":"true"'
# the image has no etcdctl; Debian's, in the instance's netns
ns=$(cat "$OI_BED_DIR/ki-a/netns")
out=$(nsenter --net="/run/netns/$ns" sh -c \
	'ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 put k ok >/dev/null && ETCDCTL_API=3 etcdctl --endpoints http://127.0.0.1:2379 get --print-value-only k' || true)
check "etcdctl put/get on 127.0.0.1 of the netns" test "$out" = ok
check "etcd's port is not open in the root namespace" bash -c "! curl -fsS --max-time 1 http://127.0.0.1:2379/health"

# --- haproxy (two threads) as a TCP proxy in front of etcd
cfg='global
  nbthread 2
defaults
  mode tcp
  timeout connect 5s
  timeout client 30s
  timeout server 30s
frontend fe
  bind :12379
  default_backend be
backend be
  server etcd 127.0.0.1:2379 check inter 1s'
# shellcheck disable=SC2016 # $1 is expanded by the container's sh
out=$(run "$REPO/haproxy:2.6" ki-hacheck sh -c 'printf "%s\n" "$1" >/tmp/h.cfg && exec haproxy -c -f /tmp/h.cfg' _ "$cfg" || true)
check "haproxy -c accepts the config" contains "Configuration file is valid" "$out"
# shellcheck disable=SC2016
"$CD" run ki-a -d --log-uri "file://$logs/haproxy.log" "$REPO/haproxy:2.6" ki-haproxy \
	sh -c 'printf "%s\n" "$1" >/tmp/h.cfg && exec haproxy -db -f /tmp/h.cfg' _ "$cfg" >/dev/null
check "etcd /health through haproxy at $ip:12379" wait_http "http://$ip:12379/health" '"health":"true"'
# SIGUSR1: soft stop, the threads finish and haproxy exits 0
ctr --address "$S" -n k8s.io tasks kill -s SIGUSR1 ki-haproxy >/dev/null
st=""
for _ in $(seq 100); do
	st=$(ctr --address "$S" -n k8s.io tasks ls | awk '$1 == "ki-haproxy" {print $3}')
	[[ $st != RUNNING ]] && break
	sleep 0.1
done
check "haproxy soft-stops on SIGUSR1" test "$st" = STOPPED
check "haproxy exited 0" ctr --address "$S" -n k8s.io tasks delete ki-haproxy
check "haproxy log has no loader or library error" bash -c \
	"! grep -iE 'error while loading|cannot open shared|libgcc_s|not found' '$logs/haproxy.log'"

# --- the CRI plugin sees the images (needs Python grpcio; see README.md)
if "$PY" -c 'import grpc, grpc_tools' 2>/dev/null &&
	compgen -G "$HOME/.cargo/registry/src/*/k8s-cri-*/proto/v1.proto" >/dev/null; then
	check "CRI host-network pod from $REPO/etcd:$E-0" "$PY" "$HERE/cri-smoke.py" "$S" \
		--image "$REPO/etcd:$E-0" --expect-addr "$ip"
else
	echo "skip - CRI pod from the etcd image (needs Python grpcio + grpcio-tools; see README)"
	skip=$((skip + 1))
fi

# --- teardown leaves nothing
veth=$(cat "$OI_BED_DIR/ki-a/veth")
"$CD" teardown 2>/dev/null
check "no mounts left" bash -c "! grep -qF '$OI_BED_DIR/' /proc/self/mounts"
check "no netns left" bash -c "! ip netns list | grep -q '^oi-ki-a'"
check "no veth left ($veth)" bash -c "! ip link show '$veth' >/dev/null 2>&1"
check "no etcd or haproxy of the bed left" bash -c \
	"! pgrep -f '^/usr/local/(s)?bin/(etcd|haproxy) ' >/dev/null && ! pgrep -f '^haproxy -db -f /tmp/h.cfg' >/dev/null"
check "bed dir removed" test ! -e "$OI_BED_DIR"

echo "$pass passed, $fail failed, $skip skipped"
[[ $fail -eq 0 ]]
