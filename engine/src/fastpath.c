/* fastpath.c: see fastpath.h. Also the Lua module `engine.fastpath`:
 *
 *   fastpath.route{ prefix = "/api/products/", ns = "product", key_prefix = redis.key("c", "product") .. ":",
 *                   content_type = "application/json", bounded = false, beta = 1.0 }
 *       -- while a generation builds: register a route of that generation
 *   fastpath.trust(reconnects)  -- the cache library trusts Redis for this connection epoch
 *   fastpath.distrust()         -- ... or no longer (journaled invalidations pending)
 */
#include "fastpath.h"
#include "engine.h"
#include "host.h"
#include "http_stats.h"
#include "lru.h"
#include "lua_modules.h"
#include "metrics.h"
#include "redis.h"
#include "task.h"
#include "vm.h"

#include <ev.h>
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define MAX_ROUTES 8

typedef struct {
    char prefix[128];
    size_t prefix_len;
    char ns[64];
    char key_prefix[192];
    size_t key_prefix_len;
    char content_type[64];
    int bounded;
    double max_lag;      /* bounded: seconds an L1 entry is trusted */
    double beta;
    /* metric slots, looked up once (engine.metrics indices are stable) */
    int m_hits, m_level_l1, m_level_l2, m_fast;
    int route_id;        /* http_stats.h: the route label of its answers */
} route;

struct jj_fast_table {
    route routes[MAX_ROUTES];
    int n;
    long long trusted;   /* Redis reconnect count the cache library vouched for; -1: none */
};

void jj_fast_table_free(jj_fast_table *t) { free(t); }

static jj_fast_table *table_of(lua_State *L) {
    jj_gen *g = jj_gen_of_state(L);
    jj_fast_table *t = jj_gen_fast_table(g);
    if (!t) {
        t = calloc(1, sizeof *t);
        if (!t) luaL_error(L, "not enough memory");
        t->trusted = -1;
        jj_gen_set_fast_table(g, t);
    }
    return t;
}

static void copy_field(lua_State *L, int idx, const char *name, char *dst, size_t cap, int required) {
    lua_getfield(L, idx, name);
    size_t len = 0;
    const char *s = lua_tolstring(L, -1, &len);
    if (!s) {
        if (required) luaL_error(L, "fastpath.route: %s must be a string", name);
        dst[0] = 0;
    } else {
        if (len == 0 || len >= cap) luaL_error(L, "fastpath.route: %s must be 1..%d bytes", name, (int)cap - 1);
        memcpy(dst, s, len + 1);
    }
    lua_pop(L, 1);
}

/* [-1, +0, e] fastpath.route{...} */
static int l_route(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    jj_fast_table *t = table_of(L);
    if (t->n >= MAX_ROUTES) return luaL_error(L, "fastpath.route: at most %d routes", MAX_ROUTES);
    route *r = &t->routes[t->n];
    memset(r, 0, sizeof *r);
    copy_field(L, 1, "prefix", r->prefix, sizeof r->prefix, 1);
    copy_field(L, 1, "ns", r->ns, sizeof r->ns, 1);
    copy_field(L, 1, "key_prefix", r->key_prefix, sizeof r->key_prefix, 1);
    copy_field(L, 1, "content_type", r->content_type, sizeof r->content_type, 1);
    if (r->prefix[0] != '/' || r->prefix[strlen(r->prefix) - 1] != '/')
        return luaL_error(L, "fastpath.route: prefix must start and end with '/'");
    r->prefix_len = strlen(r->prefix);
    r->key_prefix_len = strlen(r->key_prefix);
    lua_getfield(L, 1, "bounded");
    r->bounded = lua_toboolean(L, -1);
    lua_getfield(L, 1, "beta");
    r->beta = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 1.0;
    lua_getfield(L, 1, "max_lag_ms");
    r->max_lag = lua_isnumber(L, -1) ? lua_tonumber(L, -1) / 1000.0 : 1.0;
    lua_pop(L, 3);
    char name[128];
    int n = snprintf(name, sizeof name, "cache_hits{ns=\"%s\"}", r->ns);
    r->m_hits = jj_metrics_lookup(name, (size_t)n, JJ_METRIC_COUNTER);
    n = snprintf(name, sizeof name, "cache_level_hits{ns=\"%s\",level=\"L1\"}", r->ns);
    r->m_level_l1 = jj_metrics_lookup(name, (size_t)n, JJ_METRIC_COUNTER);
    n = snprintf(name, sizeof name, "cache_level_hits{ns=\"%s\",level=\"L2\"}", r->ns);
    r->m_level_l2 = jj_metrics_lookup(name, (size_t)n, JJ_METRIC_COUNTER);
    static const char fast[] = "cache_fastpath_hits";
    r->m_fast = jj_metrics_lookup(fast, sizeof fast - 1, JJ_METRIC_COUNTER);
    /* the route label of the request metrics: the router pattern */
    lua_getfield(L, 1, "pattern");
    size_t plen;
    const char *pattern = lua_tolstring(L, -1, &plen);
    if (pattern) r->route_id = jj_http_stats_route(pattern, plen);
    else if ((n = snprintf(name, sizeof name, "%s{id}", r->prefix)) > 0 && (size_t)n < sizeof name)
        r->route_id = jj_http_stats_route(name, (size_t)n);
    else r->route_id = JJ_ROUTE_OTHER;
    lua_pop(L, 1);
    t->n++;
    return 0;
}

/* [-1, +0, e] fastpath.trust(reconnects) */
static int l_trust(lua_State *L) {
    table_of(L)->trusted = (long long)luaL_checkinteger(L, 1);
    return 0;
}

/* [-0, +0, e] fastpath.distrust() */
static int l_distrust(lua_State *L) {
    table_of(L)->trusted = -1;
    return 0;
}

int luaopen_engine_fastpath(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"route", l_route}, {"trust", l_trust}, {"distrust", l_distrust}, {NULL, NULL}};
    luaL_newlib(L, fns);
    return 1;
}

/* ------------------------------------------------------------ serving */

static double uniform01(void) {
    static uint64_t s;
    if (!s && getrandom(&s, sizeof s, 0) != sizeof s) s = 0x9e3779b97f4a7c15ull;
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    return ((double)(s >> 11) + 1.0) / 9007199254740993.0;   /* (0, 1] */
}

/* The value of a fresh, positive, untagged envelope
 * "<expiry>|<delta>|<version>|<negative>|<tags>[|<stored at>]\n<value>", or
 * NULL; *at_out is the stored-at time (0 when absent). */
static const char *fresh_value(const route *r, const char *env, size_t len, size_t *vlen, double *expiry_out,
                               double *at_out) {
    const char *nl = memchr(env, '\n', len);
    if (!nl) return NULL;
    char head[160];
    size_t hl = (size_t)(nl - env);
    if (hl >= sizeof head) return NULL;
    memcpy(head, env, hl);
    head[hl] = 0;
    char *p = head, *end;
    double expiry = strtod(p, &end);
    if (end == p || *end != '|') return NULL;
    p = end + 1;
    double delta = strtod(p, &end);
    if (end == p || *end != '|') return NULL;
    p = strchr(end + 1, '|');           /* skip the version */
    if (!p || p[1] != '0' || p[2] != '|' || (p[3] != 0 && p[3] != '|')) return NULL;   /* negative, or tagged */
    double at = p[3] == '|' ? strtod(p + 4, NULL) : 0;
    double now = ev_time();
    if (expiry <= now) return NULL;     /* stale or expired: the handler decides */
    /* XFetch: when an early refresh is due, let the handler start it. */
    if (r->beta > 0 && delta > 0 && now - delta * r->beta * log(uniform01()) >= expiry) return NULL;
    *vlen = len - hl - 1;
    if (expiry_out) *expiry_out = expiry;
    *at_out = at;
    return nl + 1;
}

static void count(int idx) { if (idx >= 0) jj_metrics_add_at(idx, 1); }

static void answer(jj_http_conn *c, const route *r, const char *body, size_t len, int level, double at) {
    jj_http_set_route(c, r->route_id);
    jj_http_response_start(c, 200);
    jj_http_response_header(c, "Content-Type", 12, r->content_type, strlen(r->content_type));
    jj_http_response_header(c, "X-Cache", 7, "HIT", 3);
    if (at > 0) {   /* as the handler does: whole seconds since the entry was stored */
        double age = ev_time() - at;
        char buf[24];
        int n = snprintf(buf, sizeof buf, "%lld", age > 0 ? (long long)age : 0LL);
        jj_http_response_header(c, "Age", 3, buf, (size_t)n);
    }
    jj_http_response_finish(c, body, len);
    count(r->m_hits);
    count(level);
    count(r->m_fast);
}

typedef struct {
    jj_engine *e;
    jj_http_conn *c;
    jj_http_exchange x;
    route r;
    jj_lru *l1;          /* bounded: where to keep what Redis answered */
    uint64_t l1_seq;     /* ... unless an invalidation reached it meanwhile */
    size_t klen;
    char key[72];
} pending;

static void on_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    pending *p = privdata;
    jj_http_conn *c = p->c;
    if (!jj_http_conn_alive(c)) {
        jj_http_response_finish(c, NULL, 0);   /* frees the abandoned connection */
    } else if (jj_engine_closing(p->e)) {
        jj_http_respond_error(c, 503, "unavailable", "the engine is shutting down");
    } else {
        size_t len = 0, vlen = 0;
        const char *s = (!err && reply && jj_reply_type(reply) == JJ_REPLY_STRING) ? jj_reply_str(reply, &len) : NULL;
        double expiry = 0, at = 0;
        const char *v = s ? fresh_value(&p->r, s, len, &vlen, &expiry, &at) : NULL;
        if (v && p->l1 && jj_engine_subscriber_up(p->e) && jj_lru_seq(p->l1) == p->l1_seq) {
            /* as the Lua path does: L1 keeps it for at most max_lag */
            double life = expiry - ev_time();
            if (life > p->r.max_lag) life = p->r.max_lag;
            double now = ev_now(jj_engine_loop(p->e));
            if (life > 0) jj_lru_set(p->l1, p->key, p->klen, s, len, now + life, 0, 0, now);
        }
        if (v) answer(c, &p->r, v, vlen, p->r.m_level_l2, at);
        else jj_host_run_lua(p->e, c, &p->x);   /* miss, stale, Redis trouble: the handler */
    }
    free(p);
}

static int valid_key(const char *k, size_t n) {
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)k[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-'))
            return 0;
    }
    return 1;
}

int jj_fastpath_try(jj_engine *e, jj_gen *g, jj_http_conn *c, const jj_http_exchange *x) {
    jj_fast_table *t = jj_gen_fast_table(g);
    if (!t || t->n == 0) return 0;
    const jj_http_request *q = x->req;
    if (!((q->method_len == 3 && memcmp(q->method, "GET", 3) == 0) ||
          (q->method_len == 4 && memcmp(q->method, "HEAD", 4) == 0)))
        return 0;
    if (q->query || jj_http_find_header(q, "cache-control") || jj_http_find_header(q, "pragma")) return 0;
    const route *r = NULL;
    for (int i = 0; i < t->n; i++)
        if (q->path_len > t->routes[i].prefix_len &&
            memcmp(q->path, t->routes[i].prefix, t->routes[i].prefix_len) == 0) { r = &t->routes[i]; break; }
    if (!r) return 0;
    const char *key = q->path + r->prefix_len;
    size_t klen = q->path_len - r->prefix_len;
    if (!valid_key(key, klen)) return 0;

    jj_lru *l1 = NULL;
    if (r->bounded && jj_engine_subscriber_up(e)) {
        l1 = jj_lru_registry_find(r->ns);
        jj_lru_entry ent;
        size_t vlen;
        double at = 0;
        const char *v;
        if (l1 && jj_lru_get(l1, key, klen, ev_now(jj_engine_loop(e)), &ent) == 0 &&
            (v = fresh_value(r, ent.value, ent.vlen, &vlen, NULL, &at))) {
            answer(c, r, v, vlen, r->m_level_l1, at);
            return 1;
        }
    }
    jj_redis *redis = jj_engine_redis(e);
    jj_redis_status st;
    jj_redis_get_status(redis, &st);
    if (!st.up || t->trusted < 0 || (long long)st.reconnects != t->trusted) return 0;
    pending *p = malloc(sizeof *p);
    if (!p) return 0;
    char k[256];
    int kn = snprintf(k, sizeof k, "%s%.*s", r->key_prefix, (int)klen, key);
    if (kn < 0 || (size_t)kn >= sizeof k) { free(p); return 0; }
    p->e = e;
    p->c = c;
    p->x = *x;
    p->r = *r;
    p->l1 = l1;
    p->l1_seq = l1 ? jj_lru_seq(l1) : 0;
    p->klen = klen;
    memcpy(p->key, key, klen);
    const char *argv[2] = {"GET", k};
    size_t lens[2] = {3, (size_t)kn};
    const char *err;
    if (jj_redis_command(redis, 2, argv, lens, on_reply, p, &err) != 0) {
        free(p);
        return 0;
    }
    return 1;
}
