/* db.h: the database of record, one API over two backends:
 *  - SQLite in WAL mode (a file path) behind a small thread pool
 *    (db_sqlite.c): a statement runs on a pool thread and its result comes
 *    back to the loop through ev_async, where the callback runs;
 *  - PostgreSQL (a postgres:// URL) through libpq in non-blocking mode on
 *    the loop itself, a few connections per loop (db_pg.c).
 * The event loop never waits for the database. db.c picks the backend and
 * holds what both share.
 *
 * SQL is written with SQLite's placeholders (?, ?NNN); the PostgreSQL
 * backend rewrites them to $N (outside literals and comments) and binds the
 * values, never splicing them. Results have the same Lua-visible types on
 * both: integers (also bigint and boolean, as 1/0), floats, text, blobs
 * (bytea), NULL.
 */
#ifndef JJ_DB_H
#define JJ_DB_H

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
typedef struct jj_db jj_db;

enum jj_db_type { JJ_DB_NULL = 0, JJ_DB_INT, JJ_DB_FLOAT, JJ_DB_TEXT, JJ_DB_BLOB };

typedef struct jj_db_value {
    int type;          /* enum jj_db_type */
    int64_t i;
    double d;
    const char *s;     /* TEXT/BLOB bytes */
    size_t len;
} jj_db_value;

/* A finished statement. Owned by the callback's receiver: free it with
 * jj_db_result_free. Values are row-major: value(r, c) = values[r*ncols+c]. */
typedef struct jj_db_result {
    const char *err;          /* NULL on success */
    int ncols;
    size_t nrows;
    char **names;             /* ncols column names */
    jj_db_value *values;      /* nrows * ncols */
    int64_t changes;          /* for exec */
    int64_t last_insert_id;   /* for exec */
    double elapsed_ms;
} jj_db_result;

typedef void jj_db_cb(jj_db_result *res, void *privdata);

/* Opens the pool on the loop: target is a postgres:// or postgresql:// URL
 * (nconns connections, connected in the background and reconnected with
 * backoff) or else an SQLite file path (nconns threads and connections,
 * WAL, busy timeout). Returns NULL and writes a message into err on
 * failure (a PostgreSQL server that is down is not one: calls fail with
 * "database unavailable" until it is back). */
jj_db *jj_db_open(struct ev_loop *loop, const char *target, int nconns, char *err, size_t errlen);
/* "sqlite" or "postgres". */
const char *jj_db_dialect(const jj_db *db);
/* 1 if target names a PostgreSQL database (postgres:// or postgresql://). */
int jj_db_is_url(const char *target);
/* Checks a postgres:// URL without connecting: 0, or -1 with the problem in err. */
int jj_db_check_url(const char *url, char *err, size_t errlen);
/* Waits for running statements, fails queued ones with "database closed"
 * (their callbacks run before this returns), joins the threads. */
void jj_db_close(jj_db *db);

/* Queues a statement. SQL and parameters are copied. Returns 0 (cb will run
 * exactly once on the loop thread) or -1 (queue full or closed; cb not
 * called). is_query: collect rows; else report changes/last insert id. */
int jj_db_submit(jj_db *db, int is_query, const char *sql, size_t sqllen,
                 const jj_db_value *params, int nparams, jj_db_cb *cb, void *privdata);
void jj_db_result_free(jj_db_result *res);

/* One statement of a batch. */
typedef struct jj_db_stmt {
    const char *sql;
    size_t sqllen;
    const jj_db_value *params;
    int nparams;
} jj_db_stmt;

/* Queues nstmts statements that run in order inside one BEGIN IMMEDIATE ...
 * COMMIT on one connection; any error rolls all of them back and the
 * result's err says which statement failed ("statement 2: ..."). On success
 * the result holds the last statement's rows (ncols == 0 if it returns
 * none), the rows changed by all of them and the last insert rowid.
 * Statements and parameters are copied; same return contract as
 * jj_db_submit. Statements must not BEGIN, COMMIT or ROLLBACK themselves. */
int jj_db_submit_batch(jj_db *db, const jj_db_stmt *stmts, int nstmts,
                       jj_db_cb *cb, void *privdata);

/* Both of the above with a bound: is_query 1 query, 0 exec, -1 batch.
 * timeout_ms > 0: on PostgreSQL the call fails with "timeout" after that
 * long (and its connection is reset); 0 means 5000 ms there. SQLite cannot
 * stop a running statement: its bound is the caller's wait. */
int jj_db_submit_timeout(jj_db *db, int is_query, const jj_db_stmt *stmts, int nstmts,
                         double timeout_ms, jj_db_cb *cb, void *privdata);

/* Notes on the SQLite implementation (db_sqlite.c; db_pg.c says how
 * PostgreSQL differs):
 * - Every function but jj_db_migrate is called on the loop thread only.
 * - Results: TEXT and BLOB values (and names) are NUL-terminated copies; a
 *   NULL value has s == NULL; elapsed_ms is the time the job ran on its
 *   pool thread (queueing excluded). changes counts rows changed directly
 *   by INSERT/UPDATE/DELETE (0 for other statements); last_insert_id is 0
 *   unless the job inserted a row.
 * - One statement per jj_db_submit (trailing statements are an error), and
 *   its parameter count must match. BEGIN/COMMIT/ROLLBACK/SAVEPOINT are
 *   refused outside a batch: a pooled connection never keeps a transaction.
 * - The queue holds at most 10000 waiting jobs; the ev_async watcher keeps
 *   the loop alive only while some callback is owed. */

/* Synchronous, for start-up only (before any worker serves): applies the
 * migrations in dir to target (a path or URL, as jj_db_open) and returns 0,
 * or -1 with a message in err. Files are NNN_name.sql, shared by both
 * dialects, or NNN_name.sqlite.sql / NNN_name.pg.sql where the dialects
 * differ (a dialect's own file wins over the shared one with its number).
 * Each runs once, in order, in its own transaction; SQLite records the
 * newest in PRAGMA user_version, PostgreSQL each in schema_migrations,
 * under an advisory lock so that instances starting together apply each
 * migration once. */
int jj_db_migrate(const char *target, const char *dir, char *err, size_t errlen);

/* 1 if the last statement run or a quick probe succeeded. */
int jj_db_healthy(jj_db *db);

#endif
