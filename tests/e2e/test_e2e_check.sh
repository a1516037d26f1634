#!/usr/bin/env bash
# `ccrelay check` accepts the annotated samples and refuses, with exit 2 and file:line:col, an
# unknown key, a wrong type, a missing file and a wrong PKCS#12 password. Also the CLI's usage and
# exit codes.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_check 60

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
