/* embed_host.c: an example host that embeds JollyJet through the public
 * header only (jollyjet.h). It is a small HTTP/1.0 server of its own on
 * libev (one request per connection, Connection: close) that hands every
 * request to the engine's router, rate limits, caches and Lua handlers,
 * except two routes of its own:
 *
 *   GET /host/call/<module.function>[?arg]   jj_embed_call, the value as text/plain
 *   POST /host/reload                        jj_embed_reload
 *
 * It registers one Lua module in C, host.greeting (hello(name) -> string),
 * which Lua code in every generation can require.
 *
 *   embed_host [port]     (0 or none: a free port; prints "listening on <port>")
 *
 * The engine's configuration comes from the environment (README.md,
 * Configuration), with WORKERS=1: this is one process. SIGTERM / SIGINT stop
 * it cleanly. Run by ctest through tests/integration/embed_host_run.py. */
#include <jollyjet.h>

#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_REQUEST (64 * 1024)
#define MAX_HEADERS 64

typedef struct conn {
    struct conn *prev, *next;
    int fd;
    ev_io rio, wio;
    char in[MAX_REQUEST + 1];
    size_t in_len;
    char *out;
    size_t out_len, out_off;
    char peer[INET6_ADDRSTRLEN];
    int busy;                      /* the engine owns the answer */
} conn;

static struct ev_loop *loop;
static jj_embed *engine;
static conn *conns;

/* ------------------------------------------------------- a Lua module */

/* host.greeting.hello(name) -> "hello, <name>, from embed_host" */
static int greeting_hello(lua_State *L) {
    const char *name = luaL_optstring(L, 1, "world");
    lua_pushfstring(L, "hello, %s, from embed_host", name);
    return 1;
}

static int luaopen_host_greeting(lua_State *L) {
    static const luaL_Reg fns[] = { { "hello", greeting_hello }, { NULL, NULL } };
    luaL_newlib(L, fns);
    return 1;
}

/* --------------------------------------------------------- connections */

static void conn_free(conn *c) {
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    close(c->fd);
    if (c->prev) c->prev->next = c->next;
    else conns = c->next;
    if (c->next) c->next->prev = c->prev;
    free(c->out);
    free(c);
}

static void on_write(struct ev_loop *l, ev_io *w, int revents) {
    (void)l; (void)revents;
    conn *c = w->data;
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;   /* wait for POLLOUT */
        if (n <= 0) break;
        c->out_off += (size_t)n;
    }
    conn_free(c);
}

static const char *reason(int status) {
    switch (status) {
    case 200: return "OK";
    case 201: return "Created";
    case 204: return "No Content";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    default: return "Status";
    }
}

/* Queues the whole response and starts writing it. */
static void send_response(conn *c, int status, const char *const *headers, size_t nheaders,
                          const char *body, size_t body_len) {
    size_t cap = 128 + body_len;
    for (size_t i = 0; i < 2 * nheaders; i++) cap += strlen(headers[i]) + 4;
    c->out = malloc(cap);
    if (!c->out) { conn_free(c); return; }
    size_t n = (size_t)snprintf(c->out, cap, "HTTP/1.0 %d %s\r\n", status, reason(status));
    for (size_t i = 0; i < nheaders; i++)
        n += (size_t)snprintf(c->out + n, cap - n, "%s: %s\r\n", headers[2 * i], headers[2 * i + 1]);
    n += (size_t)snprintf(c->out + n, cap - n, "Content-Length: %zu\r\nConnection: close\r\n\r\n", body_len);
    memcpy(c->out + n, body, body_len);
    c->out_len = n + body_len;
    c->busy = 0;
    ev_io_start(loop, &c->wio);
}

static void send_text(conn *c, int status, const char *text, size_t len) {
    static const char *const h[] = { "Content-Type", "text/plain; charset=utf-8" };
    send_response(c, status, h, 1, text, len);
}

/* jj_embed_response: the engine's answer to a dispatched request. */
static void on_engine_response(void *ud, int status, const char *const *headers, size_t nheaders,
                               const char *body, size_t body_len) {
    send_response(ud, status, headers, nheaders, body, body_len);
}

/* jj_embed_result: the value of a /host/call/... */
static void on_call_result(void *ud, int ok, const char *value, size_t len) {
    if (!ok) { send_text(ud, 500, value, len); return; }
    if (!value) { send_text(ud, 200, "nil", 3); return; }
    send_text(ud, 200, value, len);
}

/* The request is complete in c->in: request line, headers, body. */
static void handle(conn *c, char *head_end, size_t body_len) {
    *head_end = 0;
    char *body = head_end + 4;
    char *line_end = strstr(c->in, "\r\n");
    if (line_end) *line_end = 0;
    char *method = c->in, *target = strchr(method, ' ');
    if (!target) { send_text(c, 400, "bad request line\n", 17); return; }
    *target++ = 0;
    char *version = strchr(target, ' ');
    if (version) *version = 0;
    char *query = strchr(target, '?');
    if (query) *query++ = 0;
    const char *headers[2 * MAX_HEADERS + 1];
    size_t nh = 0;
    for (char *h = line_end ? line_end + 2 : NULL; h && *h && nh < 2 * MAX_HEADERS;) {
        char *end = strstr(h, "\r\n");
        if (end) *end = 0;
        char *colon = strchr(h, ':');
        if (colon) {
            *colon = 0;
            char *v = colon + 1;
            while (*v == ' ' || *v == '\t') v++;
            headers[nh++] = h;
            headers[nh++] = v;
        }
        h = end ? end + 2 : NULL;
    }
    headers[nh] = NULL;
    c->busy = 1;
    if (!strncmp(target, "/host/call/", 11)) {
        const char *args[1] = { query };
        jj_embed_call(engine, target + 11, args, query ? 1 : 0, on_call_result, c);
        return;
    }
    if (!strcmp(target, "/host/reload") && !strcmp(method, "POST")) {
        char err[1024];
        if (jj_embed_reload(engine, err, sizeof err) == 0) send_text(c, 200, "reloaded\n", 9);
        else send_text(c, 500, err, strlen(err));
        return;
    }
    jj_embed_dispatch(engine, method, target, query, headers, body, body_len, c->peer, on_engine_response, c);
}

static void on_read(struct ev_loop *l, ev_io *w, int revents) {
    (void)l; (void)revents;
    conn *c = w->data;
    ssize_t n = read(c->fd, c->in + c->in_len, MAX_REQUEST - c->in_len);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { conn_free(c); return; }
    c->in_len += (size_t)n;
    c->in[c->in_len] = 0;
    char *head_end = strstr(c->in, "\r\n\r\n");
    if (!head_end) {
        if (c->in_len == MAX_REQUEST) { ev_io_stop(loop, &c->rio); send_text(c, 400, "request too large\n", 18); }
        return;
    }
    size_t body_len = 0;
    for (char *p = c->in; p < head_end; p++) {
        if ((p == c->in || p[-1] == '\n') && !strncasecmp(p, "Content-Length:", 15)) body_len = strtoul(p + 15, NULL, 10);
    }
    size_t have = c->in_len - (size_t)(head_end + 4 - c->in);
    if (body_len > MAX_REQUEST - (size_t)(head_end + 4 - c->in)) {
        ev_io_stop(loop, &c->rio);
        send_text(c, 400, "request too large\n", 18);
        return;
    }
    if (have < body_len) return;
    ev_io_stop(loop, &c->rio);   /* one request per connection */
    handle(c, head_end, body_len);
}

static void on_accept(struct ev_loop *l, ev_io *w, int revents) {
    (void)revents;
    struct sockaddr_in sa;
    socklen_t len = sizeof sa;
    int fd = accept(w->fd, (struct sockaddr *)&sa, &len);
    if (fd < 0) return;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    conn *c = calloc(1, sizeof *c);
    if (!c) { close(fd); return; }
    c->fd = fd;
    inet_ntop(AF_INET, &sa.sin_addr, c->peer, sizeof c->peer);
    c->next = conns;
    if (conns) conns->prev = c;
    conns = c;
    ev_io_init(&c->rio, on_read, fd, EV_READ);
    ev_io_init(&c->wio, on_write, fd, EV_WRITE);
    c->rio.data = c->wio.data = c;
    ev_io_start(l, &c->rio);
}

static void on_signal(struct ev_loop *l, ev_signal *w, int revents) {
    (void)w; (void)revents;
    ev_break(l, EVBREAK_ALL);
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 0;
    signal(SIGPIPE, SIG_IGN);
    loop = ev_default_loop(EVFLAG_AUTO);
    char err[1024];
    static const char *const settings[] = { "WORKERS", "1", "WATCH", "false", NULL };
    engine = jj_embed_new(settings, JJ_EMBED_ENV, err, sizeof err);
    if (!engine) { fprintf(stderr, "embed_host: configuration error: %s\n", err); return 2; }
    if (jj_embed_add_module(engine, "host.greeting", luaopen_host_greeting) != 0) {
        fprintf(stderr, "embed_host: cannot register host.greeting\n");
        return 1;
    }
    if (jj_embed_add_module(engine, "engine.mine", luaopen_host_greeting) == 0) {
        fprintf(stderr, "embed_host: the engine.* namespace must be refused\n");
        return 1;
    }
    if (jj_embed_start(engine, loop, err, sizeof err) != 0) {
        fprintf(stderr, "embed_host: %s\n", err);
        jj_embed_free(engine);
        return 1;
    }

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t salen = sizeof sa;
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 128) != 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &salen) != 0) {
        fprintf(stderr, "embed_host: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        jj_embed_free(engine);
        return 1;
    }
    ev_io accept_w;
    ev_io_init(&accept_w, on_accept, lfd, EV_READ);
    ev_io_start(loop, &accept_w);
    ev_signal sigterm, sigint;
    ev_signal_init(&sigterm, on_signal, SIGTERM);
    ev_signal_init(&sigint, on_signal, SIGINT);
    ev_signal_start(loop, &sigterm);
    ev_signal_start(loop, &sigint);
    printf("listening on %d\n", ntohs(sa.sin_port));
    fflush(stdout);

    ev_run(loop, 0);

    ev_io_stop(loop, &accept_w);
    ev_signal_stop(loop, &sigterm);
    ev_signal_stop(loop, &sigint);
    close(lfd);
    jj_embed_free(engine);      /* drops callbacks still due: connections are freed below */
    while (conns) conn_free(conns);
    ev_loop_destroy(loop);
    printf("stopped\n");
    return 0;
}
