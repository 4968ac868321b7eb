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
local core = require "engine.core"
local cjson = require("cjson.safe").new()

local type, tostring, concat, byte, sub = type, tostring, table.concat, string.byte, string.sub

local _M = {}

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

-- base64url without padding
local function b64url(s)
  local out, n = {}, #s
  for i = 1, n, 3 do
    local a, b, c = byte(s, i, i + 2)
    local v = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = (b == nil) and 2 or (c == nil) and 3 or 4
    for k = 1, chars do
      local idx = (v >> (18 - 6 * (k - 1))) & 63
      out[#out + 1] = sub(B64, idx + 1, idx + 1)
    end
  end
  return concat(out)
end
_M.b64url = b64url

local SID_PATTERN = "^" .. ("[%w_%-]"):rep(43) .. "$"

-- The sid cookie's value when it is well formed, else nil. Repeated Cookie
-- headers arrive joined with ", ".
local function session_id(req)
  local cookie = req.headers and req.headers.cookie
  if type(cookie) ~= "string" then return nil end
  for pair in cookie:gmatch("[^;,]+") do
    local name, value = pair:match("^%s*([^=%s]+)%s*=%s*(.-)%s*$")
    if name == "sid" and value:find(SID_PATTERN) then return value end
  end
  return nil
end
_M.session_id = session_id

local function new_session_id()
  return b64url(core.random_bytes(32))
end

local function toggle(req)
  local pid = req.params.id
  if not products.valid_id(pid) then return products.not_found(pid) end
  local sid = session_id(req)
  local headers = {}
  if not sid then
    sid = new_session_id()
    headers["Set-Cookie"] = "sid=" .. sid .. "; Path=/; HttpOnly; SameSite=Lax"
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
  local sid = session_id(req)
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
