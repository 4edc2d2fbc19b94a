#!/usr/bin/env bash
# Control-plane images for the test bed, built from local binaries (no
# registry): kube-apiserver, kube-controller-manager, kube-scheduler (from
# kubernetes.sh), etcd (Debian's etcd-server, plus etcdctl from etcd-client)
# and haproxy (Debian's haproxy).
#
#   k8s-images.sh build [--repo R]                  # prints the tarball paths
#   k8s-images.sh names [--repo R]                  # prints the image names
#   k8s-images.sh import [--repo R] [--force] SOCKET|INSTANCE...
#
# R defaults to localhost/oneinfra. Tarballs are cached under
# $OI_IMAGE_CACHE (default /var/cache/oneinfra/images). See README.md.
set -euo pipefail

PROG=${0##*/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${OI_IMAGE_CACHE:-/var/cache/oneinfra/images}
BED_DIR=${OI_BED_DIR:-/tmp/oi-bed}
BUSYBOX=${OI_BED_BUSYBOX:-/bin/busybox}
REPO=localhost/oneinfra
# bump when a recipe below changes in a way the input key does not show
RECIPE_VERSION=1
IMAGES=(kube-apiserver kube-controller-manager kube-scheduler etcd haproxy)

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

usage() {
	sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
pkg_version() { dpkg-query -W -f='${Version}' "$1"; }

# etcd-server (/usr/bin/etcd), etcd-client (/usr/bin/etcdctl), haproxy:
# installed when absent; apt-get update only when the install fails without it
ensure_packages() {
	local missing=() p
	for p in etcd-server etcd-client haproxy; do installed "$p" || missing+=("$p"); done
	((${#missing[@]})) || return 0
	[[ $(id -u) == 0 ]] || die "need root to install ${missing[*]}"
	note "installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	local log
	log=$(mktemp "${TMPDIR:-/tmp}/oi-k8s-images-apt.XXXXXX")
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
		apt-get update -qq >>"$log" 2>&1 || true
		apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$log" 2>&1 ||
			{ cat "$log" >&2; rm -f "$log"; die "apt-get install ${missing[*]} failed (see above)"; }
	fi
	rm -f "$log"
	for p in "${missing[@]}"; do installed "$p" || die "package $p is still not installed"; done
	# only the binaries are wanted: where systemd runs, Debian starts
	# etcd.service (127.0.0.1:2379, the port a host-network etcd needs) and
	# haproxy.service on install; stop and disable what was just installed
	if [[ -d /run/systemd/system ]]; then
		for p in "${missing[@]}"; do
			case $p in
			etcd-server) systemctl disable --now etcd.service >/dev/null 2>&1 || true ;;
			haproxy) systemctl disable --now haproxy.service >/dev/null 2>&1 || true ;;
			esac
		done
	fi
}

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

# the directory with the kubernetes binaries (kubernetes.sh caches them)
k8s_bin() {
	local d
	d=$("$HERE/kubernetes.sh" build) || die "tests/bed/kubernetes.sh build failed"
	[[ -x $d/kube-apiserver ]] || die "kubernetes.sh build printed '$d', which has no kube-apiserver"
	echo "$d"
}

# recipe NAME -> sets R_SRC (input files, first is the main binary),
# R_ARGS (image.sh build options), R_VERSION_CMD (how to ask the tag)
recipe() {
	local name=$1
	R_SRC=() R_ARGS=()
	case $name in
	kube-apiserver | kube-controller-manager | kube-scheduler)
		R_SRC=("$K8S_BIN/$name")
		R_ARGS=(--add "$K8S_BIN/$name:/usr/local/bin/$name")
		;;
	etcd)
		R_SRC=(/usr/bin/etcd /usr/bin/etcdctl)
		R_ARGS=(--add /usr/bin/etcd:/usr/local/bin/etcd --add /usr/bin/etcdctl:/usr/local/bin/etcdctl --with-libs)
		;;
	haproxy)
		# libgcc_s.so.1 (which glibc dlopens for pthread_cancel/pthread_exit
		# unwinding) comes in with libstdc++ through --with-libs; glibc 2.36
		# has the files/dns NSS modules built in, so nothing else is dlopened
		R_SRC=(/usr/sbin/haproxy)
		R_ARGS=(--add /usr/sbin/haproxy:/usr/local/sbin/haproxy --with-libs)
		;;
	*) die "unknown image '$name'" ;;
	esac
}

# the tag of image NAME, asked from its binary
tag_of() {
	local name=$1 v
	case $name in
	kube-*)
		v=$("$K8S_BIN/$name" --version 2>&1 | awk '{print $2}')
		[[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "$name --version gave '$v', not vX.Y.Z"
		;;
	etcd)
		v=v$(/usr/bin/etcd --version 2>&1 | awk '/^etcd Version:/ {print $3}')
		[[ $v =~ ^v[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "etcd --version gave '$v', not X.Y.Z"
		;;
	haproxy)
		# major.minor, like the upstream image's moving tag (2.6)
		v=$(/usr/sbin/haproxy -v 2>&1 | awk '/^HAProxy version/ {split($3, a, "."); print a[1] "." a[2]; exit}')
		[[ $v =~ ^[0-9]+\.[0-9]+$ ]] || die "haproxy -v gave '$v', not X.Y"
		;;
	esac
	echo "$v"
}

# cache key of image NAME: the recipe, image.sh, and path/size/mtime of
# every input file (binaries, busybox, the libraries ldd lists) plus the
# Debian package versions -- cheap to compute, changes on any upgrade
input_key() {
	local name=$1 f
	recipe "$name"
	echo "recipe $RECIPE_VERSION $REPO/$name ${R_ARGS[*]}"
	echo "image.sh $(sha256sum "$HERE/image.sh" | cut -d' ' -f1)"
	case $name in
	kube-*) echo "kubernetes $(basename "$(dirname "$K8S_BIN")")" ;;
	etcd) echo "etcd-server $(pkg_version etcd-server) etcd-client $(pkg_version etcd-client)" ;;
	haproxy) echo "haproxy $(pkg_version haproxy)" ;;
	esac
	{
		printf '%s\n' "$BUSYBOX" "${R_SRC[@]}"
		if [[ ${R_ARGS[*]} == *--with-libs* ]]; then
			for f in "${R_SRC[@]}"; do
				LC_ALL=C ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// {print $3; next} $1 ~ /^\// {print $1}'
			done
		fi
	} | LC_ALL=C sort -u | while read -r f; do
		stat -L -c 'file %n %s %Y' "$f"
	done
}

parse_repo() { # sets REPO and ARGS (the rest)
	ARGS=()
	while [[ $# -gt 0 ]]; do
		case $1 in
		--repo) [[ $# -ge 2 ]] || die "--repo needs a value"; REPO=${2%/}; shift 2 ;;
		*) ARGS+=("$1"); shift ;;
		esac
	done
	[[ $REPO =~ ^[a-z0-9][a-z0-9._/-]*[a-z0-9]$ && $REPO == */* ]] ||
		die "bad --repo '$REPO': use something like localhost/oneinfra (a registry host, then a path)"
}

dir_of() { echo "$CACHE/$REPO"; }

# build (or find in the cache) every image; prints the tarball paths
cmd_build() {
	[[ $# -eq 0 ]] || die "build takes only --repo"
	[[ $(id -u) == 0 ]] || die "run as root (installs packages, writes $CACHE)"
	ensure_packages
	K8S_BIN=$(k8s_bin)
	local dir name key tag out t0
	dir=$(dir_of)
	mkdir -p "$dir"
	exec 9>"$CACHE/.lock"
	flock 9
	for name in "${IMAGES[@]}"; do
		key=$(input_key "$name")
		out=$dir/$name.tar
		if [[ -f $out && -f $dir/$name.ref && -f $dir/$name.digest ]] &&
			[[ $key == "$(cat "$dir/$name.key" 2>/dev/null)" ]]; then
			echo "$out"
			continue
		fi
		recipe "$name"
		tag=$(tag_of "$name")
		t0=$(date +%s.%N)
		rm -f "$dir/$name".{key,ref,digest}
		local digest log=$dir/.$name.log
		digest=$("$HERE/image.sh" build "$REPO/$name:$tag" "$out" "${R_ARGS[@]}" 2>"$log") || {
			cat "$log" >&2
			die "image.sh build of $REPO/$name:$tag failed (see above)"
		}
		rm -f "$log"
		echo "$REPO/$name:$tag" >"$dir/$name.ref"
		echo "$digest" >"$dir/$name.digest"
		# the key last: it marks the entry complete
		printf '%s\n' "$key" >"$dir/$name.key"
		note "$(printf 'built %s:%s in %.1fs (%d MiB)' "$REPO/$name" "$tag" \
			"$(since "$t0")" $(($(stat -c %s "$out") / 1048576)))"
		echo "$out"
	done
}

# image names from the cache (after build)
cmd_names() {
	[[ $# -eq 0 ]] || die "names takes only --repo"
	local dir name
	dir=$(dir_of)
	for name in "${IMAGES[@]}"; do
		[[ -f $dir/$name.ref ]] || die "no $name image in $dir; run '$PROG build --repo $REPO' first"
		cat "$dir/$name.ref"
	done
}

# import every image into each target, skipping the images a target
# already holds under the same name and manifest digest
cmd_import() {
	local force=0 targets=() a
	for a in "$@"; do
		case $a in
		--force) force=1 ;;
		-*) die "unknown option '$a'" ;;
		*) targets+=("$a") ;;
		esac
	done
	((${#targets[@]})) || die "import needs at least one SOCKET or INSTANCE"
	local dir
	dir=$(dir_of)
	local name
	for name in "${IMAGES[@]}"; do
		[[ -f $dir/$name.key ]] || die "no $name image in $dir; run '$PROG build --repo $REPO' first"
	done
	local target sock ref digest have t0
	for target in "${targets[@]}"; do
		if [[ $target == */* ]]; then sock=$target; else sock=$BED_DIR/$target/containerd.sock; fi
		[[ -S $sock ]] || die "no containerd socket at $sock"
		for name in "${IMAGES[@]}"; do
			ref=$(cat "$dir/$name.ref")
			digest=$(cat "$dir/$name.digest")
			if ((!force)); then
				have=$(ctr --address "$sock" -n k8s.io images ls "name==$ref" 2>/dev/null | awk 'NR > 1 {print $3}')
				[[ $have != "$digest" ]] || continue
			fi
			t0=$(date +%s.%N)
			local out
			out=$("$HERE/image.sh" import "$dir/$name.tar" "$target" 2>&1) || {
				printf '%s\n' "$out" >&2
				die "import of $ref into $target failed (see above)"
			}
			note "$(printf 'imported %s into %s in %.1fs' "$ref" "$target" "$(since "$t0")")"
		done
	done
}

cmd=${1:-}
[[ $# -eq 0 ]] || shift
case $cmd in
build) parse_repo "$@"; cmd_build ${ARGS[@]+"${ARGS[@]}"} ;;
names) parse_repo "$@"; cmd_names ${ARGS[@]+"${ARGS[@]}"} ;;
import) parse_repo "$@"; cmd_import ${ARGS[@]+"${ARGS[@]}"} ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
