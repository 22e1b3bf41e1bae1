/* test_credential.c — hush_credential_make (TPM2_MakeCredential in
 * software) checked by the party that must accept it: a software TPM
 * (swtpm) activates our credential with TPM2_ActivateCredential (through
 * tpm2-tools) and must give back the secret, as it does for the blob of
 * tpm2-tools' own tpm2_makecredential; tampered blobs, another name and
 * another EK are refused by the TPM. Known answers with a fixed seed come
 * from tests/interop/credential_kat.py, which computes Part 1 §24 on its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "check.h"
#include "peer.h"
#include "swtpm.h"

#include "hushcall/hushcall.h"

#define KAT_SCRIPT HUSH_TEST_INTEROP_DIR "/credential_kat.py"
#define CRED_FILE_MAGIC 0xBADCC0DEu /* tpm2-tools' credential file header */
#define CRED_FILE_VERSION 1u
#define NAME_MAX_BYTES 66u
#define HEX_MAX 1024u

static swtpm tpm_sim;
static char dir[64];
/* The swtpm's two default EKs (RSA-2048 and P-256), as SubjectPublicKeyInfo. */
typedef struct ek_info {
    const char *alg; /* tpm2-tools' -G */
    const char *ctx; /* its context file, in dir */
    const char *pem;
    unsigned char der[1024];
    size_t der_len;
} ek_info;
static ek_info rsa_ek = {"rsa", "ek.ctx", "ek.pem", {0}, 0};
static ek_info ecc_ek = {"ecc", "ekecc.ctx", "ekecc.pem", {0}, 0};
#define ek_der rsa_ek.der
#define ek_der_len rsa_ek.der_len
static unsigned char aik_name[NAME_MAX_BYTES];
static size_t aik_name_len;

/* ---- files and tools ----------------------------------------------------- */

/* A file in the test's directory; a ring of buffers, so that one call's
 * result lives through the next PATH_RING - 1 calls. */
#define PATH_RING 16
static const char *path(const char *name)
{
    static char buf[PATH_RING][128];
    static int next;
    char *p = buf[next++ % PATH_RING];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}



static void hex(const unsigned char *p, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        sprintf(out + 2 * i, "%02x", p[i]);
    out[2 * len] = '\0';
}

/* A tpm2-tools program against our swtpm, quietly; true when it exits 0. */
static bool tool(const char *const argv[])
{
    return run_program(argv) == 0;
}

/* tpm2-tools' credential file: magic, version, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET. */
static bool write_credential(const char *file, const hush_credential *c)
{
    unsigned char buf[8 + sizeof c->id_object + sizeof c->encrypted_secret];
    const unsigned char header[8] = {0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, CRED_FILE_VERSION};
    memcpy(buf, header, 8);
    memcpy(buf + 8, c->id_object, c->id_object_len);
    memcpy(buf + 8 + c->id_object_len, c->encrypted_secret, c->encrypted_secret_len);
    return write_blob_file(file, buf, 8 + c->id_object_len + c->encrypted_secret_len);
}

/* TPM2_ActivateCredential of `cred_file` with the AIK and `ek` (whose
 * policy is PolicySecret(endorsement)); the recovered secret's length, or 0. */
static size_t activate_with(const ek_info *ek, const char *cred_file, unsigned char *out,
                            size_t cap)
{
    const char *start[] = {"tpm2_startauthsession", "-T", tpm_sim.tcti, "--policy-session",
                           "-S", path("session.ctx"), NULL};
    const char *policy[] = {"tpm2_policysecret", "-Q", "-T", tpm_sim.tcti, "-S",
                            path("session.ctx"), "-c", "e", NULL};
    char auth[160];
    snprintf(auth, sizeof auth, "session:%s", path("session.ctx"));
    const char *act[] = {"tpm2_activatecredential", "-Q", "-T", tpm_sim.tcti, "-c", path("ak.ctx"),
                         "-C", path(ek->ctx), "-i", cred_file, "-o", path("recovered"),
                         "-P", auth, NULL};
    const char *flush_sessions[] = {"tpm2_flushcontext", "-T", tpm_sim.tcti, "-s", NULL};
    const char *flush_objects[] = {"tpm2_flushcontext", "-T", tpm_sim.tcti, "-t", NULL};
    remove(path("recovered"));
    bool ok = tool(start) && tool(policy) && tool(act);
    /* A refused activation leaves its session, the EK and the AIK loaded. */
    ok = tool(flush_sessions) && tool(flush_objects) && ok;
    return ok ? read_blob_file(path("recovered"), out, cap) : 0;
}

static size_t activate(const char *cred_file, unsigned char *out, size_t cap)
{
    return activate_with(&rsa_ek, cred_file, out, cap);
}

/* ---- setup: the swtpm's EK and an AIK under it ---------------------------- */

static bool ek_pem_to_der(ek_info *ek)
{
    FILE *f = fopen(path(ek->pem), "r");
    if (f == NULL)
        return false;
    EVP_PKEY *pkey = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    unsigned char *p = ek->der;
    int len = pkey != NULL && i2d_PUBKEY(pkey, NULL) <= (int)sizeof ek->der
                  ? i2d_PUBKEY(pkey, &p)
                  : -1;
    EVP_PKEY_free(pkey);
    ek->der_len = len > 0 ? (size_t)len : 0;
    return len > 0;
}

static bool make_ek(ek_info *ek)
{
    const char *create[] = {"tpm2_createek", "-T", tpm_sim.tcti, "-G", ek->alg, "-c",
                            path(ek->ctx), "-u", path(ek->pem), "-f", "pem", NULL};
    const char *flush_objects[] = {"tpm2_flushcontext", "-T", tpm_sim.tcti, "-t", NULL};
    return tool(create) && tool(flush_objects) && ek_pem_to_der(ek);
}

static bool make_ek_and_aik(void)
{
    if (!make_ek(&rsa_ek) || !make_ek(&ecc_ek))
        return false;
    const char *ak[] = {"tpm2_createak", "-Q", "-T", tpm_sim.tcti, "-C", path("ek.ctx"), "-c",
                        path("ak.ctx"), "-n", path("ak.name"), "-u", path("ak.pub"), NULL};
    /* swtpm has no resource manager: the tools' objects stay loaded unless flushed. */
    const char *flush_objects[] = {"tpm2_flushcontext", "-T", tpm_sim.tcti, "-t", NULL};
    const char *flush_sessions[] = {"tpm2_flushcontext", "-T", tpm_sim.tcti, "-s", NULL};
    if (!tool(ak) || !tool(flush_objects) || !tool(flush_sessions))
        return false;
    aik_name_len = read_blob_file(path("ak.name"), aik_name, sizeof aik_name);
    return aik_name_len == 34;
}

/* ---- activation by the TPM ------------------------------------------------ */

static void check_activates(const ek_info *ek, size_t secret_len)
{
    hush_error err = {0};
    hush_credential cred;
    unsigned char secret[HUSH_CREDENTIAL_SECRET_MAX], recovered[64];
    CHECK(RAND_bytes(secret, (int)secret_len) == 1);
    CHECK_OK(hush_credential_make(ek->der, ek->der_len, aik_name, aik_name_len, secret,
                                         secret_len, &cred, &err), &err);
    CHECK_EQ(cred.id_object_len, 2u + 2u + 32u + 2u + secret_len);
    /* RSA: the OAEP ciphertext; P-256: a TPMS_ECC_POINT of two 32-byte TPM2Bs. */
    CHECK_EQ(cred.encrypted_secret_len, ek == &rsa_ek ? 2u + 256u : 2u + 2u * (2u + 32u));
    CHECK(write_credential(path("ours.cred"), &cred));
    size_t n = activate_with(ek, path("ours.cred"), recovered, sizeof recovered);
    CHECK_EQ(n, secret_len);
    CHECK(n == secret_len && memcmp(recovered, secret, secret_len) == 0);
}

static void test_ours_activates(void)
{
    check_activates(&rsa_ek, 32);
    check_activates(&rsa_ek, 16);
    check_activates(&rsa_ek, 1);
}

static void test_ours_activates_ecc(void)
{
    check_activates(&ecc_ek, 32);
    check_activates(&ecc_ek, 5);
}

static size_t be16(const unsigned char *p)
{
    return (size_t)p[0] << 8 | p[1];
}

/* tpm2-tools' blob goes through the same harness, and has our layout. */
static void check_tools_blob_activates(const ek_info *ek)
{
    unsigned char secret[32], recovered[64], blob[1024];
    char name_hex[2 * NAME_MAX_BYTES + 1];
    CHECK(RAND_bytes(secret, sizeof secret) == 1);
    CHECK(write_blob_file(path("secret"), secret, sizeof secret));
    hex(aik_name, aik_name_len, name_hex);
    const char *make[] = {"tpm2_makecredential", "-Q", "-T", "none", "-G", ek->alg, "-u",
                          path(ek->pem), "-s", path("secret"), "-n", name_hex, "-o",
                          path("tools.cred"), NULL};
    CHECK(tool(make));
    size_t n = activate_with(ek, path("tools.cred"), recovered, sizeof recovered);
    CHECK(n == sizeof secret && memcmp(recovered, secret, sizeof secret) == 0);

    hush_error err = {0};
    hush_credential cred;
    CHECK_OK(hush_credential_make(ek->der, ek->der_len, aik_name, aik_name_len, secret,
                                         sizeof secret, &cred, &err), &err);
    size_t len = read_blob_file(path("tools.cred"), blob, sizeof blob);
    CHECK(len > 12 + cred.id_object_len && memcmp(blob + 8, cred.id_object, 4) == 0);
    if (len <= 12 + cred.id_object_len)
        return;
    const unsigned char *secret_blob = blob + 8 + cred.id_object_len;
    size_t secret_blob_len = len - 8 - cred.id_object_len;
    if (ek == &rsa_ek) {
        CHECK_EQ(secret_blob_len, cred.encrypted_secret_len);
        CHECK(memcmp(secret_blob, cred.encrypted_secret, 2) == 0);
        return;
    }
    /* tpm2-tools writes each coordinate of its ephemeral point without leading
     * zero bytes (one run in 128 has a 31-byte one); we always write 32, which
     * the TPM takes just the same. So compare the structure, not the length. */
    size_t point_len = be16(secret_blob), x_len = be16(secret_blob + 2);
    CHECK_EQ(point_len + 2, secret_blob_len);
    CHECK(x_len >= 1 && x_len <= 32 && 6 + x_len <= secret_blob_len);
    if (x_len > 32 || 6 + x_len > secret_blob_len)
        return;
    size_t y_len = be16(secret_blob + 4 + x_len);
    CHECK(y_len >= 1 && y_len <= 32);
    CHECK_EQ(point_len, 2 + x_len + 2 + y_len);
}

static void test_tpm2_tools_blob_activates(void)
{
    check_tools_blob_activates(&rsa_ek);
    check_tools_blob_activates(&ecc_ek);
}

/* One byte flipped at `offset` of the id object (or, past it, of the
 * encrypted secret): the TPM must refuse it. */
static void check_tampered_refused(const ek_info *ek, size_t offset)
{
    hush_error err = {0};
    hush_credential cred;
    unsigned char secret[32] = {1}, recovered[64];
    CHECK_OK(hush_credential_make(ek->der, ek->der_len, aik_name, aik_name_len, secret,
                                         sizeof secret, &cred, &err), &err);
    if (offset < cred.id_object_len)
        cred.id_object[offset] ^= 0x01;
    else
        cred.encrypted_secret[offset - cred.id_object_len] ^= 0x01;
    CHECK(write_credential(path("tampered.cred"), &cred));
    CHECK_EQ(activate_with(ek, path("tampered.cred"), recovered, sizeof recovered), (size_t)0);
}

static void test_tampered_refused(void)
{
    const ek_info *eks[] = {&rsa_ek, &ecc_ek};
    for (size_t i = 0; i < 2; i++) {
        check_tampered_refused(eks[i], 4);          /* the integrity HMAC */
        check_tampered_refused(eks[i], 4 + 32 + 2); /* encIdentity */
        check_tampered_refused(eks[i], 70 + 2 + 20); /* the encrypted seed, or the point */
    }
}

static void check_wrong_name_refused(const ek_info *ek)
{
    hush_error err = {0};
    hush_credential cred;
    unsigned char secret[32] = {2}, recovered[64], other[NAME_MAX_BYTES];
    memcpy(other, aik_name, aik_name_len);
    other[aik_name_len - 1] ^= 0x80;
    CHECK_OK(hush_credential_make(ek->der, ek->der_len, other, aik_name_len, secret,
                                         sizeof secret, &cred, &err), &err);
    CHECK(write_credential(path("other_name.cred"), &cred));
    CHECK_EQ(activate_with(ek, path("other_name.cred"), recovered, sizeof recovered), (size_t)0);
}

static void test_wrong_name_refused(void)
{
    check_wrong_name_refused(&rsa_ek);
    check_wrong_name_refused(&ecc_ek);
}

static EVP_PKEY *rsa_key(unsigned bits)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
}

static size_t spki_der(EVP_PKEY *pkey, unsigned char *buf, size_t cap)
{
    unsigned char *p = buf;
    int len = pkey != NULL && i2d_PUBKEY(pkey, NULL) <= (int)cap ? i2d_PUBKEY(pkey, &p) : -1;
    return len > 0 ? (size_t)len : 0;
}

static void test_wrong_ek_refused(void)
{
    hush_error err = {0};
    hush_credential cred;
    unsigned char secret[32] = {3}, recovered[64], der[1024];
    EVP_PKEY *other = rsa_key(2048);
    size_t der_len = spki_der(other, der, sizeof der);
    CHECK(der_len > 0);
    CHECK_OK(hush_credential_make(der, der_len, aik_name, aik_name_len, secret,
                                         sizeof secret, &cred, &err), &err);
    CHECK(write_credential(path("other_ek.cred"), &cred));
    CHECK_EQ(activate(path("other_ek.cred"), recovered, sizeof recovered), (size_t)0);
    EVP_PKEY_free(other);

    other = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    der_len = spki_der(other, der, sizeof der);
    CHECK(der_len > 0);
    CHECK_OK(hush_credential_make(der, der_len, aik_name, aik_name_len, secret,
                                         sizeof secret, &cred, &err), &err);
    CHECK(write_credential(path("other_ek.cred"), &cred));
    CHECK_EQ(activate_with(&ecc_ek, path("other_ek.cred"), recovered, sizeof recovered),
             (size_t)0);
    EVP_PKEY_free(other);
}

/* ---- refusals before any cryptography ------------------------------------- */

static void check_refused(const void *ek, size_t ek_len, const void *name, size_t name_len,
                          size_t secret_len, hush_status expected)
{
    hush_error err = {0};
    hush_credential cred;
    unsigned char secret[64] = {4};
    memset(&cred, 0xAA, sizeof cred);
    CHECK_STATUS(hush_credential_make(ek, ek_len, name, name_len, secret, secret_len, &cred,
                                             &err), expected, &err);
    CHECK(cred.id_object_len == 0 && cred.encrypted_secret_len == 0 && cred.id_object[0] == 0);
}

static void test_bad_arguments(void)
{
    hush_error err = {0};
    hush_credential cred;
    unsigned char der[2048], name[NAME_MAX_BYTES];
    memcpy(name, aik_name, aik_name_len);

    check_refused(ek_der, ek_der_len, aik_name, aik_name_len, 0, HUSH_E_ARGUMENT);
    check_refused(ek_der, ek_der_len, aik_name, aik_name_len, 33, HUSH_E_ARGUMENT);
    check_refused(ek_der, ek_der_len, aik_name, aik_name_len - 1, 32, HUSH_E_FORMAT);
    check_refused(ek_der, ek_der_len, aik_name, 1, 32, HUSH_E_FORMAT);
    name[1] = 0x99; /* no such hash algorithm */
    check_refused(ek_der, ek_der_len, name, aik_name_len, 32, HUSH_E_FORMAT);
    name[1] = 0x04; /* SHA-1: a name of 22 bytes, not 34 */
    check_refused(ek_der, ek_der_len, name, aik_name_len, 32, HUSH_E_FORMAT);

    check_refused(ek_der, ek_der_len - 1, aik_name, aik_name_len, 32, HUSH_E_KEY);
    memcpy(der, ek_der, ek_der_len);
    der[ek_der_len] = 0;
    check_refused(der, ek_der_len + 1, aik_name, aik_name_len, 32, HUSH_E_KEY); /* trailing */
    check_refused("not a key", 9, aik_name, aik_name_len, 32, HUSH_E_KEY);
    EVP_PKEY *big = rsa_key(3072);
    check_refused(der, spki_der(big, der, sizeof der), aik_name, aik_name_len, 32, HUSH_E_KEY);
    EVP_PKEY_free(big);
    EVP_PKEY *ec = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
    check_refused(der, spki_der(ec, der, sizeof der), aik_name, aik_name_len, 32, HUSH_E_KEY);
    EVP_PKEY_free(ec);

    CHECK_STATUS(hush_credential_make(NULL, 0, aik_name, aik_name_len, "s", 1, &cred, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_credential_make(ek_der, ek_der_len, NULL, 0, "s", 1, &cred, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_credential_make(ek_der, ek_der_len, aik_name, aik_name_len, NULL, 1,
                                             &cred, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_credential_make(ek_der, ek_der_len, aik_name, aik_name_len, "s", 1,
                                             NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_credential_make_derand(ek_der, ek_der_len, aik_name, aik_name_len,
                                                    "s", 1, NULL, &cred, &err),
                 HUSH_E_ARGUMENT, &err);
    unsigned char seed[HUSH_CREDENTIAL_SEED_BYTES] = {0};
    CHECK_STATUS(hush_credential_make_derand(ecc_ek.der, ecc_ek.der_len, aik_name,
                                                    aik_name_len, "s", 1, seed, &cred, &err),
                 HUSH_E_ARGUMENT, &err);
    /* Still usable after every refusal. */
    CHECK_OK(hush_credential_make(ek_der, ek_der_len, aik_name, aik_name_len, "s", 1,
                                         &cred, &err), &err);
}

/* ---- known answers from an independent computation ------------------------ */

/* Run credential_kat.py: it recomputes the id object from the seed and
 * decrypts the encrypted secret with the private key; "ok" when both match. */
static bool kat_agrees(const char *key_pem, const unsigned char *seed, const unsigned char *name,
                       size_t name_len, const unsigned char *secret, size_t secret_len,
                       const hush_credential *cred)
{
    char seed_hex[65], name_hex[2 * NAME_MAX_BYTES + 1], secret_hex[65];
    char id_hex[2 * HUSH_CREDENTIAL_ID_OBJECT_MAX + 1];
    char enc_hex[2 * HUSH_CREDENTIAL_ENCRYPTED_SECRET_MAX + 1], cmd[HEX_MAX * 3], line[64] = "";
    hex(seed, HUSH_CREDENTIAL_SEED_BYTES, seed_hex);
    hex(name, name_len, name_hex);
    hex(secret, secret_len, secret_hex);
    hex(cred->id_object, cred->id_object_len, id_hex);
    hex(cred->encrypted_secret, cred->encrypted_secret_len, enc_hex);
    snprintf(cmd, sizeof cmd, "%s %s %s %s %s %s %s %s", HUSH_TEST_PYTHON, KAT_SCRIPT, key_pem,
             seed_hex, name_hex, secret_hex, id_hex, enc_hex);
    FILE *p = popen(cmd, "r");
    if (p == NULL)
        return false;
    if (fgets(line, sizeof line, p) == NULL)
        line[0] = '\0';
    int rc = pclose(p);
    return rc == 0 && strcmp(line, "ok\n") == 0;
}

static void test_known_answers(void)
{
    hush_error err = {0};
    hush_credential cred;
    unsigned char seed[HUSH_CREDENTIAL_SEED_BYTES], der[1024], secret[32];
    EVP_PKEY *key = rsa_key(2048);
    size_t der_len = spki_der(key, der, sizeof der);
    FILE *f = fopen(path("kat_key.pem"), "w");
    CHECK(f != NULL && PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL) == 1);
    if (f != NULL)
        fclose(f);
    for (size_t i = 0; i < sizeof seed; i++)
        seed[i] = (unsigned char)(0xA0 + i);
    for (size_t i = 0; i < sizeof secret; i++)
        secret[i] = (unsigned char)i;
    const size_t lengths[] = {32, 20, 1};
    for (size_t i = 0; i < 3; i++) {
        CHECK_OK(hush_credential_make_derand(der, der_len, aik_name, aik_name_len, secret,
                                                    lengths[i], seed, &cred, &err), &err);
        CHECK(kat_agrees(path("kat_key.pem"), seed, aik_name, aik_name_len, secret, lengths[i],
                         &cred));
    }
    /* A SHA-1 name of another AIK: the name enters both the key and the HMAC. */
    unsigned char sha1_name[22] = {0x00, 0x04};
    memset(sha1_name + 2, 0x5A, 20);
    CHECK_OK(hush_credential_make_derand(der, der_len, sha1_name, sizeof sha1_name, secret,
                                                32, seed, &cred, &err), &err);
    CHECK(kat_agrees(path("kat_key.pem"), seed, sha1_name, sizeof sha1_name, secret, 32, &cred));
    /* A wrong answer is noticed: the checker is not a rubber stamp. */
    cred.id_object[10] ^= 1;
    CHECK(!kat_agrees(path("kat_key.pem"), seed, sha1_name, sizeof sha1_name, secret, 32, &cred));
    EVP_PKEY_free(key);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/hush-credential-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if (!swtpm_start(&tpm_sim)) {
        fprintf(stderr, "FAIL: no software TPM, so nothing could be tested\n");
        remove_tree(dir);
        return 1;
    }
    if (!make_ek_and_aik()) {
        fprintf(stderr, "FAIL: no EK or AIK from tpm2_createek/tpm2_createak (tpm2-tools)\n");
        check_tests_failed++;
    } else {
        RUN_TEST(test_ours_activates);
        RUN_TEST(test_ours_activates_ecc);
        RUN_TEST(test_tpm2_tools_blob_activates);
        RUN_TEST(test_tampered_refused);
        RUN_TEST(test_wrong_name_refused);
        RUN_TEST(test_wrong_ek_refused);
        RUN_TEST(test_bad_arguments);
        RUN_TEST(test_known_answers);
    }
    swtpm_stop(&tpm_sim);
    remove_tree(dir);
    return check_report();
}
