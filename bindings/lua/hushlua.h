/* hushlua.h — what the sources of the Lua module hushcall.core share: the
 * registry names of its per-state data, the one error mapping, and the
 * constructors each source offers the others.
 *
 * Every piece of mutable data lives in the registry of the lua_State that
 * made it, never in a C static, so any number of states in any number of
 * threads may load the module at once. Plaintext goes from Lua tables
 * straight into locked memory (serialize.c) and from locked memory into the
 * one Lua string a caller reads (response.c); no other copy is made. */
#ifndef HUSHLUA_H
#define HUSHLUA_H

#include <stdbool.h>
#include <stddef.h>

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

/* ---- module.c ------------------------------------------------------------ */

/* Push nil and an err table for `status` (kind = hush_status_kind, status =
 * err->http_status or nil, message, details = `details_idx` when non-zero,
 * else nil). Returns 2, for `return hushlua_fail(...)`. */
int hushlua_fail(lua_State *L, hush_status status, const hush_error *err, int details_idx);
/* As hushlua_fail with an explicit kind and message (no core status). */
int hushlua_fail_kind(lua_State *L, const char *kind, const char *message);
/* Raise "bad argument #<arg> to '<fname>' (<what>)" without relying on
 * debug information (the Lua layer may stand between caller and C). */
int hushlua_argfail(lua_State *L, int arg, const char *fname, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Push the null sentinel. */
void hushlua_push_null(lua_State *L);
/* True when the value at `idx` is the null sentinel. */
bool hushlua_is_null(lua_State *L, int idx);

/* Option tables: read field `key` of the table at `idx`. Absent (nil) leaves
 * `*out` as it is and returns false; a value of the wrong type raises
 * "bad argument #<arg> to '<fname>' (<key>: string expected, got number)". */
bool hushlua_opt_string(lua_State *L, int idx, int arg, const char *fname, const char *key,
                        const char **out);
bool hushlua_opt_bool(lua_State *L, int idx, int arg, const char *fname, const char *key,
                      bool *out);
bool hushlua_opt_number(lua_State *L, int idx, int arg, const char *fname, const char *key,
                        double *out);
bool hushlua_opt_integer(lua_State *L, int idx, int arg, const char *fname, const char *key,
                         lua_Integer *out);
/* Raise for any key of the table at `idx` not in `known` (NULL-terminated). */
void hushlua_check_options(lua_State *L, int idx, int arg, const char *fname,
                           const char *const *known);

/* ---- serialize.c --------------------------------------------------------- */

void hushlua_serialize_open(lua_State *L);
/* Write the table at `idx` as compact JSON into a new locked buffer of at
 * most `max_bytes`. Returns the buffer (the caller owns it), or NULL after
 * pushing nil, err (the size limit: kind "limit"). Values that cannot be
 * encoded raise an error naming their path, never their content. */
hush_secbuf *hushlua_serialize(lua_State *L, int idx, size_t max_bytes);

/* ---- response.c ---------------------------------------------------------- */

void hushlua_response_open(lua_State *L);
/* Push a document holder with no document yet and return its slot: the
 * caller fills it (hush_call_result), so nothing that can raise stands
 * between getting a document and its owner. */
hush_json_doc **hushlua_push_document(lua_State *L);
/* Push a response view over the root of the (filled) document at `doc_idx`. */
void hushlua_push_root_view(lua_State *L, int doc_idx);
/* Push the JSON text `text` as plain Lua tables (a server's error body);
 * a text that is not a JSON object becomes { detail = text }. */
void hushlua_push_json_table(lua_State *L, const char *text, size_t len);

/* ---- client.c ------------------------------------------------------------ */

void hushlua_client_open(lua_State *L);
int hushlua_new(lua_State *L);
int hushlua_create(lua_State *L);
int hushlua_submit(lua_State *L);
int hushlua_fd(lua_State *L);
int hushlua_drain(lua_State *L);

/* ---- keys.c -------------------------------------------------------------- */

void hushlua_keys_open(lua_State *L);
int hushlua_generate_keys(lua_State *L);
int hushlua_load_keys(lua_State *L);
/* The hush_keypair of the keypair userdata at `idx` (borrowed), or NULL. */
hush_keypair *hushlua_test_keypair(lua_State *L, int idx);

#endif
