-- Driver of fuzz_policy_schema.c: a fuzzed policy (Lua source run in the
-- policy sandbox, or JSON) against one of the policy schemas. schema.validate
-- and the schema's check must return a value or an error string; an
-- accepted value must validate again to itself and respect every bound.
local schema = require "jollyjet.schema"
local cjson = require("cjson.safe").new()

local type, pairs, ipairs, next, assert, load, pcall, tostring, rawget =
  type, pairs, ipairs, next, assert, load, pcall, tostring, rawget
local math_type = math.type

local NAMES = { "cache", "invalidation", "monitoring", "ratelimits", "response_cache", "sessions" }
local SCHEMAS = {}
for i, n in ipairs(NAMES) do SCHEMAS[i] = require("jollyjet.schemas." .. n) end

-- The sandbox policies run in (a fresh one per input).
local sandbox = require("jollyjet.policy").sandbox

-- A plain copy: no metatables (a policy's own metamethods may raise, which
-- the loader reports as that policy's error), shared tables and cycles kept.
local function plain(v, seen)
  if type(v) ~= "table" then return v end
  if seen[v] then return seen[v] end
  local out = {}
  seen[v] = out
  local k, e = next(v)
  while k ~= nil do
    out[plain(k, seen)] = plain(e, seen)
    k, e = next(v, k)
  end
  return out
end

local function equal(a, b, seen)
  if type(a) ~= "table" or type(b) ~= "table" then
    if a ~= a and b ~= b then return true end   -- NaN (refused below anyway)
    return a == b and math_type(a) == math_type(b)
  end
  if seen[a] == b then return true end
  seen[a] = b
  for k, v in pairs(a) do if not equal(v, rawget(b, k), seen) then return false end end
  for k in pairs(b) do if rawget(a, k) == nil then return false end end
  return true
end

-- Every value in v obeys its field's type and bounds.
local function bounds(f, v, path, depth)
  if depth > 64 then return end
  local t = f.type
  if t == "integer" then assert(math_type(v) == "integer", path .. ": not an integer")
  elseif t == "number" then assert(type(v) == "number" and v == v, path .. ": not a number")
  elseif t == "string" then
    assert(type(v) == "string", path .. ": not a string")
    if f.len_max then assert(#v <= f.len_max, path .. ": too long") end
    if f.pattern then assert(v:find(f.pattern), path .. ": pattern") end
  elseif t == "boolean" then assert(type(v) == "boolean", path)
  elseif t == "array" then
    assert(type(v) == "table", path)
    if f.len_max then assert(#v <= f.len_max, path .. ": too many entries") end
    for i, e in ipairs(v) do bounds(f.elements, e, path .. "[" .. i .. "]", depth + 1) end
  elseif t == "map" then
    assert(type(v) == "table", path)
    for k, e in pairs(v) do
      bounds(f.keys or { type = "string" }, k, path .. " key", depth + 1)
      bounds(f.values, e, path .. "." .. tostring(k), depth + 1)
    end
  elseif t == "record" then
    assert(type(v) == "table", path)
    for name, sub in pairs(f.fields) do
      if v[name] ~= nil then bounds(sub, v[name], path .. "." .. name, depth + 1)
      else assert(not sub.required, path .. "." .. name .. ": required but absent") end
    end
    for k in pairs(v) do assert(f.fields[k], path .. ": unknown field " .. tostring(k)) end
  end
  if type(v) == "number" then
    if f.min then assert(v >= f.min, path .. ": below min") end
    if f.max then assert(v <= f.max, path .. ": above max") end
  end
  if f.one_of then
    local ok = false
    for _, o in ipairs(f.one_of) do if o == v then ok = true end end
    assert(ok, path .. ": not one of")
  end
end

return function(which, json, text)
  local s = SCHEMAS[which % #SCHEMAS + 1]
  local data
  if json then
    data = cjson.decode(text)
    if data == nil then return end
  else
    local chunk = load(text, "=input", "t", sandbox())
    if not chunk then return end
    local ok, d = pcall(chunk)
    if not ok then
      if tostring(d):find("fuzz: instruction limit", 1, true) then error(d, 0) end
      return
    end
    data = plain(d, {})
  end
  if type(data) ~= "table" then return end
  local value, err = schema.validate(s, data)
  if value == nil then
    assert(type(err) == "string" and err ~= "", "refused without a message")
    return
  end
  bounds({ type = "record", fields = s.fields }, value, "", 0)
  local again, err2 = schema.validate(s, value)
  assert(again, "a validated value is refused: " .. tostring(err2))
  assert(equal(value, again, {}), "validating twice changes the value")
  if s.check then
    local ok, cerr = s.check(value)
    assert(ok == true or (ok == nil and type(cerr) == "string"), "check gave " .. tostring(ok))
  end
end
