/* test_interop_v1.c — the C core against an independent NOMYO v1 peer
 * (tests/interop/v1_peer.py, Python `cryptography`) and the public `nomyo`
 * client: packages and key files must cross in both directions, and our
 * packages must be laid out exactly as nomyo's json.dumps lays them out. */
#include <spawn.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"

extern char **environ;

#define PEER HUSH_TEST_INTEROP_DIR "/v1_peer.py"
#define PASSWORD "interop-pass-Ünïcode"

static char dir[256];
static hush_keypair *ours;
static hush_pubkey *ours_pub;

static int run(const char *const argv[])
{
    pid_t pid;
    if (posix_spawn(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0)
        return -1;
    int st;
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static char *path(const char *name)
{
    static char buf[4][512];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static void write_file(const char *p, const void *data, size_t len)
{
    FILE *f = fopen(p, "wb");
    CHECK(f != NULL);
    if (f) {
        CHECK(fwrite(data, 1, len, f) == len);
        fclose(f);
    }
}

/* The file's bytes (malloc'd, NUL-terminated) or NULL. */
static char *read_file(const char *p, size_t *len)
{
    FILE *f = fopen(p, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static const char *samples[] = {
    "",
    "{\"model\": \"m\", \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}",
    "{\"content\": \"gr\xc3\xbc\xc3\x9f \xe2\x82\xac \xf0\x9f\x94\x92 \\u00e9\\ud83d\\ude00\"}",
};

static void test_peer_seals_core_opens(void)
{
    hush_error err;
    for (size_t i = 0; i < sizeof samples / sizeof *samples; i++) {
        write_file(path("plain.in"), samples[i], strlen(samples[i]));
        const char *argv[] = {HUSH_TEST_PYTHON, PEER, "seal", path("ours/public_key.pem"),
                              path("plain.in"), path("pkg.json"), "--processed-at",
                              "1764590000", NULL};
        CHECK_EQ(run(argv), 0);
        size_t len;
        char *pkg = read_file(path("pkg.json"), &len);
        CHECK(pkg != NULL);
        hush_envelope_v1_opened opened;
        CHECK_OK(hush_envelope_v1_open(ours, pkg, len, 0, &opened, &err), &err);
        if (opened.plaintext != NULL) {
            CHECK_EQ(hush_secbuf_len(opened.plaintext), strlen(samples[i]));
            CHECK(memcmp(hush_secbuf_data(opened.plaintext), samples[i], strlen(samples[i])) == 0);
            size_t n = 0;
            const char *at = hush_json_number_text(hush_json_doc_root(opened.processed_at), &n);
            CHECK(at != NULL && strcmp(at, "1764590000") == 0);
        }
        hush_envelope_v1_opened_clear(&opened);
        free(pkg);
    }
}

static void test_core_seals_peer_opens_with_nomyo_layout(void)
{
    hush_error err;
    hush_pubkey *theirs = NULL;
    size_t len;
    char *pem = read_file(path("theirs/public_key.pem"), &len);
    CHECK_OK(hush_pubkey_from_pem(pem, len, &theirs, &err), &err);
    free(pem);
    for (size_t i = 0; i < sizeof samples / sizeof *samples && theirs; i++) {
        hush_secbuf *pkg = NULL;
        CHECK_OK(hush_envelope_v1_seal(theirs, samples[i], strlen(samples[i]),
                                       HUSH_V1_NO_PROCESSED_AT, &pkg, &err),
                 &err);
        write_file(path("pkg.json"), hush_secbuf_data(pkg), hush_secbuf_len(pkg));
        const char *argv[] = {HUSH_TEST_PYTHON, PEER, "open", path("theirs/private_key.pem"),
                              path("pkg.json"), path("plain.out"), "--password", PASSWORD,
                              "--check-layout", NULL};
        CHECK_EQ(run(argv), 0);
        char *out = read_file(path("plain.out"), &len);
        CHECK(out != NULL && len == strlen(samples[i]) && memcmp(out, samples[i], len) == 0);
        free(out);
        hush_secbuf_free(pkg);
    }
    hush_pubkey_free(theirs);
}

static void test_key_files_cross_both_ways(void)
{
    hush_error err;
    /* Their PKCS#8 (cryptography's BestAvailableEncryption) loads here ... */
    hush_keypair *theirs = NULL;
    CHECK_OK(hush_keypair_load_dir(path("theirs"), PASSWORD, &theirs, &err), &err);
    CHECK_EQ(hush_keypair_bits(theirs), 4096);
    hush_keypair *refused = NULL;
    CHECK_STATUS(hush_keypair_load_dir(path("theirs"), "wrong", &refused, &err), HUSH_E_PASSWORD,
                 &err);
    CHECK(refused == NULL);
    hush_keypair_free(theirs);
    /* ... and ours opens there: the peer decrypts with our saved private key. */
    hush_secbuf *pkg = NULL;
    CHECK_OK(hush_envelope_v1_seal(ours_pub, samples[1], strlen(samples[1]),
                                   HUSH_V1_NO_PROCESSED_AT, &pkg, &err),
             &err);
    write_file(path("pkg.json"), hush_secbuf_data(pkg), hush_secbuf_len(pkg));
    /* PBKDF2 as saved in main(), and scrypt. */
    CHECK_OK(hush_keypair_save_dir(ours, path("ours-scrypt"), PASSWORD, HUSH_KDF_SCRYPT, 0, &err),
             &err);
    static const char *const key_files[] = {"ours/private_key.pem", "ours-scrypt/private_key.pem"};
    for (size_t i = 0; i < 2; i++) {
        remove(path("plain.out"));
        const char *argv[] = {HUSH_TEST_PYTHON, PEER, "open", path(key_files[i]), path("pkg.json"),
                              path("plain.out"), "--password", PASSWORD, NULL};
        CHECK_EQ(run(argv), 0);
        size_t len;
        char *out = read_file(path("plain.out"), &len);
        CHECK(out != NULL && len == strlen(samples[1]) && memcmp(out, samples[1], len) == 0);
        free(out);
    }
    hush_secbuf_free(pkg);
}

static void test_nomyo_client_opens_our_package(void)
{
    hush_error err;
    static const char response[] =
        "{\"id\": \"x\", \"choices\": [{\"message\": {\"role\": \"assistant\", "
        "\"content\": \"sealed by hushcall\"}}]}";
    hush_secbuf *pkg = NULL;
    CHECK_OK(hush_envelope_v1_seal(ours_pub, response, strlen(response), 1764590000, &pkg,
                                   &err), &err);
    write_file(path("pkg.json"), hush_secbuf_data(pkg), hush_secbuf_len(pkg));
    const char *argv[] = {HUSH_TEST_PYTHON, PEER, "nomyo-open", path("ours"), path("pkg.json"),
                          path("nomyo.out"), "--password", PASSWORD, NULL};
    CHECK_EQ(run(argv), 0);
    size_t len;
    char *out = read_file(path("nomyo.out"), &len);
    CHECK(out != NULL && strstr(out, "\"content\": \"sealed by hushcall\"") != NULL);
    CHECK(out != NULL && strstr(out, "\"encryption_algorithm\": \"hybrid-aes256-rsa4096\"") != NULL);
    CHECK(out != NULL && strstr(out, "\"processed_at\": 1764590000") != NULL);
    free(out);
    hush_secbuf_free(pkg);
}

static void remove_tree(void)
{
    const char *argv[] = {"/bin/rm", "-rf", dir, NULL};
    run(argv);
}

int main(void)
{
    hush_error err;
    snprintf(dir, sizeof dir, "/tmp/hush-interop-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    const char *keygen[] = {HUSH_TEST_PYTHON, PEER, "keygen", path("theirs"), "--password",
                            PASSWORD, NULL};
    if (run(keygen) != 0) {
        /* A missing `cryptography` or `nomyo` is a failure, never a skip. */
        fprintf(stderr, "the Python peer failed: is `make deps` done?\n");
        remove_tree();
        return 1;
    }
    if (hush_keypair_generate(4096, &ours, &err) != HUSH_OK ||
        hush_keypair_save_dir(ours, path("ours"), PASSWORD, HUSH_KDF_PBKDF2, 0, &err) != HUSH_OK ||
        hush_pubkey_from_keypair(ours, &ours_pub, &err) != HUSH_OK) {
        fprintf(stderr, "key setup failed: %s\n", err.message);
        remove_tree();
        return 1;
    }
    RUN_TEST(test_peer_seals_core_opens);
    RUN_TEST(test_core_seals_peer_opens_with_nomyo_layout);
    RUN_TEST(test_key_files_cross_both_ways);
    RUN_TEST(test_nomyo_client_opens_our_package);
    hush_pubkey_free(ours_pub);
    hush_keypair_free(ours);
    remove_tree();
    return check_report();
}
