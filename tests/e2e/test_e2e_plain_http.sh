#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Plain-HTTP upstreams (issue 12, point 3): SCEP and NDES answer on http://, without a client
# certificate. A route says so explicitly (upstream.plain_http: true); without it an http:// url is a
# configuration error with its place. The agent warns at start. A SCEP exchange (GetCACaps,
# GetCACert, PKIOperation by GET with a base64 message in the query, PKIOperation by POST with a
# binary body) passes through gateway, tunnel and agent byte for byte, both ways. The responder is
# written here in Python: it answers fixed binary payloads and records exactly what it received.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_plain_http 120

make_pki
cat >"$CR_TMP/scep.py" <<'PY'
import hashlib, http.server, os, socketserver, sys
out = sys.argv[1]
CACERT = bytes(range(256)) * 3 + b"\x00\r\n\xff"     # binary: NUL, CR LF, high bytes
def answer(kind, data):
    # A deterministic binary answer that depends on everything the request carried.
    return b"SCEP-" + kind.encode() + b"\x00" + hashlib.sha256(data).digest() + bytes(reversed(data))[:4096]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def record(self, body):
        n = len(os.listdir(out)) // 2
        with open(os.path.join(out, "%02d.target" % n), "wb") as f:
            f.write(self.path.encode("latin-1"))
        with open(os.path.join(out, "%02d.body" % n), "wb") as f:
            f.write(body)
    def send(self, ctype, body):
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.record(b"")
        q = self.path.split("?", 1)[1] if "?" in self.path else ""
        if "operation=GetCACaps" in q:
            self.send("text/plain", b"POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\n")
        elif "operation=GetCACert" in q:
            self.send("application/x-x509-ca-cert", CACERT)
        elif "operation=PKIOperation" in q:
            self.send("application/x-pki-message", answer("GET", q.encode()))
        else:
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.record(body)
        self.send("application/x-pki-message", answer("POST", body))
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print("listening %d" % s.server_address[1], flush=True)
s.serve_forever()
PY
mkdir -p "$CR_TMP/got"
start_bg scep "$CR_PY" "$CR_TMP/scep.py" "$CR_TMP/got"
SCEP_PORT=$(wait_for_listening scep)

write_gateway_conf "$CR_TMP/gateway.yaml"
routes="  - name: scep
    match: { path_prefix: /cgi-bin/pkiclient.exe }
    upstream:
      url: http://127.0.0.1:$SCEP_PORT
      plain_http: true
      connect_timeout: 3s
      response_timeout: 5s"
write_agent_conf "$CR_TMP/agent.yaml" "$routes"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >/dev/null || fail "the plain_http route does not check"

# Without plain_http: true, http:// is refused with its place and the way out.
sed '/plain_http: true/d' "$CR_TMP/agent.yaml" >"$CR_TMP/bad.yaml"
rc=0
"$CCRELAY_BIN" check -c "$CR_TMP/bad.yaml" >/dev/null 2>"$CR_TMP/bad.err" || rc=$?
assert_eq "$rc" 2 "check refuses http:// without plain_http"
assert_file_contains "$CR_TMP/bad.err" "bad.yaml:[0-9]+:[0-9]+: routes\[0\]\.upstream\.url: an http:// upstream is plain HTTP.*plain_http: true"
# ... and an identity on a plain route is refused too (there is no TLS to present it in).
sed "s|plain_http: true|plain_http: true\n      identity: { pkcs12: $CR_PKI/cms-json-connector.p12, password_file: $CR_PKI/cms-json-connector.pass }|" \
  "$CR_TMP/agent.yaml" >"$CR_TMP/bad2.yaml"
rc=0
"$CCRELAY_BIN" check -c "$CR_TMP/bad2.yaml" >/dev/null 2>"$CR_TMP/bad2.err" || rc=$?
assert_eq "$rc" 2 "check refuses an identity on a plain_http route"
assert_file_contains "$CR_TMP/bad2.err" "routes\[0\]\.upstream\.identity: a plain_http upstream has no TLS"

start_gateway
start_agent agent "$CR_TMP/agent.yaml" 1
wait_for_log agent 'level=warn msg="plain-HTTP upstream: calls on this route cross the network unencrypted.*route=scep' 5
wait_for_log agent 'msg="route ready" route=scep' 5

B=/cgi-bin/pkiclient.exe
# The message a SCEP client sends by GET: base64 with + / =, once raw and once percent-encoded (both
# are what clients do); the target must reach the responder exactly as sent.
head -c 1500 /dev/urandom >"$CR_TMP/pkcs7.der"
printf '\xfb\xff\xfe' >>"$CR_TMP/pkcs7.der" # makes sure '+' and '/' occur in the base64
MSG=$(base64 -w0 "$CR_TMP/pkcs7.der")
MSG_PCT=$(printf '%s' "$MSG" | sed 's/+/%2B/g; s|/|%2F|g; s/=/%3D/g')
assert_contains "$MSG" "+" "base64 message has +"
assert_contains "$MSG" "/" "base64 message has /"

declare -a SENT=()
scep_get() { # OUT TARGET
  SENT+=("$2")
  local st
  st=$(relay_curl "$1" cms.example.com "$2")
  assert_eq "$st" 200 "GET $2"
}
scep_get "$CR_TMP/caps" "$B?operation=GetCACaps&message=CA"
scep_get "$CR_TMP/cacert" "$B?operation=GetCACert&message=CA"
scep_get "$CR_TMP/pkiget" "$B?operation=PKIOperation&message=$MSG"
scep_get "$CR_TMP/pkiget2" "$B?operation=PKIOperation&message=$MSG_PCT"
SENT+=("$B?operation=PKIOperation")
st=$(relay_curl "$CR_TMP/pkipost" cms.example.com "$B?operation=PKIOperation" \
  -H 'Content-Type: application/x-pki-message' --data-binary "@$CR_TMP/pkcs7.der")
assert_eq "$st" 200 "POST PKIOperation"

# What the responder received: the targets byte for byte, the POST body byte for byte.
for i in 0 1 2 3 4; do
  got=$(cat "$CR_TMP/got/0$i.target")
  assert_eq "$got" "${SENT[$i]}" "request $i target at the responder"
done
cmp "$CR_TMP/got/04.body" "$CR_TMP/pkcs7.der" || fail "POST body changed on the way"

# What the client received: the responder's answers byte for byte (computed here independently).
"$CR_PY" - "$CR_TMP" "$MSG" "$MSG_PCT" <<'PY' || fail "answers differ from what the responder sent"
import hashlib, sys
d, msg, msg_pct = sys.argv[1:4]
def answer(kind, data):
    return b"SCEP-" + kind.encode() + b"\x00" + hashlib.sha256(data).digest() + bytes(reversed(data))[:4096]
want = {
    "caps": b"POSTPKIOperation\nSHA-256\nAES\nSCEPStandard\n",
    "cacert": bytes(range(256)) * 3 + b"\x00\r\n\xff",
    "pkiget": answer("GET", ("operation=PKIOperation&message=" + msg).encode()),
    "pkiget2": answer("GET", ("operation=PKIOperation&message=" + msg_pct).encode()),
    "pkipost": answer("POST", open(d + "/pkcs7.der", "rb").read()),
}
bad = [k for k, v in want.items() if open(d + "/" + k, "rb").read() != v]
if bad:
    sys.exit("differ: " + ", ".join(bad))
PY

# The probe works for a plain route: no TLS, nothing to verify, the responder answers.
"$CCRELAY_BIN" probe -c "$CR_TMP/agent.yaml" --method GET --path "/cgi-bin/pkiclient.exe?operation=GetCACaps" \
  >"$CR_TMP/probe.out" 2>&1 || { cat "$CR_TMP/probe.out" >&2; fail "probe of the plain route"; }
assert_file_contains "$CR_TMP/probe.out" "route scep: OK"
assert_file_contains "$CR_TMP/probe.out" "tls +none \(plain_http\)"
assert_file_contains "$CR_TMP/probe.out" "-> 200"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
