/* db_internal.h: what the database front (db.c) shares with its backends
 * (db_sqlite.c, db_pg.c). Nothing outside engine/src/db*.c includes it.
 *
 * A backend's pool struct starts with a jj_db, so a jj_db * is the pool:
 * db.c only ever calls through db->ops.
 */
#ifndef JJ_DB_INTERNAL_H
#define JJ_DB_INTERNAL_H

#include "db.h"
#include "metrics.h"

#include <stdarg.h>

enum { JJ_DB_KIND_QUERY, JJ_DB_KIND_EXEC, JJ_DB_KIND_BATCH };

typedef struct jj_db_ops {
    const char *dialect;   /* "sqlite" | "postgres" */
    /* Same contract as jj_db_submit_batch (kind: JJ_DB_KIND_*; a QUERY or
     * EXEC job has one statement). timeout_ms > 0 bounds the job: the
     * backend fails it with "timeout" when it can (PostgreSQL), or leaves
     * the bound to the caller's wait (SQLite). */
    int (*submit)(jj_db *db, int kind, const jj_db_stmt *stmts, int nstmts, double timeout_ms,
                  jj_db_cb *cb, void *privdata);
    int (*healthy)(jj_db *db);
    void (*close)(jj_db *db);   /* fails what is queued, frees db (maybe once the current callback returns) */
} jj_db_ops;

struct jj_db {
    const jj_db_ops *ops;
};

/* The public result plus the one buffer its strings live in. The receiver
 * frees all of it with jj_db_result_free. */
typedef struct jj_db_result_impl {
    jj_db_result pub;       /* first: a jj_db_result * is a jj_db_result_impl * */
    char *bytes;            /* names, TEXT/BLOB values, or the error text */
} jj_db_result_impl;

/* db_queries{kind=..,result="ok"|"error"}, db_query_duration{kind=..} */
typedef struct jj_db_metrics {
    jj_metric queries[3][2], duration[3];
} jj_db_metrics;
void jj_db_count(jj_db_metrics *m, int kind, const jj_db_result *res);

/* One migration file, chosen for the backend's dialect. */
typedef struct jj_db_migration {
    long long num;
    char *name;   /* file name inside the migrations directory */
} jj_db_migration;

/* The migration file's contents (NUL-terminated, malloc'd), or NULL with
 * errno set. */
char *jj_db_read_file(const char *path);
/* A malloc'd formatted string, or NULL when out of memory. */
char *jj_db_fmt_alloc(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Whether a statement's first keyword starts or ends a transaction
 * (BEGIN, COMMIT, END, ROLLBACK). */
int jj_db_is_txn_control(const char *sql, size_t len);
double jj_db_now_ms(void);

/* A job's statements, copied into the block that holds the job: both
 * backends queue a copy, since the caller's buffers end with its call.
 * jj_db_stmts_size: the bytes the copy takes (the statements, then their
 * values, then the SQL and text/blob bytes), or 0 on bad input or overflow.
 * jj_db_stmts_copy: writes the copy into mem (that many bytes, aligned for
 * jj_db_stmt, e.g. right after an 8-byte-multiple header) and returns its
 * statements; every pointer in it points into mem, which owns them. */
size_t jj_db_stmts_size(const jj_db_stmt *stmts, int nstmts);
jj_db_stmt *jj_db_stmts_copy(void *mem, const jj_db_stmt *stmts, int nstmts);

jj_db *jj_db_sqlite_open(struct ev_loop *loop, const char *path, int nthreads, char *err, size_t errlen);
int jj_db_sqlite_migrate(const char *path, const char *dir, const jj_db_migration *ms, int n,
                         char *err, size_t errlen);

jj_db *jj_db_pg_open(struct ev_loop *loop, const char *url, int nconns, char *err, size_t errlen);
int jj_db_pg_migrate(const char *url, const char *dir, const jj_db_migration *ms, int n,
                     char *err, size_t errlen);
int jj_db_pg_check_url(const char *url, char *err, size_t errlen);
/* PostgreSQL's message without its trailing newline, malloc'd (NULL when
 * out of memory). */
char *jj_db_pg_message(const char *msg);
/* A libpq notice processor that drops notices. */
void jj_db_pg_quiet(void *arg, const char *msg);

#endif
