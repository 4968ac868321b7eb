-- verifier_spec.lua: jollyjet.verifier (one round against the real test
-- Redis and the spec database), jollyjet.alerts (one evaluation),
-- jollyjet.background (the loop, its generation check) and the schema of
-- policies/monitoring.lua. Run inside the engine (`jollyjet spec`).
--
-- Products are created by the spec (fresh ids) and rows are changed behind
-- the cache's back with plain SQL, as an operator or another program would.
-- Every product entry under the spec's Redis prefix is removed before each
-- test, so a round samples exactly what the test cached.
local core = require "engine.core"
local redis = require "engine.redis"
local db = require "engine.db"
local lock = require "engine.lock"
local metrics = require "engine.metrics"
local policy = require "jollyjet.policy"
local schema = require "jollyjet.schema"
local monitoring_schema = require "jollyjet.schemas.monitoring"
local cache = require "jollyjet.cache"
local catalog = require "jollyjet.catalog"
local verifier = require "jollyjet.verifier"
local alerts = require "jollyjet.alerts"
local redis_info = require "jollyjet.redis_info"
local background = require "jollyjet.background"

local orig_get = policy.get
local orig_get_many = catalog.get_many
local orig_scan = cache.scan_keys
local orig_status = redis.status
local orig_fetch_info = redis_info.fetch
local orig_info = core.info

local created = {}   -- product ids to delete afterwards

-- Installs a monitoring policy: the schema's defaults with `over` merged in.
local function use_monitoring(over)
  local m = assert(schema.validate(monitoring_schema, over or {}))
  policy.get = function(name)
    if name == "monitoring" then return m end
    return orig_get(name)
  end
  return m
end

-- Deletes every product entry (value, lease, tombstone) under the spec's prefix.
local function clear_product_entries()
  local cursor = "0"
  repeat
    local nxt, keys = assert(cache.scan_keys("product", cursor, 500))
    for _, k in ipairs(keys) do
      redis.call("DEL", cache.value_key("product", k), redis.key("l", (cache.epoch()), "product", k),
                 redis.key("w", "product", k))
    end
    cursor = nxt
  until cursor == "0"
  redis.call("DEL", redis.key("verifier", "cursor"), redis.key("verifier", "pending"))
end

local function new_product(name)
  local row = assert(catalog.create({ name = name or "spec verifier product", description = "d", price = 10,
                                      stock = 1, category = "spec" }))
  created[#created + 1] = row.id
  return row
end

-- What GET /api/products/{id} does: cache the product's JSON with its version.
local function loader(id)
  return function()
    local row, err = catalog.get(id)
    if not row then return nil, err end
    return catalog.encode(row), row.version
  end
end

local function cache_product(id)
  local v, err, src = cache.fetch("product", id, loader(id))
  assert.is_nil(err)
  return v, src
end

local function bump(id, cents)
  assert(db.exec("UPDATE products SET price_cents = ?, version = version + 1 WHERE id = ?", cents, id))
end

local function by_key(report)
  local t = {}
  for _, m in ipairs(report.mismatches) do t[m.key] = m end
  return t
end

local function counters()
  return { checks = metrics.get("consistency_checks"), errors = metrics.get("consistency_errors"),
           repairs = metrics.get("consistency_repairs") }
end

describe("jollyjet.verifier", function()
  before_each(function()
    use_monitoring()
    clear_product_entries()
  end)

  after_each(function()
    policy.get = orig_get
    catalog.get_many = orig_get_many
    cache.scan_keys = orig_scan
    for _, id in ipairs(created) do db.exec("DELETE FROM products WHERE id = ?", id) end
    created = {}
    clear_product_entries()
  end)

  it("checks nothing when nothing is cached", function()
    local report = assert(verifier.run_once())
    assert.are.equal(0, report.checked)
    assert.are.equal(0, report.errors)
  end)

  it("finds consistent entries consistent and counts the checks", function()
    local a, b = new_product(), new_product()
    cache_product(a.id)
    cache_product(b.id)
    local before = counters()
    local report = assert(verifier.run_once())
    assert.are.equal(2, report.checked)
    assert.are.equal(0, report.errors)
    local after = counters()
    assert.are.equal(before.checks + 2, after.checks)
    assert.are.equal(before.errors, after.errors)
    assert.are.equal(2, metrics.get("consistency_last_checked"))
    assert.are.equal(0, metrics.get("consistency_last_errors"))
    assert.is_true(math.abs(metrics.get("consistency_last_time") - core.time()) < 5)
  end)

  it("detects a row changed behind the cache, invalidates the entry, and the next read is fresh", function()
    local p, q = new_product(), new_product()
    local text = cache_product(p.id)
    cache_product(q.id)
    assert.truthy(text:find('"price":10,', 1, true))
    bump(p.id, 4242)
    local before = counters()
    local report = assert(verifier.run_once())
    assert.are.equal(2, report.checked)
    assert.are.equal(1, report.errors)
    assert.are.equal(1, report.repaired)
    local m = by_key(report)[p.id]
    assert.are.same({ key = p.id, reason = "version", cached_version = 1, db_version = 2 }, m)
    local after = counters()
    assert.are.equal(before.errors + 1, after.errors)
    assert.are.equal(before.repairs + 1, after.repairs)
    assert.is_nil(cache.peek_entry("product", p.id))        -- invalidated
    assert.is_not_nil(cache.peek_entry("product", q.id))    -- left alone
    local v, src = cache_product(p.id)
    assert.are.equal("MISS", src)
    assert.truthy(v:find('"price":42.42,', 1, true))
    assert.truthy(v:find('"version":2,', 1, true))
    -- and the next round finds it consistent
    report = assert(verifier.run_once())
    assert.are.equal(0, report.errors)
  end)

  it("a fill that read the old row cannot store it after the repair (the version fences it)", function()
    local p = new_product()
    cache_product(p.id)
    bump(p.id, 500)
    assert(verifier.run_once())
    -- a late fill with the version the cache had before
    local _, err = cache.fetch("product", p.id, function() return catalog.encode(p), 1 end)
    assert.is_nil(err)
    assert.is_nil(cache.peek_entry("product", p.id))   -- refused: tombstone says version 2
  end)

  it("detects a cached product whose row was deleted", function()
    local p = new_product()
    cache_product(p.id)
    assert(db.exec("DELETE FROM products WHERE id = ?", p.id))
    local report = assert(verifier.run_once())
    local m = by_key(report)[p.id]
    assert.are.equal("deleted", m.reason)
    assert.are.equal(1, m.cached_version)
    assert.is_nil(m.db_version)
    assert.is_nil(cache.peek_entry("product", p.id))
    local v = cache_product(p.id)
    assert.is_nil(v)   -- now a (negative) miss
  end)

  it("detects a cached 'not found' while the row exists", function()
    local id = catalog.new_id()
    created[#created + 1] = id
    local v = cache_product(id)
    assert.is_nil(v)
    local e = cache.peek_entry("product", id)
    assert.is_true(e.negative)
    assert(db.exec("INSERT INTO products (id, name, description, price_cents, stock, category, images, "
      .. "is_active, wishlist_count, version, created_at, updated_at) VALUES (?, 'late', 'd', 100, 1, 'spec', "
      .. "'[]', 1, 0, 3, '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z')", id))
    local report = assert(verifier.run_once())
    local m = by_key(report)[id]
    assert.are.same({ key = id, reason = "exists", db_version = 3 }, m)
    local text = cache_product(id)
    assert.truthy(text:find('"name":"late"', 1, true))
  end)

  it("skips an entry a write replaced while the round read the database", function()
    local p = new_product()
    cache_product(p.id)
    bump(p.id, 700)
    catalog.get_many = function(ids)
      local rows = orig_get_many(ids)
      -- the write's own invalidation path lands now: write-through of version 2
      cache.set("product", p.id, catalog.encode(rows[p.id]), { version = rows[p.id].version })
      return rows
    end
    local report = assert(verifier.run_once())
    assert.are.equal(1, report.checked)
    assert.are.equal(0, report.errors)
    assert.are.equal(1, report.skipped)
    assert.are.equal(2, cache.peek_entry("product", p.id).version)   -- the write's value stays
  end)

  it("answers busy while another round holds the lock", function()
    local lk = assert(lock.acquire("verifier", { ttl_ms = 5000 }))
    local report, err = verifier.run_once()
    assert.is_nil(report)
    assert.are.equal("busy", err)
    lk:release()
    assert.is_truthy(verifier.run_once())
  end)

  it("holds the lock to its TTL when asked to (the timer's rounds), and releases it otherwise", function()
    use_monitoring({ verifier = { interval = 2 } })
    assert(verifier.run_once())
    assert.are.equal(0, redis.call("EXISTS", redis.key("lock", "verifier")))
    assert(verifier.run_once({ hold = true }))
    local pttl = redis.call("PTTL", redis.key("lock", "verifier"))
    assert.is_true(pttl > 1000 and pttl <= 1800, tostring(pttl))
    local _, err = verifier.run_once()
    assert.are.equal("busy", err)
    redis.call("DEL", redis.key("lock", "verifier"))
  end)

  it("samples at most `sample` entries and walks the keyspace across rounds with the stored cursor", function()
    local ids = {}
    for i = 1, 12 do
      local p = new_product("spec walk " .. i)
      cache_product(p.id)
      ids[p.id] = true
    end
    local seen, rounds = {}, 0
    for _ = 1, 40 do
      local report = assert(verifier.run_once({ sample = 3, scan_count = 2 }))
      assert.is_true(report.checked <= 3)
      for _, k in ipairs(report.keys) do seen[k] = true end
      rounds = rounds + 1
      local all = true
      for id in pairs(ids) do if not seen[id] then all = false end end
      if all then break end
    end
    for id in pairs(ids) do assert.is_true(seen[id], id .. " never sampled in " .. rounds .. " rounds") end
    assert.is_true(rounds >= 4, "12 entries, 3 a round: " .. rounds)
    assert.is_string(redis.call("GET", redis.key("verifier", "cursor")))
  end)

  it("makes at most max_scans SCAN calls a round", function()
    for i = 1, 5 do cache_product(new_product("spec scans " .. i).id) end
    local calls = 0
    cache.scan_keys = function(ns, cursor, n)
      calls = calls + 1
      local nxt = orig_scan(ns, cursor, n)
      return nxt, {}   -- finds nothing: the round would scan on
    end
    local report = assert(verifier.run_once({ max_scans = 3, scan_count = 1 }))
    assert.are.equal(0, report.checked)
    assert.is_true(calls <= 3, tostring(calls))
  end)

  it("rejects bad run_once options", function()
    assert.has_error(function() verifier.run_once({ sample = 0 }) end,
      "verifier.run_once: sample must be a positive integer")
    assert.has_error(function() verifier.run_once("x") end, "verifier.run_once: opts must be a table")
  end)
end)

describe("jollyjet.cache inspection helpers", function()
  after_each(function()
    for _, id in ipairs(created) do db.exec("DELETE FROM products WHERE id = ?", id) end
    created = {}
    clear_product_entries()
  end)

  it("scan_keys returns cache keys of one namespace; peek_entries decodes envelopes without side effects", function()
    local p = new_product()
    cache_product(p.id)
    local found, cursor = false, "0"
    repeat
      local nxt, keys = assert(cache.scan_keys("product", cursor, 100))
      for _, k in ipairs(keys) do if k == p.id then found = true end end
      cursor = nxt
    until cursor == "0"
    assert.is_true(found)
    local hits = metrics.get('cache_hits{ns="product"}')
    local t = assert(cache.peek_entries("product", { p.id, "p-nothing-here" }))
    assert.are.equal(1, t[p.id].version)
    assert.is_false(t[p.id].negative)
    assert.is_string(t[p.id].raw)
    assert.truthy(t[p.id].value:find(p.id, 1, true))
    assert.is_nil(t["p-nothing-here"])
    assert.are.equal(hits, metrics.get('cache_hits{ns="product"}'))
  end)

  it("raises on misuse", function()
    assert.has_error(function() cache.scan_keys("nope", "0", 10) end)
    assert.has_error(function() cache.scan_keys("product", "x", 10) end,
      "cache.scan_keys: cursor must be a string of digits")
    assert.has_error(function() cache.scan_keys("product", "0", 0) end,
      "cache.scan_keys: count must be a positive integer")
    assert.has_error(function() cache.peek_entries("product", "k") end, "cache.peek_entries: keys must be a list")
    assert.has_error(function() cache.peek_entry("product", 1) end, "cache.peek_entry: key must be a string")
  end)
end)

describe("jollyjet.alerts", function()
  local function active(name) return metrics.get(('alert_active{alert="%s"}'):format(name)) == 1 end
  local function fired_count(name) return metrics.get(('alerts{alert="%s"}'):format(name)) end
  local function has(list, x)
    for _, v in ipairs(list) do if v == x then return true end end
    return false
  end

  before_each(function()
    alerts.reset_baseline()
    redis_info.fetch = function() return { used_memory = 10, maxmemory = 0 } end
  end)

  after_each(function()
    -- resolve whatever a test left firing
    use_monitoring({ alerts = { enabled = false } })
    alerts.evaluate()
    policy.get = orig_get
    redis.status = orig_status
    redis_info.fetch = orig_fetch_info
    alerts.reset_baseline()
  end)

  it("hit_ratio_low fires once below the threshold, stays quiet while firing, and resolves once", function()
    use_monitoring({ alerts = { hit_ratio = { min_percent = 60, min_lookups = 50 } } })
    alerts.evaluate()                                   -- baseline
    local n0 = fired_count("hit_ratio_low")
    metrics.incr('cache_hits{ns="spec_alerts"}', 20)
    metrics.incr('cache_misses{ns="spec_alerts"}', 80)   -- 20 %
    local fired = alerts.evaluate()
    assert.is_true(has(fired, "hit_ratio_low"))
    assert.is_true(active("hit_ratio_low"))
    assert.are.equal(n0 + 1, fired_count("hit_ratio_low"))
    assert.are.equal("hit_ratio_low", alerts.active()[1].name)
    assert.are.equal(60, alerts.active()[1].threshold)
    metrics.incr('cache_misses{ns="spec_alerts"}', 100)   -- still 0 %: no new firing
    fired = alerts.evaluate()
    assert.is_false(has(fired, "hit_ratio_low"))
    assert.are.equal(n0 + 1, fired_count("hit_ratio_low"))
    metrics.incr('cache_hits{ns="spec_alerts"}', 90)
    metrics.incr('cache_misses{ns="spec_alerts"}', 10)    -- 90 %
    local _, resolved = alerts.evaluate()
    assert.is_true(has(resolved, "hit_ratio_low"))
    assert.is_false(active("hit_ratio_low"))
    assert.are.same({}, alerts.active())
  end)

  it("hit_ratio_low does not judge fewer than min_lookups lookups", function()
    use_monitoring({ alerts = { hit_ratio = { min_lookups = 1000 } } })
    alerts.evaluate()
    metrics.incr('cache_misses{ns="spec_alerts"}', 100)
    assert.are.same({}, (alerts.evaluate()))
    assert.is_false(active("hit_ratio_low"))
  end)

  it("redis_memory_high follows used_memory / maxmemory; maxmemory 0 never fires", function()
    use_monitoring({ alerts = { redis_memory = { max_percent = 80 } } })
    redis_info.fetch = function() return { used_memory = 95, maxmemory = 0 } end
    assert.is_false(has((alerts.evaluate()), "redis_memory_high"))
    redis_info.fetch = function() return { used_memory = 81, maxmemory = 100 } end
    assert.is_true(has((alerts.evaluate()), "redis_memory_high"))
    assert.is_true(active("redis_memory_high"))
    redis_info.fetch = function() return nil, "timeout" end   -- cannot tell: no change
    local fired, resolved = alerts.evaluate()
    assert.are.same({}, fired)
    assert.are.same({}, resolved)
    assert.is_true(active("redis_memory_high"))
    redis_info.fetch = function() return { used_memory = 50, maxmemory = 100 } end
    local _, res = alerts.evaluate()
    assert.is_true(has(res, "redis_memory_high"))
  end)

  it("redis_connection_failures fires on reconnects within an interval and on consecutive down rounds", function()
    use_monitoring({ alerts = { redis_connection = { max_reconnects = 3, down_rounds = 2 } } })
    local st = { up = true, reconnects = 10 }
    redis.status = function() return st end
    alerts.evaluate()
    st.reconnects = 12
    assert.are.same({}, (alerts.evaluate()))
    st.reconnects = 15
    assert.is_true(has((alerts.evaluate()), "redis_connection_failures"))
    local _, resolved = alerts.evaluate()          -- no reconnect since
    assert.is_true(has(resolved, "redis_connection_failures"))
    st.up = false
    assert.are.same({}, (alerts.evaluate()))       -- down once
    assert.is_true(has((alerts.evaluate()), "redis_connection_failures"))   -- twice in a row
    st.up = true
    _, resolved = alerts.evaluate()
    assert.is_true(has(resolved, "redis_connection_failures"))
  end)

  it("error_rate_high counts 5xx among http_requests over the interval", function()
    use_monitoring({ alerts = { error_rate = { max_percent = 5, min_requests = 20 } } })
    alerts.evaluate()
    metrics.incr('http_requests{route="/spec",method="GET",status="200"}', 90)
    metrics.incr('http_requests{route="/spec",method="GET",status="503"}', 10)
    assert.is_true(has((alerts.evaluate()), "error_rate_high"))
    metrics.incr('http_requests{route="/spec",method="GET",status="200"}', 100)
    metrics.incr('http_requests{route="/spec",method="GET",status="404"}', 10)   -- 4xx is not an error here
    local _, resolved = alerts.evaluate()
    assert.is_true(has(resolved, "error_rate_high"))
  end)

  it("a disabled alert resolves and never fires", function()
    use_monitoring({ alerts = { redis_memory = { max_percent = 80 } } })
    redis_info.fetch = function() return { used_memory = 99, maxmemory = 100 } end
    assert.is_true(has((alerts.evaluate()), "redis_memory_high"))
    use_monitoring({ alerts = { redis_memory = { enabled = false } } })
    local _, resolved = alerts.evaluate()
    assert.is_true(has(resolved, "redis_memory_high"))
    assert.are.same({}, (alerts.evaluate()))
  end)
end)

describe("jollyjet.background", function()
  after_each(function() core.info = orig_info end)

  -- Polls pred every 10 ms for up to `seconds`.
  local function eventually(seconds, pred)
    local deadline = core.time() + seconds
    while core.time() < deadline do
      if pred() then return true end
      core.sleep(0.01)
    end
    return pred()
  end

  it("runs fn every interval, survives a failing run, and stops once its generation is retired", function()
    local runs = 0
    local loop = assert(background.every("spec_loop_a", 0.02, function()
      runs = runs + 1
      if runs == 2 then error("boom") end
    end))
    assert.is_true(eventually(2, function() return runs >= 4 end))
    assert.has_error(function() background.every("spec_loop_a", 1, function() end) end,
      "background.every: loop 'spec_loop_a' already runs")
    core.info = function()
      local i = orig_info()
      i.generation = i.vm_generation + 1   -- a reload replaced this generation
      return i
    end
    assert.is_true(eventually(2, function() return loop.stopped == "retired" end))
    local n = runs
    core.sleep(0.1)
    assert.are.equal(n, runs)
    assert.is_nil(background.get("spec_loop_a"))
  end)

  it("never overlaps two runs in a worker", function()
    local inside, most, runs = 0, 0, 0
    local loop = assert(background.every("spec_loop_b", 0.01, function()
      inside = inside + 1
      most = math.max(most, inside)
      runs = runs + 1
      core.sleep(0.05)   -- longer than the interval
      inside = inside - 1
    end))
    assert.is_true(eventually(2, function() return runs >= 3 and loop.skipped > 0 end))
    loop:stop()
    assert.is_true(eventually(2, function() return inside == 0 end))
    assert.are.equal(1, most)
  end)

  it("raises on misuse", function()
    assert.has_error(function() background.every("", 1, function() end) end,
      "background.every: name must be a string")
    assert.has_error(function() background.every("x", 0, function() end) end,
      "background.every: seconds must be in (0, 3600]")
    assert.has_error(function() background.every("x", 1, nil) end, "background.every: fn must be a function")
  end)
end)

describe("policies/monitoring.lua schema", function()
  local function err_of(data)
    local v, err = schema.validate(monitoring_schema, data)
    assert.is_nil(v)
    return err
  end

  it("has the documented defaults, and the shipped file validates", function()
    local d = assert(schema.validate(monitoring_schema, {}))
    assert.are.equal(true, d.verifier.enabled)
    assert.are.equal(30, d.verifier.interval)
    assert.are.equal(50, d.verifier.sample)
    assert.are.equal(60, d.alerts.hit_ratio.min_percent)
    assert.are.equal(80, d.alerts.redis_memory.max_percent)
    local chunk = assert(loadfile(core.config().policy_dir .. "/monitoring.lua", "t", {}))
    assert(schema.validate(monitoring_schema, chunk()))
  end)

  it("rejects bad values with a message naming the field", function()
    assert.are.equal("verifier.interval: must be >= 1, got 0", err_of({ verifier = { interval = 0 } }))
    assert.are.equal("verifier.interval: must be <= 3600, got 7200", err_of({ verifier = { interval = 7200 } }))
    assert.are.equal('verifier.sample: expected an integer, got "lots"', err_of({ verifier = { sample = "lots" } }))
    assert.are.equal("verifier.enabled: expected true or false, got 1", err_of({ verifier = { enabled = 1 } }))
    assert.are.equal("alerts.hit_ratio.min_percent: must be <= 100, got 160",
      err_of({ alerts = { hit_ratio = { min_percent = 160 } } }))
    assert.are.equal("alerts.redis_memory.max_pct: unknown field",
      err_of({ alerts = { redis_memory = { max_pct = 80 } } }))
    assert.are.equal("verifer: unknown field", err_of({ verifer = {} }))
  end)
end)
