/* peer.h — what the client and engine suites share: the NOMYO peer
 * (tests/interop/nomyo_peer.py) started and stopped as a child process, its
 * control endpoints (/_stats, /_control, /_reset) reached with libcurl-easy,
 * and small builders for requests and readers for responses. A peer that
 * cannot start (a missing Python dependency included) is a failure, never a
 * skip. Include after check.h. */
#ifndef HUSH_TEST_PEER_H
#define HUSH_TEST_PEER_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "check.h"

extern char **environ;

#define PEER_SCRIPT HUSH_TEST_INTEROP_DIR "/nomyo_peer.py"
#define PEER_CA_SCRIPT HUSH_TEST_INTEROP_DIR "/make_test_ca.py"
#define PEER_READY_TIMEOUT_MS 60000
#define PEER_MAX_ARGS 32

typedef struct peer {
    pid_t pid;
    int port;
    char url[64];       /* "http://127.0.0.1:<port>" or "https://..." */
    char ca_file[512];  /* for the control requests to an https peer; "" for http */
} peer;

/* ---- small utilities ---------------------------------------------------- */

static inline void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static inline long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run a program to completion; its exit status, 128+signal, or -1. */
static inline int run_program(const char *const argv[])
{
    pid_t pid;
    if (posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ) != 0)
        return -1;
    int st;
    while (waitpid(pid, &st, 0) < 0) {
        if (errno != EINTR)
            return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static inline void remove_tree(const char *dir)
{
    const char *argv[] = {"/bin/rm", "-rf", dir, NULL};
    run_program(argv);
}

/* The whole file, NUL-terminated (malloc'd), or NULL. */
static inline char *read_text_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (buf == NULL)
            break;
        if (n + 1024 > cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - n - 1, f);
        n += got;
        if (got == 0)
            break;
    }
    fclose(f);
    if (buf != NULL) {
        buf[n] = '\0';
        if (len != NULL)
            *len = n;
    }
    return buf;
}

/* `len` bytes into a new file (or over an old one). */
static inline bool write_blob_file(const char *file, const void *data, size_t len)
{
    FILE *f = fopen(file, "wb");
    if (f == NULL)
        return false;
    bool ok = fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

/* A whole small file into `buf`; its length, or 0 when it cannot be read. */
static inline size_t read_blob_file(const char *file, unsigned char *buf, size_t cap)
{
    size_t len = 0;
    char *text = read_text_file(file, &len);
    if (text == NULL || len > cap) {
        free(text);
        return 0;
    }
    memcpy(buf, text, len);
    free(text);
    return len;
}

/* A TCP port on 127.0.0.1 that nothing listens on (bound, then released). */
static inline int unused_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* ---- the peer process --------------------------------------------------- */

/* Start `script` (any test server that prints "READY <port>": the peer,
 * fake_openai.py) with `extra` arguments (NULL-terminated, may be NULL) and
 * wait for its READY line. On failure, says why on stderr. */
static inline bool peer_start_script(peer *p, const char *script, bool tls,
                                     const char *const *extra)
{
    memset(p, 0, sizeof *p);
    p->pid = -1;
    const char *argv[PEER_MAX_ARGS];
    size_t argc = 0;
    argv[argc++] = HUSH_TEST_PYTHON;
    argv[argc++] = script;
    argv[argc++] = "--port";
    argv[argc++] = "0";
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++) {
        if (argc + 1 >= PEER_MAX_ARGS) {
            fprintf(stderr, "peer: too many arguments\n");
            return false;
        }
        argv[argc++] = extra[i];
    }
    argv[argc] = NULL;

    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0) {
        perror("peer: pipe2");
        return false;
    }
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[1], STDOUT_FILENO);
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[1]);
    if (rc != 0) {
        fprintf(stderr, "peer: cannot spawn %s: %s\n", argv[0], strerror(rc));
        close(fds[0]);
        return false;
    }

    char line[256];
    size_t n = 0;
    bool ok = false, done = false;
    long long deadline = now_ms() + PEER_READY_TIMEOUT_MS;
    while (!done) {
        long long left = deadline - now_ms();
        if (left <= 0) {
            fprintf(stderr, "peer: no READY line within %d ms\n", PEER_READY_TIMEOUT_MS);
            break;
        }
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int pr = poll(&pfd, 1, (int)left);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pr < 0) {
            perror("peer: poll");
            break;
        }
        if (pr == 0)
            continue;
        ssize_t got = read(fds[0], line + n, sizeof line - 1 - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            fprintf(stderr, "peer: closed its stdout before READY (did it die? is `make deps` "
                            "done?)\n");
            break;
        }
        n += (size_t)got;
        line[n] = '\0';
        char *nl = strchr(line, '\n');
        if (nl == NULL && n < sizeof line - 1)
            continue;
        done = true;
        if (nl != NULL)
            *nl = '\0';
        int port = 0;
        char tail;
        if (sscanf(line, "READY %d%c", &port, &tail) == 1 && port > 0 && port < 65536) {
            p->port = port;
            ok = true;
        } else {
            fprintf(stderr, "peer: expected \"READY <port>\", got \"%s\"\n", line);
        }
    }
    /* The peer prints nothing more on stdout. */
    close(fds[0]);
    if (!ok) {
        /* Give a dying peer a moment to exit, so its status can be told. */
        int st;
        pid_t r = 0;
        for (int i = 0; i < 100 && (r = waitpid(pid, &st, WNOHANG)) == 0; i++)
            sleep_ms(20);
        if (r == pid) {
            if (WIFEXITED(st))
                fprintf(stderr, "peer: exited with status %d\n", WEXITSTATUS(st));
            else
                fprintf(stderr, "peer: killed by signal %d\n", WTERMSIG(st));
        } else {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
        return false;
    }
    p->pid = pid;
    snprintf(p->url, sizeof p->url, "%s://127.0.0.1:%d", tls ? "https" : "http", p->port);
    return true;
}

/* Start the NOMYO peer; as peer_start_script. */
static inline bool peer_start(peer *p, bool tls, const char *const *extra)
{
    return peer_start_script(p, PEER_SCRIPT, tls, extra);
}

/* Stop the peer (SIGTERM, SIGKILL after 10 s). False when it had already
 * died on its own, which is a failure of the run. */
static inline bool peer_stop(peer *p)
{
    if (p->pid <= 0)
        return true;
    bool was_running = true;
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        fprintf(stderr, "peer on port %d died during the tests\n", p->port);
        was_running = false;
    } else {
        kill(p->pid, SIGTERM);
        long long deadline = now_ms() + 10000;
        for (;;) {
            pid_t r = waitpid(p->pid, &st, WNOHANG);
            if (r == p->pid || (r < 0 && errno != EINTR))
                break;
            if (now_ms() > deadline) {
                kill(p->pid, SIGKILL);
                waitpid(p->pid, &st, 0);
                break;
            }
            sleep_ms(20);
        }
    }
    p->pid = -1;
    return was_running;
}

/* Write the test CA, server and client certificates into `dir`. */
static inline bool peer_make_test_ca(const char *dir)
{
    const char *argv[] = {HUSH_TEST_PYTHON, PEER_CA_SCRIPT, dir, NULL};
    int rc = run_program(argv);
    if (rc != 0)
        fprintf(stderr, "make_test_ca.py failed (%d): is `make deps` done?\n", rc);
    return rc == 0;
}

/* ---- control endpoints -------------------------------------------------- */

typedef struct peer_body {
    char *data;
    size_t len;
} peer_body;

static inline size_t peer_collect(char *data, size_t size, size_t count, void *user)
{
    peer_body *b = user;
    size_t n = size * count;
    char *grown = realloc(b->data, b->len + n + 1);
    if (grown == NULL)
        return 0;
    b->data = grown;
    memcpy(b->data + b->len, data, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

/* One request to the peer. Returns the HTTP status (or -1 when the transfer
 * failed); `*out` (may be NULL) receives the malloc'd, NUL-terminated body. */
static inline long peer_http(const peer *p, const char *method, const char *path,
                             const char *body, char **out, size_t *out_len)
{
    if (out != NULL)
        *out = NULL;
    CURL *h = curl_easy_init();
    if (h == NULL)
        return -1;
    char url[256];
    snprintf(url, sizeof url, "%s%s", p->url, path);
    peer_body resp = {NULL, 0};
    struct curl_slist *headers = NULL;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 30000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, peer_collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    if (p->ca_file[0] != '\0')
        curl_easy_setopt(h, CURLOPT_CAINFO, p->ca_file);
    if (strcmp(method, "POST") == 0) {
        headers = curl_slist_append(headers, "Content-Type: application/json");
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body != NULL ? body : "{}");
    }
    long status = -1;
    CURLcode rc = curl_easy_perform(h);
    if (rc == CURLE_OK)
        curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    else
        fprintf(stderr, "peer: %s %s failed: %s\n", method, path, curl_easy_strerror(rc));
    curl_slist_free_all(headers);
    curl_easy_cleanup(h);
    if (out != NULL && resp.data == NULL && status >= 0)
        resp.data = calloc(1, 1);
    if (out != NULL) {
        *out = resp.data;
        if (out_len != NULL)
            *out_len = resp.len;
    } else {
        free(resp.data);
    }
    return status;
}

/* GET /_stats parsed with hushcall's own parser; NULL (and a message) on failure. */
static inline hush_json_doc *peer_stats(const peer *p)
{
    char *text;
    size_t len = 0;
    long status = peer_http(p, "GET", "/_stats", NULL, &text, &len);
    hush_json_doc *doc = NULL;
    hush_error err;
    hush_error_clear(&err);
    if (status != 200)
        fprintf(stderr, "peer: GET /_stats answered %ld\n", status);
    else if (hush_json_parse(text, len, NULL, HUSH_SECMEM_NO_LOCK, &doc, &err) != HUSH_OK)
        fprintf(stderr, "peer: /_stats is not JSON: %s\n", err.message);
    free(text);
    return doc;
}

/* An integer counter of /_stats ("pubkey_fetches", "completions"); -1 on failure. */
static inline long long peer_stat(const peer *p, const char *name)
{
    hush_json_doc *doc = peer_stats(p);
    int64_t v = -1;
    if (doc != NULL) {
        const hush_json_value *n =
            hush_json_object_get(hush_json_doc_root(doc), name, strlen(name));
        if (hush_json_int64(n, &v, NULL) != HUSH_OK) {
            fprintf(stderr, "peer: /_stats has no integer \"%s\"\n", name);
            v = -1;
        }
    }
    hush_json_doc_free(doc);
    return v;
}

/* POSTs the peer saw with this payload id (0 when none); -1 on failure. */
static inline long long peer_payload_posts(const peer *p, const char *payload_id)
{
    if (payload_id == NULL)
        return -1;
    hush_json_doc *doc = peer_stats(p);
    int64_t v = -1;
    if (doc != NULL) {
        const hush_json_value *by =
            hush_json_object_get(hush_json_doc_root(doc), "by_payload", 10);
        const hush_json_value *n = hush_json_object_get(by, payload_id, strlen(payload_id));
        if (hush_json_type_of(by) != HUSH_JSON_OBJECT)
            fprintf(stderr, "peer: /_stats has no \"by_payload\" object\n");
        else if (n == NULL)
            v = 0;
        else if (hush_json_int64(n, &v, NULL) != HUSH_OK)
            v = -1;
    }
    hush_json_doc_free(doc);
    return v;
}

/* Arrival times (seconds, the server's clock) of the POSTs with this payload
 * id, up to `max` of them; returns how many there were, or -1. */
static inline long peer_arrivals(const peer *p, const char *payload_id, double *out, size_t max)
{
    if (payload_id == NULL)
        return -1;
    hush_json_doc *doc = peer_stats(p);
    long count = -1;
    if (doc != NULL) {
        const hush_json_value *arr = hush_json_object_get(
            hush_json_object_get(hush_json_doc_root(doc), "arrivals", 8), payload_id,
            strlen(payload_id));
        if (hush_json_type_of(arr) == HUSH_JSON_ARRAY) {
            count = (long)hush_json_length(arr);
            for (size_t i = 0; i < (size_t)count && i < max; i++) {
                if (hush_json_double(hush_json_array_get(arr, i), &out[i], NULL) != HUSH_OK)
                    count = -1;
            }
        } else {
            count = 0;
        }
    }
    hush_json_doc_free(doc);
    return count;
}

/* POST /_control with a JSON object such as {"pubkey_mode": "garbage"}. */
static inline bool peer_control(const peer *p, const char *json)
{
    long status = peer_http(p, "POST", "/_control", json, NULL, NULL);
    if (status != 200)
        fprintf(stderr, "peer: POST /_control answered %ld\n", status);
    return status == 200;
}

/* POST /_reset: counters and control back to their start. */
static inline bool peer_reset(const peer *p)
{
    long status = peer_http(p, "POST", "/_reset", "{}", NULL, NULL);
    if (status != 200)
        fprintf(stderr, "peer: POST /_reset answered %ld\n", status);
    return status == 200;
}

/* ---- requests and responses --------------------------------------------- */

/* A request buffer holding `json` (hushcall's calls take it over). */
static inline hush_secbuf *request_from_string(const char *json)
{
    hush_secbuf *buf = NULL;
    size_t len = strlen(json);
    if (hush_secbuf_new(len + 1, 0, HUSH_SECMEM_DEFAULT, &buf, NULL) != HUSH_OK)
        return NULL;
    if (hush_secbuf_append(buf, json, len, NULL) != HUSH_OK) {
        hush_secbuf_free(buf);
        return NULL;
    }
    return buf;
}

/* A chat request whose last user message is `content` (no characters that
 * need escaping), with `x_test` (a JSON object text, or NULL) for the peer. */
static inline hush_secbuf *chat_request(const char *content, const char *x_test)
{
    static const char head[] = "{\"model\": \"test-model\", \"messages\": [{\"role\": \"system\", "
                               "\"content\": \"be brief\"}, {\"role\": \"user\", \"content\": \"";
    size_t need = sizeof head + strlen(content) + (x_test ? strlen(x_test) : 0) + 32;
    char *text = malloc(need);
    if (text == NULL)
        return NULL;
    if (x_test != NULL)
        snprintf(text, need, "%s%s\"}], \"x_test\": %s}", head, content, x_test);
    else
        snprintf(text, need, "%s%s\"}]}", head, content);
    hush_secbuf *buf = request_from_string(text);
    free(text);
    return buf;
}

/* A string member at `path` (keys, NULL-terminated) from the root, or NULL. */
static inline const char *json_path_string(const hush_json_doc *doc, const char *const *path)
{
    const hush_json_value *v = hush_json_doc_root(doc);
    for (size_t i = 0; path[i] != NULL; i++)
        v = hush_json_object_get(v, path[i], strlen(path[i]));
    return hush_json_string(v, NULL);
}

static inline const hush_json_value *json_member2(const hush_json_doc *doc, const char *a,
                                                  const char *b)
{
    return hush_json_object_get(hush_json_object_get(hush_json_doc_root(doc), a, strlen(a)), b,
                                strlen(b));
}

/* choices[0].message.content of a response, or NULL. */
static inline const char *response_content(const hush_json_doc *doc)
{
    const hush_json_value *choice =
        hush_json_array_get(hush_json_object_get(hush_json_doc_root(doc), "choices", 7), 0);
    return hush_json_string(
        hush_json_object_get(hush_json_object_get(choice, "message", 7), "content", 7), NULL);
}

/* True when the response's content is "echo: <content>". */
static inline bool response_echoes(const hush_json_doc *doc, const char *content)
{
    const char *got = response_content(doc);
    return got != NULL && strncmp(got, "echo: ", 6) == 0 && strcmp(got + 6, content) == 0;
}

static inline const char *response_payload_id(const hush_json_doc *doc)
{
    return hush_json_string(json_member2(doc, "_metadata", "payload_id"), NULL);
}

/* Canonical UUIDv4 text: 8-4-4-4-12 lower-case hex, version 4, variant 10xx. */
static inline bool looks_like_uuid4(const char *s)
{
    if (s == NULL || strlen(s) != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return s[14] == '4' && strchr("89ab", s[19]) != NULL;
}

#endif
