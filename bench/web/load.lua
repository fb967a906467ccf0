-- wrk script for bench/web/run.py: every request carries one of the logged-in
-- sessions (round robin); with "bust", a query parameter no one asked for yet
-- so the shared fragment cache cannot answer. Prints one JSON line at the end.
--   wrk ... -s load.lua URL -- COOKIEFILE PATH [bust]

local cookies, path, bust = {}, "/", false
local n = 0

function init(args)
  for line in io.lines(args[1]) do cookies[#cookies + 1] = line end
  path = args[2]
  bust = args[3] == "bust"
  math.randomseed(os.time() + tonumber(tostring({}):match("0x(%x+)"), 16) % 100000)
end

function request()
  n = n + 1
  local p = path
  if bust then
    p = p .. (p:find("?", 1, true) and "&" or "?") .. "_=" .. math.random(1, 2^30) .. n
  end
  return wrk.format("GET", p, { Cookie = cookies[(n % #cookies) + 1] })
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "errors": %d, "status_errors": %d, ' ..
    '"p50_ms": %.2f, "p90_ms": %.2f, "p99_ms": %.2f, "max_ms": %.2f, "mean_ms": %.2f}\n',
    summary.requests, summary.duration / 1e6, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
