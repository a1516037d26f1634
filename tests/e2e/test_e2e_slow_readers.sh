#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Slow peers never freeze the tunnel for everyone else, and a peer that stops taking bytes is cut.
#
# 1. 48 callers download 20 MiB each and read 1 KiB every 2 s: each holds its stream's window on the
#    gateway. Then 10 small calls must each finish in under 1 s (a tunnel whose connection window
#    waits for the slow callers gives them a head and no body).
# 2. The upload variant: 40 callers POST 8 MiB to an upstream that never reads a body byte: each holds
#    its stream's window on the agent. Then 10 small POSTs (with a body) must each finish in under 1 s.
# 3. With public.send_timeout and limits.send_timeout at 2s: a caller that reads nothing of a 20 MiB
#    answer is cut (logged with its request id, stream reset, the agent's side ended too), and an
#    upload to the upstream that reads nothing is answered 504 and logged, its upstream closed.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_slow_readers 300

SLOWPEER=$CR_SRC/tests/lib/slowpeer.py
BIG=$((20 * 1024 * 1024))
UPLOAD=$((8 * 1024 * 1024))
NREADERS=48
NUPLOADERS=40

make_pki
start_cms_sim
start_bg slowup "$CR_PY" "$SLOWPEER" upstream "$CR_PKI/cms-server.pem" "$CR_PKI/cms-server.key" 280
SLOWUP_PORT=$(wait_for_listening slowup)

routes="$(cms_route sim "$CMS_PORT" cms-json-connector.p12 localhost /test/)
$(cms_route slow "$SLOWUP_PORT" cms-json-connector.p12 localhost /slow/)"
write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$routes"
head -c 1024 /dev/zero >"$CR_TMP/1k"

# control_calls LABEL CURL_ARGS...: 10 calls one after the other; each must answer 200 within 1 s.
control_calls() {
  local label=$1 i res st t ok=0 times=()
  shift
  for ((i = 1; i <= 10; i++)); do
    res=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code} %{time_total}' --cacert "$CR_PKI/public-ca.pem" \
      --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" "$@" 2>/dev/null || true)
    st=${res%% *}
    t=${res##* }
    times+=("$st/${t:-none}")
    if [[ $st == 200 ]] && awk -v t="$t" 'BEGIN { exit !(t < 1.0) }'; then
      ok=$((ok + 1))
    fi
  done
  cr_log "$label: $ok of 10 control calls answered 200 in < 1 s (status/seconds: ${times[*]})"
  ((ok == 10)) || fail "$label: only $ok of 10 control calls answered 200 within 1 s"
}

start_gateway
start_agent agent "$CR_TMP/agent.yaml" 2
control_calls "baseline" "https://cms.example.com:$GW_PUBLIC_PORT/test/status?code=200"

# 1. Slow readers.
start_bg readers "$CR_PY" "$SLOWPEER" readers "$NREADERS" "$GW_PUBLIC_PORT" cms.example.com \
  "/test/big?bytes=$BIG" "$CR_PKI/public-ca.pem" 60
wait_for_log readers "^head $NREADERS\$" 30
sleep 3 # the readers' windows fill up
control_calls "$NREADERS slow readers" "https://cms.example.com:$GW_PUBLIC_PORT/test/status?code=200"
stop_bg readers

# 2. Uploads to an upstream that reads nothing.
start_bg uploaders "$CR_PY" "$SLOWPEER" uploaders "$NUPLOADERS" "$GW_PUBLIC_PORT" cms.example.com /slow/up \
  "$CR_PKI/public-ca.pem" "$UPLOAD" 60
wait_for_log uploaders "^started $NUPLOADERS\$" 20
for ((i = 0; i < 200; i++)); do # until every upload reached the upstream
  (($(grep -c '^head ' "$(log_of slowup)" || true) >= NUPLOADERS)) && break
  sleep 0.1
done
sleep 3 # the uploads' windows fill up
control_calls "$NUPLOADERS stalled uploads" --data-binary "@$CR_TMP/1k" \
  "https://cms.example.com:$GW_PUBLIC_PORT/test/sha256"
stop_bg uploaders
# Uploads the stalled upstream never took may still be in flight at the agent: its drain then cuts them
# (exit 3), or they ended first (exit 0).
stop_ccrelay agent "0 3"
stop_ccrelay gateway "0 3"

# 3. Send timeouts.
sed -i 's/^  request_timeout: 20s$/  request_timeout: 20s\n  send_timeout: 2s/' "$CR_TMP/gateway.yaml"
grep -q '^  send_timeout: 2s$' "$CR_TMP/gateway.yaml" || fail "could not set public.send_timeout"
printf 'limits:\n  send_timeout: 2s\n' >>"$CR_TMP/agent.yaml"
start_gateway gateway2
start_agent agent2 "$CR_TMP/agent.yaml" 2

# 3a. A caller that takes nothing of a 20 MiB answer for 6 s is cut after about 2 s.
start_bg nonreader "$CR_PY" "$SLOWPEER" nonreader "$GW_PUBLIC_PORT" cms.example.com "/test/big?bytes=$BIG" \
  "$CR_PKI/public-ca.pem" 6 20
wait_for_log gateway2 'msg="caller too slow"' 15
line=$(grep 'msg="caller too slow"' "$(log_of gateway2)" | head -n 1)
rid=$(sed -n 's/.*request_id=\([^ ]*\).*/\1/p' <<<"$line")
[[ -n $rid ]] || fail "the send timeout line has no request id: $line"
cr_log "gateway: $line"
wait_for_log nonreader '^got [0-9]+ end ' 30
res=$(grep '^got ' "$(log_of nonreader)")
got=$(awk '{print $2}' <<<"$res")
((got < BIG)) || fail "the cut caller still got the whole answer: $res"
[[ $res == *"end eof" || $res == *"end reset" ]] || fail "the cut caller's connection did not end: $res"
assert_file_contains "$(log_of gateway2)" "msg=\"access\" request_id=$rid .*status=200 .*error=\"[^\"]*send_timeout" \
  "gateway access line of the cut caller"
wait_for_log agent2 "msg=\"access\" request_id=$rid .*error=\"[^\"]*reset" 10
line=$(grep -F "request_id=$rid" "$(log_of agent2)" | grep -F 'msg="access"')
cr_log "agent: $line"

# 3b. An upload to the upstream that reads nothing is answered 504 after about 2 s.
res=$("$CR_PY" "$SLOWPEER" uploaders 1 "$GW_PUBLIC_PORT" cms.example.com /slow/one "$CR_PKI/public-ca.pem" \
  "$UPLOAD" 20 | grep '^upload ')
cr_log "upload to a stalled upstream: $res"
[[ $res == *"status 504" ]] || fail "the stalled upload was not answered 504: $res"
wait_for_log agent2 'msg="upstream too slow"' 10
line=$(grep 'msg="upstream too slow"' "$(log_of agent2)" | head -n 1)
[[ $line == *request_id=* && $line == *route=slow* ]] || fail "the upstream send timeout line lacks its ids: $line"
cr_log "agent: $line"

control_calls "after the send timeouts" "https://cms.example.com:$GW_PUBLIC_PORT/test/status?code=200"
stop_ccrelay agent2
stop_ccrelay gateway2
cr_pass
