/* response.c — a sealed answer opened into the document the caller reads:
 * the server's JSON with `_metadata` merged in the way the nomyo client
 * merges it. The plaintext, the document and the added members all live in
 * one arena (one locked region); the raw plaintext is zeroed once parsed. */
#include <string.h>

#include "hushcall/envelope_v1.h"
#include "hushcall/json.h"
#include "internal.h"
#include "pipeline.h"

#define METADATA "_metadata"
#define OURS 4 /* payload_id, processed_at, is_encrypted, encryption_algorithm */

static bool key_is(const char *key, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(name, key, len) == 0;
}

static bool is_ours(const char *key, size_t len)
{
    return key_is(key, len, "payload_id") || key_is(key, len, "processed_at") ||
           key_is(key, len, "is_encrypted") || key_is(key, len, "encryption_algorithm");
}

/* Room for an object's members plus `extra`, in the arena. */
static hush_status member_specs(hush_arena *arena, const hush_json_value *object, size_t extra,
                                hush__json_member_spec **out, hush_error *err)
{
    void *mem;
    size_t n = hush_json_length(object) + extra;
    hush_status status = hush_arena_alloc(arena, n * sizeof **out, &mem, err);
    *out = mem;
    return status;
}

static void add_spec(hush__json_member_spec *specs, size_t *n, const char *key,
                     const hush_json_value *value)
{
    specs[*n] = (hush__json_member_spec){key, strlen(key), value};
    (*n)++;
}

/* The server's `_metadata` members, then ours (which win). */
static hush_status build_metadata(hush_arena *arena, const hush_json_value *server,
                                  const char *payload_id, const char *processed_at,
                                  const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__json_member_spec *specs;
    const hush_json_value *id, *when, *encrypted, *algorithm;
    size_t n = 0;
    HUSH_TRY(member_specs(arena, server, OURS, &specs, err));
    for (size_t i = 0; hush_json_object_member(server, i, &specs[n].key, &specs[n].key_len,
                                               &specs[n].value);
         i++)
        if (!is_ours(specs[n].key, specs[n].key_len))
            n++;
    HUSH_TRY(hush__json_new_string(arena, payload_id, strlen(payload_id), &id, err));
    if (processed_at[0] != '\0')
        HUSH_TRY(hush__json_new_string(arena, processed_at, strlen(processed_at), &when, err));
    else
        HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_NULL, false, &when, err));
    HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_BOOL, true, &encrypted, err));
    HUSH_TRY(hush__json_new_string(arena, HUSH_V1_ALGORITHM, strlen(HUSH_V1_ALGORITHM),
                                   &algorithm, err));
    add_spec(specs, &n, "payload_id", id);
    add_spec(specs, &n, "processed_at", when);
    add_spec(specs, &n, "is_encrypted", encrypted);
    add_spec(specs, &n, "encryption_algorithm", algorithm);
    HUSH_TRY(hush__json_new_object(arena, specs, n, out, err));
cleanup:
    return status;
}

/* The server's root with `_metadata` replaced by the merged one, last. */
static hush_status with_metadata(hush_arena *arena, const hush_json_value *root,
                                 const hush_json_value *metadata, const hush_json_value **out,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__json_member_spec *specs;
    size_t n = 0;
    HUSH_TRY(member_specs(arena, root, 1, &specs, err));
    for (size_t i = 0; hush_json_object_member(root, i, &specs[n].key, &specs[n].key_len,
                                               &specs[n].value);
         i++)
        if (!key_is(specs[n].key, specs[n].key_len, METADATA))
            n++;
    add_spec(specs, &n, METADATA, metadata);
    HUSH_TRY(hush__json_new_object(arena, specs, n, out, err));
cleanup:
    return status;
}

hush_status hush__response_open(const hush_keypair *key, const void *package, size_t len,
                                size_t max_response_bytes, const char *payload_id,
                                unsigned secmem_flags, hush_json_doc **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_arena *arena = NULL;
    unsigned char *plaintext = NULL;
    size_t plaintext_len = 0;
    char processed_at[HUSH_V1_PROCESSED_AT_MAX + 1] = "";
    const hush_json_value *root, *metadata, *merged;

    *out = NULL;
    HUSH_TRY(hush_arena_new(&arena, secmem_flags, err));
    /* base64 makes a package 4/3 of its payload, plus the envelope's own fields */
    HUSH_TRY(hush__envelope_v1_open_in(key, package, len, max_response_bytes / 3 * 4 + 8192,
                                       arena, &plaintext, &plaintext_len, processed_at, err));
    hush_json_limits limits = {.max_bytes = max_response_bytes};
    status = hush_json_parse_into(arena, plaintext, plaintext_len, &limits, &root, err);
    hush_memzero(plaintext, plaintext_len); /* the document holds its own copies */
    HUSH_TRY(status);
    HUSH_ENSURE(hush_json_type_of(root) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                "the decrypted response is not a JSON object");
    HUSH_TRY(build_metadata(arena, hush_json_object_get(root, METADATA, strlen(METADATA)),
                            payload_id, processed_at, &metadata, err));
    HUSH_TRY(with_metadata(arena, root, metadata, &merged, err));
    HUSH_TRY(hush__json_doc_adopt(arena, merged, out, err));
    arena = NULL;
cleanup:
    hush_arena_free(arena);
    return status;
}
