/* redis_sentinel.c: Sentinel discovery and failover following (see
 * redis_sentinel.h). Everything runs on the worker's loop.
 *
 * A round asks the sentinels one at a time: a short-lived jj_redis to the
 * sentinel (its handshake is AUTH + PING), then SENTINEL
 * get-master-addr-by-name. `step` bounds each sentinel to the timeout and
 * moves on; any failure of the query client moves on too. A round that
 * finds no master is retried with a capped backoff; the status names the
 * master and why.
 *
 * Re-entrancy: the clients' state callbacks may run inside their own
 * hiredis callbacks, where a client must not be freed nor re-addressed, so
 * they only arm timers (`step`, `again`); the work happens there. A reply
 * callback may free its own client (redis.h allows it).
 */
#include "redis_sentinel.h"

#include "log.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SENTINELS 16
#define AGAIN_MIN_S 0.05    /* data connection failed: next round no sooner */
#define ROUND_FAIL_MIN_S 0.2
#define ROUND_FAIL_MAX_S 2.0

typedef struct sentinel_addr {
    char host[256];
    int port;
} sentinel_addr;

struct jj_sentinel {
    struct ev_loop *loop;
    sentinel_addr addr[MAX_SENTINELS];
    int order[MAX_SENTINELS];   /* indices into addr, the one to ask first at [0] */
    int n;
    char master[256];
    char *password;             /* NULL: none */
    double timeout_ms;
    jj_redis *data;             /* borrowed */
    jj_redis_sub *isub;         /* borrowed, may be NULL */
    jj_sentinel_switch_cb *on_switch;
    void *ud;

    /* the current round */
    int discovering;
    int pos;                    /* position in order being asked */
    jj_redis *q;                /* query client to order[pos] */
    int q_sent, q_done;         /* command sent / answered or failed */
    int freeing_q;              /* jj_redis_free(q) running: ignore its callbacks */
    int nil_answers;
    char round_error[200];
    double round_fail_s;        /* backoff after a failed round */
    double last_round;          /* ev_now when the last round started */
    ev_timer step;              /* per-sentinel timeout, or "move on now" */
    ev_timer again;             /* the next round */

    /* what we know */
    int have_master;
    char cur_host[256];
    int cur_port;
    double last_switch;
    uint64_t switches;
    char error[256];

    jj_redis_sub *swsub;        /* +switch-master on a sentinel */
    int swsub_idx;              /* addr index it is connected to */
};

static void try_next(jj_sentinel *s);
static void request_round(jj_sentinel *s, double after);

static void publish(jj_sentinel *s) {
    jj_redis_set_sentinel_info(s->data, s->master, s->error, s->last_switch, s->switches);
}

static void set_error(jj_sentinel *s, const char *msg) {
    if (strcmp(msg, s->error) != 0) {
        if (msg[0])
            JJ_ERROR("redis sentinel: %s", msg);
        snprintf(s->error, sizeof s->error, "%s", msg);
    }
    publish(s);
}

static void free_q(jj_sentinel *s) {
    if (s->q == NULL)
        return;
    jj_redis *q = s->q;
    s->q = NULL;
    s->freeing_q = 1;
    jj_redis_free(q);   /* a pending query callback runs now, ignored */
    s->freeing_q = 0;
}

/* ---- +switch-master ----------------------------------------------------- */

static void apply_master(jj_sentinel *s, const char *host, int port, const char *how);

/* "<master> <old-ip> <old-port> <new-ip> <new-port>" */
static void on_switch_msg(const char *payload, size_t len, void *ud) {
    jj_sentinel *s = ud;
    char buf[600], name[256], oldh[256], newh[256];
    int oldp, newp;
    if (len >= sizeof buf)
        return;
    memcpy(buf, payload, len);
    buf[len] = 0;
    if (sscanf(buf, "%255s %255s %d %255s %d", name, oldh, &oldp, newh, &newp) != 5)
        return;
    if (strcmp(name, s->master) != 0)
        return;
    JJ_INFO("redis sentinel: +switch-master %s from %s:%d to %s:%d", name, oldh, oldp, newh, newp);
    apply_master(s, newh, newp, "+switch-master");
}

static void on_swsub_state(int up, void *ud) {
    jj_sentinel *s = ud;
    if (!up)   /* that sentinel is gone: find one that answers, and follow it */
        request_round(s, AGAIN_MIN_S);
}

static void follow_front(jj_sentinel *s) {
    int idx = s->order[0];
    if (s->swsub && s->swsub_idx == idx)
        return;
    if (s->swsub) {
        jj_redis_sub_free(s->swsub);
        s->swsub = NULL;
    }
    jj_redis_config cfg = {
        .host = s->addr[idx].host,
        .port = s->addr[idx].port,
        .password = s->password,
        .connect_timeout_ms = s->timeout_ms,
        .kind = "redis sentinel subscriber",
    };
    s->swsub = jj_redis_sub_new(s->loop, &cfg, "+switch-master", on_switch_msg, on_swsub_state, s);
    s->swsub_idx = idx;
}

/* ---- applying an answer --------------------------------------------------- */

static void apply_master(jj_sentinel *s, const char *host, int port, const char *how) {
    if (s->have_master && port == s->cur_port && strcmp(host, s->cur_host) == 0)
        return;   /* unchanged: the clients reconnect by themselves */
    int was = s->have_master;
    char old[300];
    snprintf(old, sizeof old, "%s:%d", s->cur_host, s->cur_port);
    snprintf(s->cur_host, sizeof s->cur_host, "%s", host);
    s->cur_port = port;
    s->have_master = 1;
    if (was) {
        s->switches++;
        s->last_switch = ev_time();
        JJ_WARN("redis sentinel: master %s moved from %s to %s:%d (%s)", s->master, old, host, port, how);
    } else {
        JJ_INFO("redis sentinel: master %s is at %s:%d", s->master, host, port);
    }
    set_error(s, "");
    jj_redis_set_address(s->data, host, port);
    if (s->isub)
        jj_redis_sub_set_address(s->isub, host, port);
    if (was && s->on_switch)
        s->on_switch(host, port, s->ud);
}

/* ---- a discovery round -------------------------------------------------- */

static void round_failed(jj_sentinel *s) {
    s->discovering = 0;
    char msg[256];
    if (s->nil_answers == s->n)
        snprintf(msg, sizeof msg, "no sentinel knows a master named \"%.64s\" (REDIS_SENTINEL_MASTER; "
                 "every sentinel answered nil to get-master-addr-by-name)", s->master);
    else
        snprintf(msg, sizeof msg, "no sentinel gave the address of master \"%.64s\" (%.120s)", s->master,
                 s->round_error[0] ? s->round_error : "no answer");
    set_error(s, msg);
    if (!s->have_master)
        jj_redis_note_error(s->data, msg);
    double d = s->round_fail_s;
    s->round_fail_s = d * 2 > ROUND_FAIL_MAX_S ? ROUND_FAIL_MAX_S : d * 2;
    ev_timer_stop(s->loop, &s->again);
    ev_timer_set(&s->again, d, 0.);
    ev_timer_start(s->loop, &s->again);
}

/* The answering sentinel goes to the front of the list. */
static void to_front(jj_sentinel *s, int pos) {
    int idx = s->order[pos];
    memmove(&s->order[1], &s->order[0], (size_t)pos * sizeof s->order[0]);
    s->order[0] = idx;
}

static void move_on(jj_sentinel *s, const char *why) {
    if (why && why[0]) {
        const sentinel_addr *a = &s->addr[s->order[s->pos]];
        snprintf(s->round_error, sizeof s->round_error, "sentinel %.64s:%d: %.100s", a->host, a->port, why);
    }
    s->q_done = 1;
    ev_timer_stop(s->loop, &s->step);
    ev_timer_set(&s->step, 0., 0.);
    ev_timer_start(s->loop, &s->step);
}

static void on_query_reply(const jj_redis_reply *rep, const char *err, void *ud) {
    jj_sentinel *s = ud;
    if (s->freeing_q || !s->discovering)
        return;
    if (rep == NULL) {
        move_on(s, err);
        return;
    }
    int t = jj_reply_type(rep);
    if (t == JJ_REPLY_NIL) {
        s->nil_answers++;
        move_on(s, "does not know the master");
        return;
    }
    if (t == JJ_REPLY_ERROR) {
        move_on(s, jj_reply_str(rep, NULL));
        return;
    }
    const jj_redis_reply *h = jj_reply_element(rep, 0), *p = jj_reply_element(rep, 1);
    size_t hl = 0, pl = 0;
    const char *hs = jj_reply_str(h, &hl), *ps = jj_reply_str(p, &pl);
    if (t != JJ_REPLY_ARRAY || hs == NULL || ps == NULL || hl == 0 || hl > 255 || pl == 0 || pl > 5) {
        move_on(s, "unexpected reply to get-master-addr-by-name");
        return;
    }
    char host[256], port[8];
    memcpy(host, hs, hl);
    host[hl] = 0;
    memcpy(port, ps, pl);
    port[pl] = 0;
    int portn = atoi(port);
    if (portn <= 0 || portn > 65535) {
        move_on(s, "bad port in get-master-addr-by-name");
        return;
    }
    /* done: this sentinel answered */
    ev_timer_stop(s->loop, &s->step);
    to_front(s, s->pos);
    s->discovering = 0;
    s->round_fail_s = ROUND_FAIL_MIN_S;
    jj_redis *q = s->q;   /* inside q's own callback: freeing it is allowed */
    s->q = NULL;
    s->freeing_q = 1;
    jj_redis_free(q);
    s->freeing_q = 0;
    apply_master(s, host, portn, "discovery");
    follow_front(s);
}

static void on_query_state(int up, void *ud) {
    jj_sentinel *s = ud;
    if (s->freeing_q || !s->discovering || s->q_done)
        return;
    if (up && !s->q_sent) {
        const char *argv[3] = { "SENTINEL", "get-master-addr-by-name", s->master };
        const char *err = NULL;
        if (jj_redis_command(s->q, 3, argv, NULL, on_query_reply, s, &err) == 0)
            s->q_sent = 1;
        else
            move_on(s, err);
    } else if (!up) {
        char why[300];
        jj_redis_status st;
        jj_redis_get_status(s->q, &st);
        snprintf(why, sizeof why, "%s",
                 st.last_error && st.last_error[0] ? st.last_error : "connection failed");
        move_on(s, why);
    }
}

static void try_next(jj_sentinel *s) {
    free_q(s);
    if (s->pos >= s->n) {
        round_failed(s);
        return;
    }
    const sentinel_addr *a = &s->addr[s->order[s->pos]];
    jj_redis_config cfg = {
        .host = a->host,
        .port = a->port,
        .password = s->password,
        .connect_timeout_ms = s->timeout_ms,
        .command_timeout_ms = s->timeout_ms,
        .max_pending = 4,
        .kind = "redis sentinel",
    };
    s->q_sent = s->q_done = 0;
    s->q = jj_redis_new(s->loop, &cfg);
    if (s->q == NULL) {
        move_on(s, "out of memory");
        return;
    }
    jj_redis_on_state(s->q, on_query_state, s);
    ev_timer_stop(s->loop, &s->step);
    ev_timer_set(&s->step, s->timeout_ms / 1000.0, 0.);
    ev_timer_start(s->loop, &s->step);
}

/* Per-sentinel deadline, or a failure that said "move on". */
static void step_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    jj_sentinel *s = w->data;
    if (!s->discovering)
        return;
    if (!s->q_done) {
        const sentinel_addr *a = &s->addr[s->order[s->pos]];
        snprintf(s->round_error, sizeof s->round_error, "sentinel %.64s:%d: no answer within %.0f ms",
                 a->host, a->port, s->timeout_ms);
    }
    s->pos++;
    try_next(s);
}

static void start_round(jj_sentinel *s) {
    if (s->discovering)
        return;
    s->discovering = 1;
    s->pos = 0;
    s->nil_answers = 0;
    s->round_error[0] = 0;
    s->last_round = ev_now(s->loop);
    try_next(s);
}

static void again_cb(struct ev_loop *loop, ev_timer *w, int revents) {
    (void)loop;
    (void)revents;
    start_round(w->data);
}

/* A round soon: never more often than every AGAIN_MIN_S. */
static void request_round(jj_sentinel *s, double after) {
    if (s->discovering || ev_is_active(&s->again))
        return;
    double since = ev_now(s->loop) - s->last_round;
    if (after < AGAIN_MIN_S - since)
        after = AGAIN_MIN_S - since;
    if (after < 0)
        after = 0;
    ev_timer_set(&s->again, after, 0.);
    ev_timer_start(s->loop, &s->again);
}

/* The data connection failed (lost, refused, or ROLE said replica). */
static void on_data_state(int up, void *ud) {
    jj_sentinel *s = ud;
    if (!up && s->have_master)
        request_round(s, 0);
}

/* ---- public API ----------------------------------------------------------- */

jj_sentinel *jj_sentinel_new(struct ev_loop *loop, const char *list, const char *master,
                             const char *password, double timeout_ms, jj_redis *data,
                             jj_redis_sub *sub, jj_sentinel_switch_cb *on_switch, void *ud) {
    if (loop == NULL || list == NULL || master == NULL || !master[0] || data == NULL ||
        strlen(master) >= sizeof ((jj_sentinel *)0)->master)
        return NULL;
    jj_sentinel *s = calloc(1, sizeof *s);
    if (s == NULL)
        return NULL;
    const char *p = list;
    while (*p && s->n < MAX_SENTINELS) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        char item[300];
        if (len == 0 || len >= sizeof item)
            break;
        memcpy(item, p, len);
        item[len] = 0;
        char *colon = strrchr(item, ':');
        if (colon == NULL || (size_t)(colon - item) >= sizeof s->addr[0].host)
            break;
        *colon = 0;
        memcpy(s->addr[s->n].host, item, (size_t)(colon - item) + 1);   /* fits: checked */
        s->addr[s->n].port = atoi(colon + 1);
        s->order[s->n] = s->n;
        s->n++;
        if (!end)
            break;
        p = end + 1;
    }
    if (s->n == 0 || (password && password[0] && (s->password = strdup(password)) == NULL)) {
        free(s);
        return NULL;
    }
    s->loop = loop;
    memcpy(s->master, master, strlen(master) + 1);   /* length checked above */
    s->timeout_ms = timeout_ms > 0 ? timeout_ms : 1000;
    s->data = data;
    s->isub = sub;
    s->on_switch = on_switch;
    s->ud = ud;
    s->swsub_idx = -1;
    s->round_fail_s = ROUND_FAIL_MIN_S;
    ev_init(&s->step, step_cb);
    ev_init(&s->again, again_cb);
    s->step.data = s->again.data = s;
    jj_redis_on_state(data, on_data_state, s);
    publish(s);
    start_round(s);
    return s;
}

void jj_sentinel_free(jj_sentinel *s) {
    if (s == NULL)
        return;
    ev_timer_stop(s->loop, &s->step);
    ev_timer_stop(s->loop, &s->again);
    s->discovering = 0;
    free_q(s);
    if (s->swsub)
        jj_redis_sub_free(s->swsub);
    jj_redis_on_state(s->data, NULL, NULL);
    free(s->password);
    free(s);
}
