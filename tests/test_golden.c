/* The CPU forward pass against logits HF transformers' deepseek_v4 computed (fp32, CPU) for
 * the oracle configs, committed in tests/golden/ by tests/oracle/compare_hf.py: every CI run
 * compares dsv4 with the oracle, no GPU or torch needed. Each file holds the prompt ids, the
 * positions kept and HF's logits there; its metadata names the make-tiny config and seed. */
#include <math.h>

#include "base/status.h"
#include "fixtures.h"
#include "format/safetensors.h"
#include "test.h"

/* Runs the model in `dir` on the golden prompt; worst cosine / relative error over the kept
 * positions. Targets: cosine >= 0.99999 and max |Δ| <= 1e-3 · max |logit| per position. */
static dsv4_status compare_with_golden(const char *dir, const dsv4_st_file *g, double *worst_cos, double *worst_rel) {
    const dsv4_tensor_view *ids = dsv4_st_find(g, "ids"), *pos = dsv4_st_find(g, "positions"),
                           *ref = dsv4_st_find(g, "logits");
    if (!ids || !pos || !ref || ids->dtype != DSV4_DT_I32 || pos->dtype != DSV4_DT_I32 || ref->dtype != DSV4_DT_F32 ||
        ref->ndim != 2 || ref->shape[0] != pos->shape[0])
        return dsv4_fail(DSV4_ERR_SHAPE, "golden file lacks ids/positions/logits of the expected kinds");
    const int n = (int)ids->shape[0], n_keep = (int)pos->shape[0], V = (int)ref->shape[1];
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n), *keep = malloc(sizeof(int32_t) * (size_t)n_keep);
    float *want = malloc(sizeof(float) * (size_t)n_keep * V), *ours = malloc(sizeof(float) * (size_t)n * V);
    dsv4_model *m = NULL;
    dsv4_session *s = NULL;
    dsv4_status st = tok && keep && want && ours ? DSV4_OK : DSV4_ERR_OUT_OF_MEMORY;
    if (st == DSV4_OK) {
        memcpy(tok, ids->data, sizeof(int32_t) * (size_t)n);
        memcpy(keep, pos->data, sizeof(int32_t) * (size_t)n_keep);
        memcpy(want, ref->data, sizeof(float) * (size_t)n_keep * V);
        st = dsv4_model_open(dir, &m);
    }
    if (st == DSV4_OK && dsv4_model_vocab_size(m) != V) st = dsv4_fail(DSV4_ERR_SHAPE, "vocab differs from golden");
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.max_seq_len = n;
    if (st == DSV4_OK) st = dsv4_session_create(m, &o, &s);
    if (st == DSV4_OK) st = dsv4_session_forward(s, 0, tok, n, ours);
    for (int i = 0; st == DSV4_OK && i < n_keep; i++) {
        if (keep[i] < 0 || keep[i] >= n) { st = dsv4_fail(DSV4_ERR_RANGE, "golden position %d", keep[i]); break; }
        const float *a = ours + (size_t)keep[i] * V, *b = want + (size_t)i * V;
        double ab = 0, aa = 0, bb = 0, dmax = 0, rmax = 0;
        for (int v = 0; v < V; v++) {
            ab += (double)a[v] * b[v], aa += (double)a[v] * a[v], bb += (double)b[v] * b[v];
            dmax = fmax(dmax, fabs((double)a[v] - b[v]));
            rmax = fmax(rmax, fabs((double)b[v]));
        }
        *worst_cos = fmin(*worst_cos, ab / sqrt(aa * bb));
        *worst_rel = fmax(*worst_rel, dmax / rmax);
    }
    dsv4_session_free(s);
    dsv4_model_close(m);
    free(tok);
    free(keep);
    free(want);
    free(ours);
    return st;
}

static void check_golden(const char *name) {
    char path[256];
    snprintf(path, sizeof path, "tests/golden/hf_logits_%s.safetensors", name);
    dsv4_st_file *g;
    CHECK_OK(dsv4_st_open(path, &g));
    const char *cfg = dsv4_st_metadata(g, "config"), *seed = dsv4_st_metadata(g, "make_tiny_seed");
    CHECK_MSG(cfg && seed, "%s lacks its make-tiny metadata", path);
    /* the golden values hold in both schemes that store them: F32 (HF's) and NVFP4 + FP8 */
    const dsv4_tiny_scheme schemes[2] = {DSV4_TINY_HF, DSV4_TINY_NATIVE_NVFP4};
    double worst_cos = 1, worst_rel = 0;
    dsv4_status st = DSV4_OK;
    for (int k = 0; k < 2 && st == DSV4_OK; k++) {
        const char *dir = cfg[0] ? test_tmpdir() : fixture_tiny_dir(schemes[k], strtoull(seed, NULL, 10));
        if (!dir) { st = DSV4_ERR_IO; break; }
        if (cfg[0]) st = dsv4_make_tiny_config(dir, schemes[k], strtoull(seed, NULL, 10), cfg);
        if (st == DSV4_OK) st = compare_with_golden(dir, g, &worst_cos, &worst_rel);
    }
    dsv4_st_close(g);
    CHECK_OK(st);
    printf("     %s vs HF: min cosine %.12f, max |dlogit|/max|logit| %.3g\n", name, worst_cos, worst_rel);
    CHECK_MSG(worst_cos >= 0.99999 && worst_rel <= 1e-3,
              "%s: min cosine %.9f (need >= 0.99999), max relative error %.3g (need <= 1e-3); if make-tiny changed on "
              "purpose, regenerate tests/golden/ with tests/oracle/compare_hf.py", name, worst_cos, worst_rel);
}

TEST(golden_tiny_logits_match_hf_transformers) { check_golden("tiny"); }
TEST(golden_uneven_logits_match_hf_transformers) { check_golden("uneven"); }
TEST(golden_long_logits_match_hf_transformers) { check_golden("long"); }
