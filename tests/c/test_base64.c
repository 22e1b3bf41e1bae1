/* test_base64.c — RFC 4648 vectors both ways, round trips against an
 * independent table-driven encoder, and every class of rejected input with
 * the offset it must report. */
#include <stdint.h>
#include <stdlib.h>

#include "check.h"

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* A plain reference encoder, deliberately written the obvious way. */
static void reference_encode(const unsigned char *in, size_t len, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t b0 = in[i], b1 = i + 1 < len ? in[i + 1] : 0, b2 = i + 2 < len ? in[i + 2] : 0;
        uint32_t triple = b0 << 16 | b1 << 8 | b2;
        out[o++] = alphabet[triple >> 18];
        out[o++] = alphabet[(triple >> 12) & 63];
        out[o++] = i + 1 < len ? alphabet[(triple >> 6) & 63] : '=';
        out[o++] = i + 2 < len ? alphabet[triple & 63] : '=';
    }
    out[o] = '\0';
}

/* Deterministic bytes, so a failure reproduces. */
static uint32_t xorshift_state = 0x9e3779b9u;
static unsigned char next_byte(void)
{
    xorshift_state ^= xorshift_state << 13;
    xorshift_state ^= xorshift_state >> 17;
    xorshift_state ^= xorshift_state << 5;
    return (unsigned char)(xorshift_state >> 24);
}

static hush_status decode_str(const char *in, size_t len, unsigned char *out, size_t *out_len,
                              hush_error *err)
{
    return hush_base64_decode(in, len, out, hush_base64_decoded_max(len), out_len, err);
}

static void test_rfc4648_vectors(void)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    static const char *const coded[] = {"",         "Zg==",     "Zm8=",    "Zm9v",
                                        "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        hush_error err;
        char enc[16];
        size_t enc_len = 99;
        CHECK_OK(hush_base64_encode(plain[i], strlen(plain[i]), enc, sizeof enc, &enc_len, &err),
                 &err);
        CHECK_EQ(enc_len, strlen(coded[i]));
        CHECK(strcmp(enc, coded[i]) == 0);
        CHECK_EQ(hush_base64_encoded_len(strlen(plain[i])), strlen(coded[i]));

        unsigned char dec[16];
        size_t dec_len = 99;
        CHECK_OK(decode_str(coded[i], strlen(coded[i]), dec, &dec_len, &err), &err);
        CHECK_EQ(dec_len, strlen(plain[i]));
        CHECK(memcmp(dec, plain[i], dec_len) == 0);
    }
}

static void test_whole_alphabet(void)
{
    unsigned char dec[48];
    char enc[65];
    size_t dec_len = 0, enc_len = 0;
    hush_error err;
    CHECK_OK(decode_str(alphabet, 64, dec, &dec_len, &err), &err);
    CHECK_EQ(dec_len, 48);
    CHECK_OK(hush_base64_encode(dec, dec_len, enc, sizeof enc, &enc_len, &err), &err);
    CHECK(strcmp(enc, alphabet) == 0);
}

/* Every byte value in a data position: accepted exactly when it is in the
 * alphabet, and decoded to its index. */
static void test_every_byte_value(void)
{
    for (int c = 0; c < 256; c++) {
        char in[4] = {'A', 'A', (char)c, 'A'};
        unsigned char out[3];
        size_t out_len = 0;
        hush_error err;
        hush_status s = decode_str(in, 4, out, &out_len, &err);
        const char *pos = c != 0 ? strchr(alphabet, c) : NULL;
        if (pos == NULL) {
            CHECK_EQ(s, HUSH_E_BASE64);
            CHECK_EQ(err.offset, 2);
        } else {
            CHECK_EQ(s, HUSH_OK);
            uint32_t v = (uint32_t)(pos - alphabet);
            CHECK_EQ(out[1], (v >> 2) & 0x0f);
            CHECK_EQ(out[2], (v & 3) << 6);
        }
    }
}

static void test_random_round_trips(void)
{
    for (size_t len = 0; len <= 64; len++) {
        for (int round = 0; round < 8; round++) {
            unsigned char in[64], dec[66]; /* decoded_max(88) is 66 */
            char enc[100], ref[100];
            size_t enc_len = 0, dec_len = 0;
            hush_error err;
            for (size_t i = 0; i < len; i++)
                in[i] = next_byte();
            reference_encode(in, len, ref);
            CHECK_OK(hush_base64_encode(in, len, enc, sizeof enc, &enc_len, &err), &err);
            CHECK(strcmp(enc, ref) == 0);
            CHECK_EQ(enc_len, hush_base64_encoded_len(len));
            CHECK_OK(hush_base64_decode(enc, enc_len, dec, sizeof dec, &dec_len, &err), &err);
            CHECK_EQ(dec_len, len);
            CHECK(memcmp(dec, in, len) == 0);
        }
    }
}

static void test_encode_append(void)
{
    hush_secbuf *buf = NULL;
    hush_error err;
    CHECK_OK(hush_secbuf_new(0, 0, HUSH_SECMEM_NO_LOCK, &buf, &err), &err);
    CHECK_OK(hush_secbuf_append(buf, "x:", 2, &err), &err);
    CHECK_OK(hush_base64_encode_append("foobar", 6, buf, &err), &err);
    CHECK_OK(hush_base64_encode_append("f", 1, buf, &err), &err);
    CHECK_OK(hush_base64_encode_append(NULL, 0, buf, &err), &err);
    CHECK_EQ(hush_secbuf_len(buf), 2 + 8 + 4);
    CHECK(memcmp(hush_secbuf_data(buf), "x:Zm9vYmFyZg==", 14) == 0);

    /* Large enough to make the buffer grow. */
    unsigned char big[10000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = next_byte();
    hush_secbuf_clear(buf);
    CHECK_OK(hush_base64_encode_append(big, sizeof big, buf, &err), &err);
    CHECK_EQ(hush_secbuf_len(buf), hush_base64_encoded_len(sizeof big));
    unsigned char back[sizeof big + 2]; /* decoded_max rounds up to 3 */
    size_t back_len = 0;
    CHECK_OK(hush_base64_decode((const char *)hush_secbuf_data(buf), hush_secbuf_len(buf), back,
                                sizeof back, &back_len, &err),
             &err);
    CHECK_EQ(back_len, sizeof big);
    CHECK(memcmp(back, big, sizeof big) == 0);
    CHECK_STATUS(hush_base64_encode_append("x", 1, NULL, &err), HUSH_E_ARGUMENT, &err);
    hush_secbuf_free(buf);
}

typedef struct bad_case {
    const char *in;
    size_t len;
    int64_t offset;
} bad_case;

#define BAD(s, off) {s, sizeof(s) - 1, off}

static void test_rejects_with_offset(void)
{
    static const bad_case cases[] = {
        BAD("Zm9 Zm9v", 3),        /* space */
        BAD("Zm9vYmF\n", 7),       /* newline */
        BAD("Zm9vYmFy\nZm9", 8),   /* newline, wrong length too: junk first */
        BAD("Zm9vYm\r\n", 6),      /* CR */
        BAD("\tm9v", 0),           /* tab */
        BAD("Zm9-", 3),            /* base64url '-' */
        BAD("_m9v", 0),            /* base64url '_' */
        BAD("Zm==Zm9v", 2),        /* '=' in the middle */
        BAD("Zm9=Zm9v", 3),        /* '=' in the middle */
        BAD("Zm9vZ=9v", 5),        /* '=' in the last group, not at the end */
        BAD("A===", 1),            /* three '=' */
        BAD("====", 0),            /* nothing but padding */
        BAD("AA=A", 2),            /* '=' then data */
        BAD("=AAA", 0),            /* leading '=' */
        BAD("Zm9vY", 5),           /* length 5 */
        BAD("Zm9", 3),             /* length 3 */
        BAD("Z", 1),               /* length 1 */
        BAD("Zm9v=", 5),           /* padding past a full group */
        BAD("Zm9vZm9", 7),         /* length 7 */
        BAD("QR==", 1),            /* unused bits set (two '=') */
        BAD("Zm9=", 2),            /* unused bits set (one '=') */
        BAD("Zm9vQR==", 5),        /* ... in a later group */
        BAD("Zm9\xc3", 3),         /* high-bit bytes */
        BAD("\x80" "AAA", 0),
        BAD("Zm9vZm9\xff", 7),
        BAD("Zm\0v", 2),           /* NUL */
        BAD("Z m-", 1),            /* several faults: the first wins */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char out[16];
        size_t out_len = 12345;
        hush_error err;
        hush_error_clear(&err);
        hush_status s = hush_base64_decode(cases[i].in, cases[i].len, out, sizeof out, &out_len,
                                           &err);
        if (s != HUSH_E_BASE64 || err.offset != cases[i].offset)
            fprintf(stderr, "case %zu: status %d offset %lld (%s)\n", i, (int)s,
                    (long long)err.offset, err.message);
        CHECK_EQ(s, HUSH_E_BASE64);
        CHECK_EQ(err.code, HUSH_E_BASE64);
        CHECK_EQ(err.offset, cases[i].offset);
        CHECK_EQ(out_len, 12345); /* untouched on failure */
    }
}

static void test_canonical_padding_accepted(void)
{
    unsigned char out[8];
    size_t out_len = 0;
    hush_error err;
    CHECK_OK(decode_str("QQ==", 4, out, &out_len, &err), &err);
    CHECK_EQ(out_len, 1);
    CHECK_EQ(out[0], 'A');
    CHECK_OK(decode_str("QUI=", 4, out, &out_len, &err), &err);
    CHECK_EQ(out_len, 2);
    CHECK(memcmp(out, "AB", 2) == 0);
    CHECK_OK(decode_str("", 0, NULL, &out_len, &err), &err);
    CHECK_EQ(out_len, 0);
}

static void test_capacity_and_arguments(void)
{
    hush_error err;
    unsigned char out[8];
    char enc[8];
    size_t n = 0;
    /* "Zm9vYmFy" may decode to up to 6 bytes: 5 is not enough room. */
    CHECK_STATUS(hush_base64_decode("Zm9vYmFy", 8, out, 5, &n, &err), HUSH_E_ARGUMENT, &err);
    CHECK_OK(hush_base64_decode("Zm9vYmFy", 8, out, 6, &n, &err), &err);
    /* "foo" needs 4 characters and a NUL. */
    CHECK_STATUS(hush_base64_encode("foo", 3, enc, 4, &n, &err), HUSH_E_ARGUMENT, &err);
    CHECK_OK(hush_base64_encode("foo", 3, enc, 5, &n, &err), &err);
    CHECK_STATUS(hush_base64_encode(NULL, 3, enc, sizeof enc, &n, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_base64_decode(NULL, 4, out, sizeof out, &n, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_base64_decode("QQ==", 4, out, sizeof out, NULL, &err), HUSH_E_ARGUMENT,
                 &err);
    /* A NULL error pointer is allowed. */
    CHECK_EQ(hush_base64_decode("Q===", 4, out, sizeof out, &n, NULL), HUSH_E_BASE64);
}

static void test_lengths(void)
{
    CHECK_EQ(hush_base64_encoded_len(0), 0);
    CHECK_EQ(hush_base64_encoded_len(1), 4);
    CHECK_EQ(hush_base64_encoded_len(3), 4);
    CHECK_EQ(hush_base64_encoded_len(4), 8);
    CHECK(hush_base64_encoded_len(SIZE_MAX) == SIZE_MAX);
    CHECK(hush_base64_encoded_len(SIZE_MAX / 4 * 3) == SIZE_MAX / 4 * 4);
    CHECK_EQ(hush_base64_decoded_max(0), 0);
    CHECK_EQ(hush_base64_decoded_max(4), 3);
    CHECK_EQ(hush_base64_decoded_max(7), 3);
    CHECK_EQ(hush_base64_decoded_max(8), 6);
}

int main(void)
{
    RUN_TEST(test_rfc4648_vectors);
    RUN_TEST(test_whole_alphabet);
    RUN_TEST(test_every_byte_value);
    RUN_TEST(test_random_round_trips);
    RUN_TEST(test_encode_append);
    RUN_TEST(test_rejects_with_offset);
    RUN_TEST(test_canonical_padding_accepted);
    RUN_TEST(test_capacity_and_arguments);
    RUN_TEST(test_lengths);
    return check_report();
}
