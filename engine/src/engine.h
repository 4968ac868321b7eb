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

/* The cache epoch: jollyjet.cache's value and lease keys carry it
 * (<prefix>c:<epoch>:<ns>:<key>), so one INCR of <prefix>epoch purges the
 * whole cache (DELETE /api/cache). The process learns it from Redis (the
 * cache library GETs it) and from "!epoch\t<n>" messages on the
 * invalidation channel. It is fresh (may be used to build keys) only when it
 * was learned on the current Redis connection, and either the subscriber has
 * been up ever since or it was learned less than JJ_EPOCH_RECHECK_S ago
 * (while the subscriber is down a purge could go unheard). The subscriber
 * going up or down forgets it. */
#define JJ_EPOCH_RECHECK_S 1.0
typedef struct jj_cache_epoch {
    long long value;          /* last learned, -1 if never */
    int fresh;
    unsigned long long seq;   /* changes on every epoch message and subscriber change */
} jj_cache_epoch;
void jj_engine_cache_epoch(jj_engine *e, jj_cache_epoch *out);
/* What a GET of <prefix>epoch answered; seq as read before sending it.
 * Returns -1 (and changes nothing) when seq moved meanwhile: ask again. A
 * changed value flushes every L1. */
int jj_engine_set_cache_epoch(jj_engine *e, long long value, unsigned long long seq);
/* A purge made the epoch value (here or elsewhere): flushes every L1 and,
 * when the epoch is known, moves it forward (never back: messages may
 * arrive out of order). */
void jj_engine_advance_cache_epoch(jj_engine *e, long long value);

/* The master process of a worker (0: none, e.g. embedded or jollyjet spec).
 * core.reload_all() signals it SIGHUP to reload every worker. */
void jj_engine_set_master(jj_engine *e, int pid);
int jj_engine_master(jj_engine *e);

/* Identity and reload state, for engine.core.info() and /health. */
int jj_engine_worker_id(jj_engine *e);
/* 1 once jj_engine_free has begun: late callbacks must not start Lua work. */
int jj_engine_closing(jj_engine *e);
unsigned jj_engine_generation(jj_engine *e);
/* "serve" (app generations that serve), "check" (jollyjet check: built
 * only to be validated, no loop runs) or "bare" (specs and tooling). */
const char *jj_engine_mode(jj_engine *e);
const char *jj_engine_last_reload_error(jj_engine *e); /* NULL if none */
#endif
