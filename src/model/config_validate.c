/* Range and cross-key checks of a dsv4_config, and the small per-layer / per-module queries. */
#include "model/config.h"

#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "base/status.h"

dsv4_status dsv4_config_fail(dsv4_status st, const char *label, const char *key, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return dsv4_fail(st, "%s: %s: %s", label, key, msg);
}

/* Fails with "<label>: <key>: <message>" unless `cond`. */
#define NEED(cond, key, ...) \
    do { if (!(cond)) return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, __VA_ARGS__); } while (0)

dsv4_status dsv4_config_validate_quant(const dsv4_quant_config *q, const char *label) {
    if (!q) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_config_validate_quant: q is NULL");
    if (!label) label = "config";
    NEED((unsigned)q->method <= DSV4_QUANT_MIXED, "quantization_config", "invalid method %d",
         (int)q->method);
    /* NVFP4 is defined with one e4m3 scale per 16 elements. */
    if (q->method == DSV4_QUANT_NVFP4 || q->method == DSV4_QUANT_MIXED)
        NEED(q->group_size == 16, "quantization_config.group_size", "NVFP4 needs 16, got %d",
             q->group_size);
    if (q->method == DSV4_QUANT_FP8_BLOCK || q->method == DSV4_QUANT_MIXED)
        NEED(q->fp8_block[0] >= 1 && q->fp8_block[1] >= 1, "quantization_config.weight_block_size",
             "must be positive, got [%d, %d]", q->fp8_block[0], q->fp8_block[1]);
    NEED(q->n_exclude >= 0 && (q->n_exclude == 0 || q->exclude), "quantization_config.ignore",
         "inconsistent pattern list");
    NEED(memchr(q->moe_algo, 0, sizeof q->moe_algo) && memchr(q->expert_dtype, 0, sizeof q->expert_dtype),
         "quantization_config", "unterminated name");
    return DSV4_OK;
}

dsv4_status dsv4_config_validate(const dsv4_config *c, const char *label) {
    if (!c) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_config_validate: cfg is NULL");
    if (!label) label = "config";
    int n = c->num_hidden_layers, r = c->qk_rope_head_dim;
    NEED(c->vocab_size >= 1, "vocab_size", "must be positive, got %d", c->vocab_size);
    NEED(c->hidden_size >= 1, "hidden_size", "must be positive, got %d", c->hidden_size);
    NEED(n >= 1 && n <= DSV4_MAX_LAYERS, "num_hidden_layers", "must be in [1, %d], got %d",
         DSV4_MAX_LAYERS, n);
    NEED(c->num_attention_heads >= 1, "num_attention_heads", "must be positive, got %d",
         c->num_attention_heads);
    NEED(c->num_key_value_heads == 1, "num_key_value_heads",
         "must be 1 (one latent shared as K and V), got %d", c->num_key_value_heads);
    NEED(c->head_dim >= 1, "head_dim", "must be positive, got %d", c->head_dim);
    NEED(r >= 2 && r <= c->head_dim && r % 2 == 0, "qk_rope_head_dim",
         "must be even and in [2, head_dim %d], got %d", c->head_dim, r);
    NEED(c->q_lora_rank >= 1, "q_lora_rank", "must be positive, got %d", c->q_lora_rank);
    NEED(c->o_groups >= 1 && c->num_attention_heads % c->o_groups == 0, "o_groups",
         "%d does not divide num_attention_heads %d", c->o_groups, c->num_attention_heads);
    NEED(c->o_lora_rank >= 1, "o_lora_rank", "must be positive, got %d", c->o_lora_rank);
    NEED(c->sliding_window >= 1, "sliding_window", "must be positive, got %d", c->sliding_window);
    NEED(c->max_position_embeddings >= 1, "max_position_embeddings", "must be positive");
    NEED(c->compress_rate_csa >= 1, "compress_rate_csa", "must be positive, got %d",
         c->compress_rate_csa);
    /* The legacy compress_ratios list tells CSA from HCA only by the rate. */
    NEED(c->compress_rate_hca > c->compress_rate_csa, "compress_rate_hca",
         "%d must exceed the CSA rate %d", c->compress_rate_hca, c->compress_rate_csa);
    int n_csa = 0;
    for (int l = 0; l < n && l < DSV4_MAX_LAYERS; l++) {
        NEED((unsigned)c->layer_types[l] <= DSV4_ATTN_HCA, "layer_types", "entry %d invalid", l);
        NEED((unsigned)c->mlp_layer_types[l] <= DSV4_MLP_HASH_MOE, "mlp_layer_types",
             "entry %d invalid", l);
        NEED((c->mlp_layer_types[l] == DSV4_MLP_HASH_MOE) == (l < c->num_hash_layers),
             "mlp_layer_types", "entry %d disagrees with num_hash_layers %d", l, c->num_hash_layers);
        n_csa += c->layer_types[l] == DSV4_ATTN_CSA;
    }
    if (n_csa > 0) {
        NEED(c->index_topk >= 1, "index_topk", "must be positive with CSA layers, got %d", c->index_topk);
        NEED(c->index_n_heads >= 1, "index_n_heads", "must be positive, got %d", c->index_n_heads);
        NEED(c->index_head_dim >= r, "index_head_dim", "%d is below the rope dim %d",
             c->index_head_dim, r);
    }
    NEED(c->hc_mult >= 1, "hc_mult", "must be at least 1, got %d", c->hc_mult);
    NEED(c->hc_sinkhorn_iters >= 1, "hc_sinkhorn_iters", "must be at least 1, got %d",
         c->hc_sinkhorn_iters);
    NEED(c->hc_eps > 0 && isfinite(c->hc_eps), "hc_eps", "must be positive, got %g", c->hc_eps);
    NEED(c->n_routed_experts >= 1, "n_routed_experts", "must be positive, got %d", c->n_routed_experts);
    NEED(c->num_experts_per_tok >= 1 && c->num_experts_per_tok <= c->n_routed_experts,
         "num_experts_per_tok", "%d is not in [1, n_routed_experts %d]", c->num_experts_per_tok,
         c->n_routed_experts);
    NEED(c->n_shared_experts >= 0, "n_shared_experts", "must be >= 0, got %d", c->n_shared_experts);
    NEED(c->moe_intermediate_size >= 1, "moe_intermediate_size", "must be positive, got %d",
         c->moe_intermediate_size);
    NEED((unsigned)c->scoring_func <= DSV4_SCORE_SOFTMAX, "scoring_func", "invalid value %d",
         (int)c->scoring_func);
    NEED(c->routed_scaling_factor > 0 && isfinite(c->routed_scaling_factor), "routed_scaling_factor",
         "must be positive, got %g", c->routed_scaling_factor);
    NEED(c->swiglu_limit > 0 && isfinite(c->swiglu_limit), "swiglu_limit",
         "must be positive, got %g", c->swiglu_limit);
    NEED(c->num_hash_layers >= 0 && c->num_hash_layers <= n, "num_hash_layers",
         "%d is not in [0, num_hidden_layers %d]", c->num_hash_layers, n);
    NEED(c->rms_norm_eps > 0 && isfinite(c->rms_norm_eps), "rms_norm_eps",
         "must be positive, got %g", c->rms_norm_eps);
    NEED(c->rope_theta > 1 && isfinite(c->rope_theta), "rope_theta", "must exceed 1, got %g",
         c->rope_theta);
    NEED(c->compress_rope_theta > 1 && isfinite(c->compress_rope_theta), "compress_rope_theta",
         "must exceed 1, got %g", c->compress_rope_theta);
    if (c->yarn) {
        NEED(c->yarn_factor >= 1 && isfinite(c->yarn_factor), "rope_scaling.factor",
             "must be >= 1, got %g", c->yarn_factor);
        /* beta_slow 0 would put log(0) in YaRN's correction range. */
        NEED(c->yarn_beta_slow > 0 && c->yarn_beta_fast >= c->yarn_beta_slow &&
                 isfinite(c->yarn_beta_fast), "rope_scaling.beta_fast",
             "need beta_fast %g >= beta_slow %g > 0", c->yarn_beta_fast, c->yarn_beta_slow);
        NEED(c->yarn_original_max_position >= 1, "rope_scaling.original_max_position_embeddings",
             "must be positive");
    }
    NEED(c->num_nextn_predict_layers >= 0, "num_nextn_predict_layers", "must be >= 0");
    NEED(c->bos_token_id >= 0 && c->bos_token_id < c->vocab_size, "bos_token_id",
         "%d is outside the vocabulary (%d)", c->bos_token_id, c->vocab_size);
    NEED(c->eos_token_id >= 0 && c->eos_token_id < c->vocab_size, "eos_token_id",
         "%d is outside the vocabulary (%d)", c->eos_token_id, c->vocab_size);
    return dsv4_config_validate_quant(&c->quant, label);
}


static int pattern_matches(const char *pat, const char *module) {
    if (fnmatch(pat, module, 0) == 0) return 1;
    /* Exclude lists are written against either native or HF ("model."-prefixed) names. */
    if (strncmp(module, "model.", 6) == 0) return fnmatch(pat, module + 6, 0) == 0;
    char buf[512];
    if ((size_t)snprintf(buf, sizeof buf, "model.%s", module) >= sizeof buf) return 0;
    return fnmatch(pat, buf, 0) == 0;
}

int dsv4_config_excluded(const dsv4_config *cfg, const char *module) {
    if (!cfg || !module) return 0;
    for (int i = 0; i < cfg->quant.n_exclude; i++)
        if (cfg->quant.exclude[i] && pattern_matches(cfg->quant.exclude[i], module)) return 1;
    return 0;
}

int dsv4_config_compress_rate(const dsv4_config *cfg, int layer) {
    if (!cfg || layer < 0 || layer >= cfg->num_hidden_layers || layer >= DSV4_MAX_LAYERS) return 0;
    switch (cfg->layer_types[layer]) {
    case DSV4_ATTN_CSA: return cfg->compress_rate_csa;
    case DSV4_ATTN_HCA: return cfg->compress_rate_hca;
    default: return 0;
    }
}
