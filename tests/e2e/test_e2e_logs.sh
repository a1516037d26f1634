#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Log records no caller can forge: hostile requests (quotes, backslashes, equals signs and spaces in
# every caller-controlled place that reaches a log line, control bytes, 8 KiB values) against gateway +
# agent, in JSON and then in logfmt; every line of both logs must parse strictly (JSON without duplicate
# keys, numbers as numbers; logfmt with a strict tokenizer) and none may carry a forged field.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_logs 180

make_pki
start_cms_sim

long=$(head -c 8192 /dev/zero | tr '\0' 'A')
hostile_requests() {
  local raw
  # Raw requests curl will not build: a quote in the target, a forged Host, a quote-laden SOAPAction and
  # User-Agent, an over-long header value, and a control byte in a header (refused by the parser).
  for raw in \
    'GET /x","level":"error","msg":"forged HTTP/1.1\r\nHost: cms.example.com\r\n\r\n' \
    'GET /nope"x HTTP/1.1\r\nHost: cms.example.com\r\n\r\n' \
    'GET /a HTTP/1.1\r\nHost: cms.example.com" level=error msg="forged\r\n\r\n' \
    'POST /policyService HTTP/1.1\r\nHost: pki.example.com\r\nSOAPAction: "x\\" msg=\\"forged\\" level=error"\r\nUser-Agent: a"b\\c=d e\r\nContent-Length: 2\r\n\r\n{}' \
    'GET /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nX-Request-Id: ","msg":"forged\r\n\r\n' \
    'GET /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nUser-Agent: \x01\x7f\r\n\r\n'; do
    printf "$raw" | "$CR_PY" "$CR_SRC/tests/lib/rawhttps.py" 127.0.0.1 "$GW_PUBLIC_PORT" "$CR_PKI/public-ca.pem" \
      cms.example.com >/dev/null 2>&1 || true
  done
  # Through curl: percent-encoded quotes and backslashes that pass validation and reach the agent, long
  # targets and header values, a path no route matches.
  relay_curl "$CR_TMP/h1" cms.example.com '/connector/mdm.cgi?q=%22,%22level%22:%22error%22,%5C' \
    -H 'User-Agent: x" level=error msg="forged' -H 'Content-Type: application/json' -d '{"action":"test"}' >/dev/null
  relay_curl "$CR_TMP/h2" cms.example.com "/nowhere/$long" -H "User-Agent: $long" >/dev/null
  relay_curl "$CR_TMP/h3" pki.example.com /policyService -H "SOAPAction: \"$long\\\"\"" -H 'Content-Type: text/xml' \
    --data-binary '<x/>' >/dev/null
  relay_curl "$CR_TMP/h4" 'cms.example.com' '/connector/mdm.cgi' -H 'X-Request-Id: a"b' -H 'Content-Type: application/json' \
    -d '{"action":"test"}' >/dev/null
}

for fmt in json logfmt; do
  write_gateway_conf "$CR_TMP/gateway-$fmt.yaml"
  write_agent_conf "$CR_TMP/agent-$fmt.yaml" "$(cms_route cms-json "$CMS_PORT")"
  sed -i "s/^log: { level: debug }$/log: { level: debug, format: $fmt }/" "$CR_TMP/gateway-$fmt.yaml" "$CR_TMP/agent-$fmt.yaml"
  grep -q "format: $fmt" "$CR_TMP/agent-$fmt.yaml" || fail "could not set log.format"
  if [[ $fmt == json ]]; then q='"msg":"'; else q='msg="'; fi
  start_bg "gw-$fmt" "$CCRELAY_BIN" gateway -c "$CR_TMP/gateway-$fmt.yaml"
  wait_for_log "gw-$fmt" "${q}gateway listening\"" 15
  start_bg "agent-$fmt" "$CCRELAY_BIN" agent -c "$CR_TMP/agent-$fmt.yaml"
  wait_for_log "agent-$fmt" "${q}tunnel up\"" 15
  hostile_requests
  stop_ccrelay "agent-$fmt"
  stop_ccrelay "gw-$fmt"
  out=$("$CR_PY" "$CR_SRC/tests/lib/logcheck.py" "$fmt" "$(log_of "gw-$fmt")" "$(log_of "agent-$fmt")") ||
    fail "a $fmt log line does not parse strictly (above)"
  cr_log "$out"
  # The hostile requests did reach the logs (the check above is not vacuous).
  lines=$(cat "$(log_of "gw-$fmt")" "$(log_of "agent-$fmt")" | grep -c 'access\|bad request' || true)
  ((lines >= 8)) || fail "only $lines access/bad-request lines in the $fmt logs"
done
cr_pass
