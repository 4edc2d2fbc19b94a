#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries from Debian's source package
# with Debian's Go, and caches them by source version.
#
#   tests/bed/kubernetes.sh build     # prints the directory holding the binaries
#   tests/bed/kubernetes.sh version   # prints the cached version, or fails
#
# Cache: $OI_K8S_CACHE (default /var/cache/oneinfra/kubernetes)/<version>/bin.
# A cold build takes about 8 minutes on 2 cores; a warm call returns at once.
set -euo pipefail

PROG=${0##*/}
CACHE=${OI_K8S_CACHE:-/var/cache/oneinfra/kubernetes}
WHAT=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'; }

ensure_sources() {
	local src=/etc/apt/sources.list.d/oneinfra-bookworm-src.sources
	if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
		note "adding a deb-src entry for bookworm ($src)"
		cat >"$src" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
		apt-get update -qq >/dev/null
	fi
	local missing=()
	for p in golang-1.19-go dpkg-dev make rsync; do installed "$p" || missing+=("$p"); done
	if ((${#missing[@]})); then
		note "installing ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
}

source_version() {
	apt-cache showsrc kubernetes 2>/dev/null | awk '/^Version:/ {print $2; exit}'
}

cmd_version() {
	local d
	for d in "$CACHE"/*/bin; do
		[[ -x $d/kube-apiserver ]] && { basename "$(dirname "$d")"; return 0; }
	done
	return 1
}

cmd_build() {
	[[ $(id -u) == 0 ]] || die "run as root (installs packages, writes $CACHE)"
	ensure_sources
	local version
	version=$(source_version)
	[[ -n $version ]] || die "apt has no source package 'kubernetes'; check the deb-src entry and run apt-get update"
	local out=$CACHE/$version
	local ok=1 b
	for b in "${WHAT[@]}"; do [[ -x $out/bin/$b ]] || ok=0; done
	if ((ok)); then
		echo "$out/bin"
		return 0
	fi
	local work=$CACHE/.build-$version
	rm -rf "$work"
	mkdir -p "$work"
	note "fetching the source of kubernetes $version"
	(cd "$work" && apt-get source -qq kubernetes >/dev/null 2>&1) || die "apt-get source kubernetes failed"
	local srcdir
	srcdir=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'kubernetes-*' | head -n 1)
	[[ -n $srcdir ]] || die "no source tree after apt-get source"
	note "building ${WHAT[*]} with Go 1.19 (about 8 minutes on 2 cores)"
	local targets=()
	for b in "${WHAT[@]}"; do targets+=("cmd/$b"); done
	(
		cd "$srcdir"
		export PATH=/usr/lib/go-1.19/bin:$PATH GOFLAGS=-mod=vendor GOCACHE=$CACHE/.gocache
		CGO_ENABLED=0 make WHAT="${targets[*]}" >"$work/build.log" 2>&1
	) || { tail -n 30 "$work/build.log" >&2; die "build failed; full log in $work/build.log"; }
	mkdir -p "$out/bin.tmp"
	for b in "${WHAT[@]}"; do
		local f
		f=$(find "$srcdir/_output" -type f -name "$b" -perm -u+x | head -n 1)
		[[ -n $f ]] || die "$b was not built; see $work/build.log"
		cp "$f" "$out/bin.tmp/$b"
	done
	rm -rf "$out/bin"
	mv "$out/bin.tmp" "$out/bin"
	rm -rf "$work"
	note "built kubernetes $version into $out/bin"
	echo "$out/bin"
}

case ${1:-} in
build) cmd_build ;;
version) cmd_version ;;
*) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac
