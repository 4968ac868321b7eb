-- prometheus_spec.lua: jollyjet.prometheus renders engine.metrics records as
-- the text exposition format 0.0.4 (the HTTP side is covered by
-- tests/integration/test_metrics_http.py).
local prometheus = require("jollyjet.prometheus")
local metrics = require("engine.metrics")

local BOUNDS = { 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000 }

local function lines(text)
  local out = {}
  for line in text:gmatch("([^\n]*)\n") do out[#out + 1] = line end
  return out
end

local function has(text, line)
  for _, l in ipairs(lines(text)) do
    if l == line then return true end
  end
  return false
end

local function hist(name, count, sum, buckets)
  return { name = name, kind = "histogram", count = count, sum = sum, buckets = buckets }
end

describe("jollyjet.prometheus", function()
  describe("parse_name", function()
    it("splits a family from its labels and unescapes values", function()
      local fam, labels = prometheus.parse_name('http_requests{route="/a/{id}",method="GET",status="200"}')
      assert.are.equal("http_requests", fam)
      assert.are.same({ { "route", "/a/{id}" }, { "method", "GET" }, { "status", "200" } }, labels)
      fam, labels = prometheus.parse_name("plain")
      assert.are.equal("plain", fam)
      assert.are.same({}, labels)
      fam, labels = prometheus.parse_name('x{v="a\\"b\\\\c\\nd,e}"}')
      assert.are.equal("x", fam)
      assert.are.same({ { "v", 'a"b\\c\nd,e}' } }, labels)
    end)

    it("refuses malformed label sets", function()
      for _, bad in ipairs({ "", "{a=\"b\"}", "x{", "x{a=b}", 'x{a="b"', 'x{a="b",}', 'x{a="b"c="d"}',
                             'x{a="1",a="2"}', 'x{1a="b"}', "x}" }) do
        assert.is_nil(prometheus.parse_name(bad), bad)
      end
      assert.has_error(function() prometheus.parse_name(1) end)
    end)
  end)

  describe("render", function()
    it("names counters _total and gauges as they are, with HELP and TYPE once per family", function()
      local text, skipped = prometheus.render({
        { name = 'cache_hits{ns="product"}', kind = "counter", value = 7 },
        { name = 'cache_hits{ns="list"}', kind = "counter", value = 2 },
        { name = "workers", kind = "gauge", value = 2 },
        { name = "already_total", kind = "counter", value = 1 },
      }, { bounds_ms = BOUNDS })
      assert.are.equal(0, skipped)
      assert.is_true(has(text, "# TYPE jollyjet_cache_hits_total counter"))
      assert.is_true(has(text, "# HELP jollyjet_cache_hits_total Cache hits (fresh values) by namespace."))
      assert.is_true(has(text, 'jollyjet_cache_hits_total{ns="list"} 2'))
      assert.is_true(has(text, 'jollyjet_cache_hits_total{ns="product"} 7'))
      assert.is_true(has(text, "# TYPE jollyjet_workers gauge"))
      assert.is_true(has(text, "jollyjet_workers 2"))
      assert.is_true(has(text, "jollyjet_already_total 1"))
      local types = 0
      for _, l in ipairs(lines(text)) do
        if l:find("^# TYPE jollyjet_cache_hits_total ") then types = types + 1 end
      end
      assert.are.equal(1, types)
      -- samples sorted by labels, right after their TYPE line
      local ls = lines(text)
      for i, l in ipairs(ls) do
        if l == "# TYPE jollyjet_cache_hits_total counter" then
          assert.are.equal('jollyjet_cache_hits_total{ns="list"} 2', ls[i + 1])
          assert.are.equal('jollyjet_cache_hits_total{ns="product"} 7', ls[i + 2])
        end
      end
      assert.are.equal("\n", text:sub(-1))
    end)

    it("exposes histograms in seconds, buckets cumulative up to +Inf", function()
      local b = { 1, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 4 }
      local text = prometheus.render({ hist('http_duration{route="/x"}', 4, 7012.5, b) }, { bounds_ms = BOUNDS })
      assert.is_true(has(text, "# TYPE jollyjet_http_request_duration_seconds histogram"))
      assert.is_true(has(text, 'jollyjet_http_request_duration_seconds_bucket{route="/x",le="0.0005"} 1'))
      assert.is_true(has(text, 'jollyjet_http_request_duration_seconds_bucket{route="/x",le="0.001"} 2'))
      assert.is_true(has(text, 'jollyjet_http_request_duration_seconds_bucket{route="/x",le="2.5"} 3'))
      assert.is_true(has(text, 'jollyjet_http_request_duration_seconds_bucket{route="/x",le="5"} 3'))
      assert.is_true(has(text, 'jollyjet_http_request_duration_seconds_bucket{route="/x",le="+Inf"} 4'))
      assert.is_true(has(text, 'jollyjet_http_request_duration_seconds_sum{route="/x"} 7.012500'))
      assert.is_true(has(text, 'jollyjet_http_request_duration_seconds_count{route="/x"} 4'))
      text = prometheus.render({ hist("lock_wait", 1, 3, b) }, { bounds_ms = BOUNDS })
      assert.is_true(has(text, 'jollyjet_lock_wait_seconds_bucket{le="0.005"} 3'))
      assert.is_true(has(text, "jollyjet_lock_wait_seconds_count 1"))
    end)

    it("escapes label values and cleans metric names", function()
      local text = prometheus.render({
        { name = 'odd{v="a\\"b\\\\c\\nd"}', kind = "counter", value = 1 },
        { name = 'lone{v="a\\b"}', kind = "counter", value = 1 },
        { name = "ratelimit.rejected", kind = "counter", value = 3 },
      }, { bounds_ms = BOUNDS })
      assert.is_true(has(text, 'jollyjet_odd_total{v="a\\"b\\\\c\\nd"} 1'))
      assert.is_true(has(text, 'jollyjet_lone_total{v="a\\\\b"} 1'))
      assert.is_true(has(text, "jollyjet_ratelimit_rejected_total 3"))
      assert.are.equal("a\\\\b\\\"c\\n", prometheus.escape_label('a\\b"c\n'))
    end)

    it("skips what it cannot expose: malformed names, type clashes, duplicates", function()
      local text, skipped = prometheus.render({
        { name = "x{broken", kind = "counter", value = 1 },
        { name = 'same{a="1"}', kind = "counter", value = 1 },
        { name = 'same_total{a="2"}', kind = "gauge", value = 1 },      -- another type, same family
        { name = 'dup{a="1"}', kind = "counter", value = 1 },
        { name = 'dup_total{a="1"}', kind = "counter", value = 2 },     -- the same exposed sample
        { name = 'h{le="1"}', kind = "histogram", count = 0, sum = 0, buckets = {} },   -- its own le
      }, { bounds_ms = BOUNDS })
      assert.are.equal(4, skipped)
      assert.is_true(has(text, 'jollyjet_same_total{a="1"} 1'))
      assert.is_false(text:find('a="2"', 1, true) ~= nil)
      assert.is_true(has(text, 'jollyjet_dup_total{a="1"} 1'))
    end)

    it("renders what engine.metrics.collect returns", function()
      metrics.incr("spec_prom_runs")   -- names of this run only: the table outlives a run
      local p = ("spec_prom%d_"):format(metrics.get("spec_prom_runs"))
      metrics.incr(p .. 'c{k="v"}', 3)
      metrics.set(p .. "g", -2)
      metrics.observe(p .. 'h{k="v"}', 30)
      local recs = metrics.collect(p)
      assert.are.equal(3, #recs)
      local by = {}
      for _, r in ipairs(recs) do by[r.name] = r end
      assert.are.equal("counter", by[p .. 'c{k="v"}'].kind)
      assert.are.equal(3, by[p .. 'c{k="v"}'].value)
      assert.are.equal("gauge", by[p .. "g"].kind)
      assert.are.equal(-2, by[p .. "g"].value)
      local h = by[p .. 'h{k="v"}']
      assert.are.equal("histogram", h.kind)
      assert.are.equal(1, h.count)
      assert.are.equal(30, h.sum)
      assert.are.equal(14, #h.buckets)
      assert.are.equal(0, h.buckets[6])    -- <= 25 ms
      assert.are.equal(1, h.buckets[7])    -- <= 50 ms
      assert.are.same(BOUNDS, metrics.BUCKETS_MS)
      local text = prometheus.render(recs, { bounds_ms = metrics.BUCKETS_MS })
      assert.is_true(has(text, "jollyjet_" .. p .. 'c_total{k="v"} 3'))
      assert.is_true(has(text, "jollyjet_" .. p .. "g -2"))
      assert.is_true(has(text, "jollyjet_" .. p .. 'h_seconds_bucket{k="v",le="0.05"} 1'))
      assert.is_true(has(text, "jollyjet_" .. p .. 'h_seconds_sum{k="v"} 0.030000'))
      assert.has_error(function() metrics.collect(7) end)
      assert.has_error(function() prometheus.render("x") end)
    end)

    it("route ids are stable and set_route is a no-op outside a request", function()
      local a = metrics.route_id("/spec/prom/{id}")
      assert.are.equal(a, metrics.route_id("/spec/prom/{id}"))
      assert.are_not.equal(a, metrics.route_id("/spec/prom/other"))
      assert.are.equal(1, metrics.route_id(("x"):rep(65)))   -- too long: "other"
      assert.is_false(metrics.set_route(a))
      assert.has_error(function() metrics.set_route(-1) end)
      assert.has_error(function() metrics.set_route(1.5) end)
    end)
  end)
end)
