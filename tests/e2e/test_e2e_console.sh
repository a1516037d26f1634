#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# What the console's real callers send, end to end on 127.0.0.1 (curl -> gateway -> tunnel -> agent ->
# sims), issue 13 points 1, 2 and 6:
#   1xx: a caller sending Expect: 100-continue gets the upstream's 100 Continue at once (curl with
#   --expect100-timeout 10: a 5 MiB and a 2 KiB POST each finish within 1 s; a raw client that waits
#   for the 100 before its body); 103 Early Hints reach an HTTP/1.1 caller before the 200 and never
#   an HTTP/1.0 one; a final answer that comes instead of the 100 closes the connection.
#   SOAP: zeep's SOAP 1.2 binding calls a spyne SOAP 1.2 service through the relay, routed by the
#   action parameter of its Content-Type (match.soap_action); a SOAP 1.1 SOAPAction names the same
#   route; faults ccrelay makes itself are SOAP 1.2 or 1.1 as the caller spoke, HTTP 500, with the
#   reason in the fault and in X-Ccrelay-Error (gateway: no agent; agent: upstream refused).
#   ALPN: curl --http1.0 (ALPN http/1.0) and a client without ALPN are served.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_console 240

"$CR_PY" -c 'import zeep, spyne' 2>/dev/null ||
  fail "python3-zeep and python3-spyne are required (deploy/install-deps.sh installs them)"

make_pki
start_cms_sim
start_sim soap12 soap12_sim.py --cert "$CR_PKI/pki-server.pem" --key "$CR_PKI/pki-server.key" \
  --client-ca "$CR_PKI/client-ca.pem" --require-cn "PKI SOAP connector"
SOAP_PORT=$SIM_PORT
DEAD_PORT=$(pick_free_port) # nothing listens here: the agent's connect is refused

write_gateway_conf "$CR_TMP/gateway.yaml"
soap_upstream() {
  cat <<YAML
    upstream:
      url: https://127.0.0.1:$1
      server_name: localhost
      ca: $CR_PKI/upstream-ca.pem
      identity: { pkcs12: $CR_PKI/pki-soap-connector.p12, password_file: $CR_PKI/pki-soap-connector.pass }
      connect_timeout: 3s
      response_timeout: 10s
YAML
}
routes="$(cms_route cms-test "$CMS_PORT" cms-json-connector.p12 localhost /test/)
  - name: hello
    match: { host: pki.example.com, path_prefix: /hello, soap_action: say_hello }
    soap: true
$(soap_upstream "$SOAP_PORT")
  - name: hello-other
    match: { host: pki.example.com, path_prefix: /hello }
    soap: true
$(soap_upstream "$DEAD_PORT")"
write_agent_conf "$CR_TMP/agent.yaml" "$routes"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >/dev/null || fail "check refused the test agent config"

# The service's WSDL, straight from spyne (its address is replaced by the gateway's below).
curl -sS --max-time 10 --cacert "$CR_PKI/upstream-ca.pem" --cert "$CR_PKI/pki-soap-connector.pem" \
  --key "$CR_PKI/pki-soap-connector.key" "https://localhost:$SOAP_PORT/hello?wsdl" -o "$CR_TMP/hello.wsdl" ||
  fail "could not fetch the WSDL from the spyne service"
grep -q 'soap12:binding' "$CR_TMP/hello.wsdl" || fail "the spyne service does not offer a SOAP 1.2 binding"

HELLO=https://pki.example.com:$GW_PUBLIC_PORT/hello
zeep_call() { # OPERATION ARG: one JSON line
  "$CR_PY" "$CR_SRC/tests/lib/zeep_call.py" "$CR_TMP/hello.wsdl" "$HELLO" "$CR_PKI/public-ca.pem" \
    "$CR_PKI/cms-admin.pem" "$CR_PKI/cms-admin.key" "$@"
}
interim() { # MODE [ARG...]: one JSON line (tests/lib/interim_client.py)
  "$CR_PY" "$CR_SRC/tests/lib/interim_client.py" 127.0.0.1 "$GW_PUBLIC_PORT" "$CR_PKI/public-ca.pem" \
    cms.example.com "$CR_PKI/cms-admin.pem" "$CR_PKI/cms-admin.key" "$@"
}
soap11='<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><x/></soap:Body></soap:Envelope>'

start_gateway

# --- no agent: the gateway's own faults, in the caller's SOAP version -------------------------
r=$(zeep_call say_hello nobody)
assert_eq "$(json_get "$r" http)" 500 "zeep without agent: HTTP status"
assert_contains "$(json_get "$r" fault.code)" "Receiver" "zeep without agent: SOAP 1.2 Receiver fault"
assert_contains "$(json_get "$r" fault.message)" "no agent of this service's relay group is connected" \
  "zeep's Fault carries the relay's reason"
assert_eq "$(json_get "$r" x_ccrelay_error)" no_tunnel "X-Ccrelay-Error on the SOAP 1.2 fault"
assert_contains "$(json_get "$r" content_type)" "application/soap+xml" "SOAP 1.2 fault content type"

st=$(relay_curl "$CR_TMP/f11" pki.example.com /hello -D "$CR_TMP/f11.h" -H 'Content-Type: text/xml; charset=utf-8' \
  -H 'SOAPAction: "say_hello"' --data-binary "$soap11")
assert_eq "$st" 500 "SOAP 1.1 caller without agent"
assert_file_contains "$CR_TMP/f11" '<faultcode>soap:Server</faultcode>' "SOAP 1.1 fault"
assert_file_contains "$CR_TMP/f11" 'schemas.xmlsoap.org/soap/envelope' "SOAP 1.1 envelope"
assert_file_contains "$CR_TMP/f11" '<http-status>503</http-status>' "the real status in the fault's detail"
assert_file_contains "$CR_TMP/f11.h" '^[Xx]-[Cc]crelay-[Ee]rror: no_tunnel' "X-Ccrelay-Error on the SOAP 1.1 fault"
assert_file_contains "$CR_TMP/f11.h" '^[Cc]ontent-[Tt]ype: text/xml' "SOAP 1.1 fault content type"
st=$(relay_curl "$CR_TMP/j0" cms.example.com /test/status?code=200)
assert_eq "$st" 503 "a JSON caller without agent still gets 503"

# A caller holding its body back for a 100 gets the final answer at once, and the connection closes
# (the body it holds can never be told apart from a next request).
r=$(interim hold 4096)
assert_eq "$(json_get "$r" heads.0.status)" 503 "Expect: 100-continue without agent: final answer"
assert_eq "$(json_get "$r" closed)" true "the connection closes after a final answer that replaced the 100"
(($(json_get "$r" heads.0.ms) < 1000)) || fail "the final answer took $(json_get "$r" heads.0.ms) ms"

start_agent agent "$CR_TMP/agent.yaml" 2

# --- ALPN: http/1.0, and none ---------------------------------------------------------------
st=$(relay_curl "$CR_TMP/a10" cms.example.com '/test/status?code=200' --http1.0 -v)
assert_eq "$st" 200 "curl --http1.0"
assert_file_contains "$CR_TMP/a10.err" 'ALPN.*http/1\.0' "curl offered http/1.0"
assert_file_contains "$CR_TMP/a10.err" '> GET /test/status\?code=200 HTTP/1\.0' "curl spoke HTTP/1.0"
st=$(relay_curl "$CR_TMP/anone" cms.example.com '/test/status?code=200' --no-alpn)
assert_eq "$st" 200 "a caller without ALPN"
printf 'GET /test/status?code=200 HTTP/1.1\r\nHost: cms.example.com\r\nConnection: close\r\n\r\n' >"$CR_TMP/req.raw"
out=$(openssl s_client -connect "127.0.0.1:$GW_PUBLIC_PORT" -servername cms.example.com -alpn h2 \
  -CAfile "$CR_PKI/public-ca.pem" -quiet <"$CR_TMP/req.raw" 2>&1 || true)
assert_contains "$out" "no application protocol" "ALPN h2 alone is still refused"

# --- 1xx: Expect: 100-continue with curl --------------------------------------------------------
head -c $((5 * 1024 * 1024)) /dev/urandom >"$CR_TMP/5m.bin"
head -c 2048 /dev/urandom >"$CR_TMP/2k.bin"
for f in 5m 2k; do
  t=$(curl -sS --max-time 20 -o "$CR_TMP/e-$f" -w '%{http_code} %{time_total}' -v --expect100-timeout 10 \
    --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
    -H 'Expect: 100-continue' -H 'Content-Type: application/octet-stream' --data-binary "@$CR_TMP/$f.bin" \
    "https://cms.example.com:$GW_PUBLIC_PORT/test/sha256" 2>"$CR_TMP/e-$f.err")
  assert_eq "${t% *}" 200 "POST $f with Expect: 100-continue"
  assert_file_contains "$CR_TMP/e-$f.err" '> Expect: 100-continue' "curl sent Expect ($f)"
  assert_file_contains "$CR_TMP/e-$f.err" '< HTTP/1\.1 100 Continue' "curl got the 100 Continue ($f)"
  assert_eq "$(json_get "$(cat "$CR_TMP/e-$f")" sha256)" "$(sha256sum "$CR_TMP/$f.bin" | cut -d' ' -f1)" \
    "the upstream got the whole body ($f)"
  awk -v t="${t#* }" 'BEGIN { exit !(t < 1.0) }' || fail "POST $f with Expect: 100-continue took ${t#* } s (>= 1 s)"
  cr_log "POST $f with Expect: 100-continue: ${t#* } s"
done

# A client that really waits for the 100 before its body.
r=$(interim expect 4096)
assert_eq "$(json_get "$r" heads.0.status)" 100 "the first head is 100 Continue"
assert_eq "$(json_get "$r" heads.1.status)" 200 "then the final answer"
assert_eq "$(json_get "$r" sent_body)" true "the body went after the 100"
(($(json_get "$r" heads.0.ms) < 1000)) || fail "the 100 Continue took $(json_get "$r" heads.0.ms) ms"
assert_eq "$(json_get "$(json_get "$r" body)" bytes)" 4096 "the upstream got the body"

# The agent answers before the upstream's 100 could come (no route): the final answer at once, then close.
r=$(interim hold 4096 /nowhere)
assert_eq "$(json_get "$r" heads.0.status)" 404 "Expect: 100-continue, no route: final answer"
assert_eq "$(json_get "$r" closed)" true "the connection closes after it"

# --- 103 Early Hints -------------------------------------------------------------------------
r=$(interim hints)
assert_eq "$(json_get "$r" heads.0.status)" 103 "103 Early Hints reaches an HTTP/1.1 caller"
assert_contains "$(json_get "$r" heads.0.fields)" '</style.css>; rel=preload; as=style' "with its Link field"
assert_eq "$(json_get "$r" heads.1.status)" 200 "then the 200"
assert_eq "$(json_get "$(json_get "$r" body)" hinted)" true "and its body"
r=$(interim hints10)
assert_eq "$(json_get "$r" heads.0.status)" 200 "an HTTP/1.0 caller gets no 1xx"
assert_eq "$("$CR_PY" -c 'import json,sys; print(len(json.loads(sys.argv[1])["heads"]))' "$r")" 1 \
  "an HTTP/1.0 caller gets one head"

# --- SOAP 1.2 with zeep and spyne, routed by the action parameter --------------------------------
before=$(request_count soap12)
r=$(zeep_call say_hello zeep)
assert_eq "$(json_get "$r" result)" "Hello, zeep" "zeep -> gateway -> agent -> spyne (SOAP 1.2)"
assert_eq "$(json_get "$r" http)" 200
assert_eq "$(request_count soap12)" $((before + 1)) "the call reached spyne"
# say_goodbye names another action: route hello-other, whose upstream refuses; the agent's SOAP 1.2 fault.
r=$(zeep_call say_goodbye zeep)
assert_eq "$(json_get "$r" http)" 500 "agent-made fault: HTTP 500"
assert_contains "$(json_get "$r" fault.code)" "Receiver" "agent-made fault: SOAP 1.2 Receiver"
assert_contains "$(json_get "$r" fault.message)" "connect" "the agent's reason reaches zeep"
assert_eq "$(json_get "$r" x_ccrelay_error)" upstream_failed "X-Ccrelay-Error from the agent"
assert_eq "$(request_count soap12)" $((before + 1)) "say_goodbye did not reach spyne"
# SOAP 1.1: SOAPAction names the same route (quotes stripped), and the agent's fault is SOAP 1.1.
st=$(relay_curl "$CR_TMP/s11" pki.example.com /hello -H 'Content-Type: text/xml; charset=utf-8' \
  -H 'SOAPAction: "say_hello"' --data-binary "$soap11")
assert_eq "$(request_count soap12)" $((before + 2)) "SOAPAction \"say_hello\" reached spyne"
assert_file_lacks "$CR_TMP/s11" 'ccrelay-error' "spyne answered, not ccrelay"
st=$(relay_curl "$CR_TMP/s11b" pki.example.com /hello -D "$CR_TMP/s11b.h" -H 'Content-Type: text/xml; charset=utf-8' \
  -H 'SOAPAction: "say_goodbye"' --data-binary "$soap11")
assert_eq "$st" 500 "agent-made SOAP 1.1 fault: HTTP 500"
assert_file_contains "$CR_TMP/s11b" '<faultcode>soap:Server</faultcode>' "agent-made SOAP 1.1 fault"
assert_file_contains "$CR_TMP/s11b" '<http-status>502</http-status>' "the real status in its detail"
assert_file_contains "$CR_TMP/s11b.h" '^[Xx]-[Cc]crelay-[Ee]rror: upstream_failed'
assert_eq "$(request_count soap12)" $((before + 2)) "say_goodbye (SOAP 1.1) did not reach spyne"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
