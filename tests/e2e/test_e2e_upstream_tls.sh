#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The agent verifies every upstream: an expired certificate, one from an unknown CA and one for
# another host name each give 502 with a JSON body (500 with a SOAP Fault on a SOAP route), and an agent log line naming
# the reason. Timeouts and refused connections give honest statuses too.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_upstream_tls 180

make_pki
sim_with_cert() { # NAME CERTBASE
  start_sim "$1" cms_sim.py --cert "$CR_PKI/$2.pem" --key "$CR_PKI/$2.key" --client-ca "$CR_PKI/client-ca.pem" \
    --require-cn "CMS JSON connector"
}
sim_with_cert expired upstream-expired; EXPIRED_PORT=$SIM_PORT
sim_with_cert unknownca upstream-unknownca; UNKNOWN_PORT=$SIM_PORT
sim_with_cert wronghost upstream-wronghost; WRONG_PORT=$SIM_PORT
start_cms_sim
closed_port=$(pick_free_port)

write_gateway_conf "$CR_TMP/gateway.yaml"
routes="$(cms_route expired "$EXPIRED_PORT" cms-json-connector.p12 localhost /expired/)
$(cms_route unknownca "$UNKNOWN_PORT" cms-json-connector.p12 localhost /unknownca/)
$(cms_route wronghost "$WRONG_PORT" cms-json-connector.p12 localhost /wronghost/)
$(cms_route refused "$closed_port" cms-json-connector.p12 localhost /refused/)
$(cms_route slow "$CMS_PORT" cms-json-connector.p12 localhost /test/slow)
  - name: soap-expired
    match: { path_prefix: /policyService }
    soap: true
    upstream:
      url: https://127.0.0.1:$EXPIRED_PORT
      server_name: localhost
      ca: $CR_PKI/upstream-ca.pem
      identity: { pkcs12: $CR_PKI/cms-json-connector.p12, password_file: $CR_PKI/cms-json-connector.pass }"
write_agent_conf "$CR_TMP/agent.yaml" "$routes"
# The slow route answers after 3 s but allows 1 s.
sed -i '/name: slow/,/response_timeout/ s/response_timeout: 10s/response_timeout: 1s/' "$CR_TMP/agent.yaml"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 1

check_502() { # PATH REASON_REGEX
  local st
  st=$(relay_curl "$CR_TMP/out" cms.example.com "$1" -H 'Content-Type: application/json' -d '{"action":"test"}')
  assert_eq "$st" 502 "upstream $1"
  assert_file_contains "$CR_TMP/out" '"error":"upstream_failed"' "JSON error body for $1"
  # The body says what failed without internal addresses; the log keeps them under the request id.
  assert_file_lacks "$CR_TMP/out" '127\.0\.0\.1|localhost|:[0-9]{4,5}' "no internal address in the body for $1"
  assert_file_contains "$CR_TMP/out" 'the (connection to the |TLS handshake with the )?upstream of route' "the body names the failure for $1"
  local id
  id=$(grep -o '"request_id":"[0-9a-f]*"' "$CR_TMP/out" | cut -d'"' -f4)
  [[ -n $id ]] || fail "no request id in the body for $1"
  wait_for_log agent "msg=\"upstream failed\" request_id=$id.*reason=\"[^\"]*$2" 5
}
check_502 /expired/x 'certificate has expired'
check_502 /unknownca/x 'unable to get local issuer certificate'
check_502 /wronghost/x '[Hh]ostname mismatch'
check_502 /refused/x '[Cc]onnection refused'

st=$(relay_curl "$CR_TMP/soapf" pki.example.com /policyService -H 'SOAPAction: "x"' --data-binary '<x/>')
assert_eq "$st" 500 "SOAP route: a SOAP Fault goes with 500"
assert_file_contains "$CR_TMP/soapf" '<faultcode>soap:Server</faultcode>' "SOAP Fault body on a SOAP route"
assert_file_contains "$CR_TMP/soapf" '<http-status>502</http-status>' "the real status in the Fault's detail"

st=$(relay_curl "$CR_TMP/slow" cms.example.com '/test/slow?ms=3000')
assert_eq "$st" 504 "response timeout"
assert_file_contains "$CR_TMP/slow" '"error":"upstream_timeout"'

# Nothing ever reached the misconfigured upstreams' HTTP layer (the TLS handshake failed first).
for n in expired unknownca wronghost; do
  assert_eq "$(request_count "$n")" 0 "$n received no request"
done

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
