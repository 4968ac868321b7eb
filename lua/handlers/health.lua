-- GET /health: Redis, database and policy-generation state of this worker.
local core = require "engine.core"
local redis = require "engine.redis"
local db = require "engine.db"
local http = require "jollyjet.http"

local function health()
  local info = core.info()
  local st = redis.status()
  local rows, dberr = db.query_timeout(1000, "SELECT 1 AS ok")
  local db_up = rows ~= nil and rows[1] ~= nil
  local body = {
    status = (st.up and db_up) and "ok" or "degraded",
    redis = {
      status = st.up and "up" or "down",
      latency_ms = st.latency_ms or http.null,
      reconnects = st.reconnects,
      last_error = st.last_error or http.null,
    },
    database = { status = db_up and "up" or "down", error = dberr or http.null },
    policies = {
      generation = info.generation,
      last_reload_error = info.last_reload_error or http.null,
    },
    worker = info.worker,
    version = info.version,
  }
  return db_up and 200 or 503, body, { ["Cache-Control"] = "no-store" }
end

return {
  routes = {
    { "GET", "/health", health },
  },
}
