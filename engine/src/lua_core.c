/* lua_core.c: the `engine.core` module: clock, sleep, logging, randomness,
 * directory listing and the worker's identity. */
#include "engine.h"
#include "lua_modules.h"
#include "log.h"
#include "task.h"
#include "vm.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

/* [-0, +1, -] core.now(): the loop's cached wall-clock time in seconds. */
static int l_now(lua_State *L) {
    lua_pushnumber(L, ev_now(jj_engine_loop(jj_engine_of(L))));
    return 1;
}

/* [-0, +1, -] core.time(): current wall-clock time (not cached). */
static int l_time(lua_State *L) {
    lua_pushnumber(L, ev_time());
    return 1;
}

typedef struct {
    ev_timer timer;
    jj_wait *wait;
    struct ev_loop *loop;
} sleeper;

static void sleep_done(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    sleeper *s = w->data;
    jj_wait *wait = s->wait;
    free(s);
    lua_State *co = jj_wait_target(wait);
    if (!co) { jj_wait_release(wait); return; }
    lua_pushboolean(co, 1);
    jj_wait_resume(wait, 1);
}

/* [-1, +1, e] core.sleep(seconds) -> true. Yields the task. */
static int l_sleep(lua_State *L) {
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s <= 3600, 1, "must be between 0 and 3600 seconds");
    jj_engine *e = jj_engine_of(L);
    jj_wait *w = jj_wait_new(L, s * 1000.0 + 60000.0);
    sleeper *sl = malloc(sizeof *sl);
    if (!sl) { jj_wait_abandon(w); return luaL_error(L, "not enough memory"); }
    sl->wait = w;
    sl->loop = jj_engine_loop(e);
    ev_timer_init(&sl->timer, sleep_done, s, 0.);
    sl->timer.data = sl;
    ev_timer_start(sl->loop, &sl->timer);
    return jj_wait_yield(L, w);
}

static int level_arg(lua_State *L, int idx) {
    static const char *const names[] = {"debug", "info", "warn", "error", NULL};
    return luaL_checkoption(L, idx, NULL, names);
}

/* [-2, +0, e] core.log(level, message) */
static int l_log(lua_State *L) {
    int level = level_arg(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    jj_log(level, "%s", msg);
    return 0;
}

/* [-2, +0, e] core.log_json(level, message, members) where members is a
 * pre-rendered JSON member list ("\"k\":1,\"x\":\"y\""). */
static int l_log_json(lua_State *L) {
    int level = level_arg(L, 1);
    const char *msg = luaL_checkstring(L, 2);
    const char *members = luaL_optstring(L, 3, NULL);
    jj_log_kv(level, members, "%s", msg);
    return 0;
}

/* [-1, +1, e] core.random_bytes(n) -> n bytes from the OS CSPRNG. */
static int l_random_bytes(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n > 0 && n <= 4096, 1, "must be 1..4096");
    luaL_Buffer b;
    char *p = luaL_buffinitsize(L, &b, (size_t)n);
    size_t got = 0;
    while (got < (size_t)n) {
        ssize_t r = getrandom(p + got, (size_t)n - got, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return luaL_error(L, "getrandom failed: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    luaL_pushresultsize(&b, (size_t)n);
    return 1;
}

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* [-2, +1, e] core.list_dir(path, suffix?) -> sorted names of regular
 * entries ending in suffix, or nil, err. Used while building a generation. */
static int l_list_dir(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    size_t slen = 0;
    const char *suffix = luaL_optlstring(L, 2, "", &slen);
    DIR *d = opendir(path);
    if (!d) {
        lua_pushnil(L);
        lua_pushfstring(L, "%s: %s", path, strerror(errno));
        return 2;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        size_t len = strlen(de->d_name);
        if (de->d_name[0] == '.' || len < slen || strcmp(de->d_name + len - slen, suffix) != 0) continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) break;
            names = nn;
        }
        if (!(names[n] = strdup(de->d_name))) break;
        n++;
    }
    closedir(d);
    qsort(names, n, sizeof *names, cmp_str);
    lua_createtable(L, (int)n, 0);
    for (size_t i = 0; i < n; i++) {
        lua_pushstring(L, names[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
    return 1;
}

/* [-0, +1, m] core.info() -> { generation, last_reload_error, worker, pid,
 * version, tasks, memory } */
static int l_info(lua_State *L) {
    jj_engine *e = jj_engine_of(L);
    lua_createtable(L, 0, 8);
    lua_pushinteger(L, jj_engine_generation(e));
    lua_setfield(L, -2, "generation");
    const char *err = jj_engine_last_reload_error(e);
    if (err) { lua_pushstring(L, err); lua_setfield(L, -2, "last_reload_error"); }
    lua_pushinteger(L, jj_engine_worker_id(e));
    lua_setfield(L, -2, "worker");
    lua_pushinteger(L, getpid());
    lua_setfield(L, -2, "pid");
    lua_pushstring(L, JJ_VERSION);
    lua_setfield(L, -2, "version");
    lua_pushinteger(L, jj_task_count());
    lua_setfield(L, -2, "tasks");
    lua_pushinteger(L, (lua_Integer)lua_gc(L, LUA_GCCOUNT, 0) * 1024);
    lua_setfield(L, -2, "memory");
    return 1;
}

/* [-0, +1, m] core.config() -> the non-secret configuration. */
static int l_config(lua_State *L) {
    const jj_config *c = jj_engine_config(jj_engine_of(L));
    lua_createtable(L, 0, 10);
    lua_pushstring(L, c->lua_dir);
    lua_setfield(L, -2, "lua_dir");
    lua_pushstring(L, c->policy_dir);
    lua_setfield(L, -2, "policy_dir");
    lua_pushinteger(L, c->port);
    lua_setfield(L, -2, "port");
    lua_pushinteger(L, c->workers);
    lua_setfield(L, -2, "workers");
    lua_pushstring(L, c->redis_prefix);
    lua_setfield(L, -2, "redis_prefix");
    lua_pushboolean(L, c->has_admin_token);
    lua_setfield(L, -2, "admin_enabled");
    lua_pushinteger(L, (lua_Integer)c->max_body);
    lua_setfield(L, -2, "max_body");
    return 1;
}

/* [-1, +1, -] core.admin_token_matches(token) -> boolean, compared in
 * constant time so the token cannot be guessed byte by byte. */
static int l_admin_token_matches(lua_State *L) {
    size_t n;
    const char *tok = luaL_checklstring(L, 1, &n);
    const jj_config *c = jj_engine_config(jj_engine_of(L));
    if (!c->has_admin_token) { lua_pushboolean(L, 0); return 1; }
    size_t m = strlen(c->admin_token);
    unsigned char diff = (unsigned char)(n != m);
    for (size_t i = 0; i < m; i++) diff |= (unsigned char)(c->admin_token[i] ^ (i < n ? tok[i] : 0));
    lua_pushboolean(L, diff == 0);
    return 1;
}

int luaopen_engine_core(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"now", l_now},
        {"time", l_time},
        {"sleep", l_sleep},
        {"log", l_log},
        {"log_json", l_log_json},
        {"random_bytes", l_random_bytes},
        {"list_dir", l_list_dir},
        {"info", l_info},
        {"config", l_config},
        {"admin_token_matches", l_admin_token_matches},
        {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}
