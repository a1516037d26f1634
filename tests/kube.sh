#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The Kubernetes manifests (deploy/kubernetes), checked two ways:
#   1. schema: every document validated against the Kubernetes API schema (npm kubernetes-models, pinned
#      with tests/kube/package-lock.json), plus ccrelay's own promises (hardened containers, /readyz and
#      /healthz probes, grace period > preStop + drain_timeout, headless Service publishing not-ready
#      addresses): tests/kube/validate.mjs;
#   2. run: gateway + agent Deployments played with `podman kube play --network host` from the CI-built
#      image (tests/lib/image.sh), rendered for one machine by tests/kube/render.mjs (loopback ports, the
#      Secrets and ConfigMaps an operator creates with kubectl made from the test PKI, the CMS simulator
#      on the host as upstream). The agent's init container builds its trust store; the test waits for the
#      agent's /readyz 200, relays one call through the gateway's public port, then `podman kube down` of
#      exactly the rendered file.
#
#   tests/kube.sh CACHE_DIR      CACHE_DIR as for tests/image.sh (the image is built there if missing)
# Needs root, podman, runc, catatonit (deploy/install-deps.sh), node and npm (the npm registry or its cache).
set -euo pipefail
cache=$(mkdir -p "${1:?usage: tests/kube.sh CACHE_DIR}" && cd "$1" && pwd)
CCRELAY_BIN=/bin/false   # relay.sh wants one; every ccrelay here runs in the image
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/relay.sh"
. "$(dirname "$0")/lib/image.sh"
cr_init kube 900

kube=$CR_SRC/tests/kube
manifests=("$CR_SRC/deploy/kubernetes/gateway.yaml" "$CR_SRC/deploy/kubernetes/agent.yaml")
PLAYED=
kube_cleanup() {
  local rc=$? c
  set +e
  if [[ -n $PLAYED ]]; then
    for c in gateway agent; do
      podman logs "$(ctr "$c")" >"$CR_TMP/$c.log" 2>&1 && CR_LOG_OF[$c]=$CR_TMP/$c.log
    done
    podman kube down "$PLAYED" >>"$CR_TMP/podman.log" 2>&1 || echo "kube: podman kube down $PLAYED failed" >&2
  fi
  (exit "$rc")
  cr_on_exit
}
trap kube_cleanup EXIT

# ctr COMPONENT: the name podman gives a played Deployment's main container. (Init containers of type
# "once" are removed once they succeed: the trust store's contents below are what shows the init ran.)
ctr() { echo "ccrelay-$1-$suffix-pod-0-$1"; }

# ---- 1. schema ----------------------------------------------------------------------------------------
command -v node >/dev/null && command -v npm >/dev/null || fail "node and npm are needed"
t0=$SECONDS
(cd "$kube" && npm ci --no-audit --no-fund --prefer-offline --loglevel=error >"$CR_TMP/npm.log" 2>&1) ||
  { cat "$CR_TMP/npm.log" >&2; fail "npm ci in tests/kube failed"; }
node "$kube/validate.mjs" "${manifests[@]}" || fail "manifest validation"
validate_s=$((SECONDS - t0))

# ---- 2. podman kube play ------------------------------------------------------------------------------
image_podman_setup "$cache" || fail "podman is not usable here"
image_ensure "$CR_SRC" "$cache" || fail "no image"
t1=$SECONDS
make_pki
start_cms_sim
start_pki_sim
TUNNEL_PORT=$(pick_free_port)
PUBLIC_PORT=$(pick_free_port)
PROBE_PORT=$(pick_free_port)
ADMIN_PORT=$(pick_free_port)
suffix=t$$

# The Secrets and ConfigMaps the manifests' comments tell an operator to create, from the test PKI.
data=$CR_TMP/data
put() { # put NAME KEY=PKI_FILE...
  local name=$1 kv
  shift
  mkdir -p "$data/$name"
  for kv in "$@"; do cp "$CR_PKI/${kv#*=}" "$data/$name/${kv%%=*}"; done
}
put ccrelay-gateway-tunnel-tls tls.crt=gateway-tunnel.pem tls.key=gateway-tunnel.key
put ccrelay-gateway-public-tls tls.crt=public.pem tls.key=public.key
put ccrelay-gateway-ca agent-ca.crt=tunnel-ca.pem
put ccrelay-agent-tls tls.crt=agent.pem tls.key=agent.key
put ccrelay-connector-identities cms-json-connector.p12=cms-json-connector.p12 \
  cms-json-connector.pass=cms-json-connector.pass pki-soap-connector.p12=pki-soap-connector.p12 \
  pki-soap-connector.pass=pki-soap-connector.pass
put ccrelay-agent-ca gateway-ca.crt=tunnel-ca.pem upstream-ca.crt=upstream-ca.pem
put ccrelay-trust-roots connector-root.pem=client-ca.pem upstream-root.pem=upstream-ca.pem
chown -R root:10001 "$data"
find "$data" -type d -exec chmod 0750 {} +
find "$data" -type f -exec chmod 0640 {} +
data_args=()
for d in "$data"/*; do data_args+=(--data "$(basename "$d")=$d"); done

render() {
  rm -rf "$CR_TMP/play"
  mkdir -p "$CR_TMP/play"
  node "$kube/render.mjs" --suffix "$suffix" --image "$CCRELAY_IMAGE" --out "$CR_TMP/play" \
    --set gateway.tunnel="127.0.0.1:$TUNNEL_PORT" --set gateway.public="127.0.0.1:$PUBLIC_PORT" \
    --set gateway.probe="127.0.0.1:$PROBE_PORT" --set agent.admin="127.0.0.1:$ADMIN_PORT" \
    --set agent.gateway="127.0.0.1:$TUNNEL_PORT" --set route.cms-json="https://127.0.0.1:$CMS_PORT" \
    --set route.pki-soap="https://127.0.0.1:$PKI_PORT" "${data_args[@]}" "$@" "${manifests[@]}" >/dev/null ||
    fail "render.mjs failed"
}
render
# The gateway's probe listener (/healthz, /readyz) is what the kubelet asks: it must be there.
probe=yes

podman kube play --network host "$CR_TMP/play/play.yaml" >"$CR_TMP/podman.log" 2>&1 && PLAYED=$CR_TMP/play/play.yaml ||
  { PLAYED=$CR_TMP/play/play.yaml; tail -20 "$CR_TMP/podman.log" >&2; fail "podman kube play failed"; }

# The agent becomes ready: its init container built the trust store, a tunnel is up.
code=000
for ((i = 0; i < 120; i++)); do
  code=$(curl -s -o /dev/null --max-time 2 -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz" || true)
  [[ $code == 200 ]] && break
  sleep 0.5
done
assert_eq "$code" 200 "agent /readyz"
cr_log "agent ready $((SECONDS - t1)) s after the PKI was made"
assert_eq "$(podman exec "$(ctr agent)" ls /var/lib/ccrelay/trust | wc -l)" 2 "the init container put both roots into the store"
if [[ $probe == yes ]]; then
  assert_eq "$(curl -s -o /dev/null --max-time 3 -w '%{http_code}' "http://127.0.0.1:$PROBE_PORT/readyz")" 200 "gateway /readyz"
  assert_eq "$(curl -s -o /dev/null --max-time 3 -w '%{http_code}' "http://127.0.0.1:$PROBE_PORT/healthz")" 200 "gateway /healthz"
fi
# The securityContext reached the processes.
for c in gateway agent; do
  status=$(podman exec "$(ctr "$c")" cat /proc/1/status)
  assert_contains "$status" "$(printf 'Uid:\t10001')" "$c runs as uid 10001"
  assert_contains "$status" "$(printf 'CapEff:\t0000000000000000')" "$c has no capabilities"
  assert_contains "$status" "$(printf 'NoNewPrivs:\t1')" "$c runs with no_new_privs"
  assert_eq "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$(ctr "$c")")" true "$c read-only root"
done

# One call through the gateway's public port to the CMS simulator on the host.
GW_PUBLIC_PORT=$PUBLIC_PORT
st=$(relay_curl "$CR_TMP/r1" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
  -d '{"action":"test"}')
assert_eq "$st" 200 "a call through the played Deployments"
assert_eq "$(json_get "$(cat "$CR_TMP/r1")" connector)" "CMS JSON connector" "the CMS saw the route's identity"

for c in gateway agent; do
  podman logs "$(ctr "$c")" >"$CR_TMP/$c.log" 2>&1
done
podman kube down "$PLAYED" >>"$CR_TMP/podman.log" 2>&1 || fail "podman kube down failed"
PLAYED=
for c in gateway agent; do
  ! podman container exists "$(ctr "$c")" || fail "$(ctr "$c") still exists after kube down"
done
km=$(node -p "require('$kube/package-lock.json').packages['node_modules/kubernetes-models'].version")
echo "kube: ok: kubernetes-models $km schema + policy of ${#manifests[@]} manifests in ${validate_s} s; podman kube play: agent ready, call relayed, gateway probe port $( [[ $probe == yes ]] && echo checked || echo 'not in this build'), down in $((SECONDS - t1)) s"
cr_pass
