local core = require "engine.core"

describe("engine.core", function()
  it("sleeps by yielding, and time moves", function()
    local t0 = core.time()
    assert.is_true(core.sleep(0.02))
    assert.is_true(core.time() - t0 >= 0.015)
  end)

  it("idles like sleep while its generation is current (a reload ends it: test_memory.py)", function()
    local t0 = core.time()
    assert.is_true(core.idle(0.02))
    assert.is_true(core.time() - t0 >= 0.015)
    assert.has_error(function() core.idle(-1) end)
  end)

  it("gives random bytes from the OS", function()
    local a, b = core.random_bytes(32), core.random_bytes(32)
    assert.equal(32, #a)
    assert.not_equal(a, b)
    assert.has_error(function() core.random_bytes(0) end)
  end)

  it("lists a directory sorted, filtered by suffix", function()
    local names = core.list_dir(core.config().lua_dir .. "/jollyjet", ".lua")
    local sorted = { table.unpack(names) }
    table.sort(sorted)
    assert.same(sorted, names)
    assert.truthy(#names > 3)
    local none, err = core.list_dir("/definitely/not/here")
    assert.is_nil(none)
    assert.matches("not/here", err)
  end)

  describe("event", function()
    it("wakes every waiter with the signalled values", function()
      local ev = core.event()
      local got = {}
      for i = 1, 3 do
        core.spawn(function() got[i] = { ev:wait(1) } end)
      end
      core.sleep(0.01)                    -- let the waiters start waiting
      assert.equal(3, ev:signal("v", 42))
      core.sleep(0.01)
      for i = 1, 3 do assert.same({ "v", 42 }, got[i]) end
    end)

    it("times out with nil, 'timeout'", function()
      local ev = core.event()
      local v, err = ev:wait(0.02)
      assert.is_nil(v)
      assert.equal("timeout", err)
      assert.equal(0, ev:signal("late"))  -- the timed-out waiter is not woken twice
    end)

    it("rejects a bad timeout", function()
      assert.has_error(function() core.event():wait(0) end)
    end)
  end)

  describe("spawn", function()
    it("runs a function in its own task on the next loop turn", function()
      local ran = false
      assert.is_true(core.spawn(function(x) core.sleep(0.001) ran = x end, "yes"))
      assert.is_false(ran)
      core.sleep(0.02)
      assert.equal("yes", ran)
    end)

    it("raises on misuse", function()
      assert.has_error(function() core.spawn("not a function") end)
    end)
  end)
end)
