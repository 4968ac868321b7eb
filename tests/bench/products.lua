-- wrk script of tests/bench/products.sh when BENCH_PRODUCTS_IDS > 1:
-- every connection cycles over the same list of paths, each thread starting
-- at a different offset. The same script drives nginx and the engines.
--   wrk ... -s products.lua http://127.0.0.1:PORT/ -- IDS_FILE
-- IDS_FILE holds one product id a line; the paths are /api/products/<id>.
local reqs, n, i = {}, 0, 0
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("offset", counter * 7919)
end

function init(args)
  local f = assert(io.open(assert(args[1], "products.lua: give the ids file after --"), "r"))
  for id in f:lines() do
    if id ~= "" then
      n = n + 1
      reqs[n] = wrk.format("GET", "/api/products/" .. id)
    end
  end
  f:close()
  assert(n > 0, "products.lua: no ids")
  i = (offset or 0) % n   -- luacheck: ignore (set by setup)
end

function request()
  i = i % n + 1
  return reqs[i]
end
