/* NVFP4 activation quantization: the CPU reference with kernel semantics
 * (src/cpu/quantize.c) against src/format/quant.c, the device codecs compiled for the host
 * against src/format/fp.c, and the CUDA kernels against the CPU reference bit for bit,
 * each kernel run through the graph-safety harness. */
#include <math.h>

#include "cpu/quantize.h"
#include "format/fp.h"
#include "format/quant.h"
#include "test.h"

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/quantize.h"
#include "gpu_harness.h"
#endif

static void fill_normal(float *a, size_t n, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) a[i] = scale * test_rand_normal(rng);
}

/* ---------------------------------------------------------------- CPU reference */

TEST(cpu_quantize_ref_matches_format_quant) {
    uint64_t rng = 11;
    enum { M = 5, K = 96, KB = K / 16 };
    float x[M * K];
    fill_normal(x, M * K, 2.0f, &rng);
    for (int i = 0; i < 16; i++) x[K + 32 + i] = 0.0f; /* an all-zero block */
    uint8_t q[M * K / 2], sf[M * KB], q2[M * K / 2], sf2[M * KB];
    /* static */
    float s = 0.004f, s2[M];
    CHECK_OK(dsv4_cpu_quantize_nvfp4_act(x, M, K, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR, &s, q, sf));
    CHECK_OK(dsv4_nvfp4_quantize_act(x, M, K, 0.004f, q2, sf2, "t"));
    CHECK(memcmp(q, q2, sizeof q) == 0 && memcmp(sf, sf2, sizeof sf) == 0);
    CHECK(s == 0.004f); /* static mode leaves the scale alone */
    /* per token */
    float st[M];
    CHECK_OK(dsv4_cpu_quantize_nvfp4_act(x, M, K, DSV4_ACT_SCALE_DYNAMIC_TOKEN, DSV4_SF_LINEAR, st, q, sf));
    CHECK_OK(dsv4_nvfp4_quantize_act_dynamic(x, M, K, q2, sf2, s2, "t"));
    CHECK(memcmp(q, q2, sizeof q) == 0 && memcmp(sf, sf2, sizeof sf) == 0 && memcmp(st, s2, sizeof st) == 0);
    /* per tensor = static with amax/2688 */
    float amax = 0.0f, sd;
    for (int i = 0; i < M * K; i++) amax = fmaxf(amax, fabsf(x[i]));
    CHECK_OK(dsv4_cpu_quantize_nvfp4_act(x, M, K, DSV4_ACT_SCALE_DYNAMIC_TENSOR, DSV4_SF_LINEAR, &sd, q, sf));
    CHECK(sd == amax / 2688.0f);
    CHECK_OK(dsv4_nvfp4_quantize_act(x, M, K, sd, q2, sf2, "t"));
    CHECK(memcmp(q, q2, sizeof q) == 0 && memcmp(sf, sf2, sizeof sf) == 0);
    /* swizzled = swizzle(linear), padding zero */
    size_t nsw = dsv4_swizzled_scale_bytes(M, KB);
    CHECK(nsw == 128 * 8);
    uint8_t *sw = malloc(nsw), *sw2 = malloc(nsw);
    CHECK(sw && sw2);
    memset(sw, 0x77, nsw);
    CHECK_OK(dsv4_cpu_quantize_nvfp4_act(x, M, K, DSV4_ACT_SCALE_DYNAMIC_TENSOR, DSV4_SF_SWIZZLED, &sd, q2, sw));
    dsv4_scale_swizzle_128x4(sf, M, KB, sw2);
    int same = memcmp(sw, sw2, nsw) == 0;
    free(sw);
    free(sw2);
    CHECK(same);
    CHECK_STATUS(dsv4_cpu_quantize_nvfp4_act(x, M, 24, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR, &s, q, sf), DSV4_ERR_SHAPE);
}

/* NaN/Inf: the documented kernel behaviour (src/cpu/quantize.h). */
TEST(cpu_quantize_ref_nonfinite_behaviour) {
    float x[32], s = 0.01f;
    uint8_t q[16], sf[2], qz[16], sfz[2];
    for (int i = 0; i < 32; i++) x[i] = (float)(i % 7) - 3.0f;
    x[5] = NAN;
    x[20] = INFINITY;
    CHECK_OK(dsv4_cpu_quantize_nvfp4_act(x, 1, 32, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR, &s, q, sf));
    /* the NaN element encodes as +0 and does not change its block's scale */
    x[5] = 0.0f;
    CHECK_OK(dsv4_cpu_quantize_nvfp4_act(x, 1, 16, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR, &s, qz, sfz));
    CHECK(sf[0] == sfz[0] && memcmp(q, qz, 8) == 0);
    CHECK((q[2] >> 4) == 0);
    /* the Inf block: scale saturates to 448, Inf -> +6, others finite codes */
    CHECK(sf[1] == 0x7e);
    CHECK((q[10] & 0xf) == 0x7);
    /* per token with an Inf in the row: scale Inf, G = 0, all codes zero */
    float st;
    CHECK_OK(dsv4_cpu_quantize_nvfp4_act(x, 1, 32, DSV4_ACT_SCALE_DYNAMIC_TOKEN, DSV4_SF_LINEAR, &st, q, sf));
    CHECK(isinf(st));
    for (int i = 0; i < 16; i++) CHECK(q[i] == 0);
    CHECK(sf[0] == 0x00 && sf[1] == 0x7f);
}

#if DSV4_HAVE_CUDA
/* ---------------------------------------------------------------- device codecs on the host */

static uint32_t f2u(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static float u2f(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

TEST(gpu_codecs_match_cpu_bit_for_bit) {
    /* Every sign/exponent/top-11-mantissa pattern with low bits around each rounding
     * boundary of e4m3 (bit 19) and e2m1 (bit 21) plus random low bits: all tie and
     * carry cases of both formats, all specials, all subnormals' exponents. */
    static const uint32_t lows[] = {0x0, 0x1, 0x7ff, 0x800, 0x801, 0xfff};
    uint64_t rng = 3;
    long n = 0;
    for (uint32_t hi = 0; hi < (1u << 20); hi++) {
        for (int l = 0; l < 7; l++) {
            uint32_t low = l < 6 ? lows[l] : (uint32_t)(test_rand_u64(&rng) & 0xfff);
            float x = u2f((hi << 12) | low);
            uint8_t a = dsv4_cuda_host_e4m3_encode(x), b = dsv4_e4m3_encode(x);
            CHECK_MSG(a == b, "e4m3(%a) bits 0x%08x: device 0x%02x, cpu 0x%02x", (double)x, f2u(x), a, b);
            a = dsv4_cuda_host_e2m1_encode(x), b = dsv4_e2m1_encode(x);
            CHECK_MSG(a == b, "e2m1(%a) bits 0x%08x: device 0x%x, cpu 0x%x", (double)x, f2u(x), a, b);
            uint16_t c = dsv4_cuda_host_bf16_encode(x), d = dsv4_bf16_encode(x);
            CHECK_MSG(c == d, "bf16(%a) bits 0x%08x: device 0x%04x, cpu 0x%04x", (double)x, f2u(x), c, d);
            n++;
        }
    }
    CHECK(n == 7l << 20);
    for (int code = 0; code < 256; code++) {
        float a = dsv4_cuda_host_e4m3_decode((uint8_t)code), b = dsv4_e4m3_decode((uint8_t)code);
        if (isnan(b))
            CHECK_MSG(isnan(a), "e4m3 decode 0x%02x: %g, want NaN", code, (double)a);
        else
            CHECK_MSG(f2u(a) == f2u(b), "e4m3 decode 0x%02x: %a, want %a", code, (double)a, (double)b);
    }
    /* the 16-block quantizer against the CPU reference, over random blocks and scales */
    for (int it = 0; it < 20000; it++) {
        float v[16], s = (float)exp(test_rand_normal(&rng) * 4.0) * 1e-3f;
        fill_normal(v, 16, (float)exp(test_rand_normal(&rng) * 3.0), &rng);
        if (it % 7 == 0) v[it % 16] = 0.0f;
        if (it % 11 == 0) memset(v, 0, sizeof v);
        if (it % 13 == 0) v[it % 16] = NAN;
        if (it % 17 == 0) v[(it + 3) % 16] = -INFINITY;
        uint8_t pd[8], pc[8], sc;
        uint8_t sd = dsv4_cuda_host_quant_group16(v, 1.0f / s, pd);
        CHECK_OK(dsv4_cpu_quantize_nvfp4_act(v, 1, 16, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR, &s, pc, &sc));
        CHECK_MSG(sd == sc && memcmp(pd, pc, 8) == 0, "block %d: scale 0x%02x vs 0x%02x", it, sd, sc);
    }
}

/* The fused RMSNorm's 16-at-a-time BF16 rounding against the CPU's bf16_encode: random bits,
 * ties (low half 0x8000 with both parities), values that round up to Inf, and blocks with
 * NaNs of either sign (which take the per-element path). */
TEST(gpu_bf16_encode16_matches_cpu) {
    uint64_t rng = 61;
    for (int it = 0; it < 200000; it++) {
        float v[16];
        uint16_t got[16];
        for (int i = 0; i < 16; i++) {
            uint32_t u = (uint32_t)test_rand_u64(&rng);
            switch (test_rand_u64(&rng) % 6) {
            case 0: u = (u & 0xffff0000u) | 0x8000u; break;          /* a tie */
            case 1: u = (u & 0x80000000u) | 0x7f7f8000u | (u & 0x7fffu); break; /* rounds to +-Inf or the max */
            case 2: u &= 0x807fffffu; break;                         /* subnormal */
            default: break;
            }
            v[i] = u2f(u);
        }
        if (it % 3 == 0) v[it % 16] = u2f(0x7f800000u | (uint32_t)(test_rand_u64(&rng) & 0x807fffffu) | 1u); /* NaN */
        dsv4_cuda_host_bf16_encode16(v, got);
        for (int i = 0; i < 16; i++)
            CHECK_MSG(got[i] == dsv4_bf16_encode(v[i]), "bf16(%a) bits 0x%08x: 0x%04x, want 0x%04x", (double)v[i], f2u(v[i]),
                      got[i], dsv4_bf16_encode(v[i]));
    }
}

/* The kernels' division-free 16-block quantizer against the division form (itself checked
 * against the CPU reference above): random blocks, exact e2m1 midpoints (|x*g| == tau*sf)
 * and their fp32 neighbours, negative/NaN/Inf/zero scales, subnormals and huge values. */
TEST(gpu_quant_group16_fast_matches_division_form) {
    static const float taus[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    uint64_t rng = 41;
    long n = 0;
    for (int it = 0; it < 400000; it++) {
        float v[16], g;
        int kind = it % 8;
        g = (float)exp(test_rand_normal(&rng) * 6.0);
        if (kind == 1) g = ldexpf(1.0f, (int)(test_rand_u64(&rng) % 40) - 20); /* x*g exact */
        if (kind == 2) g = -g;
        if (it % 997 == 0) g = NAN;
        if (it % 991 == 0) g = INFINITY;
        if (it % 983 == 0) g = 0.0f;
        fill_normal(v, 16, (float)exp(test_rand_normal(&rng) * 8.0), &rng);
        if (kind == 3 || kind == 4) {
            /* put elements on the midpoints tau*sf/g of this block's scale, and 1-2 ulps off */
            float amax = 0;
            for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(v[i]));
            float sf = dsv4_cuda_host_e4m3_decode(dsv4_cuda_host_e4m3_encode(g * amax / 6.0f));
            for (int i = 0; i < 16; i++) {
                if (test_rand_u64(&rng) % 4 == 0) continue;
                float t = taus[test_rand_u64(&rng) % 7] * sf / g;
                if (!(fabsf(t) <= amax)) continue; /* keep amax (and so sf) unchanged */
                int d = (int)(test_rand_u64(&rng) % 5) - 2;
                uint32_t u = f2u(t);
                v[i] = u2f(u + (uint32_t)d) * ((test_rand_u64(&rng) & 1) ? -1.0f : 1.0f);
                if (!(fabsf(v[i]) <= amax)) v[i] = t;
            }
        }
        if (kind == 5) for (int i = 0; i < 16; i++) v[i] = u2f((uint32_t)test_rand_u64(&rng)); /* any bits */
        if (kind == 6) for (int i = 0; i < 16; i++) v[i] = u2f((uint32_t)(test_rand_u64(&rng) & 0x807fffffu)); /* subnormals */
        if (it % 7 == 0) v[it % 16] = 0.0f;
        if (it % 9 == 0) v[(it + 1) % 16] = -0.0f;
        if (it % 11 == 0) memset(v, 0, sizeof v);
        if (it % 13 == 0) v[it % 16] = NAN;
        if (it % 17 == 0) v[(it + 3) % 16] = -INFINITY;
        if (it % 19 == 0) v[(it + 5) % 16] = 3.0e38f;
        uint8_t pa[8], pb[8];
        uint8_t sa = dsv4_cuda_host_quant_group16(v, g, pa), sb = dsv4_cuda_host_quant_group16_fast(v, g, pb);
        CHECK_MSG(sa == sb && memcmp(pa, pb, 8) == 0, "block %d (kind %d, g %a): scale 0x%02x vs 0x%02x, payload %s", it,
                  kind, (double)g, sa, sb, memcmp(pa, pb, 8) ? "differs" : "same");
        if (sa != sb || memcmp(pa, pb, 8)) break;
        n++;
    }
    CHECK(n == 400000);
}

/* The BF16 quantizer the kernels use for BF16 rows and the fused RMSNorm (nvfp4_quant_group16_bf16:
 * two elements per integer op, from a per-g table of breakpoints) against the CPU reference. */

/* What the reference gives one element v under the scale code s and G = g. */
static uint8_t ref_e2m1_code(uint16_t v, float g, uint8_t s) {
    float sf = dsv4_e4m3_decode(s);
    return sf == 0.0f ? 0 : dsv4_e2m1_encode(dsv4_bf16_decode(v) * g / sf);
}

/* g = 1/input_scale: a power of two, a few significant bits (many exact ties), a full
 * mantissa, negative, and both ends of the range the BF16 path takes */
static const float bf16_test_gs[] = {1.0f, 3.0f, -0.33333334f, 368.21918f, 0x1p-100f, 0x1.fffffep+99f,
                                     -1.0f, -0.0041503906f, -0x1.5555p-77f, 1.3e21f};
#define N_BF16_PAYLOAD_GS 6 /* the first 6 in the every-value test */

TEST(gpu_bf16_scale_and_breakpoints_exact) {
    uint64_t rng = 57;
    /* e4m3(x / 6) as the scale computes it: around 6x every e4m3 midpoint (where a rounding
     * error would change the code; 40 ulps either side), and random x in [0, 8192]. The
     * throwaway exhaustive run over all 1.17e9 floats in [0, 8192] found no difference. */
    long n = 0;
    for (int c = 0; c < 0x7e; c++) {
        const float mid = (dsv4_e4m3_decode((uint8_t)c) + dsv4_e4m3_decode((uint8_t)(c + 1))) * 0.5f;
        const uint32_t u6 = f2u(mid * 6.0f); /* exact: <= 7 significant bits */
        for (int d = -40; d <= 40; d++) {
            const float x = u2f(u6 + (uint32_t)d);
            CHECK_MSG(dsv4_cuda_host_e4m3_div6(x) == dsv4_e4m3_encode(x / 6.0f), "e4m3(%a / 6): 0x%02x, want 0x%02x",
                      (double)x, dsv4_cuda_host_e4m3_div6(x), dsv4_e4m3_encode(x / 6.0f));
            n++;
        }
    }
    for (int i = 0; i < 1000000; i++) {
        const float x = u2f((uint32_t)(test_rand_u64(&rng) % (f2u(8192.0f) + 1)));
        CHECK_MSG(dsv4_cuda_host_e4m3_div6(x) == dsv4_e4m3_encode(x / 6.0f), "e4m3(%a / 6)", (double)x);
        n++;
    }
    CHECK(n == 126l * 81 + 1000000);
    /* the scale code from every amax, for a set of g */
    for (size_t gi = 0; gi < sizeof bf16_test_gs / sizeof *bf16_test_gs; gi++) {
        const float g = bf16_test_gs[gi];
        for (uint32_t k = 0; k <= 0x7f80; k++) {
            const float amax = dsv4_bf16_decode((uint16_t)k);
            CHECK_MSG(dsv4_cuda_host_bf16_scale((uint16_t)k, g) == dsv4_e4m3_encode(g * amax / 6.0f),
                      "scale of amax %a, g %a: 0x%02x, want 0x%02x", (double)amax, (double)g,
                      dsv4_cuda_host_bf16_scale((uint16_t)k, g), dsv4_e4m3_encode(g * amax / 6.0f));
        }
    }
    /* Table entry i is the exact breakpoint: the smallest bf16 X with RN(X * |g|) > T (tau
     * 0.25, 1.25) or >= T (0.75, 1.75), T = tau * m, m = (8 + i/4) / 8. */
    for (int it = 0; it < 3000; it++) {
        const int e = (int)(test_rand_u64(&rng) % 200) - 100;
        float g = ldexpf(1.0f + (float)(test_rand_u64(&rng) % (1u << 23)) * 0x1p-23f, e);
        if (it % 3 == 0) g = ldexpf(1.0f + (float)(test_rand_u64(&rng) % 8) / 8.0f, e); /* ties galore */
        if (it == 0) g = 0x1p-100f;
        if (it == 1) g = 0x1.fffffep+99f;
        CHECK(dsv4_cuda_host_bf16_fast_g(g) && dsv4_cuda_host_bf16_fast_g(-g));
        for (int i = 0; i < 32; i++) {
            const int k = i & 3;
            const float T = (float)((2 * k + 1) * (8 + (i >> 2))) / 32.0f, G = fabsf(g);
            const uint16_t b = dsv4_cuda_host_bf16_breakpoint(g, i);
            const float p = dsv4_bf16_decode(b) * G, p1 = dsv4_bf16_decode((uint16_t)(b - 1)) * G;
            const int pass = k % 2 ? p >= T : p > T, pass1 = k % 2 ? p1 >= T : p1 > T;
            CHECK_MSG(pass && !pass1, "g %a entry %d: breakpoint 0x%04x is not the first bf16 past T = %g", (double)g, i,
                      b, (double)T);
        }
    }
    CHECK(!dsv4_cuda_host_bf16_fast_g(0x1p-101f) && !dsv4_cuda_host_bf16_fast_g(0x1p+100f));
    CHECK(!dsv4_cuda_host_bf16_fast_g(0.0f) && !dsv4_cuda_host_bf16_fast_g(INFINITY));
    CHECK(!dsv4_cuda_host_bf16_fast_g(NAN));
}

/* Every non-NaN bf16 value under every scale code, for a set of g: the per-element code the
 * reference gives (the sign of the scale is that of g, as the quantizer's always is). */
TEST(gpu_bf16_payload_every_value_every_scale) {
    static uint16_t vals[65536];
    static uint8_t packed[32768];
    int nv = 0;
    for (uint32_t b = 0; b < 65536; b++)
        if ((b & 0x7fff) <= 0x7f80) vals[nv++] = (uint16_t)b;
    while (nv % 16) vals[nv++] = 0;
    long checked = 0;
    for (int gi = 0; gi < N_BF16_PAYLOAD_GS; gi++) {
        const float g = bf16_test_gs[gi];
        const uint8_t sgn = signbit(g) ? 0x80 : 0x00;
        for (int c = 0; c <= 0x7e; c++) {
            dsv4_cuda_host_bf16_payload(vals, nv / 16, g, (uint8_t)c, packed);
            for (int e = 0; e < nv; e++) {
                const uint8_t got = (packed[e / 2] >> (4 * (e % 2))) & 0xf;
                const uint8_t want = ref_e2m1_code(vals[e], g, (uint8_t)(c | sgn));
                CHECK_MSG(got == want, "g %a, scale 0x%02x, x = 0x%04x: code 0x%x, want 0x%x", (double)g, c | sgn, vals[e],
                          got, want);
                checked++;
            }
        }
    }
    CHECK(checked == (long)N_BF16_PAYLOAD_GS * 127 * nv);
}

/* Whole blocks through the BF16 form against the division form: random, tie-heavy (elements
 * on and next to tau * sf / g), any-bits, subnormal, NaN, +-Inf, +-0 and huge values, any g
 * (NaN, Inf, 0 and g outside the table's range too, which take the float path). */
TEST(gpu_quant_group16_bf16_matches_division_form) {
    static const float taus[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    uint64_t rng = 43;
    long n = 0;
    for (int it = 0; it < 300000; it++) {
        const int kind = it % 7;
        float g = (float)exp(test_rand_normal(&rng) * 6.0);
        if (kind == 1) g = ldexpf(1.0f + (float)(test_rand_u64(&rng) % 8) / 8.0f, (int)(test_rand_u64(&rng) % 60) - 30);
        if (test_rand_u64(&rng) & 1) g = -g;
        if (it % 997 == 0) g = NAN;
        if (it % 991 == 0) g = INFINITY;
        if (it % 983 == 0) g = 0.0f;
        if (it % 977 == 0) g = 0x1p+110f;
        if (it % 971 == 0) g = -0x1p-110f;
        uint16_t b[16];
        float v[16];
        const float mag = (float)exp(test_rand_normal(&rng) * 8.0);
        for (int i = 0; i < 16; i++) b[i] = dsv4_bf16_encode(mag * test_rand_normal(&rng));
        if (kind == 2) for (int i = 0; i < 16; i++) b[i] = (uint16_t)test_rand_u64(&rng); /* any bits */
        if (kind == 3) for (int i = 0; i < 16; i++) b[i] = (uint16_t)(test_rand_u64(&rng) & 0x807f); /* subnormals */
        if (kind == 4 || kind == 5) {
            /* elements on the bf16 values nearest tau * sf / g, and 1-2 keys off */
            float amax = 0;
            for (int i = 0; i < 16; i++) amax = fmaxf(amax, fabsf(dsv4_bf16_decode(b[i])));
            const float sf = dsv4_e4m3_decode(dsv4_e4m3_encode(g * amax / 6.0f));
            for (int i = 0; i < 16; i++) {
                if (test_rand_u64(&rng) % 4 == 0) continue;
                const float t = taus[test_rand_u64(&rng) % 7] * sf / g;
                const uint32_t k = (f2u(t) >> 16) + (uint32_t)(test_rand_u64(&rng) % 5) - 2;
                const uint32_t neg = (uint32_t)(test_rand_u64(&rng) & 1) << 15;
                if (fabsf(dsv4_bf16_decode((uint16_t)k)) <= amax) b[i] = (uint16_t)(k ^ neg);
            }
        }
        if (it % 5 == 0) b[it % 16] = 0x8000;                       /* -0 */
        if (it % 11 == 0) memset(b, 0, sizeof b);
        if (it % 13 == 0) b[(it + 3) % 16] = (uint16_t)(0x7fc1 | (test_rand_u64(&rng) & 0x8000)); /* NaN */
        if (it % 17 == 0) b[(it + 5) % 16] = (test_rand_u64(&rng) & 1) ? 0xff80 : 0x7f80;       /* Inf */
        if (it % 19 == 0) b[(it + 7) % 16] = 0x7f7f;                 /* the largest bf16 */
        for (int i = 0; i < 16; i++) v[i] = dsv4_bf16_decode(b[i]);
        uint8_t pa[8], pb[8];
        const uint8_t sa = dsv4_cuda_host_quant_group16(v, g, pa), sb = dsv4_cuda_host_quant_group16_bf16(b, g, pb);
        CHECK_MSG(sa == sb && memcmp(pa, pb, 8) == 0, "block %d (kind %d, g %a): scale 0x%02x vs 0x%02x, payload %s", it,
                  kind, (double)g, sa, sb, memcmp(pa, pb, 8) ? "differs" : "same");
        n++;
    }
    CHECK(n == 300000);
}

/* ---------------------------------------------------------------- kernels */

typedef struct qjob {
    const void *x;
    dsv4_cuda_dtype dtype;
    int64_t M, K;
    dsv4_cuda_nvfp4_out out;
    void *ws;
} qjob;

static dsv4_status enqueue_quantize(cudaStream_t s, void *arg) {
    qjob *j = arg;
    return dsv4_cuda_quantize_nvfp4(s, j->x, j->dtype, j->M, j->K, &j->out, j->ws);
}

/* Inputs of shape [M, K]: normal values of varied magnitude per row, an all-zero row (when
 * M > 2), all-zero blocks, and a few values near the largest bf16 (when `huge`); NaN and
 * Inf when `nonfinite`. BF16 inputs are rounded so the CPU sees the same values. */
static void make_input(float *x, int64_t M, int64_t K, int bf16, int huge, int nonfinite, uint64_t *rng) {
    for (int64_t r = 0; r < M; r++) {
        float mag = (float)exp(test_rand_normal(rng) * 2.0);
        fill_normal(x + r * K, (size_t)K, mag, rng);
    }
    if (M > 2) memset(x + 2 * K, 0, (size_t)K * sizeof *x);
    for (int64_t b = 0; b < M * K / 16; b += 5) memset(x + b * 16, 0, 16 * sizeof *x);
    if (huge) {
        x[0] = 3.3e38f;
        x[M * K - 1] = -3.3e38f;
        x[(M / 2) * K + K / 2] = 1e-40f; /* a float subnormal */
    }
    if (nonfinite) {
        x[K / 2] = NAN;
        x[M * K - 2] = INFINITY;
        if (M * K > 64) x[33] = -INFINITY;
    }
    if (bf16)
        for (int64_t i = 0; i < M * K; i++) x[i] = dsv4_bf16_round(x[i]);
}

static int quantize_case(int64_t M, int64_t K, int bf16, dsv4_act_scale_mode mode, dsv4_sf_layout layout, int huge,
                         int nonfinite, uint64_t *rng, char *msg, size_t msg_len) {
    int ok = 0;
    const int64_t KB = K / 16;
    const size_t n = (size_t)(M * K), nsf = layout == DSV4_SF_SWIZZLED ? dsv4_swizzled_scale_bytes(M, KB) : (size_t)(M * KB);
    const size_t nscale = mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN ? (size_t)M : 1;
    float *x = malloc(n * sizeof *x), *scale = malloc(nscale * sizeof *scale);
    uint16_t *xb = malloc(n * sizeof *xb);
    uint8_t *q = malloc(n / 2), *sf = malloc(nsf);
    void *dx = NULL, *dq = NULL, *dsf = NULL, *dscale = NULL, *dws = NULL;
    gpu_buf outs[3];
    int n_outs = 0;
    if (!x || !scale || !xb || !q || !sf) {
        snprintf(msg, msg_len, "out of host memory");
        goto done;
    }
    make_input(x, M, K, bf16, huge, nonfinite, rng);
    float amax = 0.0f;
    for (size_t i = 0; i < n; i++)
        if (fabsf(x[i]) > amax && isfinite(x[i])) amax = fabsf(x[i]);
    /* static: a calibrated scale a bit below the data's amax, so some blocks saturate */
    scale[0] = amax > 0 ? amax / 2688.0f * 0.7f : 1.0f;
    float static_scale = scale[0];
    if (dsv4_cpu_quantize_nvfp4_act(x, M, K, mode, layout, scale, q, sf) != DSV4_OK) {
        snprintf(msg, msg_len, "CPU reference: %s", dsv4_last_error());
        goto done;
    }
    for (size_t i = 0; i < n; i++) xb[i] = dsv4_bf16_encode(x[i]);
    dx = gpu_upload(bf16 ? (const void *)xb : (const void *)x, n * (bf16 ? 2 : 4));
    dq = gpu_upload(NULL, n / 2);
    dsf = gpu_upload(NULL, nsf);
    dscale = gpu_upload(mode == DSV4_ACT_SCALE_STATIC ? &static_scale : NULL, nscale * sizeof(float));
    dws = gpu_upload(NULL, DSV4_CUDA_QUANTIZE_WORKSPACE_BYTES);
    if (!dx || !dq || !dsf || !dscale || !dws) {
        snprintf(msg, msg_len, "cudaMalloc failed");
        goto done;
    }
    qjob job = {dx, bf16 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32, M, K, {dq, dsf, dscale, mode, layout}, dws};
    outs[n_outs++] = (gpu_buf){"q", dq, n / 2, NULL};
    outs[n_outs++] = (gpu_buf){"sf", dsf, nsf, NULL};
    if (mode != DSV4_ACT_SCALE_STATIC) outs[n_outs++] = (gpu_buf){"scale", dscale, nscale * sizeof(float), NULL};
    if (!gpu_graph_check(gpu_test_stream(), enqueue_quantize, &job, outs, n_outs, msg, msg_len)) goto done;
    if (memcmp(outs[0].host, q, n / 2) != 0) {
        size_t i = 0;
        while (((uint8_t *)outs[0].host)[i] == q[i]) i++;
        snprintf(msg, msg_len, "payload differs at byte %zu (row %zu, elements %zu..%zu): gpu 0x%02x cpu 0x%02x "
                 "(x = %a, %a)", i, i / (size_t)(K / 2), 2 * (i % (size_t)(K / 2)), 2 * (i % (size_t)(K / 2)) + 1,
                 ((uint8_t *)outs[0].host)[i], q[i], (double)x[2 * i], (double)x[2 * i + 1]);
        goto done;
    }
    if (memcmp(outs[1].host, sf, nsf) != 0) {
        size_t i = 0;
        while (((uint8_t *)outs[1].host)[i] == sf[i]) i++;
        snprintf(msg, msg_len, "scale byte %zu of %zu differs: gpu 0x%02x cpu 0x%02x", i, nsf,
                 ((uint8_t *)outs[1].host)[i], sf[i]);
        goto done;
    }
    if (mode != DSV4_ACT_SCALE_STATIC && memcmp(outs[2].host, scale, nscale * sizeof(float)) != 0) {
        snprintf(msg, msg_len, "dynamic input_scale differs: gpu %a cpu %a (first)", (double)((float *)outs[2].host)[0],
                 (double)scale[0]);
        goto done;
    }
    ok = 1;
done:
    gpu_bufs_free(outs, n_outs);
    cudaFree(dx), cudaFree(dq), cudaFree(dsf), cudaFree(dscale), cudaFree(dws);
    free(x), free(scale), free(xb), free(q), free(sf);
    return ok;
}

static const char *mode_name(dsv4_act_scale_mode m) {
    return m == DSV4_ACT_SCALE_STATIC ? "static" : m == DSV4_ACT_SCALE_DYNAMIC_TENSOR ? "dynamic-tensor" : "dynamic-token";
}

TEST(gpu_quantize_bit_exact_all_modes_and_shapes) {
    if (!gpu_available()) SKIP("no GPU");
    static const int64_t Ms[] = {1, 3, 131}, Ks[] = {16, 48, 4096, 7168};
    uint64_t rng = 101;
    char msg[1024];
    int cases = 0;
    for (int mi = 0; mi < 3; mi++)
        for (int ki = 0; ki < 4; ki++)
            for (int bf16 = 0; bf16 < 2; bf16++)
                for (int mode = 0; mode < 3; mode++)
                    for (int lay = 0; lay < 2; lay++) {
                        int huge = (mi + ki + mode) % 2;
                        if (!quantize_case(Ms[mi], Ks[ki], bf16, (dsv4_act_scale_mode)mode, (dsv4_sf_layout)lay, huge, 0,
                                           &rng, msg, sizeof msg))
                            CHECK_MSG(0, "M=%lld K=%lld %s %s %s%s: %s", (long long)Ms[mi], (long long)Ks[ki],
                                      bf16 ? "bf16" : "f32", mode_name((dsv4_act_scale_mode)mode),
                                      lay ? "swizzled" : "linear", huge ? " (huge values)" : "", msg);
                        cases++;
                    }
    CHECK(cases == 144);
}

TEST(gpu_quantize_bit_exact_large_batch) {
    if (!gpu_available()) SKIP("no GPU");
    static const struct { int64_t M, K; int bf16, mode, swizzled, huge, nonfinite; } cases[] = {
        {4096, 4096, 1, DSV4_ACT_SCALE_STATIC, 1, 0, 0},
        {4096, 4096, 1, DSV4_ACT_SCALE_DYNAMIC_TENSOR, 0, 0, 0},
        {4096, 4096, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 1, 1, 0},
        /* fp32 rows: the many-row layout (row_threads) with the per-token amax in registers */
        {1000, 7168, 0, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 1, 1, 0},
        /* the streaming kernel (BF16, more row blocks than its grid) at each of its row widths,
         * with two groups per thread (per token / per tensor) and one (static): a partial last
         * row block, swizzled padding row blocks past it, NaN / Inf blocks */
        {5001, 48, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 1, 1, 1},
        {6001, 1024, 1, DSV4_ACT_SCALE_DYNAMIC_TENSOR, 1, 1, 0},
        {4097, 7168, 1, DSV4_ACT_SCALE_STATIC, 1, 0, 1},
        {4097, 7168, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 1, 0, 1}, /* a row per block: __syncthreads */
        {3001, 2048, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 0, 0, 0},
        {9001, 48, 1, DSV4_ACT_SCALE_STATIC, 1, 1, 1},
        {6001, 1024, 1, DSV4_ACT_SCALE_STATIC, 0, 1, 0},
        {4500, 2048, 1, DSV4_ACT_SCALE_STATIC, 1, 0, 0},
    };
    uint64_t rng = 7;
    char msg[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(quantize_case(cases[i].M, cases[i].K, cases[i].bf16, (dsv4_act_scale_mode)cases[i].mode,
                                cases[i].swizzled ? DSV4_SF_SWIZZLED : DSV4_SF_LINEAR, cases[i].huge, cases[i].nonfinite,
                                &rng, msg, sizeof msg),
                  "%lldx%lld %s %s %s%s%s: %s", (long long)cases[i].M, (long long)cases[i].K, cases[i].bf16 ? "bf16" : "f32",
                  mode_name((dsv4_act_scale_mode)cases[i].mode), cases[i].swizzled ? "swizzled" : "linear",
                  cases[i].huge ? " (huge values)" : "", cases[i].nonfinite ? " NaN/Inf" : "", msg);
}

TEST(gpu_quantize_nan_inf_documented_behaviour) {
    if (!gpu_available()) SKIP("no GPU");
    uint64_t rng = 9;
    char msg[1024];
    for (int mode = 0; mode < 3; mode++)
        for (int bf16 = 0; bf16 < 2; bf16++)
            CHECK_MSG(quantize_case(5, 64, bf16, (dsv4_act_scale_mode)mode, DSV4_SF_LINEAR, 0, 1, &rng, msg, sizeof msg),
                      "NaN/Inf input, %s %s: %s", bf16 ? "bf16" : "f32", mode_name((dsv4_act_scale_mode)mode), msg);
}

TEST(gpu_quantize_rejects_bad_arguments) {
    /* argument checks happen before any CUDA call, so they run without a GPU too */
    uint8_t dummy[64] __attribute__((aligned(16))) = {0};
    float scale = 1.0f;
    dsv4_cuda_nvfp4_out out = {dummy, dummy, &scale, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR};
    CHECK_STATUS(dsv4_cuda_quantize_nvfp4(NULL, dummy, DSV4_CUDA_F32, 1, 24, &out, NULL), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "quantize_nvfp4") != NULL);
    CHECK_STATUS(dsv4_cuda_quantize_nvfp4(NULL, dummy + 4, DSV4_CUDA_F32, 1, 16, &out, NULL), DSV4_ERR_INVALID_ARGUMENT);
    out.mode = DSV4_ACT_SCALE_DYNAMIC_TENSOR;
    CHECK_STATUS(dsv4_cuda_quantize_nvfp4(NULL, dummy, DSV4_CUDA_F32, 1, 16, &out, NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dsv4_last_error(), "workspace") != NULL);
    CHECK_OK(dsv4_cuda_quantize_nvfp4(NULL, dummy, DSV4_CUDA_F32, 0, 16, &out, dummy)); /* M = 0: nothing */
}
#else
TEST(gpu_quantize_bit_exact_all_modes_and_shapes) { SKIP("built without CUDA"); }
#endif
