/* swtpm.h — a software TPM (swtpm) as a child process for one test run:
 * started on two free loopback ports (server P, control P+1, as the tss2
 * "swtpm" TCTI expects), with its state in a fresh temporary directory;
 * optionally manufactured first (swtpm_setup --create-ek-cert) with an EK
 * certificate signed by a local test CA (swtpm_localca), as
 * tests/python/processes.py's EkCa does. A missing swtpm binary is a
 * failure, never a skip. Include after check.h and peer.h (for its process
 * helpers). */
#ifndef HUSH_TEST_SWTPM_H
#define HUSH_TEST_SWTPM_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "peer.h"

#define SWTPM_READY_TIMEOUT_MS 30000
#define SWTPM_START_ATTEMPTS 5

typedef struct swtpm {
    pid_t pid;
    int port;         /* the command port; control is port + 1 */
    char dir[64];     /* state directory */
    char tcti[64];    /* "swtpm:host=127.0.0.1,port=<port>" */
} swtpm;

/* A new socket, and 127.0.0.1:`port` for it; -1 when no socket could be made. */
static inline int swtpm_loopback_socket(int port, struct sockaddr_in *sa)
{
    memset(sa, 0, sizeof *sa);
    sa->sin_family = AF_INET;
    sa->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa->sin_port = htons((uint16_t)port);
    return socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
}

/* Whether `port` on 127.0.0.1 can be bound right now. */
static inline bool swtpm_port_free(int port)
{
    struct sockaddr_in sa;
    int fd = swtpm_loopback_socket(port, &sa);
    if (fd < 0)
        return false;
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* Whether something listens on `port` of 127.0.0.1. */
static inline bool swtpm_accepts(int port)
{
    struct sockaddr_in sa;
    int fd = swtpm_loopback_socket(port, &sa);
    if (fd < 0)
        return false;
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

/* One attempt on one pair of ports: 1 ready, 0 the child exited (a port
 * was taken in between: try others), -1 a failure worth reporting. */
static inline int swtpm_try_start(swtpm *t, int port)
{
    char server[64], ctrl[64], state[96];
    snprintf(server, sizeof server, "type=tcp,port=%d,bindaddr=127.0.0.1", port);
    snprintf(ctrl, sizeof ctrl, "type=tcp,port=%d,bindaddr=127.0.0.1", port + 1);
    snprintf(state, sizeof state, "dir=%s", t->dir);
    const char *argv[] = {"swtpm", "socket", "--tpm2", "--server", server, "--ctrl", ctrl,
                          "--tpmstate", state, "--flags", "not-need-init,startup-clear", NULL};
    pid_t pid;
    int rc = posix_spawnp(&pid, argv[0], NULL, NULL, (char *const *)argv, environ);
    if (rc != 0) {
        fprintf(stderr, "swtpm: cannot run swtpm: %s (is `make deps` done? the swtpm package "
                        "is needed)\n", strerror(rc));
        return -1;
    }
    long long deadline = now_ms() + SWTPM_READY_TIMEOUT_MS;
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
                fprintf(stderr, "swtpm: the swtpm binary is missing\n");
                return -1;
            }
            return 0;
        }
        if (swtpm_accepts(port) && swtpm_accepts(port + 1)) {
            t->pid = pid;
            t->port = port;
            snprintf(t->tcti, sizeof t->tcti, "swtpm:host=127.0.0.1,port=%d", port);
            return 1;
        }
        if (now_ms() > deadline) {
            fprintf(stderr, "swtpm: not accepting connections within %d ms\n",
                    SWTPM_READY_TIMEOUT_MS);
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return -1;
        }
        sleep_ms(20);
    }
}

static inline void swtpm_stop(swtpm *t)
{
    if (t->pid > 0) {
        int st;
        kill(t->pid, SIGTERM);
        while (waitpid(t->pid, &st, 0) < 0 && errno == EINTR) {
        }
        t->pid = -1;
    }
    if (t->dir[0] != '\0') {
        remove_tree(t->dir);
        t->dir[0] = '\0';
    }
}

/* A fresh state directory for `t`; false (said on stderr) when none. */
static inline bool swtpm_make_dir(swtpm *t)
{
    memset(t, 0, sizeof *t);
    t->pid = -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/hush-swtpm-XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        perror("swtpm: mkdtemp");
        t->dir[0] = '\0';
        return false;
    }
    return true;
}

/* Runs swtpm on the state in t->dir. */
static inline bool swtpm_run(swtpm *t)
{
    for (int attempt = 0; attempt < SWTPM_START_ATTEMPTS; attempt++) {
        int port = unused_port();
        if (port <= 0 || port >= 65535 || !swtpm_port_free(port + 1))
            continue;
        int r = swtpm_try_start(t, port);
        if (r == 1)
            return true;
        if (r < 0)
            break;
    }
    if (t->pid <= 0)
        fprintf(stderr, "swtpm: could not be started\n");
    swtpm_stop(t);
    return false;
}

/* Start a fresh swtpm; on failure says why on stderr. */
static inline bool swtpm_start(swtpm *t)
{
    return swtpm_make_dir(t) && swtpm_run(t);
}

/* ---- manufactured TPMs: EK certificates from a local CA ------------------ */

typedef struct swtpm_ek_ca {
    char dir[64];         /* the CA's state: its keys, certificates, configs */
    char setup_conf[128]; /* swtpm_setup's --config */
} swtpm_ek_ca;

/* `name` found on $PATH, into `out`; false when it is not there. */
static inline bool swtpm_which(const char *name, char *out, size_t cap)
{
    const char *path = getenv("PATH");
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "%s", path != NULL ? path : "/usr/bin:/bin");
    for (char *save = NULL, *d = strtok_r(dirs, ":", &save); d != NULL;
         d = strtok_r(NULL, ":", &save)) {
        snprintf(out, cap, "%s/%s", d, name);
        if (access(out, X_OK) == 0)
            return true;
    }
    fprintf(stderr, "swtpm: %s is missing (the swtpm-tools package is needed)\n", name);
    return false;
}

static inline bool swtpm_write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (f == NULL) {
        perror(path);
        return false;
    }
    bool ok = fputs(text, f) >= 0;
    return fclose(f) == 0 && ok;
}

/* The configuration of a new CA in a fresh directory; the CA itself is
 * made by swtpm_localca with the first certificate. */
static inline bool swtpm_ek_ca_init(swtpm_ek_ca *ca)
{
    char localca[4096], text[8192], conf[128], options[128];
    memset(ca, 0, sizeof *ca);
    snprintf(ca->dir, sizeof ca->dir, "/tmp/hush-ekca-XXXXXX");
    if (mkdtemp(ca->dir) == NULL) {
        perror("swtpm: mkdtemp");
        ca->dir[0] = '\0';
        return false;
    }
    if (!swtpm_which("swtpm_localca", localca, sizeof localca))
        return false;
    snprintf(conf, sizeof conf, "%s/localca.conf", ca->dir);
    snprintf(options, sizeof options, "%s/localca.options", ca->dir);
    snprintf(ca->setup_conf, sizeof ca->setup_conf, "%s/swtpm_setup.conf", ca->dir);
    snprintf(text, sizeof text,
             "statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\n"
             "certserial = %s/certserial\n",
             ca->dir, ca->dir, ca->dir, ca->dir);
    if (!swtpm_write_text(conf, text) ||
        !swtpm_write_text(options, "--platform-manufacturer hushcall-test\n"
                                   "--platform-version 2.1\n--platform-model swtpm\n"))
        return false;
    snprintf(text, sizeof text,
             "create_certs_tool = %s\ncreate_certs_tool_config = %s\n"
             "create_certs_tool_options = %s\n",
             localca, conf, options);
    return swtpm_write_text(ca->setup_conf, text);
}

/* Start a swtpm manufactured by swtpm_setup: EKs, the RSA-2048 one's
 * certificate at NV 0x01C00002, signed by `ca`. */
static inline bool swtpm_start_manufactured(swtpm *t, const swtpm_ek_ca *ca)
{
    if (!swtpm_make_dir(t))
        return false;
    const char *argv[] = {"swtpm_setup", "--tpm2", "--tpmstate", t->dir, "--create-ek-cert",
                          "--config", ca->setup_conf, "--overwrite", NULL};
    int rc = run_program(argv);
    if (rc != 0) {
        fprintf(stderr, "swtpm: swtpm_setup exited with %d\n", rc);
        swtpm_stop(t);
        return false;
    }
    return swtpm_run(t);
}

static inline void swtpm_ek_ca_remove(swtpm_ek_ca *ca)
{
    if (ca->dir[0] != '\0')
        remove_tree(ca->dir);
    ca->dir[0] = '\0';
}

#endif
