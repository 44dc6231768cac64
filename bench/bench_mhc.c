/* mHC per decode token at V4-Flash shapes (hc 4, D 4096): hc_pre + the sublayer's weighted
 * RMSNorm (BF16 out, and the W4A4 NVFP4 variant), and hc_post. Median of CUDA-graph replays,
 * bytes the step must read/write, GB/s against the device-to-device copy bandwidth of the
 * same run. The fn matrices (1.5 MB each, the dominant bytes) rotate over 64 copies, more
 * than L2 holds, as consecutive layers' would; X, X' and y rotate over enough slots (>= 96 MB
 * in all, more than the 50 MB L2) that no call finds its activations in L2 either, with a
 * graph of max(64, slots) calls. One JSON object per line. */
#include <stdint.h>
#include <stdio.h>

#if DSV4_HAVE_CUDA
#include "bench_common.h"
#include "cuda/mhc.h"
#include "format/quant.h"

#define NFN 64
#define ROTATE_BYTES ((size_t)96 << 20)
#define MAX_SLOTS 2048

typedef struct job {
    dsv4_cuda_hc_dims d;
    int T, post, nslots;
    size_t xbytes, ybytes;
    char *X, *Xout, *y; /* nslots slots of xbytes / xbytes / ybytes */
    dsv4_cuda_dtype x_dtype;
    float *fn[NFN], *base, *scale, *w, *postw, *comb, *x;
    dsv4_cuda_nvfp4_out q;
    int use_q;
    void *ws;
    size_t ws_bytes;
} job;

static void enqueue(cudaStream_t s, void *arg, int i) {
    job *j = arg;
    const size_t slot = (size_t)(i % j->nslots);
    void *X = j->X + slot * j->xbytes, *Xout = j->Xout + slot * j->xbytes, *y = j->y + slot * j->ybytes;
    if (j->post) {
        BENCH_OK(dsv4_cuda_hc_post(s, &j->d, j->T, X, j->x_dtype, y, DSV4_CUDA_BF16, j->postw, j->comb,
                                   DSV4_CUDA_HC_MERGE_BF16_WEIGHTS, Xout));
        return;
    }
    dsv4_cuda_hc_pre_args a = {0};
    a.X = X, a.x_dtype = j->x_dtype, a.fn = j->fn[i % NFN], a.base = j->base, a.scale = j->scale;
    a.post = j->postw, a.comb = j->comb, a.norm_w = j->w, a.norm_eps = 1e-6f;
    a.y = j->use_q ? NULL : y, a.y_dtype = DSV4_CUDA_BF16, a.q = j->use_q ? &j->q : NULL;
    a.workspace = j->ws, a.workspace_bytes = j->ws_bytes;
    BENCH_OK(dsv4_cuda_hc_pre(s, &j->d, j->T, &a));
}

static void run(cudaStream_t s, double copy_gbps, int post, int T, dsv4_cuda_dtype xd, int use_q) {
    job j;
    memset(&j, 0, sizeof j);
    j.d = (dsv4_cuda_hc_dims){4, 4096, 20, 1e-6f, 1e-6f};
    j.T = T, j.post = post, j.x_dtype = xd, j.use_q = use_q;
    const int hc = 4, D = 4096, nmix = (2 + hc) * hc;
    const size_t xb = xd == DSV4_CUDA_BF16 ? 2 : 4, fn_bytes = (size_t)nmix * hc * D * 4;
    j.xbytes = (size_t)T * hc * D * xb, j.ybytes = (size_t)T * D * 2;
    const size_t per_call = j.xbytes * (post ? 2 : 1) + j.ybytes;
    j.nslots = (int)((ROTATE_BYTES + per_call - 1) / per_call);
    if (j.nslots > MAX_SLOTS) j.nslots = MAX_SLOTS;
    j.X = bench_alloc_random(j.xbytes * (size_t)j.nslots, 1);
    j.Xout = bench_alloc_random(j.xbytes * (size_t)j.nslots, 2);
    j.y = bench_alloc_random(j.ybytes * (size_t)j.nslots, 3);
    for (int i = 0; i < (post ? 1 : NFN); i++) j.fn[i] = bench_alloc_random(fn_bytes, 10 + i);
    j.base = bench_alloc_random((size_t)nmix * 4, 4), j.scale = bench_alloc_random(12, 5), j.w = bench_alloc_random((size_t)D * 4, 6);
    j.postw = bench_alloc_random((size_t)T * hc * 4, 7), j.comb = bench_alloc_random((size_t)T * hc * hc * 4, 8);
    BENCH_CU(cudaMalloc((void **)&j.q.q, (size_t)T * D / 2));
    BENCH_CU(cudaMalloc((void **)&j.q.sf, dsv4_swizzled_scale_bytes(T, D / 16)));
    j.q.scale = bench_alloc_random((size_t)T * 4 + 4, 9);
    j.q.mode = DSV4_ACT_SCALE_DYNAMIC_TOKEN, j.q.layout = DSV4_SF_SWIZZLED;
    j.ws_bytes = dsv4_cuda_hc_pre_workspace_bytes(&j.d, T);
    BENCH_CU(cudaMalloc(&j.ws, j.ws_bytes ? j.ws_bytes : 1));
    BENCH_CU(cudaDeviceSynchronize());
    const int per_graph = j.nslots > 64 ? j.nslots : 64;
    double us = bench_graph_us(s, enqueue, &j, per_graph, 60);
    double bytes;
    if (post) /* read X, y, post, comb; write X' */
        bytes = (double)T * hc * D * xb * 2 + (double)T * D * 2 + (double)T * (hc + hc * hc) * 4;
    else /* read X, fn, base, scale, w; write post, comb, and y (BF16) or NVFP4 (q + swizzled sf + scale) */
        bytes = (double)T * hc * D * xb + fn_bytes + nmix * 4 + 12 + D * 4.0 + (double)T * (hc + hc * hc) * 4 +
                (use_q ? (double)T * D / 2 + (double)T * D / 16 /* real scales, not the swizzle padding */ + T * 4.0 : (double)T * D * 2);
    printf("{\"bench\":\"%s\",\"T\":%d,\"hc\":%d,\"D\":%d,\"X\":\"%s\",\"out\":\"%s\",\"us_per_call\":%.3f,"
           "\"replays\":60,\"calls_per_graph\":%d,\"activation_slots\":%d,\"bytes\":%.0f,\"gbps\":%.1f,\"copy_gbps\":%.1f,\"fraction_of_copy\":%.3f}\n",
           post ? "hc_post" : "hc_pre_rmsnorm", T, hc, D, xd == DSV4_CUDA_BF16 ? "bf16" : "f32",
           post ? "X'" : use_q ? "nvfp4_dynamic_token" : "bf16", us, per_graph, j.nslots, bytes, bytes / (us * 1e-6) / 1e9, copy_gbps,
           bytes / (us * 1e-6) / 1e9 / copy_gbps);
    fflush(stdout);
    cudaFree(j.X), cudaFree(j.Xout), cudaFree(j.y), cudaFree(j.base), cudaFree(j.scale), cudaFree(j.w);
    cudaFree(j.postw), cudaFree(j.comb), cudaFree(j.q.q), cudaFree(j.q.sf), cudaFree(j.q.scale), cudaFree(j.ws);
    for (int i = 0; i < NFN; i++) cudaFree(j.fn[i]);
}

int main(void) {
    bench_require_gpu();
    cudaStream_t s;
    BENCH_CU(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    double copy = bench_copy_gbps(s);
    for (int T = 1; T <= 8; T *= 8) {
        run(s, copy, 0, T, DSV4_CUDA_BF16, 0);
        run(s, copy, 0, T, DSV4_CUDA_F32, 0);
        run(s, copy, 0, T, DSV4_CUDA_BF16, 1);
        run(s, copy, 1, T, DSV4_CUDA_BF16, 0);
    }
    run(s, copy, 0, 4096, DSV4_CUDA_BF16, 0); /* a prefill chunk */
    cudaStreamDestroy(s);
    return 0;
}
#else
int main(void) {
    fprintf(stderr, "bench_mhc: built without CUDA\n");
    return 1;
}
#endif
