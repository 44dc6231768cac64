// The MoE layer on the GPU (moe_layer.h): active-expert list, grouped expert GEMMs in the
// decode and prefill regimes, the preallocated workspace and the layer forward.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/linear_grouped.cuh"
#include "cuda/moe.h"
#include "cuda/moe_layer.h"
#include "cuda/quantize.h"

// ---- active experts ----

// One block of ceil(E/32) warps: thread e flags counts[e] > 0, a ballot gives its rank in its
// warp, the warp totals in shared memory its offset. Ascending ids without atomics, so the
// list (and the decode grid's expert order) is the same on every run.
__global__ void k_moe_active(const int32_t *counts, int E, int32_t *active, int32_t *n_active) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ int warp_total[DSV4_CUDA_MOE_MAX_EXPERTS / 32 + 1];
    const int t = threadIdx.x, lane = t % 32, warp = t / 32, n_warps = blockDim.x / 32;
    const bool flag = t < E && counts[t] > 0;
    const unsigned b = __ballot_sync(0xffffffffu, flag);
    if (lane == 0) warp_total[warp] = __popc(b);
    __syncthreads();
    int base = 0, total = 0;
    for (int i = 0; i < n_warps; i++) {
        if (i < warp) base += warp_total[i];
        total += warp_total[i];
    }
    if (flag) active[base + __popc(b & ((1u << lane) - 1u))] = t;
    if (t < E && t >= total) active[t] = -1; // ranks < total <= t: never a slot written above
    if (t == 0) *n_active = total;
}

extern "C" dsv4_status dsv4_cuda_moe_active(cudaStream_t stream, const int32_t *counts, int E, int32_t *active,
                                            int32_t *n_active) {
    if (E < 1 || E > DSV4_CUDA_MOE_MAX_EXPERTS)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_active: E = %d (1 .. %d)", E, DSV4_CUDA_MOE_MAX_EXPERTS);
    if (!counts || !active || !n_active) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_active: NULL argument");
    (void)dsv4_launch_pdl(k_moe_active, dim3(1), dim3((E + 31) / 32 * 32), 0, stream, counts, E, active, n_active);
    DSV4_CUDA_LAUNCHED("moe_active launch");
    return DSV4_OK;
}

// ---- grouped linear ----

extern "C" int dsv4_cuda_moe_prefill_tile(void) { return linear_prefill_group_tile(); }

extern "C" int dsv4_cuda_moe_prefill_tile_for(int T, int k, int E, int64_t D, int64_t I, int w4a4) {
    const int act = w4a4 ? LIN_ACT_NVFP4 : LIN_ACT_BF16;
    if (!linear_prefill_wgmma_takes(LIN_NVFP4, act, D) || !linear_prefill_wgmma_takes(LIN_NVFP4, act, I) || E < 1)
        return linear_prefill_group_tile();
    // the narrowest token tile that holds an average expert's rows (the grid grows with the
    // tile count, the MMA work with the padding)
    const int64_t avg = ((int64_t)T * k + E - 1) / E;
    return avg <= 24 ? 32 : avg <= 48 ? 64 : 128;
}

// A grouped prefill runs on the Hopper kernel (whose epilogue can also apply the SwiGLU)
static bool prefill_on_wgmma(int act, int64_t K, int tile) {
    return linear_prefill_wgmma_takes(LIN_NVFP4, act, K) && (tile == 32 || tile == 64 || tile == 128);
}

extern "C" int dsv4_cuda_moe_fused_swiglu_prefill(int w4a4, int64_t cols, int tile) {
    return prefill_on_wgmma(w4a4 ? LIN_ACT_NVFP4 : LIN_ACT_BF16, cols, tile);
}

static bool aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

extern "C" dsv4_status dsv4_cuda_moe_grouped_linear(cudaStream_t stream, const dsv4_cuda_moe_gemm_args *a) {
    if (!a || !a->w || !a->layout || !a->y || !a->layout->counts || !a->layout->offsets || !a->layout->tile_expert)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_grouped_linear: missing weight, layout or output");
    const dsv4_cuda_moe_stack *w = a->w;
    if ((a->x == NULL) == (a->xq == NULL))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_grouped_linear: give exactly one of x (BF16) and xq (NVFP4)");
    if (a->xq && (!a->xq->q || !a->xq->scale ||
                  (!a->xq->token_scales && !(a->xq->input_scale > 0.0f && a->xq->input_scale < INFINITY))))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_grouped_linear: NVFP4 activations need q, scales and a scale");
    if (w->cols < 16 || w->cols % 16 || w->rows < 1 || a->rows < 0 || a->tile < 1 || a->bound < 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_grouped_linear: bad sizes N=%lld K=%lld rows=%lld tile=%d bound=%d",
                         (long long)w->rows, (long long)w->cols, (long long)a->rows, a->tile, a->bound);
    /* 16 for NVFP4 x too: the decode kernel reads each lane's 32 packed values as one 16-byte load */
    if ((a->x && !aligned(a->x, 16)) || (a->xq && (!aligned(a->xq->q, 16) || !aligned(a->xq->scale, 2))) ||
        !aligned(a->y, 16))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_grouped_linear: x (BF16 or NVFP4 payload) and y need 16-byte, "
                         "NVFP4 scales 2-byte alignment");
    if (a->rows == 0 || a->bound == 0) return DSV4_OK;
    DSV4_TRY(dsv4_cuda_linear_init());

    const int act = a->xq ? LIN_ACT_NVFP4 : LIN_ACT_BF16;
    LinearParams p;
    memset(&p, 0, sizeof p);
    p.N = w->rows;
    p.K = w->cols;
    p.w = w->data;
    p.w_scale = w->scale;
    const float act_scale = linear_params_set_io(p, a->x, a->xq, a->y, a->out);
    p.grp.row_begin = a->layout->offsets;
    p.grp.row_count = a->layout->counts;
    p.grp.row_token = a->row_token;
    p.grp.w_stride = w->w_stride;
    p.grp.s_stride = w->s_stride;
    p.grp.group_scale = a->group_scale ? a->group_scale : w->global;

    const bool decode_ok = w->cols % 32 == 0;
    dsv4_cuda_linear_path path = a->path;
    if (path == DSV4_LINEAR_AUTO)
        path = decode_ok && a->bound <= DSV4_CUDA_LINEAR_DECODE_MAX_M ? DSV4_LINEAR_DECODE : DSV4_LINEAR_PREFILL;
    if (a->swiglu_out) {
        if (w->rows % (2 * DSV4_CUDA_MOE_L1_BLOCK) || !aligned(a->swiglu_out, 2))
            return dsv4_fail(DSV4_ERR_SHAPE, "moe_grouped_linear: fused SwiGLU needs interleaved gate/up rows (N = %lld) "
                             "and a 2-byte aligned output", (long long)w->rows);
        if (path == DSV4_LINEAR_PREFILL && !prefill_on_wgmma(act, w->cols, a->tile))
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "moe_grouped_linear: the fused SwiGLU needs the decode path or the "
                             "Hopper prefill kernel");
        p.swiglu_out = static_cast<__nv_bfloat16 *>(a->swiglu_out);
        p.swiglu_limit = a->swiglu_limit;
    }
    if (path == DSV4_LINEAR_DECODE) {
        if (!decode_ok || !a->active || !a->n_active || a->max_active < 1)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "moe_grouped_linear: the decode path needs K %% 32 == 0 (K = %lld) and "
                             "the active list", (long long)w->cols);
        // the kernel's 32-bit element offsets into x: its rows are layout rows or, gathered,
        // tokens (fewer than the layout rows)
        if (a->rows * w->cols >= ((int64_t)1 << 32))
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "moe_grouped_linear: the decode path takes x below 2^32 elements "
                             "(%lld rows x %lld)", (long long)a->rows, (long long)w->cols);
        // the token bucket: groups with more rows than the bucket loop inside the CTA
        p.M = a->bound < DSV4_CUDA_LINEAR_DECODE_MAX_M ? a->bound : DSV4_CUDA_LINEAR_DECODE_MAX_M;
        // (the decode kernel applies the power of two its exact BF16 expansion leaves itself)
        p.out_scale = act_scale;
        const int64_t step = linear_decode_k_step(LIN_NVFP4, linear_decode_mt(p.M));
        p.k_per_split = (p.K + step - 1) / step * step; // one split: grouped mode has no split-K
        p.grouped = 1;
        for (int i = 0; i < 4; i++) {
            if (a->l2_warm[i] && (!aligned(a->l2_warm[i], 16) || a->l2_warm_bytes[i] < 0))
                return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_grouped_linear: L2 warm range %d must be 16-byte aligned", i);
            p.l2_warm[i] = static_cast<const uint8_t *>(a->l2_warm[i]);
            p.l2_warm_bytes[i] = a->l2_warm[i] ? a->l2_warm_bytes[i] : 0;
        }
        p.grp.active = a->active;
        p.grp.n_active = a->n_active;
        p.grp.max_active = a->max_active;
        p.grp.bound = a->bound;
        return linear_decode_launch(LIN_NVFP4, act, p, 1, stream);
    }
    p.M = a->rows;
    p.out_scale = act_scale;
    if (prefill_on_wgmma(act, p.K, a->tile))
        return linear_prefill_wgmma_grouped_launch(LIN_NVFP4, act, a->tile, p, a->layout->tile_expert,
                                                   a->rows / a->tile, stream);
    if (a->tile != linear_prefill_group_tile())
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_grouped_linear: the prefill path of this call needs layout tile %d, got %d",
                         linear_prefill_group_tile(), a->tile);
    return linear_prefill_grouped_launch(LIN_NVFP4, act, p, a->layout->tile_expert, a->rows / a->tile, stream);
}

// ---- workspace ----

typedef struct carve {
    uint8_t *base;
    size_t off;
} carve;

// Reserves n bytes (256-aligned) at the next offset; with base NULL it only counts.
static void *take(carve *c, size_t n) {
    void *p = c->base ? c->base + c->off : NULL;
    c->off += (n + 255) / 256 * 256;
    return p;
}

static void layout_ws(carve *c, dsv4_cuda_moe_workspace *ws, int64_t D, int64_t I, int64_t Is) {
    // routing arrays sized for k + 1 slots over E + 1 experts: the shared expert may run as a slot
    const size_t T = (size_t)ws->max_T, Tk = T * (size_t)(ws->k + 1), R = (size_t)ws->max_rows, E = (size_t)ws->E + 1;
    ws->idx = (int32_t *)take(c, 4 * Tk);
    ws->weights = (float *)take(c, 4 * Tk);
    ws->layout.counts = (int32_t *)take(c, 4 * E);
    ws->layout.offsets = (int32_t *)take(c, 4 * (E + 1));
    ws->layout.row_token = (int32_t *)take(c, 4 * R);
    ws->layout.tile_expert = (int32_t *)take(c, 4 * R); // tile 1 needs one entry per row
    ws->layout.inv = (int32_t *)take(c, 4 * Tk);
    ws->active = (int32_t *)take(c, 4 * E);
    ws->n_active = (int32_t *)take(c, 4);
    ws->xq = (uint8_t *)take(c, T * (size_t)D / 2);
    ws->xsf = (uint8_t *)take(c, T * (size_t)D / 16);
    ws->xts = (float *)take(c, 4 * T);
    ws->xsq = (uint8_t *)take(c, T * (size_t)D / 2);
    ws->xssf = (uint8_t *)take(c, T * (size_t)D / 16);
    ws->xsts = (float *)take(c, 4 * T);
    ws->h = (float *)take(c, R * 2 * (size_t)I * 4);
    ws->y = (float *)take(c, R * (size_t)D * 4);
    ws->a = take(c, R * (size_t)I * 2);
    ws->aq = (uint8_t *)take(c, R * (size_t)I / 2);
    ws->asf = (uint8_t *)take(c, R * (size_t)I / 16);
    ws->ats = (float *)take(c, 4 * R);
    ws->hs = (float *)take(c, T * 2 * (size_t)Is * 4);
    ws->ys = (float *)take(c, T * (size_t)D * 4);
    ws->as_ = take(c, T * (size_t)Is * 2);
    ws->asq = (uint8_t *)take(c, T * (size_t)Is / 2);
    ws->assf = (uint8_t *)take(c, T * (size_t)Is / 16);
    ws->asts = (float *)take(c, 4 * T);
    ws->lin_ws = take(c, ws->lin_ws_bytes);
    ws->route_done = (unsigned int *)take(c, sizeof(unsigned int));
}

extern "C" dsv4_status dsv4_cuda_moe_workspace_create(const dsv4_cuda_moe_weights *w, int max_T, int k,
                                                      dsv4_cuda_moe_workspace *out) {
    memset(out, 0, sizeof *out);
    if (!w || !w->alloc) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe workspace: no weights");
    const int64_t max_rows = dsv4_moe_max_rows(max_T, k, w->E, linear_prefill_group_tile());
    if (max_T < 1 || k < 1 || k > DSV4_CUDA_MOE_MAX_TOPK || max_rows < 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe workspace: max_T = %d, k = %d (k <= %d, rows < 2^31)", max_T, k,
                         DSV4_CUDA_MOE_MAX_TOPK);
    DSV4_TRY(dsv4_cuda_linear_init()); // kernel attributes before any capture
    out->max_T = max_T, out->k = k, out->E = w->E, out->max_rows = max_rows;
    if (w->has_shared) {
        const dsv4_cuda_weight v1 = dsv4_cuda_moe_stack_view(&w->s1, 0, 1.0f), v2 = dsv4_cuda_moe_stack_view(&w->s2, 0, 1.0f);
        // the shared expert runs without a cuBLAS handle, so AUTO never takes dequant + cuBLAS
        // here: only the decode split-K partials (M <= 64) need room
        const int64_t m = max_T < DSV4_CUDA_LINEAR_DECODE_MAX_M ? max_T : DSV4_CUDA_LINEAR_DECODE_MAX_M;
        const size_t b1 = dsv4_cuda_linear_workspace_bytes(&v1, m), b2 = dsv4_cuda_linear_workspace_bytes(&v2, m);
        out->lin_ws_bytes = b1 > b2 ? b1 : b2;
    }
    DSV4_CUDA_TRY(cudaStreamCreateWithFlags(&out->side, cudaStreamNonBlocking), "moe workspace: cudaStreamCreate");
    dsv4_status st = dsv4_cuda_check(cudaEventCreateWithFlags(&out->fork, cudaEventDisableTiming),
                                     "moe workspace: cudaEventCreate");
    if (st == DSV4_OK)
        st = dsv4_cuda_check(cudaEventCreateWithFlags(&out->join, cudaEventDisableTiming), "moe workspace: cudaEventCreate");
    if (st != DSV4_OK) {
        dsv4_cuda_moe_workspace_free(out);
        return st;
    }
    carve c = {NULL, 0};
    layout_ws(&c, out, w->D, w->I, w->Is);
    char op[128];
    snprintf(op, sizeof op, "moe workspace: cudaMalloc(%zu bytes)", c.off);
    void *buf = NULL;
    st = dsv4_cuda_check(cudaMalloc(&buf, c.off), op);
    if (st != DSV4_OK) {
        dsv4_cuda_moe_workspace_free(out);
        return st;
    }
    out->alloc = buf;
    out->bytes = c.off;
    c.base = (uint8_t *)buf, c.off = 0;
    layout_ws(&c, out, w->D, w->I, w->Is);
    st = dsv4_cuda_check(cudaMemset(out->route_done, 0, sizeof(unsigned int)), "moe workspace: cudaMemset");
    if (st != DSV4_OK) dsv4_cuda_moe_workspace_free(out);
    return st;
}

extern "C" void dsv4_cuda_moe_workspace_free(dsv4_cuda_moe_workspace *ws) {
    if (ws->side) cudaStreamSynchronize(ws->side);
    if (ws->alloc) cudaFree(ws->alloc);
    if (ws->fork) cudaEventDestroy(ws->fork);
    if (ws->join) cudaEventDestroy(ws->join);
    if (ws->side) cudaStreamDestroy(ws->side);
    memset(ws, 0, sizeof *ws);
}

// ---- forward ----

// x -> NVFP4 with a static scale (device scalar) or per token.
static dsv4_status quantize_x(cudaStream_t s, const void *x, int T, int D, float host_scale, float *dev_scale,
                              uint8_t *q, uint8_t *sf, float *ts, dsv4_cuda_act_nvfp4 *act) {
    dsv4_cuda_nvfp4_out o;
    o.q = q, o.sf = sf, o.layout = DSV4_SF_LINEAR;
    o.mode = host_scale > 0.0f ? DSV4_ACT_SCALE_STATIC : DSV4_ACT_SCALE_DYNAMIC_TOKEN;
    o.scale = host_scale > 0.0f ? dev_scale : ts;
    DSV4_TRY(dsv4_cuda_quantize_nvfp4(s, x, DSV4_CUDA_BF16, T, D, &o, NULL));
    act->q = q, act->scale = sf;
    act->token_scales = host_scale > 0.0f ? NULL : ts;
    act->input_scale = host_scale > 0.0f ? host_scale : 1.0f;
    return DSV4_OK;
}

// The shared expert: L1 -> SwiGLU -> L2 through the ordinary linear, rows = T.
static dsv4_status shared_expert(cudaStream_t s, const dsv4_cuda_moe_weights *w, dsv4_cuda_moe_workspace *ws,
                                 const dsv4_cuda_moe_args *a, const dsv4_cuda_act_nvfp4 *xq) {
    const dsv4_cuda_weight v1 = dsv4_cuda_moe_stack_view(&w->s1, 0, w->s1_global);
    const dsv4_cuda_weight v2 = dsv4_cuda_moe_stack_view(&w->s2, 0, w->s2_global);
    const bool a4 = a->mode == DSV4_W4A4;
    const dsv4_cuda_linear_path lp = a->path == DSV4_LINEAR_DECODE && a->T > DSV4_CUDA_LINEAR_DECODE_MAX_M
                                         ? DSV4_LINEAR_AUTO : a->path;
    dsv4_cuda_linear_args la;
    memset(&la, 0, sizeof la);
    la.w = &v1, la.M = a->T, la.x = a4 ? NULL : a->x, la.xq = a4 ? xq : NULL, la.y = ws->hs, la.out = DSV4_CUDA_OUT_F32;
    la.workspace = ws->lin_ws, la.workspace_bytes = ws->lin_ws_bytes, la.path = lp;
    DSV4_TRY(dsv4_cuda_linear(&la, s));
    dsv4_cuda_nvfp4_out q;
    q.q = ws->asq, q.sf = ws->assf, q.layout = DSV4_SF_LINEAR;
    q.mode = w->s2_static ? DSV4_ACT_SCALE_STATIC : DSV4_ACT_SCALE_DYNAMIC_TOKEN;
    q.scale = w->s2_static ? w->s2.input_scale : ws->asts;
    dsv4_cuda_swiglu_args sw;
    memset(&sw, 0, sizeof sw);
    sw.h = ws->hs, sw.h_dtype = DSV4_CUDA_F32, sw.rows = a->T, sw.inter = w->Is, sw.limit = a->limit;
    sw.interleave = w->shared_grouped ? DSV4_CUDA_MOE_L1_BLOCK : 0; // group E of l1: interleaved rows
    sw.out = a4 ? NULL : ws->as_, sw.out_dtype = DSV4_CUDA_BF16, sw.q = a4 ? &q : NULL;
    DSV4_TRY(dsv4_cuda_moe_swiglu(s, &sw));
    dsv4_cuda_act_nvfp4 aq = {ws->asq, ws->assf, w->s2_static ? NULL : ws->asts, w->s2_static ? w->s2_input_scale : 1.0f};
    la.w = &v2, la.x = a4 ? NULL : ws->as_, la.xq = a4 ? &aq : NULL, la.y = ws->ys;
    return dsv4_cuda_linear(&la, s);
}

// DSV4_CUDA_MOE_FOLD_SHARED_MAX_T, or DSV4_MOE_FOLD_MAX_T from the environment (development A/B).
static int fold_max_t(void) {
    static int v = -1; // benign race: every thread computes the same value
    if (v < 0) {
        const char *e = getenv("DSV4_MOE_FOLD_MAX_T");
        v = e ? atoi(e) : DSV4_CUDA_MOE_FOLD_SHARED_MAX_T;
    }
    return v;
}

extern "C" dsv4_status dsv4_cuda_moe_forward(cudaStream_t s, const dsv4_cuda_moe_weights *w, dsv4_cuda_moe_workspace *ws,
                                             const dsv4_cuda_moe_args *a) {
    if (!w || !ws || !a || !w->alloc || !ws->alloc)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_forward: NULL weights, workspace or arguments");
    const int T = a->T, k = ws->k, E = w->E;
    if (T < 0 || T > ws->max_T || a->router.n_experts != E || a->router.topk != k || ws->E != E)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_forward: T = %d (max %d), router E = %d k = %d, weights E = %d, workspace k = %d",
                         T, ws->max_T, a->router.n_experts, a->router.topk, E, k);
    if (a->mode != DSV4_W4A16 && a->mode != DSV4_W4A4)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_forward: unknown numerics %d", (int)a->mode);
    if (T == 0) return DSV4_OK;
    if (!a->x || !a->logits || !a->out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_forward: NULL x, logits or out");
    const bool a4 = a->mode == DSV4_W4A4;
    // with top-k an expert gets at most one row per token; hash routing may repeat an expert
    const int bound = a->tid2eid ? T * k : T;
    bool decode = a->path == DSV4_LINEAR_DECODE || (a->path == DSV4_LINEAR_AUTO && T <= DSV4_CUDA_LINEAR_DECODE_MAX_M);
    const int tile = decode ? 1 : dsv4_cuda_moe_prefill_tile_for(T, k, E, w->D, w->I, a4);
    // Decode steps of a few tokens with the shared expert stored as group E: it runs as slot k
    // of every token (weight 1, the combine's last term), one more expert of the grouped GEMMs,
    // instead of a parallel chain of its own that contends with them (H100, one token W4A16:
    // 73.7 -> 63.9 us). With more tokens its rows outweigh a routed expert's and its items come
    // last in the grid's walk (4 tokens: 175 -> 179 us, 64: 2042 -> 2081 us), so it keeps the
    // parallel chain there. W4A4 folds only when the shared expert quantizes its inputs the way
    // the routed ones do (the same x scale, both static or both dynamic L2 inputs).
    const bool same_quant = !a4 || (w->s1_x_scale == w->l1_x_scale && w->s2_static == w->l2_static);
    const bool fold = w->has_shared && w->shared_grouped && !a->skip_shared && a->stages != -1 && decode && same_quant &&
                      T <= fold_max_t() &&
                      (int64_t)T * (k + 1) <= DSV4_CUDA_MOE_ONE_LAUNCH_PAIRS;
    const int ks = k + fold, Es = E + fold; // slots per token, groups
    ws->idx_k = ks;
    const int64_t rows = dsv4_moe_max_rows(T, ks, Es, tile);
    if (rows > ws->max_rows) // e.g. a decode path forced for a batch the workspace's prefill layout does not cover
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_forward: %d tokens need %lld layout rows, the workspace holds %lld",
                         T, (long long)rows, (long long)ws->max_rows);

    // the shared expert only needs x: fork it first so it overlaps the whole routed chain
    const bool shared = w->has_shared && !a->skip_shared && !fold;
    if (shared) {
        DSV4_CUDA_TRY(cudaEventRecord(ws->fork, s), "moe_forward: cudaEventRecord (fork)");
        DSV4_CUDA_TRY(cudaStreamWaitEvent(ws->side, ws->fork, 0), "moe_forward: cudaStreamWaitEvent (fork)");
        dsv4_cuda_act_nvfp4 xsq;
        if (a4) DSV4_TRY(quantize_x(ws->side, a->x, T, w->D, w->s1_x_scale, &w->x_scales[1], ws->xsq, ws->xssf, ws->xsts, &xsq));
        DSV4_TRY(shared_expert(ws->side, w, ws, a, a4 ? &xsq : NULL));
        DSV4_CUDA_TRY(cudaEventRecord(ws->join, ws->side), "moe_forward: cudaEventRecord (join)");
    }
    // profiling prefixes (a->stages): stop after step n, joining the shared expert first
#define MOE_STEP_DONE(n)                                                                                      \
    if (a->stages == (n)) {                                                                                   \
        if (shared) DSV4_CUDA_TRY(cudaStreamWaitEvent(s, ws->join, 0), "moe_forward: cudaStreamWaitEvent (join)"); \
        return DSV4_OK;                                                                                       \
    }
    MOE_STEP_DONE(-1)
    // routing and the row layout: one launch for a decode step (T·k <= 512), else two; the
    // decode path walks the active-expert list, which the layout kernel writes on the way
    DSV4_TRY(dsv4_cuda_moe_route_permute(s, &a->router, T, a->logits, a->bias, a->tid2eid, a->token_ids, a->vocab,
                                         ws->idx, ws->weights, tile, &ws->layout, decode ? ws->active : NULL,
                                         decode ? ws->n_active : NULL, ws->route_done, fold));
    MOE_STEP_DONE(1)
    MOE_STEP_DONE(2)

    dsv4_cuda_act_nvfp4 xq;
    if (a4) DSV4_TRY(quantize_x(s, a->x, T, w->D, w->l1_x_scale, &w->x_scales[0], ws->xq, ws->xsf, ws->xts, &xq));
    dsv4_cuda_moe_gemm_args g;
    memset(&g, 0, sizeof g);
    g.w = &w->l1, g.x = a4 ? NULL : a->x, g.xq = a4 ? &xq : NULL, g.row_token = ws->layout.row_token;
    g.layout = &ws->layout, g.tile = tile, g.rows = rows, g.active = ws->active, g.n_active = ws->n_active;
    g.max_active = (T * k < E ? T * k : E) + fold, g.bound = bound, g.y = ws->h, g.out = DSV4_CUDA_OUT_F32;
    g.path = decode ? DSV4_LINEAR_DECODE : DSV4_LINEAR_PREFILL;
    // W4A16: L1's epilogue applies SwiGLU itself (decode: one launch less on the critical path;
    // prefill: h never goes through HBM in fp32)
    const bool fused = !a4 && (decode || prefill_on_wgmma(LIN_ACT_BF16, w->D, tile));
    g.swiglu_out = fused ? ws->a : NULL, g.swiglu_limit = a->limit;
    if (fold) { // the shared expert's weights are known before the routing: L1 warms them into L2
        const dsv4_cuda_moe_stack *st[2] = {&w->s1, &w->s2}; // views of group E
        for (int i = 0; i < 2; i++) {
            g.l2_warm[2 * i] = st[i]->data, g.l2_warm_bytes[2 * i] = st[i]->rows * st[i]->cols / 2;
            g.l2_warm[2 * i + 1] = st[i]->scale, g.l2_warm_bytes[2 * i + 1] = st[i]->rows * st[i]->cols / 16;
        }
    }
    DSV4_TRY(dsv4_cuda_moe_grouped_linear(s, &g));
    g.swiglu_out = NULL;
    memset(g.l2_warm, 0, sizeof g.l2_warm);
    MOE_STEP_DONE(3)

    // SwiGLU over the layout rows (rows past offsets[E] and padding tiles are skipped)
    dsv4_cuda_nvfp4_out q;
    q.q = ws->aq, q.sf = ws->asf, q.layout = DSV4_SF_LINEAR;
    q.mode = w->l2_static ? DSV4_ACT_SCALE_STATIC : DSV4_ACT_SCALE_DYNAMIC_TOKEN;
    q.scale = w->l2_static ? w->l2.input_scale : ws->ats; // STATIC: per expert through tile_expert
    dsv4_cuda_swiglu_args sw;
    memset(&sw, 0, sizeof sw);
    sw.h = ws->h, sw.h_dtype = DSV4_CUDA_F32, sw.rows = rows, sw.inter = w->I, sw.limit = a->limit;
    sw.n_rows = &ws->layout.offsets[Es]; // Es: the shared expert's rows too when it is a slot
    sw.out = a4 ? NULL : ws->a, sw.out_dtype = DSV4_CUDA_BF16, sw.q = a4 ? &q : NULL;
    sw.tile_expert = ws->layout.tile_expert, sw.tile = tile, sw.interleave = DSV4_CUDA_MOE_L1_BLOCK;
    if (!fused) DSV4_TRY(dsv4_cuda_moe_swiglu(s, &sw));
    MOE_STEP_DONE(4)

    // L2: x rows are the layout rows; a static per-expert input scale joins group_scale
    dsv4_cuda_act_nvfp4 aq = {ws->aq, ws->asf, w->l2_static ? NULL : ws->ats, 1.0f};
    g.w = &w->l2, g.x = a4 ? NULL : ws->a, g.xq = a4 ? &aq : NULL, g.row_token = NULL, g.y = ws->y;
    g.group_scale = a4 && w->l2_static ? w->l2.global_in : NULL;
    DSV4_TRY(dsv4_cuda_moe_grouped_linear(s, &g));
    MOE_STEP_DONE(5)
#undef MOE_STEP_DONE

    if (shared) DSV4_CUDA_TRY(cudaStreamWaitEvent(s, ws->join, 0), "moe_forward: cudaStreamWaitEvent (join)");
    return dsv4_cuda_moe_combine(s, T, ks, w->D, ws->y, DSV4_CUDA_F32, ws->idx, ws->layout.inv, ws->weights,
                                 shared ? ws->ys : NULL, DSV4_CUDA_F32, a->out, a->out_dtype);
}
