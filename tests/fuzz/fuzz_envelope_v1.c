/* fuzz_envelope_v1.c — hush_envelope_v1_open on arbitrary bytes. Nothing may
 * crash or over-read, and nothing but a package sealed for the key may open:
 * any success on fuzzed input is a forgery and aborts. */
#include <stdint.h>
#include <stdlib.h>

#include "hushcall/hushcall.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static hush_keypair *recipient;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (recipient == NULL && hush_keypair_generate(2048, &recipient, NULL) != HUSH_OK)
        abort();
    hush_error err;
    hush_envelope_v1_opened opened;
    hush_status s = hush_envelope_v1_open(recipient, data, size, 1 << 16, &opened, &err);
    if (s == HUSH_OK)
        abort();
    if (opened.plaintext != NULL || err.code != s)
        abort();
    return 0;
}
