/* The CUDA backend: the op table over the session context (src/cuda/context.h) and the
 * existing launchers. Adapters only: tensor descriptors become launcher arguments, and
 * the workspaces some launchers need come from a scratch region of the pool reserved at
 * creation. Nothing here synchronizes except download, synchronize and destroy, and
 * nothing allocates device memory after creation except weight_load (weights are loaded
 * before the first step), so every op can be captured into a CUDA graph.
 *
 * Why a fixed scratch region rather than pool allocations released after each op: a graph
 * captured today replays into the same addresses later; scratch handed back to the pool
 * could by then belong to a tensor allocated after the capture, and a replay would
 * overwrite it. Ops on the one stream run in order, so they can all share the region. */
#include "backend/backend.h"

#include <stdlib.h>
#include <string.h>

#include "base/status.h"

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/context.h"
#include "cuda/linear.h"
#include "cuda/mhc.h"
#include "cuda/moe.h"
#include "cuda/moe_route.h"
#include "cuda/quantize.h"
#include "cuda/rmsnorm.h"

/* device.cu's error translation; cuda/device.h declares it for nvcc only (it names
 * cudaError_t, which plain C sees through cuda_runtime_api.h here). */
dsv4_status dsv4_cuda_check(cudaError_t err, const char *op);

/* One allocation on the pool stack: where it starts and the pool mark before it. */
typedef struct cuda_alloc {
    void *ptr;
    size_t mark;
    int freed;
} cuda_alloc;

typedef struct cuda_backend {
    dsv4_backend be;
    dsv4_cuda_ctx *ctx;
    void *scratch;
    size_t scratch_bytes;
    cuda_alloc *stack;
    int n_stack, cap_stack;
} cuda_backend;

static cuda_backend *cb(dsv4_backend *be) { return (cuda_backend *)be->impl; }
static cudaStream_t stream_of(dsv4_backend *be) { return dsv4_cuda_ctx_stream(cb(be)->ctx); }

/* ---------------------------------------------------------------- memory */

static void cuda_destroy(dsv4_backend *be) {
    cuda_backend *c = cb(be);
    dsv4_cuda_ctx_destroy(c->ctx); /* waits for the stream, frees the pool */
    free(c->stack);
    free(c);
}

static dsv4_status cuda_alloc_fn(dsv4_backend *be, size_t bytes, const char *what, void **ptr) {
    cuda_backend *c = cb(be);
    if (c->n_stack == c->cap_stack) {
        int cap = c->cap_stack ? 2 * c->cap_stack : 64;
        cuda_alloc *s = realloc(c->stack, sizeof *s * (size_t)cap);
        if (!s) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "alloc %s: host bookkeeping", what);
        c->stack = s, c->cap_stack = cap;
    }
    size_t mark = dsv4_cuda_ctx_mark(c->ctx);
    DSV4_TRY(dsv4_cuda_ctx_alloc(c->ctx, bytes, what, ptr));
    c->stack[c->n_stack++] = (cuda_alloc){*ptr, mark, 0};
    return DSV4_OK;
}

/* A stack: freeing the top returns its memory (and that of anything below it already
 * freed); freeing a lower block only marks it, its memory returns with the blocks above. */
static dsv4_status cuda_free_fn(dsv4_backend *be, void *ptr) {
    cuda_backend *c = cb(be);
    int i = c->n_stack - 1;
    while (i >= 0 && (c->stack[i].ptr != ptr || c->stack[i].freed)) i--;
    if (i < 0) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "free: %p was not allocated by this backend (or is freed)", ptr);
    c->stack[i].freed = 1;
    while (c->n_stack > 0 && c->stack[c->n_stack - 1].freed) {
        c->n_stack--;
        DSV4_TRY(dsv4_cuda_ctx_reset_to(c->ctx, c->stack[c->n_stack].mark));
    }
    return DSV4_OK;
}

static dsv4_status cuda_upload(dsv4_backend *be, void *dst, const void *host, size_t bytes) {
    /* From pageable memory the call returns once the bytes are staged, so the caller may
     * reuse `host`; on the stream, so the ops after it see the data. */
    return dsv4_cuda_check(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, stream_of(be)), "upload: cudaMemcpyAsync");
}

static dsv4_status cuda_download(dsv4_backend *be, void *host, const void *src, size_t bytes) {
    DSV4_TRY(dsv4_cuda_check(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, stream_of(be)),
                             "download: cudaMemcpyAsync"));
    /* pinned host memory would make the copy truly asynchronous: wait for it either way */
    return dsv4_cuda_check(cudaStreamSynchronize(stream_of(be)), "download: cudaStreamSynchronize");
}

static dsv4_status cuda_synchronize(dsv4_backend *be) { return dsv4_cuda_ctx_sync(cb(be)->ctx); }

static void *cuda_stream(dsv4_backend *be) { return (void *)stream_of(be); }

static dsv4_status cuda_weight_load(dsv4_backend *be, const dsv4_weight *w, dsv4_bweight *out) {
    dsv4_cuda_weight *dw = calloc(1, sizeof *dw);
    if (!dw) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "weight_load: host struct");
    /* its own cudaMalloc and a device-wide sync at the end (linear.cu): weights are loaded
     * before the first step, never inside one, so the data is in place before any op. */
    dsv4_status st = dsv4_cuda_weight_upload(w, dw);
    if (st != DSV4_OK) {
        free(dw);
        return st;
    }
    out->format = w->format, out->rows = w->rows, out->cols = w->cols, out->impl = dw;
    return DSV4_OK;
}

static void cuda_weight_free(dsv4_backend *be, dsv4_bweight *w) {
    if (!w->impl) return;
    /* the weight may still be read by enqueued work: wait before freeing (an API boundary) */
    dsv4_cuda_ctx_sync(cb(be)->ctx);
    dsv4_cuda_weight_free(w->impl);
    free(w->impl);
}

/* ---------------------------------------------------------------- adapters */

static dsv4_cuda_dtype cdt(const dsv4_tensor *t) { return t->dtype == DSV4_DT_BF16 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32; }

static dsv4_cuda_nvfp4_out qout(const dsv4_act_nvfp4 *q) {
    dsv4_cuda_nvfp4_out o = {q->q, q->sf, q->scale, q->mode, q->layout};
    return o;
}

/* Workspace of `bytes` from the scratch region, or OUT_OF_MEMORY naming the op. */
static dsv4_status scratch(dsv4_backend *be, size_t bytes, const char *op, void **ws) {
    cuda_backend *c = cb(be);
    if (bytes > c->scratch_bytes)
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s workspace: %zu bytes requested, the scratch region holds %zu "
                         "(dsv4_backend_cuda_options.scratch_bytes)", op, bytes, c->scratch_bytes);
    *ws = c->scratch;
    return DSV4_OK;
}

static dsv4_status cuda_rmsnorm(dsv4_backend *be, const dsv4_tensor *x, const dsv4_tensor *w, float eps,
                                const dsv4_tensor *out, const dsv4_act_nvfp4 *q) {
    dsv4_cuda_nvfp4_out o;
    if (q) o = qout(q);
    return dsv4_cuda_rmsnorm(stream_of(be), x->data, cdt(x), w ? w->data : NULL, x->ne[0], (int)x->ne[1], eps,
                             out ? out->data : NULL, out ? cdt(out) : DSV4_CUDA_F32, q ? &o : NULL);
}

static dsv4_status cuda_hc_pre(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_hc_pre_io *io) {
    const dsv4_cuda_hc_dims cd = {d->hc, d->dim, d->sinkhorn_iters, d->hc_eps, d->norm_eps};
    const int T = (int)io->X->ne[0];
    dsv4_cuda_hc_pre_args a;
    dsv4_cuda_nvfp4_out o;
    memset(&a, 0, sizeof a);
    a.workspace_bytes = dsv4_cuda_hc_pre_workspace_bytes(&cd, T);
    DSV4_TRY(scratch(be, a.workspace_bytes, "hc_pre", &a.workspace));
    a.X = io->X->data, a.x_dtype = cdt(io->X);
    a.fn = io->fn->data, a.base = io->base->data, a.scale = io->scale->data;
    a.post = io->post->data, a.comb = io->comb->data, a.x = io->x ? io->x->data : NULL;
    a.norm_w = io->norm_w ? io->norm_w->data : NULL, a.norm_eps = io->norm_eps;
    a.y = io->y ? io->y->data : NULL, a.y_dtype = io->y ? cdt(io->y) : DSV4_CUDA_F32;
    if (io->q) o = qout(io->q), a.q = &o;
    return dsv4_cuda_hc_pre(stream_of(be), &cd, T, &a);
}

static dsv4_status cuda_hc_post(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_tensor *X,
                                const dsv4_tensor *y, const dsv4_tensor *post, const dsv4_tensor *comb,
                                dsv4_cpu_hc_merge merge, const dsv4_tensor *X_out) {
    const dsv4_cuda_hc_dims cd = {d->hc, d->dim, d->sinkhorn_iters, d->hc_eps, d->norm_eps};
    return dsv4_cuda_hc_post(stream_of(be), &cd, (int)X->ne[0], X->data, cdt(X), y->data, cdt(y), post->data,
                             comb->data, (dsv4_cuda_hc_merge)merge, X_out->data);
}

static dsv4_status cuda_quantize(dsv4_backend *be, const dsv4_tensor *x, const dsv4_act_nvfp4 *q) {
    void *ws = NULL;
    if (q->mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR)
        DSV4_TRY(scratch(be, DSV4_CUDA_QUANTIZE_WORKSPACE_BYTES, "quantize_nvfp4", &ws));
    dsv4_cuda_nvfp4_out o = qout(q);
    return dsv4_cuda_quantize_nvfp4(stream_of(be), x->data, cdt(x), q->M, q->K, &o, ws);
}

static dsv4_status cuda_linear(dsv4_backend *be, const dsv4_bweight *bw, const dsv4_tensor *x,
                               const dsv4_act_nvfp4 *xq, const dsv4_tensor *y) {
    const dsv4_cuda_weight *w = bw->impl;
    dsv4_cuda_linear_args a;
    dsv4_cuda_act_nvfp4 act;
    memset(&a, 0, sizeof a);
    a.w = w;
    a.M = x ? x->ne[0] : xq->M;
    if (x) {
        if (x->dtype != DSV4_DT_BF16)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "W4A16 activations must be BF16 on the GPU (got %s)",
                             dsv4_dtype_name(x->dtype));
        a.x = x->data;
    } else {
        if (xq->mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "a per-tensor dynamic activation scale lives on the device; the "
                             "GPU linear takes STATIC (host input_scale) or DYNAMIC_TOKEN");
        act.q = xq->q, act.scale = xq->sf, act.input_scale = xq->input_scale;
        act.token_scales = xq->mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN ? xq->scale : NULL;
        a.xq = &act;
    }
    a.y = y->data;
    a.out = y->dtype == DSV4_DT_BF16 ? DSV4_CUDA_OUT_BF16 : DSV4_CUDA_OUT_F32;
    a.workspace_bytes = dsv4_cuda_linear_workspace_bytes(w, a.M);
    if (a.workspace_bytes) DSV4_TRY(scratch(be, a.workspace_bytes, "linear", &a.workspace));
    a.path = DSV4_LINEAR_AUTO;
    return dsv4_cuda_linear(&a, stream_of(be));
}

static dsv4_status cuda_moe_router(dsv4_backend *be, const dsv4_cpu_router_cfg *cfg, const dsv4_tensor *logits,
                                   const dsv4_tensor *bias, const dsv4_tensor *tid2eid, const dsv4_tensor *token_ids,
                                   const dsv4_tensor *idx, const dsv4_tensor *weights) {
    const dsv4_cuda_router_cfg c = {cfg->n_experts, cfg->topk, (int)cfg->score, cfg->normalize, cfg->scaling};
    return dsv4_cuda_moe_router(stream_of(be), &c, (int)logits->ne[0], logits->data, bias ? bias->data : NULL,
                                tid2eid ? tid2eid->data : NULL, token_ids ? token_ids->data : NULL,
                                tid2eid ? (int)tid2eid->ne[0] : 0, idx->data, weights->data);
}

static dsv4_status cuda_moe_permute(dsv4_backend *be, const dsv4_tensor *idx, int E, int tile,
                                    const dsv4_moe_layout *out) {
    return dsv4_cuda_moe_permute(stream_of(be), idx->data, (int)idx->ne[0], (int)idx->ne[1], E, tile, out);
}

static dsv4_status cuda_moe_swiglu(dsv4_backend *be, const dsv4_swiglu_io *io) {
    dsv4_cuda_swiglu_args a;
    dsv4_cuda_nvfp4_out o;
    memset(&a, 0, sizeof a);
    a.h = io->h->data, a.h_dtype = cdt(io->h), a.rows = io->h->ne[0], a.inter = (int)(io->h->ne[1] / 2);
    a.limit = io->limit, a.n_rows = io->n_rows;
    a.out = io->out ? io->out->data : NULL, a.out_dtype = io->out ? cdt(io->out) : DSV4_CUDA_F32;
    if (io->q) o = qout(io->q), a.q = &o;
    a.tile_expert = io->tile_expert, a.tile = io->tile;
    return dsv4_cuda_moe_swiglu(stream_of(be), &a);
}

static dsv4_status cuda_moe_combine(dsv4_backend *be, const dsv4_tensor *y, const dsv4_tensor *idx,
                                    const dsv4_tensor *inv, const dsv4_tensor *weights, const dsv4_tensor *shared,
                                    const dsv4_tensor *out) {
    return dsv4_cuda_moe_combine(stream_of(be), (int)idx->ne[0], (int)idx->ne[1], (int)y->ne[1], y->data, cdt(y),
                                 idx->data, inv->data, weights->data, shared ? shared->data : NULL,
                                 shared ? cdt(shared) : DSV4_CUDA_F32, out->data, cdt(out));
}

static const dsv4_backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cuda_destroy,
    .alloc = cuda_alloc_fn,
    .free = cuda_free_fn,
    .upload = cuda_upload,
    .download = cuda_download,
    .synchronize = cuda_synchronize,
    .stream = cuda_stream,
    .weight_load = cuda_weight_load,
    .weight_free = cuda_weight_free,
    .rmsnorm = cuda_rmsnorm,
    .hc_pre = cuda_hc_pre,
    .hc_post = cuda_hc_post,
    .quantize_nvfp4 = cuda_quantize,
    .linear = cuda_linear,
    .moe_router = cuda_moe_router,
    .moe_permute = cuda_moe_permute,
    .moe_swiglu = cuda_moe_swiglu,
    .moe_combine = cuda_moe_combine,
};

dsv4_status dsv4_backend_cuda(int device, const dsv4_backend_cuda_options *o, dsv4_backend **out) {
    if (!out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda backend: NULL out");
    *out = NULL;
    size_t pool = o && o->pool_bytes ? o->pool_bytes : (size_t)1 << 30;
    size_t scratch_bytes = o && o->scratch_bytes ? o->scratch_bytes : (size_t)64 << 20;
    cuda_backend *c = calloc(1, sizeof *c);
    if (!c) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "cuda backend: host struct");
    c->be.ops = &cuda_ops, c->be.impl = c, c->scratch_bytes = scratch_bytes;
    dsv4_status st = dsv4_cuda_ctx_create(device, pool, &c->ctx);
    /* the scratch region sits right above the cuBLAS workspace; _reset never goes below it
     * because the stack's marks are all taken after it */
    if (st == DSV4_OK) st = dsv4_cuda_ctx_alloc(c->ctx, scratch_bytes, "op scratch", &c->scratch);
    /* kernel attributes must be set before the first graph capture, not inside one */
    if (st == DSV4_OK) st = dsv4_cuda_linear_init();
    if (st != DSV4_OK) {
        dsv4_cuda_ctx_destroy(c->ctx);
        free(c);
        return dsv4_fail_context(st, "cuda backend (GPU %d, pool %zu bytes)", device, pool);
    }
    *out = &c->be;
    return DSV4_OK;
}

#else

dsv4_status dsv4_backend_cuda(int device, const dsv4_backend_cuda_options *o, dsv4_backend **out) {
    if (out) *out = NULL;
    return dsv4_fail(DSV4_ERR_UNSUPPORTED, "cuda backend: this build has no CUDA (nvcc was not found, or DSV4_NO_CUDA)");
}

#endif
