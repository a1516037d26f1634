#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Bounded load for end-to-end tests: COUNT HTTPS calls, CONCURRENCY at a time, each on a new
connection (so a TCP load balancer spreads them), within at most --max-seconds.

Every call is one line in --out: "start_s end_s status error" (times from time.time(), status 0 when
no response arrived). The last line on stdout is "total=N ok=N failed=N". The exit status is 0 even
when calls fail: the test judges them.

  loadcalls.py --port P --host cms.example.com --path /connector/mdm.cgi --cacert CA \
               --count 1000 --concurrency 8 --out calls.txt [--body JSON] [--pace-ms MS]
"""
import argparse
import http.client
import socket
import ssl
import sys
import threading
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--addr", default="127.0.0.1")
    ap.add_argument("--host", required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--cacert", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--max-seconds", type=float, default=120)
    ap.add_argument("--pace-ms", type=float, default=0, help="pause per worker between calls")
    ap.add_argument("--body", default='{"action":"test"}')
    ap.add_argument("--out", required=True)
    a = ap.parse_args()

    ctx = ssl.create_default_context(cafile=a.cacert)
    lock = threading.Lock()
    state = {"next": 0}
    results = []
    deadline = time.time() + a.max_seconds

    def one():
        t0 = time.time()
        status, err = 0, "-"
        conn = None
        try:
            sock = socket.create_connection((a.addr, a.port), timeout=15)
            tls = ctx.wrap_socket(sock, server_hostname=a.host)
            conn = http.client.HTTPSConnection(a.host, a.port, timeout=15, context=ctx)
            conn.sock = tls
            body = a.body.encode()
            conn.request("POST", a.path, body=body,
                         headers={"Content-Type": "application/json", "Connection": "close"})
            resp = conn.getresponse()
            resp.read()
            status = resp.status
        except Exception as e:  # noqa: BLE001 - every failure is a result
            err = type(e).__name__ + ":" + str(e).replace(" ", "_")[:120]
        finally:
            if conn is not None:
                conn.close()
        return t0, time.time(), status, err

    def worker():
        while True:
            with lock:
                if state["next"] >= a.count or time.time() > deadline:
                    return
                state["next"] += 1
            r = one()
            with lock:
                results.append(r)
            if a.pace_ms:
                time.sleep(a.pace_ms / 1000)

    threads = [threading.Thread(target=worker) for _ in range(a.concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.sort()
    ok = sum(1 for r in results if r[2] == 200)
    with open(a.out, "w") as f:
        for t0, t1, st, err in results:
            f.write("%.6f %.6f %d %s\n" % (t0, t1, st, err))
    print("total=%d ok=%d failed=%d" % (len(results), ok, len(results) - ok))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
