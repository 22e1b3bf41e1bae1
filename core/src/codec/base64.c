/* base64.c — strict RFC 4648 base64 whose running time depends only on the
 * length: characters and 6-bit values are mapped with masks, never through
 * a table indexed by a secret byte or a branch on its value. */
#include <stdint.h>
#include <string.h>

#include "hushcall/base64.h"
#include "internal.h"

/* ---- constant-time helpers (arguments are below 2^16) ------------------ */

/* All ones when a < b, else zero. */
static uint32_t ct_lt(uint32_t a, uint32_t b) { return 0u - ((a - b) >> 31); }

/* All ones when lo <= c <= hi. */
static uint32_t ct_in_range(uint32_t c, uint32_t lo, uint32_t hi)
{
    return ~ct_lt(c, lo) & ct_lt(c, hi + 1);
}

static uint32_t ct_eq(uint32_t a, uint32_t b) { return ct_in_range(a, b, b); }

/* The value of one base64 character, and all ones in *valid when it is in
 * the alphabet (the value is 0 when it is not). */
static uint32_t char_to_value(uint32_t c, uint32_t *valid)
{
    uint32_t upper = ct_in_range(c, 'A', 'Z');
    uint32_t lower = ct_in_range(c, 'a', 'z');
    uint32_t digit = ct_in_range(c, '0', '9');
    uint32_t plus = ct_eq(c, '+');
    uint32_t slash = ct_eq(c, '/');
    *valid = upper | lower | digit | plus | slash;
    return (upper & (c - 'A')) | (lower & (c - 'a' + 26)) | (digit & (c - '0' + 52)) |
           (plus & 62u) | (slash & 63u);
}

/* The character for a 6-bit value: 'A' + v, shifted at each range boundary. */
static char value_to_char(uint32_t v)
{
    uint32_t c = 'A' + v;
    c += ~ct_lt(v, 26) & ('a' - 'A' - 26);       /* 26..51 -> 'a'.. */
    c += ~ct_lt(v, 52) & (uint32_t)('0' - 'a' - 26); /* 52..61 -> '0'.. */
    c += ~ct_lt(v, 62) & (uint32_t)('+' - '0' - 10); /* 62 -> '+' */
    c += ~ct_lt(v, 63) & ('/' - '+' - 1);         /* 63 -> '/' */
    return (char)(c & 0xff);
}

/* ---- encoding ---------------------------------------------------------- */

size_t hush_base64_encoded_len(size_t len)
{
    size_t groups = len / 3 + (len % 3 != 0);
    return groups > SIZE_MAX / 4 ? SIZE_MAX : groups * 4;
}

size_t hush_base64_decoded_max(size_t len) { return len / 4 * 3; }

/* Write hush_base64_encoded_len(len) characters at dst (no NUL). */
static void encode_into(const unsigned char *in, size_t len, char *dst)
{
    size_t i = 0;
    for (; len - i >= 3; i += 3, dst += 4) {
        uint32_t triple = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        dst[0] = value_to_char(triple >> 18);
        dst[1] = value_to_char((triple >> 12) & 63);
        dst[2] = value_to_char((triple >> 6) & 63);
        dst[3] = value_to_char(triple & 63);
    }
    size_t rest = len - i; /* 0, 1 or 2: a public fact, like the length */
    if (rest == 0)
        return;
    uint32_t triple = (uint32_t)in[i] << 16 | (rest == 2 ? (uint32_t)in[i + 1] << 8 : 0);
    dst[0] = value_to_char(triple >> 18);
    dst[1] = value_to_char((triple >> 12) & 63);
    dst[2] = rest == 2 ? value_to_char((triple >> 6) & 63) : '=';
    dst[3] = '=';
}

hush_status hush_base64_encode(const void *in, size_t len, char *out, size_t cap,
                               size_t *out_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE((in != NULL || len == 0) && out != NULL && out_len != NULL, HUSH_E_ARGUMENT,
                "hush_base64_encode: NULL argument");
    size_t need = hush_base64_encoded_len(len);
    HUSH_ENSURE(need != SIZE_MAX && need + 1 <= cap, HUSH_E_ARGUMENT,
                "hush_base64_encode: output capacity %zu is too small for %zu bytes", cap, len);
    encode_into(in, len, out);
    out[need] = '\0';
    *out_len = need;
cleanup:
    return status;
}

hush_status hush_base64_encode_append(const void *in, size_t len, hush_secbuf *out,
                                      hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE((in != NULL || len == 0) && out != NULL, HUSH_E_ARGUMENT,
                "hush_base64_encode_append: NULL argument");
    size_t need = hush_base64_encoded_len(len);
    HUSH_ENSURE(need != SIZE_MAX, HUSH_E_LIMIT, "base64 of %zu bytes is too long", len);
    HUSH_TRY(hush_secbuf_reserve(out, need, err));
    size_t start = hush_secbuf_len(out);
    encode_into(in, len, (char *)hush_secbuf_data(out) + start);
    HUSH_TRY(hush_secbuf_set_len(out, start + need, err));
cleanup:
    return status;
}

/* ---- decoding ---------------------------------------------------------- */

/* Where the first bad character is, tracked without branching on data. */
typedef struct bad_tracker {
    uint32_t seen;     /* all ones once any character was bad */
    size_t first;      /* offset of the first bad one */
} bad_tracker;

static void note_char(bad_tracker *t, size_t offset, uint32_t ok)
{
    uint32_t newly_bad = ~ok & ~t->seen;
    size_t take = (size_t)0 - (size_t)(newly_bad & 1);
    t->first = (offset & take) | (t->first & ~take);
    t->seen |= ~ok;
}

/* Decode one group of four characters into three bytes. In the last group
 * '=' may stand in the third and fourth places (the third only when the
 * fourth is '=' too), and the bits a padded group leaves unused must be 0. */
static void decode_group(const unsigned char *in, size_t offset, bool last, unsigned char *dst,
                         bad_tracker *t)
{
    uint32_t ok[4], v[4];
    for (int k = 0; k < 4; k++)
        v[k] = char_to_value(in[k], &ok[k]);

    uint32_t last_mask = (uint32_t)0 - (uint32_t)last;
    uint32_t pad4 = last_mask & ct_eq(in[3], '=');
    uint32_t pad3 = pad4 & ct_eq(in[2], '=');
    ok[2] |= pad3;
    ok[3] |= pad4;
    /* One '=': the low 2 bits of the third value are unused; two: the low
     * 4 bits of the second. The character holding them is the bad one. */
    ok[1] &= ~(pad3 & ct_lt(0, v[1] & 0x0f));
    ok[2] &= ~(pad4 & ~pad3 & ct_lt(0, v[2] & 0x03));

    for (int k = 0; k < 4; k++)
        note_char(t, offset + (size_t)k, ok[k]);
    dst[0] = (unsigned char)(v[0] << 2 | v[1] >> 4);
    dst[1] = (unsigned char)(v[1] << 4 | v[2] >> 2);
    dst[2] = (unsigned char)(v[2] << 6 | v[3]);
}

HUSH_MUST_USE
static hush_status decode_failure(const unsigned char *in, size_t len, size_t offset,
                                  hush_error *err)
{
    /* The input is rejected, so looking at the offending character is
     * fine now; its value itself never goes into the message. */
    if (offset == len)
        return hush__fail_at(err, HUSH_E_BASE64, offset,
                             "base64 length %zu is not a multiple of 4", len);
    uint32_t in_alphabet;
    char_to_value(in[offset], &in_alphabet);
    if (in_alphabet)
        return hush__fail_at(err, HUSH_E_BASE64, offset,
                             "non-canonical base64: unused bits set at offset %zu", offset);
    return hush__fail_at(err, HUSH_E_BASE64, offset, "invalid base64 character at offset %zu",
                         offset);
}

hush_status hush_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap,
                               size_t *out_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    HUSH_ENSURE((in != NULL || len == 0) && (out != NULL || cap == 0) && out_len != NULL,
                HUSH_E_ARGUMENT, "hush_base64_decode: NULL argument");
    HUSH_ENSURE(cap >= hush_base64_decoded_max(len), HUSH_E_ARGUMENT,
                "hush_base64_decode: output capacity %zu is too small for %zu characters", cap,
                len);
    const unsigned char *src = (const unsigned char *)in;
    size_t groups = len / 4;
    bad_tracker t = {0, 0};
    for (size_t g = 0; g < groups; g++)
        decode_group(src + 4 * g, 4 * g, g + 1 == groups && len % 4 == 0, out + 3 * g, &t);
    /* A partial group cannot decode; junk in it is still reported first. */
    for (size_t i = groups * 4; i < len; i++) {
        uint32_t ok;
        char_to_value(src[i], &ok);
        note_char(&t, i, ok | ct_eq(src[i], '='));
    }
    if (!t.seen && len % 4 != 0) {
        t.seen = ~0u;
        t.first = len;
    }
    if (t.seen) {
        hush_memzero(out, groups * 3);
        HUSH_TRY(decode_failure(src, len, t.first, err));
    }
    size_t padding = len == 0 ? 0 : (size_t)(src[len - 1] == '=') + (src[len - 2] == '=');
    *out_len = groups * 3 - padding;
cleanup:
    return status;
}
