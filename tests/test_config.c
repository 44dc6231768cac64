/* config.json parsing: the released V4 configs, HF vs legacy forms, quant configs,
 * the to_json round trip, file loading and a table of malformed configs. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "model/config.h"
#include "test.h"

/* Four CSA/HCA pairs. */
#define PAIRS4 "4,128,4,128,4,128,4,128,"

/* V4-Flash config.json as released (values: dsv4-reference.md §1). */
static const char FLASH_JSON[] =
    "{\"architectures\": [\"DeepseekV4ForCausalLM\"], \"model_type\": \"deepseek_v4\",\n"
    " \"vocab_size\": 129280, \"hidden_size\": 4096, \"num_hidden_layers\": 43,\n"
    " \"num_attention_heads\": 64, \"num_key_value_heads\": 1, \"head_dim\": 512,\n"
    " \"qk_rope_head_dim\": 64, \"q_lora_rank\": 1024, \"o_groups\": 8, \"o_lora_rank\": 1024,\n"
    " \"sliding_window\": 128, \"max_position_embeddings\": 1048576,\n"
    " \"compress_ratios\": [0,0," PAIRS4 PAIRS4 PAIRS4 PAIRS4 PAIRS4 "4,0],\n"
    " \"compress_rope_theta\": 160000, \"rope_theta\": 10000,\n"
    " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536,\n"
    "                  \"beta_fast\": 32, \"beta_slow\": 1},\n"
    " \"index_n_heads\": 64, \"index_head_dim\": 128, \"index_topk\": 512,\n"
    " \"hc_mult\": 4, \"hc_sinkhorn_iters\": 20, \"hc_eps\": 1e-06,\n"
    " \"n_routed_experts\": 256, \"num_experts_per_tok\": 6, \"n_shared_experts\": 1,\n"
    " \"moe_intermediate_size\": 2048, \"scoring_func\": \"sqrtsoftplus\", \"topk_method\": \"noaux_tc\",\n"
    " \"norm_topk_prob\": true, \"routed_scaling_factor\": 1.5, \"num_hash_layers\": 3,\n"
    " \"swiglu_limit\": 10.0, \"rms_norm_eps\": 1e-06, \"num_nextn_predict_layers\": 1,\n"
    " \"hidden_act\": \"silu\", \"tie_word_embeddings\": false, \"bos_token_id\": 0, \"eos_token_id\": 1,\n"
    " \"torch_dtype\": \"bfloat16\", \"expert_dtype\": \"fp4\",\n"
    " \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"scale_fmt\": \"ue8m0\",\n"
    "                         \"weight_block_size\": [128, 128], \"activation_scheme\": \"dynamic\"}}\n";

/* V4-Pro: same keys, Pro sizes, schedule [128,128]+[4,128]*29+[4,0]. */
static const char PRO_JSON[] =
    "{\"model_type\": \"deepseek_v4\", \"vocab_size\": 129280, \"hidden_size\": 7168,\n"
    " \"num_hidden_layers\": 61, \"num_attention_heads\": 128, \"head_dim\": 512,\n"
    " \"qk_rope_head_dim\": 64, \"q_lora_rank\": 1536, \"o_groups\": 16, \"o_lora_rank\": 1024,\n"
    " \"compress_ratios\": [128,128," PAIRS4 PAIRS4 PAIRS4 PAIRS4 PAIRS4 PAIRS4 PAIRS4 "4,128,4,0],\n"
    " \"index_topk\": 1024, \"n_routed_experts\": 384, \"num_experts_per_tok\": 6,\n"
    " \"moe_intermediate_size\": 3072, \"routed_scaling_factor\": 2.5, \"num_hash_layers\": 3,\n"
    " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536,\n"
    "                  \"beta_fast\": 32, \"beta_slow\": 1}}";

/* A 4-layer legacy config used as the base of the malformed-config table. */
static const char TINY_JSON[] =
    "{\"vocab_size\": 1000, \"hidden_size\": 64, \"num_hidden_layers\": 4, \"num_attention_heads\": 4,"
    " \"head_dim\": 32, \"qk_rope_head_dim\": 8, \"q_lora_rank\": 16, \"o_groups\": 2, \"o_lora_rank\": 16,"
    " \"n_routed_experts\": 8, \"num_experts_per_tok\": 2, \"moe_intermediate_size\": 32,"
    " \"compress_ratios\": [0, 4, 128, 4, 0], \"num_hash_layers\": 1, \"index_topk\": 4, \"rope_theta\": 10000,"
    " \"rope_scaling\": {\"type\": \"yarn\", \"factor\": 16, \"original_max_position_embeddings\": 65536,"
    "                  \"beta_fast\": 32, \"beta_slow\": 1},"
    " \"quantization_config\": {\"quant_method\": \"fp8\", \"fmt\": \"e4m3\", \"scale_fmt\": \"ue8m0\","
    "                         \"weight_block_size\": [128, 128]}}";

static dsv4_status parse_str(const char *json, dsv4_config *c) {
    return dsv4_config_parse(json, strlen(json), "test/config.json", c);
}

/* Byte-identical structs (exclude pointers aside) with identical exclude lists. parse
 * zeroes the struct first, so padding compares equal too. Returns the first differing
 * byte offset, or -1. */
static long config_diff(const dsv4_config *a, const dsv4_config *b) {
    dsv4_config x = *a, y = *b;
    x.quant.exclude = y.quant.exclude = NULL;
    const unsigned char *p = (const void *)&x, *q = (const void *)&y;
    for (size_t i = 0; i < sizeof x; i++)
        if (p[i] != q[i]) return (long)i;
    for (int i = 0; i < a->quant.n_exclude; i++)
        if (strcmp(a->quant.exclude[i], b->quant.exclude[i]) != 0) return (long)sizeof x + i;
    return -1;
}

static void count_types(const dsv4_config *c, int n[3]) {
    n[0] = n[1] = n[2] = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) n[c->layer_types[l]]++;
}

TEST(config_flash_every_field) {
    dsv4_config c;
    CHECK_OK(parse_str(FLASH_JSON, &c));
    CHECK(c.vocab_size == 129280 && c.hidden_size == 4096 && c.num_hidden_layers == 43);
    CHECK(c.num_attention_heads == 64 && c.num_key_value_heads == 1 && c.head_dim == 512);
    CHECK(c.qk_rope_head_dim == 64 && c.q_lora_rank == 1024 && c.o_groups == 8 && c.o_lora_rank == 1024);
    CHECK(c.sliding_window == 128 && c.max_position_embeddings == 1048576);
    CHECK(c.compress_rate_csa == 4 && c.compress_rate_hca == 128);
    CHECK(c.index_n_heads == 64 && c.index_head_dim == 128 && c.index_topk == 512);
    CHECK(c.hc_mult == 4 && c.hc_sinkhorn_iters == 20 && c.hc_eps == 1e-6);
    CHECK(c.n_routed_experts == 256 && c.num_experts_per_tok == 6 && c.n_shared_experts == 1);
    CHECK(c.moe_intermediate_size == 2048 && c.scoring_func == DSV4_SCORE_SQRTSOFTPLUS);
    CHECK(c.routed_scaling_factor == 1.5 && c.swiglu_limit == 10.0 && c.norm_topk_prob == 1);
    CHECK(c.num_hash_layers == 3 && c.rms_norm_eps == 1e-6);
    CHECK(c.rope_theta == 10000.0 && c.compress_rope_theta == 160000.0);
    CHECK(c.yarn == 1 && c.yarn_factor == 16.0 && c.yarn_beta_fast == 32.0 && c.yarn_beta_slow == 1.0);
    CHECK(c.yarn_original_max_position == 65536);
    CHECK(c.num_nextn_predict_layers == 1 && c.tie_word_embeddings == 0);
    CHECK(c.bos_token_id == 0 && c.eos_token_id == 1);
    /* Layer plan: 2 SWA (0-1), CSA on even layers 2..42, HCA on odd layers 3..41. */
    int n[3];
    count_types(&c, n);
    CHECK_MSG(n[0] == 2 && n[1] == 21 && n[2] == 20, "SWA %d CSA %d HCA %d", n[0], n[1], n[2]);
    for (int l = 0; l < 43; l++) {
        dsv4_attn_type want = l < 2 ? DSV4_ATTN_SLIDING : l % 2 == 0 ? DSV4_ATTN_CSA : DSV4_ATTN_HCA;
        CHECK_MSG(c.layer_types[l] == want, "layer %d: %d", l, c.layer_types[l]);
        CHECK(c.mlp_layer_types[l] == (l < 3 ? DSV4_MLP_HASH_MOE : DSV4_MLP_MOE));
    }
    CHECK(dsv4_config_compress_rate(&c, 0) == 0 && dsv4_config_compress_rate(&c, 2) == 4);
    CHECK(dsv4_config_compress_rate(&c, 41) == 128 && dsv4_config_compress_rate(&c, 42) == 4);
    CHECK(dsv4_config_compress_rate(&c, 43) == 0 && dsv4_config_compress_rate(&c, -1) == 0);
    CHECK(c.quant.method == DSV4_QUANT_FP8_BLOCK && c.quant.fp8_block[0] == 128);
    CHECK(c.quant.fp8_block[1] == 128 && c.quant.scale_ue8m0 == 1 && c.quant.n_exclude == 0);
    CHECK(strcmp(c.quant.expert_dtype, "fp4") == 0 && c.quant.moe_algo[0] == '\0');
    CHECK(!dsv4_config_excluded(&c, "layers.0.attn.wq_a"));
    dsv4_config_free(&c);
}

TEST(config_pro_layer_plan) {
    dsv4_config c;
    CHECK_OK(parse_str(PRO_JSON, &c));
    CHECK(c.hidden_size == 7168 && c.num_hidden_layers == 61 && c.num_attention_heads == 128);
    CHECK(c.q_lora_rank == 1536 && c.o_groups == 16 && c.n_routed_experts == 384);
    CHECK(c.moe_intermediate_size == 3072 && c.index_topk == 1024 && c.routed_scaling_factor == 2.5);
    int n[3];
    count_types(&c, n);
    CHECK_MSG(n[0] == 0 && n[1] == 30 && n[2] == 31, "SWA %d CSA %d HCA %d", n[0], n[1], n[2]);
    CHECK(c.layer_types[0] == DSV4_ATTN_HCA && c.layer_types[1] == DSV4_ATTN_HCA);
    CHECK(c.layer_types[2] == DSV4_ATTN_CSA && c.layer_types[60] == DSV4_ATTN_CSA);
    CHECK(c.layer_types[59] == DSV4_ATTN_HCA && dsv4_config_compress_rate(&c, 59) == 128);
    /* Keys Pro leaves out take Flash defaults. */
    CHECK(c.sliding_window == 128 && c.hc_mult == 4 && c.index_n_heads == 64 && c.num_hash_layers == 3);
    CHECK(c.quant.method == DSV4_QUANT_NONE && c.quant.expert_dtype[0] == '\0');
    dsv4_config_free(&c);
}

/* Rewrites the Flash config into the HF form: no legacy key left. */
static char *flash_hf_form(int keep_legacy) {
    cJSON *o = cJSON_Parse(FLASH_JSON);
    if (!o) return NULL;
    if (!keep_legacy) {
        cJSON_DeleteItemFromObject(o, "compress_ratios");
        cJSON_DeleteItemFromObject(o, "num_hash_layers");
        cJSON_DeleteItemFromObject(o, "rope_scaling");
        cJSON_DeleteItemFromObject(o, "qk_rope_head_dim");
        cJSON_DeleteItemFromObject(o, "rope_theta");
        cJSON_DeleteItemFromObject(o, "compress_rope_theta");
    }
    cJSON *lt = cJSON_AddArrayToObject(o, "layer_types");
    cJSON *mt = cJSON_AddArrayToObject(o, "mlp_layer_types");
    for (int l = 0; l < 43; l++) {
        const char *t = l < 2 ? "sliding_attention" : l % 2 ? "heavily_compressed_attention"
                                                             : "compressed_sparse_attention";
        cJSON_AddItemToArray(lt, cJSON_CreateString(t));
        cJSON_AddItemToArray(mt, cJSON_CreateString(l < 3 ? "hash_moe" : "moe"));
    }
    cJSON *cr = cJSON_AddObjectToObject(o, "compress_rates");
    cJSON_AddNumberToObject(cr, "compressed_sparse_attention", 4);
    cJSON_AddNumberToObject(cr, "heavily_compressed_attention", 128);
    cJSON_AddNumberToObject(o, "partial_rotary_factor", 0.125);
    cJSON *rp = cJSON_AddObjectToObject(o, "rope_parameters");
    cJSON *m = cJSON_AddObjectToObject(rp, "main");
    cJSON_AddStringToObject(m, "rope_type", "default");
    cJSON_AddNumberToObject(m, "rope_theta", 10000);
    cJSON_AddNumberToObject(m, "partial_rotary_factor", 0.125);
    cJSON *cp = cJSON_AddObjectToObject(rp, "compress");
    cJSON_AddStringToObject(cp, "rope_type", "yarn");
    cJSON_AddNumberToObject(cp, "rope_theta", 160000);
    cJSON_AddNumberToObject(cp, "factor", 16);
    cJSON_AddNumberToObject(cp, "original_max_position_embeddings", 65536);
    cJSON_AddNumberToObject(cp, "beta_fast", 32);
    cJSON_AddNumberToObject(cp, "beta_slow", 1);
    cJSON_AddNumberToObject(cp, "attention_factor", 1.0);
    cJSON_AddNumberToObject(cp, "partial_rotary_factor", 0.125);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

TEST(config_hf_form_equals_legacy) {
    dsv4_config legacy, hf, both;
    CHECK_OK(parse_str(FLASH_JSON, &legacy));
    for (int keep = 0; keep <= 1; keep++) {
        char *s = flash_hf_form(keep);
        CHECK(s);
        CHECK(keep || !strstr(s, "compress_ratios"));
        dsv4_status st = parse_str(s, keep ? &both : &hf);
        free(s);
        CHECK_OK(st);
    }
    long d = config_diff(&legacy, &hf);
    CHECK_MSG(d < 0, "HF form differs from legacy at byte %ld", d);
    d = config_diff(&legacy, &both);
    CHECK_MSG(d < 0, "HF + legacy form differs at byte %ld", d);
    dsv4_config_free(&legacy);
    dsv4_config_free(&hf);
    dsv4_config_free(&both);
}

TEST(config_flat_rope_parameters_and_eos_list) {
    dsv4_config c;
    const char *js =
        "{\"vocab_size\": 100, \"hidden_size\": 64, \"num_hidden_layers\": 2, \"num_attention_heads\": 2,"
        " \"head_dim\": 32, \"partial_rotary_factor\": 0.25, \"q_lora_rank\": 16, \"o_groups\": 1,"
        " \"o_lora_rank\": 8, \"num_local_experts\": 4, \"num_experts_per_tok\": 2, \"intermediate_size\": 16,"
        " \"layer_types\": [\"sliding_attention\", \"heavily_compressed_attention\"],"
        " \"compress_rate_hca\": 16, \"rope_parameters\": {\"rope_type\": \"yarn\", \"factor\": 4,"
        " \"rope_theta\": 5000}, \"eos_token_id\": [7, 8], \"bos_token_id\": null, \"scoring_func\": \"sigmoid\"}";
    CHECK_OK(parse_str(js, &c));
    CHECK(c.qk_rope_head_dim == 8 && c.n_routed_experts == 4 && c.moe_intermediate_size == 16);
    CHECK(c.compress_rate_hca == 16 && dsv4_config_compress_rate(&c, 1) == 16);
    CHECK(c.yarn == 1 && c.yarn_factor == 4.0 && c.yarn_beta_fast == 32.0 && c.rope_theta == 5000.0);
    CHECK(c.eos_token_id == 7 && c.bos_token_id == 0 && c.scoring_func == DSV4_SCORE_SIGMOID);
    CHECK(c.num_hash_layers == 2); /* default min(3, layers) */
    dsv4_config_free(&c);
}

static const char MODELOPT_QC[] =
    "{\"quant_method\": \"modelopt\", \"quant_algo\": \"MIXED_PRECISION\", \"moe_quant_algo\": \"NVFP4\","
    " \"ignore\": [\"head\", \"layers.*.attn*\", \"*.ffn.gate\", \"mtp.*\"]}";

/* TINY_JSON with its quantization_config replaced by `qc`. */
static char *tiny_with_quant(const char *qc) {
    cJSON *o = cJSON_Parse(TINY_JSON);
    cJSON_ReplaceItemInObject(o, "quantization_config", cJSON_Parse(qc));
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

TEST(config_modelopt_quantization_config) {
    dsv4_config c;
    char *s = tiny_with_quant(MODELOPT_QC);
    dsv4_status st = parse_str(s, &c);
    free(s);
    CHECK_OK(st);
    CHECK(c.quant.method == DSV4_QUANT_MIXED && strcmp(c.quant.moe_algo, "NVFP4") == 0);
    CHECK(c.quant.group_size == 16 && c.quant.fp8_block[0] == 128 && c.quant.scale_ue8m0 == 1);
    CHECK(c.quant.n_exclude == 4 && strcmp(c.quant.exclude[1], "layers.*.attn*") == 0);
    CHECK(dsv4_config_excluded(&c, "head"));
    CHECK(dsv4_config_excluded(&c, "layers.3.attn.wq_a"));
    CHECK(dsv4_config_excluded(&c, "model.layers.3.attn.compressor.wkv"));
    CHECK(dsv4_config_excluded(&c, "layers.0.ffn.gate"));
    CHECK(dsv4_config_excluded(&c, "mtp.0.ffn.experts.1.w1"));
    CHECK(!dsv4_config_excluded(&c, "layers.0.ffn.experts.5.w2"));
    CHECK(!dsv4_config_excluded(&c, "layers.0.ffn.shared_experts.w1"));
    CHECK(!dsv4_config_excluded(&c, "embed"));
    dsv4_config_free(&c);
}

static const char HF_QUANT[] =
    "{\"producer\": {\"name\": \"modelopt\", \"version\": \"0.37.0\"},"
    " \"quantization\": {\"quant_algo\": \"NVFP4\", \"kv_cache_quant_algo\": null, \"group_size\": 16,"
    " \"exclude_modules\": [\"lm_head\", \"model.layers.*.self_attn*\", \"mtp*\"]}}";

TEST(config_hf_quant_config_replaces_quant) {
    dsv4_config c;
    CHECK_OK(parse_str(FLASH_JSON, &c));
    CHECK_OK(dsv4_config_parse_hf_quant(HF_QUANT, strlen(HF_QUANT), "hf_quant_config.json", &c));
    CHECK(c.quant.method == DSV4_QUANT_NVFP4 && c.quant.group_size == 16 && c.quant.n_exclude == 3);
    CHECK(c.quant.fp8_block[0] == 0 && c.quant.scale_ue8m0 == 0);
    CHECK(strcmp(c.quant.expert_dtype, "fp4") == 0); /* config.json's key survives */
    CHECK(dsv4_config_excluded(&c, "lm_head"));
    CHECK(dsv4_config_excluded(&c, "layers.0.self_attn.q_a_proj"));
    CHECK(dsv4_config_excluded(&c, "model.layers.12.self_attn.o_proj"));
    CHECK(dsv4_config_excluded(&c, "mtp.0.attn.wq_a"));
    CHECK(!dsv4_config_excluded(&c, "model.layers.0.mlp.experts.3.gate_proj"));
    /* A bad file leaves the config as it was. */
    const char *bad = "{\"quantization\": {\"quant_algo\": \"NVFP4\", \"group_size\": 32}}";
    CHECK_STATUS(dsv4_config_parse_hf_quant(bad, strlen(bad), "hq.json", &c), DSV4_ERR_CONFIG);
    CHECK(strstr(dsv4_last_error(), "hq.json: quantization.group_size") != NULL);
    CHECK(c.quant.method == DSV4_QUANT_NVFP4 && c.quant.n_exclude == 3);
    bad = "{\"quantization\": {\"quant_algo\": \"W4A8_AWQ\"}}";
    CHECK_STATUS(dsv4_config_parse_hf_quant(bad, strlen(bad), "hq.json", &c), DSV4_ERR_UNSUPPORTED);
    bad = "{\"quantization\": {\"group_size\": 16}}";
    CHECK_STATUS(dsv4_config_parse_hf_quant(bad, strlen(bad), "hq.json", &c), DSV4_ERR_CONFIG);
    CHECK(strstr(dsv4_last_error(), "quantization.quant_algo") != NULL);
    CHECK_STATUS(dsv4_config_parse_hf_quant("[]", 2, "hq.json", &c), DSV4_ERR_JSON);
    /* MIXED_PRECISION: the experts' algo comes from quantized_layers; FP8 settings are kept. */
    dsv4_config_free(&c);
    CHECK_OK(parse_str(FLASH_JSON, &c));
    const char *mixed = "{\"quantization\": {\"quant_algo\": \"MIXED_PRECISION\", \"quantized_layers\":"
                        " {\"layers.3.ffn.experts.0.w1\": {\"quant_algo\": \"NVFP4\", \"group_size\": 16}}}}";
    CHECK_OK(dsv4_config_parse_hf_quant(mixed, strlen(mixed), "hq.json", &c));
    CHECK(c.quant.method == DSV4_QUANT_MIXED && strcmp(c.quant.moe_algo, "NVFP4") == 0);
    CHECK(c.quant.fp8_block[0] == 128 && c.quant.scale_ue8m0 == 1 && c.quant.n_exclude == 0);
    dsv4_config_free(&c);
}

static int round_trips(const char *json, long *diff) {
    dsv4_config a, b;
    *diff = -2;
    if (parse_str(json, &a) != DSV4_OK) return 0;
    char *text = dsv4_config_to_json(&a);
    int ok = text && parse_str(text, &b) == DSV4_OK;
    if (ok) {
        *diff = config_diff(&a, &b);
        ok = *diff < 0 && strstr(text, "\"compress_ratios\"") && strstr(text, "\"deepseek_v4\"");
        dsv4_config_free(&b);
    }
    free(text);
    dsv4_config_free(&a);
    return ok;
}

TEST(config_to_json_round_trip) {
    long d;
    CHECK_MSG(round_trips(FLASH_JSON, &d), "Flash: diff at %ld (%s)", d, dsv4_last_error());
    CHECK_MSG(round_trips(PRO_JSON, &d), "Pro: diff at %ld (%s)", d, dsv4_last_error());
    char *s = tiny_with_quant(MODELOPT_QC);
    int ok = round_trips(s, &d);
    free(s);
    CHECK_MSG(ok, "ModelOpt: diff at %ld (%s)", d, dsv4_last_error());
    s = tiny_with_quant("{\"quant_algo\": \"NVFP4\", \"exclude_modules\": [\"head\"]}");
    ok = round_trips(s, &d);
    free(s);
    CHECK_MSG(ok, "NVFP4: diff at %ld (%s)", d, dsv4_last_error());
    const char *odd = "{\"vocab_size\": 50, \"hidden_size\": 8, \"num_hidden_layers\": 3,"
                      " \"num_attention_heads\": 2, \"head_dim\": 8, \"qk_rope_head_dim\": 2,"
                      " \"q_lora_rank\": 4, \"o_groups\": 2, \"o_lora_rank\": 4, \"n_routed_experts\": 3,"
                      " \"num_experts_per_tok\": 3, \"moe_intermediate_size\": 4,"
                      " \"compress_ratios\": [2, 0, 8], \"compress_rate_csa\": 2, \"hc_eps\": 0.1,"
                      " \"rms_norm_eps\": 3.3333333333333335e-07, \"num_nextn_predict_layers\": 0}";
    CHECK_MSG(round_trips(odd, &d), "odd rates: diff at %ld (%s)", d, dsv4_last_error());
    /* The written text looks like a released config: trailing MTP entry, legacy rope block. */
    dsv4_config c;
    CHECK_OK(parse_str(FLASH_JSON, &c));
    char *text = dsv4_config_to_json(&c);
    dsv4_config_free(&c);
    CHECK(text);
    cJSON *o = cJSON_Parse(text);
    free(text);
    CHECK(o);
    const cJSON *cr = cJSON_GetObjectItem(o, "compress_ratios");
    const cJSON *rs = cJSON_GetObjectItem(o, "rope_scaling");
    int n = cJSON_GetArraySize(cr), last = cJSON_GetArrayItem(cr, n - 1)->valueint;
    int hca = cJSON_GetArrayItem(cr, 41)->valueint;
    int nh = cJSON_GetObjectItem(o, "num_hash_layers")->valueint;
    int yarn = cJSON_IsString(cJSON_GetObjectItem(rs, "type")) &&
               strcmp(cJSON_GetObjectItem(rs, "type")->valuestring, "yarn") == 0;
    const cJSON *qc = cJSON_GetObjectItem(o, "quantization_config");
    int fp8 = strcmp(cJSON_GetObjectItem(qc, "quant_method")->valuestring, "fp8") == 0;
    cJSON_Delete(o);
    CHECK_MSG(n == 44 && last == 0 && hca == 128, "compress_ratios: %d entries, last %d", n, last);
    CHECK(nh == 3 && yarn && fp8);
}

TEST(config_load_files) {
    const char *dir = test_tmpdir();
    char path[1400], sub[1500];
    dsv4_config c;
    CHECK_STATUS(dsv4_config_load(dir, &c), DSV4_ERR_MISSING);
    CHECK(strstr(dsv4_last_error(), "config.json") && strstr(dsv4_last_error(), dir));
    snprintf(path, sizeof path, "%s/config.json", dir);
    CHECK(test_write_file(path, FLASH_JSON, strlen(FLASH_JSON)) == 0);
    CHECK_OK(dsv4_config_load(dir, &c));
    CHECK(c.num_hidden_layers == 43 && c.quant.method == DSV4_QUANT_FP8_BLOCK);
    dsv4_config_free(&c);
    snprintf(path, sizeof path, "%s/hf_quant_config.json", dir);
    CHECK(test_write_file(path, HF_QUANT, strlen(HF_QUANT)) == 0);
    CHECK_OK(dsv4_config_load(dir, &c));
    CHECK(c.quant.method == DSV4_QUANT_NVFP4 && c.quant.n_exclude == 3);
    dsv4_config_free(&c);
    CHECK(test_write_file(path, "{\"quantization\": 5}", 19) == 0);
    CHECK_STATUS(dsv4_config_load(dir, &c), DSV4_ERR_CONFIG);
    CHECK(strstr(dsv4_last_error(), "hf_quant_config.json: quantization") != NULL);
    CHECK(c.num_hidden_layers == 0 && c.quant.exclude == NULL); /* left freed */
    /* config.json that cannot be read as a file. */
    snprintf(sub, sizeof sub, "%s/sub", dir);
    CHECK(test_system("mkdir -p '%s/config.json'", sub) == 0);
    CHECK_STATUS(dsv4_config_load(sub, &c), DSV4_ERR_IO);
    CHECK(strstr(dsv4_last_error(), "sub/config.json") != NULL);
    snprintf(path, sizeof path, "%s/bad", dir);
    CHECK(test_system("mkdir -p '%s'", path) == 0);
    snprintf(sub, sizeof sub, "%s/config.json", path);
    CHECK(test_write_file(sub, "{\"vocab_size\": 3,", 17) == 0);
    CHECK_STATUS(dsv4_config_load(path, &c), DSV4_ERR_JSON);
    CHECK(strstr(dsv4_last_error(), "bad/config.json") != NULL);
}

TEST(config_rejects_non_objects) {
    dsv4_config c;
    const char *cases[] = {"", "not json", "[1, 2]", "42", "\"s\"", "null", "{} x", "{\"a\": }"};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        CHECK_MSG(dsv4_config_parse(cases[i], strlen(cases[i]), "j.json", &c) == DSV4_ERR_JSON,
                  "case '%s': %s", cases[i], dsv4_last_error());
        CHECK(strncmp(dsv4_last_error(), "j.json", 6) == 0);
    }
    CHECK_STATUS(dsv4_config_parse(NULL, 0, "j.json", &c), DSV4_ERR_INVALID_ARGUMENT);
    /* Trailing whitespace and a terminating NUL are fine. */
    CHECK_STATUS(dsv4_config_parse("{}\n\0", 4, "j.json", &c), DSV4_ERR_CONFIG);
}

/* One malformed variant of TINY_JSON: set `path` (dot-separated) to `value` (JSON text, or
 * NULL to delete the key), expect `status` and a message containing `key` and `key2`. */
typedef struct {
    const char *path, *value;
    dsv4_status status;
    const char *key, *key2;
} bad_case;

static const bad_case BAD[] = {
    {"vocab_size", "\"1000\"", DSV4_ERR_CONFIG, "vocab_size", "string"},
    {"vocab_size", NULL, DSV4_ERR_CONFIG, "vocab_size", "missing"},
    {"hidden_size", "-64", DSV4_ERR_CONFIG, "hidden_size", NULL},
    {"head_dim", "32.5", DSV4_ERR_CONFIG, "head_dim", "integer"},
    {"q_lora_rank", "true", DSV4_ERR_CONFIG, "q_lora_rank", NULL},
    {"n_routed_experts", NULL, DSV4_ERR_CONFIG, "n_routed_experts", "missing"},
    {"num_local_experts", "16", DSV4_ERR_CONFIG, "num_local_experts", "n_routed_experts"},
    {"max_position_embeddings", "1e300", DSV4_ERR_CONFIG, "max_position_embeddings", NULL},
    {"compress_ratios", NULL, DSV4_ERR_CONFIG, "layer_types", "compress_ratios"},
    {"o_groups", "3", DSV4_ERR_CONFIG, "o_groups", NULL},
    {"qk_rope_head_dim", "40", DSV4_ERR_CONFIG, "qk_rope_head_dim", NULL},
    {"qk_rope_head_dim", "7", DSV4_ERR_CONFIG, "qk_rope_head_dim", NULL},
    {"num_experts_per_tok", "9", DSV4_ERR_CONFIG, "num_experts_per_tok", NULL},
    {"num_hash_layers", "5", DSV4_ERR_CONFIG, "num_hash_layers", NULL},
    {"num_hidden_layers", "300", DSV4_ERR_CONFIG, "num_hidden_layers", NULL},
    {"hc_mult", "0", DSV4_ERR_CONFIG, "hc_mult", NULL},
    {"index_topk", "0", DSV4_ERR_CONFIG, "index_topk", NULL},
    {"num_key_value_heads", "8", DSV4_ERR_CONFIG, "num_key_value_heads", NULL},
    {"scoring_func", "\"relu\"", DSV4_ERR_CONFIG, "scoring_func", NULL},
    {"hidden_act", "\"gelu\"", DSV4_ERR_CONFIG, "hidden_act", NULL},
    {"norm_topk_prob", "\"yes\"", DSV4_ERR_CONFIG, "norm_topk_prob", NULL},
    {"eos_token_id", "5000", DSV4_ERR_CONFIG, "eos_token_id", NULL},
    {"eos_token_id", "[]", DSV4_ERR_CONFIG, "eos_token_id", NULL},
    {"rms_norm_eps", "0", DSV4_ERR_CONFIG, "rms_norm_eps", NULL},
    {"expert_dtype", "\"int4\"", DSV4_ERR_CONFIG, "expert_dtype", NULL},
    {"layer_types", "\"sliding_attention\"", DSV4_ERR_CONFIG, "layer_types", "array"},
    {"layer_types", "[\"sliding_attention\",\"bogus\",\"heavily_compressed_attention\",\"compressed_sparse_attention\"]",
     DSV4_ERR_CONFIG, "layer_types", NULL},
    {"layer_types", "[\"sliding_attention\",\"compressed_sparse_attention\",\"compressed_sparse_attention\",\"compressed_sparse_attention\"]",
     DSV4_ERR_CONFIG, "compress_ratios[2]", "layer_types[2]"},
    {"compress_ratios", "[0, 4]", DSV4_ERR_CONFIG, "compress_ratios", "num_hidden_layers"},
    {"compress_ratios", "[0, 4, 2, 4, 0]", DSV4_ERR_CONFIG, "compress_ratios[2]", NULL},
    {"compress_ratios", "[0, 4, 128, 64, 0]", DSV4_ERR_CONFIG, "compress_ratios[3]", "compress_ratios[2]"},
    {"compress_ratios", "[0, 4, 128, 4, -1]", DSV4_ERR_CONFIG, "compress_ratios[4]", NULL},
    {"compress_rate_hca", "64", DSV4_ERR_CONFIG, "compress_ratios[2]", "compress_rate_hca"},
    {"compress_rates", "{\"compressed_sparse_attention\": 8}", DSV4_ERR_CONFIG, "compress_ratios[1]", NULL},
    {"compress_rates", "{\"compressed_sparse_attention\": 4, \"heavily_compressed_attention\": 64}",
     DSV4_ERR_CONFIG, "compress_ratios[2]", "compress_rates.heavily_compressed_attention"},
    {"mlp_layer_types", "[\"moe\", \"hash_moe\", \"moe\", \"moe\"]", DSV4_ERR_CONFIG, "mlp_layer_types", NULL},
    {"mlp_layer_types", "[\"hash_moe\", \"hash_moe\", \"moe\", \"moe\"]", DSV4_ERR_CONFIG, "mlp_layer_types", "num_hash_layers"},
    {"mlp_layer_types", "[\"hash_moe\", \"dense\", \"moe\", \"moe\"]", DSV4_ERR_CONFIG, "mlp_layer_types", NULL},
    {"partial_rotary_factor", "0.5", DSV4_ERR_CONFIG, "partial_rotary_factor", "qk_rope_head_dim"},
    {"partial_rotary_factor", "0.01", DSV4_ERR_CONFIG, "partial_rotary_factor", NULL},
    {"rope_scaling.type", "\"linear\"", DSV4_ERR_UNSUPPORTED, "rope_scaling.type", NULL},
    {"rope_scaling.rope_type", "\"default\"", DSV4_ERR_CONFIG, "rope_scaling.rope_type", "rope_scaling.type"},
    {"rope_scaling.factor", "\"16\"", DSV4_ERR_CONFIG, "rope_scaling.factor", NULL},
    {"rope_scaling.factor", "0.5", DSV4_ERR_CONFIG, "rope_scaling.factor", NULL},
    {"rope_scaling.beta_slow", "0", DSV4_ERR_CONFIG, "rope_scaling.beta", NULL},
    {"rope_scaling.attention_factor", "1.3", DSV4_ERR_UNSUPPORTED, "rope_scaling.attention_factor", NULL},
    {"rope_scaling", "[]", DSV4_ERR_CONFIG, "rope_scaling", "object"},
    {"rope_parameters", "{\"main\": {\"rope_type\": \"default\"}, \"compress\": {\"rope_type\": \"yarn\", \"factor\": 8}}",
     DSV4_ERR_CONFIG, "rope_parameters.compress", "rope_scaling"},
    {"rope_parameters", "{\"main\": {\"rope_theta\": 20000}}", DSV4_ERR_CONFIG, "rope_parameters.main.rope_theta", NULL},
    {"rope_parameters", "{\"main\": {\"rope_type\": \"yarn\"}}", DSV4_ERR_UNSUPPORTED, "rope_parameters.main.rope_type", NULL},
    {"rope_theta", "0.5", DSV4_ERR_CONFIG, "rope_theta", NULL},
    {"quantization_config.weight_block_size", "[128]", DSV4_ERR_CONFIG, "quantization_config.weight_block_size", NULL},
    {"quantization_config.weight_block_size", "[128, 0]", DSV4_ERR_CONFIG, "quantization_config.weight_block_size", NULL},
    {"quantization_config.quant_method", "\"awq\"", DSV4_ERR_UNSUPPORTED, "quantization_config.quant_method", NULL},
    {"quantization_config.scale_fmt", "\"e5m2\"", DSV4_ERR_CONFIG, "quantization_config.scale_fmt", NULL},
    {"quantization_config.fmt", "\"e5m2\"", DSV4_ERR_UNSUPPORTED, "quantization_config.fmt", NULL},
    {"quantization_config", "{\"quant_method\": \"modelopt\"}", DSV4_ERR_CONFIG, "quantization_config.quant_algo", NULL},
    {"quantization_config", "{\"quant_algo\": \"NVFP4\", \"group_size\": 32}", DSV4_ERR_CONFIG, "quantization_config.group_size", NULL},
    {"quantization_config", "{\"quant_algo\": \"NVFP4\", \"ignore\": [1]}", DSV4_ERR_CONFIG, "quantization_config.ignore", NULL},
    {"quantization_config", "{\"quant_algo\": \"NVFP4\", \"moe_quant_algo\": \"AN_ALGORITHM_NAME_THAT_IS_TOO_LONG\"}",
     DSV4_ERR_CONFIG, "quantization_config.moe_quant_algo", NULL},
    {"quantization_config", "{\"activation_scheme\": \"dynamic\"}", DSV4_ERR_CONFIG, "quantization_config", NULL},
    {"quantization_config", "\"fp8\"", DSV4_ERR_CONFIG, "quantization_config", "object"},
};

/* Applies one case to a parsed TINY_JSON tree. */
static int apply_case(cJSON *root, const bad_case *bc) {
    char path[128];
    snprintf(path, sizeof path, "%s", bc->path);
    cJSON *obj = root;
    char *key = path, *dot;
    while ((dot = strchr(key, '.'))) {
        *dot = '\0';
        obj = cJSON_GetObjectItem(obj, key);
        if (!obj) return 0;
        key = dot + 1;
    }
    cJSON_DeleteItemFromObject(obj, key);
    if (!bc->value) return 1;
    cJSON *v = cJSON_Parse(bc->value);
    return v && cJSON_AddItemToObject(obj, key, v);
}

TEST(config_malformed_table) {
    dsv4_config c;
    CHECK_OK(parse_str(TINY_JSON, &c)); /* the base itself is fine */
    dsv4_config_free(&c);
    for (size_t i = 0; i < sizeof BAD / sizeof *BAD; i++) {
        const bad_case *bc = &BAD[i];
        cJSON *root = cJSON_Parse(TINY_JSON);
        CHECK_MSG(root && apply_case(root, bc), "case %zu (%s): cannot build", i, bc->path);
        char *text = cJSON_PrintUnformatted(root);
        cJSON_Delete(root);
        dsv4_status st = dsv4_config_parse(text, strlen(text), "tiny/config.json", &c);
        free(text);
        const char *msg = dsv4_last_error();
        CHECK_MSG(st == bc->status, "case %zu (%s=%s): got %s, want %s: %s", i, bc->path,
                  bc->value ? bc->value : "<deleted>", dsv4_status_name(st),
                  dsv4_status_name(bc->status), msg);
        CHECK_MSG(strncmp(msg, "tiny/config.json: ", 18) == 0, "case %zu: message '%s'", i, msg);
        CHECK_MSG(strstr(msg, bc->key) && (!bc->key2 || strstr(msg, bc->key2)),
                  "case %zu (%s): message '%s' should name '%s'%s%s", i, bc->path, msg, bc->key,
                  bc->key2 ? " and " : "", bc->key2 ? bc->key2 : "");
        CHECK_MSG(c.num_hidden_layers == 0 && c.quant.exclude == NULL, "case %zu: out not cleared", i);
    }
}

TEST(config_validate_catches_hand_edits) {
    dsv4_config c;
    CHECK_OK(parse_str(FLASH_JSON, &c));
    CHECK_OK(dsv4_config_validate(&c, "x"));
    c.o_groups = 7;
    CHECK_STATUS(dsv4_config_validate(&c, "x"), DSV4_ERR_CONFIG);
    CHECK(strstr(dsv4_last_error(), "x: o_groups") != NULL);
    c.o_groups = 8;
    c.mlp_layer_types[5] = DSV4_MLP_HASH_MOE;
    CHECK_STATUS(dsv4_config_validate(&c, "x"), DSV4_ERR_CONFIG);
    CHECK(strstr(dsv4_last_error(), "mlp_layer_types") != NULL);
    c.mlp_layer_types[5] = DSV4_MLP_MOE;
    c.compress_rate_hca = 4;
    CHECK_STATUS(dsv4_config_validate(&c, "x"), DSV4_ERR_CONFIG);
    CHECK(strstr(dsv4_last_error(), "compress_rate_hca") != NULL);
    dsv4_config_free(&c);
    dsv4_config z = {0};
    dsv4_config_free(&z); /* safe on a zeroed struct */
    CHECK(!dsv4_config_excluded(&z, "head") && dsv4_config_compress_rate(&z, 0) == 0);
}
