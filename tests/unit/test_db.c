/* test_db.c: the SQLite pool (db.c) on a real libev loop and a temporary
 * database. Every wait on the loop is bounded by a guard timer, so a lost
 * callback fails the test instead of hanging it. */
#include "db.h"
#include "jj_db_test.h"
#include "jj_test.h"

#include <ev.h>
#include <ftw.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[] = "/tmp/jj_test_db.XXXXXX";

/* A string literal and its length. */
#define SQL(s) s, sizeof(s) - 1
#define SLOW_SQL(n) "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < " #n ") SELECT count(*) FROM c"

/* ------------------------------------------------------------- helpers */

static char *tmp_path(char *buf, size_t len, const char *name) {
    snprintf(buf, len, "%s/%s", tmpdir, name);
    return buf;
}

static jj_db *open_db(const char *name, int nthreads) {
    char path[256], err[256] = "";
    jj_db *db = jj_db_open(loop, tmp_path(path, sizeof path, name), nthreads, err, sizeof err);
    if (!db) fprintf(stderr, "jj_db_open: %s\n", err);
    CHECK(db != NULL);
    return db;
}

/* --------------------------------------------------------------- tests */

static void test_open_errors(void) {
    char err[256] = "";
    CHECK(jj_db_open(loop, "/nonexistent-dir/x/test.db", 1, err, sizeof err) == NULL);
    CHECK(contains(err, "/nonexistent-dir/x/test.db"));

    char path[256];
    FILE *f = fopen(tmp_path(path, sizeof path, "garbage.db"), "w");
    for (int i = 0; i < 256; i++) fputs("this is not a database file. ", f);
    fclose(f);
    err[0] = '\0';
    CHECK(jj_db_open(loop, path, 2, err, sizeof err) == NULL);
    CHECK(contains(err, "not a database"));

    err[0] = '\0';
    CHECK(jj_db_open(loop, path, 0, err, sizeof err) == NULL);
    CHECK(err[0] != '\0');
}

static void test_roundtrip(jj_db *db) {
    CHECK_INT(ok_exec(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT, f REAL, n INTEGER, b BLOB)",
                      NULL, 0), 0);
    const char *tricky = "it's \"quoted\"'); DROP TABLE t; --";
    const char *uni = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x9a\x80";
    const char blob[] = {'a', '\0', 'b', (char)0xff};
    jj_db_value p1[] = {vtext(tricky), vfloat(3.25), vnull(), vblob(blob, sizeof blob)};
    jj_db_result *r = run(db, 0, "INSERT INTO t (s, f, n, b) VALUES (?, ?, ?, ?)", p1, 4);
    CHECK(r && r->err == NULL);
    if (r) { CHECK_INT(r->changes, 1); CHECK_INT(r->last_insert_id, 1); CHECK(r->elapsed_ms >= 0); }
    jj_db_result_free(r);

    jj_db_value p2[] = {vtext(uni), vnull(), vint(INT64_MIN), vblob("", 0)};
    r = run(db, 0, "INSERT INTO t (s, f, n, b) VALUES (?1, ?2, ?3, ?4)", p2, 4);
    CHECK(r && r->err == NULL);
    if (r) { CHECK_INT(r->changes, 1); CHECK_INT(r->last_insert_id, 2); }
    jj_db_result_free(r);

    jj_db_value p3[] = {vtext(""), vint(9007199254740993LL)};
    r = run(db, 0, "INSERT INTO t (s, n) VALUES (?, ?)", p3, 2);
    CHECK(r && r->err == NULL && r->last_insert_id == 3);
    jj_db_result_free(r);

    r = run(db, 1, "SELECT id, s, f, n, b FROM t ORDER BY id", NULL, 0);
    CHECK(r && r->err == NULL);
    if (!r || r->err) { jj_db_result_free(r); return; }
    CHECK_INT(r->ncols, 5);
    CHECK_INT(r->nrows, 3);
    CHECK_STR(r->names[0], "id");
    CHECK_STR(r->names[1], "s");
    CHECK_STR(r->names[4], "b");
    CHECK_INT(cell(r, 0, 0)->type, JJ_DB_INT);
    CHECK_INT(cell(r, 0, 0)->i, 1);
    CHECK_INT(cell(r, 0, 1)->type, JJ_DB_TEXT);
    CHECK_MEM(cell(r, 0, 1)->s, cell(r, 0, 1)->len, tricky);
    CHECK_STR(cell(r, 0, 1)->s, tricky);   /* TEXT is NUL-terminated too */
    CHECK_INT(cell(r, 0, 2)->type, JJ_DB_FLOAT);
    CHECK(cell(r, 0, 2)->d == 3.25);
    CHECK_INT(cell(r, 0, 3)->type, JJ_DB_NULL);
    CHECK_INT(cell(r, 0, 4)->type, JJ_DB_BLOB);
    CHECK_INT(cell(r, 0, 4)->len, 4);
    CHECK(memcmp(cell(r, 0, 4)->s, blob, 4) == 0);

    CHECK_INT(cell(r, 1, 1)->type, JJ_DB_TEXT);
    CHECK_MEM(cell(r, 1, 1)->s, cell(r, 1, 1)->len, uni);
    CHECK_INT(cell(r, 1, 2)->type, JJ_DB_NULL);
    CHECK_INT(cell(r, 1, 3)->type, JJ_DB_INT);
    CHECK(cell(r, 1, 3)->i == INT64_MIN);
    CHECK_INT(cell(r, 1, 4)->type, JJ_DB_BLOB);
    CHECK_INT(cell(r, 1, 4)->len, 0);
    CHECK(cell(r, 1, 4)->s != NULL);

    CHECK_INT(cell(r, 2, 1)->type, JJ_DB_TEXT);
    CHECK_INT(cell(r, 2, 1)->len, 0);
    CHECK(cell(r, 2, 1)->s != NULL && cell(r, 2, 1)->s[0] == '\0');
    CHECK(cell(r, 2, 3)->i == 9007199254740993LL);
    CHECK_INT(cell(r, 2, 4)->type, JJ_DB_NULL);
    jj_db_result_free(r);

    /* A bound parameter is data, never SQL: the table is still there. */
    jj_db_value q[] = {vtext(tricky)};
    r = run(db, 1, "SELECT count(*) AS n FROM t WHERE s = ?", q, 1);
    CHECK(r && !r->err && r->nrows == 1 && cell(r, 0, 0)->i == 1);
    if (r && !r->err) CHECK_STR(r->names[0], "n");
    jj_db_result_free(r);

    /* No rows: the columns are still described. */
    r = run(db, 1, "SELECT id, s FROM t WHERE id < 0", NULL, 0);
    CHECK(r && !r->err && r->nrows == 0 && r->ncols == 2);
    if (r && r->ncols == 2) CHECK_STR(r->names[1], "s");
    jj_db_result_free(r);
}

static void test_exec_counts(jj_db *db) {
    jj_db_result *r = run(db, 0, "UPDATE t SET n = 7 WHERE id <= 2", NULL, 0);
    CHECK(r && !r->err && r->changes == 2 && r->last_insert_id == 0);
    jj_db_result_free(r);
    /* sqlite3_changes() would still say 2 here: not DML, no changes. */
    r = run(db, 0, "CREATE TABLE IF NOT EXISTS other (x)", NULL, 0);
    CHECK(r && !r->err && r->changes == 0);
    jj_db_result_free(r);
    r = run(db, 0, "DELETE FROM t WHERE id = 999", NULL, 0);
    CHECK(r && !r->err && r->changes == 0);
    jj_db_result_free(r);
    /* Statement reuse from the cache with other parameters. */
    for (int i = 0; i < 3; i++) {
        jj_db_value p[] = {vint(100 + i)};
        r = run(db, 0, "INSERT INTO other (x) VALUES (?)", p, 1);
        CHECK(r && !r->err && r->changes == 1);
        jj_db_result_free(r);
    }
    CHECK_INT(scalar(db, "SELECT sum(x) FROM other"), 303);
    /* A query that writes (RETURNING) reports rows and changes. */
    jj_db_value p[] = {vint(5)};
    r = run(db, 1, "INSERT INTO other (x) VALUES (?) RETURNING x * 2 AS y", p, 1);
    CHECK(r && !r->err && r->nrows == 1 && r->changes == 1 && cell(r, 0, 0)->i == 10);
    jj_db_result_free(r);
}

static void test_errors(jj_db *db) {
    jj_db_result *r = run(db, 1, "SELEC id FROM t", NULL, 0);
    CHECK(r && contains(r->err, "syntax error"));
    if (r) CHECK(r->nrows == 0 && r->ncols == 0 && r->values == NULL);
    jj_db_result_free(r);

    jj_db_value dup[] = {vint(1), vtext("x")};
    r = run(db, 0, "INSERT INTO t (id, s) VALUES (?, ?)", dup, 2);
    CHECK(r && contains(r->err, "UNIQUE constraint failed"));
    jj_db_result_free(r);

    r = run(db, 1, "SELECT * FROM no_such_table", NULL, 0);
    CHECK(r && contains(r->err, "no such table"));
    jj_db_result_free(r);

    r = run(db, 1, "SELECT ? + ?", dup, 1);
    CHECK(r && contains(r->err, "2 parameters, got 1"));
    jj_db_result_free(r);

    r = run(db, 0, "DELETE FROM t; DELETE FROM other", NULL, 0);
    CHECK(r && contains(r->err, "one statement"));
    jj_db_result_free(r);
    CHECK_INT(scalar(db, "SELECT count(*) FROM t"), 3);

    r = run(db, 0, "SELECT 1;  -- trailing comment is fine\n", NULL, 0);
    CHECK(r && r->err == NULL);
    jj_db_result_free(r);

    r = run(db, 0, "  ", NULL, 0);
    CHECK(r && r->err != NULL);
    jj_db_result_free(r);

    r = run(db, 0, "BEGIN", NULL, 0);
    CHECK(r && contains(r->err, "transaction"));
    jj_db_result_free(r);
    r = run(db, 0, "SAVEPOINT sp", NULL, 0);
    CHECK(r && contains(r->err, "transaction"));
    jj_db_result_free(r);
    /* ...and the connection was not left inside a transaction. */
    CHECK_INT(ok_exec(db, "INSERT INTO other (x) VALUES (1)", NULL, 0), 1);

    /* Bad input is refused at submit; the callback never runs. */
    capture c = {0, NULL};
    jj_db_value bad = {99, 0, 0, NULL, 0};
    CHECK_INT(jj_db_submit(db, 1, SQL("SELECT ?"), &bad, 1, on_capture, &c), -1);
    jj_db_stmt none[1] = {{NULL, 0, NULL, 0}};
    CHECK_INT(jj_db_submit_batch(db, none, 0, on_capture, &c), -1);
    CHECK_INT(c.calls, 0);
    CHECK_INT(jj_db_healthy(db), 1);
}

static void test_batch(jj_db *db) {
    CHECK_INT(ok_exec(db, "CREATE TABLE acct (name TEXT PRIMARY KEY, balance INTEGER NOT NULL CHECK (balance >= 0))",
                      NULL, 0), 0);
    jj_db_value a[] = {vtext("alice"), vint(100)}, b[] = {vtext("bob"), vint(50)};
    jj_db_value amt[] = {vint(30), vtext("alice")}, amt2[] = {vint(30), vtext("bob")};
    jj_db_stmt ok[] = {
        {SQL("INSERT INTO acct VALUES (?, ?)"), a, 2},
        {SQL("INSERT INTO acct VALUES (?, ?)"), b, 2},
        {SQL("UPDATE acct SET balance = balance - ? WHERE name = ?"), amt, 2},
        {SQL("UPDATE acct SET balance = balance + ? WHERE name = ?"), amt2, 2},
        {SQL("SELECT name, balance FROM acct ORDER BY name"), NULL, 0},
    };
    jj_db_result *r = run_batch(db, ok, 5);
    CHECK(r && r->err == NULL);
    if (r && !r->err) {
        CHECK_INT(r->changes, 4);
        CHECK_INT(r->last_insert_id, 2);
        CHECK_INT(r->nrows, 2);
        CHECK_INT(r->ncols, 2);
        CHECK_STR(cell(r, 0, 0)->s, "alice");
        CHECK_INT(cell(r, 0, 1)->i, 70);
        CHECK_INT(cell(r, 1, 1)->i, 80);
    }
    jj_db_result_free(r);

    /* The second statement violates the CHECK: the first is undone too. */
    jj_db_value big[] = {vint(1000), vtext("alice")};
    jj_db_value carol[] = {vtext("carol"), vint(1)};
    jj_db_stmt bad[] = {
        {SQL("INSERT INTO acct VALUES (?, ?)"), carol, 2},
        {SQL("UPDATE acct SET balance = balance - ? WHERE name = ?"), big, 2},
        {SQL("UPDATE acct SET balance = balance + ? WHERE name = ?"), amt2, 2},
    };
    r = run_batch(db, bad, 3);
    CHECK(r && contains(r->err, "statement 2: CHECK constraint failed"));
    if (r) CHECK(r->changes == 0 && r->nrows == 0);
    jj_db_result_free(r);
    CHECK_INT(scalar(db, "SELECT count(*) FROM acct"), 2);
    CHECK_INT(scalar(db, "SELECT balance FROM acct WHERE name = 'alice'"), 70);

    /* A statement may not end the batch's transaction early. */
    jj_db_stmt sneaky[] = {
        {SQL("INSERT INTO acct VALUES (?, ?)"), carol, 2},
        {SQL("COMMIT"), NULL, 0},
        {SQL("SELEC"), NULL, 0},
    };
    r = run_batch(db, sneaky, 3);
    CHECK(r && contains(r->err, "statement 2:"));
    jj_db_result_free(r);
    CHECK_INT(scalar(db, "SELECT count(*) FROM acct"), 2);

    /* A batch ending in a write has no rows. */
    jj_db_stmt w[] = {{SQL("DELETE FROM acct WHERE name = 'bob'"), NULL, 0}};
    r = run_batch(db, w, 1);
    CHECK(r && !r->err && r->changes == 1 && r->ncols == 0 && r->nrows == 0);
    jj_db_result_free(r);
}

typedef struct counted {
    int calls[200];
    int errors;
} counted;

static counted cnt;

static void on_counted(jj_db_result *res, void *pd) {
    int i = (int)(intptr_t)pd;
    cnt.calls[i]++;
    if (res->err) { cnt.errors++; fprintf(stderr, "job %d: %s\n", i, res->err); }
    jj_db_result_free(res);
    if (--pending == 0) ev_break(loop, EVBREAK_ALL);
}

static void test_concurrent(jj_db *db) {
    CHECK_INT(ok_exec(db, "CREATE TABLE c (i INTEGER PRIMARY KEY, v TEXT)", NULL, 0), 0);
    memset(&cnt, 0, sizeof cnt);
    pending = 0;
    for (int i = 0; i < 200; i++) {
        char text[32];
        snprintf(text, sizeof text, "value %d", i);
        jj_db_value p[] = {vint(i), vtext(text)};   /* copied by submit */
        int rc = (i % 2 == 0)
            ? jj_db_submit(db, 0, SQL("INSERT INTO c (i, v) VALUES (?, ?)"), p, 2, on_counted, (void *)(intptr_t)i)
            : jj_db_submit(db, 1, SQL("SELECT count(*) FROM c WHERE i < ?"), p, 1, on_counted, (void *)(intptr_t)i);
        CHECK_INT(rc, 0);
        if (rc == 0) pending++;
    }
    wait_pending(120);
    int once = 0;
    for (int i = 0; i < 200; i++) once += cnt.calls[i] == 1;
    CHECK_INT(once, 200);
    CHECK_INT(cnt.errors, 0);
    CHECK_INT(scalar(db, "SELECT count(*) FROM c"), 100);
    CHECK_INT(scalar(db, "SELECT count(*) FROM c WHERE v = 'value ' || i"), 100);
}

static int ticks;
static void on_tick(struct ev_loop *l, ev_timer *w, int revents) { (void)l; (void)w; (void)revents; ticks++; }

static void test_slow_does_not_block(jj_db *db) {
    ev_timer tick;
    ev_timer_init(&tick, on_tick, 0.01, 0.01);
    ev_timer_start(loop, &tick);
    ticks = 0;
    double t0 = ev_time();
    jj_db_result *r = run(db, 1, SLOW_SQL(2000000), NULL, 0);
    double wall_ms = (ev_time() - t0) * 1000.0;
    ev_timer_stop(loop, &tick);
    CHECK(r && !r->err && r->nrows == 1 && cell(r, 0, 0)->i == 2000000);
    /* The loop kept ticking while the statement ran on a pool thread. */
    printf("slow statement: %.0f ms, %d ticks of 10 ms\n", wall_ms, ticks);
    CHECK(ticks >= 3);
    /* valgrind runs one thread at a time, so only the ratio is meaningless there */
    if (!getenv("JJ_UNDER_VALGRIND")) CHECK(ticks >= (int)(wall_ms / 10.0 / 3.0));
    jj_db_result_free(r);
}

static void test_queue_limit(void) {
    jj_db *db = open_db("limit.db", 1);
    if (!db) return;
    memset(&cnt, 0, sizeof cnt);
    pending = 0;
    capture slow = {0, NULL};
    CHECK_INT(jj_db_submit(db, 1, SLOW_SQL(1000000), strlen(SLOW_SQL(1000000)), NULL, 0, on_capture, &slow), 0);
    pending++;
    /* The only thread is busy: the queue fills and then refuses. */
    int accepted = 0, refused = 0;
    for (int i = 0; i < 20000 && !refused; i++) {
        if (jj_db_submit(db, 1, SQL("SELECT 1"), NULL, 0, on_counted, (void *)(intptr_t)(i % 200)) == 0) {
            accepted++;
            pending++;
        } else {
            refused++;
        }
    }
    CHECK_INT(refused, 1);
    CHECK(accepted >= 9999 && accepted <= 10000);
    wait_pending(240);
    int total = 0;
    for (int i = 0; i < 200; i++) total += cnt.calls[i];
    CHECK_INT(total, accepted);
    CHECK_INT(slow.calls, 1);
    jj_db_result_free(slow.res);
    jj_db_close(db);
}

typedef struct closing {
    int calls[24];
    int closed_errs, ok, resubmit_refused;
    jj_db *db;
} closing;

static closing cl;

static void on_closing(jj_db_result *res, void *pd) {
    int i = (int)(intptr_t)pd;
    cl.calls[i]++;
    if (res->err && strcmp(res->err, "database closed") == 0) cl.closed_errs++;
    else if (!res->err) cl.ok++;
    /* Submitting from a callback during close is refused, not queued. */
    if (jj_db_submit(cl.db, 1, SQL("SELECT 1"), NULL, 0, on_closing, pd) != 0) cl.resubmit_refused++;
    jj_db_result_free(res);
}

static void test_close_fails_queued(void) {
    memset(&cl, 0, sizeof cl);
    cl.db = open_db("close.db", 2);
    if (!cl.db) return;
    for (int i = 0; i < 24; i++) {
        const char *sql = i < 2 ? SLOW_SQL(300000) : "SELECT 1";
        CHECK_INT(jj_db_submit(cl.db, 1, sql, strlen(sql), NULL, 0, on_closing, (void *)(intptr_t)i), 0);
    }
    jj_db_close(cl.db);   /* the callbacks all ran by now, without the loop */
    int once = 0;
    for (int i = 0; i < 24; i++) once += cl.calls[i] == 1;
    CHECK_INT(once, 24);
    CHECK_INT(cl.closed_errs + cl.ok, 24);
    CHECK(cl.closed_errs >= 12);
    CHECK_INT(cl.resubmit_refused, 24);
    /* Nothing left on the loop: it has no active watchers. */
    CHECK_INT(ev_run(loop, EVRUN_NOWAIT), 0);
}

static int closer_calls;
static jj_db *closer_db;

static void on_close_inside(jj_db_result *res, void *pd) {
    (void)pd;
    closer_calls++;
    jj_db_result_free(res);
    if (closer_db) { jj_db *d = closer_db; closer_db = NULL; jj_db_close(d); }
}

static void test_close_from_callback(void) {
    closer_db = open_db("close2.db", 2);
    if (!closer_db) return;
    closer_calls = 0;
    for (int i = 0; i < 10; i++) CHECK_INT(jj_db_submit(closer_db, 1, SQL("SELECT 1"), NULL, 0, on_close_inside, NULL), 0);
    guard_fired = 0;
    ev_timer_init(&guard, on_guard, 30, 0.);
    ev_timer_start(loop, &guard);
    ev_unref(loop);            /* the guard alone does not keep the loop up */
    ev_run(loop, 0);           /* returns once the pool owes no callback */
    ev_ref(loop);
    ev_timer_stop(loop, &guard);
    CHECK(!guard_fired);
    CHECK_INT(closer_calls, 10);
    CHECK(closer_db == NULL);
}

static void test_idle_loop_exits(void) {
    jj_db *db = open_db("idle.db", 1);
    if (!db) return;
    capture c = {0, NULL};
    CHECK_INT(jj_db_submit(db, 1, SQL("SELECT 42"), NULL, 0, on_capture, &c), 0);
    pending = 1;
    guard_fired = 0;
    ev_timer_init(&guard, on_guard, 30, 0.);
    ev_timer_start(loop, &guard);
    ev_unref(loop);
    ev_run(loop, 0);
    ev_ref(loop);
    ev_timer_stop(loop, &guard);
    CHECK(!guard_fired);
    CHECK_INT(c.calls, 1);
    CHECK(c.res && !c.res->err && cell(c.res, 0, 0)->i == 42);
    jj_db_result_free(c.res);
    jj_db_close(db);
}

static void test_health(void) {
    jj_db *db = open_db("health.db", 1);
    if (!db) return;
    CHECK_INT(jj_db_healthy(db), 1);
    CHECK_INT(ok_exec(db, "CREATE TABLE h (x)", NULL, 0), 0);
    CHECK_INT(ok_exec(db, "PRAGMA query_only = ON", NULL, 0), 0);
    jj_db_result *r = run(db, 0, "INSERT INTO h VALUES (1)", NULL, 0);
    CHECK(r && contains(r->err, "readonly"));
    jj_db_result_free(r);
    CHECK_INT(jj_db_healthy(db), 0);
    CHECK_INT(ok_exec(db, "PRAGMA query_only = OFF", NULL, 0), 0);
    CHECK_INT(jj_db_healthy(db), 1);
    jj_db_close(db);
}

/* ---------------------------------------------------------- migrations */

static void write_file(const char *dir, const char *name, const char *text) {
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    CHECK(f != NULL);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* engine/migrations of this source tree (__FILE__ is tests/unit/test_db.c
 * relative to the tree, or absolute). */
static void repo_migrations(char *buf, size_t len) {
    const char *file = __FILE__, *suffix = "tests/unit/test_db.c";
    size_t n = strlen(file), s = strlen(suffix);
    size_t prefix = n >= s && strcmp(file + n - s, suffix) == 0 ? n - s : 0;
    snprintf(buf, len, "%.*sengine/migrations", (int)prefix, file);
}

static void test_migrate(void) {
    char path[256], mig[256], dir[256], err[512];
    tmp_path(path, sizeof path, "mig.db");
    repo_migrations(mig, sizeof mig);

    err[0] = '\0';
    int rc = jj_db_migrate(path, mig, err, sizeof err);
    if (rc != 0) fprintf(stderr, "migrate: %s\n", err);
    CHECK_INT(rc, 0);
    CHECK_INT(jj_db_migrate(path, mig, err, sizeof err), 0);   /* idempotent */

    jj_db *db = open_db("mig.db", 2);
    if (!db) return;
    /* every migration of the tree applied: init, cache journal, seed */
    CHECK(scalar(db, "PRAGMA user_version") >= 3);
    CHECK_INT(scalar(db, "SELECT count(*) FROM sqlite_schema WHERE name IN ('products', 'wishlist', 'cache_journal')"), 3);
    CHECK(scalar(db, "SELECT count(*) FROM products") >= 200);
    CHECK_INT(scalar(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'products' AND sql IS NOT NULL"), 2);
    jj_db_value prod[] = {vtext("p1"), vtext("Kettle"), vint(1999), vtext("kitchen"),
                          vtext("2024-01-01T00:00:00Z"), vtext("2024-01-01T00:00:00Z")};
    const char *ins = "INSERT INTO products (id, name, price_cents, category, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)";
    CHECK_INT(ok_exec(db, ins, prod, 6), 1);
    CHECK_INT(scalar(db, "SELECT stock + wishlist_count + version + is_active FROM products WHERE id = 'p1'"), 2);
    jj_db_value neg[] = {vtext("p2"), vtext("Bad"), vint(-1), vtext("x"), vtext("t"), vtext("t")};
    jj_db_result *r = run(db, 0, ins, neg, 6);
    CHECK(r && contains(r->err, "CHECK constraint failed"));
    jj_db_result_free(r);
    /* Foreign keys are enforced on pool connections, and cascade. */
    jj_db_value wl[] = {vtext("s1"), vtext("nope"), vtext("t")};
    const char *wins = "INSERT INTO wishlist (session_id, product_id, created_at) VALUES (?, ?, ?)";
    r = run(db, 0, wins, wl, 3);
    CHECK(r && contains(r->err, "FOREIGN KEY constraint failed"));
    jj_db_result_free(r);
    wl[1] = vtext("p1");
    CHECK_INT(ok_exec(db, wins, wl, 3), 1);
    CHECK_INT(ok_exec(db, "DELETE FROM products WHERE id = 'p1'", NULL, 0), 1);
    CHECK_INT(scalar(db, "SELECT count(*) FROM wishlist"), 0);
    jj_db_close(db);

    /* A temporary migrations dir: 001 (the real one), then 002 added. */
    tmp_path(dir, sizeof dir, "migrations");
    CHECK_INT(mkdir(dir, 0700), 0);
    char src[512];
    snprintf(src, sizeof src, "%s/001_init.sql", mig);
    char *init = slurp(src);
    CHECK(init != NULL);
    if (!init) return;
    write_file(dir, "001_init.sql", init);
    write_file(dir, "README.md", "not a migration");
    tmp_path(path, sizeof path, "mig2.db");
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), 0);
    write_file(dir, "002_sku.sql", "ALTER TABLE products ADD COLUMN sku TEXT;\n"
                                   "CREATE UNIQUE INDEX products_sku ON products (sku);\n");
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), 0);
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), 0);

    /* A broken 003 is reported by name; 002 stays, 003 leaves no trace. */
    write_file(dir, "003_broken.sql", "CREATE TABLE half (a);\nINSERT INTO no_such_table VALUES (1);\n");
    err[0] = '\0';
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), -1);
    CHECK(contains(err, "003_broken.sql: "));
    CHECK(contains(err, "no such table: no_such_table"));
    write_file(dir, "003_broken.sql", "CREATE TABLE half (a);\nCOMMIT;\n");
    err[0] = '\0';
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), -1);
    CHECK(contains(err, "003_broken.sql: transaction control"));

    db = open_db("mig2.db", 1);
    if (db) {
        CHECK_INT(scalar(db, "PRAGMA user_version"), 2);
        CHECK_INT(scalar(db, "SELECT count(*) FROM pragma_table_info('products') WHERE name = 'sku'"), 1);
        CHECK_INT(scalar(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'half'"), 0);
        jj_db_close(db);
    }

    /* Fixing 003 applies it. */
    write_file(dir, "003_broken.sql", "CREATE TABLE half (a);\n-- done\n");
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), 0);

    /* Misnamed and duplicate files are errors, not silently skipped. */
    write_file(dir, "04_short.sql", "SELECT 1;");
    err[0] = '\0';
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), -1);
    CHECK(contains(err, "04_short.sql"));
    char p2[512];
    snprintf(p2, sizeof p2, "%s/04_short.sql", dir);
    unlink(p2);
    write_file(dir, "0003_again.sql", "SELECT 1;");
    err[0] = '\0';
    CHECK_INT(jj_db_migrate(path, dir, err, sizeof err), -1);
    CHECK(contains(err, "same number"));

    /* A missing directory names it. */
    err[0] = '\0';
    CHECK_INT(jj_db_migrate(path, "/nonexistent/migrations-dir", err, sizeof err), -1);
    CHECK(contains(err, "/nonexistent/migrations-dir"));
}

/* ---------------------------------------------------------------- main */

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb; (void)flag; (void)ftw;
    return remove(p);
}

int main(void) {
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 1; }
    loop = ev_loop_new(EVFLAG_AUTO);

    test_open_errors();
    jj_db *db = open_db("test.db", 2);
    if (db) {
        test_roundtrip(db);
        test_exec_counts(db);
        test_errors(db);
        test_batch(db);
        test_concurrent(db);
        test_slow_does_not_block(db);
        jj_db_close(db);
    }
    test_queue_limit();
    test_close_fails_queued();
    test_close_from_callback();
    test_idle_loop_exits();
    test_health();
    test_migrate();

    ev_loop_destroy(loop);
    nftw(tmpdir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return jj_test_done();
}
