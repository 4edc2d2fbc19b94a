#!/usr/bin/env bash
# Images for the test bed, built from local binaries (no registry), for
# each Kubernetes version asked. For hypervisors (--role hypervisor, the
# default): kube-apiserver, kube-controller-manager, kube-scheduler (tag vV)
# and etcd (tag E-0, the etcd that V pairs with), all from kubernetes.sh's
# Go-module builds, and haproxy (Debian's haproxy, tag major.minor). For
# workers (--role worker): the add-ons' kube-proxy (tag vV, with Debian's
# iptables-nft and conntrack) and coredns (tag vC, the CoreDNS V pairs with).
#
#   k8s-images.sh build [--repo R] [--versions LIST] [--role ROLE]   # prints the tarball paths
#   k8s-images.sh names [--repo R] [--versions LIST] [--role ROLE]   # prints the image names
#   k8s-images.sh import [--repo R] [--versions LIST] [--role ROLE] [--force] SOCKET|INSTANCE...
#
# R defaults to localhost/oneinfra; LIST is comma-separated Kubernetes
# versions, "all" (every row of versions.tsv) or "newest" (the default).
# Tarballs are cached under $OI_IMAGE_CACHE (default
# /var/cache/oneinfra/images). See README.md.
set -euo pipefail

PROG=${0##*/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${OI_IMAGE_CACHE:-/var/cache/oneinfra/images}
BED_DIR=${OI_BED_DIR:-/tmp/oi-bed}
BUSYBOX=${OI_BED_BUSYBOX:-/bin/busybox}
REPO=localhost/oneinfra
# bump when a recipe below changes in a way the input key does not show
RECIPE_VERSION=2
KUBE=(kube-apiserver kube-controller-manager kube-scheduler)
VERSIONS=newest
ROLE=hypervisor
# iptables' extensions, which xtables-nft-multi dlopens (ldd does not list them)
XTABLES=/usr/lib/$(uname -m)-linux-gnu/xtables
IPTABLES_NAMES=(iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore)

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

usage() {
	sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }
pkg_version() { dpkg-query -W -f='${Version}' "$1"; }

# haproxy: installed when absent; apt-get update only when the install
# fails without it
ensure_packages() {
	local missing=() p
	for p in haproxy iptables conntrack; do installed "$p" || missing+=("$p"); done
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
	# only the binary is wanted: where systemd runs, Debian starts
	# haproxy.service on install; stop and disable it
	if [[ -d /run/systemd/system ]]; then
		systemctl disable --now haproxy.service >/dev/null 2>&1 || true
	fi
}

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; }

# the Kubernetes versions LIST names, newest last
versions_of() {
	local all
	all=$("$HERE/kubernetes.sh" versions) || die "tests/bed/kubernetes.sh versions failed"
	case $1 in
	all) echo "$all" ;;
	newest) tail -n 1 <<<"$all" ;;
	*)
		local v
		for v in ${1//,/ }; do
			grep -qx -- "$v" <<<"$all" || die "Kubernetes $v is not in tests/bed/versions.tsv (it has: $(tr '\n' ' ' <<<"$all"))"
			echo "$v"
		done
		;;
	esac
}

# the images of the versions asked, one "NAME TAG" per line, each once:
# the kube-* of each version, the etcd each pairs with, haproxy
entries() {
	local v etcd coredns vs name
	vs=$(versions_of "$VERSIONS") || exit 1
	if [[ $ROLE == worker ]]; then
		for v in $vs; do echo "kube-proxy v$v"; done
		for v in $vs; do
			read -r _ coredns < <("$HERE/kubernetes.sh" pairing "$v")
			echo "coredns v$coredns"
		done | sort -u
		return
	fi
	for v in $vs; do
		for name in "${KUBE[@]}"; do echo "$name v$v"; done
	done
	for v in $vs; do
		read -r etcd _ < <("$HERE/kubernetes.sh" pairing "$v")
		echo "etcd $etcd-0"
	done | sort -u
	echo "haproxy $(haproxy_tag)"
}

# major.minor, like the upstream image's moving tag (2.6)
haproxy_tag() {
	local v
	v=$(/usr/sbin/haproxy -v 2>&1 | awk '/^HAProxy version/ {split($3, a, "."); print a[1] "." a[2]; exit}')
	[[ $v =~ ^[0-9]+\.[0-9]+$ ]] || die "haproxy -v gave '$v', not X.Y"
	echo "$v"
}

# recipe NAME TAG -> builds the binaries it needs (cached by kubernetes.sh)
# and sets R_SRC (input files, first is the main binary), R_ARGS (image.sh
# build options); checks the binary says the version of the tag
recipe() {
	local name=$1 tag=$2 dir got
	R_SRC=() R_ARGS=()
	case $name in
	kube-apiserver | kube-controller-manager | kube-scheduler)
		dir=$("$HERE/kubernetes.sh" build --version "${tag#v}") || die "tests/bed/kubernetes.sh build --version ${tag#v} failed"
		R_SRC=("$dir/$name")
		R_ARGS=(--add "$dir/$name:/usr/local/bin/$name")
		got=$("$dir/$name" --version 2>&1 | awk '{print $2}')
		[[ $got == "$tag" ]] || die "$dir/$name --version says '$got', not $tag"
		;;
	etcd)
		dir=$("$HERE/kubernetes.sh" etcd --version "${tag%-0}") || die "tests/bed/kubernetes.sh etcd --version ${tag%-0} failed"
		R_SRC=("$dir/etcd")
		R_ARGS=(--add "$dir/etcd:/usr/local/bin/etcd")
		got=$("$dir/etcd" --version 2>&1 | awk '/^etcd Version:/ {print $3}')
		[[ $got == "${tag%-0}" ]] || die "$dir/etcd --version says '$got', not ${tag%-0}"
		;;
	kube-proxy)
		dir=$("$HERE/kubernetes.sh" build --version "${tag#v}" --what kube-proxy) || die "tests/bed/kubernetes.sh build --version ${tag#v} --what kube-proxy failed"
		[[ -d $XTABLES ]] || die "no iptables extensions in $XTABLES (package libxtables12)"
		R_SRC=("$dir/kube-proxy" /usr/sbin/xtables-nft-multi /usr/sbin/conntrack)
		R_ARGS=(--add "$dir/kube-proxy:/usr/local/bin/kube-proxy" --add "$XTABLES" --add /usr/sbin/conntrack)
		local n
		for n in "${IPTABLES_NAMES[@]}"; do R_ARGS+=(--add "/usr/sbin/xtables-nft-multi:/usr/sbin/$n"); done
		R_ARGS+=(--with-libs)
		got=$("$dir/kube-proxy" --version 2>&1 | awk '{print $2}')
		[[ $got == "$tag" ]] || die "$dir/kube-proxy --version says '$got', not $tag"
		;;
	coredns)
		dir=$("$HERE/kubernetes.sh" coredns --version "${tag#v}") || die "tests/bed/kubernetes.sh coredns --version ${tag#v} failed"
		R_SRC=("$dir/coredns")
		# where the upstream image has it (its entrypoint)
		R_ARGS=(--add "$dir/coredns:/coredns")
		got=$("$dir/coredns" -version 2>&1 | awk -F- '/^CoreDNS-/ {print $2; exit}')
		[[ v$got == "$tag" ]] || die "$dir/coredns -version says '$got', not ${tag#v}"
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

# cache key of an image (after recipe): the recipe, image.sh, and
# path/size/mtime of every input file (binaries, busybox, the libraries ldd
# lists) plus the Debian package version -- cheap, changes on any rebuild
input_key() {
	local name=$1 tag=$2 f
	echo "recipe $RECIPE_VERSION $REPO/$name:$tag ${R_ARGS[*]}"
	echo "image.sh $(sha256sum "$HERE/image.sh" | cut -d' ' -f1)"
	[[ $name != haproxy ]] || echo "haproxy $(pkg_version haproxy)"
	[[ $name != kube-proxy ]] || echo "iptables $(pkg_version iptables) conntrack $(pkg_version conntrack) $(find "$XTABLES" -type f -printf '%f %s %T@\n' | LC_ALL=C sort | sha256sum | cut -d' ' -f1)"
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
		--versions) [[ $# -ge 2 ]] || die "--versions needs a value (1.37.2,1.36.3, all or newest)"; VERSIONS=$2; shift 2 ;;
		--role) [[ $# -ge 2 && ($2 == hypervisor || $2 == worker) ]] || die "--role needs hypervisor or worker"; ROLE=$2; shift 2 ;;
		*) ARGS+=("$1"); shift ;;
		esac
	done
	[[ $REPO =~ ^[a-z0-9][a-z0-9._/-]*[a-z0-9]$ && $REPO == */* ]] ||
		die "bad --repo '$REPO': use something like localhost/oneinfra (a registry host, then a path)"
}

dir_of() { echo "$CACHE/$REPO"; }

# build (or find in the cache) every image; prints the tarball paths
cmd_build() {
	[[ $# -eq 0 ]] || die "build takes only --repo, --versions and --role"
	[[ $(id -u) == 0 ]] || die "run as root (installs packages, writes $CACHE)"
	ensure_packages
	local dir name tag key out t0 list
	dir=$(dir_of)
	mkdir -p "$dir"
	list=$(entries)
	exec 9>"$CACHE/.lock"
	flock 9
	while read -r name tag <&3; do
		recipe "$name" "$tag"
		key=$(input_key "$name" "$tag")
		out=$dir/$name-$tag.tar
		if [[ -f $out && -f $dir/$name-$tag.digest ]] &&
			[[ $key == "$(cat "$dir/$name-$tag.key" 2>/dev/null)" ]]; then
			echo "$out"
			continue
		fi
		t0=$(date +%s.%N)
		rm -f "$dir/$name-$tag".{key,digest}
		local digest log=$dir/.$name-$tag.log
		digest=$("$HERE/image.sh" build "$REPO/$name:$tag" "$out" "${R_ARGS[@]}" 2>"$log") || {
			cat "$log" >&2
			die "image.sh build of $REPO/$name:$tag failed (see above)"
		}
		rm -f "$log"
		echo "$digest" >"$dir/$name-$tag.digest"
		# the key last: it marks the entry complete
		printf '%s\n' "$key" >"$dir/$name-$tag.key"
		note "$(printf 'built %s:%s in %.1fs (%d MiB)' "$REPO/$name" "$tag" \
			"$(since "$t0")" $(($(stat -c %s "$out") / 1048576)))"
		echo "$out"
	done 3<<<"$list"
}

# image names of the versions asked
cmd_names() {
	[[ $# -eq 0 ]] || die "names takes only --repo, --versions and --role"
	local name tag list
	list=$(entries)
	while read -r name tag; do echo "$REPO/$name:$tag"; done <<<"$list"
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
	local dir list name tag
	dir=$(dir_of)
	list=$(entries)
	while read -r name tag <&3; do
		[[ -f $dir/$name-$tag.key ]] || die "no $REPO/$name:$tag image in $dir; run '$PROG build --repo $REPO --versions $VERSIONS --role $ROLE' first"
	done 3<<<"$list"
	local target sock ref digest have t0
	for target in "${targets[@]}"; do
		if [[ $target == */* ]]; then sock=$target; else sock=$BED_DIR/$target/containerd.sock; fi
		[[ -S $sock ]] || die "no containerd socket at $sock"
		while read -r name tag <&3; do
			ref=$REPO/$name:$tag
			digest=$(cat "$dir/$name-$tag.digest")
			if ((!force)); then
				have=$(ctr --address "$sock" -n k8s.io images ls "name==$ref" 2>/dev/null | awk 'NR > 1 {print $3}')
				[[ $have != "$digest" ]] || continue
			fi
			t0=$(date +%s.%N)
			local out
			out=$("$HERE/image.sh" import "$dir/$name-$tag.tar" "$target" 2>&1) || {
				printf '%s\n' "$out" >&2
				die "import of $ref into $target failed (see above)"
			}
			note "$(printf 'imported %s into %s in %.1fs' "$ref" "$target" "$(since "$t0")")"
		done 3<<<"$list"
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
