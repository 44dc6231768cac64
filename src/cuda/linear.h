/* GPU linear: y[M, N] = x[M, K] · Wᵀ for a device-resident block-scaled weight (NVFP4, MXFP4,
 * FP8 block-128). Weights stay in their stored format in device memory and are expanded in
 * registers/shared memory; accumulation is always fp32. Kernels and the math: docs/gpu-linear.md.
 * Only in CUDA builds (DSV4_HAVE_CUDA); the caller needs the CUDA include path. */
#ifndef DSV4_CUDA_LINEAR_H
#define DSV4_CUDA_LINEAR_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" { /* format/weight.h and format/safetensors.h are plain C headers */
#endif

#include "dsv4.h"
#include "format/weight.h"

/* A weight in device memory, laid out exactly as in the checkpoint:
 *   NVFP4:    data u8 [N, K/2] (element 2i in the low nibble), scale e4m3 [N, K/16], global_scale
 *   MXFP4:    data u8 [N, K/2], scale ue8m0 [N, K/32]
 *   FP8_B128: data e4m3 [N, K], scale [ceil(N/128), ceil(K/128)] ue8m0 bytes or fp32 (scale_f32)
 * K % 16 == 0 (NVFP4, FP8) or K % 32 == 0 (MXFP4). */
typedef struct dsv4_cuda_weight {
    dsv4_wformat format;
    int64_t rows, cols;   /* N (out), K (in) */
    const uint8_t *data;  /* device payload */
    const uint8_t *scale; /* device block scales */
    int scale_f32;        /* FP8_B128 only: scales are fp32 (else ue8m0 bytes) */
    float global_scale;   /* NVFP4 weight_scale_2; 1 for the other formats */
    float input_scale;    /* NVFP4 static input_scale (0 if none); informational for callers */
    void *alloc;          /* the device allocation owning data and scale (NULL when borrowed) */
    size_t bytes;         /* payload + scale bytes on the device */
} dsv4_cuda_weight;

/* Bytes every device weight allocation keeps after its scale table: the decode kernel copies
 * the whole aligned 4-byte word holding a lane's scale bytes, which may reach up to 3 bytes past
 * the table. Allocators of stacked weights add it too. */
#define DSV4_CUDA_WEIGHT_TAIL 16

/* Copies a host weight (e.g. mmapped checkpoint bytes) to one device allocation. Validates the
 * format, shape and scale dtype first; errors name the tensor (w->src->name). */
dsv4_status dsv4_cuda_weight_upload(const dsv4_weight *w, dsv4_cuda_weight *out);
/* Frees what upload allocated (safe on a zeroed struct); leaves *w zeroed. */
void dsv4_cuda_weight_free(dsv4_cuda_weight *w);

/* Rewrites an uploaded NVFP4 or MXFP4 weight [rows, cols] in place (payload q, block scales s)
 * into the layout the kernels read (src/cuda/fp4_layout.cuh: each 32-bit word's bits
 * rearranged; NVFP4 blocks with a negative scale get scale and element signs flipped).
 * dsv4_cuda_weight_upload does this itself; uploaders that copy payloads on their own (the
 * MoE stacks) call it exactly once per weight (it is not idempotent: a second call permutes
 * again, a missing one leaves a layout every kernel misreads). Asynchronous on the legacy
 * default stream; synchronize before the weight is used. */
dsv4_status dsv4_cuda_fp4_device_layout(uint8_t *q, uint8_t *s, int64_t rows, int64_t cols, dsv4_wformat f);
/* The same rearrangement of one 32-bit word on the host, and its inverse (tests). */
uint32_t dsv4_cuda_host_fp4_to_device_word(uint32_t q);
uint32_t dsv4_cuda_host_fp4_from_device_word(uint32_t r);
/* The four BF16 bit patterns (pairs (i, i+4) of e2m1 · 2^-126) the kernels take from a
 * device-layout word (tests compare them with the natural-layout formulas). */
void dsv4_cuda_host_fp4_device_pair_bits(uint32_t r, uint32_t out[4]);

/* W4A4 activations, already quantized to NVFP4 (by the quantize kernel): q u8 [M, K/2],
 * scale e4m3 [M, K/16], dequantized value = e2m1 · scale · input_scale, where input_scale is
 * token_scales[m] (device, per token) when token_scales is not NULL, else the host float
 * input_scale (per tensor). The linear multiplies once by alpha = input_scale · global. */
typedef struct dsv4_cuda_act_nvfp4 {
    const uint8_t *q;
    const uint8_t *scale;      /* e4m3 [M, K/16] in the LINEAR layout (not the 128x4 swizzle) */
    const float *token_scales; /* device [M] or NULL */
    float input_scale;         /* used when token_scales == NULL */
} dsv4_cuda_act_nvfp4;

typedef enum dsv4_cuda_out { DSV4_CUDA_OUT_F32 = 0, DSV4_CUDA_OUT_BF16 = 1 } dsv4_cuda_out;

/* Which kernel: AUTO picks DECODE for M <= 64 (and a shape it takes); DEQUANT_GEMM for
 * M >= DSV4_CUDA_LINEAR_DEQUANT_MIN_M with BF16 activations, a cuBLAS handle and a weight it
 * takes; else PREFILL. */
typedef enum dsv4_cuda_linear_path {
    DSV4_LINEAR_AUTO = 0,
    DSV4_LINEAR_DECODE,  /* weight-streaming tensor-core kernel, split-K, M <= 64; NVFP4 needs K % 32 == 0 */
    DSV4_LINEAR_PREFILL, /* BF16 tensor-core MMA, any M: wgmma on Hopper for fp4 weights with
                            K % 64 == 0 (BF16 x, or NVFP4 x 16-byte aligned), else mma.sync */
    DSV4_LINEAR_DEQUANT_GEMM, /* W4A16 only: exact BF16 expansion of W into the workspace + cuBLAS
                                 BF16 GEMM (fp32 accumulate); NVFP4/MXFP4 with K % 32 == 0, FP8
                                 with ue8m0 scales */
} dsv4_cuda_linear_path;

#define DSV4_CUDA_LINEAR_DECODE_MAX_M 64
/* H100, 4096 x 4096 NVFP4: dequant + cuBLAS 42 / 46 / 52 us at M = 128 / 256 / 512, the
 * prefill kernels 98-110 / 99 / 96 us (bench/README.md) */
#define DSV4_CUDA_LINEAR_DEQUANT_MIN_M 128

typedef struct dsv4_cuda_linear_args {
    const dsv4_cuda_weight *w;
    int64_t M;
    const void *x;                 /* W4A16: BF16 [M, K] (device), else NULL */
    const dsv4_cuda_act_nvfp4 *xq; /* W4A4: quantized activations, else NULL */
    void *y;                       /* [M, N], fp32 or BF16 per out */
    dsv4_cuda_out out;
    void *workspace; /* split-K partials or the BF16 weight; dsv4_cuda_linear_workspace_bytes() */
    size_t workspace_bytes;
    dsv4_cuda_linear_path path;
    cublasHandle_t cublas; /* for DEQUANT_GEMM (its stream is set to the call's); NULL: never taken by AUTO */
} dsv4_cuda_linear_args;

/* Workspace any path AUTO may take needs for any M <= max_M with this weight (decode split-K
 * partials; the BF16 weight, 2·N·K bytes, once max_M >= DSV4_CUDA_LINEAR_DEQUANT_MIN_M and the
 * weight qualifies; 0 when none). A fixed
 * function of (format, N, K, M): the plan never depends on the device, so results are
 * bitwise reproducible. */
size_t dsv4_cuda_linear_workspace_bytes(const dsv4_cuda_weight *w, int64_t max_M);

/* Enqueues y = x · Wᵀ on `stream` (no allocation, no host synchronisation, no host reads of
 * device values: safe inside CUDA graph capture once dsv4_cuda_linear_init() has run).
 * Deterministic: no atomics, fixed reduction order. */
dsv4_status dsv4_cuda_linear(const dsv4_cuda_linear_args *a, cudaStream_t stream);

/* Sets kernel attributes (dynamic shared memory limits) once per process; dsv4_cuda_linear
 * calls it too, but call it before the first graph capture. */
dsv4_status dsv4_cuda_linear_init(void);

/* Tests and benchmarks: 1 sends every prefill (dense and grouped) to the mma.sync kernel
 * even where the Hopper wgmma kernel would run; 0 restores the default. The environment
 * variable DSV4_PREFILL_MMA=1 sets it at init. Not for use while work is enqueued. */
void dsv4_cuda_linear_prefill_force_mma(int on);

/* Tests: 1 the Hopper wgmma prefill kernel runs where it applies; -1 it does not apply (not an
 * sm_90a build or not an sm_90 device); 0 it would apply but init turned it off (a kernel
 * attribute it depends on did not hold: a bug). After dsv4_cuda_linear_init(). */
int dsv4_cuda_linear_prefill_wgmma_state(void);

#ifdef __cplusplus
}
#endif
#endif
