// MoE SwiGLU epilogue and combine kernels (header: moe.h; CPU reference:
// src/cpu/moe.c).
//
// SwiGLU: one block of 256 threads per row (without NVFP4, few rows: up to one block per 256
// elements of a row). Without NVFP4 each thread walks the row with a stride of the blocks
// (coalesced gate and up reads). With a static NVFP4 scale and a decode step's rows, one
// element per thread and a half-warp per 16-element block (shuffles). Otherwise, for rows up
// to SWIGLU_STAGE_MAX, every thread evaluates elements (coalesced) into a shared-memory copy
// of the row, the block reduces the amax (DYNAMIC_TOKEN), then each thread quantizes whole
// 16-element blocks from shared memory (nvfp4_quant_group16_fast: division-free,
// bit-identical). Longer rows (none in DeepSeek-V4) evaluate the row twice instead (once for
// the amax, once to quantize, each thread owning whole blocks).
// Combine: one block per (token, 256 columns); thread 0 orders the token's <= 9 slots by
// expert id, then each thread loads its column of every slot at once and adds them in order.
#include <limits.h>

#include "cuda/common.cuh"
#include "cuda/moe.h"
#include "cuda/moe_math.cuh"
#include "cuda/moe_route.h" /* DSV4_CUDA_MOE_COMBINE_MAX_K */
#include "cuda/nvfp4.cuh"

#define SWIGLU_THREADS 256
#define SWIGLU_UNROLL 4
#define SWIGLU_TARGET_BLOCKS 1056 // the plain path's row splitting aims at this many blocks (8 per SM of 132)
#define SWIGLU_STAGE_MAX 4096     // NVFP4 rows up to this long are staged in shared memory (16 KB)
#define SWIGLU_PER_ELEM_MAX (1 << 20) // static NVFP4 scales: an element per thread up to this many elements
#define COMBINE_THREADS 256
#define COMBINE_MAX_K DSV4_CUDA_MOE_COMBINE_MAX_K

// The offsets of intermediate element i's gate and up within a row of h: [gate | up] halves, or
// (il = DSV4_CUDA_MOE_L1_BLOCK) blocks of il gate then il up values (the routed L1 stack's rows).
__device__ __forceinline__ int64_t gate_col(int i, int il) { return il ? (int64_t)(i / il) * 2 * il + i % il : i; }
__device__ __forceinline__ int64_t up_col(int i, int inter, int il) { return il ? gate_col(i, il) + il : (int64_t)inter + i; }

// Gate and up of elements i0 + j·stride, j < SWIGLU_UNROLL, all loads issued before any use (a
// decode step has few rows, so the time is memory round trips); 0 past the row. hr: the row.
__device__ __forceinline__ void load_gate_up(const void *h, int h_dtype, int64_t hr, int il, int inter, int i0,
                                             int stride, float gv[SWIGLU_UNROLL], float uv[SWIGLU_UNROLL]) {
#pragma unroll
    for (int j = 0; j < SWIGLU_UNROLL; j++) {
        const int i = i0 + j * stride;
        gv[j] = i < inter ? load_elem(h, h_dtype, hr + gate_col(i, il)) : 0.0f;
        uv[j] = i < inter ? load_elem(h, h_dtype, hr + up_col(i, inter, il)) : 0.0f;
    }
}

__global__ void __launch_bounds__(SWIGLU_THREADS)
    k_moe_swiglu(const void *h, int h_dtype, int il, int64_t rows, int inter, float limit, const int32_t *n_rows,
                 void *out, int out_dtype, nvfp4_dst d, const int32_t *tile_expert, int tile, int per_elem) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ float sh[33];
    const int64_t r = blockIdx.x, kb = inter / 16;
    if (r >= rows) { // a padding row of the swizzled scale layout (d.q set, else not launched)
        if (blockIdx.y == 0) nvfp4_zero_pad(&d, r, kb, 1);
        return;
    }
    if (n_rows && r >= *n_rows) return; // past the rows in use: nothing reads them
    int expert = 0;
    // tile_expert has rows / tile entries: a row of an incomplete last tile, or of a tile
    // owned by no expert (-1), is past offsets[E] (a multiple of tile) and is not in use
    if (tile_expert && (r / tile >= rows / tile || (expert = tile_expert[r / tile]) < 0)) return;
    const int64_t hr = r * 2 * inter; // element offset of this row of h
    if (!d.q) { // blockIdx.y splits the row (the plain path has no row-wide amax)
        const int stride = SWIGLU_THREADS * gridDim.y;
        for (int i0 = blockIdx.y * SWIGLU_THREADS + threadIdx.x; i0 < inter; i0 += SWIGLU_UNROLL * stride) {
            float gv[SWIGLU_UNROLL], uv[SWIGLU_UNROLL];
            load_gate_up(h, h_dtype, hr, il, inter, i0, stride, gv, uv);
#pragma unroll
            for (int j = 0; j < SWIGLU_UNROLL; j++)
                if (i0 + j * stride < inter) store_elem(out, out_dtype, r * inter + i0 + j * stride, swiglu_as_cpu(gv[j], uv[j], limit));
        }
        return;
    }
    if (per_elem) { // (static scales, a decode step's rows)
        // one element per thread (blockIdx.y picks the row's 256-element range), a half-warp per
        // 16-element block: the block amax and the packed nibbles by shuffles; the same
        // operations as nvfp4_quant_group16 (a decode step's few rows spread over many threads,
        // as in the plain path; inter % 16 == 0, so a half-warp is all in or all out)
        const int i = blockIdx.y * SWIGLU_THREADS + threadIdx.x, lane = threadIdx.x & 31;
        const bool in = i < inter;
        const float v = in ? swiglu_as_cpu(load_elem(h, h_dtype, hr + gate_col(i, il)),
                                           load_elem(h, h_dtype, hr + up_col(i, inter, il)), limit)
                           : 0.0f;
        if (out && in) store_elem(out, out_dtype, r * inter + i, v);
        float amax = f_max_nan_ignored(0.0f, f_abs(v));
#pragma unroll
        for (int o = 1; o < 16; o <<= 1) amax = f_max_nan_ignored(amax, __shfl_xor_sync(0xffffffffu, amax, o));
        const float g = f_div(1.0f, d.scale[expert]);
        const uint32_t sc = e4m3_encode(f_div(f_mul(g, amax), 6.0f));
        const float sf = e4m3_decode(sc);
        uint32_t word = (sf == 0.0f ? 0u : e2m1_encode(f_div(f_mul(v, g), sf))) << (4 * (lane % 8));
#pragma unroll
        for (int o = 1; o < 8; o <<= 1) word |= __shfl_xor_sync(0xffffffffu, word, o);
        if (in && lane % 16 == 0) d.sf[nvfp4_sf_index(d.swizzled, r, i / 16, kb)] = (uint8_t)sc;
        if (in && lane % 8 == 0) *(uint32_t *)(d.q + r * (inter / 2) + i / 2) = word;
        if (blockIdx.y == 0) nvfp4_zero_pad(&d, r, kb, 0);
        return;
    }
    if (inter <= SWIGLU_STAGE_MAX) { // staged: every element evaluated once, by all the threads
        __shared__ __align__(16) float vals[SWIGLU_STAGE_MAX];
        float amax = 0.0f;
        for (int i0 = threadIdx.x; i0 < inter; i0 += SWIGLU_UNROLL * SWIGLU_THREADS) {
            float gv[SWIGLU_UNROLL], uv[SWIGLU_UNROLL];
            load_gate_up(h, h_dtype, hr, il, inter, i0, SWIGLU_THREADS, gv, uv);
#pragma unroll
            for (int j = 0; j < SWIGLU_UNROLL; j++) {
                const int i = i0 + j * SWIGLU_THREADS;
                if (i >= inter) break;
                const float v = swiglu_as_cpu(gv[j], uv[j], limit);
                vals[i] = v;
                if (out) store_elem(out, out_dtype, r * inter + i, v);
                amax = f_max_nan_ignored(amax, f_abs(v));
            }
        }
        float s;
        if (d.mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN) { // (block_reduce's barriers also publish vals)
            s = nvfp4_dynamic_scale(block_reduce(amax, sh, 1));
            if (threadIdx.x == 0) d.scale[r] = s;
        } else {
            s = d.scale[expert];
        }
        __syncthreads(); // vals complete
        const float g = f_div(1.0f, s);
        for (int64_t c = threadIdx.x; c < kb; c += blockDim.x) {
            float v[16];
            const float4 *src = reinterpret_cast<const float4 *>(vals + c * 16);
#pragma unroll
            for (int q = 0; q < 4; q++) {
                const float4 f = src[q];
                v[4 * q] = f.x, v[4 * q + 1] = f.y, v[4 * q + 2] = f.z, v[4 * q + 3] = f.w;
            }
            uint32_t packed[2];
            d.sf[nvfp4_sf_index(d.swizzled, r, c, kb)] = (uint8_t)nvfp4_quant_group16_fast(v, g, packed);
            *(uint2 *)(d.q + r * (inter / 2) + c * 8) = make_uint2(packed[0], packed[1]);
        }
        nvfp4_zero_pad(&d, r, kb, 0);
        return;
    }
    float s;
    if (d.mode == DSV4_ACT_SCALE_STATIC) {
        s = d.scale[expert];
    } else { // DYNAMIC_TOKEN
        float amax = 0.0f;
        for (int i0 = threadIdx.x; i0 < inter; i0 += SWIGLU_UNROLL * SWIGLU_THREADS) {
            float gv[SWIGLU_UNROLL], uv[SWIGLU_UNROLL];
            load_gate_up(h, h_dtype, hr, il, inter, i0, SWIGLU_THREADS, gv, uv);
#pragma unroll
            for (int j = 0; j < SWIGLU_UNROLL; j++) // padding lanes give swiglu(0, 0) = 0: no effect on amax
                amax = f_max_nan_ignored(amax, f_abs(swiglu_as_cpu(gv[j], uv[j], limit)));
        }
        s = nvfp4_dynamic_scale(block_reduce(amax, sh, 1));
        if (threadIdx.x == 0) d.scale[r] = s;
    }
    const float g = f_div(1.0f, s);
    for (int64_t c = threadIdx.x; c < kb; c += blockDim.x) {
        float v[16], uv[16];
#pragma unroll
        for (int j = 0; j < 16; j++) { // all loads first (stores to out could alias h for the compiler)
            v[j] = load_elem(h, h_dtype, hr + gate_col((int)(c * 16 + j), il));
            uv[j] = load_elem(h, h_dtype, hr + up_col((int)(c * 16 + j), inter, il));
        }
#pragma unroll
        for (int j = 0; j < 16; j++) {
            v[j] = swiglu_as_cpu(v[j], uv[j], limit);
            if (out) store_elem(out, out_dtype, r * inter + c * 16 + j, v[j]);
        }
        uint32_t packed[2];
        d.sf[nvfp4_sf_index(d.swizzled, r, c, kb)] = (uint8_t)nvfp4_quant_group16_fast(v, g, packed);
        *(uint2 *)(d.q + r * (inter / 2) + c * 8) = make_uint2(packed[0], packed[1]);
    }
    nvfp4_zero_pad(&d, r, kb, 0);
}

static bool dtype_ok(dsv4_cuda_dtype t) { return t == DSV4_CUDA_F32 || t == DSV4_CUDA_BF16; }

extern "C" dsv4_status dsv4_cuda_moe_swiglu(cudaStream_t stream, const dsv4_cuda_swiglu_args *a) {
    if (!a || !a->h || (!a->out && !a->q))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_swiglu: NULL input, or neither output given");
    if (a->rows < 0 || a->rows > INT_MAX / 2 || a->inter <= 0 || a->inter > INT_MAX / 4)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_swiglu: bad sizes rows=%lld inter=%d", (long long)a->rows, a->inter);
    if (!dtype_ok(a->h_dtype) || (a->out && !dtype_ok(a->out_dtype)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_swiglu: unknown dtype %d or %d", (int)a->h_dtype,
                         (int)a->out_dtype);
    if (a->tile_expert && a->tile <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_swiglu: tile_expert given with tile %d", a->tile);
    if (a->interleave != 0 && (a->interleave != DSV4_CUDA_MOE_L1_BLOCK || a->inter % DSV4_CUDA_MOE_L1_BLOCK))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_swiglu: interleave %d (0 or %d, dividing inter = %d)", a->interleave,
                         DSV4_CUDA_MOE_L1_BLOCK, a->inter);
    nvfp4_dst d = {NULL, NULL, NULL, 0, 0};
    if (a->q) {
        const dsv4_cuda_nvfp4_out *q = a->q;
        if (!q->q || !q->sf || !q->scale)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_swiglu: NULL NVFP4 output pointer");
        if (a->inter % 16)
            return dsv4_fail(DSV4_ERR_SHAPE, "moe_swiglu: NVFP4 output needs inter a multiple of 16, got %d", a->inter);
        if (q->mode != DSV4_ACT_SCALE_STATIC && q->mode != DSV4_ACT_SCALE_DYNAMIC_TOKEN)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "moe_swiglu: NVFP4 scale mode %d (only STATIC and DYNAMIC_TOKEN fuse)",
                             (int)q->mode);
        if (q->layout != DSV4_SF_LINEAR && q->layout != DSV4_SF_SWIZZLED)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_swiglu: unknown scale layout %d", (int)q->layout);
        if ((uintptr_t)q->q & 7)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_swiglu: NVFP4 payload must be 8-byte aligned");
        d.q = q->q, d.sf = q->sf, d.scale = q->scale;
        d.mode = (int)q->mode, d.swizzled = q->layout == DSV4_SF_SWIZZLED;
    }
    if (a->rows == 0) return DSV4_OK;
    const int64_t grid = d.swizzled ? (a->rows + 127) / 128 * 128 : a->rows;
    // the plain path splits a row over blocks: a decode step's few rows spread over up to one
    // element per thread (each thread's exact exp is a long double-precision sequence), many
    // rows keep a block per row with SWIGLU_UNROLL elements per thread and pass
    int64_t gy = 1;
    // static scales, a decode step's rows: an element per thread; many rows (a prefill) keep a
    // block per row, each element evaluated once and each 16-block quantized by one thread
    // (an element per thread there was 8 % slower at 16384 tokens: every thread redid the
    // block scale's divisions)
    const int per_elem = d.q && d.mode == DSV4_ACT_SCALE_STATIC && a->rows * (int64_t)a->inter <= SWIGLU_PER_ELEM_MAX;
    if (per_elem) gy = (a->inter + SWIGLU_THREADS - 1) / SWIGLU_THREADS;
    if (!d.q) {
        const int64_t per_row = (a->inter + SWIGLU_THREADS - 1) / SWIGLU_THREADS;
        const int64_t want = (SWIGLU_TARGET_BLOCKS + a->rows - 1) / a->rows;
        gy = per_row < want ? per_row : want;
        gy = gy < 1 ? 1 : gy > 65535 ? 65535 : gy;
    }
    (void)dsv4_launch_pdl(k_moe_swiglu, dim3((unsigned)grid, (unsigned)gy), dim3(SWIGLU_THREADS), 0, stream, 
        a->h, (int)a->h_dtype, a->interleave, a->rows, a->inter, a->limit, a->n_rows, a->out, (int)a->out_dtype, d,
        d.q && d.mode == DSV4_ACT_SCALE_STATIC ? a->tile_expert : NULL, a->tile, per_elem);
    DSV4_CUDA_LAUNCHED("moe_swiglu: kernel");
    return DSV4_OK;
}

// ---------------------------------------------------------------- combine

__global__ void __launch_bounds__(COMBINE_THREADS)
    k_moe_combine(int k, int D, const void *y, int y_dtype, const int32_t *idx, const int32_t *inv,
                  const float *weights, const void *shared, int shared_dtype, void *out, int out_dtype) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ int64_t row_s[COMBINE_MAX_K];
    __shared__ float w_s[COMBINE_MAX_K];
    __shared__ int n_s;
    const int64_t t = blockIdx.x;
    if (threadIdx.x == 0) {
        // insertion sort by expert id; '>' (not '>=') keeps equal ids in slot order
        int32_t ord_e[COMBINE_MAX_K];
        int n = 0;
        for (int j = 0; j < k; j++) {
            const int32_t row = inv[t * k + j], e = idx[t * k + j];
            if (row < 0) continue; // a dropped pair
            int i = n++;
            for (; i > 0 && ord_e[i - 1] > e; i--) ord_e[i] = ord_e[i - 1], row_s[i] = row_s[i - 1], w_s[i] = w_s[i - 1];
            ord_e[i] = e, row_s[i] = row, w_s[i] = weights[t * k + j];
        }
        n_s = n;
    }
    __syncthreads();
    const int n = n_s;
    // one column per thread (blockIdx.y picks the column range): every load of the column is
    // issued before the first add, so a token costs one memory round trip, not n·D/threads
    const int c = blockIdx.y * COMBINE_THREADS + threadIdx.x;
    if (c >= D) return;
    float v[COMBINE_MAX_K];
#pragma unroll
    for (int i = 0; i < COMBINE_MAX_K; i++) v[i] = i < n ? load_elem(y, y_dtype, row_s[i] * D + c) : 0.0f;
    const float sv = shared ? load_elem(shared, shared_dtype, t * D + c) : 0.0f;
    float acc = 0.0f; // dsv4_cpu_moe starts from memset zero; slots in expert order
#pragma unroll
    for (int i = 0; i < COMBINE_MAX_K; i++)
        if (i < n) acc = f_add(acc, f_mul(v[i], w_s[i]));
    if (shared) acc = f_add(acc, sv);
    store_elem(out, out_dtype, t * D + c, acc);
}

extern "C" dsv4_status dsv4_cuda_moe_combine(cudaStream_t stream, int T, int k, int D, const void *y,
                                             dsv4_cuda_dtype y_dtype, const int32_t *idx, const int32_t *inv,
                                             const float *weights, const void *shared, dsv4_cuda_dtype shared_dtype,
                                             void *out, dsv4_cuda_dtype out_dtype) {
    if (T > 0 && (!y || !idx || !inv || !weights || !out))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_combine: NULL argument");
    if (T < 0 || k <= 0 || k > COMBINE_MAX_K || D <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_combine: bad sizes T=%d k=%d D=%d (k <= %d)", T, k, D, COMBINE_MAX_K);
    if (!dtype_ok(y_dtype) || !dtype_ok(out_dtype) || (shared && !dtype_ok(shared_dtype)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_combine: unknown dtype %d, %d or %d", (int)y_dtype,
                         (int)shared_dtype, (int)out_dtype);
    if (T == 0) return DSV4_OK;
    (void)dsv4_launch_pdl(k_moe_combine, dim3((unsigned)T, (unsigned)((D + COMBINE_THREADS - 1) / COMBINE_THREADS)),
                          dim3(COMBINE_THREADS), 0, stream, k, D, y, (int)y_dtype, idx, inv, weights, shared,
                                                               (int)shared_dtype, out, (int)out_dtype);
    DSV4_CUDA_LAUNCHED("moe_combine: kernel");
    return DSV4_OK;
}
