/* db_sqlite.c: the SQLite backend of db.h, a thread pool.
 *
 * Threads and ownership, in one place:
 *
 *   loop thread                      pool thread (one sqlite3 each)
 *   -----------                      ------------------------------
 *   jj_db_submit*: copies SQL and
 *   parameters into one job block,
 *   preallocates its result, and
 *   appends it to `queue`     ---->  pops a job (the job is now the thread's),
 *                                    runs it, fills job->res, appends the
 *   on_async: pops `done`,    <----  job to `done`, ev_async_send
 *   calls cb(res) (res is now the
 *   receiver's), frees the job.
 *
 * A job is owned by exactly one side at a time and moves between sides only
 * under `mu`. The SQL text and parameter bytes live inside the job block,
 * so they stay valid while the statement runs (bound SQLITE_STATIC). A
 * result is built by the pool thread in private buffers and handed over
 * whole; nothing in it points into the job or into SQLite.
 *
 * Each connection is used by one thread only (SQLITE_OPEN_NOMUTEX). The
 * connections are opened on the caller's thread in jj_db_open, so open
 * errors are reported synchronously, then handed to their threads by
 * pthread_create (which orders the two).
 *
 * The ev_async watcher is unreferenced while no job is in flight, so the
 * pool keeps ev_run alive only while it owes a callback.
 */
#include "db_internal.h"
#include "log.h"

#include <errno.h>
#include <ev.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define QUEUE_LIMIT 10000      /* queued (not yet running) jobs */
#define CACHE_SIZE 32          /* prepared statements per connection */
/* How long a statement waits for a lock another connection holds before it
 * fails with SQLITE_BUSY ("database is locked", answered 503 database_busy
 * with nothing changed). Well under DB_TIMEOUT_MS (default 5000): past that
 * the caller gets "timeout" while the statement still runs and may commit. */
#define BUSY_TIMEOUT_MS 1000
#define MIGRATE_BUSY_TIMEOUT_MS 5000   /* at start, before anything is served */
#define MAX_THREADS 64

enum { JOB_QUERY = JJ_DB_KIND_QUERY, JOB_EXEC = JJ_DB_KIND_EXEC, JOB_BATCH = JJ_DB_KIND_BATCH };

typedef struct sq_db sq_db;

typedef struct job {
    struct job *next;
    int kind;
    int nstmts;
    jj_db_stmt *stmts;      /* inside this block, as are their SQL and params */
    jj_db_cb *cb;
    void *privdata;
    jj_db_result *res;      /* preallocated at submit, filled by the pool thread */
} job;

typedef jj_db_result_impl result_impl;

typedef struct cached {
    char *sql;              /* owned copy of the key */
    size_t len;
    uint64_t hash;
    uint64_t used;          /* LRU tick */
    sqlite3_stmt *st;
    int txn_control;        /* BEGIN/COMMIT/END/ROLLBACK: refused */
} cached;

typedef struct conn {
    sq_db *pool;
    sqlite3 *db;
    pthread_t tid;
    int started;
    uint64_t tick;
    cached cache[CACHE_SIZE];
} conn;

struct sq_db {
    jj_db base;             /* first: a jj_db * is an sq_db * */
    struct ev_loop *loop;
    ev_async async;
    pthread_mutex_t mu;     /* guards queue, qlen, done, closing */
    pthread_cond_t cv;      /* queue became non-empty, or closing */
    job *qhead, *qtail;
    int qlen;
    job *dhead, *dtail;
    int closing;
    atomic_int healthy;
    int nthreads;
    conn *conns;
    /* loop thread only */
    unsigned inflight;      /* submitted, callback not yet run */
    int closed;
    int dispatching;        /* depth of on_async/close callback loops */
    int free_deferred;      /* closed from inside a callback: free on unwind */
    jj_db_metrics metrics;  /* durations: ms on the pool thread */
};

/* ------------------------------------------------------------ helpers */

static int add_size(size_t *acc, size_t n) {
    if (n > SIZE_MAX - *acc) return -1;
    *acc += n;
    return 0;
}

static uint64_t fnv1a(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

/* Errors that say the database itself is unusable (as opposed to a bad
 * statement or a constraint): they make jj_db_healthy report 0. */
static int fatal_rc(int rc) {
    switch (rc & 0xff) {
    case SQLITE_CANTOPEN: case SQLITE_IOERR: case SQLITE_CORRUPT:
    case SQLITE_NOTADB: case SQLITE_READONLY: case SQLITE_FULL: case SQLITE_PERM:
        return 1;
    default:
        return 0;
    }
}

/* ------------------------------------------------------ statement cache */

static void cache_clear(conn *c) {
    for (int i = 0; i < CACHE_SIZE; i++) {
        if (c->cache[i].st) sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
        memset(&c->cache[i], 0, sizeof c->cache[i]);
    }
}

/* The prepared statement for sql on c, from the cache or freshly prepared
 * (evicting the least recently used entry). The statement stays owned by
 * the cache; the caller resets it after use. On error returns NULL and sets
 * *err (malloc'd; NULL means out of memory) and *rc. */
static sqlite3_stmt *cache_get(conn *c, const char *sql, size_t len, int *txn,
                               char **err, int *rc) {
    uint64_t h = fnv1a(sql, len);
    cached *victim = &c->cache[0];
    for (int i = 0; i < CACHE_SIZE; i++) {
        cached *e = &c->cache[i];
        if (e->st && e->hash == h && e->len == len && memcmp(e->sql, sql, len) == 0) {
            e->used = ++c->tick;
            *txn = e->txn_control;
            return e->st;
        }
        if (!e->st) { if (victim->st) victim = e; }
        else if (victim->st && e->used < victim->used) victim = e;
    }
    *rc = SQLITE_ERROR;
    if (len >= INT_MAX) { *err = jj_db_fmt_alloc("statement too long"); return NULL; }
    if (memchr(sql, '\0', len)) { *err = jj_db_fmt_alloc("SQL contains a NUL byte"); return NULL; }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL;
    /* len + 1: the text is NUL-terminated (see run_stmt), which saves
     * SQLite a copy. */
    int r = sqlite3_prepare_v3(c->db, sql, (int)len + 1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (r != SQLITE_OK) {
        *rc = r;
        *err = jj_db_fmt_alloc("%s", sqlite3_errmsg(c->db));
        return NULL;
    }
    if (!st) { *err = jj_db_fmt_alloc("empty statement"); return NULL; }
    /* Refuse trailing statements instead of silently ignoring them. */
    size_t rest = len - (size_t)(tail - sql);
    while (rest > 0 && strchr(" \t\r\n\f\v;", *tail) && *tail) { tail++; rest--; }
    if (rest > 0) {
        sqlite3_stmt *st2 = NULL;
        r = sqlite3_prepare_v2(c->db, tail, (int)rest, &st2, NULL);
        if (r != SQLITE_OK || st2) {
            *rc = r == SQLITE_OK ? SQLITE_ERROR : r;
            *err = r != SQLITE_OK ? jj_db_fmt_alloc("%s", sqlite3_errmsg(c->db))
                                  : jj_db_fmt_alloc("one statement per call (use a batch for several)");
            sqlite3_finalize(st2);
            sqlite3_finalize(st);
            return NULL;
        }
    }
    char *key = malloc(len + 1);
    if (!key) { sqlite3_finalize(st); *rc = SQLITE_NOMEM; *err = NULL; return NULL; }
    memcpy(key, sql, len);
    key[len] = '\0';
    if (victim->st) sqlite3_finalize(victim->st);
    free(victim->sql);
    victim->sql = key;
    victim->len = len;
    victim->hash = h;
    victim->used = ++c->tick;
    victim->st = st;
    victim->txn_control = jj_db_is_txn_control(sql, len);
    *txn = victim->txn_control;
    return st;
}

/* ------------------------------------------------------ result building */

/* Rows as they are stepped. TEXT/BLOB values keep their offset into `bytes`
 * in .i until finish_rows turns it into a pointer (bytes may move while it
 * grows). Names are offsets into bytes too. */
typedef struct builder {
    jj_db_value *vals;
    size_t nvals, capvals;
    char *bytes;
    size_t nbytes, capbytes;
    size_t *name_off;
    int ncols;
    size_t nrows;
} builder;

static void builder_free(builder *b) {
    free(b->vals);
    free(b->bytes);
    free(b->name_off);
    memset(b, 0, sizeof *b);
}

/* Appends len bytes plus a NUL; returns their offset or SIZE_MAX. */
static size_t put_bytes(builder *b, const void *p, size_t len) {
    size_t need = b->nbytes;
    if (add_size(&need, len) || add_size(&need, 1)) return SIZE_MAX;
    if (need > b->capbytes) {
        size_t cap = b->capbytes ? b->capbytes : 256;
        while (cap < need) { if (cap > SIZE_MAX / 2) { cap = need; break; } cap *= 2; }
        char *nb = realloc(b->bytes, cap);
        if (!nb) return SIZE_MAX;
        b->bytes = nb;
        b->capbytes = cap;
    }
    size_t off = b->nbytes;
    if (len) memcpy(b->bytes + off, p, len);
    b->bytes[off + len] = '\0';
    b->nbytes = need;
    return off;
}

static jj_db_value *new_value(builder *b) {
    if (b->nvals == b->capvals) {
        size_t cap = b->capvals ? b->capvals * 2 : 64;
        if (cap > SIZE_MAX / sizeof *b->vals) return NULL;
        jj_db_value *nv = realloc(b->vals, cap * sizeof *nv);
        if (!nv) return NULL;
        b->vals = nv;
        b->capvals = cap;
    }
    jj_db_value *v = &b->vals[b->nvals++];
    memset(v, 0, sizeof *v);
    return v;
}

/* Records st's column names (the batch's last statement replaces any
 * earlier set). Returns 0 or -1 when out of memory. */
static int begin_rows(builder *b, sqlite3_stmt *st) {
    builder_free(b);
    b->ncols = sqlite3_column_count(st);
    if (b->ncols == 0) return 0;
    b->name_off = malloc((size_t)b->ncols * sizeof *b->name_off);
    if (!b->name_off) return -1;
    for (int c = 0; c < b->ncols; c++) {
        const char *n = sqlite3_column_name(st, c);
        if (!n) return -1;
        if ((b->name_off[c] = put_bytes(b, n, strlen(n))) == SIZE_MAX) return -1;
    }
    return 0;
}

static int add_row(builder *b, sqlite3_stmt *st) {
    for (int c = 0; c < b->ncols; c++) {
        jj_db_value *v = new_value(b);
        if (!v) return -1;
        const void *p;
        switch (sqlite3_column_type(st, c)) {
        case SQLITE_INTEGER: v->type = JJ_DB_INT; v->i = sqlite3_column_int64(st, c); break;
        case SQLITE_FLOAT: v->type = JJ_DB_FLOAT; v->d = sqlite3_column_double(st, c); break;
        case SQLITE_TEXT:
        case SQLITE_BLOB:
            v->type = sqlite3_column_type(st, c) == SQLITE_TEXT ? JJ_DB_TEXT : JJ_DB_BLOB;
            p = v->type == JJ_DB_TEXT ? (const void *)sqlite3_column_text(st, c)
                                      : sqlite3_column_blob(st, c);
            v->len = (size_t)sqlite3_column_bytes(st, c);
            if (!p && v->len) return -1;   /* SQLite ran out of memory */
            if ((size_t)(v->i = (int64_t)put_bytes(b, p, v->len)) == SIZE_MAX) return -1;
            break;
        default: v->type = JJ_DB_NULL; break;
        }
    }
    b->nrows++;
    return 0;
}

/* Moves the builder's rows into r (the builder is left empty). */
static int finish_rows(builder *b, result_impl *r) {
    if (b->ncols > 0) {
        r->pub.names = malloc((size_t)b->ncols * sizeof *r->pub.names);
        if (!r->pub.names) return -1;
        for (int c = 0; c < b->ncols; c++) r->pub.names[c] = b->bytes + b->name_off[c];
    }
    for (size_t k = 0; k < b->nvals; k++) {
        jj_db_value *v = &b->vals[k];
        if (v->type == JJ_DB_TEXT || v->type == JJ_DB_BLOB) { v->s = b->bytes + v->i; v->i = 0; }
    }
    r->pub.ncols = b->ncols;
    r->pub.nrows = b->nrows;
    r->pub.values = b->vals;
    r->bytes = b->bytes;
    b->vals = NULL;
    b->bytes = NULL;
    builder_free(b);
    return 0;
}

/* ---------------------------------------------------------- execution */

static int bind_params(sqlite3_stmt *st, const jj_db_stmt *s) {
    int rc = SQLITE_OK;
    for (int k = 0; k < s->nparams && rc == SQLITE_OK; k++) {
        const jj_db_value *v = &s->params[k];
        switch (v->type) {
        case JJ_DB_INT: rc = sqlite3_bind_int64(st, k + 1, v->i); break;
        case JJ_DB_FLOAT: rc = sqlite3_bind_double(st, k + 1, v->d); break;
        /* The bytes live in the job block until the job is freed. */
        case JJ_DB_TEXT:
            rc = sqlite3_bind_text64(st, k + 1, v->s, v->len, SQLITE_STATIC, SQLITE_UTF8);
            break;
        case JJ_DB_BLOB: rc = sqlite3_bind_blob64(st, k + 1, v->s, v->len, SQLITE_STATIC); break;
        default: rc = sqlite3_bind_null(st, k + 1); break;
        }
    }
    return rc;
}

enum { RUN_COLLECT = 1, RUN_TXN_OK = 2 };

/* Runs one statement to completion on c. Rows go into b with RUN_COLLECT
 * (else they are stepped over); transaction control needs RUN_TXN_OK. Adds
 * the rows it changed to *changes. Returns an SQLite code; on error *err is
 * a malloc'd message (NULL means out of memory). s->sql[s->sqllen] must be
 * a NUL (job blocks and literals are). */
static int run_stmt(conn *c, const jj_db_stmt *s, int flags, builder *b,
                    int64_t *changes, char **err) {
    int txn = 0, rc = SQLITE_OK, collect = flags & RUN_COLLECT;
    sqlite3_stmt *st = cache_get(c, s->sql, s->sqllen, &txn, err, &rc);
    if (!st) return rc;
    if (txn && !(flags & RUN_TXN_OK)) {
        *err = jj_db_fmt_alloc("transaction control is not allowed here (db.batch runs statements in one transaction)");
        return SQLITE_MISUSE;
    }
    int want = sqlite3_bind_parameter_count(st);
    if (want != s->nparams) {
        *err = jj_db_fmt_alloc("statement takes %d parameter%s, got %d", want, want == 1 ? "" : "s",
                         s->nparams);
        return SQLITE_RANGE;
    }
    if ((rc = bind_params(st, s)) != SQLITE_OK) {
        *err = jj_db_fmt_alloc("%s", sqlite3_errmsg(c->db));
        goto out;
    }
    if (collect && begin_rows(b, st) != 0) { rc = SQLITE_NOMEM; *err = NULL; goto out; }
    int64_t before = sqlite3_total_changes64(c->db);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (collect && add_row(b, st) != 0) { rc = SQLITE_NOMEM; *err = NULL; goto out; }
    }
    if (rc != SQLITE_DONE) {
        *err = jj_db_fmt_alloc("%s", sqlite3_errmsg(c->db));
        goto out;
    }
    rc = SQLITE_OK;
    /* sqlite3_changes keeps the last DML's count across other statements,
     * so trust it only if this statement changed something. */
    if (sqlite3_total_changes64(c->db) != before) *changes += sqlite3_changes64(c->db);
out:
    sqlite3_reset(st);          /* releases the read snapshot */
    sqlite3_clear_bindings(st); /* drops pointers into the job block */
    return rc;
}

/* A fixed statement (BEGIN, COMMIT, PRAGMA...). On error, *err (if
 * given) is "<sql>: <message>", malloc'd. */
static int run_simple(conn *c, const char *sql, char **err) {
    jj_db_stmt s = {sql, strlen(sql), NULL, 0};
    int64_t ch = 0;
    char *e = NULL;
    builder b = {0};
    int rc = run_stmt(c, &s, RUN_TXN_OK, &b, &ch, &e);
    if (rc != SQLITE_OK && err) *err = jj_db_fmt_alloc("%s: %s", sql, e ? e : "out of memory");
    free(e);
    return rc;
}

static void run_job(conn *c, job *j) {
    result_impl *r = (result_impl *)j->res;
    builder b = {0};
    char *err = NULL;
    int64_t changes = 0;
    int rc = SQLITE_OK, fatal = 0;
    double t0 = jj_db_now_ms();
    sqlite3_set_last_insert_rowid(c->db, 0);

    if (j->kind != JOB_BATCH) {
        rc = run_stmt(c, &j->stmts[0], j->kind == JOB_QUERY ? RUN_COLLECT : 0, &b, &changes, &err);
        fatal = fatal_rc(rc);
        /* e.g. SAVEPOINT: never leave a transaction open on a pooled connection */
        if (rc == SQLITE_OK && !sqlite3_get_autocommit(c->db)) {
            err = jj_db_fmt_alloc("transaction control is not allowed here (use a batch)");
            rc = SQLITE_MISUSE;
        }
    } else {
        rc = run_simple(c, "BEGIN IMMEDIATE", &err);
        fatal = fatal_rc(rc);
        for (int k = 0; k < j->nstmts && rc == SQLITE_OK; k++) {
            int last = k == j->nstmts - 1;
            char *e = NULL;
            rc = run_stmt(c, &j->stmts[k], last ? RUN_COLLECT : 0, &b, &changes, &e);
            if (rc != SQLITE_OK) {
                fatal = fatal_rc(rc);
                err = e ? jj_db_fmt_alloc("statement %d: %s", k + 1, e) : NULL;
                free(e);
            }
        }
        if (rc == SQLITE_OK) {
            rc = run_simple(c, "COMMIT", &err);
            fatal = fatal_rc(rc);
        }
    }
    if (rc != SQLITE_OK && !sqlite3_get_autocommit(c->db)) run_simple(c, "ROLLBACK", NULL);

    r->pub.elapsed_ms = jj_db_now_ms() - t0;
    if (rc == SQLITE_OK) {
        r->pub.changes = changes;
        r->pub.last_insert_id = sqlite3_last_insert_rowid(c->db);
        if (finish_rows(&b, r) != 0) { rc = SQLITE_NOMEM; err = NULL; }
    }
    if (rc != SQLITE_OK) {
        builder_free(&b);
        free(r->pub.names);
        r->pub.names = NULL;
        r->pub.values = NULL;
        r->pub.ncols = 0;
        r->pub.nrows = 0;
        free(r->bytes);
        r->bytes = err;   /* may be NULL: then the static text below */
        r->pub.err = err ? err : "out of memory";
        r->pub.changes = 0;
        r->pub.last_insert_id = 0;
    }
    if (fatal) atomic_store(&c->pool->healthy, 0);
    else if (rc == SQLITE_OK) atomic_store(&c->pool->healthy, 1);
}

static void *worker_main(void *arg) {
    conn *c = arg;
    sq_db *db = c->pool;
    for (;;) {
        pthread_mutex_lock(&db->mu);
        while (!db->qhead && !db->closing) pthread_cond_wait(&db->cv, &db->mu);
        if (db->closing) {   /* queued jobs are close's to fail */
            pthread_mutex_unlock(&db->mu);
            return NULL;
        }
        job *j = db->qhead;
        db->qhead = j->next;
        if (!db->qhead) db->qtail = NULL;
        db->qlen--;
        pthread_mutex_unlock(&db->mu);

        j->next = NULL;
        run_job(c, j);

        pthread_mutex_lock(&db->mu);
        if (db->dtail) db->dtail->next = j; else db->dhead = j;
        db->dtail = j;
        pthread_mutex_unlock(&db->mu);
        ev_async_send(db->loop, &db->async);
    }
}

/* ------------------------------------------------- loop-thread side */

static void destroy(sq_db *db) {
    pthread_mutex_destroy(&db->mu);
    pthread_cond_destroy(&db->cv);
    free(db->conns);
    free(db);
}

/* Hands j's result to its callback and frees the job block. */
static void finish(sq_db *db, job *j) {
    jj_db_result *res = j->res;
    jj_db_count(&db->metrics, j->kind, res);
    jj_db_cb *cb = j->cb;
    void *pd = j->privdata;
    free(j);
    if (--db->inflight == 0) ev_unref(db->loop);
    cb(res, pd);
}

static void dispatch(sq_db *db) {
    db->dispatching++;
    for (;;) {
        pthread_mutex_lock(&db->mu);
        job *j = db->dhead;
        if (j) {
            db->dhead = j->next;
            if (!db->dhead) db->dtail = NULL;
        }
        pthread_mutex_unlock(&db->mu);
        if (!j) break;
        finish(db, j);
    }
    if (--db->dispatching == 0 && db->free_deferred) destroy(db);
}

static void on_async(struct ev_loop *loop, ev_async *w, int revents) {
    (void)loop; (void)revents;
    dispatch(w->data);
}

static int open_conn(conn *c, const char *path, char *err, size_t errlen) {
    int rc = sqlite3_open_v2(path, &c->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc));
        return -1;
    }
    sqlite3_extended_result_codes(c->db, 1);
    sqlite3_busy_timeout(c->db, BUSY_TIMEOUT_MS);
    static const char *const pragmas[] = {
        "PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON",
    };
    for (size_t i = 0; i < sizeof pragmas / sizeof *pragmas; i++) {
        char *e = NULL;
        if (run_simple(c, pragmas[i], &e) != SQLITE_OK) {
            snprintf(err, errlen, "%s: %s", path, e ? e : "out of memory");
            free(e);
            return -1;
        }
    }
    return 0;
}

static void close_conns(sq_db *db) {
    for (int i = 0; i < db->nthreads; i++) {
        conn *c = &db->conns[i];
        cache_clear(c);
        if (c->db) sqlite3_close_v2(c->db);
        c->db = NULL;
    }
}

static void stop_threads(sq_db *db) {
    pthread_mutex_lock(&db->mu);
    db->closing = 1;
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
    for (int i = 0; i < db->nthreads; i++)
        if (db->conns[i].started) pthread_join(db->conns[i].tid, NULL);
}

static int sq_submit(jj_db *base, int kind, const jj_db_stmt *stmts, int nstmts,
                     double timeout_ms, jj_db_cb *cb, void *privdata);
static int sq_healthy(jj_db *base);
static void sq_close(jj_db *base);
static const jj_db_ops sqlite_ops = {"sqlite", sq_submit, sq_healthy, sq_close};

jj_db *jj_db_sqlite_open(struct ev_loop *loop, const char *path, int nthreads, char *err, size_t errlen) {
    if (nthreads < 1 || nthreads > MAX_THREADS) {
        snprintf(err, errlen, "database threads must be between 1 and %d", MAX_THREADS);
        return NULL;
    }
    sq_db *db = calloc(1, sizeof *db);
    conn *conns = calloc((size_t)nthreads, sizeof *conns);
    if (!db || !conns) {
        free(db);
        free(conns);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    db->base.ops = &sqlite_ops;
    db->loop = loop;
    db->nthreads = nthreads;
    db->conns = conns;
    atomic_init(&db->healthy, 1);
    pthread_mutex_init(&db->mu, NULL);
    pthread_cond_init(&db->cv, NULL);
    for (int i = 0; i < nthreads; i++) {
        conns[i].pool = db;
        if (open_conn(&conns[i], path, err, errlen) != 0) {
            close_conns(db);
            destroy(db);
            return NULL;
        }
    }

    /* Pool threads take no signals: they belong to the loop thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int failed = 0;
    for (int i = 0; i < nthreads && !failed; i++) {
        int e = pthread_create(&conns[i].tid, NULL, worker_main, &conns[i]);
        if (e == 0) conns[i].started = 1;
        else { failed = 1; snprintf(err, errlen, "pthread_create: %s", strerror(e)); }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (failed) {
        stop_threads(db);
        close_conns(db);
        destroy(db);
        return NULL;
    }
    ev_async_init(&db->async, on_async);
    db->async.data = db;
    ev_async_start(loop, &db->async);
    ev_unref(loop);   /* referenced again only while jobs are in flight */
    return &db->base;
}

static void sq_close(jj_db *base) {
    sq_db *db = (sq_db *)base;
    if (db->closed) return;
    db->closed = 1;
    pthread_mutex_lock(&db->mu);
    job *queued = db->qhead;
    db->qhead = db->qtail = NULL;
    db->qlen = 0;
    pthread_mutex_unlock(&db->mu);
    stop_threads(db);   /* running statements finish into `done` */
    close_conns(db);

    db->dispatching++;   /* callbacks below may call jj_db_close again: no free */
    dispatch(db);        /* the statements that did run */
    while (queued) {
        job *j = queued;
        queued = j->next;
        j->res->err = "database closed";
        finish(db, j);
    }
    db->dispatching--;

    ev_ref(db->loop);    /* inflight is 0 here: the watcher was unreferenced */
    ev_async_stop(db->loop, &db->async);
    if (db->dispatching) db->free_deferred = 1;
    else destroy(db);
}

/* Copies stmts into one job block (see `job`). NULL on bad input or when
 * out of memory. */
_Static_assert(sizeof(job) % _Alignof(jj_db_stmt) == 0, "the statements follow the job header");
static job *job_new(int kind, const jj_db_stmt *stmts, int nstmts) {
    size_t size = jj_db_stmts_size(stmts, nstmts);
    if (size == 0 || size > SIZE_MAX - sizeof(job)) return NULL;
    job *j = malloc(sizeof(job) + size);
    result_impl *r = calloc(1, sizeof *r);
    if (!j || !r) { free(j); free(r); return NULL; }
    jj_db_stmt *ss = jj_db_stmts_copy(j + 1, stmts, nstmts);
    j->next = NULL;
    j->kind = kind;
    j->nstmts = nstmts;
    j->stmts = ss;
    j->res = &r->pub;
    return j;
}

static int submit_job(sq_db *db, job *j, jj_db_cb *cb, void *privdata) {
    j->cb = cb;
    j->privdata = privdata;
    pthread_mutex_lock(&db->mu);
    if (db->closing || db->closed || db->qlen >= QUEUE_LIMIT) {
        pthread_mutex_unlock(&db->mu);
        jj_db_result_free(j->res);
        free(j);
        return -1;
    }
    if (db->qtail) db->qtail->next = j; else db->qhead = j;
    db->qtail = j;
    db->qlen++;
    pthread_cond_signal(&db->cv);
    pthread_mutex_unlock(&db->mu);
    if (db->inflight++ == 0) ev_ref(db->loop);
    return 0;
}

static int sq_submit(jj_db *base, int kind, const jj_db_stmt *stmts, int nstmts,
                     double timeout_ms, jj_db_cb *cb, void *privdata) {
    (void)timeout_ms;   /* a running statement cannot be stopped: the caller's wait bounds it */
    job *j = job_new(kind, stmts, nstmts);
    if (!j) return -1;
    return submit_job((sq_db *)base, j, cb, privdata);
}

static int sq_healthy(jj_db *base) {
    sq_db *db = (sq_db *)base;
    return !db->closed && atomic_load(&db->healthy);
}

/* ------------------------------------------------------------ migrate */

/* Runs every statement of a migration script. Stepping statement by
 * statement (rather than sqlite3_exec) lets us refuse BEGIN/COMMIT before
 * they run, which would otherwise commit half a migration. Returns 0, or -1
 * with a message in err. */
static int run_script(sqlite3 *db, const char *sql, char *err, size_t errlen) {
    const char *p = sql;
    while (*p) {
        sqlite3_stmt *st = NULL;
        const char *tail = NULL;
        if (sqlite3_prepare_v2(db, p, -1, &st, &tail) != SQLITE_OK) {
            snprintf(err, errlen, "%s", sqlite3_errmsg(db));
            return -1;
        }
        if (!st) break;   /* only whitespace or comments left */
        if (jj_db_is_txn_control(p, (size_t)(tail - p))) {
            sqlite3_finalize(st);
            snprintf(err, errlen, "transaction control is not allowed (each migration runs in its own transaction)");
            return -1;
        }
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
        if (rc != SQLITE_DONE) {
            snprintf(err, errlen, "%s", sqlite3_errmsg(db));
            sqlite3_finalize(st);
            return -1;
        }
        sqlite3_finalize(st);
        p = tail;
    }
    return 0;
}

/* The first row's first column of sql as an integer (0 if no row). */
static int query_int(sqlite3 *db, const char *sql, long long *val) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) { *val = sqlite3_column_int64(st, 0); rc = SQLITE_OK; }
        else if (rc == SQLITE_DONE) { *val = 0; rc = SQLITE_OK; }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Applies one migration inside its own transaction. */
static int apply_migration(sqlite3 *db, const char *dir, const jj_db_migration *m, char *err,
                           size_t errlen) {
    char path[4096], msg[1024];
    snprintf(path, sizeof path, "%s/%s", dir, m->name);
    char *sql = jj_db_read_file(path);
    if (!sql) { snprintf(err, errlen, "%s: %s", m->name, strerror(errno)); return -1; }
    int ok = 0;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(msg, sizeof msg, "BEGIN: %s", sqlite3_errmsg(db));
    } else if (run_script(db, sql, msg, sizeof msg) == 0) {
        char pragma[64];
        long long bad = 0;
        snprintf(pragma, sizeof pragma, "PRAGMA user_version = %lld", m->num);
        /* Migrations run with foreign keys off (table rebuilds need that);
         * check them before committing instead. */
        if (sqlite3_exec(db, pragma, NULL, NULL, NULL) != SQLITE_OK)
            snprintf(msg, sizeof msg, "%s", sqlite3_errmsg(db));
        else if (query_int(db, "SELECT count(*) FROM pragma_foreign_key_check", &bad) != SQLITE_OK)
            snprintf(msg, sizeof msg, "foreign_key_check: %s", sqlite3_errmsg(db));
        else if (bad > 0)
            snprintf(msg, sizeof msg, "%lld foreign key violation%s after migration", bad,
                     bad == 1 ? "" : "s");
        else if (sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK)
            snprintf(msg, sizeof msg, "COMMIT: %s", sqlite3_errmsg(db));
        else
            ok = 1;
    }
    free(sql);
    if (ok) return 0;
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
    snprintf(err, errlen, "%s: %s", m->name, msg);
    return -1;
}

int jj_db_sqlite_migrate(const char *path, const char *dir, const jj_db_migration *ms, int n,
                         char *err, size_t errlen) {
    sqlite3 *db = NULL;
    int rc = -1;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, db ? sqlite3_errmsg(db) : "cannot open");
        goto out;
    }
    sqlite3_busy_timeout(db, MIGRATE_BUSY_TIMEOUT_MS);
    /* Foreign keys stay off while migrating (apply_migration checks them). */
    if (sqlite3_exec(db, "PRAGMA foreign_keys=OFF; PRAGMA journal_mode=WAL", NULL, NULL, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    long long version = 0;
    if (query_int(db, "PRAGMA user_version", &version) != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    int applied = 0;
    for (int i = 0; i < n; i++) {
        if (ms[i].num <= version) continue;
        if (apply_migration(db, dir, &ms[i], err, errlen) != 0) goto out;
        JJ_INFO("database migration %s applied", ms[i].name);
        applied++;
    }
    if (n > 0 && version > ms[n - 1].num)
        JJ_WARN("database schema version %lld is newer than the newest migration (%lld)", version,
                ms[n - 1].num);
    JJ_DEBUG("database migrations: %d applied, schema version %lld", applied,
             applied ? ms[n - 1].num : version);
    rc = 0;
out:
    if (db) sqlite3_close(db);
    return rc;
}
