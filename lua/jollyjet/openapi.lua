-- jollyjet.openapi: the OpenAPI 3.1 description of every route, as data.
--
--   doc  = openapi.build()        -- a fresh document (a table) for this generation
--   doc  = openapi.document()     -- the same, built once per generation
--   json = openapi.encode(v)      -- deterministic JSON (keys in a fixed order)
--   ops  = openapi.operations(doc) -- { {path=, method=, op=}, ... } sorted by path, then method
--   obj  = openapi.resolve(doc, ref) -- the object a "#/..." $ref points at, or nil
--
-- GET /openapi.json serves it (lua/handlers/docs.lua), GET /docs renders it
-- (jollyjet.openapi_html). The limits come from the code that enforces them
-- (jollyjet.catalog), the cookie name and session data limit from
-- policies/sessions.lua, the body limit from MAX_BODY_BYTES and
-- info.version from core.info(), so the document follows the engine it
-- describes. spec/openapi_spec.lua checks it is structurally valid and that
-- every route the router serves is in it with the same method.
--
-- Routes of other branches (GET /metrics, /health/live, /health/ready, the
-- admin API) are described here too, from the shared contract; their
-- shapes are the contract's, the detail is each route's own.
local core = require "engine.core"
local catalog = require "jollyjet.catalog"
local policy = require "jollyjet.policy"
local cjson = require "cjson.safe"

local type, pairs, ipairs, tostring, error, setmetatable = type, pairs, ipairs, tostring, error, setmetatable
local math_type, fmt, huge = math.type, string.format, math.huge
local concat, sort = table.concat, table.sort
local json_string = catalog.json_string   -- escapes '"', '\\' and control characters; no "\/"

local _M = {}

-- An empty JSON array ("security": [{"adminBearer": []}]); an empty Lua
-- table is encoded as an object. (Debian's lua-cjson 2.1.0 has no
-- cjson.empty_array: this is our own marker, known only to encode.)
local EMPTY_ARRAY = setmetatable({}, { __newindex = function() error("openapi.EMPTY_ARRAY is read-only", 2) end })
_M.EMPTY_ARRAY = EMPTY_ARRAY

-- ------------------------------------------------------------ encoding

-- Keys are written in this order, then the others alphabetically (paths,
-- status codes, property names): the text, and so the ETag, is the same in
-- every worker and generation (Lua's own table order is not).
local ORDER = {
  "openapi", "info", "jsonSchemaDialect", "servers", "tags", "paths", "components",
  "title", "version", "name", "in", "summary", "description", "operationId", "url", "externalDocs",
  "security", "required", "deprecated", "parameters",
  "get", "head", "post", "put", "patch", "delete", "options",
  "requestBody", "responses", "headers", "content", "schema", "style", "explode",
  "$ref", "type", "const", "enum", "format", "pattern", "minLength", "maxLength", "minimum", "maximum",
  "minItems", "maxItems", "minProperties", "maxProperties", "propertyNames", "properties", "items",
  "additionalProperties", "oneOf", "anyOf", "allOf", "default", "example", "examples",
  "schemas", "securitySchemes",
}
local RANK = {}
for i, k in ipairs(ORDER) do RANK[k] = i end

local function key_before(a, b)
  local ra, rb = RANK[a], RANK[b]
  if ra and rb then return ra < rb end
  if ra or rb then return ra ~= nil end
  return a < b
end

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  for k in pairs(t) do
    if math_type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

-- Objects whose keys are names (property names, paths, status codes, ...)
-- keep plain alphabetical order.
local NAME_MAPS = { properties = true, paths = true, schemas = true, responses = true, headers = true,
                    parameters = true, securitySchemes = true, content = true, examples = true }

local function plain_before(a, b) return a < b end

local function encode(v, out, names)
  local t = type(v)
  if v == EMPTY_ARRAY then
    out[#out + 1] = "[]"
  elseif t == "table" then
    if is_array(v) then
      out[#out + 1] = "["
      for i, item in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        encode(item, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" then error("openapi.encode: object key " .. tostring(k) .. " is not a string", 0) end
        keys[#keys + 1] = k
      end
      sort(keys, names and plain_before or key_before)
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = json_string(k)
        out[#out + 1] = ":"
        encode(v[k], out, not names and NAME_MAPS[k] or false)
      end
      out[#out + 1] = "}"
    end
  elseif t == "number" and math_type(v) == "integer" then
    out[#out + 1] = fmt("%d", v)
  elseif t == "number" then
    if v ~= v or v == huge or v == -huge then error("openapi.encode: " .. tostring(v) .. " is not JSON", 0) end
    out[#out + 1] = fmt("%.14g", v)
  elseif t == "string" then
    out[#out + 1] = json_string(v)
  elseif t == "boolean" then
    out[#out + 1] = v and "true" or "false"
  elseif v == cjson.null then
    out[#out + 1] = "null"
  else
    error("openapi.encode: cannot encode a " .. t, 0)
  end
end

function _M.encode(v)
  local out = {}
  encode(v, out)
  return concat(out)
end

-- ------------------------------------------------------------ helpers

local function ref(kind, name) return { ["$ref"] = "#/components/" .. kind .. "/" .. name } end
local function schema(name) return ref("schemas", name) end
local function param(name) return ref("parameters", name) end

local function json_body(s, example)
  return { ["application/json"] = { schema = s, example = example } }
end

-- A response: description, then header names (component name, or
-- { header = "Set-Cookie", component = "SetSessionCookie" }); every
-- response carries X-Request-Id.
local function response(description, content, header_list)
  local h = { ["X-Request-Id"] = ref("headers", "X-Request-Id") }
  for _, name in ipairs(header_list or {}) do
    if type(name) == "table" then
      h[name.header] = ref("headers", name.component)
    else
      h[name] = ref("headers", name)
    end
  end
  return { description = description, headers = h, content = content }
end

local RATELIMIT_HEADERS = { "RateLimit-Policy", "RateLimit", "X-RateLimit-Limit", "X-RateLimit-Remaining",
                            "X-RateLimit-Reset" }

local function with(list, ...)
  local out = {}
  for _, v in ipairs(list) do out[#out + 1] = v end
  for _, v in ipairs({ ... }) do out[#out + 1] = v end
  return out
end

-- An operation. o: tag, id, summary, description, params, body, responses,
-- limited (a /api/ route: rate-limit headers and 429), admin (bearer
-- token), session (the session cookie, optional).
local function operation(o)
  local responses = o.responses
  if o.admin then
    responses["503"] = responses["503"] or ref("responses", "AdminUnavailable")
    for code, r in pairs(responses) do
      if code:match("^2") and r.headers then r.headers["Cache-Control"] = ref("headers", "Cache-Control") end
    end
  end
  if o.limited then
    for code, r in pairs(responses) do
      if code:match("^[23]") and r.headers then
        for _, name in ipairs(RATELIMIT_HEADERS) do r.headers[name] = ref("headers", name) end
      end
    end
    responses["429"] = responses["429"] or ref("responses", "TooManyRequests")
    responses["503"] = responses["503"] or ref("responses", "ServiceUnavailable")
  end
  if o.admin then
    responses["401"] = ref("responses", "Unauthorized")
    responses["404"] = responses["404"] or ref("responses", "AdminDisabled")
  end
  if o.body then responses["413"] = ref("responses", "PayloadTooLarge") end
  responses.default = ref("responses", "Error")
  local security
  if o.admin then
    security = { { adminBearer = EMPTY_ARRAY } }
  elseif o.session then
    security = { { sessionCookie = EMPTY_ARRAY }, {} }   -- optional: {} = without one
  end
  return {
    tags = { o.tag },
    summary = o.summary,
    description = o.description,
    operationId = o.id,
    security = security,
    parameters = o.params,
    requestBody = o.body,
    responses = responses,
  }
end

-- ------------------------------------------------------------ schemas

local function text_schema(min, max, description)
  local s = { type = "string", maxLength = max, description = description }
  if min > 0 then
    s.minLength = min
    s.pattern = "\\S"   -- not only white space
  end
  return s
end

local function product_input_properties()
  local price_max = catalog.PRICE_MAX_CENTS / 100
  return {
    name = text_schema(1, catalog.NAME_MAX, ("Not blank, at most %d characters (UTF-8)."):format(catalog.NAME_MAX)),
    description = text_schema(0, catalog.DESCRIPTION_MAX,
      ("At most %d characters; default \"\" on create."):format(catalog.DESCRIPTION_MAX)),
    price = { type = "number", minimum = 0, maximum = price_max,
              description = "At most 2 decimal places (stored as integer cents): 19.99 is accepted, "
                .. "1.005 or 0.1 + 0.2 are refused. Maximum " .. catalog.price_json(catalog.PRICE_MAX_CENTS) .. ".",
              example = 19.99 },
    stock = { type = "integer", minimum = 0, maximum = catalog.STOCK_MAX, description = "Default 0 on create." },
    category = text_schema(1, catalog.CATEGORY_MAX,
      ("Not blank, at most %d characters; list filters match it exactly."):format(catalog.CATEGORY_MAX)),
    images = { type = "array", maxItems = catalog.IMAGES_MAX, description = "Default [] on create.",
               items = { type = "string", format = "uri", maxLength = catalog.IMAGE_URL_MAX,
                         pattern = "^[Hh][Tt][Tt][Pp][Ss]?://[^\\s/?#]\\S*$",
                         description = "An http(s) URL without white space." } },
    isActive = { type = "boolean", description = "Default true on create." },
  }
end

local function schemas(sess)
  local s = {}
  s.Error = {
    type = "object",
    description = "The one error shape of every error response.",
    required = { "success", "error", "message" },
    properties = {
      success = { const = false },
      error = { type = "string", description = "A stable machine-readable code, e.g. not_found, validation_failed, "
        .. "invalid_json, payload_too_large, unavailable." },
      message = { type = "string", description = "For people; may change." },
      details = { description = "More about the error; for validation_failed a list of FieldError." },
      requestId = { type = "string", description = "Set on errors the server answers before Lua (the X-Request-Id)." },
    },
    example = { success = false, error = "not_found", message = "no product p-9999" },
  }
  s.FieldError = {
    type = "object", required = { "field", "message" },
    properties = {
      field = { type = "string", description = "The field: name, price, images[2], ... or an unknown field's name." },
      message = { type = "string", example = "is required" },
    },
  }
  s.ValidationError = {
    description = "400: validation_failed (with details), invalid_json (empty or malformed body), "
      .. "invalid_body (not a JSON object), bad_request (malformed query string).",
    allOf = {
      schema("Error"),
      { type = "object", properties = {
        error = { enum = { "validation_failed", "invalid_json", "invalid_body", "bad_request" } },
        details = { type = "array", items = schema("FieldError") },
      } },
    },
    example = { success = false, error = "validation_failed", message = "invalid input: price is required",
                details = { { field = "price", message = "is required" } } },
  }
  s.RateLimitExceeded = {
    type = "object",
    description = "The 429 body (note: error is the text \"Rate limit exceeded\", not a snake_case code).",
    required = { "success", "error", "message", "retryAfter" },
    properties = {
      success = { const = false },
      error = { const = "Rate limit exceeded" },
      message = { type = "string", description = "The policy's message (policies/ratelimits.lua)." },
      retryAfter = { type = "integer", minimum = 1, description = "Seconds; the same as Retry-After." },
    },
    example = { success = false, error = "Rate limit exceeded",
                message = "Too many requests, please try again later.", retryAfter = 18 },
  }
  s.Product = {
    type = "object",
    required = { "id", "name", "description", "price", "stock", "category", "images", "isActive",
                 "wishlistCount", "version", "createdAt", "updatedAt" },
    properties = {
      id = { type = "string", pattern = "^[A-Za-z0-9_-]{1,64}$", example = "p-0001" },
      name = { type = "string" },
      description = { type = "string" },
      price = { type = "number", minimum = 0, description = "Exact: written from integer cents (19.99, 10.5, 10)." },
      stock = { type = "integer", minimum = 0 },
      category = { type = "string" },
      images = { type = "array", items = { type = "string", format = "uri" } },
      isActive = { type = "boolean" },
      wishlistCount = { type = "integer", minimum = 0 },
      version = { type = "integer", minimum = 1, description = "+1 on every change (update, wishlist toggle)." },
      createdAt = { type = "string", format = "date-time" },
      updatedAt = { type = "string", format = "date-time" },
    },
    example = { id = "p-0001", name = "Classic Headphones", description = "Reliable electronics.",
                price = 19.99, stock = 12, category = "electronics", images = { "https://img.example/p-0001.jpg" },
                isActive = true, wishlistCount = 0, version = 1, createdAt = "2024-01-01T00:00:00.000Z",
                updatedAt = "2024-01-01T00:00:00.000Z" },
  }
  s.ProductCreate = {
    type = "object",
    description = "Unknown fields are refused (\"unknown field\"), the read-only ones (id, wishlistCount, version, "
      .. "createdAt, updatedAt) with \"is read-only\"; every problem is listed in details.",
    required = { "name", "price", "category" },
    properties = product_input_properties(),
    additionalProperties = false,
    example = { name = "Test Kettle", price = 19.99, category = "home", stock = 5 },
  }
  s.ProductUpdate = {
    type = "object",
    description = "A partial update: only the fields present are written (PUT and PATCH alike); version goes "
      .. "up by 1. {} changes nothing and answers the current product. Validated before the id is looked up.",
    properties = product_input_properties(),
    additionalProperties = false,
    example = { price = 24.5, stock = 3 },
  }
  s.ProductList = {
    type = "object", required = { "products", "total", "page", "limit" },
    properties = {
      products = { type = "array", items = schema("Product"), description = "Newest first." },
      total = { type = "integer", minimum = 0, description = "Products matching the filters (all pages)." },
      page = { type = "integer", minimum = 1 },
      limit = { type = "integer", minimum = 1, maximum = catalog.LIMIT_MAX },
    },
  }
  s.WishlistToggle = {
    type = "object", required = { "productId", "wishlisted", "wishlistCount" },
    properties = {
      productId = { type = "string" },
      wishlisted = { type = "boolean", description = "true: added by this request; false: removed." },
      wishlistCount = { type = "integer", minimum = 0 },
    },
  }
  s.Wishlist = {
    type = "object", required = { "products" },
    properties = { products = { type = "array", items = schema("Product"), description = "Most recently added first." } },
  }
  s.SessionCreate = {
    type = "object",
    description = "The whole body is optional (empty body: a session without user or data).",
    additionalProperties = false,
    properties = {
      userId = { type = { "string", "null" }, minLength = 1, maxLength = 256,
                 description = "No control characters. The client's claim: there is no login yet." },
      data = { type = { "object", "null" }, maxProperties = 256,
               propertyNames = { minLength = 1, maxLength = 256 },
               description = ("At most %d bytes once encoded as JSON (policies/sessions.lua max_data_bytes)."):format(
                 sess.max_data_bytes) },
    },
    example = { userId = "u-42", data = { theme = "dark" } },
  }
  s.Session = {
    type = "object", required = { "userId", "data", "createdAt", "expiresAt" },
    description = "The session id is never in a body: only in the HttpOnly cookie.",
    properties = {
      userId = { type = { "string", "null" } },
      data = { type = "object" },
      createdAt = { type = "string", format = "date-time" },
      expiresAt = { type = "string", format = "date-time",
                    description = ("Slides by the policy ttl (%d s) on every read."):format(sess.ttl) },
    },
  }
  s.Health = {
    type = "object", required = { "status", "redis", "database", "policies", "worker", "version" },
    description = "The answering worker's view. status is \"degraded\" (still 200) while Redis is down.",
    properties = {
      status = { enum = { "ok", "degraded" } },
      redis = {
        type = "object", required = { "status" },
        properties = {
          status = { enum = { "up", "down" } },
          latency_ms = { type = { "number", "null" } },
          reconnects = { type = "integer", minimum = 0 },
          last_error = { type = { "string", "null" } },
          version = { type = { "string", "null" }, description = "Redis INFO redis_version (null while down)." },
          role = { type = { "string", "null" }, description = "master / slave (INFO)." },
          used_memory = { type = { "integer", "null" }, minimum = 0, description = "Bytes (INFO used_memory)." },
          maxmemory = { type = { "integer", "null" }, minimum = 0, description = "Bytes; 0 = no limit (INFO)." },
          connected_clients = { type = { "integer", "null" }, minimum = 0 },
        },
      },
      cache = {
        type = "object",
        properties = {
          epoch = { type = { "integer", "null" }, description = "The cache epoch (DELETE /api/cache moves it on)." },
          epoch_fresh = { type = "boolean", description = "This worker knows the current epoch." },
        },
      },
      database = {
        type = "object", required = { "status" },
        properties = { status = { enum = { "up", "down" } }, error = { type = { "string", "null" } } },
      },
      policies = {
        type = "object", required = { "generation" },
        properties = {
          generation = { type = "integer", minimum = 1, description = "+1 on every successful reload." },
          last_reload_error = { type = { "string", "null" }, description = "file:line: reason of a rejected reload." },
        },
      },
      worker = { type = "integer", minimum = 0 },
      version = { type = "string" },
    },
  }
  s.Liveness = {
    type = "object", required = { "status" },
    properties = { status = { const = "ok" } },
  }
  s.Readiness = {
    type = "object", required = { "status", "checks", "generation", "reasons" },
    properties = {
      status = { enum = { "ready", "not_ready" } },
      checks = { type = "object", properties = {
        redis = { enum = { "up", "down" } },
        database = { enum = { "up", "down" } },
        policies = { enum = { "loaded", "missing" } },
      } },
      generation = { type = "integer", minimum = 1 },
      reasons = { type = "array", items = { type = "string" }, description = "Why not ready; [] when ready." },
    },
    example = { status = "ready", checks = { redis = "up", database = "up", policies = "loaded" }, generation = 1,
                reasons = EMPTY_ARRAY },
  }
  local counters = {}
  for _, f in ipairs({ "cacheHits", "cacheMisses", "staleReads", "loaderCalls", "coalescedWaits", "leaseWaits",
                       "bypassed", "invalidations", "staleFillsRefused", "negativeFills", "loaderErrors",
                       "redisErrors", "earlyRefreshes", "tagMisses" }) do
    counters[f] = { type = "integer", minimum = 0 }
  end
  counters.hitRate = { type = "number", minimum = 0, maximum = 100, description = "Percent, 2 decimals." }
  s.CacheNamespaceMetrics = { type = "object", properties = counters }
  local overall = {}
  for k, v in pairs(counters) do overall[k] = v end
  overall.success = { const = true }
  overall.l1Hits = { type = "integer", minimum = 0 }
  overall.l2Hits = { type = "integer", minimum = 0 }
  overall.journaledInvalidations = { type = "integer", minimum = 0 }
  overall.fastPathHits = { type = "integer", minimum = 0, description = "Hits the C host answered without Lua." }
  overall.namespaces = { type = "object", additionalProperties = schema("CacheNamespaceMetrics") }
  overall.consistencyChecks = { type = "integer", minimum = 0, description = "Entries the verifier compared." }
  overall.consistencyErrors = { type = "integer", minimum = 0 }
  overall.consistencyRepairs = { type = "integer", minimum = 0 }
  overall.consistencyScore = { type = "number", minimum = 0, maximum = 100,
                               description = "Percent of checked entries that matched (100 before any check)." }
  overall.lastVerification = { type = "object", properties = {
    time = { type = { "string", "null" }, format = "date-time" },
    checked = { type = "integer", minimum = 0 },
    errors = { type = "integer", minimum = 0 },
  } }
  overall.alerts = { type = "array", description = "Alerts firing now (policies/monitoring.lua).", items = {
    type = "object", required = { "name" },
    properties = {
      name = { type = "string", example = "hit_ratio_low" },
      since = { type = { "string", "null" }, format = "date-time" },
      threshold = { type = "number" },
      description = { type = "string" },
    },
  } }
  s.CacheMetrics = {
    type = "object", required = { "success", "cacheHits", "cacheMisses", "hitRate", "namespaces" },
    description = "Summed over every worker of this instance.",
    properties = overall,
  }
  local function admin_object(required, props, description)
    props.success = { const = true }
    local req = { "success" }
    for _, r in ipairs(required) do req[#req + 1] = r end
    return { type = "object", required = req, properties = props, description = description }
  end
  local nint = { type = { "integer", "null" } }
  local nnum = { type = { "number", "null" } }
  local nstr = { type = { "string", "null" } }
  local count = { type = "integer", minimum = 0 }
  s.CacheStats = admin_object({ "redis", "engine" }, {
    redis = { type = "object", required = { "status" },
      description = "From Redis INFO; {\"status\":\"down\",\"error\":...} while Redis is down.",
      properties = {
        status = { enum = { "up", "down" } }, error = { type = "string" },
        version = nstr, mode = nstr, role = nstr, uptimeSeconds = nint, usedMemory = nint, usedMemoryHuman = nstr,
        usedMemoryPeak = nint, maxmemory = nint, maxmemoryPolicy = nstr, fragmentationRatio = nnum,
        connectedClients = nint, keyspaceHits = count, keyspaceMisses = count,
        hitRate = { type = "number", minimum = 0, maximum = 100 }, evictedKeys = nint, expiredKeys = nint,
        opsPerSecond = nint, totalCommands = nint,
        keyspace = { type = "object", description = "INFO keyspace by database: {\"db0\":{\"keys\",\"expires\",\"avg_ttl\"}}.",
                     additionalProperties = { type = "object" } },
      } },
    engine = { type = "object", properties = {
      worker = { type = "integer" }, pid = { type = "integer" }, generation = { type = "integer" },
      version = { type = "string" }, cacheEpoch = nint, cacheEpochFresh = { type = "boolean" },
      l1 = { type = "object", description = "This worker's L1 caches by namespace.", additionalProperties = {
        type = "object", properties = { items = count, bytes = count, maxItems = count, maxBytes = count,
                                        hits = count, misses = count, evictions = count } } },
      cache = { type = "object", description = "Summed over the workers.", properties = {
        hits = count, misses = count, hitRate = { type = "number", minimum = 0, maximum = 100 }, stale = count,
        bypassed = count, loaderCalls = count, purges = count, fastPathHits = count, tagInvalidations = count } },
    } },
  })
  s.CachePurged = admin_object({ "epoch", "message" }, {
    epoch = { type = "integer", minimum = 1, description = "The new cache epoch." }, message = { type = "string" },
  })
  s.TagInvalidated = admin_object({ "tag", "journaled", "message" }, {
    tag = { type = "string" }, message = { type = "string" },
    journaled = { type = "boolean", description = "true: Redis was down; applied when it returns." },
  })
  s.CacheKeyPage = admin_object({ "keys", "count", "cursor", "complete", "prefix" }, {
    keys = { type = "array", items = { type = "string", example = "product:p-0001" }, description = "\"ns:key\", sorted." },
    count = count,
    cursor = { type = "string", pattern = "^[0-9]+$", description = "Pass it back for the next page; \"0\" when done." },
    complete = { type = "boolean" },
    prefix = { type = "string" },
    epoch = nint,
  }, "A page may be short, even empty, before the end: SCAN walks Redis's whole keyspace.")
  s.CacheEntry = admin_object({ "key", "namespace", "entry" }, {
    key = { type = "string" }, namespace = { type = "string" },
    entry = { type = "object", properties = {
      value = { type = { "string", "null" }, description = "The cached string." },
      version = nint, negative = { type = "boolean" }, state = { enum = { "fresh", "stale", "expired" } },
      expiresAt = { type = "number" }, ttl = { type = "number" }, redisTtlMs = { type = "integer" },
      storedAt = nnum, loadMs = { type = "number" },
      tags = { type = "object", additionalProperties = { type = "integer" },
               description = "Tag -> the generation recorded with the entry." },
      tagsCurrent = { type = "boolean" }, inL1 = { type = "boolean", description = "In this worker's L1." },
      epoch = { type = "integer" }, redisKey = { type = "string" },
    } },
  })
  s.CacheKeyDeleted = admin_object({ "key", "existed", "message" }, {
    key = { type = "string" }, message = { type = "string" },
    existed = { type = { "boolean", "null" }, description = "null when Redis could not say." },
  })
  s.RateLimitState = admin_object({ "rule", "key", "allowed", "limit", "remaining", "reset", "retryAfter" }, {
    rule = { type = "string" }, key = { type = "string" }, allowed = { type = "boolean" },
    limit = { type = "integer" }, remaining = { type = "integer" },
    reset = { type = "number", description = "Seconds until the budget is full again." },
    retryAfter = { type = "number" }, enabled = { type = "boolean", description = "Rate limiting is on." },
  }, "A budget as the limiter sees it, nothing consumed.")
  s.RateLimitReset = admin_object({ "rule", "key", "message" }, {
    rule = { type = "string" }, key = { type = "string" }, message = { type = "string" },
  })
  s.ReloadRequested = admin_object({ "generation", "message" }, {
    generation = { type = "integer", description = "The generation that was serving when asked." },
    message = { type = "string" },
  })
  return s
end

-- ------------------------------------------------------------ components

local function headers(sess)
  local cookie = sess.cookie
  local attrs = "Path=/; HttpOnly; SameSite=" .. cookie.same_site .. (cookie.secure and "; Secure" or "")
  local int = { type = "integer", minimum = 0 }
  return {
    ["X-Request-Id"] = { description = "This request's id (16 hex digits), also in the engine's log lines.",
                         schema = { type = "string", pattern = "^[0-9a-f]{16}$" } },
    ["X-Cache"] = { description = "Where the answer came from: HIT (fresh cache entry), STALE (an expired entry "
      .. "served while it is refreshed or while Redis is down), MISS (loaded now), BYPASS (the client sent "
      .. "Cache-Control: no-cache / no-store or Pragma: no-cache, or Redis is unusable).",
                    schema = { enum = { "HIT", "MISS", "STALE", "BYPASS" } } },
    Age = { description = "Whole seconds since the cached entry was stored (with HIT and STALE).", schema = int },
    ETag = { description = "A strong validator of the body; send it back in If-None-Match to get 304.",
             schema = { type = "string", example = "\"9f86d081884c7d65-1a2\"" } },
    ["Cache-Control"] = { description = "How the client may cache the response.", schema = { type = "string" } },
    Location = { description = "The URL of the created resource.", schema = { type = "string" } },
    Allow = { description = "The methods the path has (405).", schema = { type = "string", example = "GET, HEAD" } },
    ["WWW-Authenticate"] = { description = "Bearer (401 of the admin API); Bearer error=\"invalid_token\" when a "
      .. "wrong token was sent.", schema = { type = "string", example = "Bearer" } },
    ["Content-Security-Policy"] = { description = "Only the page's own inline script and style (by hash) and "
      .. "same-origin requests; nothing external.", schema = { type = "string" } },
    SetSessionCookie = { description = ("The session cookie: %s=<43 characters>; %s."):format(cookie.name, attrs),
                         schema = { type = "string" } },
    ClearSessionCookie = { description = ("Clears the session cookie (%s=; Max-Age=0)."):format(cookie.name),
                           schema = { type = "string" } },
    ["RateLimit-Policy"] = { description = "One item per rate-limit rule that applied (IETF ratelimit-headers "
      .. "draft): \"name\";q=<limit>;w=<window seconds>.", schema = { type = "string", example = "\"default\";q=100;w=60" } },
    RateLimit = { description = "One item per rule: \"name\";r=<remaining>;t=<seconds until full>.",
                  schema = { type = "string", example = "\"default\";r=42;t=18" } },
    ["X-RateLimit-Limit"] = { description = "Limit of the most restrictive rule (of the refusing one on 429).",
                              schema = int },
    ["X-RateLimit-Remaining"] = { description = "Requests left under that rule.", schema = int },
    ["X-RateLimit-Reset"] = { description = "Seconds until that rule's budget is full again.", schema = int },
    ["Retry-After"] = { description = "Seconds to wait before retrying.", schema = { type = "integer", minimum = 1 } },
  }
end

local function parameters()
  return {
    ProductId = { name = "id", ["in"] = "path", required = true,
                  description = "A product id (letters, digits, '-' and '_', at most 64): anything else is 404.",
                  schema = { type = "string", example = "p-0001" } },
    Page = { name = "page", ["in"] = "query", description = "Page number.",
             schema = { type = "integer", minimum = 1, maximum = catalog.PAGE_MAX, default = 1 } },
    Limit = { name = "limit", ["in"] = "query", description = "Products per page.",
              schema = { type = "integer", minimum = 1, maximum = catalog.LIMIT_MAX, default = catalog.LIMIT_DEFAULT } },
    Category = { name = "category", ["in"] = "query", description = "Exact category; empty = any.",
                 schema = { type = "string", maxLength = catalog.CATEGORY_MAX } },
    Search = { name = "search", ["in"] = "query",
               description = "Case-insensitive (ASCII) substring of the name or description; empty = none. Its own "
                 .. "rate-limit rule applies (policies/ratelimits.lua: search).",
               schema = { type = "string", maxLength = catalog.SEARCH_MAX } },
    IsActive = { name = "isActive", ["in"] = "query", description = "Only active (true) or inactive (false) products.",
                 schema = { enum = { "true", "false" } } },
    IfNoneMatch = { name = "If-None-Match", ["in"] = "header", description = "ETags (or *): 304 when one matches.",
                    schema = { type = "string" } },
    NoCache = { name = "Cache-Control", ["in"] = "header",
                description = "no-cache (or Pragma: no-cache) reloads past the cache and refreshes it; no-store "
                  .. "reads and stores nothing. The answer says X-Cache: BYPASS.",
                schema = { type = "string", example = "no-cache" } },
    Tag = { name = "tag", ["in"] = "path", required = true, description = "A cache tag, e.g. products.",
            schema = { type = "string", maxLength = 512 } },
    CacheKey = { name = "key", ["in"] = "path", required = true,
                 description = "\"<namespace>:<key>\" as /api/cache/keys lists it, e.g. product:p-0001 (percent-encode "
                   .. "/, ?, & and spaces).", schema = { type = "string", maxLength = 512, example = "product:p-0001" } },
    KeyPrefix = { name = "prefix", ["in"] = "query", description = "Only entries whose \"ns:key\" starts with this.",
                  schema = { type = "string", maxLength = 512, example = "product:" } },
    Cursor = { name = "cursor", ["in"] = "query", description = "From the previous page; start with 0.",
               schema = { type = "string", pattern = "^[0-9]{1,20}$", default = "0" } },
    Count = { name = "count", ["in"] = "query", description = "Bounds a page (SCAN COUNT).",
              schema = { type = "integer", minimum = 1, maximum = 1000, default = 100 } },
    RuleName = { name = "rule", ["in"] = "path", required = true,
                 description = "A rule name of policies/ratelimits.lua, e.g. default.", schema = { type = "string" } },
    RateLimitKey = { name = "key", ["in"] = "path", required = true,
                     description = "Whose budget: <kind>:<value> with kind ip, session, user, route or header, e.g. "
                       .. "ip:10.0.0.7, user:42, \"route:GET /api/products\" (percent-encoded).",
                     schema = { type = "string", pattern = "^[A-Za-z]+:.", example = "ip:127.0.0.1" } },
  }
end

local function error_response(description, example, header_list)
  return response(description, json_body(schema("Error"), example), header_list)
end

local function responses(max_body)
  return {
    Error = error_response("Any other error in the one error shape: 405 (the path exists with other methods; "
      .. "Allow lists them), 408 (slow request), 413 (body over MAX_BODY_BYTES, decoded size for a chunked body), "
      .. "431 (head or trailer section over 16 KiB), 500 (handler error; "
      .. "requestId in the body), 501, 505."),
    BadRequest = error_response("bad_request: a malformed escape in the query string, or (admin API) a malformed "
      .. "parameter.", { success = false, error = "bad_request", message = "malformed escape in query string" }),
    ValidationFailed = response("Invalid input: validation_failed lists every problem in details; invalid_json "
      .. "for an empty or malformed body; invalid_body when it is not a JSON object.",
      json_body(schema("ValidationError"))),
    NotFound = error_response("No such product (not_found). Also the answer to a path no route serves.",
      { success = false, error = "not_found", message = "no product p-9999" }),
    MethodNotAllowed = error_response("The path exists, with other methods (method_not_allowed).",
      { success = false, error = "method_not_allowed", message = "PATCH is not allowed on /health" }, { "Allow" }),
    PayloadTooLarge = error_response(("The body is over MAX_BODY_BYTES (%d bytes here): payload_too_large; the "
      .. "connection is closed."):format(max_body),
      { success = false, error = "payload_too_large", message = "request body exceeds " .. max_body .. " bytes" }),
    TooManyRequests = response("A rate-limit rule refused the request (policies/ratelimits.lua).",
      json_body(schema("RateLimitExceeded")), with(RATELIMIT_HEADERS, "Retry-After")),
    ServiceUnavailable = error_response("unavailable: the catalogue's database or cache cannot answer now; "
      .. "database_busy (with Retry-After): a write found the database locked by another writer for 1 s and "
      .. "changed nothing; "
      .. "rate_limit_unavailable (with Retry-After): a rule with failure_mode = \"closed\" while Redis cannot be "
      .. "reached; also answered when the engine is shutting down or at its connection cap.",
      { success = false, error = "unavailable", message = "the catalogue is temporarily unavailable" },
      { "Retry-After" }),
    SessionsUnavailable = error_response("The session store (Redis) cannot be reached: sessions_unavailable.",
      { success = false, error = "sessions_unavailable", message = "sessions are temporarily unavailable" },
      { "Retry-After", "Cache-Control" }),
    NoSession = error_response("No valid session cookie: no_session.",
      { success = false, error = "no_session", message = "no valid session: create one with POST /api/sessions" },
      { "Cache-Control" }),
    Unauthorized = error_response("Missing or wrong Authorization: Bearer token (unauthorized).",
      { success = false, error = "unauthorized", message = "this route needs Authorization: Bearer <ADMIN_TOKEN>" },
      { "WWW-Authenticate", "Cache-Control" }),
    AdminDisabled = error_response("not_found: the admin API is disabled because ADMIN_TOKEN is unset (\"admin "
      .. "API is disabled: set ADMIN_TOKEN\"); on routes that name something, also: no such entry, namespace or rule.",
      { success = false, error = "not_found", message = "admin API is disabled: set ADMIN_TOKEN" }, { "Cache-Control" }),
    AdminUnavailable = error_response("redis_unavailable: Redis cannot be used right now (a purge is not "
      .. "journaled); reload_unavailable: POST /api/admin/reload without a master process (an embedding host).",
      { success = false, error = "redis_unavailable", message = "Redis cannot be used right now: redis unavailable" }),
    NotModified = response("If-None-Match matched the ETag: no body.", nil, { "ETag", "Cache-Control" }),
  }
end

-- ------------------------------------------------------------ paths

local function paths()
  local p = {}
  local CACHE = { "X-Cache", "Age" }

  p["/health"] = { get = operation {
    tag = "health", id = "getHealth", summary = "Health of Redis, the database and the policies",
    description = "Never rate limited. 200 also while Redis is down (status degraded); 503 when the database "
      .. "is unusable.",
    responses = {
      ["200"] = response("Healthy or degraded.", json_body(schema("Health")), { "Cache-Control" }),
      ["503"] = response("The database is unusable.", json_body(schema("Health")), { "Cache-Control" }),
    },
  } }
  p["/health/live"] = { get = operation {
    tag = "health", id = "getLiveness", summary = "Liveness probe",
    description = "200 whenever the event loop answers; checks no dependency. Never rate limited.",
    responses = { ["200"] = response("Alive.", json_body(schema("Liveness"), { status = "ok" }), { "Cache-Control" }) },
  } }
  p["/health/ready"] = { get = operation {
    tag = "health", id = "getReadiness", summary = "Readiness probe",
    description = "200 when Redis is up, the database answers and the policies are loaded; 503 otherwise, "
      .. "with the reasons. Never rate limited.",
    responses = {
      ["200"] = response("Ready.", json_body(schema("Readiness")), { "Cache-Control" }),
      ["503"] = response("Not ready: reasons says why.", json_body(schema("Readiness")), { "Cache-Control" }),
    },
  } }
  p["/metrics"] = { get = operation {
    tag = "observability", id = "getMetrics", summary = "Prometheus metrics",
    description = "Prometheus text exposition of every engine.metrics counter and histogram, summed over the "
      .. "workers: jollyjet_http_requests_total{route,method,status}, "
      .. "jollyjet_http_request_duration_seconds{route} (histogram), jollyjet_cache_hits_total{ns}, "
      .. "jollyjet_cache_misses_total{ns}, jollyjet_cache_stale_total{ns}, jollyjet_ratelimit_allowed_total{rule}, "
      .. "jollyjet_ratelimit_rejected_total{rule}, ...",
    responses = { ["200"] = response("The metrics.", {
      ["text/plain; version=0.0.4"] = { schema = { type = "string" },
        example = "jollyjet_http_requests_total{route=\"/api/products/{id}\",method=\"GET\",status=\"200\"} 42\n" },
    }, { "Cache-Control" }) },
  } }
  p["/openapi.json"] = { get = operation {
    tag = "docs", id = "getOpenApi", summary = "This OpenAPI 3.1 document",
    params = { param("IfNoneMatch") },
    responses = {
      ["200"] = response("The document (info.version is the engine's version).",
        json_body({ type = "object" }), { "ETag", "Cache-Control" }),
      ["304"] = ref("responses", "NotModified"),
    },
  } }
  p["/docs"] = { get = operation {
    tag = "docs", id = "getDocs", summary = "This document as an HTML page",
    description = "Self-contained: no script, no external resource.",
    params = { param("IfNoneMatch") },
    responses = {
      ["200"] = response("The page.", { ["text/html; charset=utf-8"] = { schema = { type = "string" } } },
        { "ETag", "Cache-Control", "Content-Security-Policy" }),
      ["304"] = ref("responses", "NotModified"),
    },
  } }
  p["/dashboard"] = { get = operation {
    tag = "docs", id = "getDashboard", summary = "Live dashboard",
    description = "A self-contained page that polls GET /metrics and GET /health every second and charts the hit "
      .. "ratio, request rate, p99 latency, Redis status and memory, rate-limit rejections and the policy generation.",
    params = { param("IfNoneMatch") },
    responses = {
      ["200"] = response("The page.", { ["text/html; charset=utf-8"] = { schema = { type = "string" } } },
        { "ETag", "Cache-Control", "Content-Security-Policy" }),
      ["304"] = ref("responses", "NotModified"),
    },
  } }

  -- products
  p["/api/products"] = {
    get = operation {
      tag = "products", id = "listProducts", summary = "List products (filters, pages)", limited = true,
      description = "Newest first. The whole response is cached (policies/response_cache.lua): X-Cache says "
        .. "HIT / STALE / MISS / BYPASS, Age how old the entry is; every 200 has an ETag and If-None-Match "
        .. "answers 304. Empty category/search count as absent; unknown arguments are ignored.",
      params = { param("Page"), param("Limit"), param("Category"), param("Search"), param("IsActive"),
                 param("IfNoneMatch"), param("NoCache") },
      responses = {
        ["200"] = response("A page of products.", json_body(schema("ProductList")), { "X-Cache", "Age", "ETag" }),
        ["304"] = response("If-None-Match matched: no body.", nil, { "ETag", "X-Cache", "Age" }),
        ["400"] = ref("responses", "ValidationFailed"),
      },
    },
    post = operation {
      tag = "products", id = "createProduct", summary = "Create a product", limited = true,
      description = "Written through to the cache; list pages are invalidated (policies/invalidation.lua).",
      body = { required = true, content = json_body(schema("ProductCreate")) },
      responses = {
        ["201"] = response("Created.", json_body(schema("Product")), { "Location" }),
        ["400"] = ref("responses", "ValidationFailed"),
      },
    },
  }
  local update_body = { required = true, content = json_body(schema("ProductUpdate")) }
  p["/api/products/{id}"] = {
    parameters = { param("ProductId") },
    get = operation {
      tag = "products", id = "getProduct", summary = "Get a product", limited = true,
      description = "From the product cache (L1 in the worker, L2 in Redis); a fresh entry may be answered by "
        .. "the C host itself (which applies the ip- and route-keyed rate-limit rules with the same headers "
        .. "and 429). X-Cache is the source, Age the entry's age.",
      params = { param("NoCache") },
      responses = {
        ["200"] = response("The product.", json_body(schema("Product")), CACHE),
        ["404"] = ref("responses", "NotFound"),
      },
    },
    put = operation {
      tag = "products", id = "replaceProduct", summary = "Update a product (partial, like PATCH)", limited = true,
      body = update_body,
      responses = {
        ["200"] = response("The updated product (version + 1).", json_body(schema("Product"))),
        ["400"] = ref("responses", "ValidationFailed"), ["404"] = ref("responses", "NotFound"),
      },
    },
    patch = operation {
      tag = "products", id = "updateProduct", summary = "Update a product (partial)", limited = true,
      body = update_body,
      responses = {
        ["200"] = response("The updated product (version + 1).", json_body(schema("Product"))),
        ["400"] = ref("responses", "ValidationFailed"), ["404"] = ref("responses", "NotFound"),
      },
    },
    delete = operation {
      tag = "products", id = "deleteProduct", summary = "Delete a product", limited = true,
      description = "Its wishlist entries go with it.",
      responses = { ["204"] = response("Deleted."), ["404"] = ref("responses", "NotFound") },
    },
  }

  -- wishlist
  p["/api/products/{id}/wishlist"] = {
    parameters = { param("ProductId") },
    post = operation {
      tag = "wishlist", id = "toggleWishlist", summary = "Toggle a product in the caller's wishlist",
      limited = true, session = true,
      description = "Without a valid session cookie an anonymous session id is made and sent in Set-Cookie.",
      responses = {
        ["200"] = response("The new state.", json_body(schema("WishlistToggle")),
          { { header = "Set-Cookie", component = "SetSessionCookie" } }),
        ["404"] = ref("responses", "NotFound"),
      },
    },
  }
  p["/api/wishlist"] = { get = operation {
    tag = "wishlist", id = "getWishlist", summary = "The caller's wishlist", limited = true, session = true,
    description = "Without a session cookie: {\"products\":[]} (no cookie is made).",
    params = { param("NoCache") },
    responses = {
      ["200"] = response("The wishlist (X-Cache and Cache-Control: private when there is a session).",
        json_body(schema("Wishlist")), { "X-Cache", "Cache-Control" }),
    },
  } }

  -- sessions
  p["/api/sessions"] = { post = operation {
    tag = "sessions", id = "createSession", summary = "Create a session (replaces the caller's)", limited = true,
    session = true,
    body = { required = false, content = json_body(schema("SessionCreate")) },
    responses = {
      ["201"] = response("The session; its id is only in the cookie.", json_body(schema("Session")),
        { { header = "Set-Cookie", component = "SetSessionCookie" }, "Location", "Cache-Control" }),
      ["400"] = ref("responses", "ValidationFailed"),
      ["503"] = ref("responses", "SessionsUnavailable"),
    },
  } }
  p["/api/sessions/me"] = {
    get = operation {
      tag = "sessions", id = "getSession", summary = "The caller's session (its TTL slides)", limited = true,
      session = true,
      responses = {
        ["200"] = response("The session.", json_body(schema("Session")), { "Cache-Control" }),
        ["401"] = ref("responses", "NoSession"),
        ["503"] = ref("responses", "SessionsUnavailable"),
      },
    },
    delete = operation {
      tag = "sessions", id = "deleteSession", summary = "End the caller's session", limited = true, session = true,
      description = "204 also without a session; the cookie is cleared either way.",
      responses = {
        ["204"] = response("Ended.", nil, { { header = "Set-Cookie", component = "ClearSessionCookie" },
                                           "Cache-Control" }),
        ["503"] = ref("responses", "SessionsUnavailable"),
      },
    },
  }

  -- cache
  p["/api/cache/metrics"] = { get = operation {
    tag = "cache", id = "getCacheMetrics", summary = "Cache effectiveness counters", limited = true,
    responses = { ["200"] = response("The counters.", json_body(schema("CacheMetrics")), { "Cache-Control" }) },
  } }
  local function admin(o)
    o.admin, o.limited, o.tag = true, true, o.tag or "admin"
    return operation(o)
  end
  local function done(what, name) return response(what, json_body(schema(name))) end
  local bad = ref("responses", "BadRequest")
  p["/api/cache/stats"] = { get = admin {
    id = "getCacheStats", summary = "Cache and Redis statistics",
    description = "Redis from INFO; l1 is the answering worker's, cache is summed over the workers.",
    responses = { ["200"] = done("The statistics.", "CacheStats") },
  } }
  p["/api/cache"] = { delete = admin {
    id = "purgeCache", summary = "Purge every cache entry (new cache epoch)",
    description = "O(1): INCR of the cache epoch and an invalidation message; every worker moves to the new "
      .. "(empty) key space and flushes its L1. Nothing is deleted: old entries expire by their TTL. 503 while "
      .. "Redis is down (a purge is not journaled).",
    responses = { ["200"] = done("Purged.", "CachePurged") },
  } }
  p["/api/cache/tags/{tag}"] = {
    parameters = { param("Tag") },
    delete = admin {
      id = "invalidateCacheTag", summary = "Invalidate a tag",
      description = "Every entry carrying the tag becomes a miss (its generation is bumped); journaled while "
        .. "Redis is down.",
      responses = { ["200"] = done("Invalidated (or journaled).", "TagInvalidated"), ["400"] = bad },
    },
  }
  p["/api/cache/keys"] = { get = admin {
    id = "listCacheKeys", summary = "List cache entries (SCAN pages, never KEYS)",
    params = { param("KeyPrefix"), param("Cursor"), param("Count") },
    responses = { ["200"] = done("A page of entries of the current epoch.", "CacheKeyPage"), ["400"] = bad },
  } }
  p["/api/cache/keys/{key}"] = {
    parameters = { param("CacheKey") },
    get = admin {
      id = "getCacheEntry", summary = "One cache entry as stored",
      responses = { ["200"] = done("The entry.", "CacheEntry"), ["400"] = bad },
    },
    delete = admin {
      id = "deleteCacheEntry", summary = "Invalidate one cache entry",
      description = "Gone from Redis and, through the invalidation channel, from every worker's L1.",
      responses = { ["200"] = done("Invalidated.", "CacheKeyDeleted"), ["400"] = bad },
    },
  }
  p["/api/admin/ratelimit/{rule}/{key}"] = {
    parameters = { param("RuleName"), param("RateLimitKey") },
    get = admin {
      id = "peekRateLimit", summary = "Peek at a rate-limit budget (nothing spent)",
      responses = { ["200"] = done("The budget.", "RateLimitState"), ["400"] = bad },
    },
    delete = admin {
      id = "resetRateLimit", summary = "Reset a rate-limit budget",
      description = "In Redis and in this worker's local fallback limiter.",
      responses = { ["200"] = done("Reset.", "RateLimitReset"), ["400"] = bad },
    },
  }
  p["/api/admin/reload"] = { post = admin {
    id = "reload", summary = "Reload every worker (like SIGHUP / jollyjet reload)",
    description = "Every worker builds a new generation from lua/ and policies/; GET /health shows "
      .. "policies.generation and, when the new files were rejected, policies.last_reload_error (the current "
      .. "generation keeps serving).",
    responses = { ["202"] = done("Reload requested.", "ReloadRequested") },
  } }
  return p
end

-- ------------------------------------------------------------ the document

local DESCRIPTION = concat({
  "A caching engine for an e-commerce catalogue: a C core (libev, HTTP/1.1, Redis, SQLite or PostgreSQL) running Lua handlers.",
  "Every response carries Date and X-Request-Id. Every error has the body "
    .. '{"success":false,"error":"<code>","message":"..."} (sometimes with details or requestId); 429 has '
    .. '{"success":false,"error":"Rate limit exceeded","message":"...","retryAfter":N}.',
  "Rate limits (policies/ratelimits.lua) apply to routes under /api/ (never to /health): every limited "
    .. "response has RateLimit-Policy, RateLimit and X-RateLimit-Limit / -Remaining / -Reset; a refusal is 429 "
    .. "with Retry-After. 404 and 405 answers are not counted.",
  "Cached GETs say where the answer came from in X-Cache (HIT, MISS, STALE, BYPASS) and Age; Cache-Control: "
    .. "no-cache from the client bypasses the cache. Whole-response cached routes (policies/response_cache.lua) "
    .. "also send an ETag and answer If-None-Match with 304.",
  "HEAD is served wherever GET is. A path that exists with other methods answers 405 with Allow; any other "
    .. "path 404.",
}, "\n\n")

function _M.build()
  local sess = policy.get("sessions")
  local cfg = core.config()
  return {
    openapi = "3.1.0",
    info = {
      title = "JollyJet API",
      version = core.info().version,
      description = DESCRIPTION,
    },
    servers = { { url = "/" } },
    tags = {
      { name = "products", description = "The product catalogue (SQLite or PostgreSQL, cached in Redis and in each worker)." },
      { name = "wishlist", description = "Per-session wishlists (the session cookie)." },
      { name = "sessions", description = "Sessions in Redis; the id is only ever in an HttpOnly cookie." },
      { name = "cache", description = "Cache effectiveness." },
      { name = "admin", description = "Operations: need Authorization: Bearer $ADMIN_TOKEN; 404 while "
        .. "ADMIN_TOKEN is unset." },
      { name = "health", description = "Health and probes (never rate limited)." },
      { name = "observability", description = "Metrics." },
      { name = "docs", description = "This document, its HTML rendering and the live dashboard." },
    },
    paths = paths(),
    components = {
      schemas = schemas(sess),
      responses = responses(cfg.max_body),
      parameters = parameters(),
      headers = headers(sess),
      securitySchemes = {
        adminBearer = { type = "http", scheme = "bearer",
                        description = "ADMIN_TOKEN (16+ characters); compared in constant time." },
        sessionCookie = { type = "apiKey", ["in"] = "cookie", name = sess.cookie.name,
                          description = "The session cookie (32 random bytes, base64url, 43 characters), HttpOnly." },
      },
    },
  }
end

local built
function _M.document()
  if not built then built = _M.build() end
  return built
end

local METHODS = { "get", "put", "post", "delete", "options", "head", "patch", "trace" }
_M.METHODS = METHODS

function _M.operations(doc)
  local list = {}
  for path, item in pairs(doc.paths) do
    for i, m in ipairs(METHODS) do
      if item[m] then list[#list + 1] = { path = path, method = m, op = item[m], rank = i } end
    end
  end
  sort(list, function(a, b)
    if a.path ~= b.path then return a.path < b.path end
    return a.rank < b.rank
  end)
  return list
end

-- The object a local reference ("#/components/schemas/Product") points at.
function _M.resolve(doc, r)
  if type(r) ~= "string" or r:sub(1, 2) ~= "#/" then return nil end
  local node = doc
  for part in r:sub(3):gmatch("[^/]+") do
    part = part:gsub("~1", "/"):gsub("~0", "~")
    if type(node) ~= "table" then return nil end
    node = node[part]
  end
  return node
end

return _M
