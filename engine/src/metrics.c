/* metrics.c: the shared metrics table (see metrics.h).
 *
 * Layout of the region (one mmap, 192-byte units, so no two slots share a
 * cache line, and no pointers: it is valid at the same or any address in
 * every process):
 *   [header][slot 0 .. nslots-1][histogram record 0 .. nhist-1]
 *
 * A slot's state word is 0 (EMPTY) or (hash & ~3) | CLAIMING / READY / DEAD.
 * Insertion: CAS EMPTY -> CLAIMING, write name/kind/value, CAS CLAIMING ->
 * READY (release). A prober that meets a CLAIMING slot with a different
 * hash tag moves on at once; with the same tag it waits for READY (the
 * claimer is a few stores away) but only for CLAIM_WAIT_S: a claimer that
 * died or stalled that long loses the slot (CAS CLAIMING -> DEAD), so nobody
 * ever blocks on it again, and a stalled claimer that finds its slot DEAD
 * retries from the start. Names are never removed, so a lookup may stop at
 * the first EMPTY slot, and there are never two READY slots for one name.
 *
 * A histogram slot's value is the index of its record (set before READY);
 * the record holds non-cumulative bucket counts and the sum in microseconds,
 * so an observation is two relaxed atomic adds. Readers make the buckets
 * cumulative and derive the count from them (so +Inf == count always). */
#include "metrics.h"
#include "log.h"

#include <math.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

_Static_assert(ATOMIC_LONG_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "64-bit atomics must be lock-free (address-free) to live in shared memory");

#define UNIT 192
#define MAX_SLOTS (1u << 24)
#define CLAIM_WAIT_S 0.1

enum { ST_EMPTY = 0, ST_CLAIMING = 1, ST_READY = 2, ST_DEAD = 3, ST_MASK = 3 };

typedef struct {
    _Atomic int64_t value;      /* counter, gauge; histogram: record index or -1 */
    _Atomic uint64_t state;
    uint32_t kind;              /* these three are written before READY */
    uint32_t len;
    char name[JJ_METRICS_NAME_MAX + 1];
} mslot;

typedef struct {
    _Atomic int64_t bucket[JJ_METRICS_NBUCKETS];   /* non-cumulative */
    _Atomic int64_t sum_us;
} mhist;

typedef struct {
    uint64_t magic;
    size_t map_size;
    uint32_t nslots, nhist;
    _Atomic uint32_t hist_next;
    _Atomic uint64_t overflow;
} mheader;

_Static_assert(sizeof(mslot) <= UNIT && sizeof(mhist) <= UNIT && sizeof(mheader) <= UNIT, "unit size");

typedef struct region region;   /* opaque: the start of the mapping */

static _Atomic(region *) g_region;
static atomic_int g_warned;
static atomic_uint g_epoch;   /* bumped whenever a region is installed */

static const double bounds_ms[] = JJ_METRICS_BUCKETS_MS;
static const char *const le_names[JJ_METRICS_NBUCKETS] = {
    "0.5", "1", "2.5", "5", "10", "25", "50", "100", "250", "500", "1000", "2500", "5000", "+Inf"};
_Static_assert(sizeof bounds_ms / sizeof bounds_ms[0] == JJ_METRICS_NBUCKETS - 1, "bucket bounds");

static mheader *hdr(region *r) { return (mheader *)(void *)r; }
static mslot *slot_at(region *r, size_t i) { return (mslot *)(void *)((char *)r + UNIT * (1 + i)); }
static mhist *hist_at(region *r, size_t i) {
    return (mhist *)(void *)((char *)r + UNIT * (1 + (size_t)hdr(r)->nslots + i));
}

int jj_metrics_init(size_t slots) {
    if (atomic_load_explicit(&g_region, memory_order_acquire)) return 0;
    if (slots == 0) slots = JJ_METRICS_DEFAULT_SLOTS;
    if (slots > MAX_SLOTS) slots = MAX_SLOTS;
    size_t nhist = slots / 16 < 4 ? 4 : slots / 16;
    size_t size = UNIT * (1 + slots + nhist);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return -1;
    region *r = p;   /* anonymous mappings are zero-filled: every slot EMPTY */
    mheader *h = hdr(r);
    h->magic = 0x6a6a6d6574726963ull;   /* "jjmetric" */
    h->map_size = size;
    h->nslots = (uint32_t)slots;
    h->nhist = (uint32_t)nhist;
    region *expected = NULL;
    if (!atomic_compare_exchange_strong_explicit(&g_region, &expected, r, memory_order_acq_rel,
                                                 memory_order_acquire))
        munmap(p, size);   /* another thread won the lazy creation */
    else
        atomic_fetch_add_explicit(&g_epoch, 1, memory_order_release);
    return 0;
}

static region *reg(void) {
    region *r = atomic_load_explicit(&g_region, memory_order_acquire);
    if (r) return r;
    jj_metrics_init(0);
    return atomic_load_explicit(&g_region, memory_order_acquire);
}

void jj_metrics_reset_for_tests(void) {
    region *r = atomic_exchange(&g_region, NULL);
    if (r) munmap(r, hdr(r)->map_size);
}

unsigned jj_metrics_epoch(void) {
    reg();   /* the region this epoch names exists */
    return atomic_load_explicit(&g_epoch, memory_order_acquire);
}


size_t jj_metrics_capacity(void) {
    region *r = reg();
    return r ? hdr(r)->nslots : 0;
}

uint64_t jj_metrics_overflow(void) {
    region *r = reg();
    return r ? atomic_load_explicit(&hdr(r)->overflow, memory_order_relaxed) : 0;
}

void jj_metrics_drop(void) {
    region *r = reg();
    if (r) atomic_fetch_add_explicit(&hdr(r)->overflow, 1, memory_order_relaxed);
    if (!atomic_exchange_explicit(&g_warned, 1, memory_order_relaxed))
        JJ_WARN("metrics: table full (%zu slots): updates of new names are dropped", r ? (size_t)hdr(r)->nslots : 0);
}

/* 64-bit hash, 8 bytes at a time; the same in every process of the machine. */
static uint64_t hash_name(const char *s, size_t n) {
    uint64_t h = 0x9e3779b97f4a7c15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Waits (bounded) for a CLAIMING slot to settle; returns its state, which is
 * READY, or DEAD (possibly marked by us after CLAIM_WAIT_S). */
static uint64_t wait_settled(mslot *s, uint64_t st) {
    double deadline = 0;
    for (unsigned spins = 0;; spins++) {
        if ((st & ST_MASK) != ST_CLAIMING) return st;
        if (spins < 256) {
            cpu_relax();
        } else if (deadline == 0) {
            deadline = mono_s() + CLAIM_WAIT_S;
        } else if (mono_s() > deadline) {
            uint64_t dead = (st & ~(uint64_t)ST_MASK) | ST_DEAD;
            if (atomic_compare_exchange_strong_explicit(&s->state, &st, dead, memory_order_acq_rel,
                                                        memory_order_acquire))
                return dead;
            continue;   /* st reloaded: it settled meanwhile */
        } else {
            sched_yield();
        }
        st = atomic_load_explicit(&s->state, memory_order_acquire);
    }
}

/* Finds the slot of name (or creates it with kind if create): its index,
 * -1 if absent (not create), JJ_METRICS_EINVAL on a kind mismatch,
 * JJ_METRICS_EFULL when there is no room. */
static int find_slot(region *r, const char *name, size_t len, int create, int kind) {
    uint64_t h = hash_name(name, len);
    uint64_t tag = h & ~(uint64_t)ST_MASK;
    size_t n = hdr(r)->nslots;
retry:
    for (size_t probes = 0, i = h % n; probes < n; probes++, i = i + 1 == n ? 0 : i + 1) {
        mslot *s = slot_at(r, i);
        uint64_t st = atomic_load_explicit(&s->state, memory_order_acquire);
        if (st == ST_EMPTY) {
            if (!create) return -1;
            if (atomic_compare_exchange_strong_explicit(&s->state, &st, tag | ST_CLAIMING,
                                                        memory_order_acq_rel, memory_order_acquire)) {
                memcpy(s->name, name, len);
                s->name[len] = 0;
                s->len = (uint32_t)len;
                s->kind = (uint32_t)kind;
                int64_t v = 0;
                if (kind == JJ_METRIC_HISTOGRAM) {
                    uint32_t rec = atomic_fetch_add_explicit(&hdr(r)->hist_next, 1, memory_order_relaxed);
                    v = rec < hdr(r)->nhist ? (int64_t)rec : -1;
                }
                atomic_store_explicit(&s->value, v, memory_order_relaxed);
                uint64_t claimed = tag | ST_CLAIMING;
                if (atomic_compare_exchange_strong_explicit(&s->state, &claimed, tag | ST_READY,
                                                            memory_order_release, memory_order_relaxed))
                    return (int)i;
                goto retry;   /* we stalled and lost the slot: someone may have the name now */
            }
            /* lost the race for this slot: st now holds its state */
        }
        if ((st & ~(uint64_t)ST_MASK) != tag) continue;
        if ((st & ST_MASK) == ST_CLAIMING) st = wait_settled(s, st);
        if ((st & ST_MASK) != ST_READY) continue;
        if (s->len != len || memcmp(s->name, name, len) != 0) continue;
        if (create && (int)s->kind != kind) return JJ_METRICS_EINVAL;
        return (int)i;
    }
    return create ? JJ_METRICS_EFULL : -1;
}

static int valid_name(const char *name, size_t len) {
    return name && len > 0 && len <= JJ_METRICS_NAME_MAX && !memchr(name, 0, len);
}

int jj_metrics_lookup(const char *name, size_t len, int kind) {
    if (!valid_name(name, len) || kind < JJ_METRIC_COUNTER || kind > JJ_METRIC_HISTOGRAM)
        return JJ_METRICS_EINVAL;
    region *r = reg();
    if (!r) return JJ_METRICS_EFULL;
    int idx = find_slot(r, name, len, 1, kind);
    if (idx >= 0 && kind == JJ_METRIC_HISTOGRAM &&
        atomic_load_explicit(&slot_at(r, (size_t)idx)->value, memory_order_relaxed) < 0)
        return JJ_METRICS_EFULL;   /* a histogram without a record: no room left for one */
    return idx;
}

/* The slot at idx if it is a READY slot of kind, else NULL. */
static mslot *slot_of_kind(int idx, int kind) {
    region *r = atomic_load_explicit(&g_region, memory_order_acquire);
    if (!r || idx < 0 || (size_t)idx >= hdr(r)->nslots) return NULL;
    mslot *s = slot_at(r, (size_t)idx);
    if ((atomic_load_explicit(&s->state, memory_order_acquire) & ST_MASK) != ST_READY) return NULL;
    return (int)s->kind == kind ? s : NULL;
}

int jj_metrics_add_at(int idx, int64_t n) {
    mslot *s = slot_of_kind(idx, JJ_METRIC_COUNTER);
    if (!s) return JJ_METRICS_EINVAL;
    atomic_fetch_add_explicit(&s->value, n, memory_order_relaxed);
    return 0;
}

int jj_metrics_set_at(int idx, int64_t v) {
    mslot *s = slot_of_kind(idx, JJ_METRIC_GAUGE);
    if (!s) return JJ_METRICS_EINVAL;
    atomic_store_explicit(&s->value, v, memory_order_relaxed);
    return 0;
}

int jj_metrics_observe_at(int idx, double ms) {
    if (!(ms >= 0) || !isfinite(ms)) return JJ_METRICS_EINVAL;
    mslot *s = slot_of_kind(idx, JJ_METRIC_HISTOGRAM);
    if (!s) return JJ_METRICS_EINVAL;
    int64_t rec = atomic_load_explicit(&s->value, memory_order_relaxed);
    region *r = atomic_load_explicit(&g_region, memory_order_acquire);
    if (rec < 0 || rec >= hdr(r)->nhist) return JJ_METRICS_EINVAL;
    mhist *hi = hist_at(r, (size_t)rec);
    int b = 0;
    while (b < JJ_METRICS_NBUCKETS - 1 && ms > bounds_ms[b]) b++;
    atomic_fetch_add_explicit(&hi->bucket[b], 1, memory_order_relaxed);
    double us = (ms > 1e12 ? 1e12 : ms) * 1000.0;   /* 31 years: keeps the sum far from overflow */
    atomic_fetch_add_explicit(&hi->sum_us, (int64_t)llround(us), memory_order_relaxed);
    return 0;
}

/* Name-based updates: lookup + operation, table full -> dropped (1). */
static int by_name(const char *name, int kind, int64_t iv, double dv) {
    if (kind == JJ_METRIC_HISTOGRAM && (!(dv >= 0) || !isfinite(dv))) return -1;
    int idx = jj_metrics_lookup(name, name ? strnlen(name, JJ_METRICS_NAME_MAX + 1) : 0, kind);
    if (idx == JJ_METRICS_EFULL) {
        jj_metrics_drop();
        return 1;
    }
    if (idx < 0) return -1;
    int rc = kind == JJ_METRIC_COUNTER ? jj_metrics_add_at(idx, iv)
           : kind == JJ_METRIC_GAUGE   ? jj_metrics_set_at(idx, iv)
                                       : jj_metrics_observe_at(idx, dv);
    return rc < 0 ? -1 : 0;
}

/* The cached index of m for name/kind (looked up when m belongs to no or
 * an older region), or a negative code. */
static int ref_index(jj_metric *m, const char *name, int kind) {
    unsigned ep = atomic_load_explicit(&g_epoch, memory_order_acquire);
    if (m->epoch == ep && ep != 0) return m->idx;
    int idx = jj_metrics_lookup(name, name ? strnlen(name, JJ_METRICS_NAME_MAX + 1) : 0, kind);
    ep = atomic_load_explicit(&g_epoch, memory_order_acquire);   /* lookup may have mapped the region */
    if (idx == JJ_METRICS_EFULL) return idx;   /* not cached: there may be room later */
    m->idx = idx;    /* JJ_METRICS_EINVAL is cached too: it never changes */
    m->epoch = ep;
    return idx;
}

static int ref_done(int idx, int rc) {
    if (idx == JJ_METRICS_EFULL) {
        jj_metrics_drop();
        return 1;
    }
    return idx < 0 || rc < 0 ? -1 : 0;
}

int jj_metric_add(jj_metric *m, const char *name, int64_t n) {
    int idx = ref_index(m, name, JJ_METRIC_COUNTER);
    return ref_done(idx, idx >= 0 ? jj_metrics_add_at(idx, n) : 0);
}

int jj_metric_set(jj_metric *m, const char *name, int64_t v) {
    int idx = ref_index(m, name, JJ_METRIC_GAUGE);
    return ref_done(idx, idx >= 0 ? jj_metrics_set_at(idx, v) : 0);
}

int jj_metric_observe(jj_metric *m, const char *name, double ms) {
    int idx = ref_index(m, name, JJ_METRIC_HISTOGRAM);
    return ref_done(idx, idx >= 0 ? jj_metrics_observe_at(idx, ms) : 0);
}

int jj_metrics_add(const char *name, int64_t n) { return by_name(name, JJ_METRIC_COUNTER, n, 0); }
int jj_metrics_set(const char *name, int64_t v) { return by_name(name, JJ_METRIC_GAUGE, v, 0); }
int jj_metrics_observe(const char *name, double ms) { return by_name(name, JJ_METRIC_HISTOGRAM, 0, ms); }

/* ------------------------------------------------------------- readers */

/* The histogram record of a READY histogram slot, or NULL. */
static mhist *record_of(region *r, mslot *s) {
    int64_t rec = atomic_load_explicit(&s->value, memory_order_relaxed);
    return rec >= 0 && rec < hdr(r)->nhist ? hist_at(r, (size_t)rec) : NULL;
}

static int64_t cumulative(mhist *hi, int upto) {
    int64_t c = 0;
    for (int b = 0; b <= upto; b++) c += atomic_load_explicit(&hi->bucket[b], memory_order_relaxed);
    return c;
}

/* Flattened name of a histogram entry: base "m{labels}" or "m" -> m<suffix>
 * with the labels, plus le="<le>" last if le. out has
 * JJ_METRICS_DERIVED_MAX + 1 bytes (always enough for a valid base). */
static void derive(char *out, const char *base, size_t len, const char *suffix, const char *le) {
    const char *brace = memchr(base, '{', len);
    size_t mlen = len, llen = 0;
    const char *labels = "";
    if (brace && base[len - 1] == '}') {
        mlen = (size_t)(brace - base);
        labels = brace + 1;
        llen = len - mlen - 2;
    }
    char *p = out;
    memcpy(p, base, mlen);
    p += mlen;
    size_t sl = strlen(suffix);
    memcpy(p, suffix, sl);
    p += sl;
    if (llen || le) {
        *p++ = '{';
        memcpy(p, labels, llen);
        p += llen;
        if (le) {
            if (llen) *p++ = ',';
            size_t n = strlen(le);
            memcpy(p, "le=\"", 4);
            memcpy(p + 4, le, n);
            p += 4 + n;
            *p++ = '"';
        }
        *p++ = '}';
    }
    *p = 0;
}

static int ends_with(const char *s, size_t n, const char *suffix, size_t *stem) {
    size_t k = strlen(suffix);
    if (n <= k || memcmp(s + n - k, suffix, k) != 0) return 0;
    *stem = n - k;
    return 1;
}

/* A flattened histogram name back to its base and what it asks for:
 * returns kind HIST_COUNT / HIST_SUM / HIST_BUCKET (with *bucket) or NONE. */
static int parse_derived(const char *name, size_t len, char *base, size_t *blen, int *bucket) {
    const char *brace = memchr(name, '{', len);
    size_t mlen = brace ? (size_t)(brace - name) : len, stem;
    const char *labels = name + mlen;
    size_t llen = len - mlen;
    int kind;
    if (ends_with(name, mlen, "_count", &stem)) kind = JJ_METRIC_HIST_COUNT;
    else if (ends_with(name, mlen, "_sum", &stem)) kind = JJ_METRIC_HIST_SUM;
    else if (ends_with(name, mlen, "_bucket", &stem)) kind = JJ_METRIC_HIST_BUCKET;
    else return JJ_METRIC_NONE;
    size_t keep = llen, close = 0;   /* bytes of labels kept, and whether to add '}' */
    if (kind == JJ_METRIC_HIST_BUCKET) {
        /* labels: {le="X"} or {a="b",...,le="X"} */
        if (llen < 8 || labels[llen - 1] != '}' || labels[llen - 2] != '"') return JJ_METRIC_NONE;
        size_t q = llen - 3;   /* scan back to the opening quote of X */
        while (q > 0 && labels[q] != '"') q--;
        if (q < 4 || memcmp(labels + q - 3, "le=", 3) != 0) return JJ_METRIC_NONE;
        size_t xlen = llen - 2 - (q + 1);
        char sep = labels[q - 4];
        if (sep != '{' && sep != ',') return JJ_METRIC_NONE;
        *bucket = -1;
        for (int b = 0; b < JJ_METRICS_NBUCKETS; b++)
            if (strlen(le_names[b]) == xlen && memcmp(le_names[b], labels + q + 1, xlen) == 0) *bucket = b;
        if (*bucket < 0) return JJ_METRIC_NONE;
        keep = sep == '{' ? 0 : q - 4;   /* "{a="b",..." without ",le=..." */
        close = keep ? 1 : 0;
    }
    size_t n = stem + keep + close;
    if (stem == 0 || n > JJ_METRICS_NAME_MAX) return JJ_METRIC_NONE;
    memcpy(base, name, stem);
    memcpy(base + stem, labels, keep);
    if (close) base[stem + keep] = '}';
    base[n] = 0;
    *blen = n;
    return kind;
}

int jj_metrics_get_ex(const char *name, size_t len, int64_t *value) {
    *value = 0;
    region *r = reg();
    if (!r || !name || len == 0 || len > JJ_METRICS_DERIVED_MAX || memchr(name, 0, len)) return JJ_METRIC_NONE;
    if (len <= JJ_METRICS_NAME_MAX) {
        int idx = find_slot(r, name, len, 0, 0);
        if (idx >= 0) {
            mslot *s = slot_at(r, (size_t)idx);
            if (s->kind != JJ_METRIC_HISTOGRAM) {
                *value = atomic_load_explicit(&s->value, memory_order_relaxed);
                return (int)s->kind;
            }
            mhist *hi = record_of(r, s);
            *value = hi ? cumulative(hi, JJ_METRICS_NBUCKETS - 1) : 0;
            return JJ_METRIC_HISTOGRAM;
        }
    }
    char base[JJ_METRICS_NAME_MAX + 2];
    size_t blen;
    int bucket = 0;
    int kind = parse_derived(name, len, base, &blen, &bucket);
    if (kind == JJ_METRIC_NONE) return JJ_METRIC_NONE;
    int idx = find_slot(r, base, blen, 0, 0);
    if (idx < 0) return JJ_METRIC_NONE;
    mslot *s = slot_at(r, (size_t)idx);
    mhist *hi = s->kind == JJ_METRIC_HISTOGRAM ? record_of(r, s) : NULL;
    if (!hi) return JJ_METRIC_NONE;
    if (kind == JJ_METRIC_HIST_SUM) *value = atomic_load_explicit(&hi->sum_us, memory_order_relaxed);
    else *value = cumulative(hi, kind == JJ_METRIC_HIST_BUCKET ? bucket : JJ_METRICS_NBUCKETS - 1);
    return kind;
}

int64_t jj_metrics_get(const char *name) {
    int64_t v;
    jj_metrics_get_ex(name, name ? strnlen(name, JJ_METRICS_DERIVED_MAX + 1) : 0, &v);
    return v;
}

void jj_metrics_foreach(jj_metrics_each *cb, void *ud) {
    region *r = reg();
    if (!r) return;
    size_t n = hdr(r)->nslots;
    char buf[JJ_METRICS_DERIVED_MAX + 1];
    for (size_t i = 0; i < n; i++) {
        mslot *s = slot_at(r, i);
        if ((atomic_load_explicit(&s->state, memory_order_acquire) & ST_MASK) != ST_READY) continue;
        if (s->kind != JJ_METRIC_HISTOGRAM) {
            cb(s->name, (int)s->kind, atomic_load_explicit(&s->value, memory_order_relaxed), ud);
            continue;
        }
        mhist *hi = record_of(r, s);
        if (!hi) continue;
        int64_t c = 0;
        for (int b = 0; b < JJ_METRICS_NBUCKETS; b++) {
            c += atomic_load_explicit(&hi->bucket[b], memory_order_relaxed);
            derive(buf, s->name, s->len, "_bucket", le_names[b]);
            cb(buf, JJ_METRIC_HIST_BUCKET, c, ud);
        }
        derive(buf, s->name, s->len, "_sum", NULL);
        cb(buf, JJ_METRIC_HIST_SUM, atomic_load_explicit(&hi->sum_us, memory_order_relaxed), ud);
        derive(buf, s->name, s->len, "_count", NULL);
        cb(buf, JJ_METRIC_HIST_COUNT, c, ud);
    }
}

void jj_metrics_foreach_slot(jj_metrics_slot_each *cb, void *ud) {
    region *r = reg();
    if (!r) return;
    size_t n = hdr(r)->nslots;
    int64_t buckets[JJ_METRICS_NBUCKETS];
    for (size_t i = 0; i < n; i++) {
        mslot *s = slot_at(r, i);
        if ((atomic_load_explicit(&s->state, memory_order_acquire) & ST_MASK) != ST_READY) continue;
        jj_metrics_slot out = {s->name, s->len, (int)s->kind, 0, 0, NULL};
        if (s->kind != JJ_METRIC_HISTOGRAM) {
            out.value = atomic_load_explicit(&s->value, memory_order_relaxed);
        } else {
            mhist *hi = record_of(r, s);
            if (!hi) continue;
            int64_t c = 0;
            for (int b = 0; b < JJ_METRICS_NBUCKETS; b++) {
                c += atomic_load_explicit(&hi->bucket[b], memory_order_relaxed);
                buckets[b] = c;
            }
            out.value = c;
            out.sum_us = atomic_load_explicit(&hi->sum_us, memory_order_relaxed);
            out.buckets = buckets;
        }
        cb(&out, ud);
    }
}

const double *jj_metrics_bounds_ms(void) { return bounds_ms; }
