-- jollyjet.cache: two-level cache-aside with the hard parts solved.
--
--   value, err, source, level, stored_at = cache.fetch(ns, key, loader, opts?)
--       opts: { tags = {...}, bypass = bool, ttl = seconds (overrides the namespace's) }
--   values, err, sources = cache.fetch_many(ns, keys, loader_many, opts?)
--   cache.set(ns, key, value, { version = n })        -- write-through
--   cache.invalidate(ns, key, { version = n })         -- after a write
--   cache.invalidate_tag(tag)                          -- O(1), however many entries carry it
--   epoch, err = cache.purge()                         -- O(1): every entry of every namespace
--   info, err = cache.inspect(ns, key)                 -- an entry as stored (admin API)
--   keys, cursor, err = cache.scan(prefix, cursor, count)  -- entries by "ns:key" prefix (SCAN)
--
-- Values are strings (callers serialise; products cache their JSON body so a
-- hit is spliced into the response without decoding). loader() returns
-- value, version? ; nil means "not found" (cached for ttl.negative);
-- nil, err means failure. source is "HIT", "MISS", "STALE" or "BYPASS";
-- level is "L1", "L2" (Redis) or "DB".
--
-- How the hard parts are done:
-- * Stampedes: concurrent misses of one key coalesce inside a worker
--   (single-flight on core.event) and across workers and instances (a Redis
--   lease, SET NX PX with a random token): one loader call per key.
-- * Stale fills: a write deletes the value and the lease and leaves a
--   tombstone with the new version; a fill stores only while it still holds
--   its lease, no newer version was written, and the tag generations it
--   started with are unchanged (one atomic script).
-- * Lists: tag generations. An entry records the generation of each tag it
--   carries; invalidate_tag is one INCR and makes them all misses.
-- * Freshness: XFetch early refresh, TTL jitter, stale-while-revalidate and
--   stale-if-error inside a bounded grace, negative caching.
-- * Consistency: "strong" namespaces never use L1; "bounded" ones use the
--   per-worker L1 for at most max_lag_ms, purged everywhere via pub/sub.
-- * Redis down: reads go to the loader, writes journal their invalidations in
--   the database; workers replay the journal before they trust Redis again.
-- * Purge: value and lease keys carry the cache epoch
--   (<prefix>c:<epoch>:<ns>:<key>); purge INCRs <prefix>epoch and publishes
--   it, so every worker switches to the new (empty) key space and flushes its
--   L1s at once, and old entries expire by their TTL. A worker uses Redis
--   only while it knows the current epoch (engine.h: learned on this
--   connection, re-learned after the subscriber was down); a fill keeps the
--   epoch it started in, so a fill that began before a purge stores where
--   nobody reads any more.
local core = require "engine.core"
local redis = require "engine.redis"
local db = require "engine.db"
local lru = require "engine.lru"
local metrics = require "engine.metrics"
local policy = require "jollyjet.policy"
local fastpath = require "engine.fastpath"

local type, error, tostring, tonumber, pairs, ipairs, pcall = type, error, tostring, tonumber, pairs, ipairs, pcall
local concat, random, log, floor, fmt, byte = table.concat, math.random, math.log, math.floor, string.format, string.byte
local find, sub = string.find, string.sub

local _M = {}

-- ----------------------------------------------------------- scripts

-- KEYS: value, lease, tombstone, tag keys...
-- ARGV: mode ("lease" | "fill" | "set"), token, envelope, px, version ("" if none), tag gens...
-- lease: store only while holding the lease. fill: no lease (batch fills of
-- versioned values). set: write-through, takes the lease away from any fill.
local STORE = redis.script([[
local mode, token, ver = ARGV[1], ARGV[2], ARGV[5]
if mode == "lease" and redis.call("GET", KEYS[2]) ~= token then return 0 end
if ver ~= "" then
  local w = redis.call("GET", KEYS[3])
  if w and tonumber(w) > tonumber(ver) then
    if mode == "lease" then redis.call("DEL", KEYS[2]) end
    return 0
  end
end
for i = 4, #KEYS do
  if (redis.call("GET", KEYS[i]) or "0") ~= ARGV[i + 2] then
    if mode == "lease" then redis.call("DEL", KEYS[2]) end
    return 0
  end
end
redis.call("SET", KEYS[1], ARGV[3], "PX", ARGV[4])
if mode ~= "fill" then redis.call("DEL", KEYS[2]) end
if mode == "set" and ver ~= "" then redis.call("SET", KEYS[3], ver, "EX", 120) end
return 1
]])

-- KEYS: epoch. ARGV: channel, message prefix. A new epoch, announced.
local PURGE = redis.script([[
local n = redis.call("INCR", KEYS[1])
redis.call("PUBLISH", ARGV[1], ARGV[2] .. n)
return n
]])

-- KEYS: lease. ARGV: token. Give the lease back only if it is still ours.
local RELEASE = redis.script([[
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
]])

-- ---------------------------------------------------------- helpers

local function conf() return policy.get("cache") end

-- The cache epoch this worker knows (engine.fastpath keeps it for the C
-- fast path too); "?" names keys nobody writes, for the (unchecked) case of
-- an epoch never learned.
local function cur_epoch() return (fastpath.epoch()) or "?" end
local EPOCH_KEY = redis.key("epoch")

-- Value and lease keys of the epoch ep (default: the current one).
local function vkey(ns, key, ep) return redis.key("c", ep or cur_epoch(), ns, key) end
local function lkey(ns, key, ep) return redis.key("l", ep or cur_epoch(), ns, key) end
local function wkey(ns, key) return redis.key("w", ns, key) end
local function tkey(tag) return redis.key("t", tag) end

-- Metric names, formatted once per (pattern, a, b).
local metric_names = {}   -- pattern -> a -> b -> name
local function metric_name(pattern, a, b)
  local by_a = metric_names[pattern]
  if not by_a then by_a = {}; metric_names[pattern] = by_a end
  local by_b = by_a[a]
  if not by_b then by_b = {}; by_a[a] = by_b end
  local m = by_b[b]
  if not m then m = fmt(pattern, a, b); by_b[b] = m end
  return m
end

-- cache_<name>{ns="ns"} += n
local function count(name, ns, n)
  metrics.incr(metric_name('cache_%s{ns="%s"}', name, ns), n or 1)
end

-- Hits by namespace and level: cache_level_hits{ns="product",level="L1"} (the
-- C fast path counts its own answers under the same names).
local function level_hit(ns, level, n)
  metrics.incr(metric_name('cache_level_hits{ns="%s",level="%s"}', ns, level), n or 1)
end

local function token()
  local b = core.random_bytes(12)
  return fmt(("%02x"):rep(12), byte(b, 1, 12))
end

-- Envelope: "<expiry>|<delta>|<version>|<negative>|<tag=gen,...>\n<value>"
-- Envelope: "<expiry>|<delta>|<version>|<negative>|<tag=gen,...>|<stored at>\n<value>"
-- (the stored-at field is optional when reading: entries written before it
-- existed still parse).
local function encode(value, expiry, delta, version, tags, at)
  return concat({ fmt("%.3f", expiry), "|", fmt("%.4f", delta), "|", version and tostring(version) or "",
                  "|", value == nil and "1" or "0", "|", tags or "", "|", fmt("%.3f", at or core.time()),
                  "\n", value or "" })
end

local function decode(s)
  local nl = find(s, "\n", 1, true)
  if not nl then return nil end
  local x, d, ver, neg, tags, at = s:match("^([^|]*)|([^|]*)|([^|]*)|([^|]*)|([^|\n]*)|?([^\n]*)")
  if not x then return nil end
  return {
    value = neg ~= "1" and sub(s, nl + 1) or nil,
    expiry = tonumber(x), delta = tonumber(d) or 0, version = tonumber(ver),
    negative = neg == "1", tags = tags, at = tonumber(at),
  }
end

local function ns_conf(ns)
  local c = conf()
  local ttl = c.ttl[ns]
  local nc = c.namespaces[ns]
  if not ttl or not nc then error("cache: unknown namespace '" .. tostring(ns) .. "'", 3) end
  return c, ttl, nc
end

-- The L1 of a bounded namespace, or nil. L1 is used only while the
-- invalidation subscriber is up: without it this worker would not hear of
-- writes elsewhere. Handles are kept per generation (its policy is fixed).
local l1_handles = {}
local function l1_for(c, ns, nc)
  if nc and (nc.consistency ~= "bounded" or not lru.subscriber_up()) then return nil end
  local h = l1_handles[ns]
  if not h then
    h = lru.cache(ns, { max_items = c.l1.max_items, max_bytes = c.l1.max_bytes })
    l1_handles[ns] = h
  end
  return h
end

-- Store into L1 only if no invalidation reached it since seq was taken: a
-- write answered meanwhile must not be undone by a slower read.
local function l1_store(l1, seq, key, env, life)
  if l1 and l1:seq() == seq and life > 0 then l1:set(key, env, life) end
end

local function jittered(ttl, jitter)
  return ttl * (1 + jitter * (2 * random() - 1))
end

-- tags string "a=1,b=2" for a list of tags and their generations
local function tags_string(tags, gens)
  if not tags then return "" end
  local parts = {}
  for i, t in ipairs(tags) do parts[i] = t .. "=" .. (gens[i] or "0") end
  return concat(parts, ",")
end

-- ------------------------------------------------------ journal

local journal_dirty = false
local replayed_at = nil     -- redis reconnect count at the last replay
local replaying = nil       -- core.event while a replay runs

-- The C fast path reads Redis only while this library trusts it (same
-- reconnect epoch, journal replayed): keep it told.
local told_trust = nil
local function tell_trust(reconnects)
  if told_trust ~= reconnects then
    told_trust = reconnects
    if reconnects then fastpath.trust(reconnects) else fastpath.distrust() end
  end
end

-- Invalidations the database could not journal either: kept in this worker
-- and replayed first. (Other workers cannot know of them: they trust Redis
-- again once their own journal replay succeeds; the entry's TTL bounds that.)
local unjournaled = {}

local function journal(op, ns, key, version)
  tell_trust(nil)
  local n, err = db.exec("INSERT INTO cache_journal (op, ns, key, version) VALUES (?, ?, ?, ?)",
                         op, ns, key or "", version or db.null)
  journal_dirty = true
  if not n then
    core.log("error", "cache: cannot journal an invalidation of " .. ns .. ":" .. tostring(key) .. ": " .. err)
    unjournaled[#unjournaled + 1] = { op = op, ns = ns, key = key or "", version = version }
    return
  end
  metrics.incr("cache_journaled")
end

local function apply_invalidation(op, ns, key, version)
  local cmds
  if op == "tag" then
    cmds = { { "INCR", tkey(ns) }, { "PUBLISH", redis.key("invalidate"), "*\t*" } }
  else
    cmds = { { "DEL", vkey(ns, key), lkey(ns, key) } }
    if version then cmds[2] = { "SET", wkey(ns, key), tostring(version), "EX", "120" } end
    cmds[#cmds + 1] = { "PUBLISH", redis.key("invalidate"), ns .. "\t" .. key }
  end
  local res, err = redis.pipeline(cmds)
  if not res then return nil, err end
  for _, r in ipairs(res) do
    if type(r) == "table" and r.err then return nil, r.err end
  end
  return true
end

-- Replays journaled invalidations; true when Redis may be trusted again.
local function replay()
  while #unjournaled > 0 do
    local r = unjournaled[1]
    if not apply_invalidation(r.op, r.ns, r.key, r.version) then return false end
    table.remove(unjournaled, 1)
  end
  local rows, err = db.query("SELECT id, op, ns, key, version FROM cache_journal ORDER BY id LIMIT 1000")
  if not rows then
    core.log("error", "cache: cannot read the invalidation journal: " .. err)
    return false
  end
  for _, r in ipairs(rows) do
    local ok = apply_invalidation(r.op, r.ns, r.key, r.version)
    if not ok then return false end
    db.exec("DELETE FROM cache_journal WHERE id = ?", r.id)
  end
  if #rows == 1000 then return replay() end
  if #rows > 0 then core.log("info", "cache: replayed " .. #rows .. " journaled invalidation(s)") end
  return true
end

-- true once the epoch is fresh (engine.h), asking Redis if it is not. A
-- purge announced while the GET was out changes seq: ask again.
local function learn_epoch()
  local _, fresh, eseq = fastpath.epoch()
  for _ = 1, 3 do
    if fresh then return true end
    local v, err = redis.call("GET", EPOCH_KEY)
    if v == nil and err then return false end
    local n = v == nil and 0 or math.tointeger(tonumber(v))
    if not n or n < 0 then
      core.log("error", "cache: " .. EPOCH_KEY .. " holds " .. tostring(v) .. ", not an epoch")
      return false
    end
    if fastpath.set_epoch(n, eseq) then return true end
    _, fresh, eseq = fastpath.epoch()
  end
  return false
end

-- Redis is usable for cache reads when it is up, the epoch is known, and
-- every invalidation that could not reach it has been replayed (after each
-- reconnect, and after a local failure to invalidate).
local function epoch_then_replay() return learn_epoch() and replay() end
local function redis_usable()
  local up, reconnects = redis.ready()
  if not up then return false end
  if replayed_at == reconnects and not journal_dirty and not replaying and select(2, fastpath.epoch()) then
    if told_trust ~= reconnects then tell_trust(reconnects) end
    return true
  end
  if replaying then   -- another request is replaying: wait for its verdict
    local ok = replaying:wait(conf().lease_ms / 1000)
    return ok == true
  end
  local ev = core.event()
  replaying = ev
  journal_dirty = false
  local ok, res = pcall(epoch_then_replay)
  replaying = nil
  local usable = ok and res or false
  if usable then replayed_at = reconnects; tell_trust(reconnects) else journal_dirty = true; tell_trust(nil) end
  ev:signal(usable)
  return usable
end
_M.redis_usable = redis_usable

-- ------------------------------------------------------------ reads

-- env, err, raw: the decoded envelope (or nil), an error when Redis failed,
-- and the envelope as stored (what L1 keeps, without encoding it again)
local function read_l2(ns, key, tags, ep)
  if not tags then
    local s, err = redis.call("GET", vkey(ns, key, ep))
    if err then return nil, err end
    return s and decode(s), nil, s
  end
  local keys = { vkey(ns, key, ep) }
  for i, t in ipairs(tags) do keys[i + 1] = tkey(t) end
  local res, err = redis.call("MGET", table.unpack(keys))
  if not res then return nil, err end
  local gens = {}
  for i = 1, #tags do
    local g = res[i + 1]
    gens[i] = (g == redis.null or g == nil) and "0" or g
  end
  local s = res[1]
  if s == redis.null or s == nil then return nil end
  local env = decode(s)
  if env and env.tags ~= tags_string(tags, gens) then
    count("tag_misses", ns)
    return nil
  end
  return env, nil, s
end

local inflight = {}     -- "epoch\0ns\0key" -> core.event of the fill in progress
local refreshing = {}   -- "epoch\0ns\0key" -> true while a background refresh runs

local function load_direct(ns, loader)
  count("loader_calls", ns)
  local v, ver_or_err = loader()
  return v, ver_or_err
end

-- One fill in epoch ep: lease, loader, atomic store. Returns value, err, source.
local function do_fill(ns, key, loader, opts, stale, ep)
  local c, ttl, nc = ns_conf(ns)
  local l1 = l1_for(c, ns, nc)
  local seq = l1 and l1:seq()
  local tags = opts.tags
  local lease_ms = c.lease_ms
  local tok = token()
  local deadline = core.time() + lease_ms / 1000
  local wait = 0.002
  while true do
    -- The value is read again with the lease: another worker may have
    -- stored it (and released its lease) since our first read.
    local cmds = { { "SET", lkey(ns, key, ep), tok, "NX", "PX", tostring(lease_ms) }, { "GET", vkey(ns, key, ep) } }
    if tags then
      local mget = { "MGET" }
      for i, t in ipairs(tags) do mget[i + 1] = tkey(t) end
      cmds[3] = mget
    end
    local res, err = redis.pipeline(cmds)
    if not res then   -- Redis failed under us: serve from the loader
      local v, e = load_direct(ns, loader)
      if v == nil and e ~= nil then return nil, e, "BYPASS" end
      return v, nil, "BYPASS"
    end
    if res[1] == "OK" then
      local gens = {}
      if tags then
        for i = 1, #tags do
          local g = type(res[3]) == "table" and res[3][i]
          gens[i] = (g == redis.null or not g) and "0" or g
        end
      end
      local current = type(res[2]) == "string" and decode(res[2])
      -- (An early refresh finds the very entry it was asked to refresh: not an answer.)
      if current and current.expiry > core.time() and (not tags or current.tags == tags_string(tags, gens))
         and not (stale and stale.expiry == current.expiry) then
        redis.evalsha(RELEASE, { lkey(ns, key, ep) }, { tok })
        return current.value, nil, "HIT"
      end
      local t0 = core.time()
      count("loader_calls", ns)
      local lok, value, ver_or_err = pcall(loader)
      if not lok then   -- give the lease back, or other workers wait lease_ms for nothing
        redis.evalsha(RELEASE, { lkey(ns, key, ep) }, { tok })
        error(value, 0)
      end
      if value == nil and ver_or_err ~= nil then
        redis.evalsha(RELEASE, { lkey(ns, key, ep) }, { tok })
        count("loader_errors", ns)
        if stale then
          count("stale", ns)
          return stale.value, nil, "STALE"
        end
        return nil, ver_or_err, "MISS"
      end
      local now = core.time()
      local life = value == nil and c.ttl.negative or jittered(opts.ttl or ttl, c.jitter)
      local version = value ~= nil and ver_or_err or nil
      local env = encode(value, now + life, now - t0, version, tags and tags_string(tags, gens))
      local keys = { vkey(ns, key, ep), lkey(ns, key, ep), wkey(ns, key) }
      local argv = { "lease", tok, env, tostring(floor((life + c.grace) * 1000)), version and tostring(version) or "" }
      if tags then
        for i, t in ipairs(tags) do keys[3 + i] = tkey(t); argv[5 + i] = gens[i] end
      end
      local stored = redis.evalsha(STORE, keys, argv)
      if stored == 1 then
        l1_store(l1, seq, key, env, math.min(life, nc.max_lag_ms / 1000))
      elseif stored == 0 then
        count("stale_fills_refused", ns)
      end
      if value == nil then count("negative", ns) end
      return value, nil, "MISS", stored == 0
    end
    -- Another worker or instance holds the lease: wait for its value.
    if core.time() > deadline then
      local v, e = load_direct(ns, loader)
      if v == nil and e ~= nil then return nil, e, "MISS" end
      return v, nil, "MISS"
    end
    count("lease_waits", ns)
    core.sleep(wait)
    wait = math.min(wait * 2, 0.05)
    local env = read_l2(ns, key, tags, ep)
    if env and env.expiry > core.time() then return env.value, nil, "HIT" end
  end
end

-- Single-flight inside the worker around do_fill (per epoch: a fetch after a
-- purge does not join a fill that began before it).
local function fill(ns, key, loader, opts, stale, ep)
  local fk = ep .. "\0" .. ns .. "\0" .. key
  local ev = inflight[fk]
  if ev then
    count("coalesced", ns)
    local c = conf()
    local v, err, src, refused = ev:wait(c.lease_ms / 1000 + 30)
    if err == "timeout" and v == nil then return nil, "timeout", "MISS" end
    -- Its store was refused: a write landed while it loaded, and we may have
    -- asked after that write was answered. Fill again (the lease coalesces).
    if refused then return do_fill(ns, key, loader, opts, stale, ep) end
    return v, err, src == "MISS" and "HIT" or src
  end
  ev = core.event()
  inflight[fk] = ev
  local ok, v, err, src, refused = pcall(do_fill, ns, key, loader, opts, stale, ep)
  inflight[fk] = nil
  if not ok then
    ev:signal(nil, "fill failed")
    error(v, 0)
  end
  ev:signal(v, err, src, refused)
  return v, err, src
end

local function refresh_later(ns, key, loader, opts, env, ep)
  local fk = ep .. "\0" .. ns .. "\0" .. key
  if refreshing[fk] or inflight[fk] then return end
  refreshing[fk] = true
  core.spawn(function()
    local ok, err = pcall(fill, ns, key, loader, opts, env, ep)
    refreshing[fk] = nil
    if not ok then core.log("warn", "cache: refresh of " .. ns .. ":" .. key .. " failed: " .. tostring(err)) end
  end)
end

local EMPTY = {}

function _M.fetch(ns, key, loader, opts)
  if type(key) ~= "string" then error("cache.fetch: key must be a string", 2) end
  if type(loader) ~= "function" then error("cache.fetch: loader must be a function", 2) end
  opts = opts or EMPTY
  local c, _, nc = ns_conf(ns)

  if opts.bypass then
    count("bypass", ns)
    local v, e = load_direct(ns, loader)
    if v == nil and e ~= nil then return nil, e, "BYPASS", "DB" end
    return v, nil, "BYPASS", "DB"
  end

  local now = core.time()
  local l1 = l1_for(c, ns, nc)
  local seq = l1 and l1:seq()
  if l1 then
    local s = l1:get(key)
    if s then
      local env = decode(s)
      if env and env.expiry > now then
        count("hits", ns)
        level_hit(ns, "L1")
        return env.value, nil, "HIT", "L1", env.at
      end
    end
  end

  if not redis_usable() then
    count("bypass", ns)
    local v, e = load_direct(ns, loader)
    if v == nil and e ~= nil then return nil, e, "BYPASS", "DB" end
    return v, nil, "BYPASS", "DB"
  end

  local ep = cur_epoch()   -- fresh: redis_usable learned it
  local env, err, raw = read_l2(ns, key, opts.tags, ep)
  if err then
    count("errors", ns)
    local v, e = load_direct(ns, loader)
    if v == nil and e ~= nil then return nil, e, "BYPASS", "DB" end
    return v, nil, "BYPASS", "DB"
  end
  if env then
    if env.expiry > now then
      -- XFetch: refresh early with a probability that grows near expiry.
      if c.beta > 0 and env.delta > 0 and now - env.delta * c.beta * log(random()) >= env.expiry then
        count("early_refresh", ns)
        refresh_later(ns, key, loader, opts, env, ep)
      end
      l1_store(l1, seq, key, raw, math.min(env.expiry - now, nc.max_lag_ms / 1000))
      count("hits", ns)
      level_hit(ns, "L2")
      return env.value, nil, "HIT", "L2", env.at
    elseif now < env.expiry + c.grace then
      count("stale", ns)
      refresh_later(ns, key, loader, opts, env, ep)
      return env.value, nil, "STALE", "L2", env.at
    end
  end
  count("misses", ns)
  local v, e, src = fill(ns, key, loader, opts, nil, ep)   -- env, if any, is past its grace
  return v, e, src, src == "MISS" and "DB" or "L2"
end

-- values, err, sources = cache.fetch_many(ns, keys, loader_many, opts?)
-- loader_many(missing_keys) -> { [key] = { value = s, version = n } } or nil, err.
-- For versioned entities (a batch fill is protected by the tombstone
-- version, not by a lease).
function _M.fetch_many(ns, keys, loader_many, opts)
  if type(keys) ~= "table" then error("cache.fetch_many: keys must be a list", 2) end
  if type(loader_many) ~= "function" then error("cache.fetch_many: loader must be a function", 2) end
  opts = opts or EMPTY
  local c, ttl, nc = ns_conf(ns)
  local values, sources = {}, {}
  local missing = {}
  local now = core.time()
  local l1 = not opts.bypass and l1_for(c, ns, nc) or nil   -- no-cache skips every level
  local seq = l1 and l1:seq()
  local usable = not opts.bypass and redis_usable()
  local ep = usable and cur_epoch()

  local want = {}
  for _, k in ipairs(keys) do
    local s = l1 and l1:get(k)
    local env = s and decode(s)
    if env and env.expiry > now then
      values[k], sources[k] = env.value, "HIT"
      count("hits", ns)
      level_hit(ns, "L1")
    else
      want[#want + 1] = k
    end
  end
  if #want > 0 and usable then
    local rk = {}
    for i, k in ipairs(want) do rk[i] = vkey(ns, k, ep) end
    local res, merr = redis.call("MGET", table.unpack(rk))
    if not res then   -- Redis failed under us: load, do not try to store
      count("errors", ns)
      core.log("warn", "cache: MGET failed: " .. tostring(merr))
      usable = false
    end
    for i, k in ipairs(want) do
      local s = res and res[i]
      local env = (s and s ~= redis.null) and decode(s) or nil
      if env and env.expiry > now then
        values[k], sources[k] = env.value, "HIT"
        count("hits", ns)
        level_hit(ns, "L2")
        l1_store(l1, seq, k, s, math.min(env.expiry - now, nc.max_lag_ms / 1000))
      else
        missing[#missing + 1] = k
      end
    end
  else
    for _, k in ipairs(want) do missing[#missing + 1] = k end
  end
  if #missing == 0 then return values, nil, sources end

  count("misses", ns, #missing)
  count("loader_calls", ns)
  local loaded, err = loader_many(missing)
  if not loaded then return nil, err, sources end
  local src = usable and "MISS" or "BYPASS"
  local t1 = core.time()
  local stores = {}   -- one pipeline for every fill, not a round trip per key
  for _, k in ipairs(missing) do
    local item = loaded[k]
    local value = item and item.value or nil
    local version = item and item.version or nil
    values[k], sources[k] = value, src
    if usable then
      local life = value == nil and c.ttl.negative or jittered(ttl, c.jitter)
      stores[#stores + 1] = { "EVALSHA", STORE, "3", vkey(ns, k, ep), lkey(ns, k, ep), wkey(ns, k),
        "fill", "", encode(value, t1 + life, 0, version, nil), tostring(floor((life + c.grace) * 1000)),
        version and tostring(version) or "" }
    end
  end
  if #stores > 0 then
    local res = redis.pipeline(stores)
    for i, r in ipairs(res or EMPTY) do
      -- the script cache was flushed: evalsha reloads it (the rest are best effort)
      if type(r) == "table" and r.err and r.err:find("^NOSCRIPT") then
        local cmd = stores[i]
        redis.evalsha(STORE, { cmd[4], cmd[5], cmd[6] }, { cmd[7], cmd[8], cmd[9], cmd[10], cmd[11] })
      end
    end
  end
  return values, nil, sources
end

-- Write-through after a write of the database: the new value replaces the
-- cached one and no older fill can store over it.
function _M.set(ns, key, value, opts)
  if type(value) ~= "string" then error("cache.set: value must be a string", 2) end
  opts = opts or EMPTY
  local c, ttl, nc = ns_conf(ns)
  local version = opts.version
  local life = jittered(ttl, c.jitter)
  local env = encode(value, core.time() + life, 0, version, nil)
  local ok
  if redis.ready() and learn_epoch() then   -- (an unknown epoch: journaled, replayed once it is known)
    local ep = cur_epoch()
    ok = redis.evalsha(STORE, { vkey(ns, key, ep), lkey(ns, key, ep), wkey(ns, key) },
      { "set", "", env, tostring(floor((life + c.grace) * 1000)), version and tostring(version) or "" })
    if ok ~= nil and nc.consistency == "bounded" then
      redis.call("PUBLISH", redis.key("invalidate"), ns .. "\t" .. key)
    end
  end
  if not ok then journal("key", ns, key, version) end
  if nc.consistency == "bounded" then l1_for(c, ns):delete(key) end   -- pub/sub reaches us later
  return true
end

-- After a write: the cached value and any fill in progress are void; with a
-- version, a fill that read an older row can no longer be stored.
function _M.invalidate(ns, key, opts)
  if type(key) ~= "string" then error("cache.invalidate: key must be a string", 2) end
  local c, _, nc = ns_conf(ns)
  local version = opts and opts.version
  local ok = redis.ready() and learn_epoch() and apply_invalidation("key", ns, key, version)
  if not ok then journal("key", ns, key, version) end
  if nc.consistency == "bounded" then l1_for(c, ns):delete(key) end   -- pub/sub reaches us later
  count("invalidations", ns)
  return true
end

function _M.invalidate_tag(tag)
  if type(tag) ~= "string" or tag == "" then error("cache.invalidate_tag: tag must be a string", 2) end
  local ok = redis.ready() and apply_invalidation("tag", tag)
  if not ok then journal("tag", tag) end
  metrics.incr("cache_tag_invalidations")
  return true
end

-- epoch, err = cache.purge(): every entry of every namespace becomes a miss
-- at once, in every worker and instance sharing Redis (one INCR of the
-- epoch, announced on the invalidation channel; this worker switches now).
-- Old entries expire by their TTL. nil, err when Redis cannot be reached:
-- nothing is purged (a purge is not journaled).
function _M.purge()
  if not (redis.ready()) then return nil, "redis unavailable" end
  local n, err = redis.evalsha(PURGE, { EPOCH_KEY }, { redis.key("invalidate"), "!epoch\t" })
  if not n then return nil, err end
  fastpath.advance_epoch(n)
  metrics.incr("cache_purges")
  core.log("info", "cache: purged (epoch " .. n .. ")")
  return n
end

-- epoch, fresh = cache.epoch(): the epoch this worker uses (nil if never
-- learned) and whether it may be trusted now.
function _M.epoch()
  local ep, fresh = fastpath.epoch()
  return ep, fresh
end

-- The Redis key of ns:key's value in the current epoch (tests, tools).
function _M.value_key(ns, key)
  ns_conf(ns)
  if type(key) ~= "string" then error("cache.value_key: key must be a string", 2) end
  return vkey(ns, key)
end

local function tag_table(tags)
  local t = {}
  for tag, gen in (tags or ""):gmatch("([^,=]+)=([^,]*)") do t[tag] = tonumber(gen) or gen end
  return t
end

-- info, err = cache.inspect(ns, key): the entry of ns:key in the current
-- epoch as stored, decoded: { value, version, negative, expiry, ttl (seconds
-- until expiry; < 0 once stale), state ("fresh" | "stale" within the grace |
-- "expired"), redis_ttl_ms, stored_at, load_ms, tags = { tag = generation },
-- tags_current, in_l1 (this worker's L1), epoch, redis_key }. false when
-- there is no such entry; nil, err when Redis cannot be used.
function _M.inspect(ns, key)
  if type(key) ~= "string" then error("cache.inspect: key must be a string", 2) end
  local c, _, nc = ns_conf(ns)
  if not redis_usable() then return nil, "redis unavailable" end
  local ep = cur_epoch()
  local k = vkey(ns, key, ep)
  local res, err = redis.pipeline({ { "GET", k }, { "PTTL", k } })
  if not res then return nil, err end
  local s = res[1]
  if type(s) == "table" and s.err then return nil, s.err end
  if type(s) ~= "string" then return false end
  local env = decode(s)
  if not env then return nil, "malformed cache entry at " .. k end
  local tags = tag_table(env.tags)
  local current = true
  local names = {}
  for tag in pairs(tags) do names[#names + 1] = tag end
  if #names > 0 then
    table.sort(names)
    local keys = {}
    for i, t in ipairs(names) do keys[i] = tkey(t) end
    local gens = redis.call("MGET", table.unpack(keys))
    for i, t in ipairs(names) do
      local g = type(gens) == "table" and gens[i]
      g = (g == redis.null or not g) and 0 or tonumber(g)
      if g ~= tags[t] then current = false end
    end
  end
  local now = core.time()
  local l1 = l1_for(c, ns, nc)
  return {
    value = env.value, version = env.version, negative = env.negative,
    expiry = env.expiry, ttl = env.expiry - now,
    state = env.expiry > now and "fresh" or (now < env.expiry + c.grace and "stale" or "expired"),
    redis_ttl_ms = math.tointeger(res[2]) or -2, stored_at = env.at, load_ms = env.delta * 1000,
    tags = tags, tags_current = current, in_l1 = l1 ~= nil and l1:get(key) ~= nil,
    epoch = ep, redis_key = k,
  }
end

local function glob_escape(s) return (s:gsub("[%*%?%[%]\\]", "\\%0")) end

-- keys, next_cursor, err = cache.scan(prefix, cursor, count): entries of the
-- current epoch whose "ns:key" starts with prefix, by SCAN with MATCH (never
-- KEYS), a few SCAN steps until count keys are found. At most count keys
-- (unless the very first SCAN step alone finds more): a step that would
-- overflow the page is left for the next call, which resumes at its cursor.
-- next_cursor is "0" once the scan is complete; keys are "ns:key" strings.
function _M.scan(prefix, cursor, limit)
  if type(prefix) ~= "string" then error("cache.scan: prefix must be a string", 2) end
  if type(cursor) ~= "string" or not cursor:match("^%d+$") then error("cache.scan: cursor must be digits", 2) end
  if math.type(limit) ~= "integer" or limit < 1 then error("cache.scan: count must be a positive integer", 2) end
  if not redis_usable() then return nil, nil, "redis unavailable" end
  local base = redis.key("c", cur_epoch()) .. ":"
  local pattern = glob_escape(base .. prefix) .. "*"
  local keys, n = {}, #base
  for _ = 1, 10 do
    local res, err = redis.call("SCAN", cursor, "MATCH", pattern, "COUNT", math.max(limit - #keys, 10))
    if not res then return nil, nil, err end
    local batch = res[2]
    if #keys > 0 and #keys + #batch > limit then break end   -- resume at cursor next time
    for _, k in ipairs(batch) do keys[#keys + 1] = sub(k, n + 1) end
    cursor = res[1]
    if cursor == "0" or #keys >= limit then break end
  end
  return keys, cursor
end

-- Lets the C host answer GET <prefix><key> with the fresh cached value of
-- ns:key (engine.fastpath); called by the app while the generation builds.
-- pattern: the router pattern (the route label of the C request metrics, and
-- the key of rate-limit rules keyed by route). `limits` (optional):
-- jollyjet.ratelimit.fast_rules' answer for the route, which the C host
-- then checks itself before the lookup.
function _M.fast_route(prefix, ns, pattern, limits)
  local c, _, nc = ns_conf(ns)
  local t = {
    prefix = prefix, ns = ns, key_prefix = redis.key("c") .. ":", pattern = pattern,  -- key: .. epoch .. ":" .. ns .. ":" .. id
    content_type = "application/json", bounded = nc.consistency == "bounded", beta = c.beta,
    max_lag_ms = nc.max_lag_ms,
  }
  if limits and #limits.rules > 0 then
    t.ratelimits, t.ratelimit_message = limits.rules, limits.message
    t.ratelimit_allow, t.ratelimit_cidrs = limits.allow, limits.cidrs
  end
  fastpath.route(t)
end

-- true when the client asked for a fresh answer (Cache-Control: no-cache).
function _M.bypass(req)
  local cc = req.headers and req.headers["cache-control"]
  local pragma = req.headers and req.headers["pragma"]
  return (cc ~= nil and (cc:find("no-cache", 1, true) or cc:find("no-store", 1, true)) ~= nil)
      or (pragma ~= nil and pragma:find("no-cache", 1, true) ~= nil)
end

-- ------------------------------------------------ inspection (verifier)
-- For tools that look at what is cached without going through fetch (the
-- consistency verifier, jollyjet.verifier): the value-key layout stays here.

-- next_cursor, keys = cache.scan_keys(ns, cursor, n): up to n cache keys
-- (as given to fetch) of namespace ns, by cache.scan. A full pass ends when
-- next_cursor is "0". nil, err when Redis fails.
function _M.scan_keys(ns, cursor, n)
  ns_conf(ns)
  if type(cursor) ~= "string" or not cursor:find("^%d+$") then
    error("cache.scan_keys: cursor must be a string of digits", 2)
  end
  if math.type(n) ~= "integer" or n < 1 then error("cache.scan_keys: count must be a positive integer", 2) end
  local keys, nxt, err = _M.scan(ns .. ":", cursor, n)
  if not keys then return nil, err end
  local skip = #ns + 2
  for i, k in ipairs(keys) do keys[i] = sub(k, skip) end
  return nxt, keys
end

-- entries, err = cache.peek_entries(ns, keys): what Redis holds for each key,
-- without touching TTLs, metrics or L1: { [key] = entry } for the keys that
-- have one, entry = { version = n|nil, negative = bool, expiry = t,
-- at = t|nil, value = s|nil, raw = <the stored envelope> }.
function _M.peek_entries(ns, keys)
  ns_conf(ns)
  if type(keys) ~= "table" then error("cache.peek_entries: keys must be a list", 2) end
  local out = {}
  if #keys == 0 then return out end
  local rk = {}
  for i, k in ipairs(keys) do
    if type(k) ~= "string" then error("cache.peek_entries: keys must be strings", 2) end
    rk[i] = vkey(ns, k)
  end
  local res, err = redis.call("MGET", table.unpack(rk))
  if type(res) ~= "table" then return nil, err or "MGET gave no answer" end
  for i, k in ipairs(keys) do
    local s = res[i]
    local env = type(s) == "string" and decode(s)
    if env then
      env.raw = s
      out[k] = env
    end
  end
  return out
end

-- entry, err = cache.peek_entry(ns, key): one key of peek_entries (nil when
-- nothing is cached).
function _M.peek_entry(ns, key)
  if type(key) ~= "string" then error("cache.peek_entry: key must be a string", 2) end
  local t, err = _M.peek_entries(ns, { key })
  if not t then return nil, err end
  return t[key]
end

return _M
