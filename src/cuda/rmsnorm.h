/* Fused RMSNorm (+ NVFP4 quantize) on the GPU: one launch per call, graph-safe.
 * y[r, i] = w[i] * (x[r, i] * inv_r), inv_r = 1 / sqrt(sum_i x[r,i]^2 / dim + eps), fp32
 * math (the order of the CPU reference dsv4_cpu_rmsnorm, except the sum of squares, which
 * is a block reduction: results agree within fp32 summation-order rounding, ~1e-6
 * relative). W4A4: the NVFP4 output quantizes the BF16-rounded y (what RMSNorm -> BF16 ->
 * quantize would see), bit for bit as dsv4_cpu_quantize_nvfp4_act on those BF16 values. */
#ifndef DSV4_CUDA_RMSNORM_H
#define DSV4_CUDA_RMSNORM_H

#include "cuda/quantize.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest dim the kernels stage in shared memory (47 KB of fp32: with the static shared memory it stays under the 48 KB a block gets without an opt-in). */
#define DSV4_CUDA_NORM_MAX_DIM 12032

/* x [rows, dim] in in_dtype (device); w [dim] fp32 or NULL (unweighted).
 * out [rows, dim] in out_dtype, may be NULL when q is given; q (NULL for none) STATIC or
 * DYNAMIC_TOKEN (DYNAMIC_TENSOR needs a grid-wide amax: DSV4_ERR_UNSUPPORTED), dim a
 * multiple of 16 then. out may equal x when in_dtype == out_dtype
 * (each block stages its row before writing).
 * rows = 0 enqueues nothing. */
dsv4_status dsv4_cuda_rmsnorm(cudaStream_t stream, const void *x, dsv4_cuda_dtype in_dtype, const float *w,
                              int64_t rows, int dim, float eps, void *out, dsv4_cuda_dtype out_dtype,
                              const dsv4_cuda_nvfp4_out *q);

#ifdef __cplusplus
}
#endif
#endif
