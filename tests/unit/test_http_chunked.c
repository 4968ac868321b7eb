/* test_http_chunked.c: chunked request bodies, decoded in place; every case
 * is fed whole, byte by byte and split at every byte boundary, and must give
 * the same verdict, body and trailing bytes each time. */
#include "http_chunked.h"
#include "jj_test.h"

#include <stdlib.h>

#define BIG ((size_t)1 << 20)

typedef struct {
    int rc, status;
    const char *reason;
    char body[8192];
    size_t body_len;
    char tail[512];              /* bytes after the body: buffer rest + not yet fed */
    size_t tail_len;
    size_t max_len;              /* most bytes the buffer held at once */
} outcome;

/* Feeds s in pieces ending at the offsets in cuts (ascending, then n). */
static void feed(const char *s, size_t n, const size_t *cuts, size_t ncuts, size_t max_body,
                 size_t max_trailer, outcome *o) {
    char *buf = malloc(n + 1);
    size_t len = 0, fed = 0;
    jj_http_chunked d;
    jj_http_chunked_init(&d);
    memset(o, 0, sizeof *o);
    o->rc = JJ_HTTP_INCOMPLETE;
    for (size_t k = 0; k <= ncuts && o->rc == JJ_HTTP_INCOMPLETE; k++) {
        size_t upto = k < ncuts ? cuts[k] : n;
        if (upto < fed) continue;
        memcpy(buf + len, s + fed, upto - fed);
        len += upto - fed;
        fed = upto;
        if (len > o->max_len) o->max_len = len;
        o->rc = jj_http_chunked_decode(&d, buf, &len, max_body, max_trailer, &o->status, &o->reason);
        CHECK(d.out <= len);
    }
    o->body_len = d.out;
    if (o->rc == JJ_HTTP_OK) {
        memcpy(o->body, buf, d.out < sizeof o->body ? d.out : sizeof o->body);
        size_t t = len - d.out;
        memcpy(o->tail, buf + d.out, t);
        memcpy(o->tail + t, s + fed, n - fed);
        o->tail_len = t + n - fed;
        /* a finished decoder repeats itself */
        size_t len2 = len;
        int st = 0;
        CHECK_INT(jj_http_chunked_decode(&d, buf, &len2, max_body, max_trailer, &st, NULL), JJ_HTTP_OK);
        CHECK_INT(len2, len);
    } else if (o->rc == JJ_HTTP_ERROR) {
        size_t len2 = len;
        int st = 0;
        CHECK_INT(jj_http_chunked_decode(&d, buf, &len2, max_body, max_trailer, &st, NULL), JJ_HTTP_ERROR);
        CHECK_INT(st, o->status);
    }
    free(buf);
}

static void show(const char *s, size_t n) {
    fputc('"', stderr);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) fputc(c, stderr);
        else fprintf(stderr, "\\x%02x", c);
    }
    fputc('"', stderr);
}

static int same(const outcome *a, const outcome *b) {
    if (a->rc != b->rc) return 0;
    if (a->rc == JJ_HTTP_ERROR) return a->status == b->status && strcmp(a->reason, b->reason) == 0;
    size_t bl = a->body_len < sizeof a->body ? a->body_len : sizeof a->body;
    return a->body_len == b->body_len && memcmp(a->body, b->body, bl) == 0 &&
           a->tail_len == b->tail_len && memcmp(a->tail, b->tail, a->tail_len) == 0;
}

/* want_rc OK: body and tail must match; ERROR: status must match. */
static void expect_lim(const char *s, size_t n, size_t max_body, size_t max_trailer, int want_rc,
                       int want_status, const char *body, const char *tail) {
    outcome whole, o;
    feed(s, n, NULL, 0, max_body, max_trailer, &whole);
    int ok = whole.rc == want_rc;
    if (ok && want_rc == JJ_HTTP_ERROR) ok = whole.status == want_status && whole.reason && whole.reason[0];
    if (ok && want_rc == JJ_HTTP_OK)
        ok = whole.body_len == strlen(body) && memcmp(whole.body, body, whole.body_len) == 0 &&
             whole.tail_len == strlen(tail) && memcmp(whole.tail, tail, whole.tail_len) == 0;
    if (!ok) {
        fprintf(stderr, "body ");
        show(s, n);
        fprintf(stderr, " -> rc %d status %d (%s) body ", whole.rc, whole.status,
                whole.reason ? whole.reason : "-");
        show(whole.body, whole.body_len);
        fprintf(stderr, " tail ");
        show(whole.tail, whole.tail_len);
        fputc('\n', stderr);
    }
    CHECK(ok);

    /* byte by byte */
    size_t *cuts = malloc((n + 1) * sizeof *cuts);
    for (size_t i = 0; i < n; i++) cuts[i] = i + 1;
    feed(s, n, cuts, n, max_body, max_trailer, &o);
    if (!same(&whole, &o)) { fprintf(stderr, "byte by byte differs: "); show(s, n); fputc('\n', stderr); }
    CHECK(same(&whole, &o));
    /* the buffer holds the decoded body plus at most one byte more */
    if (o.rc == JJ_HTTP_INCOMPLETE) CHECK(o.max_len <= o.body_len + 1);
    /* two pieces, split at every byte boundary */
    int all = 1;
    for (size_t k = 0; k <= n; k++) {
        cuts[0] = k;
        feed(s, n, cuts, 1, max_body, max_trailer, &o);
        if (!same(&whole, &o)) {
            fprintf(stderr, "split at %zu differs: ", k);
            show(s, n);
            fputc('\n', stderr);
            all = 0;
        }
    }
    CHECK(all);
    free(cuts);
}

static void expect_body(const char *s, const char *body, const char *tail) {
    expect_lim(s, strlen(s), BIG, 16384, JJ_HTTP_OK, 0, body, tail);
}
static void expect_error(const char *s, int status) {
    expect_lim(s, strlen(s), BIG, 16384, JJ_HTTP_ERROR, status, NULL, NULL);
}
static void expect_incomplete(const char *s) {
    expect_lim(s, strlen(s), BIG, 16384, JJ_HTTP_INCOMPLETE, 0, NULL, NULL);
}

static void test_decodes_chunks(void) {
    expect_body("0\r\n\r\n", "", "");
    expect_body("5\r\nhello\r\n0\r\n\r\n", "hello", "");
    expect_body("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world", "");
    expect_body("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n", "abc", "");
    expect_body("A\r\n0123456789\r\n0\r\n\r\n", "0123456789", "");
    expect_body("a\r\n0123456789\r\n0\r\n\r\n", "0123456789", "");
    expect_body("00005\r\nhello\r\n000\r\n\r\n", "hello", "");
    /* data is opaque: CR, LF, NUL and digits inside it are just data */
    expect_lim("4\r\n\r\n0\n\r\n0\r\n\r\n", 14, BIG, 16384, JJ_HTTP_OK, 0, "\r\n0\n", "");
}

static void test_body_with_nul(void) {
    const char s[] = "3\r\na\0b\r\n0\r\n\r\n";
    outcome o;
    feed(s, sizeof s - 1, NULL, 0, BIG, 16384, &o);
    CHECK_INT(o.rc, JJ_HTTP_OK);
    CHECK_INT(o.body_len, 3);
    CHECK(memcmp(o.body, "a\0b", 3) == 0);
}

static void test_pipelined_bytes_after_the_body_are_kept(void) {
    expect_body("5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n", "hello", "GET / HTTP/1.1\r\n\r\n");
    expect_body("0\r\n\r\n0\r\n\r\n", "", "0\r\n\r\n");
    expect_body("1\r\nx\r\n0\r\nA: b\r\n\r\nX", "x", "X");
}

static void test_extensions_are_ignored(void) {
    expect_body("5;name=value\r\nhello\r\n0\r\n\r\n", "hello", "");
    expect_body("5 ; name = \"quoted; \\\" value\"\r\nhello\r\n0;last\r\n\r\n", "hello", "");
    expect_body("5\t;a\r\nhello\r\n0\r\n\r\n", "hello", "");
    expect_body("5;\r\nhello\r\n0\r\n\r\n", "hello", "");
    expect_body("5;\xc3\xa9\r\nhello\r\n0\r\n\r\n", "hello", "");
    expect_error("5;a\x01\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("5;a\x7f\r\nhello\r\n0\r\n\r\n", 400);
    /* a chunk-size line is bounded even though its extension is skipped */
    char *big = malloc(JJ_HTTP_CHUNK_LINE_MAX + 64);
    strcpy(big, "1;");
    memset(big + 2, 'x', JJ_HTTP_CHUNK_LINE_MAX - 4);          /* line = MAX bytes with CRLF */
    strcpy(big + JJ_HTTP_CHUNK_LINE_MAX - 2, "\r\nz\r\n0\r\n\r\n");
    outcome o;
    feed(big, strlen(big), NULL, 0, BIG, 16384, &o);
    CHECK_INT(o.rc, JJ_HTTP_OK);
    strcpy(big, "1;");
    memset(big + 2, 'x', JJ_HTTP_CHUNK_LINE_MAX - 3);          /* one byte more */
    strcpy(big + JJ_HTTP_CHUNK_LINE_MAX - 1, "\r\nz\r\n0\r\n\r\n");
    feed(big, strlen(big), NULL, 0, BIG, 16384, &o);
    CHECK_INT(o.rc, JJ_HTTP_ERROR);
    CHECK_INT(o.status, 400);
    free(big);
}

static void test_trailers_are_dropped(void) {
    expect_body("5\r\nhello\r\n0\r\nExpires: never\r\n\r\n", "hello", "");
    expect_body("5\r\nhello\r\n0\r\nA: 1\r\nB-c:\r\nD:  x y \t\r\n\r\n", "hello", "");
    expect_error("5\r\nhello\r\n0\r\nA: 1\r\n folded\r\n\r\n", 400);
    expect_error("5\r\nhello\r\n0\r\nno colon\r\n\r\n", 400);
    expect_error("5\r\nhello\r\n0\r\n: empty name\r\n\r\n", 400);
    expect_error("5\r\nhello\r\n0\r\nA : space before colon\r\n\r\n", 400);
    expect_error("5\r\nhello\r\n0\r\nA: b\x01\r\n\r\n", 400);
    expect_error("5\r\nhello\r\n0\r\nA: b\n\r\n", 400);
    expect_error("5\r\nhello\r\n0\r\nA: b\r\n\n", 400);
    expect_error("5\r\nhello\r\n0\r\nA: b\rX\r\n\r\n", 400);
    /* the trailer section is bounded (431), counted with its final CRLF */
    const char *s = "0\r\nA: 12345\r\n\r\n";              /* trailer: 10 + 2 bytes */
    expect_lim(s, strlen(s), BIG, 12, JJ_HTTP_OK, 0, "", "");
    expect_lim(s, strlen(s), BIG, 11, JJ_HTTP_ERROR, 431, NULL, NULL);
    expect_lim("0\r\n\r\n", 5, BIG, 2, JJ_HTTP_OK, 0, "", "");
    expect_lim("0\r\n\r\n", 5, BIG, 1, JJ_HTTP_ERROR, 431, NULL, NULL);
}

static void test_bad_sizes_are_400(void) {
    expect_error("\r\n", 400);
    expect_error("x\r\nhello\r\n0\r\n\r\n", 400);
    expect_error(" 5\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("+5\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("-5\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("0x5\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("5g\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("5 5\r\nhello\r\n0\r\n\r\n", 400);
    expect_error(";ext\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("5,\r\nhello\r\n0\r\n\r\n", 400);
    expect_error("5\r\nhello\r\nz\r\n\r\n", 400);
}

static void test_overflowing_sizes_are_400(void) {
    /* INT64_MAX fits (then 413: far past any body limit); one more digit overflows */
    expect_error("7fffffffffffffff\r\n", 413);
    expect_error("8000000000000000\r\n", 400);
    expect_error("ffffffffffffffff\r\n", 400);
    expect_error("10000000000000000\r\n", 400);
    expect_error("ffffffffffffffffffffffffffffffff1\r\nx\r\n0\r\n\r\n", 400);
    expect_body("0000000000000000000000000000000005\r\nhello\r\n0\r\n\r\n", "hello", "");
}

static void test_missing_crlf_is_400(void) {
    expect_error("5\nhello\r\n0\r\n\r\n", 400);          /* bare LF after the size */
    expect_error("5\rhello\r\n0\r\n\r\n", 400);          /* CR without LF */
    expect_error("5;a\nhello\r\n0\r\n\r\n", 400);
    expect_error("5\r\nhelloX\r\n0\r\n\r\n", 400);       /* data longer than its size */
    expect_error("5\r\nhello\n0\r\n\r\n", 400);
    expect_error("5\r\nhello\r0\r\n\r\n", 400);
    expect_error("5\r\nhello0\r\n\r\n", 400);
    expect_error("0\r\n\n", 400);
    expect_error("0\r\n\rX", 400);
    expect_error("0\n\n", 400);
    expect_error("5\r\nhell\r\n\r\n0\r\n\r\n", 400);     /* "hell\r" + "\n\r" is not CRLF */
}

static void test_incomplete_bodies(void) {
    expect_incomplete("");
    expect_incomplete("5");
    expect_incomplete("5\r\nhel");
    expect_incomplete("5\r\nhello\r\n");
    expect_incomplete("5\r\nhello\r\n0\r\n");
    expect_incomplete("5\r\nhello\r\n0\r\nA: b\r\n");
    expect_incomplete("5;ext=\"unterminated");
}

static void test_max_body_is_enforced_on_the_decoded_size(void) {
    const char *s = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    expect_lim(s, strlen(s), 11, 16384, JJ_HTTP_OK, 0, "hello world", "");
    expect_lim(s, strlen(s), 10, 16384, JJ_HTTP_ERROR, 413, NULL, NULL);
    expect_lim(s, strlen(s), 5, 16384, JJ_HTTP_ERROR, 413, NULL, NULL);
    expect_lim(s, strlen(s), 4, 16384, JJ_HTTP_ERROR, 413, NULL, NULL);
    expect_lim(s, strlen(s), 0, 16384, JJ_HTTP_ERROR, 413, NULL, NULL);
    expect_lim("0\r\n\r\n", 5, 0, 16384, JJ_HTTP_OK, 0, "", "");
    /* framing overhead does not count: 1-byte chunks of a body at the limit */
    expect_lim("1\r\na\r\n1\r\nb\r\n1\r\nc\r\n0\r\n\r\n", 23, 3, 16384, JJ_HTTP_OK, 0, "abc", "");
    /* 413 right after the digits: no data of that chunk needed */
    outcome o;
    feed("100000", 6, NULL, 0, 1024, 16384, &o);
    CHECK_INT(o.rc, JJ_HTTP_INCOMPLETE);     /* digits may go on */
    feed("100000;", 7, NULL, 0, 1024, 16384, &o);
    CHECK_INT(o.rc, JJ_HTTP_ERROR);
    CHECK_INT(o.status, 413);
    feed("100000\r", 7, NULL, 0, 1024, 16384, &o);
    CHECK_INT(o.rc, JJ_HTTP_ERROR);
    CHECK_INT(o.status, 413);
}

static void test_large_body_in_many_reads(void) {
    /* 300 chunks of 1..300 bytes fed in 7-byte reads: the buffer never holds
     * more than the decoded body and one read */
    size_t cap = 300 * (300 + 16) + 16, n = 0, want = 0;
    char *s = malloc(cap), *body = malloc(300 * 301 / 2);
    for (int k = 1; k <= 300; k++) {
        n += (size_t)sprintf(s + n, "%x;k=%d\r\n", k, k);
        for (int j = 0; j < k; j++) { s[n++] = (char)('a' + (k + j) % 26); body[want++] = s[n - 1]; }
        s[n++] = '\r';
        s[n++] = '\n';
    }
    n += (size_t)sprintf(s + n, "0\r\nX-Sum: %zu\r\n\r\n", want);
    size_t ncuts = n / 7;
    size_t *cuts = malloc((ncuts + 1) * sizeof *cuts);
    for (size_t i = 0; i < ncuts; i++) cuts[i] = (i + 1) * 7;
    outcome o;
    feed(s, n, cuts, ncuts, BIG, 16384, &o);
    CHECK_INT(o.rc, JJ_HTTP_OK);
    CHECK_INT(o.body_len, want);
    CHECK(memcmp(o.body, body, sizeof o.body) == 0);
    CHECK(o.max_len <= want + 7);
    CHECK_INT(o.tail_len, 0);
    free(cuts);
    free(s);
    free(body);
}

int main(void) {
    test_decodes_chunks();
    test_body_with_nul();
    test_pipelined_bytes_after_the_body_are_kept();
    test_extensions_are_ignored();
    test_trailers_are_dropped();
    test_bad_sizes_are_400();
    test_overflowing_sizes_are_400();
    test_missing_crlf_is_400();
    test_incomplete_bodies();
    test_max_body_is_enforced_on_the_decoded_size();
    test_large_body_in_many_reads();
    return jj_test_done();
}
