/* host.h: runs requests as Lua tasks on the engine's current generation:
 * jollyjet.app.handle(req) -> status, headers, body, delivered to a sink.
 * The socket server (http_server) and an embedding host (embed.c) are two
 * sinks of the same path, so both see the same request table, the same
 * header rules and the same error answers. */
#ifndef JJ_HOST_H
#define JJ_HOST_H

#include "http_server.h"

typedef struct jj_engine jj_engine;
typedef struct jj_host_call jj_host_call;

/* Where a response goes. Exactly one of these sequences happens per run:
 * begin, header*, end  |  begin, header*, discard, fail  |  fail. */
typedef struct jj_host_sink {
    void (*begin)(void *ud, int status);
    /* name is a token, value has no CR/LF/NUL (checked before the call);
     * -1 refuses it (the response then fails with a 500) */
    int (*header)(void *ud, const char *name, size_t nlen, const char *value, size_t vlen);
    void (*end)(void *ud, const char *body, size_t len);
    void (*discard)(void *ud);   /* drop what begin and header built */
    /* a JSON error response {"success":false,"error":code,"message":...} */
    void (*fail)(void *ud, int status, const char *code, const char *message);
} jj_host_sink;

/* Runs the application for x (read only during this call). Returns a handle
 * for jj_host_cancel while the response is still due, or NULL when it was
 * already delivered (the handler finished without yielding, or no task
 * could start: then sink->fail answered 503). */
jj_host_call *jj_host_run(jj_engine *e, const jj_http_exchange *x, const jj_host_sink *sink, void *ud);
/* The sink goes away: nothing more is delivered to it. */
void jj_host_cancel(jj_host_call *call);

/* A jj_http_handler; ud is the jj_engine. Tries the C fast path for cached
 * entity GETs first (fastpath.h), else runs the Lua application. */
void jj_host_handle(void *ud, jj_http_conn *c, const jj_http_exchange *x);
/* Runs the Lua application for an exchange on a connection. */
void jj_host_run_lua(jj_engine *e, jj_http_conn *c, const jj_http_exchange *x);

/* A header the host already decided on. */
typedef struct jj_host_kv {
    const char *name;
    const char *value;
} jj_host_kv;
/* The same for a request whose rate limits the C fast path already checked
 * (and charged): the request table gets ratelimit_checked = true and
 * ratelimit = { [name] = value } (the headers jollyjet.ratelimit adds). */
void jj_host_run_lua_limited(jj_engine *e, jj_http_conn *c, const jj_http_exchange *x, const jj_host_kv *kv,
                             int nkv);

#endif
