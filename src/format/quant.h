/* Block-scaled tensor formats: NVFP4 (ModelOpt), MXFP4, FP8 block-128, the 128x4
 * scale swizzle, and the gate/up global-scale unification. Contract:
 * ../shared/spec/nvfp4.md. All matrices are row-major [rows, cols] with blocks running
 * along cols (the input/K dimension). FP4 payloads pack two elements per byte, element
 * 2i in the low nibble. Functions that can fail return dsv4_status and name `what`
 * (a tensor name or op, for the message). */
#ifndef DSV4_FORMAT_QUANT_H
#define DSV4_FORMAT_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"

#define DSV4_NVFP4_BLOCK 16
#define DSV4_MXFP4_BLOCK 32
#define DSV4_FP8_BLOCK 128
#define DSV4_E2M1_MAX 6.0f
#define DSV4_E4M3_MAX 448.0f

/* ---- NVFP4 weights (ModelOpt semantics) ----
 * global = amax(x) / (6*448) in fp32  (an all-zero tensor gives global 0: callers then use
 * 1.0; a NaN anywhere gives NaN);
 * block scale s = e4m3_rn_sat(block_amax / (6*global)) with 6*global rounded to fp32 first
 * (ModelOpt's association); q = e2m1_rn_sat(x / (float(s) * global)).
 * Zero scales, as ModelOpt writes them: a block whose amax is 0 stores s = 1.0 (0x38; the
 * replacement happens before the e4m3 cast). A non-zero block whose s rounds to 0 keeps
 * s = 0 and divides by 1.0*global instead, which encodes all its elements as zero
 * (ModelOpt divides by 0 there and stores +-6 codes; both dequantize to 0).
 * -0.0 encodes as 0x8 (the e2m1 codec's rule); ModelOpt writes 0x0 for an exact -0.0. */
float dsv4_nvfp4_global_scale(const float *x, size_t n);
/* cols must be a multiple of 16. q: rows*cols/2 bytes; scales: rows*cols/16 e4m3 bytes.
 * Fails with DSV4_ERR_NONFINITE if x holds NaN/Inf (naming row and column),
 * DSV4_ERR_SHAPE for bad cols, DSV4_ERR_INVALID_ARGUMENT unless 0 < global < Inf. */
dsv4_status dsv4_nvfp4_quantize(const float *x, int64_t rows, int64_t cols, float global,
                                uint8_t *q, uint8_t *scales, const char *what);
/* out[r, c] = e2m1 * float(scale) * global (e2m1 x e4m3 exact, one rounding). Writes
 * nothing for a non-positive shape or cols not a multiple of 16. */
void dsv4_nvfp4_dequantize(const uint8_t *q, const uint8_t *scales, float global, int64_t rows,
                           int64_t cols, float *out);

/* ---- NVFP4 activations (W4A4, Blackwell numerics) ----
 * With G = 1/input_scale (fp32): sf = e4m3_rn_sat((G * block_amax) / 6),
 * q = e2m1((x * G) / float(sf)) (0 if sf is 0), each step rounded to fp32 left to right.
 * Dequantized value = e2m1 * sf * input_scale. Errors as dsv4_nvfp4_quantize
 * (input_scale must be finite and > 0). */
dsv4_status dsv4_nvfp4_quantize_act(const float *x, int64_t rows, int64_t cols, float input_scale,
                                    uint8_t *q, uint8_t *scales, const char *what);
/* Dynamic per-token mode: each row r uses input_scale = amax(row)/(6*448) (1.0 for an
 * all-zero row), written to input_scales[r]. */
dsv4_status dsv4_nvfp4_quantize_act_dynamic(const float *x, int64_t rows, int64_t cols, uint8_t *q,
                                            uint8_t *scales, float *input_scales, const char *what);

/* The unchecked core of the activation quantizers, for references that must pin the GPU
 * kernels' behaviour on any input (NaN included): one row of `cols` values with G = g. */
void dsv4_nvfp4_quantize_act_row(const float *x, int64_t cols, float g, uint8_t *q, uint8_t *scales);
/* max |x_i| over n values; NaN never compares greater, so it is ignored. */
float dsv4_amax(const float *x, int64_t n);

/* ---- MXFP4 (e2m1 payload, one ue8m0 scale per 32) ----
 * cols must be a multiple of 32; a 0xff (NaN) scale is DSV4_ERR_NONFINITE. */
dsv4_status dsv4_mxfp4_dequantize(const uint8_t *q, const uint8_t *scales_e8m0, int64_t rows,
                                  int64_t cols, float *out, const char *what);
/* Exact conversion to NVFP4: picks a power-of-two global so every scale of a non-zero block
 * is a power of two e4m3 holds exactly (2^-9..2^8); payload copied unchanged, each 32-scale
 * becomes two 16-scales. DSV4_ERR_NOT_REPRESENTABLE (naming `what` and the exponent range)
 * when the tensor's scale range is too wide, DSV4_ERR_NONFINITE for a NaN scale (0xff).
 * Blocks whose payload is all +-0 do not constrain the range (their scale is clamped into
 * 2^-9..2^8). The global is 2^(emax - 8): the largest block scale becomes 256.
 * q_out may equal q. */
dsv4_status dsv4_mxfp4_to_nvfp4(const uint8_t *q, const uint8_t *scales_e8m0, int64_t rows,
                                int64_t cols, uint8_t *q_out, uint8_t *scales_e4m3,
                                float *global_out, const char *what);

/* ---- FP8 block-128 (e4m3 weight, one scale per 128x128 block) ----
 * scales: [ceil(rows/128), ceil(cols/128)], either ue8m0 bytes or fp32; the last block row
 * and column may be partial. DSV4_ERR_NONFINITE for a NaN/Inf scale or a NaN weight byte
 * (0x7f/0xff), naming the block or element. */
typedef enum { DSV4_SCALE_UE8M0 = 0, DSV4_SCALE_F32 = 1 } dsv4_scale_kind;
dsv4_status dsv4_fp8_block128_dequantize(const uint8_t *w, int64_t rows, int64_t cols,
                                         const void *scales, dsv4_scale_kind kind, float *out,
                                         const char *what);
/* Quantize to FP8 block-128 with power-of-two (ue8m0) scales: scale = 2^ceil(log2(amax/448)),
 * q = e4m3(x / scale) (amax/448 rounded to fp32 first; an all-zero block gets scale 1.0).
 * Used by make-tiny. DSV4_ERR_NONFINITE for NaN/Inf input. */
dsv4_status dsv4_fp8_block128_quantize(const float *x, int64_t rows, int64_t cols, uint8_t *w,
                                       uint8_t *scales_e8m0, const char *what);

/* ---- 128x4 scale swizzle ----
 * linear: [rows, kblocks] bytes. swizzled: dsv4_swizzled_scale_bytes(rows, kblocks) bytes,
 * rows padded to 128 and kblocks to 4, padding zero. Byte of (r, c):
 * (r/128)*nKT*512 + (c/4)*512 + (r%32)*16 + ((r%128)/32)*4 + (c%4), nKT = ceil(kblocks/4). */
size_t dsv4_swizzled_scale_bytes(int64_t rows, int64_t kblocks);
void dsv4_scale_swizzle_128x4(const uint8_t *linear, int64_t rows, int64_t kblocks, uint8_t *swizzled);
void dsv4_scale_unswizzle_128x4(const uint8_t *swizzled, int64_t rows, int64_t kblocks, uint8_t *linear);

/* ---- fused gate/up (w1/w3) global-scale unification ----
 * Normalises both halves to g = max(g1, g3): the smaller half's block scales are multiplied
 * by g_small/g and re-rounded to e4m3 (payloads untouched). On return *g1 == *g3 == g and
 * *changed counts block scales whose dequantized value changed in the re-rounding
 * (s' * g != s * g_small; a scale that underflows to 0 counts). The re-rounding is one
 * e4m3 rounding of the exact s * g_small / g. DSV4_ERR_INVALID_ARGUMENT unless both globals
 * are finite and > 0, DSV4_ERR_NONFINITE for a NaN scale byte. */
dsv4_status dsv4_nvfp4_unify_global(uint8_t *scales1, float *g1, size_t n1, uint8_t *scales3,
                                    float *g3, size_t n3, size_t *changed, const char *what);

#endif
