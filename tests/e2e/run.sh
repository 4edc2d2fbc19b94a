#!/usr/bin/env bash
# End-to-end on the real stack: a coordinator, three private hypervisors and
# one public hypervisor (each an oi-agent with its own containerd in its own
# network namespace), the control-plane images of every Kubernetes version
# of the matrix built from Go modules and side-loaded, and real clusters of
# those versions, side by side, driven through the `oi` CLI and kubectl.
#
# It uses its own bed (directory, bridge, subnet, ports), so it can run next
# to a developer's `tests/bed/up.sh`. Tears everything down, also on failure
# (set OI_E2E_KEEP=1 to keep the bed for a look).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
[ "$(id -u)" = 0 ] || { echo "e2e: needs root (containerd, network namespaces)" >&2; exit 1; }

export OI_BED_DIR=/tmp/oi-bed-e2e OI_BED_SUBNET=10.214.0 OI_BED_BRIDGE=oibr-e2e \
  OI_BED_NETNS_PREFIX=oie- OI_COORDINATOR_PORT=7543 OI_API_PORT=7544 OI_METRICS_PORT=9541 \
  OI_BED_PRIVATE=3 OI_BED_CLUSTER="" OI_BED_VERSIONS=all
BED="$ROOT/tests/bed"
# The matrix, oldest first: gamma runs the oldest, beta the middle one,
# alpha (created without --kubernetes-version) the default, the newest.
mapfile -t VERSIONS < <(bash "$BED/kubernetes.sh" versions)
[ "${#VERSIONS[@]}" -ge 3 ] || { echo "e2e: the matrix has ${#VERSIONS[@]} versions, want 3 or more" >&2; exit 1; }
OLDEST=${VERSIONS[0]} MIDDLE=${VERSIONS[${#VERSIONS[@]} - 2]} NEWEST=${VERSIONS[${#VERSIONS[@]} - 1]}
# shellcheck source=../bed/alive.sh
. "$BED/alive.sh"
OI="$ROOT/target/debug/oi"
export OI_CONFIG=$OI_BED_DIR/coordinator/data/admin.conf
WORK=$(mktemp -d /tmp/oi-e2e.XXXXXX)
HVS=(hv-private-1 hv-private-2 hv-private-3 hv-public-1)
passed=0

cleanup() {
  local rc=$?
  if [ "${OI_E2E_KEEP:-0}" = 1 ]; then
    echo "e2e: kept the bed in $OI_BED_DIR and files in $WORK (bash tests/bed/down.sh with the same env to remove)"
  else
    bash "$BED/down.sh" >/dev/null 2>&1 || true
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT

step() { printf '\n==> e2e: %s\n' "$*"; }
ok() { passed=$((passed + 1)); echo "  ok: $*"; }
fail() {
  echo "  FAIL: $*" >&2
  echo "--- coordinator log (tail)" >&2
  tail -n 30 "$OI_BED_DIR/coordinator/log" >&2 || true
  for log in "$OI_BED_DIR"/agents/*/log; do
    echo "--- ${log#"$OI_BED_DIR/"} (tail)" >&2
    tail -n 8 "$log" >&2 || true
  done
  exit 1
}
# retry SECONDS CMD...: until CMD succeeds.
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}
ctr_hv() { ctr --address "$OI_BED_DIR/$1/containerd.sock" -n k8s.io "${@:2}"; }
# Containers of ours on every hypervisor: "hypervisor id", sorted.
our_containers() {
  local hv
  for hv in "${HVS[@]}"; do
    ctr_hv "$hv" containers ls -q 'labels."oneinfra.io/managed"==true' | sed "s/^/$hv /"
  done | sort
}
# Running tasks of ours: "hypervisor container pid", sorted.
our_tasks() {
  local hv id
  for hv in "${HVS[@]}"; do
    for id in $(ctr_hv "$hv" containers ls -q 'labels."oneinfra.io/managed"==true'); do
      ctr_hv "$hv" tasks ls | awk -v id="$id" -v hv="$hv" '$1 == id && $3 == "RUNNING" {print hv, id, $2}'
    done
  done | sort
}
# Components whose id matches the regex PATTERN, on any hypervisor: none?
no_containers_of() {
  local hv
  for hv in "${HVS[@]}"; do
    [ -z "$(ctr_hv "$hv" containers ls -q "labels.\"oneinfra.io/component\"~=\"$1\"")" ] || return 1
  done
}
# Components of a cluster on one hypervisor: none?
no_containers_on() {
  [ -z "$(ctr_hv "$1" containers ls -q "labels.\"oneinfra.io/component\"~=\"$2\"")" ]
}
no_component_dirs() { [ -z "$(find "$OI_BED_DIR"/agents/*/state/components -mindepth 1 -maxdepth 1 2>/dev/null)" ]; }
endpoints_port_is() {
  [ "$(kubectl --kubeconfig "$1" get endpoints kubernetes -o jsonpath='{.subsets[0].ports[0].port}')" = "$2" ]
}
all_connected() {
  curl -fsS "http://127.0.0.1:$OI_METRICS_PORT/metrics" | grep -qx "oi_coordinator_connected_agents ${#HVS[@]}"
}
readyz() { [ "$(kubectl --kubeconfig "$1" get --raw /readyz 2>/dev/null)" = ok ]; }
ready_phase() { "$OI" cluster get "$1" -o json | grep -q '"phase": "ready"'; }

# kill_coordinator: kill -9, and wait until the process is gone (its ports
# are free again).
kill_coordinator() {
  local pid i
  pid=$(cat "$OI_BED_DIR/coordinator/pid")
  kill -9 "$pid" 2>/dev/null || true
  for i in $(seq 150); do alive "$pid" || return 0; sleep 0.1; done
  fail "the coordinator (pid $pid) did not exit within 15 s of kill -9"
}

# what kubelets change on the host, to check worker.sh puts it back
host_state() { sysctl -n vm.overcommit_memory kernel.panic kernel.panic_on_oops | paste -sd' '; ls -d /var/log/pods /var/log/containers /var/lib/cni /run/xtables.lock 2>/dev/null || true; }
HOST_BEFORE=$(host_state)
step "bring up the bed (images of ${VERSIONS[*]}, coordinator, 3 private + 1 public hypervisors)"
bash "$BED/down.sh" >/dev/null 2>&1 || true
bash "$BED/up.sh"

step "a 3-replica cluster of the default version becomes ready and answers kubectl through the public ingress"
start=$SECONDS
"$OI" cluster create alpha --replicas 3 --wait --timeout 5m >"$WORK/alpha.create" ||
  { cat "$WORK/alpha.create"; fail "alpha did not become ready"; }
ok "alpha ready in $((SECONDS - start)) s"
"$OI" cluster get alpha -o json | grep -q "\"kubernetesVersion\": \"$NEWEST\"" ||
  fail "alpha, created without --kubernetes-version, does not run the default $NEWEST"
ok "created without --kubernetes-version, alpha runs the default, $NEWEST"
"$OI" cluster kubeconfig alpha -f "$WORK/alpha.kc"
[ "$(stat -c %a "$WORK/alpha.kc")" = 600 ] || fail "kubeconfig file mode is $(stat -c %a "$WORK/alpha.kc"), want 600"
endpoint=$("$OI" cluster get alpha -o json | sed -n 's/.*"endpoint": "\(.*\)".*/\1/p')
case $endpoint in https://10.214.0.14:*) ok "endpoint $endpoint is on the public hypervisor" ;; *) fail "endpoint $endpoint" ;; esac
kc_server() { kubectl --kubeconfig "$1" config view -o jsonpath='{.clusters[0].cluster.server}'; }
[ "$(kc_server "$WORK/alpha.kc")" = "$endpoint" ] || fail "kubeconfig does not point at $endpoint"
[ "$(kubectl --kubeconfig "$WORK/alpha.kc" get --raw /readyz)" = ok ] || fail "/readyz is not ok"
ok "/readyz through the ingress: ok"
kubectl --kubeconfig "$WORK/alpha.kc" create namespace x >/dev/null
kubectl --kubeconfig "$WORK/alpha.kc" get ns -o name | grep -qx namespace/x || fail "namespace x not listed"
ok "kubectl create namespace x; kubectl get ns lists it"
retry 60 endpoints_port_is "$WORK/alpha.kc" "${endpoint##*:}" || fail "the kubernetes endpoints do not name the ingress"
ok "default/kubernetes endpoints name the ingress"
replicas=$("$OI" component list --cluster alpha -o json | grep -c '"id": "alpha/kube-apiserver-')
[ "$replicas" = 3 ] || fail "$replicas API servers, want 3"
hvs=$("$OI" component list --cluster alpha -o json | grep -A2 '"id": "alpha/etcd-' | sed -n 's/.*"hypervisor": "\(.*\)".*/\1/p' | sort -u | wc -l)
[ "$hvs" = 3 ] || fail "etcd members on $hvs hypervisors, want 3 (spread)"
ok "3 replicas spread over 3 private hypervisors"

step "two clusters of two other versions created at once both become ready, and are isolated"
start=$SECONDS
"$OI" cluster create beta --kubernetes-version "$MIDDLE" --wait --timeout 5m >"$WORK/beta.create" 2>&1 &
b=$!
"$OI" cluster create gamma --kubernetes-version "$OLDEST" --wait --timeout 5m >"$WORK/gamma.create" 2>&1 &
g=$!
wait $b || { cat "$WORK/beta.create"; fail "beta did not become ready"; }
wait $g || { cat "$WORK/gamma.create"; fail "gamma did not become ready"; }
usual=$((SECONDS - start)) # a 1-replica create, for the hung-etcd check
ok "beta and gamma ready in $usual s"
for c in beta gamma; do
  "$OI" cluster kubeconfig "$c" -f "$WORK/$c.kc"
  readyz "$WORK/$c.kc" || fail "$c /readyz"
done
gamma_server=$(kc_server "$WORK/gamma.kc")
# beta's credentials against gamma: gamma's serving CA is not beta's ...
if kubectl --kubeconfig "$WORK/beta.kc" --server "$gamma_server" get ns >"$WORK/iso1" 2>&1; then
  fail "beta's kubeconfig reached gamma"
fi
grep -qi "certificate" "$WORK/iso1" || { cat "$WORK/iso1"; fail "expected a certificate error"; }
# ... and even without checking the server, gamma refuses beta's client certificate.
if kubectl --kubeconfig "$WORK/beta.kc" --server "$gamma_server" --insecure-skip-tls-verify get ns >"$WORK/iso2" 2>&1; then
  fail "gamma accepted beta's client certificate"
fi
grep -qi "unauthorized\|must be logged in" "$WORK/iso2" || { cat "$WORK/iso2"; fail "expected Unauthorized"; }
ok "beta's admin kubeconfig is refused by gamma (server CA and client certificate)"
kubectl --kubeconfig "$WORK/beta.kc" get ns -o name | grep -q namespace/x && fail "namespace x leaked into beta"
ok "namespace x exists only in alpha"

step "three versions side by side on the same hypervisors: each cluster's API server is its own version"
server_version() { # KUBECONFIG: the server's gitVersion, as kubectl reports it
  kubectl --kubeconfig "$1" version -o json 2>/dev/null >"$WORK/version.json" || true
  sed -n '/"serverVersion"/,/}/s/.*"gitVersion": "\(.*\)".*/\1/p' "$WORK/version.json"
}
for pair in "alpha $NEWEST" "beta $MIDDLE" "gamma $OLDEST"; do
  read -r c v <<<"$pair"
  got=$(server_version "$WORK/$c.kc")
  [ "$got" = "v$v" ] || fail "kubectl version against $c reports server $got, want v$v"
  ok "$c: kubectl version reports server v$v"
done
hosts_of() { "$OI" component list --cluster "$1" -o json | sed -n 's/.*"hypervisor": "\(hv-private-.*\)".*/\1/p' | sort -u; }
# The scheduler spreads by load, so beta and gamma (one replica each) may land
# on different hypervisors; alpha has a replica on every private hypervisor, so
# each of them shares its hypervisor with a cluster of another version.
for pair in "beta $MIDDLE" "gamma $OLDEST"; do
  read -r c v <<<"$pair"
  shared=$(comm -12 <(hosts_of alpha) <(hosts_of "$c"))
  [ -n "$shared" ] || fail "no private hypervisor runs both alpha ($NEWEST) and $c ($v)"
  ok "$(echo "$shared" | tr '\n' ' ')runs $NEWEST (alpha) and $v ($c) side by side"
done

step "node tokens: a bootstrap-token Secret and a signed cluster-info in the cluster; revoked, they stop working"
"$OI" cluster token create alpha --ttl 10s >"$WORK/token.short" 2>&1 &&
  fail "a 10 s node token was accepted"
grep -q -- "--ttl 10s is out of range" "$WORK/token.short" || fail "bad --ttl: $(cat "$WORK/token.short")"
rc=0; "$OI" cluster token create nope >"$WORK/token.nope" 2>&1 || rc=$?
[ "$rc" = 3 ] || fail "a token for an unknown cluster: exit $rc, want 3"
ok "a bad --ttl and an unknown cluster are refused"
"$OI" cluster token create alpha --ttl 1h --description "e2e worker" -o json >"$WORK/token.json"
token=$(sed -n 's/.*"token": "\([a-z0-9]\{6\}\.[a-z0-9]\{16\}\)".*/\1/p' "$WORK/token.json")
tid=${token%%.*}
[ -n "$tid" ] || fail "no token in $(cat "$WORK/token.json")"
grep -q '"kubeadmJoinCommand": "kubeadm join 10.214.0.14:' "$WORK/token.json" || fail "no kubeadm join line"
"$OI" cluster token list alpha >"$WORK/tokens"
grep -q "$tid  active" "$WORK/tokens" || fail "token $tid not listed active: $(cat "$WORK/tokens")"
ok "token $tid created; both join lines printed"
token_secret() { [ "$(kubectl --kubeconfig "$WORK/alpha.kc" -n kube-system get secret "bootstrap-token-$tid" -o jsonpath='{.type}' 2>/dev/null)" = bootstrap.kubernetes.io/token ]; }
retry 20 token_secret || fail "no Secret kube-system/bootstrap-token-$tid in alpha"
ok "alpha holds kube-system/bootstrap-token-$tid"
jws() { [ -n "$(kubectl --kubeconfig "$WORK/alpha.kc" -n kube-public get cm cluster-info -o jsonpath="{.data.jws-kubeconfig-$tid}" 2>/dev/null)" ]; }
retry 60 jws || fail "cluster-info carries no JWS for $tid (bootstrap signer)"
ok "cluster-info signed for $tid by the controller-manager's bootstrap signer"
kubectl --kubeconfig "$WORK/alpha.kc" config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$WORK/alpha-ca.crt"
anon() { curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/alpha-ca.crt" "$endpoint/api/v1/namespaces/$1"; }
[ "$(anon kube-public/configmaps/cluster-info)" = 200 ] || fail "anonymous read of cluster-info: $(anon kube-public/configmaps/cluster-info)"
[ "$(anon kube-system/secrets)" = 403 ] || fail "anonymous list of secrets: $(anon kube-system/secrets)"
ok "anonymous: cluster-info readable (200), secrets not (403)"
as_token() { KUBECONFIG=/dev/null kubectl --server "$endpoint" --certificate-authority "$WORK/alpha-ca.crt" --token "$token" "$@"; }
who=$(as_token auth whoami -o jsonpath='{.status.userInfo.username}' 2>&1) || true
[ "$who" = "system:bootstrap:$tid" ] || fail "the token authenticates as '$who', want system:bootstrap:$tid"
ok "the token authenticates as system:bootstrap:$tid"
kubelet_cfg=$(as_token -n kube-system get cm kubelet-config -o jsonpath='{.data.kubelet}' 2>&1) || fail "the token cannot read kubelet-config: $kubelet_cfg"
case $kubelet_cfg in *'"clusterDNS"'*10.96.0.10*) ;; *) fail "kubelet-config: $kubelet_cfg" ;; esac
as_token -n kube-system get cm kubeadm-config >/dev/null 2>&1 || fail "the token cannot read kubeadm-config"
as_token -n kube-system get cm extension-apiserver-authentication >/dev/null 2>&1 && fail "the token reads other config maps"
ok "the token reads kubelet-config (cluster DNS 10.96.0.10) and kubeadm-config, and no other config map"
# A bootstrap identity asks for a kubelet serving certificate: denied (only a
# node's own credential may, for its own addresses).
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$WORK/csr.key" \
  -subj "/O=system:nodes/CN=system:node:e2e-w" -addext "subjectAltName=IP:10.214.0.99" \
  -out "$WORK/csr.pem" 2>/dev/null
cat >"$WORK/csr.yaml" <<CSR
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: e2e-serving-by-bootstrap}
spec:
  signerName: kubernetes.io/kubelet-serving
  usages: [digital signature, server auth]
  request: $(base64 -w0 "$WORK/csr.pem")
CSR
as_token create -f "$WORK/csr.yaml" >/dev/null || fail "the bootstrap identity could not create a CSR"
denied() { [ "$(kubectl --kubeconfig "$WORK/alpha.kc" get csr e2e-serving-by-bootstrap -o jsonpath='{.status.conditions[0].type}/{.status.conditions[0].reason}' 2>/dev/null)" = Denied/OneinfraNodeServingRefused ]; }
retry 20 denied || fail "the bootstrap identity's serving CSR was not denied: $(kubectl --kubeconfig "$WORK/alpha.kc" get csr e2e-serving-by-bootstrap -o yaml)"
ok "a serving CSR from a bootstrap identity is denied, with the reason"
"$OI" cluster token revoke alpha "$tid" >/dev/null
"$OI" cluster token list alpha >"$WORK/tokens"
grep -q "$tid  revoked" "$WORK/tokens" || fail "token $tid not listed revoked: $(cat "$WORK/tokens")"
no_token_secret() { ! kubectl --kubeconfig "$WORK/alpha.kc" -n kube-system get secret "bootstrap-token-$tid" >/dev/null 2>&1; }
retry 20 no_token_secret || fail "the revoked token's Secret is still in alpha"
retry 20 sh -c '! "$@" auth whoami >/dev/null 2>&1' _ env KUBECONFIG=/dev/null kubectl --server "$endpoint" --certificate-authority "$WORK/alpha-ca.crt" --token "$token" ||
  fail "the revoked token still authenticates"
ok "revoked: the Secret left alpha and the token no longer authenticates"

step "a worker joins alpha with oi node join: discovery, TLS bootstrap, serving certificate approved"
kubelet_bin=$(bash "$BED/kubernetes.sh" build --version "$NEWEST" --what kubelet)/kubelet
bash "$BED/worker.sh" join w1 alpha --addr 10.214.0.31/24
registered() { kubectl --kubeconfig "$WORK/alpha.kc" get node w1 >/dev/null 2>&1; }
retry 90 registered || { tail -n 30 "$OI_BED_DIR/workers/w1/kubelet.log" >&2; fail "w1 did not register"; }
ok "w1 registered (its client CSR was approved by the controller-manager)"
[ ! -e "$OI_BED_DIR/workers/w1/node/bootstrap-kubelet.conf" ] && [ "$(stat -c %a "$OI_BED_DIR/workers/w1/node/kubelet.conf")" = 600 ] ||
  fail "w1: the bootstrap kubeconfig is still on disk, or kubelet.conf is not 0600"
ok "w1 holds its own credential (kubelet.conf, 0600); the token left the disk"
serving_approved() {
  kubectl --kubeconfig "$WORK/alpha.kc" get csr -o jsonpath='{range .items[*]}{.spec.signerName} {.spec.username} {.status.conditions[0].type}{"\n"}{end}' >"$WORK/csrs" 2>/dev/null &&
    grep -qx "kubernetes.io/kubelet-serving system:node:w1 Approved" "$WORK/csrs"
}
retry 60 serving_approved || { cat "$WORK/csrs" >&2; fail "w1's serving CSR was not approved"; }
ok "w1's kubelet-serving CSR approved by the coordinator"
kubelet_healthz() { [ "$(kubectl --kubeconfig "$WORK/alpha.kc" get --raw /api/v1/nodes/w1/proxy/healthz 2>/dev/null)" = ok ]; }
retry 60 kubelet_healthz || fail "the API server cannot reach w1's kubelet: $(kubectl --kubeconfig "$WORK/alpha.kc" get --raw /api/v1/nodes/w1/proxy/healthz 2>&1)"
ok "the API server reaches w1's kubelet (serving certificate verified, kubelet-client certificate accepted)"
# Refusals: each with its exit code, nothing written.
"$OI" cluster token create alpha --ttl 1h -o json >"$WORK/token2.json"
token2=$(sed -n 's/.*"token": "\([a-z0-9]\{6\}\.[a-z0-9]\{16\}\)".*/\1/p' "$WORK/token2.json")
hash=$(sed -n 's/.*"caCertHash": "\(.*\)".*/\1/p' "$WORK/token2.json")
jws_for() { [ -n "$(kubectl --kubeconfig "$WORK/alpha.kc" -n kube-public get cm cluster-info -o jsonpath="{.data.jws-kubeconfig-$1}" 2>/dev/null)" ]; }
retry 60 jws_for "${token2%%.*}" || fail "cluster-info not signed for the second token"
ep=${endpoint#https://}
w1_sock=$OI_BED_DIR/w1/containerd.sock
refused() { # WANT_EXIT NEEDLE ARGS...: oi node join refuses with WANT_EXIT and writes nothing
  local want=$1 needle=$2 rc=0
  shift 2
  rm -rf "$WORK/refused"
  "$OI" node join --endpoint "$ep" --kubelet "$kubelet_bin" --cri-socket "$w1_sock" --cni-bin-dir "${REFUSED_CNI_BIN:-/usr/lib/cni}" \
    --dir "$WORK/refused" --root-dir "$WORK/refused-root" --no-systemd --discovery-timeout 3s "$@" >"$WORK/refused.out" 2>&1 || rc=$?
  [ "$rc" = "$want" ] || fail "oi node join $*: exit $rc, want $want: $(cat "$WORK/refused.out")"
  grep -q -- "$needle" "$WORK/refused.out" || fail "oi node join $*: $(cat "$WORK/refused.out")"
  [ ! -e "$WORK/refused" ] && [ ! -e "$WORK/refused-root" ] || fail "oi node join $* wrote files"
}
refused 9 "does not match --ca-cert-hash" --token "$token2" --ca-cert-hash "sha256:$(printf '0%.0s' $(seq 64))" --name w2
refused 8 "does not know this join token" --token "zzzzzz.0123456789abcdef" --ca-cert-hash "$hash" --name w2
refused 4 'has a node named "w1"' --token "$token2" --ca-cert-hash "$hash" --name w1
mkdir -p "$WORK/no-plugins"
REFUSED_CNI_BIN=$WORK/no-plugins refused 1 "needs the CNI plugins bridge, host-local, portmap, loopback" --token "$token2" --ca-cert-hash "$hash" --name w9
# revoke returns once the token's Secret left the cluster: the token joins
# no machine from then on (the authenticator's cache follows within a moment)
"$OI" cluster token revoke alpha "${token2%%.*}" >/dev/null
sleep 1
refused 8 "unknown, expired or revoked" --token "$token2" --ca-cert-hash "$hash" --name w2
ok "refused, nothing written: a wrong CA pin (exit 9), an unknown or revoked token (8), a name in use (4), no CNI plugins for the cluster's bridge CNI (1)"

step "the same token line works with a stock kubeadm join"
bash "$BED/worker.sh" kubeadm-join k1 alpha --addr 10.214.0.32/24 >"$WORK/kubeadm-join.out" 2>&1 ||
  { cat "$WORK/kubeadm-join.out"; fail "kubeadm join failed"; }
ok "kubeadm join: \"This node has joined the cluster\""
k1_healthz() { [ "$(kubectl --kubeconfig "$WORK/alpha.kc" get --raw /api/v1/nodes/k1/proxy/healthz 2>/dev/null)" = ok ]; }
retry 60 k1_healthz || fail "the API server cannot reach k1's kubelet"
ok "k1's serving certificate approved, and its kubelet trusts the API server's kubelet-client certificate (the cluster-info CA bundle)"
bash "$BED/worker.sh" stop k1
kubectl --kubeconfig "$WORK/alpha.kc" delete node k1 >/dev/null

step "a second worker; both Ready on the bridge CNI, with kube-proxy and CoreDNS from the add-ons"
bash "$BED/worker.sh" join w2 alpha --addr 10.214.0.33/24
A=(kubectl --kubeconfig "$WORK/alpha.kc")
retry 90 "${A[@]}" get node w2 || fail "w2 did not register: $(tail -n 20 "$OI_BED_DIR/workers/w2/kubelet.log")"
"${A[@]}" wait --for=condition=Ready node/w1 node/w2 --timeout=180s >/dev/null ||
  { tail -n 20 "$OI_BED_DIR/workers/w2/kubelet.log" "$OI_BED_DIR/workers/w2/network.log" >&2; fail "w1 and w2 are not both Ready"; }
ok "w1 and w2 Ready (NetworkReady from the conflist oi node network wrote over each node's podCIDR)"
for w in w1 w2; do
  [ -f "$OI_BED_DIR/$w/cni/net.d/10-oneinfra.conflist" ] || fail "$w has no 10-oneinfra.conflist"
done
routes_ok() {
  local cidr2
  cidr2=$("${A[@]}" get node w2 -o jsonpath='{.spec.podCIDR}')
  [ -n "$cidr2" ] && ip -n oie-w1 route show proto 222 | grep -q "^$cidr2 via 10.214.0.33"
}
retry 30 routes_ok || fail "w1 has no route to w2's podCIDR: $(ip -n oie-w1 route show proto 222)"
ok "w1 routes w2's podCIDR through w2 (protocol 222: oneinfra's routes only)"
"${A[@]}" -n kube-system rollout status daemonset/kube-proxy --timeout=180s >/dev/null ||
  fail "kube-proxy is not running on every node: $("${A[@]}" -n kube-system get pods -o wide 2>&1)"
ok "kube-proxy runs on both workers (the matrix image, side-loaded)"
"${A[@]}" -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null ||
  fail "CoreDNS is not available: $("${A[@]}" -n kube-system get pods -o wide 2>&1)"
[ "$("${A[@]}" -n kube-system get svc kube-dns -o jsonpath='{.spec.clusterIP}')" = 10.96.0.10 ] ||
  fail "kube-dns is not at 10.96.0.10"
ok "CoreDNS available, Service kube-dns at the tenth service address"

step "a 2-replica Deployment spread over the workers: logs, exec and port-forward on each, a ClusterIP Service from the other worker, DNS"
cat >"$WORK/web.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector: {matchLabels: {app: web}}
            topologyKey: kubernetes.io/hostname
      containers:
      - name: web
        image: oi-test/busybox:1
        imagePullPolicy: Never
        command: [sh, -c, 'mkdir -p /www && hostname >/www/index.html && echo "web $(hostname) up" && exec httpd -f -p 8080 -h /www']
        ports: [{containerPort: 8080}]
        readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
YAML
"${A[@]}" apply -f "$WORK/web.yaml" >/dev/null
"${A[@]}" rollout status deployment/web --timeout=180s >/dev/null ||
  fail "web did not roll out: $("${A[@]}" get pods -o wide 2>&1)"
declare -A WEB_ON
while read -r pod node; do WEB_ON[$node]=$pod; done < <("${A[@]}" get pods -l app=web -o jsonpath='{range .items[*]}{.metadata.name} {.spec.nodeName}{"\n"}{end}')
[ -n "${WEB_ON[w1]:-}" ] && [ -n "${WEB_ON[w2]:-}" ] || fail "web is not spread over w1 and w2: ${!WEB_ON[*]}"
ok "web: ${WEB_ON[w1]} on w1, ${WEB_ON[w2]} on w2"
port=18080
for w in w1 w2; do
  pod=${WEB_ON[$w]}
  logs=$("${A[@]}" logs "$pod" 2>&1) || fail "kubectl logs $pod ($w): $logs"
  [ "$logs" = "web $pod up" ] || fail "kubectl logs $pod ($w): '$logs'"
  got=$("${A[@]}" exec "$pod" -- cat /www/index.html 2>&1) || fail "kubectl exec $pod ($w): $got"
  [ "$got" = "$pod" ] || fail "kubectl exec $pod ($w) read '$got'"
  "${A[@]}" port-forward "pod/$pod" "$port:8080" >"$WORK/pf-$w.log" 2>&1 &
  pf=$!
  forwarded() { [ "$(curl -fsS "http://127.0.0.1:$port/" 2>/dev/null)" = "$pod" ]; }
  retry 20 forwarded || { kill "$pf" 2>/dev/null; fail "port-forward to $pod ($w): $(cat "$WORK/pf-$w.log")"; }
  kill "$pf" 2>/dev/null || true
  wait "$pf" 2>/dev/null || true
  ok "$w: kubectl logs, exec and port-forward to $pod"
  port=$((port + 1))
done
for w in w1 w2; do
  "${A[@]}" run "client-$w" --image=oi-test/busybox:1 --image-pull-policy=Never --restart=Never \
    --overrides="{\"spec\": {\"nodeName\": \"$w\"}}" -- sleep 3600 >/dev/null
done
"${A[@]}" wait --for=condition=Ready pod/client-w1 pod/client-w2 --timeout=120s >/dev/null ||
  fail "the client pods did not start: $("${A[@]}" get pods -o wide 2>&1)"
svc_ip=$("${A[@]}" get svc web -o jsonpath='{.spec.clusterIP}')
# a client on each worker reaches, through the Service, the web pod on the
# other worker (kube-proxy's DNAT, then the route to the other podCIDR)
reaches() { # CLIENT_NODE TARGET_POD URL
  local i got
  for i in $(seq 30); do
    got=$("${A[@]}" exec "client-$1" -- timeout 3 wget -qO- "$3" 2>/dev/null) || got=
    [ "$got" = "$2" ] && return 0
  done
  return 1
}
reaches w2 "${WEB_ON[w1]}" "http://$svc_ip/" || fail "client-w2 never reached ${WEB_ON[w1]} (on w1) through http://$svc_ip/"
reaches w1 "${WEB_ON[w2]}" "http://$svc_ip/" || fail "client-w1 never reached ${WEB_ON[w2]} (on w2) through http://$svc_ip/"
ok "ClusterIP $svc_ip: from a pod on w2 to the web pod on w1, and from w1 to w2"
for w in w1 w2; do
  other=w2; [ $w = w1 ] || other=w1
  reaches "$w" "${WEB_ON[$other]}" "http://web.default.svc.cluster.local/" ||
    fail "client-$w did not reach web.default.svc.cluster.local: $("${A[@]}" exec "client-$w" -- nslookup web.default.svc.cluster.local 2>&1 | tail -n 3)"
done
ok "CoreDNS: web.default.svc.cluster.local resolves and answers from a pod on each worker"

step "an add-on turned off is removed; turned on, it comes back"
cat >"$WORK/alpha-nodns.yaml" <<YAML
name: alpha
replicas: 3
addons: {dns: false}
YAML
"$OI" apply -f "$WORK/alpha-nodns.yaml" >"$WORK/apply.out" || fail "oi apply addons.dns=false: $(cat "$WORK/apply.out")"
dns_gone() { ! "${A[@]}" -n kube-system get deployment coredns >/dev/null 2>&1 && ! "${A[@]}" -n kube-system get svc kube-dns >/dev/null 2>&1; }
retry 30 dns_gone || fail "dns: false left CoreDNS in alpha"
"${A[@]}" -n kube-system get daemonset kube-proxy >/dev/null || fail "dns: false removed kube-proxy too"
ok "addons.dns=false: the CoreDNS Deployment and the kube-dns Service are gone, kube-proxy stays"
printf 'name: alpha\nreplicas: 3\n' >"$WORK/alpha-dns.yaml"
"$OI" apply -f "$WORK/alpha-dns.yaml" >"$WORK/apply.out" || fail "oi apply (add-ons back on): $(cat "$WORK/apply.out")"
"${A[@]}" -n kube-system rollout status deployment/coredns --timeout=180s >/dev/null 2>&1 ||
  retry 60 "${A[@]}" -n kube-system rollout status deployment/coredns --timeout=5s ||
  fail "CoreDNS did not come back"
ok "add-ons back on: CoreDNS available again"
"${A[@]}" delete pod client-w1 client-w2 --wait=false >/dev/null
"${A[@]}" delete -f "$WORK/web.yaml" --wait=false >/dev/null

step "oi node list shows the worker; oi node remove revokes the token it joined with and deletes it"
w1_token() { "$OI" node list alpha >"$WORK/nodes" 2>&1 && awk '$1 == "w1" && $6 != "-" {print $6}' "$WORK/nodes" | grep -q .; }
retry 30 w1_token || fail "oi node list: $(cat "$WORK/nodes")"
read -r _ w1_status w1_version w1_addresses _ w1_tid _ < <(awk '$1 == "w1"' "$WORK/nodes")
[ "$w1_version" = "v$NEWEST" ] || fail "w1's kubelet is $w1_version, want v$NEWEST"
case $w1_addresses in *InternalIP=10.214.0.31*) ;; *) fail "w1's addresses: $w1_addresses" ;; esac
ok "oi node list: w1 $w1_status, kubelet $w1_version, $w1_addresses, joined with token $w1_tid"
bash "$BED/worker.sh" stop w1
"$OI" node remove alpha w1 >"$WORK/remove.out" || fail "oi node remove: $(cat "$WORK/remove.out")"
grep -q "revoked its node token $w1_tid" "$WORK/remove.out" || fail "oi node remove: $(cat "$WORK/remove.out")"
kubectl --kubeconfig "$WORK/alpha.kc" get node w1 >/dev/null 2>&1 && fail "node w1 is still there"
"$OI" cluster token list alpha >"$WORK/tokens"
grep -q "$w1_tid  revoked" "$WORK/tokens" || fail "w1's token is not revoked: $(cat "$WORK/tokens")"
w1_gone() { ! kubectl --kubeconfig "$WORK/alpha.kc" -n kube-system get secret "bootstrap-token-$w1_tid" >/dev/null 2>&1; }
retry 20 w1_gone || fail "w1's token Secret is still in alpha"
ok "w1 removed: node gone, its token $w1_tid revoked and out of the cluster"
bash "$BED/worker.sh" stop w2
[ "$(host_state)" = "$HOST_BEFORE" ] || fail "the workers' host side effects were not undone: $(host_state), before: $HOST_BEFORE"
ok "no worker left, the host is as before (sysctls, /var/log/pods and /var/log/containers, /var/lib/cni, /run/xtables.lock)"

step "scale beta 1 -> 3 -> 1: etcd members join and leave one at a time, nothing of replica 0 restarts"
kubectl --kubeconfig "$WORK/beta.kc" create namespace kept >/dev/null
beta0() { # tasks of beta's replica 0 (etcd, apiserver, controller-manager, scheduler)
  local hv
  hv=$("$OI" component list --cluster beta -o json | grep -A2 '"id": "beta/etcd-0"' | sed -n 's/.*"hypervisor": "\(.*\)".*/\1/p')
  for id in $(ctr_hv "$hv" containers ls -q 'labels."oneinfra.io/component"~="^beta/.*-0$"'); do
    ctr_hv "$hv" tasks ls | awk -v id="$id" '$1 == id {print $1, $2}'
  done | sort
}
cluster_running() { # CLUSTER N: CLUSTER has N components, all running and ready
  local json
  json=$("$OI" component list --cluster "$1" -o json)
  [ "$(grep -c '"id"' <<<"$json")" = "$2" ] && [ "$(grep -c '"ready": true' <<<"$json")" = "$2" ]
}
beta_running() { cluster_running beta "$1"; }
beta_ingress() { # the ingress task of beta on the public hypervisor
  local id
  for id in $(ctr_hv hv-public-1 containers ls -q 'labels."oneinfra.io/component"=="beta/ingress"'); do
    ctr_hv hv-public-1 tasks ls | awk -v id="$id" '$1 == id {print $1, $2}'
  done | sort
}
backends() { # server lines in beta's haproxy config
  grep -c '^ *server ' "$OI_BED_DIR"/agents/hv-public-1/state/components/beta_ingress-*/haproxy/haproxy.cfg
}
ingress_before=$(beta_ingress)
zero_before=$(beta0)
printf 'name: beta\nkubernetesVersion: %s\nreplicas: 3\n' "$MIDDLE" >"$WORK/beta.yaml"
"$OI" apply -f "$WORK/beta.yaml" | grep -qx "cluster/beta updated" || fail "oi apply did not update beta"
start=$SECONDS
retry 240 beta_running 13 || { "$OI" component list --cluster beta >&2; fail "beta did not reach 3 ready replicas"; }
ok "beta scaled to 3 replicas in $((SECONDS - start)) s"
retry 60 readyz "$WORK/beta.kc" || fail "beta /readyz after scaling up"
kubectl --kubeconfig "$WORK/beta.kc" get ns kept >/dev/null || fail "beta lost its data while scaling up"
[ "$(beta0)" = "$zero_before" ] || fail "replica 0 of beta restarted while scaling up"
ok "replica 0 untouched, data kept"
[ "$(backends)" = 3 ] || fail "beta's ingress has $(backends) backends, want 3"
[ "$(beta_ingress)" = "$ingress_before" ] || fail "beta's ingress was replaced instead of reloaded"
ok "the ingress reloaded in place with 3 backends"
# down with `oi cluster scale --wait` (up was `oi apply`): it returns once
# the Replicas condition holds
"$OI" cluster scale beta --replicas 1 --wait --timeout 3m >"$WORK/beta.scale" ||
  { cat "$WORK/beta.scale" >&2; fail "oi cluster scale beta --replicas 1 --wait"; }
tail -n 1 "$WORK/beta.scale" | grep -qx "cluster beta runs 1 replica(s)" ||
  { cat "$WORK/beta.scale" >&2; fail "oi cluster scale did not report 1 replica"; }
retry 120 beta_running 5 || { "$OI" component list --cluster beta >&2; fail "beta did not scale back to 1"; }
retry 60 readyz "$WORK/beta.kc" || fail "beta /readyz after scaling down"
kubectl --kubeconfig "$WORK/beta.kc" get ns kept >/dev/null || fail "beta lost its data while scaling down"
[ "$(beta0)" = "$zero_before" ] || fail "replica 0 of beta restarted while scaling down"
retry 60 no_containers_of '^beta/.*-[12]$' || fail "containers of removed beta replicas are left"
[ "$(backends)" = 1 ] || fail "beta's ingress has $(backends) backends, want 1"
[ "$(beta_ingress)" = "$ingress_before" ] || fail "beta's ingress was replaced instead of reloaded"
ok "beta back to 1 replica: removed replicas left nothing, replica 0 and the ingress untouched"

step "restart the coordinator (kill -9): zero container restarts"
before=$(our_tasks)
[ -n "$before" ] || fail "no running containers found"
kill_coordinator
bash "$BED/up.sh" >/dev/null
retry 60 all_connected || fail "agents did not reconnect"
for c in alpha beta gamma; do retry 60 ready_phase "$c" || fail "$c not ready after the restart"; done
sleep 15 # a few agent resyncs
after=$(our_tasks)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; fail "containers changed across the coordinator restart"; }
ok "$(echo "$before" | wc -l) containers: same ids and processes after the restart"
readyz "$WORK/alpha.kc" || fail "alpha /readyz after the restart"
kubectl --kubeconfig "$WORK/alpha.kc" get ns -o name | grep -qx namespace/x || fail "alpha lost namespace x"
ok "alpha still serves, with its data"

step "a coordinator started on an empty store beside running agents removes nothing"
held_on() { # HV: the components its agent holds from an earlier store
  "$ROOT/target/debug/oi-agent" --config "$OI_BED_DIR/agents/$1/etc/config.toml" release-held | sed -n 's/^  //p'
}
before=$(our_tasks)
kill_coordinator
mkdir -p "$WORK/store"
mv "$OI_BED_DIR"/coordinator/data/state.db* "$WORK/store/"
bash "$BED/up.sh" >/dev/null
retry 60 all_connected || fail "agents did not connect to the coordinator on an empty store"
[ "$("$OI" cluster list -o json | tr -d ' \n')" = "[]" ] || fail "the empty store lists clusters"
sleep 25 # what wiped the fleet took under 25 s
after=$(our_tasks)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; fail "containers changed under a coordinator on an empty store"; }
ok "$(echo "$before" | wc -l) containers kept running, the same ids and processes"
held_on hv-public-1 | grep -q '^alpha/ingress$' || fail "hv-public-1 does not report alpha/ingress as held"
retry 30 sh -c "'$OI' hypervisor list 2>&1 >/dev/null | grep -q 'hv-public-1 runs .*(not adopted): .*alpha/ingress'" ||
  fail "oi hypervisor list does not show hv-public-1's components as not adopted"
readyz "$WORK/alpha.kc" || fail "alpha stopped answering under a coordinator on an empty store"
kubectl --kubeconfig "$WORK/alpha.kc" get ns x >/dev/null || fail "alpha lost namespace x"
ok "agents hold what they ran (not adopted), alpha serves its data"
# The operator puts the right store back: everything is adopted again.
kill_coordinator
rm -f "$OI_BED_DIR"/coordinator/data/state.db*
mv "$WORK"/store/state.db* "$OI_BED_DIR/coordinator/data/"
bash "$BED/up.sh" >/dev/null
retry 60 all_connected || fail "agents did not reconnect to the restored store"
for c in alpha beta gamma; do retry 60 ready_phase "$c" || fail "$c not ready on the restored store"; done
sleep 5
for hv in "${HVS[@]}"; do [ -z "$(held_on "$hv")" ] || fail "$hv still holds $(held_on "$hv") after the restore"; done
after=$(our_tasks)
[ "$before" = "$after" ] || { diff <(echo "$before") <(echo "$after") >&2; fail "containers changed when the store was restored"; }
ok "restored store: every component adopted again, nothing restarted"

step "the coordinator dies inside etcd membership steps: restarted, it finishes each step, never repeats it"
# restart_coordinator [VAR=VALUE...]: kill -9 the coordinator, start it again
# with VAR=VALUE in its environment.
restart_coordinator() {
  kill_coordinator
  env "$@" bash "$BED/up.sh" >/dev/null
  retry 60 all_connected || fail "agents did not reconnect"
}
coordinator_died() { ! alive "$(cat "$OI_BED_DIR/coordinator/pid")"; }
# etcd_members CLUSTER: "name learner" of each member, sorted, as replica 0's
# etcd lists them (an added learner that has not started has no name yet).
# Found from the hypervisors' files, so it works while the coordinator is down.
etcd_members() {
  local dir hv id url api
  dir=$(ls -d "$OI_BED_DIR"/agents/*/state/components/"$1"_etcd-0-* | head -n 1)
  hv=${dir#"$OI_BED_DIR/agents/"}
  hv=${hv%%/*}
  for id in $(ctr_hv "$hv" containers ls -q "labels.\"oneinfra.io/component\"==\"$1/etcd-0\""); do
    url=$(ctr_hv "$hv" containers info "$id" | jq -r '.Spec.process.args[]?' | sed -n 's/^--advertise-client-urls=//p')
    [ -n "$url" ] && break
  done
  api=$(ls -d "$OI_BED_DIR/agents/$hv/state/components/$1_kube-apiserver-0-"* | head -n 1)/kubernetes/pki
  ETCDCTL_API=3 timeout 20 etcdctl --endpoints "$url" --cacert "$api/etcd/server-ca.crt" \
    --cert "$api/apiserver-etcd-client.crt" --key "$api/apiserver-etcd-client.key" \
    member list -w json | jq -r '.members[] | "\(.name // "") \(.isLearner // false)"' | sort
}
members_are() { [ "$(etcd_members "$1")" = "$2" ]; }
kubectl --kubeconfig "$WORK/gamma.kc" create namespace kept-g >/dev/null
# 1 -> 2, dying once the new slot is recorded (the counts then match: only
# the recorded intent says a step is left).
restart_coordinator OI_CRASH_AT=grow-after-intent
"$OI" cluster scale gamma --replicas 2 >/dev/null
retry 60 coordinator_died || fail "the coordinator did not die at grow-after-intent"
grep -q 'OI_CRASH_AT=grow-after-intent' "$OI_BED_DIR/coordinator/log" || fail "the coordinator died elsewhere"
members_are gamma 'gamma-0 false' || { etcd_members gamma >&2; fail "etcd was asked before the intent was recorded"; }
ok "died after recording gamma's new slot, before asking etcd: etcd unchanged"
start=$SECONDS
restart_coordinator
retry 240 cluster_running gamma 9 || { "$OI" cluster get gamma >&2; fail "gamma did not reach 2 ready replicas after the crash"; }
members_are gamma "$(printf 'gamma-0 false\ngamma-1 false')" ||
  { etcd_members gamma >&2; fail "gamma's etcd members after the grow interrupted after its intent"; }
ok "restarted, it added the learner it had recorded and grew to 2 members in $((SECONDS - start)) s"
# 2 -> 3, dying after etcd added the learner, before that is recorded.
: >"$OI_BED_DIR/coordinator/log"
restart_coordinator OI_CRASH_AT=grow-after-add-learner
"$OI" cluster scale gamma --replicas 3 >/dev/null
retry 60 coordinator_died || fail "the coordinator did not die at grow-after-add-learner"
grep -q 'OI_CRASH_AT=grow-after-add-learner' "$OI_BED_DIR/coordinator/log" || fail "the coordinator died elsewhere"
members_are gamma "$(printf ' true\ngamma-0 false\ngamma-1 false')" ||
  { etcd_members gamma >&2; fail "gamma's etcd should hold its members and the learner added before the crash"; }
ok "died after adding gamma's learner, before recording it: etcd has the learner, the store only the intent"
start=$SECONDS
restart_coordinator
retry 240 cluster_running gamma 13 || { "$OI" cluster get gamma >&2; fail "gamma did not reach 3 ready replicas after the crash"; }
members_are gamma "$(printf 'gamma-0 false\ngamma-1 false\ngamma-2 false')" ||
  { etcd_members gamma >&2; fail "gamma's etcd members after the interrupted grow"; }
ok "restarted, it adopted the learner (no second one), placed it and grew to 3 members in $((SECONDS - start)) s"
: >"$OI_BED_DIR/coordinator/log"
restart_coordinator OI_CRASH_AT=shrink-after-remove-member
"$OI" cluster scale gamma --replicas 1 >/dev/null
retry 60 coordinator_died || fail "the coordinator did not die at shrink-after-remove-member"
members_are gamma "$(printf 'gamma-0 false\ngamma-1 false')" ||
  { etcd_members gamma >&2; fail "gamma's etcd should have lost one member before the crash"; }
ok "died after removing gamma's member 2, before recording it"
start=$SECONDS
restart_coordinator
retry 240 cluster_running gamma 5 || { "$OI" cluster get gamma >&2; fail "gamma did not shrink to 1 replica after the crash"; }
members_are gamma 'gamma-0 false' || { etcd_members gamma >&2; fail "gamma's etcd members after the interrupted shrink"; }
retry 60 no_containers_of '^gamma/.*-[12]$' || fail "containers of removed gamma replicas are left"
retry 60 readyz "$WORK/gamma.kc" || fail "gamma /readyz after the interrupted steps"
kubectl --kubeconfig "$WORK/gamma.kc" get ns kept-g >/dev/null || fail "gamma lost its data"
ok "restarted, it dropped the removed replica and shrank to 1 member in $((SECONDS - start)) s; data kept"

step "one tenant's etcd hangs: another tenant's create, scale and delete go on in their usual time"
# gamma's etcd frozen (SIGSTOP: connections are accepted, nothing answers),
# then gamma asked to grow: its membership steps wait on that etcd.
gamma_etcd=""
while read -r hv id pid; do
  ids=" $(ctr_hv "$hv" containers ls -q 'labels."oneinfra.io/component"=="gamma/etcd-0"' | tr '\n' ' ' || true) "
  case $ids in *" $id "*) gamma_etcd=$pid; break ;; esac
done < <(our_tasks)
[ -n "$gamma_etcd" ] || fail "gamma's etcd task not found"
kill -STOP "$gamma_etcd"
"$OI" cluster scale gamma --replicas 3 >/dev/null
gamma_step_failed() { "$OI" cluster get gamma >"$WORK/gamma.get" 2>&1 && grep -q "membership step failed" "$WORK/gamma.get"; }
# Its steps are failing against the frozen etcd (each hangs until its
# time-box, then retries with backoff) while delta is created and deleted.
retry 90 gamma_step_failed || { kill -CONT "$gamma_etcd"; cat "$WORK/gamma.get" >&2; fail "gamma does not say its membership step failed"; }
start=$SECONDS
"$OI" cluster create delta --kubernetes-version "$NEWEST" --wait --timeout 4m >"$WORK/delta.create" 2>&1 ||
  { kill -CONT "$gamma_etcd"; cat "$WORK/delta.create"; fail "delta was not created while gamma's etcd hung"; }
took=$((SECONDS - start))
"$OI" cluster delete delta --wait --timeout 2m >/dev/null || { kill -CONT "$gamma_etcd"; fail "delete delta while gamma's etcd hung"; }
kill -CONT "$gamma_etcd"
[ "$took" -le $((usual + 30)) ] || fail "delta took $took s while gamma's etcd hung; a create takes about $usual s"
ok "delta created in $took s (usual $usual s) and deleted while gamma's etcd hung; gamma says its step failed"
"$OI" cluster scale gamma --replicas 1 --wait --timeout 4m >"$WORK/gamma.back" 2>&1 ||
  { cat "$WORK/gamma.back"; "$OI" cluster get gamma >&2; fail "gamma did not settle back to 1 replica once its etcd answered"; }
retry 60 readyz "$WORK/gamma.kc" || fail "gamma /readyz once its etcd answered again"
ok "gamma settled back to 1 replica once its etcd answered"

step "delete: no container, file or port of a cluster is left on any hypervisor"
ports_of() { # listening TCP ports in the bed's port range, per hypervisor
  local hv
  for hv in "${HVS[@]}"; do
    nsenter --net="/run/netns/oie-$hv" ss -ltnH | awk -v hv="$hv" '{n = split($4, a, ":"); p = a[n]} p >= 30000 && p <= 30999 {print hv, p}'
  done | sort -u
}
# recreate NAME VERSION REPLICAS NS: delete NAME and at once create it again; the
# new cluster must be fresh (an empty etcd): namespace NS of the old one
# must not exist, and the old one's etcd data is kept aside, not reused.
recreate() {
  local version=$2
  set -- "$1" "${@:3}" # NAME REPLICAS NS
  "$OI" cluster delete "$1" --wait --timeout 2m >"$WORK/$1.delete" || { cat "$WORK/$1.delete" >&2; fail "delete $1 --wait"; }
  # --wait returns once every agent reports the pieces removed: none is left.
  no_containers_of "^$1/" || { our_containers >&2; fail "delete $1 --wait returned while containers of $1 were left"; }
  "$OI" cluster create "$1" --kubernetes-version "$version" --replicas "$2" --wait --timeout 5m \
    >"$WORK/$1.recreate" 2>&1 || { cat "$WORK/$1.recreate" >&2; fail "recreate $1 ($version) with $2 replica(s)"; }
  "$OI" cluster kubeconfig "$1" -f "$WORK/$1.kc" >/dev/null
  retry 60 readyz "$WORK/$1.kc" || fail "recreated $1 does not answer"
  if kubectl --kubeconfig "$WORK/$1.kc" get ns "$3" >/dev/null 2>&1; then
    fail "recreated $1 has the deleted cluster's namespace $3: it started on the old etcd data"
  fi
  [ -z "$(kubectl --kubeconfig "$WORK/$1.kc" get secrets -A -o name | grep -v 'token\|bootstrap' || true)" ] ||
    fail "recreated $1 has secrets of the deleted cluster"
  ls -d "$OI_BED_DIR"/agents/*/state/retired/"$1"_etcd-0-* >/dev/null 2>&1 ||
    fail "the deleted $1's etcd data is not kept aside in retired/"
  ok "$1 deleted and at once created again with $2 replica(s): a fresh, empty cluster; the old data kept aside"
}
recreate alpha "$NEWEST" 3 x
"$OI" cluster delete alpha
if "$OI" cluster get alpha >/dev/null 2>&1; then fail "alpha still exists"; fi
rc=0; "$OI" cluster get alpha >/dev/null 2>&1 || rc=$?
[ $rc = 3 ] || fail "oi cluster get of a deleted cluster exits $rc, want 3 (not found)"
retry 60 no_containers_of '^alpha/' || fail "containers of alpha are left"
ok "no container of alpha is left"
for c in beta gamma; do readyz "$WORK/$c.kc" || fail "$c stopped answering when alpha was deleted"; done
ok "beta and gamma keep answering"

step "remove the hypervisor of beta's only replica: it returns at once, the replica migrates without losing data, then the hypervisor is gone"
from=$("$OI" component list --cluster beta -o json | grep -A2 '"id": "beta/etcd-' | sed -n 's/.*"hypervisor": "\(.*\)".*/\1/p')
[ -n "$from" ] || fail "beta's replica not found"
start=$SECONDS
"$OI" hypervisor remove "$from" >"$WORK/remove.out" || { cat "$WORK/remove.out"; fail "remove $from failed"; }
took=$((SECONDS - start))
grep -q "is being removed" "$WORK/remove.out" || { cat "$WORK/remove.out"; fail "remove of a hypervisor holding a replica did not say it goes on in the background"; }
[ "$took" -le 15 ] || fail "remove of a hypervisor holding a replica took $took s: it must return at once"
"$OI" hypervisor list -o json | grep -q '"removal": "removing' || fail "oi hypervisor list does not show the removal in progress"
ok "oi hypervisor remove returned in $took s; the list shows the removal in progress"
on_from() { "$OI" component list --cluster beta -o json | grep -q "\"hypervisor\": \"$from\""; }
# Asked again with --wait: the same removal goes on, followed to its end.
"$OI" hypervisor remove "$from" --wait --timeout 4m >"$WORK/remove-wait.out" 2>&1 ||
  { cat "$WORK/remove-wait.out" >&2; "$OI" cluster get beta >&2; fail "remove $from --wait"; }
grep -q "hypervisor/$from removed" "$WORK/remove-wait.out" || { cat "$WORK/remove-wait.out"; fail "remove --wait did not say it was removed"; }
! on_from || fail "beta still has pieces on the removed $from"
"$OI" hypervisor list -o json | grep -q "\"name\": \"$from\"" && fail "the removed $from is still listed"
retry 120 beta_running 5 || { "$OI" cluster get beta >&2; fail "beta is not running after its replica moved"; }
ok "beta's replica migrated off $from and $from was removed in $((SECONDS - start)) s (new member joined first, then the old one left)"
retry 60 readyz "$WORK/beta.kc" || fail "beta /readyz after the migration"
kubectl --kubeconfig "$WORK/beta.kc" get ns kept >/dev/null || fail "beta lost its data in the migration"
ok "beta serves its data from the new hypervisor"
retry 60 no_containers_on "$from" '^beta/' || fail "containers of beta are left on $from"
for c in beta gamma; do retry 60 readyz "$WORK/$c.kc" || fail "$c /readyz after the removal"; done
recreate beta "$MIDDLE" 1 kept

"$OI" cluster delete beta
"$OI" cluster delete gamma
retry 90 no_containers_of . || { our_containers >&2; fail "containers are left after deleting every cluster"; }
ok "no container of ours is left on any hypervisor"
retry 30 no_component_dirs || { ls -R "$OI_BED_DIR"/agents/*/state/components >&2; fail "component files are left"; }
ok "no component directory (keys, configs, etcd data) is left in use; removed ones are kept aside in retired/"
left=$(ports_of)
[ -z "$left" ] || { echo "$left" >&2; fail "ports still listening"; }
ok "no host port of a cluster is listening"
"$OI" hypervisor list -o json | grep -q '"components": [1-9]' && fail "hypervisors still hold components"
[ "$("$OI" cluster list -o json | tr -d ' \n')" = "[]" ] || fail "clusters left"
ok "the coordinator holds no cluster and no component"

echo
echo "e2e: $passed checks passed"
