/* fuzz_http_parser.c: libFuzzer target for http_parser.c and
 * http_chunked.c.
 *
 * Besides memory safety it checks the properties the connection code relies
 * on: results point inside the head, head_len never exceeds the input or
 * max_head, every strict prefix of an accepted head is incomplete, and the
 * verdict does not depend on max_head except for 431. The input is also
 * decoded as a chunked body (after the head when the head says chunked):
 * the verdict, body and trailing bytes must not depend on how the bytes are
 * split across reads, an accepted body must be what a separate line-by-line
 * reading of the grammar gives, and the decoded size never passes max_body.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine/src \
 *       tests/fuzz/fuzz_http_parser.c engine/src/http_parser.c engine/src/http_chunked.c -o fuzz_http
 *   ./fuzz_http tests/fuzz/corpus/http_parser
 */
#include "http_chunked.h"
#include "http_parser.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define ASSERT(c) do { if (!(c)) { \
    fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #c); abort(); } } while (0)

static jj_http_request req, req2;

static int inside(const uint8_t *buf, size_t len, const char *p, size_t n) {
    uintptr_t b = (uintptr_t)buf, x = (uintptr_t)p;
    return p != NULL && x >= b && n <= len && x - b <= len - n;
}

static int parse_copy(const uint8_t *data, size_t n, size_t max_head, jj_http_request *r,
                      int *st, const char **why) {
    /* An exact-size copy so that ASan flags any read past n. */
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, data, n);
    int rc = jj_http_parse_request((const char *)copy, n, max_head, r, st, why);
    free(copy);
    return rc;
}

static void check_ok(const uint8_t *data, size_t len, size_t max_head, const jj_http_request *r) {
    size_t h = r->head_len;
    ASSERT(h > 0 && h <= len && h <= max_head);
    ASSERT(r->nheaders <= JJ_HTTP_MAX_HEADERS);
    ASSERT(r->method_len > 0 && inside(data, h, r->method, r->method_len));
    ASSERT(r->target_len > 0 && inside(data, h, r->target, r->target_len));
    ASSERT(r->path_len > 0 && inside(data, h, r->path, r->path_len));
    ASSERT(r->path == r->target && r->path_len <= r->target_len);
    if (r->query) {
        ASSERT(inside(data, h, r->query, r->query_len));
        ASSERT(r->query == r->path + r->path_len + 1);
        ASSERT(r->path_len + 1 + r->query_len == r->target_len);
    } else {
        ASSERT(r->query_len == 0 && r->path_len == r->target_len);
    }
    for (size_t i = 0; i < r->nheaders; i++) {
        const jj_http_header *hd = &r->headers[i];
        ASSERT(hd->name_len > 0 && inside(data, h, hd->name, hd->name_len));
        ASSERT(inside(data, h, hd->value, hd->value_len));
        ASSERT(memchr(hd->name, ':', hd->name_len) == NULL);
        ASSERT(memchr(hd->value, '\n', hd->value_len) == NULL);
        ASSERT(memchr(hd->value, '\r', hd->value_len) == NULL);
    }
    ASSERT(r->minor_version == 0 || r->minor_version == 1);
    ASSERT(r->content_length >= -1);
    ASSERT(r->chunked == 0 || r->chunked == 1);
    ASSERT(!(r->chunked && r->content_length >= 0));
    ASSERT(r->keep_alive == 0 || r->keep_alive == 1);
    ASSERT(r->expect_continue == 0 || r->expect_continue == 1);
}

static void check_find_header(const jj_http_request *r) {
    char name[256];
    for (size_t i = 0; i < r->nheaders && i < 8; i++) {
        const jj_http_header *hd = &r->headers[i];
        if (hd->name_len >= sizeof name) continue;
        memcpy(name, hd->name, hd->name_len);
        name[hd->name_len] = '\0';
        const jj_http_header *f = jj_http_find_header(r, name);
        ASSERT(f != NULL && f <= hd && f->name_len == hd->name_len);
        ASSERT(strncasecmp(f->name, hd->name, hd->name_len) == 0);
    }
}

static void fuzz_parse(const uint8_t *data, size_t len, size_t max_head) {
    int st = 0;
    const char *why = NULL;
    int rc = jj_http_parse_request((const char *)data, len, max_head, &req, &st, &why);
    ASSERT(rc == JJ_HTTP_OK || rc == JJ_HTTP_INCOMPLETE || rc == JJ_HTTP_ERROR);

    if (rc == JJ_HTTP_INCOMPLETE) {
        ASSERT(len < max_head || len == 0);
        return;
    }
    if (rc == JJ_HTTP_ERROR) {
        ASSERT(st == 400 || st == 431 || st == 501 || st == 505);
        ASSERT(why != NULL && why[0] != '\0');
        if (st != 431) {
            /* An error found within max_head is found with any larger limit. */
            int st2 = 0;
            const char *why2 = NULL;
            ASSERT(jj_http_parse_request((const char *)data, len, SIZE_MAX, &req2, &st2, &why2)
                   == JJ_HTTP_ERROR);
            ASSERT(st2 == st && strcmp(why2, why) == 0);
        }
        return;
    }

    check_ok(data, len, max_head, &req);
    check_find_header(&req);
    size_t h = req.head_len;
    int st2;
    const char *why2;

    /* Bytes after the head must not matter. */
    ASSERT(parse_copy(data, h, SIZE_MAX, &req2, &st2, &why2) == JJ_HTTP_OK);
    ASSERT(req2.head_len == h && req2.nheaders == req.nheaders);
    ASSERT(req2.content_length == req.content_length && req2.chunked == req.chunked);
    ASSERT(req2.keep_alive == req.keep_alive && req2.expect_continue == req.expect_continue);

    /* Incremental input: strict prefixes are incomplete, never errors. */
    ASSERT(parse_copy(data, h - 1, SIZE_MAX, &req2, &st2, &why2) == JJ_HTTP_INCOMPLETE);
    ASSERT(parse_copy(data, h / 2, SIZE_MAX, &req2, &st2, &why2) == JJ_HTTP_INCOMPLETE);

    /* One byte less of allowance turns an accepted head into 431. */
    st2 = 0;
    ASSERT(jj_http_parse_request((const char *)data, len, h - 1, &req2, &st2, &why2) == JJ_HTTP_ERROR);
    ASSERT(st2 == 431);
}

static int hexv(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Deliberately naive reference decoder to compare against. */
static long ref_decode(uint8_t *out, const uint8_t *s, size_t len, int plus) {
    size_t j = 0;
    for (size_t i = 0; i < len; i++) {
        int c = s[i];
        if (c == '%') {
            if (i + 2 >= len) return -1;
            int hi = hexv(s[i + 1]), lo = hexv(s[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = hi * 16 + lo;
            i += 2;
        } else if (c == '+' && plus) {
            c = ' ';
        }
        if (c == 0) return -1;
        out[j++] = (uint8_t)c;
    }
    return (long)j;
}

static void fuzz_url_decode(const uint8_t *data, size_t len) {
    size_t n = len < 4096 ? len : 4096;
    uint8_t *src = malloc(n ? n : 1), *out = malloc(n ? n : 1), *ref = malloc(n ? n : 1);
    for (int plus = 0; plus <= 1; plus++) {
        memcpy(src, data, n);
        long a = jj_http_url_decode((char *)out, (const char *)src, n, plus);
        long b = ref_decode(ref, data, n, plus);
        ASSERT(a == b);
        ASSERT(a >= -1 && a <= (long)n);
        if (a > 0) {
            ASSERT(memcmp(out, ref, (size_t)a) == 0);
            ASSERT(memchr(out, 0, (size_t)a) == NULL);
        }
        /* in place */
        long c = jj_http_url_decode((char *)src, (const char *)src, n, plus);
        ASSERT(c == a);
        if (c > 0) ASSERT(memcmp(src, out, (size_t)c) == 0);
    }
    free(src);
    free(out);
    free(ref);
}

/* ------------------------------------------------------------ chunked */

typedef struct {
    int rc, status;
    size_t out;                /* decoded bytes */
    size_t tail;               /* bytes left after the body (rc OK) */
    uint8_t *buf;              /* decoded body, then the tail */
} chunk_result;

/* Feeds body in pieces whose sizes come from the bytes of plan (each piece
 * 1 + plan[k] % 64 bytes; the whole body at once when plan is empty). */
static void chunk_feed(const uint8_t *body, size_t n, const uint8_t *plan, size_t nplan,
                       size_t max_body, size_t max_trailer, chunk_result *r) {
    r->buf = malloc(n ? n : 1);
    size_t len = 0, fed = 0, k = 0;
    jj_http_chunked d;
    jj_http_chunked_init(&d);
    r->rc = JJ_HTTP_INCOMPLETE;
    r->status = 0;
    while (r->rc == JJ_HTTP_INCOMPLETE && fed < n) {
        size_t piece = nplan ? 1 + plan[k++ % nplan] % 64 : n;
        if (piece > n - fed) piece = n - fed;
        memcpy(r->buf + len, body + fed, piece);
        len += piece;
        fed += piece;
        size_t before = len;
        const char *why = NULL;
        r->rc = jj_http_chunked_decode(&d, (char *)r->buf, &len, max_body, max_trailer, &r->status, &why);
        ASSERT(len <= before && d.out <= len);
        ASSERT(d.out <= max_body);
        if (r->rc == JJ_HTTP_INCOMPLETE) ASSERT(len == d.out);   /* nothing left unconsumed */
        if (r->rc == JJ_HTTP_ERROR) {
            ASSERT(r->status == 400 || r->status == 413 || r->status == 431);
            ASSERT(why != NULL && why[0] != '\0');
        }
    }
    r->out = d.out;
    if (r->rc == JJ_HTTP_OK) {
        memcpy(r->buf + len, body + fed, n - fed);   /* not fed yet: also after the body */
        r->tail = len - d.out + (n - fed);
    } else {
        r->tail = 0;
    }
}

static int hexd(uint8_t c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}
static int tchar(uint8_t c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}
static int vchar(uint8_t c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

/* Deliberately different reading of RFC 9112 7.1 (with the decoder's limits):
 * split into CRLF lines first, then check each line. Returns 1 with the
 * body's raw length and decoded bytes when s starts with a complete valid
 * chunked body, 0 when it starts with an invalid one, -1 when s ends first. */
static int ref_chunked(const uint8_t *s, size_t n, size_t max_body, size_t max_trailer,
                       size_t *raw, uint8_t *out, size_t *outlen) {
    size_t p = 0, total = 0;
    for (;;) {   /* chunk-size line */
        size_t e = p;
        while (e + 1 < n && !(s[e] == '\r' && s[e + 1] == '\n')) e++;
        if (e + 1 >= n) return -1;
        if (e + 2 - p > JJ_HTTP_CHUNK_LINE_MAX) return 0;
        size_t q = p;
        uint64_t size = 0;
        while (q < e && hexd(s[q]) >= 0) {
            if (size > (uint64_t)(INT64_MAX >> 4)) return 0;
            size = size * 16 + (uint64_t)hexd(s[q++]);
        }
        if (q == p) return 0;
        if (size > max_body - total) return 0;
        while (q < e && (s[q] == ' ' || s[q] == '\t')) q++;
        if (q < e) {
            if (s[q] != ';') return 0;
            for (; q < e; q++) if (!vchar(s[q])) return 0;
        }
        p = e + 2;
        if (size == 0) break;
        if (n - p < size + 2) return -1;
        memcpy(out + total, s + p, (size_t)size);
        total += (size_t)size;
        p += (size_t)size;
        if (s[p] != '\r' || s[p + 1] != '\n') return 0;
        p += 2;
    }
    size_t tstart = p;
    for (;;) {   /* trailer lines, then the empty line */
        size_t e = p;
        while (e + 1 < n && !(s[e] == '\r' && s[e + 1] == '\n')) e++;
        if (e + 1 >= n) return -1;
        if (e + 2 - tstart > max_trailer) return 0;
        if (e == p) { p += 2; break; }
        size_t q = p;
        while (q < e && tchar(s[q])) q++;
        if (q == p || q == e || s[q] != ':') return 0;
        for (q++; q < e; q++) if (!vchar(s[q])) return 0;
        p = e + 2;
    }
    *raw = p;
    *outlen = total;
    return 1;
}

static void fuzz_chunked(const uint8_t *body, size_t n, const uint8_t *plan, size_t nplan,
                         size_t max_body, size_t max_trailer) {
    chunk_result whole, split;
    chunk_feed(body, n, NULL, 0, max_body, max_trailer, &whole);
    chunk_feed(body, n, plan, nplan, max_body, max_trailer, &split);
    ASSERT(whole.rc == split.rc && whole.status == split.status);
    if (whole.rc == JJ_HTTP_OK) {
        ASSERT(whole.out == split.out && whole.tail == split.tail);
        ASSERT(memcmp(whole.buf, split.buf, whole.out + whole.tail) == 0);
        ASSERT(whole.out + whole.tail <= n);
        /* the tail is the input's last bytes, untouched */
        ASSERT(memcmp(whole.buf + whole.out, body + n - whole.tail, whole.tail) == 0);
    }
    uint8_t *ref = malloc(n ? n : 1);
    size_t raw = 0, rlen = 0;
    int v = ref_chunked(body, n, max_body, max_trailer, &raw, ref, &rlen);
    if (v == 1) {
        ASSERT(whole.rc == JJ_HTTP_OK);
        ASSERT(raw == n - whole.tail && rlen == whole.out && memcmp(ref, whole.buf, rlen) == 0);
    } else if (v == 0) {
        ASSERT(whole.rc == JJ_HTTP_ERROR);
    } else {
        ASSERT(whole.rc != JJ_HTTP_OK);
    }
    free(ref);
    free(whole.buf);
    free(split.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const size_t limits[] = {0, 1, 16, 64, 256, 1024, 8192, SIZE_MAX};
    for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) fuzz_parse(data, size, limits[i]);
    if (size > 0) fuzz_parse(data, size, size / 2 + (size_t)data[0] % 8);
    fuzz_url_decode(data, size);
    if (size >= 2) {
        const char *t = jj_http_status_text(data[0] << 8 | data[1]);
        ASSERT(t != NULL && t[0] != '\0');
    }

    /* As a chunked body: after the head when it is a chunked request, else
     * the bytes after a 4-byte prefix choosing the limits and the reads. */
    static const size_t body_limits[] = {0, 1, 5, 16, 100, 4096, 1 << 20, SIZE_MAX};
    int st;
    const char *why;
    if (jj_http_parse_request((const char *)data, size, 16384, &req, &st, &why) == JJ_HTTP_OK && req.chunked) {
        fuzz_chunked(data + req.head_len, size - req.head_len, data, req.head_len, 4096, 16384);
    } else if (size >= 4) {
        fuzz_chunked(data + 4, size - 4, data + 2, 2, body_limits[data[0] % 8], body_limits[data[1] % 8]);
    }
    return 0;
}
