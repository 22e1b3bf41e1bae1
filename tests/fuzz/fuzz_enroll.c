/* fuzz_enroll.c — hush_enrolment_begin on arbitrary server input. The
 * first byte picks what the rest is: 0 the EK certificate (DER), beside a
 * valid AIK; 1 the AIK's TPM2B_PUBLIC, beside a valid EK certificate. The CA
 * and the certificate are fixed test data (an EC CA and an RSA-2048 EK
 * certificate it signed, made once with the openssl command), not a real
 * TPM's. Nothing may crash or over-read; an enrolment begun must carry a
 * well-formed fingerprint and a credential within credential.h's bounds. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "hushcall/hushcall.h"
#include "hushcall/base64.h"
#include "hushcall/enroll.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char CA_PEM[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBojCCAUmgAwIBAgIUDarGX/cIpL/WeAltDBtMET7XgUcwCgYIKoZIzj0EAwIw\n"
    "HjEcMBoGA1UEAwwTaHVzaGNhbGwgZnV6eiBFSyBDQTAgFw0yNjEyMDEyMzI1MDBa\n"
    "GA8yMTI2MTEwNzIzMjUwMFowHjEcMBoGA1UEAwwTaHVzaGNhbGwgZnV6eiBFSyBD\n"
    "QTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABFoRAN3zVFeJmOdc0wJcLP9hKTGW\n"
    "PkgvDSLmXVdRPAWti90CEdH0XyOuktZ07cOhj9nGyU3XwdRbiXV0++5AgamjYzBh\n"
    "MB0GA1UdDgQWBBTNZ9VQ8Ve1KrC6IdUHf1Onnw+ybDAfBgNVHSMEGDAWgBTNZ9VQ\n"
    "8Ve1KrC6IdUHf1Onnw+ybDAPBgNVHRMBAf8EBTADAQH/MA4GA1UdDwEB/wQEAwIC\n"
    "BDAKBggqhkjOPQQDAgNHADBEAiBtHMirG/vEv2EeQDLJv6C37kMTFtOTCmJV3iG1\n"
    "lWhpKgIgbVUl4zo/bKkGHzyNsmRRyK5438QhhNPXep/EXzubNAE=\n"
    "-----END CERTIFICATE-----\n";

/* The EK certificate, DER, base64. */
static const char EK_CERT_B64[] =
    "MIICcjCCAhegAwIBAgIUeLRsIarrWGQ5m2edkRWGeCH+vzAwCgYIKoZIzj0EAwIwHjEcMBoGA1UEAwwTaHVzaGNhbG"
    "wgZnV6eiBFSyBDQTAgFw0yNjEyMDEyMzI1MDFaGA8yMTI2MTEwNzIzMjUwMVowEjEQMA4GA1UEAwwHdW5rbm93bjCC"
    "ASIwDQYJKoZIhvcNAQEBBQADggEPADCCAQoCggEBALbGkDm+OqidfbHGZ+Z2T4cjPROtnzq+2uq74fEscOPNk0GH8l"
    "76ms7cqq+wXKF16Mgoq8FeA/DtFfZgQmNiftIM3waCq3Ll/7XMhcUGVfvn8idVge6xakHF5RFgBpElWSPmhycVLdNq"
    "nzSg57c3Ev4QoScrL+8RLuyqdxZugPFWfekfgQG6EG4VUpyHIRcasoP9RhXcnut36O9w6vALCbNxo9KQkDol1Ku8X1"
    "tfnJcza1+PxbyC1Zrdq3WqrpixJOQUOMMLHi1sGyJOXkFXT4ORDBGdJIiVvH89wF/V6U/QuOcY1UOtvmVWs4+FUJWT"
    "PAmAAcCezD86dcmrimNcR20CAwEAAaNyMHAwDAYDVR0TAQH/BAIwADAOBgNVHQ8BAf8EBAMCBSAwEAYDVR0lBAkwBw"
    "YFZ4EFCAEwHQYDVR0OBBYEFMilnnFCs96yi49W3l6J4FV9osOnMB8GA1UdIwQYMBaAFM1n1VDxV7UqsLoh1Qd/U6ef"
    "D7JsMAoGCCqGSM49BAMCA0kAMEYCIQDpGhKimZL8pNurqyKzSTajtIlQYKms2mEWw9UKSy+t+wIhAOELmp3+NaBXDI"
    "mzkBvIwCOQ8j/7CWRu+458/RwrLWx+";

/* An ECC P-256 restricted signing key of swtpm (fuzz_attest.c's AIK). */
static const char AIK_B64[] =
    "AFgAIwALAAUAcgAAABAAGAALAAMAEAAghIsngh6RuypU05+WIFli6XPeGJXmNsSFAmsDwdzx3qMAINVpjHk4te45eT7"
    "gxa6ZiKD1ttACrqtuEENys8JN/Kw0";

static char ca_file[64];
static unsigned char ek_cert[2048], aik[256];
static size_t ek_cert_len, aik_len;

static void decode(const char *b64, unsigned char *out, size_t cap, size_t *len)
{
    if (hush_base64_decode(b64, strlen(b64), out, cap, len, NULL) != HUSH_OK)
        abort();
}

static void remove_ca_file(void)
{
    unlink(ca_file);
}

/* Once: the CA into a file (enroll.h takes a path), the fixed blobs decoded. */
static void setup(void)
{
    if (ca_file[0] != '\0')
        return;
    char path[] = "/tmp/hush-fuzz-enroll-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, CA_PEM, sizeof CA_PEM - 1) != (ssize_t)(sizeof CA_PEM - 1) ||
        close(fd) != 0)
        abort();
    memcpy(ca_file, path, sizeof path);
    atexit(remove_ca_file);
    decode(EK_CERT_B64, ek_cert, sizeof ek_cert, &ek_cert_len);
    decode(AIK_B64, aik, sizeof aik, &aik_len);
}

static void check(hush_status s, hush_enrolment *e)
{
    if (s != HUSH_OK) {
        if (e != NULL || s == HUSH_E_INTERNAL || s == HUSH_E_ARGUMENT)
            abort();
        return;
    }
    const char *fp = hush_enrolment_aik_fingerprint(e);
    const hush_credential *c = hush_enrolment_credential(e);
    if (fp == NULL || strncmp(fp, "sha256:", 7) != 0 || strlen(fp) != 7 + 64 || c == NULL ||
        c->id_object_len == 0 || c->id_object_len > sizeof c->id_object ||
        c->encrypted_secret_len == 0 || c->encrypted_secret_len > sizeof c->encrypted_secret)
        abort();
    hush_enrolment_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    setup();
    hush_enrolment *e = NULL;
    hush_status s;
    if (data[0] % 2 == 0)
        s = hush_enrolment_begin(data + 1, size - 1, ca_file, aik, aik_len, &e, NULL);
    else
        s = hush_enrolment_begin(ek_cert, ek_cert_len, ca_file, data + 1, size - 1, &e, NULL);
    check(s, e);
    return 0;
}
