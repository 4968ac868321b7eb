-- Product catalogue routes:
--   POST   /api/products                 201 + Location, the product
--   GET    /api/products?page&limit&category&search&isActive
--                                        {"products":[...],"total":N,"page":P,"limit":L}
--   GET    /api/products/{id}            the product | 404
--   PUT    /api/products/{id}            partial update (same as PATCH) | 404 | 400
--   PATCH  /api/products/{id}
--   DELETE /api/products/{id}            204 | 404
--
-- Caching (jollyjet.cache):
--   "product" ns, key = id: the product's JSON text, versioned by the row's
--     version. GET fills it, POST writes it through, PUT/PATCH/DELETE and
--     wishlist toggles invalidate it with the new version.
--   "list" / "category" / "search" ns (search given / only category / else),
--     key = catalog.filters_key: {"ids":[...],"total":N} of one page, tagged
--     "products". Items come from the "product" ns (fetch_many) and their
--     JSON texts are spliced into the body without decoding. Writes that can
--     change list membership or order bump the "products" tag.
-- What each write invalidates is policy (policies/invalidation.lua), applied
-- through jollyjet.invalidation: product_created / _updated / _deleted.
-- X-Cache on every GET is the cache's source for the product, or for the
-- page's id list.
local cache = require "jollyjet.cache"
local catalog = require "jollyjet.catalog"
local invalidation = require "jollyjet.invalidation"
local http = require "jollyjet.http"
local core = require "engine.core"
local cjson = require("cjson.safe").new()

local type, pairs, ipairs, tostring, concat = type, pairs, ipairs, tostring, table.concat
local tointeger, floor = math.tointeger, math.floor

cjson.decode_invalid_numbers(false)   -- NaN, Infinity and hex are not JSON
cjson.decode_max_depth(32)

local _M = {}

-- Ids are ours ("p-0001", "p-<16 hex>"); anything else cannot exist, and is
-- answered without touching the cache or the database.
local function valid_id(id)
  return type(id) == "string" and #id <= 64 and id:find("^[%w_%-]+$") ~= nil
end
_M.valid_id = valid_id

local function json_response(status, body, headers)
  headers = headers or {}
  headers["Content-Type"] = "application/json"
  return status, body, headers
end
_M.json_response = json_response

local function not_found(id, headers)
  local s, b, h = http.error(404, "not_found", "no product " .. tostring(id))
  if headers then for k, v in pairs(headers) do h[k] = v end end
  return s, b, h
end
_M.not_found = not_found

-- SQLite's words for "another connection holds the lock" (SQLITE_BUSY,
-- SQLITE_LOCKED): the statement gave up after the busy timeout (1 s,
-- engine/src/db.c) and changed nothing, so the client may simply retry.
local function db_busy(err)
  return type(err) == "string" and (err:find("database is locked", 1, true) or
                                    err:find("database table is locked", 1, true)) ~= nil
end

local function unavailable(err)
  core.log("error", "catalogue: " .. tostring(err))
  if db_busy(err) then
    local s, b, h = http.error(503, "database_busy",
                               "the database is locked by another writer; nothing was changed, retry shortly")
    h["Retry-After"] = "1"
    return s, b, h
  end
  return http.error(503, "unavailable", "the catalogue is temporarily unavailable")
end
_M.unavailable = unavailable

local function validation_failed(errs)
  local parts = {}
  for i, e in ipairs(errs) do parts[i] = e.field .. " " .. e.message end
  return http.error(400, "validation_failed", "invalid input: " .. concat(parts, "; "), { details = errs })
end
_M.validation_failed = validation_failed

-- A request body that must be a JSON object: value | nil, status, body, headers
local function decode_object(body)
  if body == nil or not body:find("%S") then
    return nil, http.error(400, "invalid_json", "request body is empty (send a JSON object)")
  end
  local v, err = cjson.decode(body)
  if v == nil then
    return nil, http.error(400, "invalid_json", "malformed JSON: " .. tostring(err))
  end
  -- cjson gives a table for both {} and []: look at the text.
  if type(v) ~= "table" or body:match("^%s*(.)") ~= "{" then
    return nil, http.error(400, "invalid_body", "request body must be a JSON object")
  end
  return v
end
_M.decode_object = decode_object

local function bypass_opts(req, tags)
  local bypass = cache.bypass(req)
  if not bypass and not tags then return nil end
  return { bypass = bypass or nil, tags = tags }
end

-- json_texts, err = items(ids, bypass): the products' JSON texts in the
-- order of ids, from the "product" cache; ids that no longer exist are left
-- out.
local function items(ids, bypass)
  if #ids == 0 then return {} end
  local values, err = cache.fetch_many("product", ids, function(missing)
    local rows, lerr = catalog.get_many(missing)
    if not rows then return nil, lerr end
    local out = {}
    for id, row in pairs(rows) do out[id] = { value = catalog.encode(row), version = row.version } end
    return out
  end, bypass and { bypass = true } or nil)
  if not values then return nil, err end
  local out = {}
  for _, id in ipairs(ids) do
    local v = values[id]
    if v ~= nil then out[#out + 1] = v end
  end
  return out
end
_M.items = items

-- The cached id list of a page: {"ids":[...],"total":N}
local function encode_page(page)
  return '{"ids":' .. catalog.json_string_array(page.ids) .. ',"total":' .. page.total .. "}"
end

-- X-Cache, and Age (whole seconds since the entry was stored) when the
-- answer came from the cache.
local function cache_headers(source, stored_at)
  local h = { ["X-Cache"] = source }
  if stored_at and (source == "HIT" or source == "STALE") then
    local age = floor(core.time() - stored_at)
    h.Age = age > 0 and age or 0
  end
  return h
end

local function list_products(req)
  local f, errs = catalog.parse_filters(req.args)
  if not f then return validation_failed(errs) end
  local ns = f.search and "search" or (f.category and "category") or "list"
  local opts = bypass_opts(req, { "products" })
  local text, err, source, _, stored_at = cache.fetch(ns, catalog.filters_key(f), function()
    local page, lerr = catalog.list(f)
    if not page then return nil, lerr end
    return encode_page(page)
  end, opts)
  if err then return unavailable(err) end
  local page = text and cjson.decode(text)
  local ids, total = {}, 0
  if type(page) == "table" and type(page.ids) == "table" then
    ids, total = page.ids, tointeger(page.total) or 0   -- cjson decodes numbers as floats
  end
  local list, ierr = items(ids, opts.bypass)
  if not list then return unavailable(ierr) end
  return json_response(200, concat({
    '{"products":[', concat(list, ","), '],"total":', tostring(total),
    ',"page":', tostring(f.page), ',"limit":', tostring(f.limit), "}",
  }), cache_headers(source, stored_at))
end

local function get_product(req)
  local id = req.params.id
  if not valid_id(id) then return not_found(id) end
  local text, err, source, _, stored_at = cache.fetch("product", id, function()
    local row, lerr = catalog.get(id)
    if not row then return nil, lerr end
    return catalog.encode(row), row.version
  end, bypass_opts(req))
  if err then return unavailable(err) end
  if text == nil then return not_found(id, { ["X-Cache"] = source }) end
  return json_response(200, text, cache_headers(source, stored_at))
end

local function create_product(req)
  local input, s, b, h = decode_object(req.body)
  if not input then return s, b, h end
  local row, err = catalog.create(input)
  if not row then
    if type(err) == "table" then return validation_failed(err) end
    return unavailable(err)
  end
  local text = catalog.encode(row)
  cache.set("product", row.id, text, { version = row.version })
  invalidation.apply("product_created", { id = row.id, version = row.version })
  return json_response(201, text, { Location = "/api/products/" .. row.id })
end

local function update_product(req)
  local id = req.params.id
  local input, s, b, h = decode_object(req.body)
  if not input then return s, b, h end
  -- Validate first so a bad body is a 400 even for an unknown id.
  local _, errs = catalog.validate(input, true)
  if errs then return validation_failed(errs) end
  if not valid_id(id) then return not_found(id) end
  local row, err = catalog.update(id, input)
  if not row then
    if err == nil then return not_found(id) end
    if type(err) == "table" then return validation_failed(err) end
    return unavailable(err)
  end
  local changed = {}   -- the fields this request wrote
  for field in pairs(input) do changed[field] = true end
  local text = catalog.encode(row)
  invalidation.apply("product_updated", { id = id, version = row.version, changed = changed, value = text })
  return json_response(200, text)
end

local function delete_product(req)
  local id = req.params.id
  if not valid_id(id) then return not_found(id) end
  local version, err = catalog.delete(id)
  if not version then
    if err == nil then return not_found(id) end
    return unavailable(err)
  end
  invalidation.apply("product_deleted", { id = id, version = version + 1 })
  return 204, "", {}
end

_M.routes = {
  { "GET", "/api/products", list_products },
  { "POST", "/api/products", create_product },
  -- fast_cache: a fresh cached product may be answered by the C host itself
  -- (engine.fastpath), byte for byte what get_product answers on a HIT
  { "GET", "/api/products/{id}", get_product, { fast_cache = "product" } },
  { "PUT", "/api/products/{id}", update_product },
  { "PATCH", "/api/products/{id}", update_product },
  { "DELETE", "/api/products/{id}", delete_product },
}

return _M
