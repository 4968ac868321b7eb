-- jollyjet.decorators: the Lua counterparts of @Cacheable / @CacheEvict.
--
--   local get = decorators.cacheable("product", function(id) return id end,
--     function(id)                      -- a loader: value, version? | nil (not found) | nil, err
--       local row, err = catalog.get(id)
--       if not row then return nil, err end
--       return catalog.encode(row), row.version
--     end)
--   local text, err, source, level = get("p-0001")   -- cache.fetch's results
--
--   local delete = decorators.evicts(function(version, id)
--     return "product_deleted", { id = id, version = version + 1 }
--   end, catalog.delete)
--   local version, err = delete("p-0001")            -- catalog.delete's results
--
-- cacheable(ns, key_fn, fn, opts?) -> function(...)
--   key_fn(...) must return the key (a string); fn(...) is the loader and
--   keeps cache.fetch's contract. opts is cache.fetch's opts table, or a
--   function(...) returning it (e.g. { bypass = cache.bypass(req) } per call).
--   The namespace must exist (cache.ttl and cache.namespaces): checked now.
--
-- evicts(spec, fn) -> function(...)
--   Calls fn(...) and returns all its results unchanged. When the first
--   result is not nil (fn succeeded), applies an invalidation event
--   (jollyjet.invalidation) BEFORE returning; when it is nil (not found or
--   failure) or fn raises, nothing is invalidated. spec is one of:
--     "event"                      ctx from the first result when it is a table
--                                  with an id (a catalog row): { id = r.id, version = r.version };
--                                  otherwise {} (tag-only events)
--     { event = "event", ctx = function(result, ...) return ctx end }
--     function(result, ...) return event, ctx end   -- event nil: nothing to do
--   (result is fn's first result, ... the wrapped call's arguments.)
--   Named events must exist in policies/invalidation.lua: checked now.
local cache = require "jollyjet.cache"
local invalidation = require "jollyjet.invalidation"
local policy = require "jollyjet.policy"

local type, error, select, tostring = type, error, select, tostring
local pack, unpack = table.pack, table.unpack

local _M = {}

local function check_ns(ns)
  local c = policy.get("cache")
  if type(ns) ~= "string" or not c.ttl[ns] or not c.namespaces[ns] then
    error("decorators.cacheable: unknown cache namespace '" .. tostring(ns) .. "'", 3)
  end
end

local function check_event(event, who)
  if type(event) ~= "string" then error(who .. ": event must be a string", 3) end
  if not invalidation.rule(event) then
    error(who .. ": no rule for event '" .. event .. "' in policies/invalidation.lua", 3)
  end
end

function _M.cacheable(ns, key_fn, fn, opts)
  check_ns(ns)
  if type(key_fn) ~= "function" then error("decorators.cacheable: key_fn must be a function", 2) end
  if type(fn) ~= "function" then error("decorators.cacheable: fn must be a function", 2) end
  if opts ~= nil and type(opts) ~= "table" and type(opts) ~= "function" then
    error("decorators.cacheable: opts must be a table or a function", 2)
  end
  return function(...)
    local key = key_fn(...)
    if type(key) ~= "string" then
      error("decorators.cacheable(" .. ns .. "): key_fn returned " .. type(key) .. ", not a string", 2)
    end
    local o = opts
    if type(o) == "function" then o = o(...) end
    local n, args = select("#", ...), { ... }
    return cache.fetch(ns, key, function() return fn(unpack(args, 1, n)) end, o)
  end
end

-- ctx for the string form: a row-like result gives its id and version.
local function row_ctx(result)
  if type(result) == "table" and type(result.id) == "string" then
    return { id = result.id, version = result.version }
  end
  return {}
end

function _M.evicts(spec, fn)
  if type(fn) ~= "function" then error("decorators.evicts: fn must be a function", 2) end
  local resolve
  local t = type(spec)
  if t == "string" then
    check_event(spec, "decorators.evicts")
    resolve = function(result) return spec, row_ctx(result) end
  elseif t == "table" then
    local event, ctx_fn = spec.event, spec.ctx
    check_event(event, "decorators.evicts")
    if ctx_fn ~= nil and type(ctx_fn) ~= "function" then
      error("decorators.evicts: spec.ctx must be a function", 2)
    end
    ctx_fn = ctx_fn or row_ctx
    resolve = function(result, ...) return event, ctx_fn(result, ...) end
  elseif t == "function" then
    resolve = spec
  else
    error("decorators.evicts: spec must be an event name, { event =, ctx = } or a function", 2)
  end
  return function(...)
    local res = pack(fn(...))
    if res[1] ~= nil then
      local event, ctx = resolve(res[1], ...)
      if event ~= nil then invalidation.apply(event, ctx) end
    end
    return unpack(res, 1, res.n)
  end
end

return _M
