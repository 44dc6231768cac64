/* Scalar codecs (src/format/fp.h): decoders against the bit-layout formulas, encoders
 * against ml_dtypes on >1M inputs (tests/py/fp_oracle.py), and the documented special
 * cases (saturation, NaN, ceil rounding) with explicit expected codes. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "format/fp.h"
#include "test.h"

static float f_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static uint32_t bits_of(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static int same_float(float a, float b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return bits_of(a) == bits_of(b); /* distinguishes -0 from +0 */
}

/* ---- decoders ---- */

/* e2m1 from its layout: bit 3 sign, bits 2..1 exponent (bias 1), bit 0 mantissa. */
static double e2m1_formula(unsigned c) {
    unsigned e = (c >> 1) & 3, m = c & 1;
    double mag = e == 0 ? ldexp(m / 2.0, 0) : ldexp(1.0 + m / 2.0, (int)e - 1);
    return (c & 8) ? -mag : mag;
}

/* e4m3fn from its layout: bit 7 sign, bits 6..3 exponent (bias 7), bits 2..0 mantissa. */
static double e4m3_formula(unsigned c) {
    unsigned e = (c >> 3) & 15, m = c & 7;
    if (e == 15 && m == 7) return NAN;
    double mag = e == 0 ? ldexp(m / 8.0, 1 - 7) : ldexp(1.0 + m / 8.0, (int)e - 7);
    return (c & 0x80) ? -mag : mag;
}

TEST(e2m1_decodes_all_16_codes) {
    static const float known[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    for (unsigned c = 0; c < 16; c++) {
        float got = dsv4_e2m1_decode((uint8_t)c);
        CHECK_MSG(same_float(got, (float)e2m1_formula(c)), "code %u: got %g, formula %g", c, got,
                  e2m1_formula(c));
        float want = (c & 8) ? -known[c & 7] : known[c & 7];
        CHECK_MSG(same_float(got, want), "code %u: got %g, spec table %g", c, got, want);
        CHECK_MSG(dsv4_e2m1_decode((uint8_t)(c | 0xf0)) == got, "code %u: high nibble not ignored", c);
        CHECK_MSG(dsv4_e2m1_encode(got) == c, "code %u does not round-trip", c);
    }
    CHECK(signbit(dsv4_e2m1_decode(8)));
}

TEST(e4m3_decodes_all_256_codes) {
    for (unsigned c = 0; c < 256; c++) {
        float got = dsv4_e4m3_decode((uint8_t)c);
        double want = e4m3_formula(c);
        CHECK_MSG(same_float(got, (float)want), "code 0x%02x: got %a, formula %a", c, got, want);
        if (!isnan(got)) CHECK_MSG(dsv4_e4m3_encode(got) == c, "code 0x%02x does not round-trip", c);
    }
    CHECK(dsv4_e4m3_decode(0x7e) == 448.0f);
    CHECK(dsv4_e4m3_decode(0xfe) == -448.0f);
    CHECK(dsv4_e4m3_decode(0x01) == 0x1p-9f);
    CHECK(dsv4_e4m3_decode(0x08) == 0x1p-6f);
    CHECK(dsv4_e4m3_decode(0x38) == 1.0f);
    CHECK(dsv4_e4m3_decode(0x07) == 7 * 0x1p-9f);
    CHECK(isnan(dsv4_e4m3_decode(0x7f)) && isnan(dsv4_e4m3_decode(0xff)));
    CHECK(dsv4_e4m3_decode(0x80) == 0.0f && signbit(dsv4_e4m3_decode(0x80)));
}

TEST(ue8m0_and_bf16_decode_all_codes) {
    for (unsigned c = 0; c < 255; c++) {
        float got = dsv4_ue8m0_decode((uint8_t)c);
        CHECK_MSG(got == (float)ldexp(1.0, (int)c - 127), "ue8m0 0x%02x: got %a", c, got);
    }
    CHECK(isnan(dsv4_ue8m0_decode(0xff)));
    CHECK(dsv4_ue8m0_decode(0x7f) == 1.0f && dsv4_ue8m0_decode(0) == 0x1p-127f);
    for (uint32_t b = 0; b < 65536; b++) {
        float got = dsv4_bf16_decode((uint16_t)b);
        CHECK_MSG(bits_of(got) == b << 16, "bf16 0x%04x: got bits 0x%08x", b, bits_of(got));
    }
}

/* ---- special cases with explicit expected codes ---- */

TEST(e2m1_encode_ties_saturation_and_specials) {
    struct { float x; uint8_t code; } cases[] = {
        {0.25f, 0x0}, {0.75f, 0x2}, {1.25f, 0x2}, {1.75f, 0x4}, {2.5f, 0x4}, {3.5f, 0x6}, {5.0f, 0x6},
        {-0.25f, 0x8}, {-0.75f, 0xa}, {-1.25f, 0xa}, {-1.75f, 0xc}, {-2.5f, 0xc}, {-3.5f, 0xe},
        {-5.0f, 0xe}, {0.2500001f, 0x1}, {5.0000005f, 0x7}, {4.9999995f, 0x6}, {6.0f, 0x7},
        {7.0f, 0x7}, {1e30f, 0x7}, {-1e30f, 0xf}, {INFINITY, 0x7}, {-INFINITY, 0xf}, {0.0f, 0x0},
        {-0.0f, 0x8}, {-0.1f, 0x8}, {0x1p-149f, 0x0}, {NAN, 0x0}, {-NAN, 0x0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t got = dsv4_e2m1_encode(cases[i].x);
        CHECK_MSG(got == cases[i].code, "e2m1(%a) = 0x%x, expected 0x%x", cases[i].x, got, cases[i].code);
    }
}

TEST(e4m3_encode_saturation_subnormals_and_specials) {
    struct { float x; uint8_t code; } cases[] = {
        {448.0f, 0x7e}, {463.99f, 0x7e}, {464.0f, 0x7e}, {480.0f, 0x7e}, {1e30f, 0x7e},
        {FLT_MAX, 0x7e}, {INFINITY, 0x7e}, {-INFINITY, 0xfe}, {-500.0f, 0xfe}, {NAN, 0x7f},
        {0x1p-9f, 0x01}, {0x1p-10f, 0x00},          /* tie between 0 and 2^-9: even is 0 */
        {0x1.000002p-10f, 0x01}, {0x1.8p-9f, 0x02}, /* tie 1 | 2 quanta -> 2 */
        {0x1.4p-8f, 0x02},                          /* 2.5 quanta -> 2 */
        {0x1.cp-7f, 0x07}, {0x1.ep-7f, 0x08},       /* 7.5 quanta -> 8 = smallest normal 0x08 */
        {0x1.1p-6f, 0x08}, {0x1.3p-6f, 0x0a},       /* normal ties: 1+1/16 -> even m=0; 1+3/16 -> m=2 */
        {0x1.ep+8f, 0x7e}, {240.0f, 0x77}, {248.0f, 0x78}, /* 248 ties 240|256 -> 256 (even) */
        {-0.0f, 0x80}, {0.0f, 0x00}, {0x1p-149f, 0x00}, {-0x1p-149f, 0x80},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t got = dsv4_e4m3_encode(cases[i].x);
        CHECK_MSG(got == cases[i].code, "e4m3(%a) = 0x%02x, expected 0x%02x", cases[i].x, got,
                  cases[i].code);
    }
    CHECK(dsv4_e4m3_encode(f_from_bits(0xffc00000u)) == 0x7f); /* negative NaN: still 0x7f */
    CHECK(dsv4_e4m3_encode_f64(0x1.1p-6) == 0x08 && dsv4_e4m3_encode_f64(0x1.10000001p-6) == 0x09);
}

TEST(ue8m0_encode_rounds_up_and_saturates) {
    struct { float x; uint8_t code; } cases[] = {
        {1.0f, 127}, {1.5f, 128}, {2.0f, 128}, {0.75f, 127}, {1.0000001f, 128}, {0.99999994f, 127},
        {0.0f, 0}, {-0.0f, 0}, {0x1p-127f, 0}, {0x1p-149f, 0}, {0x1.000004p-127f, 1}, {0x1p-126f, 1},
        {0x1.000002p-126f, 2}, {0x1p127f, 254}, {0x1.8p127f, 254}, {FLT_MAX, 254}, {INFINITY, 254},
        {-INFINITY, 255}, {-1.0f, 255}, {-0x1p-149f, 255}, {NAN, 255}, {448.0f, 136}, {3.0f, 129},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint8_t got = dsv4_ue8m0_encode_ceil(cases[i].x);
        CHECK_MSG(got == cases[i].code, "ue8m0_ceil(%a) = %u, expected %u", cases[i].x, got, cases[i].code);
    }
    /* the rule the block scales rely on: x <= decode(encode(x)) < 2x inside the range */
    uint64_t rng = 7;
    for (int i = 0; i < 100000; i++) {
        float x = ldexpf(1.0f + test_rand_uniform(&rng), (int)(test_rand_u64(&rng) % 250) - 125);
        float d = dsv4_ue8m0_decode(dsv4_ue8m0_encode_ceil(x));
        CHECK_MSG(x <= d && d < 2 * x, "x=%a decodes to %a", x, d);
    }
}

TEST(bf16_encode_ties_overflow_and_nan) {
    struct { uint32_t in; uint16_t out; } cases[] = {
        {0x3f800000u, 0x3f80}, {0x3f808000u, 0x3f80}, /* tie, even stays */
        {0x3f818000u, 0x3f82},                        /* tie, odd rounds up */
        {0x3f808001u, 0x3f81}, {0x3f807fffu, 0x3f80},
        {0x7f7fffffu, 0x7f80}, /* FLT_MAX rounds to Inf */
        {0x7f7f7fffu, 0x7f7f}, {0x7f800000u, 0x7f80}, {0xff800000u, 0xff80},
        {0x7fc00000u, 0x7fc0}, {0xffc00000u, 0xffc0},
        {0x7f800001u, 0x7fc0}, /* signalling NaN with a low payload: quiet NaN, not Inf */
        {0xff812345u, 0xffc0}, {0x00008000u, 0x0000}, {0x00018000u, 0x0002}, {0x80000000u, 0x8000},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        uint16_t got = dsv4_bf16_encode(f_from_bits(cases[i].in));
        CHECK_MSG(got == cases[i].out, "bf16(0x%08x) = 0x%04x, expected 0x%04x", cases[i].in, got,
                  cases[i].out);
    }
    CHECK(dsv4_bf16_round(1.00390625f) == 1.0f && dsv4_bf16_round(3.0f) == 3.0f);
}

/* ---- >1M inputs against ml_dtypes ---- */

typedef struct {
    float *v;
    size_t n, cap;
} inputs;

static void push(inputs *in, float x) {
    if (in->n == in->cap) {
        in->cap = in->cap ? in->cap * 2 : 1 << 16;
        in->v = realloc(in->v, in->cap * sizeof *in->v);
    }
    in->v[in->n++] = x;
}

/* x, its float neighbours, and the same with the sign flipped. */
static void push_around(inputs *in, float x) {
    float around[3] = {x, nextafterf(x, INFINITY), nextafterf(x, -INFINITY)};
    for (int i = 0; i < 3; i++) {
        push(in, around[i]);
        push(in, -around[i]);
    }
}

static void push_grid_and_midpoints(inputs *in, const double *mag, int count, double past_max) {
    for (int i = 0; i < count; i++) {
        push_around(in, (float)mag[i]);
        double next = i + 1 < count ? mag[i + 1] : past_max;
        push_around(in, (float)((mag[i] + next) / 2)); /* exact ties */
    }
}

static inputs make_inputs(void) {
    inputs in = {0};
    uint64_t rng = 0x5eed;
    /* specials */
    const uint32_t special_bits[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u,
                                     0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fbfffffu, 0x7fffffffu,
                                     0x00000001u, 0x80000001u, 0x007fffffu, 0x00800000u, 0x7f7fffffu,
                                     0xff7fffffu, 0x00400000u, 0x00400001u, 0x003fffffu};
    for (size_t i = 0; i < sizeof special_bits / sizeof *special_bits; i++)
        push(&in, f_from_bits(special_bits[i]));
    /* every grid point and midpoint of e2m1 and e4m3, with neighbours */
    double e2m1_mag[8], e4m3_mag[127];
    for (int c = 0; c < 8; c++) e2m1_mag[c] = e2m1_formula((unsigned)c);
    for (int c = 0; c < 127; c++) e4m3_mag[c] = e4m3_formula((unsigned)c);
    push_grid_and_midpoints(&in, e2m1_mag, 8, 8.0);
    push_grid_and_midpoints(&in, e4m3_mag, 127, 512.0);
    /* powers of two over the whole float range (ue8m0 boundaries), with neighbours */
    for (int k = -149; k <= 127; k++) push_around(&in, ldexpf(1.0f, k));
    /* random bit patterns: every binade, subnormals, NaN payloads, Inf */
    for (int i = 0; i < 300000; i++) push(&in, f_from_bits((uint32_t)test_rand_u64(&rng)));
    /* bf16 ties and near-ties: random high half, low half 0x8000 / 0x7fff / 0x8001 */
    const uint32_t lows[3] = {0x8000u, 0x7fffu, 0x8001u};
    for (int i = 0; i < 120000; i++)
        push(&in, f_from_bits(((uint32_t)test_rand_u64(&rng) & 0xffff0000u) | lows[i % 3]));
    /* inside and just past the e2m1 and e4m3 ranges */
    for (int i = 0; i < 200000; i++) push(&in, (test_rand_uniform(&rng) * 2 - 1) * 8.0f);
    for (int i = 0; i < 200000; i++) push(&in, (test_rand_uniform(&rng) * 2 - 1) * 520.0f);
    /* e4m3 subnormal range and e2m1 ties scaled onto many binades (still exact) */
    for (int i = 0; i < 100000; i++) push(&in, (test_rand_uniform(&rng) * 2 - 1) * 0x1p-5f);
    for (int i = 0; i < 60000; i++) {
        double g = e4m3_mag[test_rand_u64(&rng) % 127];
        push(&in, (float)(g * (1 + 1.0 / 16)) * ((i & 1) ? -1.0f : 1.0f)); /* e4m3 normal ties */
    }
    /* log-uniform over 2^-40 .. 2^40 */
    for (int i = 0; i < 150000; i++) {
        float m = ldexpf(1.0f + test_rand_uniform(&rng), (int)(test_rand_u64(&rng) % 81) - 40);
        push(&in, (i & 1) ? -m : m);
    }
    return in;
}

/* Runs the oracle on the inputs and compares with `encode`, byte by byte. */
static void check_against_oracle(const char *fmt, int width, unsigned (*encode)(float)) {
    if (!test_python_has("numpy,ml_dtypes")) SKIP("python3 lacks ml_dtypes: pip install ml_dtypes");
    CHECK_MSG(access("tests/py/fp_oracle.py", R_OK) == 0, "run the tests from the repository root");
    inputs in = make_inputs();
    CHECK(in.n >= 1000000);
    char src[700], dst[700];
    const char *dir = test_tmpdir();
    snprintf(src, sizeof src, "%s/in.f32", dir);
    snprintf(dst, sizeof dst, "%s/out.%s", dir, fmt);
    int rc = test_write_file(src, in.v, in.n * sizeof *in.v);
    if (rc == 0) rc = test_system("python3 tests/py/fp_oracle.py %s '%s' '%s'", fmt, src, dst);
    size_t len = 0;
    uint8_t *want = rc == 0 ? (uint8_t *)test_read_file(dst, &len) : NULL;
    int ok = want && len == in.n * (size_t)width;
    size_t bad = in.n, mismatches = 0;
    for (size_t i = 0; ok && i < in.n; i++) {
        unsigned w = width == 1 ? want[i] : (unsigned)(want[2 * i] | want[2 * i + 1] << 8);
        if (encode(in.v[i]) != w) {
            if (bad == in.n) bad = i;
            mismatches++;
        }
    }
    float x = bad < in.n ? in.v[bad] : 0.0f;
    unsigned w = bad < in.n ? (width == 1 ? want[bad] : (unsigned)(want[2 * bad] | want[2 * bad + 1] << 8)) : 0;
    size_t n = in.n;
    free(in.v);
    free(want);
    CHECK_MSG(rc == 0, "fp_oracle.py %s failed (exit %d)", fmt, rc);
    CHECK_MSG(ok, "oracle output has %zu bytes, expected %zu", len, n * (size_t)width);
    CHECK_MSG(mismatches == 0, "%s: %zu of %zu differ; first: input bits 0x%08x (%a): ours 0x%x, ml_dtypes 0x%x",
              fmt, mismatches, n, bits_of(x), x, encode(x), w);
}

static unsigned enc_e2m1(float x) { return dsv4_e2m1_encode(x); }
static unsigned enc_e4m3(float x) { return dsv4_e4m3_encode(x); }
static unsigned enc_ue8m0(float x) { return dsv4_ue8m0_encode_ceil(x); }
static unsigned enc_bf16(float x) { return dsv4_bf16_encode(x); }

TEST(e2m1_encode_matches_ml_dtypes) { check_against_oracle("e2m1", 1, enc_e2m1); }
TEST(e4m3_encode_matches_ml_dtypes) { check_against_oracle("e4m3", 1, enc_e4m3); }
TEST(ue8m0_encode_ceil_matches_ml_dtypes) { check_against_oracle("ue8m0", 1, enc_ue8m0); }
TEST(bf16_encode_matches_ml_dtypes) { check_against_oracle("bf16", 2, enc_bf16); }
