#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Identity rotation (issue 12, point 4): a route's PKCS#12 replaced by a new file with a new password
# file, the config edited to name them, SIGHUP: the agent re-reads the route identities and uses the
# new one (the admin /status and the upstream see it). A bad replacement (wrong password) refuses the
# reload with the place of the fault and keeps the identity in use; other edits apply with it.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_identity_rotation 120

make_pki
start_cms_sim
R=$CR_TMP/rotated
mkdir -p "$R"
# The renewed connector identity: same CN (the upstream requires it), a new key, O=Rotated.
openssl req -newkey rsa:2048 -nodes -keyout "$R/id.key" -out "$R/id.csr" \
  -subj "/CN=CMS JSON connector/O=Rotated" 2>/dev/null
printf 'extendedKeyUsage=clientAuth\n' >"$R/id.ext"
openssl x509 -req -in "$R/id.csr" -CA "$CR_PKI/client-ca.pem" -CAkey "$CR_PKI/client-ca.key" -CAcreateserial \
  -sha256 -days 60 -extfile "$R/id.ext" -out "$R/id.pem" 2>/dev/null || fail "rotated identity"
printf 'n3w-secret\n' >"$R/new.pass"
printf 'not-the-password\n' >"$R/wrong.pass"
openssl pkcs12 -export -in "$R/id.pem" -inkey "$R/id.key" -certfile "$CR_PKI/client-ca.pem" \
  -passout pass:n3w-secret -out "$R/new.p12" || fail "rotated p12"

ADMIN_PORT=$(pick_free_port)
write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms "$CMS_PORT")" "" "admin:
  listen: 127.0.0.1:$ADMIN_PORT"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 1

status_identity() {
  local s
  s=$(curl -sS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/status") || fail "agent /status"
  json_get "$s" routes.0.identity.subject
}
call_ok() {
  local st
  st=$(relay_curl "$CR_TMP/out" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
    -d '{"action":"test"}')
  assert_eq "$st" 200 "$1"
}
before=$(status_identity)
assert_not_contains "$before" "Rotated"
call_ok "call with the first identity"

hups() { grep -c 'msg="SIGHUP: re-reading route identities' "$(log_of agent)" || true; }

# 1. Rotation: new PKCS#12 and new password file path.
sed -i "s|pkcs12: $CR_PKI/cms-json-connector.p12, password_file: $CR_PKI/cms-json-connector.pass|pkcs12: $R/new.p12, password_file: $R/new.pass|" \
  "$CR_TMP/agent.yaml"
grep -q "$R/new.p12" "$CR_TMP/agent.yaml" || fail "config edit"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >/dev/null || fail "the rotated config does not check"
stop_bg agent HUP
wait_for_log agent 'msg="route identity replaced" route=cms identity="[^"]*O=Rotated.*trigger=SIGHUP' 5
after=$(status_identity)
assert_contains "$after" "O=Rotated" "the route uses the new identity after SIGHUP"
call_ok "call with the rotated identity"

# 2. A bad replacement (wrong password): the reload is refused as a whole, with the place of the fault;
#    the rotated identity stays in use.
sed -i "s|password_file: $R/new.pass|password_file: $R/wrong.pass|" "$CR_TMP/agent.yaml"
stop_bg agent HUP
wait_for_log agent "level=error msg=\"configuration reload failed; the configuration in force stays\" trigger=SIGHUP reason=\"$CR_TMP/agent.yaml:[0-9]+:[0-9]+: routes\[0\]\.upstream\.identity: .*password" 5
assert_contains "$(status_identity)" "O=Rotated" "the identity in use stays after a bad replacement"
call_ok "call after a bad replacement"

# 3. An edit beyond identities (a route's timeout) together with the good password: applied as a whole
#    (a full reload since issue 14).
sed -i "s|password_file: $R/wrong.pass|password_file: $R/new.pass|; s|response_timeout: 10s|response_timeout: 11s|" \
  "$CR_TMP/agent.yaml"
stop_bg agent HUP
wait_for_log agent 'msg="configuration reloaded" trigger=SIGHUP .*generation=3' 5
assert_contains "$(status_identity)" "O=Rotated"
call_ok "call after a full reload"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
