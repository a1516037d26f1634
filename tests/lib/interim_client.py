# SPDX-License-Identifier: Apache-2.0
"""An HTTPS caller that sees what curl hides: every response head on the connection, 1xx included,
and when each arrived. For the 1xx and Expect: 100-continue tests.

usage: interim_client.py HOST PORT CAFILE SERVER_NAME CERT KEY MODE [ARG]
  expect N    POST N bytes to /test/sha256 with Expect: 100-continue: send the head, wait (at most
              5 s) for a 100 Continue, then send the body, then read the final response
  hold N [PATH]  POST N bytes (to PATH, default /test/sha256) with Expect: 100-continue and never
              send the body: read what comes
  hints       GET /test/early-hints (HTTP/1.1)
  hints10     GET /test/early-hints (HTTP/1.0)
Prints one JSON object: heads (status, ms since the request head was sent, fields), body (the
final response's, as text), closed (the server closed the connection within 3 s of the final
response), sent_body (the body went out).
"""
import json
import socket
import ssl
import sys
import time


class Conn:
    def __init__(self, s):
        self.s = s
        self.buf = b""
        self.eof = False

    def fill(self, deadline):
        self.s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            d = self.s.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except (ssl.SSLError, ConnectionResetError):
            d = b""
        if not d:
            self.eof = True
            return False
        self.buf += d
        return True

    def head(self, deadline):
        while b"\r\n\r\n" not in self.buf:
            if not self.fill(deadline):
                return None
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        fields = [tuple(x.strip() for x in ln.split(":", 1)) for ln in lines[1:]]
        return {"line": lines[0], "status": int(lines[0].split()[1]), "fields": fields}

    def body(self, head, deadline):
        f = {k.lower(): v for k, v in head["fields"]}
        if "content-length" in f:
            n = int(f["content-length"])
            while len(self.buf) < n and self.fill(deadline):
                pass
            b, self.buf = self.buf[:n], self.buf[n:]
            return b
        if f.get("transfer-encoding", "").lower() == "chunked":
            out = b""
            while True:
                while b"\r\n" not in self.buf and self.fill(deadline):
                    pass
                line, self.buf = self.buf.split(b"\r\n", 1)
                n = int(line.split(b";")[0], 16)
                while len(self.buf) < n + 2 and self.fill(deadline):
                    pass
                out, self.buf = out + self.buf[:n], self.buf[n + 2:]
                if n == 0:
                    return out
        while self.fill(deadline):
            pass
        b, self.buf = self.buf, b""
        return b


def main():
    host, port, cafile, sni, cert, key, mode = sys.argv[1:8]
    arg = sys.argv[8] if len(sys.argv) > 8 else ""
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.load_cert_chain(cert, key)
    s = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=sni)
    c = Conn(s)
    out = {"heads": [], "sent_body": False}
    body = b""
    if mode in ("expect", "hold"):
        body = bytes(i % 251 for i in range(int(arg)))
        path = sys.argv[9] if mode == "hold" and len(sys.argv) > 9 else "/test/sha256"
        req = ("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/octet-stream\r\n"
               "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % (path, sni, len(body)))
    else:
        req = "GET /test/early-hints HTTP/1.%d\r\nHost: %s\r\n\r\n" % (0 if mode == "hints10" else 1, sni)
    t0 = time.monotonic()
    s.sendall(req.encode())
    final = None
    while final is None:
        # the first head is waited for at most 5 s (expect: then the body goes anyway)
        h = c.head(t0 + (5 if not out["heads"] and mode == "expect" else 10))
        if h is None:
            if mode == "expect" and not out["sent_body"] and not c.eof:
                s.sendall(body)
                out["sent_body"] = True
                continue
            break
        h["ms"] = round((time.monotonic() - t0) * 1000)
        out["heads"].append(h)
        if h["status"] >= 200:
            final = h
        elif h["status"] == 100 and mode == "expect" and not out["sent_body"]:
            s.sendall(body)
            out["sent_body"] = True
    if final is not None:
        out["body"] = c.body(final, time.monotonic() + 10).decode("utf-8", "replace")
        if mode == "hold":
            end = time.monotonic() + 3
            while not c.eof and c.fill(end):
                pass
            out["closed"] = c.eof
    s.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
