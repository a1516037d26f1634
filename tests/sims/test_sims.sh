#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# shellcheck disable=SC2119  # helpers with optional arguments are called without any
# Self-test of the e2e tooling: the test PKI, the CMS and PKI simulators, the nginx upstream and the
# helpers of tests/lib/common.sh. Run by hand:  bash tests/sims/test_sims.sh   (KEEP_TMP=1 keeps the
# temp dir). Prints PASS or FAIL; exit status 0 only on PASS. Needs openssl, curl, nginx.
set -euo pipefail
# shellcheck source=tests/lib/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cr_init test_sims 30

T=$CR_TMP

# ---- PKI --------------------------------------------------------------------------------------
t0=$(date +%s%N)
make_pki
ms=$((($(date +%s%N) - t0) / 1000000))
cr_log "mkpki: ${ms} ms"
((ms < 5000)) || fail "mkpki.sh took ${ms} ms (limit 5000)"
P=$CR_PKI

for base in tunnel-ca gateway-tunnel agent agent-nogroup other-ca agent-otherca public upstream-ca \
  cms-server pki-server nginx-server upstream-expired upstream-unknownca upstream-wronghost \
  client-ca cms-json-connector cms-admin pki-soap-connector issuing-ca; do
  [[ -s $P/$base.pem && -s $P/$base.key ]] || fail "missing $base.pem/.key"
done
for f in public-ca.pem cms-json-connector.p12 cms-admin.p12 pki-soap-connector.p12 \
  cms-json-connector-legacy.p12 corrupt.p12 cms-json-connector.pass cms-admin.pass \
  pki-soap-connector.pass; do
  [[ -s $P/$f ]] || fail "missing $f"
done
[[ -z $(find "$P" -name '.mkpki.*') ]] || fail "mkpki left its temp dir behind"

verify() { # CA CERT -> openssl verify output
  openssl verify -CAfile "$P/$1.pem" "$P/$2.pem" 2>&1
}
for c in gateway-tunnel agent agent-nogroup; do assert_eq "$(verify tunnel-ca $c)" "$P/$c.pem: OK"; done
for c in cms-server pki-server nginx-server upstream-wronghost; do
  assert_eq "$(verify upstream-ca $c)" "$P/$c.pem: OK"
done
for c in cms-json-connector cms-admin pki-soap-connector; do
  assert_eq "$(verify client-ca $c)" "$P/$c.pem: OK"
done
assert_eq "$(verify public-ca public)" "$P/public.pem: OK"
assert_eq "$(verify other-ca agent-otherca)" "$P/agent-otherca.pem: OK"
assert_eq "$(verify other-ca upstream-unknownca)" "$P/upstream-unknownca.pem: OK"
assert_contains "$(verify tunnel-ca agent-otherca)" "unable to get local issuer"
assert_contains "$(verify upstream-ca upstream-unknownca)" "unable to get local issuer"
assert_contains "$(openssl verify -CAfile "$P/upstream-ca.pem" "$P/upstream-expired.pem" 2>&1)" \
  "certificate has expired"
openssl x509 -in "$P/upstream-expired.pem" -noout -checkend 0 >/dev/null &&
  fail "upstream-expired.pem is not expired"
assert_contains "$(openssl x509 -in "$P/agent.pem" -noout -subject)" "CN = acme-agent-1"
assert_contains "$(openssl x509 -in "$P/agent.pem" -noout -ext extendedKeyUsage)" "Client Authentication"
assert_contains "$(openssl x509 -in "$P/agent-nogroup.pem" -noout -subject)" "CN = stranger-agent"
assert_contains "$(openssl x509 -in "$P/agent-otherca.pem" -noout -subject)" "CN = acme-agent-1"
san=$(openssl x509 -in "$P/gateway-tunnel.pem" -noout -ext subjectAltName)
assert_contains "$san" "DNS:localhost"
assert_contains "$san" "IP Address:127.0.0.1"
assert_contains "$san" "IP Address:0:0:0:0:0:0:0:1"
san=$(openssl x509 -in "$P/public.pem" -noout -ext subjectAltName)
assert_contains "$san" "DNS:cms.example.com"
assert_contains "$san" "DNS:pki.example.com"
assert_contains "$(openssl x509 -in "$P/cms-server.pem" -noout -ext subjectAltName)" "DNS:cms.internal"
san=$(openssl x509 -in "$P/upstream-wronghost.pem" -noout -ext subjectAltName)
assert_contains "$san" "DNS:wrong.example"
assert_not_contains "$san" "IP Address"
assert_not_contains "$san" "localhost"
assert_contains "$(openssl x509 -in "$P/pki-soap-connector.pem" -noout -subject)" \
  "O = ACME Test PKI, OU = Testing, CN = PKI SOAP connector"

# Passwords end with one newline, which openssl's file: reader (and ccrelay's loader) strips.
assert_eq "$(tail -c 1 "$P/cms-json-connector.pass" | od -An -tx1 | tr -d ' ')" "0a" "pass file newline"
assert_eq "$(wc -l <"$P/cms-json-connector.pass" | tr -d ' ')" "1" "pass file has one line"
p12info() { openssl pkcs12 -in "$P/$1" -info -noout -passin "file:$P/$2.pass" "${@:3}" 2>&1; }
info=$(p12info cms-json-connector.p12 cms-json-connector)
assert_contains "$info" "AES-256-CBC" "modern p12"
info=$(p12info cms-admin.p12 cms-admin)
assert_contains "$info" "AES-256-CBC" "modern p12"
info=$(p12info pki-soap-connector.p12 pki-soap-connector)
assert_contains "$info" "AES-256-CBC" "modern p12"
info=$(p12info cms-json-connector-legacy.p12 cms-json-connector -legacy)
assert_contains "$info" "pbeWithSHA1And40BitRC2-CBC" "legacy p12"
assert_contains "$info" "pbeWithSHA1And3-KeyTripleDES-CBC" "legacy p12"
p12info cms-json-connector-legacy.p12 cms-json-connector -nokeys >/dev/null &&
  fail "legacy p12 opened without the legacy provider"
openssl pkcs12 -in "$P/corrupt.p12" -noout -passin pass:x >/dev/null 2>&1 && fail "corrupt.p12 parsed"
# Rerunning overwrites cleanly: checked on a copy, in the background while the rest runs.
cp -a "$P" "$T/pki-rerun"
start_bg mkpki-rerun bash "$CR_SRC/tests/pki/mkpki.sh" "$T/pki-rerun"

# ---- CMS simulator ------------------------------------------------------------------------------
cr_log "CMS simulator"
start_cms_sim
start_pki_sim
cr_log "cms-sim on $CMS_PORT, pki-sim on $PKI_PORT"

CMS_ID=(--cacert "$P/upstream-ca.pem" --cert "$P/cms-json-connector.pem" --key "$P/cms-json-connector.key")
MDM=https://localhost:$CMS_PORT/connector/mdm.cgi
JSON=(-H 'Content-Type: application/json')
cms() { # BODY -> status; body in $T/out
  curl_status "$T/out" "${CMS_ID[@]}" "${JSON[@]}" -H 'X-Request-Id: selftest-1' --data-binary "$1" "$MDM"
}

assert_eq "$(cms '{"action":"test"}')" 200 "test connection"
out=$(cat "$T/out")
assert_eq "$(json_get "$out" version)" "cms-sim 1"
assert_eq "$(json_get "$out" connector)" "CMS JSON connector"
assert_eq "$(json_get "$out" request_id)" "selftest-1"

DS='"datasource":{"cn":"alice","mail":"alice@acme.example","mobileserial":"F2LX1234","o":"ACME Ltd","ou":"Sales"}'
assert_eq "$(cms '{"action":"enroll","profile":"Mobile Authentication",'"$DS"'}')" 200 "enroll"
out=$(cat "$T/out")
json_get "$out" certificate >"$T/dev.pem"
assert_eq "$(openssl verify -CAfile "$P/issuing-ca.pem" "$T/dev.pem" 2>&1)" "$T/dev.pem: OK" "enrolled cert"
subj=$(openssl x509 -in "$T/dev.pem" -noout -subject -nameopt RFC2253)
assert_contains "$subj" "CN=alice"
assert_contains "$subj" "serialNumber=F2LX1234"
assert_contains "$subj" "OU=Sales"
assert_contains "$subj" "O=ACME Ltd"
assert_contains "$(openssl x509 -in "$T/dev.pem" -noout -ext subjectAltName)" "email:alice@acme.example"
serial=$(json_get "$out" serial)
assert_eq "$serial" "$(openssl x509 -in "$T/dev.pem" -noout -serial | sed 's/^serial=//; s/^0*//')" "serial"
json_get "$out" pkcs12 | base64 -d >"$T/dev.p12"
json_get "$out" pkcs12_password >"$T/dev.pass"
openssl pkcs12 -in "$T/dev.p12" -passin "file:$T/dev.pass" -nokeys -clcerts 2>/dev/null |
  openssl x509 -noout -subject -nameopt RFC2253 | grep -q 'CN=alice' || fail "returned PKCS#12 unreadable"

# CSR enrollment: the certificate carries the CSR's key.
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$T/csr.key" \
  -subj /CN=ignored -out "$T/dev.csr" 2>/dev/null
csr=$("$CR_PY" -c 'import json,sys; print(json.dumps(open(sys.argv[1]).read()))' "$T/dev.csr")
assert_eq "$(cms '{"action":"enroll","profile":"S/MIME","csr":'"$csr"','"$DS"'}')" 200 "enroll csr"
out=$(cat "$T/out")
assert_not_contains "$out" "pkcs12" "no key material for a CSR"
json_get "$out" certificate >"$T/dev2.pem"
assert_eq "$(openssl x509 -in "$T/dev2.pem" -noout -pubkey)" "$(openssl pkey -in "$T/csr.key" -pubout)" "CSR key"
assert_contains "$(openssl x509 -in "$T/dev2.pem" -noout -ext extendedKeyUsage)" "E-mail Protection"

# Renew, status, revoke.
cr_log "Renew, status, revoke"
assert_eq "$(cms '{"action":"renew","serial":"'"$serial"'","key_format":"pem","key_type":"rsa-2048"}')" 200 "renew"
out=$(cat "$T/out")
assert_eq "$(json_get "$out" renewed_from)" "$serial"
assert_contains "$(json_get "$out" private_key)" "BEGIN PRIVATE KEY"
assert_ne "$(json_get "$out" serial)" "$serial" "renewal has a new serial"
assert_eq "$(cms '{"action":"status","serial":"'"$serial"'"}')" 200 "status"
assert_eq "$(json_get "$(cat "$T/out")" state)" "valid"
assert_eq "$(cms '{"action":"revoke","serial":"'"$serial"'","reason":"keyCompromise"}')" 200 "revoke"
assert_eq "$(cms '{"action":"revoke","serial":"'"$serial"'"}')" 409 "revoke twice"
assert_eq "$(cms '{"action":"renew","serial":"'"$serial"'"}')" 409 "renew revoked"
assert_eq "$(cms '{"action":"status","serial":"'"$serial"'"}')" 200 "status"
assert_eq "$(json_get "$(cat "$T/out")" state)" "revoked"
assert_eq "$(cms '{"action":"revoke","serial":"ABCDEF"}')" 404 "revoke unknown serial"

# Errors.
cr_log "Errors"
assert_eq "$(cms '{"action":')" 400 "invalid JSON"
assert_eq "$(json_get "$(cat "$T/out")" error)" "invalid_json"
assert_eq "$(cms '{"action":"enroll","datasource":{"cn":"x","o":"y"}}')" 400 "missing fields"
out=$(cat "$T/out")
assert_eq "$(json_get "$out" error)" "missing_fields"
assert_contains "$out" "datasource.mail"
assert_contains "$out" "datasource.mobileserial"
assert_contains "$(json_get "$out" message)" "profile"
assert_eq "$(cms '{"action":"enroll","profile":"VPN",'"$DS"'}')" 400 "unknown profile"
assert_eq "$(json_get "$(cat "$T/out")" error)" "unknown_profile"
assert_eq "$(cms '{"action":"fly"}')" 400 "unknown action"
assert_eq "$(cms '[1,2]')" 400 "not an object"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" "$MDM")" 405 "GET on the connector"
assert_contains "$(cat "$T/out")" "method_not_allowed"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" "${JSON[@]}" -d '{}' "https://localhost:$CMS_PORT/connector/x")" 404 "wrong path"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" -d '{"action":"test"}' "$MDM")" 415 "form content type"

# Client identities: right CA but wrong CN -> 403; another CA or none -> TLS refused.
cr_log "Client identities"
assert_eq "$(curl_status "$T/out" --cacert "$P/upstream-ca.pem" --cert "$P/cms-admin.pem" \
  --key "$P/cms-admin.key" "${JSON[@]}" -d '{"action":"test"}' "$MDM")" 403 "CMS Admin identity"
assert_eq "$(json_get "$(cat "$T/out")" error)" "forbidden"
assert_eq "$(curl_status "$T/out" --cacert "$P/upstream-ca.pem" --cert "$P/agent-otherca.pem" \
  --key "$P/agent-otherca.key" "${JSON[@]}" -d '{"action":"test"}' "$MDM")" 000 "other CA identity"
assert_eq "$(curl_status "$T/out" --cacert "$P/upstream-ca.pem" "${JSON[@]}" -d '{"action":"test"}' "$MDM")" \
  000 "no client certificate"
# The PKCS#12 identity works as well as the PEM pair (curl reads it with OpenSSL 3).
assert_eq "$(curl_status "$T/out" --cacert "$P/upstream-ca.pem" --cert-type P12 \
  --cert "$P/cms-json-connector.p12:$(cat "$P/cms-json-connector.pass")" "${JSON[@]}" \
  -d '{"action":"test"}' "$MDM")" 200 "PKCS#12 identity"

# Test-only endpoints, keep-alive.
cr_log "Test-only endpoints"
B=https://127.0.0.1:$CMS_PORT/test
want=$("$CR_PY" "$CR_SIMS/simlib.py" pattern 2500000 | sha256sum | cut -d' ' -f1)
assert_eq "$(curl_status "$T/big" "${CMS_ID[@]}" -D "$T/big.h" "$B/big?bytes=2500000")" 200 "big"
assert_eq "$(sha256sum <"$T/big" | cut -d' ' -f1)" "$want" "big body digest"
assert_file_contains "$T/big.h" "^X-Sim-SHA256: $want"
assert_file_contains "$T/big.h" "^Content-Length: 2500000"
assert_eq "$(curl_status "$T/big2" "${CMS_ID[@]}" -D "$T/big2.h" "$B/big?bytes=2500000&chunked=1&chunk=7000")" 200
assert_eq "$(sha256sum <"$T/big2" | cut -d' ' -f1)" "$want" "chunked big body digest"
assert_file_contains "$T/big2.h" "^Transfer-Encoding: chunked"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" -H 'Transfer-Encoding: chunked' --data-binary "@$T/big" "$B/sha256")" 200
out=$(cat "$T/out")
assert_eq "$(json_get "$out" sha256)" "$want" "chunked upload digest"
assert_eq "$(json_get "$out" bytes)" 2500000
assert_eq "$(json_get "$out" chunked)" true
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" --data-binary "@$T/big" "$B/sha256")" 200
assert_eq "$(json_get "$(cat "$T/out")" sha256)" "$want" "content-length upload digest"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" -H 'X-Request-Id: rid-42' -H 'Forwarded: for=192.0.2.1' \
  "$B/echo-headers")" 200
out=$(cat "$T/out")
assert_eq "$(json_get "$out" lower.x-request-id.0)" "rid-42"
assert_eq "$(json_get "$out" lower.forwarded.0)" "for=192.0.2.1"
assert_eq "$(json_get "$out" client_cn)" "CMS JSON connector"
curl -sS --max-time 10 -v "${CMS_ID[@]}" -o /dev/null -o /dev/null -o /dev/null "$B/slow?ms=50" \
  "$B/status?code=204" "$B/big?bytes=100" 2>"$T/ka.err" || fail "keep-alive requests failed"
assert_file_contains "$T/ka.err" "Re-using existing connection" "keep-alive"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" "$B/status?code=503")" 503 "status endpoint"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" "$B/drop")" 000 "drop"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" "$B/nope")" 404 "unknown test endpoint"

# Request log: one line per request, with the request id.
assert_file_contains "$CR_TMP/cms.requests" '"POST /connector/mdm.cgi HTTP/1.1" cn="CMS JSON connector" rid=selftest-1$'
assert_file_contains "$CR_TMP/cms.requests" '"GET /test/echo-headers HTTP/1.1" .* rid=rid-42$'
n=$(request_count cms)
((n >= 30)) || fail "cms request log has only $n lines"

# HTTP/1.1 framing on a raw socket (plain HTTP sim): pipelining, chunk extensions and trailers,
cr_log "HTTP/1.1 framing"
# refused ambiguous framing, a bad chunk answered 400 and closed.
start_sim raw cms_sim.py --plain
"$CR_PY" - "$SIM_PORT" <<'PY' || fail "raw HTTP/1.1 framing checks"
import socket, sys
def talk(data):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=5)
    s.sendall(data)
    out = b""
    while True:
        d = s.recv(65536)
        if not d:
            return out
        out += d
abc = b"ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
r = talk(b"POST /test/sha256 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"1;ext=1\r\na\r\n2\r\nbc\r\n0\r\nX-Trailer: y\r\n\r\n"
         b"POST /test/sha256 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
         b"GET /test/status?code=204 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
assert r.count(abc) == 2 and r.count(b"HTTP/1.1 200 ") == 2 and b"HTTP/1.1 204 " in r, r
for bad in (b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\nabc",
            b"Content-Length: 1, 2\r\n\r\nab",
            b"Transfer-Encoding: gzip, chunked\r\n\r\n",
            b"Transfer-Encoding: chunked\r\n\r\nzz\r\n"):
    r = talk(b"POST /test/sha256 HTTP/1.1\r\nHost: x\r\n" + bad)
    assert r.startswith(b"HTTP/1.1 400 ") and b"Connection: close" in r, (bad, r)
PY
stop_bg raw

# ---- PKI simulator --------------------------------------------------------------------------------
cr_log "PKI simulator"
PKI_ID=(--cacert "$P/upstream-ca.pem" --cert "$P/pki-soap-connector.pem" --key "$P/pki-soap-connector.key")
PS=https://localhost:$PKI_PORT/policyService
NS=urn:ccrelay:sim:opentrust-pki:policyService
env11() { printf '<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>%s</soap:Body></soap:Envelope>' "$1"; }
env12() { printf '<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="http://www.w3.org/2003/05/soap-envelope"><env:Body>%s</env:Body></env:Envelope>' "$1"; }
soap11() { # ACTION BODY -> status
  curl_status "$T/out" "${PKI_ID[@]}" -H 'Content-Type: text/xml; charset=utf-8' \
    -H "SOAPAction: \"$1\"" --data-binary "$2" "$PS"
}

assert_eq "$(soap11 "$NS/GetProfiles" "$(env11 "<p:GetProfiles xmlns:p=\"$NS\"/>")")" 200 "GetProfiles"
out=$(cat "$T/out")
assert_contains "$out" "<pki:Name>Mobile Authentication</pki:Name>"
assert_contains "$out" "<pki:PKIVersion>4.7.1 (API 2.3, r131349)</pki:PKIVersion>"
assert_eq "$(curl_status "$T/out" "${PKI_ID[@]}" -H "Content-Type: application/soap+xml; charset=utf-8; action=\"$NS/GetVersion\"" \
  --data-binary "$(env12 "<p:GetVersion xmlns:p=\"$NS\"/>")" "$PS")" 200 "SOAP 1.2 GetVersion"
assert_contains "$(cat "$T/out")" "<pki:Version>4.7.1 (API 2.3, r131349)</pki:Version>"
assert_contains "$(cat "$T/out")" "http://www.w3.org/2003/05/soap-envelope"

assert_eq "$(soap11 "$NS/Frobnicate" "$(env11 "<p:Frobnicate xmlns:p=\"$NS\"/>")")" 500 "unknown operation"
assert_contains "$(cat "$T/out")" "<faultcode>soap:Client</faultcode>"
assert_contains "$(cat "$T/out")" "<faultstring>unknown operation Frobnicate</faultstring>"
assert_eq "$(soap11 "" "<soap:Envelope xmlns:soap=\"http://schemas.xmlsoap.org/soap/envelope/\"><soap:Body>")" 500 "malformed XML"
assert_contains "$(cat "$T/out")" "malformed XML"
assert_eq "$(soap11 "" '<!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;</x>')" 500 "DTD"
assert_contains "$(cat "$T/out")" "DTDs and entity declarations are not allowed"
assert_eq "$(soap11 "$NS/GetVersion" "$(env11 "<p:GetProfiles xmlns:p=\"$NS\"/>")")" 500 "SOAPAction mismatch"
assert_contains "$(cat "$T/out")" "does not match operation"
assert_eq "$(curl_status "$T/out" "${PKI_ID[@]}" -H 'Content-Type: text/xml' \
  --data-binary "$(env11 "<p:GetVersion xmlns:p=\"$NS\"/>")" "$PS")" 500 "SOAP 1.1 without SOAPAction"
assert_contains "$(cat "$T/out")" "missing SOAPAction"
assert_eq "$(curl_status "$T/out" "${PKI_ID[@]}" -H 'Content-Type: application/soap+xml' \
  --data-binary "$(env12 "<p:Nope xmlns:p=\"$NS\"/>")" "$PS")" 400 "SOAP 1.2 Sender fault"
assert_contains "$(cat "$T/out")" "<env:Value>env:Sender</env:Value>"
assert_eq "$(curl_status "$T/out" "${PKI_ID[@]}" -H 'Content-Type: application/json' -d '{}' "$PS")" 415 "JSON to SOAP"

op="<p:EnrollCertificate xmlns:p=\"$NS\"><p:Profile>Mobile Authentication</p:Profile><p:Subject><p:cn>bob</p:cn><p:mail>bob@acme.example</p:mail><p:mobileserial>SN-77</p:mobileserial><p:o>ACME Ltd</p:o></p:Subject><p:CSR>$(cat "$T/dev.csr")</p:CSR></p:EnrollCertificate>"
assert_eq "$(soap11 EnrollCertificate "$(env11 "$op")")" 200 "EnrollCertificate"
"$CR_PY" -c 'import sys, xml.etree.ElementTree as ET
r = ET.parse(sys.argv[1]).getroot()
print(r.find(".//{%s}Certificate" % sys.argv[2]).text)' "$T/out" "$NS" >"$T/soap.pem"
assert_eq "$(openssl verify -CAfile "$P/issuing-ca.pem" "$T/soap.pem" 2>&1)" "$T/soap.pem: OK" "SOAP-enrolled cert"

assert_eq "$(curl_status "$T/out" --cacert "$P/upstream-ca.pem" --cert "$P/cms-json-connector.pem" \
  --key "$P/cms-json-connector.key" -H 'Content-Type: text/xml' -H 'SOAPAction: ""' \
  --data-binary "$(env11 "<p:GetVersion xmlns:p=\"$NS\"/>")" "$PS")" 403 "wrong identity for PKI"
assert_contains "$(cat "$T/out")" "<faultcode>soap:Client</faultcode>"
assert_file_contains "$CR_TMP/pki.requests" '"POST /policyService HTTP/1.1" cn="PKI SOAP connector"'

# ---- nginx upstream --------------------------------------------------------------------------------
cr_log "nginx upstream"
start_nginx_upstream
NG=https://localhost:$NGINX_PORT
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" "${JSON[@]}" -d '{"action":"test"}' "$NG/connector/mdm.cgi")" 200 "nginx connector"
out=$(cat "$T/out")
assert_eq "$(json_get "$out" source)" "nginx"
assert_contains "$(json_get "$out" client_dn)" "CN=CMS JSON connector"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" "$NG/connector/mdm.cgi")" 405 "nginx GET connector"
assert_eq "$(curl_status "$T/big" "${CMS_ID[@]}" "$NG/big")" 200 "nginx big"
assert_eq "$(sha256sum <"$T/big" | cut -d' ' -f1)" \
  "$("$CR_PY" "$CR_SIMS/simlib.py" pattern 1048576 | sha256sum | cut -d' ' -f1)" "nginx big digest"
assert_eq "$(curl_status "$T/out" "${CMS_ID[@]}" -H 'X-Request-Id: ng-1' -D "$T/echo.h" "$NG/echo")" 200 "nginx echo"
assert_eq "$(json_get "$(cat "$T/out")" x_request_id)" "ng-1"
assert_file_contains "$T/echo.h" "^X-Echo-Request-Id: ng-1"
assert_eq "$(curl_status "$T/out" --cacert "$P/upstream-ca.pem" "$NG/big")" 400 "nginx without client cert"
assert_contains "$(cat "$T/out")" "No required SSL certificate was sent"
code=$(curl_status "$T/out" --cacert "$P/upstream-ca.pem" --cert "$P/agent-otherca.pem" --key "$P/agent-otherca.key" "$NG/big")
[[ $code == 400 || $code == 000 ]] || fail "nginx accepted a client cert from another CA ($code)"
assert_file_contains "$NGINX_DIR/access.log" '"GET /echo HTTP/1.1" 200'

# ---- mkpki rerun -----------------------------------------------------------------------------------
wait_exit mkpki-rerun 20 || fail "mkpki.sh rerun failed: $(cat "$(log_of mkpki-rerun)")"
cmp -s "$P/client-ca.pem" "$T/pki-rerun/client-ca.pem" && fail "mkpki.sh rerun did not overwrite"
[[ -z $(find "$T/pki-rerun" -name '.mkpki.*') ]] || fail "mkpki rerun left its temp dir behind"
assert_eq "$(openssl verify -CAfile "$T/pki-rerun/client-ca.pem" "$T/pki-rerun/cms-json-connector.pem" 2>&1)" \
  "$T/pki-rerun/cms-json-connector.pem: OK" "after rerun"

# ---- shutdown by PID ----------------------------------------------------------------------------------
cr_log "shutdown by PID"
pids=("${CR_PIDS[@]}")
stop_all
for pid in "${pids[@]}"; do
  alive "$pid" && fail "pid $pid survived stop_all"
done
cr_pass
