-- cache_spec.lua: jollyjet.cache against the real test Redis and the spec
-- database, run inside the engine (`jollyjet spec`): every Redis and
-- database call yields the spec's task, core.spawn gives concurrent tasks.
--
-- Each spec installs its own cache configuration by stubbing policy.get
-- ("cache" only), so it can use sub-second TTLs, graces and lags that the
-- schema (integer seconds) would refuse; cache.lua reads the policy at call
-- time. Keys are unique per spec and every Redis key a spec may have made
-- (value, lease, tombstone, tag generation) is deleted after it.
local core = require "engine.core"
local redis = require "engine.redis"
local db = require "engine.db"
local lru = require "engine.lru"
local policy = require "jollyjet.policy"
local schema = require "jollyjet.schema"
local cache_schema = require "jollyjet.schemas.cache"
local cache = require "jollyjet.cache"

local orig_get = policy.get
local orig_status = redis.status
local orig_ready = redis.ready
local orig_pipeline = redis.pipeline

-- ------------------------------------------------------------ helpers

local used = {}   -- Redis keys to delete after the spec
local seq = 0

-- Value and lease keys carry the cache epoch (learned on first use).
local function epoch()
  if not cache.epoch() then cache.redis_usable() end
  return assert(cache.epoch(), "cache epoch unknown")
end
local function vkey(ns, key) return redis.key("c", epoch(), ns, key) end
local function lkey(ns, key) return redis.key("l", epoch(), ns, key) end
local function wkey(ns, key) return redis.key("w", ns, key) end
local function tkey(tag) return redis.key("t", tag) end

-- A fresh cache key for namespace ns; its Redis keys are cleaned up.
local function new_key(ns, name)
  seq = seq + 1
  local key = ("spec_cache:%s:%d"):format(name or "k", seq)
  used[#used + 1] = vkey(ns, key)
  used[#used + 1] = lkey(ns, key)
  used[#used + 1] = wkey(ns, key)
  return key
end

-- A fresh tag; its generation key is cleaned up.
local function new_tag(name)
  seq = seq + 1
  local tag = ("spec_cache_tag:%s:%d"):format(name or "t", seq)
  used[#used + 1] = tkey(tag)
  return tag
end

local function deep_merge(dst, src)
  for k, v in pairs(src) do
    if type(v) == "table" and type(dst[k]) == "table" then deep_merge(dst[k], v) else dst[k] = v end
  end
  return dst
end

-- Installs a cache policy: the schema defaults, made deterministic (no
-- XFetch, no jitter), then `over` merged in (unvalidated on purpose: tiny
-- TTLs in seconds). Returns the table, which specs may edit in place.
local function use_config(over)
  local c = assert(schema.validate(cache_schema, {}))
  c.beta = 0
  c.jitter = 0
  deep_merge(c, over or {})
  policy.get = function(name)
    if name == "cache" then return c end
    return orig_get(name)
  end
  return c
end

-- A loader that counts its calls; `fn` (optional) computes the result.
local function counting(fn)
  local l = { calls = 0 }
  setmetatable(l, { __call = function(self)
    self.calls = self.calls + 1
    if fn then return fn(self.calls) end
    return "value" .. self.calls, self.calls
  end })
  return function() return l() end, l
end

-- Polls cond() until it is true or `timeout` seconds passed.
local function wait_until(cond, timeout)
  local deadline = core.time() + (timeout or 2)
  while not cond() do
    if core.time() > deadline then return false end
    core.sleep(0.005)
  end
  return true
end

-- The stored envelope of a key, decoded (format of cache.lua's header:
-- "<expiry>|<delta>|<version>|<negative>|<tags>\n<value>").
local function envelope(ns, key)
  local s = redis.call("GET", vkey(ns, key))
  if not s then return nil end
  local x, d, ver, neg, tags, value = s:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^\n]*)\n(.*)$")
  assert(x, "malformed envelope: " .. s)
  return { expiry = tonumber(x), delta = tonumber(d), version = tonumber(ver), negative = neg == "1",
           tags = tags, value = neg ~= "1" and value or nil }
end

local function envelope_at(k)
  local s = redis.call("GET", k)
  if not s then return nil end
  return { value = s:match("\n(.*)$") }
end

local function encode(value, expiry, version)
  return ("%.3f|0.0000|%s|0||\n%s"):format(expiry, version and tostring(version) or "", value)
end

local function stub_redis_down()
  local real = orig_status()
  redis.status = function()
    return { up = false, reconnects = real.reconnects, script_reloads = real.script_reloads,
             last_error = "spec: pretending Redis is down" }
  end
  redis.ready = function() return false, real.reconnects end
end

local function journal_rows()
  return assert(db.query("SELECT id, op, ns, key, version FROM cache_journal ORDER BY id"))
end

-- ------------------------------------------------------------- specs

describe("jollyjet.cache", function()
  before_each(function()
    use_config()
  end)

  after_each(function()
    policy.get = orig_get
    redis.status = orig_status
    redis.ready = orig_ready
    redis.pipeline = orig_pipeline
    if #used > 0 then
      redis.call("DEL", table.unpack(used))
      used = {}
    end
  end)

  describe("fetch", function()
    it("calls the loader once on a miss, then serves an L2 hit that stores value and version", function()
      local key = new_key("product", "basic")
      local loader, l = counting(function() return "body-1", 7 end)
      local v, err, src, level = cache.fetch("product", key, loader)
      assert.equal("body-1", v)
      assert.is_nil(err)
      assert.equal("MISS", src)
      assert.equal("DB", level)
      assert.equal(1, l.calls)

      v, err, src, level = cache.fetch("product", key, loader)
      assert.equal("body-1", v)
      assert.is_nil(err)
      assert.equal("HIT", src)
      assert.equal("L2", level)
      assert.equal(1, l.calls)

      local env = envelope("product", key)
      assert.equal("body-1", env.value)
      assert.equal(7, env.version)
      assert.is_false(env.negative)
      assert.is_nil(redis.call("GET", lkey("product", key)))   -- the lease was given back
    end)

    it("coalesces 50 concurrent misses of one key into one loader call (single-flight)", function()
      local key = new_key("product", "flight")
      local loader, l = counting(function() core.sleep(0.05) return "shared", 1 end)
      local results, done = {}, 0
      for i = 1, 50 do
        core.spawn(function()
          results[i] = table.pack(cache.fetch("product", key, loader))
          done = done + 1
        end)
      end
      assert.is_true(wait_until(function() return done == 50 end, 5))
      assert.equal(1, l.calls)
      local sources = {}
      for i = 1, 50 do
        assert.equal("shared", results[i][1])
        assert.is_nil(results[i][2])
        sources[results[i][3]] = (sources[results[i][3]] or 0) + 1
      end
      assert.same({ MISS = 1, HIT = 49 }, sources)
    end)

    it("does not cache a loader failure: nil, err, and the lease is given back", function()
      local key = new_key("product", "fail")
      local loader, l = counting(function() return nil, "db exploded" end)
      local v, err, src = cache.fetch("product", key, loader)
      assert.is_nil(v)
      assert.equal("db exploded", err)
      assert.equal("MISS", src)
      assert.is_nil(redis.call("GET", vkey("product", key)))
      assert.is_nil(redis.call("GET", lkey("product", key)))
      local t0 = core.time()
      v, err = cache.fetch("product", key, loader)
      assert.is_nil(v)
      assert.equal("db exploded", err)
      assert.equal(2, l.calls)
      assert.is_true(core.time() - t0 < 0.5)
    end)

    it("gives the lease back when the loader raises, so the next fetch does not wait for it", function()
      use_config({ lease_ms = 3000 })
      local key = new_key("product", "raise")
      local ok, msg = pcall(cache.fetch, "product", key, function() error("loader bug") end)
      assert.is_false(ok)
      assert.matches("loader bug", tostring(msg))
      assert.is_nil(redis.call("GET", lkey("product", key)))
      local t0 = core.time()
      local v, _, src = cache.fetch("product", key, function() return "fine", 1 end)
      assert.equal("fine", v)
      assert.equal("MISS", src)
      assert.is_true(core.time() - t0 < 0.5, "waited for a dead lease")
    end)

    it("serves the loader directly and stores nothing with opts.bypass", function()
      local key = new_key("product", "bypass")
      local loader, l = counting()
      local v, err, src, level = cache.fetch("product", key, loader, { bypass = true })
      assert.equal("value1", v)
      assert.is_nil(err)
      assert.equal("BYPASS", src)
      assert.equal("DB", level)
      assert.equal(1, l.calls)
      assert.is_nil(redis.call("GET", vkey("product", key)))
    end)
  end)

  describe("lease across workers", function()
    it("waits for the value the lease holder stores instead of calling its own loader", function()
      local key = new_key("product", "lease")
      assert.equal("OK", redis.call("SET", lkey("product", key), "other-worker", "PX", 2000))
      core.spawn(function()
        core.sleep(0.08)
        cache.set("product", key, "from-holder", { version = 3 })
      end)
      local loader, l = counting()
      local t0 = core.time()
      local v, err, src, level = cache.fetch("product", key, loader)
      assert.equal("from-holder", v)
      assert.is_nil(err)
      assert.equal("HIT", src)
      assert.equal("L2", level)
      assert.equal(0, l.calls)
      assert.is_true(core.time() - t0 >= 0.07)
    end)

    it("takes the lease and loads by itself when the holder's lease expires without a value", function()
      local key = new_key("product", "lease_expired")
      redis.call("SET", lkey("product", key), "dead-worker", "PX", 100)
      local loader, l = counting(function() return "mine", 1 end)
      local v, _, src = cache.fetch("product", key, loader)
      assert.equal("mine", v)
      assert.equal("MISS", src)
      assert.equal(1, l.calls)
      assert.equal("mine", envelope("product", key).value)   -- it held the lease, so it stored
    end)

    it("stops waiting after lease_ms and answers from its loader without storing", function()
      use_config({ lease_ms = 100 })
      local key = new_key("product", "lease_stuck")
      redis.call("SET", lkey("product", key), "stuck-worker", "PX", 5000)
      local loader, l = counting(function() return "direct", 1 end)
      local t0 = core.time()
      local v, _, src = cache.fetch("product", key, loader)
      local took = core.time() - t0
      assert.equal("direct", v)
      assert.equal("MISS", src)
      assert.equal(1, l.calls)
      assert.is_true(took >= 0.09 and took < 1, "waited " .. took)
      assert.is_nil(redis.call("GET", vkey("product", key)))
      assert.equal("stuck-worker", redis.call("GET", lkey("product", key)))
    end)
  end)

  describe("stale-fill protection", function()
    it("does not store a fill that read the row before a versioned invalidation", function()
      local key = new_key("product", "stalefill")
      local row = { value = "old", version = 1 }
      local loader, l = counting(function()
        local seen = { value = row.value, version = row.version }   -- read the row, then stall
        core.sleep(0.15)
        return seen.value, seen.version
      end)
      local first
      core.spawn(function() first = table.pack(cache.fetch("product", key, loader)) end)
      assert.is_true(wait_until(function() return l.calls == 1 end))
      row = { value = "new", version = 2 }                 -- the write ...
      cache.invalidate("product", key, { version = 2 })    -- ... and its invalidation
      assert.is_true(wait_until(function() return first ~= nil end))
      assert.equal("old", first[1])                        -- it asked before the write was answered
      assert.is_nil(redis.call("GET", vkey("product", key)))
      assert.equal("2", redis.call("GET", wkey("product", key)))
      local v, _, src = cache.fetch("product", key, loader)
      assert.equal("new", v)
      assert.equal("MISS", src)
      assert.equal(2, l.calls)
      assert.equal(2, envelope("product", key).version)
    end)

    it("does not hand a fetch that starts after a write the value of a fill that read the old row", function()
      local key = new_key("product", "stalejoin")
      local row = { value = "old", version = 1 }
      local loader, l = counting(function()
        local seen = { value = row.value, version = row.version }
        core.sleep(0.15)
        return seen.value, seen.version
      end)
      local first
      core.spawn(function() first = table.pack(cache.fetch("product", key, loader)) end)
      assert.is_true(wait_until(function() return l.calls == 1 end))
      row = { value = "new", version = 2 }
      cache.invalidate("product", key, { version = 2 })    -- the write is answered here
      local v = cache.fetch("product", key, loader)         -- same worker, fill still in flight
      assert.equal("new", v)
      assert.is_true(wait_until(function() return first ~= nil end))
      assert.equal(2, l.calls)
      assert.equal("new", envelope("product", key).value)
    end)

    it("does not store a tagged fill when its tag was bumped while the loader ran", function()
      local key = new_key("list", "stale_tag")
      local tag = new_tag("products")
      local state = "old"
      local loader, l = counting(function()
        local seen = state
        core.sleep(0.15)
        return seen
      end)
      local first
      core.spawn(function() first = table.pack(cache.fetch("list", key, loader, { tags = { tag } })) end)
      assert.is_true(wait_until(function() return l.calls == 1 end))
      state = "new"
      cache.invalidate_tag(tag)
      assert.is_true(wait_until(function() return first ~= nil end))
      assert.equal("old", first[1])
      assert.is_nil(redis.call("GET", vkey("list", key)))
      assert.is_nil(redis.call("GET", lkey("list", key)))   -- the refused fill let go of its lease
      local v, _, src = cache.fetch("list", key, loader, { tags = { tag } })
      assert.equal("new", v)
      assert.equal("MISS", src)
      assert.equal(2, l.calls)
      v, _, src = cache.fetch("list", key, loader, { tags = { tag } })
      assert.equal("new", v)
      assert.equal("HIT", src)
    end)

    it("does not hand a fetch that starts after a tag bump the value of a fill that began before it", function()
      local key = new_key("list", "stale_tag_join")
      local tag = new_tag("products")
      local state = "old"
      local loader, l = counting(function()
        local seen = state
        core.sleep(0.15)
        return seen
      end)
      local first
      core.spawn(function() first = table.pack(cache.fetch("list", key, loader, { tags = { tag } })) end)
      assert.is_true(wait_until(function() return l.calls == 1 end))
      state = "new"
      cache.invalidate_tag(tag)
      local v = cache.fetch("list", key, loader, { tags = { tag } })
      assert.equal("new", v)
      assert.is_true(wait_until(function() return first ~= nil end))
      assert.equal(2, l.calls)
    end)

    it("refuses a write-through older than the tombstone", function()
      local key = new_key("product", "set_old")
      cache.invalidate("product", key, { version = 5 })
      assert.is_true(cache.set("product", key, "v4", { version = 4 }))
      assert.is_nil(redis.call("GET", vkey("product", key)))
      assert.is_true(cache.set("product", key, "v6", { version = 6 }))
      assert.equal("v6", envelope("product", key).value)
      assert.equal("6", redis.call("GET", wkey("product", key)))
    end)
  end)

  describe("negative caching", function()
    it("caches a 'not found' for ttl.negative, then asks the loader again", function()
      use_config({ ttl = { negative = 0.3 }, grace = 0 })
      local key = new_key("product", "negative")
      local loader, l = counting(function() return nil end)
      local v, err, src = cache.fetch("product", key, loader)
      assert.is_nil(v)
      assert.is_nil(err)
      assert.equal("MISS", src)
      assert.is_true(envelope("product", key).negative)
      for _ = 1, 3 do
        v, err, src = cache.fetch("product", key, loader)
        assert.is_nil(v)
        assert.is_nil(err)
        assert.equal("HIT", src)
      end
      assert.equal(1, l.calls)
      core.sleep(0.35)
      v, err, src = cache.fetch("product", key, loader)
      assert.is_nil(v)
      assert.is_nil(err)
      assert.equal("MISS", src)
      assert.equal(2, l.calls)
    end)
  end)

  describe("freshness", function()
    it("serves an expired entry within the grace as STALE and refreshes it once in the background", function()
      local c = use_config({ ttl = { product = 0.1 }, grace = 2 })
      local key = new_key("product", "swr")
      local loader, l = counting(function(n) core.sleep(0.1) return "v" .. n, n end)
      assert.equal("v1", (cache.fetch("product", key, loader)))
      core.sleep(0.15)
      c.ttl.product = 10   -- the refreshed entry stays fresh
      for _ = 1, 3 do   -- all served at once, while one refresh runs
        local v, err, src, level = cache.fetch("product", key, loader)
        assert.equal("v1", v)
        assert.is_nil(err)
        assert.equal("STALE", src)
        assert.equal("L2", level)
      end
      assert.is_true(wait_until(function() return l.calls == 2 end))
      assert.is_true(wait_until(function() local e = envelope("product", key) return e and e.value == "v2" end))
      local v, _, src = cache.fetch("product", key, loader)
      assert.equal("v2", v)
      assert.equal("HIT", src)
      core.sleep(0.05)
      assert.equal(2, l.calls)
    end)

    it("treats an entry past its grace as a plain miss", function()
      use_config({ ttl = { product = 0.05 }, grace = 0.05 })
      local key = new_key("product", "past_grace")
      local loader, l = counting()
      cache.fetch("product", key, loader)
      core.sleep(0.2)
      local v, _, src = cache.fetch("product", key, loader)
      assert.equal("value2", v)
      assert.equal("MISS", src)
      assert.equal(2, l.calls)
    end)

    it("keeps serving the stale value when the loader fails within the grace (stale-if-error)", function()
      use_config({ ttl = { product = 0.1 }, grace = 2 })
      local key = new_key("product", "sie")
      local failing = false
      local loader, l = counting(function(n)
        if failing then return nil, "database down" end
        return "good" .. n, n
      end)
      cache.fetch("product", key, loader)
      failing = true
      core.sleep(0.15)
      local v, err, src = cache.fetch("product", key, loader)
      assert.equal("good1", v)
      assert.is_nil(err)
      assert.equal("STALE", src)
      assert.is_true(wait_until(function() return l.calls == 2 end))
      core.sleep(0.02)
      assert.equal("good1", envelope("product", key).value)   -- the failed refresh stored nothing
      v, err, src = cache.fetch("product", key, loader)
      assert.equal("good1", v)
      assert.is_nil(err)
      assert.equal("STALE", src)
      assert.is_true(wait_until(function() return l.calls == 3 end))
    end)

    it("does not serve a stale value past the grace when the loader fails (grace shortened by a reload)", function()
      local c = use_config({ ttl = { product = 0.05 }, grace = 5 })
      local key = new_key("product", "sie_past_grace")
      local loader = counting(function(n)
        if n > 1 then return nil, "database down" end
        return "old", 1
      end)
      cache.fetch("product", key, loader)
      c.grace = 0   -- a policy reload: the entry is still in Redis, but out of its grace now
      core.sleep(0.1)
      local v, err, src = cache.fetch("product", key, loader)
      assert.is_nil(v)
      assert.equal("database down", err)
      assert.equal("MISS", src)
    end)

    it("refreshes early in the background near expiry with a large beta (XFetch), serving HITs meanwhile", function()
      -- delta ~ 0.03 s, beta 200: P(refresh) per fetch ~ exp(-time left / 6 s), ~0.7 here.
      use_config({ ttl = { product = 2 }, beta = 200 })
      local key = new_key("product", "xfetch")
      local loader, l = counting(function(n) core.sleep(0.03) return "x" .. n, n end)
      cache.fetch("product", key, loader)
      assert.is_true(envelope("product", key).delta >= 0.02)   -- the recomputation time is recorded
      for i = 1, 20 do
        local _, err, src = cache.fetch("product", key, loader)
        assert.is_nil(err)
        assert.equal("HIT", src, "fetch " .. i)
        core.sleep(0.01)
      end
      assert.is_true(wait_until(function() return l.calls >= 2 end))
      core.sleep(0.1)                  -- let the last background refresh finish before cleanup
      local e = envelope("product", key)
      assert.is_true(e.version >= 2)   -- a refresh stored its value
    end)

    it("never refreshes early with beta = 0", function()
      use_config({ ttl = { product = 2 }, beta = 0 })
      local key = new_key("product", "xfetch_off")
      local loader, l = counting(function(n) core.sleep(0.03) return "x" .. n, n end)
      cache.fetch("product", key, loader)
      for _ = 1, 20 do
        local _, _, src = cache.fetch("product", key, loader)
        assert.equal("HIT", src)
        core.sleep(0.01)
      end
      core.sleep(0.05)
      assert.equal(1, l.calls)
    end)

    it("spreads expiries within ttl * (1 +/- jitter)", function()
      use_config({ ttl = { product = 100 }, jitter = 0.2, grace = 10 })
      local lives, distinct = {}, {}
      for i = 1, 30 do
        local key = new_key("product", "jitter" .. i)
        local t0 = core.time()
        cache.fetch("product", key, function() return "j", 1 end)
        local t1 = core.time()
        local e = envelope("product", key)
        assert.is_true(e.expiry >= t0 + 80 - 0.01 and e.expiry <= t1 + 120 + 0.01,
                       "expiry " .. (e.expiry - t0) .. " s ahead")
        local pttl = redis.call("PTTL", vkey("product", key))
        assert.is_true(pttl >= (80 + 10) * 1000 - 100 and pttl <= (120 + 10) * 1000, "PTTL " .. pttl)
        lives[i] = e.expiry - t0
        distinct[("%.1f"):format(lives[i])] = true
      end
      local n = 0
      for _ in pairs(distinct) do n = n + 1 end
      assert.is_true(n >= 10, "only " .. n .. " distinct lifetimes")
      local min, max = math.min(table.unpack(lives)), math.max(table.unpack(lives))
      assert.is_true(max - min > 10, "spread " .. (max - min))
    end)
  end)

  describe("tags", function()
    it("invalidates every tagged entry with one INCR, leaving untagged and other-tagged entries alone", function()
      local tag, other = new_tag("products"), new_tag("other")
      local tagged = { new_key("list", "tagged1"), new_key("list", "tagged2"), new_key("search", "tagged3") }
      local untagged = new_key("list", "untagged")
      local other_tagged = new_key("list", "othertag")
      local loaders = {}
      local function fetch(ns, key, tags)
        if not loaders[key] then loaders[key] = table.pack(counting()) end
        return cache.fetch(ns, key, loaders[key][1], tags and { tags = tags } or nil)
      end
      local function ns_of(key) return key:find("tagged3", 1, true) and "search" or "list" end
      for _, k in ipairs(tagged) do fetch(ns_of(k), k, { tag }) end
      fetch("list", untagged)
      fetch("list", other_tagged, { other })
      for _, k in ipairs(tagged) do assert.equal("HIT", select(3, fetch(ns_of(k), k, { tag }))) end

      local before = tonumber(redis.call("GET", tkey(tag)) or "0")
      assert.is_true(cache.invalidate_tag(tag))
      assert.equal(before + 1, tonumber(redis.call("GET", tkey(tag))))
      for _, k in ipairs(tagged) do   -- O(1): the entries themselves were not touched ...
        assert.is_not_nil(redis.call("GET", vkey(ns_of(k), k)))
      end
      for _, k in ipairs(tagged) do   -- ... yet each is a miss now
        local v, _, src = fetch(ns_of(k), k, { tag })
        assert.equal("value2", v)
        assert.equal("MISS", src)
      end
      assert.equal("HIT", select(3, fetch("list", untagged)))
      assert.equal("HIT", select(3, fetch("list", other_tagged, { other })))
      assert.equal(1, loaders[untagged][2].calls)
      assert.equal(1, loaders[other_tagged][2].calls)
      for _, k in ipairs(tagged) do assert.equal("HIT", select(3, fetch(ns_of(k), k, { tag }))) end
    end)
  end)

  describe("purge (cache epoch)", function()
    local fastpath = require "engine.fastpath"
    local orig_epoch, orig_call = fastpath.epoch, redis.call
    after_each(function()
      fastpath.epoch = orig_epoch
      redis.call = orig_call
    end)

    it("makes every entry a MISS at once with one INCR, leaving the old entries to their TTL", function()
      local keys = { new_key("product", "purge1"), new_key("list", "purge2") }
      local loader, l = counting()
      for _, k in ipairs(keys) do cache.fetch(k:find("purge1") and "product" or "list", k, loader) end
      local old_keys = { vkey("product", keys[1]), vkey("list", keys[2]) }
      local e0 = epoch()
      assert.equal("HIT", select(3, cache.fetch("product", keys[1], loader)))
      local n = assert(cache.purge())
      assert.equal(e0 + 1, n)
      assert.equal(n, (cache.epoch()))                     -- this worker switched at once
      assert.equal(tostring(n), redis.call("GET", redis.key("epoch")))
      for _, k in ipairs(old_keys) do                      -- O(1): nothing was deleted ...
        assert.is_not_nil(redis.call("GET", k))
        assert.is_true(redis.call("PTTL", k) > 0)          -- ... and it expires by itself
      end
      local v, _, src = cache.fetch("product", keys[1], loader)
      assert.equal("MISS", src)
      assert.equal("value3", v)
      assert.equal(3, l.calls)
      assert.equal("HIT", select(3, cache.fetch("product", keys[1], loader)))
      assert.equal("MISS", select(3, cache.fetch("list", keys[2], loader)))
    end)

    it("does not let a fill that began before a purge be seen after it", function()
      local key = new_key("product", "purge_fill")
      local loader, l = counting(function(n)
        if n == 1 then core.sleep(0.15) return "before-purge", 1 end
        return "after-purge", 2
      end)
      local first
      core.spawn(function() first = table.pack(cache.fetch("product", key, loader)) end)
      assert.is_true(wait_until(function() return l.calls == 1 end))
      local old_key = vkey("product", key)
      assert(cache.purge())
      -- a fetch after the purge does not join the fill in flight
      local v, _, src = cache.fetch("product", key, loader)
      assert.equal("after-purge", v)
      assert.equal("MISS", src)
      assert.is_true(wait_until(function() return first ~= nil end))
      assert.equal("before-purge", first[1])                -- it asked before the purge
      assert.equal("before-purge", envelope_at(old_key).value)   -- stored where nobody reads
      for _ = 1, 3 do
        v, _, src = cache.fetch("product", key, loader)
        assert.equal("after-purge", v)
        assert.equal("HIT", src)
      end
      assert.equal(2, l.calls)
    end)

    it("flushes the L1 of bounded namespaces", function()
      use_config({ namespaces = { wishlist = { consistency = "bounded", max_lag_ms = 5000 } } })
      local key = new_key("wishlist", "purge_l1")
      local loader, l = counting()
      cache.fetch("wishlist", key, loader)
      assert.equal("L1", select(4, cache.fetch("wishlist", key, loader)))
      assert(cache.purge())
      assert.is_nil(lru.cache("wishlist"):get(key))
      local _, _, src, level = cache.fetch("wishlist", key, loader)
      assert.equal("MISS", src)
      assert.equal("DB", level)
      assert.equal(2, l.calls)
    end)

    it("follows a purge announced by another worker on the invalidation channel", function()
      assert.is_true(wait_until(lru.subscriber_up, 3))
      local key = new_key("product", "purge_remote")
      local loader, l = counting()
      cache.fetch("product", key, loader)
      local n = redis.call("INCR", redis.key("epoch"))      -- what cache.purge does elsewhere
      redis.call("PUBLISH", redis.key("invalidate"), "!epoch\t" .. n)
      assert.is_true(wait_until(function() return cache.epoch() == n end))
      assert.equal("MISS", select(3, cache.fetch("product", key, loader)))
      assert.equal(2, l.calls)
    end)

    it("bypasses Redis and journals invalidations while the epoch cannot be learned", function()
      local key = new_key("product", "purge_unknown")
      local loader, l = counting()
      cache.fetch("product", key, loader)
      local known = epoch()
      fastpath.epoch = function() return known, false, 0 end   -- stale, e.g. the subscriber was down
      redis.call = function(cmd, k, ...)
        if cmd == "GET" and k == redis.key("epoch") then return nil, "spec: GET failed" end
        return orig_call(cmd, k, ...)
      end
      local v, _, src, level = cache.fetch("product", key, loader)
      assert.equal("value2", v)
      assert.equal("BYPASS", src)
      assert.equal("DB", level)
      assert.equal(2, l.calls)
      cache.invalidate("product", key, { version = 5 })
      local rows = journal_rows()
      assert.equal(1, #rows)
      fastpath.epoch = orig_epoch
      redis.call = orig_call
      assert.is_true(cache.redis_usable())                 -- learns the epoch, replays the journal
      assert.equal(0, #journal_rows())
      assert.is_nil(redis.call("GET", vkey("product", key)))
      db.exec("DELETE FROM cache_journal")
    end)

    it("learns the epoch from Redis when it is not known (starting at 0 without the key)", function()
      local ep, fresh = cache.epoch()
      assert.is_true(fresh)
      assert.equal(tonumber(redis.call("GET", redis.key("epoch")) or "0"), ep)
    end)
  end)

  describe("inspect and scan", function()
    it("inspect decodes the stored entry: value, version, expiry, tags and whether they are current", function()
      local key = new_key("list", "inspect")
      local tag = new_tag("inspect")
      cache.fetch("list", key, function() return "the value", 7 end, { tags = { tag } })
      local info = assert(cache.inspect("list", key))
      assert.equal("the value", info.value)
      assert.equal(7, info.version)
      assert.is_false(info.negative)
      assert.equal("fresh", info.state)
      assert.is_true(info.ttl > 0 and info.ttl <= 600.01, tostring(info.ttl))   -- expiry has 3 decimals
      assert.is_true(info.redis_ttl_ms > 0)
      assert.is_true(math.abs(info.stored_at - core.time()) < 5)
      assert.same({ [tag] = 0 }, info.tags)
      assert.is_true(info.tags_current)
      assert.is_false(info.in_l1)
      assert.equal(vkey("list", key), info.redis_key)
      cache.invalidate_tag(tag)
      assert.is_false(assert(cache.inspect("list", key)).tags_current)
      assert.is_false(cache.inspect("list", new_key("list", "absent")))
      assert.has_error(function() cache.inspect("nope", "x") end)
    end)

    it("scan pages through the entries of the current epoch by ns:key prefix with SCAN", function()
      local want = {}
      for i = 1, 25 do
        local key = new_key("product", "scan*[x]")   -- glob characters are matched literally
        redis.call("SET", vkey("product", key), encode("v", core.time() + 60), "PX", 60000)
        want["product:" .. key] = true
        if i == 1 then redis.call("SET", redis.key("c", epoch() + 1000, "product", key), "other epoch", "PX", 60000) end
      end
      used[#used + 1] = redis.key("c", epoch() + 1000, "product", "x")
      local got, cursor, pages = {}, "0", 0
      repeat
        local keys, err
        keys, cursor, err = cache.scan("product:spec_cache:scan*[x]", cursor, 10)
        assert.is_nil(err)
        for _, k in ipairs(keys) do
          assert.is_nil(got[k])
          got[k] = true
        end
        pages = pages + 1
      until cursor == "0"
      assert.same(want, got)
      assert.is_true(pages >= 2)
      local none = cache.scan("product:spec_cache:no-such-", "0", 1000)
      assert.same({}, none)
      assert.has_error(function() cache.scan("x", "abc", 10) end)
      assert.has_error(function() cache.scan("x", "0", 0) end)
    end)
  end)

  describe("consistency", function()
    local function bounded(lag_ms, over)
      return use_config(deep_merge({ namespaces = { wishlist = { consistency = "bounded", max_lag_ms = lag_ms } } },
                                   over or {}))
    end

    it("bounded: serves L1 hits after the first fetch, and forgets the key on a local invalidate", function()
      bounded(5000)
      local key = new_key("wishlist", "l1")
      local loader, l = counting()
      local _, _, src, level = cache.fetch("wishlist", key, loader)
      assert.equal("MISS", src)
      assert.equal("DB", level)
      for _ = 1, 3 do
        local v
        v, _, src, level = cache.fetch("wishlist", key, loader)
        assert.equal("value1", v)
        assert.equal("HIT", src)
        assert.equal("L1", level)
      end
      assert.is_not_nil(lru.cache("wishlist"):get(key))
      cache.invalidate("wishlist", key)
      assert.is_nil(lru.cache("wishlist"):get(key))
      local v
      v, _, src = cache.fetch("wishlist", key, loader)
      assert.equal("value2", v)
      assert.equal("MISS", src)
      assert.equal(2, l.calls)
    end)

    it("bounded: a write-through on this worker is read back at once, not from L1", function()
      bounded(5000)
      local key = new_key("wishlist", "l1_set")
      cache.fetch("wishlist", key, function() return "before", 1 end)
      assert.equal("L1", select(4, cache.fetch("wishlist", key, function() return "x" end)))
      cache.set("wishlist", key, "after", { version = 2 })
      local v, _, src, level = cache.fetch("wishlist", key, function() return "loader" end)
      assert.equal("after", v)
      assert.equal("HIT", src)
      assert.equal("L2", level)
    end)

    it("bounded: never trusts an L1 entry longer than max_lag_ms", function()
      bounded(300)
      local key = new_key("wishlist", "lag")
      local loader = counting(function() return "v1", 1 end)
      cache.fetch("wishlist", key, loader)
      assert.equal("L1", select(4, cache.fetch("wishlist", key, loader)))
      -- Redis changes behind the worker's back (no publish, no local delete).
      redis.call("SET", vkey("wishlist", key), encode("v2", core.time() + 60, 2), "PX", 60000)
      local v, _, _, level = cache.fetch("wishlist", key, loader)
      assert.equal("v1", v)          -- allowed: within the lag
      assert.equal("L1", level)
      core.sleep(0.35)
      v, _, _, level = cache.fetch("wishlist", key, loader)
      assert.equal("v2", v)
      assert.equal("L2", level)
    end)

    it("bounded: an L1 entry does not outlive the entry's own expiry", function()
      bounded(5000, { ttl = { wishlist = 0.3 }, grace = 0 })
      local key = new_key("wishlist", "l1_expiry")
      local loader, l = counting()
      cache.fetch("wishlist", key, loader)
      assert.equal("L1", select(4, cache.fetch("wishlist", key, loader)))
      core.sleep(0.35)
      local v, _, src = cache.fetch("wishlist", key, loader)
      assert.equal("value2", v)
      assert.equal("MISS", src)
      assert.equal(2, l.calls)
    end)

    it("strong: never answers from L1", function()
      use_config({ namespaces = { product = { consistency = "strong" } } })
      local key = new_key("product", "strong")
      local loader, l = counting()
      local levels = {}
      for i = 1, 5 do levels[i] = select(4, cache.fetch("product", key, loader)) end
      assert.same({ "DB", "L2", "L2", "L2", "L2" }, levels)
      assert.equal(1, l.calls)
      assert.is_nil(lru.cache("product"):get(key))
    end)
  end)

  describe("when Redis is unavailable", function()
    before_each(function()
      assert.is_true(cache.redis_usable())   -- start from a replayed, clean state
      assert.equal(0, #journal_rows())
    end)

    after_each(function()
      db.exec("DELETE FROM cache_journal")
    end)

    it("reads through the loader (BYPASS) and journals invalidations in the database", function()
      local key = new_key("product", "down")
      local tag = new_tag("down")
      cache.fetch("product", key, function() return "cached", 1 end)
      stub_redis_down()
      local loader, l = counting(function() return "from-db", 2 end)
      local v, err, src, level = cache.fetch("product", key, loader)
      assert.equal("from-db", v)
      assert.is_nil(err)
      assert.equal("BYPASS", src)
      assert.equal("DB", level)
      assert.equal(1, l.calls)
      assert.is_true(cache.invalidate("product", key, { version = 2 }))
      assert.is_true(cache.invalidate_tag(tag))
      assert.is_true(cache.set("product", key, "ignored", { version = 3 }))
      local rows = journal_rows()
      assert.equal(3, #rows)
      assert.same({ "key", "product", key, 2 }, { rows[1].op, rows[1].ns, rows[1].key, rows[1].version })
      assert.same({ "tag", tag, "" }, { rows[2].op, rows[2].ns, rows[2].key })
      assert.is_nil(rows[2].version)
      assert.same({ "key", "product", key, 3 }, { rows[3].op, rows[3].ns, rows[3].key, rows[3].version })
      assert.is_false(cache.redis_usable())
      -- Nothing reached Redis meanwhile.
      assert.equal("cached", envelope("product", key).value)
    end)

    it("replays the journal into Redis before trusting it again, then empties the journal", function()
      local key, key2 = new_key("product", "journal"), new_key("product", "journal2")
      local tag = new_tag("journal")
      cache.fetch("product", key, function() return "stale-in-redis", 1 end)
      cache.fetch("product", key2, function() return "also-stale", 1 end)
      -- A row left by an invalidation that could not reach Redis (another
      -- worker's, or an earlier run's) ...
      assert(db.exec("INSERT INTO cache_journal (op, ns, key, version) VALUES ('key', 'product', ?, 7)", key))
      assert(db.exec("INSERT INTO cache_journal (op, ns, key) VALUES ('tag', ?, '')", tag))
      -- ... and one of ours, made while Redis is down: the journal is dirty.
      stub_redis_down()
      cache.invalidate("product", key2)
      redis.status = orig_status
      redis.ready = orig_ready
      assert.equal(3, #journal_rows())

      local loader, l = counting(function() return "fresh", 7 end)
      local v, err, src = cache.fetch("product", key, loader)   -- replays first
      assert.equal("fresh", v)
      assert.is_nil(err)
      assert.equal("MISS", src)
      assert.equal(1, l.calls)
      assert.equal(0, #journal_rows())
      assert.equal("7", redis.call("GET", wkey("product", key)))
      assert.equal(1, tonumber(redis.call("GET", tkey(tag))))
      assert.is_nil(redis.call("GET", vkey("product", key2)))
      assert.is_true(cache.redis_usable())
    end)

    it("keeps bypassing Redis while the replay fails, and trusts it once the replay succeeds", function()
      local key = new_key("product", "replay_fail")
      cache.fetch("product", key, function() return "old", 1 end)
      stub_redis_down()
      cache.invalidate("product", key, { version = 2 })
      redis.status = orig_status
      redis.ready = orig_ready
      redis.pipeline = function() return nil, "spec: pipeline failed" end
      assert.is_false(cache.redis_usable())
      local v, _, src = cache.fetch("product", key, function() return "new", 2 end)
      assert.equal("new", v)
      assert.equal("BYPASS", src)
      assert.equal(1, #journal_rows())
      redis.pipeline = orig_pipeline
      assert.is_true(cache.redis_usable())
      assert.equal(0, #journal_rows())
      v, _, src = cache.fetch("product", key, function() return "new", 2 end)
      assert.equal("new", v)
      assert.equal("MISS", src)
    end)

    it("makes concurrent readers wait for a replay in progress instead of reading stale Redis", function()
      local key = new_key("product", "replay_race")
      cache.fetch("product", key, function() return "old", 1 end)
      stub_redis_down()
      cache.invalidate("product", key, { version = 2 })
      redis.status = orig_status
      redis.ready = orig_ready
      local usable, got
      core.spawn(function() usable = cache.redis_usable() end)          -- starts the replay
      core.spawn(function() got = table.pack(cache.fetch("product", key, function() return "new", 2 end)) end)
      assert.is_true(wait_until(function() return usable ~= nil and got ~= nil end))
      assert.is_true(usable)
      assert.equal("new", got[1])
      assert.equal("MISS", got[3])
    end)
  end)

  describe("fetch_many", function()
    it("with bypass, reads no level at all, not even L1", function()
      use_config({ namespaces = { wishlist = { consistency = "bounded", max_lag_ms = 5000 } } })
      local k = new_key("wishlist", "mbyp")
      cache.fetch_many("wishlist", { k }, function() return { [k] = { value = "old", version = 1 } } end)
      local _, _, sources = cache.fetch_many("wishlist", { k }, function() return { [k] = { value = "old", version = 1 } } end)
      assert.equal("HIT", sources[k])                    -- cached, in L1 as well
      local values
      values, _, sources = cache.fetch_many("wishlist", { k },
        function() return { [k] = { value = "fresh", version = 2 } } end, { bypass = true })
      assert.equal("fresh", values[k])
      assert.equal("BYPASS", sources[k])
    end)

    it("calls loader_many once with only the missing keys, caching values and not-founds", function()
      local a, b, c, d = new_key("product", "ma"), new_key("product", "mb"), new_key("product", "mc"),
                         new_key("product", "md")
      cache.fetch("product", a, function() return "A", 1 end)
      local calls, asked = 0, nil
      local function loader_many(missing)
        calls = calls + 1
        asked = missing
        local out = {}
        for _, k in ipairs(missing) do
          if k == b then out[k] = { value = "B", version = 1 }
          elseif k == c then out[k] = { value = "C", version = 4 } end   -- d: not found
        end
        return out
      end
      local values, err, sources = cache.fetch_many("product", { a, b, c, d }, loader_many)
      assert.is_nil(err)
      assert.equal(1, calls)
      assert.same({ b, c, d }, asked)
      assert.same({ [a] = "A", [b] = "B", [c] = "C" }, values)
      assert.same({ [a] = "HIT", [b] = "MISS", [c] = "MISS", [d] = "MISS" }, sources)
      assert.equal(4, envelope("product", c).version)
      assert.is_true(envelope("product", d).negative)

      values, err, sources = cache.fetch_many("product", { a, b, c, d }, loader_many)
      assert.is_nil(err)
      assert.equal(1, calls)
      assert.same({ [a] = "A", [b] = "B", [c] = "C" }, values)
      assert.same({ [a] = "HIT", [b] = "HIT", [c] = "HIT", [d] = "HIT" }, sources)
      -- and the entries serve single fetches too
      assert.equal("B", (cache.fetch("product", b, function() error("not called") end)))
    end)

    it("does not store a value older than the tombstone of a newer write", function()
      local k1, k2 = new_key("product", "mv1"), new_key("product", "mv2")
      cache.invalidate("product", k1, { version = 10 })
      cache.invalidate("product", k2, { version = 10 })
      local values = cache.fetch_many("product", { k1, k2 }, function()
        return { [k1] = { value = "old", version = 9 }, [k2] = { value = "current", version = 10 } }
      end)
      assert.same({ [k1] = "old", [k2] = "current" }, values)   -- answered, but ...
      assert.is_nil(redis.call("GET", vkey("product", k1)))     -- ... the stale one was not stored
      assert.equal("current", envelope("product", k2).value)
    end)

    it("returns nil, err when loader_many fails", function()
      local k = new_key("product", "mfail")
      local values, err = cache.fetch_many("product", { k }, function() return nil, "batch failed" end)
      assert.is_nil(values)
      assert.equal("batch failed", err)
      assert.is_nil(redis.call("GET", vkey("product", k)))
    end)
  end)

  describe("misuse", function()
    local function raises(pattern, fn, ...)
      local args = table.pack(...)
      local ok, msg = pcall(function() return fn(table.unpack(args, 1, args.n)) end)
      assert.is_false(ok, "expected an error matching " .. pattern)
      assert.is_truthy(tostring(msg):find(pattern, 1, true), tostring(msg))
    end
    local loader = function() return "x" end

    it("raises on a bad key, an unknown namespace, a non-function loader or a non-string value", function()
      raises("key must be a string", cache.fetch, "product", 42, loader)
      raises("key must be a string", cache.fetch, "product", nil, loader)
      raises("unknown namespace 'nope'", cache.fetch, "nope", "k", loader)
      raises("unknown namespace", cache.fetch, nil, "k", loader)
      raises("loader must be a function", cache.fetch, "product", "k", "not a function")
      raises("keys must be a list", cache.fetch_many, "product", "k", loader)
      raises("loader must be a function", cache.fetch_many, "product", { "k" }, nil)
      raises("unknown namespace", cache.fetch_many, "nope", { "k" }, loader)
      raises("value must be a string", cache.set, "product", "k", 42)
      raises("value must be a string", cache.set, "product", "k", nil)
      raises("unknown namespace", cache.set, "nope", "k", "v")
      raises("key must be a string", cache.invalidate, "product", 1)
      raises("unknown namespace", cache.invalidate, "nope", "k")
      raises("tag must be a string", cache.invalidate_tag, "")
      raises("tag must be a string", cache.invalidate_tag, 3)
    end)

    it("reports the caller's line for a bad argument", function()
      local ok, msg = pcall(cache.fetch, "product", 42, loader)
      assert.is_false(ok)
      local ok2, msg2 = pcall(function() cache.fetch("product", 42, loader) end)
      assert.is_false(ok2)
      assert.matches("cache_spec.lua:%d+:", msg2)
      assert.is_string(msg)
    end)
  end)

  describe("bypass", function()
    it("recognises Cache-Control: no-cache / no-store and Pragma: no-cache", function()
      assert.is_true(cache.bypass({ headers = { ["cache-control"] = "no-cache" } }))
      assert.is_true(cache.bypass({ headers = { ["cache-control"] = "max-age=0, no-store" } }))
      assert.is_true(cache.bypass({ headers = { pragma = "no-cache" } }))
      assert.is_false(cache.bypass({ headers = { ["cache-control"] = "max-age=60" } }))
      assert.is_false(cache.bypass({ headers = {} }))
      assert.is_false(cache.bypass({}))
    end)
  end)
end)
