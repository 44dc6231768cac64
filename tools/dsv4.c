/* dsv4 — command-line front end. */
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include "dsv4.h"
#include "engine/sampler.h"
#include "format/safetensors.h"
#include "model/model.h"

static void usage(FILE *f) {
    fprintf(f,
            "dsv4 %s — DeepSeek-V4 inference with NVFP4 weights\n"
            "usage:\n"
            "  dsv4 make-tiny DIR [--scheme native-nvfp4|native-mxfp4|hf|hf-stacked] [--seed N] [--config FILE]\n"
            "  dsv4 inspect DIR\n"
            "  dsv4 generate --model DIR --ids 1,2,3 [-n 32] [--temperature T] [--top-p P] [--seed N]\n"
            "                [--numerics w4a16|w4a4] [--kv f32|fp8] [--chunk N]\n"
            "  dsv4 logits --model DIR --ids 1,2,3 --out FILE.safetensors [--numerics w4a16|w4a4] [--kv f32|fp8] [--chunk N]\n"
            "  dsv4 verify --model DIR --ids 1,2,3 [--numerics w4a16|w4a4] [--kv f32|fp8]\n"
            "  dsv4 convert SRC DST [--experts keep|nvfp4] [--dense keep|nvfp4] [--lossy-mxfp4] [--shard-mb N]\n"
            "  dsv4 version\n",
            dsv4_version());
}

static int fail(dsv4_status st) {
    fprintf(stderr, "dsv4: %s: %s\n", dsv4_status_name(st), dsv4_last_error());
    return 1;
}

static int cmd_make_tiny(int argc, char **argv) {
    const char *dir = NULL, *config = NULL;
    dsv4_tiny_scheme scheme = DSV4_TINY_NATIVE_NVFP4;
    unsigned long long seed = 1;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--scheme") && i + 1 < argc) {
            const char *s = argv[++i];
            if (!strcmp(s, "native-nvfp4")) scheme = DSV4_TINY_NATIVE_NVFP4;
            else if (!strcmp(s, "native-mxfp4")) scheme = DSV4_TINY_NATIVE_MXFP4;
            else if (!strcmp(s, "hf")) scheme = DSV4_TINY_HF;
            else if (!strcmp(s, "hf-stacked")) scheme = DSV4_TINY_HF_STACKED;
            else { fprintf(stderr, "dsv4 make-tiny: unknown scheme '%s'\n", s); return 2; }
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            config = argv[++i];
        } else if (!strcmp(argv[i], "--seed") && i + 1 < argc) {
            char *end;
            seed = strtoull(argv[++i], &end, 0);
            if (*end) { fprintf(stderr, "dsv4 make-tiny: bad seed '%s'\n", argv[i]); return 2; }
        } else if (argv[i][0] != '-' && !dir) {
            dir = argv[i];
        } else {
            fprintf(stderr, "dsv4 make-tiny: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!dir) { usage(stderr); return 2; }
    dsv4_status st = dsv4_make_tiny_config(dir, scheme, seed, config);
    if (st != DSV4_OK) return fail(st);
    printf("wrote tiny DeepSeek-V4 checkpoint to %s\n", dir);
    return 0;
}

static int cmd_convert(int argc, char **argv) {
    const char *src = NULL, *dst = NULL;
    dsv4_convert_options o = {.experts = 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : "";
        if ((!strcmp(a, "--experts") || !strcmp(a, "--dense")) && (!strcmp(v, "keep") || !strcmp(v, "nvfp4"))) {
            *(!strcmp(a, "--experts") ? &o.experts : &o.dense) = !strcmp(v, "nvfp4");
            i++;
        } else if (!strcmp(a, "--lossy-mxfp4")) {
            o.lossy_mxfp4 = 1;
        } else if (!strcmp(a, "--shard-mb") && atol(v) > 0) {
            o.shard_bytes = (size_t)atol(v) << 20;
            i++;
        } else if (a[0] != '-' && !src) {
            src = a;
        } else if (a[0] != '-' && !dst) {
            dst = a;
        } else {
            fprintf(stderr, "dsv4 convert: unexpected argument '%s'\n", a);
            return 2;
        }
    }
    if (!src || !dst) { usage(stderr); return 2; }
    dsv4_status st = dsv4_convert(src, dst, &o, stdout);
    return st == DSV4_OK ? 0 : fail(st);
}

static int cmd_inspect(int argc, char **argv) {
    if (argc != 1) { usage(stderr); return 2; }
    dsv4_status st = dsv4_inspect_dir(argv[0], stdout);
    return st == DSV4_OK ? 0 : fail(st);
}

/* Options shared by generate and logits. */
typedef struct run_args {
    const char *model, *ids_text, *out;
    int n_new, chunk;
    float temperature, top_p;
    unsigned long long seed;
    dsv4_numerics numerics;
    int kv_fp8;
} run_args;

static int parse_run_args(int argc, char **argv, run_args *a, const char *cmd) {
    *a = (run_args){.n_new = 32, .temperature = 0.0f, .top_p = 1.0f, .seed = 0, .numerics = DSV4_W4A16};
    for (int i = 0; i < argc; i++) {
        const char *k = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!v) { fprintf(stderr, "dsv4 %s: '%s' needs a value\n", cmd, k); return 2; }
        i++;
        if (!strcmp(k, "--model")) a->model = v;
        else if (!strcmp(k, "--ids")) a->ids_text = v;
        else if (!strcmp(k, "--out")) a->out = v;
        else if (!strcmp(k, "-n")) a->n_new = (int)strtol(v, &end, 10);
        else if (!strcmp(k, "--chunk")) a->chunk = (int)strtol(v, &end, 10);
        else if (!strcmp(k, "--temperature")) a->temperature = strtof(v, &end);
        else if (!strcmp(k, "--top-p")) a->top_p = strtof(v, &end);
        else if (!strcmp(k, "--seed")) a->seed = strtoull(v, &end, 0);
        else if (!strcmp(k, "--kv")) {
            if (!strcmp(v, "fp8")) a->kv_fp8 = 1;
            else if (!strcmp(v, "f32")) a->kv_fp8 = 0;
            else { fprintf(stderr, "dsv4 %s: --kv is fp8 or f32, not '%s'\n", cmd, v); return 2; }
        } else if (!strcmp(k, "--numerics")) {
            if (!strcmp(v, "w4a16")) a->numerics = DSV4_W4A16;
            else if (!strcmp(v, "w4a4")) a->numerics = DSV4_W4A4;
            else { fprintf(stderr, "dsv4 %s: --numerics is w4a16 or w4a4, not '%s'\n", cmd, v); return 2; }
        } else {
            fprintf(stderr, "dsv4 %s: unknown option '%s'\n", cmd, k);
            return 2;
        }
        if (end && *end) { fprintf(stderr, "dsv4 %s: bad value '%s' for %s\n", cmd, v, k); return 2; }
    }
    if (!a->model || !a->ids_text) { fprintf(stderr, "dsv4 %s: --model and --ids are required\n", cmd); return 2; }
    if (a->n_new < 0 || a->chunk < 0) { fprintf(stderr, "dsv4 %s: -n and --chunk must be >= 0\n", cmd); return 2; }
    return 0;
}

/* "1,2,3" -> ids; returns the count or -1. */
static int parse_ids(const char *text, int32_t **out) {
    int cap = 16, n = 0;
    int32_t *ids = malloc(sizeof *ids * (size_t)cap);
    const char *p = text;
    while (ids && *p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > INT32_MAX || (*end && *end != ',')) { free(ids); return -1; }
        if (n == cap) {
            int32_t *grown = realloc(ids, sizeof *ids * (size_t)(cap *= 2));
            if (!grown) { free(ids); return -1; }
            ids = grown;
        }
        ids[n++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    *out = ids;
    return ids && n > 0 ? n : -1;
}

/* Prefill in chunks of `chunk` tokens (0: one call); logits [n, V] for every position if wanted. */
static dsv4_status prefill(dsv4_session *s, const int32_t *ids, int n, int chunk, int V, float *logits) {
    if (chunk <= 0) chunk = n;
    for (int i = 0; i < n; i += chunk) {
        int len = n - i < chunk ? n - i : chunk;
        dsv4_status st = dsv4_session_forward(s, 0, ids + i, len, logits ? logits + (size_t)i * V : NULL);
        if (st != DSV4_OK) return st;
    }
    return DSV4_OK;
}

static int cmd_run(int argc, char **argv, int generate) {
    const char *cmd = generate ? "generate" : "logits";
    run_args a;
    int rc = parse_run_args(argc, argv, &a, cmd);
    if (rc) return rc;
    if (!generate && !a.out) { fprintf(stderr, "dsv4 logits: --out is required\n"); return 2; }
    int32_t *ids = NULL;
    int n = parse_ids(a.ids_text, &ids);
    if (n < 0) { fprintf(stderr, "dsv4 %s: --ids must be comma-separated token ids\n", cmd); return 2; }
    dsv4_model *m = NULL;
    dsv4_session *s = NULL;
    float *logits = NULL;
    dsv4_status st = dsv4_model_open(a.model, &m);
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.numerics = a.numerics;
    o.kv_fp8 = a.kv_fp8;
    o.max_seq_len = n + (generate ? a.n_new : 0);
    if (st == DSV4_OK) st = dsv4_session_create(m, &o, &s);
    int V = m ? dsv4_model_vocab_size(m) : 0;
    /* logits: every position for `logits`; generate needs only the last one's */
    const int rows = generate ? 1 : n;
    if (st == DSV4_OK) {
        logits = malloc(sizeof(float) * (size_t)V * (size_t)rows);
        if (!logits) st = DSV4_ERR_OUT_OF_MEMORY;
    }
    if (st == DSV4_OK && !generate) st = prefill(s, ids, n, a.chunk, V, logits);
    if (st == DSV4_OK && generate) {
        if (n > 1) st = prefill(s, ids, n - 1, a.chunk, V, NULL);
        if (st == DSV4_OK) st = dsv4_session_forward(s, 0, ids + n - 1, 1, logits);
    }
    if (st == DSV4_OK && !generate) {
        dsv4_st_writer *w = dsv4_st_writer_new();
        int64_t lshape[2] = {n, V}, ishape[1] = {n};
        st = w ? DSV4_OK : DSV4_ERR_OUT_OF_MEMORY;
        if (st == DSV4_OK) st = dsv4_st_writer_add(w, "ids", DSV4_DT_I32, 1, ishape, ids, sizeof *ids * (size_t)n);
        if (st == DSV4_OK)
            st = dsv4_st_writer_add(w, "logits", DSV4_DT_F32, 2, lshape, logits, sizeof(float) * (size_t)n * V);
        if (st == DSV4_OK) st = dsv4_st_writer_write(w, a.out);
        dsv4_st_writer_free(w);
    }
    if (st == DSV4_OK && generate) {
        dsv4_sampler sm;
        dsv4_sampler_init(&sm, a.temperature, a.top_p, a.seed);
        const float *last = logits;
        for (int i = 0; i < a.n_new && st == DSV4_OK; i++) {
            int32_t tok;
            st = dsv4_sample(&sm, last, V, &tok);
            if (st != DSV4_OK) break;
            printf("%s%d", i ? "," : "", tok);
            fflush(stdout);
            if (i + 1 < a.n_new) {
                st = dsv4_session_forward(s, 0, &tok, 1, logits);
                last = logits;
            }
        }
        printf("\n");
    }
    free(logits);
    free(ids);
    dsv4_session_free(s);
    dsv4_model_close(m);
    return st == DSV4_OK ? 0 : fail(st);
}

/* Per-layer agreement of a numerics mode with the W4A16 reference. */
static int cmd_verify(int argc, char **argv) {
    run_args a;
    int rc = parse_run_args(argc, argv, &a, "verify");
    if (rc) return rc;
    int32_t *ids = NULL;
    int n = parse_ids(a.ids_text, &ids);
    if (n < 0) { fprintf(stderr, "dsv4 verify: --ids must be comma-separated token ids\n"); return 2; }
    dsv4_model *m = NULL;
    dsv4_status st = dsv4_model_open(a.model, &m);
    dsv4_verify_row rows[DSV4_MAX_LAYERS + 1];
    int n_rows = 0;
    dsv4_session_options run;
    dsv4_session_options_default(&run);
    run.numerics = a.numerics;
    run.kv_fp8 = a.kv_fp8;
    if (st == DSV4_OK) st = dsv4_verify(m, &run, ids, n, rows, DSV4_MAX_LAYERS + 1, &n_rows);
    if (st == DSV4_OK) {
        printf("CPU %s, %s KV vs the CPU W4A16 fp32-KV reference, %d tokens\nlayer   min cosine   max |d|/max|ref|\n",
               a.numerics == DSV4_W4A4 ? "W4A4" : "W4A16", a.kv_fp8 ? "FP8" : "fp32", n);
        for (int i = 0; i < n_rows; i++) {
            if (rows[i].layer >= 0) printf("%5d", rows[i].layer);
            else printf("logit");
            printf("   %.9f   %.3g\n", rows[i].cosine_min, rows[i].rel_err_max);
        }
    }
    free(ids);
    dsv4_model_close(m);
    return st == DSV4_OK ? 0 : fail(st);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "make-tiny")) return cmd_make_tiny(argc - 2, argv + 2);
    if (!strcmp(cmd, "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(cmd, "generate")) return cmd_run(argc - 2, argv + 2, 1);
    if (!strcmp(cmd, "convert")) return cmd_convert(argc - 2, argv + 2);
    if (!strcmp(cmd, "verify")) return cmd_verify(argc - 2, argv + 2);
    if (!strcmp(cmd, "logits")) return cmd_run(argc - 2, argv + 2, 0);
    if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
        printf("dsv4 %s (CUDA %s)\n", dsv4_version(), dsv4_has_cuda() ? "yes" : "no");
        return 0;
    }
    if (!strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) { usage(stdout); return 0; }
    fprintf(stderr, "dsv4: unknown command '%s'\n", cmd);
    usage(stderr);
    return 2;
}
