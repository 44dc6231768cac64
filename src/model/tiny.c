/* `dsv4 make-tiny`: a deterministic tiny random DeepSeek-V4 checkpoint that exercises every
 * layer type (sliding, CSA with indexer, HCA), hash and top-k MoE layers and (native schemes)
 * an MTP block, written in the files and names real checkpoints use. Every weight is exactly
 * representable in the format it is stored in, so a comparison against another engine that
 * reads the same file measures only that engine's arithmetic. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/files.h"
#include "base/status.h"
#include "format/fp.h"
#include "format/quant.h"
#include "format/safetensors.h"
#include "model/config.h"
#include "model/names.h"

typedef struct tiny {
    dsv4_tiny_scheme scheme;
    dsv4_config cfg;
    dsv4_st_writer *w;
    uint64_t rng;
    void **bufs; /* everything handed to the writer, freed after writing */
    int n_bufs, cap_bufs;
    dsv4_status st;
} tiny;

/* ---- deterministic randomness (splitmix64 + Box-Muller) ---- */
static uint64_t next_u64(tiny *t) {
    uint64_t z = (t->rng += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
static double next_uniform(tiny *t) { return ((double)(next_u64(t) >> 11) + 0.5) / 9007199254740992.0; }
static float next_normal(tiny *t) {
    double u1 = next_uniform(t), u2 = next_uniform(t);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

static void *track(tiny *t, size_t bytes) {
    if (t->st != DSV4_OK) return NULL;
    if (t->n_bufs == t->cap_bufs) {
        int cap = t->cap_bufs ? 2 * t->cap_bufs : 256;
        void **nb = realloc(t->bufs, (size_t)cap * sizeof *nb);
        if (!nb) { t->st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "make-tiny: out of memory"); return NULL; }
        t->bufs = nb;
        t->cap_bufs = cap;
    }
    void *p = calloc(1, bytes ? bytes : 1);
    if (!p) { t->st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "make-tiny: out of memory"); return NULL; }
    t->bufs[t->n_bufs++] = p;
    return p;
}

static float *randn(tiny *t, size_t n, float mean, float std) {
    float *x = track(t, n * sizeof *x);
    if (x) for (size_t i = 0; i < n; i++) x[i] = mean + std * next_normal(t);
    return x;
}

/* ---- names: generated in the native scheme, rewritten for the HF schemes ---- */
static const char *const hf_internal[][2] = {
    /* native -> HF in-memory names (the reverse of model/names.c), most specific first */
    {".attn.indexer.compressor.", ".self_attn.compressor.indexer."},
    {".attn.indexer.weights_proj.", ".self_attn.compressor.indexer.scorer.weights_proj."},
    {".attn.indexer.wq_b.", ".self_attn.compressor.indexer.q_b_proj."},
    {".attn.", ".self_attn."},
    {".ffn.", ".mlp."},
    {".attn_norm.", ".input_layernorm."},
    {".ffn_norm.", ".post_attention_layernorm."},
    {".hc_attn_", ".attn_hc."},
    {".hc_ffn_", ".ffn_hc."},
    {".attn_sink", ".sinks"},
    {".wq_a.", ".q_a_proj."},
    {".wq_b.", ".q_b_proj."},
    {".wo_a.", ".o_a_proj."},
    {".wo_b.", ".o_b_proj."},
    {".q_norm.", ".q_a_norm."},
    {".wkv.", ".kv_proj."},
    {".wgate.", ".gate_proj."},
    {".ape", ".position_bias"},
    {".compressor.norm.", ".compressor.kv_norm."},
    {".indexer.norm.", ".indexer.kv_norm."},
    {".gate.bias", ".gate.e_score_correction_bias"},
    {".shared_experts.w1.", ".shared_experts.gate_proj."},
    {".shared_experts.w3.", ".shared_experts.up_proj."},
    {".shared_experts.w2.", ".shared_experts.down_proj."},
};


/* The name a tensor has in this scheme's files. */
static void scheme_name(const tiny *t, const char *native, char *out, size_t cap) {
    static const char *const top[][3] = {/* native, HF save_pretrained, HF in-memory */
                                         {"embed.weight", "model.embed_tokens.weight", "model.embed_tokens.weight"},
                                         {"head.weight", "head.weight", "lm_head.weight"},
                                         {"norm.weight", "model.norm.weight", "model.norm.weight"},
                                         {"hc_head_fn", "model.hc_head.hc_fn", "model.hc_head.hc_fn"},
                                         {"hc_head_base", "model.hc_head.hc_base", "model.hc_head.hc_base"},
                                         {"hc_head_scale", "model.hc_head.hc_scale", "model.hc_head.hc_scale"}};
    if (t->scheme == DSV4_TINY_NATIVE_NVFP4 || t->scheme == DSV4_TINY_NATIVE_MXFP4) {
        snprintf(out, cap, "%s", native);
        return;
    }
    int col = t->scheme == DSV4_TINY_HF ? 1 : 2;
    for (size_t i = 0; i < sizeof top / sizeof top[0]; i++)
        if (!strcmp(native, top[i][0])) {
            snprintf(out, cap, "%s", top[i][col]);
            return;
        }
    snprintf(out, cap, "model.%s", native);
    if (t->scheme == DSV4_TINY_HF) { /* save_pretrained keeps native names but calls kv_norm "norm" */
        dsv4_str_replace_all(out, cap, ".attn.kv_norm.", ".attn.norm.");
        return;
    }
    for (size_t i = 0; i < sizeof hf_internal / sizeof hf_internal[0]; i++)
        dsv4_str_replace_all(out, cap, hf_internal[i][0], hf_internal[i][1]);
}

static void add(tiny *t, const char *native, dsv4_dtype dt, int ndim, const int64_t *shape, const void *data,
                size_t nbytes) {
    if (t->st != DSV4_OK) return;
    char name[320];
    scheme_name(t, native, name, sizeof name);
    t->st = dsv4_st_writer_add(t->w, name, dt, ndim, shape, data, nbytes);
}

static int hf_scheme(const tiny *t) { return t->scheme == DSV4_TINY_HF || t->scheme == DSV4_TINY_HF_STACKED; }

/* A float tensor stored as F32 (fp32 params, HF schemes) or BF16 (values rounded to bf16 first,
 * so the file holds exactly the generated values). */
static void add_float(tiny *t, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape, float *x) {
    if (!x) return;
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    if (dt == DSV4_DT_BF16) {
        uint16_t *h = track(t, n * 2);
        if (!h) return;
        for (size_t i = 0; i < n; i++) h[i] = dsv4_bf16_encode(x[i]);
        add(t, name, dt, ndim, shape, h, n * 2);
    } else {
        add(t, name, DSV4_DT_F32, ndim, shape, x, n * 4);
    }
}

/* Norm weights: bf16 in DeepSeek's checkpoints, fp32 in HF saves. */
static void add_norm(tiny *t, const char *name, int64_t n) {
    float *x = randn(t, (size_t)n, 1.0f, 0.1f); /* bf16 values in every scheme, so all hold the same */
    if (x) for (int64_t i = 0; i < n; i++) x[i] = dsv4_bf16_round(x[i]);
    add_float(t, name, hf_scheme(t) ? DSV4_DT_F32 : DSV4_DT_BF16, 1, (int64_t[]){n}, x);
}

typedef enum { LIN_EXPERT, LIN_FP8, LIN_BF16 } lin_kind;

/* Replaces x [rows, cols] by its NVFP4 round trip: values an NVFP4 checkpoint can hold. */
static void nvfp4_exact(tiny *t, float *x, int64_t rows, int64_t cols, const char *what) {
    size_t n = (size_t)(rows * cols);
    uint8_t *q = malloc(n / 2), *s = malloc(n / 16);
    if (!q || !s) {
        t->st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "make-tiny: out of memory");
    } else {
        float g = dsv4_nvfp4_global_scale(x, n);
        t->st = dsv4_nvfp4_quantize(x, rows, cols, g, q, s, what);
        if (t->st == DSV4_OK) dsv4_nvfp4_dequantize(q, s, g, rows, cols, x);
    }
    free(q);
    free(s);
}

/* A linear [rows, cols] in the scheme's format for its kind. HF schemes store the exact
 * dequantized values of the native-NVFP4 scheme's format as F32 (BF16 kinds as BF16). */
static void add_linear(tiny *t, const char *module, int64_t rows, int64_t cols, lin_kind kind) {
    if (t->st != DSV4_OK) return;
    char name[300];
    size_t n = (size_t)(rows * cols);
    int64_t shape[2] = {rows, cols};
    float *x = randn(t, n, 0.0f, 1.0f / sqrtf((float)cols));
    if (!x) return;
    snprintf(name, sizeof name, "%s.weight", module);
    if (kind == LIN_BF16) {
        for (size_t i = 0; i < n; i++) x[i] = dsv4_bf16_round(x[i]);
        add_float(t, name, DSV4_DT_BF16, 2, shape, x);
        return;
    }
    if (kind == LIN_EXPERT && t->scheme == DSV4_TINY_NATIVE_MXFP4) {
        /* DeepSeek's experts: e2m1 codes with one power-of-two scale per 32 inputs */
        uint8_t *q = track(t, n / 2), *s = track(t, n / 32);
        if (!q || !s) return;
        for (size_t i = 0; i < n / 2; i++) q[i] = (uint8_t)next_u64(t);
        int e0 = (int)lrintf(log2f(1.0f / sqrtf((float)cols) / 3.0f)); /* typical |w| ~ 3 * scale */
        for (size_t i = 0; i < n / 32; i++) s[i] = (uint8_t)(127 + e0 - 1 + (int)(next_u64(t) % 3));
        add(t, name, DSV4_DT_I8, 2, (int64_t[]){rows, cols / 2}, q, n / 2);
        snprintf(name, sizeof name, "%s.scale", module);
        add(t, name, DSV4_DT_F8_E8M0, 2, (int64_t[]){rows, cols / 32}, s, n / 32);
        return;
    }
    if (kind == LIN_EXPERT) {
        if (hf_scheme(t)) {
            nvfp4_exact(t, x, rows, cols, module);
            add_float(t, name, DSV4_DT_F32, 2, shape, x);
            return;
        }
        uint8_t *q = track(t, n / 2), *s = track(t, n / 16);
        float *g = track(t, sizeof(float)), *in = track(t, sizeof(float));
        if (!q || !s || !g || !in) return;
        *g = dsv4_nvfp4_global_scale(x, n);
        if (t->st == DSV4_OK) t->st = dsv4_nvfp4_quantize(x, rows, cols, *g, q, s, module);
        if (t->st != DSV4_OK) return;
        /* a calibrated activation scale as ModelOpt stores it: amax / (6 * 448) */
        *in = 4.0f / 2688.0f;
        add(t, name, DSV4_DT_U8, 2, (int64_t[]){rows, cols / 2}, q, n / 2);
        snprintf(name, sizeof name, "%s.weight_scale", module);
        add(t, name, DSV4_DT_F8_E4M3, 2, (int64_t[]){rows, cols / 16}, s, n / 16);
        snprintf(name, sizeof name, "%s.weight_scale_2", module);
        add(t, name, DSV4_DT_F32, 0, NULL, g, 4);
        snprintf(name, sizeof name, "%s.input_scale", module);
        add(t, name, DSV4_DT_F32, 0, NULL, in, 4);
        return;
    }
    /* FP8 block-128 with ue8m0 scales (DeepSeek's attention and shared-expert linears) */
    int64_t sr = (rows + 127) / 128, sc = (cols + 127) / 128;
    uint8_t *q = track(t, n), *s = track(t, (size_t)(sr * sc));
    if (!q || !s) return;
    t->st = dsv4_fp8_block128_quantize(x, rows, cols, q, s, module);
    if (t->st != DSV4_OK) return;
    if (hf_scheme(t)) {
        t->st = dsv4_fp8_block128_dequantize(q, rows, cols, s, DSV4_SCALE_UE8M0, x, module);
        add_float(t, name, DSV4_DT_F32, 2, shape, x);
        return;
    }
    add(t, name, DSV4_DT_F8_E4M3, 2, shape, q, n);
    snprintf(name, sizeof name, "%s.scale", module);
    add(t, name, DSV4_DT_F8_E8M0, 2, (int64_t[]){sr, sc}, s, (size_t)(sr * sc));
}

static void add_params(tiny *t, const char *name, int64_t n0, int64_t n1, float mean, float std) {
    int64_t shape[2] = {n0, n1};
    int ndim = n1 ? 2 : 1;
    add_float(t, name, DSV4_DT_F32, ndim, shape, randn(t, (size_t)(n0 * (n1 ? n1 : 1)), mean, std));
}

static void add_compressor(tiny *t, const char *pfx, int rate, int coff, int64_t width) {
    const int64_t D = t->cfg.hidden_size;
    char n[300];
    snprintf(n, sizeof n, "%s.wkv", pfx);
    add_linear(t, n, coff * width, D, LIN_BF16);
    snprintf(n, sizeof n, "%s.wgate", pfx);
    add_linear(t, n, coff * width, D, LIN_BF16);
    snprintf(n, sizeof n, "%s.ape", pfx);
    add_params(t, n, rate, coff * width, 0.0f, 0.5f);
    snprintf(n, sizeof n, "%s.norm.weight", pfx);
    add_norm(t, n, width);
}

/* HF in-memory layout: experts stacked as gate_up_proj [E, 2I, D] and down_proj [E, D, I]. */
static void add_stacked_experts(tiny *t, const char *pfx) {
    const int64_t E = t->cfg.n_routed_experts, I = t->cfg.moe_intermediate_size, D = t->cfg.hidden_size;
    float *gu = track(t, (size_t)(E * 2 * I * D) * 4), *down = track(t, (size_t)(E * D * I) * 4);
    if (!gu || !down) return;
    /* same draw order as the per-expert schemes (w1, w2, w3), so equal seeds give equal weights */
    for (int64_t e = 0; e < E && t->st == DSV4_OK; e++) {
        float *w1 = gu + (size_t)(e * 2 * I * D), *w3 = w1 + (size_t)(I * D), *w2 = down + (size_t)(e * D * I);
        /* the same arithmetic as randn() in add_linear */
        const float sd = 1.0f / sqrtf((float)D), si = 1.0f / sqrtf((float)I);
        for (int64_t i = 0; i < I * D; i++) w1[i] = 0.0f + sd * next_normal(t);
        nvfp4_exact(t, w1, I, D, pfx);
        for (int64_t i = 0; i < D * I; i++) w2[i] = 0.0f + si * next_normal(t);
        nvfp4_exact(t, w2, D, I, pfx);
        for (int64_t i = 0; i < I * D; i++) w3[i] = 0.0f + sd * next_normal(t);
        nvfp4_exact(t, w3, I, D, pfx);
    }
    char n[300];
    snprintf(n, sizeof n, "%s.ffn.experts.gate_up_proj", pfx);
    add_float(t, n, DSV4_DT_F32, 3, (int64_t[]){E, 2 * I, D}, gu);
    snprintf(n, sizeof n, "%s.ffn.experts.down_proj", pfx);
    add_float(t, n, DSV4_DT_F32, 3, (int64_t[]){E, D, I}, down);
}

static void add_layer(tiny *t, const char *pfx, dsv4_attn_type at, dsv4_mlp_type mt, int is_mtp) {
    const dsv4_config *c = &t->cfg;
    const int64_t D = c->hidden_size, H = c->num_attention_heads, Dh = c->head_dim, hc = c->hc_mult;
    const int64_t E = c->n_routed_experts, I = c->moe_intermediate_size, g = c->o_groups;
    char n[300];
#define NAME(...) (snprintf(n, sizeof n, __VA_ARGS__), n)
    add_norm(t, NAME("%s.attn_norm.weight", pfx), D);
    add_norm(t, NAME("%s.ffn_norm.weight", pfx), D);
    for (int site = 0; site < 2; site++) {
        const char *s = site ? "ffn" : "attn";
        add_params(t, NAME("%s.hc_%s_fn", pfx, s), (2 + hc) * hc, hc * D, 0.0f, 0.02f);
        add_params(t, NAME("%s.hc_%s_base", pfx, s), (2 + hc) * hc, 0, 0.0f, 0.5f);
        add_params(t, NAME("%s.hc_%s_scale", pfx, s), 3, 0, 0.5f, 0.1f);
    }
    add_linear(t, NAME("%s.attn.wq_a", pfx), c->q_lora_rank, D, LIN_FP8);
    add_norm(t, NAME("%s.attn.q_norm.weight", pfx), c->q_lora_rank);
    add_linear(t, NAME("%s.attn.wq_b", pfx), H * Dh, c->q_lora_rank, LIN_FP8);
    add_linear(t, NAME("%s.attn.wkv", pfx), Dh, D, LIN_FP8);
    add_norm(t, NAME("%s.attn.kv_norm.weight", pfx), Dh);
    add_linear(t, NAME("%s.attn.wo_a", pfx), g * c->o_lora_rank, H * Dh / g, LIN_FP8);
    add_linear(t, NAME("%s.attn.wo_b", pfx), D, g * c->o_lora_rank, LIN_FP8);
    add_params(t, NAME("%s.attn.attn_sink", pfx), H, 0, 0.0f, 1.0f);
    if (at != DSV4_ATTN_SLIDING) {
        int rate = at == DSV4_ATTN_CSA ? c->compress_rate_csa : c->compress_rate_hca;
        add_compressor(t, NAME("%s.attn.compressor", pfx), rate, at == DSV4_ATTN_CSA ? 2 : 1, Dh);
    }
    if (at == DSV4_ATTN_CSA) {
        add_linear(t, NAME("%s.attn.indexer.wq_b", pfx), (int64_t)c->index_n_heads * c->index_head_dim,
                   c->q_lora_rank, LIN_FP8);
        add_linear(t, NAME("%s.attn.indexer.weights_proj", pfx), c->index_n_heads, D, LIN_BF16);
        add_compressor(t, NAME("%s.attn.indexer.compressor", pfx), c->compress_rate_csa, 2, c->index_head_dim);
    }
    add_linear(t, NAME("%s.ffn.gate", pfx), E, D, LIN_BF16);
    if (mt == DSV4_MLP_HASH_MOE) {
        /* drawn with replacement, so a token may route to one expert twice, as the table allows */
        const int64_t V = c->vocab_size, k = c->num_experts_per_tok;
        int hf = hf_scheme(t);
        void *ids = track(t, (size_t)(V * k) * (hf ? 8 : 4));
        if (ids)
            for (int64_t i = 0; i < V * k; i++) {
                int64_t e = (int64_t)(next_u64(t) % (uint64_t)E);
                if (hf) ((int64_t *)ids)[i] = e; else ((int32_t *)ids)[i] = (int32_t)e;
            }
        add(t, NAME("%s.ffn.gate.tid2eid", pfx), hf ? DSV4_DT_I64 : DSV4_DT_I32, 2, (int64_t[]){V, k}, ids,
            (size_t)(V * k) * (hf ? 8 : 4));
    } else {
        add_params(t, NAME("%s.ffn.gate.bias", pfx), E, 0, 0.0f, 0.1f);
    }
    if (t->scheme == DSV4_TINY_HF_STACKED) {
        add_stacked_experts(t, pfx);
    } else {
        for (int64_t e = 0; e < E; e++) {
            add_linear(t, NAME("%s.ffn.experts.%lld.w1", pfx, (long long)e), I, D, LIN_EXPERT);
            add_linear(t, NAME("%s.ffn.experts.%lld.w2", pfx, (long long)e), D, I, LIN_EXPERT);
            add_linear(t, NAME("%s.ffn.experts.%lld.w3", pfx, (long long)e), I, D, LIN_EXPERT);
        }
    }
    add_linear(t, NAME("%s.ffn.shared_experts.w1", pfx), I, D, LIN_FP8);
    add_linear(t, NAME("%s.ffn.shared_experts.w2", pfx), D, I, LIN_FP8);
    add_linear(t, NAME("%s.ffn.shared_experts.w3", pfx), I, D, LIN_FP8);
    if (is_mtp) {
        add_linear(t, NAME("%s.e_proj", pfx), D, D, LIN_FP8);
        add_linear(t, NAME("%s.h_proj", pfx), D, D, LIN_FP8);
        add_norm(t, NAME("%s.enorm.weight", pfx), D);
        add_norm(t, NAME("%s.hnorm.weight", pfx), D);
        add_norm(t, NAME("%s.norm.weight", pfx), D);
        add_params(t, NAME("%s.hc_head_fn", pfx), hc, hc * D, 0.0f, 0.02f);
        add_params(t, NAME("%s.hc_head_base", pfx), hc, 0, 0.0f, 0.5f);
        add_params(t, NAME("%s.hc_head_scale", pfx), 1, 0, 0.5f, 0.1f);
    }
#undef NAME
}

/* The tiny model's shape: every layer type, small enough for CI (see ../shared/README.md). */
static void tiny_config(dsv4_config *c) {
    memset(c, 0, sizeof *c);
    c->vocab_size = 512;
    c->hidden_size = 256;
    c->num_hidden_layers = 4;
    c->num_attention_heads = 8;
    c->num_key_value_heads = 1;
    c->head_dim = 64;
    c->qk_rope_head_dim = 16;
    c->q_lora_rank = 64;
    c->o_groups = 2;
    c->o_lora_rank = 32;
    c->sliding_window = 16;
    c->max_position_embeddings = 4096;
    c->compress_rate_csa = 4;
    c->compress_rate_hca = 16;
    c->index_n_heads = 16; /* enough heads that ReLU scores rarely tie at 0 (top-k tie order is arbitrary in torch) */
    c->index_head_dim = 32;
    c->index_topk = 8;
    c->hc_mult = 4;
    c->hc_sinkhorn_iters = 20;
    c->hc_eps = 1e-6;
    c->n_routed_experts = 16;
    c->num_experts_per_tok = 4;
    c->n_shared_experts = 1;
    c->moe_intermediate_size = 128;
    c->scoring_func = DSV4_SCORE_SQRTSOFTPLUS;
    c->routed_scaling_factor = 1.5;
    c->swiglu_limit = 10.0;
    c->norm_topk_prob = 1;
    c->num_hash_layers = 1;
    c->rms_norm_eps = 1e-6;
    c->rope_theta = 10000.0;
    c->compress_rope_theta = 160000.0;
    c->yarn = 1;
    c->yarn_factor = 16.0;
    c->yarn_beta_fast = 32.0;
    c->yarn_beta_slow = 1.0;
    c->yarn_original_max_position = 65536;
    c->num_nextn_predict_layers = 1;
    c->bos_token_id = 0;
    c->eos_token_id = 1;
    const dsv4_attn_type plan[4] = {DSV4_ATTN_SLIDING, DSV4_ATTN_CSA, DSV4_ATTN_HCA, DSV4_ATTN_CSA};
    for (int l = 0; l < 4; l++) {
        c->layer_types[l] = plan[l];
        c->mlp_layer_types[l] = l < c->num_hash_layers ? DSV4_MLP_HASH_MOE : DSV4_MLP_MOE;
    }
}

/* What the scheme's checkpoints say about their quantization. */
static void tiny_quant(dsv4_config *c, dsv4_tiny_scheme scheme) {
    dsv4_config_free(c); /* drops an exclude list a loaded config may carry */
    memset(&c->quant, 0, sizeof c->quant);
    if (scheme == DSV4_TINY_NATIVE_NVFP4) {
        c->quant.method = DSV4_QUANT_MIXED;
        c->quant.group_size = 16;
        snprintf(c->quant.moe_algo, sizeof c->quant.moe_algo, "NVFP4");
        c->quant.fp8_block[0] = c->quant.fp8_block[1] = 128;
        c->quant.scale_ue8m0 = 1;
    } else if (scheme == DSV4_TINY_NATIVE_MXFP4) {
        c->quant.method = DSV4_QUANT_FP8_BLOCK;
        c->quant.fp8_block[0] = c->quant.fp8_block[1] = 128;
        c->quant.scale_ue8m0 = 1;
        snprintf(c->quant.expert_dtype, sizeof c->quant.expert_dtype, "fp4");
    }
}

/* The formats need: NVFP4 blocks of 16 and MXFP4 blocks of 32 along every expert input. */
static dsv4_status check_tiny_shape(const dsv4_config *c, dsv4_tiny_scheme scheme, const char *path) {
    /* a test model: every tensor must stay far from size_t/int64 overflow and fit in memory */
    const double D = c->hidden_size, V = c->vocab_size, I = c->moe_intermediate_size, E = c->n_routed_experts;
    const double H = c->num_attention_heads, Dh = c->head_dim, hc = c->hc_mult;
    const double biggest = fmax(fmax(V * D, E * 2 * I * D), fmax(H * Dh * fmax(c->q_lora_rank, D), (2 + hc) * hc * hc * D));
    if (biggest > (double)(1u << 28))
        return dsv4_fail(DSV4_ERR_CONFIG, "%s: make-tiny makes test models; a tensor of %.0f values is too large", path,
                         biggest);
    int block = scheme == DSV4_TINY_NATIVE_MXFP4 ? 32 : 16;
    if (c->hidden_size % block || c->moe_intermediate_size % block)
        return dsv4_fail(DSV4_ERR_CONFIG, "%s: make-tiny needs hidden_size (%d) and moe_intermediate_size (%d) "
                         "divisible by %d for this scheme's expert format", path, c->hidden_size,
                         c->moe_intermediate_size, block);
    return DSV4_OK;
}

dsv4_status dsv4_make_tiny(const char *dir, dsv4_tiny_scheme scheme, uint64_t seed) {
    return dsv4_make_tiny_config(dir, scheme, seed, NULL);
}

dsv4_status dsv4_make_tiny_config(const char *dir, dsv4_tiny_scheme scheme, uint64_t seed, const char *config_path) {
    if (!dir || scheme < DSV4_TINY_NATIVE_NVFP4 || scheme > DSV4_TINY_HF_STACKED)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "make-tiny: bad directory or scheme");
    dsv4_config cfg;
    if (config_path) {
        size_t len = 0;
        char *text = NULL;
        DSV4_TRY(dsv4_read_text_file(config_path, (size_t)64 << 20, 0, &text, &len));
        dsv4_status st = dsv4_config_parse(text, len, config_path, &cfg);
        free(text);
        DSV4_TRY(st);
    } else {
        tiny_config(&cfg);
    }
    tiny_quant(&cfg, scheme);
    DSV4_TRY(check_tiny_shape(&cfg, scheme, config_path ? config_path : "built-in tiny config"));
    DSV4_TRY(dsv4_ensure_dir(dir));
    tiny t = {.scheme = scheme, .cfg = cfg, .rng = seed * 0x2545F4914F6CDD1Dull + 1, .st = DSV4_OK};
    t.w = dsv4_st_writer_new();
    if (!t.w) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "make-tiny: out of memory");
    const dsv4_config *c = &t.cfg;
    const int64_t V = c->vocab_size, D = c->hidden_size, hc = c->hc_mult;
    {
        dsv4_dtype big = hf_scheme(&t) ? DSV4_DT_F32 : DSV4_DT_BF16;
        float *e = randn(&t, (size_t)(V * D), 0.0f, 1.0f), *h = randn(&t, (size_t)(V * D), 0.0f, 1.0f / 16.0f);
        if (e && h)
            for (int64_t i = 0; i < V * D; i++) { e[i] = dsv4_bf16_round(e[i]); h[i] = dsv4_bf16_round(h[i]); }
        add_float(&t, "embed.weight", big, 2, (int64_t[]){V, D}, e);
        add_float(&t, "head.weight", big, 2, (int64_t[]){V, D}, h);
    }
    add_norm(&t, "norm.weight", D);
    add_params(&t, "hc_head_fn", hc, hc * D, 0.0f, 0.02f);
    add_params(&t, "hc_head_base", hc, 0, 0.0f, 0.5f);
    add_params(&t, "hc_head_scale", 1, 0, 0.5f, 0.1f);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        char pfx[32];
        snprintf(pfx, sizeof pfx, "layers.%d", l);
        add_layer(&t, pfx, c->layer_types[l], c->mlp_layer_types[l], 0);
    }
    if (!hf_scheme(&t) && c->num_nextn_predict_layers > 0) /* HF checkpoints drop MTP */
        add_layer(&t, "mtp.0", DSV4_ATTN_SLIDING, DSV4_MLP_MOE, 1);
    if (t.st == DSV4_OK) {
        char meta[32];
        snprintf(meta, sizeof meta, "%llu", (unsigned long long)seed);
        t.st = dsv4_st_writer_set_metadata(t.w, "format", "pt");
        if (t.st == DSV4_OK) t.st = dsv4_st_writer_set_metadata(t.w, "dsv4_tiny_seed", meta);
    }
    /* native checkpoints ship sharded with an index, as the real ones do */
    if (t.st == DSV4_OK)
        t.st = hf_scheme(&t) ? dsv4_st_writer_write_sharded(t.w, dir, (size_t)1 << 40)
                             : dsv4_st_writer_write_sharded(t.w, dir, (size_t)4 << 20);
    if (t.st == DSV4_OK) t.st = dsv4_config_write(c, dir);
    dsv4_st_writer_free(t.w);
    for (int i = 0; i < t.n_bufs; i++) free(t.bufs[i]);
    free(t.bufs);
    return t.st;
}
