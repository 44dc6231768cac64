// Exact expansion of block-scaled weights (and NVFP4 activations) to BF16 pairs, shared by
// the decode kernel (linear_decode.cu) and the BF16 expansion of the dequant + cuBLAS path
// (linear_dequant.cu). The math is explained at the top of linear_decode.cu: every value
// comes out as (element · block scale) · 2^-9 exactly (MXFP4: exactly element · block scale);
// the caller restores the power of two after the sum.
#pragma once

#include "cuda/linear_internal.cuh"

__device__ __forceinline__ uint32_t bf16x2_mul(uint32_t a, uint32_t b) {
    __nv_bfloat162 r = __hmul2(*reinterpret_cast<__nv_bfloat162 *>(&a), *reinterpret_cast<__nv_bfloat162 *>(&b));
    return *reinterpret_cast<uint32_t *>(&r);
}

__device__ __forceinline__ uint32_t bf16x2_splat(float v) {
    __nv_bfloat162 r = __float2bfloat162_rn(v);
    return *reinterpret_cast<uint32_t *>(&r);
}

// 8 packed e2m1 (nibble i = element i) -> pairs (i, i+4), i = 0..3, each e2m1 · 2^-126 · c.
__device__ __forceinline__ void e2m1x8_pairs(uint32_t q, uint32_t c, uint32_t out[4]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t t = q >> (4 * i);
        const uint32_t bits = ((t << 6) & 0x01C001C0u) | ((t << 12) & 0x80008000u);
        out[i] = bf16x2_mul(bits, c);
    }
}

// 4 e4m3 bytes -> pairs (0, 2) and (1, 3), each e4m3 · 2^-120 · c.
__device__ __forceinline__ void e4m3x4_pairs(uint32_t q, uint32_t c, uint32_t out[2]) {
#pragma unroll
    for (int i = 0; i < 2; i++) {
        const uint32_t t = q >> (8 * i);
        const uint32_t bits = ((t & 0x007F007Fu) << 4) | ((t & 0x00800080u) << 8);
        out[i] = bf16x2_mul(bits, c);
    }
}

// Natural-order BF16 pairs (x[2j], x[2j+1]) -> the pair order of a weight chunk.
template <int FMT>
__device__ __forceinline__ void pair_natural(const uint32_t nat[], uint32_t out[]) {
    if (FMT == LIN_FP8) {
#pragma unroll
        for (int w = 0; w < 4; w++) { // elements 4w..4w+3 -> (0, 2), (1, 3)
            out[2 * w + 0] = __byte_perm(nat[2 * w], nat[2 * w + 1], 0x5410);
            out[2 * w + 1] = __byte_perm(nat[2 * w], nat[2 * w + 1], 0x7632);
        }
    } else {
#pragma unroll
        for (int w = 0; w < 4; w++) { // elements 8w..8w+7 -> (0, 4), (1, 5), (2, 6), (3, 7)
            out[4 * w + 0] = __byte_perm(nat[4 * w + 0], nat[4 * w + 2], 0x5410);
            out[4 * w + 1] = __byte_perm(nat[4 * w + 0], nat[4 * w + 2], 0x7632);
            out[4 * w + 2] = __byte_perm(nat[4 * w + 1], nat[4 * w + 3], 0x5410);
            out[4 * w + 3] = __byte_perm(nat[4 * w + 1], nat[4 * w + 3], 0x7632);
        }
    }
}

// The e4m3 block scale as the BF16 multiplier c = scale · 2^117 (exact: at most 4
// significant bits, 2^108 .. 448 · 2^117 < 2^127).
__device__ __forceinline__ uint32_t nvfp4_scale_c(uint32_t s) { return bf16x2_splat(e4m3_to_f32(s) * 0x1p117f); }

