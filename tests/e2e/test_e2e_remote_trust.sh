#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Remote trust management: the gateway's admin API (bearer token, off by default) lists agent
# tunnels and lists, adds and removes trust anchors in a connected agent's store through the
# tunnel's control prefix, when the agent's config allows it (remote_trust: true); an agent that
# does not allow it answers 403 and its store stays as it was. Both sides log who asked.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_remote_trust 120

make_pki
ADMIN_PORT=$(pick_free_port)
TOKEN=$(openssl rand -hex 32)
printf '%s\n' "$TOKEN" >"$CR_TMP/admin.token"
chmod 600 "$CR_TMP/admin.token"
write_gateway_conf "$CR_TMP/gateway.yaml" "admin:
  listen: 127.0.0.1:$ADMIN_PORT
  token_file: $CR_TMP/admin.token"

# The agent's store: the upstream CA and the route identities' root, made by `ccrelay trust`.
STORE=$CR_TMP/agent-trust
mkdir -m 0700 "$STORE"
"$CCRELAY_BIN" trust --store "$STORE" add "$CR_PKI/upstream-ca.pem" "$CR_PKI/client-ca.pem" >/dev/null ||
  fail "ccrelay trust add into $STORE failed"

# write_agent_conf may already write trust_store itself (AGENT_TRUST_STORE); otherwise the key goes
# into the top-level extra YAML.
agent_conf() { # FILE REMOTE_TRUST
  local top="remote_trust: $2"
  if grep -q 'AGENT_TRUST_STORE' "$CR_SRC/tests/lib/relay.sh"; then
    AGENT_TRUST_STORE=$STORE write_agent_conf "$1" "$(cms_route cms-json 9)" "" "$top"
  else
    write_agent_conf "$1" "$(cms_route cms-json 9)" "" "trust_store: $STORE
$top"
  fi
}
agent_conf "$CR_TMP/agent.yaml" true
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >/dev/null || fail "agent config does not check"

start_gateway
wait_for_log gateway "msg=\"admin listening\" admin=127.0.0.1:$ADMIN_PORT" 5
start_agent agent "$CR_TMP/agent.yaml" 2

ADMIN=http://127.0.0.1:$ADMIN_PORT
# admin OUT METHOD PATH [CURL_ARGS...]: an authenticated admin call; echoes the status.
admin() {
  local out=$1 method=$2 path=$3
  shift 3
  curl_status "$out" -X "$method" -H "Authorization: Bearer $TOKEN" "$ADMIN$path" "$@"
}
store_files() { find "$STORE" -maxdepth 1 -name '*.pem' -printf '%f\n' | sort; }

# ---- authentication ----
st=$(curl_status "$CR_TMP/noauth" -D "$CR_TMP/noauth.h" "$ADMIN/agents")
assert_eq "$st" 401 "no token"
grep -qi '^WWW-Authenticate: Bearer' "$CR_TMP/noauth.h" || fail "401 without WWW-Authenticate: Bearer"
st=$(curl_status "$CR_TMP/badauth" -H "Authorization: Bearer ${TOKEN%?}x" "$ADMIN/agents")
assert_eq "$st" 401 "wrong token"
wait_for_log gateway 'msg="admin call refused" peer=127\.0\.0\.1:[0-9]+ method=GET reason="no bearer token"' 5
wait_for_log gateway 'msg="admin call refused" peer=127\.0\.0\.1:[0-9]+ method=GET reason="wrong bearer token"' 5

# ---- listing tunnels, bad names, unknown agents ----
st=$(admin "$CR_TMP/agents" GET /agents)
assert_eq "$st" 200 "GET /agents"
body=$(cat "$CR_TMP/agents")
assert_eq "$(json_get "$body" tunnels.0.agent)" acme-agent-1 "GET /agents names the agent"
assert_eq "$(json_get "$body" tunnels.0.group)" acme "GET /agents names the group"
assert_contains "$(json_get "$body" tunnels.0.peer)" "127.0.0.1:" "GET /agents names the peer"
for ((i = 0; i < 50; i++)); do # the agent process's id, once it answered the replica announcement
  grep -q '"instance":"[0-9a-f]\{32\}"' "$CR_TMP/agents" && break
  sleep 0.1
  admin "$CR_TMP/agents" GET /agents >/dev/null
done
body=$(cat "$CR_TMP/agents")
assert_eq "$(json_get "$body" tunnels.0.instance)" "$(json_get "$body" tunnels.1.instance)" \
  "both tunnels of the agent name one process"
assert_eq "$(json_get "$body" tunnels.1.agent)" acme-agent-1 "both tunnels listed"

st=$(admin "$CR_TMP/bad" GET '/agents/acme%2Fagent/trust')
assert_eq "$st" 400 "agent name outside [A-Za-z0-9._-]"
st=$(admin "$CR_TMP/unknown" GET /agents/nobody-here/trust)
assert_eq "$st" 404 "unknown agent"
assert_contains "$(cat "$CR_TMP/unknown")" '"error":"unknown_agent"'
st=$(admin "$CR_TMP/method" PUT /agents/acme-agent-1/trust)
assert_eq "$st" 405 "PUT on trust"

st=$(admin "$CR_TMP/status" GET /agents/acme-agent-1/status)
assert_eq "$st" 200 "agent status through the tunnel"

# ---- the public side still cannot reach the control prefix ----
st=$(relay_curl "$CR_TMP/pub" cms.example.com /.well-known/ccrelay/trust)
assert_eq "$st" 404 "public call to the control prefix"

# ---- remote add, list, remove: one agent process, so one result ----
OTHER_FP=$(openssl x509 -in "$CR_PKI/other-ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
before=$(store_files)
st=$(admin "$CR_TMP/add" POST /agents/acme-agent-1/trust -H 'Content-Type: application/x-pem-file' \
  --data-binary "@$CR_PKI/other-ca.pem")
assert_eq "$st" 200 "remote add: $(cat "$CR_TMP/add")"
assert_eq "$(json_get "$(cat "$CR_TMP/add")" agents.0.answer.added.0.fingerprint)" "$OTHER_FP" "added fingerprint"
assert_eq "$(json_get "$(cat "$CR_TMP/add")" agents.0.answer.added.0.status)" added "first add"
[[ -f $STORE/$OTHER_FP.pem ]] || fail "remote add did not write $STORE/$OTHER_FP.pem"

st=$(admin "$CR_TMP/add2" POST /agents/acme-agent-1/trust --data-binary "@$CR_PKI/other-ca.pem")
assert_eq "$st" 200 "remote add again"
assert_eq "$(json_get "$(cat "$CR_TMP/add2")" agents.0.answer.added.0.status)" present "second add is idempotent"

st=$(admin "$CR_TMP/list" GET /agents/acme-agent-1/trust)
assert_eq "$st" 200 "remote list"
assert_contains "$(cat "$CR_TMP/list")" "\"fingerprint\":\"$OTHER_FP\"" "remote list shows the added CA"
assert_contains "$(cat "$CR_TMP/list")" "ccrelay Test Unrelated CA" "remote list shows its subject"

st=$(admin "$CR_TMP/rm" DELETE "/agents/acme-agent-1/trust/${OTHER_FP:0:12}")
assert_eq "$st" 200 "remote remove by prefix: $(cat "$CR_TMP/rm")"
assert_eq "$(json_get "$(cat "$CR_TMP/rm")" agents.0.answer.removed)" "$OTHER_FP" "removed fingerprint"
[[ ! -e $STORE/$OTHER_FP.pem ]] || fail "remote remove left $STORE/$OTHER_FP.pem"
assert_eq "$(store_files)" "$before" "store back to where it was"

st=$(admin "$CR_TMP/rm2" DELETE "/agents/acme-agent-1/trust/${OTHER_FP:0:12}")
assert_eq "$st" 404 "removing it again"
st=$(admin "$CR_TMP/garbage" POST /agents/acme-agent-1/trust --data-binary 'not a certificate')
[[ $st == 4?? ]] || fail "remote add of garbage: expected 4xx, got $st"
assert_eq "$(store_files)" "$before" "refused input leaves the store as it was"

# Both sides name who asked: the gateway the admin caller's address, the agent the header value.
assert_file_contains "$(log_of gateway)" \
  "msg=\"remote trust change\" requested_by=\"admin 127\\.0\\.0\\.1:[0-9]+\" agent=acme-agent-1 instance=[0-9a-f]{32} peer=127\\.0\\.0\\.1:[0-9]+ action=add agent_status=200"
assert_file_contains "$(log_of gateway)" \
  "msg=\"remote trust change\" requested_by=\"admin 127\\.0\\.0\\.1:[0-9]+\" agent=acme-agent-1 instance=[0-9a-f]{32} peer=127\\.0\\.0\\.1:[0-9]+ action=remove fingerprint=${OTHER_FP:0:12} agent_status=200"
assert_file_contains "$(log_of agent)" "admin 127\\.0\\.0\\.1:[0-9]+" "agent log names who asked"
assert_file_contains "$(log_of agent)" "$OTHER_FP" "agent log names the certificate"

# ---- the same agent restarted with remote_trust false (the default) ----
stop_ccrelay agent
agent_conf "$CR_TMP/agent-noremote.yaml" false
start_agent agent2 "$CR_TMP/agent-noremote.yaml" 2
before=$(store_files)
st=$(admin "$CR_TMP/deny" POST /agents/acme-agent-1/trust --data-binary "@$CR_PKI/other-ca.pem")
assert_eq "$st" 403 "remote add refused by the agent's config"
assert_eq "$(json_get "$(cat "$CR_TMP/deny")" agents.0.answer.error)" remote_trust_disabled
st=$(admin "$CR_TMP/deny2" DELETE "/agents/acme-agent-1/trust/${before:0:12}")
assert_eq "$st" 403 "remote remove refused by the agent's config"
assert_eq "$(store_files)" "$before" "a refused agent's store is unchanged"
assert_file_contains "$(log_of gateway)" \
  "msg=\"remote trust change\" requested_by=\"admin 127\\.0\\.0\\.1:[0-9]+\" agent=acme-agent-1 instance=[0-9a-f]{32} peer=127\\.0\\.0\\.1:[0-9]+ action=add agent_status=403"
assert_file_contains "$(log_of agent2)" "admin 127\\.0\\.0\\.1:[0-9]+" "refusing agent logs who asked"

stop_ccrelay agent2
stop_ccrelay gateway
cr_pass
