/* redis_sub.c: the pub/sub subscriber (see redis.h), on hiredis 0.14.1 and
 * libev, sharing the endpoint helpers of redis.c (redis_internal.h).
 *
 * One connection at a time: connect -> [AUTH,] SUBSCRIBE channel, pipelined
 * -> up once Redis confirms the SUBSCRIBE. Any failure drops the connection
 * and the same jittered, capped backoff as the command connection starts
 * the next attempt.
 *
 * Liveness: a subscribed connection is silent when nobody publishes, so a
 * vanished peer would go unnoticed and invalidations would be lost without
 * anyone knowing. While up, the subscriber re-SUBSCRIBEs to its channel
 * every TICK_S: Redis answers with a "subscribe" confirmation, a no-op for
 * it, and hiredis routes that to the channel's callback. (PING would not
 * do: in subscribed mode 0.14.1 looks its "pong" reply up among patterns,
 * drops it, and keeps its callback queued until the context is freed.) No
 * reply for STALL_S drops the connection.
 *
 * Lifetime, the same rules as redis.c:
 *  - hiredis calls the AUTH callback exactly once, and keeps the channel's
 *    callback registered until the context is freed, then calls it once
 *    with NULL. Both carry the jj_redis_sub as privdata, so `regs` counts
 *    the calls still due and the struct is freed only when it is 0.
 *  - Never free a context from the connect or disconnect callbacks; when
 *    we drop a connection ourselves we detach it first (s->ac = NULL,
 *    ac->data = NULL) so its late callbacks can tell it is not current.
 *  - User callbacks may call jj_redis_sub_free: `busy` marks our frames on
 *    the stack, and every entry point (hiredis callback, timer, free) ends
 *    with maybe_destroy and touches nothing after it.
 */
#include "redis.h"
#include "redis_internal.h"

#include "log.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define TICK_S 1.0     /* heartbeat period while up */
#define STALL_S 3.0    /* no reply for this long while up: dead */

#define set_error(s, ...) jj_endpoint_error(&(s)->ep, __VA_ARGS__)

struct jj_redis_sub {
    struct ev_loop *loop;
    jj_redis_endpoint ep;
    char *channel;                 /* owned copy */
    jj_redis_sub_msg_cb *on_message;
    jj_redis_sub_state_cb *on_state;
    void *ud;

    redisAsyncContext *ac;         /* current connection, NULL while down */
    int up;                        /* SUBSCRIBE confirmed on ac */
    int drop_now;                  /* deadline timer armed to drop at once */
    double last_seen;              /* ev_now of the last reply while up */
    size_t regs;                   /* hiredis callback calls still due with s */
    int busy;                      /* our frames on the stack */
    int closing;                   /* jj_redis_sub_free was called */

    ev_timer retry;                /* backoff before the next connect */
    ev_timer deadline;             /* connect + AUTH + SUBSCRIBE timeout */
    ev_timer tick;                 /* heartbeat and stall check while up */
};

static void start_connect(jj_redis_sub *s);

/* Frees s once jj_redis_sub_free was called and nothing refers to it any
 * more. Returns 1 when s is gone. */
static int maybe_destroy(jj_redis_sub *s) {
    if (!s->closing || s->busy || s->ac || s->regs)
        return 0;
    ev_timer_stop(s->loop, &s->retry);
    ev_timer_stop(s->loop, &s->deadline);
    ev_timer_stop(s->loop, &s->tick);
    jj_endpoint_free(&s->ep);
    free(s->channel);
    free(s);
    return 1;
}

/* Forgets the current connection without freeing it; returns it. */
static redisAsyncContext *detach(jj_redis_sub *s) {
    redisAsyncContext *ac = s->ac;
    s->ac = NULL;
    if (ac)
        ac->data = NULL;
    s->drop_now = 0;
    ev_timer_stop(s->loop, &s->deadline);
    ev_timer_stop(s->loop, &s->tick);
    return ac;
}

static void notify(jj_redis_sub *s, int up) {
    if (s->on_state && !s->closing) {
        s->busy++;
        s->on_state(up, s->ud);
        s->busy--;
    }
}

/* The connection is gone (detached already): report "down" if it was up,
 * then schedule the next attempt. */
static void after_loss(jj_redis_sub *s) {
    if (s->up) {
        s->up = 0;
        notify(s, 0);
    }
    if (!s->closing)
        jj_timer_rearm(s->loop, &s->retry, jj_endpoint_next_delay(&s->ep));
}

/* Detaches and frees the current hiredis context, if any. Outside a
 * callback of ours the remaining callbacks run now (with NULL); inside one,
 * after it returns. busy keeps s alive meanwhile: the caller checks
 * maybe_destroy(s) after. */
static void free_context(jj_redis_sub *s) {
    redisAsyncContext *ac = detach(s);
    if (ac) {
        s->busy++;
        redisAsyncFree(ac);
        s->busy--;
    }
}

/* Drops the current connection ourselves. Inside a hiredis callback the
 * context is freed after the callback returns, otherwise now. */
static void drop(jj_redis_sub *s) {
    free_context(s);
    after_loss(s);
}

/* hiredis is tearing ac down (I/O error, server close, error reply): it
 * frees ac itself. */
static void lost(jj_redis_sub *s, const redisAsyncContext *ac) {
    const char *why = ac->c.errstr[0] ? ac->c.errstr : "connection closed";
    if (s->up)
        set_error(s, "connection lost: %s", why);
    else
        set_error(s, "connection failed during handshake: %s", why);
    detach(s);
    after_loss(s);
}

static void become_up(jj_redis_sub *s) {
    s->up = 1;
    s->ep.backoff_ms = JJ_REDIS_BACKOFF_MIN_MS;
    s->last_seen = ev_now(s->loop);
    ev_timer_stop(s->loop, &s->deadline);
    ev_timer_set(&s->tick, TICK_S, TICK_S);
    ev_timer_start(s->loop, &s->tick);
    JJ_INFO("redis subscriber %s:%d: subscribed to %s", s->ep.host, s->ep.port, s->channel);
    notify(s, 1);
}

/* The channel's callback: confirmations, messages, then NULL once when the
 * context is freed. */
static void on_sub_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    jj_redis_sub *s = privdata;
    redisReply *rep = reply;
    if (rep == NULL) {
        s->regs--;
        if (s->ac == ac)
            lost(s, ac);
    } else if (s->ac == ac && rep->type == REDIS_REPLY_ARRAY && rep->elements >= 3 &&
               rep->element[0]->type == REDIS_REPLY_STRING) {
        const char *kind = rep->element[0]->str;
        const redisReply *payload = rep->element[2];
        s->last_seen = ev_now(s->loop);
        if (strcasecmp(kind, "message") == 0 && payload->type == REDIS_REPLY_STRING) {
            s->busy++;
            s->on_message(payload->str, payload->len, s->ud);
            s->busy--;
        } else if (strcasecmp(kind, "subscribe") == 0 && !s->up) {
            become_up(s);
        }
    }
    maybe_destroy(s);
}

static void on_auth_reply(redisAsyncContext *ac, void *reply, void *privdata) {
    jj_redis_sub *s = privdata;
    redisReply *rep = reply;
    s->regs--;
    if (s->ac == ac) {
        if (rep == NULL) {
            lost(s, ac);
        } else if (rep->type == REDIS_REPLY_ERROR) {
            set_error(s, "AUTH failed: %s", rep->str);
            drop(s);
        }
    }
    maybe_destroy(s);
}

static int send_subscribe(jj_redis_sub *s, redisAsyncContext *ac) {
    const char *argv[2] = { "SUBSCRIBE", s->channel };
    return redisAsyncCommandArgv(ac, on_sub_reply, s, 2, argv, NULL) == REDIS_OK ? 0 : -1;
}

static void on_connect(const redisAsyncContext *cac, int status) {
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    jj_redis_sub *s = ac->data;
    if (s == NULL || s->ac != ac)
        return;
    if (status != REDIS_OK) {
        /* hiredis frees ac when we return. */
        set_error(s, "connect failed: %s", ac->c.errstr[0] ? ac->c.errstr : "unknown error");
        detach(s);
        after_loss(s);
        return;
    }
    const char *auth[3];
    int argc = jj_endpoint_auth_argv(&s->ep, auth);
    int ok = 1;
    if (argc) {
        if (redisAsyncCommandArgv(ac, on_auth_reply, s, argc, auth, NULL) == REDIS_OK)
            s->regs++;
        else
            ok = 0;
    }
    if (ok && send_subscribe(s, ac) == 0)
        s->regs++;   /* one NULL call per context, however often we SUBSCRIBE */
    else
        ok = 0;
    if (!ok) {
        /* Cannot free ac in the connect callback: drop it from the loop. */
        set_error(s, "could not send SUBSCRIBE");
        s->drop_now = 1;
        jj_timer_rearm(s->loop, &s->deadline, 0.);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    (void)status;
    jj_redis_sub *s = ac->data;
    /* NULL: dropped by us, or already handled by a NULL reply callback. */
    if (s == NULL || s->ac != ac)
        return;
    lost(s, ac);
    maybe_destroy(s);
}

static void start_connect(jj_redis_sub *s) {
    if (s->closing)
        return;
    redisAsyncContext *ac = jj_endpoint_connect(&s->ep, s->loop, s, on_connect, on_disconnect);
    if (ac == NULL) {
        jj_timer_rearm(s->loop, &s->retry, jj_endpoint_next_delay(&s->ep));
        return;
    }
    s->ac = ac;
    s->drop_now = 0;
    jj_timer_rearm(s->loop, &s->deadline, s->ep.connect_timeout_s);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    start_connect(w->data);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    jj_redis_sub *s = w->data;
    if (s->up)
        return;
    if (!s->drop_now)
        set_error(s, "connect timed out after %.0f ms", s->ep.connect_timeout_s * 1000);
    drop(s);
    maybe_destroy(s);
}

static void tick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)revents;
    jj_redis_sub *s = w->data;
    if (!s->up || s->ac == NULL)
        return;
    double silent = ev_now(loop) - s->last_seen;
    if (silent > STALL_S) {
        set_error(s, "no reply for %.1f s; reconnecting", silent);
        drop(s);
        maybe_destroy(s);
        return;
    }
    send_subscribe(s, s->ac);   /* heartbeat; a failure shows up as a stall */
}

/* ---- public API ----------------------------------------------------------- */

jj_redis_sub *jj_redis_sub_new(struct ev_loop *loop, const jj_redis_config *cfg,
                               const char *channel, jj_redis_sub_msg_cb *on_message,
                               jj_redis_sub_state_cb *on_state, void *ud) {
    if (loop == NULL || cfg == NULL || channel == NULL || channel[0] == '\0' || on_message == NULL)
        return NULL;
    jj_redis_sub *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->on_message = on_message;
    s->on_state = on_state;
    s->ud = ud;
    s->channel = strdup(channel);
    const char *kind = cfg->kind ? cfg->kind : "redis subscriber";
    if (jj_endpoint_init(&s->ep, cfg, kind, s) != 0 || s->channel == NULL) {
        jj_endpoint_free(&s->ep);
        free(s->channel);
        free(s);
        return NULL;
    }
    ev_init(&s->retry, retry_cb);
    ev_init(&s->deadline, deadline_cb);
    ev_init(&s->tick, tick_cb);
    s->retry.data = s->deadline.data = s->tick.data = s;
    if (!cfg->defer_connect)
        start_connect(s);
    return s;
}

int jj_redis_sub_set_address(jj_redis_sub *s, const char *host, int port) {
    if (s == NULL || s->closing || host == NULL || !host[0] || port <= 0 || port > 65535)
        return -1;
    if (jj_endpoint_set_address(&s->ep, host, port) != 0)
        return -1;
    ev_timer_stop(s->loop, &s->retry);
    free_context(s);
    if (s->up) {
        s->up = 0;
        notify(s, 0);
    }
    if (maybe_destroy(s))
        return 0;
    start_connect(s);
    return 0;
}

void jj_redis_sub_free(jj_redis_sub *s) {
    if (s == NULL || s->closing)
        return;
    s->closing = 1;
    s->up = 0;
    ev_timer_stop(s->loop, &s->retry);
    free_context(s);
    maybe_destroy(s);
}

int jj_redis_sub_up(const jj_redis_sub *s) {
    return s != NULL && s->up && !s->closing;
}
