#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Bodies stream, they are never buffered whole: a 50 MiB response and a 50 MiB chunked upload pass
# byte-exact (SHA-256) through gateway -> tunnel -> agent -> upstream, and the agent's peak RSS
# (VmHWM) stays under 64 MiB. The transfer runs once with the sanitizer build (correctness) and once
# with the release build (memory: ASan's shadow and quarantine would make RSS meaningless).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_large 400

SIZE=$((50 * 1024 * 1024))
RSS_LIMIT_KB=$((64 * 1024))
release_bin=${CCRELAY_RELEASE_BIN:-$CR_SRC/build/release/ccrelay}
[[ -x $release_bin ]] || fail "release binary not found at $release_bin (tests/run.sh builds it)"

make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route sim "$CMS_PORT" cms-json-connector.p12 localhost /test/)"
sed -i 's/response_timeout: 10s/response_timeout: 60s/' "$CR_TMP/agent.yaml"
sed -i 's/request_timeout: 20s/request_timeout: 60s/' "$CR_TMP/gateway.yaml"
# Both limit request bodies to 10 MiB by default; this test streams 50 MiB.
sed -i 's/^    group: acme$/    group: acme\n    limits: { max_body: 64MiB }/' "$CR_TMP/gateway.yaml"
sed -i 's/^  - name: sim$/  - name: sim\n    limits: { max_body: 64MiB }/' "$CR_TMP/agent.yaml"

transfer_both_ways() { # LABEL
  local label=$1 st want got
  # Download: the sim announces the SHA-256 of what it sends.
  st=$(curl -sS --max-time 120 -o "$CR_TMP/down" -D "$CR_TMP/down.h" -w '%{http_code}' \
    --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
    "https://cms.example.com:$GW_PUBLIC_PORT/test/big?bytes=$SIZE")
  assert_eq "$st" 200 "$label: 50 MiB download"
  want=$(tr -d '\r' <"$CR_TMP/down.h" | sed -n 's/^[Xx]-[Ss]im-[Ss][Hh][Aa]256: //p')
  got=$(sha256sum "$CR_TMP/down" | cut -d' ' -f1)
  assert_eq "$(stat -c %s "$CR_TMP/down")" "$SIZE" "$label: download size"
  assert_eq "$got" "$want" "$label: download SHA-256"
  rm -f "$CR_TMP/down"

  # Chunked upload: curl streams stdin with Transfer-Encoding: chunked; the sim hashes what arrives.
  want=$("$CR_PY" "$CR_SIMS/simlib.py" pattern "$SIZE" | sha256sum | cut -d' ' -f1)
  st=$("$CR_PY" "$CR_SIMS/simlib.py" pattern "$SIZE" |
    curl -sS --max-time 120 -o "$CR_TMP/up" -w '%{http_code}' -T - -H 'Transfer-Encoding: chunked' \
      --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
      "https://cms.example.com:$GW_PUBLIC_PORT/test/sha256")
  assert_eq "$st" 200 "$label: 50 MiB chunked upload"
  assert_eq "$(json_get "$(cat "$CR_TMP/up")" sha256)" "$want" "$label: upload SHA-256"
  assert_eq "$(json_get "$(cat "$CR_TMP/up")" bytes)" "$SIZE" "$label: upload size"
  assert_eq "$(json_get "$(cat "$CR_TMP/up")" chunked)" "true" "$label: the upstream received chunked encoding"
}

# 1. Sanitizer build.
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 1
transfer_both_ways asan
stop_ccrelay agent
stop_ccrelay gateway

# 2. Release build, measuring the agent's peak RSS.
CCRELAY_BIN=$release_bin
start_gateway gateway-rel
start_agent agent-rel "$CR_TMP/agent.yaml" 1
transfer_both_ways release
hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$(pid_of agent-rel)/status")
gw_hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/$(pid_of gateway-rel)/status")
cr_log "peak RSS after 2 x 50 MiB: agent ${hwm} kB, gateway ${gw_hwm} kB (limit ${RSS_LIMIT_KB} kB)"
((hwm < RSS_LIMIT_KB)) || fail "agent peak RSS ${hwm} kB is not under 64 MiB"
stop_ccrelay agent-rel
stop_ccrelay gateway-rel
cr_pass
