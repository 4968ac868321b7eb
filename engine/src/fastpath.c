/* fastpath.c: see fastpath.h. Also the Lua module `engine.fastpath`:
 *
 *   fastpath.route{ prefix = "/api/products/", ns = "product", key_prefix = redis.key("c") .. ":",
 *                   content_type = "application/json", bounded = false, beta = 1.0 }
 *       -- while a generation builds: register a route of that generation; the
 *       -- value key is key_prefix .. <cache epoch> .. ":" .. ns .. ":" .. id
 *   fastpath.route{ ..., pattern = "/api/products/{id}", ratelimits = { rule, ... },
 *                   ratelimit_message = "...", ratelimit_allow = { "10.0.0.1", ... },
 *                   ratelimit_cidrs = { { lo, hi }, ... } }
 *       -- the rate-limit rules that may apply to the route (jollyjet.ratelimit.fast_rules):
 *       -- checked here, through engine.ratelimit's batch, before the cache lookup
 *   fastpath.trust(reconnects)  -- the cache library trusts Redis for this connection epoch
 *   fastpath.distrust()         -- ... or no longer (journaled invalidations pending)
 *   epoch, fresh, seq = fastpath.epoch()    -- the cache epoch (engine.h); epoch nil if never learned
 *   ok = fastpath.set_epoch(n, seq)         -- what GET <prefix>epoch answered (false: seq moved, ask again)
 *   fastpath.advance_epoch(n)               -- a purge made epoch n: flush every L1, move forward
 * The fast path answers only while the epoch is fresh.
 */
#include "fastpath.h"
#include "engine.h"
#include "host.h"
#include "http_stats.h"
#include "lru.h"
#include "lua_modules.h"
#include "lua_ratelimit.h"
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
#include <arpa/inet.h>
#include <sys/random.h>

#define MAX_ROUTES 8
#define MAX_RL 4          /* rate-limit rules per route */
#define MAX_ALLOW 16      /* allow-listed addresses / networks */

enum { RL_IP, RL_ROUTE };
enum { M_GET = 1, M_HEAD = 2 };

/* A rate-limit rule as jollyjet.ratelimit compiled it. */
typedef struct {
    jj_rl_args lim;
    int kind;                  /* RL_IP | RL_ROUTE */
    unsigned methods;          /* M_GET | M_HEAD */
    char prefix[128];          /* a prefix rule's prefix ("" for a route rule) */
    size_t prefix_len;
    char key_prefix[80];       /* "<name>:" */
    char policy_item[128];     /* "\"name\";q=100;w=60" */
    char current_item[96];     /* "\"name\";r=" */
    int m_allowed, m_rejected;
} rl_rule;

/* The rules of a route, shared (reference counted) by the route and the
 * requests in flight, which may outlive the generation. */
typedef struct {
    int refs;
    int n;
    rl_rule rules[MAX_RL];
    char message[512];         /* JSON string content */
    int nallow, ncidr;
    char allow[MAX_ALLOW][48];
    uint32_t lo[MAX_ALLOW], hi[MAX_ALLOW];
} rl_set;

static void rl_set_release(rl_set *s) {
    if (s && --s->refs == 0) free(s);
}

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
    char pattern[128];   /* the router pattern (rate-limit keys by route) */
    rl_set *rls;         /* NULL: no rate-limit rule applies */
    /* metric slots, looked up once (engine.metrics indices are stable) */
    int m_hits, m_level_l1, m_level_l2, m_fast, m_timeouts;
    int route_id;        /* http_stats.h: the route label of its answers */
} route;

struct jj_fast_table {
    route routes[MAX_ROUTES];
    int n;
    long long trusted;   /* Redis reconnect count the cache library vouched for; -1: none */
};

void jj_fast_table_free(jj_fast_table *t) {
    if (!t) return;
    for (int i = 0; i < t->n; i++) rl_set_release(t->routes[i].rls);
    free(t);
}

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

/* [-0, +0, e] a string field of the table at idx into dst (required) */
static void str_field(lua_State *L, int idx, const char *name, char *dst, size_t cap, const char *what) {
    lua_getfield(L, idx, name);
    size_t len = 0;
    const char *v = lua_tolstring(L, -1, &len);
    if (!v || len >= cap) luaL_error(L, "fastpath.route: %s.%s must be a string of at most %d bytes", what, name,
                                     (int)cap - 1);
    memcpy(dst, v, len + 1);
    lua_pop(L, 1);
}

/* [-0, +0, e] The route's rate-limit rules (fields ratelimits,
 * ratelimit_message, ratelimit_allow, ratelimit_cidrs of the table at 1). */
static rl_set *read_ratelimits(lua_State *L, const char *route_name) {
    if (lua_getfield(L, 1, "ratelimits") != LUA_TTABLE) {
        lua_pop(L, 1);
        return NULL;
    }
    int n = (int)luaL_len(L, -1);
    if (n == 0) { lua_pop(L, 1); return NULL; }
    if (n > MAX_RL) luaL_error(L, "fastpath.route: at most %d rate-limit rules per route", MAX_RL);
    rl_set tmp;
    memset(&tmp, 0, sizeof tmp);
    int t = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, t, i);
        int ri = lua_gettop(L);
        rl_rule *k = &tmp.rules[i - 1];
        luaL_checktype(L, ri, LUA_TTABLE);
        char name[64];
        str_field(L, ri, "name", name, sizeof name, "ratelimits[i]");
        lua_getfield(L, ri, "lim");
        k->lim = *jj_rl_args_check(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, ri, "kind");
        const char *kind = lua_tostring(L, -1);
        if (kind && strcmp(kind, "ip") == 0) k->kind = RL_IP;
        else if (kind && strcmp(kind, "route") == 0) k->kind = RL_ROUTE;
        else luaL_error(L, "fastpath.route: rate-limit rule %s: kind must be ip or route", name);
        lua_pop(L, 1);
        lua_getfield(L, ri, "get");
        if (lua_toboolean(L, -1)) k->methods |= M_GET;
        lua_getfield(L, ri, "head");
        if (lua_toboolean(L, -1)) k->methods |= M_HEAD;
        lua_pop(L, 2);
        lua_getfield(L, ri, "prefix");
        if (!lua_isnil(L, -1)) {
            lua_pop(L, 1);
            str_field(L, ri, "prefix", k->prefix, sizeof k->prefix, "ratelimits[i]");
            k->prefix_len = strlen(k->prefix);
        } else {
            lua_pop(L, 1);
        }
        str_field(L, ri, "key_prefix", k->key_prefix, sizeof k->key_prefix, "ratelimits[i]");
        str_field(L, ri, "policy_item", k->policy_item, sizeof k->policy_item, "ratelimits[i]");
        str_field(L, ri, "current_item", k->current_item, sizeof k->current_item, "ratelimits[i]");
        char m[160];
        int ml = snprintf(m, sizeof m, "ratelimit_allowed{rule=\"%s\"}", name);
        k->m_allowed = jj_metrics_lookup(m, (size_t)ml, JJ_METRIC_COUNTER);
        ml = snprintf(m, sizeof m, "ratelimit_rejected{rule=\"%s\"}", name);
        k->m_rejected = jj_metrics_lookup(m, (size_t)ml, JJ_METRIC_COUNTER);
        lua_settop(L, t);
    }
    tmp.n = n;
    lua_pop(L, 1);
    char msg[256];
    str_field(L, 1, "ratelimit_message", msg, sizeof msg, "route");
    jj_json_escape(tmp.message, sizeof tmp.message, msg);
    if (lua_getfield(L, 1, "ratelimit_allow") == LUA_TTABLE) {
        int na = (int)luaL_len(L, -1);
        if (na > MAX_ALLOW) luaL_error(L, "fastpath.route: at most %d allow-listed addresses", MAX_ALLOW);
        for (int i = 1; i <= na; i++) {
            lua_rawgeti(L, -1, i);
            size_t len;
            const char *a = lua_tolstring(L, -1, &len);
            if (!a || len >= sizeof tmp.allow[0]) luaL_error(L, "fastpath.route: bad allow-listed address");
            memcpy(tmp.allow[i - 1], a, len + 1);
            lua_pop(L, 1);
        }
        tmp.nallow = na;
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "ratelimit_cidrs") == LUA_TTABLE) {
        int nc = (int)luaL_len(L, -1);
        if (nc > MAX_ALLOW) luaL_error(L, "fastpath.route: at most %d allow-listed networks", MAX_ALLOW);
        for (int i = 1; i <= nc; i++) {
            lua_rawgeti(L, -1, i);
            lua_getfield(L, -1, "lo");
            lua_getfield(L, -2, "hi");
            tmp.lo[i - 1] = (uint32_t)luaL_checkinteger(L, -2);
            tmp.hi[i - 1] = (uint32_t)luaL_checkinteger(L, -1);
            lua_pop(L, 3);
        }
        tmp.ncidr = nc;
    }
    lua_pop(L, 1);
    (void)route_name;
    rl_set *set = malloc(sizeof *set);
    if (!set) luaL_error(L, "not enough memory");
    *set = tmp;
    set->refs = 1;
    return set;
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
    lua_getfield(L, 1, "pattern");
    if (!lua_isnil(L, -1)) {
        lua_pop(L, 1);
        copy_field(L, 1, "pattern", r->pattern, sizeof r->pattern, 1);
    } else {
        lua_pop(L, 1);
    }
    char name[128];
    int n = snprintf(name, sizeof name, "cache_hits{ns=\"%s\"}", r->ns);
    r->m_hits = jj_metrics_lookup(name, (size_t)n, JJ_METRIC_COUNTER);
    n = snprintf(name, sizeof name, "cache_level_hits{ns=\"%s\",level=\"L1\"}", r->ns);
    r->m_level_l1 = jj_metrics_lookup(name, (size_t)n, JJ_METRIC_COUNTER);
    n = snprintf(name, sizeof name, "cache_level_hits{ns=\"%s\",level=\"L2\"}", r->ns);
    r->m_level_l2 = jj_metrics_lookup(name, (size_t)n, JJ_METRIC_COUNTER);
    static const char fast[] = "cache_fastpath_hits";
    r->m_fast = jj_metrics_lookup(fast, sizeof fast - 1, JJ_METRIC_COUNTER);
    static const char slow[] = "cache_fastpath_timeouts";
    r->m_timeouts = jj_metrics_lookup(slow, sizeof slow - 1, JJ_METRIC_COUNTER);
    /* the route label of the request metrics: the router pattern */
    lua_getfield(L, 1, "pattern");
    size_t plen;
    const char *pattern = lua_tolstring(L, -1, &plen);
    if (pattern) r->route_id = jj_http_stats_route(pattern, plen);
    else if ((n = snprintf(name, sizeof name, "%s{id}", r->prefix)) > 0 && (size_t)n < sizeof name)
        r->route_id = jj_http_stats_route(name, (size_t)n);
    else r->route_id = JJ_ROUTE_OTHER;
    lua_pop(L, 1);
    r->rls = read_ratelimits(L, r->prefix);   /* last: nothing raises after it allocates */
    if (r->rls && !r->pattern[0]) {
        rl_set_release(r->rls);
        return luaL_error(L, "fastpath.route: rate-limit rules need the route's pattern");
    }
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

/* [-0, +3, -] fastpath.epoch() -> epoch | nil, fresh, seq */
static int l_epoch(lua_State *L) {
    jj_cache_epoch ep;
    jj_engine_cache_epoch(jj_engine_of(L), &ep);
    if (ep.value >= 0) lua_pushinteger(L, ep.value);
    else lua_pushnil(L);
    lua_pushboolean(L, ep.fresh);
    lua_pushinteger(L, (lua_Integer)ep.seq);
    return 3;
}

/* [-2, +1, e] fastpath.set_epoch(n, seq) -> boolean */
static int l_set_epoch(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1), seq = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 0, 1, "epoch must be >= 0");
    lua_pushboolean(L, jj_engine_set_cache_epoch(jj_engine_of(L), (long long)n, (unsigned long long)seq) == 0);
    return 1;
}

/* [-1, +0, e] fastpath.advance_epoch(n) */
static int l_advance_epoch(lua_State *L) {
    lua_Integer n = luaL_checkinteger(L, 1);
    luaL_argcheck(L, n >= 0, 1, "epoch must be >= 0");
    jj_engine_advance_cache_epoch(jj_engine_of(L), (long long)n);
    return 0;
}

int luaopen_engine_fastpath(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"route", l_route}, {"trust", l_trust}, {"distrust", l_distrust},
        {"epoch", l_epoch}, {"set_epoch", l_set_epoch}, {"advance_epoch", l_advance_epoch}, {NULL, NULL}};
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

/* ------------------------------------------------------------ rate limits
 * The rules that apply to a request are checked in policy order, each
 * through engine.ratelimit's batch (the same Redis keys and script as the
 * Lua middleware); the first refusal answers 429 and later rules are not
 * charged. Headers are exactly jollyjet.ratelimit's. Redis down, or an
 * error from the check: the request goes to Lua, whose middleware applies
 * the rule's failure mode (a rule checked before the error is then charged
 * again: rare, and on the safe side). */

typedef struct {
    const rl_rule *k;
    jj_rl_result res;
} rl_applied;

typedef struct {
    char policy[MAX_RL * 130], current[MAX_RL * 130];
    char limit[24], remaining[24], reset[24], retry[24];
} rl_headers;

static long long ceil_ll(double v) { return (long long)ceil(v); }

/* The header values of the rules that applied (jollyjet.ratelimit's
 * headers_one / headers_of); `refused` replaces the legacy trio. */
static void build_headers(const rl_applied *a, int n, const jj_rl_result *refused, rl_headers *h) {
    size_t po = 0, co = 0;
    const jj_rl_result *worst = NULL;
    for (int i = 0; i < n; i++) {
        const jj_rl_result *res = &a[i].res;
        po += (size_t)snprintf(h->policy + po, sizeof h->policy - po, "%s%s", i ? ", " : "", a[i].k->policy_item);
        co += (size_t)snprintf(h->current + co, sizeof h->current - co, "%s%s%lld;t=%lld", i ? ", " : "",
                               a[i].k->current_item, res->remaining, ceil_ll(res->reset));
        if (!worst || res->remaining < worst->remaining ||
            (res->remaining == worst->remaining && res->reset > worst->reset))
            worst = res;
    }
    if (refused) worst = refused;
    snprintf(h->limit, sizeof h->limit, "%lld", worst->limit);
    snprintf(h->remaining, sizeof h->remaining, "%lld", worst->remaining);
    snprintf(h->reset, sizeof h->reset, "%lld", ceil_ll(worst->reset));
    h->retry[0] = 0;
    if (refused) {
        long long after = ceil_ll(refused->retry_after);
        snprintf(h->retry, sizeof h->retry, "%lld", after < 1 ? 1 : after);
    }
}

#define HDR(c, name, v) jj_http_response_header(c, name, sizeof name - 1, v, strlen(v))

static void send_headers(jj_http_conn *c, const rl_headers *h) {
    HDR(c, "RateLimit-Policy", h->policy);
    HDR(c, "RateLimit", h->current);
    HDR(c, "X-RateLimit-Limit", h->limit);
    HDR(c, "X-RateLimit-Remaining", h->remaining);
    HDR(c, "X-RateLimit-Reset", h->reset);
    if (h->retry[0]) HDR(c, "Retry-After", h->retry);
}

static int allow_listed(const rl_set *s, const char *peer) {
    for (int i = 0; i < s->nallow; i++)
        if (strcmp(s->allow[i], peer) == 0) return 1;
    if (s->ncidr == 0) return 0;
    struct in_addr a;
    if (inet_pton(AF_INET, peer, &a) != 1) return 0;
    uint32_t v = ntohl(a.s_addr);
    for (int i = 0; i < s->ncidr; i++)
        if (v >= s->lo[i] && v <= s->hi[i]) return 1;
    return 0;
}

static int rl_applies(const rl_rule *k, const jj_http_request *q, unsigned mbit) {
    if (!(k->methods & mbit)) return 0;
    return k->prefix_len == 0 || (q->path_len >= k->prefix_len && memcmp(q->path, k->prefix, k->prefix_len) == 0);
}

/* ---------------------------------------------------------------- answers */

typedef struct {
    jj_engine *e;
    jj_http_conn *c;
    jj_http_exchange x;
    route r;
    jj_lru *l1;          /* bounded: where to keep what Redis answered */
    uint64_t l1_seq;     /* ... unless an invalidation reached it meanwhile */
    size_t klen;
    char key[72];
    /* rate limits (r.rls != NULL): the rules checked so far */
    long long trusted;   /* the Redis connection epoch the cache library vouched for (-1: none) */
    unsigned mbit;
    int rl_next;         /* index in r.rls of the next rule to consider */
    int napplied;
    rl_applied applied[MAX_RL];
    /* the value key read along with the last rule's check (Redis trusted,
     * epoch known, nothing fresh in the L1): one script call, no GET after */
    int fetch_sent;
    size_t vkey_len;     /* 0: none */
    char vkey[320];
    /* REDIS_TIMEOUT_MS after the first send: the handler takes the request
     * over (handed = 1) and the late answer only frees p */
    ev_timer timer;
    int handed;
} pending;

static void pending_free(pending *p) {
    ev_timer_stop(jj_engine_loop(p->e), &p->timer);
    rl_set_release(p->r.rls);
    free(p);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents);

/* Arms p's timeout (once: later sends for the same request share it). */
static void arm(pending *p) {
    if (ev_is_active(&p->timer)) return;
    ev_timer_set(&p->timer, jj_engine_io_timeout_ms(p->e) / 1000.0, 0.);
    p->timer.data = p;
    ev_timer_start(jj_engine_loop(p->e), &p->timer);
}

static void answer(jj_http_conn *c, const route *r, const char *body, size_t len, int level, double at,
                   const pending *p) {
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
    if (p && p->napplied > 0) {
        rl_headers h;
        build_headers(p->applied, p->napplied, NULL, &h);
        send_headers(c, &h);
    }
    jj_http_response_finish(c, body, len);
    count(r->m_hits);
    count(level);
    count(r->m_fast);
}

/* The handler, with the limits already applied (their headers go along). */
static void to_lua(pending *p) {
    if (p->napplied == 0) {
        jj_host_run_lua(p->e, p->c, &p->x);
        return;
    }
    rl_headers h;
    build_headers(p->applied, p->napplied, NULL, &h);
    const jj_host_kv kv[5] = {
        {"RateLimit-Policy", h.policy}, {"RateLimit", h.current}, {"X-RateLimit-Limit", h.limit},
        {"X-RateLimit-Remaining", h.remaining}, {"X-RateLimit-Reset", h.reset},
    };
    jj_host_run_lua_limited(p->e, p->c, &p->x, kv, 5);
}

static void too_many(pending *p, const jj_rl_result *refused) {
    rl_headers h;
    build_headers(p->applied, p->napplied, refused, &h);
    jj_http_conn *c = p->c;
    jj_http_set_route(c, p->r.route_id);
    jj_http_response_start(c, 429);
    jj_http_response_header(c, "Content-Type", 12, "application/json", 16);
    send_headers(c, &h);
    char body[768];
    int n = snprintf(body, sizeof body,
                     "{\"success\":false,\"error\":\"Rate limit exceeded\",\"message\":\"%s\",\"retryAfter\":%s}",
                     p->r.rls->message, h.retry);
    if (n < 0 || (size_t)n >= sizeof body) n = (int)strlen(body);
    jj_http_response_finish(c, body, (size_t)n);
}

/* Answers with what Redis holds for the value key (s, or NULL), or leaves
 * the request to the handler. */
static void serve_value(pending *p, const char *s, size_t len) {
    jj_http_conn *c = p->c;
    {
        size_t vlen = 0;
        double expiry = 0, at = 0;
        const char *v = s ? fresh_value(&p->r, s, len, &vlen, &expiry, &at) : NULL;
        if (v && p->l1 && jj_engine_subscriber_up(p->e) && jj_lru_seq(p->l1) == p->l1_seq) {
            /* as the Lua path does: L1 keeps it for at most max_lag */
            double life = expiry - ev_time();
            if (life > p->r.max_lag) life = p->r.max_lag;
            double now = ev_now(jj_engine_loop(p->e));
            if (life > 0) jj_lru_set(p->l1, p->key, p->klen, s, len, now + life, 0, 0, now);
        }
        if (v) answer(c, &p->r, v, vlen, p->r.m_level_l2, at, p);
        else to_lua(p);   /* miss, stale, Redis trouble: the handler */
    }
}

static void on_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    pending *p = privdata;
    jj_http_conn *c = p->c;
    if (p->handed) {
        /* the handler answered (or is answering) this request */
    } else if (!jj_http_conn_alive(c)) {
        jj_http_response_finish(c, NULL, 0);   /* frees the abandoned connection */
    } else if (jj_engine_closing(p->e)) {
        jj_http_respond_error(c, 503, "unavailable", "the engine is shutting down");
    } else {
        size_t len = 0;
        const char *s = (!err && reply && jj_reply_type(reply) == JJ_REPLY_STRING) ? jj_reply_str(reply, &len) : NULL;
        serve_value(p, s, len);
    }
    pending_free(p);
}

/* Redis did not answer within REDIS_TIMEOUT_MS (CLIENT PAUSE, a slow
 * script): the handler serves the request (its own Redis calls fail fast
 * while the connection is stalled, redis.h, so it goes to the database).
 * Limits already checked are checked again there, like any Redis trouble
 * on this path. p stays allocated until Redis answers or the connection
 * is lost: that callback frees it. */
static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    pending *p = w->data;
    jj_http_conn *c = p->c;
    p->handed = 1;
    count(p->r.m_timeouts);
    if (!jj_http_conn_alive(c)) jj_http_response_finish(c, NULL, 0);
    else if (jj_engine_closing(p->e)) jj_http_respond_error(c, 503, "unavailable", "the engine is shutting down");
    else {
        p->napplied = 0;
        to_lua(p);
    }
}

/* The L1 of a bounded namespace while invalidations reach it (else NULL),
 * and its fresh value of p's key, if any (valid until the L1 changes). */
static jj_lru *l1_of(const pending *p, const char **v, size_t *vlen, double *at) {
    *v = NULL;
    if (!p->r.bounded || !jj_engine_subscriber_up(p->e)) return NULL;
    jj_lru *l1 = jj_lru_registry_find(p->r.ns);
    jj_lru_entry ent;
    if (l1 && jj_lru_get(l1, p->key, p->klen, ev_now(jj_engine_loop(p->e)), &ent) == 0)
        *v = fresh_value(&p->r, ent.value, ent.vlen, vlen, NULL, at);
    return l1;
}

/* The Redis key of p's value into buf: its length, or 0 when Redis may not
 * be used (down, another connection than the cache library vouched for, or
 * the cache epoch not known to be current). */
static size_t value_key(const pending *p, char *buf, size_t cap) {
    jj_redis_status st;
    jj_redis_get_status(jj_engine_redis(p->e), &st);
    if (!st.up || p->trusted < 0 || (long long)st.reconnects != p->trusted) return 0;
    jj_cache_epoch ep;
    jj_engine_cache_epoch(p->e, &ep);
    if (!ep.fresh) return 0;   /* a purge may have gone unheard: the handler learns the epoch */
    int n = snprintf(buf, cap, "%s%lld:%s:%.*s", p->r.key_prefix, ep.value, p->r.ns, (int)p->klen, p->key);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* The cache lookup (after the limits, if any): answers from L1 (and frees
 * p if it is on the heap), or sends the Redis GET (with p, or a heap copy
 * of it, owned by on_reply from then on), or returns 0: the caller runs the
 * handler and still owns p. */
static int lookup(pending *p, int heap) {
    const char *v;
    size_t vlen = 0;
    double at = 0;
    jj_lru *l1 = l1_of(p, &v, &vlen, &at);
    if (v) {
        answer(p->c, &p->r, v, vlen, p->r.m_level_l1, at, p);
        if (heap) pending_free(p);
        return 1;
    }
    char k[320];
    size_t kn = value_key(p, k, sizeof k);
    if (kn == 0) return 0;
    pending *q = p;
    if (!heap) {
        q = malloc(sizeof *q);
        if (!q) return 0;
        *q = *p;   /* r.rls is NULL: nothing to reference */
    }
    q->l1 = l1;
    q->l1_seq = l1 ? jj_lru_seq(l1) : 0;
    const char *argv[2] = {"GET", k};
    size_t lens[2] = {3, kn};
    const char *err;
    if (jj_redis_command(jj_engine_redis(p->e), 2, argv, lens, on_reply, q, &err) == 0) {
        arm(q);
        return 1;
    }
    if (!heap) free(q);   /* (a heap p keeps its timer: the caller frees p) */
    return 0;
}

static void after_limits(pending *p) {
    if (!lookup(p, 1)) {
        to_lua(p);
        pending_free(p);
    }
}

static void on_limit(void *ud, const jj_rl_result *res, const char *err, const jj_redis_reply *fetched);

/* Sends the check of the next rule that applies; 0 when none is left, -1
 * when it could not be sent. */
static int next_limit(pending *p) {
    const rl_set *s = p->r.rls;
    const jj_http_request *q = p->x.req;
    for (int i = p->rl_next; i < s->n; i++) {
        const rl_rule *k = &s->rules[i];
        if (!rl_applies(k, q, p->mbit)) continue;
        char key[512];
        int n;
        if (k->kind == RL_IP)
            n = snprintf(key, sizeof key, "%sip:%s", k->key_prefix, p->x.peer);
        else
            n = snprintf(key, sizeof key, "%sroute:%.*s %s", k->key_prefix, (int)q->method_len, q->method,
                         p->r.pattern);
        if (n < 0 || (size_t)n >= sizeof key) return -1;
        p->rl_next = i;
        int last = 1;
        for (int j = i + 1; j < s->n && last; j++) last = !rl_applies(&s->rules[j], q, p->mbit);
        p->fetch_sent = last && p->vkey_len > 0;
        return jj_ratelimit_submit(p->e, key, (size_t)n, &k->lim, p->fetch_sent ? p->vkey : NULL,
                                   p->fetch_sent ? p->vkey_len : 0, on_limit, p) == 0 ? 1 : -1;
    }
    p->rl_next = s->n;
    return 0;
}

static void on_limit(void *ud, const jj_rl_result *res, const char *err, const jj_redis_reply *fetched) {
    pending *p = ud;
    jj_http_conn *c = p->c;
    if (p->handed) {
        pending_free(p);
        return;
    }
    if (!jj_http_conn_alive(c)) {
        jj_http_response_finish(c, NULL, 0);
        pending_free(p);
        return;
    }
    if (jj_engine_closing(p->e)) {
        jj_http_respond_error(c, 503, "unavailable", "the engine is shutting down");
        pending_free(p);
        return;
    }
    if (!res) {   /* the middleware applies the failure mode */
        (void)err;
        p->napplied = 0;
        to_lua(p);
        pending_free(p);
        return;
    }
    const rl_rule *k = &p->r.rls->rules[p->rl_next];
    rl_applied *a = &p->applied[p->napplied++];
    a->k = k;
    a->res = *res;
    if (!res->allowed) {
        count(k->m_rejected);
        too_many(p, res);
        pending_free(p);
        return;
    }
    count(k->m_allowed);
    p->rl_next++;
    if (p->fetch_sent) {   /* the last rule: its script call read the value too */
        size_t len = 0;
        const char *v = fetched && jj_reply_type(fetched) == JJ_REPLY_STRING ? jj_reply_str(fetched, &len) : NULL;
        serve_value(p, v, len);
        pending_free(p);
        return;
    }
    int rc = next_limit(p);
    if (rc == 0) after_limits(p);
    else if (rc < 0) {
        p->napplied = 0;
        to_lua(p);
        pending_free(p);
    }
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
    unsigned mbit;
    if (q->method_len == 3 && memcmp(q->method, "GET", 3) == 0) mbit = M_GET;
    else if (q->method_len == 4 && memcmp(q->method, "HEAD", 4) == 0) mbit = M_HEAD;
    else return 0;
    if (q->query || jj_http_find_header(q, "cache-control") || jj_http_find_header(q, "pragma")) return 0;
    const route *r = NULL;
    for (int i = 0; i < t->n; i++)
        if (q->path_len > t->routes[i].prefix_len &&
            memcmp(q->path, t->routes[i].prefix, t->routes[i].prefix_len) == 0) { r = &t->routes[i]; break; }
    if (!r) return 0;
    const char *key = q->path + r->prefix_len;
    size_t klen = q->path_len - r->prefix_len;
    if (!valid_key(key, klen)) return 0;

    /* Which rate-limit rules apply (an allow-listed client: none). */
    int limited = 0;
    if (r->rls && !allow_listed(r->rls, x->peer))
        for (int i = 0; i < r->rls->n && !limited; i++) limited = rl_applies(&r->rls->rules[i], q, mbit);
    if (limited) {
        jj_redis_status st;
        jj_redis_get_status(jj_engine_redis(e), &st);
        if (!st.up) return 0;   /* the middleware applies the failure modes */
    }

    pending tmp, *p = &tmp;
    if (limited && !(p = malloc(sizeof *p))) return 0;
    p->e = e;
    p->c = c;
    p->x = *x;
    p->r = *r;
    p->r.rls = NULL;
    p->l1 = NULL;
    p->l1_seq = 0;
    p->klen = klen;
    memcpy(p->key, key, klen);
    p->trusted = t->trusted;
    p->mbit = mbit;
    p->napplied = 0;
    p->rl_next = 0;
    p->fetch_sent = 0;
    p->vkey_len = 0;
    p->handed = 0;
    ev_timer_init(&p->timer, on_timeout, 0., 0.);
    if (!limited) return lookup(p, 0);
    p->r.rls = r->rls;
    r->rls->refs++;
    /* Read the value along with the limits, unless the L1 may answer. */
    const char *v;
    size_t vlen;
    double at;
    p->l1 = l1_of(p, &v, &vlen, &at);
    p->l1_seq = p->l1 ? jj_lru_seq(p->l1) : 0;
    if (!v) p->vkey_len = value_key(p, p->vkey, sizeof p->vkey);
    if (next_limit(p) <= 0) {   /* not sent: the handler (and its middleware) */
        pending_free(p);
        return 0;
    }
    arm(p);
    return 1;
}
