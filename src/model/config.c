/* config.json / hf_quant_config.json -> dsv4_config. See config.h for the accepted forms,
 * which keys are required and what the defaults are. */
#include "model/config.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "base/files.h"
#include "base/status.h"

/* Sizes are capped well below INT_MAX so that downstream products of two or three of them
 * in int64 cannot overflow, and so that a typo such as 4096000000 is caught here. */
#define SIZE_MAX_DIM (1 << 24)
#define POS_MAX ((int64_t)1 << 40)
#define CFG_FILE_MAX (64u << 20)

static const char *const ATTN_NAMES[] = {"sliding_attention", "compressed_sparse_attention",
                                         "heavily_compressed_attention"};
static const char *const MLP_NAMES[] = {"moe", "hash_moe"};
static const char *const SCORE_NAMES[] = {"sqrtsoftplus", "sigmoid", "softmax"};

/* ---- messages and typed getters ------------------------------------------------------ */


static const char *json_kind(const cJSON *it) {
    if (cJSON_IsBool(it)) return "a boolean";
    if (cJSON_IsNumber(it)) return "a number";
    if (cJSON_IsString(it)) return "a string";
    if (cJSON_IsArray(it)) return "an array";
    if (cJSON_IsObject(it)) return "an object";
    return "null";
}

/* Looks up `key`; JSON null counts as absent (HF writes null for unset optional keys). */
static const cJSON *item(const cJSON *obj, const char *key) {
    const cJSON *it = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

static dsv4_status num_of(const char *label, const char *key, const cJSON *it, double *out) {
    if (!cJSON_IsNumber(it))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "expected a number, got %s", json_kind(it));
    if (!isfinite(it->valuedouble))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "must be finite");
    *out = it->valuedouble;
    return DSV4_OK;
}

static dsv4_status int_of(const char *label, const char *key, const cJSON *it, int64_t lo,
                          int64_t hi, int64_t *out) {
    double d;
    DSV4_TRY(num_of(label, key, it, &d));
    if (d != floor(d))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "expected an integer, got %.17g", d);
    if (d < (double)lo || d > (double)hi)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "must be in [%lld, %lld], got %.17g",
                       (long long)lo, (long long)hi, d);
    *out = (int64_t)d;
    return DSV4_OK;
}

/* Optional integer key: absent leaves *out untouched. `present` may be NULL. */
static dsv4_status opt_i64(const char *label, const cJSON *obj, const char *json_key,
                           const char *key, int64_t lo, int64_t hi, int64_t *out, int *present) {
    const cJSON *it = item(obj, json_key);
    if (present) *present = it != NULL;
    return it ? int_of(label, key, it, lo, hi, out) : DSV4_OK;
}

static dsv4_status opt_int(const char *label, const cJSON *obj, const char *key, int lo, int hi,
                           int *out, int *present) {
    int64_t v = *out;
    DSV4_TRY(opt_i64(label, obj, key, key, lo, hi, &v, present));
    *out = (int)v;
    return DSV4_OK;
}

static dsv4_status req_int(const char *label, const cJSON *obj, const char *key, int lo, int hi,
                           int *out) {
    int present;
    DSV4_TRY(opt_int(label, obj, key, lo, hi, out, &present));
    if (!present) return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "required key is missing");
    return DSV4_OK;
}

static dsv4_status opt_num(const char *label, const cJSON *obj, const char *json_key,
                           const char *key, double *out, int *present) {
    const cJSON *it = item(obj, json_key);
    if (present) *present = it != NULL;
    return it ? num_of(label, key, it, out) : DSV4_OK;
}

static dsv4_status opt_bool(const char *label, const cJSON *obj, const char *key, int *out) {
    const cJSON *it = item(obj, key);
    if (!it) return DSV4_OK;
    if (cJSON_IsBool(it)) {
        *out = cJSON_IsTrue(it) ? 1 : 0;
        return DSV4_OK;
    }
    int64_t v;
    if (!cJSON_IsNumber(it))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "expected a boolean, got %s", json_kind(it));
    DSV4_TRY(int_of(label, key, it, 0, 1, &v));
    *out = (int)v;
    return DSV4_OK;
}

static dsv4_status opt_str(const char *label, const cJSON *obj, const char *json_key,
                           const char *key, const char **out) {
    const cJSON *it = item(obj, json_key);
    *out = NULL;
    if (!it) return DSV4_OK;
    if (!cJSON_IsString(it))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "expected a string, got %s", json_kind(it));
    *out = it->valuestring;
    return DSV4_OK;
}

static dsv4_status opt_obj(const char *label, const cJSON *obj, const char *key,
                           const cJSON **out) {
    const cJSON *it = item(obj, key);
    *out = NULL;
    if (it && !cJSON_IsObject(it))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "expected an object, got %s", json_kind(it));
    *out = it;
    return DSV4_OK;
}

/* Index of `s` in names[n], or -1. */
static int name_index(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}

/* A value that may come from several keys (HF and legacy forms); all given must agree. */
typedef struct {
    int set;
    double v;
    char key[80]; /* copied: callers build indexed keys in reused buffers */
} source;

static dsv4_status agree(const char *label, source *s, const char *key, double v) {
    if (s->set && s->v != v)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "%.17g disagrees with %s = %.17g", v, s->key,
                       s->v);
    s->set = 1, s->v = v;
    snprintf(s->key, sizeof s->key, "%s", key);
    return DSV4_OK;
}

/* Integer key feeding a source. */
static dsv4_status src_int(const char *label, const cJSON *obj, const char *json_key,
                           const char *key, int64_t lo, int64_t hi, source *s) {
    int64_t v = 0;
    int present;
    DSV4_TRY(opt_i64(label, obj, json_key, key, lo, hi, &v, &present));
    return present ? agree(label, s, key, (double)v) : DSV4_OK;
}

static dsv4_status src_num(const char *label, const cJSON *obj, const char *json_key,
                           const char *key, source *s) {
    double v = 0;
    int present;
    DSV4_TRY(opt_num(label, obj, json_key, key, &v, &present));
    return present ? agree(label, s, key, v) : DSV4_OK;
}

/* ---- rope ---------------------------------------------------------------------------- */

typedef struct {
    int yarn;
    double factor, beta_fast, beta_slow;
    int64_t orig;
} rope_block;

/* A rope scaling block: legacy rope_scaling, flat rope_parameters or rope_parameters.compress.
 * Like HF, a missing type means "default" (no scaling); yarn fields default to V4-Flash. */
static dsv4_status parse_rope_block(const char *label, const char *name, const cJSON *blk,
                                    rope_block *rb) {
    char k[128];
    const char *type = NULL, *rope_type = NULL;
    *rb = (rope_block){0, 16.0, 32.0, 1.0, 65536};
    snprintf(k, sizeof k, "%s.type", name);
    DSV4_TRY(opt_str(label, blk, "type", k, &type));
    snprintf(k, sizeof k, "%s.rope_type", name);
    DSV4_TRY(opt_str(label, blk, "rope_type", k, &rope_type));
    if (type && rope_type && strcmp(type, rope_type) != 0)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, k, "'%s' disagrees with %s.type '%s'", rope_type,
                       name, type);
    if (!type) type = rope_type;
    else snprintf(k, sizeof k, "%s.type", name);
    if (!type || strcmp(type, "default") == 0) return DSV4_OK;
    if (strcmp(type, "yarn") != 0)
        return dsv4_config_fail(DSV4_ERR_UNSUPPORTED, label, k, "rope type '%s' is not supported (yarn or default)",
                       type);
    rb->yarn = 1;
    snprintf(k, sizeof k, "%s.factor", name);
    DSV4_TRY(opt_num(label, blk, "factor", k, &rb->factor, NULL));
    snprintf(k, sizeof k, "%s.beta_fast", name);
    DSV4_TRY(opt_num(label, blk, "beta_fast", k, &rb->beta_fast, NULL));
    snprintf(k, sizeof k, "%s.beta_slow", name);
    DSV4_TRY(opt_num(label, blk, "beta_slow", k, &rb->beta_slow, NULL));
    snprintf(k, sizeof k, "%s.original_max_position_embeddings", name);
    DSV4_TRY(opt_i64(label, blk, "original_max_position_embeddings", k, 1, POS_MAX, &rb->orig, NULL));
    /* The reference never multiplies cos/sin by YaRN's mscale; HF forces attention_factor 1. */
    double af = 1.0;
    snprintf(k, sizeof k, "%s.attention_factor", name);
    DSV4_TRY(opt_num(label, blk, "attention_factor", k, &af, NULL));
    if (af != 1.0)
        return dsv4_config_fail(DSV4_ERR_UNSUPPORTED, label, k, "only 1.0 is supported, got %.17g", af);
    return DSV4_OK;
}

/* rope_scaling, rope_parameters (flat or {main, compress}), rope thetas and the rope dim. */
static dsv4_status parse_rope(const char *label, const cJSON *root, dsv4_config *c) {
    source dim = {0}, theta = {0}, ctheta = {0};
    const cJSON *scaling, *params, *main_p = NULL, *comp_p = NULL;
    rope_block rb[2];
    const char *rb_name[2];
    int n_rb = 0;

    DSV4_TRY(src_int(label, root, "qk_rope_head_dim", "qk_rope_head_dim", 0, SIZE_MAX_DIM, &dim));
    DSV4_TRY(src_num(label, root, "rope_theta", "rope_theta", &theta));
    DSV4_TRY(src_num(label, root, "compress_rope_theta", "compress_rope_theta", &ctheta));
    DSV4_TRY(opt_obj(label, root, "rope_scaling", &scaling));
    DSV4_TRY(opt_obj(label, root, "rope_parameters", &params));
    if (scaling) {
        rb_name[n_rb] = "rope_scaling";
        DSV4_TRY(parse_rope_block(label, "rope_scaling", scaling, &rb[n_rb++]));
    }
    if (params) {
        DSV4_TRY(opt_obj(label, params, "main", &main_p));
        DSV4_TRY(opt_obj(label, params, "compress", &comp_p));
    }
    if (main_p || comp_p) {
        if (main_p) {
            rope_block mb;
            DSV4_TRY(parse_rope_block(label, "rope_parameters.main", main_p, &mb));
            if (mb.yarn)
                return dsv4_config_fail(DSV4_ERR_UNSUPPORTED, label, "rope_parameters.main.rope_type",
                               "sliding layers use plain rope; got yarn");
            DSV4_TRY(src_num(label, main_p, "rope_theta", "rope_parameters.main.rope_theta", &theta));
        }
        if (comp_p) {
            rb_name[n_rb] = "rope_parameters.compress";
            DSV4_TRY(parse_rope_block(label, "rope_parameters.compress", comp_p, &rb[n_rb++]));
            DSV4_TRY(src_num(label, comp_p, "rope_theta", "rope_parameters.compress.rope_theta",
                             &ctheta));
        }
    } else if (params) {
        /* Flat (pre-split) form: the yarn block itself; its rope_theta is the main one. */
        rb_name[n_rb] = "rope_parameters";
        DSV4_TRY(parse_rope_block(label, "rope_parameters", params, &rb[n_rb++]));
        DSV4_TRY(src_num(label, params, "rope_theta", "rope_parameters.rope_theta", &theta));
    }
    if (n_rb == 2 && (rb[0].yarn != rb[1].yarn || rb[0].factor != rb[1].factor ||
                      rb[0].beta_fast != rb[1].beta_fast || rb[0].beta_slow != rb[1].beta_slow ||
                      rb[0].orig != rb[1].orig))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, rb_name[1], "disagrees with %s", rb_name[0]);
    if (n_rb > 0) {
        c->yarn = rb[0].yarn;
        c->yarn_factor = rb[0].factor;
        c->yarn_beta_fast = rb[0].beta_fast;
        c->yarn_beta_slow = rb[0].beta_slow;
        c->yarn_original_max_position = rb[0].orig;
    }

    /* partial_rotary_factor (HF) is r / head_dim; every place it appears must give the same r. */
    const cJSON *holders[4] = {root, params, main_p, comp_p};
    const char *names[4] = {"partial_rotary_factor", "rope_parameters.partial_rotary_factor",
                            "rope_parameters.main.partial_rotary_factor",
                            "rope_parameters.compress.partial_rotary_factor"};
    for (int i = 0; i < 4; i++) {
        double f = 0;
        int present;
        if (!holders[i] || (i == 1 && (main_p || comp_p))) continue;
        DSV4_TRY(opt_num(label, holders[i], "partial_rotary_factor", names[i], &f, &present));
        if (!present) continue;
        double r = f * c->head_dim;
        if (!(f > 0 && f <= 1) || fabs(r - nearbyint(r)) > 1e-6)
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, names[i],
                           "%.17g x head_dim %d is not a whole rope dim in (0, head_dim]", f,
                           c->head_dim);
        DSV4_TRY(agree(label, &dim, names[i], nearbyint(r)));
    }
    if (dim.set) c->qk_rope_head_dim = (int)dim.v;
    if (theta.set) c->rope_theta = theta.v;
    if (ctheta.set) c->compress_rope_theta = ctheta.v;
    return DSV4_OK;
}

/* ---- per-layer schedule -------------------------------------------------------------- */

static dsv4_status parse_attn_schedule(const char *label, const cJSON *root, dsv4_config *c) {
    int n = c->num_hidden_layers;
    source csa = {0}, hca = {0};
    const cJSON *rates, *types, *ratios, *e;
    int have_types = 0;

    DSV4_TRY(opt_obj(label, root, "compress_rates", &rates));
    DSV4_TRY(src_int(label, rates, "compressed_sparse_attention",
                     "compress_rates.compressed_sparse_attention", 1, SIZE_MAX_DIM, &csa));
    DSV4_TRY(src_int(label, root, "compress_rate_csa", "compress_rate_csa", 1, SIZE_MAX_DIM, &csa));
    DSV4_TRY(src_int(label, rates, "heavily_compressed_attention",
                     "compress_rates.heavily_compressed_attention", 1, SIZE_MAX_DIM, &hca));
    DSV4_TRY(src_int(label, root, "compress_rate_hca", "compress_rate_hca", 1, SIZE_MAX_DIM, &hca));
    c->compress_rate_csa = csa.set ? (int)csa.v : 4;

    types = item(root, "layer_types");
    ratios = item(root, "compress_ratios");
    if (!types && !ratios)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, "layer_types",
                       "required key is missing (neither layer_types nor compress_ratios given)");
    if (types) {
        if (!cJSON_IsArray(types))
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "layer_types", "expected an array, got %s",
                           json_kind(types));
        int i = 0;
        cJSON_ArrayForEach(e, types) {
            if (i >= n) break; /* extra entries (MTP) are not main blocks */
            int t = cJSON_IsString(e) ? name_index(e->valuestring, ATTN_NAMES, 3) : -1;
            if (t < 0)
                return dsv4_config_fail(DSV4_ERR_CONFIG, label, "layer_types",
                               "entry %d is not one of sliding_attention, "
                               "compressed_sparse_attention, heavily_compressed_attention", i);
            c->layer_types[i++] = (dsv4_attn_type)t;
        }
        if (i < n)
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "layer_types",
                           "has %d entries, num_hidden_layers is %d", i, n);
        have_types = 1;
    }
    if (ratios) {
        if (!cJSON_IsArray(ratios))
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "compress_ratios", "expected an array, got %s",
                           json_kind(ratios));
        int i = 0;
        cJSON_ArrayForEach(e, ratios) {
            char k[48];
            int64_t r;
            snprintf(k, sizeof k, "compress_ratios[%d]", i);
            DSV4_TRY(int_of(label, k, e, 0, SIZE_MAX_DIM, &r));
            if (i >= n) { /* the trailing MTP entry: checked as a number, not interpreted */
                i++;
                continue;
            }
            dsv4_attn_type t;
            if (r == 0) {
                t = DSV4_ATTN_SLIDING;
            } else if (r == c->compress_rate_csa) {
                t = DSV4_ATTN_CSA;
            } else if (r > c->compress_rate_csa) {
                t = DSV4_ATTN_HCA;
                DSV4_TRY(agree(label, &hca, k, (double)r));
            } else {
                return dsv4_config_fail(DSV4_ERR_CONFIG, label, k,
                               "%lld is neither 0, the CSA rate %d nor an HCA rate above it",
                               (long long)r, c->compress_rate_csa);
            }
            if (have_types && c->layer_types[i] != t)
                return dsv4_config_fail(DSV4_ERR_CONFIG, label, k,
                               "%lld disagrees with layer_types[%d] = %s", (long long)r, i,
                               ATTN_NAMES[c->layer_types[i]]);
            c->layer_types[i++] = t;
        }
        if (i < n)
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "compress_ratios",
                           "has %d entries, num_hidden_layers is %d", i, n);
    }
    c->compress_rate_hca = hca.set ? (int)hca.v : 128;
    return DSV4_OK;
}

static dsv4_status parse_mlp_schedule(const char *label, const cJSON *root, dsv4_config *c) {
    int n = c->num_hidden_layers;
    source nh = {0};
    const cJSON *types = item(root, "mlp_layer_types"), *e;

    DSV4_TRY(src_int(label, root, "num_hash_layers", "num_hash_layers", 0, DSV4_MAX_LAYERS, &nh));
    if (types) {
        if (!cJSON_IsArray(types))
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "mlp_layer_types", "expected an array, got %s",
                           json_kind(types));
        int i = 0, leading = 0;
        cJSON_ArrayForEach(e, types) {
            if (i >= n) break;
            int t = cJSON_IsString(e) ? name_index(e->valuestring, MLP_NAMES, 2) : -1;
            if (t < 0)
                return dsv4_config_fail(DSV4_ERR_CONFIG, label, "mlp_layer_types",
                               "entry %d is not one of moe, hash_moe", i);
            /* The reference routes by hash exactly in layers < num_hash_layers. */
            if (t == DSV4_MLP_HASH_MOE && leading != i)
                return dsv4_config_fail(DSV4_ERR_CONFIG, label, "mlp_layer_types",
                               "hash_moe at entry %d does not follow the leading hash_moe run", i);
            if (t == DSV4_MLP_HASH_MOE) leading++;
            i++;
        }
        if (i < n)
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "mlp_layer_types",
                           "has %d entries, num_hidden_layers is %d", i, n);
        DSV4_TRY(agree(label, &nh, "mlp_layer_types (leading hash_moe count)", leading));
    }
    int k = nh.set ? (int)nh.v : (n < 3 ? n : 3);
    if (k > n)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, "num_hash_layers",
                       "%d exceeds num_hidden_layers %d", k, n);
    c->num_hash_layers = k;
    for (int i = 0; i < n; i++) c->mlp_layer_types[i] = i < k ? DSV4_MLP_HASH_MOE : DSV4_MLP_MOE;
    return DSV4_OK;
}

/* ---- quantization -------------------------------------------------------------------- */

static dsv4_status copy_name(const char *label, const char *key, const char *s, char *dst,
                             size_t cap) {
    if (strlen(s) >= cap)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "'%.40s' is too long (max %zu chars)", s,
                       cap - 1);
    memset(dst, 0, cap);
    memcpy(dst, s, strlen(s));
    return DSV4_OK;
}

/* Appends the strings of array `key` (absent is fine) to q->exclude. */
static dsv4_status add_patterns(const char *label, const cJSON *obj, const char *json_key,
                                const char *key, dsv4_quant_config *q) {
    const cJSON *arr = item(obj, json_key), *e;
    if (!arr) return DSV4_OK;
    if (!cJSON_IsArray(arr))
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "expected an array of strings, got %s",
                       json_kind(arr));
    int n = 0;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsString(e))
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, key, "entry %d is %s, not a string", n,
                           json_kind(e));
        n++;
    }
    if (n == 0) return DSV4_OK;
    char **grown = realloc(q->exclude, (size_t)(q->n_exclude + n) * sizeof *grown);
    if (!grown) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: %s: out of memory", label, key);
    q->exclude = grown;
    cJSON_ArrayForEach(e, arr) {
        char *s = strdup(e->valuestring);
        if (!s) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: %s: out of memory", label, key);
        q->exclude[q->n_exclude++] = s;
    }
    return DSV4_OK;
}

static void quant_free(dsv4_quant_config *q) {
    for (int i = 0; i < q->n_exclude; i++) free(q->exclude[i]);
    free(q->exclude);
    q->exclude = NULL;
    q->n_exclude = 0;
}

/* weight_block_size [r, c] and scale_fmt, shared by the fp8 and ModelOpt forms. */
static dsv4_status parse_fp8_fields(const char *label, const char *pfx, const cJSON *obj,
                                    dsv4_quant_config *q) {
    char k[96];
    const cJSON *wbs, *e;
    const char *fmt;
    snprintf(k, sizeof k, "%sweight_block_size", pfx);
    wbs = item(obj, "weight_block_size");
    if (wbs) {
        int i = 0;
        if (!cJSON_IsArray(wbs) || cJSON_GetArraySize(wbs) != 2)
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, k, "expected [rows, cols]");
        cJSON_ArrayForEach(e, wbs) {
            int64_t v;
            DSV4_TRY(int_of(label, k, e, 1, 1 << 16, &v));
            q->fp8_block[i++] = (int)v;
        }
    }
    snprintf(k, sizeof k, "%sscale_fmt", pfx);
    DSV4_TRY(opt_str(label, obj, "scale_fmt", k, &fmt));
    if (fmt) {
        if (strcmp(fmt, "ue8m0") == 0) q->scale_ue8m0 = 1;
        else if (strcmp(fmt, "fp32") == 0 || strcmp(fmt, "float32") == 0) q->scale_ue8m0 = 0;
        else return dsv4_config_fail(DSV4_ERR_CONFIG, label, k, "'%s' is not ue8m0 or fp32", fmt);
    }
    snprintf(k, sizeof k, "%sfmt", pfx);
    DSV4_TRY(opt_str(label, obj, "fmt", k, &fmt));
    if (fmt && strcmp(fmt, "e4m3") != 0)
        return dsv4_config_fail(DSV4_ERR_UNSUPPORTED, label, k, "only e4m3 FP8 is supported, got '%s'", fmt);
    return DSV4_OK;
}

/* A ModelOpt block: quant_algo, moe_quant_algo, group_size, ignore / exclude_modules.
 * `prev` supplies the FP8 block settings that MIXED_PRECISION keeps for non-expert weights. */
static dsv4_status parse_modelopt(const char *label, const char *pfx, const cJSON *obj,
                                  const dsv4_quant_config *prev, dsv4_quant_config *q) {
    char k[96];
    const char *algo, *moe;
    snprintf(k, sizeof k, "%squant_algo", pfx);
    DSV4_TRY(opt_str(label, obj, "quant_algo", k, &algo));
    if (!algo) return dsv4_config_fail(DSV4_ERR_CONFIG, label, k, "required key is missing");
    if (strcmp(algo, "NVFP4") == 0) {
        q->method = DSV4_QUANT_NVFP4;
    } else if (strcmp(algo, "MIXED_PRECISION") == 0) {
        q->method = DSV4_QUANT_MIXED;
        /* The non-expert weights stay DeepSeek's FP8 block-128 with ue8m0 scales. */
        int inherit = prev && (prev->method == DSV4_QUANT_FP8_BLOCK || prev->method == DSV4_QUANT_MIXED);
        q->fp8_block[0] = inherit ? prev->fp8_block[0] : 128;
        q->fp8_block[1] = inherit ? prev->fp8_block[1] : 128;
        q->scale_ue8m0 = inherit ? prev->scale_ue8m0 : 1;
    } else {
        return dsv4_config_fail(DSV4_ERR_UNSUPPORTED, label, k, "'%s' is not NVFP4 or MIXED_PRECISION", algo);
    }
    int64_t gs = 16;
    snprintf(k, sizeof k, "%sgroup_size", pfx);
    DSV4_TRY(opt_i64(label, obj, "group_size", k, 1, 1 << 16, &gs, NULL));
    if (gs != 16) /* NVFP4 is defined with one e4m3 scale per 16 elements */
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, k, "NVFP4 needs 16, got %lld", (long long)gs);
    q->group_size = (int)gs;
    snprintf(k, sizeof k, "%smoe_quant_algo", pfx);
    DSV4_TRY(opt_str(label, obj, "moe_quant_algo", k, &moe));
    if (!moe && q->method == DSV4_QUANT_MIXED) {
        /* hf_quant_config MIXED_PRECISION lists per-module algos; take the experts' one. */
        const cJSON *layers = item(obj, "quantized_layers"), *e;
        if (cJSON_IsObject(layers)) cJSON_ArrayForEach(e, layers) {
                const cJSON *a = item(e, "quant_algo");
                if (e->string && strstr(e->string, "experts") && cJSON_IsString(a)) {
                    moe = a->valuestring;
                    break;
                }
            }
    }
    if (moe) DSV4_TRY(copy_name(label, k, moe, q->moe_algo, sizeof q->moe_algo));
    DSV4_TRY(parse_fp8_fields(label, pfx, obj, q));
    snprintf(k, sizeof k, "%signore", pfx);
    DSV4_TRY(add_patterns(label, obj, "ignore", k, q));
    snprintf(k, sizeof k, "%sexclude_modules", pfx);
    DSV4_TRY(add_patterns(label, obj, "exclude_modules", k, q));
    return DSV4_OK;
}

static dsv4_status parse_quant(const char *label, const cJSON *root, dsv4_quant_config *q) {
    const cJSON *qc;
    const char *method, *algo;
    DSV4_TRY(opt_obj(label, root, "quantization_config", &qc));
    if (!qc) return DSV4_OK;
    DSV4_TRY(opt_str(label, qc, "quant_method", "quantization_config.quant_method", &method));
    DSV4_TRY(opt_str(label, qc, "quant_algo", "quantization_config.quant_algo", &algo));
    if (method && strcmp(method, "fp8") == 0) {
        q->method = DSV4_QUANT_FP8_BLOCK;
        q->fp8_block[0] = q->fp8_block[1] = 128;
        return parse_fp8_fields(label, "quantization_config.", qc, q);
    }
    if (!method && !algo)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, "quantization_config",
                       "has neither quant_method nor quant_algo");
    if (!method || strcmp(method, "modelopt") == 0)
        return parse_modelopt(label, "quantization_config.", qc, NULL, q);
    return dsv4_config_fail(DSV4_ERR_UNSUPPORTED, label, "quantization_config.quant_method",
                   "'%s' is not supported (fp8 or modelopt)", method);
}

/* ---- the whole config ---------------------------------------------------------------- */

static dsv4_status parse_root(const char *label, const cJSON *root, dsv4_config *c) {
    const char *s;
    source alias;
    /* Sizes that define tensor shapes: required. */
    DSV4_TRY(req_int(label, root, "vocab_size", 1, SIZE_MAX_DIM, &c->vocab_size));
    DSV4_TRY(req_int(label, root, "hidden_size", 1, SIZE_MAX_DIM, &c->hidden_size));
    DSV4_TRY(req_int(label, root, "num_hidden_layers", 1, DSV4_MAX_LAYERS, &c->num_hidden_layers));
    DSV4_TRY(req_int(label, root, "num_attention_heads", 1, SIZE_MAX_DIM, &c->num_attention_heads));
    DSV4_TRY(req_int(label, root, "head_dim", 1, SIZE_MAX_DIM, &c->head_dim));
    DSV4_TRY(req_int(label, root, "q_lora_rank", 1, SIZE_MAX_DIM, &c->q_lora_rank));
    DSV4_TRY(req_int(label, root, "o_groups", 1, SIZE_MAX_DIM, &c->o_groups));
    DSV4_TRY(req_int(label, root, "o_lora_rank", 1, SIZE_MAX_DIM, &c->o_lora_rank));
    DSV4_TRY(req_int(label, root, "num_experts_per_tok", 1, SIZE_MAX_DIM, &c->num_experts_per_tok));
    /* HF aliases num_local_experts and intermediate_size onto these two. */
    alias = (source){0};
    DSV4_TRY(src_int(label, root, "n_routed_experts", "n_routed_experts", 1, SIZE_MAX_DIM, &alias));
    DSV4_TRY(src_int(label, root, "num_local_experts", "num_local_experts", 1, SIZE_MAX_DIM, &alias));
    if (!alias.set) return dsv4_config_fail(DSV4_ERR_CONFIG, label, "n_routed_experts", "required key is missing");
    c->n_routed_experts = (int)alias.v;
    alias = (source){0};
    DSV4_TRY(src_int(label, root, "moe_intermediate_size", "moe_intermediate_size", 1, SIZE_MAX_DIM, &alias));
    DSV4_TRY(src_int(label, root, "intermediate_size", "intermediate_size", 1, SIZE_MAX_DIM, &alias));
    if (!alias.set)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, "moe_intermediate_size", "required key is missing");
    c->moe_intermediate_size = (int)alias.v;

    /* Everything else defaults to V4-Flash. */
    c->num_key_value_heads = 1, c->qk_rope_head_dim = 64, c->sliding_window = 128;
    c->max_position_embeddings = 1048576;
    c->index_n_heads = 64, c->index_head_dim = 128, c->index_topk = 512;
    c->hc_mult = 4, c->hc_sinkhorn_iters = 20, c->hc_eps = 1e-6;
    c->n_shared_experts = 1, c->scoring_func = DSV4_SCORE_SQRTSOFTPLUS;
    c->routed_scaling_factor = 1.5, c->swiglu_limit = 10.0, c->norm_topk_prob = 1;
    c->rms_norm_eps = 1e-6, c->rope_theta = 10000.0, c->compress_rope_theta = 160000.0;
    c->yarn = 0, c->yarn_factor = 16.0, c->yarn_beta_fast = 32.0, c->yarn_beta_slow = 1.0;
    c->yarn_original_max_position = 65536;
    c->num_nextn_predict_layers = 1, c->tie_word_embeddings = 0;
    c->bos_token_id = 0, c->eos_token_id = 1;

    DSV4_TRY(opt_int(label, root, "num_key_value_heads", 1, SIZE_MAX_DIM, &c->num_key_value_heads, NULL));
    DSV4_TRY(opt_int(label, root, "sliding_window", 1, SIZE_MAX_DIM, &c->sliding_window, NULL));
    DSV4_TRY(opt_i64(label, root, "max_position_embeddings", "max_position_embeddings", 1, POS_MAX,
                     &c->max_position_embeddings, NULL));
    DSV4_TRY(opt_int(label, root, "index_n_heads", 1, SIZE_MAX_DIM, &c->index_n_heads, NULL));
    DSV4_TRY(opt_int(label, root, "index_head_dim", 1, SIZE_MAX_DIM, &c->index_head_dim, NULL));
    DSV4_TRY(opt_int(label, root, "index_topk", 0, SIZE_MAX_DIM, &c->index_topk, NULL));
    DSV4_TRY(opt_int(label, root, "hc_mult", 0, 64, &c->hc_mult, NULL));
    DSV4_TRY(opt_int(label, root, "hc_sinkhorn_iters", 0, 1 << 16, &c->hc_sinkhorn_iters, NULL));
    DSV4_TRY(opt_num(label, root, "hc_eps", "hc_eps", &c->hc_eps, NULL));
    DSV4_TRY(opt_int(label, root, "n_shared_experts", 0, SIZE_MAX_DIM, &c->n_shared_experts, NULL));
    DSV4_TRY(opt_num(label, root, "routed_scaling_factor", "routed_scaling_factor",
                     &c->routed_scaling_factor, NULL));
    DSV4_TRY(opt_num(label, root, "swiglu_limit", "swiglu_limit", &c->swiglu_limit, NULL));
    DSV4_TRY(opt_bool(label, root, "norm_topk_prob", &c->norm_topk_prob));
    DSV4_TRY(opt_num(label, root, "rms_norm_eps", "rms_norm_eps", &c->rms_norm_eps, NULL));
    DSV4_TRY(opt_int(label, root, "num_nextn_predict_layers", 0, 64, &c->num_nextn_predict_layers, NULL));
    DSV4_TRY(opt_bool(label, root, "tie_word_embeddings", &c->tie_word_embeddings));
    DSV4_TRY(opt_int(label, root, "bos_token_id", 0, SIZE_MAX_DIM, &c->bos_token_id, NULL));
    const cJSON *eos = item(root, "eos_token_id");
    if (cJSON_IsArray(eos)) { /* HF allows a list; the first id is the primary one */
        if (!cJSON_GetArrayItem(eos, 0))
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "eos_token_id", "is an empty list");
        int64_t v;
        DSV4_TRY(int_of(label, "eos_token_id", cJSON_GetArrayItem(eos, 0), 0, SIZE_MAX_DIM, &v));
        c->eos_token_id = (int)v;
    } else {
        DSV4_TRY(opt_int(label, root, "eos_token_id", 0, SIZE_MAX_DIM, &c->eos_token_id, NULL));
    }

    DSV4_TRY(opt_str(label, root, "scoring_func", "scoring_func", &s));
    if (s) {
        int f = name_index(s, SCORE_NAMES, 3);
        if (f < 0)
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "scoring_func",
                           "'%s' is not sqrtsoftplus, sigmoid or softmax", s);
        c->scoring_func = (dsv4_score_func)f;
    }
    DSV4_TRY(opt_str(label, root, "hidden_act", "hidden_act", &s));
    if (s && strcmp(s, "silu") != 0)
        return dsv4_config_fail(DSV4_ERR_CONFIG, label, "hidden_act", "'%s' is not silu", s);

    DSV4_TRY(parse_rope(label, root, c));
    DSV4_TRY(parse_attn_schedule(label, root, c));
    DSV4_TRY(parse_mlp_schedule(label, root, c));
    DSV4_TRY(parse_quant(label, root, &c->quant));
    DSV4_TRY(opt_str(label, root, "expert_dtype", "expert_dtype", &s));
    if (s) {
        if (strcmp(s, "fp4") != 0 && strcmp(s, "fp8") != 0 && strcmp(s, "bf16") != 0)
            return dsv4_config_fail(DSV4_ERR_CONFIG, label, "expert_dtype", "'%s' is not fp4, fp8 or bf16", s);
        DSV4_TRY(copy_name(label, "expert_dtype", s, c->quant.expert_dtype, sizeof c->quant.expert_dtype));
    }
    return DSV4_OK;
}

/* Parses `len` bytes as one JSON object (nothing but whitespace may follow it). */
static dsv4_status parse_object(const char *json, size_t len, const char *label, cJSON **out) {
    const char *end = NULL;
    *out = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root) {
        /* On failure cJSON points `end` at the error (its global error pointer is not thread-safe). */
        size_t at = end && end >= json ? (size_t)(end - json) : 0;
        return dsv4_fail(DSV4_ERR_JSON, "%s: invalid JSON near byte %zu", label, at);
    }
    if (end) {
        for (; (size_t)(end - json) < len; end++)
            if (*end != ' ' && *end != '\t' && *end != '\n' && *end != '\r' && *end != '\0') {
                cJSON_Delete(root);
                return dsv4_fail(DSV4_ERR_JSON, "%s: trailing data at byte %zu", label,
                                 (size_t)(end - json));
            }
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return dsv4_fail(DSV4_ERR_JSON, "%s: top level is not a JSON object", label);
    }
    *out = root;
    return DSV4_OK;
}

dsv4_status dsv4_config_parse(const char *json, size_t len, const char *label, dsv4_config *out) {
    if (!out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_config_parse: out is NULL");
    memset(out, 0, sizeof *out);
    if (!label) label = "config.json";
    if (!json) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: no JSON text", label);
    cJSON *root;
    DSV4_TRY(parse_object(json, len, label, &root));
    dsv4_status st = parse_root(label, root, out);
    cJSON_Delete(root);
    if (st == DSV4_OK) st = dsv4_config_validate(out, label);
    if (st != DSV4_OK) {
        dsv4_config_free(out);
        memset(out, 0, sizeof *out);
    }
    return st;
}

dsv4_status dsv4_config_parse_hf_quant(const char *json, size_t len, const char *label,
                                       dsv4_config *cfg) {
    if (!cfg) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_config_parse_hf_quant: cfg is NULL");
    if (!label) label = "hf_quant_config.json";
    if (!json) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: no JSON text", label);
    cJSON *root;
    const cJSON *qz;
    DSV4_TRY(parse_object(json, len, label, &root));
    dsv4_quant_config q = {0};
    memcpy(q.expert_dtype, cfg->quant.expert_dtype, sizeof q.expert_dtype);
    dsv4_status st = opt_obj(label, root, "quantization", &qz);
    if (st == DSV4_OK) {
        /* Older exports put quant_algo at the top level. */
        const char *pfx = qz ? "quantization." : "";
        st = parse_modelopt(label, pfx, qz ? qz : root, &cfg->quant, &q);
    }
    cJSON_Delete(root);
    if (st != DSV4_OK) {
        quant_free(&q);
        return st;
    }
    st = dsv4_config_validate_quant(&q, label);
    if (st != DSV4_OK) {
        quant_free(&q);
        return st;
    }
    quant_free(&cfg->quant);
    cfg->quant = q;
    return DSV4_OK;
}

/* ---- files, lifetime, queries -------------------------------------------------------- */

dsv4_status dsv4_config_load(const char *dir, dsv4_config *out) {
    if (!out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_config_load: out is NULL");
    memset(out, 0, sizeof *out);
    if (!dir) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_config_load: dir is NULL");
    char path[4096];
    char *text;
    size_t len;
    if ((size_t)snprintf(path, sizeof path, "%s/config.json", dir) >= sizeof path)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: path too long", dir);
    DSV4_TRY(dsv4_read_text_file(path, CFG_FILE_MAX, 0, &text, &len));
    dsv4_status st = dsv4_config_parse(text, len, path, out);
    free(text);
    if (st != DSV4_OK) return st;
    snprintf(path, sizeof path, "%s/hf_quant_config.json", dir);
    st = dsv4_read_text_file(path, CFG_FILE_MAX, 1, &text, &len);
    if (st == DSV4_ERR_MISSING) return DSV4_OK; /* optional */
    if (st == DSV4_OK) {
        st = dsv4_config_parse_hf_quant(text, len, path, out);
        free(text);
    }
    if (st != DSV4_OK) {
        dsv4_config_free(out);
        memset(out, 0, sizeof *out);
    }
    return st;
}

void dsv4_config_free(dsv4_config *cfg) {
    if (cfg) quant_free(&cfg->quant);
}
