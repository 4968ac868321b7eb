-- invalidation_spec.lua: jollyjet.invalidation (write events -> cache
-- invalidations, as policy) and jollyjet.decorators (cacheable / evicts),
-- against the real test Redis inside the engine (`jollyjet spec`).
-- Entries are observed through cache.fetch with counting loaders; tag
-- generations are read from Redis. Keys are unique per spec and deleted
-- after it.
local redis = require "engine.redis"
local policy = require "jollyjet.policy"
local schema = require "jollyjet.schema"
local cache = require "jollyjet.cache"
local invalidation = require "jollyjet.invalidation"
local decorators = require "jollyjet.decorators"
local inv_schema = require "jollyjet.schemas.invalidation"

local seq = 0
local used = {}

local function new_id(name)
  seq = seq + 1
  local id = ("spec-inv-%s-%d"):format(name, seq)
  for _, ns in ipairs({ "product", "wishlist" }) do
    if not cache.epoch() then cache.redis_usable() end
    used[#used + 1] = redis.key("c", cache.epoch() or "?", ns, id)
    used[#used + 1] = redis.key("l", cache.epoch() or "?", ns, id)
    used[#used + 1] = redis.key("w", ns, id)
  end
  return id
end

local function gen(tag)
  return tonumber(redis.call("GET", redis.key("t", tag)) or "0")
end

local function gens()
  return { products = gen("products"), product_data = gen("product_data") }
end

-- Did the entry survive? (a fetch whose loader says whether it ran)
local function cached(ns, key)
  local ran = false
  cache.fetch(ns, key, function() ran = true return "reloaded", 1000 end)
  return not ran
end

local function raises(pattern, fn, ...)
  local args = table.pack(...)
  local ok, err = pcall(function() return fn(table.unpack(args, 1, args.n)) end)
  assert.is_false(ok, "expected an error matching " .. pattern)
  assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
end

describe("invalidation", function()
  after_each(function()
    if #used > 0 then
      redis.call("DEL", table.unpack(used))
      used = {}
    end
  end)

  describe("policy", function()
    it("the shipped file passes and says what the schema defaults say", function()
      local loaded = policy.load_all()
      local defaults = assert(schema.validate(inv_schema, {}))
      assert.same(defaults, loaded.invalidation)
      assert.same({ "products" }, loaded.invalidation.events.product_created.tags)
      assert.is_false(loaded.invalidation.events.product_created.entity)
    end)

    it("refuses a missing catalogue event, an empty or unknown when_fields, bad tags", function()
      local function check(events)
        local v, err = schema.validate(inv_schema, { events = events })
        if not v then return nil, err end
        return inv_schema.check(v)
      end
      local base = {
        product_created = { tags = { "products" } },
        product_updated = { entity = true },
        product_deleted = { entity = true },
        wishlist_toggled = { entity = true, session_wishlist = true },
      }
      assert.is_true((check(base)))
      local function with(name, rule)
        local t = {}
        for k, v in pairs(base) do t[k] = v end
        t[name] = rule
        return t
      end
      assert.matches("events%.product_deleted: is required", select(2, check(with("product_deleted", nil))))
      assert.matches("when_fields: empty list",
        select(2, check(with("product_updated", { tags = { "products" }, when_fields = {} }))))
      assert.matches("when_fields: given but",
        select(2, check(with("product_updated", { when_fields = { "name" } }))))
      assert.matches('must be one of.*got "prise"',
        select(2, check(with("product_updated", { tags = { "p" }, when_fields = { "prise" } }))))
      assert.matches("tags%[1%]", select(2, check(with("product_created", { tags = { "a b" } }))))
      assert.matches("unknown field", select(2, check(with("product_created", { tagz = {} }))))
      -- a team may add its own events
      assert.is_true((check(with("category_renamed", { tags = { "products" } }))))
    end)
  end)

  describe("apply (shipped rules)", function()
    before_each(function() policy.load_all() end)

    it("product_created bumps the list tag only; the written-through entry stays", function()
      local id = new_id("created")
      cache.set("product", id, "new", { version = 1 })
      local g0 = gens()
      local done = invalidation.apply("product_created", { id = id, version = 1 })
      assert.same({ "tag:products" }, done)
      assert.equal(g0.products + 1, gen("products"))
      assert.equal(g0.product_data, gen("product_data"))
      assert.is_true(cached("product", id))
    end)

    it("product_updated: entity and product_data always, products when a listed field changed", function()
      local id = new_id("updated")
      cache.set("product", id, "v1", { version = 1 })
      local g0 = gens()
      local done = invalidation.apply("product_updated", { id = id, version = 2, changed = { stock = true } })
      assert.same({ "product:" .. id, "tag:product_data" }, done)
      assert.is_false(cached("product", id))
      assert.equal(g0.products, gen("products"))
      assert.equal(g0.product_data + 1, gen("product_data"))

      done = invalidation.apply("product_updated", { id = id, version = 3, changed = { stock = true, price = true } })
      assert.same({ "product:" .. id, "tag:products", "tag:product_data" }, done)
      assert.equal(g0.products + 1, gen("products"))
      -- unknown change set: assume everything changed
      done = invalidation.apply("product_updated", { id = id, version = 4 })
      assert.same({ "product:" .. id, "tag:products", "tag:product_data" }, done)
    end)

    it("tombstones the entity with ctx.version: a fill of an older row is not stored", function()
      local id = new_id("tomb")
      invalidation.apply("product_deleted", { id = id, version = 6 })
      local loads = 0
      local function old_row() loads = loads + 1 return "old", 5 end
      assert.equal("old", (cache.fetch("product", id, old_row)))
      assert.equal("old", (cache.fetch("product", id, old_row)))
      assert.equal(2, loads)                    -- refused twice, never cached
    end)

    it("product_deleted drops the entity and bumps both tags", function()
      local id = new_id("deleted")
      cache.set("product", id, "v", { version = 1 })
      local g0 = gens()
      invalidation.apply("product_deleted", { id = id, version = 2 })
      assert.is_false(cached("product", id))
      assert.equal(g0.products + 1, gen("products"))
      assert.equal(g0.product_data + 1, gen("product_data"))
    end)

    it("wishlist_toggled drops the product and that session's wishlist, no other", function()
      local id, mine, other = new_id("toggled"), new_id("sid-a"), new_id("sid-b")
      cache.set("product", id, "p", { version = 1 })
      cache.set("wishlist", mine, '{"ids":[]}')
      cache.set("wishlist", other, '{"ids":[]}')
      local g0 = gens()
      local done = invalidation.apply("wishlist_toggled", { id = id, version = 2, session = mine })
      assert.same({ "product:" .. id, "wishlist:" .. mine, "tag:product_data" }, done)
      assert.is_false(cached("product", id))
      assert.is_false(cached("wishlist", mine))
      assert.is_true(cached("wishlist", other))
      assert.equal(g0.products, gen("products"))
    end)

    it("raises on misuse", function()
      raises("event must be a string", invalidation.apply, nil, {})
      raises("no rule for event 'nope'", invalidation.apply, "nope", {})
      raises("ctx.id must be a string", invalidation.apply, "product_updated", { version = 1 })
      raises("ctx.session must be a string", invalidation.apply, "wishlist_toggled", { id = "x", version = 1 })
      raises("ctx.version must be an integer", invalidation.apply, "product_deleted", { id = "x", version = "2" })
      raises("ctx.changed must be a set", invalidation.apply, "product_updated", { id = "x", changed = "name" })
      raises("ctx must be a table", invalidation.apply, "product_created", "x")
    end)
  end)

  describe("policy edits", function()
    local orig_get = policy.get
    after_each(function() rawset(policy, "get", orig_get) end)

    local function use(events)
      local v = assert(schema.validate(inv_schema, { events = events }))
      rawset(policy, "get", function(name)
        if name == "invalidation" then return v end
        return orig_get(name)
      end)
    end

    it("change what an event does without touching the handler", function()
      use({
        product_created = {}, product_deleted = {}, wishlist_toggled = {},
        product_updated = { entity = false, tags = { "products" }, when_fields = { "stock" } },
      })
      local id = new_id("edited")
      cache.set("product", id, "v", { version = 1 })
      local g0 = gens()
      assert.same({}, invalidation.apply("product_updated", { id = id, changed = { name = true } }))
      assert.same({ "tag:products" }, invalidation.apply("product_updated", { id = id, changed = { stock = true } }))
      assert.is_true(cached("product", id))
      assert.equal(g0.products + 1, gen("products"))
    end)
  end)
end)

describe("decorators", function()
  before_each(function() policy.load_all() end)
  after_each(function()
    if #used > 0 then
      redis.call("DEL", table.unpack(used))
      used = {}
    end
  end)

  describe("cacheable", function()
    it("fetches through the cache: the function runs on a miss only", function()
      local id = new_id("cacheable")
      local calls = 0
      local get = decorators.cacheable("product", function(k) return k end, function(k, suffix)
        calls = calls + 1
        return "value of " .. k .. suffix, 1
      end)
      local v, err, source = get(id, "!")
      assert.equal("value of " .. id .. "!", v)
      assert.is_nil(err)
      assert.equal("MISS", source)
      v, err, source = get(id, "?")
      assert.equal("value of " .. id .. "!", v)
      assert.is_nil(err)
      assert.equal("HIT", source)
      assert.equal(1, calls)
    end)

    it("passes the loader's failure through and caches nothing", function()
      local id = new_id("failing")
      local calls = 0
      local get = decorators.cacheable("product", function(k) return k end, function()
        calls = calls + 1
        return nil, "db down"
      end)
      local v, err = get(id)
      assert.is_nil(v)
      assert.equal("db down", err)
      get(id)
      assert.equal(2, calls)
    end)

    it("takes opts as a table or a function of the arguments", function()
      local id = new_id("opts")
      local calls = 0
      local get = decorators.cacheable("product", function(k) return k end,
        function() calls = calls + 1 return "v", 1 end,
        function(_, fresh) return fresh and { bypass = true } or nil end)
      get(id)
      get(id)
      local _, _, source = get(id, true)
      assert.equal("BYPASS", source)
      assert.equal(2, calls)
    end)

    it("raises on misuse", function()
      raises("unknown cache namespace 'nope'", decorators.cacheable, "nope", tostring, tostring)
      raises("key_fn must be a function", decorators.cacheable, "product", "k", tostring)
      raises("fn must be a function", decorators.cacheable, "product", tostring, nil)
      raises("opts must be a table or a function", decorators.cacheable, "product", tostring, tostring, 5)
      local get = decorators.cacheable("product", function() return 42 end, tostring)
      raises("key_fn returned number", get, "x")
    end)
  end)

  describe("evicts", function()
    it("event name: applies it with the row's id and version after a success", function()
      local id = new_id("evicts_row")
      cache.set("product", id, "v", { version = 1 })
      local g0 = gens()
      local delete = decorators.evicts("product_deleted", function(pid)
        return { id = pid, version = 9 }, "extra"
      end)
      local row, extra = delete(id)
      assert.same({ id = id, version = 9 }, row)
      assert.equal("extra", extra)
      assert.is_false(cached("product", id))
      assert.equal(g0.products + 1, gen("products"))
    end)

    it("does nothing when the function fails or finds nothing, and returns its results", function()
      local id = new_id("evicts_nil")
      cache.set("product", id, "v", { version = 1 })
      local g0 = gens()
      local f = decorators.evicts("product_deleted", function() return nil, "not found" end)
      local a, b = f(id)
      assert.is_nil(a)
      assert.equal("not found", b)
      local g = decorators.evicts("product_created", function() error("write failed", 0) end)
      local ok, err = pcall(g)
      assert.is_false(ok)
      assert.equal("write failed", err)
      assert.is_true(cached("product", id))
      assert.same(g0, gens())
    end)

    it("function spec: computes the event and ctx from the result and the arguments", function()
      local id = new_id("evicts_fn")
      local sid = new_id("evicts_sid")
      cache.set("product", id, "v", { version = 1 })
      cache.set("wishlist", sid, "w")
      local seen
      local toggle = decorators.evicts(function(version, pid, session)
        seen = { version, pid, session }
        return "wishlist_toggled", { id = pid, version = version, session = session }
      end, function() return 4 end)
      assert.equal(4, toggle(id, sid))
      assert.same({ 4, id, sid }, seen)
      assert.is_false(cached("product", id))
      assert.is_false(cached("wishlist", sid))
      -- returning no event: nothing to do
      local g0 = gens()
      local noop = decorators.evicts(function() return nil end, function() return true end)
      assert.is_true(noop())
      assert.same(g0, gens())
    end)

    it("table spec: a fixed event and a ctx function", function()
      local id = new_id("evicts_tbl")
      cache.set("product", id, "v", { version = 1 })
      local g0 = gens()
      local update = decorators.evicts({
        event = "product_updated",
        ctx = function(row, _, input)
          local changed = {}
          for k in pairs(input) do changed[k] = true end
          return { id = row.id, version = row.version, changed = changed }
        end,
      }, function(pid) return { id = pid, version = 2 } end)
      update(id, { stock = 3 })
      assert.is_false(cached("product", id))
      assert.equal(g0.products, gen("products"))
      assert.equal(g0.product_data + 1, gen("product_data"))
    end)

    it("raises on misuse", function()
      raises("fn must be a function", decorators.evicts, "product_created", nil)
      raises("no rule for event 'nope'", decorators.evicts, "nope", tostring)
      raises("spec.ctx must be a function", decorators.evicts, { event = "product_created", ctx = 1 }, tostring)
      raises("spec must be", decorators.evicts, 42, tostring)
      -- a ctx the rule cannot use is misuse too, after fn ran
      local bad = decorators.evicts("product_deleted", function() return true end)
      raises("ctx.id must be a string", bad)
    end)
  end)
end)
