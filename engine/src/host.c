/* host.c: an HTTP exchange becomes a task that calls jollyjet.app.handle(req)
 * and turns its results (status, headers, body) into the response. */
#include "host.h"
#include "fastpath.h"
#include "engine.h"
#include "engine_internal.h"
#include "log.h"
#include "vm.h"

#include <ctype.h>
#include <stddef.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One run: the sink, and what the error log needs (the request's buffers
 * may be gone by the time a handler fails; copied raw, escaped only when an
 * error is logged). */
static const jj_host_sink conn_sink;

struct jj_host_call {
    const jj_host_sink *sink;   /* NULL once cancelled */
    void *ud;
    int *finished;              /* set while jj_host_run runs the first resume */
    const jj_http_exchange *x;  /* during the first resume; then the copies below */
    jj_host_call *next_free;
    int route_id;               /* jj_host_set_route; 0: unmatched */
    char request_id[24];        /* from here on: copied by keep_request */
    unsigned char method_len, path_len;
    char method[16];
    char path[255];
};

static void copy_raw(char *dst, unsigned char *dlen, size_t cap, const char *src, size_t len) {
    if (len > cap) len = cap;
    memcpy(dst, src, len);
    *dlen = (unsigned char)len;
}

/* dst <- s as JSON string content (no quotes), bounded */
static void json_text(char *dst, size_t cap, const char *s, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < len && o + 2 < cap; i++) {
        unsigned char ch = (unsigned char)s[i];
        dst[o++] = (ch == '"' || ch == '\\' || ch < 0x20) ? '?' : (char)ch;
    }
    dst[o] = 0;
}

/* [-0, +1, m] lowercased header name */
static void push_lower(lua_State *L, const char *s, size_t n) {
    char buf[256];
    if (n > sizeof buf) n = sizeof buf;
    for (size_t i = 0; i < n; i++) buf[i] = (char)tolower((unsigned char)s[i]);
    lua_pushlstring(L, buf, n);
}

/* [-0, +1, m] the headers table: lowercased names, repeated ones joined
 * with ", ". */
static void push_headers(lua_State *L, const jj_http_request *r) {
    lua_createtable(L, 0, (int)r->nheaders);
    for (size_t i = 0; i < r->nheaders; i++) {
        const jj_http_header *h = &r->headers[i];
        push_lower(L, h->name, h->name_len);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {   /* repeated: join with ", " */
            lua_pushliteral(L, ", ");
            lua_pushlstring(L, h->value, h->value_len);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushlstring(L, h->value, h->value_len);
        }
        lua_rawset(L, -3);
    }
}

/* The request table is built lazily: method, path and query (which the
 * router needs on every request) are set when it is made; the other fields
 * of README "Lua API" are made when a handler first reads them, from the
 * exchange, through the metatable's __index. The exchange lives only
 * during the first resume: if the task suspends, every field not read yet
 * is made then (materialize), before the request's buffers can move; once
 * the task has returned, an unread field of a request table a handler kept
 * reads as nil. One lazy request at a time: the first resume of a task
 * cannot start another request's. */
static struct {
    const void *table;              /* lua_topointer of the request table */
    const jj_http_exchange *x;
} lazy;
static const char lazy_key = 0;     /* registry[&lazy_key]: the lazy request table */
static const char req_mt_key = 0;   /* registry[&req_mt_key]: its metatable */

enum { F_NONE, F_TARGET, F_VERSION, F_BODY, F_REMOTE, F_ID, F_HEADERS };
static const char *const lazy_names[] = {NULL, "target", "http_version", "body", "remote_addr", "id", "headers"};

static int lazy_field(const char *k, size_t n) {
    int f;
    switch (n) {   /* the lazy names have distinct lengths */
    case 6: f = F_TARGET; break;
    case 12: f = F_VERSION; break;
    case 4: f = F_BODY; break;
    case 11: f = F_REMOTE; break;
    case 2: f = F_ID; break;
    case 7: f = F_HEADERS; break;
    default: return F_NONE;
    }
    return memcmp(k, lazy_names[f], n) == 0 ? f : F_NONE;
}

/* [-0, +1, m] field f of the exchange */
static void push_field(lua_State *L, const jj_http_exchange *x, int f) {
    const jj_http_request *r = x->req;
    switch (f) {
    case F_TARGET: lua_pushlstring(L, r->target, r->target_len); break;
    case F_VERSION: lua_pushstring(L, r->minor_version ? "1.1" : "1.0"); break;
    case F_BODY: lua_pushlstring(L, x->body, x->body_len); break;
    case F_REMOTE: lua_pushstring(L, x->peer); break;
    case F_ID: lua_pushstring(L, x->request_id); break;
    default: push_headers(L, r); break;
    }
}

/* __index(req, k): [-0, +1, m] a lazy field, made once and stored in req. */
static int req_index(lua_State *L) {
    if (lua_topointer(L, 1) != lazy.table || !lazy.x || lua_type(L, 2) != LUA_TSTRING) return 0;
    size_t n;
    const char *k = lua_tolstring(L, 2, &n);
    int f = lazy_field(k, n);
    if (f == F_NONE) return 0;
    push_field(L, lazy.x, f);
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_rawset(L, 1);
    return 1;
}

/* [-0, +0, e] lua_pcall'd on the main thread when the task suspends:
 * every lazy field the handler has not read yet. */
static int materialize(lua_State *L) {
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &lazy_key) != LUA_TTABLE) return 0;
    for (int f = F_TARGET; f <= F_HEADERS; f++) {   /* __index makes what is missing */
        lua_getfield(L, -1, lazy_names[f]);
        lua_pop(L, 1);
    }
    return 0;
}

/* [-1, +1, m] Builds the request table from the exchange (valid only
 * during the first resume; see lazy above). */
static void push_request(lua_State *L, const jj_http_exchange *x) {
    const jj_http_request *r = x->req;
    lua_createtable(L, 0, 12);
    lua_pushlstring(L, r->method, r->method_len);
    lua_setfield(L, -2, "method");
    lua_pushlstring(L, r->path, r->path_len);
    lua_setfield(L, -2, "path");
    if (r->query) lua_pushlstring(L, r->query, r->query_len);
    else lua_pushliteral(L, "");
    lua_setfield(L, -2, "query");
    if (lua_rawgetp(L, LUA_REGISTRYINDEX, &req_mt_key) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 1);
        lua_pushcfunction(L, req_index);
        lua_setfield(L, -2, "__index");
        lua_pushvalue(L, -1);
        lua_rawsetp(L, LUA_REGISTRYINDEX, &req_mt_key);
    }
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &lazy_key);
    lazy.table = lua_topointer(L, -1);
    lazy.x = x;
}

static int entry_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

/* What the task's body gets (a light userdata, valid during the first
 * resume). */
typedef struct host_input {
    const jj_http_exchange *x;
    const jj_host_kv *kv;   /* rate limits already applied (fast path) */
    int nkv;
} host_input;

/* The task's body: [handle, input] -> handle(request) results. */
static int entry(lua_State *L) {
    const host_input *in = lua_touserdata(L, 2);
    lua_settop(L, 1);
    push_request(L, in->x);
    if (in->kv) {
        lua_createtable(L, 0, in->nkv);
        for (int i = 0; i < in->nkv; i++) {
            lua_pushstring(L, in->kv[i].value);
            lua_setfield(L, -2, in->kv[i].name);
        }
        lua_setfield(L, -2, "ratelimit");
        lua_pushboolean(L, 1);
        lua_setfield(L, -2, "ratelimit_checked");
    }
    lua_callk(L, 1, LUA_MULTRET, 0, entry_k);
    return entry_k(L, LUA_OK, 0);
}

/* The header rules of every sink (jj_http_header_ok); the socket sink's
 * jj_http_response_header checks them itself. */
static int emit(jj_host_call *h, const char *name, size_t nlen, const char *v, size_t vlen) {
    if (h->sink != &conn_sink && !jj_http_header_ok(name, nlen, v, vlen)) return -1;
    if (jj_http_is_framing_header(name, nlen)) return 0;   /* the host frames the message */
    return h->sink->header(h->ud, name, nlen, v, vlen);
}

/* One header; value may be a string, a number, or a sequence of strings
 * (repeated header lines, e.g. Set-Cookie). */
static int write_header(jj_host_call *h, lua_State *co, int vidx, const char *name, size_t nlen) {
    size_t vlen;
    int t = lua_type(co, vidx);
    if (t == LUA_TSTRING) {
        const char *v = lua_tolstring(co, vidx, &vlen);
        return emit(h, name, nlen, v, vlen);
    }
    if (t == LUA_TNUMBER) {
        char buf[64];
        if (lua_isinteger(co, vidx)) snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(co, vidx));
        else snprintf(buf, sizeof buf, "%.14g", lua_tonumber(co, vidx));
        return emit(h, name, nlen, buf, strlen(buf));
    }
    if (t == LUA_TTABLE) {
        lua_Integer n = (lua_Integer)lua_rawlen(co, vidx);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(co, vidx, i) != LUA_TSTRING) { lua_pop(co, 1); return -1; }
            const char *v = lua_tolstring(co, -1, &vlen);
            int rc = emit(h, name, nlen, v, vlen);
            lua_pop(co, 1);
            if (rc) return -1;
        }
        return 0;
    }
    return -1;
}

/* What the error log needs, copied when the task outlives the exchange. */
static void keep_request(jj_host_call *h, const jj_http_exchange *x) {
    size_t idlen = strnlen(x->request_id, sizeof h->request_id - 1);
    memcpy(h->request_id, x->request_id, idlen);
    h->request_id[idlen] = 0;
    copy_raw(h->method, &h->method_len, sizeof h->method, x->req->method, x->req->method_len);
    copy_raw(h->path, &h->path_len, sizeof h->path, x->req->path, x->req->path_len);
}

static void log_failure(jj_host_call *h, const char *what) {
    char method[20], path[260], members[400];
    if (h->x) keep_request(h, h->x);
    json_text(method, sizeof method, h->method, h->method_len);
    json_text(path, sizeof path, h->path, h->path_len);
    snprintf(members, sizeof members, "\"request_id\":\"%s\",\"method\":\"%s\",\"path\":\"%s\"",
             h->request_id, method, path);
    jj_log_kv(JJ_LOG_ERROR, members, "%s", what);
}

/* Finished calls, kept for the next request (a worker runs one at a time
 * per connection; at most FREE_MAX are kept). */
#define FREE_MAX 256
static jj_host_call *free_calls;
static int nfree_calls;

static jj_host_call *call_new(void) {
    jj_host_call *h = free_calls;
    if (h) {
        free_calls = h->next_free;
        nfree_calls--;
        memset(h, 0, offsetof(jj_host_call, request_id));
        return h;
    }
    return calloc(1, sizeof *h);
}

static void call_free(jj_host_call *h) {
    if (nfree_calls >= FREE_MAX) { free(h); return; }
    h->next_free = free_calls;
    free_calls = h;
    nfree_calls++;
}

static void on_done(jj_task *t, int status, lua_State *co, int nres, const char *errmsg, void *ud) {
    (void)t;
    jj_host_call *h = ud;
    const jj_host_sink *sink = h->sink;
    if (h->finished) *h->finished = 1;
    if (!sink) { call_free(h); return; }   /* cancelled */
    if (sink->route) sink->route(h->ud, h->route_id);
    if (status != LUA_OK) {
        char what[2048];
        snprintf(what, sizeof what, "handler error: %s", errmsg ? errmsg : "?");
        log_failure(h, what);
        /* a memory error may arrive rethrown as a plain runtime error */
        sink->fail(h->ud, 500, "internal_error",
                   status == JJ_TASK_KILLED ? "handler exceeded its instruction budget"
                   : status == LUA_ERRMEM || strstr(errmsg ? errmsg : "", "not enough memory")
                     ? "handler exceeded its memory budget" : "handler error");
        call_free(h);
        return;
    }
    int base = lua_gettop(co) - nres;
    int code = nres >= 1 && lua_isinteger(co, base + 1) ? (int)lua_tointeger(co, base + 1) : 0;
    if (code < 100 || code > 599) {
        log_failure(h, "handler returned no valid status");
        sink->fail(h->ud, 500, "internal_error", "handler returned an invalid response");
        call_free(h);
        return;
    }
    sink->begin(h->ud, code);
    if (nres >= 2 && lua_istable(co, base + 2)) {
        lua_pushnil(co);
        while (lua_next(co, base + 2)) {
            size_t nlen = 0;
            const char *name = lua_type(co, -2) == LUA_TSTRING ? lua_tolstring(co, -2, &nlen) : NULL;
            if (!name || write_header(h, co, lua_gettop(co), name, nlen) != 0) {
                lua_pop(co, 2);
                sink->discard(h->ud);
                log_failure(h, "handler returned an invalid header");
                sink->fail(h->ud, 500, "internal_error", "handler returned an invalid header");
                call_free(h);
                return;
            }
            lua_pop(co, 1);
        }
    }
    size_t blen = 0;
    const char *body = NULL;
    if (nres >= 3 && lua_type(co, base + 3) == LUA_TSTRING) body = lua_tolstring(co, base + 3, &blen);
    sink->end(h->ud, body, blen);
    call_free(h);
}

int jj_host_set_route(lua_State *L, int route_id) {
    jj_host_call *h = jj_task_running_ud(L, on_done);
    if (!h) return 0;
    h->route_id = route_id;
    return 1;
}

static jj_host_call *run(jj_engine *e, const host_input *in, const jj_host_sink *sink, void *ud) {
    const jj_http_exchange *x = in->x;
    jj_gen *g = jj_engine_current_gen(e);
    jj_host_call *h = call_new();
    jj_task *t = h && g ? jj_task_new(g, on_done, h) : NULL;
    if (!t) {
        free(h);
        sink->fail(ud, 503, "unavailable", "the engine cannot take this request now");
        return NULL;
    }
    h->sink = sink;
    h->ud = ud;
    h->x = x;
    lua_State *co = jj_task_state(t);
    lua_pushcfunction(co, entry);
    lua_rawgeti(co, LUA_REGISTRYINDEX, jj_gen_entry_ref(g));
    lua_pushlightuserdata(co, (void *)in);
    int finished = 0;
    h->finished = &finished;
    jj_task_run(t, 2);   /* may finish (and free h) before it returns */
    if (!finished) {
        /* Suspended: the exchange goes away now. The request's unread lazy
         * fields are made from it first (on the main thread, which is not
         * running: the task is suspended; a memory error leaves them nil). */
        lua_State *L = jj_gen_state(g);
        if (lazy.x == x && lua_checkstack(L, 4)) {
            lua_pushcfunction(L, materialize);
            if (lua_pcall(L, 0, 0, 0) != LUA_OK) lua_pop(L, 1);
        }
        keep_request(h, x);
        h->x = NULL;
        h->finished = NULL;
    }
    lazy.x = NULL;
    lazy.table = NULL;
    return finished ? NULL : h;
}

jj_host_call *jj_host_run(jj_engine *e, const jj_http_exchange *x, const jj_host_sink *sink, void *ud) {
    host_input in = {x, NULL, 0};
    return run(e, &in, sink, ud);
}

void jj_host_cancel(jj_host_call *call) { if (call) call->sink = NULL; }

/* ------------------------------------------------------- the socket sink */

static void conn_begin(void *ud, int status) { jj_http_response_start(ud, status); }
static int conn_header(void *ud, const char *n, size_t nl, const char *v, size_t vl) {
    return jj_http_response_header(ud, n, nl, v, vl);
}
static void conn_end(void *ud, const char *body, size_t len) { jj_http_response_finish(ud, body, len); }
static void conn_discard(void *ud) { jj_http_response_discard(ud); }
static void conn_fail(void *ud, int status, const char *code, const char *message) {
    jj_http_respond_error(ud, status, code, message);
}

static void conn_route(void *ud, int route_id) { jj_http_set_route(ud, route_id); }

static const jj_host_sink conn_sink = {conn_begin, conn_header, conn_end, conn_discard, conn_fail, conn_route};

void jj_host_run_lua(jj_engine *e, jj_http_conn *c, const jj_http_exchange *x) {
    jj_host_run(e, x, &conn_sink, c);
}

void jj_host_run_lua_limited(jj_engine *e, jj_http_conn *c, const jj_http_exchange *x, const jj_host_kv *kv,
                             int nkv) {
    host_input in = {x, kv, nkv};
    run(e, &in, &conn_sink, c);
}

void jj_host_handle(void *ud, jj_http_conn *c, const jj_http_exchange *x) {
    jj_engine *e = ud;
    jj_gen *g = jj_engine_current_gen(e);
    if (g && jj_fastpath_try(e, g, c, x)) return;
    jj_host_run_lua(e, c, x);
}
