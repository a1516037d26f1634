#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Connections that never authenticate cannot take the gateway down (issue 16, findings 2 and 7):
# - at start, a descriptor limit too small for max_connections is refused with a clear error;
# - floods of silent and slowloris (ClientHello a byte at a time) connections on both ports, from
#   ten source addresses, are capped per source and in total and closed at the handshake deadline,
#   while 20 calls through the gateway succeed and a restarted agent is back within seconds;
# - the gateway's memory and descriptors stay bounded, and its log holds summary lines, not a line
#   per connection;
# - an agent whose dial went into a black hole (a full accept queue drops SYNs) is back soon after
#   the gateway is, not after connect_timeout.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_preauth_flood 300

FLOOD=$CR_SRC/tests/lib/flood.py
SOURCES=$(printf '127.0.1.%d,' $(seq 1 10))
SOURCES=${SOURCES%,}
FD_LIMIT=2600

make_pki
start_cms_sim
GW_PUBLIC_EXTRA=$'header_timeout: 3s\n  max_connections: 2000\n  max_handshakes: 600\n  max_per_source: 50'
write_gateway_conf "$CR_TMP/gateway.yaml"
# tunnel caps (ping_timeout is the tunnel section's last key), and info level: debug would log each
# failed public handshake
sed -i -e 's/^  ping_timeout: 2s$/  ping_timeout: 2s\n  handshake_timeout: 3s\n  max_handshakes: 200\n  max_per_source: 15/' \
  -e 's/^log: { level: debug }$/log: { level: info }/' "$CR_TMP/gateway.yaml"
grep -q 'max_per_source: 15' "$CR_TMP/gateway.yaml" || fail "tunnel caps not written"

# start_limited NAME LIMIT: the gateway under `ulimit -n LIMIT` (exec keeps the PID).
start_limited() {
  start_bg "$1" bash -c 'ulimit -n "$1" && exec "$2" gateway -c "$3"' _ "$2" "$CCRELAY_BIN" "$CR_TMP/gateway.yaml"
}

# 1. The descriptor limit is compared with what the configuration admits.
start_limited small 1000
wait_exit small 10 || true
alive "${CR_PID_OF[small]}" && fail "gateway started with max_connections 2000 under ulimit -n 1000"
assert_file_contains "$(log_of small)" 'need 2456 file descriptors, but the limit .* is 1000; raise the limit' \
  "start refused with what to change"

start_limited gateway "$FD_LIMIT"
wait_for_log gateway 'msg="gateway listening"' 15
assert_file_contains "$(log_of gateway)" 'msg="file descriptor limit" limit=2600 needed=2456' "effective limit logged"
GW_PID=${CR_PID_OF[gateway]}
route=$(cms_route cms-json "$CMS_PORT")
write_agent_conf "$CR_TMP/agent.yaml" "$route" $'  connect_timeout: 20s\n  dial_timeout: 1s'
start_agent agent "$CR_TMP/agent.yaml" 2

call() {
  relay_curl "$CR_TMP/call.out" cms.example.com /connector/mdm.cgi --max-time 5 \
    -H 'Content-Type: application/json' -d '{"action":"test"}'
}
assert_eq "$(call)" 200 "call before the flood"
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$GW_PID/status"; }
fds() { ls "/proc/$GW_PID/fd" | wc -l; }
RSS0=$(rss_kib)

# 2. Floods: silent and slowloris, on both ports, held 10 s (past the 3 s deadlines).
pids=()
flood() { # NAME PORT COUNT MODE
  "$CR_PY" "$FLOOD" --port "$2" --count "$3" --mode "$4" --sources "$SOURCES" --hold 10 --interval 0.2 \
    --ready "$CR_TMP/$1.ready" >"$CR_TMP/$1.json" 2>"$CR_TMP/$1.err" &
  pids+=($!)
}
flood pub_silent "$GW_PUBLIC_PORT" 3000 silent
flood tun_silent "$GW_TUNNEL_PORT" 3000 silent
flood pub_slow "$GW_PUBLIC_PORT" 500 slowloris
flood tun_slow "$GW_TUNNEL_PORT" 500 slowloris
for f in pub_silent tun_silent pub_slow tun_slow; do
  for ((i = 0; i < 200; i++)); do [[ -f $CR_TMP/$f.ready ]] && break; sleep 0.05; done
  [[ -f $CR_TMP/$f.ready ]] || fail "flood $f did not finish connecting within 10 s"
done
RSS1=$(rss_kib)
FDS1=$(fds)
cr_log "during the flood: gateway RSS ${RSS0} -> ${RSS1} KiB, ${FDS1} fds (limit $FD_LIMIT)"
((FDS1 < 1200)) || fail "gateway holds $FDS1 descriptors during the flood (caps: 600 public + 200 tunnel handshakes)"
((RSS1 - RSS0 < 20000)) || fail "gateway RSS grew by $((RSS1 - RSS0)) KiB during the flood"

ok=0
t0=$EPOCHREALTIME
for ((i = 0; i < 20; i++)); do
  st=$(call)
  [[ $st == 200 ]] && ok=$((ok + 1))
done
cr_log "20 calls during the flood: $ok answered 200 in $(((${EPOCHREALTIME/./} - ${t0/./}) / 1000)) ms"
assert_eq "$ok" 20 "every call during the flood answered"

# The agent restarts during the flood and is back within a few seconds.
stop_ccrelay agent
t0=$EPOCHREALTIME
start_agent agent2 "$CR_TMP/agent.yaml" 2
back_ms=$(((${EPOCHREALTIME/./} - ${t0/./}) / 1000))
cr_log "agent restarted during the flood: 2 tunnels up in $back_ms ms"
((back_ms < 5000)) || fail "agent needed $back_ms ms to reconnect during the flood"

for p in "${pids[@]}"; do wait "$p" || fail "a flood script failed"; done
for f in pub_silent tun_silent pub_slow tun_slow; do
  cr_log "flood $f: $(cat "$CR_TMP/$f.json")"
  "$CR_PY" - "$CR_TMP/$f.json" <<'PY' || fail "flood $f: a connection outlived the handshake deadline"
import json, sys
r = json.load(open(sys.argv[1]))
# Every connection made was refused at accept or closed by the 3 s deadline before the 10 s hold ended.
sys.exit(0 if r["connected"] > 0 and r["closed_by_peer"] == r["connected"] else 1)
PY
done

# Refusals: summary lines per listener, a bounded number of single lines.
wait_for_log gateway 'msg="connections refused" listener=public count=[0-9]+' 15
wait_for_log gateway 'msg="connections refused" listener=tunnel count=[0-9]+' 15
assert_file_contains "$(log_of gateway)" 'listener=public .*max_per_source=[0-9]+' "public per-source refusals counted"
single=$(grep -c 'msg="connection refused"\|msg="agent refused"' "$(log_of gateway)" || true)
lines=$(wc -l <"$(log_of gateway)")
cr_log "gateway log: $lines lines, $single single refusal lines"
((single <= 40)) || fail "$single single refusal lines: not rate-limited"
((lines < 300)) || fail "gateway log has $lines lines after floods of 7000 connections"
assert_eq "$(call)" 200 "call after the flood"

# 3. Black hole: the gateway goes away and its port drops SYNs (a full accept queue); the agent's
# dials hang. Once the gateway is back the agent must be up again within ~dial_timeout + backoff,
# not connect_timeout (20 s here).
stop_ccrelay gateway
start_bg blackhole "$CR_PY" -c '
import socket, sys, time
port = int(sys.argv[1])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", port)); l.listen(0)
fill = []
for _ in range(4):  # fill the accept queue; never accept
    c = socket.socket(); c.setblocking(False); c.connect_ex(("127.0.0.1", port)); fill.append(c)
print("holding", flush=True)
time.sleep(60)' "$GW_TUNNEL_PORT"
wait_for_log blackhole '^holding' 10
wait_for_log agent2 'msg="tunnel dial failed".*TCP connect not finished within 1000 ms' 15
sleep 5 # several dials into the black hole
stop_bg blackhole
ups=$(grep -c 'msg="tunnel up"' "$(log_of agent2)")
t0=$EPOCHREALTIME
start_limited gateway2 "$FD_LIMIT"
wait_for_log gateway2 'msg="gateway listening"' 15
wait_for_tunnels agent2 $((ups + 2)) 15
back_ms=$(((${EPOCHREALTIME/./} - ${t0/./}) / 1000))
cr_log "after the black hole: agent back $back_ms ms after the gateway restarted"
((back_ms < 4000)) || fail "agent needed $back_ms ms after the black hole (connect_timeout is 20 s)"
assert_eq "$(GW_PUBLIC_PORT=$GW_PUBLIC_PORT call)" 200 "call after the black hole"

stop_ccrelay agent2
stop_ccrelay gateway2
cr_pass
