#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Slow peers for the flow-control tests (tests/e2e/test_e2e_slow_readers.sh). Every mode is bounded
in connections and time, and prints one line per event on stdout (flushed), so the test can wait for
it in the log.

  slowpeer.py readers N PORT HOST PATH CAFILE SECONDS
      N callers over TLS to 127.0.0.1:PORT (SNI and Host: HOST) that send `GET PATH` and then read
      1 KiB every 2 s (with a 16 KiB receive buffer), for SECONDS. Prints "head N" once every caller
      has its response head, then "done" at the end.
  slowpeer.py uploaders N PORT HOST PATH CAFILE BYTES SECONDS
      N callers that POST BYTES (Content-Length) as fast as the relay takes them, for at most SECONDS.
      Prints "started N", and per caller "upload I sent B status S" when it ends.
  slowpeer.py nonreader PORT HOST PATH CAFILE WAIT_SECONDS MAX_SECONDS
      One caller that sends `GET PATH`, reads nothing for WAIT_SECONDS, then reads as fast as it can
      until the connection ends or MAX_SECONDS pass. Prints "got B end E" (E: eof, reset, timeout).
  slowpeer.py upstream CERT KEY SECONDS
      A TLS server on 127.0.0.1 (free port) that reads each request head and never reads a body byte
      (16 KiB receive buffer); connections are held until SECONDS pass. Prints "listening PORT" and
      "head N" for each request head it read.
"""
import socket
import ssl
import sys
import threading
import time


def out(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def connect(port, host, cafile, rcvbuf=None, timeout=10):
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.connect(("127.0.0.1", port))
    s = ctx.wrap_socket(raw, server_hostname=host)
    return s


def read_head(s):
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(1024)
        if not d:
            raise ConnectionError("closed before the head")
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head.decode("latin-1"), rest


def readers(n, port, host, path, cafile, seconds):
    deadline = time.monotonic() + seconds
    heads = []
    lock = threading.Lock()

    def one():
        try:
            s = connect(port, host, cafile, rcvbuf=16384)
            s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
            read_head(s)
            with lock:
                heads.append(1)
                if len(heads) == n:
                    out("head %d" % n)
            while time.monotonic() < deadline:
                time.sleep(2)
                s.settimeout(max(0.1, deadline - time.monotonic()))
                if not s.recv(1024):
                    break
        except (OSError, ssl.SSLError, ConnectionError) as e:
            out("reader error %s" % e)

    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(0.1, deadline - time.monotonic() + 5))
    out("done")


def uploaders(n, port, host, path, cafile, nbytes, seconds):
    deadline = time.monotonic() + seconds
    block = b"u" * 65536

    def one(i):
        sent, status = 0, "-"
        try:
            s = connect(port, host, cafile, timeout=seconds)
            s.sendall(("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n" % (path, host, nbytes)).encode())
            while sent < nbytes and time.monotonic() < deadline:
                k = min(len(block), nbytes - sent)
                s.settimeout(max(0.1, deadline - time.monotonic()))
                s.sendall(block[:k])
                sent += k
            s.settimeout(max(0.1, deadline - time.monotonic()))
            head, _ = read_head(s)
            status = head.split(" ", 2)[1]
        except (OSError, ssl.SSLError, ConnectionError):
            pass
        out("upload %d sent %d status %s" % (i, sent, status))

    ts = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(n)]
    for t in ts:
        t.start()
    out("started %d" % n)
    for t in ts:
        t.join(max(0.1, deadline - time.monotonic() + 5))
    out("done")


def nonreader(port, host, path, cafile, wait, maxsecs):
    s = connect(port, host, cafile, rcvbuf=16384)
    s.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path, host)).encode())
    out("sent")
    time.sleep(wait)
    got, end = 0, "timeout"
    deadline = time.monotonic() + maxsecs
    try:
        while time.monotonic() < deadline:
            s.settimeout(max(0.1, deadline - time.monotonic()))
            d = s.recv(65536)
            if not d:
                end = "eof"
                break
            got += len(d)
    except socket.timeout:
        end = "timeout"
    except (OSError, ssl.SSLError):
        end = "reset"
    out("got %d end %s" % (got, end))


def upstream(cert, key, seconds):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # accepted sockets inherit it
    ls.bind(("127.0.0.1", 0))
    ls.listen(256)
    out("listening %d" % ls.getsockname()[1])
    deadline = time.monotonic() + seconds
    held = []
    count = [0]
    lock = threading.Lock()

    def serve(c):
        try:
            s = ctx.wrap_socket(c, server_side=True)
            s.settimeout(10)
            buf = b""
            while b"\r\n\r\n" not in buf:  # byte by byte: not one body byte is taken
                d = s.recv(1)
                if not d:
                    return
                buf += d
            with lock:
                count[0] += 1
                out("head %d" % count[0])
                held.append(s)
        except (OSError, ssl.SSLError):
            pass

    ls.settimeout(0.5)
    while time.monotonic() < deadline:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()
    out("done")


def main(a):
    if a[0] == "readers":
        readers(int(a[1]), int(a[2]), a[3], a[4], a[5], float(a[6]))
    elif a[0] == "uploaders":
        uploaders(int(a[1]), int(a[2]), a[3], a[4], a[5], int(a[6]), float(a[7]))
    elif a[0] == "nonreader":
        nonreader(int(a[1]), a[2], a[3], a[4], float(a[5]), float(a[6]))
    elif a[0] == "upstream":
        upstream(a[1], a[2], float(a[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
