/* Weight table, name normalisation, make-tiny and bad checkpoints at the model level. */
#include <math.h>

#include "base/status.h"
#include "format/quant.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "model/names.h"
#include "fixtures.h"
#include "test.h"

TEST(canonical_names_cover_every_scheme) {
    static const char *const cases[][2] = {
        {"layers.3.attn.wq_a.weight", "layers.3.attn.wq_a.weight"},
        {"model.layers.3.attn.wq_a.weight", "layers.3.attn.wq_a.weight"},
        {"model.layers.3.self_attn.q_a_proj.weight", "layers.3.attn.wq_a.weight"},
        {"model.layers.3.self_attn.q_b_proj.weight", "layers.3.attn.wq_b.weight"},
        {"model.layers.3.self_attn.kv_proj.weight", "layers.3.attn.wkv.weight"},
        {"model.layers.3.self_attn.kv_norm.weight", "layers.3.attn.kv_norm.weight"},
        {"model.layers.3.attn.norm.weight", "layers.3.attn.kv_norm.weight"},
        {"model.layers.3.self_attn.q_a_norm.weight", "layers.3.attn.q_norm.weight"},
        {"model.layers.3.self_attn.o_a_proj.weight", "layers.3.attn.wo_a.weight"},
        {"model.layers.3.self_attn.o_b_proj.weight", "layers.3.attn.wo_b.weight"},
        {"model.layers.3.self_attn.sinks", "layers.3.attn.attn_sink"},
        {"model.layers.3.self_attn.compressor.position_bias", "layers.3.attn.compressor.ape"},
        {"model.layers.3.self_attn.compressor.kv_proj.weight", "layers.3.attn.compressor.wkv.weight"},
        {"model.layers.3.self_attn.compressor.gate_proj.weight", "layers.3.attn.compressor.wgate.weight"},
        {"model.layers.3.self_attn.compressor.kv_norm.weight", "layers.3.attn.compressor.norm.weight"},
        {"model.layers.3.self_attn.compressor.indexer.position_bias", "layers.3.attn.indexer.compressor.ape"},
        {"model.layers.3.self_attn.compressor.indexer.kv_proj.weight", "layers.3.attn.indexer.compressor.wkv.weight"},
        {"model.layers.3.self_attn.compressor.indexer.gate_proj.weight",
         "layers.3.attn.indexer.compressor.wgate.weight"},
        {"model.layers.3.self_attn.compressor.indexer.kv_norm.weight", "layers.3.attn.indexer.compressor.norm.weight"},
        {"model.layers.3.self_attn.compressor.indexer.q_b_proj.weight", "layers.3.attn.indexer.wq_b.weight"},
        {"model.layers.3.self_attn.compressor.indexer.scorer.weights_proj.weight",
         "layers.3.attn.indexer.weights_proj.weight"},
        {"model.layers.3.input_layernorm.weight", "layers.3.attn_norm.weight"},
        {"model.layers.3.post_attention_layernorm.weight", "layers.3.ffn_norm.weight"},
        {"model.layers.3.attn_hc.fn", "layers.3.hc_attn_fn"},
        {"model.layers.3.ffn_hc.scale", "layers.3.hc_ffn_scale"},
        {"model.layers.3.mlp.gate.e_score_correction_bias", "layers.3.ffn.gate.bias"},
        {"model.layers.3.mlp.gate.tid2eid", "layers.3.ffn.gate.tid2eid"},
        {"model.layers.3.mlp.experts.gate_up_proj", "layers.3.ffn.experts.gate_up_proj"},
        {"model.layers.3.mlp.shared_experts.gate_proj.weight", "layers.3.ffn.shared_experts.w1.weight"},
        {"model.layers.3.mlp.shared_experts.up_proj.weight", "layers.3.ffn.shared_experts.w3.weight"},
        {"model.layers.3.mlp.shared_experts.down_proj.weight", "layers.3.ffn.shared_experts.w2.weight"},
        {"layers.3.attn.wq_b.weight_scale_inv", "layers.3.attn.wq_b.scale"},
        {"layers.3.ffn.experts.7.w1.weight_scale_2", "layers.3.ffn.experts.7.w1.weight_scale_2"},
        {"model.embed_tokens.weight", "embed.weight"},
        {"lm_head.weight", "head.weight"},
        {"model.hc_head.hc_fn", "hc_head_fn"},
        {"model.norm.weight", "norm.weight"},
        {"mtp.0.e_proj.weight", "mtp.0.e_proj.weight"},
        {"mtp.0.norm.weight", "mtp.0.norm.weight"},
    };
    char out[256];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        CHECK(dsv4_canonical_name(cases[i][0], out, sizeof out) == 0);
        CHECK_MSG(!strcmp(out, cases[i][1]), "'%s' -> '%s', expected '%s'", cases[i][0], out, cases[i][1]);
    }
    CHECK(dsv4_canonical_name("model.layers.3.self_attn.q_a_proj.weight", out, 10) == -1);
}

TEST(make_tiny_every_scheme_opens_cleanly) {
    const dsv4_tiny_scheme schemes[] = {DSV4_TINY_NATIVE_NVFP4, DSV4_TINY_NATIVE_MXFP4, DSV4_TINY_HF,
                                        DSV4_TINY_HF_STACKED};
    for (int s = 0; s < 4; s++) {
        const char *dir = fixture_tiny_dir(schemes[s], 1);
        CHECK_MSG(dir, "make-tiny scheme %d: %s", s, dsv4_last_error());
        dsv4_model *m;
        CHECK_OK(dsv4_model_open(dir, &m));
        const dsv4_weights *w = &m->w;
        int ok = w->n_problems == 0 && w->n_used == w->n_tensors;
        int native = schemes[s] <= DSV4_TINY_NATIVE_MXFP4;
        /* 4 layers (+ MTP in native schemes) x 16 experts x 3 */
        size_t experts = (size_t)(native ? 5 : 4) * 16 * 3;
        size_t want_nv = schemes[s] == DSV4_TINY_NATIVE_NVFP4 ? experts : 0;
        size_t want_mx = schemes[s] == DSV4_TINY_NATIVE_MXFP4 ? experts : 0;
        int counts_ok = w->format_count[DSV4_WF_NVFP4] == want_nv && w->format_count[DSV4_WF_MXFP4] == want_mx &&
                        (native ? w->format_count[DSV4_WF_FP8_B128] > 0 : w->format_count[DSV4_WF_FP8_B128] == 0);
        int mtp_ok = w->has_mtp == native;
        int plan_ok = w->layers[0].attn_type == DSV4_ATTN_SLIDING && w->layers[1].attn_type == DSV4_ATTN_CSA &&
                      w->layers[2].attn_type == DSV4_ATTN_HCA && w->layers[2].compress_rate == 16 &&
                      w->layers[0].mlp_type == DSV4_MLP_HASH_MOE && w->layers[0].tid2eid &&
                      w->layers[1].gate_bias;
        int nfiles = dsv4_ckpt_file_count(m->ckpt);
        dsv4_model_close(m);
        CHECK_MSG(ok, "scheme %d: %d problems, %d of %d tensors used", s, w->n_problems, w->n_used, w->n_tensors);
        CHECK_MSG(counts_ok, "scheme %d: format counts wrong", s);
        CHECK_MSG(mtp_ok && plan_ok, "scheme %d: MTP or layer plan wrong", s);
        CHECK_MSG(native ? nfiles > 1 : nfiles == 1, "scheme %d: %d files", s, nfiles);
    }
}

TEST(make_tiny_is_deterministic) {
    const char *a = fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), *c = fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 2);
    const char *b = test_tmpdir();
    CHECK(a && c);
    CHECK_OK(dsv4_make_tiny(b, DSV4_TINY_NATIVE_NVFP4, 1));
    CHECK_MSG(test_system("diff -r '%s' '%s' >/dev/null", a, b) == 0, "same seed gave different files");
    CHECK_MSG(test_system("diff -rq '%s' '%s' >/dev/null", a, c) != 0, "different seeds gave identical files");
}

/* The same seed in every scheme holds the same values (dequantized): the HF schemes store
 * exactly what the native NVFP4/FP8 one encodes. */
static int weights_equal(const dsv4_weight *x, const dsv4_weight *y, char *why, size_t cap) {
    if (x->rows != y->rows || x->cols != y->cols) { snprintf(why, cap, "shape"); return 0; }
    size_t n = (size_t)(x->rows * x->cols);
    float *a = malloc(n * 4), *b = malloc(n * 4);
    int ok = a && b && dsv4_weight_dequantize(x, a) == DSV4_OK && dsv4_weight_dequantize(y, b) == DSV4_OK;
    for (size_t i = 0; ok && i < n; i++)
        if (a[i] != b[i]) {
            snprintf(why, cap, "%s vs %s differ at %zu: %g vs %g", x->src->name, y->src->name, i, a[i], b[i]);
            ok = 0;
        }
    free(a);
    free(b);
    return ok;
}

TEST(tiny_schemes_hold_identical_values) {
    dsv4_model *nv, *hf, *st;
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), &nv));
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_HF, 1), &hf));
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_HF_STACKED, 1), &st));
    char why[256] = "";
    int ok = 1;
    for (int l = 0; l < 4 && ok; l++) {
        const dsv4_layer_weights *a = &nv->w.layers[l], *b = &hf->w.layers[l], *c = &st->w.layers[l];
        ok = weights_equal(&a->wq_a, &b->wq_a, why, sizeof why) && weights_equal(&a->wo_b, &c->wo_b, why, sizeof why) &&
             weights_equal(&a->shared_w2, &b->shared_w2, why, sizeof why);
        for (int e = 0; e < 16 && ok; e += 5)
            ok = weights_equal(&a->w1[e], &b->w1[e], why, sizeof why) &&
                 weights_equal(&a->w2[e], &c->w2[e], why, sizeof why) &&
                 weights_equal(&a->w3[e], &c->w3[e], why, sizeof why);
    }
    dsv4_model_close(nv);
    dsv4_model_close(hf);
    dsv4_model_close(st);
    CHECK_MSG(ok, "%s", why);
}

/* ---- malformed checkpoints: a copy of a tiny checkpoint with one change (fixtures.c) ---- */

/* Opens a mutated copy and checks the status and that the message names `needle`. */
#define CHECK_MUTATION(mu, want_status, needle)                                                      \
    do {                                                                                            \
        const char *dst_ = test_tmpdir();                                                           \
        CHECK_OK(fixture_write_mutated(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), dst_, &(mu)));                  \
        dsv4_model *m_ = NULL;                                                                      \
        CHECK_STATUS(dsv4_model_open(dst_, &m_), want_status);                                      \
        CHECK(m_ == NULL);                                                                          \
        CHECK_MSG(strstr(dsv4_last_error(), needle), "message '%s' does not name '%s'",             \
                  dsv4_last_error(), needle);                                                       \
    } while (0)

TEST(model_open_rejects_missing_tensor) {
    mutation mu = {.drop = "layers.2.attn.compressor.ape"};
    CHECK_MUTATION(mu, DSV4_ERR_MISSING, "layers.2.attn.compressor.ape");
    mutation mu2 = {.drop = "layers.1.ffn.experts.3.w2.weight_scale_2"};
    CHECK_MUTATION(mu2, DSV4_ERR_MISSING, "layers.1.ffn.experts.3.w2");
}

TEST(model_open_rejects_shapes_that_disagree_with_config) {
    mutation mu = {.config_from = "\"q_lora_rank\":\t64", .config_to = "\"q_lora_rank\":\t32"};
    CHECK_MUTATION(mu, DSV4_ERR_SHAPE, "layers.0.attn.wq_a");
}

TEST(model_open_rejects_nan_scales) {
    const uint8_t nan_e4m3 = 0x7f, nan_e8m0 = 0xff;
    const float nan_f = NAN, neg = -1.0f;
    mutation a = {.corrupt = "layers.1.ffn.experts.0.w1.weight_scale", .bytes = &nan_e4m3, .n_bytes = 1};
    CHECK_MUTATION(a, DSV4_ERR_NONFINITE, "layers.1.ffn.experts.0.w1.weight_scale");
    mutation b = {.corrupt = "layers.2.attn.wq_b.scale", .bytes = &nan_e8m0, .n_bytes = 1};
    CHECK_MUTATION(b, DSV4_ERR_NONFINITE, "layers.2.attn.wq_b.scale");
    mutation c = {.corrupt = "layers.3.ffn.experts.5.w3.weight_scale_2", .bytes = (const uint8_t *)&nan_f,
                  .n_bytes = 4};
    CHECK_MUTATION(c, DSV4_ERR_NONFINITE, "layers.3.ffn.experts.5.w3.weight_scale_2");
    mutation d = {.corrupt = "layers.3.ffn.experts.5.w3.input_scale", .bytes = (const uint8_t *)&neg, .n_bytes = 4};
    CHECK_MUTATION(d, DSV4_ERR_NONFINITE, "input_scale");
}

TEST(model_open_rejects_bad_tid2eid) {
    const int32_t bad = 16; /* E = 16 */
    mutation mu = {.corrupt = "layers.0.ffn.gate.tid2eid", .bytes = (const uint8_t *)&bad, .n_bytes = 4};
    CHECK_MUTATION(mu, DSV4_ERR_RANGE, "layers.0.ffn.gate.tid2eid");
}

TEST(model_open_rejects_one_weight_under_two_names) {
    const uint8_t same = 0;
    mutation mu = {.corrupt = "norm.weight", .bytes = &same, .n_bytes = 0, .duplicate_as = "model.norm.weight"};
    CHECK_MUTATION(mu, DSV4_ERR_OVERLAP, "norm.weight");
}

TEST(inspect_lists_every_problem) {
    mutation mu = {.drop = "layers.2.attn.compressor.ape",
                   .corrupt = "layers.1.ffn.experts.0.w1.weight_scale",
                   .bytes = (const uint8_t[]){0xff},
                   .n_bytes = 1};
    const char *dst = test_tmpdir();
    CHECK_OK(fixture_write_mutated(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), dst, &mu));
    char path[700];
    snprintf(path, sizeof path, "%s/inspect.txt", dst);
    FILE *f = fopen(path, "w");
    CHECK(f);
    dsv4_status st = dsv4_inspect_dir(dst, f);
    fclose(f);
    CHECK(st == DSV4_ERR_MISSING || st == DSV4_ERR_NONFINITE);
    char *text = test_read_file(path, NULL);
    CHECK(text);
    int ok = strstr(text, "problems  2:") && strstr(text, "layers.2.attn.compressor.ape") &&
             strstr(text, "layers.1.ffn.experts.0.w1.weight_scale") && strstr(text, "layer  attention");
    free(text);
    CHECK_MSG(ok, "inspect output lacks the problems (see %s)", path);
}

TEST(cli_make_tiny_and_inspect) {
    const char *dir = test_tmpdir();
    CHECK(test_system("%s make-tiny '%s/m' --scheme native-mxfp4 --seed 7 >/dev/null", test_cli(), dir) == 0);
    CHECK(test_system("%s inspect '%s/m' > '%s/out.txt'", test_cli(), dir, dir) == 0);
    char path[700];
    snprintf(path, sizeof path, "%s/out.txt", dir);
    char *text = test_read_file(path, NULL);
    CHECK(text);
    int ok = strstr(text, "problems  none") && strstr(text, "MXFP4") && strstr(text, "FP8-B128") &&
             strstr(text, "  MTP  ");
    free(text);
    CHECK_MSG(ok, "inspect output unexpected");
    CHECK(test_system("%s inspect '%s/nonexistent' 2>/dev/null", test_cli(), dir) != 0);
    CHECK(test_system("%s make-tiny '%s/x' --scheme bogus 2>/dev/null", test_cli(), dir) != 0);
}

TEST(model_open_rejects_nan_parameters_that_only_steer_choices) {
    const float nan_f = NAN;
    /* a NaN router bias would silently make expert 0 win every selection */
    mutation mu = {.corrupt = "layers.1.ffn.gate.bias", .bytes = (const uint8_t *)&nan_f, .n_bytes = 4};
    CHECK_MUTATION(mu, DSV4_ERR_NONFINITE, "layers.1.ffn.gate.bias");
}

/* NaN bytes inside an FP8 weight are found when the weight is expanded, and named. */
TEST(forward_reports_nan_in_fp8_weight_payload) {
    const uint8_t nan_e4m3 = 0x7f;
    mutation mu = {.corrupt = "layers.0.attn.wq_a.weight", .bytes = &nan_e4m3, .n_bytes = 1};
    const char *dst = test_tmpdir();
    CHECK_OK(fixture_write_mutated(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), dst, &mu));
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(dst, &m));
    dsv4_session *s;
    CHECK_OK(dsv4_session_create(m, NULL, &s));
    int32_t ids[2] = {3, 4};
    dsv4_status st = dsv4_session_forward(s, 0, ids, 2, NULL);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dsv4_last_error());
    dsv4_session_free(s);
    dsv4_model_close(m);
    CHECK_STATUS(st, DSV4_ERR_NONFINITE);
    CHECK_MSG(strstr(msg, "layer 0") && strstr(msg, "layers.0.attn.wq_a.weight"), "message: %s", msg);
}
