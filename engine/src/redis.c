/* redis.c: the engine's Redis client on hiredis 0.14.1 and libev.
 *
 * One async connection, pipelined, owned by a jj_redis. The connection goes
 * CONNECTING -> HANDSHAKE (AUTH, SELECT, SCRIPT LOADs, PING, pipelined) -> UP;
 * any failure drops it and a jittered, capped exponential backoff timer
 * starts the next attempt. Commands are accepted only while UP.
 *
 * Ownership and lifetime, which hiredis 0.14.1 makes delicate:
 *  - Every command handed to hiredis carries an `op` (malloc'd here) as its
 *    privdata. hiredis calls each registered callback exactly once, with the
 *    reply or with NULL when the context goes away; on_reply frees the op.
 *    The reply object belongs to hiredis and is freed after the callback.
 *  - A context freed inside a reply callback (redisAsyncFree while
 *    REDIS_IN_CALLBACK) is only marked; hiredis frees it after the callback
 *    returns, running the remaining callbacks with NULL. Freed outside a
 *    callback, it runs them synchronously, inside redisAsyncFree.
 *  - Never free a context from the connect or disconnect callbacks: hiredis
 *    frees it itself right after (failed connect, lost connection) or keeps
 *    using it (successful connect).
 *  - When we drop a connection ourselves we first detach it (r->ac = NULL,
 *    ac->data = NULL), so its late callbacks can tell it is not current and
 *    its disconnect callback does nothing.
 *  - User callbacks may call jj_redis_free. The struct is therefore freed
 *    only when nothing can reach it any more: no current context, no op
 *    alive (ops point back at it) and no function of ours on the stack
 *    (busy). See maybe_destroy.
 *
 * The endpoint helpers (address, AUTH, backoff, error reporting; see
 * redis_internal.h) are shared with the pub/sub subscriber in redis_sub.c.
 */
#include "redis.h"
#include "redis_internal.h"

#include "log.h"
#include "metrics.h"
#include "sha1.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>
#include <hiredis/adapters/libev.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#define BACKOFF_MIN_MS JJ_REDIS_BACKOFF_MIN_MS
#define BACKOFF_MAX_MS JJ_REDIS_BACKOFF_MAX_MS
#define TICK_S 1.0      /* ping period while up */
#define STALL_S 3.0     /* no reply for this long while commands wait: dead */

#define ERR_UNAVAILABLE "redis unavailable"
#define ERR_OVERLOADED "redis overloaded"
#define ERR_LOST "redis connection lost"
#define ERR_CLOSED "redis closed"

enum state { ST_DOWN = 0, ST_CONNECTING, ST_HANDSHAKE, ST_UP };

enum op_kind {
    OP_USER,      /* jj_redis_command: deliver to the caller */
    OP_EVALSHA,   /* jj_redis_evalsha, first or retried EVALSHA */
    OP_RELOAD,    /* SCRIPT LOAD after NOSCRIPT, then EVALSHA again */
    OP_HANDSHAKE, /* AUTH / SELECT / SCRIPT LOAD / PING while connecting */
    OP_PING,      /* latency probe while up */
    OP_LOAD       /* SCRIPT LOAD of a script registered while connected */
};

typedef struct script {
    char sha[41];
    char *src;     /* owned */
    size_t len;
} script;

typedef struct op {
    jj_redis *r;
    unsigned conn;         /* generation of the connection it was sent on */
    int kind;
    const char *what;      /* handshake step name, for errors */
    jj_redis_cb *cb;       /* OP_USER, OP_EVALSHA, OP_RELOAD */
    void *privdata;
    double sent;           /* ev_time() when first sent (latency samples) */
    int retried;           /* EVALSHA: NOSCRIPT recovery already used */
    size_t script;         /* EVALSHA: index into r->scripts */
    int argc;              /* EVALSHA: owned copy of the full command, */
    const char **argv;     /* kept for the retry; one allocation with */
    size_t *argvlen;       /* the op itself */
} op;

struct jj_redis {
    struct ev_loop *loop;
    jj_redis_endpoint ep;
    char *prefix;            /* owned copy */
    int db, max_pending;
    double stall_s;          /* command_timeout_ms in seconds */
    ev_timer stall;          /* stall_s after the last progress while commands wait */
    int stalled;             /* ... it fired with nothing to read: new commands fail */

    redisAsyncContext *ac;   /* current connection (any state but DOWN) */
    unsigned conn;           /* bumped for every connection attempt */
    int state;
    int handshake_left;      /* handshake replies still awaited */
    int ever_up;
    size_t outstanding;      /* callbacks pending on ac, all kinds */
    double last_progress;    /* ev_now of the last reply, or of the first send */
    int ping_inflight;
    int drop_now;            /* deadline timer armed to drop at once */

    ev_timer retry;          /* backoff before the next connect */
    ev_timer deadline;       /* connect + handshake timeout */
    ev_timer tick;           /* ping and stall check while up */

    size_t pending;          /* accepted user commands not yet called back */
    size_t ops_alive;        /* ops that point at this struct */
    int busy;                /* our frames on the stack that use r after freeing an ac */
    int closing;             /* jj_redis_free was called */

    double latency_ms;
    uint64_t reconnects, script_reloads;
    /* shared metrics: redis_command_duration (ms), redis_reconnects,
     * redis_script_reloads */
    jj_metric m_duration, m_reconnects, m_reloads;

    script *scripts;
    size_t nscripts, cap_scripts;

    int require_master;      /* ROLE in the handshake */
    int auxiliary;           /* cfg->kind set (a sentinel connection): no metrics, quiet "up" */
    int have_address;        /* 0 while defer_connect waits for jj_redis_set_address */
    char address[300];       /* "host:port" */
    jj_redis_state_cb *on_state;
    void *state_ud;
    /* Sentinel facts (jj_redis_set_sentinel_info) */
    char s_master[256], s_error[256];
    double s_last_switch;
    uint64_t s_switches;
};

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata);
static void start_connect(jj_redis *r);

/* ---- small helpers ---------------------------------------------------- */

static char *dup_or_null(const char *s) {
    if (s == NULL)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

/* ---- endpoint: shared with the subscriber (redis_internal.h) ----------- */

static void endpoint_resolve(jj_redis_endpoint *ep);

int jj_endpoint_init(jj_redis_endpoint *ep, const jj_redis_config *cfg, const char *kind,
                     const void *salt) {
    ep->kind = kind;
    ep->host = dup_or_null(cfg->host && cfg->host[0] ? cfg->host : "127.0.0.1");
    ep->user = cfg->user && cfg->user[0] ? dup_or_null(cfg->user) : NULL;
    ep->password = cfg->password && cfg->password[0] ? dup_or_null(cfg->password) : NULL;
    ep->port = cfg->port > 0 ? cfg->port : 6379;
    ep->connect_timeout_s = (cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 1000) / 1000.0;
    ep->backoff_ms = BACKOFF_MIN_MS;
    ep->rng = (uint64_t)(ev_time() * 1e6) ^ ((uint64_t)(uintptr_t)salt << 16) ^ (uint64_t)getpid();
    if (ep->rng == 0)
        ep->rng = 0x9e3779b97f4a7c15ULL;
    if (ep->host == NULL || (cfg->user && cfg->user[0] && !ep->user) ||
        (cfg->password && cfg->password[0] && !ep->password))
        return -1;
    endpoint_resolve(ep);
    return 0;
}

int jj_endpoint_set_address(jj_redis_endpoint *ep, const char *host, int port) {
    char *h = dup_or_null(host);
    if (h == NULL)
        return -1;
    free(ep->host);
    ep->host = h;
    ep->port = port;
    ep->backoff_ms = BACKOFF_MIN_MS;
    endpoint_resolve(ep);
    return 0;
}

static void endpoint_resolve(jj_redis_endpoint *ep) {
    ep->addr[0] = 0;
    /* hiredis 0.14 resolves the host with a blocking getaddrinfo on every
     * connect, on the event loop: resolve a name once here, at start-up, and
     * reconnect to the address. A name that does not resolve yet (a container
     * still starting) is kept and resolved per attempt, as before. */
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    if (getaddrinfo(ep->host, NULL, &hints, &res) == 0) {   /* already an address */
        freeaddrinfo(res);
    } else {
        hints.ai_flags = 0;
        hints.ai_family = AF_INET;   /* IPv4 first, as hiredis itself does */
        if (getaddrinfo(ep->host, NULL, &hints, &res) != 0) {
            res = NULL;
            hints.ai_family = AF_UNSPEC;
            if (getaddrinfo(ep->host, NULL, &hints, &res) != 0) res = NULL;
        }
        if (res) {
            const void *a = res->ai_family == AF_INET6
                ? (const void *)&((struct sockaddr_in6 *)res->ai_addr)->sin6_addr
                : (const void *)&((struct sockaddr_in *)res->ai_addr)->sin_addr;
            if (!inet_ntop(res->ai_family, a, ep->addr, sizeof ep->addr)) ep->addr[0] = 0;
            freeaddrinfo(res);
        }
    }
}

void jj_endpoint_free(jj_redis_endpoint *ep) {
    free(ep->host);
    free(ep->user);
    free(ep->password);
}

/* Records the error for the status endpoint; logs it only when it changes,
 * so a Redis that stays down does not flood the log with one line per retry. */
void jj_endpoint_error(jj_redis_endpoint *ep, const char *fmt, ...) {
    char buf[sizeof ep->last_error];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (strcmp(buf, ep->last_error) != 0) {
        JJ_WARN("%s %s:%d: %s", ep->kind, ep->host, ep->port, buf);
        memcpy(ep->last_error, buf, sizeof buf);
    }
}

#define set_error(r, ...) jj_endpoint_error(&(r)->ep, __VA_ARGS__)

/* xorshift64*: jitter only, no need for quality or for rand()'s global
 * state. */
double jj_endpoint_next_delay(jj_redis_endpoint *ep) {
    ep->rng ^= ep->rng >> 12;
    ep->rng ^= ep->rng << 25;
    ep->rng ^= ep->rng >> 27;
    double u = (double)((ep->rng * 2685821657736338717ULL) >> 11) / 9007199254740992.0;
    double d = ep->backoff_ms;
    ep->backoff_ms = d * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d * 2;
    return (d / 2 + u * (d / 2)) / 1000.0;
}

int jj_endpoint_auth_argv(const jj_redis_endpoint *ep, const char *argv[3]) {
    if (ep->password == NULL)
        return 0;
    argv[0] = "AUTH";
    argv[1] = ep->user ? ep->user : ep->password;
    argv[2] = ep->password;
    return ep->user ? 3 : 2;
}

redisAsyncContext *jj_endpoint_connect(jj_redis_endpoint *ep, struct ev_loop *loop, void *data,
                                       redisConnectCallback *on_conn,
                                       redisDisconnectCallback *on_disc) {
    redisAsyncContext *ac = redisAsyncConnect(ep->addr[0] ? ep->addr : ep->host, ep->port);
    if (ac == NULL) {
        jj_endpoint_error(ep, "connect failed: out of memory");
        return NULL;
    }
    if (ac->err) {
        jj_endpoint_error(ep, "connect failed: %s", ac->c.errstr);
        redisAsyncFree(ac);   /* never connected: no callbacks run */
        return NULL;
    }
    ac->data = data;
    if (redisLibevAttach(loop, ac) != REDIS_OK) {
        jj_endpoint_error(ep, "connect failed: cannot attach to the event loop");
        redisAsyncFree(ac);
        return NULL;
    }
    /* Order matters in 0.14.1: setting the connect callback arms the write
     * watcher, so the adapter must be attached first. */
    redisAsyncSetConnectCallback(ac, on_conn);
    redisAsyncSetDisconnectCallback(ac, on_disc);
    return ac;
}

static op *op_new(jj_redis *r, int kind, size_t extra) {
    op *o = calloc(1, sizeof *o + extra);
    if (o == NULL)
        return NULL;
    o->r = r;
    o->kind = kind;
    r->ops_alive++;
    return o;
}

static void op_free(op *o) {
    o->r->ops_alive--;
    free(o);
}

static void destroy(jj_redis *r) {
    ev_timer_stop(r->loop, &r->retry);
    ev_timer_stop(r->loop, &r->deadline);
    ev_timer_stop(r->loop, &r->tick);
    ev_timer_stop(r->loop, &r->stall);
    for (size_t i = 0; i < r->nscripts; i++)
        free(r->scripts[i].src);
    free(r->scripts);
    jj_endpoint_free(&r->ep);
    free(r->prefix);
    free(r);
}

/* Frees r once jj_redis_free was called and nothing refers to it any more.
 * Returns 1 when r is gone: the caller must not touch it again. */
static int maybe_destroy(jj_redis *r) {
    if (r->closing && r->busy == 0 && r->ac == NULL && r->ops_alive == 0) {
        destroy(r);
        return 1;
    }
    return 0;
}

/* Hands one command to hiredis on connection ac. Returns 0 when registered
 * (on_reply will run exactly once for it), -1 otherwise. hiredis copies the
 * arguments into its output buffer. */
static int send_op(jj_redis *r, redisAsyncContext *ac, op *o, int argc,
                   const char **argv, const size_t *argvlen) {
    if (redisAsyncCommandArgv(ac, on_reply, o, argc, argv, argvlen) != REDIS_OK)
        return -1;
    o->conn = r->conn;
    if (o->sent == 0)
        o->sent = ev_time();   /* a NOSCRIPT retry keeps its first send time */
    if (r->outstanding++ == 0) {
        r->last_progress = ev_now(r->loop);
        ev_timer_again(r->loop, &r->stall);
    }
    return 0;
}

/* An internal command (handshake, ping, load) on the current connection. */
static int send_internal(jj_redis *r, int kind, const char *what, int argc,
                         const char **argv, const size_t *argvlen) {
    op *o = op_new(r, kind, 0);
    if (o == NULL)
        return -1;
    o->what = what;
    if (send_op(r, r->ac, o, argc, argv, argvlen) != 0) {
        op_free(o);
        return -1;
    }
    return 0;
}

/* ---- connection state ------------------------------------------------- */

/* Forgets the current connection without freeing it; returns it. */
static redisAsyncContext *detach(jj_redis *r) {
    redisAsyncContext *ac = r->ac;
    r->ac = NULL;
    if (ac)
        ac->data = NULL;
    r->state = ST_DOWN;
    r->outstanding = 0;
    r->ping_inflight = 0;
    r->drop_now = 0;
    ev_timer_stop(r->loop, &r->deadline);
    ev_timer_stop(r->loop, &r->tick);
    ev_timer_stop(r->loop, &r->stall);
    r->stalled = 0;
    return ac;
}

static void notify_state(jj_redis *r, int up) {
    if (r->on_state && !r->closing) {
        r->busy++;
        r->on_state(up, r->state_ud);
        r->busy--;
    }
}

/* Every failed connection or attempt ends here. */
static void schedule_retry(jj_redis *r) {
    if (r->closing)
        return;
    notify_state(r, 0);
    jj_timer_rearm(r->loop, &r->retry, jj_endpoint_next_delay(&r->ep));
}

/* Detaches and frees the current hiredis context, if any. Outside a
 * callback of ours hiredis runs every pending callback now, once, with NULL;
 * inside one it does so after that callback returns. busy keeps r alive
 * meanwhile: the caller checks maybe_destroy(r) after. */
static void free_context(jj_redis *r) {
    redisAsyncContext *ac = detach(r);
    if (ac) {
        r->busy++;
        redisAsyncFree(ac);
        r->busy--;
    }
}

/* Drops the current connection ourselves (handshake failure, timeout,
 * stall) and schedules a reconnect. Pending callbacks run with NULL, either
 * now (called from a timer) or right after the current reply callback.
 * Returns 1 when r was freed meanwhile (a user callback freed it). */
static int drop(jj_redis *r) {
    free_context(r);
    if (maybe_destroy(r))
        return 1;
    schedule_retry(r);
    return 0;
}

/* hiredis is tearing ac down after an I/O error or a server close: note it
 * and schedule a reconnect. hiredis frees ac itself. */
static void lost(jj_redis *r, const redisAsyncContext *ac) {
    const char *why = ac->c.errstr[0] ? ac->c.errstr : "connection closed";
    if (r->state == ST_UP)
        set_error(r, "connection lost: %s", why);
    else
        set_error(r, "connection failed during handshake: %s", why);
    detach(r);
    schedule_retry(r);
}

static void become_up(jj_redis *r) {
    r->state = ST_UP;
    ev_timer_stop(r->loop, &r->deadline);
    r->ep.backoff_ms = BACKOFF_MIN_MS;
    if (r->ever_up) {
        r->reconnects++;
        if (!r->auxiliary)
            jj_metric_add(&r->m_reconnects, "redis_reconnects", 1);
    }
    r->ever_up = 1;
    ev_timer_set(&r->tick, TICK_S, TICK_S);
    ev_timer_start(r->loop, &r->tick);
    if (!r->auxiliary)
        JJ_INFO("redis %s:%d: up", r->ep.host, r->ep.port);
    else
        JJ_DEBUG("%s %s:%d: up", r->ep.kind, r->ep.host, r->ep.port);
    notify_state(r, 1);
}

/* Arms the deadline timer to drop the connection from the loop; used where
 * hiredis forbids freeing the context (inside the connect callback). */
static void drop_soon(jj_redis *r) {
    r->drop_now = 1;
    jj_timer_rearm(r->loop, &r->deadline, 0.);
}

static int send_handshake(jj_redis *r) {
    int n = 0;
    const char *auth[3];
    int auth_argc = jj_endpoint_auth_argv(&r->ep, auth);
    if (auth_argc) {
        if (send_internal(r, OP_HANDSHAKE, "AUTH", auth_argc, auth, NULL) != 0)
            return -1;
        n++;
    }
    if (r->db > 0) {
        char db[16];
        snprintf(db, sizeof db, "%d", r->db);
        const char *argv[2] = { "SELECT", db };
        if (send_internal(r, OP_HANDSHAKE, "SELECT", 2, argv, NULL) != 0)
            return -1;
        n++;
    }
    if (r->require_master) {
        const char *role[1] = { "ROLE" };
        if (send_internal(r, OP_HANDSHAKE, "ROLE", 1, role, NULL) != 0)
            return -1;
        n++;
    }
    for (size_t i = 0; i < r->nscripts; i++) {
        const char *argv[3] = { "SCRIPT", "LOAD", r->scripts[i].src };
        size_t len[3] = { 6, 4, r->scripts[i].len };
        if (send_internal(r, OP_HANDSHAKE, "SCRIPT LOAD", 3, argv, len) != 0)
            return -1;
        n++;
    }
    /* A final PING proves the connection answers commands even when there
     * is nothing else to send (e.g. NOAUTH when no password is configured)
     * and gives the first latency sample. */
    const char *ping[1] = { "PING" };
    if (send_internal(r, OP_HANDSHAKE, "PING", 1, ping, NULL) != 0)
        return -1;
    n++;
    r->handshake_left = n;
    return 0;
}

static void on_connect(const redisAsyncContext *cac, int status) {
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    jj_redis *r = ac->data;
    if (r == NULL || r->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac when we return. */
        set_error(r, "connect failed: %s", ac->c.errstr[0] ? ac->c.errstr : "unknown error");
        detach(r);
        schedule_retry(r);
        return;
    }
    r->state = ST_HANDSHAKE;
    if (send_handshake(r) != 0) {
        set_error(r, "could not send the handshake");
        drop_soon(r);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    (void)status;
    jj_redis *r = ac->data;
    /* NULL: a connection we dropped ourselves, already accounted for. */
    if (r == NULL || r->ac != ac)
        return;
    lost(r, ac);
}

static void start_connect(jj_redis *r) {
    if (r->closing)
        return;
    r->conn++;
    redisAsyncContext *ac = jj_endpoint_connect(&r->ep, r->loop, r, on_connect, on_disconnect);
    if (ac == NULL) {
        schedule_retry(r);
        return;
    }
    r->ac = ac;
    r->state = ST_CONNECTING;
    r->outstanding = 0;
    r->ping_inflight = 0;
    r->drop_now = 0;
    jj_timer_rearm(r->loop, &r->deadline, r->ep.connect_timeout_s);
}

/* ---- timers ------------------------------------------------------------ */

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    start_connect(w->data);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    jj_redis *r = w->data;
    if (r->state == ST_UP)
        return;
    if (!r->drop_now)
        set_error(r, "connect timed out after %.0f ms", r->ep.connect_timeout_s * 1000);
    drop(r);
}

/* No reply for stall_s while commands wait. Unless a reply is already in
 * the socket (the worker was busy, not Redis: this timer may run before
 * the read watcher in the same loop turn), the connection is stalled:
 * commands fail at once until the next reply (check_ready). */
static void stall_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)revents;
    jj_redis *r = w->data;
    if (r->ac == NULL || r->outstanding == 0) {
        ev_timer_stop(loop, w);
        return;
    }
    struct pollfd pfd = { .fd = r->ac->c.fd, .events = POLLIN, .revents = 0 };
    if (poll(&pfd, 1, 0) > 0)
        return;   /* repeats: checked again after the reply is read */
    r->stalled = 1;
    ev_timer_stop(loop, w);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)revents;
    jj_redis *r = w->data;
    if (r->state != ST_UP || r->ac == NULL)
        return;
    double stalled = ev_now(loop) - r->last_progress;
    if (r->outstanding > 0 && stalled > STALL_S) {
        set_error(r, "no reply for %.1f s; reconnecting", stalled);
        drop(r);
        return;
    }
    if (!r->ping_inflight) {
        const char *argv[1] = { "PING" };
        if (send_internal(r, OP_PING, "PING", 1, argv, NULL) == 0)
            r->ping_inflight = 1;
    }
}

/* ---- replies ----------------------------------------------------------- */

static void deliver(op *o, redisReply *rep) {
    jj_redis *r = o->r;
    const char *err = NULL;
    if (rep == NULL)
        err = r->closing ? ERR_CLOSED : ERR_LOST;
    else if (!r->auxiliary)   /* the round trip of an answered command (error replies too) */
        jj_metric_observe(&r->m_duration, "redis_command_duration", (ev_time() - o->sent) * 1000.0);
    r->pending--;
    o->cb((const jj_redis_reply *)rep, err, o->privdata);
}

static void handshake_reply(jj_redis *r, op *o, redisReply *rep, int current) {
    if (!current || r->state != ST_HANDSHAKE || rep == NULL)
        return;
    if (rep->type == REDIS_REPLY_ERROR) {
        if (strcmp(o->what, "SCRIPT LOAD") != 0) {
            /* Fatal for this connection: AUTH, SELECT or PING refused. */
            set_error(r, "%s failed: %s", o->what, rep->str);
            r->handshake_left = -1;
            return;
        }
        /* A script that does not compile must not keep Redis down for
         * everyone: its EVALSHA calls will report the error instead. */
        set_error(r, "SCRIPT LOAD failed: %s", rep->str);
    }
    if (strcmp(o->what, "ROLE") == 0) {
        /* Sentinel: the address may be a master that was demoted meanwhile */
        const char *role = rep->type == REDIS_REPLY_ARRAY && rep->elements > 0 &&
                           rep->element[0]->type == REDIS_REPLY_STRING ? rep->element[0]->str : "?";
        if (strcmp(role, "master") != 0) {
            set_error(r, "ROLE says %s, not master", role);
            r->handshake_left = -1;
            return;
        }
    }
    if (strcmp(o->what, "PING") == 0)
        r->latency_ms = (ev_time() - o->sent) * 1000.0;
    if (--r->handshake_left == 0)
        become_up(r);
}

/* The single hiredis reply callback. Runs exactly once per op registration. */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    op *o = privdata;
    jj_redis *r = o->r;
    redisReply *rep = reply;
    int current = r->ac == ac && o->conn == r->conn;

    if (current) {
        if (r->outstanding > 0)
            r->outstanding--;
        r->last_progress = ev_now(r->loop);
        r->stalled = 0;
        if (r->outstanding > 0)
            ev_timer_again(r->loop, &r->stall);
        else
            ev_timer_stop(r->loop, &r->stall);
        if (rep == NULL) {
            /* hiredis is failing everything: make the client "down" before
             * any user callback runs, so none of them can send. */
            lost(r, ac);
            current = 0;
        }
    }

    switch (o->kind) {
    case OP_USER:
        deliver(o, rep);
        break;
    case OP_EVALSHA:
        if (rep && rep->type == REDIS_REPLY_ERROR && !o->retried && current &&
            r->state == ST_UP && strncmp(rep->str, "NOSCRIPT", 8) == 0) {
            /* Redis lost the script (restart, SCRIPT FLUSH): load it and
             * run it again, once. The op stays alive for the retry. */
            script *s = &r->scripts[o->script];
            const char *argv[3] = { "SCRIPT", "LOAD", s->src };
            size_t len[3] = { 6, 4, s->len };
            o->retried = 1;
            o->kind = OP_RELOAD;
            r->script_reloads++;
            jj_metric_add(&r->m_reloads, "redis_script_reloads", 1);
            if (send_op(r, ac, o, 3, argv, len) == 0)
                return;
            deliver(o, NULL);
            break;
        }
        deliver(o, rep);
        break;
    case OP_RELOAD:
        if (rep && rep->type != REDIS_REPLY_ERROR) {
            o->kind = OP_EVALSHA;
            if (current && send_op(r, ac, o, o->argc, o->argv, o->argvlen) == 0)
                return;
            rep = NULL;   /* the connection is going away */
        }
        /* The SCRIPT LOAD error (e.g. a compile error) is the answer. */
        deliver(o, rep);
        break;
    case OP_HANDSHAKE:
        handshake_reply(r, o, rep, current);
        if (r->handshake_left < 0 && current) {
            op_free(o);
            drop(r);   /* in a callback: hiredis frees ac after we return */
            return;    /* r may be gone */
        }
        break;
    case OP_PING:
        if (current) {
            r->ping_inflight = 0;
            if (rep && rep->type != REDIS_REPLY_ERROR)
                r->latency_ms = (ev_time() - o->sent) * 1000.0;
        }
        break;
    case OP_LOAD:
        if (rep && rep->type == REDIS_REPLY_ERROR)
            set_error(r, "SCRIPT LOAD failed: %s", rep->str);
        break;
    }
    op_free(o);
    maybe_destroy(r);
}

/* ---- public API -------------------------------------------------------- */

jj_redis *jj_redis_new(struct ev_loop *loop, const jj_redis_config *cfg) {
    if (loop == NULL || cfg == NULL)
        return NULL;
    jj_redis *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->loop = loop;
    r->prefix = dup_or_null(cfg->prefix ? cfg->prefix : "");
    if (jj_endpoint_init(&r->ep, cfg, cfg->kind ? cfg->kind : "redis", r) != 0 || r->prefix == NULL) {
        destroy(r);
        return NULL;
    }
    r->db = cfg->db;
    r->max_pending = cfg->max_pending > 0 ? cfg->max_pending : 10000;
    r->stall_s = (cfg->command_timeout_ms > 0 ? cfg->command_timeout_ms
                  : cfg->connect_timeout_ms > 0 ? cfg->connect_timeout_ms : 1000) / 1000.0;
    r->latency_ms = -1;
    ev_init(&r->retry, retry_cb);
    ev_init(&r->deadline, deadline_cb);
    ev_init(&r->tick, tick_cb);
    ev_init(&r->stall, stall_cb);
    r->stall.repeat = r->stall_s;
    r->retry.data = r->deadline.data = r->tick.data = r->stall.data = r;
    r->require_master = cfg->require_master;
    r->auxiliary = cfg->kind != NULL;
    r->have_address = !cfg->defer_connect;
    if (r->have_address) {
        snprintf(r->address, sizeof r->address, "%s:%d", r->ep.host, r->ep.port);
        start_connect(r);
    } else {
        snprintf(r->ep.last_error, sizeof r->ep.last_error, "no address yet");
    }
    return r;
}

void jj_redis_on_state(jj_redis *r, jj_redis_state_cb *cb, void *ud) {
    r->on_state = cb;
    r->state_ud = ud;
}

int jj_redis_set_address(jj_redis *r, const char *host, int port) {
    if (r == NULL || r->closing || host == NULL || !host[0] || port <= 0 || port > 65535)
        return -1;
    if (jj_endpoint_set_address(&r->ep, host, port) != 0)
        return -1;
    snprintf(r->address, sizeof r->address, "%s:%d", host, port);
    r->have_address = 1;
    ev_timer_stop(r->loop, &r->retry);
    free_context(r);   /* not in a callback of ours: the pending callbacks run now, once */
    if (maybe_destroy(r))
        return 0;
    start_connect(r);
    return 0;
}

void jj_redis_note_error(jj_redis *r, const char *msg) {
    snprintf(r->ep.last_error, sizeof r->ep.last_error, "%s", msg);
}

void jj_redis_set_sentinel_info(jj_redis *r, const char *master, const char *error,
                                double last_switch, uint64_t switches) {
    snprintf(r->s_master, sizeof r->s_master, "%s", master ? master : "");
    snprintf(r->s_error, sizeof r->s_error, "%s", error ? error : "");
    r->s_last_switch = last_switch;
    r->s_switches = switches;
}

void jj_redis_free(jj_redis *r) {
    if (r == NULL || r->closing)
        return;
    r->closing = 1;
    ev_timer_stop(r->loop, &r->retry);
    /* pending callbacks get "redis closed"; inside a callback, the last op frees r */
    free_context(r);
    maybe_destroy(r);
}

static size_t arglen(const char **argv, const size_t *argvlen, int i) {
    return argvlen ? argvlen[i] : strlen(argv[i]);
}

static int name_is(const char *s, size_t len, const char *name) {
    return len == strlen(name) && strncasecmp(s, name, len) == 0;
}

/* Commands that would break the one-reply-per-command pairing of a shared
 * pipelined connection, or change its state under everyone's feet. */
/* Commands refused on the shared connection, and why. `call_only`: allowed
 * inside a pipeline (sent back to back, so nothing can interleave). */
#define SHARED " is not allowed on the shared Redis connection"
static const struct {
    const char *name;   /* lower case */
    int call_only;
    const char *why;
} refused_cmds[] = {
    {"keys", 0, "KEYS is not allowed; use SCAN"},
    {"subscribe", 0, "SUBSCRIBE" SHARED}, {"psubscribe", 0, "PSUBSCRIBE" SHARED},
    {"ssubscribe", 0, "SSUBSCRIBE" SHARED}, {"unsubscribe", 0, "UNSUBSCRIBE" SHARED},
    {"punsubscribe", 0, "PUNSUBSCRIBE" SHARED}, {"sunsubscribe", 0, "SUNSUBSCRIBE" SHARED},
    {"monitor", 0, "MONITOR" SHARED}, {"quit", 0, "QUIT" SHARED}, {"reset", 0, "RESET" SHARED},
    {"hello", 0, "HELLO" SHARED}, {"auth", 0, "AUTH" SHARED}, {"select", 0, "SELECT" SHARED},
    {"watch", 0, "WATCH" SHARED}, {"unwatch", 0, "UNWATCH" SHARED},
    {"multi", 1, "MULTI/EXEC need redis.pipeline on the shared connection"},
    {"exec", 1, "MULTI/EXEC need redis.pipeline on the shared connection"},
    {"discard", 1, "MULTI/EXEC need redis.pipeline on the shared connection"},
};

const char *jj_redis_refused(int argc, const char **argv, const size_t *argvlen, int in_pipeline) {
    const char *c = argv[0];
    size_t n = arglen(argv, argvlen, 0);
    for (size_t i = 0; i < sizeof refused_cmds / sizeof refused_cmds[0]; i++)
        if (name_is(c, n, refused_cmds[i].name))
            return in_pipeline && refused_cmds[i].call_only ? NULL : refused_cmds[i].why;
    if (argc > 1 && name_is(c, n, "client") && name_is(argv[1], arglen(argv, argvlen, 1), "reply"))
        return "CLIENT REPLY" SHARED;
    return NULL;
}

/* Common gate of jj_redis_command and jj_redis_evalsha. */
static const char *check_ready(jj_redis *r) {
    if (r == NULL || r->closing || r->state != ST_UP || r->ac == NULL)
        return ERR_UNAVAILABLE;
    if (r->pending >= (size_t)r->max_pending)
        return ERR_OVERLOADED;
    /* Replies come in order: a command sent now would wait behind one that
     * has already waited its whole timeout (CLIENT PAUSE, a slow script).
     * Fail it at once; callers fall back (cache to the database) without
     * paying the timeout again. The first reply ends the stall. */
    if (r->stalled)
        return ERR_UNAVAILABLE;
    return NULL;
}

int jj_redis_command(jj_redis *r, int argc, const char **argv, const size_t *argvlen,
                     jj_redis_cb *cb, void *privdata, const char **err) {
    const char *e = NULL;
    if (argc <= 0 || argv == NULL || cb == NULL)
        e = "bad command";
    else if ((e = check_ready(r)) == NULL)
        e = jj_redis_refused(argc, argv, argvlen, 1);   /* a command may be part of a pipeline */
    if (e == NULL) {
        op *o = op_new(r, OP_USER, 0);
        if (o == NULL) {
            e = "out of memory";
        } else {
            o->cb = cb;
            o->privdata = privdata;
            if (send_op(r, r->ac, o, argc, argv, argvlen) == 0) {
                r->pending++;
                return 0;
            }
            op_free(o);
            e = ERR_UNAVAILABLE;
        }
    }
    if (err)
        *err = e;
    return -1;
}

static long find_script(const jj_redis *r, const char *sha) {
    for (size_t i = 0; i < r->nscripts; i++)
        if (strncmp(r->scripts[i].sha, sha, 40) == 0)
            return (long)i;
    return -1;
}

int jj_redis_script(jj_redis *r, const char *src, size_t len, char sha[41]) {
    if (r == NULL || src == NULL || sha == NULL)
        return -1;
    jj_sha1_hex(src, len, sha);
    if (find_script(r, sha) >= 0)
        return 0;
    if (r->nscripts == r->cap_scripts) {
        size_t cap = r->cap_scripts ? r->cap_scripts * 2 : 8;
        script *s = realloc(r->scripts, cap * sizeof *s);
        if (s == NULL)
            return -1;
        r->scripts = s;
        r->cap_scripts = cap;
    }
    script *s = &r->scripts[r->nscripts];
    s->src = malloc(len + 1);
    if (s->src == NULL)
        return -1;
    memcpy(s->src, src, len);
    s->src[len] = '\0';
    s->len = len;
    memcpy(s->sha, sha, 41);
    r->nscripts++;
    /* Already connected: load it now so the first EVALSHA finds it. A
     * connection still connecting loads it in its handshake. */
    if (r->ac && (r->state == ST_HANDSHAKE || r->state == ST_UP)) {
        const char *argv[3] = { "SCRIPT", "LOAD", s->src };
        size_t alen[3] = { 6, 4, s->len };
        send_internal(r, OP_LOAD, "SCRIPT LOAD", 3, argv, alen);
    }
    return 0;
}

int jj_redis_evalsha(jj_redis *r, const char sha[41], int numkeys, int argc,
                     const char **argv, const size_t *argvlen,
                     jj_redis_cb *cb, void *privdata, const char **err) {
    const char *e = NULL;
    long idx = -1;
    if (sha == NULL || cb == NULL || numkeys < 0 || argc < numkeys || (argc > 0 && argv == NULL))
        e = "bad command";
    else if ((e = check_ready(r)) == NULL && (idx = find_script(r, sha)) < 0)
        e = "unknown script";
    if (e) {
        if (err)
            *err = e;
        return -1;
    }

    /* Keep the whole EVALSHA command in the op for a NOSCRIPT retry: the
     * pointer arrays, then the bytes, in the op's own allocation. */
    char nk[16];
    int nklen = snprintf(nk, sizeof nk, "%d", numkeys);
    int total = argc + 3;
    size_t bytes = 40 + (size_t)nklen;
    for (int i = 0; i < argc; i++)
        bytes += arglen(argv, argvlen, i);
    size_t extra = (size_t)total * (sizeof(char *) + sizeof(size_t)) + bytes;
    op *o = op_new(r, OP_EVALSHA, extra);
    if (o == NULL) {
        if (err)
            *err = "out of memory";
        return -1;
    }
    o->argvlen = (size_t *)(o + 1);
    o->argv = (const char **)(o->argvlen + total);
    char *p = (char *)(o->argv + total);
    o->argv[0] = "EVALSHA";
    o->argvlen[0] = 7;
    memcpy(p, r->scripts[idx].sha, 40);
    o->argv[1] = p;
    o->argvlen[1] = 40;
    p += 40;
    memcpy(p, nk, (size_t)nklen);
    o->argv[2] = p;
    o->argvlen[2] = (size_t)nklen;
    p += nklen;
    for (int i = 0; i < argc; i++) {
        size_t n = arglen(argv, argvlen, i);
        if (n)
            memcpy(p, argv[i], n);
        o->argv[3 + i] = p;
        o->argvlen[3 + i] = n;
        p += n;
    }
    o->argc = total;
    o->script = (size_t)idx;
    o->cb = cb;
    o->privdata = privdata;
    if (send_op(r, r->ac, o, o->argc, o->argv, o->argvlen) != 0) {
        op_free(o);
        if (err)
            *err = ERR_UNAVAILABLE;
        return -1;
    }
    r->pending++;
    return 0;
}

const char *jj_redis_prefix(const jj_redis *r) {
    return r->prefix;
}

void jj_redis_get_status(const jj_redis *r, jj_redis_status *st) {
    st->up = !r->closing && r->state == ST_UP;
    st->latency_ms = r->latency_ms;
    st->reconnects = r->reconnects;
    st->script_reloads = r->script_reloads;
    st->last_error = r->ep.last_error;
    st->address = r->have_address ? r->address : "";
    st->sentinel_master = r->s_master[0] ? r->s_master : NULL;
    st->sentinel_error = r->s_error;
    st->last_switch = r->s_last_switch;
    st->switches = r->s_switches;
}

/* ---- reply accessors: jj_redis_reply is hiredis's redisReply ----------- */

static const redisReply *rr(const jj_redis_reply *r) {
    return (const redisReply *)r;
}

int jj_reply_type(const jj_redis_reply *r) {
    if (r == NULL)
        return JJ_REPLY_NIL;
    switch (rr(r)->type) {
    case REDIS_REPLY_STRING: return JJ_REPLY_STRING;
    case REDIS_REPLY_ARRAY: return JJ_REPLY_ARRAY;
    case REDIS_REPLY_INTEGER: return JJ_REPLY_INTEGER;
    case REDIS_REPLY_STATUS: return JJ_REPLY_STATUS;
    case REDIS_REPLY_ERROR: return JJ_REPLY_ERROR;
    default: return JJ_REPLY_NIL;
    }
}

const char *jj_reply_str(const jj_redis_reply *r, size_t *len) {
    int t = jj_reply_type(r);
    if (t != JJ_REPLY_STRING && t != JJ_REPLY_STATUS && t != JJ_REPLY_ERROR) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = rr(r)->len;
    return rr(r)->str;
}

long long jj_reply_integer(const jj_redis_reply *r) {
    return jj_reply_type(r) == JJ_REPLY_INTEGER ? rr(r)->integer : 0;
}

size_t jj_reply_elements(const jj_redis_reply *r) {
    return jj_reply_type(r) == JJ_REPLY_ARRAY ? rr(r)->elements : 0;
}

const jj_redis_reply *jj_reply_element(const jj_redis_reply *r, size_t i) {
    if (jj_reply_type(r) != JJ_REPLY_ARRAY || i >= rr(r)->elements)
        return NULL;
    return (const jj_redis_reply *)rr(r)->element[i];
}
