/* The CPU forward pass against logits HF transformers' deepseek_v4 computed (fp32) for the
 * built-in tiny model (`dsv4 make-tiny --scheme hf --seed 1`), committed in tests/golden/ by
 * tests/oracle/compare_hf.py: every CI run compares dsv4 with the oracle, no GPU needed. */
#include <math.h>

#include "fixtures.h"
#include "format/safetensors.h"
#include "test.h"

#define GOLDEN "tests/golden/tiny_hf_logits.safetensors"

TEST(golden_tiny_logits_match_hf_transformers) {
    dsv4_st_file *g;
    CHECK_OK(dsv4_st_open(GOLDEN, &g));
    const dsv4_tensor_view *ids = dsv4_st_find(g, "ids"), *ref = dsv4_st_find(g, "logits");
    CHECK(ids && ref && ids->dtype == DSV4_DT_I32 && ref->dtype == DSV4_DT_F32 && ref->ndim == 2);
    const int n = (int)ids->shape[0], V = (int)ref->shape[1];
    CHECK(ref->shape[0] == n);
    /* the golden logits were made from both schemes' shared values: check both files */
    const dsv4_tiny_scheme schemes[2] = {DSV4_TINY_HF, DSV4_TINY_NATIVE_NVFP4};
    float *ours = malloc(sizeof(float) * (size_t)n * V), *want = malloc(sizeof(float) * (size_t)n * V);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)n);
    memcpy(want, ref->data, sizeof(float) * (size_t)n * V);
    memcpy(tok, ids->data, sizeof(int32_t) * (size_t)n);
    dsv4_st_close(g);
    double worst_cos = 1, worst_rel = 0;
    dsv4_status st = DSV4_OK;
    for (int s = 0; s < 2 && st == DSV4_OK; s++) {
        dsv4_model *m = NULL;
        dsv4_session *sess = NULL;
        st = dsv4_model_open(fixture_tiny_dir(schemes[s], 1), &m);
        if (st == DSV4_OK && dsv4_model_vocab_size(m) != V) st = DSV4_ERR_SHAPE;
        if (st == DSV4_OK) st = dsv4_session_create(m, NULL, &sess);
        if (st == DSV4_OK) st = dsv4_session_forward(sess, 0, tok, n, ours);
        for (int t = 0; st == DSV4_OK && t < n; t++) {
            double ab = 0, aa = 0, bb = 0, dmax = 0, rmax = 0;
            for (int v = 0; v < V; v++) {
                double a = ours[(size_t)t * V + v], b = want[(size_t)t * V + v];
                ab += a * b, aa += a * a, bb += b * b;
                dmax = fmax(dmax, fabs(a - b));
                rmax = fmax(rmax, fabs(b));
            }
            worst_cos = fmin(worst_cos, ab / sqrt(aa * bb));
            worst_rel = fmax(worst_rel, dmax / rmax);
        }
        dsv4_session_free(sess);
        dsv4_model_close(m);
    }
    free(ours);
    free(want);
    free(tok);
    CHECK_OK(st);
    printf("     vs HF over %d positions: min cosine %.9f, max |dlogit|/max|logit| %.3g\n", n, worst_cos, worst_rel);
    CHECK_MSG(worst_cos >= 0.99999 && worst_rel <= 1e-3,
              "min cosine %.9f (need >= 0.99999), max relative error %.3g (need <= 1e-3); if make-tiny changed on "
              "purpose, regenerate " GOLDEN " with tests/oracle/compare_hf.py", worst_cos, worst_rel);
}
