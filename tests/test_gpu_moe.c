/* MoE on the GPU: router, permutation, SwiGLU epilogue and combine against the CPU
 * references (src/cpu/router.c, src/cpu/moe_route.c, src/cpu/moe.c), every kernel through
 * the graph-safety harness. The layout reference itself is checked here on the CPU too.
 *
 * Where exactness depends on libm (cuda/moe_math.cuh): the device evaluates expf/log1pf in
 * double and rounds once, i.e. correctly rounded; the host's glibc may differ by 1 ulp
 * (2.36: log1pf for ~2% of inputs, expf ~0.06%). So router weights and SwiGLU outputs are
 * compared (a) with the real CPU reference within a few ulp, and (b) bit for bit with a
 * host emulation that is the CPU code with only expf/log1pf replaced by their double
 * evaluation; (b) proves every other operation is the CPU's, in the CPU's order. Expert ids
 * are compared exactly with the CPU: random data is drawn with no near-ties among each
 * token's top k + 1 biased scores (a 1-ulp score difference could reorder those), and exact
 * ties come from equal logits, which give equal scores under any libm. */
#include <math.h>

#include "cpu/moe_route.h"
#include "cpu/ops.h"
#include "cpu/quantize.h"
#include "format/fp.h"
#include "format/quant.h"
#include "test.h"

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/moe.h"
#include "cuda/moe_route.h"
#include "gpu_harness.h"
#endif

/* ---------------------------------------------------------------- layout (CPU, runs anywhere) */

typedef struct host_layout {
    int T, k, E, tile;
    int64_t max_rows, max_tiles;
    int32_t *counts, *offsets, *row_token, *tile_expert, *inv;
} host_layout;

static int layout_alloc(host_layout *L, int T, int k, int E, int tile) {
    L->T = T, L->k = k, L->E = E, L->tile = tile;
    L->max_rows = dsv4_moe_max_rows(T, k, E, tile);
    L->max_tiles = L->max_rows / tile;
    L->counts = malloc(sizeof(int32_t) * (size_t)E);
    L->offsets = malloc(sizeof(int32_t) * (size_t)(E + 1));
    L->row_token = malloc(sizeof(int32_t) * (size_t)(L->max_rows + 1));
    L->tile_expert = malloc(sizeof(int32_t) * (size_t)(L->max_tiles + 1));
    L->inv = malloc(sizeof(int32_t) * (size_t)((int64_t)T * k + 1));
    return L->counts && L->offsets && L->row_token && L->tile_expert && L->inv;
}
static void layout_free(host_layout *L) {
    free(L->counts), free(L->offsets), free(L->row_token), free(L->tile_expert), free(L->inv);
}
static dsv4_moe_layout layout_view(host_layout *L) {
    return (dsv4_moe_layout){L->counts, L->offsets, L->row_token, L->tile_expert, L->inv};
}

/* The invariants of cpu/moe_route.h, checked from scratch; 1 if all hold, else 0 + msg. */
static int layout_check(const host_layout *L, const int32_t *idx, char *msg, size_t len) {
    const int64_t n_pairs = (int64_t)L->T * L->k;
    int64_t sum = 0, valid = 0;
    for (int64_t p = 0; p < n_pairs; p++) valid += idx[p] >= 0 && idx[p] < L->E;
    if (L->offsets[0] != 0) return snprintf(msg, len, "offsets[0] = %d", L->offsets[0]), 0;
    for (int e = 0; e < L->E; e++) {
        int32_t c = L->counts[e], span = L->offsets[e + 1] - L->offsets[e];
        sum += c;
        if (c < 0 || span < c || span % L->tile || span - c >= L->tile)
            return snprintf(msg, len, "expert %d: count %d, rows %d (tile %d)", e, c, span, L->tile), 0;
        for (int32_t r = L->offsets[e]; r < L->offsets[e + 1]; r++) {
            if (L->tile_expert[r / L->tile] != e)
                return snprintf(msg, len, "tile %d owned by %d, want %d", r / L->tile, L->tile_expert[r / L->tile], e), 0;
            int32_t t = L->row_token[r];
            if (r - L->offsets[e] >= c) {
                if (t != -1) return snprintf(msg, len, "padding row %d holds token %d", r, t), 0;
                continue;
            }
            /* a real row: its token has a slot for e whose inverse is this row */
            if (t < 0 || t >= L->T) return snprintf(msg, len, "row %d token %d", r, t), 0;
            int found = 0;
            for (int j = 0; j < L->k; j++) found += idx[(int64_t)t * L->k + j] == e && L->inv[(int64_t)t * L->k + j] == r;
            if (found != 1) return snprintf(msg, len, "row %d (token %d, expert %d) found %d times", r, t, e, found), 0;
            if (r > L->offsets[e] && L->row_token[r - 1] > t)
                return snprintf(msg, len, "expert %d rows not in token order at row %d", e, r), 0;
        }
    }
    if (sum != valid) return snprintf(msg, len, "counts sum to %lld, want %lld", (long long)sum, (long long)valid), 0;
    if (L->offsets[L->E] > L->max_rows) return snprintf(msg, len, "offsets[E] = %d > max_rows", L->offsets[L->E]), 0;
    for (int64_t r = L->offsets[L->E]; r < L->max_rows; r++)
        if (L->row_token[r] != -1) return snprintf(msg, len, "tail row %lld holds %d", (long long)r, L->row_token[r]), 0;
    for (int64_t i = L->offsets[L->E] / L->tile; i < L->max_tiles; i++)
        if (L->tile_expert[i] != -1) return snprintf(msg, len, "tail tile %lld owned by %d", (long long)i, L->tile_expert[i]), 0;
    /* every pair exactly once: inverse in range, pointing back at its token, no row shared */
    unsigned char *seen = calloc((size_t)L->max_rows + 1, 1);
    if (!seen) return snprintf(msg, len, "out of memory"), 0;
    for (int64_t p = 0; p < n_pairs; p++) {
        int e = idx[p];
        int32_t r = L->inv[p];
        if (e < 0 || e >= L->E) {
            if (r != -1) return snprintf(msg, len, "dropped pair %lld has row %d", (long long)p, r), 0;
            continue;
        }
        if (r < L->offsets[e] || r >= L->offsets[e] + L->counts[e] || L->row_token[r] != p / L->k || seen[r]) {
            free(seen);
            return snprintf(msg, len, "pair %lld (expert %d) -> row %d (or a row used twice)", (long long)p, e, r), 0;
        }
        seen[r] = 1;
    }
    free(seen);
    return 1;
}

static void random_idx(int32_t *idx, int T, int k, int E, uint64_t *rng) {
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do { /* distinct within a token, like top-k */
                e = (int)(test_rand_u64(rng) % (uint64_t)E);
                dup = 0;
                for (int i = 0; i < j; i++) dup |= idx[t * k + i] == e;
            } while (dup);
            idx[t * k + j] = e;
        }
}

TEST(cpu_moe_permute_layout_invariants) {
    uint64_t rng = 5;
    char msg[256];
    static const struct { int T, k, E, tile, kind; } cases[] = {
        {7, 4, 16, 4, 0}, {300, 6, 256, 128, 0}, {33, 6, 16, 1, 0}, {50, 4, 16, 8, 1} /* all to one */,
        {9, 3, 8, 4, 2} /* hash duplicates and dropped ids */, {0, 6, 16, 4, 0}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int T = cases[c].T, k = cases[c].k, E = cases[c].E, tile = cases[c].tile;
        int32_t *idx = malloc(sizeof(int32_t) * (size_t)(T * k + 1));
        host_layout L;
        CHECK(idx && layout_alloc(&L, T, k, E, tile));
        random_idx(idx, T, k, E, &rng);
        if (cases[c].kind == 1)
            for (int p = 0; p < T * k; p++) idx[p] = 5;
        if (cases[c].kind == 2) idx[3] = idx[4] = 2, idx[7] = -1, idx[10] = E;
        dsv4_moe_layout v = layout_view(&L);
        dsv4_status st = dsv4_cpu_moe_permute(idx, T, k, E, tile, &v);
        int ok = st == DSV4_OK && layout_check(&L, idx, msg, sizeof msg);
        int one = cases[c].kind == 1 ? L.counts[5] == T * k && L.offsets[E] == (T * k + tile - 1) / tile * tile : 1;
        int zero = T == 0 ? L.offsets[E] == 0 && (L.max_tiles == 0 || L.tile_expert[0] == -1) : 1;
        layout_free(&L), free(idx);
        CHECK_MSG(st == DSV4_OK, "case %zu: %s", c, dsv4_last_error());
        CHECK_MSG(ok, "case %zu: %s", c, msg);
        CHECK_MSG(one && zero, "case %zu: all-to-one or empty layout wrong", c);
    }
    /* hand-checked small layout: T=3, k=2, E=3, tile=2 */
    const int32_t idx[6] = {2, 0, 0, 2, 2, 1};
    host_layout L;
    CHECK(layout_alloc(&L, 3, 2, 3, 2));
    dsv4_moe_layout v = layout_view(&L);
    CHECK_OK(dsv4_cpu_moe_permute(idx, 3, 2, 3, 2, &v));
    const int32_t counts[3] = {2, 1, 3}, offsets[4] = {0, 2, 4, 8}, rows[9] = {0, 1, 2, -1, 0, 1, 2, -1, -1},
                  tiles[4] = {0, 1, 2, 2}, inv[6] = {4, 0, 1, 5, 6, 2};
    int same = L.max_rows == 9 && L.max_tiles == 4 && !memcmp(L.counts, counts, sizeof counts) &&
               !memcmp(L.offsets, offsets, sizeof offsets) && !memcmp(L.row_token, rows, sizeof rows) &&
               !memcmp(L.tile_expert, tiles, sizeof tiles) && !memcmp(L.inv, inv, sizeof inv);
    layout_free(&L);
    CHECK(same);
    CHECK(dsv4_moe_max_rows(4096, 8, 384, 128) == 4096 * 8 + 384 * 127);
    CHECK(dsv4_moe_max_rows(1, 0, 4, 4) == -1 && dsv4_moe_max_rows(1 << 30, 8, 4, 4) == -1);
    CHECK_STATUS(dsv4_cpu_moe_permute(idx, 3, 2, 3, 0, &v), DSV4_ERR_SHAPE);
}

#if DSV4_HAVE_CUDA
/* ---------------------------------------------------------------- host emulation of the device math */

static float dexpf(float x) { return (float)exp((double)x); }
static float dlog1pf(float x) { return (float)log1p((double)x); }

static uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
/* distance in ulp between two finite floats of the same sign (large when signs differ) */
static int64_t ulp_diff(float a, float b) {
    if (a == b) return 0;
    if ((a < 0) != (b < 0)) return INT64_MAX;
    int64_t d = (int64_t)bits(a) - (int64_t)bits(b);
    return d < 0 ? -d : d;
}

/* router.c's score_row with libm selectable: the real one (dev = 0) or the device's (1). */
static void score_row(int score, const float *l, int E, float *s, int dev) {
    if (score == DSV4_CPU_SCORE_SOFTMAX) {
        float mx = l[0], sum = 0.0f;
        for (int e = 1; e < E; e++) mx = fmaxf(mx, l[e]);
        for (int e = 0; e < E; e++) sum += (s[e] = dev ? dexpf(l[e] - mx) : expf(l[e] - mx));
        for (int e = 0; e < E; e++) s[e] /= sum;
        return;
    }
    for (int e = 0; e < E; e++) {
        float x = l[e];
        if (score == DSV4_CPU_SCORE_SIGMOID)
            s[e] = 1.0f / (1.0f + (dev ? dexpf(-x) : expf(-x)));
        else
            s[e] = sqrtf(fmaxf(x, 0.0f) + (dev ? dlog1pf(dexpf(-fabsf(x))) : log1pf(expf(-fabsf(x)))));
    }
}

/* Weights of dsv4_cpu_router for given ids, with the device's libm: the emulation of (b). */
static void emul_weights(const dsv4_cpu_router_cfg *cfg, const float *l, const int *ids, float *w) {
    float s[DSV4_CUDA_MOE_MAX_EXPERTS], sum = 0.0f;
    score_row(cfg->score, l, cfg->n_experts, s, 1);
    for (int j = 0; j < cfg->topk; j++) sum += (w[j] = s[ids[j]]);
    for (int j = 0; j < cfg->topk; j++) {
        if (cfg->normalize) w[j] = w[j] / (sum + 1e-20f);
        w[j] *= cfg->scaling;
    }
}

/* Logits for T tokens whose top k + 1 biased scores (host libm) are pairwise separated by
 * more than 1e-5 relative: redraws a token until they are. */
static void tie_free_logits(float *l, int T, int E, int k, int score, const float *bias, uint64_t *rng) {
    float s[DSV4_CUDA_MOE_MAX_EXPERTS], b[DSV4_CUDA_MOE_MAX_EXPERTS];
    for (int t = 0; t < T; t++) {
        float *lt = l + (size_t)t * E;
        for (int tries = 0;; tries++) {
            for (int e = 0; e < E; e++) lt[e] = 2.0f * test_rand_normal(rng);
            score_row(score, lt, E, s, 0);
            for (int e = 0; e < E; e++) b[e] = s[e] + (bias ? bias[e] : 0.0f);
            /* the k+1 largest, by selection; then the gaps between neighbours */
            float top[DSV4_CUDA_MOE_MAX_TOPK + 1];
            int n = k + 1 < E ? k + 1 : E, ok = 1;
            for (int i = 0; i < n; i++) {
                int best = -1;
                for (int e = 0; e < E; e++)
                    if (b[e] > -INFINITY && (best < 0 || b[e] > b[best])) best = e;
                top[i] = b[best];
                b[best] = -INFINITY;
            }
            for (int i = 1; i < n; i++) ok &= top[i - 1] - top[i] > 1e-5f * fabsf(top[i - 1]);
            if (ok || tries > 1000) break; /* 1000 redraws never happen with normal logits */
        }
    }
}

/* ---------------------------------------------------------------- router */

typedef struct rjob {
    dsv4_cuda_router_cfg cfg;
    int T, vocab;
    const float *logits, *bias;
    const int32_t *tid2eid, *tok;
    int32_t *idx;
    float *w;
} rjob;

static dsv4_status enqueue_router(cudaStream_t s, void *a) {
    rjob *j = a;
    return dsv4_cuda_moe_router(s, &j->cfg, j->T, j->logits, j->bias, j->tid2eid, j->tok, j->vocab, j->idx, j->w);
}

/* Runs the GPU router on host inputs and compares with dsv4_cpu_router (ids exact, weights
 * within 4 ulp) and with the emulation (weights bit-exact). Returns 1 on success. */
static int router_case(const dsv4_cpu_router_cfg *cfg, int T, const float *logits, const float *bias,
                       const int32_t *tid2eid, const int32_t *tok, int vocab, char *msg, size_t len) {
    const int E = cfg->n_experts, k = cfg->topk;
    const size_t nk = (size_t)T * k;
    int ok = 0;
    int *idx = malloc(sizeof(int) * nk);
    float *w = malloc(sizeof(float) * nk);
    void *d_l = gpu_upload(logits, sizeof(float) * (size_t)T * E), *d_b = bias ? gpu_upload(bias, sizeof(float) * E) : NULL;
    void *d_t = tid2eid ? gpu_upload(tid2eid, sizeof(int32_t) * (size_t)vocab * k) : NULL;
    void *d_tok = tok ? gpu_upload(tok, sizeof(int32_t) * T) : NULL;
    void *d_i = gpu_upload(NULL, sizeof(int32_t) * nk), *d_w = gpu_upload(NULL, sizeof(float) * nk);
    gpu_buf outs[2] = {{"idx", d_i, sizeof(int32_t) * nk, NULL}, {"weights", d_w, sizeof(float) * nk, NULL}};
    if (!idx || !w || !d_l || (bias && !d_b) || (tid2eid && (!d_t || !d_tok)) || !d_i || !d_w) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    if (dsv4_cpu_router(cfg, T, logits, bias, tid2eid, tok, vocab, idx, w) != DSV4_OK) {
        snprintf(msg, len, "CPU router: %s", dsv4_last_error());
        goto done;
    }
    rjob job = {{E, k, (int)cfg->score, cfg->normalize, cfg->scaling}, T, vocab, d_l, d_b, d_t, d_tok, d_i, d_w};
    if (!gpu_graph_check(gpu_test_stream(), enqueue_router, &job, outs, 2, msg, len)) goto done;
    const int32_t *gi = outs[0].host;
    const float *gw = outs[1].host;
    for (int t = 0; t < T; t++) {
        float ew[DSV4_CUDA_MOE_MAX_TOPK];
        for (int j = 0; j < k; j++)
            if (gi[t * k + j] != idx[t * k + j]) {
                snprintf(msg, len, "token %d slot %d: expert %d, CPU %d", t, j, gi[t * k + j], idx[t * k + j]);
                goto done;
            }
        emul_weights(cfg, logits + (size_t)t * E, idx + (size_t)t * k, ew);
        for (int j = 0; j < k; j++) {
            float g = gw[t * k + j], c = w[t * k + j];
            if (bits(g) != bits(ew[j]) || ulp_diff(g, c) > 4) {
                snprintf(msg, len, "token %d slot %d (expert %d): weight %a, emulation %a, CPU %a", t, j, idx[t * k + j],
                         (double)g, (double)ew[j], (double)c);
                goto done;
            }
        }
    }
    ok = 1;
done:
    gpu_bufs_free(outs, 2);
    cudaFree(d_l), cudaFree(d_b), cudaFree(d_t), cudaFree(d_tok), cudaFree(d_i), cudaFree(d_w);
    free(idx), free(w);
    return ok;
}

TEST(gpu_moe_router_topk_matches_cpu) {
    if (!gpu_available()) SKIP("no GPU");
    static const struct { int E, k, T, score, with_bias; } cases[] = {
        {256, 6, 1, 0, 1},  {256, 6, 7, 0, 1},  {256, 6, 4096, 0, 1}, {16, 4, 1, 0, 1}, {16, 4, 7, 0, 0},
        {16, 4, 4096, 0, 1}, {384, 8, 33, 0, 1}, {256, 6, 7, 1, 1},    {256, 6, 7, 2, 0}, {16, 4, 70, 2, 1}};
    uint64_t rng = 17;
    char msg[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int E = cases[c].E, k = cases[c].k, T = cases[c].T;
        dsv4_cpu_router_cfg cfg = {E, k, (dsv4_cpu_score_func)cases[c].score, cases[c].score != 2, 1.5f};
        float *l = malloc(sizeof(float) * (size_t)T * E), bias[DSV4_CUDA_MOE_MAX_EXPERTS];
        CHECK(l);
        for (int e = 0; e < E; e++) bias[e] = 0.1f * test_rand_normal(&rng);
        tie_free_logits(l, T, E, k, cases[c].score, cases[c].with_bias ? bias : NULL, &rng);
        int ok = router_case(&cfg, T, l, cases[c].with_bias ? bias : NULL, NULL, NULL, 0, msg, sizeof msg);
        free(l);
        CHECK_MSG(ok, "E=%d k=%d T=%d score %d bias %d: %s", E, k, T, cases[c].score, cases[c].with_bias, msg);
    }
}

TEST(gpu_moe_router_ties_go_to_lowest_id) {
    if (!gpu_available()) SKIP("no GPU");
    enum { E = 16, k = 4, T = 4 };
    char msg[512];
    float l[T * E];
    for (int i = 0; i < T * E; i++) l[i] = 0.25f;                  /* token 0: all equal */
    for (int e = 0; e < E; e++) l[E + e] = e % 2 ? 1.0f : -1.0f;   /* token 1: eight tied winners */
    for (int e = 0; e < E; e++) l[2 * E + e] = e >= 12 ? 3.0f : 0.5f; /* token 2: four top, then ties */
    l[3 * E + 9] = 2.0f, l[3 * E + 3] = 2.0f;                       /* token 3: two tied top, rest tied */
    dsv4_cpu_router_cfg cfg = {E, k, DSV4_CPU_SCORE_SQRTSOFTPLUS, 1, 1.5f};
    CHECK_MSG(router_case(&cfg, T, l, NULL, NULL, NULL, 0, msg, sizeof msg), "no bias: %s", msg);
    /* the CPU answers are the documented ones: lowest ids among equal values */
    int idx[T * k];
    float w[T * k];
    CHECK_OK(dsv4_cpu_router(&cfg, T, l, NULL, NULL, NULL, 0, idx, w));
    static const int want[T * k] = {0, 1, 2, 3, 1, 3, 5, 7, 12, 13, 14, 15, 3, 9, 0, 1};
    CHECK(memcmp(idx, want, sizeof want) == 0);
    CHECK(w[0] == 0.375f && w[1] == 0.375f); /* 1.5 / 4, equal scores */
    /* a bias that makes different scores tie: equal biased values, weights from the scores */
    float bias[E] = {0};
    for (int i = 0; i < E; i++) l[i] = (float)i / 8.0f;
    bias[0] = 1e8f, bias[5] = 1e8f; /* 1e8 + s rounds to 1e8 (ulp 8) for both: an exact tie */
    CHECK_MSG(router_case(&cfg, 1, l, bias, NULL, NULL, 0, msg, sizeof msg), "bias: %s", msg);
    CHECK_OK(dsv4_cpu_router(&cfg, 1, l, bias, NULL, NULL, 0, idx, w));
    CHECK(idx[0] == 0 && idx[1] == 5 && idx[2] == 15 && idx[3] == 14);
}

TEST(gpu_moe_router_hash_matches_cpu) {
    if (!gpu_available()) SKIP("no GPU");
    enum { E = 256, k = 6, V = 1000 };
    uint64_t rng = 23;
    char msg[512];
    int32_t *tab = malloc(sizeof(int32_t) * V * k);
    CHECK(tab);
    random_idx(tab, V, k, E, &rng);
    tab[7 * k + 1] = tab[7 * k + 4]; /* token id 7 routes twice to one expert */
    static const int Ts[] = {1, 7, 4096};
    for (int c = 0; c < 3; c++) {
        const int T = Ts[c];
        float *l = malloc(sizeof(float) * (size_t)T * E);
        int32_t *tok = malloc(sizeof(int32_t) * T);
        CHECK(l && tok);
        for (int i = 0; i < T * E; i++) l[i] = 2.0f * test_rand_normal(&rng);
        for (int t = 0; t < T; t++) tok[t] = t == 0 ? 7 : (int32_t)(test_rand_u64(&rng) % V);
        dsv4_cpu_router_cfg cfg = {E, k, DSV4_CPU_SCORE_SQRTSOFTPLUS, 1, 1.5f};
        int ok = router_case(&cfg, T, l, NULL, tab, tok, V, msg, sizeof msg);
        free(l), free(tok);
        CHECK_MSG(ok, "hash T=%d: %s", T, msg);
    }
    free(tab);
}

/* ---------------------------------------------------------------- permutation */

/* Whether the int32 arrays got and want (bytes long) are equal; if not, msg names the first
 * differing entry. */
static int int_arrays_equal(const char *name, const void *got, const void *want, size_t bytes, char *msg, size_t len) {
    if (memcmp(got, want, bytes) == 0) return 1;
    const int32_t *g = got, *w = want;
    size_t e = 0;
    while (g[e] == w[e]) e++;
    snprintf(msg, len, "%s[%zu] = %d, CPU %d", name, e, g[e], w[e]);
    return 0;
}

typedef struct pjob {
    const int32_t *idx;
    int T, k, E, tile;
    dsv4_moe_layout out;
} pjob;

static dsv4_status enqueue_permute(cudaStream_t s, void *a) {
    pjob *j = a;
    return dsv4_cuda_moe_permute(s, j->idx, j->T, j->k, j->E, j->tile, &j->out);
}

static int permute_case(const int32_t *idx, int T, int k, int E, int tile, char *msg, size_t len) {
    host_layout L;
    int ok = 0;
    if (!layout_alloc(&L, T, k, E, tile)) return snprintf(msg, len, "out of memory"), 0;
    dsv4_moe_layout v = layout_view(&L);
    const size_t nk = (size_t)T * k, sizes[5] = {sizeof(int32_t) * E, sizeof(int32_t) * (E + 1),
                                                  sizeof(int32_t) * (size_t)L.max_rows,
                                                  sizeof(int32_t) * (size_t)L.max_tiles, sizeof(int32_t) * nk};
    const void *want[5] = {L.counts, L.offsets, L.row_token, L.tile_expert, L.inv};
    static const char *names[5] = {"counts", "offsets", "row_token", "tile_expert", "inv"};
    void *d_idx = gpu_upload(idx, sizeof(int32_t) * nk);
    gpu_buf outs[5];
    for (int i = 0; i < 5; i++) outs[i] = (gpu_buf){names[i], gpu_upload(NULL, sizes[i]), sizes[i], NULL};
    if (!d_idx || !outs[0].dev || !outs[1].dev || !outs[2].dev || !outs[3].dev || !outs[4].dev) {
        snprintf(msg, len, "cudaMalloc failed");
        goto done;
    }
    if (dsv4_cpu_moe_permute(idx, T, k, E, tile, &v) != DSV4_OK || !layout_check(&L, idx, msg, len)) {
        if (!msg[0]) snprintf(msg, len, "CPU layout: %s", dsv4_last_error());
        goto done;
    }
    pjob job = {d_idx, T, k, E, tile, {outs[0].dev, outs[1].dev, outs[2].dev, outs[3].dev, outs[4].dev}};
    if (!gpu_graph_check(gpu_test_stream(), enqueue_permute, &job, outs, 5, msg, len)) goto done;
    for (int i = 0; i < 5; i++)
        if (!int_arrays_equal(names[i], outs[i].host, want[i], sizes[i], msg, len)) goto done;
    ok = 1;
done:
    for (int i = 0; i < 5; i++) cudaFree(outs[i].dev), outs[i].dev = NULL;
    gpu_bufs_free(outs, 5);
    cudaFree(d_idx);
    layout_free(&L);
    return ok;
}

TEST(gpu_moe_permute_matches_cpu_layout) {
    if (!gpu_available()) SKIP("no GPU");
    static const struct { int T, k, E, tile, kind; } cases[] = {
        {1, 6, 256, 128, 0}, {7, 6, 256, 128, 0}, {4096, 6, 256, 128, 0}, {4096, 8, 384, 64, 0},
        {7, 4, 16, 1, 0},    {4096, 4, 16, 16, 0}, {4096, 6, 256, 128, 1} /* all to one */,
        {513, 4, 16, 8, 2} /* hash duplicates, dropped ids */, {3, 6, 256, 128, 3} /* 250+ empty experts */,
        {20, 4, 16, 8, 2} /* the same, few pairs: count and place in one kernel */, {85, 6, 256, 1, 0},
        {128, 4, 256, 1, 0} /* 512 pairs: still one kernel */, {171, 3, 256, 1, 0} /* 513: two */};
    uint64_t rng = 31;
    char msg[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int T = cases[c].T, k = cases[c].k, E = cases[c].E;
        int32_t *idx = malloc(sizeof(int32_t) * (size_t)T * k);
        CHECK(idx);
        random_idx(idx, T, k, E, &rng);
        if (cases[c].kind == 1)
            for (int p = 0; p < T * k; p++) idx[p] = E - 1;
        if (cases[c].kind == 2) idx[0] = idx[1] = 3, idx[9] = -1, idx[T * k - 1] = E;
        msg[0] = 0;
        int ok = permute_case(idx, T, k, E, cases[c].tile, msg, sizeof msg);
        free(idx);
        CHECK_MSG(ok, "T=%d k=%d E=%d tile=%d kind %d: %s", T, k, E, cases[c].tile, cases[c].kind, msg);
    }
}

/* ---------------------------------------------------------------- routing + layout, fused */

typedef struct rpjob {
    dsv4_cuda_router_cfg cfg;
    int T, vocab, tile;
    const float *logits, *bias;
    const int32_t *tid2eid, *tok;
    int32_t *idx, *active, *n_active;
    float *w;
    dsv4_moe_layout out;
    unsigned int *done;
    int with_shared;
} rpjob;

static dsv4_status enqueue_route_permute(cudaStream_t s, void *a) {
    rpjob *j = a;
    return dsv4_cuda_moe_route_permute(s, &j->cfg, j->T, j->logits, j->bias, j->tid2eid, j->tok, j->vocab, j->idx, j->w,
                                       j->tile, &j->out, j->active, j->n_active, j->done, j->with_shared);
}

/* dsv4_cuda_moe_route_permute (one launch up to 512 pairs) against the CPU router, the CPU
 * layout and the active list derived from the CPU counts: every array bit-exact (weights:
 * the CPU's within 4 ulp, as the router test), in a direct run and graph replays (the block
 * counter must be back at 0 after each). with_shared: slot k of every token is (E, 1), and the
 * layout is the CPU's for k + 1 slots over E + 1 experts. */
static int route_permute_case(const dsv4_cpu_router_cfg *cfg, int T, int tile, const float *logits, const float *bias,
                              const int32_t *tab, const int32_t *tok, int vocab, int with_shared, char *msg,
                              size_t len) {
    const int sh = with_shared ? 1 : 0, E = cfg->n_experts + sh, k = cfg->topk + sh; /* the layout's */
    const size_t nk = (size_t)T * k;
    int ok = 0;
    host_layout L;
    if (!layout_alloc(&L, T, k, E, tile)) return snprintf(msg, len, "out of memory"), 0;
    int32_t *idx = malloc(sizeof(int32_t) * nk), *idx_k = malloc(sizeof(int32_t) * nk);
    int32_t want_act[DSV4_CUDA_MOE_MAX_EXPERTS + 1];
    float *w_k = malloc(sizeof(float) * nk);
    float *w = malloc(sizeof(float) * nk);
    /* the inputs have the router's sizes (E, k above are the layout's) */
    const int E_r = cfg->n_experts, k_r = cfg->topk;
    void *d_l = gpu_upload(logits, sizeof(float) * (size_t)T * E_r), *d_b = bias ? gpu_upload(bias, sizeof(float) * E_r) : NULL;
    void *d_t = tab ? gpu_upload(tab, sizeof(int32_t) * (size_t)vocab * k_r) : NULL;
    void *d_tok = tok ? gpu_upload(tok, sizeof(int32_t) * T) : NULL;
    unsigned int zero = 0;
    void *d_done = gpu_upload(&zero, sizeof zero);
    enum { NB = 9 };
    static const char *names[NB] = {"idx", "weights", "counts", "offsets", "row_token", "tile_expert", "inv", "active",
                                    "n_active"};
    const size_t sizes[NB] = {sizeof(int32_t) * nk, sizeof(float) * nk, sizeof(int32_t) * E, sizeof(int32_t) * (E + 1),
                              sizeof(int32_t) * (size_t)L.max_rows, sizeof(int32_t) * (size_t)L.max_tiles,
                              sizeof(int32_t) * nk, sizeof(int32_t) * E, sizeof(int32_t)};
    gpu_buf outs[NB];
    int alloc_ok = idx && idx_k && w && w_k && d_l && (!bias || d_b) && (!tab || (d_t && d_tok)) && d_done;
    for (int i = 0; i < NB; i++) {
        outs[i] = (gpu_buf){names[i], gpu_upload(NULL, sizes[i]), sizes[i], NULL};
        alloc_ok &= outs[i].dev != NULL;
    }
    if (!alloc_ok) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    dsv4_moe_layout v = layout_view(&L);
    if (dsv4_cpu_router(cfg, T, logits, bias, tab, tok, vocab, idx_k, w_k) != DSV4_OK) {
        snprintf(msg, len, "CPU: %s", dsv4_last_error());
        goto done;
    }
    for (int t = 0; t < T; t++) /* the k routed slots, then the shared one */
        for (int j = 0; j < k; j++) {
            idx[(size_t)t * k + j] = j < k - sh ? idx_k[(size_t)t * (k - sh) + j] : E - 1;
            w[(size_t)t * k + j] = j < k - sh ? w_k[(size_t)t * (k - sh) + j] : 1.0f;
        }
    if (dsv4_cpu_moe_permute(idx, T, k, E, tile, &v) != DSV4_OK) {
        snprintf(msg, len, "CPU: %s", dsv4_last_error());
        goto done;
    }
    int n_act = 0;
    for (int e = 0; e < E; e++)
        if (L.counts[e] > 0) want_act[n_act++] = e;
    for (int e = n_act; e < E; e++) want_act[e] = -1;
    want_act[E] = n_act;
    rpjob job = {{E - sh, k - sh, (int)cfg->score, cfg->normalize, cfg->scaling}, T, vocab, tile, d_l, d_b, d_t, d_tok,
                 outs[0].dev, outs[7].dev, outs[8].dev, outs[1].dev,
                 {outs[2].dev, outs[3].dev, outs[4].dev, outs[5].dev, outs[6].dev}, d_done, sh};
    if (!gpu_graph_check(gpu_test_stream(), enqueue_route_permute, &job, outs, NB, msg, len)) goto done;
    const void *want[NB] = {idx, NULL, L.counts, L.offsets, L.row_token, L.tile_expert, L.inv, want_act, &want_act[E]};
    for (int i = 0; i < NB; i++) {
        if (i == 1) {
            const float *g = outs[1].host;
            for (size_t p = 0; p < nk; p++)
                if (ulp_diff(g[p], w[p]) > 4) {
                    snprintf(msg, len, "weight %zu: %a, CPU %a", p, (double)g[p], (double)w[p]);
                    goto done;
                }
            continue;
        }
        if (!int_arrays_equal(names[i], outs[i].host, want[i], sizes[i], msg, len)) goto done;
    }
    unsigned int left = 1;
    if (cudaMemcpy(&left, d_done, sizeof left, cudaMemcpyDeviceToHost) != cudaSuccess || left != 0) {
        snprintf(msg, len, "block counter left at %u", left);
        goto done;
    }
    ok = 1;
done:
    for (int i = 0; i < NB; i++) cudaFree(outs[i].dev), outs[i].dev = NULL;
    gpu_bufs_free(outs, NB);
    cudaFree(d_l), cudaFree(d_b), cudaFree(d_t), cudaFree(d_tok), cudaFree(d_done);
    free(idx), free(w), free(idx_k), free(w_k);
    layout_free(&L);
    return ok;
}

TEST(gpu_moe_route_permute_matches_cpu) {
    if (!gpu_available()) SKIP("no GPU");
    /* T·k <= 512 takes the one-launch kernel, above it the router + permute pair */
    static const struct { int E, k, T, tile, hash, shared; } cases[] = {
        {256, 6, 1, 1, 0, 0},  {256, 6, 4, 1, 0, 0}, {256, 6, 64, 1, 0, 0}, {256, 6, 85, 1, 0, 0},
        {256, 6, 86, 1, 0, 0}, {384, 8, 64, 1, 0, 0}, {16, 4, 33, 8, 0, 0}, {16, 4, 7, 1, 1, 0},
        {256, 6, 3, 128, 0, 0},
        /* the shared expert as slot k (expert E): up to 512 pairs of k + 1 */
        {256, 6, 1, 1, 0, 1}, {256, 6, 64, 1, 0, 1}, {256, 6, 73, 1, 0, 1}, {16, 4, 7, 1, 1, 1}, {383, 8, 56, 1, 0, 1}};
    enum { V = 100 };
    uint64_t rng = 41;
    char msg[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int E = cases[c].E, k = cases[c].k, T = cases[c].T;
        dsv4_cpu_router_cfg cfg = {E, k, DSV4_CPU_SCORE_SQRTSOFTPLUS, 1, 1.5f};
        float *l = malloc(sizeof(float) * (size_t)T * E), bias[DSV4_CUDA_MOE_MAX_EXPERTS];
        int32_t *tab = malloc(sizeof(int32_t) * V * k), tok[128];
        CHECK(l && tab && T <= 128);
        for (int e = 0; e < E; e++) bias[e] = 0.1f * test_rand_normal(&rng);
        tie_free_logits(l, T, E, k, 0, bias, &rng);
        random_idx(tab, V, k, E, &rng);
        tab[k + 1] = tab[k + 3]; /* token id 1 routes twice to one expert */
        for (int t = 0; t < T; t++) tok[t] = t == 0 ? 1 : (int32_t)(test_rand_u64(&rng) % V);
        msg[0] = 0;
        const int hash = cases[c].hash;
        int ok = route_permute_case(&cfg, T, cases[c].tile, l, hash ? NULL : bias, hash ? tab : NULL, hash ? tok : NULL,
                                    hash ? V : 0, cases[c].shared, msg, sizeof msg);
        free(l), free(tab);
        CHECK_MSG(ok, "E=%d k=%d T=%d tile %d hash %d shared %d: %s", E, k, T, cases[c].tile, hash, cases[c].shared, msg);
    }
}

/* ---------------------------------------------------------------- SwiGLU epilogue */

/* moe.c's expression; dev selects the device's expf (emulation) or the host's. */
static float swiglu_ref(float g, float u, float limit, int dev) {
    float gi = fminf(g, limit), ui = fminf(fmaxf(u, -limit), limit);
    return gi / (1.0f + (dev ? dexpf(-gi) : expf(-gi))) * ui;
}

typedef struct sjob {
    dsv4_cuda_swiglu_args a;
    dsv4_cuda_nvfp4_out q;
} sjob;

static dsv4_status enqueue_swiglu(cudaStream_t s, void *arg) {
    sjob *j = arg;
    return dsv4_cuda_moe_swiglu(s, &j->a);
}

/* kind: 0 no NVFP4, 1 dynamic per row, 2 static scalar, 3 static per expert (tile_expert).
 * il: h's rows interleaved in blocks of il gate then il up values (0: [gate | up] halves). */
static int swiglu_case(int rows, int inter, int bf16_in, int bf16_out, int kind, int swizzled, int n_used, int il,
                       char *msg, size_t len) {
    uint64_t rng = 1000 + (uint64_t)rows * 7 + (uint64_t)kind;
    const float limit = 10.0f;
    const int tile = 4, n_tiles = rows / tile, kb = inter / 16;
    const size_t nh = (size_t)rows * 2 * inter, na = (size_t)rows * inter;
    const size_t nsf = swizzled ? dsv4_swizzled_scale_bytes(rows, kb) : (size_t)rows * kb;
    int ok = 0;
    float *h = malloc(sizeof(float) * nh), *a32 = malloc(sizeof(float) * na), scales[4] = {0.003f, 0.0007f, 0.01f, 0.002f};
    uint16_t *hb = malloc(2 * nh);
    int32_t *tiles = malloc(sizeof(int32_t) * (size_t)(n_tiles + 1));
    uint8_t *q = malloc(na / 2 + 1), *sf = malloc(nsf + 1);
    float *rs = malloc(sizeof(float) * (size_t)rows), *sc = calloc((size_t)(rows > 4 ? rows : 4), sizeof(float));
    void *d_h = NULL, *d_out = NULL, *d_q = NULL, *d_sf = NULL, *d_scale = NULL, *d_n = NULL, *d_tiles = NULL;
    gpu_buf outs[4];
    int n_outs = 0;
    if (!h || !a32 || !hb || !tiles || !q || !sf || !rs || !sc) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    memcpy(sc, scales, sizeof scales);
    for (size_t i = 0; i < nh; i++) h[i] = 6.0f * test_rand_normal(&rng); /* many values beyond ±limit */
    h[0] = NAN, h[inter] = 40.0f, h[1] = -200.0f, h[inter + 1] = -INFINITY, h[2] = 0.0f;
    for (size_t i = 0; i < nh; i++) hb[i] = dsv4_bf16_encode(h[i]);
    if (bf16_in)
        for (size_t i = 0; i < nh; i++) h[i] = dsv4_bf16_round(h[i]);
    if (il) { /* the device gets each row interleaved: gate i at (i/il)·2il + i%il, up il later */
        float *hi = malloc(sizeof(float) * nh);
        uint16_t *hbi = malloc(2 * nh);
        if (!hi || !hbi) {
            free(hi), free(hbi);
            snprintf(msg, len, "out of memory");
            goto done;
        }
        for (size_t r = 0; r < (size_t)rows; r++)
            for (int i = 0; i < inter; i++) {
                const size_t gi = r * 2 * inter + (size_t)(i / il) * 2 * il + i % il;
                hi[gi] = h[r * 2 * inter + i], hi[gi + il] = h[r * 2 * inter + inter + i];
                hbi[gi] = hb[r * 2 * inter + i], hbi[gi + il] = hb[r * 2 * inter + inter + i];
            }
        d_h = gpu_upload(bf16_in ? (const void *)hbi : (const void *)hi, nh * (bf16_in ? 2 : 4));
        free(hi), free(hbi);
    }
    for (int i = 0; i < n_tiles; i++) tiles[i] = i * tile < n_used ? (i * 3) % 4 : -1;
    const int used = kind == 3 ? n_used : (n_used ? n_used : rows);
    int32_t n_rows = used;
    if (!il) d_h = gpu_upload(bf16_in ? (const void *)hb : (const void *)h, nh * (bf16_in ? 2 : 4));
    d_out = gpu_upload(NULL, na * 4);
    d_q = gpu_upload(NULL, na / 2);
    d_sf = gpu_upload(NULL, nsf);
    d_scale = gpu_upload(sc, sizeof(float) * (size_t)(rows > 4 ? rows : 4));
    d_n = gpu_upload(&n_rows, sizeof n_rows);
    d_tiles = gpu_upload(tiles, sizeof(int32_t) * (size_t)(n_tiles + 1));
    if (!d_h || !d_out || !d_q || !d_sf || !d_scale || !d_n || !d_tiles) {
        snprintf(msg, len, "cudaMalloc failed");
        goto done;
    }
    sjob job;
    memset(&job, 0, sizeof job);
    job.a = (dsv4_cuda_swiglu_args){d_h, bf16_in ? DSV4_CUDA_BF16 : DSV4_CUDA_F32, rows, inter, limit,
                                    n_used ? d_n : NULL, d_out, bf16_out ? DSV4_CUDA_BF16 : DSV4_CUDA_F32, NULL,
                                    kind == 3 ? d_tiles : NULL, tile, il};
    if (kind) {
        job.q = (dsv4_cuda_nvfp4_out){d_q, d_sf, d_scale, kind == 1 ? DSV4_ACT_SCALE_DYNAMIC_TOKEN : DSV4_ACT_SCALE_STATIC,
                                      swizzled ? DSV4_SF_SWIZZLED : DSV4_SF_LINEAR};
        job.a.q = &job.q;
    }
    /* only the rows in use are written (swizzled is run with all rows in use) */
    outs[n_outs++] = (gpu_buf){"out", d_out, (size_t)used * inter * (bf16_out ? 2 : 4), NULL};
    if (kind) {
        outs[n_outs++] = (gpu_buf){"q", d_q, (size_t)used * inter / 2, NULL};
        outs[n_outs++] = (gpu_buf){"sf", d_sf, swizzled ? nsf : (size_t)used * kb, NULL};
        if (kind == 1) outs[n_outs++] = (gpu_buf){"scale", d_scale, sizeof(float) * (size_t)used, NULL};
    }
    if (!gpu_graph_check(gpu_test_stream(), enqueue_swiglu, &job, outs, n_outs, msg, len)) goto done;
    /* the activation: bit-exact with the emulation, within 4 ulp of moe.c's expression
     * (glibc 2.36: ~0.03% of values differ, by at most 3 ulp, measured on the host) */
    for (int r = 0; r < used; r++)
        for (int i = 0; i < inter; i++) {
            float g = h[(size_t)r * 2 * inter + i], u = h[(size_t)r * 2 * inter + inter + i];
            float e = swiglu_ref(g, u, limit, 1), c = swiglu_ref(g, u, limit, 0);
            size_t o = (size_t)r * inter + i;
            float got = bf16_out ? dsv4_bf16_decode(((uint16_t *)outs[0].host)[o]) : ((float *)outs[0].host)[o];
            float want = bf16_out ? dsv4_bf16_round(e) : e;
            if (bits(got) != bits(want) || (!bf16_out && ulp_diff(got, c) > 4)) {
                snprintf(msg, len, "row %d col %d (g %a u %a): gpu %a, emulation %a, CPU %a", r, i, (double)g, (double)u,
                         (double)got, (double)want, (double)c);
                goto done;
            }
            a32[o] = e;
        }
    if (kind) { /* NVFP4: the CPU quantizer on the same fp32 activation */
        if (kind == 3) {
            for (int r = 0; r < used; r++) {
                float s = scales[tiles[r / tile]];
                if (dsv4_cpu_quantize_nvfp4_act(a32 + (size_t)r * inter, 1, inter, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR,
                                                &s, q + (size_t)r * inter / 2, sf + (size_t)r * kb) != DSV4_OK)
                    goto cpu_fail;
            }
        } else {
            rs[0] = scales[0];
            if (dsv4_cpu_quantize_nvfp4_act(a32, used, inter, kind == 1 ? DSV4_ACT_SCALE_DYNAMIC_TOKEN : DSV4_ACT_SCALE_STATIC,
                                            swizzled ? DSV4_SF_SWIZZLED : DSV4_SF_LINEAR, rs, q, sf) != DSV4_OK)
                goto cpu_fail;
        }
        if (memcmp(outs[1].host, q, outs[1].bytes) || memcmp(outs[2].host, sf, outs[2].bytes) ||
            (kind == 1 && memcmp(outs[3].host, rs, outs[3].bytes))) {
            snprintf(msg, len, "NVFP4 output differs from the CPU quantizer (q %d, sf %d)",
                     memcmp(outs[1].host, q, outs[1].bytes) != 0, memcmp(outs[2].host, sf, outs[2].bytes) != 0);
            goto done;
        }
    }
    ok = 1;
    goto done;
cpu_fail:
    snprintf(msg, len, "CPU quantizer: %s", dsv4_last_error());
done:
    gpu_bufs_free(outs, n_outs);
    cudaFree(d_h), cudaFree(d_out), cudaFree(d_q), cudaFree(d_sf), cudaFree(d_scale), cudaFree(d_n), cudaFree(d_tiles);
    free(h), free(a32), free(hb), free(tiles), free(q), free(sf), free(rs), free(sc);
    return ok;
}

TEST(gpu_moe_swiglu_matches_cpu) {
    if (!gpu_available()) SKIP("no GPU");
    static const struct { int rows, inter, bf16_in, bf16_out, kind, swizzled, n_used, il; } cases[] = {
        {8, 2048, 0, 0, 0, 0, 0, 0},   {37, 2048, 1, 1, 0, 0, 0, 0}, {64, 2048, 0, 0, 0, 0, 20, 0},
        {37, 2048, 0, 0, 1, 0, 0, 0},  {37, 2048, 1, 0, 1, 1, 0, 0}, {40, 2048, 0, 1, 2, 0, 0, 0},
        {131, 512, 0, 0, 2, 1, 0, 0},  {64, 2048, 0, 0, 3, 0, 24, 0}, {64, 2048, 1, 0, 1, 0, 33, 0},
        /* NVFP4 rows longer than the shared-memory staging (SWIGLU_STAGE_MAX 4096): evaluated twice */
        {5, 4112, 0, 0, 1, 0, 0, 0},   {6, 4112, 1, 1, 2, 0, 0, 0},
        /* the routed L1 stack's interleaved rows (blocks of 8 gate, 8 up), every path */
        {6, 2048, 0, 1, 0, 0, 0, 8},   {37, 2048, 0, 0, 1, 0, 0, 8}, {64, 2048, 1, 0, 3, 0, 24, 8},
        {5, 4112, 0, 0, 1, 0, 0, 8},
        /* static scales over a prefill's rows (more than SWIGLU_PER_ELEM_MAX elements): a block
         * per row, staged or (longer rows) evaluated twice */
        {600, 2048, 0, 0, 2, 1, 0, 8}, {600, 2048, 1, 0, 3, 0, 550, 8}, {300, 4112, 0, 1, 2, 0, 0, 0},
        /* static per-expert scales on rows longer than the staging: a decode step's rows (element
         * per thread) and a prefill's (a block per row, evaluated twice) */
        {8, 4112, 0, 0, 3, 0, 7, 8},   {300, 4112, 1, 0, 3, 0, 277, 8}};
    char msg[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        CHECK_MSG(swiglu_case(cases[c].rows, cases[c].inter, cases[c].bf16_in, cases[c].bf16_out, cases[c].kind,
                              cases[c].swizzled, cases[c].n_used, cases[c].il, msg, sizeof msg),
                  "case %zu (rows %d, I %d, kind %d): %s", c, cases[c].rows, cases[c].inter, cases[c].kind, msg);
}

/* ---------------------------------------------------------------- combine */

typedef struct cjob {
    int T, k, D;
    const void *y, *shared;
    dsv4_cuda_dtype y_dtype, shared_dtype, out_dtype;
    const int32_t *idx, *inv;
    const float *w;
    void *out;
} cjob;

static dsv4_status enqueue_combine(cudaStream_t s, void *a) {
    cjob *j = a;
    return dsv4_cuda_moe_combine(s, j->T, j->k, j->D, j->y, j->y_dtype, j->idx, j->inv, j->w, j->shared,
                                 j->shared_dtype, j->out, j->out_dtype);
}

static int combine_case(int T, int k, int E, int D, int bf16_y, int with_shared, int bf16_out, int dup, char *msg,
                        size_t len) {
    uint64_t rng = 77 + (uint64_t)T;
    int ok = 0;
    host_layout L;
    const size_t nk = (size_t)T * k;
    int32_t *idx = malloc(sizeof(int32_t) * nk);
    float *w = malloc(sizeof(float) * nk), *sh = malloc(sizeof(float) * (size_t)T * D), *y = NULL, *ref = NULL;
    uint16_t *yb = NULL, *shb = malloc(2 * (size_t)T * D);
    void *d_idx = NULL, *d_inv = NULL, *d_w = NULL, *d_y = NULL, *d_sh = NULL, *d_out = NULL;
    gpu_buf out = {"out", NULL, (size_t)T * D * (bf16_out ? 2 : 4), NULL};
    if (!idx || !w || !sh || !shb || !layout_alloc(&L, T, k, E, 16)) return snprintf(msg, len, "out of memory"), 0;
    random_idx(idx, T, k, E, &rng);
    if (dup) idx[1] = idx[k - 1] = idx[0] == 0 ? 1 : 0, idx[k] = -1; /* a repeated expert, a dropped slot */
    for (size_t i = 0; i < nk; i++) w[i] = test_rand_uniform(&rng);
    dsv4_moe_layout v = layout_view(&L);
    if (dsv4_cpu_moe_permute(idx, T, k, E, 16, &v) != DSV4_OK) {
        snprintf(msg, len, "layout: %s", dsv4_last_error());
        goto done;
    }
    const size_t ny = (size_t)L.max_rows * D;
    y = malloc(sizeof(float) * ny), yb = malloc(2 * ny), ref = malloc(sizeof(float) * (size_t)T * D);
    if (!y || !yb || !ref) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < ny; i++) {
        y[i] = test_rand_normal(&rng), yb[i] = dsv4_bf16_encode(y[i]);
        if (bf16_y) y[i] = dsv4_bf16_round(y[i]);
    }
    for (size_t i = 0; i < (size_t)T * D; i++) {
        sh[i] = test_rand_normal(&rng), shb[i] = dsv4_bf16_encode(sh[i]);
        if (bf16_y) sh[i] = dsv4_bf16_round(sh[i]);
    }
    /* dsv4_cpu_moe's accumulation: out = 0; experts ascending, slots in order; shared last */
    for (int t = 0; t < T; t++) {
        int ord[8], n = 0; /* the token's slots in dsv4_cpu_moe's visiting order */
        for (int e = 0; e < E; e++)
            for (int j = 0; j < k; j++)
                if (idx[t * k + j] == e) ord[n++] = t * k + j;
        for (int c = 0; c < D; c++) {
            float acc = 0.0f;
            for (int i = 0; i < n; i++) acc += y[(size_t)L.inv[ord[i]] * D + c] * w[ord[i]];
            if (with_shared) acc += sh[(size_t)t * D + c];
            ref[(size_t)t * D + c] = acc;
        }
    }
    d_idx = gpu_upload(idx, sizeof(int32_t) * nk), d_inv = gpu_upload(L.inv, sizeof(int32_t) * nk);
    d_w = gpu_upload(w, sizeof(float) * nk);
    d_y = bf16_y ? gpu_upload(yb, 2 * ny) : gpu_upload(y, 4 * ny);
    d_sh = bf16_y ? gpu_upload(shb, 2 * (size_t)T * D) : gpu_upload(sh, 4 * (size_t)T * D);
    d_out = out.dev = gpu_upload(NULL, out.bytes);
    if (!d_idx || !d_inv || !d_w || !d_y || !d_sh || !d_out) {
        snprintf(msg, len, "cudaMalloc failed");
        goto done;
    }
    dsv4_cuda_dtype yt = bf16_y ? DSV4_CUDA_BF16 : DSV4_CUDA_F32;
    cjob job = {T, k, D, d_y, with_shared ? d_sh : NULL, yt, yt, bf16_out ? DSV4_CUDA_BF16 : DSV4_CUDA_F32,
                d_idx, d_inv, d_w, d_out};
    if (!gpu_graph_check(gpu_test_stream(), enqueue_combine, &job, &out, 1, msg, len)) goto done;
    for (size_t i = 0; i < (size_t)T * D; i++) {
        float got = bf16_out ? dsv4_bf16_decode(((uint16_t *)out.host)[i]) : ((float *)out.host)[i];
        float want = bf16_out ? dsv4_bf16_round(ref[i]) : ref[i];
        if (bits(got) != bits(want)) {
            snprintf(msg, len, "token %zu col %zu: gpu %a, CPU %a", i / D, i % D, (double)got, (double)want);
            goto done;
        }
    }
    ok = 1;
done:
    gpu_bufs_free(&out, 1);
    cudaFree(d_idx), cudaFree(d_inv), cudaFree(d_w), cudaFree(d_y), cudaFree(d_sh), cudaFree(d_out);
    free(idx), free(w), free(sh), free(shb), free(y), free(yb), free(ref);
    layout_free(&L);
    return ok;
}

TEST(gpu_moe_combine_matches_cpu_order) {
    if (!gpu_available()) SKIP("no GPU");
    static const struct { int T, k, E, D, bf16_y, shared, bf16_out, dup; } cases[] = {
        {1, 6, 256, 4096, 0, 1, 0, 0}, {7, 6, 256, 4096, 1, 1, 1, 0}, {300, 6, 256, 1024, 0, 0, 0, 0},
        {7, 4, 16, 7168, 0, 1, 0, 1},  {64, 8, 16, 256, 1, 0, 0, 1}};
    char msg[512];
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++)
        CHECK_MSG(combine_case(cases[c].T, cases[c].k, cases[c].E, cases[c].D, cases[c].bf16_y, cases[c].shared,
                               cases[c].bf16_out, cases[c].dup, msg, sizeof msg),
                  "case %zu (T %d, k %d, D %d): %s", c, cases[c].T, cases[c].k, cases[c].D, msg);
}

TEST(gpu_moe_rejects_bad_arguments) {
    /* argument checks come before any CUDA call, so they run without a GPU too */
    int32_t dummy[16] = {0};
    float f[16] = {0};
    dsv4_cuda_router_cfg cfg = {400, 6, 0, 1, 1.5f};
    CHECK_STATUS(dsv4_cuda_moe_router(NULL, &cfg, 1, f, NULL, NULL, NULL, 0, dummy, f), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "moe_router") != NULL);
    cfg.n_experts = 16, cfg.topk = 9;
    CHECK_STATUS(dsv4_cuda_moe_router(NULL, &cfg, 1, f, NULL, NULL, NULL, 0, dummy, f), DSV4_ERR_SHAPE);
    cfg.topk = 4, cfg.score = 3;
    CHECK_STATUS(dsv4_cuda_moe_router(NULL, &cfg, 1, f, NULL, NULL, NULL, 0, dummy, f), DSV4_ERR_INVALID_ARGUMENT);
    cfg.score = 0;
    CHECK_OK(dsv4_cuda_moe_router(NULL, &cfg, 0, NULL, NULL, NULL, NULL, 0, NULL, NULL));
    dsv4_moe_layout v = {dummy, dummy, dummy, dummy, NULL};
    CHECK_STATUS(dsv4_cuda_moe_permute(NULL, dummy, 1, 4, 16, 4, &v), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_cuda_moe_permute(NULL, dummy, 1, 4, 16, 0, &v), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "moe_permute") != NULL);
    dsv4_cuda_swiglu_args a = {f, DSV4_CUDA_F32, 1, 24, 10.0f, NULL, NULL, DSV4_CUDA_F32, NULL, NULL, 0, 0};
    CHECK_STATUS(dsv4_cuda_moe_swiglu(NULL, &a), DSV4_ERR_INVALID_ARGUMENT); /* no output */
    uint8_t qb[64] __attribute__((aligned(16))) = {0};
    dsv4_cuda_nvfp4_out q = {qb, qb, f, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR};
    a.q = &q;
    CHECK_STATUS(dsv4_cuda_moe_swiglu(NULL, &a), DSV4_ERR_SHAPE); /* 24 is not a multiple of 16 */
    a.inter = 32, q.mode = DSV4_ACT_SCALE_DYNAMIC_TENSOR;
    CHECK_STATUS(dsv4_cuda_moe_swiglu(NULL, &a), DSV4_ERR_UNSUPPORTED);
    CHECK(strstr(dsv4_last_error(), "moe_swiglu") != NULL);
    a.rows = 0, q.mode = DSV4_ACT_SCALE_STATIC;
    CHECK_OK(dsv4_cuda_moe_swiglu(NULL, &a));
    CHECK_STATUS(dsv4_cuda_moe_combine(NULL, 1, 10, 16, f, DSV4_CUDA_F32, dummy, dummy, f, NULL, DSV4_CUDA_F32, f,
                                       DSV4_CUDA_F32),
                 DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "moe_combine") != NULL);
    CHECK_OK(dsv4_cuda_moe_combine(NULL, 0, 6, 16, NULL, DSV4_CUDA_F32, NULL, NULL, NULL, NULL, DSV4_CUDA_F32, NULL,
                                   DSV4_CUDA_F32));
}
#else
TEST(gpu_moe_router_topk_matches_cpu) { SKIP("built without CUDA"); }
#endif
