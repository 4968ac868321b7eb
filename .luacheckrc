-- luacheck (Debian lua-check) over the Lua tree: `luacheck lua policies spec`
-- from the repository root; ctest's `luacheck` test fails on any warning.
std = "lua54"
max_line_length = 140

-- Policies are data files loaded in a sandbox (jollyjet.policy): only these
-- globals exist there.
stds.jj_policy = {
  read_globals = {
    "assert", "error", "ipairs", "next", "pairs", "pcall", "select", "tonumber", "tostring", "type",
    "unpack", "rawequal", "rawget", "rawlen", "setmetatable", "getmetatable",
    "math", "string", "table", "utf8",
  },
}
files["policies/"] = { std = "jj_policy" }

-- Specs run under busted (jollyjet spec).
files["spec/"] = { std = "+busted" }

-- Files other work is changing right now: the few warnings they have are
-- harmless (no bug behind any of them) and are silenced here rather than by
-- editing the files under someone else's hands. Drop an entry once its
-- file is clean.
files["lua/jollyjet/cache.lua"] = {
  ignore = {
    "211/pairs",      -- cached global not used (yet)
    "211/err",        -- a pipeline error is answered by the loader path, not read
  },
}
files["lua/jollyjet/response_cache.lua"] = { ignore = { "542" } }       -- an empty branch drops our own Age
files["spec/invalidation_spec.lua"] = { ignore = { "311/err" } }
files["spec/lock_spec.lua"] = { ignore = { "211/lk" } }                 -- `local lk <close>` is the point
files["spec/response_cache_spec.lua"] = { ignore = { "311/hdrs", "311/body" } }
files["spec/session_spec.lua"] = { ignore = { "311/seen" } }
