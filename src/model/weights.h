/* The internal weight table: every tensor the forward pass uses, bound to its bytes in the
 * memory-mapped checkpoint, its storage format detected and its dtype/shape checked against
 * the config. Built once by dsv4_weights_bind; nothing is copied. */
#ifndef DSV4_MODEL_WEIGHTS_H
#define DSV4_MODEL_WEIGHTS_H

#include <stdio.h>

#include "format/safetensors.h"
#include "format/weight.h"
#include "model/config.h"

typedef struct dsv4_compressor_weights {
    dsv4_weight wkv, wgate;            /* [coff*width, D] */
    const dsv4_tensor_view *ape, *norm; /* [m, coff*width], [width] */
} dsv4_compressor_weights;

typedef struct dsv4_layer_weights {
    dsv4_attn_type attn_type;
    dsv4_mlp_type mlp_type;
    int compress_rate; /* 0 for sliding layers */
    /* norms and hyper-connections */
    const dsv4_tensor_view *attn_norm, *ffn_norm;
    const dsv4_tensor_view *hc_attn_fn, *hc_attn_base, *hc_attn_scale;
    const dsv4_tensor_view *hc_ffn_fn, *hc_ffn_base, *hc_ffn_scale;
    /* attention */
    dsv4_weight wq_a, wq_b, wkv, wo_a, wo_b;
    const dsv4_tensor_view *q_norm, *kv_norm, *attn_sink;
    dsv4_compressor_weights compressor;       /* CSA and HCA */
    dsv4_weight index_wq_b, index_weights_proj; /* CSA */
    dsv4_compressor_weights index_compressor; /* CSA */
    /* MoE */
    dsv4_weight gate;
    const dsv4_tensor_view *gate_bias; /* moe layers */
    const dsv4_tensor_view *tid2eid;   /* hash_moe layers: [vocab, k] int32/int64 */
    dsv4_weight *w1, *w2, *w3;         /* [n_routed_experts] each */
    dsv4_weight shared_w1, shared_w2, shared_w3;
    /* MTP block only */
    dsv4_weight e_proj, h_proj;
    const dsv4_tensor_view *enorm, *hnorm, *mtp_norm;
    const dsv4_tensor_view *hc_head_fn, *hc_head_base, *hc_head_scale;
} dsv4_layer_weights;

/* A bound linear and its canonical module name (the tensor name without ".weight"). */
typedef struct dsv4_named_weight {
    char module[96];
    const dsv4_weight *w;
} dsv4_named_weight;

/* One problem found while binding (all are collected so that inspect can list them). */
typedef struct dsv4_weight_problem {
    dsv4_status status;
    char message[512];
} dsv4_weight_problem;

typedef struct dsv4_weights {
    const dsv4_tensor_view *embed, *head, *norm, *hc_head_fn, *hc_head_base, *hc_head_scale;
    int n_layers;
    dsv4_layer_weights *layers; /* [n_layers] */
    int has_mtp;
    dsv4_layer_weights mtp;     /* mtp.0, valid when has_mtp */
    /* bookkeeping */
    int n_tensors, n_used;      /* checkpoint tensors, and those bound to a slot */
    int n_unused;
    const char **unused;        /* names of the indexed tensors bound to no slot */
    size_t format_count[DSV4_WF_COUNT], format_bytes[DSV4_WF_COUNT];
    size_t total_bytes;         /* all tensor bytes in the checkpoint */
    int n_linears, cap_linears;
    dsv4_named_weight *linears; /* every bound linear, in binding order */
    int n_problems;
    dsv4_weight_problem *problems;
} dsv4_weights;

/* Binds every tensor. Strict mode returns the first problem's status (and message);
 * lenient mode records problems in w->problems and returns DSV4_OK unless binding could not
 * proceed at all (out of memory). */
dsv4_status dsv4_weights_bind(const dsv4_config *cfg, const dsv4_checkpoint *ck, int lenient,
                              dsv4_weights *w);
void dsv4_weights_free(dsv4_weights *w);


#endif
