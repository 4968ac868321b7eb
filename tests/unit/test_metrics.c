/* test_metrics.c: the shared metrics table: counters, gauges, histograms,
 * labels, exact totals across forked processes, overflow, foreach. */
#include "jj_test.h"
#include "metrics.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define NCHILD 4
#define PER_CHILD 100000
#define RACE_NAMES 300

typedef struct {
    int n, counters, gauges, buckets, sums, counts;
    int seen_shared, seen_labelled, dup;
    char names[8192][JJ_METRICS_DERIVED_MAX + 1];
} seen;

static seen S;

static void collect(const char *name, int kind, int64_t value, void *ud) {
    seen *s = ud;
    for (int i = 0; i < s->n && i < 8192; i++)
        if (strcmp(s->names[i], name) == 0) s->dup++;
    if (s->n < 8192) snprintf(s->names[s->n], sizeof s->names[0], "%s", name);
    s->n++;
    switch (kind) {
    case JJ_METRIC_COUNTER: s->counters++; break;
    case JJ_METRIC_GAUGE: s->gauges++; break;
    case JJ_METRIC_HIST_BUCKET: s->buckets++; break;
    case JJ_METRIC_HIST_SUM: s->sums++; break;
    case JJ_METRIC_HIST_COUNT: s->counts++; break;
    default: break;
    }
    if (!strcmp(name, "shared") && value == (int64_t)NCHILD * PER_CHILD) s->seen_shared++;
    if (!strcmp(name, "cache_hits{ns=\"product\",level=\"L1\"}") && value == 3) s->seen_labelled++;
}

static void scan(void) {
    memset(&S, 0, sizeof S);
    jj_metrics_foreach(collect, &S);
}

static void test_lazy_private_region(void) {
    jj_metrics_reset_for_tests();
    CHECK_INT(jj_metrics_add("lazy", 2), 0);   /* no init: a private region appears */
    CHECK_INT(jj_metrics_get("lazy"), 2);
    CHECK_INT(jj_metrics_capacity(), JJ_METRICS_DEFAULT_SLOTS);
    CHECK_INT(jj_metrics_init(16), 0);          /* idempotent: keeps the region */
    CHECK_INT(jj_metrics_capacity(), JJ_METRICS_DEFAULT_SLOTS);
    CHECK_INT(jj_metrics_get("lazy"), 2);
    jj_metrics_reset_for_tests();
    CHECK_INT(jj_metrics_get("lazy"), 0);
    jj_metrics_reset_for_tests();
}

static void test_counters_and_names(void) {
    CHECK_INT(jj_metrics_init(0), 0);
    CHECK_INT(jj_metrics_init(0), 0);
    CHECK_INT(jj_metrics_get("hits"), 0);
    CHECK_INT(jj_metrics_add("hits", 1), 0);
    CHECK_INT(jj_metrics_add("hits", 41), 0);
    CHECK_INT(jj_metrics_get("hits"), 42);
    CHECK_INT(jj_metrics_add("big", INT64_C(1) << 40), 0);
    CHECK_INT(jj_metrics_add("big", INT64_C(1) << 40), 0);
    CHECK_INT(jj_metrics_get("big"), INT64_C(1) << 41);

    char name[JJ_METRICS_NAME_MAX + 16];
    memset(name, 'n', sizeof name);
    name[JJ_METRICS_NAME_MAX] = 0;   /* 127 bytes: the longest key */
    CHECK_INT(jj_metrics_add(name, 7), 0);
    CHECK_INT(jj_metrics_get(name), 7);
    name[JJ_METRICS_NAME_MAX] = 'n';
    name[JJ_METRICS_NAME_MAX + 1] = 0;   /* 128 bytes */
    CHECK_INT(jj_metrics_add(name, 1), -1);
    CHECK_INT(jj_metrics_set(name, 1), -1);
    CHECK_INT(jj_metrics_observe(name, 1), -1);
    CHECK_INT(jj_metrics_get(name), 0);
    CHECK_INT(jj_metrics_add(NULL, 1), -1);
    CHECK_INT(jj_metrics_add("", 1), -1);
    CHECK_INT(jj_metrics_get(NULL), 0);
    CHECK_INT(jj_metrics_lookup("a\0b", 3, JJ_METRIC_COUNTER), JJ_METRICS_EINVAL);

    /* labels are part of the key */
    const char *l1 = "cache_hits{ns=\"product\",level=\"L1\"}";
    const char *l2 = "cache_hits{ns=\"product\",level=\"L2\"}";
    CHECK_INT(jj_metrics_add(l1, 1), 0);
    CHECK_INT(jj_metrics_add(l1, 2), 0);
    CHECK_INT(jj_metrics_add(l2, 10), 0);
    CHECK_INT(jj_metrics_get(l1), 3);
    CHECK_INT(jj_metrics_get(l2), 10);
    CHECK_INT(jj_metrics_get("cache_hits"), 0);

    /* a name keeps the kind of its first use */
    CHECK_INT(jj_metrics_set("hits", 1), -1);
    CHECK_INT(jj_metrics_observe("hits", 1), -1);
    CHECK_INT(jj_metrics_get("hits"), 42);

    /* the index-level API */
    int idx = jj_metrics_lookup("hits", 4, JJ_METRIC_COUNTER);
    CHECK(idx >= 0);
    CHECK_INT(jj_metrics_lookup("hits", 4, JJ_METRIC_COUNTER), idx);
    CHECK_INT(jj_metrics_lookup("hits", 4, JJ_METRIC_GAUGE), JJ_METRICS_EINVAL);
    CHECK_INT(jj_metrics_add_at(idx, 8), 0);
    CHECK_INT(jj_metrics_get("hits"), 50);
    CHECK_INT(jj_metrics_set_at(idx, 8), JJ_METRICS_EINVAL);
    CHECK_INT(jj_metrics_observe_at(idx, 8), JJ_METRICS_EINVAL);
    CHECK_INT(jj_metrics_add_at(-1, 1), JJ_METRICS_EINVAL);
    CHECK_INT(jj_metrics_add_at(1 << 30, 1), JJ_METRICS_EINVAL);
}

static void test_gauges(void) {
    CHECK_INT(jj_metrics_set("inflight", 5), 0);
    CHECK_INT(jj_metrics_get("inflight"), 5);
    CHECK_INT(jj_metrics_set("inflight", -7), 0);
    CHECK_INT(jj_metrics_get("inflight"), -7);
    CHECK_INT(jj_metrics_add("inflight", 1), -1);
    CHECK_INT(jj_metrics_get("inflight"), -7);
}

static void test_histograms(void) {
    const double obs[] = {0.2, 0.5, 0.7, 3, 3, 12, 6000, 100000};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) CHECK_INT(jj_metrics_observe("lat", obs[i]), 0);
    /* le is inclusive: 0.5 falls in le="0.5" */
    const struct { const char *le; int64_t n; } want[] = {
        {"0.5", 2}, {"1", 3}, {"2.5", 3}, {"5", 5}, {"10", 5}, {"25", 6}, {"50", 6}, {"100", 6},
        {"250", 6}, {"500", 6}, {"1000", 6}, {"2500", 6}, {"5000", 6}, {"+Inf", 8}};
    char name[128];
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        snprintf(name, sizeof name, "lat_bucket{le=\"%s\"}", want[i].le);
        CHECK_INT(jj_metrics_get(name), want[i].n);
    }
    CHECK_INT(jj_metrics_get("lat_count"), 8);
    CHECK_INT(jj_metrics_get("lat"), 8);
    CHECK_INT(jj_metrics_get("lat_sum"), 200 + 500 + 700 + 3000 + 3000 + 12000 + 6000000 + 100000000);
    CHECK_INT(jj_metrics_get("lat_bucket{le=\"7\"}"), 0);
    CHECK_INT(jj_metrics_get("lat_bucket"), 0);
    CHECK_INT(jj_metrics_get("nope_count"), 0);
    int64_t v;
    CHECK_INT(jj_metrics_get_ex("lat_sum", 7, &v), JJ_METRIC_HIST_SUM);
    CHECK_INT(jj_metrics_get_ex("lat_count", 9, &v), JJ_METRIC_HIST_COUNT);
    CHECK_INT(jj_metrics_get_ex("lat_bucket{le=\"5\"}", 18, &v), JJ_METRIC_HIST_BUCKET);
    CHECK_INT(v, 5);
    CHECK_INT(jj_metrics_get_ex("lat", 3, &v), JJ_METRIC_HISTOGRAM);

    /* labels: le goes last, after the histogram's own labels */
    CHECK_INT(jj_metrics_observe("rt{route=\"/x\",m=\"GET\"}", 1.5), 0);
    CHECK_INT(jj_metrics_observe("rt{route=\"/x\",m=\"GET\"}", 0.0004), 0);
    CHECK_INT(jj_metrics_get("rt_bucket{route=\"/x\",m=\"GET\",le=\"0.5\"}"), 1);
    CHECK_INT(jj_metrics_get("rt_bucket{route=\"/x\",m=\"GET\",le=\"2.5\"}"), 2);
    CHECK_INT(jj_metrics_get("rt_sum{route=\"/x\",m=\"GET\"}"), 1500);
    CHECK_INT(jj_metrics_get("rt_count{route=\"/x\",m=\"GET\"}"), 2);
    CHECK_INT(jj_metrics_get("rt_count"), 0);

    /* bad observations and kinds */
    CHECK_INT(jj_metrics_observe("lat", -1), -1);
    CHECK_INT(jj_metrics_observe("lat", NAN), -1);
    CHECK_INT(jj_metrics_observe("lat", INFINITY), -1);
    CHECK_INT(jj_metrics_add("lat", 1), -1);
    CHECK_INT(jj_metrics_get("lat_count"), 8);
    /* a counter may be named like a histogram entry: the exact name wins */
    CHECK_INT(jj_metrics_add("jobs_count", 4), 0);
    CHECK_INT(jj_metrics_get("jobs_count"), 4);
}

static void test_foreach(void) {
    scan();
    /* hits big nnn..n l1 l2 inflight=gauge, lat + rt histograms, jobs_count */
    CHECK_INT(S.counters, 6);
    CHECK_INT(S.gauges, 1);
    CHECK_INT(S.buckets, 2 * JJ_METRICS_NBUCKETS);
    CHECK_INT(S.sums, 2);
    CHECK_INT(S.counts, 2);
    CHECK_INT(S.seen_labelled, 1);
    CHECK_INT(S.dup, 0);
    int found = 0;
    for (int i = 0; i < S.n; i++) {
        found += !strcmp(S.names[i], "rt_bucket{route=\"/x\",m=\"GET\",le=\"+Inf\"}");
        found += !strcmp(S.names[i], "rt_sum{route=\"/x\",m=\"GET\"}");
        found += !strcmp(S.names[i], "lat_bucket{le=\"0.5\"}");
        found += !strcmp(S.names[i], "lat_count");
    }
    CHECK_INT(found, 4);
    /* the buckets of a histogram come in order, then _sum, then _count */
    for (int i = 0; i < S.n; i++) {
        if (strcmp(S.names[i], "lat_bucket{le=\"0.5\"}") != 0) continue;
        CHECK(i + JJ_METRICS_NBUCKETS + 1 < S.n);
        if (i + JJ_METRICS_NBUCKETS + 1 < S.n) {
            CHECK_STR(S.names[i + JJ_METRICS_NBUCKETS - 1], "lat_bucket{le=\"+Inf\"}");
            CHECK_STR(S.names[i + JJ_METRICS_NBUCKETS], "lat_sum");
            CHECK_STR(S.names[i + JJ_METRICS_NBUCKETS + 1], "lat_count");
        }
    }
}

/* Every child updates the same names and names of its own, and all of
 * them race to insert the same RACE_NAMES fresh names. */
static void child(int id) {
    char own[64], race[64];
    snprintf(own, sizeof own, "child_ops{child=\"%d\"}", id);
    for (int i = 0; i < PER_CHILD; i++) {
        if (jj_metrics_add("shared", 1) != 0) _exit(10);
        if (jj_metrics_add(own, 1) != 0) _exit(11);
        if (i % 10 == 0 && jj_metrics_observe("child_lat", (double)(i % 7)) != 0) _exit(12);
        if (i < RACE_NAMES * 4) {
            snprintf(race, sizeof race, "race_%d", i / 4);
            if (jj_metrics_add(race, 1) != 0) _exit(13);
        }
    }
    int idx = jj_metrics_lookup("shared_fast", 11, JJ_METRIC_COUNTER);
    for (int i = 0; i < PER_CHILD; i++)
        if (jj_metrics_add_at(idx, 2) != 0) _exit(14);
    jj_metrics_set("last_child", id);
    _exit(0);
}

static void test_forked_children(void) {
    pid_t pids[NCHILD];
    for (int c = 0; c < NCHILD; c++) {
        fflush(NULL);
        pids[c] = fork();
        if (pids[c] == 0) child(c);
        CHECK(pids[c] > 0);
    }
    for (int c = 0; c < NCHILD; c++) {
        int st = -1;
        CHECK_INT(waitpid(pids[c], &st, 0), pids[c]);
        CHECK(WIFEXITED(st));
        CHECK_INT(WEXITSTATUS(st), 0);
    }
    CHECK_INT(jj_metrics_get("shared"), (int64_t)NCHILD * PER_CHILD);
    CHECK_INT(jj_metrics_get("shared_fast"), (int64_t)NCHILD * PER_CHILD * 2);
    char name[64];
    for (int c = 0; c < NCHILD; c++) {
        snprintf(name, sizeof name, "child_ops{child=\"%d\"}", c);
        CHECK_INT(jj_metrics_get(name), PER_CHILD);
    }
    int bad = 0;
    for (int i = 0; i < RACE_NAMES; i++) {
        snprintf(name, sizeof name, "race_%d", i);
        bad += jj_metrics_get(name) != NCHILD * 4;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(jj_metrics_get("child_lat_count"), NCHILD * PER_CHILD / 10);
    /* i % 7 over i = 0, 10, 20, ...: sum of (i % 7) ms, in us */
    int64_t sum = 0;
    for (int i = 0; i < PER_CHILD; i += 10) sum += (i % 7) * 1000;
    CHECK_INT(jj_metrics_get("child_lat_sum"), sum * NCHILD);
    int64_t last = jj_metrics_get("last_child");
    CHECK(last >= 0 && last < NCHILD);
    scan();
    CHECK_INT(S.seen_shared, 1);
    CHECK_INT(S.dup, 0);   /* racing inserts never made two slots for one name */
    CHECK_INT(jj_metrics_overflow(), 0);
}

static void test_overflow(void) {
    jj_metrics_reset_for_tests();
    CHECK_INT(jj_metrics_init(8), 0);
    CHECK_INT(jj_metrics_capacity(), 8);
    char name[32];
    for (int i = 0; i < 8; i++) {
        snprintf(name, sizeof name, "m%d", i);
        CHECK_INT(jj_metrics_add(name, i + 1), 0);
    }
    CHECK_INT(jj_metrics_overflow(), 0);
    CHECK_INT(jj_metrics_add("one_too_many", 1), 1);
    CHECK_INT(jj_metrics_set("gauge_too", 1), 1);
    CHECK_INT(jj_metrics_observe("hist_too", 1), 1);
    CHECK_INT(jj_metrics_lookup("x", 1, JJ_METRIC_COUNTER), JJ_METRICS_EFULL);
    CHECK_INT(jj_metrics_overflow(), 3);
    CHECK_INT(jj_metrics_get("one_too_many"), 0);
    for (int i = 0; i < 8; i++) {   /* existing names still count */
        snprintf(name, sizeof name, "m%d", i);
        CHECK_INT(jj_metrics_add(name, 1), 0);
        CHECK_INT(jj_metrics_get(name), i + 2);
    }
    scan();
    CHECK_INT(S.n, 8);
    CHECK_INT(S.counters, 8);

    /* the histogram area has its own limit (here 4 histograms) */
    jj_metrics_reset_for_tests();
    CHECK_INT(jj_metrics_init(64), 0);
    int dropped = 0;
    for (int i = 0; i < 6; i++) {
        snprintf(name, sizeof name, "h%d", i);
        int rc = jj_metrics_observe(name, 1);
        CHECK(rc == 0 || rc == 1);
        dropped += rc == 1;
        rc = jj_metrics_observe(name, 2);
        dropped += rc == 1;
    }
    CHECK_INT(dropped, 4);
    CHECK_INT(jj_metrics_overflow(), 4);
    scan();
    CHECK_INT(S.counts, 4);
    CHECK_INT(jj_metrics_get("h0_count"), 2);
    CHECK_INT(jj_metrics_get("h5_count"), 0);
    jj_metrics_reset_for_tests();
}

/* The longest key with labels still has every flattened name. */
static void test_long_labelled_histogram(void) {
    jj_metrics_reset_for_tests();
    char base[JJ_METRICS_NAME_MAX + 1], want[JJ_METRICS_DERIVED_MAX + 1];
    const char *head = "http_duration{route=\"";
    size_t hl = strlen(head), fill = JJ_METRICS_NAME_MAX - hl - 2;
    memcpy(base, head, hl);
    memset(base + hl, 'r', fill);
    memcpy(base + hl + fill, "\"}", 3);
    CHECK_INT((int)strlen(base), JJ_METRICS_NAME_MAX);
    CHECK_INT(jj_metrics_observe(base, 3), 0);
    CHECK_INT(jj_metrics_observe(base, 7000), 0);
    snprintf(want, sizeof want, "http_duration_bucket{route=\"%.*s\",le=\"+Inf\"}", (int)fill, base + hl);
    CHECK_INT(jj_metrics_get(want), 2);
    snprintf(want, sizeof want, "http_duration_bucket{route=\"%.*s\",le=\"5\"}", (int)fill, base + hl);
    CHECK_INT(jj_metrics_get(want), 1);
    snprintf(want, sizeof want, "http_duration_sum{route=\"%.*s\"}", (int)fill, base + hl);
    CHECK_INT(jj_metrics_get(want), 7003000);
    snprintf(want, sizeof want, "http_duration_count{route=\"%.*s\"}", (int)fill, base + hl);
    CHECK_INT(jj_metrics_get(want), 2);
    scan();
    CHECK_INT(S.buckets, JJ_METRICS_NBUCKETS);
    CHECK_INT(S.dup, 0);
    jj_metrics_reset_for_tests();
}

typedef struct {
    int n, counters, gauges, hists;
    int64_t c_value, g_value, h_count, h_sum, h_b0, h_b3, h_inf;
    int bad;
} slots_seen;

static void collect_slot(const jj_metrics_slot *s, void *ud) {
    slots_seen *o = ud;
    o->n++;
    if (strlen(s->name) != s->len) o->bad++;
    if (s->kind == JJ_METRIC_COUNTER) {
        o->counters++;
        if (!strcmp(s->name, "c{a=\"1\"}")) o->c_value = s->value;
        if (s->buckets) o->bad++;
    } else if (s->kind == JJ_METRIC_GAUGE) {
        o->gauges++;
        o->g_value = s->value;
        if (s->buckets) o->bad++;
    } else if (s->kind == JJ_METRIC_HISTOGRAM) {
        o->hists++;
        if (!s->buckets || strcmp(s->name, "h{route=\"/x\"}") != 0) { o->bad++; return; }
        o->h_count = s->value;
        o->h_sum = s->sum_us;
        o->h_b0 = s->buckets[0];
        o->h_b3 = s->buckets[3];
        o->h_inf = s->buckets[JJ_METRICS_NBUCKETS - 1];
        for (int b = 1; b < JJ_METRICS_NBUCKETS; b++)
            if (s->buckets[b] < s->buckets[b - 1]) o->bad++;   /* cumulative */
    } else {
        o->bad++;
    }
}

static void test_foreach_slot(void) {
    jj_metrics_reset_for_tests();
    CHECK_INT(jj_metrics_add("c{a=\"1\"}", 5), 0);
    CHECK_INT(jj_metrics_set("g", -4), 0);
    const double obs[] = {0.2, 0.5, 4, 4.5, 9000};
    for (size_t i = 0; i < sizeof obs / sizeof obs[0]; i++) CHECK_INT(jj_metrics_observe("h{route=\"/x\"}", obs[i]), 0);
    slots_seen o = {0};
    jj_metrics_foreach_slot(collect_slot, &o);
    CHECK_INT(o.bad, 0);
    CHECK_INT(o.n, 3);
    CHECK_INT(o.counters, 1);
    CHECK_INT(o.gauges, 1);
    CHECK_INT(o.hists, 1);
    CHECK_INT(o.c_value, 5);
    CHECK_INT(o.g_value, -4);
    CHECK_INT(o.h_count, 5);
    CHECK_INT(o.h_inf, 5);
    CHECK_INT(o.h_b0, 2);   /* <= 0.5 ms */
    CHECK_INT(o.h_b3, 4);   /* <= 5 ms */
    CHECK_INT(o.h_sum, 9009200);
    const double *b = jj_metrics_bounds_ms();
    CHECK(b[0] == 0.5 && b[JJ_METRICS_NBUCKETS - 2] == 5000);
    jj_metrics_reset_for_tests();
}

static void test_cached_refs(void) {
    jj_metrics_reset_for_tests();
    static jj_metric c, g, h, bad, wrong;
    CHECK_INT(jj_metric_add(&c, "ref_c", 2), 0);
    CHECK_INT(jj_metric_add(&c, "ref_c", 3), 0);
    CHECK_INT(jj_metrics_get("ref_c"), 5);
    unsigned ep = jj_metrics_epoch();
    CHECK(ep != 0);
    CHECK_INT(c.epoch, ep);
    CHECK_INT(jj_metric_set(&g, "ref_g", 9), 0);
    CHECK_INT(jj_metrics_get("ref_g"), 9);
    CHECK_INT(jj_metric_observe(&h, "ref_h", 1.5), 0);
    CHECK_INT(jj_metrics_get("ref_h_count"), 1);
    CHECK_INT(jj_metric_add(&bad, "", 1), -1);
    CHECK_INT(jj_metric_add(&bad, "", 1), -1);
    CHECK_INT(jj_metric_set(&wrong, "ref_c", 1), -1);   /* a counter already */
    CHECK_INT(jj_metrics_get("ref_c"), 5);
    /* a new region: the cached index is looked up again, not reused */
    jj_metrics_reset_for_tests();
    CHECK_INT(jj_metrics_add("other_first", 1), 0);
    CHECK(jj_metrics_epoch() != ep);
    CHECK_INT(jj_metric_add(&c, "ref_c", 1), 0);
    CHECK_INT(jj_metrics_get("ref_c"), 1);
    CHECK_INT(jj_metrics_get("other_first"), 1);
    /* a full table drops the update, counts it, and tries again later */
    jj_metrics_reset_for_tests();
    CHECK_INT(jj_metrics_init(4), 0);
    static jj_metric late;
    for (int i = 0; i < 4; i++) {
        char n[16];
        snprintf(n, sizeof n, "fill%d", i);
        CHECK_INT(jj_metrics_add(n, 1), 0);
    }
    CHECK_INT(jj_metric_add(&late, "late", 1), 1);
    CHECK_INT(jj_metrics_overflow(), 1);
    CHECK_INT(jj_metric_add(&late, "late", 1), 1);
    CHECK_INT(jj_metrics_overflow(), 2);
    jj_metrics_reset_for_tests();
}

int main(void) {
    test_lazy_private_region();
    test_long_labelled_histogram();
    test_foreach_slot();
    test_cached_refs();
    test_counters_and_names();
    test_gauges();
    test_histograms();
    test_foreach();
    test_forked_children();
    test_overflow();
    return jj_test_done();
}
