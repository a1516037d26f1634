#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs dependencies (Debian 12 packages), builds ccrelay with ASan+UBSan, and runs every test
# through ctest: unit tests, end-to-end tests on 127.0.0.1; then the Debian package, the container image
# and the Kubernetes manifests (podman), and the fuzz targets over their corpora (a clang build). Exit
# status is non-zero if anything failed.
#
#   tests/run.sh              everything
#   tests/run.sh -L unit      only tests with this ctest label (unit, e2e)
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)

deploy/install-deps.sh

build=${CCRELAY_BUILD_DIR:-$src/build/asan}
cmake -S "$src" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCCRELAY_SANITIZE=ON >/dev/null
cmake --build "$build" -j"$(nproc)"
# A release build too: memory measurements (tests/e2e/test_e2e_large.sh) are meaningless under ASan.
release=${CCRELAY_RELEASE_BUILD_DIR:-$src/build/release}
cmake -S "$src" -B "$release" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCCRELAY_TESTS=OFF >/dev/null
cmake --build "$release" -j"$(nproc)"
export CCRELAY_RELEASE_BIN=$release/ccrelay

# Sanitizer reports fail the run: LeakSanitizer is on (ASan's default on Linux), UBSan halts.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=86}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

status=0
# The Debian package (lintian, systemd-analyze, a clean chroot install) runs beside the test suites: it
# needs the release tree only and mostly waits on disk and the mirror.
package_pid=
if [[ $# -eq 0 ]]; then
  tests/package.sh "$release" >"$release/package-test.log" 2>&1 &
  package_pid=$!
fi
# The release binary carries Debian's daemon hardening (PIE, full RELRO, stack protector, fortify).
tests/hardening.sh "$release/ccrelay" || status=1
ctest --test-dir "$build" --output-on-failure --timeout 900 -j2 "$@" || status=1

if [[ -n $package_pid ]]; then
  package_status=0
  wait "$package_pid" || package_status=$?
  cat "$release/package-test.log"
  [[ $package_status -eq 0 ]] || { echo "tests/package.sh failed (exit $package_status)" >&2; status=1; }
fi

# The container image (built with podman, run read-only without capabilities, one call relayed) and the
# Kubernetes manifests (schema, then podman kube play of gateway + agent). After the suites: the image
# build compiles, which would compete with the timed end-to-end tests. The Debian root file system the
# image's bases come from is tests/package.sh's, and the image is reused while its sources are unchanged.
if [[ $# -eq 0 ]]; then
  for t in image kube; do
    t0=$SECONDS
    if tests/$t.sh "$release/../debian-rootfs" >"$release/$t-test.log" 2>&1; then
      echo "tests/$t.sh: PASS in $((SECONDS - t0)) s: $(grep -m1 "^$t: ok: " "$release/$t-test.log" | cut -d' ' -f3-)"
    else
      cat "$release/$t-test.log"
      echo "tests/$t.sh: FAIL after $((SECONDS - t0)) s (log: $release/$t-test.log)" >&2
      status=1
    fi
  done
fi

if [[ $# -eq 0 ]]; then
  fuzz_build=${CCRELAY_FUZZ_BUILD_DIR:-$src/build/fuzz}
  CC=clang cmake -S "$src" -B "$fuzz_build" -DCMAKE_BUILD_TYPE=Debug -DCCRELAY_FUZZ=ON >/dev/null
  cmake --build "$fuzz_build" -j"$(nproc)"
  ctest --test-dir "$fuzz_build" --output-on-failure -L fuzz || status=1
fi
exit $status
