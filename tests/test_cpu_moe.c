/* CPU references: router (scores, top-k, hash routing, weights), clamped SwiGLU experts
 * and the MoE combine. */
#include <math.h>

#include "cpu/ops.h"
#include "test.h"

static void fill_normal(float *a, size_t n, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) a[i] = scale * test_rand_normal(rng);
}

TEST(cpu_softplus_is_stable) {
    CHECK(dsv4_cpu_softplus(100.0f) == 100.0f);
    float tiny = dsv4_cpu_softplus(-100.0f); /* e^-100 ≈ 3.7e-44: a subnormal, not 0 or NaN */
    CHECK_MSG(tiny > 0.0f && tiny < 1e-43f, "softplus(-100) = %g", tiny);
    CHECK(dsv4_cpu_softplus(1e30f) == 1e30f);
    CHECK(dsv4_cpu_softplus(-1e30f) == 0.0f);
    CHECK(fabsf(dsv4_cpu_softplus(0.0f) - (float)log(2.0)) < 1e-7f);
    for (float x = -30.0f; x <= 30.0f; x += 0.37f) {
        double want = log1p(exp((double)x));
        CHECK_MSG(fabs(dsv4_cpu_softplus(x) - want) <= 2e-7 * want, "x=%g", x);
    }
    CHECK(isfinite(sqrtf(dsv4_cpu_softplus(-100.0f))));
}

TEST(cpu_router_topk_bias_ties_and_weights) {
    enum { T = 2, E = 6, K = 3 };
    dsv4_cpu_router_cfg cfg = {E, K, DSV4_CPU_SCORE_SQRTSOFTPLUS, 1, 1.5f};
    /* token 0: experts 1, 3, 4 tie on logit 2; token 1: bias lifts expert 5 */
    float logits[T * E] = {0, 2, -1, 2, 2, 1, /**/ 3, 2, 1, 0, -1, -2};
    float bias[E] = {0, 0, 0, 0, 0, 10};
    int idx[T * K];
    float w[T * K];
    CHECK_OK(dsv4_cpu_router(&cfg, T, logits, NULL, NULL, NULL, 0, idx, w));
    CHECK(idx[0] == 1 && idx[1] == 3 && idx[2] == 4); /* ties → lowest ids, in order */
    CHECK(idx[3] == 0 && idx[4] == 1 && idx[5] == 2);
    CHECK_OK(dsv4_cpu_router(&cfg, T, logits, bias, NULL, NULL, 0, idx, w));
    CHECK(idx[3] == 5 && idx[4] == 0 && idx[5] == 1);
    /* weights come from the scores (not score + bias), normalised, then scaled */
    double s5 = sqrt(log1p(exp(-2.0))), s0 = sqrt(log1p(exp(3.0))), s1 = sqrt(log1p(exp(2.0)));
    double sum = s5 + s0 + s1;
    CHECK(fabs(w[3] - 1.5 * s5 / sum) < 1e-6 && fabs(w[4] - 1.5 * s0 / sum) < 1e-6 &&
          fabs(w[5] - 1.5 * s1 / sum) < 1e-6);
    CHECK(fabs(w[0] + w[1] + w[2] - 1.5) < 1e-6);
    /* no normalisation: raw scores times the factor */
    cfg.normalize = 0;
    CHECK_OK(dsv4_cpu_router(&cfg, T, logits, bias, NULL, NULL, 0, idx, w));
    CHECK(fabs(w[3] - 1.5 * s5) < 1e-6);
}

TEST(cpu_router_matches_sorting_on_random_logits) {
    uint64_t rng = 81;
    enum { T = 20, E = 16, K = 5 };
    dsv4_cpu_score_func fs[3] = {DSV4_CPU_SCORE_SQRTSOFTPLUS, DSV4_CPU_SCORE_SIGMOID, DSV4_CPU_SCORE_SOFTMAX};
    for (int fi = 0; fi < 3; fi++) {
        dsv4_cpu_router_cfg cfg = {E, K, fs[fi], 1, 2.5f};
        float logits[T * E], bias[E], w[T * K];
        int idx[T * K];
        fill_normal(logits, T * E, 2.0f, &rng);
        fill_normal(bias, E, 0.3f, &rng);
        CHECK_OK(dsv4_cpu_router(&cfg, T, logits, bias, NULL, NULL, 0, idx, w));
        for (int t = 0; t < T; t++) {
            double s[E], z = 0, mx = -INFINITY;
            for (int e = 0; e < E; e++) mx = fmax(mx, logits[t * E + e]);
            for (int e = 0; e < E; e++) z += exp(logits[t * E + e] - mx);
            for (int e = 0; e < E; e++) {
                double l = logits[t * E + e];
                s[e] = fi == 0 ? sqrt(log1p(exp(l))) : fi == 1 ? 1 / (1 + exp(-l)) : exp(l - mx) / z;
            }
            /* rank of each chosen expert by s + bias must be its slot */
            double wsum = 0;
            for (int j = 0; j < K; j++) wsum += s[idx[t * K + j]];
            for (int j = 0; j < K; j++) {
                int e = idx[t * K + j], better = 0;
                for (int u = 0; u < E; u++) better += s[u] + bias[u] > s[e] + bias[e] + 1e-6;
                CHECK_MSG(better == j, "func %d t=%d slot %d expert %d has %d better", fi, t, j, e, better);
                CHECK(fabs(w[t * K + j] - 2.5 * s[e] / wsum) < 1e-5);
            }
        }
    }
}

TEST(cpu_router_hash_routing) {
    enum { E = 4, K = 2, V = 3 };
    dsv4_cpu_router_cfg cfg = {E, K, DSV4_CPU_SCORE_SQRTSOFTPLUS, 1, 1.0f};
    int32_t tid2eid[V * K] = {0, 1, /**/ 2, 2, /**/ 3, 0};
    int32_t toks[3] = {1, 2, 0};
    float logits[3 * E] = {0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3};
    int idx[3 * K];
    float w[3 * K];
    CHECK_OK(dsv4_cpu_router(&cfg, 3, logits, NULL, tid2eid, toks, V, idx, w));
    CHECK(idx[0] == 2 && idx[1] == 2 && idx[2] == 3 && idx[3] == 0 && idx[4] == 0 && idx[5] == 1);
    CHECK(fabsf(w[0] - 0.5f) < 1e-7f && fabsf(w[1] - 0.5f) < 1e-7f); /* same expert twice */
    toks[1] = 3;
    CHECK_STATUS(dsv4_cpu_router(&cfg, 3, logits, NULL, tid2eid, toks, V, idx, w), DSV4_ERR_RANGE);
    toks[1] = 2;
    tid2eid[5] = 4;
    CHECK_STATUS(dsv4_cpu_router(&cfg, 3, logits, NULL, tid2eid, toks, V, idx, w), DSV4_ERR_RANGE);
    CHECK(strstr(dsv4_last_error(), "router") != NULL);
}

enum { D = 6, I = 5 };

/* fp32 matrices wrapped as F32 weights for the ops, kept raw for the naive versions */
typedef struct { const float *w1, *w3, *w2; } raw_expert;
typedef struct { dsv4_weight w1, w3, w2; dsv4_cpu_expert e; } wrapped_expert;

static dsv4_weight f32_weight(const float *data, int rows, int cols) {
    dsv4_weight w = {.format = DSV4_WF_F32, .rows = rows, .cols = cols, .data = data, .global_scale = 1.0f};
    return w;
}

static void wrap(wrapped_expert *o, const raw_expert *r) {
    o->w1 = f32_weight(r->w1, I, D);
    o->w3 = f32_weight(r->w3, I, D);
    o->w2 = f32_weight(r->w2, D, I);
    o->e = (dsv4_cpu_expert){&o->w1, &o->w3, &o->w2};
}

static void naive_swiglu(const raw_expert *e, const float *x, double limit, double *y) {
    double h[I];
    for (int i = 0; i < I; i++) {
        double g = 0, u = 0;
        for (int c = 0; c < D; c++) g += (double)e->w1[i * D + c] * x[c], u += (double)e->w3[i * D + c] * x[c];
        g = g > limit ? limit : g;
        u = u > limit ? limit : u < -limit ? -limit : u;
        h[i] = g / (1 + exp(-g)) * u;
    }
    for (int c = 0; c < D; c++) {
        y[c] = 0;
        for (int i = 0; i < I; i++) y[c] += (double)e->w2[c * I + i] * h[i];
    }
}

TEST(cpu_swiglu_clamps_gate_above_and_up_both_sides) {
    /* w1 = w3 = s·(first unit vector): g = u = s·x0, so the clamps are visible directly */
    float w1[I * D] = {0}, w3[I * D] = {0}, w2[D * I] = {0};
    for (int i = 0; i < I; i++) w1[i * D] = w3[i * D] = (float)(i + 1);
    w2[0] = 1.0f; /* y0 = h0 only */
    wrapped_expert we;
    wrap(&we, &(raw_expert){w1, w3, w2});
    const dsv4_cpu_expert e = we.e;
    float y[D];
    float x_big[D] = {20, 0, 0, 0, 0, 0}; /* g = u = 20 → both clamped to 10 */
    CHECK_OK(dsv4_cpu_swiglu(&e, 1, D, x_big, 10.0f, DSV4_W4A16, y));
    CHECK(fabs(y[0] - 10.0 / (1 + exp(-10.0)) * 10.0) < 1e-4);
    float x_neg[D] = {-20, 0, 0, 0, 0, 0}; /* g = −20 (no lower clamp), u = −20 → −10 */
    CHECK_OK(dsv4_cpu_swiglu(&e, 1, D, x_neg, 10.0f, DSV4_W4A16, y));
    CHECK(fabs(y[0] - (-20.0 / (1 + exp(20.0))) * -10.0) < 1e-9);
    /* random weights against the naive version */
    uint64_t rng = 82;
    float a[I * D], b[I * D], c[D * I], x[3 * D], yy[3 * D];
    fill_normal(a, I * D, 2.0f, &rng), fill_normal(b, I * D, 2.0f, &rng), fill_normal(c, D * I, 1.0f, &rng);
    fill_normal(x, 3 * D, 2.0f, &rng);
    raw_expert r = {a, b, c};
    wrapped_expert wr;
    wrap(&wr, &r);
    CHECK_OK(dsv4_cpu_swiglu(&wr.e, 3, D, x, 10.0f, DSV4_W4A16, yy));
    for (int t = 0; t < 3; t++) {
        double want[D];
        naive_swiglu(&r, x + t * D, 10.0, want);
        for (int k = 0; k < D; k++) CHECK(fabs(yy[t * D + k] - want[k]) < 1e-4 * (1 + fabs(want[k])));
    }
}

TEST(cpu_moe_combine_duplicates_empty_experts_and_shared) {
    uint64_t rng = 83;
    enum { E = 5, T = 4, K = 2 };
    static float w[E + 1][3][I * D];
    raw_expert raw[E + 1];
    static wrapped_expert wx[E + 1];
    dsv4_cpu_expert ex[E], sh;
    for (int e = 0; e <= E; e++) {
        for (int m = 0; m < 3; m++) fill_normal(w[e][m], I * D, 0.7f, &rng);
        raw[e] = (raw_expert){w[e][0], w[e][1], w[e][2]};
        wrap(&wx[e], &raw[e]);
    }
    for (int e = 0; e < E; e++) ex[e] = wx[e].e;
    sh = wx[E].e;
    ex[1] = (dsv4_cpu_expert){NULL, NULL, NULL}; /* never routed to: needs no weights */
    ex[3] = ex[1];
    int idx[T * K] = {0, 2, /**/ 4, 4, /**/ 2, 0, /**/ 4, 2}; /* token 1 hits expert 4 twice */
    float wt[T * K] = {0.3f, 0.7f, 0.25f, 0.5f, 1.0f, -0.5f, 0.1f, 0.9f};
    float x[T * D], out[T * D], out_ns[T * D];
    fill_normal(x, T * D, 1.0f, &rng);
    CHECK_OK(dsv4_cpu_moe(ex, E, &sh, T, D, K, x, idx, wt, 10.0f, DSV4_W4A16, out));
    CHECK_OK(dsv4_cpu_moe(ex, E, NULL, T, D, K, x, idx, wt, 10.0f, DSV4_W4A16, out_ns));
    for (int t = 0; t < T; t++) {
        double want[D] = {0}, y[D], ys[D];
        for (int j = 0; j < K; j++) {
            naive_swiglu(&raw[idx[t * K + j]], x + t * D, 10.0, y);
            for (int c = 0; c < D; c++) want[c] += wt[t * K + j] * y[c];
        }
        naive_swiglu(&raw[E], x + t * D, 10.0, ys);
        for (int c = 0; c < D; c++) {
            CHECK_MSG(fabs(out_ns[t * D + c] - want[c]) < 1e-4 * (1 + fabs(want[c])), "t=%d c=%d", t, c);
            CHECK(fabs(out[t * D + c] - (want[c] + ys[c])) < 1e-4 * (1 + fabs(want[c] + ys[c])));
        }
    }
    idx[3] = 1; /* routing to an expert without weights is an error, not a crash */
    CHECK_STATUS(dsv4_cpu_moe(ex, E, &sh, T, D, K, x, idx, wt, 10.0f, DSV4_W4A16, out), DSV4_ERR_INVALID_ARGUMENT);
    idx[3] = 5;
    CHECK_STATUS(dsv4_cpu_moe(ex, E, &sh, T, D, K, x, idx, wt, 10.0f, DSV4_W4A16, out), DSV4_ERR_RANGE);
    CHECK(strstr(dsv4_last_error(), "moe") != NULL);
    /* zero tokens: nothing to do */
    CHECK_OK(dsv4_cpu_moe(ex, E, &sh, 0, D, K, NULL, NULL, NULL, 10.0f, DSV4_W4A16, NULL));
}
