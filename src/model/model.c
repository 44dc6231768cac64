/* Opening a checkpoint directory and describing it (`dsv4 inspect`). */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

#include "base/status.h"

dsv4_status dsv4_model_open_ex(const char *dir, int lenient, dsv4_model **out) {
    if (!out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_model_open: NULL output pointer");
    *out = NULL;
    if (!dir) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_model_open: no directory given");
    dsv4_model *m = calloc(1, sizeof *m);
    if (!m || !(m->dir = strdup(dir))) {
        free(m);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    }
    dsv4_status st = dsv4_config_load(dir, &m->cfg);
    if (st == DSV4_OK) st = dsv4_ckpt_open(dir, &m->ckpt);
    if (st == DSV4_OK) {
        st = dsv4_weights_bind(&m->cfg, m->ckpt, lenient, &m->w);
        /* missing tensors have no file to name: name the checkpoint */
        if (st != DSV4_OK) dsv4_fail_context(st, "checkpoint %s", dir);
    }
    if (st != DSV4_OK) {
        dsv4_model_close(m);
        return st;
    }
    *out = m;
    return DSV4_OK;
}

dsv4_status dsv4_model_open(const char *dir, dsv4_model **out) { return dsv4_model_open_ex(dir, 0, out); }

void dsv4_model_close(dsv4_model *m) {
    if (!m) return;
    dsv4_weights_free(&m->w);
    dsv4_ckpt_close(m->ckpt);
    dsv4_config_free(&m->cfg);
    free(m->dir);
    free(m);
}

static void human_bytes(char *buf, size_t cap, double b) {
    const char *unit[] = {"B", "KB", "MB", "GB", "TB"};
    int u = 0;
    while (b >= 1000 && u < 4) { b /= 1000; u++; }
    snprintf(buf, cap, u ? "%.2f %s" : "%.0f %s", b, unit[u]);
}

static const char *attn_name(dsv4_attn_type t) {
    return t == DSV4_ATTN_CSA ? "CSA" : t == DSV4_ATTN_HCA ? "HCA" : "sliding";
}

static const char *quant_name(dsv4_quant_method q) {
    switch (q) {
    case DSV4_QUANT_FP8_BLOCK: return "FP8 block";
    case DSV4_QUANT_NVFP4: return "NVFP4";
    case DSV4_QUANT_MIXED: return "mixed precision";
    default: return "none";
    }
}

/* The formats a layer's weights are stored in, e.g. "attn FP8-B128, experts NVFP4". */
static void layer_formats(const dsv4_layer_weights *L, int E, char *buf, size_t cap) {
    const char *fa = L->wq_a.src ? dsv4_wformat_name(L->wq_a.format) : "?";
    const char *fe = (L->w1 && E > 0 && L->w1[0].src) ? dsv4_wformat_name(L->w1[0].format) : "?";
    const char *fs = L->shared_w1.src ? dsv4_wformat_name(L->shared_w1.format) : "-";
    snprintf(buf, cap, "attn %s, experts %s, shared %s", fa, fe, fs);
}

void dsv4_model_print(const dsv4_model *m, FILE *f) {
    const dsv4_config *c = &m->cfg;
    const dsv4_weights *w = &m->w;
    char b1[32], b2[32];
    int n_type[3] = {0, 0, 0}, n_hash = 0;
    for (int l = 0; l < c->num_hidden_layers; l++) {
        n_type[c->layer_types[l]]++;
        n_hash += c->mlp_layer_types[l] == DSV4_MLP_HASH_MOE;
    }
    fprintf(f, "model     %s\n", m->dir);
    fprintf(f, "config    vocab %d, hidden %d, %d layers%s, %d heads x %d (rope %d), q_lora %d, "
               "output %d groups x %d\n",
            c->vocab_size, c->hidden_size, c->num_hidden_layers, w->has_mtp ? " + MTP" : "",
            c->num_attention_heads, c->head_dim, c->qk_rope_head_dim, c->q_lora_rank, c->o_groups, c->o_lora_rank);
    fprintf(f, "attention %d sliding, %d CSA (rate %d, indexer %d heads x %d, top-k %d), %d HCA (rate %d); "
               "window %d\n",
            n_type[DSV4_ATTN_SLIDING], n_type[DSV4_ATTN_CSA], c->compress_rate_csa, c->index_n_heads,
            c->index_head_dim, c->index_topk, n_type[DSV4_ATTN_HCA], c->compress_rate_hca, c->sliding_window);
    fprintf(f, "moe       %d experts top-%d + %d shared, intermediate %d, routed scale %g, swiglu limit %g, "
               "%d hash layers\n",
            c->n_routed_experts, c->num_experts_per_tok, c->n_shared_experts, c->moe_intermediate_size,
            c->routed_scaling_factor, c->swiglu_limit, n_hash);
    fprintf(f, "mhc       %d streams, %d Sinkhorn iterations, eps %g\n", c->hc_mult, c->hc_sinkhorn_iters, c->hc_eps);
    fprintf(f, "rope      main theta %g; compress theta %g", c->rope_theta, c->compress_rope_theta);
    if (c->yarn)
        fprintf(f, ", YaRN factor %g (original %lld, beta %g/%g)", c->yarn_factor,
                (long long)c->yarn_original_max_position, c->yarn_beta_fast, c->yarn_beta_slow);
    fprintf(f, "\nquant     %s", quant_name(c->quant.method));
    if (c->quant.moe_algo[0]) fprintf(f, ", experts %s", c->quant.moe_algo);
    if (c->quant.expert_dtype[0]) fprintf(f, ", expert dtype %s", c->quant.expert_dtype);
    fprintf(f, "\n\nlayer  attention  rate  mlp       formats\n");
    for (int l = 0; l < w->n_layers; l++) {
        const dsv4_layer_weights *L = &w->layers[l];
        char fm[128];
        layer_formats(L, c->n_routed_experts, fm, sizeof fm);
        fprintf(f, "%5d  %-9s  %4d  %-8s  %s\n", l, attn_name(L->attn_type), L->compress_rate,
                L->mlp_type == DSV4_MLP_HASH_MOE ? "hash_moe" : "moe", fm);
    }
    if (w->has_mtp) {
        char fm[128];
        layer_formats(&w->mtp, c->n_routed_experts, fm, sizeof fm);
        fprintf(f, "  MTP  %-9s  %4d  %-8s  %s\n", "sliding", 0, "moe", fm);
    }
    human_bytes(b1, sizeof b1, (double)w->total_bytes);
    fprintf(f, "\ntensors   %d in %d file(s), %s (%.3f GB)\n", w->n_tensors, dsv4_ckpt_file_count(m->ckpt), b1,
            w->total_bytes / 1e9);
    fprintf(f, "linears   format     count        bytes\n");
    for (int i = 0; i < DSV4_WF_COUNT; i++) {
        if (!w->format_count[i]) continue;
        human_bytes(b2, sizeof b2, (double)w->format_bytes[i]);
        fprintf(f, "          %-9s %6zu  %11s\n", dsv4_wformat_name((dsv4_wformat)i), w->format_count[i], b2);
    }
    int n_unused = w->n_unused;
    fprintf(f, "unused    %d tensor(s)%s\n", n_unused, n_unused ? ":" : "");
    for (int i = 0; i < n_unused && i < 20; i++) fprintf(f, "          %s\n", w->unused[i]);
    if (n_unused > 20) fprintf(f, "          ... and %d more\n", n_unused - 20);
    if (!w->n_problems) {
        fprintf(f, "problems  none\n");
        return;
    }
    fprintf(f, "problems  %d:\n", w->n_problems);
    int shown = w->n_problems < 256 ? w->n_problems : 256;
    for (int i = 0; i < shown; i++)
        fprintf(f, "          %s: %s\n", dsv4_status_name(w->problems[i].status), w->problems[i].message);
}

dsv4_status dsv4_model_inspect(const dsv4_model *m, void *f) {
    if (!m || !f) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_model_inspect: NULL argument");
    dsv4_model_print(m, (FILE *)f);
    return DSV4_OK;
}

dsv4_status dsv4_inspect_dir(const char *dir, void *f) {
    if (!f) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_inspect_dir: NULL FILE*");
    dsv4_model *m;
    DSV4_TRY(dsv4_model_open_ex(dir, 1, &m));
    dsv4_model_print(m, (FILE *)f);
    dsv4_status st = DSV4_OK;
    if (m->w.n_problems) {
        st = m->w.problems[0].status;
        dsv4_fail(st, "%s: %d problem(s), first: %s", dir, m->w.n_problems, m->w.problems[0].message);
    }
    dsv4_model_close(m);
    return st;
}
