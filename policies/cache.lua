-- Cache TTLs (seconds). Edit and save: the engine reloads this file while it
-- serves; an invalid edit is rejected and reported in /health.
return {
  ttl = {
    product = 1800,   -- 30 min
    list = 600,       -- 10 min
    search = 300,     -- 5 min
    category = 3600,  -- 1 h
    wishlist = 900,   -- 15 min
    response = 60,    -- 1 min: whole GET responses (policies/response_cache.lua)
    negative = 30,    -- 30 s for "not found"
  },
  jitter = 0.1,       -- +/- 10 %
}
