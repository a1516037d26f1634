#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The agent's tunnel through a real HTTP proxy (issue 12, point 1): Debian's squid on 127.0.0.1 with
# basic_ncsa_auth and a password file made here, CONNECT allowed to the gateway's port only.
# Shown: tunnels come up through it and calls are relayed; a wrong password is a 407 logged as
# "proxy authentication failed" and redialled with backoff, not in a hot loop; squid killed takes the
# tunnels down and the agent redials once squid is back on the same port; squid's access log holds
# only CONNECTs to the gateway's host:port; HTTPS_PROXY counts only with from_environment, and
# NO_PROXY naming the gateway's host makes the agent dial directly. `check` refuses a bad proxy URL.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_proxy 300

SQUID=${SQUID:-/usr/sbin/squid}
NCSA=/usr/lib/squid/basic_ncsa_auth
[[ -x $SQUID && -x $NCSA ]] || fail "squid not installed (deploy/install-deps.sh installs squid)"
command -v htpasswd >/dev/null || fail "htpasswd not installed (apache2-utils)"

make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
start_gateway
route=$(cms_route cms-json "$CMS_PORT")

# ---- squid -----------------------------------------------------------------------------------
# Its own directory and config; as root squid switches to the user proxy, which must reach its files.
SQ=$CR_TMP/squid
SQ_PORT=$(pick_free_port)
mkdir -p "$SQ"
htpasswd -b -c -m "$SQ/passwd" svc-ccrelay 'Proxy-Pa55' 2>/dev/null || fail "htpasswd failed"
sq_user=""
if [[ $(id -u) == 0 ]]; then
  chmod 711 "$CR_TMP"
  sq_user="cache_effective_user proxy"
fi
cat >"$SQ/squid.conf" <<EOF
http_port 127.0.0.1:$SQ_PORT
visible_hostname ccrelay-test
pid_filename $SQ/squid.pid
cache_log $SQ/cache.log
access_log stdio:$SQ/access.log
coredump_dir $SQ
cache deny all
pinger_enable off
shutdown_lifetime 0 seconds
$sq_user
auth_param basic program $NCSA $SQ/passwd
auth_param basic realm ccrelay-test
acl auth proxy_auth REQUIRED
acl connect_method method CONNECT
acl gateway_port port $GW_TUNNEL_PORT
http_access deny !connect_method
http_access deny !gateway_port
http_access deny !auth
http_access allow all
EOF
[[ $(id -u) != 0 ]] || chown -R proxy "$SQ"
"$SQUID" -k parse -f "$SQ/squid.conf" >"$SQ/parse.log" 2>&1 || { cat "$SQ/parse.log" >&2; fail "squid -k parse refused the config"; }

start_squid() { # NAME: squid in the foreground on $SQ_PORT
  local re="Accepting HTTP Socket connections at .*local=127\.0\.0\.1:$SQ_PORT " before i n
  before=$(grep -c "$re" "$SQ/cache.log" 2>/dev/null || true)
  start_bg "$1" "$SQUID" -N -f "$SQ/squid.conf"
  # Its own word in cache.log, not a probe connection (which would be a line in the access log).
  for ((i = 0; i < 400; i++)); do
    n=$(grep -c "$re" "$SQ/cache.log" 2>/dev/null || true)
    ((${n:-0} > ${before:-0})) && return 0
    alive "$(pid_of "$1")" || fail "squid exited at start (see $SQ/cache.log)"
    sleep 0.05
  done
  fail "squid not listening on 127.0.0.1:$SQ_PORT within 20 s (see $SQ/cache.log)"
}
start_squid squid

printf 'Proxy-Pa55\n' >"$CR_TMP/proxy.pass"
printf 'wrong-Pa55\n' >"$CR_TMP/wrong.pass"
proxy_yaml() { # PASSFILE [CONNECT_TIMEOUT]
  cat <<YAML
  proxy:
    url: http://127.0.0.1:$SQ_PORT
    username: svc-ccrelay
    password_file: $1
    connect_timeout: ${2:-5s}
YAML
}

call() { # OUT: one relayed call; echoes the status
  relay_curl "$CR_TMP/$1" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}'
}

# ---- `check` ---------------------------------------------------------------------------------
write_agent_conf "$CR_TMP/agent.yaml" "$route" "$(proxy_yaml "$CR_TMP/proxy.pass")"
"$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >"$CR_TMP/check.out" || fail "check refused the proxy config"
assert_file_contains "$CR_TMP/check.out" "OK \(agent: gateway 127\.0\.0\.1:$GW_TUNNEL_PORT via proxy 127\.0\.0\.1:$SQ_PORT \(gateway\.proxy\.url\)" \
  "check names the proxy"
sed "s#url: http://127.0.0.1:$SQ_PORT#url: https://127.0.0.1:$SQ_PORT#" "$CR_TMP/agent.yaml" >"$CR_TMP/https.yaml"
line=$(grep -n 'url: https://127.0.0.1' "$CR_TMP/https.yaml" | cut -d: -f1)
rc=0
"$CCRELAY_BIN" check -c "$CR_TMP/https.yaml" >/dev/null 2>"$CR_TMP/https.err" || rc=$?
assert_eq "$rc" 2 "check: https:// proxy"
assert_file_contains "$CR_TMP/https.err" "https\.yaml:$line:10: gateway\.proxy\.url: .*an https:// proxy is not supported" \
  "check: https:// proxy message"

# ---- tunnels through squid, calls relayed ----------------------------------------------------
cr_log "agent through squid"
start_agent agent "$CR_TMP/agent.yaml" 2
assert_file_contains "$(log_of agent)" "msg=\"gateway proxy\" proxy=127.0.0.1:$SQ_PORT from=gateway.proxy.url user=svc-ccrelay" \
  "the agent says which proxy it uses"
for i in 1 2 3; do
  st=$(call "ok$i")
  assert_eq "$st" 200 "call $i through the proxied tunnel"
done
assert_eq "$(request_count cms)" 3 "the CMS saw every call"

# ---- squid killed: tunnels down; back on the same port: redialled ---------------------------
cr_log "squid stopped"
stop_bg squid
for ((i = 0; i < 200; i++)); do
  (($(grep -c 'msg="tunnel down"' "$(log_of agent)" || true) >= 2)) && break
  sleep 0.05
done
(($(grep -c 'msg="tunnel down"' "$(log_of agent)" || true) >= 2)) || fail "the tunnels did not go down with squid"
wait_for_log agent "msg=\"tunnel dial failed\".*step=proxy reason=\"connection refused: cannot connect to proxy 127\.0\.0\.1:$SQ_PORT" 10
st=$(call down)
assert_eq "$st" 503 "no tunnel while the proxy is down"
cr_log "squid restarted"
start_squid squid2
wait_for_tunnels agent 4 20
st=$(call again)
assert_eq "$st" 200 "call after the proxy came back"
stop_ccrelay agent
assert_file_lacks "$(log_of agent)" 'Proxy-Pa55' "the proxy password is never logged"
assert_file_lacks "$(log_of agent)" 'c3ZjLWNjcmVsYXk6UHJveHktUGE1NQ' "nor its Basic encoding"

# ---- wrong password: 407, logged, backoff ---------------------------------------------------
cr_log "wrong password"
write_agent_conf "$CR_TMP/wrong.yaml" "$route" "$(proxy_yaml "$CR_TMP/wrong.pass")"
start_bg wrong "$CCRELAY_BIN" agent -c "$CR_TMP/wrong.yaml"
wait_for_log wrong "msg=\"tunnel dial failed\" slot=0 gateway=127\.0\.0\.1:$GW_TUNNEL_PORT step=proxy reason=\"proxy authentication failed: 407 from 127\.0\.0\.1:$SQ_PORT: the proxy refused the credentials of user 'svc-ccrelay' \(it offers Basic\); check proxy\.username / proxy\.password_file\"" 10
# A fixed window: reconnect_min 100ms doubling to reconnect_max 1s (with jitter, each delay between
# half and all of the backoff) allows 6 to 11 attempts of one slot in 4 s; a hot loop would make hundreds.
sleep 4
n=$(grep -c 'msg="tunnel dial failed" slot=0 .*step=proxy reason="proxy authentication failed' "$(log_of wrong)" || true)
cr_log "wrong password: $n dial attempts of slot 0 in about 4 s"
((n >= 4 && n <= 13)) || fail "slot 0 dialled $n times in 4 s: not the backoff (expected 4..13)"
assert_file_lacks "$(log_of wrong)" 'msg="tunnel up"' "no tunnel with a wrong password"
stop_ccrelay wrong
assert_file_lacks "$(log_of wrong)" 'wrong-Pa55' "the wrong password is never logged"

# ---- HTTPS_PROXY / NO_PROXY ------------------------------------------------------------------
cr_log "environment"
dead=$(pick_free_port)
# Without from_environment, HTTPS_PROXY (here a dead port) is ignored: the tunnel comes up directly.
write_agent_conf "$CR_TMP/noproxy.yaml" "$route"
start_bg envoff env HTTPS_PROXY="http://127.0.0.1:$dead" https_proxy="http://127.0.0.1:$dead" \
  "$CCRELAY_BIN" agent -c "$CR_TMP/noproxy.yaml"
wait_for_tunnels envoff 2
assert_file_lacks "$(log_of envoff)" 'msg="gateway proxy"' "no proxy without from_environment"
stop_ccrelay envoff

envproxy_yaml() {
  cat <<YAML
  proxy:
    from_environment: true
    username: svc-ccrelay
    password_file: $CR_TMP/proxy.pass
YAML
}
write_agent_conf "$CR_TMP/fromenv.yaml" "$route" "$(envproxy_yaml)"
# With it, HTTPS_PROXY is the proxy: squid carries the tunnels ...
lines_before=$(wc -l <"$SQ/access.log")
start_bg envon env -u https_proxy -u no_proxy -u NO_PROXY HTTPS_PROXY="http://127.0.0.1:$SQ_PORT" \
  "$CCRELAY_BIN" agent -c "$CR_TMP/fromenv.yaml"
wait_for_tunnels envon 2
assert_file_contains "$(log_of envon)" "msg=\"gateway proxy\" proxy=127.0.0.1:$SQ_PORT from=HTTPS_PROXY" "proxy from HTTPS_PROXY"
st=$(call fromenv)
assert_eq "$st" 200 "call through the proxy named by HTTPS_PROXY"
stop_ccrelay envon
for ((i = 0; i < 100; i++)); do # squid logs a CONNECT when its tunnel closes
  (($(wc -l <"$SQ/access.log") >= lines_before + 2)) && break
  sleep 0.05
done
(($(wc -l <"$SQ/access.log") >= lines_before + 2)) || fail "squid did not log the HTTPS_PROXY agent's tunnels"
# ... a dead HTTPS_PROXY is dialled (so the variable is really used) ...
start_bg envdead env -u https_proxy -u no_proxy -u NO_PROXY HTTPS_PROXY="http://127.0.0.1:$dead" \
  "$CCRELAY_BIN" agent -c "$CR_TMP/fromenv.yaml"
wait_for_log envdead "msg=\"tunnel dial failed\".*step=proxy reason=\"connection refused: cannot connect to proxy 127\.0\.0\.1:$dead" 10
stop_ccrelay envdead
# ... and NO_PROXY naming the gateway's host makes the agent dial directly past it.
start_bg envno env -u https_proxy -u no_proxy HTTPS_PROXY="http://127.0.0.1:$dead" NO_PROXY="localhost,127.0.0.1" \
  "$CCRELAY_BIN" agent -c "$CR_TMP/fromenv.yaml"
wait_for_tunnels envno 2
assert_file_contains "$(log_of envno)" "msg=\"gateway proxy\" proxy=none from=environment reason=\"no_proxy entry '127.0.0.1' matches the gateway\"" \
  "NO_PROXY logged"
st=$(call noproxy)
assert_eq "$st" 200 "call over the direct tunnel"
stop_ccrelay envno

# ---- squid's view: CONNECT to the gateway's host:port, nothing else ---------------------------
stop_bg squid2
log=$SQ/access.log
total=$(wc -l <"$log")
cr_log "squid access log: $total lines"
((total >= 6)) || fail "squid logged only $total requests"
other=$(awk -v want="127.0.0.1:$GW_TUNNEL_PORT" '$6 != "CONNECT" || $7 != want' "$log" | wc -l)
assert_eq "$other" 0 "squid saw only CONNECT $GW_TUNNEL_PORT (see $log)"
tunnels=$(grep -c 'TCP_TUNNEL/200 .* CONNECT ' "$log" || true)
denied=$(grep -c 'TCP_DENIED/407 .* CONNECT ' "$log" || true)
cr_log "squid: $tunnels tunnels, $denied refused with 407"
((tunnels >= 4)) || fail "squid logged $tunnels tunnels, expected at least 4"
((denied >= 4)) || fail "squid logged $denied 407s, expected the wrong-password dials"

stop_ccrelay gateway
cr_pass
