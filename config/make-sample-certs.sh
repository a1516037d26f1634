#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Generates the throwaway certificates, keys, PKCS#12 files and password files that the sample
# configurations (config/agent.yaml, config/gateway.yaml) name, so that
#   ccrelay check -c config/agent.yaml && ccrelay check -c config/gateway.yaml
# pass on a fresh checkout. Output goes to config/certs/ and config/secrets/, and the agent's sample
# trust store (agent.yaml: trust_store) to config/trust/ (all three gitignored).
#
# THESE ARE FOR TRYING THE SAMPLES ONLY: every key is created here, in the clear, on this machine.
# In production the tunnel CA is yours, and the connector identities come from your CMS and PKI.
#
# Usage: config/make-sample-certs.sh [-f]    -f: regenerate even if the files already exist
#        CCRELAY_SAMPLE_DIR=/etc/ccrelay /usr/share/ccrelay/make-sample-certs.sh   (the Debian package:
#        the files go beside the installed samples instead of beside the script)
set -euo pipefail

here=${CCRELAY_SAMPLE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
certs=$here/certs
secrets=$here/secrets
trust=$here/trust
days=365

force=0
case "${1:-}" in
  -f) force=1 ;;
  "") ;;
  *) echo "usage: $0 [-f]" >&2; exit 2 ;;
esac

command -v openssl >/dev/null || { echo "make-sample-certs: openssl not found" >&2; exit 1; }

# The trust store holds the upstream CA, which issued the CMS and PKI server certificates and the
# connector identities, so both routes' identities chain to it and pki-soap (no upstream.ca)
# verifies its server against it. Files are laid out as `ccrelay trust add` writes them: one PEM
# per certificate named by the lower-case hex SHA-256 of its DER; the directory 0700 (the agent
# refuses a group- or world-writable store), the files 0644. Stale entries of a previous run go.
mktrust() {
  local fp
  mkdir -p "$trust"
  chmod 700 "$trust"
  rm -f "$trust"/*.pem
  fp=$(openssl x509 -in "$certs/upstream-ca.pem" -outform DER | openssl dgst -sha256 -r | cut -d' ' -f1)
  openssl x509 -in "$certs/upstream-ca.pem" -out "$trust/$fp.pem"
  chmod 644 "$trust/$fp.pem"
  echo "make-sample-certs: trust store $trust holds the upstream CA as $fp.pem"
}

if [ "$force" = 0 ] && [ -e "$certs/tunnel-ca.pem" ]; then
  echo "make-sample-certs: $certs already populated (use -f to regenerate)"
  # A checkout made before the samples had a trust store gets one from the existing CA.
  if [ ! -d "$trust" ] && [ -e "$certs/upstream-ca.pem" ]; then
    umask 077
    mktrust
  fi
  exit 0
fi

mkdir -p "$certs" "$secrets"
chmod 700 "$secrets"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077

# A P-256 key in PKCS#8 PEM.
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# CA NAME SUBJECT: a self-signed CA certificate and its key.
mkca() {
  newkey "$certs/$1.key"
  openssl req -x509 -new -key "$certs/$1.key" -subj "$2" -days "$days" -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$certs/$1.pem"
}

# LEAF NAME CA SUBJECT EKU [SAN]: a certificate signed by CA, with its key.
mkleaf() {
  local name=$1 ca=$2 subj=$3 eku=$4 san=${5:-}
  newkey "$certs/$name.key"
  openssl req -new -key "$certs/$name.key" -subj "$subj" -out "$work/$name.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$eku"
    [ -n "$san" ] && echo "subjectAltName=$san"
  } >"$work/$name.ext"
  openssl x509 -req -in "$work/$name.csr" -CA "$certs/$ca.pem" -CAkey "$certs/$ca.key" \
    -CAcreateserial -CAserial "$work/$ca.srl" -days "$days" -sha256 \
    -extfile "$work/$name.ext" -out "$certs/$name.pem" 2>/dev/null
}

# P12 NAME CA: bundles LEAF NAME (with the CA as chain) into NAME.p12 under a random password
# written to secrets/NAME.pass (with a trailing newline, as editors leave it: ccrelay strips it).
mkp12() {
  local name=$1 ca=$2
  openssl rand -hex 16 >"$secrets/$name.pass"
  openssl pkcs12 -export -inkey "$certs/$name.key" -in "$certs/$name.pem" -certfile "$certs/$ca.pem" \
    -name "$name" -passout "file:$secrets/$name.pass" -out "$certs/$name.p12"
  # The PKCS#12 file is the identity; the loose PEM copies are not needed by the samples.
  rm -f "$certs/$name.key" "$certs/$name.pem"
}

# Tunnel PKI: the gateway's tunnel certificate and each agent's client certificate.
mkca tunnel-ca "/O=ccrelay sample/CN=ccrelay sample tunnel CA"
mkleaf gateway-tunnel tunnel-ca "/O=ccrelay sample/CN=tunnel.example.com" serverAuth \
  "DNS:tunnel.example.com,DNS:localhost,IP:127.0.0.1,IP:::1"
# The gateway maps this common name to its relay group (gateway.yaml: groups[].agents).
mkleaf agent tunnel-ca "/O=ccrelay sample/CN=acme-agent-1" clientAuth

# The on-prem side: the CA that issued the CMS and PKI server certificates, which also issued the
# connector identities here (in a real deployment the CMS/PKI administrators hand them to you).
mkca upstream-ca "/O=ccrelay sample/CN=ccrelay sample upstream CA"
mkleaf cms-json-connector upstream-ca "/O=ccrelay sample/CN=CMS JSON connector" clientAuth
mkp12 cms-json-connector upstream-ca
mkleaf pki-soap-connector upstream-ca "/O=ccrelay sample/CN=PKI SOAP connector" clientAuth
mkp12 pki-soap-connector upstream-ca

# The public HTTPS certificate the console sees (self-signed here; a public CA's in production).
newkey "$certs/public.key"
openssl req -x509 -new -key "$certs/public.key" -subj "/O=ccrelay sample/CN=cms.example.com" \
  -days "$days" -sha256 -addext "subjectAltName=DNS:cms.example.com,DNS:pki.example.com" \
  -addext "extendedKeyUsage=serverAuth" -out "$certs/public.pem"

# The bearer token of the gateway's admin endpoint (gateway.yaml: admin.token_file, commented out).
openssl rand -hex 32 >"$secrets/gateway-admin.token"

# Keys, PKCS#12 files and secrets readable by their owner only, as ccrelay will find them in
# production.
chmod 600 "$certs"/*.key "$certs"/*.p12 "$secrets"/*.pass "$secrets"/*.token
chmod 644 "$certs"/*.pem
echo "make-sample-certs: wrote $(ls "$certs" | wc -l) files to $certs and $(ls "$secrets" | wc -l) to $secrets"
mktrust
