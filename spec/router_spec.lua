local router = require "jollyjet.router"

describe("router", function()
  local r, h1, h2, h3
  before_each(function()
    r = router.new()
    h1, h2, h3 = function() end, function() end, function() end
    r:add("GET", "/api/products", h1)
    r:add("GET", "/api/products/{id}", h2)
    r:add("PUT", "/api/products/{id}", h3)
    r:add("GET", "/api/products/featured", h3)
  end)

  it("matches static routes", function()
    local route = r:match("GET", "/api/products")
    assert.equal(h1, route.handler)
  end)

  it("captures and decodes parameters", function()
    local route, params = r:match("GET", "/api/products/a%20b")
    assert.equal(h2, route.handler)
    assert.same({ id = "a b" }, params)
  end)

  it("prefers a static segment over a parameter", function()
    local route, params = r:match("GET", "/api/products/featured")
    assert.equal(h3, route.handler)
    assert.same({}, params)
  end)

  it("answers HEAD with the GET route", function()
    assert.equal(h2, r:match("HEAD", "/api/products/1").handler)
  end)

  it("reports allowed methods when the path exists with other methods", function()
    local route, _, allow = r:match("DELETE", "/api/products/1")
    assert.is_nil(route)
    assert.equal("GET, HEAD, PUT", allow)
  end)

  it("returns nothing for unknown paths", function()
    local route, _, allow = r:match("GET", "/nope")
    assert.is_nil(route)
    assert.is_nil(allow)
  end)

  it("rejects a malformed escape in a parameter", function()
    assert.is_nil((r:match("GET", "/api/products/%zz")))
  end)

  it("raises on misuse: duplicate routes, bad methods, conflicting parameter names", function()
    assert.has_error(function() r:add("GET", "/api/products", h1) end)
    assert.has_error(function() r:add("FETCH", "/x", h1) end)
    assert.has_error(function() r:add("GET", "/api/products/{sku}", h1) end)
    assert.has_error(function() r:add("GET", "no-slash", h1) end)
    assert.has_error(function() r:add("GET", "/x", "not a function") end)
  end)
end)
