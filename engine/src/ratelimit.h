/* ratelimit.h: the pure parts of rate limiting: GCRA arithmetic and the
 * in-process limiter a worker falls back to when Redis is unavailable.
 *
 * GCRA (the generic cell rate algorithm, a leaky bucket that stores one
 * number per key): a rule allows `limit` units per `period` seconds with a
 * bucket of `burst` units (default: limit). Each unit costs the emission
 * interval T = period / limit; the key's state is its theoretical arrival
 * time (TAT). A request of cost c at time now is allowed when
 *
 *     max(TAT, now) + c*T - burst*T <= now
 *
 * and then moves TAT to max(TAT, now) + c*T. So a fresh key admits exactly
 * `burst` units at once, then one unit every T. Results:
 *   remaining    units a request could still take right now
 *   reset        seconds until the bucket is full again (TAT - now)
 *   retry_after  seconds until this request would be allowed (0 if allowed)
 *
 * The Redis side (lua_ratelimit.c) runs the same formula inside one script
 * on the server's clock; this file is what the local limiter and the unit
 * tests use. Time is whatever the caller passes (seconds, e.g. ev_now).
 * Not thread-safe: one limiter per process, used from the loop thread.
 */
#ifndef JJ_RATELIMIT_H
#define JJ_RATELIMIT_H

#include <stddef.h>

typedef struct jj_rl_rule {
    long long limit;   /* units per period, >= 1 */
    double period;     /* seconds, > 0 */
    long long burst;   /* bucket size in units, >= 1 (callers default it to limit) */
} jj_rl_rule;

typedef struct jj_rl_result {
    int allowed;
    long long limit;
    long long remaining;
    double reset;        /* seconds until full */
    double retry_after;  /* seconds; 0 when allowed */
} jj_rl_result;

/* One GCRA step for a key whose stored TAT is `tat` (0 or anything <= now
 * for a key without state). Fills out; returns the TAT to store: the new
 * one when allowed and consume is set, else `tat` unchanged. cost >= 0. */
double jj_rl_gcra(const jj_rl_rule *r, double now, double tat, long long cost, int consume,
                  jj_rl_result *out);

/* ---- results of checks Redis decided together ---------------------------
 * lua_ratelimit.c sends the identical checks of one loop turn (same key,
 * rule, cost and mode) to Redis as one group of m; the script answers how
 * many of them it admitted, in order, and the state they started from (all
 * integers, microseconds of Redis's clock). These give the i-th check's
 * result, exactly what checking them one by one would have answered. */

/* GCRA: T_us per unit, `admitted` of the group, rel_us = max(TAT, now) - now
 * before the group. */
void jj_rl_gcra_replay(long long T_us, long long burst, long long cost, int consume,
                       long long admitted, long long rel_us, long long i, jj_rl_result *out);
/* How many of m identical GCRA checks fit (what the script computes). */
long long jj_rl_gcra_admit(long long T_us, long long burst, long long cost, int consume,
                           long long rel_us, long long m);

/* Sliding window: used_before = units in the window before the group;
 * reset_us and retry_us as the script computed them after the group. */
void jj_rl_sliding_replay(long long window_us, long long limit, long long cost, int consume,
                          long long admitted, long long used_before, long long reset_us,
                          long long retry_us, long long i, jj_rl_result *out);

/* ---- the local (per-process) limiter ------------------------------------ */
typedef struct jj_rl_local jj_rl_local;

/* A limiter that tracks at most max_keys keys (>= 16). When it is full,
 * keys whose bucket is full again are dropped first (no state is the same
 * as a full bucket); if that is not enough, arbitrary keys are dropped
 * (their next request starts with a full bucket). NULL if out of memory. */
jj_rl_local *jj_rl_local_new(size_t max_keys);
void jj_rl_local_free(jj_rl_local *l);

/* Check (consume = 1) or peek (consume = 0) the key. Returns 0 and fills
 * out, or -1 when out of memory (nothing is stored; out says allowed with
 * the state of a fresh key). */
int jj_rl_local_check(jj_rl_local *l, const char *key, size_t klen, double now,
                      const jj_rl_rule *r, long long cost, int consume, jj_rl_result *out);
/* Forget the key; returns 1 if it was tracked. */
int jj_rl_local_reset(jj_rl_local *l, const char *key, size_t klen);
/* Keys tracked now. */
size_t jj_rl_local_count(const jj_rl_local *l);

/* The process's limiter, created on first use (max 100000 keys); NULL if
 * out of memory. */
jj_rl_local *jj_rl_local_default(void);

#endif
