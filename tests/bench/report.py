#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Aggregator for tests/bench/run.sh (standard library only).

  report.py record --path P --point PT --rep N --wrk WRK_OUTPUT --procs PROCS_JSON
      one JSON line for runs.jsonl: wrk's WRKJSON summary (bench.lua's done()) and the procstat
      deltas of every process. A run without a WRKJSON line is recorded with "missing": true.
  report.py report --meta META_JSON --runs RUNS_JSONL --mem MEM_JSON
      prints the table, the memory and scale probes and the targets; exits 1 when the harness
      itself failed (a run with non-2xx answers, socket errors or no wrk summary; a failed smoke
      test), 0 otherwise, whether or not targets are met.
"""
import json
import statistics
import sys

MIB = 1048576

PATHS = ["direct", "ccrelay", "ssh", "haproxy"]
PATH_TITLE = {
    "direct": "direct mTLS",
    "ccrelay": "ccrelay",
    "ssh": "ssh -R",
    "haproxy": "haproxy",
}
# What "relay CPU" and "relay RSS" sum for each path: the processes that exist only because of the
# relay; never wrk, never the mTLS upstream nginx (identical on every path).
RELAY = {
    "direct": ["hop"],
    "ccrelay": ["gateway", "agent"],
    "ssh": ["ssh-edge", "sshd", "ssh"],
    "haproxy": ["pool-edge", "haproxy"],
}
POINTS = {
    # name: (mode, connections, keep-alive)
    "small-c1": ("small", 1, True),
    "small-c16": ("small", 16, True),
    "small-c64": ("small", 64, True),
    "big-c1": ("big", 1, True),
    "big-c16": ("big", 16, True),
    "big-c64": ("big", 64, True),
    "small-c16-close": ("small", 16, False),
    # keep-alive, each connection paced so the request rate matches small-c16-close's: the fair
    # baseline for "a new connection adds no agent work" (work per request grows as the rate falls,
    # since fewer requests share each loop turn, tunnel record and syscall)
    "small-c16-paced": ("small", 16, True),
}
POINT_ORDER = list(POINTS)


def parse_args(argv, names):
    out = {}
    i = 0
    while i < len(argv):
        k = argv[i]
        if not k.startswith("--") or k[2:] not in names or i + 1 >= len(argv):
            raise SystemExit("report.py: bad argument %r" % k)
        out[k[2:]] = argv[i + 1]
        i += 2
    missing = [n for n in names if n not in out]
    if missing:
        raise SystemExit("report.py: missing --%s" % missing[0])
    return out


def record(argv):
    a = parse_args(argv, ["path", "point", "rep", "wrk", "procs"])
    wrk = None
    with open(a["wrk"], errors="replace") as f:
        text = f.read()
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            wrk = json.loads(line[len("WRKJSON "):])
    try:
        with open(a["procs"]) as f:
            procs = json.load(f)
    except (OSError, ValueError):
        procs = {}
    rec = {"path": a["path"], "point": a["point"], "rep": int(a["rep"]), "wrk": wrk, "procs": procs}
    if wrk is None:
        rec["missing"] = True
        rec["wrk_output"] = text[-600:]
    print(json.dumps(rec))


# ---- report ------------------------------------------------------------------------------------

def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def run_metrics(r):
    """Per-run derived numbers."""
    w = r["wrk"]
    mode = POINTS[r["point"]][0]
    secs = w["duration_us"] / 1e6
    n = w["requests"]
    relay = sum(r["procs"].get(p, {}).get("cpu_s", 0.0) for p in RELAY[r["path"]])
    m = {
        "rps": n / secs if secs > 0 else 0.0,
        "mibps": n * 1.0 / secs if secs > 0 else 0.0,  # 1 MiB bodies
        "p50": w["p50_us"] / 1000.0,
        "p99": w["p99_us"] / 1000.0,
        "rss": sum(r["procs"].get(p, {}).get("rss_peak_kb", 0) for p in RELAY[r["path"]]) / 1024.0,
    }
    if n > 0:
        m["cpu_req_us"] = relay / n * 1e6
        m["cpu_mib_ms"] = relay / n * 1e3
    else:
        m["cpu_req_us"] = m["cpu_mib_ms"] = None
    mach = r["procs"].get("_machine")
    if mach and mach["wall_s"] > 0:
        m["foreign_pct"] = max(0.0, mach["busy_s"] - mach["self_s"]) / (mach["wall_s"] * mach["ncpu"]) * 100
    for p, v in r["procs"].items():
        if p.startswith("_"):
            continue
        if n > 0:
            m["proc_cpu_us:" + p] = v.get("cpu_s", 0.0) / n * 1e6
        m["proc_rss_mib:" + p] = v.get("rss_peak_kb", 0) / 1024.0
    m["mode"] = mode
    return m


def fmt(v, kind):
    if v is None:
        return "-"
    if kind == "int":
        return "{:,.0f}".format(v)
    if kind == "ms":
        return "%.3f" % v if v < 10 else "%.1f" % v
    if kind == "f1":
        return "%.1f" % v
    if kind == "f2":
        return "%.2f" % v
    return str(v)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return "%.2fx" % (a / b)


def report(argv):
    a = parse_args(argv, ["meta", "runs", "mem"])
    with open(a["meta"]) as f:
        meta = json.load(f)
    runs = []
    with open(a["runs"]) as f:
        for line in f:
            if line.strip():
                runs.append(json.loads(line))
    with open(a["mem"]) as f:
        mem = json.load(f)

    harness_errors = list(meta.get("harness_errors", [])) + list(mem.get("harness_errors", []))
    by = {}
    for r in runs:
        tag = "%s %s rep %d" % (r["path"], r["point"], r["rep"])
        if r.get("missing"):
            harness_errors.append("%s: wrk printed no summary: %s" % (tag, r.get("wrk_output", "").strip()[-300:]))
            continue
        w = r["wrk"]
        errs = {k: w[k] for k in ("err_connect", "err_read", "err_write", "err_timeout", "err_status") if w[k]}
        if errs:
            harness_errors.append("%s: %s (of %d requests)" % (
                tag, ", ".join("%s=%d" % (k[4:] if k != "err_status" else "non-2xx/3xx", v)
                               for k, v in errs.items()), w["requests"]))
        if w["requests"] == 0:
            harness_errors.append("%s: no request completed" % tag)
            continue
        by.setdefault((r["path"], r["point"]), []).append(run_metrics(r))

    def m(path, point, key, agg=med):
        rs = by.get((path, point))
        if not rs:
            return None
        return agg([x.get(key) for x in rs])

    def mx(xs):
        xs = [x for x in xs if x is not None]
        return max(xs) if xs else None

    paths = [p for p in PATHS if p in meta["paths"]]
    points = [p for p in POINT_ORDER if p in meta["points"]]
    out = []
    w = out.append
    w("ccrelay benchmark (%s mode), %s" % (meta["mode"], meta["date"]))
    w("machine:  %s; %s CPUs (nproc); %s; kernel %s" % (meta["host"], meta["nproc"], meta["cpu_model"],
                                                     meta["kernel"]))
    w("software: ccrelay %s; %s; %s; %s; %s" % (meta["ccrelay_commit"], meta["nginx"], meta["haproxy"],
                                                meta["ssh"], meta["wrk"]))
    w("method:   wrk -t1, %d s per run, %d repetition(s), median across repetitions (RSS: max); small = "
      "%d-byte JSON POST in, %d-byte JSON out; big = 1 MiB GET; everything on 127.0.0.1." % (
          meta["duration"], meta["reps"], meta["small_body"], meta["small_answer"]))
    w("relay CPU / relay RSS = utime+stime / sampled VmRSS (from /proc, whole process trees) of the processes "
      "named below; the upstream nginx and wrk never count:")
    tw_ = max(len(PATH_TITLE[p]) for p in paths)
    for p in paths:
        w("  %s = %-22s %s" % (PATH_TITLE[p].ljust(tw_), " + ".join(RELAY[p]), meta["path_desc"][p]))
    w("notes:    " + meta["notes"])
    w("")

    cols = [PATH_TITLE[p] for p in paths]
    ratio_cols = []
    if "ccrelay" in paths:
        ratio_cols = ["cc/" + PATH_TITLE[p].split()[0] for p in paths if p != "ccrelay"]
    head = ["point", "metric"] + cols + ratio_cols
    rows = []
    metrics_small = [("req/s", "rps", "int"), ("p50 ms", "p50", "ms"), ("p99 ms", "p99", "ms"),
                     ("relay CPU us/req", "cpu_req_us", "f1"), ("relay RSS MiB (max)", "rss", "f1"),
                     ("others' CPU % (noise)", "foreign_pct", "f1")]
    metrics_big = [("MiB/s", "mibps", "int"), ("p50 ms", "p50", "ms"),
                   ("p99 ms", "p99", "ms"), ("relay CPU ms/MiB", "cpu_mib_ms", "f2"),
                   ("relay RSS MiB (max)", "rss", "f1"), ("others' CPU % (noise)", "foreign_pct", "f1")]
    for pt in points:
        mode, c, ka = POINTS[pt]
        label = "%s c=%d%s" % (mode, c, "" if ka else " new-conn")
        if pt.endswith("-paced"):
            label += " paced"
        first = True
        for title, key, kind in (metrics_big if mode == "big" else metrics_small):
            agg = mx if key == "rss" else med
            vals = {p: m(p, pt, key, agg) for p in paths}
            row = [label if first else "", title] + [fmt(vals[p], kind) for p in paths]
            if "ccrelay" in paths:
                row += [ratio(vals["ccrelay"], vals[p]) if key != "foreign_pct" else ""
                        for p in paths if p != "ccrelay"]
            rows.append(row)
            first = False
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]

    def line(r):
        return "  ".join(str(x).ljust(widths[i]) if i < 2 else str(x).rjust(widths[i]) for i, x in enumerate(r))
    w(line(head))
    w("  ".join("-" * x for x in widths))
    for r in rows:
        w(line(r))
    w("(ratios are ccrelay / other for every metric: above 1 is better for req/s and MiB/s, worse for ms, "
      "CPU and RSS. \"others' CPU\" is the share of all CPUs used during the run by processes this harness did "
      "not start: req/s and latency of a run with more than a few % are disturbed; CPU per request much less so)")
    fp = [(x.get("foreign_pct"), key) for key, xs in by.items() for x in xs if x.get("foreign_pct") is not None]
    if fp:
        worst = max(fp)
        w("machine load from processes this harness did not start, during the runs: median %.1f%%, max %.1f%% "
          "(%s %s) of all CPUs" % (statistics.median(v for v, _ in fp), worst[0], worst[1][0], worst[1][1]))
    w("")

    # Per-process CPU: where the time goes.
    w("CPU per process (median us per request for small points, ms per MiB for big ones; upstream = the "
      "mTLS nginx, for reference):")
    procs_by_path = {p: RELAY[p] + ["upstream"] for p in paths}
    ph = ["path", "process"] + ["%s c=%d%s" % (POINTS[pt][0], POINTS[pt][1],
                                               " paced" if pt.endswith("-paced") else "" if POINTS[pt][2] else " nc")
                                for pt in points]
    prow = []
    for p in paths:
        for proc in procs_by_path[p]:
            r = [PATH_TITLE[p], proc]
            for pt in points:
                v = m(p, pt, "proc_cpu_us:" + proc)
                if v is not None and POINTS[pt][0] == "big":
                    r.append(fmt(v / 1000.0, "f2"))
                else:
                    r.append(fmt(v, "f1"))
            prow.append(r)
    pw = [max(len(str(r[i])) for r in prow + [ph]) for i in range(len(ph))]
    w("  ".join(str(x).ljust(pw[i]) if i < 2 else str(x).rjust(pw[i]) for i, x in enumerate(ph)))
    for r in prow:
        w("  ".join(str(x).ljust(pw[i]) if i < 2 else str(x).rjust(pw[i]) for i, x in enumerate(r)))
    w("")

    # Memory and scale probes.
    w("Memory (RSS, KiB; each process tree's VmRSS; VmHWM = its peak since start):")
    idle0, idle1, idle2 = (mem.get(k, {}) for k in ("idle_fresh", "idle_after_wrk", "idle_after_probes"))
    last = idle2 or idle1
    mh = ["process", "idle fresh", "idle after wrk runs", "idle after scale probes", "VmHWM at end"]
    mrows = []
    for name in meta["procs"]:
        mrows.append([name] + [str(d.get(name, {}).get("rss_kb", "-")) for d in (idle0, idle1, idle2)]
                     + [str(last.get(name, {}).get("hwm_kb", "-"))])
    mrows.append(["(settled after, s)"] + [str(next(iter(d.values()), {}).get("settle_s", "-")) if d else "-"
                                           for d in (idle0, idle1, idle2)] + [""])
    mw = [max(len(r[i]) for r in mrows + [mh]) for i in range(len(mh))]
    w("  ".join(x.ljust(mw[i]) if i == 0 else x.rjust(mw[i]) for i, x in enumerate(mh)))
    for r in mrows:
        w("  ".join(x.ljust(mw[i]) if i == 0 else x.rjust(mw[i]) for i, x in enumerate(r)))
    w("(idle columns: taken once every process's RSS has stopped moving, see procstat.py settle)")
    big64 = {}
    if "big-c64" in points and "ccrelay" in paths:
        for proc in ("gateway", "agent"):
            big64[proc] = m("ccrelay", "big-c64", "proc_rss_mib:" + proc, mx)
        w("ccrelay RSS with 64 concurrent 1 MiB transfers (peak sampled VmRSS during big c=64 runs): gateway "
          "%s MiB, agent %s MiB" % (fmt(big64["gateway"], "f1"), fmt(big64["agent"], "f1")))
    probes = mem.get("probes", {})
    for key in ("streams_2000", "streams_10000"):
        pr = probes.get(key)
        if not pr:
            continue
        n = pr["n"]
        cl = pr.get("client", {})
        line_ = "%d concurrent streams on one tunnel (GET /hold, held at the upstream until all arrived): " % n
        line_ += "%d/%d held at once, %d answered 2xx" % (pr.get("held_max", 0), n, cl.get("ok", 0))
        if cl.get("statuses"):
            line_ += ", statuses %s" % json.dumps(cl["statuses"], sort_keys=True)
        if cl.get("errors"):
            line_ += ", client errors %s" % json.dumps(cl["errors"], sort_keys=True)
        line_ += "; setup %.1f s, total %.1f s" % (pr.get("setup_s", 0), cl.get("seconds", 0))
        w(line_)
        for proc, what in (("gateway", "public TLS connection"), ("agent", "upstream TLS connection")):
            idle_kb = pr["idle"][proc]["rss_kb"]
            busy_kb = pr["busy"][proc]["rss_kb"]
            w("  %-7s RSS %d KiB before -> %d KiB with the streams open: %.2f KiB per stream (its %s "
              "included)" % (proc, idle_kb, busy_kb, (busy_kb - idle_kb) / float(n), what))
    cs = probes.get("conn_then_stream_2000")
    beyond = {}
    if cs:
        n = cs["n"]
        w("%d caller connections, first idle (TLS handshake done, nothing sent), then each with a held stream: "
          "%d/%d open, %d/%d held, %d answered 2xx" % (n, cs["open"], n, cs["held"], n, cs["client"].get("ok", 0)))
        for proc, extra in (("gateway", ""), ("agent", " (its upstream TLS connection included)")):
            b0, b1, b2 = (cs[k][proc]["rss_kb"] for k in ("before", "conns", "streams"))
            w("  %-7s RSS %d -> %d KiB with the idle connections (%.2f KiB each) -> %d KiB with the streams: "
              "%.2f KiB per stream beyond its caller connection%s" % (proc, b0, b1, (b1 - b0) / float(n), b2,
                                                                      (b2 - b1) / float(n), extra))
            if cs["open"] >= n and cs["held"] >= n:
                beyond[proc] = (b2 - b1) / float(n)
    for err in mem.get("probe_notes", []):
        w("probe note: " + err)
    w("")

    # Targets (issue 4), computed.
    res = []

    def target(desc, ok, detail):
        res.append((desc, ok, detail))

    def have(*vals):
        return all(v is not None for v in vals)

    cc = lambda pt, key: m("ccrelay", pt, key)  # noqa: E731
    rps64 = cc("small-c64", "rps")
    target("small c=64 >= 28,000 req/s", None if rps64 is None else rps64 >= 28000, fmt(rps64, "int"))
    for peer, need, what in (("direct", 0.58, ">= 58% of direct"), ("haproxy", 1.3, ">= 1.3x HAProxy pool"),
                             ("ssh", 3.5, ">= 3.5x ssh -R")):
        pv = m(peer, "small-c64", "rps")
        ok = None if not have(rps64, pv) else rps64 >= need * pv
        target("small c=64 " + what, ok, "%s vs %s = %s" % (fmt(rps64, "int"), fmt(pv, "int"), ratio(rps64, pv)))
    for pt in ("small-c16", "small-c64"):
        v = cc(pt, "cpu_req_us")
        target("gateway+agent CPU <= 40 us/request (%s)" % pt, None if v is None else v <= 40, fmt(v, "f1") + " us")
    for pt in ("big-c16", "big-c64"):
        v = cc(pt, "cpu_mib_ms")
        target("gateway+agent CPU <= 2.0 ms/MiB (%s)" % pt, None if v is None else v <= 2.0, fmt(v, "f2") + " ms")
    p50, p99 = cc("small-c1", "p50"), cc("small-c1", "p99")
    target("small c=1 p50 <= 0.20 ms", None if p50 is None else p50 <= 0.20, fmt(p50, "ms") + " ms")
    target("small c=1 p99 <= 0.50 ms", None if p99 is None else p99 <= 0.50, fmt(p99, "ms") + " ms")
    for pt in ("small-c1", "big-c1"):
        a50, a99 = cc(pt, "p50"), cc(pt, "p99")
        ok = None if not have(a50, a99) else (a99 <= 3 * a50 and a99 < 40)
        target("no 40 ms-class stall, %s: p99 <= 3x p50 (and < 40 ms)" % pt, ok,
               "p50 %s ms, p99 %s ms" % (fmt(a50, "ms"), fmt(a99, "ms")))
    v = cc("big-c16", "mibps")
    target("1 MiB c=16 >= 575 MiB/s", None if v is None else v >= 575, fmt(v, "int") + " MiB/s")
    v = cc("big-c1", "p50")
    target("single 1 MiB response c=1 p50 <= 2.5 ms", None if v is None else v <= 2.5, fmt(v, "ms") + " ms")
    nc = cc("small-c16-close", "proc_cpu_us:agent")
    ka, kind = cc("small-c16-paced", "proc_cpu_us:agent"), "keep-alive at the same rate"
    if ka is None:
        ka, kind = cc("small-c16", "proc_cpu_us:agent"), "keep-alive at full rate"
    ok = None if not have(ka, nc) else nc <= 1.10 * ka + 2.0
    target("new client connection per request adds no agent work (c=16)", ok,
           "agent %s us/req new-conn vs %s %s (met if <= 1.1x + 2 us)" % (fmt(nc, "f1"), fmt(ka, "f1"), kind))
    for proc in ("gateway", "agent"):
        for title, snaps in (("fresh and after the wrk runs", (idle0, idle1)), ("after the scale probes", (idle2,))):
            vals = [d.get(proc, {}).get("rss_kb") for d in snaps]
            vals = [x for x in vals if x is not None]
            v = max(vals) / 1024.0 if vals else None
            target("idle RSS <= 10 MiB (%s, %s)" % (proc, title), None if v is None else v <= 10,
                   fmt(v, "f1") + " MiB")
    pr = probes.get("streams_2000")
    for proc in ("gateway", "agent"):
        v = None
        if pr and pr.get("held_max", 0) >= pr["n"]:
            v = (pr["busy"][proc]["rss_kb"] - pr["idle"][proc]["rss_kb"]) / float(pr["n"])
        target("<= 2 KiB per idle stream (%s, 2,000 streams)" % proc, None if v is None else v <= 2.0,
               fmt(v, "f2") + " KiB" if v is not None else ("probe incomplete" if pr else "-"))
        # The stream alone, on connections already open (as an ssh channel's cost is counted); on the
        # agent that still includes the upstream TLS connection each held request occupies.
        b = beyond.get(proc)
        target("<= 2 KiB per idle stream beyond its caller connection (%s)" % proc, None if b is None else b <= 2.0,
               fmt(b, "f2") + " KiB" if b is not None else "-")
    for proc in ("gateway", "agent"):
        v = big64.get(proc)
        target("<= 64 MiB with 64 concurrent 1 MiB transfers (%s)" % proc, None if v is None else v <= 64,
               fmt(v, "f1") + " MiB")
    pr = probes.get("streams_10000")
    ok = None
    detail = "-"
    if pr:
        cl = pr.get("client", {})
        ok = cl.get("ok", 0) == pr["n"] and pr.get("held_max", 0) >= pr["n"]
        detail = "%d/%d answered 2xx, %d held at once" % (cl.get("ok", 0), pr["n"], pr.get("held_max", 0))
    target("10,000 concurrent streams on one tunnel complete without error", ok, detail)

    w("Targets (issue 4), computed from this run:")
    tw = max(len(d) for d, _, _ in res)
    met = sum(1 for _, ok, _ in res if ok is True)
    missed = sum(1 for _, ok, _ in res if ok is False)
    for d, ok, detail in res:
        w("  %-6s %s  %s" % ({True: "MET", False: "MISSED", None: "n/a"}[ok], d.ljust(tw), detail))
    w("  %d met, %d missed, %d not measured in this mode" % (met, missed, len(res) - met - missed))
    w("")
    if harness_errors:
        w("HARNESS ERRORS (the numbers above are not trustworthy):")
        for e in harness_errors:
            w("  !! " + e)
    else:
        w("harness: every run answered 2xx with no socket error")
    print("\n".join(out))
    return 1 if harness_errors else 0


def main(argv):
    if argv and argv[0] == "record":
        record(argv[1:])
        return 0
    if argv and argv[0] == "report":
        return report(argv[1:])
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
