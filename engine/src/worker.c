/* worker.c: a serving process. SIGHUP reloads the Lua generation;
 * SIGTERM/SIGINT drain: stop accepting, finish in-flight requests within the
 * grace period, close Redis and the database, exit 0. */
#include "worker.h"
#include "engine_internal.h"
#include "host.h"
#include "http_server.h"
#include "log.h"

#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    struct ev_loop *loop;
    jj_engine *engine;
    jj_http_server *http;
    ev_signal sigterm, sigint, sighup;
    ev_timer grace;
    int draining;
} worker;

static void drained(void *ud) {
    worker *w = ud;
    ev_break(w->loop, EVBREAK_ALL);
}

static void on_grace(struct ev_loop *loop, ev_timer *t, int revents) {
    (void)revents;
    worker *w = t->data;
    JJ_WARN("shutdown grace period over with %ld connection(s) still open", jj_http_server_connections(w->http));
    ev_break(loop, EVBREAK_ALL);
}

static void on_stop(struct ev_loop *loop, ev_signal *s, int revents) {
    (void)revents;
    worker *w = s->data;
    if (w->draining) return;
    w->draining = 1;
    JJ_INFO("draining: %ld connection(s) open", jj_http_server_connections(w->http));
    ev_timer_init(&w->grace, on_grace, jj_engine_config(w->engine)->grace_s, 0.);
    w->grace.data = w;
    ev_timer_start(loop, &w->grace);
    jj_http_server_drain(w->http, drained, w);
}

static void on_hup(struct ev_loop *loop, ev_signal *s, int revents) {
    (void)loop; (void)revents;
    worker *w = s->data;
    jj_engine_reload(w->engine);
}

int jj_worker_run(const jj_config *cfg, int worker_id) {
    jj_log_set_worker(worker_id);
    signal(SIGPIPE, SIG_IGN);
    worker w = {0};
    w.loop = ev_default_loop(EVFLAG_AUTO);
    char err[1024];
    int fd = jj_http_listen(cfg->host, cfg->port, err, sizeof err);
    if (fd < 0) {
        JJ_ERROR("%s", err);
        return JJ_EXIT_CONFIG;
    }
    w.engine = jj_engine_new(w.loop, cfg, worker_id, JJ_GEN_APP, err, sizeof err);
    if (!w.engine) {
        JJ_ERROR("cannot load the Lua application: %s", err);
        return JJ_EXIT_CONFIG;
    }
    jj_engine_set_master(w.engine, (int)getppid());   /* core.reload_all() signals it */
    w.http = jj_http_server_new(w.loop, cfg, fd, jj_host_handle, w.engine);
    ev_signal_init(&w.sigterm, on_stop, SIGTERM);
    ev_signal_init(&w.sigint, on_stop, SIGINT);
    ev_signal_init(&w.sighup, on_hup, SIGHUP);
    w.sigterm.data = w.sigint.data = w.sighup.data = &w;
    ev_signal_start(w.loop, &w.sigterm);
    ev_signal_start(w.loop, &w.sigint);
    ev_signal_start(w.loop, &w.sighup);
    /* Tell the master this worker serves (it stops on a start-up error only
     * while no worker ever became ready). */
    const char *rfd = getenv("JJ_READY_FD");
    if (rfd && *rfd) {
        int fd = atoi(rfd);
        ssize_t wr = write(fd, "r", 1);
        (void)wr;
        close(fd);
        unsetenv("JJ_READY_FD");
    }
    JJ_INFO("worker serving on %s:%d (generation %u)", cfg->host, cfg->port, jj_engine_generation(w.engine));
    ev_run(w.loop, 0);
    ev_timer_stop(w.loop, &w.grace);
    ev_signal_stop(w.loop, &w.sigterm);
    ev_signal_stop(w.loop, &w.sigint);
    ev_signal_stop(w.loop, &w.sighup);
    jj_http_server_free(w.http);
    jj_engine_free(w.engine);
    ev_loop_destroy(w.loop);
    JJ_INFO("worker stopped");
    return 0;
}
