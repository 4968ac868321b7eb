-- jollyjet.http: request and response helpers for handlers.
local cjson = require "cjson.safe"

local type, tonumber, char, error, setmetatable = type, tonumber, string.char, error, setmetatable

local _M = {}

_M.null = cjson.null
-- Sentinel for "encode this empty table as a JSON array". lua-cjson 2.1.0
-- has no cjson.empty_array: there it is a marker string that http.json
-- turns into [] after encoding.
local EMPTY_MARK = "\1jj:empty-array\1"
local EMPTY_ENCODED = '"\\u0001jj:empty-array\\u0001"'
_M.empty_array = cjson.empty_array or EMPTY_MARK
local find, gsub = string.find, string.gsub

-- nil when an escape is malformed or decodes to NUL: a NUL cut short where
-- the value meets C (SQLite's LIKE stopped at it, so ?search=a%00b matched
-- every "a"), as the router and the C decoder already refuse it.
local function unescape(s)
  s = s:gsub("+", " ")
  if s:gsub("%%%x%x", ""):find("%", 1, true) then return nil end
  s = s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end)
  if find(s, "\0", 1, true) then return nil end
  return s
end
_M.unescape = unescape

-- args, err = http.parse_query(query): last value wins; nil, err when an
-- escape is malformed (or decodes to NUL).
function _M.parse_query(q)
  local args = {}
  if q == nil or q == "" then return args end
  for pair in q:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    local key, value = unescape(k), unescape(v)
    if not key or not value then return nil, "malformed escape in query string" end
    if key ~= "" then args[key] = value end
  end
  return args
end

-- status, body, headers for a JSON response.
function _M.json(status, value, headers)
  local body, err = cjson.encode(value)
  if not body then error("http.json: cannot encode response: " .. err, 2) end
  if _M.empty_array == EMPTY_MARK and find(body, EMPTY_ENCODED, 1, true) then
    body = gsub(body, '"\\u0001jj:empty%-array\\u0001"', "[]")
  end
  headers = headers or {}
  headers["Content-Type"] = "application/json"
  return status, body, headers
end

-- An error response in the project's one shape:
-- {"success":false,"error":code,"message":msg[,"details":...]}
function _M.error(status, code, message, extra)
  local body = { success = false, error = code, message = message }
  if extra then for k, v in pairs(extra) do body[k] = v end end
  return _M.json(status, body)
end

-- Raise from anywhere in a handler to answer with an error response:
--   http.fail(404, "not_found", "no product 42")
local fail_mt = { __tostring = function(e) return ("HTTP %d: %s"):format(e.status, e.message) end }
function _M.fail(status, code, message, extra)
  error(setmetatable({ status = status, code = code, message = message, extra = extra }, fail_mt), 0)
end
function _M.is_failure(e) return type(e) == "table" and getmetatable(e) == fail_mt end

-- value, err = http.decode_json(body)
function _M.decode_json(body)
  if body == nil or body == "" then return nil, "request body is empty" end
  local v, err = cjson.decode(body)
  if v == nil then return nil, "malformed JSON: " .. tostring(err) end
  return v
end

_M.encode_json = cjson.encode

return _M
