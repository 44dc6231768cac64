// Stacked expert weights of one MoE layer on the device (moe_layer.h): gate|up unified per
// expert (routed experts: rows interleaved in blocks of 8), MXFP4 converted exactly to NVFP4,
// everything in one allocation so the grouped GEMMs address expert e by a stride.
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/common.cuh"
#include "cuda/moe_layer.h"

extern "C" {
#include "cpu/ops.h" /* dsv4_cpu_expert */
#include "format/quant.h"
}

static const char *wname(const dsv4_weight *w) { return w->src && w->src->name ? w->src->name : "expert weight"; }

static int64_t round256(int64_t b) { return (b + 255) / 256 * 256; }

// Host NVFP4 copy of one stored weight: payload [N, K/2], e4m3 scales [N, K/16], global.
typedef struct host_nvfp4 {
    uint8_t *q, *s;
    float global, input_scale;
} host_nvfp4;

static dsv4_status to_nvfp4(const dsv4_weight *w, int64_t N, int64_t K, host_nvfp4 *out, uint8_t *q, uint8_t *s) {
    const char *what = wname(w);
    if (w->rows != N || w->cols != K)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe weights: %s is [%lld, %lld], expected [%lld, %lld]", what,
                         (long long)w->rows, (long long)w->cols, (long long)N, (long long)K);
    if (!w->data || !w->scale) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe weights: %s has no payload or scales", what);
    out->q = q, out->s = s, out->input_scale = w->input_scale;
    if (w->format == DSV4_WF_NVFP4) {
        if (w->scale_dtype != DSV4_DT_F8_E4M3)
            return dsv4_fail(DSV4_ERR_DTYPE, "moe weights: %s: NVFP4 scales must be F8_E4M3", what);
        if (!(w->global_scale > 0.0f && w->global_scale < INFINITY))
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe weights: %s: global scale %g is not finite and positive", what,
                             (double)w->global_scale);
        memcpy(q, w->data, (size_t)(N * K / 2));
        memcpy(s, w->scale, (size_t)(N * K / 16));
        out->global = w->global_scale;
        return DSV4_OK;
    }
    if (w->format == DSV4_WF_MXFP4) {
        if (K % 32) return dsv4_fail(DSV4_ERR_SHAPE, "moe weights: %s: MXFP4 needs cols %% 32 == 0", what);
        out->input_scale = 0.0f; /* MXFP4 checkpoints carry no activation scale */
        return dsv4_mxfp4_to_nvfp4((const uint8_t *)w->data, (const uint8_t *)w->scale, N, K, q, s, &out->global, what);
    }
    return dsv4_fail(DSV4_ERR_UNSUPPORTED, "moe weights: %s is %s; grouped experts take NVFP4 or MXFP4", what,
                     dsv4_wformat_name(w->format));
}

static dsv4_status stack_init(dsv4_cuda_moe_stack *s, int G, int64_t N, int64_t K, uint8_t *base, size_t *off) {
    s->groups = G, s->rows = N, s->cols = K;
    s->w_stride = round256(N * K / 2), s->s_stride = round256(N * K / 16);
    s->data = base + *off;
    *off += (size_t)(s->w_stride * G);
    s->scale = base + *off;
    *off += (size_t)(s->s_stride * G);
    s->global = (float *)(base + *off);
    *off += (size_t)round256(4 * G);
    s->input_scale = (float *)(base + *off);
    *off += (size_t)round256(4 * G);
    s->global_in = (float *)(base + *off);
    *off += (size_t)round256(4 * G);
    return DSV4_OK;
}

// A one-group stack viewing group g of s.
static dsv4_cuda_moe_stack stack_group(const dsv4_cuda_moe_stack *s, int g) {
    dsv4_cuda_moe_stack v = *s;
    v.groups = 1;
    v.data = s->data + (int64_t)g * s->w_stride, v.scale = s->scale + (int64_t)g * s->s_stride;
    v.global = s->global + g, v.input_scale = s->input_scale + g, v.global_in = s->global_in + g;
    return v;
}

static size_t stack_bytes(int G, int64_t N, int64_t K) {
    return (size_t)(G * (round256(N * K / 2) + round256(N * K / 16)) + 3 * round256(4 * G));
}

// The routed L1 row order (moe_layer.h): [w1 | w3] rows (q: I·2 rows of rb bytes) into blocks of
// DSV4_CUDA_MOE_L1_BLOCK gate rows then as many up rows, in out.
static void interleave_rows(const uint8_t *in, int64_t I, int64_t rb, uint8_t *out) {
    for (int64_t n = 0; n < 2 * I; n++)
        memcpy(out + dsv4_cuda_moe_l1_row(n, I) * rb, in + n * rb, (size_t)rb);
}

// Copies one expert (L1 = w1 | w3 unified, L2 = w2) into group g of the stacks. q/s: host
// staging for 2·I·D elements; qi/si: the same again, for the interleaved L1 rows when
// `interleave` (the routed stack). gs1/is1/gs2/is2: host arrays receiving the scales.
static dsv4_status upload_expert(const dsv4_cpu_expert *e, int g, int64_t D, int64_t I, const dsv4_cuda_moe_stack *l1,
                                 const dsv4_cuda_moe_stack *l2, int interleave, uint8_t *q, uint8_t *s, uint8_t *qi,
                                 uint8_t *si, float *gs1, float *is1, float *gs2, float *is2, size_t *rerounded) {
    host_nvfp4 w1, w3, w2;
    const size_t half_q = (size_t)(I * D / 2), half_s = (size_t)(I * D / 16);
    DSV4_TRY(to_nvfp4(e->w1, I, D, &w1, q, s));
    DSV4_TRY(to_nvfp4(e->w3, I, D, &w3, q + half_q, s + half_s));
    if (w1.global != w3.global) {
        size_t changed = 0;
        DSV4_TRY(dsv4_nvfp4_unify_global(w1.s, &w1.global, half_s, w3.s, &w3.global, half_s, &changed, wname(e->w1)));
        *rerounded += changed;
    }
    gs1[g] = w1.global;
    is1[g] = fmaxf(w1.input_scale, w3.input_scale);
    if (!(w1.input_scale > 0.0f) || !(w3.input_scale > 0.0f)) is1[g] = 0.0f;
    char op[256];
    snprintf(op, sizeof op, "moe weights upload: expert %d L1 (cudaMemcpy)", g);
    if (interleave) {
        interleave_rows(q, I, D / 2, qi);
        interleave_rows(s, I, D / 16, si);
    }
    DSV4_CUDA_TRY(cudaMemcpy((void *)(l1->data + (int64_t)g * l1->w_stride), interleave ? qi : q, 2 * half_q,
                             cudaMemcpyHostToDevice), op);
    DSV4_CUDA_TRY(cudaMemcpy((void *)(l1->scale + (int64_t)g * l1->s_stride), interleave ? si : s, 2 * half_s,
                             cudaMemcpyHostToDevice), op);
    DSV4_TRY(dsv4_cuda_fp4_device_layout((uint8_t *)(l1->data + (int64_t)g * l1->w_stride),
                                         (uint8_t *)(l1->scale + (int64_t)g * l1->s_stride), 2 * I, D, DSV4_WF_NVFP4));
    DSV4_TRY(to_nvfp4(e->w2, D, I, &w2, q, s));
    gs2[g] = w2.global;
    is2[g] = w2.input_scale > 0.0f ? w2.input_scale : 0.0f;
    snprintf(op, sizeof op, "moe weights upload: expert %d L2 (cudaMemcpy)", g);
    DSV4_CUDA_TRY(cudaMemcpy((void *)(l2->data + (int64_t)g * l2->w_stride), q, half_q, cudaMemcpyHostToDevice), op);
    DSV4_CUDA_TRY(cudaMemcpy((void *)(l2->scale + (int64_t)g * l2->s_stride), s, half_s, cudaMemcpyHostToDevice), op);
    DSV4_TRY(dsv4_cuda_fp4_device_layout((uint8_t *)(l2->data + (int64_t)g * l2->w_stride),
                                         (uint8_t *)(l2->scale + (int64_t)g * l2->s_stride), D, I, DSV4_WF_NVFP4));
    return DSV4_OK;
}

static int complete(const dsv4_cpu_expert *e) { return e && e->w1 && e->w2 && e->w3; }

// Host scale arrays of one stack pair, filled per expert, then copied to the device.
typedef struct scale_arrays {
    float *g1, *i1, *g2, *i2, *tmp;
} scale_arrays;

static dsv4_status copy_scales(const dsv4_cuda_moe_stack *l1, const dsv4_cuda_moe_stack *l2, const scale_arrays *h,
                               int G) {
    DSV4_CUDA_TRY(cudaMemcpy(l1->global, h->g1, sizeof(float) * G, cudaMemcpyHostToDevice), "moe weights upload: scales");
    DSV4_CUDA_TRY(cudaMemcpy(l1->input_scale, h->i1, sizeof(float) * G, cudaMemcpyHostToDevice), "moe weights upload: scales");
    DSV4_CUDA_TRY(cudaMemcpy(l2->global, h->g2, sizeof(float) * G, cudaMemcpyHostToDevice), "moe weights upload: scales");
    DSV4_CUDA_TRY(cudaMemcpy(l2->input_scale, h->i2, sizeof(float) * G, cudaMemcpyHostToDevice), "moe weights upload: scales");
    for (int g = 0; g < G; g++) h->tmp[g] = h->g1[g] * h->i1[g];
    DSV4_CUDA_TRY(cudaMemcpy(l1->global_in, h->tmp, sizeof(float) * G, cudaMemcpyHostToDevice), "moe weights upload: scales");
    for (int g = 0; g < G; g++) h->tmp[g] = h->g2[g] * h->i2[g];
    // synchronous copies from pageable memory have left h->tmp by the time they return
    DSV4_CUDA_TRY(cudaMemcpy(l2->global_in, h->tmp, sizeof(float) * G, cudaMemcpyHostToDevice), "moe weights upload: scales");
    return DSV4_OK;
}

// x scale for L1 (max over groups, 0 if any is missing) and whether every L2 is static.
static void summarise(const scale_arrays *h, int G, float *x_scale, int *l2_static) {
    float m = 0.0f;
    int all1 = 1, all2 = 1;
    for (int g = 0; g < G; g++) {
        all1 &= h->i1[g] > 0.0f;
        all2 &= h->i2[g] > 0.0f;
        m = fmaxf(m, h->i1[g]);
    }
    *x_scale = all1 ? m : 0.0f;
    *l2_static = all2;
}

static dsv4_status upload_all(const dsv4_cpu_expert *experts, int E, const dsv4_cpu_expert *shared,
                              dsv4_cuda_moe_weights *w, uint8_t *q, uint8_t *s, uint8_t *qi, uint8_t *si,
                              scale_arrays *h) {
    for (int e = 0; e < E; e++) {
        dsv4_status st = upload_expert(&experts[e], e, w->D, w->I, &w->l1, &w->l2, 1, q, s, qi, si, h->g1, h->i1, h->g2,
                                       h->i2, &w->scales_rerounded);
        if (st != DSV4_OK) return dsv4_fail_context(st, "moe weights: routed expert %d", e);
    }
    DSV4_TRY(copy_scales(&w->l1, &w->l2, h, E));
    summarise(h, E, &w->l1_x_scale, &w->l2_static);
    if (w->has_shared) { // group E of the routed stacks (s1 / s2 view it) or stacks of its own
        const int g = w->shared_grouped ? E : 0;
        dsv4_status st = upload_expert(shared, g, w->D, w->Is, w->shared_grouped ? &w->l1 : &w->s1,
                                       w->shared_grouped ? &w->l2 : &w->s2, w->shared_grouped, q, s, qi, si, h->g1,
                                       h->i1, h->g2, h->i2, &w->scales_rerounded);
        if (st != DSV4_OK) return dsv4_fail_context(st, "moe weights: shared expert");
        const scale_arrays hs = {h->g1 + g, h->i1 + g, h->g2 + g, h->i2 + g, h->tmp + g}; // its entries
        DSV4_TRY(copy_scales(&w->s1, &w->s2, &hs, 1));
        summarise(&hs, 1, &w->s1_x_scale, &w->s2_static);
        w->s1_global = hs.g1[0], w->s2_global = hs.g2[0], w->s2_input_scale = hs.i2[0];
    }
    const float xs[2] = {w->l1_x_scale, w->s1_x_scale};
    DSV4_CUDA_TRY(cudaMemcpy(w->x_scales, xs, sizeof xs, cudaMemcpyHostToDevice), "moe weights upload: x scales");
    // pageable copies may return before their DMA lands: weights must be complete before use
    DSV4_CUDA_TRY(cudaDeviceSynchronize(), "moe weights upload: cudaDeviceSynchronize");
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_moe_weights_upload(const dsv4_cpu_expert *experts, int E, const dsv4_cpu_expert *shared,
                                                    dsv4_cuda_moe_weights *out) {
    memset(out, 0, sizeof *out);
    if (!experts || E < 1 || E > DSV4_CUDA_MOE_MAX_EXPERTS)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe weights: %d experts (1 .. %d)", E, DSV4_CUDA_MOE_MAX_EXPERTS);
    for (int e = 0; e < E; e++)
        if (!complete(&experts[e]))
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe weights: routed expert %d has a NULL weight", e);
    if (shared && !complete(shared)) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe weights: shared expert has a NULL weight");
    const int64_t I = experts[0].w1->rows, D = experts[0].w1->cols, Is = shared ? shared->w1->rows : 0;
    if (I < 32 || D < 32 || I % 32 || D % 32 || Is % 32 || I > (1 << 20) || D > (1 << 20) || Is > (1 << 20))
        return dsv4_fail(DSV4_ERR_SHAPE, "moe weights: D = %lld, I = %lld, shared I = %lld must be multiples of 32",
                         (long long)D, (long long)I, (long long)Is);
    out->E = E, out->D = (int)D, out->I = (int)I, out->Is = (int)Is, out->has_shared = shared != NULL;
    // a shared expert of the routed shape joins the routed stacks as group E (moe_layer.h)
    out->shared_grouped = shared && Is == I && E < DSV4_CUDA_MOE_MAX_EXPERTS;
    const int G = E + out->shared_grouped;
    size_t total = stack_bytes(G, 2 * I, D) + stack_bytes(G, D, I) + 256 + DSV4_CUDA_WEIGHT_TAIL;
    if (shared && !out->shared_grouped) total += stack_bytes(1, 2 * Is, D) + stack_bytes(1, D, Is);
    char op[128];
    snprintf(op, sizeof op, "moe weights upload: cudaMalloc(%zu bytes)", total);
    void *buf = NULL;
    DSV4_CUDA_TRY(cudaMalloc(&buf, total), op);
    size_t off = 0;
    uint8_t *base = (uint8_t *)buf;
    stack_init(&out->l1, G, 2 * I, D, base, &off);
    stack_init(&out->l2, G, D, I, base, &off);
    if (out->shared_grouped) {
        out->s1 = stack_group(&out->l1, E);
        out->s2 = stack_group(&out->l2, E);
    } else if (shared) {
        stack_init(&out->s1, 1, 2 * Is, D, base, &off);
        stack_init(&out->s2, 1, D, Is, base, &off);
    }
    out->x_scales = (float *)(base + off);
    out->alloc = buf;
    const int64_t Imax = I > Is ? I : Is;
    const size_t n = (size_t)(2 * Imax * D);
    uint8_t *q = (uint8_t *)malloc(n / 2), *s = (uint8_t *)malloc(n / 16);
    uint8_t *qi = (uint8_t *)malloc(n / 2), *si = (uint8_t *)malloc(n / 16);
    scale_arrays h;
    h.g1 = (float *)malloc(sizeof(float) * 5 * (size_t)G); // group E: the shared expert when grouped
    h.i1 = h.g1 + G, h.g2 = h.g1 + 2 * G, h.i2 = h.g1 + 3 * G, h.tmp = h.g1 + 4 * G;
    dsv4_status st = q && s && qi && si && h.g1 ? upload_all(experts, E, shared, out, q, s, qi, si, &h)
                                                : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "moe weights upload: host staging");
    free(q), free(s), free(qi), free(si), free(h.g1);
    if (st != DSV4_OK) {
        dsv4_cuda_moe_weights_free(out);
        return st;
    }
    out->expert_bytes = (size_t)(3 * I * D / 2 + 3 * I * D / 16);
    out->weight_bytes = out->expert_bytes * (size_t)E + (size_t)(3 * Is * D / 2 + 3 * Is * D / 16);
    return DSV4_OK;
}

extern "C" void dsv4_cuda_moe_weights_free(dsv4_cuda_moe_weights *w) {
    if (w->alloc) cudaFree(w->alloc);
    memset(w, 0, sizeof *w);
}

extern "C" dsv4_cuda_weight dsv4_cuda_moe_stack_view(const dsv4_cuda_moe_stack *s, int g, float global) {
    dsv4_cuda_weight v;
    memset(&v, 0, sizeof v);
    v.format = DSV4_WF_NVFP4;
    v.rows = s->rows, v.cols = s->cols;
    v.data = s->data + (int64_t)g * s->w_stride;
    v.scale = s->scale + (int64_t)g * s->s_stride;
    v.global_scale = global;
    v.bytes = (size_t)(s->rows * s->cols / 2 + s->rows * s->cols / 16);
    return v;
}
