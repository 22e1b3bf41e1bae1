/* bench_client.c — what one v1 request costs the client, against the NOMYO
 * peer on loopback with keep-alive: CPU per request and requests/s,
 * sequential and 64 in flight, beside an unencrypted libcurl POST of the
 * same body and one RSA-4096 private-key operation measured in the same
 * run. The peer runs in its own process, so process CPU time here is the
 * client's alone. Two cores are shared with the peer, so every figure is
 * the median of ROUNDS rounds, and each round's costs are divided by the
 * RSA operation measured in that same round. Prints a table; asserts nothing. */
#include <poll.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "check.h"
#include "peer.h"

#define SEQUENTIAL 100
#define CONCURRENT_TOTAL 256
#define IN_FLIGHT 64
#define RSA_OPS 100
#define ROUNDS 5

typedef struct sample {
    double wall_s, cpu_s;
} sample;

static double clock_s(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static sample start_sample(void)
{
    return (sample){clock_s(CLOCK_MONOTONIC), clock_s(CLOCK_PROCESS_CPUTIME_ID)};
}

static sample since(sample s)
{
    return (sample){clock_s(CLOCK_MONOTONIC) - s.wall_s,
                    clock_s(CLOCK_PROCESS_CPUTIME_ID) - s.cpu_s};
}

static const char body[] =
    "{\"model\": \"bench\", \"messages\": [{\"role\": \"system\", \"content\": \"You are brief.\"}, "
    "{\"role\": \"user\", \"content\": \"Summarise the discharge letter in two sentences.\"}], "
    "\"temperature\": 0.2, \"max_tokens\": 128}";

/* An RSA-4096 key and a wrapped AES key: the private-key operation that
 * opens every v1 answer, timed on its own. */
typedef struct rsa_op {
    EVP_PKEY *key;
    EVP_PKEY_CTX *ctx;
    unsigned char wrapped[512];
    size_t wrapped_len;
} rsa_op;

static void rsa_op_init(rsa_op *r)
{
    unsigned char secret[32] = {1};
    r->key = EVP_RSA_gen(4096);
    r->ctx = EVP_PKEY_CTX_new(r->key, NULL);
    r->wrapped_len = sizeof r->wrapped;
    EVP_PKEY_encrypt_init(r->ctx);
    EVP_PKEY_CTX_set_rsa_padding(r->ctx, RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(r->ctx, EVP_sha256());
    EVP_PKEY_encrypt(r->ctx, r->wrapped, &r->wrapped_len, secret, sizeof secret);
    EVP_PKEY_decrypt_init(r->ctx);
    EVP_PKEY_CTX_set_rsa_padding(r->ctx, RSA_PKCS1_OAEP_PADDING);
    EVP_PKEY_CTX_set_rsa_oaep_md(r->ctx, EVP_sha256());
}

/* CPU seconds of one decryption, on this thread's clock. */
static double rsa_op_once(rsa_op *r)
{
    unsigned char out[512];
    size_t out_len = sizeof out;
    double t = clock_s(CLOCK_THREAD_CPUTIME_ID);
    if (EVP_PKEY_decrypt(r->ctx, out, &out_len, r->wrapped, r->wrapped_len) <= 0)
        abort();
    return clock_s(CLOCK_THREAD_CPUTIME_ID) - t;
}

static double rsa_op_hot_loop(rsa_op *r)
{
    double total = 0;
    for (int i = 0; i < RSA_OPS; i++)
        total += rsa_op_once(r);
    return total / RSA_OPS;
}

static void rsa_op_free(rsa_op *r)
{
    EVP_PKEY_CTX_free(r->ctx);
    EVP_PKEY_free(r->key);
}

static sample plain_posts(const peer *p)
{
    char url[128];
    snprintf(url, sizeof url, "%s/plain/echo", p->url);
    CURL *easy = curl_easy_init();
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, peer_collect);
    sample s = start_sample();
    for (int i = 0; i < SEQUENTIAL; i++) {
        char *answer = NULL;
        curl_easy_setopt(easy, CURLOPT_WRITEDATA, &answer);
        if (curl_easy_perform(easy) != CURLE_OK)
            abort();
        free(answer);
    }
    sample took = since(s);
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    return took;
}

/* Requests one after another. Between two requests one RSA operation is
 * timed on its own (and left out of the request figures), so the baseline
 * sees the same cold caches and clock speed as the request it is set against. */
static sample sequential(hush_client *client, rsa_op *r, double *rsa_between)
{
    sample total = {0, 0};
    *rsa_between = 0;
    for (int i = 0; i < SEQUENTIAL; i++) {
        *rsa_between += rsa_op_once(r);
        sample s = start_sample();
        hush_json_doc *doc = NULL;
        hush_error err;
        if (hush_client_complete(client, request_from_string(body), NULL, &doc, &err) != HUSH_OK) {
            fprintf(stderr, "request failed: %s\n", err.message);
            exit(1);
        }
        hush_json_doc_free(doc);
        sample took = since(s);
        total.wall_s += took.wall_s;
        total.cpu_s += took.cpu_s;
    }
    *rsa_between /= SEQUENTIAL;
    return total;
}

/* CONCURRENT_TOTAL calls, IN_FLIGHT at a time, collected through the fd. */
static sample in_flight(hush_client *client)
{
    hush_engine *engine = NULL;
    hush_error err;
    if (hush_engine_new(NULL, &engine, &err) != HUSH_OK)
        exit(1);
    int submitted = 0, finished = 0, running = 0;
    sample s = start_sample();
    while (finished < CONCURRENT_TOTAL) {
        while (running < IN_FLIGHT && submitted < CONCURRENT_TOTAL) {
            hush_call *call;
            if (hush_engine_submit(engine, client, request_from_string(body), NULL, NULL, &call,
                                   &err) != HUSH_OK)
                exit(1);
            submitted++, running++;
        }
        struct pollfd pfd = {hush_engine_fd(engine), POLLIN, 0};
        poll(&pfd, 1, 10000);
        hush_call *done[IN_FLIGHT];
        size_t n = hush_engine_drain(engine, done, IN_FLIGHT);
        for (size_t i = 0; i < n; i++) {
            if (hush_call_result(done[i], NULL, &err) != HUSH_OK) {
                fprintf(stderr, "call failed: %s\n", err.message);
                exit(1);
            }
            hush_call_free(done[i]);
        }
        finished += (int)n, running -= (int)n;
    }
    sample took = since(s);
    hush_engine_free(engine);
    return took;
}

static int by_value(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values)
{
    qsort(values, ROUNDS, sizeof *values, by_value);
    return values[ROUNDS / 2];
}

/* Medians over the rounds of CPU ms per request, of that over each
 * baseline of the same round, and of requests per second. */
static void row(const char *what, int requests, const sample *rounds, const double *hot,
                const double *between)
{
    double cpu_ms[ROUNDS], x_hot[ROUNDS], x_between[ROUNDS], rate[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        double per_request = rounds[r].cpu_s / requests;
        cpu_ms[r] = per_request * 1e3;
        x_hot[r] = per_request / hot[r];
        x_between[r] = per_request / between[r];
        rate[r] = requests / rounds[r].wall_s;
    }
    printf("| %-38s | %6d | %8.3f | %7.2f | %9.2f | %7.1f |\n", what, requests, median(cpu_ms),
           median(x_hot), median(x_between), median(rate));
}

int main(void)
{
    peer p;
    hush_error err;
    hush_client_options o;
    hush_client *client = NULL;
    const char *bits[] = {"--bits", "4096", NULL};
    if (!peer_start(&p, false, bits))
        return 1;
    o = (hush_client_options)HUSH_CLIENT_OPTIONS_INIT;
    o.base_url = p.url;
    o.allow_http = true;
    if (hush_client_new(&o, &client, &err) != HUSH_OK) {
        fprintf(stderr, "client: %s\n", err.message);
        return 1;
    }
    char *pem = NULL;
    /* Key generation is not what we measure: make the key before timing. */
    if (hush_client_public_pem(client, &pem, &err) != HUSH_OK) {
        fprintf(stderr, "client key: %s\n", err.message);
        return 1;
    }
    free(pem);
    hush_json_doc *warm = NULL;
    if (hush_client_complete(client, request_from_string(body), NULL, &warm, &err) != HUSH_OK) {
        fprintf(stderr, "warm-up: %s\n", err.message);
        return 1;
    }
    hush_json_doc_free(warm);

    rsa_op op;
    rsa_op_init(&op);
    double hot[ROUNDS], between[ROUNDS], hot_ms[ROUNDS], between_ms[ROUNDS];
    sample plain[ROUNDS], seq[ROUNDS], conc[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        hot[r] = rsa_op_hot_loop(&op);
        plain[r] = plain_posts(&p);
        seq[r] = sequential(client, &op, &between[r]);
        conc[r] = in_flight(client);
        hot_ms[r] = hot[r] * 1e3;
        between_ms[r] = between[r] * 1e3;
    }
    rsa_op_free(&op);

    printf("hushcall client CPU per request: RSA-4096 keys, %zu-byte request, loopback peer, "
           "median of %d rounds\n\n",
           sizeof body - 1, ROUNDS);
    printf("| %-38s | %6s | %8s | %7s | %9s | %7s |\n", "what", "count", "CPU ms", "x hot",
           "x between", "req/s");
    printf("|----------------------------------------|--------|----------|---------|-----------|"
           "---------|\n");
    printf("| %-38s | %6d | %8.3f | %7.2f | %9s | %7s |\n",
           "RSA-4096 private-key op, hot loop", RSA_OPS, median(hot_ms), 1.0, "", "");
    printf("| %-38s | %6d | %8.3f | %7s | %9.2f | %7s |\n",
           "RSA-4096 private-key op, between reqs", SEQUENTIAL, median(between_ms), "", 1.0, "");
    row("unencrypted libcurl POST, keep-alive", SEQUENTIAL, plain, hot, between);
    row("hushcall v1, sequential (sync API)", SEQUENTIAL, seq, hot, between);
    row("hushcall v1, 64 in flight (engine)", CONCURRENT_TOTAL, conc, hot, between);
    printf("\n\"x hot\" sets a request against one RSA-4096 private-key operation timed in a "
           "tight loop\n(warm caches); \"x between\" against one timed alone between two "
           "sequential requests,\nunder the same conditions as the one inside each request. "
           "req/s is bounded by the\nPython peer, which does RSA-4096 too, not by the client.\n");

    hush_client_free(client);
    peer_stop(&p);
    return 0;
}
