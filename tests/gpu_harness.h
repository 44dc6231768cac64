/* Graph-safety harness for GPU tests (CUDA builds only).
 *
 * gpu_graph_check(stream, fn, arg, outs, n) takes a function that enqueues work on a stream
 * and checks the architecture's rule for decode steps:
 *   1. direct run: outputs poisoned with 0xA5, fn(stream, arg), synchronize, copy outputs
 *      back (to outs[i].host, malloc'ed here, freed by gpu_bufs_free);
 *   2. capture: cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), fn, end
 *      capture; a host sync, a host<->device copy or an allocation inside fn breaks the
 *      capture and the harness fails naming the CUDA error;
 *   3. replay: instantiate, then twice: poison outputs with 0x5A, launch the graph,
 *      synchronize, compare every output byte with the direct run.
 * Different poisons for the direct run and the replays mean that a byte the work never
 * writes shows up as a mismatch. Returns 1 on success; on failure 0 with a message in msg. */
#ifndef DSV4_TESTS_GPU_HARNESS_H
#define DSV4_TESTS_GPU_HARNESS_H

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <stddef.h>

#include "dsv4.h"

typedef dsv4_status (*gpu_enqueue_fn)(cudaStream_t stream, void *arg);

typedef struct gpu_buf {
    const char *name;
    void *dev;   /* device output buffer */
    size_t bytes;
    void *host;  /* filled by gpu_graph_check: the direct run's bytes */
} gpu_buf;

int gpu_graph_check(cudaStream_t stream, gpu_enqueue_fn fn, void *arg, gpu_buf *outs, int n_outs, char *msg,
                    size_t msg_len);
void gpu_bufs_free(gpu_buf *outs, int n_outs);

/* 1 if a GPU is present (0 also when the driver is missing). */
int gpu_available(void);
/* A non-blocking stream for tests, created on first use (the legacy default stream cannot
 * be captured); NULL if creation fails. */
cudaStream_t gpu_test_stream(void);
/* cudaMalloc + copy of n bytes from host (host NULL: uninitialised); NULL on failure. */
void *gpu_upload(const void *host, size_t n);
#endif

#endif
