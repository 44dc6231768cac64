/* KV compressors (spec model.md "Compressors", dsv4-reference.md §5.4 and §9).
 * HCA (overlap = 0): entry w = RMSNorm(Σ_{t in window w} softmax_t(z_t + ape) ⊙ c_t).
 * CSA (overlap = 1): projections are [a | b] halves; entry w pools 2m slots, the a-halves of
 *   window w−1 then the b-halves of window w (window −1's slots are absent: weight 0).
 * Both: softmax per channel over the slots in fp32, RMSNorm with the compressor's weight,
 * RoPE (compress table) at position w·m. Prefill and streaming share pool_entry(), so
 * any chunking of the same tokens gives bit-identical entries. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/ops.h"

int dsv4_cpu_compress_width(const dsv4_cpu_compress_dims *d) {
    return (d->overlap ? 2 : 1) * d->head_dim;
}

static dsv4_status check_dims(const char *op, const dsv4_cpu_compress_dims *d) {
    if (!d) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL dims", op);
    if (d->ratio <= 0 || d->head_dim <= 0 || (d->overlap != 0 && d->overlap != 1) ||
        d->rope_dim <= 0 || d->rope_dim % 2 || d->rope_dim > d->head_dim)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: bad dims ratio=%d head_dim=%d overlap=%d rope_dim=%d",
                         op, d->ratio, d->head_dim, d->overlap, d->rope_dim);
    return DSV4_OK;
}

static dsv4_status check_params(const char *op, const dsv4_cpu_compress_params *p) {
    if (!p || !p->ape || !p->norm_w || !p->inv_freq)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL parameter", op);
    return DSV4_OK;
}

/* One compressed entry into out[head_dim]. Slot rows are given as (kv, gate) pointers to
 * the first of m rows `stride` floats apart, already offset to the half they use; gates
 * include ape. a_kv == NULL: no a-slots (HCA, or CSA window 0 with nothing before it). */
static void pool_entry(const dsv4_cpu_compress_dims *d, const dsv4_cpu_compress_params *p,
                       const float *a_kv, const float *a_gate, int a_stride, const float *b_kv,
                       const float *b_gate, int b_stride, int pos, float *out) {
    int m = d->ratio;
    for (int e = 0; e < d->head_dim; e++) {
        float mx = -INFINITY;
        if (a_kv)
            for (int s = 0; s < m; s++) mx = fmaxf(mx, a_gate[(size_t)s * a_stride + e]);
        for (int s = 0; s < m; s++) mx = fmaxf(mx, b_gate[(size_t)s * b_stride + e]);
        float sum = 0.0f;
        if (a_kv)
            for (int s = 0; s < m; s++) sum += expf(a_gate[(size_t)s * a_stride + e] - mx);
        for (int s = 0; s < m; s++) sum += expf(b_gate[(size_t)s * b_stride + e] - mx);
        float acc = 0.0f;
        if (a_kv)
            for (int s = 0; s < m; s++)
                acc += a_kv[(size_t)s * a_stride + e] *
                       (expf(a_gate[(size_t)s * a_stride + e] - mx) / sum);
        for (int s = 0; s < m; s++)
            acc += b_kv[(size_t)s * b_stride + e] * (expf(b_gate[(size_t)s * b_stride + e] - mx) / sum);
        out[e] = acc;
    }
    dsv4_cpu_rmsnorm(out, out, p->norm_w, 1, d->head_dim, d->eps);
    dsv4_cpu_rope(out, 1, 1, d->head_dim, d->rope_dim, &pos, p->inv_freq, 0);
}

dsv4_status dsv4_cpu_compress_prefill(const dsv4_cpu_compress_dims *d,
                                      const dsv4_cpu_compress_params *p, int p0, int T,
                                      const float *kv, const float *gate, const float *prev_kv,
                                      const float *prev_gate, float *out, int *n_out) {
    DSV4_TRY(check_dims("compress_prefill", d));
    DSV4_TRY(check_params("compress_prefill", p));
    if (!n_out || (T > 0 && (!kv || !gate || !out)) || (!prev_kv != !prev_gate))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "compress_prefill: NULL argument");
    int m = d->ratio, hd = d->head_dim, width = dsv4_cpu_compress_width(d);
    if (T < 0 || p0 < 0 || p0 % m)
        return dsv4_fail(DSV4_ERR_SHAPE, "compress_prefill: T=%d, p0=%d not a multiple of m=%d", T,
                         p0, m);
    int n = T / m;
    *n_out = n;
    if (n == 0) return DSV4_OK;
    /* z = gate + ape by position within the window (windows start at multiples of m) */
    float *z = malloc(sizeof(float) * (size_t)n * m * width);
    if (!z) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "compress_prefill: %d gate rows", n * m);
    for (int t = 0; t < n * m; t++)
        for (int e = 0; e < width; e++)
            z[(size_t)t * width + e] = gate[(size_t)t * width + e] + p->ape[(size_t)(t % m) * width + e];
    for (int i = 0; i < n; i++) {
        const float *wkv = kv + (size_t)i * m * width, *wz = z + (size_t)i * m * width;
        float *oi = out + (size_t)i * hd;
        int pos = p0 + i * m;
        if (!d->overlap) {
            pool_entry(d, p, NULL, NULL, 0, wkv, wz, width, pos, oi);
        } else if (i > 0) { /* a-halves of the previous window of this call */
            pool_entry(d, p, wkv - (size_t)m * width, wz - (size_t)m * width, width, wkv + hd,
                       wz + hd, width, pos, oi);
        } else { /* a-halves handed over from before p0, or none */
            pool_entry(d, p, prev_kv, prev_gate, hd, wkv + hd, wz + hd, width, pos, oi);
        }
    }
    free(z);
    return DSV4_OK;
}

dsv4_status dsv4_cpu_compress_state_init(dsv4_cpu_compress_state *s,
                                         const dsv4_cpu_compress_dims *d, int p0) {
    if (!s) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "compress_state_init: NULL state");
    memset(s, 0, sizeof *s);
    DSV4_TRY(check_dims("compress_state_init", d));
    if (p0 < 0 || p0 % d->ratio)
        return dsv4_fail(DSV4_ERR_SHAPE, "compress_state_init: p0=%d not a multiple of m=%d", p0,
                         d->ratio);
    s->dims = *d;
    s->next_pos = p0;
    size_t buf = (size_t)d->ratio * dsv4_cpu_compress_width(d);
    size_t prev = d->overlap ? (size_t)d->ratio * d->head_dim : 0;
    s->buf_kv = malloc(sizeof(float) * buf);
    s->buf_gate = malloc(sizeof(float) * buf);
    if (prev) {
        s->prev_kv = malloc(sizeof(float) * prev);
        s->prev_gate = malloc(sizeof(float) * prev);
    }
    if (!s->buf_kv || !s->buf_gate || (prev && (!s->prev_kv || !s->prev_gate))) {
        dsv4_cpu_compress_state_free(s);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "compress_state_init: buffers of %zu floats", buf);
    }
    return DSV4_OK;
}

void dsv4_cpu_compress_state_free(dsv4_cpu_compress_state *s) {
    if (!s) return;
    free(s->buf_kv), free(s->buf_gate), free(s->prev_kv), free(s->prev_gate);
    memset(s, 0, sizeof *s);
}

dsv4_status dsv4_cpu_compress_feed(dsv4_cpu_compress_state *s, const dsv4_cpu_compress_params *p,
                                   int T, const float *kv, const float *gate, float *out,
                                   int max_out, int *n_out) {
    if (!s || !s->buf_kv || !n_out || (T > 0 && (!kv || !gate)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "compress_feed: NULL argument or state");
    DSV4_TRY(check_params("compress_feed", p));
    const dsv4_cpu_compress_dims *d = &s->dims;
    int m = d->ratio, hd = d->head_dim, width = dsv4_cpu_compress_width(d);
    if (T < 0) return dsv4_fail(DSV4_ERR_SHAPE, "compress_feed: T=%d", T);
    int will = (s->n_buf + T) / m;
    if (will > max_out || (will > 0 && !out))
        return dsv4_fail(DSV4_ERR_SHAPE, "compress_feed: %d entries complete, room for %d", will,
                         max_out);
    int n = 0;
    for (int t = 0; t < T; t++) {
        int slot = s->n_buf; /* == next_pos % m, windows start at multiples of m */
        float *bk = s->buf_kv + (size_t)slot * width, *bz = s->buf_gate + (size_t)slot * width;
        for (int e = 0; e < width; e++) {
            bk[e] = kv[(size_t)t * width + e];
            bz[e] = gate[(size_t)t * width + e] + p->ape[(size_t)slot * width + e];
        }
        s->n_buf++;
        s->next_pos++;
        if (s->n_buf < m) continue;
        /* the window [next_pos − m, next_pos) is complete */
        int pos = s->next_pos - m;
        float *o = out + (size_t)n * hd;
        if (!d->overlap) {
            pool_entry(d, p, NULL, NULL, 0, s->buf_kv, s->buf_gate, width, pos, o);
        } else {
            pool_entry(d, p, s->have_prev ? s->prev_kv : NULL, s->have_prev ? s->prev_gate : NULL,
                       hd, s->buf_kv + hd, s->buf_gate + hd, width, pos, o);
            /* keep this window's a-halves for the next entry */
            for (int r = 0; r < m; r++) {
                memcpy(s->prev_kv + (size_t)r * hd, s->buf_kv + (size_t)r * width, sizeof(float) * hd);
                memcpy(s->prev_gate + (size_t)r * hd, s->buf_gate + (size_t)r * width,
                       sizeof(float) * hd);
            }
            s->have_prev = 1;
        }
        s->n_buf = 0;
        n++;
    }
    *n_out = n;
    return DSV4_OK;
}
