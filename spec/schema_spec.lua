local schema = require "jollyjet.schema"
local policy = require "jollyjet.policy"

describe("schema", function()
  local s = {
    fields = {
      n = { type = "integer", default = 5, min = 1, max = 10 },
      mode = { type = "string", default = "open", one_of = { "open", "closed" } },
      ratio = { type = "number", default = 0.5 },
      list = { type = "array", elements = { type = "string" }, default = {} },
      nested = { type = "record", fields = { on = { type = "boolean", default = true } } },
      by = { type = "map", values = { type = "integer" }, default = {} },
    },
  }

  it("fills defaults", function()
    local v = assert(schema.validate(s, {}))
    assert.same({ n = 5, mode = "open", ratio = 0.5, list = {}, nested = { on = true }, by = {} }, v)
  end)

  it("rejects out-of-range, wrong types and unknown fields with the path", function()
    local _, err = schema.validate(s, { n = 11 })
    assert.matches("^n: must be <= 10", err)
    _, err = schema.validate(s, { n = "3" })
    assert.matches("^n: expected an integer", err)
    _, err = schema.validate(s, { mode = "ajar" })
    assert.matches("mode: must be one of", err)
    _, err = schema.validate(s, { nested = { on = 1 } })
    assert.matches("^nested.on: expected true or false", err)
    _, err = schema.validate(s, { list = { "a", 2 } })
    assert.matches("list%[2%]: expected a string", err)
    _, err = schema.validate(s, { typo = 1 })
    assert.matches("typo: unknown field", err)
    _, err = schema.validate(s, { by = { x = 1.5 } })
    assert.matches("by.x: expected an integer", err)
  end)

  it("refuses NaN for a number, with or without bounds", function()
    local _, err = schema.validate(s, { ratio = 0 / 0 })
    assert.matches("^ratio: expected a number, got nan", err)
    local bounded = { fields = { x = { type = "number", default = 1, min = 0, max = 2 } } }
    _, err = schema.validate(bounded, { x = 0 / 0 })
    assert.matches("^x: expected a number, got nan", err)
    _, err = schema.validate(bounded, { x = -(0 / 0) })
    assert.matches("^x: expected a number, got nan", err)
  end)

  it("accepts integral floats as integers", function()
    local v = assert(schema.validate(s, { n = 3.0 }))
    assert.equal(3, v.n)
    assert.equal("integer", math.type(v.n))
  end)

  it("raises on misuse", function()
    assert.has_error(function() schema.validate(nil, {}) end)
  end)
end)

describe("policy sandbox", function()
  it("keeps a policy's assignments to the libraries inside the policy", function()
    local floor, mininteger, format, rep = math.floor, math.mininteger, string.format, string.rep
    local chunk = assert(load([[
      math.mininteger = {}
      math.floor = nil
      string.format = nil
      table.concat = nil
      assert(getmetatable("") == nil, "the string metatable is reachable")
      local ok = pcall(function() getmetatable("").__index.rep = nil end)
      return { ok = ok, rep = ("x"):rep(2) }
    ]], "=policy", "t", policy.sandbox()))
    local got = chunk()
    assert.is_false(got.ok)
    assert.equal("xx", got.rep)
    assert.equal(floor, math.floor)
    assert.equal(mininteger, math.mininteger)
    assert.equal(format, string.format)
    assert.equal(rep, string.rep)
    assert.is_function(table.concat)
  end)
end)

describe("shipped policies", function()
  it("all pass their schemas", function()
    local loaded = policy.load_all()
    assert.is_table(loaded.cache)
  end)

  it("carry the seeds' TTLs", function()
    local ttl = policy.get("cache").ttl
    assert.same({ product = 1800, list = 600, search = 300, category = 3600, wishlist = 900, negative = 30,
                  response = 60 }, ttl)
    assert.equal(0.1, policy.get("cache").jitter)
  end)
end)
