/* lru.h: the per-process level-1 cache: named in-memory LRU caches with a
 * TTL per entry and bounds on item count and bytes, in front of Redis.
 *
 * Keys and values are byte strings (NUL bytes allowed). get, set and delete
 * are O(1); a get that hits allocates nothing. Time is whatever clock the
 * caller passes as `now` (the engine uses ev_now, in seconds); an entry is a
 * miss once now >= its expires_at.
 *
 * The registry of named caches lives outside any Lua VM on purpose: a hot
 * reload (a new VM generation) keeps L1. Not thread-safe: use it from the
 * loop thread only.
 */
#ifndef JJ_LRU_H
#define JJ_LRU_H

#include <stddef.h>
#include <stdint.h>

typedef struct jj_lru jj_lru;

/* Bytes charged per entry on top of its key and value: the entry header,
 * its hash-table slot and the allocator's header. */
#define JJ_LRU_ENTRY_OVERHEAD 104
/* Longest cache name accepted by the registry. */
#define JJ_LRU_NAME_MAX 128

/* jj_lru_set results. */
#define JJ_LRU_OK 0
#define JJ_LRU_TOO_LARGE (-1)  /* klen + vlen + overhead > max_bytes */
#define JJ_LRU_NOMEM (-2)

/* A view of one entry, filled by jj_lru_get. value points into the cache:
 * it stays valid until the next call that changes this cache (set, delete,
 * flush, limit change, or a get that expires an entry). */
typedef struct jj_lru_entry {
    const char *value;
    size_t vlen;
    double expires_at;
    int64_t flags;
    int64_t version;
} jj_lru_entry;

typedef struct jj_lru_stats {
    size_t items, bytes, max_items, max_bytes;
    uint64_t hits, misses;     /* jj_lru_get; an expired entry is a miss */
    uint64_t evictions;        /* removed to make room (or limits lowered) */
    uint64_t expirations;      /* found expired (on get, or at the LRU tail) */
    uint64_t sets;             /* stored by jj_lru_set */
    uint64_t deletes;          /* jj_lru_delete calls that removed an entry */
    uint64_t flushes;          /* jj_lru_flush calls */
} jj_lru_stats;

/* A standalone cache (not in the registry). name is copied. Returns NULL on
 * bad limits (0) or out of memory. */
jj_lru *jj_lru_new(const char *name, size_t max_items, size_t max_bytes);
void jj_lru_free(jj_lru *c);
const char *jj_lru_name(const jj_lru *c);

/* 0 and *out filled on a hit (the entry becomes the most recently used);
 * -1 on a miss. An expired entry is removed and counts as a miss. */
int jj_lru_get(jj_lru *c, const char *key, size_t klen, double now, jj_lru_entry *out);

/* Stores (or replaces) key, then evicts least recently used entries until
 * the cache is within max_items and max_bytes. Returns JJ_LRU_OK, or
 * JJ_LRU_TOO_LARGE / JJ_LRU_NOMEM when nothing was stored: any previous
 * entry for the key is then removed too, so it cannot be served stale.
 * now is used only to reclaim expired entries at the LRU tail. */
int jj_lru_set(jj_lru *c, const char *key, size_t klen, const char *val, size_t vlen,
               double expires_at, int64_t flags, int64_t version, double now);

/* 1 if the key was present (and is now removed), 0 otherwise. */
int jj_lru_delete(jj_lru *c, const char *key, size_t klen);
void jj_lru_flush(jj_lru *c);

/* Changes the limits (0 leaves one unchanged), evicting at once if they
 * were lowered. */
void jj_lru_set_limits(jj_lru *c, size_t max_items, size_t max_bytes);
void jj_lru_get_stats(const jj_lru *c, jj_lru_stats *st);

/* Invalidation sequence: increases on every jj_lru_delete call (whether or
 * not the key was present) and every flush. A caller that reads seq before
 * fetching a value from the backing store and finds it unchanged before
 * jj_lru_set knows no invalidation arrived in between. */
uint64_t jj_lru_seq(const jj_lru *c);

/* ---- the per-process registry of named caches ---------------------------- */

/* The cache called name, created on first use; later calls update its
 * limits (evicting if lowered). NULL on a bad name (empty, longer than
 * JJ_LRU_NAME_MAX), bad limits (0) or out of memory. */
jj_lru *jj_lru_registry_get(const char *name, size_t max_items, size_t max_bytes);
jj_lru *jj_lru_registry_find(const char *name);   /* NULL if none */
void jj_lru_registry_flush_all(void);
/* Applies one invalidation message (the text published on the channel
 * <REDIS_KEY_PREFIX>invalidate): "<name>\t<key>" deletes key (everything
 * after the first tab, any bytes) from the cache called name, "<name>\t*"
 * flushes that cache, "*\t*" flushes every cache. A name no cache has here
 * is ignored. Returns 0, or -1 when the message is malformed (no tab, an
 * empty name, or "*" with a key other than "*"). */
int jj_lru_registry_invalidate(const char *msg, size_t len);
size_t jj_lru_registry_count(void);
jj_lru *jj_lru_registry_at(size_t i);             /* creation order; NULL past the end */
/* Frees every registered cache; pointers to them become invalid, and the
 * epoch changes so that holders of such pointers can tell. */
void jj_lru_registry_free_all(void);
unsigned jj_lru_registry_epoch(void);

#endif
