/* Block-scaled formats (src/format/quant.h). Expected values come from the layout
 * formulas written out again here, from hand computation, or from the independent NumPy
 * quantizer tests/py/nvfp4_oracle.py; never from running dsv4 code. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "format/fp.h"
#include "format/quant.h"
#include "test.h"

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* e2m1 and e4m3 from their bit layouts (same formulas as the spec, not the codecs). */
static double e2m1_value(unsigned c) {
    unsigned e = (c >> 1) & 3, m = c & 1;
    double mag = e == 0 ? m / 2.0 : ldexp(1.0 + m / 2.0, (int)e - 1);
    return (c & 8) ? -mag : mag;
}

static double e4m3_value(unsigned c) {
    unsigned e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    double mag = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, (int)e - 7);
    return (c & 0x80) ? -mag : mag;
}

/* element i of a packed FP4 row: element 2k in the low nibble of byte k */
static unsigned fp4_at(const uint8_t *q, int64_t i) { return (q[i / 2] >> (4 * (i % 2))) & 0xf; }

static void *xmalloc(size_t n) { return calloc(n ? n : 1, 1); }

/* ================= NVFP4 weights ================= */

TEST(nvfp4_dequantize_follows_the_layout) {
    /* by hand: byte 0x72 = low nibble 2 (1.0) then high nibble 7 (6.0); scale 0x38 = 1.0,
     * second block scale 0x4a = 2^(9-7) * 1.25 = 5; global 0.5 */
    uint8_t q[16] = {0x72, 0, 0, 0, 0, 0, 0, 0, 0xf9, 0, 0, 0, 0, 0, 0, 0};
    uint8_t s[2] = {0x38, 0x4a};
    float out[32];
    dsv4_nvfp4_dequantize(q, s, 0.5f, 1, 32, out);
    CHECK(out[0] == 0.5f && out[1] == 3.0f && out[2] == 0.0f);
    CHECK(out[16] == -1.25f && out[17] == -15.0f); /* 0xf9: low 9 = -0.5, high f = -6; x5 x0.5 */

    uint64_t rng = 11;
    const int64_t rows = 37, cols = 96;
    uint8_t *qq = xmalloc(rows * cols / 2), *ss = xmalloc(rows * cols / 16);
    float *o = xmalloc(rows * cols * sizeof(float));
    for (int64_t i = 0; i < rows * cols / 2; i++) qq[i] = (uint8_t)test_rand_u64(&rng);
    for (int64_t i = 0; i < rows * cols / 16; i++) ss[i] = (uint8_t)(test_rand_u64(&rng) % 0x7f);
    const float g = 0x1.3p-7f;
    dsv4_nvfp4_dequantize(qq, ss, g, rows, cols, o);
    int bad = -1;
    for (int64_t r = 0; r < rows && bad < 0; r++)
        for (int64_t c = 0; c < cols; c++) {
            /* e2m1 * e4m3 * global is exact in double, so one rounding to float */
            float want = (float)(e2m1_value(fp4_at(qq, r * cols + c)) * e4m3_value(ss[r * 6 + c / 16]) * g);
            if (bits_of(want) != bits_of(o[r * cols + c])) { bad = (int)(r * cols + c); break; }
        }
    free(qq), free(ss), free(o);
    CHECK_MSG(bad < 0, "element %d differs from the layout formula", bad);
}

/* The quantization error bound, derived:
 *   d = float(s) * global, y = x / d. e2m1 round-to-nearest with saturation gives
 *   |q - y| <= h(|y|) + max(0, |y| - 6), h = half the grid step where y lies
 *   (0.25 below 2, 0.5 below 4, 1 up to 6). In x units multiply by d.
 *   If s is an e4m3 normal (>= 2^-6) its relative rounding error is <= 2^-4, so the block
 *   amax lands at |y| <= 6 * (1 + 2^-4) = 6.375 and the overshoot 0.375 is below the top
 *   half step: the error is at most h(|y|) * d, half an e2m1 step at that block scale.
 *   A subnormal s (tiny blocks far below the tensor amax) can round down by up to half
 *   a 2^-9 quantum, so there the saturation term is real; a non-zero block whose s
 *   rounds to 0 has amax <= 2^-10 * 6 * global and encodes as zeros.
 * fp32 roundings of d, y and the dequantized product add a few ulps. */
static double half_step(double ay) { return ay <= 2 ? 0.25 : ay <= 4 ? 0.5 : 1.0; }

static int check_nvfp4_error(const float *x, int64_t rows, int64_t cols, const char *name) {
    float g = dsv4_nvfp4_global_scale(x, (size_t)(rows * cols));
    if (g == 0.0f) g = 1.0f;
    uint8_t *q = xmalloc(rows * cols / 2), *s = xmalloc(rows * cols / 16);
    float *deq = xmalloc(rows * cols * sizeof(float));
    int ok = dsv4_nvfp4_quantize(x, rows, cols, g, q, s, name) == DSV4_OK;
    if (!ok) test_fail_at(__FILE__, __LINE__, "%s: quantize failed: %s", name, dsv4_last_error());
    if (ok) dsv4_nvfp4_dequantize(q, s, g, rows, cols, deq);
    for (int64_t i = 0; ok && i < rows * cols; i++) {
        int64_t b = i / 16;
        double sf = e4m3_value(s[b]), d = sf * g, xi = x[i];
        double err = fabs((double)deq[i] - xi);
        double slack = 4 * 0x1p-24 * (fabs(xi) + fabs((double)deq[i])) + FLT_TRUE_MIN;
        if (!isfinite(deq[i])) {
            test_fail_at(__FILE__, __LINE__, "%s: element %lld dequantizes to %g", name, (long long)i, deq[i]);
            ok = 0;
        } else if (sf == 0.0) {
            double limit = 0x1p-10 * 6 * (double)g * (1 + 0x1p-20);
            if (fabs(xi) > limit || (fp4_at(q, i) & 7) != 0) {
                test_fail_at(__FILE__, __LINE__, "%s: element %lld = %g in an underflowed block (limit %g, code %u)",
                             name, (long long)i, xi, limit, fp4_at(q, i));
                ok = 0;
            }
        } else {
            double ay = fabs(xi) / d;
            int normal_scale = sf >= 0x1p-6;
            double bound = d * (half_step(ay) + (normal_scale ? 0.0 : fmax(0.0, ay - 6))) + slack;
            if (normal_scale && ay > 6.375 * (1 + 0x1p-20)) {
                test_fail_at(__FILE__, __LINE__, "%s: element %lld at %g block scales, beyond 6.375", name,
                             (long long)i, ay);
                ok = 0;
            } else if (err > bound) {
                test_fail_at(__FILE__, __LINE__, "%s: element %lld: x=%a dequant=%a error %g > bound %g (y=%g)",
                             name, (long long)i, xi, deq[i], err, bound, ay);
                ok = 0;
            }
        }
    }
    free(q), free(s), free(deq);
    return ok;
}

TEST(nvfp4_quantize_error_is_within_half_an_e2m1_step) {
    uint64_t rng = 1;
    const int64_t rows = 48, cols = 256;
    float *x = xmalloc(rows * cols * sizeof(float));

    for (int64_t i = 0; i < rows * cols; i++) x[i] = test_rand_normal(&rng);
    if (!check_nvfp4_error(x, rows, cols, "normal")) goto done;

    /* zero blocks and exact zeros inside blocks */
    for (int64_t i = 0; i < rows * cols; i++)
        if ((i / 16) % 5 == 0 || i % 7 == 0) x[i] = 0.0f;
    if (!check_nvfp4_error(x, rows, cols, "with zero blocks")) goto done;

    /* huge dynamic range: every block at its own magnitude 2^-40 .. 2^40, so block scales
     * span normal, subnormal and underflowed e4m3 */
    for (int64_t i = 0; i < rows * cols; i++) {
        int e = (int)((i / 16) * 7919 % 81) - 40;
        x[i] = ldexpf(test_rand_normal(&rng), e);
    }
    if (!check_nvfp4_error(x, rows, cols, "dynamic range")) goto done;

    /* max magnitude: every element +-A, so every block saturates the scale at 448 */
    const float amax[3] = {1.0f, 3e38f, FLT_MAX};
    for (int k = 0; k < 3; k++) {
        for (int64_t i = 0; i < rows * cols; i++) x[i] = (test_rand_u64(&rng) & 1) ? amax[k] : -amax[k];
        if (!check_nvfp4_error(x, rows, cols, "max magnitude")) goto done;
        uint8_t q[8], s[1];
        CHECK_OK(dsv4_nvfp4_quantize(x, 1, 16, dsv4_nvfp4_global_scale(x, 16), q, s, "max"));
        CHECK_MSG(s[0] == 0x7e, "A=%g: scale 0x%02x, expected 448", amax[k], s[0]);
        for (int i = 0; i < 16; i++) CHECK(fp4_at(q, i) == (x[i] < 0 ? 0xfu : 0x7u));
    }
done:
    free(x);
}

TEST(nvfp4_quantize_zero_blocks_and_zero_tensor) {
    float x[32] = {0};
    x[3] = -0.0f;
    x[16] = 1.5f;
    x[17] = -0.0f;
    CHECK(dsv4_nvfp4_global_scale(x, 16) == 0.0f); /* first block only: all zero */
    float g = dsv4_nvfp4_global_scale(x, 32);
    CHECK(g == 1.5f / 2688.0f);
    uint8_t q[16], s[2];
    CHECK_OK(dsv4_nvfp4_quantize(x, 1, 32, g, q, s, "zeros"));
    CHECK_MSG(s[0] == 0x38, "all-zero block stores scale 0x%02x, ModelOpt stores 1.0 (0x38)", s[0]);
    CHECK(s[1] == 0x7e);
    for (int i = 0; i < 16; i++) CHECK(fp4_at(q, i) == (i == 3 ? 0x8u : 0x0u)); /* -0 keeps its sign */
    CHECK(fp4_at(q, 16) == 0x7 && fp4_at(q, 17) == 0x8);

    /* a non-zero block whose scale underflows e4m3: s = 0 and all codes zero */
    float y[32] = {0};
    y[0] = 2688.0f; /* global 1, first block scale 448 */
    y[16] = 1e-4f;  /* 1e-4 / 6 < 2^-10: scale rounds to 0 */
    y[17] = -1e-4f;
    CHECK_OK(dsv4_nvfp4_quantize(y, 1, 32, dsv4_nvfp4_global_scale(y, 32), q, s, "underflow"));
    CHECK(s[0] == 0x7e && s[1] == 0x00);
    for (int i = 16; i < 32; i++) CHECK((fp4_at(q, i) & 7) == 0);
}

TEST(nvfp4_quantize_is_lossless_on_representable_data) {
    /* x = e2m1 * e4m3 * 2^k with each block's amax at 6 * scale and one block at scale 448,
     * so the quantizer must recover the power-of-two global and every code exactly. */
    uint64_t rng = 3;
    const int64_t rows = 20, cols = 160, nb = rows * cols / 16;
    uint8_t *q0 = xmalloc(rows * cols / 2), *s0 = xmalloc(nb), *q1 = xmalloc(rows * cols / 2), *s1 = xmalloc(nb);
    float *x = xmalloc(rows * cols * sizeof(float));
    const int exps[3] = {-20, 0, 30};
    for (int t = 0; t < 3; t++) {
        const float g0 = ldexpf(1.0f, exps[t]);
        for (int64_t b = 0; b < nb; b++) {
            /* random non-zero, non-NaN scale including subnormals; block 5 holds 448 */
            s0[b] = b == 5 ? 0x7e : (uint8_t)(1 + test_rand_u64(&rng) % 0x7e);
            for (int i = 0; i < 16; i++) {
                int64_t e = b * 16 + i;
                unsigned c = (unsigned)(test_rand_u64(&rng) & 0xf);
                if (i == (int)(b % 16)) c = (test_rand_u64(&rng) & 1) ? 0x7 : 0xf; /* amax = 6 * s */
                q0[e / 2] = (uint8_t)(e % 2 ? (q0[e / 2] & 0x0f) | c << 4 : (q0[e / 2] & 0xf0) | c);
                x[e] = (float)(e2m1_value(c) * e4m3_value(s0[b]) * g0);
            }
        }
        /* one all-zero block: ModelOpt stores scale 1.0 for it */
        s0[nb - 1] = 0x38;
        for (int i = 0; i < 16; i++) {
            int64_t e = (nb - 1) * 16 + i;
            q0[e / 2] = (uint8_t)(e % 2 ? q0[e / 2] & 0x0f : q0[e / 2] & 0xf0);
            x[e] = 0.0f;
        }
        float g = dsv4_nvfp4_global_scale(x, (size_t)(rows * cols));
        CHECK_MSG(g == g0, "global %a, expected %a", g, g0);
        memset(q1, 0xaa, rows * cols / 2);
        memset(s1, 0xaa, nb);
        CHECK_OK(dsv4_nvfp4_quantize(x, rows, cols, g, q1, s1, "representable"));
        for (int64_t b = 0; b < nb; b++)
            CHECK_MSG(s1[b] == s0[b], "2^%d: block %lld scale 0x%02x, expected 0x%02x", exps[t], (long long)b,
                      s1[b], s0[b]);
        for (int64_t i = 0; i < rows * cols / 2; i++)
            CHECK_MSG(q1[i] == q0[i], "2^%d: byte %lld is 0x%02x, expected 0x%02x", exps[t], (long long)i,
                      q1[i], q0[i]);
    }
    free(q0), free(s0), free(q1), free(s1), free(x);
}

TEST(nvfp4_quantize_rejects_bad_input) {
    float x[64] = {0};
    uint8_t q[32], s[4];
    x[40] = NAN;
    CHECK_STATUS(dsv4_nvfp4_quantize(x, 2, 32, 1.0f, q, s, "blk.7.w1"), DSV4_ERR_NONFINITE);
    CHECK(strstr(dsv4_last_error(), "blk.7.w1") && strstr(dsv4_last_error(), "row 1"));
    x[40] = -INFINITY;
    CHECK_STATUS(dsv4_nvfp4_quantize(x, 2, 32, 1.0f, q, s, "w"), DSV4_ERR_NONFINITE);
    x[40] = 0.0f;
    CHECK_STATUS(dsv4_nvfp4_quantize(x, 2, 24, 1.0f, q, s, "w"), DSV4_ERR_SHAPE);
    CHECK_STATUS(dsv4_nvfp4_quantize(x, 2, 32, 0.0f, q, s, "w"), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_nvfp4_quantize(x, 2, 32, INFINITY, q, s, "w"), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_nvfp4_quantize_act(x, 2, 32, 0.0f, q, s, "a"), DSV4_ERR_INVALID_ARGUMENT);
    x[1] = INFINITY;
    CHECK_STATUS(dsv4_nvfp4_quantize_act(x, 2, 32, 1.0f, q, s, "act"), DSV4_ERR_NONFINITE);
    CHECK(strstr(dsv4_last_error(), "act"));
    CHECK(isnan(dsv4_nvfp4_global_scale((const float[]){1.0f, NAN}, 2)));
}

/* Runs the independent NumPy quantizer and compares global, q and scales bit for bit. */
TEST(nvfp4_quantize_matches_numpy_modelopt_oracle) {
    if (!test_python_has("numpy,ml_dtypes")) SKIP("python3 lacks ml_dtypes: pip install ml_dtypes");
    CHECK_MSG(access("tests/py/nvfp4_oracle.py", R_OK) == 0, "run the tests from the repository root");
    uint64_t rng = 99;
    const int64_t rows = 96, cols = 512, nq = rows * cols / 2, ns = rows * cols / 16;
    float *x = xmalloc(rows * cols * sizeof(float));
    for (int64_t r = 0; r < rows; r++) {
        int e = (int)(test_rand_u64(&rng) % 41) - 20; /* rows at different magnitudes */
        for (int64_t c = 0; c < cols; c++) x[r * cols + c] = ldexpf(test_rand_normal(&rng), e);
    }
    for (int64_t i = 0; i < rows * cols; i++) {
        uint64_t u = test_rand_u64(&rng) % 1000;
        if (u < 3) x[i] = -0.0f;
        else if (u < 6) x[i] = 0.0f;
        else if (u < 8) x[i] *= 64.0f; /* outliers */
    }
    for (int i = 0; i < 16; i++) x[5 * cols + 32 + i] = 0.0f;                     /* zero block */
    for (int i = 0; i < 16; i++) x[7 * cols + 64 + i] = ldexpf((float)(i - 8), -40); /* scale underflow */
    x[0] = 2688.0f * 0x1p20f; /* the tensor amax: global exactly 2^20 */
    /* a block of exact e2m1 midpoints: with scale 1.5 and global 2^20 every x / (s * g) is
     * exactly 0.25, 0.75, ..., 5, so the tie rule is compared too */
    static const float mids[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    for (int i = 0; i < 16; i++)
        x[9 * cols + 48 + i] = (i == 0 ? 6.0f : (i & 1 ? -1 : 1) * mids[i % 7]) * 1.5f * 0x1p20f;

    char src[700], dst[700];
    const char *dir = test_tmpdir();
    snprintf(src, sizeof src, "%s/w.f32", dir);
    snprintf(dst, sizeof dst, "%s/w.nvfp4", dir);
    int rc = test_write_file(src, x, (size_t)(rows * cols) * sizeof(float));
    if (rc == 0)
        rc = test_system("python3 tests/py/nvfp4_oracle.py %lld %lld '%s' '%s'", (long long)rows,
                         (long long)cols, src, dst);
    size_t len = 0;
    uint8_t *want = rc == 0 ? (uint8_t *)test_read_file(dst, &len) : NULL;
    uint8_t *q = xmalloc(nq), *s = xmalloc(ns);
    float g = dsv4_nvfp4_global_scale(x, (size_t)(rows * cols));
    dsv4_status st = dsv4_nvfp4_quantize(x, rows, cols, g, q, s, "oracle");
    int64_t bad_q = -1, bad_s = -1;
    float want_g = 0.0f;
    if (want && len == (size_t)(4 + nq + ns)) {
        memcpy(&want_g, want, 4);
        for (int64_t i = 0; i < nq && bad_q < 0; i++)
            if (q[i] != want[4 + i]) bad_q = i;
        for (int64_t i = 0; i < ns && bad_s < 0; i++)
            if (s[i] != want[4 + nq + i]) bad_s = i;
    }
    uint8_t got_q = bad_q >= 0 ? q[bad_q] : 0, exp_q = bad_q >= 0 ? want[4 + bad_q] : 0;
    uint8_t got_s = bad_s >= 0 ? s[bad_s] : 0, exp_s = bad_s >= 0 ? want[4 + nq + bad_s] : 0;
    float xq = bad_q >= 0 ? x[2 * bad_q] : 0.0f, xq1 = bad_q >= 0 ? x[2 * bad_q + 1] : 0.0f;
    free(x), free(q), free(s), free(want);
    CHECK_MSG(rc == 0, "nvfp4_oracle.py failed (exit %d)", rc);
    CHECK_MSG(len == (size_t)(4 + nq + ns), "oracle wrote %zu bytes", len);
    CHECK_OK(st);
    CHECK_MSG(bits_of(g) == bits_of(want_g), "global %a, oracle %a", g, want_g);
    CHECK_MSG(bad_s < 0, "scale %lld: ours 0x%02x, oracle 0x%02x", (long long)bad_s, got_s, exp_s);
    CHECK_MSG(bad_q < 0, "q byte %lld (inputs %a, %a): ours 0x%02x, oracle 0x%02x", (long long)bad_q, xq, xq1,
              got_q, exp_q);
}

/* ================= NVFP4 activations ================= */

TEST(nvfp4_act_quantize_hand_computed_cases) {
    float x[64] = {0};
    uint8_t q[32], s[4];
    /* block 0, input_scale 1/64 -> G = 64: sf = e4m3(64 * 2.9 / 6 = 30.93) = 30 (0x5f);
     * codes: 0.3*64/30 = 0.64 -> 0.5 (1), -1.1*64/30 = -2.35 -> -2 (0xc), 2.9*64/30 = 6.19 -> 6 (7).
     * With G and 1/G swapped the scale would be e4m3(2.9/64/6) = 2^-7 (0x04). */
    x[0] = 0.3f, x[1] = -1.1f, x[2] = 2.9f;
    /* block 1: 1e4 with G = 64: G * amax / 6 = 106667 saturates to 448 (0x7e); 1e4*64/448 -> 6 */
    x[16] = 1e4f, x[17] = 7.0f; /* 7*64/448 = 1.0 -> code 2 */
    /* block 2 all zero: sf 0, codes 0 */
    /* block 3: amax 0.75 -> sf = e4m3(64 * 0.75 / 6 = 8) (0x50); 0.75*64/8 = 6 (7), 0.375*64/8 = 3 (5),
     * 0.0234375*64/8 = 0.1875 -> 0 */
    x[48] = 0.75f, x[49] = 0.375f, x[50] = 0.0234375f, x[51] = -0.1171875f; /* -0.9375 -> -1 (0xa) */
    CHECK_OK(dsv4_nvfp4_quantize_act(x, 1, 64, 1.0f / 64.0f, q, s, "act"));
    CHECK_MSG(s[0] == 0x5f, "block 0 scale 0x%02x, expected 0x5f (30)", s[0]);
    CHECK(fp4_at(q, 0) == 0x1 && fp4_at(q, 1) == 0xc && fp4_at(q, 2) == 0x7 && fp4_at(q, 3) == 0x0);
    CHECK_MSG(s[1] == 0x7e, "block 1 scale 0x%02x, expected saturation 0x7e", s[1]);
    CHECK(fp4_at(q, 16) == 0x7 && fp4_at(q, 17) == 0x2);
    CHECK(s[2] == 0x00);
    for (int i = 32; i < 48; i++) CHECK(fp4_at(q, i) == 0);
    CHECK_MSG(s[3] == 0x50, "block 3 scale 0x%02x, expected 0x50 (8)", s[3]);
    CHECK(fp4_at(q, 48) == 0x7 && fp4_at(q, 49) == 0x5 && fp4_at(q, 50) == 0x0 && fp4_at(q, 51) == 0xa);

    /* input_scale 2 -> G = 0.5: amax 12 -> sf = e4m3(1.0) = 0x38; x*0.5 = 6, -1.5, 0.5, 0.25 (tie -> 0).
     * A swapped G = 2 would give sf = 4 (0x48) with the same codes: the scale tells them apart. */
    float y[16] = {12.0f, -3.0f, 1.0f, 0.5f};
    CHECK_OK(dsv4_nvfp4_quantize_act(y, 1, 16, 2.0f, q, s, "act"));
    CHECK_MSG(s[0] == 0x38, "scale 0x%02x, expected 0x38 (G = 1/input_scale)", s[0]);
    CHECK(fp4_at(q, 0) == 0x7 && fp4_at(q, 1) == 0xb && fp4_at(q, 2) == 0x1 && fp4_at(q, 3) == 0x0);
}

TEST(nvfp4_act_quantize_dequantizes_close_and_dynamic_mode_agrees) {
    uint64_t rng = 5;
    const int64_t rows = 8, cols = 128;
    float x[8 * 128], in_scales[8];
    uint8_t q[8 * 64], s[8 * 8], q2[64], s2[8];
    for (int i = 0; i < rows * cols; i++) x[i] = test_rand_normal(&rng) * (float)(1 + i / cols);
    for (int i = 0; i < cols; i++) x[3 * cols + i] = 0.0f; /* an all-zero row */
    CHECK_OK(dsv4_nvfp4_quantize_act_dynamic(x, rows, cols, q, s, in_scales, "act"));
    for (int64_t r = 0; r < rows; r++) {
        float amax = 0;
        for (int64_t c = 0; c < cols; c++) amax = fmaxf(amax, fabsf(x[r * cols + c]));
        float want_scale = amax == 0 ? 1.0f : amax / 2688.0f;
        CHECK_MSG(in_scales[r] == want_scale, "row %lld: input_scale %a, expected %a", (long long)r,
                  in_scales[r], want_scale);
        CHECK_OK(dsv4_nvfp4_quantize_act(x + r * cols, 1, cols, in_scales[r], q2, s2, "act row"));
        CHECK(memcmp(q2, q + r * cols / 2, cols / 2) == 0 && memcmp(s2, s + r * cols / 16, cols / 16) == 0);
        /* value = e2m1 * sf * input_scale: within half an e2m1 step of the block scale
         * (the scale is a normal e4m3 for these blocks, see the weight-error derivation) */
        for (int64_t c = 0; c < cols; c++) {
            double sf = e4m3_value(s[r * cols / 16 + c / 16]), d = sf * in_scales[r];
            double v = e2m1_value(fp4_at(q, r * cols + c)) * d, xi = x[r * cols + c];
            if (amax == 0) { CHECK(v == 0); continue; }
            CHECK_MSG(sf >= 0x1p-6, "row %lld block %lld: subnormal scale", (long long)r, (long long)c / 16);
            /* G = 1/input_scale and x*G/sf are fp32-rounded: a few ulps of slack */
            double bound = half_step(fabs(xi) / d) * d + 8 * 0x1p-24 * fabs(xi) + 1e-30;
            CHECK_MSG(fabs(v - xi) <= bound, "row %lld col %lld: x=%g dequant=%g bound %g", (long long)r,
                      (long long)c, xi, v, bound);
        }
    }
}

/* ================= MXFP4 ================= */

static void mxfp4_reference(const uint8_t *q, const uint8_t *e8, int64_t rows, int64_t cols, float *out) {
    for (int64_t i = 0; i < rows * cols; i++)
        out[i] = (float)(e2m1_value(fp4_at(q, i)) * ldexp(1.0, (int)e8[i / 32] - 127));
}

TEST(mxfp4_dequantize_values_and_nan_scale) {
    uint8_t q[32] = {0x31}, e8[2] = {130, 0}; /* 2^3; second block 2^-127 */
    q[16] = 0x01;                             /* element 32 = 0.5 * 2^-127 = 2^-128, a float subnormal */
    float out[64];
    CHECK_OK(dsv4_mxfp4_dequantize(q, e8, 1, 64, out, "mx"));
    CHECK(out[0] == 4.0f && out[1] == 12.0f && out[2] == 0.0f);
    CHECK(out[32] == 0x1p-128f);

    uint64_t rng = 8;
    uint8_t qq[4 * 64], ee[4 * 4];
    float o[4 * 128], ref[4 * 128];
    for (int i = 0; i < 4 * 64; i++) qq[i] = (uint8_t)test_rand_u64(&rng);
    for (int i = 0; i < 16; i++) ee[i] = (uint8_t)(test_rand_u64(&rng) % 255);
    ee[0] = 0, ee[1] = 254;
    CHECK_OK(dsv4_mxfp4_dequantize(qq, ee, 4, 128, o, "mx"));
    mxfp4_reference(qq, ee, 4, 128, ref);
    for (int i = 0; i < 4 * 128; i++) CHECK_MSG(bits_of(o[i]) == bits_of(ref[i]), "element %d", i);

    ee[6] = 0xff;
    CHECK_STATUS(dsv4_mxfp4_dequantize(qq, ee, 4, 128, o, "layers.3.ffn.experts.1.w2"), DSV4_ERR_NONFINITE);
    CHECK(strstr(dsv4_last_error(), "layers.3.ffn.experts.1.w2") && strstr(dsv4_last_error(), "row 1") &&
          strstr(dsv4_last_error(), "block 2"));
    CHECK_STATUS(dsv4_mxfp4_dequantize(qq, ee, 4, 112, o, "mx"), DSV4_ERR_SHAPE);
}

/* Converts, then checks: payload unchanged, global a power of two, and the NVFP4 dequant
 * equal to the MXFP4 dequant bit for bit. */
static int check_mx_to_nv(const uint8_t *q, const uint8_t *e8, int64_t rows, int64_t cols, int want_gexp) {
    int64_t n = rows * cols;
    uint8_t *q_out = xmalloc(n / 2), *s = xmalloc(n / 16);
    float *a = xmalloc(n * sizeof(float)), *b = xmalloc(n * sizeof(float)), g = -1.0f;
    int ok = 1;
    dsv4_status st = dsv4_mxfp4_to_nvfp4(q, e8, rows, cols, q_out, s, &g, "experts");
    if (st != DSV4_OK) {
        test_fail_at(__FILE__, __LINE__, "conversion failed: %s", dsv4_last_error());
        ok = 0;
    } else if (g != ldexpf(1.0f, want_gexp) || memcmp(q, q_out, n / 2) != 0) {
        test_fail_at(__FILE__, __LINE__, "global %a (expected 2^%d) or payload changed", g, want_gexp);
        ok = 0;
    } else {
        mxfp4_reference(q, e8, rows, cols, a);
        dsv4_nvfp4_dequantize(q_out, s, g, rows, cols, b);
        for (int64_t i = 0; i < n && ok; i++)
            if (bits_of(a[i]) != bits_of(b[i])) {
                test_fail_at(__FILE__, __LINE__, "element %lld: MXFP4 %a, NVFP4 %a (e8m0 %u, e4m3 0x%02x)",
                             (long long)i, a[i], b[i], e8[i / 32], s[i / 16]);
                ok = 0;
            }
        for (int64_t i = 0; i < n / 32 && ok; i++) ok = s[2 * i] == s[2 * i + 1];
        if (!ok) test_fail_at(__FILE__, __LINE__, "the two 16-blocks of a 32-block got different scales");
    }
    free(q_out), free(s), free(a), free(b);
    return ok;
}

TEST(mxfp4_to_nvfp4_is_exact) {
    uint64_t rng = 21;
    const int64_t rows = 24, cols = 192, nb = rows * cols / 32;
    uint8_t *q = xmalloc(rows * cols / 2), *e8 = xmalloc(nb);
    const int lows[5] = {0, 40, 110, 200, 237}; /* windows of 18 codes, the widest exact span */
    for (int w = 0; w < 5; w++) {
        for (int64_t i = 0; i < rows * cols / 2; i++) q[i] = (uint8_t)test_rand_u64(&rng);
        for (int64_t b = 0; b < nb; b++) {
            e8[b] = (uint8_t)(lows[w] + test_rand_u64(&rng) % 18);
            q[b * 16] |= 0x02; /* every block non-zero */
        }
        e8[3] = (uint8_t)lows[w], e8[4] = (uint8_t)(lows[w] + 17);
        /* all-zero payload blocks (+0 and -0 codes) with scales far outside: no constraint */
        for (int k = 0; k < 2; k++) {
            int64_t b = 10 + k;
            for (int i = 0; i < 16; i++) q[b * 16 + i] = k ? 0x88 : 0x08;
            e8[b] = k ? 254 : 0;
        }
        if (!check_mx_to_nv(q, e8, rows, cols, lows[w] + 17 - 127 - 8)) goto done;
    }
    /* all-zero tensor: global 1 */
    memset(q, 0, rows * cols / 2);
    if (!check_mx_to_nv(q, e8, rows, cols, 0)) goto done;
    /* in place */
    {
        uint8_t qq[16] = {0x21}, ee[1] = {127}, s[2];
        float g;
        CHECK_OK(dsv4_mxfp4_to_nvfp4(qq, ee, 1, 32, qq, s, &g, "inplace"));
        CHECK(qq[0] == 0x21 && g == 1.0f / 256.0f && s[0] == 0x78 && s[1] == 0x78); /* 256 = 0x78 */
    }
done:
    free(q), free(e8);
}

TEST(mxfp4_to_nvfp4_reports_unrepresentable_and_nan) {
    uint8_t q[64], e8[4] = {100, 110, 118, 105}, s[8];
    float g;
    memset(q, 0x11, sizeof q);
    CHECK_STATUS(dsv4_mxfp4_to_nvfp4(q, e8, 2, 64, q, s, &g, "layers.9.ffn.experts.4.w1"),
                 DSV4_ERR_NOT_REPRESENTABLE);
    const char *msg = dsv4_last_error();
    CHECK_MSG(strstr(msg, "layers.9.ffn.experts.4.w1") && strstr(msg, "2^-27") && strstr(msg, "2^-9"),
              "message: %s", msg);
    e8[2] = 117; /* span 17: exact */
    CHECK_OK(dsv4_mxfp4_to_nvfp4(q, e8, 2, 64, q, s, &g, "w1"));
    CHECK(g == ldexpf(1.0f, 117 - 127 - 8));
    e8[1] = 0xff;
    CHECK_STATUS(dsv4_mxfp4_to_nvfp4(q, e8, 2, 64, q, s, &g, "w1"), DSV4_ERR_NONFINITE);
    CHECK(strstr(dsv4_last_error(), "w1") && strstr(dsv4_last_error(), "row 0") &&
          strstr(dsv4_last_error(), "block 1"));
    memset(q, 0, sizeof q); /* a NaN scale is an error even when its payload is zero */
    CHECK_STATUS(dsv4_mxfp4_to_nvfp4(q, e8, 2, 64, q, s, &g, "w1"), DSV4_ERR_NONFINITE);
}

/* ================= FP8 block-128 ================= */

TEST(fp8_block128_dequantize_ragged_both_scale_kinds) {
    uint64_t rng = 31;
    const int64_t shapes[3][2] = {{200, 300}, {128, 129}, {1, 5}};
    for (int t = 0; t < 3; t++) {
        const int64_t rows = shapes[t][0], cols = shapes[t][1];
        const int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
        uint8_t *w = xmalloc(rows * cols), *e8 = xmalloc(sr * sc);
        float *f32 = xmalloc(sr * sc * sizeof(float)), *out = xmalloc(rows * cols * sizeof(float));
        for (int64_t i = 0; i < rows * cols; i++) {
            w[i] = (uint8_t)test_rand_u64(&rng);
            if ((w[i] & 0x7f) == 0x7f) w[i] = 0x7e;
        }
        for (int64_t i = 0; i < sr * sc; i++) {
            e8[i] = (uint8_t)(100 + test_rand_u64(&rng) % 40);
            f32[i] = test_rand_uniform(&rng) * 0.01f + 1e-4f;
        }
        CHECK_OK(dsv4_fp8_block128_dequantize(w, rows, cols, e8, DSV4_SCALE_UE8M0, out, "wq_a"));
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float want = (float)(e4m3_value(w[r * cols + c]) * ldexp(1.0, e8[(r / 128) * sc + c / 128] - 127));
                CHECK_MSG(bits_of(out[r * cols + c]) == bits_of(want), "ue8m0 [%lldx%lld] (%lld,%lld): %a vs %a",
                          (long long)rows, (long long)cols, (long long)r, (long long)c, out[r * cols + c], want);
            }
        CHECK_OK(dsv4_fp8_block128_dequantize(w, rows, cols, f32, DSV4_SCALE_F32, out, "wq_a"));
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c++) {
                float want = (float)(e4m3_value(w[r * cols + c]) * (double)f32[(r / 128) * sc + c / 128]);
                CHECK_MSG(bits_of(out[r * cols + c]) == bits_of(want), "f32 [%lldx%lld] (%lld,%lld): %a vs %a",
                          (long long)rows, (long long)cols, (long long)r, (long long)c, out[r * cols + c], want);
            }
        if (t == 0) {
            e8[sr * sc - 1] = 0xff;
            CHECK_STATUS(dsv4_fp8_block128_dequantize(w, rows, cols, e8, DSV4_SCALE_UE8M0, out, "wo"),
                         DSV4_ERR_NONFINITE);
            CHECK(strstr(dsv4_last_error(), "wo") && strstr(dsv4_last_error(), "block row 1"));
            f32[0] = NAN;
            CHECK_STATUS(dsv4_fp8_block128_dequantize(w, rows, cols, f32, DSV4_SCALE_F32, out, "wo"),
                         DSV4_ERR_NONFINITE);
            e8[sr * sc - 1] = 127;
            w[150 * cols + 7] = 0xff;
            CHECK_STATUS(dsv4_fp8_block128_dequantize(w, rows, cols, e8, DSV4_SCALE_UE8M0, out, "wkv"),
                         DSV4_ERR_NONFINITE);
            CHECK(strstr(dsv4_last_error(), "wkv") && strstr(dsv4_last_error(), "row 150"));
        }
        free(w), free(e8), free(f32), free(out);
    }
}

TEST(fp8_block128_quantize_power_of_two_scales) {
    uint64_t rng = 41;
    const int64_t rows = 150, cols = 260, sc = 3;
    float *x = xmalloc(rows * cols * sizeof(float)), *deq = xmalloc(rows * cols * sizeof(float));
    uint8_t *w = xmalloc(rows * cols), e8[6];
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            int blk = (int)((r / 128) * sc + c / 128);
            x[r * cols + c] = ldexpf(test_rand_normal(&rng), blk * 9 - 20); /* each block its own range */
        }
    for (int64_t c = 128; c < 256; c++)
        for (int64_t r = 0; r < 128; r++) x[r * cols + c] = 0.0f; /* block (0,1) all zero */
    x[3 * cols + 4] = 448.0f * 0x1p-20f; /* block (0,0) amax exactly 448 * 2^-20: scale 2^-20 */
    CHECK_OK(dsv4_fp8_block128_quantize(x, rows, cols, w, e8, "make-tiny"));
    CHECK(e8[1] == 127); /* zero block: 1.0 */
    for (int b = 0; b < 6; b++) {
        if (b == 1) continue;
        float amax = 0;
        for (int64_t r = (b / sc) * 128; r < rows && r < (b / sc + 1) * 128; r++)
            for (int64_t c = (b % sc) * 128; c < cols && c < (b % sc + 1) * 128; c++)
                amax = fmaxf(amax, fabsf(x[r * cols + c]));
        /* smallest power of two p with p >= amax/448 (amax/448 rounded to float first) */
        float t = amax / 448.0f;
        int e;
        double m = frexp(t, &e); /* t = m * 2^e, m in [0.5, 1) */
        int want = m == 0.5 ? e - 1 : e;
        CHECK_MSG(e8[b] == want + 127, "block %d: scale code %u, expected 2^%d", b, e8[b], want);
    }
    CHECK(e8[0] == 127 - 20);
    CHECK_OK(dsv4_fp8_block128_dequantize(w, rows, cols, e8, DSV4_SCALE_UE8M0, deq, "make-tiny"));
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double scale = ldexp(1.0, e8[(r / 128) * sc + c / 128] - 127), y = fabs(x[r * cols + c]) / scale;
            /* half an e4m3 ulp at y: the subnormal quantum 2^-9 below 2^-6, else 2^(floor(log2 y) - 3) */
            double half_ulp = y < 0x1p-6 ? 0x1p-10 : ldexp(1.0, (int)floor(log2(y)) - 4);
            CHECK_MSG(y <= 448.0, "(%lld,%lld) saturates", (long long)r, (long long)c);
            CHECK_MSG(fabs(deq[r * cols + c] - x[r * cols + c]) <= half_ulp * scale, "(%lld,%lld): %g vs %g",
                      (long long)r, (long long)c, deq[r * cols + c], x[r * cols + c]);
        }
    CHECK(w[3 * cols + 4] == 0x7e);
    x[7] = NAN;
    CHECK_STATUS(dsv4_fp8_block128_quantize(x, rows, cols, w, e8, "make-tiny"), DSV4_ERR_NONFINITE);
    free(x), free(deq), free(w);
}

/* ================= 128x4 swizzle ================= */

TEST(scale_swizzle_positions_padding_and_round_trip) {
    const int64_t rows = 300, kb = 13; /* pads to 384 x 16, nKT = 4 */
    CHECK(dsv4_swizzled_scale_bytes(rows, kb) == 384 * 16);
    CHECK(dsv4_swizzled_scale_bytes(128, 4) == 512 && dsv4_swizzled_scale_bytes(1, 1) == 512);
    size_t n = dsv4_swizzled_scale_bytes(rows, kb);
    uint8_t *lin = xmalloc(rows * kb), *sw = xmalloc(n), *back = xmalloc(rows * kb);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < kb; c++) lin[r * kb + c] = (uint8_t)(1 + (r * 31 + c * 7) % 255); /* never 0 */
    memset(sw, 0xee, n);
    dsv4_scale_swizzle_128x4(lin, rows, kb, sw);
    /* hand-computed byte positions from the layout formula */
    CHECK(sw[0] == lin[0]);                 /* (0,0) */
    CHECK(sw[1] == lin[1]);                 /* (0,1): c%4 */
    CHECK(sw[16] == lin[1 * kb]);           /* (1,0): (r%32)*16 */
    CHECK(sw[4] == lin[32 * kb]);           /* (32,0): ((r%128)/32)*4 */
    CHECK(sw[512] == lin[4]);               /* (0,4): (c/4)*512 */
    CHECK(sw[2048] == lin[128 * kb]);       /* (128,0): (r/128)*nKT*512 */
    CHECK(sw[2593] == lin[130 * kb + 5]);   /* (130,5): 2048 + 512 + 2*16 + 0 + 1 */
    CHECK(sw[4096 + 3 * 512 + 11 * 16 + 1 * 4 + 0] == lin[299 * kb + 12]); /* last element (299,12) */
    /* padding: columns 13..15 of real rows and rows 300..383 are zero; count all */
    size_t nonzero = 0;
    for (size_t i = 0; i < n; i++) nonzero += sw[i] != 0;
    CHECK_MSG(nonzero == (size_t)(rows * kb), "%zu non-zero bytes, expected %lld", nonzero, (long long)(rows * kb));
    CHECK(sw[4096 + 3 * 512 + 11 * 16 + 1 * 4 + 1] == 0); /* (299,13) */
    CHECK(sw[4096 + 0 * 512 + 12 * 16 + 1 * 4 + 0] == 0); /* (300,0) */
    dsv4_scale_unswizzle_128x4(sw, rows, kb, back);
    CHECK(memcmp(lin, back, rows * kb) == 0);
    free(lin), free(sw), free(back);
}

/* ================= gate/up unification ================= */

TEST(nvfp4_unify_global_rerounds_the_smaller_half) {
    /* g1 = 1, g3 = 0.75: w3 scales are multiplied by 0.75 and re-rounded.
     *   1.0   -> 0.75    exact (0x34)                     unchanged
     *   1.125 -> 0.84375 ties 0.8125|0.875 -> 0.875 (0x36) changed
     *   2.0   -> 1.5     exact (0x3c)                     unchanged
     *   2^-9  -> 0.75 * 2^-9 rounds to 2^-9 (0x01)        changed
     *   0     -> 0                                         unchanged
     *   448   -> 336 = 10.5 quanta of 32, ties -> 320 (0x7a) changed
     *   1.25  -> 0.9375 (0x37)                             unchanged */
    uint8_t s1[3] = {0x38, 0x40, 0x01}, s3[7] = {0x38, 0x39, 0x40, 0x01, 0x00, 0x7e, 0x3a};
    const uint8_t want3[7] = {0x34, 0x36, 0x3c, 0x01, 0x00, 0x7a, 0x37};
    float g1 = 1.0f, g3 = 0.75f;
    size_t changed = 99;
    CHECK_OK(dsv4_nvfp4_unify_global(s1, &g1, 3, s3, &g3, 7, &changed, "layers.0.ffn.experts.0"));
    CHECK(g1 == 1.0f && g3 == 1.0f);
    CHECK(s1[0] == 0x38 && s1[1] == 0x40 && s1[2] == 0x01); /* the larger half is untouched */
    for (int i = 0; i < 7; i++) CHECK_MSG(s3[i] == want3[i], "scale %d: 0x%02x, expected 0x%02x", i, s3[i], want3[i]);
    CHECK_MSG(changed == 3, "changed = %zu, expected 3", changed);

    /* the gate half smaller, power-of-two ratio 1/4: exact except an underflow to 0 */
    uint8_t a1[3] = {0x38, 0x5f, 0x01}, a3[2] = {0x38, 0x40};
    g1 = 0.5f, g3 = 2.0f;
    CHECK_OK(dsv4_nvfp4_unify_global(a1, &g1, 3, a3, &g3, 2, &changed, "w13"));
    CHECK(g1 == 2.0f && g3 == 2.0f);
    CHECK(a1[0] == 0x28 && a1[1] == 0x4f && a1[2] == 0x00); /* 0.25, 7.5, 2^-11 -> 0 */
    CHECK(a3[0] == 0x38 && a3[1] == 0x40);
    CHECK_MSG(changed == 1, "changed = %zu, expected 1", changed);

    /* power-of-two ratio in range: nothing changes value */
    uint8_t b1[4] = {0x38, 0x5f, 0x20, 0x7e}, b3[1] = {0x44};
    g1 = 0.25f, g3 = 1.0f;
    CHECK_OK(dsv4_nvfp4_unify_global(b1, &g1, 4, b3, &g3, 1, &changed, "w13"));
    CHECK(b1[0] == 0x28 && b1[1] == 0x4f && b1[2] == 0x10 && b1[3] == 0x6e);
    CHECK_MSG(changed == 0, "changed = %zu, expected 0", changed);

    /* equal globals: a no-op */
    uint8_t c1[1] = {0x39}, c3[1] = {0x3b};
    g1 = g3 = 0.1f;
    CHECK_OK(dsv4_nvfp4_unify_global(c1, &g1, 1, c3, &g3, 1, &changed, "w13"));
    CHECK(c1[0] == 0x39 && c3[0] == 0x3b && changed == 0 && g1 == 0.1f && g3 == 0.1f);

    /* one rounding, not two: 80 * gs / g = 6.2500002 exactly (just above the 6 | 6.5 tie, so
     * 6.5 = 0x4d); rounding the quotient to float first would land on 6.25 and tie to 6 */
    uint8_t d1[1] = {0x6a}, d3[1] = {0x38};
    g1 = 0x1.188fe6p-3f, g3 = 0x1.c0e63cp+0f;
    CHECK_OK(dsv4_nvfp4_unify_global(d1, &g1, 1, d3, &g3, 1, &changed, "w13"));
    CHECK_MSG(d1[0] == 0x4d, "0x%02x, expected 0x4d (6.5)", d1[0]);

    g1 = 0.0f;
    CHECK_STATUS(dsv4_nvfp4_unify_global(c1, &g1, 1, c3, &g3, 1, &changed, "w13"), DSV4_ERR_INVALID_ARGUMENT);
    g1 = 1.0f;
    c3[0] = 0x7f;
    CHECK_STATUS(dsv4_nvfp4_unify_global(c1, &g1, 1, c3, &g3, 1, &changed, "w13"), DSV4_ERR_NONFINITE);
    CHECK(strstr(dsv4_last_error(), "w13"));
}

TEST(nvfp4_unify_global_preserves_dequant_when_count_is_zero) {
    /* random scales and a generic ratio: every block the count calls unchanged must
     * dequantize identically, and the count must equal the number that differ */
    uint64_t rng = 77;
    const int64_t rows = 16, cols = 64, nb = rows * cols / 16;
    uint8_t q[16 * 32], s1[64], s3[64], s3_old[64];
    float x1[16 * 64], x3[16 * 64];
    for (int i = 0; i < rows * cols / 2; i++) q[i] = (uint8_t)test_rand_u64(&rng);
    for (int i = 0; i < nb; i++) {
        s1[i] = (uint8_t)(test_rand_u64(&rng) % 0x7f);
        s3[i] = s3_old[i] = (uint8_t)(test_rand_u64(&rng) % 0x7f);
    }
    float g1 = 0x1.8p-6f, g3 = 0x1.1p-7f, g3_old = g3;
    size_t changed = 0;
    CHECK_OK(dsv4_nvfp4_unify_global(s1, &g1, nb, s3, &g3, nb, &changed, "w13"));
    CHECK(g3 == g1);
    size_t differ = 0;
    for (int b = 0; b < nb; b++) {
        dsv4_nvfp4_dequantize(q + b * 8, s3_old + b, g3_old, 1, 16, x1);
        dsv4_nvfp4_dequantize(q + b * 8, s3 + b, g3, 1, 16, x3);
        /* compare the block scale value itself (s * g), exact in double */
        double before = e4m3_value(s3_old[b]) * g3_old, after = e4m3_value(s3[b]) * g3;
        differ += before != after;
        if (before == after)
            for (int i = 0; i < 16; i++) CHECK(bits_of(x1[i]) == bits_of(x3[i]));
    }
    CHECK_MSG(changed == differ && differ > 0, "changed = %zu, blocks that differ = %zu", changed, differ);
}
