/* test_lru.c: the L1 cache (lru.c): entries, TTL, recency, bounds, stats,
 * the named registry and the invalidation message format. Time is a fake
 * `now` passed by the test. */
#include "jj_test.h"
#include "lru.h"

#include <stdint.h>
#include <stdlib.h>

#define OV JJ_LRU_ENTRY_OVERHEAD

static int set(jj_lru *c, const char *k, const char *v, double exp, double now) {
    return jj_lru_set(c, k, strlen(k), v, strlen(v), exp, 0, 0, now);
}

static int has(jj_lru *c, const char *k, double now) {
    jj_lru_entry e;
    return jj_lru_get(c, k, strlen(k), now, &e) == 0;
}

/* The value of k as a NUL-terminated string in a static buffer, or NULL. */
static const char *val(jj_lru *c, const char *k, double now) {
    static char buf[256];
    jj_lru_entry e;
    if (jj_lru_get(c, k, strlen(k), now, &e) != 0) return NULL;
    size_t n = e.vlen < sizeof buf - 1 ? e.vlen : sizeof buf - 1;
    memcpy(buf, e.value, n);
    buf[n] = '\0';
    return buf;
}

static void test_basics(void) {
    CHECK(jj_lru_new("x", 0, 100) == NULL);
    CHECK(jj_lru_new("x", 10, 0) == NULL);
    jj_lru *c = jj_lru_new("basics", 100, 1 << 20);
    CHECK(c != NULL);
    CHECK_STR(jj_lru_name(c), "basics");
    CHECK(!has(c, "a", 0));

    CHECK_INT(jj_lru_set(c, "a", 1, "one", 3, 100, 7, 42, 0), JJ_LRU_OK);
    jj_lru_entry e;
    CHECK_INT(jj_lru_get(c, "a", 1, 1, &e), 0);
    CHECK_MEM(e.value, e.vlen, "one");
    CHECK(e.expires_at == 100);
    CHECK_INT(e.flags, 7);
    CHECK_INT(e.version, 42);

    /* Replace: bigger (new allocation), smaller (reused), same size. */
    CHECK_INT(set(c, "a", "a much longer value than before", 200, 1), JJ_LRU_OK);
    CHECK_STR(val(c, "a", 2), "a much longer value than before");
    CHECK_INT(jj_lru_set(c, "a", 1, "a much longer value than befor!", 31, 300, -1, -2, 2), JJ_LRU_OK);
    CHECK_INT(jj_lru_get(c, "a", 1, 2, &e), 0);
    CHECK_MEM(e.value, e.vlen, "a much longer value than befor!");
    CHECK(e.expires_at == 300);
    CHECK_INT(e.flags, -1);
    CHECK_INT(e.version, -2);
    CHECK_INT(set(c, "a", "x", 300, 2), JJ_LRU_OK);
    CHECK_STR(val(c, "a", 2), "x");
    CHECK_INT(set(c, "a", "", 300, 2), JJ_LRU_OK);   /* empty value */
    CHECK_INT(jj_lru_get(c, "a", 1, 2, &e), 0);
    CHECK_INT(e.vlen, 0);
    CHECK_INT(set(c, "", "empty key", 300, 2), JJ_LRU_OK);
    CHECK_STR(val(c, "", 2), "empty key");

    jj_lru_stats st;
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 2);
    CHECK_INT(st.bytes, (1 + 0 + OV) + (0 + 9 + OV));
    CHECK_INT(st.max_items, 100);
    CHECK_INT(st.max_bytes, 1 << 20);

    /* Delete. */
    CHECK_INT(jj_lru_delete(c, "a", 1), 1);
    CHECK_INT(jj_lru_delete(c, "a", 1), 0);
    CHECK(!has(c, "a", 2));
    CHECK_INT(jj_lru_delete(c, "", 0), 1);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 0);
    CHECK_INT(st.bytes, 0);
    CHECK_INT(st.deletes, 2);
    jj_lru_free(c);
    jj_lru_free(NULL);
}

static void test_ttl(void) {
    jj_lru *c = jj_lru_new("ttl", 100, 1 << 20);
    set(c, "k", "v", 10.0, 0);
    CHECK(has(c, "k", 9.999));
    CHECK(!has(c, "k", 10.0));   /* expired at expires_at exactly */
    jj_lru_stats st;
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 0);      /* removed by the miss */
    CHECK_INT(st.expirations, 1);
    CHECK_INT(st.hits, 1);
    CHECK_INT(st.misses, 1);
    CHECK(!has(c, "k", 5));      /* gone, even for an earlier clock */

    /* A set refreshes the expiry. */
    set(c, "k", "v", 10.0, 0);
    set(c, "k", "v2", 20.0, 9);
    CHECK_STR(val(c, "k", 15), "v2");

    /* Expired entries at the LRU tail are reclaimed by later sets. */
    jj_lru_flush(c);
    set(c, "old1", "v", 5, 0);
    set(c, "old2", "v", 5, 0);
    set(c, "fresh", "v", 100, 0);
    set(c, "new", "v", 100, 50);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 2);
    CHECK_INT(st.expirations, 3);
    CHECK(has(c, "fresh", 50));
    jj_lru_free(c);
}

static void test_lru_order(void) {
    /* Count bound: 3 items. */
    jj_lru *c = jj_lru_new("order", 3, 1 << 20);
    set(c, "a", "1", 1e9, 0);
    set(c, "b", "2", 1e9, 0);
    set(c, "c", "3", 1e9, 0);
    CHECK(has(c, "a", 0));        /* a is now the most recent; b the least */
    set(c, "d", "4", 1e9, 0);
    CHECK(!has(c, "b", 0));
    CHECK(has(c, "a", 0));
    CHECK(has(c, "c", 0));
    CHECK(has(c, "d", 0));
    /* Replacing counts as use too: order now a, c, d (d most recent). */
    set(c, "a", "1b", 1e9, 0);    /* order c, d, a */
    set(c, "e", "5", 1e9, 0);     /* evicts c */
    CHECK(!has(c, "c", 0));
    CHECK(has(c, "d", 0) && has(c, "a", 0) && has(c, "e", 0));
    jj_lru_stats st;
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 3);
    CHECK_INT(st.evictions, 2);
    jj_lru_free(c);

    /* Byte bound: room for exactly three 10-byte values with 1-byte keys. */
    size_t each = 1 + 10 + OV;
    c = jj_lru_new("bytes", 1000, 3 * each);
    set(c, "a", "0123456789", 1e9, 0);
    set(c, "b", "0123456789", 1e9, 0);
    set(c, "c", "0123456789", 1e9, 0);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.bytes, 3 * each);
    CHECK_INT(st.items, 3);
    CHECK(has(c, "a", 0));
    set(c, "d", "0123456789", 1e9, 0);   /* evicts b */
    CHECK(!has(c, "b", 0));
    /* One bigger value needs two evictions (c, then a... a was touched
     * before d, so the order is c, a, d). */
    set(c, "e", "01234567890123456789", 1e9, 0);
    jj_lru_get_stats(c, &st);
    CHECK(st.bytes <= 3 * each);
    CHECK(!has(c, "c", 0));
    CHECK(!has(c, "a", 0));
    CHECK(has(c, "d", 0));
    CHECK(has(c, "e", 0));
    CHECK_INT(st.evictions, 3);

    /* Too large: refused, and the old value of that key goes too. */
    CHECK_INT(set(c, "d", "x", 1e9, 0), JJ_LRU_OK);
    char big[4 * 200];
    memset(big, 'z', sizeof big);
    CHECK_INT(jj_lru_set(c, "d", 1, big, sizeof big, 1e9, 0, 0, 0), JJ_LRU_TOO_LARGE);
    CHECK(!has(c, "d", 0));
    CHECK(has(c, "e", 0));   /* nothing else evicted for it */
    /* Exactly max_bytes fits, alone. */
    size_t vlen = 3 * each - OV - 1;
    CHECK_INT(jj_lru_set(c, "f", 1, big, vlen, 1e9, 0, 0, 0), JJ_LRU_OK);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 1);
    CHECK_INT(st.bytes, 3 * each);
    CHECK_INT(jj_lru_set(c, "f", 1, big, vlen + 1, 1e9, 0, 0, 0), JJ_LRU_TOO_LARGE);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 0);
    CHECK_INT(st.bytes, 0);

    /* Lowering the limits evicts the least recently used at once. */
    set(c, "a", "1", 1e9, 0);
    set(c, "b", "2", 1e9, 0);
    set(c, "c", "3", 1e9, 0);
    jj_lru_set_limits(c, 1, 0);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 1);
    CHECK_INT(st.max_items, 1);
    CHECK_INT(st.max_bytes, 3 * each);
    CHECK(has(c, "c", 0));
    jj_lru_free(c);
}

static void test_flush_and_stats(void) {
    jj_lru *c = jj_lru_new("stats", 100, 1 << 20);
    uint64_t seq0 = jj_lru_seq(c);
    set(c, "a", "1", 10, 0);
    set(c, "b", "2", 10, 0);
    set(c, "a", "3", 10, 0);
    CHECK(jj_lru_seq(c) == seq0);   /* sets do not move it */
    has(c, "a", 1);
    has(c, "b", 1);
    has(c, "zz", 1);
    has(c, "a", 11);                 /* expired */
    jj_lru_delete(c, "b", 1);
    CHECK(jj_lru_seq(c) == seq0 + 1);
    jj_lru_delete(c, "nope", 4);     /* absent: seq still moves */
    CHECK(jj_lru_seq(c) == seq0 + 2);
    jj_lru_stats st;
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.sets, 3);
    CHECK_INT(st.hits, 2);
    CHECK_INT(st.misses, 2);
    CHECK_INT(st.expirations, 1);
    CHECK_INT(st.deletes, 1);
    CHECK_INT(st.evictions, 0);
    CHECK_INT(st.items, 0);

    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", i);
        set(c, k, "v", 10, 0);
    }
    jj_lru_flush(c);
    CHECK(jj_lru_seq(c) == seq0 + 3);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, 0);
    CHECK_INT(st.bytes, 0);
    CHECK_INT(st.flushes, 1);
    CHECK(!has(c, "k1", 0));
    set(c, "after", "flush", 10, 0);   /* still usable */
    CHECK_STR(val(c, "after", 0), "flush");
    jj_lru_free(c);
}

static void test_many_keys(void) {
    enum { N = 100000 };
    jj_lru *c = jj_lru_new("many", N, (size_t)1 << 30);
    char k[32], v[32];
    int ok = 0;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        snprintf(v, sizeof v, "value-%d", i);
        ok += set(c, k, v, 1e9, 0) == JJ_LRU_OK;
    }
    CHECK_INT(ok, N);
    jj_lru_stats st;
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, N);
    CHECK_INT(st.evictions, 0);
    int found = 0;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        snprintf(v, sizeof v, "value-%d", i);
        const char *got = val(c, k, 1);
        found += got && strcmp(got, v) == 0;
    }
    CHECK_INT(found, N);
    CHECK(!has(c, "key:100000", 1));
    /* Delete every other key; the rest stay. */
    int deleted = 0;
    for (int i = 0; i < N; i += 2) {
        snprintf(k, sizeof k, "key:%d", i);
        deleted += jj_lru_delete(c, k, strlen(k));
    }
    CHECK_INT(deleted, N / 2);
    found = 0;
    for (int i = 0; i < N; i++) {
        snprintf(k, sizeof k, "key:%d", i);
        found += has(c, k, 1) == (i % 2);
    }
    CHECK_INT(found, N);
    /* One more than max_items: exactly the least recently used goes. */
    jj_lru_set_limits(c, N / 2, 0);
    set(c, "extra", "v", 1e9, 1);
    jj_lru_get_stats(c, &st);
    CHECK_INT(st.items, N / 2);
    CHECK(!has(c, "key:1", 1));
    CHECK(has(c, "key:3", 1));
    jj_lru_flush(c);
    set(c, "again", "v", 1e9, 1);   /* the table shrank; still works */
    CHECK(has(c, "again", 1));
    jj_lru_free(c);
}

static void test_binary(void) {
    jj_lru *c = jj_lru_new("bin", 100, 1 << 20);
    const char k1[] = "a\0b", k2[] = "a\0c", k3[] = "a";
    const char v1[] = "\0\1\2\0", v2[] = "x\0y";
    CHECK_INT(jj_lru_set(c, k1, 3, v1, 4, 10, 0, 0, 0), JJ_LRU_OK);
    CHECK_INT(jj_lru_set(c, k2, 3, v2, 3, 10, 0, 0, 0), JJ_LRU_OK);
    CHECK_INT(jj_lru_set(c, k3, 1, "plain", 5, 10, 0, 0, 0), JJ_LRU_OK);
    jj_lru_entry e;
    CHECK_INT(jj_lru_get(c, k1, 3, 0, &e), 0);
    CHECK(e.vlen == 4 && memcmp(e.value, v1, 4) == 0);
    CHECK_INT(jj_lru_get(c, k2, 3, 0, &e), 0);
    CHECK(e.vlen == 3 && memcmp(e.value, v2, 3) == 0);
    CHECK_INT(jj_lru_get(c, k3, 1, 0, &e), 0);
    CHECK_MEM(e.value, e.vlen, "plain");
    CHECK_INT(jj_lru_get(c, "a\0d", 3, 0, &e), -1);
    CHECK_INT(jj_lru_delete(c, k1, 3), 1);
    CHECK_INT(jj_lru_get(c, k2, 3, 0, &e), 0);
    jj_lru_free(c);
}

static void test_registry(void) {
    unsigned epoch = jj_lru_registry_epoch();
    CHECK(jj_lru_registry_get("", 10, 100) == NULL);
    CHECK(jj_lru_registry_get("r1", 0, 100) == NULL);
    char longname[JJ_LRU_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    CHECK(jj_lru_registry_get(longname, 10, 100) == NULL);
    CHECK_INT(jj_lru_registry_count(), 0);

    jj_lru *a = jj_lru_registry_get("r1", 10, 100000);
    jj_lru *b = jj_lru_registry_get("r2", 10, 100000);
    CHECK(a != NULL && b != NULL && a != b);
    CHECK(jj_lru_registry_get("r1", 10, 100000) == a);
    CHECK(jj_lru_registry_find("r1") == a);
    CHECK(jj_lru_registry_find("r2") == b);
    CHECK(jj_lru_registry_find("r") == NULL);
    CHECK(jj_lru_registry_find("r12") == NULL);
    CHECK_INT(jj_lru_registry_count(), 2);
    CHECK(jj_lru_registry_at(0) == a);
    CHECK(jj_lru_registry_at(1) == b);
    CHECK(jj_lru_registry_at(2) == NULL);

    for (int i = 0; i < 5; i++) {
        char k[8];
        snprintf(k, sizeof k, "k%d", i);
        set(a, k, "v", 100, 0);
        set(b, k, "v", 100, 0);
    }
    /* A later call with lower limits updates them and evicts. */
    CHECK(jj_lru_registry_get("r1", 2, 100000) == a);
    jj_lru_stats st;
    jj_lru_get_stats(a, &st);
    CHECK_INT(st.max_items, 2);
    CHECK_INT(st.items, 2);
    CHECK(has(a, "k4", 0) && has(a, "k3", 0));

    jj_lru_registry_flush_all();
    jj_lru_get_stats(a, &st);
    CHECK_INT(st.items, 0);
    jj_lru_get_stats(b, &st);
    CHECK_INT(st.items, 0);

    /* Invalidation messages. */
    set(a, "x", "1", 100, 0);
    set(a, "y\tz", "2", 100, 0);
    set(b, "x", "3", 100, 0);
    set(b, "*", "4", 100, 0);
    CHECK_INT(jj_lru_registry_invalidate("r1\tx", 4), 0);
    CHECK(!has(a, "x", 0));
    CHECK(has(b, "x", 0));
    CHECK_INT(jj_lru_registry_invalidate("r1\ty\tz", 6), 0);   /* the key may hold tabs */
    CHECK(!has(a, "y\tz", 0));
    CHECK_INT(jj_lru_registry_invalidate("nosuch\tx", 8), 0);  /* ignored */
    CHECK(has(b, "x", 0));
    CHECK_INT(jj_lru_registry_invalidate("r2\tmissing", 10), 0);
    CHECK_INT(jj_lru_registry_invalidate("r2", 2), -1);
    CHECK_INT(jj_lru_registry_invalidate("\tx", 2), -1);
    CHECK_INT(jj_lru_registry_invalidate("*\tx", 3), -1);
    CHECK_INT(jj_lru_registry_invalidate("", 0), -1);
    CHECK_INT(jj_lru_registry_invalidate("r2\0\tx", 5), 0);     /* NUL in name: no such cache */
    CHECK(has(b, "x", 0));
    CHECK_INT(jj_lru_registry_invalidate("r2\t*", 4), 0);      /* flush r2 */
    CHECK(!has(b, "x", 0) && !has(b, "*", 0));
    set(a, "p", "1", 100, 0);
    set(b, "q", "1", 100, 0);
    CHECK_INT(jj_lru_registry_invalidate("*\t*", 3), 0);
    CHECK(!has(a, "p", 0) && !has(b, "q", 0));

    jj_lru_registry_free_all();
    CHECK(jj_lru_registry_epoch() != epoch);
    CHECK_INT(jj_lru_registry_count(), 0);
    CHECK(jj_lru_registry_find("r1") == NULL);
    /* Usable again after free_all. */
    a = jj_lru_registry_get("r1", 10, 1000);
    CHECK(a != NULL);
    CHECK_INT(jj_lru_registry_invalidate("r1\t*", 4), 0);
    jj_lru_registry_free_all();
    jj_lru_registry_flush_all();   /* empty registry: no-op */
}

int main(void) {
    test_basics();
    test_ttl();
    test_lru_order();
    test_flush_and_stats();
    test_many_keys();
    test_binary();
    test_registry();
    return jj_test_done();
}
