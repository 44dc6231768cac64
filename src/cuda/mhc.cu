// Fused mHC kernels (header: mhc.h; CPU reference: src/cpu/mhc.c).
//
// hc_pre, launch 1: the projection mix = x . fn^T and the sum of squares, as per-(token,
// chunk) partial sums over n_chunks slices of hc*D, written to the workspace as
// partial[(t * NV + v) * n_chunks + chunk] (v < NMIX: x.fn[v]; v = NMIX: sum x^2).
//   - T <= SMALL_T (decode), k_hc_mix_partial: threads run along hc*D, one value each, so
//     the 1.5 MB fn read spreads over ceil(hc*D / 128) blocks per 4-token tile (128 blocks
//     at hc 4, D 4096): every SM streams its slice of fn at once.
//   - larger T (prefill), k_hc_mix_tokens: a lane per token, 256 tokens per block; the
//     block stages 256-wide slices of fn in shared memory and each lane reads them as
//     warp-uniform 16-byte broadcasts, so fn is read from L2 once per 256 tokens (not once
//     per 4 as the decode kernel would) and each fn value feeds 32 FMAs per load.
// hc_pre, launch 2 (k_hc_pre_finish, two blocks per token): in both, each warp adds the
// partials of some of the NV values (lanes over chunks, then a shuffle tree: a fixed order,
// so the result repeats bit for bit) and applies the RMS factor. The "mixer" block's first
// warp then computes post and runs Sinkhorn with a lane per comb element (a single thread
// doing it serially cost ~40 us per decode token); the "row" block, at the same time,
// computes pre and collapses the streams into shared memory (loads batched 4 deep so a thread has 4*hc in
// flight), reduces the sum of squares and emits the weighted RMSNorm (+ NVFP4).
// hc_post: one thread per (token, element), all hc output streams.
#include <limits.h>

#include "cuda/common.cuh"
#include "cuda/mhc.h"
#include "cuda/nvfp4.cuh"

#define MIX_THREADS 128 // 4 warps; the partial reduction below assumes it
#define MIX_TT 4        // tokens per block of the decode projection kernel
#define SMALL_T 16      // up to this many tokens take the decode projection kernel
#define TOK_THREADS 256 // prefill projection kernel: a lane per token
#define TOK_KS 256      // fn columns staged in shared memory per step
#define FINISH_THREADS 256
#define POST_THREADS 256
#define MAX_HC 4

// Element i of an F32/BF16 array through the read-only path (the caller guarantees the
// array is not written during the kernel), so loads can be hoisted above stores.
__device__ __forceinline__ float ldg_elem(const void *p, int dtype, int64_t i) {
    if (dtype == DT_F32) return __ldg((const float *)p + i);
    return bf16_decode(__ldg((const unsigned short *)p + i));
}

// Number of chunks of the n = hc*D columns; *per_chunk: columns per chunk (the last may be
// shorter, none is empty).
static int hc_chunks(int64_t n, int T, int *per_chunk) {
    if (T <= SMALL_T) { // one value per thread
        if (per_chunk) *per_chunk = MIX_THREADS;
        return (int)((n + MIX_THREADS - 1) / MIX_THREADS);
    }
    // prefill: whole TOK_KS slices per chunk, enough blocks for ~2 per SM of a 132-SM H100
    int64_t tiles = (T + TOK_THREADS - 1) / TOK_THREADS, slices = (n + TOK_KS - 1) / TOK_KS;
    int64_t c = (264 + tiles - 1) / tiles;
    if (c > slices) c = slices;
    if (c < 1) c = 1;
    int64_t per = (slices + c - 1) / c; // slices per chunk
    if (per_chunk) *per_chunk = (int)(per * TOK_KS);
    return (int)((slices + per - 1) / per);
}

template <int HC>
__global__ void __launch_bounds__(MIX_THREADS) k_hc_mix_partial(const void *X, int x_dtype, int T, int n,
                                                                 const float *fn, int n_chunks, int chunk,
                                                                 float *partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    constexpr int NMIX = (2 + HC) * HC, NV = NMIX + 1; // NV-th value: sum of squares
    __shared__ float red[MIX_TT * NV][MIX_THREADS / 32];
    const int t0 = blockIdx.y * MIX_TT, nt = min(MIX_TT, T - t0);
    const int k0 = blockIdx.x * chunk, k1 = min(n, k0 + chunk);
    float acc[MIX_TT][NV];
#pragma unroll
    for (int t = 0; t < MIX_TT; t++)
#pragma unroll
        for (int v = 0; v < NV; v++) acc[t][v] = 0.0f;
    for (int k = k0 + threadIdx.x; k < k1; k += MIX_THREADS) {
        float xv[MIX_TT], f[NMIX];
#pragma unroll
        for (int j = 0; j < NMIX; j++) f[j] = __ldg(fn + (int64_t)j * n + k); // all in flight at once
#pragma unroll
        for (int t = 0; t < MIX_TT; t++) {
            xv[t] = t < nt ? ldg_elem(X, x_dtype, (int64_t)(t0 + t) * n + k) : 0.0f;
            acc[t][NMIX] = fmaf(xv[t], xv[t], acc[t][NMIX]);
        }
#pragma unroll
        for (int j = 0; j < NMIX; j++)
#pragma unroll
            for (int t = 0; t < MIX_TT; t++) acc[t][j] = fmaf(xv[t], f[j], acc[t][j]);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
#pragma unroll
    for (int t = 0; t < MIX_TT; t++) {
        if (t >= nt) break; // uniform: no shuffles for the padding tokens of the last tile
#pragma unroll
        for (int v = 0; v < NV; v++) {
            float s = acc[t][v];
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) s = f_add(s, __shfl_xor_sync(0xffffffffu, s, o));
            if (lane == 0) red[t * NV + v][warp] = s;
        }
    }
    __syncthreads();
    for (int i = threadIdx.x; i < nt * NV; i += MIX_THREADS) {
        int t = i / NV, v = i - t * NV;
        float s = f_add(f_add(red[i][0], red[i][1]), f_add(red[i][2], red[i][3]));
        partial[((int64_t)(t0 + t) * NV + v) * n_chunks + blockIdx.x] = s;
    }
}

// Prefill projection: block (chunk, tile) covers tokens tile*256 + [0, 256) (a lane each)
// and columns [chunk * per_chunk, +per_chunk) of hc*D in TOK_KS-wide steps.
template <int HC>
__global__ void __launch_bounds__(TOK_THREADS) k_hc_mix_tokens(const void *X, int x_dtype, int T, int n,
                                                                const float *fn, int n_chunks, int per_chunk,
                                                                float *partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    constexpr int NMIX = (2 + HC) * HC, NV = NMIX + 1;
    __shared__ __align__(16) float fs[NMIX][TOK_KS];
    const int t = blockIdx.y * TOK_THREADS + threadIdx.x;
    const bool live = t < T;
    const int k_begin = blockIdx.x * per_chunk, k_end = min(n, k_begin + per_chunk);
    float acc[NV];
#pragma unroll
    for (int v = 0; v < NV; v++) acc[v] = 0.0f;
    const int64_t xrow = (int64_t)(live ? t : 0) * n;
    for (int ks = k_begin; ks < k_end; ks += TOK_KS) {
        const int w = min(TOK_KS, k_end - ks);
        __syncthreads(); // the previous step's readers are done with fs
        for (int i = threadIdx.x; i < NMIX * TOK_KS; i += TOK_THREADS) {
            int j = i / TOK_KS, kk = i - j * TOK_KS; // TOK_KS is a power of two: shifts
            fs[j][kk] = kk < w ? __ldg(fn + (int64_t)j * n + ks + kk) : 0.0f;
        }
        __syncthreads();
        if (live) {
            for (int kk = 0; kk < w; kk += 4) {
                float xv[4];
#pragma unroll
                for (int u = 0; u < 4; u++) xv[u] = kk + u < w ? ldg_elem(X, x_dtype, xrow + ks + kk + u) : 0.0f;
#pragma unroll
                for (int u = 0; u < 4; u++) acc[NMIX] = fmaf(xv[u], xv[u], acc[NMIX]);
#pragma unroll
                for (int j = 0; j < NMIX; j++) {
                    float4 f = *(const float4 *)&fs[j][kk]; // same address in the warp: broadcast
                    acc[j] = fmaf(xv[0], f.x, acc[j]);
                    acc[j] = fmaf(xv[1], f.y, acc[j]);
                    acc[j] = fmaf(xv[2], f.z, acc[j]);
                    acc[j] = fmaf(xv[3], f.w, acc[j]);
                }
            }
        }
    }
    if (live)
#pragma unroll
        for (int v = 0; v < NV; v++) partial[((int64_t)t * NV + v) * n_chunks + blockIdx.x] = acc[v];
}

__device__ __forceinline__ float sigmoid_ref(float x) { return f_div(1.0f, f_add(1.0f, expf(-x))); }

// dsv4_cpu_hc_sinkhorn spread over the lanes of one warp: lane L (clamped to HC*HC-1, so all
// 32 lanes run the shuffles) holds element (i, j) = (L / HC, L % HC) and fetches its row or
// column by shuffles, then adds them in the CPU's order (from 0, index ascending) and does
// its one division. Every value is produced by the same operations as the sequential
// reference, so the result is the same bit for bit. Why not one thread: ~700 IEEE divisions
// each behind a slow-path branch, one at a time, cost ~40 us per token on an H100 (ncu).
template <int HC>
__device__ float sinkhorn_lane(float c, int iters, float eps) {
    const int L = min((int)(threadIdx.x & 31), HC * HC - 1), i = L / HC, j = L - i * HC;
    float r[HC];
#pragma unroll
    for (int k = 0; k < HC; k++) r[k] = __shfl_sync(0xffffffffu, c, i * HC + k);
    float mx = r[0];
#pragma unroll
    for (int k = 1; k < HC; k++) mx = fmaxf(mx, r[k]);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < HC; k++) sum = f_add(sum, expf(r[k] - mx)); // r[j] == c: same expf as below
    c = f_add(f_div(expf(c - mx), sum), eps);
    for (int it = 0; it < iters; it++) {
        if (it > 0) { // rows
#pragma unroll
            for (int k = 0; k < HC; k++) r[k] = __shfl_sync(0xffffffffu, c, i * HC + k);
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < HC; k++) s = f_add(s, r[k]);
            c = f_div(c, f_add(s, eps));
        }
#pragma unroll
        for (int k = 0; k < HC; k++) r[k] = __shfl_sync(0xffffffffu, c, k * HC + j); // column j
        float s = 0.0f;
#pragma unroll
        for (int k = 0; k < HC; k++) s = f_add(s, r[k]);
        c = f_div(c, f_add(s, eps));
    }
    return c;
}

typedef struct hc_finish_args {
    const void *X;
    int x_dtype, T, D, n_chunks, iters;
    int rows; // row blocks (T, or T padded to 128 for a swizzled scale layout); mixer blocks follow
    const float *partial, *base, *scale;
    float rms_eps, hc_eps;
    float *post, *comb, *x_out;
    const float *w;
    float w_eps;
    void *y;
    int y_dtype;
    nvfp4_dst q;
} hc_finish_args;

template <int HC>
__global__ void __launch_bounds__(FINISH_THREADS) k_hc_pre_finish(hc_finish_args a) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    constexpr int NMIX = (2 + HC) * HC, NV = NMIX + 1;
    extern __shared__ __align__(16) float xs[]; // [D] collapsed x
    __shared__ float sh[33], sums[NV], pre_s[HC];
    // Blocks [0, a.rows) are rows (pre, collapse, norm; padding rows of a swizzled layout
    // past T); block a.rows + t computes token t's post and comb, so the latency-bound
    // Sinkhorn runs beside the norm of the same token instead of before it.
    const bool mixer = (int)blockIdx.x >= a.rows;
    const int t = mixer ? (int)blockIdx.x - a.rows : (int)blockIdx.x;
    if (t >= a.T) { // padding row of a swizzled scale layout
        nvfp4_zero_pad(&a.q, t, a.D / 16, 1);
        return;
    }
    { // warp w adds values w, w + nwarps, ...: lanes stride the chunks, then a fixed tree
        const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
        for (int v = warp; v < NV; v += nw) {
            const float *p = a.partial + ((int64_t)t * NV + v) * a.n_chunks;
            float s = 0.0f;
            for (int c = lane; c < a.n_chunks; c += 32) s = f_add(s, p[c]);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) s = f_add(s, __shfl_xor_sync(0xffffffffu, s, o));
            if (lane == 0) sums[v] = s;
        }
    }
    __syncthreads();
    const float inv = f_div(1.0f, f_sqrt(f_add(f_div(sums[NMIX], (float)(HC * a.D)), a.rms_eps)));
    if (mixer) {
        if (threadIdx.x >= 32) return; // one warp: post (lanes < HC) and Sinkhorn (all lanes)
        const int lane = threadIdx.x, L = min(lane, HC * HC - 1);
        if (lane < HC) {
            float po = f_mul(2.0f, sigmoid_ref(f_add(f_mul(f_mul(sums[HC + lane], inv), a.scale[1]), a.base[HC + lane])));
            a.post[(int64_t)t * HC + lane] = po;
        }
        float c = f_add(f_mul(f_mul(sums[2 * HC + L], inv), a.scale[2]), a.base[2 * HC + L]);
        c = sinkhorn_lane<HC>(c, a.iters, a.hc_eps);
        if (lane < HC * HC) a.comb[(int64_t)t * HC * HC + lane] = c;
        return;
    }
    if (threadIdx.x < HC)
        pre_s[threadIdx.x] =
            f_add(sigmoid_ref(f_add(f_mul(f_mul(sums[threadIdx.x], inv), a.scale[0]), a.base[threadIdx.x])), a.hc_eps);
    __syncthreads();
    float ss = 0.0f;
    const int64_t xbase = (int64_t)t * HC * a.D;
    for (int e0 = threadIdx.x; e0 < a.D; e0 += 4 * FINISH_THREADS) {
        float xv[4][HC]; // 4*HC independent loads before any store
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = e0 + u * FINISH_THREADS;
#pragma unroll
            for (int j = 0; j < HC; j++) xv[u][j] = e < a.D ? ldg_elem(a.X, a.x_dtype, xbase + (int64_t)j * a.D + e) : 0.0f;
        }
#pragma unroll
        for (int u = 0; u < 4; u++) {
            const int e = e0 + u * FINISH_THREADS;
            if (e >= a.D) break;
            float acc = 0.0f; // the CPU's order: streams 0..hc-1 from 0
#pragma unroll
            for (int j = 0; j < HC; j++) acc = f_add(acc, f_mul(pre_s[j], xv[u][j]));
            xs[e] = acc;
            if (a.x_out) a.x_out[(int64_t)t * a.D + e] = acc;
            ss = f_add(ss, f_mul(acc, acc));
        }
    }
    if (!a.y && !a.q.q) return; // uniform across the block: only the collapse was asked for
    ss = block_reduce(ss, sh, 0); // its barriers also publish xs
    const float inv2 = f_div(1.0f, f_sqrt(f_add(f_div(ss, (float)a.D), a.w_eps)));
    emit_norm_row(xs, a.D, inv2, a.w, a.y, a.y_dtype, &a.q, t, sh);
}

template <int HC>
__global__ void __launch_bounds__(POST_THREADS) k_hc_post(const void *X, int x_dtype, const void *y, int y_dtype,
                                                           const float *post, const float *comb, int merge_fp32, int D,
                                                           void *X_out) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    const int t = blockIdx.y;
    const int e = blockIdx.x * blockDim.x + threadIdx.x;
    if (e >= D) return;
    float pw[HC], cw[HC * HC], xv[HC];
#pragma unroll
    for (int k = 0; k < HC; k++) {
        float p = post[(int64_t)t * HC + k];
        pw[k] = merge_fp32 ? p : bf16_round(p);
        xv[k] = load_elem(X, x_dtype, ((int64_t)t * HC + k) * D + e);
    }
#pragma unroll
    for (int i = 0; i < HC * HC; i++) {
        float c = comb[(int64_t)t * HC * HC + i];
        cw[i] = merge_fp32 ? c : bf16_round(c);
    }
    const float yv = load_elem(y, y_dtype, (int64_t)t * D + e);
#pragma unroll
    for (int k = 0; k < HC; k++) {
        float acc = 0.0f; // sum over the FIRST index of comb, j ascending, as the CPU
#pragma unroll
        for (int j = 0; j < HC; j++) acc = f_add(acc, f_mul(cw[j * HC + k], xv[j]));
        store_elem(X_out, x_dtype, ((int64_t)t * HC + k) * D + e, f_add(f_mul(pw[k], yv), acc));
    }
}

static dsv4_status check_hc_dims(const char *op, const dsv4_cuda_hc_dims *d, int T) {
    if (!d) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL dims", op);
    if (T < 0 || d->hc < 1 || d->dim <= 0 || d->sinkhorn_iters < 1)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: bad sizes T=%d hc=%d D=%d iters=%d", op, T, d->hc, d->dim,
                         d->sinkhorn_iters);
    if (d->hc > MAX_HC || d->dim > DSV4_CUDA_HC_MAX_DIM)
        return dsv4_fail(DSV4_ERR_UNSUPPORTED, "%s: hc=%d D=%d not compiled (hc 1..%d, D <= %d)", op, d->hc, d->dim,
                         MAX_HC, DSV4_CUDA_HC_MAX_DIM);
    if (T > DSV4_CUDA_HC_MAX_T || (int64_t)T * d->hc * d->dim > (int64_t)INT_MAX)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: T=%d too large (at most %d tokens, T*hc*D < 2^31)", op, T,
                         DSV4_CUDA_HC_MAX_T);
    return DSV4_OK;
}

extern "C" size_t dsv4_cuda_hc_pre_workspace_bytes(const dsv4_cuda_hc_dims *d, int T) {
    if (!d || T <= 0 || d->hc < 1 || d->dim <= 0) return 0;
    int nv = (2 + d->hc) * d->hc + 1;
    return (size_t)T * (size_t)hc_chunks((int64_t)d->hc * d->dim, T, NULL) * (size_t)nv * sizeof(float); // partials
}

template <int HC>
static dsv4_status launch_pre(cudaStream_t stream, const dsv4_cuda_hc_dims *d, int T, const dsv4_cuda_hc_pre_args *a,
                              const nvfp4_dst *q) {
    int per_chunk;
    const int n = HC * d->dim, n_chunks = hc_chunks(n, T, &per_chunk);
    if (T <= SMALL_T) {
        dim3 grid1((unsigned)n_chunks, (unsigned)((T + MIX_TT - 1) / MIX_TT));
        (void)dsv4_launch_pdl(k_hc_mix_partial<HC>, dim3(grid1), dim3(MIX_THREADS), 0, stream, a->X, (int)a->x_dtype, T, n, a->fn, n_chunks,
                                                                MIX_THREADS, (float *)a->workspace);
    } else {
        // no PDL here: launched early, this grid's CTAs would sit resident (waiting) through the
        // previous kernel's many waves and slow it (T = 4096 measured 889 us with, 711 without)
        dim3 grid1((unsigned)n_chunks, (unsigned)((T + TOK_THREADS - 1) / TOK_THREADS));
        k_hc_mix_tokens<HC><<<grid1, TOK_THREADS, 0, stream>>>(a->X, (int)a->x_dtype, T, n, a->fn, n_chunks, per_chunk,
                                                               (float *)a->workspace);
    }
    DSV4_CUDA_LAUNCHED("hc_pre: projection kernel");
    hc_finish_args f;
    f.X = a->X, f.x_dtype = (int)a->x_dtype, f.T = T, f.D = d->dim, f.n_chunks = n_chunks;
    f.iters = d->sinkhorn_iters, f.partial = (const float *)a->workspace, f.base = a->base, f.scale = a->scale;
    f.rms_eps = d->norm_eps, f.hc_eps = d->hc_eps, f.post = a->post, f.comb = a->comb, f.x_out = a->x;
    f.w = a->norm_w, f.w_eps = a->norm_eps, f.y = a->y, f.y_dtype = (int)a->y_dtype, f.q = *q;
    f.rows = q->swizzled ? (T + 127) / 128 * 128 : T;
    k_hc_pre_finish<HC><<<f.rows + T, FINISH_THREADS, (size_t)d->dim * sizeof(float), stream>>>(f);
    DSV4_CUDA_LAUNCHED("hc_pre: finish kernel");
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_hc_pre(cudaStream_t stream, const dsv4_cuda_hc_dims *d, int T,
                                        const dsv4_cuda_hc_pre_args *a) {
    DSV4_TRY(check_hc_dims("hc_pre", d, T));
    if (!a || !a->X || !a->fn || !a->base || !a->scale || !a->post || !a->comb)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_pre: NULL argument");
    if ((a->x_dtype != DSV4_CUDA_F32 && a->x_dtype != DSV4_CUDA_BF16) ||
        (a->y && a->y_dtype != DSV4_CUDA_F32 && a->y_dtype != DSV4_CUDA_BF16))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_pre: unknown dtype");
    nvfp4_dst q = {NULL, NULL, NULL, 0, 0};
    if (a->q) {
        if (!a->q->q || !a->q->sf || !a->q->scale)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_pre: NULL NVFP4 output pointer");
        if (d->dim % 16) return dsv4_fail(DSV4_ERR_SHAPE, "hc_pre: NVFP4 output needs D a multiple of 16, got %d", d->dim);
        if (a->q->mode != DSV4_ACT_SCALE_STATIC && a->q->mode != DSV4_ACT_SCALE_DYNAMIC_TOKEN)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "hc_pre: NVFP4 scale mode %d (only STATIC and DYNAMIC_TOKEN fuse)",
                             (int)a->q->mode);
        if (a->q->layout != DSV4_SF_LINEAR && a->q->layout != DSV4_SF_SWIZZLED)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_pre: unknown scale layout %d", (int)a->q->layout);
        if ((uintptr_t)a->q->q & 7) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_pre: NVFP4 payload must be 8-byte aligned");
        q.q = a->q->q, q.sf = a->q->sf, q.scale = a->q->scale;
        q.mode = (int)a->q->mode, q.swizzled = a->q->layout == DSV4_SF_SWIZZLED;
    }
    if (T == 0) return DSV4_OK;
    size_t need = dsv4_cuda_hc_pre_workspace_bytes(d, T);
    if (!a->workspace || a->workspace_bytes < need)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_pre: workspace of %zu bytes given, %zu needed for T=%d",
                         a->workspace ? a->workspace_bytes : 0, need, T);
    switch (d->hc) {
    case 1: return launch_pre<1>(stream, d, T, a, &q);
    case 2: return launch_pre<2>(stream, d, T, a, &q);
    case 3: return launch_pre<3>(stream, d, T, a, &q);
    default: return launch_pre<4>(stream, d, T, a, &q);
    }
}

extern "C" dsv4_status dsv4_cuda_hc_post(cudaStream_t stream, const dsv4_cuda_hc_dims *d, int T, const void *X,
                                         dsv4_cuda_dtype x_dtype, const void *y, dsv4_cuda_dtype y_dtype,
                                         const float *post, const float *comb, dsv4_cuda_hc_merge merge, void *X_out) {
    DSV4_TRY(check_hc_dims("hc_post", d, T));
    if (!X || !y || !post || !comb || !X_out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_post: NULL argument");
    if ((x_dtype != DSV4_CUDA_F32 && x_dtype != DSV4_CUDA_BF16) || (y_dtype != DSV4_CUDA_F32 && y_dtype != DSV4_CUDA_BF16))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_post: unknown dtype");
    if (merge != DSV4_CUDA_HC_MERGE_BF16_WEIGHTS && merge != DSV4_CUDA_HC_MERGE_FP32)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_post: unknown merge mode %d", (int)merge);
    if (T == 0) return DSV4_OK;
    dim3 grid((unsigned)((d->dim + POST_THREADS - 1) / POST_THREADS), (unsigned)T);
    int m = merge == DSV4_CUDA_HC_MERGE_FP32;
    switch (d->hc) {
    case 1: (void)dsv4_launch_pdl(k_hc_post<1>, dim3(grid), dim3(POST_THREADS), 0, stream, X, (int)x_dtype, y, (int)y_dtype, post, comb, m, d->dim, X_out); break;
    case 2: (void)dsv4_launch_pdl(k_hc_post<2>, dim3(grid), dim3(POST_THREADS), 0, stream, X, (int)x_dtype, y, (int)y_dtype, post, comb, m, d->dim, X_out); break;
    case 3: (void)dsv4_launch_pdl(k_hc_post<3>, dim3(grid), dim3(POST_THREADS), 0, stream, X, (int)x_dtype, y, (int)y_dtype, post, comb, m, d->dim, X_out); break;
    default: (void)dsv4_launch_pdl(k_hc_post<4>, dim3(grid), dim3(POST_THREADS), 0, stream, X, (int)x_dtype, y, (int)y_dtype, post, comb, m, d->dim, X_out); break;
    }
    DSV4_CUDA_LAUNCHED("hc_post: kernel");
    return DSV4_OK;
}
