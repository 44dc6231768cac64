/* Fused mHC (manifold-constrained hyper-connections) on the GPU, graph-safe.
 *
 * hc_pre (two launches): the unweighted RMS over the hc*D values of each token, the
 * projection mix = f . fn^T ((2+hc)*hc outputs; fn fp32 is the dominant read at decode),
 * pre/post sigmoids, Sinkhorn, the collapse x = sum_j pre_j X_j, then the sublayer's
 * weighted RMSNorm of x written as BF16/fp32 and/or NVFP4 (W4A4).
 * hc_post (one launch): X'_k = post_k * y + sum_j C[j,k] * X_j.
 *
 * Agreement with the CPU reference (src/cpu/mhc.c):
 *   - hc_post is bit-identical given the same post/comb (same fp32 ops, same order).
 *   - hc_pre computes mix as (sum x*fn) * inv instead of sum (x*inv)*fn and sums in a
 *     different order; with the device expf that makes post/comb/x agree within
 *     |gpu - cpu| <= 1e-5 * (1 + |cpu|) (tests/test_gpu_norm_mhc.c); Sinkhorn runs the
 *     CPU's operations in the CPU's order.
 *   - the NVFP4 output is bit-identical to dsv4_cpu_quantize_nvfp4_act on the kernel's own
 *     BF16-rounded normed values (as for dsv4_cuda_rmsnorm). */
#ifndef DSV4_CUDA_MHC_H
#define DSV4_CUDA_MHC_H

#include <stddef.h>

#include "cuda/quantize.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest D (the collapsed row is staged in shared memory, under the 48 KB default limit) and T (grid limits). */
#define DSV4_CUDA_HC_MAX_DIM 12032
#define DSV4_CUDA_HC_MAX_T 65535

/* Same fields as dsv4_cpu_hc_dims. hc 1..4 are compiled; D <= 12032. */
typedef struct dsv4_cuda_hc_dims {
    int hc, dim, sinkhorn_iters;
    float hc_eps, norm_eps; /* norm_eps: the unweighted RMS over hc*D */
} dsv4_cuda_hc_dims;

typedef enum dsv4_cuda_hc_merge {
    DSV4_CUDA_HC_MERGE_BF16_WEIGHTS = 0, /* = DSV4_CPU_HC_MERGE_BF16_WEIGHTS (HF) */
    DSV4_CUDA_HC_MERGE_FP32 = 1
} dsv4_cuda_hc_merge;

/* Everything but dims/T/X/params/post/comb/workspace is optional (NULL). Device pointers. */
typedef struct dsv4_cuda_hc_pre_args {
    const void *X;                 /* [T, hc, D] residual streams */
    dsv4_cuda_dtype x_dtype;
    const float *fn, *base, *scale; /* [(2+hc)*hc, hc*D], [(2+hc)*hc], [3] */
    float *post, *comb;             /* out: [T, hc], [T, hc, hc] */
    float *x;                       /* out: [T, D] collapsed x before the norm */
    const float *norm_w;            /* the sublayer's RMSNorm weight [D] (NULL: unweighted) */
    float norm_eps;                 /* its eps */
    void *y;                        /* out: [T, D] normed x in y_dtype */
    dsv4_cuda_dtype y_dtype;
    const dsv4_cuda_nvfp4_out *q;   /* out: W4A4 NVFP4 of the normed x (STATIC or DYNAMIC_TOKEN) */
    void *workspace;                /* dsv4_cuda_hc_pre_workspace_bytes(dims, T) bytes */
    size_t workspace_bytes;
} dsv4_cuda_hc_pre_args;

size_t dsv4_cuda_hc_pre_workspace_bytes(const dsv4_cuda_hc_dims *d, int T);
dsv4_status dsv4_cuda_hc_pre(cudaStream_t stream, const dsv4_cuda_hc_dims *d, int T, const dsv4_cuda_hc_pre_args *a);

/* X_out [T, hc, D] (x_dtype, may not alias X) from X [T, hc, D], y [T, D] (y_dtype),
 * post [T, hc], comb [T, hc, hc] fp32. */
dsv4_status dsv4_cuda_hc_post(cudaStream_t stream, const dsv4_cuda_hc_dims *d, int T, const void *X,
                              dsv4_cuda_dtype x_dtype, const void *y, dsv4_cuda_dtype y_dtype, const float *post,
                              const float *comb, dsv4_cuda_hc_merge merge, void *X_out);

#ifdef __cplusplus
}
#endif
#endif
