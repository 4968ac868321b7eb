/* db_pg_migrate.c: the start-up side of the PostgreSQL backend: checking a
 * DATABASE_URL without connecting, and applying the migrations. Blocking
 * libpq is fine here: both run before any worker serves (db_pg.c is the
 * non-blocking side).
 */
#include "db_internal.h"
#include "log.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIGRATE_LOCK_KEY 7245019313LL   /* pg_advisory_lock key: one migrating instance at a time */

/* ----------------------------------------------------------- the URL */

int jj_db_pg_check_url(const char *url, char *err, size_t errlen) {
    char *msg = NULL;
    PQconninfoOption *opts = PQconninfoParse(url, &msg);
    if (!opts) {
        char *m = jj_db_pg_message(msg ? msg : "out of memory");
        snprintf(err, errlen, "%s", m ? m : "cannot be parsed");
        free(m);
        PQfreemem(msg);
        return -1;
    }
    int rc = 0;
    for (PQconninfoOption *o = opts; o->keyword; o++) {
        if (!o->val) continue;
        if (!strcmp(o->keyword, "sslmode")) {
            static const char *const modes[] = {"disable", "allow", "prefer", "require",
                                                "verify-ca", "verify-full", NULL};
            int known = 0;
            for (int i = 0; modes[i]; i++) known |= !strcmp(o->val, modes[i]);
            if (!known) {
                snprintf(err, errlen, "sslmode must be one of disable, allow, prefer, require, "
                         "verify-ca, verify-full (got \"%.32s\")", o->val);
                rc = -1;
            }
        } else if (!strcmp(o->keyword, "port")) {
            char *end;
            long p = strtol(o->val, &end, 10);
            if (*end || p < 1 || p > 65535) { snprintf(err, errlen, "port must be 1..65535"); rc = -1; }
        }
    }
    PQconninfoFree(opts);
    return rc;
}

/* ---------------------------------------------------------- migrate */

static int exec_ok(PGconn *pg, const char *sql, char *err, size_t errlen, const char *what) {
    PGresult *r = PQexec(pg, sql);
    ExecStatusType st = PQresultStatus(r);
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok) {
        char *m = jj_db_pg_message(PQresultErrorMessage(r));
        snprintf(err, errlen, "%s: %s", what, m ? m : "failed");
        free(m);
    }
    PQclear(r);
    return ok ? 0 : -1;
}

int jj_db_pg_migrate(const char *url, const char *dir, const jj_db_migration *ms, int n,
                     char *err, size_t errlen) {
    if (jj_db_pg_check_url(url, err, errlen) != 0) return -1;
    /* a server that does not answer is an error, not a hang (the URL may say otherwise) */
    const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname", NULL};
    const char *const vals[] = {"10", "jollyjet-migrate", url, NULL};
    PGconn *pg = PQconnectdbParams(keys, vals, 1);
    int rc = -1, applied = 0;
    char *done = NULL;
    if (PQstatus(pg) != CONNECTION_OK) {
        char *m = jj_db_pg_message(PQerrorMessage(pg));
        snprintf(err, errlen, "cannot connect: %s", m ? m : "failed");
        free(m);
        goto out;
    }
    PQsetNoticeProcessor(pg, jj_db_pg_quiet, NULL);
    /* One instance migrates at a time; the others wait here, then find the
     * migrations applied. The lock ends with the session. */
    char lock[96];
    snprintf(lock, sizeof lock, "SELECT pg_advisory_lock(%lld)", MIGRATE_LOCK_KEY);
    if (exec_ok(pg, lock, err, errlen, "advisory lock") != 0) goto out;
    if (exec_ok(pg, "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, "
                    "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                err, errlen, "schema_migrations") != 0)
        goto out;
    done = calloc((size_t)n + 1, 1);
    if (!done) { snprintf(err, errlen, "out of memory"); goto out; }
    PGresult *r = PQexec(pg, "SELECT version FROM schema_migrations");
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        char *m = jj_db_pg_message(PQresultErrorMessage(r));
        snprintf(err, errlen, "schema_migrations: %s", m ? m : "failed");
        free(m);
        PQclear(r);
        goto out;
    }
    long long newest = 0;
    for (int row = 0; row < PQntuples(r); row++) {
        long long v = strtoll(PQgetvalue(r, row, 0), NULL, 10);
        if (v > newest) newest = v;
        for (int i = 0; i < n; i++) if (ms[i].num == v) done[i] = 1;
    }
    PQclear(r);
    for (int i = 0; i < n; i++) {
        if (done[i]) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ms[i].name);
        char *sql = jj_db_read_file(path);
        if (!sql) { snprintf(err, errlen, "%s: cannot read it", ms[i].name); goto out; }
        char what[300];
        snprintf(what, sizeof what, "%s", ms[i].name);
        /* The script runs as one simple query inside this transaction (it
         * must not BEGIN or COMMIT itself); recorded in the same one. */
        int bad = exec_ok(pg, "BEGIN", err, errlen, what) || exec_ok(pg, sql, err, errlen, what);
        free(sql);
        if (!bad) {
            char num[32];
            snprintf(num, sizeof num, "%lld", ms[i].num);
            const char *vals[2] = {num, ms[i].name};
            PGresult *ins = PQexecParams(pg, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                                         2, NULL, vals, NULL, NULL, 0);
            if (PQresultStatus(ins) != PGRES_COMMAND_OK) {
                char *m = jj_db_pg_message(PQresultErrorMessage(ins));
                snprintf(err, errlen, "%s: %s", what, m ? m : "failed");
                free(m);
                bad = 1;
            }
            PQclear(ins);
        }
        if (bad || exec_ok(pg, "COMMIT", err, errlen, what) != 0) {
            PGresult *rb = PQexec(pg, "ROLLBACK");
            PQclear(rb);
            goto out;
        }
        JJ_INFO("database migration %s applied", ms[i].name);
        applied++;
    }
    if (n > 0 && newest > ms[n - 1].num)
        JJ_WARN("database schema version %lld is newer than the newest migration (%lld)", newest,
                ms[n - 1].num);
    JJ_DEBUG("database migrations: %d applied", applied);
    rc = 0;
out:
    free(done);
    PQfinish(pg);   /* also releases the advisory lock */
    return rc;
}
