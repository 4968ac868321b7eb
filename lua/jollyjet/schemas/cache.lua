-- Schema of policies/cache.lua: TTLs, freshness and consistency per namespace.
local ttl = function(default, desc)
  return { type = "integer", default = default, min = 1, max = 7 * 86400, description = desc }
end

local NAMESPACES = { "product", "list", "search", "category", "wishlist", "response" }

local ns_fields = {
  consistency = { type = "string", default = "strong", one_of = { "strong", "bounded" },
                  description = "strong: no stale read anywhere once a write was answered (no L1); "
                             .. "bounded: the per-worker L1 may lag a write by at most max_lag_ms" },
  max_lag_ms = { type = "integer", default = 1000, min = 1, max = 600000,
                 description = "bounded mode: longest time an L1 entry is trusted" },
}

local namespaces = { type = "record", description = "consistency per namespace", fields = {} }
for _, ns in ipairs(NAMESPACES) do
  namespaces.fields[ns] = { type = "record", fields = ns_fields }
end

return {
  description = "Cache TTLs in seconds, freshness and consistency rules",
  namespaces = NAMESPACES,
  fields = {
    ttl = {
      type = "record",
      description = "Time to live per namespace, in seconds",
      fields = {
        product = ttl(1800, "one product by id"),
        list = ttl(600, "a page of the product list"),
        search = ttl(300, "a page of search results"),
        category = ttl(3600, "a category listing"),
        wishlist = ttl(900, "a session's wishlist"),
        response = ttl(60, "a whole HTTP response cached by jollyjet.response_cache (policies/response_cache.lua)"),
        negative = ttl(30, "a cached 'not found'"),
      },
    },
    jitter = { type = "number", default = 0.1, min = 0, max = 0.5,
               description = "fraction of the TTL added or removed at random" },
    beta = { type = "number", default = 1.0, min = 0, max = 10,
             description = "XFetch early-refresh strength (0 = off)" },
    grace = { type = "integer", default = 60, min = 0, max = 86400,
              description = "seconds past expiry an entry may still be served while it is "
                         .. "refreshed (stale-while-revalidate) or when the loader fails (stale-if-error)" },
    lease_ms = { type = "integer", default = 3000, min = 10, max = 60000,
                 description = "how long one fill may hold a key's lease; others wait for its value" },
    namespaces = namespaces,
    l1 = {
      type = "record",
      description = "per-worker L1 (used by bounded namespaces)",
      fields = {
        max_items = { type = "integer", default = 10000, min = 1, max = 10000000 },
        max_bytes = { type = "integer", default = 64 * 1024 * 1024, min = 1024, max = 1 << 34 },
      },
    },
  },
}
