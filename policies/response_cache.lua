-- Whole-response caching of GET/HEAD routes (jollyjet.response_cache).
-- Edit and save: the engine reloads this file while it serves; an invalid
-- edit is rejected and reported in /health (file:line: reason).
--
-- A rule has: route (the router pattern), ttl (seconds), vary (request
-- headers that are part of the key), tags (their invalidation drops the
-- entries). (Fields are written only in the table below, so a reload error
-- points at the line to fix.)
-- Only 200 responses without Set-Cookie / Cache-Control: private|no-store
-- are stored; every 200 gets an ETag and If-None-Match is answered with 304.
--
-- /api/products/{id} is deliberately not listed: that route caches its
-- product JSON itself (and reports it in X-Cache).
return {
  enabled = true,
  max_body_bytes = 1048576,
  rules = {
    -- List / category / search pages. They embed whole product bodies, so
    -- they carry "products" (membership and order: create, delete, updates
    -- of listed fields) and "product_data" (any product's JSON changed:
    -- every update, delete and wishlist toggle); see policies/invalidation.lua.
    -- The page does not depend on any request header: nothing to vary on.
    { route = "/api/products", ttl = 60, vary = {}, tags = { "products", "product_data" } },
  },
}
