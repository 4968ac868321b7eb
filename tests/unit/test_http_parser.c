/* test_http_parser.c: request head parsing, framing rules, URL decoding. */
#include "http_parser.h"
#include "jj_test.h"

#include <stdlib.h>

#define BIG 65536

static jj_http_request req;

static int parse_n(const char *s, size_t n, size_t max_head, int *st, const char **why) {
    *st = 0;
    *why = NULL;
    return jj_http_parse_request(s, n, max_head, &req, st, why);
}

static int parse(const char *s, int *st, const char **why) {
    return parse_n(s, strlen(s), BIG, st, why);
}

/* Checks the outcome and prints the offending request when it differs, since
 * the CHECK line alone does not say which table entry failed. */
static void expect_status(const char *s, size_t n, int want_rc, int want_status) {
    int st;
    const char *why;
    int rc = parse_n(s, n, BIG, &st, &why);
    int ok = rc == want_rc && (want_rc != JJ_HTTP_ERROR || st == want_status);
    if (want_rc == JJ_HTTP_ERROR) ok = ok && why != NULL && why[0] != '\0';
    if (!ok) {
        fprintf(stderr, "request: \"");
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)s[i];
            if (c >= 0x20 && c < 0x7f) fputc(c, stderr);
            else fprintf(stderr, "\\x%02x", c);
        }
        fprintf(stderr, "\" -> rc %d status %d (%s)\n", rc, st, why ? why : "-");
    }
    CHECK(ok);
}

static void expect_error(const char *s, int status) { expect_status(s, strlen(s), JJ_HTTP_ERROR, status); }
static void expect_ok(const char *s) { expect_status(s, strlen(s), JJ_HTTP_OK, 0); }

static void test_simple_get(void) {
    const char *s = "GET /index.html HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n"
                    "Accept: */*\r\n\r\n";
    int st;
    const char *why;
    CHECK_INT(parse(s, &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.method, req.method_len, "GET");
    CHECK_MEM(req.target, req.target_len, "/index.html");
    CHECK_MEM(req.path, req.path_len, "/index.html");
    CHECK(req.query == NULL);
    CHECK_INT(req.query_len, 0);
    CHECK_INT(req.minor_version, 1);
    CHECK_INT(req.nheaders, 3);
    CHECK_MEM(req.headers[0].name, req.headers[0].name_len, "Host");
    CHECK_MEM(req.headers[0].value, req.headers[0].value_len, "example.com");
    CHECK_MEM(req.headers[2].name, req.headers[2].name_len, "Accept");
    CHECK_MEM(req.headers[2].value, req.headers[2].value_len, "*/*");
    CHECK_INT(req.head_len, strlen(s));
    CHECK_INT(req.content_length, -1);
    CHECK_INT(req.chunked, 0);
    CHECK_INT(req.keep_alive, 1);
    CHECK_INT(req.expect_continue, 0);
}

static const char *valid_requests[] = {
    "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET /a/b?x=1&y=%20 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\n"
    "Accept: */*\r\nAccept-Encoding: gzip, br\r\nCookie: a=b; c=d\r\n"
    "X-Empty:\r\nX-Ows: \t v \t\r\nConnection: keep-alive\r\n\r\n",
    "POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    "GET / HTTP/1.1\nHost: a\n\n",
    "\r\n\n\r\nGET / HTTP/1.0\r\n\r\n",
    "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    "GET http://a.example/p?q HTTP/1.1\r\nHost: a.example\r\n\r\n",
    "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
};

static void test_every_prefix_is_incomplete(void) {
    for (size_t r = 0; r < sizeof valid_requests / sizeof *valid_requests; r++) {
        const char *s = valid_requests[r];
        size_t n = strlen(s);
        for (size_t k = 0; k < n; k++) {
            /* A private copy per prefix so ASan/valgrind catch any read past k. */
            char *copy = malloc(k ? k : 1);
            memcpy(copy, s, k);
            expect_status(copy, k, JJ_HTTP_INCOMPLETE, 0);
            free(copy);
        }
        expect_status(s, n, JJ_HTTP_OK, 0);
        CHECK_INT(req.head_len, n);
    }
}

static void test_pipelined_requests(void) {
    const char *s = "GET /one HTTP/1.1\r\nHost: a\r\n\r\n"
                    "GET /two?x HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n";
    size_t n = strlen(s);
    int st;
    const char *why;
    CHECK_INT(parse_n(s, n, BIG, &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.path, req.path_len, "/one");
    CHECK_INT(req.keep_alive, 1);
    size_t first = req.head_len;
    CHECK_INT(first, strlen("GET /one HTTP/1.1\r\nHost: a\r\n\r\n"));
    CHECK_INT(parse_n(s + first, n - first, BIG, &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.path, req.path_len, "/two");
    CHECK_MEM(req.query, req.query_len, "x");
    CHECK_MEM(req.headers[0].value, req.headers[0].value_len, "b");
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(first + req.head_len, n);
}

static void test_bytes_after_head_are_ignored(void) {
    const char *s = "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n\x01\x02\x03 garbage";
    int st;
    const char *why;
    CHECK_INT(parse(s, &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.head_len, strlen("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"));
    CHECK_INT(req.content_length, 3);
}

static void test_bare_lf_line_endings(void) {
    int st;
    const char *why;
    const char *s = "GET /x HTTP/1.1\nHost: a\nX: y\n\n";
    CHECK_INT(parse(s, &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.nheaders, 2);
    CHECK_MEM(req.headers[1].value, req.headers[1].value_len, "y");
    CHECK_INT(req.head_len, strlen(s));
    /* mixed endings */
    CHECK_INT(parse("GET /x HTTP/1.1\r\nHost: a\nX: y\r\n\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.nheaders, 2);
    CHECK_MEM(req.headers[0].value, req.headers[0].value_len, "a");
}

static void test_leading_empty_lines_skipped_and_counted(void) {
    int st;
    const char *why;
    const char *s = "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_INT(parse(s, &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.method, req.method_len, "GET");
    CHECK_INT(req.head_len, strlen(s));
    s = "\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    CHECK_INT(parse(s, &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.head_len, strlen(s));
    expect_status("\r\n\r\n", 4, JJ_HTTP_INCOMPLETE, 0);
    expect_error("\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

static void test_http10_keep_alive_rules(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET / HTTP/1.0\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.minor_version, 0);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 1);
    CHECK_INT(parse("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(parse("GET / HTTP/1.0\r\nConnection: foo\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
}

static void test_connection_close(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade ,  CLOSE \r\n\r\n", &st, &why),
              JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: x\r\nConnection: close\r\n\r\n", &st, &why),
              JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 0);
    /* "closed" is a different token */
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 1);
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.keep_alive, 1);
}

static void test_header_value_ows_trimmed(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost:a\r\nX:  \t a  b \t \r\nY:\r\nZ:   \r\n\r\n", &st, &why),
              JJ_HTTP_OK);
    CHECK_MEM(req.headers[0].value, req.headers[0].value_len, "a");
    CHECK_MEM(req.headers[1].value, req.headers[1].value_len, "a  b");
    CHECK_INT(req.headers[2].value_len, 0);
    CHECK_INT(req.headers[3].value_len, 0);
}

static void test_obs_text_allowed(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: a\r\nX: \x80\xff\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.path, req.path_len, "/caf\xc3\xa9");
    CHECK_MEM(req.headers[1].value, req.headers[1].value_len, "\x80\xff");
}

static void test_tolerated_variants(void) {
    expect_ok("M-SEARCH /x HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_ok("GET / HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: x\r\n\r\n");
    expect_ok("PURGE /a;b=c/d,e!$&'()*+=:@-._~%20 HTTP/1.1\r\nHost: a\r\n\r\n");
    expect_ok("GET / HTTP/1.1\r\nHost: a\r\nX: \"q\" (c) \t tab\r\n\r\n");
    expect_ok("GET / HTTP/1.0\r\n\r\n");                     /* Host optional in 1.0 */
    expect_ok("GET / HTTP/1.1\r\nHost:\r\n\r\n");             /* empty Host is allowed */
    expect_ok("GET / HTTP/1.1\r\nHost: a\r\nHostname: b\r\nHost-X: c\r\n\r\n");
}

static void test_malformed_requests_are_400(void) {
    static const char *cases[] = {
        " / HTTP/1.1\r\nHost: a\r\n\r\n",                      /* empty method */
        "G(T / HTTP/1.1\r\nHost: a\r\n\r\n",                   /* invalid method */
        "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n",                  /* HTAB is not SP */
        "GET  HTTP/1.1\r\nHost: a\r\n\r\n",                    /* empty target */
        "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",                  /* double SP */
        "GET /a\x01z HTTP/1.1\r\nHost: a\r\n\r\n",             /* CTL in target */
        "GET /a\x7fz HTTP/1.1\r\nHost: a\r\n\r\n",             /* DEL in target */
        "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n",               /* HTAB in target */
        "GET foo HTTP/1.1\r\nHost: a\r\n\r\n",                 /* not origin-form */
        "GET * HTTP/1.1\r\nHost: a\r\n\r\n",                   /* '*' only for OPTIONS */
        "options * HTTP/1.1\r\nHost: a\r\n\r\n",               /* methods are case-sensitive */
        "CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n", /* authority-form */
        "GET /\r\n\r\n",                                       /* HTTP/0.9 simple request */
        "GET / \r\n\r\n",                                      /* empty version */
        "GET / http/1.1\r\nHost: a\r\n\r\n",                   /* version is case-sensitive */
        "GET / HTTP/1.1 \r\nHost: a\r\n\r\n",                  /* trailing SP */
        "GET / HTTP/1.10\r\nHost: a\r\n\r\n",
        "GET / HTTP/1\r\nHost: a\r\n\r\n",
        "GET / HTTP/x.1\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.1\rHost: a\r\n\r\n",                     /* CR without LF */
        "GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n",     /* obs-fold */
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n",
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",                  /* whitespace before first field */
        "GET / HTTP/1.1\r\nHost : a\r\n\r\n",                  /* whitespace before colon */
        "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n",            /* empty name */
        "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nBad(Name): x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nBad/Name: x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n",      /* CTL in value */
        "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7fz\r\n\r\n",      /* DEL in value */
        "GET / HTTP/1.1\r\n\r\n",                              /* missing Host */
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",        /* two Hosts */
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12a\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", /* Host mismatch */
        "GET http://a.example/ HTTP/1.0\r\n\r\n",
        "GET http://u@a.example/ HTTP/1.1\r\nHost: u@a.example\r\n\r\n",
        "GET http://a.example HTTP/1.1\r\nHost: a.example\r\n\r\n",
        "GET http:///x HTTP/1.1\r\nHost: \r\n\r\n",
        "GET ftp://a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) expect_error(cases[i], 400);
    /* NUL bytes cannot go through strlen-based helpers. */
    static const char nul_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n";
    expect_status(nul_value, sizeof nul_value - 1, JJ_HTTP_ERROR, 400);
    static const char nul_target[] = "GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n";
    expect_status(nul_target, sizeof nul_target - 1, JJ_HTTP_ERROR, 400);
}

static void test_reason_strings(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET / HTTP/1.1\r\n\r\n", &st, &why), JJ_HTTP_ERROR);
    CHECK_STR(why, "missing Host header");
    CHECK_INT(parse("GET / HTTP/1.1\r\nBad(: x\r\n\r\n", &st, &why), JJ_HTTP_ERROR);
    CHECK_STR(why, "invalid header name");
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost : x\r\n\r\n", &st, &why), JJ_HTTP_ERROR);
    CHECK_STR(why, "whitespace before colon");
    /* status and reason are optional */
    CHECK_INT(jj_http_parse_request("GET / HTTP/1.1\r\n\r\n", 18, BIG, &req, NULL, NULL), JJ_HTTP_ERROR);
}

static void test_content_length_with_transfer_encoding_is_400(void) {
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400);
    /* smuggling defence wins over "unsupported coding" */
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n", 400);
}

static void test_duplicate_content_length_is_400(void) {
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
    /* equal duplicates too: a proxy in front may have read them differently */
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\ncontent-length: 05\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n", 400);
}

static void test_content_length_values(void) {
    int st;
    const char *why;
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.content_length, 0);
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\ncontent-LENGTH:  42 \r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.content_length, 42);
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775807\r\n\r\n",
                    &st, &why), JJ_HTTP_OK);
    CHECK(req.content_length == INT64_MAX);
}

static void test_content_length_overflow_is_400(void) {
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 9223372036854775808\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551621\r\n\r\n", 400);
}

static void test_chunked_detection(void) {
    int st;
    const char *why;
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.chunked, 1);
    CHECK_INT(req.content_length, -1);
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding:  CHUNKED \r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.chunked, 1);
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: ,chunked,\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.chunked, 1);
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.chunked, 0);
}

static void test_chunked_not_last_is_400(void) {
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400);
    /* the list continues across header lines */
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
}

static void test_unsupported_transfer_coding_is_501(void) {
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\n\r\n", 501);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: x-unknown\r\n\r\n", 501);
    expect_error("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;ext=1\r\n\r\n", 501);
}

static void test_unsupported_version_is_505(void) {
    expect_error("GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505);
    expect_error("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505);
    expect_error("GET / HTTP/0.9\r\n\r\n", 505);
    expect_error("GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505);
    expect_error("GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505);
    /* reported as soon as the request line is complete */
    expect_error("GET / HTTP/2.0\r\n", 505);
}

static void test_head_larger_than_max_head_is_431(void) {
    const char *s = "GET / HTTP/1.1\r\nHost: a\r\nX-Long: aaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    size_t n = strlen(s);
    int st;
    const char *why;
    CHECK_INT(parse_n(s, n, n, &st, &why), JJ_HTTP_OK);          /* exactly max_head */
    CHECK_INT(parse_n(s, n, n - 1, &st, &why), JJ_HTTP_ERROR);   /* complete but too long */
    CHECK_INT(st, 431);
    CHECK(why != NULL);
    CHECK_INT(parse_n(s, 30, 20, &st, &why), JJ_HTTP_ERROR);     /* incomplete, already too long */
    CHECK_INT(st, 431);
    CHECK_INT(parse_n(s, 20, 20, &st, &why), JJ_HTTP_ERROR);     /* buffer full, still incomplete */
    CHECK_INT(st, 431);
    CHECK_INT(parse_n(s, 19, 20, &st, &why), JJ_HTTP_INCOMPLETE);
    /* Leading empty lines count towards the limit too. */
    char lines[200];
    memset(lines, '\n', sizeof lines);
    CHECK_INT(parse_n(lines, sizeof lines, 100, &st, &why), JJ_HTTP_ERROR);
    CHECK_INT(st, 431);
    /* A syntax error found within the limit is still a 400. */
    CHECK_INT(parse_n("G(T / HTTP/1.1\r\n", 16, 8, &st, &why), JJ_HTTP_ERROR);
    CHECK_INT(st, 400);
}

static void test_too_many_headers_is_431(void) {
    static char buf[8192];
    size_t n = (size_t)snprintf(buf, sizeof buf, "GET / HTTP/1.1\r\nHost: a\r\n");
    for (int i = 1; i < JJ_HTTP_MAX_HEADERS; i++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, "X-%d: v\r\n", i);
    memcpy(buf + n, "\r\n", 3);
    expect_status(buf, n + 2, JJ_HTTP_OK, 0);
    CHECK_INT(req.nheaders, JJ_HTTP_MAX_HEADERS);
    n += (size_t)snprintf(buf + n, sizeof buf - n, "X-last: v\r\n\r\n");
    expect_status(buf, n, JJ_HTTP_ERROR, 431);
}

static void test_expect_continue(void) {
    int st;
    const char *why;
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n",
                    &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.expect_continue, 1);
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\nexpect:  100-Continue \r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.expect_continue, 1);
    CHECK_INT(parse("POST / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.expect_continue, 0);
    /* RFC 9110 10.1.1: a 100-continue in an HTTP/1.0 request is ignored */
    CHECK_INT(parse("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_INT(req.expect_continue, 0);
}

static void test_query_split(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: a\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.target, req.target_len, "/a/b?x=1&y=2");
    CHECK_MEM(req.path, req.path_len, "/a/b");
    CHECK_MEM(req.query, req.query_len, "x=1&y=2");
    CHECK_INT(parse("GET /? HTTP/1.1\r\nHost: a\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.path, req.path_len, "/");
    CHECK(req.query != NULL);
    CHECK_INT(req.query_len, 0);
    CHECK_INT(parse("GET /p?a?b HTTP/1.1\r\nHost: a\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.path, req.path_len, "/p");
    CHECK_MEM(req.query, req.query_len, "a?b");
    CHECK_INT(parse("GET /plain HTTP/1.1\r\nHost: a\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK(req.query == NULL);
    CHECK_INT(req.query_len, 0);
}

static void test_absolute_form_points_at_origin_part(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET http://Example.com:8080/x/y?z=1 HTTP/1.1\r\nHost: example.COM:8080\r\n\r\n",
                    &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.target, req.target_len, "/x/y?z=1");
    CHECK_MEM(req.path, req.path_len, "/x/y");
    CHECK_MEM(req.query, req.query_len, "z=1");
    CHECK_INT(parse("GET HTTPS://a/ HTTP/1.1\r\nHost: a\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.path, req.path_len, "/");
}

static void test_options_asterisk(void) {
    int st;
    const char *why;
    CHECK_INT(parse("OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", &st, &why), JJ_HTTP_OK);
    CHECK_MEM(req.target, req.target_len, "*");
    CHECK_MEM(req.path, req.path_len, "*");
    CHECK(req.query == NULL);
}

static void test_url_decode(void) {
    char out[64];
    CHECK_INT(jj_http_url_decode(out, "%41%62c", 7, 0), 3);
    CHECK_MEM(out, 3, "Abc");
    CHECK_INT(jj_http_url_decode(out, "%2f%2F", 6, 0), 2);
    CHECK_MEM(out, 2, "//");
    CHECK_INT(jj_http_url_decode(out, "%e2%82%AC", 9, 0), 3);
    CHECK_MEM(out, 3, "\xe2\x82\xac");
    CHECK_INT(jj_http_url_decode(out, "a+b", 3, 1), 3);
    CHECK_MEM(out, 3, "a b");
    CHECK_INT(jj_http_url_decode(out, "a+b", 3, 0), 3);
    CHECK_MEM(out, 3, "a+b");
    CHECK_INT(jj_http_url_decode(out, "%2B", 3, 1), 1);   /* an encoded '+' stays '+' */
    CHECK_MEM(out, 1, "+");
    CHECK_INT(jj_http_url_decode(out, "", 0, 1), 0);
    CHECK_INT(jj_http_url_decode(out, "%", 1, 0), -1);
    CHECK_INT(jj_http_url_decode(out, "ab%4", 4, 0), -1);
    CHECK_INT(jj_http_url_decode(out, "%zz", 3, 0), -1);
    CHECK_INT(jj_http_url_decode(out, "%4g", 3, 0), -1);
    CHECK_INT(jj_http_url_decode(out, "%00", 3, 0), -1);   /* decoded NUL */
    CHECK_INT(jj_http_url_decode(out, "a\0b", 3, 0), -1);  /* raw NUL */
    /* only len bytes are read: the escape is cut by len */
    CHECK_INT(jj_http_url_decode(out, "%41", 2, 0), -1);
    char inplace[] = "/a%20b/%7Euser?x+y";
    long n = jj_http_url_decode(inplace, inplace, strlen(inplace), 1);
    CHECK_INT(n, 14);
    CHECK_MEM(inplace, (size_t)n, "/a b/~user?x y");
}

static void test_find_header_is_case_insensitive(void) {
    int st;
    const char *why;
    CHECK_INT(parse("GET / HTTP/1.1\r\nHost: a\r\nX-Cache-Key: one\r\nx-cache-key: two\r\n"
                    "Content-Type: text/plain\r\n\r\n", &st, &why), JJ_HTTP_OK);
    const jj_http_header *h = jj_http_find_header(&req, "x-CACHE-key");
    CHECK(h != NULL);
    if (h) CHECK_MEM(h->value, h->value_len, "one");
    h = jj_http_find_header(&req, "CONTENT-TYPE");
    CHECK(h != NULL);
    if (h) CHECK_MEM(h->value, h->value_len, "text/plain");
    CHECK(jj_http_find_header(&req, "host") == &req.headers[0]);
    CHECK(jj_http_find_header(&req, "Content-Typ") == NULL);
    CHECK(jj_http_find_header(&req, "Content-Types") == NULL);
    CHECK(jj_http_find_header(&req, "Missing") == NULL);
}

static void test_status_text(void) {
    static const int codes[] = {100, 101, 200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308,
                                400, 401, 403, 404, 405, 406, 408, 409, 410, 411, 412, 413, 414,
                                415, 422, 429, 431, 500, 501, 502, 503, 504, 505};
    for (size_t i = 0; i < sizeof codes / sizeof *codes; i++) {
        const char *t = jj_http_status_text(codes[i]);
        if (!t || strcmp(t, "Unknown") == 0) fprintf(stderr, "no reason phrase for %d\n", codes[i]);
        CHECK(t && strcmp(t, "Unknown") != 0);
    }
    CHECK_STR(jj_http_status_text(200), "OK");
    CHECK_STR(jj_http_status_text(304), "Not Modified");
    CHECK_STR(jj_http_status_text(404), "Not Found");
    CHECK_STR(jj_http_status_text(431), "Request Header Fields Too Large");
    CHECK_STR(jj_http_status_text(505), "HTTP Version Not Supported");
    CHECK_STR(jj_http_status_text(999), "Unknown");
    CHECK_STR(jj_http_status_text(-1), "Unknown");
}

static void test_empty_buffer_is_incomplete(void) {
    int st;
    const char *why;
    CHECK_INT(parse_n("", 0, BIG, &st, &why), JJ_HTTP_INCOMPLETE);
    CHECK_INT(parse_n(NULL, 0, BIG, &st, &why), JJ_HTTP_INCOMPLETE);
}

int main(void) {
    test_simple_get();
    test_every_prefix_is_incomplete();
    test_pipelined_requests();
    test_bytes_after_head_are_ignored();
    test_bare_lf_line_endings();
    test_leading_empty_lines_skipped_and_counted();
    test_http10_keep_alive_rules();
    test_connection_close();
    test_header_value_ows_trimmed();
    test_obs_text_allowed();
    test_tolerated_variants();
    test_malformed_requests_are_400();
    test_reason_strings();
    test_content_length_with_transfer_encoding_is_400();
    test_duplicate_content_length_is_400();
    test_content_length_values();
    test_content_length_overflow_is_400();
    test_chunked_detection();
    test_chunked_not_last_is_400();
    test_unsupported_transfer_coding_is_501();
    test_unsupported_version_is_505();
    test_head_larger_than_max_head_is_431();
    test_too_many_headers_is_431();
    test_expect_continue();
    test_query_split();
    test_absolute_form_points_at_origin_part();
    test_options_asterisk();
    test_url_decode();
    test_find_header_is_case_insensitive();
    test_status_text();
    test_empty_buffer_is_incomplete();
    return jj_test_done();
}
