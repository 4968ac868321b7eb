-- Sessions (jollyjet.session, /api/sessions). Edit and save: the engine
-- reloads this file while it serves; an invalid edit is rejected and
-- reported in /health (file:line: reason).
return {
  ttl = 86400,              -- 24 h of inactivity; every read slides it
  max_data_bytes = 4096,    -- JSON `data` accepted from POST /api/sessions
  cookie = {
    name = "sid",
    secure = false,         -- set true when the site is served over HTTPS
    same_site = "Lax",
  },
}
