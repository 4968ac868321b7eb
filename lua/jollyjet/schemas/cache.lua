-- Schema of policies/cache.lua: TTLs and freshness rules per namespace.
local ttl = function(default, desc)
  return { type = "integer", default = default, min = 1, max = 7 * 86400, description = desc }
end

return {
  description = "Cache TTLs in seconds and freshness rules",
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
        negative = ttl(30, "a cached 'not found'"),
      },
    },
    jitter = { type = "number", default = 0.1, min = 0, max = 0.5,
               description = "fraction of the TTL added or removed at random" },
  },
}
