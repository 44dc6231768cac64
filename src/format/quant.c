/* Block-scaled tensor formats (contract: ../shared/spec/nvfp4.md, header quant.h).
 * CPU reference code: used at load/convert time and as the oracle for GPU kernels, so
 * every rounding step follows the documented formula literally, in fp32 where the
 * reference implementations (ModelOpt, Blackwell kernels) use fp32. */
#include "format/quant.h"

#include <math.h>
#include <string.h>

#include "base/status.h"
#include "format/fp.h"

#define NVFP4_AMAX_DIVISOR (DSV4_E2M1_MAX * DSV4_E4M3_MAX) /* 2688 */
#define E4M3_CODE_ONE 0x38                                 /* 1.0 */
#define UE8M0_CODE_ONE 0x7f                                /* 2^0 */

/* Smallest and largest power of two that e4m3 holds exactly: 2^-9 is the smallest
 * subnormal, 2^8 = 256 the largest power of two below 448. */
#define E4M3_POW2_MIN (-9)
#define E4M3_POW2_MAX 8

static uint8_t nibble(const uint8_t *packed, int64_t i) {
    uint8_t b = packed[i >> 1];
    return (i & 1) ? (uint8_t)(b >> 4) : (uint8_t)(b & 0xf);
}

static void put_nibble(uint8_t *packed, int64_t i, uint8_t code) {
    uint8_t *b = &packed[i >> 1];
    if (i & 1)
        *b = (uint8_t)((*b & 0x0f) | (code << 4));
    else
        *b = (uint8_t)((*b & 0xf0) | (code & 0x0f));
}

static void e4m3_table(float lut[256]) {
    for (int c = 0; c < 256; c++) lut[c] = dsv4_e4m3_decode((uint8_t)c);
}

static dsv4_status check_matrix(int64_t rows, int64_t cols, int64_t block, const char *what) {
    if (rows < 0 || cols < 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: negative shape [%lld, %lld]", what,
                         (long long)rows, (long long)cols);
    if (block > 1 && cols % block != 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: %lld columns is not a multiple of the block size %lld",
                         what, (long long)cols, (long long)block);
    return DSV4_OK;
}

/* Finds the first NaN/Inf of a row-major matrix and reports it; DSV4_OK if none. */
static dsv4_status check_finite(const float *x, int64_t rows, int64_t cols, const char *what) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            if (!isfinite(x[r * cols + c]))
                return dsv4_fail(DSV4_ERR_NONFINITE, "%s: non-finite value %g at row %lld, column %lld",
                                 what, (double)x[r * cols + c], (long long)r, (long long)c);
    return DSV4_OK;
}

float dsv4_amax(const float *x, int64_t n) {
    float m = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf(x[i]);
        if (a > m) m = a;
    }
    return m;
}

/* ---- NVFP4 weights ---- */

float dsv4_nvfp4_global_scale(const float *x, size_t n) {
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i])) return NAN; /* let the caller's finiteness check see it */
        float a = fabsf(x[i]);
        if (a > amax) amax = a;
    }
    return amax / NVFP4_AMAX_DIVISOR;
}

dsv4_status dsv4_nvfp4_quantize(const float *x, int64_t rows, int64_t cols, float global,
                                uint8_t *q, uint8_t *scales, const char *what) {
    DSV4_TRY(check_matrix(rows, cols, DSV4_NVFP4_BLOCK, what));
    if (!(global > 0.0f) || !isfinite(global))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT,
                         "%s: NVFP4 global scale must be finite and > 0, got %g", what, (double)global);
    DSV4_TRY(check_finite(x, rows, cols, what));

    const int64_t nblk = cols / DSV4_NVFP4_BLOCK;
    /* fp32, same association as ModelOpt: per_block_amax / (6.0 * weights_scaling_factor_2) */
    const float six_global = DSV4_E2M1_MAX * global;
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b = 0; b < nblk; b++) {
            const float *xb = x + r * cols + b * DSV4_NVFP4_BLOCK;
            float amax = dsv4_amax(xb, DSV4_NVFP4_BLOCK);
            /* ModelOpt replaces a zero scale by 1.0 *before* the e4m3 cast, so an all-zero
             * block stores 1.0; checkpoints contain exactly that. */
            uint8_t s = amax == 0.0f ? E4M3_CODE_ONE : dsv4_e4m3_encode(amax / six_global);
            scales[r * nblk + b] = s;
            /* A non-zero block whose scale underflows to e4m3 zero divides by 1.0 * global
             * instead of by 0 (which would give Inf -> 6); its elements are all below a
             * quarter of 2^-9 * 6 then and encode as zero, matching the zero dequant. */
            float sf = dsv4_e4m3_decode(s);
            float divisor = (sf == 0.0f ? 1.0f : sf) * global;
            for (int i = 0; i < DSV4_NVFP4_BLOCK; i++)
                put_nibble(q, r * cols + b * DSV4_NVFP4_BLOCK + i, dsv4_e2m1_encode(xb[i] / divisor));
        }
    }
    return DSV4_OK;
}

void dsv4_nvfp4_dequantize(const uint8_t *q, const uint8_t *scales, float global, int64_t rows,
                           int64_t cols, float *out) {
    if (rows <= 0 || cols <= 0 || cols % DSV4_NVFP4_BLOCK) return;
    float lut[256];
    e4m3_table(lut);
    const int64_t nblk = cols / DSV4_NVFP4_BLOCK;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            /* e2m1 x e4m3 is exact; the global is applied once, as the GEMM does. */
            float sf = lut[scales[r * nblk + c / DSV4_NVFP4_BLOCK]];
            out[r * cols + c] = dsv4_e2m1_decode(nibble(q, r * cols + c)) * sf * global;
        }
}

/* ---- NVFP4 activations ---- */

/* One row with G = 1 / input_scale, following the Blackwell quantize kernels:
 * sf = e4m3_satfinite(G * amax / 6), q = e2m1(x * G / sf), or 0 when sf is 0. */
void dsv4_nvfp4_quantize_act_row(const float *x, int64_t cols, float g, uint8_t *q, uint8_t *scales) {
    for (int64_t b = 0; b < cols / DSV4_NVFP4_BLOCK; b++) {
        const float *xb = x + b * DSV4_NVFP4_BLOCK;
        float amax = dsv4_amax(xb, DSV4_NVFP4_BLOCK);
        uint8_t s = dsv4_e4m3_encode(g * amax / DSV4_E2M1_MAX);
        scales[b] = s;
        float sf = dsv4_e4m3_decode(s);
        for (int i = 0; i < DSV4_NVFP4_BLOCK; i++) {
            uint8_t code = sf == 0.0f ? 0 : dsv4_e2m1_encode(xb[i] * g / sf);
            put_nibble(q, b * DSV4_NVFP4_BLOCK + i, code);
        }
    }
}

dsv4_status dsv4_nvfp4_quantize_act(const float *x, int64_t rows, int64_t cols, float input_scale,
                                    uint8_t *q, uint8_t *scales, const char *what) {
    DSV4_TRY(check_matrix(rows, cols, DSV4_NVFP4_BLOCK, what));
    if (!(input_scale > 0.0f) || !isfinite(input_scale))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT,
                         "%s: activation input_scale must be finite and > 0, got %g", what,
                         (double)input_scale);
    DSV4_TRY(check_finite(x, rows, cols, what));
    const float g = 1.0f / input_scale;
    for (int64_t r = 0; r < rows; r++)
        dsv4_nvfp4_quantize_act_row(x + r * cols, cols, g, q + r * cols / 2, scales + r * cols / DSV4_NVFP4_BLOCK);
    return DSV4_OK;
}

dsv4_status dsv4_nvfp4_quantize_act_dynamic(const float *x, int64_t rows, int64_t cols, uint8_t *q,
                                            uint8_t *scales, float *input_scales, const char *what) {
    DSV4_TRY(check_matrix(rows, cols, DSV4_NVFP4_BLOCK, what));
    DSV4_TRY(check_finite(x, rows, cols, what));
    for (int64_t r = 0; r < rows; r++) {
        float amax = dsv4_amax(x + r * cols, cols);
        /* An all-zero row still needs a usable scale; any positive value gives q = 0. */
        float in_scale = amax == 0.0f ? 1.0f : amax / NVFP4_AMAX_DIVISOR;
        input_scales[r] = in_scale;
        dsv4_nvfp4_quantize_act_row(x + r * cols, cols, 1.0f / in_scale, q + r * cols / 2,
                         scales + r * cols / DSV4_NVFP4_BLOCK);
    }
    return DSV4_OK;
}

/* ---- MXFP4 ---- */

dsv4_status dsv4_mxfp4_dequantize(const uint8_t *q, const uint8_t *scales_e8m0, int64_t rows,
                                  int64_t cols, float *out, const char *what) {
    DSV4_TRY(check_matrix(rows, cols, DSV4_MXFP4_BLOCK, what));
    const int64_t nblk = cols / DSV4_MXFP4_BLOCK;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t b = 0; b < nblk; b++) {
            uint8_t e = scales_e8m0[r * nblk + b];
            if (e == 0xff)
                return dsv4_fail(DSV4_ERR_NONFINITE, "%s: MXFP4 scale is NaN (0xff) at row %lld, block %lld",
                                 what, (long long)r, (long long)b);
            float scale = dsv4_ue8m0_decode(e);
            for (int64_t c = b * DSV4_MXFP4_BLOCK; c < (b + 1) * DSV4_MXFP4_BLOCK; c++)
                out[r * cols + c] = dsv4_e2m1_decode(nibble(q, r * cols + c)) * scale; /* exact */
        }
    return DSV4_OK;
}

static int payload_is_zero(const uint8_t *q, int64_t first, int64_t n) {
    for (int64_t i = first; i < first + n; i++)
        if ((nibble(q, i) & 7) != 0) return 0; /* 0x0 and 0x8 are both zero */
    return 1;
}

dsv4_status dsv4_mxfp4_to_nvfp4(const uint8_t *q, const uint8_t *scales_e8m0, int64_t rows,
                                int64_t cols, uint8_t *q_out, uint8_t *scales_e4m3,
                                float *global_out, const char *what) {
    DSV4_TRY(check_matrix(rows, cols, DSV4_MXFP4_BLOCK, what));
    const int64_t nblk = cols / DSV4_MXFP4_BLOCK;

    /* Range of the block exponents that matter: a block whose payload is all zero
     * dequantizes to zero under any scale, so it does not constrain the global. */
    int emin = 0, emax = 0, have = 0;
    int64_t at_min = 0, at_max = 0;
    for (int64_t i = 0; i < rows * nblk; i++) {
        if (scales_e8m0[i] == 0xff)
            return dsv4_fail(DSV4_ERR_NONFINITE, "%s: MXFP4 scale is NaN (0xff) at row %lld, block %lld",
                             what, (long long)(i / nblk), (long long)(i % nblk));
        if (payload_is_zero(q, i * DSV4_MXFP4_BLOCK, DSV4_MXFP4_BLOCK)) continue;
        int e = (int)scales_e8m0[i] - 127;
        if (!have || e < emin) emin = e, at_min = i;
        if (!have || e > emax) emax = e, at_max = i;
        have = 1;
    }
    /* Block scale 2^(e - G) must lie in 2^-9 .. 2^8 for every block: G in
     * [emax - 8, emin + 9], so the exponents may span at most 17. G = emax - 8 puts the
     * largest block scale at 256, the same place ModelOpt puts it (near 448). */
    if (have && emax - emin > E4M3_POW2_MAX - E4M3_POW2_MIN)
        return dsv4_fail(DSV4_ERR_NOT_REPRESENTABLE,
                         "%s: MXFP4 block scales span 2^%d (row %lld, block %lld) to 2^%d (row %lld, "
                         "block %lld), %d binades; NVFP4 with a power-of-two global holds at most %d "
                         "(e4m3 2^%d..2^%d), so the conversion would not be exact",
                         what, emin, (long long)(at_min / nblk), (long long)(at_min % nblk), emax,
                         (long long)(at_max / nblk), (long long)(at_max % nblk), emax - emin,
                         E4M3_POW2_MAX - E4M3_POW2_MIN, E4M3_POW2_MIN, E4M3_POW2_MAX);
    int gexp = have ? emax - E4M3_POW2_MAX : 0;

    for (int64_t i = 0; i < rows * nblk; i++) {
        int k = (int)scales_e8m0[i] - 127 - gexp;
        /* Only all-zero blocks can fall outside; any scale keeps them zero. */
        if (k < E4M3_POW2_MIN) k = E4M3_POW2_MIN;
        if (k > E4M3_POW2_MAX) k = E4M3_POW2_MAX;
        uint8_t s = dsv4_e4m3_encode(ldexpf(1.0f, k)); /* exact: a power of two in range */
        scales_e4m3[2 * i] = s;
        scales_e4m3[2 * i + 1] = s;
    }
    if (q_out != q) memmove(q_out, q, (size_t)(rows * cols / 2));
    *global_out = ldexpf(1.0f, gexp); /* 2^-135 .. 2^119: a float, subnormal at worst */
    return DSV4_OK;
}

/* ---- FP8 block-128 ---- */

static int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

dsv4_status dsv4_fp8_block128_dequantize(const uint8_t *w, int64_t rows, int64_t cols,
                                         const void *scales, dsv4_scale_kind kind, float *out,
                                         const char *what) {
    DSV4_TRY(check_matrix(rows, cols, 1, what));
    if (kind != DSV4_SCALE_UE8M0 && kind != DSV4_SCALE_F32)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: unknown FP8 scale kind %d", what, (int)kind);
    const int64_t sr = ceil_div(rows, DSV4_FP8_BLOCK), sc = ceil_div(cols, DSV4_FP8_BLOCK);
    /* Check every scale first so that a failure leaves a clear message, not half a tensor. */
    for (int64_t i = 0; i < sr * sc; i++) {
        float s = kind == DSV4_SCALE_UE8M0 ? dsv4_ue8m0_decode(((const uint8_t *)scales)[i])
                                           : ((const float *)scales)[i];
        if (!isfinite(s))
            return dsv4_fail(DSV4_ERR_NONFINITE, "%s: FP8 block scale %g at block row %lld, block column %lld",
                             what, (double)s, (long long)(i / sc), (long long)(i % sc));
    }
    float lut[256];
    e4m3_table(lut);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            uint8_t code = w[r * cols + c];
            if ((code & 0x7f) == 0x7f)
                return dsv4_fail(DSV4_ERR_NONFINITE, "%s: FP8 weight is NaN (0x%02x) at row %lld, column %lld",
                                 what, code, (long long)r, (long long)c);
            int64_t si = (r / DSV4_FP8_BLOCK) * sc + c / DSV4_FP8_BLOCK;
            float s = kind == DSV4_SCALE_UE8M0 ? dsv4_ue8m0_decode(((const uint8_t *)scales)[si])
                                               : ((const float *)scales)[si];
            out[r * cols + c] = lut[code] * s;
        }
    return DSV4_OK;
}

dsv4_status dsv4_fp8_block128_quantize(const float *x, int64_t rows, int64_t cols, uint8_t *w,
                                       uint8_t *scales_e8m0, const char *what) {
    DSV4_TRY(check_matrix(rows, cols, 1, what));
    DSV4_TRY(check_finite(x, rows, cols, what));
    const int64_t sr = ceil_div(rows, DSV4_FP8_BLOCK), sc = ceil_div(cols, DSV4_FP8_BLOCK);
    for (int64_t br = 0; br < sr; br++)
        for (int64_t bc = 0; bc < sc; bc++) {
            int64_t r0 = br * DSV4_FP8_BLOCK, c0 = bc * DSV4_FP8_BLOCK;
            int64_t r1 = r0 + DSV4_FP8_BLOCK < rows ? r0 + DSV4_FP8_BLOCK : rows;
            int64_t c1 = c0 + DSV4_FP8_BLOCK < cols ? c0 + DSV4_FP8_BLOCK : cols;
            float amax = 0.0f;
            for (int64_t r = r0; r < r1; r++) {
                float m = dsv4_amax(x + r * cols + c0, c1 - c0);
                if (m > amax) amax = m;
            }
            /* Power-of-two scale >= amax/448, so no element saturates; an all-zero block
             * gets 1.0 rather than the meaningless 2^-127. */
            uint8_t e = amax == 0.0f ? UE8M0_CODE_ONE : dsv4_ue8m0_encode_ceil(amax / DSV4_E4M3_MAX);
            scales_e8m0[br * sc + bc] = e;
            float scale = dsv4_ue8m0_decode(e);
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    w[r * cols + c] = dsv4_e4m3_encode(x[r * cols + c] / scale); /* exact division */
        }
    return DSV4_OK;
}

/* ---- 128x4 scale swizzle ---- */

static size_t swizzled_index(int64_t r, int64_t c, int64_t nkt) {
    return (size_t)((r / 128) * nkt * 512 + (c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 +
                    (c % 4));
}

size_t dsv4_swizzled_scale_bytes(int64_t rows, int64_t kblocks) {
    if (rows <= 0 || kblocks <= 0) return 0;
    return (size_t)(ceil_div(rows, 128) * 128 * ceil_div(kblocks, 4) * 4);
}

void dsv4_scale_swizzle_128x4(const uint8_t *linear, int64_t rows, int64_t kblocks, uint8_t *swizzled) {
    size_t n = dsv4_swizzled_scale_bytes(rows, kblocks);
    if (n == 0) return;
    memset(swizzled, 0, n); /* the padding rows/columns must read as scale 0 */
    const int64_t nkt = ceil_div(kblocks, 4);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < kblocks; c++) swizzled[swizzled_index(r, c, nkt)] = linear[r * kblocks + c];
}

void dsv4_scale_unswizzle_128x4(const uint8_t *swizzled, int64_t rows, int64_t kblocks, uint8_t *linear) {
    if (rows <= 0 || kblocks <= 0) return;
    const int64_t nkt = ceil_div(kblocks, 4);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < kblocks; c++) linear[r * kblocks + c] = swizzled[swizzled_index(r, c, nkt)];
}

/* ---- gate/up global unification ---- */

static dsv4_status check_scales(const uint8_t *s, size_t n, const char *half, const char *what) {
    for (size_t i = 0; i < n; i++)
        if ((s[i] & 0x7f) == 0x7f)
            return dsv4_fail(DSV4_ERR_NONFINITE, "%s: %s block scale %zu is NaN (0x%02x)", what, half, i, s[i]);
    return DSV4_OK;
}

dsv4_status dsv4_nvfp4_unify_global(uint8_t *scales1, float *g1, size_t n1, uint8_t *scales3,
                                    float *g3, size_t n3, size_t *changed, const char *what) {
    if (!(*g1 > 0.0f) || !isfinite(*g1) || !(*g3 > 0.0f) || !isfinite(*g3))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT,
                         "%s: gate/up global scales must be finite and > 0, got %g and %g", what,
                         (double)*g1, (double)*g3);
    DSV4_TRY(check_scales(scales1, n1, "gate (w1)", what));
    DSV4_TRY(check_scales(scales3, n3, "up (w3)", what));
    *changed = 0;
    if (*g1 == *g3) return DSV4_OK;

    const int gate_smaller = *g1 < *g3;
    uint8_t *s = gate_smaller ? scales1 : scales3;
    const size_t n = gate_smaller ? n1 : n3;
    const double g_small = gate_smaller ? *g1 : *g3, g = gate_smaller ? *g3 : *g1;
    for (size_t i = 0; i < n; i++) {
        double old_value = (double)dsv4_e4m3_decode(s[i]) * g_small; /* exact: 4 x 24 bits */
        /* One rounding of the exact quotient, then e4m3: no intermediate float step. */
        uint8_t code = dsv4_e4m3_encode_f64(old_value / g);
        double new_value = (double)dsv4_e4m3_decode(code) * g;
        if (new_value != old_value) (*changed)++;
        s[i] = code;
    }
    *g1 = *g3 = (float)g;
    return DSV4_OK;
}
