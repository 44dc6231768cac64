// The device layout of fp4 weight payloads (NVFP4 and MXFP4), chosen at upload so that the
// decode kernel's exact BF16 expansion (linear_expand.cuh) costs fewer integer operations.
//
// In memory a 32-bit word holds 8 e2m1 codes, nibble i = element i (bit 3 sign, bits 0..2
// magnitude code). The kernels expand the BF16 pairs (element i, element i+4), i = 0..3: the
// magnitude code must land at BF16 bits 6..8 and the sign at bit 15 of the low half, the same
// for element i+4 in the high half (the mask 0x81C081C0; see linear_decode.cu for why that is
// the exact value e2m1 · 2^-126). With the natural layout every pair costs two shifts and two
// masks. At upload each word is rearranged (a bit permutation, nothing else changes) so that
//   pair 0 is already in place:              word & 0x81C081C0
//   pair 1 sits 3 bits lower:               (word << 3) & 0x81C081C0
//   pair 2 sits 6 bits lower:               (word << 6) & 0x81C081C0
//   pair 3 fills the 8 bits left over (10, 11, 13, 14 and 26, 27, 29, 30): magnitude bits 0-1
//   4 above their place, bit 2 five above, the sign one below: three shifts, three masks.
// 11 integer operations per word instead of 16. (No placement gives four shifted copies of the
// mask: its translates cannot tile 32 bits, checked by search.)
//
// NVFP4 block scales are made non-negative at upload as well: a block whose e4m3 scale has the
// sign bit set gets the scale's magnitude and its 16 elements' signs flipped, an exact
// rewrite (-s · e = s · -e), so the kernel's scale decode needs no sign handling.
//
// Host and device (DSV4_HD): the upload kernel, the prefill kernel (which unpacks to the
// natural order) and a CPU test (tests/test_gpu_linear.c) use the same functions.
#pragma once

#include <stdint.h>

#ifndef DSV4_HD
#define DSV4_HD static inline __host__ __device__
#endif

#define FP4_PAIR_MASK 0x81C081C0u

// Bit positions of element i's magnitude bits 0, 1, 2 and its sign in a device-layout word.
DSV4_HD void fp4_device_bits(int i, int pos[4]) {
    const int p = i & 3, hi = i >= 4 ? 16 : 0;
    if (p < 3) { // pair p sits 3p bits below the mask
        for (int b = 0; b < 3; b++) pos[b] = 6 - 3 * p + b + hi;
        pos[3] = 15 - 3 * p + hi;
    } else {
        pos[0] = 10 + hi, pos[1] = 11 + hi, pos[2] = 13 + hi, pos[3] = 14 + hi;
    }
}

// Natural word (nibble i = element i) -> device-layout word, and back.
DSV4_HD uint32_t fp4_to_device_word(uint32_t q) {
    uint32_t r = 0;
    for (int i = 0; i < 8; i++) {
        int pos[4];
        fp4_device_bits(i, pos);
        for (int b = 0; b < 4; b++) r |= ((q >> (4 * i + b)) & 1u) << pos[b];
    }
    return r;
}

DSV4_HD uint32_t fp4_from_device_word(uint32_t r) {
    uint32_t q = 0;
    for (int i = 0; i < 8; i++) {
        int pos[4];
        fp4_device_bits(i, pos);
        for (int b = 0; b < 4; b++) q |= ((r >> pos[b]) & 1u) << (4 * i + b);
    }
    return q;
}

// The four BF16 bit patterns (pairs (i, i+4), before the scale multiply) of a device-layout
// word: e2m1 · 2^-126 in each half.
DSV4_HD void fp4_device_pair_bits(uint32_t r, uint32_t out[4]) {
    out[0] = r & FP4_PAIR_MASK;
    out[1] = (r << 3) & FP4_PAIR_MASK;
    out[2] = (r << 6) & FP4_PAIR_MASK;
    out[3] = ((r >> 4) & 0x00C000C0u) | ((r >> 5) & 0x01000100u) | ((r << 1) & 0x80008000u);
}
