/* fuzz_lua.h: what the Lua fuzz targets share (header-only, one target per
 * executable). A lua_State like a worker's: the standard libraries, the
 * engine's C modules in package.preload, package.path on lua/ and, next to
 * the target, a driver script that returns the function to fuzz.
 *
 * libFuzzer cannot see inside the (uninstrumented) Lua VM, so a line hook
 * feeds Lua line-to-line edges into libFuzzer's extra counters: inputs that
 * take new paths through the Lua code under test are kept. The same hook
 * bounds instructions, and the allocator bounds memory, per input; hitting
 * either bound is a normal outcome, any other error raised by the code under
 * test is a finding (abort).
 */
#ifndef JJ_FUZZ_LUA_H
#define JJ_FUZZ_LUA_H

#include "lua_modules.h"

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef JJ_SOURCE_DIR
#error "JJ_SOURCE_DIR must be defined"
#endif

#define FUZZ_MEM_LIMIT ((size_t)256 << 20)
#define FUZZ_INSN_LIMIT 20000000L

__attribute__((used, section("__libfuzzer_extra_counters")))
static uint8_t fuzz_lua_edges[1 << 16];

static size_t fuzz_mem;
static long fuzz_insns;
static uintptr_t fuzz_prev;
static const char fuzz_limit_msg[] = "fuzz: instruction limit";

static void *fuzz_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    (void)ud;
    if (ptr == NULL) osize = 0;
    if (nsize == 0) {
        free(ptr);
        fuzz_mem -= osize;
        return NULL;
    }
    if (nsize > osize && fuzz_mem + (nsize - osize) > FUZZ_MEM_LIMIT) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) fuzz_mem = fuzz_mem - osize + nsize;
    return p;
}

static void fuzz_hook(lua_State *L, lua_Debug *ar) {
    if (ar->event == LUA_HOOKCOUNT) {
        fuzz_insns += 1000;
        if (fuzz_insns > FUZZ_INSN_LIMIT) luaL_error(L, fuzz_limit_msg);
        return;
    }
    if (!lua_getinfo(L, "S", ar)) return;
    /* Code that came in as input (a fuzzed policy, chunk name "=input") is
     * not the code under test: its own lines would make every input new. */
    if (ar->source[0] == '=' && strcmp(ar->source, "=input") == 0) return;
    /* ar->source is interned per function prototype: with the line it names
     * a place in the code; with the previous place, an edge. */
    uintptr_t here = (uintptr_t)ar->source * 31u + (uintptr_t)ar->currentline;
    uintptr_t h = (here ^ (fuzz_prev >> 1)) * 0x9E3779B97F4A7C15ull;
    fuzz_lua_edges[(h >> 48) & 0xffff]++;
    fuzz_prev = here;
}

/* 1 when the error on top of the stack is one of the per-input bounds. */
static int fuzz_is_limit(lua_State *L, int status) {
    if (status == LUA_ERRMEM || status == LUA_ERRERR) return 1;
    const char *m = lua_tostring(L, -1);
    return m && (strstr(m, fuzz_limit_msg) || strstr(m, "not enough memory"));
}

static void fuzz_fail(lua_State *L, const char *what) {
    fprintf(stderr, "%s raised: %s\n", what, lua_tostring(L, -1) ? lua_tostring(L, -1) : "(not a string)");
    abort();
}

static int fuzz_traceback(lua_State *L) {
    luaL_traceback(L, L, lua_tostring(L, 1), 1);
    return 1;
}

/* A state with the driver's function in the registry (returned ref). */
static lua_State *fuzz_lua_open(const char *driver, int *ref) {
    lua_State *L = lua_newstate(fuzz_alloc, NULL);
    if (!L) abort();
    /* no engine generation: the engine's modules see jj_engine_of() == NULL */
    memset(lua_getextraspace(L), 0, LUA_EXTRASPACE);
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
    lua_getfield(L, -1, "package");
    lua_pushstring(L, JJ_SOURCE_DIR "/lua/?.lua;" JJ_SOURCE_DIR "/tests/fuzz/?.lua");
    lua_setfield(L, -2, "path");
    luaL_getsubtable(L, -1, "preload");
    static const struct { const char *name; lua_CFunction open; } mods[] = {
        {"engine.core", luaopen_engine_core}, {"engine.redis", luaopen_engine_redis},
        {"engine.db", luaopen_engine_db}, {"engine.lru", luaopen_engine_lru},
        {"engine.metrics", luaopen_engine_metrics}, {"engine.ratelimit", luaopen_engine_ratelimit},
        {"engine.lock", luaopen_engine_lock}, {"engine.fastpath", luaopen_engine_fastpath},
    };
    for (size_t i = 0; i < sizeof mods / sizeof *mods; i++) {
        lua_pushcfunction(L, mods[i].open);
        lua_setfield(L, -2, mods[i].name);
    }
    lua_settop(L, 0);
    lua_pushcfunction(L, fuzz_traceback);
    lua_getglobal(L, "require");
    lua_pushstring(L, driver);
    if (lua_pcall(L, 1, 1, 1) != LUA_OK || !lua_isfunction(L, -1)) fuzz_fail(L, driver);
    *ref = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_settop(L, 0);
    lua_sethook(L, fuzz_hook, LUA_MASKLINE | LUA_MASKCOUNT, 1000);
    return L;
}

/* Calls the driver with the values pushed by push(); a raise other than a
 * bound is a finding. */
static void fuzz_lua_call(lua_State *L, int ref, int nargs) {
    fuzz_insns = 0;
    fuzz_prev = 0;
    lua_pushcfunction(L, fuzz_traceback);
    lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
    lua_rotate(L, -(nargs + 2), 2);   /* traceback, driver, args... */
    int base = lua_gettop(L) - nargs - 1;
    int st = lua_pcall(L, nargs, 0, base);
    if (st != LUA_OK && !fuzz_is_limit(L, st)) fuzz_fail(L, "driver");
    lua_settop(L, 0);
    /* Keep one input's garbage from eating the next one's memory bound; a
     * full collection every time would cost more than the input. */
    if (fuzz_mem > FUZZ_MEM_LIMIT / 8) lua_gc(L, LUA_GCCOLLECT);
    else lua_gc(L, LUA_GCSTEP, 0);
}

#endif
