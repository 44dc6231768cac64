/* Experts: clamped SwiGLU and the MoE combine (spec model.md "MoE", dsv4-reference.md §6.4-6).
 * Follows HF DeepseekV4Experts / DeepseekV4MLP: gate clamped above only, up clamped both
 * sides, and the routing weight multiplies the expert's output after down_proj (the
 * DeepSeek reference multiplies before w2). Experts are visited in ascending id, a token's
 * slots in ascending order, then the shared expert is added, as HF accumulates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/ops.h"

/* One token through one expert; h is scratch [2·I]. */
static void swiglu_token(const dsv4_cpu_expert *e, int D, int I, const float *x, float limit,
                         float *h, float *y) {
    float *g = h, *u = h + I;
    dsv4_cpu_matmul(g, x, e->w1, 1, D, I);
    dsv4_cpu_matmul(u, x, e->w3, 1, D, I);
    for (int i = 0; i < I; i++) {
        float gi = fminf(g[i], limit);                 /* no lower clamp on the gate */
        float ui = fminf(fmaxf(u[i], -limit), limit);  /* up clamped to [−limit, limit] */
        g[i] = gi / (1.0f + expf(-gi)) * ui;           /* SiLU(g) ⊙ u */
    }
    dsv4_cpu_matmul(y, g, e->w2, 1, I, D);
}

dsv4_status dsv4_cpu_swiglu(const dsv4_cpu_expert *e, int T, int D, int I, const float *x,
                            float limit, float *y) {
    if (!e || !e->w1 || !e->w2 || !e->w3 || (T > 0 && (!x || !y)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "swiglu: NULL argument");
    if (T < 0 || D <= 0 || I <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "swiglu: bad sizes T=%d D=%d I=%d", T, D, I);
    float *h = malloc(sizeof(float) * 2 * (size_t)I);
    if (!h) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "swiglu: scratch of %d floats", 2 * I);
    for (int t = 0; t < T; t++) swiglu_token(e, D, I, x + (size_t)t * D, limit, h, y + (size_t)t * D);
    free(h);
    return DSV4_OK;
}

dsv4_status dsv4_cpu_moe(const dsv4_cpu_expert *experts, int E, const dsv4_cpu_expert *shared,
                         int T, int D, int I, int k, const float *x, const int *idx,
                         const float *weights, float limit, float *out) {
    if (!experts || (T > 0 && (!x || !idx || !weights || !out)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe: NULL argument");
    if (T < 0 || E <= 0 || D <= 0 || I <= 0 || k <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe: bad sizes T=%d E=%d D=%d I=%d k=%d", T, E, D, I, k);
    if (shared && (!shared->w1 || !shared->w2 || !shared->w3))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe: shared expert has a NULL weight");
    for (size_t i = 0; i < (size_t)T * k; i++) {
        int e = idx[i];
        if (e < 0 || e >= E)
            return dsv4_fail(DSV4_ERR_RANGE, "moe: token %zu slot %zu routes to expert %d of %d",
                             i / k, i % k, e, E);
        if (!experts[e].w1 || !experts[e].w2 || !experts[e].w3)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe: routed expert %d has no weights", e);
    }
    if (T == 0) return DSV4_OK;
    float *h = malloc(sizeof(float) * (2 * (size_t)I + (size_t)D));
    if (!h) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "moe: scratch of %d floats", 2 * I + D);
    float *y = h + 2 * (size_t)I;
    memset(out, 0, sizeof(float) * (size_t)T * D);
    for (int e = 0; e < E; e++) {
        for (int t = 0; t < T; t++) {
            const int *it = idx + (size_t)t * k;
            int hits = 0;
            for (int j = 0; j < k; j++) hits += it[j] == e;
            if (!hits) continue; /* an expert no token chose costs nothing */
            swiglu_token(&experts[e], D, I, x + (size_t)t * D, limit, h, y);
            float *ot = out + (size_t)t * D;
            /* a token routed twice to e (hash routing) gets both weighted copies */
            for (int j = 0; j < k; j++) {
                if (it[j] != e) continue;
                float w = weights[(size_t)t * k + j];
                for (int c = 0; c < D; c++) ot[c] += y[c] * w;
            }
        }
    }
    if (shared) {
        for (int t = 0; t < T; t++) {
            swiglu_token(shared, D, I, x + (size_t)t * D, limit, h, y);
            for (int c = 0; c < D; c++) out[(size_t)t * D + c] += y[c];
        }
    }
    free(h);
    return DSV4_OK;
}
