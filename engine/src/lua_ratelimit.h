/* lua_ratelimit.h: the C side of engine.ratelimit for C callers (the fast
 * path, fastpath.c): a rule checked by ratelimit.rule, and checks that go
 * into the same per-loop-turn batch as the Lua ones (same Redis keys, same
 * script, same results). */
#ifndef JJ_LUA_RATELIMIT_H
#define JJ_LUA_RATELIMIT_H

#include "ratelimit.h"

#include <lua.h>
#include <stddef.h>

typedef struct jj_engine jj_engine;

enum { JJ_RL_GCRA, JJ_RL_SLIDING };

/* A checked rule with its script arguments ready (ratelimit.rule's userdata). */
typedef struct jj_rl_args {
    int algo;              /* JJ_RL_GCRA | JJ_RL_SLIDING */
    jj_rl_rule r;          /* limit, period, burst (the local limiter's view) */
    long long cost;
    long long p1, p2;      /* gcra: T (us), burst; sliding: window (us), limit */
    char s1[24], s2[24], scost[24];
    unsigned char l1, l2, lcost;
} jj_rl_args;

/* [-0, +0, v] The ratelimit.rule userdata at idx; raises if it is not one. */
const jj_rl_args *jj_rl_args_check(lua_State *L, int idx);

typedef struct jj_redis_reply jj_redis_reply;

/* Called once with the result (and, when the check carried a fetch, the
 * reply of its GET: a string, or nil when the key is absent; valid during
 * the call only), or with res NULL and err (Redis trouble, an error reply,
 * "redis closed" at shutdown). May be called from inside the loop's prepare
 * watcher or a Redis reply; may start new checks. */
typedef void jj_rl_done(void *ud, const jj_rl_result *res, const char *err, const jj_redis_reply *fetched);

/* Queues a consuming check of key (as ratelimit.check(key, rule) does:
 * Redis key <prefix>rl:<g|s|m>:<key>, long keys hashed). fetch (optional,
 * a full Redis key): read with GET in the same script call, after the
 * limits are decided, saving the caller a round trip. Returns 0 (done will
 * be called exactly once, later), or -1 when Redis is down or memory ran
 * out (done is never called). */
int jj_ratelimit_submit(jj_engine *e, const char *key, size_t klen, const jj_rl_args *a, const char *fetch,
                        size_t fetch_len, jj_rl_done *done, void *ud);

#endif
