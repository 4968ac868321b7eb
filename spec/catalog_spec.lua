-- catalog_spec.lua: jollyjet.catalog -- price conversion, validation, JSON
-- encoding, query filters, and the data layer against the spec database
-- (migrated and seeded like a fresh install).
local catalog = require "jollyjet.catalog"
local db = require "engine.db"
local cjson = require "cjson.safe"

local function fields_of(errs)
  local out = {}
  for i, e in ipairs(errs) do out[i] = e.field end
  return out
end

local function message_for(errs, field)
  for _, e in ipairs(errs) do
    if e.field == field then return e.message end
  end
  return nil
end

local function valid(over)
  local t = { name = "Kettle", price = 19.99, category = "home" }
  for k, v in pairs(over or {}) do t[k] = v end
  return t
end

describe("catalog.price_to_cents", function()
  it("converts prices with up to two decimals exactly", function()
    assert.equal(1999, catalog.price_to_cents(19.99))
    assert.equal(1000, catalog.price_to_cents(10))
    assert.equal(1000, catalog.price_to_cents(10.0))
    assert.equal(1050, catalog.price_to_cents(10.5))
    assert.equal(29, catalog.price_to_cents(0.29))      -- 0.29 * 100 = 28.999999999999996
    assert.equal(115, catalog.price_to_cents(1.15))     -- 1.15 * 100 = 114.99999999999999
    assert.equal(30, catalog.price_to_cents(0.3))
    assert.equal(0, catalog.price_to_cents(0))
    assert.equal(0, catalog.price_to_cents(-0.0))
    assert.equal(99999999999, catalog.price_to_cents(999999999.99))
    assert.equal("integer", math.type(catalog.price_to_cents(19.99)))
  end)

  it("round-trips every two-decimal price up to 10000.00 as a JSON parser gives it", function()
    for k = 0, 1000000 do
      local v = cjson.decode(("%d.%02d"):format(k // 100, k % 100))
      local cents = catalog.price_to_cents(v)
      if cents ~= k then error(("%d.%02d -> %s"):format(k // 100, k % 100, tostring(cents))) end
    end
  end)

  it("refuses more than two decimals, float noise included", function()
    local _, msg = catalog.price_to_cents(0.1 + 0.2)         -- 0.30000000000000004
    assert.matches("at most 2 decimal", msg)
    assert.is_nil((catalog.price_to_cents(1e-3)))
    assert.is_nil((catalog.price_to_cents(1.005)))
    assert.is_nil((catalog.price_to_cents(19.999)))
    assert.is_nil((catalog.price_to_cents(0.001)))
    assert.is_nil((catalog.price_to_cents(5e-324)))
  end)

  it("refuses negative, very large, non-finite and non-numbers", function()
    assert.matches(">= 0", select(2, catalog.price_to_cents(-1)))
    assert.matches(">= 0", select(2, catalog.price_to_cents(-0.01)))
    assert.matches("<= 999999999.99", select(2, catalog.price_to_cents(1e9)))
    assert.is_nil((catalog.price_to_cents(1e300)))
    assert.is_nil((catalog.price_to_cents(math.huge)))
    assert.is_nil((catalog.price_to_cents(-math.huge)))
    assert.is_nil((catalog.price_to_cents(0 / 0)))
    assert.is_nil((catalog.price_to_cents(math.maxinteger)))
    assert.matches("must be a number", select(2, catalog.price_to_cents("19.99")))
    assert.is_nil((catalog.price_to_cents(true)))
    assert.is_nil((catalog.price_to_cents(cjson.null)))
  end)
end)

describe("catalog.price_json", function()
  it("writes the shortest exact number: 10, 10.5, 19.99", function()
    assert.equal("19.99", catalog.price_json(1999))
    assert.equal("10", catalog.price_json(1000))
    assert.equal("10.5", catalog.price_json(1050))
    assert.equal("0.05", catalog.price_json(5))
    assert.equal("0.5", catalog.price_json(50))
    assert.equal("0", catalog.price_json(0))
    assert.equal("999999999.99", catalog.price_json(99999999999))
  end)
end)

describe("catalog.validate", function()
  it("reports every missing required field", function()
    local v, errs = catalog.validate({})
    assert.is_nil(v)
    assert.same({ "name", "price", "category" }, fields_of(errs))
    assert.equal("is required", errs[1].message)
  end)

  it("fills defaults on create", function()
    local v = assert(catalog.validate(valid()))
    assert.same({ name = "Kettle", price_cents = 1999, category = "home", description = "",
                  stock = 0, images = "[]", is_active = 1 }, v)
  end)

  it("converts every field to its column", function()
    local v = assert(catalog.validate(valid({
      description = "Boils water", stock = 3.0, isActive = false,
      images = { "https://img.example/a.jpg", "http://img.example/b.png?x=1" },
    })))
    assert.equal(3, v.stock)
    assert.equal("integer", math.type(v.stock))
    assert.equal(0, v.is_active)
    assert.equal('["https://img.example/a.jpg","http://img.example/b.png?x=1"]', v.images)
  end)

  it("partial input yields only the fields given, without defaults", function()
    assert.same({ stock = 7 }, assert(catalog.validate({ stock = 7 }, true)))
    assert.same({}, assert(catalog.validate({}, true)))
  end)

  it("rejects unknown and read-only fields", function()
    local _, errs = catalog.validate(valid({ colour = "red", id = "p-1", version = 3 }))
    assert.same({ "colour", "id", "version" }, fields_of(errs))
    assert.equal("unknown field", message_for(errs, "colour"))
    assert.equal("is read-only", message_for(errs, "version"))
    _, errs = catalog.validate({ wishlistCount = 1 }, true)
    assert.same({ "wishlistCount" }, fields_of(errs))
  end)

  it("bounds name to 1..200 characters (not bytes)", function()
    assert.truthy(catalog.validate(valid({ name = ("x"):rep(200) })))
    assert.truthy(catalog.validate(valid({ name = ("\u{e9}"):rep(200) })))
    local _, errs = catalog.validate(valid({ name = ("x"):rep(201) }))
    assert.matches("at most 200", message_for(errs, "name"))
    _, errs = catalog.validate(valid({ name = "" }))
    assert.equal("must not be empty", message_for(errs, "name"))
    _, errs = catalog.validate(valid({ name = "   " }))
    assert.equal("must not be empty", message_for(errs, "name"))
    _, errs = catalog.validate(valid({ name = 5 }))
    assert.equal("must be a string", message_for(errs, "name"))
    _, errs = catalog.validate(valid({ name = "bad \255 utf8" }))
    assert.equal("must be valid UTF-8", message_for(errs, "name"))
  end)

  it("bounds description to 2000 and category to 1..100", function()
    assert.truthy(catalog.validate(valid({ description = ("d"):rep(2000) })))
    local _, errs = catalog.validate(valid({ description = ("d"):rep(2001), category = ("c"):rep(101) }))
    assert.same({ "description", "category" }, fields_of(errs))
    _, errs = catalog.validate(valid({ category = "" }))
    assert.same({ "category" }, fields_of(errs))
    assert.truthy(catalog.validate(valid({ category = ("c"):rep(100) })))
  end)

  it("refuses control characters: none in name or category, only tab and line breaks in a description", function()
    for _, bad in ipairs({ "a\0b", "\27[31mred", "bell\7", "del\127", "tab\t", "line\n" }) do
      local _, errs = catalog.validate(valid({ name = bad, category = bad }))
      assert.same({ "name", "category" }, fields_of(errs))
      assert.equal("must not contain control characters", message_for(errs, "name"))
    end
    assert.truthy(catalog.validate(valid({ description = "two\r\nlines\tand a tab" })))
    for _, bad in ipairs({ "nul\0", "\27[2J", "\8back", "\127" }) do
      local _, errs = catalog.validate(valid({ description = bad }))
      assert.equal("must not contain control characters", message_for(errs, "description"))
    end
  end)

  it("checks price through price_to_cents", function()
    local _, errs = catalog.validate(valid({ price = 0.1 + 0.2 }))
    assert.matches("2 decimal", message_for(errs, "price"))
    _, errs = catalog.validate(valid({ price = -5 }))
    assert.same({ "price" }, fields_of(errs))
    _, errs = catalog.validate(valid({ price = 1e15 }))
    assert.same({ "price" }, fields_of(errs))
  end)

  it("wants stock as an integer from 0", function()
    for _, bad in ipairs({ -1, 1.5, "3", true, 0 / 0, math.huge, 1e10 }) do
      local _, errs = catalog.validate(valid({ stock = bad }))
      assert.same({ "stock" }, fields_of(errs), tostring(bad))
    end
    assert.equal(0, catalog.validate(valid({ stock = 0 })).stock)
  end)

  it("wants images as an array of at most 20 http(s) URLs", function()
    local _, errs = catalog.validate(valid({ images = "https://x.example/a.jpg" }))
    assert.same({ "images" }, fields_of(errs))
    _, errs = catalog.validate(valid({ images = { a = "https://x.example/a.jpg" } }))
    assert.same({ "images" }, fields_of(errs))
    local many = {}
    for i = 1, 21 do many[i] = "https://x.example/" .. i .. ".jpg" end
    _, errs = catalog.validate(valid({ images = many }))
    assert.matches("at most 20", message_for(errs, "images"))
    many[21] = nil
    assert.truthy(catalog.validate(valid({ images = many })))
    local urls = { "https://ok.example/a", 5, "ftp://x/y", "https://", "javascript:alert(1)" }
    _, errs = catalog.validate(valid({ images = urls }))
    assert.same({ "images[1]", "images[2]", "images[3]", "images[4]" }, fields_of(errs))
    assert.equal("[]", catalog.validate(valid({ images = {} })).images)
  end)

  it("wants isActive as a boolean", function()
    local _, errs = catalog.validate(valid({ isActive = "true" }))
    assert.same({ "isActive" }, fields_of(errs))
    _, errs = catalog.validate(valid({ isActive = cjson.null }))
    assert.same({ "isActive" }, fields_of(errs))
  end)

  it("lists problems in field order, unknown fields last", function()
    local _, errs = catalog.validate({ zz = 1, isActive = 1, price = -1, aa = 2 })
    assert.same({ "name", "price", "category", "isActive", "aa", "zz" }, fields_of(errs))
  end)

  it("raises on misuse", function()
    assert.has_error(function() catalog.validate(nil) end)
    assert.has_error(function() catalog.validate("x") end)
  end)
end)

describe("catalog.encode", function()
  local row = {
    id = "p-x", name = 'Say "hi"\n', description = "a/b \\ c", price_cents = 1000, stock = 4,
    category = "home", images = "[]", is_active = 0, wishlist_count = 2, version = 7,
    created_at = "2024-01-01T00:00:00.000Z", updated_at = "2024-01-02T00:00:00.000Z",
  }

  it("writes the product's JSON shape in a fixed key order", function()
    local s = catalog.encode(row)
    assert.equal('{"id":"p-x","name":"Say \\"hi\\"\\n","description":"a/b \\\\ c","price":10,"stock":4,'
      .. '"category":"home","images":[],"isActive":false,"wishlistCount":2,"version":7,'
      .. '"createdAt":"2024-01-01T00:00:00.000Z","updatedAt":"2024-01-02T00:00:00.000Z"}', s)
    local doc = assert(cjson.decode(s))
    assert.equal('Say "hi"\n', doc.name)
    assert.equal(10, doc.price)
    assert.is_false(doc.isActive)
  end)

  it("renders empty images as [] and keeps URLs unescaped", function()
    assert.truthy(catalog.encode(row):find('"images":[]', 1, true))
    local r2 = {}
    for k, v in pairs(row) do r2[k] = v end
    r2.images, r2.is_active, r2.price_cents = '["https://img.example/a.jpg"]', 1, 1999
    local s = catalog.encode(r2)
    assert.truthy(s:find('"images":["https://img.example/a.jpg"]', 1, true))
    assert.truthy(s:find('"price":19.99,', 1, true))
    assert.truthy(s:find('"isActive":true', 1, true))
  end)

  it("escapes control characters", function()
    local r2 = { id = "p-y", name = "a\1b\127", images = "[]" }
    local doc = assert(cjson.decode(catalog.encode(r2)))
    assert.equal("a\1b\127", doc.name)
  end)

  it("raises on misuse", function()
    assert.has_error(function() catalog.encode(nil) end)
    assert.has_error(function() catalog.encode({}) end)
  end)
end)

describe("catalog.parse_filters", function()
  it("has defaults", function()
    assert.same({ page = 1, limit = 20 }, catalog.parse_filters({}))
  end)

  it("reads every filter", function()
    assert.same({ page = 3, limit = 100, category = "books", search = "mug", isActive = false },
      catalog.parse_filters({ page = "3", limit = "100", category = "books", search = "MuG", isActive = "false" }))
    assert.same({ page = 1, limit = 20 }, catalog.parse_filters({ category = "", search = "", other = "x" }))
  end)

  it("rejects bad values with details", function()
    local _, errs = catalog.parse_filters({ page = "0", limit = "101", isActive = "yes" })
    assert.same({ "page", "limit", "isActive" }, fields_of(errs))
    for _, bad in ipairs({ "-1", "1.5", "abc", "", "1e3", "9999999999" }) do
      local f = catalog.parse_filters({ limit = bad })
      assert.is_nil(f, bad)
    end
    _, errs = catalog.parse_filters({ search = ("s"):rep(101) })
    assert.same({ "search" }, fields_of(errs))
  end)

  it("gives equal queries equal, sorted, escaped keys", function()
    local a = catalog.filters_key(catalog.parse_filters({ search = "Blue Mug", category = "home & garden" }))
    local b = catalog.filters_key(catalog.parse_filters({ category = "home & garden", search = "blue mug",
                                                          page = "1", limit = "20" }))
    assert.equal(a, b)
    assert.equal("category=home%20%26%20garden&limit=20&page=1&search=blue%20mug", a)
    assert.equal("isActive=true&limit=5&page=2",
      catalog.filters_key(catalog.parse_filters({ isActive = "true", limit = "5", page = "2" })))
  end)

  it("escapes LIKE wildcards", function()
    assert.equal("%50\\%\\_off\\\\%", catalog.like_pattern("50%_off\\"))
  end)
end)

describe("catalog data layer", function()
  local created = {}

  local function create(over)
    local row = assert(catalog.create(valid(over)))
    created[#created + 1] = row.id
    return row
  end

  lazy_teardown(function()
    for _, id in ipairs(created) do catalog.delete(id) end
  end)

  it("seeds at least 200 products in at least 8 categories", function()
    local rows = assert(db.query("SELECT count(*) AS n, count(DISTINCT category) AS c, "
      .. "sum(CASE WHEN is_active = 0 THEN 1 ELSE 0 END) AS inactive FROM products WHERE id LIKE 'p-0%'"))
    assert.is_true(rows[1].n >= 200)
    assert.is_true(rows[1].c >= 8)
    assert.is_true(rows[1].inactive > 0)
    local p = assert(catalog.get("p-0002"))
    assert.equal("books", p.category)
    local doc = assert(cjson.decode(catalog.encode(p)))
    assert.equal(1, #doc.images)
  end)

  it("creates, reads and encodes a product", function()
    local row = create({ stock = 2, images = { "https://img.example/k.jpg" } })
    assert.matches("^p%-%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x%x$", row.id)
    assert.equal(1, row.version)
    assert.equal(1999, row.price_cents)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", row.created_at)
    assert.equal(row.created_at, row.updated_at)
    assert.same(row, catalog.get(row.id))
    local doc = cjson.decode(catalog.encode(row))
    assert.equal(19.99, doc.price)
    assert.same({ "https://img.example/k.jpg" }, doc.images)
  end)

  it("returns validation errors from create and update as a list", function()
    local row, errs = catalog.create({ name = "" })
    assert.is_nil(row)
    assert.equal("table", type(errs))
    local existing = create()
    row, errs = catalog.update(existing.id, { price = -1 })
    assert.is_nil(row)
    assert.same({ "price" }, fields_of(errs))
  end)

  it("is nil (no error) for unknown ids", function()
    local row, err = catalog.get("p-nope")
    assert.is_nil(row)
    assert.is_nil(err)
    row, err = catalog.update("p-nope", { stock = 1 })
    assert.is_nil(row)
    assert.is_nil(err)
    assert.is_nil(catalog.delete("p-nope"))
    local w, c = catalog.toggle_wishlist("s1", "p-nope")
    assert.is_nil(w)
    assert.is_nil(c)
  end)

  it("updates partially, bumping version once and telling when lists change", function()
    local row = create({ stock = 1 })
    local r2, err, lists = catalog.update(row.id, { stock = 9 })
    assert.is_nil(err)
    assert.equal(2, r2.version)
    assert.equal(9, r2.stock)
    assert.equal(row.name, r2.name)
    assert.is_false(lists)                         -- stock moves nothing between pages
    local r3, _, lists3 = catalog.update(row.id, { name = "Kettle 2" })
    assert.equal(3, r3.version)
    assert.is_true(lists3)
    local r4, _, lists4 = catalog.update(row.id, { name = "Kettle 2", category = "home" })
    assert.equal(4, r4.version)
    assert.is_false(lists4)                        -- same values: no page can change
    local r5, _, lists5 = catalog.update(row.id, { isActive = false, price = 5 })
    assert.is_true(lists5)
    assert.equal(0, r5.is_active)
    assert.equal(500, r5.price_cents)
    local same, _, lists6 = catalog.update(row.id, {})
    assert.equal(5, same.version)                  -- nothing to change: no bump
    assert.is_false(lists6)
  end)

  it("deletes and reports the old version", function()
    local row = create()
    catalog.update(row.id, { stock = 4 })
    assert.equal(2, catalog.delete(row.id))
    assert.is_nil(catalog.get(row.id))
    assert.is_nil(catalog.delete(row.id))
  end)

  it("toggles a wishlist entry in one transaction", function()
    local row = create()
    local w, n, v = catalog.toggle_wishlist("sess-a", row.id)
    assert.is_true(w)
    assert.equal(1, n)
    assert.equal(2, v)
    w, n = catalog.toggle_wishlist("sess-b", row.id)
    assert.is_true(w)
    assert.equal(2, n)
    assert.same({ row.id }, catalog.wishlist("sess-a"))
    w, n, v = catalog.toggle_wishlist("sess-a", row.id)
    assert.is_false(w)
    assert.equal(1, n)
    assert.equal(4, v)
    assert.same({}, catalog.wishlist("sess-a"))
    w, n = catalog.toggle_wishlist("sess-a", row.id)
    assert.is_true(w)
    assert.equal(2, n)
    local again = catalog.get(row.id)
    assert.equal(2, again.wishlist_count)
    assert.equal(row.updated_at, again.updated_at)
    catalog.delete(row.id)                          -- cascades to the wishlist rows
    assert.same({}, catalog.wishlist("sess-a"))
    assert.same({}, catalog.wishlist("sess-b"))
  end)

  it("lists wishlist entries newest first", function()
    local a, b = create(), create()
    catalog.toggle_wishlist("sess-order", a.id)
    catalog.toggle_wishlist("sess-order", b.id)
    assert.same({ b.id, a.id }, catalog.wishlist("sess-order"))
  end)

  it("pages, filters and counts", function()
    local all = assert(catalog.list({ page = 1, limit = 100 }))
    local n = assert(db.query("SELECT count(*) AS n FROM products"))[1].n
    assert.equal(n, all.total)
    assert.equal(100, #all.ids)
    local last = assert(catalog.list({ page = math.ceil(n / 100), limit = 100 }))
    assert.equal(n - 100 * (math.ceil(n / 100) - 1), #last.ids)
    local past = assert(catalog.list({ page = 1000, limit = 100 }))
    assert.same({}, past.ids)
    assert.equal(n, past.total)
    local books = assert(catalog.list({ page = 1, limit = 100, category = "books" }))
    assert.equal(24, books.total)
    local inactive = assert(catalog.list({ page = 1, limit = 100, isActive = false }))
    local ni = assert(db.query("SELECT count(*) AS n FROM products WHERE is_active = 0"))[1].n
    assert.equal(ni, inactive.total)
    local headphones = assert(catalog.list({ page = 1, limit = 100, search = "headphones" }))
    assert.is_true(headphones.total >= 1)
    for _, id in ipairs(headphones.ids) do
      local p = catalog.get(id)
      assert.truthy((p.name .. p.description):lower():find("headphones", 1, true))
    end
  end)

  it("orders newest first", function()
    local page = assert(catalog.list({ page = 1, limit = 100 }))
    local prev
    for _, id in ipairs(page.ids) do
      local p = catalog.get(id)
      if prev then assert.is_true(p.created_at <= prev) end
      prev = p.created_at
    end
  end)

  it("treats % and _ in a search literally", function()
    local row = create({ name = "Save 50%_now" })
    local hit = assert(catalog.list({ page = 1, limit = 10, search = "50%_" }))
    assert.same({ row.id }, hit.ids)
    local none = assert(catalog.list({ page = 1, limit = 10, search = "%" }))
    assert.same({ row.id }, none.ids)
    local under = assert(catalog.list({ page = 1, limit = 10, search = "e_5" }))
    assert.equal(0, under.total)
  end)

  it("fetches many by id", function()
    local rows = assert(catalog.get_many({ "p-0001", "p-0002", "p-missing" }))
    assert.equal("p-0001", rows["p-0001"].id)
    assert.equal("p-0002", rows["p-0002"].id)
    assert.is_nil(rows["p-missing"])
    assert.same({}, catalog.get_many({}))
  end)
end)
