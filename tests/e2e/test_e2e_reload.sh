#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Reload of everything (issue 14, point 2), each step with a slow call in flight that must complete
# with 200:
#   1. a route added to agent.yaml, SIGHUP: the path that answered 404 answers 200;
#   2. a route identity and its password file replaced at the same paths, SIGHUP: the new identity
#      is in use (/status), calls pass;
#   3. the gateway's public certificate rotated at the same paths, SIGHUP: callers see the new serial;
#   4. the gateway's tunnel certificate rotated to new paths, POST /reload of the admin API: the next
#      handshake (s_client, and a second agent) sees the new serial;
#   5. a broken file on both roles: the configuration in force stays, the error is logged with
#      file:line:col and counted;
#   6. a listener address change is reported as needing a restart, the old listener serves on;
#   7. the agent's POST /reload on its loopback admin listener (refused with Origin).
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_reload 180

make_pki
start_cms_sim
ADMIN_PORT=$(pick_free_port)
AGENT_ADMIN_PORT=$(pick_free_port)
TOKEN=$(openssl rand -hex 32)
printf '%s\n' "$TOKEN" >"$CR_TMP/admin.token"
chmod 600 "$CR_TMP/admin.token"
write_gateway_conf "$CR_TMP/gateway.yaml" "admin:
  listen: 127.0.0.1:$ADMIN_PORT
  token_file: $CR_TMP/admin.token"
GWCONF=$CR_TMP/gateway.yaml

# The route identity lives in files of its own, replaced in place in step 2.
ID=$CR_TMP/id
mkdir -p "$ID"
cp "$CR_PKI/cms-json-connector.p12" "$ID/conn.p12"
cp "$CR_PKI/cms-json-connector.pass" "$ID/conn.pass"
test_route() { # NAME PREFIX
  cat <<YAML
  - name: $1
    match: { path_prefix: $2 }
    upstream:
      url: https://127.0.0.1:$CMS_PORT
      server_name: localhost
      ca: $CR_PKI/upstream-ca.pem
      identity: { pkcs12: $ID/conn.p12, password_file: $ID/conn.pass }
      connect_timeout: 3s
      response_timeout: 10s
YAML
}
write_agent_conf "$CR_TMP/agent.yaml" "$(test_route cms-test /test)" "" "admin:
  listen: 127.0.0.1:$AGENT_ADMIN_PORT"
AGCONF=$CR_TMP/agent.yaml
"$CCRELAY_BIN" check -c "$AGCONF" >/dev/null || fail "agent config does not check"
"$CCRELAY_BIN" check -c "$GWCONF" >/dev/null || fail "gateway config does not check"
start_gateway
start_agent agent "$AGCONF" 1

call() { # OUT PATH [CURL_ARGS...]
  local out=$1 path=$2
  shift 2
  relay_curl "$out" cms.example.com "$path" "$@"
}
mdm() { call "$CR_TMP/mdm" /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}'; }
slow_started=0
# slow_begin: a call that takes 3 s, in flight (the simulator has seen it) when this returns.
slow_begin() {
  local i
  call "$CR_TMP/slow" "/test/slow?ms=3000" >"$CR_TMP/slow.st" &
  SLOW_PID=$!
  slow_started=$((slow_started + 1))
  for ((i = 0; i < 100; i++)); do
    (($(grep -c 'GET /test/slow' "$CR_TMP/cms.requests" || true) >= slow_started)) && return 0
    sleep 0.05
  done
  fail "the slow call did not reach the upstream"
}
slow_end() { # WHAT
  wait "$SLOW_PID" || true
  assert_eq "$(cat "$CR_TMP/slow.st")" 200 "the call in flight across $1 completes"
}
nlog() { grep -c "$2" "$(log_of "$1")" || true; }
wait_count() { # NAME PATTERN N [TIMEOUT]
  local i
  for ((i = 0; i < ${4:-10} * 20; i++)); do
    (($(nlog "$1" "$2") >= $3)) && return 0
    sleep 0.05
  done
  fail "$1 did not log $2 $3 times"
}
serial_public() {
  openssl s_client -connect "127.0.0.1:$GW_PUBLIC_PORT" -servername cms.example.com </dev/null 2>/dev/null |
    openssl x509 -noout -serial
}
serial_tunnel() {
  openssl s_client -connect "127.0.0.1:$GW_TUNNEL_PORT" -servername localhost -alpn ccrelay/1 \
    -cert "$CR_PKI/agent.pem" -key "$CR_PKI/agent.key" </dev/null 2>/dev/null | openssl x509 -noout -serial
}
leaf() { # CA OUT CN SANS EKU: a new certificate from the test PKI's CA
  openssl req -newkey rsa:2048 -nodes -keyout "$2.key" -out "$2.csr" -subj "/CN=$3/O=Rotated" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$4" "$5" >"$2.ext"
  openssl x509 -req -in "$2.csr" -CA "$CR_PKI/$1.pem" -CAkey "$CR_PKI/$1.key" -CAcreateserial -sha256 -days 30 \
    -extfile "$2.ext" -out "$2.pem" 2>/dev/null || fail "new certificate $2"
}

# ---- 1. a route added: 404 before, 200 after SIGHUP, a call in flight completes
assert_eq "$(mdm)" 404 "no route for the mdm path yet"
slow_begin
test_route cms-mdm /connector/mdm.cgi >"$CR_TMP/route.yaml"
sed -i "/^routes:/r $CR_TMP/route.yaml" "$AGCONF"
"$CCRELAY_BIN" check -c "$AGCONF" >/dev/null || fail "agent config with the added route does not check"
stop_bg agent HUP
wait_for_log agent 'msg="configuration reloaded" trigger=SIGHUP .*generation=2 routes=2' 5
assert_eq "$(mdm)" 200 "the added route answers"
slow_end "the added route"
wait_for_log agent 'msg="configuration generation freed" generation=1' 5

# ---- 2. the route identity and its password file replaced in place
leaf client-ca "$ID/new" "CMS JSON connector" "DNS:connector.invalid" clientAuth
openssl pkcs12 -export -in "$ID/new.pem" -inkey "$ID/new.key" -certfile "$CR_PKI/client-ca.pem" \
  -passout pass:an0ther-secret -out "$ID/new.p12" || fail "new p12"
slow_begin
mv "$ID/new.p12" "$ID/conn.p12"
printf 'an0ther-secret\n' >"$ID/conn.pass"
stop_bg agent HUP
wait_for_log agent 'msg="route identity replaced" route=cms-test identity="[^"]*O=Rotated' 5
st=$(curl -sS --max-time 5 "http://127.0.0.1:$AGENT_ADMIN_PORT/status") || fail "agent /status"
assert_contains "$(json_get "$st" routes.0.identity.subject)" "O=Rotated" "the re-read identity is in use"
assert_eq "$(mdm)" 200 "a call with the re-read identity"
slow_end "the identity change"

# ---- 3. the public certificate rotated at the same paths (SIGHUP)
before=$(serial_public)
[[ -n $before ]] || fail "no public serial"
leaf public-ca "$CR_TMP/public2" localhost \
  "DNS:localhost,IP:127.0.0.1,DNS:cms.example.com,DNS:pki.example.com" serverAuth
want=$(openssl x509 -noout -serial -in "$CR_TMP/public2.pem")
slow_begin
cp "$CR_TMP/public2.pem" "$CR_PKI/public.pem"
cp "$CR_TMP/public2.key" "$CR_PKI/public.key"
stop_bg gateway HUP
wait_for_log gateway 'msg="configuration reloaded" trigger=SIGHUP .*generation=2' 5
assert_eq "$(serial_public)" "$want" "callers see the new public certificate"
assert_ne "$before" "$want" "a new serial"
assert_eq "$(mdm)" 200 "a call on the new public certificate"
slow_end "the public certificate rotation"

# ---- 4. the tunnel certificate rotated to new paths, POST /reload of the admin API
before=$(serial_tunnel)
[[ -n $before ]] || fail "no tunnel serial"
leaf tunnel-ca "$CR_TMP/tunnel2" localhost "DNS:localhost,IP:127.0.0.1" serverAuth
want=$(openssl x509 -noout -serial -in "$CR_TMP/tunnel2.pem")
sed -i "s|cert: $CR_PKI/gateway-tunnel.pem, key: $CR_PKI/gateway-tunnel.key|cert: $CR_TMP/tunnel2.pem, key: $CR_TMP/tunnel2.key|" "$GWCONF"
grep -q tunnel2.pem "$GWCONF" || fail "gateway config edit"
slow_begin
ans=$(curl -sS --max-time 10 -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT/reload") ||
  fail "POST /reload"
assert_eq "$(json_get "$ans" reloaded)" true "POST /reload applied: $ans"
wait_for_log gateway 'msg="configuration reloaded" trigger=admin .*generation=3' 5
assert_eq "$(serial_tunnel)" "$want" "the next tunnel handshake sees the new certificate"
st=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$ADMIN_PORT/reload")
assert_eq "$st" 401 "POST /reload needs the token"
slow_end "the tunnel certificate rotation"
# An agent that dials now verifies the new certificate (tunnel-ca, localhost).
grep -v -e '^admin:' -e "listen: 127.0.0.1:$AGENT_ADMIN_PORT" "$AGCONF" >"$CR_TMP/agent2.yaml"
start_agent agent2 "$CR_TMP/agent2.yaml" 1
assert_eq "$(mdm)" 200 "calls with a second agent on the new tunnel certificate"
stop_ccrelay agent2

# ---- 5. broken files: the configuration in force stays, file:line:col logged and counted
cp "$GWCONF" "$CR_TMP/gateway.good"
printf 'services:\n  - host: broken.example.com\n    group: nosuchgroup\n' >>"$GWCONF"
slow_begin
stop_bg gateway HUP
wait_for_log gateway "level=error msg=\"configuration reload failed; the configuration in force stays\" trigger=SIGHUP reason=\"$GWCONF:[0-9]+:[0-9]+: .*failed=1" 5
assert_eq "$(mdm)" 200 "the gateway serves on with the configuration in force"
slow_end "a refused gateway reload"
cp "$CR_TMP/gateway.good" "$GWCONF"
cp "$AGCONF" "$CR_TMP/agent.good"
sed -i 's|response_timeout: 10s|response_timeout: ten seconds|' "$AGCONF"
slow_begin
stop_bg agent HUP
wait_for_log agent "level=error msg=\"configuration reload failed; the configuration in force stays\" trigger=SIGHUP reason=\"$AGCONF:[0-9]+:[0-9]+: .*response_timeout.*failed=1" 5
assert_eq "$(mdm)" 200 "the agent serves on with the configuration in force"
slow_end "a refused agent reload"
cp "$CR_TMP/agent.good" "$AGCONF"

# ---- 6. a listener address change needs a restart; the old listener serves on
NEWPORT=$(pick_free_port)
sed -i "s|listen: 127.0.0.1:$GW_PUBLIC_PORT|listen: 127.0.0.1:$NEWPORT|" "$GWCONF"
ans=$(curl -sS --max-time 10 -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT/reload") ||
  fail "POST /reload"
assert_eq "$(json_get "$ans" reloaded)" true "the rest of the file applies"
wait_for_log gateway "msg=\"configuration reload: listener address changed: restart to apply\" key=public.listen" 5
assert_eq "$(mdm)" 200 "the public listener in force serves on"
st=$(curl -sS --max-time 3 -o /dev/null -w '%{http_code}' --cacert "$CR_PKI/public-ca.pem" \
  "https://127.0.0.1:$NEWPORT/" 2>/dev/null || true)
assert_eq "$st" 000 "nothing listens on the new address before a restart"

# ---- 7. the agent's POST /reload: loopback only, never from a web page
ans=$(curl -sS --max-time 10 -X POST "http://127.0.0.1:$AGENT_ADMIN_PORT/reload") || fail "agent POST /reload"
assert_eq "$(json_get "$ans" reloaded)" true "agent POST /reload: $ans"
wait_for_log agent 'msg="configuration reloaded" trigger=admin' 5
st=$(curl -sS --max-time 5 -o /dev/null -w '%{http_code}' -X POST -H 'Origin: http://evil.example' \
  "http://127.0.0.1:$AGENT_ADMIN_PORT/reload")
assert_eq "$st" 403 "a reload from a web page is refused"
st=$(curl -sS --max-time 5 "http://127.0.0.1:$AGENT_ADMIN_PORT/status")
assert_eq "$(json_get "$st" reloads_failed)" 1 "the agent counted its refused reload"
assert_eq "$(mdm)" 200 "calls after every reload"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
