-- session_spec.lua: jollyjet.session against the real test Redis, run
-- inside the engine by `jollyjet spec`. Policies are the schema defaults
-- here (a bare generation); short lifetimes use create's explicit ttl.
local session = require "jollyjet.session"
local redis = require "engine.redis"
local core = require "engine.core"

local run = ("%x"):format(math.floor(core.time() * 1000) % 0xffffff)
local users = {}

-- A user id of this spec; its sessions are destroyed after each test.
local function U(s)
  local u = "spec_session:" .. run .. ":" .. s
  users[#users + 1] = u
  return u
end

local function skey(id) return redis.key("sess", id) end
local function ukey(uid) return redis.key("user_sessions", uid) end
local function exists(key) return assert(redis.call("EXISTS", key)) == 1 end
local function members(uid)
  local m = assert(redis.call("SMEMBERS", ukey(uid)))
  table.sort(m)
  return m
end

describe("jollyjet.session", function()
  local anon = {}
  local function track(s) anon[#anon + 1] = s.id; return s end

  after_each(function()
    for _, u in ipairs(users) do session.destroy_all_for_user(u) end
    for _, id in ipairs(anon) do session.destroy(id) end
    users, anon = {}, {}
  end)

  it("draws 1,000,000 distinct 256-bit ids with no time or counter component", function()
    local seen, n = {}, 1000000
    local counts = {}                  -- character frequencies per position, first 100,000 ids
    for p = 1, 43 do counts[p] = {} end
    local byte = string.byte
    local new_id = session.new_id
    for i = 1, n do
      local id = new_id()
      if seen[id] then error("duplicate id after " .. i .. " draws: " .. id) end
      seen[id] = true
      -- let the event loop breathe (the Redis connection's heartbeat)
      if i % 20000 == 0 then core.sleep(0) end
      if i <= 100000 then
        if #id ~= 43 or not id:find("^[%w_%-]+$") then error("malformed id " .. id) end
        for p = 1, 43 do
          local c = byte(id, p)
          local t = counts[p]
          t[c] = (t[c] or 0) + 1
        end
      end
    end
    seen = nil
    collectgarbage()
    -- Every position is uniform: positions 1..42 carry 6 random bits each
    -- (64 symbols, ~1562 each), the last one 4 bits (16 symbols, 6250
    -- each). A clock or a counter would leave positions nearly constant.
    for p = 1, 43 do
      local symbols, expected = 0, p < 43 and 100000 / 64 or 100000 / 16
      for _, k in pairs(counts[p]) do
        symbols = symbols + 1
        assert.is_true(k > expected * 0.75 and k < expected * 1.25,
          ("position %d: a symbol seen %d times, expected about %.0f"):format(p, k, expected))
      end
      assert.are.equal(p < 43 and 64 or 16, symbols)
    end
  end)

  it("creates and reads a session with its data, user and times", function()
    local uid = U("basic")
    local t0 = core.time()
    local s = assert(session.create({ cart = { "p-1", "p-2" }, n = 3, name = "Ann" }, { user_id = uid }))
    assert.is_true(session.valid_id(s.id))
    assert.are.equal(uid, s.user_id)
    local got = assert(session.get(s.id))
    assert.are.equal(s.id, got.id)
    assert.are.equal(uid, got.user_id)
    assert.are.same({ cart = { "p-1", "p-2" }, n = 3, name = "Ann" }, got.data)
    assert.are.equal("integer", math.type(got.data.n))
    assert.is_true(math.abs(got.created_at - t0) < 2)
    assert.is_true(math.abs(got.expires_at - (core.time() + 86400)) < 2)
    assert.are.equal(86400, got.ttl)
    local pttl = assert(redis.call("PTTL", skey(s.id)))
    assert.is_true(pttl > 86390000 and pttl <= 86400000, tostring(pttl))
    assert.are.same({ s.id }, members(uid))
    -- stored as a hash, one field per data field
    assert.are.equal("hash", assert(redis.call("TYPE", skey(s.id))))
    assert.are.equal('"Ann"', assert(redis.call("HGET", skey(s.id), "d:name")))
  end)

  it("answers nil for unknown and malformed ids without an error", function()
    local s, err = session.get(session.new_id())
    assert.is_nil(s)
    assert.is_nil(err)
    s, err = session.get("not-an-id")
    assert.is_nil(s)
    assert.is_nil(err)
    assert.is_false(session.update(session.new_id(), { a = 1 }))
    assert.is_false(session.extend(session.new_id()))
    assert.is_false(session.destroy(session.new_id()))
    assert.is_false(session.rotate(session.new_id()))
  end)

  it("honours expiry, and does not bring an expired session back", function()
    local s = track(assert(session.create({ a = 1 }, { ttl = 0.3 })))
    assert.is_not_nil(session.get(s.id))
    local pttl = assert(redis.call("PTTL", skey(s.id)))
    assert.is_true(pttl > 0 and pttl <= 300, tostring(pttl))
    core.sleep(0.45)
    assert.is_nil(session.get(s.id))
    assert.is_false(session.update(s.id, { b = 2 }))
    assert.is_false(session.extend(s.id))
    assert.is_false(exists(skey(s.id)))
  end)

  it("slides the TTL on get, update and extend", function()
    local s = track(assert(session.create({}, { ttl = 0.4 })))
    for _ = 1, 4 do                    -- 0.8 s in all: twice the TTL
      core.sleep(0.2)
      local got = assert(session.get(s.id), "expired although read every 0.2 s")
      assert.are.equal(0.4, got.ttl)
    end
    core.sleep(0.2)
    assert.is_true(session.update(s.id, { x = 1 }))
    core.sleep(0.2)
    assert.is_true(session.extend(s.id))
    core.sleep(0.25)
    assert.is_not_nil(session.get(s.id))
    core.sleep(0.6)
    assert.is_nil(session.get(s.id))
  end)

  it("keeps both fields of two concurrent updates", function()
    local s = track(assert(session.create({ base = true })))
    local go, done, failures = core.event(), 0, {}
    for w = 1, 2 do
      core.spawn(function()
        go:wait(5)
        for i = 1, 25 do
          local ok, err = session.update(s.id, { [("w%d_%d"):format(w, i)] = i, ["last" .. w] = i })
          if not ok then failures[#failures + 1] = tostring(err) end
        end
        done = done + 1
      end)
    end
    core.sleep(0.01)
    go:signal()
    for _ = 1, 500 do if done == 2 then break end core.sleep(0.01) end
    assert.are.equal(2, done)
    assert.are.same({}, failures)
    local got = assert(session.get(s.id))
    for w = 1, 2 do
      for i = 1, 25 do assert.are.equal(i, got.data[("w%d_%d"):format(w, i)]) end
      assert.are.equal(25, got.data["last" .. w])
    end
    assert.is_true(got.data.base)
  end)

  it("updates and deletes fields, leaving the others alone", function()
    local s = track(assert(session.create({ a = 1, b = 2 })))
    assert.is_true(session.update(s.id, { b = session.null, c = { deep = "x" } }))
    assert.are.same({ a = 1, c = { deep = "x" } }, assert(session.get(s.id)).data)
  end)

  it("destroys one session and every session of a user", function()
    local ua, ub = U("a"), U("b")
    local a1 = assert(session.create({}, { user_id = ua }))
    local a2 = assert(session.create({}, { user_id = ua }))
    local a3 = assert(session.create({}, { user_id = ua }))
    local b1 = assert(session.create({}, { user_id = ub }))
    assert.are.equal(3, #members(ua))
    assert.is_true(session.destroy(a3.id))
    assert.is_false(session.destroy(a3.id))
    assert.are.equal(2, #members(ua))
    assert.are.equal(2, session.destroy_all_for_user(ua))
    assert.is_nil(session.get(a1.id))
    assert.is_nil(session.get(a2.id))
    assert.is_false(exists(ukey(ua)))
    assert.is_not_nil(session.get(b1.id))
    assert.are.equal(0, session.destroy_all_for_user(ua))
  end)

  it("prunes ids of expired sessions from the user's set", function()
    local uid = U("prune")
    local short = assert(session.create({}, { user_id = uid, ttl = 0.05 }))
    core.sleep(0.1)
    local long = assert(session.create({}, { user_id = uid }))
    assert.are.same({ long.id }, members(uid))
    assert.is_false(exists(skey(short.id)))
  end)

  it("rotates: new id, same data and creation time, old id gone", function()
    local uid = U("rot")
    local s = assert(session.create({ cart = { "p-9" } }, { user_id = uid }))
    local before = assert(session.get(s.id))
    local new = assert(session.rotate(s.id))
    assert.is_true(session.valid_id(new))
    assert.are_not.equal(s.id, new)
    assert.is_nil(session.get(s.id))
    local after = assert(session.get(new))
    assert.are.same(before.data, after.data)
    assert.are.equal(before.created_at, after.created_at)
    assert.are.equal(uid, after.user_id)
    assert.are.same({ new }, members(uid))

    -- a privilege change: the user moves to the new id only
    local u2 = U("rot2")
    local anon_s = assert(session.create({ wish = 1 }))
    local logged = assert(session.rotate(anon_s.id, { user_id = u2 }))
    assert.is_nil(session.get(anon_s.id))
    local got = assert(session.get(logged))
    assert.are.equal(u2, got.user_id)
    assert.are.equal(1, got.data.wish)
    assert.are.same({ logged }, members(u2))
    -- and back to anonymous (logout that keeps the data)
    local out = assert(session.rotate(logged, { user_id = false }))
    track({ id = out })
    assert.is_nil(assert(session.get(out)).user_id)
    assert.are.equal(0, #members(u2))
    -- an explicit TTL survives a rotation
    local short = assert(session.create({}, { ttl = 5 }))
    local r = assert(session.rotate(short.id))
    track({ id = r })
    assert.are.equal(5, assert(session.get(r)).ttl)
  end)

  it("makes the cookie and reads it back from a request", function()
    local id = session.new_id()
    local c = session.cookie(id)
    assert.are.equal("sid=" .. id .. "; Path=/; HttpOnly; SameSite=Lax", c)
    local clear = session.clear_cookie()
    assert.is_truthy(clear:find("^sid=;"))
    assert.is_truthy(clear:find("Max-Age=0", 1, true))
    assert.is_truthy(clear:find("HttpOnly", 1, true))
    local req = { headers = { cookie = "a=1; sid=short; sid=" .. id .. "; b=2" } }
    assert.are.equal(id, session.id_from_request(req))
    assert.is_nil(session.id_from_request({ headers = {} }))
    assert.is_nil(session.id_from_request({ headers = { cookie = "sid=../../etc" } }))
    local s = track(assert(session.create({ k = "v" })))
    local got = assert(session.from_request({ headers = { cookie = "sid=" .. s.id } }))
    assert.are.equal("v", got.data.k)
    assert.is_nil(session.from_request({ headers = {} }))
    assert.are.equal("2024-01-01T00:00:00.000Z", session.iso8601(1704067200))
    assert.are.equal("2024-01-01T00:00:01.250Z", session.iso8601(1704067201.25))
  end)

  it("raises on misuse", function()
    assert.has_error(function() session.create("data") end)
    assert.has_error(function() session.create({}, { ttl = -1 }) end)
    assert.has_error(function() session.create({}, { ttl = "1" }) end)
    assert.has_error(function() session.create({}, { user = "x" }) end)
    assert.has_error(function() session.create({}, { user_id = "" }) end)
    assert.has_error(function() session.create({}, { user_id = {} }) end)
    assert.has_error(function() session.create({ [1] = "x" }) end)
    assert.has_error(function() session.create({ f = function() end }) end)
    assert.has_error(function() session.get(42) end)
    assert.has_error(function() session.update(session.new_id(), "x") end)
    assert.has_error(function() session.destroy_all_for_user(nil) end)
    assert.has_error(function() session.rotate(session.new_id(), { bogus = 1 }) end)
    assert.has_error(function() session.cookie("short") end)
  end)
end)
