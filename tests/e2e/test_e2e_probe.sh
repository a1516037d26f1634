#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# "Test Connection" (issue 12, point 5): `ccrelay probe -c agent.yaml [ROUTE...]` dials each route's
# upstream as the agent does and prints the TLS version, cipher, the server certificate's subject,
# issuer and notAfter, the verify result and the status of the request named (default HEAD /); it
# exits 0 only when every route probed is reachable and verified. The same probe runs on a connected
# agent through the gateway's admin API: POST /agents/<agent>/probe.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_probe 150

make_pki
start_cms_sim
start_sim unknownca cms_sim.py --cert "$CR_PKI/upstream-unknownca.pem" --key "$CR_PKI/upstream-unknownca.key" \
  --client-ca "$CR_PKI/client-ca.pem" --require-cn "CMS JSON connector"
UNKNOWN_PORT=$SIM_PORT
DOWN_PORT=$(pick_free_port)
ADMIN_PORT=$(pick_free_port)
TOKEN=$(openssl rand -hex 32)
printf '%s\n' "$TOKEN" >"$CR_TMP/admin.token"
chmod 600 "$CR_TMP/admin.token"
write_gateway_conf "$CR_TMP/gateway.yaml" "admin:
  listen: 127.0.0.1:$ADMIN_PORT
  token_file: $CR_TMP/admin.token"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route good "$CMS_PORT")
$(cms_route down "$DOWN_PORT" cms-json-connector.p12 localhost /down)
$(cms_route untrusted "$UNKNOWN_PORT" cms-json-connector.p12 localhost /untrusted)"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >/dev/null || fail "agent config does not check"

probe() { # OUT ARGS... ; echoes the exit status
  local out=$1 rc=0
  shift
  "$CCRELAY_BIN" probe -c "$CR_TMP/agent.yaml" "$@" >"$out" 2>&1 || rc=$?
  echo "$rc"
}

# A good route: exit 0, every field printed.
assert_eq "$(probe "$CR_TMP/good.out" good)" 0 "probe of a good route"
for re in '^route good: OK$' '^  tls +TLSv1\.[23] [A-Z0-9_-]+$' '^  subject +CN=cms\.internal' \
  '^  issuer +CN=ccrelay Test Upstream CA' '^  not_after +20[0-9]{2}-[0-9]{2}-[0-9]{2}T' '^  verify +ok \(ca_file\)$' \
  '^  request +HEAD / -> [0-9]{3}$'; do
  assert_file_contains "$CR_TMP/good.out" "$re" "probe output"
done
assert_eq "$(probe "$CR_TMP/good2.out" --method POST --path /connector/mdm.cgi good)" 0 "probe with --method/--path"
assert_file_contains "$CR_TMP/good2.out" '^  request +POST /connector/mdm.cgi -> [0-9]{3}$'
# An upstream that is down: exit 1, the route named and why.
assert_eq "$(probe "$CR_TMP/down.out" down)" 1 "probe of a route whose upstream is down"
assert_file_contains "$CR_TMP/down.out" '^route down: FAILED$'
assert_file_contains "$CR_TMP/down.out" "error +connect to 127\.0\.0\.1:$DOWN_PORT failed: .*(refused|ECONNREFUSED)"
# An untrusted server certificate: exit 1 with the verify reason.
assert_eq "$(probe "$CR_TMP/untrusted.out" untrusted)" 1 "probe of a route with an untrusted server"
assert_file_contains "$CR_TMP/untrusted.out" '^route untrusted: FAILED$'
assert_file_contains "$CR_TMP/untrusted.out" '^  verify +.*unable to get local issuer certificate'
# Every route: exit 1 (two fail), three reports.
assert_eq "$(probe "$CR_TMP/all.out")" 1 "probe of every route"
assert_eq "$(grep -c '^route ' "$CR_TMP/all.out")" 3 "three routes reported"
# Usage errors.
assert_eq "$(probe "$CR_TMP/nosuch.out" nosuch)" 2 "an unknown route name"
assert_file_contains "$CR_TMP/nosuch.out" "has no route named nosuch"

# The admin API: the same probe on the connected agent, answered as JSON.
start_gateway
wait_for_log gateway "msg=\"admin listening\" admin=127.0.0.1:$ADMIN_PORT" 5
start_agent agent "$CR_TMP/agent.yaml" 2
admin() { # OUT METHOD PATH
  curl_status "$1" -X "$2" -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT$3"
}
st=$(admin "$CR_TMP/a1.json" POST "/agents/acme-agent-1/probe?route=good")
assert_eq "$st" 200 "admin probe of one route"
body=$(cat "$CR_TMP/a1.json")
assert_eq "$(json_get "$body" ok)" true "admin probe ok"
assert_eq "$(json_get "$body" routes.0.name)" good
assert_eq "$(json_get "$body" routes.0.verify)" ok
assert_contains "$(json_get "$body" routes.0.tls_version)" "TLSv1."
assert_contains "$(json_get "$body" routes.0.server_certificate.subject)" "CN=cms.internal"
st=$(admin "$CR_TMP/a2.json" POST "/agents/acme-agent-1/probe?method=GET&path=%2Fconnector%2Fmdm.cgi")
assert_eq "$st" 200 "admin probe of every route"
body=$(cat "$CR_TMP/a2.json")
assert_eq "$(json_get "$body" ok)" false "admin probe with failing routes"
assert_eq "$(json_get "$body" routes.1.name)" down
assert_contains "$(json_get "$body" routes.1.error)" "connect to 127.0.0.1:$DOWN_PORT failed"
assert_contains "$(json_get "$body" routes.2.verify)" "unable to get local issuer certificate"
assert_eq "$(json_get "$body" routes.0.ok)" true
wait_for_log agent 'msg="probe requested" requested_by="admin 127.0.0.1.*routes=3 method=GET path="/connector/mdm.cgi"' 5
st=$(admin "$CR_TMP/a3.json" POST "/agents/acme-agent-1/probe?route=nosuch")
assert_eq "$st" 404 "admin probe of an unknown route"
st=$(admin "$CR_TMP/a4.json" GET "/agents/acme-agent-1/probe")
assert_eq "$st" 405 "admin probe needs POST"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
