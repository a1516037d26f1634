#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Checks the include graph of relay/*.c, relay/*.h and include/ccrelay/*.h against docs/layers.md,
# which is the source of truth for layers, modules and where third-party headers may be included.
# Fails (exit 1) naming file:line and the include on:
#   - an include of a module in a higher layer;
#   - an include cycle between modules (every include of each edge on the cycle is listed);
#   - an OpenSSL, nghttp2, llhttp or libyaml include in a module whose row does not allow it;
#   - a file whose module docs/layers.md does not list.
# Exit 2 means docs/layers.md could not be read as the tables it should hold.
#
#   tests/layers.sh [SRC]          check the tree at SRC (default: the tree holding this script)
#   tests/layers.sh --graph [SRC]  print each module's layer and the modules it includes, then check
#   tests/layers.sh --self-test    build small fake trees, one per kind of fault, and prove each is
#                                  reported (and that a clean tree passes)
#
# Includes are read line by line after comments are removed. Conditional compilation is not
# evaluated, so an include under `#if 0` still counts.
set -euo pipefail

self=$(cd "$(dirname "$0")" && pwd)/$(basename "$0")

check() {
  python3 - "$@" <<'PY'
import fnmatch
import os
import re
import sys

graph = sys.argv[1] == "--graph"
src = sys.argv[2]
DOC = "docs/layers.md"


def doc_error(line, msg):
    where = f"{DOC}:{line}" if line else DOC
    print(f"{where}: {msg}", file=sys.stderr)
    sys.exit(2)


try:
    with open(os.path.join(src, DOC), encoding="utf-8") as f:
        doc = f.read().splitlines()
except OSError as e:
    doc_error(0, f"cannot read: {e.strerror}")


def table(marker, columns):
    """Rows of the Markdown table after the marker line, as (line number, {column: cell})."""
    start = next((i for i, l in enumerate(doc) if l.strip() == marker), None)
    if start is None:
        doc_error(0, f"no '{marker}' line: the table the check reads follows that marker")
    i = start + 1
    while i < len(doc) and not doc[i].strip():
        i += 1
    rows = []
    while i < len(doc) and doc[i].lstrip().startswith("|"):
        rows.append((i + 1, [c.strip() for c in doc[i].strip().strip("|").split("|")]))
        i += 1
    if len(rows) < 2 or not all(re.fullmatch(r":?-+:?", c) for c in rows[1][1]):
        doc_error(start + 1, f"'{marker}' must be followed by a Markdown table (header, separator, rows)")
    header = [c.lower() for c in rows[0][1]]
    for c in columns:
        if c not in header:
            doc_error(rows[0][0], f"the table after '{marker}' has no '{c}' column")
    out = []
    for line, cells in rows[2:]:
        if len(cells) != len(header):
            doc_error(line, f"{len(cells)} cells, the header has {len(header)}")
        out.append((line, {h: cells[k] for k, h in enumerate(header)}))
    return out


def words(cell):
    return [w for w in re.split(r"[\s,]+", cell.replace("`", "")) if w and w not in ("-", "—")]


families = {}  # family -> list of glob patterns
for line, row in table("<!-- layers.sh: third-party headers -->", ["family", "headers"]):
    fam = words(row["family"])
    if len(fam) != 1 or not words(row["headers"]):
        doc_error(line, "a row names one family and at least one header pattern")
    families[fam[0]] = words(row["headers"])

layers = []   # top first
layer_of = {}  # module -> layer
owner = {}     # file stem -> module
allowed = {}   # module -> set of families
cur = None
for line, row in table("<!-- layers.sh: modules -->", ["layer", "module", "also owns", "third-party headers"]):
    name = row["layer"].replace("`", "").strip()
    if name:
        if name in layers and name != cur:
            doc_error(line, f"layer '{name}' appears again below layer '{cur}'; keep a layer's rows together")
        if name not in layers:
            layers.append(name)
        cur = name
    if cur is None:
        doc_error(line, "the first row must name its layer")
    mod = words(row["module"])
    if len(mod) != 1:
        doc_error(line, "the module cell holds one module name")
    mod = mod[0]
    if mod in layer_of:
        doc_error(line, f"module '{mod}' is listed twice")
    layer_of[mod] = cur
    for stem in [mod] + words(row["also owns"]):
        stem = re.sub(r"\.[ch]$", "", stem)
        if stem in owner:
            doc_error(line, f"'{stem}' is owned by both '{owner[stem]}' and '{mod}'")
        owner[stem] = mod
    allowed[mod] = set(words(row["third-party headers"]))
    for fam in allowed[mod] - families.keys():
        doc_error(line, f"'{fam}' is not a family of the third-party headers table")
rank = {name: len(layers) - k for k, name in enumerate(layers)}  # higher number = higher layer


def strip_comments(text):
    """The text with comments blanked out; newlines and string literals kept, so line numbers hold."""
    out, i, n, state = [], 0, len(text), None
    while i < n:
        c = text[i]
        if state is None:
            if text.startswith("/*", i):
                state = "block"
                out.append("  ")
                i += 2
                continue
            if text.startswith("//", i):
                state = "line"
                out.append("  ")
                i += 2
                continue
            if c in "\"'":
                state = c
            out.append(c)
        elif state == "block":
            if text.startswith("*/", i):
                state = None
                out.append("  ")
                i += 2
                continue
            out.append("\n" if c == "\n" else " ")
        elif state == "line":
            if c == "\n":
                state = None
            out.append(c if c == "\n" else " ")
        else:  # inside a string or character literal
            if c == "\\" and i + 1 < n:
                out.append(text[i : i + 2])
                i += 2
                continue
            if c == state or c == "\n":
                state = None
            out.append(c)
        i += 1
    return "".join(out)


files = []
for d, exts in (("relay", (".c", ".h")), ("include/ccrelay", (".h",))):
    p = os.path.join(src, d)
    if os.path.isdir(p):
        files += sorted(f"{d}/{f}" for f in os.listdir(p) if f.endswith(exts))
known = set(files)


def module_of(path):
    stem = os.path.basename(path)[:-2]
    return owner.get(stem) or owner.get(re.sub(r"_internal$", "", stem))


INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
problems = []  # (path, line, text)
edges = {}     # (from module, to module) -> [(path, line, include text)]
for path in files:
    mod = module_of(path)
    if mod is None:
        problems.append((path, 0, f"{path}: belongs to no module listed in {DOC} (add a row, or "
                         f"the file's stem to a module's 'also owns')"))
    with open(os.path.join(src, path), encoding="utf-8", errors="replace") as f:
        text = strip_comments(f.read())
    for ln, line in enumerate(text.split("\n"), 1):
        inc = INCLUDE.match(line)
        if not inc:
            continue
        kind, name = inc.groups()
        close = ">" if kind == "<" else '"'
        where = f"{path}:{ln}: #include {kind}{name}{close}"
        fam = next((f for f, pats in families.items() if any(fnmatch.fnmatch(name, p) for p in pats)), None)
        if fam and (mod is None or fam not in allowed[mod]):
            users = sorted(u for u, fs in allowed.items() if fam in fs)
            problems.append((path, ln, f"{where}: {fam} header in module {mod or '(unlisted)'}; "
                             f"{DOC} allows {fam} only in: {', '.join(users) or 'no module'}"))
            continue
        if name.startswith("ccrelay/"):
            target = "include/" + name
        elif kind == '"':
            target = os.path.normpath(os.path.join(os.path.dirname(path), name))
        else:
            continue
        if target not in known:
            continue
        tmod = module_of(target)
        if mod is None or tmod is None or tmod == mod:
            continue
        if rank[layer_of[tmod]] > rank[layer_of[mod]]:
            problems.append((path, ln, f"{where}: module {mod} ({layer_of[mod]}) includes module {tmod} "
                             f"({layer_of[tmod]}), a higher layer"))
        edges.setdefault((mod, tmod), []).append(where)

succ = {}
for a, b in edges:
    succ.setdefault(a, set()).add(b)

# Tarjan's strongly connected components; a component of more than one module holds a cycle.
index, low, stack, on_stack, comps = {}, {}, [], set(), []


def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in sorted(succ.get(v, ())):
        if w not in index:
            visit(w)
            low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        comp = []
        while True:
            w = stack.pop()
            on_stack.discard(w)
            comp.append(w)
            if w == v:
                break
        comps.append(sorted(comp))


sys.setrecursionlimit(10000)
for v in sorted(layer_of):
    if v not in index:
        visit(v)

cycles = []
for comp in sorted(c for c in comps if len(c) > 1):
    # The shortest cycle through the component's first module, found breadth-first inside it.
    start, members = comp[0], set(comp)
    prev, queue, path = {start: None}, [start], None
    while queue and path is None:
        nxt = []
        for v in queue:
            for w in sorted(succ.get(v, ())):
                if w == start:
                    path = []
                    while v is not None:
                        path.append(v)
                        v = prev[v]
                    path.reverse()
                    break
                if w in members and w not in prev:
                    prev[w] = v
                    nxt.append(w)
            if path is not None:
                break
        queue = nxt
    ring = path + [start]
    lines = [f"include cycle between modules {' -> '.join(ring)}"
             + (f" (all of {', '.join(comp)} are on cycles together)" if len(comp) > len(path) else "")
             + "; remove one of these edges:"]
    for a, b in zip(ring, ring[1:]):
        lines += [f"  {a} -> {b}: {w}" for w in edges[(a, b)]]
    cycles.append("\n".join(lines))

if graph:
    for name in layers:
        for mod in (m for m in layer_of if layer_of[m] == name):
            print(f"{name:9} {mod:14} -> {' '.join(sorted(succ.get(mod, ()))) or '-'}")

for _, _, text in sorted(problems):
    print(text)
for text in cycles:
    print(text)
count = len(problems) + len(cycles)
if count:
    print(f"layers: {count} problem(s); {DOC} is the source of truth for layers and modules")
    sys.exit(1)
empty = sorted(m for m in layer_of if not any(module_of(f) == m for f in files))
print(f"layers: ok ({len(files)} files in {len(layer_of) - len(empty)} modules"
      + (f"; listed without files yet: {', '.join(empty)}" if empty else "") + ")")
PY
}

# --- self-test ------------------------------------------------------------------------------------

put() { mkdir -p "$(dirname "$1")" && cat >"$1"; }

# A small tree that passes: three layers, a role split over two files with a private header, a
# third-party family allowed in one module, and traps for the comment stripper.
clean_tree() {
  local t=$1
  put "$t/docs/layers.md" <<'EOF'
# Layers of the fake tree

<!-- layers.sh: modules -->
| layer | module | also owns | third-party headers | what it is |
|---|---|---|---|---|
| top | app | app_extra | | the role |
| | tool | | | a second top module that nothing includes |
| mid | svc | | nghttp2 | a service |
| | peer | | | another service |
| low | core | | openssl | the bottom |
| | later | | | listed before its files exist |

<!-- layers.sh: third-party headers -->
| family | headers |
|---|---|
| openssl | `openssl/*` |
| nghttp2 | `nghttp2/*` |
| llhttp | `llhttp.h` |
| libyaml | `yaml.h` |
EOF
  put "$t/include/ccrelay/app.h" <<<'int cr_app_main(void);'
  put "$t/include/ccrelay/svc.h" <<<'#include "ccrelay/core.h"'
  put "$t/include/ccrelay/peer.h" <<<'#include "ccrelay/core.h"'
  put "$t/include/ccrelay/core.h" <<<'#include <openssl/ssl.h>'
  put "$t/include/ccrelay/tool.h" <<<'int cr_tool_main(void);'
  put "$t/relay/tool.c" <<<'#include "ccrelay/tool.h"'
  put "$t/relay/app_internal.h" <<'EOF'
#include "ccrelay/svc.h"
EOF
  put "$t/relay/app.c" <<'EOF'
#include "ccrelay/app.h"

#include <stdio.h>

#include "app_internal.h"
#include "ccrelay/peer.h"
/* #include <openssl/evp.h> is what we no longer do */
EOF
  put "$t/relay/app_extra.c" <<'EOF'
#include "app_internal.h"
#include "ccrelay/core.h"
// #include <yaml.h>
EOF
  put "$t/relay/svc.c" <<'EOF'
#include "ccrelay/svc.h"

#include <nghttp2/nghttp2.h>

#include "ccrelay/peer.h"
EOF
  put "$t/relay/peer.c" <<'EOF'
#include "ccrelay/peer.h"
static const char *accept_any = "*/*", quote = '"';
// an opener /* and an apostrophe ' in a line comment end with it
EOF
  put "$t/relay/core.c" <<'EOF'
#include "ccrelay/core.h"

#include <openssl/err.h>
/* A comment that names ccrelay/app.h:
#include "ccrelay/app.h"
   must not count. */
EOF
}

self_test() {
  local tmp out line fails=0 n=0
  tmp=$(mktemp -d)
  # shellcheck disable=SC2064
  trap "rm -rf '$tmp'" EXIT

  # expect NAME STATUS LINE...: the check on $tmp/NAME exits with STATUS and prints exactly the
  # given lines (each a fixed string that must appear in its own output line), in any order, plus
  # the summary line.
  expect() {
    local name=$1 want=$2 out status=0 line
    shift 2
    n=$((n + 1))
    out=$(bash "$self" "$tmp/$name" 2>&1) || status=$?
    local ok=1
    [[ $status == "$want" ]] || { echo "self-test $name: exit $status, want $want"; ok=0; }
    for line in "$@"; do
      grep -qF -- "$line" <<<"$out" || { echo "self-test $name: missing: $line"; ok=0; }
    done
    if [[ $want == 1 ]]; then
      # Exactly one reported line per expectation, no extra findings.
      local got
      got=$(grep -cvE '^layers: |^  ' <<<"$out" || true)
      [[ $got == "$#" ]] || { echo "self-test $name: $got findings, want $#"; ok=0; }
    fi
    if ((ok)); then
      echo "self-test $name: ok"
    else
      fails=$((fails + 1))
      while IFS= read -r line; do echo "    | $line"; done <<<"$out"
    fi
  }

  clean_tree "$tmp/clean"
  expect clean 0 "layers: ok (12 files in 5 modules; listed without files yet: later)"

  # (a) an include that goes up a layer, placed after the "*/*" string and the line comment of
  # peer.c: a comment stripper that ignored literals or line comments would hide it.
  clean_tree "$tmp/upward"
  printf '#include "ccrelay/tool.h"\n' >>"$tmp/upward/relay/peer.c"
  printf '#include "ccrelay/tool.h"\n' >>"$tmp/upward/include/ccrelay/core.h"
  expect upward 1 \
    'relay/peer.c:4: #include "ccrelay/tool.h": module peer (mid) includes module tool (top), a higher layer' \
    'include/ccrelay/core.h:2: #include "ccrelay/tool.h": module core (low) includes module tool (top), a higher layer'

  # (b) a cycle inside one layer, and one across layers through a private header.
  clean_tree "$tmp/cycle"
  printf '#include "ccrelay/svc.h"\n' >>"$tmp/cycle/relay/peer.c"
  expect cycle 1 'include cycle between modules peer -> svc -> peer; remove one of these edges:'
  out=$(bash "$self" "$tmp/cycle" || true)
  for line in '  peer -> svc: relay/peer.c:4: #include "ccrelay/svc.h"' \
              '  svc -> peer: relay/svc.c:5: #include "ccrelay/peer.h"'; do
    n=$((n + 1))
    if grep -qxF -- "$line" <<<"$out"; then echo "self-test cycle witness: ok"
    else echo "self-test cycle witness: missing: $line"; fails=$((fails + 1)); fi
  done

  # (c) guarded third-party headers outside their modules, <> and "" forms, in .c and .h files.
  clean_tree "$tmp/thirdparty"
  printf '#include <openssl/evp.h>\n' >>"$tmp/thirdparty/relay/app.c"
  printf '#include <llhttp.h>\n' >>"$tmp/thirdparty/relay/app_internal.h"
  printf '#  include "yaml.h"\n' >>"$tmp/thirdparty/relay/peer.c"
  printf '#include <nghttp2/nghttp2.h>\n' >>"$tmp/thirdparty/include/ccrelay/core.h"
  expect thirdparty 1 \
    'relay/app.c:8: #include <openssl/evp.h>: openssl header in module app; docs/layers.md allows openssl only in: core' \
    'relay/app_internal.h:2: #include <llhttp.h>: llhttp header in module app; docs/layers.md allows llhttp only in: no module' \
    'relay/peer.c:4: #include "yaml.h": libyaml header in module peer' \
    'include/ccrelay/core.h:2: #include <nghttp2/nghttp2.h>: nghttp2 header in module core; docs/layers.md allows nghttp2 only in: svc'

  # (d) files whose module is not listed, including a stray OpenSSL include in one of them.
  clean_tree "$tmp/unlisted"
  put "$tmp/unlisted/relay/stray.c" <<<'#include <openssl/rand.h>'
  put "$tmp/unlisted/include/ccrelay/odd.h" <<<''
  put "$tmp/unlisted/relay/lost_internal.h" <<<''
  expect unlisted 1 \
    'relay/stray.c: belongs to no module listed in docs/layers.md' \
    'relay/stray.c:1: #include <openssl/rand.h>: openssl header in module (unlisted)' \
    'include/ccrelay/odd.h: belongs to no module listed in docs/layers.md' \
    'relay/lost_internal.h: belongs to no module listed in docs/layers.md'

  # The doc itself: no table, an unknown family, a module listed twice.
  clean_tree "$tmp/nodoc"
  sed -i 's/<!-- layers.sh: modules -->//' "$tmp/nodoc/docs/layers.md"
  expect nodoc 2 "docs/layers.md: no '<!-- layers.sh: modules -->' line"
  clean_tree "$tmp/badfamily"
  sed -i 's/| nghttp2 | a service |/| nghttp3 | a service |/' "$tmp/badfamily/docs/layers.md"
  expect badfamily 2 "docs/layers.md:8: 'nghttp3' is not a family of the third-party headers table"
  clean_tree "$tmp/twice"
  sed -i 's/| | later |/| | peer |/' "$tmp/twice/docs/layers.md"
  expect twice 2 "docs/layers.md:11: module 'peer' is listed twice"

  if ((fails)); then
    echo "layers self-test: $fails of $n checks failed"
    return 1
  fi
  echo "layers self-test: all $n checks passed"
}

case ${1:-} in
  --self-test) self_test ;;
  --graph) check --graph "${2:-$(dirname "$self")/..}" ;;
  -h|--help) sed -n '2,17s/^# \{0,1\}//p' "$self" ;;
  *) check --check "${1:-$(dirname "$self")/..}" ;;
esac
