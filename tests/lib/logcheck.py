# SPDX-License-Identifier: Apache-2.0
"""Strict checks of ccrelay log files: every line must parse, as JSON objects without duplicate keys
(json), or as a logfmt key=value sequence with nothing left over (logfmt); no line may carry a forged
field (a msg or level that ccrelay never writes).

usage: logcheck.py json|logfmt FILE...     exit 0 and a summary line, or exit 1 naming the bad line
"""
import json
import re
import sys

LEVELS = {"debug", "info", "warn", "error"}
# A logfmt line: key=value pairs separated by one space; a value is bare (printable ASCII without
# space, quote, equals or backslash) or quoted with \" \\ \n \r \t \xNN escapes only.
PAIR = re.compile(r'([A-Za-z0-9_.]+)=("(?:[^"\\\x00-\x1f\x7f]|\\["\\nrt]|\\x[0-9a-f]{2})*"|[!#-<>-\[\]-~]+)')


def no_dups(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise ValueError("duplicate key in %s" % keys)
    return dict(pairs)


def parse_logfmt(line):
    fields, pos = [], 0
    while pos < len(line):
        m = PAIR.match(line, pos)
        if not m:
            raise ValueError("logfmt does not parse at column %d: %r" % (pos, line[pos:pos + 40]))
        fields.append((m.group(1), m.group(2)))
        pos = m.end()
        if pos < len(line):
            if line[pos] != " ":
                raise ValueError("no space after field at column %d" % pos)
            pos += 1
    return no_dups(fields)


def main():
    fmt, files = sys.argv[1], sys.argv[2:]
    n = 0
    for path in files:
        with open(path, "rb") as f:
            for i, raw in enumerate(f, 1):
                text = raw.rstrip(b"\n")
                # Sanitizer and harness lines are not ccrelay's
                if not text or not (text.startswith(b"{") or text.startswith(b"ts=")):
                    continue
                try:
                    line = text.decode("utf-8")  # JSON must be UTF-8; logfmt escapes what is not
                    obj = json.loads(line, object_pairs_hook=no_dups) if fmt == "json" else parse_logfmt(line)
                    if fmt == "json":
                        if not isinstance(obj, dict):
                            raise ValueError("not an object")
                        for k in ("status", "bytes_in", "bytes_out", "duration_ms"):
                            if k in obj and not isinstance(obj[k], int):
                                raise ValueError("%s is not a number: %r" % (k, obj[k]))
                    level = obj["level"]
                    if level not in LEVELS:
                        raise ValueError("unknown level %r" % level)
                    msg = obj["msg"]
                    if "forged" in (msg if isinstance(msg, str) else ""):
                        raise ValueError("a forged msg")
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    print("logcheck: %s:%d: %s\n  %r" % (path, i, e, text[:300]), file=sys.stderr)
                    sys.exit(1)
                n += 1
    print("logcheck: %d %s lines parse strictly" % (n, fmt))


if __name__ == "__main__":
    main()
