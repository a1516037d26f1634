# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Shared helpers for ccrelay's end-to-end tests. Source it, then call cr_init:
#
#   set -euo pipefail
#   . "$(dirname "$0")/../lib/common.sh"
#   cr_init my_test 60          # temp dir, EXIT trap, 60 s watchdog
#   make_pki                    # -> $CR_PKI
#   start_cms_sim               # -> $CMS_PORT
#   ...asserts...
#   cr_pass                     # prints "PASS: my_test"
#
# Every process is started by start_bg (PID and log recorded) and stopped by stop_all, by PID only;
# the EXIT trap always runs stop_all, prints FAIL with the tail of every log on failure, and removes
# the temp dir unless KEEP_TMP=1. The full list of helpers is in tests/sims/README.md.

CR_PY=/usr/bin/python3
CR_SRC=${CCRELAY_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
CR_SIMS=$CR_SRC/tests/sims
CR_TEST_NAME=${CR_TEST_NAME:-$(basename "$0" .sh)}
CR_TMP=""
CR_PKI=""
CR_PASSED=0
CR_WATCHDOG_PID=""
CR_PIDS=()
declare -A CR_PID_OF=()
declare -A CR_LOG_OF=()

CR_T0=$EPOCHREALTIME
# CI runs as root; ccrelay's roles refuse root unless told (tests/e2e/test_e2e_privileges.sh tests that).
export CCRELAY_ALLOW_ROOT=1

# cr_log MSG: "[test +seconds] MSG" on stderr.
cr_log() {
  local us=$((${EPOCHREALTIME/./} - ${CR_T0/./}))
  printf '[%s +%d.%02ds] %s\n' "$CR_TEST_NAME" $((us / 1000000)) $((us % 1000000 / 10000)) "$*" >&2
}

fail() {
  printf 'FAIL: %s: %s\n' "$CR_TEST_NAME" "$*" >&2
  exit 1
}

# The watchdog signals the test shell, then every process descended from it (found by walking
# /proc, so nothing outside this test is touched): bash runs its TERM trap only once the foreground
# command returns, so that command has to be ended too.
CR_WATCHDOG_PY='import os, signal, sys, time
time.sleep(float(sys.argv[1]))
root, me = int(sys.argv[2]), os.getpid()
kids = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
            kids.setdefault(int(st[st.rindex(")") + 2:].split()[1]), []).append(int(d))
        except (OSError, ValueError, IndexError):
            pass
tree, unvisited = [], [root]
while unvisited:
    for c in kids.get(unvisited.pop(), []):
        if c != me:
            tree.append(c)
            unvisited.append(c)
sys.stderr.write("watchdog: test ran longer than %ss\n" % sys.argv[1])
for p in [root] + tree:
    try:
        os.kill(p, signal.SIGTERM)
    except OSError:
        pass'

# cr_init NAME [WATCHDOG_SECONDS]: temp dir ($CR_TMP), traps, optional watchdog that SIGTERMs this
# shell (the EXIT trap then cleans up) when the test overruns.
cr_init() {
  CR_TEST_NAME=$1
  CR_TMP=$(mktemp -d "${TMPDIR:-/tmp}/ccrelay-${CR_TEST_NAME}.XXXXXX")
  trap cr_on_exit EXIT
  trap 'cr_log "interrupted"; exit 130' INT
  trap 'cr_log "terminated (watchdog or caller)"; exit 124' TERM
  if [[ -n ${2:-} ]]; then
    "$CR_PY" -c "$CR_WATCHDOG_PY" "$2" "$$" &
    CR_WATCHDOG_PID=$!
  fi
}

cr_on_exit() {
  local rc=$?
  set +e
  stop_all
  release_ports
  if [[ -n $CR_WATCHDOG_PID ]]; then
    kill "$CR_WATCHDOG_PID" 2>/dev/null
    wait "$CR_WATCHDOG_PID" 2>/dev/null
  fi
  if [[ $rc -ne 0 || $CR_PASSED -ne 1 ]]; then
    local name
    for name in "${!CR_LOG_OF[@]}"; do
      printf -- '--- last lines of %s (%s)\n' "$name" "${CR_LOG_OF[$name]}" >&2
      tail -n 15 "${CR_LOG_OF[$name]}" >&2 2>/dev/null
    done
    printf 'FAIL: %s (exit %d)\n' "$CR_TEST_NAME" "$rc" >&2
    [[ $rc -ne 0 ]] || rc=1
  fi
  if [[ -n $CR_TMP && -d $CR_TMP ]]; then
    if [[ ${KEEP_TMP:-0} == 1 ]]; then
      printf 'kept temp dir %s\n' "$CR_TMP" >&2
    else
      rm -rf -- "$CR_TMP"
    fi
  fi
  exit "$rc"
}

cr_pass() {
  CR_PASSED=1
  printf 'PASS: %s\n' "$CR_TEST_NAME"
  exit 0
}

# ---- processes -----------------------------------------------------------------------------

# start_bg NAME CMD...: run CMD in the background, stdout+stderr to $CR_TMP/NAME.log.
# Sets CR_PID_OF[NAME] and CR_LOG_OF[NAME]; do not call inside $(...) (the PID would be lost).
start_bg() {
  local name=$1
  shift
  local log=$CR_TMP/$name.log
  "$@" >"$log" 2>&1 </dev/null &
  CR_PIDS+=("$!")
  CR_PID_OF[$name]=$!
  CR_LOG_OF[$name]=$log
}

pid_of() { echo "${CR_PID_OF[$1]}"; }
log_of() { echo "${CR_LOG_OF[$1]}"; }

alive() { kill -0 "$1" 2>/dev/null; }

# wait_exit NAME [TIMEOUT_SECONDS=10]: wait for NAME to exit by itself; returns its exit status
# (fails the test if it is still running after TIMEOUT).
wait_exit() {
  local pid=${CR_PID_OF[$1]:-} timeout=${2:-10} i rc=0
  [[ -n $pid ]] || fail "wait_exit: no process named $1"
  for ((i = 0; i < timeout * 20; i++)); do
    alive "$pid" || break
    sleep 0.05
  done
  alive "$pid" && fail "$1 (pid $pid) still running after ${timeout}s"
  wait "$pid" 2>/dev/null || rc=$?
  return "$rc"
}

# stop_pid PID [GRACE_SECONDS=5]: SIGTERM, wait up to GRACE, then SIGKILL; reaps it.
stop_pid() {
  local pid=$1 grace=${2:-5} i
  alive "$pid" || { wait "$pid" 2>/dev/null; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 20; i++)); do
    alive "$pid" || break
    sleep 0.05
  done
  if alive "$pid"; then
    cr_log "pid $pid ignored SIGTERM for ${grace}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null
}

# stop_bg NAME [SIGNAL]: stop one named process (graceful), or just send SIGNAL (e.g. KILL, HUP).
stop_bg() {
  local pid=${CR_PID_OF[$1]:-}
  [[ -n $pid ]] || fail "stop_bg: no process named $1"
  if [[ -n ${2:-} ]]; then
    kill "-$2" "$pid" 2>/dev/null || true
    [[ $2 != KILL && $2 != 9 ]] || wait "$pid" 2>/dev/null || true
  else
    stop_pid "$pid" || true
  fi
}

# stop_all: SIGTERM every recorded PID, wait up to 5 s in total, SIGKILL survivors, reap all.
stop_all() {
  local pid i any
  ((${#CR_PIDS[@]})) || return 0
  for pid in "${CR_PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for ((i = 0; i < 100; i++)); do
    any=0
    for pid in "${CR_PIDS[@]}"; do
      if alive "$pid"; then any=1; break; fi
    done
    ((any)) || break
    sleep 0.05
  done
  for pid in "${CR_PIDS[@]}"; do
    if alive "$pid"; then
      cr_log "pid $pid survived SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  CR_PIDS=()
}

# pick_free_port: a port that was free a moment ago on 127.0.0.1 (prefer "--port 0" where possible).
# pick_free_port: a TCP port of 127.0.0.1 that nothing listens on and that no other test running on
# this machine, nor this one, has been handed. Asking the kernel for port 0 and closing it was racy:
# the kernel may hand the same port to a later bind(0) (a test that picks 12 ports before binding
# any would, by the birthday bound, get a duplicate once in a few hundred runs) or to another test
# running at the same time (seen with two copies of the replica test), and ephemeral ports are also
# what outgoing connections use. So ports come from 10000-65535 outside the kernel's ephemeral range
# (net.ipv4.ip_local_port_range, 32768-60999 by default) and each is reserved by a file named after it
# in CR_PORT_DIR, holding the picking test's PID; the file is removed when that test ends, and one
# whose process is gone is taken over.
CR_PORT_DIR=${CR_PORT_DIR:-${TMPDIR:-/tmp}/ccrelay-test-ports-$(id -u)}
pick_free_port() {
  "$CR_PY" - "$CR_PORT_DIR" "$$" <<'PY'
import os, random, socket, sys

d, owner = sys.argv[1], sys.argv[2]
os.makedirs(d, mode=0o700, exist_ok=True)
try:
    low, high = (int(x) for x in open("/proc/sys/net/ipv4/ip_local_port_range").read().split())
except (OSError, ValueError):
    low, high = 32768, 60999
candidates = [p for p in range(10000, 65536) if not low <= p <= high]
if not candidates:
    sys.exit("pick_free_port: the ephemeral range %d-%d leaves no port of 10000-65535" % (low, high))


def reserve(path):
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        return False
    os.write(fd, owner.encode())
    os.close(fd)
    return True


def stale(path):
    try:
        pid = int(open(path).read().strip() or "0")
    except (OSError, ValueError):
        return False  # being written right now
    return pid <= 0 or not os.path.exists("/proc/%d" % pid)


for _ in range(500):
    port = random.choice(candidates)
    path = os.path.join(d, str(port))
    if not reserve(path):
        if not stale(path):
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        if not reserve(path):
            continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue  # in use by something else: keep it reserved, so nobody tries it again
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit("pick_free_port: no free port found outside the ephemeral range %d-%d (see %s)" % (low, high, d))
PY
}

# release_ports: drops the port reservations of this test (cr_on_exit calls it).
release_ports() {
  local f
  [[ -d $CR_PORT_DIR ]] || return 0
  for f in "$CR_PORT_DIR"/*; do
    [[ -f $f && $(cat "$f" 2>/dev/null) == "$$" ]] && rm -f -- "$f"
  done
  return 0
}

# wait_for_port HOST PORT [TIMEOUT_SECONDS=10] [PID]: until a TCP connect succeeds; fails early
# when PID (if given) has exited.
wait_for_port() {
  local host=$1 port=$2 timeout=${3:-10} pid=${4:-} i
  for ((i = 0; i < timeout * 20; i++)); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
      return 0
    fi
    if [[ -n $pid ]] && ! alive "$pid"; then
      fail "process $pid exited before $host:$port accepted connections"
    fi
    sleep 0.05
  done
  fail "nothing accepted connections on $host:$port within ${timeout}s"
}

# wait_for_log NAME REGEX [TIMEOUT_SECONDS=10]: until NAME's log has a line matching REGEX (ERE).
wait_for_log() {
  local name=$1 re=$2 timeout=${3:-10} i
  local log=${CR_LOG_OF[$name]:-} pid=${CR_PID_OF[$name]:-}
  [[ -n $log ]] || fail "wait_for_log: no process named $name"
  for ((i = 0; i < timeout * 20; i++)); do
    grep -Eq -- "$re" "$log" 2>/dev/null && return 0
    alive "$pid" || { grep -Eq -- "$re" "$log" 2>/dev/null && return 0; fail "$name exited before logging /$re/"; }
    sleep 0.05
  done
  fail "$name did not log /$re/ within ${timeout}s"
}

# wait_for_listening NAME [TIMEOUT_SECONDS=10]: echo the port from NAME's "listening PORT" line.
wait_for_listening() {
  wait_for_log "$1" '^listening [0-9]+$' "${2:-10}"
  sed -n 's/^listening \([0-9][0-9]*\)$/\1/p' "${CR_LOG_OF[$1]}" | head -n 1
}

# ---- test PKI and upstreams --------------------------------------------------------------------

# make_pki [DIR=$CR_TMP/pki]: generate the test PKI; sets CR_PKI.
make_pki() {
  CR_PKI=${1:-$CR_TMP/pki}
  bash "$CR_SRC/tests/pki/mkpki.sh" "$CR_PKI" || fail "mkpki.sh failed"
}

# start_sim NAME SCRIPT ARGS...: start tests/sims/SCRIPT on a free port; sets SIM_PORT.
# Its request log (one line per request) is $CR_TMP/NAME.requests.
start_sim() {
  local name=$1 script=$2
  shift 2
  : >"$CR_TMP/$name.requests"
  start_bg "$name" "$CR_PY" "$CR_SIMS/$script" --listen 127.0.0.1 --port 0 \
    --log "$CR_TMP/$name.requests" "$@"
  SIM_PORT=$(wait_for_listening "$name")
  [[ -n $SIM_PORT ]] || fail "$name did not announce its port"
}

# start_cms_sim [NAME=cms] [EXTRA_ARGS...]: the CMS simulator as the reference deployment has it
# (cms-server cert, client certs from client-ca, CN "CMS JSON connector", issuing-ca). Sets CMS_PORT.
start_cms_sim() {
  local name=${1:-cms}
  shift || true
  start_sim "$name" cms_sim.py --cert "$CR_PKI/cms-server.pem" --key "$CR_PKI/cms-server.key" \
    --client-ca "$CR_PKI/client-ca.pem" --require-cn "CMS JSON connector" \
    --issuer-cert "$CR_PKI/issuing-ca.pem" --issuer-key "$CR_PKI/issuing-ca.key" "$@"
  # shellcheck disable=SC2034  # for the caller
  CMS_PORT=$SIM_PORT
}

# start_pki_sim [NAME=pki] [EXTRA_ARGS...]: the PKI SOAP simulator (pki-server cert, CN
# "PKI SOAP connector"). Sets PKI_PORT.
start_pki_sim() {
  local name=${1:-pki}
  shift || true
  start_sim "$name" pki_sim.py --cert "$CR_PKI/pki-server.pem" --key "$CR_PKI/pki-server.key" \
    --client-ca "$CR_PKI/client-ca.pem" --require-cn "PKI SOAP connector" \
    --issuer-cert "$CR_PKI/issuing-ca.pem" --issuer-key "$CR_PKI/issuing-ca.key" "$@"
  # shellcheck disable=SC2034  # for the caller
  PKI_PORT=$SIM_PORT
}

# request_count NAME: requests the sim NAME has received so far (lines in its request log).
request_count() {
  local f=$CR_TMP/$1.requests
  [[ -f $f ]] || fail "request_count: no request log for $1"
  wc -l <"$f" | tr -d ' '
}

# start_nginx_upstream [NAME=nginx] [PORT]: nginx on 127.0.0.1 with TLS (nginx-server cert) and
# ssl_verify_client on (client-ca). Sets NGINX_PORT and NGINX_DIR (conf, logs, www/). Serves:
#   POST /connector/mdm.cgi -> fixed JSON {"status":"ok","source":"nginx",...}; other methods 405
#   GET /big                -> 1 MiB static file: the first 1048576 bytes of the /test/big pattern
#   any /echo               -> JSON of selected request headers (values not JSON-escaped)
#   anything else           -> 404 JSON
# nginx runs as one process (master_process off) so its PID is the one recorded; every path it
# writes is under NGINX_DIR; access.log there has one line per request.
start_nginx_upstream() {
  local name=${1:-nginx}
  NGINX_PORT=${2:-$(pick_free_port)}
  NGINX_DIR=$CR_TMP/$name
  mkdir -p "$NGINX_DIR/www" "$NGINX_DIR/tmp"
  "$CR_PY" "$CR_SIMS/simlib.py" pattern 1048576 >"$NGINX_DIR/www/big"
  local d=$NGINX_DIR
  cat >"$d/nginx.conf" <<EOF
daemon off;
master_process off;
pid $d/nginx.pid;
error_log $d/error.log info;
events { worker_connections 256; }
http {
  access_log $d/access.log;
  client_body_temp_path $d/tmp/body;
  proxy_temp_path $d/tmp/proxy;
  fastcgi_temp_path $d/tmp/fastcgi;
  uwsgi_temp_path $d/tmp/uwsgi;
  scgi_temp_path $d/tmp/scgi;
  default_type application/octet-stream;
  keepalive_requests 10000;
  keepalive_timeout 60s;
  server {
    listen 127.0.0.1:$NGINX_PORT ssl;
    server_name localhost;
    ssl_certificate $CR_PKI/nginx-server.pem;
    ssl_certificate_key $CR_PKI/nginx-server.key;
    ssl_client_certificate $CR_PKI/client-ca.pem;
    ssl_verify_client on;
    ssl_verify_depth 2;
    root $d/www;
    location = /connector/mdm.cgi {
      default_type application/json;
      if (\$request_method != POST) {
        return 405 '{"status":"error","error":"method_not_allowed","source":"nginx"}\n';
      }
      return 200 '{"status":"ok","version":"nginx-upstream 1","source":"nginx","client_dn":"\$ssl_client_s_dn"}\n';
    }
    location = /big { }
    location = /echo {
      default_type application/json;
      add_header X-Echo-Request-Id "\$http_x_request_id" always;
      return 200 '{"method":"\$request_method","uri":"\$request_uri","host":"\$host","x_request_id":"\$http_x_request_id","forwarded":"\$http_forwarded","x_forwarded_for":"\$http_x_forwarded_for","connection":"\$http_connection","te":"\$http_te","upgrade":"\$http_upgrade","keep_alive":"\$http_keep_alive","proxy_connection":"\$http_proxy_connection","transfer_encoding":"\$http_transfer_encoding","content_length":"\$http_content_length","content_type":"\$http_content_type","soapaction":"\$http_soapaction","user_agent":"\$http_user_agent","client_dn":"\$ssl_client_s_dn","ssl_protocol":"\$ssl_protocol"}\n';
    }
    location / {
      default_type application/json;
      return 404 '{"status":"error","error":"not_found","source":"nginx"}\n';
    }
  }
}
EOF
  start_bg "$name" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
  CR_LOG_OF[$name]=$d/error.log
  wait_for_port 127.0.0.1 "$NGINX_PORT" 10 "${CR_PID_OF[$name]}"
}

# ---- HTTP and JSON -----------------------------------------------------------------------------

# curl_status OUTFILE CURL_ARGS...: run curl (10 s cap), body to OUTFILE, curl's stderr to
# OUTFILE.err; echo the HTTP status ("000" when no response: TLS refused, reset, ...).
curl_status() {
  local out=$1
  shift
  curl -sS --max-time 10 -o "$out" -w '%{http_code}' "$@" 2>"$out.err" || true
}

# json_get JSON PATH: value at a dotted path (list indexes as numbers); strings raw, others JSON.
json_get() {
  "$CR_PY" -c 'import json, sys
v = json.loads(sys.argv[1])
for p in [p for p in sys.argv[2].split(".") if p]:
    v = v[int(p)] if isinstance(v, list) else v[p]
print(v if isinstance(v, str) else json.dumps(v))' "$1" "$2" || fail "json_get: no $2 in: ${1:0:300}"
}

# ---- assertions ----------------------------------------------------------------------------------

assert_eq() {
  [[ $1 == "$2" ]] || fail "${3:-assert_eq}: expected '$2', got '$1'"
}

assert_ne() {
  [[ $1 != "$2" ]] || fail "${3:-assert_ne}: did not expect '$2'"
}

assert_contains() {
  [[ $1 == *"$2"* ]] || fail "${3:-assert_contains}: '$2' not found in: ${1:0:500}"
}

assert_not_contains() {
  [[ $1 != *"$2"* ]] || fail "${3:-assert_not_contains}: '$2' found in: ${1:0:500}"
}

# assert_file_contains FILE REGEX [MSG] (ERE)
assert_file_contains() {
  grep -Eq -- "$2" "$1" 2>/dev/null || fail "${3:-assert_file_contains}: /$2/ not in $1"
}

assert_file_lacks() {
  ! grep -Eq -- "$2" "$1" 2>/dev/null || fail "${3:-assert_file_lacks}: /$2/ found in $1"
}
