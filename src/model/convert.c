/* `dsv4 convert`: rewrite a checkpoint with its linears in NVFP4 (ModelOpt layout), keeping
 * everything else as it is. MXFP4 experts convert exactly (the payload is kept, the ue8m0
 * scales become e4m3 under a power-of-two global scale); FP8/BF16/F32 linears are quantized
 * from their exact fp32 values (lossy, as any 4-bit quantization). Output uses DeepSeek's
 * native names, sharded with an index, and is written shard by shard so that memory holds
 * at most one shard of converted tensors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/files.h"
#include "base/status.h"
#include "format/quant.h"
#include "model/model.h"
#include "model/names.h"

/* The linears a conversion may touch. The router gate, the compressors' projections and the
 * indexer's head weights stay as stored: they are small and the spec keeps them in BF16. */
static int is_expert(const char *module) { return strstr(module, ".ffn.experts.") != NULL; }
static int is_dense_target(const char *module) {
    return !is_expert(module) && !strstr(module, ".ffn.gate") && !strstr(module, ".compressor.") &&
           !strstr(module, ".indexer.weights_proj");
}

typedef struct converter {
    const dsv4_convert_options *o;
    const char *dir;
    dsv4_st_writer *w;   /* the shard being filled */
    void **bufs;         /* converted payloads of that shard */
    int n_bufs, cap_bufs;
    int shard;           /* shards written so far */
    cJSON *weight_map;   /* tensor name -> temporary shard name */
    size_t total_bytes;
    FILE *progress;
} converter;

static dsv4_status keep_buffer(converter *c, void *p) {
    if (c->n_bufs == c->cap_bufs) {
        int cap = c->cap_bufs ? 2 * c->cap_bufs : 64;
        void **nb = realloc(c->bufs, sizeof *nb * (size_t)cap);
        if (!nb) { free(p); return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert: out of memory"); }
        c->bufs = nb;
        c->cap_bufs = cap;
    }
    c->bufs[c->n_bufs++] = p;
    return DSV4_OK;
}

static void shard_name(char *buf, size_t cap, int i) { snprintf(buf, cap, "model-%05d.safetensors", i + 1); }

/* Writes the shard being filled (if any) and starts a new one. */
static dsv4_status flush_shard(converter *c) {
    dsv4_status st = DSV4_OK;
    if (c->w && dsv4_st_writer_bytes(c->w) > 0) {
        char name[64], path[4096];
        shard_name(name, sizeof name, c->shard);
        snprintf(path, sizeof path, "%s/%s", c->dir, name);
        st = dsv4_st_writer_set_metadata(c->w, "format", "pt");
        if (st == DSV4_OK) st = dsv4_st_writer_write(c->w, path);
        if (st == DSV4_OK && c->progress)
            fprintf(c->progress, "wrote %s (%.1f MB)\n", path, dsv4_st_writer_bytes(c->w) / 1e6);
        c->shard++;
    }
    dsv4_st_writer_free(c->w);
    c->w = NULL;
    for (int i = 0; i < c->n_bufs; i++) free(c->bufs[i]);
    c->n_bufs = 0;
    if (st != DSV4_OK) return st;
    c->w = dsv4_st_writer_new();
    return c->w ? DSV4_OK : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert: out of memory");
}

/* Starts a new shard when `nbytes` more would overflow this one. Called before the buffers of
 * a converted linear exist: a flush frees the shard's buffers. */
static dsv4_status make_room(converter *c, size_t nbytes) {
    if (dsv4_st_writer_bytes(c->w) > 0 && dsv4_st_writer_bytes(c->w) + nbytes > c->o->shard_bytes)
        return flush_shard(c);
    return DSV4_OK;
}

static dsv4_status add_tensor(converter *c, const char *name, dsv4_dtype dt, int ndim, const int64_t *shape,
                              const void *data, size_t nbytes) {
    DSV4_TRY(dsv4_st_writer_add(c->w, name, dt, ndim, shape, data, nbytes));
    char shard[64];
    shard_name(shard, sizeof shard, c->shard);
    cJSON *s = cJSON_CreateString(shard);
    if (!s || !cJSON_AddItemToObject(c->weight_map, name, s)) {
        cJSON_Delete(s);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert: out of memory");
    }
    c->total_bytes += nbytes;
    return DSV4_OK;
}

/* module -> NVFP4 tensors module.weight / .weight_scale / .weight_scale_2 (+ .input_scale). */
static dsv4_status convert_linear(converter *c, const char *module, const dsv4_weight *w) {
    const int64_t R = w->rows, K = w->cols;
    const size_t n = (size_t)(R * K);
    DSV4_TRY(make_room(c, n / 2 + n / 16 + 8));
    uint8_t *q = malloc(n / 2), *s = malloc(n / 16);
    float *g = malloc(2 * sizeof(float));
    dsv4_status st = (q && s && g) ? DSV4_OK : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert %s: out of memory", module);
    if (st == DSV4_OK && w->format == DSV4_WF_MXFP4) {
        st = dsv4_mxfp4_to_nvfp4(w->data, w->scale, R, K, q, s, &g[0], module);
        if (st == DSV4_ERR_NOT_REPRESENTABLE && c->o->lossy_mxfp4) st = DSV4_ERR_INTERNAL; /* quantize below */
    } else if (st == DSV4_OK) {
        st = DSV4_ERR_INTERNAL; /* quantize below */
    }
    if (st == DSV4_ERR_INTERNAL) {
        float *x = malloc(n * sizeof *x);
        st = x ? dsv4_weight_dequantize(w, x) : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert %s: out of memory", module);
        if (st == DSV4_OK) {
            g[0] = dsv4_nvfp4_global_scale(x, n);
            if (g[0] == 0.0f) g[0] = 1.0f; /* an all-zero weight: any scale holds it */
            st = dsv4_nvfp4_quantize(x, R, K, g[0], q, s, module);
        }
        free(x);
    }
    int have_input_scale = w->format == DSV4_WF_NVFP4 && w->input_scale > 0.0f;
    g[1] = w->input_scale;
    /* the shard keeps the buffers alive until it is written */
    if (st == DSV4_OK) st = keep_buffer(c, q), q = NULL;
    if (st == DSV4_OK) st = keep_buffer(c, s), s = NULL;
    if (st == DSV4_OK) st = keep_buffer(c, g);
    else free(g);
    free(q);
    free(s);
    if (st != DSV4_OK) return st;
    float *gp = c->bufs[c->n_bufs - 1];
    uint8_t *qp = c->bufs[c->n_bufs - 3], *sp = c->bufs[c->n_bufs - 2];
    char name[160];
    snprintf(name, sizeof name, "%s.weight", module);
    DSV4_TRY(add_tensor(c, name, DSV4_DT_U8, 2, (int64_t[]){R, K / 2}, qp, n / 2));
    snprintf(name, sizeof name, "%s.weight_scale", module);
    DSV4_TRY(add_tensor(c, name, DSV4_DT_F8_E4M3, 2, (int64_t[]){R, K / 16}, sp, n / 16));
    snprintf(name, sizeof name, "%s.weight_scale_2", module);
    DSV4_TRY(add_tensor(c, name, DSV4_DT_F32, 0, NULL, &gp[0], 4));
    if (have_input_scale) {
        snprintf(name, sizeof name, "%s.input_scale", module);
        DSV4_TRY(add_tensor(c, name, DSV4_DT_F32, 0, NULL, &gp[1], 4));
    }
    return DSV4_OK;
}

static int wants_nvfp4(const dsv4_convert_options *o, const dsv4_named_weight *nw) {
    if (nw->w->format == DSV4_WF_NVFP4 || nw->w->cols % 16) return 0; /* already there / cannot be */
    return is_expert(nw->module) ? o->experts : (o->dense && is_dense_target(nw->module));
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

/* Whether a checkpoint tensor (canonical name) is part of a linear being converted: its name
 * is a converted module plus one of the linear suffixes. `modules` is sorted (bsearch: real
 * checkpoints have ~70k tensors and ~30k linears). */
static int part_of_converted(const dsv4_convert_options *o, const char *canon, const char **modules, int n_modules) {
    static const char *const suffixes[] = {".weight", ".scale", ".weight_scale", ".weight_scale_2", ".input_scale"};
    if (o->experts && (strstr(canon, ".ffn.experts.gate_up_proj") || strstr(canon, ".ffn.experts.down_proj")))
        return 1; /* stacked experts become per-expert NVFP4 tensors */
    size_t len = strlen(canon);
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        size_t ls = strlen(suffixes[k]);
        if (len <= ls || len - ls >= 160 || strcmp(canon + len - ls, suffixes[k])) continue;
        char module[160];
        memcpy(module, canon, len - ls);
        module[len - ls] = '\0';
        const char *key = module;
        if (bsearch(&key, modules, (size_t)n_modules, sizeof *modules, cmp_str)) return 1;
    }
    return 0;
}

static dsv4_status write_index(converter *c) {
    /* rename model-0000i.safetensors to the usual model-0000i-of-0000n names */
    char from[4096], to[4096], tmp[64], fin[64];
    for (int i = 0; i < c->shard; i++) {
        shard_name(tmp, sizeof tmp, i);
        snprintf(fin, sizeof fin, "model-%05d-of-%05d.safetensors", i + 1, c->shard);
        snprintf(from, sizeof from, "%s/%s", c->dir, tmp);
        snprintf(to, sizeof to, "%s/%s", c->dir, fin);
        if (rename(from, to) != 0) return dsv4_fail(DSV4_ERR_IO, "%s: cannot rename to %s", from, to);
    }
    for (cJSON *it = c->weight_map->child; it; it = it->next) {
        int idx = atoi(it->valuestring + 6) - 1; /* "model-0000i..." */
        snprintf(fin, sizeof fin, "model-%05d-of-%05d.safetensors", idx + 1, c->shard);
        cJSON_SetValuestring(it, fin);
    }
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_CreateObject();
    dsv4_status st = DSV4_OK;
    if (!root || !meta || !cJSON_AddNumberToObject(meta, "total_size", (double)c->total_bytes) ||
        !cJSON_AddItemToObject(root, "metadata", meta)) {
        cJSON_Delete(meta);
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert: out of memory");
    } else if (!cJSON_AddItemReferenceToObject(root, "weight_map", c->weight_map)) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert: out of memory");
    }
    char *text = st == DSV4_OK ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (st == DSV4_OK && !text) st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert: out of memory");
    if (st == DSV4_OK) {
        snprintf(to, sizeof to, "%s/model.safetensors.index.json", c->dir);
        st = dsv4_write_text_file(to, text);
    }
    free(text);
    return st;
}

static dsv4_status write_config(const dsv4_model *m, const dsv4_convert_options *o, const char *dir) {
    dsv4_config cfg = m->cfg; /* shallow: the exclude list is not touched */
    cfg.quant.n_exclude = 0;
    cfg.quant.exclude = NULL;
    if (o->experts) {
        snprintf(cfg.quant.moe_algo, sizeof cfg.quant.moe_algo, "NVFP4");
        cfg.quant.expert_dtype[0] = '\0';
        cfg.quant.group_size = 16;
        if (cfg.quant.method != DSV4_QUANT_NVFP4) cfg.quant.method = DSV4_QUANT_MIXED;
        if (!cfg.quant.fp8_block[0]) cfg.quant.fp8_block[0] = cfg.quant.fp8_block[1] = 128;
    }
    return dsv4_config_write(&cfg, dir);
}

dsv4_status dsv4_convert(const char *src, const char *dst, const dsv4_convert_options *o, void *progress) {
    if (!src || !dst || !o) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "convert: NULL argument");
    DSV4_TRY(dsv4_ensure_dir(dst));
    dsv4_model *m;
    DSV4_TRY(dsv4_model_open(src, &m));
    dsv4_convert_options opt = *o;
    if (!opt.shard_bytes) opt.shard_bytes = (size_t)4 << 30;
    converter c = {.o = &opt, .dir = dst, .weight_map = cJSON_CreateObject(), .progress = progress};
    unsigned char *converted = calloc((size_t)m->w.n_linears + 1, 1);
    const char **modules = calloc((size_t)m->w.n_linears + 1, sizeof *modules);
    int n_modules = 0;
    dsv4_status st = (c.weight_map && converted && modules) ? flush_shard(&c)
                                                            : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "convert: out of memory");
    for (int i = 0; st == DSV4_OK && i < m->w.n_linears; i++) {
        converted[i] = (unsigned char)wants_nvfp4(&opt, &m->w.linears[i]);
        if (converted[i]) modules[n_modules++] = m->w.linears[i].module;
    }
    qsort(modules, (size_t)n_modules, sizeof *modules, cmp_str);
    /* every tensor that is not part of a converted linear, under its native name */
    for (int i = 0; st == DSV4_OK && i < dsv4_ckpt_count(m->ckpt); i++) {
        const dsv4_tensor_view *t = dsv4_ckpt_tensor(m->ckpt, i);
        char canon[512];
        if (dsv4_canonical_name(t->name, canon, sizeof canon)) st = dsv4_fail(DSV4_ERR_SHAPE, "%s: name too long", t->name);
        else if (!part_of_converted(&opt, canon, modules, n_modules) && (st = make_room(&c, t->nbytes)) == DSV4_OK)
            st = add_tensor(&c, canon, t->dtype, t->ndim, t->shape, t->data, t->nbytes);
    }
    for (int i = 0; st == DSV4_OK && i < m->w.n_linears; i++)
        if (converted[i]) st = convert_linear(&c, m->w.linears[i].module, m->w.linears[i].w);
    if (st == DSV4_OK) st = flush_shard(&c);
    if (st == DSV4_OK) st = write_index(&c);
    if (st == DSV4_OK) st = write_config(m, &opt, dst);
    dsv4_st_writer_free(c.w);
    for (int i = 0; i < c.n_bufs; i++) free(c.bufs[i]);
    free(c.bufs);
    cJSON_Delete(c.weight_map);
    free(converted);
    free(modules);
    dsv4_model_close(m);
    return st;
}
