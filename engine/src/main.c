/* main.c: the jollyjet command line. Kept small: each sub-command is a few
 * calls into the core library. */
#include "config.h"
#include "db.h"
#include "engine_internal.h"
#include "log.h"
#include "master.h"
#include "vm.h"

#include <errno.h>
#include <ev.h>
#include <lauxlib.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char usage[] =
    "usage: jollyjet <command>\n"
    "  serve            run the engine (master + workers)\n"
    "  check            load every module and validate every policy, then exit\n"
    "  reload           ask the running engine (PID_FILE) to reload Lua and policies\n"
    "  spec [args...]   run busted specs inside the engine's event loop\n"
    "  version          print the version\n"
    "  help             this text\n"
    "Configuration comes from the environment (see README.md).\n";

static int load_config(jj_config *cfg) {
    char err[512];
    if (jj_config_load(cfg, err, sizeof err) != 0) {
        fprintf(stderr, "jollyjet: configuration error: %s\n", err);
        return -1;
    }
    jj_log_set_level(cfg->log_level);
    return 0;
}

static int migrate(const jj_config *cfg) {
    char err[1024];
    if (!cfg->db_url[0]) jj_config_make_parent(cfg->db_path);
    if (jj_db_migrate(JJ_CONFIG_DB_TARGET(cfg), cfg->migrations_dir, err, sizeof err) != 0) {
        fprintf(stderr, "jollyjet: %s: migrations failed: %s\n", JJ_CONFIG_DB_VAR(cfg), err);
        return -1;
    }
    return 0;
}

static int cmd_serve(void) {
    jj_config cfg;
    if (load_config(&cfg) || migrate(&cfg)) return 2;
    jj_config_make_parent(cfg.pid_file);
    return jj_master_run(&cfg);
}

static int cmd_check(void) {
    jj_config cfg;
    if (load_config(&cfg)) return 2;
    jj_log_set_level(JJ_LOG_ERROR);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    char err[1024];
    jj_engine *e = jj_engine_new(loop, &cfg, 0, JJ_GEN_CHECK, err, sizeof err);
    if (!e) {
        fprintf(stderr, "jollyjet check: FAILED: %s\n", err);
        return 1;
    }
    jj_engine_free(e);
    printf("jollyjet check: OK (%s, %s)\n", cfg.lua_dir, cfg.policy_dir);
    return 0;
}

static int cmd_reload(void) {
    jj_config cfg;
    if (load_config(&cfg)) return 2;
    FILE *f = fopen(cfg.pid_file, "r");
    int pid = 0;
    if (!f || fscanf(f, "%d", &pid) != 1 || pid <= 0) {
        fprintf(stderr, "jollyjet reload: PID_FILE: cannot read a pid from %s\n", cfg.pid_file);
        if (f) fclose(f);
        return 1;
    }
    fclose(f);
    if (kill(pid, SIGHUP) != 0) {
        fprintf(stderr, "jollyjet reload: cannot signal pid %d: %s\n", pid, strerror(errno));
        return 1;
    }
    printf("jollyjet reload: signalled %d\n", pid);
    return 0;
}

static void spec_done(jj_task *t, int status, lua_State *co, int nres, const char *errmsg, void *ud) {
    (void)t; (void)co; (void)nres;
    int *rc = ud;
    if (status != LUA_OK) {
        fprintf(stderr, "jollyjet spec: %s\n", errmsg ? errmsg : "error");
        *rc = 1;
    } else {
        *rc = 0;
    }
}

/* Runs busted's own runner in a task, so specs can call engine.redis and
 * engine.db for real. busted ends the process with os.exit. */
static int cmd_spec(int argc, char **argv) {
    jj_config cfg;
    if (load_config(&cfg) || migrate(&cfg)) return 2;
    signal(SIGPIPE, SIG_IGN);
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    char err[1024];
    jj_engine *e = jj_engine_new(loop, &cfg, 0, JJ_GEN_BARE, err, sizeof err);
    if (!e) {
        fprintf(stderr, "jollyjet spec: %s\n", err);
        return 1;
    }
    lua_State *L = jj_gen_state(jj_engine_current_gen(e));
    lua_createtable(L, argc, 1);
    lua_pushstring(L, "busted");
    lua_rawseti(L, -2, 0);
    for (int i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i + 1);
    }
    lua_setglobal(L, "arg");
    int rc = -1;
    jj_task *t = jj_task_new(jj_engine_current_gen(e), spec_done, &rc);
    jj_task_unlimited(t);
    lua_State *co = jj_task_state(t);
    if (luaL_loadstring(co, "local redis, core = require('engine.redis'), require('engine.core')\n"
                            "for _ = 1, 100 do if redis.status().up then break end core.sleep(0.05) end\n"
                            "local run = require('busted.runner')({ standalone = false })\nreturn run") != LUA_OK) {
        fprintf(stderr, "jollyjet spec: %s\n", lua_tostring(co, -1));
        return 1;
    }
    jj_task_run(t, 0);
    while (rc < 0) ev_run(loop, EVRUN_ONCE);
    jj_engine_free(e);
    return rc;
}

int main(int argc, char **argv) {
    const char *cmd = argc > 1 ? argv[1] : "serve";
    if (!strcmp(cmd, "serve")) return cmd_serve();
    if (!strcmp(cmd, "check")) return cmd_check();
    if (!strcmp(cmd, "reload")) return cmd_reload();
    if (!strcmp(cmd, "spec")) return cmd_spec(argc - 2, argv + 2);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("jollyjet %s\n", JJ_VERSION);
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
        fputs(usage, stdout);
        return 0;
    }
    fprintf(stderr, "jollyjet: unknown command \"%s\"\n%s", cmd, usage);
    return 2;
}
