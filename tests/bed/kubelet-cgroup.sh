#!/usr/bin/env bash
# What a kubelet of each version needs to run on this host's cgroups
# (cgroup v1, hybrid): runs it standalone (no API server) against a bed
# containerd instance, once with its default configuration and once with
# `failCgroupV1: false`, and runs a static busybox pod in the second case.
#
#   tests/bed/kubelet-cgroup.sh [--versions LIST|all]   # default: all
#
# Prints one line per version and run: started or refused, and why. Leaves
# the host as it found it: the kubelet's sysctls are restored, its kubepods
# cgroups removed, its pod logs kept under the instance's directory
# (podLogsDir), and /var/log/containers removed if the kubelet created it.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VERSIONS=all
while [ $# -gt 0 ]; do
  case $1 in
  --versions) VERSIONS=$2; shift 2 ;;
  *) echo "usage: $0 [--versions LIST|all]" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "kubelet-cgroup: needs root (containerd, cgroups)" >&2; exit 1; }
[ "$VERSIONS" = all ] && VERSIONS=$("$HERE/kubernetes.sh" versions | paste -sd,)

# its own bed dir, whatever OI_BED_DIR says: it removes the whole directory
export OI_BED_DIR=${OI_KUBELET_BED_DIR:-/tmp/oi-bed-kubelet}
DIR=$OI_BED_DIR/kubelet
SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops)
declare -A SAVED
for s in "${SYSCTLS[@]}"; do SAVED[$s]=$(sysctl -n "$s"); done
had_containers_log=0
[ -e /var/log/containers ] && had_containers_log=1
KUBELET_PID=
cleanup() {
  [ -n "$KUBELET_PID" ] && kill "$KUBELET_PID" 2>/dev/null && wait "$KUBELET_PID" 2>/dev/null
  "$HERE/containerd.sh" teardown >/dev/null 2>&1 || true
  for s in "${SYSCTLS[@]}"; do sysctl -qw "$s=${SAVED[$s]}"; done
  # kubepods cgroups, deepest first (rmdir only removes empty ones)
  find /sys/fs/cgroup/*/kubepods* /sys/fs/cgroup/kubepods* -depth -type d -exec rmdir {} + 2>/dev/null || true
  [ "$had_containers_log" = 1 ] || rm -rf /var/log/containers
  umount -R "$DIR" 2>/dev/null || true
  rm -rf "$OI_BED_DIR"
}
trap cleanup EXIT
cleanup
KUBELET_PID=

SOCK=$("$HERE/containerd.sh" start kc1)
"$HERE/image.sh" build oi-test/busybox:1 "$OI_BED_DIR/busybox.tar" --cmd sh >/dev/null
"$HERE/image.sh" import "$OI_BED_DIR/busybox.tar" "$SOCK" >/dev/null

# config FAIL_CGROUP_V1 (empty: the kubelet's default)
config() {
  cat <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: 10350
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10348
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
cgroupDriver: cgroupfs
failSwapOn: false
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$SOCK
staticPodPath: $DIR/manifests
podLogsDir: $DIR/pod-logs
YAML
  [ -z "$1" ] || echo "failCgroupV1: $1"
}

# run VERSION FAIL_CGROUP_V1: one line, and 0 if the kubelet ran the pod
run() {
  local v=$1 fail=$2 bin log i
  bin=$("$HERE/kubernetes.sh" build --version "$v" --what kubelet)/kubelet
  mkdir -p "$DIR/manifests" "$DIR/pod-logs" "$DIR/root"
  log=$OI_BED_DIR/kubelet-$v-${fail:-default}.log
  config "$fail" >"$DIR/config.yaml"
  cat >"$DIR/manifests/hello.yaml" <<YAML
apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default}
spec:
  hostNetwork: true   # no CNI on this instance: the question is cgroups
  containers:
  - name: hello
    image: docker.io/oi-test/busybox:1
    command: [sh, -c, "echo hello from a static pod; sleep 3600"]
YAML
  "$bin" --config "$DIR/config.yaml" --root-dir "$DIR/root" --hostname-override kc1 >"$log" 2>&1 &
  KUBELET_PID=$!
  local state=refused why= t0
  t0=$(date +%s%N)
  for i in $(seq 1 120); do
    if ! kill -0 "$KUBELET_PID" 2>/dev/null; then break; fi
    if "$HERE/containerd.sh" ctr kc1 tasks ls 2>/dev/null | awk 'NR > 1 && $3 == "RUNNING"' | grep -q .; then
      if grep -rqs "hello from a static pod" "$DIR/pod-logs"; then state=ran; break; fi
    fi
    sleep 0.5
  done
  if [ "$state" = ran ]; then
    why="static pod running $(( ($(date +%s%N) - t0) / 1000000 )) ms after start, its log under podLogsDir; RSS $(awk '/^VmRSS/ {printf "%d MiB", $2 / 1024}' "/proc/$KUBELET_PID/status")"
    [ -e /var/log/containers ] && [ "$had_containers_log" = 0 ] && why="$why; created /var/log/containers"
    local s changed=
    for s in "${SYSCTLS[@]}"; do
      [ "$(sysctl -n "$s")" = "${SAVED[$s]}" ] || changed="$changed $s=${SAVED[$s]}->$(sysctl -n "$s")"
    done
    [ -z "$changed" ] || why="$why; set$changed"
    compgen -G "/sys/fs/cgroup/*/kubepods*" >/dev/null && why="$why; kubepods cgroups"
  elif kill -0 "$KUBELET_PID" 2>/dev/null; then
    state=stuck why="no running pod after 60 s; see $log"
  else
    why=$(grep -m1 "not run on a host using cgroup v1\|failed to run kubelet\|command failed" "$log" | sed 's/^.*\] //; s/, path: .*//' | cut -c1-240)
  fi
  kill "$KUBELET_PID" 2>/dev/null || true
  wait "$KUBELET_PID" 2>/dev/null || true
  KUBELET_PID=
  # remove the pod's containers before the next run
  "$HERE/containerd.sh" ctr kc1 tasks ls -q 2>/dev/null | while read -r t; do
    "$HERE/containerd.sh" ctr kc1 tasks kill -s KILL "$t" >/dev/null 2>&1 || true
  done
  sleep 1
  "$HERE/containerd.sh" ctr kc1 containers ls -q 2>/dev/null | while read -r c; do
    "$HERE/containerd.sh" ctr kc1 tasks rm -f "$c" >/dev/null 2>&1 || true
    "$HERE/containerd.sh" ctr kc1 containers rm "$c" >/dev/null 2>&1 || true
  done
  umount -R "$DIR/root" 2>/dev/null || true
  rm -rf "$DIR"
  printf '%-8s failCgroupV1=%-8s %-8s %s\n' "$v" "${fail:-default}" "$state" "$why"
  [ "$state" = ran ]
}

echo "host cgroups: $(stat -fc %T /sys/fs/cgroup) at /sys/fs/cgroup ($(test -d /sys/fs/cgroup/unified && echo 'hybrid: v1 controllers, v2 unified' || echo 'no unified hierarchy'))"
rc=0
for v in ${VERSIONS//,/ }; do
  run "$v" "" || true
  run "$v" false || rc=1
done
exit $rc
