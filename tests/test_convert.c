/* dsv4 convert: MXFP4 experts become NVFP4 exactly (same logits bit for bit), other formats
 * are quantized (close logits), unconvertible scale ranges fail by name. */
#include <math.h>

#include "base/status.h"
#include "fixtures.h"
#include "model/model.h"
#include "test.h"

static dsv4_status logits_of(const char *dir, const int32_t *ids, int n, float *out) {
    dsv4_model *m;
    DSV4_TRY(dsv4_model_open(dir, &m));
    dsv4_session *s;
    dsv4_status st = dsv4_session_create(m, NULL, &s);
    if (st == DSV4_OK) st = dsv4_session_forward(s, 0, ids, n, out);
    dsv4_session_free(s);
    dsv4_model_close(m);
    return st;
}

static dsv4_status format_counts(const char *dir, size_t *counts) {
    dsv4_model *m;
    DSV4_TRY(dsv4_model_open(dir, &m));
    memcpy(counts, m->w.format_count, sizeof m->w.format_count);
    int problems = m->w.n_problems, unused = m->w.n_tensors - m->w.n_used;
    dsv4_model_close(m);
    return problems || unused ? DSV4_ERR_INTERNAL : DSV4_OK;
}


static const int32_t IDS[12] = {5, 17, 200, 3, 99, 411, 7, 7, 256, 31, 64, 128};
static float before[12 * 512], after[12 * 512];

TEST(convert_mxfp4_experts_is_exact) {
    const char *src = fixture_tiny_dir(DSV4_TINY_NATIVE_MXFP4, 1), *dst = test_tmpdir();
    dsv4_convert_options o = {.experts = 1, .shard_bytes = 1 << 20}; /* small shards: several files */
    CHECK_OK(dsv4_convert(src, dst, &o, NULL));
    size_t counts[DSV4_WF_COUNT];
    CHECK_OK(format_counts(dst, counts));
    CHECK_MSG(counts[DSV4_WF_NVFP4] == 240 && counts[DSV4_WF_MXFP4] == 0 && counts[DSV4_WF_FP8_B128] == 44,
              "NVFP4 %zu MXFP4 %zu FP8 %zu", counts[DSV4_WF_NVFP4], counts[DSV4_WF_MXFP4], counts[DSV4_WF_FP8_B128]);
    CHECK_OK(logits_of(src, IDS, 12, before));
    CHECK_OK(logits_of(dst, IDS, 12, after));
    CHECK_MSG(!memcmp(before, after, sizeof before), "logits changed (cosine %.9f)", fixture_cosine(before, after, 12 * 512));
}

TEST(convert_dense_linears_is_close) {
    const char *src = fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), *dst = test_tmpdir();
    dsv4_convert_options o = {.experts = 1, .dense = 1};
    CHECK_OK(dsv4_convert(src, dst, &o, NULL));
    size_t counts[DSV4_WF_COUNT];
    CHECK_OK(format_counts(dst, counts));
    /* every FP8 linear became NVFP4; the BF16 router/compressor/indexer weights stayed */
    CHECK_MSG(counts[DSV4_WF_FP8_B128] == 0 && counts[DSV4_WF_NVFP4] == 240 + 44 && counts[DSV4_WF_BF16] == 17,
              "NVFP4 %zu FP8 %zu BF16 %zu", counts[DSV4_WF_NVFP4], counts[DSV4_WF_FP8_B128], counts[DSV4_WF_BF16]);
    CHECK_OK(logits_of(src, IDS, 12, before));
    CHECK_OK(logits_of(dst, IDS, 12, after));
    double c = fixture_cosine(before, after, 12 * 512);
    printf("     FP8 -> NVFP4 attention/shared: logits cosine %.6f\n", c);
    /* 4-bit weights on a random tiny model move the logits visibly; the weights themselves
     * must be within NVFP4's error: relative RMS error of a Gaussian weight ~ 0.1 */
    CHECK_MSG(memcmp(before, after, sizeof before) != 0 && c > 0.9, "cosine %.6f", c);
    dsv4_model *a, *b;
    CHECK_OK(dsv4_model_open(src, &a));
    CHECK_OK(dsv4_model_open(dst, &b));
    const dsv4_weight *wa = &a->w.layers[1].wq_b, *wb = &b->w.layers[1].wq_b;
    size_t n = (size_t)(wa->rows * wa->cols);
    float *x = malloc(n * 4), *y = malloc(n * 4);
    int formats_ok = wa->format == DSV4_WF_FP8_B128 && wb->format == DSV4_WF_NVFP4;
    dsv4_status sa = dsv4_weight_dequantize(wa, x), sb = dsv4_weight_dequantize(wb, y);
    double err = 0, ref = 0;
    for (size_t i = 0; i < n; i++) err += (double)(x[i] - y[i]) * (x[i] - y[i]), ref += (double)x[i] * x[i];
    free(x);
    free(y);
    dsv4_model_close(a);
    dsv4_model_close(b);
    CHECK(formats_ok && sa == DSV4_OK && sb == DSV4_OK);
    printf("     wq_b relative RMS error after FP8 -> NVFP4: %.4f\n", sqrt(err / ref));
    CHECK_MSG(sqrt(err / ref) > 0.01 && sqrt(err / ref) < 0.15, "relative RMS error %.4f", sqrt(err / ref));
}

TEST(convert_stacked_hf_experts_to_per_expert_nvfp4) {
    const char *src = fixture_tiny_dir(DSV4_TINY_HF_STACKED, 1), *dst = test_tmpdir();
    dsv4_convert_options o = {.experts = 1};
    CHECK_OK(dsv4_convert(src, dst, &o, NULL));
    size_t counts[DSV4_WF_COUNT];
    CHECK_OK(format_counts(dst, counts));
    CHECK(counts[DSV4_WF_NVFP4] == 4 * 16 * 3);
    CHECK_OK(logits_of(src, IDS, 12, before));
    CHECK_OK(logits_of(dst, IDS, 12, after));
    double c = fixture_cosine(before, after, 12 * 512);
    CHECK_MSG(c > 0.999, "cosine %.6f", c);
}

TEST(convert_reports_mxfp4_scales_nvfp4_cannot_hold) {
    /* a block scale of 2^-100 next to ordinary ones spans more than e4m3's 18 binades */
    const char *src = fixture_tiny_dir(DSV4_TINY_NATIVE_MXFP4, 1), *bad = test_tmpdir(), *dst = test_tmpdir();
    const uint8_t tiny_scale = 27;
    mutation mu = {.corrupt = "layers.2.ffn.experts.9.w3.scale", .bytes = &tiny_scale, .n_bytes = 1};
    CHECK_OK(fixture_write_mutated(src, bad, &mu));
    dsv4_convert_options o = {.experts = 1};
    CHECK_STATUS(dsv4_convert(bad, dst, &o, NULL), DSV4_ERR_NOT_REPRESENTABLE);
    CHECK_MSG(strstr(dsv4_last_error(), "layers.2.ffn.experts.9.w3"), "message: %s", dsv4_last_error());
    o.lossy_mxfp4 = 1;
    CHECK_OK(dsv4_convert(bad, dst, &o, NULL));
    size_t counts[DSV4_WF_COUNT];
    CHECK_OK(format_counts(dst, counts));
    CHECK(counts[DSV4_WF_MXFP4] == 0);
}
