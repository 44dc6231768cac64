// Fused RMSNorm (+ NVFP4 quantize).
//  - k_rmsnorm_rows (dim a multiple of 16, 16-byte aligned x / w / out: every model shape):
//    the row in registers, TPR threads per row (a block per row for a few rows, down to a
//    warp per row for thousands: nvfp4.cuh row_threads), 16-byte loads all issued before
//    the first use, reductions by warp shuffles (plus shared memory across a row's warps),
//    each group scaled, stored (16-byte stores) and quantized by its own thread. No
//    shared-memory staging: reading xs[c*16 + k] from shared memory was a 16-way bank
//    conflict on every read and capped the fused kernel at ~14% of copy bandwidth.
//  - k_rmsnorm (any other dim): the row staged in shared memory as fp32 and the shared
//    emit_norm_row (nvfp4.cuh).
// Rows of a few thousand values are latency-bound at decode and bandwidth-bound at prefill;
// one pass over the input and one over the outputs is the floor in both cases.
#include <limits.h>

#include "cuda/common.cuh"
#include "cuda/nvfp4.cuh"
#include "cuda/rmsnorm.h"

#define NORM_THREADS 256

__global__ void __launch_bounds__(NORM_THREADS) k_rmsnorm(const void *x, int in_dtype, const float *w, int64_t rows,
                                                           int dim, float eps, void *out, int out_dtype, nvfp4_dst d) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    extern __shared__ __align__(16) float xs[]; // [dim]
    __shared__ float sh[33];
    const int64_t r = blockIdx.x;
    if (r >= rows) { // padding row of a swizzled scale layout
        nvfp4_zero_pad(&d, r, dim / 16, 1);
        return;
    }
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
        float v = load_elem(x, in_dtype, r * dim + i);
        xs[i] = v;
        ss = f_add(ss, f_mul(v, v));
    }
    ss = block_reduce(ss, sh, 0); // its barriers also publish xs
    const float inv = f_div(1.0f, f_sqrt(f_add(f_div(ss, (float)dim), eps)));
    emit_norm_row(xs, dim, inv, w, out, out_dtype, &d, r, sh);
}

// One row of the row layout: thread t of the row's TPR holds groups t + j*TPR in u[j] (raw
// input words, zeros past the row or for a row past the end). Every thread of the block calls
// it (barriers for TPR > 32); sh_ss [RPB][8] and sh_max [NORM_THREADS / 32] are this call's
// shared scratch, tbl its warp's 32-entry table.
template <int DT, int TPR, int S>
__device__ __forceinline__ void norm_row(uint32_t (&u)[S][RAW_WORDS(DT)], int64_t r, bool real, const float *w,
                                         int dim, float eps, void *out, int out_dtype, const nvfp4_dst &d,
                                         float *sh_ss, float *sh_max, uint32_t *tbl) {
    constexpr int NW = TPR / 32, NJ = NORM_THREADS / TPR;
    const int t = threadIdx.x % TPR, rib = threadIdx.x / TPR, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int kb = dim / 16;
    float chain[NJ];
#pragma unroll
    for (int jj = 0; jj < NJ; jj++) chain[jj] = 0.0f;
#pragma unroll
    for (int j = 0; j < S; j++) {
        float v[16];
        unpack16<DT>(u[j], v);
#pragma unroll
        for (int k = 0; k < 16; k++) chain[j % NJ] = f_add(chain[j % NJ], f_mul(v[k], v[k]));
    }
#pragma unroll
    for (int jj = 0; jj < NJ; jj++)
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) chain[jj] = f_add(chain[jj], __shfl_xor_sync(0xffffffffu, chain[jj], o));
    float ss;
    if (NW == 1) { // chain jj is old warp jj
        ss = chain[0];
#pragma unroll
        for (int jj = 1; jj < NJ; jj++) ss = f_add(ss, chain[jj]);
    } else {
        if (lane == 0)
#pragma unroll
            for (int jj = 0; jj < NJ; jj++) sh_ss[rib * 8 + t / 32 + NW * jj] = chain[jj];
        __syncthreads();
        ss = sh_ss[rib * 8];
#pragma unroll
        for (int i = 1; i < 8; i++) ss = f_add(ss, sh_ss[rib * 8 + i]);
    }
    const float inv = f_div(1.0f, f_sqrt(f_add(f_div(ss, (float)dim), eps)));
    // y per group: written to out, and kept BF16-rounded (as BF16 words, exact) in u[j][0..7];
    // gk[j]: the largest key of those words (nvfp4_bf16_keys)
    uint32_t gk[S];
#pragma unroll
    for (int j = 0; j < S; j++) {
        gk[j] = 0;
        const int c = t + j * TPR;
        if (!real || c >= kb) continue;
        float v[16];
        unpack16<DT>(u[j], v);
        if (w) {
            const float4 *wp = (const float4 *)(w + (int64_t)c * 16);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float4 f = __ldg(wp + k);
                v[4 * k] = f_mul(f.x, f_mul(v[4 * k], inv));
                v[4 * k + 1] = f_mul(f.y, f_mul(v[4 * k + 1], inv));
                v[4 * k + 2] = f_mul(f.z, f_mul(v[4 * k + 2], inv));
                v[4 * k + 3] = f_mul(f.w, f_mul(v[4 * k + 3], inv));
            }
        } else {
#pragma unroll
            for (int k = 0; k < 16; k++) v[k] = f_mul(v[k], inv);
        }
        uint32_t b[8];
#pragma unroll
        for (int k = 0; k < 8; k++) b[k] = bf16_encode(v[2 * k]) | (bf16_encode(v[2 * k + 1]) << 16);
        if (out) {
            if (out_dtype == DT_F32) {
                float4 *o = (float4 *)((float *)out + r * dim + (int64_t)c * 16);
#pragma unroll
                for (int k = 0; k < 4; k++) o[k] = make_float4(v[4 * k], v[4 * k + 1], v[4 * k + 2], v[4 * k + 3]);
            } else {
                uint4 *o = (uint4 *)((uint16_t *)out + r * dim + (int64_t)c * 16);
                o[0] = make_uint4(b[0], b[1], b[2], b[3]);
                o[1] = make_uint4(b[4], b[5], b[6], b[7]);
            }
        }
#pragma unroll
        for (int k = 0; k < 8; k++) u[j][k] = b[k];
        gk[j] = nvfp4_bf16_kmax(b); // what the quantizer sees
    }
    if (!d.q) return; // uniform
    float s;
    if (d.mode == 2 /* DYNAMIC_TOKEN */) {
        float m = 0.0f;
#pragma unroll
        for (int j = 0; j < S; j++) m = f_max_nan_ignored(m, nvfp4_bf16_amax(u[j], gk[j])); // 0 for an empty group
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = f_max_nan_ignored(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (NW > 1) {
            if (lane == 0) sh_max[warp] = m;
            __syncthreads();
#pragma unroll
            for (int i = 0; i < NW; i++) m = f_max_nan_ignored(m, sh_max[rib * NW + i]);
        }
        s = nvfp4_dynamic_scale(m);
        if (real && t == 0) d.scale[r] = s;
    } else {
        s = d.scale[0];
    }
    if (!real) {
        nvfp4_zero_pad_n(&d, r, kb, 1, t, TPR);
        return;
    }
    // the BF16 quantizer on the y words (quantize.cu: ~11 instructions per element instead of
    // ~32), its breakpoint table per warp; a block holding a NaN, or a g outside its range,
    // takes the float form
    const float gi = f_div(1.0f, s);
    const nvfp4_bf16_g q = nvfp4_bf16_g_of(gi);
    __syncwarp(); // the warp's reads of the previous row's table are done
    tbl[lane] = nvfp4_bf16_bp_entry(q.fast ? q.G : 1.0f, lane);
    __syncwarp();
    const nvfp4_bf16_tbl tb = nvfp4_bf16_tbl_shared(tbl);
#pragma unroll
    for (int j = 0; j < S; j++) {
        const int c = t + j * TPR;
        if (c >= kb) break;
        nvfp4_store_group_bf16(d, r, c, kb, u[j], gk[j], q, tb);
    }
    nvfp4_zero_pad_n(&d, r, kb, 0, t, TPR);
}

template <int DT, int TPR, int S>
__device__ __forceinline__ void load_norm_row(const void *x, int64_t r, int64_t rows, int dim, uint32_t (&u)[S][RAW_WORDS(DT)]) {
    const int t = threadIdx.x % TPR, kb = dim / 16;
#pragma unroll
    for (int j = 0; j < S; j++) {
        if (r < rows && t + j * TPR < kb) {
            load_raw16<DT>(x, r * dim + (int64_t)(t + j * TPR) * 16, u[j]);
        } else {
#pragma unroll
            for (int k = 0; k < RAW_WORDS(DT); k++) u[j][k] = 0; // +0 adds exactly
        }
    }
}

// TPR threads per row (nvfp4.cuh row_threads), 256 / TPR rows per block, S groups of 16 per
// thread, thread t holding groups t + j*TPR; the row must fit (TPR * S * 16 >= dim). Same
// arithmetic per element as emit_norm_row: y = w * (x * inv), quantized from bf16_round(y).
//
// The sum of squares is added in the order of the original block-per-row kernel whatever
// TPR is, so the output does not depend on the layout: there, thread T (0..255) added the
// squares of its groups T, T + 256, ... in one running sum, warp w combined its lanes with
// the xor tree, and the 8 warp sums were added in warp order. Here old thread T = t + TPR*jj
// (jj < 256/TPR) is thread t's chain jj: its groups are slots jj, jj + 256/TPR, ... and it
// sits on the same lane (TPR is a multiple of 32), so the same xor tree rebuilds old warp
// t/32 + (TPR/32)*jj's sum; the 8 sums are then added in order (in registers at TPR 32,
// through shared memory otherwise).
template <int DT, int TPR, int S>
__global__ void __launch_bounds__(NORM_THREADS)
    k_rmsnorm_rows(const void *x, const float *w, int64_t rows, int dim, float eps, void *out, int out_dtype, nvfp4_dst d) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    constexpr int RPB = NORM_THREADS / TPR;
    __shared__ float sh_ss[RPB * 8], sh_max[NORM_THREADS / 32];
    __shared__ __align__(16) uint32_t tbl[NORM_THREADS / 32][32]; // BF16 quantizer: a table per warp
    const int64_t r0 = (int64_t)blockIdx.x * RPB, r = r0 + threadIdx.x / TPR;
    if (r0 >= rows) { // a block of padding rows of a swizzled scale layout
        nvfp4_zero_pad_n(&d, r, dim / 16, 1, threadIdx.x % TPR, TPR);
        return;
    }
    uint32_t u[S][RAW_WORDS(DT)];
    load_norm_row<DT, TPR, S>(x, r, rows, dim, u);
    norm_row<DT, TPR, S>(u, r, r < rows, w, dim, eps, out, out_dtype, d, sh_ss, sh_max, tbl[threadIdx.x / 32]);
}

typedef void (*norm_kernel)(const void *, const float *, int64_t, int, float, void *, int, nvfp4_dst);
#define NK_S(DT, TPR) {k_rmsnorm_rows<DT, TPR, 1>, k_rmsnorm_rows<DT, TPR, 2>, k_rmsnorm_rows<DT, TPR, 4>, \
                       k_rmsnorm_rows<DT, TPR, DT == DT_F32 ? 4 : 8>}
#define NK_T(DT) {NK_S(DT, 32), NK_S(DT, 64), NK_S(DT, 128), NK_S(DT, 256)}
// [dtype][log2(TPR/32)][log2(S)]; fp32 input stops at 4 groups per thread (as quantize.cu).
static const norm_kernel k_norm_table[2][4][4] = {NK_T(DT_F32), NK_T(DT_BF16)};

static int ilog2(int v) {
    int l = 0;
    while (v > 1) v >>= 1, l++;
    return l;
}

extern "C" dsv4_status dsv4_cuda_rmsnorm(cudaStream_t stream, const void *x, dsv4_cuda_dtype in_dtype, const float *w,
                                         int64_t rows, int dim, float eps, void *out, dsv4_cuda_dtype out_dtype,
                                         const dsv4_cuda_nvfp4_out *q) {
    if (!x || (!out && !q))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rmsnorm: NULL input, or neither output given");
    if (rows < 0 || rows > INT_MAX / 2 || dim <= 0 || dim > DSV4_CUDA_NORM_MAX_DIM)
        return dsv4_fail(DSV4_ERR_SHAPE, "rmsnorm: bad sizes rows=%lld dim=%d (dim at most %d)", (long long)rows, dim,
                         DSV4_CUDA_NORM_MAX_DIM);
    if ((in_dtype != DSV4_CUDA_F32 && in_dtype != DSV4_CUDA_BF16) || (out_dtype != DSV4_CUDA_F32 && out_dtype != DSV4_CUDA_BF16))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rmsnorm: unknown dtype %d or %d", (int)in_dtype, (int)out_dtype);
    nvfp4_dst d = {NULL, NULL, NULL, 0, 0};
    if (q) {
        if (!q->q || !q->sf || !q->scale)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rmsnorm: NULL NVFP4 output pointer");
        if (dim % 16)
            return dsv4_fail(DSV4_ERR_SHAPE, "rmsnorm: NVFP4 output needs dim a multiple of 16, got %d", dim);
        if (q->mode != DSV4_ACT_SCALE_STATIC && q->mode != DSV4_ACT_SCALE_DYNAMIC_TOKEN)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "rmsnorm: NVFP4 scale mode %d (only STATIC and DYNAMIC_TOKEN fuse)",
                             (int)q->mode);
        if (q->layout != DSV4_SF_LINEAR && q->layout != DSV4_SF_SWIZZLED)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rmsnorm: unknown scale layout %d", (int)q->layout);
        if ((uintptr_t)q->q & 7)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rmsnorm: NVFP4 payload must be 8-byte aligned");
        d.q = q->q, d.sf = q->sf, d.scale = q->scale;
        d.mode = (int)q->mode, d.swizzled = q->layout == DSV4_SF_SWIZZLED;
    }
    if (rows == 0) return DSV4_OK;
    int64_t grid = d.swizzled ? (rows + 127) / 128 * 128 : rows;
    if (dim % 16 == 0 && !((uintptr_t)x & 15) && !((uintptr_t)w & 15) && !((uintptr_t)out & 15)) {
        // threads per row by the row count, raised until the row fits in registers
        const int kb = dim / 16, smax = in_dtype == DSV4_CUDA_F32 ? 4 : 8;
        int tpr = row_threads(rows);
        while (tpr < NORM_THREADS && tpr * smax < kb) tpr *= 2;
        if (tpr * smax >= kb) {
            const norm_kernel k = k_norm_table[in_dtype == DSV4_CUDA_BF16][ilog2(tpr / 32)][ilog2(row_slots(kb, tpr, smax))];
            const int64_t blocks = (grid * tpr + NORM_THREADS - 1) / NORM_THREADS;
            (void)dsv4_launch_pdl(k, dim3((unsigned)blocks), dim3(NORM_THREADS), 0, stream, x, w, rows, dim, eps, out,
                                  (int)out_dtype, d);
            DSV4_CUDA_LAUNCHED("rmsnorm: kernel");
            return DSV4_OK;
        }
    }
    (void)dsv4_launch_pdl(k_rmsnorm, dim3((unsigned)grid), dim3(NORM_THREADS), (size_t)dim * sizeof(float), stream, x, (int)in_dtype, w, rows, dim, eps,
                                                                                     out, (int)out_dtype, d);
    DSV4_CUDA_LAUNCHED("rmsnorm: kernel");
    return DSV4_OK;
}
