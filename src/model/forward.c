/* The DeepSeek-V4 forward pass (../shared/spec/model.md), written once over the reference
 * ops of src/cpu. One call runs T new tokens of one sequence through every layer and keeps
 * what later tokens need: the last sliding_window KV rows, the compressors' open windows
 * and overlap halves, and the compressed entries (CSA, HCA and the indexer's keys). Prefill,
 * chunked prefill and decode are the same code with different T. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "cpu/ops.h"
#include "model/model.h"

/* ---- fp32 copies of the small parameters, made once per session ---- */
typedef struct layer_params {
    float *attn_norm, *ffn_norm, *q_norm, *kv_norm, *sinks;
    float *hc_attn_fn, *hc_attn_base, *hc_attn_scale, *hc_ffn_fn, *hc_ffn_base, *hc_ffn_scale;
    float *comp_ape, *comp_norm, *icomp_ape, *icomp_norm;
    float *gate_bias;
    int32_t *tid2eid;
    dsv4_cpu_expert *experts, shared;
} layer_params;

/* ---- what one sequence keeps per layer between calls ---- */
typedef struct layer_state {
    float *ring_kv; /* [window, Dh]: KV row of position p in slot p % window */
    int *ring_pos;  /* [window]: its position, -1 while empty */
    dsv4_cpu_compress_state comp, icomp;
    float *entries, *ientries; /* [cap, Dh], [cap, Di] compressed KV and indexer keys */
    int n_entries, n_ientries, cap;
} layer_state;

typedef struct seq_state {
    int len;
    int broken; /* a call failed part-way: some layers' state moved on, others did not */
    layer_state *layers;
} seq_state;

struct dsv4_session {
    const dsv4_model *m;
    dsv4_session_options opt;
    layer_params *lp;
    float *inv_freq_main, *inv_freq_compress; /* [R/2] */
    dsv4_weight head;
    float *final_norm, *hc_head_fn, *hc_head_base, *hc_head_scale;
    seq_state *seqs;
    dsv4_layer_observer observe; /* verify: sees each layer's residual streams */
    void *observe_ctx;
};

void dsv4_session_observe_layers(dsv4_session *s, dsv4_layer_observer fn, void *ctx) {
    s->observe = fn;
    s->observe_ctx = ctx;
}

void dsv4_session_options_default(dsv4_session_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->numerics = DSV4_W4A16;
    o->max_batch = 1;
    o->max_seq_len = 4096;
}

int dsv4_model_vocab_size(const dsv4_model *m) { return m ? m->cfg.vocab_size : 0; }
int dsv4_model_eos_token(const dsv4_model *m) { return m ? m->cfg.eos_token_id : -1; }

static float *to_f32(const dsv4_tensor_view *t, dsv4_status *st) {
    if (*st != DSV4_OK || !t) return NULL;
    float *p = malloc(sizeof(float) * (size_t)dsv4_tensor_numel(t));
    if (!p) *st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory copying '%s'", t->name);
    else dsv4_tensor_to_f32(t, p);
    return p;
}

static int32_t *ids_to_i32(const dsv4_tensor_view *t, dsv4_status *st) {
    if (*st != DSV4_OK || !t) return NULL;
    int64_t n = dsv4_tensor_numel(t);
    int32_t *p = malloc(sizeof(int32_t) * (size_t)n);
    if (!p) { *st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory copying '%s'", t->name); return NULL; }
    for (int64_t i = 0; i < n; i++) p[i] = (int32_t)dsv4_tensor_int(t, i); /* range checked at bind time */
    return p;
}

static void free_params(layer_params *p) {
    float *fs[] = {p->attn_norm, p->ffn_norm, p->q_norm, p->kv_norm, p->sinks, p->hc_attn_fn, p->hc_attn_base,
                   p->hc_attn_scale, p->hc_ffn_fn, p->hc_ffn_base, p->hc_ffn_scale, p->comp_ape, p->comp_norm,
                   p->icomp_ape, p->icomp_norm, p->gate_bias};
    for (size_t i = 0; i < sizeof fs / sizeof fs[0]; i++) free(fs[i]);
    free(p->tid2eid);
    free(p->experts);
}

static dsv4_status load_params(const dsv4_config *c, const dsv4_layer_weights *L, layer_params *p) {
    dsv4_status st = DSV4_OK;
    p->attn_norm = to_f32(L->attn_norm, &st);
    p->ffn_norm = to_f32(L->ffn_norm, &st);
    p->q_norm = to_f32(L->q_norm, &st);
    p->kv_norm = to_f32(L->kv_norm, &st);
    p->sinks = to_f32(L->attn_sink, &st);
    p->hc_attn_fn = to_f32(L->hc_attn_fn, &st);
    p->hc_attn_base = to_f32(L->hc_attn_base, &st);
    p->hc_attn_scale = to_f32(L->hc_attn_scale, &st);
    p->hc_ffn_fn = to_f32(L->hc_ffn_fn, &st);
    p->hc_ffn_base = to_f32(L->hc_ffn_base, &st);
    p->hc_ffn_scale = to_f32(L->hc_ffn_scale, &st);
    p->comp_ape = to_f32(L->compressor.ape, &st);
    p->comp_norm = to_f32(L->compressor.norm, &st);
    p->icomp_ape = to_f32(L->index_compressor.ape, &st);
    p->icomp_norm = to_f32(L->index_compressor.norm, &st);
    p->gate_bias = to_f32(L->gate_bias, &st);
    p->tid2eid = ids_to_i32(L->tid2eid, &st);
    if (st != DSV4_OK) return st;
    p->experts = calloc((size_t)c->n_routed_experts, sizeof *p->experts);
    if (!p->experts) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory");
    for (int e = 0; e < c->n_routed_experts; e++) p->experts[e] = (dsv4_cpu_expert){&L->w1[e], &L->w3[e], &L->w2[e]};
    p->shared = (dsv4_cpu_expert){&L->shared_w1, &L->shared_w3, &L->shared_w2};
    return DSV4_OK;
}

static void free_seq(const dsv4_session *s, seq_state *q) {
    if (!q->layers) return;
    for (int l = 0; l < s->m->cfg.num_hidden_layers; l++) {
        layer_state *ls = &q->layers[l];
        free(ls->ring_kv);
        free(ls->ring_pos);
        free(ls->entries);
        free(ls->ientries);
        dsv4_cpu_compress_state_free(&ls->comp);
        dsv4_cpu_compress_state_free(&ls->icomp);
    }
    free(q->layers);
    q->layers = NULL;
    q->len = 0;
}

static dsv4_status init_seq(const dsv4_session *s, seq_state *q) {
    const dsv4_config *c = &s->m->cfg;
    q->len = 0;
    q->layers = calloc((size_t)c->num_hidden_layers, sizeof *q->layers);
    if (!q->layers) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory");
    for (int l = 0; l < c->num_hidden_layers; l++) {
        layer_state *ls = &q->layers[l];
        const dsv4_layer_weights *L = &s->m->w.layers[l];
        ls->ring_kv = malloc(sizeof(float) * (size_t)c->sliding_window * c->head_dim);
        ls->ring_pos = malloc(sizeof(int) * (size_t)c->sliding_window);
        if (!ls->ring_kv || !ls->ring_pos) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory");
        for (int i = 0; i < c->sliding_window; i++) ls->ring_pos[i] = -1;
        if (L->attn_type == DSV4_ATTN_SLIDING) continue;
        int m = L->compress_rate, R = c->qk_rope_head_dim;
        ls->cap = s->opt.max_seq_len / m;
        ls->entries = malloc(sizeof(float) * ((size_t)ls->cap * c->head_dim + 1));
        if (!ls->entries) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory for compressed KV");
        dsv4_cpu_compress_dims cd = {m, c->head_dim, L->attn_type == DSV4_ATTN_CSA, R, (float)c->rms_norm_eps};
        DSV4_TRY(dsv4_cpu_compress_state_init(&ls->comp, &cd, 0));
        if (L->attn_type == DSV4_ATTN_CSA) {
            ls->ientries = malloc(sizeof(float) * ((size_t)ls->cap * c->index_head_dim + 1));
            if (!ls->ientries) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory for indexer keys");
            dsv4_cpu_compress_dims id = {m, c->index_head_dim, 1, R, (float)c->rms_norm_eps};
            DSV4_TRY(dsv4_cpu_compress_state_init(&ls->icomp, &id, 0));
        }
    }
    return DSV4_OK;
}

void dsv4_session_free(dsv4_session *s) {
    if (!s) return;
    for (int b = 0; s->seqs && b < s->opt.max_batch; b++) free_seq(s, &s->seqs[b]);
    free(s->seqs);
    for (int l = 0; s->lp && l < s->m->cfg.num_hidden_layers; l++) free_params(&s->lp[l]);
    free(s->lp);
    free(s->inv_freq_main);
    free(s->inv_freq_compress);
    free(s->final_norm);
    free(s->hc_head_fn);
    free(s->hc_head_base);
    free(s->hc_head_scale);
    free(s);
}

dsv4_status dsv4_session_create(const dsv4_model *m, const dsv4_session_options *o, dsv4_session **out) {
    if (!out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_session_create: NULL output pointer");
    *out = NULL;
    if (!m) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_session_create: no model");
    dsv4_session_options def;
    dsv4_session_options_default(&def);
    if (!o) o = &def;
    if (o->max_batch < 1 || o->max_seq_len < 1 || (o->numerics != DSV4_W4A16 && o->numerics != DSV4_W4A4))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_session_create: max_batch %d, max_seq_len %d, numerics %d",
                         o->max_batch, o->max_seq_len, (int)o->numerics);
    const dsv4_config *c = &m->cfg;
    dsv4_session *s = calloc(1, sizeof *s);
    if (!s) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory");
    s->m = m;
    s->opt = *o;
    dsv4_status st = DSV4_OK;
    int R = c->qk_rope_head_dim;
    s->lp = calloc((size_t)c->num_hidden_layers, sizeof *s->lp);
    s->seqs = calloc((size_t)o->max_batch, sizeof *s->seqs);
    s->inv_freq_main = malloc(sizeof(float) * (size_t)(R / 2));
    s->inv_freq_compress = malloc(sizeof(float) * (size_t)(R / 2));
    if (!s->lp || !s->seqs || !s->inv_freq_main || !s->inv_freq_compress)
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "session: out of memory");
    if (st == DSV4_OK) {
        dsv4_cpu_rope_cfg main = {R, c->rope_theta, 1.0, 0, 0, 0};
        dsv4_cpu_rope_cfg comp = {R, c->compress_rope_theta, c->yarn ? c->yarn_factor : 1.0,
                                  (double)c->yarn_original_max_position, c->yarn_beta_fast, c->yarn_beta_slow};
        st = dsv4_cpu_rope_inv_freq(&main, s->inv_freq_main);
        if (st == DSV4_OK) st = dsv4_cpu_rope_inv_freq(&comp, s->inv_freq_compress);
    }
    for (int l = 0; st == DSV4_OK && l < c->num_hidden_layers; l++) st = load_params(c, &m->w.layers[l], &s->lp[l]);
    s->final_norm = to_f32(m->w.norm, &st);
    s->hc_head_fn = to_f32(m->w.hc_head_fn, &st);
    s->hc_head_base = to_f32(m->w.hc_head_base, &st);
    s->hc_head_scale = to_f32(m->w.hc_head_scale, &st);
    if (st == DSV4_OK) { /* lm_head as a dense weight */
        const dsv4_tensor_view *h = m->w.head;
        s->head = (dsv4_weight){.format = h->dtype == DSV4_DT_BF16 ? DSV4_WF_BF16
                                        : h->dtype == DSV4_DT_F16 ? DSV4_WF_F16 : DSV4_WF_F32,
                                .rows = h->shape[0], .cols = h->shape[1], .data = h->data,
                                .global_scale = 1.0f, .src = h, .bytes = h->nbytes};
    }
    for (int b = 0; st == DSV4_OK && b < o->max_batch; b++) st = init_seq(s, &s->seqs[b]);
    if (st != DSV4_OK) {
        dsv4_session_free(s);
        return st;
    }
    *out = s;
    return DSV4_OK;
}

dsv4_status dsv4_session_reset(dsv4_session *s, int seq) {
    if (!s || seq < 0 || seq >= s->opt.max_batch)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "session reset: sequence %d outside [0, %d)", seq,
                         s ? s->opt.max_batch : 0);
    free_seq(s, &s->seqs[seq]);
    dsv4_status st = init_seq(s, &s->seqs[seq]);
    s->seqs[seq].broken = st != DSV4_OK; /* half-built state must not be used */
    return st;
}

int dsv4_session_length(const dsv4_session *s, int seq) {
    return (s && seq >= 0 && seq < s->opt.max_batch) ? s->seqs[seq].len : -1;
}

/* ---- one call: scratch buffers freed together at the end ---- */
typedef struct scratch {
    void *ptr[64];
    int n;
} scratch;

static void *scratch_alloc(scratch *a, size_t n, size_t size, dsv4_status *st) {
    if (*st != DSV4_OK) return NULL;
    if (a->n == (int)(sizeof a->ptr / sizeof a->ptr[0])) {
        *st = dsv4_fail(DSV4_ERR_INTERNAL, "forward: scratch table full");
        return NULL;
    }
    void *p = malloc(size * (n ? n : 1));
    if (!p) *st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "forward: out of memory (%zu values)", n);
    else a->ptr[a->n++] = p;
    return p;
}

static float *scratch_f32(scratch *a, size_t n, dsv4_status *st) { return scratch_alloc(a, n, sizeof(float), st); }
static int *scratch_int(scratch *a, size_t n, dsv4_status *st) { return scratch_alloc(a, n, sizeof(int), st); }

static void scratch_free(scratch *a) {
    for (int i = 0; i < a->n; i++) free(a->ptr[i]);
    a->n = 0;
}

/* NaN/Inf must not travel silently: name the layer and the op that produced it. */
static dsv4_status check_finite(const float *x, size_t n, int layer, const char *op) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return dsv4_fail(DSV4_ERR_NONFINITE, "layer %d, %s: value %zu is %s", layer, op, i,
                             isnan(x[i]) ? "NaN" : "Inf");
    return DSV4_OK;
}

/* Adds "layer L, op: " to a failure's message unless an inner step already named its layer. */
static dsv4_status in_layer(dsv4_status st, int layer, const char *op) {
    if (st != DSV4_OK && strncmp(dsv4_last_error(), "layer ", 6) != 0)
        dsv4_fail_context(st, "layer %d, %s", layer, op);
    return st;
}

#define STEP(expr, op)                                  \
    do {                                                \
        if (st == DSV4_OK) st = in_layer((expr), layer, (op)); \
    } while (0)
#define FINITE(buf, n, op) STEP(check_finite((buf), (size_t)(n), layer, (op)), (op))

/* A compressor over T new tokens: its kv/gate projections, then every window they complete
 * appended to entries [cap, width] (*n_entries grows). */
static dsv4_status compress_tokens(dsv4_session *s, int layer, const dsv4_compressor_weights *cw,
                                   const dsv4_cpu_compress_params *cp, dsv4_cpu_compress_state *state, int T,
                                   const float *xn, float *entries, int width, int cap, int *n_entries,
                                   const char *what) {
    const size_t proj = (size_t)T * (size_t)cw->wkv.rows;
    dsv4_status st = DSV4_OK;
    scratch a = {0};
    float *kv = scratch_f32(&a, proj, &st), *gate = scratch_f32(&a, proj, &st);
    float *out = entries + (size_t)*n_entries * width;
    int n_new = 0;
    STEP(dsv4_cpu_linear(&cw->wkv, xn, T, kv, s->opt.numerics), what);
    STEP(dsv4_cpu_linear(&cw->wgate, xn, T, gate, s->opt.numerics), what);
    STEP(dsv4_cpu_compress_feed(state, cp, T, kv, gate, out, cap - *n_entries, &n_new), what);
    FINITE(out, (size_t)n_new * width, what);
    if (st == DSV4_OK) *n_entries += n_new;
    scratch_free(&a);
    return st;
}

/* Attention sublayer: xn [T, D] (already RMS-normed) -> out [T, D]. */
static dsv4_status attention(dsv4_session *s, int layer, layer_state *ls, int T, const int *pos, const float *xn,
                             float *out) {
    const dsv4_config *c = &s->m->cfg;
    const dsv4_layer_weights *L = &s->m->w.layers[layer];
    const layer_params *p = &s->lp[layer];
    const dsv4_numerics mode = s->opt.numerics;
    const int D = c->hidden_size, H = c->num_attention_heads, Dh = c->head_dim, R = c->qk_rope_head_dim;
    const int W = c->sliding_window;
    const float eps = (float)c->rms_norm_eps;
    const float *inv_freq = L->attn_type == DSV4_ATTN_SLIDING ? s->inv_freq_main : s->inv_freq_compress;
    dsv4_status st = DSV4_OK;
    scratch a = {0};

    /* query: wq_a -> q_norm (= qr, also the indexer's input) -> wq_b -> per-head norm -> RoPE */
    float *qr = scratch_f32(&a, (size_t)T * c->q_lora_rank, &st);
    float *q = scratch_f32(&a, (size_t)T * H * Dh, &st);
    STEP(dsv4_cpu_linear(&L->wq_a, xn, T, qr, mode), "wq_a");
    STEP(dsv4_cpu_rmsnorm(qr, qr, p->q_norm, T, c->q_lora_rank, eps), "q_norm");
    STEP(dsv4_cpu_linear(&L->wq_b, qr, T, q, mode), "wq_b");
    STEP(dsv4_cpu_rmsnorm(q, q, NULL, T * H, Dh, eps), "q head norm");
    STEP(dsv4_cpu_rope(q, T, H, Dh, R, pos, inv_freq, 0), "q rope");
    FINITE(q, (size_t)T * H * Dh, "query");

    /* the single latent KV row per token; candidates = the ring (earlier tokens) + these */
    int n_ring = 0;
    for (int i = 0; i < W; i++) n_ring += ls->ring_pos[i] >= 0;
    float *kv = scratch_f32(&a, (size_t)(n_ring + T) * Dh, &st);
    int *kv_pos = scratch_int(&a, (size_t)(n_ring + T), &st);
    if (st == DSV4_OK) {
        /* oldest first: the softmax then sums candidates in position order, as a one-shot
         * prefill does, so chunked and one-shot runs agree bit for bit */
        int j = 0;
        for (int k = 0; k < W; k++) {
            int i = (pos[0] + k) % W; /* slot of position pos[0]-W+k, the oldest first */
            if (ls->ring_pos[i] < 0) continue;
            memcpy(kv + (size_t)j * Dh, ls->ring_kv + (size_t)i * Dh, sizeof(float) * Dh);
            kv_pos[j++] = ls->ring_pos[i];
        }
        for (int t = 0; t < T; t++) kv_pos[n_ring + t] = pos[t];
    }
    float *kv_new = kv ? kv + (size_t)n_ring * Dh : NULL;
    STEP(dsv4_cpu_linear(&L->wkv, xn, T, kv_new, mode), "wkv");
    STEP(dsv4_cpu_rmsnorm(kv_new, kv_new, p->kv_norm, T, Dh, eps), "kv_norm");
    STEP(dsv4_cpu_rope(kv_new, T, 1, Dh, R, pos, inv_freq, 0), "kv rope");
    FINITE(kv_new, (size_t)T * Dh, "kv");
    if (s->opt.kv_fp8) STEP(dsv4_cpu_kv_fp8_roundtrip(kv_new, T, Dh, R), "kv fp8 cache");

    /* compressed entries: the compressor sees every token; complete windows become entries */
    const int *c_idx = NULL;
    int c_k = 0;
    if (L->attn_type != DSV4_ATTN_SLIDING) {
        dsv4_cpu_compress_params cp = {p->comp_ape, p->comp_norm, s->inv_freq_compress};
        const int before = ls->n_entries;
        STEP(compress_tokens(s, layer, &L->compressor, &cp, &ls->comp, T, xn, ls->entries, Dh, ls->cap,
                             &ls->n_entries, "compressor"),
             "compressor");
        if (s->opt.kv_fp8)
            STEP(dsv4_cpu_kv_fp8_roundtrip(ls->entries + (size_t)before * Dh, ls->n_entries - before, Dh, R),
                 "compressed kv fp8 cache");
    }
    if (L->attn_type == DSV4_ATTN_CSA) {
        /* lightning indexer: its own compressor over the same windows, then top-k per query */
        const int IH = c->index_n_heads, Di = c->index_head_dim;
        float *qi = scratch_f32(&a, (size_t)T * IH * Di, &st), *wr = scratch_f32(&a, (size_t)T * IH, &st);
        dsv4_cpu_compress_params ip = {p->icomp_ape, p->icomp_norm, s->inv_freq_compress};
        STEP(compress_tokens(s, layer, &L->index_compressor, &ip, &ls->icomp, T, xn, ls->ientries, Di, ls->cap,
                             &ls->n_ientries, "indexer compressor"),
             "indexer compressor");
        STEP(dsv4_cpu_linear(&L->index_wq_b, qr, T, qi, mode), "indexer wq_b");
        STEP(dsv4_cpu_rope(qi, T, IH, Di, R, pos, s->inv_freq_compress, 0), "indexer q rope");
        STEP(dsv4_cpu_linear(&L->index_weights_proj, xn, T, wr, mode), "indexer weights_proj");
        dsv4_cpu_indexer_dims idd = {IH, Di, c->index_topk, L->compress_rate};
        float *scores = scratch_f32(&a, (size_t)T * ls->n_ientries, &st);
        int *idx = scratch_int(&a, (size_t)T * c->index_topk, &st);
        STEP(dsv4_cpu_indexer_scores(&idd, T, qi, wr, pos, ls->ientries, ls->n_ientries, scores), "indexer scores");
        STEP(dsv4_cpu_indexer_topk(&idd, T, scores, pos, ls->n_ientries, idx), "indexer top-k");
        c_idx = idx;
        c_k = c->index_topk;
    }

    /* core attention with sinks over window + compressed entries, inverse RoPE on o */
    float *o = scratch_f32(&a, (size_t)T * H * Dh, &st);
    dsv4_cpu_attn_dims ad = {H, Dh, R, W};
    STEP(dsv4_cpu_attention(&ad, T, q, pos, kv, kv_pos, n_ring + T, ls->entries, ls->n_entries, L->compress_rate,
                            c_idx, c_k, p->sinks, inv_freq, o),
         "attention");
    FINITE(o, (size_t)T * H * Dh, "attention");
    dsv4_cpu_oproj_dims od = {H, Dh, c->o_groups, c->o_lora_rank, D};
    STEP(dsv4_cpu_grouped_oproj(&od, T, o, &L->wo_a, &L->wo_b, mode, out), "output projection");
    FINITE(out, (size_t)T * D, "output projection");

    /* keep the newest `window` rows for the tokens that follow */
    if (st == DSV4_OK)
        for (int t = (T > W ? T - W : 0); t < T; t++) {
            int slot = pos[t] % W;
            memcpy(ls->ring_kv + (size_t)slot * Dh, kv_new + (size_t)t * Dh, sizeof(float) * Dh);
            ls->ring_pos[slot] = pos[t];
        }
    scratch_free(&a);
    return st;
}

/* MoE sublayer: xn [T, D] -> out [T, D]. */
static dsv4_status moe(dsv4_session *s, int layer, int T, const int32_t *ids, const float *xn, float *out) {
    const dsv4_config *c = &s->m->cfg;
    const dsv4_layer_weights *L = &s->m->w.layers[layer];
    const layer_params *p = &s->lp[layer];
    const int E = c->n_routed_experts, k = c->num_experts_per_tok;
    dsv4_status st = DSV4_OK;
    scratch a = {0};
    float *logits = scratch_f32(&a, (size_t)T * E, &st), *w = scratch_f32(&a, (size_t)T * k, &st);
    int *idx = scratch_int(&a, (size_t)T * k, &st);
    static const dsv4_cpu_score_func score_of[] = {[DSV4_SCORE_SQRTSOFTPLUS] = DSV4_CPU_SCORE_SQRTSOFTPLUS,
                                                   [DSV4_SCORE_SIGMOID] = DSV4_CPU_SCORE_SIGMOID,
                                                   [DSV4_SCORE_SOFTMAX] = DSV4_CPU_SCORE_SOFTMAX};
    dsv4_cpu_router_cfg rc = {E, k, score_of[c->scoring_func], c->norm_topk_prob, (float)c->routed_scaling_factor};
    STEP(dsv4_cpu_linear(&L->gate, xn, T, logits, s->opt.numerics), "router gate");
    FINITE(logits, (size_t)T * E, "router logits");
    STEP(dsv4_cpu_router(&rc, T, logits, p->gate_bias, p->tid2eid, ids, c->vocab_size, idx, w), "router");
    STEP(dsv4_cpu_moe(p->experts, E, c->n_shared_experts > 0 ? &p->shared : NULL, T, c->hidden_size, k, xn, idx, w,
                      (float)c->swiglu_limit, s->opt.numerics, out),
         "experts");
    FINITE(out, (size_t)T * c->hidden_size, "experts");
    scratch_free(&a);
    return st;
}

/* One decoder layer on the residual streams X [T, hc, D], in place. */
static dsv4_status decoder_layer(dsv4_session *s, int layer, layer_state *ls, int T, const int *pos,
                                 const int32_t *ids, float *X) {
    const dsv4_config *c = &s->m->cfg;
    const layer_params *p = &s->lp[layer];
    const int D = c->hidden_size, hc = c->hc_mult;
    const float eps = (float)c->rms_norm_eps;
    const dsv4_cpu_hc_dims hd = {hc, D, c->hc_sinkhorn_iters, (float)c->hc_eps, eps};
    dsv4_status st = DSV4_OK;
    scratch a = {0};
    float *x = scratch_f32(&a, (size_t)T * D, &st), *y = scratch_f32(&a, (size_t)T * D, &st);
    float *post = scratch_f32(&a, (size_t)T * hc, &st), *comb = scratch_f32(&a, (size_t)T * hc * hc, &st);
    float *X2 = scratch_f32(&a, (size_t)T * hc * D, &st);
    for (int site = 0; site < 2 && st == DSV4_OK; site++) {
        const float *fn = site ? p->hc_ffn_fn : p->hc_attn_fn, *base = site ? p->hc_ffn_base : p->hc_attn_base;
        const float *scale = site ? p->hc_ffn_scale : p->hc_attn_scale;
        STEP(dsv4_cpu_hc_pre(&hd, T, X, fn, base, scale, x, post, comb), site ? "mHC pre (ffn)" : "mHC pre (attn)");
        STEP(dsv4_cpu_rmsnorm(x, x, site ? p->ffn_norm : p->attn_norm, T, D, eps), site ? "ffn_norm" : "attn_norm");
        STEP(site ? moe(s, layer, T, ids, x, y) : attention(s, layer, ls, T, pos, x, y), site ? "moe" : "attention");
        /* the oracle runs in fp32, where HF's casts of post/comb are no-ops */
        STEP(dsv4_cpu_hc_post(&hd, T, X, y, post, comb, DSV4_CPU_HC_MERGE_FP32, X2), "mHC post");
        FINITE(X2, (size_t)T * hc * D, site ? "mHC post (ffn)" : "mHC post (attn)");
        if (st == DSV4_OK) memcpy(X, X2, sizeof(float) * (size_t)T * hc * D);
    }
    scratch_free(&a);
    return st;
}

/* Everything that can be wrong with a call is checked before anything runs. */
static dsv4_status check_tokens(const dsv4_session *s, int seq, const int32_t *ids, int n, const char *op) {
    if (seq < 0 || seq >= s->opt.max_batch)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: sequence %d outside the session's batch of %d", op, seq,
                         s->opt.max_batch);
    const seq_state *q = &s->seqs[seq];
    if (q->broken)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT,
                         "%s: sequence %d failed part-way through an earlier call; reset it before using it again", op,
                         seq);
    if (n > s->opt.max_seq_len - q->len)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: sequence %d would reach %d tokens, past the session's "
                         "max_seq_len %d", op, seq, q->len + n, s->opt.max_seq_len);
    const int V = s->m->cfg.vocab_size;
    for (int t = 0; t < n; t++)
        if (ids[t] < 0 || ids[t] >= V)
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: token %d (index %d) outside the vocabulary [0, %d)", op,
                             ids[t], t, V);
    return DSV4_OK;
}

/* The forward pass proper; the call was validated. */
static dsv4_status run_tokens(dsv4_session *s, int seq, const int32_t *ids, int n, float *logits) {
    const dsv4_config *c = &s->m->cfg;
    seq_state *q = &s->seqs[seq];
    const int D = c->hidden_size, hc = c->hc_mult, T = n;
    int layer = -1; /* for STEP messages outside the layers */
    dsv4_status st = DSV4_OK;
    scratch a = {0};
    float *X = scratch_f32(&a, (size_t)T * hc * D, &st), *h = scratch_f32(&a, (size_t)T * D, &st);
    int *pos = scratch_int(&a, (size_t)T, &st);
    /* embeddings, copied into every stream */
    const dsv4_tensor_view *emb = s->m->w.embed;
    const size_t esz = (size_t)dsv4_dtype_bits(emb->dtype) / 8;
    for (int t = 0; st == DSV4_OK && t < T; t++) {
        pos[t] = q->len + t;
        float *xt = X + (size_t)t * hc * D;
        dsv4_dense_to_f32(emb->dtype, (const char *)emb->data + (size_t)ids[t] * D * esz, (size_t)D, xt);
        for (int j = 1; j < hc; j++) memcpy(xt + (size_t)j * D, xt, sizeof(float) * D);
    }
    for (layer = 0; st == DSV4_OK && layer < c->num_hidden_layers; layer++) {
        st = decoder_layer(s, layer, &q->layers[layer], T, pos, ids, X);
        if (st == DSV4_OK && s->observe) s->observe(s->observe_ctx, layer, T, X, hc * D);
    }
    layer = c->num_hidden_layers;
    const dsv4_cpu_hc_dims hd = {hc, D, c->hc_sinkhorn_iters, (float)c->hc_eps, (float)c->rms_norm_eps};
    if (logits) {
        STEP(dsv4_cpu_hc_head(&hd, T, X, s->hc_head_fn, s->hc_head_base, s->hc_head_scale, h), "mHC head");
        STEP(dsv4_cpu_rmsnorm(h, h, s->final_norm, T, D, (float)c->rms_norm_eps), "final norm");
        STEP(dsv4_cpu_linear(&s->head, h, T, logits, s->opt.numerics), "lm_head");
        FINITE(logits, (size_t)T * c->vocab_size, "logits");
    }
    if (st == DSV4_OK) q->len += n;
    else q->broken = 1;
    scratch_free(&a);
    return st;
}

dsv4_status dsv4_session_forward(dsv4_session *s, int seq, const int32_t *ids, int n, float *logits) {
    if (!s || !ids || n < 1)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "forward: need a session and at least one token");
    DSV4_TRY(check_tokens(s, seq, ids, n, "forward"));
    return run_tokens(s, seq, ids, n, logits);
}

dsv4_status dsv4_session_decode(dsv4_session *s, int B, const int *seqs, const int32_t *ids, float *logits) {
    if (!s || B < 1 || !seqs || !ids)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "decode: need a session and at least one sequence");
    if (B > s->opt.max_batch)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "decode: batch of %d past the session's max_batch %d", B,
                         s->opt.max_batch);
    for (int b = 0; b < B; b++)
        for (int j = 0; j < b; j++)
            if (seqs[b] == seqs[j])
                return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "decode: sequence %d appears twice in one step", seqs[b]);
    for (int b = 0; b < B; b++) DSV4_TRY(check_tokens(s, seqs[b], &ids[b], 1, "decode"));
    const int V = s->m->cfg.vocab_size;
    for (int b = 0; b < B; b++)
        DSV4_TRY(run_tokens(s, seqs[b], &ids[b], 1, logits ? logits + (size_t)b * V : NULL));
    return DSV4_OK;
}
