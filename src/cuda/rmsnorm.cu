// Fused RMSNorm (+ NVFP4 quantize): one block of 256 threads per row.
//  - k_rmsnorm_reg (dim a multiple of 16, 16-byte aligned x / w / out: every model shape):
//    thread c owns the 16-element groups c, c + 256, c + 512 in registers, loaded with
//    16-byte loads; the sum of squares (and the DYNAMIC_TOKEN amax) are block reductions,
//    and each group is scaled, stored (16-byte stores) and quantized by its own thread.
//    No shared-memory staging: the old tail read xs[c*16 + k] from shared memory, a 16-way
//    bank conflict on every read, and loaded x / w / out one scalar at a time; that capped
//    the fused kernel at ~14% of copy bandwidth at 4096 rows.
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

// 16 values to F32 (four 16-byte stores) or BF16 (two) at element i of out (16-aligned).
__device__ __forceinline__ void store_group16(void *out, int dtype, int64_t i, const float y[16]) {
    if (dtype == DT_F32) {
        float4 *o = (float4 *)((float *)out + i);
#pragma unroll
        for (int k = 0; k < 4; k++) o[k] = make_float4(y[4 * k], y[4 * k + 1], y[4 * k + 2], y[4 * k + 3]);
    } else {
        uint32_t wd[8];
#pragma unroll
        for (int k = 0; k < 8; k++) wd[k] = bf16_encode(y[2 * k]) | (bf16_encode(y[2 * k + 1]) << 16);
        uint4 *o = (uint4 *)((uint16_t *)out + i);
        o[0] = make_uint4(wd[0], wd[1], wd[2], wd[3]);
        o[1] = make_uint4(wd[4], wd[5], wd[6], wd[7]);
    }
}

// G groups of 16 per thread at most (dim <= G * 16 * NORM_THREADS). Same arithmetic per
// element as emit_norm_row: y = w * (x * inv), quantized from bf16_round(y).
template <int G>
__global__ void __launch_bounds__(NORM_THREADS) k_rmsnorm_reg(const void *x, int in_dtype, const float *w, int64_t rows,
                                                               int dim, float eps, void *out, int out_dtype, nvfp4_dst d) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ float sh[33];
    const int64_t r = blockIdx.x;
    const int kb = dim / 16;
    if (r >= rows) { // padding row of a swizzled scale layout
        nvfp4_zero_pad(&d, r, kb, 1);
        return;
    }
    float v[G][16];
    float ss = 0.0f;
#pragma unroll
    for (int g = 0; g < G; g++) {
        const int c = threadIdx.x + g * NORM_THREADS;
        if (c < kb) {
            load_group16(x, in_dtype, r * dim + (int64_t)c * 16, v[g]);
        } else {
#pragma unroll
            for (int k = 0; k < 16; k++) v[g][k] = 0.0f;
        }
    }
#pragma unroll
    for (int g = 0; g < G; g++)
#pragma unroll
        for (int k = 0; k < 16; k++) ss = f_add(ss, f_mul(v[g][k], v[g][k])); // zeros add exactly
    ss = block_reduce(ss, sh, 0);
    const float inv = f_div(1.0f, f_sqrt(f_add(f_div(ss, (float)dim), eps)));
    float amax = 0.0f;
#pragma unroll
    for (int g = 0; g < G; g++) {
        const int c = threadIdx.x + g * NORM_THREADS;
        if (c >= kb) continue;
        if (w) {
            const float4 *wp = (const float4 *)(w + (int64_t)c * 16);
#pragma unroll
            for (int k = 0; k < 4; k++) {
                float4 f = __ldg(wp + k);
                v[g][4 * k] = f_mul(f.x, f_mul(v[g][4 * k], inv));
                v[g][4 * k + 1] = f_mul(f.y, f_mul(v[g][4 * k + 1], inv));
                v[g][4 * k + 2] = f_mul(f.z, f_mul(v[g][4 * k + 2], inv));
                v[g][4 * k + 3] = f_mul(f.w, f_mul(v[g][4 * k + 3], inv));
            }
        } else {
#pragma unroll
            for (int k = 0; k < 16; k++) v[g][k] = f_mul(v[g][k], inv);
        }
        if (out) store_group16(out, out_dtype, r * dim + (int64_t)c * 16, v[g]);
#pragma unroll
        for (int k = 0; k < 16; k++) {
            v[g][k] = bf16_round(v[g][k]); // what the quantizer sees
            amax = f_max_nan_ignored(amax, f_abs(v[g][k]));
        }
    }
    if (!d.q) return; // uniform
    float s;
    if (d.mode == 2 /* DYNAMIC_TOKEN */) {
        amax = block_reduce(amax, sh, 1);
        s = nvfp4_dynamic_scale(amax);
        if (threadIdx.x == 0) d.scale[r] = s;
    } else {
        s = d.scale[0];
    }
    const float gi = f_div(1.0f, s);
#pragma unroll
    for (int g = 0; g < G; g++) {
        const int c = threadIdx.x + g * NORM_THREADS;
        if (c >= kb) continue;
        uint32_t packed[2];
        d.sf[nvfp4_sf_index(d.swizzled, r, c, kb)] = (uint8_t)nvfp4_quant_group16_fast(v[g], gi, packed);
        *(uint2 *)(d.q + r * (dim / 2) + (int64_t)c * 8) = make_uint2(packed[0], packed[1]);
    }
    nvfp4_zero_pad(&d, r, kb, 0);
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
    const int groups = (dim / 16 + NORM_THREADS - 1) / NORM_THREADS; // per thread, 1..3
    if (dim % 16 == 0 && groups <= 3 && !((uintptr_t)x & 15) && !((uintptr_t)w & 15) && !((uintptr_t)out & 15)) {
        if (groups == 1)
            (void)dsv4_launch_pdl(k_rmsnorm_reg<1>, dim3((unsigned)grid), dim3(NORM_THREADS), 0, stream, x, (int)in_dtype, w, rows, dim, eps, out, (int)out_dtype, d);
        else if (groups == 2)
            (void)dsv4_launch_pdl(k_rmsnorm_reg<2>, dim3((unsigned)grid), dim3(NORM_THREADS), 0, stream, x, (int)in_dtype, w, rows, dim, eps, out, (int)out_dtype, d);
        else
            (void)dsv4_launch_pdl(k_rmsnorm_reg<3>, dim3((unsigned)grid), dim3(NORM_THREADS), 0, stream, x, (int)in_dtype, w, rows, dim, eps, out, (int)out_dtype, d);
        DSV4_CUDA_LAUNCHED("rmsnorm: kernel");
        return DSV4_OK;
    }
    (void)dsv4_launch_pdl(k_rmsnorm, dim3((unsigned)grid), dim3(NORM_THREADS), (size_t)dim * sizeof(float), stream, x, (int)in_dtype, w, rows, dim, eps,
                                                                                     out, (int)out_dtype, d);
    DSV4_CUDA_LAUNCHED("rmsnorm: kernel");
    return DSV4_OK;
}
