-- GET /api/cache/metrics: cache effectiveness, summed across workers
-- (engine.metrics lives in memory shared by every worker of this instance),
-- the consistency verifier's figures (jollyjet.verifier) and the alerts
-- firing (jollyjet.alerts).
local metrics = require "engine.metrics"
local alerts = require "jollyjet.alerts"
local http = require "jollyjet.http"

local pairs, ipairs, floor, date, concat = pairs, ipairs, math.floor, os.date, table.concat

local FIELDS = {
  hits = "cacheHits", misses = "cacheMisses", stale = "staleReads", loader_calls = "loaderCalls",
  coalesced = "coalescedWaits", lease_waits = "leaseWaits", bypass = "bypassed",
  invalidations = "invalidations", stale_fills_refused = "staleFillsRefused",
  negative = "negativeFills", loader_errors = "loaderErrors", errors = "redisErrors",
  early_refresh = "earlyRefreshes", tag_misses = "tagMisses",
}

local function rate(hits, misses)
  local total = hits + misses
  if total == 0 then return 0 end
  return floor(hits / total * 10000 + 0.5) / 100
end

local function iso(t) return date("!%Y-%m-%dT%H:%M:%SZ", t) end

-- The verifier's counters, the share of checked entries that matched (100
-- when none was checked yet) and its last round on this instance.
local function consistency(out)
  local checks = metrics.get("consistency_checks")
  local errors = metrics.get("consistency_errors")
  out.consistencyChecks = checks
  out.consistencyErrors = errors
  out.consistencyRepairs = metrics.get("consistency_repairs")
  out.consistencyScore = checks > 0 and floor((checks - errors) / checks * 10000 + 0.5) / 100 or 100
  local t = metrics.get("consistency_last_time")
  out.lastVerification = {
    time = t > 0 and iso(t) or http.null,
    checked = metrics.get("consistency_last_checked"),
    errors = metrics.get("consistency_last_errors"),
  }
end

-- The alerts firing as a JSON array, "[]" when none (lua-cjson encodes an
-- empty table as {}).
local function alerts_json()
  local items = {}
  for i, a in ipairs(alerts.active()) do
    items[i] = http.encode_json({ name = a.name, since = a.since and iso(a.since) or http.null,
                                  threshold = a.threshold, description = a.description })
  end
  return "[" .. concat(items, ",") .. "]"
end

local function cache_metrics()
  local snap = metrics.snapshot("cache_")
  local overall, by_ns = {}, {}
  for _, field in pairs(FIELDS) do overall[field] = 0 end
  for name, value in pairs(snap) do
    local what, ns = name:match('^cache_([%w_]+){ns="([%w_]+)"}$')
    local field = what and FIELDS[what]
    if field then
      local t = by_ns[ns]
      if not t then
        t = {}
        for _, f in pairs(FIELDS) do t[f] = 0 end
        by_ns[ns] = t
      end
      t[field] = t[field] + value
      if field ~= "loaderCalls" then overall[field] = overall[field] + value end
    end
  end
  overall.loaderCalls = snap["cache_loader_calls"] or 0
  overall.hitRate = rate(overall.cacheHits, overall.cacheMisses)
  overall.l1Hits = snap['cache_hits_level{level="L1"}'] or 0
  overall.l2Hits = snap['cache_hits_level{level="L2"}'] or 0
  overall.journaledInvalidations = snap["cache_journaled"] or 0
  overall.fastPathHits = snap["cache_fastpath_hits"] or 0   -- hits answered by the C host without Lua
  for _, t in pairs(by_ns) do t.hitRate = rate(t.cacheHits, t.cacheMisses) end
  overall.namespaces = by_ns   -- {} when nothing was cached yet
  consistency(overall)
  overall.success = true
  local body = http.encode_json(overall)
  body = body:sub(1, -2) .. ',"alerts":' .. alerts_json() .. "}"
  return 200, body, { ["Cache-Control"] = "no-store", ["Content-Type"] = "application/json" }
end

return {
  routes = {
    { "GET", "/api/cache/metrics", cache_metrics },
  },
}
