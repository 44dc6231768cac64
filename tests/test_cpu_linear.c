/* The reference linear against a naive double-precision matmul over the dequantized weight,
 * for every stored format, ragged shapes, and both numerics modes. */
#include <math.h>

#include "base/parallel.h"
#include "cpu/linear.h"
#include "format/fp.h"
#include "format/quant.h"
#include "test.h"

typedef struct {
    dsv4_weight w;
    uint8_t *q, *s;
    float g;
} owned_weight;

static void make_weight(owned_weight *o, dsv4_wformat f, int64_t rows, int64_t cols, uint64_t *rng) {
    size_t n = (size_t)(rows * cols);
    float *x = malloc(n * 4);
    for (size_t i = 0; i < n; i++) x[i] = test_rand_normal(rng) * 0.1f;
    memset(o, 0, sizeof *o);
    o->w.format = f;
    o->w.rows = rows;
    o->w.cols = cols;
    o->w.global_scale = 1.0f;
    switch (f) {
    case DSV4_WF_NVFP4:
        o->q = malloc(n / 2);
        o->s = malloc(n / 16);
        o->g = dsv4_nvfp4_global_scale(x, n);
        dsv4_nvfp4_quantize(x, rows, cols, o->g, o->q, o->s, "test");
        o->w.global_scale = o->g;
        o->w.scale_dtype = DSV4_DT_F8_E4M3;
        break;
    case DSV4_WF_MXFP4:
        o->q = malloc(n / 2);
        o->s = malloc(n / 32);
        for (size_t i = 0; i < n / 2; i++) o->q[i] = (uint8_t)test_rand_u64(rng);
        for (size_t i = 0; i < n / 32; i++) o->s[i] = (uint8_t)(120 + test_rand_u64(rng) % 6);
        o->w.scale_dtype = DSV4_DT_F8_E8M0;
        break;
    case DSV4_WF_FP8_B128: {
        size_t ns = (size_t)(((rows + 127) / 128) * ((cols + 127) / 128));
        o->q = malloc(n);
        o->s = malloc(ns);
        dsv4_fp8_block128_quantize(x, rows, cols, o->q, o->s, "test");
        o->w.scale_dtype = DSV4_DT_F8_E8M0;
        break;
    }
    case DSV4_WF_BF16:
        o->q = malloc(n * 2);
        for (size_t i = 0; i < n; i++) ((uint16_t *)o->q)[i] = dsv4_bf16_encode(x[i]);
        break;
    default:
        o->q = malloc(n * 4);
        memcpy(o->q, x, n * 4);
        o->w.format = DSV4_WF_F32;
    }
    o->w.data = o->q;
    o->w.scale = o->s;
    free(x);
}

static void free_weight(owned_weight *o) {
    free(o->q);
    free(o->s);
}

TEST(cpu_linear_matches_naive_matmul_in_every_format) {
    const dsv4_wformat formats[] = {DSV4_WF_NVFP4, DSV4_WF_MXFP4, DSV4_WF_FP8_B128, DSV4_WF_BF16, DSV4_WF_F32};
    const int64_t shapes[][3] = {{1, 1, 64}, {3, 37, 64}, {5, 130, 160}, {2, 257, 96}}; /* T, rows, cols */
    uint64_t rng = 11;
    for (int fi = 0; fi < 5; fi++)
        for (int si = 0; si < 4; si++) {
            int64_t T = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
            if (formats[fi] == DSV4_WF_MXFP4 && K % 32) continue;
            owned_weight o;
            make_weight(&o, formats[fi], N, K, &rng);
            float *W = malloc((size_t)(N * K) * 4), *x = malloc((size_t)(T * K) * 4), *y = malloc((size_t)(T * N) * 4);
            for (int64_t i = 0; i < T * K; i++) x[i] = test_rand_normal(&rng);
            CHECK_OK(dsv4_weight_dequantize(&o.w, W));
            CHECK_OK(dsv4_cpu_linear(&o.w, x, T, y, DSV4_W4A16));
            double max_err = 0, max_ref = 0;
            for (int64_t t = 0; t < T; t++)
                for (int64_t r = 0; r < N; r++) {
                    double ref = 0;
                    for (int64_t k = 0; k < K; k++) ref += (double)x[t * K + k] * W[r * K + k];
                    max_err = fmax(max_err, fabs(ref - y[t * N + r]));
                    max_ref = fmax(max_ref, fabs(ref));
                }
            free_weight(&o);
            free(W);
            free(x);
            free(y);
            /* fp32 accumulation of K products: error well under K * 2^-24 of the magnitudes */
            CHECK_MSG(max_ref > 0 && max_err <= 1e-5 * max_ref * sqrt((double)K),
                      "format %d shape %d: max err %g of %g", fi, si, max_err, max_ref);
        }
}

/* Dequantizing by rows must agree with the format's whole-matrix dequantizer at every offset:
 * FP8 block-128 must pick each row's own scale block, with ue8m0 and with fp32 scales. */
TEST(weight_dequantize_rows_picks_the_right_scale_block) {
    uint64_t rng = 5;
    owned_weight o;
    make_weight(&o, DSV4_WF_FP8_B128, 300, 200, &rng);
    float *all = malloc(300 * 200 * 4), *part = malloc(300 * 200 * 4);
    CHECK_OK(dsv4_fp8_block128_dequantize(o.q, 300, 200, o.s, DSV4_SCALE_UE8M0, all, "w"));
    for (int pass = 0; pass < 2; pass++) {
        if (pass == 1) { /* the same weight with its scales as fp32 */
            float *fs = malloc(3 * 2 * 4);
            for (int i = 0; i < 6; i++) fs[i] = dsv4_ue8m0_decode(o.s[i]);
            free(o.s);
            o.s = (uint8_t *)fs;
            o.w.scale = fs;
            o.w.scale_dtype = DSV4_DT_F32;
            float *again = malloc(300 * 200 * 4);
            CHECK_OK(dsv4_fp8_block128_dequantize(o.q, 300, 200, fs, DSV4_SCALE_F32, again, "w"));
            int same = !memcmp(again, all, 300 * 200 * 4);
            free(again);
            CHECK(same);
        }
        const int64_t cuts[][2] = {{0, 1}, {127, 2}, {100, 150}, {255, 45}, {299, 1}};
        for (int c = 0; c < 5; c++) {
            CHECK_OK(dsv4_weight_dequantize_rows(&o.w, cuts[c][0], cuts[c][1], part));
            CHECK_MSG(!memcmp(part, all + cuts[c][0] * 200, (size_t)(cuts[c][1] * 200) * 4),
                      "pass %d cut %d differs", pass, c);
        }
    }
    CHECK_STATUS(dsv4_weight_dequantize_rows(&o.w, 299, 2, part), DSV4_ERR_SHAPE);
    free(all);
    free(part);
    free_weight(&o);
}

TEST(cpu_linear_is_independent_of_thread_count) {
    uint64_t rng = 3;
    owned_weight o;
    make_weight(&o, DSV4_WF_NVFP4, 515, 256, &rng);
    float x[4 * 256], y1[4 * 515], y8[4 * 515];
    for (int i = 0; i < 4 * 256; i++) x[i] = test_rand_normal(&rng);
    setenv("DSV4_THREADS", "1", 1);
    CHECK(dsv4_thread_count() == 1);
    dsv4_status a = dsv4_cpu_linear(&o.w, x, 4, y1, DSV4_W4A16);
    setenv("DSV4_THREADS", "7", 1);
    dsv4_status b = dsv4_cpu_linear(&o.w, x, 4, y8, DSV4_W4A16);
    unsetenv("DSV4_THREADS");
    free_weight(&o);
    CHECK_OK(a);
    CHECK_OK(b);
    CHECK(!memcmp(y1, y8, sizeof y1));
}

/* W4A4: the result must equal W4A16 applied to the activations' NVFP4 round trip, the static
 * input_scale must be used when present, and the dynamic path must differ from it. */
TEST(cpu_linear_w4a4_quantizes_activations) {
    uint64_t rng = 9;
    owned_weight o;
    make_weight(&o, DSV4_WF_NVFP4, 64, 128, &rng);
    float x[2 * 128], xr[2 * 128], y[2 * 64], want[2 * 64], yd[2 * 64];
    for (int i = 0; i < 256; i++) x[i] = test_rand_normal(&rng);
    o.w.input_scale = 5.0f / 2688.0f;
    memcpy(xr, x, sizeof x);
    CHECK_OK(dsv4_cpu_quantize_act_roundtrip(xr, 2, 128, o.w.input_scale, "x"));
    int changed = 0;
    for (int i = 0; i < 256; i++) changed += xr[i] != x[i];
    CHECK_MSG(changed > 100, "round trip changed only %d of 256 activations", changed);
    CHECK_OK(dsv4_cpu_linear(&o.w, xr, 2, want, DSV4_W4A16));
    CHECK_OK(dsv4_cpu_linear(&o.w, x, 2, y, DSV4_W4A4));
    CHECK(!memcmp(y, want, sizeof y));
    o.w.input_scale = 0.0f; /* no checkpoint scale: dynamic per token */
    CHECK_OK(dsv4_cpu_linear(&o.w, x, 2, yd, DSV4_W4A4));
    double dot = 0, n1 = 0, n2 = 0;
    int differs = 0;
    for (int i = 0; i < 128; i++) {
        dot += (double)yd[i] * want[i];
        n1 += (double)yd[i] * yd[i];
        n2 += (double)want[i] * want[i];
        differs |= yd[i] != want[i];
    }
    CHECK(differs);
    CHECK_MSG(dot / sqrt(n1 * n2) > 0.98, "dynamic W4A4 cosine %g", dot / sqrt(n1 * n2));
    float bad[128];
    memcpy(bad, x, sizeof bad);
    bad[7] = NAN;
    CHECK_STATUS(dsv4_cpu_linear(&o.w, bad, 1, y, DSV4_W4A4), DSV4_ERR_NONFINITE);
    free_weight(&o);
}
