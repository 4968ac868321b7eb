/* lua_redis.c: the `engine.redis` module, Redis for request handlers.
 *
 *   res, err     = redis.call(cmd, ...)
 *   res, err     = redis.call_timeout(ms, cmd, ...)
 *   results, err = redis.pipeline({ {cmd, ...}, ... })
 *   sha          = redis.script(src)                  (Redis-side Lua 5.1)
 *   res, err     = redis.evalsha(sha, keys [, args])
 *   k            = redis.key(part, ...)               prefix .. parts joined by ":"
 *   st           = redis.status()
 *   redis.null   light userdata: a nil element of an array reply
 *
 * Replies: bulk string and status -> string, integer -> integer, nil bulk ->
 * nil (redis.null inside arrays), array -> sequence, error -> nil, message
 * (as an element of an array or a pipeline: { err = message }).
 *
 * Misuse raises: an argument that is not a string or number, commands that
 * cannot work on the worker's one shared pipelined connection (KEYS,
 * SUBSCRIBE, MULTI through redis.call, ...), an evalsha of a script not
 * registered with redis.script. Redis trouble returns nil, err:
 * "redis unavailable" / "redis overloaded" at once without yielding,
 * "redis connection lost", "timeout". A timeout does not cancel the command.
 *
 * Calls yield the task (task.h) and are resumed exactly once, by the reply
 * callback or the wait's timeout. Replies are turned into Lua values on the
 * VM's main thread under pcall (running out of Lua memory is an error value,
 * not a panic) and moved to the suspended coroutine.
 */
#include "engine.h"
#include "lua_modules.h"
#include "redis.h"
#include "task.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define MAX_DEPTH 64   /* nesting of array replies converted to tables */

/* Its address is redis.null. */
static char null_sentinel;

/* ------------------------------------------------------------- arguments */

/* [-0, +0, v] Raises if the command named by the string at idx (with its
 * first argument at idx + 1, for CLIENT REPLY) may not be sent
 * (jj_redis_refused holds the list). */
static void check_command(lua_State *L, int idx, int in_pipeline) {
    const char *argv[2];
    size_t lens[2];
    argv[0] = lua_tolstring(L, idx, &lens[0]);
    int argc = 1;
    if (lua_type(L, idx + 1) == LUA_TSTRING) argv[argc++] = lua_tolstring(L, idx + 1, &lens[1]);
    const char *why = jj_redis_refused(argc, argv, lens, in_pipeline);
    if (why) luaL_error(L, "%s", why);
}

/* [-0, +0, v] Raises unless the value at idx can be an argument. */
static void check_arg(lua_State *L, int idx, const char *fn, int n) {
    int t = lua_type(L, idx);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
        luaL_error(L, "%s: argument %d is a %s (only strings and numbers can be sent)",
                   fn, n, luaL_typename(L, idx));
}

/* Arguments of one or more commands, in a scratch userdata on the stack
 * (collected with it, so raising never leaks). Strings are borrowed from
 * Lua; numbers are formatted into the per-argument buffer. */
typedef struct argbuf {
    const char **argv;
    size_t *argvlen;
    char (*num)[32];
} argbuf;

/* [-0, +1, m] Room for n arguments. */
static void arg_space(lua_State *L, size_t n, argbuf *a) {
    size_t each = sizeof(size_t) + sizeof(char *) + 32;
    if (n == 0)
        n = 1;
    if (n > ((size_t)-1) / each / 2)
        luaL_error(L, "too many arguments");
    char *p = lua_newuserdatauv(L, n * each, 0);
    a->argvlen = (size_t *)p;
    a->argv = (const char **)(p + n * sizeof(size_t));
    a->num = (char (*)[32])(p + n * (sizeof(size_t) + sizeof(char *)));
}

/* [-0, +0, -] Argument i from the value at idx, already checked to be a
 * string or a number. A string is borrowed: valid while the value stays
 * reachable from the stack (redis.c copies before the C function returns).
 * Integers are sent as integers, floats with 17 significant digits so they
 * read back exactly. Never raises. */
static void set_arg(lua_State *L, int idx, argbuf *a, size_t i) {
    if (lua_type(L, idx) == LUA_TSTRING) {
        a->argv[i] = lua_tolstring(L, idx, &a->argvlen[i]);
        return;
    }
    int n;
    if (lua_isinteger(L, idx))
        n = snprintf(a->num[i], sizeof a->num[i], "%lld", (long long)lua_tointeger(L, idx));
    else
        n = snprintf(a->num[i], sizeof a->num[i], "%.17g", (double)lua_tonumber(L, idx));
    a->argv[i] = a->num[i];
    a->argvlen[i] = n < 0 ? 0 : (size_t)n;
}

/* ------------------------------------------------------------ replies */

/* Reply trees come from hiredis (jj_redis_reply, valid during the callback)
 * or from our own copies (pipelines must keep replies until the last one
 * arrives); one converter reads both through this view. */
typedef struct view {
    int (*type)(const void *n);
    const char *(*str)(const void *n, size_t *len);
    long long (*integer)(const void *n);
    size_t (*elements)(const void *n);
    const void *(*element)(const void *n, size_t i);
} view;

static int rp_type(const void *n) { return jj_reply_type(n); }
static const char *rp_str(const void *n, size_t *len) { return jj_reply_str(n, len); }
static long long rp_integer(const void *n) { return jj_reply_integer(n); }
static size_t rp_elements(const void *n) { return jj_reply_elements(n); }
static const void *rp_element(const void *n, size_t i) { return jj_reply_element(n, i); }
static const view reply_view = { rp_type, rp_str, rp_integer, rp_elements, rp_element };

/* An owned copy of a reply tree (malloc'd). */
typedef struct rval {
    int type;
    long long integer;
    char *str;
    size_t len;           /* bytes of str, or number of elems */
    struct rval *elems;
} rval;

static int rv_type(const void *n) { return ((const rval *)n)->type; }
static const char *rv_str(const void *n, size_t *len) {
    const rval *v = n;
    *len = v->str ? v->len : 0;
    return v->str;
}
static long long rv_integer(const void *n) { return ((const rval *)n)->integer; }
static size_t rv_elements(const void *n) {
    const rval *v = n;
    return v->type == JJ_REPLY_ARRAY ? v->len : 0;
}
static const void *rv_element(const void *n, size_t i) { return &((const rval *)n)->elems[i]; }
static const view rval_view = { rv_type, rv_str, rv_integer, rv_elements, rv_element };

static void rval_clear(rval *v) {
    if (v->type == JJ_REPLY_ARRAY && v->elems) {
        for (size_t i = 0; i < v->len; i++)
            rval_clear(&v->elems[i]);
    }
    free(v->elems);
    free(v->str);
    memset(v, 0, sizeof *v);
}

/* Copies src into dst (zeroed). Returns -1 when out of memory or nested too
 * deeply; dst is then cleared. */
static int rval_copy(rval *dst, const jj_redis_reply *src, int depth) {
    dst->type = jj_reply_type(src);
    switch (dst->type) {
    case JJ_REPLY_STRING:
    case JJ_REPLY_STATUS:
    case JJ_REPLY_ERROR: {
        size_t len;
        const char *s = jj_reply_str(src, &len);
        dst->str = malloc(len + 1);
        if (dst->str == NULL)
            return -1;
        if (len)
            memcpy(dst->str, s, len);
        dst->str[len] = '\0';
        dst->len = len;
        return 0;
    }
    case JJ_REPLY_INTEGER:
        dst->integer = jj_reply_integer(src);
        return 0;
    case JJ_REPLY_ARRAY: {
        size_t n = jj_reply_elements(src);
        if (depth >= MAX_DEPTH)
            return -1;
        dst->elems = n ? calloc(n, sizeof *dst->elems) : NULL;
        if (n && dst->elems == NULL)
            return -1;
        dst->len = n;
        for (size_t i = 0; i < n; i++) {
            if (rval_copy(&dst->elems[i], jj_reply_element(src, i), depth + 1) != 0) {
                rval_clear(dst);
                return -1;
            }
        }
        return 0;
    }
    default:
        return 0;
    }
}

/* [-0, +1, m] Pushes node as a value inside an array or a pipeline: nil is
 * redis.null, an error is { err = message }. */
static void push_node(lua_State *L, const view *v, const void *node, int depth) {
    size_t len;
    const char *s;
    switch (v->type(node)) {
    case JJ_REPLY_STRING:
    case JJ_REPLY_STATUS:
        s = v->str(node, &len);
        lua_pushlstring(L, s ? s : "", len);
        return;
    case JJ_REPLY_INTEGER:
        lua_pushinteger(L, (lua_Integer)v->integer(node));
        return;
    case JJ_REPLY_ERROR:
        s = v->str(node, &len);
        lua_createtable(L, 0, 1);
        lua_pushlstring(L, s ? s : "", len);
        lua_setfield(L, -2, "err");
        return;
    case JJ_REPLY_ARRAY: {
        size_t n = v->elements(node);
        if (depth >= MAX_DEPTH)
            luaL_error(L, "redis reply nested too deeply");
        luaL_checkstack(L, 2, "redis reply");
        lua_createtable(L, n > 0x7fffffff ? 0 : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push_node(L, v, v->element(node, i), depth + 1);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return;
    }
    default:
        lua_pushlightuserdata(L, &null_sentinel);
        return;
    }
}

/* What a finished call resumes its task with. */
typedef struct outcome {
    const view *v;
    const void *reply;     /* NULL with err, or for a pipeline */
    const char *err;       /* static string */
    rval *results;         /* pipeline: n replies */
    int n;
    int pipeline;
} outcome;

/* [-1, +(1|2), m] Runs under lua_pcall on the VM's main thread; argument:
 * the outcome (light userdata). Returns the values the Lua call returns. */
static int push_outcome(lua_State *L) {
    const outcome *o = lua_touserdata(L, 1);
    lua_settop(L, 0);
    if (o->err) {
        lua_pushnil(L);
        lua_pushstring(L, o->err);
        return 2;
    }
    if (o->pipeline) {
        lua_createtable(L, o->n, 0);
        for (int i = 0; i < o->n; i++) {
            push_node(L, &rval_view, &o->results[i], 0);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        return 1;
    }
    size_t len;
    const char *s;
    switch (o->v->type(o->reply)) {
    case JJ_REPLY_ERROR:
        s = o->v->str(o->reply, &len);
        lua_pushnil(L);
        lua_pushlstring(L, s ? s : "", len);
        return 2;
    case JJ_REPLY_NIL:
        lua_pushnil(L);
        return 1;
    default:
        push_node(L, o->v, o->reply, 0);
        return 1;
    }
}

/* Resumes the task waiting on w with push_outcome's values; consumes the
 * operation's reference of w. lua_checkstack, lua_rawgeti of the main
 * thread and lua_xmove do not raise; everything that allocates runs under
 * pcall. */
static void finish(jj_wait *w, const outcome *o) { jj_wait_finish(w, push_outcome, (void *)o, 0); }

/* ---------------------------------------------------------- single calls */

/* Reply callback of call/call_timeout/evalsha: privdata is the wait. */
static void on_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    outcome o = { &reply_view, reply, err, NULL, 0, 0 };
    finish(privdata, &o);
}

static jj_redis *client_of(lua_State *L, double *default_ms) {
    jj_engine *e = jj_engine_of(L);
    if (default_ms)
        *default_ms = jj_engine_io_timeout_ms(e);
    return jj_engine_redis(e);
}

static int push_error(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

/* Redis refusing a call at once: "unavailable"/"overloaded" are results,
 * anything else from redis.c is misuse and raises. */
static int refused_now(lua_State *L, const char *err) {
    if (err && (strcmp(err, "redis unavailable") == 0 || strcmp(err, "redis overloaded") == 0))
        return push_error(L, err);
    return luaL_error(L, "redis: %s", err ? err : "command refused");
}

/* [-0, +1, e] The command at `first` and its arguments up to the top.
 * Yields unless Redis refuses at once. Everything that can raise happens
 * before the command is handed to redis.c. */
static int run_call(lua_State *L, int first, double timeout_ms, const char *fn) {
    int top = lua_gettop(L);
    int argc = top - first + 1;
    if (argc < 1 || lua_type(L, first) != LUA_TSTRING)
        return luaL_error(L, "%s: the command name must be a string", fn);
    for (int i = first; i <= top; i++)
        check_arg(L, i, fn, i - first + 1);
    check_command(L, first, 0);

    argbuf a;
    arg_space(L, (size_t)argc, &a);
    for (int i = 0; i < argc; i++)
        set_arg(L, first + i, &a, (size_t)i);

    double default_ms;
    jj_redis *r = client_of(L, &default_ms);
    jj_wait *w = jj_wait_new(L, timeout_ms > 0 ? timeout_ms : default_ms);
    const char *err = NULL;
    if (jj_redis_command(r, argc, a.argv, a.argvlen, on_reply, w, &err) != 0) {
        jj_wait_abandon(w);
        return refused_now(L, err);
    }
    return jj_wait_yield(L, w);
}

/* [-(1+n), +(1|2), e] redis.call(cmd, ...) -> res | nil, err */
static int l_call(lua_State *L) {
    return run_call(L, 1, 0, "redis.call");
}

/* [-(2+n), +(1|2), e] redis.call_timeout(ms, cmd, ...) -> res | nil, err */
static int l_call_timeout(lua_State *L) {
    double ms = (double)luaL_checknumber(L, 1);
    luaL_argcheck(L, ms > 0 && ms <= 86400000.0, 1, "timeout must be between 0 and 86400000 ms");
    return run_call(L, 2, ms, "redis.call_timeout");
}

/* ------------------------------------------------------------- pipeline */

typedef struct pipe_state pipe_state;
typedef struct pipe_slot {
    pipe_state *p;
    int i;
} pipe_slot;

struct pipe_state {
    jj_wait *w;
    int n;              /* commands sent */
    int left;           /* replies still to come */
    const char *err;    /* connection lost, or a later command refused */
    int oom;
    rval *results;      /* n copies, kept until the last reply */
    pipe_slot *slots;   /* privdata of each command */
};

static void pipe_free(pipe_state *p) {
    for (int i = 0; i < p->n; i++)
        rval_clear(&p->results[i]);
    free(p->results);
    free(p->slots);
    free(p);
}

static void on_pipe_reply(const jj_redis_reply *reply, const char *err, void *privdata) {
    pipe_slot *s = privdata;
    pipe_state *p = s->p;
    if (err) {
        if (p->err == NULL)
            p->err = err;
    } else if (p->err == NULL && !p->oom && jj_wait_target(p->w) != NULL) {
        /* Copy only while someone still waits for the results. */
        if (rval_copy(&p->results[s->i], reply, 0) != 0)
            p->oom = 1;
    }
    if (--p->left > 0)
        return;
    outcome o = { NULL, NULL, p->err, p->results, p->n, 1 };
    if (o.err == NULL && p->oom)
        o.err = "not enough memory";
    finish(p->w, &o);
    pipe_free(p);
}

/* [-0, +0, v] Validates cmds[i] (a non-empty sequence of strings and
 * numbers, a command allowed in a pipeline), tracking MULTI/EXEC nesting.
 * Raw access only: no metamethod runs, so the later pass that fills the
 * arguments sees exactly what was checked. Returns the argument count. */
static size_t check_pipe_entry(lua_State *L, int i, int *in_multi) {
    if (lua_rawgeti(L, 1, i) != LUA_TTABLE)
        luaL_error(L, "redis.pipeline: command %d is a %s, not a table", i, luaL_typename(L, -1));
    size_t len = lua_rawlen(L, -1);
    if (len < 1 || len > 1000000)
        luaL_error(L, "redis.pipeline: command %d is empty or too long", i);
    if (lua_rawgeti(L, -1, 1) != LUA_TSTRING)
        luaL_error(L, "redis.pipeline: command %d: the command name must be a string", i);
    lua_rawgeti(L, -2, 2);   /* for CLIENT REPLY */
    check_command(L, -2, 1);
    size_t nlen;
    const char *name = lua_tolstring(L, -2, &nlen);
    int multi = nlen == 5 && strncasecmp(name, "MULTI", 5) == 0;
    int end = (nlen == 4 && strncasecmp(name, "EXEC", 4) == 0) ||
              (nlen == 7 && strncasecmp(name, "DISCARD", 7) == 0);
    if (multi && *in_multi)
        luaL_error(L, "redis.pipeline: command %d: MULTI inside MULTI", i);
    if (end && !*in_multi)
        luaL_error(L, "redis.pipeline: command %d: %s without MULTI", i, name);
    *in_multi = multi ? 1 : end ? 0 : *in_multi;
    lua_pop(L, 2);
    for (size_t k = 1; k <= len; k++) {
        int t = lua_rawgeti(L, -1, (lua_Integer)k);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_error(L, "redis.pipeline: command %d, argument %d is a %s (only strings and "
                       "numbers can be sent)", i, (int)k, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    return len;
}

/* [-1, +(1|2), e] redis.pipeline({ {cmd, ...}, ... }) -> results | nil, err
 * All commands are validated and converted first, then sent back to back
 * with no chance of raising in between; one yield for all the replies. */
static int l_pipeline(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    size_t n = lua_rawlen(L, 1);
    if (n > 1000000)
        return luaL_error(L, "redis.pipeline: too many commands");
    int in_multi = 0;
    size_t total = 0;
    for (size_t i = 1; i <= n; i++) {
        total += check_pipe_entry(L, (int)i, &in_multi);
        if (total > 10000000)
            return luaL_error(L, "redis.pipeline: too many arguments");
    }
    if (in_multi)
        return luaL_error(L, "redis.pipeline: MULTI without EXEC or DISCARD");
    if (n == 0) {
        lua_newtable(L);
        return 1;
    }

    /* Arguments: strings stay anchored by the command tables (argument 1). */
    argbuf a;
    arg_space(L, total, &a);   /* stack index 2 */
    size_t off = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i);
        size_t len = lua_rawlen(L, -1);
        for (size_t k = 1; k <= len; k++) {
            lua_rawgeti(L, -1, (lua_Integer)k);
            set_arg(L, -1, &a, off++);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }

    double default_ms;
    jj_redis *r = client_of(L, &default_ms);
    jj_wait *w = jj_wait_new(L, default_ms);   /* raises outside a task */
    pipe_state *p = calloc(1, sizeof *p);
    if (p) {
        p->results = calloc(n, sizeof *p->results);
        p->slots = calloc(n, sizeof *p->slots);
    }
    if (p == NULL || p->results == NULL || p->slots == NULL) {
        if (p)
            pipe_free(p);
        jj_wait_abandon(w);
        return luaL_error(L, "not enough memory");
    }
    p->w = w;

    /* Nothing below raises: once a command is sent its callback owns p. */
    const char *err = NULL;
    int sent = 0;
    off = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i);
        int argc = (int)lua_rawlen(L, -1);
        lua_pop(L, 1);
        p->slots[sent].p = p;
        p->slots[sent].i = sent;
        if (jj_redis_command(r, argc, a.argv + off, a.argvlen + off, on_pipe_reply,
                             &p->slots[sent], &err) != 0)
            break;
        sent++;
        off += (size_t)argc;
    }
    if (sent == 0) {
        pipe_free(p);
        jj_wait_abandon(w);
        return refused_now(L, err);
    }
    /* Callbacks never run inside jj_redis_command, so setting the counts
     * after the loop is safe. A later refusal fails the whole pipeline once
     * the commands already sent have answered. */
    p->n = sent;
    p->left = sent;
    if ((size_t)sent < n)
        p->err = err ? err : "redis unavailable";
    return jj_wait_yield(L, w);
}

/* --------------------------------------------------------------- scripts */

/* [-1, +1, e] redis.script(src) -> sha. Registers the script with the
 * client (loaded on every connect) and in this VM's table of known SHAs
 * (upvalue 1). Works at load time. */
static int l_script(lua_State *L) {
    size_t len;
    const char *src = luaL_checklstring(L, 1, &len);
    char sha[41];
    if (jj_redis_script(client_of(L, NULL), src, len, sha) != 0)
        return luaL_error(L, "redis.script: not enough memory");
    lua_pushstring(L, sha);
    lua_pushvalue(L, -1);
    lua_pushboolean(L, 1);
    lua_rawset(L, lua_upvalueindex(1));
    return 1;
}

/* [-0, +0, v] Checks that the value at idx is nil (when optional) or a
 * sequence of strings and numbers (raw access); returns its length. */
static size_t check_list(lua_State *L, int idx, const char *what, int optional) {
    if (optional && lua_isnoneornil(L, idx))
        return 0;
    if (lua_type(L, idx) != LUA_TTABLE)
        luaL_error(L, "redis.evalsha: %s must be a table (a sequence)", what);
    size_t n = lua_rawlen(L, idx);
    if (n > 1000000)
        luaL_error(L, "redis.evalsha: too many %s", what);
    for (size_t i = 1; i <= n; i++) {
        int t = lua_rawgeti(L, idx, (lua_Integer)i);
        if (t != LUA_TSTRING && t != LUA_TNUMBER)
            luaL_error(L, "redis.evalsha: %s[%d] is a %s (only strings and numbers can be sent)",
                       what, (int)i, luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    return n;
}

/* [-(2|3), +(1|2), e] redis.evalsha(sha, keys [, args]) -> res | nil, err */
static int l_evalsha(lua_State *L) {
    size_t shalen;
    const char *sha = luaL_checklstring(L, 1, &shalen);
    lua_settop(L, 3);
    lua_pushvalue(L, 1);
    if (shalen != 40 || lua_rawget(L, lua_upvalueindex(1)) == LUA_TNIL)
        return luaL_error(L, "redis.evalsha: unknown script %s (register it with redis.script)", sha);
    lua_pop(L, 1);
    size_t nkeys = check_list(L, 2, "keys", 0);
    size_t nargs = check_list(L, 3, "args", 1);
    size_t argc = nkeys + nargs;

    /* Strings stay anchored by the keys and args tables (arguments 2, 3). */
    argbuf a;
    arg_space(L, argc, &a);
    for (size_t i = 0; i < argc; i++) {
        lua_rawgeti(L, i < nkeys ? 2 : 3, (lua_Integer)(i < nkeys ? i + 1 : i - nkeys + 1));
        set_arg(L, -1, &a, i);
        lua_pop(L, 1);
    }

    double default_ms;
    jj_redis *r = client_of(L, &default_ms);
    jj_wait *w = jj_wait_new(L, default_ms);
    const char *err = NULL;
    if (jj_redis_evalsha(r, sha, (int)nkeys, (int)argc, a.argv, a.argvlen, on_reply, w, &err) != 0) {
        jj_wait_abandon(w);
        return refused_now(L, err);
    }
    return jj_wait_yield(L, w);
}

/* ----------------------------------------------------------------- misc */

/* [-n, +1, e] redis.key(part, ...) -> prefix .. part1 .. ":" .. part2 ...
 * With no parts: the prefix alone. Parts are strings or numbers. */
static int l_key(lua_State *L) {
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++)
        check_arg(L, i, "redis.key", i);
    const char *prefix = jj_redis_prefix(client_of(L, NULL));
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    luaL_addstring(&b, prefix);
    for (int i = 1; i <= n; i++) {
        if (i > 1)
            luaL_addchar(&b, ':');
        size_t len;
        char num[32];
        const char *s;
        if (lua_type(L, i) == LUA_TSTRING) {
            s = lua_tolstring(L, i, &len);
        } else {
            int k = lua_isinteger(L, i)
                        ? snprintf(num, sizeof num, "%lld", (long long)lua_tointeger(L, i))
                        : snprintf(num, sizeof num, "%.17g", (double)lua_tonumber(L, i));
            s = num;
            len = k < 0 ? 0 : (size_t)k;
        }
        luaL_addlstring(&b, s, len);
    }
    luaL_pushresult(&b);
    return 1;
}

/* [-0, +1, m] redis.status() -> { up, latency_ms, reconnects, script_reloads, last_error,
 *   address, sentinel = { master, switches, last_switch, error } (Sentinel mode) } */
/* [-0, +2, -] redis.ready() -> up, reconnects: the two facts a hot path
 * needs, without building status()'s table. */
static int l_ready(lua_State *L) {
    jj_redis_status st;
    jj_redis_get_status(client_of(L, NULL), &st);
    lua_pushboolean(L, st.up);
    lua_pushinteger(L, (lua_Integer)st.reconnects);
    return 2;
}

static int l_status(lua_State *L) {
    jj_redis_status st;
    jj_redis_get_status(client_of(L, NULL), &st);
    lua_createtable(L, 0, 5);
    lua_pushboolean(L, st.up);
    lua_setfield(L, -2, "up");
    if (st.latency_ms >= 0) {
        lua_pushnumber(L, st.latency_ms);
        lua_setfield(L, -2, "latency_ms");
    }
    lua_pushinteger(L, (lua_Integer)st.reconnects);
    lua_setfield(L, -2, "reconnects");
    lua_pushinteger(L, (lua_Integer)st.script_reloads);
    lua_setfield(L, -2, "script_reloads");
    if (st.last_error && st.last_error[0]) {
        lua_pushstring(L, st.last_error);
        lua_setfield(L, -2, "last_error");
    }
    if (st.address && st.address[0]) {
        lua_pushstring(L, st.address);
        lua_setfield(L, -2, "address");
    }
    if (st.sentinel_master) {   /* Sentinel mode */
        lua_createtable(L, 0, 4);
        lua_pushstring(L, st.sentinel_master);
        lua_setfield(L, -2, "master");
        lua_pushinteger(L, (lua_Integer)st.switches);
        lua_setfield(L, -2, "switches");
        if (st.last_switch > 0) {
            lua_pushnumber(L, st.last_switch);
            lua_setfield(L, -2, "last_switch");
        }
        if (st.sentinel_error && st.sentinel_error[0]) {
            lua_pushstring(L, st.sentinel_error);
            lua_setfield(L, -2, "error");
        }
        lua_setfield(L, -2, "sentinel");
    }
    return 1;
}

/* [-0, +1, m] */
int luaopen_engine_redis(lua_State *L) {
    static const luaL_Reg fns[] = {
        { "call", l_call },
        { "call_timeout", l_call_timeout },
        { "pipeline", l_pipeline },
        { "script", l_script },
        { "evalsha", l_evalsha },
        { "key", l_key },
        { "status", l_status },
        { "ready", l_ready },
        { NULL, NULL },
    };
    lua_createtable(L, 0, 8);
    lua_newtable(L);   /* upvalue: SHAs registered through redis.script in this VM */
    luaL_setfuncs(L, fns, 1);
    lua_pushlightuserdata(L, &null_sentinel);
    lua_setfield(L, -2, "null");
    return 1;
}
