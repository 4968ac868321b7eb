-- jollyjet.openapi_html: an OpenAPI document rendered as one self-contained
-- HTML page (GET /docs): tags, operations, parameters, request bodies,
-- responses with their headers, and the components. No script and no
-- external resource: the only inline element is one <style>, whose hash the
-- handler puts in the page's Content-Security-Policy.
--
--   html, css = openapi_html.render(doc)   -- the page and the text of its <style>
local openapi = require "jollyjet.openapi"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local concat, sort = table.concat, table.sort
local math_type, fmt = math.type, string.format

local _M = {}

local CSS = [[
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dee8;--bg:#f6f7fa;--card:#fff;--accent:#1f5fbf}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#14213d;color:#fff;padding:18px 28px}
header h1{margin:0;font-size:24px}
header p{margin:4px 0 0;color:#c9d3e8}
header a{color:#9cc3ff}
.layout{display:flex;align-items:flex-start}
nav{position:sticky;top:0;width:300px;max-height:100vh;overflow:auto;padding:16px;border-right:1px solid var(--line);
background:var(--card);font-size:13px}
nav h3{margin:14px 0 4px;font-size:13px;text-transform:uppercase;color:var(--muted)}
nav ul{list-style:none;margin:0;padding:0}
nav li{margin:2px 0}
nav a{color:var(--fg);text-decoration:none}
nav a:hover{color:var(--accent)}
main{flex:1;min-width:0;padding:8px 28px 60px}
h2{margin:32px 0 8px;padding-bottom:4px;border-bottom:2px solid var(--line)}
.op{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 16px;margin:14px 0}
.op h3{margin:0 0 6px;font-size:17px;font-weight:600}
code,.path{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:13px}
.m{display:inline-block;min-width:62px;text-align:center;border-radius:4px;padding:1px 6px;margin-right:6px;
color:#fff;font:600 12px/1.6 ui-monospace,monospace;vertical-align:1px}
.m.get{background:#2f7d32}.m.post{background:#1f5fbf}.m.put{background:#a86400}.m.patch{background:#7a4fb5}
.m.delete{background:#b3261e}.m.head,.m.options{background:#555}
.summary{font-weight:600;margin:4px 0}
.desc{color:var(--muted);margin:4px 0 8px;white-space:pre-line}
table{border-collapse:collapse;width:100%;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
th{background:#eef1f6;font-weight:600}
.req{color:#b3261e;font-weight:700}
.sec{font-size:13px;margin:4px 0}
.sec b{color:#7a4fb5}
.code{font-weight:700;font-family:ui-monospace,monospace}
.kind{font-size:12px;text-transform:uppercase;color:var(--muted);margin:10px 0 2px;font-weight:600}
.comp{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px 16px;margin:12px 0}
.comp h3{margin:0 0 4px;font-size:16px}
.hdrs{margin:0;padding-left:16px}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#eef1f6;padding:6px 8px;border-radius:4px;margin:4px 0}
td{overflow-wrap:anywhere}
]]
_M.CSS = CSS

local ESC = { ["&"] = "&amp;", ["<"] = "&lt;", [">"] = "&gt;", ['"'] = "&quot;", ["'"] = "&#39;" }
local function esc(s) return (tostring(s):gsub("[&<>\"']", ESC)) end
_M.escape = esc

local function anchor(s) return (tostring(s):gsub("[^%w%-_]", "-")) end

local function json_value(v)
  if v == openapi.EMPTY_ARRAY then return "[]" end
  local t = type(v)
  if t == "string" then return '"' .. v .. '"' end
  if t == "number" and math_type(v) == "integer" then return fmt("%d", v) end
  if t == "number" then return fmt("%.14g", v) end
  if t == "table" then return openapi.encode(v) end
  return tostring(v)
end

-- "#/components/schemas/Product" -> a link to its section.
local function ref_link(r)
  local kind, name = r:match("^#/components/([%w]+)/(.+)$")
  if not kind then return "<code>" .. esc(r) .. "</code>" end
  local prefix = ({ schemas = "schema", responses = "response", parameters = "parameter", headers = "header",
                    securitySchemes = "security" })[kind] or kind
  return ('<a href="#%s-%s">%s</a>'):format(prefix, anchor(name), esc(name))
end

-- A schema's type in a few words (links for $ref).
local function type_text(s, depth)
  depth = depth or 0
  if type(s) ~= "table" then return "any" end
  if s["$ref"] then return ref_link(s["$ref"]) end
  if s.const ~= nil then return "<code>" .. esc(json_value(s.const)) .. "</code>" end
  if s.enum then
    local vals = {}
    for i, v in ipairs(s.enum) do vals[i] = "<code>" .. esc(json_value(v)) .. "</code>" end
    return "one of " .. concat(vals, " | ")
  end
  if s.allOf or s.oneOf or s.anyOf then
    local list, word = s.allOf or s.oneOf or s.anyOf, s.allOf and " + " or " | "
    local parts = {}
    for i, sub in ipairs(list) do parts[i] = depth < 3 and type_text(sub, depth + 1) or "…" end
    return concat(parts, word)
  end
  local t = s.type
  local names = type(t) == "table" and t or { t }
  local parts = {}
  for i, n in ipairs(names) do
    if n == "array" then
      parts[i] = "array of " .. (depth < 3 and type_text(s.items, depth + 1) or "…")
    elseif n == "object" and s.additionalProperties and type(s.additionalProperties) == "table" then
      parts[i] = "object of " .. type_text(s.additionalProperties, depth + 1)
    else
      parts[i] = esc(n or "any")
    end
  end
  return concat(parts, " | ")
end
_M.type_text = type_text

-- Constraints of a schema, in words (HTML).
local constraints
function constraints(s)
  if type(s) ~= "table" then return "" end
  local c = {}
  local function range(lo, hi, unit)
    if lo and hi then c[#c + 1] = json_value(lo) .. ".." .. json_value(hi) .. unit
    elseif lo then c[#c + 1] = "≥ " .. json_value(lo) .. unit
    elseif hi then c[#c + 1] = "≤ " .. json_value(hi) .. unit end
  end
  range(s.minLength, s.maxLength, " characters")
  range(s.minimum, s.maximum, "")
  range(s.minItems, s.maxItems, " items")
  range(s.minProperties, s.maxProperties, " fields")
  if s.format then c[#c + 1] = "format " .. s.format end
  if s.pattern then c[#c + 1] = "pattern <code>" .. esc(s.pattern) .. "</code>" end
  if s.default ~= nil then c[#c + 1] = "default <code>" .. esc(json_value(s.default)) .. "</code>" end
  if s.additionalProperties == false then c[#c + 1] = "no other fields" end
  if s.propertyNames then
    local pn = s.propertyNames
    c[#c + 1] = "names " .. json_value(pn.minLength or 0) .. ".." .. json_value(pn.maxLength or "∞") .. " characters"
  end
  for i = 1, #c do
    if not c[i]:find("<code>", 1, true) then c[i] = esc(c[i]) end
  end
  if type(s.items) == "table" and not s.items["$ref"] then   -- an array's items: their own constraints
    local inner = constraints(s.items)
    if inner ~= "" then c[#c + 1] = "each: " .. inner end
  end
  return concat(c, "; ")
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t or {}) do keys[#keys + 1] = k end
  sort(keys)
  return keys
end

-- A table of an object schema's properties (nested objects inline).
local function properties_table(out, s, depth)
  if type(s) ~= "table" or type(s.properties) ~= "table" then return end
  local required = {}
  for _, n in ipairs(s.required or {}) do required[n] = true end
  out[#out + 1] = "<table><tr><th>field</th><th>type</th><th>constraints</th><th>description</th></tr>"
  for _, name in ipairs(sorted_keys(s.properties)) do
    local p = s.properties[name]
    out[#out + 1] = ("<tr><td><code>%s</code>%s</td><td>%s</td><td>%s</td><td>%s"):format(
      esc(name), required[name] and ' <span class="req" title="required">*</span>' or "",
      type_text(p), constraints(p), esc(p.description or ""))
    if depth < 2 and type(p.properties) == "table" then properties_table(out, p, depth + 1) end
    out[#out + 1] = "</td></tr>"
  end
  out[#out + 1] = "</table>"
end

local function schema_block(out, s)
  out[#out + 1] = "<div>" .. type_text(s)
  local c = constraints(s)
  if c ~= "" then out[#out + 1] = " (" .. c .. ")" end
  out[#out + 1] = "</div>"
  if type(s) == "table" and s.description and not s["$ref"] then
    out[#out + 1] = '<p class="desc">' .. esc(s.description) .. "</p>"
  end
  if type(s) == "table" then
    properties_table(out, s, 0)
    for _, sub in ipairs(s.allOf or {}) do
      if not sub["$ref"] then properties_table(out, sub, 0) end
    end
  end
  if type(s) == "table" and s.example ~= nil then
    out[#out + 1] = '<div class="kind">example</div><pre><code>' .. esc(json_value(s.example)) .. "</code></pre>"
  end
end

-- expand_doc: show a referenced schema's fields here too (request bodies)
local function content_block(out, content, expand_doc)
  for _, ctype in ipairs(sorted_keys(content)) do
    local media = content[ctype]
    out[#out + 1] = "<div><code>" .. esc(ctype) .. "</code>: "
    local sch = media.schema
    if expand_doc and type(sch) == "table" and sch["$ref"] then
      out[#out + 1] = "<div>" .. type_text(sch) .. "</div>"
      sch = openapi.resolve(expand_doc, sch["$ref"]) or sch
    end
    schema_block(out, sch)
    if media.example ~= nil then
      out[#out + 1] = '<div class="kind">example</div><pre><code>' .. esc(json_value(media.example)) .. "</code></pre>"
    end
    out[#out + 1] = "</div>"
  end
end

local function parameters_table(out, doc, params)
  if #params == 0 then return end
  out[#out + 1] = '<div class="kind">parameters</div><table><tr><th>name</th><th>in</th><th>type</th>'
    .. "<th>constraints</th><th>description</th></tr>"
  for _, p in ipairs(params) do
    local r = p["$ref"] and openapi.resolve(doc, p["$ref"]) or p
    out[#out + 1] = ("<tr><td><code>%s</code>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>"):format(
      esc(r.name), r.required and ' <span class="req" title="required">*</span>' or "", esc(r["in"]),
      type_text(r.schema), constraints(r.schema), esc(r.description or ""))
  end
  out[#out + 1] = "</table>"
end

local function headers_list(out, doc, headers)
  local names = sorted_keys(headers)
  if #names == 0 then return end
  out[#out + 1] = '<ul class="hdrs">'
  for _, name in ipairs(names) do
    local h = headers[name]
    local r = h["$ref"] and openapi.resolve(doc, h["$ref"]) or h
    local shown = "<code>" .. esc(name) .. "</code>"
    if h["$ref"] then   -- the header's name, linked to its component
      local target = h["$ref"]:match("^#/components/headers/(.+)$")
      shown = target and ('<a href="#header-%s"><code>%s</code></a>'):format(anchor(target), esc(name))
        or (shown .. " (" .. ref_link(h["$ref"]) .. ")")
    end
    out[#out + 1] = ("<li>%s: %s</li>"):format(shown, esc(r.description or ""))
  end
  out[#out + 1] = "</ul>"
end

local function response_rows(out, doc, responses)
  out[#out + 1] = '<div class="kind">responses</div><table><tr><th>status</th><th>description</th>'
    .. "<th>headers</th><th>body</th></tr>"
  for _, code in ipairs(sorted_keys(responses)) do
    local r = responses[code]
    local resolved = r["$ref"] and openapi.resolve(doc, r["$ref"]) or r
    out[#out + 1] = ('<tr><td class="code">%s</td><td>%s%s</td><td>'):format(esc(code),
      r["$ref"] and (ref_link(r["$ref"]) .. ": ") or "", esc(resolved.description or ""))
    headers_list(out, doc, resolved.headers)
    out[#out + 1] = "</td><td>"
    for _, ctype in ipairs(sorted_keys(resolved.content)) do
      out[#out + 1] = "<div><code>" .. esc(ctype) .. "</code> " .. type_text(resolved.content[ctype].schema) .. "</div>"
    end
    out[#out + 1] = "</td></tr>"
  end
  out[#out + 1] = "</table>"
end

local function security_text(doc, op)
  if not op.security then return nil end
  local names, optional = {}, false
  for _, req in ipairs(op.security) do
    local any = false
    for name in pairs(req) do
      any = true
      local scheme = doc.components.securitySchemes[name] or {}
      local what = scheme.type == "http" and ("Authorization: " .. (scheme.scheme == "bearer" and "Bearer" or
        tostring(scheme.scheme))) or (scheme["in"] == "cookie" and ("cookie " .. tostring(scheme.name)))
        or tostring(name)
      names[#names + 1] = ref_link("#/components/securitySchemes/" .. name) .. " (" .. esc(what) .. ")"
    end
    if not any then optional = true end
  end
  return (optional and "optional: " or "requires: ") .. concat(names, " or ")
end

local function operation(out, doc, path, method, op, path_params)
  local id = op.operationId or (method .. path)
  out[#out + 1] = ('<article class="op" id="op-%s"><h3><span class="m %s">%s</span><span class="path">%s</span></h3>')
    :format(anchor(id), method, method:upper(), esc(path))
  if op.summary then out[#out + 1] = '<p class="summary">' .. esc(op.summary) .. "</p>" end
  if op.description then out[#out + 1] = '<p class="desc">' .. esc(op.description) .. "</p>" end
  out[#out + 1] = '<p class="sec">operationId <code>' .. esc(id) .. "</code></p>"
  local sec = security_text(doc, op)
  if sec then out[#out + 1] = '<p class="sec"><b>auth</b> ' .. sec .. "</p>" end
  local params = {}
  for _, p in ipairs(path_params or {}) do params[#params + 1] = p end
  for _, p in ipairs(op.parameters or {}) do params[#params + 1] = p end
  parameters_table(out, doc, params)
  if op.requestBody then
    local b = op.requestBody
    out[#out + 1] = '<div class="kind">request body' .. (b.required and " (required)" or " (optional)") .. "</div>"
    content_block(out, b.content or {}, doc)
  end
  response_rows(out, doc, op.responses or {})
  out[#out + 1] = "</article>"
end

local function paragraphs(out, text)
  for para in (text or ""):gmatch("[^\n]+") do out[#out + 1] = "<p>" .. esc(para) .. "</p>" end
end

function _M.render(doc)
  if type(doc) ~= "table" or type(doc.paths) ~= "table" then error("openapi_html.render: expected a document", 2) end
  local ops = openapi.operations(doc)
  local by_tag, tag_order, tag_desc = {}, {}, {}
  for _, t in ipairs(doc.tags or {}) do
    tag_order[#tag_order + 1] = t.name
    tag_desc[t.name] = t.description
    by_tag[t.name] = {}
  end
  for _, o in ipairs(ops) do
    local tag = (o.op.tags or {})[1] or "other"
    if not by_tag[tag] then
      by_tag[tag] = {}
      tag_order[#tag_order + 1] = tag
    end
    local list = by_tag[tag]
    list[#list + 1] = o
  end

  local title = (doc.info.title or "API") .. " " .. (doc.info.version or "")
  local out = {
    '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
    '<meta name="viewport" content="width=device-width, initial-scale=1">',
    "<title>" .. esc(title) .. "</title>",
    "<style>" .. CSS .. "</style></head><body>",
    "<header><h1>" .. esc(doc.info.title or "API") .. " <small>" .. esc(doc.info.version or "") .. "</small></h1>",
    "<p>OpenAPI " .. esc(doc.openapi) .. ' · <a href="/openapi.json">/openapi.json</a> · '
      .. '<a href="/dashboard">/dashboard</a></p></header>',
    '<div class="layout"><nav><h3>Contents</h3>',
  }
  for _, tag in ipairs(tag_order) do
    if #by_tag[tag] > 0 then
      out[#out + 1] = ('<h3><a href="#tag-%s">%s</a></h3><ul>'):format(anchor(tag), esc(tag))
      for _, o in ipairs(by_tag[tag]) do
        out[#out + 1] = ('<li><a href="#op-%s"><span class="m %s">%s</span>%s</a></li>'):format(
          anchor(o.op.operationId or (o.method .. o.path)), o.method, o.method:upper(), esc(o.path))
      end
      out[#out + 1] = "</ul>"
    end
  end
  out[#out + 1] = '<h3><a href="#components">Components</a></h3></nav><main>'
  paragraphs(out, doc.info.description)
  for _, tag in ipairs(tag_order) do
    if #by_tag[tag] > 0 then
      out[#out + 1] = ('<section id="tag-%s"><h2>%s</h2>'):format(anchor(tag), esc(tag))
      if tag_desc[tag] then out[#out + 1] = '<p class="desc">' .. esc(tag_desc[tag]) .. "</p>" end
      for _, o in ipairs(by_tag[tag]) do
        operation(out, doc, o.path, o.method, o.op, doc.paths[o.path].parameters)
      end
      out[#out + 1] = "</section>"
    end
  end

  local comp = doc.components or {}
  out[#out + 1] = '<section id="components"><h2>Components</h2><h2>Schemas</h2>'
  for _, name in ipairs(sorted_keys(comp.schemas)) do
    out[#out + 1] = ('<div class="comp" id="schema-%s"><h3>%s</h3>'):format(anchor(name), esc(name))
    schema_block(out, comp.schemas[name])
    out[#out + 1] = "</div>"
  end
  out[#out + 1] = "<h2>Responses</h2>"
  for _, name in ipairs(sorted_keys(comp.responses)) do
    local r = comp.responses[name]
    out[#out + 1] = ('<div class="comp" id="response-%s"><h3>%s</h3><p class="desc">%s</p>'):format(
      anchor(name), esc(name), esc(r.description or ""))
    headers_list(out, doc, r.headers)
    content_block(out, r.content or {})
    out[#out + 1] = "</div>"
  end
  out[#out + 1] = "<h2>Parameters</h2><table><tr><th>component</th><th>name</th><th>in</th><th>type</th>"
    .. "<th>description</th></tr>"
  for _, name in ipairs(sorted_keys(comp.parameters)) do
    local p = comp.parameters[name]
    out[#out + 1] = ('<tr id="parameter-%s"><td>%s</td><td><code>%s</code></td><td>%s</td><td>%s</td><td>%s</td></tr>')
      :format(anchor(name), esc(name), esc(p.name), esc(p["in"]), type_text(p.schema), esc(p.description or ""))
  end
  out[#out + 1] = "</table><h2>Headers</h2><table><tr><th>component</th><th>type</th><th>description</th></tr>"
  for _, name in ipairs(sorted_keys(comp.headers)) do
    local h = comp.headers[name]
    out[#out + 1] = ('<tr id="header-%s"><td><code>%s</code></td><td>%s</td><td>%s</td></tr>'):format(
      anchor(name), esc(name), type_text(h.schema), esc(h.description or ""))
  end
  out[#out + 1] = "</table><h2>Security schemes</h2><table><tr><th>name</th><th>type</th><th>description</th></tr>"
  for _, name in ipairs(sorted_keys(comp.securitySchemes)) do
    local s = comp.securitySchemes[name]
    local what = s.type == "http" and ("http " .. tostring(s.scheme)) or
      (s.type .. (s["in"] and (" in " .. s["in"] .. " " .. tostring(s.name)) or ""))
    out[#out + 1] = ('<tr id="security-%s"><td><code>%s</code></td><td>%s</td><td>%s</td></tr>'):format(
      anchor(name), esc(name), esc(what), esc(s.description or ""))
  end
  out[#out + 1] = "</table></section></main></div></body></html>\n"
  return concat(out), CSS
end

return _M
