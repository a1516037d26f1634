#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Server plumbing shared by cms_sim.py and pki_sim.py (and the test-only /test/* endpoints).

A threading HTTPS/1.1 server built on the standard library: one thread per connection, keep-alive,
request bodies by Content-Length or chunked (streamed, never buffered whole unless the endpoint needs
the document), every response framed by Content-Length (or chunked where asked for), client
certificates required when --client-ca is given. Documented in tests/sims/README.md.

Run directly, it is a small utility:  simlib.py pattern N   writes the first N bytes of the
deterministic test pattern to stdout (what GET /test/big?bytes=N serves).
"""

import argparse
import base64
import datetime
import hashlib
import http.server
import json
import os
import random
import re
import secrets
import signal
import socket
import socketserver
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import http.client

# The products' servers take more than Python's default 100 header fields, and the relay tests send heads
# at the gateway's own limit plus what the gateway adds: the simulators must not be the bottleneck.
http.client._MAXHEADERS = 1000

# ---------------------------------------------------------------------------------------------
# Deterministic test pattern: byte i is PATTERN[i % PATTERN_PERIOD]. The period is prime so that no
# power-of-two buffer size lines up with it and a dropped, duplicated or reordered buffer changes the
# digest.

PATTERN_PERIOD = 1048573
PATTERN_SEED = 0xCC2E1A7
PATTERN = random.Random(PATTERN_SEED).randbytes(PATTERN_PERIOD)
_PATTERN2 = PATTERN + PATTERN  # any window of up to PATTERN_PERIOD bytes is one slice


def pattern_chunks(nbytes, chunk=65536):
    """Yield the first nbytes of the pattern in pieces of at most chunk bytes."""
    chunk = max(1, min(chunk, PATTERN_PERIOD))
    off = 0
    while off < nbytes:
        n = min(chunk, nbytes - off)
        start = off % PATTERN_PERIOD
        yield _PATTERN2[start:start + n]
        off += n


_sha_cache = {}
_sha_lock = threading.Lock()


def pattern_sha256(nbytes):
    with _sha_lock:
        if nbytes in _sha_cache:
            return _sha_cache[nbytes]
    h = hashlib.sha256()
    for c in pattern_chunks(nbytes, 1 << 20):
        h.update(c)
    d = h.hexdigest()
    with _sha_lock:
        if len(_sha_cache) > 64:
            _sha_cache.clear()
        _sha_cache[nbytes] = d
    return d


# ---------------------------------------------------------------------------------------------
# Request bodies


class BadRequest(Exception):
    """The request cannot be read further; the connection is closed after the error answer."""


MAX_CHUNK_LINE = 4096


class Body:
    """Streaming reader for a request body framed by Content-Length or chunked encoding."""

    def __init__(self, rfile, headers):
        self.rfile = rfile
        self.chunked = False
        self.length = 0  # Content-Length, or bytes left in the current chunk
        self.done = False
        self.total = 0
        te = headers.get_all("Transfer-Encoding") or []
        cl = headers.get_all("Content-Length") or []
        if te and cl:
            # Both framings at once is the classic smuggling vector: refuse, as RFC 9112 allows.
            raise BadRequest("both Transfer-Encoding and Content-Length")
        if te:
            codings = [c.strip().lower() for v in te for c in v.split(",") if c.strip()]
            if codings != ["chunked"]:
                raise BadRequest("unsupported Transfer-Encoding: %s" % ", ".join(te))
            self.chunked = True
        elif cl:
            vals = set(v.strip() for v in cl)
            if len(vals) != 1 or not re.fullmatch(r"[0-9]{1,18}", next(iter(vals))):
                raise BadRequest("invalid Content-Length: %s" % ", ".join(cl))
            self.length = int(next(iter(vals)))
            self.done = self.length == 0
        else:
            self.done = True

    def _line(self):
        line = self.rfile.readline(MAX_CHUNK_LINE + 1)
        if not line:
            raise BadRequest("connection closed inside chunked body")
        if len(line) > MAX_CHUNK_LINE or not line.endswith(b"\n"):
            raise BadRequest("chunk line too long")
        return line.rstrip(b"\r\n")

    def _next_chunk(self):
        size = self._line().split(b";", 1)[0].strip()
        if not re.fullmatch(rb"[0-9A-Fa-f]{1,15}", size):
            raise BadRequest("invalid chunk size %r" % size[:32])
        self.length = int(size, 16)
        if self.length == 0:
            for _ in range(100):  # trailers, bounded
                if self._line() == b"":
                    self.done = True
                    return
            raise BadRequest("too many trailer lines")

    def read(self, n=65536):
        """Return up to n bytes; b'' at the end of the body."""
        while not self.done:
            if self.chunked and self.length == 0:
                self._next_chunk()
                continue
            data = self.rfile.read(min(n, self.length))
            if not data:
                raise BadRequest("connection closed inside body")
            self.length -= len(data)
            self.total += len(data)
            if self.length == 0:
                if self.chunked:
                    if self.rfile.read(2) != b"\r\n":
                        raise BadRequest("chunk not followed by CRLF")
                else:
                    self.done = True
            return data
        return b""

    def read_all(self, limit):
        """The whole body, or BodyTooLarge once more than limit bytes arrived."""
        parts, size = [], 0
        while True:
            d = self.read()
            if not d:
                return b"".join(parts)
            size += len(d)
            if size > limit:
                raise BodyTooLarge(limit)
            parts.append(d)

    def drain(self, limit):
        """Discard the rest of the body; False when more than limit bytes remain."""
        left = limit
        while not self.done:
            d = self.read()
            left -= len(d)
            if left < 0:
                return False
        return True


class BodyTooLarge(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Logging

_diag_lock = threading.Lock()


class Logs:
    def __init__(self, prog, log_path):
        self.prog = prog
        self.lock = threading.Lock()
        self.file = open(log_path, "a", buffering=1, encoding="utf-8") if log_path else None

    def request(self, line):
        """The request log: exactly one line per request received, nothing else (see README)."""
        with self.lock:
            if self.file:
                self.file.write(line + "\n")
                self.file.flush()
            else:
                self.diag(line)

    def diag(self, msg):
        with _diag_lock:
            sys.stderr.write("%s: %s\n" % (self.prog, msg))
            sys.stderr.flush()


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _printable(s):
    return "".join(c if 32 <= ord(c) < 127 and c != '"' else "\\x%02x" % ord(c) for c in s)


# ---------------------------------------------------------------------------------------------
# Server


class SimServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, handler, ssl_ctx, opts, logs):
        if ":" in addr[0]:
            self.address_family = socket.AF_INET6
        self.ssl_ctx = ssl_ctx
        self.opts = opts
        self.logs = logs
        self.state = {}  # sim-specific shared state
        self.state_lock = threading.Lock()
        super().__init__(addr, handler)

    def server_bind(self):
        # HTTPServer.server_bind resolves the host name with getfqdn(), which can stall; skip it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request, client_address):
        # The TLS handshake happens here, in the connection's own thread, so a slow or silent
        # client cannot stall the accept loop.
        conn = request
        # Head and body leave in separate writes: without TCP_NODELAY, Nagle holds the body until
        # the peer's delayed ACK (~40 ms), which would show up as relay latency in the tests.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if self.ssl_ctx is not None:
                request.settimeout(10)
                try:
                    conn = self.ssl_ctx.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.logs.diag("tls handshake failed peer=%s: %s" % (client_address[0], e))
                    return
            conn.settimeout(self.opts.idle_timeout)
            self.RequestHandlerClass(conn, client_address, self)
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            pass
        finally:
            if conn is not request:
                try:
                    conn.close()
                except OSError:
                    pass


class DropConnection(Exception):
    """Raised by a handler to close the connection without (the rest of) an answer."""


class SimHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ccrelay-sim/1"
    sys_version = ""
    prog = "sim"
    body_limit = 1 << 20

    # -- sim-specific hooks -------------------------------------------------------------------

    def route(self, path, query):
        """Serve a non-/test/ request. Subclasses override."""
        self.send_error_doc(404, "not_found", "no such path: %s" % path)

    def send_error_doc(self, status, code, message, **extra):
        """An error in the sim's own dialect (JSON here; SOAP Fault in pki_sim)."""
        self.send_json_error(status, code, message, **extra)

    # -- framing ----------------------------------------------------------------------------------

    def handle_one_request(self):
        self.body = None
        self.responded = False
        try:
            self.raw_requestline = self.rfile.readline(65537)
            if len(self.raw_requestline) > 65536:
                self.requestline = self.request_version = self.command = ""
                self.send_error(414)
                self.close_connection = True
                return
            if not self.raw_requestline:
                self.close_connection = True
                return
            if not self.parse_request():
                return
            self.peer_cn = self._peer_cn()
            self.server.logs.request('%s %s "%s" cn="%s" rid=%s' % (
                now_iso(), self.client_address[0], _printable(self.requestline),
                _printable(self.peer_cn or "-"),
                _printable(self.headers.get("X-Request-Id", "-"))))
            try:
                self.body = Body(self.rfile, self.headers)
            except BadRequest as e:
                self.close_connection = True
                self.send_json_error(400, "bad_request", str(e))
                return
            self._dispatch()
            self.wfile.flush()
        except BadRequest as e:
            self.close_connection = True
            if self.body is not None:
                self.body.done = True  # unreadable: answer without draining it
            if not self.responded:
                self.send_json_error(400, "bad_request", str(e))
        except DropConnection:
            self.close_connection = True
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError):
            self.close_connection = True

    def _peer_cn(self):
        try:
            cert = self.connection.getpeercert()
        except (AttributeError, ValueError):
            return None
        for rdn in (cert or {}).get("subject", ()):
            for k, v in rdn:
                if k == "commonName":
                    return v
        return None

    def _dispatch(self):
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        want = self.server.opts.require_cn
        if want is not None and self.peer_cn != want:
            self.send_error_doc(403, "forbidden", "client certificate CN %r is not allowed (want %r)"
                                % (self.peer_cn, want))
            return
        if url.path.startswith("/test/"):
            self.route_test(url.path, query)
        else:
            self.route(url.path, query)

    def _finish_body(self):
        # Keep-alive needs the request body consumed before the answer; a body too large to be worth
        # draining costs the connection instead.
        if self.body is not None and not self.body.done:
            try:
                if not self.body.drain(64 << 20):
                    self.close_connection = True
            except BadRequest:
                self.close_connection = True

    def start_response(self, status, headers=(), length=None, chunked=False):
        self._finish_body()
        self.responded = True
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", str(length))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_bytes(self, status, ctype, data, headers=()):
        hdrs = list(headers)
        if ctype:
            hdrs.insert(0, ("Content-Type", ctype))
        no_body = status in (204, 304) or 100 <= status < 200
        self.start_response(status, hdrs, None if no_body else len(data))
        if self.command != "HEAD" and not no_body:
            self.wfile.write(data)

    def send_json(self, status, obj, headers=()):
        data = (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()
        self.send_bytes(status, "application/json", data, headers)

    def send_json_error(self, status, code, message, headers=(), **extra):
        doc = {"status": "error", "error": code, "message": message}
        doc.update(extra)
        self.send_json(status, doc, headers)

    def send_error(self, code, message=None, explain=None):
        # BaseHTTPRequestHandler's own errors (malformed request line, bad version, ...): JSON too.
        self.close_connection = True
        self.responded = True
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.1"  # garbage is not HTTP/0.9: answer with a status line
        try:
            self.send_json_error(code, "bad_request", message or self.responses.get(code, ("",))[0])
        except OSError:
            pass

    def version_string(self):
        return self.server_version

    def log_request(self, code="-", size="-"):
        self.server.logs.diag('%s "%s" %s' % (self.client_address[0], _printable(self.requestline),
                                              code))

    def log_message(self, fmt, *args):
        self.server.logs.diag(fmt % args)

    def read_body(self, limit=None):
        return self.body.read_all(limit or self.body_limit)

    # -- test-only endpoints ------------------------------------------------------------------------

    def route_test(self, path, query):
        def qint(name, default, lo, hi):
            v = query.get(name, [None])[0]
            if v is None or v == "":
                if default is None:
                    raise ValueError("missing query parameter %s" % name)
                return default
            if not re.fullmatch(r"[0-9]{1,15}", v) or not lo <= int(v) <= hi:
                raise ValueError("%s must be an integer in [%d, %d]" % (name, lo, hi))
            return int(v)

        m = self.command
        try:
            if path == "/test/big" and m in ("GET", "HEAD"):
                self.test_big(qint("bytes", None, 0, 16 << 30), qint("chunk", 65536, 1, 1 << 20),
                              query.get("chunked", ["0"])[0] == "1")
            elif path == "/test/sha256" and m in ("POST", "PUT"):
                self.test_sha256()
            elif path == "/test/slow" and m in ("GET", "POST", "HEAD"):
                ms = qint("ms", None, 0, 300000)
                time.sleep(ms / 1000.0)
                self.send_json(200, {"status": "ok", "slept_ms": ms})
            elif path == "/test/echo-headers":
                self.test_echo_headers()
            elif path == "/test/many-headers" and m == "GET":
                n = qint("n", None, 0, 900)
                self.send_json(200, {"status": "ok", "fields": n},
                               [("X-Many-%d" % i, "v%d" % i) for i in range(1, n + 1)])
            elif path == "/test/status" and m in ("GET", "POST", "HEAD"):
                code = qint("code", None, 200, 599)
                self.send_json(code, {"status": "ok" if code < 400 else "error", "code": code})
            elif path == "/test/early-hints" and m in ("GET", "POST"):
                # 103 Early Hints (RFC 8297) with a Link field, then the final answer.
                self.send_response_only(103)
                self.send_header("Link", "</style.css>; rel=preload; as=style")
                self.end_headers()
                self.wfile.flush()
                self.send_json(200, {"status": "ok", "hinted": True})
            elif path == "/test/drop":
                raise DropConnection()
            elif path == "/test/truncate" and m in ("GET", "HEAD"):
                n = qint("bytes", None, 0, 1 << 30)
                self.start_response(200, [("Content-Type", "application/octet-stream")], 2 * n)
                for c in pattern_chunks(n):
                    self.wfile.write(c)
                self.wfile.flush()
                raise DropConnection()
            elif path == "/test/cut" and m in ("GET", "POST"):
                self.test_cut(qint("bytes", None, 0, 1 << 30), qint("chunk", 65536, 1, 1 << 20),
                              query.get("chunked", ["0"])[0] == "1", query.get("mid", ["0"])[0] == "1",
                              qint("pause_ms", 0, 0, 60000), query.get("how", ["rst"])[0])
            elif path in ("/test/big", "/test/sha256", "/test/slow", "/test/status",
                          "/test/truncate", "/test/cut"):
                self.send_json_error(405, "method_not_allowed", "%s not allowed on %s" % (m, path))
            else:
                self.send_json_error(404, "not_found", "no such test endpoint: %s" % path)
        except ValueError as e:
            self.send_json_error(400, "bad_query", str(e))

    def test_big(self, n, chunk, chunked):
        hdrs = [("Content-Type", "application/octet-stream")]
        if n <= 256 << 20:
            hdrs.append(("X-Sim-SHA256", pattern_sha256(n)))
        self.start_response(200, hdrs, None if chunked else n, chunked=chunked)
        if self.command == "HEAD":
            return
        for c in pattern_chunks(n, chunk):
            if chunked:
                self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
            else:
                self.wfile.write(c)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")

    def test_cut(self, n, chunk, chunked, mid, pause_ms, how):
        """A response cut short after n body bytes: the head promises more (Content-Length 2n+1, or
        chunked without the last chunk), the n bytes are flushed, and after pause_ms the connection
        ends without close_notify: a TCP reset ("rst") or FIN ("fin"), or with close_notify
        ("notify", a clean TLS close in the middle of the body)."""
        if how not in ("rst", "fin", "notify"):
            raise ValueError("how must be rst, fin or notify")
        self.start_response(200, [("Content-Type", "application/octet-stream")],
                            None if chunked else 2 * n + 1, chunked=chunked)
        pieces = list(pattern_chunks(n, chunk))
        for i, c in enumerate(pieces):
            if chunked:
                # mid=1: the last chunk announces one byte more than is sent, so the cut falls inside it
                size = len(c) + (1 if mid and i == len(pieces) - 1 else 0)
                self.wfile.write(b"%x\r\n" % size + c + (b"" if size > len(c) else b"\r\n"))
            else:
                self.wfile.write(c)
        self.wfile.flush()
        time.sleep(pause_ms / 1000.0)
        sock = self.connection
        if how == "rst":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif how == "notify":
            try:
                sock.settimeout(0.5)  # unwrap waits for the peer's close_notify, which may never come
                sock.unwrap()
            except (ssl.SSLError, OSError):
                pass
        raise DropConnection()

    def test_sha256(self):
        h = hashlib.sha256()
        while True:
            d = self.body.read()
            if not d:
                break
            h.update(d)
        self.send_json(200, {"status": "ok", "sha256": h.hexdigest(), "bytes": self.body.total,
                             "chunked": self.body.chunked})

    def test_echo_headers(self):
        pairs = list(self.headers.items())
        lower = {}
        for k, v in pairs:
            lower.setdefault(k.lower(), []).append(v)
        self.send_json(200, {"status": "ok", "method": self.command, "path": self.path,
                             "version": self.request_version, "client_cn": self.peer_cn,
                             "headers": pairs, "lower": lower})


# ---------------------------------------------------------------------------------------------
# X.509 issuance, shared by the CMS enroll/renew actions and the PKI EnrollCertificate operation.

PROFILES = ("Mobile Authentication", "S/MIME")
PKI_VERSION = "4.7.1 (API 2.3, r131349)"
PRINTABLE_RE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]{1,64}")


class Issuer:
    def __init__(self, cert_path, key_path, days):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        with open(cert_path, "rb") as f:
            self.cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            self.key = serialization.load_pem_private_key(f.read(), None)
        self.days = days
        self.lock = threading.Lock()

    def issue(self, profile, fields, public_key):
        """fields: cn, mail, mobileserial, o, ou (ou optional). Returns the certificate."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
        attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, fields["o"])]
        if fields.get("ou"):
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, fields["ou"]))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, fields["cn"]))
        attrs.append(x509.NameAttribute(NameOID.SERIAL_NUMBER, fields["mobileserial"]))
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        not_after = min(now + datetime.timedelta(days=self.days), self.cert.not_valid_after.replace(
            tzinfo=datetime.timezone.utc))
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        eku = ([ExtendedKeyUsageOID.EMAIL_PROTECTION, ExtendedKeyUsageOID.CLIENT_AUTH]
               if profile == "S/MIME" else [ExtendedKeyUsageOID.CLIENT_AUTH])
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name(attrs)).issuer_name(self.cert.subject)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(not_after)
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
             .add_extension(x509.KeyUsage(
                 digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                 data_encipherment=False, key_agreement=False, key_cert_sign=False,
                 crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
             .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
             .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(fields["mail"])]),
                            critical=False)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
             .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                 self.key.public_key()), critical=False))
        with self.lock:
            return b.sign(self.key, hashes.SHA256())


def validate_subject_fields(fields):
    """Problems with subject field values, as (field, reason) pairs."""
    bad = []
    for k in ("cn", "o", "ou"):
        v = fields.get(k)
        if v is not None and (not isinstance(v, str) or not 0 < len(v) <= 64):
            bad.append((k, "must be a string of 1 to 64 characters"))
    mail = fields.get("mail")
    if mail is not None and (not isinstance(mail, str) or
                             not re.fullmatch(r"[^@\s]{1,64}@[A-Za-z0-9.-]{1,253}", mail)):
        bad.append(("mail", "must be an ASCII e-mail address"))
    ms = fields.get("mobileserial")
    if ms is not None and (not isinstance(ms, str) or not PRINTABLE_RE.fullmatch(ms)):
        bad.append(("mobileserial", "must be 1 to 64 PrintableString characters"))
    return bad


def load_csr(pem):
    """The CSR's public key, or ValueError."""
    from cryptography import x509
    try:
        csr = x509.load_pem_x509_csr(pem.encode() if isinstance(pem, str) else pem)
    except Exception as e:
        raise ValueError("cannot parse CSR: %s" % e)
    if not csr.is_signature_valid:
        raise ValueError("CSR signature does not verify")
    return csr.public_key()


def cert_pem(cert):
    from cryptography.hazmat.primitives import serialization
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def cert_serial_hex(cert):
    return "%X" % cert.serial_number


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def new_password():
    return secrets.token_urlsafe(12)


def b64(data):
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------------------------------
# Entry point


def arg_parser(prog, description):
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--listen", default="127.0.0.1", help="address to bind (127.0.0.1, ::1)")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--cert", help="server certificate (PEM)")
    p.add_argument("--key", help="server private key (PEM)")
    p.add_argument("--client-ca", help="require a client certificate chaining to these roots")
    p.add_argument("--require-cn", help="answer 403 unless the client certificate has this CN")
    p.add_argument("--plain", action="store_true", help="serve plain HTTP (no TLS)")
    p.add_argument("--idle-timeout", type=float, default=120.0, help="keep-alive idle seconds")
    p.add_argument("--pidfile")
    p.add_argument("--log", help="request log file (one line per request); default stderr")
    return p


def serve(prog, handler, opts, setup=None):
    """Bind, announce 'listening PORT' on stdout, serve until SIGTERM/SIGINT. Returns exit code."""
    logs = Logs(prog, opts.log)
    ctx = None
    if not opts.plain:
        if not opts.cert or not opts.key:
            logs.diag("error: --cert and --key are required (or --plain)")
            return 2
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(opts.cert, opts.key)
        ctx.set_alpn_protocols(["http/1.1"])
        if opts.client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cafile=opts.client_ca)
    if opts.require_cn is not None and (opts.plain or not opts.client_ca):
        logs.diag("error: --require-cn needs --client-ca")
        return 2
    srv = SimServer((opts.listen, opts.port), handler, ctx, opts, logs)
    if setup:
        setup(srv)

    def stop(signum, frame):
        raise KeyboardInterrupt()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if opts.pidfile:
        with open(opts.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    port = srv.server_address[1]
    sys.stdout.write("listening %d\n" % port)
    sys.stdout.flush()
    logs.diag("listening on %s port %d (%s%s)" % (
        opts.listen, port, "plain" if opts.plain else "tls",
        ", client cert required" if opts.client_ca and not opts.plain else ""))
    try:
        srv.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
        if opts.pidfile:
            try:
                os.unlink(opts.pidfile)
            except OSError:
                pass
        logs.diag("stopped")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "pattern" and argv[2].isdigit():
        out = sys.stdout.buffer
        for c in pattern_chunks(int(argv[2]), 1 << 20):
            out.write(c)
        out.flush()
        return 0
    print("usage: simlib.py pattern NBYTES   (write the /test/big pattern to stdout)",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
