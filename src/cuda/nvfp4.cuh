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
// (K = 4096 BF16: 4 groups = 128 bytes in flight per thread, 73 registers, 3 blocks per SM)
// and 8192+ rows a warp (8 groups, 128 registers, 2 blocks per SM): unmeasured guesses,
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
    float *scale;   // STATIC: read [0]; DYNAMIC_TOKEN: written [row]
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
