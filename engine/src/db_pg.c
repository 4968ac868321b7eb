/* db_pg.c: the PostgreSQL backend of db.h, libpq in non-blocking mode on
 * the loop that owns the pool. No threads: a pool is a few connections,
 * each driven by an ev_io on its socket.
 *
 * Jobs and ownership:
 *
 *   submit: copies SQL and parameters into one job block and queues it; the
 *           job's own timer (its deadline) starts now.
 *   a connection that is up and idle takes the next queued job (the job is
 *   now the connection's) and runs it as a chain of steps, each one
 *   command sent and its results read back:
 *       [BEGIN] (PREPARE on a cache miss) EXECUTE ... [COMMIT | ROLLBACK]
 *   finish: the job leaves its connection or queue, its result goes to the
 *           callback (the receiver owns it) and the block is freed.
 *
 * A job ends exactly once: done, failed, timed out (its timer fires; a
 * running job's connection is then dropped and reconnected, since a
 * statement still running there would make it unusable), or failed at
 * close. Prepared statements are named per connection (s1, s2, ...) and
 * cached by SQL text and parameter types; a reconnect starts a new cache.
 *
 * Connections reconnect with capped exponential backoff. While none is up
 * or connecting, queued and new jobs fail at once with "database
 * unavailable", so a caller gets a clear error instead of a timeout.
 *
 * Only the job timers keep ev_run alive: the connection watchers are
 * unreferenced, like the SQLite pool's async watcher.
 */
#include "db_internal.h"
#include "log.h"

#include <ev.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QUEUE_LIMIT 10000
#define STMT_CACHE 64          /* prepared statements per connection */
#define MAX_CONNS 64
#define DEFAULT_TIMEOUT_MS 5000.0
#define CONNECT_TIMEOUT_S 5.0
#define BACKOFF_MIN_S 0.05
#define BACKOFF_MAX_S 2.0

/* type OIDs (catalog/pg_type_d.h is a server header) */
enum {
    OID_BOOL = 16, OID_BYTEA = 17, OID_INT8 = 20, OID_INT2 = 21, OID_INT4 = 23, OID_OID = 26,
    OID_FLOAT4 = 700, OID_FLOAT8 = 701, OID_NUMERIC = 1700
};

enum { C_DOWN, C_CONNECTING, C_IDLE, C_BUSY };
enum { ST_BEGIN, ST_DEALLOCATE, ST_PREPARE, ST_EXEC, ST_COMMIT, ST_ROLLBACK };

typedef struct pg_db pg_db;
typedef struct pconn pconn;

typedef struct pjob {
    struct pjob *next, *prev;   /* in the queue */
    pg_db *pool;
    pconn *conn;                /* running there, or NULL while queued */
    int kind, nstmts;
    jj_db_stmt *stmts;          /* inside this block, as are their SQL and params */
    jj_db_cb *cb;
    void *privdata;
    jj_db_result_impl *fail;    /* preallocated at submit: failing needs no memory */
    ev_timer deadline;
} pjob;

typedef struct pstmt {
    char *key;                  /* SQL text + NUL + parameter type signature; owned */
    size_t keylen;
    uint64_t hash, used;
    int nparams;                /* placeholders in the SQL */
    int ready;                  /* PREPARE done on this connection */
    char name[16];
} pstmt;

struct pconn {
    pg_db *pool;
    PGconn *pg;
    int state;
    ev_io io;
    int io_events;              /* what io watches (0: stopped) */
    ev_timer timer;             /* connect timeout, or the backoff before the next try */
    double backoff;
    pstmt cache[STMT_CACHE];
    uint64_t tick;
    unsigned next_name;
    char evicted[16];           /* a prepared statement to DEALLOCATE before the next PREPARE */
    /* the running job */
    pjob *job;
    int step, k;
    pstmt *cur;
    PGresult *res;              /* the current step's result */
    PGresult *rows;             /* the last statement's result (kept for the job's result) */
    int64_t changes;
    char *err;                  /* the job's error, malloc'd */
    double t0;
};

struct pg_db {
    jj_db base;                 /* first: a jj_db * is a pg_db * */
    struct ev_loop *loop;
    char *url;
    int nconns;
    pconn *conns;
    pjob *qhead, *qtail;
    int qlen;
    int ever_up, closed, depth, free_deferred;
    char last_error[256];
    ev_timer fail_soon;         /* fails the queue when no connection can take it */
    jj_db_metrics metrics;
};

static void pump(pg_db *db);
static void destroy(pg_db *db);
static void start_connect(pconn *c);
static void conn_failed(pconn *c, const char *why);

/* ------------------------------------------------------------ helpers */

static uint64_t fnv1a(const char *s, size_t len) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) { h ^= (unsigned char)s[i]; h *= 1099511628211ull; }
    return h;
}

char *jj_db_pg_message(const char *msg) {
    if (!msg || !*msg) msg = "unknown error";
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' ')) n--;
    char *out = jj_db_fmt_alloc("%.*s", (int)n, msg);
    if (!out) return NULL;
    /* one line: libpq continues messages on indented lines */
    char *o = out;
    for (const char *p = out; *p; p++) {
        if (*p == '\n' || *p == '\t') {
            if (o > out && o[-1] != ' ') *o++ = ' ';
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

static int hexval(char ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

void jj_db_pg_quiet(void *arg, const char *msg) { (void)arg; (void)msg; }

/* Leaves a watcher callback: frees the pool if it was closed meanwhile. */
static void leave(pg_db *db) {
    if (--db->depth == 0 && db->closed && db->free_deferred) destroy(db);
}

static int valid_utf8(const unsigned char *s, size_t len) {
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n;
        uint32_t cp;
        if (c == 0) return 0;
        if (c < 0x80) { i++; continue; }
        if ((c & 0xe0) == 0xc0) { n = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { n = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { n = 3; cp = c & 0x07; }
        else return 0;
        if (len - i <= n) return 0;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += n + 1;
    }
    return 1;
}

/* The PostgreSQL type a parameter is sent as. Text that PostgreSQL cannot
 * hold as text (a NUL, invalid UTF-8) goes as bytea, like a blob, so the
 * same bytes come back. Text otherwise goes untyped: the server infers the
 * type from the context, as SQLite's affinity would convert it. */
static unsigned param_type(const jj_db_value *v) {
    switch (v->type) {
    case JJ_DB_INT: return OID_INT8;
    case JJ_DB_FLOAT: return OID_FLOAT8;
    case JJ_DB_BLOB: return OID_BYTEA;
    case JJ_DB_TEXT: return valid_utf8((const unsigned char *)v->s, v->len) ? 0 : OID_BYTEA;
    default: return 0;
    }
}

/* SQLite placeholders to PostgreSQL ones, outside literals, quoted
 * identifiers and comments: ?NNN -> $NNN, ? -> $(largest so far + 1) (the
 * numbering SQLite gives them); $N stays. Returns the malloc'd text and the
 * largest index in *nparams, or NULL with a malloc'd message in *err. */
static char *translate(const char *sql, size_t len, int *nparams, char **err) {
    char *out = malloc(len * 4 + 16);
    if (!out) { *err = NULL; return NULL; }
    size_t o = 0;
    long max = 0;
    for (size_t i = 0; i < len;) {
        char ch = sql[i];
        if (ch == '\'' || ch == '"') {
            int esc = ch == '\'' && i > 0 && (sql[i - 1] == 'E' || sql[i - 1] == 'e');
            out[o++] = sql[i++];
            while (i < len && sql[i] != ch) {
                if (esc && sql[i] == '\\' && i + 1 < len) out[o++] = sql[i++];
                out[o++] = sql[i++];
            }
            if (i < len) out[o++] = sql[i++];
        } else if (ch == '-' && i + 1 < len && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n') out[o++] = sql[i++];
        } else if (ch == '/' && i + 1 < len && sql[i + 1] == '*') {
            out[o++] = sql[i++];
            out[o++] = sql[i++];
            while (i < len && !(sql[i] == '*' && i + 1 < len && sql[i + 1] == '/')) out[o++] = sql[i++];
            if (i < len) { out[o++] = sql[i++]; out[o++] = sql[i++]; }
        } else if (ch == '$' && i + 1 < len && sql[i + 1] >= '0' && sql[i + 1] <= '9') {
            long n = 0;
            out[o++] = sql[i++];
            while (i < len && sql[i] >= '0' && sql[i] <= '9') { n = n * 10 + (sql[i] - '0'); out[o++] = sql[i++]; if (n > 100000) break; }
            if (n > max) max = n;
        } else if (ch == '$') {
            /* $tag$ ... $tag$ */
            size_t j = i + 1;
            while (j < len && (sql[j] == '_' || (sql[j] >= 'a' && sql[j] <= 'z') ||
                               (sql[j] >= 'A' && sql[j] <= 'Z') || (sql[j] >= '0' && sql[j] <= '9')))
                j++;
            int ident_before = i > 0 && (sql[i - 1] == '_' || (sql[i - 1] >= 'a' && sql[i - 1] <= 'z') ||
                                         (sql[i - 1] >= 'A' && sql[i - 1] <= 'Z') ||
                                         (sql[i - 1] >= '0' && sql[i - 1] <= '9'));
            if (j < len && sql[j] == '$' && !ident_before) {
                size_t taglen = j - i + 1, k = j + 1;
                while (k + taglen <= len && memcmp(sql + k, sql + i, taglen) != 0) k++;
                size_t end = k + taglen <= len ? k + taglen : len;
                memcpy(out + o, sql + i, end - i);
                o += end - i;
                i = end;
            } else {
                out[o++] = sql[i++];
            }
        } else if (ch == '?') {
            i++;
            long n;
            if (i < len && sql[i] >= '0' && sql[i] <= '9') {
                n = 0;
                while (i < len && sql[i] >= '0' && sql[i] <= '9') {
                    n = n * 10 + (sql[i++] - '0');
                    if (n > 32766) break;
                }
            } else {
                n = max + 1;
            }
            if (n < 1 || n > 32766) {
                free(out);
                *err = jj_db_fmt_alloc("parameter index out of range (1..32766)");
                return NULL;
            }
            if (n > max) max = n;
            o += (size_t)sprintf(out + o, "$%ld", n);
        } else {
            out[o++] = sql[i++];
        }
    }
    out[o] = '\0';
    *nparams = (int)max;
    return out;
}

/* ---------------------------------------------------------- watchers */

/* The io watcher on the connection's current socket for events (0:
 * stopped). It never keeps the loop alive. */
static void io_watch(pconn *c, int events) {
    struct ev_loop *loop = c->pool->loop;
    int fd = c->pg ? PQsocket(c->pg) : -1;
    if (c->io_events && (events != c->io_events || fd != c->io.fd || fd < 0)) {
        ev_ref(loop);
        ev_io_stop(loop, &c->io);
        c->io_events = 0;
    }
    if (events && !c->io_events && fd >= 0) {
        ev_io_set(&c->io, fd, events);
        ev_io_start(loop, &c->io);
        ev_unref(loop);
        c->io_events = events;
    }
}

static void timer_stop(pconn *c) {
    if (ev_is_active(&c->timer)) {
        ev_ref(c->pool->loop);
        ev_timer_stop(c->pool->loop, &c->timer);
    }
}

static void timer_start(pconn *c, double after) {
    timer_stop(c);
    ev_timer_set(&c->timer, after, 0.);
    ev_timer_start(c->pool->loop, &c->timer);
    ev_unref(c->pool->loop);
}

/* ------------------------------------------------------- job ending */

static void destroy(pg_db *db) {
    free(db->url);
    free(db->conns);
    free(db);
}

static void queue_unlink(pg_db *db, pjob *j) {
    if (j->prev) j->prev->next = j->next; else db->qhead = j->next;
    if (j->next) j->next->prev = j->prev; else db->qtail = j->prev;
    j->next = j->prev = NULL;
    db->qlen--;
}

/* Hands res to j's callback and frees j (already off its queue and its
 * connection). */
static void finish(pg_db *db, pjob *j, jj_db_result *res) {
    ev_timer_stop(db->loop, &j->deadline);
    if (res != &j->fail->pub) free(j->fail);
    jj_db_count(&db->metrics, j->kind, res);
    jj_db_cb *cb = j->cb;
    void *pd = j->privdata;
    free(j);
    db->depth++;
    cb(res, pd);
    db->depth--;
}

/* Fails j with msg (copied), wherever it is not: off queue and connection. */
static void fail_job(pg_db *db, pjob *j, const char *msg, double elapsed_ms) {
    jj_db_result_impl *r = j->fail;
    r->bytes = jj_db_fmt_alloc("%s", msg);
    r->pub.err = r->bytes ? r->bytes : "out of memory";
    r->pub.elapsed_ms = elapsed_ms;
    finish(db, j, &r->pub);
}

/* The finished job's result from c->rows (NULL: no rows), or NULL when out
 * of memory. Values are converted by column type (see db.h). */
static jj_db_result *build_result(pconn *c) {
    jj_db_result_impl *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    PGresult *pr = c->rows;
    int ncols = pr ? PQnfields(pr) : 0;
    size_t nrows = pr && ncols > 0 ? (size_t)PQntuples(pr) : 0;
    if (ncols == 0) nrows = 0;
    size_t nbytes = 0;
    for (int k = 0; k < ncols; k++) nbytes += strlen(PQfname(pr, k)) + 1;
    for (size_t row = 0; row < nrows; row++)
        for (int k = 0; k < ncols; k++)
            if (!PQgetisnull(pr, (int)row, k)) nbytes += (size_t)PQgetlength(pr, (int)row, k) + 1;
    r->pub.ncols = ncols;
    r->pub.nrows = nrows;
    r->pub.names = ncols ? calloc((size_t)ncols, sizeof *r->pub.names) : NULL;
    r->pub.values = nrows ? calloc(nrows * (size_t)ncols, sizeof *r->pub.values) : NULL;
    r->bytes = malloc(nbytes + 1);
    if ((ncols && !r->pub.names) || (nrows && !r->pub.values) || !r->bytes) {
        jj_db_result_free(&r->pub);
        return NULL;
    }
    char *bp = r->bytes;
    for (int k = 0; k < ncols; k++) {
        size_t n = strlen(PQfname(pr, k));
        memcpy(bp, PQfname(pr, k), n + 1);
        r->pub.names[k] = bp;
        bp += n + 1;
    }
    for (size_t row = 0; row < nrows; row++) {
        for (int k = 0; k < ncols; k++) {
            jj_db_value *v = &r->pub.values[row * (size_t)ncols + (size_t)k];
            if (PQgetisnull(pr, (int)row, k)) { v->type = JJ_DB_NULL; continue; }
            const char *s = PQgetvalue(pr, (int)row, k);
            size_t len = (size_t)PQgetlength(pr, (int)row, k);
            unsigned t = PQftype(pr, k);
            char *end;
            switch (t) {
            case OID_BOOL:
                v->type = JJ_DB_INT;
                v->i = s[0] == 't';
                continue;
            case OID_INT2: case OID_INT4: case OID_INT8: case OID_OID:
                v->type = JJ_DB_INT;
                v->i = strtoll(s, NULL, 10);
                continue;
            case OID_NUMERIC:
                /* integral numerics (sum() of integers) stay integers, as in SQLite */
                if (!strpbrk(s, ".eEN")) {
                    long long x = strtoll(s, &end, 10);
                    if (*end == '\0') { v->type = JJ_DB_INT; v->i = x; continue; }
                }
                /* fall through */
            case OID_FLOAT4: case OID_FLOAT8:
                v->type = JJ_DB_FLOAT;
                v->d = strtod(s, NULL);
                continue;
            case OID_BYTEA:
                if (len >= 2 && s[0] == '\\' && s[1] == 'x') {
                    size_t n = 0;
                    for (size_t q = 2; q + 1 < len; q += 2) {
                        int hi = hexval(s[q]), lo = hexval(s[q + 1]);
                        if (hi < 0 || lo < 0) break;
                        bp[n++] = (char)(hi * 16 + lo);
                    }
                    bp[n] = '\0';
                    v->type = JJ_DB_BLOB;
                    v->s = bp;
                    v->len = n;
                    bp += n + 1;
                    continue;
                }
                /* fall through */
            default:
                memcpy(bp, s, len);
                bp[len] = '\0';
                v->type = JJ_DB_TEXT;
                v->s = bp;
                v->len = len;
                bp += len + 1;
            }
        }
    }
    r->pub.changes = c->changes;
    return &r->pub;
}

/* Ends c's running job: with its rows when ok, else with c->err (NULL:
 * out of memory). c is idle afterwards (or down, if it was reset meanwhile). */
static void end_job(pconn *c, int ok) {
    pg_db *db = c->pool;
    pjob *j = c->job;
    c->job = NULL;
    if (c->state == C_BUSY) c->state = C_IDLE;
    double elapsed = jj_db_now_ms() - c->t0;
    jj_db_result *res = NULL;
    if (ok && !c->err) res = build_result(c);
    PQclear(c->rows);
    c->rows = NULL;
    PQclear(c->res);
    c->res = NULL;
    if (res) {
        res->elapsed_ms = elapsed;
        finish(db, j, res);
    } else {
        char *e = c->err;
        c->err = NULL;
        fail_job(db, j, e ? e : "out of memory", elapsed);
        free(e);
    }
}

/* ------------------------------------------------------- connections */

static void cache_clear(pconn *c) {
    for (int i = 0; i < STMT_CACHE; i++) free(c->cache[i].key);
    memset(c->cache, 0, sizeof c->cache);
    c->tick = 0;
    c->evicted[0] = '\0';
}

/* Drops the connection (the running job, if any, fails with why) and
 * schedules the next connection attempt. */
static void conn_reset(pconn *c, const char *why, double retry_after) {
    pg_db *db = c->pool;
    io_watch(c, 0);
    timer_stop(c);
    if (c->pg) PQfinish(c->pg);
    c->pg = NULL;
    cache_clear(c);
    c->state = C_DOWN;
    c->cur = NULL;
    pjob *j = c->job;
    if (j) {
        free(c->err);
        c->err = jj_db_fmt_alloc("%s", why);
        j->conn = NULL;
        end_job(c, 0);   /* c stays down: end_job only turns BUSY into IDLE */
    }
    if (db->closed) return;
    timer_start(c, retry_after);
    /* no connection left to take the queue: fail it now */
    int alive = 0;
    for (int i = 0; i < db->nconns; i++) alive += db->conns[i].state != C_DOWN;
    if (!alive && db->qhead && !ev_is_active(&db->fail_soon)) ev_timer_start(db->loop, &db->fail_soon);
}

static void conn_failed(pconn *c, const char *why) {
    pg_db *db = c->pool;
    snprintf(db->last_error, sizeof db->last_error, "%s", why);
    c->backoff = c->backoff > 0 ? c->backoff * 2 : BACKOFF_MIN_S;
    if (c->backoff > BACKOFF_MAX_S) c->backoff = BACKOFF_MAX_S;
    char msg[320];
    snprintf(msg, sizeof msg, "database unavailable: %s", why);
    conn_reset(c, msg, c->backoff);
}

static void on_conn_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    pconn *c = w->data;
    pg_db *db = c->pool;
    ev_ref(db->loop);   /* the timer stopped itself: undo its unref */
    db->depth++;
    if (c->state == C_CONNECTING) conn_failed(c, "connect timed out");
    else if (c->state == C_DOWN) start_connect(c);
    leave(db);
}

static void poll_connect(pconn *c) {
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_READING: io_watch(c, EV_READ); return;
    case PGRES_POLLING_WRITING: io_watch(c, EV_WRITE); return;
    case PGRES_POLLING_OK: break;
    default: {
        char *m = jj_db_pg_message(PQerrorMessage(c->pg));
        conn_failed(c, m ? m : "connection failed");
        free(m);
        return;
    }
    }
    timer_stop(c);
    if (PQsetnonblocking(c->pg, 1) != 0) { conn_failed(c, "cannot make the connection non-blocking"); return; }
    c->state = C_IDLE;
    c->backoff = 0;
    if (!c->pool->ever_up) JJ_DEBUG("database: connected to PostgreSQL");
    c->pool->ever_up = 1;
    io_watch(c, EV_READ);   /* notices and a closed socket */
    pump(c->pool);
}

static void start_connect(pconn *c) {
    pg_db *db = c->pool;
    /* options first: what the URL says overrides them */
    const char *const keys[] = {"options", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"-c client_encoding=UTF8 -c bytea_output=hex "
                                "-c client_connection_check_interval=1000",
                                "jollyjet", db->url, NULL};
    c->pg = PQconnectStartParams(keys, vals, 1);
    if (!c->pg) { conn_failed(c, "out of memory"); return; }
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        char *m = jj_db_pg_message(PQerrorMessage(c->pg));
        conn_failed(c, m ? m : "connection failed");
        free(m);
        return;
    }
    PQsetNoticeProcessor(c->pg, jj_db_pg_quiet, NULL);
    c->state = C_CONNECTING;
    timer_start(c, CONNECT_TIMEOUT_S);
    io_watch(c, EV_WRITE);
}

/* -------------------------------------------------------------- steps */

/* Flushes what libpq buffered; watches for write while some is left. */
static int flush(pconn *c) {
    int r = PQflush(c->pg);
    if (r < 0) return -1;
    io_watch(c, r ? EV_READ | EV_WRITE : EV_READ);
    return 0;
}

static int send_simple(pconn *c, const char *sql, int step) {
    c->step = step;
    if (!PQsendQueryParams(c->pg, sql, 0, NULL, NULL, NULL, NULL, 0)) return -1;
    return flush(c);
}

/* Parameters of statement s as libpq wants them. Text forms of numbers go
 * into num (room for 32 bytes per parameter). */
static void param_arrays(const jj_db_stmt *s, const char **vals, int *lens, int *fmts, char *num) {
    for (int p = 0; p < s->nparams; p++) {
        const jj_db_value *v = &s->params[p];
        char *slot = num + (size_t)p * 32;
        lens[p] = 0;
        fmts[p] = 0;
        switch (v->type) {
        case JJ_DB_NULL: vals[p] = NULL; break;
        case JJ_DB_INT: snprintf(slot, 32, "%lld", (long long)v->i); vals[p] = slot; break;
        case JJ_DB_FLOAT: snprintf(slot, 32, "%.17g", v->d); vals[p] = slot; break;
        default:
            vals[p] = v->s;
            if (param_type(v) == OID_BYTEA) { fmts[p] = 1; lens[p] = (int)v->len; }
        }
    }
}

static int send_exec(pconn *c) {
    const jj_db_stmt *s = &c->job->stmts[c->k];
    int n = s->nparams;
    const char **vals = calloc((size_t)n + 1, sizeof *vals);
    int *lens = calloc((size_t)n + 1, sizeof *lens), *fmts = calloc((size_t)n + 1, sizeof *fmts);
    char *num = malloc((size_t)n * 32 + 1);
    int ok = vals && lens && fmts && num;
    if (ok) {
        param_arrays(s, vals, lens, fmts, num);
        c->step = ST_EXEC;
        ok = PQsendQueryPrepared(c->pg, c->cur->name, n, vals, lens, fmts, 0);
    }
    free(vals); free(lens); free(fmts); free(num);
    if (!ok) return -1;
    return flush(c);
}

/* The cache entry for statement s on c (LRU), prepared or to prepare. NULL
 * with c->err set when the statement is refused. */
static pstmt *stmt_for(pconn *c, const jj_db_stmt *s) {
    size_t keylen = s->sqllen + 1 + (size_t)s->nparams;
    char *key = malloc(keylen + 1);
    if (!key) { c->err = NULL; return NULL; }
    memcpy(key, s->sql, s->sqllen);
    key[s->sqllen] = '\0';
    char *sig = key + s->sqllen + 1;
    for (int p = 0; p < s->nparams; p++) {
        unsigned t = param_type(&s->params[p]);
        sig[p] = t == OID_INT8 ? 'i' : t == OID_FLOAT8 ? 'f' : t == OID_BYTEA ? 'b' : 'u';
    }
    key[keylen] = '\0';
    uint64_t h = fnv1a(key, keylen);
    pstmt *victim = &c->cache[0];
    for (int i = 0; i < STMT_CACHE; i++) {
        pstmt *e = &c->cache[i];
        if (e->key && e->hash == h && e->keylen == keylen && memcmp(e->key, key, keylen) == 0) {
            free(key);
            e->used = ++c->tick;
            return e;
        }
        if (!e->key) { if (victim->key) victim = e; }
        else if (victim->key && e->used < victim->used) victim = e;
    }
    if (jj_db_is_txn_control(s->sql, s->sqllen)) {
        free(key);
        c->err = jj_db_fmt_alloc(c->job->kind == JJ_DB_KIND_BATCH
                                     ? "transaction control is not allowed here (db.batch runs statements in one transaction)"
                                     : "transaction control is not allowed here (use a batch)");
        return NULL;
    }
    if (memchr(s->sql, '\0', s->sqllen)) {
        free(key);
        c->err = jj_db_fmt_alloc("SQL contains a NUL byte");
        return NULL;
    }
    /* the server keeps the evicted statement until it is deallocated: one
     * more round trip, only on a miss that evicts */
    if (victim->ready) snprintf(c->evicted, sizeof c->evicted, "%s", victim->name);
    free(victim->key);
    memset(victim, 0, sizeof *victim);
    victim->key = key;
    victim->keylen = keylen;
    victim->hash = h;
    victim->used = ++c->tick;
    snprintf(victim->name, sizeof victim->name, "s%u", ++c->next_name);
    return victim;
}

static int send_prepare(pconn *c) {
    const jj_db_stmt *s = &c->job->stmts[c->k];
    char *err = NULL;
    int nparams = 0;
    char *sql = translate(s->sql, s->sqllen, &nparams, &err);
    if (!sql) { c->err = err; return 1; }
    if (nparams != s->nparams) {
        free(sql);
        c->err = jj_db_fmt_alloc("statement takes %d parameter%s, got %d", nparams,
                                 nparams == 1 ? "" : "s", s->nparams);
        return 1;
    }
    Oid *types = calloc((size_t)nparams + 1, sizeof *types);
    if (!types) { free(sql); c->err = NULL; return 1; }
    for (int p = 0; p < nparams; p++) types[p] = param_type(&s->params[p]);
    c->cur->nparams = nparams;
    c->step = ST_PREPARE;
    int ok = PQsendPrepare(c->pg, c->cur->name, sql, nparams, types);
    free(types);
    free(sql);
    if (!ok) return -1;
    return flush(c);
}

/* Sends the command for c->k (or the COMMIT after the last). Returns 0 when
 * sent, 1 when the job ended or must roll back (c->err set), -1 when the
 * connection failed. */
static int next_stmt(pconn *c) {
    pjob *j = c->job;
    if (c->k == j->nstmts) {
        if (j->kind == JJ_DB_KIND_BATCH) return send_simple(c, "COMMIT", ST_COMMIT);
        if (PQtransactionStatus(c->pg) != PQTRANS_IDLE) {   /* e.g. START TRANSACTION */
            c->err = jj_db_fmt_alloc("transaction control is not allowed here (use a batch)");
            return 1;
        }
        end_job(c, 1);
        return 0;
    }
    c->cur = stmt_for(c, &j->stmts[c->k]);
    if (!c->cur) return 1;
    if (c->cur->ready) return send_exec(c);
    if (c->evicted[0]) {
        char sql[40];
        snprintf(sql, sizeof sql, "DEALLOCATE %s", c->evicted);
        c->evicted[0] = '\0';
        return send_simple(c, sql, ST_DEALLOCATE);
    }
    int r = send_prepare(c);
    if (r == 1) {   /* refused before PREPARE: forget the entry */
        free(c->cur->key);
        memset(c->cur, 0, sizeof *c->cur);
        c->cur = NULL;
    }
    return r;
}

/* The error of a failed step, prefixed for batches. */
static void step_error(pconn *c, PGresult *r) {
    if (c->err) return;
    const char *primary = r ? PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    char *m = jj_db_pg_message(primary ? primary : r ? PQresultErrorMessage(r) : PQerrorMessage(c->pg));
    if (c->job->kind == JJ_DB_KIND_BATCH && c->step != ST_BEGIN && c->step != ST_COMMIT &&
        c->step != ST_ROLLBACK) {
        c->err = jj_db_fmt_alloc("statement %d: %s", c->k + 1, m ? m : "error");
        free(m);
    } else {
        c->err = m;
    }
}

/* After an error: roll back if a transaction is open, else end the job. */
static int after_error(pconn *c) {
    if (c->step != ST_ROLLBACK && PQtransactionStatus(c->pg) != PQTRANS_IDLE)
        return send_simple(c, "ROLLBACK", ST_ROLLBACK);
    end_job(c, 0);
    return 0;
}

/* One step's results are all in (c->res is the last). Returns -1 when the
 * connection failed. */
static int step_done(pconn *c) {
    PGresult *r = c->res;
    c->res = NULL;
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    int rc = 0;
    if (!ok || c->step == ST_ROLLBACK) {
        if (!ok) step_error(c, r);
        if ((c->step == ST_PREPARE || c->step == ST_DEALLOCATE) && c->cur) {
            free(c->cur->key);
            memset(c->cur, 0, sizeof *c->cur);
            c->cur = NULL;
        }
        PQclear(r);
        if (c->step == ST_ROLLBACK) { end_job(c, 0); return 0; }
        return after_error(c);
    }
    switch (c->step) {
    case ST_BEGIN:
        PQclear(r);
        rc = next_stmt(c);
        break;
    case ST_DEALLOCATE:
        PQclear(r);
        rc = send_prepare(c);
        if (rc == 1 && c->cur) {   /* refused before PREPARE: forget the entry */
            free(c->cur->key);
            memset(c->cur, 0, sizeof *c->cur);
            c->cur = NULL;
        }
        break;
    case ST_PREPARE:
        PQclear(r);
        c->cur->ready = 1;
        rc = send_exec(c);
        break;
    case ST_EXEC: {
        const char *tag = PQcmdStatus(r);
        if (!strncmp(tag, "INSERT", 6) || !strncmp(tag, "UPDATE", 6) || !strncmp(tag, "DELETE", 6) ||
            !strncmp(tag, "MERGE", 5))
            c->changes += strtoll(PQcmdTuples(r), NULL, 10);
        int last = c->k == c->job->nstmts - 1;
        int collect = last && c->job->kind != JJ_DB_KIND_EXEC;
        if (collect) { PQclear(c->rows); c->rows = r; } else PQclear(r);
        c->k++;
        rc = next_stmt(c);
        break;
    }
    case ST_COMMIT:
        PQclear(r);
        end_job(c, 1);
        return 0;
    default:
        PQclear(r);
    }
    if (rc == 1) return after_error(c);
    return rc;
}

/* Reads what arrived and advances the running job. */
static void on_io(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop;
    pconn *c = w->data;
    pg_db *db = c->pool;
    db->depth++;
    if (c->state == C_CONNECTING) { poll_connect(c); leave(db); return; }
    if (revents & EV_WRITE) {
        if (flush(c) != 0) { conn_failed(c, "connection lost"); leave(db); return; }
        if (!(revents & EV_READ)) { leave(db); return; }
    }
    if (!PQconsumeInput(c->pg)) {
        char *m = jj_db_pg_message(PQerrorMessage(c->pg));
        conn_failed(c, m ? m : "connection lost");
        free(m);
        leave(db);
        return;
    }
    while (!db->closed && c->pg && c->job && !PQisBusy(c->pg)) {
        PGresult *r = PQgetResult(c->pg);
        if (r) {
            /* keep the last result of the step; an error result wins */
            if (c->res && PQresultStatus(c->res) == PGRES_FATAL_ERROR) PQclear(r);
            else { PQclear(c->res); c->res = r; }
            continue;
        }
        pjob *j = c->job;
        if (step_done(c) != 0) { conn_failed(c, "connection lost"); break; }
        if (c->job == j) continue;   /* next step sent: its results may be in already */
        break;
    }
    if (!db->closed) {
        if (c->state == C_IDLE && !c->job && c->pg && PQstatus(c->pg) == CONNECTION_BAD)
            conn_failed(c, "connection lost");
        else if (c->state == C_IDLE && !c->job) pump(db);
    }
    leave(db);
}

/* --------------------------------------------------------------- jobs */

static void start_job(pconn *c, pjob *j) {
    c->job = j;
    j->conn = c;
    c->state = C_BUSY;
    c->k = 0;
    c->changes = 0;
    c->err = NULL;
    c->t0 = jj_db_now_ms();
    int r = j->kind == JJ_DB_KIND_BATCH ? send_simple(c, "BEGIN", ST_BEGIN) : next_stmt(c);
    if (r == 1) r = after_error(c);
    if (r < 0) conn_failed(c, "connection lost");
}

/* Gives queued jobs to idle connections. */
static void pump(pg_db *db) {
    for (int i = 0; i < db->nconns && db->qhead && !db->closed; i++) {
        pconn *c = &db->conns[i];
        while (c->state == C_IDLE && !c->job && db->qhead && !db->closed) {
            pjob *j = db->qhead;
            queue_unlink(db, j);
            start_job(c, j);
        }
    }
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    pjob *j = w->data;
    pg_db *db = j->pool;
    db->depth++;
    if (j->conn) {   /* running: the statement may go on, so the connection is dropped */
        pconn *c = j->conn;
        JJ_WARN("database: a statement timed out; resetting its connection");
        c->backoff = 0;
        conn_reset(c, "timeout", 0);
    } else {
        queue_unlink(db, j);
        fail_job(db, j, "timeout", 0);
    }
    leave(db);
}

/* No connection up or connecting: everything queued fails now. */
static void on_fail_soon(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    pg_db *db = w->data;
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state != C_DOWN) return;
    char msg[320];
    snprintf(msg, sizeof msg, "database unavailable: %s", db->last_error);
    db->depth++;
    while (db->qhead && !db->closed) {
        pjob *j = db->qhead;
        queue_unlink(db, j);
        fail_job(db, j, msg, 0);
    }
    leave(db);
}

/* Copies stmts into one job block. NULL on bad input or out of memory. */
_Static_assert(sizeof(pjob) % _Alignof(jj_db_stmt) == 0, "the statements follow the job header");
static pjob *job_new(int kind, const jj_db_stmt *stmts, int nstmts) {
    size_t size = jj_db_stmts_size(stmts, nstmts);
    if (size == 0 || size > SIZE_MAX - sizeof(pjob)) return NULL;
    pjob *j = calloc(1, sizeof(pjob) + size);
    if (!j) return NULL;
    jj_db_stmt *ss = jj_db_stmts_copy(j + 1, stmts, nstmts);
    j->kind = kind;
    j->nstmts = nstmts;
    j->stmts = ss;
    return j;
}

static int pg_submit(jj_db *base, int kind, const jj_db_stmt *stmts, int nstmts, double timeout_ms,
                     jj_db_cb *cb, void *privdata) {
    pg_db *db = (pg_db *)base;
    if (db->closed || db->qlen >= QUEUE_LIMIT) return -1;
    pjob *j = job_new(kind, stmts, nstmts);
    if (!j) return -1;
    j->fail = calloc(1, sizeof *j->fail);
    if (!j->fail) { free(j); return -1; }
    j->pool = db;
    j->cb = cb;
    j->privdata = privdata;
    ev_timer_init(&j->deadline, on_deadline, (timeout_ms > 0 ? timeout_ms : DEFAULT_TIMEOUT_MS) / 1e3, 0.);
    j->deadline.data = j;
    ev_timer_start(db->loop, &j->deadline);   /* referenced: a callback is owed */
    if (db->qtail) { db->qtail->next = j; j->prev = db->qtail; } else db->qhead = j;
    db->qtail = j;
    db->qlen++;
    int alive = 0;
    for (int i = 0; i < db->nconns; i++) alive += db->conns[i].state != C_DOWN;
    if (!alive) { if (!ev_is_active(&db->fail_soon)) ev_timer_start(db->loop, &db->fail_soon); }
    else if (db->depth == 0) pump(db);
    else ev_feed_event(db->loop, &db->fail_soon, EV_TIMER);   /* pump after the callback returns */
    return 0;
}

static int pg_healthy(jj_db *base) {
    pg_db *db = (pg_db *)base;
    if (db->closed) return 0;
    for (int i = 0; i < db->nconns; i++)
        if (db->conns[i].state == C_IDLE || db->conns[i].state == C_BUSY) return 1;
    return !db->ever_up && !db->last_error[0];
}

static void pg_close(jj_db *base) {
    pg_db *db = (pg_db *)base;
    if (db->closed) return;
    db->closed = 1;
    db->depth++;
    for (int i = 0; i < db->nconns; i++) {
        pconn *c = &db->conns[i];
        io_watch(c, 0);
        timer_stop(c);
        if (c->job) {
            free(c->err);
            c->err = jj_db_fmt_alloc("database closed");
            c->job->conn = NULL;
            end_job(c, 0);
        }
        if (c->pg) PQfinish(c->pg);
        c->pg = NULL;
        cache_clear(c);
        c->state = C_DOWN;
    }
    while (db->qhead) {
        pjob *j = db->qhead;
        queue_unlink(db, j);
        fail_job(db, j, "database closed", 0);
    }
    ev_timer_stop(db->loop, &db->fail_soon);
    ev_clear_pending(db->loop, &db->fail_soon);
    db->depth--;
    if (db->depth) db->free_deferred = 1;
    else destroy(db);
}

static void on_fail_soon_or_pump(struct ev_loop *loop, ev_timer *w, int revents) {
    pg_db *db = w->data;
    int alive = 0;
    for (int i = 0; i < db->nconns; i++) alive += db->conns[i].state != C_DOWN;
    if (alive) { db->depth++; pump(db); leave(db); return; }
    on_fail_soon(loop, w, revents);
}

static const jj_db_ops pg_ops = {"postgres", pg_submit, pg_healthy, pg_close};

jj_db *jj_db_pg_open(struct ev_loop *loop, const char *url, int nconns, char *err, size_t errlen) {
    if (nconns < 1 || nconns > MAX_CONNS) {
        snprintf(err, errlen, "database connections must be between 1 and %d", MAX_CONNS);
        return NULL;
    }
    if (jj_db_pg_check_url(url, err, errlen) != 0) return NULL;
    pg_db *db = calloc(1, sizeof *db);
    pconn *conns = calloc((size_t)nconns, sizeof *conns);
    char *u = strdup(url);
    if (!db || !conns || !u) {
        free(db); free(conns); free(u);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    db->base.ops = &pg_ops;
    db->loop = loop;
    db->url = u;
    db->nconns = nconns;
    db->conns = conns;
    ev_timer_init(&db->fail_soon, on_fail_soon_or_pump, 0., 0.);
    db->fail_soon.data = db;
    for (int i = 0; i < nconns; i++) {
        pconn *c = &conns[i];
        c->pool = db;
        ev_init(&c->io, on_io);
        c->io.data = c;
        ev_init(&c->timer, on_conn_timer);
        c->timer.data = c;
        start_connect(c);
    }
    return &db->base;
}
