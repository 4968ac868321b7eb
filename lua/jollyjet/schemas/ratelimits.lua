-- Schema of policies/ratelimits.lua: the rate-limit middleware
-- (jollyjet.ratelimit). Presets name a limit; rules say which requests a
-- limit applies to and whose budget they spend.
local ipairs, pairs, fmt = ipairs, pairs, string.format

-- A request header name (an HTTP token).
local HEADER = "^[%w!#$%%&'*+.^_`|~-]+$"
-- Rule and preset names appear in RateLimit headers as quoted strings and
-- in Redis keys: keep them plain.
local NAME = "^[%w_.-]+$"
local METHODS = { "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS" }

local limit_fields = function(required)
  return {
    limit = { type = "integer", required = required, min = 1, max = 1000000000,
              description = "requests (units of cost) allowed per period" },
    period = { type = "integer", required = required, min = 1, max = 31 * 86400,
               description = "the period in seconds" },
    algorithm = { type = "string", one_of = { "gcra", "sliding_window" },
                  default = required and "gcra" or nil,
                  description = "gcra (default): a bucket of `burst` refilled at limit/period; "
                             .. "sliding_window: at most `limit` in any period-long window (exact log)" },
    burst = { type = "integer", min = 1, max = 1000000000,
              description = "gcra only: requests allowed at once (default: limit)" },
  }
end

local preset = { type = "record", description = "a named limit", fields = limit_fields(true) }

local rule_fields = limit_fields(false)
rule_fields.name = { type = "string", required = true, pattern = NAME, len_max = 64,
                     description = "the policy name sent in RateLimit-Policy / RateLimit; part of the Redis key" }
rule_fields.preset = { type = "string", pattern = NAME, len_max = 64,
                       description = "the preset whose limit, period, algorithm and burst the rule uses "
                                  .. "(fields given in the rule override it)" }
rule_fields.route = { type = "string", pattern = "^/", len_max = 512,
                      description = "a router pattern exactly as a handler registers it (\"/api/products/{id}\")" }
rule_fields.prefix = { type = "string", pattern = "^/", len_max = 512,
                       description = "a path prefix (\"/api/\"); routes known to the router only" }
rule_fields.methods = { type = "array", len_max = 8, elements = { type = "string", one_of = METHODS },
                        description = "methods the rule applies to (default: every method)" }
rule_fields.query = { type = "array", len_max = 8, elements = { type = "string", len_max = 64 },
                      description = "query arguments that must be present and non-empty (e.g. { \"search\" })" }
rule_fields.key = { type = "string", default = "ip", len_max = 80,
                    description = "whose budget: ip (req.remote_addr), session (the session cookie), "
                               .. "user (the user header), route (one budget for everybody), or "
                               .. "header:<Name>; a request without the session / user / header is keyed by its ip" }
rule_fields.cost = { type = "integer", default = 1, min = 1, max = 1000000,
                     description = "units one request spends" }
rule_fields.failure_mode = { type = "string", default = "local", one_of = { "open", "closed", "local" },
                             description = "when Redis is unavailable: open (allow), closed (503), local "
                                        .. "(an in-process limiter per worker with ceil(limit / WORKERS))" }

local rule = { type = "record", description = "which requests a limit applies to", fields = rule_fields }

local function valid_ip(s)
  local a, b, c, d, bits = s:match("^(%d+)%.(%d+)%.(%d+)%.(%d+)/?(%d*)$")
  if a then
    for _, x in ipairs({ a, b, c, d }) do if tonumber(x) > 255 then return false end end
    return bits == "" or tonumber(bits) <= 32
  end
  return s:find("^[%x:.]+$") ~= nil and s:find(":", 1, true) ~= nil   -- IPv6: exact only
end

-- The seeds' presets and the rules shipped out of the box (also written out
-- in policies/ratelimits.lua).
local PRESETS = {
  default = { limit = 100, period = 60 },
  api = { limit = 100, period = 60 },
  auth = { limit = 5, period = 900 },
  search = { limit = 30, period = 60 },
  upload = { limit = 10, period = 3600 },
}
local RULES = {
  { name = "default", preset = "default", prefix = "/api/" },
  { name = "search", preset = "search", route = "/api/products", methods = { "GET", "HEAD" }, query = { "search" } },
  { name = "auth", preset = "auth", prefix = "/api/auth/", methods = { "POST" } },
  { name = "upload", preset = "upload", prefix = "/api/uploads", methods = { "POST", "PUT" } },
}

-- The limit a rule applies: { limit, period, algorithm, burst?, cost } from
-- its preset and its own fields (which win). nil, err when incomplete.
local function resolve(v, r)
  local p = r.preset and v.presets[r.preset] or {}
  local lim = {
    limit = r.limit or p.limit,
    period = r.period or p.period,
    algorithm = r.algorithm or p.algorithm or "gcra",
    cost = r.cost or 1,
  }
  if not lim.limit or not lim.period then return nil, "needs a preset or both limit and period" end
  if lim.algorithm == "sliding_window" then
    if r.burst then return nil, "burst applies to gcra only" end
  else
    lim.burst = r.burst or p.burst
  end
  local cap = lim.burst or lim.limit
  if lim.cost > cap then
    return nil, fmt("cost %d is more than the rule can ever allow (%d)", lim.cost, cap)
  end
  return lim
end

return {
  description = "Rate limits: presets and the rules that apply them",
  fields = {
    enabled = { type = "boolean", default = true,
                description = "false: no rule applies (RATELIMIT_ENABLED=false does the same for the whole engine)" },
    user_header = { type = "string", default = "X-User-Id", pattern = HEADER, len_max = 64,
                    description = "request header naming the user for key = \"user\" (trusted as sent: "
                               .. "set it at a gateway that authenticates)" },
    session_cookie = { type = "string", default = "sid", pattern = "^[%w_.-]+$", len_max = 64,
                       description = "cookie naming the session for key = \"session\"" },
    allow = { type = "array", default = {}, len_max = 1024, elements = { type = "string", len_max = 64 },
              description = "client addresses never limited: IPv4 (optionally a.b.c.d/n) or IPv6 (exact)" },
    message = { type = "string", default = "Too many requests, please try again later.", len_max = 512,
                description = "the message of a 429 body" },
    presets = { type = "map", default = PRESETS, keys = { type = "string", pattern = NAME, len_max = 64 },
                values = preset, description = "named limits" },
    rules = { type = "array", default = RULES, len_max = 256, elements = rule,
              description = "every matching rule applies, in this order; the first refusal answers 429" },
  },
  resolve = resolve,
  check = function(v)
    for name, p in pairs(v.presets) do
      if p.algorithm == "sliding_window" and p.burst then
        return nil, fmt("presets.%s: burst applies to gcra only", name)
      end
    end
    for i, ip in ipairs(v.allow) do
      if not valid_ip(ip) then return nil, fmt("allow[%d]: %q is not an IP address or IPv4 CIDR", i, ip) end
    end
    local seen = {}
    for i, r in ipairs(v.rules) do
      local at = fmt("rules[%d] (%s)", i, r.name)
      if seen[r.name] then return nil, fmt("%s: the name is already used by rules[%d]", at, seen[r.name]) end
      seen[r.name] = i
      if r.preset and not v.presets[r.preset] then
        local names = {}
        for k in pairs(v.presets) do names[#names + 1] = k end
        table.sort(names)
        return nil, fmt("%s: unknown preset %q (presets: %s)", at, r.preset, table.concat(names, ", "))
      end
      local lim, err = resolve(v, r)
      if not lim then return nil, at .. ": " .. err end
      if not r.route and not r.prefix then return nil, at .. ": needs a route or a prefix" end
      if r.route and r.prefix then return nil, at .. ": give a route or a prefix, not both" end
      local k = r.key
      if not (k == "ip" or k == "session" or k == "user" or k == "route") then
        local h = k:match("^header:(.+)$")
        if not h or not h:find(HEADER) then
          return nil, fmt("%s: key must be ip, session, user, route or header:<Name>, got %q", at, k)
        end
      end
    end
    return true
  end,
}
