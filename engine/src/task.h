/* task.h: request coroutines and the one-shot waits they yield on.
 *
 * Every request (and every spec run) executes in its own Lua coroutine, a
 * "task". A C function that does I/O yields the task and the event loop
 * resumes it when the operation completes or its timeout fires, whichever
 * comes first: the coroutine is resumed exactly once per wait.
 *
 * The shape of a yielding C function (lua-nginx-module's):
 *
 *     static int l_get(lua_State *L) {
 *         ...check arguments (raise on misuse)...
 *         jj_wait *w = jj_wait_new(L, timeout_ms);   // raises outside a task
 *         if (start_op(..., on_done, w) != 0) {        // on_done NOT called
 *             jj_wait_abandon(w);
 *             lua_pushnil(L); lua_pushliteral(L, "redis unavailable");
 *             return 2;
 *         }
 *         return jj_wait_yield(L, w);   // results are what on_done pushes
 *     }
 *
 *     static void on_done(..., void *privdata) {      // called exactly once
 *         jj_wait *w = privdata;
 *         lua_State *co = jj_wait_target(w);
 *         if (co == NULL) { jj_wait_release(w); return; } // timed out / aborted
 *         int n = push_results(co, ...);
 *         jj_wait_resume(w, n);         // consumes w; may run Lua code
 *     }
 *
 * Ownership: a wait holds two references, the operation's and the
 * coroutine's. jj_wait_resume and jj_wait_release drop the operation's;
 * the timeout (or task abort) drops the coroutine's after resuming with
 * nil, "timeout" (or not at all for an aborted task). The wait is freed when
 * both are gone, so a late completion never touches freed memory.
 */
#ifndef JJ_TASK_H
#define JJ_TASK_H

#include <lua.h>
#include <stddef.h>

struct ev_loop;
typedef struct jj_wait jj_wait;
typedef struct jj_task jj_task;
typedef struct jj_engine jj_engine;

/* [-0, +0, v] Starts a wait for the task running L. Raises a Lua error if L
 * is not a task coroutine or cannot yield here. timeout_ms <= 0 means the
 * engine's default I/O timeout. */
jj_wait *jj_wait_new(lua_State *L, double timeout_ms);

/* [-0, +0, -] 1 when jj_wait_new(L, ...) would succeed: L is the running
 * task's coroutine, it can yield here and is not already waiting. 0 inside
 * __gc, a __close run by lua_resetthread, a nested coroutine, load time. */
int jj_wait_possible(lua_State *L);

/* [-0, +0, -] Undoes jj_wait_new when the operation could not be started
 * (its callback will never run). */
void jj_wait_abandon(jj_wait *w);

/* [-0, +?, -] Yields the task; `return jj_wait_yield(L, w);` */
int jj_wait_yield(lua_State *L, jj_wait *w);

/* The coroutine to push results onto, or NULL when the wait already ended
 * (timeout, aborted task); then call jj_wait_release. */
lua_State *jj_wait_target(jj_wait *w);

/* Builds results for the task with build(ud, arg) called under pcall on the
 * VM's main thread, then moves them to jj_wait_target(w) (which must not be
 * NULL). Building can allocate and so fail (VM memory limit): the task then
 * gets nil, <error message> rather than the process a panic. Returns the
 * number of values pushed; pass it to jj_wait_resume. */
int jj_wait_push_protected(jj_wait *w, lua_CFunction build, void *ud, lua_Integer arg);

/* The usual completion in one call: release w when its coroutine is gone,
 * else build the results with jj_wait_push_protected and resume. Consumes
 * the operation's reference either way. */
void jj_wait_finish(jj_wait *w, lua_CFunction build, void *ud, lua_Integer arg);

/* Resume the task with the top nresults values of jj_wait_target(w).
 * Consumes the operation's reference. */
void jj_wait_resume(jj_wait *w, int nresults);

/* Drop the operation's reference without resuming. */
void jj_wait_release(jj_wait *w);

/* The engine of the VM that L belongs to (never NULL inside the engine). */
jj_engine *jj_engine_of(lua_State *L);

#endif
