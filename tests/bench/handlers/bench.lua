-- Benchmark-only route, copied into a temporary LUA_DIR by tests/bench/run.sh
-- (never shipped in lua/). GET /bench/fixed answers a fixed 400-byte JSON
-- body built once at module load, so a request measures the engine's own
-- path (HTTP parse, router, coroutine, response) and nothing else.
--
-- Pure Lua (no engine modules) on purpose: run.sh also loads this file with
-- plain lua5.4 to write the very same bytes to the file nginx serves.
local BODY_SIZE = 400

local head = '{"id":4242,"sku":"JJ-BENCH-0400","name":"JollyJet fixed benchmark body",'
  .. '"price":{"amount":1999,"currency":"EUR"},"in_stock":true,'
  .. '"tags":["bench","fixed","json"],"pad":"'
local tail = '"}'
local pad = BODY_SIZE - #head - #tail
assert(pad > 0, "bench body: head and tail exceed the body size")
-- A readable, deterministic filler (no JSON escapes needed).
local filler = ("abcdefghijklmnopqrstuvwxyz0123456789"):rep(pad // 36 + 1):sub(1, pad)
local BODY = head .. filler .. tail
assert(#BODY == BODY_SIZE, "bench body must be exactly 400 bytes")

local HEADERS = { ["Content-Type"] = "application/json" }

local function fixed()
  return 200, BODY, HEADERS
end

return {
  body = BODY,
  routes = {
    { "GET", "/bench/fixed", fixed },
  },
}
