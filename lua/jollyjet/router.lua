-- jollyjet.router: method + path routing with {param} segments.
--
--   local r = router.new()
--   r:add("GET", "/api/products/{id}", handler)
--   local route, params, allow = r:match("GET", "/api/products/42")
--
-- Static segments win over parameters; HEAD falls back to GET; a path that
-- exists with other methods yields route == nil and `allow` (for 405).
local type, error, pairs, ipairs = type, error, pairs, ipairs
local concat, sort, char, tonumber = table.concat, table.sort, string.char, tonumber

local _M = {}
local mt = { __index = _M }

local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true,
                  DELETE = true, OPTIONS = true }

function _M.new()
  return setmetatable({ root = { static = {} }, routes = {} }, mt)
end

local function split(path)
  local segs = {}
  for seg in path:gmatch("[^/]+") do segs[#segs + 1] = seg end
  return segs
end

-- r:add(method, pattern, handler, meta?) -- raises on misuse or conflict.
function _M:add(method, pattern, handler, meta)
  if not METHODS[method] then error("router: unknown method " .. tostring(method), 2) end
  if type(pattern) ~= "string" or pattern:sub(1, 1) ~= "/" then
    error("router: pattern must start with '/': " .. tostring(pattern), 2)
  end
  if type(handler) ~= "function" then error("router: handler for " .. pattern .. " is not a function", 2) end
  local node = self.root
  for _, seg in ipairs(split(pattern)) do
    local name = seg:match("^{([%a_][%w_]*)}$")
    if name then
      if node.param and node.param.name ~= name then
        error(("router: %s: parameter {%s} conflicts with {%s}"):format(pattern, name, node.param.name), 2)
      end
      node.param = node.param or { name = name, node = { static = {} } }
      node = node.param.node
    elseif seg:find("[{}]") then
      error("router: malformed segment '" .. seg .. "' in " .. pattern, 2)
    else
      node.static[seg] = node.static[seg] or { static = {} }
      node = node.static[seg]
    end
  end
  node.methods = node.methods or {}
  if node.methods[method] then error("router: duplicate route " .. method .. " " .. pattern, 2) end
  local route = { method = method, pattern = pattern, handler = handler, meta = meta or {} }
  node.methods[method] = route
  self.routes[#self.routes + 1] = route
  return route
end

local function unescape(seg)
  if not seg:find("%", 1, true) then return seg end
  -- every '%' must start a %XX escape
  if seg:gsub("%%%x%x", ""):find("%", 1, true) then return nil end
  local out = seg:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end)
  if out:find("\0", 1, true) then return nil end
  return out
end

local function walk(node, segs, i, params)
  if i > #segs then return node end
  local seg = segs[i]
  local child = node.static[seg]
  if child then
    local found = walk(child, segs, i + 1, params)
    if found and found.methods then return found end
  end
  if node.param then
    local value = unescape(seg)
    if value then
      local found = walk(node.param.node, segs, i + 1, params)
      if found and found.methods then
        params[node.param.name] = value
        return found
      end
    end
  end
  return nil
end

-- route, params, allow = r:match(method, path)
function _M:match(method, path)
  local params = {}
  local node = walk(self.root, split(path), 1, params)
  if not node or not node.methods then return nil, nil, nil end
  local route = node.methods[method] or (method == "HEAD" and node.methods.GET)
  if route then return route, params end
  local allow = {}
  for m in pairs(node.methods) do allow[#allow + 1] = m end
  if node.methods.GET and not node.methods.HEAD then allow[#allow + 1] = "HEAD" end
  sort(allow)
  return nil, nil, concat(allow, ", ")
end

return _M
