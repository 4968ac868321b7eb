/* redis_sentinel.h: Redis Sentinel discovery for one worker.
 *
 * It owns no data connection: it points the worker's command client
 * (jj_redis) and invalidation subscriber (jj_redis_sub) at the master that
 * the sentinels name, through their public API (jj_redis_set_address,
 * jj_redis_sub_set_address), and talks to the sentinels with the same two
 * kinds of client. So it includes no hiredis header and a new transport
 * under redis.c / redis_sub.c serves it unchanged.
 *
 * Discovery follows the Redis "Sentinel clients" guidance: the sentinels
 * are asked in order, each within the connect timeout, SENTINEL
 * get-master-addr-by-name <master>; the first that answers moves to the
 * front of the list; the command client verifies the answer with ROLE in
 * its handshake (a replica fails the handshake, which starts a new round).
 * A subscription to +switch-master on the front sentinel follows failovers;
 * a failed data connection also starts a new round.
 */
#ifndef JJ_REDIS_SENTINEL_H
#define JJ_REDIS_SENTINEL_H

#include "redis.h"

struct ev_loop;
typedef struct jj_sentinel jj_sentinel;

/* The master moved from a known address to another (not called for the
 * first discovery). The engine purges its L1 caches here. */
typedef void jj_sentinel_switch_cb(const char *host, int port, void *ud);

/* list: "host:port,host:port" as config.c normalised it. data and sub are
 * borrowed (created with defer_connect) and must outlive the jj_sentinel;
 * sub may be NULL. password: the sentinels' own (NULL or "": none).
 * Returns NULL on bad arguments or out of memory. */
jj_sentinel *jj_sentinel_new(struct ev_loop *loop, const char *list, const char *master,
                             const char *password, double timeout_ms, jj_redis *data,
                             jj_redis_sub *sub, jj_sentinel_switch_cb *on_switch, void *ud);
void jj_sentinel_free(jj_sentinel *s);

#endif
