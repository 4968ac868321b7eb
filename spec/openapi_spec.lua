-- openapi_spec.lua: the OpenAPI document (jollyjet.openapi) is structurally
-- valid OpenAPI 3.1, and every route the router serves is in it with the
-- same method. The router is built exactly as the engine builds it: by
-- loading jollyjet.app (lua/handlers/*.lua, policies validated).
--
-- Documented operations without a route are listed, and fail the spec when
-- STRICT is true (a document describing routes that do not exist is wrong).
local STRICT = true

local openapi = require "jollyjet.openapi"
local openapi_html = require "jollyjet.openapi_html"
local sha256 = require "jollyjet.sha256"
local cjson = require "cjson.safe"

local METHODS = {}
for _, m in ipairs(openapi.METHODS) do METHODS[m] = true end

-- ------------------------------------------------------------- validator

-- problems = validate(doc): every structural problem found, as "where: what".
local function validate(doc)
  local problems = {}
  local function bad(where, what) problems[#problems + 1] = where .. ": " .. what end
  local function is_str(v) return type(v) == "string" and v ~= "" end

  if type(doc) ~= "table" then return { "document: not an object" } end
  if type(doc.openapi) ~= "string" or not doc.openapi:match("^3%.1%.%d+$") then
    bad("openapi", "must be \"3.1.x\", is " .. tostring(doc.openapi))
  end
  if type(doc.info) ~= "table" then
    bad("info", "missing")
  else
    if not is_str(doc.info.title) then bad("info.title", "missing") end
    if not is_str(doc.info.version) then bad("info.version", "missing") end
  end
  if type(doc.paths) ~= "table" then
    bad("paths", "missing")
    return problems
  end
  local comps = doc.components or {}
  for kind, group in pairs(comps) do
    if type(group) ~= "table" then bad("components." .. kind, "not an object") end
    for name in pairs(type(group) == "table" and group or {}) do
      if not tostring(name):match("^[%w%.%-_]+$") then bad("components." .. kind .. "." .. name, "bad name") end
    end
  end

  -- every $ref resolves inside the document
  local function walk(node, where)
    if type(node) ~= "table" then return end
    local r = node["$ref"]
    if r ~= nil then
      if type(r) ~= "string" or r:sub(1, 2) ~= "#/" then
        bad(where, "$ref " .. tostring(r) .. " is not local")
      elseif openapi.resolve(doc, r) == nil then
        bad(where, "$ref " .. r .. " does not resolve")
      end
    end
    for k, v in pairs(node) do walk(v, where .. "/" .. tostring(k)) end
  end
  walk(doc, "#")

  local function deref(node)
    local seen = 0
    while type(node) == "table" and node["$ref"] and seen < 10 do
      node = openapi.resolve(doc, node["$ref"])
      seen = seen + 1
    end
    return node
  end

  local tags = {}
  for i, t in ipairs(doc.tags or {}) do
    if not is_str(t.name) then bad("tags[" .. i .. "]", "no name") end
    if tags[t.name] then bad("tags[" .. i .. "]", "duplicate tag " .. t.name) end
    tags[t.name] = true
  end
  local schemes = comps.securitySchemes or {}
  local ids = {}
  local templates = {}
  for path, item in pairs(doc.paths) do
    local where = "paths." .. tostring(path)
    if type(path) ~= "string" or path:sub(1, 1) ~= "/" then bad(where, "path must start with '/'") end
    -- equal templates with other parameter names are the same path (OpenAPI 3.1 4.8.8)
    local shape = tostring(path):gsub("{[^}]*}", "{}")
    if templates[shape] then bad(where, "same template as " .. templates[shape]) end
    templates[shape] = path
    local names = {}
    for name in tostring(path):gmatch("{([^}]*)}") do
      if names[name] then bad(where, "parameter {" .. name .. "} twice") end
      names[name] = true
    end
    if type(item) ~= "table" then
      bad(where, "not an object")
    else
      local nops = 0
      for k in pairs(item) do
        if not (METHODS[k] or k == "parameters" or k == "summary" or k == "description" or k == "servers") then
          bad(where, "unexpected key " .. tostring(k))
        end
      end
      local function params_of(list, w, into)
        for i, p in ipairs(list or {}) do
          local r = deref(p)
          local pw = w .. ".parameters[" .. i .. "]"
          if type(r) ~= "table" then
            bad(pw, "does not resolve")
          else
            if not is_str(r.name) then bad(pw, "no name") end
            if not (r["in"] == "query" or r["in"] == "header" or r["in"] == "path" or r["in"] == "cookie") then
              bad(pw, "bad in " .. tostring(r["in"]))
            end
            if (r.schema == nil) == (r.content == nil) then bad(pw, "needs exactly one of schema and content") end
            if r["in"] == "path" and r.required ~= true then bad(pw, "path parameter must be required") end
            local key = tostring(r["in"]) .. ":" .. tostring(r.name)
            if into[key] then bad(pw, "duplicate parameter " .. key) end
            into[key] = r
          end
        end
      end
      local path_level = {}
      params_of(item.parameters, where, path_level)
      for _, m in ipairs(openapi.METHODS) do
        local op = item[m]
        if op ~= nil then
          nops = nops + 1
          local ow = where .. "." .. m
          if type(op) ~= "table" then
            bad(ow, "not an object")
          else
            -- operationId unique
            if not is_str(op.operationId) then
              bad(ow, "no operationId")
            elseif ids[op.operationId] then
              bad(ow, "operationId " .. op.operationId .. " also used by " .. ids[op.operationId])
            else
              ids[op.operationId] = ow
            end
            for _, t in ipairs(op.tags or {}) do
              if not tags[t] then bad(ow, "tag " .. tostring(t) .. " is not declared in tags") end
            end
            -- parameters: path-level ones, overridden by the operation's
            local own = {}
            params_of(op.parameters, ow, own)
            local all = {}
            for k, v in pairs(path_level) do all[k] = v end
            for k, v in pairs(own) do all[k] = v end
            for name in pairs(names) do
              if not all["path:" .. name] then bad(ow, "path parameter {" .. name .. "} is not declared") end
            end
            for key in pairs(all) do
              local pname = key:match("^path:(.*)$")
              if pname and not names[pname] then bad(ow, "path parameter " .. pname .. " is not in the path") end
            end
            -- request body
            if op.requestBody ~= nil then
              local b = deref(op.requestBody)
              if type(b) ~= "table" or type(b.content) ~= "table" or next(b.content) == nil then
                bad(ow .. ".requestBody", "needs content")
              end
            end
            -- responses
            if type(op.responses) ~= "table" or next(op.responses) == nil then
              bad(ow, "no responses")
            else
              for code, resp in pairs(op.responses) do
                local rw = ow .. ".responses." .. tostring(code)
                if not (code == "default" or tostring(code):match("^[1-5][0-9X][0-9X]$")) then
                  bad(rw, "bad status code")
                end
                local r = deref(resp)
                if type(r) ~= "table" or type(r.description) ~= "string" then
                  bad(rw, "needs a description")
                else
                  for ctype, media in pairs(r.content or {}) do
                    if type(media) ~= "table" then bad(rw .. ".content." .. ctype, "not an object") end
                  end
                  for hname, h in pairs(r.headers or {}) do
                    local hr = deref(h)
                    if type(hr) ~= "table" or (hr.schema == nil and hr.content == nil) then
                      bad(rw .. ".headers." .. hname, "needs a schema")
                    end
                  end
                end
              end
            end
            -- security requirements name declared schemes
            for _, req in ipairs(op.security or {}) do
              for name, scopes in pairs(req) do
                if not schemes[name] then bad(ow, "security scheme " .. tostring(name) .. " is not declared") end
                if type(scopes) ~= "table" or (next(scopes) ~= nil and #scopes == 0) then bad(ow, "scopes must be a list") end
              end
            end
          end
        end
      end
      if nops == 0 then bad(where, "no operation") end
    end
  end
  return problems
end

-- ------------------------------------------------------------- specs

describe("jollyjet.openapi", function()
  local doc = openapi.build()

  it("is structurally valid OpenAPI 3.1", function()
    local problems = validate(doc)
    assert.are.same({}, problems)
  end)

  it("the validator finds broken documents (it can fail)", function()
    local broken = openapi.build()
    broken.openapi = "3.0.3"
    broken.info.version = nil
    broken.paths["api/x"] = { get = { operationId = "getHealth", responses = {} } }
    broken.paths["/api/products/{id}"].parameters = nil
    broken.paths["/health"].get.responses["200"] = { ["$ref"] = "#/components/responses/Nope" }
    broken.paths["/api/products/{pid}"] = { get = { operationId = "x1", responses = { ["200"] = { description = "" } } } }
    local text = table.concat(validate(broken), "\n")
    for _, want in ipairs({
      'openapi: must be "3.1.x"', "info.version: missing", "paths.api/x: path must start with '/'",
      "operationId getHealth also used", "paths.api/x.get: no responses",
      "paths./api/products/{id}.get: path parameter {id} is not declared",
      "$ref #/components/responses/Nope does not resolve", "same template as",
    }) do
      assert.is_truthy(text:find(want, 1, true), "validator did not report: " .. want .. "\n" .. text)
    end
  end)

  it("has info.version from the engine", function()
    assert.are.equal(require("engine.core").info().version, doc.info.version)
  end)

  it("encodes deterministically, as JSON that decodes to the same document", function()
    local a, b = openapi.encode(doc), openapi.encode(openapi.build())
    assert.are.equal(a, b)
    assert.is_truthy(a:find('^{"openapi":"3%.1%.0","info":{'))
    assert.is_falsy(a:find("\\/", 1, true))
    local back = assert(cjson.decode(a))
    assert.are.equal(doc.info.title, back.info.title)
    assert.are.same(openapi.operations(doc)[1].path, "/api/admin/ratelimit/{rule}/{key}")
    -- empty arrays stay arrays, empty objects objects
    assert.is_truthy(a:find('"security":[{"adminBearer":[]}]', 1, true))
    assert.is_truthy(a:find('"security":[{"sessionCookie":[]},{}]', 1, true))
  end)

  it("takes its limits from the code and the policies", function()
    local catalog = require "jollyjet.catalog"
    local policy = require "jollyjet.policy"
    local s = doc.components.schemas
    assert.are.equal(catalog.NAME_MAX, s.ProductCreate.properties.name.maxLength)
    assert.are.equal(catalog.IMAGES_MAX, s.ProductCreate.properties.images.maxItems)
    assert.are.equal(catalog.STOCK_MAX, s.ProductUpdate.properties.stock.maximum)
    assert.are.same({ "name", "price", "category" }, s.ProductCreate.required)
    assert.are.equal(false, s.ProductCreate.additionalProperties)
    assert.are.equal(catalog.LIMIT_MAX, doc.components.parameters.Limit.schema.maximum)
    assert.are.equal(policy.get("sessions").cookie.name, doc.components.securitySchemes.sessionCookie.name)
    local xcache = doc.components.headers["X-Cache"].schema.enum
    assert.are.same({ "HIT", "MISS", "STALE", "BYPASS" }, xcache)
    assert.are.equal("Rate limit exceeded", s.RateLimitExceeded.properties.error.const)
  end)

  it("documents every route the router serves, with the same method", function()
    local app = require "jollyjet.app"
    local missing, routed = {}, {}
    for _, r in ipairs(app.router.routes) do
      local m = r.method:lower()
      routed[r.pattern .. " " .. m] = true
      local item = doc.paths[r.pattern]
      if not (item and item[m]) then missing[#missing + 1] = r.method .. " " .. r.pattern end
    end
    assert.are.same({}, missing)
    local unrouted = {}
    for _, o in ipairs(openapi.operations(doc)) do
      if not routed[o.path .. " " .. o.method] then unrouted[#unrouted + 1] = o.method:upper() .. " " .. o.path end
    end
    if #unrouted > 0 then
      print(("\nopenapi: %d documented operation(s) without a route in this tree%s:\n  %s"):format(#unrouted,
        STRICT and "" or " (not failing: STRICT = false in spec/openapi_spec.lua)", table.concat(unrouted, "\n  ")))
    end
    if STRICT then assert.are.same({}, unrouted) end
  end)

  it("covers the contract's route list", function()
    local want = {
      "GET /health", "GET /health/live", "GET /health/ready", "GET /metrics", "GET /api/cache/metrics",
      "GET /api/products", "POST /api/products", "GET /api/products/{id}", "PUT /api/products/{id}",
      "PATCH /api/products/{id}", "DELETE /api/products/{id}", "POST /api/products/{id}/wishlist",
      "GET /api/wishlist", "POST /api/sessions", "GET /api/sessions/me", "DELETE /api/sessions/me",
      "GET /api/cache/stats", "DELETE /api/cache", "DELETE /api/cache/tags/{tag}", "GET /api/cache/keys",
      "GET /api/cache/keys/{key}", "DELETE /api/cache/keys/{key}", "GET /api/admin/ratelimit/{rule}/{key}",
      "DELETE /api/admin/ratelimit/{rule}/{key}", "POST /api/admin/reload",
      "GET /openapi.json", "GET /docs", "GET /dashboard",
    }
    for _, w in ipairs(want) do
      local m, p = w:match("^(%u+) (.+)$")
      assert.is_truthy(doc.paths[p] and doc.paths[p][m:lower()], "not documented: " .. w)
    end
    assert.are.equal(#want, #openapi.operations(doc))
  end)

  it("puts the admin bearer scheme on admin routes and the session cookie on session routes", function()
    for _, o in ipairs(openapi.operations(doc)) do
      local admin = o.path:find("^/api/admin/") or o.path:find("^/api/cache/keys") or o.path:find("^/api/cache/tags/")
        or o.path == "/api/cache/stats" or (o.path == "/api/cache" and o.method == "delete")
      local sec = o.op.security
      if admin then
        assert.are.same({ { adminBearer = openapi.EMPTY_ARRAY } }, sec, o.method .. " " .. o.path)
        assert.is_truthy(o.op.responses["401"], o.path)
      elseif o.path:find("^/api/sessions") or o.path:find("wishlist") then
        assert.are.equal(openapi.EMPTY_ARRAY, sec and sec[1] and sec[1].sessionCookie, o.method .. " " .. o.path)
        assert.are.same({}, sec[2], "the session cookie is optional: " .. o.path)
      else
        assert.is_nil(sec, o.method .. " " .. o.path)
      end
      if o.path:find("^/api/") then
        assert.is_truthy(o.op.responses["429"], o.method .. " " .. o.path .. " has no 429")
      end
    end
  end)

  it("renders an HTML page that mentions every path and loads nothing", function()
    local html, css = openapi_html.render(doc)
    for path in pairs(doc.paths) do
      assert.is_truthy(html:find(">" .. openapi_html.escape(path) .. "<", 1, true), "page lacks " .. path)
    end
    assert.is_falsy(html:find("<script", 1, true))
    assert.is_falsy(html:find('src="', 1, true))
    assert.is_falsy(html:find('href="http', 1, true))
    assert.is_truthy(html:find("<style>" .. css .. "</style>", 1, true))
  end)
end)

describe("jollyjet.sha256", function()
  it("matches the FIPS 180-4 test vectors", function()
    assert.are.equal("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", sha256.hex(""))
    assert.are.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", sha256.hex("abc"))
    assert.are.equal("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
      sha256.hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
    assert.are.equal("41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3", sha256.hex(("a"):rep(1000)))
    for n = 54, 66 do   -- around the padding boundary
      assert.are.equal(64, #sha256.hex(("x"):rep(n)))
    end
  end)

  it("base64-encodes (RFC 4648 vectors) and makes CSP hash sources", function()
    local want = { [""] = "", f = "Zg==", fo = "Zm8=", foo = "Zm9v", foob = "Zm9vYg==", fooba = "Zm9vYmE=",
                   foobar = "Zm9vYmFy" }
    for k, v in pairs(want) do assert.are.equal(v, sha256.base64(k)) end
    assert.are.equal("'sha256-bhHHL3z2vDgxUt0W3dWQOrprscmda2Y5pLsLg4GF+pI='", sha256.csp_source("alert(1)"))
    assert.has_error(function() sha256.digest(42) end)
  end)
end)
