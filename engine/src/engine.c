/* engine.c: the per-process serving context and its generations. */
#include "engine_internal.h"
#include "db.h"
#include "log.h"
#include "redis.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jj_engine {
    struct ev_loop *loop;
    const jj_config *cfg;
    int worker_id;
    int kind;
    jj_redis *redis;
    jj_db *db;
    jj_gen *gen;
    unsigned generation;
    char last_error[1024];
};

struct ev_loop *jj_engine_loop(jj_engine *e) { return e->loop; }
jj_redis *jj_engine_redis(jj_engine *e) { return e->redis; }
jj_db *jj_engine_db(jj_engine *e) { return e->db; }
const jj_config *jj_engine_config(jj_engine *e) { return e->cfg; }
double jj_engine_io_timeout_ms(jj_engine *e) { return e->cfg->redis_timeout_ms; }
int jj_engine_worker_id(jj_engine *e) { return e->worker_id; }
unsigned jj_engine_generation(jj_engine *e) { return e->generation; }
const char *jj_engine_last_reload_error(jj_engine *e) { return e->last_error[0] ? e->last_error : NULL; }
jj_gen *jj_engine_current_gen(jj_engine *e) { return e->gen; }

jj_engine *jj_engine_new(struct ev_loop *loop, const jj_config *cfg, int worker_id, int kind,
                         char *err, size_t errlen) {
    jj_engine *e = calloc(1, sizeof *e);
    if (!e) { snprintf(err, errlen, "out of memory"); return NULL; }
    e->loop = loop;
    e->cfg = cfg;
    e->worker_id = worker_id;
    e->kind = kind;
    jj_redis_config rc = {
        .host = cfg->redis_host,
        .port = cfg->redis_port,
        .user = cfg->redis_user[0] ? cfg->redis_user : NULL,
        .password = cfg->redis_password[0] ? cfg->redis_password : NULL,
        .db = cfg->redis_db,
        .prefix = cfg->redis_prefix,
        .connect_timeout_ms = cfg->redis_timeout_ms,
        .max_pending = 10000,
    };
    e->redis = jj_redis_new(loop, &rc);
    char dberr[512] = "";
    e->db = jj_db_open(loop, cfg->db_path, cfg->db_threads, dberr, sizeof dberr);
    if (!e->db) JJ_ERROR("database %s unavailable: %s", cfg->db_path, dberr);
    e->gen = jj_gen_new(e, kind, 1, err, errlen);
    if (!e->gen) {
        jj_engine_free(e);
        return NULL;
    }
    e->generation = 1;
    return e;
}

int jj_engine_reload(jj_engine *e) {
    char err[1024];
    jj_gen *g = jj_gen_new(e, e->kind, e->generation + 1, err, sizeof err);
    if (!g) {
        snprintf(e->last_error, sizeof e->last_error, "%s", err);
        char members[64];
        snprintf(members, sizeof members, "\"event\":\"reload_failed\",\"generation\":%u", e->generation);
        jj_log_kv(JJ_LOG_ERROR, members, "reload rejected, still serving generation %u: %s", e->generation, err);
        return -1;
    }
    jj_gen *old = e->gen;
    e->gen = g;
    e->generation++;
    e->last_error[0] = 0;
    jj_gen_release(old);   /* closes once its in-flight tasks end */
    char members[64];
    snprintf(members, sizeof members, "\"event\":\"reloaded\",\"generation\":%u", e->generation);
    jj_log_kv(JJ_LOG_INFO, members, "reloaded: generation %u", e->generation);
    return 0;
}

void jj_engine_free(jj_engine *e) {
    if (!e) return;
    jj_gen_release(e->gen);
    if (e->db) jj_db_close(e->db);
    if (e->redis) jj_redis_free(e->redis);
    free(e);
}
