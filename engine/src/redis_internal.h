/* redis_internal.h: what the two hiredis-based connection kinds share:
 * the command connection (redis.c) and the pub/sub subscriber
 * (redis_sub.c). Only those two files include this header, and so hiredis;
 * everything else sees redis.h.
 *
 * An endpoint is where to connect and how to authenticate, plus the
 * reconnect backoff and the last error. The helpers are defined in redis.c.
 */
#ifndef JJ_REDIS_INTERNAL_H
#define JJ_REDIS_INTERNAL_H

#include "redis.h"

#include <ev.h>
#include <hiredis/hiredis.h>
#include <hiredis/async.h>

#include <stdint.h>

/* Reconnect backoff: uniform in [d/2, d], d doubling from MIN to MAX. */
#define JJ_REDIS_BACKOFF_MIN_MS 25.0
#define JJ_REDIS_BACKOFF_MAX_MS 500.0

typedef struct jj_redis_endpoint {
    const char *kind;              /* "redis" or "redis subscriber", for logs */
    char *host, *user, *password;  /* owned copies; user, password may be NULL */
    char addr[64];                 /* host resolved once at init ("" if it failed) */
    int port;
    double connect_timeout_s;
    double backoff_ms;             /* next reconnect delay bound */
    uint64_t rng;
    char last_error[256];
} jj_redis_endpoint;

/* Copies host, port, user, password and the connect timeout from cfg.
 * salt varies the jitter between clients. Returns 0, or -1 on out of
 * memory (call jj_endpoint_free anyway). */
int jj_endpoint_init(jj_redis_endpoint *ep, const jj_redis_config *cfg, const char *kind,
                     const void *salt);
void jj_endpoint_free(jj_redis_endpoint *ep);
/* Changes host and port (resolved as at init). Returns 0, -1 on out of
 * memory (the old address is kept). */
int jj_endpoint_set_address(jj_redis_endpoint *ep, const char *host, int port);

/* Records an error; logs it (warn) only when it differs from the last. */
void jj_endpoint_error(jj_redis_endpoint *ep, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* The next reconnect delay in seconds; grows the backoff. Reset it with
 * ep->backoff_ms = JJ_REDIS_BACKOFF_MIN_MS once connected. */
double jj_endpoint_next_delay(jj_redis_endpoint *ep);

/* Fills the AUTH command; returns its argc, 0 when no password is set. */
int jj_endpoint_auth_argv(const jj_redis_endpoint *ep, const char *argv[3]);

/* Starts a non-blocking connect on loop with data as ac->data and the two
 * callbacks set. Returns NULL (error recorded) when it cannot even start. */
redisAsyncContext *jj_endpoint_connect(jj_redis_endpoint *ep, struct ev_loop *loop, void *data,
                                       redisConnectCallback *on_connect,
                                       redisDisconnectCallback *on_disconnect);

/* (Re)starts a one-shot timer. */
static inline void jj_timer_rearm(struct ev_loop *loop, ev_timer *t, double after) {
    ev_timer_stop(loop, t);
    ev_timer_set(t, after, 0.);
    ev_timer_start(loop, t);
}

#endif
