#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Opens many TCP connections that never complete a TLS handshake, and holds them.

  flood.py --port P --count N [--sources 127.0.0.2,127.0.0.3] [--mode silent|slowloris]
           [--hold SECONDS] [--ready FILE]

silent: connect and send nothing. slowloris: send the first bytes of a TLS ClientHello, one byte
per --interval seconds on every connection. Connections are spread round-robin over the source
addresses (loopback only). Everything is bounded: --count connections, --hold seconds (after which
every socket is closed). Writes "ready" to --ready once every connect was tried, then prints a JSON
summary on exit: how many connected, how many the peer closed while held.
"""
import argparse
import errno
import json
import os
import resource
import select
import socket
import sys
import time

# A TLS 1.2 record header and the start of a ClientHello: bytes a real client would send first.
HELLO = bytes.fromhex("16030100f4" "010000f0" "0303") + bytes(range(32)) + b"\x00"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--sources", default="")
    ap.add_argument("--mode", choices=["silent", "slowloris"], default="silent")
    ap.add_argument("--interval", type=float, default=0.5)
    ap.add_argument("--hold", type=float, default=10.0)
    ap.add_argument("--ready", default="")
    a = ap.parse_args()
    if a.count > 20000 or a.hold > 120:
        sys.exit("flood.py: bounded by design: at most 20000 connections held at most 120 s")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.count + 64), hard))
    sources = [s for s in a.sources.split(",") if s] or [None]
    for s in sources:
        if s is not None and not s.startswith("127."):
            sys.exit("flood.py: loopback sources only")

    socks = []
    failed = 0
    deadline = time.monotonic() + a.hold
    # Connects go out in batches and are awaited together: one that a full accept queue drops is
    # given up after a second without holding up the rest.
    i = 0
    while i < a.count and time.monotonic() < deadline:
        batch = []
        for _ in range(min(200, a.count - i)):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            src = sources[i % len(sources)]
            i += 1
            try:
                if src is not None:
                    s.bind((src, 0))
                s.setblocking(False)
                r = s.connect_ex((a.host, a.port))
                if r not in (0, errno.EINPROGRESS):
                    raise OSError(r, os.strerror(r))
                batch.append(s)
            except OSError:
                failed += 1
                s.close()
        pending = set(batch)
        until = time.monotonic() + 1.0
        while pending and time.monotonic() < until:
            p = select.poll()
            byfd = {s.fileno(): s for s in pending}
            for fd in byfd:
                p.register(fd, select.POLLOUT)
            for fd, _ in p.poll(max(0, int((until - time.monotonic()) * 1000))):
                s = byfd[fd]
                pending.discard(s)
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                    socks.append(s)
                else:
                    failed += 1
                    s.close()
        for s in pending:
            failed += 1
            s.close()
    if a.ready:
        with open(a.ready, "w") as f:
            f.write("ready\n")

    closed = set()
    pos = 0
    while time.monotonic() < deadline and len(closed) < len(socks):
        if a.mode == "slowloris" and pos < len(HELLO):
            for i, s in enumerate(socks):
                if i in closed:
                    continue
                try:
                    s.send(HELLO[pos:pos + 1])
                except OSError:
                    closed.add(i)
            pos += 1
        # Notice connections the peer closed (readable with EOF or reset).
        index = {s.fileno(): i for i, s in enumerate(socks) if i not in closed}
        open_socks = [socks[i] for i in index.values()]
        p = select.poll()
        for s in open_socks:
            p.register(s.fileno(), select.POLLIN)
        for fd, _ in p.poll(0):
            s = socks[index[fd]]
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                closed.add(index[fd])
        time.sleep(min(a.interval, max(0.0, deadline - time.monotonic())))
    for s in socks:
        s.close()
    print(json.dumps({"connected": len(socks), "failed": failed, "closed_by_peer": len(closed)}))


if __name__ == "__main__":
    main()
