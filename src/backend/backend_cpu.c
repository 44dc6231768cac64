/* The CPU backend: the op table over the reference ops of src/cpu (the numerical truth).
 * Adapters only: dtype conversion at the edges (BF16 in -> fp32, fp32 -> BF16 out with
 * round-to-nearest-even, as the GPU stores), then the reference function. Two ops have no
 * stand-alone reference because dsv4_cpu_moe fuses them (the SwiGLU between the expert
 * linears and the weighted combine); they are written here with moe.c's expression and
 * accumulation order, and tests/test_backend_ops.c checks router -> permute -> linear ->
 * swiglu -> linear -> combine through this table against dsv4_cpu_moe bit for bit. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "base/status.h"
#include "cpu/linear.h"
#include "format/fp.h"
#include "format/quant.h"

/* ---------------------------------------------------------------- dtype edges */

/* fp32 view of an F32/BF16 tensor: the data itself for F32 (*owned = NULL), else a converted
 * copy the caller frees through *owned. */
static dsv4_status as_f32(const char *op, const dsv4_tensor *t, const float **out, float **owned) {
    *owned = NULL;
    if (t->dtype == DSV4_DT_F32) {
        *out = t->data;
        return DSV4_OK;
    }
    size_t n = (size_t)dsv4_tensor_elems(t);
    float *f = malloc(sizeof(float) * (n ? n : 1));
    if (!f) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: %zu floats of scratch", op, n);
    const uint16_t *b = t->data;
    for (size_t i = 0; i < n; i++) f[i] = dsv4_bf16_decode(b[i]);
    *out = *owned = f;
    return DSV4_OK;
}

/* Writes n fp32 values into t (F32 copy or BF16 encode), starting at element `at`. */
static void store(const dsv4_tensor *t, size_t at, const float *v, size_t n) {
    if (t->dtype == DSV4_DT_F32) {
        if ((float *)t->data + at != v) memmove((float *)t->data + at, v, sizeof(float) * n);
        return;
    }
    uint16_t *b = (uint16_t *)t->data + at;
    for (size_t i = 0; i < n; i++) b[i] = dsv4_bf16_encode(v[i]);
}

/* The NVFP4 of the BF16 rounding of y [M, K] (what the fused GPU norms quantize). */
static dsv4_status quantize_bf16_rounded(const char *op, const float *y, int64_t M, int64_t K, const dsv4_act_nvfp4 *q) {
    size_t n = (size_t)(M * K);
    float *r = malloc(sizeof(float) * (n ? n : 1));
    if (!r) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: %zu floats of scratch", op, n);
    for (size_t i = 0; i < n; i++) r[i] = dsv4_bf16_round(y[i]);
    dsv4_status st = dsv4_cpu_quantize_nvfp4_act(r, M, K, q->mode, q->layout, q->scale, q->q, q->sf);
    free(r);
    return st;
}

/* ---------------------------------------------------------------- memory */

static dsv4_status cpu_alloc(dsv4_backend *be, size_t bytes, const char *what, void **ptr) {
    /* 64-byte aligned (a cache line, and enough for any vector load); size rounded up
     * because aligned_alloc wants a multiple of the alignment. */
    size_t n = (bytes + 63) / 64 * 64;
    *ptr = aligned_alloc(64, n ? n : 64);
    if (!*ptr) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "alloc %s: %zu bytes of host memory", what, bytes);
    return DSV4_OK;
}

static dsv4_status cpu_free(dsv4_backend *be, void *ptr) {
    free(ptr);
    return DSV4_OK;
}

static dsv4_status cpu_copy(dsv4_backend *be, void *dst, const void *src, size_t bytes) {
    memmove(dst, src, bytes);
    return DSV4_OK;
}

static dsv4_status cpu_weight_load(dsv4_backend *be, const dsv4_weight *w, dsv4_bweight *out) {
    /* Borrowed: the weight struct is copied, its bytes (the mapped checkpoint) are not. */
    dsv4_weight *c = malloc(sizeof *c);
    if (!c) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "weight_load: host struct");
    *c = *w;
    out->format = w->format, out->rows = w->rows, out->cols = w->cols, out->impl = c;
    return DSV4_OK;
}

static void cpu_weight_free(dsv4_backend *be, dsv4_bweight *w) { free(w->impl); }

/* ---------------------------------------------------------------- norms and mHC */

static dsv4_status cpu_rmsnorm(dsv4_backend *be, const dsv4_tensor *x, const dsv4_tensor *w, float eps,
                               const dsv4_tensor *out, const dsv4_act_nvfp4 *q) {
    const int rows = (int)x->ne[0], dim = (int)x->ne[1];
    const float *xf;
    float *owned, *y = malloc(sizeof(float) * ((size_t)rows * dim + 1));
    if (!y) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
    dsv4_status st = as_f32("rmsnorm", x, &xf, &owned);
    if (st == DSV4_OK) st = dsv4_cpu_rmsnorm(y, xf, w ? w->data : NULL, rows, dim, eps);
    if (st == DSV4_OK && out) store(out, 0, y, (size_t)rows * dim);
    if (st == DSV4_OK && q) st = quantize_bf16_rounded("rmsnorm", y, rows, dim, q);
    free(owned);
    free(y);
    return st;
}

static dsv4_status cpu_hc_pre(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_hc_pre_io *io) {
    const int T = (int)io->X->ne[0];
    const size_t nx = (size_t)T * d->dim;
    const float *X;
    float *owned, *x = io->x ? io->x->data : malloc(sizeof(float) * (nx + 1)), *y = NULL;
    dsv4_status st = x ? as_f32("hc_pre", io->X, &X, &owned) : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
    if (st != DSV4_OK) {
        if (!io->x) free(x);
        return st;
    }
    st = dsv4_cpu_hc_pre(d, T, X, io->fn->data, io->base->data, io->scale->data, x, io->post->data, io->comb->data);
    if (st == DSV4_OK && (io->y || io->q)) {
        y = malloc(sizeof(float) * (nx + 1));
        st = y ? dsv4_cpu_rmsnorm(y, x, io->norm_w ? io->norm_w->data : NULL, T, d->dim, io->norm_eps)
               : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
    }
    if (st == DSV4_OK && io->y) store(io->y, 0, y, nx);
    if (st == DSV4_OK && io->q) st = quantize_bf16_rounded("hc_pre", y, T, d->dim, io->q);
    free(owned);
    free(y);
    if (!io->x) free(x);
    return st;
}

static dsv4_status cpu_hc_post(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_tensor *X,
                               const dsv4_tensor *y, const dsv4_tensor *post, const dsv4_tensor *comb,
                               dsv4_cpu_hc_merge merge, const dsv4_tensor *X_out) {
    const int T = (int)X->ne[0];
    const size_t n = (size_t)dsv4_tensor_elems(X);
    const float *Xf, *yf = NULL;
    float *ox = NULL, *oy = NULL;
    float *out = X_out->dtype == DSV4_DT_F32 ? X_out->data : malloc(sizeof(float) * (n + 1));
    dsv4_status st = out ? as_f32("hc_post", X, &Xf, &ox) : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == DSV4_OK) st = as_f32("hc_post", y, &yf, &oy);
    if (st == DSV4_OK) st = dsv4_cpu_hc_post(d, T, Xf, yf, post->data, comb->data, merge, out);
    if (st == DSV4_OK) store(X_out, 0, out, n);
    free(ox);
    free(oy);
    if (out != X_out->data) free(out);
    return st;
}

static dsv4_status cpu_quantize(dsv4_backend *be, const dsv4_tensor *x, const dsv4_act_nvfp4 *q) {
    const float *xf;
    float *owned;
    DSV4_TRY(as_f32("quantize_nvfp4", x, &xf, &owned));
    dsv4_status st = dsv4_cpu_quantize_nvfp4_act(xf, q->M, q->K, q->mode, q->layout, q->scale, q->q, q->sf);
    free(owned);
    return st;
}

/* ---------------------------------------------------------------- linear */

static dsv4_status cpu_linear(dsv4_backend *be, const dsv4_bweight *bw, const dsv4_tensor *x, const dsv4_act_nvfp4 *xq,
                              const dsv4_tensor *y) {
    const dsv4_weight *w = bw->impl;
    const int64_t M = x ? x->ne[0] : xq->M, K = w->cols, N = w->rows;
    const float *xf = NULL;
    float *owned = NULL, *yf = y->dtype == DSV4_DT_F32 ? y->data : malloc(sizeof(float) * (size_t)(M * N + 1));
    if (!yf) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
    dsv4_status st = DSV4_OK;
    if (x) {
        st = as_f32("linear", x, &xf, &owned);
    } else {
        /* W4A4: the activation's dequantized values e2m1·e4m3·input_scale, then the fp32
         * reference. That is dsv4_cpu_linear's own W4A4 mode after its quantize round trip. */
        owned = malloc(sizeof(float) * (size_t)(M * K + 1));
        if (!owned) st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
        for (int64_t m = 0; st == DSV4_OK && m < M; m++) {
            float s = xq->mode == DSV4_ACT_SCALE_STATIC ? xq->input_scale
                    : xq->mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN ? xq->scale[m] : xq->scale[0];
            dsv4_nvfp4_dequantize(xq->q + m * K / 2, xq->sf + m * K / 16, s, 1, K, owned + m * K);
        }
        xf = owned;
    }
    if (st == DSV4_OK) st = dsv4_cpu_linear(w, xf, M, yf, DSV4_W4A16);
    if (st == DSV4_OK) store(y, 0, yf, (size_t)(M * N));
    free(owned);
    if (yf != y->data) free(yf);
    return st;
}

/* ---------------------------------------------------------------- MoE */

static dsv4_status cpu_moe_router(dsv4_backend *be, const dsv4_cpu_router_cfg *cfg, const dsv4_tensor *logits,
                                  const dsv4_tensor *bias, const dsv4_tensor *tid2eid, const dsv4_tensor *token_ids,
                                  const dsv4_tensor *idx, const dsv4_tensor *weights) {
    /* int and int32_t are the same type on every platform dsv4 builds for */
    return dsv4_cpu_router(cfg, (int)logits->ne[0], logits->data, bias ? bias->data : NULL,
                           tid2eid ? tid2eid->data : NULL, token_ids ? token_ids->data : NULL,
                           tid2eid ? (int)tid2eid->ne[0] : 0, idx->data, weights->data);
}

static dsv4_status cpu_moe_permute(dsv4_backend *be, const dsv4_tensor *idx, int E, int tile,
                                   const dsv4_moe_layout *out) {
    return dsv4_cpu_moe_permute(idx->data, (int)idx->ne[0], (int)idx->ne[1], E, tile, out);
}

/* Byte of block scale (r, c) in the 128x4 swizzled layout (format/quant.h). */
static size_t swz(int64_t r, int64_t c, int64_t kb) {
    const int64_t nkt = (kb + 3) / 4;
    return (size_t)((r / 128) * nkt * 512 + (c / 4) * 512 + (r % 32) * 16 + ((r % 128) / 32) * 4 + (c % 4));
}

static dsv4_status cpu_moe_swiglu(dsv4_backend *be, const dsv4_swiglu_io *io) {
    const int64_t rows = io->h->ne[0], I = io->h->ne[1] / 2, kb = I / 16;
    const int64_t used = io->n_rows ? (*io->n_rows < rows ? *io->n_rows : rows) : rows;
    const dsv4_act_nvfp4 *q = io->q;
    /* as the kernel: the tile map matters only to a STATIC NVFP4 output (per-expert scales) */
    const int32_t *tiles = q && q->mode == DSV4_ACT_SCALE_STATIC ? io->tile_expert : NULL;
    const float *h;
    float *owned, *a = malloc(sizeof(float) * (size_t)(I + 1));
    uint8_t *sf = malloc((size_t)kb + 1);
    dsv4_status st = a && sf ? as_f32("moe_swiglu", io->h, &h, &owned) : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
    if (st != DSV4_OK) {
        free(a), free(sf);
        return st;
    }
    for (int64_t r = 0; r < used && st == DSV4_OK; r++) {
        int expert = 0;
        /* a row of an incomplete last tile, or of a tile no expert owns: left unwritten */
        if (tiles && (r / io->tile >= rows / io->tile || (expert = tiles[r / io->tile]) < 0)) continue;
        const float *g = h + r * 2 * I, *u = g + I;
        for (int64_t i = 0; i < I; i++) { /* moe.c's expression, in its order */
            float gi = fminf(g[i], io->limit);
            float ui = fminf(fmaxf(u[i], -io->limit), io->limit);
            a[i] = gi / (1.0f + expf(-gi)) * ui;
        }
        if (io->out) store(io->out, (size_t)(r * I), a, (size_t)I);
        if (!q) continue;
        /* row by row (each row may have its own scale): quantize linearly, then place */
        float s = q->mode == DSV4_ACT_SCALE_STATIC ? q->scale[expert] : 0.0f;
        st = dsv4_cpu_quantize_nvfp4_act(a, 1, I, q->mode, DSV4_SF_LINEAR, &s, q->q + r * I / 2, sf);
        if (q->mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN) q->scale[r] = s;
        if (q->layout == DSV4_SF_LINEAR) {
            memcpy(q->sf + r * kb, sf, (size_t)kb);
        } else {
            for (int64_t c = 0; c < (kb + 3) / 4 * 4; c++) q->sf[swz(r, c, kb)] = c < kb ? sf[c] : 0;
        }
    }
    /* the swizzled layout's padding rows hold zero scales, as the kernel writes them */
    if (st == DSV4_OK && q && q->layout == DSV4_SF_SWIZZLED)
        for (int64_t r = rows; r < (rows + 127) / 128 * 128; r++)
            for (int64_t c = 0; c < (kb + 3) / 4 * 4; c++) q->sf[swz(r, c, kb)] = 0;
    free(owned), free(a), free(sf);
    return st;
}

static dsv4_status cpu_moe_combine(dsv4_backend *be, const dsv4_tensor *y, const dsv4_tensor *idx,
                                   const dsv4_tensor *inv, const dsv4_tensor *weights, const dsv4_tensor *shared,
                                   const dsv4_tensor *out) {
    const int64_t T = idx->ne[0], k = idx->ne[1], D = y->ne[1], rows = y->ne[0];
    const int32_t *ids = idx->data, *rv = inv->data;
    const float *w = weights->data, *yf, *sf = NULL;
    float *oy, *osh = NULL, *acc = malloc(sizeof(float) * (size_t)(D + 1));
    dsv4_status st = acc ? as_f32("moe_combine", y, &yf, &oy) : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory");
    if (st != DSV4_OK) {
        free(acc);
        return st;
    }
    if (shared) st = as_f32("moe_combine", shared, &sf, &osh);
    for (int64_t t = 0; t < T && st == DSV4_OK; t++) {
        /* the token's slots in dsv4_cpu_moe's order: expert ascending, then slot (a stable
         * insertion sort of at most 8); dropped slots (inv -1, expert out of range) add nothing */
        int ord[8], n = 0;
        for (int j = 0; j < k; j++) {
            int64_t p = t * k + j;
            if (rv[p] < 0 || rv[p] >= rows || ids[p] < 0) continue;
            int at = n++;
            while (at > 0 && ids[t * k + ord[at - 1]] > ids[p]) ord[at] = ord[at - 1], at--;
            ord[at] = j;
        }
        for (int64_t c = 0; c < D; c++) acc[c] = 0.0f;
        for (int i = 0; i < n; i++) {
            const float *yr = yf + (size_t)rv[t * k + ord[i]] * D, wt = w[t * k + ord[i]];
            for (int64_t c = 0; c < D; c++) acc[c] += yr[c] * wt;
        }
        if (sf)
            for (int64_t c = 0; c < D; c++) acc[c] += sf[t * D + c];
        store(out, (size_t)(t * D), acc, (size_t)D);
    }
    free(oy);
    free(osh);
    free(acc);
    return st;
}

static const dsv4_backend_ops cpu_ops = {
    .name = "cpu",
    .destroy = NULL,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .synchronize = NULL,
    .stream = NULL,
    .weight_load = cpu_weight_load,
    .weight_free = cpu_weight_free,
    .rmsnorm = cpu_rmsnorm,
    .hc_pre = cpu_hc_pre,
    .hc_post = cpu_hc_post,
    .quantize_nvfp4 = cpu_quantize,
    .linear = cpu_linear,
    .moe_router = cpu_moe_router,
    .moe_permute = cpu_moe_permute,
    .moe_swiglu = cpu_moe_swiglu,
    .moe_combine = cpu_moe_combine,
};

dsv4_backend *dsv4_backend_cpu(void) {
    static dsv4_backend cpu = {&cpu_ops, NULL};
    return &cpu;
}
