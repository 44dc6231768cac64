// NVFP4 device helpers shared by quantize.cu, rmsnorm.cu and mhc.cu: number codecs written
// as integer bit logic identical to src/format/fp.c, the 16-element block quantizer with the
// exact fp32 operation order of src/cpu/quantize.c, the 128x4 scale swizzle, and block-wide
// reductions.
//
// Why integer codecs: Hopper has no FP4 conversion instruction, and the e4m3 cvt's handling
// of NaN/saturation would have to be proven identical; integer logic is identical by
// construction and is also compiled for the host (the DSV4_HD functions), where a CPU test
// compares it with src/format/fp.c over millions of inputs (tests/test_gpu_quantize.c).
//
// Why explicit __fmul_rn/__fdiv_rn: nvcc contracts a*b+c into one FMA by default, and the CPU
// reference rounds every operation; the _rn intrinsics are never contracted.
#pragma once

#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "cuda/device.h"

#define DSV4_HD static inline __host__ __device__

// Kinds of element arrays the kernels read and write (values match dsv4_cuda_dtype).
enum { DT_F32 = 0, DT_BF16 = 1 };

// ---------------------------------------------------------------- exact fp32 arithmetic

DSV4_HD float f_mul(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}
DSV4_HD float f_add(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}
DSV4_HD float f_div(float a, float b) {
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
DSV4_HD float f_sqrt(float a) {
#ifdef __CUDA_ARCH__
    return __fsqrt_rn(a);
#else
    return sqrtf(a);
#endif
}
DSV4_HD uint32_t f2u(float x) {
#ifdef __CUDA_ARCH__
    return __float_as_uint(x);
#else
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
#endif
}
DSV4_HD float u2f(uint32_t u) {
#ifdef __CUDA_ARCH__
    return __uint_as_float(u);
#else
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
#endif
}
// |x|, NaN kept: clearing the sign bit is what fabsf does.
DSV4_HD float f_abs(float x) { return u2f(f2u(x) & 0x7fffffffu); }
// The CPU reference's `if (a > m) m = a`: a NaN never wins.
DSV4_HD float f_max_nan_ignored(float m, float a) { return a > m ? a : m; }

// ---------------------------------------------------------------- codecs (= src/format/fp.c)

// minifloat_code of fp.c for a float: rounds the finite, non-negative value with bits `a` to
// the grid of a format with `mant_bits` mantissa bits and smallest normal exponent `emin`,
// ties to even; returns (exponent field << mant_bits) + mantissa without an upper bound.
// fp.c does the same on the value widened to double (sig << 29, shift + 29), which changes
// neither the quotient nor the remainder comparison, so the codes are identical.
DSV4_HD uint32_t minifloat_code(uint32_t a, int mant_bits, int emin) {
    int biased = (int)(a >> 23);
    if (biased == 0) return 0; // zero or a float subnormal: below half of any quantum here
    uint32_t sig = (a & 0x7fffffu) | 0x800000u; // value = sig * 2^(e - 23)
    int e = biased - 127;
    int e_grid = e > emin ? e : emin;
    int shift = e_grid - e + 23 - mant_bits; // >= 20
    uint32_t n;
    if (shift >= 25) {
        n = 0; // sig < 2^24 <= half a quantum
    } else {
        uint32_t rem = sig & ((1u << shift) - 1u), half = 1u << (shift - 1);
        n = sig >> shift;
        if (rem > half || (rem == half && (n & 1u))) n++;
    }
    return ((uint32_t)(e_grid - emin) << mant_bits) + n;
}

// e2m1: NaN -> 0x0, +-Inf -> +-6, RNE with saturation, -0 -> 0x8.
DSV4_HD uint32_t e2m1_encode(float x) {
    uint32_t u = f2u(x), a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x0;
    uint32_t sign = (u >> 31) ? 0x8u : 0x0u;
    if (a == 0x7f800000u) return sign | 0x7u;
    uint32_t code = minifloat_code(a, 1, 0);
    return sign | (code > 7u ? 7u : code);
}

// e4m3fn: NaN -> 0x7f, +-Inf and finite overflow -> +-448 (satfinite), RNE.
DSV4_HD uint32_t e4m3_encode(float x) {
    uint32_t u = f2u(x), a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return 0x7f;
    uint32_t sign = (u >> 31) ? 0x80u : 0x00u;
    if (a == 0x7f800000u) return sign | 0x7eu;
    uint32_t code = minifloat_code(a, 3, -6);
    return sign | (code > 0x7eu ? 0x7eu : code);
}

DSV4_HD float e4m3_decode(uint32_t code) {
    uint32_t e = (code >> 3) & 0xfu, m = code & 7u;
    if (e == 0xfu && m == 7u) return u2f(0x7fc00000u); // NaN (only ever used in arithmetic)
    // subnormal m * 2^-9 (exact), else (1 + m/8) * 2^(e-7) assembled directly
    float v = e == 0 ? (float)m * 0.001953125f : u2f(((e + 120u) << 23) | (m << 20));
    return (code & 0x80u) ? -v : v;
}

// bf16 RNE; NaN -> quiet 0x7fc0 with the input's sign (fp.c's rule; the CUDA intrinsic
// returns a different NaN payload).
DSV4_HD uint32_t bf16_encode(float x) {
    uint32_t u = f2u(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return ((u >> 16) & 0x8000u) | 0x7fc0u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}
DSV4_HD float bf16_decode(uint32_t b) { return u2f(b << 16); }
DSV4_HD uint32_t prmt_b32(uint32_t a, uint32_t b, uint32_t sel);
// bf16_encode of 16 values as 8 words (element 2k in the low half of word k): the rounding
// of both halves and one prmt to pair them, and bf16_encode itself only for a block holding
// a NaN (found with one compare per element; the rounding alone would turn some NaNs into
// other values).
DSV4_HD void bf16_encode16(const float v[16], uint32_t b[8]) {
    bool nan = false;
#pragma unroll
    for (int k = 0; k < 8; k++) {
        const uint32_t u0 = f2u(v[2 * k]), u1 = f2u(v[2 * k + 1]);
        b[k] = prmt_b32(u0 + 0x7fffu + ((u0 >> 16) & 1u), u1 + 0x7fffu + ((u1 >> 16) & 1u), 0x7632u);
        nan |= (v[2 * k] != v[2 * k]) | (v[2 * k + 1] != v[2 * k + 1]);
    }
    if (nan)
#pragma unroll 1
        for (int k = 0; k < 8; k++) b[k] = bf16_encode(v[2 * k]) | (bf16_encode(v[2 * k + 1]) << 16);
}
DSV4_HD float bf16_round(float x) { return bf16_decode(bf16_encode(x)); }

// ---------------------------------------------------------------- NVFP4 activation math

#define NVFP4_AMAX_DIVISOR 2688.0f // 6 * 448

// NaN-ignoring amax of one 16-element block (the reference's running `if (a > m) m = a`).
DSV4_HD float amax16(const float v[16]) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; i++) amax = f_max_nan_ignored(amax, f_abs(v[i]));
    return amax;
}

// input_scale from an amax (dynamic modes): amax / 2688, 1.0 for an all-zero tensor/row.
DSV4_HD float nvfp4_dynamic_scale(float amax) { return amax == 0.0f ? 1.0f : f_div(amax, NVFP4_AMAX_DIVISOR); }

// One 16-element block with G = g: returns the e4m3 scale code and writes the 8 payload
// bytes into packed[0..1] (byte i = element 2i low nibble | element 2i+1 high nibble, so
// storing the two words little-endian gives the spec's byte order).
// sf = e4m3((G * amax) / 6); q = e2m1((x * G) / sf), 0 when sf is 0 (src/cpu/quantize.c).
DSV4_HD uint32_t nvfp4_quant_group16(const float v[16], float g, uint32_t packed[2]) {
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < 16; i++) amax = f_max_nan_ignored(amax, f_abs(v[i]));
    uint32_t s = e4m3_encode(f_div(f_mul(g, amax), 6.0f));
    float sf = e4m3_decode(s);
    packed[0] = packed[1] = 0;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        uint32_t code = sf == 0.0f ? 0u : e2m1_encode(f_div(f_mul(v[i], g), sf));
        packed[i / 8] |= code << (4 * (i % 8));
    }
    return s;
}

// nvfp4_quant_group16, bit for bit, without a division or a minifloat rounding per element
// (those made the quantize kernels ALU-bound on Hopper). Why it is exact, for sf finite and
// nonzero (sf is an e4m3 value: 4 significant bits) and p = x * g (rounded as before):
//  - e2m1 of q = RN32(p / sf) only depends on where |q| lies against the 7 midpoints
//    tau = 0.25 0.75 1.25 1.75 2.5 3.5 5 of the e2m1 grid, with ties to the even code
//    (0.25, 1.25, 2.5, 5 round down; 0.75, 1.75, 3.5 round up) and saturation above 5.
//  - tau * |sf| has at most 7 significant bits, so it is exact in fp32 (>= 2^-11: normal).
//  - RN32 is monotone and keeps tau, so |q| > tau iff |p| / |sf| > tau except when
//    RN32(|p| / |sf|) == tau; that happens only for |p| == tau * |sf| exactly: the fp32
//    neighbours of tau * |sf| are ulp(p) / |sf| >= ulp(tau) / 2 away after the division
//    (mantissa of |sf| < 2), and even farther below tau where tau is a power of two.
//    Hence |q| > tau  <=>  |p| > tau*|sf| (round-down ties) or |p| >= tau*|sf| (round-up).
//  - a non-negative float orders like its bit pattern, and for t > 0 normal "a >= t" is
//    "a > t - 1 ulp", so the code is the count of 7 strict unsigned compares (a 3-step
//    branch-free search below). |p| = Inf counts 7 (q = Inf saturates as well); p NaN
//    gives code 0; the sign is sign(p) xor sign(sf), the sign of the quotient (-0 -> 0x8).
//  - sf == 0 or NaN: every code 0, as before (q would be NaN or the branch sets 0).
// tests/test_gpu_quantize.c compares the host build of this function with the division
// form over random, tie, boundary and non-finite inputs.
//
// nvfp4_quant_group16_amax is the same with the block's amax given (amax16(v)): the row
// kernels that need a row amax first keep each block's and do not recompute it.
DSV4_HD uint32_t nvfp4_quant_group16_amax(const float v[16], float amax, float g, uint32_t packed[2]) {
    uint32_t s = e4m3_encode(f_div(f_mul(g, amax), 6.0f));
    float sf = e4m3_decode(s), A = f_abs(sf);
    packed[0] = packed[1] = 0;
    if (!(A > 0.0f)) return s; // zero or NaN scale: all payload codes 0
    // thresholds as bit patterns, ">=" ones lowered by one ulp so every test is ">"
    const uint32_t t0 = f2u(f_mul(0.25f, A)), t1 = f2u(f_mul(0.75f, A)) - 1u, t2 = f2u(f_mul(1.25f, A));
    const uint32_t t3 = f2u(f_mul(1.75f, A)) - 1u, t4 = f2u(f_mul(2.5f, A)), t5 = f2u(f_mul(3.5f, A)) - 1u;
    const uint32_t t6 = f2u(f_mul(5.0f, A));
    const uint32_t sf_sign = f2u(sf) & 0x80000000u;
#pragma unroll
    for (int i = 0; i < 16; i++) {
        const uint32_t pu = f2u(f_mul(v[i], g)), a = pu & 0x7fffffffu;
        const bool hi = a > t3;
        const bool mid = a > (hi ? t5 : t1);
        uint32_t c = (hi ? 4u : 0u) + (mid ? 2u : 0u);
        c += a > (hi ? (mid ? t6 : t4) : (mid ? t2 : t0)) ? 1u : 0u;
        c |= ((pu ^ sf_sign) >> 28) & 0x8u;
        c = a > 0x7f800000u ? 0u : c; // NaN
        packed[i / 8] |= c << (4 * (i % 8));
    }
    return s;
}
DSV4_HD uint32_t nvfp4_quant_group16_fast(const float v[16], float g, uint32_t packed[2]) {
    return nvfp4_quant_group16_amax(v, amax16(v), g, packed);
}

// ---------------------------------------------------------------- BF16 blocks, two elements per op
//
// nvfp4_quant_group16 again, bit for bit, for a block of 16 BF16 values given as their 8
// raw little-endian words (the quantize kernels' input; the fused RMSNorm kernel keeps the
// float form, see docs/gpu-core.md). It never unpacks: it works on the 15-bit magnitude keys (the bf16 bits without
// the sign), two per 32-bit word: ~17 instructions per word and ~40 per block (amax, scale,
// breakpoints), about 11 per element in the kernels with their loads and stores, against ~32
// for the float form (nvfp4_quant_group16_amax; SASS of k_quantize_rows, sm_90a). Why it is
// exact (G = |g|, sf the block's e4m3 scale, A = |sf| > 0; g NaN, zero, infinite or outside
// [2^-100, 2^100) and blocks holding a NaN go to the float path instead):
//  1. Sign. q = RN32(RN32(x*g) / sf) has the sign of x: sf has the sign of g (A > 0), so
//     the payload is sign(x) << 3 | the magnitude code of |x|, NaN-free blocks only (NaN
//     elements must give 0x0 whatever their sign).
//  2. Magnitude. With p = RN32(|x| * G), the code counts the thresholds T_k = tau_k * A with
//     p > T_k (tau_k = 0.25, 1.25, 2.5, 5) or p >= T_k (0.75, 1.75, 3.5): the argument above
//     nvfp4_quant_group16_amax. p is non-decreasing in |x|, so each test is |x| >= B_k for a
//     breakpoint B_k, the smallest bf16 magnitude that passes, and non-negative bf16 values
//     order like their keys: the code is the number of k with key >= key(B_k).
//  3. Breakpoints. RN32(y) > T <=> y > T + u/2 and RN32(y) >= T <=> y >= T - u'/2 (u, u' the
//     fp32 spacing above / below T; T has <= 7 significant bits, so it is even and takes the
//     ties). So B_k is the first bf16 value past the real cut C_k / G, and C_k scales with T_k.
//     Every nonzero e4m3 value is A = m * 2^E, m in {8, 9, ..., 15} / 8, and while all the
//     values involved are normal bf16 (G in [2^-100, 2^100): T in [2^-11, 2400]) the bf16
//     grid maps to itself under *2^E, adding 128*E to keys: key(B_k(A)) = key(B_k(m)) + 128E.
//     A table of key(B_k(m)) for tau 0.25, 0.75, 1.25, 1.75 and the 8 m (32 entries per G,
//     nvfp4_bf16_bp_entry) gives them all, and tau 2.5, 3.5, 5 (2x, 2x, 4x tau 1.25, 1.75,
//     1.25, same tie direction) are +128, +128, +256 on those keys.
//  4. Scale. s = e4m3(RN32(RN32(G * amax) / 6)) | sign(g) (the negation commutes with the
//     rounding), amax the largest key (exact: no NaN). The division is the FMA-corrected
//     product nvfp4_div6; e4m3 rounding is integer RNE on the bits (e4m3_code_nonneg).
//  5. Lanes. With key <= 0x7f80 and bn = 0x8000 - key(B) in [0x80, 0x7fff], key + bn lies in
//     [0x80, 0xff7f]: a 32-bit addition of two packed lanes never carries across them and
//     sets lane bit 15 exactly when key >= key(B). prmt copies that bit over its lane (a
//     select mask). Three such tests search the 7 breakpoints (B3; B1 or B5; B0, B2, B4 or B6).
// tests/test_gpu_quantize.c checks the host build (the same source; prmt and lop3 emulated
// from their PTX definitions with the same selectors and LUTs) against nvfp4_quant_group16:
// every bf16 value under every scale code for six g, random, tie-heavy and non-finite blocks,
// the scale of every amax, every breakpoint entry for 3000 g. A throwaway exhaustive run also
// compared every float x in [0, 8192] through nvfp4_div6, every G mantissa at five exponents
// through nvfp4_bf16_bp_entry and every value under every scale for 200 g: no difference.

// prmt.b32 (default mode): byte n of the result is byte (sel >> 4n) & 7 of the pair {b, a}
// (a = bytes 0-3), or, when bit 3 of that selector nibble is set, that byte's top bit
// copied over all 8 bits.
DSV4_HD uint32_t prmt_b32(uint32_t a, uint32_t b, uint32_t sel) {
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("prmt.b32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(sel));
    return d;
#else
    const uint64_t ab = ((uint64_t)b << 32) | a;
    uint32_t d = 0;
    for (int n = 0; n < 4; n++) {
        const uint32_t s = (sel >> (4 * n)) & 0xfu;
        uint32_t byte = (uint32_t)(ab >> (8 * (s & 7u))) & 0xffu;
        if (s & 8u) byte = (byte & 0x80u) ? 0xffu : 0x00u;
        d |= byte << (8 * n);
    }
    return d;
#endif
}
// lop3.b32: bit i of the result is bit (4*a_i + 2*b_i + c_i) of LUT (PTX's immLut: the LUT of
// f is f(0xf0, 0xcc, 0xaa)). The host build evaluates the same LUT, so the host tests check
// the constants the GPU runs.
template <uint32_t LUT>
DSV4_HD uint32_t lop3(uint32_t a, uint32_t b, uint32_t c) {
#ifdef __CUDA_ARCH__
    uint32_t d;
    asm("lop3.b32 %0, %1, %2, %3, %4;" : "=r"(d) : "r"(a), "r"(b), "r"(c), "n"(LUT));
    return d;
#else
    return ((LUT & 0x01u) ? ~a & ~b & ~c : 0u) | ((LUT & 0x02u) ? ~a & ~b & c : 0u) |
           ((LUT & 0x04u) ? ~a & b & ~c : 0u) | ((LUT & 0x08u) ? ~a & b & c : 0u) |
           ((LUT & 0x10u) ? a & ~b & ~c : 0u) | ((LUT & 0x20u) ? a & ~b & c : 0u) |
           ((LUT & 0x40u) ? a & b & ~c : 0u) | ((LUT & 0x80u) ? a & b & c : 0u);
#endif
}
// (m & a) | (~m & b) in one LOP3 (nvcc otherwise re-associates chains of them into more
// instructions): LUT (0xf0 & 0xcc) | (~0xf0 & 0xaa) = 0xca.
DSV4_HD uint32_t bitsel(uint32_t m, uint32_t a, uint32_t b) { return lop3<0xcau>(m, a, b); }
// Lane-wise max of two pairs of unsigned 16-bit lanes (VIMNMX.U16x2 on sm_90).
DSV4_HD uint32_t vmax_u16x2(uint32_t a, uint32_t b) {
#ifdef __CUDA_ARCH__
    return __vmaxu2(a, b);
#else
    const uint32_t lo = (a & 0xffffu) > (b & 0xffffu) ? (a & 0xffffu) : (b & 0xffffu);
    const uint32_t hi = (a >> 16) > (b >> 16) ? (a >> 16) : (b >> 16);
    return (hi << 16) | lo;
#endif
}
// Each lane all ones where its bit 15 is set, else zero.
DSV4_HD uint32_t lane_masks(uint32_t d) { return prmt_b32(d, 0, 0xbb99u); }

DSV4_HD float f_fma(float a, float b, float c) {
#ifdef __CUDA_ARCH__
    return __fmaf_rn(a, b, c);
#else
    return fmaf(a, b, c);
#endif
}
// RN32(x / 6) for x in [2^-125, 8192]: q0 = RN(x * RN(1/6)) is within an ulp, the remainder
// x - 6*q0 is exact in one FMA, and one correction step rounds correctly (Markstein's
// theorem). Below, the quotient is an fp32 subnormal that may be an ulp off, far under half
// the smallest e4m3 step (2^-10): its e4m3 code is 0 either way. The e4m3 code was compared
// with e4m3_encode(x / 6) for every float x in [0, 8192] (tests/test_gpu_quantize.c keeps the
// neighbourhood of every e4m3 midpoint and random x).
DSV4_HD float nvfp4_div6(float x) {
    const float r6 = 0.16666667f; // RN32(1/6)
    const float q0 = f_mul(x, r6);
    return f_fma(f_fma(-q0, 6.0f, x), r6, q0);
}
// e4m3_encode for y in [0, 2^11): RNE to 3 mantissa bits on the bit pattern (the carry of a
// round-up ripples into the exponent, as it should), saturated to 448; below 2^-6 (the e4m3
// subnormals, spacing 2^-9) the FP adder rounds: y + 2^14 has spacing 2^-9, so its low bits
// are the code (0..8, 8 being the smallest normal, code 0x08).
DSV4_HD uint32_t e4m3_code_nonneg(float y) {
    const uint32_t u = f2u(y);
    uint32_t n = (u + 0x7ffffu + ((u >> 20) & 1u) - (120u << 23)) >> 20;
    n = n < 0x7eu ? n : 0x7eu;
    const uint32_t sub = f2u(f_add(y, 16384.0f)) - 0x46800000u;
    return u < 0x3c800000u ? sub : n;
}

// Whether the BF16 path applies to G = |g| (the range of point 3 above).
DSV4_HD bool nvfp4_bf16_fast_g(float g) {
    const uint32_t e = (f2u(g) >> 23) & 0xffu;
    return e >= 127u - 100u && e < 127u + 100u;
}
// What the BF16 quantizer needs of g, computed once per row or tensor (nvfp4_bf16_g_of).
typedef struct nvfp4_bf16_g {
    float g, G;    // g and |g|
    uint32_t sgn;  // g's sign as bit 7 of a scale byte
    bool fast;     // nvfp4_bf16_fast_g(g): the breakpoint table of G applies
} nvfp4_bf16_g;
DSV4_HD nvfp4_bf16_g nvfp4_bf16_g_of(float g) {
    nvfp4_bf16_g q;
    q.g = g, q.G = f_abs(g), q.sgn = (f2u(g) >> 24) & 0x80u, q.fast = nvfp4_bf16_fast_g(g);
    return q;
}
// Table entry i (0..31) for G: m = (8 + i/4) / 8, tau = (2*(i%4) + 1) / 4, T = tau * m (exact:
// <= 7 significant bits). X0 = RN32(T / G) truncated to bf16 is within 2^-23 (relative) of the
// cut and a bf16 step is >= 2^-8, so the breakpoint is X0, X0 + 1 or X0 + 2 (keys); the two
// exact tests pick it. Returns 0x8000 - key(B) + 127 * 128 in both 16-bit lanes (<= 0xbf7f):
// nvfp4_bf16_payload subtracts the biased exponent of A times 128 (point 3; the bias is
// folded in here).
DSV4_HD uint32_t nvfp4_bf16_bp_entry(float G, int i) {
    const int k = i & 3;
    const float T = (float)((2 * k + 1) * (8 + (i >> 2))) * 0.03125f;
    const bool strict = (k & 1) == 0; // tau 0.25, 1.25 round their ties down: p > T
    uint32_t b = f2u(f_div(T, G)) >> 16;
#pragma unroll
    for (int n = 0; n < 2; n++) {
        const float p = f_mul(u2f(b << 16), G);
        b += (strict ? p > T : p >= T) ? 0u : 1u;
    }
    return (0x8000u + (127u << 7) - b) * 0x10001u;
}

// The 15-bit keys (bf16 bits without the sign) of a block of 8 raw BF16 words, ax[h] = x[h] &
// 0x7fff7fff, and the largest of them in both lanes (kk): kk > 0x7f80ffff iff the block holds
// a NaN, else kk >> 16 is the key of its amax.
DSV4_HD uint32_t nvfp4_bf16_keys(const uint32_t x[8], uint32_t ax[8]) {
#pragma unroll
    for (int h = 0; h < 8; h++) ax[h] = x[h] & 0x7fff7fffu;
    uint32_t m = ax[0];
#pragma unroll
    for (int h = 1; h < 8; h++) m = vmax_u16x2(m, ax[h]);
    return vmax_u16x2(m, prmt_b32(m, 0, 0x1032u)); // with its lanes swapped
}
DSV4_HD uint32_t nvfp4_bf16_kmax(const uint32_t x[8]) {
    uint32_t ax[8];
    return nvfp4_bf16_keys(x, ax);
}
// The block's amax as amax16 (NaN ignored) from kk: the float path only for a block holding
// a NaN.
DSV4_HD float nvfp4_bf16_amax(const uint32_t x[8], uint32_t kk) {
    if (kk <= 0x7f80ffffu) return u2f(kk & 0xffff0000u);
    float v[16];
#pragma unroll
    for (int k = 0; k < 8; k++) v[2 * k] = u2f(x[k] << 16), v[2 * k + 1] = u2f(x[k] & 0xffff0000u);
    return amax16(v);
}
// The e4m3 code of the scale of a NaN-free block from kk, without g's sign (point 4; G = |g|).
// Any G * amax >= 6 * 464 saturates, so clamping it keeps Inf out of nvfp4_div6.
DSV4_HD uint32_t nvfp4_bf16_scale(uint32_t kk, float G) {
    const float ga = f_mul(G, u2f(kk & 0xffff0000u));
    return e4m3_code_nonneg(nvfp4_div6(ga < 8192.0f ? ga : 8192.0f));
}

// One word of two elements (raw BF16 pair xw, ax = xw & 0x7fff7fff their keys) -> their
// nibbles at bits 12-15 and 28-31 (the other bits are don't-care), given the lane constants
// bn_k = 0x8000 - key(B_k) of point 5: ax + bn_k sets lane bit 15 iff key >= key(B_k).
DSV4_HD uint32_t nvfp4_bf16_pair(uint32_t xw, uint32_t ax, const uint32_t bn[7]) {
    const uint32_t hi = lane_masks(ax + bn[3]);                      // code >= 4
    const uint32_t mid = lane_masks(ax + bitsel(hi, bn[5], bn[1]));  // code >= 6, or >= 2
    const uint32_t lo = (ax + bitsel(mid, bitsel(hi, bn[6], bn[2]), bitsel(hi, bn[4], bn[0]))) >> 3;
    uint32_t w = bitsel(0x40004000u, hi, mid); // bit 14: code bit 2, bit 13: code bit 1
    w = bitsel(0x80008000u, xw, w);            // bit 15: the sign
    return bitsel(0x10001000u, lo, w);         // bit 12: code bit 0
}
// Four pair words (elements 0-7) -> the packed word (element 2i low nibble of byte i).
DSV4_HD uint32_t nvfp4_bf16_pack4(uint32_t w0, uint32_t w1, uint32_t w2, uint32_t w3) {
    const uint32_t q01 = prmt_b32(w0, w1, 0x7351u), q23 = prmt_b32(w2, w3, 0x7351u); // [0 2 1 3], [4 6 5 7]
    const uint32_t ev = prmt_b32(q01, q23, 0x5410u), od = prmt_b32(q01, q23, 0x7632u); // [0 2 4 6], [1 3 5 7]
    return bitsel(0x0f0f0f0fu, ev >> 4, od);
}
// Where a table of nvfp4_bf16_bp_entry(|g|, 0..31) lives (16-byte aligned): device code reads
// shared memory through a 32-bit address (one register; a generic pointer costs a conversion at
// every read once register pressure makes the compiler recompute it), the host build an array.
typedef struct nvfp4_bf16_tbl {
    uint32_t smem;      // device: __cvta_generic_to_shared of the table
    const uint32_t *p;  // host
} nvfp4_bf16_tbl;
#ifdef __CUDACC__
__device__ __forceinline__ nvfp4_bf16_tbl nvfp4_bf16_tbl_shared(const uint32_t *t) {
    nvfp4_bf16_tbl r;
    r.smem = (uint32_t)__cvta_generic_to_shared(t), r.p = t;
    // opaque: ptxas keeps the register instead of recomputing it; volatile with a memory clobber
    // so it stays after the table's stores (callers build the table, __syncwarp, then call
    // this), and every table read (nvfp4_bf16_tbl_row: an asm without a memory clobber) depends
    // on its result, so no read can move above the stores
    asm volatile("mov.b32 %0, %0;" : "+r"(r.smem)::"memory");
    return r;
}
#endif
// Entries 4i .. 4i+3 of the table (off = 16 * i).
DSV4_HD uint4 nvfp4_bf16_tbl_row(nvfp4_bf16_tbl t, uint32_t off) {
#ifdef __CUDA_ARCH__
    uint4 q;
    asm("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];" : "=r"(q.x), "=r"(q.y), "=r"(q.z), "=r"(q.w) : "r"(t.smem + off));
    return q;
#else
    const uint32_t *e = t.p + off / 4;
    uint4 q;
    q.x = e[0], q.y = e[1], q.z = e[2], q.w = e[3];
    return q;
#endif
}
// The payload of the NaN-free block x (8 raw BF16 words, ax[] their keys) under the scale
// code c (without sign), from the table of |g|.
DSV4_HD void nvfp4_bf16_payload(const uint32_t x[8], const uint32_t ax[8], uint32_t c, nvfp4_bf16_tbl tbl,
                                uint32_t packed[2]) {
    // A's bits: normal codes assembled, subnormal ones c * 2^-9 (as e4m3_decode). Bytes 2-3
    // of them in both lanes hold 128 * (E + 127) (bits 7-14) and m's index * 16 (bits 4-6):
    // point 3's table row and shift.
    const uint32_t ab = c >= 8u ? (c << 20) + (120u << 23) : f2u(f_mul((float)c, 0.001953125f));
    const uint32_t ab2 = prmt_b32(ab, 0, 0x3232u);
    const uint4 q = nvfp4_bf16_tbl_row(tbl, ab2 & 0x70u);
    const uint32_t e2 = ab2 & 0x7f807f80u;
    uint32_t bn[7];
    bn[0] = q.x - e2, bn[1] = q.y - e2, bn[2] = q.z - e2, bn[3] = q.w - e2;
    bn[4] = bn[2] - 0x00800080u, bn[5] = bn[3] - 0x00800080u, bn[6] = bn[2] - 0x01000100u;
    uint32_t w[8];
#pragma unroll
    for (int h = 0; h < 8; h++) w[h] = nvfp4_bf16_pair(x[h], ax[h], bn);
    packed[0] = nvfp4_bf16_pack4(w[0], w[1], w[2], w[3]);
    packed[1] = nvfp4_bf16_pack4(w[4], w[5], w[6], w[7]);
    if (c == 0) packed[0] = packed[1] = 0; // sf == 0: every code 0 (the breakpoints are junk)
}
// nvfp4_quant_group16 of the block x (8 raw BF16 words), given ax and kk from nvfp4_bf16_keys
// (kk maybe kept from an earlier pass), q = nvfp4_bf16_g_of(g) and the table of |g|, when
// nvfp4_bf16_ok(q, kk); otherwise the result is meaningless (but computed without any
// out-of-range access) and the caller redoes the block with nvfp4_quant_group16_raw_bf16:
// the kernels do that after their unrolled loops, so that the rare float path does not
// take registers from the common one.
DSV4_HD bool nvfp4_bf16_ok(const nvfp4_bf16_g &q, uint32_t kk) { return q.fast && kk <= 0x7f80ffffu; }
DSV4_HD uint32_t nvfp4_quant_group16_bf16(const uint32_t x[8], const uint32_t ax[8], uint32_t kk,
                                          const nvfp4_bf16_g &q, nvfp4_bf16_tbl tbl, uint32_t packed[2]) {
    const uint32_t c = nvfp4_bf16_scale(kk, q.G); // a NaN amax clamps to 8192: c = 0x7e
    nvfp4_bf16_payload(x, ax, c, tbl, packed);
    return c | q.sgn;
}
// The float path for a raw BF16 block (any values, any g).
DSV4_HD uint32_t nvfp4_quant_group16_raw_bf16(const uint32_t x[8], float g, uint32_t packed[2]) {
    float v[16];
#pragma unroll
    for (int k = 0; k < 8; k++) v[2 * k] = u2f(x[k] << 16), v[2 * k + 1] = u2f(x[k] & 0xffff0000u);
    return nvfp4_quant_group16_fast(v, g, packed);
}

// Byte offset of the scale of (row r, k-block c): linear [rows, kb] or 128x4 swizzled.
DSV4_HD int64_t nvfp4_sf_index(int swizzled, int64_t r, int64_t c, int64_t kb) {
    if (!swizzled) return r * kb + c;
    int64_t nkt = (kb + 3) / 4;
    return (r / 128) * nkt * 512 + (c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + (c % 4);
}

#ifdef __CUDACC__
// ---------------------------------------------------------------- device-only helpers

// Element i of an F32 or BF16 array.
__device__ __forceinline__ float load_elem(const void *p, int dtype, int64_t i) {
    if (dtype == DT_F32) return ((const float *)p)[i];
    return bf16_decode(((const uint16_t *)p)[i]);
}
__device__ __forceinline__ void store_elem(void *p, int dtype, int64_t i, float v) {
    if (dtype == DT_F32)
        ((float *)p)[i] = v;
    else
        ((uint16_t *)p)[i] = (uint16_t)bf16_encode(v);
}

// 16 consecutive elements starting at element i (a multiple of 16; the base is 16-byte
// aligned, checked by the launchers) with 16-byte loads. BF16 is little-endian: the low
// half of each 32-bit word is the even element.
__device__ __forceinline__ void load_group16(const void *p, int dtype, int64_t i, float v[16]) {
    if (dtype == DT_F32) {
        const float4 *q = (const float4 *)((const float *)p + i);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 f = q[k];
            v[4 * k] = f.x, v[4 * k + 1] = f.y, v[4 * k + 2] = f.z, v[4 * k + 3] = f.w;
        }
    } else {
        const uint4 *q = (const uint4 *)((const uint16_t *)p + i);
#pragma unroll
        for (int k = 0; k < 2; k++) {
            uint4 w = q[k];
            uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
            for (int h = 0; h < 4; h++) {
                v[8 * k + 2 * h] = u2f(ws[h] << 16);
                v[8 * k + 2 * h + 1] = u2f(ws[h] & 0xffff0000u);
            }
        }
    }
}

// ---- row kernels: a row owned by TPR threads (32..256), S 16-element groups per thread
// Thread t of a row holds groups t, t + TPR, ..., t + (S-1)*TPR, so a warp's loads and
// stores of one slot are contiguous. The groups are held as the input's raw 32-bit words
// (RAW_WORDS: 8 for BF16, 16 for fp32) so a warp can keep a 4096-wide BF16 row (8 groups a
// lane) in 64 registers, loaded with every 16-byte load issued before the first use.
#define RAW_WORDS(DT) ((DT) == DT_F32 ? 16 : 8)

template <int DT>
__device__ __forceinline__ void load_raw16(const void *p, int64_t i, uint32_t w[RAW_WORDS(DT)]) {
    const uint4 *q = (const uint4 *)((const char *)p + i * (DT == DT_F32 ? 4 : 2));
#pragma unroll
    for (int k = 0; k < RAW_WORDS(DT) / 4; k++) {
        uint4 u = q[k];
        w[4 * k] = u.x, w[4 * k + 1] = u.y, w[4 * k + 2] = u.z, w[4 * k + 3] = u.w;
    }
}
// The 16 values of a raw group (BF16 little-endian: the low half of a word is the even element).
template <int DT>
__device__ __forceinline__ void unpack16(const uint32_t w[RAW_WORDS(DT)], float v[16]) {
#pragma unroll
    for (int k = 0; k < 8; k++) {
        if (DT == DT_F32) {
            v[2 * k] = u2f(w[2 * k]), v[2 * k + 1] = u2f(w[2 * k + 1]);
        } else {
            v[2 * k] = u2f(w[k] << 16), v[2 * k + 1] = u2f(w[k] & 0xffff0000u);
        }
    }
}

// Threads per row of the row kernels (a power of two, 32..256), chosen by the row count:
// a block per row (256 threads, one group each: the shortest chain, what a decode token
// wants) until the grid has ROW_THREADS_TARGET threads anyway, then fewer threads per row
// with more groups each, down to a warp per row: more bytes in flight per thread, fewer
// blocks, and the row reductions become warp shuffles. 2^18 gives 4096 rows 64 threads
// (K = 4096 BF16: 4 groups = 128 bytes in flight per thread; the quantize kernel is held to
// 64 registers there, 4 blocks per SM) and 8192+ rows a warp (8 groups, 128 registers, 2
// blocks per SM): unmeasured guesses,
// A/B them with DSV4_ROW_THREADS=32|64|128|256, which forces one (tests: every layout).
#define ROW_THREADS_TARGET (1 << 18)
static inline int row_threads(int64_t rows) {
    int o = dsv4_cuda_row_threads_override();
    if (o) return o;
    int tpr = 256;
    while (tpr > 32 && rows * (tpr / 2) >= ROW_THREADS_TARGET) tpr /= 2;
    return tpr;
}
// Groups per thread: the fewest of 1, 2, 4, 8 (at most smax) that cover kb groups with tpr
// threads, else smax (the row then takes several passes).
static inline int row_slots(int64_t kb, int tpr, int smax) {
    int s = 1;
    while (s < smax && (int64_t)tpr * s < kb) s *= 2;
    return s;
}

// Block-wide sum or NaN-ignoring max of one float per thread; every thread gets the result.
// blockDim.x must be a multiple of 32 and at most 1024; `sh` holds >= 33 floats. The order
// of the additions is fixed by the block shape, so results repeat bit for bit.
__device__ __forceinline__ float block_reduce(float v, float *sh, int is_max) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = is_max ? f_max_nan_ignored(v, w) : f_add(v, w);
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
    __syncthreads(); // sh may still be read by a previous call
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (threadIdx.x == 0) {
        float r = sh[0];
        for (int i = 1; i < nw; i++) r = is_max ? f_max_nan_ignored(r, sh[i]) : f_add(r, sh[i]);
        sh[32] = r;
    }
    __syncthreads();
    return sh[32];
}

// Where a kernel's NVFP4 output goes (the device side of dsv4_cuda_nvfp4_out).
typedef struct nvfp4_dst {
    uint8_t *q;     // [rows, K/2]
    uint8_t *sf;    // linear or swizzled scales
    float *scale;   // STATIC: read [0] (the MoE SwiGLU: [expert]); DYNAMIC_TOKEN: written [row]
    int mode;       // dsv4_act_scale_mode
    int swizzled;   // dsv4_sf_layout == SWIZZLED
} nvfp4_dst;

// Writes zero scales for the padding columns of a real row, or all columns of a padding row
// (swizzled layout only; rows are padded to 128 and k-blocks to 4).
// Thread t of the n threads that own row r writes every n-th of those bytes.
__device__ __forceinline__ void nvfp4_zero_pad_n(const nvfp4_dst *d, int64_t r, int64_t kb, int whole_row, int t, int n) {
    if (!d->swizzled) return;
    int64_t kb_pad = (kb + 3) / 4 * 4;
    for (int64_t c = (whole_row ? 0 : kb) + t; c < kb_pad; c += n) d->sf[nvfp4_sf_index(1, r, c, kb)] = 0;
}
// Quantizes one 16-element group of BF16 words x (its largest key kk from nvfp4_bf16_keys) with
// the BF16 quantizer and the table of q (the float form when it does not apply: a NaN in the
// group, or g out of its range), and stores its scale byte and payload at (row r, group c) of a
// row of kb groups. The streaming quantize kernel and the fused RMSNorm share it.
__device__ __forceinline__ void nvfp4_store_group_bf16(const nvfp4_dst &d, int64_t r, int64_t c, int64_t kb,
                                                      const uint32_t x[8], uint32_t kk, const nvfp4_bf16_g &q,
                                                      nvfp4_bf16_tbl tb) {
    uint32_t packed[2], ax[8], sc;
    (void)nvfp4_bf16_keys(x, ax);
    if (nvfp4_bf16_ok(q, kk))
        sc = nvfp4_quant_group16_bf16(x, ax, kk, q, tb, packed);
    else
        sc = nvfp4_quant_group16_raw_bf16(x, q.g, packed);
    d.sf[nvfp4_sf_index(d.swizzled, r, c, kb)] = (uint8_t)sc;
    *(uint2 *)(d.q + r * kb * 8 + c * 8) = make_uint2(packed[0], packed[1]);
}
__device__ __forceinline__ void nvfp4_zero_pad(const nvfp4_dst *d, int64_t r, int64_t kb, int whole_row) {
    nvfp4_zero_pad_n(d, r, kb, whole_row, threadIdx.x, blockDim.x);
}

// The tail of every fused RMSNorm: from the staged fp32 row xs[dim] (16-byte aligned) and inv = rsqrt(...),
// y[i] = w[i] * (xs[i] * inv) (w NULL: xs[i] * inv), written to `out` (optional) in
// out_dtype and, when d->q is set, quantized to NVFP4 from the BF16-rounded y (what an
// unfused RMSNorm -> BF16 -> quantize pipeline sees). All threads of the block must call it.
static __device__ void emit_norm_row(const float *xs, int dim, float inv, const float *w, void *out,
                              int out_dtype, const nvfp4_dst *d, int64_t r, float *sh) {
    if (!d->q) {
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = f_mul(xs[i], inv);
            store_elem(out, out_dtype, r * dim + i, w ? f_mul(__ldg(w + i), v) : v);
        }
        return;
    }
    float s;
    if (d->mode == 2 /* DYNAMIC_TOKEN */) {
        float amax = 0.0f;
        for (int i = threadIdx.x; i < dim; i += blockDim.x) {
            float v = f_mul(xs[i], inv);
            amax = f_max_nan_ignored(amax, f_abs(bf16_round(w ? f_mul(__ldg(w + i), v) : v)));
        }
        amax = block_reduce(amax, sh, 1);
        s = nvfp4_dynamic_scale(amax);
        if (threadIdx.x == 0) d->scale[r] = s;
    } else {
        s = d->scale[0];
    }
    const float g = f_div(1.0f, s);
    const int64_t kb = dim / 16;
    for (int64_t c = threadIdx.x; c < kb; c += blockDim.x) {
        // All 16 weights are loaded before any store: `out` may alias nothing we read, but
        // the compiler cannot know, and a load after each store serialises 16 latencies.
        float wv[16];
#pragma unroll
        for (int k = 0; k < 16; k++) wv[k] = w ? __ldg(w + c * 16 + k) : 1.0f;
        // xs read as 16-byte words (xs is 16-byte aligned, c*16 floats in): lanes 64 bytes
        // apart conflict 4 ways instead of 16 ways for scalar reads.
        float xv[16];
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float4 f = ((const float4 *)(xs + c * 16))[k];
            xv[4 * k] = f.x, xv[4 * k + 1] = f.y, xv[4 * k + 2] = f.z, xv[4 * k + 3] = f.w;
        }
        float v[16];
#pragma unroll
        for (int k = 0; k < 16; k++) {
            int64_t i = c * 16 + k;
            float n = f_mul(xv[k], inv);
            float y = w ? f_mul(wv[k], n) : n;
            if (out) store_elem(out, out_dtype, r * dim + i, y);
            v[k] = bf16_round(y);
        }
        uint32_t packed[2];
        d->sf[nvfp4_sf_index(d->swizzled, r, c, kb)] = (uint8_t)nvfp4_quant_group16_fast(v, g, packed);
        *(uint2 *)(d->q + r * (dim / 2) + c * 8) = make_uint2(packed[0], packed[1]);
    }
    nvfp4_zero_pad(d, r, kb, 0);
}
#endif
