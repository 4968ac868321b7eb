-- wrk script of tests/bench/zipf.sh: a Zipf-distributed mixed workload.
--   wrk ... -s zipf.lua http://127.0.0.1:PORT/ -- N S WRITE_FRACTION SEED
-- Each request picks a product rank r in 1..N with P(r) proportional to
-- 1/r^S (inverse CDF: a precomputed table and a binary search), maps the
-- rank to a product (a fixed permutation, so the hot products are spread
-- over the seeded and the inserted rows), then sends
--   GET /api/products/p-NNNN                       with probability 1 - W
--   PUT /api/products/p-NNNN  {"stock":<0..999>}   with probability W
-- done() prints one line "zipf-script: gets=.. puts=.." with what the
-- threads sent (summed over threads; a few may still be in flight at the end).
local floor, random = math.floor, math.random
local N, S, W = 10000, 1.0, 0.05
local cdf, get_req, path = {}, {}, {}
local PUT_HEADERS = { ["Content-Type"] = "application/json" }
gets, puts = 0, 0   -- globals: read by done() through thread:get

local threads, counter = {}, 0
function setup(thread)
  counter = counter + 1
  thread:set("thread_no", counter)
  threads[#threads + 1] = thread
end

local function gcd(a, b)
  while b ~= 0 do a, b = b, a % b end
  return a
end

function init(args)
  N = tonumber(args[1]) or N
  S = tonumber(args[2]) or S
  W = tonumber(args[3]) or W
  local seed = tonumber(args[4]) or 1
  assert(N >= 1 and S >= 0 and W >= 0 and W <= 1, "zipf.lua: bad N S WRITE_FRACTION")
  -- CDF of Zipf(S) over ranks 1..N.
  local sum = 0
  for r = 1, N do sum = sum + 1 / r ^ S; cdf[r] = sum end
  for r = 1, N do cdf[r] = cdf[r] / sum end
  cdf[N] = 1
  -- rank -> product number: r -> ((r-1) * step) mod N + 1, step coprime to N.
  local step = floor(N * 0.618) + 1
  local tries = 0
  while gcd(step, N) ~= 1 and tries < N do step = step + 1; tries = tries + 1 end
  if gcd(step, N) ~= 1 then step = 1 end
  for r = 1, N do
    local p = "/api/products/" .. string.format("p-%04d", (r - 1) * step % N + 1)
    path[r] = p
    get_req[r] = wrk.format("GET", p)
  end
  math.randomseed(seed * 1000 + (thread_no or 0))   -- luacheck: ignore (set by setup)
end

function request()
  local u = random()
  local lo, hi = 1, N
  while lo < hi do            -- smallest rank with cdf >= u (about log2(N) steps)
    local mid = floor((lo + hi) / 2)
    if cdf[mid] < u then lo = mid + 1 else hi = mid end
  end
  if random() < W then
    puts = puts + 1
    return wrk.format("PUT", path[lo], PUT_HEADERS, '{"stock":' .. random(0, 999) .. "}")
  end
  gets = gets + 1
  return get_req[lo]
end

function done()
  local g, p = 0, 0
  for _, t in ipairs(threads) do
    g = g + (tonumber(t:get("gets")) or 0)
    p = p + (tonumber(t:get("puts")) or 0)
  end
  io.write(string.format("zipf-script: gets=%d puts=%d\n", g, p))
end
