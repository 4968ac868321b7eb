-- Monitoring (jollyjet.verifier, jollyjet.alerts). Edit and save: the engine
-- reloads this file while it serves; an invalid edit is rejected and
-- reported in /health (file:line: reason).
return {
  -- The consistency verifier: every `interval` seconds one worker (across
  -- every instance) samples cached products, compares their version with
  -- the database row and invalidates the entries that disagree.
  verifier = {
    enabled = true,
    interval = 30,        -- seconds between rounds
    sample = 50,          -- entries checked per round
    scan_count = 100,     -- COUNT hint of each SCAN
    max_scans = 10,       -- SCAN calls per round at most
  },
  -- Alerts: structured log lines and the alerts / alert_active metrics.
  alerts = {
    enabled = true,
    interval = 30,        -- seconds between evaluations (rates are per interval)
    hit_ratio = { min_percent = 60, min_lookups = 100 },           -- hit_ratio_low
    redis_memory = { max_percent = 80 },                           -- redis_memory_high
    redis_connection = { max_reconnects = 3, down_rounds = 2 },    -- redis_connection_failures
    error_rate = { max_percent = 5, min_requests = 100 },          -- error_rate_high
  },
}
