/* test_redis_sub.c: the pub/sub subscriber (redis_sub.c) against real
 * redis-server processes that this test starts on free loopback ports and
 * kills at exit (also if it crashes: PR_SET_PDEATHSIG). Messages are
 * published through a jj_redis command connection, as the engine does.
 *
 * Every loop run is bounded by a guard timer, so a bug fails a CHECK instead
 * of hanging the test. */
#include "jj_test.h"
#include "config.h"
#include "engine_internal.h"
#include "log.h"
#include "lru.h"
#include "redis.h"

#include <ev.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct ev_loop *loop;

#include "jj_redis_child.h"

/* ---- a recording subscriber -------------------------------------------------- */

#define MAX_MSGS 2000

typedef struct rec {
    jj_redis_sub *sub;
    int ups, downs;          /* on_state calls */
    int last_state;
    int nmsg;
    char *msg[MAX_MSGS];
    size_t len[MAX_MSGS];
    int free_on_message;     /* call jj_redis_sub_free from on_message */
    int free_on_down;        /* ... from on_state(0) */
    int freed;
} rec;

static void on_message(const char *payload, size_t len, void *ud) {
    rec *r = ud;
    if (r->nmsg < MAX_MSGS) {
        r->msg[r->nmsg] = malloc(len + 1);
        memcpy(r->msg[r->nmsg], payload, len);
        r->msg[r->nmsg][len] = '\0';
        r->len[r->nmsg] = len;
        r->nmsg++;
    }
    if (r->free_on_message && !r->freed) {
        r->freed = 1;
        jj_redis_sub_free(r->sub);
    }
}

static void on_state(int up, void *ud) {
    rec *r = ud;
    if (up)
        r->ups++;
    else
        r->downs++;
    r->last_state = up;
    if (!up && r->free_on_down && !r->freed) {
        r->freed = 1;
        jj_redis_sub_free(r->sub);
    }
}

static void rec_clear(rec *r) {
    for (int i = 0; i < r->nmsg; i++)
        free(r->msg[i]);
    r->nmsg = 0;
}

static jj_redis_config config(int port, const char *user, const char *password) {
    jj_redis_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.port = port;
    cfg.user = user;
    cfg.password = password;
    cfg.prefix = "jj:";
    cfg.connect_timeout_ms = 500;
    return cfg;
}

static void subscribe(rec *r, int port, const char *password, const char *channel) {
    jj_redis_config cfg = config(port, NULL, password);
    r->sub = jj_redis_sub_new(loop, &cfg, channel, on_message, on_state, r);
}

static int sub_up(void *ud) { return jj_redis_sub_up(((rec *)ud)->sub); }
static int cmd_up(void *ud) {
    jj_redis_status st;
    jj_redis_get_status(ud, &st);
    return st.up;
}

typedef struct want {
    rec *r;
    int n;
} want;

static int got_n(void *ud) {
    want *w = ud;
    return w->r->nmsg >= w->n;
}

static int got_downs(void *ud) {
    want *w = ud;
    return w->r->downs >= w->n;
}

/* ---- publishing through the command connection ------------------------------- */

typedef struct pub {
    int calls;
    long long receivers;
    int type;
} pub;

static void pub_cb(const jj_redis_reply *rep, const char *err, void *p) {
    pub *o = p;
    o->calls++;
    o->type = err ? 0 : jj_reply_type(rep);
    o->receivers = jj_reply_integer(rep);
}

static int pub_done(void *ud) { return ((pub *)ud)->calls > 0; }

/* PUBLISH channel payload; returns the number of receivers, -1 on failure. */
static long long publish(jj_redis *r, const char *channel, const char *payload, size_t len) {
    const char *argv[3] = { "PUBLISH", channel, payload };
    size_t argvlen[3] = { 7, strlen(channel), len };
    pub o = { 0 };
    const char *err = NULL;
    if (jj_redis_command(r, 3, argv, argvlen, pub_cb, &o, &err) != 0)
        return -1;
    if (!run_until(pub_done, &o, 2.0) || o.type != JJ_REPLY_INTEGER)
        return -1;
    return o.receivers;
}

static jj_redis *publisher(int port, const char *password) {
    jj_redis_config cfg = config(port, NULL, password);
    jj_redis *r = jj_redis_new(loop, &cfg);
    CHECK(run_until(cmd_up, r, 2.0));
    return r;
}

/* ---- tests --------------------------------------------------------------------- */

static void test_bad_args(void) {
    jj_redis_config cfg = config(1, NULL, NULL);
    rec r = { 0 };
    CHECK(jj_redis_sub_new(NULL, &cfg, "c", on_message, on_state, &r) == NULL);
    CHECK(jj_redis_sub_new(loop, NULL, "c", on_message, on_state, &r) == NULL);
    CHECK(jj_redis_sub_new(loop, &cfg, NULL, on_message, on_state, &r) == NULL);
    CHECK(jj_redis_sub_new(loop, &cfg, "", on_message, on_state, &r) == NULL);
    CHECK(jj_redis_sub_new(loop, &cfg, "c", NULL, on_state, &r) == NULL);
    CHECK(!jj_redis_sub_up(NULL));
    jj_redis_sub_free(NULL);
}

static void test_delivery(int port) {
    jj_redis *pubr = publisher(port, NULL);
    rec a = { 0 }, b = { 0 };
    subscribe(&a, port, NULL, "jj:invalidate");
    CHECK(a.sub != NULL);
    CHECK(!jj_redis_sub_up(a.sub));
    CHECK(run_until(sub_up, &a, 2.0));
    CHECK_INT(a.ups, 1);
    CHECK_INT(a.downs, 0);
    /* A second subscriber (another worker) on the same channel, with
     * on_state NULL. */
    jj_redis_config cfg = config(port, NULL, NULL);
    b.sub = jj_redis_sub_new(loop, &cfg, "jj:invalidate", on_message, NULL, &b);
    CHECK(run_until(sub_up, &b, 2.0));

    CHECK_INT(publish(pubr, "jj:invalidate", "pages\tk1", 8), 2);
    want w = { &a, 1 };
    CHECK(run_until(got_n, &w, 2.0));
    CHECK_INT(a.nmsg, 1);
    CHECK_STR(a.msg[0], "pages\tk1");
    w.r = &b;
    CHECK(run_until(got_n, &w, 2.0));
    CHECK_STR(b.msg[0], "pages\tk1");

    /* Other channels are not delivered; binary payloads are intact. */
    CHECK_INT(publish(pubr, "jj:other", "nope", 4), 0);
    CHECK_INT(publish(pubr, "jj:invalidate", "a\0b\tc", 5), 2);
    w.r = &a;
    w.n = 2;
    CHECK(run_until(got_n, &w, 2.0));
    CHECK_INT(a.nmsg, 2);
    CHECK(a.len[1] == 5 && memcmp(a.msg[1], "a\0b\tc", 5) == 0);

    /* 1000 messages published back to back arrive complete and in order. */
    rec_clear(&a);
    enum { N = 1000 };
    static pub o[N];
    memset(o, 0, sizeof o);
    int sent = 0;
    for (int i = 0; i < N; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "c\tkey:%d", i);
        const char *argv[3] = { "PUBLISH", "jj:invalidate", msg };
        size_t argvlen[3] = { 7, 13, (size_t)n };
        const char *err;
        sent += jj_redis_command(pubr, 3, argv, argvlen, pub_cb, &o[i], &err) == 0;
    }
    CHECK_INT(sent, N);
    w.n = N;
    CHECK(run_until(got_n, &w, 5.0));
    int in_order = 0;
    for (int i = 0; i < a.nmsg && i < N; i++) {
        char msg[32];
        snprintf(msg, sizeof msg, "c\tkey:%d", i);
        in_order += strcmp(a.msg[i], msg) == 0;
    }
    CHECK_INT(in_order, N);

    /* The heartbeat keeps it up through a quiet period, without duplicate
     * "up" reports or stray messages. */
    rec_clear(&a);
    run_until(NULL, NULL, 2.5);
    CHECK(jj_redis_sub_up(a.sub));
    CHECK_INT(a.ups, 1);
    CHECK_INT(a.downs, 0);
    CHECK_INT(a.nmsg, 0);

    /* Freed while connected: no callback, nothing leaks (valgrind). */
    jj_redis_sub_free(a.sub);
    CHECK_INT(a.downs, 0);
    CHECK(publish(pubr, "jj:invalidate", "x\ty", 3) >= 1);
    jj_redis_sub_free(b.sub);
    rec_clear(&a);
    rec_clear(&b);
    jj_redis_free(pubr);
}

static void test_free_in_callbacks(int port) {
    jj_redis *pubr = publisher(port, NULL);
    /* Freed from inside on_message, with more messages queued behind. */
    rec a = { 0 };
    a.free_on_message = 1;
    subscribe(&a, port, NULL, "jj:inv2");
    CHECK(run_until(sub_up, &a, 2.0));
    static pub o[5];
    for (int i = 0; i < 5; i++) {
        const char *argv[3] = { "PUBLISH", "jj:inv2", "m" };
        const char *err;
        jj_redis_command(pubr, 3, argv, NULL, pub_cb, &o[i], &err);
    }
    want w = { &a, 1 };
    CHECK(run_until(got_n, &w, 2.0));
    run_until(NULL, NULL, 0.1);
    CHECK_INT(a.nmsg, 1);
    CHECK(a.freed);
    rec_clear(&a);

    /* Freed while connecting, and while waiting to retry. */
    rec c = { 0 };
    subscribe(&c, port, NULL, "jj:inv3");
    jj_redis_sub_free(c.sub);
    jj_redis_config cfg = config(free_port(), NULL, NULL);
    c.sub = jj_redis_sub_new(loop, &cfg, "jj:inv3", on_message, on_state, &c);
    run_until(NULL, NULL, 0.05);
    CHECK(!jj_redis_sub_up(c.sub));
    jj_redis_sub_free(c.sub);
    run_until(NULL, NULL, 0.05);
    CHECK_INT(c.ups + c.downs, 0);
    jj_redis_free(pubr);
}

static void test_auth(void) {
    int port = free_port();
    start_redis(port, "s3cret", 1);
    jj_redis *pubr = publisher(port, "s3cret");
    rec right = { 0 }, wrong = { 0 }, none = { 0 }, user = { 0 };
    subscribe(&right, port, "s3cret", "jj:invalidate");
    subscribe(&wrong, port, "nope", "jj:invalidate");
    subscribe(&none, port, NULL, "jj:invalidate");
    jj_redis_config cfg = config(port, "default", "s3cret");
    user.sub = jj_redis_sub_new(loop, &cfg, "jj:invalidate", on_message, on_state, &user);
    CHECK(run_until(sub_up, &right, 2.0));
    CHECK(run_until(sub_up, &user, 2.0));
    run_until(NULL, NULL, 0.5);
    CHECK(!jj_redis_sub_up(wrong.sub));
    CHECK(!jj_redis_sub_up(none.sub));
    CHECK_INT(wrong.ups + none.ups, 0);
    CHECK_INT(publish(pubr, "jj:invalidate", "n\tk", 3), 2);
    want w = { &right, 1 };
    CHECK(run_until(got_n, &w, 2.0));
    w.r = &user;
    CHECK(run_until(got_n, &w, 2.0));
    CHECK_INT(wrong.nmsg + none.nmsg, 0);
    jj_redis_sub_free(right.sub);
    jj_redis_sub_free(wrong.sub);
    jj_redis_sub_free(none.sub);
    jj_redis_sub_free(user.sub);
    rec_clear(&right);
    rec_clear(&user);
    jj_redis_free(pubr);
}

static void test_outage(void) {
    int port = free_port();
    pid_t pid = start_redis(port, NULL, 1);
    rec a = { 0 };
    subscribe(&a, port, NULL, "jj:invalidate");
    CHECK(run_until(sub_up, &a, 2.0));
    jj_redis *pubr = publisher(port, NULL);

    /* Killed: reported down at once. */
    stop_redis(pid, SIGKILL);
    want d = { &a, 1 };
    CHECK(run_until(got_downs, &d, 1.0));
    CHECK_INT(a.downs, 1);
    CHECK_INT(a.last_state, 0);
    CHECK(!jj_redis_sub_up(a.sub));
    run_until(NULL, NULL, 1.2);   /* let the backoff grow to its cap */
    CHECK_INT(a.downs, 1);

    /* Back on the same port: up again within 1 s, and delivering. */
    double t0 = ev_time();
    pid = start_redis(port, NULL, 0);
    CHECK(run_until(sub_up, &a, 3.0));
    double took = ev_time() - t0;
    if (took >= 1.0)
        fprintf(stderr, "resubscribe took %.3f s\n", took);
    CHECK(took < 1.0);
    CHECK_INT(a.ups, 2);
    CHECK_INT(a.last_state, 1);
    CHECK(run_until(cmd_up, pubr, 3.0));
    CHECK_INT(publish(pubr, "jj:invalidate", "after\trestart", 13), 1);
    want w = { &a, 1 };
    CHECK(run_until(got_n, &w, 2.0));
    CHECK(a.nmsg == 1 && strcmp(a.msg[0], "after\trestart") == 0);

    /* A hung Redis (SIGSTOP): the silent connection is noticed by the
     * heartbeat within ~4 s; SIGCONT brings it back. */
    stop_redis(pid, SIGSTOP);
    t0 = ev_time();
    d.n = 2;
    CHECK(run_until(got_downs, &d, 6.0));
    took = ev_time() - t0;
    CHECK_INT(a.downs, 2);
    CHECK(took > 2.0 && took < 5.5);
    stop_redis(pid, SIGCONT);
    CHECK(run_until(sub_up, &a, 3.0));
    CHECK_INT(a.ups, 3);

    /* Freed from inside on_state(0). */
    a.free_on_down = 1;
    stop_redis(pid, SIGKILL);
    d.n = 3;
    CHECK(run_until(got_downs, &d, 1.0));
    CHECK(a.freed);
    run_until(NULL, NULL, 0.1);
    rec_clear(&a);
    jj_redis_free(pubr);
}

/* ---- the engine's wiring: invalidations and outages reach the L1 registry ---- */

typedef struct env {
    char port[16];
    char db[64];
} env;

static const char *lookup(const char *name, void *ud) {
    env *v = ud;
    if (strcmp(name, "REDIS_PORT") == 0) return v->port;
    if (strcmp(name, "REDIS_HOST") == 0) return "127.0.0.1";
    if (strcmp(name, "REDIS_KEY_PREFIX") == 0) return "wt:";
    if (strcmp(name, "REDIS_TIMEOUT_MS") == 0) return "500";
    if (strcmp(name, "DB_PATH") == 0) return v->db;
    if (strcmp(name, "DB_THREADS") == 0) return "1";
    return NULL;
}

static int engine_sub_up(void *ud) { return jj_engine_subscriber_up(ud); }
static int engine_sub_down(void *ud) { return !jj_engine_subscriber_up(ud); }
static int engine_cmd_up(void *ud) { return cmd_up(jj_engine_redis(ud)); }

static int lru_has(jj_lru *c, const char *k) {
    jj_lru_entry e;
    return jj_lru_get(c, k, strlen(k), 0, &e) == 0;
}

static int k1_gone(void *ud) { return !lru_has(ud, "k1"); }

static void test_engine_wiring(void) {
    int port = free_port();
    pid_t pid = start_redis(port, NULL, 1);
    env v;
    snprintf(v.port, sizeof v.port, "%d", port);
    snprintf(v.db, sizeof v.db, "/tmp/jj-test-redis-sub-%d.db", (int)getpid());
    jj_config cfg;
    char err[512];
    CHECK_INT(jj_config_load_from(&cfg, lookup, &v, err, sizeof err), 0);
    jj_engine *e = jj_engine_new(loop, &cfg, 0, JJ_GEN_BARE, err, sizeof err);
    CHECK(e != NULL);
    if (!e) {
        fprintf(stderr, "engine: %s\n", err);
        return;
    }
    CHECK(run_until(engine_sub_up, e, 2.0));
    CHECK(run_until(engine_cmd_up, e, 2.0));

    jj_lru *c = jj_lru_registry_get("w", 100, 1 << 20);
    jj_lru_set(c, "k1", 2, "v", 1, 1e18, 0, 0, 0);
    jj_lru_set(c, "k2", 2, "v", 1, 1e18, 0, 0, 0);
    CHECK_INT(publish(jj_engine_redis(e), "wt:invalidate", "w\tk1", 4), 1);
    CHECK(run_until(k1_gone, c, 2.0));
    CHECK(lru_has(c, "k2"));

    /* Subscriber down: L1 flushed. Entries stored meanwhile are flushed
     * again when it comes back. */
    stop_redis(pid, SIGKILL);
    CHECK(run_until(engine_sub_down, e, 1.0));
    CHECK(!lru_has(c, "k2"));
    jj_lru_set(c, "k3", 2, "v", 1, 1e18, 0, 0, 0);
    pid = start_redis(port, NULL, 0);
    CHECK(run_until(engine_sub_up, e, 3.0));
    CHECK(!lru_has(c, "k3"));

    jj_engine_free(e);
    CHECK_INT(jj_lru_registry_count(), 0);
    stop_redis(pid, SIGKILL);
    unlink(v.db);
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_children);
    jj_log_set_level(JJ_LOG_ERROR);
    loop = ev_loop_new(EVFLAG_AUTO);

    test_bad_args();
    int port = free_port();
    start_redis(port, NULL, 1);
    test_delivery(port);
    test_free_in_callbacks(port);
    test_auth();
    test_outage();
    test_engine_wiring();

    ev_loop_destroy(loop);
    kill_children();
    return jj_test_done();
}
