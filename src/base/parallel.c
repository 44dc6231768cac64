#include "base/parallel.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256

int dsv4_thread_count(void) {
    const char *env = getenv("DSV4_THREADS");
    if (env && *env) {
        int n = atoi(env);
        if (n >= 1) return n < MAX_THREADS ? n : MAX_THREADS;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

typedef struct {
    dsv4_range_fn fn;
    void *ctx;
    int64_t begin, end;
} chunk;

static void *run_chunk(void *arg) {
    chunk *c = arg;
    c->fn(c->ctx, c->begin, c->end);
    return NULL;
}

void dsv4_parallel_for(int64_t n, int64_t min_chunk, dsv4_range_fn fn, void *ctx) {
    if (n <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    int64_t threads = dsv4_thread_count();
    if (threads > (n + min_chunk - 1) / min_chunk) threads = (n + min_chunk - 1) / min_chunk;
    if (threads <= 1) {
        fn(ctx, 0, n);
        return;
    }
    chunk chunks[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    for (int64_t i = 0; i < threads; i++)
        chunks[i] = (chunk){fn, ctx, n * i / threads, n * (i + 1) / threads};
    for (int64_t i = 1; i < threads; i++) started[i] = pthread_create(&tids[i], NULL, run_chunk, &chunks[i]) == 0;
    run_chunk(&chunks[0]);
    for (int64_t i = 1; i < threads; i++) {
        if (started[i]) pthread_join(tids[i], NULL);
        else run_chunk(&chunks[i]);
    }
}
