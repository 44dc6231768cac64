/* Manifold-constrained hyper-connections (spec model.md "Residual stream: mHC",
 * dsv4-reference.md §4). Follows HF DeepseekV4HyperConnection / DeepseekV4HyperHead:
 * the flattened streams are RMS-normalised first and then projected (the DeepSeek
 * reference projects first and scales the mix by rsqrt afterwards: same math, other
 * rounding). */
#include <math.h>
#include <stdlib.h>

#include "base/status.h"
#include "cpu/ops.h"

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static dsv4_status check_dims(const char *op, const dsv4_cpu_hc_dims *d, int T) {
    if (!d) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL dims", op);
    /* hc <= 64 lets the per-token weights live on the stack (V4 uses 4) */
    if (T < 0 || d->hc <= 0 || d->hc > 64 || d->dim <= 0 || d->sinkhorn_iters < 1)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: bad sizes T=%d hc=%d D=%d iters=%d", op, T, d->hc,
                         d->dim, d->sinkhorn_iters);
    return DSV4_OK;
}

/* mix[n_mix] = UnweightedRMSNorm(X_t flattened) · fnᵀ for one token; `flat` is scratch [hc·D]. */
static void hc_mix(const dsv4_cpu_hc_dims *d, const float *Xt, const float *fn, int n_mix,
                   float *flat, float *mix) {
    int n = d->hc * d->dim;
    dsv4_cpu_rmsnorm(flat, Xt, NULL, 1, n, d->norm_eps);
    dsv4_cpu_matmul(mix, flat, fn, 1, n, n_mix);
}

void dsv4_cpu_hc_sinkhorn(float *c, int hc, int iters, float eps) {
    /* softmax over each row (the last axis), then + eps */
    for (int i = 0; i < hc; i++) {
        float *row = c + i * hc;
        float mx = row[0];
        for (int j = 1; j < hc; j++) mx = fmaxf(mx, row[j]);
        float sum = 0.0f;
        for (int j = 0; j < hc; j++) {
            row[j] = expf(row[j] - mx);
            sum += row[j];
        }
        for (int j = 0; j < hc; j++) row[j] = row[j] / sum + eps;
    }
    /* one column normalisation, then iters−1 rounds of row then column */
    for (int it = 0; it < iters; it++) {
        if (it > 0) {
            for (int i = 0; i < hc; i++) {
                float s = 0.0f;
                for (int j = 0; j < hc; j++) s += c[i * hc + j];
                for (int j = 0; j < hc; j++) c[i * hc + j] /= s + eps;
            }
        }
        for (int j = 0; j < hc; j++) {
            float s = 0.0f;
            for (int i = 0; i < hc; i++) s += c[i * hc + j];
            for (int i = 0; i < hc; i++) c[i * hc + j] /= s + eps;
        }
    }
}

dsv4_status dsv4_cpu_hc_pre(const dsv4_cpu_hc_dims *d, int T, const float *X, const float *fn,
                            const float *base, const float *scale, float *x, float *post,
                            float *comb) {
    DSV4_TRY(check_dims("hc_pre", d, T));
    if (!X || !fn || !base || !scale || !x || !post || !comb)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_pre: NULL argument");
    int hc = d->hc, D = d->dim, n_mix = (2 + hc) * hc;
    float *flat = malloc(sizeof(float) * ((size_t)hc * D + n_mix));
    if (!flat) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "hc_pre: scratch of %d floats", hc * D);
    float *mix = flat + (size_t)hc * D;
    for (int t = 0; t < T; t++) {
        const float *Xt = X + (size_t)t * hc * D;
        hc_mix(d, Xt, fn, n_mix, flat, mix);
        /* split in the order pre[hc], post[hc], comb[hc·hc] */
        float pre[64];
        float *pt = post + (size_t)t * hc, *ct = comb + (size_t)t * hc * hc;
        for (int j = 0; j < hc; j++) {
            pre[j] = sigmoidf(mix[j] * scale[0] + base[j]) + d->hc_eps;
            pt[j] = 2.0f * sigmoidf(mix[hc + j] * scale[1] + base[hc + j]);
        }
        for (int i = 0; i < hc * hc; i++) ct[i] = mix[2 * hc + i] * scale[2] + base[2 * hc + i];
        dsv4_cpu_hc_sinkhorn(ct, hc, d->sinkhorn_iters, d->hc_eps);
        /* collapse: x = Σ_j pre_j X_j (fp32, streams in order) */
        float *xt = x + (size_t)t * D;
        for (int k = 0; k < D; k++) {
            float acc = 0.0f;
            for (int j = 0; j < hc; j++) acc += pre[j] * Xt[(size_t)j * D + k];
            xt[k] = acc;
        }
    }
    free(flat);
    return DSV4_OK;
}

dsv4_status dsv4_cpu_hc_post(const dsv4_cpu_hc_dims *d, int T, const float *X, const float *y,
                             const float *post, const float *comb, dsv4_cpu_hc_merge merge,
                             float *X_out) {
    DSV4_TRY(check_dims("hc_post", d, T));
    if (!X || !y || !post || !comb || !X_out)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_post: NULL argument");
    if (merge != DSV4_CPU_HC_MERGE_BF16_WEIGHTS && merge != DSV4_CPU_HC_MERGE_FP32)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_post: unknown merge mode %d", (int)merge);
    int hc = d->hc, D = d->dim;
    for (int t = 0; t < T; t++) {
        float pw[64], cw[64 * 64];
        for (int k = 0; k < hc; k++) pw[k] = post[(size_t)t * hc + k];
        for (int i = 0; i < hc * hc; i++) cw[i] = comb[(size_t)t * hc * hc + i];
        if (merge == DSV4_CPU_HC_MERGE_BF16_WEIGHTS) {
            for (int k = 0; k < hc; k++) pw[k] = dsv4_bf16_round(pw[k]);
            for (int i = 0; i < hc * hc; i++) cw[i] = dsv4_bf16_round(cw[i]);
        }
        const float *Xt = X + (size_t)t * hc * D, *yt = y + (size_t)t * D;
        float *Ot = X_out + (size_t)t * hc * D;
        for (int k = 0; k < hc; k++) {
            for (int e = 0; e < D; e++) {
                /* Σ over the FIRST index of comb: stream j feeds output stream k */
                float acc = 0.0f;
                for (int j = 0; j < hc; j++) acc += cw[j * hc + k] * Xt[(size_t)j * D + e];
                Ot[(size_t)k * D + e] = pw[k] * yt[e] + acc;
            }
        }
    }
    return DSV4_OK;
}

dsv4_status dsv4_cpu_hc_head(const dsv4_cpu_hc_dims *d, int T, const float *X, const float *fn,
                             const float *base, const float *scale, float *h) {
    DSV4_TRY(check_dims("hc_head", d, T));
    if (!X || !fn || !base || !scale || !h)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "hc_head: NULL argument");
    int hc = d->hc, D = d->dim;
    float *flat = malloc(sizeof(float) * ((size_t)hc * D + hc));
    if (!flat) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "hc_head: scratch of %d floats", hc * D);
    float *mix = flat + (size_t)hc * D;
    for (int t = 0; t < T; t++) {
        const float *Xt = X + (size_t)t * hc * D;
        hc_mix(d, Xt, fn, hc, flat, mix);
        float pre[64];
        for (int j = 0; j < hc; j++) pre[j] = sigmoidf(mix[j] * scale[0] + base[j]) + d->hc_eps;
        float *ht = h + (size_t)t * D;
        for (int k = 0; k < D; k++) {
            float acc = 0.0f;
            for (int j = 0; j < hc; j++) acc += pre[j] * Xt[(size_t)j * D + k];
            ht[k] = acc;
        }
    }
    free(flat);
    return DSV4_OK;
}
