-- Per-session wishlist routes:
--   POST /api/products/{id}/wishlist   toggle for the caller's session:
--        {"productId":..,"wishlisted":true|false,"wishlistCount":N} | 404
--   GET  /api/wishlist                 {"products":[...]} of the caller's session
--
-- The session is the `sid` cookie: 32 random bytes, base64url without
-- padding (43 characters). A toggle without a valid one creates it and sends
-- Set-Cookie: sid=...; Path=/; HttpOnly; SameSite=Lax. GET without one is an
-- empty list (no cookie is created).
--
-- Caching: "wishlist" ns, key = sid: {"ids":[...]} (most recently added
-- first); items come from the "product" ns like list pages do. A toggle
-- invalidates the product (its wishlistCount and version changed) and that
-- session's wishlist only: list pages hold ids, so they stay valid (the
-- "wishlist_toggled" event of policies/invalidation.lua).
local cache = require "jollyjet.cache"
local catalog = require "jollyjet.catalog"
local invalidation = require "jollyjet.invalidation"
local products = require "handlers.products"
local session = require "jollyjet.session"
local cjson = require("cjson.safe").new()

local type, tostring, concat = type, tostring, table.concat

local _M = {}

-- The wishlist belongs to the caller's session id (the `sid` cookie of
-- jollyjet.session: same id format, cookie name and attributes from
-- policies/sessions.lua); an anonymous one is made when there is none.

local function toggle(req)
  local pid = req.params.id
  if not products.valid_id(pid) then return products.not_found(pid) end
  local sid = session.id_from_request(req)
  local headers = {}
  if not sid then
    sid = session.new_id()
    headers["Set-Cookie"] = session.cookie(sid)
  end
  local wishlisted, count, version = catalog.toggle_wishlist(sid, pid)
  if wishlisted == nil then
    if count == nil then return products.not_found(pid) end
    return products.unavailable(count)
  end
  invalidation.apply("wishlist_toggled", { id = pid, version = version, session = sid })
  return products.json_response(200, concat({
    '{"productId":', catalog.json_string(pid), ',"wishlisted":', tostring(wishlisted),
    ',"wishlistCount":', tostring(count), "}",
  }), headers)
end

local function get_wishlist(req)
  local sid = session.id_from_request(req)
  if not sid then return products.json_response(200, '{"products":[]}') end
  local bypass = cache.bypass(req)
  local text, err, source = cache.fetch("wishlist", sid, function()
    local ids, lerr = catalog.wishlist(sid)
    if not ids then return nil, lerr end
    return '{"ids":' .. catalog.json_string_array(ids) .. "}"
  end, bypass and { bypass = true } or nil)
  if err then return products.unavailable(err) end
  local doc = text and cjson.decode(text)
  local ids = type(doc) == "table" and type(doc.ids) == "table" and doc.ids or {}
  local list, ierr = products.items(ids, bypass)
  if not list then return products.unavailable(ierr) end
  return products.json_response(200, '{"products":[' .. concat(list, ",") .. "]}",
    { ["X-Cache"] = source, ["Cache-Control"] = "private" })
end

_M.routes = {
  { "POST", "/api/products/{id}/wishlist", toggle },
  { "GET", "/api/wishlist", get_wishlist },
}

return _M
