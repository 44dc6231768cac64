/* Scalar number-format codecs: e2m1 (FP4), float8 e4m3fn, ue8m0, bf16.
 * Bit layouts and rounding rules: ../shared/spec/nvfp4.md. Every encoder rounds to
 * nearest, ties to even. */
#ifndef DSV4_FORMAT_FP_H
#define DSV4_FORMAT_FP_H

#include <stdint.h>

/* e2m1: bit 3 sign, bits 2..1 exponent (bias 1), bit 0 mantissa.
 * Magnitudes 0, .5, 1, 1.5, 2, 3, 4, 6. No Inf/NaN. */
float dsv4_e2m1_decode(uint8_t code);               /* low nibble is used */
/* RNE, saturating to +-6. NaN encodes as +0 (0x0); +-Inf saturates to +-6. -0 keeps its sign (0x8). */
uint8_t dsv4_e2m1_encode(float x);

/* float8 e4m3fn: bias 7, no Inf, 0x7f/0xff are NaN, max 448, min subnormal 2^-9. */
float dsv4_e4m3_decode(uint8_t code);
/* RNE with saturation to +-448 (satfinite, what cvt.rn.satfinite does): finite values
 * beyond the range and +-Inf give +-448; NaN gives 0x7f. */
uint8_t dsv4_e4m3_encode(float x);
/* Same rule for a double, rounded once (no intermediate float): for exact quotients
 * such as scale * g_small / g in the gate/up unification. */
uint8_t dsv4_e4m3_encode_f64(double x);

/* ue8m0: unsigned power of two 2^(code-127); code 0xff is NaN; code 0 is 2^-127 (a float
 * subnormal). */
float dsv4_ue8m0_decode(uint8_t code);
/* Nearest power of two in log2 sense is *not* what scale formats want; this rounds the
 * exponent up (ceil(log2(x))) so that x <= decode(encode(x)), the rule for block scales.
 * x <= 2^-127 (+-0 included) gives 0x00; x > 2^127 (+Inf included) gives 0xfe;
 * NaN/negative (-Inf included) gives 0xff. */
uint8_t dsv4_ue8m0_encode_ceil(float x);

/* bf16: upper 16 bits of a float. Encode rounds to nearest even (finite values past the
 * largest bf16 become Inf, as in IEEE); NaN becomes the quiet NaN 0x7fc0 with the input's
 * sign (ml_dtypes and PyTorch do the same). */
float dsv4_bf16_decode(uint16_t bits);
uint16_t dsv4_bf16_encode(float x);
/* Round a float through bf16 and back. */
float dsv4_bf16_round(float x);

#endif
