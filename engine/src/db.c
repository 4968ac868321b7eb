/* db.c: the database front behind db.h. It picks the backend from the
 * target (a postgres:// URL or an SQLite path), forwards every call to it
 * through jj_db_ops, and holds what the backends share: result freeing,
 * the query metrics, the migration file list, small string helpers.
 */
#include "db_internal.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* ------------------------------------------------------------ helpers */

double jj_db_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

char *jj_db_fmt_alloc(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* Pool jobs must not control transactions: a transaction left open on a
 * pooled connection would hold locks for whatever job runs there next, and
 * a COMMIT inside a batch would break its atomicity. */
int jj_db_is_txn_control(const char *sql, size_t len) {
    size_t i = 0;
    for (;;) {
        while (i < len && strchr(" \t\r\n\f\v", sql[i]) && sql[i]) i++;
        if (i + 1 < len && sql[i] == '-' && sql[i + 1] == '-') {
            while (i < len && sql[i] != '\n') i++;
        } else if (i + 1 < len && sql[i] == '/' && sql[i + 1] == '*') {
            i += 2;
            while (i + 1 < len && !(sql[i] == '*' && sql[i + 1] == '/')) i++;
            i += 2;
        } else {
            break;
        }
    }
    char word[10];
    size_t n = 0;
    while (i < len && n < sizeof word - 1 &&
           ((sql[i] >= 'a' && sql[i] <= 'z') || (sql[i] >= 'A' && sql[i] <= 'Z')))
        word[n++] = sql[i++];
    word[n] = '\0';
    return strcasecmp(word, "BEGIN") == 0 || strcasecmp(word, "COMMIT") == 0 ||
           strcasecmp(word, "END") == 0 || strcasecmp(word, "ROLLBACK") == 0;
}

void jj_db_count(jj_db_metrics *m, int kind, const jj_db_result *res) {
    static const char *const queries[3][2] = {
        {"db_queries{kind=\"query\",result=\"ok\"}", "db_queries{kind=\"query\",result=\"error\"}"},
        {"db_queries{kind=\"exec\",result=\"ok\"}", "db_queries{kind=\"exec\",result=\"error\"}"},
        {"db_queries{kind=\"batch\",result=\"ok\"}", "db_queries{kind=\"batch\",result=\"error\"}"}};
    static const char *const duration[3] = {
        "db_query_duration{kind=\"query\"}", "db_query_duration{kind=\"exec\"}", "db_query_duration{kind=\"batch\"}"};
    if (kind < 0 || kind > 2) return;
    int failed = res->err != NULL;
    jj_metric_add(&m->queries[kind][failed], queries[kind][failed], 1);
    if (res->elapsed_ms > 0 || !failed)   /* a job failed before it ran took no time there */
        jj_metric_observe(&m->duration[kind], duration[kind], res->elapsed_ms);
}

/* ------------------------------------------------------------- the API */

int jj_db_is_url(const char *target) {
    return target && (strncmp(target, "postgres://", 11) == 0 || strncmp(target, "postgresql://", 13) == 0);
}

int jj_db_check_url(const char *url, char *err, size_t errlen) {
    return jj_db_pg_check_url(url, err, errlen);
}

jj_db *jj_db_open(struct ev_loop *loop, const char *target, int nconns, char *err, size_t errlen) {
    if (jj_db_is_url(target)) return jj_db_pg_open(loop, target, nconns, err, errlen);
    return jj_db_sqlite_open(loop, target, nconns, err, errlen);
}

const char *jj_db_dialect(const jj_db *db) {
    return db ? db->ops->dialect : "sqlite";
}

void jj_db_close(jj_db *db) {
    if (db) db->ops->close(db);
}

int jj_db_submit_timeout(jj_db *db, int is_query, const jj_db_stmt *stmts, int nstmts,
                         double timeout_ms, jj_db_cb *cb, void *privdata) {
    if (!db || !cb || !stmts || nstmts < 1) return -1;
    int kind = is_query > 0 ? JJ_DB_KIND_QUERY : is_query == 0 ? JJ_DB_KIND_EXEC : JJ_DB_KIND_BATCH;
    if (kind != JJ_DB_KIND_BATCH && nstmts != 1) return -1;
    return db->ops->submit(db, kind, stmts, nstmts, timeout_ms, cb, privdata);
}

int jj_db_submit(jj_db *db, int is_query, const char *sql, size_t sqllen,
                 const jj_db_value *params, int nparams, jj_db_cb *cb, void *privdata) {
    jj_db_stmt s = {sql, sqllen, params, nparams};
    return jj_db_submit_timeout(db, is_query ? 1 : 0, &s, 1, 0, cb, privdata);
}

int jj_db_submit_batch(jj_db *db, const jj_db_stmt *stmts, int nstmts, jj_db_cb *cb,
                       void *privdata) {
    return jj_db_submit_timeout(db, -1, stmts, nstmts, 0, cb, privdata);
}

void jj_db_result_free(jj_db_result *res) {
    if (!res) return;
    jj_db_result_impl *r = (jj_db_result_impl *)res;
    free(res->names);
    free(res->values);
    free(r->bytes);
    free(r);
}

int jj_db_healthy(jj_db *db) {
    return db && db->ops->healthy(db);
}

/* ------------------------------------------------------------ migrate */

static int cmp_migration(const void *a, const void *b) {
    const jj_db_migration *x = a, *y = b;
    return (x->num > y->num) - (x->num < y->num);
}

char *jj_db_read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 8192;
            char *nb = realloc(buf, cap);
            if (!nb) { free(buf); fclose(f); errno = ENOMEM; return NULL; }
            buf = nb;
        }
        size_t n = fread(buf + len, 1, cap - len - 1, f);
        len += n;
        if (n == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); errno = EIO; return NULL; }
    buf[len] = '\0';
    return buf;
}

/* The dialect a migration file is for: "" (both), "sqlite" or "pg"; NULL
 * for another suffix. */
static const char *file_dialect(const char *name, size_t len) {
    if (len > 11 && strcmp(name + len - 11, ".sqlite.sql") == 0) return "sqlite";
    if (len > 7 && strcmp(name + len - 7, ".pg.sql") == 0) return "pg";
    const char *dot = strchr(name, '.');
    return dot && dot == name + len - 4 ? "" : NULL;
}

/* Lists dir's migrations for dialect ("sqlite" or "pg"), sorted by number:
 * per number the dialect's own file, else the shared one. Returns the
 * count, or -1 with a message in err. *out is malloc'd (names too). */
static int list_migrations(const char *dir, const char *dialect, jj_db_migration **out,
                           char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) { snprintf(err, errlen, "%s: %s", dir, strerror(errno)); return -1; }
    jj_db_migration *ms = NULL;
    int n = 0, cap = 0, rc = 0;
    char *own = NULL;   /* per entry: 1 if it is the dialect's own file */
    struct dirent *de;
    while (rc == 0 && (de = readdir(d)) != NULL) {
        const char *name = de->d_name;
        size_t len = strlen(name);
        if (len < 4 || strcmp(name + len - 4, ".sql") != 0) continue;
        size_t digits = 0;
        while (name[digits] >= '0' && name[digits] <= '9') digits++;
        const char *fd = file_dialect(name, len);
        if (digits < 3 || name[digits] != '_' || digits > 9 || !fd) {
            snprintf(err, errlen, "%s/%s: migration names must look like NNN_name.sql, "
                     "NNN_name.sqlite.sql or NNN_name.pg.sql", dir, name);
            rc = -1;
            break;
        }
        if (*fd && strcmp(fd, dialect) != 0) continue;   /* the other dialect's */
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            jj_db_migration *nm = realloc(ms, (size_t)cap * sizeof *nm);
            char *no = realloc(own, (size_t)cap);
            if (nm) ms = nm;
            if (no) own = no;
            if (!nm || !no) { snprintf(err, errlen, "out of memory"); rc = -1; break; }
        }
        ms[n].num = strtoll(name, NULL, 10);
        ms[n].name = strdup(name);
        own[n] = *fd != 0;
        if (!ms[n].name) { snprintf(err, errlen, "out of memory"); rc = -1; break; }
        n++;
    }
    closedir(d);
    if (rc == 0 && n > 1) {
        /* sort by number, the dialect's own file before a shared one */
        for (int i = 0; i < n; i++) ms[i].num = ms[i].num * 2 + (own[i] ? 0 : 1);
        qsort(ms, (size_t)n, sizeof *ms, cmp_migration);
        int k = 0, prev_own = 0;
        for (int i = 0; i < n; i++) {
            long long num = ms[i].num / 2;
            int is_own = ms[i].num % 2 == 0;
            ms[i].num = num;
            if (k > 0 && ms[k - 1].num == num) {
                if (prev_own && !is_own) { free(ms[i].name); continue; }   /* the shared twin */
                if (rc == 0)
                    snprintf(err, errlen, "%s: %s and %s have the same number", dir,
                             ms[k - 1].name, ms[i].name);
                rc = -1;
            }
            ms[k++] = ms[i];
            prev_own = is_own;
        }
        n = k;
    }
    free(own);
    if (rc != 0) {
        for (int i = 0; i < n; i++) free(ms[i].name);
        free(ms);
        return -1;
    }
    *out = ms;
    return n;
}

int jj_db_migrate(const char *target, const char *dir, char *err, size_t errlen) {
    int pg = jj_db_is_url(target);
    jj_db_migration *ms = NULL;
    int n = list_migrations(dir, pg ? "pg" : "sqlite", &ms, err, errlen);
    if (n < 0) return -1;
    int rc = pg ? jj_db_pg_migrate(target, dir, ms, n, err, errlen)
                : jj_db_sqlite_migrate(target, dir, ms, n, err, errlen);
    for (int i = 0; i < n; i++) free(ms[i].name);
    free(ms);
    return rc;
}

/* ------------------------------------------------- a job's statements */

static int add_size(size_t *acc, size_t n) {
    if (n > SIZE_MAX - *acc) return -1;
    *acc += n;
    return 0;
}

size_t jj_db_stmts_size(const jj_db_stmt *stmts, int nstmts) {
    if (nstmts < 1 || !stmts) return 0;
    size_t nvals = 0, nbytes = 0, total = 0;
    for (int k = 0; k < nstmts; k++) {
        const jj_db_stmt *s = &stmts[k];
        if (!s->sql || s->nparams < 0 || (s->nparams > 0 && !s->params)) return 0;
        if (add_size(&nbytes, s->sqllen) || add_size(&nbytes, 1)) return 0;
        nvals += (size_t)s->nparams;
        for (int p = 0; p < s->nparams; p++) {
            const jj_db_value *v = &s->params[p];
            if (v->type < JJ_DB_NULL || v->type > JJ_DB_BLOB) return 0;
            if (v->type != JJ_DB_TEXT && v->type != JJ_DB_BLOB) continue;
            if (!v->s && v->len) return 0;
            if (add_size(&nbytes, v->len) || add_size(&nbytes, 1)) return 0;
        }
    }
    if (add_size(&total, (size_t)nstmts * sizeof(jj_db_stmt)) ||
        nvals > SIZE_MAX / sizeof(jj_db_value) || add_size(&total, nvals * sizeof(jj_db_value)) ||
        add_size(&total, nbytes))
        return 0;
    return total;
}

jj_db_stmt *jj_db_stmts_copy(void *mem, const jj_db_stmt *stmts, int nstmts) {
    size_t nvals = 0;
    for (int k = 0; k < nstmts; k++) nvals += (size_t)stmts[k].nparams;
    /* stmts[nstmts] | values[nvals] | bytes: all 8-byte multiples until the
     * bytes, so every part is aligned. */
    jj_db_stmt *ss = mem;
    jj_db_value *vv = (jj_db_value *)(ss + nstmts);
    char *bp = (char *)(vv + nvals);
    for (int k = 0; k < nstmts; k++) {
        const jj_db_stmt *s = &stmts[k];
        memcpy(bp, s->sql, s->sqllen);
        bp[s->sqllen] = '\0';
        ss[k].sql = bp;
        ss[k].sqllen = s->sqllen;
        ss[k].params = vv;
        ss[k].nparams = s->nparams;
        bp += s->sqllen + 1;
        for (int p = 0; p < s->nparams; p++) {
            *vv = s->params[p];
            if (vv->type == JJ_DB_TEXT || vv->type == JJ_DB_BLOB) {
                if (vv->len) memcpy(bp, vv->s, vv->len);
                bp[vv->len] = '\0';
                vv->s = bp;   /* never NULL: a NULL blob pointer would bind NULL */
                bp += vv->len + 1;
            }
            vv++;
        }
    }
    return ss;
}
