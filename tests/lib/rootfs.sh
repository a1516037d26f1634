#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A clean Debian 12 root file system for the package and image tests, made once with debootstrap
# (--variant=minbase plus ccrelay's runtime libraries and openssl for the sample certificates) and kept
# as a tarball in CACHE_DIR; prints the tarball's path. No registry image is needed anywhere.
#
#   tests/lib/rootfs.sh CACHE_DIR
set -euo pipefail
cache=${1:?usage: tests/lib/rootfs.sh CACHE_DIR}
mkdir -p "$cache"
# The package and image tests may ask at once: one debootstrap, the other waits for its tarball.
exec 9>"$cache/.lock"
flock -w 900 9 || { echo "rootfs: $cache/.lock held for 15 minutes" >&2; exit 1; }
tarball=$(cd "$cache" && pwd)/bookworm-minbase.tar
if [[ -s $tarball ]]; then
  echo "$tarball"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "rootfs: debootstrap not installed (deploy/install-deps.sh)" >&2; exit 1; }
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
tmp=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if ! debootstrap --variant=minbase --include=libuv1,libssl3,libnghttp2-14,libyaml-0-2,adduser,openssl,ca-certificates \
    bookworm "$tmp/root" "$mirror" >"$tmp/log" 2>&1; then
  tail -20 "$tmp/log" >&2
  echo "rootfs: debootstrap of bookworm from $mirror failed" >&2
  exit 1
fi
# Nothing of the build host's apt state: the image and chroot start with empty lists and caches.
rm -rf "$tmp/root/var/lib/apt/lists/"* "$tmp/root/var/cache/apt/"*.bin "$tmp/root/var/cache/apt/archives/"*.deb
tar -C "$tmp/root" -cf "$tarball.part" .
mv "$tarball.part" "$tarball"
echo "$tarball"
