-- jollyjet.alerts: thresholds of policies/monitoring.lua checked on a
-- timer; an alert logs one structured line when it starts firing and one
-- when it resolves, and shows in the metrics.
--
--   fired, resolved = alerts.evaluate()   -- one evaluation (the timer's; specs)
--   list = alerts.active()                -- { {name, since, threshold, description}, ... }
--   alerts.start()                        -- the timer (app.lua, serving engines only)
--   alerts.reset_baseline()               -- forget the previous evaluation's figures
--
-- Alerts (names as in the alerts{alert=...} metrics):
--   hit_ratio_low              cache hits / (hits + misses) over the interval below
--                              hit_ratio.min_percent, with at least min_lookups lookups
--   redis_memory_high          used_memory / maxmemory (INFO memory) above
--                              redis_memory.max_percent; maxmemory 0 (no limit) never fires
--   redis_connection_failures  redis.status().reconnects grew by max_reconnects or more
--                              within the interval, or Redis was down at down_rounds
--                              evaluations in a row
--   error_rate_high            5xx among http_requests{...} over the interval above
--                              error_rate.max_percent, with at least min_requests responses
--
-- Metrics are per instance (engine.metrics is shared by the workers of one
-- instance), so worker 0 of each instance evaluates them, without a Redis
-- lock: the Redis alerts must work while Redis is down. State lives in the
-- shared metrics, so it survives hot reloads and worker restarts:
--   alerts{alert="..."}        counter, +1 each time the alert starts firing
--   alert_active{alert="..."}  gauge 1 while it fires, else 0
--   alert_since{alert="..."}   gauge, unix seconds it started firing (0 when not)
-- Rates need a previous evaluation: the first one after a start or reload
-- only records the figures (their alerts keep their state).
local core = require "engine.core"
local redis = require "engine.redis"
local metrics = require "engine.metrics"
local policy = require "jollyjet.policy"
local redis_info = require "jollyjet.redis_info"
local background = require "jollyjet.background"

local pairs, ipairs, tostring, tonumber = pairs, ipairs, tostring, tonumber
local floor, fmt, concat = math.floor, string.format, table.concat

local _M = {}

local NAMES = { "hit_ratio_low", "redis_memory_high", "redis_connection_failures", "error_rate_high" }
_M.NAMES = NAMES

local DESCRIPTIONS = {
  hit_ratio_low = "cache hit ratio below the threshold",
  redis_memory_high = "Redis memory above the threshold of maxmemory",
  redis_connection_failures = "Redis connection failing (reconnects or down)",
  error_rate_high = "share of 5xx responses above the threshold",
}

local function gauge(kind, name) return fmt('%s{alert="%s"}', kind, name) end

-- the previous evaluation's figures, and Redis-down evaluations in a row
local base = nil
local down_rounds = 0

function _M.reset_baseline() base = nil; down_rounds = 0 end

local function sum_cache(snap, what)
  local n = 0
  for name, v in pairs(snap) do
    if name:find('^cache_' .. what .. '{ns="') then n = n + v end
  end
  return n
end

local function http_totals()
  local total, errors = 0, 0
  for name, v in pairs(metrics.snapshot("http_requests{")) do
    total = total + v
    if name:find('status="5%d%d"') then errors = errors + v end
  end
  return total, errors
end

local function figures()
  local snap = metrics.snapshot("cache_")
  local st = redis.status()
  local total, errors = http_totals()
  return {
    hits = sum_cache(snap, "hits"), misses = sum_cache(snap, "misses"),
    reconnects = st.reconnects or 0, up = st.up, requests = total, errors = errors,
  }
end

local function pct(a, b) return floor(a / b * 10000 + 0.5) / 100 end

-- name -> { firing = bool|nil (nil: cannot tell now), value = n, threshold = n, detail = "..." }
local function judge(a, cur, prev)
  local out = {}
  -- hit ratio over the interval
  local h = a.hit_ratio
  if not h.enabled then
    out.hit_ratio_low = { firing = false }
  elseif prev then
    local dh, dm = cur.hits - prev.hits, cur.misses - prev.misses
    local n = dh + dm
    if n >= h.min_lookups and n > 0 then
      local r = pct(dh, n)
      out.hit_ratio_low = { firing = r < h.min_percent, value = r, threshold = h.min_percent,
                            detail = fmt("hit ratio %.2f%% over %d lookups (threshold %g%%)", r, n, h.min_percent) }
    else
      out.hit_ratio_low = { firing = false, detail = fmt("%d lookups: too few to judge", n) }
    end
  end
  -- Redis connection
  local rc = a.redis_connection
  if not rc.enabled then
    out.redis_connection_failures = { firing = false }
  else
    local dr = prev and (cur.reconnects - prev.reconnects) or 0
    local firing = dr >= rc.max_reconnects or down_rounds >= rc.down_rounds
    out.redis_connection_failures = {
      firing = firing, value = dr, threshold = rc.max_reconnects,
      detail = fmt("%d reconnect(s) in the interval (threshold %d), down at %d evaluation(s) in a row (threshold %d)",
                   dr, rc.max_reconnects, down_rounds, rc.down_rounds),
    }
  end
  -- error rate over the interval
  local e = a.error_rate
  if not e.enabled then
    out.error_rate_high = { firing = false }
  elseif prev then
    local dt, de = cur.requests - prev.requests, cur.errors - prev.errors
    if dt >= e.min_requests and dt > 0 then
      local r = pct(de, dt)
      out.error_rate_high = { firing = r > e.max_percent, value = r, threshold = e.max_percent,
                              detail = fmt("%.2f%% 5xx over %d responses (threshold %g%%)", r, dt, e.max_percent) }
    else
      out.error_rate_high = { firing = false, detail = fmt("%d responses: too few to judge", dt) }
    end
  end
  -- Redis memory (now, not a rate)
  local m = a.redis_memory
  if not m.enabled then
    out.redis_memory_high = { firing = false }
  elseif cur.up then
    local info = redis_info.fetch("memory")
    if info and tonumber(info.used_memory) then
      local maxm = tonumber(info.maxmemory) or 0
      if maxm <= 0 then
        out.redis_memory_high = { firing = false, detail = "maxmemory 0: no limit" }
      else
        local r = pct(info.used_memory, maxm)
        out.redis_memory_high = { firing = r > m.max_percent, value = r, threshold = m.max_percent,
                                  detail = fmt("used_memory %d of maxmemory %d (%.2f%%, threshold %g%%)",
                                               info.used_memory, maxm, r, m.max_percent) }
      end
    end
  end
  return out
end

local function members(event, name, j)
  local parts = { fmt('"event":"%s","alert":"%s"', event, name) }
  if j.value then parts[#parts + 1] = fmt(',"value":%s', tostring(j.value)) end
  if j.threshold then parts[#parts + 1] = fmt(',"threshold":%s', tostring(j.threshold)) end
  return concat(parts)
end

local function transition(name, j, now)
  local active = metrics.get(gauge("alert_active", name)) == 1
  if j.firing and not active then
    metrics.set(gauge("alert_active", name), 1)
    metrics.set(gauge("alert_since", name), floor(now))
    metrics.incr(gauge("alerts", name))
    core.log_json("warn", "alert " .. name .. " firing: " .. (j.detail or DESCRIPTIONS[name]),
                  members("alert_firing", name, j))
    return "fired"
  elseif j.firing == false and active then
    metrics.set(gauge("alert_active", name), 0)
    metrics.set(gauge("alert_since", name), 0)
    core.log_json("info", "alert " .. name .. " resolved" .. (j.detail and (": " .. j.detail) or ""),
                  members("alert_resolved", name, j))
    return "resolved"
  end
  return nil
end

-- fired, resolved: the names of the alerts that changed state.
function _M.evaluate()
  local a = policy.get("monitoring").alerts
  local now = core.time()
  local cur = figures()
  if cur.up then down_rounds = 0 else down_rounds = down_rounds + 1 end
  local verdicts
  if a.enabled then
    verdicts = judge(a, cur, base)
  else
    verdicts = {}
    for _, n in ipairs(NAMES) do verdicts[n] = { firing = false } end
  end
  base = cur
  local fired, resolved = {}, {}
  for _, n in ipairs(NAMES) do
    local j = verdicts[n]
    if j then
      local t = transition(n, j, now)
      if t == "fired" then fired[#fired + 1] = n elseif t == "resolved" then resolved[#resolved + 1] = n end
    end
  end
  return fired, resolved
end

-- The alerts firing now on this instance, for /api/cache/metrics.
function _M.active()
  local a = policy.get("monitoring").alerts
  local thresholds = {
    hit_ratio_low = a.hit_ratio.min_percent, redis_memory_high = a.redis_memory.max_percent,
    redis_connection_failures = a.redis_connection.max_reconnects, error_rate_high = a.error_rate.max_percent,
  }
  local out = {}
  for _, n in ipairs(NAMES) do
    if metrics.get(gauge("alert_active", n)) == 1 then
      local since = metrics.get(gauge("alert_since", n))
      out[#out + 1] = { name = n, since = since > 0 and since or nil, threshold = thresholds[n],
                        description = DESCRIPTIONS[n] }
    end
  end
  return out
end

-- The timer, in worker 0 of each instance.
function _M.start()
  if core.info().worker ~= 0 then return nil end
  local a = policy.get("monitoring").alerts
  for _, n in ipairs(NAMES) do   -- make them exist (and show in /metrics) from the start
    metrics.incr(gauge("alerts", n), 0)
    metrics.set(gauge("alert_active", n), metrics.get(gauge("alert_active", n)))
  end
  if not a.enabled then
    _M.evaluate()   -- resolves what a previous generation left firing
    return nil
  end
  base = figures()   -- the first evaluation has an interval to compare with
  return background.every("alerts", a.interval, function() _M.evaluate() end)
end

return _M
