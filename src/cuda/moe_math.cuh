// The libm functions the MoE kernels share with the CPU reference (router.c, moe.c), and
// why they cannot be bit-exact by construction.
//
// The CPU reference calls glibc's expf and log1pf. CUDA's single-precision expf/log1pf
// have up to 2 ulp of error, so they disagree with the host often. Here each is evaluated
// in double (CUDA: <= 1 ulp of double) and rounded once to float. That equals the
// correctly rounded float result unless the exact value lies within ~2^-52 (relative) of
// a float rounding midpoint (about 1 input in 10^8). So the device results are the
// correctly rounded ones, and agreement with the host holds exactly where the host's libm
// is correctly rounded too. glibc 2.36 (this build machine): expf differs from the
// correctly rounded result for ~0.06% of inputs, log1pf for ~2% (1 ulp each); newer
// glibc releases (CORE-MATH) are correctly rounded. Everything else in the kernels
// (sqrt, +, ×, ÷, min/max, comparisons) is an IEEE-exact operation, done with the _rn
// intrinsics so that nvcc cannot contract a·b+c into an FMA the CPU does not do.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include "cuda/nvfp4.cuh" /* f_add, f_mul, f_div: IEEE operations the compiler cannot contract */

#ifndef DSV4_MOE_FLOAT_MATH_EXPERIMENT
__device__ __forceinline__ float moe_expf(float x) { return (float)exp((double)x); }
__device__ __forceinline__ float moe_log1pf(float x) { return (float)log1p((double)x); }
#else // development timing only (-DDSV4_MOE_FLOAT_MATH_EXPERIMENT): CUDA's float functions, not exact
__device__ __forceinline__ float moe_expf(float x) { return expf(x); }
__device__ __forceinline__ float moe_log1pf(float x) { return log1pf(x); }
#endif

// The SwiGLU kernel's BF16 store (bf16_encode: NaN as 0x7fc0 with its sign, not the CUDA
// intrinsic's payload), for the fused SwiGLU epilogues of the grouped linears.
__device__ __forceinline__ void swiglu_store_bf16(__nv_bfloat16 *out, int64_t i, float v) {
    reinterpret_cast<uint16_t *>(out)[i] = (uint16_t)bf16_encode(v);
}

// moe.c's SwiGLU: g = fminf(g, limit) (no lower clamp), u = fminf(fmaxf(u, -limit), limit),
// g / (1.0f + expf(-g)) * u, left to right. fminf/fmaxf have the same NaN rule on both sides
// (the non-NaN operand wins). Used by the SwiGLU kernel and the grouped linears' fused epilogues.
__device__ __forceinline__ float swiglu_as_cpu(float g, float u, float limit) {
    const float gi = fminf(g, limit), ui = fminf(fmaxf(u, -limit), limit);
    return f_mul(f_div(gi, f_add(1.0f, moe_expf(-gi))), ui);
}
