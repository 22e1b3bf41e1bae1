/* test_secmem.c — arenas and buffers: zeroing, locking, guard pages, wipe on
 * fork, growth without stale copies, the mlock-refused path, threads. */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "check.h"
#include "memscan.h"
#include "mem/mem_internal.h"

static bool all_zero(const unsigned char *p, size_t n)
{
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++)
        acc |= p[i];
    return acc == 0;
}

/* VmLck of this process in kB, or -1. */
static long vm_locked_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* Run `fn` in a forked child; return its exit code, or 128 + signal. */
static int in_child(int (*fn)(void *), void *arg)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(arg));
    int st = 0;
    if (pid < 0 || waitpid(pid, &st, 0) != pid)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_arena_alloc_aligned_and_zeroed(void)
{
    hush_error err;
    hush_arena *a;
    CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &a, &err), &err);
    for (size_t size = 0; size < 5000; size += 37) {
        void *p = NULL;
        CHECK_OK(hush_arena_alloc(a, size, &p, &err), &err);
        CHECK(((uintptr_t)p % 16) == 0);
        CHECK(all_zero(p, size));
        memset(p, 0xAB, size);
    }
    void *big = NULL;
    CHECK_OK(hush_arena_alloc(a, 3u << 20, &big, &err), &err); /* past any chunk */
    CHECK(big != NULL && all_zero(big, 3u << 20));
    CHECK(hush_arena_mapped_bytes(a) >= (3u << 20));
    char *s = NULL;
    CHECK_OK(hush_arena_strdup(a, "abc", 3, &s, &err), &err);
    CHECK(s != NULL && strcmp(s, "abc") == 0);
    CHECK_STATUS(hush_arena_alloc(a, SIZE_MAX, &big, &err), HUSH_E_LIMIT, &err);
    CHECK_STATUS(hush_arena_alloc(NULL, 1, &big, &err), HUSH_E_ARGUMENT, &err);
    hush_arena_free(a);
    hush_arena_free(NULL);
}

static void test_arena_wipe_zeroes_every_byte(void)
{
    hush_error err;
    hush_arena *a;
    unsigned char *small[64], *big = NULL;
    CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &a, &err), &err);
    for (int i = 0; i < 64; i++) {
        CHECK_OK(hush_arena_alloc(a, 1000, (void **)&small[i], &err), &err);
        memset(small[i], 0xC3, 1000);
    }
    CHECK_OK(hush_arena_alloc(a, 2u << 20, (void **)&big, &err), &err);
    memset(big, 0x7E, 2u << 20);
    hush_arena_wipe(a); /* free() wipes the same way, then unmaps */
    for (int i = 0; i < 64; i++)
        CHECK(all_zero(small[i], 1000));
    CHECK(all_zero(big, 2u << 20));
    /* Still usable after a wipe. */
    void *again = NULL;
    CHECK_OK(hush_arena_alloc(a, 100, &again, &err), &err);
    CHECK(again != NULL && all_zero(again, 100));
    hush_arena_free(a);
}

static void test_vmlck_rises_and_falls(void)
{
    hush_error err;
    long before = vm_locked_kb();
    CHECK(before >= 0);
    hush_arena *arenas[4];
    for (int i = 0; i < 4; i++) {
        void *p;
        CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &arenas[i], &err), &err);
        CHECK_OK(hush_arena_alloc(arenas[i], 256u << 10, &p, &err), &err);
        CHECK(hush_arena_is_locked(arenas[i]));
    }
    hush_secbuf *buf;
    CHECK_OK(hush_secbuf_new(1u << 20, 0, HUSH_SECMEM_DEFAULT, &buf, &err), &err);
    long during = vm_locked_kb();
    CHECK(during - before >= 4 * 256 + 1024);
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    CHECK(info.locked_bytes >= (4u * 256 + 1024) * 1024);
    CHECK(strcmp(info.platform, "linux") == 0);
    for (int i = 0; i < 4; i++)
        hush_arena_free(arenas[i]);
    hush_secbuf_free(buf);
    CHECK(vm_locked_kb() <= before);
}

static int touch_before_buffer(void *arg)
{
    return ((volatile unsigned char *)arg)[-1];
}

static int touch_after_buffer(void *arg)
{
    hush_secbuf *b = arg;
    return ((volatile unsigned char *)hush_secbuf_data(b))[hush_secbuf_capacity(b)];
}

static int touch_last_byte(void *arg)
{
    hush_secbuf *b = arg;
    ((volatile unsigned char *)hush_secbuf_data(b))[hush_secbuf_capacity(b) - 1] = 1;
    return 0;
}

static void test_guard_pages_fault(void)
{
    hush_error err;
    hush_secbuf *b;
    CHECK_OK(hush_secbuf_new(100, 0, HUSH_SECMEM_DEFAULT, &b, &err), &err);
    /* The sanitizers install their own SIGSEGV handlers: die by the default one. */
    struct sigaction dfl = {.sa_handler = SIG_DFL};
    struct sigaction old;
    sigaction(SIGSEGV, &dfl, &old);
    CHECK_EQ(in_child(touch_before_buffer, hush_secbuf_data(b)), 128 + SIGSEGV);
    CHECK_EQ(in_child(touch_after_buffer, b), 128 + SIGSEGV);
    CHECK_EQ(in_child(touch_last_byte, b), 0); /* the control: inside is fine */
    sigaction(SIGSEGV, &old, NULL);
    hush_secbuf_free(b);
}

static int child_sees_zeroes(void *arg)
{
    hush_secbuf *b = arg;
    return all_zero(hush_secbuf_data(b), hush_secbuf_len(b)) ? 0 : 1;
}

static void test_wipe_on_fork_and_dump_exclusion(void)
{
    hush_error err;
    hush_secbuf *b;
    CHECK_OK(hush_secbuf_new(64, 0, HUSH_SECMEM_DEFAULT, &b, &err), &err);
    CHECK_OK(hush_secbuf_append(b, "secret secret secret", 20, &err), &err);
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    CHECK(info.wipe_on_fork);
    CHECK(info.dump_exclusion);
    CHECK_EQ(in_child(child_sees_zeroes, b), 0);
    CHECK(memcmp(hush_secbuf_data(b), "secret", 6) == 0); /* the parent keeps it */

    /* The kernel reports MADV_DONTDUMP ("dd") and MADV_WIPEONFORK ("wf") in smaps. */
    FILE *f = fopen("/proc/self/smaps", "r");
    char line[512];
    unsigned long target = (unsigned long)hush_secbuf_data(b);
    bool in_region = false, dd = false, wf = false;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' '))
            in_region = lo <= target && target < hi;
        else if (in_region && strncmp(line, "VmFlags:", 8) == 0) {
            dd = strstr(line, " dd") != NULL;
            wf = strstr(line, " wf") != NULL;
        }
    }
    if (f)
        fclose(f);
    CHECK(dd);
    CHECK(wf);
    hush_secbuf_free(b);
}

static void test_secbuf_growth_leaves_no_copy(void)
{
    hush_error err;
    hush_secbuf *b;
    unsigned char masked[32];
    CHECK_OK(hush_secbuf_new(16, 0, HUSH_SECMEM_DEFAULT, &b, &err), &err);
    /* The canary is born inside the buffer; the test keeps only a masked copy. */
    CHECK_OK(hush_secbuf_reserve(b, 32, &err), &err);
    CHECK(RAND_bytes(hush_secbuf_data(b), 32) == 1);
    CHECK_OK(hush_secbuf_set_len(b, 32, &err), &err);
    for (int i = 0; i < 32; i++)
        masked[i] = hush_secbuf_data(b)[i] ^ MEMSCAN_MASK;
    CHECK_EQ(memscan_count(masked, 32), 1);

    size_t cap0 = hush_secbuf_capacity(b);
    static const unsigned char filler[4096];
    for (int i = 0; i < 300; i++) /* grows several times */
        CHECK_OK(hush_secbuf_append(b, filler, sizeof filler, &err), &err);
    CHECK(hush_secbuf_capacity(b) > cap0 * 8);
    CHECK_EQ(memscan_count(masked, 32), 1);

    hush_secbuf_free(b);
    CHECK_EQ(memscan_count(masked, 32), 0);
}

/* Write a random canary at `at` in reserved room (born inside the buffer)
 * and keep only its masked form. */
static void write_canary(hush_secbuf *b, size_t at, unsigned char masked[32])
{
    hush_error err;
    CHECK_EQ(hush_secbuf_len(b), at);
    CHECK_OK(hush_secbuf_reserve(b, 32, &err), &err);
    CHECK(RAND_bytes(hush_secbuf_data(b) + at, 32) == 1);
    for (int i = 0; i < 32; i++)
        masked[i] = hush_secbuf_data(b)[at + i] ^ MEMSCAN_MASK;
}

static void test_secbuf_wipes_up_to_high_water(void)
{
    hush_error err;
    hush_secbuf *b;
    unsigned char masked[32];
    static const unsigned char filler[32] = {1};
    CHECK_OK(hush_secbuf_new(16, 0, HUSH_SECMEM_DEFAULT, &b, &err), &err);
    CHECK_OK(hush_secbuf_append(b, filler, sizeof filler, &err), &err);

    /* Shrinking below a written canary wipes it. */
    write_canary(b, 32, masked);
    CHECK_OK(hush_secbuf_set_len(b, 64, &err), &err);
    CHECK_EQ(memscan_count(masked, 32), 1);
    CHECK_OK(hush_secbuf_set_len(b, 32, &err), &err);
    CHECK_EQ(memscan_count(masked, 32), 0);
    CHECK(memcmp(hush_secbuf_data(b), filler, sizeof filler) == 0); /* the kept part stays */
    CHECK_OK(hush_secbuf_set_len(b, 64, &err), &err); /* growing again gives back zeros */
    CHECK(all_zero(hush_secbuf_data(b) + 32, 32));
    CHECK_OK(hush_secbuf_set_len(b, 32, &err), &err);

    /* Clearing wipes a canary written into reserved room but never declared. */
    write_canary(b, 32, masked);
    CHECK_EQ(hush_secbuf_len(b), 32);
    CHECK_EQ(memscan_count(masked, 32), 1);
    hush_secbuf_clear(b);
    CHECK_EQ(hush_secbuf_len(b), 0);
    CHECK_EQ(memscan_count(masked, 32), 0);
    CHECK(all_zero(hush_secbuf_data(b), 64));
    hush_secbuf_free(b);
}

static void test_secbuf_limits_and_clear(void)
{
    hush_error err;
    hush_secbuf *b;
    CHECK_STATUS(hush_secbuf_new(100, 10, HUSH_SECMEM_DEFAULT, &b, &err), HUSH_E_LIMIT, &err);
    CHECK_OK(hush_secbuf_new(4, 10, HUSH_SECMEM_DEFAULT, &b, &err), &err);
    CHECK_OK(hush_secbuf_append(b, "0123456789", 10, &err), &err);
    CHECK_STATUS(hush_secbuf_append_byte(b, 'x', &err), HUSH_E_LIMIT, &err);
    CHECK_EQ(hush_secbuf_len(b), 10); /* unchanged by the refusal */
    CHECK(memcmp(hush_secbuf_data(b), "0123456789", 10) == 0);
    CHECK_STATUS(hush_secbuf_set_len(b, hush_secbuf_capacity(b) + 1, &err), HUSH_E_ARGUMENT, &err);
    hush_secbuf_clear(b);
    CHECK_EQ(hush_secbuf_len(b), 0);
    CHECK(all_zero(hush_secbuf_data(b), 10));
    hush_secbuf_free(b);
    hush_secbuf_free(NULL);
}

/* Every entry point refuses NULL at the door instead of dereferencing it,
 * and a refusal changes nothing. */
static void test_null_arguments_refused(void)
{
    hush_error err;
    hush_secbuf *b;
    hush_arena *a;
    char *copy = NULL;
    void *p = NULL;
    CHECK_STATUS(hush_secbuf_new(16, 0, HUSH_SECMEM_DEFAULT, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_OK(hush_secbuf_new(16, 0, HUSH_SECMEM_DEFAULT, &b, &err), &err);
    CHECK_OK(hush_secbuf_append(b, "kept", 4, &err), &err);
    CHECK_STATUS(hush_secbuf_append(b, NULL, 5, &err), HUSH_E_ARGUMENT, &err);
    CHECK_OK(hush_secbuf_append(b, NULL, 0, &err), &err); /* nothing to copy */
    CHECK_EQ(hush_secbuf_len(b), 4);
    CHECK(memcmp(hush_secbuf_bytes(b), "kept", 4) == 0);
    CHECK_STATUS(hush_secbuf_append(NULL, "x", 1, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_secbuf_append_byte(NULL, 'x', &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_secbuf_reserve(NULL, 1, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_secbuf_set_len(NULL, 0, &err), HUSH_E_ARGUMENT, &err);
    CHECK(hush_secbuf_data(NULL) == NULL && hush_secbuf_bytes(NULL) == NULL);
    CHECK_EQ(hush_secbuf_len(NULL), 0);
    CHECK_EQ(hush_secbuf_capacity(NULL), 0);
    CHECK(!hush_secbuf_is_locked(NULL));
    hush_secbuf_clear(NULL);
    hush_secbuf_free(b);

    CHECK_STATUS(hush_arena_new(HUSH_SECMEM_DEFAULT, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &a, &err), &err);
    CHECK_STATUS(hush_arena_alloc(NULL, 8, &p, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_arena_alloc(a, 8, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_arena_strdup(a, "abc", 3, NULL, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_arena_strdup(a, NULL, 3, &copy, &err), HUSH_E_ARGUMENT, &err);
    CHECK_STATUS(hush_arena_strdup(NULL, "abc", 3, &copy, &err), HUSH_E_ARGUMENT, &err);
    CHECK(copy == NULL);
    CHECK_OK(hush_arena_strdup(a, NULL, 0, &copy, &err), &err);
    CHECK(copy != NULL && copy[0] == '\0');
    CHECK(!hush_arena_is_locked(NULL));
    CHECK_EQ(hush_arena_mapped_bytes(NULL), 0);
    hush_arena_wipe(NULL);
    hush_arena_free(a);
    hush_arena_free(NULL);
    hush_memzero(NULL, 8);
    hush_memory_protection_info(NULL);
}

/* In a child: forbid locking (and drop root's CAP_IPC_LOCK), then use memory. */
static int works_without_mlock(void *arg)
{
    (void)arg;
    struct rlimit none = {0, 0};
    if (setrlimit(RLIMIT_MEMLOCK, &none) != 0)
        return 10;
    if (geteuid() == 0 && setuid(65534) != 0)
        return 11;
    hush_error err;
    hush_arena *a;
    unsigned char *p;
    if (hush_arena_new(HUSH_SECMEM_DEFAULT, &a, &err) != HUSH_OK)
        return 12;
    if (hush_arena_is_locked(a))
        return 13;
    if (hush_arena_alloc(a, 4096, (void **)&p, &err) != HUSH_OK)
        return 14;
    memset(p, 0x99, 4096);
    hush_arena_wipe(a);
    if (!all_zero(p, 4096))
        return 15;
    hush_memory_protection info;
    hush_memory_protection_info(&info);
    if (info.mlock_available || info.lock_failures == 0 || !info.dump_exclusion)
        return 16;
    hush_arena_free(a);
    return 0;
}

static void test_mlock_refused_still_works(void)
{
    CHECK_EQ(in_child(works_without_mlock, NULL), 0);
}

static void test_no_lock_flag(void)
{
    hush_error err;
    hush_arena *a;
    CHECK_OK(hush_arena_new(HUSH_SECMEM_NO_LOCK, &a, &err), &err);
    CHECK(!hush_arena_is_locked(a));
    hush_arena_free(a);
}

typedef struct {
    hush_arena *arena;
    unsigned char tag;
    unsigned char *ptrs[200];
} alloc_job;

static void *alloc_many(void *arg)
{
    alloc_job *job = arg;
    for (int i = 0; i < 200; i++) {
        if (hush_arena_alloc(job->arena, 700, (void **)&job->ptrs[i], NULL) != HUSH_OK)
            return NULL;
        memset(job->ptrs[i], job->tag, 700);
    }
    return job;
}

static void test_arena_concurrent_allocation(void)
{
    hush_error err;
    hush_arena *a;
    CHECK_OK(hush_arena_new(HUSH_SECMEM_DEFAULT, &a, &err), &err);
    pthread_t threads[4];
    alloc_job jobs[4];
    for (int t = 0; t < 4; t++) {
        jobs[t].arena = a;
        jobs[t].tag = (unsigned char)(t + 1);
        CHECK(pthread_create(&threads[t], NULL, alloc_many, &jobs[t]) == 0);
    }
    for (int t = 0; t < 4; t++) {
        void *res;
        pthread_join(threads[t], &res);
        CHECK(res == &jobs[t]);
    }
    /* No two threads were handed overlapping memory. */
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 200; i++)
            for (int j = 0; j < 700; j++)
                if (jobs[t].ptrs[i][j] != jobs[t].tag) {
                    CHECK(!"overlapping allocation");
                    i = 200;
                    break;
                }
    hush_arena_free(a);
}

/* Small secret blocks come from OpenSSL's secure heap and, once it is full,
 * from regions of their own; either way they are born zeroed and nothing of
 * them is left in memory after they are freed. */
static void test_secret_blocks(void)
{
    enum { BLOCK = 64 * 1024, COUNT = 20 }; /* 1.25 MiB: more than the 1 MiB heap */
    hush__secret_block blocks[COUNT];
    unsigned char masked[COUNT][32];
    size_t from_heap = 0, from_regions = 0;
    hush_error err;

    CHECK_OK(hush__init(&err), &err);
    CHECK(hush__openssl_secure_heap());
    for (int i = 0; i < COUNT; i++) {
        CHECK_OK(hush__secret_block_new(BLOCK, &blocks[i], &err), &err);
        CHECK(all_zero(blocks[i].data, BLOCK));
        unsigned char *canary = (unsigned char *)blocks[i].data + BLOCK - 32;
        CHECK(RAND_bytes(canary, 32) == 1);
        for (int j = 0; j < 32; j++)
            masked[i][j] = canary[j] ^ MEMSCAN_MASK;
        if (blocks[i].region != NULL)
            from_regions++;
        else
            from_heap++;
    }
    CHECK(from_heap > 0);
    CHECK(from_regions > 0);
    for (int i = 0; i < COUNT; i++) {
        CHECK_EQ(memscan_count(masked[i], 32), 1);
        hush__secret_block_free(&blocks[i]);
        CHECK(blocks[i].data == NULL);
        CHECK_EQ(memscan_count(masked[i], 32), 0);
    }
    hush__secret_block_free(&blocks[0]); /* twice: nothing left to do */

    hush__secret_block none;
    CHECK_EQ(hush__secret_block_new(0, &none, &err), HUSH_E_ARGUMENT);
}

int main(void)
{
    RUN_TEST(test_arena_alloc_aligned_and_zeroed);
    RUN_TEST(test_arena_wipe_zeroes_every_byte);
    RUN_TEST(test_vmlck_rises_and_falls);
    RUN_TEST(test_guard_pages_fault);
    RUN_TEST(test_wipe_on_fork_and_dump_exclusion);
    RUN_TEST(test_secbuf_growth_leaves_no_copy);
    RUN_TEST(test_secbuf_wipes_up_to_high_water);
    RUN_TEST(test_secbuf_limits_and_clear);
    RUN_TEST(test_null_arguments_refused);
    RUN_TEST(test_mlock_refused_still_works);
    RUN_TEST(test_no_lock_flag);
    RUN_TEST(test_arena_concurrent_allocation);
    RUN_TEST(test_secret_blocks);
    return check_report();
}
