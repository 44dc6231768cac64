/* NVFP4 activation quantization on the GPU (W4A4): BF16 or fp32 rows -> packed e2m1 plus
 * e4m3 block scales, with a static input_scale, a dynamic per-tensor scale computed on the
 * device, or one dynamic scale per row. Semantics (bit for bit, NaN/Inf included):
 * src/cpu/quantize.h. All launchers enqueue on `stream` only: no allocation, no host sync,
 * no host<->device copy, so they can be captured into a CUDA graph. */
#ifndef DSV4_CUDA_QUANTIZE_H
#define DSV4_CUDA_QUANTIZE_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "cpu/quantize.h" /* dsv4_act_scale_mode, dsv4_sf_layout */
#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum dsv4_cuda_dtype { DSV4_CUDA_F32 = 0, DSV4_CUDA_BF16 = 1 } dsv4_cuda_dtype;

/* Where an NVFP4 activation goes (all device pointers).
 *   q      [M, K/2] packed e2m1, 8-byte aligned
 *   sf     linear [M, K/16] or swizzled dsv4_swizzled_scale_bytes(M, K/16) bytes (the
 *          kernels write the padding zero)
 *   scale  STATIC: input_scale[0] is read; DYNAMIC_TENSOR: [0] is written;
 *          DYNAMIC_TOKEN: [0..M-1] are written (the dequantize scale of each row) */
typedef struct dsv4_cuda_nvfp4_out {
    uint8_t *q;
    uint8_t *sf;
    float *scale;
    dsv4_act_scale_mode mode;
    dsv4_sf_layout layout;
} dsv4_cuda_nvfp4_out;

/* Device scratch the DYNAMIC_TENSOR mode needs (per-block partial amaxes). */
#define DSV4_CUDA_QUANTIZE_WORKSPACE_BYTES 4096

/* x [M, K] (16-byte aligned, K a positive multiple of 16) -> out. workspace: device memory
 * of DSV4_CUDA_QUANTIZE_WORKSPACE_BYTES for DYNAMIC_TENSOR, else may be NULL.
 * Launches: 1 (STATIC, DYNAMIC_TOKEN, and DYNAMIC_TENSOR with M*K <= 32768) or 2
 * (DYNAMIC_TENSOR above that: partial amax, then quantize).
 * M = 0 enqueues nothing. Errors: DSV4_ERR_SHAPE, DSV4_ERR_INVALID_ARGUMENT (NULL, alignment,
 * unknown mode), DSV4_ERR_CUDA (launch), each naming "quantize_nvfp4". */
dsv4_status dsv4_cuda_quantize_nvfp4(cudaStream_t stream, const void *x, dsv4_cuda_dtype dtype, int64_t M,
                                     int64_t K, const dsv4_cuda_nvfp4_out *out, void *workspace);

/* Host builds of the device codecs (the same source, src/cuda/nvfp4.cuh), so that a CPU
 * test can compare them with src/format/fp.c without a GPU. */
uint8_t dsv4_cuda_host_e2m1_encode(float x);
uint8_t dsv4_cuda_host_e4m3_encode(float x);
float dsv4_cuda_host_e4m3_decode(uint8_t code);
uint16_t dsv4_cuda_host_bf16_encode(float x);
/* bf16_encode16: 16 at once (nvfp4.cuh), bit-identical to bf16_encode on each. */
void dsv4_cuda_host_bf16_encode16(const float v[16], uint16_t out[16]);
/* One 16-block: returns the scale code, writes 8 packed bytes. */
uint8_t dsv4_cuda_host_quant_group16(const float v[16], float g, uint8_t packed[8]);
/* The same through the division-free form the kernels use (nvfp4_quant_group16_fast). */
uint8_t dsv4_cuda_host_quant_group16_fast(const float v[16], float g, uint8_t packed[8]);
/* The BF16 form (nvfp4_quant_group16_bf16, nvfp4.cuh) on 16 bf16 bit patterns, and its parts:
 * the payloads of n16 NaN-free blocks under one scale code (its sign ignored: the quantizer's
 * scale always has that of g), the scale code from the bits of a block's amax, e4m3_encode(x / 6)
 * as the scale computes it (x in [0, 8192]), key i (0..31) of the breakpoint table of g, and
 * whether g takes that path at all. */
uint8_t dsv4_cuda_host_quant_group16_bf16(const uint16_t v[16], float g, uint8_t packed[8]);
void dsv4_cuda_host_bf16_payload(const uint16_t *v, int64_t n16, float g, uint8_t code, uint8_t *packed);
uint8_t dsv4_cuda_host_bf16_scale(uint16_t amax_bits, float g);
uint8_t dsv4_cuda_host_e4m3_div6(float x);
uint16_t dsv4_cuda_host_bf16_breakpoint(float g, int i);
int dsv4_cuda_host_bf16_fast_g(float g);

#ifdef __cplusplus
}
#endif
#endif
