/* CPU references: lightning indexer scores and top-k selection. */
#include <math.h>

#include "cpu/ops.h"
#include "test.h"

enum { NH = 3, DI = 8, M = 4 };

TEST(cpu_indexer_scores_match_naive) {
    uint64_t rng = 71;
    enum { T = 10, NC = 3 };
    dsv4_cpu_indexer_dims d = {NH, DI, 2, M};
    float q[T * NH * DI], w[T * NH], keys[NC * DI], sc[T * NC];
    int pos[T];
    for (int t = 0; t < T; t++) pos[t] = t + 2; /* positions 2..11 */
    for (int i = 0; i < T * NH * DI; i++) q[i] = test_rand_normal(&rng);
    for (int i = 0; i < T * NH; i++) w[i] = test_rand_normal(&rng);
    for (int i = 0; i < NC * DI; i++) keys[i] = test_rand_normal(&rng);
    CHECK_OK(dsv4_cpu_indexer_scores(&d, T, q, w, pos, keys, NC, sc));
    for (int t = 0; t < T; t++)
        for (int s = 0; s < NC; s++) {
            double want = 0;
            /* the same sum, scaled once at the end: (n_heads · Di)^-1/2 Σ_h w_h ReLU(q_h·k) */
            for (int h = 0; h < NH; h++) {
                double dot = 0;
                for (int e = 0; e < DI; e++) dot += (double)q[(t * NH + h) * DI + e] * keys[s * DI + e];
                want += w[t * NH + h] * fmax(dot, 0.0);
            }
            want /= sqrt((double)NH * DI);
            if (s >= (pos[t] + 1) / M) {
                CHECK_MSG(isinf(sc[t * NC + s]) && sc[t * NC + s] < 0, "t=%d s=%d not masked", t, s);
            } else {
                CHECK_MSG(fabs(sc[t * NC + s] - want) < 1e-5 * (1 + fabs(want)), "t=%d s=%d %g vs %g",
                          t, s, sc[t * NC + s], want);
            }
        }
    /* negative dot products contribute nothing, whatever the head weight's sign */
    float qn[NH * DI], kn[DI], wn[NH] = {-5, 3, 7}, one;
    int p = 7;
    for (int i = 0; i < NH * DI; i++) qn[i] = 1.0f;
    for (int i = 0; i < DI; i++) kn[i] = -1.0f;
    CHECK_OK(dsv4_cpu_indexer_scores(&d, 1, qn, wn, &p, kn, 1, &one));
    CHECK(one == 0.0f);
}

/* Naive top-k: repeatedly take the best unused visible entry (ties → lower index). */
static void naive_topk(const float *s, int visible, int K, int *out) {
    unsigned char used[64] = {0};
    for (int j = 0; j < K; j++) {
        int best = -1;
        for (int u = 0; u < visible; u++)
            if (!used[u] && (best < 0 || s[u] > s[best])) best = u;
        out[j] = best;
        if (best >= 0) used[best] = 1;
    }
}

TEST(cpu_indexer_topk_causal_ties_and_padding) {
    uint64_t rng = 72;
    enum { T = 40, NC = 10, K = 4 };
    dsv4_cpu_indexer_dims d = {NH, DI, K, M};
    float sc[T * NC];
    int pos[T], idx[T * K], want[K];
    for (int t = 0; t < T; t++) pos[t] = t;
    /* coarse values force many ties; future entries carry huge scores that must not win */
    for (int t = 0; t < T; t++)
        for (int s = 0; s < NC; s++)
            sc[t * NC + s] = s < (t + 1) / M ? (float)(test_rand_u64(&rng) % 3) : 1e30f;
    CHECK_OK(dsv4_cpu_indexer_topk(&d, T, sc, pos, NC, idx));
    for (int t = 0; t < T; t++) {
        int visible = (t + 1) / M;
        if (visible > NC) visible = NC;
        naive_topk(sc + t * NC, visible, K, want);
        for (int j = 0; j < K; j++)
            CHECK_MSG(idx[t * K + j] == want[j], "t=%d slot %d: %d vs %d", t, j, idx[t * K + j], want[j]);
        /* k = min(topk, visible): the rest is −1 */
        for (int j = visible; j < K; j++) CHECK(idx[t * K + j] == -1);
    }
    /* all scores equal: the lowest indices, in order */
    float flat[NC];
    int p = 39, out[K];
    for (int s = 0; s < NC; s++) flat[s] = 0.5f;
    CHECK_OK(dsv4_cpu_indexer_topk(&d, 1, flat, &p, NC, out));
    for (int j = 0; j < K; j++) CHECK(out[j] == j);
    /* topk larger than the number of entries */
    dsv4_cpu_indexer_dims big = {NH, DI, 16, M};
    int out16[16];
    CHECK_OK(dsv4_cpu_indexer_topk(&big, 1, sc + 39 * NC, &p, NC, out16));
    for (int j = 0; j < 16; j++) CHECK(j < NC ? out16[j] >= 0 : out16[j] == -1);
    /* no entries at all */
    CHECK_OK(dsv4_cpu_indexer_topk(&d, 1, NULL, &p, 0, out));
    for (int j = 0; j < K; j++) CHECK(out[j] == -1);
    d.topk = 0;
    CHECK_STATUS(dsv4_cpu_indexer_topk(&d, 1, flat, &p, NC, out), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "indexer_topk") != NULL);
}
