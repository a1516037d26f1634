#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `ccrelay check` accepts the annotated samples and refuses, with exit 2 and file:line:col, an
# unknown key, a wrong type, a missing file and a wrong PKCS#12 password. Also the CLI's usage and
# exit codes. And what the roles validate at start (issue 16, finding 6): a FIFO as the config or as
# a password_file is refused at once (never read), a group-writable or corrupt trust store, an
# expired tunnel identity (agent and gateway) and a route identity that does not chain to the store
# are errors, and `ccrelay agent` refuses the expired identity with the same message.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_check 120

# The samples, with the throwaway files they name, in a copy of config/.
cp -r "$CR_SRC/config" "$CR_TMP/config"
rm -rf "$CR_TMP/config/certs" "$CR_TMP/config/secrets"
bash "$CR_TMP/config/make-sample-certs.sh" >/dev/null
"$CCRELAY_BIN" check -c "$CR_TMP/config/agent.yaml" || fail "check refused config/agent.yaml"
"$CCRELAY_BIN" check -c "$CR_TMP/config/gateway.yaml" || fail "check refused config/gateway.yaml"

expect_refusal() { # NAME REGEX: check the file $CR_TMP/config/NAME.yaml, want exit 2 and REGEX on stderr
  local rc=0
  "$CCRELAY_BIN" check -c "$CR_TMP/config/$1.yaml" >"$CR_TMP/$1.out" 2>"$CR_TMP/$1.err" || rc=$?
  assert_eq "$rc" 2 "$1: exit status"
  assert_file_contains "$CR_TMP/$1.err" "$2" "$1: message"
}

a=$CR_TMP/config/agent.yaml
# Unknown key (a typo), reported where it stands with a suggestion.
sed 's/^  connections: 2/  conections: 2/' "$a" >"$CR_TMP/config/unknown.yaml"
line=$(grep -n '^  conections:' "$CR_TMP/config/unknown.yaml" | cut -d: -f1)
expect_refusal unknown "unknown\.yaml:$line:3: gateway\.conections: .*connections"
# Wrong type.
sed 's/^  connections: 2/  connections: [2]/' "$a" >"$CR_TMP/config/wrongtype.yaml"
line=$(grep -n '^  connections:' "$CR_TMP/config/wrongtype.yaml" | cut -d: -f1)
expect_refusal wrongtype "wrongtype\.yaml:$line:[0-9]+: gateway\.connections: "
# Missing file.
sed 's#pkcs12: certs/cms-json-connector.p12#pkcs12: certs/no-such.p12#' "$a" >"$CR_TMP/config/missing.yaml"
line=$(grep -n 'no-such.p12' "$CR_TMP/config/missing.yaml" | cut -d: -f1)
expect_refusal missing "missing\.yaml:$line:[0-9]+: routes\[0\]\.upstream\.identity\.pkcs12: .*no-such\.p12"
# Wrong PKCS#12 password.
printf 'not-the-password\n' >"$CR_TMP/config/secrets/wrong.pass"
sed 's#password_file: secrets/cms-json-connector.pass#password_file: secrets/wrong.pass#' "$a" >"$CR_TMP/config/wrongpw.yaml"
line=$(grep -n 'pkcs12: certs/cms-json-connector.p12' "$CR_TMP/config/wrongpw.yaml" | cut -d: -f1)
expect_refusal wrongpw "wrongpw\.yaml:$line:[0-9]+: routes\[0\]\.upstream\.identity: .*password"
assert_file_lacks "$CR_TMP/wrongpw.err" 'not-the-password' "the password is never printed"

# ---- what the roles validate at start ----------------------------------------------------------
# expect_quick_refusal NAME FILE REGEX: check FILE; exit 2 within a second and REGEX on stderr. The
# timeout turns a regression (a read blocked on a FIFO) into a failure instead of a hang.
expect_quick_refusal() {
  local rc=0 t0 ms
  t0=$(date +%s%N)
  timeout 10 "$CCRELAY_BIN" check -c "$2" >"$CR_TMP/$1.out" 2>"$CR_TMP/$1.err" || rc=$?
  ms=$((($(date +%s%N) - t0) / 1000000))
  assert_eq "$rc" 2 "$1: exit status (124 means check hung)"
  ((ms < 1000)) || fail "$1: check took ${ms} ms"
  assert_file_contains "$CR_TMP/$1.err" "$3" "$1: message"
}
mkfifo "$CR_TMP/config/fifo.yaml"
expect_quick_refusal fifo-config "$CR_TMP/config/fifo.yaml" 'fifo\.yaml:1:1: .*fifo\.yaml is a FIFO, not a regular file'
mkfifo "$CR_TMP/config/secrets/fifo.pass"
sed 's#password_file: secrets/cms-json-connector.pass#password_file: secrets/fifo.pass#' "$a" >"$CR_TMP/config/fifopw.yaml"
line=$(grep -n 'password_file: secrets/fifo.pass' "$CR_TMP/config/fifopw.yaml" | cut -d: -f1)
expect_quick_refusal fifo-password "$CR_TMP/config/fifopw.yaml" \
  "fifopw\.yaml:$line:[0-9]+: routes\[0\]\.upstream\.identity\.password_file: .*fifo\.pass is a FIFO, not a regular file"
rc=0; timeout 10 "$CCRELAY_BIN" agent -c "$CR_TMP/config/fifopw.yaml" >/dev/null 2>"$CR_TMP/fifopw-agent.err" || rc=$?
assert_eq "$rc" 2 "agent with a FIFO password_file"
assert_file_contains "$CR_TMP/fifopw-agent.err" 'fifo\.pass is a FIFO, not a regular file'

tline=$(grep -n '^trust_store:' "$a" | cut -d: -f1)
# A group-writable trust store.
cp -a "$CR_TMP/config/trust" "$CR_TMP/config/trust-gw"
chmod 770 "$CR_TMP/config/trust-gw"
sed 's#^trust_store: trust#trust_store: trust-gw#' "$a" >"$CR_TMP/config/storegw.yaml"
expect_refusal storegw "storegw\.yaml:$tline:[0-9]+: trust_store: trust store .*trust-gw is group-writable"
# A corrupt file in the trust store (a certificate cut short, under its store name).
cp -a "$CR_TMP/config/trust" "$CR_TMP/config/trust-bad"
good=$(ls "$CR_TMP/config/trust-bad"/*.pem | head -1)
bad=$CR_TMP/config/trust-bad/$(openssl x509 -in "$CR_TMP/config/certs/tunnel-ca.pem" -outform DER | sha256sum | cut -c1-64).pem
head -c 300 "$CR_TMP/config/certs/tunnel-ca.pem" >"$bad"
chmod 644 "$bad"
sed 's#^trust_store: trust#trust_store: trust-bad#' "$a" >"$CR_TMP/config/storebad.yaml"
expect_refusal storebad "storebad\.yaml:$tline:[0-9]+: trust_store: .*$(basename "$bad") does not parse as a PEM certificate"
# A store that lacks the root of a route's identity (the sample's pki-soap route has no ca:).
mkdir -m 700 "$CR_TMP/config/trust-other"
"$CCRELAY_BIN" trust --store "$CR_TMP/config/trust-other" add "$CR_TMP/config/certs/tunnel-ca.pem" >/dev/null
sed 's#^trust_store: trust#trust_store: trust-other#' "$a" >"$CR_TMP/config/storeother.yaml"
pline=$(grep -n 'pkcs12: certs/pki-soap-connector.p12' "$CR_TMP/config/storeother.yaml" | cut -d: -f1)
expect_refusal storeother \
  "storeother\.yaml:$pline:[0-9]+: routes\[1\]\.upstream\.identity: client identity .* does not chain to a trusted root"
assert_file_lacks "$CR_TMP/storeother.err" 'routes\[0\]' "the route with its own ca: does not depend on the store"
[[ -n $good ]] || fail "the sample trust store is empty"

# An expired tunnel identity, made now: the agent's, then the gateway's.
"$CR_PY" "$CR_SRC/tests/lib/pkitool.py" issue "$CR_TMP/config/certs/tunnel-ca.pem" "$CR_TMP/config/certs/tunnel-ca.key" \
  "$CR_TMP/config/certs/agent-expired" --cn acme-agent-1 --client --start-days -3 --days 1
sed 's#cert: certs/agent.pem#cert: certs/agent-expired.pem#; s#key: certs/agent.key#key: certs/agent-expired.key#' "$a" \
  >"$CR_TMP/config/agentexp.yaml"
line=$(grep -n 'cert: certs/agent-expired.pem' "$CR_TMP/config/agentexp.yaml" | cut -d: -f1)
expect_refusal agentexp "agentexp\.yaml:$line:[0-9]+: gateway\.identity: certificate .*CN=acme-agent-1.* in .*agent-expired\.pem expired at "
msg=$(sed -n 's/^[^ ]*: gateway\.identity: //p' "$CR_TMP/agentexp.err")
rc=0; timeout 10 "$CCRELAY_BIN" agent -c "$CR_TMP/config/agentexp.yaml" >/dev/null 2>"$CR_TMP/agentexp-run.err" || rc=$?
assert_ne "$rc" 0 "the agent refuses to start with an expired tunnel identity"
assert_ne "$rc" 124 "the agent did not exit"
grep -qF -- "$msg" "$CR_TMP/agentexp-run.err" || fail "the agent's refusal is not check's message: $msg"
"$CR_PY" "$CR_SRC/tests/lib/pkitool.py" issue "$CR_TMP/config/certs/tunnel-ca.pem" "$CR_TMP/config/certs/tunnel-ca.key" \
  "$CR_TMP/config/certs/gw-expired" --cn tunnel.example.com --server --dns localhost --start-days -3 --days 1
g=$CR_TMP/config/gateway.yaml
sed 's#cert: certs/gateway-tunnel.pem#cert: certs/gw-expired.pem#; s#key: certs/gateway-tunnel.key#key: certs/gw-expired.key#' "$g" \
  >"$CR_TMP/config/gwexp.yaml"
line=$(grep -n 'cert: certs/gw-expired.pem' "$CR_TMP/config/gwexp.yaml" | cut -d: -f1)
expect_refusal gwexp "gwexp\.yaml:$line:[0-9]+: tunnel\.identity: certificate .* in .*gw-expired\.pem expired at "

# CLI: usage and exit codes.
"$CCRELAY_BIN" --help | grep -q 'usage: ccrelay' || fail "--help"
version=$("$CCRELAY_BIN" version) || fail "version"
# The revision and every library it runs with, for supply-chain reviews.
for want in '^ccrelay [0-9.]+ \(revision [0-9a-f]' 'OpenSSL 3\.' 'libuv [0-9]' 'nghttp2 [0-9]' 'llhttp [0-9]' 'libyaml [0-9]'; do
  grep -Eq "$want" <<<"$version" || fail "ccrelay version lacks $want: $version"
done
rc=0; "$CCRELAY_BIN" frobnicate 2>/dev/null || rc=$?
assert_eq "$rc" 2 "unknown command"
rc=0; "$CCRELAY_BIN" agent 2>/dev/null || rc=$?
assert_eq "$rc" 2 "agent without -c"
rc=0; "$CCRELAY_BIN" agent -c "$CR_TMP/config/unknown.yaml" 2>/dev/null || rc=$?
assert_eq "$rc" 2 "agent with a bad config"
cr_pass
