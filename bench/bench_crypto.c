/* bench_crypto.c — what the crypto/ layer's operations cost: ML-KEM-768,
 * X25519, X-Wing, and HPKE setup, seal and open of 1 KiB and 1 MiB for each
 * KEM and AEAD. Each operation is warmed up, then timed in ROUNDS rounds of
 * enough calls for --min-time seconds; the figure is the median round, in
 * microseconds per call. The clock is this thread's CPU time, so engineers
 * sharing the machine slow the figures less (--clock wall for the
 * monotonic clock). bench/bench_crypto.py sets these beside pyca
 * `cryptography` measured the same way (--json gives it one line per
 * operation). Exits 1 when a call fails; asserts nothing about speed.
 *
 *   bench_crypto [--json] [--min-time SECONDS] [--clock cpu|wall] [--only PREFIX]
 *
 * --only times just the operations whose names start with PREFIX, e.g. under
 * valgrind --tool=callgrind to see where one of them spends its time. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "hushcall/hpke.h"
#include "hushcall/mlkem.h"
#include "hushcall/secmem.h"
#include "hushcall/xwing.h"

#define ROUNDS 5
#define KIB 1024u
#define MIB (1024u * 1024u)
#define BENCH_INFO "hushcall bench_crypto"
#define BATCH 64 /* calls per untimed prepare step */

static void must(hush_status status, const hush_error *err, const char *what)
{
    if (status != HUSH_OK) {
        fprintf(stderr, "bench_crypto: %s failed: %s\n", what, err->message);
        exit(1);
    }
}

static void must_ossl(int ok, const char *what)
{
    if (ok <= 0) {
        fprintf(stderr, "bench_crypto: %s failed (OpenSSL)\n", what);
        exit(1);
    }
}

static double now_s(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the harness ---------------------------------------------------------- */

typedef void (*bench_fn)(void *state);
typedef void (*bench_prepare_fn)(void *state, size_t calls); /* for the next `calls` calls */

typedef struct bench_case {
    const char *op;   /* the name bench_crypto.py matches pyca's figure by */
    size_t bytes;     /* the payload, for MB/s; 0 for a fixed-size operation */
    bench_prepare_fn prepare; /* untimed, before each batch of calls (NULL for none) */
    bench_fn run;     /* the timed call */
    void *state;
} bench_case;

typedef struct span {
    double timed; /* the calls alone */
    double whole; /* with the prepare steps */
} span;

/* What `iterations` calls take on `clock`. With a prepare step the calls
 * are timed in batches between the steps. */
static span time_calls(const bench_case *c, long iterations, clockid_t clock)
{
    double start = now_s(clock);
    if (c->prepare == NULL) {
        for (long i = 0; i < iterations; i++)
            c->run(c->state);
        double took = now_s(clock) - start;
        return (span){took, took};
    }
    double timed = 0;
    for (long done = 0; done < iterations; done += BATCH) {
        long batch = iterations - done < BATCH ? iterations - done : BATCH;
        c->prepare(c->state, (size_t)batch);
        double batch_start = now_s(clock);
        for (long i = 0; i < batch; i++)
            c->run(c->state);
        timed += now_s(clock) - batch_start;
    }
    return (span){timed, now_s(clock) - start};
}

/* Calls per round so that one round, prepare steps included, takes about
 * `min_time` seconds; the doubling doubles as the warm-up. */
static long calibrate(const bench_case *c, double min_time, clockid_t clock)
{
    long iterations = 1;
    double took = time_calls(c, iterations, clock).whole;
    while (took < min_time / 10) {
        iterations *= 2;
        took = time_calls(c, iterations, clock).whole;
    }
    long scaled = (long)((double)iterations * min_time / took) + 1;
    return scaled > 0 ? scaled : 1;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct bench_result {
    long iterations;
    double us_per_op[ROUNDS]; /* sorted */
} bench_result;

static bench_result measure(const bench_case *c, double min_time, clockid_t clock)
{
    bench_result r;
    r.iterations = calibrate(c, min_time, clock);
    for (int i = 0; i < ROUNDS; i++)
        r.us_per_op[i] = time_calls(c, r.iterations, clock).timed * 1e6 / (double)r.iterations;
    qsort(r.us_per_op, ROUNDS, sizeof r.us_per_op[0], by_value);
    return r;
}

static double median_us(const bench_result *r)
{
    return r->us_per_op[ROUNDS / 2];
}

/* Bytes per microsecond is decimal megabytes per second. */
static double mb_per_s(const bench_case *c, const bench_result *r)
{
    return (double)c->bytes / median_us(r);
}

static void print_json(const bench_case *c, const bench_result *r)
{
    printf("{\"op\": \"%s\", \"us_per_op\": %.3f, \"bytes\": %zu, ", c->op, median_us(r),
           c->bytes);
    if (c->bytes > 0)
        printf("\"mb_per_s\": %.1f, ", mb_per_s(c, r));
    printf("\"iterations\": %ld, \"rounds_us\": [", r->iterations);
    for (int i = 0; i < ROUNDS; i++)
        printf("%s%.3f", i > 0 ? ", " : "", r->us_per_op[i]);
    printf("]}\n");
}

static void print_row(const bench_case *c, const bench_result *r)
{
    printf("| %-40s | %12.2f | %9ld | ", c->op, median_us(r), r->iterations);
    if (c->bytes > 0)
        printf("%8.1f |\n", mb_per_s(c, r));
    else
        printf("%8s |\n", "");
}

/* ---- ML-KEM-768 ----------------------------------------------------------- */

typedef struct mlkem_state {
    unsigned char ek[HUSH_MLKEM768_ENCAPS_KEY_BYTES];
    unsigned char ct[HUSH_MLKEM768_CIPHERTEXT_BYTES];
    unsigned char *dk; /* secure memory */
    unsigned char *ss; /* secure memory */
} mlkem_state;

static void mlkem_keygen(void *state)
{
    mlkem_state *s = state;
    hush_error err;
    must(hush_mlkem768_keygen(s->ek, s->dk, &err), &err, "ML-KEM-768 keygen");
}

static void mlkem_encaps(void *state)
{
    mlkem_state *s = state;
    hush_error err;
    must(hush_mlkem768_encaps(s->ek, s->ct, s->ss, &err), &err, "ML-KEM-768 encaps");
}

static void mlkem_decaps(void *state)
{
    mlkem_state *s = state;
    hush_error err;
    must(hush_mlkem768_decaps(s->dk, s->ct, s->ss, &err), &err, "ML-KEM-768 decaps");
}

/* ---- X25519 (OpenSSL's, as the core uses it) ------------------------------ */

typedef struct x25519_state {
    EVP_PKEY *own, *peer;
    unsigned char *ss; /* secure memory, 32 bytes */
} x25519_state;

static EVP_PKEY *x25519_generate(void)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "X25519");
    must_ossl(key != NULL, "X25519 keygen");
    return key;
}

static void x25519_derive(void *state)
{
    x25519_state *s = state;
    size_t len = 32;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(s->own, NULL);
    must_ossl(ctx != NULL, "X25519 context");
    must_ossl(EVP_PKEY_derive_init(ctx), "X25519 derive init");
    must_ossl(EVP_PKEY_derive_set_peer(ctx, s->peer), "X25519 peer");
    must_ossl(EVP_PKEY_derive(ctx, s->ss, &len), "X25519 derive");
    EVP_PKEY_CTX_free(ctx);
}

/* ---- X-Wing ------------------------------------------------------------- */

typedef struct xwing_state {
    unsigned char pk[HUSH_XWING_PUBLIC_KEY_BYTES];
    unsigned char ct[HUSH_XWING_CIPHERTEXT_BYTES];
    unsigned char *sk; /* secure memory */
    unsigned char *ss; /* secure memory */
} xwing_state;

static void xwing_keygen(void *state)
{
    xwing_state *s = state;
    hush_error err;
    must(hush_xwing_keygen(s->sk, s->pk, &err), &err, "X-Wing keygen");
}

static void xwing_encaps(void *state)
{
    xwing_state *s = state;
    hush_error err;
    must(hush_xwing_encaps(s->pk, s->ct, s->ss, &err), &err, "X-Wing encaps");
}

static void xwing_decaps(void *state)
{
    xwing_state *s = state;
    hush_error err;
    must(hush_xwing_decaps(s->sk, s->ct, s->ss, &err), &err, "X-Wing decaps");
}

/* ---- HPKE ----------------------------------------------------------------- */

/* One suite and one message size: a recipient key pair, and a message
 * sealed to it in a context of its own (sequence number 0), so every
 * fresh recipient context opens it. */
typedef struct hpke_state {
    hush_hpke_suite suite;
    hush_hpke_keypair *recipient;
    hush_hpke_pubkey *recipient_public;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len;
    const unsigned char *message; /* secure memory, shared by all states */
    size_t message_len;
    unsigned char *sealed; /* message_len + tag bytes; public */
    size_t sealed_len;
    unsigned char *scratch; /* where the timed seal writes; public */
    unsigned char *opened;  /* secure memory, message_len bytes, shared */
    hush_hpke_ctx *openers[BATCH]; /* fresh recipient contexts for hpke_open_only */
    size_t next_opener;
} hpke_state;

static hush_hpke_ctx *hpke_sender(hpke_state *s, unsigned char *enc, size_t *enc_len)
{
    hush_hpke_ctx *ctx = NULL;
    hush_error err;
    must(hush_hpke_setup_base_s(s->suite, s->recipient_public, BENCH_INFO, strlen(BENCH_INFO),
                                enc, HUSH_HPKE_MAX_ENC_BYTES, enc_len, &ctx, &err),
         &err, "HPKE SetupBaseS");
    return ctx;
}

static hush_hpke_ctx *hpke_recipient(const hpke_state *s)
{
    hush_hpke_ctx *ctx = NULL;
    hush_error err;
    must(hush_hpke_setup_base_r(s->suite, s->recipient, s->enc, s->enc_len, BENCH_INFO,
                                strlen(BENCH_INFO), &ctx, &err),
         &err, "HPKE SetupBaseR");
    return ctx;
}

static void hpke_seal_into(hush_hpke_ctx *ctx, const hpke_state *s, unsigned char *out)
{
    size_t len = 0;
    hush_error err;
    must(hush_hpke_seal(ctx, NULL, 0, s->message, s->message_len, out,
                        s->message_len + HUSH_HPKE_TAG_BYTES, &len, &err),
         &err, "HPKE Seal");
}

static void hpke_open_with(hush_hpke_ctx *ctx, const hpke_state *s)
{
    size_t len = 0;
    hush_error err;
    must(hush_hpke_open(ctx, NULL, 0, s->sealed, s->sealed_len, s->opened, s->message_len, &len,
                        &err),
         &err, "HPKE Open");
}

static void hpke_setup_s(void *state)
{
    hpke_state *s = state;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len = 0;
    hush_hpke_ctx_free(hpke_sender(s, enc, &enc_len));
}

static void hpke_setup_r(void *state)
{
    hush_hpke_ctx_free(hpke_recipient(state));
}

/* One message to a recipient, as pyca's Suite.encrypt does it: SetupBaseS,
 * one Seal, free. */
static void hpke_seal_single_shot(void *state)
{
    hpke_state *s = state;
    unsigned char enc[HUSH_HPKE_MAX_ENC_BYTES];
    size_t enc_len = 0;
    hush_hpke_ctx *ctx = hpke_sender(s, enc, &enc_len);
    hpke_seal_into(ctx, s, s->scratch);
    hush_hpke_ctx_free(ctx);
}

/* SetupBaseR, one Open, free: pyca's Suite.decrypt. */
static void hpke_open_single_shot(void *state)
{
    hpke_state *s = state;
    hush_hpke_ctx *ctx = hpke_recipient(s);
    hpke_open_with(ctx, s);
    hush_hpke_ctx_free(ctx);
}

static void hpke_free_openers(hpke_state *s)
{
    for (size_t i = 0; i < BATCH; i++) {
        hush_hpke_ctx_free(s->openers[i]);
        s->openers[i] = NULL;
    }
}

/* The AEAD half of an open: fresh recipient contexts are made untimed, one
 * for each call of the next batch (an open moves its context's sequence
 * number on). */
static void hpke_fresh_openers(void *state, size_t calls)
{
    hpke_state *s = state;
    hpke_free_openers(s);
    for (size_t i = 0; i < calls; i++)
        s->openers[i] = hpke_recipient(s);
    s->next_opener = 0;
}

static void hpke_open_only(void *state)
{
    hpke_state *s = state;
    hpke_open_with(s->openers[s->next_opener++], s);
}

static void hpke_state_init(hpke_state *s, hush_hpke_suite suite, const unsigned char *message,
                            size_t message_len, unsigned char *opened)
{
    hush_error err;
    memset(s, 0, sizeof *s);
    s->suite = suite;
    s->message = message;
    s->message_len = message_len;
    s->opened = opened;
    s->sealed_len = message_len + HUSH_HPKE_TAG_BYTES;
    s->sealed = malloc(s->sealed_len);
    s->scratch = malloc(s->sealed_len);
    if (s->sealed == NULL || s->scratch == NULL) {
        fprintf(stderr, "bench_crypto: out of memory\n");
        exit(1);
    }
    must(hush_hpke_suite_check(suite, &err), &err, "HPKE suite");
    must(hush_hpke_keypair_generate(suite.kem_id, &s->recipient, &err), &err, "HPKE keygen");
    must(hush_hpke_keypair_public(s->recipient, &s->recipient_public, &err), &err,
         "HPKE public key");
    hush_hpke_ctx *sender = hpke_sender(s, s->enc, &s->enc_len);
    hpke_seal_into(sender, s, s->sealed);
    hush_hpke_ctx_free(sender);
}

static void hpke_state_free(hpke_state *s)
{
    hpke_free_openers(s);
    hush_hpke_pubkey_free(s->recipient_public);
    hush_hpke_keypair_free(s->recipient);
    free(s->sealed);
    free(s->scratch);
}

/* ---- the cases ------------------------------------------------------------ */

typedef struct named_id {
    uint16_t id;
    const char *name;
} named_id;

static const named_id kems[] = {{HUSH_HPKE_KEM_X25519_SHA256, "x25519"},
                                {HUSH_HPKE_KEM_XWING, "xwing"}};
static const named_id aeads[] = {{HUSH_HPKE_AEAD_AES_256_GCM, "aes256gcm"},
                                 {HUSH_HPKE_AEAD_CHACHA20_POLY1305, "chacha20poly1305"}};
static const size_t sizes[] = {KIB, MIB};

#define N_KEMS (sizeof kems / sizeof kems[0])
#define N_AEADS (sizeof aeads / sizeof aeads[0])
#define N_SIZES (sizeof sizes / sizeof sizes[0])
#define N_HPKE (N_KEMS * N_AEADS * N_SIZES)
/* 7 primitives; per KEM setup_s and setup_r; per HPKE state seal and open;
 * per AEAD and size the open alone. */
#define MAX_CASES (7 + 2 * N_KEMS + 2 * N_HPKE + N_AEADS * N_SIZES)

/* The HPKE states run KEM by KEM, within a KEM AEAD by AEAD, within an
 * AEAD size by size. */
static const named_id *kem_of(size_t state)
{
    return &kems[state / (N_AEADS * N_SIZES)];
}

static const named_id *aead_of(size_t state)
{
    return &aeads[(state / N_SIZES) % N_AEADS];
}

static size_t size_of(size_t state)
{
    return sizes[state % N_SIZES];
}

typedef struct bench_set {
    bench_case cases[MAX_CASES];
    size_t count;
    char names[MAX_CASES][64];
} bench_set;

static void add_case(bench_set *set, const char *op, size_t bytes, bench_prepare_fn prepare,
                     bench_fn run, void *state)
{
    snprintf(set->names[set->count], sizeof set->names[0], "%s", op);
    set->cases[set->count] =
        (bench_case){set->names[set->count], bytes, prepare, run, state};
    set->count++;
}

static const char *size_name(size_t bytes)
{
    return bytes == MIB ? "1m" : "1k";
}

/* Seal and open for every KEM, AEAD and size; setup on its own per KEM
 * (with the first AEAD and size); the open without its setup per AEAD and
 * size (with the first KEM: the KEM does not touch the AEAD). */
static void add_hpke_cases(bench_set *set, hpke_state states[N_HPKE])
{
    char op[64];
    for (size_t k = 0; k < N_KEMS; k++) {
        hpke_state *first = &states[k * N_AEADS * N_SIZES];
        snprintf(op, sizeof op, "hpke_setup_s_%s", kems[k].name);
        add_case(set, op, 0, NULL, hpke_setup_s, first);
        snprintf(op, sizeof op, "hpke_setup_r_%s", kems[k].name);
        add_case(set, op, 0, NULL, hpke_setup_r, first);
    }
    for (size_t i = 0; i < N_HPKE; i++) {
        const char *kem = kem_of(i)->name, *aead = aead_of(i)->name;
        const char *size = size_name(size_of(i));
        snprintf(op, sizeof op, "hpke_seal_%s_%s_%s", kem, aead, size);
        add_case(set, op, states[i].message_len, NULL, hpke_seal_single_shot, &states[i]);
        snprintf(op, sizeof op, "hpke_open_%s_%s_%s", kem, aead, size);
        add_case(set, op, states[i].message_len, NULL, hpke_open_single_shot, &states[i]);
    }
    for (size_t i = 0; i < N_AEADS * N_SIZES; i++) {
        snprintf(op, sizeof op, "hpke_open_only_%s_%s", aead_of(i)->name, size_name(size_of(i)));
        add_case(set, op, states[i].message_len, hpke_fresh_openers, hpke_open_only, &states[i]);
    }
}

/* Secrets and plaintext in one locked arena, freed at the end. */
static void *secret(hush_arena *arena, size_t size)
{
    void *p = NULL;
    hush_error err;
    must(hush_arena_alloc(arena, size, &p, &err), &err, "secure memory");
    return p;
}

typedef struct bench_options {
    int json;
    double min_time;
    clockid_t clock;
    const char *clock_name;
    const char *only; /* a prefix of the operations to time */
} bench_options;

static void usage(void)
{
    fprintf(stderr, "usage: bench_crypto [--json] [--min-time SECONDS] [--clock cpu|wall] "
                    "[--only PREFIX]\n");
    exit(2);
}

static bench_options parse_args(int argc, char **argv)
{
    bench_options o = {0, 0.3, CLOCK_THREAD_CPUTIME_ID, "cpu", ""};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            o.json = 1;
        else if (strcmp(argv[i], "--min-time") == 0 && i + 1 < argc)
            o.min_time = strtod(argv[++i], NULL);
        else if (strcmp(argv[i], "--clock") == 0 && i + 1 < argc)
            o.clock_name = argv[++i];
        else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc)
            o.only = argv[++i];
        else
            usage();
    }
    if (strcmp(o.clock_name, "wall") == 0)
        o.clock = CLOCK_MONOTONIC;
    else if (strcmp(o.clock_name, "cpu") != 0)
        usage();
    if (!(o.min_time > 0)) {
        fprintf(stderr, "bench_crypto: --min-time must be above 0\n");
        exit(2);
    }
    return o;
}

/* One 1 MiB message (secure memory, as plaintext is) and one buffer to open
 * into, shared by every HPKE state. */
static void hpke_states_init(hpke_state states[N_HPKE], hush_arena *arena)
{
    unsigned char *message = secret(arena, MIB), *opened = secret(arena, MIB);
    must_ossl(RAND_bytes(message, MIB), "random message");
    for (size_t i = 0; i < N_HPKE; i++) {
        hush_hpke_suite suite = {kem_of(i)->id, HUSH_HPKE_KDF_HKDF_SHA256, aead_of(i)->id};
        hpke_state_init(&states[i], suite, message, size_of(i), opened);
    }
}

static void print_header(const bench_options *o)
{
    if (o->json) {
        printf("{\"meta\": {\"mlkem\": \"%s\", \"openssl\": \"%s\", \"rounds\": %d, "
               "\"min_time_s\": %g, \"clock\": \"%s\"}}\n",
               hush_mlkem768_implementation(), OpenSSL_version(OPENSSL_VERSION), ROUNDS,
               o->min_time, o->clock_name);
        return;
    }
    printf("hushcall crypto, ML-KEM-768 by %s, on %s; median of %d rounds, %s clock\n\n",
           hush_mlkem768_implementation(), OpenSSL_version(OPENSSL_VERSION), ROUNDS,
           o->clock_name);
    printf("| %-40s | %12s | %9s | %8s |\n", "operation", "us/op", "calls", "MB/s");
    printf("|------------------------------------------|--------------|-----------|----------|\n");
}

/* Measure and print each case --only selects, as soon as it is measured. */
static void run_set(const bench_set *set, const bench_options *o)
{
    for (size_t i = 0; i < set->count; i++) {
        const bench_case *c = &set->cases[i];
        if (strncmp(c->op, o->only, strlen(o->only)) != 0)
            continue;
        bench_result r = measure(c, o->min_time, o->clock);
        if (o->json)
            print_json(c, &r);
        else
            print_row(c, &r);
        fflush(stdout);
    }
}

int main(int argc, char **argv)
{
    bench_options o = parse_args(argc, argv);
    hush_error err;
    hush_arena *arena = NULL;
    must(hush_arena_new(HUSH_SECMEM_DEFAULT, &arena, &err), &err, "secure memory");

    mlkem_state mlkem = {.dk = secret(arena, HUSH_MLKEM768_DECAPS_KEY_BYTES),
                         .ss = secret(arena, HUSH_MLKEM768_SHARED_SECRET_BYTES)};
    mlkem_keygen(&mlkem);
    mlkem_encaps(&mlkem);
    x25519_state x25519 = {x25519_generate(), x25519_generate(), secret(arena, 32)};
    xwing_state xwing = {.sk = secret(arena, HUSH_XWING_PRIVATE_KEY_BYTES),
                         .ss = secret(arena, HUSH_XWING_SHARED_SECRET_BYTES)};
    xwing_keygen(&xwing);
    xwing_encaps(&xwing);

    hpke_state hpke[N_HPKE];
    hpke_states_init(hpke, arena);

    bench_set set = {.count = 0};
    add_case(&set, "mlkem768_keygen", 0, NULL, mlkem_keygen, &mlkem);
    add_case(&set, "mlkem768_encaps", 0, NULL, mlkem_encaps, &mlkem);
    add_case(&set, "mlkem768_decaps", 0, NULL, mlkem_decaps, &mlkem);
    add_case(&set, "x25519_derive", 0, NULL, x25519_derive, &x25519);
    add_case(&set, "xwing_keygen", 0, NULL, xwing_keygen, &xwing);
    add_case(&set, "xwing_encaps", 0, NULL, xwing_encaps, &xwing);
    add_case(&set, "xwing_decaps", 0, NULL, xwing_decaps, &xwing);
    add_hpke_cases(&set, hpke);

    print_header(&o);
    run_set(&set, &o);

    for (size_t i = 0; i < N_HPKE; i++)
        hpke_state_free(&hpke[i]);
    EVP_PKEY_free(x25519.own);
    EVP_PKEY_free(x25519.peer);
    hush_arena_free(arena);
    return 0;
}
