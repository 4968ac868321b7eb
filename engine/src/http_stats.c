/* http_stats.c: per-response metrics and the access log line (http_stats.h). */
#include "http_stats.h"
#include "log.h"
#include "metrics.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------- routes */

typedef struct {
    char label[JJ_ROUTE_LABEL_MAX + 1];   /* the pattern as given */
    char esc[JJ_ROUTE_LABEL_MAX + 1];     /* ... as a Prometheus label value */
    size_t len;
    uint64_t hash;
    jj_metric hist;                       /* http_duration{route=...} */
    char hist_name[JJ_METRICS_NAME_MAX + 1];
} route_info;

#define ROUTE_HASH_SIZE (JJ_ROUTE_MAX * 2)   /* open addressing, power of two */

static route_info routes[JJ_ROUTE_MAX];
static int nroutes;
static short route_hash[ROUTE_HASH_SIZE];   /* id + 1, 0 = empty */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;   /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 0x100000001b3ull;
    return h;
}

static void init_route(int id, const char *label, size_t len) {
    route_info *r = &routes[id];
    memcpy(r->label, label, len);
    r->label[len] = 0;
    r->len = len;
    char esc[sizeof r->esc];
    jj_prom_label_escape(esc, sizeof esc, label, len);
    memcpy(r->esc, esc, sizeof esc);
    snprintf(r->hist_name, sizeof r->hist_name, "http_duration{route=\"%s\"}", esc);
}

static void init_routes(void) {
    if (nroutes) return;
    init_route(JJ_ROUTE_UNMATCHED, "unmatched", 9);
    init_route(JJ_ROUTE_OTHER, "other", 5);
    nroutes = 2;
}

int jj_http_stats_route(const char *pattern, size_t len) {
    init_routes();
    if (!pattern || len == 0 || memchr(pattern, 0, len)) return JJ_ROUTE_OTHER;
    char esc[JJ_ROUTE_LABEL_MAX + 1];
    if (len > JJ_ROUTE_LABEL_MAX || jj_prom_label_escape(esc, sizeof esc, pattern, len) == (size_t)-1)
        return JJ_ROUTE_OTHER;
    uint64_t h = hash_bytes(pattern, len);
    size_t i = (size_t)h & (ROUTE_HASH_SIZE - 1);
    for (;; i = (i + 1) & (ROUTE_HASH_SIZE - 1)) {
        int id = route_hash[i] - 1;
        if (id < 0) break;
        if (routes[id].hash == h && routes[id].len == len && memcmp(routes[id].label, pattern, len) == 0)
            return id;
    }
    if (nroutes >= JJ_ROUTE_MAX) return JJ_ROUTE_OTHER;   /* the hash table is never more than half full */
    int id = nroutes++;
    init_route(id, pattern, len);
    routes[id].hash = h;
    route_hash[i] = (short)(id + 1);
    return id;
}

const char *jj_http_stats_route_label(int id) {
    init_routes();
    return id >= 0 && id < nroutes ? routes[id].label : routes[JJ_ROUTE_OTHER].label;
}

/* ------------------------------------------------------------ methods */

static const char *const method_names[JJ_METHOD_COUNT] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE", "OTHER"};

int jj_http_stats_method(const char *m, size_t len) {
    if (!m) return JJ_METHOD_OTHER;
    for (int i = 0; i < JJ_METHOD_OTHER; i++)
        if (strlen(method_names[i]) == len && memcmp(method_names[i], m, len) == 0) return i;
    return JJ_METHOD_OTHER;
}

const char *jj_http_stats_method_name(int id) {
    return method_names[id >= 0 && id < JJ_METHOD_COUNT ? id : JJ_METHOD_OTHER];
}

/* ------------------------------------------------------------ counting */

/* (route, method, status) -> slot index of http_requests{...}: open
 * addressing; a full cache (far more combinations than any app has) just
 * looks the slot up every time. */
#define REQ_CACHE_SIZE 4096
typedef struct {
    uint32_t key;   /* packed + 1; 0 = empty */
    int idx;
} req_entry;
static req_entry req_cache[REQ_CACHE_SIZE];
static unsigned req_epoch;

static int requests_slot(int route, int method, int status) {
    unsigned ep = jj_metrics_epoch();
    if (ep != req_epoch) {   /* a new region (tests): every cached index is void */
        memset(req_cache, 0, sizeof req_cache);
        req_epoch = ep;
    }
    uint32_t key = ((uint32_t)route << 14 | (uint32_t)method << 10 | (uint32_t)status) + 1;
    uint32_t i = (key * 2654435761u) & (REQ_CACHE_SIZE - 1);
    for (int probes = 0; probes < REQ_CACHE_SIZE; probes++, i = (i + 1) & (REQ_CACHE_SIZE - 1)) {
        if (req_cache[i].key == key) return req_cache[i].idx;
        if (req_cache[i].key == 0) break;
    }
    char name[JJ_METRICS_NAME_MAX + 1];
    int n = snprintf(name, sizeof name, "http_requests{route=\"%s\",method=\"%s\",status=\"%d\"}",
                     routes[route].esc, method_names[method], status);
    if (n < 0 || (size_t)n >= sizeof name) return JJ_METRICS_EINVAL;   /* cannot happen: labels are bounded */
    int idx = jj_metrics_lookup(name, (size_t)n, JJ_METRIC_COUNTER);
    if (idx >= 0 && req_cache[i].key == 0) {   /* only hits are cached: the table may have room later */
        req_cache[i].key = key;
        req_cache[i].idx = idx;
    }
    return idx;
}

void jj_http_stats_record(int route, int method, int status, double ms) {
    init_routes();
    if (route < 0 || route >= nroutes) route = JJ_ROUTE_OTHER;
    if (method < 0 || method >= JJ_METHOD_COUNT) method = JJ_METHOD_OTHER;
    if (status < 100 || status > 599) status = 0;
    int idx = requests_slot(route, method, status);
    if (idx >= 0) jj_metrics_add_at(idx, 1);
    else if (idx == JJ_METRICS_EFULL) jj_metrics_drop();
    if (!(ms >= 0)) ms = 0;
    jj_metric_observe(&routes[route].hist, routes[route].hist_name, ms);
}

/* ------------------------------------------------------------- escaping */

size_t jj_prom_label_escape(char *dst, size_t cap, const char *s, size_t len) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        const char *rep = c == '\\' ? "\\\\" : c == '"' ? "\\\"" : c == '\n' ? "\\n" : NULL;
        size_t need = rep ? 2 : 1;
        if (o + need >= cap) {
            if (cap) dst[o < cap ? o : cap - 1] = 0;
            return (size_t)-1;
        }
        if (rep) { dst[o++] = rep[0]; dst[o++] = rep[1]; }
        else dst[o++] = c;
    }
    if (cap) dst[o] = 0;
    return o;
}

/* Appends s (len bytes, at most max of them) as JSON string content. */
static size_t json_str(char *buf, size_t o, size_t cap, const char *s, size_t len, size_t max) {
    static const char hex[] = "0123456789abcdef";
    if (len > max) len = max;
    for (size_t i = 0; i < len && o + 8 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') { buf[o++] = '\\'; buf[o++] = (char)c; }
        else if (c < 0x20 || c >= 0x7f) {
            memcpy(buf + o, "\\u00", 4);
            buf[o + 4] = hex[c >> 4];
            buf[o + 5] = hex[c & 15];
            o += 6;
        } else buf[o++] = (char)c;
    }
    return o;
}

static size_t put(char *buf, size_t o, size_t cap, const char *s) {
    size_t n = strlen(s);
    if (o + 1 >= cap) return o;
    if (n > cap - 1 - o) n = cap - 1 - o;
    memcpy(buf + o, s, n);
    return o + n;
}

size_t jj_access_members(char buf[JJ_ACCESS_MEMBERS_MAX], const jj_access_entry *e) {
    const size_t cap = JJ_ACCESS_MEMBERS_MAX;
    size_t o = 0;
    char num[96];
    o = put(buf, o, cap, "\"event\":\"access\",\"request_id\":\"");
    o = json_str(buf, o, cap, e->request_id ? e->request_id : "", e->request_id ? strlen(e->request_id) : 0, 64);
    o = put(buf, o, cap, "\",\"method\":\"");
    o = json_str(buf, o, cap, e->method ? e->method : "", e->method ? e->method_len : 0, 32);
    o = put(buf, o, cap, "\",\"path\":\"");
    o = json_str(buf, o, cap, e->path ? e->path : "", e->path ? e->path_len : 0, 512);
    o = put(buf, o, cap, "\",\"route\":\"");
    o = json_str(buf, o, cap, e->route ? e->route : "", e->route ? strlen(e->route) : 0, 128);
    double ms = e->duration_ms >= 0 ? e->duration_ms : 0;
    snprintf(num, sizeof num, "\",\"status\":%d,\"duration_ms\":%.3f,\"bytes\":%zu,\"cache\":", e->status, ms,
             e->bytes);
    o = put(buf, o, cap, num);
    if (e->cache) {
        o = put(buf, o, cap, "\"");
        o = json_str(buf, o, cap, e->cache, e->cache_len, 32);
        o = put(buf, o, cap, "\"");
    } else {
        o = put(buf, o, cap, "null");
    }
    o = put(buf, o, cap, ",\"remote\":\"");
    o = json_str(buf, o, cap, e->remote ? e->remote : "", e->remote ? strlen(e->remote) : 0, 64);
    o = put(buf, o, cap, "\"");
    buf[o] = 0;
    return o;
}

void jj_access_log(const jj_access_entry *e) {
    char members[JJ_ACCESS_MEMBERS_MAX];
    jj_access_members(members, e);
    jj_log_access(members);
}
