/* MoE expert epilogues on the GPU: the clamped SwiGLU between the grouped L1 and L2 GEMMs
 * (optionally fused with the NVFP4 quantize of L2's input, W4A4), and the combine that
 * gathers each token's expert rows back, weights them and adds the shared expert. CPU
 * reference: the SwiGLU and the accumulation of dsv4_cpu_moe (src/cpu/moe.c). Rows follow
 * the layout of cpu/moe_route.h. All launchers enqueue on `stream` only (graph-safe). */
#ifndef DSV4_CUDA_MOE_EPILOGUE_H
#define DSV4_CUDA_MOE_EPILOGUE_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "cuda/quantize.h" /* dsv4_cuda_dtype, dsv4_cuda_nvfp4_out */
#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

/* SwiGLU epilogue: for each row r < rows (all pointers device memory)
 *   g = min(h[r, i], limit), u = clamp(h[r, inter + i], −limit, limit),
 *   a[r, i] = g / (1 + exp(−g)) · u            (moe.c's expression, fp32, same roundings)
 * written to `out` in out_dtype and/or quantized to NVFP4 into `q`.
 * What is quantized: the fp32 a, as dsv4_cpu_linear's W4A4 path quantizes the fp32
 * activation it is given (moe.c feeds it the fp32 SwiGLU output); bit-exact with
 * dsv4_cpu_quantize_nvfp4_act on that fp32 a. The modes are the CPU's choice for w2:
 *   STATIC         the weight's input_scale: q->scale[0], or per expert
 *                  q->scale[tile_expert[r / tile]] when tile_expert is given (each
 *                  expert's w2 has its own calibrated input_scale);
 *   DYNAMIC_TOKEN  one scale per row, written to q->scale[r] (checkpoints without one).
 * Rows: launched for `rows` (the buffer's maximum); rows r >= *n_rows (n_rows: device
 * int, e.g. &offsets[E] of the layout; NULL = all rows) and, with tile_expert, rows of a
 * tile owned by no expert are left unwritten, so only the rows in use cost anything. In a
 * swizzled scale layout the padding rows rows..ceil(rows/128)·128 − 1 get zero scales.
 * exp agrees with the CPU's expf as cuda/moe_math.cuh describes: where the host's expf is
 * not correctly rounded, a differs by a few ulp (glibc 2.36: ~0.03% of values, <= 3 ulp). */
/* Rows of the routed L1 stack come in blocks of this many gate rows, then as many up rows
 * (moe_layer.h), so a 16-row MMA tile holds the gate and the up of 8 intermediate indices. */
#define DSV4_CUDA_MOE_L1_BLOCK 8

typedef struct dsv4_cuda_swiglu_args {
    const void *h;             /* [rows, 2·inter]: gate | up halves of each row, or interleaved */
    dsv4_cuda_dtype h_dtype;   /* F32 or BF16 */
    int64_t rows;
    int inter;                 /* I; a multiple of 16 when q is given */
    float limit;               /* swiglu_limit */
    const int32_t *n_rows;     /* device, or NULL */
    void *out;                 /* [rows, inter] in out_dtype, or NULL (then q is required) */
    dsv4_cuda_dtype out_dtype;
    const dsv4_cuda_nvfp4_out *q; /* NULL, or STATIC / DYNAMIC_TOKEN (DYNAMIC_TENSOR: UNSUPPORTED) */
    const int32_t *tile_expert;   /* STATIC only, optional: [rows / tile] (the layout's map
                                     when rows = max_rows); ignored by the other modes */
    int tile;
    int interleave;            /* 0: [gate | up] halves; DSV4_CUDA_MOE_L1_BLOCK: blocks of that many
                                  gate then up values (the routed L1 stack's output) */
} dsv4_cuda_swiglu_args;

/* One launch: a block per row, or per 256 elements of a row (without NVFP4 when rows are few;
 * with a static NVFP4 scale always). rows = 0 enqueues nothing. Errors name "moe_swiglu". */
dsv4_status dsv4_cuda_moe_swiglu(cudaStream_t stream, const dsv4_cuda_swiglu_args *a);

/* Combine: out[t, c] = Σ weights[t, j] · y[inv[t, j], c] + shared[t, c]   (fp32)
 *   y [rows, D] (the L2 output, F32 or BF16), idx/inv/weights [T, k] (router + layout),
 *   shared [T, D] or NULL, out [T, D] in out_dtype (may equal shared if the dtypes match).
 * Order: the slots of a token are added in ascending expert id, slots of one expert in slot
 * order, starting from +0, each term rounded as weight·y before the add, and the shared
 * expert last. That is dsv4_cpu_moe's (and HF's) accumulation order, so the result is
 * bit-exact with the CPU given the same y; it is deterministic either way. Slots with
 * inv = −1 (dropped pairs) add nothing. k <= 9 (top-k and the shared expert as a slot of
 * weight 1, which adds exactly what the shared term does). T = 0 enqueues nothing.
 * Errors name "moe_combine". */
dsv4_status dsv4_cuda_moe_combine(cudaStream_t stream, int T, int k, int D, const void *y, dsv4_cuda_dtype y_dtype,
                                  const int32_t *idx, const int32_t *inv, const float *weights, const void *shared,
                                  dsv4_cuda_dtype shared_dtype, void *out, dsv4_cuda_dtype out_dtype);

#ifdef __cplusplus
}
#endif
#endif
