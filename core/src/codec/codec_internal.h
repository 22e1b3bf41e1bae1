/* codec_internal.h — the codec layer's internals: JSON values built in an
 * arena, and the lexical rules the JSON parser and writer share. */
#ifndef HUSHCALL_CODEC_INTERNAL_H
#define HUSHCALL_CODEC_INTERNAL_H

#include "hushcall/json.h"
#include "internal.h"

/* ---- building JSON values (json.c) ------------------------------------- */

/* Values made directly in an arena (for documents hushcall extends, such
 * as a response with `_metadata`). Keys and values are borrowed: they must
 * live in the same arena. */
typedef struct hush__json_member_spec {
    const char *key;
    size_t key_len;
    const hush_json_value *value;
} hush__json_member_spec;

HUSH_MUST_USE
hush_status hush__json_new_string(hush_arena *arena, const char *s, size_t len,
                                  const hush_json_value **out, hush_error *err);
/* HUSH_JSON_BOOL (with `value`) or HUSH_JSON_NULL. */
HUSH_MUST_USE
hush_status hush__json_new_literal(hush_arena *arena, hush_json_type type, bool value,
                                   const hush_json_value **out, hush_error *err);
/* An object of `count` members in that order; equal keys are refused. */
HUSH_MUST_USE
hush_status hush__json_new_object(hush_arena *arena, const hush__json_member_spec *members,
                                  size_t count, const hush_json_value **out, hush_error *err);
/* A document of `root` whose memory is `arena`; the document owns the arena. */
HUSH_MUST_USE
hush_status hush__json_doc_adopt(hush_arena *arena, const hush_json_value *root,
                                 hush_json_doc **out, hush_error *err);

/* ---- JSON lexical rules (json_text.c) ---------------------------------- */

/* Consume one UTF-8 character and return its code point; -1 when it is
 * malformed (bad lead or continuation byte, overlong, an encoded surrogate,
 * past U+10FFFF, truncated) or at the end of input. */
int32_t hush__utf8_next(hush_reader *r);

/* Consume one number as RFC 8259 §6 spells it. NULL when well formed, else
 * the reason, with the reader left on the offending byte. */
const char *hush__json_scan_number(hush_reader *r);

/* The value of one hex digit, either case; -1 for anything else. */
int hush__hex_digit(int c);

#endif
