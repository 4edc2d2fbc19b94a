#!/usr/bin/env bash
# Builds upstream Kubernetes, etcd and CoreDNS from Go modules (through the
# `go` command and its module proxy; no git, no registry), and caches the
# binaries by version. The versions and their pairing are in versions.tsv.
#
#   tests/bed/kubernetes.sh build [--version V] [--what LIST|all]  # prints the bin dir
#   tests/bed/kubernetes.sh etcd [--version E]                     # prints the bin dir
#   tests/bed/kubernetes.sh coredns [--version C]                  # prints the bin dir
#   tests/bed/kubernetes.sh versions                               # Kubernetes versions, newest last
#   tests/bed/kubernetes.sh pairing V                              # "ETCD COREDNS" of Kubernetes V
#   tests/bed/kubernetes.sh stats                                  # recorded cold build times
#
# V defaults to the newest Kubernetes of versions.tsv, E and C to the etcd
# and CoreDNS it pairs with. LIST is comma-separated, from kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubeadm;
# default: the three control-plane binaries. Only what is missing is built.
# Cache: $OI_K8S_CACHE (default /var/cache/oneinfra/kubernetes)/<name>/bin,
# name being V, etcd-E or coredns-C. See README.md for times and sizes.
set -euo pipefail

PROG=${0##*/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${OI_K8S_CACHE:-/var/cache/oneinfra/kubernetes}
TABLE=$HERE/versions.tsv
CONTROL_PLANE=(kube-apiserver kube-controller-manager kube-scheduler)
ALL=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubeadm)
die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }
usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; }

rows() { grep -v '^#' "$TABLE" | awk 'NF >= 3'; }
newest() { rows | tail -n 1 | cut -f1; }
row_of() { # V -> "V ETCD COREDNS ..."
	local r
	r=$(rows | awk -v v="$1" '$1 == v') || true
	[[ -n $r ]] || die "Kubernetes $1 is not in $TABLE (it has: $(rows | cut -f1 | tr '\n' ' '))"
	echo "$r"
}

need_go() {
	command -v go >/dev/null || die "the go command is not installed (Go 1.26 or later is needed)"
}

since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN {printf "%.0f", b - a}'; }
modcache_bytes() {
	local d
	d=$(go env GOMODCACHE)/cache/download
	[[ -d $d ]] && du -sb "$d" | cut -f1 || echo 0
}

# wrapper_module DIR MODULE VERSION [GOMOD]: a module that requires
# MODULE@VERSION. With GOMOD (the go.mod of k8s.io/kubernetes), it also
# copies its go and godebug directives, and replaces each staging module
# that go.mod points at ./staging/... by the published k8s.io/<name>
# v0.MINOR.PATCH: the dependency's own replace directives do not apply to
# the module that requires it, so this is how it builds from the proxy.
wrapper_module() {
	local dir=$1 module=$2 version=$3 gomod=${4:-}
	mkdir -p "$dir"
	{
		echo "module oneinfra.local/build"
		echo
		if [[ -n $gomod ]]; then
			awk '/^go [0-9]/ || /^godebug / {print}' "$gomod"
		else
			echo "go 1.24"
		fi
		echo
		echo "require $module v$version"
		if [[ -n $gomod ]]; then
			echo
			echo "replace ("
			awk -v v="v0.${version#1.}" '$2 == "=>" && $3 ~ /^\.\/staging\// {print "\t" $1 " => " $1 " " v}' "$gomod"
			echo ")"
		fi
	} >"$dir/go.mod"
	# a package that imports nothing keeps `go build` in module mode here
	printf 'package build\n' >"$dir/build.go"
}

# go_build NAME WORKDIR OUTDIR LDFLAGS PKG... (into OUTDIR, named as `go
# build` names them: by the package's last path element, major version
# suffixes left out)
go_build() {
	local name=$1 work=$2 out=$3 ldflags=$4
	shift 4
	local log=$work/build.log
	(
		cd "$work"
		export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0
		go build -trimpath -ldflags "$ldflags" -o "$out/" "$@"
	) >"$log" 2>&1 || {
		tail -n 40 "$log" >&2
		die "building $name failed; full log in $log"
	}
}

# record NAME SECONDS DOWNLOADED_BYTES WHAT
record() {
	printf '%s\t%s\t%s s\t%s MiB downloaded\t%s\n' "$(date -u +%FT%TZ)" "$1" "$2" \
		$(($3 / 1048576)) "$4" >>"$CACHE/stats.tsv"
}

lock() {
	mkdir -p "$CACHE"
	exec 8>"$CACHE/.lock-$1"
	flock 8
}

cmd_build() {
	local version="" what=""
	while (($#)); do
		case $1 in
		--version) [[ $# -ge 2 ]] || die "--version needs a value"; version=$2; shift 2 ;;
		--what) [[ $# -ge 2 ]] || die "--what needs a value"; what=$2; shift 2 ;;
		*) die "unknown argument '$1' (see --help)" ;;
		esac
	done
	[[ -n $version ]] || version=$(newest)
	row_of "$version" >/dev/null
	local want=()
	case $what in
	"") want=("${CONTROL_PLANE[@]}") ;;
	all) want=("${ALL[@]}") ;;
	*)
		IFS=, read -r -a want <<<"$what"
		local w a ok
		for w in "${want[@]}"; do
			ok=0
			for a in "${ALL[@]}"; do [[ $w == "$a" ]] && ok=1; done
			((ok)) || die "unknown binary '$w' in --what (use ${ALL[*]// /,} or all)"
		done
		;;
	esac
	local out=$CACHE/$version/bin missing=() b
	for b in "${want[@]}"; do [[ -x $out/$b ]] || missing+=("$b"); done
	if ((${#missing[@]} == 0)); then
		echo "$out"
		return 0
	fi
	need_go
	lock "$version"
	missing=()
	for b in "${want[@]}"; do [[ -x $out/$b ]] || missing+=("$b"); done
	if ((${#missing[@]})); then
		local work=$CACHE/.work/$version t0 before
		t0=$(date +%s.%N)
		before=$(modcache_bytes)
		rm -rf "$work"
		mkdir -p "$work" "$out"
		note "building Kubernetes $version: ${missing[*]} (from the k8s.io/kubernetes Go module)"
		local info gomod
		info=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$version") ||
			die "the Go module proxy does not serve k8s.io/kubernetes@v$version ($(go env GOPROXY))"
		gomod=$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$info")
		[[ -f $gomod ]] || die "no go.mod for k8s.io/kubernetes@v$version in the module cache"
		wrapper_module "$work/mod" k8s.io/kubernetes "$version" "$gomod"
		# what hack/lib/version.sh stamps: `kubectl version` and /version
		# report the release, not v0.0.0-master
		local minor=${version#1.} ldflags="-s -w" pkg key val
		minor=${minor%%.*}
		for key in gitVersion=v$version gitMajor=1 gitMinor=$minor gitTreeState=clean \
			buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ); do
			val=${key#*=} key=${key%%=*}
			for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
				ldflags+=" -X $pkg.$key=$val"
			done
		done
		local pkgs=()
		for b in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b"); done
		mkdir -p "$work/out"
		go_build "kubernetes-$version" "$work/mod" "$work/out" "$ldflags" "${pkgs[@]}"
		for b in "${missing[@]}"; do
			[[ -x $work/out/$b ]] || die "$b was not built; see $work/mod/build.log"
			local said
			if [[ $b == kubeadm ]]; then
				said=$("$work/out/$b" version -o short 2>&1 || true)
			else
				said=$("$work/out/$b" --version 2>&1 || true)
			fi
			[[ $said == *"v$version"* ]] || die "$b does not say it is v$version: ${said%%$'\n'*}"
			mv "$work/out/$b" "$out/$b"
		done
		record "kubernetes-$version" "$(since "$t0")" $(($(modcache_bytes) - before)) "${missing[*]}"
		rm -rf "$work"
		note "built Kubernetes $version (${missing[*]}) into $out in $(since "$t0") s"
	fi
	echo "$out"
}

# simple_build KIND MODULE PKG BINARY VERSION LDFLAGS: one binary from one module
simple_build() {
	local kind=$1 module=$2 pkg=$3 binary=$4 version=$5 ldflags=$6
	local out=$CACHE/$kind-$version/bin
	if [[ -x $out/$binary ]]; then
		echo "$out"
		return 0
	fi
	need_go
	lock "$kind-$version"
	if [[ ! -x $out/$binary ]]; then
		local work=$CACHE/.work/$kind-$version t0 before
		t0=$(date +%s.%N)
		before=$(modcache_bytes)
		rm -rf "$work"
		mkdir -p "$work/out" "$out"
		note "building $kind $version (from the $module Go module)"
		wrapper_module "$work/mod" "$module" "$version"
		(cd "$work/mod" && GOFLAGS=-mod=mod go mod download "$module@v$version") >/dev/null 2>&1 ||
			die "the Go module proxy does not serve $module@v$version ($(go env GOPROXY))"
		go_build "$binary" "$work/mod" "$work/out" "$ldflags" "$pkg"
		local built=("$work"/out/*)
		((${#built[@]} == 1)) && [[ -x ${built[0]} ]] || die "building $kind $version gave no single binary"
		mv "${built[0]}" "$out/$binary"
		record "$kind-$version" "$(since "$t0")" $(($(modcache_bytes) - before)) "$binary"
		rm -rf "$work"
		note "built $kind $version into $out in $(since "$t0") s"
	fi
	echo "$out"
}

pick() { # --version X or the column COL of the newest row
	local col=$1
	shift
	if (($#)); then
		[[ $1 == --version && $# -eq 2 ]] || die "use --version X"
		echo "$2"
	else
		row_of "$(newest)" | cut -f"$col"
	fi
}

cmd_etcd() {
	local v
	v=$(pick 2 "$@")
	[[ $v =~ ^3\.[0-9]+\.[0-9]+$ ]] || die "bad etcd version '$v' (use 3.X.Y)"
	# the server module's root package is etcd's main
	simple_build etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3 etcd "$v" "-s -w"
}

cmd_coredns() {
	local v
	v=$(pick 3 "$@")
	[[ $v =~ ^1\.[0-9]+\.[0-9]+$ ]] || die "bad CoreDNS version '$v' (use 1.X.Y)"
	simple_build coredns github.com/coredns/coredns github.com/coredns/coredns coredns "$v" "-s -w"
}

cmd=${1:-}
[[ $# -eq 0 ]] || shift
case $cmd in
build) [[ $(id -u) == 0 ]] || [[ -w $CACHE ]] || die "run as root (writes $CACHE)"; cmd_build "$@" ;;
etcd) cmd_etcd "$@" ;;
coredns) cmd_coredns "$@" ;;
versions) rows | cut -f1 ;;
pairing) [[ $# -eq 1 ]] || die "pairing needs a Kubernetes version"; row_of "$1" | cut -f2,3 | tr '\t' ' ' ;;
stats) [[ -f $CACHE/stats.tsv ]] && cat "$CACHE/stats.tsv" || echo "nothing built yet" ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
