/* master.c: supervision without an event library: signalfd, inotify and a
 * readiness pipe under poll(2). Keeping libev out of the master means a
 * forked worker starts with a clean slate (its own default loop, no signal
 * handlers inherited from a loop it does not run). */
#include "master.h"
#include "log.h"
#include "metrics.h"
#include "worker.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define RELOAD_DEBOUNCE_S 0.15
#define KILL_AFTER_GRACE_S 5.0

typedef struct {
    pid_t pid;
    double started;
    double restart_at;   /* > 0: restart scheduled */
    double backoff;
} slot;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void watch_tree(int ifd, const char *dir) {
    uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_ATTRIB;
    if (inotify_add_watch(ifd, dir, mask) < 0) {
        JJ_WARN("cannot watch %s: %s", dir, strerror(errno));
        return;
    }
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) watch_tree(ifd, path);
    }
    closedir(d);
}

static void signal_all(slot *w, int n, int sig) {
    for (int i = 0; i < n; i++)
        if (w[i].pid > 0) kill(w[i].pid, sig);
}

static pid_t spawn(const jj_config *cfg, int id, const sigset_t *oldmask, int *closefds, int ready_w) {
    pid_t master = getpid();
    pid_t pid = fork();
    if (pid != 0) return pid;
    /* child */
    for (int i = 0; closefds[i] >= 0; i++) close(closefds[i]);
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != master) _exit(0);
    sigprocmask(SIG_SETMASK, oldmask, NULL);
    char fdbuf[16];
    snprintf(fdbuf, sizeof fdbuf, "%d", ready_w);
    setenv("JJ_READY_FD", fdbuf, 1);
    int rc = jj_worker_run(cfg, id);
    /* exit, not _exit: the sanitizer build checks the worker for leaks. */
    exit(rc);
}

int jj_master_run(const jj_config *cfg) {
    jj_log_set_worker(-1);
    sigset_t mask, oldmask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGHUP);
    sigprocmask(SIG_BLOCK, &mask, &oldmask);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    int ready[2];
    if (sfd < 0 || pipe2(ready, O_CLOEXEC | O_NONBLOCK) != 0) {
        JJ_ERROR("master: %s", strerror(errno));
        return 1;
    }
    fcntl(ready[1], F_SETFD, 0);   /* workers inherit the write end */
    int ifd = -1;
    if (cfg->watch) {
        ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
        if (ifd >= 0) {
            watch_tree(ifd, cfg->lua_dir);
            watch_tree(ifd, cfg->policy_dir);
        }
    }
    FILE *pf = fopen(cfg->pid_file, "w");
    if (pf) { fprintf(pf, "%d\n", (int)getpid()); fclose(pf); }
    else JJ_WARN("PID_FILE: cannot write %s: %s", cfg->pid_file, strerror(errno));

    int n = cfg->workers;
    slot *w = calloc((size_t)n, sizeof *w);
    if (jj_metrics_init(0) != 0) JJ_WARN("metrics: shared memory unavailable (%s): per-worker counts", strerror(errno));
    jj_metrics_set("workers", n);
    int closefds[] = {sfd, ready[0], ifd, -1};
    if (ifd < 0) closefds[2] = -1;
    for (int i = 0; i < n; i++) {
        w[i].pid = spawn(cfg, i, &oldmask, closefds, ready[1]);
        w[i].started = now_s();
        w[i].backoff = 0.1;
    }
    JJ_INFO("master %d started %d worker(s) on %s:%d", (int)getpid(), n, cfg->host, cfg->port);
    if (!cfg->ratelimit_enabled) JJ_INFO("RATELIMIT_ENABLED=false: every rate-limit rule is off");

    int stopping = 0, exit_code = 0, readies = 0;
    double reload_at = 0, kill_at = 0;
    for (;;) {
        int alive = 0;
        for (int i = 0; i < n; i++) alive += w[i].pid > 0;
        if (stopping && alive == 0) break;

        double now = now_s(), next = now + 1.0;
        if (reload_at > 0 && reload_at < next) next = reload_at;
        if (kill_at > 0 && kill_at < next) next = kill_at;
        for (int i = 0; i < n; i++)
            if (w[i].restart_at > 0 && w[i].restart_at < next) next = w[i].restart_at;
        int timeout = (int)((next - now) * 1000) + 1;
        struct pollfd pfd[3] = {{sfd, POLLIN, 0}, {ready[0], POLLIN, 0}, {ifd, POLLIN, 0}};
        int np = poll(pfd, ifd >= 0 ? 3 : 2, timeout < 0 ? 0 : timeout);
        if (np < 0 && errno != EINTR) break;
        now = now_s();

        if (pfd[1].revents & POLLIN) {
            char buf[64];
            ssize_t r;
            while ((r = read(ready[0], buf, sizeof buf)) > 0) readies += (int)r;
        }
        if (ifd >= 0 && (pfd[2].revents & POLLIN)) {
            char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
            ssize_t r;
            while ((r = read(ifd, buf, sizeof buf)) > 0) {
                for (char *p = buf; p < buf + r;) {
                    struct inotify_event *ev = (struct inotify_event *)p;
                    if ((ev->mask & IN_CREATE) && (ev->mask & IN_ISDIR)) {
                        watch_tree(ifd, cfg->lua_dir);   /* cheap: re-adding a watch is a no-op */
                        watch_tree(ifd, cfg->policy_dir);
                    }
                    p += sizeof *ev + ev->len;
                }
            }
            if (!stopping) reload_at = now + RELOAD_DEBOUNCE_S;
        }
        if (pfd[0].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo == SIGHUP && !stopping) {
                    JJ_INFO("SIGHUP: reloading every worker");
                    signal_all(w, n, SIGHUP);
                } else if ((si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT) && !stopping) {
                    JJ_INFO("%s: draining workers", si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT");
                    stopping = 1;
                    kill_at = now + cfg->grace_s + KILL_AFTER_GRACE_S;
                    signal_all(w, n, SIGTERM);
                }
            }
            int status;
            pid_t pid;
            while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
                for (int i = 0; i < n; i++) {
                    if (w[i].pid != pid) continue;
                    w[i].pid = 0;
                    if (stopping) break;
                    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
                    if (code == JJ_EXIT_CONFIG && readies == 0) {
                        JJ_ERROR("worker %d could not start (see above); stopping", i);
                        stopping = 1;
                        exit_code = 1;
                        kill_at = now + cfg->grace_s + KILL_AFTER_GRACE_S;
                        signal_all(w, n, SIGTERM);
                        break;
                    }
                    if (now - w[i].started > 10) w[i].backoff = 0.1;
                    if (WIFSIGNALED(status))
                        JJ_ERROR("worker %d (pid %d) killed by signal %d; restarting in %.1fs", i, (int)pid,
                                 WTERMSIG(status), w[i].backoff);
                    else
                        JJ_ERROR("worker %d (pid %d) exited with %d; restarting in %.1fs", i, (int)pid, code,
                                 w[i].backoff);
                    w[i].restart_at = now + w[i].backoff;
                    jj_metrics_add("worker_restarts", 1);
                    w[i].backoff = w[i].backoff * 2 > 5 ? 5 : w[i].backoff * 2;
                    break;
                }
            }
        }
        for (int i = 0; i < n && !stopping; i++) {
            if (w[i].restart_at > 0 && w[i].restart_at <= now) {
                w[i].restart_at = 0;
                w[i].pid = spawn(cfg, i, &oldmask, closefds, ready[1]);
                w[i].started = now;
            }
        }
        if (reload_at > 0 && reload_at <= now && !stopping) {
            reload_at = 0;
            JJ_INFO("files changed under %s or %s: reloading every worker", cfg->lua_dir, cfg->policy_dir);
            signal_all(w, n, SIGHUP);
        }
        if (stopping && kill_at > 0 && now >= kill_at) {
            JJ_WARN("workers did not drain in time; killing them");
            signal_all(w, n, SIGKILL);
            kill_at = 0;
        }
    }
    if (pf) unlink(cfg->pid_file);
    free(w);
    close(sfd);
    close(ready[0]);
    close(ready[1]);
    if (ifd >= 0) close(ifd);
    JJ_INFO("master stopped");
    return exit_code;
}
