-- http_spec.lua: jollyjet.http -- query string decoding.
local http = require "jollyjet.http"

describe("http.parse_query", function()
  it("decodes escapes and '+', the last value winning", function()
    assert.same({ q = "a b/c", n = "2" }, http.parse_query("q=a+b%2Fc&n=1&n=2"))
    assert.same({}, http.parse_query(nil))
  end)

  it("refuses malformed escapes and escapes that decode to NUL", function()
    for _, q in ipairs({ "q=%ZZ", "q=%2", "q=%", "q=a%00b", "%00=x", "q=%0" }) do
      local args, err = http.parse_query(q)
      assert.is_nil(args, q)
      assert.matches("malformed escape", err)
    end
    assert.is_nil(http.unescape("a%00"))
  end)
end)
