/* hushlua.h — what the sources of the Lua module hushcall.core share: the
 * registry names of its per-state data, the helpers every part uses (err
 * tables, argument errors, option tables, the null sentinel, class
 * creation), each part's hushlua_open_<part> and the constructors the parts
 * offer each other. module.c only calls the hushlua_open_<part> functions:
 * no part calls back into it, so the helpers live here, static inline.
 *
 * Every piece of mutable data lives in the registry of the lua_State that
 * made it, never in a C static, so any number of states in any number of
 * threads may load the module at once. Plaintext goes from Lua tables
 * straight into locked memory (serialize.c) and from locked memory into the
 * one Lua string a caller reads (response.c); no other copy is made. */
#ifndef HUSHLUA_H
#define HUSHLUA_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "hushcall/hushcall.h"

#define HUSHLUA_API __attribute__((visibility("default")))

/* Metatables (luaL_newmetatable names, so also registry keys). */
#define HUSHLUA_NULL_MT "hushcall.null"         /* the null sentinel */
#define HUSHLUA_ARRAY_MT "hushcall.array"       /* marks a table as a JSON array */
#define HUSHLUA_OBJECT_MT "hushcall.object"     /* marks a table as a JSON object */
#define HUSHLUA_ERROR_MT "hushcall.error"       /* err tables */
#define HUSHLUA_REQUEST_MT "hushcall.request"   /* a request being serialized */
#define HUSHLUA_DOCUMENT_MT "hushcall.document" /* owns one hush_json_doc */
#define HUSHLUA_RESPONSE_MT "hushcall.response" /* a view: (document, node) */
#define HUSHLUA_CLIENT_MT "hushcall.client"     /* a hush_client */
#define HUSHLUA_ENGINE_MT "hushcall.engine"     /* the state's hush_engine */
#define HUSHLUA_CALL_MT "hushcall.call"         /* one hush_call */
#define HUSHLUA_KEYPAIR_MT "hushcall.keypair"   /* a hush_keypair */

/* Other per-state registry entries. */
#define HUSHLUA_REG_NULL "hushcall.null_value"   /* the sentinel itself */
#define HUSHLUA_REG_ENGINE "hushcall.engine_ud"  /* the engine userdata, made lazily */
#define HUSHLUA_REG_INFLIGHT "hushcall.inflight" /* hush_call* -> call: submitted, not drained */
#define HUSHLUA_REG_CALLS "hushcall.calls"       /* hush_call* -> call, weak values */
#define HUSHLUA_REG_LOCK_WARNED "hushcall.lock_warned" /* true once warn() told of unlocked memory */

/* ---- err tables ------------------------------------------------------------ */

/* Push an err table: { kind, status (when non-zero), message, details (the
 * value at `details_idx`, when non-zero and not nil) }, whose __tostring
 * module.c registers. */
static inline void hushlua_push_error(lua_State *L, const char *kind, int http_status,
                                      const char *message, int details_idx)
{
    if (details_idx != 0)
        details_idx = lua_absindex(L, details_idx);
    lua_createtable(L, 0, 4);
    lua_pushstring(L, kind);
    lua_setfield(L, -2, "kind");
    if (http_status != 0) {
        lua_pushinteger(L, http_status);
        lua_setfield(L, -2, "status");
    }
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    if (details_idx != 0 && !lua_isnil(L, details_idx)) {
        lua_pushvalue(L, details_idx);
        lua_setfield(L, -2, "details");
    }
    luaL_setmetatable(L, HUSHLUA_ERROR_MT);
}

/* Push nil and an err table for `status` (kind = hush_status_kind, status =
 * err->http_status or nil, message, details = `details_idx` when non-zero,
 * else nil). Returns 2, for `return hushlua_fail(...)`. */
static inline int hushlua_fail(lua_State *L, hush_status status, const hush_error *err,
                               int details_idx)
{
    const char *message = err != NULL && err->message[0] != '\0' ? err->message
                                                                 : hush_strerror(status);
    if (details_idx != 0)
        details_idx = lua_absindex(L, details_idx);
    lua_pushnil(L);
    hushlua_push_error(L, hush_status_kind(status), err != NULL ? err->http_status : 0, message,
                       details_idx);
    return 2;
}

/* As hushlua_fail with an explicit kind and message (no core status). */
static inline int hushlua_fail_kind(lua_State *L, const char *kind, const char *message)
{
    lua_pushnil(L);
    hushlua_push_error(L, kind, 0, message, 0);
    return 2;
}

/* Raise "bad argument #<arg> to '<fname>' (<what>)" without relying on
 * debug information (the Lua layer may stand between caller and C). */
static inline __attribute__((format(printf, 4, 5))) int
hushlua_argfail(lua_State *L, int arg, const char *fname, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    lua_pushfstring(L, "bad argument #%d to '%s' (%s)", arg, fname, what);
    return lua_error(L);
}

/* ---- the null sentinel (made by serialize.c's part) --------------------------- */

static inline void hushlua_push_null(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_NULL);
}

static inline bool hushlua_is_null(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, HUSHLUA_NULL_MT) != NULL;
}

/* ---- option tables ------------------------------------------------------------ */

/* Push field `key` of the table at (absolute) `idx`; false, and nothing
 * pushed, when it is nil. Raw: an option table's own fields, and the value
 * stays reachable from it (hushlua_opt_string hands out a pointer into it). */
static inline bool hushlua_opt_field(lua_State *L, int idx, const char *key)
{
    lua_pushstring(L, key);
    if (lua_rawget(L, idx) == LUA_TNIL) {
        lua_pop(L, 1);
        return false;
    }
    return true;
}

static inline int hushlua_opt_type_error(lua_State *L, int arg, const char *fname,
                                         const char *key, const char *expected)
{
    return hushlua_argfail(L, arg, fname, "%s: %s expected, got %s", key, expected,
                           luaL_typename(L, -1));
}

/* Option tables: read field `key` of the table at `idx`. Absent (nil) leaves
 * `*out` as it is and returns false; a value of the wrong type raises
 * "bad argument #<arg> to '<fname>' (<key>: string expected, got number)". */
static inline bool hushlua_opt_string(lua_State *L, int idx, int arg, const char *fname,
                                      const char *key, const char **out)
{
    idx = lua_absindex(L, idx);
    if (!hushlua_opt_field(L, idx, key))
        return false;
    if (lua_type(L, -1) != LUA_TSTRING)
        hushlua_opt_type_error(L, arg, fname, key, "string");
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len)
        hushlua_argfail(L, arg, fname, "%s: must not contain NUL characters", key);
    /* The string stays reachable from the option table while it is used. */
    lua_pop(L, 1);
    *out = s;
    return true;
}

static inline bool hushlua_opt_bool(lua_State *L, int idx, int arg, const char *fname,
                                    const char *key, bool *out)
{
    idx = lua_absindex(L, idx);
    if (!hushlua_opt_field(L, idx, key))
        return false;
    if (!lua_isboolean(L, -1))
        hushlua_opt_type_error(L, arg, fname, key, "boolean");
    *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return true;
}

static inline bool hushlua_opt_number(lua_State *L, int idx, int arg, const char *fname,
                                      const char *key, double *out)
{
    idx = lua_absindex(L, idx);
    if (!hushlua_opt_field(L, idx, key))
        return false;
    if (lua_type(L, -1) != LUA_TNUMBER)
        hushlua_opt_type_error(L, arg, fname, key, "number");
    *out = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return true;
}

static inline bool hushlua_opt_integer(lua_State *L, int idx, int arg, const char *fname,
                                       const char *key, lua_Integer *out)
{
    idx = lua_absindex(L, idx);
    if (!hushlua_opt_field(L, idx, key))
        return false;
    if (lua_type(L, -1) != LUA_TNUMBER)
        hushlua_opt_type_error(L, arg, fname, key, "integer");
    int ok = 0;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok)
        hushlua_argfail(L, arg, fname, "%s: number has no integer representation", key);
    *out = v;
    lua_pop(L, 1);
    return true;
}

/* Raise for any key of the table at `idx` not in `known` (NULL-terminated). */
static inline void hushlua_check_options(lua_State *L, int idx, int arg, const char *fname,
                                         const char *const *known)
{
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            hushlua_argfail(L, arg, fname, "option names must be strings, got %s",
                            luaL_typename(L, -1));
        const char *name = lua_tostring(L, -1);
        bool found = false;
        for (const char *const *k = known; *k != NULL; k++) {
            if (strcmp(*k, name) == 0) {
                found = true;
                break;
            }
        }
        if (!found)
            hushlua_argfail(L, arg, fname, "unknown option '%.64s'", name);
    }
}

/* ---- classes ------------------------------------------------------------------ */

/* Push metatable `name`, made on the first call (luaossl's auxL_newclass):
 * the metamethods `meta`, and a methods table made from `methods` once, as
 * its __index; or, for a type that also has fields computed on access, as
 * upvalue 1 of the __index closure `index`, which looks methods up with
 * hushlua_push_method. Either way no access fetches anything from the
 * registry. Returns true when the metatable was made now. */
static inline bool hushlua_new_class(lua_State *L, const char *name, const luaL_Reg *meta,
                                     const luaL_Reg *methods, lua_CFunction index)
{
    if (!luaL_newmetatable(L, name))
        return false;
    if (meta != NULL)
        luaL_setfuncs(L, meta, 0);
    if (methods != NULL || index != NULL) {
        lua_newtable(L);
        if (methods != NULL)
            luaL_setfuncs(L, methods, 0);
        if (index != NULL)
            lua_pushcclosure(L, index, 1);
        lua_setfield(L, -2, "__index");
    }
    return true;
}

/* In an __index closure made by hushlua_new_class: push the method named by
 * the value at `key_idx` (nil when there is none). */
static inline void hushlua_push_method(lua_State *L, int key_idx)
{
    lua_pushvalue(L, key_idx);
    lua_rawget(L, lua_upvalueindex(1));
}

/* ---- the parts ------------------------------------------------------------ */

/* Each part makes its metatables and sets its functions into the module
 * table on top of the stack, leaving the stack as it found it. module.c's
 * luaopen calls them in this order: a later part may use an earlier one's
 * metatables. */
void hushlua_open_serialize(lua_State *L); /* array, object, null */
void hushlua_open_response(lua_State *L);
void hushlua_open_keys(lua_State *L);      /* generate_keys, load_keys */
void hushlua_open_client(lua_State *L);    /* new, create, submit, stream, fd, drain, client_methods */

/* ---- serialize.c --------------------------------------------------------- */

/* Write the table at `idx` as compact JSON into a new locked buffer of at
 * most `max_bytes`. Returns the buffer (the caller owns it), or NULL after
 * pushing nil, err (the size limit: kind "limit"). Values that cannot be
 * encoded raise an error naming their path, never their content. */
hush_secbuf *hushlua_serialize(lua_State *L, int idx, size_t max_bytes);

/* ---- response.c ---------------------------------------------------------- */

/* Push a document holder with no document yet and return its slot: the
 * caller fills it (hush_call_result), so nothing that can raise stands
 * between getting a document and its owner. */
hush_json_doc **hushlua_push_document(lua_State *L);
/* Push a response view over the root of the (filled) document at `doc_idx`;
 * the first answer of a state whose memory is not locked is told of with warn(). */
void hushlua_push_root_view(lua_State *L, int doc_idx);
/* Push the JSON text `text` as plain Lua tables (a server's error body);
 * a text that is not a JSON object becomes { detail = text }. */
void hushlua_push_json_table(lua_State *L, const char *text, size_t len);

/* ---- keys.c -------------------------------------------------------------- */

/* The hush_keypair of the keypair userdata at `idx` (borrowed), or NULL. */
hush_keypair *hushlua_test_keypair(lua_State *L, int idx);

#endif
