#!/usr/bin/env bash
# Local bring-up: a coordinator with its embedded store, hypervisors (two
# private, one public by default), each an oi-agent driving its own
# containerd in its own network namespace, with the control-plane images
# side-loaded, a cluster "demo" that answers kubectl, and a worker "w1"
# joined to it with `oi node join` (its own containerd and network
# namespace), Ready, running a busybox pod. Needs root.
# Stop with down.sh. Environment: see tests/bed/README.md.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=alive.sh
. "$HERE/alive.sh"
ROOT=$(cd "$HERE/../.." && pwd)
BED_DIR=${OI_BED_DIR:-/tmp/oi-bed}
PROFILE=${OI_PROFILE:-debug}
SUBNET=${OI_BED_SUBNET:-10.213.0}
COORD_ADDR=$SUBNET.1
COORD_PORT=${OI_COORDINATOR_PORT:-7443}
API_PORT=${OI_API_PORT:-7444}
METRICS=127.0.0.1:${OI_METRICS_PORT:-9441}
PRIVATE=${OI_BED_PRIVATE:-2}
# A cluster to create (empty: none) and its Kubernetes version (empty: the
# coordinator's default, the newest of the matrix).
CLUSTER=${OI_BED_CLUSTER-demo}
CLUSTER_VERSION=${OI_BED_CLUSTER_VERSION:-}
# The worker joined to that cluster (empty: none).
WORKER=${OI_BED_WORKER-w1}
# The Kubernetes versions whose images the hypervisors get (k8s-images.sh
# --versions: a comma-separated list, "all" or "newest").
VERSIONS=${OI_BED_VERSIONS:-newest}
NETNS_PREFIX=${OI_BED_NETNS_PREFIX:-oi-}
export OI_BED_BRIDGE_ADDR=${OI_BED_BRIDGE_ADDR:-$COORD_ADDR/24} OI_BED_NETNS_PREFIX=$NETNS_PREFIX
# control-plane images (k8s-images.sh), side-loaded into every hypervisor
IMAGE_REPO=${OI_IMAGE_REPOSITORY:-localhost/oneinfra}
# The coordinator points every control-plane image at the side-loaded ones
# (set OI_COORD_IMAGE_REPOSITORY=0 to keep the upstream image names).
COORD_IMAGE_REPOSITORY=${OI_COORD_IMAGE_REPOSITORY:-1}
export OI_BED_DIR=$BED_DIR

die() { echo "up.sh: error: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root: containerd and network namespaces need it"

"$ROOT/tests/setup.sh"

echo "==> building oi-coordinator and oi-agent ($PROFILE)"
if [ "$PROFILE" = release ]; then
  (cd "$ROOT" && cargo build --release --quiet -p oi-coordinator -p oi-agent -p oi-cli --bins)
else
  (cd "$ROOT" && cargo build --quiet -p oi-coordinator -p oi-agent -p oi-cli --bins)
fi
BIN="$ROOT/target/$PROFILE"

# name role address
HYPERVISORS=()
for i in $(seq 1 "$PRIVATE"); do HYPERVISORS+=("hv-private-$i private $SUBNET.$((10 + i))"); done
HYPERVISORS+=("hv-public-1 public $SUBNET.$((11 + PRIVATE))")

echo "==> starting containerd instances"
for hv in "${HYPERVISORS[@]}"; do
  read -r name _ addr <<<"$hv"
  if "$HERE/containerd.sh" status "$name" 2>/dev/null | grep -q running; then
    continue
  fi
  "$HERE/containerd.sh" start "$name" --netns --addr "$addr/24" >/dev/null
done

echo "==> control-plane images ($IMAGE_REPO): build (cached) and import"
"$HERE/k8s-images.sh" build --repo "$IMAGE_REPO" --versions "$VERSIONS" >/dev/null
# one import per hypervisor in parallel; each skips what it already holds
pids=()
for hv in "${HYPERVISORS[@]}"; do
  read -r name _ <<<"$hv"
  "$HERE/k8s-images.sh" import --repo "$IMAGE_REPO" --versions "$VERSIONS" "$name" 2>"$BED_DIR/$name/images.log" &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  read -r name _ <<<"${HYPERVISORS[$i]}"
  wait "${pids[$i]}" || { cat "$BED_DIR/$name/images.log" >&2; die "image import into $name failed"; }
done

COORD_DIR=$BED_DIR/coordinator
mkdir -p "$COORD_DIR"
if ! { [ -f "$COORD_DIR/pid" ] && alive "$(cat "$COORD_DIR/pid")"; }; then
  echo "==> starting oi-coordinator on udp $COORD_ADDR:$COORD_PORT"
  cat >"$COORD_DIR/config.toml" <<TOML
data_dir = "$COORD_DIR/data"
listen = "0.0.0.0:$COORD_PORT"
api_listen = "0.0.0.0:$API_PORT"
metrics_listen = "$METRICS"
server_names = ["$COORD_ADDR", "localhost", "127.0.0.1"]
advertise_address = "$COORD_ADDR"
TOML
  if [ -n "${OI_COORD_PROFILE:-}" ]; then
    echo "profile = \"$OI_COORD_PROFILE\"" >>"$COORD_DIR/config.toml"
  fi
  if [ "$COORD_IMAGE_REPOSITORY" = 1 ]; then
    echo "image_repository = \"$IMAGE_REPO\"" >>"$COORD_DIR/config.toml"
  fi
  setsid "$BIN/oi-coordinator" --config "$COORD_DIR/config.toml" serve \
    >>"$COORD_DIR/log" 2>&1 </dev/null &
  echo $! >"$COORD_DIR/pid"
fi

for _ in $(seq 300); do
  curl -fsS "http://$METRICS/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
if ! curl -fsS "http://$METRICS/healthz" >/dev/null; then
  tail -n 20 "$COORD_DIR/log" >&2 || true
  die "coordinator did not start within 30 s; see $COORD_DIR/log"
fi

OI="$BIN/oi --config $COORD_DIR/data/admin.conf"

echo "==> joining hypervisors and starting agents"
# Each hypervisor joins the way a machine does: a join token for its role
# (created with the admin credentials), then `oi hypervisor join` inside its
# network namespace (so the coordinator sees the address agents use) against
# its own containerd (the CRI check is real), writing the agent's config and
# key under $dir/etc. The agent runs from that config.
for hv in "${HYPERVISORS[@]}"; do
  read -r name role addr <<<"$hv"
  dir=$BED_DIR/agents/$name
  if [ -f "$dir/pid" ] && alive "$(cat "$dir/pid")"; then
    continue
  fi
  mkdir -p "$dir"
  if [ ! -f "$dir/etc/config.toml" ]; then
    # "  oi hypervisor join --coordinator H:P --token T --ca-cert-hash sha256:X"
    join=$($OI hypervisor token create --role "$role" --ttl 10m --uses 1 | sed -n 's/^  oi hypervisor join //p')
    [ -n "$join" ] || die "oi hypervisor token create printed no join command"
    # shellcheck disable=SC2086 # $join is the printed argument list
    nsenter --net="/run/netns/$NETNS_PREFIX$name" "$BIN/oi" hypervisor join $join \
      --name "$name" --address "$addr" --port-range 30000-30999 \
      --cri-socket "$("$HERE/containerd.sh" sock "$name")" \
      --no-systemd --config-dir "$dir/etc" --state-dir "$dir/state" >"$dir/join.log" 2>&1 ||
      { cat "$dir/join.log" >&2; die "oi hypervisor join failed for $name"; }
    if [ -n "${OI_AGENT_CPU_MILLIS:-}" ]; then
      echo "cpu_millis = $OI_AGENT_CPU_MILLIS" >>"$dir/etc/config.toml"
    fi
  fi
  setsid nsenter --net="/run/netns/$NETNS_PREFIX$name" "$BIN/oi-agent" --config "$dir/etc/config.toml" \
    >"$dir/log" 2>&1 </dev/null &
  echo $! >"$dir/pid"
done

echo "==> waiting for the agents to connect"
want=${#HYPERVISORS[@]}
for _ in $(seq 300); do
  n=$(curl -fsS "http://$METRICS/metrics" | awk '/^oi_coordinator_connected_agents /{print $2}')
  [ "${n:-0}" = "$want" ] && break
  sleep 0.1
done
[ "${n:-0}" = "$want" ] || die "only ${n:-0} of $want agents connected; see $BED_DIR/agents/*/log"

cluster_line=""
if [ -n "$CLUSTER" ]; then
  if ! $OI cluster get "$CLUSTER" >/dev/null 2>&1; then
    echo "==> creating cluster $CLUSTER (Kubernetes ${CLUSTER_VERSION:-$($OI version --kubernetes | awk '$2 == "(default)" {print $1}')})"
    $OI cluster create "$CLUSTER" ${CLUSTER_VERSION:+--kubernetes-version "$CLUSTER_VERSION"} --wait --timeout 5m
  fi
  $OI cluster kubeconfig "$CLUSTER" -f "$BED_DIR/$CLUSTER.kubeconfig"
  cluster_line="  cluster      $CLUSTER: kubectl --kubeconfig $BED_DIR/$CLUSTER.kubeconfig get nodes"
  KC=(kubectl --kubeconfig "$BED_DIR/$CLUSTER.kubeconfig")
  if [ -n "$WORKER" ]; then
    if [ ! -d "$BED_DIR/workers/$WORKER" ]; then
      echo "==> joining worker $WORKER to $CLUSTER (oi node join)"
      OI_BIN=$BIN/oi OI_CONFIG=$COORD_DIR/data/admin.conf bash "$HERE/worker.sh" join "$WORKER" "$CLUSTER"
    fi
    for _ in $(seq 60); do "${KC[@]}" get node "$WORKER" >/dev/null 2>&1 && break; sleep 1; done
    "${KC[@]}" wait --for=condition=Ready "node/$WORKER" --timeout=120s >/dev/null ||
      die "worker $WORKER is not Ready; see $BED_DIR/workers/$WORKER/kubelet.log and network.log"
    if ! "${KC[@]}" get pod hello >/dev/null 2>&1; then
      "${KC[@]}" run hello --image=oi-test/busybox:1 --image-pull-policy=Never --restart=Never \
        --overrides="{\"spec\": {\"nodeName\": \"$WORKER\"}}" -- sh -c 'echo hello from $(hostname); sleep 3600' >/dev/null
    fi
    "${KC[@]}" wait --for=condition=Ready pod/hello --timeout=120s >/dev/null ||
      die "pod hello did not start on $WORKER: $("${KC[@]}" describe pod hello | tail -n 5)"
    cluster_line="$cluster_line
  worker       $WORKER (Ready; kubelet log $BED_DIR/workers/$WORKER/kubelet.log), pod hello runs on it:
               kubectl --kubeconfig $BED_DIR/$CLUSTER.kubeconfig logs hello"
  fi
fi

cat <<TXT

oneinfra is up:
  coordinator  udp $COORD_ADDR:$COORD_PORT, state in $COORD_DIR/data, log $COORD_DIR/log
  admin API    tcp $COORD_ADDR:$API_PORT; credentials in $COORD_DIR/data/admin.conf
  metrics      curl http://$METRICS/metrics
  images       $("$HERE/k8s-images.sh" names --repo "$IMAGE_REPO" --versions "$VERSIONS" | tr '\n' ' ')
  hypervisors  $(for hv in "${HYPERVISORS[@]}"; do read -r n r a <<<"$hv"; printf '%s (%s, %s)  ' "$n" "$r" "$a"; done)
  agent logs   $BED_DIR/agents/*/log (config and key: agents/*/etc, joined with oi hypervisor join)
  oi           export OI_CONFIG=$COORD_DIR/data/admin.conf; $BIN/oi cluster list
$cluster_line
  stop         bash tests/bed/down.sh
TXT
