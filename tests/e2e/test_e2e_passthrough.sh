#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# End-to-end TLS (passthrough): a gateway service with mode: passthrough is routed by the SNI of the
# caller's ClientHello without terminating TLS, and the agent's tcp route of that name connects to a
# fixed host:port and moves bytes untouched. Shown with nginx (ssl_verify_client on) as the upstream:
#   - curl with a client certificate reaches nginx through the gateway (200; nginx saw the caller's
#     own certificate subject), and without one nginx refuses it (so the certificate went end to end);
#   - openssl s_client through the gateway sees the upstream's certificate chain, not the gateway's;
#   - a ClientHello whose server name no service has is refused (the connection closed, logged);
#   - a normal (terminated) service still works on the same port, and a terminated request whose
#     Host names the passthrough service is not routed to it (404);
#   - a caller outside the service's callers.sources is refused;
#   - the gateway and agent log the relay's byte counts; the agent's /metrics (promtool-clean) and
#     /status count the relays, their bytes and the refusals by tcp route;
#   - the gateway and agent exit 0 without sanitizer reports.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_passthrough 180

make_pki
start_cms_sim
start_nginx_upstream

write_gateway_conf "$CR_TMP/gateway.yaml" "  - host: localhost
    mode: passthrough
    group: acme
  - host: blocked.example.com
    mode: passthrough
    group: acme
    callers: { sources: [192.0.2.0/24] }"
# `extra` lands after drain_timeout: move the two entries under services.
python3 - "$CR_TMP/gateway.yaml" <<'PY'
import sys
p = sys.argv[1]
lines = open(p).read().split("\n")
i = lines.index("drain_timeout: 3s")
extra = [l for l in lines[i + 1:] if l.strip()]
rest = lines[:i]
open(p, "w").write("\n".join(rest + extra + ["drain_timeout: 3s", ""]))
PY
routes="$(cms_route cms-json "$CMS_PORT")"
AGENT_ADMIN_PORT=$(pick_free_port)
write_agent_conf "$CR_TMP/agent.yaml" "$routes" "" "admin: { listen: 127.0.0.1:$AGENT_ADMIN_PORT }
tcp_routes:
  - name: nginx-tls
    host: localhost
    connect: 127.0.0.1:$NGINX_PORT
    idle_timeout: 30s
  - name: blocked-tls
    host: blocked.example.com
    connect: 127.0.0.1:$NGINX_PORT"

"$CCRELAY_BIN" check -c "$CR_TMP/gateway.yaml" >/dev/null || fail "check refused the passthrough gateway config"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >/dev/null || fail "check refused the agent config with tcp_routes"
start_gateway
start_agent agent "$CR_TMP/agent.yaml" 2

# 1. curl with the console's client certificate, through the gateway, to nginx: TLS is nginx's.
pt_curl() { # OUT CURL_ARGS...
  local out=$1
  shift
  curl_status "$out" --cacert "$CR_PKI/upstream-ca.pem" --resolve "localhost:$GW_PUBLIC_PORT:127.0.0.1" "$@"
}
st=$(pt_curl "$CR_TMP/pt1" --cert "$CR_PKI/cms-json-connector.pem" --key "$CR_PKI/cms-json-connector.key" \
  -X POST "https://localhost:$GW_PUBLIC_PORT/connector/mdm.cgi")
assert_eq "$st" 200 "curl with a client certificate through the passthrough service"
assert_file_contains "$CR_TMP/pt1" '"source":"nginx"' "nginx answered"
assert_file_contains "$CR_TMP/pt1" 'CN=CMS JSON connector' "nginx saw the caller's own certificate"
# A bigger body both ways (flow control on the stream): 1 MiB from nginx, intact.
st=$(pt_curl "$CR_TMP/big" --cert "$CR_PKI/cms-json-connector.pem" --key "$CR_PKI/cms-json-connector.key" \
  "https://localhost:$GW_PUBLIC_PORT/big")
assert_eq "$st" 200 "1 MiB through the passthrough service"
assert_eq "$(stat -c %s "$CR_TMP/big")" 1048576 "the whole 1 MiB arrived"
cmp -s "$CR_TMP/big" "$NGINX_DIR/www/big" || fail "the 1 MiB body differs from nginx's file"
# Without a client certificate nginx itself refuses (400 "No required SSL certificate was sent").
st=$(pt_curl "$CR_TMP/pt2" "https://localhost:$GW_PUBLIC_PORT/connector/mdm.cgi" -X POST)
assert_eq "$st" 400 "nginx checks the client certificate itself"
# The gateway's public CA does not verify this service: the certificate is not the gateway's.
st=$(curl_status "$CR_TMP/pt3" --cacert "$CR_PKI/public-ca.pem" --resolve "localhost:$GW_PUBLIC_PORT:127.0.0.1" \
  "https://localhost:$GW_PUBLIC_PORT/")
assert_eq "$st" 000 "the gateway's CA does not verify the passthrough service's certificate"

# 2. openssl s_client sees nginx's chain (issued by the upstream CA), not the gateway's public one.
timeout 10 openssl s_client -connect "127.0.0.1:$GW_PUBLIC_PORT" -servername localhost -showcerts \
  -cert "$CR_PKI/cms-json-connector.pem" -key "$CR_PKI/cms-json-connector.key" </dev/null >"$CR_TMP/sc.out" 2>&1 || true
openssl x509 -in "$CR_PKI/nginx-server.pem" -outform DER | sha256sum >"$CR_TMP/want.fp"
awk '/-----BEGIN CERTIFICATE-----/{p=1} p{print} /-----END CERTIFICATE-----/{exit}' "$CR_TMP/sc.out" >"$CR_TMP/leaf.pem"
[[ -s $CR_TMP/leaf.pem ]] || { cat "$CR_TMP/sc.out" >&2; fail "s_client got no certificate through the gateway"; }
openssl x509 -in "$CR_TMP/leaf.pem" -outform DER | sha256sum >"$CR_TMP/got.fp"
cmp -s "$CR_TMP/want.fp" "$CR_TMP/got.fp" || fail "s_client's leaf is not nginx's certificate"
assert_file_contains "$CR_TMP/sc.out" "Verification|Verify return code" "s_client finished its handshake"
openssl x509 -in "$CR_PKI/public.pem" -outform DER | sha256sum >"$CR_TMP/public.fp"
cmp -s "$CR_TMP/public.fp" "$CR_TMP/got.fp" && fail "s_client saw the gateway's certificate"
# The chain s_client printed is the one nginx sends: its leaf's issuer is the upstream CA.
assert_eq "$(openssl x509 -in "$CR_TMP/leaf.pem" -noout -issuer -nameopt RFC2253)" \
  "$(openssl x509 -in "$CR_PKI/upstream-ca.pem" -noout -subject -nameopt RFC2253 | sed 's/^subject/issuer/')" \
  "the leaf seen through the gateway is issued by the upstream CA"

# 3. A server name no service has is refused: no certificate at all, the connection is closed.
timeout 10 openssl s_client -connect "127.0.0.1:$GW_PUBLIC_PORT" -servername nobody.example.com </dev/null \
  >"$CR_TMP/unknown.out" 2>&1 || true
assert_file_lacks "$CR_TMP/unknown.out" "BEGIN CERTIFICATE|Server certificate" "no certificate for an unknown name"
wait_for_log gateway 'msg="connection refused" listener=public .*no service is named nobody.example.com' 5

# 4. The terminated services still work on the same port.
st=$(relay_curl "$CR_TMP/n1" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
  -d '{"action":"test"}')
assert_eq "$st" 200 "a normal service on the same listener"
# ... also from a client that sends no SNI at all (an IP address): terminated as before, Host decides.
st=$(curl_status "$CR_TMP/n2" -k -H "Host: cms.example.com" "https://127.0.0.1:$GW_PUBLIC_PORT/connector/mdm.cgi" \
  -H 'Content-Type: application/json' -d '{"action":"test"}')
assert_eq "$st" 200 "no SNI: TLS terminated and routed by Host"
# A terminated request naming the passthrough host is not routed to it.
st=$(curl_status "$CR_TMP/n3" -k -H "Host: localhost" "https://127.0.0.1:$GW_PUBLIC_PORT/connector/mdm.cgi" -X POST)
assert_eq "$st" 404 "a passthrough service is not reachable through a terminated request"

# 5. callers.sources applies before anything is relayed.
st=$(curl_status "$CR_TMP/b1" -k --resolve "blocked.example.com:$GW_PUBLIC_PORT:127.0.0.1" \
  "https://blocked.example.com:$GW_PUBLIC_PORT/")
assert_eq "$st" 000 "a caller outside sources is refused"
wait_for_log gateway 'msg="connection refused" listener=public .*service=blocked.example.com rule=sources' 5

# 6. The relays were logged on both sides.
wait_for_log gateway 'msg="passthrough" .*service=localhost group=acme bytes_in=[1-9][0-9]* bytes_out=[1-9]' 5
wait_for_log agent 'msg="tcp relay" route=nginx-tls upstream=127.0.0.1:[0-9]+ bytes_in=[1-9][0-9]* bytes_out=[1-9]' 5

# 7. The agent's /metrics and /status count the relays by tcp route. The relays above: curl x3 and
# s_client through nginx-tls; the caller outside sources never reached the agent.
curl -sS --max-time 5 "http://127.0.0.1:$AGENT_ADMIN_PORT/metrics" >"$CR_TMP/agent.prom" || fail "agent /metrics"
command -v promtool >/dev/null || fail "promtool not found (deploy/install-deps.sh installs the prometheus package)"
lint=$(promtool check metrics <"$CR_TMP/agent.prom" 2>&1) || true
[[ -z $lint ]] || { echo "$lint" >&2; fail "promtool check metrics complains about the agent's /metrics"; }
"$CR_PY" - "$CR_TMP/agent.prom" <<'PY' || fail "the agent's tcp relay metrics"
import re, sys
v = {}
for line in open(sys.argv[1]):
    m = re.match(r'(ccrelay_agent_tcp_[a-z_]+)\{([^}]*)\} (\S+)$', line.strip())
    if m:
        v[(m.group(1), m.group(2))] = float(m.group(3))
ended = sum(x for (n, l), x in v.items() if n == "ccrelay_agent_tcp_relays_total" and 'route="nginx-tls"' in l)
assert ended >= 4, "nginx-tls relays ended: %s" % ended
assert v[("ccrelay_agent_tcp_bytes_total", 'route="nginx-tls",direction="out"')] > 1048576, "bytes out"
assert v[("ccrelay_agent_tcp_bytes_total", 'route="nginx-tls",direction="in"')] > 0, "bytes in"
assert v[("ccrelay_agent_tcp_relays_active", 'route="nginx-tls"')] == 0, "active"
assert ("ccrelay_agent_tcp_relays_total", 'route="blocked-tls",result="ok"') in v, "a configured route without relays"
assert v[("ccrelay_agent_tcp_refused_total", 'reason="no_route"')] == 0, "refused"
print("agent tcp metrics: %d relays ended" % ended)
PY
curl -sS --max-time 5 "http://127.0.0.1:$AGENT_ADMIN_PORT/status" >"$CR_TMP/agent.status" || fail "agent /status"
"$CR_PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
t = {r["name"]: r for r in d["tcp_routes"]}
r = t["nginx-tls"]
assert r["host"] == "localhost" and r["connect"].startswith("127.0.0.1:"), r
assert r["active"] == 0 and r["ended"] >= 4 and r["bytes_out"] > 1048576 and r["bytes_in"] > 0, r
assert t["blocked-tls"]["ended"] == 0, t' "$CR_TMP/agent.status" || fail "the agent's /status tcp_routes"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
