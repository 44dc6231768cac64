/* Shared by the GPU benchmarks: device-to-device copy bandwidth (the ceiling a
 * bandwidth-bound kernel is judged against) and CUDA-graph timing. Header-only, CUDA builds. */
#ifndef DSV4_BENCH_COMMON_H
#define DSV4_BENCH_COMMON_H

#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"

#define BENCH_CU(call)                                                                                       \
    do {                                                                                                     \
        cudaError_t e_ = (call);                                                                             \
        if (e_ != cudaSuccess) {                                                                             \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(e_));           \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

#define BENCH_OK(call)                                                                                       \
    do {                                                                                                     \
        dsv4_status s_ = (call);                                                                             \
        if (s_ != DSV4_OK) {                                                                                 \
            fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, dsv4_last_error());                \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

static int bench_cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

static float bench_median(float *v, int n) {
    qsort(v, (size_t)n, sizeof *v, bench_cmp_float);
    return n % 2 ? v[n / 2] : 0.5f * (v[n / 2 - 1] + v[n / 2]);
}

/* Exits with a message when there is no GPU; prints the device to stderr. */
static void bench_require_gpu(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
        fprintf(stderr, "no GPU: this benchmark needs a CUDA device\n");
        exit(1);
    }
    struct cudaDeviceProp p;
    BENCH_CU(cudaGetDeviceProperties(&p, 0));
    fprintf(stderr, "device: %s (sm_%d%d, %d SMs)\n", p.name, p.major, p.minor, p.multiProcessorCount);
}

/* Median GB/s of a 1 GiB device-to-device copy, counting bytes read + written. */
static double bench_copy_gbps(cudaStream_t s) {
    const size_t n = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    BENCH_CU(cudaMalloc(&a, n));
    BENCH_CU(cudaMalloc(&b, n));
    BENCH_CU(cudaMemsetAsync(a, 1, n, s));
    cudaEvent_t e0, e1;
    BENCH_CU(cudaEventCreate(&e0));
    BENCH_CU(cudaEventCreate(&e1));
    float ms[20];
    for (int i = -3; i < 20; i++) {
        BENCH_CU(cudaEventRecord(e0, s));
        BENCH_CU(cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, s));
        BENCH_CU(cudaEventRecord(e1, s));
        BENCH_CU(cudaEventSynchronize(e1));
        if (i >= 0) BENCH_CU(cudaEventElapsedTime(&ms[i], e0, e1));
    }
    cudaEventDestroy(e0), cudaEventDestroy(e1), cudaFree(a), cudaFree(b);
    return 2.0 * (double)n / (bench_median(ms, 20) * 1e-3) / 1e9;
}

/* enqueue(s, arg, i) launches run i (the benchmark rotates input buffers by i). Captures
 * `per_graph` runs into one graph, replays it `replays` (>= 50) times after warm-up, and
 * returns the median microseconds per run. */
typedef void (*bench_enqueue_fn)(cudaStream_t s, void *arg, int i);

static double bench_graph_us(cudaStream_t s, bench_enqueue_fn fn, void *arg, int per_graph, int replays) {
    cudaGraph_t g;
    cudaGraphExec_t ge;
    BENCH_CU(cudaStreamBeginCapture(s, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < per_graph; i++) fn(s, arg, i);
    BENCH_CU(cudaStreamEndCapture(s, &g));
    BENCH_CU(cudaGraphInstantiate(&ge, g, 0));
    cudaEvent_t e0, e1;
    BENCH_CU(cudaEventCreate(&e0));
    BENCH_CU(cudaEventCreate(&e1));
    float *ms = malloc(sizeof(float) * (size_t)replays);
    if (!ms) exit(1);
    for (int r = -5; r < replays; r++) {
        BENCH_CU(cudaEventRecord(e0, s));
        BENCH_CU(cudaGraphLaunch(ge, s));
        BENCH_CU(cudaEventRecord(e1, s));
        BENCH_CU(cudaEventSynchronize(e1));
        if (r >= 0) BENCH_CU(cudaEventElapsedTime(&ms[r], e0, e1));
    }
    double us = bench_median(ms, replays) * 1e3 / per_graph;
    free(ms);
    cudaEventDestroy(e0), cudaEventDestroy(e1), cudaGraphExecDestroy(ge), cudaGraphDestroy(g);
    return us;
}

static void *bench_alloc_random(size_t bytes, unsigned seed) {
    /* random bytes shaped as BF16/fp32 of moderate magnitude: never time on zeros */
    unsigned char *h = malloc(bytes);
    void *d = NULL;
    if (!h) exit(1);
    uint32_t x = seed * 2654435761u + 1;
    for (size_t i = 0; i + 1 < bytes; i += 2) {
        x = x * 1664525u + 1013904223u;
        uint16_t v = (uint16_t)(0x3c00u + ((x >> 16) & 0x07ffu)) | (uint16_t)(x & 0x8000u); /* |v| in [2^-7, 2^-3) */
        h[i] = (unsigned char)v, h[i + 1] = (unsigned char)(v >> 8);
    }
    BENCH_CU(cudaMalloc(&d, bytes));
    BENCH_CU(cudaMemcpy(d, h, bytes, cudaMemcpyHostToDevice));
    BENCH_CU(cudaDeviceSynchronize());
    free(h);
    return d;
}

#endif
