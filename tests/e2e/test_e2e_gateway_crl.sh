#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The gateway checks agent and caller certificates against CRLs: a CRL inside tunnel.client_ca, or
# tunnel.crl / public.crl files. A revoked agent is refused at the handshake with a log line naming
# its certificate; a replaced CRL file (atomic rename) applies without a restart, a bad one keeps the
# CRLs in force, and a tunnel whose agent becomes revoked is shut down. A revoked caller certificate
# fails the public handshake.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_gateway_crl 150

PKITOOL=$CR_SRC/tests/lib/pkitool.py
make_pki
start_cms_sim
route=$(cms_route cms-json "$CMS_PORT")
call() { relay_curl "$CR_TMP/out" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}'; }
serial_of() { openssl x509 -in "$1" -noout -serial | cut -d= -f2; }

# Two agent certificates with the same name (so the same group), told apart by serial number.
"$CR_PY" "$PKITOOL" issue "$CR_PKI/tunnel-ca.pem" "$CR_PKI/tunnel-ca.key" "$CR_PKI/agent-b" --cn acme-agent-1 --client
serial_a=$(serial_of "$CR_PKI/agent.pem")
serial_b=$(serial_of "$CR_PKI/agent-b.pem")
# After each write_gateway_conf: the agents dial its tunnel port. Every start has its own name (and
# log), so no wait can match a line an earlier process wrote.
agent_confs() {
  write_agent_conf "$CR_TMP/agent-a.yaml" "$route" "" "" agent
  write_agent_conf "$CR_TMP/agent-b.yaml" "$route" "" "" agent-b
}

# ---- 1. A CRL inside tunnel.client_ca is applied without any new key (hard by default).
mkdir -p "$CR_TMP/crl"
"$CR_PY" "$PKITOOL" crl "$CR_PKI/tunnel-ca.pem" "$CR_PKI/tunnel-ca.key" "$CR_TMP/crl/revoke-a.pem" --revoke "$CR_PKI/agent.pem"
cat "$CR_PKI/tunnel-ca.pem" "$CR_TMP/crl/revoke-a.pem" >"$CR_TMP/crl/tunnel-ca-with-crl.pem"
write_gateway_conf "$CR_TMP/gw1.yaml"
sed -i "s|client_ca: $CR_PKI/tunnel-ca.pem|client_ca: $CR_TMP/crl/tunnel-ca-with-crl.pem|" "$CR_TMP/gw1.yaml"
agent_confs
start_gateway gw1 "$CR_TMP/gw1.yaml"
wait_for_log gw1 'msg="CRLs loaded" listener=tunnel trigger=start revocation=hard crls=1 revoked=1' 5
start_bg agent_a1 "$CCRELAY_BIN" agent -c "$CR_TMP/agent-a.yaml"
wait_for_log gw1 "msg=\"agent refused\".*certificate revoked \\(depth 0, subject [^)]*CN=acme-agent-1[^)]*, serial $serial_a\\)" 10
stop_ccrelay agent_a1
assert_file_lacks "$(log_of gw1)" 'msg="tunnel up"' "the revoked agent got no tunnel"
start_agent agent_b1 "$CR_TMP/agent-b.yaml" 1
assert_eq "$(call)" 200 "the agent that is not revoked relays"
stop_ccrelay agent_b1
stop_ccrelay gw1

# ---- 2. tunnel.crl and public.crl files, reloaded on change.
"$CR_PY" "$PKITOOL" crl "$CR_PKI/client-ca.pem" "$CR_PKI/client-ca.key" "$CR_TMP/crl/public.crl.pem" \
  --revoke "$CR_PKI/pki-soap-connector.pem"
cp "$CR_TMP/crl/revoke-a.pem" "$CR_TMP/crl/tunnel.crl.pem"
GW_PUBLIC_CLIENT_CA=$CR_PKI/client-ca.pem GW_PUBLIC_EXTRA="crl: $CR_TMP/crl/public.crl.pem" \
  write_gateway_conf "$CR_TMP/gw2.yaml"
sed -i "s|^  client_ca: $CR_PKI/tunnel-ca.pem|&\n  crl: $CR_TMP/crl/tunnel.crl.pem|" "$CR_TMP/gw2.yaml"
agent_confs
"$CCRELAY_BIN" check -c "$CR_TMP/gw2.yaml" >"$CR_TMP/check.out" 2>&1 || { cat "$CR_TMP/check.out" >&2; fail "check refused gw2.yaml"; }
# check loads the CRLs as the gateway would, and says where a bad one is named.
echo "not a CRL" >"$CR_TMP/crl/garbage.pem"
sed "s|crl: $CR_TMP/crl/tunnel.crl.pem|crl: $CR_TMP/crl/garbage.pem|" "$CR_TMP/gw2.yaml" >"$CR_TMP/bad.yaml"
line=$(grep -n 'crl: .*garbage.pem' "$CR_TMP/bad.yaml" | cut -d: -f1)
rc=0
"$CCRELAY_BIN" check -c "$CR_TMP/bad.yaml" >"$CR_TMP/bad.out" 2>&1 || rc=$?
assert_eq "$rc" 2 "check refuses a CRL file that holds no CRL"
assert_file_contains "$CR_TMP/bad.out" "bad\.yaml:$line:8: tunnel\.crl: no CRL found in .*garbage\.pem"
start_gateway gw2 "$CR_TMP/gw2.yaml"
wait_for_log gw2 'msg="CRLs loaded" listener=tunnel trigger=start revocation=hard crls=1 revoked=1' 5
wait_for_log gw2 'msg="CRLs loaded" listener=public trigger=start revocation=hard crls=1 revoked=1' 5

start_bg agent_a2 "$CCRELAY_BIN" agent -c "$CR_TMP/agent-a.yaml"
wait_for_log gw2 "msg=\"agent refused\".*certificate revoked .*serial $serial_a" 10
stop_ccrelay agent_a2
start_agent agent_b2 "$CR_TMP/agent-b.yaml" 1
RELAY_CLIENT=cms-admin
assert_eq "$(call)" 200 "caller with a good certificate, through the agent that is not revoked"
RELAY_CLIENT=pki-soap-connector
st=$(call)
assert_eq "$st" 000 "a caller with a revoked certificate fails the handshake"
assert_contains "$(cat "$CR_TMP/out.err")" "alert" "curl reports the server's alert"
RELAY_CLIENT=cms-admin

# A bad CRL file is reported and the CRLs in force stay.
echo "not a CRL" >"$CR_TMP/crl/tunnel.crl.tmp" && mv "$CR_TMP/crl/tunnel.crl.tmp" "$CR_TMP/crl/tunnel.crl.pem"
wait_for_log gw2 'msg="CRL reload failed; the CRLs in force stay" listener=tunnel trigger=file_change' 15
assert_eq "$(call)" 200 "a bad CRL file changes nothing"
start_bg agent_a3 "$CCRELAY_BIN" agent -c "$CR_TMP/agent-a.yaml"
wait_for_log agent_a3 'msg="tunnel dial failed"' 10
stop_ccrelay agent_a3
assert_eq "$(grep -c 'msg="tunnel up"' "$(log_of gw2)")" 2 "still only agent B's two tunnels"

# Replace the CRL (atomic rename) with one that also revokes agent B: B's tunnels are shut down and
# its next dial is refused, without a restart.
"$CR_PY" "$PKITOOL" crl "$CR_PKI/tunnel-ca.pem" "$CR_PKI/tunnel-ca.key" "$CR_TMP/crl/tunnel.crl.tmp" \
  --revoke "$CR_PKI/agent.pem" --revoke "$CR_PKI/agent-b.pem"
mv "$CR_TMP/crl/tunnel.crl.tmp" "$CR_TMP/crl/tunnel.crl.pem"
wait_for_log gw2 'msg="CRLs reloaded" listener=tunnel trigger=file_change revocation=hard crls=1 revoked=2' 15
wait_for_log gw2 "msg=\"tunnel closed: agent certificate revoked\".*serial $serial_b" 5
wait_for_log gw2 "msg=\"agent refused\".*certificate revoked .*serial $serial_b" 15
assert_eq "$(call)" 503 "no agent left to relay"

# SIGHUP reloads too (same files: logged, nothing else changes).
kill -HUP "$(pid_of gw2)"
wait_for_log gw2 'msg="CRLs reloaded" listener=tunnel trigger=SIGHUP' 5
wait_for_log gw2 'msg="CRLs reloaded" listener=public trigger=SIGHUP' 5

stop_ccrelay agent_b2
stop_ccrelay gw2
cr_pass
