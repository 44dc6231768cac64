/* Lightning indexer (spec model.md "Lightning indexer", dsv4-reference.md §5.5).
 * Scoring follows HF DeepseekV4IndexerScorer: ReLU on each head's q·k, times Di^-0.5,
 * times the head weight (x · weights_projᵀ · n_heads^-0.5), summed over heads. Selection
 * follows DeepseekV4Indexer: future entries masked to −inf, top-k, picks that land on a
 * masked entry dropped (−1). */
#include <math.h>
#include <stdlib.h>

#include "base/status.h"
#include "cpu/ops.h"

static dsv4_status check_dims(const char *op, const dsv4_cpu_indexer_dims *d, int T, int n_c) {
    if (!d) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL dims", op);
    if (T < 0 || n_c < 0 || d->n_heads <= 0 || d->head_dim <= 0 || d->topk <= 0 || d->ratio <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: bad sizes T=%d n_c=%d heads=%d Di=%d topk=%d m=%d",
                         op, T, n_c, d->n_heads, d->head_dim, d->topk, d->ratio);
    return DSV4_OK;
}

dsv4_status dsv4_cpu_indexer_scores(const dsv4_cpu_indexer_dims *d, int T, const float *q,
                                    const float *w_raw, const int *q_pos, const float *keys,
                                    int n_c, float *scores) {
    DSV4_TRY(check_dims("indexer_scores", d, T, n_c));
    if (T > 0 && n_c > 0 && (!q || !w_raw || !q_pos || !keys || !scores))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "indexer_scores: NULL argument");
    int nh = d->n_heads, Di = d->head_dim;
    const float softmax_scale = 1.0f / sqrtf((float)Di);
    const float weights_scale = 1.0f / sqrtf((float)nh);
    for (int t = 0; t < T; t++) {
        int visible = (q_pos[t] + 1) / d->ratio;
        for (int s = 0; s < n_c; s++) {
            float *out = &scores[(size_t)t * n_c + s];
            if (s >= visible) {
                *out = -INFINITY;
                continue;
            }
            float total = 0.0f;
            for (int h = 0; h < nh; h++) {
                const float *qh = q + ((size_t)t * nh + h) * Di, *k = keys + (size_t)s * Di;
                float dot = 0.0f;
                for (int e = 0; e < Di; e++) dot += qh[e] * k[e];
                float relu = dot > 0.0f ? dot : 0.0f;
                total += (relu * softmax_scale) * (w_raw[(size_t)t * nh + h] * weights_scale);
            }
            *out = total;
        }
    }
    return DSV4_OK;
}

typedef struct scored {
    float score;
    int index;
} scored;

/* Descending score, ties to the lower index; NaN ranks below everything. */
static int by_score_desc(const void *pa, const void *pb) {
    const scored *a = pa, *b = pb;
    int na = isnan(a->score), nb = isnan(b->score);
    if (na != nb) return na - nb;
    if (!na && a->score != b->score) return a->score > b->score ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

dsv4_status dsv4_cpu_indexer_topk(const dsv4_cpu_indexer_dims *d, int T, const float *scores,
                                  const int *q_pos, int n_c, int *idx) {
    DSV4_TRY(check_dims("indexer_topk", d, T, n_c));
    if (T > 0 && (!q_pos || !idx || (n_c > 0 && !scores)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "indexer_topk: NULL argument");
    int K = d->topk;
    scored *all = malloc(sizeof(scored) * (n_c ? (size_t)n_c : 1));
    if (!all) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "indexer_topk: %d entries", n_c);
    for (int t = 0; t < T; t++) {
        /* only visible entries compete: HF masks the rest to −inf and drops picks on them */
        int visible = (q_pos[t] + 1) / d->ratio;
        if (visible > n_c) visible = n_c;
        if (visible < 0) visible = 0;
        int k = visible < K ? visible : K;
        const float *st = scores + (size_t)t * n_c;
        int *it = idx + (size_t)t * K;
        for (int s = 0; s < visible; s++) all[s] = (scored){st[s], s};
        qsort(all, (size_t)visible, sizeof(scored), by_score_desc);
        for (int j = 0; j < K; j++) it[j] = j < k ? all[j].index : -1;
    }
    free(all);
    return DSV4_OK;
}
