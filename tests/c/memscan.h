/* memscan.h — count copies of a secret in this process's readable memory.
 * Reads every readable mapping through /proc/self/mem (so guard pages and
 * unmapped holes cannot fault). The needle is held XOR-masked so that the
 * test's own reference copy is never itself a match. */
#ifndef HUSH_TEST_MEMSCAN_H
#define HUSH_TEST_MEMSCAN_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MEMSCAN_MASK 0x5a
/* Sanitizer shadow and similar reservations are huge and hold no data of ours. */
#define MEMSCAN_MAX_REGION (512ul << 20)

static int memscan_matches(const unsigned char *p, const unsigned char *masked, size_t n)
{
    for (size_t j = 0; j < n; j++)
        if ((unsigned char)(p[j] ^ MEMSCAN_MASK) != masked[j])
            return 0;
    return 1;
}

/* Occurrences of the secret whose masked form is `masked` (n bytes), or -1. */
static inline long memscan_count(const unsigned char *masked, size_t n)
{
    FILE *maps = fopen("/proc/self/maps", "r");
    int mem = open("/proc/self/mem", O_RDONLY);
    if (maps == NULL || mem < 0) {
        if (maps)
            fclose(maps);
        if (mem >= 0)
            close(mem);
        return -1;
    }
    /* The scan buffer gets a mapping of its own, skipped by the scan: it
     * holds what it last read, which may be the secret. */
    size_t chunk = 1 << 20;
    unsigned char *buf = mmap(NULL, chunk + n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                              -1, 0);
    if (buf == MAP_FAILED)
        buf = NULL;
    long found = 0;
    char line[512];
    while (buf != NULL && fgets(line, sizeof line, maps) != NULL) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3 || perms[0] != 'r')
            continue;
        if (strstr(line, "[vvar]") || strstr(line, "[vsyscall]") || hi - lo > MEMSCAN_MAX_REGION)
            continue;
        if (buf != NULL && (unsigned long)buf < hi && (unsigned long)buf + chunk + n > lo)
            continue;
        for (unsigned long at = lo; at < hi; at += chunk) {
            size_t want = hi - at < chunk + n ? hi - at : chunk + n;
            ssize_t got = pread(mem, buf, want, (off_t)at);
            if (got <= 0)
                break;
            size_t limit = (size_t)got >= n ? (size_t)got - n + 1 : 0;
            if (limit > chunk)
                limit = chunk; /* the overlap is scanned with the next chunk */
            for (size_t i = 0; i < limit; i++)
                if ((unsigned char)(buf[i] ^ MEMSCAN_MASK) == masked[0] &&
                    memscan_matches(buf + i, masked, n))
                    found++;
        }
    }
    if (buf)
        munmap(buf, chunk + n);
    fclose(maps);
    close(mem);
    return found;
}

#endif
