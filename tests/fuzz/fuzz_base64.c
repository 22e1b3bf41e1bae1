/* fuzz_base64.c — libFuzzer target for the strict base64 decoder. Whatever
 * it accepts must be canonical: encoding the result gives back the input
 * byte for byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/base64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t cap = hush_base64_decoded_max(size);
    unsigned char *decoded = malloc(cap + 1);
    char *encoded = malloc(size + 1);
    size_t decoded_len = 0, encoded_len = 0;
    if (decoded == NULL || encoded == NULL)
        abort();
    hush_error err;
    if (hush_base64_decode((const char *)data, size, decoded, cap, &decoded_len, &err) ==
        HUSH_OK) {
        if (decoded_len > cap)
            abort();
        if (hush_base64_encode(decoded, decoded_len, encoded, size + 1, &encoded_len, &err) !=
                HUSH_OK ||
            encoded_len != size || memcmp(encoded, data, size) != 0)
            abort();
    } else if (err.code != HUSH_E_BASE64 || err.offset < 0 || (uint64_t)err.offset > size) {
        abort();
    }
    free(encoded);
    free(decoded);
    return 0;
}
