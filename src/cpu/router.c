/* MoE router (spec model.md "MoE", dsv4-reference.md §6.1-3). Follows HF
 * DeepseekV4TopKRouter / DeepseekV4HashRouter: scores from the logits, selection by
 * score + bias (or the tid2eid table), weights gathered from the scores, normalised with
 * +1e-20 and multiplied by routed_scaling_factor. */
#include <math.h>
#include <stdlib.h>

#include "base/status.h"
#include "cpu/ops.h"

float dsv4_cpu_softplus(float x) {
    /* log(1 + e^x) = max(x, 0) + log(1 + e^−|x|): e^−|x| <= 1 never overflows, and
     * log1p keeps the tail accurate for large |x| */
    return fmaxf(x, 0.0f) + log1pf(expf(-fabsf(x)));
}

static void score_row(dsv4_cpu_score_func f, const float *l, int E, float *s) {
    if (f == DSV4_CPU_SCORE_SOFTMAX) {
        float mx = l[0];
        for (int e = 1; e < E; e++) mx = fmaxf(mx, l[e]);
        float sum = 0.0f;
        for (int e = 0; e < E; e++) sum += (s[e] = expf(l[e] - mx));
        for (int e = 0; e < E; e++) s[e] /= sum;
        return;
    }
    for (int e = 0; e < E; e++)
        s[e] = f == DSV4_CPU_SCORE_SIGMOID ? 1.0f / (1.0f + expf(-l[e]))
                                           : sqrtf(dsv4_cpu_softplus(l[e]));
}

dsv4_status dsv4_cpu_router(const dsv4_cpu_router_cfg *cfg, int T, const float *logits,
                            const float *bias, const int32_t *tid2eid, const int32_t *token_ids,
                            int vocab, int *idx, float *weights) {
    if (!cfg || (T > 0 && (!logits || !idx || !weights)) || (tid2eid && !token_ids))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "router: NULL argument");
    int E = cfg->n_experts, k = cfg->topk;
    if (T < 0 || E <= 0 || k <= 0 || (!tid2eid && k > E) || (tid2eid && vocab <= 0))
        return dsv4_fail(DSV4_ERR_SHAPE, "router: bad sizes T=%d E=%d k=%d vocab=%d", T, E, k, vocab);
    if (cfg->score < DSV4_CPU_SCORE_SQRTSOFTPLUS || cfg->score > DSV4_CPU_SCORE_SOFTMAX)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "router: unknown scoring function %d",
                         (int)cfg->score);
    float *s = malloc(sizeof(float) * 2 * (size_t)E);
    unsigned char *used = malloc((size_t)E);
    if (!s || !used) {
        free(s), free(used);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "router: scratch for %d experts", E);
    }
    float *biased = s + E;
    dsv4_status st = DSV4_OK;
    for (int t = 0; t < T && st == DSV4_OK; t++) {
        score_row(cfg->score, logits + (size_t)t * E, E, s);
        int *it = idx + (size_t)t * k;
        float *wt = weights + (size_t)t * k;
        if (tid2eid) {
            int32_t tok = token_ids[t];
            if (tok < 0 || tok >= vocab) {
                st = dsv4_fail(DSV4_ERR_RANGE, "router: token id %d outside vocab %d", tok, vocab);
                break;
            }
            for (int j = 0; j < k; j++) {
                int32_t e = tid2eid[(size_t)tok * k + j];
                if (e < 0 || e >= E) {
                    st = dsv4_fail(DSV4_ERR_RANGE, "router: tid2eid[%d][%d] = %d outside %d experts",
                                   tok, j, e, E);
                    break;
                }
                it[j] = e;
            }
            if (st != DSV4_OK) break;
        } else {
            /* the bias steers the choice only */
            for (int e = 0; e < E; e++) {
                biased[e] = s[e] + (bias ? bias[e] : 0.0f);
                used[e] = 0;
            }
            for (int j = 0; j < k; j++) {
                int best = -1;
                /* ascending scan with strict '>' keeps the lowest id among equals */
                for (int e = 0; e < E; e++)
                    if (!used[e] && (best < 0 || biased[e] > biased[best])) best = e;
                used[best] = 1;
                it[j] = best;
            }
        }
        float sum = 0.0f;
        for (int j = 0; j < k; j++) sum += (wt[j] = s[it[j]]);
        for (int j = 0; j < k; j++) {
            if (cfg->normalize) wt[j] = wt[j] / (sum + 1e-20f);
            wt[j] *= cfg->scaling;
        }
    }
    free(s), free(used);
    return st;
}
