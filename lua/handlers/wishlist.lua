-- Per-session wishlist routes:
--   POST /api/products/{id}/wishlist   toggle for the caller's session:
--        {"productId":..,"wishlisted":true|false,"wishlistCount":N} | 404
--   GET  /api/wishlist                 {"products":[...]} of the caller's session
--
-- The session is the `sid` cookie of a jollyjet.session session. A toggle
-- without one, or with an id that names no live session, creates a session
-- and sends its Set-Cookie: an id the client made up (or one planted in a
-- victim's browser: session fixation) is never adopted. GET without a live
-- session is an empty list (no cookie is created). While the session store
-- is down both answer 503 sessions_unavailable rather than trust the cookie.
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
local http = require "jollyjet.http"
local core = require "engine.core"
local cjson = require("cjson.safe").new()

local type, tostring, concat = type, tostring, table.concat

local _M = {}

-- The wishlist belongs to the caller's session id (the `sid` cookie of
-- jollyjet.session: same id format, cookie name and attributes from
-- policies/sessions.lua); an anonymous one is made when there is none.

local function store_unavailable(err)
  core.log("warn", "wishlist: session store unavailable: " .. tostring(err))
  local s, b, h = http.error(503, "sessions_unavailable",
    "sessions are temporarily unavailable (the session store cannot be reached); retry shortly")
  h["Retry-After"] = "1"
  return s, b, h
end

-- sid of the request's live session | nil (none, or unknown) | nil, err
local function live_sid(req)
  local s, err = session.from_request(req)
  if err then return nil, err end
  return s and s.id
end

local function toggle(req)
  local pid = req.params.id
  if not products.valid_id(pid) then return products.not_found(pid) end
  local sid, serr = live_sid(req)
  if serr then return store_unavailable(serr) end
  local headers = {}
  if not sid then
    -- No session is made for a product that does not exist.
    local row, gerr = catalog.get(pid)
    if not row then
      if gerr then return products.unavailable(gerr) end
      return products.not_found(pid)
    end
    local s, cerr = session.create()
    if not s then return store_unavailable(cerr) end
    sid = s.id
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
  local sid, serr = live_sid(req)
  if serr then return store_unavailable(serr) end
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
