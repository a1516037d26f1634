#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Stopping a role (relay/process.c with each role's handlers): SIGTERM lets a call in flight finish
# and then exits 0; a second SIGTERM during the drain cuts the call at once and exits 3, as does a drain
# deadline that cuts a call. Both for the gateway and for the agent.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_drain 180

make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route sim-test "$CMS_PORT" cms-json-connector.p12 localhost /test/)"

# slow_call NAME MS: a call that takes MS ms at the upstream, in the background (its PID in
# SLOW_PID, its status in $CR_TMP/NAME.status); returns once the upstream has it.
slow_call() {
  local before i
  before=$(request_count cms)
  (relay_curl "$CR_TMP/$1" cms.example.com "/test/slow?ms=$2" >"$CR_TMP/$1.status") &
  SLOW_PID=$!
  for ((i = 0; i < 100; i++)); do
    (($(request_count cms) > before)) && return 0
    sleep 0.05
  done
  fail "the slow call $1 did not reach the upstream within 5 s"
}

# exits_within NAME SECONDS [STATUS=0]: NAME exits by itself with STATUS within SECONDS, without
# sanitizer reports; its PID is forgotten (stop_all must never signal a reused number).
exits_within() {
  local rc=0 pid=${CR_PID_OF[$1]} p keep=()
  wait_exit "$1" "$2" || rc=$?
  no_sanitizer_reports "$(log_of "$1")"
  assert_eq "$rc" "${3:-0}" "$1 exit status"
  for p in "${CR_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  CR_PIDS=("${keep[@]}")
}

# ---- gateway: the drain waits for the call --------------------------------------------------------
start_gateway gw1
start_agent agent1 "$CR_TMP/agent.yaml" 2
slow_call drain1 1500
t0=$(date +%s%N)
kill -TERM "$(pid_of gw1)"
wait_for_log gw1 'msg="draining" signal=15' 5
wait "$SLOW_PID"
assert_eq "$(cat "$CR_TMP/drain1.status")" 200 "call in flight finished during the drain"
exits_within gw1 5
assert_file_lacks "$(log_of gw1)" 'msg="(drain deadline reached|second stop signal)' "clean drain"
assert_file_contains "$(log_of gw1)" 'msg="gateway stopped"'
cr_log "gateway drained in $((($(date +%s%N) - t0) / 1000000)) ms"

# ---- gateway: a second signal cuts the call -------------------------------------------------------
start_gateway gw2
wait_for_tunnels agent1 4 10
slow_call cut1 6000
t0=$(date +%s%N)
kill -TERM "$(pid_of gw2)"
wait_for_log gw2 'msg="draining"' 5
kill -INT "$(pid_of gw2)"
exits_within gw2 2 3
wait "$SLOW_PID"
assert_ne "$(cat "$CR_TMP/cut1.status")" 200 "the cut call did not complete"
assert_file_contains "$(log_of gw2)" 'msg="second stop signal: closing now" signal=2'
assert_file_contains "$(log_of gw2)" 'msg="gateway stopped"'
cr_log "gateway cut after $((($(date +%s%N) - t0) / 1000000)) ms"

# ---- agent: the drain waits for the call; a second signal cuts it -----------------------------------
start_gateway gw3
wait_for_tunnels agent1 6 10
slow_call drain2 1500
kill -TERM "$(pid_of agent1)"
wait_for_log agent1 'msg="draining" signal=15' 5
wait "$SLOW_PID"
assert_eq "$(cat "$CR_TMP/drain2.status")" 200 "call in flight finished during the agent's drain"
exits_within agent1 5
assert_file_lacks "$(log_of agent1)" 'msg="(drain deadline reached|second stop signal)' "clean drain"

start_agent agent2 "$CR_TMP/agent.yaml" 2
slow_call cut2 6000
kill -TERM "$(pid_of agent2)"
wait_for_log agent2 'msg="draining"' 5
kill -TERM "$(pid_of agent2)"
exits_within agent2 2 3
wait "$SLOW_PID"
assert_ne "$(cat "$CR_TMP/cut2.status")" 200 "the cut call did not complete"
assert_file_contains "$(log_of agent2)" 'msg="second stop signal: closing now" signal=15'
assert_file_contains "$(log_of agent2)" 'msg="agent stopped"'

# ---- gateway: the drain deadline (drain_timeout 3s) cuts a call that outlives it: exit 3 ----------
stop_ccrelay gw3
start_gateway gw4
start_agent agent3 "$CR_TMP/agent.yaml" 2
slow_call cut3 8000
t0=$(date +%s%N)
kill -TERM "$(pid_of gw4)"
exits_within gw4 6 3
wait "$SLOW_PID"
assert_ne "$(cat "$CR_TMP/cut3.status")" 200 "the call cut by the deadline did not complete"
assert_file_contains "$(log_of gw4)" 'msg="gateway stopped"'
cr_log "gateway deadline cut after $((($(date +%s%N) - t0) / 1000000)) ms"
stop_ccrelay agent3
cr_pass
