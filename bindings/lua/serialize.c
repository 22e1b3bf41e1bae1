/* serialize.c — a Lua request table walked in C and written as compact JSON
 * straight into a locked hush_secbuf (hush_json_writer): no Lua string of
 * the JSON is ever made, and no metamethod runs (raw access only). This part
 * also owns what a request table may hold beyond plain values: the null
 * sentinel and the hushcall.array / hushcall.object markers.
 *
 * Sequences 1..n are arrays, other tables objects with string keys; the
 * hushcall.array / hushcall.object metatables force either. The buffer and
 * writer belong to a userdata while the walk runs, so a Lua error thrown in
 * the middle (out of memory) cannot leak them. Errors name the path
 * ("messages[2].content"), built only when one is raised, never a value. */
#include "hushlua.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#define FIRST_CAPACITY 4096u
#define MAX_DEPTH HUSH_JSON_DEFAULT_MAX_DEPTH /* 64 */

typedef struct request_holder {
    hush_secbuf *buf;
    hush_json_writer *w;
} request_holder;

static void holder_release(request_holder *h)
{
    hush_json_writer_free(h->w);
    h->w = NULL;
    hush_secbuf_free(h->buf); /* zeroes, then unmaps */
    h->buf = NULL;
}

static int holder_gc(lua_State *L)
{
    holder_release(luaL_checkudata(L, 1, HUSHLUA_REQUEST_MT));
    return 0;
}

/* One step of the path: a string key (pointing into a Lua string that is on
 * the stack while the step is) or an array index (1-based, as Lua counts). */
typedef struct path_step {
    const char *key;
    size_t key_len;
    lua_Integer index;
} path_step;

typedef struct walker {
    lua_State *L;
    hush_json_writer *w;
    int visiting;          /* stack index of the set of tables on the current path */
    hush_status status;    /* a core failure (the size limit), or HUSH_OK */
    hush_error err;
    char message[384];     /* a path error, when status is HUSH_OK */
    path_step path[MAX_DEPTH + 1];
} walker;

static bool is_identifier(const char *s, size_t len)
{
    if (len == 0 || (s[0] >= '0' && s[0] <= '9'))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_'))
            return false;
    }
    return true;
}

/* Append to `out` (of `cap`), truncating; returns the new length. */
static size_t put(char *out, size_t cap, size_t at, const char *s, size_t len)
{
    for (size_t i = 0; i < len && at + 1 < cap; i++)
        out[at++] = s[i];
    out[at < cap ? at : cap - 1] = '\0';
    return at;
}

/* "messages[2].content", or "<root>". Keys are names, not values; odd ones
 * are quoted with non-printable bytes escaped, long ones shortened. */
static size_t path_text(const walker *wk, unsigned depth, char *out, size_t cap)
{
    size_t at = 0;
    out[0] = '\0';
    if (depth == 0)
        return put(out, cap, 0, "<root>", 6);
    for (unsigned i = 0; i < depth; i++) {
        const path_step *s = &wk->path[i];
        char tmp[32];
        if (s->key == NULL) {
            int n = snprintf(tmp, sizeof tmp, "[%lld]", (long long)s->index);
            at = put(out, cap, at, tmp, (size_t)n);
        } else if (is_identifier(s->key, s->key_len)) {
            if (i > 0)
                at = put(out, cap, at, ".", 1);
            at = put(out, cap, at, s->key, s->key_len > 64 ? 64 : s->key_len);
        } else {
            at = put(out, cap, at, "[\"", 2);
            for (size_t k = 0; k < s->key_len && k < 64; k++) {
                unsigned char c = (unsigned char)s->key[k];
                int n = c == '"' || c == '\\' ? snprintf(tmp, sizeof tmp, "\\%c", c)
                        : c < 0x20 || c >= 0x7f ? snprintf(tmp, sizeof tmp, "\\%u", c)
                                               : snprintf(tmp, sizeof tmp, "%c", c);
                at = put(out, cap, at, tmp, (size_t)n);
            }
            at = put(out, cap, at, s->key_len > 64 ? "...\"]" : "\"]", s->key_len > 64 ? 5 : 2);
        }
    }
    return at;
}

/* Record "<path>: <what>". Returns -1. */
static int fail_at(walker *wk, unsigned depth, const char *what)
{
    size_t at = path_text(wk, depth, wk->message, sizeof wk->message);
    at = put(wk->message, sizeof wk->message, at, ": ", 2);
    put(wk->message, sizeof wk->message, at, what, strlen(what));
    return -1;
}

/* A writer call failed. The size limit (and secure memory running out) are
 * failures of the call, returned as nil, err; anything else is a value the
 * writer refused (invalid UTF-8), named by its path. */
static int writer_failed(walker *wk, unsigned depth, hush_status status, const char *what)
{
    if (status == HUSH_E_LIMIT || status == HUSH_E_NOMEM) {
        wk->status = status;
        return -1;
    }
    return fail_at(wk, depth, what);
}

#define WRITE(wk, depth, call, what)                                                        \
    do {                                                                                    \
        hush_status st_ = (call);                                                           \
        if (st_ != HUSH_OK)                                                                 \
            return writer_failed((wk), (depth), st_, (what));                               \
    } while (0)

static int walk_value(walker *wk, int idx, unsigned depth);

/* The kind of table: 1 array, 0 object; `*n` the array length. */
static int table_kind(walker *wk, int idx, unsigned depth, lua_Integer *n)
{
    lua_State *L = wk->L;
    int marked = 0; /* 1 array, 2 object */
    if (lua_getmetatable(L, idx)) {
        luaL_getmetatable(L, HUSHLUA_ARRAY_MT);
        if (lua_rawequal(L, -1, -2))
            marked = 1;
        lua_pop(L, 1);
        luaL_getmetatable(L, HUSHLUA_OBJECT_MT);
        if (lua_rawequal(L, -1, -2))
            marked = 2;
        lua_pop(L, 2);
    }
    if (marked == 2)
        return 0;
    lua_Integer count = 0, max = 0;
    bool indices = true;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        count++;
        if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
            lua_Integer k = lua_tointeger(L, -1);
            if (k > max)
                max = k;
        } else {
            indices = false;
        }
    }
    bool sequence = indices && max == count;
    if (marked == 1) {
        if (!sequence)
            return fail_at(wk, depth, "an array (hushcall.array) must have exactly the keys 1..n");
        *n = count;
        return 1;
    }
    *n = count;
    return sequence && count > 0 ? 1 : 0;
}

static int walk_array(walker *wk, int idx, unsigned depth, lua_Integer n)
{
    lua_State *L = wk->L;
    WRITE(wk, depth, hush_json_write_array_begin(wk->w, &wk->err), "cannot begin an array");
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        wk->path[depth] = (path_step){.key = NULL, .key_len = 0, .index = i};
        if (walk_value(wk, lua_gettop(L), depth + 1) < 0)
            return -1;
        lua_pop(L, 1);
    }
    WRITE(wk, depth, hush_json_write_array_end(wk->w, &wk->err), "cannot end an array");
    return 0;
}

static int walk_object(walker *wk, int idx, unsigned depth)
{
    lua_State *L = wk->L;
    char what[96];
    WRITE(wk, depth, hush_json_write_object_begin(wk->w, &wk->err), "cannot begin an object");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        int key = lua_gettop(L) - 1;
        if (lua_type(L, key) != LUA_TSTRING) {
            snprintf(what, sizeof what, "cannot encode a key of type %s (object keys must be "
                     "strings)", luaL_typename(L, key));
            return fail_at(wk, depth, what); /* the stack is reset by hushlua_serialize */
        }
        size_t len;
        const char *k = lua_tolstring(L, key, &len); /* a string already: no conversion */
        wk->path[depth] = (path_step){.key = k, .key_len = len, .index = 0};
        hush_status status = hush_json_write_key(wk->w, k, len, &wk->err);
        if (status != HUSH_OK) /* the parent's path: a key that is not text is not a name */
            return writer_failed(wk, depth, status, "a key is not valid UTF-8");
        if (walk_value(wk, lua_gettop(L), depth + 1) < 0)
            return -1; /* the key stays on the stack: the path points into it */
        lua_pop(L, 1); /* the value; the key stays for lua_next */
    }
    WRITE(wk, depth, hush_json_write_object_end(wk->w, &wk->err), "cannot end an object");
    return 0;
}

static int walk_table(walker *wk, int idx, unsigned depth)
{
    lua_State *L = wk->L;
    /* A cycle would also end at the depth limit; say what it is. */
    lua_pushvalue(L, idx);
    bool seen = lua_rawget(L, wk->visiting) != LUA_TNIL;
    lua_pop(L, 1);
    if (seen)
        return fail_at(wk, depth, "cannot encode a reference cycle");
    if (depth >= MAX_DEPTH) {
        char what[64];
        snprintf(what, sizeof what, "nesting deeper than %u levels", MAX_DEPTH);
        return fail_at(wk, depth, what);
    }
    luaL_checkstack(L, 8, "hushcall: request nesting");
    lua_Integer n = 0;
    int kind = table_kind(wk, idx, depth, &n);
    if (kind < 0)
        return -1;
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, wk->visiting);
    int rc = kind == 1 ? walk_array(wk, idx, depth, n) : walk_object(wk, idx, depth);
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, wk->visiting);
    return rc;
}

static int walk_number(walker *wk, int idx, unsigned depth)
{
    lua_State *L = wk->L;
    if (lua_isinteger(L, idx)) {
        WRITE(wk, depth, hush_json_write_int64(wk->w, (int64_t)lua_tointeger(L, idx), &wk->err),
              "cannot encode an integer");
        return 0;
    }
    double d = (double)lua_tonumber(L, idx);
    if (isnan(d))
        return fail_at(wk, depth, "cannot encode NaN");
    if (isinf(d))
        return fail_at(wk, depth, d > 0 ? "cannot encode inf" : "cannot encode -inf");
    WRITE(wk, depth, hush_json_write_double(wk->w, d, &wk->err), "cannot encode a float");
    return 0;
}

static int walk_value(walker *wk, int idx, unsigned depth)
{
    lua_State *L = wk->L;
    size_t len;
    const char *s;
    switch (lua_type(L, idx)) {
    case LUA_TBOOLEAN:
        WRITE(wk, depth, hush_json_write_bool(wk->w, lua_toboolean(L, idx), &wk->err),
              "cannot encode a boolean");
        return 0;
    case LUA_TNUMBER:
        return walk_number(wk, idx, depth);
    case LUA_TSTRING:
        s = lua_tolstring(L, idx, &len);
        WRITE(wk, depth, hush_json_write_string(wk->w, s, len, &wk->err),
              "string is not valid UTF-8");
        return 0;
    case LUA_TTABLE:
        return walk_table(wk, idx, depth);
    case LUA_TUSERDATA:
        if (hushlua_is_null(L, idx)) {
            WRITE(wk, depth, hush_json_write_null(wk->w, &wk->err), "cannot encode null");
            return 0;
        }
        return fail_at(wk, depth, "cannot encode a userdata");
    case LUA_TLIGHTUSERDATA:
        return fail_at(wk, depth, "cannot encode a light userdata");
    case LUA_TFUNCTION:
        return fail_at(wk, depth, "cannot encode a function");
    case LUA_TTHREAD:
        return fail_at(wk, depth, "cannot encode a thread");
    default:
        return fail_at(wk, depth, "cannot encode nil");
    }
}

hush_secbuf *hushlua_serialize(lua_State *L, int idx, size_t max_bytes)
{
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 8, "hushcall: request");
    request_holder *h = lua_newuserdatauv(L, sizeof *h, 0);
    h->buf = NULL;
    h->w = NULL;
    luaL_setmetatable(L, HUSHLUA_REQUEST_MT);
    int holder = lua_gettop(L);
    lua_newtable(L); /* the tables on the current path */

    walker *wk = lua_newuserdatauv(L, sizeof *wk, 0); /* too big for the C stack of a coroutine */
    memset(wk, 0, sizeof *wk);
    wk->L = L;
    wk->visiting = holder + 1;
    wk->status = HUSH_OK;
    hush_error_clear(&wk->err);

    size_t first = max_bytes < FIRST_CAPACITY ? max_bytes : FIRST_CAPACITY;
    hush_status status = hush_secbuf_new(first, max_bytes, HUSH_SECMEM_DEFAULT, &h->buf, &wk->err);
    if (status == HUSH_OK)
        status = hush_json_writer_new(h->buf, HUSH_JSON_WRITE_COMPACT, MAX_DEPTH, &h->w, &wk->err);
    wk->w = h->w;
    if (status != HUSH_OK) {
        wk->status = status;
    } else if (walk_value(wk, idx, 0) == 0 && !hush_json_writer_complete(h->w)) {
        wk->status = HUSH_E_INTERNAL;
        snprintf(wk->err.message, sizeof wk->err.message, "the JSON writer did not complete");
    }

    hush_secbuf *buf = h->buf;
    hush_json_writer_free(h->w);
    h->w = NULL;
    h->buf = NULL;
    if (wk->status == HUSH_OK && wk->message[0] == '\0') {
        lua_settop(L, holder - 1);
        return buf;
    }
    hush_secbuf_free(buf);
    if (wk->status == HUSH_OK) { /* a value that cannot be encoded: a programming error */
        lua_pushstring(L, wk->message);
        lua_error(L);
    }
    if (wk->status == HUSH_E_LIMIT) {
        wk->err.http_status = 0;
        snprintf(wk->err.message, sizeof wk->err.message,
                 "the encoded request is larger than max_request_bytes (%zu bytes)", max_bytes);
    }
    hush_error err = wk->err;
    status = wk->status;
    lua_settop(L, holder - 1);
    hushlua_fail(L, status, &err, 0);
    return NULL;
}

/* ---- null, the markers and the part's registration ------------------------- */

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

/* The sentinel: one per state, kept in the registry so that every load of
 * the module in a state hands out the same value. */
static void open_null(lua_State *L)
{
    static const luaL_Reg null_meta[] = {{"__tostring", null_tostring}, {NULL, NULL}};
    if (hushlua_new_class(L, HUSHLUA_NULL_MT, null_meta, NULL, NULL)) {
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

void hushlua_open_serialize(lua_State *L)
{
    static const luaL_Reg holder_meta[] = {{"__gc", holder_gc}, {NULL, NULL}};
    if (hushlua_new_class(L, HUSHLUA_REQUEST_MT, holder_meta, NULL, NULL)) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    hushlua_new_class(L, HUSHLUA_ARRAY_MT, NULL, NULL, NULL);
    lua_pop(L, 1);
    hushlua_new_class(L, HUSHLUA_OBJECT_MT, NULL, NULL, NULL);
    lua_pop(L, 1);
    open_null(L);

    static const luaL_Reg functions[] = {
        {"array", mark_array},
        {"object", mark_object},
        {NULL, NULL},
    };
    luaL_setfuncs(L, functions, 0);
    hushlua_push_null(L);
    lua_setfield(L, -2, "null");
}
