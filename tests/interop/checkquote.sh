#!/bin/sh
# checkquote.sh — verify a hushcall TPM quote with tpm2-tools' tpm2_checkquote,
# an implementation independent of hushcall's tss2-esys code.
# usage: checkquote.sh AIK_PUB MESSAGE SIGNATURE PCR_VALUES PCR_LIST QUALIFYING_HEX
#   AIK_PUB     marshalled TPM2B_PUBLIC (tpm2-tools' "tss" public format)
#   MESSAGE     the TPMS_ATTEST bytes (the TPM2B_ATTEST without its size)
#   SIGNATURE   marshalled TPMT_SIGNATURE
#   PCR_VALUES  the quoted PCR values concatenated in selection order (as `tpm2_pcrread -o`)
#   PCR_LIST    the selection in tpm2-tools syntax, e.g. "sha256:0,1,2+sha1:7"
# Exits 0 when the signature, the qualifying data and the PCR digest all check.
set -eu
[ $# -eq 6 ] || { echo "usage: $0 AIK_PUB MESSAGE SIGNATURE PCR_VALUES PCR_LIST QUALIFYING_HEX" >&2; exit 2; }
command -v tpm2_checkquote >/dev/null || { echo "checkquote.sh: tpm2_checkquote is missing (tpm2-tools)" >&2; exit 3; }
exec tpm2_checkquote -u "$1" -m "$2" -s "$3" -f "$4" -l "$5" -g sha256 -q "$6" >/dev/null
