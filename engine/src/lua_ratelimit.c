/* lua_ratelimit.c: the `engine.ratelimit` module: rate limits kept in Redis,
 * checked and consumed in one atomic script on the server's clock, plus the
 * per-process local limiter (ratelimit.h) for when Redis is unavailable.
 *
 *   res, err = ratelimit.check(key, rule)     -- consume rule.cost units
 *   res, err = ratelimit.peek(key, rule)      -- the same answer, nothing consumed
 *   ok, err  = ratelimit.reset(key)           -- forget the key (every algorithm)
 *   res      = ratelimit.local_check(key, rule)   -- this process only, GCRA, no I/O
 *   res      = ratelimit.local_peek(key, rule)
 *   ok       = ratelimit.local_reset(key)
 *   n        = ratelimit.local_count()
 *
 *   rule = { limit = 100, period = 60, algorithm = "gcra" | "sliding_window",
 *            cost = 1, burst = limit }
 *   res  = { allowed = bool, limit = n, remaining = n,
 *            reset = seconds until full, retry_after = seconds (0 if allowed) }
 *
 * Algorithms (both exact, both on Redis's clock, redis.call('TIME')):
 *   gcra            one integer per key (its theoretical arrival time, in
 *                   microseconds); a fresh key admits `burst` units at once,
 *                   then one every period/limit seconds. burst defaults to
 *                   limit.
 *   sliding_window  a log of admitted requests (a sorted set scored by time,
 *                   plus a hash with their total cost): at most `limit`
 *                   units in any `period`-long window. Memory O(limit) per
 *                   key; burst does not apply.
 * Keys: <prefix>rl:g:<key> (gcra), <prefix>rl:s:<key> + <prefix>rl:m:<key>
 * (sliding window); a key longer than 200 bytes (or starting with '#') is
 * replaced by '#' and its SHA-1 in hex.
 *
 * check/peek/reset yield until Redis answers (REDIS_TIMEOUT_MS). Redis
 * trouble returns nil, err ("redis unavailable" at once when it is down,
 * "timeout", "redis connection lost", or an error reply); a bad key or rule
 * raises. The local_* functions never yield and use the loop's clock; the
 * local limiter lives outside the VM, so a hot reload keeps its state.
 */
#include "engine.h"
#include "lua_modules.h"
#include "ratelimit.h"
#include "redis.h"
#include "sha1.h"
#include "task.h"

#include <ev.h>
#include <lauxlib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 200                 /* longer keys are hashed */
#define LIMIT_MAX 1000000000LL
#define PERIOD_MAX (366.0 * 86400)

/* --------------------------------------------------------------- scripts
 * Redis runs Lua 5.1 with doubles: microseconds since the epoch (~2^51)
 * are exact, but tostring() of such a number loses digits, so numbers that
 * go back to Redis are formatted with %.0f. Replies are integers.
 *
 * One script decides a batch of checks, in order, on one reading of
 * Redis's clock: every check of a loop turn goes out as one EVALSHA (see
 * "batching" below). ARGV[1] = n, then 5 values per check: kind ('g' gcra,
 * 's' sliding window), p1, p2, cost, consume ('1' | '0').
 *   gcra:    KEYS: the TAT (us). p1 = T (us per unit), p2 = burst.
 *   sliding: KEYS: the log (sorted set, score = time in us, member
 *            "time:seq:cost"), its hash { n = cost in the log, s = seq }.
 *            p1 = window (us), p2 = limit.
 * -> 4 integers per check: allowed, remaining, reset_us, retry_after_us */
static const char BATCH_SRC[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local floor, max, ceil, fmt = math.floor, math.max, math.ceil, string.format\n"
    "local function gcra(key, T, burst, cost, consume)\n"
    "  local tau = T * burst\n"
    "  local base = tonumber(redis.call('GET', key) or 0) or 0\n"
    "  if base < now then base = now end\n"
    "  local new_tat = base + cost * T\n"
    "  local allow_at = new_tat - tau\n"
    "  if allow_at > now then\n"
    "    return 0, max(0, floor((tau - (base - now)) / T)), base - now, allow_at - now\n"
    "  end\n"
    "  local after = base\n"
    "  if consume and cost > 0 then\n"
    "    after = new_tat\n"
    "    redis.call('SET', key, fmt('%.0f', new_tat), 'PX', ceil((new_tat - now) / 1000) + 1)\n"
    "  end\n"
    "  return 1, max(0, floor((tau - (after - now)) / T)), after - now, 0\n"
    "end\n"
    "local function cost_of(m) return tonumber(string.match(m, ':(%d+)$')) or 0 end\n"
    "local function sliding(log, meta, window, limit, cost, consume)\n"
    "  local edge = fmt('%.0f', now - window)\n"
    "  local used = redis.call('HGET', meta, 'n')\n"
    "  if used then used = tonumber(used) else\n"
    "    used = 0\n"
    "    local all = redis.call('ZRANGE', log, 0, -1)\n"
    "    for i = 1, #all do used = used + cost_of(all[i]) end\n"
    "  end\n"
    "  local old = redis.call('ZRANGEBYSCORE', log, '-inf', edge)\n"
    "  for i = 1, #old do used = used - cost_of(old[i]) end\n"
    "  if consume and #old > 0 then\n"
    "    redis.call('ZREMRANGEBYSCORE', log, '-inf', edge)\n"
    "    redis.call('HSET', meta, 'n', used)\n"
    "  end\n"
    "  if used < 0 or redis.call('ZCOUNT', log, '(' .. edge, '+inf') == 0 then used = 0 end\n"
    "  local allowed = used + cost <= limit\n"
    "  if allowed and consume and cost > 0 then\n"
    "    local seq = redis.call('HINCRBY', meta, 's', 1)\n"
    "    local ts = fmt('%.0f', now)\n"
    "    redis.call('ZADD', log, ts, ts .. ':' .. seq .. ':' .. cost)\n"
    "    used = used + cost\n"
    "    redis.call('HSET', meta, 'n', used)\n"
    "    local px = ceil(window / 1000) + 1\n"
    "    redis.call('PEXPIRE', log, px)\n"
    "    redis.call('PEXPIRE', meta, px)\n"
    "  end\n"
    "  local reset = 0\n"
    "  if used > 0 then\n"
    "    local last = redis.call('ZREVRANGEBYSCORE', log, '+inf', '(' .. edge, 'WITHSCORES', 'LIMIT', 0, 1)\n"
    "    if last[2] then reset = max(0, tonumber(last[2]) + window - now) end\n"
    "  end\n"
    "  if allowed then return 1, max(0, limit - used), reset, 0 end\n"
    "  local need = used + cost - limit\n"
    "  local retry, freed = window, 0\n"
    "  local live = redis.call('ZRANGEBYSCORE', log, '(' .. edge, '+inf', 'WITHSCORES')\n"
    "  for i = 1, #live, 2 do\n"
    "    freed = freed + cost_of(live[i])\n"
    "    if freed >= need then retry = max(0, tonumber(live[i + 1]) + window - now) break end\n"
    "  end\n"
    "  return 0, max(0, limit - used), reset, retry\n"
    "end\n"
    "local out, k, a = {}, 1, 2\n"
    "for i = 1, tonumber(ARGV[1]) do\n"
    "  local p1, p2, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
    "  local consume = ARGV[a + 4] == '1'\n"
    "  local x, y, z, w\n"
    "  if ARGV[a] == 'g' then\n"
    "    x, y, z, w = gcra(KEYS[k], p1, p2, cost, consume)\n"
    "    k = k + 1\n"
    "  else\n"
    "    x, y, z, w = sliding(KEYS[k], KEYS[k + 1], p1, p2, cost, consume)\n"
    "    k = k + 2\n"
    "  end\n"
    "  local o = #out\n"
    "  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = x, y, z, w\n"
    "  a = a + 5\n"
    "end\n"
    "return out\n";

/* The SHA, the same in every process (computed from the source). */
static char batch_sha[41];

/* ------------------------------------------------------------- arguments */

enum { ALGO_GCRA, ALGO_SLIDING };

typedef struct rule_args {
    int algo;
    jj_rl_rule r;      /* limit, period, burst */
    long long cost;
} rule_args;

/* [-0, +0, v] An integer field of the rule table at idx (def when nil). */
static long long int_field(lua_State *L, int idx, const char *fn, const char *name, long long def,
                           long long lo, long long hi) {
    lua_getfield(L, idx, name);
    if (lua_isnil(L, -1)) { lua_pop(L, 1); return def; }
    int ok;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok || lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "%s: rule.%s must be an integer, got %s", fn, name, luaL_typename(L, -1));
    if (v < lo || v > hi)
        luaL_error(L, "%s: rule.%s must be between %I and %I, got %I", fn, name,
                   (lua_Integer)lo, (lua_Integer)hi, v);
    lua_pop(L, 1);
    return (long long)v;
}

/* [-0, +0, v] Reads and checks the rule table at idx. */
static void check_rule(lua_State *L, int idx, const char *fn, rule_args *a) {
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_error(L, "%s: the rule must be a table { limit = n, period = seconds, ... }, got %s",
                   fn, luaL_typename(L, idx));
    lua_getfield(L, idx, "algorithm");
    a->algo = ALGO_GCRA;
    if (!lua_isnil(L, -1)) {
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
        if (s && strcmp(s, "sliding_window") == 0) a->algo = ALGO_SLIDING;
        else if (!s || strcmp(s, "gcra") != 0)
            luaL_error(L, "%s: rule.algorithm must be \"gcra\" or \"sliding_window\"", fn);
    }
    lua_pop(L, 1);
    a->r.limit = int_field(L, idx, fn, "limit", -1, 1, LIMIT_MAX);
    if (a->r.limit < 0) luaL_error(L, "%s: rule.limit is required", fn);
    lua_getfield(L, idx, "period");
    if (lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "%s: rule.period (seconds) must be a number, got %s", fn, luaL_typename(L, -1));
    a->r.period = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    if (!(a->r.period > 0 && a->r.period <= PERIOD_MAX))
        luaL_error(L, "%s: rule.period must be more than 0 and at most %d seconds", fn, (int)PERIOD_MAX);
    if (a->r.period * 1e6 / (double)a->r.limit < 1)
        luaL_error(L, "%s: rule allows more than one unit per microsecond", fn);
    lua_getfield(L, idx, "burst");
    int has_burst = !lua_isnil(L, -1);
    lua_pop(L, 1);
    if (has_burst && a->algo == ALGO_SLIDING)
        luaL_error(L, "%s: rule.burst applies to gcra only", fn);
    a->r.burst = int_field(L, idx, fn, "burst", a->r.limit, 1, LIMIT_MAX);
    long long cap = a->algo == ALGO_GCRA ? a->r.burst : a->r.limit;
    a->cost = int_field(L, idx, fn, "cost", 1, 0, LIMIT_MAX);
    if (a->cost > cap)
        luaL_error(L, "%s: rule.cost (%I) is more than the rule can ever allow (%I)", fn,
                   (lua_Integer)a->cost, (lua_Integer)cap);
}

/* [-0, +0, v] The key argument; long keys become '#' .. sha1 hex. */
static const char *check_key(lua_State *L, int idx, const char *fn, size_t *len, char hashed[42]) {
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        luaL_error(L, "%s: the key must be a string, got %s", fn, luaL_typename(L, idx));
    const char *k = lua_tolstring(L, idx, len);
    if (*len == 0) luaL_error(L, "%s: the key must not be empty", fn);
    if (*len > KEY_MAX || k[0] == '#') {
        hashed[0] = '#';
        jj_sha1_hex(k, *len, hashed + 1);
        *len = 41;
        return hashed;
    }
    return k;
}

/* [-0, +1, m] prefix .. "rl:" .. kind .. ":" .. key */
static void push_redis_key(lua_State *L, const char *prefix, char kind, const char *k, size_t klen) {
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, prefix);
    luaL_addstring(&b, "rl:");
    luaL_addchar(&b, kind);
    luaL_addchar(&b, ':');
    luaL_addlstring(&b, k, klen);
    luaL_pushresult(&b);
}

/* --------------------------------------------------------------- results */

/* [-0, +1, m] */
static void push_result(lua_State *L, const jj_rl_result *res) {
    lua_createtable(L, 0, 5);
    lua_pushboolean(L, res->allowed);
    lua_setfield(L, -2, "allowed");
    lua_pushinteger(L, (lua_Integer)res->limit);
    lua_setfield(L, -2, "limit");
    lua_pushinteger(L, (lua_Integer)res->remaining);
    lua_setfield(L, -2, "remaining");
    lua_pushnumber(L, res->reset > 0 ? res->reset : 0);
    lua_setfield(L, -2, "reset");
    if (res->allowed) lua_pushinteger(L, 0);
    else lua_pushnumber(L, res->retry_after > 0 ? res->retry_after : 0);
    lua_setfield(L, -2, "retry_after");
}

static jj_redis *client_of(lua_State *L) { return jj_engine_redis(jj_engine_of(L)); }

static int push_error(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* Redis refusing at once: unavailable/overloaded are results, else misuse. */
static int refused_now(lua_State *L, const char *err) {
    if (err && (strcmp(err, "redis unavailable") == 0 || strcmp(err, "redis overloaded") == 0))
        return push_error(L, err);
    return luaL_error(L, "ratelimit: %s", err ? err : "command refused");
}

/* What one check is resumed with. */
typedef struct outcome {
    const jj_redis_reply *reply;   /* the batch's reply (an array), or NULL */
    size_t index;                  /* first of this check's 4 integers */
    const char *err;               /* static string, or NULL */
    long long limit;
} outcome;

/* [-1, +(1|2), m] Runs under pcall on the main thread (jj_wait_push_protected). */
static int build_outcome(lua_State *L) {
    const outcome *o = lua_touserdata(L, 1);
    lua_settop(L, 0);
    if (o->err) return push_error(L, o->err);
    const jj_redis_reply *r = o->reply;
    if (jj_reply_type(r) == JJ_REPLY_ERROR) {
        size_t len;
        const char *s = jj_reply_str(r, &len);
        lua_pushnil(L);
        lua_pushlstring(L, s ? s : "", len);
        return 2;
    }
    long long v[4];
    if (jj_reply_type(r) != JJ_REPLY_ARRAY || jj_reply_elements(r) < o->index + 4)
        return push_error(L, "ratelimit: unexpected reply from the script");
    for (size_t i = 0; i < 4; i++) {
        const jj_redis_reply *e = jj_reply_element(r, o->index + i);
        if (jj_reply_type(e) != JJ_REPLY_INTEGER)
            return push_error(L, "ratelimit: unexpected reply from the script");
        v[i] = jj_reply_integer(e);
    }
    jj_rl_result res = {
        .allowed = v[0] != 0,
        .limit = o->limit,
        .remaining = v[1],
        .reset = (double)v[2] / 1e6,
        .retry_after = (double)v[3] / 1e6,
    };
    push_result(L, &res);
    return 1;
}

/* Resumes the task of w with the outcome, or drops w when it already timed
 * out. */
static void finish(jj_wait *w, const outcome *o) {
    if (jj_wait_target(w) == NULL) {
        jj_wait_release(w);
        return;
    }
    int n = jj_wait_push_protected(w, build_outcome, (void *)o, 0);
    jj_wait_resume(w, n);
}

/* ------------------------------------------------------------- batching
 * A check copies its keys and arguments and yields. Before the loop next
 * blocks (an ev_prepare watcher, active only while checks wait), every
 * check queued during the turn goes out as one EVALSHA of BATCH_SRC (at
 * most BATCH_MAX per call): each check is still decided atomically on
 * Redis's clock, but a busy worker pays one script call and one round trip
 * for many requests. The queue belongs to the process (one engine, one
 * loop, one Redis client per worker). */

#define BATCH_MAX 128

typedef struct check {
    jj_wait *w;
    long long limit;
    int nkeys;                 /* 1 (gcra) or 2 (sliding window) */
    size_t keylen[2];
    const char *key[2];        /* into buf */
    const char *arg[5];        /* kind, p1, p2, cost, consume */
    size_t arglen[5];
    char num[3][24];
    char buf[];
} check;

typedef struct batch {
    size_t n;
    check *items[];
} batch;

static struct {
    struct ev_loop *loop;
    jj_redis *redis;
    ev_prepare prepare;
    check **items;
    size_t n, cap;
    unsigned long long checks, calls;   /* sent to Redis, script calls they took */
} queue;

static void free_batch(batch *b) {
    for (size_t i = 0; i < b->n; i++) free(b->items[i]);
    free(b);
}

static void on_batch_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    batch *b = privdata;
    for (size_t i = 0; i < b->n; i++) {
        outcome o = { reply, i * 4, reply ? NULL : (err ? err : "redis connection lost"), b->items[i]->limit };
        finish(b->items[i]->w, &o);   /* may run Lua that queues new checks */
    }
    free_batch(b);
}

/* Sends items[0..n) as one EVALSHA; on refusal, every check gets the error. */
static void send_batch(check **items, size_t n) {
    batch *b = malloc(sizeof *b + n * sizeof *b->items);
    size_t nkeys = 0;
    for (size_t i = 0; i < n; i++) nkeys += (size_t)items[i]->nkeys;
    size_t argc = nkeys + 1 + 5 * n;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *argvlen = malloc(argc * sizeof *argvlen);
    const char *err = "out of memory";
    if (b && argv && argvlen) {
        b->n = n;
        memcpy(b->items, items, n * sizeof *items);
        char count[24];
        size_t k = 0, a = nkeys;
        argvlen[a] = (size_t)snprintf(count, sizeof count, "%zu", n);
        argv[a++] = count;
        for (size_t i = 0; i < n; i++) {
            check *c = items[i];
            for (int j = 0; j < c->nkeys; j++) {
                argv[k] = c->key[j];
                argvlen[k++] = c->keylen[j];
            }
            for (int j = 0; j < 5; j++) {
                argv[a] = c->arg[j];
                argvlen[a++] = c->arglen[j];
            }
        }
        err = NULL;
        queue.checks += n;
        queue.calls++;
        if (jj_redis_evalsha(queue.redis, batch_sha, (int)nkeys, (int)argc, argv, argvlen,
                             on_batch_reply, b, &err) == 0) {
            free(argv);
            free(argvlen);
            return;   /* on_batch_reply owns b and the checks */
        }
        if (!err) err = "redis unavailable";
    }
    free(argv);
    free(argvlen);
    for (size_t i = 0; i < n; i++) {
        outcome o = { NULL, 0, err, items[i]->limit };
        finish(items[i]->w, &o);
        free(items[i]);
    }
    free(b);
}

static void flush(struct ev_loop *loop, ev_prepare *w, int revents) {
    (void)revents;
    ev_prepare_stop(loop, w);
    /* Take the queue: checks queued while results are delivered (resumed
     * tasks) go into a fresh one, sent on the next turn. */
    check **items = queue.items;
    size_t n = queue.n;
    queue.items = NULL;
    queue.n = queue.cap = 0;
    for (size_t off = 0; off < n; off += BATCH_MAX)
        send_batch(items + off, n - off < BATCH_MAX ? n - off : BATCH_MAX);
    free(items);
}

/* [-0, +0, m] Queues c (owned by the queue from here on). */
static int enqueue(lua_State *L, check *c) {
    jj_engine *e = jj_engine_of(L);
    if (queue.n == 0) {
        queue.loop = jj_engine_loop(e);
        queue.redis = jj_engine_redis(e);
    }
    if (queue.n == queue.cap) {
        size_t cap = queue.cap ? queue.cap * 2 : 64;
        check **items = realloc(queue.items, cap * sizeof *items);
        if (!items) return -1;
        queue.items = items;
        queue.cap = cap;
    }
    queue.items[queue.n++] = c;
    if (!ev_is_active(&queue.prepare)) {
        ev_prepare_init(&queue.prepare, flush);
        ev_prepare_start(queue.loop, &queue.prepare);
    }
    return 0;
}

/* [-2, +(1|2), e] check (consume = 1) and peek (consume = 0). */
static int run_check(lua_State *L, int consume, const char *fn) {
    size_t klen;
    char hashed[42];
    const char *k = check_key(L, 1, fn, &klen, hashed);
    rule_args a;
    check_rule(L, 2, fn, &a);
    jj_redis *r = client_of(L);
    jj_redis_status st;
    jj_redis_get_status(r, &st);
    if (!st.up) return push_error(L, "redis unavailable");   /* at once, like redis.call */

    const char *prefix = jj_redis_prefix(r);
    size_t plen = strlen(prefix);
    int nkeys = a.algo == ALGO_GCRA ? 1 : 2;
    size_t one = plen + 5 + klen;   /* prefix "rl:X:" key */
    jj_wait *w = jj_wait_new(L, 0);   /* raises outside a task: before anything is allocated */
    check *c = malloc(sizeof *c + (size_t)nkeys * (one + 1));
    if (!c) {
        jj_wait_abandon(w);
        return luaL_error(L, "not enough memory");
    }
    static const char kinds[2][2] = { { 'g', 0 }, { 's', 'm' } };
    char *p = c->buf;
    for (int j = 0; j < nkeys; j++) {
        memcpy(p, prefix, plen);
        memcpy(p + plen, "rl:", 3);
        p[plen + 3] = kinds[a.algo][j];
        p[plen + 4] = ':';
        memcpy(p + plen + 5, k, klen);
        p[one] = '\0';
        c->key[j] = p;
        c->keylen[j] = one;
        p += one + 1;
    }
    c->nkeys = nkeys;
    c->limit = a.r.limit;
    if (a.algo == ALGO_GCRA) {
        double T = (double)llround(a.r.period * 1e6 / (double)a.r.limit);
        snprintf(c->num[0], sizeof c->num[0], "%.0f", T < 1 ? 1 : T);
        snprintf(c->num[1], sizeof c->num[1], "%lld", a.r.burst);
    } else {
        snprintf(c->num[0], sizeof c->num[0], "%.0f", ceil(a.r.period * 1e6));
        snprintf(c->num[1], sizeof c->num[1], "%lld", a.r.limit);
    }
    snprintf(c->num[2], sizeof c->num[2], "%lld", a.cost);
    c->arg[0] = a.algo == ALGO_GCRA ? "g" : "s";
    c->arg[1] = c->num[0];
    c->arg[2] = c->num[1];
    c->arg[3] = c->num[2];
    c->arg[4] = consume ? "1" : "0";
    for (int j = 0; j < 5; j++) c->arglen[j] = strlen(c->arg[j]);

    c->w = w;
    if (enqueue(L, c) != 0) {
        jj_wait_abandon(w);
        free(c);
        return luaL_error(L, "not enough memory");
    }
    return jj_wait_yield(L, w);
}

/* ratelimit.check(key, rule) -> res | nil, err */
static int l_check(lua_State *L) { return run_check(L, 1, "ratelimit.check"); }

/* ratelimit.peek(key, rule) -> res | nil, err (nothing consumed) */
static int l_peek(lua_State *L) { return run_check(L, 0, "ratelimit.peek"); }

/* Reply of a reset (DEL): privdata is the wait. */
static void on_reset_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    jj_wait *w = privdata;
    if (jj_wait_target(w) == NULL) {
        jj_wait_release(w);
        return;
    }
    lua_State *co = jj_wait_target(w);
    int n;
    if (!reply || jj_reply_type(reply) == JJ_REPLY_ERROR) {
        outcome o = { reply, 0, reply ? NULL : (err ? err : "redis connection lost"), 0 };
        n = jj_wait_push_protected(w, build_outcome, &o, 0);
    } else {
        lua_pushboolean(co, 1);
        n = 1;
    }
    jj_wait_resume(w, n);
}

/* ratelimit.reset(key) -> true | nil, err: deletes the key's state of every
 * algorithm. */
static int l_reset(lua_State *L) {
    size_t klen;
    char hashed[42];
    const char *k = check_key(L, 1, "ratelimit.reset", &klen, hashed);
    jj_redis *r = client_of(L);
    const char *prefix = jj_redis_prefix(r);
    const char *argv[4] = { "DEL" };
    size_t argvlen[4] = { 3 };
    static const char kinds[3] = { 'g', 's', 'm' };
    for (int i = 0; i < 3; i++) {
        push_redis_key(L, prefix, kinds[i], k, klen);
        argv[i + 1] = lua_tolstring(L, -1, &argvlen[i + 1]);
    }
    jj_wait *w = jj_wait_new(L, 0);
    const char *err = NULL;
    if (jj_redis_command(r, 4, argv, argvlen, on_reset_reply, w, &err) != 0) {
        jj_wait_abandon(w);
        return refused_now(L, err);
    }
    return jj_wait_yield(L, w);
}

/* ------------------------------------------------------------------ local */

static jj_rl_local *local_of(lua_State *L) {
    jj_rl_local *l = jj_rl_local_default();
    if (!l) luaL_error(L, "ratelimit: not enough memory for the local limiter");
    return l;
}

static double now_of(lua_State *L) { return ev_now(jj_engine_loop(jj_engine_of(L))); }

/* [-2, +1, e] local_check / local_peek: GCRA whatever rule.algorithm says
 * (a sliding-window rule is approximated by a bucket of `limit`). */
static int run_local(lua_State *L, int consume, const char *fn) {
    size_t klen;
    char hashed[42];
    const char *k = check_key(L, 1, fn, &klen, hashed);
    rule_args a;
    check_rule(L, 2, fn, &a);
    jj_rl_result res;
    jj_rl_local_check(local_of(L), k, klen, now_of(L), &a.r, a.cost, consume, &res);
    push_result(L, &res);
    return 1;
}

static int l_local_check(lua_State *L) { return run_local(L, 1, "ratelimit.local_check"); }
static int l_local_peek(lua_State *L) { return run_local(L, 0, "ratelimit.local_peek"); }

static int l_local_reset(lua_State *L) {
    size_t klen;
    char hashed[42];
    const char *k = check_key(L, 1, "ratelimit.local_reset", &klen, hashed);
    lua_pushboolean(L, jj_rl_local_reset(local_of(L), k, klen));
    return 1;
}

/* ratelimit.stats() -> { checks, script_calls, local_keys }: checks sent
 * to Redis by this process and the script calls they took (batches). */
static int l_stats(lua_State *L) {
    lua_createtable(L, 0, 3);
    lua_pushinteger(L, (lua_Integer)queue.checks);
    lua_setfield(L, -2, "checks");
    lua_pushinteger(L, (lua_Integer)queue.calls);
    lua_setfield(L, -2, "script_calls");
    jj_rl_local *l = jj_rl_local_default();
    lua_pushinteger(L, l ? (lua_Integer)jj_rl_local_count(l) : 0);
    lua_setfield(L, -2, "local_keys");
    return 1;
}

static int l_local_count(lua_State *L) {
    lua_pushinteger(L, (lua_Integer)jj_rl_local_count(local_of(L)));
    return 1;
}

/* [-0, +1, e] */
int luaopen_engine_ratelimit(lua_State *L) {
    static const luaL_Reg fns[] = {
        { "check", l_check },
        { "peek", l_peek },
        { "reset", l_reset },
        { "local_check", l_local_check },
        { "local_peek", l_local_peek },
        { "local_reset", l_local_reset },
        { "local_count", l_local_count },
        { "stats", l_stats },
        { NULL, NULL },
    };
    if (jj_redis_script(client_of(L), BATCH_SRC, sizeof BATCH_SRC - 1, batch_sha) != 0)
        return luaL_error(L, "engine.ratelimit: cannot register its Redis script");
    luaL_newlib(L, fns);
    return 1;
}
