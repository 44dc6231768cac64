/* One rename table for every checkpoint name scheme (../shared/spec/nvfp4.md, "Checkpoints
 * in the wild"; dsv4-reference.md §3). Names are normalised to DeepSeek's native scheme
 * without prefix ("layers.3.attn.wq_a.weight"), the scheme of the internal weight table. */
#ifndef DSV4_MODEL_NAMES_H
#define DSV4_MODEL_NAMES_H

#include <stddef.h>

/* Writes the canonical native name of `name` into out (size cap). Handles:
 * an optional "model." prefix; HF-internal names (self_attn/mlp, q_a_proj, kv_proj,
 * gate_proj/up_proj/down_proj, input_layernorm, attn_hc.fn, sinks, position_bias,
 * compressor.indexer.*, e_score_correction_bias, embed_tokens, lm_head, hc_head.hc_fn);
 * the HF save_pretrained kv norm "attn.norm" (= attn.kv_norm); FP8 ".weight_scale_inv"
 * (= ".scale"). Stacked experts ("experts.gate_up_proj", "experts.down_proj") keep those
 * leaf names under "ffn.experts.". Returns 0, or -1 if the result does not fit. */
int dsv4_canonical_name(const char *name, char *out, size_t cap);
/* Replaces every occurrence of `from` in s (a buffer of cap bytes) by `to`, left to right,
 * never rescanning replaced text. Returns 0, or -1 (s partly rewritten) if it would not fit. */
int dsv4_str_replace_all(char *s, size_t cap, const char *from, const char *to);

#endif
