/* ratelimit.c: GCRA arithmetic and the per-process local limiter (see
 * ratelimit.h). */
#include "ratelimit.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX_KEYS 100000
#define MIN_BUCKETS 64

/* Whole units of T in x, tolerating the rounding of sums of T. */
static long long units(double x, double T) {
    double u = floor(x / T + 1e-9);
    return u > 0 ? (long long)u : 0;
}

double jj_rl_gcra(const jj_rl_rule *r, double now, double tat, long long cost, int consume,
                  jj_rl_result *out) {
    double T = r->period / (double)r->limit;
    double tau = T * (double)r->burst;
    double base = tat > now ? tat : now;
    double new_tat = base + (double)cost * T;
    double allow_at = new_tat - tau;
    out->limit = r->limit;
    if (allow_at - now > T * 1e-9) {
        out->allowed = 0;
        out->retry_after = allow_at - now;
        out->reset = base - now;
        out->remaining = units(tau - (base - now), T);
        return tat;
    }
    double after = consume ? new_tat : base;
    out->allowed = 1;
    out->retry_after = 0;
    out->reset = after - now;
    out->remaining = units(tau - (after - now), T);
    return consume ? new_tat : tat;
}

/* ---------------------------------------------------------------- replays */

long long jj_rl_gcra_admit(long long T_us, long long burst, long long cost, int consume,
                           long long rel_us, long long m) {
    long long tau = T_us * burst, c = cost * T_us;
    if (!consume || c == 0) return rel_us + c - tau <= 0 ? m : 0;
    long long j = tau - rel_us < 0 ? 0 : (tau - rel_us) / c;
    return j > m ? m : j;
}

void jj_rl_gcra_replay(long long T_us, long long burst, long long cost, int consume,
                       long long admitted, long long rel_us, long long i, jj_rl_result *out) {
    long long tau = T_us * burst, c = cost * T_us;
    out->limit = 0;   /* the caller knows the rule's limit */
    if (i < admitted) {
        long long before = consume ? rel_us + i * c : rel_us;
        long long after = consume ? before + c : before;
        out->allowed = 1;
        out->remaining = tau - after > 0 ? (tau - after) / T_us : 0;
        out->reset = (double)after / 1e6;
        out->retry_after = 0;
        return;
    }
    long long tat = consume ? rel_us + admitted * c : rel_us;
    out->allowed = 0;
    out->remaining = tau - tat > 0 ? (tau - tat) / T_us : 0;
    out->reset = (double)tat / 1e6;
    out->retry_after = (double)(tat + c - tau) / 1e6;
}

void jj_rl_sliding_replay(long long window_us, long long limit, long long cost, int consume,
                          long long admitted, long long used_before, long long reset_us,
                          long long retry_us, long long i, jj_rl_result *out) {
    int adds = consume && cost > 0;
    out->limit = limit;
    if (i < admitted) {
        long long used = adds ? used_before + (i + 1) * cost : used_before;
        out->allowed = 1;
        out->remaining = limit - used > 0 ? limit - used : 0;
        out->reset = (double)(adds ? window_us : reset_us) / 1e6;
        out->retry_after = 0;
        return;
    }
    long long used = adds ? used_before + admitted * cost : used_before;
    out->allowed = 0;
    out->remaining = limit - used > 0 ? limit - used : 0;
    out->reset = (double)reset_us / 1e6;
    out->retry_after = (double)retry_us / 1e6;
}

/* ------------------------------------------------------------ local table */

typedef struct entry {
    struct entry *next;
    uint64_t hash;
    double tat;
    size_t klen;
    char key[];
} entry;

struct jj_rl_local {
    entry **buckets;
    size_t nbuckets;     /* power of two */
    size_t count;
    size_t max_keys;
    size_t cursor;       /* where forced eviction continues */
};

static uint64_t hash_key(const char *k, size_t n) {
    uint64_t h = 14695981039346656037ULL;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)k[i];
        h *= 1099511628211ULL;
    }
    return h;
}

jj_rl_local *jj_rl_local_new(size_t max_keys) {
    if (max_keys < 16) max_keys = 16;
    jj_rl_local *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->nbuckets = MIN_BUCKETS;
    l->buckets = calloc(l->nbuckets, sizeof *l->buckets);
    if (!l->buckets) { free(l); return NULL; }
    l->max_keys = max_keys;
    return l;
}

void jj_rl_local_free(jj_rl_local *l) {
    if (!l) return;
    for (size_t i = 0; i < l->nbuckets; i++) {
        entry *e = l->buckets[i];
        while (e) { entry *n = e->next; free(e); e = n; }
    }
    free(l->buckets);
    free(l);
}

size_t jj_rl_local_count(const jj_rl_local *l) { return l->count; }

static entry **find(jj_rl_local *l, const char *key, size_t klen, uint64_t h) {
    entry **pp = &l->buckets[h & (l->nbuckets - 1)];
    for (; *pp; pp = &(*pp)->next)
        if ((*pp)->hash == h && (*pp)->klen == klen && memcmp((*pp)->key, key, klen) == 0) return pp;
    return pp;
}

/* Doubles the bucket array (best effort: stays as is when out of memory). */
static void grow(jj_rl_local *l) {
    size_t n = l->nbuckets * 2;
    entry **b = calloc(n, sizeof *b);
    if (!b) return;
    for (size_t i = 0; i < l->nbuckets; i++) {
        entry *e = l->buckets[i];
        while (e) {
            entry *next = e->next;
            entry **slot = &b[e->hash & (n - 1)];
            e->next = *slot;
            *slot = e;
            e = next;
        }
    }
    free(l->buckets);
    l->buckets = b;
    l->nbuckets = n;
}

/* Makes room for one more key: first every key whose bucket is full again,
 * then (if still above 7/8 of max_keys) keys in bucket order from a
 * rotating cursor, so the cost is amortised over many inserts. */
static void make_room(jj_rl_local *l, double now) {
    for (size_t i = 0; i < l->nbuckets; i++) {
        entry **pp = &l->buckets[i];
        while (*pp) {
            entry *e = *pp;
            if (e->tat <= now) { *pp = e->next; free(e); l->count--; }
            else pp = &e->next;
        }
    }
    size_t target = l->max_keys - l->max_keys / 8;
    if (target >= l->max_keys) target = l->max_keys - 1;
    while (l->count > target) {
        size_t i = l->cursor++ & (l->nbuckets - 1);
        entry *e = l->buckets[i];
        while (e && l->count > target) {
            entry *n = e->next;
            free(e);
            l->count--;
            e = n;
        }
        l->buckets[i] = e;
    }
}

int jj_rl_local_check(jj_rl_local *l, const char *key, size_t klen, double now,
                      const jj_rl_rule *r, long long cost, int consume, jj_rl_result *out) {
    uint64_t h = hash_key(key, klen);
    entry **pp = find(l, key, klen, h);
    entry *e = *pp;
    double tat = e ? e->tat : 0;
    double next = jj_rl_gcra(r, now, tat, cost, consume, out);
    if (e) {
        e->tat = next;
        return 0;
    }
    if (next <= now) return 0;   /* nothing to remember: a full bucket */
    if (l->count >= l->max_keys) make_room(l, now);
    if (l->count >= l->nbuckets && l->nbuckets < l->max_keys) grow(l);
    e = malloc(sizeof *e + (klen ? klen : 1));
    if (!e) return -1;
    e->hash = h;
    e->tat = next;
    e->klen = klen;
    memcpy(e->key, key, klen);
    entry **slot = &l->buckets[h & (l->nbuckets - 1)];
    e->next = *slot;
    *slot = e;
    l->count++;
    return 0;
}

int jj_rl_local_reset(jj_rl_local *l, const char *key, size_t klen) {
    entry **pp = find(l, key, klen, hash_key(key, klen));
    entry *e = *pp;
    if (!e) return 0;
    *pp = e->next;
    free(e);
    l->count--;
    return 1;
}

jj_rl_local *jj_rl_local_default(void) {
    static jj_rl_local *l;
    if (!l) l = jj_rl_local_new(DEFAULT_MAX_KEYS);
    return l;
}
