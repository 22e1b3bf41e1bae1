/* module.c — hushcall.core: luaopen, the err tables every failure returns
 * (kind from the core's hush_status_kind, in exactly one place), the null
 * sentinel and the array/object markers, option-table readers shared by the
 * other sources, and memory_protection_info. */
#include "hushlua.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* ---- errors --------------------------------------------------------------- */

static void push_error_table(lua_State *L, const char *kind, int http_status,
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

int hushlua_fail(lua_State *L, hush_status status, const hush_error *err, int details_idx)
{
    const char *message = err != NULL && err->message[0] != '\0' ? err->message
                                                                 : hush_strerror(status);
    if (details_idx != 0)
        details_idx = lua_absindex(L, details_idx);
    lua_pushnil(L);
    push_error_table(L, hush_status_kind(status), err != NULL ? err->http_status : 0, message,
                     details_idx);
    return 2;
}

int hushlua_fail_kind(lua_State *L, const char *kind, const char *message)
{
    lua_pushnil(L);
    push_error_table(L, kind, 0, message, 0);
    return 2;
}

int hushlua_argfail(lua_State *L, int arg, const char *fname, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    lua_pushfstring(L, "bad argument #%d to '%s' (%s)", arg, fname, what);
    return lua_error(L);
}

/* tostring(err): "hushcall: <kind>: <message>[ (HTTP <status>)]". */
static int error_tostring(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "kind");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "status");
    const char *kind = lua_isstring(L, -3) ? lua_tostring(L, -3) : "unknown";
    const char *message = lua_isstring(L, -2) ? lua_tostring(L, -2) : "";
    if (lua_isinteger(L, -1))
        lua_pushfstring(L, "hushcall: %s: %s (HTTP %I)", kind, message,
                        (LUAI_UACINT)lua_tointeger(L, -1));
    else
        lua_pushfstring(L, "hushcall: %s: %s", kind, message);
    return 1;
}

/* ---- null and the markers --------------------------------------------------- */

void hushlua_push_null(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_NULL);
}

bool hushlua_is_null(lua_State *L, int idx)
{
    return luaL_testudata(L, idx, HUSHLUA_NULL_MT) != NULL;
}

static int null_tostring(lua_State *L)
{
    lua_pushliteral(L, "hushcall.null");
    return 1;
}

/* hushcall.array(t) / hushcall.object(t): mark t (or a new table) and return it. */
static int mark_table(lua_State *L, const char *mt, const char *fname)
{
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else if (!lua_istable(L, 1)) {
        return hushlua_argfail(L, 1, fname, "table expected, got %s", luaL_typename(L, 1));
    }
    lua_settop(L, 1);
    if (lua_getmetatable(L, 1)) {
        luaL_getmetatable(L, HUSHLUA_ARRAY_MT);
        luaL_getmetatable(L, HUSHLUA_OBJECT_MT);
        if (!lua_rawequal(L, -3, -2) && !lua_rawequal(L, -3, -1))
            return hushlua_argfail(L, 1, fname, "the table already has a metatable");
        lua_settop(L, 1);
    }
    luaL_setmetatable(L, mt);
    return 1;
}

static int mark_array(lua_State *L)
{
    return mark_table(L, HUSHLUA_ARRAY_MT, "array");
}

static int mark_object(lua_State *L)
{
    return mark_table(L, HUSHLUA_OBJECT_MT, "object");
}

/* ---- option tables ---------------------------------------------------------- */

/* Push field `key`; false (and nothing pushed) when it is nil. */
static bool opt_field(lua_State *L, int idx, const char *key)
{
    /* Raw: an option table's own fields, and the value stays reachable from
     * it (hushlua_opt_string hands out a pointer into it). */
    lua_pushstring(L, key);
    if (lua_rawget(L, idx) == LUA_TNIL) {
        lua_pop(L, 1);
        return false;
    }
    return true;
}

static int opt_type_error(lua_State *L, int arg, const char *fname, const char *key,
                          const char *expected)
{
    return hushlua_argfail(L, arg, fname, "%s: %s expected, got %s", key, expected,
                           luaL_typename(L, -1));
}

bool hushlua_opt_string(lua_State *L, int idx, int arg, const char *fname, const char *key,
                        const char **out)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, key))
        return false;
    if (lua_type(L, -1) != LUA_TSTRING)
        opt_type_error(L, arg, fname, key, "string");
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    if (strlen(s) != len)
        hushlua_argfail(L, arg, fname, "%s: must not contain NUL characters", key);
    /* The string stays reachable from the option table while it is used. */
    lua_pop(L, 1);
    *out = s;
    return true;
}

bool hushlua_opt_bool(lua_State *L, int idx, int arg, const char *fname, const char *key,
                      bool *out)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, key))
        return false;
    if (!lua_isboolean(L, -1))
        opt_type_error(L, arg, fname, key, "boolean");
    *out = lua_toboolean(L, -1);
    lua_pop(L, 1);
    return true;
}

bool hushlua_opt_number(lua_State *L, int idx, int arg, const char *fname, const char *key,
                        double *out)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, key))
        return false;
    if (lua_type(L, -1) != LUA_TNUMBER)
        opt_type_error(L, arg, fname, key, "number");
    *out = (double)lua_tonumber(L, -1);
    lua_pop(L, 1);
    return true;
}

bool hushlua_opt_integer(lua_State *L, int idx, int arg, const char *fname, const char *key,
                         lua_Integer *out)
{
    idx = lua_absindex(L, idx);
    if (!opt_field(L, idx, key))
        return false;
    if (lua_type(L, -1) != LUA_TNUMBER)
        opt_type_error(L, arg, fname, key, "integer");
    int ok = 0;
    lua_Integer v = lua_tointegerx(L, -1, &ok);
    if (!ok)
        hushlua_argfail(L, arg, fname, "%s: number has no integer representation", key);
    *out = v;
    lua_pop(L, 1);
    return true;
}

void hushlua_check_options(lua_State *L, int idx, int arg, const char *fname,
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

/* ---- module functions ------------------------------------------------------- */

static void set_bool(lua_State *L, const char *key, bool v)
{
    lua_pushboolean(L, v);
    lua_setfield(L, -2, key);
}

static void set_count(lua_State *L, const char *key, uint64_t v)
{
    lua_pushinteger(L, v > (uint64_t)LUA_MAXINTEGER ? LUA_MAXINTEGER : (lua_Integer)v);
    lua_setfield(L, -2, key);
}

/* The same fields as Python's get_memory_protection_info(). */
static int memory_protection_info(lua_State *L)
{
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    lua_createtable(L, 0, 8);
    lua_pushstring(L, info.platform);
    lua_setfield(L, -2, "platform");
    set_bool(L, "mlock_available", info.mlock_available);
    set_count(L, "locked_bytes", info.locked_bytes);
    set_count(L, "lock_failures", info.lock_failures);
    set_bool(L, "dump_exclusion", info.dump_exclusion);
    set_bool(L, "wipe_on_fork", info.wipe_on_fork);
    set_bool(L, "openssl_secure_heap", info.openssl_secure_heap);
    set_count(L, "mapped_bytes", info.mapped_bytes);
    return 1;
}

static void open_basics(lua_State *L)
{
    if (luaL_newmetatable(L, HUSHLUA_ERROR_MT)) {
        lua_pushcfunction(L, error_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newmetatable(L, HUSHLUA_ARRAY_MT);
    lua_pop(L, 1);
    luaL_newmetatable(L, HUSHLUA_OBJECT_MT);
    lua_pop(L, 1);
    if (luaL_newmetatable(L, HUSHLUA_NULL_MT)) {
        lua_pushcfunction(L, null_tostring);
        lua_setfield(L, -2, "__tostring");
        lua_pushliteral(L, "hushcall.null");
        lua_setfield(L, -2, "__metatable"); /* read-only: it is a constant */
    }
    lua_pop(L, 1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_NULL) == LUA_TNIL) {
        lua_newuserdatauv(L, 0, 0);
        luaL_setmetatable(L, HUSHLUA_NULL_MT);
        lua_setfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_NULL);
    }
    lua_pop(L, 1);
}

static const luaL_Reg core_functions[] = {
    {"new", hushlua_new},
    {"create", hushlua_create},
    {"submit", hushlua_submit},
    {"fd", hushlua_fd},
    {"drain", hushlua_drain},
    {"generate_keys", hushlua_generate_keys},
    {"load_keys", hushlua_load_keys},
    {"memory_protection_info", memory_protection_info},
    {"array", mark_array},
    {"object", mark_object},
    {NULL, NULL},
};

HUSHLUA_API int luaopen_hushcall_core(lua_State *L);

int luaopen_hushcall_core(lua_State *L)
{
    luaL_checkversion(L);
    open_basics(L);
    hushlua_serialize_open(L);
    hushlua_response_open(L);
    hushlua_keys_open(L);
    hushlua_client_open(L);

    luaL_newlib(L, core_functions);
    hushlua_push_null(L);
    lua_setfield(L, -2, "null");
    lua_pushliteral(L, HUSHCALL_VERSION);
    lua_setfield(L, -2, "version");
    /* The client's method table, which the Lua layer completes. */
    luaL_getmetatable(L, HUSHLUA_CLIENT_MT);
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "client_methods");
    lua_pop(L, 1);
    return 1;
}
