/* fuzz_hpke_open.c — HPKE SetupBaseR and Open on arbitrary bytes, for a
 * fixed recipient of each KEM. The input is
 *   suite (1 byte) || enc length (2, big endian) || info length (1) ||
 *   enc || info || the ciphertext (the rest)
 * with the suite byte choosing KEM (bit 0), KDF (bit 1) and AEAD (the rest,
 * mod 3). Nothing may crash or over-read; a refusal must be HUSH_E_AUTH (or
 * the export-only suite's HUSH_E_UNSUPPORTED) with no plaintext length,
 * and an authentication failure leaves the plaintext buffer zeroed. The seed corpus holds genuine messages, so an open may
 * succeed, and then its plaintext is exactly ct minus the tag. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/hpke.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The recipients are DeriveKeyPair(32 bytes of 0x42): fixed, so the seed
 * corpus can hold messages sealed to them. */
#define FUZZ_IKM_BYTE 0x42

static hush_hpke_keypair *recipients[2];

static const uint16_t kems[2] = {HUSH_HPKE_KEM_X25519_SHA256, HUSH_HPKE_KEM_XWING};
static const uint16_t kdfs[2] = {HUSH_HPKE_KDF_HKDF_SHA256, HUSH_HPKE_KDF_SHAKE256};
static const uint16_t aeads[3] = {HUSH_HPKE_AEAD_AES_256_GCM, HUSH_HPKE_AEAD_CHACHA20_POLY1305,
                                  HUSH_HPKE_AEAD_EXPORT_ONLY};

static void derive_recipients(void)
{
    unsigned char ikm[32];
    memset(ikm, FUZZ_IKM_BYTE, sizeof ikm);
    for (size_t i = 0; i < 2; i++)
        if (hush_hpke_keypair_derive(kems[i], ikm, sizeof ikm, &recipients[i], NULL) != HUSH_OK)
            abort();
}

static void open_all(hush_hpke_ctx *ctx, const uint8_t *ct, size_t ct_len)
{
    unsigned char *pt = malloc(ct_len + 1);
    size_t pt_len = 1;
    hush_error err;
    if (pt == NULL)
        abort();
    memset(pt, 0xaa, ct_len + 1);
    hush_status s = hush_hpke_open(ctx, NULL, 0, ct, ct_len, pt, ct_len + 1, &pt_len, &err);
    if (s == HUSH_OK) {
        if (ct_len < HUSH_HPKE_TAG_BYTES || pt_len != ct_len - HUSH_HPKE_TAG_BYTES)
            abort();
    } else {
        if ((s != HUSH_E_AUTH && s != HUSH_E_UNSUPPORTED) || err.code != s || pt_len != 0)
            abort();
        for (size_t i = 0; s == HUSH_E_AUTH && i + HUSH_HPKE_TAG_BYTES < ct_len; i++)
            if (pt[i] != 0)
                abort();
    }
    free(pt);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (recipients[0] == NULL)
        derive_recipients();
    if (size < 4)
        return 0;
    const hush_hpke_keypair *recipient = recipients[data[0] & 1];
    hush_hpke_suite suite = {kems[data[0] & 1], kdfs[(data[0] >> 1) & 1], aeads[(data[0] >> 2) % 3]};
    size_t enc_len = (size_t)data[1] << 8 | data[2];
    size_t info_len = data[3];
    data += 4;
    size -= 4;
    if (enc_len > size || info_len > size - enc_len)
        return 0;
    const uint8_t *enc = data, *info = data + enc_len, *ct = info + info_len;
    size_t ct_len = size - enc_len - info_len;

    hush_hpke_ctx *ctx = NULL;
    hush_error err;
    hush_status s = hush_hpke_setup_base_r(suite, recipient, enc, enc_len, info, info_len, &ctx,
                                           &err);
    if (s != HUSH_OK) {
        /* Every KEM input is well formed or refused opaquely. */
        if (s != HUSH_E_AUTH || ctx != NULL || err.code != s)
            abort();
        return 0;
    }
    unsigned char exported[32];
    if (hush_hpke_export(ctx, ct, ct_len < 64 ? ct_len : 64, exported, sizeof exported, &err) !=
        HUSH_OK)
        abort();
    open_all(ctx, ct, ct_len);
    hush_hpke_ctx_free(ctx);
    return 0;
}
