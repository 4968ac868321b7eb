/* lua_modules.h: the C-backed Lua modules, registered in package.preload of
 * every VM generation (no injected globals: Lua code requires them). */
#ifndef JJ_LUA_MODULES_H
#define JJ_LUA_MODULES_H

#include <lua.h>

int luaopen_engine_core(lua_State *L);   /* lua_core.c */
/* lua_core.c: wakes the tasks of engine e sleeping in core.sleep (it
 * returns nil, "closing"); jj_engine_free calls it once closing is set. */
struct jj_engine;
void jj_core_wake_sleepers(struct jj_engine *e);
/* lua_core.c: ends (from the loop, next turn) every core.idle of engine e
 * whose generation is no longer current; jj_engine_reload calls it. */
void jj_core_wake_retired(struct jj_engine *e);
int luaopen_engine_redis(lua_State *L);  /* lua_redis.c */
int luaopen_engine_db(lua_State *L);     /* lua_db.c */
int luaopen_engine_lru(lua_State *L);    /* lua_lru.c */
int luaopen_engine_metrics(lua_State *L); /* lua_metrics.c */
int luaopen_engine_ratelimit(lua_State *L); /* lua_ratelimit.c */
/* lua_ratelimit.c: fails the rate-limit checks not yet sent to Redis
 * ("redis closed"); jj_engine_free calls it before freeing the client. */
void jj_ratelimit_close(void);
int luaopen_engine_lock(lua_State *L);   /* lua_lock.c */
int luaopen_engine_fastpath(lua_State *L); /* fastpath.c */

#endif
