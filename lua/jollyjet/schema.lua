-- jollyjet.schema: validation of policy data against declarative schemas.
--
-- A schema is a table { description = "...", fields = { name = field, ... } }
-- where a field is { type = T, default = v, required = bool, description = "...",
-- min = n, max = n, one_of = {...}, elements = field, keys = field,
-- values = field, fields = {...}, len_max = n }.
-- Types: string, integer, number, boolean, array, map, record, function.
--
--   local value, err = schema.validate(s, data)   -- defaults filled in
--
-- Unknown fields are errors: a typo in a policy must not pass silently.
local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local math_type, sort, concat, fmt = math.type, table.sort, table.concat, string.format

local _M = {}

local function describe(v)
  if type(v) == "string" then return fmt("%q", v) end
  return tostring(v)
end

local check

local function check_record(fields, data, path)
  if type(data) ~= "table" then return nil, path .. ": expected a table, got " .. type(data) end
  local out = {}
  local names = {}
  for k in pairs(data) do
    if fields[k] == nil then
      names[#names + 1] = tostring(k)
    end
  end
  if #names > 0 then
    sort(names)
    return nil, fmt("%s%s: unknown field", path == "" and "" or path .. ".", names[1])
  end
  for name, f in pairs(fields) do
    local sub = path == "" and name or path .. "." .. name
    local v = data[name]
    if v == nil then
      if f.required then return nil, sub .. ": is required" end
      if f.default ~= nil then
        if type(f.default) == "table" then
          local copy, err = check(f, f.default, sub)
          if err then error("schema default of " .. sub .. " is invalid: " .. err) end
          v = copy
        else
          v = f.default
        end
      elseif f.type == "record" then
        local copy, err = check_record(f.fields, {}, sub)
        if err then return nil, err end
        v = copy
      end
      out[name] = v
    else
      local value, err = check(f, v, sub)
      if err then return nil, err end
      out[name] = value
    end
  end
  return out
end

function check(f, v, path)
  local t = f.type
  if t == "integer" then
    if math_type(v) ~= "integer" then
      if type(v) == "number" and v == math.floor(v) and v >= math.mininteger and v <= math.maxinteger then
        v = math.tointeger(v)
      else
        return nil, path .. ": expected an integer, got " .. describe(v)
      end
    end
  elseif t == "number" then
    if type(v) ~= "number" then return nil, path .. ": expected a number, got " .. describe(v) end
    -- NaN fails every comparison, so min/max below would let it through
    -- (found by tests/fuzz/fuzz_policy_schema).
    if v ~= v then return nil, path .. ": expected a number, got nan" end
  elseif t == "string" then
    if type(v) ~= "string" then return nil, path .. ": expected a string, got " .. describe(v) end
    if f.len_max and #v > f.len_max then return nil, fmt("%s: longer than %d characters", path, f.len_max) end
    if f.pattern and not v:find(f.pattern) then
      return nil, fmt("%s: %s does not match %s", path, describe(v), f.pattern)
    end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then return nil, path .. ": expected true or false, got " .. describe(v) end
  elseif t == "function" then
    if type(v) ~= "function" then return nil, path .. ": expected a function, got " .. describe(v) end
  elseif t == "array" then
    if type(v) ~= "table" then return nil, path .. ": expected a list, got " .. type(v) end
    local n = #v
    for k in pairs(v) do
      if math_type(k) ~= "integer" or k < 1 or k > n then
        return nil, path .. ": expected a list, found key " .. describe(k)
      end
    end
    local out = {}
    for i = 1, n do
      local e, err = check(f.elements, v[i], fmt("%s[%d]", path, i))
      if err then return nil, err end
      out[i] = e
    end
    if f.len_max and n > f.len_max then return nil, fmt("%s: more than %d entries", path, f.len_max) end
    return out
  elseif t == "map" then
    if type(v) ~= "table" then return nil, path .. ": expected a table, got " .. type(v) end
    local out = {}
    for k, e in pairs(v) do
      local key, err = check(f.keys or { type = "string" }, k, path .. " key")
      if err then return nil, err end
      local value, err2 = check(f.values, e, path .. "." .. tostring(k))
      if err2 then return nil, err2 end
      out[key] = value
    end
    return out
  elseif t == "record" then
    return check_record(f.fields, v, path)
  else
    error("schema: unknown type " .. tostring(t) .. " at " .. path)
  end
  if f.min and v < f.min then return nil, fmt("%s: must be >= %s, got %s", path, f.min, describe(v)) end
  if f.max and v > f.max then return nil, fmt("%s: must be <= %s, got %s", path, f.max, describe(v)) end
  if f.one_of then
    local ok = false
    for _, o in ipairs(f.one_of) do if o == v then ok = true break end end
    if not ok then
      local opts = {}
      for i, o in ipairs(f.one_of) do opts[i] = describe(o) end
      return nil, fmt("%s: must be one of %s, got %s", path, concat(opts, ", "), describe(v))
    end
  end
  return v
end

-- value, err = schema.validate(schema, data)
function _M.validate(s, data)
  if type(s) ~= "table" or type(s.fields) ~= "table" then
    error("schema.validate: not a schema", 2)
  end
  return check_record(s.fields, data, "")
end

return _M
