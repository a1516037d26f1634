#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# A trust-store reload never turns one bad file into an outage (issue 16, finding 5):
#  A. a truncated PEM, a stray non-certificate file and a FIFO, all under store names, dropped into
#     the store of a running agent: calls on a store-verified route and on a route with its own
#     `ca:` keep succeeding; the log and /status name each bad file and why; a README is ignored;
#  B. while the bad files are there, a root added with `ccrelay trust add` takes effect;
#  C. the truncated root completed by hand and the others removed: the route on that root becomes
#     usable, /status lists no bad file, and a root added after that takes effect too;
#  D. a store directory that turns group-writable is refused on reload and the last good state kept.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_trust_reload 240

make_pki
P=$CR_PKI
tool() { "$CR_PY" "$CR_SRC/tests/lib/pkitool.py" "$@"; }
pass=$(cat "$P/cms-json-connector.pass")
mkca() { # NAME CN: a self-signed CA in $CR_TMP
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$CR_TMP/$1.key" \
    -out "$CR_TMP/$1.pem" -subj "/O=ccrelay tests/CN=$2" -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}
fp_of() { openssl x509 -in "$1" -outform DER | sha256sum | cut -c1-64; }
# Roots not in the store at start: the operator's hand copy (late) and a root added later (later).
mkca late-ca "late root"
mkca later-ca "later root"
mkca new-ca "new root"
tool issue "$CR_TMP/late-ca.pem" "$CR_TMP/late-ca.key" "$CR_TMP/late-id" --cn "late client" --client --p12-pass="$pass"
tool issue "$CR_TMP/later-ca.pem" "$CR_TMP/later-ca.key" "$CR_TMP/later-id" --cn "later client" --client --p12-pass="$pass"
tool issue "$CR_TMP/new-ca.pem" "$CR_TMP/new-ca.key" "$CR_TMP/new-id" --cn "new client" --client --p12-pass="$pass"
cat "$CR_TMP/late-ca.pem" "$CR_TMP/later-ca.pem" "$CR_TMP/new-ca.pem" >"$CR_TMP/extra-cas.pem"

start_cms_sim
start_sim extrasim cms_sim.py --cert "$P/cms-server.pem" --key "$P/cms-server.key" --client-ca "$CR_TMP/extra-cas.pem"
EXTRA_PORT=$SIM_PORT

write_gateway_conf "$CR_TMP/gateway.yaml"
start_gateway

store_route() { # NAME PORT P12 PREFIX: upstream verified by the trust store (no ca:)
  cat <<YAML
  - name: $1
    match: { path_prefix: $4 }
    upstream:
      url: https://127.0.0.1:$2
      server_name: localhost
      identity: { pkcs12: $3, password_file: $P/cms-json-connector.pass }
      connect_timeout: 3s
      response_timeout: 10s
YAML
}
pinned_route() { # NAME PORT PREFIX: upstream pinned to its own ca:
  cat <<YAML
  - name: $1
    match: { path_prefix: $3 }
    upstream:
      url: https://127.0.0.1:$2
      server_name: localhost
      ca: $P/upstream-ca.pem
      identity: { pkcs12: $P/cms-json-connector.p12, password_file: $P/cms-json-connector.pass }
      connect_timeout: 3s
      response_timeout: 10s
YAML
}
call() { # OUT PATH -> status
  relay_curl "$CR_TMP/$1" cms.example.com "$2" -H 'Content-Type: application/json' -d '{"action":"test"}'
}
reloads() { grep -c 'msg="trust store reloaded"' "$(log_of agent)" || true; }
wait_reload() { # BEFORE: until the agent has reloaded more than BEFORE times (at most 5 s)
  local i
  for ((i = 0; i < 100; i++)); do
    (($(reloads) > $1)) && return 0
    sleep 0.05
  done
  fail "the agent did not reload its trust store within 5 s"
}
status() { curl -sS --max-time 5 "http://127.0.0.1:$ADMIN_PORT/status"; }
bad_files() { # the file names /status lists as left out, one per line
  status | "$CR_PY" -c 'import json,sys,os
for b in json.load(sys.stdin)["trust_store"]["bad_files"]: print(os.path.basename(b["file"]), b["why"])'
}
# reaches_extra TAG ROUTE: a call through ROUTE reaches the extra simulator (its 404 for the path).
reaches_extra() {
  assert_eq "$(call "$1" "/$2/x")" 404 "$2: the call reaches its upstream"
  assert_file_contains "$CR_TMP/$1" "no such path: /$2/x" "$2: the answer is the simulator's"
}
both_routes_work() { # TAG
  assert_eq "$(call "$1-store" /connector/mdm.cgi)" 200 "$1: the store-verified route"
  assert_eq "$(call "$1-pinned" /test/slow?ms=1)" 200 "$1: the route with its own ca:"
}

S=$CR_TMP/store
make_trust_store "$S" "$P/client-ca.pem" "$P/upstream-ca.pem"
ADMIN_PORT=$(pick_free_port)
AGENT_TRUST_STORE=$S write_agent_conf "$CR_TMP/agent.yaml" "$(store_route cms "$CMS_PORT" "$P/cms-json-connector.p12" /connector/mdm.cgi)
$(pinned_route pinned "$CMS_PORT" /test/)
$(store_route late "$EXTRA_PORT" "$CR_TMP/late-id.p12" /late/)
$(store_route later "$EXTRA_PORT" "$CR_TMP/later-id.p12" /later/)
$(store_route new "$EXTRA_PORT" "$CR_TMP/new-id.p12" /new/)" "" "admin: { listen: 127.0.0.1:$ADMIN_PORT }"
start_agent agent "$CR_TMP/agent.yaml"
both_routes_work start
for r in late later new; do
  assert_file_contains "$(log_of agent)" "msg=\"route refused\" route=$r .*does not chain to a trusted root"
  assert_eq "$(call "start-$r" "/$r/x")" 503 "$r: its root is not in the store yet"
done

# ---- A: bad files dropped into the store of the running agent ---------------------------------
late_name=$(fp_of "$CR_TMP/late-ca.pem").pem
stray_name=$(printf 'stray' | sha256sum | cut -c1-64).pem
fifo_name=$(printf 'fifo' | sha256sum | cut -c1-64).pem
n=$(reloads)
head -c 200 "$CR_TMP/late-ca.pem" >"$S/$late_name" # a hand copy cut short
chmod 644 "$S/$late_name"
printf 'these are the roots we trust, see the wiki\n' >"$S/$stray_name"
chmod 644 "$S/$stray_name"
printf 'notes\n' >"$S/README"
mkfifo -m 644 "$S/$fifo_name"
wait_reload "$n"
# The burst of events may take two reloads; let the last one land.
sleep 0.3
both_routes_work bad
for f in "$late_name" "$stray_name" "$fifo_name"; do
  wait_for_log agent "msg=\"trust store file left out\" dir=[^ ]+ file=[^ ]*$f reason=" 5
done
assert_file_contains "$(log_of agent)" "file=[^ ]*$late_name reason=\"does not parse as a PEM certificate"
assert_file_contains "$(log_of agent)" "file=[^ ]*$fifo_name reason=\"not a regular file"
assert_file_lacks "$(log_of agent)" 'file=[^ ]*README' "a README is not a store file"
bad_files >"$CR_TMP/bad-a"
assert_eq "$(wc -l <"$CR_TMP/bad-a")" 3 "three bad files in /status"
for f in "$late_name" "$stray_name" "$fifo_name"; do
  assert_file_contains "$CR_TMP/bad-a" "^$f "
done
reported=$(status | "$CR_PY" -c 'import json,sys; print(json.load(sys.stdin)["trust_store"]["bad_files_reported"])')
assert_eq "$reported" 3 "bad files counted once each"
# More reloads do not report them again.
n=$(reloads)
kill -HUP "$(pid_of agent)"
wait_reload "$n"
reported=$(status | "$CR_PY" -c 'import json,sys; print(json.load(sys.stdin)["trust_store"]["bad_files_reported"])')
assert_eq "$reported" 3 "a reload does not count the same bad file again"
assert_eq "$(grep -c "msg=\"trust store file left out\" .*file=[^ ]*$late_name" "$(log_of agent)")" 1 "logged once"
both_routes_work hup
assert_eq "$(call bad-late /late/x)" 503 "late: its root is only in a truncated file"
assert_file_contains "$CR_TMP/bad-late" "left out"

# ---- B: a root added while the bad files are still there takes effect -------------------------
"$CCRELAY_BIN" trust --store "$S" add "$CR_TMP/later-ca.pem" >/dev/null
wait_for_log agent 'msg="route ready" route=later .*trigger=(file_change|SIGHUP)' 5
reaches_extra b-later later
both_routes_work b

# ---- C: fix the hand copy, remove the rest; a root added afterwards takes effect --------------
cp "$CR_TMP/late-ca.pem" "$S/.fix" && chmod 644 "$S/.fix" && mv "$S/.fix" "$S/$late_name"
rm -f "$S/$stray_name" "$S/$fifo_name"
wait_for_log agent 'msg="route ready" route=late ' 5
reaches_extra c-late late
wait_for_log agent "msg=\"trust store file no longer left out\" .*file=[^ ]*$stray_name" 5
for ((i = 0; i < 40; i++)); do
  [[ -z $(bad_files) ]] && break
  sleep 0.05
done
assert_eq "$(bad_files)" "" "no bad file in /status"
"$CCRELAY_BIN" trust --store "$S" add "$CR_TMP/new-ca.pem" >/dev/null
wait_for_log agent 'msg="route ready" route=new ' 5
reaches_extra c-new new
both_routes_work c

# ---- D: the directory turns group-writable: refused, the last good state kept ------------------
chmod 770 "$S"
kill -HUP "$(pid_of agent)"
wait_for_log agent 'msg="trust store reload failed; keeping the last good state" .*group-writable' 5
both_routes_work d
reaches_extra d-late late
err=$(status | "$CR_PY" -c 'import json,sys; t=json.load(sys.stdin)["trust_store"]; print(t["error"], t["reloads_kept_last_good"])')
assert_contains "$err" "group-writable" "/status says why the reload failed"
chmod 700 "$S"
n=$(reloads)
kill -HUP "$(pid_of agent)"
wait_reload "$n"
err=$(status | "$CR_PY" -c 'import json,sys; print(json.load(sys.stdin)["trust_store"]["error"])')
assert_eq "$err" "" "the error clears once the store is fine"
both_routes_work d2

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
