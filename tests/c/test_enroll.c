/* test_enroll.c — enrolment (enroll.h) against software TPMs manufactured
 * as a vendor would: swtpm_setup with swtpm_localca's CA writes an EK
 * certificate into the TPM's NV. The AIK is made by tpm2-tools'
 * tpm2_createak and our credential is activated by tpm2_activatecredential,
 * so the loop is closed by implementations other than ours. Refused: other
 * CAs, a sibling intermediate, junk, weak keys (made with tpm2_create -a),
 * the AIK of another TPM, tampered credentials, wrong and second finishes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "check.h"
#include "peer.h"
#include "swtpm.h"

#include "hushcall/hushcall.h"

#define BLOB_MAX 4096u
#define SECRET_BYTES 32u
#define CRED_FILE_VERSION 1u
#define AIK_ATTRIBUTES "fixedtpm|fixedparent|sensitivedataorigin|userwithauth|restricted|sign"

static char dir[64];

/* A local EK CA (swtpm_localca): its directory, and after the first TPM it
 * signed, `file`, root then intermediate, the PEM a client trusts. */
typedef struct ek_ca {
    const char *name;
    char file[128];
} ek_ca;
static ek_ca ca_good = {"ca-good", {0}};
static ek_ca ca_other = {"ca-other", {0}};

/* A manufactured TPM, its EK certificate (RSA-2048, NV 0x01C00002) and an
 * AIK tpm2_createak made under its EK. Files are prefixed with `name`. */
typedef struct tpm {
    const char *name;
    swtpm sim;
    unsigned char ek_cert[BLOB_MAX];
    size_t ek_cert_len;
    unsigned char aik_public[BLOB_MAX];
    size_t aik_public_len;
} tpm;
static tpm tpm_a = {.name = "a"};
static tpm tpm_b = {.name = "b"};

/* ---- files and tools ----------------------------------------------------- */

#define PATH_RING 16
static const char *path(const char *name)
{
    static char buf[PATH_RING][160];
    static int next;
    char *p = buf[next++ % PATH_RING];
    snprintf(p, sizeof buf[0], "%s/%s", dir, name);
    return p;
}

/* A file of `t` ("a-ek.ctx"). */
static const char *tpm_path(const tpm *t, const char *name)
{
    char file[64];
    snprintf(file, sizeof file, "%s-%s", t->name, name);
    return path(file);
}



/* `files` (NULL-terminated) one after the other into `out`. */
static bool concatenate(const char *out, const char *const files[])
{
    FILE *o = fopen(out, "wb");
    bool ok = o != NULL;
    for (size_t i = 0; ok && files[i] != NULL; i++) {
        size_t len = 0;
        char *text = read_text_file(files[i], &len);
        ok = text != NULL && fwrite(text, 1, len, o) == len;
        free(text);
    }
    return o != NULL && fclose(o) == 0 && ok;
}

static bool tool(const char *const argv[])
{
    return run_program(argv) == 0;
}

/* swtpm has no resource manager: what tpm2-tools left loaded stays. */
static bool flush_all(const tpm *t)
{
    const char *objects[] = {"tpm2_flushcontext", "-T", t->sim.tcti, "-t", NULL};
    const char *sessions[] = {"tpm2_flushcontext", "-T", t->sim.tcti, "-s", NULL};
    return tool(objects) && tool(sessions);
}

/* ---- the CA and manufacturing ------------------------------------------- */

static const char *ca_path(const ek_ca *ca, const char *name)
{
    char file[96];
    snprintf(file, sizeof file, "%s/%s", ca->name, name);
    return path(file);
}

/* `name`'s full path from PATH (swtpm_setup's configuration wants one). */
static bool find_program(const char *name, char *out, size_t cap)
{
    const char *env = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", env != NULL ? env : "/usr/bin:/bin");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d != NULL;
         d = strtok_r(NULL, ":", &save)) {
        if ((size_t)snprintf(out, cap, "%s/%s", d, name) < cap && access(out, X_OK) == 0)
            return true;
    }
    return false;
}

/* swtpm_localca's configuration and swtpm_setup's, as tests/python/processes.py's EkCa. */
static bool ca_configure(const ek_ca *ca)
{
    char text[1024];
    if (mkdir(path(ca->name), 0700) != 0)
        return false;
    const char *dir_path = path(ca->name);
    int n = snprintf(text, sizeof text,
                     "statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\n"
                     "certserial = %s/certserial\n",
                     dir_path, dir_path, dir_path, dir_path);
    if (!write_blob_file(ca_path(ca, "localca.conf"), text, (size_t)n))
        return false;
    static const char options[] =
        "--platform-manufacturer hushcall-test\n--platform-version 2.1\n--platform-model swtpm\n";
    if (!write_blob_file(ca_path(ca, "localca.options"), options, sizeof options - 1))
        return false;
    char localca[256];
    if (!find_program("swtpm_localca", localca, sizeof localca)) {
        fprintf(stderr, "swtpm_localca is missing (swtpm-tools: `make deps`)\n");
        return false;
    }
    n = snprintf(text, sizeof text,
                 "create_certs_tool = %s\ncreate_certs_tool_config = %s\n"
                 "create_certs_tool_options = %s\n",
                 localca, ca_path(ca, "localca.conf"), ca_path(ca, "localca.options"));
    return write_blob_file(ca_path(ca, "swtpm_setup.conf"), text, (size_t)n);
}

/* Manufacture a TPM state in `state_dir` with an EK certificate `ca` signs;
 * the CA exists after its first certificate, so its file is written then. */
static bool manufacture(ek_ca *ca, const char *state_dir)
{
    const char *setup[] = {"swtpm_setup", "--tpm2", "--tpmstate", state_dir, "--create-ek-cert",
                           "--config", ca_path(ca, "swtpm_setup.conf"), "--overwrite", NULL};
    if (!tool(setup)) {
        fprintf(stderr, "swtpm_setup failed (is swtpm-tools installed? `make deps`)\n");
        return false;
    }
    snprintf(ca->file, sizeof ca->file, "%s", ca_path(ca, "ek-ca.pem"));
    const char *files[] = {ca_path(ca, "swtpm-localca-rootca-cert.pem"),
                           ca_path(ca, "issuercert.pem"), NULL};
    return concatenate(ca->file, files);
}

/* A manufactured swtpm, started on free loopback ports (swtpm_start's
 * loop, on a state made first). */
static bool start_manufactured(tpm *t, ek_ca *ca)
{
    memset(&t->sim, 0, sizeof t->sim);
    t->sim.pid = -1;
    snprintf(t->sim.dir, sizeof t->sim.dir, "/tmp/hush-enroll-tpm-XXXXXX");
    if (mkdtemp(t->sim.dir) == NULL) {
        t->sim.dir[0] = '\0';
        return false;
    }
    if (!manufacture(ca, t->sim.dir))
        return false;
    for (int attempt = 0; attempt < SWTPM_START_ATTEMPTS; attempt++) {
        int port = unused_port();
        if (port <= 0 || port >= 65535 || !swtpm_port_free(port + 1))
            continue;
        int r = swtpm_try_start(&t->sim, port);
        if (r != 0)
            return r == 1;
    }
    return false;
}

/* The EK certificate from NV, the EK (tpm2_createek) and an AIK under it
 * (tpm2_createak), its public area as a TPM2B_PUBLIC. */
static bool make_ek_and_aik(tpm *t)
{
    const char *nvread[] = {"tpm2_nvread", "-T", t->sim.tcti, "-C", "o", "0x01c00002", "-o",
                            tpm_path(t, "ek.der"), NULL};
    const char *ek[] = {"tpm2_createek", "-Q", "-T", t->sim.tcti, "-G", "rsa", "-c",
                        tpm_path(t, "ek.ctx"), NULL};
    const char *ak[] = {"tpm2_createak", "-Q", "-T", t->sim.tcti, "-C", tpm_path(t, "ek.ctx"),
                        "-c", tpm_path(t, "ak.ctx"), "-u", tpm_path(t, "ak.pub"), NULL};
    if (!tool(nvread) || !tool(ek) || !flush_all(t) || !tool(ak) || !flush_all(t))
        return false;
    t->ek_cert_len = read_blob_file(tpm_path(t, "ek.der"), t->ek_cert, sizeof t->ek_cert);
    t->aik_public_len = read_blob_file(tpm_path(t, "ak.pub"), t->aik_public, sizeof t->aik_public);
    return t->ek_cert_len > 0 && t->aik_public_len > 0;
}

/* ---- activation by the TPM ----------------------------------------------- */

/* tpm2-tools' credential file: magic, version, then the two blobs. */
static bool write_credential(const char *file, const hush_credential *c)
{
    unsigned char buf[8 + sizeof c->id_object + sizeof c->encrypted_secret];
    const unsigned char header[8] = {0xBA, 0xDC, 0xC0, 0xDE, 0, 0, 0, CRED_FILE_VERSION};
    memcpy(buf, header, 8);
    memcpy(buf + 8, c->id_object, c->id_object_len);
    memcpy(buf + 8 + c->id_object_len, c->encrypted_secret, c->encrypted_secret_len);
    return write_blob_file(file, buf, 8 + c->id_object_len + c->encrypted_secret_len);
}

/* What the server's side does: TPM2_ActivateCredential with its AIK and
 * its EK (PolicySecret(endorsement)). The secret's length, or 0 refused. */
static size_t activate(const tpm *t, const hush_credential *c, unsigned char *out, size_t cap)
{
    const char *cred = tpm_path(t, "cred"), *session = tpm_path(t, "session.ctx");
    const char *recovered = tpm_path(t, "recovered");
    char auth[192];
    snprintf(auth, sizeof auth, "session:%s", session);
    const char *start[] = {"tpm2_startauthsession", "-T", t->sim.tcti, "--policy-session", "-S",
                           session, NULL};
    const char *policy[] = {"tpm2_policysecret", "-Q", "-T", t->sim.tcti, "-S", session, "-c",
                            "e", NULL};
    const char *act[] = {"tpm2_activatecredential", "-Q", "-T", t->sim.tcti, "-c",
                         tpm_path(t, "ak.ctx"), "-C", tpm_path(t, "ek.ctx"), "-i", cred, "-o",
                         recovered, "-P", auth, NULL};
    remove(recovered);
    bool ok = write_credential(cred, c) && tool(start) && tool(policy) && tool(act);
    ok = flush_all(t) && ok;
    return ok ? read_blob_file(recovered, out, cap) : 0;
}

/* ---- helpers ------------------------------------------------------------- */

static hush_status begin(const tpm *cert_of, const ek_ca *ca, const void *aik, size_t aik_len,
                         hush_enrolment **e, hush_error *err)
{
    return hush_enrolment_begin(cert_of->ek_cert, cert_of->ek_cert_len, ca->file, aik, aik_len,
                                e, err);
}

/* "sha256:" and hex SHA-256 of what tpm2_readpublic says the AIK's
 * TPMT_PUBLIC is (its TPM2B_PUBLIC without the size). */
static bool readpublic_fingerprint(const tpm *t, char out[HUSH_FINGERPRINT_LEN])
{
    unsigned char pub[BLOB_MAX], digest[32];
    const char *readpublic[] = {"tpm2_readpublic", "-Q", "-T", t->sim.tcti, "-c",
                                tpm_path(t, "ak.ctx"), "-o", tpm_path(t, "ak.readpublic"), NULL};
    if (!tool(readpublic) || !flush_all(t))
        return false;
    size_t len = read_blob_file(tpm_path(t, "ak.readpublic"), pub, sizeof pub);
    if (len < 3 || EVP_Digest(pub + 2, len - 2, digest, NULL, EVP_sha256(), NULL) != 1)
        return false;
    strcpy(out, "sha256:");
    for (size_t i = 0; i < sizeof digest; i++)
        sprintf(out + 7 + 2 * i, "%02x", digest[i]);
    return true;
}

/* ---- the whole loop ------------------------------------------------------ */

static void test_enrolment_proves_the_aik(void)
{
    hush_error err = {0};
    hush_enrolment *e = NULL;
    unsigned char secret[64];
    char expected[HUSH_FINGERPRINT_LEN] = "";
    CHECK_OK(begin(&tpm_a, &ca_good, tpm_a.aik_public, tpm_a.aik_public_len, &e, &err), &err);
    if (e == NULL)
        return;
    CHECK(readpublic_fingerprint(&tpm_a, expected));
    CHECK(strcmp(hush_enrolment_aik_fingerprint(e), expected) == 0);
    const hush_credential *c = hush_enrolment_credential(e);
    CHECK_EQ(c->encrypted_secret_len, 2u + 256u); /* RSA-2048 EK */
    size_t n = activate(&tpm_a, c, secret, sizeof secret);
    CHECK_EQ(n, SECRET_BYTES);
    CHECK_OK(hush_enrolment_finish(e, secret, n, &err), &err);
    CHECK_STATUS(hush_enrolment_finish(e, secret, n, &err), HUSH_E_ARGUMENT, &err);
    hush_enrolment_free(e);
}

/* Each enrolment draws its own secret: two credentials never match. */
static void test_secrets_are_fresh(void)
{
    hush_error err = {0};
    hush_enrolment *e1 = NULL, *e2 = NULL;
    CHECK_OK(begin(&tpm_a, &ca_good, tpm_a.aik_public, tpm_a.aik_public_len, &e1, &err), &err);
    CHECK_OK(begin(&tpm_a, &ca_good, tpm_a.aik_public, tpm_a.aik_public_len, &e2, &err), &err);
    if (e1 != NULL && e2 != NULL) {
        const hush_credential *c1 = hush_enrolment_credential(e1);
        const hush_credential *c2 = hush_enrolment_credential(e2);
        CHECK(memcmp(c1->id_object, c2->id_object, c1->id_object_len) != 0);
        CHECK(strcmp(hush_enrolment_aik_fingerprint(e1), hush_enrolment_aik_fingerprint(e2)) == 0);
    }
    hush_enrolment_free(e1);
    hush_enrolment_free(e2);
}

/* ---- the certificate ----------------------------------------------------- */

static void check_begin_refused(const tpm *cert_of, const char *ca_file, const void *aik,
                                size_t aik_len, hush_status code, const char *message)
{
    hush_error err = {0};
    hush_enrolment *e = (hush_enrolment *)&err; /* must come back NULL */
    CHECK_STATUS(hush_enrolment_begin(cert_of->ek_cert, cert_of->ek_cert_len, ca_file, aik,
                                      aik_len, &e, &err),
                 code, &err);
    CHECK(e == NULL);
    if (strstr(err.message, message) == NULL)
        fprintf(stderr, "  message \"%s\" lacks \"%s\"\n", err.message, message);
    CHECK(strstr(err.message, message) != NULL);
}

static void test_other_ca_refused(void)
{
    check_begin_refused(&tpm_a, ca_other.file, tpm_a.aik_public, tpm_a.aik_public_len,
                        HUSH_E_ATTESTATION, "does not chain to the CA");
}

/* An intermediate with the real one's name, signed by the real root, but
 * another key: the chain builds by name and must fail on the signature. */
static bool write_sibling_ca_file(const char *out)
{
    bool ok = false;
    EVP_PKEY *root_key = NULL, *key = EVP_EC_gen("P-256");
    X509 *root = NULL, *real = NULL, *sibling = X509_new();
    X509V3_CTX v3;
    X509_EXTENSION *bc = NULL;
    FILE *f = fopen(ca_path(&ca_good, "swtpm-localca-rootca-privkey.pem"), "r");
    if (f != NULL) {
        root_key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
        fclose(f);
    }
    if ((f = fopen(ca_path(&ca_good, "swtpm-localca-rootca-cert.pem"), "r")) != NULL) {
        root = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if ((f = fopen(ca_path(&ca_good, "issuercert.pem"), "r")) != NULL) {
        real = PEM_read_X509(f, NULL, NULL, NULL);
        fclose(f);
    }
    if (root_key == NULL || key == NULL || root == NULL || real == NULL || sibling == NULL)
        goto done;
    X509V3_set_ctx(&v3, root, sibling, NULL, NULL, 0);
    bc = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    if (bc == NULL || X509_set_version(sibling, 2) != 1 ||
        ASN1_INTEGER_set(X509_get_serialNumber(sibling), 77) != 1 ||
        X509_set_issuer_name(sibling, X509_get_subject_name(root)) != 1 ||
        X509_set_subject_name(sibling, X509_get_subject_name(real)) != 1 ||
        X509_gmtime_adj(X509_getm_notBefore(sibling), -3600) == NULL ||
        X509_gmtime_adj(X509_getm_notAfter(sibling), 86400) == NULL ||
        X509_set_pubkey(sibling, key) != 1 || X509_add_ext(sibling, bc, -1) != 1 ||
        X509_sign(sibling, root_key, EVP_sha256()) <= 0 || (f = fopen(out, "w")) == NULL)
        goto done;
    ok = PEM_write_X509(f, root) == 1 && PEM_write_X509(f, sibling) == 1;
    ok = fclose(f) == 0 && ok;
done:
    X509_EXTENSION_free(bc);
    X509_free(sibling);
    X509_free(real);
    X509_free(root);
    EVP_PKEY_free(key);
    EVP_PKEY_free(root_key);
    return ok;
}

static void test_sibling_intermediate_refused(void)
{
    CHECK(write_sibling_ca_file(path("sibling.pem")));
    check_begin_refused(&tpm_a, path("sibling.pem"), tpm_a.aik_public, tpm_a.aik_public_len,
                        HUSH_E_ATTESTATION, "does not chain to the CA");
    /* The root alone cannot complete the chain either. */
    const char *root_only[] = {ca_path(&ca_good, "swtpm-localca-rootca-cert.pem"), NULL};
    CHECK(concatenate(path("root-only.pem"), root_only));
    check_begin_refused(&tpm_a, path("root-only.pem"), tpm_a.aik_public, tpm_a.aik_public_len,
                        HUSH_E_ATTESTATION, "does not chain to the CA");
    /* An intermediate alone is no anchor. */
    const char *intermediate_only[] = {ca_path(&ca_good, "issuercert.pem"), NULL};
    CHECK(concatenate(path("intermediate-only.pem"), intermediate_only));
    check_begin_refused(&tpm_a, path("intermediate-only.pem"), tpm_a.aik_public,
                        tpm_a.aik_public_len, HUSH_E_FORMAT, "no self-signed certificate");
}

static void test_bad_ca_files_refused(void)
{
    check_begin_refused(&tpm_a, path("no-such-file.pem"), tpm_a.aik_public, tpm_a.aik_public_len,
                        HUSH_E_IO, "ek_ca_file");
    static const char junk[] = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n"
                               "-----END CERTIFICATE-----\n";
    CHECK(write_blob_file(path("junk.pem"), junk, sizeof junk - 1));
    check_begin_refused(&tpm_a, path("junk.pem"), tpm_a.aik_public, tpm_a.aik_public_len,
                        HUSH_E_FORMAT, "ek_ca_file");
}

static void test_junk_certificate_refused(void)
{
    tpm junk = tpm_a;
    memset(junk.ek_cert, 0x30, 64);
    junk.ek_cert_len = 64;
    check_begin_refused(&junk, ca_good.file, tpm_a.aik_public, tpm_a.aik_public_len,
                        HUSH_E_FORMAT, "ek_certificate");
    junk = tpm_a; /* a whole certificate and a byte more */
    junk.ek_cert[junk.ek_cert_len++] = 0;
    check_begin_refused(&junk, ca_good.file, tpm_a.aik_public, tpm_a.aik_public_len,
                        HUSH_E_FORMAT, "ek_certificate");
    junk = tpm_a; /* one bit of the signed part */
    junk.ek_cert[junk.ek_cert_len / 2] ^= 1;
    hush_error err = {0};
    hush_enrolment *e = NULL;
    CHECK(begin(&junk, &ca_good, tpm_a.aik_public, tpm_a.aik_public_len, &e, &err) != HUSH_OK);
    CHECK(e == NULL);
}

/* ---- the AIK ---------------------------------------------------------------- */

static void test_malformed_aik_refused(void)
{
    unsigned char aik[BLOB_MAX + 1];
    memcpy(aik, tpm_a.aik_public, tpm_a.aik_public_len);
    aik[tpm_a.aik_public_len] = 0;
    check_begin_refused(&tpm_a, ca_good.file, aik, tpm_a.aik_public_len + 1, HUSH_E_FORMAT,
                        "aik_public");
    check_begin_refused(&tpm_a, ca_good.file, aik, tpm_a.aik_public_len - 1, HUSH_E_FORMAT,
                        "aik_public");
    check_begin_refused(&tpm_a, ca_good.file, aik, 0, HUSH_E_FORMAT, "aik_public");
}

/* A key of `attributes` made by tpm2_create under an owner storage key;
 * its TPM2B_PUBLIC into `out`. */
static size_t create_key(const char *attributes, const char *alg, unsigned char *out, size_t cap)
{
    const char *tcti = tpm_a.sim.tcti;
    const char *primary[] = {"tpm2_createprimary", "-Q", "-T", tcti, "-C", "o", "-c",
                             path("owner.ctx"), NULL};
    const char *create[] = {"tpm2_create", "-Q", "-T", tcti, "-C", path("owner.ctx"), "-G", alg,
                            "-a", attributes, "-u", path("key.pub"), "-r", path("key.priv"),
                            NULL};
    remove(path("key.pub"));
    bool ok = tool(primary) && tool(create);
    ok = flush_all(&tpm_a) && ok;
    return ok ? read_blob_file(path("key.pub"), out, cap) : 0;
}

static void check_key_refused(const char *attributes, const char *alg, const char *message)
{
    unsigned char pub[BLOB_MAX];
    size_t len = create_key(attributes, alg, pub, sizeof pub);
    CHECK(len > 0);
    if (len > 0)
        check_begin_refused(&tpm_a, ca_good.file, pub, len, HUSH_E_ATTESTATION, message);
}

static void test_weak_aiks_refused(void)
{
    /* The control: tpm2_create's key with an AIK's attributes is taken. */
    unsigned char pub[BLOB_MAX];
    size_t len = create_key(AIK_ATTRIBUTES, "ecc256:ecdsa-sha256:null", pub, sizeof pub);
    hush_error err = {0};
    hush_enrolment *e = NULL;
    CHECK(len > 0);
    CHECK_OK(begin(&tpm_a, &ca_good, pub, len, &e, &err), &err);
    hush_enrolment_free(e);

    check_key_refused("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|sign",
                      "ecc256:ecdsa-sha256:null", "not restricted");
    check_key_refused("sensitivedataorigin|userwithauth|restricted|sign",
                      "ecc256:ecdsa-sha256:null", "not fixedTPM");
    check_key_refused("fixedtpm|fixedparent|sensitivedataorigin|userwithauth|decrypt|sign",
                      "ecc256", "decrypt");
}

/* What no TPM makes (an asymmetric key's sensitive part is always its
 * own), edited into tpm2_createak's public area: TPM2B size, type,
 * nameAlg, then objectAttributes (TPM 2.0 Part 2 §12.2.4). */
static void test_edited_aiks_refused(void)
{
    unsigned char aik[BLOB_MAX];
    memcpy(aik, tpm_a.aik_public, tpm_a.aik_public_len);
    aik[9] &= (unsigned char)~0x20; /* sensitiveDataOrigin, bit 5 */
    check_begin_refused(&tpm_a, ca_good.file, aik, tpm_a.aik_public_len, HUSH_E_ATTESTATION,
                        "not sensitiveDataOrigin");
    memcpy(aik, tpm_a.aik_public, tpm_a.aik_public_len);
    aik[4] = 0x00, aik[5] = 0x04; /* nameAlg SHA-1 */
    check_begin_refused(&tpm_a, ca_good.file, aik, tpm_a.aik_public_len, HUSH_E_ATTESTATION,
                        "nameAlg");
}

/* ---- activation refusals ------------------------------------------------------ */

/* A server that shows TPM A's certificate but TPM B's AIK: the credential
 * is for B's AIK to A's EK, and neither TPM activates it. */
static void test_aik_of_another_tpm_refused(void)
{
    hush_error err = {0};
    hush_enrolment *e = NULL;
    unsigned char secret[64];
    CHECK_OK(begin(&tpm_a, &ca_good, tpm_b.aik_public, tpm_b.aik_public_len, &e, &err), &err);
    if (e == NULL)
        return;
    const hush_credential *c = hush_enrolment_credential(e);
    CHECK_EQ(activate(&tpm_a, c, secret, sizeof secret), 0);
    CHECK_EQ(activate(&tpm_b, c, secret, sizeof secret), 0);
    /* Whatever the server answers instead is refused. */
    CHECK(RAND_bytes(secret, SECRET_BYTES) == 1);
    CHECK_STATUS(hush_enrolment_finish(e, secret, SECRET_BYTES, &err), HUSH_E_ATTESTATION, &err);
    hush_enrolment_free(e);
}

static void test_tampered_credential_refused(void)
{
    hush_error err = {0};
    hush_enrolment *e = NULL;
    unsigned char secret[64];
    CHECK_OK(begin(&tpm_a, &ca_good, tpm_a.aik_public, tpm_a.aik_public_len, &e, &err), &err);
    if (e == NULL)
        return;
    const hush_credential *c = hush_enrolment_credential(e);
    /* The HMAC, the encrypted secret, the seed's ciphertext. */
    static const size_t id_offsets[] = {6, 40};
    for (size_t i = 0; i < sizeof id_offsets / sizeof id_offsets[0]; i++) {
        hush_credential tampered = *c;
        tampered.id_object[id_offsets[i]] ^= 1;
        CHECK_EQ(activate(&tpm_a, &tampered, secret, sizeof secret), 0);
    }
    hush_credential tampered = *c;
    tampered.encrypted_secret[100] ^= 1;
    CHECK_EQ(activate(&tpm_a, &tampered, secret, sizeof secret), 0);
    /* The untouched one still activates: the refusals were the tampering's. */
    size_t n = activate(&tpm_a, c, secret, sizeof secret);
    CHECK_EQ(n, SECRET_BYTES);
    CHECK_OK(hush_enrolment_finish(e, secret, n, &err), &err);
    hush_enrolment_free(e);
}

/* A wrong secret is refused and ends the enrolment: no second guess. */
static void test_wrong_secret_refused(void)
{
    hush_error err = {0};
    hush_enrolment *e = NULL;
    unsigned char secret[64];
    CHECK_OK(begin(&tpm_a, &ca_good, tpm_a.aik_public, tpm_a.aik_public_len, &e, &err), &err);
    if (e == NULL)
        return;
    size_t n = activate(&tpm_a, hush_enrolment_credential(e), secret, sizeof secret);
    CHECK_EQ(n, SECRET_BYTES);
    secret[SECRET_BYTES - 1] ^= 0x80;
    CHECK_STATUS(hush_enrolment_finish(e, secret, n, &err), HUSH_E_ATTESTATION, &err);
    secret[SECRET_BYTES - 1] ^= 0x80;
    CHECK_STATUS(hush_enrolment_finish(e, secret, n, &err), HUSH_E_ARGUMENT, &err);
    hush_enrolment_free(e);

    /* A prefix of the right secret is no match either. */
    e = NULL;
    CHECK_OK(begin(&tpm_a, &ca_good, tpm_a.aik_public, tpm_a.aik_public_len, &e, &err), &err);
    if (e == NULL)
        return;
    n = activate(&tpm_a, hush_enrolment_credential(e), secret, sizeof secret);
    CHECK_EQ(n, SECRET_BYTES);
    CHECK_STATUS(hush_enrolment_finish(e, secret, n - 1, &err), HUSH_E_ATTESTATION, &err);
    hush_enrolment_free(e);
}

static void test_bad_arguments(void)
{
    hush_error err = {0};
    hush_enrolment *e = NULL;
    CHECK_STATUS(hush_enrolment_begin(NULL, 0, ca_good.file, tpm_a.aik_public,
                                      tpm_a.aik_public_len, &e, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_enrolment_begin(tpm_a.ek_cert, tpm_a.ek_cert_len, NULL, tpm_a.aik_public,
                                      tpm_a.aik_public_len, &e, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_enrolment_begin(tpm_a.ek_cert, tpm_a.ek_cert_len, ca_good.file,
                                      tpm_a.aik_public, tpm_a.aik_public_len, NULL, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_enrolment_finish(NULL, "x", 1, &err), HUSH_E_ARGUMENT, &err);
    CHECK(hush_enrolment_credential(NULL) == NULL);
    CHECK(hush_enrolment_aik_fingerprint(NULL) == NULL);
    hush_enrolment_free(NULL);
}

/* ---- main ---------------------------------------------------------------------- */

static bool set_up(void)
{
    if (!ca_configure(&ca_good) || !ca_configure(&ca_other)) {
        fprintf(stderr, "cannot write the EK CAs' configuration\n");
        return false;
    }
    /* ca_other exists once it has signed a TPM's certificate. */
    char other_state[96];
    snprintf(other_state, sizeof other_state, "%s", path("other-state"));
    if (mkdir(other_state, 0700) != 0 || !manufacture(&ca_other, other_state))
        return false;
    if (!start_manufactured(&tpm_a, &ca_good) || !start_manufactured(&tpm_b, &ca_good)) {
        fprintf(stderr, "no manufactured software TPM (swtpm, swtpm_setup, swtpm_localca)\n");
        return false;
    }
    if (!make_ek_and_aik(&tpm_a) || !make_ek_and_aik(&tpm_b)) {
        fprintf(stderr, "no EK certificate, EK or AIK from tpm2-tools\n");
        return false;
    }
    return true;
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/hush-enroll-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    if (!set_up()) {
        fprintf(stderr, "FAIL: the TPMs could not be set up, so nothing was tested\n");
        check_tests_failed++;
    } else {
        RUN_TEST(test_enrolment_proves_the_aik);
        RUN_TEST(test_secrets_are_fresh);
        RUN_TEST(test_other_ca_refused);
        RUN_TEST(test_sibling_intermediate_refused);
        RUN_TEST(test_bad_ca_files_refused);
        RUN_TEST(test_junk_certificate_refused);
        RUN_TEST(test_malformed_aik_refused);
        RUN_TEST(test_weak_aiks_refused);
        RUN_TEST(test_edited_aiks_refused);
        RUN_TEST(test_aik_of_another_tpm_refused);
        RUN_TEST(test_tampered_credential_refused);
        RUN_TEST(test_wrong_secret_refused);
        RUN_TEST(test_bad_arguments);
    }
    swtpm_stop(&tpm_a.sim);
    swtpm_stop(&tpm_b.sim);
    remove_tree(dir);
    return check_report();
}
