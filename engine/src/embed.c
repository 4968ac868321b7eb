/* embed.c: the public embedding API (engine/include/jollyjet.h) over the
 * internal engine: a jj_engine on the host's loop, requests and calls as
 * tasks of its current generation. */
#include "jollyjet.h"
#include "config.h"
#include "db.h"
#include "engine_internal.h"
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

/* A dispatch or call whose callback is still due. Owned by the embed (its
 * list) until the task ends or jj_embed_free detaches the task. */
typedef struct pending {
    jj_embed *owner;
    jj_task *task;
    struct pending *prev, *next;
    jj_embed_response *respond;   /* a dispatch, or */
    jj_embed_result *done;        /* a call */
    void *ud;
    char request_id[24];
    char method[16];
    char path[256];
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

/* mkdir -p for the parent directory of path. */
static void make_parent(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(buf, 0755);
        *p = '/';
    }
}

int jj_embed_start(jj_embed *e, struct ev_loop *loop, char *err, size_t errlen) {
    if (e->engine) { snprintf(err, errlen, "the engine is already started"); return -1; }
    jj_log_set_level(e->cfg.log_level);
    char merr[1024];
    make_parent(e->cfg.db_path);
    if (jj_db_migrate(e->cfg.db_path, e->cfg.migrations_dir, merr, sizeof merr) != 0) {
        snprintf(err, errlen, "DB_PATH: migrations failed: %s", merr);
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

typedef struct {
    const char *method, *path, *query;
    const char *const *headers;
    const char *body;
    size_t body_len;
    const char *peer;
    const char *request_id;
} request_in;

/* [-0, +1, m] The request table jollyjet.app.handle expects (as host.c
 * builds it from a socket). */
static void push_request(lua_State *L, const request_in *r) {
    lua_createtable(L, 0, 10);
    lua_pushstring(L, r->method);
    lua_setfield(L, -2, "method");
    if (*r->query) lua_pushfstring(L, "%s?%s", r->path, r->query);
    else lua_pushstring(L, r->path);
    lua_setfield(L, -2, "target");
    lua_pushstring(L, r->path);
    lua_setfield(L, -2, "path");
    lua_pushstring(L, r->query);
    lua_setfield(L, -2, "query");
    lua_pushliteral(L, "1.1");
    lua_setfield(L, -2, "http_version");
    lua_pushlstring(L, r->body ? r->body : "", r->body ? r->body_len : 0);
    lua_setfield(L, -2, "body");
    lua_pushstring(L, r->peer);
    lua_setfield(L, -2, "remote_addr");
    lua_pushstring(L, r->request_id);
    lua_setfield(L, -2, "id");
    lua_newtable(L);
    for (size_t i = 0; r->headers && r->headers[i] && r->headers[i + 1]; i += 2) {
        luaL_Buffer b;
        const char *n = r->headers[i];
        luaL_buffinit(L, &b);
        for (; *n; n++) luaL_addchar(&b, (char)tolower((unsigned char)*n));
        luaL_pushresult(&b);
        lua_pushvalue(L, -1);
        if (lua_rawget(L, -3) == LUA_TSTRING) {   /* repeated: join with ", " */
            lua_pushliteral(L, ", ");
            lua_pushstring(L, r->headers[i + 1]);
            lua_concat(L, 3);
        } else {
            lua_pop(L, 1);
            lua_pushstring(L, r->headers[i + 1]);
        }
        lua_rawset(L, -3);
    }
    lua_setfield(L, -2, "headers");
}

static int request_k(lua_State *L, int status, lua_KContext ctx) {
    (void)status;
    return lua_gettop(L) - (int)ctx;
}

/* The task's body: [handle, request_in] -> handle(request) results. The
 * request_in is valid during the first resume only. */
static int request_entry(lua_State *L) {
    const request_in *r = lua_touserdata(L, 2);
    lua_settop(L, 1);
    push_request(L, r);
    lua_callk(L, 1, LUA_MULTRET, 0, request_k);
    return request_k(L, LUA_OK, 0);
}

static void respond_error(jj_embed_response *respond, void *ud, int status, const char *code, const char *message) {
    char body[256];
    int n = snprintf(body, sizeof body, "{\"success\":false,\"error\":\"%s\",\"message\":\"%s\"}", code, message);
    static const char *const headers[] = { "Content-Type", "application/json" };
    respond(ud, status, headers, 1, body, (size_t)n);
}

/* Response headers collected from the handler's table into one buffer of
 * NUL-terminated strings, without allocating in the Lua state (this runs
 * outside any protected call). */
typedef struct {
    char *buf;
    size_t len, cap;
    size_t *offs;
    size_t n, ncap;
} hdr_list;

static int hdr_add(hdr_list *h, const char *s, size_t len) {
    if (memchr(s, '\r', len) || memchr(s, '\n', len) || memchr(s, 0, len)) return -1;
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

static int valid_name(const char *s, size_t len) {
    if (len == 0) return 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= ' ' || c >= 0x7f || strchr("\"(),/:;<=>?@[\\]{}", c)) return 0;
    }
    return 1;
}

/* One header; the value is a string, a number or a sequence of strings. */
static int hdr_collect(hdr_list *h, lua_State *co, int vidx, const char *name, size_t nlen) {
    size_t vlen;
    if (!valid_name(name, nlen)) return -1;
    switch (lua_type(co, vidx)) {
    case LUA_TSTRING: {
        const char *v = lua_tolstring(co, vidx, &vlen);
        return hdr_add(h, name, nlen) || hdr_add(h, v, vlen) ? -1 : 0;
    }
    case LUA_TNUMBER: {
        char buf[64];
        if (lua_isinteger(co, vidx)) snprintf(buf, sizeof buf, "%lld", (long long)lua_tointeger(co, vidx));
        else snprintf(buf, sizeof buf, "%.14g", lua_tonumber(co, vidx));
        return hdr_add(h, name, nlen) || hdr_add(h, buf, strlen(buf)) ? -1 : 0;
    }
    case LUA_TTABLE: {
        lua_Integer n = (lua_Integer)lua_rawlen(co, vidx);
        for (lua_Integer i = 1; i <= n; i++) {
            if (lua_rawgeti(co, vidx, i) != LUA_TSTRING) { lua_pop(co, 1); return -1; }
            const char *v = lua_tolstring(co, -1, &vlen);
            int rc = hdr_add(h, name, nlen) || hdr_add(h, v, vlen);
            lua_pop(co, 1);
            if (rc) return -1;
        }
        return 0;
    }
    default:
        return -1;
    }
}

static void request_done(jj_task *t, int status, lua_State *co, int nres, const char *errmsg, void *ud) {
    (void)t;
    pending *p = ud;
    jj_embed_response *respond = p->respond;
    void *rud = p->ud;
    char where[400];
    snprintf(where, sizeof where, "\"request_id\":\"%s\",\"method\":\"%s\",\"path\":\"%s\",\"embedded\":true",
             p->request_id, p->method, p->path);
    char method[16], path[256];
    snprintf(method, sizeof method, "%s", p->method);
    snprintf(path, sizeof path, "%s", p->path);
    pending_free(p);
    if (status != LUA_OK) {
        const char *m = errmsg ? errmsg : "?";
        jj_log_kv(JJ_LOG_ERROR, where, "handler error: %s", m);
        respond_error(respond, rud, 500, "internal_error",
                      strstr(m, "instruction limit") ? "handler exceeded its instruction budget"
                      : strstr(m, "not enough memory") ? "handler exceeded its memory budget"
                      : "handler error");
        return;
    }
    int base = lua_gettop(co) - nres;
    int code = nres >= 1 && lua_isinteger(co, base + 1) ? (int)lua_tointeger(co, base + 1) : 0;
    if (code < 100 || code > 599) {
        jj_log_kv(JJ_LOG_ERROR, where, "handler for %s %s returned no valid status", method, path);
        respond_error(respond, rud, 500, "internal_error", "handler returned an invalid response");
        return;
    }
    hdr_list h = {0};
    int bad = 0;
    if (nres >= 2 && lua_istable(co, base + 2)) {
        lua_pushnil(co);
        while (!bad && lua_next(co, base + 2)) {
            size_t nlen = 0;
            const char *name = lua_type(co, -2) == LUA_TSTRING ? lua_tolstring(co, -2, &nlen) : NULL;
            bad = !name || hdr_collect(&h, co, lua_gettop(co), name, nlen) != 0;
            lua_pop(co, bad ? 2 : 1);
        }
    }
    const char **list = bad ? NULL : malloc((h.n + 1) * sizeof *list);
    if (!list) {
        free(h.buf);
        free(h.offs);
        jj_log_kv(JJ_LOG_ERROR, where, "handler for %s %s returned an invalid header", method, path);
        respond_error(respond, rud, 500, "internal_error", "handler returned an invalid header");
        return;
    }
    for (size_t i = 0; i < h.n; i++) list[i] = h.buf + h.offs[i];
    size_t blen = 0;
    const char *body = "";
    if (nres >= 3 && lua_type(co, base + 3) == LUA_TSTRING) body = lua_tolstring(co, base + 3, &blen);
    respond(rud, code, list, h.n / 2, body, blen);
    free(list);
    free(h.buf);
    free(h.offs);
}

int jj_embed_dispatch(jj_embed *e, const char *method, const char *path, const char *query,
                      const char *const *headers, const char *body, size_t body_len, const char *peer,
                      jj_embed_response *respond, void *ud) {
    pending *p = pending_new(e);
    jj_task *t = p ? start_task(e, request_done, p) : NULL;
    if (!t) {
        if (p) pending_free(p);
        respond_error(respond, ud, 503, "unavailable", "the engine cannot take this request now");
        return -1;
    }
    p->task = t;
    p->respond = respond;
    p->ud = ud;
    snprintf(p->request_id, sizeof p->request_id, "%08x%08lx", e->id_prefix, ++e->requests);
    snprintf(p->method, sizeof p->method, "%s", method);
    snprintf(p->path, sizeof p->path, "%s", path);
    for (char *q = p->path; *q; q++) if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20) *q = '?';
    request_in r = {
        .method = method, .path = path, .query = query ? query : "", .headers = headers,
        .body = body, .body_len = body_len, .peer = peer ? peer : "127.0.0.1", .request_id = p->request_id,
    };
    jj_gen *g = jj_engine_current_gen(e->engine);
    lua_State *co = jj_task_state(t);
    lua_pushcfunction(co, request_entry);
    lua_rawgeti(co, LUA_REGISTRYINDEX, jj_gen_entry_ref(g));
    lua_pushlightuserdata(co, &r);
    jj_task_run(t, 2);
    return 0;
}

/* ---------------------------------------------------------------- free */

void jj_embed_free(jj_embed *e) {
    if (!e) return;
    while (e->pending) {
        jj_task_detach(e->pending->task);
        pending_free(e->pending);
    }
    jj_engine_free(e->engine);
    for (size_t i = 0; i < e->nmodules; i++) free((char *)e->modules[i].name);
    free(e->modules);
    free(e);
}
