-- engine_metrics_spec.lua: the engine.metrics module inside the engine
-- (`jollyjet spec` has no master, so the table is the process's own; the
-- cross-worker sums are covered by tests/integration/test_metrics_shared.py).
-- Names are unique to this file (spec_metrics_*): the table lives as long as
-- the process and other specs may count things too.
local metrics = require("engine.metrics")

local n = 0
-- A fresh name for every test.
local function fresh(base)
  n = n + 1
  return ("spec_metrics_%s_%d"):format(base or "m", n)
end

describe("engine.metrics", function()
  describe("counters", function()
    it("add up, by 1 by default, and read 0 when absent", function()
      local name = fresh("hits")
      assert.are.equal(0, metrics.get(name))
      metrics.incr(name)
      metrics.incr(name)
      metrics.incr(name, 40)
      metrics.incr(name, 0)
      local v = metrics.get(name)
      assert.are.equal(42, v)
      assert.are.equal("integer", math.type(v))
    end)

    it("count many increments exactly", function()
      local name = fresh("loop")
      for _ = 1, 100000 do metrics.incr(name) end
      assert.are.equal(100000, metrics.get(name))
      metrics.incr(name, 1 << 40)
      assert.are.equal(100000 + (1 << 40), metrics.get(name))
    end)

    it("treat labels as part of the name", function()
      local l1 = 'spec_metrics_cache_hits{ns="product",level="L1"}'
      local l2 = 'spec_metrics_cache_hits{ns="product",level="L2"}'
      metrics.incr(l1, 3)
      metrics.incr(l2)
      assert.are.equal(3, metrics.get(l1))
      assert.are.equal(1, metrics.get(l2))
      assert.are.equal(0, metrics.get("spec_metrics_cache_hits"))
    end)

    it("accept a float n with an integer value", function()
      local name = fresh()
      metrics.incr(name, 2.0)
      assert.are.equal(2, metrics.get(name))
    end)
  end)

  describe("gauges", function()
    it("keep the last value set", function()
      local name = fresh("inflight")
      metrics.set(name, 5)
      assert.are.equal(5, metrics.get(name))
      metrics.set(name, -3)
      assert.are.equal(-3, metrics.get(name))
    end)
  end)

  describe("histograms", function()
    it("count observations in cumulative buckets, with sum (ms) and count", function()
      local name = fresh("lat")
      for _, ms in ipairs({ 0.2, 0.5, 0.7, 3, 3, 12, 6000 }) do metrics.observe(name, ms) end
      assert.are.equal(2, metrics.get(name .. '_bucket{le="0.5"}'))
      assert.are.equal(3, metrics.get(name .. '_bucket{le="1"}'))
      assert.are.equal(5, metrics.get(name .. '_bucket{le="5"}'))
      assert.are.equal(6, metrics.get(name .. '_bucket{le="5000"}'))
      assert.are.equal(7, metrics.get(name .. '_bucket{le="+Inf"}'))
      assert.are.equal(7, metrics.get(name .. "_count"))
      assert.are.equal(7, metrics.get(name))
      local sum = metrics.get(name .. "_sum")
      assert.are.equal("float", math.type(sum))
      assert.is_true(math.abs(sum - 6019.4) < 1e-9, tostring(sum))
    end)

    it("put le after the histogram's own labels", function()
      local name = 'spec_metrics_rt{route="/x"}'
      metrics.observe(name, 1.5)
      assert.are.equal(0, metrics.get('spec_metrics_rt_bucket{route="/x",le="1"}'))
      assert.are.equal(1, metrics.get('spec_metrics_rt_bucket{route="/x",le="2.5"}'))
      assert.are.equal(1, metrics.get('spec_metrics_rt_count{route="/x"}'))
      assert.are.equal(1.5, metrics.get('spec_metrics_rt_sum{route="/x"}'))
    end)
  end)

  describe("snapshot", function()
    it("returns every name under a prefix, histograms flattened", function()
      local p = fresh("snap") .. "_"
      metrics.incr(p .. "a", 2)
      metrics.set(p .. "b", 7)
      metrics.observe(p .. "c", 30)
      local snap = metrics.snapshot(p)
      local count = 0
      for k in pairs(snap) do
        count = count + 1
        assert.are.equal(p, k:sub(1, #p))
      end
      assert.are.equal(2 + 14 + 2, count)
      assert.are.equal(2, snap[p .. "a"])
      assert.are.equal(7, snap[p .. "b"])
      assert.are.equal(0, snap[p .. 'c_bucket{le="25"}'])
      assert.are.equal(1, snap[p .. 'c_bucket{le="50"}'])
      assert.are.equal(1, snap[p .. 'c_bucket{le="+Inf"}'])
      assert.are.equal(30.0, snap[p .. "c_sum"])
      assert.are.equal(1, snap[p .. "c_count"])
    end)

    it("without a prefix returns everything", function()
      local name = fresh("all")
      metrics.incr(name)
      local snap = metrics.snapshot()
      assert.are.equal(1, snap[name])
      assert.are.equal(1, snap['spec_metrics_cache_hits{ns="product",level="L2"}'])
    end)
  end)

  describe("misuse raises", function()
    it("for a name that is not a string, empty, too long or has a NUL", function()
      assert.has_error(function() metrics.incr(42) end)
      assert.has_error(function() metrics.incr(nil) end)
      assert.has_error(function() metrics.incr({}) end)
      assert.has_error(function() metrics.incr("") end)
      assert.has_error(function() metrics.incr(("x"):rep(128)) end)
      assert.has_error(function() metrics.set("a\0b", 1) end)
      assert.has_error(function() metrics.get(7) end)
      assert.has_error(function() metrics.snapshot(7) end)
      local longest = "spec_metrics_" .. ("y"):rep(127 - #"spec_metrics_")
      metrics.incr(longest)
      assert.are.equal(1, metrics.get(longest))
    end)

    it("for a bad n or value", function()
      local name = fresh()
      assert.has_error(function() metrics.incr(name, 1.5) end)
      assert.has_error(function() metrics.incr(name, "2") end)
      assert.has_error(function() metrics.incr(name, -1) end)
      assert.has_error(function() metrics.set(name .. "g", 0.5) end)
      assert.has_error(function() metrics.set(name .. "g") end)
      assert.has_error(function() metrics.observe(name .. "h", -1) end)
      assert.has_error(function() metrics.observe(name .. "h", 0 / 0) end)
      assert.has_error(function() metrics.observe(name .. "h", math.huge) end)
      assert.has_error(function() metrics.observe(name .. "h", "3") end)
      assert.are.equal(0, metrics.get(name))
    end)

    it("when a name is used as another kind than its first", function()
      local name = fresh("kind")
      metrics.incr(name)
      assert.has_error(function() metrics.set(name, 1) end)
      local ok, err = pcall(metrics.observe, name, 1)
      assert.is_false(ok)
      assert.matches("is a counter, not a histogram", err)
      local g = fresh("gauge")
      metrics.set(g, 1)
      assert.has_error(function() metrics.incr(g) end)
      assert.are.equal(1, metrics.get(name))
      assert.are.equal(1, metrics.get(g))
    end)
  end)

  it("reports no overflow", function()
    assert.are.equal(0, metrics.overflow())
  end)
end)
