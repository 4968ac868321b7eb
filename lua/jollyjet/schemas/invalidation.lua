-- Schema of policies/invalidation.lua: which cache entries each write event
-- invalidates (applied by jollyjet.invalidation.apply(event, ctx)).
local pairs, ipairs, fmt = pairs, ipairs, string.format

local TAG = "^[%w_.:-]+$"

-- The product fields a write can change (their JSON names); when_fields may
-- only name these, so a typo is a reload error rather than a silent "never".
local PRODUCT_FIELDS = { "name", "description", "price", "stock", "category", "images", "isActive" }

-- Events the catalogue handlers apply: a policy must define each of them.
local REQUIRED = { "product_created", "product_updated", "product_deleted", "wishlist_toggled" }

local function tag_list(desc)
  return { type = "array", default = {}, len_max = 32,
           elements = { type = "string", pattern = TAG, len_max = 64 }, description = desc }
end

local event = {
  type = "record",
  description = "what one event invalidates",
  fields = {
    entity = { type = "boolean", default = false,
               description = "the product's own entry (ns \"product\", key ctx.id), with ctx.version as the "
                          .. "tombstone so no fill of an older row can store afterwards" },
    tags = tag_list("tags to bump (cache.invalidate_tag); with when_fields, only when one of those fields changed"),
    when_fields = { type = "array", len_max = #PRODUCT_FIELDS,
                    elements = { type = "string", one_of = PRODUCT_FIELDS },
                    description = "absent: `tags` are bumped on every event; a list: only when ctx.changed names "
                               .. "one of these fields (a ctx without `changed` counts as everything changed)" },
    always_tags = tag_list("tags bumped on every event whatever changed (pages that embed product bodies)"),
    session_wishlist = { type = "boolean", default = false,
                         description = "the wishlist entry of session ctx.session (ns \"wishlist\")" },
    write_through = { type = "boolean", default = false,
                      description = "with entity: store the new value (ctx.value) instead of deleting the "
                                 .. "entry; readers hit at once, and the version still fences older fills" },
  },
}

-- The shipped rules (policies/invalidation.lua says the same): what the
-- catalogue handlers did inline, plus "product_data" for whole cached pages.
local LIST_FIELDS = { "name", "description", "price", "category", "isActive" }
local DEFAULTS = {
  product_created = { tags = { "products" } },
  product_updated = { entity = true, write_through = true, tags = { "products" }, when_fields = LIST_FIELDS,
                      always_tags = { "product_data" } },
  product_deleted = { entity = true, tags = { "products" }, always_tags = { "product_data" } },
  wishlist_toggled = { entity = true, session_wishlist = true, always_tags = { "product_data" } },
}

return {
  description = "Cache invalidation per write event",
  product_fields = PRODUCT_FIELDS,
  required_events = REQUIRED,
  fields = {
    events = { type = "map", default = DEFAULTS,
               keys = { type = "string", pattern = "^[%a_][%w_]*$", len_max = 64 },
               values = event,
               description = "event name -> what it invalidates" },
  },
  check = function(v)
    for _, name in ipairs(REQUIRED) do
      if not v.events[name] then
        return nil, fmt("events.%s: is required (the catalogue handlers apply it)", name)
      end
    end
    for name, e in pairs(v.events) do
      if e.when_fields and #e.when_fields == 0 then
        return nil, fmt("events.%s.when_fields: empty list (leave it out to always bump `tags`, "
                        .. "or set tags = {} to never)", name)
      end
      if e.when_fields and #e.tags == 0 then
        return nil, fmt("events.%s.when_fields: given but `tags` is empty", name)
      end
    end
    return true
  end,
}
