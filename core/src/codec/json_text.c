/* json_text.c — the lexical rules the JSON parser and writer share: one
 * strict UTF-8 decoder and one scanner for RFC 8259 numbers, so what the
 * writer emits is by construction what the parser accepts; and the one hex
 * digit reader (\u escapes, PCR values). */
#include "internal.h"
#include "codec/codec_internal.h"

int32_t hush__utf8_next(hush_reader *r)
{
    int c = hush_reader_next(r);
    if (c < 0x80)
        return c; /* ASCII, or -1 at the end */
    int more, low = 0x80, high = 0xBF;
    int32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        more = 1, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        more = 2, cp = c & 0x0F;
        low = c == 0xE0 ? 0xA0 : 0x80;  /* overlong */
        high = c == 0xED ? 0x9F : 0xBF; /* surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        more = 3, cp = c & 0x07;
        low = c == 0xF0 ? 0x90 : 0x80;  /* overlong */
        high = c == 0xF4 ? 0x8F : 0xBF; /* past U+10FFFF */
    } else {
        return -1;
    }
    for (int i = 0; i < more; i++) {
        int b = hush_reader_next(r);
        if (b < low || b > high)
            return -1;
        cp = (cp << 6) | (b & 0x3F);
        low = 0x80, high = 0xBF;
    }
    return cp;
}

static bool is_digit(int c) { return c >= '0' && c <= '9'; }

static bool skip_digits(hush_reader *r)
{
    bool any = false;
    while (is_digit(hush_reader_peek(r))) {
        hush_reader_next(r);
        any = true;
    }
    return any;
}

const char *hush__json_scan_number(hush_reader *r)
{
    if (hush_reader_peek(r) == '-')
        hush_reader_next(r);
    int c = hush_reader_peek(r);
    if (c == '0') {
        hush_reader_next(r);
        if (is_digit(hush_reader_peek(r)))
            return "leading zero in number";
    } else if (!skip_digits(r)) {
        return "invalid number";
    }
    if (hush_reader_peek(r) == '.') {
        hush_reader_next(r);
        if (!skip_digits(r))
            return "missing digits after decimal point";
    }
    c = hush_reader_peek(r);
    if (c == 'e' || c == 'E') {
        hush_reader_next(r);
        c = hush_reader_peek(r);
        if (c == '+' || c == '-')
            hush_reader_next(r);
        if (!skip_digits(r))
            return "missing digits in exponent";
    }
    return NULL;
}

int hush__hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}
