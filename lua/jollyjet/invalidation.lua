-- jollyjet.invalidation: what a write invalidates, as policy
-- (policies/invalidation.lua) rather than as calls scattered in handlers.
--
--   done = invalidation.apply(event, ctx)
--
-- event: a name the policy defines ("product_created", "product_updated",
-- "product_deleted", "wishlist_toggled", or one a team adds).
-- ctx: {
--   id = "p-0001",          -- the product (needed when the rule has entity = true)
--   value = "{...}",        -- the new JSON text, for rules with write_through
--   version = 7,            -- tombstone version for the entity: fills of rows older
--                           -- than this are refused (the new row's version after an
--                           -- update or toggle, the deleted row's version + 1)
--   changed = { name = true, stock = true },  -- fields (JSON names) the write changed;
--                           -- nil means "unknown": when_fields then count as changed
--   session = "<sid>",      -- the session (needed when session_wishlist = true)
-- }
-- Order: the entity, then the session's wishlist, then tags, so a page
-- refilled after a tag bump reads the already invalidated entity.
--
-- The cache calls cannot fail from the caller's point of view (an
-- invalidation Redis cannot take is journaled by jollyjet.cache and
-- replayed), so apply returns the list of what it did, e.g.
-- { "product:p-0001", "wishlist:<sid>", "tag:products" } (for logs and specs).
-- Misuse (unknown event, a ctx field the rule needs missing) raises.
local cache = require "jollyjet.cache"
local policy = require "jollyjet.policy"

local type, ipairs, error, tostring, math_type = type, ipairs, error, tostring, math.type

local _M = {}

local EMPTY = {}

-- true when the rule's tags apply to this change
local function affected(when_fields, changed)
  if when_fields == nil or changed == nil then return true end
  for _, f in ipairs(when_fields) do
    if changed[f] then return true end
  end
  return false
end

-- The rule of an event, or nil.
function _M.rule(event)
  return policy.get("invalidation").events[event]
end

function _M.apply(event, ctx)
  if type(event) ~= "string" then error("invalidation.apply: event must be a string", 2) end
  if ctx == nil then ctx = EMPTY end
  if type(ctx) ~= "table" then error("invalidation.apply: ctx must be a table", 2) end
  local rule = policy.get("invalidation").events[event]
  if not rule then error("invalidation.apply: no rule for event '" .. event .. "' in policies/invalidation.lua", 2) end
  if ctx.changed ~= nil and type(ctx.changed) ~= "table" then
    error("invalidation.apply: ctx.changed must be a set of field names", 2)
  end
  if ctx.version ~= nil and math_type(ctx.version) ~= "integer" then
    error("invalidation.apply: ctx.version must be an integer, got " .. tostring(ctx.version), 2)
  end
  if rule.entity and type(ctx.id) ~= "string" then
    error("invalidation.apply: " .. event .. " invalidates the entity: ctx.id must be a string", 2)
  end
  if rule.session_wishlist and type(ctx.session) ~= "string" then
    error("invalidation.apply: " .. event .. " invalidates the session's wishlist: ctx.session must be a string", 2)
  end

  local done = {}
  if rule.entity and rule.write_through and type(ctx.value) == "string" then
    cache.set("product", ctx.id, ctx.value, ctx.version and { version = ctx.version } or nil)
    done[#done + 1] = "product:" .. ctx.id
  elseif rule.entity then
    cache.invalidate("product", ctx.id, ctx.version and { version = ctx.version } or nil)
    done[#done + 1] = "product:" .. ctx.id
  end
  if rule.session_wishlist then
    cache.invalidate("wishlist", ctx.session)
    done[#done + 1] = "wishlist:" .. ctx.session
  end
  local bumped = {}
  if #rule.tags > 0 and affected(rule.when_fields, ctx.changed) then
    for _, tag in ipairs(rule.tags) do
      if not bumped[tag] then
        cache.invalidate_tag(tag)
        bumped[tag] = true
        done[#done + 1] = "tag:" .. tag
      end
    end
  end
  for _, tag in ipairs(rule.always_tags) do
    if not bumped[tag] then
      cache.invalidate_tag(tag)
      bumped[tag] = true
      done[#done + 1] = "tag:" .. tag
    end
  end
  return done
end

return _M
