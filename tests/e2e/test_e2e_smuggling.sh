#!/usr/bin/env bash
# Requests that could be read two ways by two parsers get 400 at the gateway and reach no upstream:
# Content-Length together with Transfer-Encoding, bare-CR line endings, obs-folded headers, plus the
# other checks the gateway adds on top of llhttp (duplicate Host, missing Host, Transfer-Encoding in
# HTTP/1.0, duplicate Content-Length).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_smuggling 120

make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms-json "$CMS_PORT" cms-json-connector.p12 localhost /)"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 1

raw() { # raw NAME: send stdin to the gateway, echo the status
  "$CR_PY" "$CR_SRC/tests/lib/rawhttps.py" 127.0.0.1 "$GW_PUBLIC_PORT" "$CR_PKI/public-ca.pem" cms.example.com \
    2>"$CR_TMP/$1.resp"
}

# A well-formed request works (so the 400s below are about the vectors, not the plumbing).
st=$(printf 'POST /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nContent-Type: application/json\r\nContent-Length: 17\r\nConnection: close\r\n\r\n{"action":"test"}' | raw ok)
assert_eq "$st" 200 "well-formed request"

# Pipelined requests on one connection are answered in order, one exchange at a time.
st=$(printf 'GET /test/status?code=201 HTTP/1.1\r\nHost: cms.example.com\r\n\r\nGET /test/status?code=202 HTTP/1.1\r\nHost: cms.example.com\r\n\r\nGET /test/status?code=203 HTTP/1.1\r\nHost: cms.example.com\r\nConnection: close\r\n\r\n' | raw pipelined)
assert_eq "$st" "201 202 203" "pipelined requests"
# A request answered by the gateway itself (no route to a service) keeps the connection usable.
st=$(printf 'POST /x HTTP/1.1\r\nHost: nowhere.example.com\r\nContent-Length: 5\r\n\r\nhelloGET /test/status?code=204 HTTP/1.1\r\nHost: cms.example.com\r\nConnection: close\r\n\r\n' | raw local)
assert_eq "$st" "404 204" "local answer, then the next request"
before=$(request_count cms)

declare -A vectors=(
  [cl_te]='POST /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG'
  [te_cl]='POST /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nG'
  [cr_only]='POST /connector/mdm.cgi HTTP/1.1\rHost: cms.example.com\rContent-Length: 2\r\r{}'
  [obs_fold]='POST /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{}'
  [dup_host]='GET /test/status HTTP/1.1\r\nHost: cms.example.com\r\nHost: pki.example.com\r\n\r\n'
  [no_host]='GET /test/status HTTP/1.1\r\n\r\n'
  [te_http10]='POST /connector/mdm.cgi HTTP/1.0\r\nHost: cms.example.com\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n'
  [dup_cl]='POST /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}x'
  [te_not_chunked]='POST /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nTransfer-Encoding: gzip\r\n\r\n{}'
)
for name in "${!vectors[@]}"; do
  st=$(printf "${vectors[$name]}" | raw "$name")
  assert_eq "$st" 400 "vector $name"
done
sleep 0.3
assert_eq "$(request_count cms)" "$before" "no smuggling vector reached the upstream"
assert_file_contains "$(log_of gateway)" 'msg="bad request"'

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
