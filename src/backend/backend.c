/* The op table's entry points: argument checks shared by every backend, then the table.
 * Checking here once means a backend cannot accept a shape another one rejects, so the
 * same call fails the same way on the CPU and on the GPU (the test relies on it). */
#include "backend/backend.h"

#include <stdio.h>
#include <string.h>

#include "base/status.h"
#include "format/quant.h"

dsv4_tensor dsv4_tensor_1d(void *data, dsv4_dtype dt, int64_t n0) {
    dsv4_tensor t = {data, dt, 1, {n0, 1, 1, 1}};
    return t;
}
dsv4_tensor dsv4_tensor_2d(void *data, dsv4_dtype dt, int64_t n0, int64_t n1) {
    dsv4_tensor t = {data, dt, 2, {n0, n1, 1, 1}};
    return t;
}
dsv4_tensor dsv4_tensor_3d(void *data, dsv4_dtype dt, int64_t n0, int64_t n1, int64_t n2) {
    dsv4_tensor t = {data, dt, 3, {n0, n1, n2, 1}};
    return t;
}

int64_t dsv4_tensor_elems(const dsv4_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->ne[i];
    return n;
}

size_t dsv4_tensor_nbytes(const dsv4_tensor *t) {
    return (size_t)dsv4_tensor_elems(t) * (size_t)(dsv4_dtype_bits(t->dtype) / 8);
}

void dsv4_act_nvfp4_sizes(int64_t M, int64_t K, dsv4_act_scale_mode mode, dsv4_sf_layout layout, size_t *q_bytes,
                          size_t *sf_bytes, size_t *scale_bytes) {
    *q_bytes = (size_t)(M * K / 2);
    *sf_bytes = layout == DSV4_SF_SWIZZLED ? dsv4_swizzled_scale_bytes(M, K / 16) : (size_t)(M * K / 16);
    *scale_bytes = sizeof(float) * (mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN ? (size_t)M : 1);
}

/* ---------------------------------------------------------------- checks */

static const char *shape_str(const dsv4_tensor *t, char *buf, size_t len) {
    int n = snprintf(buf, len, "%s [", dsv4_dtype_name(t->dtype));
    for (int i = 0; i < t->ndim && n > 0 && (size_t)n < len; i++)
        n += snprintf(buf + n, len - (size_t)n, i ? ", %lld" : "%lld", (long long)t->ne[i]);
    if (n > 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, "]");
    return buf;
}

/* t must exist, have `ndim` dims equal to the given ones (-1: any) and one of two dtypes
 * (pass the same twice for one). */
static dsv4_status want(const char *op, const char *name, const dsv4_tensor *t, dsv4_dtype a, dsv4_dtype b, int ndim,
                        int64_t n0, int64_t n1, int64_t n2) {
    char buf[96];
    if (!t || !t->data) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: %s is NULL", op, name);
    if (t->dtype != a && t->dtype != b)
        return dsv4_fail(DSV4_ERR_DTYPE, "%s: %s is %s, want %s%s%s", op, name, shape_str(t, buf, sizeof buf),
                         dsv4_dtype_name(a), a != b ? " or " : "", a != b ? dsv4_dtype_name(b) : "");
    const int64_t ne[3] = {n0, n1, n2};
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->ne[i] >= 0 && (ne[i] < 0 || t->ne[i] == ne[i]);
    if (!ok) {
        char w[64];
        int n = snprintf(w, sizeof w, "[");
        for (int i = 0; i < ndim; i++)
            n += ne[i] < 0 ? snprintf(w + n, sizeof w - (size_t)n, i ? ", *" : "*")
                           : snprintf(w + n, sizeof w - (size_t)n, i ? ", %lld" : "%lld", (long long)ne[i]);
        snprintf(w + n, sizeof w - (size_t)n, "]");
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: %s is %s, want %s", op, name, shape_str(t, buf, sizeof buf), w);
    }
    return DSV4_OK;
}

#define F32 DSV4_DT_F32
#define BF16 DSV4_DT_BF16
#define I32 DSV4_DT_I32

static dsv4_status want_act(const char *op, const char *name, const dsv4_act_nvfp4 *q, int64_t M, int64_t K,
                            int allow_tensor) {
    if (!q->q || !q->sf || !q->scale) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: %s has a NULL buffer", op, name);
    if (q->M != M || q->K != K || K % 16)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: %s is NVFP4 [%lld, %lld], want [%lld, %lld] with K a multiple of 16", op,
                         name, (long long)q->M, (long long)q->K, (long long)M, (long long)K);
    if ((unsigned)q->mode > DSV4_ACT_SCALE_DYNAMIC_TOKEN || (unsigned)q->layout > DSV4_SF_SWIZZLED)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: %s has scale mode %d, layout %d", op, name, (int)q->mode,
                         (int)q->layout);
    if (!allow_tensor && q->mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR)
        return dsv4_fail(DSV4_ERR_UNSUPPORTED, "%s: %s: a fused NVFP4 output cannot take a per-tensor dynamic scale "
                         "(it needs the amax of the whole tensor first)", op, name);
    return DSV4_OK;
}

/* Runs a table entry; a failure inside it gets "<backend> <op>: " in front, so the message
 * names both whatever the backend's own code said. */
#define CALL(be, op, ...)                                                                                          \
    do {                                                                                                           \
        if (!(be)->ops->op)                                                                                        \
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "%s: the %s backend has no such op", #op, (be)->ops->name);     \
        dsv4_status st_ = (be)->ops->op(be, __VA_ARGS__);                                                          \
        return st_ == DSV4_OK ? st_ : dsv4_fail_context(st_, "%s %s", (be)->ops->name, #op);                      \
    } while (0)

#define NEED_BE(op)                                                                                                \
    do {                                                                                                           \
        if (!be) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL backend", op);                              \
    } while (0)

/* ---------------------------------------------------------------- memory */

void dsv4_backend_destroy(dsv4_backend *be) {
    if (be && be->ops->destroy) be->ops->destroy(be);
}

const char *dsv4_backend_name(const dsv4_backend *be) { return be ? be->ops->name : "(none)"; }

dsv4_status dsv4_backend_alloc(dsv4_backend *be, size_t bytes, const char *what, void **ptr) {
    NEED_BE("alloc");
    if (!ptr) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "alloc: NULL ptr");
    *ptr = NULL;
    CALL(be, alloc, bytes, what ? what : "buffer", ptr);
}

dsv4_status dsv4_backend_free(dsv4_backend *be, void *ptr) {
    NEED_BE("free");
    if (!ptr) return DSV4_OK;
    CALL(be, free, ptr);
}

dsv4_status dsv4_backend_upload(dsv4_backend *be, void *dst, const void *host, size_t bytes) {
    NEED_BE("upload");
    if (!bytes) return DSV4_OK;
    if (!dst || !host) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "upload: NULL pointer");
    CALL(be, upload, dst, host, bytes);
}

dsv4_status dsv4_backend_download(dsv4_backend *be, void *host, const void *src, size_t bytes) {
    NEED_BE("download");
    if (!bytes) return DSV4_OK;
    if (!src || !host) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "download: NULL pointer");
    CALL(be, download, host, src, bytes);
}

dsv4_status dsv4_backend_synchronize(dsv4_backend *be) {
    NEED_BE("synchronize");
    if (!be->ops->synchronize) return DSV4_OK; /* the CPU has nothing in flight */
    dsv4_status st = be->ops->synchronize(be);
    return st == DSV4_OK ? st : dsv4_fail_context(st, "%s synchronize", be->ops->name);
}

void *dsv4_backend_stream(dsv4_backend *be) { return be && be->ops->stream ? be->ops->stream(be) : NULL; }

dsv4_status dsv4_backend_weight_load(dsv4_backend *be, const dsv4_weight *w, dsv4_bweight *out) {
    NEED_BE("weight_load");
    if (!w || !out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "weight_load: NULL argument");
    memset(out, 0, sizeof *out);
    CALL(be, weight_load, w, out);
}

void dsv4_backend_weight_free(dsv4_backend *be, dsv4_bweight *w) {
    if (be && w && be->ops->weight_free) be->ops->weight_free(be, w);
    if (w) memset(w, 0, sizeof *w);
}

/* ---------------------------------------------------------------- ops */

dsv4_status dsv4_backend_rmsnorm(dsv4_backend *be, const dsv4_tensor *x, const dsv4_tensor *w, float eps,
                                 const dsv4_tensor *out, const dsv4_act_nvfp4 *q) {
    static const char op[] = "rmsnorm";
    NEED_BE(op);
    DSV4_TRY(want(op, "x", x, F32, BF16, 2, -1, -1, 0));
    const int64_t rows = x->ne[0], dim = x->ne[1];
    if (dim <= 0 || dim > INT32_MAX || rows > INT32_MAX)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: bad sizes rows=%lld dim=%lld", op, (long long)rows, (long long)dim);
    if (w) DSV4_TRY(want(op, "w", w, F32, F32, 1, dim, 0, 0));
    if (!out && !q) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: neither out nor q given", op);
    if (out) DSV4_TRY(want(op, "out", out, F32, BF16, 2, rows, dim, 0));
    if (q) DSV4_TRY(want_act(op, "q", q, rows, dim, 0));
    CALL(be, rmsnorm, x, w, eps, out, q);
}

dsv4_status dsv4_backend_hc_pre(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_hc_pre_io *io) {
    static const char op[] = "hc_pre";
    NEED_BE(op);
    if (!d || !io) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL argument", op);
    const int64_t hc = d->hc, D = d->dim, nmix = (2 + hc) * hc;
    if (hc <= 0 || D <= 0 || d->sinkhorn_iters < 1)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: bad dims hc=%d D=%d iters=%d", op, d->hc, d->dim, d->sinkhorn_iters);
    DSV4_TRY(want(op, "X", io->X, F32, BF16, 3, -1, hc, D));
    const int64_t T = io->X->ne[0];
    DSV4_TRY(want(op, "fn", io->fn, F32, F32, 2, nmix, hc * D, 0));
    DSV4_TRY(want(op, "base", io->base, F32, F32, 1, nmix, 0, 0));
    DSV4_TRY(want(op, "scale", io->scale, F32, F32, 1, 3, 0, 0));
    DSV4_TRY(want(op, "post", io->post, F32, F32, 2, T, hc, 0));
    DSV4_TRY(want(op, "comb", io->comb, F32, F32, 3, T, hc, hc));
    if (io->x) DSV4_TRY(want(op, "x", io->x, F32, F32, 2, T, D, 0));
    if (io->norm_w) DSV4_TRY(want(op, "norm_w", io->norm_w, F32, F32, 1, D, 0, 0));
    if (io->y) DSV4_TRY(want(op, "y", io->y, F32, BF16, 2, T, D, 0));
    if (io->q) DSV4_TRY(want_act(op, "q", io->q, T, D, 0));
    CALL(be, hc_pre, d, io);
}

dsv4_status dsv4_backend_hc_post(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_tensor *X,
                                 const dsv4_tensor *y, const dsv4_tensor *post, const dsv4_tensor *comb,
                                 dsv4_cpu_hc_merge merge, const dsv4_tensor *X_out) {
    static const char op[] = "hc_post";
    NEED_BE(op);
    if (!d) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL dims", op);
    if (d->hc <= 0 || d->dim <= 0) return dsv4_fail(DSV4_ERR_SHAPE, "%s: bad dims hc=%d D=%d", op, d->hc, d->dim);
    if ((unsigned)merge > DSV4_CPU_HC_MERGE_FP32) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: merge %d", op, (int)merge);
    DSV4_TRY(want(op, "X", X, F32, BF16, 3, -1, d->hc, d->dim));
    const int64_t T = X->ne[0];
    DSV4_TRY(want(op, "y", y, F32, BF16, 2, T, d->dim, 0));
    DSV4_TRY(want(op, "post", post, F32, F32, 2, T, d->hc, 0));
    DSV4_TRY(want(op, "comb", comb, F32, F32, 3, T, d->hc, d->hc));
    DSV4_TRY(want(op, "X_out", X_out, X->dtype, X->dtype, 3, T, d->hc, d->dim));
    if (X_out->data == X->data) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: X_out may not alias X", op);
    CALL(be, hc_post, d, X, y, post, comb, merge, X_out);
}

dsv4_status dsv4_backend_quantize_nvfp4(dsv4_backend *be, const dsv4_tensor *x, const dsv4_act_nvfp4 *q) {
    static const char op[] = "quantize_nvfp4";
    NEED_BE(op);
    DSV4_TRY(want(op, "x", x, F32, BF16, 2, -1, -1, 0));
    if (!q) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL q", op);
    if (x->ne[1] <= 0) return dsv4_fail(DSV4_ERR_SHAPE, "%s: K = %lld", op, (long long)x->ne[1]);
    DSV4_TRY(want_act(op, "q", q, x->ne[0], x->ne[1], 1));
    CALL(be, quantize_nvfp4, x, q);
}

dsv4_status dsv4_backend_linear(dsv4_backend *be, const dsv4_bweight *w, const dsv4_tensor *x,
                                const dsv4_act_nvfp4 *xq, const dsv4_tensor *y) {
    static const char op[] = "linear";
    NEED_BE(op);
    if (!w || !w->impl) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: weight not loaded", op);
    if (!x == !xq) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: give exactly one of x (W4A16) and xq (W4A4)", op);
    const int64_t M = x ? x->ne[0] : xq->M;
    if (x) DSV4_TRY(want(op, "x", x, F32, BF16, 2, -1, w->cols, 0));
    if (xq) {
        DSV4_TRY(want_act(op, "xq", xq, M, w->cols, 1));
        if (xq->layout != DSV4_SF_LINEAR)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "%s: W4A4 activations need LINEAR block scales", op);
        if (xq->mode == DSV4_ACT_SCALE_STATIC && !(xq->input_scale > 0))
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: STATIC activations need input_scale > 0 on the host", op);
    }
    DSV4_TRY(want(op, "y", y, F32, BF16, 2, M, w->rows, 0));
    CALL(be, linear, w, x, xq, y);
}

dsv4_status dsv4_backend_moe_router(dsv4_backend *be, const dsv4_cpu_router_cfg *cfg, const dsv4_tensor *logits,
                                    const dsv4_tensor *bias, const dsv4_tensor *tid2eid,
                                    const dsv4_tensor *token_ids, const dsv4_tensor *idx,
                                    const dsv4_tensor *weights) {
    static const char op[] = "moe_router";
    NEED_BE(op);
    if (!cfg) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL cfg", op);
    if (cfg->n_experts <= 0 || cfg->topk <= 0 || (!tid2eid && cfg->topk > cfg->n_experts))
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: E=%d k=%d", op, cfg->n_experts, cfg->topk);
    if ((unsigned)cfg->score > DSV4_CPU_SCORE_SOFTMAX)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: score function %d", op, (int)cfg->score);
    DSV4_TRY(want(op, "logits", logits, F32, F32, 2, -1, cfg->n_experts, 0));
    const int64_t T = logits->ne[0];
    if (bias) DSV4_TRY(want(op, "bias", bias, F32, F32, 1, cfg->n_experts, 0, 0));
    if (!tid2eid != !token_ids)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: hash routing needs both tid2eid and token_ids", op);
    if (tid2eid) {
        DSV4_TRY(want(op, "tid2eid", tid2eid, I32, I32, 2, -1, cfg->topk, 0));
        DSV4_TRY(want(op, "token_ids", token_ids, I32, I32, 1, T, 0, 0));
    }
    DSV4_TRY(want(op, "idx", idx, I32, I32, 2, T, cfg->topk, 0));
    DSV4_TRY(want(op, "weights", weights, F32, F32, 2, T, cfg->topk, 0));
    CALL(be, moe_router, cfg, logits, bias, tid2eid, token_ids, idx, weights);
}

dsv4_status dsv4_backend_moe_permute(dsv4_backend *be, const dsv4_tensor *idx, int E, int tile,
                                     const dsv4_moe_layout *out) {
    static const char op[] = "moe_permute";
    NEED_BE(op);
    DSV4_TRY(want(op, "idx", idx, I32, I32, 2, -1, -1, 0));
    if (idx->ne[0] > INT32_MAX || idx->ne[1] > INT32_MAX ||
        dsv4_moe_max_rows((int)idx->ne[0], (int)idx->ne[1], E, tile) < 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: T=%lld k=%lld E=%d tile=%d", op, (long long)idx->ne[0],
                         (long long)idx->ne[1], E, tile);
    if (!out || !out->counts || !out->offsets || !out->row_token || !out->tile_expert || !out->inv)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: a layout array is NULL", op);
    CALL(be, moe_permute, idx, E, tile, out);
}

dsv4_status dsv4_backend_moe_swiglu(dsv4_backend *be, const dsv4_swiglu_io *io) {
    static const char op[] = "moe_swiglu";
    NEED_BE(op);
    if (!io) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NULL io", op);
    DSV4_TRY(want(op, "h", io->h, F32, BF16, 2, -1, -1, 0));
    const int64_t rows = io->h->ne[0], I = io->h->ne[1] / 2;
    if (io->h->ne[1] % 2 || I <= 0 || I > INT32_MAX)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: h has %lld columns, want 2·I", op, (long long)io->h->ne[1]);
    if (!io->out && !io->q) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: neither out nor q given", op);
    if (io->out) DSV4_TRY(want(op, "out", io->out, F32, BF16, 2, rows, I, 0));
    if (io->q) DSV4_TRY(want_act(op, "q", io->q, rows, I, 0));
    if (io->tile_expert && io->tile <= 0) return dsv4_fail(DSV4_ERR_SHAPE, "%s: tile %d", op, io->tile);
    CALL(be, moe_swiglu, io);
}

dsv4_status dsv4_backend_moe_combine(dsv4_backend *be, const dsv4_tensor *y, const dsv4_tensor *idx,
                                     const dsv4_tensor *inv, const dsv4_tensor *weights, const dsv4_tensor *shared,
                                     const dsv4_tensor *out) {
    static const char op[] = "moe_combine";
    NEED_BE(op);
    DSV4_TRY(want(op, "y", y, F32, BF16, 2, -1, -1, 0));
    const int64_t D = y->ne[1];
    DSV4_TRY(want(op, "idx", idx, I32, I32, 2, -1, -1, 0));
    const int64_t T = idx->ne[0], k = idx->ne[1];
    if (D <= 0 || k <= 0 || k > 8)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: D=%lld k=%lld (k <= 8)", op, (long long)D, (long long)k);
    DSV4_TRY(want(op, "inv", inv, I32, I32, 2, T, k, 0));
    DSV4_TRY(want(op, "weights", weights, F32, F32, 2, T, k, 0));
    if (shared) DSV4_TRY(want(op, "shared", shared, F32, BF16, 2, T, D, 0));
    DSV4_TRY(want(op, "out", out, F32, BF16, 2, T, D, 0));
    CALL(be, moe_combine, y, idx, inv, weights, shared, out);
}
