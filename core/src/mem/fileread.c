/* fileread.c — the bounded reader that brings a file (a key, a policy)
 * into secure memory. Kept apart from secmem.c so the secure-memory code
 * does no file I/O: this module only uses secmem's public buffer API. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "hushcall/secmem.h"
#include "internal.h"
#include "mem/mem_internal.h"

hush_status hush__secbuf_read_fd(int fd, const char *what, size_t max, unsigned secmem_flags,
                                 hush_secbuf **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    hush_secbuf *buf = NULL;
    size_t initial = max < 4096 ? max + 1 : 4096;

    HUSH_TRY(hush_secbuf_new(initial, max + 1, secmem_flags, &buf, err));
    for (;;) {
        size_t len = hush_secbuf_len(buf);
        /* One byte past the limit is read, so a larger file is noticed. */
        HUSH_ENSURE(len <= max, HUSH_E_LIMIT, "%s is larger than %zu bytes", what, max);
        HUSH_TRY(hush_secbuf_reserve(buf, 1, err));
        ssize_t n = read(fd, hush_secbuf_data(buf) + len, hush_secbuf_capacity(buf) - len);
        if (n < 0 && errno == EINTR)
            continue;
        HUSH_ENSURE(n >= 0, HUSH_E_IO, "cannot read %s: %s", what, strerror(errno));
        if (n == 0)
            break;
        HUSH_TRY(hush_secbuf_set_len(buf, len + (size_t)n, err));
    }
    *out = buf;
    buf = NULL;
cleanup:
    hush_secbuf_free(buf);
    return status;
}
