#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Replica discovery by DNS (`replicas.dns`, as with a Kubernetes headless Service): a name with one
# address per replica; each replica's id is `IP:tunnel-port`. The name lives in a private /etc/hosts,
# bind-mounted in a mount namespace of this test's own (unshare -m), so the machine's resolver is
# untouched. Shows:
#   - the agent, given the name as gateway.address, covers every replica of the set (every A answer
#     is a candidate) and both replicas serve calls;
#   - a replica added to the name is covered within the refresh, without restarting anything;
#   - a name that resolves to nothing is logged and the replica keeps serving with its last good set.
set -euo pipefail
if [[ -z ${CR_IN_PRIVATE_MOUNTS:-} ]]; then
  command -v unshare >/dev/null || { echo "unshare (util-linux) not found" >&2; exit 1; }
  exec unshare -m --propagation private env CR_IN_PRIVATE_MOUNTS=1 bash "$0" "$@"
fi
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_replicas_dns 180

HOSTS=$CR_TMP/hosts
hosts() { # hosts IP...: the test's name gw-set.test with these addresses (the file keeps its inode)
  { echo "127.0.0.1 localhost"; for ip in "$@"; do echo "$ip gw-set.test"; done; } >"$HOSTS.new"
  cat "$HOSTS.new" >"$HOSTS"
}
hosts 127.0.0.1 127.0.0.2
mount --bind "$HOSTS" /etc/hosts
[[ $(getent ahostsv4 gw-set.test | awk '$2 == "STREAM" {print $1}' | sort | tr '\n' ' ') == "127.0.0.1 127.0.0.2 " ]] ||
  fail "the private /etc/hosts is not in effect"

make_pki
start_cms_sim
T=$(pick_free_port)

# gw_conf N IP DNS: a replica on IP (tunnel port T shared by all, as Pods share a container port).
gw_conf() {
  local n=$1 ip=$2 dns=$3
  cat >"$CR_TMP/gw$n.yaml" <<YAML
log: { level: debug }
tunnel:
  listen: $ip:$T
  identity: { cert: $CR_PKI/gateway-tunnel.pem, key: $CR_PKI/gateway-tunnel.key }
  client_ca: $CR_PKI/tunnel-ca.pem
  ping_interval: 1s
  ping_timeout: 2s
public:
  listen: $ip:$(pick_free_port)
  identity: { cert: $CR_PKI/public.pem, key: $CR_PKI/public.key }
groups:
  - name: acme
    agents: [acme-agent-1]
services:
  - host: cms.example.com
    group: acme
drain_timeout: 3s
replicas:
  id: "$ip:$T"
  dns: $dns
  refresh: 1s
probe:
  listen: $ip:$(pick_free_port)
YAML
}
public_port() { sed -n '/^public:/,/^[a-z]/ s/^  listen: .*:\([0-9]*\)$/\1/p' "$CR_TMP/gw$1.yaml"; }

gw_conf 1 127.0.0.1 gw-set.test
gw_conf 2 127.0.0.2 gw-set.test
for n in 1 2; do
  "$CCRELAY_BIN" check -c "$CR_TMP/gw$n.yaml" >/dev/null || fail "check gw$n.yaml"
  start_gateway "gw$n" "$CR_TMP/gw$n.yaml"
done
wait_for_log gw1 'msg="replica set" replica=127.0.0.1:[0-9]+ set="127.0.0.1:[0-9]+,127.0.0.2:[0-9]+" .*source=dns' 10

GW_TUNNEL_PORT=$T
write_agent_conf "$CR_TMP/agent.yaml" "$(cms_route cms-json "$CMS_PORT")"
sed -i "s/^  address: 127.0.0.1:$T\$/  address: gw-set.test:$T/" "$CR_TMP/agent.yaml"
grep -q "address: gw-set.test:$T" "$CR_TMP/agent.yaml" || fail "could not point the agent at the name"
t0=$(date +%s%N)
start_bg agent "$CCRELAY_BIN" agent -c "$CR_TMP/agent.yaml"

# covered N: every replica's log shows N tunnels of the agent kept for it.
covered_by() { # covered_by NAME: tunnels the gateway NAME holds for the agent, from its /status
  local port
  port=$(sed -n '/^probe:/,$ s/^  listen: .*:\([0-9]*\)$/\1/p' "$CR_TMP/$1.yaml")
  local ip
  ip=$(sed -n '/^probe:/,$ s/^  listen: \(.*\):[0-9]*$/\1/p' "$CR_TMP/$1.yaml")
  curl -s --max-time 2 "http://$ip:$port/status" | python3 -c 'import json,sys
d=json.load(sys.stdin); print(sum(g["kept"] for g in d["groups"]))' 2>/dev/null || echo 0
}
wait_covered() { # wait_covered SECONDS NAME...: each named gateway holds 2 kept tunnels
  local deadline=$((SECONDS + $1)) n ok
  shift
  while ((SECONDS < deadline)); do
    ok=1
    for n in "$@"; do (($(covered_by "$n") >= 2)) || ok=0; done
    ((ok)) && return 0
    sleep 0.1
  done
  for n in "$@"; do cr_log "$n holds $(covered_by "$n") kept tunnel(s)"; done
  fail "not every replica of {$*} was covered within the deadline"
}
wait_covered 15 gw1 gw2
cr_log "both DNS replicas covered $((($(date +%s%N) - t0) / 1000000)) ms after the agent started"

for n in 1 2; do
  GW_PUBLIC_PORT=$(public_port "$n")
  ip=127.0.0.$n
  st=$(curl_status "$CR_TMP/c$n" --cacert "$CR_PKI/public-ca.pem" --resolve "cms.example.com:$GW_PUBLIC_PORT:$ip" \
    "https://cms.example.com:$GW_PUBLIC_PORT/connector/mdm.cgi" -H 'Content-Type: application/json' -d '{"action":"test"}')
  assert_eq "$st" 200 "a call through replica gw$n"
done

# A third replica joins the name: covered within the refresh, nothing restarted.
gw_conf 3 127.0.0.3 gw-set.test
hosts 127.0.0.1 127.0.0.2 127.0.0.3
t0=$(date +%s%N)
start_gateway gw3 "$CR_TMP/gw3.yaml"
wait_covered 15 gw1 gw2 gw3
cr_log "a third DNS replica covered $((($(date +%s%N) - t0) / 1000000)) ms after it started"

# A name that resolves to nothing: logged, the replica keeps its last good set (itself) and serves.
gw_conf 4 127.0.0.4 nothing-here.invalid
start_gateway gw4 "$CR_TMP/gw4.yaml"
wait_for_log gw4 'msg="replica set not resolved: keeping the last good set"' 10
probe4=$(sed -n '/^probe:/,$ s/^  listen: .*:\([0-9]*\)$/\1/p' "$CR_TMP/gw4.yaml")
assert_eq "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.4:$probe4/readyz")" 200 \
  "a replica whose name resolves to nothing is still ready"

stop_ccrelay agent
for n in 1 2 3 4; do stop_ccrelay "gw$n"; done
cr_pass
