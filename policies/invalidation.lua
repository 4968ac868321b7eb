-- Cache invalidation per write event (jollyjet.invalidation.apply). Edit and
-- save: reloaded while the engine serves; an invalid edit is rejected and
-- reported in /health.
--
--   entity            the product's own entry ("product" ns), tombstoned with ctx.version
--   tags              tags bumped (every entry carrying one becomes a miss) ...
--   when_fields       ... only when the write changed one of these fields (JSON names)
--   always_tags       tags bumped on every such event, whatever changed
--   session_wishlist  the wishlist of the session that made the change
--
-- Tags: "products" is carried by cached list pages' id lists and by cached
-- list responses (membership and order); "product_data" only by cached whole
-- responses that embed product bodies (policies/response_cache.lua). The
-- product JSON itself lives in the "product" ns, which `entity` covers.
return {
  events = {
    -- The handler writes the new product through (cache.set); lists gain it.
    product_created = { tags = { "products" } },
    -- List pages hold ids only: they change when a listed/filtered/ordered
    -- field changes. Whole cached pages embed the body: any change.
    product_updated = {
      entity = true,
      write_through = true,   -- readers get the new product from the cache at once
      tags = { "products" },
      when_fields = { "name", "description", "price", "category", "isActive" },
      always_tags = { "product_data" },
    },
    product_deleted = { entity = true, tags = { "products" }, always_tags = { "product_data" } },
    -- wishlistCount and version of the product changed; list id pages did not.
    wishlist_toggled = { entity = true, session_wishlist = true, always_tags = { "product_data" } },
  },
}
