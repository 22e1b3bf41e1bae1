/* fuzz_hpke_keyfile.c — the HPKE key file reader on arbitrary text, without
 * a password (so no KDF runs and every input is cheap). The format is
 * strict, so what it accepts is canonical: writing the key back in the
 * clear gives the input byte for byte. A refusal is HUSH_E_KEY (malformed),
 * HUSH_E_PASSWORD (a protected key) or HUSH_E_LIMIT (too large). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/crypto_internal.h"
#include "hushcall/hushcall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hush_error err;
    hush_secbuf *sk = NULL, *text = NULL;
    uint16_t kem_id = 0;
    hush_status status = hush__hpke_keyfile_decode(data, size, NULL, &kem_id, &sk, &err);
    if (status == HUSH_OK) {
        if (hush__hpke_keyfile_encode(kem_id, hush_secbuf_bytes(sk), hush_secbuf_len(sk), NULL,
                                      HUSH_KDF_SCRYPT, &text, &err) != HUSH_OK ||
            hush_secbuf_len(text) != size || memcmp(hush_secbuf_bytes(text), data, size) != 0)
            abort();
    } else if (sk != NULL ||
               (status != HUSH_E_KEY && status != HUSH_E_PASSWORD && status != HUSH_E_LIMIT)) {
        abort();
    }
    hush_secbuf_free(text);
    hush_secbuf_free(sk);
    return 0;
}
