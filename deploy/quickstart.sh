#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The ccrelay demo, on a fresh Debian 12 machine:
#   installs dependencies, builds, makes a throwaway PKI, starts a CMS Mobile JSON connector and a PKI
#   SOAP policyService (simulators), a gateway and an agent on 127.0.0.1, enrolls a device through the
#   tunnel, makes a SOAP call, verifies the issued certificate with openssl, and stops everything.
# Exit status 0 means every step worked. Set KEEP_TMP=1 to keep the generated files and logs.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$(pwd)

deploy/install-deps.sh
cmake -S "$src" -B "$src/build/release" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCCRELAY_TESTS=OFF >/dev/null
cmake --build "$src/build/release" -j"$(nproc)" >/dev/null
export CCRELAY_BIN=$src/build/release/ccrelay
# The demo runs as whoever started it, root included (the roles refuse root unless told).
export CCRELAY_ALLOW_ROOT=1

. "$src/tests/lib/common.sh"
. "$src/tests/lib/relay.sh"
cr_init quickstart 180
say() { printf '\n== %s\n' "$*"; }

say "Throwaway PKI: tunnel CA, gateway and agent certificates, the three connector identities"
make_pki
ls "$CR_PKI" | sed -n 's/\.p12$//p' | sed 's/^/   identity: /'

say "On-prem services (simulated): CMS Mobile JSON connector and PKI SOAP policyService, mTLS required"
start_cms_sim
start_pki_sim
echo "   CMS on 127.0.0.1:$CMS_PORT (requires CN=CMS JSON connector), PKI on 127.0.0.1:$PKI_PORT (requires CN=PKI SOAP connector)"

say "Gateway (cloud side) and agent (inside the firewall; it dials out)"
write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms-json "$CMS_PORT")
$(pki_route pki-soap "$PKI_PORT")"
sed -i 's/level: debug/level: info/' "$CR_TMP/gateway.yaml" "$CR_TMP/agent.yaml"
"$CCRELAY_BIN" check -c "$CR_TMP/gateway.yaml"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 2
echo "   gateway: public https://127.0.0.1:$GW_PUBLIC_PORT, tunnel 127.0.0.1:$GW_TUNNEL_PORT; agent: 2 tunnels up"

say "Console -> gateway -> tunnel -> agent -> CMS: Test Connection"
st=$(relay_curl "$CR_TMP/test.json" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
  -d '{"action":"test"}')
[[ $st == 200 ]] || fail "Test Connection answered $st: $(cat "$CR_TMP/test.json")"
echo "   HTTP $st $(cat "$CR_TMP/test.json")"

say "Enroll a device through the tunnel"
st=$(relay_curl "$CR_TMP/enroll.json" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
  -d '{"action":"enroll","profile":"Mobile Authentication","key_format":"pem",
       "datasource":{"cn":"alice","mail":"alice@acme.example","mobileserial":"F2LX1234","o":"ACME Ltd","ou":"Sales"}}')
[[ $st == 200 ]] || fail "enrollment answered $st: $(cat "$CR_TMP/enroll.json")"
json_get "$(cat "$CR_TMP/enroll.json")" certificate >"$CR_TMP/device.pem"
echo "   HTTP $st, serial $(json_get "$(cat "$CR_TMP/enroll.json")" serial)"

say "SOAP call to the PKI policyService through the tunnel"
st=$(relay_curl "$CR_TMP/soap.xml" pki.example.com /policyService -H 'Content-Type: text/xml; charset=utf-8' \
  -H 'SOAPAction: "urn:ccrelay:sim:opentrust-pki:policyService/GetVersion"' --data-binary \
  '<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body><p:GetVersion xmlns:p="urn:ccrelay:sim:opentrust-pki:policyService"/></soap:Body></soap:Envelope>')
[[ $st == 200 ]] || fail "SOAP call answered $st: $(cat "$CR_TMP/soap.xml")"
echo "   HTTP $st, PKI version: $(sed -n 's:.*<[^>]*Version>\([^<]*\)</[^>]*Version>.*:\1:p' "$CR_TMP/soap.xml")"

say "Verify the enrolled certificate"
openssl verify -CAfile "$CR_PKI/issuing-ca.pem" "$CR_TMP/device.pem"
echo "   $(openssl x509 -in "$CR_TMP/device.pem" -noout -subject -nameopt RFC2253)"
echo "   $(openssl x509 -in "$CR_TMP/device.pem" -noout -issuer -nameopt RFC2253)"

say "Access log lines (gateway, then agent)"
grep 'msg="access"' "$(log_of gateway)" | tail -n 3
grep 'msg="access"' "$(log_of agent)" | tail -n 3

say "Stopping everything this demo started"
stop_ccrelay agent
stop_ccrelay gateway
cr_pass
