#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The product's main path, end to end on 127.0.0.1, with mTLS on every hop:
#   curl -> gateway (public HTTPS) -> tunnel (TLS 1.3, HTTP/2) -> agent -> CMS sim / PKI sim / nginx
# Covers: JSON enrollment (certificate verified with openssl), Test Connection, a SOAP call, a SOAP
# fault, nginx with ssl_verify_client on as upstream, a legacy PKCS#12 route identity, header hygiene
# across hops, an unmatched path (404, nothing forwarded), the control prefix unreachable from the
# public side, 503 with Retry-After while no agent is connected, and recovery after a gateway restart
# within 5 s. Every ccrelay is stopped with SIGTERM and must exit 0 without sanitizer reports.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_relay 240

make_pki
start_cms_sim
start_pki_sim
start_nginx_upstream

# mTLS on every hop: the console presents a certificate too (the CMS admin identity stands in for it).
GW_PUBLIC_CLIENT_CA=$CR_PKI/client-ca.pem
RELAY_CLIENT=cms-admin
write_gateway_conf "$CR_TMP/gateway.yaml"
routes="$(cms_route cms-json "$CMS_PORT")
$(pki_route pki-soap "$PKI_PORT")
$(cms_route cms-legacy "$CMS_PORT" cms-json-connector-legacy.p12 localhost /legacy/connector/mdm.cgi)
$(cms_route sim-test "$CMS_PORT" cms-json-connector.p12 localhost /test/)"
# nginx (ssl_verify_client on) serves /big.
routes="$routes
  - name: nginx-root
    match: { host: cms.example.com, path_prefix: /big }
    upstream:
      url: https://127.0.0.1:$NGINX_PORT
      server_name: localhost
      ca: $CR_PKI/upstream-ca.pem
      identity: { pkcs12: $CR_PKI/cms-json-connector.p12, password_file: $CR_PKI/cms-json-connector.pass }"
write_agent_conf "$CR_TMP/agent.yaml" "$routes"

"$CCRELAY_BIN" check -c "$CR_TMP/gateway.yaml" >/dev/null || fail "check refused the test gateway config"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >/dev/null || fail "check refused the test agent config"

start_gateway
# A caller without a certificate is refused at the TLS handshake.
st=$(RELAY_CLIENT='' relay_curl "$CR_TMP/nocert" cms.example.com /connector/mdm.cgi -d '{}')
assert_eq "$st" 000 "caller without a client certificate"

# No agent yet: 503 with Retry-After.
st=$(relay_curl "$CR_TMP/r0" cms.example.com /connector/mdm.cgi -D "$CR_TMP/r0.h" -H 'Content-Type: application/json' -d '{"action":"test"}')
assert_eq "$st" 503 "no agent connected"
assert_file_contains "$CR_TMP/r0.h" '^[Rr]etry-[Aa]fter: [0-9]+' "503 carries Retry-After"
assert_file_contains "$CR_TMP/r0" '"error":"no_tunnel"'

start_agent agent "$CR_TMP/agent.yaml" 2
wait_for_log gateway 'msg="tunnel up".*tunnels=2' 10

# --- Test Connection and enrollment through the tunnel (JSON connector) -------------------------
st=$(relay_curl "$CR_TMP/t1" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
  -d '{"action":"test"}')
assert_eq "$st" 200 "Test Connection"
body=$(cat "$CR_TMP/t1")
assert_eq "$(json_get "$body" connector)" "CMS JSON connector" "the CMS saw the route's client identity"

st=$(relay_curl "$CR_TMP/enroll" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
  -d '{"action":"enroll","profile":"Mobile Authentication","key_format":"pem",
       "datasource":{"cn":"alice","mail":"alice@acme.example","mobileserial":"F2LX1234","o":"ACME Ltd","ou":"Sales"}}')
assert_eq "$st" 200 "enrollment"
json_get "$(cat "$CR_TMP/enroll")" certificate >"$CR_TMP/alice.pem"
openssl verify -CAfile "$CR_PKI/issuing-ca.pem" "$CR_TMP/alice.pem" >/dev/null ||
  fail "the enrolled certificate does not verify against the issuing CA"
subject=$(openssl x509 -in "$CR_TMP/alice.pem" -noout -subject -nameopt RFC2253)
assert_contains "$subject" "CN=alice" "enrolled subject"
assert_contains "$subject" "O=ACME Ltd" "enrolled subject"

# JSON error from the CMS passes through untouched.
st=$(relay_curl "$CR_TMP/e1" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"enroll"}')
assert_eq "$st" 400 "CMS error status passes through"

# --- SOAP policyService ----------------------------------------------------------------------
soap='<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><p:GetProfiles xmlns:p="urn:ccrelay:sim:opentrust-pki:policyService"/></soap:Body></soap:Envelope>'
st=$(relay_curl "$CR_TMP/s1" pki.example.com /policyService -H 'Content-Type: text/xml; charset=utf-8' \
  -H 'SOAPAction: "urn:ccrelay:sim:opentrust-pki:policyService/GetProfiles"' --data-binary "$soap")
assert_eq "$st" 200 "SOAP GetProfiles"
assert_file_contains "$CR_TMP/s1" 'Mobile Authentication'
assert_file_contains "$CR_TMP/s1" '4\.7\.1 \(API 2\.3, r131349\)'

st=$(relay_curl "$CR_TMP/s2" pki.example.com /policyService -H 'Content-Type: text/xml' \
  -H 'SOAPAction: "urn:x/Nope"' --data-binary '<not-xml')
assert_eq "$st" 500 "SOAP fault status passes through"
assert_file_contains "$CR_TMP/s2" 'faultcode'

# --- legacy PKCS#12 identity (RC2-40/3DES) as a route's client identity ------------------------
st=$(relay_curl "$CR_TMP/l1" cms.example.com /legacy/connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}')
# The sim serves /connector/mdm.cgi only; a 404 from the *sim* proves the legacy identity passed mTLS.
assert_eq "$st" 404 "legacy identity reaches the CMS"
assert_file_contains "$CR_TMP/l1" '"error": ?"not_found"'
assert_file_lacks "$CR_TMP/l1" 'no_route'
grep -q 'legacy/connector/mdm.cgi' "$CR_TMP/cms.requests" || fail "legacy route request did not reach the CMS"

# --- nginx with ssl_verify_client on ----------------------------------------------------------
st=$(relay_curl "$CR_TMP/big" cms.example.com /big)
assert_eq "$st" 200 "nginx /big"
assert_eq "$(stat -c %s "$CR_TMP/big")" 1048576 "nginx /big size"
"$CR_PY" "$CR_SIMS/simlib.py" pattern 1048576 | cmp -s - "$CR_TMP/big" || fail "nginx /big bytes differ"

# nginx answers only clients whose certificate it verified (ssl_verify_client on).
assert_file_contains "$NGINX_DIR/access.log" '"GET /big HTTP/1.1" 200'

# Header hygiene across both hops: hop-by-hop headers removed, x-request-id kept, forwarded added.
st=$(relay_curl "$CR_TMP/echo" cms.example.com /test/echo-headers -H 'X-Request-Id: abc-123' \
  -H 'Connection: keep-alive, X-Secret' -H 'X-Secret: leak' -H 'TE: trailers' -H 'Upgrade: h2c' \
  -H 'Proxy-Connection: keep-alive' -H 'Keep-Alive: 5')
assert_eq "$st" 200 "echo-headers"
e=$(cat "$CR_TMP/echo")
assert_eq "$(json_get "$e" lower.x-request-id.0)" "abc-123" "x-request-id kept"
assert_contains "$(json_get "$e" lower.forwarded.0)" 'for="127.0.0.1:' "forwarded added"
assert_contains "$(json_get "$e" lower.forwarded.0)" 'host="cms.example.com' "forwarded host"
assert_eq "$(json_get "$e" client_cn)" "CMS JSON connector" "upstream saw the route's client certificate"
for h in te upgrade keep-alive proxy-connection x-secret transfer-encoding; do
  assert_not_contains "$(json_get "$e" lower)" "\"$h\"" "hop-by-hop header $h removed"
done
st=$(relay_curl "$CR_TMP/echo2" cms.example.com /test/echo-headers -H 'Connection: X-Secret' -H 'X-Secret: leak')
assert_eq "$st" 200
assert_not_contains "$(cat "$CR_TMP/echo2")" '"x-secret"' "headers named by Connection are removed"
rid=$(json_get "$(cat "$CR_TMP/echo2")" lower.x-request-id.0)
[[ $rid =~ ^[0-9a-f]{16}$ ]] || fail "gateway-generated x-request-id looks wrong: $rid"
grep -q "request_id=$rid" "$(log_of agent)" || fail "agent access log lacks request id $rid"
grep -q "request_id=$rid" "$(log_of gateway)" || fail "gateway access log lacks request id $rid"

# A head at the gateway's limit (100 fields with curl's Host, User-Agent and Accept) reaches the upstream
# whole, with the fields the gateway adds: the agent used to drop whatever came past 100.
many=()
for i in $(seq 1 97); do many+=(-H "X-Many-$i: v$i"); done
st=$(relay_curl "$CR_TMP/echo3" cms.example.com /test/echo-headers "${many[@]}")
assert_eq "$st" 200 "a 100-field head is relayed"
e=$(cat "$CR_TMP/echo3")
assert_eq "$(json_get "$e" lower.x-many-1.0)" "v1" "first of 97 extra fields"
assert_eq "$(json_get "$e" lower.x-many-97.0)" "v97" "last of 97 extra fields"
assert_contains "$(json_get "$e" lower.forwarded.0)" 'for="127.0.0.1:' "forwarded added behind 100 fields"
[[ $(json_get "$e" lower.x-request-id.0) =~ ^[0-9a-f]{16}$ ]] || fail "x-request-id lost behind 100 fields"
# The other direction: a response at the upstream parser's limit (100 fields) arrives whole, framing
# included.
st=$(relay_curl "$CR_TMP/many" cms.example.com '/test/many-headers?n=96' -D "$CR_TMP/many.h" --max-time 10)
assert_eq "$st" 200 "a 100-field response is relayed"
assert_eq "$(json_get "$(cat "$CR_TMP/many")" fields)" 96 "its body arrives whole"
grep -qi '^x-many-96: v96' "$CR_TMP/many.h" || fail "a 100-field response lost its last field"
grep -qi '^content-length: ' "$CR_TMP/many.h" || fail "a 100-field response lost its Content-Length"

# --- unmatched path: 404 from the agent, nothing reaches any upstream -------------------------
before_cms=$(request_count cms)
before_pki=$(request_count pki)
before_nginx=$(wc -l <"$NGINX_DIR/access.log")
st=$(relay_curl "$CR_TMP/nr" cms.example.com /admin/secret -d 'x=1')
assert_eq "$st" 404 "unmatched path"
assert_file_contains "$CR_TMP/nr" '"error":"no_route"'
st=$(relay_curl "$CR_TMP/nr2" cms.example.com /connector/mdm.cgi/../../admin -d 'x=1' --path-as-is)
assert_eq "$st" 400 "dot-segment path"
st=$(relay_curl "$CR_TMP/ctl" cms.example.com /.well-known/ccrelay/status)
assert_eq "$st" 404 "control prefix from the public side"
st=$(relay_curl "$CR_TMP/nh" unknown.example.com /connector/mdm.cgi -d 'x=1' -k)
assert_eq "$st" 404 "unknown host"
sleep 0.3
assert_eq "$(request_count cms)" "$before_cms" "CMS received nothing for unmatched requests"
assert_eq "$(request_count pki)" "$before_pki" "PKI received nothing for unmatched requests"
assert_eq "$(wc -l <"$NGINX_DIR/access.log")" "$before_nginx" "nginx received nothing for unmatched requests"
assert_file_contains "$(log_of agent)" 'msg="no route".*target="/admin/secret"'

# --- keep-alive: several calls on one caller connection ---------------------------------------
st=$(curl -sS --max-time 10 -o /dev/null -o /dev/null -w '%{http_code}%{num_connects}\n' --cacert "$CR_PKI/public-ca.pem" \
  --cert "$CR_PKI/cms-admin.pem" --key "$CR_PKI/cms-admin.key" \
  --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
  "https://cms.example.com:$GW_PUBLIC_PORT/test/status?code=200" "https://cms.example.com:$GW_PUBLIC_PORT/test/status?code=201" |
  tr '\n' ' ')
assert_eq "$st" "2001 2010 " "two calls, one connection"

# --- agent stopped: 503; gateway restart: back within 5 s ------------------------------------
stop_ccrelay agent
st=$(relay_curl "$CR_TMP/r503" cms.example.com /connector/mdm.cgi -D "$CR_TMP/r503.h" -H 'Content-Type: application/json' -d '{"action":"test"}')
assert_eq "$st" 503 "agent stopped"
assert_file_contains "$CR_TMP/r503.h" '^[Rr]etry-[Aa]fter:'

start_agent agent2 "$CR_TMP/agent.yaml" 2
stop_ccrelay gateway
start_gateway gateway2
t0=$(date +%s%N)
ok=0
for ((i = 0; i < 100; i++)); do
  st=$(relay_curl "$CR_TMP/rr" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}')
  if [[ $st == 200 ]]; then ok=1; break; fi
  sleep 0.05
done
elapsed_ms=$((($(date +%s%N) - t0) / 1000000))
((ok)) || fail "no successful call within 5 s of the gateway restart (last status $st)"
((elapsed_ms <= 5000)) || fail "recovery took ${elapsed_ms} ms (> 5000)"
cr_log "call succeeded ${elapsed_ms} ms after the gateway restart"

# SIGHUP must not take the gateway down (its default action would).
kill -HUP "$(pid_of gateway2)"
wait_for_log gateway2 'msg="reload: replica set reloaded' 5
st=$(relay_curl "$CR_TMP/hup" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}')
assert_eq "$st" 200 "gateway still serving after SIGHUP"

stop_ccrelay agent2
stop_ccrelay gateway2
cr_pass
