/* lua_metrics.c: the `engine.metrics` module: counters, gauges and latency
 * histograms summed over every worker (metrics.c keeps them in memory the
 * master shares with its workers).
 *
 *   local metrics = require "engine.metrics"
 *   metrics.incr(name, n?)     counter += n (integer >= 0, default 1)
 *   metrics.set(name, v)       gauge = v (integer; last writer wins)
 *   metrics.observe(name, ms)  histogram observation (number >= 0, in ms)
 *   metrics.get(name)          -> integer: the total over all workers, 0 if absent
 *   metrics.snapshot(prefix?)  -> { [name] = value } of every name starting with prefix
 *   metrics.overflow()         -> integer: updates dropped because the table was full
 *   metrics.collect(prefix?)   -> { {name=, kind="counter"|"gauge", value=} |
 *                                  {name=, kind="histogram", count=, sum= (ms), buckets={cumulative...}}, ... }
 *                                 every slot unflattened, in table order (for exporters)
 *   metrics.BUCKETS_MS         the histogram bucket bounds in ms (+Inf implicit)
 *   metrics.route_id(pattern)  -> integer: the route id the C request metrics use (http_stats.h)
 *   metrics.set_route(id)      the request this task runs matched route id (for
 *                              http_requests{route=...} and the access log); -> true,
 *                              or false outside a request
 *
 * A name is any string of 1..127 bytes (no NUL), labels included:
 * metrics.incr('cache_hits{ns="product",level="L1"}'). Its first use fixes
 * its kind; using it as another kind raises, as do a non-string name, a
 * name too long and a non-integer or negative n.
 *
 * Histograms are flat in get and snapshot, Prometheus-style. For
 * metrics.observe('lat{route="/x"}', 3.2) the names are
 *   lat_bucket{route="/x",le="0.5"} ... lat_bucket{route="/x",le="+Inf"}
 *                          cumulative counts, bounds (ms) 0.5 1 2.5 5 10 25
 *                          50 100 250 500 1000 2500 5000 +Inf
 *   lat_sum{route="/x"}    the sum of the observations in ms (a float: the
 *                          only non-integer value; stored in microseconds)
 *   lat_count{route="/x"}  the number of observations
 * (without labels: lat_bucket{le="5"}, lat_sum, lat_count), and get on the
 * base name 'lat{route="/x"}' returns its count.
 *
 * Hot path: each VM caches name -> slot index in a table (the functions'
 * shared upvalue), so a repeated incr is a table lookup and one relaxed
 * atomic add: no hashing of the name in C, no allocation, no lock. */
#include "host.h"
#include "http_stats.h"
#include "lua_modules.h"
#include "metrics.h"

#include <lauxlib.h>
#include <math.h>
#include <string.h>

#define CACHE lua_upvalueindex(1)

static const char *kind_name(int kind) {
    switch (kind) {
    case JJ_METRIC_COUNTER: return "counter";
    case JJ_METRIC_GAUGE: return "gauge";
    case JJ_METRIC_HISTOGRAM: return "histogram";
    default: return "histogram entry";
    }
}

/* [-0, +0, v] The name at idx, validated (1..max bytes, no NUL). */
static const char *check_name(lua_State *L, int idx, size_t max, size_t *len) {
    if (lua_type(L, idx) != LUA_TSTRING) luaL_typeerror(L, idx, "string");
    const char *s = lua_tolstring(L, idx, len);
    if (*len == 0 || *len > max || memchr(s, 0, *len))
        luaL_argerror(L, idx, lua_pushfstring(L, "metric name must be 1..%d bytes without NUL", (int)max));
    return s;
}

static lua_Integer check_int(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TNUMBER) luaL_typeerror(L, idx, "integer");
    return luaL_checkinteger(L, idx);   /* raises for a float without an integer value */
}

static int kind_error(lua_State *L, int wanted) {
    size_t len;
    const char *name = lua_tolstring(L, 1, &len);
    int64_t v;
    int kind = jj_metrics_get_ex(name, len, &v);
    return luaL_error(L, "metric '%s' is a %s, not a %s", name, kind_name(kind), kind_name(wanted));
}

/* [-0, +0, v] The slot index of the name at 1 for kind (cached), or
 * JJ_METRICS_EFULL. Raises on a bad name or another kind. */
static int slot_of(lua_State *L, int kind) {
    if (lua_type(L, 1) != LUA_TSTRING) luaL_typeerror(L, 1, "string");
    lua_pushvalue(L, 1);
    if (lua_rawget(L, CACHE) == LUA_TNUMBER) {
        int idx = (int)lua_tointeger(L, -1);
        lua_pop(L, 1);
        return idx;
    }
    lua_pop(L, 1);
    size_t len;
    const char *name = check_name(L, 1, JJ_METRICS_NAME_MAX, &len);
    int idx = jj_metrics_lookup(name, len, kind);
    if (idx == JJ_METRICS_EINVAL) return kind_error(L, kind);
    if (idx >= 0) {   /* only hits are cached: their number is bounded by the table */
        lua_pushvalue(L, 1);
        lua_pushinteger(L, idx);
        lua_rawset(L, CACHE);
    }
    return idx;
}

/* [-(1|2), +0, v] metrics.incr(name, n?) */
static int l_incr(lua_State *L) {
    lua_Integer n = lua_isnoneornil(L, 2) ? 1 : check_int(L, 2);
    luaL_argcheck(L, n >= 0, 2, "must not be negative (use a gauge)");
    int idx = slot_of(L, JJ_METRIC_COUNTER);
    if (idx == JJ_METRICS_EFULL) jj_metrics_drop();
    else if (jj_metrics_add_at(idx, n) != 0) return kind_error(L, JJ_METRIC_COUNTER);
    return 0;
}

/* [-2, +0, v] metrics.set(name, v) */
static int l_set(lua_State *L) {
    lua_Integer v = check_int(L, 2);
    int idx = slot_of(L, JJ_METRIC_GAUGE);
    if (idx == JJ_METRICS_EFULL) jj_metrics_drop();
    else if (jj_metrics_set_at(idx, v) != 0) return kind_error(L, JJ_METRIC_GAUGE);
    return 0;
}

/* [-2, +0, v] metrics.observe(name, ms) */
static int l_observe(lua_State *L) {
    if (lua_type(L, 2) != LUA_TNUMBER) luaL_typeerror(L, 2, "number");
    double ms = (double)lua_tonumber(L, 2);
    luaL_argcheck(L, ms >= 0 && isfinite(ms), 2, "must be a finite number of ms >= 0");
    int idx = slot_of(L, JJ_METRIC_HISTOGRAM);
    if (idx == JJ_METRICS_EFULL) jj_metrics_drop();
    else if (jj_metrics_observe_at(idx, ms) != 0) return kind_error(L, JJ_METRIC_HISTOGRAM);
    return 0;
}

static void push_value(lua_State *L, int kind, int64_t v) {
    if (kind == JJ_METRIC_HIST_SUM) lua_pushnumber(L, (lua_Number)v / 1000.0);
    else lua_pushinteger(L, (lua_Integer)v);
}

/* [-1, +1, v] metrics.get(name) -> value (0 if absent) */
static int l_get(lua_State *L) {
    size_t len;
    const char *name = check_name(L, 1, JJ_METRICS_DERIVED_MAX, &len);
    int64_t v;
    int kind = jj_metrics_get_ex(name, len, &v);
    push_value(L, kind, v);
    return 1;
}

typedef struct {
    lua_State *L;
    const char *prefix;
    size_t plen;
} snap_ctx;

static void snap_one(const char *name, int kind, int64_t value, void *ud) {
    snap_ctx *c = ud;
    if (c->plen && strncmp(name, c->prefix, c->plen) != 0) return;
    push_value(c->L, kind, value);
    lua_setfield(c->L, -2, name);   /* may raise (memory): foreach holds no resources */
}

/* [-(0|1), +1, m] metrics.snapshot(prefix?) -> { [name] = value } */
static int l_snapshot(lua_State *L) {
    snap_ctx c = {L, NULL, 0};
    if (!lua_isnoneornil(L, 1)) {
        if (lua_type(L, 1) != LUA_TSTRING) luaL_typeerror(L, 1, "string");
        c.prefix = lua_tolstring(L, 1, &c.plen);
    }
    lua_newtable(L);
    jj_metrics_foreach(snap_one, &c);
    return 1;
}

typedef struct {
    lua_State *L;
    const char *prefix;
    size_t plen;
    lua_Integer n;
} collect_ctx;

static void collect_one(const jj_metrics_slot *s, void *ud) {
    collect_ctx *c = ud;
    lua_State *L = c->L;
    if (c->plen && (s->len < c->plen || memcmp(s->name, c->prefix, c->plen) != 0)) return;
    lua_createtable(L, 0, 5);
    lua_pushlstring(L, s->name, s->len);
    lua_setfield(L, -2, "name");
    if (s->kind == JJ_METRIC_HISTOGRAM) {
        lua_pushliteral(L, "histogram");
        lua_setfield(L, -2, "kind");
        lua_pushinteger(L, (lua_Integer)s->value);
        lua_setfield(L, -2, "count");
        lua_pushnumber(L, (lua_Number)s->sum_us / 1000.0);
        lua_setfield(L, -2, "sum");
        lua_createtable(L, JJ_METRICS_NBUCKETS, 0);
        for (int b = 0; b < JJ_METRICS_NBUCKETS; b++) {
            lua_pushinteger(L, (lua_Integer)s->buckets[b]);
            lua_rawseti(L, -2, b + 1);
        }
        lua_setfield(L, -2, "buckets");
    } else {
        lua_pushstring(L, s->kind == JJ_METRIC_COUNTER ? "counter" : "gauge");
        lua_setfield(L, -2, "kind");
        lua_pushinteger(L, (lua_Integer)s->value);
        lua_setfield(L, -2, "value");
    }
    lua_rawseti(L, -2, ++c->n);   /* may raise (memory): foreach holds no resources */
}

/* [-(0|1), +1, m] metrics.collect(prefix?) -> { record, ... } */
static int l_collect(lua_State *L) {
    collect_ctx c = {L, NULL, 0, 0};
    if (!lua_isnoneornil(L, 1)) {
        if (lua_type(L, 1) != LUA_TSTRING) luaL_typeerror(L, 1, "string");
        c.prefix = lua_tolstring(L, 1, &c.plen);
    }
    lua_newtable(L);
    jj_metrics_foreach_slot(collect_one, &c);
    return 1;
}

/* [-1, +1, -] metrics.route_id(pattern) -> integer */
static int l_route_id(lua_State *L) {
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    lua_pushinteger(L, jj_http_stats_route(s, len));
    return 1;
}

/* [-1, +1, -] metrics.set_route(id) -> boolean */
static int l_set_route(lua_State *L) {
    lua_Integer id = check_int(L, 1);
    luaL_argcheck(L, id >= 0 && id < JJ_ROUTE_MAX, 1, "not a route id (metrics.route_id)");
    lua_pushboolean(L, jj_host_set_route(L, (int)id));
    return 1;
}

/* [-0, +1, -] metrics.overflow() -> dropped updates */
static int l_overflow(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)jj_metrics_overflow());
    return 1;
}

int luaopen_engine_metrics(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"incr", l_incr},
        {"set", l_set},
        {"observe", l_observe},
        {"get", l_get},
        {"snapshot", l_snapshot},
        {"overflow", l_overflow},
        {"collect", l_collect},
        {"route_id", l_route_id},
        {"set_route", l_set_route},
        {NULL, NULL}};
    luaL_newlibtable(L, fns);
    lua_newtable(L);   /* name -> slot index, shared by the functions of this VM */
    luaL_setfuncs(L, fns, 1);
    const double *bounds = jj_metrics_bounds_ms();
    lua_createtable(L, JJ_METRICS_NBUCKETS - 1, 0);
    for (int b = 0; b < JJ_METRICS_NBUCKETS - 1; b++) {
        lua_pushnumber(L, bounds[b]);
        lua_rawseti(L, -2, b + 1);
    }
    lua_setfield(L, -2, "BUCKETS_MS");
    return 1;
}
