-- jollyjet.background: periodic work in a worker, tied to the generation
-- that started it.
--
--   local loop = background.every(name, seconds, fn)   -- fn() every `seconds`
--   loop:stop()                                         -- no further run
--   loop.runs, loop.stopped                             -- runs started; why it stopped
--
-- How it behaves:
-- * Each run is a task of its own (core.spawn): the instruction budget
--   (LUA_INSTRUCTION_LIMIT) is per task, so a loop that lives for weeks is
--   never stopped by it, and a run that is killed does not end the loop.
-- * A hot reload builds a new generation, which starts its own loops; the
--   old generation stays alive while any of its tasks does. So a loop
--   checks, every time it wakes, that its VM is still the current
--   generation (core.info().vm_generation == generation) and ends
--   otherwise: a worker never runs two copies, and the old VM can close.
--   Its sleep is core.idle, which a reload ends at once, so the old VM
--   closes at the reload, not one interval later.
-- * When the engine shuts down core.sleep returns nil, "closing": the loop
--   ends (a sleeping task would keep its VM alive past the exit).
-- * Runs never overlap within a worker: a run still going when the next
--   one is due makes that one skip.
-- Across workers and instances, fn takes a lock itself where it must.
local core = require "engine.core"

local type, error, pcall, setmetatable, tostring, fmt = type, error, pcall, setmetatable, tostring, string.format

local _M = {}

local running = {}   -- name -> loop, in this generation

local Loop = {}
Loop.__index = Loop

function Loop:stop() if not self.stopped then self.stopped = "stopped" end end

local function log_event(level, event, loop, msg)
  core.log_json(level, msg, fmt('"event":"%s","loop":"%s","generation":%d', event, loop.name,
                                 core.info().vm_generation))
end

-- Why the loop must end now, or nil.
local function retired(loop)
  if loop.stopped then return loop.stopped end
  local info = core.info()
  if info.vm_generation ~= info.generation then
    loop.stopped = "retired"
    log_event("info", "loop_stopped", loop, fmt("%s: stopped, generation %d was replaced by %d",
                                                 loop.name, info.vm_generation, info.generation))
    return "retired"
  end
  return nil
end

local function tick(loop)
  -- core.idle also ends at once when a reload replaces this generation
  -- (nil, "retired"): the old VM then closes without waiting an interval
  local ok, why = core.idle(loop.interval)
  if not ok and why == "closing" then loop.stopped = "closing"; return end   -- the engine shuts down
  if retired(loop) then return end
  local sok, serr = core.spawn(tick, loop)   -- the next tick, in a task of its own
  if not sok then
    loop.stopped = tostring(serr)
    log_event("error", "loop_stopped", loop, loop.name .. ": stopped: " .. tostring(serr))
    return
  end
  if loop.busy then
    loop.skipped = loop.skipped + 1
    return
  end
  loop.busy = true
  -- cleared on every exit, a kill by the instruction budget included
  local _ <close> = setmetatable({}, { __close = function() loop.busy = false end })
  loop.runs = loop.runs + 1
  local rok, rerr = pcall(loop.fn)
  if not rok then
    log_event("error", "loop_failed", loop, loop.name .. ": run failed: " .. tostring(rerr))
  end
end

-- Starts fn() every `seconds` (the first run one interval from now) in
-- this worker, for as long as this generation is current. One loop per
-- name and generation.
function _M.every(name, seconds, fn)
  if type(name) ~= "string" or name == "" then error("background.every: name must be a string", 2) end
  if type(seconds) ~= "number" or seconds <= 0 or seconds > 3600 then
    error("background.every: seconds must be in (0, 3600]", 2)
  end
  if type(fn) ~= "function" then error("background.every: fn must be a function", 2) end
  local cur = running[name]
  if cur and not cur.stopped then error("background.every: loop '" .. name .. "' already runs", 2) end
  local loop = setmetatable({ name = name, interval = seconds, fn = fn, runs = 0, skipped = 0,
                              busy = false }, Loop)
  local ok, err = core.spawn(tick, loop)
  if not ok then return nil, err end
  running[name] = loop
  log_event("info", "loop_started", loop, fmt("%s: every %gs", name, seconds))
  return loop
end

-- The running loop of that name in this generation, or nil.
function _M.get(name)
  local l = running[name]
  if l and not l.stopped then return l end
  return nil
end

return _M
