/* client.c — clients (client.h), the state's engine and its calls
 * (engine.h). Every request of a Lua state runs on that state's engine, made
 * on first use and kept in the registry: create() is a call submitted there
 * and waited on, submit() returns the call at once, and drain() hands back
 * the calls that finished, found through a weak table keyed by the hush_call
 * pointer. Calls submitted and not yet drained (or read) are also held by a
 * strong table, so a fire-and-forget submit is not cancelled by the
 * collector before its completion is drained.
 *
 * A streamed call is the same userdata with `stream` set: its chunks come
 * from next_chunk() (the fd form) or from calling it (the generic-for
 * form), each a response view over its own document. One submitted on the
 * state's engine stays held until it ended or was closed, since drain()
 * announces it again whenever chunks wait. */
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
    bool stream;     /* chunks by next_chunk, never a result */
    bool end_taken;  /* next_chunk gave the stream's end: drain() lists it no more */
} call_ud;

/* How start_call runs a call. */
typedef enum call_mode {
    CALL_WAIT,   /* on the client's own engine, waited on: create() */
    CALL_SUBMIT, /* on the state's engine, drained: submit() */
    CALL_STREAM  /* a stream on the client's own engine, iterated: stream() */
} call_mode;

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
    lua_newtable(L); /* streams listed in this drain: one may be announced twice */
    int listed = lua_gettop(L);
    lua_Integer n = 0;
    hush_call *done[DRAIN_BATCH];
    for (;;) {
        size_t got = hush_engine_drain(e->engine, done, DRAIN_BATCH);
        for (size_t i = 0; i < got; i++) {
            if (lua_rawgetp(L, calls, done[i]) == LUA_TNIL) {
                lua_pop(L, 1); /* a create() call, waited on by its caller */
            } else if (((call_ud *)lua_touserdata(L, -1))->stream) {
                /* Held until it ends: the caller may keep it only in this list,
                 * once per drain. Its end announced after next_chunk already
                 * gave it is news to no one. */
                const call_ud *c = lua_touserdata(L, -1);
                bool listed_already = lua_rawgetp(L, listed, done[i]) != LUA_TNIL;
                lua_pop(L, 1);
                if (!c->end_taken && !listed_already) {
                    lua_pushvalue(L, -1);
                    lua_rawsetp(L, listed, done[i]);
                    lua_pushvalue(L, -1);
                    lua_rawseti(L, list, ++n);
                }
                lua_pop(L, 1);
                continue;
            } else {
                lua_rawseti(L, list, ++n);
            }
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

/* call:close() (and __close): cancel the call unless it is done and let it
 * go now, not at the next collection; a stream's chunks already taken stay
 * valid. */
static int call_close(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    hush_call *call = c->call;
    if (call == NULL)
        return 0;
    inflight_remove(L, call);
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
    if (c->stream)
        return hushlua_argfail(L, 1, "result", "a streamed call: take its chunks with next_chunk");
    int n = push_result(L, 1, true);
    if (c->call != NULL && hush_call_done(c->call))
        inflight_remove(L, c->call);
    return n;
}

/* The optional seconds at `idx` in milliseconds: `none` when absent, 0
 * for none or less, -1 (for ever) past a year. */
static long wait_ms(lua_State *L, int idx, const char *fname, long none)
{
    if (lua_isnoneornil(L, idx))
        return none;
    if (lua_type(L, idx) != LUA_TNUMBER)
        return hushlua_argfail(L, 1, fname, "number expected, got %s", luaL_typename(L, idx));
    double s = (double)lua_tonumber(L, idx);
    if (isnan(s))
        return hushlua_argfail(L, 1, fname, "seconds must be a number, not NaN");
    return s <= 0.0 ? 0 : s > 86400.0 * 365.0 ? -1 : (long)(s * 1000.0 + 0.5);
}

/* The next chunk of the streamed call at `idx`, waited for up to
 * `timeout_ms`: a response view over its own document, false when none
 * came in time, nil when the stream ended complete, or nil, err (kind
 * "truncated" for a cut stream, "auth" for a frame that failed to
 * authenticate; the same failure every later time). */
static int push_next_chunk(lua_State *L, int idx, long timeout_ms)
{
    call_ud *c = check_call(L, idx);
    if (!c->stream)
        return hushlua_argfail(L, 1, "next_chunk", "not a streamed call");
    if (c->call == NULL)
        return hushlua_fail_kind(L, "cancelled", "the stream was closed");
    hush_json_doc **doc = hushlua_push_document(L); /* owns the chunk from the start */
    hush_error err;
    hush_error_clear(&err);
    hush_status status = hush_call_next_chunk(c->call, timeout_ms, doc, &err); /* no Lua lock */
    if (status == HUSH_OK && *doc != NULL) {
        hushlua_push_root_view(L, -1);
        lua_remove(L, -2);
        return 1;
    }
    lua_pop(L, 1);
    if (status == HUSH_E_TIMEOUT) {
        lua_pushboolean(L, 0);
        return 1;
    }
    inflight_remove(L, c->call); /* ended: drain() will not need to hand it back */
    c->end_taken = true;
    if (status == HUSH_OK) {
        lua_pushnil(L);
        return 1;
    }
    size_t len = 0;
    const char *details = hush_call_error_details(c->call, &len);
    if (details != NULL && len > 0)
        hushlua_push_json_table(L, details, len);
    else
        lua_pushnil(L);
    return hushlua_fail(L, status, &err, -1);
}

/* call:next_chunk([seconds]): as push_next_chunk, not waiting by default
 * (the fd form: drain() announced the call). */
static int call_next_chunk(lua_State *L)
{
    check_call(L, 1);
    return push_next_chunk(L, 1, wait_ms(L, 2, "next_chunk", 0));
}

/* A stream called as the iterator of a generic for: the next chunk, waited
 * for, or nil at the end; a failure is raised (its err table). */
static int call_iterate(lua_State *L)
{
    lua_settop(L, 1);
    if (push_next_chunk(L, 1, -1) == 2)
        return lua_error(L);
    return 1;
}

/* call:wait([seconds]): true once done, false when the time passes first. */
static int call_wait(lua_State *L)
{
    call_ud *c = check_call(L, 1);
    long ms = wait_ms(L, 2, "wait", -1);
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
    if (strcmp(key, "stream") == 0) {
        lua_pushboolean(L, c->stream);
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
    const char *type = c->stream ? "stream" : "call";
    if (c->call == NULL)
        lua_pushfstring(L, "hushcall.%s(released)", type);
    else
        lua_pushfstring(L, "hushcall.%s(%s, %s)", type, hush_call_payload_id(c->call),
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
 * api_key, base_url and path, and request()'s method; may be nil). Strings
 * stay owned by that table. */
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
    /* Their values are the core's to judge (nil, err with kind "argument"). */
    hushlua_opt_string(L, idx, 1, fname, "path", &co->path);
    hushlua_opt_string(L, idx, 1, fname, "method", &co->method);
}

/* Whether the body at `idx` asks for a streamed answer ("stream": true). */
static bool asks_for_stream(lua_State *L, int idx)
{
    lua_pushliteral(L, "stream");
    bool stream = lua_rawget(L, idx) == LUA_TBOOLEAN && lua_toboolean(L, -1);
    lua_pop(L, 1);
    return stream;
}

/* The body at 2, checked against the call's method and mode, serialized:
 * the buffer, NULL for a bodyless GET (`*failed` false), or NULL after
 * pushing nil, err (`*failed` true). */
static hush_secbuf *call_body(lua_State *L, const char *fname, call_mode mode,
                              hush_call_options *co, size_t max_bytes, bool *failed)
{
    *failed = false;
    if (co->method != NULL && strcmp(co->method, "GET") == 0) {
        if (!lua_isnil(L, 2))
            hushlua_argfail(L, 1, fname, "body: a GET request has none");
        if (mode == CALL_STREAM)
            hushlua_argfail(L, 1, fname, "stream: a GET request has no streamed answer");
        return NULL;
    }
    if (!lua_istable(L, 2))
        hushlua_argfail(L, 1, fname, "table expected, got %s", luaL_typename(L, 2));
    co->stream = asks_for_stream(L, 2);
    if (co->stream && mode == CALL_WAIT)
        hushlua_argfail(L, 1, fname, "stream: a streamed answer is taken with client:stream{...}"
                                     " or client:submit{...}");
    if (!co->stream && mode == CALL_STREAM)
        hushlua_argfail(L, 1, fname, "stream: must be true");
    hush_secbuf *buf = hushlua_serialize(L, 2, max_bytes);
    *failed = buf == NULL;
    return buf;
}

/* Start the call of the body at 2 (nil for a GET) with the call options at
 * 3 as `mode` says: the call userdata is pushed (and 0 returned), or nil,
 * err (and 2 returned). */
static int start_call(lua_State *L, const char *fname, call_mode mode)
{
    client_ud *c = check_client(L, 1, fname);
    hush_call_options co;
    call_options(L, 3, fname, &co);
    lua_settop(L, 3);
    hush_engine *engine = NULL;
    if (mode == CALL_SUBMIT && (engine = state_engine(L)) == NULL)
        return 2;
    call_ud *call = lua_newuserdatauv(L, sizeof *call, 1);
    *call = (call_ud){.call = NULL};
    luaL_setmetatable(L, HUSHLUA_CALL_MT);
    bool failed;
    hush_secbuf *buf = call_body(L, fname, mode, &co, c->max_request_bytes, &failed);
    if (failed)
        return 2;
    call->stream = co.stream;
    hush_error err;
    hush_error_clear(&err);
    hush_status status;
    switch (mode) {
    case CALL_WAIT: /* the client's own engine, so the state's fd never wakes for it */
        status = hush_client_complete_call(c->client, buf, &co, &call->call, &err);
        break;
    case CALL_STREAM: /* the same: its chunks are waited for, never drained */
        status = hush_client_stream(c->client, buf, &co, &call->call, &err);
        break;
    default:
        status = hush_engine_submit(engine, c->client, buf, &co, NULL, &call->call, &err);
        break;
    }
    if (status != HUSH_OK) {
        call->call = NULL;
        return hushlua_fail(L, status, &err, 0);
    }
    return 0;
}

/* core.submit(client, request, call_options): the call, or nil, err. */
static int submit(lua_State *L)
{
    int n = start_call(L, "submit", CALL_SUBMIT);
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
    int n = start_call(L, "create", CALL_WAIT); /* holds no Lua lock while it waits */
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

/* core.stream(client, request, call_options): the stream, or nil, err. */
static int stream(lua_State *L)
{
    int n = start_call(L, "stream", CALL_STREAM);
    return n != 0 ? n : 1;
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
        {"__close", call_close},
        {"__call", call_iterate},
        {"__tostring", call_tostring},
        {NULL, NULL},
    };
    static const luaL_Reg call_methods[] = {
        {"ready", call_ready},
        {"result", call_result},
        {"wait", call_wait},
        {"cancel", call_cancel},
        {"close", call_close},
        {"next_chunk", call_next_chunk},
        {NULL, NULL},
    };
    hushlua_new_class(L, HUSHLUA_CALL_MT, call_meta, call_methods, call_index);
    lua_pop(L, 1);

    open_call_tables(L);
    static const luaL_Reg functions[] = {
        {"new", new}, {"create", create}, {"submit", submit}, {"stream", stream},
        {"fd", fd},   {"drain", drain},   {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
}
