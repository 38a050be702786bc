-- wrk script shared by every server and metric: replays a request list written by bench.py.
--
--   wrk ... -s requests.lua http://127.0.0.1:PORT -- LIST_FILE THREADS
--
-- LIST_FILE has one request per line: METHOD <tab> PATH?QUERY <tab> RANGE or "-" <tab> BODY_BYTES.
-- Presigned URLs and Range offsets come from the harness, so nothing is signed or drawn per
-- request. Short lists are built into requests once in init(); long ones (PUTs of new keys,
-- up to 100,000 entries) are formatted per request, which costs the client a string
-- concatenation but not the memory of every body in every thread. Each of the THREADS threads
-- starts at its own share of the list (so new keys stay new) and cycles through it. done()
-- prints one JSON line the harness parses.

local next_id = 0

function setup(thread)
   thread:set("thread_id", next_id)
   next_id = next_id + 1
end

local PREBUILD_MAX = 10000
local entries = {}
local built = nil
local bodies = {}
local pos = 0

local function format(e)
   local headers = {}
   if e.range ~= "-" then
      headers["Range"] = e.range
   end
   local body = nil
   if e.size > 0 then
      bodies[e.size] = bodies[e.size] or string.rep("nebula-perf-body", math.ceil(e.size / 16)):sub(1, e.size)
      body = bodies[e.size]
   end
   return wrk.format(e.method, e.path, headers, body)
end

function init(args)
   for line in io.lines(args[1]) do
      local method, path, range, size = line:match("^(%S+)\t(%S+)\t(%S+)\t(%d+)$")
      entries[#entries + 1] = {method = method, path = path, range = range, size = tonumber(size)}
   end
   if #entries <= PREBUILD_MAX then
      built = {}
      for i, e in ipairs(entries) do
         built[i] = format(e)
      end
   end
   local threads = tonumber(args[2] or "1")
   pos = (thread_id * math.floor(#entries / threads)) % #entries
end

function request()
   pos = pos % #entries + 1
   if built then
      return built[pos]
   end
   return format(entries[pos])
end

function done(summary, latency, _)
   local e = summary.errors
   io.write(string.format(
      'WRK_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "errors": ' ..
      '{"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p99": %d, "mean": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.mean))
end
