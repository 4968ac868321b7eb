-- GET /metrics: every engine.metrics counter, gauge and histogram, summed
-- over the workers of this instance, in the Prometheus text format 0.0.4
-- (jollyjet.prometheus). No authentication, no rate limit (the shipped
-- rules cover /api/), never cached.
local core = require "engine.core"
local metrics = require "engine.metrics"
local prometheus = require "jollyjet.prometheus"

local fmt = string.format

local HEADERS = { ["Content-Type"] = prometheus.CONTENT_TYPE, ["Cache-Control"] = "no-store" }

local function scrape()
  local records = metrics.collect()
  local text, skipped = prometheus.render(records, { bounds_ms = metrics.BUCKETS_MS })
  local info = core.info()
  local extra = {
    "# HELP jollyjet_metrics_overflow_total Metric updates dropped because the shared table was full.",
    "# TYPE jollyjet_metrics_overflow_total counter",
    fmt("jollyjet_metrics_overflow_total %d", metrics.overflow()),
    "# HELP jollyjet_metrics_unexported Internal metric names /metrics cannot expose (malformed or clashing).",
    "# TYPE jollyjet_metrics_unexported gauge",
    fmt("jollyjet_metrics_unexported %d", skipped),
    "# HELP jollyjet_build_info The engine version; always 1.",
    "# TYPE jollyjet_build_info gauge",
    fmt('jollyjet_build_info{version="%s"} 1', prometheus.escape_label(tostring(info.version))),
  }
  local have_workers = false
  for _, r in ipairs(records) do
    if r.name == "workers" then have_workers = true; break end
  end
  if not have_workers then   -- no master (an embedding host): the configured count
    extra[#extra + 1] = "# HELP jollyjet_workers Worker processes configured."
    extra[#extra + 1] = "# TYPE jollyjet_workers gauge"
    extra[#extra + 1] = fmt("jollyjet_workers %d", core.config().workers)
  end
  return 200, text .. table.concat(extra, "\n") .. "\n", HEADERS
end

return {
  routes = {
    { "GET", "/metrics", scrape },
  },
}
