/* lua_ratelimit.c: the `engine.ratelimit` module: rate limits kept in Redis,
 * checked and consumed in one atomic script on the server's clock, plus the
 * per-process local limiter (ratelimit.h) for when Redis is unavailable.
 *
 *   res, err = ratelimit.check(key, rule)     -- consume rule.cost units
 *   res, err = ratelimit.peek(key, rule)      -- the same answer, nothing consumed
 *   ok, err  = ratelimit.reset(key)           -- forget the key (every algorithm)
 *   rule     = ratelimit.rule(t)              -- t checked once; faster to pass around
 *   res      = ratelimit.local_check(key, rule)   -- this process only, GCRA, no I/O
 *   res      = ratelimit.local_peek(key, rule)
 *   ok       = ratelimit.local_reset(key)
 *   st       = ratelimit.stats()              -- { checks, script_calls, local_keys }
 *
 *   rule = { limit = 100, period = 60, algorithm = "gcra" | "sliding_window",
 *            cost = 1, burst = limit }        (a table, or ratelimit.rule's result)
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
 * replaced by '#' and its SHA-1 in hex. They expire once they no longer
 * matter (a full bucket / an empty window).
 *
 * check/peek/reset yield until Redis answers (REDIS_TIMEOUT_MS). Redis
 * trouble returns nil, err ("redis unavailable" at once when it is down,
 * "timeout", "redis connection lost", or an error reply); a bad key or rule
 * raises. The local_* functions never yield and use the loop's clock; the
 * local limiter lives outside the VM, so a hot reload keeps its state.
 *
 * Batching: the checks a worker makes during one loop turn go to Redis
 * together, as one EVALSHA (at most BATCH_MAX checks each), just before the
 * loop next waits for I/O; while one such call is in flight, new checks
 * wait for its answer and then go together in the next (so batches grow
 * with load instead of the number of script calls). Identical checks (same key, rule, cost, mode)
 * form a group that the script decides in O(1): it admits as many as fit,
 * in order, and C works out each one's result (ratelimit.h, *_replay) --
 * exactly what deciding them one by one would give. Every check is still
 * decided atomically on Redis's clock; a busy worker just pays one script
 * call and one round trip for many requests.
 */
#include "engine.h"
#include "lua_modules.h"
#include "lua_ratelimit.h"
#include "ratelimit.h"
#include "redis.h"
#include "sha1.h"
#include "task.h"

#include <ev.h>
#include <lauxlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY_MAX 200                 /* longer keys are hashed */
#define LIMIT_MAX 1000000000LL
#define PERIOD_MAX (366.0 * 86400)
#define TAU_MAX (1LL << 50)         /* us: burst * period / limit, ~35 years */
#define BATCH_MAX 128
#define INFLIGHT_MAX 1              /* script calls in flight per process */
#define RULE_MT "engine.ratelimit.rule"

/* --------------------------------------------------------------- scripts
 * Redis runs Lua 5.1 with doubles: microseconds since the epoch (~2^51)
 * are exact. tostring() of such a number loses digits, so strings built
 * from them use %.0f; numbers passed to redis.call are converted exactly
 * by Redis (%.17g). Replies are integers.
 *
 * ARGV[1] = number of groups, then 6 values per group: kind ('g' gcra, 's'
 * sliding window), p1, p2, cost, consume ('1' | '0'), m (checks in the
 * group). Keys, in group order:
 *   gcra:    the TAT (us). p1 = T (us per unit), p2 = burst.
 *   sliding: the log (sorted set, score = time in us, member
 *            "time:seq:cost"), its hash { n = cost in the log, s = seq }.
 *            p1 = window (us), p2 = limit.
 * KEYS after the groups' are values to read with GET once the groups are
 * decided (a C caller's lookup riding along: jj_ratelimit_submit's fetch);
 * their replies follow the groups' integers, in order.
 * -> 4 integers per group:
 *   gcra:    admitted, max(TAT, now) - now before the group, 0, 0
 *   sliding: admitted, units in the window before the group, reset (us
 *            until the window is empty), retry (us until one more check
 *            of the group would fit)
 * A gcra key is read once and written once per call (state kept in `tat`). */
static const char BATCH_SRC[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
    "local floor, max, ceil, fmt = math.floor, math.max, math.ceil, string.format\n"
    "local tat, dirty = {}, {}\n"
    "local function cost_of(m) return tonumber(string.match(m, ':(%d+)$')) or 0 end\n"
    "local function sliding(log, meta, window, limit, cost, consume, m)\n"
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
    "  local before, j = used, 0\n"
    "  if consume and cost > 0 then\n"
    "    j = floor((limit - used) / cost)\n"
    "    if j < 0 then j = 0 elseif j > m then j = m end\n"
    "    if j > 0 then\n"
    "      local seq = redis.call('HINCRBY', meta, 's', 1)\n"
    "      redis.call('ZADD', log, now, fmt('%.0f', now) .. ':' .. seq .. ':' .. (j * cost))\n"
    "      used = used + j * cost\n"
    "      redis.call('HSET', meta, 'n', used)\n"
    "      local px = ceil(window / 1000) + 1\n"
    "      redis.call('PEXPIRE', log, px)\n"
    "      redis.call('PEXPIRE', meta, px)\n"
    "    end\n"
    "  elseif used + cost <= limit then j = m end\n"
    "  local reset, retry = 0, 0\n"
    "  if used > 0 then\n"
    "    local last = redis.call('ZREVRANGEBYSCORE', log, '+inf', '(' .. edge, 'WITHSCORES', 'LIMIT', 0, 1)\n"
    "    if last[2] then reset = max(0, tonumber(last[2]) + window - now) end\n"
    "  end\n"
    "  if j < m then\n"
    "    local need, freed = used + cost - limit, 0\n"
    "    retry = window\n"
    "    local live = redis.call('ZRANGEBYSCORE', log, '(' .. edge, '+inf', 'WITHSCORES')\n"
    "    for i = 1, #live, 2 do\n"
    "      freed = freed + cost_of(live[i])\n"
    "      if freed >= need then retry = max(0, tonumber(live[i + 1]) + window - now) break end\n"
    "    end\n"
    "  end\n"
    "  return j, before, reset, retry\n"
    "end\n"
    "local out, k, a = {}, 1, 2\n"
    "for g = 1, tonumber(ARGV[1]) do\n"
    "  local p1, p2, cost = tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2]), tonumber(ARGV[a + 3])\n"
    "  local consume, m = ARGV[a + 4] == '1', tonumber(ARGV[a + 5])\n"
    "  local x, y, z, w = 0, 0, 0, 0\n"
    "  if ARGV[a] == 'g' then\n"
    "    local key, tau, c = KEYS[k], p1 * p2, cost * p1\n"
    "    k = k + 1\n"
    "    local base = tat[key]\n"
    "    if base == nil then base = tonumber(redis.call('GET', key) or 0) or 0 tat[key] = base end\n"
    "    if base < now then base = now end\n"
    "    y = base - now\n"
    "    if consume and c > 0 then\n"
    "      x = floor((tau - y) / c)\n"
    "      if x < 0 then x = 0 elseif x > m then x = m end\n"
    "      if x > 0 then tat[key] = base + x * c dirty[key] = true end\n"
    "    elseif y + c - tau <= 0 then x = m end\n"
    "  else\n"
    "    x, y, z, w = sliding(KEYS[k], KEYS[k + 1], p1, p2, cost, consume, m)\n"
    "    k = k + 2\n"
    "  end\n"
    "  local o = #out\n"
    "  out[o + 1], out[o + 2], out[o + 3], out[o + 4] = x, y, z, w\n"
    "  a = a + 6\n"
    "end\n"
    "for key in pairs(dirty) do\n"
    "  redis.call('SET', key, tat[key], 'PX', ceil((tat[key] - now) / 1000) + 1)\n"
    "end\n"
    "for i = k, #KEYS do out[#out + 1] = redis.call('GET', KEYS[i]) end\n"
    "return out\n";

/* The SHA, the same in every process (computed from the source). */
static char batch_sha[41];

/* ------------------------------------------------------------------ rules */

enum { ALGO_GCRA = JJ_RL_GCRA, ALGO_SLIDING = JJ_RL_SLIDING };

typedef jj_rl_args rule_args;   /* lua_ratelimit.h */

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
static void check_rule_table(lua_State *L, int idx, const char *fn, rule_args *a) {
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
    if (a->algo == ALGO_GCRA) {
        long long T = llround(a->r.period * 1e6 / (double)a->r.limit);
        a->p1 = T < 1 ? 1 : T;
        a->p2 = a->r.burst;
        if ((double)a->p1 * (double)a->p2 > (double)TAU_MAX)
            luaL_error(L, "%s: rule.burst * period / limit is too long (at most 2^50 us)", fn);
    } else {
        a->p1 = (long long)ceil(a->r.period * 1e6);
        a->p2 = a->r.limit;
    }
    a->l1 = (unsigned char)snprintf(a->s1, sizeof a->s1, "%lld", a->p1);
    a->l2 = (unsigned char)snprintf(a->s2, sizeof a->s2, "%lld", a->p2);
    a->lcost = (unsigned char)snprintf(a->scost, sizeof a->scost, "%lld", a->cost);
}

/* [-0, +0, v] The rule at idx: a ratelimit.rule userdata or a table. */
static const rule_args *get_rule(lua_State *L, int idx, const char *fn, rule_args *scratch) {
    const rule_args *ud = luaL_testudata(L, idx, RULE_MT);
    if (ud) return ud;
    check_rule_table(L, idx, fn, scratch);
    return scratch;
}

/* ratelimit.rule(t) -> a checked rule (userdata), usable wherever a rule
 * table is; `limit`, `period`, `algorithm`, `burst`, `cost` read back. */
static int l_rule(lua_State *L) {
    rule_args a;
    check_rule_table(L, 1, "ratelimit.rule", &a);
    rule_args *ud = lua_newuserdatauv(L, sizeof *ud, 0);
    *ud = a;
    luaL_setmetatable(L, RULE_MT);
    return 1;
}

static int rule_index(lua_State *L) {
    const rule_args *a = luaL_checkudata(L, 1, RULE_MT);
    const char *k = luaL_checkstring(L, 2);
    if (strcmp(k, "limit") == 0) lua_pushinteger(L, (lua_Integer)a->r.limit);
    else if (strcmp(k, "period") == 0) lua_pushnumber(L, a->r.period);
    else if (strcmp(k, "algorithm") == 0) lua_pushstring(L, a->algo == ALGO_GCRA ? "gcra" : "sliding_window");
    else if (strcmp(k, "burst") == 0 && a->algo == ALGO_GCRA) lua_pushinteger(L, (lua_Integer)a->r.burst);
    else if (strcmp(k, "cost") == 0) lua_pushinteger(L, (lua_Integer)a->cost);
    else lua_pushnil(L);
    return 1;
}

/* A key longer than KEY_MAX (or starting with '#') becomes '#' .. its SHA-1
 * in hex, written to hashed. */
static const char *shorten_key(const char *k, size_t *len, char hashed[42]) {
    if (*len <= KEY_MAX && k[0] != '#') return k;
    hashed[0] = '#';
    jj_sha1_hex(k, *len, hashed + 1);
    *len = 41;
    return hashed;
}

/* [-0, +0, v] The key argument; long keys become '#' .. sha1 hex. */
static const char *check_key(lua_State *L, int idx, const char *fn, size_t *len, char hashed[42]) {
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        luaL_error(L, "%s: the key must be a string, got %s", fn, luaL_typename(L, idx));
    const char *k = lua_tolstring(L, idx, len);
    if (*len == 0) luaL_error(L, "%s: the key must not be empty", fn);
    return shorten_key(k, len, hashed);
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

typedef struct check {
    jj_wait *w;                /* a Lua task waits... */
    jj_rl_done *done;          /* ... or a C caller (jj_ratelimit_submit) */
    void *done_ud;
    const char *fetch;         /* a key to GET along (into buf), or NULL */
    size_t fetch_len;
    size_t fetch_idx;          /* its reply's index in the script's answer */
    struct check *next;        /* in its group */
    rule_args a;
    int consume;
    int nkeys;                 /* 1 (gcra) or 2 (sliding window) */
    uint64_t hash;             /* of key[0] */
    size_t keylen[2];
    const char *key[2];        /* into buf */
    char buf[];
} check;

/* What one check is resumed with: a result, or an error (err, or an error
 * reply). */
typedef struct outcome {
    const jj_rl_result *res;
    const jj_redis_reply *fetched;   /* the GET riding along (C callers), or NULL */
    const jj_redis_reply *error_reply;
    const char *err;
} outcome;

/* [-1, +(1|2), m] Runs under pcall on the main thread (jj_wait_push_protected). */
static int build_outcome(lua_State *L) {
    const outcome *o = lua_touserdata(L, 1);
    lua_settop(L, 0);
    if (o->res) {
        push_result(L, o->res);
        return 1;
    }
    if (o->error_reply) {
        size_t len;
        const char *s = jj_reply_str(o->error_reply, &len);
        lua_pushnil(L);
        lua_pushlstring(L, s ? s : "", len);
        return 2;
    }
    return push_error(L, o->err ? o->err : "ratelimit: no answer");
}

/* Delivers the outcome of c: resumes its task (or drops the wait when it
 * already timed out), or calls its C callback. */
static void finish(const check *c, const outcome *o) {
    if (!c->done) {
        jj_wait_finish(c->w, build_outcome, (void *)o, 0);
        return;
    }
    if (o->res) { c->done(c->done_ud, o->res, NULL, o->fetched); return; }
    char msg[256];
    const char *err = o->err ? o->err : "ratelimit: no answer";
    if (o->error_reply) {
        size_t len;
        const char *s = jj_reply_str(o->error_reply, &len);
        snprintf(msg, sizeof msg, "%.*s", s ? (int)(len < 255 ? len : 255) : 0, s ? s : "");
        err = msg;
    }
    c->done(c->done_ud, NULL, err, NULL);
}

/* ------------------------------------------------------------- batching */



typedef struct group {
    check *first, *last;
    long long m;
    char count[24];
} group;

typedef struct batch {
    size_t ng;
    size_t nfetch;
    group g[];
} batch;

static struct {
    struct ev_loop *loop;
    jj_redis *redis;
    ev_prepare prepare;
    check **items;
    size_t n, cap;
    int inflight;                       /* script calls sent, not answered yet */
    unsigned long long checks, calls;   /* sent to Redis, script calls they took */
} queue;

static uint64_t fnv1a(const char *s, size_t n) {
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ULL;
    }
    return h;
}

static int same_check(const check *x, const check *y) {
    return x->hash == y->hash && x->keylen[0] == y->keylen[0] && x->consume == y->consume
        && x->a.algo == y->a.algo && x->a.p1 == y->a.p1 && x->a.p2 == y->a.p2 && x->a.cost == y->a.cost
        && memcmp(x->key[0], y->key[0], x->keylen[0]) == 0;
}

static void free_batch(batch *b) {
    for (size_t i = 0; i < b->ng; i++) {
        check *c = b->g[i].first;
        while (c) { check *n = c->next; free(c); c = n; }
    }
    free(b);
}

/* Resumes every check of b with err (or an error reply), then frees b. */
static void fail_batch(batch *b, const jj_redis_reply *error_reply, const char *err) {
    for (size_t i = 0; i < b->ng; i++) {
        for (check *c = b->g[i].first; c; c = c->next) {
            outcome o = { NULL, NULL, error_reply, err };
            finish(c, &o);   /* may run Lua that queues new checks */
        }
    }
    free_batch(b);
}

/* A script call was answered: checks that waited for it go on the next
 * turn. */
static void batch_answered(void) {
    queue.inflight--;
    if (queue.n > 0 && queue.loop && !ev_is_active(&queue.prepare)) ev_prepare_start(queue.loop, &queue.prepare);
}

static void on_batch_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    batch *b = privdata;
    batch_answered();
    if (!reply) { fail_batch(b, NULL, err ? err : "redis connection lost"); return; }
    if (jj_reply_type(reply) == JJ_REPLY_ERROR) { fail_batch(b, reply, NULL); return; }
    if (jj_reply_type(reply) != JJ_REPLY_ARRAY || jj_reply_elements(reply) != 4 * b->ng + b->nfetch) {
        fail_batch(b, NULL, "ratelimit: unexpected reply from the script");
        return;
    }
    for (size_t i = 0; i < 4 * b->ng; i++) {
        if (jj_reply_type(jj_reply_element(reply, i)) != JJ_REPLY_INTEGER) {
            fail_batch(b, NULL, "ratelimit: unexpected reply from the script");
            return;
        }
    }
    for (size_t gi = 0; gi < b->ng; gi++) {
        long long v[4];
        for (size_t j = 0; j < 4; j++) v[j] = jj_reply_integer(jj_reply_element(reply, 4 * gi + j));
        long long i = 0;
        for (check *c = b->g[gi].first; c; c = c->next, i++) {
            const rule_args *a = &c->a;
            jj_rl_result res;
            if (a->algo == ALGO_GCRA)
                jj_rl_gcra_replay(a->p1, a->p2, a->cost, c->consume, v[0], v[1], i, &res);
            else
                jj_rl_sliding_replay(a->p1, a->p2, a->cost, c->consume, v[0], v[1], v[2], v[3], i, &res);
            res.limit = a->r.limit;
            outcome o = { &res, c->fetch ? jj_reply_element(reply, c->fetch_idx) : NULL, NULL, NULL };
            finish(c, &o);   /* may run Lua that queues new checks */
        }
    }
    free_batch(b);
}

/* Groups items[0..n) and sends them as one EVALSHA; on refusal every check
 * gets the error. */
static void send_batch(check **items, size_t n) {
    batch *b = malloc(sizeof *b + n * sizeof b->g[0]);
    if (!b) {
        for (size_t i = 0; i < n; i++) {
            outcome o = { NULL, NULL, NULL, "out of memory" };
            finish(items[i], &o);
            free(items[i]);
        }
        return;
    }
    /* group identical checks (open addressing on the key's hash) */
    enum { SLOTS = 2 * BATCH_MAX };
    int slot[SLOTS];
    memset(slot, -1, sizeof slot);
    b->ng = 0;
    size_t nkeys = 0;
    for (size_t i = 0; i < n; i++) {
        check *c = items[i];
        c->next = NULL;
        size_t s = (size_t)(c->hash ^ (uint64_t)c->a.p1 ^ (uint64_t)c->consume) & (SLOTS - 1);
        group *g = NULL;
        while (slot[s] >= 0) {
            if (same_check(b->g[slot[s]].first, c)) { g = &b->g[slot[s]]; break; }
            s = (s + 1) & (SLOTS - 1);
        }
        if (g) {
            g->last->next = c;
            g->last = c;
            g->m++;
            continue;
        }
        slot[s] = (int)b->ng;
        g = &b->g[b->ng++];
        g->first = g->last = c;
        g->m = 1;
        nkeys += (size_t)c->nkeys;
    }
    /* the reads riding along, numbered in the order results are delivered */
    b->nfetch = 0;
    for (size_t gi = 0; gi < b->ng; gi++)
        for (check *c = b->g[gi].first; c; c = c->next)
            if (c->fetch) c->fetch_idx = 4 * b->ng + b->nfetch++;
    size_t nall = nkeys + b->nfetch;
    size_t argc = nall + 1 + 6 * b->ng;
    const char **argv = malloc(argc * sizeof *argv);
    size_t *argvlen = malloc(argc * sizeof *argvlen);
    if (!argv || !argvlen) {
        free(argv);
        free(argvlen);
        fail_batch(b, NULL, "out of memory");
        return;
    }
    char count[24];
    size_t k = 0, a = nall;
    argvlen[a] = (size_t)snprintf(count, sizeof count, "%zu", b->ng);
    argv[a++] = count;
    for (size_t gi = 0; gi < b->ng; gi++) {
        group *g = &b->g[gi];
        const check *c = g->first;
        for (int j = 0; j < c->nkeys; j++) {
            argv[k] = c->key[j];
            argvlen[k++] = c->keylen[j];
        }
        argv[a] = c->a.algo == ALGO_GCRA ? "g" : "s";
        argvlen[a++] = 1;
        argv[a] = c->a.s1;
        argvlen[a++] = c->a.l1;
        argv[a] = c->a.s2;
        argvlen[a++] = c->a.l2;
        argv[a] = c->a.scost;
        argvlen[a++] = c->a.lcost;
        argv[a] = c->consume ? "1" : "0";
        argvlen[a++] = 1;
        argvlen[a] = (size_t)snprintf(g->count, sizeof g->count, "%lld", g->m);
        argv[a++] = g->count;
    }
    for (size_t gi = 0; gi < b->ng; gi++)
        for (const check *c = b->g[gi].first; c; c = c->next)
            if (c->fetch) {
                argv[k] = c->fetch;
                argvlen[k++] = c->fetch_len;
            }
    const char *err = NULL;
    queue.checks += n;
    queue.calls++;
    int rc = jj_redis_evalsha(queue.redis, batch_sha, (int)nall, (int)argc, argv, argvlen,
                              on_batch_reply, b, &err);
    free(argv);
    free(argvlen);
    if (rc != 0) fail_batch(b, NULL, err ? err : "redis unavailable");
    else queue.inflight++;   /* on_batch_reply owns b and its checks */
}

static void flush(struct ev_loop *loop, ev_prepare *w, int revents) {
    (void)revents;
    ev_prepare_stop(loop, w);
    /* While a script call is in flight, checks gather for the next one
     * (batch_answered restarts this watcher): under load batches grow and
     * Redis runs fewer, larger scripts; idle, a check waits for nothing. */
    if (queue.inflight >= INFLIGHT_MAX) return;
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

void jj_ratelimit_close(void) {
    for (int pass = 0; pass < 100 && queue.n > 0; pass++) {
        if (ev_is_active(&queue.prepare)) ev_prepare_stop(queue.loop, &queue.prepare);
        check **items = queue.items;
        size_t n = queue.n;
        queue.items = NULL;
        queue.n = queue.cap = 0;
        for (size_t i = 0; i < n; i++) {
            outcome o = { NULL, NULL, NULL, "redis closed" };
            finish(items[i], &o);   /* may queue new checks: the next pass fails them */
            free(items[i]);
        }
        free(items);
    }
    if (queue.loop && ev_is_active(&queue.prepare)) ev_prepare_stop(queue.loop, &queue.prepare);
}

/* Queues c (owned by the queue from here on); -1 when out of memory. */
static int enqueue(jj_engine *e, check *c) {
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

/* A check of key k (already shortened by check_key) under a, its Redis keys
 * built: prefix "rl:X:" key. NULL when out of memory. */
static check *new_check(const char *prefix, const char *k, size_t klen, const rule_args *a, int consume,
                        const char *fetch, size_t fetch_len) {
    size_t plen = strlen(prefix);
    int nkeys = a->algo == ALGO_GCRA ? 1 : 2;
    size_t one = plen + 5 + klen;
    check *c = malloc(sizeof *c + (size_t)nkeys * (one + 1) + (fetch ? fetch_len + 1 : 0));
    if (!c) return NULL;
    static const char kinds[2][2] = { { 'g', 0 }, { 's', 'm' } };
    char *p = c->buf;
    for (int j = 0; j < nkeys; j++) {
        memcpy(p, prefix, plen);
        memcpy(p + plen, "rl:", 3);
        p[plen + 3] = kinds[a->algo][j];
        p[plen + 4] = ':';
        memcpy(p + plen + 5, k, klen);
        p[one] = '\0';
        c->key[j] = p;
        c->keylen[j] = one;
        p += one + 1;
    }
    c->fetch = NULL;
    c->fetch_len = 0;
    c->fetch_idx = 0;
    if (fetch) {
        memcpy(p, fetch, fetch_len);
        p[fetch_len] = '\0';
        c->fetch = p;
        c->fetch_len = fetch_len;
    }
    c->nkeys = nkeys;
    c->a = *a;
    c->consume = consume;
    c->hash = fnv1a(c->key[0], one);
    c->w = NULL;
    c->done = NULL;
    c->done_ud = NULL;
    c->next = NULL;
    return c;
}

/* [-2, +(1|2), e] check (consume = 1) and peek (consume = 0). */
static int run_check(lua_State *L, int consume, const char *fn) {
    size_t klen;
    char hashed[42];
    const char *k = check_key(L, 1, fn, &klen, hashed);
    rule_args scratch;
    const rule_args *a = get_rule(L, 2, fn, &scratch);
    jj_redis *r = client_of(L);
    jj_redis_status st;
    jj_redis_get_status(r, &st);
    if (!st.up) return push_error(L, "redis unavailable");   /* at once, like redis.call */

    jj_wait *w = jj_wait_new(L, 0);   /* raises outside a task: before anything is allocated */
    check *c = new_check(jj_redis_prefix(r), k, klen, a, consume, NULL, 0);
    if (!c) {
        jj_wait_abandon(w);
        return luaL_error(L, "not enough memory");
    }
    c->w = w;
    if (enqueue(jj_engine_of(L), c) != 0) {
        jj_wait_abandon(w);
        free(c);
        return luaL_error(L, "not enough memory");
    }
    return jj_wait_yield(L, w);
}

int jj_ratelimit_submit(jj_engine *e, const char *key, size_t klen, const jj_rl_args *a, const char *fetch,
                        size_t fetch_len, jj_rl_done *done, void *ud) {
    jj_redis *r = jj_engine_redis(e);
    jj_redis_status st;
    jj_redis_get_status(r, &st);
    if (!st.up || klen == 0) return -1;
    char hashed[42];
    key = shorten_key(key, &klen, hashed);
    check *c = new_check(jj_redis_prefix(r), key, klen, a, 1, fetch, fetch_len);
    if (!c) return -1;
    c->done = done;
    c->done_ud = ud;
    if (enqueue(e, c) != 0) {
        free(c);
        return -1;
    }
    return 0;
}

const jj_rl_args *jj_rl_args_check(lua_State *L, int idx) { return luaL_checkudata(L, idx, RULE_MT); }

/* ratelimit.check(key, rule) -> res | nil, err */
static int l_check(lua_State *L) { return run_check(L, 1, "ratelimit.check"); }

/* ratelimit.peek(key, rule) -> res | nil, err (nothing consumed) */
static int l_peek(lua_State *L) { return run_check(L, 0, "ratelimit.peek"); }

/* Reply of a reset (DEL): privdata is the wait. */
static void on_reset_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    jj_wait *w = privdata;
    lua_State *co = jj_wait_target(w);
    if (co == NULL) {
        jj_wait_release(w);
        return;
    }
    if (reply && jj_reply_type(reply) != JJ_REPLY_ERROR) {
        lua_pushboolean(co, 1);
        jj_wait_resume(w, 1);
        return;
    }
    outcome o = { NULL, NULL, reply, reply ? NULL : (err ? err : "redis connection lost") };
    jj_wait_resume(w, jj_wait_push_protected(w, build_outcome, &o, 0));
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
    rule_args scratch;
    const rule_args *a = get_rule(L, 2, fn, &scratch);
    jj_rl_result res;
    jj_rl_local_check(local_of(L), k, klen, now_of(L), &a->r, a->cost, consume, &res);
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
        { "rule", l_rule },
        { NULL, NULL },
    };
    if (jj_redis_script(client_of(L), BATCH_SRC, sizeof BATCH_SRC - 1, batch_sha) != 0)
        return luaL_error(L, "engine.ratelimit: cannot register its Redis script");
    if (luaL_newmetatable(L, RULE_MT)) {
        lua_pushcfunction(L, rule_index);
        lua_setfield(L, -2, "__index");
    }
    lua_pop(L, 1);
    luaL_newlib(L, fns);
    return 1;
}
