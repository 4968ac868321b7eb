-- Schema of policies/monitoring.lua: the cache consistency verifier
-- (jollyjet.verifier) and the alert thresholds (jollyjet.alerts).
local function percent(default, desc)
  return { type = "number", default = default, min = 0, max = 100, description = desc }
end

local function interval(default, desc)
  -- core.sleep sleeps at most an hour at a time
  return { type = "integer", default = default, min = 1, max = 3600, description = desc }
end

local function toggle(desc)
  return { type = "boolean", default = true, description = desc }
end

return {
  description = "Monitoring: the cache consistency verifier and the alerts",
  fields = {
    verifier = {
      type = "record",
      description = "compares cached products with their database rows and repairs mismatches",
      fields = {
        enabled = toggle("false: no verification rounds"),
        interval = interval(30, "seconds between two rounds (one round at a time across every "
                                .. "worker and instance: a Redis lock)"),
        sample = { type = "integer", default = 50, min = 1, max = 10000,
                   description = "cached product entries checked per round" },
        scan_count = { type = "integer", default = 100, min = 1, max = 100000,
                       description = "COUNT hint of each SCAN call" },
        max_scans = { type = "integer", default = 10, min = 1, max = 1000,
                      description = "SCAN calls per round at most (the cursor carries on next round)" },
      },
    },
    alerts = {
      type = "record",
      description = "thresholds checked on a timer by worker 0 of each instance; an alert logs "
                 .. "once when it starts firing and once when it resolves",
      fields = {
        enabled = toggle("false: no alert is evaluated (active ones resolve)"),
        interval = interval(30, "seconds between two evaluations; rates are over this interval"),
        hit_ratio = {
          type = "record", description = "hit_ratio_low: cache hits / lookups over the interval",
          fields = {
            enabled = toggle("false: never fires"),
            min_percent = percent(60, "fires below this hit ratio"),
            min_lookups = { type = "integer", default = 100, min = 1, max = 1000000000,
                            description = "lookups needed in the interval to judge (fewer: not firing)" },
          },
        },
        redis_memory = {
          type = "record", description = "redis_memory_high: used_memory / maxmemory (INFO memory)",
          fields = {
            enabled = toggle("false: never fires"),
            max_percent = percent(80, "fires above this share of maxmemory (maxmemory 0: no limit, never fires)"),
          },
        },
        redis_connection = {
          type = "record", description = "redis_connection_failures: reconnects or Redis down",
          fields = {
            enabled = toggle("false: never fires"),
            max_reconnects = { type = "integer", default = 3, min = 1, max = 1000000,
                               description = "fires when this many reconnects happen within one interval" },
            down_rounds = { type = "integer", default = 2, min = 1, max = 1000,
                            description = "fires when Redis is down at this many evaluations in a row" },
          },
        },
        error_rate = {
          type = "record", description = "error_rate_high: share of 5xx responses over the interval",
          fields = {
            enabled = toggle("false: never fires"),
            max_percent = percent(5, "fires above this share of 5xx responses"),
            min_requests = { type = "integer", default = 100, min = 1, max = 1000000000,
                             description = "responses needed in the interval to judge (fewer: not firing)" },
          },
        },
      },
    },
  },
}
