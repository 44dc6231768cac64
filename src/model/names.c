/* Checkpoint name normalisation: every scheme onto DeepSeek's native names. */
#include "model/names.h"

#include <stdio.h>
#include <string.h>

/* Substring renames, applied in order, each to every occurrence. Mid-key patterns carry
 * their dots so that e.g. ".gate_proj." never matches ".gate.". Order matters where one
 * HF name nests inside another: the indexer's paths are moved before the generic ones. */
static const char *const renames[][2] = {
    /* block-level prefixes */
    {".self_attn.", ".attn."},
    {".mlp.", ".ffn."},
    {".input_layernorm.", ".attn_norm."},
    {".post_attention_layernorm.", ".ffn_norm."},
    {".attn_hc.fn", ".hc_attn_fn"},
    {".attn_hc.base", ".hc_attn_base"},
    {".attn_hc.scale", ".hc_attn_scale"},
    {".ffn_hc.fn", ".hc_ffn_fn"},
    {".ffn_hc.base", ".hc_ffn_base"},
    {".ffn_hc.scale", ".hc_ffn_scale"},
    /* the indexer lives under the compressor in HF, beside it in native names */
    {".compressor.indexer.scorer.weights_proj.", ".indexer.weights_proj."},
    {".compressor.indexer.q_b_proj.", ".indexer.wq_b."},
    {".compressor.indexer.", ".indexer.compressor."},
    {".indexer.scorer.weights_proj.", ".indexer.weights_proj."},
    /* attention leaves */
    {".attn.sinks", ".attn.attn_sink"},
    {".q_a_proj.", ".wq_a."},
    {".q_b_proj.", ".wq_b."},
    {".o_a_proj.", ".wo_a."},
    {".o_b_proj.", ".wo_b."},
    {".q_a_norm.", ".q_norm."},
    {".kv_proj.", ".wkv."},
    {".position_bias", ".ape"},
    {".compressor.gate_proj.", ".compressor.wgate."},
    {".compressor.kv_norm.", ".compressor.norm."},
    {".attn.norm.", ".attn.kv_norm."}, /* HF save_pretrained's name for the kv norm */
    /* MoE leaves */
    {".gate.e_score_correction_bias", ".gate.bias"},
    {".shared_experts.gate_proj.", ".shared_experts.w1."},
    {".shared_experts.up_proj.", ".shared_experts.w3."},
    {".shared_experts.down_proj.", ".shared_experts.w2."},
    /* quantization suffixes: HF's FP8 quantizer calls the block scale weight_scale_inv */
    {".weight_scale_inv", ".scale"},
};

/* Whole-name renames of the top-level tensors (after the prefix is stripped). */
static const char *const globals[][2] = {
    {"embed_tokens.weight", "embed.weight"},
    {"lm_head.weight", "head.weight"},
    {"hc_head.hc_fn", "hc_head_fn"},
    {"hc_head.hc_base", "hc_head_base"},
    {"hc_head.hc_scale", "hc_head_scale"},
};

int dsv4_str_replace_all(char *s, size_t cap, const char *from, const char *to) {
    size_t lf = strlen(from), lt = strlen(to);
    char *p = s;
    while ((p = strstr(p, from)) != NULL) {
        size_t len = strlen(s), tail = strlen(p + lf);
        if (len - lf + lt + 1 > cap) return -1;
        memmove(p + lt, p + lf, tail + 1);
        memcpy(p, to, lt);
        p += lt;
    }
    return 0;
}

int dsv4_canonical_name(const char *name, char *out, size_t cap) {
    if (strncmp(name, "model.", 6) == 0) name += 6;
    /* a leading dot lets the ".x." patterns match the first component too */
    int n = snprintf(out, cap, ".%s", name);
    if (n < 0 || (size_t)n >= cap) return -1;
    for (size_t i = 0; i < sizeof renames / sizeof renames[0]; i++)
        if (dsv4_str_replace_all(out, cap, renames[i][0], renames[i][1])) return -1;
    memmove(out, out + 1, strlen(out)); /* drop the leading dot */
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        if (strcmp(out, globals[i][0]) == 0) {
            if (strlen(globals[i][1]) + 1 > cap) return -1;
            strcpy(out, globals[i][1]);
        }
    return 0;
}
