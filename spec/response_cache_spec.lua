-- response_cache_spec.lua: jollyjet.response_cache against the real test
-- Redis, inside the engine (`jollyjet spec`): keys, ETags, conditional
-- requests, what is stored and what is not, bypass, tags, coalescing.
-- serve() is driven with hand-made requests and a counting `run` (the
-- handler as app.lua passes it: status, headers, body). Every path is unique
-- per spec, and the Redis keys a spec made are deleted after it.
local core = require "engine.core"
local redis = require "engine.redis"
local policy = require "jollyjet.policy"
local schema = require "jollyjet.schema"
local cache = require "jollyjet.cache"
local rc = require "jollyjet.response_cache"

local seq = 0
local used = {}

local function new_path(name)
  seq = seq + 1
  return ("/spec_rc/%s/%d"):format(name, seq)
end

local function new_tag(name)
  seq = seq + 1
  local tag = ("spec_rc_%s_%d"):format(name, seq)
  used[#used + 1] = redis.key("t", tag)
  return tag
end

local function req(path, over)
  local r = { method = "GET", path = path, query = "", headers = {}, route = path }
  for k, v in pairs(over or {}) do r[k] = v end
  return r
end

-- Remembers the entry's Redis keys for cleanup.
local function track(r, rule)
  local k = rc.key(r, rule)
  if not cache.epoch() then cache.redis_usable() end
  used[#used + 1] = redis.key("c", cache.epoch() or "?", "response", k)
  used[#used + 1] = redis.key("l", cache.epoch() or "?", "response", k)
  used[#used + 1] = redis.key("w", "response", k)
end

-- A handler: counts its calls, answers status/headers/body from `reply`.
local function handler(reply)
  local h = { calls = 0 }
  h.reply = reply or { 200, { ["Content-Type"] = "application/json" }, '{"ok":true}' }
  h.run = function()
    h.calls = h.calls + 1
    local hdrs = {}
    for k, v in pairs(h.reply[2] or {}) do hdrs[k] = v end
    return h.reply[1], hdrs, h.reply[3]
  end
  return h
end

local function serve(r, rule, h)
  track(r, rule)
  local status, headers, body = rc.serve(r, rule, h.run)
  return status, headers, body
end

describe("response_cache", function()
  after_each(function()
    if #used > 0 then
      redis.call("DEL", table.unpack(used))
      used = {}
    end
  end)

  describe("key", function()
    local rule = rc.compile({ route = "/x", vary = { "Accept-Language", "X-Tenant" } })

    it("sorts query pairs by key, keeping repeated keys in their order", function()
      assert.equal("a=1&b=2", rc.canonical_query("b=2&a=1"))
      assert.equal(rc.canonical_query("a=1&b=2"), rc.canonical_query("b=2&a=1"))
      assert.equal("a=1&a=2&b=", rc.canonical_query("a=1&b&a=2"))
      -- last one wins in parse_query: these are different requests
      assert.are_not.equal(rc.canonical_query("a=1&a=2"), rc.canonical_query("a=2&a=1"))
      assert.equal("", rc.canonical_query(""))
      assert.equal("a=1", rc.canonical_query("&&a=1&"))
    end)

    it("decodes and re-encodes, so equivalent spellings share a key", function()
      assert.equal(rc.canonical_query("q=a+b"), rc.canonical_query("q=a%20b"))
      assert.equal(rc.canonical_query("q=%7e"), rc.canonical_query("q=~"))
      assert.equal("q=a%26b%3Dc", rc.canonical_query("q=a%26b%3dc"))   -- & and = stay escaped
      assert.is_nil(rc.canonical_query("q=%zz"))
    end)

    it("holds the method, the path and the vary headers (absent differs from empty)", function()
      local base = req("/x", { query = "b=2&a=1", headers = { ["accept-language"] = "fr" } })
      local k = rc.key(base, rule)
      assert.equal("GET /x?a=1&b=2|accept-language=fr|x-tenant!", k)
      assert.are_not.equal(k, rc.key(req("/x", { method = "HEAD", query = "a=1&b=2",
        headers = { ["accept-language"] = "fr" } }), rule))
      assert.are_not.equal(k, rc.key(req("/x", { query = "a=1&b=2", headers = { ["accept-language"] = "de" } }), rule))
      local empty = rc.key(req("/x", { headers = { ["x-tenant"] = "" } }), rule)
      local absent = rc.key(req("/x"), rule)
      assert.are_not.equal(empty, absent)
      -- a header value cannot forge another part of the key
      local forged = rc.key(req("/x", { headers = { ["accept-language"] = "fr|x-tenant=1" } }), rule)
      assert.equal("GET /x?|accept-language=fr%7Cx-tenant%3D1|x-tenant!", forged)
    end)
  end)

  describe("etag", function()
    it("is FNV-1a 64 of the body plus its length", function()
      assert.equal('"cbf29ce484222325-0"', rc.etag(""))
      assert.equal('"af63dc4c8601ec8c-1"', rc.etag("a"))
      assert.equal('"85944171f73967e8-6"', rc.etag("foobar"))
      assert.equal('"08dd5a411c8cfe38-13"', rc.etag("0123456789abcdefXYZ"))   -- past the 8-byte loop
      assert.are_not.equal(rc.etag('{"a":1}'), rc.etag('{"a":2}'))
      assert.has_error(function() rc.etag(nil) end)
    end)

    it("matches If-None-Match: *, lists, weak comparison", function()
      local e = '"abc-3"'
      assert.is_true(rc.not_modified('"abc-3"', e))
      assert.is_true(rc.not_modified("*", e))
      assert.is_true(rc.not_modified(' "x", W/"abc-3" ,"y"', e))
      assert.is_true(rc.not_modified('"abc-3"', 'W/"abc-3"'))
      assert.is_false(rc.not_modified('"abc-4", "abc"', e))
      assert.is_false(rc.not_modified("", e))
      assert.is_false(rc.not_modified(nil, e))
    end)
  end)

  describe("entries", function()
    it("round-trip status, headers (repeated ones too), ETag, time and body", function()
      local text = rc.encode(200, { ["Content-Type"] = "text/plain", ["X-Things"] = { "a", "b" }, ["X-N"] = 5 },
        "line1\n\nline3", '"e-1"', 1000)
      local e = rc.decode(text)
      assert.equal(200, e.status)
      assert.equal('"e-1"', e.etag)
      assert.equal("text/plain", e.headers["Content-Type"])
      assert.same({ "a", "b" }, e.headers["X-Things"])
      assert.equal("5", e.headers["X-N"])
      assert.equal("line1\n\nline3", e.body)
      assert.is_true(math.abs(e.stored - core.time()) < 5)
    end)

    it("leave out per-response and framing headers", function()
      local e = rc.decode(rc.encode(200, { ["X-Request-Id"] = "r", Date = "d", ["X-Cache"] = "MISS", Age = "3",
        Connection = "close", ["Content-Length"] = "3", ["X-Keep"] = "k" }, "abc", '"e"', 1000))
      assert.same({ ["X-Keep"] = "k" }, e.headers)
    end)

    it("are refused for non-200, cookies, private/no-store, Vary: *, big bodies, bad header values", function()
      assert.is_nil(rc.encode(404, {}, "x", '"e"', 1000))
      assert.is_nil(rc.encode(201, {}, "x", '"e"', 1000))
      assert.is_nil(rc.encode(200, { ["Set-Cookie"] = "sid=1" }, "x", '"e"', 1000))
      assert.is_nil(rc.encode(200, { ["set-cookie"] = { "a=1" } }, "x", '"e"', 1000))
      assert.is_nil(rc.encode(200, { ["Cache-Control"] = "max-age=60, Private" }, "x", '"e"', 1000))
      assert.is_nil(rc.encode(200, { ["cache-control"] = "no-store" }, "x", '"e"', 1000))
      assert.is_nil(rc.encode(200, { Vary = "*" }, "x", '"e"', 1000))
      assert.is_nil(rc.encode(200, {}, ("x"):rep(1001), '"e"', 1000))
      assert.is_nil(rc.encode(200, { ["X-Bad"] = "a\nb" }, "x", '"e"', 1000))
      assert.is_nil(rc.encode(200, {}, nil, '"e"', 1000))
      assert.is_string(rc.encode(200, { ["Cache-Control"] = "public, max-age=60" }, "x", '"e"', 1000))
    end)
  end)

  describe("serve", function()
    it("misses, then hits with Age, the ETag and the stored headers; the handler runs once", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler({ 200, { ["Content-Type"] = "application/json", ["X-Own"] = "1", ["Set-Cookie"] = nil },
                          '{"n":1}' })
      local r = req(new_path("hit"))
      local s1, h1, b1 = serve(r, rule, h)
      assert.equal(200, s1)
      assert.equal("MISS", h1["X-Cache"])
      assert.is_nil(h1.Age)
      assert.equal(rc.etag('{"n":1}'), h1.ETag)
      local s2, h2, b2 = serve(r, rule, h)
      assert.equal(200, s2)
      assert.equal("HIT", h2["X-Cache"])
      assert.equal("0", h2.Age)
      assert.equal(h1.ETag, h2.ETag)
      assert.equal("application/json", h2["Content-Type"])
      assert.equal("1", h2["X-Own"])
      assert.equal(b1, b2)
      assert.equal(1, h.calls)
    end)

    it("reports Age in whole seconds since the entry was stored", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler()
      local r = req(new_path("age"))
      serve(r, rule, h)
      core.sleep(1.1)
      local _, hdrs = serve(r, rule, h)
      assert.equal("HIT", hdrs["X-Cache"])
      assert.equal("1", hdrs.Age)
    end)

    it("keeps the handler's own X-Cache on a miss, and never stores it", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler({ 200, { ["X-Cache"] = "L1" }, "body" })
      local r = req(new_path("own"))
      local _, h1 = serve(r, rule, h)
      assert.equal("L1", h1["X-Cache"])
      local _, h2 = serve(r, rule, h)
      assert.equal("HIT", h2["X-Cache"])
    end)

    it("answers 304 with the ETag and no body when If-None-Match matches (cached or not)", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler({ 200, { ["Content-Type"] = "text/plain", ["Cache-Control"] = "max-age=5" }, "hello" })
      local path = new_path("inm")
      local etag = rc.etag("hello")
      local s, hdrs, body = serve(req(path, { headers = { ["if-none-match"] = etag } }), rule, h)
      assert.equal(304, s)                          -- the handler's fresh response
      assert.equal("", body)
      assert.equal(etag, hdrs.ETag)
      assert.equal("max-age=5", hdrs["Cache-Control"])
      assert.is_nil(hdrs["Content-Type"])
      s, hdrs, body = serve(req(path, { headers = { ["if-none-match"] = 'W/' .. etag .. ', "zz"' } }), rule, h)
      assert.equal(304, s)
      assert.equal("HIT", hdrs["X-Cache"])
      assert.equal("", body)
      local _
      s, _, body = serve(req(path, { headers = { ["if-none-match"] = "*" } }), rule, h)
      assert.equal(304, s)
      assert.equal("", body)
      s, hdrs, body = serve(req(path, { headers = { ["if-none-match"] = '"other"' } }), rule, h)
      assert.equal(200, s)
      assert.equal("hello", body)
      assert.equal(etag, hdrs.ETag)
      assert.equal(1, h.calls)
    end)

    it("keeps a fresh response's Set-Cookie in its 304", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler({ 200, { ["Set-Cookie"] = "sid=1; Path=/" }, "cookie body" })
      local s, hdrs, body = serve(req(new_path("inm_cookie"), { headers = { ["if-none-match"] = rc.etag("cookie body") } }),
        rule, h)
      assert.equal(304, s)
      assert.equal("", body)
      assert.equal("sid=1; Path=/", hdrs["Set-Cookie"])
    end)

    it("uses the handler's own ETag when it sets one", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler({ 200, { ETag = '"v7"' }, "seven" })
      local path = new_path("own_etag")
      local _, h1 = serve(req(path), rule, h)
      assert.equal('"v7"', h1.ETag)
      local s, h2 = serve(req(path, { headers = { ["if-none-match"] = '"v7"' } }), rule, h)
      assert.equal(304, s)
      assert.equal('"v7"', h2.ETag)
      assert.equal(1, h.calls)
    end)

    it("no-cache bypasses: the handler runs and its response replaces the cached one", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler({ 200, {}, "v1" })
      local r = req(new_path("bypass"))
      serve(r, rule, h)
      h.reply = { 200, {}, "v2" }
      local _, hdrs, body = serve(r, rule, h)
      assert.equal("v1", body)                       -- still cached
      assert.equal("HIT", hdrs["X-Cache"])
      _, hdrs, body = serve(req(r.path, { headers = { ["cache-control"] = "no-cache" } }), rule, h)
      assert.equal("BYPASS", hdrs["X-Cache"])
      assert.equal("v2", body)
      assert.equal(rc.etag("v2"), hdrs.ETag)
      _, hdrs, body = serve(r, rule, h)
      assert.equal("HIT", hdrs["X-Cache"])
      assert.equal("v2", body)
      h.reply = { 200, {}, "v3" }
      _, hdrs, body = serve(req(r.path, { headers = { pragma = "no-cache" } }), rule, h)
      assert.equal("BYPASS", hdrs["X-Cache"])
      assert.equal("v3", body)
      assert.equal("v3", select(3, serve(r, rule, h)))
      assert.equal(3, h.calls)
    end)

    it("no-store from the client neither reads nor writes the cache", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler({ 200, {}, "v1" })
      local r = req(new_path("nostore"))
      local _, hdrs = serve(req(r.path, { headers = { ["cache-control"] = "no-store" } }), rule, h)
      assert.equal("BYPASS", hdrs["X-Cache"])
      local _, h2 = serve(r, rule, h)
      assert.equal("MISS", h2["X-Cache"])
      assert.equal(2, h.calls)
    end)

    it("never stores non-200, Set-Cookie or private responses", function()
      local rule = rc.compile({ route = "/x" })
      for _, reply in ipairs({
        { 404, { ["Content-Type"] = "application/json" }, '{"error":"not_found"}' },
        { 200, { ["Set-Cookie"] = "sid=abc; Path=/" }, "cookie" },
        { 200, { ["Cache-Control"] = "private" }, "mine" },
        { 200, { ["cache-control"] = "no-store" }, "secret" },
      }) do
        local h = handler(reply)
        local r = req(new_path("nostore"))
        local s1, h1 = serve(r, rule, h)
        local s2, h2, b2 = serve(r, rule, h)
        assert.equal(reply[1], s1)
        assert.equal(reply[1], s2)
        assert.equal(reply[3], b2)
        assert.equal(2, h.calls)
        assert.equal("MISS", h1["X-Cache"])
        assert.equal("MISS", h2["X-Cache"])
        if reply[2]["Set-Cookie"] then assert.equal(reply[2]["Set-Cookie"], h2["Set-Cookie"]) end
        assert.is_nil(redis.call("GET", cache.value_key("response", rc.key(r, rule))))
      end
    end)

    it("drops entries when one of the rule's tags is invalidated", function()
      local tag = new_tag("drop")
      local rule = rc.compile({ route = "/x", tags = { tag, new_tag("other") } })
      local h = handler({ 200, {}, "before" })
      local r = req(new_path("tags"))
      serve(r, rule, h)
      assert.equal("HIT", select(2, serve(r, rule, h))["X-Cache"])
      h.reply = { 200, {}, "after" }
      cache.invalidate_tag(tag)
      local _, hdrs, body = serve(r, rule, h)
      assert.equal("MISS", hdrs["X-Cache"])
      assert.equal("after", body)
      assert.equal(2, h.calls)
    end)

    it("keys on the rule's vary headers and says so in Vary", function()
      local rule = rc.compile({ route = "/x", vary = { "Accept-Language" } })
      local h = handler()
      local path = new_path("vary")
      local _, h1 = serve(req(path, { headers = { ["accept-language"] = "fr" } }), rule, h)
      assert.equal("accept-language", h1.Vary)
      assert.equal("MISS", select(2, serve(req(path, { headers = { ["accept-language"] = "de" } }), rule, h))["X-Cache"])
      assert.equal("HIT", select(2, serve(req(path, { headers = { ["accept-language"] = "fr" } }), rule, h))["X-Cache"])
      assert.equal(2, h.calls)
    end)

    it("shares the entry between orderings of the query", function()
      local rule = rc.compile({ route = "/x" })
      local h = handler()
      local path = new_path("query")
      serve(req(path, { query = "a=1&b=2" }), rule, h)
      local _, hdrs = serve(req(path, { query = "b=2&a=1" }), rule, h)
      assert.equal("HIT", hdrs["X-Cache"])
      assert.equal(1, h.calls)
    end)

    it("re-raises a handler error, stores nothing and holds no lease", function()
      local rule = rc.compile({ route = "/x" })
      local r = req(new_path("error"))
      local h = handler()
      local boom = { run = function() error("boom", 0) end }
      track(r, rule)
      local ok, err = pcall(rc.serve, r, rule, boom.run)
      assert.is_false(ok)
      assert.equal("boom", err)
      local t0 = core.time()
      local _, hdrs = serve(r, rule, h)
      assert.equal("MISS", hdrs["X-Cache"])
      assert.is_true(core.time() - t0 < 1, "waited for a lease nobody holds")
    end)

    it("runs the handler once for concurrent misses of one key", function()
      local rule = rc.compile({ route = "/x" })
      local r = req(new_path("coalesce"))
      track(r, rule)
      local calls = 0
      local function slow()
        calls = calls + 1
        core.sleep(0.05)
        return 200, {}, "slow"
      end
      local done, results, finished = core.event(), {}, 0
      for i = 1, 5 do
        core.spawn(function()
          local s, hdrs, body = rc.serve(req(r.path), rule, slow)
          results[i] = { s, hdrs["X-Cache"], body }
          finished = finished + 1
          if finished == 5 then done:signal(true) end
        end)
      end
      if finished < 5 then done:wait(5) end
      assert.equal(5, finished)
      assert.equal(1, calls)
      local misses = 0
      for i = 1, 5 do
        assert.equal(200, results[i][1])
        assert.equal("slow", results[i][3])
        if results[i][2] == "MISS" then misses = misses + 1 end
      end
      assert.equal(1, misses)
    end)

    it("raises on misuse", function()
      assert.has_error(function() rc.serve(req("/x"), nil, function() end) end)
      assert.has_error(function() rc.serve(req("/x"), rc.compile({ route = "/x" }), nil) end)
    end)
  end)

  describe("policy", function()
    local s = require "jollyjet.schemas.response_cache"

    it("the shipped policy caches /api/products for GET and HEAD only", function()
      policy.load_all()
      local p = policy.get("response_cache")
      assert.is_true(p.enabled)
      local rule = rc.rule_for({ method = "GET", route = "/api/products" })
      assert.is_table(rule)
      assert.same({ "products", "product_data" }, rule.tags)
      assert.is_table(rc.rule_for({ method = "HEAD", route = "/api/products" }))
      assert.is_nil(rc.rule_for({ method = "POST", route = "/api/products" }))
      assert.is_nil(rc.rule_for({ method = "GET", route = "/api/products/{id}" }))
      assert.is_nil(rc.rule_for({ method = "GET", route = "/api/wishlist" }))
      assert.is_nil(rc.rule_for({ method = "GET" }))
    end)

    it("validates rules", function()
      assert.is_table((schema.validate(s, {})))
      local v = assert(schema.validate(s, { rules = { { route = "/a" } } }))
      assert.equal(60, v.rules[1].ttl)
      assert.same({}, v.rules[1].vary)
      assert.matches("rules%[1%]%.route: is required", select(2, schema.validate(s, { rules = { {} } })))
      assert.matches("must be >= 1", select(2, schema.validate(s, { rules = { { route = "/a", ttl = 0 } } })))
      assert.matches("does not match", select(2, schema.validate(s, { rules = { { route = "a" } } })))
      assert.matches("vary%[1%]", select(2, schema.validate(s, { rules = { { route = "/a", vary = { "bad header" } } } })))
      assert.matches("tags%[1%]", select(2, schema.validate(s, { rules = { { route = "/a", tags = { "a,b" } } } })))
      assert.matches("unknown field", select(2, schema.validate(s, { rules = { { route = "/a", tll = 5 } } })))
      local dup = assert(schema.validate(s, { rules = { { route = "/a" }, { route = "/a" } } }))
      assert.matches("already listed", select(2, s.check(dup)))
      local twice = assert(schema.validate(s, { rules = { { route = "/a", vary = { "X-A", "x-a" } } } }))
      assert.matches("listed twice", select(2, s.check(twice)))
    end)

    it("check_routes refuses a rule naming no GET route, with file:line", function()
      policy.load_all()
      rc.check_routes({ routes = { { method = "GET", pattern = "/api/products" } } })
      local ok, err = pcall(rc.check_routes, { routes = { { method = "POST", pattern = "/api/products" } } })
      assert.is_false(ok)
      assert.matches("response_cache%.lua:%d+: rules%[1%]%.route: no GET route", err)
    end)
  end)
end)
