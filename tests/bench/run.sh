#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# ccrelay benchmark (issue 4): ccrelay against the stacks users run today, all on 127.0.0.1.
#
#   tests/bench/run.sh            full run: 4 paths x 7 points x 3 repetitions of 10 s, plus the memory
#                                 and scale probes (about 20-25 minutes)
#   tests/bench/run.sh --quick    1 repetition of small c=1, small c=64, big c=16 for ccrelay and
#                                 direct, plus idle RSS (under 3 minutes)
#
# Environment: CCRELAY_BIN=path (else the committed HEAD is built, RelWithDebInfo, in the temp dir;
# BENCH_BUILD=worktree builds the work tree in build/release instead), BENCH_DURATION=s
# (per wrk run, default 10), BENCH_REPS=n, BENCH_TUNNELS=n (agent tunnels, default 1), BENCH_PATHS
# and BENCH_POINTS (space-separated subsets, for debugging), KEEP_TMP=1 (keep the temp dir with every
# config and log), BENCH_ON_RUN=program (run as `program start TAG` just before and `program end TAG`
# just after each recorded wrk run; tests/bench/instr.sh uses it to count instructions per run).
#
# Prints one report on stdout (progress goes to stderr). Exit 0 when every run was valid, whether
# or not ccrelay meets its targets; non-zero when the harness failed: a path answered non-2xx, wrk
# saw socket errors, a smoke test or a process failed. Every process it starts is stopped by PID.
#
# What each process stands for (the "cloud" edge receives the console's HTTPS calls; the "inside"
# sits next to the on-prem mTLS service; wrk is the console; the upstream is the CMS):
#   upstream   nginx, TLS with ssl_verify_client on: POST /connector/mdm.cgi -> 1 KiB JSON, GET /big
#              -> 1 MiB file. The same process serves every path.
#   direct     hop: one nginx TLS hop (public cert) -> proxy_pass https with the CMS JSON connector
#              identity, keep-alive pool -> upstream. The floor: what one TLS proxy costs.
#   ccrelay    gateway (cloud) <- TLS 1.3 + HTTP/2 tunnel dialled by -> agent (inside) -> upstream.
#   ssh        ssh-edge: nginx in the cloud, TLS for the console, proxy_pass https (client identity
#              held in the cloud, keep-alive pool) to the port that sshd opens for `ssh -R`;
#              sshd (cloud, private instance on a loopback port) <- ssh -N -R (inside) -> upstream.
#              TLS to the upstream runs end to end through the ssh channels.
#   haproxy    pool-edge: nginx in the cloud, TLS for the console, a keep-alive pool of mutually
#              authenticated TLS connections (tunnel CA, like ccrelay's tunnel) to -> haproxy
#              (inside: terminates the pool's TLS, forwards with the client identity, http-reuse
#              always) -> upstream. In production the pool's TCP connections would be opened from
#              inside outwards; on loopback the direction of the connect does not change the cost.
# Every TLS hop negotiates TLS 1.3 (nginx is told to: Debian's 1.22 would stop at 1.2 by default).
# Access logs are off on every hop (ccrelay log.level warn, nginx access_log off, haproxy no log);
# nginx runs with master_process off and haproxy with nbthread 1, so each relay process is one
# single-threaded event loop like ccrelay's.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC=$(cd "$BENCH_DIR/../.." && pwd)
MODE=full
for arg in "$@"; do
  case $arg in
    --quick) MODE=quick ;;
    -h | --help)
      sed -n '2,17p' "$0"
      exit 0
      ;;
    *)
      echo "usage: $0 [--quick]" >&2
      exit 2
      ;;
  esac
done

. "$SRC/tests/lib/common.sh"
CR_TEST_NAME=bench

# ---- dependencies and build ---------------------------------------------------------------------

install_deps() {
  local as_root=() p missing=()
  bash "$SRC/deploy/install-deps.sh" >&2
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null || { echo "bench: run as root or install sudo" >&2; exit 1; }
    as_root=(sudo)
  fi
  for p in wrk haproxy openssh-server openssh-client nginx-light procps curl openssl python3-cryptography; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if ((${#missing[@]})); then
    cr_log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

install_deps
CCRELAY_BIN_GIVEN=${CCRELAY_BIN:-}
# 10,000 streams need 10,000+ descriptors in the gateway, the agent and the hold upstream.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
(($(ulimit -n) >= 12000)) || cr_log "warning: only $(ulimit -n) file descriptors; the 10,000-stream probe will fail"

if [[ $MODE == quick ]]; then
  DUR=${BENCH_DURATION:-10}
  REPS=${BENCH_REPS:-1}
  POINTS=(small-c1 small-c64 big-c16)
  PATHS=(direct ccrelay)
  WATCHDOG=600
else
  DUR=${BENCH_DURATION:-10}
  REPS=${BENCH_REPS:-3}
  POINTS=(small-c1 small-c16 small-c64 big-c1 big-c16 big-c64 small-c16-close small-c16-paced)
  PATHS=(direct ccrelay ssh haproxy)
  WATCHDOG=2700
fi
[[ -z ${BENCH_PATHS:-} ]] || read -ra PATHS <<<"$BENCH_PATHS"
[[ -z ${BENCH_POINTS:-} ]] || read -ra POINTS <<<"$BENCH_POINTS"
TUNNELS=${BENCH_TUNNELS:-1}
T_START=$EPOCHSECONDS

cr_init bench "$WATCHDOG"
SSHD_RUNDIR_CREATED=0
bench_on_exit() {
  local rc=$?
  set +e
  if ((SSHD_RUNDIR_CREATED)); then
    stop_all
    rmdir /run/sshd 2>/dev/null || true
  fi
  (exit "$rc")
  cr_on_exit
}
trap bench_on_exit EXIT

BUILT_FROM=""
if [[ -z ${CCRELAY_BIN:-} ]]; then
  if [[ ${BENCH_BUILD:-head} == head ]] && git -C "$SRC" rev-parse --verify -q HEAD >/dev/null 2>&1; then
    # The committed tree only, whatever is half-edited in the work tree.
    BUILT_FROM="HEAD, built from git archive"
    mkdir -p "$CR_TMP/src"
    git -C "$SRC" archive HEAD | tar -x -C "$CR_TMP/src"
    bsrc=$CR_TMP/src bdir=$CR_TMP/build
  else
    BUILT_FROM="work tree"
    bsrc=$SRC bdir=$SRC/build/release
  fi
  cr_log "building ccrelay (RelWithDebInfo) from the $BUILT_FROM in $bdir"
  cmake -S "$bsrc" -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCCRELAY_TESTS=OFF >"$CR_TMP/build.log" 2>&1 &&
    cmake --build "$bdir" -j"$(nproc)" >>"$CR_TMP/build.log" 2>&1 ||
    { tail -n 30 "$CR_TMP/build.log" >&2; fail "building ccrelay failed (log above)"; }
  CCRELAY_BIN=$bdir/ccrelay
fi
export CCRELAY_BIN
. "$SRC/tests/lib/relay.sh"
# relay.sh is written for the sanitizer build; these only matter if CCRELAY_BIN is one.
export ASAN_OPTIONS=detect_leaks=0

make_pki
P=$CR_PKI
RUNS=$CR_TMP/runs
mkdir -p "$RUNS"
: >"$RUNS/runs.jsonl"
declare -A PUB_PORT=()
HARNESS_ERRORS=()
harness_error() {
  cr_log "HARNESS ERROR: $*"
  HARNESS_ERRORS+=("$*")
}
# forget_pid PID: drop a reaped PID from the list stop_all signals (the number may be reused).
forget_pid() {
  local p keep=()
  for p in "${CR_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
  CR_PIDS=("${keep[@]}")
}

# ---- upstream: nginx with ssl_verify_client on --------------------------------------------------

# nginx_common DIR: the part of every nginx configuration that is the same (one process, all paths
# under DIR, no access log).
nginx_common() {
  local d=$1
  mkdir -p "$d/tmp"
  cat <<EOF
daemon off;
master_process off;
worker_rlimit_nofile 8192;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 2048; }
http {
  access_log off;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  default_type application/octet-stream;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  # Debian 12's nginx 1.22 leaves TLS 1.3 out of its defaults (1.23.4 and later include it); ccrelay
  # and HAProxy negotiate TLS 1.3, so every hop of every path does, or new-connection costs compare a
  # TLS 1.2 handshake with a TLS 1.3 one.
  ssl_protocols TLSv1.2 TLSv1.3;
  proxy_ssl_protocols TLSv1.2 TLSv1.3;
EOF
}

# start_nginx NAME PORT: nginx -p DIR -c DIR/nginx.conf (written by the caller) in the background.
start_nginx() {
  local name=$1 port=$2 d=$CR_TMP/$1
  start_bg "$name" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
  wait_for_port 127.0.0.1 "$port" 10 "$(pid_of "$name")"
}

SMALL_ANSWER=$("$CR_PY" -c 'import json
d = {"status": "ok", "action": "test", "version": "nginx-upstream 1", "source": "nginx", "pad": ""}
d["pad"] = "x" * (1023 - len(json.dumps(d, separators=(",", ":"))))
print(json.dumps(d, separators=(",", ":")))')
UP_PORT=$(pick_free_port)
UPD=$CR_TMP/upstream
mkdir -p "$UPD/www"
"$CR_PY" "$CR_SIMS/simlib.py" pattern 1048576 >"$UPD/www/big"
{
  nginx_common "$UPD"
  cat <<EOF
  server {
    listen 127.0.0.1:$UP_PORT ssl;
    server_name localhost;
    ssl_certificate $P/nginx-server.pem;
    ssl_certificate_key $P/nginx-server.key;
    ssl_client_certificate $P/client-ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    root $UPD/www;
    location = /connector/mdm.cgi {
      default_type application/json;
      if (\$request_method != POST) { return 405; }
      return 200 '$SMALL_ANSWER\n';
    }
    location = /big { }
    location / { return 404; }
  }
}
EOF
} >"$UPD/nginx.conf"
start_nginx upstream "$UP_PORT"

# ---- cloud-side nginx proxies (direct hop, ssh edge, pool edge) ---------------------------------

# write_edge NAME PORT TARGET_PORT CLIENT_CERT CLIENT_KEY TRUSTED_CA: TLS for the console on PORT
# (public certificate), proxy_pass https to 127.0.0.1:TARGET_PORT with a keep-alive pool, presenting
# CLIENT_CERT and verifying the next hop against TRUSTED_CA with the name "localhost". Responses are
# buffered in memory only (proxy_max_temp_file_size 0: no disk in the measurement).
write_edge() {
  local name=$1 port=$2 target=$3 cert=$4 key=$5 ca=$6 d=$CR_TMP/$1
  mkdir -p "$d"
  {
    nginx_common "$d"
    cat <<EOF
  upstream next {
    server 127.0.0.1:$target;
    keepalive 256;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
  }
  server {
    listen 127.0.0.1:$port ssl;
    server_name cms.example.com localhost;
    ssl_certificate $P/public.pem;
    ssl_certificate_key $P/public.key;
    location / {
      proxy_pass https://next;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_ssl_certificate $cert;
      proxy_ssl_certificate_key $key;
      proxy_ssl_trusted_certificate $ca;
      proxy_ssl_verify on;
      proxy_ssl_verify_depth 2;
      proxy_ssl_name localhost;
      proxy_ssl_server_name on;
      proxy_ssl_session_reuse on;
      proxy_buffer_size 16k;
      proxy_buffers 8 16k;
      proxy_busy_buffers_size 32k;
      proxy_max_temp_file_size 0;
      proxy_read_timeout 60s;
    }
  }
}
EOF
  } >"$d/nginx.conf"
}

start_direct() {
  PUB_PORT[direct]=$(pick_free_port)
  write_edge hop "${PUB_PORT[direct]}" "$UP_PORT" "$P/cms-json-connector.pem" "$P/cms-json-connector.key" \
    "$P/upstream-ca.pem"
  start_nginx hop "${PUB_PORT[direct]}"
}

# ---- ccrelay ------------------------------------------------------------------------------------

HOLD_PORT=""
start_hold_upstream() {
  start_bg hold "$CR_PY" "$BENCH_DIR/hold.py" upstream --port 0 --cert "$P/cms-server.pem" \
    --key "$P/cms-server.key" --client-ca "$P/client-ca.pem" --state "$CR_TMP/hold.state" --max-hold 240
  HOLD_PORT=$(wait_for_listening hold)
}

start_ccrelay() {
  GW_TUNNEL_PORT=$(pick_free_port)
  PUB_PORT[ccrelay]=$(pick_free_port)
  cat >"$CR_TMP/gateway.yaml" <<YAML
log: { level: warn }
tunnel:
  listen: 127.0.0.1:$GW_TUNNEL_PORT
  identity: { cert: $P/gateway-tunnel.pem, key: $P/gateway-tunnel.key }
  client_ca: $P/tunnel-ca.pem
public:
  listen: 127.0.0.1:${PUB_PORT[ccrelay]}
  identity: { cert: $P/public.pem, key: $P/public.key }
  request_timeout: 300s
  idle_timeout: 300s
  header_timeout: 120s
  max_connections: 20000
groups:
  - name: acme
    agents: [acme-agent-1]
services:
  - host: cms.example.com
    group: acme
drain_timeout: 3s
YAML
  # Binaries with per-service limits cap a service's calls in flight (1000 by default) and its request
  # bodies (10 MiB); the probes hold up to 10000 calls. An older binary has no such key: left as is.
  sed 's/^    group: acme$/    group: acme\n    limits: { max_concurrent: 1000000, max_body: 0 }/' "$CR_TMP/gateway.yaml" \
    >"$CR_TMP/gateway.limits.yaml"
  if "$CCRELAY_BIN" check -c "$CR_TMP/gateway.limits.yaml" >/dev/null 2>&1; then
    mv "$CR_TMP/gateway.limits.yaml" "$CR_TMP/gateway.yaml"
  fi
  # Binaries with pre-authentication caps limit connections per source (500 by default; every bench
  # client is 127.0.0.1) and need max_connections + 1256 descriptors (the hard limit here may be 20000).
  sed 's/^  max_connections: 20000$/  max_connections: 18000\n  max_per_source: 18000/' "$CR_TMP/gateway.yaml" \
    >"$CR_TMP/gateway.caps.yaml"
  if "$CCRELAY_BIN" check -c "$CR_TMP/gateway.caps.yaml" >/dev/null 2>&1; then
    mv "$CR_TMP/gateway.caps.yaml" "$CR_TMP/gateway.yaml"
  fi
  local id="identity: { pkcs12: $P/cms-json-connector.p12, password_file: $P/cms-json-connector.pass }"
  local hold_route=""
  if [[ -n $HOLD_PORT ]]; then
    hold_route="  - name: hold
    match: { path_prefix: /hold }
    upstream:
      url: https://127.0.0.1:$HOLD_PORT
      server_name: localhost
      ca: $P/upstream-ca.pem
      $id
      connect_timeout: 120s
      response_timeout: 300s
"
  fi
  # Agents that have a trust store (ccrelay trust) verify route identities and upstreams against it:
  # give it the test PKI's roots. An older binary without the command gets no trust_store key.
  local trust=""
  if "$CCRELAY_BIN" trust --store "$CR_TMP/trust" add "$P/client-ca.pem" "$P/upstream-ca.pem" >/dev/null 2>&1; then
    trust="trust_store: $CR_TMP/trust"
  fi
  cat >"$CR_TMP/agent.yaml" <<YAML
log: { level: warn }
$trust
gateway:
  address: 127.0.0.1:$GW_TUNNEL_PORT
  server_name: localhost
  ca: $P/tunnel-ca.pem
  identity: { cert: $P/agent.pem, key: $P/agent.key }
  connections: $TUNNELS
routes:
  - name: cms
    match: { path_prefix: /connector/mdm.cgi }
    upstream:
      url: https://127.0.0.1:$UP_PORT
      server_name: localhost
      ca: $P/upstream-ca.pem
      $id
      max_idle: 256
  - name: big
    match: { path_prefix: /big }
    upstream:
      url: https://127.0.0.1:$UP_PORT
      server_name: localhost
      ca: $P/upstream-ca.pem
      $id
      max_idle: 256
${hold_route}drain_timeout: 3s
YAML
  "$CCRELAY_BIN" check -c "$CR_TMP/gateway.yaml" >&2 || fail "gateway.yaml does not check"
  "$CCRELAY_BIN" check -c "$CR_TMP/agent.yaml" >&2 || fail "agent.yaml does not check"
  # Logs at warn only: no access line per call (the nginx hops log nothing either).
  start_bg gateway "$CCRELAY_BIN" gateway -c "$CR_TMP/gateway.yaml"
  wait_for_port 127.0.0.1 "${PUB_PORT[ccrelay]}" 15 "$(pid_of gateway)"
  start_bg agent "$CCRELAY_BIN" agent -c "$CR_TMP/agent.yaml"
  # "tunnel up" is logged at info; at warn, wait until a call goes through instead.
  local i st
  for ((i = 0; i < 100; i++)); do
    st=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$P/public-ca.pem" \
      --resolve "cms.example.com:${PUB_PORT[ccrelay]}:127.0.0.1" -H 'Content-Type: application/json' \
      -d '{"action":"test"}' "https://cms.example.com:${PUB_PORT[ccrelay]}/connector/mdm.cgi" || true)
    [[ $st == 200 ]] && return 0
    alive "$(pid_of agent)" || fail "agent exited"
    sleep 0.1
  done
  fail "ccrelay: no 200 through the tunnel within 10 s (last status $st)"
}

# ---- ssh -R -------------------------------------------------------------------------------------

start_ssh() {
  local d=$CR_TMP/ssh user sshd_port rport
  mkdir -p "$d"
  chmod 700 "$d"
  user=$(id -un)
  sshd_port=$(pick_free_port)
  rport=$(pick_free_port)
  ssh-keygen -q -t ed25519 -N '' -C bench-host -f "$d/host_ed25519"
  ssh-keygen -q -t ed25519 -N '' -C bench-user -f "$d/id_ed25519"
  cp "$d/id_ed25519.pub" "$d/authorized_keys"
  printf '[127.0.0.1]:%s %s\n' "$sshd_port" "$(cut -d' ' -f1-2 "$d/host_ed25519.pub")" >"$d/known_hosts"
  cat >"$d/sshd_config" <<EOF
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $d/host_ed25519
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding remote
GatewayPorts no
X11Forwarding no
PermitTTY no
PrintMotd no
MaxSessions 10
MaxStartups 100
LogLevel ERROR
EOF
  # sshd needs its privilege separation directory; create it only when missing.
  if [[ ! -d /run/sshd ]]; then
    mkdir -p /run/sshd && chmod 755 /run/sshd && SSHD_RUNDIR_CREATED=1
  fi
  /usr/sbin/sshd -t -f "$d/sshd_config" || fail "sshd config test failed"
  start_bg sshd /usr/sbin/sshd -D -e -f "$d/sshd_config"
  wait_for_port 127.0.0.1 "$sshd_port" 10 "$(pid_of sshd)"
  # Plain `ssh -N -R` as users run it: default ciphers, no extra socket options.
  start_bg ssh ssh -F /dev/null -N -T -o BatchMode=yes -o ExitOnForwardFailure=yes \
    -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$d/known_hosts" -o IdentitiesOnly=yes \
    -i "$d/id_ed25519" -o ServerAliveInterval=15 -p "$sshd_port" \
    -R "127.0.0.1:$rport:127.0.0.1:$UP_PORT" "$user@127.0.0.1"
  wait_for_port 127.0.0.1 "$rport" 15 "$(pid_of ssh)"
  PUB_PORT[ssh]=$(pick_free_port)
  write_edge ssh-edge "${PUB_PORT[ssh]}" "$rport" "$P/cms-json-connector.pem" "$P/cms-json-connector.key" \
    "$P/upstream-ca.pem"
  start_nginx ssh-edge "${PUB_PORT[ssh]}"
}

# ---- TLS pool + HAProxy -------------------------------------------------------------------------

start_haproxy() {
  local d=$CR_TMP/haproxy ha_port
  mkdir -p "$d"
  ha_port=$(pick_free_port)
  # HAProxy wants certificate and key in one file.
  cat "$P/gateway-tunnel.pem" "$P/gateway-tunnel.key" >"$d/server.pem"
  cat "$P/cms-json-connector.pem" "$P/cms-json-connector.key" >"$d/client.pem"
  chmod 600 "$d/server.pem" "$d/client.pem"
  cat >"$d/haproxy.cfg" <<EOF
global
  nbthread 1
  maxconn 4096
  ssl-server-verify required
defaults
  mode http
  option http-keep-alive
  http-reuse always
  timeout connect 5s
  timeout client 300s
  timeout server 60s
  timeout http-keep-alive 300s
  timeout http-request 60s
frontend pool_in
  bind 127.0.0.1:$ha_port ssl crt $d/server.pem ca-file $P/tunnel-ca.pem verify required alpn http/1.1
  default_backend cms
backend cms
  server upstream 127.0.0.1:$UP_PORT ssl crt $d/client.pem ca-file $P/upstream-ca.pem verify required sni str(localhost) verifyhost localhost alpn http/1.1
EOF
  haproxy -c -q -f "$d/haproxy.cfg" >&2 || fail "haproxy config check failed"
  start_bg haproxy haproxy -db -f "$d/haproxy.cfg"
  wait_for_port 127.0.0.1 "$ha_port" 10 "$(pid_of haproxy)"
  PUB_PORT[haproxy]=$(pick_free_port)
  # The pool authenticates both ends with the tunnel CA: the edge presents the agent certificate.
  write_edge pool-edge "${PUB_PORT[haproxy]}" "$ha_port" "$P/agent.pem" "$P/agent.key" "$P/tunnel-ca.pem"
  start_nginx pool-edge "${PUB_PORT[haproxy]}"
}

# ---- bring everything up --------------------------------------------------------------------------

[[ $MODE == full ]] && start_hold_upstream
PROCS=(upstream)
for path in "${PATHS[@]}"; do
  cr_log "starting path $path"
  case $path in
    direct) start_direct; PROCS+=(hop) ;;
    ccrelay) start_ccrelay; PROCS+=(gateway agent) ;;
    ssh) start_ssh; PROCS+=(ssh-edge sshd ssh) ;;
    haproxy) start_haproxy; PROCS+=(pool-edge haproxy) ;;
  esac
done
TARGETS=()
for p in "${PROCS[@]}"; do TARGETS+=("$p=$(pid_of "$p")"); done

# Smoke test: every path answers both kinds of request correctly before anything is measured.
BIG_SHA=$(sha256sum <"$UPD/www/big" | cut -d' ' -f1)
SMALL_BODY=$(printf '{"action":"test","pad":"%s"}' "$(printf 'x%.0s' $(seq 1 457))")
for path in "${PATHS[@]}"; do
  port=${PUB_PORT[$path]}
  base=(--cacert "$P/public-ca.pem" --resolve "cms.example.com:$port:127.0.0.1")
  st=$(curl_status "$CR_TMP/smoke.$path.small" "${base[@]}" -H 'Content-Type: application/json' \
    --data-binary "$SMALL_BODY" "https://cms.example.com:$port/connector/mdm.cgi")
  size=$(stat -c %s "$CR_TMP/smoke.$path.small" 2>/dev/null || echo 0)
  [[ $st == 200 && $size == 1024 ]] || harness_error "smoke $path small: status $st, $size bytes (want 200, 1024)"
  st=$(curl_status "$CR_TMP/smoke.$path.big" "${base[@]}" "https://cms.example.com:$port/big")
  sha=$(sha256sum <"$CR_TMP/smoke.$path.big" | cut -d' ' -f1)
  [[ $st == 200 && $sha == "$BIG_SHA" ]] || harness_error "smoke $path big: status $st, sha256 mismatch or short body"
done
((${#HARNESS_ERRORS[@]} == 0)) || fail "smoke tests failed: ${HARNESS_ERRORS[*]}"
cr_log "all paths answer; idle RSS once settled"
"$CR_PY" "$BENCH_DIR/procstat.py" settle "${TARGETS[@]}" >"$CR_TMP/idle_fresh.json"

# ---- wrk runs -------------------------------------------------------------------------------------

# pace_ms PATH REP: the per-connection wait that makes 16 keep-alive connections send requests at
# least as fast as PATH's new-connection run of repetition REP did: floor(16 / rate - 0.5 ms), the
# 0.5 ms standing for a keep-alive request's own latency, so the paced rate errs high (a higher rate
# only lowers the keep-alive baseline's work per request). Fails, and the paced point is skipped,
# without that run.
pace_ms() {
  local f=$RUNS/$1.small-c16-close.$2.wrk
  [[ -s $f ]] || { cr_log "$1.small-c16-paced.$2: no new-connection run to match, skipped"; return 1; }
  "$CR_PY" - "$f" <<'PY'
import json, sys
d = None
for line in open(sys.argv[1]):
    if line.startswith("WRKJSON "):
        d = json.loads(line[8:])
if not d or not d["requests"]:
    sys.exit(1)
rate = d["requests"] / (d["duration_us"] / 1e6)
print(max(0, int(16 * 1000.0 / rate - 0.5)))
PY
}

# run_wrk PATH POINT REP DURATION: one wrk run with procstat watching every process; appends a record
# to runs.jsonl unless REP is 0 (warm-up).
run_wrk() {
  local path=$1 point=$2 rep=$3 dur=$4 mode conns extra=() tag out rc=0 i
  case $point in
    small-c1) mode=small conns=1 ;;
    small-c16) mode=small conns=16 ;;
    small-c64) mode=small conns=64 ;;
    big-c1) mode=big conns=1 ;;
    big-c16) mode=big conns=16 ;;
    big-c64) mode=big conns=64 ;;
    small-c16-close) mode=small conns=16 extra=(-H "Connection: close") ;;
    small-c16-paced) mode=small conns=16 ;;
    *) fail "unknown point $point" ;;
  esac
  local pace=()
  if [[ $point == small-c16-paced ]]; then
    pace=("$(pace_ms "$path" "$rep")") || return 0
  fi
  tag=$path.$point.$rep
  out=$RUNS/$tag
  rm -f "$out.ready"
  "$CR_PY" "$BENCH_DIR/procstat.py" watch --out "$out.procs.json" --ready "$out.ready" --interval 0.25 \
    --max $((dur + 60)) --self $$ "${TARGETS[@]}" &
  WATCH_PID=$!
  CR_PIDS+=("$WATCH_PID")
  for ((i = 0; i < 100; i++)); do
    [[ -e $out.ready ]] && break
    sleep 0.05
  done
  if ((rep > 0)) && [[ -n ${BENCH_ON_RUN:-} ]]; then
    "$BENCH_ON_RUN" start "$tag" || harness_error "$tag: BENCH_ON_RUN start failed"
  fi
  timeout $((dur + 30)) wrk -t1 -c"$conns" -d"${dur}s" --latency --timeout 10s "${extra[@]}" \
    -s "$BENCH_DIR/bench.lua" "https://127.0.0.1:${PUB_PORT[$path]}/" -- "$mode" "${pace[@]}" >"$out.wrk" 2>&1 || rc=$?
  if ((rep > 0)) && [[ -n ${BENCH_ON_RUN:-} ]]; then
    "$BENCH_ON_RUN" end "$tag" || harness_error "$tag: BENCH_ON_RUN end failed"
  fi
  kill -TERM "$WATCH_PID" 2>/dev/null || true
  wait "$WATCH_PID" 2>/dev/null || true
  forget_pid "$WATCH_PID"
  ((rc == 0)) || harness_error "$tag: wrk exited with status $rc"
  if ((rep > 0)); then
    "$CR_PY" "$BENCH_DIR/report.py" record --path "$path" --point "$point" --rep "$rep" --wrk "$out.wrk" \
      --procs "$out.procs.json" >>"$RUNS/runs.jsonl"
    cr_log "$tag: $(grep -E 'Requests/sec|Non-2xx|Socket errors' "$out.wrk" | tr -s ' ' | paste -sd ';' -)"
  fi
}

cr_log "warm-up (2 s per path, c=64 small then big, not recorded)"
for path in "${PATHS[@]}"; do
  run_wrk "$path" small-c64 0 2
  run_wrk "$path" big-c16 0 2
done

# Repetitions are interleaved (rep, then point, then path) so slow drift on the machine spreads over
# every path instead of landing on one.
for ((rep = 1; rep <= REPS; rep++)); do
  for point in "${POINTS[@]}"; do
    for path in "${PATHS[@]}"; do
      run_wrk "$path" "$point" "$rep" "$DUR"
      sleep 0.5
    done
  done
done

# ---- memory and scale probes ----------------------------------------------------------------------

PROBES=$CR_TMP/probes.json
echo '{}' >"$PROBES"
# probe_streams N CLIENT_PROCS: N concurrent GET /hold through ccrelay, held at the hold upstream until
# all N are there; RSS of gateway and agent idle, then with the N streams open; release; every answer
# must be 2xx.
probe_streams() {
  local n=$1 procs=$2 per i k held=0 held_max=0 t0 setup pids=() deadline
  per=$((n / procs))
  cr_log "probe: $n concurrent streams ($procs client processes)"
  "$CR_PY" "$BENCH_DIR/procstat.py" settle "gateway=$(pid_of gateway)" "agent=$(pid_of agent)" >"$CR_TMP/p$n.idle.json"
  t0=$EPOCHREALTIME
  for ((k = 0; k < procs; k++)); do
    rm -f "$CR_TMP/p$n.client$k.out"
    start_bg "p$n-client$k" "$CR_PY" "$BENCH_DIR/hold.py" client --port "${PUB_PORT[ccrelay]}" --n "$per" \
      --cacert "$P/public-ca.pem" --state "$CR_TMP/p$n.client$k.state" --out "$CR_TMP/p$n.client$k.out" \
      --parallel 100 --timeout 240
    pids+=("$(pid_of "p$n-client$k")")
  done
  deadline=$((EPOCHSECONDS + 180))
  while ((EPOCHSECONDS < deadline)); do
    held=$("$CR_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["held"])' "$CR_TMP/hold.state" 2>/dev/null || echo 0)
    ((held > held_max)) && held_max=$held
    ((held >= n)) && break
    local any=0
    for i in "${pids[@]}"; do alive "$i" && any=1; done
    ((any)) || break
    sleep 0.5
  done
  setup=$("$CR_PY" -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))" "$EPOCHREALTIME" "$t0")
  sleep 3
  "$CR_PY" "$BENCH_DIR/procstat.py" snap "gateway=$(pid_of gateway)" "agent=$(pid_of agent)" >"$CR_TMP/p$n.busy.json"
  cr_log "probe: $held_max of $n held after ${setup}s; releasing"
  kill -USR1 "$(pid_of hold)"
  deadline=$((EPOCHSECONDS + 260))
  for i in "${pids[@]}"; do
    while alive "$i" && ((EPOCHSECONDS < deadline)); do sleep 0.2; done
    alive "$i" && { cr_log "probe client $i still running: stopping it"; stop_pid "$i"; }
    wait "$i" 2>/dev/null || true
    forget_pid "$i"
  done
  "$CR_PY" - "$PROBES" "$n" "$held_max" "$setup" "$CR_TMP/p$n.idle.json" "$CR_TMP/p$n.busy.json" \
    "$CR_TMP"/p$n.client*.out <<'PY'
import json, sys
path, n, held, setup, idle, busy = sys.argv[1:7]
outs = sys.argv[7:]
d = json.load(open(path))
cl = {"ok": 0, "statuses": {}, "errors": {}, "seconds": 0.0}
for o in outs:
    try:
        c = json.load(open(o))
    except (OSError, ValueError):
        cl["errors"]["client output missing"] = cl["errors"].get("client output missing", 0) + 1
        continue
    cl["ok"] += c["ok"]
    cl["seconds"] = max(cl["seconds"], c["seconds"])
    for k in ("statuses", "errors"):
        for a, b in c[k].items():
            cl[k][a] = cl[k].get(a, 0) + b
d["streams_%s" % n] = {"n": int(n), "held_max": int(held), "setup_s": float(setup), "idle": json.load(open(idle)),
                       "busy": json.load(open(busy)), "client": cl}
json.dump(d, open(path, "w"))
PY
  sleep 2
}

# probe_conn_then_stream N: N TLS connections to the gateway's public port, first idle (handshake done,
# nothing sent), then each sending GET /hold and held at the upstream. RSS before, with the idle
# connections, and with the held streams: what a caller's connection costs, and what a stream costs
# beyond it (on the agent, its upstream connection included), on the same connections.
probe_conn_then_stream() {
  local n=$1 pid deadline open=0 held=0
  cr_log "probe: $n caller connections idle, then each with a held stream"
  "$CR_PY" "$BENCH_DIR/procstat.py" settle "gateway=$(pid_of gateway)" "agent=$(pid_of agent)" >"$CR_TMP/c$n.0.json"
  rm -f "$CR_TMP/c$n.out"
  start_bg "c$n-client" "$CR_PY" "$BENCH_DIR/hold.py" client --wait-signal --port "${PUB_PORT[ccrelay]}" \
    --n "$n" --cacert "$P/public-ca.pem" --state "$CR_TMP/c$n.state" --out "$CR_TMP/c$n.out" --parallel 100 \
    --timeout 200
  pid=$(pid_of "c$n-client")
  deadline=$((EPOCHSECONDS + 90))
  while ((EPOCHSECONDS < deadline)) && alive "$pid"; do
    open=$("$CR_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["sent"])' "$CR_TMP/c$n.state" 2>/dev/null || echo 0)
    ((open >= n)) && break
    sleep 0.5
  done
  sleep 3 # the idle sweep (1 s) gives each connection's TLS buffers back
  "$CR_PY" "$BENCH_DIR/procstat.py" snap "gateway=$(pid_of gateway)" "agent=$(pid_of agent)" >"$CR_TMP/c$n.1.json"
  cr_log "probe: $open of $n connections open and idle; each sends its request now"
  kill -USR1 "$pid" 2>/dev/null || true
  deadline=$((EPOCHSECONDS + 90))
  while ((EPOCHSECONDS < deadline)) && alive "$pid"; do
    held=$("$CR_PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["held"])' "$CR_TMP/hold.state" 2>/dev/null || echo 0)
    ((held >= n)) && break
    sleep 0.5
  done
  sleep 3
  "$CR_PY" "$BENCH_DIR/procstat.py" snap "gateway=$(pid_of gateway)" "agent=$(pid_of agent)" >"$CR_TMP/c$n.2.json"
  cr_log "probe: $held of $n held; releasing"
  kill -USR1 "$(pid_of hold)"
  deadline=$((EPOCHSECONDS + 120))
  while alive "$pid" && ((EPOCHSECONDS < deadline)); do sleep 0.2; done
  alive "$pid" && { cr_log "probe client $pid still running: stopping it"; stop_pid "$pid"; }
  wait "$pid" 2>/dev/null || true
  forget_pid "$pid"
  "$CR_PY" - "$PROBES" "$n" "$open" "$held" "$CR_TMP/c$n.0.json" "$CR_TMP/c$n.1.json" "$CR_TMP/c$n.2.json" \
    "$CR_TMP/c$n.out" <<'PY'
import json, sys
path, n, opened, held, s0, s1, s2, out = sys.argv[1:9]
d = json.load(open(path))
try:
    cl = json.load(open(out))
except (OSError, ValueError):
    cl = {"ok": 0, "errors": {"client output missing": 1}}
d["conn_then_stream_%s" % n] = {"n": int(n), "open": int(opened), "held": int(held), "before": json.load(open(s0)),
                                 "conns": json.load(open(s1)), "streams": json.load(open(s2)), "client": cl}
json.dump(d, open(path, "w"))
PY
  sleep 2
}

cr_log "idle RSS after the wrk runs, once settled"
"$CR_PY" "$BENCH_DIR/procstat.py" settle "${TARGETS[@]}" >"$CR_TMP/idle_after_wrk.json"
echo '{}' >"$CR_TMP/idle_after_probes.json"
if [[ $MODE == full ]]; then
  probe_streams 2000 1
  probe_conn_then_stream 2000
  probe_streams 10000 4
  cr_log "idle RSS after the scale probes, once settled"
  "$CR_PY" "$BENCH_DIR/procstat.py" settle "${TARGETS[@]}" >"$CR_TMP/idle_after_probes.json"
fi
for p in gateway agent; do
  alive "$(pid_of "$p")" || harness_error "$p is not running at the end of the benchmark"
done

# ---- report -----------------------------------------------------------------------------------------

"$CR_PY" - "$CR_TMP/mem.json" "$CR_TMP/idle_fresh.json" "$CR_TMP/idle_after_wrk.json" \
  "$CR_TMP/idle_after_probes.json" "$PROBES" <<'PY'
import json, sys
out, fresh, after_wrk, after_probes, probes = sys.argv[1:6]
json.dump({"idle_fresh": json.load(open(fresh)), "idle_after_wrk": json.load(open(after_wrk)),
           "idle_after_probes": json.load(open(after_probes)), "probes": json.load(open(probes))}, open(out, "w"))
PY

commit=$(git -C "$SRC" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $CCRELAY_BIN_GIVEN ]]; then
  commit="binary $CCRELAY_BIN (HEAD is $commit)"
elif [[ $BUILT_FROM == "work tree" && -n $(git -C "$SRC" status --porcelain -- relay include CMakeLists.txt 2>/dev/null) ]]; then
  commit="$commit + uncommitted changes in the work tree"
else
  commit="$commit ($BUILT_FROM)"
fi
printf '%s\n' "${HARNESS_ERRORS[@]}" >"$CR_TMP/harness_errors.txt"
"$CR_PY" - "$CR_TMP/meta.json" "$MODE" "$DUR" "$REPS" "$commit" "$TUNNELS" "$CR_TMP/harness_errors.txt" \
  "${#SMALL_ANSWER}" "$(($(date +%s) - T_START))" "${PATHS[*]}" "${POINTS[*]}" "${PROCS[*]}" <<'PY'
import json, os, platform, subprocess, sys, time
out, mode, dur, reps, commit, tunnels, errs, answer, elapsed, paths, points, procs = sys.argv[1:13]

def cmd(*a):
    try:
        r = subprocess.run(a, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except Exception:
        return "?"

model = "?"
with open("/proc/cpuinfo") as f:
    for line in f:
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
meta = {
    "mode": mode, "duration": int(dur), "reps": int(reps), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    "host": platform.node(), "nproc": os.cpu_count(), "cpu_model": model, "kernel": platform.release(),
    "ccrelay_commit": commit,
    "nginx": cmd("nginx", "-v").replace("nginx version: ", ""),
    "haproxy": " ".join(cmd("haproxy", "-v").split()[:3]),
    "ssh": cmd("ssh", "-V").split(",")[0],
    "wrk": " ".join(cmd("wrk", "--version").split()[:2]),
    "small_body": 484, "small_answer": int(answer) + 1,
    "paths": paths.split(), "points": points.split(), "procs": procs.split(),
    "harness_errors": [l for l in open(errs).read().splitlines() if l.strip()],
    "path_desc": {
        "direct": "wrk -> nginx TLS hop -> (keep-alive mTLS) upstream",
        "ccrelay": "wrk -> gateway -> %s tunnel(s) TLS 1.3 + HTTP/2 -> agent -> (keep-alive mTLS) upstream" % tunnels,
        "ssh": "wrk -> nginx -> sshd -R port -> ssh channel -> ssh -> upstream (mTLS end to end, from nginx)",
        "haproxy": "wrk -> nginx -> keep-alive mTLS pool -> haproxy -> (mTLS, http-reuse always) upstream",
    },
    "notes": ("access logs off on every hop; nginx master_process off, haproxy nbthread 1; wrk does not "
              "resume TLS sessions, so 'new-conn' is a full handshake per request; MiB/s counts 1 MiB bodies; "
              "harness wall time %s s" % elapsed),
}
json.dump(meta, open(out, "w"))
PY

rc=0
"$CR_PY" "$BENCH_DIR/report.py" report --meta "$CR_TMP/meta.json" --runs "$RUNS/runs.jsonl" \
  --mem "$CR_TMP/mem.json" || rc=$?
cr_log "done in $(($(date +%s) - T_START)) s"
if ((rc == 0)); then
  CR_PASSED=1
  exit 0
fi
cr_log "the harness failed (see HARNESS ERRORS above)"
exit 1
