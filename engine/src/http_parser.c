/* http_parser.c: HTTP/1.x request head parser (RFC 9110 / RFC 9112).
 *
 * The parser keeps no state between calls: the connection calls it again
 * with the whole buffer after every read, and it re-derives everything in
 * one forward pass. It only decides on an error once the bytes seen so far
 * can no longer be the start of a valid head, so every prefix of a valid
 * request is JJ_HTTP_INCOMPLETE.
 *
 * Choices worth knowing about:
 *  - Bare LF is accepted as a line ending; a CR not followed by LF is not.
 *  - Request targets may carry raw bytes >= 0x80 (sloppy clients send raw
 *    UTF-8); controls, SP and DEL are rejected.
 *  - absolute-form (http://host/path, https://...) is accepted: target, path
 *    and query then point at the origin-form part ("/path?query"), and the
 *    authority must equal the Host header (case-insensitively). Without that
 *    rule the cache could key on a Host the client did not mean, which is a
 *    cache-poisoning vector. An absolute-form target without a path, or with
 *    userinfo, is rejected.
 *  - Framing is strict because this is where request smuggling happens:
 *    Content-Length must be plain digits and appear once, Content-Length +
 *    Transfer-Encoding is rejected, Transfer-Encoding in HTTP/1.0 is rejected, and the only
 *    supported transfer coding is a single final "chunked".
 *  - A second Host header is rejected (RFC 9112 3.2).
 */
#include "http_parser.h"

#include <string.h>
#include <strings.h>

enum { C_TOKEN = 1, C_VALUE = 2, C_TARGET = 4 };

/* C_TOKEN: RFC 9110 tchar. C_VALUE: field-value bytes (HTAB, SP, VCHAR,
 * obs-text). C_TARGET: request-target bytes other than '?' (VCHAR and
 * obs-text), so the target loop only leaves its fast path on '?'. */
static const unsigned char cls[256] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    2, 7, 6, 7, 7, 7, 7, 7, 6, 6, 7, 7, 6, 7, 7, 6,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 6, 6, 2,
    6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 6, 6, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 6, 7, 6, 7, 0,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
    6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6,
};

static inline unsigned char lower(unsigned char c) {
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + ('a' - 'A')) : c;
}

/* lit must already be lower case. */
static int eq_lit(const char *s, size_t n, const char *lit, size_t litlen) {
    if (n != litlen) return 0;
    for (size_t i = 0; i < n; i++)
        if (lower((unsigned char)s[i]) != (unsigned char)lit[i]) return 0;
    return 1;
}
#define EQ_LIT(s, n, lit) eq_lit((s), (n), lit, sizeof lit - 1)

static int eq_nocase(const char *a, size_t alen, const char *b, size_t blen) {
    if (alen != blen) return 0;
    for (size_t i = 0; i < alen; i++)
        if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
    return 1;
}

static inline int is_ows(char c) { return c == ' ' || c == '\t'; }

/* Next element of a #list (RFC 9110 5.6.1) with OWS trimmed. Empty elements
 * are skipped because the RFC requires recipients to tolerate them. */
static int next_elem(const char **pp, const char *end, const char **e, size_t *elen) {
    const char *p = *pp;
    while (p < end && (is_ows(*p) || *p == ',')) p++;
    if (p == end) { *pp = p; return 0; }
    const char *s = p;
    while (p < end && *p != ',') p++;
    const char *t = p;
    while (t > s && is_ows(t[-1])) t--;
    *e = s;
    *elen = (size_t)(t - s);
    *pp = p;
    return 1;
}

/* Transfer-Encoding across all its header lines forms one list of codings;
 * only the verdict on the whole list matters, and only at the end of the
 * head, so that the error reported does not depend on header order. */
typedef struct {
    int present, ncodings, chunked_seen, other;
    const char *bad;          /* 400 reason, or NULL */
} te_state;

static void te_add(te_state *te, const char *v, size_t vlen) {
    const char *p = v, *end = v + vlen, *e;
    size_t elen;
    te->present = 1;
    while (next_elem(&p, end, &e, &elen)) {
        te->ncodings++;
        if (EQ_LIT(e, elen, "chunked")) {
            if (te->chunked_seen && !te->bad) te->bad = "chunked applied more than once";
            te->chunked_seen = 1;
        } else {
            /* Anything after chunked makes the body length undeterminable. */
            if (te->chunked_seen && !te->bad) te->bad = "chunked is not the final transfer coding";
            te->other = 1;
        }
    }
}

/* Returns 0, or -1 if the value is not plain digits or overflows int64. */
static int parse_content_length(const char *v, size_t vlen, int64_t *out) {
    if (vlen == 0) return -1;
    int64_t n = 0;
    for (size_t i = 0; i < vlen; i++) {
        unsigned d = (unsigned char)v[i] - (unsigned)'0';
        if (d > 9) return -1;
        if (n > (INT64_MAX - (int64_t)d) / 10) return -1;
        n = n * 10 + (int64_t)d;
    }
    *out = n;
    return 0;
}

/* For absolute-form: finds the authority and the origin-form part. Returns 0
 * or -1 if the target is not an absolute http(s) URI we accept. */
static int split_absolute(const char *t, size_t tlen, const char **auth, size_t *auth_len,
                          const char **origin) {
    size_t skip;
    if (tlen >= 7 && EQ_LIT(t, 7, "http://")) skip = 7;
    else if (tlen >= 8 && EQ_LIT(t, 8, "https://")) skip = 8;
    else return -1;
    const char *a = t + skip, *end = t + tlen, *p = a;
    while (p < end && *p != '/' && *p != '?') {
        if (*p == '@') return -1;   /* userinfo: never legitimate here */
        p++;
    }
    if (p == a || p == end || *p != '/') return -1;
    *auth = a;
    *auth_len = (size_t)(p - a);
    *origin = p;
    return 0;
}

int jj_http_parse_request(const char *buf, size_t len, size_t max_head,
                          jj_http_request *req, int *status, const char **reason) {
    if (len == 0) return JJ_HTTP_INCOMPLETE;
    const unsigned char *start = (const unsigned char *)buf;
    /* Never look past max_head: a head that does not end within it is 431
     * whatever follows, and this bounds the work per call. */
    const unsigned char *end = start + (len < max_head ? len : max_head);
    const unsigned char *p = start;
    int code = 400;
    const char *why = NULL;

#define NEED(ptr) do { if ((ptr) >= end) goto incomplete; } while (0)
#define FAIL(c, r) do { code = (c); why = (r); goto fail; } while (0)
/* Only used with p < end and *p being CR or LF. */
#define SKIP_EOL() do { \
        if (*p == '\n') { p++; break; } \
        NEED(p + 1); \
        if (p[1] != '\n') FAIL(400, "CR not followed by LF"); \
        p += 2; \
    } while (0)

    req->nheaders = 0;
    req->content_length = -1;
    req->chunked = 0;
    req->keep_alive = 0;
    req->expect_continue = 0;
    req->head_len = 0;
    req->query = NULL;
    req->query_len = 0;

    /* RFC 9112 2.2: tolerate empty lines before the request line. */
    for (;;) {
        NEED(p);
        if (*p != '\r' && *p != '\n') break;
        SKIP_EOL();
    }

    /* method SP */
    const unsigned char *m = p;
    while (p < end && (cls[*p] & C_TOKEN)) p++;
    NEED(p);
    if (p == m) FAIL(400, *p == ' ' ? "empty method" : "invalid method");
    if (*p != ' ') FAIL(400, "invalid method");
    req->method = (const char *)m;
    req->method_len = (size_t)(p - m);
    p++;

    /* request-target SP */
    const unsigned char *t = p, *q = NULL;
    for (;;) {
        while (p < end && (cls[*p] & C_TARGET)) p++;
        NEED(p);
        if (*p != '?') break;
        if (!q) q = p;
        p++;
    }
    if (*p != ' ') {
        if (p == t && (*p == '\r' || *p == '\n')) FAIL(400, "empty request target");
        if (*p == '\r' || *p == '\n') FAIL(400, "missing HTTP version");
        FAIL(400, "invalid character in request target");
    }
    if (p == t) FAIL(400, "empty request target");
    const unsigned char *tend = p;
    p++;

    /* HTTP-version: "HTTP/" DIGIT "." DIGIT, checked byte by byte so that a
     * partial version is incomplete rather than wrong. */
    static const char ver[] = "HTTP/0.0";
    for (size_t k = 0; k < 8; k++, p++) {
        NEED(p);
        int ok = (k == 5 || k == 7) ? (*p >= '0' && *p <= '9') : *p == (unsigned char)ver[k];
        if (!ok) FAIL(400, "invalid HTTP version");
    }
    int major = p[-3] - '0', minor = p[-1] - '0';
    NEED(p);
    if (*p != '\r' && *p != '\n') FAIL(400, "invalid HTTP version");
    SKIP_EOL();
    if (major != 1 || minor > 1) FAIL(505, "HTTP version not supported");
    req->minor_version = minor;

    /* Target forms (RFC 9112 3.2). */
    const char *auth = NULL, *origin = (const char *)t;
    size_t auth_len = 0, tlen = (size_t)(tend - t);
    if (*t == '/') {
        /* origin-form */
    } else if (*t == '*' && tlen == 1) {
        /* Methods are case-sensitive (RFC 9110 9.1). */
        if (req->method_len != 7 || memcmp(req->method, "OPTIONS", 7) != 0)
            FAIL(400, "asterisk target requires OPTIONS");
    } else if (split_absolute((const char *)t, tlen, &auth, &auth_len, &origin) != 0) {
        FAIL(400, "invalid request target");
    }
    req->target = origin;
    req->target_len = (size_t)((const char *)tend - origin);
    req->path = origin;
    if (q) {
        req->path_len = (size_t)((const char *)q - origin);
        req->query = (const char *)q + 1;
        req->query_len = (size_t)(tend - q - 1);
    } else {
        req->path_len = req->target_len;
    }

    /* Header fields until the empty line. */
    te_state te = {0, 0, 0, 0, NULL};
    const jj_http_header *host = NULL;
    int conn_close = 0, conn_keep = 0;
    for (;;) {
        NEED(p);
        if (*p == '\r' || *p == '\n') { SKIP_EOL(); break; }
        if (*p == ' ' || *p == '\t') FAIL(400, "obsolete line folding");
        if (req->nheaders == JJ_HTTP_MAX_HEADERS) FAIL(431, "too many header fields");

        const unsigned char *name = p;
        while (p < end && (cls[*p] & C_TOKEN)) p++;
        NEED(p);
        if (*p != ':') {
            if (*p == ' ' || *p == '\t') FAIL(400, "whitespace before colon");
            if (*p == '\r' || *p == '\n') FAIL(400, "header line without colon");
            FAIL(400, "invalid header name");
        }
        if (p == name) FAIL(400, "empty header name");
        size_t nlen = (size_t)(p - name);
        p++;
        while (p < end && is_ows((char)*p)) p++;
        const unsigned char *val = p;
        while (p < end && (cls[*p] & C_VALUE)) p++;
        NEED(p);
        if (*p != '\r' && *p != '\n') FAIL(400, "invalid character in header value");
        const unsigned char *vend = p;
        SKIP_EOL();
        while (vend > val && is_ows((char)vend[-1])) vend--;

        jj_http_header *h = &req->headers[req->nheaders++];
        h->name = (const char *)name;
        h->name_len = nlen;
        h->value = (const char *)val;
        h->value_len = (size_t)(vend - val);

        /* The few fields that affect framing or connection handling. The
         * length switch keeps the common case to one comparison. */
        const char *n = h->name, *v = h->value;
        size_t vlen = h->value_len;
        switch (nlen) {
        case 4:
            if (EQ_LIT(n, nlen, "host")) {
                if (host) FAIL(400, "multiple Host headers");
                host = h;
            }
            break;
        case 6:
            if (EQ_LIT(n, nlen, "expect") && EQ_LIT(v, vlen, "100-continue") && minor == 1)
                req->expect_continue = 1;   /* RFC 9110 10.1.1: ignored in 1.0 */
            break;
        case 10:
            if (EQ_LIT(n, nlen, "connection")) {
                const char *lp = v, *e;
                size_t elen;
                while (next_elem(&lp, v + vlen, &e, &elen)) {
                    if (EQ_LIT(e, elen, "close")) conn_close = 1;
                    else if (EQ_LIT(e, elen, "keep-alive")) conn_keep = 1;
                }
            }
            break;
        case 14:
            if (EQ_LIT(n, nlen, "content-length")) {
                int64_t cl;
                if (parse_content_length(v, vlen, &cl) != 0) FAIL(400, "invalid Content-Length");
                /* Even equal duplicates: a proxy in front may have read
                 * them differently (RFC 9112 6.3 allows rejecting them). */
                if (req->content_length >= 0) FAIL(400, "multiple Content-Length headers");
                req->content_length = cl;
            }
            break;
        case 17:
            if (EQ_LIT(n, nlen, "transfer-encoding")) te_add(&te, v, vlen);
            break;
        default:
            break;
        }
    }
    req->head_len = (size_t)(p - start);

    if (te.present) {
        if (req->content_length >= 0) FAIL(400, "both Content-Length and Transfer-Encoding");
        if (minor == 0) FAIL(400, "Transfer-Encoding in HTTP/1.0 request");
        if (te.bad) FAIL(400, te.bad);
        if (te.ncodings == 0) FAIL(400, "empty Transfer-Encoding");
        if (te.other) FAIL(501, "unsupported transfer coding");
        req->chunked = 1;
    }
    if (!host && minor == 1) FAIL(400, "missing Host header");
    if (auth && (!host || !eq_nocase(auth, auth_len, host->value, host->value_len)))
        FAIL(400, "Host header does not match request target");
    req->keep_alive = minor == 1 ? !conn_close : (conn_keep && !conn_close);
    return JJ_HTTP_OK;

incomplete:
    /* Once max_head bytes are buffered without a complete head, the head can
     * only end beyond max_head. */
    if (len >= max_head) {
        if (status) *status = 431;
        if (reason) *reason = "request head too large";
        return JJ_HTTP_ERROR;
    }
    return JJ_HTTP_INCOMPLETE;

fail:
    if (status) *status = code;
    if (reason) *reason = why;
    return JJ_HTTP_ERROR;
#undef NEED
#undef FAIL
#undef SKIP_EOL
}

const jj_http_header *jj_http_find_header(const jj_http_request *req, const char *name) {
    size_t nlen = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const jj_http_header *h = &req->headers[i];
        if (eq_nocase(h->name, h->name_len, name, nlen)) return h;
    }
    return NULL;
}

static int hexval(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    c = lower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

long jj_http_url_decode(char *dst, const char *src, size_t len, int plus_is_space) {
    /* j never passes i, so decoding in place (dst == src) is safe. */
    size_t i = 0, j = 0;
    while (i < len) {
        unsigned char c = (unsigned char)src[i];
        if (c == '%') {
            if (len - i < 3) return -1;
            int hi = hexval((unsigned char)src[i + 1]), lo = hexval((unsigned char)src[i + 2]);
            if (hi < 0 || lo < 0) return -1;
            c = (unsigned char)(hi << 4 | lo);
            i += 3;
        } else {
            if (c == '+' && plus_is_space) c = ' ';
            i++;
        }
        /* Decoded values end up in C strings; a NUL would truncate them. */
        if (c == 0) return -1;
        dst[j++] = (char)c;
    }
    return (long)j;
}

const char *jj_http_status_text(int status) {
    switch (status) {
    case 100: return "Continue";
    case 101: return "Switching Protocols";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 203: return "Non-Authoritative Information";
    case 204: return "No Content";
    case 205: return "Reset Content";
    case 206: return "Partial Content";
    case 300: return "Multiple Choices";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 402: return "Payment Required";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 406: return "Not Acceptable";
    case 407: return "Proxy Authentication Required";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 421: return "Misdirected Request";
    case 422: return "Unprocessable Content";
    case 425: return "Too Early";
    case 426: return "Upgrade Required";
    case 428: return "Precondition Required";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

int jj_http_is_framing_header(const char *name, size_t len) {
    return (len == 14 && strncasecmp(name, "Content-Length", 14) == 0) ||
           (len == 10 && strncasecmp(name, "Connection", 10) == 0) ||
           (len == 17 && strncasecmp(name, "Transfer-Encoding", 17) == 0);
}

int jj_http_header_ok(const char *name, size_t nlen, const char *value, size_t vlen) {
    if (nlen == 0) return 0;
    for (size_t i = 0; i < nlen; i++)
        if (!(cls[(unsigned char)name[i]] & C_TOKEN)) return 0;
    for (size_t i = 0; i < vlen; i++) {
        unsigned char ch = (unsigned char)value[i];
        if (ch < 0x20 && (ch == '\r' || ch == '\n' || ch == '\0')) return 0;
    }
    return 1;
}
