/* dsv4_config -> config.json text in the form DeepSeek ships it (legacy keys), so that tools
 * which only know the released checkpoints can read what we write. */
#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/files.h"
#include "base/status.h"

/* cJSON prints doubles with 15 significant digits whenever they compare "close enough",
 * which loses the last bits; print the shortest form that reads back exactly instead, and
 * always as a float ("10.0", not "10"): HF's strict config classes reject an int where a
 * float field is declared. */
static cJSON *exact_number(double v) {
    char buf[40];
    if (!isfinite(v)) return cJSON_CreateNull();
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, sizeof buf, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) break;
    }
    if (!strpbrk(buf, ".eEn")) strncat(buf, ".0", sizeof buf - strlen(buf) - 1);
    return cJSON_CreateRaw(buf);
}

/* Adds `it` to `obj` under `key`; a NULL item (allocation failure) clears *ok. */
static void put(cJSON *obj, const char *key, cJSON *it, int *ok) {
    if (!it || !cJSON_AddItemToObject(obj, key, it)) {
        cJSON_Delete(it);
        *ok = 0;
    }
}

static void put_int(cJSON *obj, const char *key, int64_t v, int *ok) {
    put(obj, key, cJSON_CreateNumber((double)v), ok);
}

static void put_num(cJSON *obj, const char *key, double v, int *ok) {
    put(obj, key, exact_number(v), ok);
}

static void put_str(cJSON *obj, const char *key, const char *v, int *ok) {
    put(obj, key, cJSON_CreateString(v), ok);
}

static void push(cJSON *arr, cJSON *it, int *ok) {
    if (!it || !cJSON_AddItemToArray(arr, it)) {
        cJSON_Delete(it);
        *ok = 0;
    }
}

static cJSON *quant_json(const dsv4_quant_config *q, int *ok) {
    cJSON *o = cJSON_CreateObject();
    if (!o) {
        *ok = 0;
        return NULL;
    }
    if (q->method == DSV4_QUANT_FP8_BLOCK) {
        /* Exactly DeepSeek's block. */
        put_str(o, "quant_method", "fp8", ok);
        put_str(o, "fmt", "e4m3", ok);
        put_str(o, "activation_scheme", "dynamic", ok);
    } else {
        put_str(o, "quant_method", "modelopt", ok);
        put_str(o, "quant_algo", q->method == DSV4_QUANT_NVFP4 ? "NVFP4" : "MIXED_PRECISION", ok);
        put_int(o, "group_size", q->group_size, ok);
        if (q->moe_algo[0]) put_str(o, "moe_quant_algo", q->moe_algo, ok);
    }
    /* NVFP4 alone has no FP8 part; the other two always state their scale format. */
    if (q->scale_ue8m0 || q->method != DSV4_QUANT_NVFP4)
        put_str(o, "scale_fmt", q->scale_ue8m0 ? "ue8m0" : "fp32", ok);
    if (q->fp8_block[0] > 0 || q->fp8_block[1] > 0) {
        cJSON *b = cJSON_CreateArray();
        if (b) {
            push(b, cJSON_CreateNumber(q->fp8_block[0]), ok);
            push(b, cJSON_CreateNumber(q->fp8_block[1]), ok);
        }
        put(o, "weight_block_size", b, ok);
    }
    if (q->n_exclude > 0) {
        cJSON *ig = cJSON_CreateArray();
        for (int i = 0; ig && i < q->n_exclude; i++) push(ig, cJSON_CreateString(q->exclude[i]), ok);
        put(o, "ignore", ig, ok);
    }
    return o;
}

char *dsv4_config_to_json(const dsv4_config *c) {
    static const char *const scoring[] = {"sqrtsoftplus", "sigmoid", "softmax"};
    if (!c || c->num_hidden_layers < 0 || c->num_hidden_layers > DSV4_MAX_LAYERS ||
        (unsigned)c->scoring_func > DSV4_SCORE_SOFTMAX)
        return NULL;
    int ok = 1;
    cJSON *o = cJSON_CreateObject(), *a;
    if (!o) return NULL;

    a = cJSON_CreateArray();
    if (a) push(a, cJSON_CreateString("DeepseekV4ForCausalLM"), &ok);
    put(o, "architectures", a, &ok);
    put_str(o, "model_type", "deepseek_v4", &ok);
    put_str(o, "torch_dtype", "bfloat16", &ok);
    put_int(o, "vocab_size", c->vocab_size, &ok);
    put_int(o, "hidden_size", c->hidden_size, &ok);
    put_int(o, "num_hidden_layers", c->num_hidden_layers, &ok);
    put_int(o, "num_attention_heads", c->num_attention_heads, &ok);
    put_int(o, "num_key_value_heads", c->num_key_value_heads, &ok);
    put_int(o, "head_dim", c->head_dim, &ok);
    put_int(o, "qk_rope_head_dim", c->qk_rope_head_dim, &ok);
    put_int(o, "q_lora_rank", c->q_lora_rank, &ok);
    put_int(o, "o_groups", c->o_groups, &ok);
    put_int(o, "o_lora_rank", c->o_lora_rank, &ok);
    put_int(o, "sliding_window", c->sliding_window, &ok);
    put_int(o, "max_position_embeddings", c->max_position_embeddings, &ok);

    /* One entry per main block, then one 0 per MTP block (those always run sliding). */
    a = cJSON_CreateArray();
    for (int l = 0; a && l < c->num_hidden_layers; l++)
        push(a, cJSON_CreateNumber(dsv4_config_compress_rate(c, l)), &ok);
    for (int l = 0; a && l < c->num_nextn_predict_layers; l++) push(a, cJSON_CreateNumber(0), &ok);
    put(o, "compress_ratios", a, &ok);
    /* The list alone implies the rates only when they are the released ones. */
    if (c->compress_rate_csa != 4) put_int(o, "compress_rate_csa", c->compress_rate_csa, &ok);
    if (c->compress_rate_hca != 128) put_int(o, "compress_rate_hca", c->compress_rate_hca, &ok);
    /* HF reads compress_ratios through a fixed {0, 4, 128} table: other rates need the
     * explicit per-layer types, which HF prefers when both are present. */
    if (c->compress_rate_csa != 4 || c->compress_rate_hca != 128) {
        static const char *const type_names[] = {[DSV4_ATTN_SLIDING] = "sliding_attention",
                                                 [DSV4_ATTN_CSA] = "compressed_sparse_attention",
                                                 [DSV4_ATTN_HCA] = "heavily_compressed_attention"};
        a = cJSON_CreateArray();
        for (int l = 0; a && l < c->num_hidden_layers; l++)
            push(a, cJSON_CreateString(type_names[c->layer_types[l]]), &ok);
        put(o, "layer_types", a, &ok);
    }
    put_num(o, "compress_rope_theta", c->compress_rope_theta, &ok);
    put_num(o, "rope_theta", c->rope_theta, &ok);
    if (c->yarn) {
        cJSON *rs = cJSON_CreateObject();
        if (rs) {
            put_str(rs, "type", "yarn", &ok);
            put_num(rs, "factor", c->yarn_factor, &ok);
            put_int(rs, "original_max_position_embeddings", c->yarn_original_max_position, &ok);
            put_num(rs, "beta_fast", c->yarn_beta_fast, &ok);
            put_num(rs, "beta_slow", c->yarn_beta_slow, &ok);
        }
        put(o, "rope_scaling", rs, &ok);
    }
    put_int(o, "index_n_heads", c->index_n_heads, &ok);
    put_int(o, "index_head_dim", c->index_head_dim, &ok);
    put_int(o, "index_topk", c->index_topk, &ok);
    put_int(o, "hc_mult", c->hc_mult, &ok);
    put_int(o, "hc_sinkhorn_iters", c->hc_sinkhorn_iters, &ok);
    put_num(o, "hc_eps", c->hc_eps, &ok);
    put_int(o, "n_routed_experts", c->n_routed_experts, &ok);
    put_int(o, "num_experts_per_tok", c->num_experts_per_tok, &ok);
    put_int(o, "n_shared_experts", c->n_shared_experts, &ok);
    put_int(o, "moe_intermediate_size", c->moe_intermediate_size, &ok);
    put_str(o, "scoring_func", scoring[c->scoring_func], &ok);
    put_str(o, "topk_method", "noaux_tc", &ok);
    put(o, "norm_topk_prob", cJSON_CreateBool(c->norm_topk_prob), &ok);
    put_num(o, "routed_scaling_factor", c->routed_scaling_factor, &ok);
    put_int(o, "num_hash_layers", c->num_hash_layers, &ok);
    put_num(o, "swiglu_limit", c->swiglu_limit, &ok);
    put_str(o, "hidden_act", "silu", &ok);
    put_num(o, "rms_norm_eps", c->rms_norm_eps, &ok);
    put_int(o, "num_nextn_predict_layers", c->num_nextn_predict_layers, &ok);
    put(o, "tie_word_embeddings", cJSON_CreateBool(c->tie_word_embeddings), &ok);
    put_int(o, "bos_token_id", c->bos_token_id, &ok);
    put_int(o, "eos_token_id", c->eos_token_id, &ok);
    if (memchr(c->quant.expert_dtype, 0, sizeof c->quant.expert_dtype) && c->quant.expert_dtype[0])
        put_str(o, "expert_dtype", c->quant.expert_dtype, &ok);
    if (c->quant.method != DSV4_QUANT_NONE)
        put(o, "quantization_config", quant_json(&c->quant, &ok), &ok);

    char *text = ok ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    return text;
}

dsv4_status dsv4_config_write(const dsv4_config *cfg, const char *dir) {
    char *json = dsv4_config_to_json(cfg), path[4096];
    if (!json) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory writing config.json", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    dsv4_status st = dsv4_write_text_file(path, json);
    free(json);
    return st;
}
