/* module.c — hushcall.core: luaopen, which makes the module table and has
 * each part (serialize, response, keys, client) register its metatables and
 * functions there; the err tables' metatable, which every part's failures
 * carry (hushlua.h makes them); and memory_protection_info. No part calls
 * into this file. */
#include "hushlua.h"

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

static const luaL_Reg module_functions[] = {
    {"memory_protection_info", memory_protection_info},
    {NULL, NULL},
};

HUSHLUA_API int luaopen_hushcall_core(lua_State *L);

int luaopen_hushcall_core(lua_State *L)
{
    luaL_checkversion(L);
    static const luaL_Reg error_meta[] = {{"__tostring", error_tostring}, {NULL, NULL}};
    hushlua_new_class(L, HUSHLUA_ERROR_MT, error_meta, NULL, NULL);
    lua_pop(L, 1);

    luaL_newlib(L, module_functions);
    lua_pushliteral(L, HUSHCALL_VERSION);
    lua_setfield(L, -2, "version");
    hushlua_open_serialize(L);
    hushlua_open_response(L);
    hushlua_open_keys(L);
    hushlua_open_client(L);
    return 1;
}
