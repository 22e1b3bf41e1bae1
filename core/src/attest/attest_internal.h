/* attest_internal.h — what attest.c shares with enroll.c: the AIK
 * fingerprint, so that an enrolled AIK is pinned in exactly the form a
 * quote's verification reports it. */
#ifndef HUSHCALL_ATTEST_INTERNAL_H
#define HUSHCALL_ATTEST_INTERNAL_H

#include <stddef.h>

#include "hushcall/error.h"
#include "hushcall/keys.h"

/* "sha256:" and the lowercase hex SHA-256 of `tpmt_public` (a marshalled
 * TPMT_PUBLIC: a TPM2B_PUBLIC without its size prefix). */
HUSH_MUST_USE
hush_status hush__aik_fingerprint(const unsigned char *tpmt_public, size_t len,
                                  char out[HUSH_FINGERPRINT_LEN], hush_error *err);

#endif
