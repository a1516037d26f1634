#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""CPU and memory of process trees, from /proc, for tests/bench/run.sh.

Each NAME=PID argument names a process and everything descended from it at sampling time (sshd forks
a child per connection; nginx runs with master_process off, so its tree is one process).

  procstat.py snap NAME=PID...
      one JSON object {NAME: {"cpu_s", "rss_kb", "hwm_kb", "nproc"}} on stdout.
  procstat.py settle [--max 30] NAME=PID...
      idle RSS: samples every second until no tree's RSS has moved by more than 1 % (at least 64 KiB)
      over the last two seconds, or --max seconds pass; prints what snap prints, each entry with
      "settle_s" (seconds waited; equal to --max means it never settled). A process gives memory back
      over a few seconds after a load (connection pools drain, the heap is trimmed), so an instant
      right after a run measures the tail of the load, not the idle process.
  procstat.py watch --out FILE --ready FILE [--interval 0.25] [--max 600] [--self PID] NAME=PID...
      snapshot, touch the ready FILE, sample VmRSS every interval until SIGTERM (or --max seconds),
      snapshot again, write {NAME: {"cpu_s" (delta), "rss_peak_kb" (max sampled sum of VmRSS),
      "rss_end_kb", "hwm_end_kb" (sum of VmHWM: peak since each process started), "nproc"}}.

cpu_s is utime + stime + cutime + cstime summed over the tree's live processes: a child's time is in
its own counters while it lives and in its parent's c* counters once reaped, so deltas stay right.
"""
import json
import os
import signal
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def read_stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    rest = s[s.rindex(")") + 2:].split()
    # fields after the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return int(rest[1]), int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])


def read_mem(pid):
    rss = hwm = 0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


def children_map():
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid, _ = read_stat(int(d))
            except (OSError, ValueError, IndexError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def tree(root, kids):
    out, unvisited = [], [root]
    while unvisited:
        p = unvisited.pop()
        out.append(p)
        unvisited.extend(kids.get(p, []))
    return out


def snap(targets):
    kids = children_map()
    res = {}
    for name, pid in targets:
        cpu = rss = hwm = n = 0
        for p in tree(pid, kids):
            try:
                _, t = read_stat(p)
            except (OSError, ValueError, IndexError):
                continue
            r, h = read_mem(p)
            cpu += t
            rss += r
            hwm += h
            n += 1
        res[name] = {"cpu_s": cpu / TICK, "rss_kb": rss, "hwm_kb": hwm, "nproc": n}
    return res


def machine_busy():
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...: busy = all but idle and iowait
    return (sum(v[:8]) - v[3] - v[4]) / TICK


def parse_targets(args):
    out = []
    for a in args:
        name, pid = a.split("=", 1)
        out.append((name, int(pid)))
    return out


def watch(argv):
    out = ready = self_pid = None
    interval, limit = 0.25, 600.0
    rest = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--out", "--ready", "--interval", "--max", "--self"):
            v = argv[i + 1]
            i += 2
            if a == "--out":
                out = v
            elif a == "--ready":
                ready = v
            elif a == "--interval":
                interval = float(v)
            elif a == "--self":
                self_pid = int(v)
            else:
                limit = float(v)
            continue
        rest.append(a)
        i += 1
    targets = parse_targets(rest)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    selft = [("_self", self_pid)] if self_pid else []
    first = snap(targets + selft)
    w0, b0 = time.monotonic(), machine_busy()
    peak = {n: first[n]["rss_kb"] for n, _ in targets}
    with open(ready, "w") as f:
        f.write("ready\n")
    t_end = time.monotonic() + limit
    while not stop and time.monotonic() < t_end:
        time.sleep(interval)
        s = snap(targets)
        for n, _ in targets:
            peak[n] = max(peak[n], s[n]["rss_kb"])
    last = snap(targets + selft)
    res = {}
    if selft:
        res["_machine"] = {"wall_s": round(time.monotonic() - w0, 3), "busy_s": round(machine_busy() - b0, 3),
                           "self_s": round(last["_self"]["cpu_s"] - first["_self"]["cpu_s"], 3),
                           "ncpu": os.cpu_count()}
    for n, _ in targets:
        peak[n] = max(peak[n], last[n]["rss_kb"])
        res[n] = {"cpu_s": round(last[n]["cpu_s"] - first[n]["cpu_s"], 3), "rss_peak_kb": peak[n],
                  "rss_end_kb": last[n]["rss_kb"], "hwm_end_kb": last[n]["hwm_kb"], "nproc": last[n]["nproc"]}
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(res, f)
    os.replace(tmp, out)


def settle(argv):
    limit = 30.0
    if argv[:1] == ["--max"]:
        limit, argv = float(argv[1]), argv[2:]
    targets = parse_targets(argv)
    t0 = time.monotonic()
    history = [snap(targets)]
    while time.monotonic() - t0 < limit:
        if len(history) >= 3:
            window = history[-3:]
            if all(max(h[n]["rss_kb"] for h in window) - min(h[n]["rss_kb"] for h in window)
                   <= max(64, window[-1][n]["rss_kb"] // 100) for n, _ in targets):
                break
        time.sleep(1.0)
        history.append(snap(targets))
    res = history[-1]
    waited = round(time.monotonic() - t0, 1)
    for n, _ in targets:
        res[n]["settle_s"] = waited
    return res


def main(argv):
    if argv and argv[0] == "settle":
        json.dump(settle(argv[1:]), sys.stdout)
        sys.stdout.write("\n")
    elif argv and argv[0] == "snap":
        json.dump(snap(parse_targets(argv[1:])), sys.stdout)
        sys.stdout.write("\n")
    elif argv and argv[0] == "watch":
        watch(argv[1:])
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
