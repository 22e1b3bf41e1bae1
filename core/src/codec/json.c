/* json.c — a strict RFC 8259 parser building an immutable DOM in a hush_arena:
 * recursive descent over a bounds-checked reader, strings unescaped and UTF-8
 * validated straight into the arena, errors with an offset but never content. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/json.h"
#include "internal.h"
#include "codec/codec_internal.h"

typedef struct json_member json_member;

struct hush_json_value {
    hush_json_type type;
    /* Links siblings while their container is parsed, so no growable array
     * (and no malloc) is needed; the container then gathers them into an
     * arena array and this link is never read again. */
    hush_json_value *next;
    union {
        bool boolean;
        struct {
            const char *bytes; /* NUL-terminated in the arena */
            size_t len;
        } text; /* a string, or a number's text */
        struct {
            const hush_json_value **items;
            size_t count;
        } array;
        struct {
            const json_member **members; /* document order */
            const json_member **sorted;  /* by key, for binary search */
            size_t count;
        } object;
    } as;
};

struct json_member {
    const char *key;
    size_t key_len;
    size_t offset; /* of the key in the input, to report a duplicate */
    const hush_json_value *value;
    json_member *next; /* parse-time link, as in hush_json_value */
};

struct hush_json_doc {
    hush_arena *arena;
    const hush_json_value *root;
};

typedef struct parser {
    hush_reader in;
    hush_arena *arena;
    unsigned depth;
    unsigned max_depth;
    hush_error *err;
} parser;

/* Where an unescaped string is written; `bytes` NULL only measures. */
typedef struct string_out {
    unsigned char *bytes;
    size_t cap;
    size_t len;
} string_out;

HUSH_MUST_USE
static hush_status parse_value(parser *p, hush_json_value **out);

/* ---- errors and small helpers ------------------------------------------ */

HUSH_MUST_USE
static hush_status fail_at(parser *p, size_t offset, const char *reason)
{
    return hush__fail_at(p->err, HUSH_E_JSON, offset, "%s", reason);
}

HUSH_MUST_USE
static hush_status fail_end(parser *p)
{
    return fail_at(p, p->in.len, "unexpected end of input");
}

/* A syntax error at the current byte, or the end of input if there is none. */
HUSH_MUST_USE
static hush_status fail_here(parser *p, const char *reason)
{
    return hush_reader_done(&p->in) ? fail_end(p) : fail_at(p, p->in.pos, reason);
}

static void skip_whitespace(parser *p)
{
    for (;;) {
        int c = hush_reader_peek(&p->in);
        if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
            return;
        hush_reader_next(&p->in);
    }
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

HUSH_MUST_USE
static hush_status new_node(parser *p, hush_json_type type, hush_json_value **out)
{
    hush_status status = HUSH_OK;
    void *mem;
    HUSH_TRY(hush_arena_alloc(p->arena, sizeof(hush_json_value), &mem, p->err));
    *out = mem;
    (*out)->type = type;
cleanup:
    return status;
}

/* An arena array of `count` pointers; NULL (and no allocation) for none. */
HUSH_MUST_USE
static hush_status new_pointer_array(parser *p, size_t count, void **out)
{
    hush_status status = HUSH_OK;
    hush_error *err = p->err;
    *out = NULL;
    if (count == 0)
        goto cleanup;
    HUSH_ENSURE(count <= SIZE_MAX / sizeof(void *), HUSH_E_LIMIT, "too many JSON elements");
    HUSH_TRY(hush_arena_alloc(p->arena, count * sizeof(void *), out, err));
cleanup:
    return status;
}

/* Skip whitespace, then consume `byte` or fail with `reason`. */
HUSH_MUST_USE
static hush_status expect_byte(parser *p, int byte, const char *reason)
{
    hush_status status = HUSH_OK;
    skip_whitespace(p);
    if (hush_reader_peek(&p->in) != byte)
        HUSH_BAIL_WITH(fail_here(p, reason));
    hush_reader_next(&p->in);
cleanup:
    return status;
}

/* ---- literals and numbers ----------------------------------------------- */

HUSH_MUST_USE
static hush_status parse_literal(parser *p, const char *word, hush_json_type type,
                                 bool boolean, hush_json_value **out)
{
    hush_status status = HUSH_OK;
    size_t start = p->in.pos;
    for (size_t i = 0; word[i] != '\0'; i++) {
        int c = hush_reader_next(&p->in);
        if (c < 0)
            HUSH_BAIL_WITH(fail_end(p));
        if (c != (unsigned char)word[i])
            HUSH_BAIL_WITH(fail_at(p, start, "invalid literal"));
    }
    HUSH_TRY(new_node(p, type, out));
    (*out)->as.boolean = boolean;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status parse_number(parser *p, hush_json_value **out)
{
    hush_status status = HUSH_OK;
    hush_error *err = p->err;
    hush_reader start = p->in;
    const char *reason = hush__json_scan_number(&p->in);
    if (reason != NULL)
        HUSH_BAIL_WITH(fail_here(p, reason));

    const unsigned char *text = NULL;
    size_t len = p->in.pos - start.pos;
    char *copy;
    HUSH_ENSURE(hush_reader_take(&start, len, &text), HUSH_E_INTERNAL, "number span lost");
    HUSH_TRY(hush_arena_strdup(p->arena, text, len, &copy, p->err));
    HUSH_TRY(new_node(p, HUSH_JSON_NUMBER, out));
    (*out)->as.text.bytes = copy;
    (*out)->as.text.len = len;
cleanup:
    return status;
}

/* ---- strings ------------------------------------------------------------ */

static void put_byte(string_out *o, unsigned byte)
{
    if (o->bytes != NULL && o->len < o->cap)
        o->bytes[o->len] = (unsigned char)byte;
    o->len++;
}

static void put_utf8(string_out *o, uint32_t cp)
{
    if (cp < 0x80) {
        put_byte(o, cp);
    } else if (cp < 0x800) {
        put_byte(o, 0xC0 | (cp >> 6));
        put_byte(o, 0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        put_byte(o, 0xE0 | (cp >> 12));
        put_byte(o, 0x80 | ((cp >> 6) & 0x3F));
        put_byte(o, 0x80 | (cp & 0x3F));
    } else {
        put_byte(o, 0xF0 | (cp >> 18));
        put_byte(o, 0x80 | ((cp >> 12) & 0x3F));
        put_byte(o, 0x80 | ((cp >> 6) & 0x3F));
        put_byte(o, 0x80 | (cp & 0x3F));
    }
}

static bool read_hex4(hush_reader *r, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hush__hex_digit(hush_reader_next(r));
        if (d < 0)
            return false;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return true;
}

/* A \uXXXX escape, with its backslash and 'u' already consumed; a high
 * surrogate must be followed at once by an escaped low one. */
HUSH_MUST_USE
static hush_status read_unicode_escape(parser *p, size_t at, uint32_t *cp)
{
    hush_status status = HUSH_OK;
    uint32_t low = 0;
    if (!read_hex4(&p->in, cp))
        HUSH_BAIL_WITH(fail_at(p, at, "invalid \\u escape in string"));
    if (*cp >= 0xDC00 && *cp <= 0xDFFF)
        HUSH_BAIL_WITH(fail_at(p, at, "unpaired surrogate escape in string"));
    if (*cp < 0xD800 || *cp > 0xDBFF)
        goto cleanup;
    if (hush_reader_next(&p->in) != '\\' || hush_reader_next(&p->in) != 'u')
        HUSH_BAIL_WITH(fail_at(p, at, "unpaired surrogate escape in string"));
    if (!read_hex4(&p->in, &low))
        HUSH_BAIL_WITH(fail_at(p, at + 6, "invalid \\u escape in string"));
    if (low < 0xDC00 || low > 0xDFFF)
        HUSH_BAIL_WITH(fail_at(p, at, "unpaired surrogate escape in string"));
    *cp = 0x10000 + ((*cp - 0xD800) << 10) + (low - 0xDC00);
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_unicode_escape(parser *p, size_t at, string_out *o)
{
    hush_status status = HUSH_OK;
    uint32_t cp = 0;
    HUSH_TRY(read_unicode_escape(p, at, &cp));
    put_utf8(o, cp);
cleanup:
    return status;
}

/* One escape, dispatched on its letter: each case's result is the
 * function's. */
HUSH_MUST_USE
static hush_status read_escape(parser *p, string_out *o)
{
    size_t at = p->in.pos;
    hush_reader_next(&p->in); /* the backslash */
    int c = hush_reader_next(&p->in);
    switch (c) {
    case '"': put_byte(o, '"'); return HUSH_OK;
    case '\\': put_byte(o, '\\'); return HUSH_OK;
    case '/': put_byte(o, '/'); return HUSH_OK;
    case 'b': put_byte(o, '\b'); return HUSH_OK;
    case 'f': put_byte(o, '\f'); return HUSH_OK;
    case 'n': put_byte(o, '\n'); return HUSH_OK;
    case 'r': put_byte(o, '\r'); return HUSH_OK;
    case 't': put_byte(o, '\t'); return HUSH_OK;
    case 'u': return put_unicode_escape(p, at, o);
    case -1: return fail_end(p);
    default: return fail_at(p, at, "invalid escape in string");
    }
}

/* Unescape and validate from just after the opening quote through the
 * closing one. */
HUSH_MUST_USE
static hush_status decode_string(parser *p, string_out *o)
{
    hush_status status = HUSH_OK;
    for (;;) {
        int c = hush_reader_peek(&p->in);
        if (c < 0)
            HUSH_BAIL_WITH(fail_end(p));
        if (c == '"') {
            hush_reader_next(&p->in);
            break;
        }
        if (c == '\\') {
            HUSH_TRY(read_escape(p, o));
            continue;
        }
        if (c < 0x20)
            HUSH_BAIL_WITH(fail_at(p, p->in.pos, "control character in string"));
        size_t at = p->in.pos;
        int32_t cp = hush__utf8_next(&p->in);
        if (cp < 0)
            HUSH_BAIL_WITH(fail_at(p, at, "invalid UTF-8 in string"));
        put_utf8(o, (uint32_t)cp);
    }
cleanup:
    return status;
}

/* The raw length up to the closing quote, escapes skipped over; false when
 * the input ends first. Unescaping never makes a string longer. */
static bool raw_string_length(const hush_reader *r, size_t *len)
{
    hush_reader scan = *r;
    int c;
    while ((c = hush_reader_next(&scan)) >= 0) {
        if (c == '"') {
            *len = scan.pos - r->pos - 1;
            return true;
        }
        if (c == '\\')
            hush_reader_next(&scan);
    }
    return false;
}

/* A string at the reader (on its opening quote), unescaped into the arena. */
HUSH_MUST_USE
static hush_status parse_string_bytes(parser *p, const char **bytes, size_t *len)
{
    hush_status status = HUSH_OK;
    hush_error *err = p->err;
    string_out o = {NULL, 0, 0};
    size_t raw_len;
    void *mem;

    hush_reader_next(&p->in); /* the opening quote */
    if (!raw_string_length(&p->in, &raw_len)) {
        /* Unterminated: measuring reports the first problem at its offset,
         * which is at worst the end of the input. */
        HUSH_TRY(decode_string(p, &o));
        HUSH_BAIL_WITH(fail_end(p));
    }
    HUSH_TRY(hush_arena_alloc(p->arena, raw_len + 1, &mem, p->err));
    o.bytes = mem;
    o.cap = raw_len;
    HUSH_TRY(decode_string(p, &o));
    HUSH_ENSURE(o.len <= raw_len, HUSH_E_INTERNAL, "unescaped string outgrew its buffer");
    o.bytes[o.len] = '\0';
    *bytes = (const char *)o.bytes;
    *len = o.len;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status parse_string(parser *p, hush_json_value **out)
{
    hush_status status = HUSH_OK;
    const char *bytes;
    size_t len;
    HUSH_TRY(parse_string_bytes(p, &bytes, &len));
    HUSH_TRY(new_node(p, HUSH_JSON_STRING, out));
    (*out)->as.text.bytes = bytes;
    (*out)->as.text.len = len;
cleanup:
    return status;
}

/* ---- arrays ------------------------------------------------------------- */

/* Consume the opening byte; true (with `close` consumed) when empty. */
static bool open_container(parser *p, int close)
{
    hush_reader_next(&p->in);
    skip_whitespace(p);
    if (hush_reader_peek(&p->in) != close)
        return false;
    hush_reader_next(&p->in);
    return true;
}

/* After a member or element: true at the closing byte, false after a comma. */
HUSH_MUST_USE
static hush_status after_item(parser *p, int close, const char *reason, bool *closed)
{
    hush_status status = HUSH_OK;
    skip_whitespace(p);
    int c = hush_reader_peek(&p->in);
    if (c != ',' && c != close)
        HUSH_BAIL_WITH(fail_here(p, reason));
    hush_reader_next(&p->in);
    *closed = c == close;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status parse_array(parser *p, hush_json_value **out)
{
    hush_status status = HUSH_OK;
    hush_json_value *head = NULL, **tail = &head, *item = NULL;
    const hush_json_value **items;
    size_t count = 0;
    bool closed = open_container(p, ']');
    void *mem;

    while (!closed) {
        HUSH_TRY(parse_value(p, &item));
        *tail = item;
        tail = &item->next;
        count++;
        HUSH_TRY(after_item(p, ']', "expected ',' or ']' in array", &closed));
    }

    HUSH_TRY(new_node(p, HUSH_JSON_ARRAY, out));
    HUSH_TRY(new_pointer_array(p, count, &mem));
    items = mem;
    for (size_t i = 0; i < count; i++, head = head->next)
        items[i] = head;
    (*out)->as.array.items = items;
    (*out)->as.array.count = count;
cleanup:
    return status;
}

/* ---- objects ------------------------------------------------------------ */

static int compare_keys(const char *a, size_t a_len, const char *b, size_t b_len)
{
    int c = memcmp(a, b, a_len < b_len ? a_len : b_len);
    if (c != 0)
        return c;
    return (a_len > b_len) - (a_len < b_len);
}

/* Sort by key, then by position, so the later of two equal keys follows. */
static int compare_members(const void *a, const void *b)
{
    const json_member *ma = *(const json_member *const *)a;
    const json_member *mb = *(const json_member *const *)b;
    int c = compare_keys(ma->key, ma->key_len, mb->key, mb->key_len);
    if (c != 0)
        return c;
    return (ma->offset > mb->offset) - (ma->offset < mb->offset);
}

/* Equal keys are neighbours once sorted: the earliest repeat (by offset), or NULL. */
static const json_member *first_duplicate(const json_member **sorted, size_t count)
{
    const json_member *first = NULL;
    for (size_t i = 1; i < count; i++) {
        const json_member *a = sorted[i - 1], *b = sorted[i];
        if (compare_keys(a->key, a->key_len, b->key, b->key_len) == 0 &&
            (first == NULL || b->offset < first->offset))
            first = b;
    }
    return first;
}

/* An object node over `members` (document order), with the sorted index
 * lookups use; *duplicate is set instead when two keys are equal. */
HUSH_MUST_USE
static hush_status index_object(hush_arena *arena, const json_member **members, size_t count,
                                hush_json_value **out, const json_member **duplicate,
                                hush_error *err)
{
    hush_status status = HUSH_OK;
    const json_member **sorted = NULL;
    void *mem;
    *duplicate = NULL;
    if (count > 0) {
        HUSH_TRY(hush_arena_alloc(arena, count * sizeof *sorted, &mem, err));
        sorted = mem;
        memcpy(sorted, members, count * sizeof *sorted);
        if (count > 1)
            qsort(sorted, count, sizeof *sorted, compare_members);
        if ((*duplicate = first_duplicate(sorted, count)) != NULL)
            goto cleanup; /* not an error here: the parser reports it with its offset */
    }
    HUSH_TRY(hush_arena_alloc(arena, sizeof(hush_json_value), &mem, err));
    *out = mem;
    (*out)->type = HUSH_JSON_OBJECT;
    (*out)->as.object.members = members;
    (*out)->as.object.sorted = sorted;
    (*out)->as.object.count = count;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status parse_member(parser *p, json_member **out)
{
    hush_status status = HUSH_OK;
    hush_json_value *value;
    json_member *m;
    void *mem;

    skip_whitespace(p);
    if (hush_reader_peek(&p->in) != '"')
        HUSH_BAIL_WITH(fail_here(p, "expected a string key in object"));
    HUSH_TRY(hush_arena_alloc(p->arena, sizeof(json_member), &mem, p->err));
    m = mem;
    m->offset = p->in.pos;
    HUSH_TRY(parse_string_bytes(p, &m->key, &m->key_len));
    HUSH_TRY(expect_byte(p, ':', "expected ':' after key in object"));
    HUSH_TRY(parse_value(p, &value));
    m->value = value;
    *out = m;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status parse_object(parser *p, hush_json_value **out)
{
    hush_status status = HUSH_OK;
    json_member *head = NULL, **tail = &head, *member = NULL;
    const json_member **members, *duplicate;
    size_t count = 0;
    bool closed = open_container(p, '}');
    void *mem;

    while (!closed) {
        HUSH_TRY(parse_member(p, &member));
        *tail = member;
        tail = &member->next;
        count++;
        HUSH_TRY(after_item(p, '}', "expected ',' or '}' in object", &closed));
    }

    HUSH_TRY(new_pointer_array(p, count, &mem));
    members = mem;
    for (size_t i = 0; i < count; i++, head = head->next)
        members[i] = head;
    HUSH_TRY(index_object(p->arena, members, count, out, &duplicate, p->err));
    if (duplicate != NULL)
        status = fail_at(p, duplicate->offset, "duplicate key in object");
cleanup:
    return status;
}

/* ---- values and documents ----------------------------------------------- */

HUSH_MUST_USE
static hush_status parse_container(parser *p, hush_json_value **out)
{
    hush_status status = HUSH_OK;
    if (p->depth >= p->max_depth)
        HUSH_BAIL_WITH(hush__fail_at(p->err, HUSH_E_LIMIT, p->in.pos,
                                     "nesting deeper than the limit of %u", p->max_depth));
    p->depth++;
    status = hush_reader_peek(&p->in) == '[' ? parse_array(p, out) : parse_object(p, out);
    p->depth--;
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status parse_value(parser *p, hush_json_value **out)
{
    skip_whitespace(p);
    int c = hush_reader_peek(&p->in);
    switch (c) {
    case -1: return fail_end(p);
    case '{':
    case '[': return parse_container(p, out);
    case '"': return parse_string(p, out);
    case 't': return parse_literal(p, "true", HUSH_JSON_BOOL, true, out);
    case 'f': return parse_literal(p, "false", HUSH_JSON_BOOL, false, out);
    case 'n': return parse_literal(p, "null", HUSH_JSON_NULL, false, out);
    default:
        if (c == '-' || is_digit(c))
            return parse_number(p, out);
        return fail_at(p, p->in.pos, "expected a JSON value");
    }
}

hush_status hush_json_parse_into(hush_arena *arena, const void *text, size_t len,
                                 const hush_json_limits *limits,
                                 const hush_json_value **root, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t max_bytes = limits != NULL && limits->max_bytes != 0 ? limits->max_bytes
                                                                : HUSH_JSON_DEFAULT_MAX_BYTES;
    unsigned max_depth = limits != NULL && limits->max_depth != 0 ? limits->max_depth
                                                                  : HUSH_JSON_DEFAULT_MAX_DEPTH;
    parser p = {.arena = arena, .max_depth = max_depth, .err = err};
    hush_json_value *value;

    if (root != NULL)
        *root = NULL;
    HUSH_ENSURE(arena != NULL && root != NULL && (text != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_json_parse_into needs an arena, a text and a root pointer");
    HUSH_ENSURE(max_depth <= HUSH_JSON_MAX_DEPTH_LIMIT, HUSH_E_ARGUMENT,
                "JSON depth limit %u is above the maximum of %u", max_depth,
                HUSH_JSON_MAX_DEPTH_LIMIT);
    HUSH_ENSURE(len <= max_bytes, HUSH_E_LIMIT,
                "JSON document of %zu bytes exceeds the limit of %zu", len, max_bytes);

    hush_reader_init(&p.in, text, len);
    HUSH_TRY(parse_value(&p, &value));
    skip_whitespace(&p);
    if (!hush_reader_done(&p.in))
        HUSH_TRY(fail_at(&p, p.in.pos, "unexpected data after the JSON value"));
    *root = value;
cleanup:
    return status;
}

hush_status hush_json_parse(const void *text, size_t len, const hush_json_limits *limits,
                            unsigned secmem_flags, hush_json_doc **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_arena *arena = NULL;
    hush_json_doc *doc;
    void *mem;

    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_json_parse needs an output pointer");
    *out = NULL;
    HUSH_TRY(hush_arena_new(secmem_flags, &arena, err));
    HUSH_TRY(hush_arena_alloc(arena, sizeof(hush_json_doc), &mem, err));
    doc = mem;
    doc->arena = arena;
    HUSH_TRY(hush_json_parse_into(arena, text, len, limits, &doc->root, err));
    *out = doc;
    arena = NULL;
cleanup:
    hush_arena_free(arena);
    return status;
}

const hush_json_value *hush_json_doc_root(const hush_json_doc *doc)
{
    return doc != NULL ? doc->root : NULL;
}

hush_arena *hush_json_doc_arena(hush_json_doc *doc)
{
    return doc != NULL ? doc->arena : NULL;
}

void hush_json_doc_free(hush_json_doc *doc)
{
    /* The document lives in its own arena: freeing the arena frees it. */
    if (doc != NULL)
        hush_arena_free(doc->arena);
}

/* ---- building values (internal) ---------------------------------------- */

HUSH_MUST_USE
static hush_status new_value(hush_arena *arena, hush_json_type type, hush_json_value **out,
                             hush_error *err)
{
    hush_status status = HUSH_OK;
    void *mem;
    HUSH_TRY(hush_arena_alloc(arena, sizeof(hush_json_value), &mem, err));
    *out = mem;
    (*out)->type = type;
cleanup:
    return status;
}

hush_status hush__json_new_string(hush_arena *arena, const char *s, size_t len,
                                  const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_value *v;
    char *copy;
    hush_reader r;
    hush_reader_init(&r, s, len);
    while (!hush_reader_done(&r))
        HUSH_ENSURE(hush__utf8_next(&r) >= 0, HUSH_E_ARGUMENT, "invalid UTF-8 in a JSON string");
    HUSH_TRY(hush_arena_strdup(arena, s, len, &copy, err));
    HUSH_TRY(new_value(arena, HUSH_JSON_STRING, &v, err));
    v->as.text.bytes = copy;
    v->as.text.len = len;
    *out = v;
cleanup:
    return status;
}

hush_status hush__json_new_literal(hush_arena *arena, hush_json_type type, bool value,
                                   const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_value *v;
    HUSH_ENSURE(type == HUSH_JSON_BOOL || type == HUSH_JSON_NULL, HUSH_E_ARGUMENT,
                "only booleans and null are literals");
    HUSH_TRY(new_value(arena, type, &v, err));
    v->as.boolean = type == HUSH_JSON_BOOL && value;
    *out = v;
cleanup:
    return status;
}

hush_status hush__json_new_object(hush_arena *arena, const hush__json_member_spec *specs,
                                  size_t count, const hush_json_value **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    const json_member **members = NULL, *duplicate;
    hush_json_value *object = NULL;
    void *mem;
    if (count > 0) {
        HUSH_ENSURE(count <= SIZE_MAX / sizeof(json_member), HUSH_E_LIMIT, "too many members");
        HUSH_TRY(hush_arena_alloc(arena, count * sizeof *members, &mem, err));
        members = mem;
        HUSH_TRY(hush_arena_alloc(arena, count * sizeof(json_member), &mem, err));
        json_member *m = mem;
        for (size_t i = 0; i < count; i++) {
            m[i].key = specs[i].key;
            m[i].key_len = specs[i].key_len;
            m[i].offset = i; /* keeps the sort stable, names the repeat */
            m[i].value = specs[i].value;
            members[i] = &m[i];
        }
    }
    HUSH_TRY(index_object(arena, members, count, &object, &duplicate, err));
    HUSH_ENSURE(duplicate == NULL, HUSH_E_ARGUMENT, "duplicate key in a built JSON object");
    *out = object;
cleanup:
    return status;
}

hush_status hush__json_doc_adopt(hush_arena *arena, const hush_json_value *root,
                                 hush_json_doc **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    void *mem;
    HUSH_TRY(hush_arena_alloc(arena, sizeof(hush_json_doc), &mem, err));
    *out = mem;
    (*out)->arena = arena;
    (*out)->root = root;
cleanup:
    return status;
}

/* ---- reading the DOM ---------------------------------------------------- */
/* Accessors accept NULL and answer as for a value of the wrong type, so
 * lookups can be chained without checking every step. */

hush_json_type hush_json_type_of(const hush_json_value *value)
{
    return value != NULL ? value->type : HUSH_JSON_NULL;
}

const char *hush_json_type_name(hush_json_type type)
{
    switch (type) {
    case HUSH_JSON_NULL: return "null";
    case HUSH_JSON_BOOL: return "boolean";
    case HUSH_JSON_NUMBER: return "number";
    case HUSH_JSON_STRING: return "string";
    case HUSH_JSON_ARRAY: return "array";
    case HUSH_JSON_OBJECT: return "object";
    }
    return "unknown";
}

static bool is_type(const hush_json_value *value, hush_json_type type)
{
    return value != NULL && value->type == type;
}

size_t hush_json_length(const hush_json_value *value)
{
    if (is_type(value, HUSH_JSON_ARRAY))
        return value->as.array.count;
    if (is_type(value, HUSH_JSON_OBJECT))
        return value->as.object.count;
    return 0;
}

const hush_json_value *hush_json_array_get(const hush_json_value *array, size_t index)
{
    if (!is_type(array, HUSH_JSON_ARRAY) || index >= array->as.array.count)
        return NULL;
    return array->as.array.items[index];
}

const hush_json_value *hush_json_object_get(const hush_json_value *object,
                                            const char *key, size_t key_len)
{
    if (!is_type(object, HUSH_JSON_OBJECT) || (key == NULL && key_len != 0))
        return NULL;
    if (key == NULL)
        key = "";
    const json_member **sorted = object->as.object.sorted;
    size_t lo = 0, hi = object->as.object.count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = compare_keys(key, key_len, sorted[mid]->key, sorted[mid]->key_len);
        if (c == 0)
            return sorted[mid]->value;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return NULL;
}

bool hush_json_object_member(const hush_json_value *object, size_t index,
                             const char **key, size_t *key_len,
                             const hush_json_value **value)
{
    if (!is_type(object, HUSH_JSON_OBJECT) || index >= object->as.object.count)
        return false;
    const json_member *m = object->as.object.members[index];
    if (key != NULL)
        *key = m->key;
    if (key_len != NULL)
        *key_len = m->key_len;
    if (value != NULL)
        *value = m->value;
    return true;
}

static const char *text_of(const hush_json_value *value, hush_json_type type, size_t *len)
{
    if (!is_type(value, type))
        return NULL;
    if (len != NULL)
        *len = value->as.text.len;
    return value->as.text.bytes;
}

const char *hush_json_string(const hush_json_value *value, size_t *len)
{
    return text_of(value, HUSH_JSON_STRING, len);
}

const char *hush_json_number_text(const hush_json_value *value, size_t *len)
{
    return text_of(value, HUSH_JSON_NUMBER, len);
}

bool hush_json_is_integer(const hush_json_value *value)
{
    if (!is_type(value, HUSH_JSON_NUMBER))
        return false;
    /* The grammar was checked at parse time: a fraction or an exponent is
     * all that can follow the integer digits. */
    for (size_t i = 0; i < value->as.text.len; i++) {
        char c = value->as.text.bytes[i];
        if (c == '.' || c == 'e' || c == 'E')
            return false;
    }
    return true;
}

bool hush_json_bool(const hush_json_value *value)
{
    return is_type(value, HUSH_JSON_BOOL) && value->as.boolean;
}

HUSH_MUST_USE
static hush_status require_number(const hush_json_value *value, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(is_type(value, HUSH_JSON_NUMBER), HUSH_E_TYPE, "expected number, got %s",
                value != NULL ? hush_json_type_name(value->type) : "nothing");
cleanup:
    return status;
}

hush_status hush_json_int64(const hush_json_value *value, int64_t *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_json_int64 needs an output pointer");
    HUSH_TRY(require_number(value, err));
    HUSH_ENSURE(hush_json_is_integer(value), HUSH_E_TYPE, "expected integer, got a fraction");

    const char *digits = value->as.text.bytes;
    size_t len = value->as.text.len;
    bool negative = digits[0] == '-';
    uint64_t limit = negative ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t magnitude = 0;
    for (size_t i = negative ? 1 : 0; i < len; i++) {
        unsigned d = (unsigned)(digits[i] - '0');
        HUSH_ENSURE(magnitude <= (limit - d) / 10, HUSH_E_LIMIT,
                    "integer out of range for int64");
        magnitude = magnitude * 10 + d;
    }
    if (!negative)
        *out = (int64_t)magnitude;
    else
        *out = magnitude == limit ? INT64_MIN : -(int64_t)magnitude;
cleanup:
    return status;
}

hush_status hush_json_double(const hush_json_value *value, double *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    char *end;
    HUSH_ENSURE(out != NULL, HUSH_E_ARGUMENT, "hush_json_double needs an output pointer");
    HUSH_TRY(require_number(value, err));
    HUSH_TRY(hush__init(err));

    /* Never the process locale: a comma decimal point would cut "1.5" short. */
    double d = strtod_l(value->as.text.bytes, &end, hush__c_locale());
    HUSH_ENSURE(end == value->as.text.bytes + value->as.text.len, HUSH_E_INTERNAL,
                "number text not fully converted");
    HUSH_ENSURE(!isinf(d), HUSH_E_LIMIT, "number out of range for a double");
    *out = d;
cleanup:
    return status;
}

hush_status hush_json_object_get_typed(const hush_json_value *object, const char *key,
                                       hush_json_type type, const hush_json_value **out,
                                       hush_error *err)
{
    hush_status status = HUSH_OK;
    const hush_json_value *member;

    HUSH_ENSURE(key != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_json_object_get_typed needs a key and an output pointer");
    *out = NULL;
    HUSH_ENSURE(is_type(object, HUSH_JSON_OBJECT), HUSH_E_TYPE,
                "looking up \"%s\": expected object, got %s", key,
                object != NULL ? hush_json_type_name(object->type) : "nothing");
    member = hush_json_object_get(object, key, strlen(key));
    HUSH_ENSURE(member != NULL, HUSH_E_NOT_FOUND, "missing key \"%s\"", key);
    HUSH_ENSURE(member->type == type, HUSH_E_TYPE, "key \"%s\": expected %s, got %s", key,
                hush_json_type_name(type), hush_json_type_name(member->type));
    *out = member;
cleanup:
    return status;
}
