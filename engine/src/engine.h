/* engine.h: the per-process serving context (one per worker, or one per
 * embedding host). It owns the loop's Redis client, the database pool and
 * the current Lua generation. Lua bindings reach it through jj_engine_of(L).
 */
#ifndef JJ_ENGINE_H
#define JJ_ENGINE_H

#include "config.h"

struct ev_loop;
typedef struct jj_engine jj_engine;
typedef struct jj_redis jj_redis;
typedef struct jj_db jj_db;

struct ev_loop *jj_engine_loop(jj_engine *e);
jj_redis *jj_engine_redis(jj_engine *e);   /* never NULL once created */
jj_db *jj_engine_db(jj_engine *e);         /* NULL if the database failed to open */
const jj_config *jj_engine_config(jj_engine *e);
/* Default timeout of a yielding call, in milliseconds. */
double jj_engine_io_timeout_ms(jj_engine *e);
/* 1 while the L1 invalidation subscriber is subscribed (lru.subscriber_up()). */
int jj_engine_subscriber_up(jj_engine *e);



/* Identity and reload state, for engine.core.info() and /health. */
int jj_engine_worker_id(jj_engine *e);
/* 1 once jj_engine_free has begun: late callbacks must not start Lua work. */
int jj_engine_closing(jj_engine *e);
unsigned jj_engine_generation(jj_engine *e);
const char *jj_engine_last_reload_error(jj_engine *e); /* NULL if none */

/* Sets this worker's gauges in the shared metrics (metrics.h), each
 * labelled worker="<id>" so that every worker has its own series:
 * policy_generation, lua_memory_bytes, lua_tasks, and per L1 cache
 * l1_items{ns=..} and l1_bytes{ns=..}; adds the evictions since the last
 * call to the counter l1_evictions{ns=..}. The worker calls it every second
 * (and after a reload). */
void jj_engine_publish_metrics(jj_engine *e);
#endif
