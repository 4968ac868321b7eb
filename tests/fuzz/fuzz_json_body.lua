-- Driver of fuzz_json_body.c: one product body through the handler's own
-- decode_object and catalog.validate; checks what an accepted body promises
-- (the column values the INSERT/UPDATE would get) and that a refused one
-- gets a well-formed 400.
local type, pairs, ipairs, assert, math_type, utf8len = type, pairs, ipairs, assert, math.type, utf8.len
-- The cache layer needs a running engine (it registers Redis scripts when
-- loaded) and the body path never uses it: stand-ins that raise if touched,
-- so the real handlers.products loads and any use would be a finding.
for _, name in ipairs({ "jollyjet.cache", "jollyjet.invalidation" }) do
  package.loaded[name] = setmetatable({}, { __index = function(_, k)
    error(name .. "." .. tostring(k) .. " used on the body path", 2)
  end })
end
local products = require "handlers.products"
local catalog = require "jollyjet.catalog"
local cjson = require("cjson.safe").new()


local function check_error_response(status, body, codes)
  assert(status == 400, "status " .. tostring(status))
  local doc = assert(cjson.decode(body), "error body is not JSON")
  assert(doc.success == false and codes[doc.error], "error code " .. tostring(doc.error))
  assert(type(doc.message) == "string" and doc.message ~= "")
  return doc
end

local function check_text(v, max, nonempty)
  assert(type(v) == "string" and utf8len(v) and utf8len(v) <= max)
  if nonempty then assert(v:find("%S")) end
end

return function(body, partial)
  local input, status, rbody = products.decode_object(body)
  if not input then
    check_error_response(status, rbody, { invalid_json = true, invalid_body = true })
    return
  end
  assert(type(input) == "table", "decode_object gave a " .. type(input))
  local v, errs = catalog.validate(input, partial)
  if not v then
    assert(type(errs) == "table" and #errs > 0, "refused without errors")
    for _, e in ipairs(errs) do
      assert(type(e.field) == "string" and type(e.message) == "string", "malformed error entry")
    end
    local s, b = products.validation_failed(errs)
    local doc = check_error_response(s, b, { validation_failed = true })
    assert(type(doc.details) == "table" and #doc.details == #errs)
    return
  end
  assert(errs == nil)
  for k in pairs(v) do
    assert(({ name = 1, description = 1, price_cents = 1, stock = 1, category = 1, images = 1,
              is_active = 1 })[k], "unexpected column " .. tostring(k))
  end
  if not partial then
    assert(v.name and v.price_cents and v.category, "create without a required field")
    assert(v.description and v.stock and v.images and v.is_active, "create without a default")
  end
  if v.name then check_text(v.name, catalog.NAME_MAX, true) end
  if v.description then check_text(v.description, catalog.DESCRIPTION_MAX, false) end
  if v.category then check_text(v.category, catalog.CATEGORY_MAX, true) end
  if v.price_cents then
    assert(math_type(v.price_cents) == "integer" and v.price_cents >= 0 and v.price_cents <= catalog.PRICE_MAX_CENTS)
    assert(v.price_cents == input.price * 100 or v.price_cents / 100 == input.price, "price changed its value")
  end
  if v.stock then assert(math_type(v.stock) == "integer" and v.stock >= 0 and v.stock <= catalog.STOCK_MAX) end
  if v.is_active then assert(v.is_active == 0 or v.is_active == 1) end
  if v.images then
    local list = assert(cjson.decode(v.images), "images column is not JSON")
    assert(type(list) == "table" and #list <= catalog.IMAGES_MAX)
    for i, u in ipairs(list) do
      assert(type(u) == "string" and u:find("^[Hh][Tt][Tt][Pp][Ss]?://"), "image " .. i)
      assert(u == input.images[i], "image changed on the way")
    end
  end
  -- The product JSON a GET would serve decodes back to the same values.
  local row = { id = "p-0001", name = v.name or "n", description = v.description or "",
                price_cents = v.price_cents or 0, stock = v.stock or 0, category = v.category or "c",
                images = v.images or "[]", is_active = v.is_active or 1 }
  local doc = assert(cjson.decode(catalog.encode(row)), "catalog.encode gave invalid JSON")
  assert(doc.name == row.name and doc.description == row.description and doc.category == row.category)
  assert(doc.stock == row.stock)
  assert(math.floor(doc.price * 100 + 0.5) == row.price_cents, "price does not round-trip")
  assert(doc.isActive == (row.is_active == 1))
end
