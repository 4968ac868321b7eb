-- admin_spec.lua: the admin API's pieces that need no HTTP server
-- (jollyjet.admin, core.reload_all, http.json's empty arrays). The routes
-- themselves are covered by tests/integration/test_admin.py.
local core = require "engine.core"
local admin = require "jollyjet.admin"
local http = require "jollyjet.http"
local cjson = require "cjson.safe"

local function req(authorization)
  return { headers = { authorization = authorization } }
end

describe("jollyjet.admin", function()
  describe("bearer", function()
    it("takes the token of a Bearer authorization, whatever the scheme's case", function()
      assert.equal("abc.DEF-123_~+/=", admin.bearer(req("Bearer abc.DEF-123_~+/=")))
      assert.equal("t0k3n", admin.bearer(req("bearer t0k3n")))
      assert.equal("t0k3n", admin.bearer(req("BEARER   t0k3n  ")))
    end)

    it("finds no token without the header, with another scheme, no token or extra words", function()
      assert.is_nil(admin.bearer({ headers = {} }))
      assert.is_nil(admin.bearer({}))
      assert.is_nil(admin.bearer(req("Basic dXNlcjpwYXNz")))
      assert.is_nil(admin.bearer(req("Bearer")))
      assert.is_nil(admin.bearer(req("Bearer a b")))
      assert.is_nil(admin.bearer(req("tokenonly")))
    end)
  end)

  describe("check", function()
    it("answers 404 not_found while ADMIN_TOKEN is unset, token or not", function()
      local orig_config = core.config
      finally(function() core.config = orig_config end)
      core.config = function() local c = orig_config(); c.admin_enabled = false; return c end
      for _, a in ipairs({ false, "Bearer whatever-token-1234567" }) do
        local s, b, h = admin.check(req(a or nil))
        assert.equal(404, s)
        assert.same({ success = false, error = "not_found", message = "admin API is disabled: set ADMIN_TOKEN" },
                    cjson.decode(b))
        assert.is_nil(h["WWW-Authenticate"])
        assert.equal("no-store", h["Cache-Control"])
      end
    end)

    it("answers 401 with WWW-Authenticate: Bearer when the token is missing or wrong", function()
      local orig_config, orig_matches = core.config, core.admin_token_matches
      finally(function() core.config, core.admin_token_matches = orig_config, orig_matches end)
      core.config = function() local c = orig_config(); c.admin_enabled = true; return c end
      core.admin_token_matches = function(t) return t == "the-right-token-0123" end
      local s, b, h = admin.check(req(nil))
      assert.equal(401, s)
      assert.equal("unauthorized", cjson.decode(b).error)
      assert.equal("Bearer", h["WWW-Authenticate"])
      s, b, h = admin.check(req("Bearer the-wrong-token-0123"))
      assert.equal(401, s)
      assert.equal("unauthorized", cjson.decode(b).error)
      assert.equal('Bearer error="invalid_token"', h["WWW-Authenticate"])
      assert.is_nil(admin.check(req("Bearer the-right-token-0123")))
      local wrapped = admin.protect(function() return 200, "ran" end)
      assert.equal(401, (wrapped(req("Basic x"))))
      assert.same({ 200, "ran" }, { wrapped(req("Bearer the-right-token-0123")) })
    end)

    it("raises when protect is not given a function", function()
      assert.has_error(function() admin.protect("x") end, "admin.protect: expected a function")
    end)
  end)
end)

describe("core.reload_all", function()
  it("returns nil, err without a master process (here: jollyjet spec)", function()
    local ok, err = core.reload_all()
    assert.is_nil(ok)
    assert.matches("no master process", err)
  end)
end)

describe("http.json", function()
  it("encodes http.empty_array as [] and an empty table as {}", function()
    local _, body = http.json(200, { a = http.empty_array, b = {}, c = { 1, 2 } })
    local doc = cjson.decode(body)
    assert.matches('"a":%[%]', body)
    assert.matches('"b":{}', body)
    assert.same({ 1, 2 }, doc.c)
  end)
end)
