-- engine_redis_spec.lua: the engine.redis module against the real test
-- Redis, run inside the engine by `jollyjet spec` (every call yields the
-- spec's task until the reply). Every key lives under
-- redis.key("spec_redis", ...) and is deleted after each test.
local redis = require("engine.redis")
local core = require("engine.core")

local used = {}

-- A key of this spec; remembered for cleanup.
local function K(...)
  local k = redis.key("spec_redis", ...)
  used[#used + 1] = k
  return k
end

-- Asserts that a call succeeded and returns its result.
local function ok(res, err)
  assert(err == nil, "redis call failed: " .. tostring(err))
  return res
end

local function raises(pattern, fn, ...)
  local args = table.pack(...)
  local good, msg = pcall(function() return fn(table.unpack(args, 1, args.n)) end)
  assert.is_false(good, "expected an error matching " .. pattern)
  assert.is_truthy(tostring(msg):find(pattern, 1, true), tostring(msg))
end

describe("engine.redis", function()
  after_each(function()
    if #used > 0 then
      redis.call("DEL", table.unpack(used))
      used = {}
    end
  end)

  describe("module", function()
    it("has a unique light userdata null and no prefix field", function()
      assert.are.equal("userdata", type(redis.null))
      assert.are.equal(redis.null, require("engine.redis").null)
      assert.is_nil(redis.prefix)
    end)

    it("builds keys from the configured prefix", function()
      local prefix = redis.key()
      assert.are.equal("string", type(prefix))
      assert.are.equal(prefix .. "product:42", redis.key("product", "42"))
      assert.are.equal(prefix .. "product:42", redis.key("product", 42))
      assert.are.equal(prefix .. "p:1.5:x", redis.key("p", 1.5, "x"))
      assert.are.equal(prefix .. "solo", redis.key("solo"))
      raises("redis.key", redis.key, "a", {})
      raises("redis.key", redis.key, true)
    end)

    it("reports its status", function()
      local st = redis.status()
      assert.is_true(st.up)
      assert.are.equal("integer", math.type(st.reconnects))
      assert.are.equal("integer", math.type(st.script_reloads))
      assert.is_true(st.latency_ms == nil or (type(st.latency_ms) == "number" and st.latency_ms >= 0))
      assert.is_true(st.last_error == nil or type(st.last_error) == "string")
    end)
  end)

  describe("call", function()
    it("converts status, bulk, nil and integer replies", function()
      local k = K("s")
      assert.are.equal("OK", ok(redis.call("SET", k, "hello")))
      assert.are.equal("hello", ok(redis.call("GET", k)))
      local v, err = redis.call("GET", K("missing"))
      assert.is_nil(v)
      assert.is_nil(err)
      local n = ok(redis.call("INCR", K("n")))
      assert.are.equal(1, n)
      assert.are.equal("integer", math.type(n))
      assert.are.equal("PONG", ok(redis.call("PING")))
    end)

    it("sends numbers as integers or exact floats, and strings as bytes", function()
      local k = K("num")
      ok(redis.call("SET", k, 42))
      assert.are.equal("42", ok(redis.call("GET", k)))
      ok(redis.call("SET", k, 0.1))
      assert.are.equal("0.10000000000000001", ok(redis.call("GET", k)))
      assert.are.equal(0.1, tonumber(ok(redis.call("GET", k))))
      ok(redis.call("SET", k, 2^53))
      assert.are.equal("9007199254740992", ok(redis.call("GET", k)))
      ok(redis.call("SET", k, "a\0b\255"))
      assert.are.equal("a\0b\255", ok(redis.call("GET", k)))
      assert.are.equal(4, ok(redis.call("STRLEN", k)))
    end)

    it("converts arrays, with nil elements as redis.null", function()
      local l = K("list")
      assert.are.equal(3, ok(redis.call("RPUSH", l, "a", "b", "c")))
      assert.are.same({ "a", "b", "c" }, ok(redis.call("LRANGE", l, 0, -1)))
      assert.are.same({}, ok(redis.call("LRANGE", K("nolist"), 0, -1)))
      local k = K("m")
      ok(redis.call("SET", k, "v"))
      local r = ok(redis.call("MGET", k, K("none"), k))
      assert.are.equal(3, #r)
      assert.are.equal("v", r[1])
      assert.are.equal(redis.null, r[2])
      assert.are.equal("v", r[3])
    end)

    it("returns nil and the message for an error reply", function()
      local k = K("str")
      ok(redis.call("SET", k, "not a number"))
      local v, err = redis.call("INCR", k)
      assert.is_nil(v)
      assert.are.equal("string", type(err))
      assert.is_truthy(err:find("^ERR"))
      v, err = redis.call("NO_SUCH_COMMAND_X")
      assert.is_nil(v)
      assert.is_truthy(err:find("ERR", 1, true))
    end)

    it("raises on arguments that are not strings or numbers", function()
      raises("argument 3 is a table", redis.call, "SET", K("x"), {})
      raises("argument 2 is a boolean", redis.call, "GET", true)
      raises("argument 2 is a nil", redis.call, "GET", nil)
      raises("command name must be a string", redis.call, 42)
      raises("command name must be a string", redis.call)
    end)

    it("refuses KEYS and commands that would break the shared connection", function()
      raises("KEYS is not allowed; use SCAN", redis.call, "KEYS", "*")
      raises("KEYS is not allowed; use SCAN", redis.call, "keys", "*")
      raises("not allowed", redis.call, "SUBSCRIBE", "ch")
      raises("not allowed", redis.call, "SELECT", 1)
      raises("not allowed", redis.call, "CLIENT", "REPLY", "OFF")
      raises("redis.pipeline", redis.call, "MULTI")
    end)

    it("scans instead of listing keys", function()
      ok(redis.call("SET", K("scan", 1), "x"))
      local res = ok(redis.call("SCAN", 0, "MATCH", redis.key("spec_redis", "scan", "*"), "COUNT", 1000))
      assert.are.equal(2, #res)
      assert.are.equal("string", type(res[1]))
      assert.are.equal("table", type(res[2]))
    end)
  end)

  describe("call_timeout", function()
    it("returns nil, 'timeout' when the reply is late, and the connection stays usable", function()
      local t0 = core.time()
      local v, err = redis.call_timeout(50, "BLPOP", K("never"), "0.3")
      assert.is_nil(v)
      assert.are.equal("timeout", err)
      assert.is_true(core.time() - t0 < 0.28)
      -- the late reply is dropped; later calls get their own replies
      assert.are.equal("PONG", ok(redis.call("PING")))
      local k = K("after")
      ok(redis.call("SET", k, "1"))
      assert.are.equal("1", ok(redis.call_timeout(1000, "GET", k)))
    end)

    it("raises on a bad timeout", function()
      raises("timeout", redis.call_timeout, 0, "PING")
      raises("number expected", redis.call_timeout, "soon", "PING")
    end)
  end)

  describe("pipeline", function()
    it("returns one result per command, in order", function()
      local a, b = K("pa"), K("pb")
      ok(redis.call("SET", b, "text"))
      local res = ok(redis.pipeline({
        { "SET", a, "1" },
        { "GET", a },
        { "GET", K("pmissing") },
        { "INCR", b },
        { "INCRBY", a, 41 },
        { "LRANGE", K("pnolist"), 0, -1 },
      }))
      assert.are.equal(6, #res)
      assert.are.equal("OK", res[1])
      assert.are.equal("1", res[2])
      assert.are.equal(redis.null, res[3])
      assert.are.equal("table", type(res[4]))
      assert.is_truthy(res[4].err:find("^ERR"))
      assert.are.equal(42, res[5])
      assert.are.same({}, res[6])
    end)

    it("keeps order over many commands", function()
      local k = K("many")
      local cmds = {}
      for i = 1, 200 do cmds[i] = { "INCR", k } end
      local res = ok(redis.pipeline(cmds))
      assert.are.equal(200, #res)
      for i = 1, 200 do assert.are.equal(i, res[i]) end
    end)

    it("runs MULTI/EXEC atomically", function()
      local k = K("tx")
      local res = ok(redis.pipeline({ { "MULTI" }, { "INCR", k }, { "INCR", k }, { "EXEC" } }))
      assert.are.equal("OK", res[1])
      assert.are.equal("QUEUED", res[2])
      assert.are.same({ 1, 2 }, res[4])
    end)

    it("returns an empty table for no commands", function()
      assert.are.same({}, ok(redis.pipeline({})))
    end)

    it("raises on malformed or refused commands before sending anything", function()
      local k = K("untouched")
      raises("not a table", redis.pipeline, { { "SET", k, "1" }, "GET" })
      raises("is empty", redis.pipeline, { { "SET", k, "1" }, {} })
      raises("argument 3 is a boolean", redis.pipeline, { { "SET", k, true } })
      raises("KEYS is not allowed; use SCAN", redis.pipeline, { { "SET", k, "1" }, { "KEYS", "*" } })
      raises("MULTI without EXEC", redis.pipeline, { { "MULTI" }, { "SET", k, "1" } })
      raises("EXEC without MULTI", redis.pipeline, { { "EXEC" } })
      assert.is_nil(ok(redis.call("GET", k)))
    end)
  end)

  describe("scripts", function()
    local echo = "return {KEYS[1], ARGV[1], ARGV[2]}"

    it("registers a script and returns its SHA1", function()
      local sha = redis.script(echo)
      assert.are.equal(40, #sha)
      assert.is_truthy(sha:find("^[0-9a-f]+$"))
      assert.are.equal(sha, redis.script(echo))
      assert.are.equal(sha, ok(redis.call("SCRIPT", "LOAD", echo)))
    end)

    it("runs a script with keys and args", function()
      local sha = redis.script(echo)
      local k = K("ek")
      assert.are.same({ k, "x", "7" }, ok(redis.evalsha(sha, { k }, { "x", 7 })))
      local counter = redis.script("return redis.call('INCRBY', KEYS[1], ARGV[1] or 1)")
      local c = K("counter")
      assert.are.equal(1, ok(redis.evalsha(counter, { c })))
      assert.are.equal(11, ok(redis.evalsha(counter, { c }, { 10 })))
    end)

    it("converts script results like any reply", function()
      local sha = redis.script("return {1, false, 'x', {2, 3}}")
      local res = ok(redis.evalsha(sha, {}))
      assert.are.equal(1, res[1])
      assert.are.equal(redis.null, res[2])
      assert.are.equal("x", res[3])
      assert.are.same({ 2, 3 }, res[4])
      local fail = redis.script("return redis.error_reply('boom')")
      local v, err = redis.evalsha(fail, {})
      assert.is_nil(v)
      assert.is_truthy(err:find("boom", 1, true))
    end)

    it("recovers once when Redis has forgotten the script", function()
      local sha = redis.script(echo)
      local before = redis.status().script_reloads
      assert.are.equal("OK", ok(redis.call("SCRIPT", "FLUSH")))
      local k = K("flushed")
      assert.are.same({ k, "a", "b" }, ok(redis.evalsha(sha, { k }, { "a", "b" })))
      assert.are.equal(before + 1, redis.status().script_reloads)
      assert.are.same({ k, "c", "d" }, ok(redis.evalsha(sha, { k }, { "c", "d" })))
      assert.are.equal(before + 1, redis.status().script_reloads)
    end)

    it("reports a script that does not compile", function()
      local sha = redis.script("this is not lua")
      local v, err = redis.evalsha(sha, {})
      assert.is_nil(v)
      assert.are.equal("string", type(err))
      assert.is_true(redis.status().up)
    end)

    it("raises on an unknown SHA or malformed keys and args", function()
      local sha = redis.script(echo)
      raises("unknown script", redis.evalsha, string.rep("0", 40), {})
      raises("unknown script", redis.evalsha, "abc", {})
      raises("keys must be a table", redis.evalsha, sha, "k")
      raises("args must be a table", redis.evalsha, sha, {}, "a")
      raises("keys[2] is a table", redis.evalsha, sha, { "a", {} })
    end)
  end)
end)
