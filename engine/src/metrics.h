/* metrics.h: counters, gauges and latency histograms summed across every
 * worker process.
 *
 * The master maps one shared anonymous region (jj_metrics_init) before it
 * forks, so every worker updates the same table and any worker can read the
 * exact totals. Without a master (jollyjet spec, check, an embedding host,
 * unit tests) the first use maps a private region of the default size.
 *
 * The table is a fixed set of slots with lock-free insertion (open
 * addressing on a 64-bit hash of the name; a slot goes EMPTY -> CLAIMING ->
 * READY and never back). A name is the whole key, labels included, e.g.
 * `cache_hits{ns="product",level="L1"}`, at most JJ_METRICS_NAME_MAX bytes,
 * no NUL byte. Updates never block and never allocate; when the table (or
 * the histogram area) is full the update is dropped and counted in
 * jj_metrics_overflow().
 *
 * Kinds of a slot, fixed by its first use: a counter (jj_metrics_add), a
 * gauge (jj_metrics_set, last writer wins) or a histogram
 * (jj_metrics_observe, buckets in ms: JJ_METRICS_BUCKETS_MS, +Inf). Using a
 * name with another kind than its first is an error (-1).
 *
 * Histograms are one slot plus one record of bucket counts; readers see them
 * flattened Prometheus-style. For the histogram `lat{route="/x"}`:
 *   lat_bucket{route="/x",le="0.5"} ... lat_bucket{route="/x",le="+Inf"}
 *       cumulative counts (JJ_METRIC_HIST_BUCKET)
 *   lat_sum{route="/x"}    sum of observations in MICROseconds (JJ_METRIC_HIST_SUM)
 *   lat_count{route="/x"}  number of observations (JJ_METRIC_HIST_COUNT)
 * and without labels: lat_bucket{le="5"}, lat_sum, lat_count. Derived names
 * can be longer than JJ_METRICS_NAME_MAX (up to JJ_METRICS_DERIVED_MAX).
 */
#ifndef JJ_METRICS_H
#define JJ_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define JJ_METRICS_DEFAULT_SLOTS 4096
#define JJ_METRICS_NAME_MAX 127       /* bytes of a key (slot name) */
#define JJ_METRICS_DERIVED_MAX 159    /* bytes of a flattened histogram name */
#define JJ_METRICS_NBUCKETS 14        /* 13 finite bounds + +Inf */

/* Bucket upper bounds in milliseconds (the last, +Inf, is implicit). */
#define JJ_METRICS_BUCKETS_MS {0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000}

enum jj_metric_kind {
    JJ_METRIC_NONE = 0,         /* absent */
    JJ_METRIC_COUNTER = 1,
    JJ_METRIC_GAUGE = 2,
    JJ_METRIC_HISTOGRAM = 3,    /* a slot's kind; never reported by foreach */
    JJ_METRIC_HIST_BUCKET = 4,  /* flattened histogram entries */
    JJ_METRIC_HIST_SUM = 5,
    JJ_METRIC_HIST_COUNT = 6,
};

/* Return codes of the index-level functions. */
#define JJ_METRICS_EINVAL (-1)  /* bad name, wrong kind, bad value */
#define JJ_METRICS_EFULL (-2)   /* no room: the caller drops the update */

/* Maps the shared region with `slots` slots (0: JJ_METRICS_DEFAULT_SLOTS).
 * Call before fork. Idempotent: once a region exists (shared or lazily
 * created) it returns 0 and keeps it. -1 if mmap fails. */
int jj_metrics_init(size_t slots);

/* Name-based updates: 0 on success, 1 if dropped because the table is full
 * (overflow counted), -1 on a bad name (NULL, empty, longer than
 * JJ_METRICS_NAME_MAX) or a kind mismatch. observe also rejects a negative
 * or non-finite value. */
int jj_metrics_add(const char *name, int64_t n);      /* counter += n (relaxed atomic add) */
int jj_metrics_set(const char *name, int64_t v);      /* gauge = v */
int jj_metrics_observe(const char *name, double value_ms);

/* Value of a name, 0 if absent: a counter's total, a gauge's value, a
 * histogram's count for its base name, and the flattened histogram names
 * above (a _sum is in microseconds). */
int64_t jj_metrics_get(const char *name);
/* Same for a name of len bytes; returns its kind (JJ_METRIC_NONE if absent)
 * and stores the value in *value. */
int jj_metrics_get_ex(const char *name, size_t len, int64_t *value);

/* Calls cb for every READY slot, in table order; a histogram is reported as
 * its JJ_METRICS_NBUCKETS cumulative buckets, then _sum (us), then _count.
 * name is only valid during the call. cb must not call back into
 * jj_metrics_init/reset. */
typedef void jj_metrics_each(const char *name, int kind, int64_t value, void *ud);
void jj_metrics_foreach(jj_metrics_each *cb, void *ud);

/* Calls cb for every READY slot, in table order, unflattened: a counter
 * or gauge with its value, a histogram with its JJ_METRICS_NBUCKETS
 * cumulative bucket counts (the last, +Inf, equals value, its count) and
 * its sum. For exporters that group names into families themselves. cb
 * must not call back into jj_metrics_init/reset. */
typedef struct jj_metrics_slot {
    const char *name;        /* valid only during the call */
    size_t len;
    int kind;                /* COUNTER, GAUGE or HISTOGRAM */
    int64_t value;           /* counter/gauge value; histogram: its count */
    int64_t sum_us;          /* histogram: sum of the observations in microseconds */
    const int64_t *buckets;  /* histogram: NBUCKETS cumulative counts; else NULL */
} jj_metrics_slot;
typedef void jj_metrics_slot_each(const jj_metrics_slot *s, void *ud);
void jj_metrics_foreach_slot(jj_metrics_slot_each *cb, void *ud);
/* Bucket upper bounds in ms, as JJ_METRICS_BUCKETS_MS (NBUCKETS - 1 of them). */
const double *jj_metrics_bounds_ms(void);

/* Updates dropped because the table or the histogram area was full. */
uint64_t jj_metrics_overflow(void);
/* Slot capacity of the current region (creating it lazily if needed). */
size_t jj_metrics_capacity(void);

/* The hot path for bindings that cache name -> index: jj_metrics_lookup
 * finds or creates the slot of `kind` for a name of len bytes and returns
 * its index (stable for the life of the region), JJ_METRICS_EINVAL (bad
 * name, or the name exists with another kind) or JJ_METRICS_EFULL. The _at
 * functions return 0, or JJ_METRICS_EINVAL for an index that is not a slot
 * of their kind (or a bad value). jj_metrics_drop counts one dropped
 * update (for a caller that got JJ_METRICS_EFULL). */
int jj_metrics_lookup(const char *name, size_t len, int kind);
int jj_metrics_add_at(int idx, int64_t n);
int jj_metrics_set_at(int idx, int64_t v);
int jj_metrics_observe_at(int idx, double value_ms);
void jj_metrics_drop(void);

/* A fixed name's slot, looked up on first use and cached by the caller
 * (static or in a long-lived struct; zero-initialised = not looked up):
 *
 *     static jj_metric m_hits;
 *     jj_metric_add(&m_hits, "cache_hits{ns=\"x\"}", 1);
 *
 * After the first call an update is one relaxed atomic operation. A cache
 * made for an earlier region (jj_metrics_reset_for_tests) is looked up
 * again. A name that is invalid or of another kind is never counted; a full
 * table drops the update (jj_metrics_drop) and tries again next time. */
typedef struct jj_metric {
    int idx;
    unsigned epoch;   /* jj_metrics_epoch() the index belongs to; 0: none */
} jj_metric;
int jj_metric_add(jj_metric *m, const char *name, int64_t n);
int jj_metric_set(jj_metric *m, const char *name, int64_t v);
int jj_metric_observe(jj_metric *m, const char *name, double value_ms);
/* Identifies the current region (changes when a new one is mapped); never 0. */
unsigned jj_metrics_epoch(void);

/* Unit tests only: unmaps the region so that the next jj_metrics_init (or
 * use) starts from an empty table. Any cached index becomes invalid. */
void jj_metrics_reset_for_tests(void);

#endif
