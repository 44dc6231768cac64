/* The CPU backend's adapters against the reference functions they wrap, and the op table's
 * errors. The MoE case matters most: the table's swiglu and combine are written in
 * backend_cpu.c (dsv4_cpu_moe fuses them), so a whole routed + shared MoE layer through the
 * table (router -> permute -> linear -> swiglu -> linear -> combine) must equal dsv4_cpu_moe
 * bit for bit: every row's linear is the same fp32 dot product, the SwiGLU the same
 * expression, the combine the same accumulation order. */
#include <math.h>

#include "backend/backend.h"
#include "base/status.h"
#include "cpu/ops.h"
#include "format/quant.h"
#include "test.h"

#define F32 DSV4_DT_F32
#define I32 DSV4_DT_I32

typedef struct { uint8_t q[64 * 64 / 2], s[64 * 64 / 16]; dsv4_weight w; } nv_weight;

static void make_nv(nv_weight *o, int64_t N, int64_t K, uint64_t *rng) {
    float x[64 * 64];
    for (int64_t i = 0; i < N * K; i++) x[i] = 0.1f * test_rand_normal(rng);
    memset(&o->w, 0, sizeof o->w);
    o->w.format = DSV4_WF_NVFP4, o->w.rows = N, o->w.cols = K, o->w.data = o->q, o->w.scale = o->s;
    o->w.scale_dtype = DSV4_DT_F8_E4M3, o->w.global_scale = dsv4_nvfp4_global_scale(x, (size_t)(N * K));
    dsv4_nvfp4_quantize(x, N, K, o->w.global_scale, o->q, o->s, "test");
}

/* h rows [r0, r0+n) = (x rows · w1ᵀ | x rows · w3ᵀ) through the table; x holds n rows. */
static dsv4_status gate_up(dsv4_backend *be, const dsv4_bweight *w1, const dsv4_bweight *w3, float *x, int n, int D,
                           int I, float *h) {
    float g[64 * 64], u[64 * 64];
    dsv4_tensor tx = dsv4_tensor_2d(x, F32, n, D), tg = dsv4_tensor_2d(g, F32, n, I), tu = dsv4_tensor_2d(u, F32, n, I);
    DSV4_TRY(dsv4_backend_linear(be, w1, &tx, NULL, &tg));
    DSV4_TRY(dsv4_backend_linear(be, w3, &tx, NULL, &tu));
    for (int r = 0; r < n; r++) {
        memcpy(h + (size_t)r * 2 * I, g + (size_t)r * I, sizeof(float) * I);
        memcpy(h + (size_t)r * 2 * I + I, u + (size_t)r * I, sizeof(float) * I);
    }
    return DSV4_OK;
}

TEST(backend_cpu_moe_layer_equals_reference) {
    enum { T = 6, D = 32, I = 16, E = 8, k = 3, TILE = 4 };
    const float limit = 7.0f;
    uint64_t rng = 3;
    dsv4_backend *be = dsv4_backend_cpu();
    static nv_weight W[E + 1][3];
    dsv4_bweight bw[E + 1][3];
    dsv4_cpu_expert ex[E + 1];
    for (int e = 0; e <= E; e++) {
        make_nv(&W[e][0], I, D, &rng), make_nv(&W[e][1], I, D, &rng), make_nv(&W[e][2], D, I, &rng);
        for (int j = 0; j < 3; j++) CHECK_OK(dsv4_backend_weight_load(be, &W[e][j].w, &bw[e][j]));
        ex[e] = (dsv4_cpu_expert){&W[e][0].w, &W[e][1].w, &W[e][2].w};
    }
    float x[T * D], logits[T * E], wts[T * k], ref[T * D], out[T * D];
    int32_t idx[T * k];
    for (int i = 0; i < T * D; i++) x[i] = 3.0f * test_rand_normal(&rng);
    for (int i = 0; i < T * E; i++) logits[i] = test_rand_normal(&rng);
    dsv4_cpu_router_cfg cfg = {E, k, DSV4_CPU_SCORE_SQRTSOFTPLUS, 1, 1.5f};
    dsv4_tensor tl = dsv4_tensor_2d(logits, F32, T, E), ti = dsv4_tensor_2d(idx, I32, T, k);
    dsv4_tensor tw = dsv4_tensor_2d(wts, F32, T, k);
    CHECK_OK(dsv4_backend_moe_router(be, &cfg, &tl, NULL, NULL, NULL, &ti, &tw));
    idx[k] = idx[0]; /* token 1 shares an expert with token 0 ... */
    idx[2 * k + 1] = idx[2 * k]; /* ... and token 2 routes twice to one expert (hash-style) */
    CHECK_OK(dsv4_cpu_moe(ex, E, &ex[E], T, D, k, x, (const int *)idx, wts, limit, DSV4_W4A16, ref));

    /* the table's composition */
    enum { MAXR = T * k + E * (TILE - 1) };
    int32_t counts[E], offs[E + 1], rt[MAXR], te[MAXR / TILE], inv[T * k];
    dsv4_moe_layout L = {counts, offs, rt, te, inv};
    CHECK(dsv4_moe_max_rows(T, k, E, TILE) == MAXR);
    CHECK_OK(dsv4_backend_moe_permute(be, &ti, E, TILE, &L));
    static float h[MAXR * 2 * I], a[MAXR * I], y[MAXR * D], xe[MAXR * D], hs[T * 2 * I], as[T * I], ys[T * D];
    for (int e = 0; e < E; e++) {
        if (!counts[e]) continue;
        for (int r = 0; r < counts[e]; r++) memcpy(xe + (size_t)r * D, x + (size_t)rt[offs[e] + r] * D, sizeof(float) * D);
        CHECK_OK(gate_up(be, &bw[e][0], &bw[e][1], xe, counts[e], D, I, h + (size_t)offs[e] * 2 * I));
    }
    dsv4_tensor th = dsv4_tensor_2d(h, F32, MAXR, 2 * I), ta = dsv4_tensor_2d(a, F32, MAXR, I);
    dsv4_swiglu_io sio = {&th, limit, &offs[E], &ta, NULL, NULL, 0};
    CHECK_OK(dsv4_backend_moe_swiglu(be, &sio));
    for (int e = 0; e < E; e++) {
        if (!counts[e]) continue;
        dsv4_tensor tin = dsv4_tensor_2d(a + (size_t)offs[e] * I, F32, counts[e], I);
        dsv4_tensor tout = dsv4_tensor_2d(y + (size_t)offs[e] * D, F32, counts[e], D);
        CHECK_OK(dsv4_backend_linear(be, &bw[e][2], &tin, NULL, &tout));
    }
    CHECK_OK(gate_up(be, &bw[E][0], &bw[E][1], x, T, D, I, hs));
    dsv4_tensor ths = dsv4_tensor_2d(hs, F32, T, 2 * I), tas = dsv4_tensor_2d(as, F32, T, I);
    dsv4_tensor tys = dsv4_tensor_2d(ys, F32, T, D);
    dsv4_swiglu_io sio2 = {&ths, limit, NULL, &tas, NULL, NULL, 0};
    CHECK_OK(dsv4_backend_moe_swiglu(be, &sio2));
    CHECK_OK(dsv4_backend_linear(be, &bw[E][2], &tas, NULL, &tys));
    dsv4_tensor ty = dsv4_tensor_2d(y, F32, MAXR, D), tinv = dsv4_tensor_2d(inv, I32, T, k);
    dsv4_tensor to = dsv4_tensor_2d(out, F32, T, D);
    CHECK_OK(dsv4_backend_moe_combine(be, &ty, &ti, &tinv, &tw, &tys, &to));
    for (int i = 0; i < T * D; i++)
        CHECK_MSG(memcmp(&out[i], &ref[i], 4) == 0, "out[%d]: table %.9g, dsv4_cpu_moe %.9g", i, (double)out[i], (double)ref[i]);
    for (int e = 0; e <= E; e++)
        for (int j = 0; j < 3; j++) dsv4_backend_weight_free(be, &bw[e][j]);
}

TEST(backend_cpu_norms_match_reference) {
    enum { R = 3, D = 48, HC = 4 };
    uint64_t rng = 8;
    dsv4_backend *be = dsv4_backend_cpu();
    float x[R * D], w[D], ref[R * D], got[R * D];
    uint16_t gb[R * D];
    for (int i = 0; i < R * D; i++) x[i] = test_rand_normal(&rng);
    for (int i = 0; i < D; i++) w[i] = 1.0f + 0.2f * test_rand_normal(&rng);
    CHECK_OK(dsv4_cpu_rmsnorm(ref, x, w, R, D, 1e-6f));
    dsv4_tensor tx = dsv4_tensor_2d(x, F32, R, D), tw = dsv4_tensor_1d(w, F32, D);
    dsv4_tensor tg = dsv4_tensor_2d(got, F32, R, D), tb = dsv4_tensor_2d(gb, DSV4_DT_BF16, R, D);
    CHECK_OK(dsv4_backend_rmsnorm(be, &tx, &tw, 1e-6f, &tg, NULL));
    CHECK(memcmp(got, ref, sizeof ref) == 0);
    CHECK_OK(dsv4_backend_rmsnorm(be, &tx, &tw, 1e-6f, &tb, NULL));
    for (int i = 0; i < R * D; i++) CHECK(gb[i] == dsv4_bf16_encode(ref[i]));
    /* hc_post through the table equals the reference (F32 in and out) */
    float X[R * HC * D], post[R * HC], comb[R * HC * HC], out[R * HC * D], oref[R * HC * D];
    for (int i = 0; i < R * HC * D; i++) X[i] = test_rand_normal(&rng);
    for (int i = 0; i < R * HC; i++) post[i] = test_rand_uniform(&rng);
    for (int i = 0; i < R * HC * HC; i++) comb[i] = test_rand_uniform(&rng);
    dsv4_cpu_hc_dims d = {HC, D, 20, 1e-6f, 1e-6f};
    CHECK_OK(dsv4_cpu_hc_post(&d, R, X, x, post, comb, DSV4_CPU_HC_MERGE_BF16_WEIGHTS, oref));
    dsv4_tensor tX = dsv4_tensor_3d(X, F32, R, HC, D), tp = dsv4_tensor_2d(post, F32, R, HC);
    dsv4_tensor tc = dsv4_tensor_3d(comb, F32, R, HC, HC), tO = dsv4_tensor_3d(out, F32, R, HC, D);
    CHECK_OK(dsv4_backend_hc_post(be, &d, &tX, &tx, &tp, &tc, DSV4_CPU_HC_MERGE_BF16_WEIGHTS, &tO));
    CHECK(memcmp(out, oref, sizeof oref) == 0);
}

TEST(backend_errors_name_the_op) {
    dsv4_backend *be = dsv4_backend_cpu();
    float x[64] = {0}, y[64];
    dsv4_tensor tx = dsv4_tensor_2d(x, F32, 2, 32), ty = dsv4_tensor_2d(y, F32, 2, 16);
    CHECK_STATUS(dsv4_backend_rmsnorm(be, &tx, NULL, 1e-6f, &ty, NULL), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "rmsnorm") && strstr(dsv4_last_error(), "[2, 16]"));
    dsv4_tensor ti = dsv4_tensor_2d(x, I32, 2, 32);
    CHECK_STATUS(dsv4_backend_quantize_nvfp4(be, &ti, NULL), DSV4_ERR_DTYPE);
    CHECK(strstr(dsv4_last_error(), "quantize_nvfp4") != NULL);
    uint8_t q[32], sf[4];
    float sc = 1.0f;
    dsv4_act_nvfp4 a = {q, sf, &sc, 1.0f, 2, 32, DSV4_ACT_SCALE_DYNAMIC_TENSOR, DSV4_SF_LINEAR};
    CHECK_STATUS(dsv4_backend_rmsnorm(be, &tx, NULL, 1e-6f, NULL, &a), DSV4_ERR_UNSUPPORTED);
    nv_weight *w = malloc(sizeof *w);
    uint64_t rng = 1;
    CHECK(w);
    make_nv(w, 16, 32, &rng);
    dsv4_bweight bw;
    CHECK_OK(dsv4_backend_weight_load(be, &w->w, &bw));
    dsv4_tensor tl = dsv4_tensor_2d(y, F32, 2, 16);
    a.mode = DSV4_ACT_SCALE_STATIC;
    dsv4_status both = dsv4_backend_linear(be, &bw, &tx, &a, &tl), none = dsv4_backend_linear(be, &bw, NULL, NULL, &tl);
    dsv4_backend_weight_free(be, &bw);
    free(w);
    CHECK(both == DSV4_ERR_INVALID_ARGUMENT && none == DSV4_ERR_INVALID_ARGUMENT && strstr(dsv4_last_error(), "linear"));
    /* the CUDA backend: UNSUPPORTED without CUDA, NO_DEVICE without a GPU or for a GPU that
     * is not there, and the message says which */
    dsv4_backend *cu = NULL;
    dsv4_status st = dsv4_backend_cuda(999, NULL, &cu);
    CHECK(cu == NULL);
    CHECK_MSG((dsv4_has_cuda() ? st == DSV4_ERR_NO_DEVICE : st == DSV4_ERR_UNSUPPORTED) &&
                  strstr(dsv4_last_error(), "cuda backend"),
              "dsv4_backend_cuda(999): %s: %s", dsv4_status_name(st), dsv4_last_error());
}

TEST(backend_cuda_pool_is_a_stack_and_ooms_name_the_buffer) {
    dsv4_backend *be = NULL;
    dsv4_backend_cuda_options o = {64u << 20, 1u << 20};
    dsv4_status st = dsv4_backend_cuda(0, &o, &be);
    if (st != DSV4_OK) SKIP("no CUDA backend here (%s)", dsv4_last_error());
    void *a = NULL, *b = NULL, *c = NULL, *big = NULL;
    CHECK_OK(dsv4_backend_alloc(be, 1000, "a", &a));
    CHECK_OK(dsv4_backend_alloc(be, 1000, "b", &b));
    CHECK_OK(dsv4_backend_free(be, a)); /* below the top: comes back with b */
    CHECK_OK(dsv4_backend_free(be, b));
    CHECK_OK(dsv4_backend_alloc(be, 10, "c", &c));
    CHECK(c == a);
    CHECK_STATUS(dsv4_backend_alloc(be, 1u << 30, "kv cache layer 3", &big), DSV4_ERR_OUT_OF_MEMORY);
    CHECK(strstr(dsv4_last_error(), "kv cache layer 3") && strstr(dsv4_last_error(), "cuda alloc"));
    CHECK_STATUS(dsv4_backend_free(be, (char *)c + 1), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_OK(dsv4_backend_free(be, c));
    /* the GPU linear takes BF16 activations only: UNSUPPORTED, naming backend and op */
    float x[32] = {0};
    CHECK_OK(dsv4_backend_alloc(be, sizeof x, "x", &a));
    uint64_t rng = 2;
    nv_weight *w = malloc(sizeof *w);
    CHECK(w);
    make_nv(w, 16, 32, &rng);
    dsv4_bweight bw;
    CHECK_OK(dsv4_backend_weight_load(be, &w->w, &bw));
    dsv4_tensor tx = dsv4_tensor_2d(a, F32, 1, 32), ty = dsv4_tensor_2d(a, F32, 1, 16);
    st = dsv4_backend_linear(be, &bw, &tx, NULL, &ty);
    dsv4_backend_weight_free(be, &bw);
    free(w);
    CHECK_STATUS(st, DSV4_ERR_UNSUPPORTED);
    CHECK(strstr(dsv4_last_error(), "cuda linear") != NULL);
    CHECK_OK(dsv4_backend_free(be, a));
    CHECK_OK(dsv4_backend_synchronize(be));
    dsv4_backend_destroy(be);
}
