/* test_db_pg.c: the PostgreSQL backend (db_pg.c) on a real libev loop and
 * the real server make test starts (JJ_TEST_PG_URL: the throwaway
 * cluster's admin URL). Each run works in a database of its own, created
 * here and dropped at the end. Every wait on the loop is bounded by a guard
 * timer, so a lost callback fails the test instead of hanging it. */
#include "db.h"
#include "jj_test.h"

#include <ev.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct ev_loop *loop;
static char url[512], dbname[64], admin[512];

static jj_db_value vint(int64_t i) { jj_db_value v = {JJ_DB_INT, i, 0, NULL, 0}; return v; }
static jj_db_value vfloat(double d) { jj_db_value v = {JJ_DB_FLOAT, 0, d, NULL, 0}; return v; }
static jj_db_value vnull(void) { jj_db_value v = {JJ_DB_NULL, 0, 0, NULL, 0}; return v; }
static jj_db_value vtext(const char *s) { jj_db_value v = {JJ_DB_TEXT, 0, 0, s, strlen(s)}; return v; }
static jj_db_value vblob(const void *p, size_t n) { jj_db_value v = {JJ_DB_BLOB, 0, 0, p, n}; return v; }

static const jj_db_value *cell(const jj_db_result *r, size_t row, int col) {
    return &r->values[row * (size_t)r->ncols + (size_t)col];
}

static int contains(const char *hay, const char *needle) {
    return hay && strstr(hay, needle) != NULL;
}

/* Runs sql on the admin connection (setup only); 0 on success. */
static int admin_exec(const char *sql) {
    PGconn *pg = PQconnectdb(admin);
    int ok = 0;
    if (PQstatus(pg) == CONNECTION_OK) {
        PGresult *r = PQexec(pg, sql);
        ok = PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK;
        if (!ok) fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
        PQclear(r);
    } else {
        fprintf(stderr, "admin connection: %s", PQerrorMessage(pg));
    }
    PQfinish(pg);
    return ok ? 0 : -1;
}

static int guard_fired, pending;
static ev_timer guard;

static void on_guard(struct ev_loop *l, ev_timer *w, int revents) {
    (void)w; (void)revents;
    guard_fired = 1;
    ev_break(l, EVBREAK_ALL);
}

/* Runs the loop until `pending` callbacks have arrived, or max_s passed. */
static void wait_pending(double max_s) {
    if (pending <= 0) return;
    guard_fired = 0;
    ev_timer_init(&guard, on_guard, max_s, 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    CHECK(!guard_fired);
}

/* Runs the loop for s seconds (late, duplicate callbacks would show). */
static void spin(double s) {
    ev_timer_init(&guard, on_guard, s, 0.);
    ev_timer_start(loop, &guard);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
}

typedef struct capture {
    int calls;
    jj_db_result *res;
} capture;

static void on_capture(jj_db_result *res, void *pd) {
    capture *c = pd;
    c->calls++;
    jj_db_result_free(c->res);   /* only if called twice, which CHECKs catch */
    c->res = res;
    if (--pending == 0) ev_break(loop, EVBREAK_ALL);
}

static jj_db_result *run_t(jj_db *db, int is_query, const char *sql, const jj_db_value *p, int n,
                           double timeout_ms) {
    capture c = {0, NULL};
    pending = 1;
    jj_db_stmt s = {sql, strlen(sql), p, n};
    int rc = jj_db_submit_timeout(db, is_query, &s, 1, timeout_ms, on_capture, &c);
    CHECK_INT(rc, 0);
    if (rc != 0) { pending = 0; return NULL; }
    wait_pending(30);
    CHECK_INT(c.calls, 1);
    return c.res;
}

static jj_db_result *run(jj_db *db, int is_query, const char *sql, const jj_db_value *p, int n) {
    return run_t(db, is_query, sql, p, n, 0);
}

static jj_db_result *run_batch(jj_db *db, const jj_db_stmt *st, int n) {
    capture c = {0, NULL};
    pending = 1;
    int rc = jj_db_submit_batch(db, st, n, on_capture, &c);
    CHECK_INT(rc, 0);
    if (rc != 0) { pending = 0; return NULL; }
    wait_pending(30);
    CHECK_INT(c.calls, 1);
    return c.res;
}

static long long ok_exec(jj_db *db, const char *sql, const jj_db_value *p, int n) {
    jj_db_result *r = run(db, 0, sql, p, n);
    if (!r) return -1;
    if (r->err) fprintf(stderr, "unexpected error for %s: %s\n", sql, r->err);
    CHECK(r->err == NULL);
    long long ch = r->err ? -1 : r->changes;
    jj_db_result_free(r);
    return ch;
}

static int64_t scalar(jj_db *db, const char *sql) {
    jj_db_result *r = run(db, 1, sql, NULL, 0);
    int64_t v = INT64_MIN;
    if (r && !r->err && r->nrows == 1 && r->ncols >= 1 && cell(r, 0, 0)->type == JJ_DB_INT)
        v = cell(r, 0, 0)->i;
    jj_db_result_free(r);
    return v;
}

static jj_db *open_db(const char *target, int n) {
    char err[256] = "";
    jj_db *db = jj_db_open(loop, target, n, err, sizeof err);
    if (!db) fprintf(stderr, "jj_db_open: %s\n", err);
    CHECK(db != NULL);
    return db;
}

/* --------------------------------------------------------------- tests */

static void test_url_checks(void) {
    char err[256] = "";
    CHECK(jj_db_is_url("postgres://u:p@h:5432/db"));
    CHECK(jj_db_is_url("postgresql://h/db"));
    CHECK(!jj_db_is_url("var/jollyjet.db"));
    CHECK_INT(jj_db_check_url("postgres://u:p@127.0.0.1:5432/db?sslmode=disable", err, sizeof err), 0);
    CHECK_INT(jj_db_check_url("postgres://h/db?sslmode=sometimes", err, sizeof err), -1);
    CHECK(contains(err, "sslmode"));
    err[0] = 0;
    CHECK_INT(jj_db_check_url("postgres://h:99999/db", err, sizeof err), -1);
    CHECK(contains(err, "port"));
    err[0] = 0;
    CHECK_INT(jj_db_check_url("postgres://h/db?nosuchoption=1", err, sizeof err), -1);
    CHECK(contains(err, "nosuchoption"));
    err[0] = 0;
    CHECK(jj_db_open(loop, "postgres://h/db?sslmode=bogus", 2, err, sizeof err) == NULL);
    CHECK(contains(err, "sslmode"));
    CHECK(jj_db_open(loop, url, 0, err, sizeof err) == NULL);
}

static void test_roundtrip(jj_db *db) {
    CHECK_STR(jj_db_dialect(db), "postgres");
    CHECK_INT(ok_exec(db, "CREATE TABLE t (id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, "
                          "s TEXT, f DOUBLE PRECISION, n BIGINT, b BYTEA)", NULL, 0), 0);
    const char *tricky = "it's \"quoted\"'); DROP TABLE t; -- ?1 $1";
    const char *uni = "h\xc3\xa9llo \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x9a\x80";
    const char blob[] = {'a', '\0', 'b', (char)0xff};
    jj_db_value p1[] = {vtext(tricky), vfloat(3.25), vnull(), vblob(blob, sizeof blob)};
    jj_db_result *r = run(db, 0, "INSERT INTO t (s, f, n, b) VALUES (?, ?, ?, ?)", p1, 4);
    CHECK(r && r->err == NULL);
    if (r) { CHECK_INT(r->changes, 1); CHECK_INT(r->last_insert_id, 0); CHECK(r->elapsed_ms >= 0); }
    jj_db_result_free(r);
    jj_db_value p2[] = {vtext(uni), vnull(), vint(INT64_MIN), vblob("", 0)};
    CHECK_INT(ok_exec(db, "INSERT INTO t (s, f, n, b) VALUES (?1, ?2, ?3, ?4)", p2, 4), 1);

    r = run(db, 1, "SELECT id, s, f, n, b, n IS NULL AS nul FROM t ORDER BY id", NULL, 0);
    CHECK(r && r->err == NULL);
    if (!r || r->err) { jj_db_result_free(r); return; }
    CHECK_INT(r->ncols, 6);
    CHECK_INT(r->nrows, 2);
    CHECK_STR(r->names[1], "s");
    CHECK_INT(cell(r, 0, 0)->type, JJ_DB_INT);
    CHECK_MEM(cell(r, 0, 1)->s, cell(r, 0, 1)->len, tricky);
    CHECK_INT(cell(r, 0, 2)->type, JJ_DB_FLOAT);
    CHECK(cell(r, 0, 2)->d == 3.25);
    CHECK_INT(cell(r, 0, 3)->type, JJ_DB_NULL);
    CHECK_INT(cell(r, 0, 4)->type, JJ_DB_BLOB);
    CHECK(cell(r, 0, 4)->len == sizeof blob && memcmp(cell(r, 0, 4)->s, blob, sizeof blob) == 0);
    CHECK_INT(cell(r, 0, 5)->type, JJ_DB_INT);   /* boolean: 1/0, as SQLite */
    CHECK_INT(cell(r, 0, 5)->i, 1);
    CHECK_MEM(cell(r, 1, 1)->s, cell(r, 1, 1)->len, uni);
    CHECK_INT(cell(r, 1, 3)->i, INT64_MIN);
    CHECK_INT(cell(r, 1, 4)->len, 0);
    CHECK_INT(cell(r, 1, 5)->i, 0);
    jj_db_result_free(r);

    /* text PostgreSQL cannot hold as text goes as bytea and comes back the same */
    const char bad[] = {'x', (char)0xff, '\0', 'y'};
    jj_db_value p3[] = {vtext("ignored"), vtext("ignored")};
    p3[0].s = bad;
    p3[0].len = sizeof bad;
    r = run(db, 1, "SELECT ? AS v, length(?) AS n", p3, 2);
    CHECK(r && !r->err && r->nrows == 1);
    if (r && !r->err) {
        CHECK(cell(r, 0, 0)->len == sizeof bad && memcmp(cell(r, 0, 0)->s, bad, sizeof bad) == 0);
        CHECK_INT(cell(r, 0, 1)->i, 7);
    }
    jj_db_result_free(r);

    /* integral numerics are integers; others floats */
    r = run(db, 1, "SELECT sum(n) AS s, 2.5::numeric AS x, count(*) AS c FROM t WHERE n IS NOT NULL", NULL, 0);
    CHECK(r && !r->err);
    if (r && !r->err) {
        CHECK_INT(cell(r, 0, 0)->type, JJ_DB_INT);
        CHECK_INT(cell(r, 0, 0)->i, INT64_MIN);
        CHECK_INT(cell(r, 0, 1)->type, JJ_DB_FLOAT);
        CHECK_INT(cell(r, 0, 2)->i, 1);
    }
    jj_db_result_free(r);
}

static void test_placeholders_and_errors(jj_db *db) {
    jj_db_value p[] = {vtext("a"), vtext("b")};
    jj_db_result *r = run(db, 1, "SELECT ?2 AS x, ?1 AS y, ? AS z, '?' AS q /* ? */ -- ?\n", p, 2);
    /* ? after ?2 is ?3: a count mismatch, as in SQLite */
    CHECK(r && contains(r->err, "statement takes 3 parameters, got 2"));
    jj_db_result_free(r);
    r = run(db, 1, "SELECT ?2 AS x, ?1 AS y, '?' AS q /* ? */ -- ?\n", p, 2);
    CHECK(r && !r->err && r->ncols == 3);
    if (r && !r->err) {
        CHECK_MEM(cell(r, 0, 0)->s, cell(r, 0, 0)->len, "b");
        CHECK_MEM(cell(r, 0, 1)->s, cell(r, 0, 1)->len, "a");
        CHECK_MEM(cell(r, 0, 2)->s, cell(r, 0, 2)->len, "?");
    }
    jj_db_result_free(r);
    r = run(db, 1, "SELEC 1", NULL, 0);
    CHECK(r && contains(r->err, "syntax error"));
    jj_db_result_free(r);
    r = run(db, 1, "SELECT 1; SELECT 2", NULL, 0);
    CHECK(r && r->err != NULL);
    jj_db_result_free(r);
    r = run(db, 0, "BEGIN", NULL, 0);
    CHECK(r && contains(r->err, "transaction"));
    jj_db_result_free(r);
    r = run(db, 0, "START TRANSACTION", NULL, 0);
    CHECK(r && contains(r->err, "transaction"));
    jj_db_result_free(r);
    /* the connection is usable (and not inside a transaction) afterwards */
    for (int i = 0; i < 4; i++) CHECK_INT(scalar(db, "SELECT 7"), 7);
    r = run(db, 1, "SELECT count(*) AS n FROM pg_stat_activity WHERE state = 'idle in transaction' "
                   "AND application_name = 'jollyjet'", NULL, 0);
    CHECK(r && !r->err && cell(r, 0, 0)->i == 0);
    jj_db_result_free(r);
}

static void test_batch(jj_db *db) {
    CHECK_INT(ok_exec(db, "CREATE TABLE k (name TEXT PRIMARY KEY, qty BIGINT)", NULL, 0), 0);
    jj_db_value a[] = {vtext("a"), vint(1)}, b[] = {vtext("b"), vint(2)};
    jj_db_stmt ok[] = {
        {"INSERT INTO k VALUES (?, ?)", 27, a, 2},
        {"INSERT INTO k VALUES (?, ?)", 27, b, 2},
        {"UPDATE k SET qty = qty * 10", 27, NULL, 0},
        {"SELECT name, qty FROM k ORDER BY name", 37, NULL, 0},
    };
    jj_db_result *r = run_batch(db, ok, 4);
    CHECK(r && !r->err);
    if (r && !r->err) {
        CHECK_INT(r->changes, 4);
        CHECK_INT(r->nrows, 2);
        CHECK_INT(cell(r, 1, 1)->i, 20);
    }
    jj_db_result_free(r);
    jj_db_stmt bad[] = {
        {"UPDATE k SET qty = 5", 20, NULL, 0},
        {"INSERT INTO k VALUES (?, ?)", 27, a, 2},   /* duplicate key */
    };
    r = run_batch(db, bad, 2);
    CHECK(r && contains(r->err, "statement 2: duplicate key"));
    jj_db_result_free(r);
    CHECK_INT(scalar(db, "SELECT sum(qty) FROM k"), 30);   /* nothing applied */
    jj_db_stmt early[] = {{"UPDATE k SET qty = 0", 20, NULL, 0}, {"COMMIT", 6, NULL, 0}};
    r = run_batch(db, early, 2);
    CHECK(r && contains(r->err, "transaction"));
    jj_db_result_free(r);
    CHECK_INT(scalar(db, "SELECT sum(qty) FROM k"), 30);
}

static void test_timeout_resets(jj_db *db) {
    jj_db_result *r = run_t(db, 1, "SELECT pg_sleep(5)", NULL, 0, 150);
    CHECK(r && contains(r->err, "timeout"));
    jj_db_result_free(r);
    /* still queued work times out too: both connections busy sleeping */
    capture c[3] = {{0, NULL}, {0, NULL}, {0, NULL}};
    jj_db_stmt s = {"SELECT pg_sleep(5)", 18, NULL, 0};
    pending = 3;
    for (int i = 0; i < 3; i++) CHECK_INT(jj_db_submit_timeout(db, 1, &s, 1, 200, on_capture, &c[i]), 0);
    wait_pending(10);
    for (int i = 0; i < 3; i++) {
        CHECK_INT(c[i].calls, 1);
        CHECK(c[i].res && contains(c[i].res->err, "timeout"));
        jj_db_result_free(c[i].res);
    }
    for (int i = 0; i < 6; i++) CHECK_INT(scalar(db, "SELECT 42"), 42);   /* reconnected */
    /* no server backend is left running the sleeps for long (the reset
     * connections' sessions end at the next client check) */
    spin(1.5);
    CHECK_INT(scalar(db, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(5)' "
                         "AND state = 'active'"), 0);
}

static void test_concurrent(jj_db *db) {
    enum { N = 200 };
    static capture c[N];
    static jj_db_value v[N];
    memset(c, 0, sizeof c);
    pending = N;
    for (int i = 0; i < N; i++) {
        v[i] = vint(i);
        jj_db_stmt s = {"SELECT ? + 1 AS n", 17, &v[i], 1};
        CHECK_INT(jj_db_submit_timeout(db, 1, &s, 1, 0, on_capture, &c[i]), 0);
    }
    wait_pending(30);
    int good = 0;
    for (int i = 0; i < N; i++) {
        good += c[i].calls == 1 && c[i].res && !c[i].res->err && cell(c[i].res, 0, 0)->i == i + 1;
        jj_db_result_free(c[i].res);
    }
    CHECK_INT(good, N);
}

static void test_statement_cache_evicts_on_the_server_too(void) {
    jj_db *db = open_db(url, 1);   /* one connection: every statement lands on it */
    if (!db) return;
    int right = 0;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < 150; i++) {
            char sql[64];
            snprintf(sql, sizeof sql, "SELECT %d + ? AS n", i);
            jj_db_value v = vint(round);
            jj_db_result *r = run(db, 1, sql, &v, 1);
            right += r && !r->err && cell(r, 0, 0)->i == i + round;
            jj_db_result_free(r);
        }
    }
    CHECK_INT(right, 300);
    int64_t held = scalar(db, "SELECT count(*) FROM pg_prepared_statements");
    CHECK(held >= 1 && held <= 64);
    jj_db_close(db);
}

static void test_server_down(void) {
    /* a port nothing listens on: calls fail at once, clearly, and healthy says 0 */
    char down[128];
    snprintf(down, sizeof down, "postgres://postgres@127.0.0.1:1/none?connect_timeout=2");
    jj_db *db = open_db(down, 2);
    if (!db) return;
    spin(0.3);   /* the first attempts fail */
    CHECK_INT(jj_db_healthy(db), 0);
    double t0 = ev_time();
    jj_db_result *r = run(db, 1, "SELECT 1", NULL, 0);
    CHECK(r && contains(r->err, "database unavailable"));
    CHECK(ev_time() - t0 < 1.0);
    jj_db_result_free(r);
    jj_db_close(db);
}

static void test_close_fails_pending(void) {
    jj_db *db = open_db(url, 1);
    if (!db) return;
    capture c[4] = {{0, NULL}, {0, NULL}, {0, NULL}, {0, NULL}};
    jj_db_stmt s = {"SELECT pg_sleep(2)", 18, NULL, 0};
    pending = 4;
    for (int i = 0; i < 4; i++) CHECK_INT(jj_db_submit_timeout(db, 1, &s, 1, 0, on_capture, &c[i]), 0);
    spin(0.3);   /* one running, three queued */
    jj_db_close(db);
    for (int i = 0; i < 4; i++) {
        CHECK_INT(c[i].calls, 1);
        CHECK(c[i].res && contains(c[i].res->err, "database closed"));
        jj_db_result_free(c[i].res);
    }
    pending = 0;
    /* nothing of the pool keeps the loop alive any more */
    CHECK_INT(ev_run(loop, EVRUN_NOWAIT), 0);
}

static void test_idle_loop_exits(void) {
    jj_db *db = open_db(url, 2);
    if (!db) return;
    CHECK_INT(scalar(db, "SELECT 1"), 1);
    /* connections up and idle: ev_run returns at once (no referenced watcher) */
    double t0 = ev_time();
    ev_run(loop, 0);
    CHECK(ev_time() - t0 < 0.5);
    jj_db_close(db);
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void test_migrate(void) {
    char dir[] = "/tmp/jj_test_pgmig.XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    /* the sleep makes the two migrating processes below overlap */
    write_file(dir, "001_a.sql", "CREATE TABLE mig_a (x BIGINT);\nSELECT pg_sleep(0.3);\n"
                                 "INSERT INTO mig_a VALUES (1);\n");
    write_file(dir, "002_b.sql", "SELECT no_such_function();\n");   /* shadowed by the .pg.sql */
    write_file(dir, "002_b.pg.sql", "INSERT INTO mig_a VALUES (2);\n");
    write_file(dir, "003_c.sqlite.sql", "this is not for PostgreSQL;\n");
    char err[512] = "";
    /* two instances starting at once: each migration is applied once */
    pid_t kids[2];
    for (int i = 0; i < 2; i++) {
        kids[i] = fork();
        if (kids[i] == 0) _exit(jj_db_migrate(url, dir, err, sizeof err) == 0 ? 0 : 1);
    }
    for (int i = 0; i < 2; i++) {
        int st = -1;
        waitpid(kids[i], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_INT(jj_db_migrate(url, dir, err, sizeof err), 0);   /* nothing left to apply */
    jj_db *db = open_db(url, 1);
    if (db) {
        CHECK_INT(scalar(db, "SELECT count(*) FROM mig_a"), 2);
        CHECK_INT(scalar(db, "SELECT count(*) FROM schema_migrations"), 2);
        CHECK_INT(scalar(db, "SELECT max(version) FROM schema_migrations"), 2);
        jj_db_close(db);
    }
    /* a failing migration rolls back whole and names itself */
    write_file(dir, "004_d.sql", "CREATE TABLE mig_d (x BIGINT);\nSELECT no_such_function();\n");
    CHECK_INT(jj_db_migrate(url, dir, err, sizeof err), -1);
    CHECK(contains(err, "004_d.sql") && contains(err, "no_such_function"));
    db = open_db(url, 1);
    if (db) {
        CHECK_INT(scalar(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'mig_d'"), 0);
        jj_db_close(db);
    }
    /* a bad name, two files of one dialect with one number */
    write_file(dir, "004_d.sql", "SELECT 1;\n");
    write_file(dir, "004_e.sql", "SELECT 1;\n");
    CHECK_INT(jj_db_migrate(url, dir, err, sizeof err), -1);
    CHECK(contains(err, "same number"));
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK_INT(system(cmd), 0);
    /* an unreachable server is a clear error */
    CHECK_INT(jj_db_migrate("postgres://postgres@127.0.0.1:1/x", dir, err, sizeof err), -1);
}

int main(void) {
    const char *base = getenv("JJ_TEST_PG_URL");
    if (!base || !*base) {
        fprintf(stderr, "JJ_TEST_PG_URL is not set: run the suite with make test\n");
        return 1;
    }
    snprintf(admin, sizeof admin, "%s", base);
    snprintf(dbname, sizeof dbname, "jj_unit_%d", (int)getpid());
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE %s", dbname);
    if (admin_exec(sql) != 0) return 1;
    const char *slash = strrchr(base, '/');
    snprintf(url, sizeof url, "%.*s/%s", (int)(slash - base), base, dbname);

    loop = ev_default_loop(0);
    test_url_checks();
    jj_db *db = open_db(url, 2);
    if (db) {
        test_roundtrip(db);
        test_placeholders_and_errors(db);
        test_batch(db);
        test_timeout_resets(db);
        test_concurrent(db);
        jj_db_close(db);
    }
    test_statement_cache_evicts_on_the_server_too();
    test_server_down();
    test_close_fails_pending();
    test_idle_loop_exits();
    test_migrate();
    ev_loop_destroy(loop);

    snprintf(sql, sizeof sql, "DROP DATABASE %s WITH (FORCE)", dbname);
    admin_exec(sql);
    return jj_test_done();
}
