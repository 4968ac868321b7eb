/* worker.h: one serving process: its own libev loop, listener
 * (SO_REUSEPORT), engine and HTTP server. */
#ifndef JJ_WORKER_H
#define JJ_WORKER_H

#include "config.h"

/* Exit status of a worker whose first generation did not build: the master
 * stops instead of restarting it in a loop. */
#define JJ_EXIT_CONFIG 78

/* Runs until drained after SIGTERM/SIGINT. Returns the process exit code. */
int jj_worker_run(const jj_config *cfg, int worker_id);

#endif
