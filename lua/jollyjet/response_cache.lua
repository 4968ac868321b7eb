-- jollyjet.response_cache: whole-response caching of GET/HEAD routes chosen
-- by policy (policies/response_cache.lua), stored through jollyjet.cache
-- (namespace "response": leases, single-flight, tag generations, stale
-- serving and the Redis-down journal all come from there).
--
--   rule = response_cache.rule_for(req)           -- nil: not cached (method, route, policy)
--   status, headers, body = response_cache.serve(req, rule, run)
--     run() -> status, headers, body              -- the route's handler, body already a string
--   response_cache.check_routes(router)           -- at generation build: every rule names a GET route
--   key = response_cache.key(req, rule) ; etag = response_cache.etag(body)
--
-- Key: METHOD " " path "?" canonical query ("|" header "=" value)* for the
-- rule's vary headers. The canonical query decodes every pair, re-encodes it
-- (unreserved characters kept, everything else %XX) and sorts the pairs by
-- key; pairs with the same key keep their order, because the router's
-- parse_query lets the last one win: ?a=1&a=2 and ?a=2&a=1 are different
-- requests, ?a=1&b=2 and ?b=2&a=1 the same one. An absent vary header is
-- "|name!" so it differs from an empty one.
--
-- Stored: only status 200 with a string body of at most max_body_bytes and
-- no Set-Cookie, no Cache-Control private/no-store, no Vary: *. The entry
-- keeps the status, the handler's headers except Set-Cookie, X-Request-Id,
-- Date, X-Cache, Age and framing headers, the body, the ETag and the time it
-- was stored (for Age). Entries carry the rule's tags, so
-- cache.invalidate_tag drops them.
--
-- ETag: the handler's own when it sets one, else a strong ETag made of the
-- FNV-1a 64-bit hash of the body and its length, "<16 hex>-<hex length>"
-- (computed once per fill; FNV is not cryptographic: a validator, not a
-- signature). Every 200 through the middleware has one (bodies over
-- max_body_bytes excepted); If-None-Match ("*", lists, W/ compared weakly)
-- matching it answers 304 with ETag, X-Cache, Age and the caching headers,
-- no body.
--
-- X-Cache: HIT or STALE (with Age, seconds since stored) when the response
-- came from the cache; MISS when the handler ran for this request (if the
-- handler set X-Cache itself, as the catalogue routes do to report their
-- data cache, its value is kept on a miss); BYPASS when the client sent
-- Cache-Control: no-cache / Pragma: no-cache (the handler runs and its
-- response replaces the cached one, inside a lease so a concurrent write
-- still wins) or no-store (the handler runs, nothing is read or stored), or
-- when Redis is unusable.
--
-- TTL: rule.ttl is passed as opts.ttl; jollyjet.cache does not honour a
-- per-call TTL yet, so entries live for the namespace TTL cache.ttl.response.
local cache = require "jollyjet.cache"
local policy = require "jollyjet.policy"
local http = require "jollyjet.http"
local core = require "engine.core"

local type, pairs, ipairs, tostring, tonumber, error, pcall = type, pairs, ipairs, tostring, tonumber, error, pcall
local setmetatable, math_type, floor = setmetatable, math.type, math.floor
local concat, sort = table.concat, table.sort
local fmt, byte, find, sub, lower = string.format, string.byte, string.find, string.sub, string.lower
local open = io.open

local _M = {}

local NS = "response"
local UNCACHEABLE = "response is not cacheable"
local EMPTY = {}
local TOKEN = "^[%w!#$%%&'*+.^_`|~-]+$"

-- Response headers never stored: per-response, ours, or the server's framing.
local SKIP = {
  ["set-cookie"] = true, ["x-request-id"] = true, date = true, ["x-cache"] = true, age = true,
  ["content-length"] = true, connection = true, ["transfer-encoding"] = true, ["keep-alive"] = true,
}
-- Headers a 304 repeats from the 200 it stands for (RFC 9110 15.4.5), and
-- Set-Cookie of a fresh response: the client must not lose it.
local KEEP_304 = { ["cache-control"] = true, ["content-location"] = true, expires = true, vary = true,
                   ["set-cookie"] = true }

-- ------------------------------------------------------------- rules

-- A policy rule ready for serve(): lower-case vary names, nil tags when none.
function _M.compile(r, max_body)
  if type(r) ~= "table" or type(r.route) ~= "string" then error("response_cache.compile: expected a rule", 2) end
  local vary = {}
  for i, h in ipairs(r.vary or EMPTY) do vary[i] = lower(h) end
  local tags = r.tags and #r.tags > 0 and r.tags or nil
  return {
    route = r.route, ttl = r.ttl, vary = vary, tags = tags,
    vary_header = #vary > 0 and concat(vary, ", ") or nil,
    max_body = max_body or r.max_body or 1024 * 1024,
  }
end

local indexes = setmetatable({}, { __mode = "k" })   -- policy table -> { [route] = compiled rule }

local function index(p)
  local idx = indexes[p]
  if idx then return idx end
  idx = {}
  for _, r in ipairs(p.rules) do idx[r.route] = _M.compile(r, p.max_body_bytes) end
  indexes[p] = idx
  return idx
end

function _M.rule_for(req)
  local m = req.method
  if m ~= "GET" and m ~= "HEAD" then return nil end
  local route = req.route
  if route == nil then return nil end
  local p = policy.get("response_cache")
  if not p.enabled then return nil end
  return index(p)[route]
end

-- The line of a policy file that has s (a route) as a string literal, for
-- file:line errors; 1 when none does.
local function line_mentioning(path, s)
  local f = path and open(path, "r")
  if not f then return 1 end
  local n = 0
  for line in f:lines() do
    n = n + 1
    if find(line, '"' .. s .. '"', 1, true) or find(line, "'" .. s .. "'", 1, true) then
      f:close()
      return n
    end
  end
  f:close()
  return 1
end

-- Raises "policies/response_cache.lua:N: rules[i].route: ..." when a rule
-- names no GET route of the router: a typo must not pass silently.
function _M.check_routes(router)
  local p = policy.get("response_cache")
  local get = {}
  for _, r in ipairs(router.routes) do
    if r.method == "GET" then get[r.pattern] = true end
  end
  for i, r in ipairs(p.rules) do
    if not get[r.route] then
      local path = policy.file("response_cache")
      error(fmt("%s:%d: rules[%d].route: no GET route %q (routes are matched by their pattern, e.g. "
        .. "/api/things/{id})", path or "policies/response_cache.lua", line_mentioning(path, r.route), i, r.route), 0)
    end
  end
end

-- ---------------------------------------------------------------- key

local function enc(s)
  return (s:gsub("[^%w%-%._~]", function(c) return fmt("%%%02X", byte(c)) end))
end

-- The query with its pairs decoded, re-encoded and sorted by key (stable
-- for repeated keys); nil when an escape is malformed.
function _M.canonical_query(q)
  if q == nil or q == "" then return "" end
  local list = {}
  for piece in q:gmatch("[^&]+") do
    local k, v = piece:match("^([^=]*)=?(.*)$")
    k, v = http.unescape(k), http.unescape(v)
    if not k or not v then return nil end
    list[#list + 1] = { enc(k), enc(v), #list + 1 }
  end
  sort(list, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[3] < b[3]
  end)
  local out = {}
  for i, p in ipairs(list) do out[i] = p[1] .. "=" .. p[2] end
  return concat(out, "&")
end

function _M.key(req, rule)
  local q = req.query or ""
  local parts = { req.method, " ", req.path, "?", _M.canonical_query(q) or enc(q) }
  local headers = req.headers or EMPTY
  for _, h in ipairs(rule.vary) do
    local v = headers[h]
    parts[#parts + 1] = v ~= nil and ("|" .. h .. "=" .. enc(tostring(v))) or ("|" .. h .. "!")
  end
  return concat(parts)
end

-- --------------------------------------------------------------- ETag

-- FNV-1a, 64 bits, on Lua's wrapping integers; 8 bytes per byte() call.
local FNV_OFFSET, FNV_PRIME = 0xcbf29ce484222325, 0x100000001b3

local function fnv1a64(s)
  local h, n, i = FNV_OFFSET, #s, 1
  local P = FNV_PRIME
  while i + 7 <= n do
    local a, b, c, d, e, f, g, k = byte(s, i, i + 7)
    h = (h ~ a) * P; h = (h ~ b) * P; h = (h ~ c) * P; h = (h ~ d) * P
    h = (h ~ e) * P; h = (h ~ f) * P; h = (h ~ g) * P; h = (h ~ k) * P
    i = i + 8
  end
  for j = i, n do h = (h ~ byte(s, j)) * P end
  return h
end
_M.fnv1a64 = fnv1a64

function _M.etag(body)
  if type(body) ~= "string" then error("response_cache.etag: body must be a string", 2) end
  return fmt('"%016x-%x"', fnv1a64(body), #body)
end

-- true when If-None-Match matches etag: "*", or any listed tag compared
-- weakly (W/ ignored on both sides).
local function not_modified(header, etag)
  if type(header) ~= "string" then return false end
  if header:find("^%s*%*%s*$") then return true end
  local want = etag:match('^W?/?(".*")$') or etag
  for tag in header:gmatch('W?/?("[^"]*")') do
    if tag == want then return true end
  end
  return false
end
_M.not_modified = not_modified

-- ---------------------------------------------------------- storage

-- Cache-Control value(s) that forbid storing
local function cc_forbids(v)
  if type(v) == "table" then v = concat(v, ",") end
  if type(v) ~= "string" then return false end
  for token in lower(v):gmatch("[^,]+") do
    local name = token:match("^%s*([%w%-]+)")
    if name == "private" or name == "no-store" then return true end
  end
  return false
end

local function header_text(v)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then return math_type(v) == "integer" and fmt("%d", v) or fmt("%.14g", v) end
  return nil
end

local function clean(s) return not find(s, "[\r\n%z]") end

-- The entry's text, or nil when the response must not be stored.
-- Format: "RC1 <status> <stored at> <etag>\n" ("Name: value\n")* "\n" body
local function encode(status, headers, body, etag, max_body)
  if status ~= 200 or type(body) ~= "string" or #body > max_body then return nil end
  local lines = { fmt("RC1 %d %.3f %s\n", status, core.time(), etag) }
  for name, value in pairs(headers) do
    if type(name) ~= "string" or not find(name, TOKEN) then return nil end
    local l = lower(name)
    if l == "set-cookie" then return nil end
    if l == "cache-control" and cc_forbids(value) then return nil end
    if l == "vary" and find(type(value) == "table" and concat(value, ",") or tostring(value), "*", 1, true) then
      return nil
    end
    if not SKIP[l] and l ~= "etag" then
      local values = type(value) == "table" and value or { value }
      for _, v in ipairs(values) do
        local s = header_text(v)
        if not s or not clean(s) then return nil end
        lines[#lines + 1] = name .. ": " .. s .. "\n"
      end
    end
  end
  lines[#lines + 1] = "\n"
  lines[#lines + 1] = body
  return concat(lines)
end

-- { status, stored, etag, headers, body } or nil when the text is not an entry.
local function decode(s)
  local status, stored, etag, pos = s:match("^RC1 (%d+) ([%d%.]+) (%S+)\n()")
  if not status then return nil end
  local headers = {}
  while true do
    local nl = find(s, "\n", pos, true)
    if not nl then return nil end
    if nl == pos then pos = nl + 1 break end
    local name, value = sub(s, pos, nl - 1):match("^([^:]+): (.*)$")
    if not name then return nil end
    local cur = headers[name]
    if cur == nil then headers[name] = value
    elseif type(cur) == "table" then cur[#cur + 1] = value
    else headers[name] = { cur, value } end
    pos = nl + 1
  end
  return { status = tonumber(status), stored = tonumber(stored), etag = etag, headers = headers, body = sub(s, pos) }
end
_M.encode, _M.decode = encode, decode

-- ---------------------------------------------------------- answering

local function get_header(headers, lname)
  for k, v in pairs(headers) do
    if type(k) == "string" and lower(k) == lname then return v, k end
  end
  return nil
end

local function respond(req, rule, status, headers, body, etag, label, age)
  if etag then headers.ETag = etag end
  headers["X-Cache"] = label
  if age then headers.Age = tostring(age) end
  if rule.vary_header then
    local v, k = get_header(headers, "vary")
    if v == nil then
      headers.Vary = rule.vary_header
    elseif type(v) == "string" then
      local have = lower(v)
      for _, h in ipairs(rule.vary) do
        if not find(have, h, 1, true) then v = v .. ", " .. h end
      end
      headers[k] = v
    end
  end
  local inm = (req.headers or EMPTY)["if-none-match"]
  if etag and status == 200 and inm and not_modified(inm, etag) then
    local h = { ETag = etag, ["X-Cache"] = label, Age = headers.Age }
    for k, v in pairs(headers) do
      if type(k) == "string" and KEEP_304[lower(k)] then h[k] = v end
    end
    return 304, h, ""
  end
  return status, headers, body
end

-- A response the handler just produced: our own copy of its headers (a
-- handler may return a shared table), its X-Cache kept on a miss.
local function fresh(req, rule, r, label)
  local status, headers, body = r[1], r[2], r[3]
  local out, own = {}, nil
  local etag = r.etag
  if type(headers) == "table" then
    for k, v in pairs(headers) do
      local l = type(k) == "string" and lower(k)
      if l == "x-cache" then own = v
      elseif l == "etag" then etag = etag or v
      elseif l ~= "age" then out[k] = v end   -- Age is ours
    end
  end
  if label == "MISS" and type(own) == "string" then label = own end
  if not etag and status == 200 and type(body) == "string" and #body <= rule.max_body then
    etag = _M.etag(body)
  end
  return respond(req, rule, status, out, body, etag, label, nil)
end

-- Cache-Control: no-store from the client: nothing is read or stored.
local function client_no_store(req)
  local cc = (req.headers or EMPTY)["cache-control"]
  return type(cc) == "string" and lower(cc):find("no-store", 1, true) ~= nil
end

function _M.serve(req, rule, run)
  if type(rule) ~= "table" or type(rule.vary) ~= "table" then
    error("response_cache.serve: rule must come from rule_for or compile", 2)
  end
  if type(run) ~= "function" then error("response_cache.serve: run must be a function", 2) end

  if client_no_store(req) then
    return fresh(req, rule, { run() }, "BYPASS")
  end

  local key = _M.key(req, rule)
  local opts = { tags = rule.tags, ttl = rule.ttl }
  local ran, result, failure, answered = false, nil, nil, false

  -- Runs the handler inside the fill (after the lease and the tag
  -- generations were taken, so a write during the handler voids the store).
  -- An error is held and re-raised after the fill has released its lease;
  -- a response that must not be stored is a loader failure (no negative
  -- entry). After serve returned, this runs only as a background refresh.
  local function loader()
    ran = true
    local r = { pcall(run) }
    if not r[1] then
      if answered then core.log("error", "response_cache: refresh of " .. key .. " failed: " .. tostring(r[2])) end
      failure = r[2]
      return nil, "handler failed"
    end
    local resp = { r[2], r[3], r[4] }
    local headers = type(resp[2]) == "table" and resp[2] or EMPTY
    local etag = header_text(get_header(headers, "etag") or nil)
    if not etag and resp[1] == 200 and type(resp[3]) == "string" and #resp[3] <= rule.max_body then
      etag = _M.etag(resp[3])
    end
    resp.etag = etag
    result = resp
    local text = etag and clean(etag) and not find(etag, " ", 1, true)
      and encode(resp[1], headers, resp[3], etag, rule.max_body)
    if text then return text end
    return nil, UNCACHEABLE
  end

  local bypass = cache.bypass(req)
  -- no-cache: drop the entry, then fill it again with this request's run.
  if bypass and cache.redis_usable() then cache.invalidate(NS, key) end
  local value, _, source = cache.fetch(NS, key, loader, opts)
  answered = true
  if failure ~= nil then error(failure, 0) end

  if ran then
    local label = (bypass or source == "BYPASS") and "BYPASS" or "MISS"
    return fresh(req, rule, result, label)
  end
  if value ~= nil and not bypass then
    local e = decode(value)
    if e then
      local age = floor(core.time() - e.stored)
      return respond(req, rule, e.status, e.headers, e.body, e.etag,
        source == "STALE" and "STALE" or "HIT", age > 0 and age or 0)
    end
  end
  -- Not answered from the cache and the handler did not run here: joined a
  -- fill whose response could not be stored, or an unreadable entry.
  return fresh(req, rule, { run() }, bypass and "BYPASS" or "MISS")
end

return _M
