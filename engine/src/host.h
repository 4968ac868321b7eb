/* host.h: runs HTTP exchanges as Lua tasks on the engine's current
 * generation (the glue between http_server and vm). */
#ifndef JJ_HOST_H
#define JJ_HOST_H

#include "http_server.h"

typedef struct jj_engine jj_engine;

/* A jj_http_handler; ud is the jj_engine. */
void jj_host_handle(void *ud, jj_http_conn *c, const jj_http_exchange *x);

#endif
