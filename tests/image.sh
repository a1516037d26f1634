#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The container image, built and run the way an operator runs it, on a machine with no registry:
#   1. build the Dockerfile with podman (tests/lib/image.sh: locally imported Debian bases, --pull=never,
#      cached by a content hash of the build context);
#   2. run the gateway and the agent from it with --read-only --cap-drop ALL --security-opt
#      no-new-privileges --network host, configuration and certificates bind-mounted read-only (root-owned,
#      readable by the image's group 10001), the agent's trust store on a volume filled by
#      `ccrelay trust add` in a one-shot container (as the Kubernetes init container does), the upstream
#      (the CMS simulator) outside the containers on 127.0.0.1;
#   3. the image's HEALTHCHECK (`ccrelay health`, run by `podman healthcheck run`): unhealthy while the
#      agent has no tunnel, healthy once it has;
#   4. one call through the gateway's public port to the simulator and back; then both stop on SIGTERM
#      with exit status 0. Every container and volume is removed by the ID or name this test gave it.
#
#   tests/image.sh CACHE_DIR      CACHE_DIR keeps the Debian root file system tarball (shared with
#                                 tests/package.sh) and the build log
# Needs root, podman and runc (deploy/install-deps.sh), and Debian's mirror for the image's apt-get.
set -euo pipefail
cache=$(mkdir -p "${1:?usage: tests/image.sh CACHE_DIR}" && cd "$1" && pwd)
# relay.sh wants a host ccrelay for the helpers that run one; this test runs every ccrelay in the image.
CCRELAY_BIN=/bin/false
. "$(dirname "$0")/lib/common.sh"
. "$(dirname "$0")/lib/relay.sh"
. "$(dirname "$0")/lib/image.sh"
cr_init image 900

declare -A CTR_ID=()
VOLUMES=()
# Containers' logs join the test's logs (printed on failure); then every container and volume this test
# made is removed by its ID or name.
image_cleanup() {
  local rc=$? name
  set +e
  for name in "${!CTR_ID[@]}"; do
    podman logs "${CTR_ID[$name]}" >"$CR_TMP/$name.log" 2>&1
    CR_LOG_OF[$name]=$CR_TMP/$name.log
    podman rm -f -t 5 "${CTR_ID[$name]}" >/dev/null 2>&1
  done
  for name in "${VOLUMES[@]}"; do
    podman volume rm -f "$name" >/dev/null 2>&1
  done
  (exit "$rc")
  cr_on_exit
}
trap image_cleanup EXIT

# The hardening every ccrelay container here runs with.
HARDENED=(--read-only --cap-drop ALL --security-opt no-new-privileges --network host)

# run_container NAME PODMAN_RUN_ARGS...: detached; its ID in CTR_ID[NAME]. podman's complaints about the
# missing systemd (it schedules HEALTHCHECK timers there; `podman healthcheck run` needs none) go to a log.
run_container() {
  local name=$1 id
  shift
  id=$(podman run -d --name "ccrelay-image-$name-$$" "$@" 2>>"$CR_TMP/podman.err") ||
    { tail -5 "$CR_TMP/podman.err" >&2; fail "podman run of $name failed"; }
  CTR_ID[$name]=$id
}

running() { [[ $(podman inspect --format '{{.State.Running}}' "${CTR_ID[$1]}" 2>/dev/null) == true ]]; }

# health NAME: the image's HEALTHCHECK run once now (exit 0: healthy).
health() {
  if podman healthcheck run "${CTR_ID[$1]}" >/dev/null 2>&1; then echo healthy; else echo unhealthy; fi
}

# ---- 1. the image -------------------------------------------------------------------------------
image_podman_setup "$cache" || fail "podman is not usable here"
t0=$SECONDS
image_ensure "$CR_SRC" "$cache" || fail "no image"
build_s=$((SECONDS - t0))
labels=$(podman image inspect --format '{{json .Labels}}' "$CCRELAY_IMAGE")
assert_contains "$labels" '"org.opencontainers.image.licenses":"Apache-2.0"' "OCI licence label"
assert_contains "$labels" '"org.opencontainers.image.revision":"' "OCI revision label"
assert_not_contains "$labels" '"org.opencontainers.image.revision":"unknown"' "the revision reached the build"
assert_eq "$(podman image inspect --format '{{.Config.User}}' "$CCRELAY_IMAGE")" 10001:10001 "image user"
# The docker format keeps the HEALTHCHECK (OCI image configs have no field for it).
hc=$(podman image inspect --format '{{json .HealthCheck}}' "$CCRELAY_IMAGE" 2>/dev/null || true)
assert_contains "$hc" 'ccrelay' "the image has its HEALTHCHECK"
assert_eq "$(podman image inspect --format '{{len .Config.Volumes}}' "$CCRELAY_IMAGE")" 0 "no VOLUME in the image"

# ---- 2. configuration, certificates, trust store ---------------------------------------------------
t1=$SECONDS
make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
ADMIN_PORT=$(pick_free_port)
# write_agent_conf makes a host trust store unless the directory exists: this one stays empty and unused,
# the agent's store is built in the image below.
mkdir -p "$CR_TMP/no-host-trust"
AGENT_TRUST_STORE=$CR_TMP/no-host-trust write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms-json "$CMS_PORT")" \
  "" "admin: { listen: 127.0.0.1:$ADMIN_PORT }"

# What the containers see: /etc/ccrelay/{gateway,agent}.yaml and /etc/ccrelay/pki, owned by root and
# readable by group 10001 only (the image runs as 10001:10001), mounted read-only.
etc=$CR_TMP/etc
mkdir -p "$etc/pki"
for f in gateway-tunnel.pem gateway-tunnel.key tunnel-ca.pem public.pem public.key agent.pem agent.key \
  upstream-ca.pem client-ca.pem cms-json-connector.p12 cms-json-connector.pass; do
  cp "$CR_PKI/$f" "$etc/pki/"
done
for f in gateway agent; do
  sed -e "s#$CR_PKI/#/etc/ccrelay/pki/#g" -e "s#$CR_TMP/no-host-trust#/var/lib/ccrelay/trust#" \
    "$CR_TMP/$f.yaml" >"$etc/$f.yaml"
done
chown -R root:10001 "$etc"
find "$etc" -type d -exec chmod 0750 {} +
find "$etc" -type f -exec chmod 0640 {} +
MOUNT_PKI=(-v "$etc/pki:/etc/ccrelay/pki:ro")

# The trust store on a volume: a one-shot container runs `ccrelay trust add` (the volume starts as a copy
# of the image's /var/lib/ccrelay, owned by 10001), then the agent mounts the same volume.
vol=ccrelay-image-trust-$$
podman volume create "$vol" >/dev/null
VOLUMES+=("$vol")
run_container trust "${HARDENED[@]}" "${MOUNT_PKI[@]}" -v "$vol:/var/lib/ccrelay" "$CCRELAY_IMAGE" \
  trust --store /var/lib/ccrelay/trust add /etc/ccrelay/pki/client-ca.pem /etc/ccrelay/pki/upstream-ca.pem
assert_eq "$(timeout 60 podman wait "${CTR_ID[trust]}" 2>/dev/null)" 0 "ccrelay trust add in the image"

# ---- 3. agent first (no tunnel: unhealthy), then the gateway (healthy) --------------------------------
run_container agent "${HARDENED[@]}" "${MOUNT_PKI[@]}" -v "$etc/agent.yaml:/etc/ccrelay/agent.yaml:ro" \
  -v "$vol:/var/lib/ccrelay" -e CCRELAY_CONFIG=/etc/ccrelay/agent.yaml "$CCRELAY_IMAGE" agent -c /etc/ccrelay/agent.yaml
wait_for_port 127.0.0.1 "$ADMIN_PORT" 20
running agent || fail "the agent container stopped"
assert_eq "$(health agent)" unhealthy "HEALTHCHECK while the agent has no gateway"

# The gateway has no admin listener, so the image's HEALTHCHECK does not apply to it.
run_container gateway "${HARDENED[@]}" --no-healthcheck "${MOUNT_PKI[@]}" \
  -v "$etc/gateway.yaml:/etc/ccrelay/gateway.yaml:ro" "$CCRELAY_IMAGE" gateway -c /etc/ccrelay/gateway.yaml
wait_for_port 127.0.0.1 "$GW_PUBLIC_PORT" 20
running gateway || fail "the gateway container stopped"

state=
for ((i = 0; i < 60; i++)); do
  state=$(health agent)
  [[ $state == healthy ]] && break
  running agent || fail "the agent container stopped"
  sleep 0.5
done
assert_eq "$state" healthy "HEALTHCHECK once the tunnel is up"
cr_log "agent healthy after $((SECONDS - t1)) s"

# Every ccrelay runs as 10001 without capabilities, with no_new_privs, on a read-only root.
for c in gateway agent; do
  status=$(podman exec "${CTR_ID[$c]}" cat /proc/1/status)
  assert_contains "$status" "$(printf 'Uid:\t10001')" "$c runs as uid 10001"
  assert_contains "$status" "$(printf 'CapEff:\t0000000000000000')" "$c has no capabilities"
  assert_contains "$status" "$(printf 'NoNewPrivs:\t1')" "$c runs with no_new_privs"
  assert_eq "$(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "${CTR_ID[$c]}")" true "$c read-only root"
done

# ---- 4. one call: curl -> gateway (container) -> tunnel -> agent (container) -> CMS simulator (host) ----
st=$(relay_curl "$CR_TMP/r1" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' \
  -d '{"action":"test"}')
assert_eq "$st" 200 "a call through the containers"
assert_eq "$(json_get "$(cat "$CR_TMP/r1")" connector)" "CMS JSON connector" "the CMS saw the route's identity"
assert_eq "$(request_count cms)" 1 "the simulator got exactly the one call"

# ---- 5. SIGTERM: both drain and exit 0 ----------------------------------------------------------------
for c in agent gateway; do
  podman stop -t 15 "${CTR_ID[$c]}" >/dev/null 2>>"$CR_TMP/podman.err"
  assert_eq "$(podman inspect --format '{{.State.ExitCode}}' "${CTR_ID[$c]}")" 0 "$c exit status after SIGTERM"
done
echo "image: ok: $CCRELAY_IMAGE ($(podman image inspect --format '{{.Size}}' "$CCRELAY_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')): image ready in ${build_s} s, containers relayed a call, agent healthy, stopped cleanly in $((SECONDS - t1)) s"
cr_pass
