/* vm.h: Lua VM generations and the tasks (coroutines) that run in them.
 *
 * A generation is one lua_State with every module loaded and every policy
 * validated. The engine keeps one current generation; a reload builds a new
 * one and swaps it in only if the build succeeded. A generation is reference
 * counted: the engine holds one reference while it is current, and every
 * task holds one, so in-flight requests finish on the generation they
 * started on and the old VM is closed when its last task ends.
 */
#ifndef JJ_VM_H
#define JJ_VM_H

#include <lua.h>
#include <stddef.h>

typedef struct jj_engine jj_engine;
typedef struct jj_gen jj_gen;
typedef struct jj_task jj_task;

enum jj_gen_kind {
    JJ_GEN_APP = 0,  /* loads jollyjet.app (policies, router): serving */
    JJ_GEN_BARE,     /* engine modules only: specs and tooling */
    JJ_GEN_CHECK     /* an app generation built only to be validated (jollyjet
                        check): the engine opens no database or subscriber */
};

/* Builds a generation. On failure returns NULL with "file:line: reason"
 * in err. */
jj_gen *jj_gen_new(jj_engine *e, int kind, unsigned number, char *err, size_t errlen);
/* Drops the engine's reference; the VM closes when no task holds it. */
void jj_gen_release(jj_gen *g);
unsigned jj_gen_number(const jj_gen *g);
lua_State *jj_gen_state(jj_gen *g);
size_t jj_gen_memory(const jj_gen *g);
/* The C fast-path routes a generation registered (fastpath.c); owned by it. */
typedef struct jj_fast_table jj_fast_table;
jj_fast_table *jj_gen_fast_table(jj_gen *g);
void jj_gen_set_fast_table(jj_gen *g, jj_fast_table *t);
/* The generation a Lua state (any thread of it) belongs to. */
jj_gen *jj_gen_of_state(lua_State *L);
/* Registry reference of jollyjet.app.handle (app generations). */
int jj_gen_entry_ref(const jj_gen *g);

/* Called once when a task ends. status is LUA_OK with nres results on the
 * top of co's stack, JJ_TASK_KILLED when its instruction budget stopped it,
 * or another error status with a message (traceback included) as a C
 * string. The task is freed after the callback returns. */
#define JJ_TASK_KILLED 100
typedef void jj_task_done(jj_task *t, int status, lua_State *co, int nres,
                          const char *errmsg, void *ud);

/* Creates a task (a coroutine of g). Push the function and its arguments
 * onto jj_task_state(t), then call jj_task_run. */
jj_task *jj_task_new(jj_gen *g, jj_task_done *done, void *ud);
lua_State *jj_task_state(jj_task *t);
void jj_task_run(jj_task *t, int nargs);
/* The ud of the task running in L's generation right now when its done
 * callback is `done` (so its creator can find its own state), else NULL. */
void *jj_task_running_ud(lua_State *L, jj_task_done *done);
/* Forget the done callback (its receiver went away); the task still runs
 * to completion so that its waits resume exactly once. */
void jj_task_detach(jj_task *t);
/* Disable the instruction budget (specs and tooling). */
void jj_task_unlimited(jj_task *t);
/* Number of tasks alive in this process. */
long jj_task_count(void);

#endif
