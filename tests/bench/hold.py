#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Scale probes for tests/bench/run.sh: an HTTPS upstream that holds requests, and a client that opens
many connections with one request each.

  hold.py upstream --port P --cert PEM --key PEM --client-ca PEM --state FILE [--max-hold 150]
      mTLS HTTPS/1.1 server (asyncio). GET /hold... is answered only when released (SIGUSR1 releases
      every request held at that moment; later ones wait for the next SIGUSR1) or after --max-hold
      seconds; any other path is answered at once. Keep-alive. Every 0.2 s FILE is rewritten with
      {"held": N, "served": N, "conns": N, "handshake_errors": N}. Prints "listening PORT".

  hold.py client --port P --n N --host HOST --path PATH --cacert PEM --state FILE --out FILE [--wait-signal]
      N TLS connections to 127.0.0.1:P, one request each (at most --parallel handshakes in flight),
      then waits for every answer (at most --timeout s). FILE gets {"sent": N} every 0.2 s; --out gets
      {"n", "ok" (2xx answers), "statuses", "errors", "seconds"} at the end. Exit 0 even when some
      requests failed: the harness judges.
      --wait-signal: every connection waits after its handshake, idle, until SIGUSR1, and only then
      sends its request ("sent" counts connections open): the same connections measured idle, then
      each carrying a held stream.

Standard library only; every wait is bounded.
"""
import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import time


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)


async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    return lines[0], headers


# ---- upstream ----------------------------------------------------------------------------------

class Upstream:
    def __init__(self, opts):
        self.opts = opts
        self.held = 0
        self.served = 0
        self.conns = 0
        self.hs_errors = 0
        self.release = asyncio.Event()

    def do_release(self):
        self.release.set()
        self.release = asyncio.Event()

    async def handle(self, reader, writer):
        self.conns += 1
        try:
            while True:
                try:
                    start, headers = await read_head(reader)
                except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, asyncio.LimitOverrunError):
                    return
                parts = start.split(" ")
                path = parts[1] if len(parts) > 1 else "/"
                n = int(headers.get("content-length", "0") or "0")
                if n:
                    await reader.readexactly(n)
                if path.startswith("/hold"):
                    self.held += 1
                    ev = self.release
                    try:
                        await asyncio.wait_for(ev.wait(), self.opts.max_hold)
                    except asyncio.TimeoutError:
                        pass
                    self.held -= 1
                body = b'{"status":"ok","source":"hold"}\n'
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(body), body))
                await writer.drain()
                self.served += 1
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, ssl.SSLError):
            return
        finally:
            self.conns -= 1
            try:
                writer.close()
            except Exception:
                pass

    async def state_loop(self):
        while True:
            write_json(self.opts.state, {"held": self.held, "served": self.served, "conns": self.conns,
                                         "handshake_errors": self.hs_errors})
            await asyncio.sleep(0.2)

    async def main(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.opts.cert, self.opts.key)
        ctx.load_verify_locations(self.opts.client_ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        loop = asyncio.get_running_loop()

        def on_exc(lp, context):
            # Handshake failures land here; count them instead of printing thousands of tracebacks.
            self.hs_errors += 1

        loop.set_exception_handler(on_exc)
        srv = await asyncio.start_server(self.handle, "127.0.0.1", self.opts.port, ssl=ctx, backlog=4096,
                                         ssl_handshake_timeout=120, limit=65536)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGUSR1, self.do_release)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        print("listening %d" % srv.sockets[0].getsockname()[1], flush=True)
        st = asyncio.ensure_future(self.state_loop())
        await stop.wait()
        st.cancel()
        srv.close()


# ---- client ------------------------------------------------------------------------------------

async def client_main(opts):
    ctx = ssl.create_default_context(cafile=opts.cacert)
    gate = asyncio.Semaphore(opts.parallel)
    sent = 0
    statuses = {}
    errors = {}
    writers = []
    t0 = time.monotonic()
    release = asyncio.Event()
    if opts.wait_signal:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, release.set)
    request = ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: ccrelay-bench-hold\r\n\r\n" % (opts.path, opts.host)).encode()

    async def one():
        nonlocal sent
        try:
            async with gate:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", opts.port, ssl=ctx, server_hostname=opts.server_name,
                                            ssl_handshake_timeout=opts.timeout),
                    opts.timeout)
                writers.append(writer)
                if not opts.wait_signal:
                    writer.write(request)
                    await writer.drain()
                sent += 1
            if opts.wait_signal:
                await release.wait()
                writer.write(request)
                await writer.drain()
            start, headers = await read_head(reader)
            n = int(headers.get("content-length", "0") or "0")
            if n:
                await reader.readexactly(n)
            code = start.split(" ")[1] if " " in start else "?"
            statuses[code] = statuses.get(code, 0) + 1
        except Exception as e:  # every failure is counted by kind, the harness reports them
            k = type(e).__name__
            errors[k] = errors.get(k, 0) + 1

    async def state_loop():
        while True:
            write_json(opts.state, {"sent": sent})
            await asyncio.sleep(0.2)

    st = asyncio.ensure_future(state_loop())
    tasks = [asyncio.ensure_future(one()) for _ in range(opts.n)]
    done, pending = await asyncio.wait(tasks, timeout=opts.timeout)
    for t in pending:
        t.cancel()
    if pending:
        errors["unfinished"] = len(pending)
    st.cancel()
    write_json(opts.state, {"sent": sent})
    for w in writers:
        try:
            w.close()
        except Exception:
            pass
    ok = sum(v for k, v in statuses.items() if k.startswith("2"))
    write_json(opts.out, {"n": opts.n, "ok": ok, "statuses": statuses, "errors": errors,
                          "seconds": round(time.monotonic() - t0, 2)})


def main(argv):
    p = argparse.ArgumentParser(prog="hold.py")
    sub = p.add_subparsers(dest="cmd", required=True)
    u = sub.add_parser("upstream")
    u.add_argument("--port", type=int, default=0)
    u.add_argument("--cert", required=True)
    u.add_argument("--key", required=True)
    u.add_argument("--client-ca", required=True)
    u.add_argument("--state", required=True)
    u.add_argument("--max-hold", type=float, default=150)
    c = sub.add_parser("client")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--host", default="cms.example.com")
    c.add_argument("--server-name", default="localhost")
    c.add_argument("--path", default="/hold")
    c.add_argument("--cacert", required=True)
    c.add_argument("--state", required=True)
    c.add_argument("--out", required=True)
    c.add_argument("--parallel", type=int, default=100)
    c.add_argument("--timeout", type=float, default=180)
    c.add_argument("--wait-signal", action="store_true")
    o = p.parse_args(argv)
    if o.cmd == "upstream":
        asyncio.run(Upstream(o).main())
    else:
        asyncio.run(client_main(o))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
