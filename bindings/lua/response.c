/* response.c — responses as userdata views over a decrypted hush_json_doc
 * in locked memory. One "document" userdata owns the doc; each view is a
 * userdata holding a node and, as its user value, the document. A leaf
 * becomes a Lua value only when it is read (strings are copied then, and
 * only then); containers become further views. wipe() (and __close) zero
 * the document at once; __gc of the document zeroes it when no view is left.
 */
#include "hushlua.h"

#include <math.h>
#include <string.h>

typedef struct document {
    hush_json_doc *doc; /* NULL once wiped */
} document;

typedef struct view {
    const hush_json_value *node; /* an object or an array of the document */
} view;

static int document_gc(lua_State *L)
{
    document *d = luaL_checkudata(L, 1, HUSHLUA_DOCUMENT_MT);
    hush_json_doc_free(d->doc); /* wipes, then unmaps */
    d->doc = NULL;
    return 0;
}

/* The view at `idx` and its document (pushed), or raise once wiped. */
static view *check_view(lua_State *L, int idx, document **doc_out)
{
    view *v = luaL_checkudata(L, idx, HUSHLUA_RESPONSE_MT);
    lua_getiuservalue(L, idx, 1);
    document *d = lua_touserdata(L, -1);
    if (d == NULL || d->doc == NULL)
        luaL_error(L, "response was wiped");
    if (doc_out != NULL)
        *doc_out = d;
    return v;
}

/* A view of `node` sharing the document at `doc_idx`. */
static void push_view(lua_State *L, int doc_idx, const hush_json_value *node)
{
    doc_idx = lua_absindex(L, doc_idx);
    view *v = lua_newuserdatauv(L, sizeof *v, 1);
    v->node = node;
    lua_pushvalue(L, doc_idx);
    lua_setiuservalue(L, -2, 1);
    luaL_setmetatable(L, HUSHLUA_RESPONSE_MT);
}

static void push_number(lua_State *L, const hush_json_value *node)
{
    hush_error err;
    hush_error_clear(&err);
    if (hush_json_is_integer(node)) {
        int64_t i;
        if (hush_json_int64(node, &i, &err) == HUSH_OK) {
            lua_pushinteger(L, (lua_Integer)i);
            return;
        }
    }
    double d = 0.0;
    if (hush_json_double(node, &d, &err) != HUSH_OK) { /* past the double range */
        size_t len;
        const char *text = hush_json_number_text(node, &len);
        d = text != NULL && text[0] == '-' ? -HUGE_VAL : HUGE_VAL;
    }
    lua_pushnumber(L, (lua_Number)d);
}

/* A leaf as a Lua value (a string is copied out of locked memory now), or a
 * container as a view (doc_idx != 0) or a plain table copy (doc_idx == 0). */
static void push_node(lua_State *L, int doc_idx, const hush_json_value *node);

static void push_table_copy(lua_State *L, const hush_json_value *node)
{
    luaL_checkstack(L, 6, "hushcall: response nesting");
    size_t n = hush_json_length(node);
    if (hush_json_type_of(node) == HUSH_JSON_ARRAY) {
        lua_createtable(L, n > INT32_MAX ? 0 : (int)n, 0);
        for (size_t i = 0; i < n; i++) {
            push_node(L, 0, hush_json_array_get(node, i));
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        /* So that an empty array is written back as [] and not {}. */
        luaL_setmetatable(L, HUSHLUA_ARRAY_MT);
        return;
    }
    lua_createtable(L, 0, n > INT32_MAX ? 0 : (int)n);
    for (size_t i = 0; i < n; i++) {
        const char *key;
        size_t key_len;
        const hush_json_value *value;
        if (!hush_json_object_member(node, i, &key, &key_len, &value))
            break;
        lua_pushlstring(L, key, key_len);
        push_node(L, 0, value);
        lua_rawset(L, -3);
    }
}

static void push_node(lua_State *L, int doc_idx, const hush_json_value *node)
{
    size_t len;
    const char *s;
    switch (hush_json_type_of(node)) {
    case HUSH_JSON_NULL:
        hushlua_push_null(L);
        return;
    case HUSH_JSON_BOOL:
        lua_pushboolean(L, hush_json_bool(node));
        return;
    case HUSH_JSON_NUMBER:
        push_number(L, node);
        return;
    case HUSH_JSON_STRING:
        s = hush_json_string(node, &len);
        lua_pushlstring(L, s, len);
        return;
    case HUSH_JSON_ARRAY:
    case HUSH_JSON_OBJECT:
        if (doc_idx != 0)
            push_view(L, doc_idx, node);
        else
            push_table_copy(L, node);
        return;
    }
    lua_pushnil(L);
}

/* Member `key` of an object, element `key` (1-based) of an array, or NULL. */
static const hush_json_value *lookup(lua_State *L, const hush_json_value *node, int key)
{
    if (hush_json_type_of(node) == HUSH_JSON_OBJECT) {
        if (lua_type(L, key) != LUA_TSTRING)
            return NULL;
        size_t len;
        const char *k = lua_tolstring(L, key, &len);
        return hush_json_object_get(node, k, len);
    }
    int ok = 0;
    lua_Integer i = lua_type(L, key) == LUA_TNUMBER ? lua_tointegerx(L, key, &ok) : 0;
    if (!ok || i < 1 || (lua_Unsigned)i > (lua_Unsigned)hush_json_length(node))
        return NULL;
    return hush_json_array_get(node, (size_t)(i - 1));
}

/* ---- methods ------------------------------------------------------------- */

static int view_wipe(lua_State *L)
{
    luaL_checkudata(L, 1, HUSHLUA_RESPONSE_MT);
    lua_getiuservalue(L, 1, 1);
    document *d = lua_touserdata(L, -1);
    if (d != NULL) {
        hush_json_doc_free(d->doc);
        d->doc = NULL;
    }
    return 0;
}

/* resp:locked(): whether the document's memory is mlock'ed; false once wiped. */
static int view_locked(lua_State *L)
{
    luaL_checkudata(L, 1, HUSHLUA_RESPONSE_MT);
    lua_getiuservalue(L, 1, 1);
    document *d = lua_touserdata(L, -1);
    lua_pushboolean(L, d != NULL && d->doc != NULL &&
                           hush_arena_is_locked(hush_json_doc_arena(d->doc)));
    return 1;
}

static int view_totable(lua_State *L)
{
    view *v = check_view(L, 1, NULL);
    push_table_copy(L, v->node);
    return 1;
}

/* resp:get(key): the member, also when a method name shadows it. */
static int view_get(lua_State *L)
{
    view *v = check_view(L, 1, NULL);
    int doc_idx = lua_gettop(L);
    luaL_checkany(L, 2);
    const hush_json_value *found = lookup(L, v->node, 2);
    if (found == NULL)
        lua_pushnil(L);
    else
        push_node(L, doc_idx, found);
    return 1;
}

/* ---- metamethods ----------------------------------------------------------- */

/* Methods first (so a JSON member named "get" is read with v:get("get")),
 * then the JSON member or element. */
static int view_index(lua_State *L)
{
    if (lua_type(L, 2) == LUA_TSTRING) {
        hushlua_push_method(L, 2);
        if (!lua_isnil(L, -1)) {
            luaL_checkudata(L, 1, HUSHLUA_RESPONSE_MT);
            return 1;
        }
        lua_pop(L, 1);
    }
    return view_get(L);
}

static int view_newindex(lua_State *L)
{
    return luaL_error(L, "a response is read-only");
}

static int view_len(lua_State *L)
{
    view *v = check_view(L, 1, NULL);
    lua_pushinteger(L, (lua_Integer)hush_json_length(v->node));
    return 1;
}

/* The iterator of pairs(view): upvalue 1 is the next position (0-based). */
static int view_next(lua_State *L)
{
    view *v = check_view(L, 1, NULL);
    int doc_idx = lua_gettop(L);
    lua_Integer pos = lua_tointeger(L, lua_upvalueindex(1));
    if (pos < 0 || (lua_Unsigned)pos >= (lua_Unsigned)hush_json_length(v->node))
        return 0;
    lua_pushinteger(L, pos + 1);
    lua_replace(L, lua_upvalueindex(1));
    if (hush_json_type_of(v->node) == HUSH_JSON_ARRAY) {
        lua_pushinteger(L, pos + 1);
        push_node(L, doc_idx, hush_json_array_get(v->node, (size_t)pos));
        return 2;
    }
    const char *key;
    size_t key_len;
    const hush_json_value *value;
    if (!hush_json_object_member(v->node, (size_t)pos, &key, &key_len, &value))
        return 0;
    lua_pushlstring(L, key, key_len);
    push_node(L, doc_idx, value);
    return 2;
}

static int view_pairs(lua_State *L)
{
    check_view(L, 1, NULL);
    lua_pushinteger(L, 0);
    lua_pushcclosure(L, view_next, 1);
    lua_pushvalue(L, 1);
    lua_pushnil(L);
    return 3;
}

static int view_tostring(lua_State *L)
{
    luaL_checkudata(L, 1, HUSHLUA_RESPONSE_MT);
    lua_getiuservalue(L, 1, 1);
    document *d = lua_touserdata(L, -1);
    if (d == NULL || d->doc == NULL) {
        lua_pushliteral(L, "hushcall.response(wiped)");
        return 1;
    }
    const view *v = lua_touserdata(L, 1);
    bool array = hush_json_type_of(v->node) == HUSH_JSON_ARRAY;
    size_t n = hush_json_length(v->node);
    lua_pushfstring(L, "hushcall.response(%s, %I %s; contents redacted)",
                    array ? "array" : "object", (LUAI_UACINT)n,
                    array ? (n == 1 ? "element" : "elements") : (n == 1 ? "member" : "members"));
    return 1;
}

void hushlua_open_response(lua_State *L)
{
    static const luaL_Reg document_meta[] = {{"__gc", document_gc}, {NULL, NULL}};
    if (hushlua_new_class(L, HUSHLUA_DOCUMENT_MT, document_meta, NULL, NULL)) {
        lua_pushboolean(L, 0);
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
    static const luaL_Reg view_meta[] = {
        {"__newindex", view_newindex}, {"__len", view_len},
        {"__pairs", view_pairs},       {"__close", view_wipe},
        {"__tostring", view_tostring}, {NULL, NULL},
    };
    static const luaL_Reg view_methods[] = {
        {"wipe", view_wipe},
        {"locked", view_locked},
        {"totable", view_totable},
        {"get", view_get},
        {NULL, NULL},
    };
    if (hushlua_new_class(L, HUSHLUA_RESPONSE_MT, view_meta, view_methods, view_index)) {
        lua_pushliteral(L, "hushcall.response");
        lua_setfield(L, -2, "__metatable");
    }
    lua_pop(L, 1);
}

hush_json_doc **hushlua_push_document(lua_State *L)
{
    document *d = lua_newuserdatauv(L, sizeof *d, 0);
    d->doc = NULL;
    luaL_setmetatable(L, HUSHLUA_DOCUMENT_MT);
    return &d->doc;
}

/* Lua 5.4's warn(), once per state, the first time an answer is not locked.
 * Whether it shows is the host's choice (lua -W, warn("@on")), as for any
 * warning; the flag lives in the registry, so each state warns once. */
static void warn_once_if_unlocked(lua_State *L, hush_json_doc *doc)
{
    if (hush_arena_is_locked(hush_json_doc_arena(doc)))
        return;
    int warned = lua_getfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_LOCK_WARNED) != LUA_TNIL;
    lua_pop(L, 1);
    if (warned)
        return;
    lua_pushboolean(L, 1);
    lua_setfield(L, LUA_REGISTRYINDEX, HUSHLUA_REG_LOCK_WARNED);
    lua_warning(L,
                "hushcall could not lock plaintext memory (mlock refused: RLIMIT_MEMLOCK too "
                "small or no CAP_IPC_LOCK). It is still guarded, wiped and excluded from core "
                "dumps, but the kernel may swap it to disk. Raise the limit (`ulimit -l`, "
                "LimitMEMLOCK= in a systemd unit) or grant CAP_IPC_LOCK.",
                0);
}

void hushlua_push_root_view(lua_State *L, int doc_idx)
{
    document *d = luaL_checkudata(L, doc_idx, HUSHLUA_DOCUMENT_MT);
    warn_once_if_unlocked(L, d->doc);
    push_view(L, doc_idx, hush_json_doc_root(d->doc));
}

void hushlua_push_json_table(lua_State *L, const char *text, size_t len)
{
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_error_clear(&err);
    luaL_checkstack(L, 4, "hushcall: error details");
    if (hush_json_parse(text, len, NULL, HUSH_SECMEM_DEFAULT, &doc, &err) == HUSH_OK &&
        hush_json_type_of(hush_json_doc_root(doc)) == HUSH_JSON_OBJECT) {
        /* The document is owned by a userdata while the copy is made, so a
         * memory error thrown meanwhile cannot leak it. */
        hush_json_doc **slot = hushlua_push_document(L); /* may raise: nothing owned yet */
        *slot = doc;
        push_table_copy(L, hush_json_doc_root(doc));
        hush_json_doc_free(*slot);
        *slot = NULL;
        lua_remove(L, -2);
        return;
    }
    hush_json_doc_free(doc);
    /* Not a JSON object: the text is the detail, as nomyo keeps it. */
    lua_createtable(L, 0, 1);
    lua_pushlstring(L, text, len);
    lua_setfield(L, -2, "detail");
}
