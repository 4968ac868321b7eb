-- jollyjet.verifier: the cache consistency verifier. Samples cached product
-- entries from Redis, compares each with its database row and repairs the
-- entries that disagree.
--
--   report, err = verifier.run_once(opts?)   -- one round (specs, tools)
--       opts: { sample = n, scan_count = n, max_scans = n } override
--             policies/monitoring.lua's verifier section;
--             hold = true keeps the lock until its TTL runs out (the timer's
--             rounds: that spaces rounds across workers and instances)
--       report: { checked = n, errors = n, repaired = n, skipped = n, keys = { checked keys },
--                 cursor = "…", mismatches = { {key, reason, cached_version, db_version}, ... } }
--       nil, "busy" when another round holds the lock; nil, err on failure
--   verifier.start()    -- the timer (app.lua, serving engines only)
--
-- What counts as a mismatch (the entry is then invalidated through
-- cache.invalidate, so every worker's L1 drops it too, and logged):
--   "version"  a cached product whose version is not the row's
--   "deleted"  a cached product whose row no longer exists
--   "exists"   a cached "not found" while the row exists
-- A candidate is counted only if the entry is still byte for byte the one
-- first read after the row was read: a write that landed in between has
-- already invalidated or replaced it (that is the cache doing its job, not a
-- mismatch).
--
-- One round at a time across every worker and instance: engine.lock
-- "verifier" (TTL ~0.9 interval, held to expiry by the timer's rounds, so
-- about one round per interval in all). The SCAN cursor is kept in Redis
-- (<prefix>verifier:cursor, and the keys a batch brought beyond the sample
-- in <prefix>verifier:pending), so successive rounds, whichever worker runs
-- them, walk the whole keyspace. Figures: engine.metrics counters
-- consistency_checks, consistency_errors, consistency_repairs and gauges
-- consistency_last_time (unix seconds), consistency_last_checked,
-- consistency_last_errors (this instance's rounds).
local core = require "engine.core"
local redis = require "engine.redis"
local lock = require "engine.lock"
local metrics = require "engine.metrics"
local policy = require "jollyjet.policy"
local cache = require "jollyjet.cache"
local catalog = require "jollyjet.catalog"
local background = require "jollyjet.background"

local type, pairs, ipairs, tostring, error, floor, max = type, pairs, ipairs, tostring, error, math.floor, math.max
local fmt, concat = string.format, table.concat

local _M = {}

local NS = "product"
local LOCK = "verifier"

local function cursor_key() return redis.key("verifier", "cursor") end
local function pending_key() return redis.key("verifier", "pending") end

local function conf_with(opts)
  local c = policy.get("monitoring").verifier
  local out = {}
  for k, v in pairs(c) do out[k] = v end
  for _, k in ipairs({ "sample", "scan_count", "max_scans" }) do
    local v = opts[k]
    if v ~= nil then
      if math.type(v) ~= "integer" or v < 1 then error("verifier.run_once: " .. k .. " must be a positive integer", 3) end
      out[k] = v
    end
  end
  return out
end

-- keys, cursor, err: up to c.sample distinct keys, first those a previous
-- round scanned but had no room for, then from at most c.max_scans SCAN
-- calls starting at the stored cursor. What a SCAN batch brings beyond the
-- sample waits in a list for the next round: dropping it would skip the
-- same keys on every pass.
local function sample(c)
  local res = redis.pipeline({
    { "GET", cursor_key() },
    { "LRANGE", pending_key(), "0", tostring(c.sample - 1) },
    { "LTRIM", pending_key(), tostring(c.sample), "-1" },
  })
  if not res then return nil, "0", "redis unavailable" end
  local cursor = res[1]
  if type(cursor) ~= "string" or not cursor:find("^%d+$") then cursor = "0" end
  local keys, seen, rest = {}, {}, {}
  local function take(k)
    if seen[k] then return end
    seen[k] = true
    if #keys < c.sample then keys[#keys + 1] = k else rest[#rest + 1] = k end
  end
  for _, k in ipairs(type(res[2]) == "table" and res[2] or {}) do take(k) end
  for _ = 1, #keys < c.sample and c.max_scans or 0 do
    local nxt, batch = cache.scan_keys(NS, cursor, c.scan_count)
    if not nxt then return nil, cursor, batch end
    for _, k in ipairs(batch) do take(k) end
    cursor = nxt
    -- a pass over the whole keyspace ended: the next round starts another
    if #keys >= c.sample or cursor == "0" then break end
  end
  local cmds = { { "SET", cursor_key(), cursor, "EX", "86400" } }
  if #rest > 0 then
    local push = { "RPUSH", pending_key() }
    for i, k in ipairs(rest) do push[i + 2] = k end
    cmds[2] = push
    cmds[3] = { "EXPIRE", pending_key(), "86400" }
  end
  redis.pipeline(cmds)
  return keys, cursor
end

-- reason, cached_version, db_version when entry and row disagree, else nil
local function compare(entry, row)
  if entry.negative then
    if row then return "exists", nil, row.version end
    return nil
  end
  if not row then return "deleted", entry.version, nil end
  if entry.version == nil then   -- unversioned: compare the cached text itself
    if entry.value ~= catalog.encode(row) then return "content", nil, row.version end
    return nil
  end
  if entry.version ~= row.version then return "version", entry.version, row.version end
  return nil
end

local function json_value(v)
  if v == nil then return "null" end
  if type(v) == "number" then return tostring(v) end
  return catalog.json_string(tostring(v))
end

local function log_repair(m)
  core.log_json("warn", fmt("consistency: %s:%s disagreed with the database (%s: cached %s, database %s); invalidated",
                            NS, m.key, m.reason, tostring(m.cached_version or "-"), tostring(m.db_version or "-")),
    concat({ '"event":"consistency_repair","ns":"', NS, '","key":', json_value(m.key),
             ',"reason":"', m.reason, '","cached_version":', json_value(m.cached_version),
             ',"db_version":', json_value(m.db_version) }))
end

-- The round itself, under the lock (lk). keep() keeps the lock alive.
local function round(c, keep)
  local report = { checked = 0, errors = 0, repaired = 0, skipped = 0, keys = {}, mismatches = {} }
  local keys, cursor, err = sample(c)
  report.cursor = cursor
  if not keys then return nil, "scan failed: " .. tostring(err) end
  if #keys == 0 then return report end
  local entries, perr = cache.peek_entries(NS, keys)
  if not entries then return nil, "reading the entries failed: " .. tostring(perr) end
  local present = {}
  for _, k in ipairs(keys) do if entries[k] then present[#present + 1] = k end end
  if #present == 0 then return report end   -- all expired or invalidated since the SCAN
  if not keep() then return nil, "lost the lock" end
  local rows, derr = catalog.get_many(present)
  if not rows then return nil, "reading the database failed: " .. tostring(derr) end
  local candidates = {}
  for _, k in ipairs(present) do
    local reason, cv, dv = compare(entries[k], rows[k])
    if reason then
      candidates[#candidates + 1] = { key = k, reason = reason, cached_version = cv, db_version = dv }
    end
  end
  local again = {}
  if #candidates > 0 then
    local ck = {}
    for i, m in ipairs(candidates) do ck[i] = m.key end
    local e2, rerr = cache.peek_entries(NS, ck)
    if not e2 then return nil, "reading the entries again failed: " .. tostring(rerr) end
    again = e2
  end
  report.checked = #present
  report.keys = present
  if not keep() then return nil, "lost the lock" end
  for _, m in ipairs(candidates) do
    local now = again[m.key]
    if now and now.raw == entries[m.key].raw then
      report.errors = report.errors + 1
      report.mismatches[#report.mismatches + 1] = m
      -- With the row's version: a fill that read an older row can no longer store.
      cache.invalidate(NS, m.key, m.db_version and { version = m.db_version } or nil)
      report.repaired = report.repaired + 1
      log_repair(m)
    else
      report.skipped = report.skipped + 1   -- a write replaced it meanwhile
    end
  end
  return report
end

function _M.run_once(opts)
  if opts ~= nil and type(opts) ~= "table" then error("verifier.run_once: opts must be a table", 2) end
  opts = opts or {}
  local c = conf_with(opts)
  local ttl_ms = max(floor(c.interval * 900), 500)
  local lk, err = lock.acquire(LOCK, { ttl_ms = ttl_ms })
  if not lk then
    if err == "timeout" then return nil, "busy" end
    return nil, err
  end
  local granted = core.time()
  -- Renews the lock once half its TTL is gone; false once it is lost.
  local function keep()
    if core.time() - granted < ttl_ms / 2000 then return true end
    local ok = lk:extend(ttl_ms)
    granted = core.time()
    return ok == true
  end
  local ok, report, rerr = pcall(round, c, keep)
  if not opts.hold or not ok or not report then lk:release() end
  if not ok then error(report, 0) end
  if not report then return nil, rerr end
  metrics.incr("consistency_checks", report.checked)
  metrics.incr("consistency_errors", report.errors)
  metrics.incr("consistency_repairs", report.repaired)
  metrics.set("consistency_last_time", floor(core.time()))
  metrics.set("consistency_last_checked", report.checked)
  metrics.set("consistency_last_errors", report.errors)
  if report.errors > 0 then
    core.log_json("warn", fmt("consistency: round checked %d entries, %d mismatch(es) repaired",
                              report.checked, report.repaired),
      fmt('"event":"consistency_round","checked":%d,"errors":%d,"repaired":%d',
          report.checked, report.errors, report.repaired))
  end
  return report
end

-- The timer: a round every `interval` seconds in this worker; the lock
-- makes it one round per interval across every worker and instance.
function _M.start()
  local c = policy.get("monitoring").verifier
  if not c.enabled then return nil end
  -- make the counters exist (and show in /metrics) before the first round
  for _, m in ipairs({ "consistency_checks", "consistency_errors", "consistency_repairs" }) do
    metrics.incr(m, 0)
  end
  return background.every("verifier", c.interval, function()
    if not (redis.ready()) then return end   -- nothing to verify against (the alerts say so)
    local _, err = _M.run_once({ hold = true })
    if err and err ~= "busy" then core.log("warn", "consistency: round failed: " .. tostring(err)) end
  end)
end

return _M
