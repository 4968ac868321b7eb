/* host.h: runs HTTP exchanges as Lua tasks on the engine's current
 * generation (the glue between http_server and vm). */
#ifndef JJ_HOST_H
#define JJ_HOST_H

#include "http_server.h"

typedef struct jj_engine jj_engine;

/* A jj_http_handler; ud is the jj_engine. Tries the C fast path for cached
 * entity GETs first (fastpath.h), else runs the Lua application. */
void jj_host_handle(void *ud, jj_http_conn *c, const jj_http_exchange *x);
/* Runs the Lua application for the exchange (x is only read during the call). */
void jj_host_run_lua(jj_engine *e, jj_http_conn *c, const jj_http_exchange *x);

#endif
