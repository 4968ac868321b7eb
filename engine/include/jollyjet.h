/* jollyjet.h: embedding the JollyJet engine in a C program with its own
 * libev loop (and, if it likes, its own HTTP layer).
 *
 * The embedded engine is what one worker of `jollyjet serve` runs: the Redis
 * client, the SQLite pool, the Lua generations with every handler and policy,
 * minus the sockets, processes and file watching, which the host owns.
 *
 *   jj_embed *e = jj_embed_new(settings, JJ_EMBED_ENV, err, sizeof err);
 *   jj_embed_add_module(e, "host.stock", luaopen_host_stock);
 *   if (jj_embed_start(e, loop, err, sizeof err) != 0) ...;
 *   jj_embed_dispatch(e, "GET", "/api/products/p-0001", "", headers, NULL, 0, "10.0.0.7",
 *                     on_response, conn);
 *   jj_embed_call(e, "jollyjet.policy.get", (const char *[]){ "cache" }, 1, on_result, ud);
 *   ... ev_run(loop, 0) ...
 *   jj_embed_free(e);
 *
 * Rules:
 * - One engine per process (the L1 caches and the metrics table are
 *   process-wide), used from the loop's thread only.
 * - Nothing here blocks. Lua code that waits on Redis or SQLite yields; its
 *   callback runs on a later loop iteration, or before the call returns when
 *   nothing had to wait. Every callback runs exactly once, unless
 *   jj_embed_free drops it first.
 * - Strings passed in are copied before the call returns. Pointers passed to
 *   a callback are valid during that callback only.
 */
#ifndef JOLLYJET_H
#define JOLLYJET_H

#include <lua.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
typedef struct jj_embed jj_embed;

/* jj_embed_new flag: a setting not in `settings` is read from the
 * environment (the variables of README.md, Configuration). */
#define JJ_EMBED_ENV 1

/* Creates an engine from its configuration; nothing is connected yet.
 * settings: NULL or a NULL-terminated array of name, value pairs, e.g.
 * { "REDIS_PORT", "6380", "WORKERS", "1", NULL }, with the names and values
 * of README.md's configuration table. A name the engine does not read is an
 * error (catches typos). Returns NULL with "NAME: problem" in err. */
jj_embed *jj_embed_new(const char *const *settings, int flags, char *err, size_t errlen);

/* Adds a Lua module written in C: every generation gets
 * package.preload[name] = open, so Lua code can `require(name)`. Call before
 * jj_embed_start. Names under "engine." and "jollyjet." are the engine's.
 * Returns 0, or -1 (bad name, already started, out of memory). */
int jj_embed_add_module(jj_embed *e, const char *name, lua_CFunction open);

/* Applies the database migrations (MIGRATIONS_DIR), then attaches the engine
 * to loop: Redis connects in the background, and the first generation loads
 * every Lua module and validates every policy. Returns 0, or -1 with
 * "file:line: reason" (or another message) in err. */
int jj_embed_start(jj_embed *e, struct ev_loop *loop, char *err, size_t errlen);

/* Builds a new generation from LUA_DIR / POLICY_DIR and swaps it in; work
 * in flight finishes on the old one. On failure the current generation keeps
 * serving. Returns 0, or -1 with "file:line: reason" in err. */
int jj_embed_reload(jj_embed *e, char *err, size_t errlen);

/* ok = 1: value is the function's first result as a string (a table is
 * JSON-encoded, a boolean is "true"/"false"), or NULL when it returned
 * nothing or nil. ok = 0: value is the error message with a traceback. */
typedef void jj_embed_result(void *ud, int ok, const char *value, size_t len);

/* Runs require(module)[function](args...) in a coroutine of the current
 * generation, with the engine's modules (engine.redis, engine.db, ...)
 * available and yielding. function is "module.function", split at the last
 * dot ("jollyjet.policy.get"); args are nargs strings. done is called once.
 * Returns 0, or -1 when the task could not start (done was called with
 * ok = 0). */
int jj_embed_call(jj_embed *e, const char *function, const char *const *args, int nargs,
                  jj_embed_result *done, void *ud);

/* The response of a dispatched request: headers holds nheaders name, value
 * pairs (2 * nheaders strings, a name may repeat, e.g. Set-Cookie), values
 * without CR or LF. Content-Length, Date and connection handling are the
 * host's. */
typedef void jj_embed_response(void *ud, int status, const char *const *headers, size_t nheaders,
                               const char *body, size_t body_len);

/* Handles one HTTP request through the engine's router, rate limits,
 * caches and Lua handlers, exactly as `jollyjet serve` would. path is the
 * decoded path ("/api/products/p-0001"), query the raw query string without
 * "?" (NULL or "" for none), headers a NULL-terminated array of name, value
 * pairs (NULL for none), peer the client address (rate limits key on it;
 * NULL: "127.0.0.1"). respond is called exactly once: a handler error is a
 * 500 JSON response. Returns 0, or -1 when the engine could not take the
 * request (respond was called with a 503). */
int jj_embed_dispatch(jj_embed *e, const char *method, const char *path, const char *query,
                      const char *const *headers, const char *body, size_t body_len, const char *peer,
                      jj_embed_response *respond, void *ud);

/* Closes Redis, the database and the Lua state. Callbacks of work still in
 * flight are dropped (never called). Call it after the loop stopped running
 * engine work (as a worker does at exit). NULL is allowed. */
void jj_embed_free(jj_embed *e);

#ifdef __cplusplus
}
#endif

#endif
