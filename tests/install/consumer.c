/* consumer.c — a program built against an installed libhushcall, found
 * only through its hushcall.pc (tests/install/run.sh): RFC 4648's "foobar"
 * vector, so a wrong library or header cannot pass. */
#include <stdio.h>
#include <string.h>

#include <hushcall/hushcall.h>

int main(void)
{
    char out[16];
    size_t len = 0;
    hush_error err = {0};
    if (hush_base64_encode("foobar", 6, out, sizeof out, &len, &err) != HUSH_OK) {
        fprintf(stderr, "hush_base64_encode: %s\n", err.message);
        return 1;
    }
    printf("hushcall %s: %.*s\n", HUSHCALL_VERSION, (int)len, out);
    return strcmp(out, "Zm9vYmFy") == 0 ? 0 : 1;
}
