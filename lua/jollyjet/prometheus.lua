-- jollyjet.prometheus: engine.metrics as the Prometheus text exposition
-- format, version 0.0.4 (GET /metrics).
--
--   text, skipped = prometheus.render(records, opts?)
--       records: what engine.metrics.collect() returns (one per slot:
--         { name, kind = "counter" | "gauge", value } or
--         { name, kind = "histogram", count, sum (ms), buckets (cumulative) })
--       opts.bounds_ms: the histogram bucket bounds (engine.metrics.BUCKETS_MS)
--       skipped: slots that cannot be exposed (a malformed name, or a name
--         that clashes with a family of another type)
--   family, labels = prometheus.parse_name('cache_hits{ns="product"}')
--       -> "cache_hits", { { "ns", "product" } } (values unescaped), or nil
--   s = prometheus.escape_label(value)
--   prometheus.CONTENT_TYPE
--
-- Naming: every family is "jollyjet_" .. the internal name (characters
-- outside [a-zA-Z0-9_:] become "_"); counters end in "_total"; histograms
-- are kept in ms internally and exposed in seconds as "<name>_seconds"
-- (http_duration is exposed as jollyjet_http_request_duration_seconds), le
-- bounds and _sum divided by 1000. Every family gets one # HELP and one
-- # TYPE line; families are sorted by name and samples by labels.
local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local fmt, find, sub, gsub, byte = string.format, string.find, string.sub, string.gsub, string.byte
local concat, sort = table.concat, table.sort

local _M = {}

_M.CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

-- Internal base name -> exposed base name (before "jollyjet_" and suffixes).
local RENAME = { http_duration = "http_request_duration" }

-- HELP texts by internal base name; others get a generic one.
local HELP = {
  http_requests = "HTTP responses, counted once per response in C (route: router pattern or \"unmatched\").",
  http_duration = "Time from a complete request head to its response, by route.",
  http_connections = "Open client connections of a worker.",
  cache_hits = "Cache hits (fresh values) by namespace.",
  cache_misses = "Cache misses by namespace.",
  cache_stale = "Stale values served while a refresh runs (stale-while-revalidate / stale-if-error).",
  cache_errors = "Redis errors seen by the cache (the request went to the loader).",
  cache_level_hits = "Cache hits by namespace and level (L1: in-process, L2: Redis); C fast-path answers included.",
  cache_fastpath_hits = "Cache hits answered by the C fast path without entering Lua.",
  cache_fastpath_timeouts = "Fast-path Redis reads unanswered within REDIS_TIMEOUT_MS, handed to the handler.",
  cache_coalesced = "Cache misses that waited for another request's fill in the same worker.",
  cache_lease_waits = "Cache misses that waited for another worker's or instance's fill (Redis lease).",
  cache_loader_calls = "Loader (database) calls made by the cache.",
  cache_loader_errors = "Loader calls that failed.",
  cache_bypass = "Cache reads that went straight to the loader (no-cache request, or Redis unusable).",
  cache_negative = "Fills that cached a not-found answer.",
  cache_early_refresh = "XFetch early refreshes started.",
  cache_stale_fills_refused = "Fills refused because a write landed while they loaded.",
  cache_invalidations = "Key invalidations after writes.",
  cache_tag_invalidations = "Tag invalidations.",
  cache_tag_misses = "Entries found but void because one of their tags was invalidated.",
  cache_journaled = "Invalidations journaled in the database while Redis was unavailable.",
  db_queries = "Database statements by kind (query, exec, batch) and result.",
  db_query_duration = "Database statement run time (queueing excluded), by kind.",
  redis_command_duration = "Redis command round trips (send to reply) of the command connection.",
  redis_reconnects = "Redis command connections made after the first one.",
  redis_script_reloads = "Scripts loaded again after a NOSCRIPT reply.",
  ratelimit_allowed = "Requests a rate-limit rule allowed, by rule.",
  ratelimit_rejected = "Requests a rate-limit rule refused with 429, by rule.",
  ratelimit_unavailable = "Requests refused with 503 because Redis was unavailable (failure_mode closed), by rule.",
  ratelimit_redis_failures = "Rate-limit checks that could not reach Redis, by rule.",
  lock_acquisitions = "engine.lock acquire calls by outcome.",
  lock_contended = "Lock acquire attempts refused because another holder had the lock.",
  lock_wait = "Time from the first acquire attempt to the grant.",
  reloads = "Generation (policy and Lua code) builds by result, counted per worker.",
  policy_generation = "The policy/Lua generation a worker serves.",
  lua_memory_bytes = "Memory of a worker's current Lua generation.",
  lua_tasks = "Lua tasks (requests, background work) alive in a worker.",
  l1_items = "Entries in a worker's L1 cache (sum over workers for the instance).",
  l1_bytes = "Bytes charged to a worker's L1 cache (sum over workers for the instance).",
  l1_evictions = "L1 entries evicted to make room, all workers.",
  workers = "Worker processes configured.",
  worker_restarts = "Workers the master restarted after they died.",
  consistency_checks = "Cache entries the consistency verifier compared with the database.",
  consistency_errors = "Cache entries the consistency verifier found different from the database.",
  consistency_repairs = "Cache entries the consistency verifier repaired.",
  alerts = "Alerts fired, by alert.",
  alert_active = "1 while an alert is active.",
}

function _M.escape_label(v)
  return (gsub(v, '[\\"\n]', { ["\\"] = "\\\\", ['"'] = '\\"', ["\n"] = "\\n" }))
end

local UNESCAPE = { n = "\n", ["\\"] = "\\", ['"'] = '"' }

-- family, labels (a list of {name, value}) of an internal name, or nil.
function _M.parse_name(name)
  if type(name) ~= "string" then error("prometheus.parse_name: name must be a string", 2) end
  local brace = find(name, "{", 1, true)
  if not brace then
    if name == "" or find(name, "}", 1, true) then return nil end
    return name, {}
  end
  if brace == 1 or byte(name, -1) ~= 125 then return nil end   -- "}"
  local family, labels = sub(name, 1, brace - 1), {}
  local i, last, seen = brace + 1, #name - 1, {}
  while i <= last do
    local k, vstart = name:match('^([%a_][%w_]*)="()', i)
    if not k or seen[k] then return nil end
    seen[k] = true
    local out, j = {}, vstart
    while true do
      if j > last then return nil end
      local c = sub(name, j, j)
      if c == '"' then break end
      if c == "\\" then
        local nx = sub(name, j + 1, j + 1)
        if UNESCAPE[nx] then out[#out + 1] = UNESCAPE[nx]; j = j + 2
        else out[#out + 1] = "\\"; j = j + 1 end   -- a lone backslash stands for itself
      else
        out[#out + 1] = c
        j = j + 1
      end
    end
    labels[#labels + 1] = { k, concat(out) }
    i = j + 1
    if i <= last then
      if sub(name, i, i) ~= "," then return nil end
      i = i + 1
      if i > last then return nil end   -- a trailing comma
    end
  end
  return family, labels
end

local function metric_name(s) return (gsub(s, "[^%w_:]", "_")) end

local function label_text(labels, extra)
  local parts = {}
  for i, l in ipairs(labels) do parts[i] = l[1] .. '="' .. _M.escape_label(l[2]) .. '"' end
  if extra then parts[#parts + 1] = extra end
  if #parts == 0 then return "" end
  return "{" .. concat(parts, ",") .. "}"
end

local function seconds(ms) return fmt("%.6f", ms / 1000) end

local function le_text(ms) return fmt("%.6g", ms / 1000) end

function _M.render(records, opts)
  if type(records) ~= "table" then error("prometheus.render: records must be a list", 2) end
  local bounds = opts and opts.bounds_ms or {}
  local les = {}
  for i, b in ipairs(bounds) do les[i] = le_text(b) end
  les[#les + 1] = "+Inf"

  local families, claimed, skipped = {}, {}, 0
  local function family_of(exp, kind, internal, samples_names)
    local f = families[exp]
    if f then
      if f.type ~= kind then return nil end
      return f
    end
    for _, sn in ipairs(samples_names) do
      if claimed[sn] then return nil end
    end
    for _, sn in ipairs(samples_names) do claimed[sn] = exp end
    local help = HELP[internal] or ("engine.metrics " .. kind .. " " .. internal)
    f = { name = exp, type = kind, help = help, samples = {}, keys = {} }
    families[exp] = f
    return f
  end

  -- one sample (or histogram series) per label set: a second one (two
  -- internal names that map to one exposed name) is skipped
  local function add(f, labels, lines)
    local key = label_text(labels)
    if f.keys[key] then return nil end
    f.keys[key] = true
    f.samples[#f.samples + 1] = { key = key, lines = lines }
    return f
  end

  for _, r in ipairs(records) do
    local fam, labels = _M.parse_name(r.name)
    local ok = fam ~= nil
    if ok and r.kind == "histogram" then
      for _, l in ipairs(labels) do if l[1] == "le" then ok = false end end
    end
    if ok then
      local base = metric_name(RENAME[fam] or fam)
      local f
      if r.kind == "counter" then
        local exp = "jollyjet_" .. base
        if sub(exp, -6) ~= "_total" then exp = exp .. "_total" end
        f = family_of(exp, "counter", fam, { exp })
        f = f and add(f, labels, { exp .. label_text(labels) .. " " .. tostring(r.value) })
      elseif r.kind == "gauge" then
        local exp = "jollyjet_" .. base
        f = family_of(exp, "gauge", fam, { exp })
        f = f and add(f, labels, { exp .. label_text(labels) .. " " .. tostring(r.value) })
      elseif r.kind == "histogram" then
        local exp = "jollyjet_" .. base
        if sub(exp, -8) ~= "_seconds" then exp = exp .. "_seconds" end
        f = family_of(exp, "histogram", fam, { exp, exp .. "_bucket", exp .. "_sum", exp .. "_count" })
        if f then
          local lines = {}
          for i, le in ipairs(les) do
            lines[i] = exp .. "_bucket" .. label_text(labels, 'le="' .. le .. '"') .. " "
                       .. tostring(r.buckets[i] or r.count)
          end
          lines[#lines + 1] = exp .. "_sum" .. label_text(labels) .. " " .. seconds(r.sum)
          lines[#lines + 1] = exp .. "_count" .. label_text(labels) .. " " .. tostring(r.count)
          f = add(f, labels, lines)
        end
      end
      if not f then ok = false end
    end
    if not ok then skipped = skipped + 1 end
  end

  local names = {}
  for name in pairs(families) do names[#names + 1] = name end
  sort(names)
  local out = {}
  for _, name in ipairs(names) do
    local f = families[name]
    out[#out + 1] = "# HELP " .. name .. " " .. gsub(gsub(f.help, "\\", "\\\\"), "\n", "\\n")
    out[#out + 1] = "# TYPE " .. name .. " " .. f.type
    sort(f.samples, function(a, b) return a.key < b.key end)
    for _, s in ipairs(f.samples) do
      for _, line in ipairs(s.lines) do out[#out + 1] = line end
    end
  end
  out[#out + 1] = ""
  return concat(out, "\n"), skipped
end

return _M
