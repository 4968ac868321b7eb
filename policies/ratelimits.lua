-- Rate limits (jollyjet.ratelimit). Edit and save: the engine reloads this
-- file while it serves; an invalid edit is rejected and reported in /health.
-- RATELIMIT_ENABLED=false in the environment turns every rule off.
--
-- presets: named limits { limit, period (seconds), algorithm = "gcra" |
--   "sliding_window", burst (gcra only; default limit) }.
-- rules: every rule that matches a request applies, in this order; the
--   first refusal answers 429. A rule has a name (sent in the RateLimit
--   headers), a preset (or its own limit/period/...), a route (router
--   pattern) or a prefix (path prefix), optional methods and query (argument
--   names that must be present), key (ip | session | user | route |
--   header:<Name>), cost (units per request, default 1) and failure_mode
--   (what to do while Redis is unavailable: open = allow, closed = 503,
--   local = a per-worker limiter with ceil(limit / WORKERS); default local).
-- allow: client addresses never limited (IPv4, IPv4/n, IPv6).
-- user_header: the header key = "user" reads (trusted as sent: set it at a
--   gateway that authenticates).
--
-- 404/405 answers are not counted; /health, /health/live and /health/ready
-- are never limited.
return {
  enabled = true,
  user_header = "X-User-Id",
  session_cookie = "sid",
  allow = {},
  message = "Too many requests, please try again later.",
  presets = {
    default = { limit = 100, period = 60 },     -- 100 per minute
    api = { limit = 100, period = 60 },         -- 100 per minute
    auth = { limit = 5, period = 900 },         -- 5 per 15 minutes
    search = { limit = 30, period = 60 },       -- 30 per minute
    upload = { limit = 10, period = 3600 },     -- 10 per hour
  },
  rules = {
    -- every /api/ route, per client address
    { name = "default", preset = "default", prefix = "/api/", key = "ip", failure_mode = "local" },
    -- product searches (GET /api/products?search=...), on top of the default
    { name = "search", preset = "search", route = "/api/products", methods = { "GET", "HEAD" },
      query = { "search" }, key = "ip", failure_mode = "local" },
    -- for the auth and upload routes to come (these prefixes match nothing yet)
    { name = "auth", preset = "auth", prefix = "/api/auth/", methods = { "POST" }, key = "ip",
      failure_mode = "local" },
    { name = "upload", preset = "upload", prefix = "/api/uploads", methods = { "POST", "PUT" }, key = "ip",
      failure_mode = "local" },
  },
}
