/* line_peer.h — the line protocol of the C peers the Python cross-checks
 * drive (hpke_peer.c for cross_pyca.py, ehbp_peer.c for cross_ehbp.py): one
 * command a line on stdin, split into space-separated fields in place in
 * secure memory; fields are lowercase hex ("-" for empty); answers go to
 * stdout as " HEX" fields. */
#ifndef HUSHCALL_TESTS_LINE_PEER_H
#define HUSHCALL_TESTS_LINE_PEER_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hushcall/hushcall.h"

#define TRY(expr)              \
    do {                       \
        status = (expr);       \
        if (status != HUSH_OK) \
            goto cleanup;      \
    } while (0)

#define MAX_FIELDS 64

/* One command line split into fields, in place, in secure memory. */
typedef struct command {
    hush_secbuf *line;
    char *field[MAX_FIELDS];
    size_t count;
} command;

/* The next line of stdin into cmd->line; false at the end of input. */
static bool read_line(command *cmd, hush_error *err)
{
    int c;
    hush_secbuf_clear(cmd->line);
    while ((c = getchar()) != EOF && c != '\n')
        if (hush_secbuf_append_byte(cmd->line, (unsigned char)c, err) != HUSH_OK)
            return false;
    if (c == EOF && hush_secbuf_len(cmd->line) == 0)
        return false;
    return hush_secbuf_append_byte(cmd->line, '\0', err) == HUSH_OK;
}

static void split_fields(command *cmd)
{
    char *save = NULL;
    cmd->count = 0;
    for (char *tok = strtok_r((char *)hush_secbuf_data(cmd->line), " ", &save);
         tok != NULL && cmd->count < MAX_FIELDS; tok = strtok_r(NULL, " ", &save))
        cmd->field[cmd->count++] = tok;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Hex (or "-") into a new secure buffer. */
static hush_status unhex(const char *hex, hush_secbuf **out, hush_error *err)
{
    hush_status status = HUSH_OK;
    size_t len = strcmp(hex, "-") == 0 ? 0 : strlen(hex);
    *out = NULL;
    if (len % 2 != 0)
        return HUSH_E_ARGUMENT;
    TRY(hush_secbuf_new(len / 2 + 1, 0, HUSH_SECMEM_DEFAULT, out, err));
    for (size_t i = 0; i < len; i += 2) {
        int hi = hex_digit(hex[i]), lo = hex_digit(hex[i + 1]);
        TRY(hi >= 0 && lo >= 0 ? HUSH_OK : HUSH_E_ARGUMENT);
        TRY(hush_secbuf_append_byte(*out, (unsigned char)(hi << 4 | lo), err));
    }
cleanup:
    return status;
}

static unsigned long hex_num(const char *hex) { return strtoul(hex, NULL, 16); }

static void put_hex(const unsigned char *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    putchar(' ');
    if (len == 0)
        putchar('-');
    for (size_t i = 0; i < len; i++) {
        putchar(digits[data[i] >> 4]);
        putchar(digits[data[i] & 15]);
    }
}

#endif
