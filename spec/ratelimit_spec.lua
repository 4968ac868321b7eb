-- ratelimit_spec.lua: engine.ratelimit against the real test Redis (every
-- check is one atomic script on Redis's clock), its local limiter, and the
-- jollyjet.ratelimit middleware on hand-built requests. Keys are unique per
-- test and reset afterwards.
local rl = require("engine.ratelimit")
local redis = require("engine.redis")
local core = require("engine.core")
local schema = require("jollyjet.schema")
local mw = require("jollyjet.ratelimit")
local rl_schema = require("jollyjet.schemas.ratelimits")

local used = {}
local seq = 0

-- A fresh key for this test; reset after each test.
local function K(name)
  seq = seq + 1
  local k = ("spec_rl:%s:%d:%d"):format(name, core.info().pid, seq)
  used[#used + 1] = k
  return k
end

local function ok(res, err)
  assert(err == nil, "ratelimit call failed: " .. tostring(err))
  assert.is_table(res)
  return res
end

local function near(expected, got, tol, what)
  assert(math.abs(expected - got) <= tol,
    ("%s: expected %s (+/- %s), got %s"):format(what or "value", expected, tol, got))
end

local function raises(pattern, fn, ...)
  local args = table.pack(...)
  local good, msg = pcall(function() return fn(table.unpack(args, 1, args.n)) end)
  assert.is_false(good, "expected an error matching " .. pattern)
  assert.is_truthy(tostring(msg):find(pattern, 1, true), tostring(msg))
end

-- n checks in a row: how many were allowed, and the last result.
local function burst(key, rule, n)
  local allowed, last = 0, nil
  for _ = 1, n do
    last = ok(rl.check(key, rule))
    if last.allowed then allowed = allowed + 1 end
  end
  return allowed, last
end

describe("engine.ratelimit", function()
  after_each(function()
    for _, k in ipairs(used) do
      rl.reset(k)
      rl.local_reset(k)
    end
    used = {}
  end)

  describe("gcra", function()
    it("admits exactly limit in a burst, then refuses with the right retry_after", function()
      local key, rule = K("burst"), { limit = 10, period = 20 }   -- T = 2 s
      local first = ok(rl.check(key, rule))
      assert.is_true(first.allowed)
      assert.equal(10, first.limit)
      assert.equal(9, first.remaining)
      near(2, first.reset, 0.05, "reset after one")
      assert.equal(0, first.retry_after)
      local allowed, last = burst(key, rule, 9)
      assert.equal(9, allowed)
      assert.equal(0, last.remaining)
      near(20, last.reset, 0.1, "reset when empty")
      local refused = ok(rl.check(key, rule))
      assert.is_false(refused.allowed)
      assert.equal(0, refused.remaining)
      assert.is_true(refused.retry_after > 1.8 and refused.retry_after <= 2.0, tostring(refused.retry_after))
      near(20, refused.reset, 0.2, "reset when refused")
      -- refusals do not consume
      for _ = 1, 5 do assert.is_false(ok(rl.check(key, rule)).allowed) end
      local again = ok(rl.peek(key, rule))
      assert.is_true(again.retry_after > 1.7 and again.retry_after <= 2.0, tostring(again.retry_after))
    end)

    it("refills one unit per period/limit", function()
      local key, rule = K("refill"), { limit = 10, period = 1 }   -- T = 0.1 s
      assert.equal(10, (burst(key, rule, 10)))
      assert.is_false(ok(rl.check(key, rule)).allowed)
      core.sleep(0.35)
      -- 3 units back (3.5 elapsed intervals, give or take the calls' time)
      local allowed = burst(key, rule, 6)
      assert.is_true(allowed == 3 or allowed == 4, "allowed " .. allowed)
      core.sleep(1.2)
      -- idle for longer than the period: full again, never more than limit
      local st = ok(rl.peek(key, rule))
      assert.equal(10, st.remaining)
      assert.equal(0, st.reset)
      assert.equal(10, (burst(key, rule, 15)))
    end)

    it("honours burst", function()
      local key, rule = K("bucket"), { limit = 60, period = 60, burst = 3 }
      local allowed, last = burst(key, rule, 5)
      assert.equal(3, allowed)
      assert.equal(60, last.limit)
      assert.is_true(last.retry_after > 0.9 and last.retry_after <= 1.0, tostring(last.retry_after))
    end)

    it("charges cost units", function()
      local key, rule = K("cost"), { limit = 10, period = 100, cost = 4 }   -- T = 10 s
      local a = ok(rl.check(key, rule))
      assert.is_true(a.allowed)
      assert.equal(6, a.remaining)
      local b = ok(rl.check(key, rule))
      assert.equal(2, b.remaining)
      local c = ok(rl.check(key, rule))
      assert.is_false(c.allowed)
      assert.equal(2, c.remaining)
      -- two more units needed: 20 s
      assert.is_true(c.retry_after > 19.8 and c.retry_after <= 20, tostring(c.retry_after))
      local d = ok(rl.check(key, { limit = 10, period = 100, cost = 2 }))
      assert.is_true(d.allowed)
      assert.equal(0, d.remaining)
    end)

    it("peek does not consume", function()
      local key, rule = K("peek"), { limit = 3, period = 60 }
      for _ = 1, 5 do
        local p = ok(rl.peek(key, rule))
        assert.is_true(p.allowed)
        assert.equal(3, p.remaining)
      end
      assert.equal(0, tonumber(redis.call("EXISTS", redis.key("rl", "g", key))))
      ok(rl.check(key, rule))
      assert.equal(2, ok(rl.peek(key, rule)).remaining)
      assert.equal(2, ok(rl.peek(key, rule)).remaining)
      burst(key, rule, 2)
      local p = ok(rl.peek(key, rule))
      assert.is_false(p.allowed)
      assert.equal(0, p.remaining)
      assert.is_true(p.retry_after > 19 and p.retry_after <= 20, tostring(p.retry_after))
    end)

    it("reset clears the key", function()
      local key, rule = K("reset"), { limit = 2, period = 60 }
      burst(key, rule, 3)
      assert.is_false(ok(rl.peek(key, rule)).allowed)
      assert.is_true(rl.reset(key))
      assert.equal(2, ok(rl.peek(key, rule)).remaining)
      assert.equal(2, (burst(key, rule, 3)))
    end)

    it("keeps its keys under the engine's prefix and sets a TTL", function()
      local key, rule = K("prefix"), { limit = 5, period = 10 }
      ok(rl.check(key, rule))
      local full = redis.key("rl", "g", key)
      assert.is_truthy(full:find(redis.key(), 1, true) == 1)
      assert.equal(1, redis.call("EXISTS", full))
      assert.equal(0, redis.call("EXISTS", "rl:g:" .. key))
      local pttl = redis.call("PTTL", full)
      assert.is_true(pttl > 0 and pttl <= 2001, tostring(pttl))
    end)

    it("hashes very long keys", function()
      local key = K("long") .. ("x"):rep(300)
      used[#used + 1] = key
      local rule = { limit = 1, period = 60 }
      assert.is_true(ok(rl.check(key, rule)).allowed)
      assert.is_false(ok(rl.check(key, rule)).allowed)
      assert.is_true(ok(rl.check(key .. "y", rule)).allowed)
      assert.equal(0, redis.call("EXISTS", redis.key("rl", "g", key)))
    end)
  end)

  describe("sliding window", function()
    it("admits exactly limit in a window, refuses until the oldest leaves it", function()
      local key, rule = K("sw"), { limit = 5, period = 1, algorithm = "sliding_window" }
      local t0 = core.time()
      local allowed, last = burst(key, rule, 5)
      assert.equal(5, allowed)
      assert.equal(0, last.remaining)
      local r = ok(rl.check(key, rule))
      assert.is_false(r.allowed)
      local elapsed = core.time() - t0
      assert.is_true(r.retry_after <= 1 and r.retry_after >= 1 - elapsed - 0.05, tostring(r.retry_after))
      assert.is_true(r.reset <= 1 and r.reset > 0.5, tostring(r.reset))
      -- half a window later: still nothing (all five are inside it)
      core.sleep(0.5)
      assert.equal(0, (burst(key, rule, 3)))
      core.sleep(r.retry_after - 0.5 + 0.05)
      -- the first five have left: exactly five again
      assert.equal(5, (burst(key, rule, 8)))
    end)

    it("counts cost and keeps peek read-only", function()
      local key, rule = K("swcost"), { limit = 10, period = 60, algorithm = "sliding_window", cost = 4 }
      assert.equal(10, ok(rl.peek(key, rule)).remaining)
      assert.equal(0, redis.call("EXISTS", redis.key("rl", "s", key)))
      local a = ok(rl.check(key, rule))
      assert.equal(6, a.remaining)
      assert.equal(6, ok(rl.peek(key, rule)).remaining)
      local b = ok(rl.check(key, rule))
      assert.equal(2, b.remaining)
      local c = ok(rl.check(key, rule))
      assert.is_false(c.allowed)
      -- the first entry (4 units) must leave: about 60 s
      assert.is_true(c.retry_after > 59 and c.retry_after <= 60, tostring(c.retry_after))
      assert.is_true(ok(rl.check(key, { limit = 10, period = 60, algorithm = "sliding_window", cost = 2 })).allowed)
      assert.equal(1, redis.call("EXISTS", redis.key("rl", "s", key)))
      assert.equal(1, redis.call("EXISTS", redis.key("rl", "m", key)))
      assert.is_true(rl.reset(key))
      assert.equal(0, redis.call("EXISTS", redis.key("rl", "s", key)))
      assert.equal(0, redis.call("EXISTS", redis.key("rl", "m", key)))
      assert.equal(10, ok(rl.peek(key, rule)).remaining)
    end)
  end)

  describe("batching", function()
    -- Checks made in one loop turn go to Redis as one script call; identical
    -- ones are decided as a group. Each must get exactly what checking them
    -- one by one would give.
    local function concurrently(n, fn)
      local ev, done, out = core.event(), 0, {}
      for i = 1, n do
        core.spawn(function()
          out[i] = { fn(i) }
          done = done + 1
          if done == n then ev:signal(true) end
        end)
      end
      assert.is_true(ev:wait(10))
      return out
    end

    it("decides a burst of identical checks exactly, in one call", function()
      local key, rule = K("group"), rl.rule({ limit = 10, period = 100 })   -- T = 10 s
      local before = rl.stats()
      local out = concurrently(25, function() return rl.check(key, rule) end)
      local after = rl.stats()
      local allowed, seen = 0, {}
      for i = 1, 25 do
        local res = ok(out[i][1], out[i][2])
        if res.allowed then
          allowed = allowed + 1
          seen[res.remaining] = true
          assert.equal(0, res.retry_after)
        else
          assert.equal(0, res.remaining)
          assert.is_true(res.retry_after > 9.9 and res.retry_after <= 10, tostring(res.retry_after))
        end
      end
      assert.equal(10, allowed)
      for r = 0, 9 do assert.is_true(seen[r], "remaining " .. r) end   -- each admitted one saw its own
      assert.equal(25, after.checks - before.checks)
      assert.is_true(after.script_calls - before.script_calls <= 2,
        tostring(after.script_calls - before.script_calls))
    end)

    it("keeps keys, costs and algorithms apart inside one call", function()
      local a, b, c = K("ga"), K("gb"), K("gc")
      local ra, rb = { limit = 3, period = 60 }, { limit = 5, period = 60, cost = 2 }
      local rc = { limit = 4, period = 60, algorithm = "sliding_window" }
      local out = concurrently(30, function(i)
        if i % 3 == 0 then return "a", rl.check(a, ra)
        elseif i % 3 == 1 then return "b", rl.check(b, rb)
        else return "c", rl.check(c, rc) end
      end)
      local n = { a = 0, b = 0, c = 0 }
      for i = 1, 30 do
        local which, res, err = out[i][1], out[i][2], out[i][3]
        ok(res, err)
        if res.allowed then n[which] = n[which] + 1 end
      end
      assert.same({ a = 3, b = 2, c = 4 }, n)
      assert.equal(0, ok(rl.peek(a, ra)).remaining)
      assert.equal(1, ok(rl.peek(b, rb)).remaining)
      assert.equal(0, ok(rl.peek(c, rc)).remaining)
    end)
  end)

  describe("compiled rules", function()
    it("are checked once and read back", function()
      local r = rl.rule({ limit = 7, period = 70, cost = 2 })
      assert.equal(7, r.limit)
      assert.equal(70, r.period)
      assert.equal("gcra", r.algorithm)
      assert.equal(7, r.burst)
      assert.equal(2, r.cost)
      assert.is_nil(rl.rule({ limit = 7, period = 70, algorithm = "sliding_window" }).burst)
      local key = K("compiled")
      assert.equal(5, ok(rl.check(key, r)).remaining)
      assert.equal(5, rl.local_check(key, r).remaining)
      raises("rule.limit is required", rl.rule, { period = 1 })
      raises("more than one unit per microsecond", rl.rule, { limit = 100, period = 0.00001 })
      raises("too long", rl.rule, { limit = 1, period = 31 * 86400, burst = 1000000 })
    end)
  end)

  describe("misuse", function()
    it("raises on bad keys and rules", function()
      raises("key must be a string", rl.check, {}, { limit = 1, period = 1 })
      raises("must not be empty", rl.check, "", { limit = 1, period = 1 })
      raises("rule must be a table", rl.check, "k", nil)
      raises("rule.limit is required", rl.check, "k", { period = 1 })
      raises("rule.limit must be between", rl.check, "k", { limit = 0, period = 1 })
      raises("rule.period", rl.check, "k", { limit = 1, period = 0 })
      raises("rule.algorithm", rl.check, "k", { limit = 1, period = 1, algorithm = "leaky" })
      raises("burst applies to gcra only", rl.check, "k",
        { limit = 1, period = 1, algorithm = "sliding_window", burst = 2 })
      raises("more than the rule can ever allow", rl.check, "k", { limit = 2, period = 1, cost = 3 })
      raises("more than one unit per microsecond", rl.peek, "k", { limit = 1000000000, period = 1 })
      raises("rule.cost must be an integer", rl.local_check, "k", { limit = 2, period = 1, cost = 1.5 })
    end)
  end)

  describe("local limiter", function()
    it("is GCRA in this process, no Redis involved", function()
      local key, rule = K("local"), { limit = 4, period = 40 }
      local n = 0
      for _ = 1, 6 do
        if rl.local_check(key, rule).allowed then n = n + 1 end
      end
      assert.equal(4, n)
      local r = rl.local_check(key, rule)
      assert.is_false(r.allowed)
      assert.is_true(r.retry_after > 9.9 and r.retry_after <= 10, tostring(r.retry_after))
      assert.is_true(rl.local_count() >= 1)
      assert.equal(0, redis.call("EXISTS", redis.key("rl", "g", key)))
      assert.is_false(rl.local_peek(key, rule).allowed)
      assert.is_true(rl.local_reset(key))
      assert.equal(4, rl.local_peek(key, rule).remaining)
    end)
  end)
end)

-- ------------------------------------------------------------ middleware

local function policy_of(t)
  local v = assert(schema.validate(rl_schema, t))
  assert(rl_schema.check(v))
  return v
end

local function request(method, path, route, extra)
  local req = { method = method, path = path, route = route, args = {}, headers = {},
                remote_addr = "10.1.2.3", query = "" }
  for k, v in pairs(extra or {}) do req[k] = v end
  return req
end

describe("jollyjet.ratelimit", function()
  local names = {}
  local function rule_name(base)
    seq = seq + 1
    local n = ("%s%d_%d"):format(base, core.info().pid, seq)
    names[#names + 1] = n
    return n
  end

  after_each(function()
    for _, n in ipairs(names) do
      for _, who in ipairs({ "ip:10.1.2.3", "ip:10.9.9.9", "user:u1", "user:u2", "session:s1",
                             "header:k1", "route:GET /api/things/{id}" }) do
        rl.reset(n .. ":" .. who)
        rl.local_reset(n .. ":" .. who)
      end
    end
    names = {}
  end)

  it("validates policies: presets, keys, names, cost", function()
    local function bad(t, pattern)
      local v, err = schema.validate(rl_schema, t)
      if v then v, err = rl_schema.check(v) end
      assert.is_nil(v)
      assert.is_truthy(tostring(err):find(pattern, 1, true), tostring(err))
    end
    bad({ rules = { { name = "a", preset = "nope", prefix = "/" } } }, "unknown preset")
    bad({ rules = { { name = "a", prefix = "/" } } }, "needs a preset or both limit and period")
    bad({ rules = { { name = "a", limit = 1, period = 1 } } }, "needs a route or a prefix")
    bad({ rules = { { name = "a", limit = 1, period = 1, prefix = "/", key = "cookie" } } }, "key must be")
    bad({ rules = { { name = "a", limit = 1, period = 1, prefix = "/" }, { name = "a", limit = 1, period = 1, prefix = "/" } } },
      "already used")
    bad({ rules = { { name = "a", limit = 2, period = 1, prefix = "/", cost = 3 } } }, "can ever allow")
    bad({ rules = { { name = "a", limit = 2, period = 1, prefix = "/", algorithm = "sliding_window", burst = 1 } } },
      "burst applies to gcra only")
    bad({ rules = { { name = "a", limit = 2, period = 1, prefix = "/", failure_mode = "maybe" } } }, "must be one of")
    bad({ allow = { "300.1.1.1" } }, "not an IP address")
    bad({ rules = { { name = "a b", limit = 1, period = 1, prefix = "/" } } }, "does not match")
    -- the shipped defaults are the seeds' presets
    local d = policy_of({})
    assert.same({ limit = 100, period = 60, algorithm = "gcra" }, d.presets.default)
    assert.same({ limit = 5, period = 900, algorithm = "gcra" }, d.presets.auth)
    assert.same({ limit = 30, period = 60, algorithm = "gcra" }, d.presets.search)
    assert.same({ limit = 10, period = 3600, algorithm = "gcra" }, d.presets.upload)
    assert.equal("/api/", d.rules[1].prefix)
  end)

  it("limits matching requests, adds the headers, answers 429 with Retry-After", function()
    local name = rule_name("t")
    local L = mw.compile(policy_of({ rules = { { name = name, limit = 2, period = 60, prefix = "/api/" } } }),
      { enabled = true, workers = 2 })
    local req = request("GET", "/api/things/1", "/api/things/{id}")
    assert.is_nil(mw.apply(L, req))
    assert.equal(('"%s";q=2;w=60'):format(name), req.ratelimit["RateLimit-Policy"])
    assert.equal(('"%s";r=1;t=30'):format(name), req.ratelimit["RateLimit"])
    assert.equal(2, req.ratelimit["X-RateLimit-Limit"])
    assert.equal(1, req.ratelimit["X-RateLimit-Remaining"])
    assert.equal(30, req.ratelimit["X-RateLimit-Reset"])
    local s, h, b = mw.leave(req, 200, { ["Content-Type"] = "text/plain" }, "ok")
    assert.equal(200, s)
    assert.equal("text/plain", h["Content-Type"])
    assert.equal(1, h["X-RateLimit-Remaining"])
    assert.equal("ok", b)
    assert.is_nil(mw.apply(L, request("GET", "/api/things/1", "/api/things/{id}")))
    local st, hh, body = mw.apply(L, request("GET", "/api/things/2", "/api/things/{id}"))
    assert.equal(429, st)
    assert.equal(30, hh["Retry-After"])
    assert.equal(0, hh["X-RateLimit-Remaining"])
    local j = require("cjson").decode(body)
    assert.same({ success = false, error = "Rate limit exceeded", message = "Too many requests, please try again later.",
                  retryAfter = 30 }, j)
    -- another client has its own budget; the path prefix decides; /health never
    assert.is_nil(mw.apply(L, request("GET", "/api/things/2", "/api/things/{id}", { remote_addr = "10.9.9.9" })))
    local other = request("GET", "/other", "/other")
    assert.is_nil(mw.apply(L, other))
    assert.is_nil(other.ratelimit)
    local health = request("GET", "/health", "/health")
    assert.is_nil(mw.apply(mw.compile(policy_of({ rules = { { name = name, limit = 1, period = 60, prefix = "/" } } }),
      { enabled = true }), health))
    assert.is_nil(health.ratelimit)
  end)

  it("matches methods and query arguments; stacks rules", function()
    local a, b = rule_name("all"), rule_name("search")
    local L = mw.compile(policy_of({ rules = {
      { name = a, limit = 10, period = 60, prefix = "/api/" },
      { name = b, limit = 1, period = 60, route = "/api/things", methods = { "GET" }, query = { "search" } },
    } }), { enabled = true })
    local plain = request("GET", "/api/things", "/api/things")
    assert.is_nil(mw.apply(L, plain))
    assert.equal(('"%s";q=10;w=60'):format(a), plain.ratelimit["RateLimit-Policy"])
    local post = request("POST", "/api/things", "/api/things", { args = { search = "x" } })
    mw.apply(L, post)
    assert.is_nil(post.ratelimit["RateLimit-Policy"]:find(b, 1, true))
    local s1 = request("GET", "/api/things", "/api/things", { args = { search = "x" } })
    assert.is_nil(mw.apply(L, s1))
    assert.equal(('"%s";q=10;w=60, "%s";q=1;w=60'):format(a, b), s1.ratelimit["RateLimit-Policy"])
    assert.equal(1, s1.ratelimit["X-RateLimit-Limit"])   -- the most restrictive
    assert.equal(0, s1.ratelimit["X-RateLimit-Remaining"])
    local empty = request("GET", "/api/things", "/api/things", { args = { search = "" } })
    assert.is_nil(mw.apply(L, empty))
    assert.equal(429, (mw.apply(L, request("GET", "/api/things", "/api/things", { args = { search = "y" } }))))
    -- by name
    local st = ok(mw.peek(a, "ip:10.1.2.3", L))
    assert.equal(5, st.remaining)   -- plain, post, s1, empty, and the refused search
    assert.is_true(mw.reset(b, "ip:10.1.2.3", L))
    assert.equal(1, ok(mw.peek(b, "ip:10.1.2.3", L)).remaining)
    local none, err = mw.peek("no-such-rule", "ip:1.1.1.1", L)
    assert.is_nil(none)
    assert.matches("no rate%-limit rule", err)
  end)

  it("keys by user, session, header and route, falling back to the ip", function()
    local u, s, h, r = rule_name("u"), rule_name("s"), rule_name("h"), rule_name("r")
    local function one(name, key)
      return mw.compile(policy_of({ rules = { { name = name, limit = 1, period = 60, prefix = "/api/", key = key } } }),
        { enabled = true })
    end
    local L = one(u, "user")
    assert.is_nil(mw.apply(L, request("GET", "/api/x", "/api/x", { headers = { ["x-user-id"] = "u1" } })))
    assert.is_nil(mw.apply(L, request("GET", "/api/x", "/api/x", { headers = { ["x-user-id"] = "u2" } })))
    assert.equal(429, (mw.apply(L, request("GET", "/api/x", "/api/x", { headers = { ["x-user-id"] = "u1" } }))))
    assert.is_nil(mw.apply(L, request("GET", "/api/x", "/api/x")))   -- no header: its ip
    assert.equal(0, ok(mw.peek(u, "ip:10.1.2.3", L)).remaining)
    L = one(s, "session")
    assert.is_nil(mw.apply(L, request("GET", "/api/x", "/api/x", { headers = { cookie = "a=b; sid=s1" } })))
    assert.equal(429, (mw.apply(L, request("GET", "/api/x", "/api/x", { headers = { cookie = "sid=s1" } }))))
    L = one(h, "header:X-Api-Key")
    assert.is_nil(mw.apply(L, request("GET", "/api/x", "/api/x", { headers = { ["x-api-key"] = "k1" } })))
    assert.equal(429, (mw.apply(L, request("GET", "/api/x", "/api/x",
      { headers = { ["x-api-key"] = "k1" }, remote_addr = "10.9.9.9" }))))
    L = one(r, "route")
    assert.is_nil(mw.apply(L, request("GET", "/api/things/1", "/api/things/{id}")))
    assert.equal(429, (mw.apply(L, request("GET", "/api/things/2", "/api/things/{id}", { remote_addr = "10.9.9.9" }))))
  end)

  it("skips allow-listed addresses and is off when disabled", function()
    local name = rule_name("allow")
    local p = policy_of({ allow = { "10.1.0.0/16", "::1" },
                          rules = { { name = name, limit = 1, period = 60, prefix = "/" } } })
    local L = mw.compile(p, { enabled = true })
    for _ = 1, 3 do
      local req = request("GET", "/x", "/x")
      assert.is_nil(mw.apply(L, req))
      assert.is_nil(req.ratelimit)
    end
    assert.is_nil(mw.apply(L, request("GET", "/x", "/x", { remote_addr = "::1" })))
    assert.is_nil(mw.apply(L, request("GET", "/x", "/x", { remote_addr = "10.9.9.9" })))
    assert.equal(429, (mw.apply(L, request("GET", "/x", "/x", { remote_addr = "10.9.9.9" }))))
    local off = mw.compile(p, { enabled = false })
    local req = request("GET", "/x", "/x", { remote_addr = "10.9.9.9" })
    assert.is_nil(mw.apply(off, req))
    assert.is_nil(req.ratelimit)
  end)
end)
