#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `ccrelay trust`: add a PEM bundle, a DER file and PKCS#12 files (modern and legacy); list --json
# shows them; duplicates are idempotent; remove by prefix; a leaf, an expired root and garbage are
# refused with distinct messages; verify prints the chain or OpenSSL's reason; -c agent.yaml finds
# the store; usage errors exit 2. Then a full file system: a 64 KiB tmpfs when mount is permitted
# (as root), otherwise an LD_PRELOAD write shim (tests/e2e/enospc_shim.c); the test logs which one
# ran. Either way the add exits 1 with "No space left on device", the store stays byte-identical and
# no temporary file is left, also when the failure hits the second certificate of a bundle.
# CR_TRUST_FORCE_SHIM=1 uses the shim even where mount works.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_trust_cli 120

FULL=""
trap 'rc=$?; [[ -z $FULL ]] || umount "$FULL" 2>/dev/null || true; (exit $rc); cr_on_exit' EXIT

make_pki
P=$CR_PKI
S=$CR_TMP/store
T=$CR_TMP/t
mkdir -p "$T"

trust() { "$CCRELAY_BIN" trust "$@"; }

# run_trust NAME ARGS...: run, stdout to $T/NAME.out, stderr to $T/NAME.err; sets RC.
run_trust() {
  local name=$1
  shift
  RC=0
  trust "$@" >"$T/$name.out" 2>"$T/$name.err" || RC=$?
}

# A fingerprint of the store's content: names, modes and bytes of every entry, dot files included.
snapshot() {
  (cd "$1" && find . -mindepth 1 -printf '%p %m %s\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z |
    xargs -0 -r sha256sum)
}

json_certs() { # FILE: "subject kind" lines of list --json output
  "$CR_PY" -c 'import json, sys
d = json.load(open(sys.argv[1]))
for c in d["certificates"]:
    print("%s|%s|%s|%s" % (c["subject"], c["kind"], c["fingerprint"], c["expired"]))' "$1"
}

# ---- add: PEM bundle, DER, PKCS#12 ----
cat "$P/tunnel-ca.pem" "$P/upstream-ca.pem" >"$T/bundle.pem"
run_trust add-bundle --store "$S" add "$T/bundle.pem"
assert_eq "$RC" 0 "add of a PEM bundle"
assert_eq "$(grep -c '^added ' "$T/add-bundle.out")" 2 "bundle: two certificates added"
assert_file_contains "$T/add-bundle.out" 'certificate 2 of 2'
assert_eq "$(stat -c %a "$S")" 700 "the store is created 0700"
openssl x509 -in "$P/other-ca.pem" -outform DER -out "$T/other-ca.der"
run_trust add-der --store "$S" add "$T/other-ca.der"
assert_eq "$RC" 0 "add of a DER file"
run_trust add-p12 --store "$S" add --password-file "$P/cms-json-connector.pass" "$P/cms-json-connector.p12"
assert_eq "$RC" 0 "add of a PKCS#12 file"
assert_file_contains "$T/add-p12.out" '^added .*CN=OpenTrust Test CA'
run_trust add-p12-legacy --store "$S" add --password-file "$P/cms-json-connector.pass" \
  "$P/cms-json-connector-legacy.p12"
assert_eq "$RC" 0 "add of a legacy PKCS#12 file"
assert_file_contains "$T/add-p12-legacy.out" '^already trusted .*CN=OpenTrust Test CA'
run_trust add-p12-nopass --store "$S" add "$P/cms-json-connector.p12"
assert_eq "$RC" 1 "PKCS#12 without its password"
assert_file_contains "$T/add-p12-nopass.err" 'wrong PKCS#12 password.*--password-file'

# ---- list --json ----
run_trust list-json --store "$S" list --json
assert_eq "$RC" 0 "list --json"
json_certs "$T/list-json.out" >"$T/certs.txt"
assert_eq "$(wc -l <"$T/certs.txt")" 4 "four certificates listed"
for cn in "ccrelay Test Tunnel CA" "ccrelay Test Upstream CA" "ccrelay Test Unrelated CA" "OpenTrust Test CA"; do
  assert_file_contains "$T/certs.txt" "CN=$cn.*\\|root\\|[0-9a-f]{64}\\|False"
done
run_trust list-table --store "$S" list
assert_file_contains "$T/list-table.out" '^4 certificates, 0 CRLs in '

# ---- duplicates are idempotent ----
before=$(snapshot "$S")
run_trust add-again --store "$S" add "$T/bundle.pem" "$T/other-ca.der"
assert_eq "$RC" 0 "adding present certificates"
assert_eq "$(grep -c '^already trusted ' "$T/add-again.out")" 3 "all reported as already trusted"
assert_eq "$(snapshot "$S")" "$before" "duplicates change nothing"

# ---- refusals: a leaf, an expired root, garbage: distinct messages, nothing written ----
"$CR_PY" - "$T/expired-root.pem" <<'PY'
import datetime, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
key = ec.generate_private_key(ec.SECP256R1())
name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ccrelay Test Expired Root")])
now = datetime.datetime.now(datetime.timezone.utc)
cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=400)).not_valid_after(now - datetime.timedelta(days=5))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
open(sys.argv[1], "wb").write(cert.public_bytes(serialization.Encoding.PEM))
PY
printf 'this is not a certificate\n' >"$T/garbage.txt"
run_trust refuse-leaf --store "$S" add "$P/cms-server.pem"
assert_eq "$RC" 1 "a leaf is refused"
assert_file_contains "$T/refuse-leaf.err" 'cms-server\.pem: .* is not a CA certificate \(basicConstraints CA:FALSE\); add its issuing root instead'
run_trust refuse-expired --store "$S" add "$T/expired-root.pem"
assert_eq "$RC" 1 "an expired root is refused"
assert_file_contains "$T/refuse-expired.err" 'CN=ccrelay Test Expired Root has expired .*--force'
run_trust refuse-garbage --store "$S" add "$T/garbage.txt"
assert_eq "$RC" 1 "garbage is refused"
assert_file_contains "$T/refuse-garbage.err" "no certificate found in $T/garbage.txt \\(expected PEM, DER or PKCS#12\\)"
assert_ne "$(cat "$T/refuse-leaf.err")" "$(cat "$T/refuse-expired.err")" "leaf and expired messages differ"
assert_ne "$(cat "$T/refuse-leaf.err")" "$(cat "$T/refuse-garbage.err")" "leaf and garbage messages differ"
assert_ne "$(cat "$T/refuse-expired.err")" "$(cat "$T/refuse-garbage.err")" "expired and garbage messages differ"
# a bundle with one bad member writes nothing at all
cat "$P/issuing-ca.pem" "$P/cms-server.pem" >"$T/mixed.pem"
run_trust refuse-mixed --store "$S" add "$T/mixed.pem"
assert_eq "$RC" 1 "a bundle holding a leaf is refused"
assert_file_contains "$T/refuse-mixed.err" 'mixed\.pem, certificate 2 of 2: '
assert_eq "$(snapshot "$S")" "$before" "refusals change nothing"
run_trust force-expired --store "$S" add --force "$T/expired-root.pem"
assert_eq "$RC" 0 "an expired root with --force"
assert_file_contains "$T/force-expired.err" 'warning: .* has expired'

# ---- remove by prefix ----
fp=$(grep 'CN=ccrelay Test Unrelated CA' "$T/certs.txt" | cut -d'|' -f3)
run_trust remove --store "$S" remove "${fp:0:10}"
assert_eq "$RC" 0 "remove by prefix"
assert_file_contains "$T/remove.out" "^removed $fp\$"
[[ ! -e $S/$fp.pem ]] || fail "the removed file is still there"
run_trust remove-again --store "$S" remove "${fp:0:10}"
assert_eq "$RC" 1 "removing it twice"
assert_file_contains "$T/remove-again.err" 'no certificate or CRL .* starting with'

# ---- verify: the chain, or OpenSSL's reason ----
run_trust verify-p12 --store "$S" verify --password-file "$P/cms-json-connector.pass" "$P/cms-json-connector.p12"
assert_eq "$RC" 0 "verify of the CMS identity"
assert_file_contains "$T/verify-p12.out" 'OK, chain of 2 certificates'
assert_file_contains "$T/verify-p12.out" '^  1  CN=OpenTrust Test CA.*trusted root'
run_trust verify-expired --store "$S" verify "$P/upstream-expired.pem"
assert_eq "$RC" 1 "verify of an expired certificate"
assert_file_contains "$T/verify-expired.err" 'verification failed: certificate has expired \(depth 0'
run_trust verify-unknown --store "$S" verify "$P/upstream-unknownca.pem"
assert_eq "$RC" 1 "verify of a certificate from a CA that is not trusted"
assert_file_contains "$T/verify-unknown.err" 'unable to get local issuer certificate'
run_trust verify-purpose --store "$S" verify --purpose client "$P/cms-server.pem"
assert_eq "$RC" 1 "verify for the wrong purpose"
assert_file_contains "$T/verify-purpose.err" 'unsuitable certificate purpose'

# ---- -c agent.yaml finds the store ----
GW_TUNNEL_PORT=1
AGENT_TRUST_STORE=$S write_agent_conf "$T/agent.yaml" "$(cms_route cms 2)"
run_trust conf-list -c "$T/agent.yaml" list --json
assert_eq "$RC" 0 "list through the agent config"
assert_eq "$(json_certs "$T/conf-list.out" | wc -l)" 4 "the same store through -c"

# ---- usage ----
run_trust usage-none --store "$S"
assert_eq "$RC" 2 "no trust command"
run_trust usage-unknown --store "$S" frobnicate
assert_eq "$RC" 2 "unknown trust command"
run_trust usage-remove --store "$S" remove
assert_eq "$RC" 2 "remove without a fingerprint"
run_trust usage-json --store "$S" add --json "$T/bundle.pem"
assert_eq "$RC" 2 "an option the command does not take"
"$CCRELAY_BIN" trust --help | grep -q 'usage: ccrelay trust' || fail "trust --help"
"$CCRELAY_BIN" --help | grep -q 'trust \[--store DIR' || fail "ccrelay --help names trust"
# a group-writable store is refused
mkdir -m 0770 "$CR_TMP/loose"
chmod 0770 "$CR_TMP/loose"
run_trust loose --store "$CR_TMP/loose" list
assert_eq "$RC" 1 "a group-writable store"
assert_file_contains "$T/loose.err" 'group-writable.*chmod go-w'

# ---- a full file system ----
FS=$CR_TMP/fs
mkdir -p "$FS"
method=shim
if [[ ${CR_TRUST_FORCE_SHIM:-0} != 1 ]] && mount -t tmpfs -o size=64k,mode=0700 tmpfs "$FS" 2>/dev/null; then
  FULL=$FS
  method=tmpfs
fi
FS_STORE=$FS/store
run_trust fs-seed --store "$FS_STORE" add "$P/tunnel-ca.pem"
assert_eq "$RC" 0 "seeding the store on the small file system"
cat "$P/upstream-ca.pem" "$P/issuing-ca.pem" >"$T/two.pem"
if [[ $method == tmpfs ]]; then
  cr_log "full file system: a 64 KiB tmpfs at $FS"
  # Keep one page in reserve while filling, then free it: the bundle's first file fits, the second does not.
  head -c 4096 /dev/zero >"$FS/reserve"
  dd if=/dev/zero of="$FS/filler" bs=4096 2>/dev/null || true
  rm -f "$FS/reserve"
  enospc() { trust "$@"; }
else
  cr_log "full file system: mount not permitted, using the LD_PRELOAD write shim"
  cc -shared -fPIC -o "$T/enospc.so" "$CR_SRC/tests/e2e/enospc_shim.c" -ldl || fail "cannot build the shim"
  first=$(openssl x509 -in "$P/upstream-ca.pem" | wc -c)
  enospc() {
    CCRELAY_ENOSPC_AFTER=$first LD_PRELOAD=$T/enospc.so \
      ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0" trust "$@"
  }
fi
before=$(snapshot "$FS_STORE")
RC=0
enospc --store "$FS_STORE" add "$T/two.pem" >"$T/enospc-two.out" 2>"$T/enospc-two.err" || RC=$?
assert_eq "$RC" 1 "add on a full file system ($method)"
assert_file_contains "$T/enospc-two.err" 'No space left on device'
assert_file_contains "$T/enospc-two.err" 'the store is unchanged'
# the failure hit the bundle's second certificate, after the first had been written (then rolled back)
second=$(openssl x509 -in "$P/issuing-ca.pem" -outform DER | sha256sum | cut -d' ' -f1)
assert_file_contains "$T/enospc-two.err" "cannot write .*/$second\.pem: No space left on device"
assert_eq "$(snapshot "$FS_STORE")" "$before" "the store is byte-identical after ENOSPC midway ($method)"
[[ -z $(find "$FS_STORE" -name '.tmp-*') ]] || fail "a temporary file was left behind"
if [[ $method == tmpfs ]]; then
  dd if=/dev/zero of="$FS/filler2" bs=1024 2>/dev/null || true # not even one page left now
else
  first=0
fi
RC=0
enospc --store "$FS_STORE" add "$P/issuing-ca.pem" >"$T/enospc-one.out" 2>"$T/enospc-one.err" || RC=$?
assert_eq "$RC" 1 "add of one certificate on a full file system ($method)"
assert_file_contains "$T/enospc-one.err" 'No space left on device'
assert_eq "$(snapshot "$FS_STORE")" "$before" "the store is byte-identical after ENOSPC ($method)"
[[ -z $(find "$FS_STORE" -name '.tmp-*') ]] || fail "a temporary file was left behind"
cr_log "full file system checks passed with: $method"

cr_pass
