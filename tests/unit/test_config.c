/* Configuration: defaults, REDIS_URL parsing, and errors that name the
 * variable. */
#include "config.h"
#include "jj_test.h"

#include <string.h>

typedef struct { const char *k[16]; const char *v[16]; int n; } fake_env;

static const char *lookup(const char *name, void *ud) {
    fake_env *e = ud;
    for (int i = 0; i < e->n; i++)
        if (strcmp(e->k[i], name) == 0) return e->v[i];
    return NULL;
}

static int load(jj_config *c, char *err, const char *k1, const char *v1, const char *k2, const char *v2) {
    fake_env e = {{0}, {0}, 0};
    if (k1) { e.k[e.n] = k1; e.v[e.n++] = v1; }
    if (k2) { e.k[e.n] = k2; e.v[e.n++] = v2; }
    return jj_config_load_from(c, lookup, &e, err, 256);
}

int main(void) {
    jj_config c;
    char err[256];

    /* defaults */
    CHECK_INT(load(&c, err, NULL, NULL, NULL, NULL), 0);
    CHECK_INT(c.port, 8080);
    CHECK_STR(c.host, "0.0.0.0");
    CHECK(c.workers >= 1);
    CHECK_STR(c.redis_host, "127.0.0.1");
    CHECK_INT(c.redis_port, 6379);
    CHECK_STR(c.db_path, "var/jollyjet.db");
    CHECK_STR(c.lua_dir, "lua");
    CHECK_STR(c.policy_dir, "policies");
    CHECK_INT(c.max_body, 1 << 20);
    CHECK_INT(c.has_admin_token, 0);
    CHECK_INT(c.ratelimit_enabled, 1);
    CHECK_INT(c.access_log, 1);

    /* REDIS_URL with user, password, port and db */
    CHECK_INT(load(&c, err, "REDIS_URL", "redis://app:s%40cret@cache.local:6380/3", NULL, NULL), 0);
    CHECK_STR(c.redis_host, "cache.local");
    CHECK_INT(c.redis_port, 6380);
    CHECK_STR(c.redis_user, "app");
    CHECK_STR(c.redis_password, "s@cret");
    CHECK_INT(c.redis_db, 3);

    /* password only */
    CHECK_INT(load(&c, err, "REDIS_URL", "redis://:pw@localhost", NULL, NULL), 0);
    CHECK_STR(c.redis_user, "");
    CHECK_STR(c.redis_password, "pw");
    CHECK_INT(c.redis_port, 6379);

    /* errors name the variable */
    CHECK_INT(load(&c, err, "PORT", "eighty", NULL, NULL), -1);
    CHECK(strncmp(err, "PORT:", 5) == 0);
    CHECK_INT(load(&c, err, "PORT", "70000", NULL, NULL), -1);
    CHECK(strstr(err, "between 1 and 65535") != NULL);
    CHECK_INT(load(&c, err, "WORKERS", "0", NULL, NULL), -1);
    CHECK(strncmp(err, "WORKERS:", 8) == 0);
    /* DATABASE_URL: unset keeps SQLite; a postgres URL is checked without
     * connecting, and an error never echoes it (it may hold a password) */
    CHECK_INT(load(&c, err, NULL, NULL, NULL, NULL), 0);
    CHECK_STR(c.db_url, "");
    CHECK_INT(c.db_pool_size, 2);
    CHECK_STR(JJ_CONFIG_DB_TARGET(&c), "var/jollyjet.db");
    CHECK_INT(load(&c, err, "DATABASE_URL", "postgres://app:s3cret@db.local:5433/shop?sslmode=require",
                   "DB_POOL_SIZE", "4"), 0);
    CHECK_STR(JJ_CONFIG_DB_TARGET(&c), "postgres://app:s3cret@db.local:5433/shop?sslmode=require");
    CHECK_STR(JJ_CONFIG_DB_VAR(&c), "DATABASE_URL");
    CHECK_INT(c.db_pool_size, 4);
    CHECK_INT(load(&c, err, "DATABASE_URL", "postgresql://db.local/shop", NULL, NULL), 0);
    CHECK_INT(load(&c, err, "DATABASE_URL", "mysql://app:s3cret@db/shop", NULL, NULL), -1);
    CHECK(strncmp(err, "DATABASE_URL:", 13) == 0 && strstr(err, "postgres://") && !strstr(err, "s3cret"));
    CHECK_INT(load(&c, err, "DATABASE_URL", "postgres://app:s3cret@db/shop?sslmode=maybe", NULL, NULL), -1);
    CHECK(strncmp(err, "DATABASE_URL:", 13) == 0 && strstr(err, "sslmode") && !strstr(err, "s3cret"));
    CHECK_INT(load(&c, err, "DATABASE_URL", "postgres://app:s3cret@db:70000/shop", NULL, NULL), -1);
    CHECK(strncmp(err, "DATABASE_URL:", 13) == 0 && strstr(err, "port"));
    CHECK_INT(load(&c, err, "DATABASE_URL", "postgres://db/shop?bogus=1", NULL, NULL), -1);
    CHECK(strncmp(err, "DATABASE_URL:", 13) == 0 && strstr(err, "bogus"));
    CHECK_INT(load(&c, err, "DB_POOL_SIZE", "0", NULL, NULL), -1);
    CHECK(strncmp(err, "DB_POOL_SIZE:", 13) == 0);
    CHECK_INT(load(&c, err, "DB_POOL_SIZE", "65", NULL, NULL), -1);

    CHECK_INT(load(&c, err, "REDIS_URL", "http://x", NULL, NULL), -1);
    CHECK(strncmp(err, "REDIS_URL:", 10) == 0);
    CHECK_INT(load(&c, err, "REDIS_URL", "redis://host:0", NULL, NULL), -1);
    CHECK_INT(load(&c, err, "REDIS_URL", "redis://host/99", NULL, NULL), -1);

    /* Sentinel: a list normalised, a master name required, errors naming the variable */
    CHECK_INT(load(&c, err, NULL, NULL, NULL, NULL), 0);
    CHECK_STR(c.redis_sentinels, "");
    CHECK_INT(load(&c, err, "REDIS_SENTINELS", " s1:26379, 10.0.0.2:26380 ,s3:1",
                   "REDIS_SENTINEL_MASTER", "mymaster"), 0);
    CHECK_STR(c.redis_sentinels, "s1:26379,10.0.0.2:26380,s3:1");
    CHECK_STR(c.redis_sentinel_master, "mymaster");
    CHECK_INT(load(&c, err, "REDIS_SENTINELS", "s1:26379", NULL, NULL), -1);
    CHECK(strncmp(err, "REDIS_SENTINEL_MASTER:", 22) == 0);
    CHECK_INT(load(&c, err, "REDIS_SENTINEL_MASTER", "mymaster", NULL, NULL), -1);
    CHECK(strncmp(err, "REDIS_SENTINEL_MASTER:", 22) == 0);
    const char *bad_lists[] = { "s1", "s1:", ":26379", "s1:26379,", "s1:26379,,s2:1", "s1:x",
                                "s1:0", "s1:65536", "s 1:26379", "a@b:1" };
    for (size_t i = 0; i < sizeof bad_lists / sizeof bad_lists[0]; i++) {
        CHECK_INT(load(&c, err, "REDIS_SENTINELS", bad_lists[i], "REDIS_SENTINEL_MASTER", "m"), -1);
        CHECK(strncmp(err, "REDIS_SENTINELS:", 16) == 0);
    }
    CHECK_INT(load(&c, err, "REDIS_SENTINELS", "s1:1,s2:1,s3:1,s4:1,s5:1,s6:1,s7:1,s8:1,s9:1,s10:1,"
                   "s11:1,s12:1,s13:1,s14:1,s15:1,s16:1,s17:1", "REDIS_SENTINEL_MASTER", "m"), -1);
    CHECK(strstr(err, "more than 16") != NULL);
    CHECK_INT(load(&c, err, "REDIS_SENTINELS", "s1:1", "REDIS_SENTINEL_MASTER", "my master"), -1);
    CHECK(strncmp(err, "REDIS_SENTINEL_MASTER:", 22) == 0);
    CHECK_INT(load(&c, err, "REDIS_DB", "16", NULL, NULL), -1);
    CHECK(strncmp(err, "REDIS_DB:", 9) == 0);
    CHECK_INT(load(&c, err, "LOG_LEVEL", "loud", NULL, NULL), -1);
    CHECK(strncmp(err, "LOG_LEVEL:", 10) == 0);
    CHECK_INT(load(&c, err, "ADMIN_TOKEN", "short", NULL, NULL), -1);
    CHECK(strncmp(err, "ADMIN_TOKEN:", 12) == 0);
    CHECK_INT(load(&c, err, "REDIS_KEY_PREFIX", "a b", NULL, NULL), -1);
    CHECK_INT(load(&c, err, "WATCH", "maybe", NULL, NULL), -1);
    CHECK(strncmp(err, "WATCH:", 6) == 0);
    CHECK_INT(load(&c, err, "RATELIMIT_ENABLED", "sometimes", NULL, NULL), -1);
    CHECK(strncmp(err, "RATELIMIT_ENABLED:", 18) == 0);
    CHECK_INT(load(&c, err, "ACCESS_LOG", "verbose", NULL, NULL), -1);
    CHECK(strncmp(err, "ACCESS_LOG:", 11) == 0);
    CHECK_INT(load(&c, err, "MAX_BODY_BYTES", "-1", NULL, NULL), -1);
    CHECK_INT(load(&c, err, "HEADER_TIMEOUT", "100", NULL, NULL), -1);
    CHECK(strstr(err, "HEADER_TIMEOUT") == err);

    /* accepted values */
    CHECK_INT(load(&c, err, "ADMIN_TOKEN", "0123456789abcdef", "LOG_LEVEL", "DEBUG"), 0);
    CHECK_INT(c.has_admin_token, 1);
    CHECK_INT(c.log_level, 0);
    CHECK_INT(load(&c, err, "WATCH", "false", "MAX_BODY_BYTES", "2048"), 0);
    CHECK_INT(c.watch, 0);
    CHECK_INT(c.max_body, 2048);
    CHECK_INT(c.ratelimit_enabled, 1);
    CHECK_INT(load(&c, err, "RATELIMIT_ENABLED", "off", NULL, NULL), 0);
    CHECK_INT(c.ratelimit_enabled, 0);
    CHECK_INT(load(&c, err, "ACCESS_LOG", "false", NULL, NULL), 0);
    CHECK_INT(c.access_log, 0);
    CHECK_INT(load(&c, err, "ACCESS_LOG", "TRUE", NULL, NULL), 0);
    CHECK_INT(c.access_log, 1);
    return jj_test_done();
}
