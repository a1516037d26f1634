#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Writes the PKI seeds of fuzz_truststore_input and fuzz_identity (tests/fuzz/corpus/<target>/) with
# the openssl CLI: a root and an intermediate CA, a leaf, CRLs, PKCS#12 files (modern and legacy
# algorithms, with and without a password). Keys are fresh on every run, so the files differ each
# time; the committed ones were made once with this script (validity 100 years, no secrets: the
# keys are test keys and the password is the fuzzers' fixed FUZZ_PASSWORD).
#   sh tests/fuzz/make_pki_seeds.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
pw=fuzz-password
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"

cat > ca.cnf <<CNF
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[leaf_ext]
basicConstraints = CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
[ca]
default_ca = the_ca
[the_ca]
database = index.txt
crlnumber = crlnumber
default_md = sha256
default_crl_days = 36500
CNF
touch index.txt
echo 01 > crlnumber

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout root.key -out root.pem \
  -subj "/CN=Fuzz Root CA" -days 36500 -extensions ca_ext -config ca.cnf 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout int.key -out int.csr -subj "/CN=Fuzz Intermediate" 2>/dev/null
openssl x509 -req -in int.csr -CA root.pem -CAkey root.key -CAcreateserial -out int.pem -days 36500 \
  -extfile ca.cnf -extensions ca_ext 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout leaf.key -out leaf.csr -subj "/CN=route.fuzz" 2>/dev/null
openssl x509 -req -in leaf.csr -CA int.pem -CAkey int.key -CAcreateserial -out leaf.pem -days 36500 \
  -extfile ca.cnf -extensions leaf_ext 2>/dev/null
openssl ca -gencrl -config ca.cnf -keyfile root.key -cert root.pem -out root.crl.pem 2>/dev/null
openssl ca -config ca.cnf -keyfile root.key -cert root.pem -revoke int.pem 2>/dev/null || true
openssl ca -gencrl -config ca.cnf -keyfile root.key -cert root.pem -out root-revoked.crl.pem 2>/dev/null

t="$here/corpus/fuzz_truststore_input"
mkdir -p "$t"
cp root.pem "$t/root.pem"
openssl x509 -in root.pem -outform DER -out "$t/root.der"
cat int.pem root.pem > "$t/bundle.pem"
cat leaf.pem int.pem > "$t/chain.pem"
cp root.crl.pem "$t/crl.pem"
openssl crl -in root-revoked.crl.pem -outform DER -out "$t/crl-revoked.der"
cat leaf.key root.pem > "$t/key-and-cert.pem"
cat int.pem root.pem > cas.pem
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -certfile cas.pem -passout pass:$pw -out "$t/identity-cas.p12"
openssl pkcs12 -export -nokeys -in root.pem -passout pass: -out "$t/cas-only-nopass.p12"
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -passout pass:$pw -legacy -out "$t/identity-legacy.p12"

i="$here/corpus/fuzz_identity"
mkdir -p "$i"
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -certfile cas.pem -passout pass:$pw -out "$i/aes-chain.p12"
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -passout pass:$pw -legacy -out "$i/legacy.p12"
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -passout pass:$pw -nomac -out "$i/nomac.p12"
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -passout pass:$pw -keypbe NONE -certpbe NONE -out "$i/unencrypted.p12"
openssl pkcs12 -export -nokeys -in leaf.pem -passout pass:$pw -out "$i/no-key.p12"
openssl pkcs12 -export -in leaf.pem -inkey leaf.key -passout pass:wrong -out "$i/wrong-password.p12"
