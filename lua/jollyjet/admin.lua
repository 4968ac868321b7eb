-- jollyjet.admin: the admin API's authentication.
--
--   token = admin.bearer(req)            -- the token of "Authorization: Bearer <token>", or nil
--   status, body, headers = admin.check(req)   -- nil when the request may go on
--   handler = admin.protect(fn)          -- fn(req) behind the check
--
-- Admin routes need `Authorization: Bearer $ADMIN_TOKEN` (the scheme is
-- case-insensitive, RFC 7235), compared in constant time by
-- core.admin_token_matches. Without it, or with another token: 401
-- {"success":false,"error":"unauthorized",...} and WWW-Authenticate: Bearer
-- (with error="invalid_token" when a token was sent, RFC 6750). When
-- ADMIN_TOKEN is not set the admin API does not exist: 404 not_found.
-- Answers carry Cache-Control: no-store.
local core = require "engine.core"
local http = require "jollyjet.http"

local type, error = type, error

local _M = {}

function _M.bearer(req)
  local h = type(req) == "table" and type(req.headers) == "table" and req.headers.authorization
  if type(h) ~= "string" then return nil end
  local scheme, token = h:match("^%s*(%S+)%s+(%S+)%s*$")
  if not scheme or scheme:lower() ~= "bearer" then return nil end
  return token
end

local function answer(status, code, message, www)
  local s, b, h = http.error(status, code, message)
  h["Cache-Control"] = "no-store"
  if www then h["WWW-Authenticate"] = www end
  return s, b, h
end

function _M.check(req)
  if not core.config().admin_enabled then
    return answer(404, "not_found", "admin API is disabled: set ADMIN_TOKEN")
  end
  local token = _M.bearer(req)
  if not token then
    return answer(401, "unauthorized", "this route needs Authorization: Bearer <ADMIN_TOKEN>", "Bearer")
  end
  if not core.admin_token_matches(token) then
    return answer(401, "unauthorized", "the bearer token is not valid", 'Bearer error="invalid_token"')
  end
  return nil
end

function _M.protect(fn)
  if type(fn) ~= "function" then error("admin.protect: expected a function", 2) end
  return function(req)
    local s, b, h = _M.check(req)
    if s then return s, b, h end
    return fn(req)
  end
end

return _M
