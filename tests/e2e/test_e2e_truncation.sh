#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A response cut short upstream reaches the caller as everything the upstream sent before the cut,
# then an end the caller must read as incomplete; never as an empty reply, never as a clean end.
#
# The upstream (/test/cut) sends a head promising more (Content-Length 2N+1, or chunked), flushes N
# body bytes, waits, then resets or closes the connection (TCP RST, FIN without close_notify, or a
# clean TLS close mid-body). The pause lets the agent receive and forward all N bytes, so the caller
# must get exactly those N bytes (compared with the pattern), and curl must report the transfer as
# partial (exit 18) or broken (56), never 0 and never 52 (empty reply). Some callers stall (curl
# writes into a pipe nobody reads for a while, so curl stops reading its socket): the gateway still
# holds queued bytes for them when the tunnel stream fails, and those must be flushed, not dropped.
# The gateway's access log must count the body bytes that reached the caller's socket and mark the
# call truncated.
#
# Also: cuts with no pause, right after the head (head and reset reach the relay together: a status
# line, or a 502 when the relay saw the reset first) or right after a burst of body bytes closed by
# a FIN or close_notify (the agent reads them all before the end, so the caller must get them all:
# the agent sends them down the tunnel before its reset, the gateway flushes them before its close);
# an upstream that dies before any head (502 with the relay's JSON error body); and an agent that
# dies before the head (the gateway's own 502).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_truncation 400

N_CUTS=100
N_IMMEDIATE=30
WORKERS=4

make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route sim "$CMS_PORT" cms-json-connector.p12 localhost /test/)"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 1

"$CR_PY" "$CR_SIMS/simlib.py" pattern 800000 >"$CR_TMP/pattern"

# The plan: one line per call "ID BYTES CHUNKED MID HOW PAUSE_MS STALL_MS" (STALL_MS: how long the
# caller reads nothing once its pipe is full; 0 = it reads at full speed).
# Sizes span empty, small, a few TLS records and most of a stream window; the seed is fixed so a
# failure can be replayed.
"$CR_PY" - "$N_CUTS" "$N_IMMEDIATE" >"$CR_TMP/plan" <<'EOF'
import random, sys
n, nimm = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(16)
hows = ("rst", "fin", "notify")
for i in range(n):
    kind = i % 5
    size = (0 if kind == 0 else rnd.randint(1, 2000) if kind == 1 else rnd.randint(2000, 70000)
            if kind == 2 else rnd.randint(70000, 300000) if kind == 3 else rnd.randint(300000, 700000))
    chunked = i % 2
    mid = chunked and rnd.random() < 0.5 and size > 0
    stall = 800 if kind == 4 or (kind == 3 and i % 4 == 3) else 0
    print("cut-%03d %d %d %d %s 150 %d" % (i, size, chunked, mid, hows[i % 3], stall))
for i in range(nimm):
    if i % 3 == 0:
        print("now-%03d 0 %d 0 %s 0 0" % (i, i // 3 % 2, ("rst", "fin")[i // 6 % 2]))
    else:
        print("now-%03d %d %d 0 %s 0 0" % (i, rnd.randint(1, 60000), i % 2, ("fin", "notify")[i // 2 % 2]))
EOF

# call_cut ID BYTES CHUNKED MID HOW PAUSE STALL: one call; appends "ID CURL_EXIT STATUS SIZE VERDICT"
# to $CR_TMP/results.$WORKER, VERDICT being "ok" or why not.
call_cut() {
  local id=$1 bytes=$2 chunked=$3 mid=$4 how=$5 pause=$6 stall=$7 rc=0 st size verdict=ok
  local out=$CR_TMP/out.$id
  local url="https://cms.example.com:$GW_PUBLIC_PORT/test/cut?bytes=$bytes&chunked=$chunked&mid=$mid&how=$how&pause_ms=$pause"
  local args=(-sS --max-time 30 -D "$out.head" -H "X-Request-Id: $id"
    --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1")
  if [[ $stall == 0 ]]; then
    st=$(curl "${args[@]}" -w '%{http_code}' -o "$out" "$url" 2>"$out.err") || rc=$?
  else
    # The body goes to a pipe whose reader sleeps first: once the pipe is full curl blocks writing
    # and stops reading its socket, well past the upstream's cut.
    mkfifo "$out.fifo"
    curl "${args[@]}" -o - "$url" 2>"$out.err" >"$out.fifo" &
    local cpid=$!
    { sleep "$((stall / 1000)).$(printf %03d $((stall % 1000)))"; cat; } <"$out.fifo" >"$out"
    wait "$cpid" || rc=$?
    st=$(sed -n '1s/^HTTP\/[0-9.]* \([0-9]*\).*/\1/p' "$out.head" 2>/dev/null)
    st=${st:-000}
  fi
  size=$(stat -c %s "$out" 2>/dev/null || echo 0)
  if [[ $rc == 52 ]]; then
    verdict="empty reply (curl 52)"
  elif [[ $st == 502 && $pause == 0 && $bytes == 0 ]]; then
    # The agent (or the gateway) may see the reset before the head: then the caller gets the relay's
    # error answer.
    grep -Eq '"error":"(upstream_failed|tunnel_stream_failed)"' "$out" ||
      verdict="502 without the relay's JSON error body"
    [[ $rc == 0 ]] || verdict="502 answer not read cleanly (curl $rc)"
  elif [[ $st != 200 ]]; then
    verdict="status $st, want 200"
  elif [[ $rc != 18 && $rc != 56 ]]; then
    verdict="curl exit $rc, want 18 or 56 (a transfer the caller can tell is incomplete)"
  elif [[ $size != "$bytes" ]]; then
    verdict="received $size body bytes, the upstream sent $bytes before the cut"
  elif ((bytes > 0)) && ! cmp -s -n "$bytes" "$out" "$CR_TMP/pattern"; then
    verdict="body bytes differ from what the upstream sent"
  fi
  echo "$id $rc $st $size ${verdict// /_}" >>"$CR_TMP/results.$WORKER"
  rm -f "$out" "$out.head" "$out.fifo"
  [[ $verdict != ok ]] || rm -f "$out.err"
}

# WORKERS callers in parallel, each taking every WORKERS-th line of the plan.
worker_pids=()
for ((w = 0; w < WORKERS; w++)); do
  (
    WORKER=$w
    : >"$CR_TMP/results.$w"
    awk -v w="$w" -v n="$WORKERS" '(NR - 1) % n == w' "$CR_TMP/plan" |
      while read -r id bytes chunked mid how pause stall; do
        call_cut "$id" "$bytes" "$chunked" "$mid" "$how" "$pause" "$stall"
      done
  ) &
  worker_pids+=("$!")
done
for p in "${worker_pids[@]}"; do wait "$p"; done

cat "$CR_TMP"/results.* >"$CR_TMP/results"
total=$(wc -l <"$CR_TMP/results")
assert_eq "$total" $((N_CUTS + N_IMMEDIATE)) "every planned call ran"
empty=$(awk '$2 == 52' "$CR_TMP/results" | wc -l)
bad=$(awk '$5 != "ok"' "$CR_TMP/results" | wc -l)
by_exit=$(awk '{print "curl_" $2 "/" $3}' "$CR_TMP/results" | sort | uniq -c | awk '{printf "%s=%s ", $2, $1}')
cr_log "$total cut responses: $bad wrong, $empty empty; outcomes: $by_exit"
if ((bad > 0)); then
  awk '$5 != "ok"' "$CR_TMP/results" | head -20 >&2
  fail "$bad of $total cut responses reached the caller wrongly ($empty empty replies)"
fi

# The access log counts what reached the caller's socket and says the call was cut short.
while read -r id bytes _ _ _ pause _; do
  [[ $pause != 0 || $bytes != 0 ]] || continue
  line=$(grep "msg=\"access\" request_id=$id " "$(log_of gateway)" || true)
  [[ -n $line ]] || fail "no access log line for $id"
  assert_contains "$line" " bytes_out=$bytes " "access log of $id counts the body bytes delivered"
  assert_contains "$line" " truncated=1" "access log of $id marks the call truncated"
done <"$CR_TMP/plan"

# An upstream that dies before sending any head: 502 with the relay's JSON error body.
st=$(relay_curl "$CR_TMP/drop" cms.example.com /test/drop)
assert_eq "$st" 502 "upstream gone before the head"
assert_file_contains "$CR_TMP/drop" '"error":"upstream_failed"' "JSON error body for an upstream gone before the head"

# An agent that dies before the head: the gateway answers 502 itself, with its JSON error body.
relay_curl "$CR_TMP/agentgone" cms.example.com '/test/slow?ms=5000' >"$CR_TMP/agentgone.status" &
curl_pid=$!
for ((i = 0; i < 200; i++)); do
  grep -q '/test/slow' "$CR_TMP/cms.requests" && break
  sleep 0.05
done
grep -q '/test/slow' "$CR_TMP/cms.requests" || fail "the slow request never reached the upstream"
stop_bg agent KILL
wait "$curl_pid" || true
assert_eq "$(cat "$CR_TMP/agentgone.status")" 502 "agent gone before the head"
assert_file_contains "$CR_TMP/agentgone" '"error":"tunnel_stream_failed"' "the gateway's JSON error body"

stop_ccrelay gateway
cr_pass
