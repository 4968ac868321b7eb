/* http_parser.h: HTTP/1.x request head parser. A pure function over bytes:
 * no allocation, no I/O, no global state; pointers in the result point into
 * the caller's buffer. Fuzzed by tests/fuzz/fuzz_http_parser.c.
 */
#ifndef JJ_HTTP_PARSER_H
#define JJ_HTTP_PARSER_H

#include <stddef.h>
#include <stdint.h>

#define JJ_HTTP_MAX_HEADERS 100

typedef struct jj_http_header {
    const char *name;
    size_t name_len;
    const char *value;        /* leading/trailing OWS trimmed */
    size_t value_len;
} jj_http_header;

typedef struct jj_http_request {
    const char *method;
    size_t method_len;
    const char *target;       /* origin-form: path[?query]; for an absolute-form
                                 target, its path[?query] part (authority == Host) */
    size_t target_len;
    const char *path;         /* target up to '?' */
    size_t path_len;
    const char *query;        /* after '?', NULL if none */
    size_t query_len;
    int minor_version;        /* HTTP/1.0 -> 0, HTTP/1.1 -> 1 */
    jj_http_header headers[JJ_HTTP_MAX_HEADERS];
    size_t nheaders;
    size_t head_len;          /* bytes of request line + headers + blank line */
    int64_t content_length;   /* -1 when absent */
    int chunked;              /* Transfer-Encoding: chunked (final coding) */
    int keep_alive;           /* after Connection header and version defaults */
    int expect_continue;
} jj_http_request;

enum {
    JJ_HTTP_INCOMPLETE = 0,   /* need more bytes */
    JJ_HTTP_OK = 1,           /* head complete: req filled */
    JJ_HTTP_ERROR = -1        /* *status (400/431/501/505) and *reason set */
};

/* Parses one request head at the start of buf. Bytes beyond head_len are not
 * looked at. max_head bounds the head (431 when exceeded, also while still
 * incomplete). Leading empty lines (RFC 9112 2.2) are skipped and counted in
 * head_len. */
int jj_http_parse_request(const char *buf, size_t len, size_t max_head,
                          jj_http_request *req, int *status, const char **reason);

/* Case-insensitive header lookup; NULL if absent. */
const jj_http_header *jj_http_find_header(const jj_http_request *req, const char *name);

/* Percent-decodes src into dst (dst may equal src; '+' becomes ' ' only when
 * plus_is_space). Returns the decoded length, or -1 on a malformed escape. */
long jj_http_url_decode(char *dst, const char *src, size_t len, int plus_is_space);

/* 1 for the headers that frame a message (Content-Length, Connection,
 * Transfer-Encoding): the server sets them, a handler cannot. */
int jj_http_is_framing_header(const char *name, size_t len);
/* 1 when name is a token (RFC 9110) and value holds no CR, LF or NUL: what
 * a response header must be so that a handler cannot split a response. */
int jj_http_header_ok(const char *name, size_t nlen, const char *value, size_t vlen);

/* Reason phrase for a status code ("Unknown" if not known). */
const char *jj_http_status_text(int status);

#endif
