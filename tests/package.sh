#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Debian package, checked the way a distribution would: built by CPack from the release build tree,
# lintian (no error), the systemd units verified and their exposure scored (at most 2.0, "OK"), then the
# package installed into a clean Debian 12 chroot (debootstrap minbase plus the runtime libraries only)
# where `ccrelay version` and `ccrelay check` run on the installed samples.
#
#   tests/package.sh BUILD_DIR     BUILD_DIR: a release build tree (tests/run.sh's build/release)
#
# The chroot base is cached in BUILD_DIR/../debian-rootfs (tests/lib/rootfs.sh), shared with the image
# test. Needs root (debootstrap, chroot) and Debian's mirror.
set -euo pipefail
build=$(cd "${1:?usage: tests/package.sh BUILD_DIR}" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/ccrelay-package.XXXXXX")
rootfs=
cleanup() {
  if [[ -n $rootfs ]]; then
    umount "$rootfs/proc" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
say() { echo "package: $*"; }

# 1. Build.
(cd "$build" && cpack -G DEB >"$work/cpack.log" 2>&1) || { cat "$work/cpack.log" >&2; exit 1; }
deb=$(ls -t "$build"/ccrelay_*_*.deb | head -1)
say "built $(basename "$deb") ($(stat -c %s "$deb") bytes)"
dpkg-deb -f "$deb" Depends | sed 's/^/package: depends: /'

# 2. lintian: errors fail, warnings are shown.
lintian --allow-root --fail-on error "$deb" | sed 's/^/package: lintian: /'
say "lintian: no error"

# 3. The units: verified against the packaged binary (paths rewritten into the unpacked tree, since the
# package is not installed on this host), then scored.
mkdir -p "$work/tree" "$work/units"
dpkg-deb -x "$deb" "$work/tree"
for unit in "$work"/tree/usr/lib/systemd/system/*.service; do
  sed "s#/usr/bin/ccrelay#$work/tree/usr/bin/ccrelay#g" "$unit" >"$work/units/$(basename "$unit")"
done
systemd-analyze verify --man=no "$work"/units/*.service
say "systemd-analyze verify: ok"
for unit in "$work"/tree/usr/lib/systemd/system/*.service; do
  score=$(systemd-analyze security --offline=yes "$unit" 2>/dev/null | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  say "systemd-analyze security $(basename "$unit"): exposure $score"
  awk -v s="$score" 'BEGIN { exit !(s != "" && s <= 2.0) }' || { echo "package: $(basename "$unit") exposure $score > 2.0" >&2; exit 1; }
done

# 4. Install into a clean Debian 12 and run what an operator runs first.
base=$("$src/tests/lib/rootfs.sh" "$build/../debian-rootfs")
rootfs=$work/rootfs
mkdir -p "$rootfs"
tar -C "$rootfs" -xf "$base"
cp "$deb" "$rootfs/tmp/"
mount -t proc proc "$rootfs/proc"
chroot "$rootfs" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -euc '
  dpkg -i /tmp/'"$(basename "$deb")"' >/tmp/dpkg.log 2>&1 || { cat /tmp/dpkg.log; exit 1; }
  getent passwd ccrelay >/dev/null
  test -f /usr/share/man/man8/ccrelay.8.gz
  grep -qx /etc/ccrelay/agent.yaml /var/lib/dpkg/info/ccrelay.conffiles
  ccrelay version
  CCRELAY_SAMPLE_DIR=/etc/ccrelay /usr/share/ccrelay/make-sample-certs.sh >/dev/null
  ccrelay check -c /etc/ccrelay/agent.yaml
  ccrelay check -c /etc/ccrelay/gateway.yaml
  dpkg --purge ccrelay >/dev/null
  ! getent passwd ccrelay >/dev/null
' 2>&1 | sed 's/^/package: chroot: /'
say "installed into a clean Debian 12: version and check ok; purged cleanly"
