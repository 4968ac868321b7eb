/* lua_core.c: the `engine.core` module: clock, sleep, logging, randomness,
 * directory listing, the worker's identity and asking for a reload. */
#include "engine.h"
#include "lua_modules.h"
#include "log.h"
#include "task.h"
#include "vm.h"

#include <dirent.h>
#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <signal.h>
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

/* Sleeping tasks, so that an engine shutting down can wake its own (a
 * timer the loop never runs again would keep its task, and the task its
 * generation's VM, alive for ever). */
typedef struct sleeper {
    ev_timer timer;
    jj_wait *wait;
    struct ev_loop *loop;
    jj_engine *engine;
    jj_gen *gen;           /* core.idle: the generation whose replacement ends it; else NULL */
    int retired;           /* ... and it was replaced: the timer fires at once */
    struct sleeper *prev, *next;
} sleeper;

static sleeper *sleepers;

static void sleeper_unlink(sleeper *s) {
    if (s->prev) s->prev->next = s->next; else sleepers = s->next;
    if (s->next) s->next->prev = s->prev;
}

/* Ends one sleep: core.sleep returns true, or nil, "closing" (or core.idle
 * nil, "retired"). */
static void sleeper_finish(sleeper *s, int closing) {
    jj_wait *wait = s->wait;
    int retired = s->retired;
    sleeper_unlink(s);
    free(s);
    lua_State *co = jj_wait_target(wait);
    if (!co) { jj_wait_release(wait); return; }
    if (closing || retired) {
        lua_pushnil(co);
        if (closing) lua_pushliteral(co, "closing");
        else lua_pushliteral(co, "retired");
        jj_wait_resume(wait, 2);
    } else {
        lua_pushboolean(co, 1);
        jj_wait_resume(wait, 1);
    }
}

static void sleep_done(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    sleeper_finish(w->data, 0);
}

void jj_core_wake_sleepers(jj_engine *e) {
    sleeper *s = sleepers;
    while (s) {
        sleeper *next = s->next;
        if (s->engine == e) {
            ev_timer_stop(s->loop, &s->timer);
            sleeper_finish(s, 1);   /* may run Lua, which cannot sleep again (closing) */
            next = sleepers;        /* the list may have changed: start over */
        }
        s = next;
    }
}

void jj_core_wake_retired(jj_engine *e) {
    for (sleeper *s = sleepers; s; s = s->next) {
        /* older than the current one (a generation being built is newer) */
        if (s->engine != e || !s->gen || s->retired || jj_gen_number(s->gen) >= jj_engine_generation(e)) continue;
        s->retired = 1;   /* resumed from the loop, not from inside the reload */
        ev_timer_stop(s->loop, &s->timer);
        ev_timer_set(&s->timer, 0., 0.);
        ev_timer_start(s->loop, &s->timer);
    }
}

static int do_sleep(lua_State *L, int idle) {
    double s = luaL_checknumber(L, 1);
    luaL_argcheck(L, s >= 0 && s <= 3600, 1, "must be between 0 and 3600 seconds");
    jj_engine *e = jj_engine_of(L);
    if (jj_engine_closing(e)) {
        lua_pushnil(L);
        lua_pushliteral(L, "closing");
        return 2;
    }
    jj_wait *w = jj_wait_new(L, s * 1000.0 + 60000.0);
    sleeper *sl = malloc(sizeof *sl);
    if (!sl) { jj_wait_abandon(w); return luaL_error(L, "not enough memory"); }
    sl->wait = w;
    sl->loop = jj_engine_loop(e);
    sl->engine = e;
    sl->gen = idle ? jj_gen_of_state(L) : NULL;
    sl->retired = idle && jj_gen_number(sl->gen) < jj_engine_generation(e);
    if (sl->retired) s = 0;   /* replaced already */
    sl->prev = NULL;
    sl->next = sleepers;
    if (sleepers) sleepers->prev = sl;
    sleepers = sl;
    ev_timer_init(&sl->timer, sleep_done, s, 0.);
    sl->timer.data = sl;
    ev_now_update(sl->loop);
    ev_timer_start(sl->loop, &sl->timer);
    return jj_wait_yield(L, w);
}

/* [-1, +(1|2), e] core.sleep(seconds) -> true, or nil, "closing" when the
 * engine shuts down (at once if it already is). Yields the task. */
static int l_sleep(lua_State *L) { return do_sleep(L, 0); }

/* [-1, +(1|2), e] core.idle(seconds) -> true, or nil, "closing", or nil,
 * "retired" as soon as a reload replaced the generation the task runs in:
 * the sleep of a background loop, so that an old generation's VM closes
 * at the reload instead of when its loops next wake (100 reloads would
 * otherwise keep 100 VMs alive for a whole loop interval). */
static int l_idle(lua_State *L) { return do_sleep(L, 1); }

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

/* [-0, +1, m] core.info() -> { generation, vm_generation, mode,
 * last_reload_error, worker, pid, version, tasks, memory } */
static int l_info(lua_State *L) {
    jj_engine *e = jj_engine_of(L);
    lua_createtable(L, 0, 10);
    lua_pushinteger(L, jj_engine_generation(e));
    lua_setfield(L, -2, "generation");
    /* the generation this VM is: less than `generation` once a reload retired it */
    lua_pushinteger(L, jj_gen_number(jj_gen_of_state(L)));
    lua_setfield(L, -2, "vm_generation");
    lua_pushstring(L, jj_engine_mode(e));
    lua_setfield(L, -2, "mode");
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
    lua_pushboolean(L, c->ratelimit_enabled);
    lua_setfield(L, -2, "ratelimit_enabled");
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

/* [-0, +(1|2), -] core.reload_all() -> true | nil, err: asks the master
 * process to reload every worker (SIGHUP, as `jollyjet reload` does). The
 * reload happens after this returns, in every worker including this one.
 * nil, err without a master (an embedding host, jollyjet spec) or when the
 * master is gone. */
static int l_reload_all(lua_State *L) {
    int master = jj_engine_master(jj_engine_of(L));
    const char *err = NULL;
    if (master <= 0) err = "no master process (embedded engine or spec run): reload through the host";
    else if (getppid() != master) err = "the master process is gone";
    else if (kill(master, SIGHUP) != 0) err = strerror(errno);
    if (err) {
        lua_pushnil(L);
        lua_pushstring(L, err);
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------ spawn */

typedef struct {
    ev_timer timer;
    jj_task *task;
    int nargs;
} spawned;

static void spawn_done(jj_task *t, int status, lua_State *co, int nres, const char *errmsg, void *ud) {
    (void)t; (void)co; (void)nres; (void)ud;
    if (status != LUA_OK) jj_log(JJ_LOG_ERROR, "background task failed: %s", errmsg ? errmsg : "?");
}

static void spawn_start(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    spawned *s = w->data;
    jj_task *t = s->task;
    int nargs = s->nargs;
    free(s);
    jj_task_run(t, nargs);
}

/* [-(n+1), +2, e] core.spawn(fn, ...) -> true | nil, err. Runs fn(...) in a
 * task of its own from the next loop turn (not tied to any request); its
 * errors are logged. For refreshes that must not delay the response.
 * nil, "closing" once the engine shuts down. */
static int l_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    int n = lua_gettop(L);
    jj_engine *e = jj_engine_of(L);
    luaL_argcheck(L, n < 200, 2, "too many arguments");
    if (jj_engine_closing(e)) {   /* the loop will not turn again */
        lua_pushnil(L);
        lua_pushliteral(L, "closing");
        return 2;
    }
    spawned *s = malloc(sizeof *s);
    jj_task *t = s ? jj_task_new(jj_gen_of_state(L), spawn_done, NULL) : NULL;
    if (!t) {
        free(s);
        lua_pushnil(L);
        lua_pushliteral(L, "cannot start a task");
        return 2;
    }
    lua_State *co = jj_task_state(t);
    lua_checkstack(co, n);   /* a fresh thread grows to 200 slots without failing in practice */
    lua_xmove(L, co, n);
    s->task = t;
    s->nargs = n - 1;
    ev_timer_init(&s->timer, spawn_start, 0., 0.);
    s->timer.data = s;
    ev_timer_start(jj_engine_loop(e), &s->timer);
    lua_pushboolean(L, 1);
    return 1;
}

/* ------------------------------------------------------------ events */

/* An event lets tasks wait for a value another task will produce (the
 * followers of a single-flight fill). ev:signal(...) wakes every waiter on
 * the next loop turn with those values; ev:wait(timeout) yields. */
#define EVENT_MT "engine.core.event"

typedef struct waiter {
    ev_timer timer;
    jj_wait *wait;
    int values_ref;           /* registry ref of the packed values */
    lua_State *L;             /* main thread, for the registry */
    struct waiter *next;
} waiter;

typedef struct {
    waiter *waiters;
    int signalled;
} event;

static void waiter_fire(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    waiter *wt = w->data;
    lua_State *co = jj_wait_target(wt->wait);
    if (!co || !lua_checkstack(co, 8)) {
        if (co) { jj_wait_resume(wt->wait, 0); }
        else jj_wait_release(wt->wait);
        luaL_unref(wt->L, LUA_REGISTRYINDEX, wt->values_ref);
        free(wt);
        return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, wt->values_ref);
    luaL_unref(wt->L, LUA_REGISTRYINDEX, wt->values_ref);
    int n = (int)lua_rawlen(co, -1);
    lua_getfield(co, -1, "n");
    if (lua_isinteger(co, -1)) n = (int)lua_tointeger(co, -1);
    lua_pop(co, 1);
    if (!lua_checkstack(co, n + 1)) n = 0;
    for (int i = 1; i <= n; i++) lua_rawgeti(co, -1 - (i - 1), i);
    lua_remove(co, -1 - n);
    jj_wait *wait = wt->wait;
    free(wt);
    jj_wait_resume(wait, n);
}

static int l_event(lua_State *L) {
    event *ev = lua_newuserdatauv(L, sizeof *ev, 0);
    ev->waiters = NULL;
    ev->signalled = 0;
    luaL_setmetatable(L, EVENT_MT);
    return 1;
}

/* [-2, +?, e] ev:wait(timeout_seconds) -> the signalled values, or
 * nil, "timeout". */
static int l_event_wait(lua_State *L) {
    event *ev = luaL_checkudata(L, 1, EVENT_MT);
    double s = luaL_checknumber(L, 2);
    luaL_argcheck(L, s > 0 && s <= 3600, 2, "timeout must be in (0, 3600] seconds");
    jj_wait *w = jj_wait_new(L, s * 1000.0);   /* raises outside a task */
    waiter *wt = calloc(1, sizeof *wt);
    if (!wt) {
        jj_wait_abandon(w);
        return luaL_error(L, "not enough memory");
    }
    wt->wait = w;
    wt->values_ref = LUA_NOREF;
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    wt->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    wt->next = ev->waiters;
    ev->waiters = wt;
    return jj_wait_yield(L, w);
}

/* [-(n+1), +1, e] ev:signal(...) -> number of waiters woken */
static int l_event_signal(lua_State *L) {
    event *ev = luaL_checkudata(L, 1, EVENT_MT);
    int n = lua_gettop(L) - 1;
    struct ev_loop *loop = jj_engine_loop(jj_engine_of(L));
    int woken = 0;
    waiter *wt = ev->waiters;
    ev->waiters = NULL;
    ev->signalled = 1;
    while (wt) {
        waiter *next = wt->next;
        if (!jj_wait_target(wt->wait)) {   /* timed out already */
            jj_wait_release(wt->wait);
            free(wt);
            wt = next;
            continue;
        }
        lua_createtable(L, n, 1);
        for (int i = 1; i <= n; i++) {
            lua_pushvalue(L, i + 1);
            lua_rawseti(L, -2, i);
        }
        lua_pushinteger(L, n);
        lua_setfield(L, -2, "n");
        wt->values_ref = luaL_ref(L, LUA_REGISTRYINDEX);
        ev_timer_init(&wt->timer, waiter_fire, 0., 0.);
        wt->timer.data = wt;
        ev_timer_start(loop, &wt->timer);
        woken++;
        wt = next;
    }
    lua_pushinteger(L, woken);
    return 1;
}

/* Waiters whose coroutine already timed out still hold the operation's
 * reference of their wait: drop it when the event goes away. A waiter
 * still suspended keeps the event alive (it is on the waiter's stack). */
static int l_event_gc(lua_State *L) {
    event *ev = luaL_checkudata(L, 1, EVENT_MT);
    waiter *wt = ev->waiters;
    ev->waiters = NULL;
    while (wt) {
        waiter *next = wt->next;
        if (!jj_wait_target(wt->wait)) jj_wait_release(wt->wait);
        free(wt);
        wt = next;
    }
    return 0;
}

int luaopen_engine_core(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"now", l_now},
        {"time", l_time},
        {"sleep", l_sleep},
        {"idle", l_idle},
        {"log", l_log},
        {"log_json", l_log_json},
        {"random_bytes", l_random_bytes},
        {"list_dir", l_list_dir},
        {"info", l_info},
        {"config", l_config},
        {"admin_token_matches", l_admin_token_matches},
        {"reload_all", l_reload_all},
        {"spawn", l_spawn},
        {"event", l_event},
        {NULL, NULL}};
    static const luaL_Reg event_methods[] = {
        {"wait", l_event_wait},
        {"signal", l_event_signal},
        {NULL, NULL}};
    if (luaL_newmetatable(L, EVENT_MT)) {
        luaL_newlib(L, event_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_event_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
