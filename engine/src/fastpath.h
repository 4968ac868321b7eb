/* fastpath.h: cached entity GETs answered in C.
 *
 * A handler module may declare that GET <prefix><id> answers exactly the
 * cached value of <ns>:<id> (as jollyjet.cache stores it) when that value is
 * fresh. For such a request, and only when no per-request policy could change
 * the answer (the app registers a route only when no response-cache rule
 * applies to it and every rate-limit rule that may is keyed by ip or route;
 * a Cache-Control or Pragma request header always goes to Lua), the host
 * checks those rate limits (engine.ratelimit's batch, lua_ratelimit.h), then
 * looks the entry up in the L1 (bounded namespaces) or in Redis itself and
 * answers without entering Lua. Anything else (miss, stale, negative, tagged
 * entry, XFetch refresh due, Redis not trusted) goes to the Lua handler as
 * usual, with the limits already applied (jj_host_run_lua_limited), so
 * semantics are the handler's and the middleware's.
 */
#ifndef JJ_FASTPATH_H
#define JJ_FASTPATH_H

#include "http_server.h"

typedef struct jj_engine jj_engine;
typedef struct jj_gen jj_gen;
typedef struct jj_fast_table jj_fast_table;

/* 1 when the request was taken (answered now, or later from a Redis reply,
 * possibly by falling back to Lua); 0 when it must go to Lua now. */
int jj_fastpath_try(jj_engine *e, jj_gen *g, jj_http_conn *c, const jj_http_exchange *x);

void jj_fast_table_free(jj_fast_table *t);

#endif
