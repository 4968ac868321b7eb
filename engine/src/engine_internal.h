/* engine_internal.h: creating and running an engine (worker, spec runner,
 * check). Bindings only need engine.h. */
#ifndef JJ_ENGINE_INTERNAL_H
#define JJ_ENGINE_INTERNAL_H

#include "engine.h"
#include "vm.h"

#include <stddef.h>

/* Creates the engine on loop: Redis client (connecting in the background),
 * database pool, and the first generation of the given kind. Returns NULL
 * with a message in err when the first generation does not build. cfg must
 * outlive the engine. */
jj_engine *jj_engine_new(struct ev_loop *loop, const jj_config *cfg, int worker_id, int kind,
                         char *err, size_t errlen);
void jj_engine_free(jj_engine *e);

/* An extra Lua module of an embedding host (jollyjet.h): every generation
 * gets package.preload[name] = open. */
typedef struct jj_engine_module {
    const char *name;
    lua_CFunction open;
} jj_engine_module;

/* jj_engine_new with extra modules; mods[0..nmods) and their names are
 * borrowed and must outlive the engine. */
jj_engine *jj_engine_new_with(struct ev_loop *loop, const jj_config *cfg, int worker_id, int kind,
                              const jj_engine_module *mods, size_t nmods, char *err, size_t errlen);
/* [-0, +0, m] Sets the extra modules in the preload table at index t. */
void jj_engine_preload(jj_engine *e, lua_State *L, int t);

/* Builds a new generation and swaps it in; on failure keeps the current one
 * and records the error (jj_engine_last_reload_error). Returns 0 or -1. */
int jj_engine_reload(jj_engine *e);
jj_gen *jj_engine_current_gen(jj_engine *e);

#endif
