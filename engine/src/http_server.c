/* http_server.c: connections, buffers, limits and timeouts (http_server.h). */
#include "http_server.h"
#include "http_chunked.h"
#include "http_stats.h"
#include "log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define MAX_HEAD (16 * 1024)
#define READ_CHUNK 16384
#define OUT_HIGH_WATER (256 * 1024)  /* stop handling pipelined requests above this */
#define LINGER_S 2.0

enum state {
    S_HEAD,     /* waiting for (the rest of) a request head */
    S_BODY,     /* head parsed, waiting for body bytes (Content-Length or chunked) */
    S_BUSY,     /* handler running */
    S_CLOSING,  /* flushing the last response, then close */
    S_LINGER    /* response sent, write side shut, discarding input */
};

struct jj_http_conn {
    jj_http_server *srv;
    int fd;
    int state;
    ev_io rio, wio;
    ev_timer timer;
    char *in;
    size_t in_len, in_off, in_cap;   /* unparsed bytes: in[in_off .. in_len) */
    char *out;
    size_t out_len, out_off, out_cap;
    jj_http_request req;
    size_t req_total;                /* head + body bytes of the current request */
    jj_http_chunked chunk;           /* a chunked body's decoder (req.chunked) */
    int keep_alive;
    int head_only;                   /* HEAD request: no body in the response */
    size_t resp_mark;                /* out_len when the response started */
    int in_process;                  /* inside process(): finish must not recurse */
    int partial;                     /* part of a head has arrived: its deadline runs */
    int dead;                        /* socket closed while a handler owns the struct */
    unsigned long served;            /* responses sent on this connection */
    int over_cap;                    /* accepted past MAX_CONNECTIONS: answer 503 */
    char peer[INET6_ADDRSTRLEN];
    char request_id[24];
    /* per-response accounting (http_stats.h), reset for every request */
    int status;                      /* of the response being built */
    int route_id;                    /* jj_http_set_route; JJ_ROUTE_UNMATCHED */
    int method_id;
    double t_start;                  /* ev_now when the request was complete enough to answer */
    size_t path_off, path_len;       /* the path in in[in_off ..], 0 bytes if unparsed */
    unsigned char xcache_len;        /* X-Cache response header value (access log) */
    char xcache[23];
    int access_log;                  /* cfg->access_log (a dead connection's server may be gone) */
    unsigned char method_len;        /* a method outside the standard ones, copied */
    char method[15];
    jj_http_conn *prev, *next;
};

struct jj_http_server {
    struct ev_loop *loop;
    const jj_config *cfg;
    int listen_fd;
    ev_io accept_io;
    jj_http_handler *handler;
    void *ud;
    jj_http_conn *conns;
    long nconns;
    int draining;
    void (*drained)(void *);
    void *drained_ud;
    uint32_t id_prefix;
    uint64_t id_counter;
    char date[80];         /* "Date: <IMF-fixdate>\r\nServer: jollyjet\r\n" */
    size_t date_len;
    ev_tstamp date_at;
};

static void conn_close(jj_http_conn *c);
static void process(jj_http_conn *c);
static void flush(jj_http_conn *c);
static void next_request_id(jj_http_conn *c);

/* ------------------------------------------------------------ listening */

int jj_http_listen(const char *host, int port, char *err, size_t errlen) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "HOST: cannot resolve \"%s\": %s", host, gai_strerror(rc));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
    if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        snprintf(err, errlen, "PORT: cannot listen on %s:%d: %s", host, port, strerror(errno));
        close(fd);
        freeaddrinfo(res);
        return -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* -------------------------------------------------------------- buffers */

static int reserve(char **buf, size_t *cap, size_t need) {
    if (need <= *cap) return 0;
    size_t n = *cap ? *cap : 4096;
    while (n < need) n *= 2;
    char *p = realloc(*buf, n);
    if (!p) return -1;
    *buf = p;
    *cap = n;
    return 0;
}

static void out_append(jj_http_conn *c, const char *p, size_t n) {
    if (c->dead) return;   /* nobody to send it to */
    if (reserve(&c->out, &c->out_cap, c->out_len + n) != 0) {
        c->state = S_CLOSING;   /* out of memory: give up on this client */
        return;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

static void out_printf(jj_http_conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(jj_http_conn *c, const char *fmt, ...) {
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0) out_append(c, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* The Date and Server header lines, remade once a second. */
static const char *date_lines(jj_http_server *s, size_t *len) {
    ev_tstamp now = ev_now(s->loop);
    if ((time_t)now != (time_t)s->date_at || !s->date_len) {
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        size_t n = strftime(s->date, sizeof s->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
        static const char server[] = "Server: jollyjet\r\n";
        memcpy(s->date + n, server, sizeof server - 1);
        s->date_len = n + sizeof server - 1;
        s->date_at = now;
    }
    *len = s->date_len;
    return s->date;
}

/* dst <- the decimal digits of v; returns their count (at most 20). */
static size_t utoa(char *dst, uint64_t v) {
    char tmp[20];
    size_t n = 0;
    do { tmp[n++] = (char)('0' + v % 10); v /= 10; } while (v);
    for (size_t i = 0; i < n; i++) dst[i] = tmp[n - 1 - i];
    return n;
}

/* ----------------------------------------------------------- accounting */

/* A new request on c: nothing known about it yet. */
static void begin_request(jj_http_conn *c) {
    c->route_id = JJ_ROUTE_UNMATCHED;
    c->method_id = JJ_METHOD_OTHER;
    c->path_off = c->path_len = 0;
    c->xcache_len = 0;
    c->t_start = ev_now(c->srv->loop);
}

/* The request head parsed: its method and where its path is. */
static void request_parsed(jj_http_conn *c) {
    c->method_id = jj_http_stats_method(c->req.method, c->req.method_len);
    if (c->method_id == JJ_METHOD_OTHER) {   /* the buffer may move before the response: copy */
        c->method_len = (unsigned char)(c->req.method_len < sizeof c->method ? c->req.method_len : sizeof c->method);
        memcpy(c->method, c->req.method, c->method_len);
    }
    c->path_off = (size_t)(c->req.path - (c->in + c->in_off));
    c->path_len = c->req.path_len;
}

void jj_http_set_route(jj_http_conn *c, int route_id) { c->route_id = route_id; }

/* Once per response: the request metrics and the access log line. */
static void account(jj_http_conn *c, int status, size_t body_bytes) {
    double ms = (ev_time() - c->t_start) * 1000.0;
    jj_http_stats_record(c->route_id, c->method_id, status, ms);
    if (!c->access_log) return;
    jj_access_entry e = {
        .request_id = c->request_id,
        .method = c->method_id == JJ_METHOD_OTHER && c->path_len ? c->method
                                                                  : jj_http_stats_method_name(c->method_id),
        .path = c->path_len && c->in ? c->in + c->in_off + c->path_off : "",
        .path_len = c->in ? c->path_len : 0,
        .route = jj_http_stats_route_label(c->route_id),
        .status = status,
        .duration_ms = ms,
        .bytes = body_bytes,
        .cache = c->xcache_len ? c->xcache : NULL,
        .cache_len = c->xcache_len,
        .remote = c->peer,
    };
    e.method_len = e.method == c->method ? c->method_len : strlen(e.method);
    jj_access_log(&e);
}

/* --------------------------------------------------------------- timers */

static void arm_timer(jj_http_conn *c, double after) {
    ev_timer_stop(c->srv->loop, &c->timer);
    if (after > 0) {
        ev_timer_set(&c->timer, after, 0.);
        ev_timer_start(c->srv->loop, &c->timer);
    }
}

static void on_timer(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop; (void)revents;
    jj_http_conn *c = w->data;
    switch (c->state) {
    case S_HEAD:
        if (c->in_len == c->in_off && c->served > 0) {
            conn_close(c);   /* idle keep-alive connection */
            return;
        }
        c->keep_alive = 0;
        c->state = S_BUSY;
        next_request_id(c);
        begin_request(c);
        jj_http_respond_error(c, 408, "request_timeout", "the request head did not arrive in time");
        return;
    case S_BODY:
        c->keep_alive = 0;
        c->state = S_BUSY;
        jj_http_respond_error(c, 408, "request_timeout", "the request did not arrive in time");
        return;
    default:
        conn_close(c);       /* a stuck flush or the lingering close ran out */
    }
}

/* ------------------------------------------------------------- response */

int jj_http_conn_alive(const jj_http_conn *c) { return !c->dead; }

void jj_http_response_start(jj_http_conn *c, int status) {
    if (c->dead) return;
    c->status = status;
    c->xcache_len = 0;
    c->resp_mark = c->out_len;
    /* "HTTP/1.1 NNN Reason\r\n" + the Date and Server lines, one append */
    char line[160];
    const char *text = jj_http_status_text(status);
    size_t tlen = strlen(text), dlen;
    const char *date = date_lines(c->srv, &dlen);
    if (status < 100 || status > 999 || tlen > 40) {   /* not from this server; be safe */
        out_printf(c, "HTTP/1.1 %d %s\r\n", status, text);
        out_append(c, date, dlen);
        return;
    }
    memcpy(line, "HTTP/1.1 ", 9);
    line[9] = (char)('0' + status / 100);
    line[10] = (char)('0' + status / 10 % 10);
    line[11] = (char)('0' + status % 10);
    line[12] = ' ';
    memcpy(line + 13, text, tlen);
    memcpy(line + 13 + tlen, "\r\n", 2);
    memcpy(line + 15 + tlen, date, dlen);
    out_append(c, line, 15 + tlen + dlen);
}

int jj_http_response_header(jj_http_conn *c, const char *name, size_t nlen,
                            const char *value, size_t vlen) {
    if (nlen == 0) return -1;
    if (c->dead) return 0;
    if (!jj_http_header_ok(name, nlen, value, vlen)) return -1;
    /* The server owns framing headers. */
    if (jj_http_is_framing_header(name, nlen)) return 0;
    if (nlen == 7 && strncasecmp(name, "x-cache", 7) == 0) {   /* for the access log */
        c->xcache_len = (unsigned char)(vlen < sizeof c->xcache - 1 ? vlen : sizeof c->xcache - 1);
        memcpy(c->xcache, value, c->xcache_len);
        c->xcache[c->xcache_len] = 0;
    }
    if (reserve(&c->out, &c->out_cap, c->out_len + nlen + vlen + 4) != 0) {
        c->state = S_CLOSING;   /* out of memory: give up on this client */
        return 0;
    }
    char *o = c->out + c->out_len;
    memcpy(o, name, nlen);
    o[nlen] = ':';
    o[nlen + 1] = ' ';
    memcpy(o + nlen + 2, value, vlen);
    o[nlen + 2 + vlen] = '\r';
    o[nlen + 3 + vlen] = '\n';
    c->out_len += nlen + vlen + 4;
    return 0;
}

void jj_http_response_discard(jj_http_conn *c) { if (!c->dead) c->out_len = c->resp_mark; }

void jj_http_response_finish(jj_http_conn *c, const char *body, size_t len) {
    if (c->dead) {   /* the client left while we worked: 499, as nginx logs it */
        account(c, 499, 0);
        free(c->in);
        free(c->out);   /* jj_http_respond_error may have appended to it */
        free(c);
        return;
    }
    int status = c->status;
    int no_body = c->head_only || status == 204 || status == 304 || status < 200;
    account(c, status, no_body ? 0 : len);
    if (c->srv->draining) c->keep_alive = 0;
    /* The framing lines, then the body: one buffer, sent with one write
     * (flush) together with whatever else this loop turn answered. */
    char tail[128];
    size_t n = 0;
    if (status != 204 && status != 304 && status >= 200) {
        memcpy(tail, "Content-Length: ", 16);
        n = 16 + utoa(tail + 16, len);
        tail[n++] = '\r';
        tail[n++] = '\n';
    }
    if (!c->keep_alive) { memcpy(tail + n, "Connection: close\r\n", 19); n += 19; }
    else if (c->req.minor_version == 0) { memcpy(tail + n, "Connection: keep-alive\r\n", 24); n += 24; }
    size_t idlen = strnlen(c->request_id, sizeof c->request_id - 1);
    memcpy(tail + n, "X-Request-Id: ", 14);
    memcpy(tail + n + 14, c->request_id, idlen);
    n += 14 + idlen;
    memcpy(tail + n, "\r\n\r\n", 4);
    n += 4;
    size_t blen = !no_body ? len : 0;
    if (!c->dead && reserve(&c->out, &c->out_cap, c->out_len + n + blen) != 0) c->state = S_CLOSING;
    else {
        out_append(c, tail, n);
        if (blen) out_append(c, body, blen);
    }

    /* The request is done: drop its bytes, go back to reading. */
    c->in_off += c->req_total;
    c->req_total = 0;
    c->served++;
    if (c->state == S_CLOSING) { /* out of memory while building */ }
    else if (!c->keep_alive) c->state = S_CLOSING;
    else c->state = S_HEAD;
    if (!c->in_process) {
        flush(c);
        if (c->fd >= 0 && c->state == S_HEAD) process(c);
    }
}

void jj_json_escape(char *dst, size_t cap, const char *s) {
    size_t o = 0;
    for (; *s && o + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\') { dst[o++] = '\\'; dst[o++] = (char)ch; }
        else if (ch < 0x20) o += (size_t)snprintf(dst + o, cap - o, "\\u%04x", ch);
        else dst[o++] = (char)ch;
    }
    dst[o] = 0;
}

void jj_http_respond_error(jj_http_conn *c, int status, const char *error, const char *message) {
    char msg[512], body[768];
    jj_json_escape(msg, sizeof msg, message);
    int n = snprintf(body, sizeof body,
                     "{\"success\":false,\"error\":\"%s\",\"message\":\"%s\",\"requestId\":\"%s\"}",
                     error, msg, c->request_id);
    jj_http_response_start(c, status);
    out_append(c, "Content-Type: application/json\r\n", 32);
    jj_http_response_finish(c, body, (size_t)n);
}

/* --------------------------------------------------------------- output */

static void start_linger(jj_http_conn *c) {
    /* Closing with unread input makes the kernel send RST, which can destroy
     * the error response before the client reads it: shut the write side
     * and drain input for a moment instead. */
    shutdown(c->fd, SHUT_WR);
    c->state = S_LINGER;
    ev_io_stop(c->srv->loop, &c->wio);
    ev_io_start(c->srv->loop, &c->rio);
    arm_timer(c, LINGER_S);
}

static void flush(jj_http_conn *c) {
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n > 0) { c->out_off += (size_t)n; continue; }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            ev_io_start(c->srv->loop, &c->wio);
            if (c->state == S_CLOSING) arm_timer(c, 30.);
            return;
        }
        conn_close(c);   /* peer gone */
        return;
    }
    c->out_off = c->out_len = 0;
    ev_io_stop(c->srv->loop, &c->wio);
    if (c->state == S_CLOSING) start_linger(c);
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop; (void)revents;
    jj_http_conn *c = w->data;
    flush(c);
    if (c->fd >= 0 && c->state == S_HEAD && c->out_len == 0) process(c);
}

/* ---------------------------------------------------------------- input */

static void next_request_id(jj_http_conn *c) {
    jj_http_server *s = c->srv;
    static const char hex[] = "0123456789abcdef";
    uint64_t v = (uint64_t)s->id_prefix << 32 | (++s->id_counter & 0xffffffffu);
    for (int i = 15; i >= 0; i--, v >>= 4) c->request_id[i] = hex[v & 15];   /* "%08x%08x" */
    c->request_id[16] = 0;
}

static void dispatch(jj_http_conn *c) {
    jj_http_exchange x = {
        .req = &c->req,
        .body = c->in + c->in_off + c->req.head_len,
        .body_len = c->req_total - c->req.head_len,
        .peer = c->peer,
        .request_id = c->request_id,
    };
    c->state = S_BUSY;
    arm_timer(c, 0);
    ev_io_stop(c->srv->loop, &c->rio);
    c->srv->handler(c->srv->ud, c, &x);
}

/* The head is in and its body is not, yet: answer an Expect: 100-continue,
 * then wait for the body within the head timeout. */
static void await_body(jj_http_conn *c) {
    if (c->req.expect_continue)
        out_append(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    c->state = S_BODY;
    arm_timer(c, c->srv->cfg->header_timeout_s);
}

/* A chunked body: decodes what has arrived, in place, so the buffer holds
 * the head, the decoded body and nothing of its framing. 1 when the body is
 * complete (req_total then covers head + decoded body, and the next request
 * follows), 0 when more is needed, -1 when an error response went out. */
static int chunked_body(jj_http_conn *c) {
    size_t at = c->in_off + c->req.head_len, len = c->in_len - at;
    int status = 0;
    const char *reason = NULL;
    int rc = jj_http_chunked_decode(&c->chunk, c->in + at, &len, c->srv->cfg->max_body, MAX_HEAD,
                                    &status, &reason);
    c->in_len = at + len;
    if (rc == JJ_HTTP_INCOMPLETE) return 0;
    if (rc == JJ_HTTP_OK) {
        c->req_total = c->req.head_len + c->chunk.out;
        return 1;
    }
    c->keep_alive = 0;
    c->state = S_BUSY;
    if (status == 413) {
        char msg[96];
        snprintf(msg, sizeof msg, "request body exceeds %zu bytes", c->srv->cfg->max_body);
        jj_http_respond_error(c, 413, "payload_too_large", msg);
    } else {
        jj_http_respond_error(c, status, status == 431 ? "request_header_too_large" : "bad_request", reason);
    }
    return -1;
}

/* Handles every complete request in the input buffer, in order, one at a
 * time; returns when a handler is still running, more bytes are needed, or
 * the connection is closing. */
static void process(jj_http_conn *c) {
    c->in_process = 1;
    while (c->fd >= 0 && (c->state == S_HEAD || c->state == S_BODY)) {
        if (c->out_len - c->out_off > OUT_HIGH_WATER) break;  /* slow reader */
        size_t avail = c->in_len - c->in_off;
        if (c->state == S_HEAD) {
            if (avail == 0) {
                if (c->in_off) c->in_off = c->in_len = 0;
                c->partial = 0;
                arm_timer(c, c->served ? c->srv->cfg->keepalive_timeout_s
                                       : c->srv->cfg->header_timeout_s);
                break;
            }
            int status = 0;
            const char *reason = NULL;
            int rc = jj_http_parse_request(c->in + c->in_off, avail, MAX_HEAD, &c->req, &status, &reason);
            if (rc == JJ_HTTP_INCOMPLETE) {
                /* The head deadline runs from its first byte and is not
                 * extended by trickling bytes (slowloris). */
                if (!c->partial) {
                    c->partial = 1;
                    arm_timer(c, c->srv->cfg->header_timeout_s);
                }
                break;
            }
            next_request_id(c);
            begin_request(c);
            c->partial = 0;
            c->head_only = 0;
            if (rc == JJ_HTTP_ERROR) {
                c->keep_alive = 0;
                c->req.minor_version = 1;
                c->state = S_BUSY;
                const char *err = status == 431 ? "request_header_too_large"
                                : status == 501 ? "not_implemented"
                                : status == 505 ? "http_version_not_supported" : "bad_request";
                jj_http_respond_error(c, status, err, reason ? reason : "malformed request");
                break;
            }
            request_parsed(c);
            if (c->over_cap) {
                c->keep_alive = 0;
                c->state = S_BUSY;
                jj_http_respond_error(c, 503, "too_many_connections", "connection limit reached");
                break;
            }
            c->keep_alive = c->req.keep_alive;
            c->head_only = c->req.method_len == 4 && memcmp(c->req.method, "HEAD", 4) == 0;
            if (c->req.chunked) {
                jj_http_chunked_init(&c->chunk);
                int done = chunked_body(c);
                if (done < 0) break;
                if (done == 0) {
                    await_body(c);
                    break;
                }
                dispatch(c);
                continue;
            }
            size_t body = c->req.content_length > 0 ? (size_t)c->req.content_length : 0;
            if (c->req.content_length > 0 && (uint64_t)c->req.content_length > c->srv->cfg->max_body) {
                c->keep_alive = 0;
                c->state = S_BUSY;
                char msg[96];
                snprintf(msg, sizeof msg, "request body exceeds %zu bytes", c->srv->cfg->max_body);
                jj_http_respond_error(c, 413, "payload_too_large", msg);
                break;
            }
            c->req_total = c->req.head_len + body;
            if (avail < c->req_total) {
                await_body(c);
                break;
            }
            dispatch(c);
        } else {   /* S_BODY */
            if (c->req.chunked) {
                if (chunked_body(c) <= 0) break;
            } else if (avail < c->req_total) {
                break;
            }
            /* The parser's pointers refer to the buffer, which may have
             * moved while the body arrived: parse the head again. */
            int status;
            const char *reason;
            jj_http_parse_request(c->in + c->in_off, c->in_len - c->in_off, MAX_HEAD, &c->req, &status, &reason);
            dispatch(c);
        }
    }
    c->in_process = 0;
    if (c->fd < 0) return;
    if (c->out_len > c->out_off) flush(c);
    if (c->fd < 0) return;
    if ((c->state == S_HEAD || c->state == S_BODY) && c->out_len - c->out_off <= OUT_HIGH_WATER)
        ev_io_start(c->srv->loop, &c->rio);
    /* A request that finished inside the loop may have left the next one
     * waiting behind the high-water mark; the write callback resumes it. */
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents) {
    (void)loop; (void)revents;
    jj_http_conn *c = w->data;
    if (c->state == S_LINGER) {
        char junk[4096];
        ssize_t n = read(c->fd, junk, sizeof junk);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) conn_close(c);
        return;
    }
    size_t limit = MAX_HEAD + c->srv->cfg->max_body + READ_CHUNK;
    if (c->in_off > 0 && c->in_off == c->in_len) c->in_off = c->in_len = 0;
    if (c->in_off > 0 && c->in_cap - c->in_len < READ_CHUNK) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
    if (c->in_len - c->in_off >= limit) { ev_io_stop(loop, w); return; }
    if (reserve(&c->in, &c->in_cap, c->in_len + READ_CHUNK) != 0) { conn_close(c); return; }
    ssize_t n = read(c->fd, c->in + c->in_len, c->in_cap - c->in_len);
    if (n == 0) { conn_close(c); return; }
    if (n < 0) {
        if (errno != EAGAIN && errno != EINTR) conn_close(c);
        return;
    }
    c->in_len += (size_t)n;
    if (c->state == S_HEAD || c->state == S_BODY) process(c);
}

/* ---------------------------------------------------------- connections */

static void conn_close(jj_http_conn *c) {
    jj_http_server *s = c->srv;
    if (c->fd < 0) return;
    ev_io_stop(s->loop, &c->rio);
    ev_io_stop(s->loop, &c->wio);
    ev_timer_stop(s->loop, &c->timer);
    close(c->fd);
    c->fd = -1;
    if (c->prev) c->prev->next = c->next; else s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->nconns--;
    free(c->out);
    c->out = NULL;
    c->out_len = c->out_off = c->out_cap = 0;
    /* A handler still owns a busy connection: the struct (and the request
     * bytes, for the access log) live until its response arrives
     * (jj_http_response_finish frees them). */
    if (c->state == S_BUSY) {
        c->dead = 1;
    } else {
        free(c->in);
        free(c);
    }
    if (s->draining && s->nconns == 0 && s->drained) {
        void (*cb)(void *) = s->drained;
        s->drained = NULL;
        cb(s->drained_ud);
    }
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents) {
    (void)revents;
    jj_http_server *s = w->data;
    for (int i = 0; i < 64; i++) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(s->listen_fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            if (errno == EMFILE || errno == ENFILE)
                JJ_WARN("accept: %s", strerror(errno));
            return;
        }
        /* Past the cap a connection still gets a proper 503 once its
         * request arrives (answering before reading makes the kernel reset
         * the connection); past a small margin more it is just closed. */
        int over = s->nconns >= s->cfg->max_connections;
        if (over && s->nconns >= s->cfg->max_connections + 64) { close(fd); continue; }
        jj_http_conn *c = calloc(1, sizeof *c);
        if (!c) { close(fd); continue; }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->srv = s;
        c->fd = fd;
        c->access_log = s->cfg->access_log;
        c->state = S_HEAD;
        c->over_cap = over;
        if (sa.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, c->peer, sizeof c->peer);
        else if (sa.ss_family == AF_INET6)
            inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&sa)->sin6_addr, c->peer, sizeof c->peer);
        ev_io_init(&c->rio, on_readable, fd, EV_READ);
        ev_io_init(&c->wio, on_writable, fd, EV_WRITE);
        ev_init(&c->timer, on_timer);
        c->rio.data = c->wio.data = c->timer.data = c;
        c->next = s->conns;
        if (s->conns) s->conns->prev = c;
        s->conns = c;
        s->nconns++;
        ev_io_start(loop, &c->rio);
        arm_timer(c, over ? 1.0 : s->cfg->header_timeout_s);
    }
}

jj_http_server *jj_http_server_new(struct ev_loop *loop, const jj_config *cfg, int listen_fd,
                                   jj_http_handler *handler, void *ud) {
    jj_http_server *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->loop = loop;
    s->cfg = cfg;
    s->listen_fd = listen_fd;
    s->handler = handler;
    s->ud = ud;
    if (getrandom(&s->id_prefix, sizeof s->id_prefix, 0) != sizeof s->id_prefix)
        s->id_prefix = (uint32_t)getpid() * 2654435761u;
    ev_io_init(&s->accept_io, on_accept, listen_fd, EV_READ);
    s->accept_io.data = s;
    ev_io_start(loop, &s->accept_io);
    return s;
}

long jj_http_server_connections(const jj_http_server *s) { return s->nconns; }

void jj_http_server_drain(jj_http_server *s, void (*drained)(void *), void *ud) {
    s->draining = 1;
    s->drained = drained;
    s->drained_ud = ud;
    if (s->listen_fd >= 0) {
        ev_io_stop(s->loop, &s->accept_io);
        close(s->listen_fd);
        s->listen_fd = -1;
    }
    jj_http_conn *c = s->conns;
    while (c) {
        jj_http_conn *next = c->next;
        /* An idle keep-alive connection is closed, unless a request already
         * sits in its socket (sent before the drain, not read yet): closing
         * would answer it with RST. It is served, with Connection: close. */
        char b;
        int idle = c->state == S_HEAD && c->in_len == c->in_off &&
                   recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
        if (idle || c->state == S_LINGER) conn_close(c);
        else c->keep_alive = 0;
        c = next;
    }
    if (s->nconns == 0 && s->drained) {
        s->drained = NULL;
        drained(ud);
    }
}

void jj_http_server_free(jj_http_server *s) {
    if (!s) return;
    s->drained = NULL;
    while (s->conns) conn_close(s->conns);
    if (s->listen_fd >= 0) {
        ev_io_stop(s->loop, &s->accept_io);
        close(s->listen_fd);
    }
    free(s);
}
