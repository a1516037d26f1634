#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Passthrough services added and removed by a reload. A gateway started with no passthrough service
# did not peek at ClientHellos, and a SIGHUP that added the first one changed nothing until a restart.
# Shown with nginx (ssl_verify_client on) behind the agent's tcp route:
#   - before: a caller naming localhost gets the gateway's own certificate (TLS terminated here);
#   - the passthrough service added, SIGHUP: the caller's TLS reaches nginx (200, nginx's answer),
#     and the gateway logs that it now peeks at ClientHellos;
#   - an agent reload while a passthrough connection is open: the connection keeps working after the
#     old configuration is freed (it holds the configuration it began under), and its end is logged;
#   - removed again, SIGHUP: terminated here again; a terminated service answered throughout;
#   - the gateway and agent exit 0 without sanitizer reports.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_passthrough_reload 120

make_pki
start_cms_sim
start_nginx_upstream

GWCONF=$CR_TMP/gateway.yaml
write_gateway_conf "$GWCONF"
routes="$(cms_route cms-json "$CMS_PORT")"
write_agent_conf "$CR_TMP/agent.yaml" "$routes" "" "tcp_routes:
  - name: nginx-tls
    host: localhost
    connect: 127.0.0.1:$NGINX_PORT"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 2

# pt_call OUT: a caller of the passthrough name with its own client certificate, trusting only the
# upstream's CA (so it connects only when the TLS it sees is nginx's).
pt_call() {
  curl_status "$1" --cacert "$CR_PKI/upstream-ca.pem" --resolve "localhost:$GW_PUBLIC_PORT:127.0.0.1" \
    --cert "$CR_PKI/cms-json-connector.pem" --key "$CR_PKI/cms-json-connector.key" \
    -X POST "https://localhost:$GW_PUBLIC_PORT/connector/mdm.cgi"
}
terminated_call() {
  relay_curl "$CR_TMP/t$1" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
    -d '{"action":"test"}'
}

# ---- before: no passthrough service, TLS is the gateway's
assert_eq "$(pt_call "$CR_TMP/before")" 000 "no passthrough service yet: the gateway's own certificate"
assert_file_contains "$CR_TMP/before.err" "certificate" "curl refused the gateway's certificate"
assert_eq "$(terminated_call 1)" 200 "a terminated service"

# ---- the first passthrough service, by SIGHUP
sed -i '/^services:/a\  - host: localhost\n    mode: passthrough\n    group: acme' "$GWCONF"
"$CCRELAY_BIN" check -c "$GWCONF" >/dev/null || fail "check refused the gateway config with a passthrough service"
stop_bg gateway HUP
wait_for_log gateway 'msg="configuration reloaded" trigger=SIGHUP .*generation=2 .*services=3' 5
st=$(pt_call "$CR_TMP/added")
[[ $st == 200 ]] || { cat "$CR_TMP/added.err" >&2; fail "the added passthrough service: expected 200, got $st"; }
assert_file_contains "$(log_of gateway)" 'msg="configuration reload: public listener" .*peek_client_hello="on' \
  "the reload turned the ClientHello peek on"
assert_file_contains "$CR_TMP/added" '"source":"nginx"' "nginx answered through the added passthrough service"
assert_file_contains "$CR_TMP/added" 'CN=CMS JSON connector' "nginx saw the caller's own certificate"
assert_eq "$(terminated_call 2)" 200 "a terminated service beside the passthrough one"
wait_for_log gateway 'msg="passthrough" .*service=localhost group=acme bytes_in=[1-9]' 5

# ---- an agent reload while a passthrough connection is open
# The client opens its TLS session with nginx through the relay, waits for the go file, then sends a
# request on the same connection and prints nginx's status line.
"$CR_PY" - "$GW_PUBLIC_PORT" "$CR_PKI" "$CR_TMP/go" >"$CR_TMP/held.out" 2>&1 <<'PY' &
import os, socket, ssl, sys, time
port, pki, go = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=pki + "/upstream-ca.pem")
ctx.load_cert_chain(pki + "/cms-json-connector.pem", pki + "/cms-json-connector.key")
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10), server_hostname="localhost")
print("connected", flush=True)
deadline = time.time() + 20
while not os.path.exists(go) and time.time() < deadline:
    time.sleep(0.05)
s.sendall(b"POST /connector/mdm.cgi HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n"
          b"Connection: close\r\n\r\n")
print(s.recv(4096).split(b"\r\n")[0].decode(), flush=True)
s.close()
PY
HELD=$!
for _ in $(seq 100); do grep -q connected "$CR_TMP/held.out" && break; sleep 0.05; done
assert_file_contains "$CR_TMP/held.out" connected "the held passthrough connection is up"
gen_freed=$(grep -c 'msg="configuration generation freed"' "$(log_of agent)" || true)
stop_bg agent HUP
wait_for_log agent 'msg="configuration reloaded" trigger=SIGHUP' 5
sleep 0.3 # a generation nothing holds is freed on the next loop turn
assert_eq "$(grep -c 'msg="configuration generation freed"' "$(log_of agent)" || true)" "$gen_freed" \
  "the configuration the open relay began under is not freed while it runs"
touch "$CR_TMP/go"
wait "$HELD" || true
assert_file_contains "$CR_TMP/held.out" "HTTP/1.1 200" "the connection held across the agent reload still reaches nginx"
wait_for_log agent 'msg="tcp relay" route=nginx-tls .*bytes_in=[1-9]' 5
wait_for_log agent 'msg="configuration generation freed" generation=1' 5
no_sanitizer_reports "$(log_of agent)"

# ---- removed again, by SIGHUP
sed -i '/^  - host: localhost$/,/^    group: acme$/d' "$GWCONF"
if grep -q "mode: passthrough" "$GWCONF"; then fail "the test could not remove the passthrough service from $GWCONF"; fi
stop_bg gateway HUP
wait_for_log gateway 'msg="configuration reloaded" trigger=SIGHUP .*generation=3 .*services=2' 5
assert_file_contains "$(log_of gateway)" 'peek_client_hello="off' "the reload turned the ClientHello peek off"
assert_eq "$(pt_call "$CR_TMP/removed")" 000 "the passthrough service removed: the gateway's own certificate again"
assert_eq "$(terminated_call 3)" 200 "a terminated service after the removal"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
