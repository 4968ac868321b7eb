-- jollyjet.session: server-side sessions in Redis, carried by a cookie.
--
--   s, err    = session.create(data?, { user_id = "u1", ttl = seconds? })
--   s, err    = session.get(id)               -- nil when unknown/expired; slides the TTL
--   ok, err   = session.update(id, fields)    -- false when unknown; field = session.null deletes it
--   ok, err   = session.extend(id)            -- slide the TTL without reading
--   ok, err   = session.destroy(id)           -- false when unknown
--   n, err    = session.destroy_all_for_user(user_id)
--   new, err  = session.rotate(id, { user_id = "u2" | false }?)  -- new id, same data, old id gone
--   id        = session.id_from_request(req)  -- the cookie's id when well formed, no I/O
--   s, err    = session.from_request(req)     -- id_from_request + get
--   header    = session.cookie(id)            -- Set-Cookie value; session.clear_cookie() expires it
--
-- A session table is { id, user_id (nil when anonymous), data, created_at,
-- expires_at, ttl } (times in seconds since the epoch, ttl in seconds).
-- Runtime failures (Redis down, timeout) return nil, err; misuse raises.
--
-- Ids: 32 bytes from the OS CSPRNG, base64url without padding (43
-- characters, 256 bits): nothing in them is derived from time or a counter.
--
-- Storage: the hash <prefix>sess:<id> with a sliding TTL (policies/sessions.lua
-- `ttl`, or the explicit `ttl` given to create, which the session keeps):
--   m:created  creation time (ms since the epoch)
--   m:uid      user id (absent for an anonymous session)
--   m:ttl      ms, only when create was given an explicit ttl
--   d:<name>   one data field, JSON
-- Data values go through JSON (lua-cjson): numbers keep 14 significant
-- digits (keep larger ids as strings) and an empty array comes back as an
-- empty table. Every data field is its own hash field and every write is one script, so
-- concurrent updates of different fields never lose each other; updates of
-- one field are last-writer-wins. A user's sessions are listed in the set
-- <prefix>user_sessions:<uid> (its TTL follows the longest-lived of them;
-- ids of expired sessions are pruned when the user gets a new one), so
-- destroy_all_for_user needs no scan.
--
-- The scripts build the per-user set keys and the session keys they prune
-- from the prefix they are given: standalone Redis only (not Cluster).
--
-- user_id changes only through rotate (privilege changes get a new id, so a
-- fixated or leaked pre-login id is worthless after login).
local redis = require "engine.redis"
local core = require "engine.core"
local policy = require "jollyjet.policy"
local cjson = require("cjson.safe").new()

local type, pairs, tostring, error, floor = type, pairs, tostring, error, math.floor
local math_type, byte, sub, concat, fmt = math.type, string.byte, string.sub, table.concat, string.format
local date = os.date

local _M = {}

-- update(id, { field = session.null }) deletes the field.
_M.null = cjson.null

local ID_LEN = 43
local ID_PATTERN = "^" .. ("[%w_%-]"):rep(ID_LEN) .. "$"
local MAX_TTL = 30 * 86400
local MAX_FIELDS = 256

-- ----------------------------------------------------------- scripts

-- KEYS: session[, user set]. ARGV: ttl ms, session key prefix, id, field, value, ...
-- -> 1 created | 0 the id exists (never in practice: 256 random bits)
local CREATE = redis.script([[
if redis.call("EXISTS", KEYS[1]) == 1 then return 0 end
local ttl = tonumber(ARGV[1])
for i = 4, #ARGV, 2 do redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call("PEXPIRE", KEYS[1], ttl)
if KEYS[2] then
  local ids = redis.call("SMEMBERS", KEYS[2])
  for _, sid in ipairs(ids) do
    if redis.call("EXISTS", ARGV[2] .. sid) == 0 then redis.call("SREM", KEYS[2], sid) end
  end
  redis.call("SADD", KEYS[2], ARGV[3])
  if redis.call("PTTL", KEYS[2]) < ttl then redis.call("PEXPIRE", KEYS[2], ttl) end
end
return 1
]])

-- Shared tail of the scripts below: slide the session's TTL (its own m:ttl
-- or the policy's) and keep its user's set alive at least as long.
local SLIDE = [[
local function slide(key, uset_prefix, default_ttl)
  local ttl = tonumber(redis.call("HGET", key, "m:ttl") or default_ttl)
  redis.call("PEXPIRE", key, ttl)
  local uid = redis.call("HGET", key, "m:uid")
  if uid then
    local uk = uset_prefix .. uid
    if redis.call("PTTL", uk) < ttl then redis.call("PEXPIRE", uk, ttl) end
  end
  return ttl
end
]]

-- KEYS: session. ARGV: user set prefix, policy ttl ms, "1" to return the fields.
-- -> nil (unknown) | { ttl ms, { field, value, ... } }
local GET = redis.script(SLIDE .. [[
if redis.call("EXISTS", KEYS[1]) == 0 then return false end
local ttl = slide(KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == "1" then return { ttl, redis.call("HGETALL", KEYS[1]) } end
return { ttl }
]])

-- KEYS: session. ARGV: user set prefix, policy ttl ms, n, n field/value pairs, fields to delete...
-- -> 1 | 0 unknown (an expired session is not brought back)
local UPDATE = redis.script(SLIDE .. [[
if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
local n = tonumber(ARGV[3])
local i = 4
for _ = 1, n do
  redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for j = i, #ARGV do redis.call("HDEL", KEYS[1], ARGV[j]) end
slide(KEYS[1], ARGV[1], ARGV[2])
return 1
]])

-- KEYS: session. ARGV: user set prefix, id. -> 1 | 0 unknown
local DESTROY = redis.script([[
local uid = redis.call("HGET", KEYS[1], "m:uid")
local n = redis.call("DEL", KEYS[1])
if uid then redis.call("SREM", ARGV[1] .. uid, ARGV[2]) end
return n
]])

-- KEYS: user set. ARGV: session key prefix. -> sessions removed
local DESTROY_ALL = redis.script([[
local n = 0
for _, sid in ipairs(redis.call("SMEMBERS", KEYS[1])) do
  n = n + redis.call("DEL", ARGV[1] .. sid)
end
redis.call("DEL", KEYS[1])
return n
]])

-- KEYS: old session, new session. ARGV: user set prefix, old id, new id,
-- policy ttl ms, user mode ("" keep | "set" | "clear"), new user id.
-- -> 1 | 0 unknown | -1 the new id exists
local ROTATE = redis.script(SLIDE .. [[
if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
if redis.call("EXISTS", KEYS[2]) == 1 then return -1 end
local old_uid = redis.call("HGET", KEYS[1], "m:uid")
redis.call("RENAME", KEYS[1], KEYS[2])
if old_uid then redis.call("SREM", ARGV[1] .. old_uid, ARGV[2]) end
if ARGV[5] == "set" then
  redis.call("HSET", KEYS[2], "m:uid", ARGV[6])
elseif ARGV[5] == "clear" then
  redis.call("HDEL", KEYS[2], "m:uid")
end
local uid = redis.call("HGET", KEYS[2], "m:uid")
if uid then redis.call("SADD", ARGV[1] .. uid, ARGV[3]) end
slide(KEYS[2], ARGV[1], ARGV[4])
return 1
]])

-- ----------------------------------------------------------- helpers

local function conf() return policy.get("sessions") end
local function policy_ttl_ms() return conf().ttl * 1000 end

local function skey(id) return redis.key("sess", id) end
local function ukey(uid) return redis.key("user_sessions", uid) end
local function sess_prefix() return redis.key("sess", "") end
local function uset_prefix() return redis.key("user_sessions", "") end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
local SINGLE, PAIR = {}, {}   -- 6 bits -> 1 character, 12 bits -> 2 characters
for i = 0, 63 do SINGLE[i] = sub(B64, i + 1, i + 1) end
for i = 0, 4095 do PAIR[i] = SINGLE[i >> 6] .. SINGLE[i & 63] end
local scratch = {}

-- base64url without padding (a million ids must take seconds, not tens)
local function b64url(s)
  local n, k, i, out = #s, 0, 1, scratch
  while i + 2 <= n do
    local a, b, c = byte(s, i, i + 2)
    local v = (a << 16) | (b << 8) | c
    out[k + 1], out[k + 2] = PAIR[v >> 12], PAIR[v & 4095]
    k, i = k + 2, i + 3
  end
  local rest = n - i + 1
  if rest == 1 then
    k = k + 1
    out[k] = PAIR[byte(s, i) << 4]
  elseif rest == 2 then
    local a, b = byte(s, i, i + 1)
    local v = (a << 10) | (b << 2)
    out[k + 1], out[k + 2] = PAIR[v >> 6], SINGLE[v & 63]
    k = k + 2
  end
  return concat(out, "", 1, k)
end
_M.b64url = b64url

-- A new session id: 256 bits from the OS CSPRNG, 43 base64url characters.
function _M.new_id()
  return b64url(core.random_bytes(32))
end

-- true when s has the shape of a session id (43 base64url characters).
function _M.valid_id(s)
  return type(s) == "string" and #s == ID_LEN and s:find(ID_PATTERN) ~= nil
end

-- Misuse checks raise at the caller's caller (level 3 from here).
local function check_id(id, fn)
  if type(id) ~= "string" then
    error(fmt("session.%s: id must be a string, got %s", fn, type(id)), 3)
  end
  return _M.valid_id(id)
end

local function check_user_id(uid, fn)
  if math_type(uid) == "integer" then uid = tostring(uid) end
  if type(uid) ~= "string" or #uid < 1 or #uid > 256 or uid:find("[%c]") then
    error(fmt("session.%s: user_id must be a non-empty string of at most 256 printable bytes", fn), 3)
  end
  return uid
end

local function check_field(k, fn)
  if type(k) ~= "string" or #k < 1 or #k > 256 then
    error(fmt("session.%s: data field names must be strings of 1..256 bytes, got %s", fn, tostring(k)), 3)
  end
end

local function encode(v, k, fn)
  local s, err = cjson.encode(v)
  if not s then error(fmt("session.%s: data field %s cannot be JSON: %s", fn, k, tostring(err)), 3) end
  return s
end

local function ms_now() return floor(core.time() * 1000) end

-- lua-cjson decodes every number as a float: give integral ones back as
-- integers (what was stored), recursively.
local function integers(v, depth)
  if math_type(v) == "float" and v == floor(v) and v >= -2^53 and v <= 2^53 then
    return floor(v)
  end
  if type(v) == "table" and depth < 64 then
    for k, e in pairs(v) do v[k] = integers(e, depth + 1) end
  end
  return v
end

-- Builds the session table from HGETALL's flat list.
local function to_session(id, ttl_ms, flat)
  local s = { id = id, data = {}, ttl = ttl_ms / 1000 }
  for i = 1, #flat, 2 do
    local f, v = flat[i], flat[i + 1]
    if f == "m:uid" then
      s.user_id = v
    elseif f == "m:created" then
      s.created_at = (tonumber(v) or 0) / 1000
    elseif sub(f, 1, 2) == "d:" then
      local value = cjson.decode(v)
      if value ~= nil then s.data[sub(f, 3)] = integers(value, 0) end
    end
  end
  s.expires_at = core.time() + s.ttl
  return s
end

-- ----------------------------------------------------------- API

-- s, err = session.create(data?, { user_id = ?, ttl = seconds? })
function _M.create(data, opts)
  if data ~= nil and type(data) ~= "table" then
    error("session.create: data must be a table or nil, got " .. type(data), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("session.create: opts must be a table or nil, got " .. type(opts), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "user_id" and k ~= "ttl" then error("session.create: unknown option " .. tostring(k), 2) end
  end
  local uid = opts.user_id ~= nil and check_user_id(opts.user_id, "create") or nil
  local ttl_ms, explicit = policy_ttl_ms(), false
  if opts.ttl ~= nil then
    if type(opts.ttl) ~= "number" or opts.ttl <= 0 or opts.ttl > MAX_TTL then
      error("session.create: ttl must be a number of seconds in (0, " .. MAX_TTL .. "]", 2)
    end
    ttl_ms, explicit = floor(opts.ttl * 1000 + 0.5), true
    if ttl_ms < 1 then ttl_ms = 1 end
  end
  local created = ms_now()
  local args = { ttl_ms, sess_prefix(), "", "m:created", created }
  if uid then args[#args + 1] = "m:uid"; args[#args + 1] = uid end
  if explicit then args[#args + 1] = "m:ttl"; args[#args + 1] = ttl_ms end
  local copy, n = {}, 0
  for k, v in pairs(data or {}) do
    check_field(k, "create")
    n = n + 1
    if n > MAX_FIELDS then error("session.create: more than " .. MAX_FIELDS .. " data fields", 2) end
    if v ~= cjson.null then
      args[#args + 1] = "d:" .. k
      args[#args + 1] = encode(v, k, "create")
      copy[k] = v
    end
  end
  for _ = 1, 2 do   -- a second draw only if the first id existed (2^-256)
    local id = _M.new_id()
    args[3] = id
    local res, err = redis.evalsha(CREATE, uid and { skey(id), ukey(uid) } or { skey(id) }, args)
    if err then return nil, err end
    if res == 1 then
      return { id = id, user_id = uid, data = copy, created_at = created / 1000,
               expires_at = core.time() + ttl_ms / 1000, ttl = ttl_ms / 1000 }
    end
  end
  return nil, "could not draw a fresh session id"
end

-- s, err = session.get(id): nil (no error) when the session does not exist;
-- slides its TTL.
function _M.get(id)
  if not check_id(id, "get") then return nil end
  local res, err = redis.evalsha(GET, { skey(id) }, { uset_prefix(), policy_ttl_ms(), "1" })
  if err then return nil, err end
  if res == nil then return nil end
  return to_session(id, res[1], res[2])
end

-- ok, err = session.extend(id): true, or false when the session does not exist.
function _M.extend(id)
  if not check_id(id, "extend") then return false end
  local res, err = redis.evalsha(GET, { skey(id) }, { uset_prefix(), policy_ttl_ms(), "0" })
  if err then return nil, err end
  return res ~= nil
end

-- ok, err = session.update(id, fields): sets every field of `fields` (a
-- field set to session.null is deleted) in one atomic step; fields not
-- named keep their values, whoever wrote them. Slides the TTL. false when
-- the session does not exist (it is not created).
function _M.update(id, fields)
  local valid = check_id(id, "update")
  if type(fields) ~= "table" then error("session.update: fields must be a table, got " .. type(fields), 2) end
  local sets, dels, n = {}, {}, 0
  for k, v in pairs(fields) do
    check_field(k, "update")
    n = n + 1
    if n > MAX_FIELDS then error("session.update: more than " .. MAX_FIELDS .. " fields", 2) end
    if v == cjson.null then
      dels[#dels + 1] = "d:" .. k
    else
      sets[#sets + 1] = "d:" .. k
      sets[#sets + 1] = encode(v, k, "update")
    end
  end
  if not valid then return false end
  local args = { uset_prefix(), policy_ttl_ms(), #sets // 2 }
  for i = 1, #sets do args[#args + 1] = sets[i] end
  for i = 1, #dels do args[#args + 1] = dels[i] end
  local res, err = redis.evalsha(UPDATE, { skey(id) }, args)
  if err then return nil, err end
  return res == 1
end

-- ok, err = session.destroy(id): true, or false when it did not exist.
function _M.destroy(id)
  if not check_id(id, "destroy") then return false end
  local res, err = redis.evalsha(DESTROY, { skey(id) }, { uset_prefix(), id })
  if err then return nil, err end
  return res == 1
end

-- n, err = session.destroy_all_for_user(user_id): every session of the user.
function _M.destroy_all_for_user(user_id)
  local uid = check_user_id(user_id, "destroy_all_for_user")
  local res, err = redis.evalsha(DESTROY_ALL, { ukey(uid) }, { sess_prefix() })
  if err then return nil, err end
  return res
end

-- new_id, err = session.rotate(id, { user_id = "u" | false }?): moves the
-- session (data, creation time, own TTL) to a fresh id and removes the old
-- one, atomically. opts.user_id sets the user (false: makes it anonymous).
-- Call it whenever privileges change (login, logout, elevation) and send
-- session.cookie(new_id). false when the session does not exist.
function _M.rotate(id, opts)
  local valid = check_id(id, "rotate")
  if opts ~= nil and type(opts) ~= "table" then
    error("session.rotate: opts must be a table or nil, got " .. type(opts), 2)
  end
  opts = opts or {}
  for k in pairs(opts) do
    if k ~= "user_id" then error("session.rotate: unknown option " .. tostring(k), 2) end
  end
  local mode, uid = "", ""
  if opts.user_id == false then
    mode = "clear"
  elseif opts.user_id ~= nil then
    mode, uid = "set", check_user_id(opts.user_id, "rotate")
  end
  if not valid then return false end
  for _ = 1, 2 do
    local new = _M.new_id()
    local res, err = redis.evalsha(ROTATE, { skey(id), skey(new) },
      { uset_prefix(), id, new, policy_ttl_ms(), mode, uid })
    if err then return nil, err end
    if res == 1 then return new end
    if res == 0 then return false end
  end
  return nil, "could not draw a fresh session id"
end

-- ----------------------------------------------------------- HTTP helpers

-- The session id carried by the request's cookie when it is well formed,
-- else nil. Repeated Cookie headers arrive joined with ", ".
function _M.id_from_request(req)
  local cookie = type(req) == "table" and type(req.headers) == "table" and req.headers.cookie
  if type(cookie) ~= "string" then return nil end
  local name = conf().cookie.name
  for pair in cookie:gmatch("[^;,]+") do
    local k, v = pair:match("^%s*([^=%s]+)%s*=%s*(.-)%s*$")
    if k == name and _M.valid_id(v) then return v end
  end
  return nil
end

-- s, err = session.from_request(req): the request's session (its TTL slid),
-- nil when it has none or it expired, nil, err when Redis fails.
function _M.from_request(req)
  local id = _M.id_from_request(req)
  if not id then return nil end
  return _M.get(id)
end

local function attributes()
  local c = conf().cookie
  return "; Path=/; HttpOnly; SameSite=" .. c.same_site .. (c.secure and "; Secure" or "")
end

-- The Set-Cookie value that carries id: a browser-session cookie (no
-- Max-Age); the server-side TTL decides how long the session lives.
function _M.cookie(id)
  if not _M.valid_id(id) then error("session.cookie: not a session id", 2) end
  return conf().cookie.name .. "=" .. id .. attributes()
end

-- The Set-Cookie value that makes the browser forget the session cookie.
function _M.clear_cookie()
  return conf().cookie.name .. "=" .. attributes() .. "; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT"
end

-- "2024-01-01T00:00:00.000Z" for a time in seconds since the epoch.
function _M.iso8601(t)
  local ms = floor(t * 1000 + 0.5)
  return date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. fmt(".%03dZ", ms % 1000)
end

return _M
