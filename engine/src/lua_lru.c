/* lua_lru.c: the `engine.lru` module: handles on the process's named L1
 * caches (lru.c). A handle is a small userdata pointing at the C cache,
 * which lives in the registry outside the VM, so a hot reload keeps the
 * cached entries; lru.cache(name) in the new generation finds them again.
 *
 *   local c = lru.cache("pages", { max_items = 10000, max_bytes = 64 * 2^20 })
 *   c:set(key, bytes, ttl_s [, flags [, version]]) -> true | false, why
 *   c:get(key) -> value, expires_at, flags, version | nil
 */
#include "engine.h"
#include "lru.h"
#include "lua_modules.h"
#include "task.h"

#include <ev.h>
#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define DEFAULT_MAX_ITEMS 10000
#define DEFAULT_MAX_BYTES (64 * 1024 * 1024)

typedef struct handle {
    jj_lru *c;
    unsigned epoch;   /* registry epoch the pointer belongs to */
} handle;

static double now_of(lua_State *L) {
    return ev_now(jj_engine_loop(jj_engine_of(L)));
}

/* The cache behind argument 1. Methods carry the handle metatable as their
 * first upvalue, which makes the type check two pointer comparisons. */
static jj_lru *check_cache(lua_State *L) {
    handle *h = lua_touserdata(L, 1);
    if (!h || !lua_getmetatable(L, 1) || !lua_rawequal(L, -1, lua_upvalueindex(1)))
        luaL_typeerror(L, 1, "engine.lru cache");
    lua_pop(L, 1);
    if (h->epoch != jj_lru_registry_epoch()) luaL_error(L, "engine.lru: the cache was closed");
    return h->c;
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

/* [-0, +1, m] */
static void push_stats(lua_State *L, const jj_lru *c) {
    jj_lru_stats st;
    jj_lru_get_stats(c, &st);
    lua_createtable(L, 0, 11);
    set_int(L, "items", (lua_Integer)st.items);
    set_int(L, "bytes", (lua_Integer)st.bytes);
    set_int(L, "max_items", (lua_Integer)st.max_items);
    set_int(L, "max_bytes", (lua_Integer)st.max_bytes);
    set_int(L, "hits", (lua_Integer)st.hits);
    set_int(L, "misses", (lua_Integer)st.misses);
    set_int(L, "evictions", (lua_Integer)st.evictions);
    set_int(L, "expirations", (lua_Integer)st.expirations);
    set_int(L, "sets", (lua_Integer)st.sets);
    set_int(L, "deletes", (lua_Integer)st.deletes);
    set_int(L, "flushes", (lua_Integer)st.flushes);
}

/* c:get(key) -> value, expires_at, flags, version | nil */
static int l_get(lua_State *L) {
    jj_lru *c = check_cache(L);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    jj_lru_entry e;
    if (jj_lru_get(c, key, klen, now_of(L), &e) != 0) {
        lua_pushnil(L);
        return 1;
    }
    lua_pushlstring(L, e.value, e.vlen);
    lua_pushnumber(L, e.expires_at);
    lua_pushinteger(L, (lua_Integer)e.flags);
    lua_pushinteger(L, (lua_Integer)e.version);
    return 4;
}

/* c:set(key, value, ttl_seconds, flags?, version?) -> true | false, reason */
static int l_set(lua_State *L) {
    jj_lru *c = check_cache(L);
    size_t klen, vlen;
    const char *key = luaL_checklstring(L, 2, &klen);
    if (lua_type(L, 3) != LUA_TSTRING) luaL_typeerror(L, 3, "string");
    const char *val = lua_tolstring(L, 3, &vlen);
    double ttl = luaL_checknumber(L, 4);
    luaL_argcheck(L, ttl > 0 && ttl < HUGE_VAL, 4, "ttl must be a positive number of seconds");
    lua_Integer flags = luaL_optinteger(L, 5, 0);
    lua_Integer version = luaL_optinteger(L, 6, 0);
    double now = now_of(L);
    int rc = jj_lru_set(c, key, klen, val, vlen, now + ttl, (int64_t)flags, (int64_t)version, now);
    if (rc == JJ_LRU_OK) {
        lua_pushboolean(L, 1);
        return 1;
    }
    lua_pushboolean(L, 0);
    lua_pushstring(L, rc == JJ_LRU_TOO_LARGE ? "too large" : "out of memory");
    return 2;
}

/* c:delete(key) -> was present */
static int l_delete(lua_State *L) {
    jj_lru *c = check_cache(L);
    size_t klen;
    const char *key = luaL_checklstring(L, 2, &klen);
    lua_pushboolean(L, jj_lru_delete(c, key, klen));
    return 1;
}

static int l_flush(lua_State *L) {
    jj_lru_flush(check_cache(L));
    return 0;
}

static int l_stats(lua_State *L) {
    push_stats(L, check_cache(L));
    return 1;
}

/* c:seq() -> integer that changes whenever a delete or flush (including an
 * invalidation) reaches this cache. */
static int l_seq(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)jj_lru_seq(check_cache(L)));
    return 1;
}

static int l_name(lua_State *L) {
    lua_pushstring(L, jj_lru_name(check_cache(L)));
    return 1;
}

static int l_tostring(lua_State *L) {
    handle *h = lua_touserdata(L, 1);
    if (h && h->epoch == jj_lru_registry_epoch()) lua_pushfstring(L, "engine.lru cache (%s)", jj_lru_name(h->c));
    else lua_pushliteral(L, "engine.lru cache (closed)");
    return 1;
}

static size_t size_opt(lua_State *L, const char *field, size_t dflt) {
    lua_getfield(L, 2, field);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        return dflt;
    }
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    if (!isint || v < 1) luaL_error(L, "engine.lru.cache: %s must be an integer >= 1", field);
    lua_pop(L, 1);
    return (size_t)v;
}

/* lru.cache(name, opts?) -> handle. Without opts (or for a field opts
 * leaves out) an existing cache keeps its limits, a new one gets the
 * defaults. */
static int l_cache(lua_State *L) {
    size_t nlen;
    const char *name = luaL_checklstring(L, 1, &nlen);
    luaL_argcheck(L, nlen > 0 && nlen <= JJ_LRU_NAME_MAX && strlen(name) == nlen &&
                     !memchr(name, '\t', nlen) && strcmp(name, "*") != 0,
                  1, "cache name must be 1..128 bytes without tab or NUL, and not \"*\"");
    size_t max_items = DEFAULT_MAX_ITEMS, max_bytes = DEFAULT_MAX_BYTES;
    jj_lru *old = jj_lru_registry_find(name);
    if (old) {
        jj_lru_stats st;
        jj_lru_get_stats(old, &st);
        max_items = st.max_items;
        max_bytes = st.max_bytes;
    }
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (!k || (strcmp(k, "max_items") != 0 && strcmp(k, "max_bytes") != 0))
                luaL_error(L, "engine.lru.cache: unknown option %s", k ? k : luaL_typename(L, -2));
            lua_pop(L, 1);
        }
        max_items = size_opt(L, "max_items", max_items);
        max_bytes = size_opt(L, "max_bytes", max_bytes);
    }
    jj_lru *c = jj_lru_registry_get(name, max_items, max_bytes);
    if (!c) return luaL_error(L, "engine.lru.cache: out of memory");
    handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->c = c;
    h->epoch = jj_lru_registry_epoch();
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_setmetatable(L, -2);
    return 1;
}

static int l_flush_all(lua_State *L) {
    (void)L;
    jj_lru_registry_flush_all();
    return 0;
}

/* lru.stats() -> { [name] = stats, ... } */
static int l_all_stats(lua_State *L) {
    size_t n = jj_lru_registry_count();
    lua_createtable(L, 0, (int)n);
    for (size_t i = 0; i < n; i++) {
        jj_lru *c = jj_lru_registry_at(i);
        push_stats(L, c);
        lua_setfield(L, -2, jj_lru_name(c));
    }
    return 1;
}

static int l_subscriber_up(lua_State *L) {
    lua_pushboolean(L, jj_engine_subscriber_up(jj_engine_of(L)));
    return 1;
}

int luaopen_engine_lru(lua_State *L) {
    static const luaL_Reg methods[] = {
        {"get", l_get},
        {"set", l_set},
        {"delete", l_delete},
        {"flush", l_flush},
        {"stats", l_stats},
        {"seq", l_seq},
        {"name", l_name},
        {NULL, NULL}};
    static const luaL_Reg fns[] = {
        {"cache", l_cache},
        {"flush_all", l_flush_all},
        {"stats", l_all_stats},
        {"subscriber_up", l_subscriber_up},
        {NULL, NULL}};
    /* The metatable is per VM; every method and lru.cache get it as
     * upvalue 1. */
    luaL_newmetatable(L, "engine.lru.cache");
    lua_createtable(L, 0, 8);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, methods, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushliteral(L, "engine.lru.cache");
    lua_setfield(L, -2, "__metatable");   /* getmetatable(c) returns this, not the table */
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, -2);
    luaL_setfuncs(L, fns, 1);
    return 1;
}
