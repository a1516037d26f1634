# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# Helpers to run ccrelay itself in end-to-end tests; source after tests/lib/common.sh.
#
#   write_gateway_conf FILE [EXTRA_YAML]    gateway on free ports ($GW_TUNNEL_PORT, $GW_PUBLIC_PORT)
#   write_agent_conf FILE ROUTES_YAML [GATEWAY_EXTRA_YAML] [TOP_EXTRA_YAML] [IDENTITY_BASENAME=agent]
#   make_trust_store DIR CA_PEM...          a trust store made with `ccrelay trust add`
#   cms_route / pki_route                   route YAML for write_agent_conf
#   start_gateway [NAME=gateway] [CONF]     start and wait until it listens
#   start_agent [NAME=agent] [CONF] [N=1]   start and wait until N tunnels are up
#   stop_ccrelay NAME [OK_STATUSES=0]       SIGTERM, wait; fails on another exit status or a sanitizer report
#   relay_curl OUT HOST PATH CURL_ARGS...   HTTPS call to the gateway's public side as HOST; echoes status
#   GW_PUBLIC_CLIENT_CA=FILE                callers must present a certificate (set before write_gateway_conf)
#   GW_PUBLIC_EXTRA="key: value"            one more key under public: (set before write_gateway_conf)

CCRELAY_BIN=${CCRELAY_BIN:-$CR_SRC/build/asan/ccrelay}
[[ -x $CCRELAY_BIN ]] || fail "ccrelay binary not found at $CCRELAY_BIN (build first, or set CCRELAY_BIN)"
# Leak checking stays on in every ccrelay these tests start; a report fails the test at stop time.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

write_gateway_conf() {
  local file=$1 extra=${2:-}
  GW_TUNNEL_PORT=$(pick_free_port)
  GW_PUBLIC_PORT=$(pick_free_port)
  cat >"$file" <<YAML
log: { level: debug }
tunnel:
  listen: 127.0.0.1:$GW_TUNNEL_PORT
  identity: { cert: $CR_PKI/gateway-tunnel.pem, key: $CR_PKI/gateway-tunnel.key }
  client_ca: $CR_PKI/tunnel-ca.pem
  ping_interval: 1s
  ping_timeout: 2s
public:
  listen: 127.0.0.1:$GW_PUBLIC_PORT
  identity: { cert: $CR_PKI/public.pem, key: $CR_PKI/public.key }
  request_timeout: 20s${GW_PUBLIC_CLIENT_CA:+
  client_ca: $GW_PUBLIC_CLIENT_CA}${GW_PUBLIC_EXTRA:+
  $GW_PUBLIC_EXTRA}
groups:
  - name: acme
    agents: [acme-agent-1]
services:
  - host: cms.example.com
    group: acme
  - host: pki.example.com
    group: acme
drain_timeout: 3s
$extra
YAML
}

# make_trust_store DIR CA_PEM...: a trust store (mode 0700) holding these CAs, made with `ccrelay trust`.
make_trust_store() {
  local dir=$1
  shift
  mkdir -p "$dir"
  chmod 700 "$dir"
  "$CCRELAY_BIN" trust --store "$dir" add "$@" >/dev/null || fail "ccrelay trust add $* into $dir failed"
}

# ROUTES_YAML is the list under `routes:`, indented by two spaces. The agent's trust store is
# $AGENT_TRUST_STORE if set, else $CR_TMP/trust, made on first use with the roots of the test PKI's
# connector identities (client-ca) and upstream servers (upstream-ca).
write_agent_conf() {
  local file=$1 routes=$2 gw_extra=${3:-} top_extra=${4:-} id=${5:-agent}
  local store=${AGENT_TRUST_STORE:-$CR_TMP/trust}
  [[ -d $store ]] || make_trust_store "$store" "$CR_PKI/client-ca.pem" "$CR_PKI/upstream-ca.pem"
  cat >"$file" <<YAML
trust_store: $store
log: { level: debug }
gateway:
  address: 127.0.0.1:$GW_TUNNEL_PORT
  server_name: localhost
  ca: $CR_PKI/tunnel-ca.pem
  identity: { cert: $CR_PKI/$id.pem, key: $CR_PKI/$id.key }
  connections: 2
  ping_interval: 1s
  ping_timeout: 2s
  reconnect_min: 100ms
  reconnect_max: 1s
$gw_extra
routes:
$routes
drain_timeout: 3s
$top_extra
YAML
}

# cms_route NAME PORT [IDENTITY_P12=cms-json-connector.p12] [SERVER_NAME=localhost] [PREFIX=/connector/mdm.cgi]
cms_route() {
  local name=$1 port=$2 p12=${3:-cms-json-connector.p12} sn=${4:-localhost} prefix=${5:-/connector/mdm.cgi}
  cat <<YAML
  - name: $name
    match: { path_prefix: $prefix }
    upstream:
      url: https://127.0.0.1:$port
      server_name: $sn
      ca: $CR_PKI/upstream-ca.pem
      identity: { pkcs12: $CR_PKI/$p12, password_file: $CR_PKI/cms-json-connector.pass }
      connect_timeout: 3s
      response_timeout: 10s
YAML
}

# pki_route NAME PORT
pki_route() {
  local name=$1 port=$2
  cat <<YAML
  - name: $name
    match: { path_prefix: /policyService, methods: [POST] }
    soap: true
    upstream:
      url: https://127.0.0.1:$port
      server_name: localhost
      ca: $CR_PKI/upstream-ca.pem
      identity: { pkcs12: $CR_PKI/pki-soap-connector.p12, password_file: $CR_PKI/pki-soap-connector.pass }
      connect_timeout: 3s
      response_timeout: 10s
YAML
}

start_gateway() {
  local name=${1:-gateway} conf=${2:-$CR_TMP/gateway.yaml}
  start_bg "$name" "$CCRELAY_BIN" gateway -c "$conf"
  wait_for_log "$name" 'msg="gateway listening"' 15
}

start_agent() {
  local name=${1:-agent} conf=${2:-$CR_TMP/agent.yaml} n=${3:-1}
  start_bg "$name" "$CCRELAY_BIN" agent -c "$conf"
  wait_for_tunnels "$name" "$n"
}

# wait_for_tunnels NAME N [TIMEOUT=15]: until NAME has logged N "tunnel up" lines in total.
wait_for_tunnels() {
  local name=$1 n=$2 timeout=${3:-15} i c k
  for ((i = 0; i < timeout * 20; i++)); do
    # "tunnel up" is a debug line once the gateway announced its replicas; at info level each tunnel
    # logs "tunnel covers replica" instead (never both at info: count whichever says more).
    c=$(grep -c 'msg="tunnel up"' "${CR_LOG_OF[$name]}" 2>/dev/null || true)
    k=$(grep -c 'msg="tunnel covers replica"' "${CR_LOG_OF[$name]}" 2>/dev/null || true)
    ((${k:-0} > ${c:-0})) && c=$k
    ((${c:-0} >= n)) && return 0
    alive "${CR_PID_OF[$name]}" || fail "$name exited before $n tunnel(s) came up"
    sleep 0.05
  done
  fail "$name: fewer than $n tunnel(s) up within ${timeout}s"
}

# no_sanitizer_reports LOG: fails when ASan, LSan or UBSan wrote a report into LOG.
no_sanitizer_reports() {
  if grep -Eq 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$1" 2>/dev/null; then
    grep -E -A30 'ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:' "$1" | head -60 >&2
    fail "sanitizer report in $1"
  fi
}

# stop_ccrelay NAME [OK_STATUSES="0"]: graceful stop; the exit status must be one of OK_STATUSES
# (3: the drain cut calls still in flight) and the log free of sanitizer reports (LeakSanitizer runs at
# exit, so this is the leak check of the end-to-end path).
stop_ccrelay() {
  local name=$1 ok=${2:-0} pid=${CR_PID_OF[$1]} rc=0 p keep=()
  if alive "$pid"; then
    kill -TERM "$pid"
  fi
  wait "$pid" || rc=$?
  no_sanitizer_reports "${CR_LOG_OF[$name]}"
  [[ " $ok " == *" $rc "* ]] || fail "$name exited with status $rc after SIGTERM, not ${ok// / or } (see ${CR_LOG_OF[$name]})"
  # Forget the PID so stop_all never signals a number the system may have reused.
  for p in "${CR_PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
  CR_PIDS=("${keep[@]}")
}

# With RELAY_CLIENT set to a PEM base name in $CR_PKI (e.g. cms-admin), the call presents that
# certificate (for gateways whose public side requires one: GW_PUBLIC_CLIENT_CA).
relay_curl() {
  local out=$1 host=$2 path=$3 cert=()
  shift 3
  [[ -z ${RELAY_CLIENT:-} ]] || cert=(--cert "$CR_PKI/$RELAY_CLIENT.pem" --key "$CR_PKI/$RELAY_CLIENT.key")
  curl_status "$out" --cacert "$CR_PKI/public-ca.pem" --resolve "$host:$GW_PUBLIC_PORT:127.0.0.1" \
    "${cert[@]}" "https://$host:$GW_PUBLIC_PORT$path" "$@"
}
