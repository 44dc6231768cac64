/* CPU references: RoPE frequency tables (plain and YaRN) and the interleaved rotation,
 * against complex multiplication in double and the rotation's own invariants. */
#include <math.h>

#include "cpu/ops.h"
#include "test.h"

static const dsv4_cpu_rope_cfg MAIN = {64, 10000.0, 1.0, 0, 0, 0};
static const dsv4_cpu_rope_cfg COMPRESS = {64, 160000.0, 16.0, 65536.0, 32.0, 1.0};

TEST(cpu_rope_inv_freq_plain) {
    float f[32];
    CHECK_OK(dsv4_cpu_rope_inv_freq(&MAIN, f));
    for (int i = 0; i < 32; i++) {
        double want = pow(10000.0, -2.0 * i / 64.0);
        CHECK_MSG(fabs(f[i] - want) <= 1e-6 * want, "i=%d %.9g vs %.9g", i, f[i], want);
    }
    CHECK(f[0] == 1.0f);
    dsv4_cpu_rope_cfg bad = MAIN;
    bad.rope_dim = 63;
    CHECK_STATUS(dsv4_cpu_rope_inv_freq(&bad, f), DSV4_ERR_SHAPE);
}

TEST(cpu_rope_inv_freq_yarn_ramp_15_to_25) {
    /* dsv4-reference §5.1: for V4's compress table low = 15 and high = 25 */
    float f[32];
    CHECK_OK(dsv4_cpu_rope_inv_freq(&COMPRESS, f));
    for (int i = 0; i < 32; i++) {
        double theta = pow(160000.0, -2.0 * i / 64.0);
        double ramp = fmin(fmax((i - 15.0) / 10.0, 0.0), 1.0);
        double want = theta * (1 - ramp) + theta / 16.0 * ramp;
        CHECK_MSG(fabs(f[i] - want) <= 2e-6 * want, "i=%d %.9g vs %.9g", i, f[i], want);
    }
    /* below low: untouched; above high: fully interpolated */
    CHECK(fabs(f[15] - pow(160000.0, -30.0 / 64)) <= 1e-6 * f[15]);
    CHECK(fabs(f[25] - pow(160000.0, -50.0 / 64) / 16) <= 1e-6 * f[25]);
}

/* out = x rotated as complex numbers (x[2i] + i·x[2i+1]) · e^{i·pos·θ}, in double */
static void naive_rope(const float *x, double *out, int width, int R, int pos, const float *f,
                       int inverse) {
    for (int e = 0; e < width; e++) out[e] = x[e];
    for (int i = 0; i < R / 2; i++) {
        double ang = (double)((float)pos * f[i]) * (inverse ? -1 : 1);
        double re = x[width - R + 2 * i], im = x[width - R + 2 * i + 1];
        out[width - R + 2 * i] = re * cos(ang) - im * sin(ang);
        out[width - R + 2 * i + 1] = re * sin(ang) + im * cos(ang);
    }
}

TEST(cpu_rope_rotates_trailing_pairs) {
    uint64_t rng = 11;
    enum { T = 4, NV = 3, W = 80, R = 64 };
    float f[R / 2], x[T * NV * W], y[T * NV * W];
    int pos[T] = {0, 1, 1000, 1048575};
    CHECK_OK(dsv4_cpu_rope_inv_freq(&COMPRESS, f));
    for (int i = 0; i < T * NV * W; i++) x[i] = test_rand_normal(&rng);
    memcpy(y, x, sizeof x);
    CHECK_OK(dsv4_cpu_rope(y, T, NV, W, R, pos, f, 0));
    for (int t = 0; t < T; t++)
        for (int v = 0; v < NV; v++) {
            const float *xv = x + (t * NV + v) * W, *yv = y + (t * NV + v) * W;
            double want[W], n0 = 0, n1 = 0;
            naive_rope(xv, want, W, R, pos[t], f, 0);
            for (int e = 0; e < W; e++) {
                CHECK_MSG(fabs(yv[e] - want[e]) < 1e-5, "t=%d v=%d e=%d %g vs %g", t, v, e, yv[e], want[e]);
                if (e < W - R) CHECK(yv[e] == xv[e]); /* nope dims untouched */
                n0 += (double)xv[e] * xv[e], n1 += (double)yv[e] * yv[e];
            }
            CHECK(fabs(n0 - n1) < 1e-5 * n0); /* a rotation keeps the norm */
            if (pos[t] == 0) CHECK(memcmp(xv, yv, sizeof(float) * W) == 0);
        }
    /* inverse ∘ forward ≈ identity */
    CHECK_OK(dsv4_cpu_rope(y, T, NV, W, R, pos, f, 1));
    for (int i = 0; i < T * NV * W; i++) CHECK_MSG(fabsf(y[i] - x[i]) < 1e-5f, "i=%d", i);
}

TEST(cpu_rope_dot_depends_on_distance_only) {
    uint64_t rng = 12;
    enum { W = 64, R = 64 };
    float f[R / 2], q[W], k[W];
    CHECK_OK(dsv4_cpu_rope_inv_freq(&MAIN, f));
    for (int i = 0; i < W; i++) q[i] = test_rand_normal(&rng), k[i] = test_rand_normal(&rng);
    double dots[3];
    int qp[3] = {10, 50, 90}, kp[3] = {3, 43, 83}; /* distance 7 each time */
    for (int c = 0; c < 3; c++) {
        float a[W], b[W];
        memcpy(a, q, sizeof q), memcpy(b, k, sizeof k);
        CHECK_OK(dsv4_cpu_rope(a, 1, 1, W, R, &qp[c], f, 0));
        CHECK_OK(dsv4_cpu_rope(b, 1, 1, W, R, &kp[c], f, 0));
        dots[c] = 0;
        for (int i = 0; i < W; i++) dots[c] += (double)a[i] * b[i];
    }
    CHECK_MSG(fabs(dots[0] - dots[1]) < 1e-4 && fabs(dots[0] - dots[2]) < 1e-4, "%g %g %g", dots[0],
              dots[1], dots[2]);
    float x[W];
    int p = 0;
    CHECK_STATUS(dsv4_cpu_rope(x, 1, 1, 32, R, &p, f, 0), DSV4_ERR_SHAPE);
}
