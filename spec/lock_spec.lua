-- lock_spec.lua: engine.lock against the real test Redis, run inside the
-- engine by `jollyjet spec` (acquire, release and extend yield the spec's
-- task; core.spawn gives concurrent contenders).
local lock = require "engine.lock"
local redis = require "engine.redis"
local core = require "engine.core"

local run = ("%x"):format(math.floor(core.time() * 1000) % 0xffffff)
local names = {}

-- A lock name of this spec; its keys are deleted after each test.
local function N(s)
  local n = "spec_lock:" .. run .. ":" .. s
  names[#names + 1] = n
  return n
end

local function lock_key(name) return redis.key("lock", name) end

local function exists(name)
  return assert(redis.call("EXISTS", lock_key(name))) == 1
end

-- Polls pred every 10 ms for up to `seconds`.
local function eventually(seconds, pred)
  local deadline = core.time() + seconds
  while core.time() < deadline do
    if pred() then return true end
    core.sleep(0.01)
  end
  return pred()
end

describe("engine.lock", function()
  after_each(function()
    for _, n in ipairs(names) do
      redis.call("DEL", lock_key(n), redis.key("lock", n, "fence"))
    end
    names = {}
  end)

  it("grants a free lock with a fencing number and releases it", function()
    local name = N("basic")
    local lk, err = lock.acquire(name, { ttl_ms = 5000 })
    assert.is_nil(err)
    assert.are.equal("userdata", type(lk))
    assert.are.equal(name, lk.name)
    assert.are.equal("integer", math.type(lk.fence))
    assert.is_true(lk.fence >= 1)
    assert.is_true(lk:held())
    assert.is_true(exists(name))
    local pttl = assert(redis.call("PTTL", lock_key(name)))
    assert.is_true(pttl > 4000 and pttl <= 5000, tostring(pttl))
    -- the token is random and long (192 bits, hex)
    local token = assert(redis.call("GET", lock_key(name)))
    assert.is_truthy(token:find("^%x+$"))
    assert.is_true(#token >= 32)
    assert.is_true(lk:release())
    assert.is_false(lk:held())
    assert.is_false(exists(name))
    local again, why = lk:release()
    assert.is_false(again)
    assert.are.equal("not held", why)
  end)

  it("refuses a held lock at once with wait_ms = 0, and after wait_ms otherwise", function()
    local name = N("busy")
    local a = assert(lock.acquire(name, { ttl_ms = 5000 }))
    local b, err = lock.acquire(name)
    assert.is_nil(b)
    assert.are.equal("timeout", err)
    local t0 = core.time()
    b, err = lock.acquire(name, { wait_ms = 150 })
    local took = core.time() - t0
    assert.is_nil(b)
    assert.are.equal("timeout", err)
    assert.is_true(took >= 0.14 and took < 1, tostring(took))
    assert.is_true(a:release())
  end)

  it("lets 50 concurrent contenders hold it one at a time, every one eventually", function()
    local name = N("contended")
    local n, holding, max_holding, done, granted = 50, 0, 0, 0, 0
    local fences, failures = {}, {}
    for i = 1, n do
      core.spawn(function()
        local lk, err = lock.acquire(name, { ttl_ms = 5000, wait_ms = 20000 })
        if not lk then
          failures[#failures + 1] = tostring(err)
          done = done + 1
          return
        end
        holding = holding + 1
        if holding > max_holding then max_holding = holding end
        granted = granted + 1
        fences[#fences + 1] = lk.fence
        core.sleep(0.001 * (i % 3))   -- hold it across a yield
        holding = holding - 1
        local ok, rerr = lk:release()
        if not ok then failures[#failures + 1] = "release: " .. tostring(rerr) end
        done = done + 1
      end)
    end
    assert.is_true(eventually(25, function() return done == n end), "contenders finished: " .. done)
    assert.are.same({}, failures)
    assert.are.equal(n, granted)
    assert.are.equal(1, max_holding)
    for i = 2, #fences do
      assert.is_true(fences[i] > fences[i - 1], ("fence %d then %d"):format(fences[i - 1], fences[i]))
    end
    assert.is_false(exists(name))
  end)

  it("never lets a holder paused past its TTL release or extend the next holder's lock", function()
    local name = N("expired")
    local a = assert(lock.acquire(name, { ttl_ms = 100 }))
    core.sleep(0.2)                      -- a's TTL runs out while it "works"
    assert.is_false(a:held())
    local b = assert(lock.acquire(name, { ttl_ms = 5000 }))
    assert.is_true(b.fence > a.fence)
    local ok, err = a:release()
    assert.is_false(ok)
    assert.are.equal("not held", err)
    assert.is_true(exists(name))         -- b's lock survived
    assert.is_true(b:held())
    assert.is_true(b:release())
    assert.is_false(exists(name))
  end)

  it("numbers grants with strictly increasing fences", function()
    local name = N("fence")
    local last = 0
    for _ = 1, 10 do
      local lk = assert(lock.acquire(name, { ttl_ms = 1000 }))
      assert.is_true(lk.fence > last)
      last = lk.fence
      assert.is_true(lk:release())
    end
    -- also across an expiry (no release)
    local lk = assert(lock.acquire(name, { ttl_ms = 20 }))
    core.sleep(0.05)
    local nxt = assert(lock.acquire(name, { ttl_ms = 1000 }))
    assert.is_true(nxt.fence > lk.fence)
    nxt:release()
  end)

  it("extends for the owner only", function()
    local name = N("extend")
    local a = assert(lock.acquire(name, { ttl_ms = 150 }))
    assert.is_true(a:extend(3000))
    core.sleep(0.25)                     -- past the first TTL
    assert.is_true(a:held())
    assert.is_true(exists(name))
    local pttl = assert(redis.call("PTTL", lock_key(name)))
    assert.is_true(pttl > 2000, tostring(pttl))
    assert.is_true(a:extend())           -- default: the lock's own ttl_ms
    assert.is_true(a:release())

    -- a non-owner (whose lock expired and went to b) cannot extend b's
    local c = assert(lock.acquire(name, { ttl_ms = 50 }))
    core.sleep(0.1)
    local b = assert(lock.acquire(name, { ttl_ms = 1000 }))
    local ok, err = c:extend(60000)
    assert.is_false(ok)
    assert.are.equal("not held", err)
    pttl = assert(redis.call("PTTL", lock_key(name)))
    assert.is_true(pttl <= 1000, tostring(pttl))
    -- nor does a released lock extend
    assert.is_true(b:release())
    ok, err = b:extend(1000)
    assert.is_false(ok)
    assert.are.equal("not held", err)
    assert.is_false(exists(name))
  end)

  it("releases a <close> variable on the block's normal exit", function()
    local name = N("close_ok")
    do
      local lk <close> = assert(lock.acquire(name, { ttl_ms = 10000 }))
      assert.is_true(exists(name))
      assert.is_true(lk:held())
    end
    assert.is_false(exists(name))        -- the release was waited for
    local again = assert(lock.acquire(name))
    again:release()
  end)

  it("releases a <close> variable when the function raises", function()
    local name = N("close_err")
    local held_inside
    local ok, err = pcall(function()
      local lk <close> = assert(lock.acquire(name, { ttl_ms = 10000 }))
      held_inside = exists(name)
      error("boom")
    end)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("boom"))
    assert.is_true(held_inside)
    assert.is_false(exists(name))
  end)

  it("releases fire-and-forget when a failed task is closed (no yield possible)", function()
    local name = N("task_fail")
    local started = false
    core.spawn(function()
      local lk <close> = assert(lock.acquire(name, { ttl_ms = 10000 }))
      started = true
      error("the task fails while holding the lock")
    end)
    assert.is_true(eventually(2, function() return started end))
    -- well before the 10 s TTL
    assert.is_true(eventually(2, function() return not exists(name) end))
  end)

  it("releases fire-and-forget from __gc", function()
    local name = N("gc")
    do
      local lk = assert(lock.acquire(name, { ttl_ms = 10000 }))
      assert.is_true(lk:held())
    end
    collectgarbage()
    collectgarbage()
    assert.is_true(eventually(2, function() return not exists(name) end))
  end)

  it("accepts a nil <close> value (a refused acquire)", function()
    local name = N("nil_close")
    local a = assert(lock.acquire(name))
    do
      local lk <close> = lock.acquire(name)
      assert.is_nil(lk)
    end
    assert.is_true(a:release())
  end)

  it("forgets a lock whose TTL ran out (held() is local knowledge)", function()
    local name = N("held")
    local lk = assert(lock.acquire(name, { ttl_ms = 30 }))
    assert.is_true(lk:held())
    core.sleep(0.06)
    assert.is_false(lk:held())
    assert.is_false(lk:release())
  end)

  it("raises on misuse", function()
    assert.has_error(function() lock.acquire() end)
    assert.has_error(function() lock.acquire("") end)
    assert.has_error(function() lock.acquire(("x"):rep(2000)) end)
    assert.has_error(function() lock.acquire("x", { ttl_ms = 0 }) end)
    assert.has_error(function() lock.acquire("x", { ttl_ms = 1.5 }) end)
    assert.has_error(function() lock.acquire("x", { wait_ms = -1 }) end)
    assert.has_error(function() lock.acquire("x", { ttl = 5 }) end)
    assert.has_error(function() lock.acquire("x", { ttl_ms = "5000" }) end)
    assert.has_error(function() lock.acquire("x", "opts") end)
    local name = N("misuse")
    local lk = assert(lock.acquire(name))
    assert.has_error(function() lk:extend(0) end)
    assert.has_error(function() lk.release() end)
    assert.has_error(function() lk.fence = 3 end)
    lk:release()
  end)

  it("cannot acquire outside the task (nested coroutine)", function()
    local co = coroutine.create(function() return lock.acquire(N("nested")) end)
    local ok, err = coroutine.resume(co)
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("request task", 1, true))
  end)
end)
