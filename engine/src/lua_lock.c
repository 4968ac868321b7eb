/* lua_lock.c: the `engine.lock` module, distributed locks in Redis.
 *
 *   lk, err = lock.acquire(name [, { ttl_ms = 5000, wait_ms = 0 }])
 *   ok, err = lk:release()        true | false, "not held" | nil, err
 *   ok, err = lk:extend([ttl_ms]) true | false, "not held" | nil, err
 *   held    = lk:held()           locally: not released, TTL not run out
 *   lk.fence                      the grant's fencing number
 *   lk.name                       the lock's name
 *   local lk <close> = lock.acquire(...)   released on any exit of the block
 *
 * A grant is `SET <prefix>lock:<name> <token> NX PX ttl` plus
 * `INCR <prefix>lock:<name>:fence` in one script, so every grant of a name
 * carries a fencing number larger than every earlier grant's (the fence key
 * has no TTL: numbering never restarts). The token is 192 bits from the OS
 * CSPRNG. Release and extend are compare-and-set scripts on the token: a
 * holder whose TTL ran out can never release or extend the next holder's
 * lock.
 *
 * acquire yields the task once. With wait_ms > 0 the retries run in C: a
 * refused attempt arms a timer (jittered exponential backoff from 5 ms,
 * capped at 200 ms and at the holder's remaining TTL and the deadline)
 * and tries again; nothing spins and the task is resumed exactly once, with
 * the lock, nil, "timeout" (not granted within wait_ms), or nil, <redis
 * error> ("redis unavailable", "redis connection lost", ...). A grant that
 * arrives after the task stopped waiting is given back at once.
 *
 * The lock userdata is created before anything is sent, in a "closed"
 * state that owns nothing; it becomes held only when the grant is stored
 * into it. __close and __gc share the release: where the running task can
 * yield (a block's normal exit, an error unwinding to a pcall) the release
 * waits for Redis's answer; where it cannot (a __gc, or __close run by
 * lua_resetthread for a task that failed or was killed) the release script
 * is sent fire-and-forget. Redis trouble on release leaves the key to
 * expire by its TTL.
 *
 * Metrics (shared, metrics.h): lock_acquisitions{result="acquired"|"timeout"|
 * "error"} per acquire call (one outcome each), lock_contended per
 * attempt refused because someone else held the lock, and lock_wait (ms from
 * the first attempt to the grant).
 */
#include "engine.h"
#include "lua_modules.h"
#include "metrics.h"
#include "redis.h"
#include "task.h"

#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define LOCK_MT "engine.lock"
#define TOKEN_BYTES 24                 /* 192 bits */
#define TOKEN_HEX (TOKEN_BYTES * 2)
#define NAME_MAX_LEN 1024
#define TTL_MAX_MS 86400000LL          /* one day */
#define WAIT_MAX_MS 3600000LL          /* one hour */
#define BACKOFF_FIRST 0.005            /* seconds */
#define BACKOFF_CAP 0.200

/* KEYS: lock, fence. ARGV: token, ttl ms. -> {1, fence} | {0, holder's pttl} */
static const char ACQUIRE_SRC[] =
    "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then\n"
    "  return {1, redis.call('INCR', KEYS[2])}\n"
    "end\n"
    "return {0, redis.call('PTTL', KEYS[1])}\n";
/* KEYS: lock. ARGV: token. -> 1 released | 0 not ours */
static const char RELEASE_SRC[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end\n"
    "return 0\n";
/* KEYS: lock. ARGV: token, ttl ms. -> 1 extended | 0 not ours */
static const char EXTEND_SRC[] =
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end\n"
    "return 0\n";

static char acquire_sha[41], release_sha[41], extend_sha[41];

static jj_metric m_acquired, m_timeout, m_error, m_contended, m_wait;
#define M_ACQUIRED "lock_acquisitions{result=\"acquired\"}"
#define M_TIMEOUT "lock_acquisitions{result=\"timeout\"}"
#define M_ERROR "lock_acquisitions{result=\"error\"}"

typedef struct lock_ud {
    int held;                   /* 0: closed, owns nothing */
    lua_Integer fence;          /* 0 until granted */
    long long ttl_ms;           /* of the grant / last extend */
    double expires;             /* monotonic seconds: conservative end of the TTL */
    size_t keylen;              /* of key */
    size_t name_off;            /* the name starts at key + name_off */
    char token[TOKEN_HEX + 1];
    char key[];                 /* "<prefix>lock:<name>" */
} lock_ud;

/* ----------------------------------------------------------------- helpers */

static double mono_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Fills out with TOKEN_HEX hex characters of CSPRNG output. -1 on failure. */
static int new_token(char out[TOKEN_HEX + 1]) {
    unsigned char b[TOKEN_BYTES];
    size_t got = 0;
    while (got < sizeof b) {
        ssize_t n = getrandom(b + got, sizeof b - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof b; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[TOKEN_HEX] = '\0';
    return 0;
}

/* Jitter only (not security): xorshift64*, seeded from the CSPRNG once. */
static double jitter01(void) {
    static uint64_t s;
    if (s == 0) {
        if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s || s == 0)
            s = (uint64_t)(mono_now() * 1e9) | 1;
    }
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return (double)((s * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
}

static jj_redis *client_of(lua_State *L) { return jj_engine_redis(jj_engine_of(L)); }

/* Fire-and-forget replies: nothing to free (redis.c copied the arguments). */
static void on_forget(const jj_redis_reply *reply, const char *err, void *privdata) {
    (void)reply; (void)err; (void)privdata;
}

/* Sends the owner-checked release without waiting. */
static void release_forget(jj_redis *r, const char *key, size_t keylen, const char *token) {
    const char *argv[2] = { key, token };
    size_t len[2] = { keylen, TOKEN_HEX };
    const char *err = NULL;
    (void)jj_redis_evalsha(r, release_sha, 1, 2, argv, len, on_forget, NULL, &err);
}

/* What a finished wait resumes its task with, built under pcall on the
 * VM's main thread (task.h: jj_wait_push_protected). */
typedef struct result {
    int kind;                   /* R_TRUE, R_NOT_HELD, R_ERROR */
    const char *msg;            /* R_ERROR */
    size_t msglen;
} result;

enum { R_TRUE, R_NOT_HELD, R_ERROR };

static int push_result(lua_State *L) {
    const result *res = lua_touserdata(L, 1);
    lua_settop(L, 0);
    switch (res->kind) {
    case R_TRUE:
        lua_pushboolean(L, 1);
        return 1;
    case R_NOT_HELD:
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "not held");
        return 2;
    default:
        lua_pushnil(L);
        lua_pushlstring(L, res->msg, res->msglen);
        return 2;
    }
}

static void resume_with(jj_wait *w, int kind, const char *msg) {
    result res = { kind, msg, msg ? strlen(msg) : 0 };
    jj_wait_finish(w, push_result, &res, 0);
}

/* An error reply's message, or NULL when the reply is not an error. */
static const char *reply_error(const jj_redis_reply *reply, size_t *len) {
    if (jj_reply_type(reply) != JJ_REPLY_ERROR)
        return NULL;
    const char *s = jj_reply_str(reply, len);
    return s ? s : "";
}

static void resume_reply_error(jj_wait *w, const char *s, size_t len) {
    result res = { R_ERROR, s, len };
    jj_wait_finish(w, push_result, &res, 0);
}

/* Redis refusing a command at once (nothing was sent). */
static int push_refused(lua_State *L, const char *err) {
    lua_pushnil(L);
    lua_pushstring(L, err ? err : "redis unavailable");
    return 2;
}

/* ----------------------------------------------------------------- acquire */

typedef struct acquire_op {
    jj_wait *w;
    jj_redis *r;
    struct ev_loop *loop;
    ev_timer timer;
    int ud_idx;                 /* the userdata in the suspended l_acquire frame */
    long long ttl_ms;
    double deadline;            /* monotonic */
    double delay;               /* next backoff, seconds */
    double sent_at;             /* monotonic, of the attempt in flight */
    double started;             /* monotonic, of the first attempt */
    char token[TOKEN_HEX + 1];
    char ttl[24];
    size_t keylen;
    char keys[];                /* key NUL key ":fence" NUL */
} acquire_op;

static void on_acquire_reply(const jj_redis_reply *reply, const char *err, void *privdata);

/* Sends one attempt. 0, or -1 with *err (the callback will not run). */
static int acquire_send(acquire_op *op, const char **err) {
    const char *argv[4] = { op->keys, op->keys + op->keylen + 1, op->token, op->ttl };
    size_t len[4] = { op->keylen, op->keylen + 6, TOKEN_HEX, strlen(op->ttl) };
    op->sent_at = mono_now();
    return jj_redis_evalsha(op->r, acquire_sha, 2, 4, argv, len, on_acquire_reply, op, err);
}

static void acquire_retry(struct ev_loop *loop, ev_timer *t, int revents) {
    (void)loop; (void)revents;
    acquire_op *op = t->data;
    jj_wait *w = op->w;
    if (jj_wait_target(w) == NULL) {   /* the task stopped waiting */
        jj_wait_release(w);
        free(op);
        return;
    }
    const char *err = NULL;
    if (acquire_send(op, &err) != 0) {
        free(op);
        jj_metric_add(&m_error, M_ERROR, 1);
        resume_with(w, R_ERROR, err ? err : "redis unavailable");
    }
}

static void on_acquire_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    acquire_op *op = privdata;
    jj_wait *w = op->w;
    lua_State *co = jj_wait_target(w);
    if (err) {                         /* connection lost: the key, if set, expires */
        free(op);
        jj_metric_add(&m_error, M_ERROR, 1);
        if (co) resume_with(w, R_ERROR, err);
        else jj_wait_release(w);
        return;
    }
    size_t elen;
    const char *e = reply_error(reply, &elen);
    long long flag = -1, value = 0;
    if (e == NULL && jj_reply_type(reply) == JJ_REPLY_ARRAY && jj_reply_elements(reply) == 2 &&
        jj_reply_type(jj_reply_element(reply, 0)) == JJ_REPLY_INTEGER &&
        jj_reply_type(jj_reply_element(reply, 1)) == JJ_REPLY_INTEGER) {
        flag = jj_reply_integer(jj_reply_element(reply, 0));
        value = jj_reply_integer(jj_reply_element(reply, 1));
    } else if (e == NULL) {
        e = "lock: unexpected reply to the acquire script";
        elen = strlen(e);
    }

    if (co == NULL) {                  /* nobody waits: give a late grant back */
        if (flag == 1)
            release_forget(op->r, op->keys, op->keylen, op->token);
        jj_wait_release(w);
        free(op);
        return;
    }
    if (e) {
        free(op);
        jj_metric_add(&m_error, M_ERROR, 1);
        resume_reply_error(w, e, elen);
        return;
    }
    if (flag == 1) {
        jj_metric_add(&m_acquired, M_ACQUIRED, 1);
        jj_metric_observe(&m_wait, "lock_wait", (mono_now() - op->started) * 1000.0);
        lock_ud *lk = lua_touserdata(co, op->ud_idx);
        lk->held = 1;
        lk->fence = (lua_Integer)value;
        lk->ttl_ms = op->ttl_ms;
        lk->expires = op->sent_at + (double)op->ttl_ms / 1000.0;
        memcpy(lk->token, op->token, sizeof lk->token);
        lua_pushvalue(co, op->ud_idx);   /* room reserved by l_acquire */
        free(op);
        jj_wait_resume(w, 1);
        return;
    }

    /* Refused: try again after a jittered backoff, or give up. */
    jj_metric_add(&m_contended, "lock_contended", 1);
    double now = mono_now();
    if (now >= op->deadline) {
        free(op);
        jj_metric_add(&m_timeout, M_TIMEOUT, 1);
        resume_with(w, R_ERROR, "timeout");
        return;
    }
    double d = op->delay * (0.5 + 0.5 * jitter01());
    if (value > 0 && d > (double)value / 1000.0 + 0.001)
        d = (double)value / 1000.0 + 0.001;   /* the holder's TTL runs out sooner */
    if (now + d > op->deadline)
        d = op->deadline - now;              /* one last attempt at the deadline */
    op->delay = op->delay * 2 > BACKOFF_CAP ? BACKOFF_CAP : op->delay * 2;
    ev_timer_init(&op->timer, acquire_retry, d, 0.);
    op->timer.data = op;
    ev_now_update(op->loop);
    ev_timer_start(op->loop, &op->timer);
}

/* [-0, +0, v] Integer option `field` of the table at idx, within [lo, hi]. */
static long long opt_ms(lua_State *L, int idx, const char *field, long long def, long long lo, long long hi) {
    if (lua_isnoneornil(L, idx))
        return def;
    int t = lua_getfield(L, idx, field);
    long long v = def;
    if (t != LUA_TNIL) {
        int isint = 0;
        lua_Integer n = t == LUA_TNUMBER ? lua_tointegerx(L, -1, &isint) : 0;
        if (!isint || n < lo || n > hi)
            luaL_error(L, "lock.acquire: %s must be an integer between %lld and %lld", field, lo, hi);
        v = (long long)n;
    }
    lua_pop(L, 1);
    return v;
}

/* [-(1|2), +(1|2), e] lock.acquire(name [, opts]) -> lock | nil, err */
static int l_acquire(lua_State *L) {
    size_t namelen;
    const char *name = luaL_checklstring(L, 1, &namelen);
    luaL_argcheck(L, namelen >= 1 && namelen <= NAME_MAX_LEN, 1, "lock name must be 1..1024 bytes");
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushnil(L);
        while (lua_next(L, 2)) {   /* a typo in an option must not pass silently */
            const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
            if (!k || (strcmp(k, "ttl_ms") != 0 && strcmp(k, "wait_ms") != 0))
                return luaL_error(L, "lock.acquire: unknown option %s",
                                  k ? k : luaL_typename(L, -2));
            lua_pop(L, 1);
        }
    }
    long long ttl_ms = opt_ms(L, 2, "ttl_ms", 5000, 1, TTL_MAX_MS);
    long long wait_ms = opt_ms(L, 2, "wait_ms", 0, 0, WAIT_MAX_MS);
    lua_settop(L, 2);
    luaL_checkstack(L, 4, "lock.acquire");

    jj_engine *e = jj_engine_of(L);
    jj_redis *r = jj_engine_redis(e);
    const char *prefix = jj_redis_prefix(r);
    size_t plen = strlen(prefix);
    size_t keylen = plen + 5 + namelen;

    /* The userdata first, owning nothing (index 3). */
    lock_ud *lk = lua_newuserdatauv(L, sizeof *lk + keylen + 1, 0);
    lk->held = 0;
    lk->fence = 0;
    lk->ttl_ms = ttl_ms;
    lk->expires = 0;
    lk->keylen = keylen;
    lk->name_off = plen + 5;
    lk->token[0] = '\0';
    memcpy(lk->key, prefix, plen);
    memcpy(lk->key + plen, "lock:", 5);
    memcpy(lk->key + plen + 5, name, namelen);
    lk->key[keylen] = '\0';
    luaL_setmetatable(L, LOCK_MT);

    jj_wait *w = jj_wait_new(L, (double)wait_ms + jj_engine_io_timeout_ms(e));   /* raises outside a task */
    acquire_op *op = malloc(sizeof *op + 2 * keylen + 8);
    if (op == NULL) {
        jj_wait_abandon(w);
        return luaL_error(L, "not enough memory");
    }
    if (new_token(op->token) != 0) {
        free(op);
        jj_wait_abandon(w);
        lua_pushnil(L);
        lua_pushfstring(L, "no randomness for a lock token: %s", strerror(errno));
        return 2;
    }
    op->w = w;
    op->r = r;
    op->loop = jj_engine_loop(e);
    op->ud_idx = 3;
    op->ttl_ms = ttl_ms;
    op->delay = BACKOFF_FIRST;
    snprintf(op->ttl, sizeof op->ttl, "%lld", ttl_ms);
    op->keylen = keylen;
    memcpy(op->keys, lk->key, keylen + 1);
    memcpy(op->keys + keylen + 1, lk->key, keylen);
    memcpy(op->keys + 2 * keylen + 1, ":fence", 7);
    op->started = mono_now();
    op->deadline = op->started + (double)wait_ms / 1000.0;

    const char *err = NULL;
    if (acquire_send(op, &err) != 0) {
        free(op);
        jj_wait_abandon(w);
        jj_metric_add(&m_error, M_ERROR, 1);
        return push_refused(L, err);
    }
    return jj_wait_yield(L, w);
}

/* ------------------------------------------------------- release / extend */

static void on_release_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    jj_wait *w = privdata;
    if (jj_wait_target(w) == NULL) {
        jj_wait_release(w);
        return;
    }
    if (err) {
        resume_with(w, R_ERROR, err);
        return;
    }
    size_t elen;
    const char *e = reply_error(reply, &elen);
    if (e) {
        resume_reply_error(w, e, elen);
        return;
    }
    int ok = jj_reply_type(reply) == JJ_REPLY_INTEGER && jj_reply_integer(reply) == 1;
    resume_with(w, ok ? R_TRUE : R_NOT_HELD, NULL);
}

/* The release behind lk:release(), __close and __gc. may_wait: the caller
 * can take results (not __gc). Returns the number of results pushed, or
 * yields. */
static int do_release(lua_State *L, lock_ud *lk, int may_wait) {
    if (!lk->held) {
        if (!may_wait)
            return 0;
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "not held");
        return 2;
    }
    lk->held = 0;   /* whatever happens next, this holder is done with it */
    jj_redis *r = client_of(L);
    if (!may_wait || !jj_wait_possible(L)) {
        release_forget(r, lk->key, lk->keylen, lk->token);
        if (!may_wait)
            return 0;
        lua_pushboolean(L, 1);
        return 1;
    }
    const char *argv[2] = { lk->key, lk->token };
    size_t len[2] = { lk->keylen, TOKEN_HEX };
    jj_wait *w = jj_wait_new(L, 0);
    const char *err = NULL;
    if (jj_redis_evalsha(r, release_sha, 1, 2, argv, len, on_release_reply, w, &err) != 0) {
        jj_wait_abandon(w);
        return push_refused(L, err);
    }
    return jj_wait_yield(L, w);
}

/* [-1, +(1|2), e] lk:release() -> true | false, "not held" | nil, err.
 * Where the task cannot yield, the release is sent without waiting and
 * the result is true. */
static int l_release(lua_State *L) {
    lock_ud *lk = luaL_checkudata(L, 1, LOCK_MT);
    lua_settop(L, 1);
    return do_release(L, lk, 1);
}

/* [-2, +0, e] __close(lk, err): results are discarded. */
static int l_close(lua_State *L) {
    lock_ud *lk = luaL_checkudata(L, 1, LOCK_MT);
    lua_settop(L, 1);
    /* do_release waits for the reply where it can yield, and sends the
     * release without waiting where it cannot; __close ignores results */
    return do_release(L, lk, 1);
}

/* [-1, +0, -] __gc: never yields. */
static int l_gc(lua_State *L) {
    lock_ud *lk = lua_touserdata(L, 1);
    if (lk && lk->held)
        do_release(L, lk, 0);
    return 0;
}

typedef struct extend_op {
    jj_wait *w;
    int ud_idx;
    long long ttl_ms;
    double sent_at;
} extend_op;

static void on_extend_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    extend_op *op = privdata;
    jj_wait *w = op->w;
    lua_State *co = jj_wait_target(w);
    if (co == NULL) {
        jj_wait_release(w);
        free(op);
        return;
    }
    lock_ud *lk = lua_touserdata(co, op->ud_idx);
    long long ttl_ms = op->ttl_ms;
    double sent_at = op->sent_at;
    free(op);
    if (err) {
        resume_with(w, R_ERROR, err);
        return;
    }
    size_t elen;
    const char *e = reply_error(reply, &elen);
    if (e) {
        resume_reply_error(w, e, elen);
        return;
    }
    if (jj_reply_type(reply) == JJ_REPLY_INTEGER && jj_reply_integer(reply) == 1) {
        if (lk->held) {   /* not released while the extend was in flight */
            lk->ttl_ms = ttl_ms;
            lk->expires = sent_at + (double)ttl_ms / 1000.0;
        }
        resume_with(w, R_TRUE, NULL);
        return;
    }
    lk->held = 0;   /* expired, and maybe someone else's now */
    resume_with(w, R_NOT_HELD, NULL);
}

/* [-(1|2), +(1|2), e] lk:extend([ttl_ms]) -> true | false, "not held" | nil, err.
 * Sets the remaining TTL to ttl_ms (default: the lock's ttl_ms). */
static int l_extend(lua_State *L) {
    lock_ud *lk = luaL_checkudata(L, 1, LOCK_MT);
    long long ttl_ms = lk->ttl_ms;
    if (!lua_isnoneornil(L, 2)) {
        lua_Integer n = luaL_checkinteger(L, 2);
        luaL_argcheck(L, n >= 1 && n <= TTL_MAX_MS, 2, "ttl_ms must be between 1 and 86400000");
        ttl_ms = (long long)n;
    }
    lua_settop(L, 1);
    if (!lk->held) {
        lua_pushboolean(L, 0);
        lua_pushliteral(L, "not held");
        return 2;
    }
    jj_wait *w = jj_wait_new(L, 0);   /* raises outside a task */
    extend_op *op = malloc(sizeof *op);
    if (op == NULL) {
        jj_wait_abandon(w);
        return luaL_error(L, "not enough memory");
    }
    char ttl[24];
    snprintf(ttl, sizeof ttl, "%lld", ttl_ms);
    op->w = w;
    op->ud_idx = 1;
    op->ttl_ms = ttl_ms;
    op->sent_at = mono_now();
    const char *argv[3] = { lk->key, lk->token, ttl };
    size_t len[3] = { lk->keylen, TOKEN_HEX, strlen(ttl) };
    const char *err = NULL;
    if (jj_redis_evalsha(client_of(L), extend_sha, 1, 3, argv, len, on_extend_reply, op, &err) != 0) {
        free(op);
        jj_wait_abandon(w);
        return push_refused(L, err);
    }
    return jj_wait_yield(L, w);
}

/* [-1, +1, e] lk:held() -> boolean: not released, and the TTL of the last
 * grant or extend (counted from when it was sent) has not run out. Local
 * knowledge: it does not ask Redis. */
static int l_held(lua_State *L) {
    lock_ud *lk = luaL_checkudata(L, 1, LOCK_MT);
    lua_pushboolean(L, lk->held && mono_now() < lk->expires);
    return 1;
}

/* [-2, +1, e] lk.fence, lk.name, and the methods. */
static int l_index(lua_State *L) {
    lock_ud *lk = luaL_checkudata(L, 1, LOCK_MT);
    size_t len;
    const char *k = lua_tolstring(L, 2, &len);
    if (k && lua_type(L, 2) == LUA_TSTRING) {
        if (strcmp(k, "fence") == 0) {
            lua_pushinteger(L, lk->fence);
            return 1;
        }
        if (strcmp(k, "name") == 0) {
            lua_pushlstring(L, lk->key + lk->name_off, lk->keylen - lk->name_off);
            return 1;
        }
    }
    lua_pushvalue(L, 2);
    lua_rawget(L, lua_upvalueindex(1));
    return 1;
}

static int l_tostring(lua_State *L) {
    lock_ud *lk = luaL_checkudata(L, 1, LOCK_MT);
    lua_pushfstring(L, "lock(%s, fence %I, %s)", lk->key + lk->name_off, lk->fence,
                    lk->held ? "held" : "not held");
    return 1;
}

/* [-0, +1, e] */
int luaopen_engine_lock(lua_State *L) {
    jj_redis *r = client_of(L);
    if (jj_redis_script(r, ACQUIRE_SRC, sizeof ACQUIRE_SRC - 1, acquire_sha) != 0 ||
        jj_redis_script(r, RELEASE_SRC, sizeof RELEASE_SRC - 1, release_sha) != 0 ||
        jj_redis_script(r, EXTEND_SRC, sizeof EXTEND_SRC - 1, extend_sha) != 0)
        return luaL_error(L, "engine.lock: cannot register its scripts");
    static const luaL_Reg methods[] = {
        { "release", l_release },
        { "extend", l_extend },
        { "held", l_held },
        { NULL, NULL },
    };
    if (luaL_newmetatable(L, LOCK_MT)) {
        luaL_newlib(L, methods);
        lua_pushcclosure(L, l_index, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_close);
        lua_setfield(L, -2, "__close");
        lua_pushcfunction(L, l_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    static const luaL_Reg fns[] = {
        { "acquire", l_acquire },
        { NULL, NULL },
    };
    luaL_newlib(L, fns);
    return 1;
}
