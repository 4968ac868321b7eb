-- Health of this worker (no authentication, never rate limited):
--   GET /health        Redis (with a few INFO figures), database, policy
--                      generation and cache epoch; 503 only when the
--                      database does not answer (Redis down is "degraded")
--   GET /health/live   200 {"status":"ok"} whenever the event loop answers
--   GET /health/ready  200 when Redis is up, the database answers and the
--                      policies are loaded; else 503 with the reasons
local core = require "engine.core"
local redis = require "engine.redis"
local db = require "engine.db"
local http = require "jollyjet.http"
local policy = require "jollyjet.policy"
local cache = require "jollyjet.cache"
local redis_info = require "jollyjet.redis_info"

local pcall = pcall

local function no_store() return { ["Cache-Control"] = "no-store" } end   -- http.json adds to it

local INFO_TIMEOUT_MS = 250   -- /health stays fast when Redis is slow

local function db_check()
  local rows, err = db.query_timeout(1000, "SELECT 1 AS ok")
  return rows ~= nil and rows[1] ~= nil, err
end

local function health()
  local info = core.info()
  local st = redis.status()
  local db_up, dberr = db_check()
  -- INFO only while connected: with Redis down the fields are null at once
  local ri = st.up and redis_info.fetch(nil, INFO_TIMEOUT_MS) or {}
  local epoch, fresh = cache.epoch()
  local body = {
    status = (st.up and db_up) and "ok" or "degraded",
    redis = {
      status = st.up and "up" or "down",
      latency_ms = st.latency_ms or http.null,
      reconnects = st.reconnects,
      last_error = st.last_error or http.null,
      version = ri.redis_version or http.null,
      role = ri.role or http.null,
      used_memory = ri.used_memory or http.null,
      maxmemory = ri.maxmemory or http.null,
      connected_clients = ri.connected_clients or http.null,
      address = st.address or http.null,
      sentinel = st.sentinel and {
        master = st.sentinel.master,
        address = st.address or http.null,
        switches = st.sentinel.switches,
        last_switch = st.sentinel.last_switch
          and os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(st.sentinel.last_switch)) or http.null,
        last_switch_unix = st.sentinel.last_switch or http.null,
        error = st.sentinel.error or http.null,
      } or http.null,
    },
    database = { status = db_up and "up" or "down", error = dberr or http.null },
    policies = {
      generation = info.generation,
      last_reload_error = info.last_reload_error or http.null,
    },
    cache = { epoch = epoch or http.null, epoch_fresh = fresh },
    worker = info.worker,
    version = info.version,
  }
  return db_up and 200 or 503, body, no_store()
end

local function live()
  return 200, { status = "ok" }, no_store()
end

local function ready()
  local reasons = {}
  local st = redis.status()
  if not st.up then
    reasons[#reasons + 1] = "redis is down" .. (st.last_error and (": " .. st.last_error) or "")
  end
  local db_up, dberr = db_check()
  if not db_up then reasons[#reasons + 1] = "database does not answer: " .. tostring(dberr) end
  local ok = pcall(policy.get, "cache") and pcall(policy.get, "ratelimits")
  if not ok then reasons[#reasons + 1] = "policies are not loaded" end
  local body = {
    status = #reasons == 0 and "ready" or "not_ready",
    checks = { redis = st.up and "up" or "down", database = db_up and "up" or "down",
               policies = ok and "loaded" or "missing" },
    generation = core.info().generation,
    reasons = #reasons > 0 and reasons or http.empty_array,
  }
  return #reasons == 0 and 200 or 503, body, no_store()
end

return {
  routes = {
    { "GET", "/health", health },
    { "GET", "/health/live", live },
    { "GET", "/health/ready", ready },
  },
}
