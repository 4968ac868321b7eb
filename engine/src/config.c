/* config.c: the environment, validated. Every failure names the variable. */
#include "config.h"
#include "db.h"
#include "log.h"

#include <errno.h>
#include <sys/stat.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

typedef struct {
    const char *(*get)(const char *, void *);
    void *ud;
    char *err;
    size_t errlen;
} env;

static const char *var(env *e, const char *name) {
    const char *v = e->get(name, e->ud);
    return (v && *v) ? v : NULL;
}

static int fail(env *e, const char *name, const char *problem, const char *value) {
    if (value)
        snprintf(e->err, e->errlen, "%s: %s (got \"%.64s\")", name, problem, value);
    else
        snprintf(e->err, e->errlen, "%s: %s", name, problem);
    return -1;
}

static int get_long(env *e, const char *name, long def, long lo, long hi, long *out) {
    const char *v = var(e, name);
    if (!v) { *out = def; return 0; }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v) return fail(e, name, "must be an integer", v);
    if (x < lo || x > hi) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be between %ld and %ld", lo, hi);
        return fail(e, name, msg, v);
    }
    *out = x;
    return 0;
}

static int get_double(env *e, const char *name, double def, double lo, double hi, double *out) {
    const char *v = var(e, name);
    if (!v) { *out = def; return 0; }
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v) return fail(e, name, "must be a number", v);
    if (!(x >= lo && x <= hi)) {
        char msg[96];
        snprintf(msg, sizeof msg, "must be between %g and %g", lo, hi);
        return fail(e, name, msg, v);
    }
    *out = x;
    return 0;
}

static int get_str(env *e, const char *name, const char *def, char *dst, size_t cap) {
    const char *v = var(e, name);
    if (!v) v = def;
    if (strlen(v) >= cap) return fail(e, name, "is too long", NULL);
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int get_bool(env *e, const char *name, int def, int *out) {
    const char *v = var(e, name);
    if (!v) { *out = def; return 0; }
    if (!strcasecmp(v, "1") || !strcasecmp(v, "true") || !strcasecmp(v, "yes") || !strcasecmp(v, "on")) *out = 1;
    else if (!strcasecmp(v, "0") || !strcasecmp(v, "false") || !strcasecmp(v, "no") || !strcasecmp(v, "off")) *out = 0;
    else return fail(e, name, "must be true or false", v);
    return 0;
}

/* An installed engine (PREFIX/bin/jollyjet) finds its files under
 * PREFIX/share/jollyjet/<sub> when the variable is unset and the relative
 * default (dst) does not exist in the working directory. */
static void installed_default(env *e, const char *name, const char *sub, char *dst, size_t cap) {
    if (var(e, name) || access(dst, F_OK) == 0) return;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = 0;
    char *slash = strrchr(exe, '/');            /* PREFIX/bin/jollyjet -> PREFIX/bin */
    if (slash) *slash = 0;
    slash = strrchr(exe, '/');                  /* -> PREFIX */
    if (!slash) return;
    *slash = 0;
    char path[PATH_MAX];
    int len = snprintf(path, sizeof path, "%s/share/jollyjet/%s", exe, sub);
    if (len < 0 || (size_t)len >= sizeof path || (size_t)len >= cap || access(path, F_OK) != 0) return;
    memcpy(dst, path, (size_t)len + 1);
}

static int pct_decode(char *s) {
    char *o = s;
    for (char *p = s; *p; p++) {
        if (*p == '%') {
            int hi, lo;
            if (sscanf(p + 1, "%1x%1x", (unsigned *)&hi, (unsigned *)&lo) != 2) return -1;
            *o++ = (char)(hi * 16 + lo);
            p += 2;
        } else *o++ = *p;
    }
    *o = 0;
    return 0;
}

/* redis://[user:password@]host[:port][/db] (also rediss:// is refused:
 * hiredis 0.14 has no TLS). */
static int parse_redis_url(env *e, const char *url, jj_config *c) {
    const char *name = "REDIS_URL";
    if (strncmp(url, "redis://", 8) != 0)
        return fail(e, name, "must start with redis:// (TLS is not supported)", url);
    char buf[1024];
    if (strlen(url + 8) >= sizeof buf) return fail(e, name, "is too long", NULL);
    strcpy(buf, url + 8);
    char *hostpart = buf, *at = strrchr(buf, '@');
    if (at) {
        *at = 0;
        hostpart = at + 1;
        char *colon = strchr(buf, ':');
        const char *user = "", *pass = buf;
        if (colon) { *colon = 0; user = buf; pass = colon + 1; }
        if (pct_decode((char *)user) || pct_decode((char *)pass))
            return fail(e, name, "has a malformed %-escape in its credentials", NULL);
        if (strlen(user) >= sizeof c->redis_user || strlen(pass) >= sizeof c->redis_password)
            return fail(e, name, "credentials are too long", NULL);
        strcpy(c->redis_user, user);
        strcpy(c->redis_password, pass);
    }
    char *slash = strchr(hostpart, '/');
    if (slash) {
        *slash = 0;
        if (slash[1]) {
            char *end;
            long db = strtol(slash + 1, &end, 10);
            if (*end || db < 0 || db > 15) return fail(e, name, "database must be 0..15", url);
            c->redis_db = (int)db;
        }
    }
    char *colon = strrchr(hostpart, ':');
    if (colon) {
        *colon = 0;
        char *end;
        long port = strtol(colon + 1, &end, 10);
        if (*end || port < 1 || port > 65535) return fail(e, name, "port must be 1..65535", url);
        c->redis_port = (int)port;
    }
    if (!*hostpart) return fail(e, name, "has no host", url);
    if (strlen(hostpart) >= sizeof c->redis_host) return fail(e, name, "host is too long", NULL);
    strcpy(c->redis_host, hostpart);
    return 0;
}

/* REDIS_SENTINELS=host:port,host:port,... (at most 16; the port is
 * required: a sentinel listens on 26379 by default, not 6379). */
static int parse_sentinels(env *e, const char *list, jj_config *c) {
    const char *name = "REDIS_SENTINELS";
    char out[sizeof c->redis_sentinels] = "";
    size_t used = 0;
    int n = 0;
    const char *p = list;
    for (;;) {
        while (*p == ' ') p++;
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        while (len > 0 && p[len - 1] == ' ') len--;
        char item[300];
        if (len == 0) return fail(e, name, "has an empty entry (expected host:port,host:port,...)", list);
        if (len >= sizeof item) return fail(e, name, "has an entry that is too long", NULL);
        memcpy(item, p, len);
        item[len] = 0;
        char *colon = strrchr(item, ':');
        if (colon == NULL || colon == item)
            return fail(e, name, "each entry must be host:port", item);
        *colon = 0;
        char *pend;
        errno = 0;
        long port = strtol(colon + 1, &pend, 10);
        if (errno || *pend || pend == colon + 1 || port < 1 || port > 65535)
            return fail(e, name, "has a port that is not 1..65535", colon + 1);
        for (const char *h = item; *h; h++)
            if ((unsigned char)*h <= ' ' || *h == '/' || *h == '@')
                return fail(e, name, "has a bad host", item);
        if (++n > 16) return fail(e, name, "lists more than 16 sentinels", NULL);
        int k = snprintf(out + used, sizeof out - used, "%s%s:%ld", n > 1 ? "," : "", item, port);
        if (k < 0 || (size_t)k >= sizeof out - used) return fail(e, name, "is too long", NULL);
        used += (size_t)k;
        if (!end) break;
        p = end + 1;
    }
    strcpy(c->redis_sentinels, out);
    return 0;
}

int jj_config_load_from(jj_config *c, const char *(*get)(const char *, void *), void *ud,
                        char *err, size_t errlen) {
    env e = {get, ud, err, errlen};
    long l;
    memset(c, 0, sizeof *c);
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1) ncpu = 1;

    if (get_str(&e, "HOST", "0.0.0.0", c->host, sizeof c->host)) return -1;
    if (get_long(&e, "PORT", 8080, 1, 65535, &l)) return -1;
    c->port = (int)l;
    if (get_long(&e, "WORKERS", ncpu, 1, 256, &l)) return -1;
    c->workers = (int)l;

    strcpy(c->redis_host, "127.0.0.1");
    c->redis_port = 6379;
    const char *url = var(&e, "REDIS_URL");
    if (url) {
        if (parse_redis_url(&e, url, c)) return -1;
    } else {
        if (get_str(&e, "REDIS_HOST", "127.0.0.1", c->redis_host, sizeof c->redis_host)) return -1;
        if (get_long(&e, "REDIS_PORT", 6379, 1, 65535, &l)) return -1;
        c->redis_port = (int)l;
        if (get_str(&e, "REDIS_USERNAME", "", c->redis_user, sizeof c->redis_user)) return -1;
        if (get_str(&e, "REDIS_PASSWORD", "", c->redis_password, sizeof c->redis_password)) return -1;
        if (get_long(&e, "REDIS_DB", 0, 0, 15, &l)) return -1;
        c->redis_db = (int)l;
    }
    if (get_str(&e, "REDIS_KEY_PREFIX", "jj:", c->redis_prefix, sizeof c->redis_prefix)) return -1;
    for (const char *p = c->redis_prefix; *p; p++)
        if ((unsigned char)*p <= ' ' || *p == 0x7f)
            return fail(&e, "REDIS_KEY_PREFIX", "must not contain spaces or control characters", c->redis_prefix);
    if (get_double(&e, "REDIS_TIMEOUT_MS", 1000, 1, 600000, &c->redis_timeout_ms)) return -1;
    const char *sentinels = var(&e, "REDIS_SENTINELS");
    if (sentinels) {
        if (!sentinels[0]) return fail(&e, "REDIS_SENTINELS", "is empty (expected host:port,host:port,...)", NULL);
        if (parse_sentinels(&e, sentinels, c)) return -1;
        if (get_str(&e, "REDIS_SENTINEL_MASTER", "", c->redis_sentinel_master,
                    sizeof c->redis_sentinel_master)) return -1;
        if (!c->redis_sentinel_master[0])
            return fail(&e, "REDIS_SENTINEL_MASTER", "must name the master when REDIS_SENTINELS is set", NULL);
        for (const char *p = c->redis_sentinel_master; *p; p++)
            if ((unsigned char)*p <= ' ' || *p == 0x7f)
                return fail(&e, "REDIS_SENTINEL_MASTER", "must not contain spaces or control characters",
                            c->redis_sentinel_master);
        if (get_str(&e, "REDIS_SENTINEL_PASSWORD", "", c->redis_sentinel_password,
                    sizeof c->redis_sentinel_password)) return -1;
    } else if (var(&e, "REDIS_SENTINEL_MASTER")) {
        return fail(&e, "REDIS_SENTINEL_MASTER", "is set but REDIS_SENTINELS is not", NULL);
    }
    if (get_double(&e, "DB_TIMEOUT_MS", 5000, 1, 600000, &c->db_timeout_ms)) return -1;

    if (get_str(&e, "DB_PATH", "var/jollyjet.db", c->db_path, sizeof c->db_path)) return -1;
    const char *dburl = var(&e, "DATABASE_URL");
    if (dburl) {
        /* never echo the value: it may hold a password */
        char problem[256];
        if (!jj_db_is_url(dburl))
            return fail(&e, "DATABASE_URL", "must start with postgres:// or postgresql:// (unset it for SQLite at DB_PATH)", NULL);
        if (strlen(dburl) >= sizeof c->db_url) return fail(&e, "DATABASE_URL", "is too long", NULL);
        if (jj_db_check_url(dburl, problem, sizeof problem) != 0) return fail(&e, "DATABASE_URL", problem, NULL);
        strcpy(c->db_url, dburl);
    }
    if (get_long(&e, "DB_POOL_SIZE", 2, 1, 64, &l)) return -1;
    c->db_pool_size = (int)l;
    if (get_str(&e, "LUA_DIR", "lua", c->lua_dir, sizeof c->lua_dir)) return -1;
    if (get_str(&e, "POLICY_DIR", "policies", c->policy_dir, sizeof c->policy_dir)) return -1;
    if (get_str(&e, "MIGRATIONS_DIR", "engine/migrations", c->migrations_dir, sizeof c->migrations_dir)) return -1;
    installed_default(&e, "LUA_DIR", "lua", c->lua_dir, sizeof c->lua_dir);
    installed_default(&e, "POLICY_DIR", "policies", c->policy_dir, sizeof c->policy_dir);
    installed_default(&e, "MIGRATIONS_DIR", "migrations", c->migrations_dir, sizeof c->migrations_dir);
    if (get_str(&e, "PID_FILE", "var/jollyjet.pid", c->pid_file, sizeof c->pid_file)) return -1;

    const char *lv = var(&e, "LOG_LEVEL");
    c->log_level = JJ_LOG_INFO;
    if (lv && (c->log_level = jj_log_parse_level(lv)) < 0)
        return fail(&e, "LOG_LEVEL", "must be one of debug, info, warn, error", lv);

    const char *tok = var(&e, "ADMIN_TOKEN");
    if (tok) {
        if (strlen(tok) < 16) return fail(&e, "ADMIN_TOKEN", "must be at least 16 characters", NULL);
        if (get_str(&e, "ADMIN_TOKEN", "", c->admin_token, sizeof c->admin_token)) return -1;
        c->has_admin_token = 1;
    }

    if (get_long(&e, "MAX_BODY_BYTES", 1 << 20, 0, 1L << 30, &l)) return -1;
    c->max_body = (size_t)l;
    if (get_double(&e, "HEADER_TIMEOUT", 10, 0.05, 30, &c->header_timeout_s)) return -1;
    if (get_double(&e, "KEEPALIVE_TIMEOUT", 5, 0.05, 3600, &c->keepalive_timeout_s)) return -1;
    if (get_long(&e, "MAX_CONNECTIONS", 10000, 1, 1000000, &l)) return -1;
    c->max_connections = (int)l;
    if (get_double(&e, "SHUTDOWN_GRACE", 10, 0, 3600, &c->grace_s)) return -1;
    if (get_long(&e, "LUA_INSTRUCTION_LIMIT", 50000000L, 10000, LONG_MAX, &c->instruction_limit)) return -1;
    if (get_long(&e, "LUA_MEMORY_MB", 256, 8, 1L << 20, &l)) return -1;
    c->lua_memory_limit = (size_t)l << 20;
    if (get_long(&e, "DB_THREADS", 2, 1, 64, &l)) return -1;
    c->db_threads = (int)l;
    if (get_bool(&e, "WATCH", 1, &c->watch)) return -1;
    if (get_bool(&e, "RATELIMIT_ENABLED", 1, &c->ratelimit_enabled)) return -1;
    if (get_bool(&e, "ACCESS_LOG", 1, &c->access_log)) return -1;
    return 0;
}

static const char *from_environ(const char *name, void *ud) {
    (void)ud;
    return getenv(name);
}

int jj_config_load(jj_config *c, char *err, size_t errlen) {
    return jj_config_load_from(c, from_environ, NULL, err, errlen);
}

void jj_config_make_parent(const char *path) {
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = 0;
        mkdir(buf, 0755);
        *p = '/';
    }
}
