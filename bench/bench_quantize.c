/* NVFP4 quantize and fused RMSNorm + quantize: time per launch (median of CUDA-graph
 * replays), bytes moved, achieved GB/s against the device-to-device copy bandwidth measured
 * in the same run. Prints one JSON object per shape, one per line. Inputs rotate over
 * enough buffers that a batch does not sit in L2 between runs; the one-token shapes do
 * (their inputs are a few KB), so they measure launch latency, which is what matters there.
 * Bytes count the real scale bytes (M * K/16); the kernels also write the zero padding of
 * the 128x4 swizzled tile (which is most of it at M = 1), reported as sf_pad_bytes and not
 * counted in bytes/gbps. */
#include <stdint.h>
#include <stdio.h>

#if DSV4_HAVE_CUDA
#include "bench_common.h"
#include "cuda/quantize.h"
#include "format/quant.h"
#include "cuda/rmsnorm.h"

#define NBUF 4

typedef struct job {
    int norm; /* 0: quantize, 1: rmsnorm + quantize */
    int64_t M, K;
    void *x[NBUF];
    float *w;
    dsv4_cuda_nvfp4_out out[NBUF];
    void *ws;
} job;

static void enqueue(cudaStream_t s, void *arg, int i) {
    job *j = arg;
    int b = i % NBUF;
    if (j->norm)
        BENCH_OK(dsv4_cuda_rmsnorm(s, j->x[b], DSV4_CUDA_BF16, j->w, j->M, (int)j->K, 1e-6f, NULL, DSV4_CUDA_BF16, &j->out[b]));
    else
        BENCH_OK(dsv4_cuda_quantize_nvfp4(s, j->x[b], DSV4_CUDA_BF16, j->M, j->K, &j->out[b], j->ws));
}

static void run(cudaStream_t s, double copy_gbps, int norm, int64_t M, int64_t K, dsv4_act_scale_mode mode) {
    job j = {norm, M, K, {0}, NULL, {{0}}, NULL};
    const size_t nsf = dsv4_swizzled_scale_bytes(M, K / 16);
    for (int b = 0; b < NBUF; b++) {
        j.x[b] = bench_alloc_random((size_t)(M * K * 2), 1 + b);
        BENCH_CU(cudaMalloc((void **)&j.out[b].q, (size_t)(M * K / 2)));
        BENCH_CU(cudaMalloc((void **)&j.out[b].sf, nsf));
        BENCH_CU(cudaMalloc((void **)&j.out[b].scale, (size_t)M * 4 + 4));
        j.out[b].mode = mode;
        j.out[b].layout = DSV4_SF_SWIZZLED;
    }
    j.w = bench_alloc_random((size_t)K * 4, 11);
    BENCH_CU(cudaMalloc(&j.ws, DSV4_CUDA_QUANTIZE_WORKSPACE_BYTES));
    /* static mode's input_scale (the data's magnitudes are ~2^-7 .. 2^-3) */
    for (int b = 0; b < NBUF; b++) {
        float one = 0.01f;
        BENCH_CU(cudaMemcpy(j.out[b].scale, &one, 4, cudaMemcpyHostToDevice));
    }
    BENCH_CU(cudaDeviceSynchronize());
    const int per_graph = M == 1 ? 100 : 8;
    double us = bench_graph_us(s, enqueue, &j, per_graph, 60);
    /* fewest bytes: BF16 in, (fp32 weight), e2m1 payload, real scales (not the swizzle padding) */
    const double sf_real = (double)M * K / 16, sf_pad = (double)nsf - sf_real;
    double bytes = (double)M * K * 2 + (double)M * K / 2 + sf_real + (norm ? (double)K * 4 : 0.0) +
                   (mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN ? (double)M * 4 : 0.0);
    if (mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR) bytes += (double)M * K * 2; /* the amax pass reads x again */
    const char *mname = mode == DSV4_ACT_SCALE_STATIC ? "static" : mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR ? "dynamic_tensor" : "dynamic_token";
    printf("{\"bench\":\"%s\",\"M\":%lld,\"K\":%lld,\"in\":\"bf16\",\"scale_mode\":\"%s\",\"sf_layout\":\"swizzled\","
           "\"us_per_launch\":%.3f,\"replays\":60,\"launches_per_graph\":%d,\"bytes\":%.0f,\"sf_pad_bytes\":%.0f,\"gbps\":%.1f,"
           "\"copy_gbps\":%.1f,\"fraction_of_copy\":%.3f}\n",
           norm ? "rmsnorm_quantize_nvfp4" : "quantize_nvfp4", (long long)M, (long long)K, mname, us, per_graph, bytes, sf_pad,
           bytes / (us * 1e-6) / 1e9, copy_gbps, bytes / (us * 1e-6) / 1e9 / copy_gbps);
    fflush(stdout);
    for (int b = 0; b < NBUF; b++) cudaFree(j.x[b]), cudaFree(j.out[b].q), cudaFree(j.out[b].sf), cudaFree(j.out[b].scale);
    cudaFree(j.w), cudaFree(j.ws);
}

int main(void) {
    bench_require_gpu();
    cudaStream_t s;
    BENCH_CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    double copy = bench_copy_gbps(s);
    static const dsv4_act_scale_mode modes[3] = {DSV4_ACT_SCALE_STATIC, DSV4_ACT_SCALE_DYNAMIC_TOKEN, DSV4_ACT_SCALE_DYNAMIC_TENSOR};
    for (int m = 0; m < 3; m++) {
        run(s, copy, 0, 4096, 4096, modes[m]);
        run(s, copy, 0, 1, 4096, modes[m]);
    }
    run(s, copy, 0, 1, 7168, DSV4_ACT_SCALE_STATIC);
    for (int m = 0; m < 2; m++) {
        run(s, copy, 1, 4096, 4096, modes[m]);
        run(s, copy, 1, 1, 4096, modes[m]);
    }
    cudaStreamDestroy(s);
    return 0;
}
#else
int main(void) {
    fprintf(stderr, "bench_quantize: built without CUDA\n");
    return 1;
}
#endif
