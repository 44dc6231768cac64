/* CPU reference ops: the numerical truth of dsv4.
 *
 * Plain C11, fp32 math, one function per op of ../shared/spec/model.md (see docs/cpu-ops.md
 * for the formulas and every place where HF transformers' deepseek_v4 code is followed
 * over DeepSeek's own reference). Conventions shared by every function here:
 *   - Tensors are dense row-major fp32 arrays; the shapes in comments are [outer, ..., inner].
 *   - "T" is the number of tokens in the call; token t has absolute position pos[t].
 *   - Linears take a dsv4_weight in its stored format (NVFP4, MXFP4, FP8 block-128, BF16,
 *     F32; expanded row by row, exactly) through dsv4_cpu_linear (cpu/linear.h); y = x · Wᵀ.
 *     dsv4_cpu_matmul is the plain fp32 product the other ops build on.
 *   - Outputs are caller-allocated and may not alias inputs unless a comment says so.
 *   - Scratch space is malloc'ed inside; failure returns DSV4_ERR_OUT_OF_MEMORY.
 *   - Bad sizes return DSV4_ERR_SHAPE, bad indices DSV4_ERR_RANGE, NULL pointers
 *     DSV4_ERR_INVALID_ARGUMENT; dsv4_last_error() names the op.
 * Nothing here rounds activations to bf16 between ops: that is the forward pass's choice. */
#ifndef DSV4_CPU_OPS_H
#define DSV4_CPU_OPS_H

#include <stdint.h>

#include "dsv4.h"
#include "cpu/linear.h" /* dsv4_cpu_linear, dsv4_numerics */
#include "format/fp.h"    /* dsv4_bf16_round */

/* ---------------------------------------------------------------- matmul.c */

/* y[T, n_out] = x[T, n_in] · w[n_out, n_in]ᵀ, fp32 accumulation in index order. */
dsv4_status dsv4_cpu_matmul(float *y, const float *x, const float *w, int T, int n_in, int n_out);


/* ---------------------------------------------------------------- kv_fp8.c */

#define DSV4_KV_FP8_BLOCK 64

/* In place, for n KV rows of `dim` values: the leading dim−rope_dim (nope) values through
 * e4m3 with a power-of-two scale per block of 64 (2^ceil(log2(amax/448))), the trailing
 * rope_dim values through BF16 — what an FP8 KV cache stores. */
dsv4_status dsv4_cpu_kv_fp8_roundtrip(float *rows, int n, int dim, int rope_dim);

/* ---------------------------------------------------------------- rmsnorm.c */

/* out[r] = x[r] · rsqrt(mean(x[r]²) + eps) (· weight when weight != NULL), for `rows`
 * vectors of `dim` values. out may equal x. */
dsv4_status dsv4_cpu_rmsnorm(float *out, const float *x, const float *weight, int rows, int dim,
                             float eps);

/* ---------------------------------------------------------------- mhc.c */

typedef struct dsv4_cpu_hc_dims {
    int hc;             /* hc_mult, streams per token (4) */
    int dim;            /* hidden_size D */
    int sinkhorn_iters; /* hc_sinkhorn_iters (20) */
    float hc_eps;       /* hc_eps (1e-6): added to pre, to comb, and in every Sinkhorn division */
    float norm_eps;     /* rms_norm_eps (1e-6): the unweighted RMSNorm over hc·D */
} dsv4_cpu_hc_dims;

/* One mHC site before its sublayer.
 *   X    [T, hc, D]           residual streams
 *   fn   [(2+hc)·hc, hc·D]    base [(2+hc)·hc]   scale [3]
 * Outputs: x [T, D] = Σ_j pre_j X_j (the sublayer input, before its weighted RMSNorm),
 *          post [T, hc], comb [T, hc, hc] (Sinkhorn-normalised, comb[t][i][j] row i col j). */
dsv4_status dsv4_cpu_hc_pre(const dsv4_cpu_hc_dims *d, int T, const float *X, const float *fn,
                            const float *base, const float *scale, float *x, float *post,
                            float *comb);

/* The Sinkhorn part of hc_pre on one hc×hc matrix of logits (already scaled + based):
 * row softmax, + eps, column-normalise, then (iters−1)× row then column. In place. */
void dsv4_cpu_hc_sinkhorn(float *c, int hc, int iters, float eps);

/* How hc_post treats post and comb. HF casts both to the activation dtype (bf16) before
 * merging the streams (DeepseekV4DecoderLayer: post.to(dtype), comb.to(dtype));
 * DeepSeek's reference merges with the fp32 values. */
typedef enum dsv4_cpu_hc_merge {
    DSV4_CPU_HC_MERGE_BF16_WEIGHTS = 0, /* HF: post and comb rounded to bf16 first (default) */
    DSV4_CPU_HC_MERGE_FP32 = 1          /* reference: fp32 post and comb */
} dsv4_cpu_hc_merge;

/* X_out[t][k] = post[t][k] · y[t] + Σ_j comb[t][j][k] · X[t][j]  (comb used transposed).
 * Arithmetic is fp32 either way; `merge` only decides whether post/comb are rounded.
 * X_out may not alias X. */
dsv4_status dsv4_cpu_hc_post(const dsv4_cpu_hc_dims *d, int T, const float *X, const float *y,
                             const float *post, const float *comb, dsv4_cpu_hc_merge merge,
                             float *X_out);

/* Final collapse: pre = sigmoid((RMSNorm(flatten X) · fnᵀ)·scale[0] + base) + hc_eps,
 * h[t] = Σ_j pre_j X_j.  fn [hc, hc·D], base [hc], scale [1]. h [T, D]. */
dsv4_status dsv4_cpu_hc_head(const dsv4_cpu_hc_dims *d, int T, const float *X, const float *fn,
                             const float *base, const float *scale, float *h);

/* ---------------------------------------------------------------- rope.c */

typedef struct dsv4_cpu_rope_cfg {
    int rope_dim;    /* R: the trailing R dims of a vector rotate (64) */
    double theta;    /* base: rope_theta (10000) or compress_rope_theta (160000) */
    /* YaRN (compress layers only); yarn_factor <= 1 disables it. */
    double yarn_factor;   /* 16 */
    double yarn_orig_max; /* original_max_position_embeddings, 65536 */
    double beta_fast;     /* 32 */
    double beta_slow;     /* 1 */
} dsv4_cpu_rope_cfg;

/* inv_freq[R/2]: θ_i = theta^(−2i/R), blended with θ_i/factor by HF's YaRN ramp.
 * No mscale: HF forces attention_factor = 1 for V4. */
dsv4_status dsv4_cpu_rope_inv_freq(const dsv4_cpu_rope_cfg *cfg, float *inv_freq);

/* Interleaved RoPE on the trailing rope_dim of each of the n_vec vectors of `width` values
 * of token t (x is [T, n_vec, width]) at angle pos[t]·inv_freq[i]:
 *   (a, b) → (a·cos − b·sin, b·cos + a·sin)   pairs (2i, 2i+1) of the rope slice.
 * inverse != 0 rotates by the negative angle (HF: cos, −sin). In place. */
dsv4_status dsv4_cpu_rope(float *x, int T, int n_vec, int width, int rope_dim, const int *pos,
                          const float *inv_freq, int inverse);

/* ---------------------------------------------------------------- attention.c */

typedef struct dsv4_cpu_attn_dims {
    int n_heads;  /* H */
    int head_dim; /* Dh (512); K = V = one latent row of Dh values */
    int rope_dim; /* R: trailing dims that get the inverse rotation on the output */
    int window;   /* sliding_window (128): raw row at position p visible iff t−window < p <= t */
} dsv4_cpu_attn_dims;

/* Core attention with sinks for T queries.
 *   q       [T, H, Dh]  already normed and roped; q_pos [T] its positions
 *   kv      [n_kv, Dh]  raw (window) rows with positions kv_pos [n_kv]; a row is a candidate
 *                       for query t iff q_pos[t] − window < kv_pos[j] <= q_pos[t]
 *   ckv     [n_c, Dh]   compressed entries (n_c may be 0, ckv NULL); entry w covers window w of
 *                       `ratio` tokens, visible to query t iff w < (q_pos[t] + 1) / ratio
 *   c_idx   NULL: every visible compressed entry is a candidate (HCA);
 *           else [T, c_k]: the indexer's picks for each query (CSA); −1 means "none", any
 *           other value must be a visible entry, else DSV4_ERR_RANGE
 *   sinks   [H]  one logit per head that joins the softmax normaliser only
 *   inv_freq [R/2]  the layer's table, for the inverse rotation of o at q_pos
 * o [T, H, Dh] = Σ_j softmax_j(q·kv_j·Dh^-0.5 ; sink) · kv_j, then inverse RoPE. */
dsv4_status dsv4_cpu_attention(const dsv4_cpu_attn_dims *d, int T, const float *q,
                               const int *q_pos, const float *kv, const int *kv_pos, int n_kv,
                               const float *ckv, int n_c, int ratio, const int *c_idx, int c_k,
                               const float *sinks, const float *inv_freq, float *o);

/* ---------------------------------------------------------------- oproj.c */

typedef struct dsv4_cpu_oproj_dims {
    int n_heads, head_dim; /* H, Dh */
    int groups;            /* o_groups g: group i holds heads i·H/g .. (i+1)·H/g − 1 */
    int lora_rank;         /* o_lora_rank */
    int hidden;            /* D */
} dsv4_cpu_oproj_dims;

/* out[T, D] = concat_i(wo_a[i] · o_i) · wo_bᵀ with wo_a [g·lora_rank, H·Dh/g] viewed as
 * [g, lora_rank, H·Dh/g] and wo_b [D, g·lora_rank]. */
dsv4_status dsv4_cpu_grouped_oproj(const dsv4_cpu_oproj_dims *d, int T, const float *o, const dsv4_weight *wo_a,
                                   const dsv4_weight *wo_b, dsv4_numerics mode, float *out);

/* ---------------------------------------------------------------- compressor.c */

typedef struct dsv4_cpu_compress_dims {
    int ratio;    /* m: 4 (CSA and the indexer's keys) or 128 (HCA) */
    int head_dim; /* width of one entry: Dh, or index_head_dim for the indexer */
    int overlap;  /* 1: CSA scheme (projections are 2·head_dim wide, a | b halves,
                     entry w pools a-halves of window w−1 and b-halves of window w);
                     0: HCA scheme (projections head_dim wide, one window) */
    int rope_dim; /* trailing dims rotated at position w·m */
    float eps;    /* rms_norm_eps of the entry's RMSNorm */
} dsv4_cpu_compress_dims;

/* Width of one token's kv/gate projection: (1 + overlap) · head_dim. */
int dsv4_cpu_compress_width(const dsv4_cpu_compress_dims *d);

/* The parameters of one compressor. */
typedef struct dsv4_cpu_compress_params {
    const float *ape;      /* [m, width] added to the gate by position within the window */
    const float *norm_w;   /* [head_dim] RMSNorm weight */
    const float *inv_freq; /* [rope_dim/2] the compress rope table */
} dsv4_cpu_compress_params;

/* Prefill: tokens at positions p0 .. p0+T−1 (p0 a multiple of m) with projections
 * kv, gate [T, width]; emits the T/m complete windows into out [T/m, head_dim] (entry i is
 * window p0/m + i, roped at position p0 + i·m) and sets *n_out. Trailing tokens of an
 * incomplete window are ignored. CSA only: prev_kv/prev_gate [m, head_dim] are the a-halves
 * of the window before p0 (gate with ape already added), NULL when there is none (p0 = 0):
 * those slots then get softmax weight 0. */
dsv4_status dsv4_cpu_compress_prefill(const dsv4_cpu_compress_dims *d,
                                      const dsv4_cpu_compress_params *p, int p0, int T,
                                      const float *kv, const float *gate, const float *prev_kv,
                                      const float *prev_gate, float *out, int *n_out);

/* Streaming state: what decode keeps between calls (spec "Decode state per layer"). */
typedef struct dsv4_cpu_compress_state {
    dsv4_cpu_compress_dims dims;
    int next_pos;    /* absolute position of the next token to be fed */
    int n_buf;       /* tokens of the open window held in buf_* (< m between calls) */
    float *buf_kv;   /* [m, width] projections of the open window */
    float *buf_gate; /* [m, width] gates of the open window, ape already added */
    int have_prev;   /* CSA: 1 once a window has closed */
    float *prev_kv;  /* CSA: [m, head_dim] a-halves of the last closed window */
    float *prev_gate;
} dsv4_cpu_compress_state;

/* Starts an empty state at position p0 (a multiple of m). Free with _free. */
dsv4_status dsv4_cpu_compress_state_init(dsv4_cpu_compress_state *s,
                                         const dsv4_cpu_compress_dims *d, int p0);
void dsv4_cpu_compress_state_free(dsv4_cpu_compress_state *s);

/* Feeds T tokens (any T >= 0); every window that completes is emitted to out, at most
 * max_out entries [.., head_dim] (DSV4_ERR_SHAPE if more would be emitted, state unchanged).
 * Feeding a sequence in any chunking gives entries bit-identical to one prefill call. */
dsv4_status dsv4_cpu_compress_feed(dsv4_cpu_compress_state *s, const dsv4_cpu_compress_params *p,
                                   int T, const float *kv, const float *gate, float *out,
                                   int max_out, int *n_out);

/* ---------------------------------------------------------------- indexer.c */

typedef struct dsv4_cpu_indexer_dims {
    int n_heads;  /* index_n_heads (64) */
    int head_dim; /* index_head_dim Di (128) */
    int topk;     /* index_topk (512) */
    int ratio;    /* m of the CSA layer (4): entry w visible to t iff w < (t+1)/m */
} dsv4_cpu_indexer_dims;

/* scores [T, n_c]: I(t,s) = Σ_h (w_raw[t,h] · n_heads^-0.5) · (ReLU(q[t,h] · keys[s]) · Di^-0.5),
 * −INFINITY where s is not visible to q_pos[t].
 *   q [T, n_heads, Di] (roped), w_raw [T, n_heads] = x · weights_projᵀ (unscaled),
 *   keys [n_c, Di] (the indexer compressor's entries). */
dsv4_status dsv4_cpu_indexer_scores(const dsv4_cpu_indexer_dims *d, int T, const float *q,
                                    const float *w_raw, const int *q_pos, const float *keys,
                                    int n_c, float *scores);

/* idx [T, topk]: for each query the k = min(topk, visible) visible entries of highest score,
 * in descending score order, ties to the lower index; slots k..topk−1 are −1. */
dsv4_status dsv4_cpu_indexer_topk(const dsv4_cpu_indexer_dims *d, int T, const float *scores,
                                  const int *q_pos, int n_c, int *idx);

/* ---------------------------------------------------------------- router.c */

typedef enum dsv4_cpu_score_func {
    DSV4_CPU_SCORE_SQRTSOFTPLUS = 0, /* sqrt(softplus(l)) (V4) */
    DSV4_CPU_SCORE_SIGMOID = 1,
    DSV4_CPU_SCORE_SOFTMAX = 2 /* softmax over the E logits */
} dsv4_cpu_score_func;

typedef struct dsv4_cpu_router_cfg {
    int n_experts;             /* E */
    int topk;                  /* num_experts_per_tok k */
    dsv4_cpu_score_func score; /* scoring_func */
    int normalize;             /* norm_topk_prob: weights /= (Σ weights + 1e-20) */
    float scaling;             /* routed_scaling_factor */
} dsv4_cpu_router_cfg;

/* log(1 + e^x) without overflow or cancellation: max(x,0) + log1p(e^−|x|). */
float dsv4_cpu_softplus(float x);

/* From router logits [T, E] choose k experts per token into idx [T, k] and their weights
 * [T, k] (taken from the scores, never score + bias).
 *   tid2eid == NULL: top-k of score + bias (bias [E] or NULL), descending, ties to the
 *                    lowest expert id.
 *   tid2eid != NULL: hash routing, idx[t] = tid2eid[token_ids[t]] ([vocab, k]); the same
 *                    expert may appear twice. */
dsv4_status dsv4_cpu_router(const dsv4_cpu_router_cfg *cfg, int T, const float *logits,
                            const float *bias, const int32_t *tid2eid, const int32_t *token_ids,
                            int vocab, int *idx, float *weights);

/* ---------------------------------------------------------------- moe.c */

typedef struct dsv4_cpu_expert {
    const dsv4_weight *w1; /* gate [I, D] */
    const dsv4_weight *w3; /* up   [I, D] */
    const dsv4_weight *w2; /* down [D, I] */
} dsv4_cpu_expert;

/* y [T, D] = (SiLU(min(x·w1ᵀ, limit)) ⊙ clamp(x·w3ᵀ, −limit, limit)) · w2ᵀ, every product
 * through dsv4_cpu_linear in `mode`. */
dsv4_status dsv4_cpu_swiglu(const dsv4_cpu_expert *e, int T, int D, const float *x, float limit,
                            dsv4_numerics mode, float *y);

/* out [T, D] = Σ_slots weight · y_e (HF order: weight multiplies the expert's output after
 * down_proj; experts visited in ascending id) + shared(x) (shared may be NULL).
 * experts [E]: entries never routed to may have NULL weights. idx/weights [T, k]. */
dsv4_status dsv4_cpu_moe(const dsv4_cpu_expert *experts, int E, const dsv4_cpu_expert *shared, int T, int D,
                         int k, const float *x, const int *idx, const float *weights, float limit,
                         dsv4_numerics mode, float *out);

#endif
