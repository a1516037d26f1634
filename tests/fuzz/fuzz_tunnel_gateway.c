/* SPDX-License-Identifier: Apache-2.0 */
/* libFuzzer target: the tunnel's HTTP/2 frame intake on the gateway side (the HTTP/2 client), as a
 * compromised or broken agent would drive it: the gateway opens request streams (1, 3, 5, 7, later
 * more), the input answers them with raw frames after the agent's SETTINGS. The engine is shared
 * with the agent target. */
#define FUZZ_TUNNEL_GATEWAY 1
#include "fuzz_tunnel_agent.c"
