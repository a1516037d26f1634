#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Who may call a service, and how much (issue 13, points 3 and 4): per-service client CAs and
# subjects (CN, DNS SAN with a wildcard, URI SAN prefix), bearer tokens from files (two files: a
# rotated token), source address lists (127.0.0.2 vs 127.0.0.1), X-Forwarded-For/Forwarded dropped
# from callers and kept from a trusted proxy; request body limits at the gateway (service) and the
# agent (route), by Content-Length and chunked; concurrent calls per service (503 + Retry-After).
# Every refusal by the gateway's policy reaches no agent: the upstream's request count is unchanged.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_callers 180

make_pki
start_cms_sim

# ---- a second client CA, made here: leaves with a DNS SAN, a URI SAN, and neither.
B=$CR_TMP/b
mkdir -p "$B"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$B/ca.key" -out "$B/ca.pem" \
  -days 2 -subj "/CN=Callers B CA" -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
b_leaf() { # b_leaf NAME CN [SAN]
  local n=$1 cn=$2 san=${3:-}
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$B/$n.key" -out "$B/$n.csr" \
    -subj "/CN=$cn" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "extendedKeyUsage=clientAuth"
    [[ -z $san ]] || echo "subjectAltName=$san"
  } >"$B/$n.ext"
  openssl x509 -req -in "$B/$n.csr" -CA "$B/ca.pem" -CAkey "$B/ca.key" -set_serial "0x$(openssl rand -hex 8)" \
    -days 2 -extfile "$B/$n.ext" -out "$B/$n.pem" 2>/dev/null
}
b_leaf dns "console" "DNS:console.corp.example"
b_leaf uri "workload" "URI:spiffe://corp/ns/console"
b_leaf deep "deep" "DNS:a.b.corp.example"
b_leaf plain "CMS Admin" # the CN service A allows, but from the wrong CA

# ---- tokens: two files, the second holds the rotated token and a comment
T=$CR_TMP/tokens
mkdir -p "$T"
TOKEN1=$(openssl rand -hex 24)
TOKEN2=$(openssl rand -hex 24)
printf '%s\n' "$TOKEN1" >"$T/current"
printf '# next\n%s\n' "$TOKEN2" >"$T/next"

# ---- gateway: one service per policy, each with its own Host
write_gateway_conf "$CR_TMP/gateway.yaml"
"$CR_PY" - "$CR_TMP/gateway.yaml" <<PY
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("  request_timeout: 20s", "  request_timeout: 20s\n  trusted_proxies: [127.0.0.3/32, '::1']")
s = s.replace("""services:
""", """services:
  - host: open.example.com
    group: acme
    limits: { max_body: 1KiB, max_concurrent: 2 }
  - host: certa.example.com
    group: acme
    callers: { client_ca: $CR_PKI/client-ca.pem, subjects: ["cn:CMS Admin"] }
  - host: certb.example.com
    group: acme
    callers:
      client_ca: $B/ca.pem
      subjects: ["dns:*.corp.example", "uri:spiffe://corp/*"]
  - host: token.example.com
    group: acme
    callers: { token_files: [$T/current, $T/next] }
  - host: src.example.com
    group: acme
    callers: { sources: [127.0.0.2/32, "::1"] }
  - host: agentlim.example.com
    group: acme
""")
open(p, "w").write(s)
PY
"$CCRELAY_BIN" check -c "$CR_TMP/gateway.yaml" >"$CR_TMP/check.out" 2>&1 || {
  cat "$CR_TMP/check.out" >&2
  fail "ccrelay check refuses the gateway configuration"
}

# agent: a route with a small body limit (by Host), then everything else to the sim
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route limited "$CMS_PORT" cms-json-connector.p12 localhost /)
$(cms_route all "$CMS_PORT" cms-json-connector.p12 localhost /)"
"$CR_PY" - "$CR_TMP/agent.yaml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("  - name: limited\n    match: { path_prefix: / }",
              "  - name: limited\n    match: { host: agentlim.example.com }\n    limits: { max_body: 512 }", 1)
open(p, "w").write(s)
PY
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >"$CR_TMP/check.out" 2>&1 || {
  cat "$CR_TMP/check.out" >&2
  fail "ccrelay check refuses the agent configuration"
}
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 1
GWLOG=$(log_of gateway)

# call OUT HOST PATH CURL_ARGS...: through the gateway as HOST (the TLS name stays cms.example.com).
call() {
  local out=$1 host=$2 path=$3
  shift 3
  curl_status "$out" --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
    -D "$out.h" -H "Host: $host" "https://cms.example.com:$GW_PUBLIC_PORT$path" "$@"
}
# refused WANT LABEL OUT HOST PATH CURL_ARGS...: the status is WANT and the upstream saw nothing.
refused() {
  local want=$1 label=$2 before st
  shift 2
  before=$(request_count cms)
  st=$(call "$@")
  assert_eq "$st" "$want" "$label"
  assert_eq "$(request_count cms)" "$before" "$label: the request reached the upstream"
}
header() { tr -d '\r' <"$1.h" | sed -n "s/^$2: //Ip" | head -1; }
cert() { echo --cert "$1.pem" --key "$1.key"; }

# ---- a service without callers rules, for comparison
st=$(call "$CR_TMP/o" open.example.com /test/status?code=200)
assert_eq "$st" 200 "open service"

# ---- X-Forwarded-For and Forwarded: a caller's are dropped...
st=$(call "$CR_TMP/xff" open.example.com /test/echo-headers -H "X-Forwarded-For: 6.6.6.6" \
  -H "Forwarded: for=6.6.6.6" -H "X-Forwarded-Host: evil.example")
assert_eq "$st" 200 "echo headers"
body=$(cat "$CR_TMP/xff")
assert_eq "$(json_get "$body" lower.x-forwarded-for)" '["127.0.0.1"]' "X-Forwarded-For from an untrusted caller"
fwd=$(json_get "$body" lower.forwarded.0)
assert_contains "$fwd" 'for="127.0.0.1:' "Forwarded names the peer"
assert_not_contains "$body" "6.6.6.6" "the caller's forwarding claims are dropped"
assert_not_contains "$body" "evil.example" "the caller's X-Forwarded-Host is dropped"
assert_eq "$("$CR_PY" -c 'import json, sys; print(len(json.loads(sys.argv[1])["lower"]["forwarded"]))' "$body")" 1 \
  "one Forwarded field"
# ...and a trusted proxy's are kept and extended.
st=$(call "$CR_TMP/xff2" open.example.com /test/echo-headers --interface 127.0.0.3 \
  -H "X-Forwarded-For: 192.0.2.9" -H "Forwarded: for=192.0.2.9;proto=https")
assert_eq "$st" 200 "echo headers through a trusted proxy"
body=$(cat "$CR_TMP/xff2")
assert_eq "$(json_get "$body" lower.x-forwarded-for)" '["192.0.2.9, 127.0.0.3"]' "X-Forwarded-For from a trusted proxy"
assert_contains "$(json_get "$body" lower.forwarded.0)" 'for=192.0.2.9;proto=https, for="127.0.0.3:' \
  "Forwarded from a trusted proxy"

# ---- service A: a certificate from client-ca with CN "CMS Admin"
refused 401 "A: no certificate" "$CR_TMP/a1" certa.example.com /test/status?code=200
assert_file_contains "$GWLOG" 'msg="caller refused".*service=certa.example.com rule=client_ca peer=127.0.0.1:[0-9]+ status=401'
# shellcheck disable=SC2046
st=$(call "$CR_TMP/a2" certa.example.com /test/status?code=200 $(cert "$CR_PKI/cms-admin"))
assert_eq "$st" 200 "A: CMS Admin from client-ca"
# shellcheck disable=SC2046
refused 403 "A: another CN from client-ca" "$CR_TMP/a3" certa.example.com /test/status?code=200 \
  $(cert "$CR_PKI/cms-json-connector")
assert_file_contains "$GWLOG" 'msg="caller refused".*service=certa.example.com rule=subjects .*status=403'
# shellcheck disable=SC2046
refused 403 "A: CN CMS Admin from the other CA" "$CR_TMP/a4" certa.example.com /test/status?code=200 $(cert "$B/plain")
assert_file_contains "$GWLOG" 'msg="caller refused".*service=certa.example.com rule=client_ca .*status=403'

# ---- service B: its own CA, a DNS wildcard and a URI prefix
# shellcheck disable=SC2046
st=$(call "$CR_TMP/b1" certb.example.com /test/status?code=200 $(cert "$B/dns"))
assert_eq "$st" 200 "B: dns console.corp.example matches *.corp.example"
# shellcheck disable=SC2046
st=$(call "$CR_TMP/b2" certb.example.com /test/status?code=200 $(cert "$B/uri"))
assert_eq "$st" 200 "B: uri spiffe://corp/ns/console matches spiffe://corp/*"
# shellcheck disable=SC2046
refused 403 "B: a.b.corp.example is two labels under the wildcard" "$CR_TMP/b3" certb.example.com \
  /test/status?code=200 $(cert "$B/deep")
# shellcheck disable=SC2046
refused 403 "B: a certificate from client-ca" "$CR_TMP/b4" certb.example.com /test/status?code=200 \
  $(cert "$CR_PKI/cms-admin")
refused 401 "B: no certificate" "$CR_TMP/b5" certb.example.com /test/status?code=200

# ---- tokens
refused 401 "token: none" "$CR_TMP/t1" token.example.com /test/status?code=200
assert_eq "$(header "$CR_TMP/t1" WWW-Authenticate)" 'Bearer realm="ccrelay"' "WWW-Authenticate without a token"
refused 401 "token: wrong" "$CR_TMP/t2" token.example.com /test/status?code=200 -H "Authorization: Bearer wrong-$TOKEN1"
assert_contains "$(header "$CR_TMP/t2" WWW-Authenticate)" 'error="invalid_token"' "WWW-Authenticate with a bad token"
refused 401 "token: basic" "$CR_TMP/t3" token.example.com /test/status?code=200 -u "user:$TOKEN1"
st=$(call "$CR_TMP/t4" token.example.com /test/echo-headers -H "Authorization: Bearer $TOKEN1")
assert_eq "$st" 200 "token: current"
assert_not_contains "$(cat "$CR_TMP/t4")" "authorization" "the token is not forwarded"
st=$(call "$CR_TMP/t5" token.example.com /test/status?code=200 -H "Authorization: bearer $TOKEN2")
assert_eq "$st" 200 "token: rotated (second file)"
assert_file_contains "$GWLOG" 'msg="caller refused".*service=token.example.com rule=token .*status=401'
assert_file_lacks "$GWLOG" "$TOKEN1" "a token in the gateway's log"

# ---- sources
refused 403 "sources: 127.0.0.1" "$CR_TMP/s1" src.example.com /test/status?code=200
assert_file_contains "$GWLOG" 'msg="caller refused".*service=src.example.com rule=sources peer=127.0.0.1:[0-9]+ status=403'
st=$(call "$CR_TMP/s2" src.example.com /test/status?code=200 --interface 127.0.0.2)
assert_eq "$st" 200 "sources: 127.0.0.2"

# ---- body limits at the gateway (open: 1 KiB)
head -c 1024 /dev/zero >"$CR_TMP/1k"
head -c 1025 /dev/zero >"$CR_TMP/1k1"
head -c 4000 /dev/zero >"$CR_TMP/4k"
st=$(call "$CR_TMP/l1" open.example.com /test/sha256 --data-binary @"$CR_TMP/1k")
assert_eq "$st" 200 "a body at max_body"
refused 413 "Content-Length over max_body" "$CR_TMP/l2" open.example.com /test/sha256 --data-binary @"$CR_TMP/1k1"
st=$(call "$CR_TMP/l3" open.example.com /test/sha256 -H "Transfer-Encoding: chunked" --data-binary @"$CR_TMP/4k")
assert_eq "$st" 413 "a chunked body over max_body"
st=$(call "$CR_TMP/l4" open.example.com /test/status?code=200)
assert_eq "$st" 200 "the service after a 413"

# ---- body limits at the agent (route limited: 512 bytes; the service allows 10 MiB)
head -c 600 /dev/zero >"$CR_TMP/600"
refused 413 "agent: Content-Length over the route's max_body" "$CR_TMP/r1" agentlim.example.com /test/sha256 \
  --data-binary @"$CR_TMP/600"
assert_file_contains "$(log_of agent)" 'msg="request refused".*route=limited rule=max_body content_length=600'
st=$(call "$CR_TMP/r2" agentlim.example.com /test/sha256 -H "Transfer-Encoding: chunked" --data-binary @"$CR_TMP/4k")
assert_eq "$st" 413 "agent: a chunked body over the route's max_body"
st=$(call "$CR_TMP/r3" agentlim.example.com /test/sha256 --data-binary @"$CR_TMP/1k1")
assert_eq "$st" 413 "agent: 1025 bytes"
head -c 512 /dev/zero >"$CR_TMP/512"
st=$(call "$CR_TMP/r4" agentlim.example.com /test/sha256 --data-binary @"$CR_TMP/512")
assert_eq "$st" 200 "agent: a body at the route's max_body"

# ---- concurrency (open: 2 calls at once)
call "$CR_TMP/c1" open.example.com "/test/slow?ms=3000" >"$CR_TMP/c1.st" &
p1=$!
call "$CR_TMP/c2" open.example.com "/test/slow?ms=3000" >"$CR_TMP/c2.st" &
p2=$!
for ((i = 0; i < 100; i++)); do
  (($(grep -c 'GET /test/slow' "$CR_TMP/cms.requests" || true) >= 2)) && break
  sleep 0.05
done
refused 503 "a third concurrent call" "$CR_TMP/c3" open.example.com /test/status?code=200
assert_eq "$(header "$CR_TMP/c3" Retry-After)" 1 "Retry-After on 503"
assert_file_contains "$GWLOG" 'msg="call refused".*service=open.example.com rule=max_concurrent'
st=$(call "$CR_TMP/c4" token.example.com /test/status?code=200 -H "Authorization: Bearer $TOKEN1")
assert_eq "$st" 200 "another service is not limited by open's calls"
wait "$p1" "$p2"
assert_eq "$(cat "$CR_TMP/c1.st") $(cat "$CR_TMP/c2.st")" "200 200" "the slow calls"
st=$(call "$CR_TMP/c5" open.example.com /test/status?code=200)
assert_eq "$st" 200 "a call once the slots are free"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
