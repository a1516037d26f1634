#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The public listener offers only forward-secret AEAD suites over TLS 1.2 unless public.tls says
# otherwise; public.tls.min_version: TLSv1.3 refuses TLS 1.2; `check` compiles the cipher list. The
# test certificate is ECDSA, so the suites are the ECDHE-ECDSA ones.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_public_tls 90

make_pki

# handshake ARGS...: 0 when openssl s_client completes a handshake with the public port.
handshake() {
  echo | timeout 10 openssl s_client -connect "127.0.0.1:$GW_PUBLIC_PORT" -servername localhost \
    -CAfile "$CR_PKI/public-ca.pem" -verify_return_error "$@" >"$CR_TMP/s_client.out" 2>&1 &&
    grep -q '^New, TLSv1' "$CR_TMP/s_client.out"
}
offers() { handshake -tls1_2 -cipher "$1" || fail "the public listener refused TLS 1.2 suite $1 ${2:-}"; }
refuses() { ! handshake -tls1_2 -cipher "$1" || fail "the public listener accepted TLS 1.2 suite $1 ${2:-}"; }

# ---- defaults: AEAD only
write_gateway_conf "$CR_TMP/gw1.yaml"
start_gateway gw1 "$CR_TMP/gw1.yaml"
offers ECDHE-ECDSA-AES128-GCM-SHA256
offers ECDHE-ECDSA-AES256-GCM-SHA384
offers ECDHE-ECDSA-CHACHA20-POLY1305
for cbc in ECDHE-ECDSA-AES128-SHA ECDHE-ECDSA-AES256-SHA ECDHE-ECDSA-AES128-SHA256 ECDHE-ECDSA-AES256-SHA384 \
  AES128-SHA AES256-GCM-SHA384; do
  refuses "$cbc" "(not AEAD with ECDHE)"
done
handshake -tls1_3 || fail "TLS 1.3 refused"
stop_ccrelay gw1

# ---- a cipher list that allows CBC
GW_PUBLIC_EXTRA='tls: { ciphers: "ECDHE+AESGCM:ECDHE+AES" }' write_gateway_conf "$CR_TMP/gw2.yaml"
"$CCRELAY_BIN" check -c "$CR_TMP/gw2.yaml" >/dev/null
start_gateway gw2 "$CR_TMP/gw2.yaml"
offers ECDHE-ECDSA-AES128-SHA "(public.tls.ciphers allows it)"
offers ECDHE-ECDSA-AES128-GCM-SHA256
stop_ccrelay gw2

# ---- TLS 1.3 only
GW_PUBLIC_EXTRA='tls: { min_version: TLSv1.3 }' write_gateway_conf "$CR_TMP/gw3.yaml"
start_gateway gw3 "$CR_TMP/gw3.yaml"
refuses ECDHE-ECDSA-AES128-GCM-SHA256 "(min_version TLSv1.3)"
handshake -tls1_3 || fail "TLS 1.3 refused with min_version TLSv1.3"
stop_ccrelay gw3

# ---- a list OpenSSL cannot compile: check and start say where
GW_PUBLIC_EXTRA='tls: { ciphers: "NO-SUCH-CIPHER" }' write_gateway_conf "$CR_TMP/gw4.yaml"
line=$(grep -n 'NO-SUCH-CIPHER' "$CR_TMP/gw4.yaml" | cut -d: -f1)
rc=0
"$CCRELAY_BIN" check -c "$CR_TMP/gw4.yaml" >"$CR_TMP/check.out" 2>&1 || rc=$?
assert_ne "$rc" 0 "check refuses an unknown cipher list"
assert_file_contains "$CR_TMP/check.out" "gw4.yaml:$line:[0-9]+: public.tls.ciphers: no TLS 1.2 cipher matches 'NO-SUCH-CIPHER'"
start_bg gw4 "$CCRELAY_BIN" gateway -c "$CR_TMP/gw4.yaml"
wait_exit gw4 10 || true
wait_for_log gw4 "msg=\"cannot start\" config=.*gw4.yaml:$line:[0-9]+ key=public.tls.ciphers" 1
cr_pass
