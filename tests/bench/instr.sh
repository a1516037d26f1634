#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Instructions per request: ccrelay against a base build, both measured by this run.
#
#   tests/bench/instr.sh BASE [NEW]
#
# BASE and NEW are each a git revision (built RelWithDebInfo from `git archive` in the temp dir) or a
# ccrelay binary; NEW defaults to HEAD. For each, tests/bench/run.sh --quick runs the ccrelay path at
# one point (INSTR_POINT, default small-c1; INSTR_DURATION seconds, default 15) with the gateway and
# the agent under callgrind; the counters are zeroed just before the recorded wrk run and dumped just
# after it (BENCH_ON_RUN), and each process's instructions are divided by the requests it handled
# (calls of the gateway's on_req_head and of the agent's on_stream, so the count is exact).
#
# What it measures: user-space instructions (Ir) per request, ccrelay's and its libraries' (OpenSSL,
# nghttp2, libuv, libc), not time: the kernel's share (syscalls) is not counted, nor cache misses.
# Unlike req/s and CPU time on a shared VM (whose speed drifts by 10-40 % between runs) it repeats
# within about 1 %, so a per-request change of a few percent shows. At c=1 every request pays for
# its own loop turn; at c=64 (INSTR_POINT=small-c64) turns are shared and the count varies more.
#
# Prints a table on stdout (progress on stderr); exit 0 when both runs were valid, non-zero when the
# harness failed or a count is missing. Needs valgrind (installed with apt-get if missing).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$BENCH_DIR/../.." && pwd)
if [[ $# -lt 1 || $# -gt 2 || $1 == -h || $1 == --help ]]; then
  sed -n '3,21p' "$0"
  exit 2
fi
BASE=$1
NEW=${2:-HEAD}
POINT=${INSTR_POINT:-small-c1}
DUR=${INSTR_DURATION:-15}
case $POINT in small-c1 | small-c16 | small-c64) ;; *)
  echo "instr: INSTR_POINT must be small-c1, small-c16 or small-c64 (requests are counted)" >&2
  exit 2
  ;;
esac

if ! command -v valgrind >/dev/null || ! command -v callgrind_control >/dev/null; then
  as_root=()
  [[ $(id -u) == 0 ]] || as_root=(sudo)
  echo "instr: installing valgrind" >&2
  DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends valgrind >/dev/null
fi

T=$(mktemp -d /tmp/ccrelay-instr.XXXXXX)
trap 'rm -rf "$T"' EXIT

# binary_of LABEL SPEC: prints the path of a ccrelay binary for SPEC (a binary, or a revision to build).
binary_of() {
  local label=$1 spec=$2 dir=$T/$1
  if [[ -f $spec && -x $spec ]]; then
    readlink -f "$spec"
    return
  fi
  git -C "$SRC" rev-parse --verify -q "$spec^{commit}" >/dev/null ||
    { echo "instr: $spec is neither an executable file nor a git revision" >&2; return 1; }
  echo "instr: building $label ($spec)" >&2
  mkdir -p "$dir/src"
  git -C "$SRC" archive "$spec" | tar -x -C "$dir/src"
  if ! { cmake -S "$dir/src" -B "$dir/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCCRELAY_TESTS=OFF &&
    cmake --build "$dir/build" -j"$(nproc)"; } >"$dir/build.log" 2>&1; then
    tail -n 30 "$dir/build.log" >&2
    echo "instr: building $spec failed (log above)" >&2
    return 1
  fi
  echo "$dir/build/ccrelay"
}

# measure LABEL BINARY: one harness run with gateway and agent under callgrind; dumps in $T/LABEL/cg.
measure() {
  local label=$1 bin=$2 cg=$T/$1/cg
  mkdir -p "$cg"
  # The harness starts every role through CCRELAY_BIN; only gateway and agent run under callgrind
  # (exec keeps the PID, which the hook needs).
  cat >"$cg/ccrelay" <<EOF
#!/bin/sh
case "\$1" in
gateway | agent)
  echo \$\$ >"$cg/\$1.pid"
  exec valgrind --tool=callgrind --dump-instr=no --callgrind-out-file="$cg/\$1.out" "$bin" "\$@" ;;
*) exec "$bin" "\$@" ;;
esac
EOF
  cat >"$cg/hook" <<EOF
#!/bin/sh
# BENCH_ON_RUN: zero the counters as the recorded run starts, dump them as it ends.
op=-z
[ "\$1" = end ] && op=-d
for role in gateway agent; do
  callgrind_control \$op "\$(cat "$cg/\$role.pid")" >/dev/null || exit 1
done
EOF
  chmod +x "$cg/ccrelay" "$cg/hook"
  echo "instr: measuring $label ($POINT, ${DUR} s under callgrind)" >&2
  CCRELAY_BIN=$cg/ccrelay BENCH_ON_RUN=$cg/hook BENCH_PATHS=ccrelay BENCH_POINTS=$POINT BENCH_DURATION=$DUR \
    bash "$BENCH_DIR/run.sh" --quick >"$T/$label/report.txt" 2>"$T/$label/bench.log" ||
    { tail -n 20 "$T/$label/bench.log" >&2; echo "instr: the harness failed for $label" >&2; return 1; }
}

base_bin=$(binary_of base "$BASE")
new_bin=$(binary_of new "$NEW")
measure base "$base_bin"
measure new "$new_bin"

python3 - "$T" "$BASE" "$NEW" "$POINT" <<'EOF'
import re, sys

tmp, base, new, point = sys.argv[1:5]

def per_request(path, fn):
    """Instructions in the dump and calls of fn (callgrind's compressed names: fn=(id) name)."""
    names, cfn, calls, total = {}, None, 0, None
    with open(path) as f:
        for line in f:
            m = re.match(r'(c?fn)=\((\d+)\)(?: (.*))?', line)
            if m:
                kind, ident, name = m.groups()
                if name:
                    names[ident] = name.strip()
                if kind == 'cfn':
                    cfn = names.get(ident)
                continue
            if line.startswith('calls=') and cfn == fn:
                calls += int(line.split()[0][6:])
            elif line.startswith('summary:'):
                total = int(line.split()[1])
    if not total or not calls:
        sys.exit(f"instr: {path}: no instructions or no calls of {fn} (renamed?)")
    return total / calls, calls

rows = []
for role, fn in (('gateway', 'on_req_head'), ('agent', 'on_stream')):
    b, nb = per_request(f'{tmp}/base/cg/{role}.out.1', fn)
    n, nn = per_request(f'{tmp}/new/cg/{role}.out.1', fn)
    rows.append((role, b, n, nb, nn))
print(f"ccrelay instructions per request (callgrind, user space: ccrelay and its libraries), {point}")
print(f"base: {base}   new: {new}")
print(f"{'process':<9} {'base Ir/req':>12} {'new Ir/req':>12} {'new/base':>9} {'requests (base, new)':>22}")
for role, b, n, nb, nn in rows:
    print(f"{role:<9} {b:>12,.0f} {n:>12,.0f} {n / b:>8.3f}x {nb:>11,} {nn:>10,}")
tb, tn = sum(r[1] for r in rows), sum(r[2] for r in rows)
print(f"{'both':<9} {tb:>12,.0f} {tn:>12,.0f} {tn / tb:>8.3f}x")
EOF
