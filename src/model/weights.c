/* Binding a checkpoint's tensors to the internal weight table (see weights.h). */
#include "model/weights.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "format/weight.h"
#include "model/names.h"

#define MAX_RECORDED_PROBLEMS 256

typedef struct canon_entry {
    char *name; /* canonical native name */
    const dsv4_tensor_view *t;
    int used;
} canon_entry;

typedef struct binder {
    const dsv4_config *cfg;
    dsv4_weights *w;
    canon_entry *idx; /* sorted by name */
    int n;
    int check_finite;  /* bind_param scans float parameters for NaN/Inf (not embed/head: too big) */
    dsv4_status first; /* first problem's status */
    char first_msg[512];
} binder;

static void problem(binder *b, dsv4_status st, const char *fmt, ...) DSV4_PRINTF(3, 4);
static void problem(binder *b, dsv4_status st, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (b->first == DSV4_OK) {
        b->first = st;
        memcpy(b->first_msg, msg, sizeof msg);
    }
    dsv4_weights *w = b->w;
    if (w->n_problems < MAX_RECORDED_PROBLEMS) {
        dsv4_weight_problem *p = &w->problems[w->n_problems];
        p->status = st;
        memcpy(p->message, msg, sizeof msg);
    }
    w->n_problems++;
}

static int cmp_entry(const void *a, const void *b) {
    return strcmp(((const canon_entry *)a)->name, ((const canon_entry *)b)->name);
}

static canon_entry *lookup(binder *b, const char *name) {
    canon_entry key = {.name = (char *)name};
    canon_entry *e = bsearch(&key, b->idx, (size_t)b->n, sizeof *b->idx, cmp_entry);
    if (e) e->used = 1;
    return e;
}

static const dsv4_tensor_view *find(binder *b, const char *name) {
    canon_entry *e = lookup(b, name);
    return e ? e->t : NULL;
}

static void shape_str(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t o = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < cap) snprintf(buf + o, cap - o, "]");
}

static int same_shape(const dsv4_tensor_view *t, int ndim, const int64_t *shape) {
    if (t->ndim != ndim) return 0;
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != shape[i]) return 0;
    return 1;
}

static int check_shape(binder *b, const dsv4_tensor_view *t, int ndim, const int64_t *shape) {
    if (same_shape(t, ndim, shape)) return 1;
    char got[128], want[128];
    shape_str(got, sizeof got, t->ndim, t->shape);
    shape_str(want, sizeof want, ndim, shape);
    problem(b, DSV4_ERR_SHAPE, "%s: tensor '%s' has shape %s, the config implies %s", t->file, t->name, got, want);
    return 0;
}

/* dtype sets */
#define DT(x) (1u << DSV4_DT_##x)
#define FLOATS (DT(F32) | DT(BF16) | DT(F16))

static int check_dtype(binder *b, const dsv4_tensor_view *t, unsigned allowed) {
    if (allowed & (1u << t->dtype)) return 1;
    char list[160] = "";
    for (int d = 0; d < DSV4_DT_COUNT; d++)
        if (allowed & (1u << d)) {
            strncat(list, list[0] ? "/" : "", sizeof list - strlen(list) - 1);
            strncat(list, dsv4_dtype_name((dsv4_dtype)d), sizeof list - strlen(list) - 1);
        }
    problem(b, DSV4_ERR_DTYPE, "%s: tensor '%s' has dtype %s, expected %s", t->file, t->name,
            dsv4_dtype_name(t->dtype), list);
    return 0;
}

/* A NaN in a parameter that only steers a choice (gate.bias picks experts) would never
 * surface as a NaN activation, so parameters are checked when bound. */
static int check_floats_finite(binder *b, const dsv4_tensor_view *t) {
    if (t->dtype != DSV4_DT_F32 && t->dtype != DSV4_DT_BF16 && t->dtype != DSV4_DT_F16) return 1;
    const int64_t n = dsv4_tensor_numel(t);
    const uint8_t *p = t->data;
    for (int64_t i = 0; i < n; i++) {
        int bad;
        if (t->dtype == DSV4_DT_F32) {
            uint32_t u;
            memcpy(&u, p + 4 * i, 4);
            bad = (u & 0x7f800000u) == 0x7f800000u;
        } else {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            bad = t->dtype == DSV4_DT_BF16 ? (h & 0x7f80u) == 0x7f80u : (h & 0x7c00u) == 0x7c00u;
        }
        if (bad) {
            problem(b, DSV4_ERR_NONFINITE, "%s: tensor '%s' holds NaN/Inf at element %lld", t->file, t->name,
                    (long long)i);
            return 0;
        }
    }
    return 1;
}

/* A non-linear parameter (norm weight, hc_*, sink, ape, bias, table). */
static const dsv4_tensor_view *bind_param(binder *b, const char *name, unsigned dtypes, int ndim, ...) {
    int64_t shape[DSV4_MAX_DIMS];
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) shape[i] = va_arg(ap, int64_t);
    va_end(ap);
    const dsv4_tensor_view *t = find(b, name);
    if (!t) {
        problem(b, DSV4_ERR_MISSING, "tensor '%s' is missing from the checkpoint", name);
        return NULL;
    }
    if (!check_dtype(b, t, dtypes) || !check_shape(b, t, ndim, shape)) return NULL;
    if (b->check_finite && !check_floats_finite(b, t)) return NULL;
    return t;
}

static float read_f32(const void *p) {
    float v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* A scalar F32 tensor ([] or [1]). */
static int read_scalar(binder *b, const dsv4_tensor_view *t, float *out) {
    if (!check_dtype(b, t, DT(F32))) return 0;
    if (dsv4_tensor_numel(t) != 1) {
        problem(b, DSV4_ERR_SHAPE, "%s: tensor '%s' must hold one value, has %lld", t->file, t->name,
                (long long)dsv4_tensor_numel(t));
        return 0;
    }
    *out = read_f32(t->data);
    return 1;
}

/* Scale tables must be finite: a NaN block scale would poison every product of its block. */
static int check_scales_finite(binder *b, const dsv4_tensor_view *t) {
    const uint8_t *p = t->data;
    int64_t n = dsv4_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) {
        int bad;
        switch (t->dtype) {
        case DSV4_DT_F8_E4M3: bad = (p[i] & 0x7f) == 0x7f; break;
        case DSV4_DT_F8_E8M0:
        case DSV4_DT_U8: bad = p[i] == 0xff; break;
        case DSV4_DT_F32: { float v = read_f32(p + 4 * i); bad = !isfinite(v) || v < 0; break; }
        default: bad = 0;
        }
        if (bad) {
            int64_t cols = t->ndim >= 2 ? t->shape[t->ndim - 1] : n;
            problem(b, DSV4_ERR_NONFINITE, "%s: tensor '%s' has a NaN/Inf/negative scale at [%lld, %lld]",
                    t->file, t->name, (long long)(i / cols), (long long)(i % cols));
            return 0;
        }
    }
    return 1;
}

static void set_dense(dsv4_weight *w, const dsv4_tensor_view *t, int64_t rows, int64_t cols, size_t row_offset) {
    w->format = t->dtype == DSV4_DT_BF16 ? DSV4_WF_BF16 : t->dtype == DSV4_DT_F16 ? DSV4_WF_F16 : DSV4_WF_F32;
    w->rows = rows;
    w->cols = cols;
    size_t esz = (size_t)dsv4_dtype_bits(t->dtype) / 8;
    w->data = (const uint8_t *)t->data + row_offset * (size_t)cols * esz;
    w->scale = NULL;
    w->global_scale = 1.0f;
    w->input_scale = 0.0f;
    w->src = t;
    w->bytes = (size_t)rows * (size_t)cols * esz;
}

/* Counts a bound linear and lists it under its canonical module name ("layers.3.attn.wq_a"). */
static void account(binder *b, const dsv4_weight *w, const char *module) {
    dsv4_weights *ws = b->w;
    ws->format_count[w->format]++;
    ws->format_bytes[w->format] += w->bytes;
    if (ws->n_linears == ws->cap_linears) {
        int cap = ws->cap_linears ? 2 * ws->cap_linears : 256;
        dsv4_named_weight *grown = realloc(ws->linears, sizeof *grown * (size_t)cap);
        if (!grown) {
            problem(b, DSV4_ERR_OUT_OF_MEMORY, "out of memory listing the linear weights");
            return;
        }
        ws->linears = grown;
        ws->cap_linears = cap;
    }
    dsv4_named_weight *nw = &ws->linears[ws->n_linears++];
    snprintf(nw->module, sizeof nw->module, "%s", module);
    nw->w = w;
}

/* A linear weight [rows, cols] in whatever format the checkpoint stores it. */
static void bind_linear(binder *b, dsv4_weight *w, const char *module, int64_t rows, int64_t cols) {
    char name[320];
    memset(w, 0, sizeof *w);
    snprintf(name, sizeof name, "%s.weight", module);
    const dsv4_tensor_view *t = find(b, name);
    if (!t) {
        problem(b, DSV4_ERR_MISSING, "tensor '%s' is missing from the checkpoint", name);
        return;
    }
    int64_t want[2] = {rows, cols};
    w->src = t;
    w->rows = rows;
    w->cols = cols;
    w->data = t->data;
    w->global_scale = 1.0f;
    switch (t->dtype) {
    case DSV4_DT_BF16:
    case DSV4_DT_F16:
    case DSV4_DT_F32:
        if (!check_shape(b, t, 2, want)) return;
        set_dense(w, t, rows, cols, 0);
        break;
    case DSV4_DT_F8_E4M3: {
        if (!check_shape(b, t, 2, want)) return;
        snprintf(name, sizeof name, "%s.scale", module);
        const dsv4_tensor_view *s = find(b, name);
        if (!s) {
            problem(b, DSV4_ERR_MISSING, "%s: FP8 weight '%s' has no block scale '%s' (or weight_scale_inv)",
                    t->file, t->name, name);
            return;
        }
        int64_t sshape[2] = {(rows + 127) / 128, (cols + 127) / 128};
        if (!check_dtype(b, s, DT(F8_E8M0) | DT(U8) | DT(F32)) || !check_shape(b, s, 2, sshape) ||
            !check_scales_finite(b, s))
            return;
        w->format = DSV4_WF_FP8_B128;
        w->scale = s->data;
        w->scale_dtype = s->dtype;
        w->bytes = t->nbytes + s->nbytes;
        break;
    }
    case DSV4_DT_U8:
    case DSV4_DT_I8:
    case DSV4_DT_F4: {
        /* packed e2m1: F4 counts elements, the byte dtypes count pairs */
        int64_t packed[2] = {rows, t->dtype == DSV4_DT_F4 ? cols : cols / 2};
        if (cols % 2 || !check_shape(b, t, 2, packed)) {
            if (cols % 2) problem(b, DSV4_ERR_SHAPE, "%s: FP4 weight '%s' needs an even input width, config gives %lld",
                                  t->file, t->name, (long long)cols);
            return;
        }
        snprintf(name, sizeof name, "%s.weight_scale", module);
        const dsv4_tensor_view *s = find(b, name);
        if (s) { /* NVFP4 */
            int64_t sshape[2] = {rows, cols / 16};
            if (cols % 16) {
                problem(b, DSV4_ERR_SHAPE, "%s: NVFP4 weight '%s' needs an input width divisible by 16, has %lld",
                        t->file, t->name, (long long)cols);
                return;
            }
            if (!check_dtype(b, s, DT(F8_E4M3)) || !check_shape(b, s, 2, sshape) || !check_scales_finite(b, s)) return;
            snprintf(name, sizeof name, "%s.weight_scale_2", module);
            const dsv4_tensor_view *g = find(b, name);
            if (!g) {
                problem(b, DSV4_ERR_MISSING, "%s: NVFP4 weight '%s' has no global scale '%s'", t->file, t->name, name);
                return;
            }
            if (!read_scalar(b, g, &w->global_scale)) return;
            if (!isfinite(w->global_scale) || w->global_scale <= 0) {
                problem(b, DSV4_ERR_NONFINITE, "%s: global scale '%s' is %g, must be finite and > 0", g->file, g->name,
                        w->global_scale);
                return;
            }
            snprintf(name, sizeof name, "%s.input_scale", module);
            const dsv4_tensor_view *in = find(b, name);
            if (in) {
                if (!read_scalar(b, in, &w->input_scale)) return;
                if (!isfinite(w->input_scale) || w->input_scale < 0) {
                    problem(b, DSV4_ERR_NONFINITE, "%s: input scale '%s' is %g, must be finite and >= 0", in->file,
                            in->name, w->input_scale);
                    return;
                }
            }
            w->format = DSV4_WF_NVFP4;
            w->scale = s->data;
            w->scale_dtype = s->dtype;
            w->bytes = t->nbytes + s->nbytes;
            break;
        }
        snprintf(name, sizeof name, "%s.scale", module);
        s = find(b, name);
        if (s) { /* MXFP4 */
            int64_t sshape[2] = {rows, cols / 32};
            if (cols % 32) {
                problem(b, DSV4_ERR_SHAPE, "%s: MXFP4 weight '%s' needs an input width divisible by 32, has %lld",
                        t->file, t->name, (long long)cols);
                return;
            }
            if (!check_dtype(b, s, DT(F8_E8M0) | DT(U8)) || !check_shape(b, s, 2, sshape) || !check_scales_finite(b, s))
                return;
            w->format = DSV4_WF_MXFP4;
            w->scale = s->data;
            w->scale_dtype = s->dtype;
            w->bytes = t->nbytes + s->nbytes;
            break;
        }
        problem(b, DSV4_ERR_MISSING, "%s: FP4 weight '%s' has neither NVFP4 'weight_scale' nor MXFP4 'scale'",
                t->file, t->name);
        return;
    }
    default:
        problem(b, DSV4_ERR_DTYPE, "%s: tensor '%s' has dtype %s, not a weight format dsv4 runs "
                "(NVFP4, MXFP4, FP8 block-128, BF16, F16, F32)", t->file, t->name, dsv4_dtype_name(t->dtype));
        return;
    }
    account(b, w, module);
}

static void bind_compressor(binder *b, dsv4_compressor_weights *c, const char *pfx, int rate, int coff,
                            int64_t width) {
    const dsv4_config *cfg = b->cfg;
    char name[320];
    snprintf(name, sizeof name, "%s.wkv", pfx);
    bind_linear(b, &c->wkv, name, coff * width, cfg->hidden_size);
    snprintf(name, sizeof name, "%s.wgate", pfx);
    bind_linear(b, &c->wgate, name, coff * width, cfg->hidden_size);
    snprintf(name, sizeof name, "%s.ape", pfx);
    c->ape = bind_param(b, name, FLOATS, 2, (int64_t)rate, (int64_t)coff * width);
    snprintf(name, sizeof name, "%s.norm.weight", pfx);
    c->norm = bind_param(b, name, FLOATS, 1, width);
}

/* tid2eid must hold expert ids: an out-of-range id would index past the expert table. */
static void check_tid2eid(binder *b, const dsv4_tensor_view *t) {
    int64_t n = dsv4_tensor_numel(t), E = b->cfg->n_routed_experts;
    for (int64_t i = 0; i < n; i++) {
        int64_t v = dsv4_tensor_int(t, i);
        if (v < 0 || v >= E) {
            problem(b, DSV4_ERR_RANGE, "%s: tensor '%s' routes token %lld to expert %lld, outside [0, %lld)",
                    t->file, t->name, (long long)(i / t->shape[1]), (long long)v, (long long)E);
            return;
        }
    }
}

static void bind_layer(binder *b, dsv4_layer_weights *L, const char *pfx, dsv4_attn_type at, dsv4_mlp_type mt,
                       int is_mtp) {
    const dsv4_config *c = b->cfg;
    const int64_t D = c->hidden_size, H = c->num_attention_heads, Dh = c->head_dim, hc = c->hc_mult;
    const int64_t E = c->n_routed_experts, I = c->moe_intermediate_size, g = c->o_groups;
    char n[320];
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    L->attn_type = at;
    L->mlp_type = mt;
    L->compress_rate = at == DSV4_ATTN_CSA ? c->compress_rate_csa : at == DSV4_ATTN_HCA ? c->compress_rate_hca : 0;

    L->attn_norm = bind_param(b, NAME("%s.attn_norm.weight", pfx), FLOATS, 1, D);
    L->ffn_norm = bind_param(b, NAME("%s.ffn_norm.weight", pfx), FLOATS, 1, D);
    L->hc_attn_fn = bind_param(b, NAME("%s.hc_attn_fn", pfx), FLOATS, 2, (2 + hc) * hc, hc * D);
    L->hc_attn_base = bind_param(b, NAME("%s.hc_attn_base", pfx), FLOATS, 1, (2 + hc) * hc);
    L->hc_attn_scale = bind_param(b, NAME("%s.hc_attn_scale", pfx), FLOATS, 1, (int64_t)3);
    L->hc_ffn_fn = bind_param(b, NAME("%s.hc_ffn_fn", pfx), FLOATS, 2, (2 + hc) * hc, hc * D);
    L->hc_ffn_base = bind_param(b, NAME("%s.hc_ffn_base", pfx), FLOATS, 1, (2 + hc) * hc);
    L->hc_ffn_scale = bind_param(b, NAME("%s.hc_ffn_scale", pfx), FLOATS, 1, (int64_t)3);

    bind_linear(b, &L->wq_a, NAME("%s.attn.wq_a", pfx), c->q_lora_rank, D);
    L->q_norm = bind_param(b, NAME("%s.attn.q_norm.weight", pfx), FLOATS, 1, (int64_t)c->q_lora_rank);
    bind_linear(b, &L->wq_b, NAME("%s.attn.wq_b", pfx), H * Dh, c->q_lora_rank);
    bind_linear(b, &L->wkv, NAME("%s.attn.wkv", pfx), Dh, D);
    L->kv_norm = bind_param(b, NAME("%s.attn.kv_norm.weight", pfx), FLOATS, 1, Dh);
    bind_linear(b, &L->wo_a, NAME("%s.attn.wo_a", pfx), g * c->o_lora_rank, H * Dh / g);
    bind_linear(b, &L->wo_b, NAME("%s.attn.wo_b", pfx), D, g * c->o_lora_rank);
    L->attn_sink = bind_param(b, NAME("%s.attn.attn_sink", pfx), FLOATS, 1, H);
    if (at != DSV4_ATTN_SLIDING) {
        int coff = at == DSV4_ATTN_CSA ? 2 : 1;
        bind_compressor(b, &L->compressor, NAME("%s.attn.compressor", pfx), L->compress_rate, coff, Dh);
    }
    if (at == DSV4_ATTN_CSA) {
        const int64_t IH = c->index_n_heads, Di = c->index_head_dim;
        bind_linear(b, &L->index_wq_b, NAME("%s.attn.indexer.wq_b", pfx), IH * Di, c->q_lora_rank);
        bind_linear(b, &L->index_weights_proj, NAME("%s.attn.indexer.weights_proj", pfx), IH, D);
        bind_compressor(b, &L->index_compressor, NAME("%s.attn.indexer.compressor", pfx), L->compress_rate, 2, Di);
    }

    bind_linear(b, &L->gate, NAME("%s.ffn.gate", pfx), E, D);
    if (mt == DSV4_MLP_HASH_MOE) {
        L->tid2eid = bind_param(b, NAME("%s.ffn.gate.tid2eid", pfx), DT(I32) | DT(I64), 2, (int64_t)c->vocab_size,
                                (int64_t)c->num_experts_per_tok);
        if (L->tid2eid) check_tid2eid(b, L->tid2eid);
    } else {
        L->gate_bias = bind_param(b, NAME("%s.ffn.gate.bias", pfx), FLOATS, 1, E);
    }
    L->w1 = calloc((size_t)E, sizeof *L->w1);
    L->w2 = calloc((size_t)E, sizeof *L->w2);
    L->w3 = calloc((size_t)E, sizeof *L->w3);
    if (!L->w1 || !L->w2 || !L->w3) {
        problem(b, DSV4_ERR_OUT_OF_MEMORY, "out of memory binding the experts of %s", pfx);
        return;
    }
    const dsv4_tensor_view *gate_up = find(b, NAME("%s.ffn.experts.gate_up_proj", pfx));
    if (gate_up) { /* HF-internal stacked experts: [E, 2I, D] (gate rows first) and [E, D, I] */
        const dsv4_tensor_view *down = bind_param(b, NAME("%s.ffn.experts.down_proj", pfx), FLOATS, 3, E, D, I);
        if (check_dtype(b, gate_up, FLOATS) && check_shape(b, gate_up, 3, (int64_t[]){E, 2 * I, D}) && down) {
            for (int64_t e = 0; e < E; e++) {
                set_dense(&L->w1[e], gate_up, I, D, (size_t)(e * 2 * I));
                set_dense(&L->w3[e], gate_up, I, D, (size_t)(e * 2 * I + I));
                set_dense(&L->w2[e], down, D, I, (size_t)(e * D));
                account(b, &L->w1[e], NAME("%s.ffn.experts.%lld.w1", pfx, (long long)e));
                account(b, &L->w3[e], NAME("%s.ffn.experts.%lld.w3", pfx, (long long)e));
                account(b, &L->w2[e], NAME("%s.ffn.experts.%lld.w2", pfx, (long long)e));
            }
        }
    } else {
        for (int64_t e = 0; e < E; e++) {
            bind_linear(b, &L->w1[e], NAME("%s.ffn.experts.%lld.w1", pfx, (long long)e), I, D);
            bind_linear(b, &L->w2[e], NAME("%s.ffn.experts.%lld.w2", pfx, (long long)e), D, I);
            bind_linear(b, &L->w3[e], NAME("%s.ffn.experts.%lld.w3", pfx, (long long)e), I, D);
        }
    }
    if (c->n_shared_experts > 0) {
        const int64_t Is = I * c->n_shared_experts;
        bind_linear(b, &L->shared_w1, NAME("%s.ffn.shared_experts.w1", pfx), Is, D);
        bind_linear(b, &L->shared_w2, NAME("%s.ffn.shared_experts.w2", pfx), D, Is);
        bind_linear(b, &L->shared_w3, NAME("%s.ffn.shared_experts.w3", pfx), Is, D);
    }
    if (is_mtp) {
        bind_linear(b, &L->e_proj, NAME("%s.e_proj", pfx), D, D);
        bind_linear(b, &L->h_proj, NAME("%s.h_proj", pfx), D, D);
        L->enorm = bind_param(b, NAME("%s.enorm.weight", pfx), FLOATS, 1, D);
        L->hnorm = bind_param(b, NAME("%s.hnorm.weight", pfx), FLOATS, 1, D);
        L->mtp_norm = bind_param(b, NAME("%s.norm.weight", pfx), FLOATS, 1, D);
        L->hc_head_fn = bind_param(b, NAME("%s.hc_head_fn", pfx), FLOATS, 2, hc, hc * D);
        L->hc_head_base = bind_param(b, NAME("%s.hc_head_base", pfx), FLOATS, 1, hc);
        L->hc_head_scale = bind_param(b, NAME("%s.hc_head_scale", pfx), FLOATS, 1, (int64_t)1);
    }
#undef NAME
}

static void free_layer(dsv4_layer_weights *L) {
    free(L->w1);
    free(L->w2);
    free(L->w3);
}

void dsv4_weights_free(dsv4_weights *w) {
    if (!w) return;
    for (int l = 0; l < w->n_layers && w->layers; l++) free_layer(&w->layers[l]);
    free(w->layers);
    if (w->has_mtp) free_layer(&w->mtp);
    free(w->unused);
    free(w->problems);
    free(w->linears);
    memset(w, 0, sizeof *w);
}

static void free_index(binder *b) {
    for (int i = 0; i < b->n; i++) free(b->idx[i].name);
    free(b->idx);
}

dsv4_status dsv4_weights_bind(const dsv4_config *cfg, const dsv4_checkpoint *ck, int lenient, dsv4_weights *w) {
    memset(w, 0, sizeof *w);
    binder b = {.cfg = cfg, .w = w, .check_finite = 1, .first = DSV4_OK};
    int n = dsv4_ckpt_count(ck);
    w->problems = calloc(MAX_RECORDED_PROBLEMS, sizeof *w->problems);
    w->layers = calloc((size_t)cfg->num_hidden_layers, sizeof *w->layers);
    b.idx = calloc((size_t)n + 1, sizeof *b.idx);
    if (!w->problems || !w->layers || !b.idx) {
        free(b.idx);
        dsv4_weights_free(w);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory building the weight table");
    }
    w->n_layers = cfg->num_hidden_layers;
    w->n_tensors = n;

    /* Index every tensor under its canonical name. */
    for (int i = 0; i < n; i++) {
        const dsv4_tensor_view *t = dsv4_ckpt_tensor(ck, i);
        char name[512];
        w->total_bytes += t->nbytes;
        if (dsv4_canonical_name(t->name, name, sizeof name)) {
            problem(&b, DSV4_ERR_SHAPE, "%s: tensor name '%.200s...' is too long", t->file, t->name);
            continue;
        }
        b.idx[b.n].name = strdup(name);
        b.idx[b.n].t = t;
        if (!b.idx[b.n].name) {
            free_index(&b);
            dsv4_weights_free(w);
            return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory building the weight table");
        }
        b.n++;
    }
    qsort(b.idx, (size_t)b.n, sizeof *b.idx, cmp_entry);
    for (int i = 1; i < b.n; i++)
        if (!strcmp(b.idx[i].name, b.idx[i - 1].name))
            problem(&b, DSV4_ERR_OVERLAP, "tensors '%s' (%s) and '%s' (%s) are the same weight '%s' under two names",
                    b.idx[i - 1].t->name, b.idx[i - 1].t->file, b.idx[i].t->name, b.idx[i].t->file, b.idx[i].name);

    const int64_t V = cfg->vocab_size, D = cfg->hidden_size, hc = cfg->hc_mult;
    b.check_finite = 0;
    w->embed = bind_param(&b, "embed.weight", FLOATS, 2, V, D);
    /* tied embeddings (HF's tie_word_embeddings): the output head is the embedding table */
    w->head = cfg->tie_word_embeddings ? w->embed : bind_param(&b, "head.weight", FLOATS, 2, V, D);
    b.check_finite = 1;
    w->norm = bind_param(&b, "norm.weight", FLOATS, 1, D);
    w->hc_head_fn = bind_param(&b, "hc_head_fn", FLOATS, 2, hc, hc * D);
    w->hc_head_base = bind_param(&b, "hc_head_base", FLOATS, 1, hc);
    w->hc_head_scale = bind_param(&b, "hc_head_scale", FLOATS, 1, (int64_t)1);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        char pfx[32];
        snprintf(pfx, sizeof pfx, "layers.%d", l);
        bind_layer(&b, &w->layers[l], pfx, cfg->layer_types[l], cfg->mlp_layer_types[l], 0);
    }
    /* The MTP block is optional (HF checkpoints drop it); when present it must be whole. */
    canon_entry key = {.name = "mtp."};
    size_t lo = 0, hi = (size_t)b.n;
    while (lo < hi) { /* first name >= "mtp." */
        size_t mid = (lo + hi) / 2;
        if (cmp_entry(&b.idx[mid], &key) < 0) lo = mid + 1; else hi = mid;
    }
    if (lo < (size_t)b.n && !strncmp(b.idx[lo].name, "mtp.0.", 6)) {
        w->has_mtp = 1;
        bind_layer(&b, &w->mtp, "mtp.0", DSV4_ATTN_SLIDING, DSV4_MLP_MOE, 1);
    }

    w->unused = calloc((size_t)n + 1, sizeof *w->unused);
    for (int i = 0; i < b.n && w->unused; i++) {
        if (b.idx[i].used) w->n_used++;
        else w->unused[w->n_unused++] = b.idx[i].t->name;
    }
    free_index(&b);
    if (!w->unused) {
        dsv4_weights_free(w);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "out of memory building the weight table");
    }
    if (b.first != DSV4_OK && !lenient) {
        dsv4_status st = b.first;
        char msg[512];
        memcpy(msg, b.first_msg, sizeof msg);
        int more = w->n_problems - 1;
        dsv4_weights_free(w);
        if (more > 0) return dsv4_fail(st, "%s (and %d more problems; `dsv4 inspect` lists them)", msg, more);
        return dsv4_fail(st, "%s", msg);
    }
    return DSV4_OK;
}

