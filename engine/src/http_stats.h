/* http_stats.h: what the HTTP server records once per response, in C:
 *
 *   http_requests{route="<pattern>",method="GET",status="200"}   counter
 *   http_duration{route="<pattern>"}                             histogram (ms)
 *
 * in the shared metrics table (metrics.h), and the access log line
 * (ACCESS_LOG). The route label is the router pattern the request matched
 * ("/api/products/{id}"), "unmatched" when no route did (404, 405, and the
 * errors the server answers before routing: 400, 408, 411, 413, 431, 501,
 * 503, 505), or "other" when a process has seen more than JJ_ROUTE_MAX
 * patterns or a pattern is longer than JJ_ROUTE_LABEL_MAX. Methods outside
 * the standard nine are "OTHER", so a client cannot grow the table.
 *
 * Routes are interned per process: jj_http_stats_route(pattern) -> a small
 * id that stays valid for the life of the process (generations come and go,
 * ids do not), so the per-request cost is an id in the connection and, at
 * the response, a lookup in a per-process cache of (route, method, status)
 * -> slot index, plus two atomic adds and an observation. Loop thread only.
 */
#ifndef JJ_HTTP_STATS_H
#define JJ_HTTP_STATS_H

#include <stddef.h>

#define JJ_ROUTE_UNMATCHED 0
#define JJ_ROUTE_OTHER 1
#define JJ_ROUTE_MAX 256          /* distinct route ids per process */
#define JJ_ROUTE_LABEL_MAX 64     /* bytes of a route label, escaped */

enum jj_http_method {
    JJ_METHOD_GET = 0, JJ_METHOD_HEAD, JJ_METHOD_POST, JJ_METHOD_PUT, JJ_METHOD_PATCH,
    JJ_METHOD_DELETE, JJ_METHOD_OPTIONS, JJ_METHOD_CONNECT, JJ_METHOD_TRACE, JJ_METHOD_OTHER,
    JJ_METHOD_COUNT
};

/* The id of a route pattern (interned on first use). Never fails: a pattern
 * that cannot have its own id gets JJ_ROUTE_OTHER. */
int jj_http_stats_route(const char *pattern, size_t len);
/* The label of a route id ("unmatched", "other" or the pattern, unescaped). */
const char *jj_http_stats_route_label(int id);
int jj_http_stats_method(const char *method, size_t len);
const char *jj_http_stats_method_name(int id);

/* Counts one response: status 100..599 (anything else counts as 0). */
void jj_http_stats_record(int route, int method, int status, double duration_ms);

/* Writes s as a Prometheus label value (backslash, double quote and
 * newline escaped; no quotes around it) into dst; returns its length, or
 * (size_t)-1 when it needs more than cap - 1 bytes (dst is NUL-terminated
 * either way). */
size_t jj_prom_label_escape(char *dst, size_t cap, const char *s, size_t len);

/* One access log line's fields (strings need not be NUL-terminated). */
typedef struct jj_access_entry {
    const char *request_id;
    const char *method;
    size_t method_len;
    const char *path;
    size_t path_len;
    const char *route;        /* label */
    int status;
    double duration_ms;
    size_t bytes;             /* body bytes sent */
    const char *cache;        /* X-Cache response header value, or NULL */
    size_t cache_len;
    const char *remote;       /* peer address */
} jj_access_entry;

/* The JSON members of an access log line (without braces), e.g.
 * "event":"access","request_id":"..","method":"GET",...; strings are
 * JSON-escaped (bytes >= 0x80 as \u00XX, so the line is valid JSON and
 * ASCII whatever the client sent) and cut to bounded lengths (the path to
 * 512 bytes), so they always fit in JJ_ACCESS_MEMBERS_MAX bytes. Returns the
 * length written. */
#define JJ_ACCESS_MEMBERS_MAX 6144
size_t jj_access_members(char buf[JJ_ACCESS_MEMBERS_MAX], const jj_access_entry *e);

/* Writes the access log line of e (jj_log_access: whatever LOG_LEVEL says). */
void jj_access_log(const jj_access_entry *e);

#endif
