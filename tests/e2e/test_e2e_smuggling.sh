#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Requests that could be read two ways by two parsers get 400 at the gateway and reach no upstream:
# Content-Length together with Transfer-Encoding, bare-CR line endings, obs-folded headers, plus the
# other checks the gateway adds on top of llhttp (duplicate Host, missing Host, Transfer-Encoding in
# HTTP/1.0, duplicate Content-Length), and what a wider sweep found forwarded (issue 16): a target with
# a fragment or other bytes RFC 3986 does not allow, an invalid Host value, a chunk extension of
# 70,000 bytes. Also: absolute-form targets route by their own authority, and the header-field limit
# is the configured one (public.max_header_fields, limits.max_header_fields).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_smuggling 120

make_pki
start_cms_sim
GW_PUBLIC_EXTRA="max_header_fields: 20" write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms-json "$CMS_PORT" cms-json-connector.p12 localhost /)" "" \
  "limits: { max_header_fields: 20 }"
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
# Absolute-form: the target's authority is the Host that counts (RFC 9112 3.2.2), whatever Host says.
st=$(printf 'GET https://cms.example.com/test/status?code=203 HTTP/1.1\r\nHost: nowhere.example.com\r\nConnection: close\r\n\r\n' | raw absolute)
assert_eq "$st" 203 "absolute-form target routed by its authority"
st=$(printf 'GET https://nowhere.example.com/test/status?code=203 HTTP/1.1\r\nHost: cms.example.com\r\nConnection: close\r\n\r\n' | raw absolute_other)
assert_eq "$st" 404 "absolute-form target's authority wins over Host"

# The configured header-field limit (20 here), both directions: fields past it get 431 from the
# gateway, and an upstream answer past it 502 from the agent.
fields() { # fields N: N header fields, Host and Connection included
  printf 'Host: cms.example.com\r\nConnection: close\r\n'
  for ((i = 3; i <= $1; i++)); do printf 'X-F%d: v\r\n' "$i"; done
}
st=$( (printf 'GET /test/status?code=200 HTTP/1.1\r\n'; fields 20; printf '\r\n') | raw fields20)
assert_eq "$st" 200 "a request at max_header_fields"
# the sim answers with 4 fields of its own (Server, Date, Content-Type, Content-Length)
st=$(printf 'GET /test/many-headers?n=16 HTTP/1.1\r\nHost: cms.example.com\r\nConnection: close\r\n\r\n' | raw resp20)
assert_eq "$st" 200 "a response at the agent's max_header_fields"
st=$(printf 'GET /test/many-headers?n=17 HTTP/1.1\r\nHost: cms.example.com\r\nConnection: close\r\n\r\n' | raw resp21)
assert_eq "$st" 502 "a response over the agent's max_header_fields"
before=$(request_count cms)
st=$( (printf 'GET /test/status?code=200 HTTP/1.1\r\n'; fields 21; printf '\r\n') | raw fields21)
assert_eq "$st" 431 "a request over max_header_fields"

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
  [fragment]='GET /test/status#frag HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [fragment_query]='GET /test/status?code=200#frag HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [fragment_absolute]='GET https://cms.example.com/test/status/x#frag HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [target_brace]='GET /test/status?x={} HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [target_pipe]='GET /test/status?a|b HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [target_backslash]='GET /test\\status HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [target_bad_pct]='GET /test/status?x=%%zz HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [target_asterisk]='GET * HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [target_userinfo]='GET https://u@cms.example.com/test/status HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
  [host_port_99x]='GET /test/status HTTP/1.1\r\nHost: cms.example.com:99x\r\n\r\n'
  [host_empty_port]='GET /test/status HTTP/1.1\r\nHost: cms.example.com:\r\n\r\n'
  [host_port_range]='GET /test/status HTTP/1.1\r\nHost: cms.example.com:65536\r\n\r\n'
  [host_userinfo]='GET /test/status HTTP/1.1\r\nHost: u@cms.example.com\r\n\r\n'
  [host_space]='GET /test/status HTTP/1.1\r\nHost: cms.example.com x\r\n\r\n'
  [host_bracket]='GET /test/status HTTP/1.1\r\nHost: [::1\r\n\r\n'
  [host_bad_for_absolute]='GET https://cms.example.com/test/status HTTP/1.1\r\nHost: cms.example.com:x\r\n\r\n'
  [fragment_pipelined]='GET /test/status?code=200 HTTP/1.1\r\nHost: cms.example.com\r\n\r\nGET /test/status#f HTTP/1.1\r\nHost: cms.example.com\r\n\r\n'
)
for name in "${!vectors[@]}"; do
  st=$(printf "${vectors[$name]}" | raw "$name")
  if [[ $name == *_pipelined ]]; then
    before=$((before + 1)) # the well-formed leader is answered; its follower is not
    assert_eq "$st" "200 400" "vector $name"
  else
    assert_eq "$st" 400 "vector $name"
  fi
  # the gateway's own refusal, not an upstream's 400
  assert_file_contains "$CR_TMP/$name.resp" 'malformed request: '
done
# A chunk extension of 70,000 bytes (the cap is 4 KiB a line), in the first chunk and after one.
ext=$(head -c 70000 /dev/zero | tr '\0' x)
for lead in '' '2\r\n{}\r\n'; do
  st=$( (printf 'POST /connector/mdm.cgi HTTP/1.1\r\nHost: cms.example.com\r\nTransfer-Encoding: chunked\r\n\r\n'"$lead"
    printf '2;%s\r\n{}\r\n0\r\n\r\n' "$ext") | raw chunk_ext)
  assert_eq "$st" 400 "a 70,000-byte chunk extension${lead:+ after a chunk}"
  assert_file_contains "$CR_TMP/chunk_ext.resp" "chunk size line longer than 4096 bytes"
done
sleep 0.3
assert_eq "$(request_count cms)" "$before" "no smuggling vector reached the upstream"
assert_file_contains "$(log_of gateway)" 'msg="bad request"'

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
