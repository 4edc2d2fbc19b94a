#!/usr/bin/env bash
# Install the Debian packages the test bed needs, when absent. Idempotent,
# quiet on success, and does not touch apt when everything is present.
#
#   tests/bed/install-deps.sh [--dev]
#
#   --dev   also install shellcheck (to lint these scripts)
#
# cri-tools (crictl) is added when apt has to run anyway and the configured
# Debian release has it; bookworm does not, and then it is skipped silently.
set -euo pipefail

PROG=${0##*/}
die() { echo "$PROG: error: $*" >&2; exit 1; }

# containerd: the runtime (ships ctr and containerd-shim-runc-v2)
# runc: OCI runtime used by the shim
# busybox-static: the one-file base of the bed's images (sandbox/pause too)
# iproute2: ip netns / veth / bridge; util-linux: nsenter, setsid, mount
# jq: JSON for image.sh; tar (GNU, --sort=name) and coreutils: image layers
# etcd-client (etcdctl, for tests reading etcd membership), haproxy: the
# ingress image; etcd and Kubernetes themselves come from Go modules
# (kubernetes.sh)
# curl: health checks of the bring-up
# containernetworking-plugins (bridge, host-local, portmap, loopback in
# /usr/lib/cni), iptables (the bridge plugin's masquerade; kube-proxy's
# image carries its own) and conntrack: the workers' pod network
pkgs=(containerd runc busybox-static iproute2 util-linux jq tar coreutils etcd-client haproxy curl
	containernetworking-plugins iptables conntrack)
for a in "$@"; do
	case $a in
	--dev) pkgs+=(shellcheck) ;;
	-h | --help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option '$a' (try --help)" ;;
	esac
done

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done
if [[ ${#missing[@]} -eq 0 ]]; then
	[[ -z ${OI_BED_VERBOSE:-} ]] || echo "$PROG: all present (crictl: $(command -v crictl || echo 'absent, optional'))"
	exit 0
fi

[[ $(id -u) == 0 ]] || die "need root to install: ${missing[*]} (rerun with sudo)"
command -v apt-get >/dev/null || die "apt-get not found; install by hand: ${missing[*]}"
log=$(mktemp "${TMPDIR:-/tmp}/oi-bed-apt.XXXXXX")
trap 'rm -f "$log"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >"$log" 2>&1; then
	cat "$log" >&2
	die "apt-get update failed (see above)"
fi
# optional, looked for only when apt runs anyway (apt-cache costs ~0.5 s)
if ! installed cri-tools && apt-cache show cri-tools >/dev/null 2>&1; then
	missing+=(cri-tools)
fi
if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
	cat "$log" >&2
	die "apt-get install ${missing[*]} failed (see above)"
fi
for p in "${missing[@]}"; do
	installed "$p" || die "package $p is still not installed after apt-get install"
done
