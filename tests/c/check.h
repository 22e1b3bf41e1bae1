/* check.h — the tiny test harness shared by the C tests.
 * A failed check reports file:line and carries on; main() returns non-zero
 * when any check failed, so ctest sees the failure. Each executable ends by
 * printing "N passed, N failed" over its test functions. */
#ifndef HUSH_TEST_CHECK_H
#define HUSH_TEST_CHECK_H

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "hushcall/hushcall.h"

static int check_failures_in_test;
static int check_tests_passed;
static int check_tests_failed;

static inline const char *check_message(const hush_error *err)
{
    return err != NULL ? err->message : "";
}

#define CHECK(cond)                                                          \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #cond);                                                  \
            check_failures_in_test++;                                        \
        }                                                                    \
    } while (0)

#define CHECK_EQ(a, b)                                                              \
    do {                                                                            \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);             \
        if (check_a_ != check_b_) {                                                 \
            fprintf(stderr, "%s:%d: check failed: %s == %s (%lld != %lld)\n",       \
                    __FILE__, __LINE__, #a, #b, check_a_, check_b_);                \
            check_failures_in_test++;                                               \
        }                                                                           \
    } while (0)

/* Expect a call to return `code`; on mismatch print the error's message. */
#define CHECK_STATUS(expr, code, errp)                                                \
    do {                                                                              \
        hush_status check_s_ = (expr);                                                \
        if (check_s_ != (code)) {                                                     \
            fprintf(stderr, "%s:%d: %s returned %s, expected %s (%s)\n", __FILE__,    \
                    __LINE__, #expr, hush_strerror(check_s_), hush_strerror(code),    \
                    check_message(errp));                                             \
            check_failures_in_test++;                                                 \
        }                                                                             \
    } while (0)

#define CHECK_OK(expr, errp) CHECK_STATUS(expr, HUSH_OK, errp)

/* Switch the process to de_DE.UTF-8, whose decimal point is a comma, to
 * prove number handling ignores the process locale. `make deps` generates
 * it; a machine without it fails the test rather than skipping it. */
#include <locale.h>
static inline bool check_use_comma_locale(void)
{
    if (setlocale(LC_ALL, "de_DE.UTF-8") != NULL && strcmp(localeconv()->decimal_point, ",") == 0)
        return true;
    fprintf(stderr, "locale de_DE.UTF-8 is missing: run `make deps`\n");
    check_failures_in_test++;
    setlocale(LC_ALL, "C");
    return false;
}

#define RUN_TEST(fn)                                              \
    do {                                                          \
        check_failures_in_test = 0;                               \
        fn();                                                     \
        if (check_failures_in_test == 0) {                        \
            check_tests_passed++;                                 \
        } else {                                                  \
            check_tests_failed++;                                 \
            fprintf(stderr, "FAIL %s\n", #fn);                    \
        }                                                         \
    } while (0)

static inline int check_report(void)
{
    printf("%d passed, %d failed\n", check_tests_passed, check_tests_failed);
    return check_tests_failed == 0 && check_tests_passed > 0 ? 0 : 1;
}

#endif
