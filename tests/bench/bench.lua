-- SPDX-License-Identifier: Apache-2.0
-- wrk script for tests/bench/run.sh: `wrk ... -s bench.lua URL -- small|big [PACE_MS]`.
--   small: POST /connector/mdm.cgi with a 484-byte JSON body (a CMS "test" call padded to size)
--   big:   GET /big (the upstream's 1 MiB static file)
--   PACE_MS: each connection waits this long before each request (a paced run, to compare two
--   setups at the same request rate)
-- The Host header is the public service name every path serves (ccrelay picks its service by Host).
-- done() prints one machine-readable line, "WRKJSON {...}", that run.sh keeps; latencies are in µs.

local function small_body()
  local head = '{"action":"test","profile":"Mobile Authentication","datasource":{"cn":"alice",'
    .. '"mail":"alice@acme.example","mobileserial":"F2LX1234","o":"ACME Ltd","ou":"Sales"},"pad":"'
  local tail = '"}'
  return head .. string.rep("x", 484 - #head - #tail) .. tail
end

local pace_ms = 0

function init(args)
  local mode = args[1] or "small"
  pace_ms = tonumber(args[2] or "0") or 0
  wrk.headers["Host"] = "cms.example.com"
  if mode == "big" then
    wrk.method = "GET"
    wrk.path = "/big"
    wrk.body = nil
  else
    wrk.method = "POST"
    wrk.path = "/connector/mdm.cgi"
    wrk.body = small_body()
    wrk.headers["Content-Type"] = "application/json"
  end
end

function delay()
  return pace_ms
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_status":%d,"err_timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
