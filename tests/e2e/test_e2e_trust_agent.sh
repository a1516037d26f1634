#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The agent and its trusted-root store (issue 3):
#  A. a route whose client identity's root is missing from the store is refused at start, with the
#     reason; `trust add` of the root (file event) makes it work without a restart and without
#     dropping a stream in flight; SIGHUP reloads too;
#  B. after `trust remove` of the upstream's root the next call gets 502: no pooled connection or
#     resumed TLS session slips through;
#  C. revocation: a revoked upstream certificate gives 502 under hard and soft; under hard a missing
#     or stale CRL gives 502, under soft the call passes and a warning is logged;
#  D. expiry: an identity inside the warning window logs a warning; an expired one is refused and
#     makes the agent not ready (/readyz 503).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_trust_agent 400

make_pki
P=$CR_PKI
tool() { "$CR_PY" "$CR_SRC/tests/lib/pkitool.py" "$@"; }
pass=$(cat "$P/cms-json-connector.pass")
# An upstream certificate that will be revoked, a client identity rooted in upstream-ca (for a route that
# stays usable while client-ca is missing), one expiring within the warning window, one expired.
tool issue "$P/upstream-ca.pem" "$P/upstream-ca.key" "$CR_TMP/revoked-server" --cn localhost --server \
  --dns localhost --ip 127.0.0.1
tool issue "$P/upstream-ca.pem" "$P/upstream-ca.key" "$CR_TMP/slow-id" --cn "slow client" --client --p12-pass="$pass"
tool issue "$P/client-ca.pem" "$P/client-ca.key" "$CR_TMP/soon-id" --cn "CMS JSON connector" --client --start-days -0.01 --days 10 \
  --p12-pass="$pass"
tool issue "$P/client-ca.pem" "$P/client-ca.key" "$CR_TMP/expired-id" --cn "CMS JSON connector" --client \
  --start-days -3 --days 1 --p12-pass="$pass"
cp "$CR_TMP"/slow-id.p12 "$CR_TMP"/soon-id.p12 "$CR_TMP"/expired-id.p12 "$P/"

start_cms_sim
start_sim slowsim cms_sim.py --cert "$P/cms-server.pem" --key "$P/cms-server.key" --client-ca "$P/upstream-ca.pem" \
  --require-cn "slow client"
SLOW_PORT=$SIM_PORT
start_sim revsim cms_sim.py --cert "$CR_TMP/revoked-server.pem" --key "$CR_TMP/revoked-server.key" \
  --client-ca "$P/client-ca.pem" --require-cn "CMS JSON connector"
REV_PORT=$SIM_PORT

write_gateway_conf "$CR_TMP/gateway.yaml"
start_gateway

# A route whose upstream is verified by the trust store (no `ca:`), with extra route keys.
store_route() { # NAME PORT P12 PREFIX [EXTRA_ROUTE_YAML]
  cat <<YAML
  - name: $1
    match: { path_prefix: $4 }
    upstream:
      url: https://127.0.0.1:$2
      server_name: localhost
      identity: { pkcs12: $P/$3, password_file: $P/cms-json-connector.pass }
      connect_timeout: 3s
      response_timeout: 10s
${5:-}
YAML
}
call() { # OUT PATH -> status
  relay_curl "$CR_TMP/$1" cms.example.com "$2" -H 'Content-Type: application/json' -d '{"action":"test"}'
}
# reloads NAME: how many times NAME has reloaded its trust store so far.
reloads() { grep -c 'msg="trust store reloaded"' "$(log_of "$1")" || true; }
# wait_reload NAME BEFORE: until NAME has reloaded more than BEFORE times (at most 5 s).
wait_reload() {
  local i
  for ((i = 0; i < 100; i++)); do
    (($(reloads "$1") > $2)) && return 0
    sleep 0.05
  done
  fail "$1 did not reload its trust store within 5 s"
}
fp_of() { openssl x509 -in "$1" -noout -fingerprint -sha256 | sed 's/.*=//; s/://g' | tr 'A-F' 'a-f'; }

# ---- A: missing root at start, trust add while a stream is in flight, SIGHUP --------------------
AGENT_TRUST_STORE=$CR_TMP/store-a
make_trust_store "$AGENT_TRUST_STORE" "$P/upstream-ca.pem"
write_agent_conf "$CR_TMP/agent-a.yaml" "$(store_route cms "$CMS_PORT" cms-json-connector.p12 /connector/mdm.cgi)
$(store_route slow "$SLOW_PORT" slow-id.p12 /test/)"
start_bg agent-a "$CCRELAY_BIN" agent -c "$CR_TMP/agent-a.yaml"
wait_for_tunnels agent-a 1
assert_file_contains "$(log_of agent-a)" 'msg="route refused" route=cms .*does not chain to a trusted root.*(unable to get local issuer certificate|self-signed certificate in certificate chain)'
assert_file_contains "$(log_of agent-a)" 'msg="route ready" route=slow'
st=$(call a1 /connector/mdm.cgi)
assert_eq "$st" 503 "refused route"
assert_file_contains "$CR_TMP/a1" '"error":"route_unavailable"'

# A 2.5 s call in flight through the usable route while the store changes under it.
curl -sS --max-time 20 -o "$CR_TMP/inflight" -w '%{http_code}' --cacert "$P/public-ca.pem" \
  --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
  "https://cms.example.com:$GW_PUBLIC_PORT/test/slow?ms=2500" >"$CR_TMP/inflight.status" 2>&1 &
inflight=$!
sleep 0.5
"$CCRELAY_BIN" trust --store "$AGENT_TRUST_STORE" add "$P/client-ca.pem" >/dev/null
wait_for_log agent-a 'msg="route ready" route=cms .*trigger=file_change' 5
st=$(call a2 /connector/mdm.cgi)
assert_eq "$st" 200 "route works after trust add, no restart"
wait "$inflight" || fail "the call in flight failed during the reload"
assert_eq "$(cat "$CR_TMP/inflight.status")" 200 "stream in flight survived the reload"
assert_file_contains "$CR_TMP/inflight" '"slept_ms": ?2500'
n=$(reloads agent-a)
kill -HUP "$(pid_of agent-a)"
wait_reload agent-a "$n"
assert_file_contains "$(log_of agent-a)" 'msg="trust store reloaded" .*trigger=SIGHUP'

# ---- B: remove the upstream's root: the next call is 502 even with a pooled connection ----------
st=$(call b1 /connector/mdm.cgi)
assert_eq "$st" 200 "warm the pool"
n=$(reloads agent-a)
"$CCRELAY_BIN" trust --store "$AGENT_TRUST_STORE" remove "$(fp_of "$P/upstream-ca.pem" | cut -c1-12)" >/dev/null
wait_reload agent-a "$n"
st=$(call b2 /connector/mdm.cgi)
assert_eq "$st" 502 "upstream root removed"
wait_for_log agent-a 'msg="upstream failed" request_id=[^ ]+ route=cms .*unable to get local issuer certificate' 5
stop_ccrelay agent-a

# ---- C: revocation ----------------------------------------------------------------------------
AGENT_TRUST_STORE=$CR_TMP/store-c
make_trust_store "$AGENT_TRUST_STORE" "$P/upstream-ca.pem" "$P/client-ca.pem"
tool crl "$P/client-ca.pem" "$P/client-ca.key" "$CR_TMP/client-ca.crl"
"$CCRELAY_BIN" trust --store "$AGENT_TRUST_STORE" add-crl "$CR_TMP/client-ca.crl" >/dev/null
write_agent_conf "$CR_TMP/agent-c.yaml" "$(store_route ok-hard "$CMS_PORT" cms-json-connector.p12 /ok-hard/ '    revocation: hard')
$(store_route ok-soft "$CMS_PORT" cms-json-connector.p12 /ok-soft/ '    revocation: soft')
$(store_route rev-hard "$REV_PORT" cms-json-connector.p12 /rev-hard/ '    revocation: hard')
$(store_route rev-soft "$REV_PORT" cms-json-connector.p12 /rev-soft/ '    revocation: soft')"
start_bg agent-c "$CCRELAY_BIN" agent -c "$CR_TMP/agent-c.yaml"
wait_for_tunnels agent-c 1
for r in ok-hard ok-soft rev-hard rev-soft; do
  assert_file_contains "$(log_of agent-c)" "msg=\"route ready\" route=$r "
done
# No CRL for upstream-ca: hard fails closed, soft passes with a warning.
assert_eq "$(call c1 /ok-hard/x)" 502 "hard, CRL missing"
wait_for_log agent-c 'msg="upstream failed" request_id=[^ ]+ route=ok-hard .*unable to get certificate CRL' 5
assert_eq "$(call c2 /ok-soft/x)" 404 "soft, CRL missing: the call reaches the CMS (its 404 for this path)"
wait_for_log agent-c 'msg="soft revocation: upstream allowed without a usable CRL" route=ok-soft' 5
# A fresh CRL revoking revsim's certificate: revoked is 502 under both modes.
tool crl "$P/upstream-ca.pem" "$P/upstream-ca.key" "$CR_TMP/upstream-fresh.crl" --revoke "$CR_TMP/revoked-server.pem"
n=$(reloads agent-c)
"$CCRELAY_BIN" trust --store "$AGENT_TRUST_STORE" add-crl "$CR_TMP/upstream-fresh.crl" >/dev/null
wait_reload agent-c "$n"
assert_eq "$(call c3 /rev-hard/x)" 502 "revoked, hard"
assert_eq "$(call c4 /rev-soft/x)" 502 "revoked, soft"
wait_for_log agent-c 'route=rev-hard .*certificate revoked' 5
wait_for_log agent-c 'route=rev-soft .*certificate revoked' 5
assert_eq "$(call c5 /ok-hard/x)" 404 "not revoked, hard, fresh CRL: reaches the CMS"
# A stale CRL (nextUpdate passed) instead: hard 502, soft passes with a warning.
crl_fp=$(openssl crl -in "$CR_TMP/upstream-fresh.crl" -outform DER | sha256sum | cut -c1-16)
"$CCRELAY_BIN" trust --store "$AGENT_TRUST_STORE" remove "$crl_fp" >/dev/null
tool crl "$P/upstream-ca.pem" "$P/upstream-ca.key" "$CR_TMP/upstream-stale.crl" --stale
"$CCRELAY_BIN" trust --store "$AGENT_TRUST_STORE" add-crl --force "$CR_TMP/upstream-stale.crl" >/dev/null
n=$(reloads agent-c)
kill -HUP "$(pid_of agent-c)"
wait_reload agent-c "$n"
before=$(grep -c 'soft revocation: upstream allowed' "$(log_of agent-c)" || true)
assert_eq "$(call c6 /ok-hard/x)" 502 "hard, stale CRL"
wait_for_log agent-c 'route=ok-hard .*CRL has expired' 5
assert_eq "$(call c7 /ok-soft/x)" 404 "soft, stale CRL: passes"
after=$(grep -c 'soft revocation: upstream allowed' "$(log_of agent-c)" || true)
((after > before)) || fail "soft revocation with a stale CRL logged no warning"
stop_ccrelay agent-c

# ---- D: expiry ---------------------------------------------------------------------------------
AGENT_TRUST_STORE=$CR_TMP/store-d
make_trust_store "$AGENT_TRUST_STORE" "$P/upstream-ca.pem" "$P/client-ca.pem"
ADMIN_PORT=$(pick_free_port)
write_agent_conf "$CR_TMP/agent-d.yaml" "$(store_route soon "$CMS_PORT" soon-id.p12 /connector/mdm.cgi)" "" \
  "admin: { listen: 127.0.0.1:$ADMIN_PORT }
expiry_warning: 30d"
start_bg agent-d "$CCRELAY_BIN" agent -c "$CR_TMP/agent-d.yaml"
wait_for_tunnels agent-d 1
assert_file_contains "$(log_of agent-d)" 'msg="certificate expires soon" what=route_identity name="soon" .*days_left=(9|10)'
st=$(curl -sS -o "$CR_TMP/ready-d" -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")
assert_eq "$st" 200 "ready with an identity that expires in 10 days"
assert_eq "$(call d1 /connector/mdm.cgi)" 200 "a call, so the upstream's certificate is known"
st=$(curl -sS -o "$CR_TMP/status-d" -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/status")
assert_eq "$st" 200 "status"
days=$(json_get "$(cat "$CR_TMP/status-d")" routes.0.identity.days_left)
[[ $days == 9 || $days == 10 ]] || fail "status shows $days days left for a 10-day identity"
json_get "$(cat "$CR_TMP/status-d")" routes.0.upstream_certificate.not_after >/dev/null
stop_ccrelay agent-d

write_agent_conf "$CR_TMP/agent-e.yaml" "$(store_route expired "$CMS_PORT" expired-id.p12 /connector/mdm.cgi)" "" \
  "admin: { listen: 127.0.0.1:$ADMIN_PORT }"
start_bg agent-e "$CCRELAY_BIN" agent -c "$CR_TMP/agent-e.yaml"
wait_for_tunnels agent-e 1
assert_file_contains "$(log_of agent-e)" 'msg="route refused" route=expired .*certificate has expired'
st=$(curl -sS -o "$CR_TMP/ready-e" -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")
assert_eq "$st" 503 "an expired route identity makes the agent not ready"
assert_file_contains "$CR_TMP/ready-e" 'route expired: .*certificate has expired'
st=$(curl -sS -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/healthz")
assert_eq "$st" 200 "alive while not ready"
stop_ccrelay agent-e

stop_ccrelay gateway
cr_pass
