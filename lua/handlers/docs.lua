-- The API's own description and the live dashboard:
--   GET /openapi.json   the OpenAPI 3.1 document (jollyjet.openapi), ETag, Cache-Control
--   GET /docs           that document as a self-contained HTML page (jollyjet.openapi_html)
--   GET /dashboard      LUA_DIR/static/dashboard.html: charts fed by GET /metrics and GET /health
--
-- Everything is built once per generation, when this file loads (a reload
-- picks up a new document, page or policy), and answered from memory with a
-- strong ETag; If-None-Match answers 304.
--
-- Content-Security-Policy: the pages load nothing from anywhere else. Their
-- inline <style> and <script> are allowed by their SHA-256 hashes, computed
-- here from the very text served: no 'unsafe-inline' and no per-response
-- nonce, so the pages stay cacheable and an injected script or style (which
-- has no matching hash) would not run. The dashboard may only fetch from its
-- own origin (connect-src 'self'), /docs has no script at all.
local core = require "engine.core"
local openapi = require "jollyjet.openapi"
local openapi_html = require "jollyjet.openapi_html"
local response_cache = require "jollyjet.response_cache"
local sha256 = require "jollyjet.sha256"

local error, ipairs, pairs, tostring, open = error, ipairs, pairs, tostring, io.open
local concat = table.concat

-- A page ready to serve: body, ETag and headers.
local function page(body, content_type, cache_control, csp)
  local headers = {
    ["Content-Type"] = content_type,
    ["Cache-Control"] = cache_control,
    ["X-Content-Type-Options"] = "nosniff",
  }
  if csp then
    headers["Content-Security-Policy"] = csp
    headers["Referrer-Policy"] = "no-referrer"
    headers["X-Frame-Options"] = "DENY"
  end
  return { body = body, etag = response_cache.etag(body), headers = headers }
end

-- The CSP of a page: hash sources of its inline <script> and <style> elements.
local function csp_for(html, extra)
  local scripts, styles = {}, {}
  html = html:gsub("<!%-%-.-%-%->", "")   -- what comments mention is not an element
  for text in html:gmatch("<script>(.-)</script>") do scripts[#scripts + 1] = sha256.csp_source(text) end
  for text in html:gmatch("<style>(.-)</style>") do styles[#styles + 1] = sha256.csp_source(text) end
  local parts = { "default-src 'self'" }
  parts[#parts + 1] = "script-src " .. (#scripts > 0 and concat(scripts, " ") or "'none'")
  parts[#parts + 1] = "style-src " .. (#styles > 0 and concat(styles, " ") or "'none'")
  for _, d in ipairs(extra) do parts[#parts + 1] = d end
  parts[#parts + 1] = "object-src 'none'"
  parts[#parts + 1] = "base-uri 'none'"
  parts[#parts + 1] = "form-action 'none'"
  parts[#parts + 1] = "frame-ancestors 'none'"
  return concat(parts, "; ")
end

local doc = openapi.document()
local spec = page(openapi.encode(doc), "application/json", "public, max-age=60")

local docs_html = openapi_html.render(doc)
local docs = page(docs_html, "text/html; charset=utf-8", "no-cache",
  csp_for(docs_html, { "img-src 'self' data:", "connect-src 'none'" }))

local DASHBOARD = core.config().lua_dir .. "/static/dashboard.html"
local f, ferr = open(DASHBOARD, "rb")
if not f then error(DASHBOARD .. ":1: cannot read the dashboard page: " .. tostring(ferr), 0) end
local dashboard_html = f:read("a")
f:close()
local dashboard = page(dashboard_html, "text/html; charset=utf-8", "no-cache",
  csp_for(dashboard_html, { "img-src 'self' data:", "connect-src 'self'" }))

local function serve(p)
  return function(req)
    local inm = req.headers and req.headers["if-none-match"]
    local h = { ETag = p.etag }
    for k, v in pairs(p.headers) do h[k] = v end
    if inm and response_cache.not_modified(inm, p.etag) then
      h["Content-Type"] = nil
      return 304, "", h
    end
    return 200, p.body, h
  end
end

return {
  routes = {
    { "GET", "/openapi.json", serve(spec) },
    { "GET", "/docs", serve(docs) },
    { "GET", "/dashboard", serve(dashboard) },
  },
}
