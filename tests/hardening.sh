#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks that a built ccrelay carries the hardening Debian gives its daemons (what devscripts'
# hardening-check reports), with readelf only: PIE, full RELRO (BIND_NOW), a non-executable stack,
# the stack protector and fortified libc calls. (-fcf-protection is compiled in, but the linked binary
# carries no IBT/SHSTK note on Debian 12: its crt start files are built without it, and the linker keeps a
# property only when every input has it, so there is nothing to check on the binary.)
#
#   tests/hardening.sh BINARY        exit 0 when every property holds, 1 with one line per missing one
set -euo pipefail
bin=${1:?usage: tests/hardening.sh BINARY}
[[ -f $bin ]] || { echo "hardening: $bin: no such file" >&2; exit 2; }

fail=0
check() { # name, then a command that succeeds when the property holds
  local name=$1
  shift
  if "$@"; then
    echo "hardening: $name: yes"
  else
    echo "hardening: $name: NO" >&2
    fail=1
  fi
}

header=$(readelf -hW "$bin")
dynamic=$(readelf -dW "$bin")
segments=$(readelf -lW "$bin")
symbols=$(readelf --dyn-syms -W "$bin")

check "position independent executable" grep -q 'Type:[[:space:]]*DYN' <<<"$header"
check "read-only relocations (GNU_RELRO)" grep -q 'GNU_RELRO' <<<"$segments"
check "immediate binding (BIND_NOW)" grep -Eq 'BIND_NOW|FLAGS_1.*NOW' <<<"$dynamic"
# GNU_STACK's flags column must be RW, never RWE.
check "non-executable stack" bash -c 'grep "GNU_STACK" <<<"$1" | grep -qv "RWE"' _ "$segments"
check "stack protector (__stack_chk_fail)" grep -q '__stack_chk_fail' <<<"$symbols"
check "fortified libc calls (__*_chk)" grep -Eq '__[a-z0-9_]+_chk(@|$| )' <<<"$(grep -v __stack_chk <<<"$symbols")"
exit $fail
