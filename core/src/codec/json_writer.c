/* json_writer.c — JSON serialized straight into a hush_secbuf. A small stack of
 * open containers places separators and enforces structure; strings and doubles
 * come out exactly as Python's json.dumps writes them. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/json_writer.h"
#include "internal.h"
#include "codec/codec_internal.h"

#define WRITER_FLAGS (HUSH_JSON_WRITE_SPACED | HUSH_JSON_WRITE_ASCII)
#define DOUBLE_MAX_DIGITS 17 /* enough for any double to read back exactly */
#define NUMBER_SCRATCH 32    /* the longest formatted double or integer, and more */

typedef struct frame {
    bool is_object;
    bool has_items; /* a ',' goes before the next item */
    bool after_key; /* in an object: a key was written and its value is due */
} frame;

struct hush_json_writer {
    hush_secbuf *out;
    unsigned flags;
    unsigned max_depth;
    unsigned depth;
    bool started; /* the top-level value has begun */
    /* Code HUSH_OK until the first failure, which poisons the writer and is
     * reported by every later call. Messages never hold content. */
    hush_error first_error;
    frame stack[]; /* max_depth open containers */
};

/* ---- poisoning ---------------------------------------------------------- */

HUSH_MUST_USE
static hush_status usable(const hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE_REF(w, "JSON writer is NULL");
    if (w->first_error.code != HUSH_OK && err != NULL)
        *err = w->first_error;
    status = w->first_error.code;
cleanup:
    return status;
}

/* Internal steps record failures in w->first_error; hand them on. */
HUSH_MUST_USE
static hush_status settle(hush_json_writer *w, hush_status status, hush_error *err)
{
    if (status != HUSH_OK) {
        w->first_error.code = status;
        if (err != NULL)
            *err = w->first_error;
    }
    return status;
}

/* ---- output and structure ----------------------------------------------- */

HUSH_MUST_USE
static hush_status put(hush_json_writer *w, const void *bytes, size_t len)
{
    return hush_secbuf_append(w->out, bytes, len, &w->first_error);
}

HUSH_MUST_USE
static hush_status put_byte(hush_json_writer *w, unsigned byte)
{
    return hush_secbuf_append_byte(w->out, (unsigned char)byte, &w->first_error);
}

/* ',' or ':', followed by a space in Python's style. */
HUSH_MUST_USE
static hush_status put_separator(hush_json_writer *w, char separator)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(put_byte(w, (unsigned char)separator));
    if (w->flags & HUSH_JSON_WRITE_SPACED)
        HUSH_TRY(put_byte(w, ' '));
cleanup:
    return status;
}

static frame *innermost(hush_json_writer *w)
{
    return w->depth > 0 ? &w->stack[w->depth - 1] : NULL;
}

/* Check that a value may go here, and write the ',' before it if one is due. */
HUSH_MUST_USE
static hush_status begin_value(hush_json_writer *w)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    frame *f = innermost(w);

    if (f == NULL) {
        HUSH_ENSURE(!w->started, HUSH_E_ARGUMENT,
                    "a JSON document holds only one top-level value");
        w->started = true;
    } else if (f->is_object) {
        HUSH_ENSURE(f->after_key, HUSH_E_ARGUMENT, "an object member needs a key before its value");
        f->after_key = false;
    } else {
        if (f->has_items)
            HUSH_TRY(put_separator(w, ','));
        f->has_items = true;
    }
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_value_bytes(hush_json_writer *w, const char *bytes, size_t len)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(begin_value(w));
    HUSH_TRY(put(w, bytes, len));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status open_container(hush_json_writer *w, bool is_object)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;

    HUSH_ENSURE(w->depth < w->max_depth, HUSH_E_LIMIT, "nesting deeper than the limit of %u",
                w->max_depth);
    HUSH_TRY(begin_value(w));
    w->stack[w->depth++] = (frame){.is_object = is_object};
    HUSH_TRY(put_byte(w, is_object ? '{' : '['));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status close_container(hush_json_writer *w, bool is_object)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    frame *f = innermost(w);

    HUSH_ENSURE(f != NULL && f->is_object == is_object, HUSH_E_ARGUMENT,
                is_object ? "object end without a matching object begin"
                          : "array end without a matching array begin");
    HUSH_ENSURE(!f->after_key, HUSH_E_ARGUMENT, "object ended after a key without its value");
    w->depth--;
    HUSH_TRY(put_byte(w, is_object ? '}' : ']'));
cleanup:
    return status;
}

/* ---- strings ------------------------------------------------------------ */

/* \uXXXX in lowercase hex, as json.dumps writes it. Written byte by byte,
 * so no scratch copy of the character is left on the stack. */
HUSH_MUST_USE
static hush_status put_u_escape(hush_json_writer *w, uint32_t unit)
{
    static const char hex[] = "0123456789abcdef";
    hush_status status = HUSH_OK;
    HUSH_TRY(put(w, "\\u", 2));
    for (int shift = 12; shift >= 0; shift -= 4)
        HUSH_TRY(put_byte(w, (unsigned char)hex[(unit >> shift) & 0xF]));
cleanup:
    return status;
}

static bool needs_escape(const hush_json_writer *w, uint32_t cp)
{
    if (cp < 0x20 || cp == '"' || cp == '\\')
        return true;
    return (w->flags & HUSH_JSON_WRITE_ASCII) && cp >= 0x7F;
}

HUSH_MUST_USE
static hush_status put_escape(hush_json_writer *w, uint32_t cp)
{
    switch (cp) {
    case '"': return put(w, "\\\"", 2);
    case '\\': return put(w, "\\\\", 2);
    case '\b': return put(w, "\\b", 2);
    case '\f': return put(w, "\\f", 2);
    case '\n': return put(w, "\\n", 2);
    case '\r': return put(w, "\\r", 2);
    case '\t': return put(w, "\\t", 2);
    default: break;
    }
    if (cp < 0x10000)
        return put_u_escape(w, cp);
    /* Beyond the BMP: a UTF-16 surrogate pair. */
    hush_status status = HUSH_OK;
    HUSH_TRY(put_u_escape(w, 0xD800 + ((cp - 0x10000) >> 10)));
    HUSH_TRY(put_u_escape(w, 0xDC00 + ((cp - 0x10000) & 0x3FF)));
cleanup:
    return status;
}

/* Bytes from `run` up to `end`, copied as they are. */
HUSH_MUST_USE
static hush_status put_run(hush_json_writer *w, hush_reader *run, size_t end)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    const unsigned char *bytes = NULL;
    size_t len = end - run->pos;
    if (len == 0)
        goto cleanup;
    HUSH_ENSURE(hush_reader_take(run, len, &bytes), HUSH_E_INTERNAL, "string run out of bounds");
    HUSH_TRY(put(w, bytes, len));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_string(hush_json_writer *w, const char *s, size_t len)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    hush_reader in, run;

    HUSH_ENSURE(s != NULL || len == 0, HUSH_E_ARGUMENT, "string is NULL");
    hush_reader_init(&in, s, len);
    run = in; /* the start of bytes that need no escaping */
    HUSH_TRY(put_byte(w, '"'));
    while (!hush_reader_done(&in)) {
        size_t at = in.pos;
        int32_t cp = hush__utf8_next(&in);
        HUSH_ENSURE(cp >= 0, HUSH_E_ARGUMENT, "invalid UTF-8 in string");
        if (!needs_escape(w, (uint32_t)cp))
            continue;
        HUSH_TRY(put_run(w, &run, at));
        HUSH_TRY(put_escape(w, (uint32_t)cp));
        run = in;
    }
    HUSH_TRY(put_run(w, &run, in.pos));
    HUSH_TRY(put_byte(w, '"'));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_key(hush_json_writer *w, const char *key, size_t len)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    frame *f = innermost(w);

    HUSH_ENSURE(f != NULL && f->is_object, HUSH_E_ARGUMENT, "a key is only allowed in an object");
    HUSH_ENSURE(!f->after_key, HUSH_E_ARGUMENT, "a key must be followed by a value, not a key");
    if (f->has_items)
        HUSH_TRY(put_separator(w, ','));
    f->has_items = true;
    f->after_key = true;
    HUSH_TRY(put_string(w, key, len));
    HUSH_TRY(put_separator(w, ':'));
cleanup:
    return status;
}

/* ---- numbers ------------------------------------------------------------ */

HUSH_MUST_USE
static hush_status put_integer(hush_json_writer *w, bool negative, uint64_t magnitude)
{
    char digits[NUMBER_SCRATCH];
    size_t at = sizeof digits;
    do {
        digits[--at] = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0);
    if (negative)
        digits[--at] = '-';
    hush_status status = put_value_bytes(w, digits + at, sizeof digits - at);
    hush_memzero(digits, sizeof digits);
    return status;
}

/* A finite double as sign, significant digits and `decpt`, the position of
 * the decimal point relative to the first digit: 0.DIGITS x 10^decpt. */
typedef struct decimal {
    bool negative;
    char digits[DOUBLE_MAX_DIGITS + 1];
    int count;
    int decpt;
} decimal;

static bool same_bits(double a, double b)
{
    uint64_t x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    return x == y;
}

/* `v` correctly rounded to `precision` digits. The text "%.*e" writes is
 * "-d.ddde+XX" in the C locale, whatever locale the thread uses. */
static void decimal_round(double v, int precision, decimal *d)
{
    char sci[NUMBER_SCRATCH];
    size_t i = 0;
    int exponent;

    locale_t previous = uselocale(hush__c_locale());
    snprintf(sci, sizeof sci, "%.*e", precision - 1, v);
    uselocale(previous);

    d->negative = sci[i] == '-';
    if (d->negative)
        i++;
    d->count = 0;
    for (; sci[i] != 'e'; i++)
        if (sci[i] != '.')
            d->digits[d->count++] = sci[i];
    exponent = atoi(sci + i + 1);
    d->decpt = exponent + 1;
    hush_memzero(sci, sizeof sci);
}

/* The next decimal up in magnitude with as many digits (trailing zeros of
 * a carry dropped). */
static void decimal_step_up(decimal *d)
{
    int i = d->count - 1;
    while (i >= 0 && d->digits[i] == '9')
        d->count = i--;
    if (i >= 0) {
        d->digits[i]++;
    } else { /* 9.99 -> 10.0 */
        d->digits[0] = '1';
        d->count = 1;
        d->decpt++;
    }
}

static bool decimal_reads_back_as(const decimal *d, double v)
{
    char text[NUMBER_SCRATCH];
    snprintf(text, sizeof text, "%s0.%.*se%d", d->negative ? "-" : "", d->count, d->digits,
             d->decpt);
    bool same = same_bits(strtod_l(text, NULL, hush__c_locale()), v);
    hush_memzero(text, sizeof text);
    return same;
}

/* The fewest digits that read back as `v`; among those, the closest to it.
 * The correctly rounded candidate is the closest; its neighbour above can
 * read back when it does not, because the interval of decimals that round
 * to a power of two is wider above it than below. This is the digit string
 * Python's repr chooses. */
static void decimal_shortest(double v, decimal *d)
{
    for (int precision = 1; precision < DOUBLE_MAX_DIGITS; precision++) {
        decimal_round(v, precision, d);
        if (decimal_reads_back_as(d, v))
            return;
        decimal_step_up(d);
        if (decimal_reads_back_as(d, v))
            return;
    }
    decimal_round(v, DOUBLE_MAX_DIGITS, d);
}

/* Python's repr(float): positional when -4 < decpt <= 16, always with a
 * '.' so it reads back as a float; otherwise d.ddde±XX with at least two
 * exponent digits. */
static size_t decimal_format_like_python(const decimal *d, char *out)
{
    size_t n = 0;
    if (d->negative)
        out[n++] = '-';
    if (d->decpt > -4 && d->decpt <= 16) {
        if (d->decpt <= 0) {
            out[n++] = '0';
            out[n++] = '.';
            for (int i = d->decpt; i < 0; i++)
                out[n++] = '0';
        }
        for (int i = 0; i < d->count; i++) {
            if (i == d->decpt && i > 0)
                out[n++] = '.';
            out[n++] = d->digits[i];
        }
        for (int i = d->count; i < d->decpt; i++)
            out[n++] = '0';
        if (d->decpt >= d->count) {
            out[n++] = '.';
            out[n++] = '0';
        }
        return n;
    }
    out[n++] = d->digits[0];
    if (d->count > 1)
        out[n++] = '.';
    for (int i = 1; i < d->count; i++)
        out[n++] = d->digits[i];
    int exponent = d->decpt - 1;
    out[n++] = 'e';
    out[n++] = exponent < 0 ? '-' : '+';
    exponent = abs(exponent);
    if (exponent >= 100)
        out[n++] = (char)('0' + exponent / 100);
    out[n++] = (char)('0' + exponent / 10 % 10);
    out[n++] = (char)('0' + exponent % 10);
    return n;
}

HUSH_MUST_USE
static hush_status put_double(hush_json_writer *w, double v)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    decimal d;
    char text[NUMBER_SCRATCH];

    HUSH_ENSURE(isfinite(v), HUSH_E_ARGUMENT, "NaN and infinities cannot be written as JSON");
    decimal_shortest(v, &d);
    size_t len = decimal_format_like_python(&d, text);
    status = put_value_bytes(w, text, len);
    hush_memzero(&d, sizeof d);
    hush_memzero(text, sizeof text);
cleanup:
    return status;
}

/* RFC 8259 §6 and nothing more. */
static bool is_json_number(const char *text, size_t len)
{
    hush_reader r;
    hush_reader_init(&r, text, len);
    return hush__json_scan_number(&r) == NULL && hush_reader_done(&r);
}

HUSH_MUST_USE
static hush_status put_number_text(hush_json_writer *w, const char *text, size_t len)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    HUSH_ENSURE(text != NULL && is_json_number(text, len), HUSH_E_ARGUMENT,
                "number text does not follow the JSON number grammar");
    HUSH_TRY(put_value_bytes(w, text, len));
cleanup:
    return status;
}

/* ---- DOM subtrees ------------------------------------------------------- */

HUSH_MUST_USE
static hush_status put_dom(hush_json_writer *w, const hush_json_value *v);

HUSH_MUST_USE
static hush_status put_dom_array(hush_json_writer *w, const hush_json_value *array)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(open_container(w, false));
    for (size_t i = 0; i < hush_json_length(array); i++)
        HUSH_TRY(put_dom(w, hush_json_array_get(array, i)));
    HUSH_TRY(close_container(w, false));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_dom_object(hush_json_writer *w, const hush_json_value *object)
{
    hush_status status = HUSH_OK;
    const char *key;
    size_t key_len;
    const hush_json_value *value;

    HUSH_TRY(open_container(w, true));
    for (size_t i = 0; hush_json_object_member(object, i, &key, &key_len, &value); i++) {
        HUSH_TRY(put_key(w, key, key_len));
        HUSH_TRY(put_dom(w, value));
    }
    HUSH_TRY(close_container(w, true));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_string_value(hush_json_writer *w, const char *s, size_t len)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(begin_value(w));
    HUSH_TRY(put_string(w, s, len));
cleanup:
    return status;
}

HUSH_MUST_USE
static hush_status put_dom(hush_json_writer *w, const hush_json_value *v)
{
    hush_status status = HUSH_OK;
    hush_error *err = &w->first_error;
    const char *text;
    size_t len;

    HUSH_ENSURE_REF(v, "JSON value is NULL");
    /* No default: -Wswitch names a type added later. Each case's result is
     * the function's. */
    switch (hush_json_type_of(v)) {
    case HUSH_JSON_NULL: status = put_value_bytes(w, "null", 4); goto cleanup;
    case HUSH_JSON_BOOL:
        status = hush_json_bool(v) ? put_value_bytes(w, "true", 4)
                                   : put_value_bytes(w, "false", 5);
        goto cleanup;
    case HUSH_JSON_NUMBER:
        text = hush_json_number_text(v, &len);
        status = put_number_text(w, text, len);
        goto cleanup;
    case HUSH_JSON_STRING:
        text = hush_json_string(v, &len);
        status = put_string_value(w, text, len);
        goto cleanup;
    case HUSH_JSON_ARRAY: status = put_dom_array(w, v); goto cleanup;
    case HUSH_JSON_OBJECT: status = put_dom_object(w, v); goto cleanup;
    }
    HUSH_BAIL(HUSH_E_INTERNAL, "unknown JSON value type");
cleanup:
    return status;
}

/* ---- public API --------------------------------------------------------- */

hush_status hush_json_writer_new(hush_secbuf *out, unsigned flags, unsigned max_depth,
                                 hush_json_writer **out_writer, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_json_writer *w = NULL;

    HUSH_ENSURE(out_writer != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_json_writer_new needs an output buffer and a writer pointer");
    *out_writer = NULL;
    HUSH_ENSURE((flags & ~WRITER_FLAGS) == 0, HUSH_E_ARGUMENT, "unknown JSON writer flags");
    if (max_depth == 0)
        max_depth = HUSH_JSON_DEFAULT_MAX_DEPTH;
    HUSH_ENSURE(max_depth <= HUSH_JSON_MAX_DEPTH_LIMIT, HUSH_E_ARGUMENT,
                "JSON depth limit %u is above the maximum of %u", max_depth,
                HUSH_JSON_MAX_DEPTH_LIMIT);
    HUSH_TRY(hush__init(err)); /* the C locale for doubles */

    /* The writer holds structure only, never content: ordinary heap is fine. */
    w = calloc(1, sizeof *w + (size_t)max_depth * sizeof(frame));
    HUSH_ENSURE(w != NULL, HUSH_E_NOMEM, "out of memory");
    w->out = out;
    w->flags = flags;
    w->max_depth = max_depth;
    hush_error_clear(&w->first_error);
    *out_writer = w;
cleanup:
    return status;
}

void hush_json_writer_free(hush_json_writer *writer) { free(writer); }

hush_status hush_json_write_object_begin(hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, open_container(w, true), err));
cleanup:
    return status;
}

hush_status hush_json_write_object_end(hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, close_container(w, true), err));
cleanup:
    return status;
}

hush_status hush_json_write_array_begin(hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, open_container(w, false), err));
cleanup:
    return status;
}

hush_status hush_json_write_array_end(hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, close_container(w, false), err));
cleanup:
    return status;
}

hush_status hush_json_write_key(hush_json_writer *w, const char *key, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_key(w, key, len), err));
cleanup:
    return status;
}

hush_status hush_json_write_string(hush_json_writer *w, const char *s, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_string_value(w, s, len), err));
cleanup:
    return status;
}

hush_status hush_json_write_int64(hush_json_writer *w, int64_t v, hush_error *err)
{
    /* The magnitude of INT64_MIN only fits unsigned. */
    uint64_t magnitude = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_integer(w, v < 0, magnitude), err));
cleanup:
    return status;
}

hush_status hush_json_write_uint64(hush_json_writer *w, uint64_t v, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_integer(w, false, v), err));
cleanup:
    return status;
}

hush_status hush_json_write_double(hush_json_writer *w, double v, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_double(w, v), err));
cleanup:
    return status;
}

hush_status hush_json_write_bool(hush_json_writer *w, bool v, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, v ? put_value_bytes(w, "true", 4) : put_value_bytes(w, "false", 5), err));
cleanup:
    return status;
}

hush_status hush_json_write_null(hush_json_writer *w, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_value_bytes(w, "null", 4), err));
cleanup:
    return status;
}

hush_status hush_json_write_number_text(hush_json_writer *w, const char *text, size_t len,
                                        hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_number_text(w, text, len), err));
cleanup:
    return status;
}

hush_status hush_json_write_value(hush_json_writer *w, const hush_json_value *v, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_TRY(usable(w, err));
    HUSH_TRY(settle(w, put_dom(w, v), err));
cleanup:
    return status;
}

bool hush_json_writer_complete(const hush_json_writer *w)
{
    return w != NULL && w->first_error.code == HUSH_OK && w->started && w->depth == 0;
}
