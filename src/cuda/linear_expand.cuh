// Exact expansion of block-scaled weights (and NVFP4 activations) to BF16 pairs, shared by
// the decode kernel (linear_decode.cu), the BF16 expansion of the dequant + cuBLAS path
// (linear_dequant.cu) and the wgmma prefill kernel (linear_prefill_wgmma.cu). The math is
// explained at the top of linear_decode.cu: every value
// comes out as (element · block scale) · 2^-9 exactly (MXFP4: exactly element · block scale);
// the caller restores the power of two after the sum.
#pragma once

#include "cuda/fp4_layout.cuh"
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
// Nibble i's magnitude goes to bits 6..8 and its sign to bit 15 of the low half, nibble i+4's
// to the same bits of the high half; the shifts are compile-time constants (left shifts can
// issue as IMAD on the FMA pipe, leaving the integer pipe to the masks).
__device__ __forceinline__ void e2m1x8_pairs(uint32_t q, uint32_t c, uint32_t out[4]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t mag = i <= 1 ? q << (6 - 4 * i) : q >> (4 * i - 6);
        const uint32_t sgn = q << (12 - 4 * i);
        out[i] = bf16x2_mul((mag & 0x01C001C0u) | (sgn & 0x80008000u), c);
    }
}

// The same pairs from a weight word in the device layout (fp4_layout.cuh): 11 integer
// operations and 4 BF16 multiplies instead of 16 and 4.
__device__ __forceinline__ void e2m1x8_pairs_dev(uint32_t r, uint32_t c, uint32_t out[4]) {
    fp4_device_pair_bits(r, out);
#pragma unroll
    for (int i = 0; i < 4; i++) out[i] = bf16x2_mul(out[i], c);
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

// BF16 pairs of powers of two (bit patterns: biased exponent << 7, in both halves).
#define BF16X2_2P126 0x7E807E80u
#define BF16X2_2P120 0x7B807B80u
#define BF16X2_2P117 0x7A007A00u
#define BF16X2_2P111 0x77007700u

// An e4m3 block scale as the BF16 multiplier c = scale · 2^117 in both halves (exact: at most
// 4 significant bits, 2^108 .. 448 · 2^117 < 2^127). `sel` picks the scale byte of s2:
// 0x4040 byte 0, 0x4141 byte 1. Integer and BF16 operations only (no conversion
// instructions, which run at a quarter of the integer rate): the 7 magnitude bits at BF16
// bits 4..10 are e4m3 · 2^-120 (a BF16 subnormal for e4m3 subnormals), and two exact
// multiplies bring it to scale · 2^117. The NaN code 0x7f decodes as 480 here; the loader
// rejects NaN block scales.
__device__ __forceinline__ uint32_t e4m3_scale_c(uint32_t s2, uint32_t sel) {
    const uint32_t t = __byte_perm(s2, 0u, sel); // [b, 0, b, 0]
    const uint32_t bits = ((t & 0x007F007Fu) << 4) | ((t & 0x00800080u) << 8);
    return bf16x2_mul(bf16x2_mul(bits, BF16X2_2P120), BF16X2_2P117);
}

// e4m3_scale_c for a non-negative scale (NVFP4 weight scales in the device layout, made
// non-negative at upload: fp4_layout.cuh): the byte shifted to bits 4..10 is the whole decode.
__device__ __forceinline__ uint32_t e4m3_scale_c_pos(uint32_t s2, uint32_t sel) {
    const uint32_t bits = __byte_perm(s2, 0u, sel) << 4; // [b, 0, b, 0], b < 0x80
    return bf16x2_mul(bf16x2_mul(bits, BF16X2_2P120), BF16X2_2P117);
}

// A ue8m0 block scale 2^(e-127) as a BF16 pair (exact for e = 1..254; e = 0 gives 0 and 255
// infinity here, the loader rejects 255).
__device__ __forceinline__ uint32_t ue8m0_c(uint32_t e) { return (e << 7) | (e << 23); }


// Pairs (0, 4), (1, 5), (2, 6), (3, 7) of 8 elements -> natural pairs (0, 1), (2, 3), (4, 5), (6, 7).
__device__ __forceinline__ void pairs_to_natural(const uint32_t pr[4], uint32_t nat[4]) {
    nat[0] = __byte_perm(pr[0], pr[1], 0x5410);
    nat[1] = __byte_perm(pr[2], pr[3], 0x5410);
    nat[2] = __byte_perm(pr[0], pr[1], 0x7632);
    nat[3] = __byte_perm(pr[2], pr[3], 0x7632);
}

// One 16-byte chunk of an fp4 weight row in the device layout (32 elements, k = 8w + i in word
// w) -> 16 BF16 pairs in natural order (nat[j] = elements 2j, 2j + 1), each element · block
// scale, times 2^-9 for NVFP4 (the caller restores it after the sum), exact for MXFP4.
// s: NVFP4 the two e4m3 block scales (byte 0: elements 0-15, byte 1: 16-31, non-negative in
// the device layout); MXFP4 the ue8m0 scale of the 32.
template <int FMT>
__device__ __forceinline__ void fp4_chunk32_bf16(uint4 q, uint32_t s, uint32_t nat[16]) {
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    uint32_t c0, c1, post = 0;
    if (FMT == LIN_NVFP4) {
        c0 = e4m3_scale_c_pos(s, 0x4040);
        c1 = e4m3_scale_c_pos(s, 0x4141);
    } else {
        c0 = c1 = BF16X2_2P126;
        post = ue8m0_c(s);
    }
#pragma unroll
    for (int w = 0; w < 4; w++) {
        uint32_t pr[4]; // (0, 4), (1, 5), (2, 6), (3, 7)
        e2m1x8_pairs_dev(words[w], w < 2 ? c0 : c1, pr);
        if (FMT == LIN_MXFP4)
#pragma unroll
            for (int i = 0; i < 4; i++) pr[i] = bf16x2_mul(pr[i], post);
        pairs_to_natural(pr, nat + 4 * w);
    }
}
