/* lru.c: named LRU caches with TTL (see lru.h).
 *
 * Each entry is one allocation: a header, then the key bytes, then the value
 * bytes. Entries sit in a chained hash table (power-of-two buckets, 64-bit
 * hash kept in the entry, grown by doubling at load factor 1) and on an
 * intrusive doubly linked recency list (head = most recently used, tail =
 * next to evict). A replacement that fits in the old allocation (and does
 * not waste more than half of it) reuses it, so steady-state refreshes of
 * a key do not touch the allocator either.
 */
#include "lru.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#define MIN_BUCKETS 16

typedef struct entry {
    struct entry *chain;       /* next in the same bucket */
    struct entry *prev, *next; /* recency list */
    uint64_t hash;
    double expires_at;
    int64_t flags, version;
    size_t klen, vlen, cap;    /* cap: bytes available in data[] */
    char data[];               /* key, then value */
} entry;

_Static_assert(sizeof(entry) + sizeof(entry *) + 16 <= JJ_LRU_ENTRY_OVERHEAD,
               "JJ_LRU_ENTRY_OVERHEAD undercounts the entry header");

struct jj_lru {
    char *name;
    size_t max_items, max_bytes;
    size_t items, bytes;
    entry *head, *tail;
    entry **buckets;
    size_t mask;               /* nbuckets - 1 */
    uint64_t seed;
    uint64_t seq;
    uint64_t hits, misses, evictions, expirations, sets, deletes, flushes;
};

/* ---- hashing: 64-bit multiply-fold mixing, 16 bytes per round -------------- */

__extension__ typedef unsigned __int128 u128;

#define K0 0x9e3779b97f4a7c15ULL
#define K1 0xd6e8feb86659fd93ULL
#define K2 0xa0761d6478bd642fULL

static inline uint64_t fold(uint64_t a, uint64_t b) {
    u128 r = (u128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

static inline uint64_t rd64(const unsigned char *p) {
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline uint64_t rd32(const unsigned char *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static uint64_t hash_bytes(const void *key, size_t len, uint64_t seed) {
    const unsigned char *p = key;
    uint64_t a, b, h = seed ^ K0;
    if (len <= 16) {
        if (len >= 4) {
            size_t q = (len >> 3) << 2;   /* 0 for 4..7 bytes, 4 for 8..16 */
            a = rd32(p) << 32 | rd32(p + q);
            b = rd32(p + len - 4) << 32 | rd32(p + len - 4 - q);
        } else if (len > 0) {
            a = (uint64_t)p[0] << 16 | (uint64_t)p[len >> 1] << 8 | p[len - 1];
            b = 0;
        } else {
            a = b = 0;
        }
    } else {
        size_t i = len;
        while (i > 16) {
            h = fold(rd64(p) ^ K1, rd64(p + 8) ^ h);
            p += 16;
            i -= 16;
        }
        a = rd64(p + i - 16);   /* the last 16 bytes, overlapping if needed */
        b = rd64(p + i - 8);
    }
    return fold(fold(a ^ K1, b ^ h) ^ (uint64_t)len, K2);
}

static uint64_t random_seed(const void *salt) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        s = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 30) ^ (uint64_t)(uintptr_t)salt;
    }
    return s;
}

/* ---- entries --------------------------------------------------------------- */

static inline size_t cost(const entry *e) {
    return e->klen + e->vlen + JJ_LRU_ENTRY_OVERHEAD;
}

static inline void list_unlink(jj_lru *c, entry *e) {
    if (e->prev) e->prev->next = e->next;
    else c->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else c->tail = e->prev;
}

static inline void list_push_head(jj_lru *c, entry *e) {
    e->prev = NULL;
    e->next = c->head;
    if (c->head) c->head->prev = e;
    else c->tail = e;
    c->head = e;
}

static inline entry **bucket_of(jj_lru *c, uint64_t h) {
    return &c->buckets[h & c->mask];
}

/* The slot that points at the entry for key (or at the NULL ending its
 * chain): lets callers unlink without a second walk. */
static inline entry **find_slot(jj_lru *c, const char *key, size_t klen, uint64_t h) {
    entry **pp = bucket_of(c, h);
    for (entry *e = *pp; e; pp = &e->chain, e = e->chain)
        if (e->hash == h && e->klen == klen && (klen == 0 || memcmp(e->data, key, klen) == 0))
            return pp;
    return pp;
}

static entry **slot_of(jj_lru *c, const entry *target) {
    entry **pp = bucket_of(c, target->hash);
    while (*pp != target) pp = &(*pp)->chain;
    return pp;
}

/* Removes the entry that *pp points at. */
static void remove_at(jj_lru *c, entry **pp) {
    entry *e = *pp;
    *pp = e->chain;
    list_unlink(c, e);
    c->items--;
    c->bytes -= cost(e);
    free(e);
}

static void remove_entry(jj_lru *c, entry *e) {
    remove_at(c, slot_of(c, e));
}

/* Doubles the table; on allocation failure keeps the current one (chains
 * just get longer). */
static void grow(jj_lru *c) {
    size_t n = (c->mask + 1) * 2;
    entry **nb = calloc(n, sizeof *nb);
    if (!nb) return;
    for (size_t i = 0; i <= c->mask; i++) {
        entry *e = c->buckets[i];
        while (e) {
            entry *next = e->chain;
            entry **pp = &nb[e->hash & (n - 1)];
            e->chain = *pp;
            *pp = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = nb;
    c->mask = n - 1;
}

/* Evicts from the tail until within limits, sparing keep (the entry just
 * stored, at the head). */
static void enforce_limits(jj_lru *c, const entry *keep, double now) {
    while ((c->items > c->max_items || c->bytes > c->max_bytes) && c->tail && c->tail != keep) {
        if (c->tail->expires_at <= now) c->expirations++;
        else c->evictions++;
        remove_entry(c, c->tail);
    }
}

/* ---- public API --------------------------------------------------------------- */

jj_lru *jj_lru_new(const char *name, size_t max_items, size_t max_bytes) {
    if (!name || max_items == 0 || max_bytes == 0) return NULL;
    jj_lru *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->name = strdup(name);
    c->buckets = calloc(MIN_BUCKETS, sizeof *c->buckets);
    if (!c->name || !c->buckets) {
        free(c->name);
        free(c->buckets);
        free(c);
        return NULL;
    }
    c->mask = MIN_BUCKETS - 1;
    c->max_items = max_items;
    c->max_bytes = max_bytes;
    c->seed = random_seed(c);
    return c;
}

static void free_entries(jj_lru *c) {
    entry *e = c->head;
    while (e) {
        entry *next = e->next;
        free(e);
        e = next;
    }
    c->head = c->tail = NULL;
    c->items = c->bytes = 0;
}

void jj_lru_free(jj_lru *c) {
    if (!c) return;
    free_entries(c);
    free(c->buckets);
    free(c->name);
    free(c);
}

const char *jj_lru_name(const jj_lru *c) { return c->name; }
uint64_t jj_lru_seq(const jj_lru *c) { return c->seq; }

int jj_lru_get(jj_lru *c, const char *key, size_t klen, double now, jj_lru_entry *out) {
    uint64_t h = hash_bytes(key, klen, c->seed);
    entry **pp = find_slot(c, key, klen, h);
    entry *e = *pp;
    if (!e) {
        c->misses++;
        return -1;
    }
    if (now >= e->expires_at) {
        c->expirations++;
        c->misses++;
        remove_at(c, pp);
        return -1;
    }
    if (c->head != e) {
        list_unlink(c, e);
        list_push_head(c, e);
    }
    c->hits++;
    out->value = e->data + e->klen;
    out->vlen = e->vlen;
    out->expires_at = e->expires_at;
    out->flags = e->flags;
    out->version = e->version;
    return 0;
}

int jj_lru_set(jj_lru *c, const char *key, size_t klen, const char *val, size_t vlen,
               double expires_at, int64_t flags, int64_t version, double now) {
    uint64_t h = hash_bytes(key, klen, c->seed);
    entry **pp = find_slot(c, key, klen, h);
    entry *old = *pp;
    size_t need = klen + vlen;
    if (need < klen || need > c->max_bytes || c->max_bytes - need < JJ_LRU_ENTRY_OVERHEAD) {
        if (old) remove_at(c, pp);
        return JJ_LRU_TOO_LARGE;
    }
    entry *e;
    if (old && need <= old->cap && need >= old->cap / 2) {
        /* Same key, so the key bytes are already in place. */
        e = old;
        c->bytes -= cost(e);
        list_unlink(c, e);
    } else {
        e = malloc(sizeof *e + need);
        if (!e) {
            if (old) remove_at(c, pp);
            return JJ_LRU_NOMEM;
        }
        e->cap = need;
        e->hash = h;
        e->klen = klen;
        if (klen) memcpy(e->data, key, klen);
        if (old) {
            e->chain = old->chain;   /* take old's place in its chain */
            *pp = e;
            list_unlink(c, old);
            c->bytes -= cost(old);
            free(old);
        } else {
            entry **b = bucket_of(c, h);
            e->chain = *b;
            *b = e;
            c->items++;
        }
    }
    e->vlen = vlen;
    if (vlen) memcpy(e->data + klen, val, vlen);
    e->expires_at = expires_at;
    e->flags = flags;
    e->version = version;
    c->bytes += cost(e);
    list_push_head(c, e);
    c->sets++;

    /* Reclaim an expired entry or two from the tail: keeps memory from
     * being held by dead entries in a cache that is mostly written. */
    for (int i = 0; i < 2 && c->tail != e && c->tail->expires_at <= now; i++) {
        c->expirations++;
        remove_entry(c, c->tail);
    }
    enforce_limits(c, e, now);
    if (c->items > c->mask + 1) grow(c);
    return JJ_LRU_OK;
}

int jj_lru_delete(jj_lru *c, const char *key, size_t klen) {
    c->seq++;
    uint64_t h = hash_bytes(key, klen, c->seed);
    entry **pp = find_slot(c, key, klen, h);
    if (!*pp) return 0;
    remove_at(c, pp);
    c->deletes++;
    return 1;
}

void jj_lru_flush(jj_lru *c) {
    c->seq++;
    c->flushes++;
    free_entries(c);
    if (c->mask + 1 > MIN_BUCKETS) {
        entry **nb = calloc(MIN_BUCKETS, sizeof *nb);
        if (nb) {
            free(c->buckets);
            c->buckets = nb;
            c->mask = MIN_BUCKETS - 1;
            return;
        }
    }
    memset(c->buckets, 0, (c->mask + 1) * sizeof *c->buckets);
}

void jj_lru_set_limits(jj_lru *c, size_t max_items, size_t max_bytes) {
    if (max_items) c->max_items = max_items;
    if (max_bytes) c->max_bytes = max_bytes;
    while ((c->items > c->max_items || c->bytes > c->max_bytes) && c->tail) {
        c->evictions++;
        remove_entry(c, c->tail);
    }
}

void jj_lru_get_stats(const jj_lru *c, jj_lru_stats *st) {
    st->items = c->items;
    st->bytes = c->bytes;
    st->max_items = c->max_items;
    st->max_bytes = c->max_bytes;
    st->hits = c->hits;
    st->misses = c->misses;
    st->evictions = c->evictions;
    st->expirations = c->expirations;
    st->sets = c->sets;
    st->deletes = c->deletes;
    st->flushes = c->flushes;
}

/* ---- registry -------------------------------------------------------------------- */

static jj_lru **reg;
static size_t nreg, capreg;
static unsigned reg_epoch = 1;

static jj_lru *find_n(const char *name, size_t len) {
    for (size_t i = 0; i < nreg; i++)
        if (strncmp(reg[i]->name, name, len) == 0 && reg[i]->name[len] == '\0') return reg[i];
    return NULL;
}

jj_lru *jj_lru_registry_find(const char *name) {
    return name ? find_n(name, strlen(name)) : NULL;
}

int jj_lru_registry_invalidate(const char *msg, size_t len) {
    const char *tab = memchr(msg, '\t', len);
    if (!tab || tab == msg) return -1;
    size_t nlen = (size_t)(tab - msg), klen = len - nlen - 1;
    const char *key = tab + 1;
    int all_keys = klen == 1 && key[0] == '*';
    if (nlen == 1 && msg[0] == '*') {
        if (!all_keys) return -1;
        jj_lru_registry_flush_all();
        return 0;
    }
    if (memchr(msg, '\0', nlen)) return 0;   /* no cache has such a name */
    jj_lru *c = find_n(msg, nlen);
    if (!c) return 0;
    if (all_keys) jj_lru_flush(c);
    else jj_lru_delete(c, key, klen);
    return 0;
}

jj_lru *jj_lru_registry_get(const char *name, size_t max_items, size_t max_bytes) {
    if (!name || !name[0] || strlen(name) > JJ_LRU_NAME_MAX || max_items == 0 || max_bytes == 0)
        return NULL;
    jj_lru *c = jj_lru_registry_find(name);
    if (c) {
        jj_lru_set_limits(c, max_items, max_bytes);
        return c;
    }
    if (nreg == capreg) {
        size_t cap = capreg ? capreg * 2 : 8;
        jj_lru **r = realloc(reg, cap * sizeof *r);
        if (!r) return NULL;
        reg = r;
        capreg = cap;
    }
    c = jj_lru_new(name, max_items, max_bytes);
    if (c) reg[nreg++] = c;
    return c;
}

void jj_lru_registry_flush_all(void) {
    for (size_t i = 0; i < nreg; i++) jj_lru_flush(reg[i]);
}

size_t jj_lru_registry_count(void) { return nreg; }
jj_lru *jj_lru_registry_at(size_t i) { return i < nreg ? reg[i] : NULL; }
unsigned jj_lru_registry_epoch(void) { return reg_epoch; }

void jj_lru_registry_free_all(void) {
    for (size_t i = 0; i < nreg; i++) jj_lru_free(reg[i]);
    free(reg);
    reg = NULL;
    nreg = capreg = 0;
    reg_epoch++;
}
