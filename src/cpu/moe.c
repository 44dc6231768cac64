/* Experts: clamped SwiGLU and the MoE combine (spec model.md "MoE", dsv4-reference.md §6.4-6).
 * Follows HF DeepseekV4Experts / DeepseekV4MLP: gate clamped above only, up clamped both
 * sides, and the routing weight multiplies the expert's output after down_proj (the
 * DeepSeek reference multiplies before w2). Experts are visited in ascending id and each
 * expert's tokens in ascending order, then the shared expert is added, as HF accumulates.
 * Weights stay in their stored format; each expert's tokens go through the reference linear
 * together, so a weight is expanded once per call, not once per token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/ops.h"

static int expert_complete(const dsv4_cpu_expert *e) { return e && e->w1 && e->w2 && e->w3; }

static dsv4_status check_expert(const dsv4_cpu_expert *e, int D, const char *what, int id) {
    int64_t I = e->w1->rows;
    if (e->w1->cols != D || e->w3->rows != I || e->w3->cols != D || e->w2->rows != D || e->w2->cols != I)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s %d: weights [%lld,%lld] [%lld,%lld] [%lld,%lld] do not form an expert of width %d",
                         what, id, (long long)e->w1->rows, (long long)e->w1->cols, (long long)e->w3->rows,
                         (long long)e->w3->cols, (long long)e->w2->rows, (long long)e->w2->cols, D);
    return DSV4_OK;
}

/* y [T, D] for x [T, D] through one expert; h is scratch [2, T, I]. */
static dsv4_status swiglu_rows(const dsv4_cpu_expert *e, int T, const float *x, float limit, dsv4_numerics mode,
                               float *h, float *y) {
    const int64_t I = e->w1->rows;
    float *g = h, *u = h + (size_t)T * I;
    DSV4_TRY(dsv4_cpu_linear(e->w1, x, T, g, mode));
    DSV4_TRY(dsv4_cpu_linear(e->w3, x, T, u, mode));
    for (size_t i = 0; i < (size_t)T * I; i++) {
        float gi = fminf(g[i], limit);                /* no lower clamp on the gate */
        float ui = fminf(fmaxf(u[i], -limit), limit); /* up clamped to [−limit, limit] */
        g[i] = gi / (1.0f + expf(-gi)) * ui;          /* SiLU(g) ⊙ u */
    }
    return dsv4_cpu_linear(e->w2, g, T, y, mode);
}

dsv4_status dsv4_cpu_swiglu(const dsv4_cpu_expert *e, int T, int D, const float *x, float limit,
                            dsv4_numerics mode, float *y) {
    if (!expert_complete(e) || (T > 0 && (!x || !y)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "swiglu: NULL argument");
    if (T < 0 || D <= 0) return dsv4_fail(DSV4_ERR_SHAPE, "swiglu: bad sizes T=%d D=%d", T, D);
    DSV4_TRY(check_expert(e, D, "swiglu expert", 0));
    if (T == 0) return DSV4_OK;
    float *h = malloc(sizeof(float) * 2 * (size_t)T * (size_t)e->w1->rows);
    if (!h) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "swiglu: out of memory");
    dsv4_status st = swiglu_rows(e, T, x, limit, mode, h, y);
    free(h);
    return st;
}

dsv4_status dsv4_cpu_moe(const dsv4_cpu_expert *experts, int E, const dsv4_cpu_expert *shared, int T, int D, int k,
                         const float *x, const int *idx, const float *weights, float limit, dsv4_numerics mode,
                         float *out) {
    if (!experts || (T > 0 && (!x || !idx || !weights || !out)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe: NULL argument");
    if (T < 0 || E <= 0 || D <= 0 || k <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe: bad sizes T=%d E=%d D=%d k=%d", T, E, D, k);
    if (shared && !expert_complete(shared))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe: shared expert has a NULL weight");
    if (shared) DSV4_TRY(check_expert(shared, D, "moe shared expert", 0));
    int64_t max_I = shared ? shared->w1->rows : 0;
    for (size_t i = 0; i < (size_t)T * k; i++) {
        int e = idx[i];
        if (e < 0 || e >= E)
            return dsv4_fail(DSV4_ERR_RANGE, "moe: token %zu slot %zu routes to expert %d of %d", i / k, i % k, e, E);
        if (!expert_complete(&experts[e]))
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe: routed expert %d has no weights", e);
        DSV4_TRY(check_expert(&experts[e], D, "moe expert", e));
        if (experts[e].w1->rows > max_I) max_I = experts[e].w1->rows;
    }
    if (T == 0) return DSV4_OK;
    /* per expert: the tokens routed to it (a token routed twice is computed once, added twice) */
    int *rows = malloc(sizeof(int) * (size_t)T);
    float *xe = malloc(sizeof(float) * (size_t)T * D), *ye = malloc(sizeof(float) * (size_t)T * D);
    float *h = malloc(sizeof(float) * 2 * (size_t)T * (size_t)max_I);
    dsv4_status st = (rows && xe && ye && h) ? DSV4_OK : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "moe: out of memory");
    if (st == DSV4_OK) memset(out, 0, sizeof(float) * (size_t)T * D);
    for (int e = 0; e < E && st == DSV4_OK; e++) {
        int n = 0;
        for (int t = 0; t < T; t++)
            for (int j = 0; j < k; j++)
                if (idx[(size_t)t * k + j] == e) { rows[n++] = t; break; }
        if (!n) continue; /* an expert no token chose costs nothing */
        for (int i = 0; i < n; i++) memcpy(xe + (size_t)i * D, x + (size_t)rows[i] * D, sizeof(float) * D);
        st = swiglu_rows(&experts[e], n, xe, limit, mode, h, ye);
        for (int i = 0; i < n && st == DSV4_OK; i++) {
            int t = rows[i];
            float *ot = out + (size_t)t * D;
            for (int j = 0; j < k; j++) {
                if (idx[(size_t)t * k + j] != e) continue;
                float w = weights[(size_t)t * k + j];
                for (int c = 0; c < D; c++) ot[c] += ye[(size_t)i * D + c] * w;
            }
        }
        if (st != DSV4_OK) dsv4_fail_context(st, "moe expert %d", e);
    }
    if (st == DSV4_OK && shared) {
        st = swiglu_rows(shared, T, x, limit, mode, h, ye);
        for (size_t i = 0; st == DSV4_OK && i < (size_t)T * D; i++) out[i] += ye[i];
    }
    free(rows);
    free(xe);
    free(ye);
    free(h);
    return st;
}
