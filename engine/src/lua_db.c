/* lua_db.c: the `engine.db` module, the database (SQLite or PostgreSQL) for
 * request handlers.
 *
 *   rows, err    = db.query(sql, ...)              rows: { {col = value, ...}, ... }
 *   n, last_id   = db.exec(sql, ...)
 *   res, err     = db.batch({ {sql, p1, ...}, ... } [, timeout_ms])
 *                  res: { changes = n, last_insert_id = id, rows = {...} }
 *   db.query_timeout(ms, sql, ...), db.exec_timeout(ms, sql, ...)
 *   db.null      light userdata that binds SQL NULL
 *   db.healthy() -> boolean
 *   db.dialect() -> "sqlite" | "postgres"   (for the few statements that differ)
 *
 * Each call copies its SQL and parameters into a pool job (jj_db_submit
 * copies), yields the task and is resumed exactly once by the completion
 * callback on the loop thread, or by the wait's timeout. The pool threads
 * never touch Lua: they only fill a jj_db_result, which this file turns
 * into Lua values on the loop thread.
 *
 * Bad arguments (a table or function as a parameter, a non-string SQL)
 * raise; database errors return nil, message. A timeout returns nil,
 * "timeout". On SQLite it does not cancel the statement (a write may still
 * commit); on PostgreSQL the backend gets the same bound and drops the
 * connection the statement runs on (see db_pg.c).
 */
#include "db.h"
#include "engine.h"
#include "lua_modules.h"
#include "task.h"

#include <lauxlib.h>
#include <string.h>

#define SMALL_PARAMS 16   /* parameters converted without a scratch userdata */

/* Its address is db.null. */
static char null_sentinel;

enum { KIND_QUERY, KIND_EXEC, KIND_BATCH };

/* --------------------------------------------------------- parameters */

/* [-0, +0, -] Converts the value at idx into v. Returns NULL, or the type
 * name of a value that cannot be bound. A string's bytes are borrowed from
 * Lua: valid while the value is reachable from the stack (submit copies
 * them before the C function returns). */
static const char *to_value(lua_State *L, int idx, jj_db_value *v) {
    memset(v, 0, sizeof *v);
    switch (lua_type(L, idx)) {
    case LUA_TNIL:
        v->type = JJ_DB_NULL;
        return NULL;
    case LUA_TBOOLEAN:
        v->type = JJ_DB_INT;
        v->i = lua_toboolean(L, idx);
        return NULL;
    case LUA_TNUMBER:
        if (lua_isinteger(L, idx)) { v->type = JJ_DB_INT; v->i = (int64_t)lua_tointeger(L, idx); }
        else { v->type = JJ_DB_FLOAT; v->d = (double)lua_tonumber(L, idx); }
        return NULL;
    case LUA_TSTRING:
        v->type = JJ_DB_TEXT;
        v->s = lua_tolstring(L, idx, &v->len);
        return NULL;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == &null_sentinel) { v->type = JJ_DB_NULL; return NULL; }
        return "light userdata other than db.null";
    default:
        return luaL_typename(L, idx);
    }
}

/* [-0, +(0|1), m] Room for n values: a C array when small, else a scratch
 * userdata pushed on the stack (collected with it). */
static jj_db_value *value_space(lua_State *L, jj_db_value *small, size_t n) {
    if (n <= SMALL_PARAMS) return small;
    if (n > ((size_t)-1) / sizeof(jj_db_value)) luaL_error(L, "too many parameters");
    return lua_newuserdatauv(L, n * sizeof(jj_db_value), 0);
}

/* ------------------------------------------------------------ results */

/* [-0, +1, m] Pushes a result's rows: a sequence of tables keyed by column
 * name; NULL columns are absent keys. */
static void push_rows(lua_State *L, const jj_db_result *r) {
    luaL_checkstack(L, r->ncols + 4, "too many result columns");
    int names = lua_gettop(L) + 1;
    for (int c = 0; c < r->ncols; c++) lua_pushstring(L, r->names[c]);
    lua_createtable(L, r->nrows > (size_t)0x7fffffff ? 0 : (int)r->nrows, 0);
    for (size_t row = 0; row < r->nrows; row++) {
        lua_createtable(L, 0, r->ncols);
        const jj_db_value *v = &r->values[row * (size_t)r->ncols];
        for (int c = 0; c < r->ncols; c++, v++) {
            switch (v->type) {
            case JJ_DB_INT: lua_pushinteger(L, (lua_Integer)v->i); break;
            case JJ_DB_FLOAT: lua_pushnumber(L, (lua_Number)v->d); break;
            case JJ_DB_TEXT:
            case JJ_DB_BLOB: lua_pushlstring(L, v->s, v->len); break;
            default: continue;   /* NULL: no key */
            }
            lua_pushvalue(L, names + c);
            lua_insert(L, -2);
            lua_rawset(L, -3);
        }
        lua_rawseti(L, -2, (lua_Integer)row + 1);
    }
    if (r->ncols > 0) {
        lua_replace(L, names);    /* rows where the first name was... */
        lua_settop(L, names);     /* ...and the names gone */
    }
}

/* [-2, +n, m] Runs under lua_pcall on the VM's main thread, so running out
 * of Lua memory while building a large result is an error value instead of
 * a panic. Arguments: the result (light userdata) and the call kind.
 * Returns what the Lua call returns. */
static int push_results(lua_State *L) {
    const jj_db_result *r = lua_touserdata(L, 1);
    int kind = (int)lua_tointeger(L, 2);
    lua_settop(L, 0);
    if (r->err) {
        lua_pushnil(L);
        lua_pushstring(L, r->err);
        return 2;
    }
    switch (kind) {
    case KIND_QUERY:
        push_rows(L, r);
        return 1;
    case KIND_EXEC:
        lua_pushinteger(L, (lua_Integer)r->changes);
        lua_pushinteger(L, (lua_Integer)r->last_insert_id);
        return 2;
    default:
        lua_createtable(L, 0, 3);
        lua_pushinteger(L, (lua_Integer)r->changes);
        lua_setfield(L, -2, "changes");
        lua_pushinteger(L, (lua_Integer)r->last_insert_id);
        lua_setfield(L, -2, "last_insert_id");
        push_rows(L, r);
        lua_setfield(L, -2, "rows");
        return 1;
    }
}

/* Completion on the loop thread; owns res and the wait's operation
 * reference. Resumes the task with push_results' values, or only frees
 * when the wait already ended (timeout, aborted task). */
static void deliver(jj_db_result *res, jj_wait *w, int kind) {
    jj_wait_finish(w, push_results, res, kind);   /* the results are copied into Lua first */
    jj_db_result_free(res);
}

static void on_query(jj_db_result *res, void *w) { deliver(res, w, KIND_QUERY); }
static void on_exec(jj_db_result *res, void *w) { deliver(res, w, KIND_EXEC); }
static void on_batch(jj_db_result *res, void *w) { deliver(res, w, KIND_BATCH); }

/* ------------------------------------------------------------- calls */

/* The engine's pool, or NULL (then the call returns nil, "database
 * unavailable"). */
static jj_db *pool_of(lua_State *L, double *default_ms) {
    jj_engine *e = jj_engine_of(L);
    if (!e) return NULL;
    const jj_config *cfg = jj_engine_config(e);
    *default_ms = cfg ? cfg->db_timeout_ms : 0;
    return jj_engine_db(e);
}

static int push_unavailable(lua_State *L, const char *msg) {
    lua_pushnil(L);
    lua_pushstring(L, msg);
    return 2;
}

static double check_timeout(lua_State *L, int idx) {
    double ms = (double)luaL_checknumber(L, idx);
    luaL_argcheck(L, ms > 0 && ms <= 86400000.0, idx, "timeout must be between 0 and 86400000 ms");
    return ms;
}

/* [-n, +(1|2), e] query/exec: sql at `first`, parameters after it (all the
 * remaining arguments, so a nil in the middle binds NULL). Yields. */
static int run_single(lua_State *L, int first, int kind, double timeout_ms) {
    size_t sqllen;
    const char *sql = luaL_checklstring(L, first, &sqllen);
    int top = lua_gettop(L);
    int nparams = top - first;
    jj_db_value small[SMALL_PARAMS];
    jj_db_value *params = value_space(L, small, (size_t)nparams);
    for (int k = 0; k < nparams; k++) {
        const char *bad = to_value(L, first + 1 + k, &params[k]);
        if (bad) return luaL_argerror(L, first + 1 + k, lua_pushfstring(L, "cannot bind a %s", bad));
    }
    double default_ms = 0;
    jj_db *db = pool_of(L, &default_ms);
    if (!db) return push_unavailable(L, "database unavailable");
    double ms = timeout_ms > 0 ? timeout_ms : default_ms;
    jj_wait *w = jj_wait_new(L, ms);
    jj_db_stmt s = {sql, sqllen, params, nparams};
    if (jj_db_submit_timeout(db, kind == KIND_QUERY, &s, 1, ms,
                             kind == KIND_QUERY ? on_query : on_exec, w) != 0) {
        jj_wait_abandon(w);
        return push_unavailable(L, "database overloaded");
    }
    return jj_wait_yield(L, w);
}

/* [-(1+n), +(1|2), e] db.query(sql, ...) -> rows | nil, err */
static int l_query(lua_State *L) { return run_single(L, 1, KIND_QUERY, 0); }

/* [-(1+n), +2, e] db.exec(sql, ...) -> changes, last_insert_id | nil, err */
static int l_exec(lua_State *L) { return run_single(L, 1, KIND_EXEC, 0); }

/* [-(2+n), +(1|2), e] db.query_timeout(ms, sql, ...) */
static int l_query_timeout(lua_State *L) { return run_single(L, 2, KIND_QUERY, check_timeout(L, 1)); }

/* [-(2+n), +2, e] db.exec_timeout(ms, sql, ...) */
static int l_exec_timeout(lua_State *L) { return run_single(L, 2, KIND_EXEC, check_timeout(L, 1)); }

/* [-0, +1, -] The parameter count of batch entry at the top: t.n - 1 when
 * the entry has an integer n (table.pack), else its length - 1. Holes in a
 * plain sequence are ambiguous: use db.null (or table.pack) for NULLs. */
static int entry_nparams(lua_State *L) {
    /* raw: a metamethod must not be able to answer differently in the two
     * passes of db.batch (the second fills a buffer the first sized) */
    lua_pushliteral(L, "n");
    lua_rawget(L, -2);
    lua_Integer n = lua_isinteger(L, -1) ? lua_tointeger(L, -1) : (lua_Integer)lua_rawlen(L, -2);
    lua_pop(L, 1);
    if (n < 1 || n > 0x7fffffff) luaL_error(L, "db.batch: bad statement entry length");
    return (int)(n - 1);
}

/* [-(1|2), +(1|2), e] db.batch(statements [, timeout_ms]) -> res | nil, err
 * statements: { {sql, p1, p2, ...}, ... }. All or nothing. Yields. */
static int l_batch(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    double timeout_ms = lua_isnoneornil(L, 2) ? 0 : check_timeout(L, 2);
    lua_settop(L, 1);
    lua_Unsigned nstmts = lua_rawlen(L, 1);
    if (nstmts == 0) return luaL_argerror(L, 1, "no statements");
    if (nstmts > 100000) return luaL_argerror(L, 1, "too many statements");

    /* Pass 1: validate and count. */
    size_t total = 0;
    for (lua_Unsigned k = 1; k <= nstmts; k++) {
        if (lua_rawgeti(L, 1, (lua_Integer)k) != LUA_TTABLE)
            return luaL_error(L, "db.batch: statement %d is a %s, expected {sql, params...}",
                              (int)k, luaL_typename(L, -1));
        if (lua_rawgeti(L, -1, 1) != LUA_TSTRING)
            return luaL_error(L, "db.batch: statement %d has no SQL string", (int)k);
        lua_pop(L, 1);
        total += (size_t)entry_nparams(L);
        lua_pop(L, 1);
    }

    /* Pass 2: fill. The SQL and TEXT pointers borrow strings held by the
     * statements table at index 1, which stays on the stack (and is not
     * modified) until submit has copied them. */
    jj_db_stmt *stmts = lua_newuserdatauv(L, (size_t)nstmts * sizeof *stmts, 0);
    jj_db_value small[SMALL_PARAMS];
    jj_db_value *vals = value_space(L, small, total);
    size_t used = 0;
    for (lua_Unsigned k = 1; k <= nstmts; k++) {
        jj_db_stmt *s = &stmts[k - 1];
        /* A finalizer run by the allocations above could have changed the
         * table: check again rather than trust pass 1. */
        if (lua_rawgeti(L, 1, (lua_Integer)k) != LUA_TTABLE)
            return luaL_error(L, "db.batch: statement %d changed while binding", (int)k);
        int np = entry_nparams(L);
        if ((size_t)np > total - used)
            return luaL_error(L, "db.batch: statement %d changed while binding", (int)k);
        if (lua_rawgeti(L, -1, 1) != LUA_TSTRING)
            return luaL_error(L, "db.batch: statement %d has no SQL string", (int)k);
        s->sql = lua_tolstring(L, -1, &s->sqllen);
        lua_pop(L, 1);
        s->params = vals + used;
        s->nparams = np;
        for (int p = 0; p < np; p++) {
            lua_rawgeti(L, -1, p + 2);
            const char *bad = to_value(L, -1, &vals[used + (size_t)p]);
            if (bad)
                return luaL_error(L, "db.batch: statement %d parameter %d: cannot bind a %s",
                                  (int)k, p + 1, bad);
            lua_pop(L, 1);
        }
        used += (size_t)np;
        lua_pop(L, 1);
    }

    double default_ms = 0;
    jj_db *db = pool_of(L, &default_ms);
    if (!db) return push_unavailable(L, "database unavailable");
    double ms = timeout_ms > 0 ? timeout_ms : default_ms;
    jj_wait *w = jj_wait_new(L, ms);
    if (jj_db_submit_timeout(db, -1, stmts, (int)nstmts, ms, on_batch, w) != 0) {
        jj_wait_abandon(w);
        return push_unavailable(L, "database overloaded");
    }
    return jj_wait_yield(L, w);
}

/* [-0, +1, -] db.healthy() -> boolean */
static int l_healthy(lua_State *L) {
    double ms;
    jj_db *db = pool_of(L, &ms);
    lua_pushboolean(L, db != NULL && jj_db_healthy(db));
    return 1;
}

/* [-0, +1, -] db.dialect() -> "sqlite" | "postgres" (also without a pool:
 * what the configuration selects) */
static int l_dialect(lua_State *L) {
    double ms;
    jj_db *db = pool_of(L, &ms);
    if (db) { lua_pushstring(L, jj_db_dialect(db)); return 1; }
    jj_engine *e = jj_engine_of(L);
    const jj_config *cfg = e ? jj_engine_config(e) : NULL;
    lua_pushstring(L, cfg && cfg->db_url[0] ? "postgres" : "sqlite");
    return 1;
}

/* [-0, +1, m] */
int luaopen_engine_db(lua_State *L) {
    static const luaL_Reg fns[] = {
        {"query", l_query},
        {"exec", l_exec},
        {"batch", l_batch},
        {"query_timeout", l_query_timeout},
        {"exec_timeout", l_exec_timeout},
        {"healthy", l_healthy},
        {"dialect", l_dialect},
        {NULL, NULL},
    };
    luaL_newlib(L, fns);
    lua_pushlightuserdata(L, &null_sentinel);
    lua_setfield(L, -2, "null");
    return 1;
}
