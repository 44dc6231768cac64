/* bench_moe: the whole V4-Flash MoE layer on the GPU (dsv4_cuda_moe_forward: router, permute,
 * grouped L1, SwiGLU, grouped L2, shared expert, combine) per batch size, against the HBM
 * roofline and a cuBLAS BF16 baseline measured in the same run.
 *   Shapes: E 256, k 6, D 4096, I 2048, one shared expert (Is 2048), NVFP4 weights.
 *   Routers: "spread" (random logits) and "skewed" (8 hot experts get +4, 24 warm +2).
 *   Batches: 1, 4, 16, 64, 256, 1024, 4096, 16384 tokens; W4A16 and W4A4.
 * Output: JSON lines; first {"device", "copy_bw_gbs"}, then one per (router, T, mode):
 *   time_us         median of BENCH_REPLAYS graph replays, per forward; for T <= 64 a graph
 *                   holds ROTATE forwards with different logits (different experts), so L2
 *                   cannot keep one forward's weights for the next;
 *   unique_experts  routed experts with >= 1 token (mean over the rotated forwards);
 *   weight_bytes    NVFP4 bytes of those experts + the shared expert;
 *   gbs, tflops     weight_bytes / time and 2·T·(k+1)·3·D·I / time;
 *   roofline_us     weight_bytes / copy bandwidth (1 GiB device-to-device copy, same run);
 *   bf16_time_us    cuBLAS BF16 GEMMs for the same routing: per active expert L1 [c, D]x[2I, D]ᵀ
 *                   and L2 [c, I]x[D, I]ᵀ plus the shared expert, BF16 weights (12.9 GB), counts
 *                   read on the host (baseline only; not graph-safe routing), captured in a graph.
 * bench/plot_moe.py draws time vs batch from this output. Exits non-zero without a GPU. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dsv4.h"

#if DSV4_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "bench_common.h"
#include "cpu/ops.h"
#include "cuda/moe_layer.h"
#include "format/fp.h"

#define E_ 256
#define K_ 6
#define D_ 4096
#define I_ 2048
#define MAX_T 16384
#define ROTATE 8
#define BENCH_REPLAYS 60
#define NSETS 4 /* distinct host payloads cycled over the experts (the device holds 256 copies) */

#define CKB(call)                                                                                             \
    do {                                                                                                      \
        cublasStatus_t s_ = (call);                                                                           \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                    \
            fprintf(stderr, "bench_moe: %s failed: cuBLAS status %d (line %d)\n", #call, (int)s_, __LINE__);  \
            exit(1);                                                                                          \
        }                                                                                                     \
    } while (0)

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rnd(void) {
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float rnormal(void) {
    double u1 = ((double)(rnd() >> 11) + 1.0) / 9007199254740993.0, u2 = (double)(rnd() >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void make_weights(dsv4_cuda_moe_weights *w) {
    static dsv4_weight hw[3 * (E_ + 1)];
    static dsv4_cpu_expert ex[E_ + 1];
    uint8_t *q[3 * NSETS], *s[3 * NSETS];
    const size_t n = (size_t)D_ * I_;
    for (int b = 0; b < 3 * NSETS; b++) {
        q[b] = malloc(n / 2), s[b] = malloc(n / 16);
        if (!q[b] || !s[b]) exit(1);
        for (size_t i = 0; i < n / 2; i++) q[b][i] = (uint8_t)rnd();
        for (size_t i = 0; i < n / 16; i++) s[b][i] = (uint8_t)(0x28 + rnd() % 24);
    }
    for (int e = 0; e <= E_; e++) {
        for (int j = 0; j < 3; j++) {
            dsv4_weight *x = &hw[3 * e + j];
            x->format = DSV4_WF_NVFP4;
            x->rows = j == 2 ? D_ : I_, x->cols = j == 2 ? I_ : D_;
            x->data = q[3 * (e % NSETS) + j], x->scale = s[3 * (e % NSETS) + j];
            x->scale_dtype = DSV4_DT_F8_E4M3;
            x->global_scale = j == 2 ? 0.008f : 0.004f;
            x->input_scale = j == 2 ? 0.002f : 0.0015f; /* static W4A4 scales */
        }
        ex[e] = (dsv4_cpu_expert){&hw[3 * e], &hw[3 * e + 1], &hw[3 * e + 2]};
    }
    BENCH_OK(dsv4_cuda_moe_weights_upload(ex, E_, &ex[E_], w));
    for (int b = 0; b < 3 * NSETS; b++) free(q[b]), free(s[b]);
}

typedef struct fwd_arg {
    const dsv4_cuda_moe_weights *w;
    dsv4_cuda_moe_workspace *ws;
    dsv4_cuda_moe_args a;
    const float *logits; /* device, ROTATE · MAX_T rows available */
    int T;
} fwd_arg;

static void enqueue_fwd(cudaStream_t s, void *arg, int i) {
    fwd_arg *f = arg;
    dsv4_cuda_moe_args a = f->a;
    a.logits = f->logits + (size_t)i * f->T * E_;
    BENCH_OK(dsv4_cuda_moe_forward(s, f->w, f->ws, &a));
}

typedef struct bf16_arg {
    cublasHandle_t cb;
    const uint16_t *wb;          /* [E + 1][3 I D] BF16: rows 0..2I−1 = L1, then L2 [D, I] */
    void *x, *h, *a, *y;         /* [T·k + T, ·] scratch */
    int T;
    int32_t (*counts)[E_];       /* [ROTATE][E] */
} bf16_arg;

static void gemm(cublasHandle_t cb, const void *w, int N, int K, const void *x, int M, void *y) {
    /* y[M, N] = x[M, K] · W[N, K]ᵀ in cuBLAS column-major: C[N, M] = op(A)·B, A = W as K x N, op T */
    const float one = 1.0f, zero = 0.0f;
    CKB(cublasGemmEx(cb, CUBLAS_OP_T, CUBLAS_OP_N, N, M, K, &one, w, CUDA_R_16BF, K, x, CUDA_R_16BF, K, &zero, y,
                     CUDA_R_16BF, N, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

static void enqueue_bf16(cudaStream_t s, void *arg, int i) {
    (void)s;
    bf16_arg *b = arg;
    const size_t per = (size_t)3 * I_ * D_;
    for (int e = 0; e <= E_; e++) {
        const int c = e < E_ ? b->counts[i][e] : b->T;
        if (!c) continue;
        const uint16_t *w = b->wb + per * (size_t)e;
        gemm(b->cb, w, 2 * I_, D_, b->x, c, b->h);
        gemm(b->cb, w + (size_t)2 * I_ * D_, D_, I_, b->a, c, b->y);
    }
}

static void run_batch(const char *router, int T, const float *h_logits, const float *d_logits, fwd_arg *fa,
                      bf16_arg *ba, cudaStream_t st, double copy_gbs, const dsv4_cuda_moe_weights *w) {
    const int rot = T <= 64 ? ROTATE : 1;
    /* routing on the host (CPU router, same logits): unique experts and the baseline's counts */
    static int idx[MAX_T * K_];
    static float wts[MAX_T * K_];
    const dsv4_cpu_router_cfg rc = {E_, K_, DSV4_CPU_SCORE_SQRTSOFTPLUS, 1, 1.5f};
    double unique = 0;
    for (int i = 0; i < rot; i++) {
        BENCH_OK(dsv4_cpu_router(&rc, T, h_logits + (size_t)i * T * E_, NULL, NULL, NULL, 0, idx, wts));
        memset(ba->counts[i], 0, sizeof ba->counts[i]);
        for (int p = 0; p < T * K_; p++) ba->counts[i][idx[p]]++;
        for (int e = 0; e < E_; e++) unique += ba->counts[i][e] > 0;
    }
    unique /= rot;
    const double bytes = unique * (double)w->expert_bytes + (double)(w->weight_bytes - (size_t)E_ * w->expert_bytes);
    const double flops = 2.0 * T * (K_ + 1) * 3.0 * D_ * I_;
    ba->T = T;
    const double tb = bench_graph_us(st, enqueue_bf16, ba, rot, BENCH_REPLAYS);
    for (int mode = 0; mode < 2; mode++) {
        fa->T = T;
        fa->a.T = T;
        fa->a.mode = mode ? DSV4_W4A4 : DSV4_W4A16;
        const double t = bench_graph_us(st, enqueue_fwd, fa, rot, BENCH_REPLAYS);
        const double roof = bytes / (copy_gbs * 1e9) * 1e6;
        printf("{\"router\": \"%s\", \"T\": %d, \"mode\": \"%s\", \"E\": %d, \"k\": %d, \"D\": %d, \"I\": %d, "
               "\"path\": \"%s\", \"forwards_per_graph\": %d, \"time_us\": %.2f, \"unique_experts\": %.2f, "
               "\"weight_bytes\": %.0f, \"gbs\": %.1f, \"tflops\": %.2f, \"copy_bw_gbs\": %.1f, \"roofline_us\": %.2f, "
               "\"time_over_roofline\": %.3f, \"bf16_time_us\": %.2f, \"bf16_tflops\": %.2f, \"speedup_vs_bf16\": %.3f}\n",
               router, T, mode ? "W4A4" : "W4A16", E_, K_, D_, I_, T <= 64 ? "decode-grouped" : "prefill-grouped", rot, t,
               unique, bytes, bytes / (t * 1e-6) / 1e9, flops / (t * 1e-6) / 1e12, copy_gbs, roof, t / roof, tb,
               flops / (tb * 1e-6) / 1e12, tb / t);
        fflush(stdout);
    }
}

/* The in-graph cost of each step of the decode chain (spread router): prefixes of the routed
 * chain without the shared expert (1 router … 6 combine), the shared expert alone, the whole
 * layer with and without it. One JSON line per (T, mode, prefix). */
static void run_stages(fwd_arg *fa, cudaStream_t st) {
    static const int ts[] = {1, 4, 16, 64};
    static const int plan[][2] = {{1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 1}, {6, 1}, {-1, 0}, {0, 0}};
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
        for (int mode = 0; mode < 2; mode++)
            for (size_t j = 0; j < sizeof plan / sizeof plan[0]; j++) {
                fa->T = ts[i], fa->a.T = ts[i];
                fa->a.mode = mode ? DSV4_W4A4 : DSV4_W4A16;
                fa->a.stages = plan[j][0], fa->a.skip_shared = plan[j][1];
                const double t = bench_graph_us(st, enqueue_fwd, fa, ROTATE, BENCH_REPLAYS);
                printf("{\"T\": %d, \"mode\": \"%s\", \"stages\": %d, \"shared\": %d, \"time_us\": %.2f}\n", ts[i],
                       mode ? "W4A4" : "W4A16", plan[j][0], !plan[j][1], t);
                fflush(stdout);
            }
    fa->a.stages = 0, fa->a.skip_shared = 0;
}

/* bench_moe [max_tokens [min_tokens]]: only the batches in that range (default: all).
 * bench_moe stages: the per-step costs of the decode chain (run_stages) instead. */
int main(int argc, char **argv) {
    const int stages = argc > 1 && strcmp(argv[1], "stages") == 0;
    const long max_t = argc > 1 && !stages ? atol(argv[1]) : 1L << 30;
    const long min_t = argc > 2 && !stages ? atol(argv[2]) : 0;
    bench_require_gpu();
    cudaStream_t st;
    BENCH_CU(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const double copy_gbs = bench_copy_gbps(st);
    struct cudaDeviceProp prop;
    BENCH_CU(cudaGetDeviceProperties(&prop, 0));
    printf("{\"device\": \"%s\", \"copy_bw_gbs\": %.1f, \"copy_bytes\": %zu}\n", prop.name, copy_gbs, (size_t)2 << 30);
    fflush(stdout);

    dsv4_cuda_moe_weights w;
    make_weights(&w);
    dsv4_cuda_moe_workspace ws;
    BENCH_OK(dsv4_cuda_moe_workspace_create(&w, MAX_T, K_, &ws));
    fprintf(stderr, "weights %.2f GB, workspace %.2f GB\n", w.weight_bytes / 1e9, ws.bytes / 1e9);

    /* inputs: x BF16 [MAX_T, D]; logits for ROTATE · 64 or MAX_T tokens, spread and skewed */
    const size_t nl = (size_t)MAX_T * E_;
    float *hl_spread = malloc(sizeof(float) * nl), *hl_skew = malloc(sizeof(float) * nl);
    if (!hl_spread || !hl_skew) return 1;
    for (size_t i = 0; i < nl; i++) {
        const int e = (int)(i % E_);
        const float r = rnormal();
        hl_spread[i] = r;
        hl_skew[i] = r + (e < 8 ? 4.0f : e < 32 ? 2.0f : 0.0f);
    }
    float *dl_spread = NULL, *dl_skew = NULL;
    BENCH_CU(cudaMalloc((void **)&dl_spread, sizeof(float) * nl));
    BENCH_CU(cudaMalloc((void **)&dl_skew, sizeof(float) * nl));
    BENCH_CU(cudaMemcpy(dl_spread, hl_spread, sizeof(float) * nl, cudaMemcpyHostToDevice));
    BENCH_CU(cudaMemcpy(dl_skew, hl_skew, sizeof(float) * nl, cudaMemcpyHostToDevice));
    void *x = bench_alloc_random((size_t)MAX_T * D_ * 2, 7), *out = NULL;
    BENCH_CU(cudaMalloc(&out, (size_t)MAX_T * D_ * 2));

    fwd_arg fa;
    memset(&fa, 0, sizeof fa);
    fa.w = &w, fa.ws = &ws;
    fa.a.x = x, fa.a.router = (dsv4_cuda_router_cfg){E_, K_, 0, 1, 1.5f}, fa.a.limit = 10.0f;
    fa.a.out = out, fa.a.out_dtype = DSV4_CUDA_BF16, fa.a.path = DSV4_LINEAR_AUTO;

    /* cuBLAS BF16 baseline: BF16 weights of every expert (values irrelevant to the timing) */
    bf16_arg ba;
    memset(&ba, 0, sizeof ba);
    CKB(cublasCreate(&ba.cb));
    CKB(cublasSetStream(ba.cb, st));
    void *cb_ws;
    BENCH_CU(cudaMalloc(&cb_ws, (size_t)32 << 20)); /* fixed workspace: capture never allocates */
    CKB(cublasSetWorkspace(ba.cb, cb_ws, (size_t)32 << 20));
    const size_t wb_bytes = (size_t)(E_ + 1) * 3 * I_ * D_ * 2;
    void *wb = NULL;
    BENCH_CU(cudaMalloc(&wb, wb_bytes));
    BENCH_CU(cudaMemset(wb, 0x3c, wb_bytes)); /* 0x3c3c = BF16 0.0115 */
    ba.wb = wb;
    const size_t rows = (size_t)MAX_T * K_ + MAX_T;
    BENCH_CU(cudaMalloc(&ba.x, rows * D_ * 2));
    BENCH_CU(cudaMalloc(&ba.h, rows * 2 * I_ * 2));
    BENCH_CU(cudaMalloc(&ba.a, rows * I_ * 2));
    BENCH_CU(cudaMalloc(&ba.y, rows * D_ * 2));
    BENCH_CU(cudaMemset(ba.x, 0x3c, rows * D_ * 2));
    BENCH_CU(cudaMemset(ba.a, 0x3c, rows * I_ * 2));
    ba.counts = malloc(sizeof(int32_t) * ROTATE * E_);
    if (!ba.counts) return 1;
    /* warm-up outside capture: cuBLAS picks kernels and loads modules */
    gemm(ba.cb, wb, 2 * I_, D_, ba.x, 1, ba.h);
    BENCH_CU(cudaStreamSynchronize(st));

    if (stages) {
        fa.logits = dl_spread;
        run_stages(&fa, st);
    }
    static const int batches[] = {1, 4, 16, 64, 256, 1024, 4096, 16384};
    for (int r = 0; r < 2 && !stages; r++)
        for (size_t b = 0; b < sizeof batches / sizeof batches[0]; b++) {
            if (batches[b] > max_t || batches[b] < min_t) continue;
            fa.logits = r ? dl_skew : dl_spread;
            run_batch(r ? "skewed" : "spread", batches[b], r ? hl_skew : hl_spread, fa.logits, &fa, &ba, st, copy_gbs, &w);
        }

    cublasDestroy(ba.cb);
    cudaFree(cb_ws), cudaFree(wb), cudaFree(ba.x), cudaFree(ba.h), cudaFree(ba.a), cudaFree(ba.y);
    cudaFree(dl_spread), cudaFree(dl_skew), cudaFree(x), cudaFree(out);
    dsv4_cuda_moe_workspace_free(&ws);
    dsv4_cuda_moe_weights_free(&w);
    free(hl_spread), free(hl_skew), free(ba.counts);
    cudaStreamDestroy(st);
    return 0;
}

#else
int main(void) {
    fprintf(stderr, "bench_moe: built without CUDA (no GPU)\n");
    return 1;
}
#endif
