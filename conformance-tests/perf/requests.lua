-- wrk script shared by every server and metric: replays a request list written by bench.py.
--
--   wrk ... -s requests.lua http://127.0.0.1:PORT -- LIST_FILE
--
-- LIST_FILE has one request per line: METHOD <tab> PATH?QUERY <tab> RANGE or "-" <tab> BODY_BYTES.
-- Every request is built once in init() (presigned URLs and Range offsets come from the
-- harness, so nothing is signed or drawn per request); each thread starts at its own offset in
-- the list and cycles through it. done() prints one JSON line the harness parses.

local next_id = 0

function setup(thread)
   thread:set("thread_id", next_id)
   next_id = next_id + 1
end

local requests = {}
local pos = 0

function init(args)
   local bodies = {}
   for line in io.lines(args[1]) do
      local method, path, range, size = line:match("^(%S+)\t(%S+)\t(%S+)\t(%d+)$")
      local headers = {}
      if range ~= "-" then
         headers["Range"] = range
      end
      local body = nil
      size = tonumber(size)
      if size > 0 then
         bodies[size] = bodies[size] or string.rep("nebula-perf-body", math.ceil(size / 16)):sub(1, size)
         body = bodies[size]
      end
      requests[#requests + 1] = wrk.format(method, path, headers, body)
   end
   pos = (thread_id * 7919) % #requests
end

function request()
   pos = pos % #requests + 1
   return requests[pos]
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
