// Internals shared by linear.cu (planning, upload, split-K reduce), linear_decode.cu and
// linear_prefill.cu: the kernel parameter block, the format/activation enums the kernels are
// templated on, and exact scalar decoders for e2m1, e4m3 and ue8m0.
#pragma once

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "cuda/common.cuh"
#include "cuda/linear.h"

// Weight formats the kernels are templated on (the scale decode is the only difference).
enum LinearFormat { LIN_NVFP4 = 0, LIN_MXFP4 = 1, LIN_FP8 = 2 };
// Activation formats: BF16 (W4A16) or NVFP4 packed e2m1 + e4m3 scales (W4A4).
enum LinearAct { LIN_ACT_BF16 = 0, LIN_ACT_NVFP4 = 1 };

// Grouped (MoE) mode of the decode kernel: its CTAs walk the tiles of a device list of active
// groups (experts), each with its own weight and its own rows of x and y. Everything here is read on
// the device, so a grouped launch needs no host knowledge of the routing (graph-safe).
struct LinearGroups {
    const int32_t *active;      // device [max_active]: the active group ids, in list order
    const int32_t *n_active;    // device scalar: how many entries of `active` are in use
    const int32_t *row_begin;   // device [G]: first row of group g in y (the layout's offsets)
    const int32_t *row_count;   // device [G]: rows in use of group g (the layout's counts)
    const int32_t *row_token;   // device [rows] or NULL: x row read for y row r (gather); < 0 skips
    int64_t w_stride, s_stride; // bytes between consecutive groups' payloads / block scales
    const float *group_scale;   // device [G] or NULL: extra factor per group (global · input scale)
    int max_active;             // the most groups a call can have active (host bound)
    int bound;                  // >= every row_count (host bound): ceil(bound / MT) chunks per
                                // group exist; rows past them would not be computed
};

// Everything a linear kernel reads; passed by value.
struct LinearParams {
    int64_t M, N, K;
    const uint8_t *w;        // payload
    const uint8_t *w_scale;  // block scales (bytes; fp32 for FP8 with w_scale_f32)
    int w_scale_f32;
    const __nv_bfloat16 *x;  // LIN_ACT_BF16: [M, K]
    const uint8_t *xq;       // LIN_ACT_NVFP4: [M, K/2]
    const uint8_t *xq_scale; // LIN_ACT_NVFP4: [M, K/16] e4m3
    const float *token_scales; // per-token factor (device [M]) or NULL
    float out_scale;         // applied once to each fp32 sum: global · static input scale · unit
    void *y;                 // [M, N]
    int out_bf16;
    float *partials;         // split-K: [splits, M, N] raw sums (decode path only)
    int64_t k_per_split;     // decode: K range per blockIdx.y
    __nv_bfloat16 *swiglu_out; // grouped decode of the routed L1 stack (gate / up rows interleaved
    float swiglu_limit;        // in blocks of 8): BF16 SwiGLU(h) [rows, N / 2] instead of y
    int w_evict_first;       // decode: weights copied with the evict-first L2 policy (linear_decode_launch)
    const uint8_t *l2_warm[4];  // grouped decode: bytes of weights (never written by a kernel) pulled
    int64_t l2_warm_bytes[4];   // into L2 before waiting for the routing; NULL / 0 = unused
    int grouped;             // decode: 1 = grouped mode (grp below); M is then the bound on any
                             // group's rows that picks the token bucket (larger groups loop)
    LinearGroups grp;
};

// ---- exact scalar decoders (host-checkable formulas, no tables) ----

// e2m1 (low 4 bits): bit 3 sign, code c = bits 2..0 with magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6.
// For c >= 2 the fp32 bit pattern is (c << 22) + (126 << 23): c's top two bits land in the
// exponent (bias 1 -> 127) and its low bit in the top mantissa bit.
__device__ __forceinline__ float e2m1_to_f32(uint32_t nib) {
    const uint32_t c = nib & 7u;
    const float mag = c < 2u ? 0.5f * (float)c : __uint_as_float((c << 22) + (126u << 23));
    return (nib & 8u) ? -mag : mag;
}

// float8 e4m3fn: bias 7, subnormals m·2^-9, 0x7f/0xff NaN.
__device__ __forceinline__ float e4m3_to_f32(uint32_t b) {
    const uint32_t e = (b >> 3) & 15u, m = b & 7u;
    float mag = e ? __uint_as_float(((e + 120u) << 23) | (m << 20)) : (float)m * 0.001953125f;
    if ((b & 0x7fu) == 0x7fu) mag = __uint_as_float(0x7fc00000u);
    return (b & 0x80u) ? -mag : mag;
}

// ue8m0: 2^(b-127); b = 0 is the fp32 subnormal 2^-127; 0xff is NaN.
__device__ __forceinline__ float ue8m0_to_f32(uint32_t b) {
    if (b == 0xffu) return __uint_as_float(0x7fc00000u);
    return b ? __uint_as_float(b << 23) : __uint_as_float(0x00400000u);
}

// The factor a kernel applies to one output element after the sum.
__device__ __forceinline__ float linear_out_factor(const LinearParams &p, int64_t m) {
    return p.token_scales ? p.out_scale * p.token_scales[m] : p.out_scale;
}

__device__ __forceinline__ void linear_store(const LinearParams &p, int64_t m, int64_t n, float v) {
    if (p.out_bf16)
        static_cast<__nv_bfloat16 *>(p.y)[m * p.N + n] = __float2bfloat16_rn(v);
    else
        static_cast<float *>(p.y)[m * p.N + n] = v;
}

// The activation and output fields of a parameter block, and the per-tensor input scale of
// NVFP4 activations (1 when they carry per-token scales or are BF16): shared by
// dsv4_cuda_linear and the MoE grouped linear.
static inline float linear_params_set_io(LinearParams &p, const void *x, const dsv4_cuda_act_nvfp4 *xq, void *y,
                                         dsv4_cuda_out out) {
    p.x = static_cast<const __nv_bfloat16 *>(x);
    if (xq) {
        p.xq = xq->q;
        p.xq_scale = xq->scale;
        p.token_scales = xq->token_scales;
    }
    p.y = y;
    p.out_bf16 = out == DSV4_CUDA_OUT_BF16;
    return xq && !xq->token_scales ? xq->input_scale : 1.0f;
}

// ---- launchers (host, C++ linkage; linear.cu validates arguments before calling them) ----

// Decode: tokens per pass bucket (1, 2, 4, 8, 16, 32, 64) for M.
int linear_decode_mt(int64_t M);
// Development switches of the decode kernel (linear_decode.cu); a no-op in normal builds.
dsv4_status linear_decode_init(void);
// Output rows one CTA of the decode kernel covers, and its K granularity (k_per_split and
// the staged chunk must be multiples of it).
int linear_decode_rows_per_cta(int fmt, int mt);
int linear_decode_k_step(int fmt, int mt);
// Launches the decode kernel on grid (ceil(N / rows_per_cta), splits).
dsv4_status linear_decode_launch(int fmt, int act, const LinearParams &p, int splits, cudaStream_t s);
dsv4_status linear_prefill_launch(int fmt, int act, const LinearParams &p, cudaStream_t s);
dsv4_status linear_prefill_init(void);
// Hopper wgmma prefill (linear_prefill_wgmma.cu): fp4 weights, BF16 or NVFP4 activations
// (NVFP4: 16-byte aligned payload), K % 64 == 0, an sm_90a build on an sm_90 device;
// DSV4_PREFILL_MMA=1 in the environment turns it off (every prefill then takes mma.sync).
dsv4_status linear_prefill_wgmma_init(void);
bool linear_prefill_wgmma_takes(int fmt, int act, int64_t K);
dsv4_status linear_prefill_wgmma_launch(int fmt, int act, const LinearParams &p, cudaStream_t s);
// Large M, BF16 activations: expand W to BF16 in `workspace` (2·N·K bytes), then cuBLAS.
dsv4_status linear_dequant_gemm_launch(int fmt, const LinearParams &p, void *workspace, cublasHandle_t cublas,
                                       cudaStream_t s);
