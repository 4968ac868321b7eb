-- Schema of policies/response_cache.lua: which GET (and HEAD) routes the
-- response-cache middleware (jollyjet.response_cache) caches whole, and how.
local ipairs, fmt = ipairs, string.format

-- A request header name (an HTTP token); compared case-insensitively.
local HEADER = "^[%w!#$%%&'*+.^_`|~-]+$"
-- A cache tag: it becomes part of a Redis key and of the cache envelope
-- ("tag=gen,..."), so no separators.
local TAG = "^[%w_.:-]+$"

local rule = {
  type = "record",
  description = "one cached route",
  fields = {
    route = { type = "string", required = true, pattern = "^/", len_max = 512,
              description = "the router pattern of a GET route exactly as a handler registers it "
                         .. "(\"/api/products\", \"/api/things/{id}\"); req.route is matched against it" },
    ttl = { type = "integer", default = 60, min = 1, max = 7 * 86400,
            description = "seconds a response stays fresh. Passed to cache.fetch as opts.ttl; until "
                       .. "jollyjet.cache honours a per-call TTL, the namespace TTL cache.ttl.response applies" },
    vary = { type = "array", default = {}, len_max = 16,
             elements = { type = "string", pattern = HEADER, len_max = 64 },
             description = "request headers (any case) whose values are part of the cache key" },
    tags = { type = "array", default = {}, len_max = 16,
             elements = { type = "string", pattern = TAG, len_max = 64 },
             description = "tags of every entry of this route: cache.invalidate_tag(tag) makes them all misses" },
  },
}

return {
  description = "Whole-response caching of GET/HEAD routes (status 200 only)",
  fields = {
    enabled = { type = "boolean", default = true,
                description = "false: the middleware caches nothing (rules are still validated)" },
    max_body_bytes = { type = "integer", default = 1024 * 1024, min = 0, max = 64 * 1024 * 1024,
                       description = "larger bodies are neither cached nor given an ETag" },
    rules = { type = "array", default = {}, len_max = 256, elements = rule,
              description = "cached routes; a route not listed here is never cached by the middleware" },
  },
  -- One rule per route; one mention of a header per rule.
  check = function(v)
    local seen = {}
    for i, r in ipairs(v.rules) do
      if seen[r.route] then
        return nil, fmt("rules[%d].route: %q is already listed as rules[%d]", i, r.route, seen[r.route])
      end
      seen[r.route] = i
      local names = {}
      for j, h in ipairs(r.vary) do
        local l = h:lower()
        if names[l] then return nil, fmt("rules[%d].vary[%d]: %q is listed twice", i, j, h) end
        names[l] = true
      end
    end
    return true
  end,
}
