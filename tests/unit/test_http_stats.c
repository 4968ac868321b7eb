/* test_http_stats.c: route interning, method names, the per-response
 * counters and histograms (exact metric names), Prometheus label escaping and
 * the access log members. */
#include "jj_test.h"
#include "http_stats.h"
#include "metrics.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int quoted_route;

static void test_routes(void) {
    CHECK_STR(jj_http_stats_route_label(JJ_ROUTE_UNMATCHED), "unmatched");
    CHECK_STR(jj_http_stats_route_label(JJ_ROUTE_OTHER), "other");
    int a = jj_http_stats_route("/api/products/{id}", 18);
    int b = jj_http_stats_route("/api/products", 13);
    CHECK(a > JJ_ROUTE_OTHER && b > JJ_ROUTE_OTHER && a != b);
    CHECK_INT(jj_http_stats_route("/api/products/{id}", 18), a);   /* stable */
    CHECK_STR(jj_http_stats_route_label(a), "/api/products/{id}");
    CHECK_STR(jj_http_stats_route_label(9999), "other");
    CHECK_STR(jj_http_stats_route_label(-1), "other");
    /* no own id: empty, NUL inside, too long (escaped) */
    CHECK_INT(jj_http_stats_route("", 0), JJ_ROUTE_OTHER);
    CHECK_INT(jj_http_stats_route(NULL, 3), JJ_ROUTE_OTHER);
    CHECK_INT(jj_http_stats_route("/a\0b", 4), JJ_ROUTE_OTHER);
    char longest[JJ_ROUTE_LABEL_MAX + 2];
    memset(longest, 'x', sizeof longest);
    longest[0] = '/';
    int l = jj_http_stats_route(longest, JJ_ROUTE_LABEL_MAX);
    CHECK(l > JJ_ROUTE_OTHER);
    CHECK_INT(jj_http_stats_route(longest, JJ_ROUTE_LABEL_MAX + 1), JJ_ROUTE_OTHER);
    memset(longest + 1, '"', JJ_ROUTE_LABEL_MAX / 2 + 1);   /* each quote escapes to 2 bytes */
    CHECK_INT(jj_http_stats_route(longest, JJ_ROUTE_LABEL_MAX / 2 + 2), JJ_ROUTE_OTHER);
    quoted_route = jj_http_stats_route("/q\"\\", 4);
    CHECK(quoted_route > JJ_ROUTE_OTHER);
    CHECK_STR(jj_http_stats_route_label(quoted_route), "/q\"\\");   /* the label as given */
    /* the table fills up: later patterns share "other", earlier ones keep their ids */
    char p[32];
    int last = 0;
    for (int i = 0; i < JJ_ROUTE_MAX + 10; i++) {
        int n = snprintf(p, sizeof p, "/r/%d", i);
        last = jj_http_stats_route(p, (size_t)n);
    }
    CHECK_INT(last, JJ_ROUTE_OTHER);
    CHECK_INT(jj_http_stats_route("/api/products/{id}", 18), a);
    CHECK_INT(jj_http_stats_route("/r/0", 4) > JJ_ROUTE_OTHER, 1);
}

static void test_methods(void) {
    CHECK_INT(jj_http_stats_method("GET", 3), JJ_METHOD_GET);
    CHECK_INT(jj_http_stats_method("DELETE", 6), JJ_METHOD_DELETE);
    CHECK_INT(jj_http_stats_method("get", 3), JJ_METHOD_OTHER);   /* methods are case-sensitive */
    CHECK_INT(jj_http_stats_method("BREW", 4), JJ_METHOD_OTHER);
    CHECK_INT(jj_http_stats_method("GETS", 4), JJ_METHOD_OTHER);
    CHECK_INT(jj_http_stats_method(NULL, 0), JJ_METHOD_OTHER);
    CHECK_STR(jj_http_stats_method_name(JJ_METHOD_PATCH), "PATCH");
    CHECK_STR(jj_http_stats_method_name(JJ_METHOD_OTHER), "OTHER");
    CHECK_STR(jj_http_stats_method_name(77), "OTHER");
}

static void test_record(void) {
    jj_metrics_reset_for_tests();
    int r = jj_http_stats_route("/api/products/{id}", 18);
    for (int i = 0; i < 5; i++) jj_http_stats_record(r, JJ_METHOD_GET, 200, 0.3);
    jj_http_stats_record(r, JJ_METHOD_GET, 404, 7);
    jj_http_stats_record(JJ_ROUTE_UNMATCHED, JJ_METHOD_OTHER, 400, 0);
    jj_http_stats_record(JJ_ROUTE_UNMATCHED, JJ_METHOD_GET, 99, -1);   /* bad status, negative time */
    jj_http_stats_record(12345, 99, 200, 1);                           /* bad ids */
    CHECK_INT(jj_metrics_get("http_requests{route=\"/api/products/{id}\",method=\"GET\",status=\"200\"}"), 5);
    CHECK_INT(jj_metrics_get("http_requests{route=\"/api/products/{id}\",method=\"GET\",status=\"404\"}"), 1);
    CHECK_INT(jj_metrics_get("http_requests{route=\"unmatched\",method=\"OTHER\",status=\"400\"}"), 1);
    CHECK_INT(jj_metrics_get("http_requests{route=\"unmatched\",method=\"GET\",status=\"0\"}"), 1);
    CHECK_INT(jj_metrics_get("http_requests{route=\"other\",method=\"OTHER\",status=\"200\"}"), 1);
    CHECK_INT(jj_metrics_get("http_duration_count{route=\"/api/products/{id}\"}"), 6);
    CHECK_INT(jj_metrics_get("http_duration_bucket{route=\"/api/products/{id}\",le=\"0.5\"}"), 5);
    CHECK_INT(jj_metrics_get("http_duration_bucket{route=\"/api/products/{id}\",le=\"10\"}"), 6);
    CHECK_INT(jj_metrics_get("http_duration_sum{route=\"/api/products/{id}\"}"), 8500);   /* us */
    CHECK_INT(jj_metrics_get("http_duration_count{route=\"unmatched\"}"), 2);
    /* a new region: the cached slot indices are not reused */
    jj_metrics_reset_for_tests();
    jj_metrics_add("something_else", 1);
    jj_http_stats_record(r, JJ_METHOD_GET, 200, 1);
    CHECK_INT(jj_metrics_get("http_requests{route=\"/api/products/{id}\",method=\"GET\",status=\"200\"}"), 1);
    CHECK_INT(jj_metrics_get("something_else"), 1);
    CHECK_INT(jj_metrics_get("http_duration_count{route=\"/api/products/{id}\"}"), 1);
    /* a label needing escapes */
    jj_http_stats_record(quoted_route, JJ_METHOD_PUT, 201, 1);
    CHECK_INT(jj_metrics_get("http_requests{route=\"/q\\\"\\\\\",method=\"PUT\",status=\"201\"}"), 1);
    jj_metrics_reset_for_tests();
}

static void test_label_escape(void) {
    char buf[16];
    CHECK_INT(jj_prom_label_escape(buf, sizeof buf, "a\"b\\c\nd", 7), 10);
    CHECK_STR(buf, "a\\\"b\\\\c\\nd");
    CHECK_INT(jj_prom_label_escape(buf, sizeof buf, "", 0), 0);
    CHECK_STR(buf, "");
    CHECK_INT(jj_prom_label_escape(buf, sizeof buf, "0123456789abcde", 15), 15);   /* fits exactly */
    CHECK(jj_prom_label_escape(buf, sizeof buf, "0123456789abcdef", 16) == (size_t)-1);
    CHECK(strlen(buf) < sizeof buf);
    CHECK(jj_prom_label_escape(buf, sizeof buf, "0123456789abcd\"", 15) == (size_t)-1);   /* the escape does not fit */
}

static void test_access_members(void) {
    char buf[JJ_ACCESS_MEMBERS_MAX];
    jj_access_entry e = {
        .request_id = "00000001deadbeef", .method = "GET", .method_len = 3,
        .path = "/api/products/p-1", .path_len = 17, .route = "/api/products/{id}",
        .status = 200, .duration_ms = 1.23456, .bytes = 431, .cache = "HIT", .cache_len = 3,
        .remote = "127.0.0.1",
    };
    size_t n = jj_access_members(buf, &e);
    CHECK_INT(n, strlen(buf));
    CHECK_STR(buf, "\"event\":\"access\",\"request_id\":\"00000001deadbeef\",\"method\":\"GET\","
                   "\"path\":\"/api/products/p-1\",\"route\":\"/api/products/{id}\",\"status\":200,"
                   "\"duration_ms\":1.235,\"bytes\":431,\"cache\":\"HIT\",\"remote\":\"127.0.0.1\"");
    /* no cache header, bytes to escape, a negative duration */
    e.cache = NULL;
    e.path = "/a\"b\\c\n\x01\xc3\xa9";
    e.path_len = 10;
    e.duration_ms = -3;
    jj_access_members(buf, &e);
    CHECK(strstr(buf, "\"path\":\"/a\\\"b\\\\c\\u000a\\u0001\\u00c3\\u00a9\"") != NULL);
    CHECK(strstr(buf, "\"cache\":null") != NULL);
    CHECK(strstr(buf, "\"duration_ms\":0.000") != NULL);
    /* the worst case fits: every byte escaped, the path cut to 512 bytes */
    static char huge[8192];
    memset(huge, 1, sizeof huge);
    e.path = huge;
    e.path_len = sizeof huge;
    e.method = huge;
    e.method_len = 100;
    e.cache = huge;
    e.cache_len = 100;
    e.route = "/r";
    n = jj_access_members(buf, &e);
    CHECK(n < sizeof buf);
    CHECK(n > 512 * 6);
    CHECK(strstr(buf, "\"remote\":\"127.0.0.1\"") != NULL);   /* the last member is complete */
    CHECK_INT(buf[n - 1], '"');
}

int main(void) {
    test_routes();
    test_methods();
    test_record();
    test_label_escape();
    test_access_members();
    return jj_test_done();
}
