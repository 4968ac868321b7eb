-- Session routes (jollyjet.session):
--   POST   /api/sessions      body optional: {"userId": "...", "data": {...}}
--                             -> 201 the session, Set-Cookie (replaces the caller's session, if any)
--   GET    /api/sessions/me   -> 200 the session (its TTL slides) | 401 no_session
--   DELETE /api/sessions/me   -> 204, the cookie cleared (also without a session)
--
-- A session is answered as {"userId": ..|null, "data": {...}, "createdAt", "expiresAt"}
-- (ISO-8601 UTC). The session id is deliberately NOT in any body: it is a
-- bearer credential, and the cookie is HttpOnly so that page scripts (and so
-- an XSS) cannot read it; echoing it in JSON would undo that.
--
-- userId is taken from the client as is: this API has no login yet, so it
-- is a claim, not an authentication. A login flow should instead call
-- session.rotate(id, { user_id = ... }) once the user is authenticated.
--
-- While Redis (the session store) is down every route here answers 503
-- {"error":"sessions_unavailable"}; nothing else depends on these routes.
local http = require "jollyjet.http"
local policy = require "jollyjet.policy"
local session = require "jollyjet.session"
local core = require "engine.core"
local cjson = require "cjson.safe"

local type, pairs, tostring = type, pairs, tostring

local _M = {}

local function unavailable(err)
  core.log("warn", "sessions: session store unavailable: " .. tostring(err))
  local s, b, h = http.error(503, "sessions_unavailable",
    "sessions are temporarily unavailable (the session store cannot be reached); retry shortly")
  h["Retry-After"] = "1"
  h["Cache-Control"] = "no-store"
  return s, b, h
end

local function invalid(field, message)
  return http.error(400, "validation_failed", message, { details = { { field = field, message = message } } })
end

-- The response body of a session.
local function view(s)
  return {
    userId = s.user_id or cjson.null,
    data = s.data,
    createdAt = session.iso8601(s.created_at or 0),
    expiresAt = session.iso8601(s.expires_at),
  }
end

-- data, user_id | nil, nil, status, body, headers
local function parse_create(req)
  local body = req.body
  if body == nil or body:find("^%s*$") then return {}, nil end
  local doc, err = http.decode_json(body)
  if doc == nil then return nil, nil, http.error(400, "invalid_json", err) end
  if type(doc) ~= "table" or not body:find("^%s*{") then
    return nil, nil, invalid("body", "the body must be a JSON object")
  end
  for k in pairs(doc) do
    if k ~= "userId" and k ~= "data" then
      return nil, nil, invalid(tostring(k), "unknown field " .. tostring(k))
    end
  end
  local uid = doc.userId
  if uid == cjson.null then uid = nil end
  if uid ~= nil and (type(uid) ~= "string" or #uid < 1 or #uid > 256 or uid:find("%c")) then
    return nil, nil, invalid("userId", "userId must be a non-empty string of at most 256 characters")
  end
  local data = doc.data
  if data == nil or data == cjson.null then return {}, uid end
  if type(data) ~= "table" then return nil, nil, invalid("data", "data must be a JSON object") end
  local n = 0
  for k in pairs(data) do
    n = n + 1
    if type(k) ~= "string" or #k < 1 or #k > 256 then
      return nil, nil, invalid("data", "data must be a JSON object with names of 1..256 characters")
    end
  end
  if n > 256 then return nil, nil, invalid("data", "data has more than 256 fields") end
  local max = policy.get("sessions").max_data_bytes
  local encoded = cjson.encode(data)
  if not encoded or #encoded > max then
    return nil, nil, invalid("data", "data is larger than " .. max .. " bytes of JSON")
  end
  return data, uid
end

local function create(req)
  local data, uid, s, b, h = parse_create(req)
  if not data then return s, b, h end
  local sess, err = session.create(data, { user_id = uid })
  if not sess then return unavailable(err) end
  -- The caller's previous session, if any, is replaced (best effort: it
  -- expires by itself otherwise).
  local old = session.id_from_request(req)
  if old then session.destroy(old) end
  return http.json(201, view(sess), {
    ["Set-Cookie"] = session.cookie(sess.id),
    ["Cache-Control"] = "no-store",
    Location = "/api/sessions/me",
  })
end

local function no_session()
  local s, b, h = http.error(401, "no_session",
    "no valid session: create one with POST /api/sessions")
  h["Cache-Control"] = "no-store"
  return s, b, h
end

local function me(req)
  if not session.id_from_request(req) then return no_session() end
  local sess, err = session.from_request(req)
  if err then return unavailable(err) end
  if not sess then return no_session() end
  return http.json(200, view(sess), { ["Cache-Control"] = "no-store" })
end

local function delete(req)
  local id = session.id_from_request(req)
  if id then
    local _, err = session.destroy(id)
    if err then return unavailable(err) end
  end
  return 204, "", { ["Set-Cookie"] = session.clear_cookie(), ["Cache-Control"] = "no-store" }
end

_M.routes = {
  { "POST", "/api/sessions", create },
  { "GET", "/api/sessions/me", me },
  { "DELETE", "/api/sessions/me", delete },
}

return _M
