/* Rate limiting, the pure parts: GCRA arithmetic and the local limiter,
 * driven by a fake clock (plain numbers of seconds). */
#include "ratelimit.h"
#include "jj_test.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define NEAR(a, b) (fabs((a) - (b)) < 1e-6)

static jj_rl_rule rule(long long limit, double period, long long burst) {
    jj_rl_rule r = { limit, period, burst > 0 ? burst : limit };
    return r;
}

/* A fresh key admits exactly `limit` in a burst; the next is refused with
 * retry_after = one emission interval; remaining counts down to 0. */
static void test_burst_then_reject(void) {
    jj_rl_rule r = rule(100, 60, 0);   /* T = 0.6 s */
    double now = 1000.0, tat = 0;
    jj_rl_result res;
    int allowed = 0;
    for (int i = 0; i < 100; i++) {
        tat = jj_rl_gcra(&r, now, tat, 1, 1, &res);
        allowed += res.allowed;
        if (i == 0) {
            CHECK_INT(res.remaining, 99);
            CHECK(NEAR(res.reset, 0.6));
            CHECK_INT(res.limit, 100);
        }
    }
    CHECK_INT(allowed, 100);
    CHECK_INT(res.remaining, 0);
    CHECK(NEAR(res.reset, 60.0));
    double before = tat;
    tat = jj_rl_gcra(&r, now, tat, 1, 1, &res);
    CHECK_INT(res.allowed, 0);
    CHECK(NEAR(res.retry_after, 0.6));
    CHECK(NEAR(res.reset, 60.0));
    CHECK_INT(res.remaining, 0);
    CHECK(tat == before);   /* a refusal changes nothing */
    /* 0.25 s later: still refused, 0.35 s to wait */
    jj_rl_gcra(&r, now + 0.25, tat, 1, 1, &res);
    CHECK_INT(res.allowed, 0);
    CHECK(NEAR(res.retry_after, 0.35));
}

/* Refill: one unit per T; after a long idle time the bucket is full again
 * (never more than burst). */
static void test_refill(void) {
    jj_rl_rule r = rule(10, 1, 0);   /* T = 0.1 s */
    double now = 50.0, tat = 0;
    jj_rl_result res;
    for (int i = 0; i < 10; i++) tat = jj_rl_gcra(&r, now, tat, 1, 1, &res);
    tat = jj_rl_gcra(&r, now, tat, 1, 1, &res);
    CHECK_INT(res.allowed, 0);
    now += 0.35;   /* 3 units back */
    int n = 0;
    for (int i = 0; i < 10; i++) {
        tat = jj_rl_gcra(&r, now, tat, 1, 1, &res);
        n += res.allowed;
    }
    CHECK_INT(n, 3);
    CHECK(NEAR(res.retry_after, 0.05));
    now += 100;    /* idle: full, not more */
    jj_rl_gcra(&r, now, tat, 1, 0, &res);
    CHECK_INT(res.remaining, 10);
    CHECK(NEAR(res.reset, 0));
    n = 0;
    for (int i = 0; i < 20; i++) {
        tat = jj_rl_gcra(&r, now, tat, 1, 1, &res);
        n += res.allowed;
    }
    CHECK_INT(n, 10);
}

/* Steady arrivals at exactly the rate are all admitted. */
static void test_steady_rate(void) {
    jj_rl_rule r = rule(5, 1, 1);   /* no burst: one every 0.2 s */
    double tat = 0;
    jj_rl_result res;
    int n = 0;
    for (int i = 0; i < 50; i++) {
        tat = jj_rl_gcra(&r, 10.0 + 0.2 * i, tat, 1, 1, &res);
        n += res.allowed;
    }
    CHECK_INT(n, 50);
    tat = jj_rl_gcra(&r, 10.0 + 0.2 * 49 + 0.1, tat, 1, 1, &res);
    CHECK_INT(res.allowed, 0);
    CHECK(NEAR(res.retry_after, 0.1));
}

/* cost > 1 and an explicit burst. */
static void test_cost_and_burst(void) {
    jj_rl_rule r = rule(10, 10, 0);   /* T = 1 s */
    double now = 7.0, tat = 0;
    jj_rl_result res;
    tat = jj_rl_gcra(&r, now, tat, 4, 1, &res);
    CHECK_INT(res.allowed, 1);
    CHECK_INT(res.remaining, 6);
    tat = jj_rl_gcra(&r, now, tat, 4, 1, &res);
    CHECK_INT(res.remaining, 2);
    tat = jj_rl_gcra(&r, now, tat, 4, 1, &res);
    CHECK_INT(res.allowed, 0);
    CHECK_INT(res.remaining, 2);
    CHECK(NEAR(res.retry_after, 2.0));   /* two more units needed */
    tat = jj_rl_gcra(&r, now, tat, 2, 1, &res);
    CHECK_INT(res.allowed, 1);
    CHECK_INT(res.remaining, 0);

    jj_rl_rule b = rule(60, 60, 5);   /* 1/s, bucket of 5 */
    tat = 0;
    int n = 0;
    for (int i = 0; i < 10; i++) {
        tat = jj_rl_gcra(&b, now, tat, 1, 1, &res);
        n += res.allowed;
    }
    CHECK_INT(n, 5);
    CHECK_INT(res.limit, 60);
    CHECK(NEAR(res.retry_after, 1.0));
    CHECK(NEAR(res.reset, 5.0));
}

/* Peek answers like a check but consumes nothing. */
static void test_peek(void) {
    jj_rl_rule r = rule(3, 3, 0);
    double now = 1.0, tat = 0;
    jj_rl_result res;
    for (int i = 0; i < 5; i++) {
        double t2 = jj_rl_gcra(&r, now, tat, 1, 0, &res);
        CHECK(t2 == tat);
        CHECK_INT(res.allowed, 1);
        CHECK_INT(res.remaining, 3);
    }
    for (int i = 0; i < 3; i++) tat = jj_rl_gcra(&r, now, tat, 1, 1, &res);
    jj_rl_gcra(&r, now, tat, 1, 0, &res);
    CHECK_INT(res.allowed, 0);
    CHECK_INT(res.remaining, 0);
    CHECK(NEAR(res.retry_after, 1.0));
}

/* The local limiter: keys are independent, state persists, reset forgets,
 * a full bucket is not stored, and the table stays bounded. */
static void test_local(void) {
    jj_rl_local *l = jj_rl_local_new(16);
    CHECK(l != NULL);
    jj_rl_rule r = rule(2, 10, 0);
    jj_rl_result res;
    double now = 100.0;
    int a = 0, b = 0;
    for (int i = 0; i < 5; i++) {
        CHECK_INT(jj_rl_local_check(l, "a", 1, now, &r, 1, 1, &res), 0);
        a += res.allowed;
        CHECK_INT(jj_rl_local_check(l, "b", 1, now, &r, 1, 1, &res), 0);
        b += res.allowed;
    }
    CHECK_INT(a, 2);
    CHECK_INT(b, 2);
    CHECK_INT(jj_rl_local_count(l), 2);
    jj_rl_local_check(l, "a", 1, now, &r, 1, 1, &res);
    CHECK_INT(res.allowed, 0);
    CHECK(NEAR(res.retry_after, 5.0));
    /* peeking an unknown key stores nothing */
    jj_rl_local_check(l, "c", 1, now, &r, 1, 0, &res);
    CHECK_INT(res.allowed, 1);
    CHECK_INT(res.remaining, 2);
    CHECK_INT(jj_rl_local_count(l), 2);
    CHECK_INT(jj_rl_local_reset(l, "a", 1), 1);
    CHECK_INT(jj_rl_local_reset(l, "a", 1), 0);
    jj_rl_local_check(l, "a", 1, now, &r, 1, 1, &res);
    CHECK_INT(res.allowed, 1);
    CHECK_INT(res.remaining, 1);
    /* binary keys with NUL bytes are distinct */
    jj_rl_local_check(l, "x\0y", 3, now, &r, 2, 1, &res);
    CHECK_INT(res.allowed, 1);
    jj_rl_local_check(l, "x\0z", 3, now, &r, 2, 1, &res);
    CHECK_INT(res.allowed, 1);

    /* bounded: 1000 keys into a table of 16 */
    char key[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        CHECK_INT(jj_rl_local_check(l, key, (size_t)n, now, &r, 1, 1, &res), 0);
        if (!res.allowed) { CHECK(0); break; }
    }
    CHECK(jj_rl_local_count(l) <= 16);
    /* much later every bucket is full again: an insert sweeps them all */
    size_t before = jj_rl_local_count(l);
    CHECK(before > 0);
    for (int i = 0; i < 40; i++) {
        int n = snprintf(key, sizeof key, "later%d", i);
        jj_rl_local_check(l, key, (size_t)n, now + 1000, &r, 1, 1, &res);
    }
    CHECK(jj_rl_local_count(l) <= 16);
    jj_rl_local_free(l);

    /* a large table grows its buckets and keeps every key's state */
    l = jj_rl_local_new(5000);
    for (int i = 0; i < 4000; i++) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        jj_rl_local_check(l, key, (size_t)n, now, &r, 2, 1, &res);
    }
    CHECK_INT(jj_rl_local_count(l), 4000);
    int refused = 0;
    for (int i = 0; i < 4000; i++) {
        int n = snprintf(key, sizeof key, "key-%d", i);
        jj_rl_local_check(l, key, (size_t)n, now + 1, &r, 1, 1, &res);
        refused += !res.allowed;
    }
    CHECK_INT(refused, 4000);
    jj_rl_local_free(l);

    CHECK(jj_rl_local_default() != NULL);
    CHECK(jj_rl_local_default() == jj_rl_local_default());
}

/* Checks Redis decided together: replaying the group gives exactly what
 * checking them one by one gives (jj_rl_gcra on integer microseconds). */
static void test_gcra_replay(void) {
    struct { long long T, burst, cost; int consume; long long rel, m; } cases[] = {
        { 600000, 100, 1, 1, 0, 150 },          /* fresh: 100 of 150 */
        { 600000, 100, 1, 1, 59400000, 5 },     /* 1 left */
        { 1000000, 10, 4, 1, 0, 5 },            /* cost 4: 2 fit */
        { 1000000, 10, 3, 1, 2500000, 4 },      /* partially refilled */
        { 250000, 4, 1, 0, 500000, 3 },         /* peeks: all the same answer */
        { 250000, 4, 1, 0, 900000, 3 },         /* peeks refused */
        { 36, 100000000, 1, 1, 1000, 64 },      /* the benchmark's rule */
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        long long T = cases[k].T, burst = cases[k].burst, cost = cases[k].cost, m = cases[k].m;
        int consume = cases[k].consume;
        long long admitted = jj_rl_gcra_admit(T, burst, cost, consume, cases[k].rel, m);
        jj_rl_rule r = { burst, (double)T * (double)burst / 1e6, burst };
        double now = 1000.0, tat = now + (double)cases[k].rel / 1e6;
        long long seq_admitted = 0;
        for (long long i = 0; i < m; i++) {
            jj_rl_result one, rep;
            tat = jj_rl_gcra(&r, now, tat, cost, consume, &one);
            jj_rl_gcra_replay(T, burst, cost, consume, admitted, cases[k].rel, i, &rep);
            seq_admitted += one.allowed;
            CHECK_INT(rep.allowed, one.allowed);
            CHECK_INT(rep.remaining, one.remaining);
            CHECK(fabs(rep.reset - one.reset) < 1e-6);
            CHECK(fabs(rep.retry_after - one.retry_after) < 1e-6);
        }
        CHECK_INT(admitted, seq_admitted);
    }
    /* cost 0 is always allowed and changes nothing */
    CHECK_INT(jj_rl_gcra_admit(1000, 5, 0, 1, 5000, 7), 7);
}

static void test_sliding_replay(void) {
    jj_rl_result res;
    /* limit 10, 7 used, cost 2, 3 checks: 1 fits (9), then refused */
    jj_rl_sliding_replay(2000000, 10, 2, 1, 1, 7, 2000000, 350000, 0, &res);
    CHECK_INT(res.allowed, 1);
    CHECK_INT(res.remaining, 1);
    CHECK_INT(res.limit, 10);
    CHECK(NEAR(res.reset, 2.0));
    jj_rl_sliding_replay(2000000, 10, 2, 1, 1, 7, 2000000, 350000, 1, &res);
    CHECK_INT(res.allowed, 0);
    CHECK_INT(res.remaining, 1);
    CHECK(NEAR(res.retry_after, 0.35));
    /* peeks: nothing added */
    jj_rl_sliding_replay(2000000, 10, 1, 0, 2, 4, 800000, 0, 1, &res);
    CHECK_INT(res.allowed, 1);
    CHECK_INT(res.remaining, 6);
    CHECK(NEAR(res.reset, 0.8));
}

int main(void) {
    test_burst_then_reject();
    test_refill();
    test_steady_rate();
    test_cost_and_burst();
    test_peek();
    test_local();
    test_gcra_replay();
    test_sliding_replay();
    return jj_test_done();
}
