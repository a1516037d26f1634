#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# /metrics on both roles: the agent's admin listener, the gateway's probe listener and admin API.
# Every scrape (also while calls are in flight) passes `promtool check metrics` without a word; the
# values move as calls are made (calls +N, bytes grow), both roles see the two tunnels, a refused
# caller and a trust-store reload are counted, and the example alert rules pass `promtool check rules`.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_metrics 180

command -v promtool >/dev/null || fail "promtool not found (Debian package prometheus; deploy/install-deps.sh)"
out=$(promtool check rules "$CR_SRC/deploy/prometheus/ccrelay-rules.yaml" 2>&1) || {
  echo "$out" >&2
  fail "promtool check rules refuses deploy/prometheus/ccrelay-rules.yaml"
}

make_pki
start_cms_sim
PROBE_PORT=$(pick_free_port)
GW_ADMIN_PORT=$(pick_free_port)
AGENT_ADMIN_PORT=$(pick_free_port)
TOKEN=$(openssl rand -hex 32)
printf '%s\n' "$TOKEN" >"$CR_TMP/admin.token"
chmod 600 "$CR_TMP/admin.token"
write_gateway_conf "$CR_TMP/gateway.yaml" "admin:
  listen: 127.0.0.1:$GW_ADMIN_PORT
  token_file: $CR_TMP/admin.token
probe:
  listen: 127.0.0.1:$PROBE_PORT"
"$CR_PY" - "$CR_TMP/gateway.yaml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("services:\n", "services:\n  - host: src.example.com\n    group: acme\n    callers: { sources: [127.0.0.2/32] }\n"
              "  - host: lim.example.com\n    group: acme\n    limits: { max_body: 8 }\n", 1)
open(p, "w").write(s)
PY
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms-json "$CMS_PORT")" "" "admin: { listen: 127.0.0.1:$AGENT_ADMIN_PORT }"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 2

# scrape NAME URL [CURL_ARGS...]: saves the exposition in $CR_TMP/NAME.prom; promtool must say nothing.
scrape() {
  local name=$1 url=$2 st lint
  shift 2
  st=$(curl -sS -o "$CR_TMP/$name.prom" -w '%{http_code}' -D "$CR_TMP/$name.h" "$@" "$url") ||
    fail "scrape of $url failed"
  assert_eq "$st" 200 "GET $url"
  grep -qi '^content-type: text/plain; version=0.0.4' "$CR_TMP/$name.h" || fail "$url: not the text exposition's type"
  lint=$(promtool check metrics <"$CR_TMP/$name.prom" 2>&1) || true
  [[ -z $lint ]] || {
    echo "$lint" >&2
    fail "promtool check metrics complains about $url (saved in $CR_TMP/$name.prom)"
  }
}
scrape_all() {
  scrape "agent$1" "http://127.0.0.1:$AGENT_ADMIN_PORT/metrics"
  scrape "probe$1" "http://127.0.0.1:$PROBE_PORT/metrics"
  scrape "gwadmin$1" "http://127.0.0.1:$GW_ADMIN_PORT/metrics" -H "Authorization: Bearer $TOKEN"
}
# value FILE NAME [LABEL_RE]: the sum of NAME's samples whose labels match LABEL_RE (0 when none).
value() {
  awk -v name="$2" -v re="${3:-}" '
    $1 ~ /^#/ { next }
    { split($1, a, "{"); if (a[1] != name) next; if (re != "" && $1 !~ re) next; s += $NF }
    END { printf "%.0f\n", s }' "$1"
}
calls() { # N: N calls through the gateway to the CMS route
  local i st
  for ((i = 0; i < $1; i++)); do
    st=$(relay_curl "$CR_TMP/call" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
      -d '{"action":"test"}')
    assert_eq "$st" 200 "call through the relay"
  done
}

# The admin API's /metrics needs the bearer token like every admin endpoint.
st=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GW_ADMIN_PORT/metrics")
assert_eq "$st" 401 "admin /metrics without the token"

calls 1 # every family has its series (the upstream pool, its handshake, the histograms)
scrape_all 0
for f in agent0 probe0 gwadmin0; do
  assert_file_contains "$CR_TMP/$f.prom" '^ccrelay_build_info\{version="[^"]+",revision="[^"]+"\} 1$'
  assert_file_contains "$CR_TMP/$f.prom" '^# TYPE ccrelay_tunnel_ping_rtt_seconds histogram$'
done
assert_eq "$(value "$CR_TMP/probe0.prom" ccrelay_gateway_tunnels_up 'group="acme",agent="acme-agent-1"')" 2 \
  "gateway: tunnels up for acme/acme-agent-1"
assert_eq "$(value "$CR_TMP/agent0.prom" ccrelay_agent_tunnels_up)" 2 "agent: tunnels up"
assert_file_contains "$CR_TMP/probe0.prom" '^ccrelay_certificate_not_after_seconds\{kind="gateway",name="public",subject="[^"]*"\} [0-9]+$'
assert_file_contains "$CR_TMP/probe0.prom" '^ccrelay_certificate_not_after_seconds\{kind="gateway",name="tunnel",'
assert_file_contains "$CR_TMP/agent0.prom" '^ccrelay_certificate_not_after_seconds\{kind="route_identity",name="cms-json",'
assert_file_contains "$CR_TMP/agent0.prom" '^ccrelay_certificate_not_after_seconds\{kind="upstream",name="cms-json",'
assert_file_contains "$CR_TMP/agent0.prom" '^ccrelay_certificate_not_after_seconds\{kind="trusted_root",name="[0-9a-f]+",'
assert_eq "$(value "$CR_TMP/agent0.prom" ccrelay_agent_upstream_handshakes_total 'route="cms-json"')" 1 \
  "agent: one handshake with the upstream"
cmp -s <(grep -v '^ccrelay_tunnel_ping_rtt' "$CR_TMP/probe0.prom" | grep -v '^ccrelay_gateway_public_connections') \
  <(grep -v '^ccrelay_tunnel_ping_rtt' "$CR_TMP/gwadmin0.prom" | grep -v '^ccrelay_gateway_public_connections') ||
  fail "the probe listener and the admin API expose different metrics"

# Values move with calls: +N calls on both roles, bytes grow, latency observed.
N=7
g_calls=$(value "$CR_TMP/probe0.prom" ccrelay_gateway_calls_total 'service="cms.example.com",method="POST",code="2xx"')
a_calls=$(value "$CR_TMP/agent0.prom" ccrelay_agent_calls_total 'route="cms-json",method="POST",code="2xx"')
g_in=$(value "$CR_TMP/probe0.prom" ccrelay_gateway_request_bytes_total 'service="cms.example.com"')
g_out=$(value "$CR_TMP/probe0.prom" ccrelay_gateway_response_bytes_total 'service="cms.example.com"')
a_out=$(value "$CR_TMP/agent0.prom" ccrelay_agent_response_bytes_total 'route="cms-json"')
g_hist=$(value "$CR_TMP/probe0.prom" ccrelay_gateway_call_duration_seconds_count 'service="cms.example.com"')
a_hist=$(value "$CR_TMP/agent0.prom" ccrelay_agent_upstream_duration_seconds_count 'route="cms-json"')
# Scrapes while calls are in flight: a bounded burst in the background.
(calls "$N") &
burst=$!
for i in 1 2 3; do scrape_all "d$i"; done
wait "$burst" || fail "a call of the burst failed"
scrape_all 1
assert_eq "$(value "$CR_TMP/probe1.prom" ccrelay_gateway_calls_total 'service="cms.example.com",method="POST",code="2xx"')" \
  $((g_calls + N)) "gateway: calls counted"
assert_eq "$(value "$CR_TMP/agent1.prom" ccrelay_agent_calls_total 'route="cms-json",method="POST",code="2xx"')" \
  $((a_calls + N)) "agent: calls counted"
assert_eq "$(value "$CR_TMP/probe1.prom" ccrelay_gateway_request_bytes_total 'service="cms.example.com"')" \
  $((g_in + N * 17)) "gateway: request bytes"
(($(value "$CR_TMP/probe1.prom" ccrelay_gateway_response_bytes_total 'service="cms.example.com"') > g_out)) ||
  fail "gateway: response bytes did not grow"
(($(value "$CR_TMP/agent1.prom" ccrelay_agent_response_bytes_total 'route="cms-json"') > a_out)) ||
  fail "agent: response bytes did not grow"
assert_eq "$(value "$CR_TMP/probe1.prom" ccrelay_gateway_call_duration_seconds_count 'service="cms.example.com"')" \
  $((g_hist + N)) "gateway: durations observed"
assert_eq "$(value "$CR_TMP/agent1.prom" ccrelay_agent_upstream_duration_seconds_count 'route="cms-json"')" \
  $((a_hist + N)) "agent: upstream times observed"
assert_eq "$(value "$CR_TMP/probe1.prom" ccrelay_gateway_calls_in_flight)" 0 "gateway: nothing in flight after"
assert_eq "$(value "$CR_TMP/agent1.prom" ccrelay_agent_calls_in_flight)" 0 "agent: nothing in flight after"
(($(value "$CR_TMP/agent1.prom" ccrelay_agent_upstream_connections 'route="cms-json",state="idle"') >= 1)) ||
  fail "agent: no idle upstream connection pooled"

# A refused caller: counted by service and rule, not as a call of another service.
st=$(curl_status "$CR_TMP/refused" --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
  -H "Host: src.example.com" "https://cms.example.com:$GW_PUBLIC_PORT/x")
assert_eq "$st" 403 "caller outside the service's sources"
# A body over the service's max_body: a limit hit.
st=$(curl_status "$CR_TMP/limited" --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
  -H "Host: lim.example.com" -d '{"action":"test"}' "https://cms.example.com:$GW_PUBLIC_PORT/connector/mdm.cgi")
assert_eq "$st" 413 "body over max_body"
# A request no route of the agent matches: 404 from the agent, counted as unrouted there.
st=$(relay_curl "$CR_TMP/noroute" cms.example.com /nowhere)
assert_eq "$st" 404 "no agent route"
scrape_all 2
assert_eq "$(value "$CR_TMP/probe2.prom" ccrelay_gateway_callers_refused_total 'service="src.example.com",rule="sources"')" 1 \
  "gateway: refused caller counted"
assert_eq "$(value "$CR_TMP/probe2.prom" ccrelay_gateway_calls_total 'service="src.example.com",method="GET",code="4xx"')" 1 \
  "gateway: the refused call is a 4xx of its service"
assert_eq "$(value "$CR_TMP/agent2.prom" ccrelay_agent_unrouted_calls_total)" 1 "agent: unrouted call counted"
assert_eq "$(value "$CR_TMP/probe2.prom" ccrelay_gateway_limits_hit_total 'service="lim.example.com",limit="max_body"')" 1 \
  "gateway: max_body hit counted"

# A trust-store change reloads the agent's routes: counted, with the time of the success.
ok0=$(value "$CR_TMP/agent2.prom" ccrelay_reloads_total 'result="ok"')
"$CCRELAY_BIN" trust --store "$CR_TMP/trust" add "$CR_PKI/public-ca.pem" >/dev/null
for ((i = 0; i < 100; i++)); do
  scrape agent3 "http://127.0.0.1:$AGENT_ADMIN_PORT/metrics"
  (($(value "$CR_TMP/agent3.prom" ccrelay_reloads_total 'result="ok"') > ok0)) && break
  sleep 0.1
done
(($(value "$CR_TMP/agent3.prom" ccrelay_reloads_total 'result="ok"') > ok0)) || fail "agent: trust-store reload not counted"
(($(value "$CR_TMP/agent3.prom" ccrelay_reload_last_success_timestamp_seconds) >= $(date +%s) - 60)) ||
  fail "agent: last reload time not recent"
assert_eq "$(grep -c '^ccrelay_certificate_not_after_seconds{kind="trusted_' "$CR_TMP/agent3.prom")" \
  $(($(grep -c '^ccrelay_certificate_not_after_seconds{kind="trusted_' "$CR_TMP/agent2.prom") + 1)) \
  "agent: the new root has its expiry gauge"

# PINGs every second (ping_interval 1s on both ends): round trips show within a few seconds.
for ((i = 0; i < 60; i++)); do
  scrape_all 4
  (($(value "$CR_TMP/probe4.prom" ccrelay_tunnel_ping_rtt_seconds_count) > 0)) &&
    (($(value "$CR_TMP/agent4.prom" ccrelay_tunnel_ping_rtt_seconds_count) > 0)) && break
  sleep 0.1
done
(($(value "$CR_TMP/probe4.prom" ccrelay_tunnel_ping_rtt_seconds_count) > 0)) || fail "gateway: no PING round trip"
(($(value "$CR_TMP/agent4.prom" ccrelay_tunnel_ping_rtt_seconds_count) > 0)) || fail "agent: no PING round trip"
(($(value "$CR_TMP/probe4.prom" ccrelay_tunnel_ping_rtt_seconds_bucket 'le="\+Inf"') ==
  $(value "$CR_TMP/probe4.prom" ccrelay_tunnel_ping_rtt_seconds_count))) || fail "gateway: +Inf bucket is not the count"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
