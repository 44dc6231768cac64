/* `dsv4 verify`: the per-layer agreement of a run under test with the reference run (CPU,
 * W4A16, fp32 KV): for every decoder layer, the worst cosine over tokens of the residual streams
 * and the worst relative max error. This is the guard for every precision change (W4A4
 * activations now; GPU kernels and FP8 caches as they land). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "model/model.h"

typedef struct layer_capture {
    int n_layers, T, width;
    float *X; /* [n_layers, T, width] */
} layer_capture;

static void capture(void *ctx, int layer, int T, const float *X, int width) {
    layer_capture *c = ctx;
    if (c->X && layer < c->n_layers && T == c->T && width == c->width)
        memcpy(c->X + (size_t)layer * T * width, X, sizeof(float) * (size_t)T * width);
}

static dsv4_status run_captured(const dsv4_model *m, const dsv4_session_options *run, const int32_t *ids, int n,
                                layer_capture *cap, float *logits) {
    dsv4_session_options o = *run;
    o.max_batch = 1;
    o.max_seq_len = n;
    dsv4_session *s;
    DSV4_TRY(dsv4_session_create(m, &o, &s));
    dsv4_session_observe_layers(s, capture, cap);
    dsv4_status st = dsv4_session_forward(s, 0, ids, n, logits);
    dsv4_session_free(s);
    return st;
}

static void compare_rows(const float *a, const float *b, int T, int width, double *cos_min, double *rel_max) {
    *cos_min = 1.0;
    *rel_max = 0.0;
    for (int t = 0; t < T; t++) {
        const float *x = a + (size_t)t * width, *y = b + (size_t)t * width;
        double xy = 0, xx = 0, yy = 0, dmax = 0, ymax = 0;
        for (int i = 0; i < width; i++) {
            xy += (double)x[i] * y[i], xx += (double)x[i] * x[i], yy += (double)y[i] * y[i];
            dmax = fmax(dmax, fabs((double)x[i] - y[i]));
            ymax = fmax(ymax, fabs((double)y[i]));
        }
        double c = (xx == 0 && yy == 0) ? 1.0 : xy / sqrt(xx * yy);
        *cos_min = fmin(*cos_min, c);
        *rel_max = fmax(*rel_max, ymax > 0 ? dmax / ymax : dmax);
    }
}

dsv4_status dsv4_verify(const dsv4_model *m, const dsv4_session_options *run, const int32_t *ids, int n,
                        dsv4_verify_row *rows, int max_rows, int *n_rows) {
    if (!m || !run || !ids || n < 1 || !rows || !n_rows)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "verify: bad arguments");
    dsv4_session_options reference;
    dsv4_session_options_default(&reference);
    const int L = m->cfg.num_hidden_layers, width = m->cfg.hc_mult * m->cfg.hidden_size, V = m->cfg.vocab_size;
    if (max_rows < L + 1)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "verify: %d rows needed (layers + logits), %d given", L + 1, max_rows);
    layer_capture ref = {L, n, width, malloc(sizeof(float) * (size_t)L * n * width)};
    layer_capture cur = {L, n, width, malloc(sizeof(float) * (size_t)L * n * width)};
    float *lref = malloc(sizeof(float) * (size_t)n * V), *lrun = malloc(sizeof(float) * (size_t)n * V);
    dsv4_status st = ref.X && cur.X && lref && lrun ? DSV4_OK : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "verify: out of memory");
    if (st == DSV4_OK) st = run_captured(m, &reference, ids, n, &ref, lref);
    if (st == DSV4_OK) st = run_captured(m, run, ids, n, &cur, lrun);
    for (int l = 0; st == DSV4_OK && l < L; l++) {
        rows[l].layer = l;
        compare_rows(cur.X + (size_t)l * n * width, ref.X + (size_t)l * n * width, n, width, &rows[l].cosine_min,
                     &rows[l].rel_err_max);
    }
    if (st == DSV4_OK) {
        rows[L].layer = -1; /* the logits */
        compare_rows(lrun, lref, n, V, &rows[L].cosine_min, &rows[L].rel_err_max);
        *n_rows = L + 1;
    }
    free(ref.X);
    free(cur.X);
    free(lref);
    free(lrun);
    return st;
}
