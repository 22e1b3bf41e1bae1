/* swtpm.h — a software TPM (swtpm) as a child process for one test run:
 * started on two free loopback ports (server P, control P+1, as the tss2
 * "swtpm" TCTI expects), with its state in a fresh temporary directory.
 * A missing swtpm binary is a failure, never a skip. Include after check.h
 * and peer.h (for its process helpers). */
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

/* Start a fresh swtpm; on failure says why on stderr. */
static inline bool swtpm_start(swtpm *t)
{
    memset(t, 0, sizeof *t);
    t->pid = -1;
    snprintf(t->dir, sizeof t->dir, "/tmp/hush-swtpm-XXXXXX");
    if (mkdtemp(t->dir) == NULL) {
        perror("swtpm: mkdtemp");
        t->dir[0] = '\0';
        return false;
    }
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

#endif
