-- engine_db_spec.lua: the engine.db module against the real database,
-- run inside the engine by `jollyjet spec` (every call yields the spec's
-- task while a pool thread runs the statement). Everything here lives in
-- its own table, spec_db_items, created on entry and dropped on exit.
local db = require("engine.db")

local TABLE = "spec_db_items"

-- Asserts that a db call succeeded and returns its results.
local function ok(a, ...)
  assert(a ~= nil, "database call failed: " .. tostring((...)))
  return a, ...
end

local function count()
  local rows = ok(db.query("SELECT count(*) AS n FROM " .. TABLE))
  return rows[1].n
end

local function insert(name, price, qty, flag, note)
  return db.exec("INSERT INTO " .. TABLE .. " (name, price, qty, flag, note) VALUES (?, ?, ?, ?, ?)",
                 name, price, qty, flag, note)
end

describe("engine.db", function()
  lazy_setup(function()
    ok(db.exec("CREATE TABLE IF NOT EXISTS " .. TABLE .. " ("
      .. "id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, price REAL, "
      .. "qty INTEGER CHECK (qty IS NULL OR qty >= 0), flag INTEGER, note TEXT)"))
  end)

  lazy_teardown(function()
    db.exec("DROP TABLE IF EXISTS " .. TABLE)
  end)

  before_each(function()
    ok(db.exec("DELETE FROM " .. TABLE))
  end)

  describe("exec", function()
    it("returns the changed row count and the last insert id", function()
      local n, id = insert("kettle", 19.5, 3, true, "steel")
      assert.are.equal(1, n)
      assert.is_true(math.type(id) == "integer" and id > 0)
      local n2, id2 = insert("toaster", 25, 1, false, nil)
      assert.are.equal(1, n2)
      assert.are.equal(id + 1, id2)
      local changed = ok(db.exec("UPDATE " .. TABLE .. " SET qty = qty + 1"))
      assert.are.equal(2, changed)
    end)

    it("reports zero changes for a statement that matches nothing", function()
      local n, id = db.exec("DELETE FROM " .. TABLE .. " WHERE id = ?", -1)
      assert.are.equal(0, n)
      assert.are.equal(0, id)
    end)
  end)

  describe("query", function()
    it("returns rows keyed by column name with Lua types", function()
      ok(insert("kettle", 19.5, 3, true, "steel"))
      ok(insert("toaster", 25.0, 0, false, "chrome"))
      local rows = ok(db.query("SELECT name, price, qty, flag, note FROM " .. TABLE .. " ORDER BY name"))
      assert.are.equal(2, #rows)
      assert.are.same({ name = "kettle", price = 19.5, qty = 3, flag = 1, note = "steel" }, rows[1])
      assert.are.equal("toaster", rows[2].name)
      assert.are.equal("float", math.type(rows[1].price))
      assert.are.equal("float", math.type(rows[2].price))   -- REAL column keeps 25.0 a float
      assert.are.equal("integer", math.type(rows[1].qty))
      assert.are.equal(0, rows[2].flag)
    end)

    it("returns an empty sequence when nothing matches", function()
      local rows, err = db.query("SELECT * FROM " .. TABLE .. " WHERE id = ?", 12345)
      assert.is_nil(err)
      assert.are.same({}, rows)
    end)

    it("binds a nil in the middle of the arguments as NULL and omits NULL columns", function()
      ok(insert("nil-price", nil, 2, nil, "x"))
      local rows = ok(db.query("SELECT * FROM " .. TABLE .. " WHERE name = ?", "nil-price"))
      assert.are.equal(1, #rows)
      assert.is_nil(rows[1].price)
      assert.is_nil(rows[1].flag)
      assert.are.equal(2, rows[1].qty)
      assert.are.equal("x", rows[1].note)
    end)

    it("binds db.null as NULL", function()
      assert.are.equal("userdata", type(db.null))
      ok(insert("null-note", 1.0, 1, 1, db.null))
      local rows = ok(db.query("SELECT note IS NULL AS is_null FROM " .. TABLE .. " WHERE name = ?", "null-note"))
      assert.are.equal(1, rows[1].is_null)
    end)

    it("binds booleans as 1 and 0", function()
      local rows = ok(db.query("SELECT ? AS t, ? AS f", true, false))
      assert.are.equal(1, rows[1].t)
      assert.are.equal(0, rows[1].f)
    end)

    it("round-trips big integers, unicode and binary strings exactly", function()
      local big = math.maxinteger
      local uni = "h\u{e9}llo \u{2713} \u{65e5}\u{672c} \u{1F680}"
      local bin = "a\0b\255c"
      local rows = ok(db.query("SELECT ? AS big, ? AS uni, ? AS bin, length(?) AS len", big, uni, bin, uni))
      assert.are.equal(big, rows[1].big)
      assert.are.equal(uni, rows[1].uni)
      assert.are.equal(bin, rows[1].bin)
      assert.are.equal(utf8.len(uni), rows[1].len)
    end)

    it("treats parameters as data, never as SQL", function()
      local evil = "x'); DROP TABLE " .. TABLE .. "; --"
      ok(insert(evil, 1, 1, 1, "quote ' and \" marks"))
      local rows = ok(db.query("SELECT name, note FROM " .. TABLE .. " WHERE name = ?", evil))
      assert.are.equal(evil, rows[1].name)
      assert.are.equal("quote ' and \" marks", rows[1].note)
      assert.are.equal(1, count())
    end)

    it("returns nil and SQLite's message on a syntax error", function()
      local rows, err = db.query("SELEC * FROM " .. TABLE)
      assert.is_nil(rows)
      assert.is_truthy(err:find("syntax error", 1, true))
    end)

    it("returns nil and the message on a constraint violation", function()
      ok(insert("dup", 1, 1, 1, nil))
      local n, err = insert("dup", 2, 2, 2, nil)
      assert.is_nil(n)
      assert.is_truthy(err:find("UNIQUE constraint failed", 1, true))
      local n2, err2 = insert("negative", 1, -1, 1, nil)
      assert.is_nil(n2)
      assert.is_truthy(err2:find("CHECK constraint failed", 1, true))
    end)

    it("refuses several statements in one call", function()
      local rows, err = db.query("SELECT 1; SELECT 2")
      assert.is_nil(rows)
      assert.is_string(err)
    end)

    it("refuses transaction control outside db.batch", function()
      local n, err = db.exec("BEGIN")
      assert.is_nil(n)
      assert.is_truthy(err:find("transaction", 1, true))
    end)

    it("reports a parameter count mismatch", function()
      local rows, err = db.query("SELECT ? + ?", 1)
      assert.is_nil(rows)
      assert.is_truthy(err:find("2 parameters, got 1", 1, true))
    end)

    it("raises on parameters that cannot be bound", function()
      assert.has_error(function() db.query("SELECT ?", {}) end)
      assert.has_error(function() db.query("SELECT ?", print) end)
      assert.has_error(function() db.exec("SELECT ?", coroutine.create(print)) end)
      assert.has_error(function() db.query() end)
      assert.has_error(function() db.query({}) end)
    end)
  end)

  describe("batch", function()
    it("applies every statement in one transaction", function()
      local res = ok(db.batch({
        { "INSERT INTO " .. TABLE .. " (name, qty) VALUES (?, ?)", "a", 1 },
        { "INSERT INTO " .. TABLE .. " (name, qty) VALUES (?, ?)", "b", 2 },
        { "UPDATE " .. TABLE .. " SET qty = qty * 10" },
        { "SELECT name, qty FROM " .. TABLE .. " ORDER BY name" },
      }))
      assert.are.equal(4, res.changes)
      assert.is_true(res.last_insert_id > 0)
      assert.are.same({ { name = "a", qty = 10 }, { name = "b", qty = 20 } }, res.rows)
      assert.are.equal(2, count())
    end)

    it("has empty rows when the last statement returns none", function()
      local res = ok(db.batch({ { "INSERT INTO " .. TABLE .. " (name) VALUES (?)", "only" } }))
      assert.are.equal(1, res.changes)
      assert.are.same({}, res.rows)
    end)

    it("applies nothing when any statement fails", function()
      ok(insert("existing", 1, 1, 1, nil))
      local res, err = db.batch({
        { "INSERT INTO " .. TABLE .. " (name) VALUES (?)", "new" },
        { "UPDATE " .. TABLE .. " SET qty = 5 WHERE name = ?", "existing" },
        { "INSERT INTO " .. TABLE .. " (name) VALUES (?)", "existing" },   -- UNIQUE violation
      })
      assert.is_nil(res)
      assert.is_truthy(err:find("statement 3", 1, true))
      assert.is_truthy(err:find("UNIQUE constraint failed", 1, true))
      assert.are.equal(1, count())
      local rows = ok(db.query("SELECT qty FROM " .. TABLE .. " WHERE name = ?", "existing"))
      assert.are.equal(1, rows[1].qty)
    end)

    it("refuses statements that end the transaction early", function()
      local res, err = db.batch({
        { "INSERT INTO " .. TABLE .. " (name) VALUES (?)", "early" },
        { "COMMIT" },
      })
      assert.is_nil(res)
      assert.is_string(err)
      assert.are.equal(0, count())
    end)

    it("binds NULLs given as db.null or through table.pack", function()
      ok(db.batch({
        { "INSERT INTO " .. TABLE .. " (name, price, qty) VALUES (?, ?, ?)", "n1", db.null, 1 },
        table.pack("INSERT INTO " .. TABLE .. " (name, price, qty) VALUES (?, ?, ?)", "n2", nil, 2),
      }))
      local rows = ok(db.query("SELECT name, price, qty FROM " .. TABLE .. " ORDER BY name"))
      assert.are.same({ { name = "n1", qty = 1 }, { name = "n2", qty = 2 } }, rows)
    end)

    it("raises on a malformed statement list", function()
      assert.has_error(function() db.batch({}) end)
      assert.has_error(function() db.batch("SELECT 1") end)
      assert.has_error(function() db.batch({ "SELECT 1" }) end)
      assert.has_error(function() db.batch({ { 42 } }) end)
      assert.has_error(function() db.batch({ { "SELECT ?", {} } }) end)
    end)
  end)

  describe("timeouts", function()
    it("query_timeout gives up with nil, 'timeout' on a slow statement", function()
      local rows, err = db.query_timeout(1,
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < ?) SELECT count(*) AS n FROM c",
        2000000)
      assert.is_nil(rows)
      assert.are.equal("timeout", err)
    end)

    it("the explicit-timeout variants work when the statement is quick", function()
      local n = ok(db.exec_timeout(5000, "INSERT INTO " .. TABLE .. " (name) VALUES (?)", "quick"))
      assert.are.equal(1, n)
      local rows = ok(db.query_timeout(5000, "SELECT name FROM " .. TABLE))
      assert.are.same({ { name = "quick" } }, rows)
    end)

    it("raises on a non-positive timeout", function()
      assert.has_error(function() db.query_timeout(0, "SELECT 1") end)
      assert.has_error(function() db.exec_timeout(-5, "SELECT 1") end)
    end)
  end)

  it("healthy() reports a working database", function()
    assert.is_true(db.healthy())
  end)
end)

describe("engine.db batch binding", function()

  it("reads statement entries raw: a metamethod cannot change their size between passes", function()
    local calls = 0
    local entry = setmetatable({ "SELECT ? AS v", 7 }, {
      __index = function(_, k)
        if k == "n" then
          calls = calls + 1
          return calls == 1 and 2 or 50   -- would overflow the bound parameters if trusted
        end
      end,
    })
    local res = assert(db.batch({ entry }))
    assert.equal(7, res.rows[1].v)
    assert.equal(0, calls)
  end)
end)
