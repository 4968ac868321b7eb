/* test_redis.c: redis.c against real redis-server processes that this test
 * starts on free loopback ports and kills at exit (also if it crashes: the
 * children get SIGKILL when the test dies, via PR_SET_PDEATHSIG).
 *
 * Every loop run is bounded by a guard timer, so a bug fails a CHECK instead
 * of hanging the test. */
#include "jj_test.h"
#include "log.h"
#include "redis.h"
#include "sha1.h"

#include <ev.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static struct ev_loop *loop;

#include "jj_redis_child.h"

static int is_up(void *ud) {
    jj_redis_status st;
    jj_redis_get_status(ud, &st);
    return st.up;
}

static int status_up(jj_redis *r) {
    return is_up(r);
}

/* ---- recording callbacks -------------------------------------------------- */

typedef struct res {
    int calls;
    int type;
    char str[256];
    size_t len;
    long long integer;
    size_t elements;
    int el_type[8];
    char el_str[8][32];
    char err[64];
    int seq;
    /* set by cb_resend: what a command sent from inside the callback got */
    int resend_rc;
    const char *resend_err;
    jj_redis *client;
} res;

static int order;

static void rec_cb(const jj_redis_reply *rep, const char *err, void *p) {
    res *o = p;
    o->calls++;
    o->seq = ++order;
    if (err) {
        snprintf(o->err, sizeof o->err, "%s", err);
        o->type = 0;
        return;
    }
    o->type = jj_reply_type(rep);
    const char *s = jj_reply_str(rep, &o->len);
    if (s) {
        size_t n = o->len < sizeof o->str - 1 ? o->len : sizeof o->str - 1;
        memcpy(o->str, s, n);
        o->str[n] = '\0';
    }
    o->integer = jj_reply_integer(rep);
    o->elements = jj_reply_elements(rep);
    for (size_t i = 0; i < o->elements && i < 8; i++) {
        const jj_redis_reply *e = jj_reply_element(rep, i);
        size_t n;
        const char *es = jj_reply_str(e, &n);
        o->el_type[i] = jj_reply_type(e);
        snprintf(o->el_str[i], sizeof o->el_str[i], "%.*s", es ? (int)n : 0, es ? es : "");
    }
}

/* Records, then tries to send another command from inside the callback. */
static void cb_resend(const jj_redis_reply *rep, const char *err, void *p) {
    res *o = p;
    rec_cb(rep, err, p);
    const char *argv[1] = { "PING" };
    o->resend_err = NULL;
    o->resend_rc = jj_redis_command(o->client, 1, argv, NULL, rec_cb, o, &o->resend_err);
}

/* Records, then frees the client from inside the callback. */
static void cb_free(const jj_redis_reply *rep, const char *err, void *p) {
    res *o = p;
    rec_cb(rep, err, p);
    jj_redis_free(o->client);
}

static int called(void *ud) {
    return ((res *)ud)->calls > 0;
}

typedef struct many {
    res *v;
    int n;
} many;

static int all_called(void *ud) {
    many *m = ud;
    for (int i = 0; i < m->n; i++)
        if (m->v[i].calls == 0)
            return 0;
    return 1;
}

/* Sends a NULL-terminated list of string arguments. */
static int vcmd(jj_redis *r, jj_redis_cb *cb, res *o, const char **err, ...) {
    const char *argv[16];
    int argc = 0;
    va_list ap;
    va_start(ap, err);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 16)
        argv[argc++] = a;
    va_end(ap);
    const char *dummy;
    return jj_redis_command(r, argc, argv, NULL, cb, o, err ? err : &dummy);
}

/* Sends and waits for the reply (at most 2 s). */
static int call(jj_redis *r, res *o, ...) {
    const char *argv[16];
    int argc = 0;
    va_list ap;
    va_start(ap, o);
    const char *a;
    while ((a = va_arg(ap, const char *)) != NULL && argc < 16)
        argv[argc++] = a;
    va_end(ap);
    memset(o, 0, sizeof *o);
    const char *err = NULL;
    if (jj_redis_command(r, argc, argv, NULL, rec_cb, o, &err) != 0) {
        snprintf(o->err, sizeof o->err, "%s", err ? err : "?");
        return -1;
    }
    return run_until(called, o, 2.0) ? 0 : -1;
}

static jj_redis *client(int port, const char *user, const char *password, int db) {
    jj_redis_config cfg = { 0 };
    cfg.host = "127.0.0.1";
    cfg.port = port;
    cfg.user = user;
    cfg.password = password;
    cfg.db = db;
    cfg.prefix = "jj:";
    cfg.connect_timeout_ms = 1000;
    return jj_redis_new(loop, &cfg);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_basics(int port) {
    jj_redis *r = client(port, NULL, NULL, 0);
    CHECK(r != NULL);
    CHECK_STR(jj_redis_prefix(r), "jj:");

    /* Not connected yet: fails fast, the callback never runs. */
    res early = { 0 };
    const char *err = NULL;
    CHECK_INT(vcmd(r, rec_cb, &early, &err, "PING", NULL), -1);
    CHECK_STR(err, "redis unavailable");

    CHECK(run_until(is_up, r, 2.0));
    CHECK_INT(early.calls, 0);
    run_until(NULL, NULL, 0.05);
    jj_redis_status st;
    jj_redis_get_status(r, &st);
    CHECK(st.latency_ms >= 0);
    CHECK_INT(st.reconnects, 0);

    res o;
    CHECK_INT(call(r, &o, "SET", "jj:k", "v1", NULL), 0);
    CHECK_INT(o.type, JJ_REPLY_STATUS);
    CHECK_STR(o.str, "OK");
    CHECK_INT(call(r, &o, "GET", "jj:k", NULL), 0);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.type, JJ_REPLY_STRING);
    CHECK_MEM(o.str, o.len, "v1");

    /* Binary-safe arguments. */
    const char *argv[3] = { "SET", "jj:bin", "a\0b" };
    size_t len[3] = { 3, 6, 3 };
    memset(&o, 0, sizeof o);
    CHECK_INT(jj_redis_command(r, 3, argv, len, rec_cb, &o, &err), 0);
    run_until(called, &o, 2.0);
    CHECK_INT(call(r, &o, "STRLEN", "jj:bin", NULL), 0);
    CHECK_INT(o.type, JJ_REPLY_INTEGER);
    CHECK_INT(o.integer, 3);

    /* Nil, error, array (with a nil element). */
    CHECK_INT(call(r, &o, "GET", "jj:missing", NULL), 0);
    CHECK_INT(o.type, JJ_REPLY_NIL);
    CHECK_STR(o.err, "");
    CHECK_INT(call(r, &o, "NOSUCHCOMMAND", "x", NULL), 0);
    CHECK_INT(o.type, JJ_REPLY_ERROR);
    CHECK(strncmp(o.str, "ERR", 3) == 0);
    CHECK_INT(call(r, &o, "INCR", "jj:k", NULL), 0);
    CHECK_INT(o.type, JJ_REPLY_ERROR);
    call(r, &o, "DEL", "jj:list", NULL);
    CHECK_INT(call(r, &o, "RPUSH", "jj:list", "a", "b", "c", NULL), 0);
    CHECK_INT(o.integer, 3);
    CHECK_INT(call(r, &o, "LRANGE", "jj:list", "0", "-1", NULL), 0);
    CHECK_INT(o.type, JJ_REPLY_ARRAY);
    CHECK_INT(o.elements, 3);
    CHECK_STR(o.el_str[0], "a");
    CHECK_STR(o.el_str[2], "c");
    CHECK_INT(call(r, &o, "MGET", "jj:k", "jj:missing", NULL), 0);
    CHECK_INT(o.elements, 2);
    CHECK_INT(o.el_type[0], JJ_REPLY_STRING);
    CHECK_INT(o.el_type[1], JJ_REPLY_NIL);
    CHECK(jj_reply_element(NULL, 0) == NULL);

    /* Refused commands never reach Redis. */
    res no = { 0 };
    CHECK_INT(vcmd(r, rec_cb, &no, &err, "KEYS", "*", NULL), -1);
    CHECK_STR(err, "KEYS is not allowed; use SCAN");
    CHECK_INT(vcmd(r, rec_cb, &no, &err, "subscribe", "ch", NULL), -1);
    CHECK_INT(no.calls, 0);

    /* 1000 pipelined INCRs, sent back to back: replies 1..1000 in order. */
    call(r, &o, "DEL", "jj:ctr", NULL);
    enum { N = 1000 };
    static res incr[N];
    memset(incr, 0, sizeof incr);
    order = 0;
    int sent = 0;
    for (int i = 0; i < N; i++)
        sent += vcmd(r, rec_cb, &incr[i], NULL, "INCR", "jj:ctr", NULL) == 0;
    CHECK_INT(sent, N);
    many m = { incr, N };
    CHECK(run_until(all_called, &m, 5.0));
    int good = 0;
    for (int i = 0; i < N; i++)
        good += incr[i].calls == 1 && incr[i].integer == i + 1 && incr[i].seq == i + 1;
    CHECK_INT(good, N);

    jj_redis_free(r);
}

static void test_overload(int port) {
    jj_redis_config cfg = { .host = "127.0.0.1", .port = port, .max_pending = 10 };
    jj_redis *r = jj_redis_new(loop, &cfg);
    CHECK(run_until(is_up, r, 2.0));
    res v[11];
    memset(v, 0, sizeof v);
    const char *err = NULL;
    int ok = 0;
    for (int i = 0; i < 10; i++)
        ok += vcmd(r, rec_cb, &v[i], &err, "PING", NULL) == 0;
    CHECK_INT(ok, 10);
    CHECK_INT(vcmd(r, rec_cb, &v[10], &err, "PING", NULL), -1);
    CHECK_STR(err, "redis overloaded");
    many m = { v, 10 };
    CHECK(run_until(all_called, &m, 2.0));
    CHECK_INT(v[10].calls, 0);
    CHECK_INT(vcmd(r, rec_cb, &v[10], &err, "PING", NULL), 0);
    CHECK(run_until(called, &v[10], 2.0));
    jj_redis_free(r);
}

static int never(void *ud) {
    (void)ud;
    return 0;
}

/* redis - a command unanswered for command_timeout_ms (CLIENT PAUSE) makes
 * new commands fail at once, until the first reply ends the stall */
static void test_stall(int port) {
    jj_redis_config cfg = { .host = "127.0.0.1", .port = port, .command_timeout_ms = 150 };
    jj_redis *r = jj_redis_new(loop, &cfg);
    jj_redis *ctl = client(port, NULL, NULL, 0);
    CHECK(run_until(is_up, r, 2.0) && run_until(is_up, ctl, 2.0));
    res p, a, b, c;
    CHECK_INT(call(ctl, &p, "CLIENT", "PAUSE", "700", "ALL", NULL), 0);
    CHECK_STR(p.str, "OK");
    memset(&a, 0, sizeof a);
    memset(&b, 0, sizeof b);
    memset(&c, 0, sizeof c);
    const char *err = NULL;
    CHECK_INT(vcmd(r, rec_cb, &a, &err, "PING", NULL), 0);   /* held by the pause */
    CHECK(!run_until(never, NULL, 0.3));
    CHECK_INT(a.calls, 0);
    CHECK_INT(vcmd(r, rec_cb, &b, &err, "PING", NULL), -1);
    CHECK_STR(err, "redis unavailable");
    CHECK(status_up(r));                                     /* stalled, not down */
    CHECK(run_until(called, &a, 2.0));                       /* the pause ends */
    CHECK_STR(a.str, "PONG");
    CHECK_INT(vcmd(r, rec_cb, &c, &err, "PING", NULL), 0);
    CHECK(run_until(called, &c, 2.0));
    CHECK_STR(c.str, "PONG");
    jj_redis_free(ctl);
    jj_redis_free(r);
}

static int eval(jj_redis *r, const char *sha, res *o, const char *key, const char *arg) {
    memset(o, 0, sizeof *o);
    const char *argv[2] = { key, arg };
    const char *err = NULL;
    if (jj_redis_evalsha(r, sha, 1, 2, argv, NULL, rec_cb, o, &err) != 0) {
        snprintf(o->err, sizeof o->err, "%s", err ? err : "?");
        return -1;
    }
    return run_until(called, o, 2.0) ? 0 : -1;
}

static void test_scripts(int port) {
    const char *src = "return {KEYS[1], ARGV[1]}";
    jj_redis *r = client(port, NULL, NULL, 0);
    char sha[41], sha2[41], expect[41];
    /* Registered before connecting: loaded by the handshake. */
    CHECK_INT(jj_redis_script(r, src, strlen(src), sha), 0);
    jj_sha1_hex(src, strlen(src), expect);
    CHECK_STR(sha, expect);
    CHECK_INT(jj_redis_script(r, src, strlen(src), sha2), 0);   /* idempotent */
    CHECK_STR(sha2, sha);
    CHECK(run_until(is_up, r, 2.0));

    res o;
    CHECK_INT(call(r, &o, "SCRIPT", "LOAD", src, NULL), 0);   /* Redis agrees on the SHA */
    CHECK_STR(o.str, sha);
    CHECK_INT(eval(r, sha, &o, "jj:a", "x"), 0);
    CHECK_INT(o.type, JJ_REPLY_ARRAY);
    CHECK_STR(o.el_str[0], "jj:a");
    CHECK_STR(o.el_str[1], "x");
    jj_redis_status st;
    jj_redis_get_status(r, &st);
    CHECK_INT(st.script_reloads, 0);

    /* Redis forgets every script: the next EVALSHA recovers, once. */
    CHECK_INT(call(r, &o, "SCRIPT", "FLUSH", NULL), 0);
    CHECK_STR(o.str, "OK");
    CHECK_INT(eval(r, sha, &o, "jj:b", "y"), 0);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.type, JJ_REPLY_ARRAY);
    CHECK_STR(o.el_str[0], "jj:b");
    CHECK_STR(o.el_str[1], "y");
    jj_redis_get_status(r, &st);
    CHECK_INT(st.script_reloads, 1);
    CHECK_INT(eval(r, sha, &o, "jj:c", "z"), 0);
    CHECK_INT(o.type, JJ_REPLY_ARRAY);
    jj_redis_get_status(r, &st);
    CHECK_INT(st.script_reloads, 1);

    /* Registered while up: loaded at once. */
    const char *src3 = "return redis.call('INCRBY', KEYS[1], ARGV[1])";
    char sha3[41];
    CHECK_INT(jj_redis_script(r, src3, strlen(src3), sha3), 0);
    call(r, &o, "DEL", "jj:n", NULL);
    CHECK_INT(eval(r, sha3, &o, "jj:n", "5"), 0);
    CHECK_INT(o.type, JJ_REPLY_INTEGER);
    CHECK_INT(o.integer, 5);
    jj_redis_get_status(r, &st);
    CHECK_INT(st.script_reloads, 1);

    /* A script that does not compile: the compile error is the answer,
     * and Redis stays up for everything else. */
    const char *bad = "this is not lua";
    char shab[41];
    CHECK_INT(jj_redis_script(r, bad, strlen(bad), shab), 0);
    CHECK_INT(eval(r, shab, &o, "jj:x", "1"), 0);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.type, JJ_REPLY_ERROR);
    CHECK(strstr(o.str, "ompil") != NULL);
    CHECK(status_up(r));

    /* Unknown SHA: refused. */
    const char *err = NULL;
    const char *argv[1] = { "k" };
    CHECK_INT(jj_redis_evalsha(r, "0000000000000000000000000000000000000000", 1, 1, argv, NULL,
                               rec_cb, &o, &err), -1);
    CHECK_STR(err, "unknown script");
    jj_redis_free(r);
}

static void test_select(int port) {
    jj_redis *r3 = client(port, NULL, NULL, 3);
    jj_redis *r0 = client(port, NULL, NULL, 0);
    CHECK(run_until(is_up, r3, 2.0));
    CHECK(run_until(is_up, r0, 2.0));
    res o;
    CHECK_INT(call(r3, &o, "SET", "jj:seldb", "three", NULL), 0);
    CHECK_INT(call(r0, &o, "GET", "jj:seldb", NULL), 0);
    CHECK_INT(o.type, JJ_REPLY_NIL);
    CHECK_INT(call(r3, &o, "GET", "jj:seldb", NULL), 0);
    CHECK_STR(o.str, "three");
    jj_redis_free(r3);
    jj_redis_free(r0);
}

static void test_auth(void) {
    int port = free_port();
    start_redis(port, "s3cret", 1);

    jj_redis *wrong = client(port, NULL, "nope", 0);
    jj_redis *none = client(port, NULL, NULL, 0);
    jj_redis *right = client(port, NULL, "s3cret", 0);
    jj_redis *user = client(port, "default", "s3cret", 0);
    CHECK(run_until(is_up, right, 2.0));
    CHECK(run_until(is_up, user, 2.0));
    run_until(NULL, NULL, 0.5);
    CHECK(!status_up(wrong));
    CHECK(!status_up(none));
    jj_redis_status st;
    jj_redis_get_status(wrong, &st);
    CHECK(strcasestr(st.last_error, "auth") != NULL);
    jj_redis_get_status(none, &st);
    CHECK(strcasestr(st.last_error, "NOAUTH") != NULL);
    res o;
    CHECK_INT(call(user, &o, "PING", NULL), 0);
    CHECK_STR(o.str, "PONG");
    jj_redis_free(wrong);
    jj_redis_free(none);
    jj_redis_free(right);
    jj_redis_free(user);
}

/* A server that accepts TCP connections (the kernel does) but never answers. */
static void test_connect_timeout(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(fd, 16) == 0);
    getsockname(fd, (struct sockaddr *)&a, &len);
    jj_redis_config cfg = { .host = "127.0.0.1", .port = ntohs(a.sin_port),
                            .connect_timeout_ms = 150 };
    jj_redis *r = jj_redis_new(loop, &cfg);
    run_until(NULL, NULL, 0.4);
    jj_redis_status st;
    jj_redis_get_status(r, &st);
    CHECK(!st.up);
    CHECK(strstr(st.last_error, "timed out") != NULL);
    jj_redis_free(r);
    close(fd);

    /* Nothing listening at all: not up, error recorded, freed cleanly. */
    cfg.port = free_port();
    r = jj_redis_new(loop, &cfg);
    run_until(NULL, NULL, 0.1);
    jj_redis_get_status(r, &st);
    CHECK(!st.up);
    CHECK(st.last_error[0] != '\0');
    jj_redis_free(r);
}

static void test_outage(void) {
    int port = free_port();
    pid_t pid = start_redis(port, NULL, 1);
    jj_redis *r = client(port, NULL, NULL, 0);
    const char *src = "return ARGV[1]";
    char sha[41];
    jj_redis_script(r, src, strlen(src), sha);
    CHECK(run_until(is_up, r, 2.0));

    /* One command blocked inside Redis, 100 more behind it. */
    enum { N = 100 };
    res blocked = { 0 }, v[N];
    memset(v, 0, sizeof v);
    CHECK_INT(vcmd(r, rec_cb, &blocked, NULL, "BLPOP", "jj:never", "5", NULL), 0);
    run_until(NULL, NULL, 0.1);
    for (int i = 0; i < N; i++) {
        v[i].client = r;
        CHECK_INT(vcmd(r, cb_resend, &v[i], NULL, "INCR", "jj:o", NULL), 0);
    }
    stop_redis(pid, SIGKILL);
    many m = { v, N };
    CHECK(run_until(all_called, &m, 2.0));
    CHECK_INT(blocked.calls, 1);
    CHECK_STR(blocked.err, "redis connection lost");
    int once = 0, lost = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        once += v[i].calls == 1;
        lost += strcmp(v[i].err, "redis connection lost") == 0;
        refused += v[i].resend_rc == -1 && v[i].resend_err &&
                   strcmp(v[i].resend_err, "redis unavailable") == 0;
    }
    CHECK_INT(once, N);
    CHECK_INT(lost, N);
    CHECK_INT(refused, N);   /* nobody could send from a "lost" callback */

    /* Down: fail fast. */
    run_until(NULL, NULL, 1.2);   /* let the backoff grow to its cap */
    jj_redis_status st;
    jj_redis_get_status(r, &st);
    CHECK(!st.up);
    CHECK(st.last_error[0] != '\0');
    res o = { 0 };
    const char *err = NULL;
    CHECK_INT(vcmd(r, rec_cb, &o, &err, "PING", NULL), -1);
    CHECK_STR(err, "redis unavailable");
    CHECK_INT(o.calls, 0);

    /* Back on the same port: up again within 1 s of starting the server. */
    double t0 = ev_time();
    pid = start_redis(port, NULL, 0);
    CHECK(run_until(is_up, r, 3.0));
    double took = ev_time() - t0;
    if (took >= 1.0)
        fprintf(stderr, "reconnect took %.3f s\n", took);
    CHECK(took < 1.0);
    jj_redis_get_status(r, &st);
    CHECK_INT(st.reconnects, 1);
    /* The script was loaded again by the handshake: no NOSCRIPT recovery. */
    CHECK_INT(eval(r, sha, &o, "k", "again"), 0);
    CHECK_STR(o.str, "again");
    jj_redis_get_status(r, &st);
    CHECK_INT(st.script_reloads, 0);

    /* A hung Redis (SIGSTOP): the stalled connection is dropped after ~3 s
     * and the waiting command fails; SIGCONT brings the client back. */
    stop_redis(pid, SIGSTOP);
    memset(&o, 0, sizeof o);
    CHECK_INT(vcmd(r, rec_cb, &o, NULL, "PING", NULL), 0);
    CHECK(run_until(called, &o, 6.0));
    CHECK_STR(o.err, "redis connection lost");
    CHECK(!status_up(r));
    jj_redis_get_status(r, &st);
    CHECK(strstr(st.last_error, "no reply") != NULL || strstr(st.last_error, "timed out") != NULL);
    stop_redis(pid, SIGCONT);
    CHECK(run_until(is_up, r, 3.0));
    CHECK_INT(call(r, &o, "PING", NULL), 0);
    CHECK_STR(o.str, "PONG");

    jj_redis_free(r);
    stop_redis(pid, SIGKILL);
}

static void test_free_pending(int port) {
    /* Freed from outside any callback: every callback runs now, once. */
    jj_redis *r = client(port, NULL, NULL, 0);
    CHECK(run_until(is_up, r, 2.0));
    enum { N = 50 };
    res v[N];
    memset(v, 0, sizeof v);
    for (int i = 0; i < N; i++)
        CHECK_INT(vcmd(r, rec_cb, &v[i], NULL, "PING", NULL), 0);
    jj_redis_free(r);
    int closed = 0;
    for (int i = 0; i < N; i++)
        closed += v[i].calls == 1 && strcmp(v[i].err, "redis closed") == 0;
    CHECK_INT(closed, N);

    /* Freed from inside a reply callback while later replies are pending. */
    r = client(port, NULL, NULL, 0);
    CHECK(run_until(is_up, r, 2.0));
    memset(v, 0, sizeof v);
    v[0].client = r;
    CHECK_INT(vcmd(r, cb_free, &v[0], NULL, "PING", NULL), 0);
    for (int i = 1; i < N; i++)
        CHECK_INT(vcmd(r, rec_cb, &v[i], NULL, "PING", NULL), 0);
    many m = { v, N };
    CHECK(run_until(all_called, &m, 2.0));
    CHECK_STR(v[0].str, "PONG");
    int once = 0;
    for (int i = 1; i < N; i++)
        once += v[i].calls == 1 && (strcmp(v[i].err, "redis closed") == 0 || v[i].type == JJ_REPLY_STATUS);
    CHECK_INT(once, N - 1);
    CHECK_STR(v[N - 1].err, "redis closed");

    /* Freed while connecting and while backing off. */
    r = client(port, NULL, NULL, 0);
    jj_redis_free(r);
    jj_redis_config cfg = { .host = "127.0.0.1", .port = free_port() };
    r = jj_redis_new(loop, &cfg);
    run_until(NULL, NULL, 0.05);
    jj_redis_free(r);
    run_until(NULL, NULL, 0.05);
}

static void test_sha1(void) {
    char hex[41];
    jj_sha1_hex("", 0, hex);
    CHECK_STR(hex, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    jj_sha1_hex("abc", 3, hex);
    CHECK_STR(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
    const char *s = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    jj_sha1_hex(s, strlen(s), hex);
    CHECK_STR(hex, "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
    static char million[1000000];
    memset(million, 'a', sizeof million);
    jj_sha1_hex(million, sizeof million, hex);
    CHECK_STR(hex, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

int main(void) {
    signal(SIGPIPE, SIG_IGN);
    atexit(kill_children);
    jj_log_set_level(JJ_LOG_ERROR);
    loop = ev_loop_new(EVFLAG_AUTO);

    test_sha1();
    int port = free_port();
    start_redis(port, NULL, 1);
    test_basics(port);
    test_overload(port);
    test_stall(port);
    test_scripts(port);
    test_select(port);
    test_free_pending(port);
    test_auth();
    test_connect_timeout();
    test_outage();

    ev_loop_destroy(loop);
    kill_children();
    return jj_test_done();
}
