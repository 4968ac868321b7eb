-- jollyjet.redis_info: Redis INFO as a table.
--
--   local info, err = redis_info.fetch("memory")   -- one section, or all when nil
--   info.used_memory, info.maxmemory, info.redis_version, info.role ...
--   local t = redis_info.parse(text)              -- the same from INFO's text
--
-- Numeric fields become numbers; keyspace lines (db0:keys=1,expires=0,...)
-- become tables { keys = 1, expires = 0, avg_ttl = 0 }.
local redis = require "engine.redis"

local type, tonumber, error = type, tonumber, error

local _M = {}

function _M.parse(text)
  if type(text) ~= "string" then error("redis_info.parse: text must be a string", 2) end
  local out = {}
  for line in text:gmatch("[^\r\n]+") do
    if line:sub(1, 1) ~= "#" then
      local k, v = line:match("^([%w_%-]+):(.*)$")
      if k then
        if k:match("^db%d+$") then
          local t = {}
          for f, n in v:gmatch("([%w_]+)=([^,]+)") do t[f] = tonumber(n) or n end
          out[k] = t
        else
          out[k] = tonumber(v) or v
        end
      end
    end
  end
  return out
end

-- info, err: INFO [section] through the worker's connection (timeout ms,
-- default 1000).
function _M.fetch(section, timeout_ms)
  if section ~= nil and (type(section) ~= "string" or not section:match("^[%a]+$")) then
    error("redis_info.fetch: section must be a word", 2)
  end
  local text, err
  if section then
    text, err = redis.call_timeout(timeout_ms or 1000, "INFO", section)
  else
    text, err = redis.call_timeout(timeout_ms or 1000, "INFO")
  end
  if type(text) ~= "string" then return nil, err or "INFO returned no text" end
  return _M.parse(text)
end

return _M
