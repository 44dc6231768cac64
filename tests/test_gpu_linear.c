/* The GPU linear (src/cuda/linear.cu) against the CPU reference dsv4_cpu_linear on the same
 * inputs: every weight format × activation mode × kernel path over ragged shapes, outputs
 * poisoned before each run and checked fully written, two runs bitwise equal, and a decode
 * call captured in a CUDA graph replaying bitwise equal to the direct run. Skips without a GPU. */
#include <math.h>

#include "cpu/linear.h"
#include "format/fp.h"
#include "format/quant.h"
#include "test.h"

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/device.h"
#include "cuda/linear.h"

static int gpu_present(void) {
    int n = 0;
    return dsv4_cuda_device_count(&n) == DSV4_OK && n > 0;
}

#define CUDA_CHECK(call)                                                                        \
    do {                                                                                        \
        cudaError_t e_ = (call);                                                                \
        CHECK_MSG(e_ == cudaSuccess, "%s: %s", #call, cudaGetErrorString(e_));                  \
    } while (0)

typedef enum { ACT_BF16 = 0, ACT_FP4_TENSOR, ACT_FP4_TOKEN } act_mode;
static const char *act_name[] = {"W4A16", "W4A4/tensor", "W4A4/token"};

/* A host weight with owned bytes; NVFP4 includes zero blocks and one max-magnitude block. */
typedef struct {
    dsv4_weight w;
    uint8_t *q, *s;
} host_weight;

static void make_weight(host_weight *o, dsv4_wformat f, int scale_f32, int64_t N, int64_t K, uint64_t *rng) {
    size_t n = (size_t)(N * K);
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = test_rand_normal(rng) * 0.05f;
    for (int64_t k = 0; k < K && N > 2; k++) x[2 * K + k] = 0.0f; /* an all-zero row: zero blocks */
    memset(o, 0, sizeof *o);
    o->w.format = f;
    o->w.rows = N;
    o->w.cols = K;
    o->w.global_scale = 1.0f;
    if (f == DSV4_WF_NVFP4) {
        o->q = malloc(n / 2);
        o->s = malloc(n / 16);
        o->w.global_scale = dsv4_nvfp4_global_scale(x, n);
        dsv4_nvfp4_quantize(x, N, K, o->w.global_scale, o->q, o->s, "test");
        o->w.scale_dtype = DSV4_DT_F8_E4M3;
        /* the largest block: e2m1 +-6 with e4m3 448 (row 1, block 0) */
        if (N > 1) {
            for (int b = 0; b < 8; b++) o->q[1 * K / 2 + b] = (b & 1) ? 0xF7 : 0x77;
            o->s[1 * K / 16] = 0x7E;
        }
        /* row 3 stored with negative scales and negated elements (the same values): the upload
         * makes scales non-negative (src/cuda/fp4_layout.cuh) */
        if (N > 3)
            for (int64_t b = 0; b < K / 16; b++) {
                o->s[3 * K / 16 + b] ^= 0x80;
                for (int j = 0; j < 8; j++) o->q[3 * K / 2 + 8 * b + j] ^= 0x88;
            }
    } else if (f == DSV4_WF_MXFP4) {
        o->q = malloc(n / 2);
        o->s = malloc(n / 32);
        for (size_t i = 0; i < n / 2; i++) o->q[i] = (uint8_t)test_rand_u64(rng);
        for (size_t i = 0; i < n / 32; i++) o->s[i] = (uint8_t)(118 + test_rand_u64(rng) % 8);
        o->w.scale_dtype = DSV4_DT_F8_E8M0;
    } else {
        size_t ns = (size_t)(((N + 127) / 128) * ((K + 127) / 128));
        o->q = malloc(n);
        o->s = malloc(ns * 4);
        dsv4_fp8_block128_quantize(x, N, K, o->q, o->s, "test");
        o->w.scale_dtype = DSV4_DT_F8_E8M0;
        if (scale_f32) { /* non-power-of-two fp32 scales: the accumulator-side scaling path */
            float *sf = malloc(ns * 4);
            for (size_t i = 0; i < ns; i++) sf[i] = dsv4_ue8m0_decode(o->s[i]) * (1.0f + 0.37f * test_rand_uniform(rng));
            memcpy(o->s, sf, ns * 4);
            free(sf);
            o->w.scale_dtype = DSV4_DT_F32;
        }
    }
    o->w.data = o->q;
    o->w.scale = o->s;
    free(x);
}

typedef struct {
    dsv4_wformat f;
    int scale_f32;
    act_mode act;
    int64_t M, N, K;
    dsv4_cuda_linear_path path;
    dsv4_cuda_out out;
} lin_case;

/* One cuBLAS handle for the dequant + cuBLAS path (kept for the process, like the CUDA context). */
static cublasHandle_t test_cublas(void) {
    static cublasHandle_t h;
    if (!h && cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) h = NULL;
    return h;
}

/* Set by run_case when it reaches its end: a failed CHECK returns early and leaves it 0. */
static int case_done;

/* Runs one case; failures are reported through CHECK. */
static void run_case_checked(const lin_case *c, uint64_t seed, int graph) {
    int ok = 0;
    uint64_t rng = seed;
    const int64_t M = c->M, N = c->N, K = c->K;
    host_weight hw;
    make_weight(&hw, c->f, c->scale_f32, N, K, &rng);
    float *x = malloc((size_t)(M * K) * 4), *xref = malloc((size_t)(M * K) * 4), *yref = malloc((size_t)(M * N) * 4);
    uint16_t *xb = malloc((size_t)(M * K) * 2);
    uint8_t *xq = malloc((size_t)(M * K) / 2 + 1), *xs = malloc((size_t)(M * K) / 16 + 1);
    float *tok = malloc((size_t)M * 4);
    const size_t ybytes = (size_t)(M * N) * (c->out == DSV4_CUDA_OUT_BF16 ? 2 : 4);
    uint8_t *y1 = malloc(ybytes), *y2 = malloc(ybytes);
    for (int64_t i = 0; i < M * K; i++) x[i] = test_rand_normal(&rng);
    if (M > 1) for (int64_t k = 0; k < K; k++) x[K + k] = 0.0f; /* an all-zero token */

    /* the CPU reference sees exactly what the GPU sees */
    dsv4_weight wref = hw.w;
    dsv4_numerics mode = DSV4_W4A16;
    float input_scale = 0.0f;
    if (c->act == ACT_BF16) {
        for (int64_t i = 0; i < M * K; i++) {
            xb[i] = dsv4_bf16_encode(x[i]);
            xref[i] = dsv4_bf16_decode(xb[i]);
        }
    } else if (c->act == ACT_FP4_TENSOR) {
        input_scale = 4.5f / 2688.0f;
        if (dsv4_nvfp4_quantize_act(x, M, K, input_scale, xq, xs, "x") != DSV4_OK) goto fail_q;
        dsv4_nvfp4_dequantize(xq, xs, input_scale, M, K, xref);
    } else {
        if (dsv4_nvfp4_quantize_act_dynamic(x, M, K, xq, xs, tok, "x") != DSV4_OK) goto fail_q;
        for (int64_t m = 0; m < M; m++) dsv4_nvfp4_dequantize(xq + m * K / 2, xs + m * K / 16, tok[m], 1, K, xref + m * K);
    }
    if (c->act != ACT_BF16 && c->f == DSV4_WF_NVFP4) {
        /* NVFP4 weights: the reference's own W4A4 mode quantizes x the same way */
        mode = DSV4_W4A4;
        wref.input_scale = input_scale;
        memcpy(xref, x, (size_t)(M * K) * 4);
    }
    if (dsv4_cpu_linear(&wref, xref, M, yref, mode) != DSV4_OK) goto fail_q;
    ok = 1;
fail_q:
    CHECK_MSG(ok, "host reference failed: %s", dsv4_last_error());

    dsv4_cuda_weight dw;
    CHECK_OK(dsv4_cuda_weight_upload(&hw.w, &dw));
    void *d_x = NULL, *d_y = NULL, *d_ws = NULL, *d_q = NULL, *d_s = NULL, *d_tok = NULL;
    size_t ws = dsv4_cuda_linear_workspace_bytes(&dw, M);
    if (c->path == DSV4_LINEAR_DEQUANT_GEMM && ws < (size_t)(N * K) * 2) ws = (size_t)(N * K) * 2;
    CUDA_CHECK(cudaMalloc(&d_y, ybytes));
    if (ws) CUDA_CHECK(cudaMalloc(&d_ws, ws));
    dsv4_cuda_act_nvfp4 aq = {0};
    dsv4_cuda_linear_args a = {0};
    a.w = &dw;
    a.M = M;
    a.y = d_y;
    a.out = c->out;
    a.workspace = d_ws;
    a.workspace_bytes = ws;
    a.path = c->path;
    a.cublas = test_cublas();
    if (!a.cublas) goto fail_cublas;
    if (c->act == ACT_BF16) {
        CUDA_CHECK(cudaMalloc(&d_x, (size_t)(M * K) * 2));
        CUDA_CHECK(cudaMemcpy(d_x, xb, (size_t)(M * K) * 2, cudaMemcpyHostToDevice));
        a.x = d_x;
    } else {
        CUDA_CHECK(cudaMalloc(&d_q, (size_t)(M * K) / 2));
        CUDA_CHECK(cudaMalloc(&d_s, (size_t)(M * K) / 16));
        CUDA_CHECK(cudaMemcpy(d_q, xq, (size_t)(M * K) / 2, cudaMemcpyHostToDevice));
        CUDA_CHECK(cudaMemcpy(d_s, xs, (size_t)(M * K) / 16, cudaMemcpyHostToDevice));
        aq.q = d_q;
        aq.scale = d_s;
        aq.input_scale = input_scale;
        if (c->act == ACT_FP4_TOKEN) {
            CUDA_CHECK(cudaMalloc(&d_tok, (size_t)M * 4));
            CUDA_CHECK(cudaMemcpy(d_tok, tok, (size_t)M * 4, cudaMemcpyHostToDevice));
            aq.token_scales = d_tok;
        }
        a.xq = &aq;
    }
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreate(&st));
    /* run 1 and run 2, each on a poisoned output (0xff bytes: NaN in fp32 and BF16) */
    uint8_t *outs[2] = {y1, y2};
    for (int r = 0; r < 2; r++) {
        CUDA_CHECK(cudaMemsetAsync(d_y, 0xff, ybytes, st));
        if (d_ws) CUDA_CHECK(cudaMemsetAsync(d_ws, 0xff, ws, st));
        CHECK_OK(dsv4_cuda_linear(&a, st));
        CUDA_CHECK(cudaStreamSynchronize(st));
        CUDA_CHECK(cudaMemcpy(outs[r], d_y, ybytes, cudaMemcpyDeviceToHost));
    }
    CHECK_MSG(!memcmp(y1, y2, ybytes), "%s %s M=%lld N=%lld K=%lld: two runs differ", dsv4_wformat_name(c->f),
              act_name[c->act], (long long)M, (long long)N, (long long)K);

    double err = 0, ref = 0;
    for (int64_t i = 0; i < M * N; i++) {
        float v = c->out == DSV4_CUDA_OUT_BF16 ? dsv4_bf16_decode(((uint16_t *)y1)[i]) : ((float *)y1)[i];
        CHECK_MSG(isfinite(v), "%s %s M=%lld N=%lld K=%lld: y[%lld, %lld] not written (or not finite): %g",
                  dsv4_wformat_name(c->f), act_name[c->act], (long long)M, (long long)N, (long long)K,
                  (long long)(i / N), (long long)(i % N), (double)v);
        double d = (double)v - yref[i];
        err += d * d;
        ref += (double)yref[i] * yref[i];
    }
    const double rel = sqrt(err / (ref > 0 ? ref : 1));
    /* BF16 output: one rounding, 2^-9. fp32 output: only summation order differs, but the
     * tensor cores' accumulation (prefill) may truncate at each 16-wide step: a simulation
     * gave up to 5e-6 at K = 4096, so that path gets 3e-5; layout bugs give errors of order 1 */
    const double tol = c->out == DSV4_CUDA_OUT_BF16 ? 4e-3 : (c->path == DSV4_LINEAR_PREFILL ? 3e-5 : 1e-5);
    CHECK_MSG(ref > 0 && rel <= tol, "%s%s %s path %d M=%lld N=%lld K=%lld: relative error %.3g > %.0e",
              dsv4_wformat_name(c->f), c->scale_f32 ? "(f32 scales)" : "", act_name[c->act], (int)c->path,
              (long long)M, (long long)N, (long long)K, rel, tol);

    if (graph) { /* capture the same call; replay must equal the direct run bit for bit */
        cudaGraph_t g;
        cudaGraphExec_t ge;
        CUDA_CHECK(cudaMemsetAsync(d_y, 0xff, ybytes, st));
        CUDA_CHECK(cudaStreamSynchronize(st));
        CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeGlobal));
        dsv4_status cs = dsv4_cuda_linear(&a, st);
        cudaError_t ce = cudaStreamEndCapture(st, &g);
        CHECK_OK(cs);
        CHECK_MSG(ce == cudaSuccess, "graph capture: %s", cudaGetErrorString(ce));
        CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
        CUDA_CHECK(cudaGraphLaunch(ge, st));
        CUDA_CHECK(cudaGraphLaunch(ge, st)); /* twice: replays are repeatable too */
        CUDA_CHECK(cudaStreamSynchronize(st));
        CUDA_CHECK(cudaMemcpy(y2, d_y, ybytes, cudaMemcpyDeviceToHost));
        CHECK_MSG(!memcmp(y1, y2, ybytes), "graph replay differs from the direct run");
        cudaGraphExecDestroy(ge);
        cudaGraphDestroy(g);
    }
    cudaStreamDestroy(st);
fail_cublas:
    CHECK_MSG(a.cublas != NULL, "cublasCreate failed");
    cudaFree(d_x);
    cudaFree(d_y);
    cudaFree(d_ws);
    cudaFree(d_q);
    cudaFree(d_s);
    cudaFree(d_tok);
    dsv4_cuda_weight_free(&dw);
    free(hw.q);
    free(hw.s);
    free(x);
    free(xref);
    free(yref);
    free(xb);
    free(xq);
    free(xs);
    free(tok);
    free(y1);
    free(y2);
    case_done = 1;
}

/* 1 if the case failed (the caller stops there, keeping the first failure's message). */
static int run_case(const lin_case *c, uint64_t seed, int graph) {
    case_done = 0;
    run_case_checked(c, seed, graph);
    return !case_done;
}

static const dsv4_wformat kFormats[] = {DSV4_WF_NVFP4, DSV4_WF_MXFP4, DSV4_WF_FP8_B128};

/* Runs every format (FP8 with ue8m0 and fp32 scales) × activation mode over `shapes`. */
static void run_matrix(const int64_t (*shapes)[3], int nshapes, dsv4_cuda_linear_path path, uint64_t seed) {
    for (int fi = 0; fi < 4; fi++)
        for (int act = 0; act < 3; act++)
            for (int si = 0; si < nshapes; si++) {
                lin_case c = {kFormats[fi < 3 ? fi : 2], fi == 3, (act_mode)act, shapes[si][0], shapes[si][1],
                              shapes[si][2], path, DSV4_CUDA_OUT_F32};
                if (c.f == DSV4_WF_MXFP4 && c.K % 32) continue;
                if (path == DSV4_LINEAR_DECODE && c.f == DSV4_WF_NVFP4 && c.K % 32) continue;
                if (path == DSV4_LINEAR_DEQUANT_GEMM && (act != ACT_BF16 || fi == 3 || (c.f == DSV4_WF_NVFP4 && c.K % 32)))
                    continue;
                if (run_case(&c, seed + (uint64_t)(fi * 100 + act * 10 + si), 0)) return;
            }
}

TEST(gpu_linear_decode_matches_cpu_reference) {
    if (!gpu_present()) SKIP("no GPU");
    /* M = 1, odd M, M up to 64; N off the tile; K % 64 != 0; K large enough to split; N large
     * enough that a CTA runs several items (one token's activations prefetched across items),
     * with a K tail */
    const int64_t shapes[][3] = {{1, 64, 128},    {1, 200, 4096}, {3, 129, 96},    {5, 70, 1056},  {16, 300, 1024},
                                 {33, 77, 512},   {64, 257, 2048}, {2, 2048, 4096}, {1, 20000, 1024}, {1, 20000, 1056}};
    run_matrix(shapes, 10, DSV4_LINEAR_DECODE, 1000);
}

TEST(gpu_linear_prefill_matches_cpu_reference) {
    if (!gpu_present()) SKIP("no GPU");
    /* M >= 128 and ragged; also small M forced onto the MMA kernel; K = 80, 272 (K % 32 != 0) */
    const int64_t shapes[][3] = {{128, 256, 256}, {130, 200, 272}, {257, 129, 1024}, {1, 96, 80},
                                 {7, 130, 512},   {200, 300, 320}, {129, 64, 4096}, {300, 520, 192},
                                 {130, 300, 64},  {64, 96, 128}}; /* one and two 64-wide K slabs */
    /* a Hopper build on a Hopper device must not have turned its wgmma kernel off */
    CHECK_OK(dsv4_cuda_linear_init());
    CHECK_MSG(dsv4_cuda_linear_prefill_wgmma_state() != 0, "the wgmma prefill kernel was turned off at init");
    fprintf(stderr, "  wgmma prefill kernel: %s\n", dsv4_cuda_linear_prefill_wgmma_state() == 1 ? "active" : "not applicable");
    /* on Hopper fp4 weights with BF16 x and K % 64 == 0 take the wgmma kernel: run the
     * matrix again with every prefill forced onto the mma.sync kernel */
    for (int mma = 0; mma < 2; mma++) {
        fprintf(stderr, "  prefill kernel: %s\n", mma ? "mma.sync (forced)" : "default");
        dsv4_cuda_linear_prefill_force_mma(mma);
        run_matrix(shapes, 10, DSV4_LINEAR_PREFILL, 2000);
    }
    dsv4_cuda_linear_prefill_force_mma(0);
    /* BF16 output and graph replay of the default prefill kernel */
    const lin_case bf = {DSV4_WF_NVFP4, 0, ACT_BF16, 200, 300, 320, DSV4_LINEAR_PREFILL, DSV4_CUDA_OUT_BF16};
    const lin_case mx = {DSV4_WF_MXFP4, 0, ACT_BF16, 131, 260, 256, DSV4_LINEAR_PREFILL, DSV4_CUDA_OUT_F32};
    if (!run_case(&bf, 2900, 1)) run_case(&mx, 2901, 1);
}

TEST(gpu_linear_dequant_gemm_matches_cpu_reference) {
    if (!gpu_present()) SKIP("no GPU");
    /* the exact BF16 expansion + cuBLAS: M at and above the AUTO threshold, ragged N, small M
     * forced onto it, FP8 K % 128 != 0 */
    const int64_t shapes[][3] = {{512, 256, 1024}, {700, 129, 512}, {1, 64, 4096}, {600, 300, 96}};
    run_matrix(shapes, 4, DSV4_LINEAR_DEQUANT_GEMM, 2500);
}

TEST(gpu_linear_auto_path_bf16_output_and_nvfp4_k16) {
    if (!gpu_present()) SKIP("no GPU");
    /* AUTO with NVFP4 K % 32 != 0 at M = 1 goes to the MMA kernel; BF16 outputs on both paths */
    const lin_case cases[] = {
        {DSV4_WF_NVFP4, 0, ACT_BF16, 1, 100, 80, DSV4_LINEAR_AUTO, DSV4_CUDA_OUT_F32},
        {DSV4_WF_NVFP4, 0, ACT_BF16, 4, 333, 1024, DSV4_LINEAR_AUTO, DSV4_CUDA_OUT_BF16},
        {DSV4_WF_MXFP4, 0, ACT_FP4_TOKEN, 150, 260, 512, DSV4_LINEAR_AUTO, DSV4_CUDA_OUT_BF16},
        {DSV4_WF_FP8_B128, 1, ACT_BF16, 64, 129, 384, DSV4_LINEAR_AUTO, DSV4_CUDA_OUT_BF16},
        {DSV4_WF_NVFP4, 0, ACT_BF16, DSV4_CUDA_LINEAR_DEQUANT_MIN_M, 160, 256, DSV4_LINEAR_AUTO, DSV4_CUDA_OUT_BF16},
    };
    for (int i = 0; i < 5; i++)
        if (run_case(&cases[i], 3000 + (uint64_t)i, 0)) return;
}

TEST(gpu_linear_decode_graph_replay_is_bitwise_equal) {
    if (!gpu_present()) SKIP("no GPU");
    CHECK_OK(dsv4_cuda_linear_init());
    /* split-K (decode kernel + reduce) and a single-split call, both captured */
    const lin_case cases[] = {
        {DSV4_WF_NVFP4, 0, ACT_BF16, 1, 2048, 4096, DSV4_LINEAR_AUTO, DSV4_CUDA_OUT_BF16},
        {DSV4_WF_NVFP4, 0, ACT_FP4_TOKEN, 16, 4096, 1024, DSV4_LINEAR_AUTO, DSV4_CUDA_OUT_F32},
    };
    for (int i = 0; i < 2; i++)
        if (run_case(&cases[i], 4000 + (uint64_t)i, 1)) return;
}

TEST(gpu_linear_rejects_bad_arguments) {
    if (!gpu_present()) SKIP("no GPU");
    uint8_t q[64] = {0}, s[8] = {0};
    dsv4_weight w = {0};
    w.format = DSV4_WF_NVFP4;
    w.rows = 2;
    w.cols = 40; /* not a multiple of 16 */
    w.data = q;
    w.scale = s;
    w.scale_dtype = DSV4_DT_F8_E4M3;
    w.global_scale = 1.0f;
    dsv4_cuda_weight dw;
    CHECK_STATUS(dsv4_cuda_weight_upload(&w, &dw), DSV4_ERR_SHAPE);
    w.cols = 32;
    w.scale_dtype = DSV4_DT_F8_E8M0;
    CHECK_STATUS(dsv4_cuda_weight_upload(&w, &dw), DSV4_ERR_DTYPE);
    w.scale_dtype = DSV4_DT_F8_E4M3;
    CHECK_OK(dsv4_cuda_weight_upload(&w, &dw));
    dsv4_cuda_linear_args a = {0};
    a.w = &dw;
    a.M = 1;
    a.y = (void *)dw.data; /* never written: the call fails before launching */
    CHECK_STATUS(dsv4_cuda_linear(&a, 0), DSV4_ERR_INVALID_ARGUMENT); /* no activations */
    a.x = dw.data;
    a.M = 65;
    a.path = DSV4_LINEAR_DECODE;
    CHECK_STATUS(dsv4_cuda_linear(&a, 0), DSV4_ERR_UNSUPPORTED);
    dsv4_cuda_weight_free(&dw);
    CHECK(dw.alloc == NULL);
}

/* The fp4 device layout (fp4_layout.cuh) on the host: a bit permutation (round trip), and the
 * pair extraction the kernels do on it gives exactly the pairs of the natural layout. */
TEST(fp4_device_layout_round_trip_and_pairs) {
    uint64_t rng = 0x5eed;
    for (int it = 0; it < 200000; it++) {
        const uint32_t q = it < 16 ? 0x11111111u * (uint32_t)it : (uint32_t)test_rand_u64(&rng);
        const uint32_t r = dsv4_cuda_host_fp4_to_device_word(q);
        CHECK_MSG(dsv4_cuda_host_fp4_from_device_word(r) == q, "round trip of %08x", q);
        CHECK(__builtin_popcount(r) == __builtin_popcount(q));
        uint32_t got[4];
        dsv4_cuda_host_fp4_device_pair_bits(r, got);
        for (int i = 0; i < 4; i++) { /* element i low half, element i + 4 high half */
            const uint32_t lo = (q >> (4 * i)) & 15u, hi = (q >> (4 * i + 16)) & 15u;
            const uint32_t want = ((lo & 7u) << 6) | ((lo & 8u) << 12) | ((hi & 7u) << 22) | ((hi & 8u) << 28);
            CHECK_MSG(got[i] == want, "word %08x pair %d: %08x, want %08x", q, i, got[i], want);
        }
    }
}

#else
TEST(gpu_linear_matches_cpu_reference) { SKIP("no GPU"); }
#endif
