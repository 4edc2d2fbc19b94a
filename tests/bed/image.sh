#!/usr/bin/env bash
# Build small OCI images from local files (no docker/buildah needed) and
# import them into a containerd instance of the test bed.
#
#   image.sh build NAME[:TAG] OUT.tar [options] [-- FILE...]
#   image.sh import OUT.tar SOCKET|INSTANCE [--snapshotter S]
#   image.sh pause OUT.tar            # the bed's sandbox ("pause") image
#
# See tests/bed/README.md for details.
set -euo pipefail

PROG=${0##*/}
BUSYBOX=${OI_BED_BUSYBOX:-/bin/busybox}
BED_DIR=${OI_BED_DIR:-/tmp/oi-bed}
PAUSE_IMAGE=${OI_BED_PAUSE_IMAGE:-localhost/oi-bed/pause:1}

die() { echo "$PROG: error: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

usage() {
	cat <<EOF
usage:
  $PROG build NAME[:TAG] OUT.tar [options] [-- FILE...]
      Build a single-layer OCI image archive (OCI image layout in a tar)
      that 'ctr images import' understands. The root filesystem holds
      busybox-static as /bin/busybox plus one symlink per applet
      (/bin/sh, /bin/sleep, ...), /etc/passwd, /etc/group, /tmp, and the
      files you add. Same inputs give the same digest.
    options:
      --add SRC[:DST]       copy file or directory SRC to DST inside the image
                            (DST defaults to SRC; DST must be absolute)
      -- FILE...            same as --add FILE for every FILE
      --with-libs           also copy the shared libraries (and the dynamic
                            loader) that 'ldd' lists for every added file, at
                            the same paths as on this host
      --entrypoint 'A B C'  entrypoint, split on blanks
      --entrypoint-json J   entrypoint as a JSON array, e.g. '["/bin/sh","-c","x y"]'
      --cmd 'A B C'         cmd, split on blanks
      --cmd-json J          cmd as a JSON array
      --env K=V             environment variable (repeatable; PATH has a default)
      --workdir DIR         working directory (default /)
      --user U              user (default: none, i.e. root)
      --no-busybox          do not put busybox into the image
    NAME without a registry is normalised the way Docker and the CRI plugin
    do it (etcd:3.5 -> docker.io/library/etcd:3.5) so that CRI requests for
    the short name find the imported image. TAG defaults to latest.
    Prints the manifest digest on stdout.

  $PROG import OUT.tar SOCKET|INSTANCE [--snapshotter S]
      Import into namespace k8s.io of the containerd at SOCKET, or of the
      bed instance INSTANCE (\$OI_BED_DIR/INSTANCE/containerd.sock), and
      unpack it for that instance's snapshotter.

  $PROG pause OUT.tar
      Build the bed's sandbox image ($PAUSE_IMAGE): busybox whose
      entrypoint sleeps forever.
EOF
}

need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "'$c' not found; run tests/bed/install-deps.sh"
	done
}

# Docker-style reference normalisation: etcd -> docker.io/library/etcd:latest
normalize_ref() {
	local ref=$1 name tag first
	[[ $ref =~ ^[a-z0-9]([a-z0-9._/:-]*[a-zA-Z0-9_.-])?$ ]] || die "bad image name '$ref'"
	[[ $ref == *@* ]] && die "digests are not allowed in image names: '$ref'"
	name=${ref%:*}
	tag=${ref##*:}
	# a ':' inside the last path component is a tag; elsewhere it is a port
	if [[ $ref != *:* || $tag == */* ]]; then
		name=$ref
		tag=latest
	fi
	first=${name%%/*}
	if [[ $name != */* ]]; then
		name=docker.io/library/$name
	elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
		name=docker.io/$name
	fi
	printf '%s:%s\n' "$name" "$tag"
}

go_arch() {
	local a
	a=$(dpkg --print-architecture 2>/dev/null || uname -m)
	case $a in
	amd64 | x86_64) echo amd64 ;;
	arm64 | aarch64) echo arm64 ;;
	armhf | armel | arm*) echo arm ;;
	i386 | i686) echo 386 ;;
	ppc64el | ppc64le) echo ppc64le ;;
	*) echo "$a" ;;
	esac
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }

# deterministic tar of the given top-level entries of directory $1
det_tar() {
	local dir=$1 out=$2
	shift 2
	LC_ALL=C tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
		--format=gnu --no-acls --no-xattrs --no-selinux \
		-C "$dir" -cf "$out" "$@"
}

# copy SRC to ROOTFS/DST (dereferencing symlinks)
add_path() {
	local rootfs=$1 src=$2 dst=$3
	[[ -e $src ]] || die "--add: '$src' does not exist"
	[[ $dst == /* ]] || die "--add: destination '$dst' must be an absolute path"
	[[ $dst != */../* && $dst != */.. ]] || die "--add: destination '$dst' must not contain '..'"
	mkdir -p "$rootfs$(dirname "$dst")"
	if [[ -d $src ]]; then
		mkdir -p "$rootfs$dst"
		cp -RL --no-preserve=ownership "$src/." "$rootfs$dst/"
	else
		rm -f "$rootfs$dst"
		cp -L --no-preserve=ownership "$src" "$rootfs$dst"
	fi
}

# print the absolute library paths (and loader) that ldd lists for $1
libs_of() {
	local f=$1 out
	if ! out=$(LC_ALL=C ldd "$f" 2>&1); then
		return 0 # not a dynamic executable / not ELF
	fi
	printf '%s\n' "$out" | awk '
		/not found/ { print "MISSING " $1; next }
		$2 == "=>" && $3 ~ /^\// { print $3; next }
		$1 ~ /^\// { print $1 }'
}

cmd_build() {
	[[ $# -ge 2 ]] || { usage >&2; exit 2; }
	local ref out
	ref=$(normalize_ref "$1")
	out=$2
	shift 2
	local -a adds=() envs=()
	local with_libs=0 busybox=1 workdir=/ user="" ep_json="" cmd_json=""
	while [[ $# -gt 0 ]]; do
		case $1 in
		--add) [[ $# -ge 2 ]] || die "--add needs SRC[:DST]"; adds+=("$2"); shift 2 ;;
		--with-libs) with_libs=1; shift ;;
		--no-busybox) busybox=0; shift ;;
		--entrypoint) [[ $# -ge 2 ]] || die "--entrypoint needs a value"; ep_json=$(words_json "$2"); shift 2 ;;
		--entrypoint-json) [[ $# -ge 2 ]] || die "--entrypoint-json needs a value"; ep_json=$(json_array "$2"); shift 2 ;;
		--cmd) [[ $# -ge 2 ]] || die "--cmd needs a value"; cmd_json=$(words_json "$2"); shift 2 ;;
		--cmd-json) [[ $# -ge 2 ]] || die "--cmd-json needs a value"; cmd_json=$(json_array "$2"); shift 2 ;;
		--env) [[ $# -ge 2 && $2 == *=* ]] || die "--env needs K=V"; envs+=("$2"); shift 2 ;;
		--workdir) [[ $# -ge 2 ]] || die "--workdir needs a value"; workdir=$2; shift 2 ;;
		--user) [[ $# -ge 2 ]] || die "--user needs a value"; user=$2; shift 2 ;;
		--) shift; local f; for f in "$@"; do adds+=("$f"); done; break ;;
		*) die "unknown option '$1' (see '$PROG --help')" ;;
		esac
	done
	need tar jq sha256sum
	[[ $busybox == 0 || -x $BUSYBOX ]] || die "$BUSYBOX not found; run tests/bed/install-deps.sh (package busybox-static)"

	local work
	work=$(mktemp -d "${TMPDIR:-/tmp}/oi-image.XXXXXX")
	# shellcheck disable=SC2064
	trap "rm -rf '$work'" EXIT
	local rootfs=$work/rootfs layout=$work/layout
	mkdir -p "$rootfs" "$layout/blobs/sha256"

	# --- root filesystem
	local d
	for d in bin sbin usr/bin usr/sbin usr/local/bin usr/local/sbin etc root home \
		tmp var/tmp run dev proc sys; do
		mkdir -p "$rootfs/$d"
	done
	printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' \
		'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$rootfs/etc/passwd"
	printf '%s\n' 'root:x:0:' 'nogroup:x:65534:' >"$rootfs/etc/group"
	: >"$rootfs/etc/hosts"
	: >"$rootfs/etc/resolv.conf"
	if [[ $busybox == 1 ]]; then
		install -m 0755 "$BUSYBOX" "$rootfs/bin/busybox"
		local applet
		while read -r applet; do
			[[ -n $applet && $applet != bin/busybox ]] || continue
			mkdir -p "$rootfs/$(dirname "$applet")"
			ln -sfn /bin/busybox "$rootfs/$applet"
		done < <("$BUSYBOX" --list-full)
	fi
	local spec src dst
	local -a added=()
	for spec in "${adds[@]}"; do
		src=${spec%%:*}
		[[ $src == /* ]] || src=$PWD/$src
		if [[ $spec == *:* ]]; then dst=${spec#*:}; else dst=$src; fi
		add_path "$rootfs" "$src" "$dst"
		added+=("$src")
	done
	if [[ $with_libs == 1 ]]; then
		need ldd
		local f lib
		local -A seen=()
		for src in "${added[@]}"; do
			while IFS= read -r f; do
				while IFS= read -r lib; do
					[[ -n $lib ]] || continue
					[[ $lib != MISSING* ]] || die "--with-libs: $f needs ${lib#MISSING } which ldd cannot find"
					[[ -z ${seen[$lib]:-} ]] || continue
					seen[$lib]=1
					add_path "$rootfs" "$lib" "$lib"
				done < <(libs_of "$f")
			done < <(find -L "$src" -type f)
		done
	fi
	# umask-independent modes: 0755 for dirs and executables, 0644 otherwise
	chmod -R u+rwX,go=rX "$rootfs"
	chmod 1777 "$rootfs/tmp" "$rootfs/var/tmp"
	chmod 0700 "$rootfs/root"

	# --- layer
	local layer=$work/layer.tar
	local -a top=()
	mapfile -t top < <(cd "$rootfs" && LC_ALL=C find . -mindepth 1 -maxdepth 1 -printf '%P\n' | LC_ALL=C sort)
	det_tar "$rootfs" "$layer" "${top[@]}"
	local layer_dgst layer_size
	layer_dgst=$(sha256_of "$layer")
	layer_size=$(size_of "$layer")
	mv "$layer" "$layout/blobs/sha256/$layer_dgst"

	# --- config
	local arch env_json
	arch=$(go_arch)
	env_json=$(printf '%s\n' "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ${envs[@]+"${envs[@]}"} |
		jq -R . | jq -cs 'reduce .[] as $e ({}; .[($e | split("=")[0])] = $e) | [.[]]')
	local cfg=$work/config.json
	jq -cnj \
		--arg arch "$arch" --arg diff "sha256:$layer_dgst" --arg wd "$workdir" --arg user "$user" \
		--argjson env "$env_json" --argjson ep "${ep_json:-null}" --argjson cmd "${cmd_json:-null}" \
		'{architecture: $arch, os: "linux", created: "1970-01-01T00:00:00Z",
		  config: ({Env: $env, WorkingDir: $wd}
		           + (if $ep then {Entrypoint: $ep} else {} end)
		           + (if $cmd then {Cmd: $cmd} else {} end)
		           + (if $user != "" then {User: $user} else {} end)),
		  rootfs: {type: "layers", diff_ids: [$diff]}}' >"$cfg"
	local cfg_dgst cfg_size
	cfg_dgst=$(sha256_of "$cfg")
	cfg_size=$(size_of "$cfg")
	mv "$cfg" "$layout/blobs/sha256/$cfg_dgst"

	# --- manifest
	local man=$work/manifest.json
	jq -cnj --arg c "sha256:$cfg_dgst" --argjson cs "$cfg_size" \
		--arg l "sha256:$layer_dgst" --argjson ls "$layer_size" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
		  config: {mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs},
		  layers: [{mediaType: "application/vnd.oci.image.layer.v1.tar", digest: $l, size: $ls}]}' >"$man"
	local man_dgst man_size
	man_dgst=$(sha256_of "$man")
	man_size=$(size_of "$man")
	mv "$man" "$layout/blobs/sha256/$man_dgst"

	# --- index + layout
	# io.containerd.image.name: full name that 'ctr images import' uses as is;
	# org.opencontainers.image.ref.name: the tag, for other OCI tools.
	jq -cnj --arg m "sha256:$man_dgst" --argjson ms "$man_size" --arg arch "$arch" \
		--arg name "$ref" --arg tag "${ref##*:}" \
		'{schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
		  manifests: [{mediaType: "application/vnd.oci.image.manifest.v1+json", digest: $m, size: $ms,
		               platform: {architecture: $arch, os: "linux"},
		               annotations: {"io.containerd.image.name": $name,
		                             "org.opencontainers.image.ref.name": $tag}}]}' >"$layout/index.json"
	printf '{"imageLayoutVersion":"1.0.0"}' >"$layout/oci-layout"

	mkdir -p "$(dirname "$out")"
	chmod -R u+rwX,go=rX "$layout"
	det_tar "$layout" "$out.tmp.$$" oci-layout index.json blobs
	mv -f "$out.tmp.$$" "$out"
	note "built $ref -> $out (manifest sha256:$man_dgst, layer $((layer_size / 1024)) KiB)"
	echo "sha256:$man_dgst"
}

# "a b  c" -> ["a","b","c"]
words_json() {
	local -a w
	read -r -a w <<<"$1"
	[[ ${#w[@]} -gt 0 ]] || die "empty command"
	printf '%s\n' "${w[@]}" | jq -R . | jq -cs .
}

json_array() {
	printf '%s' "$1" | jq -ce 'if type == "array" and length > 0 and all(type == "string") then . else error("not a non-empty array of strings") end' 2>/dev/null ||
		die "expected a JSON array of strings, got: $1"
}

cmd_import() {
	[[ $# -ge 2 ]] || { usage >&2; exit 2; }
	local tarball=$1 target=$2 sock snap=""
	shift 2
	while [[ $# -gt 0 ]]; do
		case $1 in
		--snapshotter) [[ $# -ge 2 ]] || die "--snapshotter needs a value"; snap=$2; shift 2 ;;
		*) die "unknown option '$1'" ;;
		esac
	done
	need ctr
	[[ -f $tarball ]] || die "image archive '$tarball' not found (build it with '$PROG build')"
	if [[ $target == */* ]]; then
		sock=$target
	else
		sock=$BED_DIR/$target/containerd.sock
	fi
	[[ -S $sock ]] || die "no containerd socket at $sock (start one with tests/bed/containerd.sh start NAME)"
	if [[ -z $snap && -f $(dirname "$sock")/snapshotter ]]; then
		snap=$(cat "$(dirname "$sock")/snapshotter")
	fi
	snap=${snap:-${OI_BED_SNAPSHOTTER:-overlayfs}}
	ctr --address "$sock" -n k8s.io images import --snapshotter "$snap" "$tarball" >&2 ||
		die "import of $tarball into $sock failed"
}

cmd_pause() {
	[[ $# -eq 1 ]] || { usage >&2; exit 2; }
	# PID 1 of the sandbox: sleeps forever (SIGKILL stops it; inside its own
	# PID namespace it ignores SIGTERM, as PID 1 has no default handlers).
	cmd_build "$PAUSE_IMAGE" "$1" --entrypoint "/bin/busybox sleep 2147483647"
}

case ${1:-} in
build) shift; cmd_build "$@" ;;
import) shift; cmd_import "$@" ;;
pause) shift; cmd_pause "$@" ;;
-h | --help | help) usage ;;
*) usage >&2; exit 2 ;;
esac
