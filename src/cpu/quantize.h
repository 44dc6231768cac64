/* NVFP4 activation quantization with the GPU kernels' semantics (W4A4).
 *
 * This is the CPU reference the CUDA kernels in src/cuda/quantize.cu, rmsnorm.cu and mhc.cu
 * are compared with bit for bit. For finite input it computes exactly what
 * dsv4_nvfp4_quantize_act / _dynamic (src/format/quant.c) compute (a CPU test checks that);
 * it differs only in that it never fails on NaN/Inf, because a kernel cannot fail:
 *   - NaN elements are ignored by every amax (block, row, tensor) and encode as e2m1 +0;
 *   - +-Inf makes its block scale saturate to 448 (static scale) and encodes as +-6;
 *   - a dynamic scale computed from an Inf amax is Inf, so G = 0 and the row/tensor
 *     quantizes to zeros (block scales 0x7f where the block held the Inf, else 0).
 * Scale modes (G = 1 / input_scale, fp32):
 *   STATIC          input_scale given (calibrated act_amax / 2688);
 *   DYNAMIC_TENSOR  input_scale = amax(whole tensor) / 2688, 1.0 if the tensor is all zero;
 *   DYNAMIC_TOKEN   one input_scale per row, amax(row) / 2688, 1.0 for an all-zero row.
 * Per 16-block: sf = e4m3_rn_sat((G * block_amax) / 6); q = e2m1((x * G) / float(sf)),
 * or 0 when sf is 0; every step one fp32 rounding, left to right. */
#ifndef DSV4_CPU_QUANTIZE_H
#define DSV4_CPU_QUANTIZE_H

#include <stdint.h>

#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dsv4_act_scale_mode {
    DSV4_ACT_SCALE_STATIC = 0,
    DSV4_ACT_SCALE_DYNAMIC_TENSOR = 1,
    DSV4_ACT_SCALE_DYNAMIC_TOKEN = 2
} dsv4_act_scale_mode;

typedef enum dsv4_sf_layout {
    DSV4_SF_LINEAR = 0,  /* [M, K/16] */
    DSV4_SF_SWIZZLED = 1 /* 128x4 (spec nvfp4.md), dsv4_swizzled_scale_bytes(M, K/16) bytes */
} dsv4_sf_layout;

/* x [M, K] (K a multiple of 16) -> q [M, K/2] packed e2m1 (element 2i in the low nibble),
 * sf block scales in `layout` (swizzled padding written zero).
 * input_scale: STATIC reads input_scale[0]; DYNAMIC_TENSOR writes input_scale[0];
 * DYNAMIC_TOKEN writes input_scale[0..M-1].
 * DSV4_ERR_SHAPE for bad M/K, DSV4_ERR_INVALID_ARGUMENT for NULL pointers or unknown modes. */
dsv4_status dsv4_cpu_quantize_nvfp4_act(const float *x, int64_t M, int64_t K, dsv4_act_scale_mode mode,
                                        dsv4_sf_layout layout, float *input_scale, uint8_t *q,
                                        uint8_t *sf);

#ifdef __cplusplus
}
#endif
#endif
