-- jollyjet.catalog: the product catalogue's data layer, validation and JSON.
--
--   row, errs     = catalog.validate(input, partial?)    -- column values | nil, { {field=, message=}, ... }
--   row           = catalog.get(id)                      -- nil when unknown; nil, err on failure
--   rows          = catalog.get_many(ids)                -- { [id] = row }
--   page          = catalog.list(filters)                -- { ids = {...}, total = n }
--   filters, errs = catalog.parse_filters(args)          -- from a query string's args
--   key           = catalog.filters_key(filters)         -- normalised, sorted cache key
--   row           = catalog.create(input)                -- nil, errs (a table) when invalid
--   row, _, lists = catalog.update(id, input)            -- partial; lists: list pages may have changed
--   version       = catalog.delete(id)                   -- the deleted row's version
--   wishlisted, count, version = catalog.toggle_wishlist(session_id, product_id)
--   ids           = catalog.wishlist(session_id)         -- newest first
--   json          = catalog.encode(row)                  -- the product's JSON text
--
-- Runtime failures return nil, err (a string); "not found" is a plain nil;
-- invalid input is nil, errs where errs is a list of { field, message }.
-- Misuse (wrong argument types) raises.
--
-- JSON shape of a product, keys in this order:
--   {"id","name","description","price","stock","category","images",
--    "isActive","wishlistCount","version","createdAt","updatedAt"}
-- price is written from the integer cents, never through a float, in the
-- shortest exact form (what JavaScript's JSON.stringify gives for the same
-- amount): 1999 -> 19.99, 1050 -> 10.5, 1000 -> 10, 0 -> 0. images is always
-- an array ([] when empty). Strings are escaped by this module (no "\/").
local db = require "engine.db"
local core = require "engine.core"
local cjson = require("cjson.safe").new()

local type, pairs, ipairs, tostring, tonumber, error, next = type, pairs, ipairs, tostring, tonumber, error, next
local math_type, floor, tointeger = math.type, math.floor, math.tointeger
local concat, sort, unpack = table.concat, table.sort, table.unpack
local fmt, byte, utf8len = string.format, string.byte, utf8.len

-- Stored images are our own JSON; refuse NaN/Infinity/hex there too.
cjson.decode_invalid_numbers(false)

local _M = {}

-- Limits (documented in the README's product section).
_M.NAME_MAX = 200
_M.DESCRIPTION_MAX = 2000
_M.CATEGORY_MAX = 100
_M.IMAGES_MAX = 20
_M.IMAGE_URL_MAX = 2048
_M.PRICE_MAX_CENTS = 99999999999      -- 999,999,999.99: far below 2^53, so floats are exact enough
_M.STOCK_MAX = 1000000000
_M.SEARCH_MAX = 100
_M.LIMIT_MAX = 100
_M.LIMIT_DEFAULT = 20
_M.PAGE_MAX = 1000000

-- The few spellings the two databases do not share (engine.db binds the
-- same ?-placeholders on both). Timestamps are the statement's time, in the
-- same ISO-8601 millisecond format.
local PG = db.dialect() == "postgres"
local ISO_NOW = PG and [[to_char(statement_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')]]
  or "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
-- SQLite's LIKE ignores ASCII case; PostgreSQL's needs ILIKE for that.
local LIKE = PG and "ILIKE" or "LIKE"
local DUPLICATE_ID = PG and 'unique constraint "products_pkey"' or "UNIQUE constraint failed: products.id"
local COLUMNS = "id, name, description, price_cents, stock, category, images, is_active, "
  .. "wishlist_count, version, created_at, updated_at"

-- ------------------------------------------------------------- JSON

local ESCAPES = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f",
                  ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }

-- A JSON string literal (UTF-8 passes through; control characters escaped).
local function jstr(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or fmt("\\u%04x", byte(c))
  end) .. '"'
end
_M.json_string = jstr

-- A JSON array of strings; "[]" when empty.
local function jstr_array(list)
  local out = {}
  for i, s in ipairs(list) do out[i] = jstr(s) end
  return "[" .. concat(out, ",") .. "]"
end
_M.json_string_array = jstr_array

-- Integer cents -> the price's JSON number text, exactly.
local function price_json(cents)
  local whole, frac = cents // 100, cents % 100
  if frac == 0 then return tostring(whole) end
  if frac % 10 == 0 then return whole .. "." .. frac // 10 end
  return fmt("%d.%02d", whole, frac)
end
_M.price_json = price_json

local function decode_images(text)
  local list = type(text) == "string" and cjson.decode(text)
  if type(list) ~= "table" then return {} end
  local out = {}
  for _, v in ipairs(list) do
    if type(v) == "string" then out[#out + 1] = v end
  end
  return out
end

-- json = catalog.encode(row): the product's JSON object as a string.
function _M.encode(row)
  if type(row) ~= "table" or type(row.id) ~= "string" then
    error("catalog.encode: expected a product row", 2)
  end
  return concat({
    '{"id":', jstr(row.id),
    ',"name":', jstr(row.name or ""),
    ',"description":', jstr(row.description or ""),
    ',"price":', price_json(row.price_cents or 0),
    ',"stock":', tostring(row.stock or 0),
    ',"category":', jstr(row.category or ""),
    ',"images":', jstr_array(decode_images(row.images)),
    ',"isActive":', (row.is_active ~= 0 and row.is_active ~= false) and "true" or "false",
    ',"wishlistCount":', tostring(row.wishlist_count or 0),
    ',"version":', tostring(row.version or 1),
    ',"createdAt":', jstr(row.created_at or ""),
    ',"updatedAt":', jstr(row.updated_at or ""),
    "}",
  })
end

-- --------------------------------------------------------- validation

-- cents, message = catalog.price_to_cents(v): a JSON number with at most two
-- decimals -> integer cents. round(v * 100) must divide back to exactly v
-- (the double nearest to k/100 is what a parser gives for "k/100" written
-- with two decimals), so 19.99 -> 1999, 0.29 -> 29, while 0.1 + 0.2
-- (0.30000000000000004), 1.005 and 1e-3 are refused.
function _M.price_to_cents(v)
  if type(v) ~= "number" then return nil, "must be a number" end
  if v ~= v then return nil, "must be a finite number" end
  if v < 0 then return nil, "must be >= 0" end
  if v > _M.PRICE_MAX_CENTS / 100 then return nil, "must be <= " .. price_json(_M.PRICE_MAX_CENTS) end
  if math_type(v) == "integer" then return v * 100 end
  local cents = floor(v * 100 + 0.5)
  if cents / 100 ~= v then return nil, "must have at most 2 decimal places" end
  return tointeger(cents)
end

-- Control characters: none in a name or category (a NUL or an ESC sequence
-- there ends up in pages and logs); a description may have tabs and line
-- breaks.
local function text(v, field, min, max, errs, multiline)
  if type(v) ~= "string" then
    errs[#errs + 1] = { field = field, message = "must be a string" }
    return nil
  end
  local n = utf8len(v)
  if not n then
    errs[#errs + 1] = { field = field, message = "must be valid UTF-8" }
    return nil
  end
  if v:find(multiline and "[\0-\8\11\12\14-\31\127]" or "%c") then
    errs[#errs + 1] = { field = field, message = "must not contain control characters" }
    return nil
  end
  if min > 0 and not v:find("%S") then
    errs[#errs + 1] = { field = field, message = "must not be empty" }
    return nil
  end
  if n > max then
    errs[#errs + 1] = { field = field, message = ("must be at most %d characters"):format(max) }
    return nil
  end
  return v
end

local function images(v, errs)
  if type(v) ~= "table" then
    errs[#errs + 1] = { field = "images", message = "must be an array of URLs" }
    return nil
  end
  local n = #v
  for k in pairs(v) do
    if math_type(k) ~= "integer" or k < 1 or k > n then
      errs[#errs + 1] = { field = "images", message = "must be an array of URLs" }
      return nil
    end
  end
  if n > _M.IMAGES_MAX then
    errs[#errs + 1] = { field = "images", message = ("must have at most %d entries"):format(_M.IMAGES_MAX) }
    return nil
  end
  local ok = true
  for i = 1, n do
    local s = v[i]
    local field = ("images[%d]"):format(i - 1)
    if type(s) ~= "string" then
      errs[#errs + 1] = { field = field, message = "must be a string" }
      ok = false
    elseif #s > _M.IMAGE_URL_MAX or not utf8len(s) or not s:find("^[Hh][Tt][Tt][Pp][Ss]?://[^%s%c/?#][^%s%c]*$") then
      errs[#errs + 1] = { field = field, message = "must be an http(s) URL" }
      ok = false
    end
  end
  return ok and jstr_array(v) or nil
end

-- Writable fields in their error order, and the read-only ones a client may
-- have copied from a GET.
local FIELDS = { "name", "description", "price", "stock", "category", "images", "isActive" }
local WRITABLE = {}
for _, f in ipairs(FIELDS) do WRITABLE[f] = true end
local READ_ONLY = { id = true, wishlistCount = true, version = true, createdAt = true, updatedAt = true }
local REQUIRED = { name = true, price = true, category = true }

-- values, errs = catalog.validate(input, partial): input is the decoded JSON
-- object. values holds column values (name, description, price_cents, stock,
-- category, images (JSON text), is_active (0/1)) for the fields present,
-- plus defaults when not partial (description "", stock 0, images [],
-- isActive true). errs lists every problem, fields in a fixed order.
function _M.validate(input, partial)
  if type(input) ~= "table" then error("catalog.validate: input must be a table", 2) end
  local errs, out = {}, {}
  for _, f in ipairs(FIELDS) do
    local v = input[f]
    if v == nil then
      if not partial and REQUIRED[f] then errs[#errs + 1] = { field = f, message = "is required" } end
    elseif f == "name" then
      out.name = text(v, f, 1, _M.NAME_MAX, errs)
    elseif f == "description" then
      out.description = text(v, f, 0, _M.DESCRIPTION_MAX, errs, true)
    elseif f == "category" then
      out.category = text(v, f, 1, _M.CATEGORY_MAX, errs)
    elseif f == "price" then
      local cents, msg = _M.price_to_cents(v)
      if cents then out.price_cents = cents else errs[#errs + 1] = { field = f, message = msg } end
    elseif f == "stock" then
      local n = type(v) == "number" and tointeger(v)
      if not n then
        errs[#errs + 1] = { field = f, message = "must be an integer" }
      elseif n < 0 then
        errs[#errs + 1] = { field = f, message = "must be >= 0" }
      elseif n > _M.STOCK_MAX then
        errs[#errs + 1] = { field = f, message = "must be <= " .. _M.STOCK_MAX }
      else
        out.stock = n
      end
    elseif f == "images" then
      out.images = images(v, errs)
    elseif f == "isActive" then
      if type(v) ~= "boolean" then
        errs[#errs + 1] = { field = f, message = "must be true or false" }
      else
        out.is_active = v and 1 or 0
      end
    end
  end
  local unknown = {}
  for k in pairs(input) do
    if not WRITABLE[k] then unknown[#unknown + 1] = tostring(k) end
  end
  sort(unknown)
  for _, k in ipairs(unknown) do
    errs[#errs + 1] = { field = k, message = READ_ONLY[k] and "is read-only" or "unknown field" }
  end
  if #errs > 0 then return nil, errs end
  if not partial then
    if out.description == nil then out.description = "" end
    if out.stock == nil then out.stock = 0 end
    if out.images == nil then out.images = "[]" end
    if out.is_active == nil then out.is_active = 1 end
  end
  return out
end

-- -------------------------------------------------------------- filters

local function query_escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return fmt("%%%02X", byte(c)) end))
end

-- filters, errs = catalog.parse_filters(args): page (>= 1, default 1), limit
-- (1..100, default 20), category (exact), search (case-insensitive
-- substring of name or description), isActive ("true" | "false"). Empty
-- category/search count as absent; other arguments are ignored.
function _M.parse_filters(args)
  if type(args) ~= "table" then error("catalog.parse_filters: args must be a table", 2) end
  local errs, f = {}, { page = 1, limit = _M.LIMIT_DEFAULT }
  local function int(name, lo, hi)
    local s = args[name]
    if s == nil then return end
    local n = type(s) == "string" and s:match("^%d+$") and #s <= 9 and tointeger(tonumber(s))
    if not n or n < lo or n > hi then
      errs[#errs + 1] = { field = name, message = ("must be an integer from %d to %d"):format(lo, hi) }
      return
    end
    f[name] = n
  end
  int("page", 1, _M.PAGE_MAX)
  int("limit", 1, _M.LIMIT_MAX)
  local cat = args.category
  if cat ~= nil and cat ~= "" then
    if not utf8len(cat) or utf8len(cat) > _M.CATEGORY_MAX then
      errs[#errs + 1] = { field = "category", message = ("must be at most %d characters"):format(_M.CATEGORY_MAX) }
    else
      f.category = cat
    end
  end
  local search = args.search
  if search ~= nil and search ~= "" then
    if not utf8len(search) or utf8len(search) > _M.SEARCH_MAX then
      errs[#errs + 1] = { field = "search", message = ("must be at most %d characters"):format(_M.SEARCH_MAX) }
    else
      -- LIKE is case-insensitive for ASCII only; lower() matches that.
      f.search = search:lower()
    end
  end
  local active = args.isActive
  if active ~= nil then
    if active == "true" then f.isActive = true
    elseif active == "false" then f.isActive = false
    else errs[#errs + 1] = { field = "isActive", message = "must be true or false" } end
  end
  if #errs > 0 then return nil, errs end
  return f
end

-- "category=books&isActive=true&limit=20&page=1&search=mug": the filters in
-- name order, values percent-encoded; equal queries give equal keys.
function _M.filters_key(f)
  if type(f) ~= "table" then error("catalog.filters_key: filters must be a table", 2) end
  local parts = {}
  if f.category then parts[#parts + 1] = "category=" .. query_escape(f.category) end
  if f.isActive ~= nil then parts[#parts + 1] = "isActive=" .. tostring(f.isActive) end
  parts[#parts + 1] = "limit=" .. (f.limit or _M.LIMIT_DEFAULT)
  parts[#parts + 1] = "page=" .. (f.page or 1)
  if f.search then parts[#parts + 1] = "search=" .. query_escape(f.search) end
  return concat(parts, "&")
end

local function like_pattern(s)
  return "%" .. s:gsub("[\\%%_]", "\\%0") .. "%"
end
_M.like_pattern = like_pattern

-- -------------------------------------------------------------- reads

-- row = catalog.get(id)
function _M.get(id)
  if type(id) ~= "string" then error("catalog.get: id must be a string", 2) end
  local rows, err = db.query("SELECT " .. COLUMNS .. " FROM products WHERE id = ?", id)
  if not rows then return nil, err end
  return rows[1]
end

-- rows = catalog.get_many(ids): { [id] = row } for the ids that exist.
function _M.get_many(ids)
  if type(ids) ~= "table" then error("catalog.get_many: ids must be a list", 2) end
  local out = {}
  local n = #ids
  local i = 1
  while i <= n do                        -- chunks keep far below SQLite's parameter limit
    local j = i + 499 < n and i + 499 or n
    local marks = ("?,"):rep(j - i + 1):sub(1, -2)
    local rows, err = db.query("SELECT " .. COLUMNS .. " FROM products WHERE id IN (" .. marks .. ")",
                               unpack(ids, i, j))
    if not rows then return nil, err end
    for _, r in ipairs(rows) do out[r.id] = r end
    i = j + 1
  end
  return out
end

-- page = catalog.list(filters): the ids of one page (newest first:
-- created_at DESC, id DESC) and the total matching.
function _M.list(f)
  if type(f) ~= "table" then error("catalog.list: filters must be a table", 2) end
  local where, params = {}, {}
  if f.category then
    where[#where + 1] = "category = ?"
    params[#params + 1] = f.category
  end
  if f.search then
    where[#where + 1] = "(name " .. LIKE .. " ? ESCAPE '\\' OR description " .. LIKE .. " ? ESCAPE '\\')"
    local p = like_pattern(f.search)
    params[#params + 1] = p
    params[#params + 1] = p
  end
  if f.isActive ~= nil then
    where[#where + 1] = "is_active = ?"
    params[#params + 1] = f.isActive and 1 or 0
  end
  local cond = #where > 0 and (" WHERE " .. concat(where, " AND ")) or ""
  local limit, page = f.limit or _M.LIMIT_DEFAULT, f.page or 1
  local nparams = #params
  params[nparams + 1] = limit
  params[nparams + 2] = (page - 1) * limit
  local rows, err = db.query("SELECT id, count(*) OVER () AS total FROM products" .. cond
    .. " ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?", unpack(params, 1, nparams + 2))
  if not rows then return nil, err end
  local ids = {}
  for i, r in ipairs(rows) do ids[i] = r.id end
  local total = rows[1] and rows[1].total
  if not total then            -- past the last page: the window saw no rows
    local c, cerr = db.query("SELECT count(*) AS n FROM products" .. cond, unpack(params, 1, nparams))
    if not c then return nil, cerr end
    total = c[1].n
  end
  return { ids = ids, total = total }
end

-- ------------------------------------------------------------- writes

local function new_id()
  local b = core.random_bytes(8)
  return "p-" .. fmt(("%02x"):rep(8), byte(b, 1, 8))
end
_M.new_id = new_id

-- row = catalog.create(input): validates, inserts (version 1), returns the row.
function _M.create(input)
  if type(input) ~= "table" then error("catalog.create: input must be a table", 2) end
  local v, errs = _M.validate(input, false)
  if not v then return nil, errs end
  local res, err
  for _ = 1, 3 do              -- a random 64-bit id collides practically never; retry if it does
    local id = new_id()
    res, err = db.batch({
      { "INSERT INTO products (id, name, description, price_cents, stock, category, images, is_active, "
        .. "wishlist_count, version, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 1, "
        .. ISO_NOW .. ", " .. ISO_NOW .. ")",
        id, v.name, v.description, v.price_cents, v.stock, v.category, v.images, v.is_active },
      { "SELECT " .. COLUMNS .. " FROM products WHERE id = ?", id },
    })
    if res or not tostring(err):find(DUPLICATE_ID, 1, true) then break end
  end
  if not res then return nil, err end
  return res.rows[1]
end

-- Columns whose change can move a product into, out of or within list pages.
local LIST_COLUMNS = { "name", "description", "price_cents", "category", "is_active", "created_at" }
local UPDATE_ORDER = { "name", "description", "price_cents", "stock", "category", "images", "is_active" }

-- row, nil, lists_changed = catalog.update(id, input): a partial update. Every
-- present field is written in ONE UPDATE that also bumps version by 1 and
-- updated_at; a SELECT in the same transaction returns the new row.
-- lists_changed is true when a filterable, searchable or ordering column
-- now differs from the row read just before (or when another write slipped
-- in between, so the comparison cannot be trusted). An empty input changes
-- nothing and returns the current row.
function _M.update(id, input)
  if type(id) ~= "string" then error("catalog.update: id must be a string", 2) end
  if type(input) ~= "table" then error("catalog.update: input must be a table", 2) end
  local v, errs = _M.validate(input, true)
  if not v then return nil, errs end
  local old, gerr = _M.get(id)
  if not old then return nil, gerr end
  if next(v) == nil then return old, nil, false end
  local sets, params = {}, {}
  for _, col in ipairs(UPDATE_ORDER) do
    if v[col] ~= nil then
      sets[#sets + 1] = col .. " = ?"
      params[#params + 1] = v[col]
    end
  end
  sets[#sets + 1] = "version = version + 1"
  sets[#sets + 1] = "updated_at = " .. ISO_NOW
  params[#params + 1] = id
  local update = { "UPDATE products SET " .. concat(sets, ", ") .. " WHERE id = ?", unpack(params) }
  local res, err = db.batch({ update, { "SELECT " .. COLUMNS .. " FROM products WHERE id = ?", id } })
  if not res then return nil, err end
  local row = res.rows[1]
  if not row then return nil end   -- deleted since the read
  local lists = row.version ~= old.version + 1
  for _, col in ipairs(LIST_COLUMNS) do
    if row[col] ~= old[col] then lists = true end
  end
  return row, nil, lists
end

-- version = catalog.delete(id): the version the product had; nil if unknown.
-- Its wishlist rows go with it (ON DELETE CASCADE).
function _M.delete(id)
  if type(id) ~= "string" then error("catalog.delete: id must be a string", 2) end
  local rows, err = db.query("DELETE FROM products WHERE id = ? RETURNING version", id)
  if not rows then return nil, err end
  return rows[1] and rows[1].version
end

-- wishlisted, count, version = catalog.toggle_wishlist(session_id, product_id)
-- One transaction: insert the (session, product) row, or delete it when the
-- insert found it already there (changes() of the INSERT is 0), then adjust
-- wishlist_count by +1/-1 and bump version (the cached JSON changed;
-- updated_at stays: it tracks edits of the product). nil when the product
-- does not exist (nothing changes).
local function wishlist_result(res, err)
  if not res then return nil, err end
  local row = res.rows[1]
  if not row then return nil end
  return row.wishlisted == 1, row.wishlist_count, row.version
end

local function toggle_pg(sid, pid)
  return db.batch({
    -- One statement deletes the row or, when there was none, inserts it
    -- (PostgreSQL has no changes(); a data-modifying WITH does the same).
    { "WITH del AS (DELETE FROM wishlist WHERE session_id = ?1 AND product_id = ?2 RETURNING 1) "
      .. "INSERT INTO wishlist (session_id, product_id, created_at) SELECT ?1, id, " .. ISO_NOW
      .. " FROM products WHERE id = ?2 AND NOT EXISTS (SELECT 1 FROM del) "
      .. "ON CONFLICT (session_id, product_id) DO NOTHING", sid, pid },
    { "UPDATE products SET wishlist_count = greatest(0, wishlist_count + CASE WHEN EXISTS "
      .. "(SELECT 1 FROM wishlist WHERE session_id = ?1 AND product_id = ?2) THEN 1 ELSE -1 END), "
      .. "version = version + 1 WHERE id = ?2", sid, pid },
    { "SELECT wishlist_count, version, EXISTS (SELECT 1 FROM wishlist WHERE session_id = ?1 AND "
      .. "product_id = ?2) AS wishlisted FROM products WHERE id = ?2", sid, pid },
  })
end

function _M.toggle_wishlist(sid, pid)
  if type(sid) ~= "string" or sid == "" then error("catalog.toggle_wishlist: session id must be a string", 2) end
  if type(pid) ~= "string" then error("catalog.toggle_wishlist: product id must be a string", 2) end
  if PG then return wishlist_result(toggle_pg(sid, pid)) end
  return wishlist_result(db.batch({
    -- ?1 session, ?2 product. (The SELECT needs its WHERE: without one,
    -- SQLite would parse ON CONFLICT as a join constraint.)
    { "INSERT INTO wishlist (session_id, product_id, created_at) SELECT ?1, id, " .. ISO_NOW
      .. " FROM products WHERE id = ?2 ON CONFLICT (session_id, product_id) DO NOTHING", sid, pid },
    -- changes() still reports the INSERT: this statement has not completed yet.
    { "DELETE FROM wishlist WHERE session_id = ?1 AND product_id = ?2 AND changes() = 0", sid, pid },
    { "UPDATE products SET wishlist_count = max(0, wishlist_count + CASE WHEN EXISTS "
      .. "(SELECT 1 FROM wishlist WHERE session_id = ?1 AND product_id = ?2) THEN 1 ELSE -1 END), "
      .. "version = version + 1 WHERE id = ?2", sid, pid },
    { "SELECT wishlist_count, version, EXISTS (SELECT 1 FROM wishlist WHERE session_id = ?1 AND "
      .. "product_id = ?2) AS wishlisted FROM products WHERE id = ?2", sid, pid },
  }))
end

-- ids = catalog.wishlist(session_id): the session's products, most recently
-- added first (rowid: insertion order; a column of that name on PostgreSQL).
function _M.wishlist(sid)
  if type(sid) ~= "string" then error("catalog.wishlist: session id must be a string", 2) end
  local rows, err = db.query("SELECT product_id FROM wishlist WHERE session_id = ? "
    .. "ORDER BY created_at DESC, rowid DESC", sid)
  if not rows then return nil, err end
  local ids = {}
  for i, r in ipairs(rows) do ids[i] = r.product_id end
  return ids
end

return _M
