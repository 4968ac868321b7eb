/* jj_db_test.h: what test_db.c (SQLite) and test_db_pg.c (PostgreSQL) share:
 * value constructors, and submitting on a real libev loop with every wait
 * bounded by a guard timer, so a lost callback fails the test instead of
 * hanging it. The including file sets `loop` before the first call; the
 * results returned are the test's own (jj_db_result_free). */
#ifndef JJ_DB_TEST_H
#define JJ_DB_TEST_H

#include "db.h"
#include "jj_test.h"

#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static struct ev_loop *loop;

static inline jj_db_value vint(int64_t i) { jj_db_value v = {JJ_DB_INT, i, 0, NULL, 0}; return v; }
static inline jj_db_value vfloat(double d) { jj_db_value v = {JJ_DB_FLOAT, 0, d, NULL, 0}; return v; }
static inline jj_db_value vnull(void) { jj_db_value v = {JJ_DB_NULL, 0, 0, NULL, 0}; return v; }
static inline jj_db_value vtext(const char *s) { jj_db_value v = {JJ_DB_TEXT, 0, 0, s, strlen(s)}; return v; }
static inline jj_db_value vblob(const void *p, size_t n) { jj_db_value v = {JJ_DB_BLOB, 0, 0, p, n}; return v; }

static inline const jj_db_value *cell(const jj_db_result *r, size_t row, int col) {
    return &r->values[row * (size_t)r->ncols + (size_t)col];
}

static inline int contains(const char *hay, const char *needle) {
    return hay && strstr(hay, needle) != NULL;
}

static int guard_fired, pending;
static ev_timer guard;

static inline void on_guard(struct ev_loop *l, ev_timer *w, int revents) {
    (void)w; (void)revents;
    guard_fired = 1;
    ev_break(l, EVBREAK_ALL);
}

/* Runs the loop until `pending` callbacks have arrived, or max_s passed. */
static inline void wait_pending(double max_s) {
    if (pending <= 0) return;
    guard_fired = 0;
    ev_timer_init(&guard, on_guard, max_s, 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    CHECK(!guard_fired);
}

/* Runs the loop for s seconds (late, duplicate callbacks would show). */
static inline void spin(double s) {
    ev_timer_init(&guard, on_guard, s, 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
}

typedef struct capture {
    int calls;
    jj_db_result *res;
} capture;

static inline void on_capture(jj_db_result *res, void *pd) {
    capture *c = pd;
    c->calls++;
    jj_db_result_free(c->res);   /* only if called twice, which CHECKs catch */
    c->res = res;
    if (--pending == 0) ev_break(loop, EVBREAK_ALL);
}

static inline jj_db_result *run_t(jj_db *db, int is_query, const char *sql, const jj_db_value *p, int n,
                           double timeout_ms) {
    capture c = {0, NULL};
    pending = 1;
    jj_db_stmt s = {sql, strlen(sql), p, n};
    int rc = jj_db_submit_timeout(db, is_query, &s, 1, timeout_ms, on_capture, &c);
    CHECK_INT(rc, 0);
    if (rc != 0) { pending = 0; return NULL; }
    wait_pending(60);
    CHECK_INT(c.calls, 1);
    return c.res;
}

static inline jj_db_result *run(jj_db *db, int is_query, const char *sql, const jj_db_value *p, int n) {
    return run_t(db, is_query, sql, p, n, 0);
}

static inline jj_db_result *run_batch(jj_db *db, const jj_db_stmt *st, int n) {
    capture c = {0, NULL};
    pending = 1;
    int rc = jj_db_submit_batch(db, st, n, on_capture, &c);
    CHECK_INT(rc, 0);
    if (rc != 0) { pending = 0; return NULL; }
    wait_pending(60);
    CHECK_INT(c.calls, 1);
    return c.res;
}

static inline long long ok_exec(jj_db *db, const char *sql, const jj_db_value *p, int n) {
    jj_db_result *r = run(db, 0, sql, p, n);
    if (!r) return -1;
    if (r->err) fprintf(stderr, "unexpected error for %s: %s\n", sql, r->err);
    CHECK(r->err == NULL);
    long long ch = r->err ? -1 : r->changes;
    jj_db_result_free(r);
    return ch;
}

static inline int64_t scalar(jj_db *db, const char *sql) {
    jj_db_result *r = run(db, 1, sql, NULL, 0);
    int64_t v = INT64_MIN;
    if (r && !r->err && r->nrows == 1 && r->ncols >= 1 && cell(r, 0, 0)->type == JJ_DB_INT)
        v = cell(r, 0, 0)->i;
    jj_db_result_free(r);
    return v;
}

#endif
