#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The gateway admits an agent only if its certificate chains to the tunnel CA and its identity
# belongs to a relay group; otherwise the handshake fails and the gateway logs why.
set -euo pipefail
. "$(dirname "$0")/../lib/common.sh"
. "$(dirname "$0")/../lib/relay.sh"
cr_init e2e_tunnel_auth 120

make_pki
start_cms_sim
write_gateway_conf "$CR_TMP/gateway.yaml"
start_gateway
route=$(cms_route cms-json "$CMS_PORT")

# An agent certificate from another CA (same CN as a real agent).
write_agent_conf "$CR_TMP/otherca.yaml" "$route" "" "" agent-otherca
start_bg otherca "$CCRELAY_BIN" agent -c "$CR_TMP/otherca.yaml"
wait_for_log gateway 'msg="agent refused".*(unknown ca|unable to get local issuer|certificate verify failed|verify)' 10
wait_for_log otherca 'msg="tunnel dial failed".*step=tls' 10
stop_ccrelay otherca

# An agent from the right CA whose identity maps to no group.
write_agent_conf "$CR_TMP/nogroup.yaml" "$route" "" "" agent-nogroup
start_bg nogroup "$CCRELAY_BIN" agent -c "$CR_TMP/nogroup.yaml"
wait_for_log gateway 'msg="agent refused".*stranger-agent maps to no relay group' 10
wait_for_log nogroup 'msg="tunnel dial failed".*step=tls' 10
stop_ccrelay nogroup
assert_file_lacks "$(log_of gateway)" 'msg="tunnel up"' "no refused agent got a tunnel"

st=$(relay_curl "$CR_TMP/r" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}')
assert_eq "$st" 503 "refused agents serve nothing"

# And the real agent is admitted.
write_agent_conf "$CR_TMP/agent.yaml" "$route"
start_agent agent "$CR_TMP/agent.yaml" 1
st=$(relay_curl "$CR_TMP/ok" cms.example.com /connector/mdm.cgi -H 'Content-Type: application/json' -d '{"action":"test"}')
assert_eq "$st" 200 "admitted agent"

stop_ccrelay agent
stop_ccrelay gateway
cr_pass
