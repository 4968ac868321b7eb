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
local find, sub = string.find, string.sub

local _M = {}
local mt = { __index = _M }

local METHODS = { GET = true, HEAD = true, POST = true, PUT = true, PATCH = true,
                  DELETE = true, OPTIONS = true }

function _M.new()
  -- exact: pattern -> node for the patterns without a parameter, so that a
  -- static path is one table lookup (the walk below gives the same node)
  return setmetatable({ root = { static = {} }, routes = {}, exact = {} }, mt)
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
  local static = true
  for _, seg in ipairs(split(pattern)) do
    local name = seg:match("^{([%a_][%w_]*)}$")
    if name then
      if node.param and node.param.name ~= name then
        error(("router: %s: parameter {%s} conflicts with {%s}"):format(pattern, name, node.param.name), 2)
      end
      node.param = node.param or { name = name, node = { static = {} } }
      node = node.param.node
      static = false
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
  if static then self.exact[pattern] = node end
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

-- The node for the segments of path from position pos on (segments are
-- the runs of characters other than '/'; empty ones do not count).
local function walk(node, path, pos, params)
  local s, e = find(path, "[^/]+", pos)
  if not s then return node end
  local seg = sub(path, s, e)
  local child = node.static[seg]
  if child then
    local found = walk(child, path, e + 1, params)
    if found and found.methods then return found end
  end
  local param = node.param
  if param then
    local value = unescape(seg)
    if value then
      local found = walk(param.node, path, e + 1, params)
      if found and found.methods then
        params[param.name] = value
        return found
      end
    end
  end
  return nil
end

-- route, params, allow = r:match(method, path)
function _M:match(method, path)
  local params = {}
  local node = self.exact[path] or walk(self.root, path, 1, params)
  if not node or not node.methods then return nil, nil, nil end
  local methods = node.methods
  local route = methods[method] or (method == "HEAD" and methods.GET)
  if route then return route, params end
  local allow = {}
  for m in pairs(methods) do allow[#allow + 1] = m end
  if methods.GET and not methods.HEAD then allow[#allow + 1] = "HEAD" end
  sort(allow)
  return nil, nil, concat(allow, ", ")
end

return _M
