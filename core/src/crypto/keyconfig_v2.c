/* keyconfig_v2.c — protocol v2's public bytes: RFC 9458 key configs (one
 * bare, or the length-prefixed list), the 7-byte hdr and the strict hex of
 * the header values. Parsers read through the bounds-checked reader and
 * name the field that is wrong, never its content. */
#include <stdlib.h>
#include <string.h>

#include "hushcall/envelope_v2.h"
#include "internal.h"
#include "crypto/crypto_internal.h"

#define MAX_CONFIG_BYTES 65535u /* a list entry's 2-byte length */

static void put_u16(unsigned char out[2], uint16_t value)
{
    out[0] = (unsigned char)(value >> 8);
    out[1] = (unsigned char)value;
}

static bool read_u16(hush_reader *r, uint16_t *out)
{
    const unsigned char *p;
    if (!hush_reader_take(r, 2, &p))
        return false;
    *out = (uint16_t)((p[0] << 8) | p[1]);
    return true;
}

/* The ciphers v2 runs: HKDF-SHA256 with either AEAD (export-only has no body). */
static bool cipher_usable(hush_v2_cipher c)
{
    return c.kdf_id == HUSH_HPKE_KDF_HKDF_SHA256 &&
           (c.aead_id == HUSH_HPKE_AEAD_AES_256_GCM ||
            c.aead_id == HUSH_HPKE_AEAD_CHACHA20_POLY1305);
}

static bool kem_known(uint16_t kem_id)
{
    return kem_id == HUSH_HPKE_KEM_X25519_SHA256 || kem_id == HUSH_HPKE_KEM_XWING;
}

/* ---- encoding ------------------------------------------------------------- */

hush_status hush_v2_keyconfig_encode(const hush_v2_keyconfig *cfg, hush_secbuf *out,
                                     hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char head[3], u16[2];
    const unsigned char *pk;
    size_t pk_len = 0;

    HUSH_ENSURE(cfg != NULL && cfg->pubkey != NULL && out != NULL, HUSH_E_ARGUMENT,
                "hush_v2_keyconfig_encode: NULL argument");
    HUSH_ENSURE(cfg->n_ciphers > 0 && cfg->n_ciphers <= HUSH_V2_MAX_SUITES, HUSH_E_ARGUMENT,
                "key config: %zu cipher suites (1 to %u)", cfg->n_ciphers, HUSH_V2_MAX_SUITES);
    pk = hush_hpke_pubkey_bytes(cfg->pubkey, &pk_len);
    head[0] = cfg->key_id;
    put_u16(head + 1, hush_hpke_pubkey_kem(cfg->pubkey));
    HUSH_TRY(hush_secbuf_append(out, head, sizeof head, err));
    HUSH_TRY(hush_secbuf_append(out, pk, pk_len, err));
    put_u16(u16, (uint16_t)(4 * cfg->n_ciphers));
    HUSH_TRY(hush_secbuf_append(out, u16, sizeof u16, err));
    for (size_t i = 0; i < cfg->n_ciphers; i++) {
        put_u16(u16, cfg->ciphers[i].kdf_id);
        HUSH_TRY(hush_secbuf_append(out, u16, sizeof u16, err));
        put_u16(u16, cfg->ciphers[i].aead_id);
        HUSH_TRY(hush_secbuf_append(out, u16, sizeof u16, err));
    }
cleanup:
    return status;
}

hush_status hush_v2_keyconfigs_encode(const hush_v2_keyconfig *cfgs, size_t count,
                                      hush_secbuf *out, hush_error *err)
{
    hush_status status = HUSH_OK;
    unsigned char prefix[2];

    HUSH_ENSURE(out != NULL && (cfgs != NULL || count == 0), HUSH_E_ARGUMENT,
                "hush_v2_keyconfigs_encode: NULL argument");
    for (size_t i = 0; i < count; i++) {
        size_t start = hush_secbuf_len(out);
        /* Written in place, then its length goes in front. */
        HUSH_TRY(hush_secbuf_append(out, "\0\0", 2, err));
        HUSH_TRY(hush_v2_keyconfig_encode(&cfgs[i], out, err));
        size_t len = hush_secbuf_len(out) - start - 2;
        HUSH_ENSURE(len <= MAX_CONFIG_BYTES, HUSH_E_LIMIT, "key config %zu too long", i);
        put_u16(prefix, (uint16_t)len);
        memcpy(hush_secbuf_data(out) + start, prefix, sizeof prefix);
    }
cleanup:
    return status;
}

/* ---- parsing -------------------------------------------------------------- */

typedef enum config_verdict { CONFIG_OK, CONFIG_UNKNOWN } config_verdict;

/* The suites after the public key: a non-empty, even-sized list of
 * (kdf, aead); only the usable ones are kept. */
HUSH_MUST_USE
static hush_status parse_ciphers(hush_reader *r, size_t base, hush_v2_keyconfig *cfg,
                                 hush_error *err)
{
    hush_status status = HUSH_OK;
    uint16_t list_len = 0;
    hush_v2_cipher c;

    if (!read_u16(r, &list_len))
        HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base + r->pos,
                                     "key config: truncated cipher suite length"));
    if (list_len == 0 || list_len % 4 != 0)
        HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base + r->pos,
                                     "key config: cipher suite list of %u bytes (a non-empty "
                                     "multiple of 4)", list_len));
    if (hush_reader_left(r) < list_len)
        HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base + r->pos,
                                     "key config: truncated cipher suites"));
    for (size_t i = 0; i < list_len / 4u; i++) {
        HUSH_ENSURE(read_u16(r, &c.kdf_id) && read_u16(r, &c.aead_id), HUSH_E_INTERNAL,
                    "key config: suite reader");
        if (cipher_usable(c) && cfg->n_ciphers < HUSH_V2_MAX_SUITES)
            cfg->ciphers[cfg->n_ciphers++] = c;
    }
cleanup:
    return status;
}

/* One config occupying all of `r`'s bytes. CONFIG_UNKNOWN (HUSH_OK, nothing
 * kept) for an unknown KEM or one without a usable suite. */
HUSH_MUST_USE
static hush_status parse_config(hush_reader *r, size_t base, hush_v2_keyconfig *cfg,
                                config_verdict *verdict, hush_error *err)
{
    hush_status status = HUSH_OK;
    int key_id = hush_reader_next(r);
    uint16_t kem_id = 0;
    const unsigned char *pk;
    size_t npk;

    memset(cfg, 0, sizeof *cfg);
    *verdict = CONFIG_UNKNOWN;
    if (key_id < 0 || !read_u16(r, &kem_id))
        HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base + r->pos,
                                     "key config: truncated key id or KEM id"));
    if (!kem_known(kem_id))
        goto cleanup; /* its Npk is unknown: the rest cannot be read */
    npk = hush_hpke_kem_public_key_bytes(kem_id);
    if (!hush_reader_take(r, npk, &pk))
        HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base + r->pos,
                                     "key config: public key shorter than the KEM's %zu bytes",
                                     npk));
    cfg->key_id = (uint8_t)key_id;
    HUSH_TRY(parse_ciphers(r, base, cfg, err));
    if (!hush_reader_done(r))
        HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base + r->pos,
                                     "key config: %zu trailing bytes (or a public key of the "
                                     "wrong length)", hush_reader_left(r)));
    if (cfg->n_ciphers == 0)
        goto cleanup;
    if (hush_hpke_pubkey_from_bytes(kem_id, pk, npk, &cfg->pubkey, err) != HUSH_OK)
        HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base + 3,
                                     "key config: the public key is not a valid key for its KEM"));
    *verdict = CONFIG_OK;
cleanup:
    if (status != HUSH_OK || *verdict != CONFIG_OK)
        hush_v2_keyconfig_clear(cfg);
    return status;
}

hush_status hush_v2_keyconfig_parse(const void *data, size_t len, hush_v2_keyconfig *out,
                                    hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_reader r;
    config_verdict verdict = CONFIG_UNKNOWN;

    HUSH_ENSURE(out != NULL && (data != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_v2_keyconfig_parse: NULL argument");
    memset(out, 0, sizeof *out);
    HUSH_TRY(hush__init(err));
    hush_reader_init(&r, data, len);
    HUSH_TRY(parse_config(&r, 0, out, &verdict, err));
    HUSH_ENSURE(verdict == CONFIG_OK, HUSH_E_UNSUPPORTED,
                "key config: no KEM and cipher suite hushcall speaks");
cleanup:
    return status;
}

hush_status hush_v2_keyconfigs_parse(const void *data, size_t len, hush_v2_keyconfig **out,
                                     size_t *count, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_reader r, one;
    hush_v2_keyconfig *cfgs = NULL;
    size_t n = 0;
    uint16_t entry_len = 0;
    const unsigned char *entry;
    config_verdict verdict;

    HUSH_ENSURE(out != NULL && count != NULL && (data != NULL || len == 0), HUSH_E_ARGUMENT,
                "hush_v2_keyconfigs_parse: NULL argument");
    *out = NULL;
    *count = 0;
    HUSH_TRY(hush__init(err));
    /* At most one config per 2 + 3 + 32 + 2 + 4 bytes. */
    cfgs = calloc(len / 43 + 1, sizeof *cfgs);
    HUSH_ENSURE(cfgs != NULL, HUSH_E_NOMEM, "out of memory for key configs");
    hush_reader_init(&r, data, len);
    while (!hush_reader_done(&r)) {
        size_t base = r.pos;
        if (!read_u16(&r, &entry_len) || !hush_reader_take(&r, entry_len, &entry))
            HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, base,
                                         "key config list: truncated entry"));
        hush_reader_init(&one, entry, entry_len);
        HUSH_TRY(parse_config(&one, base + 2, &cfgs[n], &verdict, err));
        if (verdict == CONFIG_OK)
            n++;
    }
    if (n > 0) {
        *out = cfgs;
        *count = n;
        cfgs = NULL;
    }
cleanup:
    hush_v2_keyconfigs_free(cfgs, n);
    return status;
}

void hush_v2_keyconfig_clear(hush_v2_keyconfig *cfg)
{
    if (cfg == NULL)
        return;
    hush_hpke_pubkey_free(cfg->pubkey);
    memset(cfg, 0, sizeof *cfg);
}

void hush_v2_keyconfigs_free(hush_v2_keyconfig *cfgs, size_t count)
{
    if (cfgs == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        hush_v2_keyconfig_clear(&cfgs[i]);
    free(cfgs);
}

/* ---- hdr and header values -------------------------------------------------- */

void hush_v2_hdr_encode(uint8_t key_id, hush_hpke_suite suite,
                        unsigned char out[HUSH_V2_HDR_BYTES])
{
    out[0] = key_id;
    put_u16(out + 1, suite.kem_id);
    put_u16(out + 3, suite.kdf_id);
    put_u16(out + 5, suite.aead_id);
}

void hush_v2_hdr_decode(const unsigned char hdr[HUSH_V2_HDR_BYTES], uint8_t *key_id,
                        hush_hpke_suite *suite)
{
    *key_id = hdr[0];
    suite->kem_id = (uint16_t)((hdr[1] << 8) | hdr[2]);
    suite->kdf_id = (uint16_t)((hdr[3] << 8) | hdr[4]);
    suite->aead_id = (uint16_t)((hdr[5] << 8) | hdr[6]);
}

void hush_v2_hex_format(const void *data, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * len] = '\0';
}

static int lower_hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Exactly 2*len lowercase hex digits into `out`. */
HUSH_MUST_USE
static hush_status parse_hex_exact(const char *what, const char *text, size_t text_len,
                                   unsigned char *out, size_t len, hush_error *err)
{
    hush_status status = HUSH_OK;

    HUSH_ENSURE(text != NULL || text_len == 0, HUSH_E_ARGUMENT, "%s: NULL value", what);
    HUSH_ENSURE(text_len == 2 * len, HUSH_E_FORMAT, "%s: %zu hex digits, expected %zu", what,
                text_len, 2 * len);
    for (size_t i = 0; i < len; i++) {
        int hi = lower_hex_digit(text[2 * i]), lo = lower_hex_digit(text[2 * i + 1]);
        if (hi < 0 || lo < 0)
            HUSH_BAIL_WITH(hush__fail_at(err, HUSH_E_FORMAT, 2 * i,
                                         "%s: not lowercase hex", what));
        out[i] = (unsigned char)(hi << 4 | lo);
    }
cleanup:
    return status;
}

hush_status hush_v2_hdr_parse_hex(const char *text, size_t len,
                                  unsigned char hdr[HUSH_V2_HDR_BYTES], hush_error *err)
{
    return parse_hex_exact("Hushcall-Key-Config", text, len, hdr, HUSH_V2_HDR_BYTES, err);
}

hush_status hush_v2_enc_parse_hex(uint16_t kem_id, const char *text, size_t len,
                                  unsigned char *enc, size_t *enc_len, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t n = hush_hpke_kem_enc_bytes(kem_id);

    HUSH_ENSURE(enc != NULL && enc_len != NULL, HUSH_E_ARGUMENT,
                "hush_v2_enc_parse_hex: NULL argument");
    *enc_len = 0;
    HUSH_ENSURE(n > 0, HUSH_E_UNSUPPORTED, "Ehbp-Encapsulated-Key: KEM 0x%04x unknown", kem_id);
    HUSH_TRY(parse_hex_exact("Ehbp-Encapsulated-Key", text, len, enc, n, err));
    *enc_len = n;
cleanup:
    return status;
}

hush_status hush_v2_nonce_parse_hex(const char *text, size_t len,
                                    unsigned char nonce[HUSH_V2_RESPONSE_NONCE_BYTES],
                                    hush_error *err)
{
    return parse_hex_exact("Ehbp-Response-Nonce", text, len, nonce,
                           HUSH_V2_RESPONSE_NONCE_BYTES, err);
}
