/* keys.c — client RSA key pairs (keys.h) as userdata: generate_keys,
 * load_keys, and kp.fingerprint / kp.bits / kp:public_pem(). A key pair is
 * immutable and reference counted in the core, so clients that use it keep
 * their own reference. The private key never becomes a Lua value. */
#include "hushlua.h"

#include <stdlib.h>
#include <string.h>

typedef struct keypair_ud {
    hush_keypair *kp; /* never NULL once made */
} keypair_ud;

hush_keypair *hushlua_test_keypair(lua_State *L, int idx)
{
    keypair_ud *k = luaL_testudata(L, idx, HUSHLUA_KEYPAIR_MT);
    return k != NULL ? k->kp : NULL;
}

/* Push a key pair userdata with no key yet and return its slot, filled by
 * the caller: nothing that can raise stands between a key and its owner. */
static hush_keypair **push_keypair_slot(lua_State *L)
{
    keypair_ud *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->kp = NULL;
    luaL_setmetatable(L, HUSHLUA_KEYPAIR_MT);
    return &k->kp;
}

static hush_keypair *check_keypair(lua_State *L, int idx)
{
    keypair_ud *k = luaL_checkudata(L, idx, HUSHLUA_KEYPAIR_MT);
    return k->kp;
}

static int keypair_gc(lua_State *L)
{
    keypair_ud *k = luaL_checkudata(L, 1, HUSHLUA_KEYPAIR_MT);
    hush_keypair_free(k->kp);
    k->kp = NULL;
    return 0;
}

static int keypair_public_pem(lua_State *L)
{
    hush_keypair *kp = check_keypair(L, 1);
    char *pem = NULL;
    size_t len = 0;
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_keypair_public_pem(kp, &pem, &len, &err);
    if (status != HUSH_OK)
        return hushlua_fail(L, status, &err, 0);
    lua_pushlstring(L, pem, len); /* raises only when out of memory: a public key, not secret */
    free(pem);
    return 1;
}

static int push_fingerprint(lua_State *L, hush_keypair *kp)
{
    char fp[HUSH_FINGERPRINT_LEN];
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_keypair_fingerprint(kp, fp, &err);
    if (status != HUSH_OK)
        return hushlua_fail(L, status, &err, 0);
    lua_pushstring(L, fp);
    return 1;
}

static int keypair_index(lua_State *L)
{
    hush_keypair *kp = check_keypair(L, 1);
    const char *key = lua_tostring(L, 2);
    if (lua_type(L, 2) != LUA_TSTRING)
        key = "";
    if (strcmp(key, "fingerprint") == 0) {
        push_fingerprint(L, kp);
        return 1;
    }
    if (strcmp(key, "bits") == 0) {
        lua_pushinteger(L, (lua_Integer)hush_keypair_bits(kp));
        return 1;
    }
    hushlua_push_method(L, 2);
    return 1;
}

static int keypair_tostring(lua_State *L)
{
    hush_keypair *kp = check_keypair(L, 1);
    char fp[HUSH_FINGERPRINT_LEN];
    hush_error err;
    hush_error_clear(&err);
    if (hush_keypair_fingerprint(kp, fp, &err) != HUSH_OK)
        strcpy(fp, "?");
    lua_pushfstring(L, "hushcall.keypair(%d bits, %s)", (int)hush_keypair_bits(kp), fp);
    return 1;
}

/* A password option: "" means none, as in nomyo. */
static const char *password_opt(lua_State *L, int idx, const char *fname)
{
    const char *password = NULL;
    hushlua_opt_string(L, idx, 1, fname, "password", &password);
    return password != NULL && password[0] != '\0' ? password : NULL;
}

/* generate_keys{ bits = 4096, key_dir = nil, password = nil, overwrite = false } */
static int generate_keys(lua_State *L)
{
    static const char *const known[] = {"bits", "key_dir", "password", "overwrite", NULL};
    if (lua_isnoneornil(L, 1)) {
        lua_settop(L, 0);
        lua_newtable(L);
    } else if (!lua_istable(L, 1)) {
        return hushlua_argfail(L, 1, "generate_keys", "table expected, got %s",
                               luaL_typename(L, 1));
    }
    hushlua_check_options(L, 1, 1, "generate_keys", known);
    lua_Integer bits = HUSH_RSA_DEFAULT_BITS;
    hushlua_opt_integer(L, 1, 1, "generate_keys", "bits", &bits);
    if (bits < (lua_Integer)HUSH_RSA_MIN_BITS || bits > (lua_Integer)HUSH_RSA_MAX_BITS)
        return hushlua_argfail(L, 1, "generate_keys", "bits: must be between %u and %u",
                               HUSH_RSA_MIN_BITS, HUSH_RSA_MAX_BITS);
    const char *key_dir = NULL;
    hushlua_opt_string(L, 1, 1, "generate_keys", "key_dir", &key_dir);
    const char *password = password_opt(L, 1, "generate_keys");
    bool overwrite = false;
    hushlua_opt_bool(L, 1, 1, "generate_keys", "overwrite", &overwrite);

    hush_keypair **kp = push_keypair_slot(L);
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_keypair_generate((unsigned)bits, kp, &err);
    if (status != HUSH_OK)
        return hushlua_fail(L, status, &err, 0);
    if (key_dir != NULL) {
        unsigned flags = overwrite ? HUSH_KEYS_SAVE_OVERWRITE : HUSH_KEYS_SAVE_DEFAULT;
        status = hush_keypair_save_dir(*kp, key_dir, password, HUSH_KDF_PBKDF2, flags, &err);
        if (status != HUSH_OK)
            return hushlua_fail(L, status, &err, 0);
    }
    return 1;
}

/* load_keys{ key_dir = ... } or { private_key = path }, with password. */
static int load_keys(lua_State *L)
{
    static const char *const known[] = {"key_dir", "private_key", "password", NULL};
    if (!lua_istable(L, 1))
        return hushlua_argfail(L, 1, "load_keys", "table expected, got %s", luaL_typename(L, 1));
    hushlua_check_options(L, 1, 1, "load_keys", known);
    const char *key_dir = NULL, *path = NULL;
    hushlua_opt_string(L, 1, 1, "load_keys", "key_dir", &key_dir);
    hushlua_opt_string(L, 1, 1, "load_keys", "private_key", &path);
    if ((key_dir == NULL) == (path == NULL))
        return hushlua_argfail(L, 1, "load_keys", "exactly one of key_dir and private_key expected");
    const char *password = password_opt(L, 1, "load_keys");

    hush_keypair **kp = push_keypair_slot(L);
    hush_error err;
    hush_error_clear(&err);
    hush_status status = key_dir != NULL ? hush_keypair_load_dir(key_dir, password, kp, &err)
                                         : hush_keypair_load_file(path, password, kp, &err);
    if (status != HUSH_OK)
        return hushlua_fail(L, status, &err, 0);
    return 1;
}

void hushlua_open_keys(lua_State *L)
{
    static const luaL_Reg meta[] = {
        {"__gc", keypair_gc},
        {"__tostring", keypair_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg methods[] = {{"public_pem", keypair_public_pem}, {NULL, NULL}};
    if (hushlua_new_class(L, HUSHLUA_KEYPAIR_MT, meta, methods, keypair_index)) {
        lua_pushliteral(L, "hushcall.keypair");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);

    static const luaL_Reg functions[] = {
        {"generate_keys", generate_keys},
        {"load_keys", load_keys},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
