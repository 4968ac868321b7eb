-- The admin API (README "Admin API"): every route needs
-- `Authorization: Bearer $ADMIN_TOKEN` (jollyjet.admin) and answers 404
-- while ADMIN_TOKEN is unset.
--
--   GET    /api/cache/stats                  Redis INFO summary + this worker's cache figures
--   DELETE /api/cache                        purge every cache entry (O(1): new cache epoch)
--   DELETE /api/cache/tags/{tag}             invalidate every entry carrying the tag
--   GET    /api/cache/keys?prefix=&cursor=&count=   list entries ("ns:key") with SCAN
--   GET    /api/cache/keys/{key}             one entry ("ns:key"), decoded
--   DELETE /api/cache/keys/{key}             invalidate it (every worker's L1 too)
--   GET    /api/admin/ratelimit/{rule}/{key} a rate-limit budget ("ip:1.2.3.4"), nothing spent
--   DELETE /api/admin/ratelimit/{rule}/{key} reset it
--   POST   /api/admin/reload                 reload Lua and policies in every worker
local core = require "engine.core"
local redis = require "engine.redis"
local lru = require "engine.lru"
local metrics = require "engine.metrics"
local http = require "jollyjet.http"
local policy = require "jollyjet.policy"
local cache = require "jollyjet.cache"
local ratelimit = require "jollyjet.ratelimit"
local redis_info = require "jollyjet.redis_info"
local admin = require "jollyjet.admin"
local cache_schema = require "jollyjet.schemas.cache"

local pairs, ipairs, tonumber, tostring, type = pairs, ipairs, tonumber, tostring, type
local floor = math.floor

local COUNT_DEFAULT, COUNT_MAX = 100, 1000
local MAX_PARAM = 512   -- bytes of a tag, key or prefix

local NAMESPACES = {}
for _, ns in ipairs(cache_schema.namespaces) do NAMESPACES[ns] = true end

local function no_store() return { ["Cache-Control"] = "no-store" } end
local function ok(status, body)
  body.success = true
  return status, body, no_store()
end

local function unavailable(err)
  http.fail(503, "redis_unavailable", "Redis cannot be used right now: " .. tostring(err))
end

local function null_if_nil(v)
  if v == nil then return http.null end
  return v
end

-- -------------------------------------------------------------- stats

local function rate(hits, misses)
  local total = hits + misses
  if total == 0 then return 0 end
  return floor(hits / total * 10000 + 0.5) / 100
end

local function cache_summary()
  local snap = metrics.snapshot("cache_")
  local s = { hits = 0, misses = 0, stale = 0, bypassed = 0, loaderCalls = snap.cache_loader_calls or 0,
              purges = snap.cache_purges or 0, fastPathHits = snap.cache_fastpath_hits or 0,
              tagInvalidations = snap.cache_tag_invalidations or 0 }
  for name, v in pairs(snap) do
    local what = name:match('^cache_(%a+){ns="')
    if what == "hits" then s.hits = s.hits + v
    elseif what == "misses" then s.misses = s.misses + v
    elseif what == "stale" then s.stale = s.stale + v
    elseif what == "bypass" then s.bypassed = s.bypassed + v
    end
  end
  s.hitRate = rate(s.hits, s.misses)
  return s
end

local function l1_summary()
  local out = {}
  for name, st in pairs(lru.stats()) do
    out[name] = { items = st.items, bytes = st.bytes, maxItems = st.max_items, maxBytes = st.max_bytes,
                  hits = st.hits, misses = st.misses, evictions = st.evictions }
  end
  return out   -- {} (an object) when no L1 exists yet
end

local function stats()
  local redis_part
  local info, err
  if (redis.ready()) then
    cache.redis_usable()   -- learns the cache epoch if this worker has not yet
    info, err = redis_info.fetch(nil, 1000)
  else
    err = "redis unavailable"
  end
  if info then
    local keyspace = {}
    for k, v in pairs(info) do
      if type(v) == "table" and k:match("^db%d+$") then keyspace[k] = v end
    end
    local hits, misses = info.keyspace_hits or 0, info.keyspace_misses or 0
    redis_part = {
      status = "up",
      version = null_if_nil(info.redis_version), mode = null_if_nil(info.redis_mode),
      role = null_if_nil(info.role), uptimeSeconds = null_if_nil(info.uptime_in_seconds),
      usedMemory = null_if_nil(info.used_memory), usedMemoryHuman = null_if_nil(info.used_memory_human),
      usedMemoryPeak = null_if_nil(info.used_memory_peak), maxmemory = null_if_nil(info.maxmemory),
      maxmemoryPolicy = null_if_nil(info.maxmemory_policy),
      fragmentationRatio = null_if_nil(info.mem_fragmentation_ratio),
      connectedClients = null_if_nil(info.connected_clients),
      keyspaceHits = hits, keyspaceMisses = misses, hitRate = rate(hits, misses),
      evictedKeys = null_if_nil(info.evicted_keys), expiredKeys = null_if_nil(info.expired_keys),
      opsPerSecond = null_if_nil(info.instantaneous_ops_per_sec),
      totalCommands = null_if_nil(info.total_commands_processed),
      keyspace = keyspace,
    }
  else
    redis_part = { status = "down", error = tostring(err) }
  end
  local ci = core.info()
  local epoch, fresh = cache.epoch()
  return ok(200, {
    redis = redis_part,
    engine = {
      worker = ci.worker, pid = ci.pid, generation = ci.generation, version = ci.version,
      cacheEpoch = null_if_nil(epoch), cacheEpochFresh = fresh,
      l1 = l1_summary(),          -- this worker's L1 caches, by name (= namespace)
      cache = cache_summary(),    -- every worker of this instance (shared metrics)
    },
  })
end

-- -------------------------------------------------------------- purge

local function purge()
  local epoch, err = cache.purge()
  if not epoch then unavailable(err) end
  return ok(200, { epoch = epoch,
    message = "every cache entry is now a miss in every worker (cache epoch " .. epoch .. ")" })
end

-- --------------------------------------------------------------- tags

local function check_param(what, v)
  if type(v) ~= "string" or v == "" or #v > MAX_PARAM or v:find("[%c]") then
    http.fail(400, "bad_request", what .. " must be 1.." .. MAX_PARAM .. " bytes without control characters")
  end
  return v
end

local function invalidate_tag(req)
  local tag = check_param("tag", req.params.tag)
  local up = redis.ready()
  cache.invalidate_tag(tag)
  return ok(200, { tag = tag, journaled = not up,
    message = up and "every entry tagged " .. tag .. " is now a miss"
      or "Redis is unavailable: the invalidation was journaled and is applied when it returns" })
end

-- --------------------------------------------------------------- keys

-- "ns:key" -> ns, key (raises 400 / 404)
local function split_key(s)
  check_param("key", s)
  local ns, key = s:match("^([^:]+):(.+)$")
  if not ns then http.fail(400, "bad_request", "key must be \"<namespace>:<key>\", e.g. product:p-0001") end
  if not NAMESPACES[ns] then
    http.fail(404, "not_found", "no cache namespace '" .. ns .. "' (namespaces: "
      .. table.concat(cache_schema.namespaces, ", ") .. ")")
  end
  return ns, key
end

local function get_key(req)
  local ns, key = split_key(req.params.key)
  local e, err = cache.inspect(ns, key)
  if e == nil then unavailable(err) end
  if not e then http.fail(404, "not_found", "no cache entry " .. ns .. ":" .. key) end
  return ok(200, {
    key = ns .. ":" .. key, namespace = ns,
    entry = {
      value = null_if_nil(e.value), version = null_if_nil(e.version), negative = e.negative,
      state = e.state, expiresAt = e.expiry, ttl = floor(e.ttl * 1000 + 0.5) / 1000,
      redisTtlMs = e.redis_ttl_ms, storedAt = null_if_nil(e.stored_at),
      loadMs = floor(e.load_ms * 10 + 0.5) / 10,
      tags = e.tags, tagsCurrent = e.tags_current,   -- { tag = generation recorded }
      inL1 = e.in_l1, epoch = e.epoch, redisKey = e.redis_key,
    },
  })
end

local function delete_key(req)
  local ns, key = split_key(req.params.key)
  local existed = cache.inspect(ns, key)   -- nil when Redis cannot say
  cache.invalidate(ns, key)                 -- journaled if Redis is down; L1s drop it via pub/sub
  local e = http.null
  if existed ~= nil then e = existed ~= false end
  return ok(200, { key = ns .. ":" .. key, existed = e,
    message = "the entry is gone from Redis and from every worker's L1" })
end

local function list_keys(req)
  local a = req.args
  local prefix = a.prefix or ""
  if #prefix > MAX_PARAM or prefix:find("[%c]") then
    http.fail(400, "bad_request", "prefix must be at most " .. MAX_PARAM .. " bytes without control characters")
  end
  local cursor = a.cursor or "0"
  if cursor == "" then cursor = "0" end
  if not cursor:match("^%d+$") or #cursor > 20 then
    http.fail(400, "bad_request", "cursor must be the cursor of the previous page (digits), or 0")
  end
  local count = COUNT_DEFAULT
  if a.count and a.count ~= "" then
    count = math.tointeger(tonumber(a.count))
    if not count or count < 1 or count > COUNT_MAX then
      http.fail(400, "bad_request", "count must be an integer from 1 to " .. COUNT_MAX)
    end
  end
  local keys, next_cursor, err = cache.scan(prefix, cursor, count)
  if not keys then unavailable(err) end
  table.sort(keys)
  return ok(200, { keys = #keys > 0 and keys or http.empty_array, count = #keys, cursor = next_cursor,
                   complete = next_cursor == "0", prefix = prefix, epoch = null_if_nil((cache.epoch())) })
end

-- --------------------------------------------------------- rate limits

local KINDS = { ip = true, session = true, user = true, route = true, header = true }

local function rl_params(req)
  local name = check_param("rule", req.params.rule)
  local who = check_param("key", req.params.key)
  local found = false
  for _, r in ipairs(policy.get("ratelimits").rules) do
    if r.name == name then found = true break end
  end
  if not found then http.fail(404, "not_found", "no rate-limit rule '" .. name .. "' in policies/ratelimits.lua") end
  local kind = who:match("^(%a+):.")
  if not kind or not KINDS[kind] then
    http.fail(400, "bad_request", "key must be \"<kind>:<value>\" with kind ip, session, user, route or header "
      .. "(e.g. ip:10.0.0.7, user:42, \"route:GET /api/products\" percent-encoded)")
  end
  return name, who
end

local function rl_peek(req)
  local name, who = rl_params(req)
  local res, err = ratelimit.peek(name, who)
  if not res then unavailable(err) end
  return ok(200, { rule = name, key = who, allowed = res.allowed, limit = res.limit, remaining = res.remaining,
                   reset = res.reset, retryAfter = res.retry_after,
                   enabled = core.config().ratelimit_enabled and policy.get("ratelimits").enabled })
end

local function rl_reset(req)
  local name, who = rl_params(req)
  local done, err = ratelimit.reset(name, who)
  if not done then unavailable(err) end
  return ok(200, { rule = name, key = who, message = "the budget of " .. who .. " under " .. name .. " is full again" })
end

-- --------------------------------------------------------------- reload

local function reload()
  local gen = core.info().generation
  local done, err = core.reload_all()
  if not done then
    http.fail(503, "reload_unavailable", "cannot reload from here: " .. tostring(err))
  end
  return ok(202, { generation = gen,
    message = "reload requested: every worker builds a new generation from lua/ and policies/; "
      .. "GET /health shows policies.generation (> " .. gen .. " once done) and policies.last_reload_error "
      .. "if the new files were rejected (the current generation keeps serving)" })
end

local p = admin.protect
return {
  routes = {
    { "GET", "/api/cache/stats", p(stats) },
    { "DELETE", "/api/cache", p(purge) },
    { "DELETE", "/api/cache/tags/{tag}", p(invalidate_tag) },
    { "GET", "/api/cache/keys", p(list_keys) },
    { "GET", "/api/cache/keys/{key}", p(get_key) },
    { "DELETE", "/api/cache/keys/{key}", p(delete_key) },
    { "GET", "/api/admin/ratelimit/{rule}/{key}", p(rl_peek) },
    { "DELETE", "/api/admin/ratelimit/{rule}/{key}", p(rl_reset) },
    { "POST", "/api/admin/reload", p(reload) },
  },
}
