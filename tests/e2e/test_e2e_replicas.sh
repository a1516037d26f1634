#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Gateway replicas behind the load balancer a user would run: HAProxy in TCP mode, round robin, in
# front of both the tunnel and the public ports of three gateway processes (a fourth joins later);
# two agents (two certificate names of one group) that know only the load balancer's tunnel address.
# Shows, with the numbers printed:
#   - every replica holds `connections` tunnels from both agents within a few seconds of start;
#   - 1,000 calls through the load balancer all succeed and reach all three replicas, and both agents;
#   - kill -9 of a replica under load fails only the calls in flight on it; every later call succeeds;
#     the agents log the replica they cannot reach, and cover it again when it is back;
#   - a fourth replica added to the set (SIGHUP of the running gateways) is covered, no agent restarted;
#   - SIGTERM of a replica under load fails no call.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_replicas 400

HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
[[ -x $HAPROXY ]] || fail "haproxy not found at $HAPROXY (deploy/install-deps.sh installs it)"
LOAD=$CR_SRC/tests/lib/loadcalls.py

make_pki
start_cms_sim

declare -a T P R # per replica: tunnel, public and probe ports
for i in 1 2 3 4; do
  T[i]=$(pick_free_port)
  P[i]=$(pick_free_port)
  R[i]=$(pick_free_port)
done
LB_T=$(pick_free_port)
LB_P=$(pick_free_port)

# gw_conf I SET: replica gw-I's config, its replica set the YAML list SET.
gw_conf() {
  local i=$1 set=$2
  cat >"$CR_TMP/gw$i.yaml.tmp" <<YAML
log: { level: debug }
tunnel:
  listen: 127.0.0.1:${T[i]}
  identity: { cert: $CR_PKI/gateway-tunnel.pem, key: $CR_PKI/gateway-tunnel.key }
  client_ca: $CR_PKI/tunnel-ca.pem
  ping_interval: 1s
  ping_timeout: 2s
public:
  listen: 127.0.0.1:${P[i]}
  identity: { cert: $CR_PKI/public.pem, key: $CR_PKI/public.key }
  request_timeout: 20s
groups:
  - name: acme
    agents: [acme-agent-1, stranger-agent]
services:
  - host: cms.example.com
    group: acme
drain_timeout: 5s
replicas:
  id: gw-$i
  set: $set
probe:
  listen: 127.0.0.1:${R[i]}
YAML
  mv "$CR_TMP/gw$i.yaml.tmp" "$CR_TMP/gw$i.yaml"
}

SET3='[gw-1, gw-2, gw-3]'
SET4='[gw-1, gw-2, gw-3, gw-4]'
for i in 1 2 3; do gw_conf "$i" "$SET3"; done
gw_conf 4 "$SET4"
for i in 1 2 3 4; do
  "$CCRELAY_BIN" check -c "$CR_TMP/gw$i.yaml" >/dev/null || fail "ccrelay check gw$i.yaml"
done

# HAProxy as documented in the README: TCP mode, round robin, readiness from the probe listener,
# a refused connection retried on another replica.
# servers tunnel|public: the four replicas' server lines.
servers() {
  local i port
  for i in 1 2 3 4; do
    if [[ $1 == tunnel ]]; then port=${T[i]}; else port=${P[i]}; fi
    echo "  server gw$i 127.0.0.1:$port check port ${R[i]} inter 200ms fall 1 rise 1"
  done
}
cat >"$CR_TMP/haproxy.cfg" <<CFG
global
  maxconn 4000
defaults
  mode tcp
  timeout connect 2s
  timeout client 60s
  timeout server 60s
  retries 3
  option redispatch 1
  option httpchk GET /readyz
listen tunnel
  bind 127.0.0.1:$LB_T
  balance roundrobin
$(servers tunnel)
listen public
  bind 127.0.0.1:$LB_P
  balance roundrobin
$(servers public)
CFG
"$HAPROXY" -c -f "$CR_TMP/haproxy.cfg" >/dev/null 2>&1 || { "$HAPROXY" -c -f "$CR_TMP/haproxy.cfg"; fail "haproxy.cfg"; }
start_bg haproxy "$HAPROXY" -db -f "$CR_TMP/haproxy.cfg"
wait_for_port 127.0.0.1 "$LB_P" 10 "$(pid_of haproxy)"

for i in 1 2 3; do start_gateway "gw$i" "$CR_TMP/gw$i.yaml"; done

# Both agents know only the load balancer.
GW_TUNNEL_PORT=$LB_T
ROUTE=$(cms_route sim-json "$CMS_PORT")
write_agent_conf "$CR_TMP/agent1.yaml" "$ROUTE"
write_agent_conf "$CR_TMP/agent2.yaml" "$ROUTE" "" "" agent-nogroup

# kept I: "acme-agent-1=N stranger-agent=M", tunnels replica I counts as kept for each agent.
kept() {
  curl -s --max-time 2 "http://127.0.0.1:${R[$1]}/status" | "$CR_PY" -c '
import json, sys
try:
    d = json.load(sys.stdin)
except ValueError:
    print("-"); sys.exit(0)
n = {"acme-agent-1": 0, "stranger-agent": 0}
for t in d["tunnels"]:
    if t["coverage"] == "kept" and t["usable"]:
        n[t["agent"]] = n.get(t["agent"], 0) + 1
print(" ".join("%s=%d" % kv for kv in sorted(n.items())))'
}
WANT="acme-agent-1=2 stranger-agent=2"

# covered SECONDS I...: waits until each replica I holds 2 kept tunnels from each agent; echoes ms.
covered() {
  local secs=$1 t0 i ok k
  shift
  t0=$(date +%s%N)
  for ((k = 0; k < secs * 20; k++)); do
    ok=1
    for i in "$@"; do [[ $(kept "$i") == "$WANT" ]] || { ok=0; break; }; done
    ((ok)) && { echo $((($(date +%s%N) - t0) / 1000000)); return 0; }
    sleep 0.05
  done
  for i in "$@"; do cr_log "gw$i: $(kept "$i")"; done
  fail "replicas $* not covered by both agents within ${secs}s"
}

access_ok() { grep -c 'msg="access".*status=200' "$(log_of "$1")" || true; }

# load NAME COUNT [CONCURRENCY]: COUNT calls through the load balancer, 8 (or CONCURRENCY) at a time,
# in the background (LOAD_PID).
load() {
  "$CR_PY" "$LOAD" --port "$LB_P" --host cms.example.com --path /connector/mdm.cgi \
    --cacert "$CR_PKI/public-ca.pem" --count "$2" --concurrency "${3:-8}" --max-seconds 120 \
    --out "$CR_TMP/$1.calls" >"$CR_TMP/$1.summary" 2>&1 &
  LOAD_PID=$!
}
# failed_after NAME T: calls of NAME that failed and started after time T (seconds, wall clock).
failed_after() { awk -v t="$2" '$3 != 200 && $1 > t' "$CR_TMP/$1.calls" | wc -l; }
failed() { awk '$3 != 200' "$CR_TMP/$1.calls" | wc -l; }

# forget NAME: a process that is gone (kill -9) is reaped and its PID dropped, so that stop_all never
# signals a reused number.
forget() {
  local pid=${CR_PID_OF[$1]} p keep=()
  wait "$pid" 2>/dev/null || true
  for p in "${CR_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  CR_PIDS=("${keep[@]}")
}

# ---- 1. coverage at start -----------------------------------------------------------------------
start_bg agent1 "$CCRELAY_BIN" agent -c "$CR_TMP/agent1.yaml"
start_bg agent2 "$CCRELAY_BIN" agent -c "$CR_TMP/agent2.yaml"
ms=$(covered 15 1 2 3)
cr_log "coverage: every replica holds 2 tunnels from each of both agents ${ms} ms after the agents started"
echo "METRIC convergence_ms=$ms"
for i in 1 2 3; do
  st=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${R[i]}/readyz")
  assert_eq "$st" 200 "gw$i /readyz"
  assert_eq "$(curl -s "http://127.0.0.1:${R[i]}/healthz")" ok "gw$i /healthz"
done

# ---- 2. 1,000 calls reach every replica and both agents ---------------------------------------------
declare -a before
for i in 1 2 3; do before[i]=$(access_ok "gw$i"); done
a1=$(access_ok agent1)
a2=$(access_ok agent2)
load calls1000 1000
wait "$LOAD_PID"
cat "$CR_TMP/calls1000.summary" >&2
assert_eq "$(failed calls1000)" 0 "failed calls among 1,000"
assert_contains "$(cat "$CR_TMP/calls1000.summary")" "total=1000 ok=1000" "all 1,000 calls answered 200"
spread=""
for i in 1 2 3; do
  n=$(($(access_ok "gw$i") - before[i]))
  ((n > 0)) || fail "gw$i served none of the 1,000 calls"
  spread+=" gw$i=$n"
done
n1=$(($(access_ok agent1) - a1))
n2=$(($(access_ok agent2) - a2))
((n1 > 0 && n2 > 0)) || fail "the calls did not reach both agents (agent1=$n1 agent2=$n2)"
cr_log "1,000 calls: all 200; replicas:$spread; agents: agent1=$n1 agent2=$n2"

# ---- 3. kill -9 of a replica under load -----------------------------------------------------------
load kill 1500
sleep 1.5
kill -9 "$(pid_of gw3)"
# Calls that connected while the process was dying (the kernel still completed connections into its
# listen backlog) are in flight on it too: "later" starts once it is reaped, its sockets closed.
forget gw3
dead_t=$(date +%s.%N)
wait "$LOAD_PID"
cat "$CR_TMP/kill.summary" >&2
nfail=$(failed kill)
late=$(failed_after kill "$dead_t")
cr_log "kill -9 of gw3 under load: $nfail of 1500 calls failed (in flight on gw3), $late failed after it was gone"
awk '$3 != 200 { print "  failed call: start " $1 " end " $2 " " $4 }' "$CR_TMP/kill.calls" >&2
echo "METRIC kill9_failed=$nfail kill9_failed_after=$late"
assert_eq "$late" 0 "calls failed that started after the kill"
((nfail <= 8)) || fail "$nfail calls failed: more than the 8 that can be in flight"
wait_for_log agent1 'msg="replica not reached: serving through the others" missing="gw-3"' 30
cr_log "agent1 logged the replica it cannot reach: $(grep -m1 'msg="replica not reached' "$(log_of agent1)" | cut -c1-200)"
start_gateway gw3 "$CR_TMP/gw3.yaml"
ms=$(covered 20 1 2 3)
cr_log "gw3 restarted: covered again ${ms} ms after it listened"

# ---- 4. a fourth replica joins the set ------------------------------------------------------------
for i in 1 2 3; do gw_conf "$i" "$SET4"; done
start_gateway gw4 "$CR_TMP/gw4.yaml"
t0=$(date +%s%N)
for i in 1 2 3; do kill -HUP "$(pid_of "gw$i")"; done
for i in 1 2 3; do wait_for_log "gw$i" 'msg="replica set" replica=gw-'"$i"' set="gw-1,gw-2,gw-3,gw-4"' 5; done
ms=$(covered 20 1 2 3 4)
cr_log "gw4 added (SIGHUP of gw1-3): every replica of four covered by both agents ${ms} ms after gw4 started ($((($(date +%s%N) - t0) / 1000000)) ms after the SIGHUPs)"
echo "METRIC add_replica_ms=$ms"
assert_eq "$(grep -c 'msg="agent started"' "$(log_of agent1)")" 1 "agent1 was not restarted"

# ---- 5. SIGTERM of a replica under load fails no call ------------------------------------------------
# 16 at a time: more callers arrive while the replica's loop is busy, so a drain that resets the
# connections the kernel completed and the gateway had not yet accepted fails calls here (it did in
# 5 of 42 runs beside another copy of this test; none in 55 since).
load drain 1000 16
sleep 1.5
t0=$(date +%s%N)
kill -TERM "$(pid_of gw2)"
rc=0
wait_exit gw2 15 || rc=$?
assert_eq "$rc" 0 "gw2 drained cleanly"
no_sanitizer_reports "$(log_of gw2)"
forget gw2
cr_log "gw2 drained in $((($(date +%s%N) - t0) / 1000000)) ms"
wait "$LOAD_PID"
cat "$CR_TMP/drain.summary" >&2
nfail=$(failed drain)
echo "METRIC drain_failed=$nfail"
cr_log "SIGTERM of gw2 under load: $nfail of 1000 calls failed"
if ((nfail > 0)); then
  awk '$3 != 200' "$CR_TMP/drain.calls" | head -5 >&2
fi
assert_eq "$nfail" 0 "calls failed during the drain"
assert_file_lacks "$(log_of agent1)" 'msg="tunnel dial failed"' "the drain counted as no dial failure"

for n in agent1 agent2 gw1 gw3 gw4; do stop_ccrelay "$n"; done
stop_bg haproxy
cr_pass
