// Fused RMSNorm (+ NVFP4 quantize): one block of 256 threads per row. The row is staged in
// shared memory as fp32 (read once from device memory), the sum of squares is one block
// reduction, and the shared emit_norm_row (nvfp4.cuh) writes BF16/fp32 and/or NVFP4.
// Rows of a few thousand values are latency-bound at decode and bandwidth-bound at prefill;
// one pass over the input and one over the outputs is the floor in both cases.
#include <limits.h>

#include "cuda/common.cuh"
#include "cuda/nvfp4.cuh"
#include "cuda/rmsnorm.h"

#define NORM_THREADS 256

__global__ void __launch_bounds__(NORM_THREADS) k_rmsnorm(const void *x, int in_dtype, const float *w, int64_t rows,
                                                           int dim, float eps, void *out, int out_dtype, nvfp4_dst d) {
    extern __shared__ float xs[]; // [dim]
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
    k_rmsnorm<<<(unsigned)grid, NORM_THREADS, (size_t)dim * sizeof(float), stream>>>(x, (int)in_dtype, w, rows, dim, eps,
                                                                                     out, (int)out_dtype, d);
    DSV4_CUDA_LAUNCHED("rmsnorm: kernel");
    return DSV4_OK;
}
