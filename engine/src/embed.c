/* embed.c: the public embedding API (engine/include/jollyjet.h) over the
 * internal engine: a jj_engine on the host's loop, requests and calls as
 * tasks of its current generation. */
#include "jollyjet.h"
#include "config.h"
#include "db.h"
#include "engine_internal.h"
#include "host.h"
#include "log.h"
#include "vm.h"

#include <ctype.h>
#include <lauxlib.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

/* The response of a dispatch: headers collected into one buffer of
 * NUL-terminated strings (name, value, name, value, ...), then handed to the
 * embedding host's callback. host.c has already checked them. */
typedef struct {
    char *buf;
    size_t len, cap;
    size_t *offs;
    size_t n, ncap;
} hdr_list;

/* A dispatch or call whose callback is still due. Owned by the embed (its
 * list) until the task ends or jj_embed_free detaches the task. */
typedef struct pending {
    jj_embed *owner;
    jj_task *task;
    struct pending *prev, *next;
    jj_embed_response *respond;   /* a dispatch, or */
    jj_embed_result *done;        /* a call */
    void *ud;
    jj_host_call *call;           /* a dispatch still running */
    int status;                   /* a dispatch's response being collected */
    hdr_list hdrs;
    char request_id[24];
} pending;

struct jj_embed {
    jj_config cfg;                 /* the engine borrows it */
    jj_engine *engine;             /* NULL until started */
    jj_engine_module *modules;     /* names owned here; the engine borrows the array */
    size_t nmodules, modules_cap;
    pending *pending;
    unsigned id_prefix;
    unsigned long requests;
};

/* ------------------------------------------------------------ settings */

typedef struct {
    const char *const *settings;
    size_t npairs;
    unsigned char *used;
    int env;
} lookup;

static const char *lookup_get(const char *name, void *ud) {
    lookup *l = ud;
    for (size_t i = 0; i < l->npairs; i++) {
        if (strcmp(l->settings[2 * i], name) != 0) continue;
        l->used[i] = 1;
        if (l->settings[2 * i + 1]) return l->settings[2 * i + 1];
    }
    return l->env ? getenv(name) : NULL;
}

jj_embed *jj_embed_new(const char *const *settings, int flags, char *err, size_t errlen) {
    lookup l = { settings, 0, NULL, (flags & JJ_EMBED_ENV) != 0 };
    if (settings) {
        while (settings[2 * l.npairs]) l.npairs++;
    }
    jj_embed *e = calloc(1, sizeof *e);
    l.used = calloc(l.npairs + 1, 1);
    if (!e || !l.used) {
        free(e);
        free(l.used);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (jj_config_load_from(&e->cfg, lookup_get, &l, err, errlen) != 0) goto fail;
    for (size_t i = 0; i < l.npairs; i++) {
        if (!l.used[i]) {
            snprintf(err, errlen, "%s: not a setting the engine reads here (unknown, or overridden by REDIS_URL)",
                     settings[2 * i]);
            goto fail;
        }
    }
    free(l.used);
    if (getrandom(&e->id_prefix, sizeof e->id_prefix, 0) != sizeof e->id_prefix) e->id_prefix = (unsigned)getpid();
    return e;
fail:
    free(l.used);
    free(e);
    return NULL;
}

int jj_embed_add_module(jj_embed *e, const char *name, lua_CFunction open) {
    if (!e || e->engine || !name || !*name || !open) return -1;
    if (!strncmp(name, "engine.", 7) || !strncmp(name, "jollyjet.", 9)) return -1;
    if (e->nmodules == e->modules_cap) {
        size_t cap = e->modules_cap ? 2 * e->modules_cap : 4;
        jj_engine_module *m = realloc(e->modules, cap * sizeof *m);
        if (!m) return -1;
        e->modules = m;
        e->modules_cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) return -1;
    e->modules[e->nmodules].name = copy;
    e->modules[e->nmodules].open = open;
    e->nmodules++;
    return 0;
}

int jj_embed_start(jj_embed *e, struct ev_loop *loop, char *err, size_t errlen) {
    if (e->engine) { snprintf(err, errlen, "the engine is already started"); return -1; }
    jj_log_set_level(e->cfg.log_level);
    char merr[1024];
    if (!e->cfg.db_url[0]) jj_config_make_parent(e->cfg.db_path);
    if (jj_db_migrate(JJ_CONFIG_DB_TARGET(&e->cfg), e->cfg.migrations_dir, merr, sizeof merr) != 0) {
        snprintf(err, errlen, "%s: migrations failed: %s", JJ_CONFIG_DB_VAR(&e->cfg), merr);
        return -1;
    }
    e->engine = jj_engine_new_with(loop, &e->cfg, 0, JJ_GEN_APP, e->modules, e->nmodules, err, errlen);
    return e->engine ? 0 : -1;
}

int jj_embed_reload(jj_embed *e, char *err, size_t errlen) {
    if (!e->engine) { snprintf(err, errlen, "the engine is not started"); return -1; }
    if (jj_engine_reload(e->engine) == 0) return 0;
    const char *msg = jj_engine_last_reload_error(e->engine);
    snprintf(err, errlen, "%s", msg ? msg : "reload failed");
    return -1;
}

/* ------------------------------------------------------------- pending */

static pending *pending_new(jj_embed *e) {
    pending *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->owner = e;
    p->next = e->pending;
    if (e->pending) e->pending->prev = p;
    e->pending = p;
    return p;
}

static void pending_free(pending *p) {
    if (p->prev) p->prev->next = p->next;
    else p->owner->pending = p->next;
    if (p->next) p->next->prev = p->prev;
    free(p);
}

/* A task on the current generation, or NULL (not started, out of VM memory). */
static jj_task *start_task(jj_embed *e, jj_task_done *done, pending *p) {
    jj_gen *g = e->engine ? jj_engine_current_gen(e->engine) : NULL;
    return g ? jj_task_new(g, done, p) : NULL;
}

/* ---------------------------------------------------------------- calls */

/* [-0, +1, e] Leaves the first result as a string or nil. */
static int call_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status; (void)ctx;
    lua_settop(L, 1);
    switch (lua_type(L, 1)) {
    case LUA_TTABLE:
        lua_getglobal(L, "require");
        lua_pushliteral(L, "cjson");
        lua_call(L, 1, 1);
        lua_getfield(L, -1, "encode");
        lua_pushvalue(L, 1);
        lua_call(L, 1, 1);
        break;
    case LUA_TBOOLEAN:
        lua_pushstring(L, lua_toboolean(L, 1) ? "true" : "false");
        break;
    case LUA_TNUMBER:
    case LUA_TSTRING:
        lua_pushstring(L, lua_tostring(L, 1));
        break;
    case LUA_TNIL:
    case LUA_TNONE:
        lua_pushnil(L);
        break;
    default:
        return luaL_error(L, "the function returned a %s (expected a string, number, boolean, table or nil)",
                          luaL_typename(L, 1));
    }
    return 1;
}

/* The task's body: [name, args...] -> require(module)[function](args...). */
static int call_entry(lua_State *L) {
    const char *name = luaL_checkstring(L, 1);
    const char *dot = strrchr(name, '.');
    if (!dot || dot == name || !dot[1])
        return luaL_error(L, "jj_embed_call: expected \"module.function\", got \"%s\"", name);
    lua_getglobal(L, "require");
    lua_pushlstring(L, name, (size_t)(dot - name));
    lua_call(L, 1, 1);
    if (!lua_istable(L, -1)) {
        lua_pushlstring(L, name, (size_t)(dot - name));
        return luaL_error(L, "jj_embed_call: module %s did not return a table", lua_tostring(L, -1));
    }
    if (lua_getfield(L, -1, dot + 1) != LUA_TFUNCTION)
        return luaL_error(L, "jj_embed_call: %s is not a function", name);
    lua_replace(L, 1);
    lua_pop(L, 1);
    lua_callk(L, lua_gettop(L) - 1, 1, 0, call_k);
    return call_k(L, LUA_OK, 0);
}

static void call_done(jj_task *t, int status, lua_State *co, int nres, const char *errmsg, void *ud) {
    (void)t;
    pending *p = ud;
    jj_embed_result *done = p->done;
    void *dud = p->ud;
    pending_free(p);
    if (status != LUA_OK) {
        const char *m = errmsg ? errmsg : "error";
        done(dud, 0, m, strlen(m));
        return;
    }
    size_t len = 0;
    const char *v = nres >= 1 && lua_type(co, -1) == LUA_TSTRING ? lua_tolstring(co, -1, &len) : NULL;
    done(dud, 1, v, len);
}

static int too_many_args(lua_State *L) {
    return luaL_error(L, "jj_embed_call: bad number of arguments");
}

int jj_embed_call(jj_embed *e, const char *function, const char *const *args, int nargs,
                  jj_embed_result *done, void *ud) {
    pending *p = pending_new(e);
    jj_task *t = p ? start_task(e, call_done, p) : NULL;
    if (!t) {
        if (p) pending_free(p);
        static const char msg[] = "the engine cannot take this call now (not started, or out of memory)";
        done(ud, 0, msg, sizeof msg - 1);
        return -1;
    }
    p->task = t;
    p->done = done;
    p->ud = ud;
    lua_State *co = jj_task_state(t);
    if (nargs < 0 || !lua_checkstack(co, nargs + 2)) {   /* the task ends with this error */
        lua_pushcfunction(co, too_many_args);
        jj_task_run(t, 0);
        return 0;
    }
    lua_pushcfunction(co, call_entry);
    lua_pushstring(co, function ? function : "");
    for (int i = 0; i < nargs; i++) lua_pushstring(co, args[i] ? args[i] : "");
    jj_task_run(t, nargs + 1);
    return 0;
}

/* ------------------------------------------------------------- requests */


static void respond_error(jj_embed_response *respond, void *ud, int status, const char *code, const char *message) {
    char body[256];
    int n = snprintf(body, sizeof body, "{\"success\":false,\"error\":\"%s\",\"message\":\"%s\"}", code, message);
    static const char *const headers[] = { "Content-Type", "application/json" };
    respond(ud, status, headers, 1, body, (size_t)n);
}

static int hdr_add(hdr_list *h, const char *s, size_t len) {
    if (h->len + len + 1 > h->cap) {
        size_t cap = h->cap ? h->cap : 512;
        while (cap < h->len + len + 1) cap *= 2;
        char *b = realloc(h->buf, cap);
        if (!b) return -1;
        h->buf = b;
        h->cap = cap;
    }
    if (h->n == h->ncap) {
        size_t ncap = h->ncap ? 2 * h->ncap : 16;
        size_t *o = realloc(h->offs, ncap * sizeof *o);
        if (!o) return -1;
        h->offs = o;
        h->ncap = ncap;
    }
    memcpy(h->buf + h->len, s, len);
    h->buf[h->len + len] = 0;
    h->offs[h->n++] = h->len;
    h->len += len + 1;
    return 0;
}

static void hdr_free(hdr_list *h) {
    free(h->buf);
    free(h->offs);
    memset(h, 0, sizeof *h);
}

static void sink_begin(void *ud, int status) { ((pending *)ud)->status = status; }

static int sink_header(void *ud, const char *n, size_t nl, const char *v, size_t vl) {
    pending *p = ud;
    return hdr_add(&p->hdrs, n, nl) || hdr_add(&p->hdrs, v, vl) ? -1 : 0;
}

static void sink_discard(void *ud) { hdr_free(&((pending *)ud)->hdrs); }

static void sink_end(void *ud, const char *body, size_t len) {
    pending *p = ud;
    jj_embed_response *respond = p->respond;
    void *rud = p->ud;
    int status = p->status;
    hdr_list h = p->hdrs;
    pending_free(p);   /* first: the callback may dispatch again, or free the embed */
    const char **list = malloc((h.n + 1) * sizeof *list);
    if (!list) {
        hdr_free(&h);
        respond_error(respond, rud, 500, "internal_error", "out of memory");
        return;
    }
    for (size_t i = 0; i < h.n; i++) list[i] = h.buf + h.offs[i];
    respond(rud, status, list, h.n / 2, body ? body : "", body ? len : 0);
    free(list);
    hdr_free(&h);
}

static void sink_fail(void *ud, int status, const char *code, const char *message) {
    pending *p = ud;
    jj_embed_response *respond = p->respond;
    void *rud = p->ud;
    hdr_free(&p->hdrs);
    pending_free(p);
    respond_error(respond, rud, status, code, message);
}

static const jj_host_sink embed_sink = {sink_begin, sink_header, sink_end, sink_discard, sink_fail, NULL};

/* The request goes through the same path as one read from a socket
 * (host.c): the embedding host's fields become a parsed request. */
int jj_embed_dispatch(jj_embed *e, const char *method, const char *path, const char *query,
                      const char *const *headers, const char *body, size_t body_len, const char *peer,
                      jj_embed_response *respond, void *ud) {
    if (!e->engine) {
        respond_error(respond, ud, 503, "unavailable", "the engine is not started");
        return -1;
    }
    pending *p = pending_new(e);
    if (!p) {
        respond_error(respond, ud, 503, "unavailable", "the engine cannot take this request now");
        return -1;
    }
    p->respond = respond;
    p->ud = ud;
    snprintf(p->request_id, sizeof p->request_id, "%08x%08lx", e->id_prefix, ++e->requests);
    query = query ? query : "";
    size_t plen = strlen(path), qlen = strlen(query);
    char *target = malloc(plen + qlen + 2);
    jj_http_request *req = malloc(sizeof *req);
    if (!target || !req) {
        free(target);
        free(req);
        sink_fail(p, 503, "unavailable", "out of memory");
        return -1;
    }
    memcpy(target, path, plen);
    if (qlen) { target[plen] = '?'; memcpy(target + plen + 1, query, qlen); }
    memset(req, 0, sizeof *req);
    req->method = method;
    req->method_len = strlen(method);
    req->target = target;
    req->target_len = plen + (qlen ? qlen + 1 : 0);
    req->path = target;
    req->path_len = plen;
    req->query = qlen ? target + plen + 1 : NULL;
    req->query_len = qlen;
    req->minor_version = 1;
    req->content_length = (int64_t)body_len;
    req->keep_alive = 1;
    for (size_t i = 0; headers && headers[i] && headers[i + 1] && req->nheaders < JJ_HTTP_MAX_HEADERS; i += 2) {
        jj_http_header *h = &req->headers[req->nheaders++];
        h->name = headers[i];
        h->name_len = strlen(headers[i]);
        h->value = headers[i + 1];
        h->value_len = strlen(headers[i + 1]);
    }
    jj_http_exchange x = {
        .req = req, .body = body ? body : "", .body_len = body ? body_len : 0,
        .peer = peer ? peer : "127.0.0.1", .request_id = p->request_id,
    };
    /* x and req are read only during this call; p may already be answered
     * (and freed) when it returns: then the handle is NULL. */
    jj_host_call *call = jj_host_run(e->engine, &x, &embed_sink, p);
    if (call) p->call = call;
    free(target);
    free(req);
    return 0;
}

/* ---------------------------------------------------------------- free */

void jj_embed_free(jj_embed *e) {
    if (!e) return;
    while (e->pending) {
        pending *p = e->pending;
        if (p->call) jj_host_cancel(p->call);
        else if (p->task) jj_task_detach(p->task);
        hdr_free(&p->hdrs);
        pending_free(p);
    }
    jj_engine_free(e->engine);
    for (size_t i = 0; i < e->nmodules; i++) free((char *)e->modules[i].name);
    free(e->modules);
    free(e);
}
