-- Schema of policies/sessions.lua: server-side sessions (jollyjet.session)
-- and their cookie.
return {
  description = "Sessions: sliding lifetime in Redis and the cookie that carries the id",
  fields = {
    ttl = { type = "integer", default = 86400, min = 60, max = 30 * 86400,
            description = "seconds of inactivity after which a session expires; every read "
                       .. "(session.get, from_request) and extend restarts the count (sliding)" },
    max_data_bytes = { type = "integer", default = 4096, min = 64, max = 1024 * 1024,
                       description = "largest JSON `data` a client may store through POST /api/sessions" },
    cookie = {
      type = "record",
      description = "the Set-Cookie attributes of the session cookie (always HttpOnly and Path=/)",
      fields = {
        name = { type = "string", default = "sid", pattern = "^[%w_%-]+$", len_max = 64,
                 description = "cookie name" },
        secure = { type = "boolean", default = false,
                   description = "add Secure (browsers then send it over HTTPS only); "
                              .. "set true wherever the site is served over HTTPS" },
        same_site = { type = "string", default = "Lax", one_of = { "Strict", "Lax", "None" },
                      description = "SameSite attribute; None requires secure = true" },
      },
    },
  },
  check = function(v)
    if v.cookie.same_site == "None" and not v.cookie.secure then
      return nil, "cookie.same_site: \"None\" requires cookie.secure = true (browsers reject it otherwise)"
    end
    return true
  end,
}
