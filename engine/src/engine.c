/* engine.c: the per-process serving context and its generations. */
#include "engine_internal.h"
#include "db.h"
#include "http_stats.h"
#include "log.h"
#include "lru.h"
#include "lua_modules.h"
#include "metrics.h"
#include "redis.h"
#include "redis_sentinel.h"
#include "task.h"

#include <ev.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct jj_engine {
    struct ev_loop *loop;
    const jj_config *cfg;
    int worker_id;
    int kind;
    int checking;        /* built by jollyjet check: kind is APP, no loop runs */
    jj_redis *redis;
    jj_redis_sub *sub;   /* L1 invalidations */
    jj_sentinel *sentinel;   /* REDIS_SENTINELS: points redis and sub at the master */
    jj_db *db;
    jj_gen *gen;
    unsigned generation;
    char last_error[1024];
    const jj_engine_module *modules;   /* borrowed: an embedding host's extra modules */
    size_t nmodules;
    int closing;
    int master;              /* pid of the master process, 0 if none */
    /* the cache epoch (engine.h) */
    long long epoch;
    int epoch_known;
    uint64_t epoch_reconnects;   /* Redis connection it was learned on */
    double epoch_checked_at;
    unsigned long long epoch_seq;
    jj_metric m_reload_ok, m_reload_failed;
    /* jj_engine_publish_metrics: L1 evictions already added to l1_evictions{ns=..} */
    uint64_t *l1_evicted;
    size_t l1_n;
    unsigned l1_epoch;
};

struct ev_loop *jj_engine_loop(jj_engine *e) { return e->loop; }
jj_redis *jj_engine_redis(jj_engine *e) { return e->redis; }
jj_db *jj_engine_db(jj_engine *e) { return e->db; }
const jj_config *jj_engine_config(jj_engine *e) { return e->cfg; }
double jj_engine_io_timeout_ms(jj_engine *e) { return e->cfg->redis_timeout_ms; }
int jj_engine_worker_id(jj_engine *e) { return e->worker_id; }
int jj_engine_closing(jj_engine *e) { return e->closing; }
unsigned jj_engine_generation(jj_engine *e) { return e->generation; }
const char *jj_engine_mode(jj_engine *e) {
    return e->checking ? "check" : e->kind == JJ_GEN_BARE ? "bare" : "serve";
}
const char *jj_engine_last_reload_error(jj_engine *e) { return e->last_error[0] ? e->last_error : NULL; }
jj_gen *jj_engine_current_gen(jj_engine *e) { return e->gen; }
int jj_engine_subscriber_up(jj_engine *e) { return jj_redis_sub_up(e->sub); }

void jj_engine_set_master(jj_engine *e, int pid) { e->master = pid; }
int jj_engine_master(jj_engine *e) { return e->master; }

void jj_engine_cache_epoch(jj_engine *e, jj_cache_epoch *out) {
    jj_redis_status st;
    jj_redis_get_status(e->redis, &st);
    out->value = e->epoch;
    out->seq = e->epoch_seq;
    out->fresh = e->epoch_known && st.up && st.reconnects == e->epoch_reconnects &&
                 (jj_redis_sub_up(e->sub) || ev_now(e->loop) - e->epoch_checked_at < JJ_EPOCH_RECHECK_S);
}

int jj_engine_set_cache_epoch(jj_engine *e, long long value, unsigned long long seq) {
    if (seq != e->epoch_seq || value < 0) return -1;
    jj_redis_status st;
    jj_redis_get_status(e->redis, &st);
    if (e->epoch != value) {
        if (e->epoch >= 0) JJ_INFO("cache epoch is now %lld (was %lld): L1 caches flushed", value, e->epoch);
        jj_lru_registry_flush_all();
    }
    e->epoch = value;
    e->epoch_known = 1;
    e->epoch_reconnects = st.reconnects;
    e->epoch_checked_at = ev_now(e->loop);
    return 0;
}

void jj_engine_advance_cache_epoch(jj_engine *e, long long value) {
    e->epoch_seq++;
    jj_lru_registry_flush_all();
    if (e->epoch_known && value > e->epoch) e->epoch = value;
}

/* An invalidation published on <prefix>invalidate (see lru.h for the
 * format), or a purge: "!epoch\t<n>". */
static void on_invalidate(const char *msg, size_t len, void *ud) {
    jj_engine *e = ud;
    static const char epoch_msg[] = "!epoch\t";
    const size_t n = sizeof epoch_msg - 1;
    if (len > n && len < n + 20 && memcmp(msg, epoch_msg, n) == 0) {
        char num[24];
        memcpy(num, msg + n, len - n);
        num[len - n] = 0;
        char *end;
        long long v = strtoll(num, &end, 10);
        if (*end == 0 && v >= 0) {
            jj_engine_advance_cache_epoch(e, v);
            return;
        }
    }
    if (jj_lru_registry_invalidate(msg, len) != 0)
        JJ_DEBUG("ignoring malformed L1 invalidation \"%.*s\"", (int)(len > 200 ? 200 : len), msg);
}

/* While the subscriber is down we may miss invalidations, so L1 forgets
 * everything when it goes down, and again when it comes back (messages
 * published in between are lost, and entries may have been stored). */
static void on_subscriber_state(int up, void *ud) {
    jj_engine *e = ud;
    e->epoch_known = 0;   /* a purge may have gone unheard: learn it again */
    e->epoch_seq++;
    jj_lru_registry_flush_all();
    if (!up) JJ_WARN("L1 invalidation subscriber down: L1 caches flushed");
}

/* Sentinel moved the master: what this worker's L1 holds may be newer than
 * the new master (writes it had not replicated) and invalidations published
 * meanwhile went nowhere. Forget everything, as when the subscriber drops. */
static void on_master_switch(const char *host, int port, void *ud) {
    jj_engine *e = ud;
    e->epoch_known = 0;
    e->epoch_seq++;
    jj_lru_registry_flush_all();
    JJ_WARN("redis master is now %s:%d: L1 caches flushed", host, port);
}

void jj_engine_preload(jj_engine *e, lua_State *L, int t) {
    t = lua_absindex(L, t);
    for (size_t i = 0; i < e->nmodules; i++) {
        lua_pushcfunction(L, e->modules[i].open);
        lua_setfield(L, t, e->modules[i].name);
    }
}

jj_engine *jj_engine_new(struct ev_loop *loop, const jj_config *cfg, int worker_id, int kind,
                         char *err, size_t errlen) {
    return jj_engine_new_with(loop, cfg, worker_id, kind, NULL, 0, err, errlen);
}

jj_engine *jj_engine_new_with(struct ev_loop *loop, const jj_config *cfg, int worker_id, int kind,
                              const jj_engine_module *mods, size_t nmods, char *err, size_t errlen) {
    jj_engine *e = calloc(1, sizeof *e);
    if (!e) { snprintf(err, errlen, "out of memory"); return NULL; }
    e->modules = mods;
    e->nmodules = nmods;
    e->loop = loop;
    e->cfg = cfg;
    e->worker_id = worker_id;
    e->kind = kind;
    e->epoch = -1;
    jj_redis_config rc = {
        .host = cfg->redis_host,
        .port = cfg->redis_port,
        .user = cfg->redis_user[0] ? cfg->redis_user : NULL,
        .password = cfg->redis_password[0] ? cfg->redis_password : NULL,
        .db = cfg->redis_db,
        .prefix = cfg->redis_prefix,
        .connect_timeout_ms = cfg->redis_timeout_ms,
        .command_timeout_ms = cfg->redis_timeout_ms,
        .max_pending = 10000,
    };
    int sentinel_mode = cfg->redis_sentinels[0] != 0 && kind != JJ_GEN_CHECK;
    if (sentinel_mode) {   /* REDIS_URL's host and port are not used: the sentinels name the master */
        rc.defer_connect = 1;
        rc.require_master = 1;
    }
    /* the client exists even for a check (modules register scripts with it
     * at load time); it never connects, since the check runs no loop */
    e->redis = jj_redis_new(loop, &rc);
    if (kind == JJ_GEN_CHECK) {
        e->kind = kind = JJ_GEN_APP;   /* validate only: no subscriber, no database */
        e->checking = 1;
    } else {
        char channel[sizeof cfg->redis_prefix + 16];
        snprintf(channel, sizeof channel, "%sinvalidate", cfg->redis_prefix);
        e->sub = jj_redis_sub_new(loop, &rc, channel, on_invalidate, on_subscriber_state, e);
        if (!e->sub) JJ_ERROR("cannot create the L1 invalidation subscriber");
        if (sentinel_mode && e->redis) {
            e->sentinel = jj_sentinel_new(loop, cfg->redis_sentinels, cfg->redis_sentinel_master,
                                          cfg->redis_sentinel_password, cfg->redis_timeout_ms,
                                          e->redis, e->sub, on_master_switch, e);
            if (!e->sentinel) JJ_ERROR("cannot start Redis Sentinel discovery");
        }
        char dberr[512] = "";
        e->db = jj_db_open(loop, JJ_CONFIG_DB_TARGET(cfg),
                           cfg->db_url[0] ? cfg->db_pool_size : cfg->db_threads, dberr, sizeof dberr);
        if (!e->db) JJ_ERROR("database %s unavailable: %s", cfg->db_url[0] ? "(DATABASE_URL)" : cfg->db_path, dberr);
    }
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
        jj_metric_add(&e->m_reload_failed, "reloads{result=\"failed\"}", 1);
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
    jj_metric_add(&e->m_reload_ok, "reloads{result=\"ok\"}", 1);
    jj_engine_publish_metrics(e);   /* the new generation number, at once */
    jj_gen_release(old);   /* closes once its in-flight tasks end */
    jj_core_wake_retired(e);   /* ... its background loops' included */
    char members[64];
    snprintf(members, sizeof members, "\"event\":\"reloaded\",\"generation\":%u", e->generation);
    jj_log_kv(JJ_LOG_INFO, members, "reloaded: generation %u", e->generation);
    return 0;
}

void jj_engine_free(jj_engine *e) {
    if (!e) return;
    e->closing = 1;
    jj_core_wake_sleepers(e);      /* background loops end instead of holding their VM */
    jj_gen_release(e->gen);
    if (e->db) jj_db_close(e->db);
    if (e->sentinel) jj_sentinel_free(e->sentinel);   /* before the clients it points */
    if (e->sub) jj_redis_sub_free(e->sub);
    jj_ratelimit_close();          /* checks still queued: "redis closed", like the client's pending ones */
    if (e->redis) jj_redis_free(e->redis);
    jj_lru_registry_free_all();   /* last: Lua code may run while the above close */
    free(e->l1_evicted);
    free(e);
}

/* A gauge of this worker: name{labels...,worker="N"}. */
static void set_worker_gauge(const char *name, int worker, int64_t v) {
    char buf[JJ_METRICS_NAME_MAX + 1];
    int n = snprintf(buf, sizeof buf, "%s{worker=\"%d\"}", name, worker);
    if (n > 0 && (size_t)n < sizeof buf) jj_metrics_set(buf, v);
}

void jj_engine_publish_metrics(jj_engine *e) {
    int w = e->worker_id;
    if (e->gen) {
        set_worker_gauge("policy_generation", w, (int64_t)e->generation);
        set_worker_gauge("lua_memory_bytes", w, (int64_t)jj_gen_memory(e->gen));
    }
    set_worker_gauge("lua_tasks", w, (int64_t)jj_task_count());
    /* L1: sizes as gauges of this worker, evictions added to one counter
     * per cache (so restarts of a worker do not make it go backwards) */
    size_t n = jj_lru_registry_count();
    if (e->l1_epoch != jj_lru_registry_epoch() || e->l1_n < n) {
        uint64_t *seen = realloc(e->l1_evicted, (n ? n : 1) * sizeof *seen);
        if (!seen) return;
        if (e->l1_epoch != jj_lru_registry_epoch()) e->l1_n = 0;
        for (size_t i = e->l1_n; i < n; i++) seen[i] = 0;
        e->l1_evicted = seen;
        e->l1_n = n;
        e->l1_epoch = jj_lru_registry_epoch();
    }
    for (size_t i = 0; i < n; i++) {
        jj_lru *c = jj_lru_registry_at(i);
        jj_lru_stats st;
        jj_lru_get_stats(c, &st);
        const char *cname = jj_lru_name(c);
        char label[JJ_ROUTE_LABEL_MAX + 1], name[JJ_METRICS_NAME_MAX + 1];
        if (jj_prom_label_escape(label, sizeof label, cname, strlen(cname)) == (size_t)-1) continue;
        int len = snprintf(name, sizeof name, "l1_items{ns=\"%s\",worker=\"%d\"}", label, w);
        if (len > 0 && (size_t)len < sizeof name) jj_metrics_set(name, (int64_t)st.items);
        len = snprintf(name, sizeof name, "l1_bytes{ns=\"%s\",worker=\"%d\"}", label, w);
        if (len > 0 && (size_t)len < sizeof name) jj_metrics_set(name, (int64_t)st.bytes);
        if (st.evictions > e->l1_evicted[i]) {
            len = snprintf(name, sizeof name, "l1_evictions{ns=\"%s\"}", label);
            if (len > 0 && (size_t)len < sizeof name) jj_metrics_add(name, (int64_t)(st.evictions - e->l1_evicted[i]));
            e->l1_evicted[i] = st.evictions;
        }
    }
}

