-- jollyjet.app: the application one generation serves. Loading it validates
-- every policy and builds the router from lua/handlers/*.lua; the engine
-- calls app.handle(req) in a fresh coroutine for every request and turns
-- its results (status, headers, body) into the response.
--
-- A handler module returns { routes = { {method, pattern, fn, meta?}, ... } }
-- and each fn(req) returns status, body, headers: body may be a string or a
-- table (sent as JSON).
local core = require "engine.core"
local metrics = require "engine.metrics"
local router = require "jollyjet.router"
local cache = require "jollyjet.cache"
local policy = require "jollyjet.policy"
local http = require "jollyjet.http"
local response_cache = require "jollyjet.response_cache"
local ratelimit = require "jollyjet.ratelimit"
local verifier = require "jollyjet.verifier"
local alerts = require "jollyjet.alerts"

local type, ipairs, error, xpcall, tostring = type, ipairs, error, xpcall, tostring
local traceback = debug.traceback
local set_route = metrics.set_route
local parse_query = http.parse_query

local _M = {}

policy.load_all()

local r = router.new()
_M.router = r

local dir = core.config().lua_dir .. "/handlers"
local names = core.list_dir(dir, ".lua") or {}
for _, file in ipairs(names) do
  local modname = "handlers." .. file:sub(1, -5)
  local mod = require(modname)
  if type(mod) ~= "table" or type(mod.routes) ~= "table" then
    error(dir .. "/" .. file .. ":1: handler module must return { routes = {...} }", 0)
  end
  for i, route in ipairs(mod.routes) do
    local ok, err = pcall(r.add, r, route[1], route[2], route[3], route[4])
    if not ok then error(("%s/%s:1: route %d: %s"):format(dir, file, i, err), 0) end
  end
end
-- The C host counts every response by route (http_requests{route=...}) and
-- logs it: each route gets its label's id once, and handle() reports it.
for _, route in ipairs(r.routes) do route.metrics_id = metrics.route_id(route.pattern) end
response_cache.check_routes(r)   -- every policies/response_cache.lua rule names a GET route
ratelimit.check_routes(r)        -- every policies/ratelimits.lua route rule names a route

-- Cached entity GETs the C host may answer itself (engine.fastpath), where no
-- response-cache rule applies to the route and the rate-limit rules that do
-- (keyed by ip or route) are ones the C host checks itself.
for _, route in ipairs(r.routes) do
  local ns = route.meta.fast_cache
  if ns and route.method == "GET" then
    local prefix = route.pattern:match("^(.*/){[%a_][%w_]*}$")
    local limits = prefix and ratelimit.fast_rules(route.pattern, prefix)
    if limits and not response_cache.rule_for({ method = "GET", route = route.pattern }) then
      cache.fast_route(prefix, ns, route.pattern, limits)
    end
  end
end

local function finish(status, body, headers)
  if type(body) == "table" then
    local s, b, h = http.json(status, body, headers)
    return s, h, b
  end
  return status, headers, body
end

local function on_error(e)
  if http.is_failure(e) then return e end
  return traceback(tostring(e), 2)
end

-- Runs the route's handler: status, headers, body (a string).
local function dispatch(route, req)
  local ok, status, body, headers = xpcall(route.handler, on_error, req)
  if ok then return finish(status, body, headers) end
  if http.is_failure(status) then
    local e = status
    local s, b, h = http.error(e.status, e.code, e.message, e.extra)
    return s, h, b
  end
  error(status, 0)   -- a bug: the engine logs the traceback and answers 500
end

function _M.handle(req)
  local route, params, allow = r:match(req.method, req.path)
  if not route then
    if allow then
      local s, b, h = http.error(405, "method_not_allowed",
        req.method .. " is not allowed on " .. req.path)
      h.Allow = allow
      return s, h, b
    end
    local s, b, h = http.error(404, "not_found", "no route for " .. req.path)
    return s, h, b
  end
  set_route(route.metrics_id)
  local query, args = req.query
  if query == "" then
    args = {}
  else
    local qerr
    args, qerr = parse_query(query)
    if not args then
      local s, b, h = http.error(400, "bad_request", qerr)
      return s, h, b
    end
  end
  req.params, req.args, req.route = params, args, route.pattern
  -- Rate limiting (jollyjet.ratelimit): after the route match, so 404/405
  -- cost nothing, and before the response cache and the handler.
  local rs, rh, rb = ratelimit.enter(req)   -- 429 / 503 answered here
  if rs then return rs, rh, rb end
  local rule = response_cache.rule_for(req)   -- GET/HEAD routes listed in policies/response_cache.lua
  if rule then
    return ratelimit.leave(req, response_cache.serve(req, rule, function() return dispatch(route, req) end))
  end
  return ratelimit.leave(req, dispatch(route, req))   -- adds the RateLimit headers
end

-- Background monitoring (policies/monitoring.lua): the consistency verifier
-- and the alert timer, started once per generation, last, once everything
-- above has passed (each loop ends when a reload replaces this generation).
-- Only in an engine that serves: nothing would ever run them for
-- `jollyjet check`, and specs call verifier.run_once / alerts.evaluate.
if core.info().mode == "serve" then
  verifier.start()
  alerts.start()
end

return _M
