#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Old servers behind the agent (issue 12, point 2): a route's upstream.tls lowers the strict defaults
# for that route only. Real components: `openssl s_server -www` with an RSA-1024/SHA-1 certificate,
# and one that speaks TLS 1.0 only. Each is refused by default (502, the reason logged) and reached
# when its route allows it; a route next to it keeps the strict defaults. A 1024-bit route identity:
# `ccrelay check` and `ccrelay trust verify` refuse it with the words the agent logs, and accept it
# (as does the agent) with security_level 0.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_old_upstreams 180

make_pki
W=$CR_TMP/weak
mkdir -p "$W"
# An old PKI: a 1024-bit RSA root and a 1024-bit server certificate signed with SHA-1.
openssl req -x509 -newkey rsa:1024 -sha1 -nodes -keyout "$W/ca.key" -out "$W/ca.pem" -days 30 \
  -subj "/CN=Old PKI 4.7 Root" 2>/dev/null || fail "weak CA"
openssl req -newkey rsa:1024 -nodes -keyout "$W/srv.key" -out "$W/srv.csr" -subj "/CN=localhost" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$W/srv.ext"
openssl x509 -req -in "$W/srv.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial -sha1 -days 30 \
  -extfile "$W/srv.ext" -out "$W/srv.pem" 2>/dev/null || fail "weak server cert"
# A 1024-bit connector identity issued by the connector CA the trust store holds.
openssl req -newkey rsa:1024 -nodes -keyout "$W/id.key" -out "$W/id.csr" -subj "/CN=Old connector" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >"$W/id.ext"
openssl x509 -req -in "$W/id.csr" -CA "$CR_PKI/client-ca.pem" -CAkey "$CR_PKI/client-ca.key" -CAcreateserial \
  -sha256 -days 30 -extfile "$W/id.ext" -out "$W/id.pem" 2>/dev/null || fail "weak identity"
printf 'oldpass\n' >"$W/id.pass"
openssl pkcs12 -export -in "$W/id.pem" -inkey "$W/id.key" -certfile "$CR_PKI/client-ca.pem" \
  -passout pass:oldpass -out "$W/id.p12" || fail "weak identity p12"

# s_server NAME PORT ARGS...: openssl's test server answering GET with a status page (HTTP/1.0).
s_server() {
  local name=$1 port=$2
  shift 2
  start_bg "$name" openssl s_server -accept "127.0.0.1:$port" -www -naccept 50 "$@"
  wait_for_port 127.0.0.1 "$port" 10 "${CR_PID_OF[$name]}"
}
WEAK_PORT=$(pick_free_port)
s_server weak "$WEAK_PORT" -cert "$W/srv.pem" -key "$W/srv.key" -cipher 'DEFAULT:@SECLEVEL=0'
TLS1_PORT=$(pick_free_port)
s_server tls1 "$TLS1_PORT" -tls1 -cert "$CR_PKI/cms-server.pem" -key "$CR_PKI/cms-server.key" \
  -cipher 'DEFAULT:@SECLEVEL=0'

route() { # NAME PORT CA PREFIX [TLS_YAML] [IDENTITY_YAML]
  local id=${6:-"{ pkcs12: $CR_PKI/cms-json-connector.p12, password_file: $CR_PKI/cms-json-connector.pass }"}
  cat <<YAML
  - name: $1
    match: { path_prefix: $4 }
    upstream:
      url: https://127.0.0.1:$2
      server_name: localhost
      ca: $3
      identity: $id
      connect_timeout: 3s
      response_timeout: 5s${5:+
      tls: $5}
YAML
}
WEAK_ID="{ pkcs12: $W/id.p12, password_file: $W/id.pass }"
write_gateway_conf "$CR_TMP/gateway.yaml"
routes="$(route weak-strict "$WEAK_PORT" "$W/ca.pem" /weak-strict)
$(route weak-level0 "$WEAK_PORT" "$W/ca.pem" /weak-level0 '{ security_level: 0 }')
$(route tls1-strict "$TLS1_PORT" "$CR_PKI/upstream-ca.pem" /tls1-strict)
$(route tls1-allowed "$TLS1_PORT" "$CR_PKI/upstream-ca.pem" /tls1-allowed '{ min_version: TLSv1, security_level: 0, ciphers: "DEFAULT:@SECLEVEL=0" }')
$(route oldid-level0 "$WEAK_PORT" "$W/ca.pem" /oldid '{ security_level: 0 }' "$WEAK_ID")"
write_agent_conf "$CR_TMP/agent.yaml" "$routes"

# ---- check: bad TLS settings are configuration errors with their place ----
bad_check() { # SED_EXPR EXPECTED_REGEX
  sed "$1" "$CR_TMP/agent.yaml" >"$CR_TMP/bad.yaml"
  local rc=0
  "$CCRELAY_BIN" check -c "$CR_TMP/bad.yaml" >/dev/null 2>"$CR_TMP/bad.err" || rc=$?
  assert_eq "$rc" 2 "check exit status for $2"
  assert_file_contains "$CR_TMP/bad.err" "$2"
}
bad_check 's/min_version: TLSv1,/min_version: TLSv1.0,/' \
  "bad.yaml:[0-9]+:[0-9]+: routes\[3\]\.upstream\.tls\.min_version: 'TLSv1.0' is not one of"
bad_check 's/{ security_level: 0 }/{ security_level: 7 }/' \
  "bad.yaml:[0-9]+:[0-9]+: routes\[1\]\.upstream\.tls\.security_level: .*7 is not between 0 and 5"
bad_check 's/DEFAULT:@SECLEVEL=0/NO-SUCH-CIPHER/' \
  "bad.yaml:[0-9]+:[0-9]+: routes\[3\]\.upstream\.tls\.ciphers: OpenSSL accepts no cipher of 'NO-SUCH-CIPHER'"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >"$CR_TMP/check.out" 2>&1 || { cat "$CR_TMP/check.out" >&2; fail "check"; }

# ---- a 1024-bit route identity: check, trust verify and the agent agree ----
sed 's/oldid-level0/oldid-strict/; /name: oldid-strict/,$ s/tls: { security_level: 0 }/tls: { security_level: 2 }/' \
  "$CR_TMP/agent.yaml" >"$CR_TMP/strict-id.yaml"
rc=0
"$CCRELAY_BIN" check -c "$CR_TMP/strict-id.yaml" >/dev/null 2>"$CR_TMP/strict-id.err" || rc=$?
assert_eq "$rc" 2 "check refuses a 1024-bit route identity at level 2"
check_msg=$(sed -n 's/^.*routes\[4\]\.upstream\.identity: //p' "$CR_TMP/strict-id.err")
assert_contains "$check_msg" "certificate CN=Old connector is too weak for TLS security level 2 (ee key too small)"
rc=0
"$CCRELAY_BIN" trust --store "$CR_TMP/trust" verify --purpose client --password-file "$W/id.pass" "$W/id.p12" \
  >/dev/null 2>"$CR_TMP/verify.err" || rc=$?
assert_eq "$rc" 1 "trust verify refuses it at the default level"
assert_file_contains "$CR_TMP/verify.err" "too weak for TLS security level 2 \(ee key too small\)"
"$CCRELAY_BIN" trust -c "$CR_TMP/agent.yaml" verify --route oldid-level0 --purpose client \
  --password-file "$W/id.pass" "$W/id.p12" >"$CR_TMP/verify.out" 2>&1 ||
  { cat "$CR_TMP/verify.out" >&2; fail "trust verify --route (security_level 0) refused the identity"; }
assert_file_contains "$CR_TMP/verify.out" "OK, chain of 2 certificates"
# The server certificate: refused at the default level (1024-bit key, SHA-1), accepted at 0.
rc=0
"$CCRELAY_BIN" trust --store "$CR_TMP/trust" verify --purpose server "$W/srv.pem" >/dev/null 2>"$CR_TMP/v2.err" || rc=$?
assert_eq "$rc" 1 "trust verify refuses the weak server certificate"

start_gateway
start_agent agent "$CR_TMP/strict-id.yaml" 1
# The agent refuses the route with the message check printed.
wait_for_log agent "msg=\"route refused\" route=oldid-strict .*reason=\"$(printf '%s' "$check_msg" | sed 's/[][().*^$+?{}|\\]/\\&/g')\"" 5
wait_for_log agent 'msg="upstream TLS weakened for an old server \(deliberate, by upstream.tls\)" route=weak-level0 .*security_level=0' 5
wait_for_log agent 'route=tls1-allowed .*min_version=TLSv1 security_level=0' 5
stop_ccrelay agent

start_agent agent2 "$CR_TMP/agent.yaml" 1
wait_for_log agent2 'msg="route ready" route=oldid-level0 identity="CN=Old connector"' 5

call() { relay_curl "$CR_TMP/out" cms.example.com "$1"; }
st=$(call /weak-strict/x)
assert_eq "$st" 502 "RSA-1024/SHA-1 upstream refused by default"
wait_for_log agent2 'msg="upstream failed".*route=weak-strict.*reason="[^"]*(key too weak|ca md too weak|too weak)' 5
st=$(call /weak-level0/x)
assert_eq "$st" 200 "RSA-1024/SHA-1 upstream reached with security_level 0"
assert_file_contains "$CR_TMP/out" "s_server"
st=$(call /tls1-strict/x)
assert_eq "$st" 502 "TLS 1.0-only upstream refused by default"
wait_for_log agent2 'msg="upstream failed".*route=tls1-strict.*reason="[^"]*(protocol version|unsupported protocol|alert)' 5
st=$(call /tls1-allowed/x)
assert_eq "$st" 200 "TLS 1.0-only upstream reached with min_version TLSv1"
assert_file_contains "$CR_TMP/out" "Protocol *: *TLSv1$|TLSv1[^.]"
st=$(call /oldid/x)
assert_eq "$st" 200 "the 1024-bit identity is used at security_level 0"

# probe sees the same: TLSv1 for the old route, a verify failure for the strict one.
rc=0
"$CCRELAY_BIN" probe -c "$CR_TMP/agent.yaml" --method GET tls1-allowed weak-strict >"$CR_TMP/probe.out" 2>&1 || rc=$?
assert_eq "$rc" 1 "probe exit status (one route refused)"
assert_file_contains "$CR_TMP/probe.out" "route tls1-allowed: OK"
assert_file_contains "$CR_TMP/probe.out" "tls +TLSv1 "
assert_file_contains "$CR_TMP/probe.out" "route weak-strict: FAILED"
assert_file_contains "$CR_TMP/probe.out" "verify .*too weak"

stop_ccrelay agent2
stop_ccrelay gateway
cr_pass
