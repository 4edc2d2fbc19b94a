#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian machine, when
# absent: protoc and the well-known protos (for the CRI and etcd API types),
# and the test bed's packages.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
missing=()
for pkg in protobuf-compiler libprotobuf-dev curl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if [ "$(id -u)" = 0 ]; then
  "$HERE/bed/install-deps.sh"
fi
