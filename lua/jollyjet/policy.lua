-- jollyjet.policy: policies/*.lua are data. Each file returns a table that is
-- validated against the schema of the same name (jollyjet.schemas.<name>);
-- a generation only goes live when every policy passes.
--
--   policy.load_all()          -- at generation build; raises "file:line: reason"
--   local ttl = policy.get("cache").ttl
--
-- A policy file runs in a small sandbox (no io, os, require, load): it may
-- compute values but cannot touch the outside world.
local core = require "engine.core"
local schema = require "jollyjet.schema"

local ipairs, pairs, type, error, setmetatable, getmetatable = ipairs, pairs, type, error, setmetatable, getmetatable
local loadfile, pcall, tostring, open = loadfile, pcall, tostring, io.open

local _M = {}

local loaded = {}      -- name -> validated table
local files = {}       -- name -> path

local SAFE = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber",
  "tostring", "type", "unpack", "rawequal", "rawget", "rawlen", "setmetatable", "getmetatable",
}

local function copy(t)
  local out = {}
  for k, v in pairs(t) do out[k] = v end
  return out
end

-- Copies of the libraries, and no way to the string metatable: a policy that
-- assigned to math.floor or getmetatable("").__index.format would otherwise
-- change them for all the generation's code (found by
-- tests/fuzz/fuzz_policy_schema: one input set math.mininteger to a table,
-- and the schema validator of every later policy raised).
local function sandbox()
  local env = {}
  for _, k in ipairs(SAFE) do env[k] = _G[k] end
  env.math, env.string, env.table, env.utf8 = copy(math), copy(string), copy(table), copy(utf8)
  env.getmetatable = function(v)
    if type(v) == "string" then return nil end
    return getmetatable(v)
  end
  return env
end
_M.sandbox = sandbox   -- for the fuzz target and the spec

-- The line where a field path like "ttl.product" (its last part) first
-- appears, so schema errors point at the line to fix.
local function line_of(path, field_path)
  local f = open(path, "r")
  if not f then return nil end
  local last = field_path:match("([%w_]+)[^%w_]*$")
  local n = 0
  for line in f:lines() do
    n = n + 1
    if last and (line:find("[%s{,]" .. last .. "%s*=") or line:find("^" .. last .. "%s*=")
        or line:find("%[[\"']" .. last .. "[\"']%]")) then
      f:close()
      return n
    end
  end
  f:close()
  return nil
end

local function load_one(name, path)
  local ok_schema, s = pcall(require, "jollyjet.schemas." .. name)
  if not ok_schema then
    error(path .. ":1: no schema for policy '" .. name .. "' (expected lua/jollyjet/schemas/" .. name .. ".lua): " .. tostring(s), 0)
  end
  local chunk, err = loadfile(path, "t", sandbox())
  if not chunk then error(err, 0) end
  local ok, data = pcall(chunk)
  if not ok then error(tostring(data), 0) end
  if type(data) ~= "table" then error(path .. ":1: policy must return a table, got " .. type(data), 0) end
  local value, verr = schema.validate(s, data)
  if not value then
    error(("%s:%d: %s"):format(path, line_of(path, verr:match("^([^:]*)")) or 1, verr), 0)
  end
  if s.check then   -- cross-field rules a schema cannot say field by field
    local cok, cerr = s.check(value)
    if not cok then error(("%s:1: %s"):format(path, cerr), 0) end
  end
  return value
end

-- Loads and validates every policy; raises "file:line: reason" on the first
-- failure. Policies with a schema but no file take the schema's defaults.
function _M.load_all()
  local dir = core.config().policy_dir
  local names, err = core.list_dir(dir, ".lua")
  if not names then error(err, 0) end
  for _, file in ipairs(names) do
    local name = file:sub(1, -5)
    local path = dir .. "/" .. file
    loaded[name] = load_one(name, path)
    files[name] = path
  end
  return loaded
end

-- policy.get(name) -> validated table; defaults when no file exists.
function _M.get(name)
  local p = loaded[name]
  if p then return p end
  local ok, s = pcall(require, "jollyjet.schemas." .. name)
  if not ok then error("policy.get: unknown policy '" .. tostring(name) .. "'", 2) end
  p = assert(schema.validate(s, {}))
  loaded[name] = p
  return p
end

function _M.file(name) return files[name] end

return setmetatable(_M, { __newindex = function() error("jollyjet.policy is read-only", 2) end })
