/* client.c — clients (client.h), the state's engine and its calls
 * (engine.h). Every request of a Lua state runs on that state's engine, made
 * on first use and kept in the registry: create() is a call submitted there
 * and waited on, submit() returns the call at once, and drain() hands back
 * the calls that finished, found through a weak table keyed by the hush_call
 * pointer. Calls submitted and not yet drained (or read) are also held by a
 * strong table, so a fire-and-forget submit is not cancelled by the
 * collector before its completion is drained. */
#include "hushlua.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define DRAIN_BATCH 64

typedef struct client_ud {
    hush_client *client;      /* NULL only before hush_client_new succeeds */
    size_t max_request_bytes; /* serialization stops there, before anything is sent */
} client_ud;

typedef struct engine_ud {
    hush_engine *engine;
} engine_ud;

typedef struct call_ud {
    hush_call *call; /* user value 1: the response once result() gave it */
} call_ud;

/* ---- the state's engine ------------------------------------------------------ */

static int engine_gc(lua_State *L)
{
    engine_ud *e = luaL_checkudata(L, 1, HUSHLUA_ENGINE_MT);
    hush_engine *engine = e->engine;
    e->engine = NULL;
    hush_engine_free(engine); /* cancels and waits for calls in flight */
    return 0;
}

/* The state's engine, made on first use; NULL after pushing nil, err. */
static hush_engine *state_engine(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_ENGINE);
    engine_ud *e = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (e != NULL && e->engine != NULL)
        return e->engine;
    e = lua_newuserdatauv(L, sizeof *e, 0);
    e->engine = NULL;
    luaL_setmetatable(L, HUSHLUA_ENGINE_MT);
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_engine_new(NULL, &e->engine, &err);
    if (status != HUSH_OK) {
        lua_pop(L, 1);
        hushlua_fail(L, status, &err, 0);
        return NULL;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_ENGINE);
    return e->engine;
}

/* Forget `call` in the in-flight table (it is done and its owner has it). */
static void inflight_remove(lua_State *L, const hush_call *call)
{
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_INFLIGHT);
    lua_pushnil(L);
    lua_rawsetp(L, -2, call);
    lua_pop(L, 1);
}

static int fd(lua_State *L)
{
    hush_engine *engine = state_engine(L);
    if (engine == NULL)
        return 2;
    lua_pushinteger(L, hush_engine_fd(engine));
    return 1;
}

static int drain(lua_State *L)
{
    lua_newtable(L);
    int list = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_ENGINE);
    engine_ud *e = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (e == NULL || e->engine == NULL)
        return 1;
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_CALLS);
    int calls = lua_gettop(L);
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_INFLIGHT);
    int inflight = lua_gettop(L);
    lua_Integer n = 0;
    hush_call *done[DRAIN_BATCH];
    for (;;) {
        size_t got = hush_engine_drain(e->engine, done, DRAIN_BATCH);
        for (size_t i = 0; i < got; i++) {
            if (lua_rawgetp(L, calls, done[i]) != LUA_TNIL)
                lua_rawseti(L, list, ++n);
            else
                lua_pop(L, 1); /* a create() call, waited on by its caller */
            lua_pushnil(L);
            lua_rawsetp(L, inflight, done[i]);
        }
        if (got < DRAIN_BATCH)
            break;
    }
    lua_settop(L, list);
    return 1;
}

/* ---- calls -------------------------------------------------------------------- */

static call_ud *check_call(lua_State *L, int idx)
{
    return luaL_checkudata(L, idx, HUSHLUA_CALL_MT);
}

static int call_gc(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    hush_call *call = c->call;
    c->call = NULL;
    hush_call_free(call); /* cancels it when unfinished */
    return 0;
}

static int call_ready(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    lua_pushboolean(L, c->call != NULL && hush_call_done(c->call));
    return 1;
}

static int call_cancel(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    if (c->call != NULL)
        hush_call_cancel(c->call);
    return 0;
}

/* The outcome of the done call at `idx`: the response (kept in the call's
 * user value when `keep`, so that asking again gives the same view), or
 * nil, err with the server's error body as err.details. */
static int push_result(lua_State *L, int idx, bool keep)
{
    call_ud *c = check_call(L, idx);
    if (lua_getiuservalue(L, idx, 1) != LUA_TNIL)
        return 1;
    lua_pop(L, 1);
    if (c->call == NULL)
        return hushlua_fail_kind(L, "cancelled", "the call was released");
    if (!hush_call_done(c->call))
        return hushlua_fail_kind(L, "pending", "the call is not done yet");
    hush_json_doc **doc = hushlua_push_document(L); /* owns the answer from the start */
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_call_result(c->call, doc, &err);
    if (status != HUSH_OK) {
        lua_pop(L, 1);
        size_t len = 0;
        const char *details = hush_call_error_details(c->call, &len);
        if (details != NULL && len > 0)
            hushlua_push_json_table(L, details, len);
        else
            lua_pushnil(L);
        return hushlua_fail(L, status, &err, -1);
    }
    if (*doc == NULL) {
        lua_pop(L, 1);
        return hushlua_fail_kind(L, "wiped", "the result of this call was already taken");
    }
    hushlua_push_root_view(L, -1);
    lua_remove(L, -2);
    if (keep) {
        lua_pushvalue(L, -1);
        lua_setiuservalue(L, idx, 1);
    }
    return 1;
}

static int call_result(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    int n = push_result(L, 1, true);
    if (c->call != NULL && hush_call_done(c->call))
        inflight_remove(L, c->call);
    return n;
}

/* call:wait([seconds]): true once done, false when the time passes first. */
static int call_wait(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    long ms = -1;
    if (!lua_isnoneornil(L, 2)) {
        if (lua_type(L, 2) != LUA_TNUMBER)
            return hushlua_argfail(L, 1, "wait", "number expected, got %s", luaL_typename(L, 2));
        double s = (double)lua_tonumber(L, 2);
        if (isnan(s))
            return hushlua_argfail(L, 1, "wait", "seconds must be a number, not NaN");
        ms = s <= 0.0 ? 0 : s > 86400.0 * 365.0 ? -1 : (long)(s * 1000.0 + 0.5);
    }
    if (c->call == NULL) {
        lua_pushboolean(L, 1);
        return 1;
    }
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_call_wait(c->call, ms, &err); /* holds no Lua lock */
    if (hush_call_done(c->call)) {
        lua_pushboolean(L, 1);
        return 1;
    }
    if (status == HUSH_E_TIMEOUT || status == HUSH_OK) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return hushlua_fail(L, status, &err, 0);
}

static int call_index(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    const char *key = lua_type(L, 2) == LUA_TSTRING ? lua_tostring(L, 2) : "";
    if (strcmp(key, "payload_id") == 0) {
        if (c->call == NULL)
            lua_pushnil(L);
        else
            lua_pushstring(L, hush_call_payload_id(c->call));
        return 1;
    }
    if (strcmp(key, "attempts") == 0) {
        lua_pushinteger(L, c->call != NULL ? (lua_Integer)hush_call_attempts(c->call) : 0);
        return 1;
    }
    hushlua_push_method(L, 2);
    return 1;
}

static int call_tostring(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    if (c->call == NULL)
        lua_pushliteral(L, "hushcall.call(released)");
    else
        lua_pushfstring(L, "hushcall.call(%s, %s)", hush_call_payload_id(c->call),
                        hush_call_done(c->call) ? "done" : "pending");
    return 1;
}

/* ---- clients ------------------------------------------------------------------ */

static client_ud *check_client(lua_State *L, int idx, const char *fname)
{
    client_ud *c = luaL_testudata(L, idx, HUSHLUA_CLIENT_MT);
    if (c == NULL || c->client == NULL)
        luaL_error(L, "calling '%s' on bad self (hushcall.client expected, got %s)", fname,
                   luaL_typename(L, idx));
    return c;
}

static int client_gc(lua_State *L)
{
    client_ud *c = luaL_checkudata(L, 1, HUSHLUA_CLIENT_MT);
    hush_client *client = c->client;
    c->client = NULL;
    hush_client_free(client); /* calls in flight keep their own reference */
    return 0;
}

static int client_tostring(lua_State *L)
{
    luaL_checkudata(L, 1, HUSHLUA_CLIENT_MT);
    lua_pushliteral(L, "hushcall.client");
    return 1;
}

static int client_public_key_pem(lua_State *L)
{
    client_ud *c = check_client(L, 1, "public_key_pem");
    char *pem = NULL;
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_client_public_pem(c->client, &pem, &err);
    if (status != HUSH_OK)
        return hushlua_fail(L, status, &err, 0);
    lua_pushstring(L, pem); /* raises only when out of memory: a public key, not secret */
    free(pem);
    return 1;
}

/* Seconds (a positive number) to milliseconds. */
static void seconds_option(lua_State *L, const char *key, long *out)
{
    double s;
    if (!hushlua_opt_number(L, 1, 1, "new", key, &s))
        return;
    if (!(s > 0.0) || s > 86400.0 * 365.0)
        hushlua_argfail(L, 1, "new", "%s: must be a positive number of seconds", key);
    long ms = (long)(s * 1000.0 + 0.5);
    *out = ms > 0 ? ms : 1;
}

/* hushcall.new{ base_url = ..., ... }: a client, or nil, err. */
static int new(lua_State *L)
{
    static const char *const known[] = {
        "base_url", "api_key", "allow_http", "key_dir", "password", "timeout",
        "connect_timeout", "max_retries", "security_tier", "ca_file", "tls_pin",
        "server_key_fingerprint", "max_request_bytes", "key_bits", "client_key",
        "require_attestation", "attestation_policy", "protocol", "require_pq",
        "v2_key_fingerprint", NULL};
    if (!lua_istable(L, 1))
        return hushlua_argfail(L, 1, "new", "table expected, got %s", luaL_typename(L, 1));
    lua_settop(L, 1);
    hushlua_check_options(L, 1, 1, "new", known);

    hush_client_options o = HUSH_CLIENT_OPTIONS_INIT;
    hushlua_opt_string(L, 1, 1, "new", "base_url", &o.base_url);
    hushlua_opt_string(L, 1, 1, "new", "api_key", &o.api_key);
    hushlua_opt_bool(L, 1, 1, "new", "allow_http", &o.allow_http);
    hushlua_opt_string(L, 1, 1, "new", "key_dir", &o.key_dir);
    hushlua_opt_string(L, 1, 1, "new", "password", &o.key_password);
    if (o.key_password != NULL && o.key_password[0] == '\0')
        o.key_password = NULL; /* "" means none, as in nomyo */
    seconds_option(L, "timeout", &o.timeout_ms);
    seconds_option(L, "connect_timeout", &o.connect_timeout_ms);
    lua_Integer v;
    if (hushlua_opt_integer(L, 1, 1, "new", "max_retries", &v)) {
        if (v < 0 || v > 1000)
            return hushlua_argfail(L, 1, "new", "max_retries: must be between 0 and 1000");
        o.max_retries = (unsigned)v;
    }
    hushlua_opt_string(L, 1, 1, "new", "security_tier", &o.security_tier);
    hushlua_opt_string(L, 1, 1, "new", "ca_file", &o.ca_file);
    hushlua_opt_string(L, 1, 1, "new", "tls_pin", &o.tls_pin);
    hushlua_opt_string(L, 1, 1, "new", "server_key_fingerprint", &o.server_key_fingerprint);
    hushlua_opt_bool(L, 1, 1, "new", "require_attestation", &o.require_attestation);
    hushlua_opt_string(L, 1, 1, "new", "attestation_policy", &o.attestation_policy);
    hushlua_opt_string(L, 1, 1, "new", "protocol", &o.protocol);
    hushlua_opt_bool(L, 1, 1, "new", "require_pq", &o.require_pq);
    hushlua_opt_string(L, 1, 1, "new", "v2_key_fingerprint", &o.v2_key_fingerprint);
    if (hushlua_opt_integer(L, 1, 1, "new", "max_request_bytes", &v)) {
        if (v < 1)
            return hushlua_argfail(L, 1, "new", "max_request_bytes: must be at least 1");
        o.max_request_bytes = (size_t)v;
    }
    if (hushlua_opt_integer(L, 1, 1, "new", "key_bits", &v)) {
        if (v < 0 || v > (lua_Integer)HUSH_RSA_MAX_BITS)
            return hushlua_argfail(L, 1, "new", "key_bits: must be between %u and %u",
                                   HUSH_RSA_MIN_BITS, HUSH_RSA_MAX_BITS);
        o.key_bits = (unsigned)v;
    }
    lua_getfield(L, 1, "client_key");
    if (!lua_isnil(L, -1)) {
        o.client_key = hushlua_test_keypair(L, -1); /* borrowed: the client takes a reference */
        if (o.client_key == NULL)
            return hushlua_argfail(L, 1, "new", "client_key: hushcall.keypair expected, got %s",
                                   luaL_typename(L, -1));
    }
    lua_pop(L, 1);
    /* Missing last: a value of the wrong type is the likelier mistake to name. */
    if (o.base_url == NULL)
        return hushlua_argfail(L, 1, "new", "base_url: string expected, got nil");

    /* The userdata first, so that nothing can fail once the client exists. */
    client_ud *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->client = NULL;
    c->max_request_bytes = o.max_request_bytes;
    luaL_setmetatable(L, HUSHLUA_CLIENT_MT);
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_client_new(&o, &c->client, &err);
    if (status != HUSH_OK)
        return hushlua_fail(L, status, &err, 0);
    return 1;
}

/* The per-call options table at `idx` (from the request's security_tier,
 * api_key and base_url; may be nil). Strings stay owned by that table. */
static void call_options(lua_State *L, int idx, const char *fname, hush_call_options *co)
{
    memset(co, 0, sizeof *co);
    if (lua_isnoneornil(L, idx))
        return;
    if (!lua_istable(L, idx))
        hushlua_argfail(L, 1, fname, "call options: table expected, got %s",
                        luaL_typename(L, idx));
    hushlua_opt_string(L, idx, 1, fname, "security_tier", &co->security_tier);
    hushlua_opt_string(L, idx, 1, fname, "api_key", &co->api_key);
    hushlua_opt_string(L, idx, 1, fname, "base_url", &co->base_url);
}

/* Serialize the request at 2 and submit it on the state's engine, or with
 * `wait` run it to the end on the client's own: the call userdata is pushed
 * (and 0 returned), or nil, err (and 2 returned). */
static int start_call(lua_State *L, const char *fname, bool wait)
{
    client_ud *c = check_client(L, 1, fname);
    if (!lua_istable(L, 2))
        return hushlua_argfail(L, 1, fname, "table expected, got %s", luaL_typename(L, 2));
    hush_call_options co;
    call_options(L, 3, fname, &co);
    lua_settop(L, 3);
    hush_engine *engine = NULL;
    if (!wait && (engine = state_engine(L)) == NULL)
        return 2;
    call_ud *call = lua_newuserdatauv(L, sizeof *call, 1);
    call->call = NULL;
    luaL_setmetatable(L, HUSHLUA_CALL_MT);
    hush_secbuf *buf = hushlua_serialize(L, 2, c->max_request_bytes);
    if (buf == NULL)
        return 2;
    hush_error err;
    hush_error_clear(&err);
    /* Waited on: the client's own engine, so the state's fd never wakes for it. */
    hush_status status =
        wait ? hush_client_complete_call(c->client, buf, &co, &call->call, &err)
             : hush_engine_submit(engine, c->client, buf, &co, NULL, &call->call, &err);
    if (status != HUSH_OK) {
        call->call = NULL;
        return hushlua_fail(L, status, &err, 0);
    }
    return 0;
}

/* core.submit(client, request, call_options): the call, or nil, err. */
static int submit(lua_State *L)
{
    int n = start_call(L, "submit", false);
    if (n != 0)
        return n;
    call_ud *call = lua_touserdata(L, -1);
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_INFLIGHT);
    lua_pushvalue(L, -2);
    lua_rawsetp(L, -2, call->call);
    lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_CALLS);
    lua_pushvalue(L, -3);
    lua_rawsetp(L, -2, call->call);
    lua_pop(L, 2);
    return 1;
}

/* core.create(client, request, call_options): the response, or nil, err.
 * The finished call is kept just long enough to read err.details. */
static int create(lua_State *L)
{
    int n = start_call(L, "create", true); /* holds no Lua lock while it waits */
    if (n != 0)
        return n;
    int idx = lua_gettop(L);
    call_ud *call = lua_touserdata(L, idx);
    n = push_result(L, idx, false);
    hush_call *done = call->call;
    call->call = NULL;
    hush_call_free(done); /* now, not at the next collection: it is never drained */
    return n;
}

/* The registry tables that find a state's calls: in flight (strong) and all
 * (weak values). */
static void open_call_tables(lua_State *L)
{
    if (lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_INFLIGHT) == LUA_TNIL) {
        lua_newtable(L);
        lua_setfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_INFLIGHT);
    }
    lua_pop(L, 1);
    if (lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_CALLS) == LUA_TNIL) {
        lua_newtable(L);
        lua_createtable(L, 0, 1);
        lua_pushliteral(L, "v");
        lua_setfield(L, -2, "__mode");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_CALLS);
    }
    lua_pop(L, 1);
}

void hushlua_open_client(lua_State *L)
{
    static const luaL_Reg client_meta[] = {
        {"__gc", client_gc},
        {"__tostring", client_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg client_methods[] = {
        {"public_key_pem", client_public_key_pem},
        {NULL, NULL},
    };
    if (hushlua_new_class(L, HUSHLUA_CLIENT_MT, client_meta, client_methods, NULL)) {
        lua_pushliteral(L, "hushcall.client");
        lua_setfield(L, -2, "__metatable");
    }
    /* The client's methods table, which the Lua layer completes. */
    lua_getfield(L, -1, "__index");
    lua_setfield(L, -3, "client_methods");
    lua_pop(L, 1);

    static const luaL_Reg engine_meta[] = {{"__gc", engine_gc}, {NULL, NULL}};
    if (hushlua_new_class(L, HUSHLUA_ENGINE_MT, engine_meta, NULL, NULL)) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    static const luaL_Reg call_meta[] = {
        {"__gc", call_gc},
        {"__tostring", call_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg call_methods[] = {
        {"ready", call_ready},
        {"result", call_result},
        {"wait", call_wait},
        {"cancel", call_cancel},
        {NULL, NULL},
    };
    hushlua_new_class(L, HUSHLUA_CALL_MT, call_meta, call_methods, call_index);
    lua_pop(L, 1);

    open_call_tables(L);
    static const luaL_Reg functions[] = {
        {"new", new},       {"create", create}, {"submit", submit},
        {"fd", fd},         {"drain", drain},   {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
