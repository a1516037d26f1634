#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Privileges: started as root, the roles refuse to run unless told (--allow-root or CCRELAY_ALLOW_ROOT=1,
# then they log a warning); an unprivileged user runs them, and binds a port below 1024 only with
# CAP_NET_BIND_SERVICE. `check`, `trust` and `health` never need the flag.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_privileges 120
[[ $(id -u) == 0 ]] || { cr_log "not root: the root refusal cannot be shown here"; cr_pass; exit 0; }
command -v setpriv >/dev/null || fail "setpriv (util-linux) not found"

make_pki
write_gateway_conf "$CR_TMP/gateway.yaml"

# As root without the flag: exit 2 before anything listens, with the way out in the message.
rc=0
out=$(env -u CCRELAY_ALLOW_ROOT "$CCRELAY_BIN" gateway -c "$CR_TMP/gateway.yaml" 2>&1) || rc=$?
assert_eq "$rc" 2 "gateway as root without --allow-root"
assert_contains "$out" "refusing to run as root"
assert_contains "$out" "CAP_NET_BIND_SERVICE"
rc=0
env -u CCRELAY_ALLOW_ROOT "$CCRELAY_BIN" agent -c "$CR_TMP/gateway.yaml" >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 2 "agent as root without --allow-root"
rc=0
env -u CCRELAY_ALLOW_ROOT "$CCRELAY_BIN" check -c "$CR_TMP/gateway.yaml" >/dev/null 2>&1 || rc=$?
assert_eq "$rc" 0 "check as root needs no flag"

# With --allow-root: it runs, and says so.
start_bg gw-root env -u CCRELAY_ALLOW_ROOT "$CCRELAY_BIN" gateway -c "$CR_TMP/gateway.yaml" --allow-root
wait_for_log gw-root 'msg="gateway listening"' 15
assert_file_contains "$(log_of gw-root)" 'msg="running as root"' "a root run is logged"
stop_ccrelay gw-root

# As an unprivileged user (nobody): files readable by it, a port below 1024 refused without the
# capability and granted with it (ambient CAP_NET_BIND_SERVICE, as the systemd unit and Kubernetes give).
chmod 755 "$CR_TMP"
chmod -R a+rX "$CR_PKI"
LOW_PORT=
for p in 981 982 983 984 985 986 987 988; do
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then LOW_PORT=$p; break; fi
done
[[ -n $LOW_PORT ]] || fail "no free port below 1024 on 127.0.0.1"
sed "s/^  listen: 127.0.0.1:$GW_PUBLIC_PORT\$/  listen: 127.0.0.1:$LOW_PORT/" "$CR_TMP/gateway.yaml" >"$CR_TMP/gw-low.yaml"
grep -q "listen: 127.0.0.1:$LOW_PORT" "$CR_TMP/gw-low.yaml" || fail "could not rewrite the public port"
chmod a+r "$CR_TMP/gw-low.yaml"
rc=0
out=$(env -u CCRELAY_ALLOW_ROOT timeout 20 setpriv --reuid 65534 --regid 65534 --clear-groups \
  "$CCRELAY_BIN" gateway -c "$CR_TMP/gw-low.yaml" 2>&1) || rc=$?
assert_ne "$rc" 0 "an unprivileged gateway on port $LOW_PORT without CAP_NET_BIND_SERVICE"
assert_contains "$out" "$LOW_PORT" "the bind failure names the port"
start_bg gw-cap env -u CCRELAY_ALLOW_ROOT setpriv --reuid 65534 --regid 65534 --clear-groups \
  --inh-caps +net_bind_service --ambient-caps +net_bind_service "$CCRELAY_BIN" gateway -c "$CR_TMP/gw-low.yaml"
wait_for_log gw-cap 'msg="gateway listening"' 15
assert_file_lacks "$(log_of gw-cap)" 'running as root' "the capability run is not root"
wait_for_port 127.0.0.1 "$LOW_PORT" 5
stop_ccrelay gw-cap
cr_pass
