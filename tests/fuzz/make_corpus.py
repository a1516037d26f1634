#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Writes the seed corpora of the tunnel and admin fuzz targets (tests/fuzz/corpus/<target>/).

  python3 tests/fuzz/make_corpus.py            # rewrites the seeds next to this script

The output is deterministic and committed; rerun after changing a seed here. The trust-store and
identity seeds are PKI files made by tests/fuzz/make_pki_seeds.sh.

Tunnel seeds are one knob byte (see fuzz_tunnel_agent.c) followed by raw HTTP/2 frames, the way a
peer sends them after the prologue the harness feeds itself (the client preface for the agent side,
an empty SETTINGS frame for both). Header blocks use HPACK "literal header field without indexing,
new name" with plain (non-Huffman) strings, so no HPACK library is needed.
"""
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# knob byte bits (fuzz_tunnel_agent.c)
EOF_END, RESET_END, SPLIT, WRITE_FAIL, SMALL_WIN, GRACEFUL, RAW, FEW = 1, 2, 4, 8, 16, 32, 64, 128


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid) + payload


def hpack_int(value, prefix_bits, first=0):
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack(fields):
    out = bytearray()
    for name, value in fields:
        name = name.encode() if isinstance(name, str) else name
        value = value.encode() if isinstance(value, str) else value
        out += b"\x00" + hpack_int(len(name), 7) + name + hpack_int(len(value), 7) + value
    return bytes(out)


def headers(sid, fields, end_stream=False, end_headers=True, pad=0, prio=False):
    block = hpack(fields)
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    payload = block
    if prio:
        flags |= PRIO
        payload = struct.pack(">IB", 0, 15) + payload
    if pad:
        flags |= PADDED
        payload = bytes([pad]) + payload + b"\x00" * pad
    return frame(HEADERS, flags, sid, payload)


def data(sid, body, end_stream=False, pad=0):
    flags = END_STREAM if end_stream else 0
    payload = body
    if pad:
        flags |= PADDED
        payload = bytes([pad]) + body + b"\x00" * pad
    return frame(DATA, flags, sid, payload)


def settings(entries=(), ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in entries))


def window_update(sid, inc):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", inc))


def rst(sid, code=8):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def ping(ack=False, opaque=b"fuzzping"):
    return frame(PING, ACK if ack else 0, 0, opaque)


def goaway(last, code=0, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack(">II", last, code) + debug)


def priority(sid, dep=0, weight=16):
    return frame(PRIORITY, 0, sid, struct.pack(">IB", dep, weight))


def request(method="GET", path="/api/v1/items", authority="cms.example", extra=()):
    f = [(":method", method), (":scheme", "https"), (":authority", authority), (":path", path)]
    return f + list(extra)


def response(status="200", extra=()):
    return [(":status", status)] + list(extra)


ACK_SETTINGS = settings(ack=True)


def agent_seeds():
    s = {}
    s["get"] = bytes([EOF_END]) + ACK_SETTINGS + headers(1, request(), end_stream=True)
    s["get_split_silent"] = bytes([SPLIT]) + ACK_SETTINGS + headers(
        1, request(extra=[("accept", "application/json"), ("x-request-id", "abc123")]), end_stream=True)
    s["post_body_window"] = bytes([SPLIT | EOF_END]) + ACK_SETTINGS + headers(
        1, request("POST", "/upload", extra=[("content-type", "application/octet-stream"),
                                             ("content-length", "11")])) + data(1, b"hello ") + window_update(
        0, 65536) + window_update(1, 65536) + data(1, b"world", end_stream=True)
    s["continuation"] = bytes([0]) + ACK_SETTINGS + headers(
        3, request(extra=[("x-a", "1")])[:2], end_headers=False) + frame(
        CONTINUATION, 0, 3, hpack(request()[2:])) + frame(CONTINUATION, END_HEADERS, 3, hpack([("x-b", "2" * 40)])) + data(
        3, b"", end_stream=True)
    s["many_streams_rst_ping_goaway"] = bytes([SPLIT | GRACEFUL]) + ACK_SETTINGS + b"".join(
        headers(i, request(path="/s%d" % i), end_stream=(i % 4 == 1)) for i in (1, 3, 5, 7, 9)) + rst(
        3) + ping() + data(5, b"x" * 100) + rst(5, 0) + priority(7, 1) + goaway(9, 0, b"draining")
    s["padded_priority"] = bytes([EOF_END]) + ACK_SETTINGS + headers(
        1, request("PUT", "/p", extra=[("content-length", "4")]), pad=7, prio=True) + data(1, b"abcd", True, pad=3)
    s["connect"] = bytes([0]) + ACK_SETTINGS + headers(
        1, [(":method", "CONNECT"), (":authority", "db.internal:5432")]) + data(1, b"\x00\x01") + rst(1)
    s["trailers"] = bytes([EOF_END]) + ACK_SETTINGS + headers(
        1, request("POST", "/t", extra=[("te", "trailers")])) + data(1, b"chunk") + headers(
        1, [("x-checksum", "1234")], end_stream=True)
    s["small_windows_big_answers"] = bytes([SMALL_WIN | SPLIT]) + ACK_SETTINGS + b"".join(
        headers(i, request(path="/big%d" % i), end_stream=True) for i in (1, 3, 5)) + b"".join(
        window_update(sid, 30000) for sid in (0, 1, 3, 5, 0)) + settings([(4, 100000)]) + b"".join(
        window_update(sid, 200000) for sid in (0, 1, 3, 5))
    s["raw_preface"] = bytes([RAW | EOF_END]) + PREFACE + settings(
        [(1, 4096), (2, 0), (3, 100), (4, 65535), (5, 16384), (6, 65536)]) + ACK_SETTINGS + headers(
        1, request(), end_stream=True)
    s["bad_pseudo_after_regular"] = bytes([0]) + ACK_SETTINGS + headers(
        1, [(":method", "GET"), ("x-early", "1"), (":path", "/"), (":scheme", "https")], end_stream=True) + headers(
        3, [(":method", "GET"), (":path", "/"), (":scheme", "https"), (":unknown", "x")], end_stream=True) + headers(
        5, [(":method", "GET"), (":scheme", "https")], end_stream=True) + headers(
        7, request(extra=[("content-length", "5"), ("content-length", "6")]), end_stream=True) + headers(
        9, request(extra=[("connection", "close")]), end_stream=True)
    s["many_headers"] = bytes([SPLIT]) + ACK_SETTINGS + headers(
        1, request(extra=[("x-h%d" % i, "v" * 20) for i in range(300)]), end_stream=True) + headers(
        3, request(extra=[("x-big", "b" * 9000)]), end_stream=True)
    s["control_path"] = bytes([EOF_END | FEW]) + ACK_SETTINGS + headers(
        1, request(path="/.well-known/ccrelay/status", authority="ccrelay-control",
                   extra=[("x-ccrelay-requested-by", "admin 127.0.0.1:5000")]), end_stream=True) + headers(
        3, request("POST", "/.well-known/ccrelay/trust", authority="ccrelay-control",
                   extra=[("content-length", "27")])) + data(3, b"-----BEGIN CERTIFICATE-----", True) + headers(
        5, request(), end_stream=True) + headers(7, request(), end_stream=True)
    s["data_on_idle_and_closed"] = bytes([RESET_END]) + ACK_SETTINGS + data(1, b"nope") + headers(
        1, request(), end_stream=True) + data(1, b"after end") + window_update(1, 0) + rst(
        2) + headers(2, request(), end_stream=True)
    s["write_fail"] = bytes([WRITE_FAIL | SPLIT]) + ACK_SETTINGS + b"".join(
        headers(i, request(path="/w%d" % i), end_stream=True) for i in (1, 3, 5, 7, 9, 11)) + ping()
    return s


def gateway_seeds():
    s = {}
    s["ok"] = bytes([EOF_END]) + ACK_SETTINGS + headers(
        1, response(extra=[("content-type", "text/plain"), ("content-length", "5")])) + data(1, b"hello", True)
    s["all_streams"] = bytes([SPLIT]) + ACK_SETTINGS + b"".join(
        headers(i, response(extra=[("x-i", str(i))])) + data(i, b"body%d" % i, True) for i in (1, 3, 5, 7))
    s["interim_then_final"] = bytes([SPLIT | EOF_END]) + ACK_SETTINGS + headers(1, response("100")) + headers(
        1, response("103", [("link", "</a.css>; rel=preload")])) + headers(1, response("204"), end_stream=True)
    s["rst_and_goaway"] = bytes([GRACEFUL]) + ACK_SETTINGS + headers(1, response()) + rst(1, 0) + rst(
        3, 2) + goaway(3, 0) + headers(5, response(), end_stream=True)
    s["goaway_error"] = bytes([0]) + ACK_SETTINGS + data(3, b"early") + goaway(1, 1, b"protocol error")
    s["continuation_trailers"] = bytes([EOF_END]) + ACK_SETTINGS + headers(
        1, response()[:1], end_headers=False) + frame(CONTINUATION, END_HEADERS, 1, hpack(
        [("content-type", "application/json")])) + data(1, b"{}", pad=4) + headers(1, [("grpc-status", "0")], True)
    s["windows_ping_settings"] = bytes([SMALL_WIN | SPLIT]) + settings(
        [(4, 1 << 20), (5, 1 << 16), (3, 10)]) + ACK_SETTINGS + window_update(0, 1 << 20) + b"".join(
        window_update(i, 1 << 18) for i in (1, 3, 5, 7)) + ping() + ping(ack=True) + headers(
        1, response(), end_stream=True)
    s["push_promise"] = bytes([0]) + ACK_SETTINGS + frame(PUSH_PROMISE, END_HEADERS, 1, struct.pack(">I", 2) + hpack(
        request()))
    s["bad_status"] = bytes([EOF_END]) + ACK_SETTINGS + headers(1, response("20"), True) + headers(
        3, [("x-no-status", "1")], True) + headers(5, response("abc"), True) + headers(
        7, response(extra=[(":path", "/")]), True)
    s["content_length_mismatch"] = bytes([SPLIT]) + ACK_SETTINGS + headers(
        1, response(extra=[("content-length", "3")])) + data(1, b"toolong", True) + headers(
        3, response(extra=[("content-length", "10")])) + data(3, b"short", True)
    s["raw_no_settings"] = bytes([RAW]) + headers(1, response(), True)
    s["data_before_head"] = bytes([RESET_END]) + ACK_SETTINGS + data(1, b"x" * 200) + headers(
        1, response(), end_stream=True) + data(9, b"unopened")
    s["huge_header_block"] = bytes([FEW]) + ACK_SETTINGS + headers(
        1, response(extra=[("x-h%d" % i, "v") for i in range(260)]), True)
    return s


# fuzz_admin knob byte: bits 0-1 the handler, then these
A_AGENT, A_GATEWAY, A_CONTROL, A_CONTROL_OFF = 0, 1, 2, 3
A_SPLIT, A_EOF, A_WRITE_FAIL, A_TUNNEL_UP = 4, 8, 16, 32
TOKEN = "fuzz-token"


def http(method, target, headers=(), body=b"", host="127.0.0.1:9090"):
    head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, target, host)
    for k, v in headers:
        head += "%s: %s\r\n" % (k, v)
    if body and not any(k.lower() in ("content-length", "transfer-encoding") for k, _ in headers):
        head += "Content-Length: %d\r\n" % len(body)
    return head.encode() + b"\r\n" + body


def auth(*more):
    return [("Authorization", "Bearer " + TOKEN)] + list(more)


def admin_seeds():
    root_pem = os.path.join(HERE, "corpus", "fuzz_truststore_input", "root.pem")
    pem = open(root_pem, "rb").read() if os.path.exists(root_pem) else b"-----BEGIN CERTIFICATE-----\n"
    s = {}
    s["agent_healthz"] = bytes([A_AGENT | A_EOF]) + http("GET", "/healthz")
    s["agent_readyz_up"] = bytes([A_AGENT | A_EOF | A_TUNNEL_UP]) + http("GET", "/readyz")
    s["agent_status_split"] = bytes([A_AGENT | A_SPLIT]) + http("GET", "/status", [("Accept", "application/json")])
    s["agent_post_405"] = bytes([A_AGENT | A_EOF]) + http("POST", "/healthz", body=b"x")
    s["agent_head_unknown"] = bytes([A_AGENT]) + http("HEAD", "/metrics")
    s["agent_malformed"] = bytes([A_AGENT | A_EOF]) + b"GET /healthz HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n"
    s["agent_big_head"] = bytes([A_AGENT | A_SPLIT]) + http("GET", "/status", [("X-Pad", "p" * 17000)])
    s["agent_pipelined_http10"] = bytes([A_AGENT | A_EOF]) + b"GET /healthz HTTP/1.0\r\n\r\n" + http("GET", "/status")
    s["agent_write_fail"] = bytes([A_AGENT | A_WRITE_FAIL | A_EOF]) + http("GET", "/status")
    s["gw_no_token"] = bytes([A_GATEWAY | A_EOF]) + http("GET", "/agents")
    s["gw_wrong_token"] = bytes([A_GATEWAY]) + http("GET", "/agents", [("Authorization", "Bearer nope")])
    s["gw_two_tokens"] = bytes([A_GATEWAY]) + http("GET", "/agents", auth(("Authorization", "Bearer x")))
    s["gw_agents"] = bytes([A_GATEWAY | A_EOF]) + http("GET", "/agents?pretty=1", auth())
    s["gw_status_forward"] = bytes([A_GATEWAY]) + http("GET", "/agents/agent-1/status", auth())
    s["gw_status_forward_eof"] = bytes([A_GATEWAY | A_EOF | A_SPLIT]) + http("GET", "/agents/agent-1/status", auth())
    s["gw_trust_list"] = bytes([A_GATEWAY]) + http("GET", "/agents/agent-1/trust", auth())
    s["gw_trust_add"] = bytes([A_GATEWAY | A_SPLIT]) + http(
        "POST", "/agents/agent-1/trust", auth(("Content-Type", "application/x-pem-file"), ("Expect", "100-continue")), pem)
    s["gw_trust_add_chunked"] = bytes([A_GATEWAY]) + http(
        "POST", "/agents/agent-1/trust", auth(("Transfer-Encoding", "chunked")),
        b"%x\r\n" % len(pem) + pem + b"\r\n0\r\n\r\n")
    s["gw_trust_empty_post"] = bytes([A_GATEWAY | A_EOF]) + http("POST", "/agents/agent-1/trust", auth(("Content-Length", "0")))
    s["gw_trust_remove"] = bytes([A_GATEWAY]) + http("DELETE", "/agents/agent-1/trust/ab:cd:ef:01", auth())
    s["gw_trust_remove_bad"] = bytes([A_GATEWAY | A_EOF]) + http("DELETE", "/agents/agent-1/trust/zz%2F..", auth())
    s["gw_unknown_agent"] = bytes([A_GATEWAY | A_EOF]) + http("GET", "/agents/other.agent_2/status", auth())
    s["gw_bad_agent_name"] = bytes([A_GATEWAY | A_EOF]) + http("GET", "/agents/bad%20name/status", auth())
    s["gw_wrong_methods"] = bytes([A_GATEWAY | A_EOF]) + http("PUT", "/agents/agent-1/trust", auth(), b"{}")
    s["gw_no_sub"] = bytes([A_GATEWAY | A_EOF]) + http("GET", "/agents/agent-1", auth())
    s["ctl_status"] = bytes([A_CONTROL | A_EOF]) + http(
        "GET", "/.well-known/ccrelay/status", [("x-ccrelay-requested-by", "admin 127.0.0.1:1")], host="ccrelay-control")
    s["ctl_trust_list"] = bytes([A_CONTROL | A_TUNNEL_UP]) + http("GET", "/.well-known/ccrelay/trust")
    s["ctl_trust_add"] = bytes([A_CONTROL | A_SPLIT]) + http("POST", "/.well-known/ccrelay/trust", body=pem)
    s["ctl_trust_add_garbage"] = bytes([A_CONTROL]) + http("POST", "/.well-known/ccrelay/trust", body=b"\x30\x82\x01")
    s["ctl_trust_remove"] = bytes([A_CONTROL | A_EOF]) + http("DELETE", "/.well-known/ccrelay/trust/abcd")
    s["ctl_trust_remove_short"] = bytes([A_CONTROL]) + http("DELETE", "/.well-known/ccrelay/trust/ab")
    s["ctl_wrong_method"] = bytes([A_CONTROL]) + http("PATCH", "/.well-known/ccrelay/trust")
    s["ctl_unknown"] = bytes([A_CONTROL | A_EOF]) + http("GET", "/.well-known/ccrelay/metrics")
    s["ctl_off"] = bytes([A_CONTROL_OFF | A_EOF]) + http("POST", "/.well-known/ccrelay/trust", body=pem)
    return s


def write(target, seeds):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    for name, blob in sorted(seeds.items()):
        with open(os.path.join(d, name), "wb") as f:
            f.write(blob)


def main():
    write("fuzz_tunnel_agent", agent_seeds())
    write("fuzz_tunnel_gateway", gateway_seeds())
    write("fuzz_admin", admin_seeds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
