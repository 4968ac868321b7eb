-- jollyjet.ratelimit: the rate-limit middleware, driven by
-- policies/ratelimits.lua (schema jollyjet.schemas.ratelimits; validated and
-- hot-reloaded with every other policy). jollyjet.app calls it after the
-- route match and the query parse, before the response cache and the
-- handler:
--
--   status, headers, body = ratelimit.enter(req)   -- nil: go on; else answer this (429 / 503)
--   status, headers, body = ratelimit.leave(req, status, headers, body)   -- adds the headers
--   ratelimit.check_routes(router)                 -- at generation build: rule routes exist
--   res, err = ratelimit.peek(rule_name, who)      -- who: "ip:1.2.3.4", "user:42", "route:GET /x", ...
--   ok, err  = ratelimit.reset(rule_name, who)     -- (both take an optional compiled limiter last)
--   limiter  = ratelimit.compile(policy_table)     -- what enter() uses, for tests
--
-- Every rule whose route (router pattern) or path prefix, methods and query
-- arguments match the request applies, in policy order; each spends
-- rule.cost from its own budget (engine.ratelimit.check: one atomic Redis
-- script on the server's clock). The first refusal answers 429 and the
-- later rules are not charged. Only requests the router matched are
-- counted: 404 and 405 answers cost nothing (an unknown path does no work
-- worth protecting, and a typo does not eat a client's budget). /health,
-- /health/live and /health/ready are never limited, whatever the rules say.
--
-- Whose budget (rule.key): ip = req.remote_addr (the socket's peer; no
-- X-Forwarded-For), session = the session cookie, user = the user header
-- (policy user_header, X-User-Id by default: trusted as sent until
-- authentication exists, so set it at a gateway), route = one budget per
-- method and matched route for everybody, header:<Name> = that header's value. A request without the
-- cookie / header is keyed by its ip. Redis key: <prefix>rl:<g|s|m>:<rule
-- name>:<kind>:<value>.
--
-- Headers on every limited response (IETF httpapi ratelimit-headers draft,
-- one list item per rule that applied, plus the legacy trio for the most
-- restrictive rule):
--   RateLimit-Policy: "default";q=100;w=60
--   RateLimit: "default";r=42;t=18          (r remaining, t seconds until full)
--   X-RateLimit-Limit: 100 ; X-RateLimit-Remaining: 42 ; X-RateLimit-Reset: 18
-- A refusal is 429 with Retry-After (seconds) and
--   {"success":false,"error":"Rate limit exceeded","message":"...","retryAfter":N}
--
-- Redis unavailable (down, timeout, error): the rule's failure_mode says
-- what happens: "open" allows (no headers for that rule), "closed" answers
-- 503 {"success":false,"error":"rate_limit_unavailable",...}, "local" uses
-- the worker's in-process GCRA limiter with ceil(limit / WORKERS) and
-- ceil(burst / WORKERS), so all workers together allow about the limit.
--
-- RATELIMIT_ENABLED=false (core.config().ratelimit_enabled) or
-- enabled = false in the policy turns every rule off: no headers, no 429.
local core = require "engine.core"
local rl = require "engine.ratelimit"
local metrics = require "engine.metrics"
local policy = require "jollyjet.policy"
local http = require "jollyjet.http"
local schema = require "jollyjet.schemas.ratelimits"

local rawget = rawget
local type, pairs, ipairs, tostring, tonumber, error, setmetatable =
  type, pairs, ipairs, tostring, tonumber, error, setmetatable
local ceil, huge = math.ceil, math.huge
local concat, fmt, sub, lower, find = table.concat, string.format, string.sub, string.lower, string.find

local rl_check, rl_local_check = rl.check, rl.local_check

local _M = {}

local LOG_EVERY = 10   -- seconds between two "Redis unavailable" warnings of one rule

-- ------------------------------------------------------------- compiling

local function ipv4(s)
  local a, b, c, d = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
  if not a then return nil end
  a, b, c, d = tonumber(a), tonumber(b), tonumber(c), tonumber(d)
  if a > 255 or b > 255 or c > 255 or d > 255 then return nil end
  return ((a * 256 + b) * 256 + c) * 256 + d
end

local function compile_rule(p, r, workers)
  local lim = assert(schema.resolve(p, r))
  local kind, header = r.key, nil
  if find(kind, "^header:") then kind, header = "header", lower(sub(r.key, 8)) end
  local methods
  if r.methods and #r.methods > 0 then
    methods = {}
    for _, m in ipairs(r.methods) do methods[m] = true end
  end
  local burst = lim.burst or lim.limit
  local local_burst = ceil(burst / workers)
  return {
    name = r.name,
    route = r.route,
    prefix = r.prefix,
    prefix_len = r.prefix and #r.prefix or 0,
    methods = methods,
    query = r.query and #r.query > 0 and r.query or nil,
    kind = kind,
    header = header,
    failure_mode = r.failure_mode,
    key_prefix = r.name .. ":",
    -- what engine.ratelimit gets
    lim = rl.rule({ limit = lim.limit, period = lim.period, algorithm = lim.algorithm, burst = lim.burst,
                    cost = lim.cost }),
    local_lim = rl.rule({ limit = ceil(lim.limit / workers), period = lim.period, burst = local_burst,
                          cost = lim.cost < local_burst and lim.cost or local_burst }),
    policy_item = fmt('"%s";q=%d;w=%d', r.name, lim.limit, lim.period),
    current_item = fmt('"%s";r=', r.name),   -- .. remaining .. ";t=" .. seconds
    ip_keys = {}, ip_keys_n = 0,             -- addr -> key, for key = "ip"
    logged_at = -huge,
    -- engine.metrics names (jollyjet_ratelimit_*_total{rule=...} on /metrics)
    m_allowed = fmt('ratelimit_allowed{rule="%s"}', r.name),
    m_rejected = fmt('ratelimit_rejected{rule="%s"}', r.name),
    m_unavailable = fmt('ratelimit_unavailable{rule="%s"}', r.name),
    m_redis_failures = fmt('ratelimit_redis_failures{rule="%s"}', r.name),
  }
end

-- limiter = ratelimit.compile(p): p is a validated ratelimits policy.
function _M.compile(p, opts)
  if type(p) ~= "table" or type(p.rules) ~= "table" then error("ratelimit.compile: expected a policy table", 2) end
  opts = opts or {}
  local cfg = core.config()
  local workers = opts.workers or cfg.workers or 1
  local enabled = cfg.ratelimit_enabled ~= false
  if opts.enabled ~= nil then enabled = opts.enabled end
  enabled = enabled and p.enabled
  local L = { enabled = enabled and #p.rules > 0, rules = {}, policy = p,
              allow = {}, cidrs = {}, session_cookie = p.session_cookie, user_header = lower(p.user_header),
              message = p.message }
  for i, r in ipairs(p.rules) do L.rules[i] = compile_rule(p, r, workers) end
  L.nrules = #L.rules
  L.has_allow = #p.allow > 0
  for _, a in ipairs(p.allow) do
    local net, bits = a:match("^([%d.]+)/(%d+)$")
    if net then
      local size = 2 ^ (32 - tonumber(bits))
      local n = ipv4(net)
      L.cidrs[#L.cidrs + 1] = { lo = n - n % size, hi = n - n % size + size - 1 }
    else
      L.allow[a] = true
    end
  end
  return L
end

-- --------------------------------------------------------------- matching

local function allowed_addr(L, addr)
  if L.allow[addr] then return true end
  if #L.cidrs == 0 then return false end
  local n = ipv4(addr)
  if not n then return false end
  for _, c in ipairs(L.cidrs) do
    if n >= c.lo and n <= c.hi then return true end
  end
  return false
end

local function matches(r, req)
  if r.route then
    if req.route ~= r.route then return false end
  elseif sub(req.path, 1, r.prefix_len) ~= r.prefix then
    return false
  end
  if r.methods and not r.methods[req.method] then return false end
  if r.query then
    local args = req.args
    for _, name in ipairs(r.query) do
      local v = args and args[name]
      if v == nil or v == "" then return false end
    end
  end
  return true
end

local function cookie(req, name)
  local c = req.headers and req.headers.cookie
  if type(c) ~= "string" then return nil end
  for pair in c:gmatch("[^;,]+") do
    local k, v = pair:match("^%s*([^=%s]+)%s*=%s*(.-)%s*$")
    if k == name and v ~= "" then return v end
  end
  return nil
end

-- The key of the request's budget under rule r: "<name>:<kind>:<value>".
local IP_KEYS_MAX = 4096

local function ip_key(r, addr)
  local k = r.ip_keys[addr]
  if k then return k end
  if r.ip_keys_n >= IP_KEYS_MAX then r.ip_keys, r.ip_keys_n = {}, 0 end
  k = r.key_prefix .. "ip:" .. addr
  r.ip_keys[addr], r.ip_keys_n = k, r.ip_keys_n + 1
  return k
end

local function key_of(L, r, req)
  local kind = r.kind
  if kind == "ip" then return ip_key(r, req.remote_addr) end
  local v
  if kind == "route" then
    v = req.method .. " " .. (req.route or r.route or r.prefix)
  elseif kind == "session" then
    v = cookie(req, L.session_cookie)
  elseif kind == "user" then
    v = req.headers and req.headers[L.user_header]
  else
    v = req.headers and req.headers[r.header]
  end
  if v == nil or v == "" then return ip_key(r, req.remote_addr) end
  return r.key_prefix .. kind .. ":" .. v
end

-- ---------------------------------------------------------------- answers

local function warn(r, err)
  local now = core.now()
  if now - r.logged_at < LOG_EVERY then return end
  r.logged_at = now
  core.log("warn", fmt("ratelimit: rule %s: Redis unavailable (%s): failing %s", r.name, tostring(err),
    r.failure_mode == "local" and "to the local limiter" or r.failure_mode))
end

-- The headers of one rule's result (the common case).
local function headers_one(r, res)
  local t, rem = ceil(res.reset), res.remaining
  return {
    ["RateLimit-Policy"] = r.policy_item,
    ["RateLimit"] = r.current_item .. rem .. ";t=" .. t,
    ["X-RateLimit-Limit"] = res.limit,
    ["X-RateLimit-Remaining"] = rem,
    ["X-RateLimit-Reset"] = t,
  }
end

-- Header values of the rules that applied (results = { r1, res1, r2, res2, ... }).
local function headers_of(results, n)
  if n == 1 then return headers_one(results[1], results[2]) end
  local h = {}
  local pol, cur = {}, {}
  local worst
  for i = 1, n do
    local r, res = results[2 * i - 1], results[2 * i]
    pol[i] = r.policy_item
    cur[i] = r.current_item .. res.remaining .. ";t=" .. ceil(res.reset)
    if not worst or res.remaining < worst.remaining
        or (res.remaining == worst.remaining and res.reset > worst.reset) then
      worst = res
    end
  end
  h["RateLimit-Policy"] = concat(pol, ", ")
  h["RateLimit"] = concat(cur, ", ")
  h["X-RateLimit-Limit"] = worst.limit
  h["X-RateLimit-Remaining"] = worst.remaining
  h["X-RateLimit-Reset"] = ceil(worst.reset)
  return h
end

local function too_many(L, res, results, n)
  local after = ceil(res.retry_after)
  if after < 1 then after = 1 end
  local h = headers_of(results, n)
  -- the legacy trio describes the rule that refused
  h["X-RateLimit-Limit"] = res.limit
  h["X-RateLimit-Remaining"] = res.remaining
  h["X-RateLimit-Reset"] = ceil(res.reset)
  h["Retry-After"] = after
  local s, b, hh = http.json(429, { success = false, error = "Rate limit exceeded", message = L.message,
                                    retryAfter = after }, h)
  return s, hh, b
end

local function unavailable()
  local s, b, h = http.error(503, "rate_limit_unavailable",
    "rate limiting is unavailable (Redis cannot be reached), so the request was refused; try again shortly")
  h["Retry-After"] = 5
  return s, h, b
end

-- Limits req with limiter L. Returns nil to go on (the headers to add wait
-- in req.ratelimit), or status, headers, body to answer at once.
function _M.apply(L, req)
  if not L.enabled then return nil end
  local path = req.path
  if path == "/health" or path == "/health/live" or path == "/health/ready" then return nil end
  local rules = L.rules
  local r1, res1, results, n = nil, nil, nil, 0
  for i = 1, L.nrules do
    local r = rules[i]
    local hit
    if r.route then hit = req.route == r.route else hit = sub(path, 1, r.prefix_len) == r.prefix end
    if hit and (r.methods or r.query) then hit = matches(r, req) end
    if hit then
      if n == 0 and L.has_allow and allowed_addr(L, req.remote_addr) then return nil end
      local key = r.kind == "ip" and ip_key(r, req.remote_addr) or key_of(L, r, req)
      local res, err = rl_check(key, r.lim)
      if not res then
        warn(r, err)
        metrics.incr(r.m_redis_failures)
        local mode = r.failure_mode
        if mode == "local" then
          res = rl_local_check(key, r.local_lim)
        elseif mode == "closed" then
          metrics.incr(r.m_unavailable)
          return unavailable()
        end
      end
      if res then
        n = n + 1
        if n == 1 then
          r1, res1 = r, res
        else
          results = results or { r1, res1 }
          results[2 * n - 1], results[2 * n] = r, res
        end
        if not res.allowed then
          metrics.incr(r.m_rejected)
          return too_many(L, res, results or { r1, res1 }, n)
        end
        metrics.incr(r.m_allowed)
      end
    end
  end
  if n == 1 then
    req.ratelimit = headers_one(r1, res1)
  elseif n > 1 then
    req.ratelimit = headers_of(results, n)
  end
  return nil
end

-- ------------------------------------------------------- the app's hooks

local current          -- the limiter of this generation's policy
local function limiter()
  local p = policy.get("ratelimits")
  if not current or current.policy ~= p then current = _M.compile(p) end
  return current
end

-- The rules that may limit GET/HEAD requests without a query string to
-- route_pattern, whose paths are path_prefix .. <one segment>, in the form
-- the C fast path checks them itself (engine.fastpath: same Redis keys,
-- same script batch, same headers and 429):
--   { route = route_pattern, rules = { {name, lim, kind, key_prefix, prefix?, get, head,
--     policy_item, current_item}, ... }, message, allow = {addr...}, cidrs = {{lo, hi}...} }
-- rules is empty when no rule applies. nil, why when one that may apply
-- needs the Lua middleware (keyed by session, user or header; a long
-- allow-list): the route then stays off the fast path.
local FAST_ALLOW_MAX = 16

function _M.fast_rules(route_pattern, path_prefix)
  local L = limiter()
  local out = { route = route_pattern, rules = {}, message = L.message, allow = {}, cidrs = L.cidrs }
  if not L.enabled then return out end
  for i = 1, L.nrules do
    local r = L.rules[i]
    local get = not r.methods or r.methods.GET == true
    local head = not r.methods or r.methods.HEAD == true
    local applies
    if r.query or not (get or head) then
      applies = false   -- a query condition never holds without a query string
    elseif r.route then
      applies = r.route == route_pattern
    else   -- the rule's prefix covers the route's paths, or some of them
      applies = sub(path_prefix, 1, r.prefix_len) == r.prefix or sub(r.prefix, 1, #path_prefix) == path_prefix
    end
    if applies then
      if r.kind ~= "ip" and r.kind ~= "route" then
        return nil, "rule " .. r.name .. " is keyed by " .. r.kind
      end
      out.rules[#out.rules + 1] = {
        name = r.name, lim = r.lim, kind = r.kind, key_prefix = r.key_prefix,
        prefix = not r.route and r.prefix or nil, get = get, head = head,
        policy_item = r.policy_item, current_item = r.current_item,
      }
    end
  end
  for a in pairs(L.allow) do out.allow[#out.allow + 1] = a end
  if #out.rules > 4 then return nil, "more than 4 rules apply" end
  if #out.allow > FAST_ALLOW_MAX or #L.cidrs > FAST_ALLOW_MAX then return nil, "allow-list too long" end
  return out
end

function _M.enter(req)
  if rawget(req, "ratelimit_checked") then return nil end   -- the C fast path applied them (req.ratelimit: headers)
  return _M.apply(limiter(), req)
end

function _M.leave(req, status, headers, body)
  local h = rawget(req, "ratelimit")   -- raw: set by enter or the C host, never lazy
  if not h then return status, headers, body end
  -- a copy: a handler may return a table it shares between responses
  if type(headers) == "table" then
    for k, v in pairs(headers) do
      if h[k] == nil then h[k] = v end
    end
  end
  return status, h, body
end

-- The line of the policy file that mentions s, for file:line errors.
local function line_mentioning(path, s)
  local f = path and io.open(path, "r")
  if not f then return 1 end
  local n = 0
  for line in f:lines() do
    n = n + 1
    if find(line, s, 1, true) then f:close() return n end
  end
  f:close()
  return 1
end

-- Raises "policies/ratelimits.lua:N: rules[i] (name): no route ..." when a
-- rule's route is not a route of the router: a typo must not pass silently.
-- (Prefixes are not checked: "/api/auth/" may match nothing yet.)
function _M.check_routes(router)
  local p = policy.get("ratelimits")
  local known = {}
  for _, r in ipairs(router.routes) do known[r.pattern] = true end
  for i, r in ipairs(p.rules) do
    if r.route and not known[r.route] then
      local path = policy.file("ratelimits")
      error(fmt("%s:%d: rules[%d] (%s): no route %q (routes are matched by their pattern, e.g. "
        .. "/api/things/{id})", path or "policies/ratelimits.lua", line_mentioning(path, r.route), i, r.name,
        r.route), 0)
    end
  end
  limiter()
end

-- ------------------------------------------------------------ by name

local function rule_named(name, L)
  for _, r in ipairs((L or limiter()).rules) do
    if r.name == name then return r end
  end
  return nil
end

-- res, err = ratelimit.peek(rule_name, who [, limiter]): the budget of
-- `who` ("<kind>:<value>", e.g. "ip:10.0.0.7") under that rule of the
-- current policy (or of a compiled limiter), nothing consumed.
function _M.peek(name, who, L)
  if type(who) ~= "string" or who == "" then error("ratelimit.peek: who must be \"<kind>:<value>\"", 2) end
  local r = rule_named(name, L)
  if not r then return nil, "no rate-limit rule " .. tostring(name) end
  return rl.peek(r.key_prefix .. who, r.lim)
end

-- ok, err = ratelimit.reset(rule_name, who [, limiter]): forget that budget
-- (in Redis and in this worker's local limiter).
function _M.reset(name, who, L)
  if type(who) ~= "string" or who == "" then error("ratelimit.reset: who must be \"<kind>:<value>\"", 2) end
  local r = rule_named(name, L)
  if not r then return nil, "no rate-limit rule " .. tostring(name) end
  rl.local_reset(r.key_prefix .. who)
  return rl.reset(r.key_prefix .. who)
end

return setmetatable(_M, { __newindex = function() error("jollyjet.ratelimit is read-only", 2) end })
