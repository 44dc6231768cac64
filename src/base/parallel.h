/* A minimal parallel-for over an index range with pthreads: the CPU backend splits rows of
 * its work across threads with it. Deterministic: every index is handled by exactly one
 * call of fn, and results must not depend on how the range was split. */
#ifndef DSV4_BASE_PARALLEL_H
#define DSV4_BASE_PARALLEL_H

#include <stdint.h>

typedef void (*dsv4_range_fn)(void *ctx, int64_t begin, int64_t end);

/* Worker count: $DSV4_THREADS if set (>= 1), else the online CPU count. */
int dsv4_thread_count(void);
/* Calls fn(ctx, b, e) over disjoint chunks covering [0, n), each at least min_chunk long
 * (except the last), on up to dsv4_thread_count() threads including the caller. If a thread
 * cannot be started its chunk runs on the caller: the call never fails. */
void dsv4_parallel_for(int64_t n, int64_t min_chunk, dsv4_range_fn fn, void *ctx);

#endif
