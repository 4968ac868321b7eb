/* config.h: configuration read from the environment and validated at start.
 * A bad value stops the start with a message naming the variable. */
#ifndef JJ_CONFIG_H
#define JJ_CONFIG_H

#include <stddef.h>

typedef struct jj_config {
    char host[256];
    int port;
    int workers;
    char redis_host[256];
    int redis_port;
    char redis_user[128];
    char redis_password[256];
    int redis_db;
    char redis_prefix[128];
    double redis_timeout_ms;   /* REDIS_TIMEOUT_MS, default 1000 */
    /* Sentinel mode: REDIS_SENTINELS (checked, normalised to "host:port,..."),
     * REDIS_SENTINEL_MASTER, REDIS_SENTINEL_PASSWORD; sentinels[0] == 0: off */
    char redis_sentinels[1024];
    char redis_sentinel_master[256];
    char redis_sentinel_password[256];
    double db_timeout_ms;      /* DB_TIMEOUT_MS, default 5000 */
    char db_path[1024];
    char db_url[1024];         /* DATABASE_URL: postgres://... selects PostgreSQL; empty: SQLite at db_path */
    int db_pool_size;          /* DB_POOL_SIZE, PostgreSQL connections per worker, default 2 */
    char lua_dir[1024];
    char policy_dir[1024];
    char migrations_dir[1024];
    int log_level;
    char admin_token[256];
    int has_admin_token;
    size_t max_body;            /* MAX_BODY_BYTES, default 1 MiB */
    double header_timeout_s;    /* HEADER_TIMEOUT (slowloris), default 10 */
    double keepalive_timeout_s; /* KEEPALIVE_TIMEOUT, default 5 */
    int max_connections;        /* MAX_CONNECTIONS per worker, default 10000 */
    double grace_s;             /* SHUTDOWN_GRACE, default 10 */
    long instruction_limit;     /* LUA_INSTRUCTION_LIMIT per request, default 50M */
    size_t lua_memory_limit;    /* LUA_MEMORY_MB per VM, default 256 MiB */
    int db_threads;             /* DB_THREADS, default 2 */
    int watch;                  /* WATCH (reload on file change), default 1 */
    int ratelimit_enabled;      /* RATELIMIT_ENABLED (every rate-limit rule on), default 1 */
    int access_log;             /* ACCESS_LOG (a JSON line per response), default 1 */
    char pid_file[1024];        /* PID_FILE, default var/jollyjet.pid */
} jj_config;

/* The database jj_db_open/jj_db_migrate take: the URL, else the path. */
#define JJ_CONFIG_DB_TARGET(cfg) ((cfg)->db_url[0] ? (cfg)->db_url : (cfg)->db_path)
/* The variable that names it, for messages. */
#define JJ_CONFIG_DB_VAR(cfg) ((cfg)->db_url[0] ? "DATABASE_URL" : "DB_PATH")

/* Fills cfg from getenv. Returns 0, or -1 with "VAR: problem" in err. */
int jj_config_load(jj_config *cfg, char *err, size_t errlen);
/* mkdir -p of the directory that holds a configured file (DB_PATH,
 * PID_FILE); errors surface when the file itself is opened. */
void jj_config_make_parent(const char *path);

/* Same, from an arbitrary lookup (unit tests). */
int jj_config_load_from(jj_config *cfg, const char *(*get)(const char *name, void *ud),
                        void *ud, char *err, size_t errlen);

#endif
