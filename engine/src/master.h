/* master.h: the supervising process. */
#ifndef JJ_MASTER_H
#define JJ_MASTER_H

#include "config.h"

/* Forks cfg->workers workers and supervises them: restarts a worker that
 * dies, turns SIGHUP and file changes under LUA_DIR/POLICY_DIR into a
 * reload of every worker, and SIGTERM/SIGINT into a graceful drain.
 * Returns the exit code. */
int jj_master_run(const jj_config *cfg);

#endif
