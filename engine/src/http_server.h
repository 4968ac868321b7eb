/* http_server.h: HTTP/1.1 connections on a libev loop.
 *
 * The server owns sockets and buffers; what to answer is decided by a
 * handler callback. Requests on one connection are handled one at a time, in
 * order: pipelined requests wait in the input buffer, so responses always
 * leave in request order. Limits (head size, body size, slow heads, idle
 * keep-alive, connection cap) are answered here, with JSON error bodies.
 */
#ifndef JJ_HTTP_SERVER_H
#define JJ_HTTP_SERVER_H

#include "config.h"
#include "http_parser.h"

struct ev_loop;
typedef struct jj_http_server jj_http_server;
typedef struct jj_http_conn jj_http_conn;

/* A complete request. Everything here (and req's pointers) is valid only
 * during the handler call: a handler that answers later copies what it
 * needs. */
typedef struct jj_http_exchange {
    const jj_http_request *req;
    const char *body;
    size_t body_len;
    const char *peer;        /* client IP address */
    const char *request_id;  /* also sent back as X-Request-Id */
} jj_http_exchange;

/* Must lead to exactly one jj_http_response_finish on c, now or later. */
typedef void jj_http_handler(void *ud, jj_http_conn *c, const jj_http_exchange *x);

/* Creates a listening socket with SO_REUSEPORT (so each worker can bind its
 * own). Returns the fd, or -1 with a message in err. */
int jj_http_listen(const char *host, int port, char *err, size_t errlen);

jj_http_server *jj_http_server_new(struct ev_loop *loop, const jj_config *cfg, int listen_fd,
                                   jj_http_handler *handler, void *ud);
/* Stops accepting and closes the listener; idle connections close now, busy
 * ones after their current response. drained(ud) runs once no connection is
 * left (possibly before this returns). */
void jj_http_server_drain(jj_http_server *s, void (*drained)(void *), void *ud);
void jj_http_server_free(jj_http_server *s);
long jj_http_server_connections(const jj_http_server *s);

/* 0 when the client went away while its request was being handled (the
 * connection still needs its jj_http_response_finish, which frees it). */
int jj_http_conn_alive(const jj_http_conn *c);

/* dst <- s as JSON string content (quotes, backslashes and control
 * characters escaped), truncated to fit cap bytes with its NUL. */
void jj_json_escape(char *dst, size_t cap, const char *s);

/* Building the response to the request being handled on c. */
void jj_http_response_start(jj_http_conn *c, int status);
/* Returns -1 (and adds nothing) if the name is not a token or the value
 * holds CR, LF or NUL: a handler must not be able to split a response. */
int jj_http_response_header(jj_http_conn *c, const char *name, size_t nlen,
                            const char *value, size_t vlen);
/* Adds Content-Length/Connection/X-Request-Id, the body (omitted for HEAD
 * and 1xx/204/304), and sends. */
void jj_http_response_finish(jj_http_conn *c, const char *body, size_t len);
/* The route the request matched (jj_http_stats_route id), for the request
 * metrics and the access log; JJ_ROUTE_UNMATCHED until set. */
void jj_http_set_route(jj_http_conn *c, int route_id);
/* Discards a response started but not finished. */
void jj_http_response_discard(jj_http_conn *c);
/* Convenience: a complete JSON error response {"success":false,...}. */
void jj_http_respond_error(jj_http_conn *c, int status, const char *error, const char *message);

#endif
