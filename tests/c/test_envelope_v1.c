/* test_envelope_v1.c — NOMYO v1 packages: round trips, layout, tampering,
 * structural faults, limits. Keys are 2048-bit for speed except where the
 * default size itself is under test. */
#include <stdlib.h>

#include "check.h"

#define MARKER "PLAINTEXT-MARKER-7f3a"

static hush_keypair *alice, *mallory;
static hush_pubkey *alice_pub;

/* The four fields of a package, base64 text as written. */
typedef struct fields {
    char ciphertext[4096], nonce[64], tag[64], wrapped[2048];
} fields;

static void copy_field(const hush_json_value *obj, const char *name, char *dst, size_t cap)
{
    size_t len = 0;
    const char *s = hush_json_string(hush_json_object_get(obj, name, strlen(name)), &len);
    CHECK(s != NULL && len < cap);
    if (s != NULL && len < cap)
        memcpy(dst, s, len + 1);
}

static void split_package(const hush_secbuf *pkg, fields *f)
{
    hush_error err;
    hush_json_doc *doc = NULL;
    CHECK_OK(hush_json_parse(hush_secbuf_bytes(pkg), hush_secbuf_len(pkg), NULL,
                             HUSH_SECMEM_NO_LOCK, &doc, &err), &err);
    if (doc == NULL)
        return;
    const hush_json_value *root = hush_json_doc_root(doc);
    const hush_json_value *payload = hush_json_object_get(root, "encrypted_payload", 17);
    copy_field(payload, "ciphertext", f->ciphertext, sizeof f->ciphertext);
    copy_field(payload, "nonce", f->nonce, sizeof f->nonce);
    copy_field(payload, "tag", f->tag, sizeof f->tag);
    copy_field(root, "encrypted_aes_key", f->wrapped, sizeof f->wrapped);
    hush_json_doc_free(doc);
}

static char *join_package(const fields *f)
{
    size_t cap = strlen(f->ciphertext) + strlen(f->wrapped) + 512;
    char *out = malloc(cap);
    snprintf(out, cap,
             "{\"version\": \"1.0\", \"algorithm\": \"hybrid-aes256-rsa4096\", "
             "\"encrypted_payload\": {\"ciphertext\": \"%s\", \"nonce\": \"%s\", \"tag\": \"%s\"}, "
             "\"encrypted_aes_key\": \"%s\", \"key_algorithm\": \"RSA-OAEP-SHA256\", "
             "\"payload_algorithm\": \"AES-256-GCM\"}",
             f->ciphertext, f->nonce, f->tag, f->wrapped);
    return out;
}

static hush_status open_text(const hush_keypair *kp, const char *pkg, hush_envelope_v1_opened *out,
                             hush_error *err)
{
    return hush_envelope_v1_open(kp, pkg, strlen(pkg), 0, out, err);
}

static hush_secbuf *seal(const char *plaintext)
{
    hush_error err;
    hush_secbuf *pkg = NULL;
    CHECK_OK(hush_envelope_v1_seal(alice_pub, plaintext, strlen(plaintext),
                                   HUSH_V1_NO_PROCESSED_AT, &pkg, &err),
             &err);
    return pkg;
}

static void test_round_trip_sizes(void)
{
    hush_error err;
    static const size_t sizes[] = {0, 1, 15, 16, 17, 1000, 200000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        unsigned char *msg = malloc(sizes[i] + 1);
        for (size_t j = 0; j < sizes[i]; j++)
            msg[j] = (unsigned char)(j * 31 + i);
        hush_secbuf *pkg = NULL;
        CHECK_OK(hush_envelope_v1_seal(alice_pub, msg, sizes[i], HUSH_V1_NO_PROCESSED_AT, &pkg,
                                       &err), &err);
        hush_envelope_v1_opened opened;
        CHECK_OK(hush_envelope_v1_open(alice, hush_secbuf_data(pkg), hush_secbuf_len(pkg), 0,
                                       &opened, &err), &err);
        CHECK_EQ(hush_secbuf_len(opened.plaintext), sizes[i]);
        CHECK(sizes[i] == 0 || memcmp(hush_secbuf_data(opened.plaintext), msg, sizes[i]) == 0);
        CHECK(hush_secbuf_is_locked(opened.plaintext));
        CHECK(opened.processed_at == NULL);
        hush_envelope_v1_opened_clear(&opened);
        CHECK(opened.plaintext == NULL);
        hush_secbuf_free(pkg);
        free(msg);
    }
}

static void test_round_trip_default_4096_key(void)
{
    hush_error err;
    hush_keypair *kp = NULL;
    hush_pubkey *pub = NULL;
    CHECK_OK(hush_keypair_generate(0, &kp, &err), &err);
    CHECK_EQ(hush_keypair_bits(kp), 4096);
    CHECK_OK(hush_pubkey_from_keypair(kp, &pub, &err), &err);
    hush_secbuf *pkg = NULL;
    CHECK_OK(hush_envelope_v1_seal(pub, "{\"a\":1}", 7, HUSH_V1_NO_PROCESSED_AT, &pkg, &err),
             &err);
    hush_envelope_v1_opened opened;
    CHECK_OK(hush_envelope_v1_open(kp, hush_secbuf_data(pkg), hush_secbuf_len(pkg), 0, &opened,
                                   &err), &err);
    CHECK(hush_secbuf_len(opened.plaintext) == 7 &&
          memcmp(hush_secbuf_data(opened.plaintext), "{\"a\":1}", 7) == 0);
    /* A 4096-bit key wraps to 512 bytes: 684 base64 characters. */
    fields f;
    split_package(pkg, &f);
    CHECK_EQ(strlen(f.wrapped), 684);
    hush_envelope_v1_opened_clear(&opened);
    hush_secbuf_free(pkg);
    hush_pubkey_free(pub);
    hush_keypair_free(kp);
}

static void test_layout_matches_nomyo(void)
{
    hush_secbuf *pkg = seal(MARKER);
    fields f;
    split_package(pkg, &f);
    char *expected = join_package(&f);
    CHECK_EQ(hush_secbuf_len(pkg), strlen(expected));
    CHECK(memcmp(hush_secbuf_data(pkg), expected, strlen(expected)) == 0);
    CHECK_EQ(strlen(f.nonce), 16); /* 12 bytes */
    CHECK_EQ(strlen(f.tag), 24);   /* 16 bytes */
    /* Nothing of the plaintext shows in the package. */
    CHECK(memmem(hush_secbuf_data(pkg), hush_secbuf_len(pkg), MARKER, strlen(MARKER)) == NULL);
    free(expected);
    hush_secbuf_free(pkg);
}

static void test_fresh_key_and_nonce_per_message(void)
{
    hush_secbuf *a = seal("same"), *b = seal("same");
    fields fa, fb;
    split_package(a, &fa);
    split_package(b, &fb);
    CHECK(strcmp(fa.nonce, fb.nonce) != 0);
    CHECK(strcmp(fa.wrapped, fb.wrapped) != 0);
    CHECK(strcmp(fa.ciphertext, fb.ciphertext) != 0);
    hush_secbuf_free(a);
    hush_secbuf_free(b);
}

/* Replace the first occurrence of `from` in the package text with `to`. */
static char *edit(const char *pkg, const char *from, const char *to)
{
    const char *at = strstr(pkg, from);
    CHECK(at != NULL);
    if (at == NULL)
        return strdup(pkg);
    size_t cap = strlen(pkg) + strlen(to) + 1;
    char *out = malloc(cap);
    snprintf(out, cap, "%.*s%s%s", (int)(at - pkg), pkg, to, at + strlen(from));
    return out;
}

/* The processed_at of `pkg` as compact JSON text ("" when the open gave none). */
static void opened_processed_at(const char *pkg, char *text, size_t cap)
{
    hush_error err;
    hush_envelope_v1_opened opened;
    hush_secbuf *out = NULL;
    hush_json_writer *w = NULL;
    text[0] = '\0';
    CHECK_OK(open_text(alice, pkg, &opened, &err), &err);
    if (opened.processed_at == NULL) {
        hush_envelope_v1_opened_clear(&opened);
        return;
    }
    CHECK_OK(hush_secbuf_new(64, 0, HUSH_SECMEM_NO_LOCK, &out, &err), &err);
    CHECK_OK(hush_json_writer_new(out, HUSH_JSON_WRITE_COMPACT, 0, &w, &err), &err);
    CHECK_OK(hush_json_write_value(w, hush_json_doc_root(opened.processed_at), &err), &err);
    CHECK(hush_secbuf_len(out) < cap);
    snprintf(text, cap, "%.*s", (int)hush_secbuf_len(out), (const char *)hush_secbuf_data(out));
    hush_json_writer_free(w);
    hush_secbuf_free(out);
    hush_envelope_v1_opened_clear(&opened);
    CHECK(opened.processed_at == NULL);
}

static void test_processed_at(void)
{
    hush_error err;
    hush_secbuf *pkg = NULL;
    char text[256];
    CHECK_OK(hush_envelope_v1_seal(alice_pub, "x", 1, 1764590000, &pkg, &err), &err);
    char *sealed = strndup((const char *)hush_secbuf_data(pkg), hush_secbuf_len(pkg));
    /* The server role writes Unix seconds as an integer, the last member. */
    size_t n = strlen(sealed);
    static const char tail[] = ", \"processed_at\": 1764590000}";
    CHECK(n > strlen(tail) && strcmp(sealed + n - strlen(tail), tail) == 0);
    opened_processed_at(sealed, text, sizeof text);
    CHECK(strcmp(text, "1764590000") == 0);

    /* Any JSON value is carried as received: a number keeps its exact text. */
    static const char *forms[] = {
        "-1",
        "1764590000.123456",
        "1.7645900001234567e9",
        "123456789012345678901234567890",
        "\"2026-11-23T02:10:00.123456+00:00\"",
        "\"z\\u00fc\\u0000\"",
        "true",
        "[1,{\"at\":\"now\"}]",
        "{}",
    };
    static const char *written[] = {
        "-1", "1764590000.123456", "1.7645900001234567e9", "123456789012345678901234567890",
        "\"2026-11-23T02:10:00.123456+00:00\"", "\"z\xc3\xbc\\u0000\"", "true",
        "[1,{\"at\":\"now\"}]", "{}",
    };
    for (size_t i = 0; i < sizeof forms / sizeof *forms; i++) {
        char member[128];
        snprintf(member, sizeof member, "%s}", forms[i]);
        char *variant = edit(sealed, "1764590000}", member);
        opened_processed_at(variant, text, sizeof text);
        if (strcmp(text, written[i]) != 0)
            fprintf(stderr, "processed_at %s came out as %s\n", forms[i], text);
        CHECK(strcmp(text, written[i]) == 0);
        free(variant);
    }
    /* null and absent both mean none. */
    char *null_at = edit(sealed, "1764590000", "null");
    opened_processed_at(null_at, text, sizeof text);
    CHECK_EQ(text[0], '\0');
    free(null_at);
    free(sealed);
    hush_secbuf_free(pkg);

    CHECK_OK(hush_envelope_v1_seal(alice_pub, "x", 1, HUSH_V1_NO_PROCESSED_AT, &pkg, &err), &err);
    CHECK(memmem(hush_secbuf_data(pkg), hush_secbuf_len(pkg), "processed_at", 12) == NULL);
    hush_secbuf_free(pkg);
}

/* Every single-bit flip of one decoded field must fail authentication with
 * the same opaque message. */
static int flips_rejected;
static char first_message[HUSH_ERROR_MESSAGE_MAX];

static void flip_every_bit(fields *f, char *field, size_t field_cap)
{
    hush_error err;
    unsigned char raw[1024];
    size_t n = 0;
    CHECK_OK(hush_base64_decode(field, strlen(field), raw, sizeof raw, &n, &err), &err);
    char original[2048];
    memcpy(original, field, strlen(field) + 1);
    for (size_t bit = 0; bit < n * 8; bit++) {
        raw[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        size_t out_len;
        CHECK_OK(hush_base64_encode(raw, n, field, field_cap, &out_len, &err), &err);
        raw[bit / 8] ^= (unsigned char)(1u << (bit % 8));
        char *pkg = join_package(f);
        hush_envelope_v1_opened opened;
        hush_status s = open_text(alice, pkg, &opened, &err);
        CHECK_EQ(s, HUSH_E_AUTH);
        CHECK(opened.plaintext == NULL);
        if (s == HUSH_E_AUTH) {
            if (first_message[0] == '\0')
                memcpy(first_message, err.message, sizeof first_message);
            CHECK(strcmp(err.message, first_message) == 0);
            flips_rejected++;
        } else {
            hush_envelope_v1_opened_clear(&opened);
        }
        free(pkg);
    }
    memcpy(field, original, strlen(original) + 1);
}

static void test_every_bit_flip_rejected(void)
{
    static const char plaintext[] = "{\"role\":\"user\",\"content\":\"" MARKER "\"}";
    hush_secbuf *pkg = seal(plaintext);
    fields f;
    split_package(pkg, &f);
    char *untouched = join_package(&f);
    hush_error err;
    hush_envelope_v1_opened opened;
    CHECK_OK(open_text(alice, untouched, &opened, &err), &err); /* the control */
    hush_envelope_v1_opened_clear(&opened);

    flips_rejected = 0;
    flip_every_bit(&f, f.ciphertext, sizeof f.ciphertext);
    flip_every_bit(&f, f.tag, sizeof f.tag);
    flip_every_bit(&f, f.nonce, sizeof f.nonce);
    flip_every_bit(&f, f.wrapped, sizeof f.wrapped);
    /* ciphertext + tag + nonce + the 2048-bit wrapped key */
    CHECK_EQ(flips_rejected, (strlen(plaintext) + 16 + 12 + 256) * 8);
    CHECK(strstr(first_message, MARKER) == NULL);
    free(untouched);
    hush_secbuf_free(pkg);
}

static void test_wrong_private_key(void)
{
    hush_secbuf *pkg = seal(MARKER);
    hush_error err;
    hush_envelope_v1_opened opened;
    CHECK_STATUS(hush_envelope_v1_open(mallory, hush_secbuf_data(pkg), hush_secbuf_len(pkg), 0,
                                       &opened, &err), HUSH_E_AUTH, &err);
    CHECK(opened.plaintext == NULL);
    CHECK(strstr(err.message, MARKER) == NULL);
    hush_secbuf_free(pkg);
}

static void expect_open_failure(const char *pkg, hush_status want, const char *field)
{
    hush_error err;
    hush_envelope_v1_opened opened;
    CHECK_STATUS(open_text(alice, pkg, &opened, &err), want, &err);
    CHECK(opened.plaintext == NULL);
    if (field != NULL && strstr(err.message, field) == NULL) {
        fprintf(stderr, "message does not name '%s': %s\n", field, err.message);
        CHECK(!"message names the field");
    }
    CHECK(strstr(err.message, MARKER) == NULL);
}

static void test_structural_errors_name_the_field(void)
{
    hush_secbuf *sealed = seal(MARKER);
    fields f;
    split_package(sealed, &f);
    char *pkg = join_package(&f);
    char *bad;

    static const char *required[][2] = {
        {"\"version\"", "version"},
        {"\"algorithm\"", "algorithm"},
        {"\"encrypted_payload\"", "encrypted_payload"},
        {"\"ciphertext\"", "ciphertext"},
        {"\"nonce\"", "nonce"},
        {"\"tag\"", "tag"},
        {"\"encrypted_aes_key\"", "encrypted_aes_key"},
    };
    for (size_t i = 0; i < sizeof required / sizeof *required; i++) {
        bad = edit(pkg, required[i][0], "\"renamed\""); /* the field goes missing */
        expect_open_failure(bad, HUSH_E_FORMAT, required[i][1]);
        free(bad);
    }
    bad = edit(pkg, "\"1.0\"", "\"2.0\"");
    expect_open_failure(bad, HUSH_E_UNSUPPORTED, "version");
    free(bad);
    bad = edit(pkg, "\"1.0\"", "1.0");
    expect_open_failure(bad, HUSH_E_FORMAT, "version");
    free(bad);
    bad = edit(pkg, "hybrid-aes256-rsa4096", "hybrid-aes128-rsa2048");
    expect_open_failure(bad, HUSH_E_UNSUPPORTED, "algorithm");
    free(bad);
    bad = edit(pkg, f.nonce, "AAAAAAAAAAAAAAAAAAAA"); /* 15 bytes */
    expect_open_failure(bad, HUSH_E_FORMAT, "nonce");
    free(bad);
    bad = edit(pkg, f.tag, "AAAA");
    expect_open_failure(bad, HUSH_E_FORMAT, "tag");
    free(bad);
    bad = edit(pkg, f.ciphertext, "not base64!");
    expect_open_failure(bad, HUSH_E_FORMAT, "ciphertext");
    free(bad);
    bad = edit(pkg, "{\"ciphertext\"", "[{\"ciphertext\"");
    expect_open_failure(bad, HUSH_E_FORMAT, NULL); /* now not JSON */
    free(bad);
    bad = edit(pkg, "\"version\": \"1.0\", ", "\"version\": \"1.0\", \"version\": \"1.0\", ");
    expect_open_failure(bad, HUSH_E_FORMAT, "duplicate");
    free(bad);
    expect_open_failure("[1, 2]", HUSH_E_FORMAT, "object");
    expect_open_failure("", HUSH_E_FORMAT, NULL);
    /* Every truncation fails, and none crashes. */
    size_t len = strlen(pkg);
    for (size_t cut = 0; cut < len; cut++) {
        hush_error err;
        hush_envelope_v1_opened opened;
        CHECK(hush_envelope_v1_open(alice, pkg, cut, 0, &opened, &err) != HUSH_OK);
    }
    free(pkg);
    hush_secbuf_free(sealed);
}

/* The two *_algorithm labels are never read, as the nomyo client never reads
 * them: `algorithm` alone names the suite. */
static void test_algorithm_labels_ignored(void)
{
    static const char *edits[][2] = {
        {"\"RSA-OAEP-SHA256\"", "[\"RSA-PKCS1\"]"},
        {"\"AES-256-GCM\"", "\"AES-256-CBC\""},
        {"\"key_algorithm\"", "\"renamed\""},
        {"\"payload_algorithm\"", "\"renamed_too\""},
    };
    hush_secbuf *sealed = seal(MARKER);
    fields f;
    split_package(sealed, &f);
    char *pkg = join_package(&f);
    for (size_t i = 0; i < sizeof edits / sizeof *edits; i++) {
        hush_error err;
        hush_envelope_v1_opened opened;
        char *variant = edit(pkg, edits[i][0], edits[i][1]);
        CHECK_OK(open_text(alice, variant, &opened, &err), &err);
        hush_envelope_v1_opened_clear(&opened);
        free(variant);
    }
    free(pkg);
    hush_secbuf_free(sealed);
}

static void test_parse_error_keeps_offset(void)
{
    hush_error err;
    hush_envelope_v1_opened opened;
    CHECK_STATUS(open_text(alice, "{\"version\": tru}", &opened, &err), HUSH_E_FORMAT, &err);
    CHECK(err.offset > 0 && err.offset <= 16);
}

static void test_size_limit_before_parsing(void)
{
    hush_secbuf *pkg = seal(MARKER);
    hush_error err;
    hush_envelope_v1_opened opened;
    size_t len = hush_secbuf_len(pkg);
    CHECK_STATUS(hush_envelope_v1_open(alice, hush_secbuf_data(pkg), len, len - 1, &opened, &err),
                 HUSH_E_LIMIT, &err);
    CHECK_OK(hush_envelope_v1_open(alice, hush_secbuf_data(pkg), len, len, &opened, &err), &err);
    hush_envelope_v1_opened_clear(&opened);
    /* Over the default limit, refused even though it is not JSON at all. */
    size_t big = HUSH_V1_DEFAULT_MAX_PACKAGE_BYTES + 1;
    char *junk = calloc(1, big);
    CHECK_STATUS(hush_envelope_v1_open(alice, junk, big, 0, &opened, &err), HUSH_E_LIMIT, &err);
    free(junk);
    hush_secbuf_free(pkg);
}

static void test_bad_arguments(void)
{
    hush_error err;
    hush_secbuf *pkg = NULL;
    hush_envelope_v1_opened opened;
    CHECK_STATUS(hush_envelope_v1_seal(NULL, "x", 1, HUSH_V1_NO_PROCESSED_AT, &pkg, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_envelope_v1_seal(alice_pub, NULL, 1, HUSH_V1_NO_PROCESSED_AT, &pkg, &err),
                 HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_envelope_v1_open(NULL, "{}", 2, 0, &opened, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_envelope_v1_open(alice, "{}", 2, 0, NULL, &err), HUSH_E_ARGUMENT, &err);
    hush_envelope_v1_opened_clear(NULL);
}

int main(void)
{
    hush_error err;
    if (hush_keypair_generate(2048, &alice, &err) != HUSH_OK ||
        hush_keypair_generate(2048, &mallory, &err) != HUSH_OK ||
        hush_pubkey_from_keypair(alice, &alice_pub, &err) != HUSH_OK) {
        fprintf(stderr, "key setup failed: %s\n", err.message);
        return 1;
    }
    RUN_TEST(test_round_trip_sizes);
    RUN_TEST(test_round_trip_default_4096_key);
    RUN_TEST(test_layout_matches_nomyo);
    RUN_TEST(test_fresh_key_and_nonce_per_message);
    RUN_TEST(test_processed_at);
    RUN_TEST(test_algorithm_labels_ignored);
    RUN_TEST(test_every_bit_flip_rejected);
    RUN_TEST(test_wrong_private_key);
    RUN_TEST(test_structural_errors_name_the_field);
    RUN_TEST(test_parse_error_keeps_offset);
    RUN_TEST(test_size_limit_before_parsing);
    RUN_TEST(test_bad_arguments);
    hush_pubkey_free(alice_pub);
    hush_keypair_free(alice);
    hush_keypair_free(mallory);
    return check_report();
}
