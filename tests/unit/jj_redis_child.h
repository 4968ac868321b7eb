/* jj_redis_child.h: for the Redis unit tests: redis-server children on free
 * loopback ports (killed at exit, also on a crash) and loop runs bounded by a
 * guard timer. Include after `static struct ev_loop *loop;`. */
#ifndef JJ_REDIS_CHILD_H
#define JJ_REDIS_CHILD_H

/* ---- child redis-servers ------------------------------------------------ */

#define MAX_CHILDREN 16
static pid_t children[MAX_CHILDREN];

static void kill_children(void) {
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] > 0) {
            kill(children[i], SIGKILL);
            waitpid(children[i], NULL, 0);
            children[i] = 0;
        }
    }
}

static int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = 0 };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("free_port");
        exit(2);
    }
    close(fd);
    return ntohs(a.sin_port);
}

static int port_open(int port) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0)
        close(fd);
    return ok;
}

/* Starts redis-server on port (password may be NULL). With wait, returns
 * once the port accepts connections. */
static pid_t start_redis(int port, const char *password, int wait) {
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        const char *argv[16] = { "redis-server", "--port", p, "--bind", "127.0.0.1",
                                 "--save", "", "--appendonly", "no", "--daemonize", "no" };
        int n = 11;
        if (password) {
            argv[n++] = "--requirepass";
            argv[n++] = password;
        }
        argv[n] = NULL;
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < MAX_CHILDREN; i++) {
        if (children[i] == 0) {
            children[i] = pid;
            break;
        }
    }
    if (wait) {
        for (int i = 0; i < 1000 && !port_open(port); i++)
            usleep(5000);
        if (!port_open(port)) {
            fprintf(stderr, "redis-server did not start on port %d\n", port);
            exit(2);
        }
    }
    return pid;
}

static void stop_redis(pid_t pid, int sig) {
    kill(pid, sig);
    if (sig == SIGSTOP || sig == SIGCONT)
        return;
    waitpid(pid, NULL, 0);
    for (int i = 0; i < MAX_CHILDREN; i++)
        if (children[i] == pid)
            children[i] = 0;
}

/* ---- bounded loop runs ---------------------------------------------------- */

typedef int cond_fn(void *ud);
static cond_fn *cur_cond;
static void *cur_ud;

static void guard_cb(struct ev_loop *l, ev_timer *w, int revents) {
    (void)w;
    (void)revents;
    ev_break(l, EVBREAK_ONE);
}

static void poll_cb(struct ev_loop *l, ev_timer *w, int revents) {
    (void)w;
    (void)revents;
    if (cur_cond && cur_cond(cur_ud))
        ev_break(l, EVBREAK_ONE);
}

static void check_cb(struct ev_loop *l, ev_check *w, int revents) {
    (void)w;
    (void)revents;
    if (cur_cond && cur_cond(cur_ud))
        ev_break(l, EVBREAK_ONE);
}

/* Runs the loop until cond(ud) holds or max_s passes; returns cond(ud).
 * cond NULL: just run for max_s. */
static int run_until(cond_fn *cond, void *ud, double max_s) {
    ev_timer guard, poll;
    ev_check check;
    cur_cond = cond;
    cur_ud = ud;
    if (cond && cond(ud))
        return 1;
    ev_timer_init(&guard, guard_cb, max_s, 0.);
    ev_timer_init(&poll, poll_cb, 0.005, 0.005);
    ev_check_init(&check, check_cb);
    ev_timer_start(loop, &guard);
    ev_timer_start(loop, &poll);
    ev_check_start(loop, &check);
    ev_run(loop, 0);
    ev_timer_stop(loop, &guard);
    ev_timer_stop(loop, &poll);
    ev_check_stop(loop, &check);
    cur_cond = NULL;
    return cond ? cond(ud) : 1;
}

#endif
