/* response.c — a sealed answer opened into the document the caller reads:
 * the server's JSON with `_metadata` merged in the way the nomyo client
 * merges it, plus our verdict on the server's TPM quote. The plaintext, the
 * document and the added members all live in one arena (one locked region);
 * the raw plaintext is zeroed once parsed. */
#include <stdio.h>
#include <string.h>

#include "hushcall/base64.h"
#include "hushcall/envelope_v1.h"
#include "hushcall/json.h"
#include "internal.h"
#include "codec/codec_internal.h"
#include "crypto/crypto_internal.h"
#include "pipeline.h"

#define METADATA "_metadata"
#define TPM_ATTESTATION "tpm_attestation"
/* payload_id, processed_at, is_encrypted, encryption_algorithm, attestation */
#define OURS 5

static bool key_is(const char *key, size_t len, const char *name)
{
    return strlen(name) == len && memcmp(name, key, len) == 0;
}

static bool is_ours(const char *key, size_t len)
{
    return key_is(key, len, "payload_id") || key_is(key, len, "processed_at") ||
           key_is(key, len, "is_encrypted") || key_is(key, len, "encryption_algorithm") ||
           key_is(key, len, "attestation");
}

/* Room for an object's members plus `extra`, in the arena. */
HUSH_MUST_USE
static hush_status member_specs(hush_arena *arena, const hush_json_value *object, size_t extra,
                                hush__json_member_spec **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    void *mem;
    size_t n = hush_json_length(object) + extra;
    HUSH_TRY(hush_arena_alloc(arena, n * sizeof **out, &mem, err));
    *out = mem;
cleanup:
    return status;
}

static void add_spec(hush__json_member_spec *specs, size_t *n, const char *key,
                     const hush_json_value *value)
{
    specs[*n] = (hush__json_member_spec){key, strlen(key), value};
    (*n)++;
}

HUSH_MUST_USE
static hush_status new_text(hush_arena *arena, const char *s, const hush_json_value **out,
                            hush_error *err)
{
    if (s[0] == '\0')
        return hush__json_new_literal(arena, HUSH_JSON_NULL, false, out, err);
    return hush__json_new_string(arena, s, strlen(s), out, err);
}

/* Whether the quote checked out, pinned or not: then its PCR values are
 * the ones the AIK signed, worth reporting even when not vouched for. */
static bool quote_checked_out(const hush_attest_result *result)
{
    return result->verified || strcmp(result->reason, HUSH_ATTEST_UNPINNED_AIK) == 0;
}

/* {"verified", "reason", "aik_fingerprint", "pcrs"}: the verdict, with the
 * quoted PCR values only when the quote checked out; v2 adds
 * "key_config_verified" (`key_config_verified` non-NULL). */
HUSH_MUST_USE
static hush_status build_attestation(hush_arena *arena, const hush_attest_result *result,
                                     const hush_json_value *tpm,
                                     const hush_json_value *key_config_verified,
                                     const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__json_member_spec specs[5];
    size_t n = 0;
    const hush_json_value *verified, *reason, *fingerprint, *pcrs = NULL;
    HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_BOOL, result->verified, &verified, err));
    HUSH_TRY(new_text(arena, result->reason, &reason, err));
    HUSH_TRY(new_text(arena, result->aik_fingerprint, &fingerprint, err));
    if (quote_checked_out(result))
        pcrs = hush_json_object_get(tpm, "pcr_values", 10);
    if (pcrs == NULL)
        HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_NULL, false, &pcrs, err));
    add_spec(specs, &n, "verified", verified);
    add_spec(specs, &n, "reason", reason);
    add_spec(specs, &n, "aik_fingerprint", fingerprint);
    add_spec(specs, &n, "pcrs", pcrs);
    if (key_config_verified != NULL)
        add_spec(specs, &n, "key_config_verified", key_config_verified);
    HUSH_TRY(hush__json_new_object(arena, specs, n, out, err));
cleanup:
    return status;
}

/* The server's `_metadata` members, then ours (which win). processed_at
 * is the package's value as received (NULL: absent or null). */
HUSH_MUST_USE
static hush_status build_metadata(hush_arena *arena, const hush_json_value *server,
                                  const char *payload_id, const hush_json_value *processed_at,
                                  const hush_json_value *attestation,
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
    when = processed_at;
    if (when == NULL)
        HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_NULL, false, &when, err));
    HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_BOOL, true, &encrypted, err));
    HUSH_TRY(hush__json_new_string(arena, HUSH_V1_ALGORITHM, strlen(HUSH_V1_ALGORITHM),
                                   &algorithm, err));
    add_spec(specs, &n, "payload_id", id);
    add_spec(specs, &n, "processed_at", when);
    add_spec(specs, &n, "is_encrypted", encrypted);
    add_spec(specs, &n, "encryption_algorithm", algorithm);
    add_spec(specs, &n, "attestation", attestation);
    HUSH_TRY(hush__json_new_object(arena, specs, n, out, err));
cleanup:
    return status;
}

/* The server's root with `_metadata` replaced by the merged one, last. */
HUSH_MUST_USE
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

/* Judge the server's quote; a required one that fails ends the call here,
 * before anyone can read the answer. */
HUSH_MUST_USE
static hush_status attest(hush_arena *arena, const hush_json_value *server_metadata,
                          const char *payload_id, const hush__attest_rule *rule,
                          const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_attest_result result;
    const hush_json_value *tpm =
        hush_json_object_get(server_metadata, TPM_ATTESTATION, strlen(TPM_ATTESTATION));
    HUSH_TRY(hush_attest_verify(tpm, payload_id, rule->policy, &result, err));
    HUSH_ENSURE(result.verified || !rule->required, HUSH_E_ATTESTATION,
                "the answer's TPM attestation did not verify: %s", result.reason);
    HUSH_TRY(build_attestation(arena, &result, tpm, NULL, out, err));
cleanup:
    return status;
}

hush_status hush__response_open(const hush_keypair *key, const void *package, size_t len,
                                size_t max_response_bytes, const char *payload_id,
                                const hush__attest_rule *rule, unsigned secmem_flags,
                                hush_json_doc **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_arena *arena = NULL;
    unsigned char *plaintext = NULL;
    size_t plaintext_len = 0;
    const hush_json_value *processed_at = NULL, *root, *server_metadata, *attestation, *metadata,
                          *merged;

    *out = NULL;
    HUSH_TRY(hush_arena_new(secmem_flags, &arena, err));
    /* base64 makes a package 4/3 of its payload, plus the envelope's own fields */
    HUSH_TRY(hush__envelope_v1_open_in(key, package, len, max_response_bytes / 3 * 4 + 8192,
                                       arena, &plaintext, &plaintext_len, &processed_at, NULL,
                                       err));
    hush_json_limits limits = {.max_bytes = max_response_bytes};
    status = hush_json_parse_into(arena, plaintext, plaintext_len, &limits, &root, err);
    hush_memzero(plaintext, plaintext_len); /* the document holds its own copies */
    HUSH_TRY(status);
    HUSH_ENSURE(hush_json_type_of(root) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                "the decrypted response is not a JSON object");
    server_metadata = hush_json_object_get(root, METADATA, strlen(METADATA));
    /* nomyo update()s a server's _metadata, and fails on one that is not an object. */
    HUSH_ENSURE(server_metadata == NULL || hush_json_type_of(server_metadata) == HUSH_JSON_OBJECT,
                HUSH_E_FORMAT, "the decrypted response's _metadata is not a JSON object");
    HUSH_TRY(attest(arena, server_metadata, payload_id, rule, &attestation, err));
    HUSH_TRY(build_metadata(arena, server_metadata, payload_id, processed_at, attestation,
                            &metadata, err));
    HUSH_TRY(with_metadata(arena, root, metadata, &merged, err));
    HUSH_TRY(hush__json_doc_adopt(arena, merged, out, err));
    arena = NULL;
cleanup:
    hush_arena_free(arena);
    return status;
}

/* ---- v2 ------------------------------------------------------------------ */

/* protocol, suite, key_id, server_key_fingerprint, status, is_encrypted,
 * attestation */
#define OURS_V2 7
#define ANSWER_ATTESTATION_HEADER "Hushcall-Attestation"

static bool is_ours_v2(const char *key, size_t len)
{
    return key_is(key, len, "protocol") || key_is(key, len, "suite") ||
           key_is(key, len, "key_id") || key_is(key, len, "server_key_fingerprint") ||
           key_is(key, len, "status") || key_is(key, len, "is_encrypted") ||
           key_is(key, len, "attestation");
}

/* The header's tpm_attestation object (base64 of JSON), parsed into
 * `arena`; NULL when it is not one (the verdict then says malformed). */
HUSH_MUST_USE
static hush_status parse_answer_quote(hush_arena *arena, const char *header,
                                      const hush_json_value **tpm, hush_error *err)
{
    hush_status status = HUSH_OK;
    void *mem;
    size_t len = strlen(header), decoded_len = 0;
    *tpm = NULL;
    HUSH_TRY(hush_arena_alloc(arena, hush_base64_decoded_max(len) + 1, &mem, err));
    if (hush_base64_decode(header, len, mem, hush_base64_decoded_max(len) + 1, &decoded_len,
                           NULL) != HUSH_OK ||
        hush_json_parse_into(arena, mem, decoded_len, NULL, tpm, NULL) != HUSH_OK ||
        hush_json_type_of(*tpm) != HUSH_JSON_OBJECT)
        *tpm = NULL;
cleanup:
    return status;
}

/* The verdict on a v2 answer's quote, whose qualifying data binds this
 * exchange: its enc and response nonce. `*tpm`: the quote's object. */
HUSH_MUST_USE
static hush_status judge_answer_quote(hush_arena *arena, const hush__v2_answer *a,
                                      hush_attest_result *result, const hush_json_value **tpm,
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char qualifying[HUSH_ATTEST_QUALIFYING_BYTES];
    size_t enc_len = 0;
    const unsigned char *enc = hush_v2_exchange_enc(a->exchange, &enc_len);
    hush_error binding;
    *tpm = NULL;
    if (a->attestation != NULL)
        HUSH_TRY(parse_answer_quote(arena, a->attestation, tpm, err));
    /* A build without TPM support cannot bind a quote: not verified, and why. */
    bool bound = hush_attest_answer_qualifying(enc, enc_len, a->nonce, qualifying, &binding) ==
                 HUSH_OK;
    if ((a->attestation != NULL && *tpm == NULL) || !bound) {
        memset(result, 0, sizeof *result);
        snprintf(result->reason, sizeof result->reason, "%.*s",
                 (int)sizeof result->reason - 1,
                 bound ? "malformed " ANSWER_ATTESTATION_HEADER : binding.message);
    } else {
        HUSH_TRY(hush_attest_verify_bound(*tpm, qualifying, a->rule.policy, result, err));
    }
    HUSH_ENSURE(result->verified || !a->rule.required, HUSH_E_ATTESTATION,
                "the answer's TPM attestation did not verify: %s; it was wiped unread",
                result->reason);
cleanup:
    return status;
}

hush_status hush__v2_answer_attest(const hush__v2_answer *answer, unsigned secmem_flags,
                                   hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_arena *arena = NULL;
    hush_attest_result result;
    const hush_json_value *tpm;
    HUSH_TRY(hush_arena_new(secmem_flags, &arena, err));
    HUSH_TRY(judge_answer_quote(arena, answer, &result, &tpm, err));
cleanup:
    hush_arena_free(arena);
    return status;
}

/* _metadata.attestation of a v2 answer: the verdict on its quote, and
 * whether the config its request was sealed to was attested. */
HUSH_MUST_USE
static hush_status attest_v2(hush_arena *arena, const hush__v2_answer *a,
                             const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_attest_result result;
    const hush_json_value *tpm, *key_config_verified;
    HUSH_TRY(judge_answer_quote(arena, a, &result, &tpm, err));
    HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_BOOL, a->key_config_verified,
                                    &key_config_verified, err));
    HUSH_TRY(build_attestation(arena, &result, tpm, key_config_verified, out, err));
cleanup:
    return status;
}

/* The suite's name, as _metadata reports it. */
static const char *suite_name(hush_hpke_suite suite)
{
    if (suite.kem_id == HUSH_HPKE_KEM_X25519_SHA256)
        return "ehbp-x25519-aes256gcm";
    return suite.aead_id == HUSH_HPKE_AEAD_CHACHA20_POLY1305 ? "xwing-chacha20poly1305"
                                                            : "xwing-aes256gcm";
}

HUSH_MUST_USE
static hush_status new_number(hush_arena *arena, long n, const hush_json_value **out,
                              hush_error *err)
{
    char text[24]; /* the parser is the one maker of numbers */
    int len = snprintf(text, sizeof text, "%ld", n);
    return hush_json_parse_into(arena, text, (size_t)len, NULL, out, err);
}

/* The server's `_metadata` members, then ours (which win). */
HUSH_MUST_USE
static hush_status build_metadata_v2(hush_arena *arena, const hush_json_value *server,
                                     const hush__v2_answer *a,
                                     const hush_json_value *attestation,
                                     const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__json_member_spec *specs;
    const hush_json_value *protocol, *suite, *key_id, *fingerprint, *http, *encrypted;
    hush_hpke_suite s = hush_v2_exchange_suite(a->exchange);
    size_t n = 0;
    HUSH_TRY(member_specs(arena, server, OURS_V2, &specs, err));
    for (size_t i = 0; hush_json_object_member(server, i, &specs[n].key, &specs[n].key_len,
                                               &specs[n].value);
         i++)
        if (!is_ours_v2(specs[n].key, specs[n].key_len))
            n++;
    HUSH_TRY(new_text(arena, "v2", &protocol, err));
    HUSH_TRY(new_text(arena, suite_name(s), &suite, err));
    HUSH_TRY(new_number(arena, hush_v2_exchange_key_id(a->exchange), &key_id, err));
    HUSH_TRY(new_text(arena, a->fingerprint, &fingerprint, err));
    HUSH_TRY(new_number(arena, a->http_status, &http, err));
    HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_BOOL, true, &encrypted, err));
    add_spec(specs, &n, "protocol", protocol);
    add_spec(specs, &n, "suite", suite);
    add_spec(specs, &n, "key_id", key_id);
    add_spec(specs, &n, "server_key_fingerprint", fingerprint);
    add_spec(specs, &n, "status", http);
    add_spec(specs, &n, "is_encrypted", encrypted);
    add_spec(specs, &n, "attestation", attestation);
    HUSH_TRY(hush__json_new_object(arena, specs, n, out, err));
cleanup:
    return status;
}

/* Every frame into locked memory, released only once all authenticated. */
HUSH_MUST_USE
static hush_status open_frames(const hush__v2_answer *a, const void *body, size_t len,
                               size_t max_response_bytes, hush_secbuf *plaintext,
                               hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_v2_opener *opener = NULL;
    hush_v2_limits limits = {.max_total_bytes = max_response_bytes};
    HUSH_TRY(hush_v2_response_opener_new(a->exchange, a->nonce, &limits, plaintext, &opener,
                                         err));
    HUSH_TRY(hush_v2_opener_feed(opener, body, len, err));
    HUSH_TRY(hush_v2_opener_finish(opener, NULL, NULL, err));
cleanup:
    hush_v2_opener_free(opener);
    return status;
}

/* Parse an answer (`what` names it in errors) into `arena`: a JSON object
 * whose `_metadata`, when present, is an object too. */
HUSH_MUST_USE
static hush_status parse_answer(hush_arena *arena, const void *text, size_t len,
                                size_t max_response_bytes, const char *what,
                                const hush_json_value **root,
                                const hush_json_value **server_metadata, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_limits limits = {.max_bytes = max_response_bytes};
    HUSH_TRY(hush_json_parse_into(arena, text, len, &limits, root, err));
    HUSH_ENSURE(hush_json_type_of(*root) == HUSH_JSON_OBJECT, HUSH_E_FORMAT,
                "the %s is not a JSON object", what);
    *server_metadata = hush_json_object_get(*root, METADATA, strlen(METADATA));
    HUSH_ENSURE(*server_metadata == NULL ||
                    hush_json_type_of(*server_metadata) == HUSH_JSON_OBJECT,
                HUSH_E_FORMAT, "the %s's _metadata is not a JSON object", what);
cleanup:
    return status;
}

hush_status hush__response_open_v2(const hush__v2_answer *answer, const void *body, size_t len,
                                   size_t max_response_bytes, unsigned secmem_flags,
                                   hush_json_doc **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_arena *arena = NULL;
    hush_secbuf *plaintext = NULL;
    const hush_json_value *root, *server_metadata, *attestation, *metadata, *merged;

    *out = NULL;
    HUSH_TRY(hush_arena_new(secmem_flags, &arena, err));
    /* A required quote that fails ends the call before a frame is opened. */
    HUSH_TRY(attest_v2(arena, answer, &attestation, err));
    HUSH_TRY(hush_secbuf_new(len, max_response_bytes, secmem_flags, &plaintext, err));
    HUSH_TRY(open_frames(answer, body, len, max_response_bytes, plaintext, err));
    HUSH_TRY(parse_answer(arena, hush_secbuf_data(plaintext), hush_secbuf_len(plaintext),
                          max_response_bytes, "decrypted response", &root, &server_metadata,
                          err));
    HUSH_TRY(build_metadata_v2(arena, server_metadata, answer, attestation, &metadata, err));
    HUSH_TRY(with_metadata(arena, root, metadata, &merged, err));
    HUSH_TRY(hush__json_doc_adopt(arena, merged, out, err));
    arena = NULL;
cleanup:
    hush_secbuf_free(plaintext); /* wipes: the document holds its own copies */
    hush_arena_free(arena);
    return status;
}

/* ---- plaintext (a bodyless GET) ----------------------------------------- */

/* status, is_encrypted */
#define OURS_PLAIN 2

/* The server's `_metadata` members, then status and is_encrypted false. */
HUSH_MUST_USE
static hush_status build_metadata_plain(hush_arena *arena, const hush_json_value *server,
                                        long http_status, const hush_json_value **out,
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    hush__json_member_spec *specs;
    const hush_json_value *http, *encrypted;
    size_t n = 0;
    HUSH_TRY(member_specs(arena, server, OURS_PLAIN, &specs, err));
    for (size_t i = 0; hush_json_object_member(server, i, &specs[n].key, &specs[n].key_len,
                                               &specs[n].value);
         i++)
        if (!key_is(specs[n].key, specs[n].key_len, "status") &&
            !key_is(specs[n].key, specs[n].key_len, "is_encrypted"))
            n++;
    HUSH_TRY(new_number(arena, http_status, &http, err));
    HUSH_TRY(hush__json_new_literal(arena, HUSH_JSON_BOOL, false, &encrypted, err));
    add_spec(specs, &n, "status", http);
    add_spec(specs, &n, "is_encrypted", encrypted);
    HUSH_TRY(hush__json_new_object(arena, specs, n, out, err));
cleanup:
    return status;
}

hush_status hush__response_plain(const void *body, size_t len, long http_status,
                                 size_t max_response_bytes, unsigned secmem_flags,
                                 hush_json_doc **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_arena *arena = NULL;
    const hush_json_value *root, *server_metadata, *metadata, *merged;

    *out = NULL;
    HUSH_TRY(hush_arena_new(secmem_flags, &arena, err));
    HUSH_TRY(parse_answer(arena, body, len, max_response_bytes, "plaintext answer", &root,
                          &server_metadata, err));
    HUSH_TRY(build_metadata_plain(arena, server_metadata, http_status, &metadata, err));
    HUSH_TRY(with_metadata(arena, root, metadata, &merged, err));
    HUSH_TRY(hush__json_doc_adopt(arena, merged, out, err));
    arena = NULL;
cleanup:
    hush_arena_free(arena);
    return status;
}
