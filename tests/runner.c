/* Runs every registered test; ends with "N passed, N failed, N skipped". */
#include "test.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>
#include <math.h>

#include "dsv4.h"

typedef struct {
    const char *name, *file;
    test_fn fn;
    int order;
} test_case;

static test_case *tests;
static int n_tests, cap_tests;
static enum { RESULT_PASS, RESULT_FAIL, RESULT_SKIP } current;
static char current_msg[2048];
static char tmp_root[512];
static int tmp_counter;

void test_register(const char *name, const char *file, test_fn fn) {
    if (n_tests == cap_tests) {
        cap_tests = cap_tests ? 2 * cap_tests : 64;
        tests = realloc(tests, (size_t)cap_tests * sizeof *tests);
        if (!tests) { fprintf(stderr, "out of memory registering tests\n"); _exit(2); }
    }
    tests[n_tests] = (test_case){name, file, fn, n_tests};
    n_tests++;
}

void test_fail_at(const char *file, int line, const char *fmt, ...) {
    char msg[1536];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    current = RESULT_FAIL;
    snprintf(current_msg, sizeof current_msg, "%s:%d: %s", file, line, msg);
}

void test_skip_because(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(current_msg, sizeof current_msg, fmt, ap);
    va_end(ap);
    current = RESULT_SKIP;
}

const char *test_cli(void) {
    const char *cli = getenv("DSV4_CLI");
    return cli && *cli ? cli : "./build/dsv4";
}

const char *test_tmpdir(void) {
    static char path[600];
    if (!tmp_root[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(tmp_root, sizeof tmp_root, "%s/dsv4-test-XXXXXX", base && *base ? base : "/tmp");
        if (!mkdtemp(tmp_root)) { perror("mkdtemp"); return "/tmp"; }
    }
    snprintf(path, sizeof path, "%s/%d", tmp_root, ++tmp_counter);
    if (test_system("mkdir -p '%s'", path) != 0) return "/tmp";
    return path;
}

int test_system(const char *fmt, ...) {
    char cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    fflush(stdout);
    int rc = system(cmd);
    if (rc == -1) return -1;
    return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

int test_python_has(const char *modules) {
    static char cached_for[256];
    static int cached = -1;
    if (cached >= 0 && strcmp(cached_for, modules) == 0) return cached;
    snprintf(cached_for, sizeof cached_for, "%s", modules);
    cached = test_system("python3 -c 'import %s' >/dev/null 2>&1", modules) == 0;
    return cached;
}

char *test_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); buf = NULL; }
    fclose(f);
    if (buf) { buf[n] = '\0'; if (len) *len = (size_t)n; }
    return buf;
}

int test_write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(data, 1, len, f);
    return (fclose(f) == 0 && w == len) ? 0 : -1;
}

uint64_t test_rand_u64(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

float test_rand_uniform(uint64_t *s) { return (float)(test_rand_u64(s) >> 40) * (1.0f / 16777216.0f); }

float test_rand_normal(uint64_t *s) {
    /* Box-Muller; the two uniforms are kept away from 0. */
    double u1 = ((double)(test_rand_u64(s) >> 11) + 0.5) / 9007199254740992.0;
    double u2 = ((double)(test_rand_u64(s) >> 11) + 0.5) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static int by_file_then_order(const void *a, const void *b) {
    const test_case *x = a, *y = b;
    int c = strcmp(x->file, y->file);
    if (c) return c;
    return x->order - y->order;
}

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    int passed = 0, failed = 0, skipped = 0;
    /* Stable per-file order: constructors run in link order, sort by file name only. */
    qsort(tests, (size_t)n_tests, sizeof *tests, by_file_then_order);
    for (int i = 0; i < n_tests; i++) {
        if (filter && !strstr(tests[i].name, filter) && !strstr(tests[i].file, filter)) continue;
        /* further arguments "-substr" leave out tests whose name contains substr (e.g. the
         * harness self-test, whose deliberate capture failure compute-sanitizer reports) */
        int excluded = 0;
        for (int a = 2; a < argc; a++)
            if (argv[a][0] == '-' && strstr(tests[i].name, argv[a] + 1)) excluded = 1;
        if (excluded) continue;
        current = RESULT_PASS;
        current_msg[0] = '\0';
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tests[i].fn();
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
        switch (current) {
        case RESULT_PASS: passed++; printf("PASS %-48s %8.1f ms\n", tests[i].name, ms); break;
        case RESULT_FAIL: failed++; printf("FAIL %s\n     %s\n", tests[i].name, current_msg); break;
        case RESULT_SKIP: skipped++; printf("SKIP %-48s (%s)\n", tests[i].name, current_msg); break;
        }
        fflush(stdout);
    }
    if (tmp_root[0] && !getenv("DSV4_KEEP_TMP")) test_system("rm -rf '%s'", tmp_root);
    free(tests);
    printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
    return failed ? 1 : 0;
}
