#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Remote trust changes reach every agent process of a name: two agent processes share one
# certificate (acme-agent-1) and each has its own trust store. A trust add and a remove through the
# gateway's admin API change both stores, and the answer lists one result per agent process (its
# instance id, not one per tunnel: each process holds two tunnels). With one process stopped, the
# answer lists the one reached; the stopped process's store is not changed, and the answer says so.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_remote_trust_fanout 120

make_pki
ADMIN_PORT=$(pick_free_port)
TOKEN=$(openssl rand -hex 32)
printf '%s\n' "$TOKEN" >"$CR_TMP/admin.token"
chmod 600 "$CR_TMP/admin.token"
write_gateway_conf "$CR_TMP/gateway.yaml" "admin:
  listen: 127.0.0.1:$ADMIN_PORT
  token_file: $CR_TMP/admin.token"

STORE1=$CR_TMP/trust-1
STORE2=$CR_TMP/trust-2
make_trust_store "$STORE1" "$CR_PKI/client-ca.pem" "$CR_PKI/upstream-ca.pem"
make_trust_store "$STORE2" "$CR_PKI/client-ca.pem" "$CR_PKI/upstream-ca.pem"
AGENT_TRUST_STORE=$STORE1 write_agent_conf "$CR_TMP/agent1.yaml" "$(cms_route cms-json 9)" "" "remote_trust: true"
AGENT_TRUST_STORE=$STORE2 write_agent_conf "$CR_TMP/agent2.yaml" "$(cms_route cms-json 9)" "" "remote_trust: true"
# write_agent_conf may not honour AGENT_TRUST_STORE in every version of the helper: insist.
grep -q "^trust_store: $STORE1\$" "$CR_TMP/agent1.yaml" || fail "agent1.yaml does not use $STORE1"
grep -q "^trust_store: $STORE2\$" "$CR_TMP/agent2.yaml" || fail "agent2.yaml does not use $STORE2"

start_gateway
wait_for_log gateway "msg=\"admin listening\" admin=127.0.0.1:$ADMIN_PORT" 5
start_agent agent1 "$CR_TMP/agent1.yaml" 2
start_agent agent2 "$CR_TMP/agent2.yaml" 2

ADMIN=http://127.0.0.1:$ADMIN_PORT
admin() { # OUT METHOD PATH [CURL_ARGS...]: an authenticated admin call; echoes the status.
  local out=$1 method=$2 path=$3
  shift 3
  curl_status "$out" -X "$method" -H "Authorization: Bearer $TOKEN" "$ADMIN$path" "$@"
}
listed() { "$CCRELAY_BIN" trust --store "$1" list 2>&1; }
py() { "$CR_PY" -c "$1" "${@:2}"; }
# tunnels_of_instances: "N M" = tunnels listed by GET /agents, and distinct instance ids among them.
tunnels_of_instances() {
  admin "$CR_TMP/agents" GET /agents >/dev/null
  py 'import json,sys; t=json.load(open(sys.argv[1]))["tunnels"]
print(len(t), len({x.get("instance") for x in t if x.get("instance")}))' "$CR_TMP/agents"
}
# Both processes' tunnels are announced (each answered the replica announcement with its instance).
for ((i = 0; i < 100; i++)); do
  [[ $(tunnels_of_instances) == "4 2" ]] && break
  sleep 0.1
done
assert_eq "$(tunnels_of_instances)" "4 2" "GET /agents: four tunnels of two agent processes"

OTHER_FP=$(openssl x509 -in "$CR_PKI/other-ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
listed "$STORE1" | grep -q "${OTHER_FP:0:16}" && fail "store 1 trusts the other CA before the test"

# ---- add: both stores ----
st=$(admin "$CR_TMP/add" POST /agents/acme-agent-1/trust -H 'Content-Type: application/x-pem-file' \
  --data-binary "@$CR_PKI/other-ca.pem")
body=$(cat "$CR_TMP/add")
assert_eq "$st" 200 "fan-out add: $body"
assert_eq "$(json_get "$body" reached)" 2 "two agent processes reached (not four tunnels): $body"
assert_eq "$(json_get "$body" failed)" 0 "none failed"
assert_eq "$(py 'import json,sys; a=json.loads(sys.argv[1])["agents"]
print(len({x["instance"] for x in a if x["instance"]}))' "$body")" 2 "two distinct instance ids"
for i in 0 1; do
  assert_eq "$(json_get "$body" agents.$i.status)" 200 "agent process $i answered 200"
  assert_eq "$(json_get "$body" agents.$i.answer.added.0.fingerprint)" "$OTHER_FP" "agent process $i added it"
  assert_contains "$(json_get "$body" agents.$i.peer)" "127.0.0.1:" "agent process $i names its peer"
done
listed "$STORE1" | grep -q "${OTHER_FP:0:16}" || fail "store 1 did not get the CA: $(listed "$STORE1")"
listed "$STORE2" | grep -q "${OTHER_FP:0:16}" || fail "store 2 did not get the CA: $(listed "$STORE2")"
assert_file_contains "$(log_of gateway)" \
  "msg=\"remote trust change\" requested_by=\"admin 127\\.0\\.0\\.1:[0-9]+\" agent=acme-agent-1 instance=[0-9a-f]+ peer=127\\.0\\.0\\.1:[0-9]+ action=add agent_status=200"

# ---- the list comes from every process too ----
st=$(admin "$CR_TMP/list" GET /agents/acme-agent-1/trust)
assert_eq "$st" 200 "fan-out list"
assert_eq "$(json_get "$(cat "$CR_TMP/list")" reached)" 2 "both processes listed"
assert_contains "$(json_get "$(cat "$CR_TMP/list")" agents.1.answer)" "$OTHER_FP" "second process lists the CA"

# ---- remove: both stores ----
st=$(admin "$CR_TMP/rm" DELETE "/agents/acme-agent-1/trust/${OTHER_FP:0:12}")
body=$(cat "$CR_TMP/rm")
assert_eq "$st" 200 "fan-out remove: $body"
assert_eq "$(json_get "$body" reached)" 2 "remove reached both"
assert_eq "$(json_get "$body" agents.0.answer.removed)" "$OTHER_FP"
assert_eq "$(json_get "$body" agents.1.answer.removed)" "$OTHER_FP"
listed "$STORE1" | grep -q "${OTHER_FP:0:16}" && fail "store 1 still trusts the CA"
listed "$STORE2" | grep -q "${OTHER_FP:0:16}" && fail "store 2 still trusts the CA"

# Removing it again: every process answers 404, so the API does.
st=$(admin "$CR_TMP/rm2" DELETE "/agents/acme-agent-1/trust/${OTHER_FP:0:12}")
assert_eq "$st" 404 "remove again: $(cat "$CR_TMP/rm2")"
assert_eq "$(json_get "$(cat "$CR_TMP/rm2")" agents.1.status)" 404

# ---- one process stopped: the answer lists the one reached ----
stop_ccrelay agent2
for ((i = 0; i < 100; i++)); do
  [[ $(tunnels_of_instances) == "2 1" ]] && break
  sleep 0.1
done
assert_eq "$(tunnels_of_instances)" "2 1" "two tunnels of one process left"
st=$(admin "$CR_TMP/add1" POST /agents/acme-agent-1/trust --data-binary "@$CR_PKI/other-ca.pem")
body=$(cat "$CR_TMP/add1")
assert_eq "$st" 200 "add with one process: $body"
assert_eq "$(json_get "$body" reached)" 1 "one process reached"
assert_eq "$(py 'import json,sys; print(len(json.loads(sys.argv[1])["agents"]))' "$body")" 1 "one result"
assert_contains "$(json_get "$body" note)" "not connected" "the answer says absent processes were not changed"
listed "$STORE1" | grep -q "${OTHER_FP:0:16}" || fail "store 1 did not get the CA"
listed "$STORE2" | grep -q "${OTHER_FP:0:16}" && fail "the stopped agent's store changed"

# One process trusts it, the other does not: a mixed answer is 502 with both results... once the
# stopped one is back: it answers 404 to the remove, the other 200.
start_agent agent3 "$CR_TMP/agent2.yaml" 2
for ((i = 0; i < 100; i++)); do
  [[ $(tunnels_of_instances) == "4 2" ]] && break
  sleep 0.1
done
st=$(admin "$CR_TMP/mixed" DELETE "/agents/acme-agent-1/trust/${OTHER_FP:0:12}")
body=$(cat "$CR_TMP/mixed")
assert_eq "$st" 502 "mixed outcome: $body"
assert_eq "$(json_get "$body" reached)" 2
assert_eq "$(json_get "$body" failed)" 1 "one process could not remove it"
assert_eq "$(py 'import json,sys; print(sorted(x["status"] for x in json.loads(sys.argv[1])["agents"]))' "$body")" \
  "[200, 404]" "per-process statuses"
listed "$STORE1" | grep -q "${OTHER_FP:0:16}" && fail "store 1 still trusts the CA after the mixed remove"

stop_ccrelay agent1
stop_ccrelay agent3
stop_ccrelay gateway
cr_pass
