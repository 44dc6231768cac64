/* config.json (+ hf_quant_config.json) -> dsv4_config. Keys and meanings:
 * ../shared/spec/dsv4-reference.md §1. Both the HF forms (layer_types, mlp_layer_types,
 * rope_parameters {main, compress} or flat, compress_rates, partial_rotary_factor) and the
 * legacy ones shipped in real checkpoints (compress_ratios, num_hash_layers, rope_scaling,
 * qk_rope_head_dim, compress_rate_csa/_hca) are accepted; where both forms of one value are
 * present they must agree (else DSV4_ERR_CONFIG naming both keys). Unknown keys are ignored;
 * JSON null counts as absent.
 *
 * Required (they fix tensor shapes): vocab_size, hidden_size, num_hidden_layers,
 * num_attention_heads, head_dim, q_lora_rank, o_groups, o_lora_rank, n_routed_experts (alias
 * num_local_experts), num_experts_per_tok, moe_intermediate_size (alias intermediate_size),
 * and the attention schedule (layer_types or compress_ratios). Everything else defaults to the
 * V4-Flash value (HF's class defaults), except: no rope_scaling / compress rope block means
 * no YaRN (as in HF; the yarn_* fields then hold Flash's numbers, unused), and
 * num_hash_layers defaults to min(3, num_hidden_layers).
 *
 * compress_ratios: 0 = sliding, the CSA rate (4) = CSA, any larger value = HCA at that rate
 * (all HCA entries must share one rate); entries past num_hidden_layers (the MTP block) are
 * checked but not interpreted; fewer entries than layers is an error. layer_types and
 * mlp_layer_types are truncated the same way. hash_moe layers must be a leading run.
 * Validation also requires compress_rate_hca > compress_rate_csa (the legacy list tells the
 * two apart only by rate), num_key_value_heads == 1 and sizes <= 2^24.
 *
 * Status codes: invalid JSON or a non-object top level -> DSV4_ERR_JSON; a missing required
 * key, wrong type, out-of-range or inconsistent value -> DSV4_ERR_CONFIG; a well-formed value
 * naming a feature this engine does not implement (rope type other than default/yarn, a
 * YaRN attention_factor other than 1, quant_method other than fp8/modelopt, quant_algo other
 * than NVFP4/MIXED_PRECISION, FP8 fmt other than e4m3) -> DSV4_ERR_UNSUPPORTED.
 * Messages read "<label>: <key>: <what is wrong>".
 *
 * Quantization: config.json quantization_config in DeepSeek's form {quant_method: fp8, fmt,
 * scale_fmt, weight_block_size} -> FP8_BLOCK; in ModelOpt's form {quant_method: modelopt,
 * quant_algo: NVFP4 | MIXED_PRECISION, moe_quant_algo, group_size, ignore | exclude_modules}
 * -> NVFP4 / MIXED. MIXED keeps FP8 block-128 with ue8m0 scales for non-expert weights unless
 * weight_block_size / scale_fmt say otherwise. hf_quant_config.json {quantization: {quant_algo,
 * group_size, exclude_modules, moe_quant_algo?, quantized_layers?}} replaces that. */
#ifndef DSV4_MODEL_CONFIG_H
#define DSV4_MODEL_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "dsv4.h"

#define DSV4_MAX_LAYERS 256

typedef enum { DSV4_ATTN_SLIDING = 0, DSV4_ATTN_CSA, DSV4_ATTN_HCA } dsv4_attn_type;
typedef enum { DSV4_MLP_MOE = 0, DSV4_MLP_HASH_MOE } dsv4_mlp_type;
typedef enum { DSV4_SCORE_SQRTSOFTPLUS = 0, DSV4_SCORE_SIGMOID, DSV4_SCORE_SOFTMAX } dsv4_score_func;

/* What the checkpoint says about quantized weights. */
typedef enum {
    DSV4_QUANT_NONE = 0,  /* plain bf16/f32 */
    DSV4_QUANT_FP8_BLOCK, /* DeepSeek: quant_method fp8, weight_block_size [128,128] */
    DSV4_QUANT_NVFP4,     /* ModelOpt quant_algo NVFP4 for everything not excluded */
    DSV4_QUANT_MIXED      /* ModelOpt MIXED_PRECISION: moe_quant_algo for experts, FP8 elsewhere */
} dsv4_quant_method;

typedef struct dsv4_quant_config {
    dsv4_quant_method method;
    int group_size;           /* NVFP4: 16 */
    int fp8_block[2];         /* FP8 block: 128,128 */
    int scale_ue8m0;          /* FP8 scale_fmt ue8m0 (else fp32) */
    char moe_algo[32];        /* e.g. "NVFP4", "" */
    char expert_dtype[16];    /* config "expert_dtype": "fp4", "fp8" or "" */
    int n_exclude;
    char **exclude;           /* fnmatch patterns of modules left unquantized */
} dsv4_quant_config;

typedef struct dsv4_config {
    /* sizes */
    int vocab_size, hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads;
    int head_dim, qk_rope_head_dim, q_lora_rank, o_groups, o_lora_rank, sliding_window;
    int64_t max_position_embeddings;
    /* compression */
    int compress_rate_csa, compress_rate_hca; /* 4, 128 */
    int index_n_heads, index_head_dim, index_topk;
    /* mHC */
    int hc_mult, hc_sinkhorn_iters;
    double hc_eps;
    /* MoE */
    int n_routed_experts, num_experts_per_tok, n_shared_experts, moe_intermediate_size;
    dsv4_score_func scoring_func;
    double routed_scaling_factor, swiglu_limit;
    int norm_topk_prob;
    int num_hash_layers; /* count of leading hash_moe layers (derived if mlp_layer_types given) */
    /* norms, rope */
    double rms_norm_eps, rope_theta, compress_rope_theta;
    int yarn;                         /* YaRN on the compress rope */
    double yarn_factor, yarn_beta_fast, yarn_beta_slow;
    int64_t yarn_original_max_position;
    /* misc */
    int num_nextn_predict_layers, tie_word_embeddings, bos_token_id, eos_token_id;
    /* per layer (num_hidden_layers entries); the MTP block is always sliding + moe */
    dsv4_attn_type layer_types[DSV4_MAX_LAYERS];
    dsv4_mlp_type mlp_layer_types[DSV4_MAX_LAYERS];
    dsv4_quant_config quant;
} dsv4_config;

/* Parses config JSON text. `label` (a path) prefixes messages. On failure *out is left freed. */
dsv4_status dsv4_config_parse(const char *json, size_t len, const char *label, dsv4_config *out);
/* Parses a ModelOpt hf_quant_config.json into cfg->quant (replacing what config.json said,
 * except expert_dtype). On failure cfg is unchanged. */
dsv4_status dsv4_config_parse_hf_quant(const char *json, size_t len, const char *label,
                                       dsv4_config *cfg);
/* dir/config.json and, if present, dir/hf_quant_config.json. A missing config.json is
 * DSV4_ERR_MISSING, an unreadable file DSV4_ERR_IO, both naming the path. */
dsv4_status dsv4_config_load(const char *dir, dsv4_config *out);
void dsv4_config_free(dsv4_config *cfg); /* frees quant.exclude; safe on a zeroed struct */
/* Checks ranges and cross-key consistency (H % o_groups, rope <= head_dim, ...). Called by parse. */
dsv4_status dsv4_config_validate(const dsv4_config *cfg, const char *label);
/* The quantization part of dsv4_config_validate (group_size 16 for NVFP4, FP8 block > 0, ...). */
dsv4_status dsv4_config_validate_quant(const dsv4_quant_config *q, const char *label);
/* Writes the config as a real checkpoint's config.json: legacy compress_ratios (with the
 * trailing MTP entry), num_hash_layers, rope_scaling, and quantization_config when
 * cfg->quant says so. Returns a malloc'ed string (NULL on OOM). */
char *dsv4_config_to_json(const dsv4_config *cfg);
/* dsv4_config_to_json written to dir/config.json. */
dsv4_status dsv4_config_write(const dsv4_config *cfg, const char *dir);
/* 1 if `module` (e.g. "layers.0.attn.wq_a", no ".weight") matches one of quant.exclude
 * (fnmatch, no flags). A module is also tried with a "model." prefix added (or removed), since
 * exclude lists are written against HF names as often as native ones. */
int dsv4_config_excluded(const dsv4_config *cfg, const char *module);
/* Internal: "<label>: <key>: <message>" as the last error, returning st. */
dsv4_status dsv4_config_fail(dsv4_status st, const char *label, const char *key, const char *fmt, ...)
    DSV4_PRINTF(4, 5);
/* The rate of layer l: 0 sliding, compress_rate_csa or compress_rate_hca. Layers outside
 * [0, num_hidden_layers) (e.g. the MTP block) give 0. */
int dsv4_config_compress_rate(const dsv4_config *cfg, int layer);

#endif
