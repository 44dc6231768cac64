/* CPU references: RMSNorm and mHC (hc_pre, Sinkhorn, hc_post, hc_head), each against a
 * naive double-precision formulation written the DeepSeek-reference way (project first,
 * scale the mix by rsqrt afterwards; merge as a matrix product Cᵀ·X). */
#include <math.h>

#include "cpu/ops.h"
#include "test.h"

static void fill_normal(float *a, size_t n, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) a[i] = scale * test_rand_normal(rng);
}

/* max |a−b| / (1 + |b|) */
static double max_rel_err(const float *a, const double *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]) / (1.0 + fabs(b[i]));
        if (!(e <= worst)) worst = e; /* NaN propagates as failure */
    }
    return worst;
}

TEST(cpu_rmsnorm_weighted_and_unweighted) {
    uint64_t rng = 1;
    enum { R = 5, N = 37 };
    float x[R * N], w[N], y[R * N], yu[R * N];
    double want[R * N], wantu[R * N];
    fill_normal(x, R * N, 3.0f, &rng);
    fill_normal(w, N, 1.0f, &rng);
    CHECK_OK(dsv4_cpu_rmsnorm(y, x, w, R, N, 1e-6f));
    CHECK_OK(dsv4_cpu_rmsnorm(yu, x, NULL, R, N, 1e-6f));
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int i = 0; i < N; i++) ss += (double)x[r * N + i] * x[r * N + i];
        double inv = 1.0 / sqrt(ss / N + 1e-6);
        for (int i = 0; i < N; i++) {
            wantu[r * N + i] = x[r * N + i] * inv;
            want[r * N + i] = w[i] * wantu[r * N + i];
        }
    }
    CHECK_MSG(max_rel_err(y, want, R * N) < 1e-6, "weighted err %g", max_rel_err(y, want, R * N));
    CHECK(max_rel_err(yu, wantu, R * N) < 1e-6);
    /* unweighted output has mean square ≈ 1; in place works */
    for (int r = 0; r < R; r++) {
        double ms = 0;
        for (int i = 0; i < N; i++) ms += (double)yu[r * N + i] * yu[r * N + i];
        CHECK(fabs(ms / N - 1.0) < 1e-5);
    }
    CHECK_OK(dsv4_cpu_rmsnorm(x, x, NULL, R, N, 1e-6f));
    CHECK(memcmp(x, yu, sizeof x) == 0);
    /* all-zero input gives zeros, not NaN (eps keeps the rsqrt finite) */
    float z[4] = {0}, zo[4];
    CHECK_OK(dsv4_cpu_rmsnorm(zo, z, NULL, 1, 4, 1e-6f));
    for (int i = 0; i < 4; i++) CHECK(zo[i] == 0.0f);
    CHECK_STATUS(dsv4_cpu_rmsnorm(y, x, NULL, 1, 0, 1e-6f), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "rmsnorm") != NULL);
}

/* Sinkhorn written as the spec's steps with explicit row/column sums in double. */
static void naive_sinkhorn(double *c, int n, int iters, double eps) {
    for (int i = 0; i < n; i++) {
        double mx = -INFINITY, s = 0;
        for (int j = 0; j < n; j++) mx = fmax(mx, c[i * n + j]);
        for (int j = 0; j < n; j++) s += exp(c[i * n + j] - mx);
        for (int j = 0; j < n; j++) c[i * n + j] = exp(c[i * n + j] - mx) / s + eps;
    }
    double colsum[64], rowsum[64];
    for (int j = 0; j < n; j++) {
        colsum[j] = 0;
        for (int i = 0; i < n; i++) colsum[j] += c[i * n + j];
    }
    for (int i = 0; i < n; i++)
        for (int j = 0; j < n; j++) c[i * n + j] /= colsum[j] + eps;
    for (int it = 1; it < iters; it++) {
        for (int i = 0; i < n; i++) {
            rowsum[i] = 0;
            for (int j = 0; j < n; j++) rowsum[i] += c[i * n + j];
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) c[i * n + j] /= rowsum[i] + eps;
        for (int j = 0; j < n; j++) {
            colsum[j] = 0;
            for (int i = 0; i < n; i++) colsum[j] += c[i * n + j];
        }
        for (int i = 0; i < n; i++)
            for (int j = 0; j < n; j++) c[i * n + j] /= colsum[j] + eps;
    }
}

TEST(cpu_sinkhorn_is_doubly_stochastic) {
    uint64_t rng = 2;
    for (int trial = 0; trial < 20; trial++) {
        float c[16];
        double cd[16];
        fill_normal(c, 16, trial < 10 ? 1.0f : 6.0f, &rng); /* wide logits converge slower */
        for (int i = 0; i < 16; i++) cd[i] = c[i];
        dsv4_cpu_hc_sinkhorn(c, 4, 20, 1e-6f);
        naive_sinkhorn(cd, 4, 20, 1e-6);
        CHECK_MSG(max_rel_err(c, cd, 16) < 1e-5, "trial %d err %g", trial, max_rel_err(c, cd, 16));
        for (int i = 0; i < 4; i++) {
            double rs = 0, cs = 0;
            for (int j = 0; j < 4; j++) rs += c[i * 4 + j], cs += c[j * 4 + i];
            CHECK_MSG(fabs(cs - 1.0) < 1e-5, "trial %d column %d sums to %.8f", trial, i, cs);
            /* rows only converge: 19 rounds bring them within 1e-3 for unit-scale logits;
             * near-one-hot softmaxes (scale 6) converge too slowly to promise anything */
            if (trial < 10) CHECK_MSG(fabs(rs - 1.0) < 1e-3, "trial %d row %d sums to %.8f", trial, i, rs);
            for (int j = 0; j < 4; j++) CHECK(c[i * 4 + j] > 0.0f);
        }
    }
    /* iters = 1: only the single column normalisation after the softmax */
    float one[4] = {0, 0, 0, 0};
    dsv4_cpu_hc_sinkhorn(one, 2, 1, 0.0f);
    for (int i = 0; i < 4; i++) CHECK(fabsf(one[i] - 0.5f) < 1e-7f);
}

enum { HC = 4, HD = 24, T3 = 3, NMIX = (2 + HC) * HC };

static float sigm(double v) { return (float)(1.0 / (1.0 + exp(-v))); }

TEST(cpu_hc_pre_matches_naive) {
    uint64_t rng = 3;
    dsv4_cpu_hc_dims d = {HC, HD, 20, 1e-6f, 1e-6f};
    static float X[T3 * HC * HD], fn[NMIX * HC * HD], base[NMIX], scale[3];
    float x[T3 * HD], post[T3 * HC], comb[T3 * HC * HC];
    fill_normal(X, T3 * HC * HD, 2.0f, &rng);
    fill_normal(fn, NMIX * HC * HD, 0.2f, &rng);
    fill_normal(base, NMIX, 0.5f, &rng);
    scale[0] = 0.7f, scale[1] = 1.3f, scale[2] = 0.9f;
    CHECK_OK(dsv4_cpu_hc_pre(&d, T3, X, fn, base, scale, x, post, comb));
    for (int t = 0; t < T3; t++) {
        const float *Xt = X + t * HC * HD;
        /* reference formulation: mix = (F · fnᵀ) · rsqrt(mean(F²) + eps) */
        double ss = 0, mix[NMIX];
        for (int i = 0; i < HC * HD; i++) ss += (double)Xt[i] * Xt[i];
        double rho = 1.0 / sqrt(ss / (HC * HD) + 1e-6);
        for (int r = 0; r < NMIX; r++) {
            double acc = 0;
            for (int i = 0; i < HC * HD; i++) acc += (double)Xt[i] * fn[r * HC * HD + i];
            mix[r] = acc * rho;
        }
        double pre[HC], wpost[HC], wcomb[HC * HC], wx[HD];
        for (int j = 0; j < HC; j++) {
            pre[j] = sigm(mix[j] * scale[0] + base[j]) + 1e-6;
            wpost[j] = 2.0 * sigm(mix[HC + j] * scale[1] + base[HC + j]);
        }
        for (int i = 0; i < HC * HC; i++) wcomb[i] = mix[2 * HC + i] * scale[2] + base[2 * HC + i];
        naive_sinkhorn(wcomb, HC, 20, 1e-6);
        for (int e = 0; e < HD; e++) {
            wx[e] = 0;
            for (int j = 0; j < HC; j++) wx[e] += pre[j] * Xt[j * HD + e];
        }
        CHECK_MSG(max_rel_err(x + t * HD, wx, HD) < 2e-5, "x err %g", max_rel_err(x + t * HD, wx, HD));
        CHECK(max_rel_err(post + t * HC, wpost, HC) < 2e-5);
        CHECK(max_rel_err(comb + t * HC * HC, wcomb, HC * HC) < 2e-5);
        for (int j = 0; j < HC; j++) CHECK(post[t * HC + j] > 0.0f && post[t * HC + j] < 2.0f);
    }
    d.hc = 0;
    CHECK_STATUS(dsv4_cpu_hc_pre(&d, T3, X, fn, base, scale, x, post, comb), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "hc_pre") != NULL);
}

TEST(cpu_hc_post_merges_with_comb_transposed) {
    uint64_t rng = 4;
    dsv4_cpu_hc_dims d = {HC, HD, 20, 1e-6f, 1e-6f};
    float X[T3 * HC * HD], y[T3 * HD], post[T3 * HC], comb[T3 * HC * HC], out[T3 * HC * HD];
    double want[T3 * HC * HD];
    fill_normal(X, T3 * HC * HD, 1.0f, &rng);
    fill_normal(y, T3 * HD, 1.0f, &rng);
    /* weights that bf16 represents exactly: both merge modes must agree bit for bit */
    for (int i = 0; i < T3 * HC; i++) post[i] = (float)(1 + i % 7) / 8.0f;
    for (int i = 0; i < T3 * HC * HC; i++) comb[i] = (float)(i % 5) / 16.0f;
    CHECK_OK(dsv4_cpu_hc_post(&d, T3, X, y, post, comb, DSV4_CPU_HC_MERGE_FP32, out));
    for (int t = 0; t < T3; t++)
        for (int k = 0; k < HC; k++)
            for (int e = 0; e < HD; e++) {
                /* (Cᵀ X)[k] = Σ_j C[j][k] X[j] */
                double acc = (double)post[t * HC + k] * y[t * HD + e];
                for (int j = 0; j < HC; j++)
                    acc += (double)comb[t * HC * HC + j * HC + k] * X[(t * HC + j) * HD + e];
                want[(t * HC + k) * HD + e] = acc;
            }
    CHECK(max_rel_err(out, want, T3 * HC * HD) < 1e-6);
    float out_bf[T3 * HC * HD];
    CHECK_OK(dsv4_cpu_hc_post(&d, T3, X, y, post, comb, DSV4_CPU_HC_MERGE_BF16_WEIGHTS, out_bf));
    CHECK(memcmp(out, out_bf, sizeof out) == 0);
    /* 1 + 2^-10 is not a bf16 value (7 mantissa bits): HF mode rounds it to 1 */
    float p1[HC] = {1.0f + 1.0f / 1024, 0, 0, 0}, c0[HC * HC] = {0}, o1[HC * HD], o2[HC * HD];
    CHECK_OK(dsv4_cpu_hc_post(&d, 1, X, y, p1, c0, DSV4_CPU_HC_MERGE_BF16_WEIGHTS, o1));
    CHECK_OK(dsv4_cpu_hc_post(&d, 1, X, y, p1, c0, DSV4_CPU_HC_MERGE_FP32, o2));
    for (int e = 0; e < HD; e++) {
        CHECK(o1[e] == y[e]);
        CHECK(o2[e] == p1[0] * y[e]);
    }
    CHECK_STATUS(dsv4_cpu_hc_post(&d, 1, X, y, p1, c0, (dsv4_cpu_hc_merge)7, o1),
                 DSV4_ERR_INVALID_ARGUMENT);
}

TEST(cpu_bf16_round_is_nearest_even) {
    CHECK(dsv4_bf16_round(1.0f) == 1.0f);
    CHECK(dsv4_bf16_round(1.0f + 1.0f / 256) == 1.0f);          /* tie → even (down) */
    CHECK(dsv4_bf16_round(1.0f + 3.0f / 256) == 1.0f + 4.0f / 256); /* tie → even (up) */
    CHECK(dsv4_bf16_round(1.0f + 1.0f / 200) == 1.0f + 1.0f / 128);
    CHECK(dsv4_bf16_round(-2.5f) == -2.5f);
    CHECK(isnan(dsv4_bf16_round(NAN)));
    CHECK(isinf(dsv4_bf16_round(INFINITY)));
}

TEST(cpu_hc_head_matches_naive) {
    uint64_t rng = 5;
    dsv4_cpu_hc_dims d = {HC, HD, 20, 1e-6f, 1e-6f};
    float X[T3 * HC * HD], fn[HC * HC * HD], base[HC], scale[1] = {0.8f}, h[T3 * HD];
    fill_normal(X, T3 * HC * HD, 1.5f, &rng);
    fill_normal(fn, HC * HC * HD, 0.2f, &rng);
    fill_normal(base, HC, 0.5f, &rng);
    CHECK_OK(dsv4_cpu_hc_head(&d, T3, X, fn, base, scale, h));
    for (int t = 0; t < T3; t++) {
        const float *Xt = X + t * HC * HD;
        double ss = 0, want[HD];
        for (int i = 0; i < HC * HD; i++) ss += (double)Xt[i] * Xt[i];
        double rho = 1.0 / sqrt(ss / (HC * HD) + 1e-6), pre[HC];
        for (int j = 0; j < HC; j++) {
            double acc = 0;
            for (int i = 0; i < HC * HD; i++) acc += (double)Xt[i] * fn[j * HC * HD + i];
            pre[j] = sigm(acc * rho * scale[0] + base[j]) + 1e-6;
        }
        for (int e = 0; e < HD; e++) {
            want[e] = 0;
            for (int j = 0; j < HC; j++) want[e] += pre[j] * Xt[j * HD + e];
        }
        CHECK(max_rel_err(h + t * HD, want, HD) < 2e-5);
    }
}
