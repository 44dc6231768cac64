/* Scalar number-format codecs. Everything is integer bit manipulation on the IEEE
 * encodings (or arithmetic that is exact by construction), so results are bit-exact on
 * any host and never depend on hardware FP8/FP4 conversions or the FPU rounding mode. */
#include "format/fp.h"

#include <math.h>
#include <string.h>

static uint32_t float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float bits_float(uint32_t u) {
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint64_t double_bits(double x) {
    uint64_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* Rounds a finite non-negative value to the grid of a small binary float format with
 * `mant_bits` mantissa bits and smallest normal exponent `emin` (the subnormal quantum is
 * 2^(emin - mant_bits)), ties to even, and returns the unsigned code
 * (exponent field << mant_bits | mantissa) without any upper bound: callers saturate.
 *
 * Works on binary64 so that both floats (converted exactly) and exact quotients formed
 * in double by quant.c are rounded once. The result needs no special cases at the
 * boundaries: with n = value / quantum rounded (quantum = 2^(max(E, emin) - mant_bits)),
 * code = ((max(E, emin) - emin) << mant_bits) + n holds for subnormals (n < 2^m), normals
 * (2^m <= n < 2^(m+1)) and a carry into the next binade (n == 2^(m+1)). */
static uint64_t minifloat_code(double a, int mant_bits, int emin) {
    uint64_t u = double_bits(a) & ~(1ull << 63);
    int biased = (int)(u >> 52);
    if (biased == 0) return 0; /* zero or a double subnormal: far below any target quantum */
    uint64_t sig = (u & ((1ull << 52) - 1)) | (1ull << 52); /* value = sig * 2^(E - 52) */
    int e = biased - 1023;
    int e_grid = e > emin ? e : emin;
    int shift = e_grid - e + 52 - mant_bits; /* >= 52 - mant_bits > 0 */
    uint64_t n;
    if (shift > 54) {
        n = 0; /* sig < 2^53 < half a quantum */
    } else {
        uint64_t rem = sig & ((1ull << shift) - 1), half = 1ull << (shift - 1);
        n = sig >> shift;
        if (rem > half || (rem == half && (n & 1))) n++;
    }
    return ((uint64_t)(e_grid - emin) << mant_bits) + n;
}

/* ---- e2m1 ---- */

static const float e2m1_magnitude[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};

float dsv4_e2m1_decode(uint8_t code) {
    float m = e2m1_magnitude[code & 7];
    return (code & 8) ? -m : m;
}

uint8_t dsv4_e2m1_encode(float x) {
    if (isnan(x)) return 0x0;
    uint8_t sign = signbit(x) ? 0x8 : 0x0;
    if (isinf(x)) return sign | 0x7;
    /* e2m1: 1 mantissa bit, exponent bias 1, so the smallest normal is 2^0. */
    uint64_t code = minifloat_code(fabs((double)x), 1, 0);
    return sign | (uint8_t)(code > 7 ? 7 : code);
}

/* ---- e4m3fn ---- */

float dsv4_e4m3_decode(uint8_t code) {
    int sign = code & 0x80, e = (code >> 3) & 0xf, m = code & 7;
    float v;
    if (e == 0xf && m == 7)
        v = NAN;
    else if (e == 0)
        v = ldexpf((float)m, -9); /* subnormal: m * 2^-6 * 2^-3 */
    else
        v = ldexpf((float)(8 + m), e - 7 - 3);
    return sign ? -v : v;
}

uint8_t dsv4_e4m3_encode(float x) { return dsv4_e4m3_encode_f64((double)x); }

uint8_t dsv4_e4m3_encode_f64(double x) {
    if (isnan(x)) return 0x7f;
    uint8_t sign = signbit(x) ? 0x80 : 0x00;
    if (isinf(x)) return sign | 0x7e;
    /* e4m3fn: 3 mantissa bits, bias 7 so the smallest normal is 2^-6; 0x7e (448) is the
     * largest finite code, anything that rounds past it saturates (satfinite). */
    uint64_t code = minifloat_code(fabs(x), 3, -6);
    return sign | (uint8_t)(code > 0x7e ? 0x7e : code);
}

/* ---- ue8m0 ---- */

float dsv4_ue8m0_decode(uint8_t code) {
    if (code == 0xff) return NAN;
    /* 2^-127 is a float subnormal (only the top mantissa bit set); the rest are normal
     * floats whose exponent field is the code itself. */
    return code == 0 ? bits_float(0x00400000u) : bits_float((uint32_t)code << 23);
}

uint8_t dsv4_ue8m0_encode_ceil(float x) {
    if (isnan(x) || x < 0.0f) return 0xff;
    uint32_t u = float_bits(x) & 0x7fffffffu; /* -0 counts as 0 */
    if (u <= 0x00400000u) return 0x00;        /* x <= 2^-127 */
    if (u > 0x7f000000u) return 0xfe;         /* x > 2^127, +Inf included */
    int biased = (int)(u >> 23);
    if (biased == 0) return 0x01; /* float subnormal above 2^-127: ceil is 2^-126 */
    /* A normal float m * 2^e with m in [1, 2): ceil(log2) is e, or e + 1 if m > 1. */
    int code = biased + ((u & 0x7fffffu) != 0);
    return (uint8_t)code;
}

/* ---- bf16 ---- */

float dsv4_bf16_decode(uint16_t bits) { return bits_float((uint32_t)bits << 16); }

uint16_t dsv4_bf16_encode(float x) {
    uint32_t u = float_bits(x);
    /* NaN becomes the canonical quiet NaN with the input's sign (what ml_dtypes and
     * PyTorch produce); truncating could otherwise turn a NaN payload into Inf. */
    if (isnan(x)) return (uint16_t)(((u >> 16) & 0x8000u) | 0x7fc0u);
    /* Round to nearest even on the 16 dropped bits; a carry out of the mantissa bumps
     * the exponent, and past the largest finite bf16 that yields Inf, as IEEE RNE does. */
    uint32_t lsb = (u >> 16) & 1u;
    return (uint16_t)((u + 0x7fffu + lsb) >> 16);
}

float dsv4_bf16_round(float x) { return dsv4_bf16_decode(dsv4_bf16_encode(x)); }
