/* bench_linear: the GPU linear (src/cuda/linear.cu) per weight shape, against the device's
 * copy bandwidth and cuBLAS BF16 measured in the same run. Prints one JSON object per line:
 * first {"copy_bw_gbs": ...}, then one per (shape, format, mode). Times are medians of
 * BENCH_REPLAYS CUDA-graph replays; each replay runs the op once per weight copy (copies
 * rotate so the weights never sit in L2) and the time reported is per op.
 * Exits non-zero with a message when there is no GPU. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"

#if DSV4_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "bench_common.h"
#include "stream_read.h"
#include "cuda/device.h"
#include "cuda/linear.h"
#include "format/fp.h"

#define BENCH_REPLAYS 60
#define BENCH_ROTATE_BYTES ((size_t)256 << 20) /* >= 5x the 50 MB L2 of an H100 */
#define BENCH_MAX_COPIES 32

#define CKB(call)                                                                                 \
    do {                                                                                          \
        cublasStatus_t s_ = (call);                                                               \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                        \
            fprintf(stderr, "bench_linear: %s failed: cuBLAS status %d (line %d)\n", #call, (int)s_, __LINE__); \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Median milliseconds of BENCH_REPLAYS launches of a graph. */
static float time_graph(cudaGraphExec_t ge, cudaStream_t st) {
    float t[BENCH_REPLAYS];
    cudaEvent_t a, b;
    BENCH_CU(cudaEventCreate(&a));
    BENCH_CU(cudaEventCreate(&b));
    for (int i = 0; i < 3; i++) BENCH_CU(cudaGraphLaunch(ge, st)); /* warm-up */
    for (int i = 0; i < BENCH_REPLAYS; i++) {
        BENCH_CU(cudaEventRecord(a, st));
        BENCH_CU(cudaGraphLaunch(ge, st));
        BENCH_CU(cudaEventRecord(b, st));
        BENCH_CU(cudaEventSynchronize(b));
        BENCH_CU(cudaEventElapsedTime(&t[i], a, b));
    }
    cudaEventDestroy(a);
    cudaEventDestroy(b);
    return bench_median(t, BENCH_REPLAYS);
}

typedef struct {
    const char *name;
    int64_t M, N, K;
    dsv4_wformat f;
    int w4a4;
    dsv4_cuda_linear_path path; /* AUTO unless a case compares the paths */
    int force_mma;              /* PREFILL on the mma.sync kernel even where wgmma would run */
} bench_case;

static const char *path_name(const bench_case *c) {
    dsv4_cuda_linear_path p = c->path;
    if (p == DSV4_LINEAR_AUTO)
        p = c->M <= DSV4_CUDA_LINEAR_DECODE_MAX_M                      ? DSV4_LINEAR_DECODE
          : c->M >= DSV4_CUDA_LINEAR_DEQUANT_MIN_M && !c->w4a4 ? DSV4_LINEAR_DEQUANT_GEMM
                                                                       : DSV4_LINEAR_PREFILL;
    if (p == DSV4_LINEAR_DECODE) return "decode";
    if (p == DSV4_LINEAR_DEQUANT_GEMM) return "dequant_cublas";
    /* the wgmma kernel's conditions (Hopper is where these benchmarks run) */
    const int wgmma = !c->force_mma && c->f != DSV4_WF_FP8_B128 && c->K % 64 == 0;
    return wgmma ? "prefill_wgmma" : "prefill_mma";
}

/* Random payload and sane scales (never zeros: zeros can run faster than real data). */
static void fill_weight(dsv4_weight *w, dsv4_wformat f, int64_t N, int64_t K, uint8_t **q, uint8_t **s) {
    size_t payload = f == DSV4_WF_FP8_B128 ? (size_t)(N * K) : (size_t)(N * K / 2);
    size_t scales = f == DSV4_WF_NVFP4 ? (size_t)(N * K / 16)
                  : f == DSV4_WF_MXFP4 ? (size_t)(N * K / 32)
                                       : (size_t)(((N + 127) / 128) * ((K + 127) / 128));
    *q = malloc(payload);
    *s = malloc(scales);
    for (size_t i = 0; i < payload; i++) {
        uint8_t v = (uint8_t)rnd();
        if (f == DSV4_WF_FP8_B128 && (v & 0x7f) == 0x7f) v ^= 1; /* no NaN */
        (*q)[i] = v;
    }
    for (size_t i = 0; i < scales; i++)
        (*s)[i] = f == DSV4_WF_NVFP4 ? (uint8_t)(0x30 + rnd() % 16) : (uint8_t)(118 + rnd() % 8);
    memset(w, 0, sizeof *w);
    w->format = f;
    w->rows = N;
    w->cols = K;
    w->data = *q;
    w->scale = *s;
    w->scale_dtype = f == DSV4_WF_NVFP4 ? DSV4_DT_F8_E4M3 : DSV4_DT_F8_E8M0;
    w->global_scale = f == DSV4_WF_NVFP4 ? 1.0f / 1024 : 1.0f;
}

static int sm_count = 132;

static void run_case(const bench_case *c, cublasHandle_t cb, cudaStream_t st, double copy_gbs) {
    const int64_t M = c->M, N = c->N, K = c->K;
    dsv4_weight hw;
    uint8_t *hq, *hs;
    fill_weight(&hw, c->f, N, K, &hq, &hs);
    dsv4_cuda_weight w0;
    BENCH_OK(dsv4_cuda_weight_upload(&hw, &w0));
    int copies = (int)((BENCH_ROTATE_BYTES + w0.bytes - 1) / w0.bytes);
    if (copies < 2) copies = 2;
    if (copies > BENCH_MAX_COPIES) copies = BENCH_MAX_COPIES;
    dsv4_cuda_weight w[BENCH_MAX_COPIES];
    w[0] = w0;
    for (int i = 1; i < copies; i++) BENCH_OK(dsv4_cuda_weight_upload(&hw, &w[i]));

    /* activations: BF16 x, or NVFP4 x (random codes, scales around 1) */
    uint16_t *hx = malloc((size_t)(M * K) * 2);
    for (int64_t i = 0; i < M * K; i++) hx[i] = dsv4_bf16_encode((float)((int)(rnd() % 2001) - 1000) / 1000.0f);
    void *x, *xq, *xs, *y, *ws = NULL;
    BENCH_CU(cudaMalloc(&x, (size_t)(M * K) * 2));
    BENCH_CU(cudaMemcpy(x, hx, (size_t)(M * K) * 2, cudaMemcpyHostToDevice));
    uint8_t *hq4 = malloc((size_t)(M * K / 2)), *hs4 = malloc((size_t)(M * K / 16));
    for (int64_t i = 0; i < M * K / 2; i++) hq4[i] = (uint8_t)rnd();
    for (int64_t i = 0; i < M * K / 16; i++) hs4[i] = (uint8_t)(0x30 + rnd() % 16);
    BENCH_CU(cudaMalloc(&xq, (size_t)(M * K / 2)));
    BENCH_CU(cudaMalloc(&xs, (size_t)(M * K / 16)));
    BENCH_CU(cudaMemcpy(xq, hq4, (size_t)(M * K / 2), cudaMemcpyHostToDevice));
    BENCH_CU(cudaMemcpy(xs, hs4, (size_t)(M * K / 16), cudaMemcpyHostToDevice));
    BENCH_CU(cudaMalloc(&y, (size_t)(M * N) * 2));
    size_t wsb = dsv4_cuda_linear_workspace_bytes(&w0, M);
    if (c->path == DSV4_LINEAR_DEQUANT_GEMM && wsb < (size_t)(N * K) * 2) wsb = (size_t)(N * K) * 2;
    if (wsb) BENCH_CU(cudaMalloc(&ws, wsb));
    dsv4_cuda_act_nvfp4 aq = {xq, xs, NULL, 1.0f / 2688};

    cudaGraph_t g;
    cudaGraphExec_t ge;
    dsv4_cuda_linear_prefill_force_mma(c->force_mma); /* the kernel is chosen at capture */
    BENCH_CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < copies; i++) {
        dsv4_cuda_linear_args a = {0};
        a.w = &w[i];
        a.M = M;
        a.x = c->w4a4 ? NULL : x;
        a.xq = c->w4a4 ? &aq : NULL;
        a.y = y;
        a.out = DSV4_CUDA_OUT_BF16;
        a.workspace = ws;
        a.workspace_bytes = wsb;
        a.path = c->path;
        a.cublas = cb;
        BENCH_OK(dsv4_cuda_linear(&a, st));
    }
    BENCH_CU(cudaStreamEndCapture(st, &g));
    dsv4_cuda_linear_prefill_force_mma(0);
    BENCH_CU(cudaGraphInstantiate(&ge, g, 0));
    const double t = time_graph(ge, st) / copies * 1e-3; /* seconds per op */
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);

    /* decode: a kernel that only reads the same weight bytes, in the same graph setup */
    double t_read = 0;
    if (M <= DSV4_CUDA_LINEAR_DECODE_MAX_M) {
        void *sink;
        BENCH_CU(cudaMalloc(&sink, (size_t)sm_count * 8 * 4));
        BENCH_CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        for (int i = 0; i < copies; i++)
            if (bench_stream_read(w[i].data, w[i].bytes, sink, sm_count, st)) {
                fprintf(stderr, "bench_linear: stream_read launch failed\n");
                exit(1);
            }
        BENCH_CU(cudaStreamEndCapture(st, &g));
        BENCH_CU(cudaGraphInstantiate(&ge, g, 0));
        t_read = time_graph(ge, st) / copies * 1e-3;
        cudaGraphExecDestroy(ge);
        cudaGraphDestroy(g);
        cudaFree(sink);
    }

    /* cuBLAS BF16 baseline, y[M, N] = x · Wᵀ with W BF16 [N, K]. In cuBLAS column-major terms:
     * C[N, M] (ldc N) = op(A) · B with A = W seen as K x N (lda K, op T) and B = x seen as K x M. */
    const size_t wb16 = (size_t)(N * K) * 2;
    int bcopies = (int)((BENCH_ROTATE_BYTES + wb16 - 1) / wb16);
    if (bcopies < 2) bcopies = 2;
    if (bcopies > BENCH_MAX_COPIES) bcopies = BENCH_MAX_COPIES;
    void *wbf[BENCH_MAX_COPIES];
    uint16_t *hwb = malloc(wb16);
    for (int64_t i = 0; i < N * K; i++) hwb[i] = dsv4_bf16_encode((float)((int)(rnd() % 2001) - 1000) / 1000.0f);
    for (int i = 0; i < bcopies; i++) {
        BENCH_CU(cudaMalloc(&wbf[i], wb16));
        BENCH_CU(cudaMemcpy(wbf[i], hwb, wb16, cudaMemcpyHostToDevice));
    }
    const float one = 1.0f, zero = 0.0f;
    /* warm-up outside capture (cuBLAS picks its kernel and loads modules) */
    CKB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, wbf[0], CUDA_R_16BF, (int)K, x,
                     CUDA_R_16BF, (int)K, &zero, y, CUDA_R_16BF, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    BENCH_CU(cudaStreamSynchronize(st));
    BENCH_CU(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
    for (int i = 0; i < bcopies; i++)
        CKB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, (int)N, (int)M, (int)K, &one, wbf[i], CUDA_R_16BF, (int)K, x,
                         CUDA_R_16BF, (int)K, &zero, y, CUDA_R_16BF, (int)N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    BENCH_CU(cudaStreamEndCapture(st, &g));
    BENCH_CU(cudaGraphInstantiate(&ge, g, 0));
    const double tb = time_graph(ge, st) / bcopies * 1e-3;
    cudaGraphExecDestroy(ge);
    cudaGraphDestroy(g);

    const double act_bytes = c->w4a4 ? (double)(M * K) * (0.5 + 1.0 / 16) : (double)(M * K) * 2;
    const double bytes = (double)w0.bytes + act_bytes + (double)(M * N) * 2;
    const double bytes_cublas = (double)wb16 + (double)(M * K) * 2 + (double)(M * N) * 2;
    const double flops = 2.0 * (double)M * (double)N * (double)K;
    printf("{\"name\": \"%s\", \"M\": %lld, \"N\": %lld, \"K\": %lld, \"format\": \"%s\", \"mode\": \"%s\", "
           "\"path\": \"%s\", \"weight_copies\": %d, \"time_us\": %.3f, \"bytes\": %.0f, \"gbs\": %.1f, "
           "\"tflops\": %.2f, \"copy_bw_gbs\": %.1f, \"frac_of_copy_bw\": %.3f, "
           "\"cublas_bf16_time_us\": %.3f, \"cublas_bf16_gbs\": %.1f, \"cublas_bf16_tflops\": %.2f, "
           "\"speedup_vs_cublas\": %.3f, \"read_only_us\": %.3f, \"pdl\": %d}\n",
           c->name, (long long)M, (long long)N, (long long)K, dsv4_wformat_name(c->f), c->w4a4 ? "W4A4" : "W4A16",
           path_name(c), copies, t * 1e6, bytes, bytes / t / 1e9,
           flops / t / 1e12, copy_gbs, bytes / t / 1e9 / copy_gbs, tb * 1e6, bytes_cublas / tb / 1e9,
           flops / tb / 1e12, tb / t, t_read * 1e6, dsv4_cuda_pdl_enabled());
    fflush(stdout);

    for (int i = 0; i < bcopies; i++) cudaFree(wbf[i]);
    for (int i = 0; i < copies; i++) dsv4_cuda_weight_free(&w[i]);
    cudaFree(x);
    cudaFree(xq);
    cudaFree(xs);
    cudaFree(y);
    cudaFree(ws);
    free(hq);
    free(hs);
    free(hx);
    free(hq4);
    free(hs4);
    free(hwb);
}

/* bench_linear [max_M [min_M]]: only the cases with min_M <= M <= max_M (default: all). */
int main(int argc, char **argv) {
    const int64_t max_m = argc > 1 ? atoll(argv[1]) : INT64_MAX, min_m = argc > 2 ? atoll(argv[2]) : 0;
    int n = 0;
    if (dsv4_cuda_device_count(&n) != DSV4_OK || n == 0) {
        fprintf(stderr, "bench_linear: no GPU\n");
        return 1;
    }
    dsv4_device_info info;
    BENCH_OK(dsv4_cuda_device_info(0, &info));
    fprintf(stderr, "bench_linear on %s (sm_%d%d, %d SMs, L2 %zu MB)\n", info.name, info.cc_major, info.cc_minor,
            info.sm_count, info.l2_bytes >> 20);
    sm_count = info.sm_count;
    BENCH_OK(dsv4_cuda_linear_init());
    cudaStream_t st;
    BENCH_CU(cudaStreamCreate(&st));
    cublasHandle_t cb;
    CKB(cublasCreate(&cb));
    CKB(cublasSetStream(cb, st));
    void *cb_ws;
    BENCH_CU(cudaMalloc(&cb_ws, (size_t)32 << 20)); /* a fixed workspace, so capture never allocates */
    CKB(cublasSetWorkspace(cb, cb_ws, (size_t)32 << 20));

    const double copy_gbs = bench_copy_gbps(st);
    printf("{\"device\": \"%s\", \"copy_bw_gbs\": %.1f, \"copy_bytes\": %zu}\n", info.name, copy_gbs, (size_t)2 << 30);

    const bench_case cases[] = {
        {"wq_b", 1, 32768, 1024, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},      {"wq_b", 4, 32768, 1024, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"wq_b", 16, 32768, 1024, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},     {"wq_b", 64, 32768, 1024, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"wo_b", 1, 4096, 8192, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},       {"wo_b", 4, 4096, 8192, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"wo_b", 16, 4096, 8192, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},      {"wo_b", 64, 4096, 8192, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"expert_w1", 1, 2048, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},  {"expert_w1", 4, 2048, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"expert_w1", 16, 2048, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO}, {"expert_w1", 64, 2048, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"expert_w1", 1, 2048, 4096, DSV4_WF_NVFP4, 1, DSV4_LINEAR_AUTO},  {"expert_w1", 16, 2048, 4096, DSV4_WF_NVFP4, 1, DSV4_LINEAR_AUTO},
        {"expert_w1", 1, 2048, 4096, DSV4_WF_MXFP4, 0, DSV4_LINEAR_AUTO},  {"expert_w1", 16, 2048, 4096, DSV4_WF_MXFP4, 0, DSV4_LINEAR_AUTO},
        {"wq_b", 1, 32768, 1024, DSV4_WF_FP8_B128, 0, DSV4_LINEAR_AUTO},   {"wq_b", 16, 32768, 1024, DSV4_WF_FP8_B128, 0, DSV4_LINEAR_AUTO},
        {"square", 4096, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},  {"expert_w1", 4096, 2048, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"square", 4096, 4096, 4096, DSV4_WF_NVFP4, 1, DSV4_LINEAR_AUTO},  {"square", 4096, 4096, 4096, DSV4_WF_MXFP4, 0, DSV4_LINEAR_AUTO},
        {"square", 4096, 4096, 4096, DSV4_WF_FP8_B128, 0, DSV4_LINEAR_AUTO},
        /* where the dequant + cuBLAS path overtakes the mma.sync kernel (AUTO's threshold) */
        {"square", 128, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"square", 128, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_DEQUANT_GEMM},
        {"square", 256, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"square", 256, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_DEQUANT_GEMM},
        {"square", 512, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"square", 512, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_DEQUANT_GEMM},
        {"square", 1024, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"square", 1024, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_DEQUANT_GEMM},
        {"square", 4096, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"square", 4096, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL, 1},
        {"square", 4096, 4096, 4096, DSV4_WF_MXFP4, 0, DSV4_LINEAR_PREFILL},
        {"square", 16384, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"square", 16384, 4096, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
        {"wq_b", 4096, 32768, 1024, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"wo_b", 4096, 4096, 8192, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"expert_w1", 4096, 2048, 4096, DSV4_WF_NVFP4, 0, DSV4_LINEAR_PREFILL},
        {"wq_b", 4096, 32768, 1024, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},   {"wo_b", 4096, 4096, 8192, DSV4_WF_NVFP4, 0, DSV4_LINEAR_AUTO},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (cases[i].M <= max_m && cases[i].M >= min_m) run_case(&cases[i], cb, st, copy_gbs);
    cublasDestroy(cb);
    cudaFree(cb_ws);
    cudaStreamDestroy(st);
    return 0;
}

#else
int main(void) {
    fprintf(stderr, "bench_linear: built without CUDA (no GPU)\n");
    return 1;
}
#endif
