/* CPU references: core attention (window + compressed entries + sinks + inverse RoPE)
 * against a dense T × (T + n_c) masked attention matrix in double, and the grouped output
 * projection against an explicit block-diagonal matrix. */
#include <math.h>

#include "cpu/ops.h"
#include "test.h"

enum { H = 3, DH = 16, R = 8, WIN = 5, M = 4 };

static void fill_normal(float *a, size_t n, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) a[i] = scale * test_rand_normal(rng);
}

/* Dense reference. allowed(t, j) over keys j = 0..T−1 (the tokens, positions pos[j]) and
 * T..T+n_c−1 (compressed entries) is built from the spec's rules; picks (NULL = all visible)
 * is a [T][n_c] 0/1 matrix for CSA. */
static void dense_attention(int T, const float *q, const int *pos, const float *kv, const float *ckv,
                            int n_c, const unsigned char *picks, const float *sinks,
                            const float *inv_freq, double *o) {
    int n_keys = T + n_c;
    double *logit = malloc(sizeof(double) * n_keys);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const float *qh = q + (t * H + h) * DH;
            double mx = sinks[h];
            for (int j = 0; j < n_keys; j++) {
                int ok;
                const float *k;
                if (j < T) {
                    ok = pos[j] <= pos[t] && pos[t] - pos[j] < WIN;
                    k = kv + j * DH;
                } else {
                    int w = j - T;
                    ok = w < (pos[t] + 1) / M && (!picks || picks[t * n_c + w]);
                    k = ckv + w * DH;
                }
                double dot = 0;
                for (int e = 0; e < DH; e++) dot += (double)qh[e] * k[e];
                logit[j] = ok ? dot / sqrt((double)DH) : -INFINITY;
                mx = fmax(mx, logit[j]);
            }
            double denom = exp(sinks[h] - mx);
            for (int j = 0; j < n_keys; j++) denom += exp(logit[j] - mx);
            double acc[DH] = {0};
            for (int j = 0; j < n_keys; j++) {
                double p = exp(logit[j] - mx) / denom;
                const float *v = j < T ? kv + j * DH : ckv + (j - T) * DH;
                for (int e = 0; e < DH; e++) acc[e] += p * v[e];
            }
            /* undo the value's rope: multiply the rope pairs by e^{−i·pos·θ} */
            for (int i = 0; i < R / 2; i++) {
                double ang = -(double)((float)pos[t] * inv_freq[i]);
                double re = acc[DH - R + 2 * i], im = acc[DH - R + 2 * i + 1];
                acc[DH - R + 2 * i] = re * cos(ang) - im * sin(ang);
                acc[DH - R + 2 * i + 1] = re * sin(ang) + im * cos(ang);
            }
            for (int e = 0; e < DH; e++) o[(t * H + h) * DH + e] = acc[e];
        }
    free(logit);
}

static double max_abs_err(const float *a, const double *b, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - b[i]);
        if (!(e <= worst)) worst = e;
    }
    return worst;
}

static const dsv4_cpu_attn_dims DIMS = {H, DH, R, WIN};
static const dsv4_cpu_rope_cfg ROPE = {R, 10000.0, 1.0, 0, 0, 0};

TEST(cpu_attention_window_matches_dense) {
    uint64_t rng = 21;
    enum { T = 13 };
    float q[T * H * DH], kv[T * DH], o[T * H * DH], sinks[H] = {0.5f, -1.0f, 2.0f}, f[R / 2];
    double want[T * H * DH];
    int pos[T];
    for (int t = 0; t < T; t++) pos[t] = 100 + t; /* a chunk that starts mid-sequence */
    fill_normal(q, T * H * DH, 1.0f, &rng);
    fill_normal(kv, T * DH, 1.0f, &rng);
    CHECK_OK(dsv4_cpu_rope_inv_freq(&ROPE, f));
    CHECK_OK(dsv4_cpu_attention(&DIMS, T, q, pos, kv, pos, T, NULL, 0, 0, NULL, 0, sinks, f, o));
    dense_attention(T, q, pos, kv, NULL, 0, NULL, sinks, f, want);
    CHECK_MSG(max_abs_err(o, want, T * H * DH) < 1e-5, "err %g", max_abs_err(o, want, T * H * DH));

    /* decode form: one query, the KV ring in scrambled slot order with stale rows that the
     * window must exclude; same result as that query's prefill row */
    int t = 11, ring_pos[8];
    float ring[8 * DH], od[H * DH];
    int slots[8] = {9, 4, 11, 7, 10, 2, 8, 0}; /* 9,10,11,7,8 visible (t−4..t); 4,2,0 too old */
    for (int s = 0; s < 8; s++) {
        ring_pos[s] = pos[slots[s]];
        memcpy(ring + s * DH, kv + slots[s] * DH, sizeof(float) * DH);
    }
    CHECK_OK(dsv4_cpu_attention(&DIMS, 1, q + t * H * DH, &pos[t], ring, ring_pos, 8, NULL, 0, 0,
                                NULL, 0, sinks, f, od));
    CHECK(max_abs_err(od, want + t * H * DH, H * DH) < 1e-5);
}

TEST(cpu_attention_hca_sees_all_visible_entries) {
    uint64_t rng = 22;
    enum { T = 21, NC = 5 };
    float q[T * H * DH], kv[T * DH], ckv[NC * DH], o[T * H * DH], sinks[H] = {0, 1, -2}, f[R / 2];
    double want[T * H * DH];
    int pos[T];
    for (int t = 0; t < T; t++) pos[t] = t;
    fill_normal(q, T * H * DH, 1.0f, &rng);
    fill_normal(kv, T * DH, 1.0f, &rng);
    fill_normal(ckv, NC * DH, 1.0f, &rng);
    CHECK_OK(dsv4_cpu_rope_inv_freq(&ROPE, f));
    CHECK_OK(dsv4_cpu_attention(&DIMS, T, q, pos, kv, pos, T, ckv, NC, M, NULL, 0, sinks, f, o));
    dense_attention(T, q, pos, kv, ckv, NC, NULL, sinks, f, want);
    CHECK_MSG(max_abs_err(o, want, T * H * DH) < 1e-5, "err %g", max_abs_err(o, want, T * H * DH));
    /* query 2 (pos 2) sees no entry; query 3 sees entry 0: it must differ from window-only */
    float o_win[T * H * DH];
    CHECK_OK(dsv4_cpu_attention(&DIMS, T, q, pos, kv, pos, T, NULL, 0, 0, NULL, 0, sinks, f, o_win));
    CHECK(memcmp(o + 2 * H * DH, o_win + 2 * H * DH, sizeof(float) * H * DH) == 0);
    CHECK(memcmp(o + 3 * H * DH, o_win + 3 * H * DH, sizeof(float) * H * DH) != 0);
}

TEST(cpu_attention_csa_uses_only_picked_entries) {
    uint64_t rng = 23;
    enum { T = 21, NC = 5, CK = 3 };
    float q[T * H * DH], kv[T * DH], ckv[NC * DH], o[T * H * DH], sinks[H] = {0.1f, 0.2f, 0.3f}, f[R / 2];
    double want[T * H * DH];
    int pos[T], idx[T * CK];
    unsigned char picks[T * NC] = {0};
    for (int t = 0; t < T; t++) pos[t] = t;
    fill_normal(q, T * H * DH, 1.0f, &rng);
    fill_normal(kv, T * DH, 1.0f, &rng);
    fill_normal(ckv, NC * DH, 1.0f, &rng);
    for (int t = 0; t < T; t++) {
        int visible = (t + 1) / M, n = 0;
        for (int w = 0; w < visible && n < CK; w++)
            if (test_rand_u64(&rng) & 1) { /* a random subset, in scrambled order below */
                idx[t * CK + n++] = w;
                picks[t * NC + w] = 1;
            }
        while (n < CK) idx[t * CK + n++] = -1;
        if (idx[t * CK] >= 0 && idx[t * CK + 2] >= 0) { /* order must not matter */
            int tmp = idx[t * CK];
            idx[t * CK] = idx[t * CK + 2], idx[t * CK + 2] = tmp;
        }
    }
    CHECK_OK(dsv4_cpu_rope_inv_freq(&ROPE, f));
    CHECK_OK(dsv4_cpu_attention(&DIMS, T, q, pos, kv, pos, T, ckv, NC, M, idx, CK, sinks, f, o));
    dense_attention(T, q, pos, kv, ckv, NC, picks, sinks, f, want);
    CHECK_MSG(max_abs_err(o, want, T * H * DH) < 1e-5, "err %g", max_abs_err(o, want, T * H * DH));
    /* a pick of a not-yet-complete window is a caller bug */
    idx[5 * CK] = 3; /* pos 5 sees only entry 0 */
    CHECK_STATUS(dsv4_cpu_attention(&DIMS, T, q, pos, kv, pos, T, ckv, NC, M, idx, CK, sinks, f, o),
                 DSV4_ERR_RANGE);
    CHECK(strstr(dsv4_last_error(), "attention") != NULL);
}

TEST(cpu_attention_sink_absorbs_mass) {
    uint64_t rng = 24;
    enum { T = 4 };
    float q[T * H * DH], kv[T * DH], o[T * H * DH], sinks[H] = {60, 60, 60}, f[R / 2];
    int pos[T] = {0, 1, 2, 3};
    fill_normal(q, T * H * DH, 0.1f, &rng);
    fill_normal(kv, T * DH, 1.0f, &rng);
    CHECK_OK(dsv4_cpu_rope_inv_freq(&ROPE, f));
    CHECK_OK(dsv4_cpu_attention(&DIMS, T, q, pos, kv, pos, T, NULL, 0, 0, NULL, 0, sinks, f, o));
    for (int i = 0; i < T * H * DH; i++) CHECK(fabsf(o[i]) < 1e-20f);
    /* sink −inf-like: plain softmax; a single visible row returns itself (rotated back) */
    float s2[H] = {-1e30f, -1e30f, -1e30f};
    CHECK_OK(dsv4_cpu_attention(&DIMS, 1, q, pos, kv, pos, 1, NULL, 0, 0, NULL, 0, s2, f, o));
    for (int h = 0; h < H; h++)
        for (int e = 0; e < DH; e++) CHECK(fabsf(o[h * DH + e] - kv[e]) < 1e-6f);
}

TEST(cpu_grouped_oproj_matches_block_diagonal) {
    uint64_t rng = 25;
    enum { T = 3, HH = 4, G = 2, RO = 5, D = 7, GW = HH / G * DH };
    dsv4_cpu_oproj_dims d = {HH, DH, G, RO, D};
    float o[T * HH * DH], wo_a[G * RO * GW], wo_b[D * G * RO], out[T * D];
    fill_normal(o, T * HH * DH, 1.0f, &rng);
    fill_normal(wo_a, G * RO * GW, 0.3f, &rng);
    fill_normal(wo_b, D * G * RO, 0.3f, &rng);
    const dsv4_weight wa = {.format = DSV4_WF_F32, .rows = G * RO, .cols = GW, .data = wo_a, .global_scale = 1};
    const dsv4_weight wb = {.format = DSV4_WF_F32, .rows = D, .cols = G * RO, .data = wo_b, .global_scale = 1};
    CHECK_OK(dsv4_cpu_grouped_oproj(&d, T, o, &wa, &wb, DSV4_W4A16, out));
    /* dense [G·RO, H·DH] with wo_a's group blocks on the diagonal, zeros elsewhere */
    static double big[G * RO][HH * DH];
    memset(big, 0, sizeof big);
    for (int g = 0; g < G; g++)
        for (int r = 0; r < RO; r++)
            for (int i = 0; i < GW; i++) big[g * RO + r][g * GW + i] = wo_a[(g * RO + r) * GW + i];
    for (int t = 0; t < T; t++) {
        double u[G * RO];
        for (int r = 0; r < G * RO; r++) {
            u[r] = 0;
            for (int i = 0; i < HH * DH; i++) u[r] += big[r][i] * o[t * HH * DH + i];
        }
        for (int c = 0; c < D; c++) {
            double want = 0;
            for (int r = 0; r < G * RO; r++) want += wo_b[c * G * RO + r] * u[r];
            CHECK_MSG(fabs(out[t * D + c] - want) < 1e-4, "t=%d c=%d %g vs %g", t, c, out[t * D + c], want);
        }
    }
    d.groups = 3;
    CHECK_STATUS(dsv4_cpu_grouped_oproj(&d, T, o, &wa, &wb, DSV4_W4A16, out), DSV4_ERR_SHAPE);
    d.groups = G;
    d.lora_rank = RO + 1; /* weights no longer match the dims */
    CHECK_STATUS(dsv4_cpu_grouped_oproj(&d, T, o, &wa, &wb, DSV4_W4A16, out), DSV4_ERR_SHAPE);
}
