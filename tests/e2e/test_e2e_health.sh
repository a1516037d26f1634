#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `ccrelay health`, the probe the container image's HEALTHCHECK runs: exit 1 while the agent has no
# tunnel (its /readyz answers 503), 0 once a tunnel is up, 1 when the listener is gone or never answers
# (bounded by --timeout), 2 for usage and configuration errors.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_health 120

make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
ADMIN_PORT=$(pick_free_port)
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms-json "$CMS_PORT")" "" "admin: { listen: 127.0.0.1:$ADMIN_PORT }"

# Agent up, gateway not yet: not ready.
start_bg agent "$CCRELAY_BIN" agent -c "$CR_TMP/agent.yaml"
wait_for_port 127.0.0.1 "$ADMIN_PORT" 10
rc=0
out=$("$CCRELAY_BIN" health -c "$CR_TMP/agent.yaml" 2>&1) || rc=$?
assert_eq "$rc" 1 "health while no tunnel is up"
assert_contains "$out" "/readyz: 503" "health names what answered"

start_gateway
wait_for_tunnels agent 1
rc=0
out=$("$CCRELAY_BIN" health -c "$CR_TMP/agent.yaml" 2>&1) || rc=$?
assert_eq "$rc" 0 "health with a tunnel up"
rc=0
"$CCRELAY_BIN" health --url "http://127.0.0.1:$ADMIN_PORT/readyz" >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 0 "health --url"
rc=0
CCRELAY_CONFIG=$CR_TMP/agent.yaml "$CCRELAY_BIN" health >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 0 "health with CCRELAY_CONFIG (the image's HEALTHCHECK)"

# A listener that accepts and never answers: exit 1 within the timeout, not a hang.
SILENT_PORT=$(pick_free_port)
start_bg silent python3 -c "
import socket, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('127.0.0.1', $SILENT_PORT)); s.listen(8)
conns = []
deadline = time.time() + 60
while time.time() < deadline:
    s.settimeout(1)
    try: conns.append(s.accept()[0])
    except socket.timeout: pass
"
wait_for_port 127.0.0.1 "$SILENT_PORT" 10
start=$(date +%s%N)
rc=0
out=$("$CCRELAY_BIN" health --url "http://127.0.0.1:$SILENT_PORT/readyz" --timeout 1 2>&1) || rc=$?
elapsed_ms=$((($(date +%s%N) - start) / 1000000))
assert_eq "$rc" 1 "health against a silent listener"
assert_contains "$out" "timed out" "health says it timed out"
((elapsed_ms < 3000)) || fail "health took ${elapsed_ms} ms against a 1 s timeout"
stop_bg silent

# Usage and configuration errors: exit 2 with a reason.
rc=0
out=$("$CCRELAY_BIN" health --url "https://127.0.0.1:$ADMIN_PORT/readyz" 2>&1) || rc=$?
assert_eq "$rc" 2 "https URL"
assert_contains "$out" "plain HTTP"
rc=0
out=$("$CCRELAY_BIN" health -c "$CR_TMP/gateway.yaml" 2>&1) || rc=$?
assert_eq "$rc" 2 "config without admin.listen"
assert_contains "$out" "no admin.listen"

stop_ccrelay agent
rc=0
"$CCRELAY_BIN" health -c "$CR_TMP/agent.yaml" >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 1 "health once the agent stopped"
stop_ccrelay gateway
cr_pass
