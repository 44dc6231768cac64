/* The dsv4 test framework: tests register themselves, the runner (tests/runner.c)
 * runs them all (or those whose name contains argv[1]) and ends with the line
 * "N passed, N failed, N skipped".
 *
 *   TEST(e2m1_decodes_all_codes) {
 *       CHECK(dsv4_e2m1_decode(1) == 0.5f);
 *       CHECK_MSG(x == y, "code %d: got %g", c, x);
 *       if (!have_gpu) SKIP("no GPU");
 *   }
 * A failing CHECK ends the test (it returns from the test function). */
#ifndef DSV4_TEST_H
#define DSV4_TEST_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"

typedef void (*test_fn)(void);
void test_register(const char *name, const char *file, test_fn fn);
void test_fail_at(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void test_skip_because(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define TEST(name)                                                        \
    static void test_##name(void);                                        \
    __attribute__((constructor)) static void test_register_##name(void) { \
        test_register(#name, __FILE__, test_##name);                      \
    }                                                                     \
    static void test_##name(void)

#define CHECK(cond)                                                  \
    do {                                                             \
        if (!(cond)) {                                               \
            test_fail_at(__FILE__, __LINE__, "CHECK(%s)", #cond);    \
            return;                                                  \
        }                                                            \
    } while (0)

#define CHECK_MSG(cond, ...)                                 \
    do {                                                     \
        if (!(cond)) {                                       \
            test_fail_at(__FILE__, __LINE__, __VA_ARGS__);   \
            return;                                          \
        }                                                    \
    } while (0)

/* Asserts a dsv4_status equals the expected one; on mismatch prints both names
 * and dsv4_last_error(). */
#define CHECK_STATUS(expr, expected)                                                    \
    do {                                                                                \
        int check_st_ = (int)(expr);                                                    \
        if (check_st_ != (int)(expected)) {                                             \
            test_fail_at(__FILE__, __LINE__, "%s returned %s, expected %s (last error: %s)", \
                         #expr, dsv4_status_name((dsv4_status)check_st_),               \
                         dsv4_status_name(expected), dsv4_last_error());                \
            return;                                                                     \
        }                                                                               \
    } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, DSV4_OK)

#define SKIP(...)                          \
    do {                                   \
        test_skip_because(__VA_ARGS__);    \
        return;                            \
    } while (0)

/* ---- helpers for tests ---- */

/* The dsv4 command-line program built beside this runner ($DSV4_CLI, set by the Makefile;
 * default ./build/dsv4). */
const char *test_cli(void);
/* A fresh empty directory under $TMPDIR (removed by the runner at exit). */
const char *test_tmpdir(void);
/* 1 if `python3 -c "import <modules>"` works (comma-separated list). Cached. */
int test_python_has(const char *modules);
/* Runs a shell command; returns its exit status (or -1). */
int test_system(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Reads a whole file into a malloc'ed buffer (NUL-terminated); NULL on failure. */
char *test_read_file(const char *path, size_t *len);
int test_write_file(const char *path, const void *data, size_t len);
/* Deterministic random numbers for tests (splitmix64). */
uint64_t test_rand_u64(uint64_t *state);
float test_rand_uniform(uint64_t *state); /* [0, 1) */
float test_rand_normal(uint64_t *state);

#endif
