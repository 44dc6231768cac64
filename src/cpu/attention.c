/* Core attention with per-head sinks over the sliding window plus compressed entries
 * (spec model.md "Attention", dsv4-reference.md §5.6). Follows HF eager_attention_forward:
 * one softmax over [window rows, compressed entries, sink] with the max subtracted, the
 * sink's probability dropped, then the inverse RoPE (cos, −sin) at the query position.
 * Candidates are visited in KV order (window rows, then compressed entries by index), the
 * order in which HF's masked dense softmax sums them. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/ops.h"

dsv4_status dsv4_cpu_attention(const dsv4_cpu_attn_dims *d, int T, const float *q,
                               const int *q_pos, const float *kv, const int *kv_pos, int n_kv,
                               const float *ckv, int n_c, int ratio, const int *c_idx, int c_k,
                               const float *sinks, const float *inv_freq, float *o) {
    if (!d || !q || !q_pos || !sinks || !inv_freq || !o || (n_kv > 0 && (!kv || !kv_pos)) ||
        (n_c > 0 && !ckv))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "attention: NULL argument");
    int H = d->n_heads, Dh = d->head_dim;
    if (T < 0 || H <= 0 || Dh <= 0 || d->rope_dim <= 0 || d->rope_dim > Dh || d->rope_dim % 2 ||
        d->window <= 0 || n_kv < 0 || n_c < 0 || (n_c > 0 && ratio <= 0) ||
        (c_idx && c_k < 0))
        return dsv4_fail(DSV4_ERR_SHAPE,
                         "attention: bad sizes T=%d H=%d Dh=%d R=%d window=%d n_kv=%d n_c=%d "
                         "ratio=%d c_k=%d",
                         T, H, Dh, d->rope_dim, d->window, n_kv, n_c, ratio, c_k);
    size_t n_all = (size_t)n_kv + (size_t)n_c;
    const float **rows = malloc(sizeof(*rows) * (n_all ? n_all : 1));
    float *logit = malloc(sizeof(float) * (n_all ? n_all : 1));
    unsigned char *picked = malloc(n_c ? (size_t)n_c : 1);
    if (!rows || !logit || !picked) {
        free(rows), free(logit), free(picked);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "attention: scratch for %zu candidates", n_all);
    }
    dsv4_status st = DSV4_OK;
    const float scale = 1.0f / sqrtf((float)Dh);
    for (int t = 0; t < T && st == DSV4_OK; t++) {
        int p = q_pos[t];
        /* the candidate set of query t, shared by all heads (MQA: K = V = one row) */
        int n = 0;
        for (int j = 0; j < n_kv; j++)
            if (kv_pos[j] <= p && kv_pos[j] > p - d->window) rows[n++] = kv + (size_t)j * Dh;
        if (n_c > 0 || c_idx) { /* with no entries, any pick other than −1 is still an error */
            /* entry w covers [w·m, (w+1)·m): complete iff w < (p+1)/m */
            int visible = ratio > 0 ? (p + 1) / ratio : 0;
            if (visible > n_c) visible = n_c;
            if (!c_idx) {
                for (int w = 0; w < visible; w++) rows[n++] = ckv + (size_t)w * Dh;
            } else {
                memset(picked, 0, (size_t)n_c);
                for (int i = 0; i < c_k; i++) {
                    int w = c_idx[(size_t)t * c_k + i];
                    if (w == -1) continue;
                    if (w < 0 || w >= visible) {
                        st = dsv4_fail(DSV4_ERR_RANGE,
                                       "attention: query %d (pos %d) picks compressed entry %d, "
                                       "only %d visible of %d",
                                       t, p, w, visible, n_c);
                        break;
                    }
                    picked[w] = 1;
                }
                for (int w = 0; w < visible; w++)
                    if (picked[w]) rows[n++] = ckv + (size_t)w * Dh;
            }
        }
        if (st != DSV4_OK) break;
        for (int h = 0; h < H; h++) {
            const float *qh = q + ((size_t)t * H + h) * Dh;
            float *oh = o + ((size_t)t * H + h) * Dh;
            float mx = sinks[h];
            for (int j = 0; j < n; j++) {
                float acc = 0.0f;
                for (int e = 0; e < Dh; e++) acc += qh[e] * rows[j][e];
                logit[j] = acc * scale;
                mx = fmaxf(mx, logit[j]);
            }
            float denom = expf(sinks[h] - mx); /* the sink: in the normaliser, no value */
            for (int j = 0; j < n; j++) {
                logit[j] = expf(logit[j] - mx);
                denom += logit[j];
            }
            for (int e = 0; e < Dh; e++) oh[e] = 0.0f;
            for (int j = 0; j < n; j++) {
                float pj = logit[j] / denom;
                for (int e = 0; e < Dh; e++) oh[e] += pj * rows[j][e];
            }
        }
        /* V carries RoPE at the key positions: rotate back by the query's angle */
        dsv4_cpu_rope(o + (size_t)t * H * Dh, 1, H, Dh, d->rope_dim, &q_pos[t], inv_freq, 1);
    }
    free(rows), free(logit), free(picked);
    return st;
}
