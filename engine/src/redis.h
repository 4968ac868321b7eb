/* redis.h: the engine's Redis client. The only files that include hiredis
 * are redis.c and redis_sub.c (through redis_internal.h); everything else
 * sees these opaque types, so the transport can change without touching
 * callers.
 *
 * One pipelined command connection per worker on the worker's libev loop,
 * plus one pub/sub subscriber connection (jj_redis_sub, below).
 * The client connects (AUTH, SELECT, SCRIPT LOAD of registered scripts) and
 * reconnects by itself with capped, jittered backoff. While it is not ready,
 * jj_redis_command fails at once: there is no unbounded queue.
 *
 * Sentinel mode (redis_sentinel.h) is built on this API alone: clients
 * created with defer_connect, re-pointed with jj_redis_set_address, and
 * watched with jj_redis_on_state; it includes no hiredis header.
 */
#ifndef JJ_REDIS_H
#define JJ_REDIS_H

#include <stddef.h>
#include <stdint.h>

struct ev_loop;
typedef struct jj_redis jj_redis;
/* A view of one reply, valid only during the callback it is passed to. */
typedef struct jj_redis_reply jj_redis_reply;

enum jj_reply_type {
    JJ_REPLY_STRING = 1,
    JJ_REPLY_ARRAY,
    JJ_REPLY_INTEGER,
    JJ_REPLY_NIL,
    JJ_REPLY_STATUS,
    JJ_REPLY_ERROR
};

typedef struct jj_redis_config {
    const char *host;          /* copied */
    int port;
    const char *user;          /* NULL: AUTH password only (copied) */
    const char *password;      /* NULL: no AUTH (copied) */
    int db;                    /* SELECT when > 0 */
    const char *prefix;        /* key prefix, e.g. "jj:" (copied) */
    double connect_timeout_ms; /* default 1000 */
    double command_timeout_ms; /* a command unanswered this long stalls the connection: new
                                  commands fail at once ("redis unavailable") until a reply
                                  comes, instead of queueing behind it; default connect_timeout_ms */
    int max_pending;           /* commands in flight before "redis overloaded"; default 10000 */
    int defer_connect;         /* do not connect until an address is set (Sentinel mode:
                                  jj_redis_set_address / jj_redis_sub_set_address) */
    int require_master;        /* the handshake sends ROLE and refuses a replica */
    const char *kind;          /* for logs, e.g. "redis sentinel"; NULL: "redis" (the
                                  data client). Not the data client: "up" logs at debug */
} jj_redis_config;

typedef struct jj_redis_status {
    int up;                  /* connected and ready for commands */
    double latency_ms;       /* last PING round trip, -1 if unknown */
    uint64_t reconnects;     /* successful connections after the first */
    uint64_t script_reloads; /* NOSCRIPT recoveries */
    const char *last_error;  /* "" if none; owned by the client */
    const char *address;     /* "host:port" it connects to, "" while none is known */
    /* Sentinel mode (redis_sentinel.h), else sentinel_master is NULL */
    const char *sentinel_master;
    const char *sentinel_error;   /* "" if none */
    double last_switch;           /* unix time of the last master switch, 0 if none */
    uint64_t switches;
} jj_redis_status;

/* Called exactly once per accepted command: reply != NULL on a reply (which
 * may be an error reply), reply == NULL with err set when the connection was
 * lost or the client freed before a reply arrived. */
typedef void jj_redis_cb(const jj_redis_reply *reply, const char *err, void *privdata);

jj_redis *jj_redis_new(struct ev_loop *loop, const jj_redis_config *cfg);
/* Fails every pending callback with "redis closed", then frees. */
void jj_redis_free(jj_redis *r);

/* Returns 0 when queued (cb will run exactly once), -1 when Redis is not
 * ready or too many commands are pending (cb is never called); *err then
 * says "redis unavailable" or "redis overloaded". argv/argvlen are copied. */
int jj_redis_command(jj_redis *r, int argc, const char **argv, const size_t *argvlen,
                     jj_redis_cb *cb, void *privdata, const char **err);

/* Registers a script (idempotent); it is SCRIPT LOADed on every connect.
 * Writes its 40-hex SHA1 plus NUL into sha. Returns 0, or -1 on bad input. */
int jj_redis_script(jj_redis *r, const char *src, size_t len, char sha[41]);

/* EVALSHA sha numkeys argv...; on NOSCRIPT the script is loaded again and
 * the call retried once, transparently. Same contract as jj_redis_command. */
int jj_redis_evalsha(jj_redis *r, const char sha[41], int numkeys, int argc,
                     const char **argv, const size_t *argvlen,
                     jj_redis_cb *cb, void *privdata, const char **err);

/* Why a command may not be sent on the shared connection (KEYS, SUBSCRIBE,
 * SELECT, ...), or NULL. in_pipeline: MULTI/EXEC/DISCARD are allowed as
 * part of a pipeline. The one list every caller uses. */
const char *jj_redis_refused(int argc, const char **argv, const size_t *argvlen, int in_pipeline);

/* Called when the client becomes ready (up = 1) and whenever a connection
 * or a connection attempt fails (up = 0; the client retries by itself).
 * It may run inside the client's own callbacks: it must not free the
 * client or change its address (defer that to a timer); sending a command
 * is allowed. NULL removes it. */
typedef void jj_redis_state_cb(int up, void *ud);
void jj_redis_on_state(jj_redis *r, jj_redis_state_cb *cb, void *ud);

/* Points the client at another server (Sentinel: the new master). The
 * current connection, if any, is dropped: its pending callbacks run once
 * with "redis connection lost"; the new address is tried at once. Not from
 * inside this client's own callbacks. Returns 0, or -1 on bad input. */
int jj_redis_set_address(jj_redis *r, const char *host, int port);
/* Records an error for the status (e.g. discovery failing while no address
 * is known). */
void jj_redis_note_error(jj_redis *r, const char *msg);
/* Sentinel facts shown by jj_redis_get_status (master NULL: not Sentinel). */
void jj_redis_set_sentinel_info(jj_redis *r, const char *master, const char *error,
                                double last_switch, uint64_t switches);

const char *jj_redis_prefix(const jj_redis *r);
void jj_redis_get_status(const jj_redis *r, jj_redis_status *st);

/* ---- pub/sub subscriber -------------------------------------------------- *
 * A separate connection, subscribed to one channel. It connects (AUTH as
 * the command connection does; no SELECT: pub/sub ignores databases),
 * SUBSCRIBEs, and reconnects with the same capped, jittered backoff when
 * the connection is lost, fails its handshake or stops answering (a
 * heartbeat re-SUBSCRIBE every second; no reply for 3 s drops it). */
typedef struct jj_redis_sub jj_redis_sub;
/* One message published on the channel; payload is valid only during the
 * call. */
typedef void jj_redis_sub_msg_cb(const char *payload, size_t len, void *ud);
/* up = 1 once SUBSCRIBE is confirmed on a new connection, 0 when that
 * connection goes away. Called on changes only, never from
 * jj_redis_sub_free. */
typedef void jj_redis_sub_state_cb(int up, void *ud);

/* cfg->db, prefix and max_pending are ignored. on_state may be NULL.
 * Returns NULL on bad arguments or out of memory. Either callback may call
 * jj_redis_sub_free. */
jj_redis_sub *jj_redis_sub_new(struct ev_loop *loop, const jj_redis_config *cfg,
                               const char *channel, jj_redis_sub_msg_cb *on_message,
                               jj_redis_sub_state_cb *on_state, void *ud);
void jj_redis_sub_free(jj_redis_sub *s);
int jj_redis_sub_up(const jj_redis_sub *s);
/* As jj_redis_set_address; the subscriber reconnects and re-SUBSCRIBEs
 * (on_state reports the down and the up). */
int jj_redis_sub_set_address(jj_redis_sub *s, const char *host, int port);

/* Reply accessors. */
int jj_reply_type(const jj_redis_reply *r);
const char *jj_reply_str(const jj_redis_reply *r, size_t *len); /* STRING, STATUS, ERROR */
long long jj_reply_integer(const jj_redis_reply *r);
size_t jj_reply_elements(const jj_redis_reply *r);
const jj_redis_reply *jj_reply_element(const jj_redis_reply *r, size_t i);

#endif
