/* vm.c: Lua VM generations, tasks and waits (see vm.h and task.h). */
#include "vm.h"
#include "fastpath.h"
#include "task.h"
#include "engine.h"
#include "engine_internal.h"
#include "log.h"
#include "lua_modules.h"

#include <ev.h>
#include <lauxlib.h>
#include <lualib.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/syscall.h>

/* Instructions between two count-hook calls: small enough to stop a runaway
 * loop quickly, large enough to cost nothing measurable. */
#define HOOK_STEP 10000

struct jj_gen {
    lua_State *L;
    jj_engine *engine;
    unsigned number;
    int refs;              /* engine's (while current) + one per live task */
    size_t mem, mem_limit;
    int entry_ref;         /* registry ref of jollyjet.app's handle, or LUA_NOREF */
    jj_task *running;      /* task being resumed right now */
    long load_instr, load_limit;
    jj_fast_table *fast;   /* engine.fastpath routes, or NULL */
    /* Tasks whose coroutine returned normally, kept for the next request:
     * a coroutine (and its stack and CallInfo list) costs a few hundred
     * instructions and a GC share to build. Each keeps its registry ref;
     * none holds a reference on the generation. */
    jj_task **pool;
    int npool, pool_cap;
};

/* Coroutines kept per generation: enough for the requests a worker has
 * in flight at once; past that, finished ones are left to the GC. */
#define POOL_MAX 256

struct jj_task {
    jj_gen *gen;
    lua_State *co;
    int co_ref;
    long instr, limit;     /* instructions run, budget (0 = unlimited) */
    int killed;
    jj_wait *wait;         /* the wait this task is suspended in, if any */
    jj_task_done *done;
    void *ud;
};

struct jj_wait {
    jj_task *task;         /* NULL once the coroutine side has ended */
    ev_timer timer;
    int refs;              /* operation's + coroutine's */
    struct ev_loop *loop;
};

static long live_tasks;

/* ---------------------------------------------------------------- gens */

static jj_gen **gen_slot(lua_State *L) { return (jj_gen **)lua_getextraspace(L); }

/* Every thread of a VM carries its generation in the extra space (Lua
 * copies the main thread's extra space into each new thread). */
static jj_gen *gen_of(lua_State *L) { return *gen_slot(L); }

/* NULL for a state that is not an engine VM (its extra space zeroed, as a
 * fuzz driver's bare state): callers that can run there check. */
jj_engine *jj_engine_of(lua_State *L) {
    jj_gen *g = gen_of(L);
    return g ? g->engine : NULL;
}
jj_gen *jj_gen_of_state(lua_State *L) { return gen_of(L); }

static void *gen_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    jj_gen *g = ud;
    size_t old = ptr ? osize : 0;
    if (nsize == 0) {
        free(ptr);
        g->mem -= old;
        return NULL;
    }
    /* Refusing an allocation makes Lua run an emergency collection and
     * then raise "not enough memory" in the allocating coroutine. */
    if (nsize > old && g->mem + (nsize - old) > g->mem_limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p) g->mem = g->mem - old + nsize;
    return p;
}

static void gen_close(jj_gen *g) {
    if (g->L) lua_close(g->L);
    for (int i = 0; i < g->npool; i++) free(g->pool[i]);
    free(g->pool);
    jj_fast_table_free(g->fast);
    free(g);
}

static void gen_unref(jj_gen *g) {
    if (--g->refs == 0) gen_close(g);
}

void jj_gen_release(jj_gen *g) { if (g) gen_unref(g); }
unsigned jj_gen_number(const jj_gen *g) { return g->number; }
lua_State *jj_gen_state(jj_gen *g) { return g->L; }
size_t jj_gen_memory(const jj_gen *g) { return g->mem; }
int jj_gen_entry_ref(const jj_gen *g) { return g->entry_ref; }
jj_fast_table *jj_gen_fast_table(jj_gen *g) { return g->fast; }
void jj_gen_set_fast_table(jj_gen *g, jj_fast_table *t) { g->fast = t; }

static void wrap_coroutine_lib(lua_State *L);

/* [-0, +0, e] Runs inside lua_pcall on a fresh VM: libraries, module path,
 * preloads, then (for an app generation) jollyjet.app. */
static int gen_init(lua_State *L) {
    jj_gen *g = gen_of(L);
    const jj_config *cfg = jj_engine_config(g->engine);
    int kind = (int)lua_tointeger(L, 1);
    luaL_openlibs(L);
    wrap_coroutine_lib(L);

    lua_getglobal(L, "package");
    lua_getfield(L, -1, "path");
    lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", cfg->lua_dir, cfg->lua_dir, lua_tostring(L, -1));
    lua_setfield(L, -3, "path");
    lua_pop(L, 1);
    luaL_getsubtable(L, -1, "preload");
    lua_pushcfunction(L, luaopen_engine_core);
    lua_setfield(L, -2, "engine.core");
    lua_pushcfunction(L, luaopen_engine_redis);
    lua_setfield(L, -2, "engine.redis");
    lua_pushcfunction(L, luaopen_engine_db);
    lua_setfield(L, -2, "engine.db");
    lua_pushcfunction(L, luaopen_engine_lru);
    lua_setfield(L, -2, "engine.lru");
    lua_pushcfunction(L, luaopen_engine_metrics);
    lua_setfield(L, -2, "engine.metrics");
    lua_pushcfunction(L, luaopen_engine_ratelimit);
    lua_setfield(L, -2, "engine.ratelimit");
    lua_pushcfunction(L, luaopen_engine_lock);
    lua_setfield(L, -2, "engine.lock");
    lua_pushcfunction(L, luaopen_engine_fastpath);
    lua_setfield(L, -2, "engine.fastpath");
    jj_engine_preload(g->engine, L, -1);   /* an embedding host's modules (jollyjet.h) */
    lua_pop(L, 2);

    if (kind == JJ_GEN_APP) {
        lua_getglobal(L, "require");
        lua_pushliteral(L, "jollyjet.app");
        lua_call(L, 1, 1);
        if (!lua_istable(L, -1)) luaL_error(L, "jollyjet.app must return a module table");
        lua_getfield(L, -1, "handle");
        if (!lua_isfunction(L, -1)) luaL_error(L, "jollyjet.app has no handle function");
        g->entry_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    }
    return 0;
}

/* Loading a generation runs user code too (modules, policy files): an
 * endless loop there must fail the reload, not hang the worker. */
static void load_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    jj_gen *g = gen_of(L);
    g->load_instr += HOOK_STEP;
    if (g->load_instr > g->load_limit)
        luaL_error(L, "loading exceeded its instruction budget (%d instructions)", (int)g->load_limit);
}

jj_gen *jj_gen_new(jj_engine *e, int kind, unsigned number, char *err, size_t errlen) {
    jj_gen *g = calloc(1, sizeof *g);
    if (!g) { snprintf(err, errlen, "out of memory"); return NULL; }
    g->engine = e;
    g->number = number;
    g->refs = 1;
    g->entry_ref = LUA_NOREF;
    g->mem_limit = jj_engine_config(e)->lua_memory_limit;
    g->L = lua_newstate(gen_alloc, g);
    if (!g->L) { free(g); snprintf(err, errlen, "cannot create Lua state"); return NULL; }
    *gen_slot(g->L) = g;
    long limit = jj_engine_config(e)->instruction_limit;
    g->load_limit = limit > 0 ? limit : LONG_MAX;   /* same budget as one request */
    lua_sethook(g->L, load_hook, LUA_MASKCOUNT, HOOK_STEP);
    lua_pushcfunction(g->L, gen_init);
    lua_pushinteger(g->L, kind);
    if (lua_pcall(g->L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(g->L, -1);
        snprintf(err, errlen, "%s", msg ? msg : "(error object is not a string)");
        gen_close(g);
        return NULL;
    }
    lua_sethook(g->L, NULL, 0, 0);
    lua_settop(g->L, 0);
    lua_gc(g->L, LUA_GCGEN, 0, 0);
    return g;
}

/* ------------------------------------------------------------ watchdog */

/* The instruction budget is counted by a count hook, but a Lua state with
 * any hook set runs every VM instruction through the hook dispatcher (a
 * fifth of a short request's cost). So on the thread that first runs a
 * task, a task starts without the hook, and a CPU-time timer of that
 * thread (WATCH_TICK_NS of its CPU time) sets it, from a signal handler
 * (lua_sethook is safe there), on a task that has been running for a whole
 * tick: a runaway loop is still counted and stopped, a request that ends
 * within a tick never pays for the hook. (So the budget counts from the
 * first tick of a resume on; a task whose every resume is shorter than a
 * tick is bounded by its I/O timeouts instead.) Coroutines a task creates
 * get the hook at once (coroutine.create / wrap are wrapped in gen_init),
 * since the signal only reaches the task's own coroutine. Other threads,
 * or if the timer cannot be made: the hook from the start, as before. */
#define WATCH_TICK_NS 2000000L
#define WATCH_SIGNAL (SIGRTMIN + 5)

static int watch_state;                   /* 0 not set up, 1 active, -1 unavailable */
static pthread_t watch_thread;
static lua_State *volatile watch_co;      /* the task coroutine being resumed */
static volatile unsigned long watch_seq;  /* bumped on each resume */

static void count_hook(lua_State *L, lua_Debug *ar);

static void on_watch_tick(int sig) {
    (void)sig;
    static unsigned long seen;
    lua_State *co = watch_co;
    unsigned long seq = watch_seq;
    if (co && seq == seen) lua_sethook(co, count_hook, LUA_MASKCOUNT, HOOK_STEP);
    seen = seq;
}

static void watch_forked(void) { watch_state = 0; }   /* timers do not survive fork */

/* 1 when tasks of this thread may start without the hook. */
static int watch_ready(void) {
    if (watch_state == 1) return pthread_equal(pthread_self(), watch_thread);
    if (watch_state == -1) return 0;
    static int atfork;
    if (!atfork) { pthread_atfork(NULL, NULL, watch_forked); atfork = 1; }
    watch_state = -1;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_watch_tick;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(WATCH_SIGNAL, &sa, NULL) != 0) return 0;
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = WATCH_SIGNAL;
    sev._sigev_un._tid = (pid_t)syscall(SYS_gettid);
    timer_t timer;
    if (timer_create(CLOCK_THREAD_CPUTIME_ID, &sev, &timer) != 0) return 0;
    struct itimerspec its = {{0, WATCH_TICK_NS}, {0, WATCH_TICK_NS}};
    if (timer_settime(timer, 0, &its, NULL) != 0) { timer_delete(timer); return 0; }
    watch_thread = pthread_self();
    watch_state = 1;
    return 1;
}

/* [-0, +1, e] coroutine.create / coroutine.wrap (upvalue 1) with the
 * count hook set on the caller first, so that the new coroutine inherits it. */
static int hooked_create(lua_State *L) {
    if (!lua_gethook(L)) lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_STEP);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, lua_gettop(L) - 1, 1);
    return 1;
}

static void wrap_coroutine_lib(lua_State *L) {
    static const char *const names[] = {"create", "wrap"};
    lua_getglobal(L, "coroutine");
    for (int i = 0; i < 2; i++) {
        lua_getfield(L, -1, names[i]);
        lua_pushcclosure(L, hooked_create, 1);
        lua_setfield(L, -2, names[i]);
    }
    lua_pop(L, 1);
}

/* --------------------------------------------------------------- tasks */

static void count_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    jj_task *t = gen_of(L)->running;
    if (!t || t->limit <= 0) return;
    t->instr += HOOK_STEP;
    if (t->instr <= t->limit) return;
    t->killed = 1;
    /* Yielding out of the hook cannot be caught by the handler's pcall, so a
     * runaway loop wrapped in pcall still ends; where a yield is impossible
     * (inside a C boundary) raise instead, and again at the next step. In a
     * coroutine of the handler's own the yield goes to its resumer, in the
     * task, whose own hook then ends the task (a pcall in that coroutine
     * would catch a raise, again and again). */
    if (lua_isyieldable(L)) {
        lua_yield(L, 0);   /* in a hook this returns; Lua yields after the hook */
        return;
    }
    luaL_error(L, "instruction limit exceeded (%d instructions)", (int)t->limit);
}

static int new_thread(lua_State *L) {
    lua_newthread(L);
    return 1;
}

jj_task *jj_task_new(jj_gen *g, jj_task_done *done, void *ud) {
    jj_task *t;
    if (g->npool > 0) {   /* a coroutine that ended normally (hook as jj_task_new left it) */
        t = g->pool[--g->npool];
        t->instr = 0;
        t->limit = jj_engine_config(g->engine)->instruction_limit;
        g->refs++;
        t->done = done;
        t->ud = ud;
        live_tasks++;
        return t;
    }
    t = calloc(1, sizeof *t);
    if (!t) return NULL;
    lua_State *L = g->L;
    lua_pushcfunction(L, new_thread);
    if (lua_pcall(L, 0, 1, 0) != LUA_OK) {   /* out of VM memory */
        lua_pop(L, 1);
        free(t);
        return NULL;
    }
    t->co = lua_tothread(L, -1);
    t->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    t->gen = g;
    g->refs++;
    t->done = done;
    t->ud = ud;
    t->limit = jj_engine_config(g->engine)->instruction_limit;
    if (!watch_ready()) lua_sethook(t->co, count_hook, LUA_MASKCOUNT, HOOK_STEP);
    live_tasks++;
    return t;
}

lua_State *jj_task_state(jj_task *t) { return t->co; }
void jj_task_detach(jj_task *t) { t->done = NULL; t->ud = NULL; }
void jj_task_unlimited(jj_task *t) { t->limit = 0; }
long jj_task_count(void) { return live_tasks; }

/* [-0, +1, m] The error at the top of co, with co's traceback, as a string
 * on the main thread. Runs under pcall: a traceback allocates. */
static int traceback(lua_State *L) {
    lua_State *co = lua_tothread(L, 1);
    const char *msg = lua_tostring(co, -1);
    if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(co, -1));
    luaL_traceback(L, co, msg, 0);
    return 1;
}

/* Keeps t (its coroutine emptied) for jj_task_new; 0 if the pool is full. */
static int pool_put(jj_gen *g, jj_task *t) {
    if (g->npool == g->pool_cap) {
        if (g->pool_cap >= POOL_MAX) return 0;
        int cap = g->pool_cap ? g->pool_cap * 2 : 16;
        jj_task **p = realloc(g->pool, (size_t)cap * sizeof *p);
        if (!p) return 0;
        g->pool = p;
        g->pool_cap = cap;
    }
    lua_settop(t->co, 0);
    if (watch_ready()) lua_sethook(t->co, NULL, 0, 0);   /* the watchdog may have set it */
    t->done = NULL;
    t->ud = NULL;
    g->pool[g->npool++] = t;
    return 1;
}

static void task_finish(jj_task *t, int status, int nres) {
    jj_gen *g = t->gen;
    lua_State *L = g->L;
    const char *errmsg = NULL;
    if (status != LUA_OK) {
        if (t->killed) {
            lua_pushfstring(L, "instruction limit exceeded (%I instructions)", (lua_Integer)t->limit);
        } else {
            lua_pushcfunction(L, traceback);
            lua_pushthread(t->co);
            lua_xmove(t->co, L, 1);
            if (lua_pcall(L, 1, 1, 0) != LUA_OK) { lua_pop(L, 1); lua_pushliteral(L, "error (no traceback: out of memory)"); }
        }
        errmsg = lua_tostring(L, -1);
    }
    if (t->done) t->done(t, status, t->co, nres, errmsg, t->ud);
    if (status != LUA_OK) {
        lua_pop(L, 1);
        /* Close pending to-be-closed variables of the dead coroutine. */
        lua_resetthread(t->co);
    }
    live_tasks--;
    /* Only a coroutine that returned normally is reused (an errored or
     * killed one may have been left in any state). */
    if (status == LUA_OK && !t->killed && !t->wait && lua_status(t->co) == LUA_OK && pool_put(g, t)) {
        gen_unref(g);
        return;
    }
    luaL_unref(L, LUA_REGISTRYINDEX, t->co_ref);
    free(t);
    gen_unref(g);
}

static void task_resume(jj_task *t, int nargs) {
    jj_gen *g = t->gen;
    jj_task *prev = g->running;
    int nres = 0;
    g->running = t;
    lua_State *prev_co = watch_co;
    watch_seq++;
    watch_co = t->co;
    int st = lua_resume(t->co, NULL, nargs, &nres);
    watch_co = prev_co;
    watch_seq++;
    g->running = prev;
    if (st == LUA_YIELD) {
        if (t->killed) { task_finish(t, JJ_TASK_KILLED, 0); return; }
        if (t->wait) return;   /* suspended in an engine call */
        lua_pop(t->co, nres);
        lua_pushliteral(t->co, "coroutine.yield() outside a coroutine of the handler's own");
        task_finish(t, LUA_ERRRUN, 0);
        return;
    }
    if (st == LUA_OK) {   /* killed: the budget ran out in a coroutine of its own, which yielded */
        if (t->killed) task_finish(t, JJ_TASK_KILLED, 0);
        else task_finish(t, LUA_OK, nres);
        return;
    }
    task_finish(t, t->killed ? JJ_TASK_KILLED : st, 0);
}

void jj_task_run(jj_task *t, int nargs) { task_resume(t, nargs); }

void *jj_task_running_ud(lua_State *L, jj_task_done *done) {
    jj_task *t = gen_of(L)->running;
    return t && done && t->done == done ? t->ud : NULL;
}

/* --------------------------------------------------------------- waits */

static void wait_unref(jj_wait *w) {
    if (--w->refs == 0) free(w);
}

static void wait_timeout(struct ev_loop *loop, ev_timer *timer, int revents) {
    (void)loop; (void)revents;
    jj_wait *w = timer->data;
    jj_task *t = w->task;
    w->task = NULL;
    t->wait = NULL;
    wait_unref(w);                       /* the coroutine's reference */
    lua_pushnil(t->co);
    lua_pushliteral(t->co, "timeout");
    task_resume(t, 2);
}

jj_wait *jj_wait_new(lua_State *L, double timeout_ms) {
    jj_gen *g = gen_of(L);
    jj_task *t = g->running;
    if (!t || t->co != L)
        luaL_error(L, "engine I/O is only possible in a request task (not at load time or in a nested coroutine)");
    if (!lua_isyieldable(L))
        luaL_error(L, "engine I/O cannot yield here (inside a metamethod or C callback)");
    if (t->wait) luaL_error(L, "task is already waiting");
    jj_wait *w = malloc(sizeof *w);
    if (!w) luaL_error(L, "not enough memory");
    if (timeout_ms <= 0) timeout_ms = jj_engine_io_timeout_ms(g->engine);
    w->task = t;
    w->refs = 2;
    w->loop = jj_engine_loop(g->engine);
    ev_timer_init(&w->timer, wait_timeout, timeout_ms / 1000.0, 0.);
    w->timer.data = w;
    t->wait = w;
    return w;
}

int jj_wait_possible(lua_State *L) {
    jj_task *t = gen_of(L)->running;
    return t && t->co == L && !t->wait && lua_isyieldable(L);
}

void jj_wait_abandon(jj_wait *w) {
    w->task->wait = NULL;
    free(w);
}

int jj_wait_yield(lua_State *L, jj_wait *w) {
    /* Timers count from the loop's cached time, which is stale after a long
     * stretch of Lua: refresh it (a vDSO clock read) so timeouts are true. */
    ev_now_update(w->loop);
    ev_timer_start(w->loop, &w->timer);
    return lua_yield(L, 0);
}

lua_State *jj_wait_target(jj_wait *w) { return w->task ? w->task->co : NULL; }

void jj_wait_resume(jj_wait *w, int nresults) {
    jj_task *t = w->task;
    ev_timer_stop(w->loop, &w->timer);
    t->wait = NULL;
    w->task = NULL;
    free(w);                             /* both references end here */
    task_resume(t, nresults);
}

void jj_wait_release(jj_wait *w) { wait_unref(w); }

int jj_wait_push_protected(jj_wait *w, lua_CFunction build, void *ud, lua_Integer arg) {
    lua_State *co = w->task->co;
    lua_State *L = w->task->gen->L;   /* the main thread: not running now */
    if (!lua_checkstack(co, LUA_MINSTACK) || !lua_checkstack(L, 4)) return 0;
    int base = lua_gettop(L);
    lua_pushcfunction(L, build);
    lua_pushlightuserdata(L, ud);
    lua_pushinteger(L, arg);
    int n;
    if (lua_pcall(L, 2, LUA_MULTRET, 0) == LUA_OK) {
        n = lua_gettop(L) - base;
        if (!lua_checkstack(co, n)) { lua_settop(L, base); return 0; }
    } else {
        lua_pushnil(co);   /* nil, <error, e.g. "not enough memory"> */
        n = 2;
        lua_xmove(L, co, 1);
        return n;
    }
    lua_xmove(L, co, n);
    return n;
}

void jj_wait_finish(jj_wait *w, lua_CFunction build, void *ud, lua_Integer arg) {
    if (!w->task) {
        wait_unref(w);
        return;
    }
    jj_wait_resume(w, jj_wait_push_protected(w, build, ud, arg));
}
