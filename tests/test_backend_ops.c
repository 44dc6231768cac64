/* Every op of the backend op table (src/backend/backend.h) on every backend against the CPU
 * backend, on random data of a few shapes (M = 1, odd sizes, a prefill-sized one), ggml's
 * test-backend-ops in spirit. Each case uploads the same bytes to both backends, runs the op
 * on both, downloads, and compares with the tolerance the op's GPU test documents:
 *   quantize_nvfp4, hc_post, moe_permute, moe_combine, router ids   bit-exact
 *   rmsnorm          |d| <= 1e-5 (1 + |ref|) (+ 2^-7 |ref| for BF16 out: one BF16 ulp)
 *   hc_pre           |d| <= 3e-5 (1 + |ref|) on post, comb, x, y          test_gpu_norm_mhc.c
 *   NVFP4 outputs of the fused ops (rmsnorm, hc_pre, swiglu): bit-exact with the CPU quantizer
 *                    on the backend's own normed / activated values (a 1e-6 difference may
 *                    move a value across a rounding boundary of the reference's)
 *   linear           ‖y − ref‖ / ‖ref‖ <= 1e-5 (decode), 3e-5 (MMA path), 4e-3 (BF16 out)
 *                                                                         test_gpu_linear.c
 *   router weights, swiglu out   <= 4 ulp (host glibc expf/log1pf vs the device's correctly
 *                    rounded ones; BF16 out: 1 BF16 ulp)                  test_gpu_moe.c
 * Outputs are poisoned with 0xff (NaN) before each run, so an unwritten value fails. The
 * CPU backend is also run against itself: that checks this file's plumbing wherever the suite
 * runs, so the first GPU run tests the kernels, not the test. On the GPU each op also runs once
 * through the graph-safety harness (tests/gpu_harness.h). The CPU backend's own adapters are
 * checked against the reference functions, a whole MoE layer bit for bit against dsv4_cpu_moe. */
#include <math.h>
#include <stdarg.h>

#include "backend/backend.h"
#include "cpu/ops.h"
#include "format/fp.h"
#include "format/quant.h"
#include "test.h"

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "gpu_harness.h"
#endif

#define F32 DSV4_DT_F32
#define BF16 DSV4_DT_BF16
#define I32 DSV4_DT_I32

/* ---------------------------------------------------------------- mirrored buffers */

/* The same buffer on side 0 (the CPU reference backend) and side 1 (the backend under test). */
typedef struct mbuf {
    void *d[2];
    size_t bytes;
    void *host[2]; /* downloaded outputs */
} mbuf;

typedef struct tctx {
    dsv4_backend *be[2];
    mbuf b[48];
    int n, graph;
    char *msg;
    size_t len;
} tctx;

static int failf(tctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(tctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, c->len, fmt, ap);
    va_end(ap);
    return 0;
}

/* Allocates `bytes` on both sides: a copy of host, or 0xff bytes when host is NULL. */
static mbuf *mput(tctx *c, const void *host, size_t bytes) {
    if (c->n == (int)(sizeof c->b / sizeof c->b[0])) return NULL;
    mbuf *b = &c->b[c->n];
    memset(b, 0, sizeof *b);
    b->bytes = bytes;
    unsigned char *poison = host ? NULL : malloc(bytes ? bytes : 1);
    if (poison) memset(poison, 0xff, bytes);
    for (int s = 0; s < 2; s++) {
        if (dsv4_backend_alloc(c->be[s], bytes, "test buffer", &b->d[s]) != DSV4_OK ||
            dsv4_backend_upload(c->be[s], b->d[s], host ? host : poison, bytes) != DSV4_OK) {
            if (b->d[0]) dsv4_backend_free(c->be[0], b->d[0]);
            if (b->d[1]) dsv4_backend_free(c->be[1], b->d[1]);
            free(poison);
            return NULL;
        }
    }
    free(poison);
    c->n++;
    return b;
}

/* Frees every buffer in reverse order (the CUDA pool is a stack). */
static void ctx_free(tctx *c) {
    for (int i = c->n - 1; i >= 0; i--)
        for (int s = 0; s < 2; s++) {
            dsv4_backend_free(c->be[s], c->b[i].d[s]);
            free(c->b[i].host[s]);
        }
    c->n = 0;
}

/* Downloads both sides of b into b->host[]. */
static int fetch(tctx *c, mbuf *b) {
    for (int s = 0; s < 2; s++) {
        b->host[s] = malloc(b->bytes ? b->bytes : 1);
        if (!b->host[s] || dsv4_backend_download(c->be[s], b->host[s], b->d[s], b->bytes) != DSV4_OK)
            return failf(c, "download (%s): %s", dsv4_backend_name(c->be[s]), dsv4_last_error());
    }
    return 1;
}

typedef dsv4_status (*op_fn)(dsv4_backend *be, int side, void *args);

#if DSV4_HAVE_CUDA
typedef struct graph_job {
    op_fn fn;
    dsv4_backend *be;
    void *args;
} graph_job;
static dsv4_status enqueue_job(cudaStream_t s, void *arg) {
    graph_job *j = arg; /* the op enqueues on the backend's stream, which the harness captures */
    return j->fn(j->be, 1, j->args);
}
#endif

/* Runs the op on both sides; on the test side through the graph harness when c->graph, with
 * the output buffers outs (then the harness's replays must equal its direct run). */
static int run2(tctx *c, op_fn fn, void *args, mbuf **outs, int n_outs) {
    for (int s = 0; s < 2; s++) {
#if DSV4_HAVE_CUDA
        if (s == 1 && c->graph) {
            gpu_buf gb[8];
            for (int i = 0; i < n_outs; i++) gb[i] = (gpu_buf){"output", outs[i]->d[1], outs[i]->bytes, NULL};
            graph_job j = {fn, c->be[1], args};
            int ok = gpu_graph_check((cudaStream_t)dsv4_backend_stream(c->be[1]), enqueue_job, &j, gb, n_outs, c->msg, c->len);
            gpu_bufs_free(gb, n_outs);
            if (!ok) return 0;
            continue;
        }
#endif
        dsv4_status st = fn(c->be[s], s, args);
        if (st != DSV4_OK)
            return failf(c, "%s backend: %s: %s", dsv4_backend_name(c->be[s]), dsv4_status_name(st), dsv4_last_error());
    }
    for (int i = 0; i < n_outs; i++)
        if (!fetch(c, outs[i])) return 0;
    return 1;
}

/* ---------------------------------------------------------------- comparisons */

static float val(const void *p, size_t i, int bf16) {
    return bf16 ? dsv4_bf16_decode(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}
static uint32_t bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}
static int64_t ulps(float a, float b) {
    if (bits(a) == bits(b)) return 0;
    if (!isfinite(a) || !isfinite(b) || (a < 0) != (b < 0)) return INT64_MAX;
    int64_t d = (int64_t)bits(a) - (int64_t)bits(b);
    return d < 0 ? -d : d;
}

/* |test - ref| <= rel (1 + |ref|) (+ 2^-7 |ref| when BF16: both sides are BF16-rounded, so a
 * sum-order difference of one fp32 ulp can flip one rounding, which is one BF16 ulp, up to
 * 2^-7 relative at the bottom of a binade), both read from b->host. */
static int near(tctx *c, const char *what, mbuf *b, size_t n, int bf16, double rel) {
    for (size_t i = 0; i < n; i++) {
        double r = val(b->host[0], i, bf16), t = val(b->host[1], i, bf16);
        double tol = rel * (1.0 + fabs(r)) + (bf16 ? ldexp(fabs(r), -7) : 0.0);
        if (!(fabs(t - r) <= tol)) return failf(c, "%s[%zu]: %s %.9g, cpu %.9g", what, i, dsv4_backend_name(c->be[1]), t, r);
    }
    return 1;
}

static int same(tctx *c, const char *what, mbuf *b, size_t bytes) {
    if (!memcmp(b->host[0], b->host[1], bytes)) return 1;
    size_t i = 0;
    while (((uint8_t *)b->host[0])[i] == ((uint8_t *)b->host[1])[i]) i++;
    return failf(c, "%s: byte %zu of %zu: %s 0x%02x, cpu 0x%02x", what, i, bytes, dsv4_backend_name(c->be[1]),
                 ((uint8_t *)b->host[1])[i], ((uint8_t *)b->host[0])[i]);
}

/* The test side's NVFP4 (q, sf, scale) equals the CPU quantizer on y (the test side's own
 * values, BF16-rounded when `round`); M rows of K. static_scale for STATIC. */
static int nvfp4_of(tctx *c, const float *y, int64_t M, int64_t K, int round, const dsv4_act_nvfp4 *shape,
                    float static_scale, mbuf *q, mbuf *sf, mbuf *sc) {
    size_t nq, nsf, nsc;
    dsv4_act_nvfp4_sizes(M, K, shape->mode, shape->layout, &nq, &nsf, &nsc);
    float *r = malloc(sizeof(float) * (size_t)(M * K + 1)), *s = malloc(nsc + 4);
    uint8_t *wq = malloc(nq + 1), *wsf = malloc(nsf + 1);
    int ok = r && s && wq && wsf;
    for (int64_t i = 0; ok && i < M * K; i++) r[i] = round ? dsv4_bf16_round(y[i]) : y[i];
    if (ok) s[0] = static_scale;
    if (ok && dsv4_cpu_quantize_nvfp4_act(r, M, K, shape->mode, shape->layout, s, wq, wsf) != DSV4_OK)
        ok = failf(c, "CPU quantizer: %s", dsv4_last_error());
    else if (ok && (memcmp(wq, q->host[1], nq) || memcmp(wsf, sf->host[1], nsf) ||
                    (shape->mode != DSV4_ACT_SCALE_STATIC && memcmp(s, sc->host[1], nsc))))
        ok = failf(c, "NVFP4 output differs from the CPU quantizer on the backend's own values (q %d, sf %d)",
                   memcmp(wq, q->host[1], nq) != 0, memcmp(wsf, sf->host[1], nsf) != 0);
    free(r), free(s), free(wq), free(wsf);
    return ok;
}

static void fill(float *a, size_t n, float mean, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) a[i] = mean + scale * test_rand_normal(rng);
}

/* Host bytes of n floats as F32 or BF16 (malloc'ed); a rounds to BF16 in place when bf16. */
static void *as_bytes(float *a, size_t n, int bf16) {
    void *out = malloc(n * (bf16 ? 2 : 4) + 1);
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (bf16) ((uint16_t *)out)[i] = dsv4_bf16_encode(a[i]), a[i] = dsv4_bf16_round(a[i]);
        else ((float *)out)[i] = a[i];
    }
    return out;
}

/* An NVFP4 activation descriptor on side s over mirrored q/sf/scale buffers. */
static dsv4_act_nvfp4 act_on(int s, mbuf *q, mbuf *sf, mbuf *sc, float input_scale, int64_t M, int64_t K,
                             dsv4_act_scale_mode mode, dsv4_sf_layout layout) {
    dsv4_act_nvfp4 a = {q->d[s], sf->d[s], sc->d[s], input_scale, M, K, mode, layout};
    return a;
}

/* q, sf (poisoned) and scale (the static value, else poisoned) buffers for [M, K]. */
static int act_bufs(tctx *c, int64_t M, int64_t K, dsv4_act_scale_mode mode, dsv4_sf_layout layout, float static_scale,
                    mbuf **q, mbuf **sf, mbuf **sc) {
    size_t nq, nsf, nsc;
    dsv4_act_nvfp4_sizes(M, K, mode, layout, &nq, &nsf, &nsc);
    *q = mput(c, NULL, nq), *sf = mput(c, NULL, nsf);
    *sc = mput(c, mode == DSV4_ACT_SCALE_STATIC ? &static_scale : NULL, nsc);
    return *q && *sf && *sc ? 1 : failf(c, "alloc: %s", dsv4_last_error());
}


/* ---------------------------------------------------------------- quantize_nvfp4 */

typedef struct qz_args {
    mbuf *x, *q, *sf, *sc;
    int64_t M, K;
    int bf16;
    dsv4_act_scale_mode mode;
    dsv4_sf_layout layout;
    float s;
} qz_args;

static dsv4_status op_quantize(dsv4_backend *be, int s, void *p) {
    qz_args *a = p;
    dsv4_tensor x = dsv4_tensor_2d(a->x->d[s], a->bf16 ? BF16 : F32, a->M, a->K);
    dsv4_act_nvfp4 q = act_on(s, a->q, a->sf, a->sc, a->s, a->M, a->K, a->mode, a->layout);
    return dsv4_backend_quantize_nvfp4(be, &x, &q);
}

static int case_quantize(tctx *c, int64_t M, int64_t K, int bf16, int mode, int layout, uint64_t *rng) {
    const size_t n = (size_t)(M * K);
    float *x = malloc(4 * n);
    if (!x) return failf(c, "out of memory");
    for (int64_t r = 0; r < M; r++) fill(x + r * K, (size_t)K, 0.0f, (float)exp(2.0 * test_rand_normal(rng)), rng);
    if (M > 2) memset(x + K, 0, sizeof(float) * (size_t)K); /* an all-zero row */
    void *xb = as_bytes(x, n, bf16);
    float amax = dsv4_amax(x, (int64_t)n);
    qz_args a = {mput(c, xb, n * (bf16 ? 2 : 4)), NULL, NULL, NULL, M, K, bf16, (dsv4_act_scale_mode)mode,
                 (dsv4_sf_layout)layout, amax > 0 ? amax / 2688.0f * 0.8f : 1.0f};
    int ok = a.x && act_bufs(c, M, K, a.mode, a.layout, a.s, &a.q, &a.sf, &a.sc);
    mbuf *outs[3] = {a.q, a.sf, a.sc};
    ok = ok && run2(c, op_quantize, &a, outs, mode == DSV4_ACT_SCALE_STATIC ? 2 : 3) && same(c, "q", a.q, a.q->bytes) &&
         same(c, "sf", a.sf, a.sf->bytes) && (mode == DSV4_ACT_SCALE_STATIC || same(c, "scale", a.sc, a.sc->bytes));
    free(x), free(xb);
    return ok;
}

/* ---------------------------------------------------------------- rmsnorm */

typedef struct rn_args {
    mbuf *x, *w, *out, *q, *sf, *sc;
    int64_t rows, dim;
    int in_bf16, out_bf16, qmode, layout;
    float s;
} rn_args;

static dsv4_status op_rmsnorm(dsv4_backend *be, int s, void *p) {
    rn_args *a = p;
    dsv4_tensor x = dsv4_tensor_2d(a->x->d[s], a->in_bf16 ? BF16 : F32, a->rows, a->dim);
    dsv4_tensor w = dsv4_tensor_1d(a->w ? a->w->d[s] : NULL, F32, a->dim);
    dsv4_tensor out = dsv4_tensor_2d(a->out->d[s], a->out_bf16 ? BF16 : F32, a->rows, a->dim);
    dsv4_act_nvfp4 q;
    if (a->qmode >= 0) q = act_on(s, a->q, a->sf, a->sc, a->s, a->rows, a->dim, a->qmode, a->layout);
    return dsv4_backend_rmsnorm(be, &x, a->w ? &w : NULL, 1e-6f, &out, a->qmode >= 0 ? &q : NULL);
}

static int case_rmsnorm(tctx *c, int64_t rows, int64_t dim, int in_bf16, int weighted, int out_bf16, int qmode,
                        int layout, uint64_t *rng) {
    const size_t n = (size_t)(rows * dim);
    float *x = malloc(4 * n), *w = malloc(4 * (size_t)dim), *ref = malloc(4 * n), *got = malloc(4 * n);
    void *xb = NULL;
    int ok = x && w && ref && got;
    if (ok) {
        for (int64_t r = 0; r < rows; r++) fill(x + r * dim, (size_t)dim, 0.0f, (float)exp(2.0 * test_rand_normal(rng)), rng);
        if (rows > 2) memset(x + 2 * dim, 0, sizeof(float) * (size_t)dim);
        fill(w, (size_t)dim, 1.0f, 0.3f, rng);
        xb = as_bytes(x, n, in_bf16);
        ok = xb && dsv4_cpu_rmsnorm(ref, x, weighted ? w : NULL, (int)rows, (int)dim, 1e-6f) == DSV4_OK;
    }
    rn_args a = {NULL, NULL, NULL, NULL, NULL, NULL, rows, dim, in_bf16, out_bf16, qmode, layout,
                 ok ? dsv4_amax(ref, (int64_t)n) / 2688.0f * 0.8f : 1.0f};
    if (ok) {
        a.x = mput(c, xb, n * (in_bf16 ? 2 : 4)), a.out = mput(c, NULL, n * (out_bf16 ? 2 : 4));
        if (weighted) a.w = mput(c, w, 4 * (size_t)dim);
        ok = a.x && a.out && (!weighted || a.w) &&
             (qmode < 0 || act_bufs(c, rows, dim, (dsv4_act_scale_mode)qmode, (dsv4_sf_layout)layout, a.s, &a.q, &a.sf, &a.sc));
    }
    mbuf *outs[4] = {a.out, a.q, a.sf, a.sc};
    ok = ok && run2(c, op_rmsnorm, &a, outs, qmode < 0 ? 1 : qmode == DSV4_ACT_SCALE_STATIC ? 3 : 4) &&
         near(c, "out", a.out, n, out_bf16, 1e-5);
    if (ok && qmode >= 0) {
        dsv4_act_nvfp4 shape = {0, 0, 0, a.s, rows, dim, (dsv4_act_scale_mode)qmode, (dsv4_sf_layout)layout};
        for (size_t i = 0; i < n; i++) got[i] = val(a.out->host[1], i, out_bf16);
        ok = nvfp4_of(c, got, rows, dim, 1, &shape, a.s, a.q, a.sf, a.sc);
    }
    free(x), free(w), free(ref), free(got), free(xb);
    return ok;
}

/* ---------------------------------------------------------------- hc_pre, hc_post */

typedef struct hc_args {
    dsv4_cpu_hc_dims d;
    int T, x_bf16, y_kind, qmode, layout, y_bf16, merge;
    mbuf *X, *fn, *base, *scale, *post, *comb, *x, *w, *y, *q, *sf, *sc, *out;
    float s;
} hc_args;

static dsv4_status op_hc_pre(dsv4_backend *be, int s, void *p) {
    hc_args *a = p;
    const int hc = a->d.hc, D = a->d.dim, nmix = (2 + hc) * hc;
    dsv4_tensor X = dsv4_tensor_3d(a->X->d[s], a->x_bf16 ? BF16 : F32, a->T, hc, D);
    dsv4_tensor fn = dsv4_tensor_2d(a->fn->d[s], F32, nmix, hc * D), base = dsv4_tensor_1d(a->base->d[s], F32, nmix);
    dsv4_tensor scale = dsv4_tensor_1d(a->scale->d[s], F32, 3), post = dsv4_tensor_2d(a->post->d[s], F32, a->T, hc);
    dsv4_tensor comb = dsv4_tensor_3d(a->comb->d[s], F32, a->T, hc, hc);
    dsv4_tensor x = dsv4_tensor_2d(a->x ? a->x->d[s] : NULL, F32, a->T, D), w = dsv4_tensor_1d(a->w->d[s], F32, D);
    dsv4_tensor y = dsv4_tensor_2d(a->y ? a->y->d[s] : NULL, a->y_kind == 1 ? BF16 : F32, a->T, D);
    dsv4_act_nvfp4 q;
    if (a->qmode >= 0) q = act_on(s, a->q, a->sf, a->sc, a->s, a->T, D, a->qmode, a->layout);
    dsv4_hc_pre_io io = {&X, &fn, &base, &scale, &post, &comb, a->x ? &x : NULL, &w, 1e-6f, a->y ? &y : NULL,
                         a->qmode >= 0 ? &q : NULL};
    return dsv4_backend_hc_pre(be, &a->d, &io);
}

/* y_kind: 0 fp32 y, 1 BF16 y (then x is not requested: the optional path). */
static int case_hc_pre(tctx *c, int T, int hc, int D, int x_bf16, int y_kind, int qmode, int layout, uint64_t *rng) {
    const int nmix = (2 + hc) * hc;
    const size_t nX = (size_t)T * hc * D, nfn = (size_t)nmix * hc * D, nx = (size_t)T * D;
    float *X = malloc(4 * nX), *fn = malloc(4 * nfn), *base = malloc(4 * (size_t)nmix), *w = malloc(4 * (size_t)D);
    float *got = malloc(4 * nx), scale[3] = {0.7f, 1.3f, 0.9f};
    void *Xb = NULL;
    hc_args a;
    memset(&a, 0, sizeof a);
    a.d = (dsv4_cpu_hc_dims){hc, D, 20, 1e-6f, 1e-6f}, a.T = T, a.x_bf16 = x_bf16, a.y_kind = y_kind;
    a.qmode = qmode, a.layout = layout;
    int ok = X && fn && base && w && got;
    if (ok) {
        fill(X, nX, 0.0f, 1.0f, rng), fill(fn, nfn, 0.0f, 2.0f / sqrtf((float)(hc * D)), rng);
        fill(base, (size_t)nmix, 0.0f, 0.5f, rng), fill(w, (size_t)D, 1.0f, 0.3f, rng);
        Xb = as_bytes(X, nX, x_bf16);
        a.s = 8.0f / 2688.0f; /* normed values are O(1): a static scale that keeps block scales in range */
        a.X = mput(c, Xb, nX * (x_bf16 ? 2 : 4)), a.fn = mput(c, fn, 4 * nfn), a.base = mput(c, base, 4 * (size_t)nmix);
        a.scale = mput(c, scale, 12), a.w = mput(c, w, 4 * (size_t)D), a.post = mput(c, NULL, 4 * (size_t)T * hc);
        a.comb = mput(c, NULL, 4 * (size_t)T * hc * hc), a.y = mput(c, NULL, nx * (y_kind == 1 ? 2 : 4));
        if (y_kind == 0) a.x = mput(c, NULL, 4 * nx);
        ok = Xb && a.X && a.fn && a.base && a.scale && a.w && a.post && a.comb && a.y && (y_kind || a.x) &&
             (qmode < 0 || act_bufs(c, T, D, (dsv4_act_scale_mode)qmode, (dsv4_sf_layout)layout, a.s, &a.q, &a.sf, &a.sc));
    }
    mbuf *outs[7] = {a.post, a.comb, a.y, a.q, a.sf, a.sc, NULL};
    int n_outs = qmode < 0 ? 3 : qmode == DSV4_ACT_SCALE_STATIC ? 5 : 6;
    if (a.x) outs[n_outs++] = a.x;
    ok = ok && run2(c, op_hc_pre, &a, outs, n_outs) && near(c, "post", a.post, (size_t)T * hc, 0, 3e-5) &&
         near(c, "comb", a.comb, (size_t)T * hc * hc, 0, 3e-5) && near(c, "y", a.y, nx, y_kind == 1, 3e-5) &&
         (!a.x || near(c, "x", a.x, nx, 0, 3e-5));
    if (ok && qmode >= 0) {
        dsv4_act_nvfp4 shape = {0, 0, 0, a.s, T, D, (dsv4_act_scale_mode)qmode, (dsv4_sf_layout)layout};
        for (size_t i = 0; i < nx; i++) got[i] = val(a.y->host[1], i, y_kind == 1);
        ok = nvfp4_of(c, got, T, D, 1, &shape, a.s, a.q, a.sf, a.sc);
    }
    free(X), free(fn), free(base), free(w), free(got), free(Xb);
    return ok;
}

static dsv4_status op_hc_post(dsv4_backend *be, int s, void *p) {
    hc_args *a = p;
    const int hc = a->d.hc, D = a->d.dim;
    dsv4_tensor X = dsv4_tensor_3d(a->X->d[s], a->x_bf16 ? BF16 : F32, a->T, hc, D);
    dsv4_tensor y = dsv4_tensor_2d(a->y->d[s], a->y_bf16 ? BF16 : F32, a->T, D);
    dsv4_tensor post = dsv4_tensor_2d(a->post->d[s], F32, a->T, hc), comb = dsv4_tensor_3d(a->comb->d[s], F32, a->T, hc, hc);
    dsv4_tensor out = dsv4_tensor_3d(a->out->d[s], a->x_bf16 ? BF16 : F32, a->T, hc, D);
    return dsv4_backend_hc_post(be, &a->d, &X, &y, &post, &comb, (dsv4_cpu_hc_merge)a->merge, &out);
}

static int case_hc_post(tctx *c, int T, int hc, int D, int x_bf16, int y_bf16, int merge, uint64_t *rng) {
    const size_t nX = (size_t)T * hc * D, ny = (size_t)T * D;
    float *X = malloc(4 * nX), *y = malloc(4 * ny), *post = malloc(4 * (size_t)T * hc), *comb = malloc(4 * (size_t)T * hc * hc);
    void *Xb = NULL, *yb = NULL;
    hc_args a;
    memset(&a, 0, sizeof a);
    a.d = (dsv4_cpu_hc_dims){hc, D, 20, 1e-6f, 1e-6f}, a.T = T, a.x_bf16 = x_bf16, a.y_bf16 = y_bf16, a.merge = merge;
    int ok = X && y && post && comb;
    if (ok) {
        fill(X, nX, 0.0f, 1.0f, rng), fill(y, ny, 0.0f, 2.0f, rng);
        for (int i = 0; i < T * hc; i++) post[i] = 2.0f * test_rand_uniform(rng);
        for (int i = 0; i < T * hc * hc; i++) comb[i] = test_rand_uniform(rng) / (float)hc;
        Xb = as_bytes(X, nX, x_bf16), yb = as_bytes(y, ny, y_bf16);
        a.X = mput(c, Xb, nX * (x_bf16 ? 2 : 4)), a.y = mput(c, yb, ny * (y_bf16 ? 2 : 4));
        a.post = mput(c, post, 4 * (size_t)T * hc), a.comb = mput(c, comb, 4 * (size_t)T * hc * hc);
        a.out = mput(c, NULL, nX * (x_bf16 ? 2 : 4));
        ok = Xb && yb && a.X && a.y && a.post && a.comb && a.out;
    }
    mbuf *outs[1] = {a.out};
    ok = ok && run2(c, op_hc_post, &a, outs, 1) && same(c, "X_out", a.out, a.out->bytes);
    free(X), free(y), free(post), free(comb), free(Xb), free(yb);
    return ok;
}

/* ---------------------------------------------------------------- linear */

enum { ACT_BF16 = 0, ACT_FP4_TENSOR, ACT_FP4_TOKEN };

typedef struct lin_args {
    dsv4_bweight w[2];
    mbuf *x, *q, *sf, *sc, *y;
    int64_t M, N, K;
    int act, out_bf16;
    float s;
} lin_args;

static dsv4_status op_linear(dsv4_backend *be, int s, void *p) {
    lin_args *a = p;
    dsv4_tensor x = dsv4_tensor_2d(a->x ? a->x->d[s] : NULL, BF16, a->M, a->K);
    dsv4_tensor y = dsv4_tensor_2d(a->y->d[s], a->out_bf16 ? BF16 : F32, a->M, a->N);
    dsv4_act_nvfp4 q;
    if (a->act != ACT_BF16)
        q = act_on(s, a->q, a->sf, a->sc, a->s, a->M, a->K,
                   a->act == ACT_FP4_TOKEN ? DSV4_ACT_SCALE_DYNAMIC_TOKEN : DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR);
    return dsv4_backend_linear(be, &a->w[s], a->act == ACT_BF16 ? &x : NULL, a->act == ACT_BF16 ? NULL : &q, &y);
}

/* fmt: DSV4_WF_NVFP4 or DSV4_WF_FP8_B128 (ue8m0 scales). */
static int case_linear(tctx *c, dsv4_wformat fmt, int act, int64_t M, int64_t N, int64_t K, int out_bf16, uint64_t *rng) {
    const size_t nw = (size_t)(N * K), nx = (size_t)(M * K), ny = (size_t)(M * N);
    const size_t nws = (size_t)(((N + 127) / 128) * ((K + 127) / 128));
    float *wf = malloc(4 * nw), *x = malloc(4 * nx), *tok = malloc(4 * (size_t)M);
    uint8_t *wq = malloc(nw + 1), *ws = malloc(fmt == DSV4_WF_NVFP4 ? nw / 16 + 1 : 4 * nws), *xq = malloc(nx / 2 + 1);
    uint8_t *xs = malloc(nx / 16 + 1);
    void *xb = NULL;
    lin_args a;
    memset(&a, 0, sizeof a);
    a.M = M, a.N = N, a.K = K, a.act = act, a.out_bf16 = out_bf16, a.s = 4.5f / 2688.0f;
    int ok = wf && x && tok && wq && ws && xq && xs;
    if (!ok) goto done;
    fill(wf, nw, 0.0f, 0.05f, rng), fill(x, nx, 0.0f, 1.0f, rng);
    if (N > 2) memset(wf + 2 * K, 0, sizeof(float) * (size_t)K); /* an all-zero row */
    if (M > 1) memset(x + K, 0, sizeof(float) * (size_t)K);      /* an all-zero token */
    dsv4_weight w = {fmt, N, K, wq, ws, DSV4_DT_F8_E4M3, 1.0f, 0.0f, NULL, 0};
    if (fmt == DSV4_WF_NVFP4) {
        w.global_scale = dsv4_nvfp4_global_scale(wf, nw);
        ok = dsv4_nvfp4_quantize(wf, N, K, w.global_scale, wq, ws, "w") == DSV4_OK;
    } else {
        w.scale_dtype = DSV4_DT_F8_E8M0;
        ok = dsv4_fp8_block128_quantize(wf, N, K, wq, ws, "w") == DSV4_OK;
    }
    if (!ok) {
        ok = failf(c, "host weight: %s", dsv4_last_error());
        goto done;
    }
    if (dsv4_backend_weight_load(c->be[0], &w, &a.w[0]) != DSV4_OK || dsv4_backend_weight_load(c->be[1], &w, &a.w[1]) != DSV4_OK) {
        ok = failf(c, "weight_load: %s", dsv4_last_error());
        goto done;
    }
    if (act == ACT_BF16) {
        xb = as_bytes(x, nx, 1);
        ok = xb && (a.x = mput(c, xb, 2 * nx)) != NULL;
    } else {
        ok = (act == ACT_FP4_TENSOR ? dsv4_nvfp4_quantize_act(x, M, K, a.s, xq, xs, "x")
                                    : dsv4_nvfp4_quantize_act_dynamic(x, M, K, xq, xs, tok, "x")) == DSV4_OK;
        a.q = mput(c, xq, nx / 2), a.sf = mput(c, xs, nx / 16);
        a.sc = act == ACT_FP4_TOKEN ? mput(c, tok, 4 * (size_t)M) : mput(c, &a.s, 4);
        ok = ok && a.q && a.sf && a.sc;
    }
    a.y = mput(c, NULL, ny * (out_bf16 ? 2 : 4));
    mbuf *outs[1] = {a.y};
    ok = ok && a.y && run2(c, op_linear, &a, outs, 1);
    if (ok) {
        double err = 0, ref = 0;
        for (size_t i = 0; ok && i < ny; i++) {
            double t = val(a.y->host[1], i, out_bf16), r = val(a.y->host[0], i, out_bf16);
            if (!isfinite(t)) ok = failf(c, "y[%zu] not written (or not finite): %g", i, t);
            err += (t - r) * (t - r), ref += r * r;
        }
        /* AUTO: the MMA kernel for M > 64, and for NVFP4 with K % 32 != 0 (test_gpu_linear.c) */
        const int mma = M > 64 || (fmt == DSV4_WF_NVFP4 && K % 32);
        const double rel = sqrt(err / (ref > 0 ? ref : 1)), tol = out_bf16 ? 4e-3 : mma ? 3e-5 : 1e-5;
        if (ok && !(ref > 0 && rel <= tol)) ok = failf(c, "relative error %.3g > %.0e", rel, tol);
    }
done:
    dsv4_backend_weight_free(c->be[0], &a.w[0]), dsv4_backend_weight_free(c->be[1], &a.w[1]); /* unloaded: no-op */
    free(wf), free(x), free(tok), free(wq), free(ws), free(xq), free(xs), free(xb);
    return ok ? 1 : (c->msg[0] ? 0 : failf(c, "setup failed: %s", dsv4_last_error()));
}

/* ---------------------------------------------------------------- moe_router, moe_permute */

typedef struct moe_args {
    dsv4_cpu_router_cfg cfg;
    int T, k, E, tile, vocab, D, bf16_y, bf16_out;
    int64_t rows;
    mbuf *logits, *bias, *tab, *tok, *idx, *w, *L[5], *y, *inv, *shared, *out;
} moe_args;

static dsv4_status op_router(dsv4_backend *be, int s, void *p) {
    moe_args *a = p;
    dsv4_tensor l = dsv4_tensor_2d(a->logits->d[s], F32, a->T, a->E), b = dsv4_tensor_1d(a->bias ? a->bias->d[s] : NULL, F32, a->E);
    dsv4_tensor tab = dsv4_tensor_2d(a->tab ? a->tab->d[s] : NULL, I32, a->vocab, a->k);
    dsv4_tensor tok = dsv4_tensor_1d(a->tok ? a->tok->d[s] : NULL, I32, a->T);
    dsv4_tensor idx = dsv4_tensor_2d(a->idx->d[s], I32, a->T, a->k), w = dsv4_tensor_2d(a->w->d[s], F32, a->T, a->k);
    return dsv4_backend_moe_router(be, &a->cfg, &l, a->bias ? &b : NULL, a->tab ? &tab : NULL, a->tok ? &tok : NULL,
                                   &idx, &w);
}

/* Logits tie-free by construction: a shuffled ladder 0.15 apart plus 1e-3 noise; the bias
 * is 5e-5 at most (sigmoid neighbours near the top differ by ~1e-3), so neighbours differ by far
 * more than a libm ulp could move them. */
static int case_router(tctx *c, int E, int k, int T, int score, int with_bias, int hash, uint64_t *rng) {
    const int V = 50;
    float *l = malloc(sizeof(float) * (size_t)T * E), bias[512];
    int32_t *tab = malloc(sizeof(int32_t) * V * k), *tok = malloc(sizeof(int32_t) * (size_t)T), *perm = malloc(sizeof(int32_t) * E);
    moe_args a;
    memset(&a, 0, sizeof a);
    int ok = l && tab && tok && perm;
    if (ok) {
        for (int t = 0; t < T; t++) {
            for (int e = 0; e < E; e++) perm[e] = e;
            for (int e = E - 1; e > 0; e--) {
                int j = (int)(test_rand_u64(rng) % (uint64_t)(e + 1)), x = perm[e];
                perm[e] = perm[j], perm[j] = x;
            }
            for (int e = 0; e < E; e++) l[(size_t)t * E + e] = 0.15f * (float)(perm[e] - E / 2) + 1e-3f * test_rand_uniform(rng);
        }
        for (int e = 0; e < E; e++) bias[e] = 1e-4f * (test_rand_uniform(rng) - 0.5f);
        for (int i = 0; i < V * k; i++) tab[i] = (int32_t)(test_rand_u64(rng) % (uint64_t)E);
        for (int t = 0; t < T; t++) tok[t] = (int32_t)(test_rand_u64(rng) % V);
        a.cfg = (dsv4_cpu_router_cfg){E, k, (dsv4_cpu_score_func)score, score != DSV4_CPU_SCORE_SOFTMAX, 1.5f};
        a.T = T, a.k = k, a.E = E, a.vocab = V;
        a.logits = mput(c, l, sizeof(float) * (size_t)T * E);
        if (with_bias) a.bias = mput(c, bias, sizeof(float) * E);
        if (hash) a.tab = mput(c, tab, sizeof(int32_t) * V * k), a.tok = mput(c, tok, sizeof(int32_t) * T);
        a.idx = mput(c, NULL, sizeof(int32_t) * (size_t)T * k), a.w = mput(c, NULL, sizeof(float) * (size_t)T * k);
        ok = a.logits && (!with_bias || a.bias) && (!hash || (a.tab && a.tok)) && a.idx && a.w;
    }
    mbuf *outs[2] = {a.idx, a.w};
    ok = ok && run2(c, op_router, &a, outs, 2) && same(c, "idx", a.idx, a.idx->bytes);
    for (int i = 0; ok && i < T * k; i++) {
        float t = ((float *)a.w->host[1])[i], r = ((float *)a.w->host[0])[i];
        if (ulps(t, r) > 4) ok = failf(c, "weight %d: %a, cpu %a", i, (double)t, (double)r);
    }
    free(l), free(tab), free(tok), free(perm);
    return ok;
}

static dsv4_status op_permute(dsv4_backend *be, int s, void *p) {
    moe_args *a = p;
    dsv4_tensor idx = dsv4_tensor_2d(a->idx->d[s], I32, a->T, a->k);
    dsv4_moe_layout L = {a->L[0]->d[s], a->L[1]->d[s], a->L[2]->d[s], a->L[3]->d[s], a->L[4]->d[s]};
    return dsv4_backend_moe_permute(be, &idx, a->E, a->tile, &L);
}

static void random_idx(int32_t *idx, int T, int k, int E, uint64_t *rng) {
    for (int t = 0; t < T; t++)
        for (int j = 0; j < k; j++) {
            int e, dup;
            do { /* distinct within a token, like top-k */
                e = (int)(test_rand_u64(rng) % (uint64_t)E), dup = 0;
                for (int i = 0; i < j; i++) dup |= idx[t * k + i] == e;
            } while (dup);
            idx[t * k + j] = e;
        }
}

static int case_permute(tctx *c, int T, int k, int E, int tile, uint64_t *rng) {
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)(T * k + 1));
    moe_args a;
    memset(&a, 0, sizeof a);
    a.T = T, a.k = k, a.E = E, a.tile = tile;
    const int64_t rows = dsv4_moe_max_rows(T, k, E, tile);
    const size_t sizes[5] = {4 * (size_t)E, 4 * (size_t)(E + 1), 4 * (size_t)rows, 4 * (size_t)(rows / tile), 4 * (size_t)T * k};
    static const char *names[5] = {"counts", "offsets", "row_token", "tile_expert", "inv"};
    int ok = idx != NULL;
    if (ok) random_idx(idx, T, k, E, rng);
    if (ok) a.idx = mput(c, idx, sizeof(int32_t) * (size_t)T * k);
    for (int i = 0; ok && i < 5; i++) ok = (a.L[i] = mput(c, NULL, sizeof(int32_t) * sizes[i] / 4)) != NULL;
    ok = ok && a.idx && run2(c, op_permute, &a, a.L, 5);
    for (int i = 0; ok && i < 5; i++) ok = same(c, names[i], a.L[i], sizes[i]);
    free(idx);
    return ok;
}

/* ---------------------------------------------------------------- moe_swiglu */

typedef struct sw_args {
    int64_t rows, I;
    int h_bf16, out_bf16, kind, layout, tile;
    mbuf *h, *out, *q, *sf, *sc, *n_rows, *tiles;
} sw_args;

static dsv4_status op_swiglu(dsv4_backend *be, int s, void *p) {
    sw_args *a = p;
    dsv4_tensor h = dsv4_tensor_2d(a->h->d[s], a->h_bf16 ? BF16 : F32, a->rows, 2 * a->I);
    dsv4_tensor out = dsv4_tensor_2d(a->out->d[s], a->out_bf16 ? BF16 : F32, a->rows, a->I);
    dsv4_act_nvfp4 q;
    if (a->kind) q = act_on(s, a->q, a->sf, a->sc, 0.0f, a->rows, a->I, a->kind == 1 ? DSV4_ACT_SCALE_DYNAMIC_TOKEN : DSV4_ACT_SCALE_STATIC, a->layout);
    dsv4_swiglu_io io = {&h, 10.0f, a->n_rows ? a->n_rows->d[s] : NULL, &out, a->kind ? &q : NULL,
                         a->tiles ? a->tiles->d[s] : NULL, a->tile};
    return dsv4_backend_moe_swiglu(be, &io);
}

/* kind: 0 no NVFP4; 1 per-row dynamic; 2 static scalar; 3 static per expert through the tile
 * map, with n_rows < rows (rows past it and tiles of no expert stay unwritten). */
static int case_swiglu(tctx *c, int64_t rows, int64_t I, int h_bf16, int out_bf16, int kind, int layout, uint64_t *rng) {
    const size_t nh = (size_t)(rows * 2 * I), na = (size_t)(rows * I);
    const int tile = 4, n_tiles = (int)(rows / tile);
    const int32_t used = kind == 3 ? (int32_t)(rows * 3 / 4) : (int32_t)rows;
    float *h = malloc(4 * nh), *got = malloc(4 * na), scales[4] = {0.003f, 0.0007f, 0.01f, 0.002f};
    int32_t *tiles = malloc(sizeof(int32_t) * (size_t)(n_tiles + 1));
    void *hb = NULL;
    sw_args a;
    memset(&a, 0, sizeof a);
    a.rows = rows, a.I = I, a.h_bf16 = h_bf16, a.out_bf16 = out_bf16, a.kind = kind, a.layout = layout, a.tile = tile;
    int ok = h && got && tiles;
    if (ok) {
        fill(h, nh, 0.0f, 6.0f, rng); /* many values beyond the limit of 10 */
        h[0] = 40.0f, h[1] = -200.0f, h[I + 1] = -INFINITY;
        for (int i = 0; i < n_tiles; i++) tiles[i] = i % 3 == 2 ? -1 : (i * 3) % 4;
        hb = as_bytes(h, nh, h_bf16);
        a.h = mput(c, hb, nh * (h_bf16 ? 2 : 4)), a.out = mput(c, NULL, na * (out_bf16 ? 2 : 4));
        ok = hb && a.h && a.out;
        if (ok && kind) ok = act_bufs(c, rows, I, kind == 1 ? DSV4_ACT_SCALE_DYNAMIC_TOKEN : DSV4_ACT_SCALE_STATIC,
                                      (dsv4_sf_layout)layout, scales[0], &a.q, &a.sf, &a.sc);
        if (ok && kind == 3) {
            a.n_rows = mput(c, &used, 4), a.tiles = mput(c, tiles, sizeof(int32_t) * (size_t)(n_tiles + 1));
            ok = a.n_rows && a.tiles && dsv4_backend_upload(c->be[0], a.sc->d[0], scales, 16) == DSV4_OK &&
                 dsv4_backend_upload(c->be[1], a.sc->d[1], scales, 16) == DSV4_OK;
        }
    }
    mbuf *outs[4] = {a.out, a.q, a.sf, a.sc};
    /* the graph harness compares whole buffers: only kinds that write all of them go there */
    ok = ok && run2(c, op_swiglu, &a, outs, kind == 0 ? 1 : kind == 1 ? 4 : 3);
    for (int64_t r = 0; ok && r < used; r++) {
        if (kind == 3 && (r / tile >= n_tiles || tiles[r / tile] < 0)) continue; /* unwritten */
        for (int64_t i = 0; ok && i < I; i++) {
            const size_t o = (size_t)(r * I + i);
            float t = val(a.out->host[1], o, out_bf16), ref = val(a.out->host[0], o, out_bf16);
            int64_t d = out_bf16 ? llabs((long long)((uint16_t *)a.out->host[1])[o] - ((uint16_t *)a.out->host[0])[o]) : ulps(t, ref);
            if (d > (out_bf16 ? 1 : 4)) ok = failf(c, "out[%lld, %lld]: %a, cpu %a", (long long)r, (long long)i, (double)t, (double)ref);
            got[o] = t;
        }
        if (!ok || kind != 3) continue;
        /* per expert: row r quantized alone with its expert's scale */
        dsv4_act_nvfp4 shape = {0, 0, 0, 0, 1, I, DSV4_ACT_SCALE_STATIC, DSV4_SF_LINEAR};
        mbuf q1, s1;
        memset(&q1, 0, sizeof q1), memset(&s1, 0, sizeof s1);
        q1.host[1] = (uint8_t *)a.q->host[1] + r * I / 2, s1.host[1] = (uint8_t *)a.sf->host[1] + r * I / 16;
        ok = nvfp4_of(c, got + r * I, 1, I, 0, &shape, scales[tiles[r / tile]], &q1, &s1, NULL);
    }
    if (ok && (kind == 1 || kind == 2)) {
        dsv4_act_nvfp4 shape = {0, 0, 0, 0, rows, I, kind == 1 ? DSV4_ACT_SCALE_DYNAMIC_TOKEN : DSV4_ACT_SCALE_STATIC,
                                (dsv4_sf_layout)layout};
        ok = nvfp4_of(c, got, rows, I, 0, &shape, scales[0], a.q, a.sf, a.sc);
    }
    free(h), free(got), free(tiles), free(hb);
    return ok;
}

/* ---------------------------------------------------------------- moe_combine */

static dsv4_status op_combine(dsv4_backend *be, int s, void *p) {
    moe_args *a = p;
    dsv4_tensor y = dsv4_tensor_2d(a->y->d[s], a->bf16_y ? BF16 : F32, a->rows, a->D);
    dsv4_tensor idx = dsv4_tensor_2d(a->idx->d[s], I32, a->T, a->k), inv = dsv4_tensor_2d(a->inv->d[s], I32, a->T, a->k);
    dsv4_tensor w = dsv4_tensor_2d(a->w->d[s], F32, a->T, a->k);
    dsv4_tensor sh = dsv4_tensor_2d(a->shared ? a->shared->d[s] : NULL, a->bf16_y ? BF16 : F32, a->T, a->D);
    dsv4_tensor out = dsv4_tensor_2d(a->out->d[s], a->bf16_out ? BF16 : F32, a->T, a->D);
    return dsv4_backend_moe_combine(be, &y, &idx, &inv, &w, a->shared ? &sh : NULL, &out);
}

static int case_combine(tctx *c, int T, int k, int E, int D, int bf16_y, int with_shared, int bf16_out, uint64_t *rng) {
    const int tile = 16;
    const int64_t rows = dsv4_moe_max_rows(T, k, E, tile);
    const size_t nk = (size_t)T * k, ny = (size_t)rows * D, ns = (size_t)T * D;
    int32_t *idx = malloc(4 * nk), *counts = malloc(4 * (size_t)E), *offs = malloc(4 * (size_t)(E + 1));
    int32_t *rt = malloc(4 * (size_t)rows), *te = malloc(4 * (size_t)(rows / tile + 1)), *inv = malloc(4 * nk);
    float *w = malloc(4 * nk), *y = malloc(4 * ny), *sh = malloc(4 * ns);
    void *yb = NULL, *shb = NULL;
    moe_args a;
    memset(&a, 0, sizeof a);
    a.T = T, a.k = k, a.D = D, a.rows = rows, a.bf16_y = bf16_y, a.bf16_out = bf16_out;
    int ok = idx && counts && offs && rt && te && inv && w && y && sh;
    if (ok) {
        random_idx(idx, T, k, E, rng);
        if (k > 2) idx[1] = idx[k - 1] = idx[0] == 0 ? 1 : 0; /* an expert twice in one token */
        dsv4_moe_layout L = {counts, offs, rt, te, inv};
        ok = dsv4_cpu_moe_permute(idx, T, k, E, tile, &L) == DSV4_OK;
        if (T > 1) inv[k] = -1; /* a dropped slot */
        for (size_t i = 0; i < nk; i++) w[i] = test_rand_uniform(rng);
        fill(y, ny, 0.0f, 1.0f, rng), fill(sh, ns, 0.0f, 1.0f, rng);
        yb = as_bytes(y, ny, bf16_y), shb = as_bytes(sh, ns, bf16_y);
        a.y = mput(c, yb, ny * (bf16_y ? 2 : 4)), a.idx = mput(c, idx, 4 * nk), a.inv = mput(c, inv, 4 * nk);
        a.w = mput(c, w, 4 * nk), a.out = mput(c, NULL, ns * (bf16_out ? 2 : 4));
        if (with_shared) a.shared = mput(c, shb, ns * (bf16_y ? 2 : 4));
        ok = ok && yb && shb && a.y && a.idx && a.inv && a.w && a.out && (!with_shared || a.shared);
    }
    mbuf *outs[1] = {a.out};
    ok = ok && run2(c, op_combine, &a, outs, 1) && same(c, "out", a.out, a.out->bytes);
    free(idx), free(counts), free(offs), free(rt), free(te), free(inv), free(w), free(y), free(sh), free(yb), free(shb);
    return ok;
}

/* ---------------------------------------------------------------- driver */

/* Runs one case with fresh buffers; on failure prefixes the case's description. */
#define CASE(call, ...)                                                                              \
    do {                                                                                             \
        char what_[160], inner_[1024];                                                               \
        c->msg[0] = 0;                                                                               \
        int ok_ = (call);                                                                            \
        ctx_free(c);                                                                                 \
        if (!ok_) {                                                                                  \
            snprintf(what_, sizeof what_, __VA_ARGS__);                                              \
            snprintf(inner_, sizeof inner_, "%s", c->msg);                                           \
            snprintf(c->msg, c->len, "%s on %s: %s", what_, dsv4_backend_name(c->be[1]), inner_);    \
            return 0;                                                                                \
        }                                                                                            \
    } while (0)

/* Every op over its shapes; `graph`: one case per op, through the graph harness. */
static int all_ops(tctx *c, int graph) {
    uint64_t rng = 99;
    c->graph = graph;
    static const int64_t qshape[][2] = {{1, 16}, {3, 48}, {131, 4096}};
    for (int si = graph ? 2 : 0; si < 3; si++)
        for (int v = 0; v < (graph ? 1 : 12); v++) /* {F32, BF16} x 3 modes x 2 layouts */
            CASE(case_quantize(c, qshape[si][0], qshape[si][1], v & 1, graph ? 1 : (v >> 1) % 3, v / 6, &rng),
                 "quantize_nvfp4 M=%lld K=%lld variant %d", (long long)qshape[si][0], (long long)qshape[si][1], v);
    static const int64_t nshape[][2] = {{1, 4096}, {3, 48}, {131, 16}, {5, 200}};
    static const int nvar[4][5] = {{0, 1, 0, -1, 0}, {1, 1, 1, DSV4_ACT_SCALE_STATIC, 1}, {0, 0, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 0},
                                   {1, 0, 0, DSV4_ACT_SCALE_STATIC, 0}}; /* in_bf16, weighted, out_bf16, qmode, swizzled */
    for (int si = 0; si < (graph ? 1 : 4); si++)
        for (int v = 0; v < (graph ? 1 : 4); v++) {
            const int vv = graph ? 1 : v, q = nshape[si][1] % 16 ? -1 : nvar[vv][3];
            CASE(case_rmsnorm(c, nshape[si][0], nshape[si][1], nvar[vv][0], nvar[vv][1], nvar[vv][2], q, nvar[vv][4], &rng),
                 "rmsnorm rows=%lld dim=%lld variant %d", (long long)nshape[si][0], (long long)nshape[si][1], vv);
        }
    static const int hshape[][3] = {{1, 4, 4096}, {3, 4, 48}, {5, 2, 64}, {2, 1, 32}, {4, 3, 160}};
    for (int si = 0; si < (graph ? 1 : 5); si++)
        for (int v = 0; v < (graph ? 1 : 3); v++) { /* {X f32, y f32, x}, {X bf16, y bf16 + static swizzled}, {y f32 + per token} */
            static const int hv[3][4] = {{0, 0, -1, 0}, {1, 1, DSV4_ACT_SCALE_STATIC, 1}, {0, 0, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 0}};
            const int vv = graph ? 1 : v;
            CASE(case_hc_pre(c, hshape[si][0], hshape[si][1], hshape[si][2], hv[vv][0], hv[vv][1], hv[vv][2], hv[vv][3], &rng),
                 "hc_pre T=%d hc=%d D=%d variant %d", hshape[si][0], hshape[si][1], hshape[si][2], vv);
            CASE(case_hc_post(c, hshape[si][0], hshape[si][1], hshape[si][2], vv & 1, (v >> 1) & 1, v == 2, &rng),
                 "hc_post T=%d hc=%d D=%d variant %d", hshape[si][0], hshape[si][1], hshape[si][2], v);
        }
    static const int64_t lshape[][3] = {{1, 64, 128}, {3, 129, 96}, {1, 96, 80}, {33, 77, 512}, {130, 200, 272}};
    for (int si = 0; si < (graph ? 1 : 5); si++)
        for (int act = 0; act < (graph ? 1 : 3); act++) {
            const int ob = si == 3 && act == 0;
            CASE(case_linear(c, DSV4_WF_NVFP4, act, lshape[si][0], lshape[si][1], lshape[si][2], ob, &rng),
                 "linear NVFP4 act %d M=%lld N=%lld K=%lld", act, (long long)lshape[si][0], (long long)lshape[si][1],
                 (long long)lshape[si][2]);
        }
    if (!graph) CASE(case_linear(c, DSV4_WF_FP8_B128, ACT_BF16, 5, 130, 384, 0, &rng), "linear FP8 M=5 N=130 K=384");
    static const int rcase[][6] = {{256, 6, 1, 0, 1, 0}, {16, 4, 7, 0, 0, 0}, {256, 6, 130, 0, 1, 0},
                                   {64, 6, 9, 1, 1, 0},  {16, 4, 5, 2, 0, 0}, {256, 6, 7, 0, 0, 1}}; /* E k T score bias hash */
    for (int i = 0; i < (graph ? 1 : 6); i++)
        CASE(case_router(c, rcase[i][0], rcase[i][1], rcase[i][2], rcase[i][3], rcase[i][4], rcase[i][5], &rng),
             "moe_router E=%d k=%d T=%d score %d bias %d hash %d", rcase[i][0], rcase[i][1], rcase[i][2], rcase[i][3],
             rcase[i][4], rcase[i][5]);
    static const int pcase[][4] = {{1, 6, 256, 128}, {7, 4, 16, 4}, {130, 6, 64, 16}, {3, 2, 5, 1}};
    for (int i = 0; i < (graph ? 1 : 4); i++)
        CASE(case_permute(c, pcase[i][0], pcase[i][1], pcase[i][2], pcase[i][3], &rng), "moe_permute T=%d k=%d E=%d tile=%d",
             pcase[i][0], pcase[i][1], pcase[i][2], pcase[i][3]);
    static const int scase[][6] = {{8, 64, 0, 0, 1, 0}, {37, 512, 1, 1, 0, 0}, {1, 2048, 0, 0, 1, 0},
                                   {131, 64, 0, 0, 2, 1}, {64, 256, 1, 0, 3, 0}}; /* rows I h_bf16 out_bf16 kind swizzled */
    for (int i = 0; i < (graph ? 1 : 5); i++)
        CASE(case_swiglu(c, scase[i][0], scase[i][1], scase[i][2], scase[i][3], scase[i][4], scase[i][5], &rng),
             "moe_swiglu rows=%d I=%d kind %d", scase[i][0], scase[i][1], scase[i][4]);
    static const int ccase[][7] = {{1, 6, 256, 4096, 0, 1, 0}, {7, 6, 256, 200, 1, 1, 1}, {130, 6, 64, 48, 0, 0, 0},
                                   {5, 4, 16, 33, 0, 1, 1}}; /* T k E D bf16_y shared bf16_out */
    for (int i = 0; i < (graph ? 1 : 4); i++)
        CASE(case_combine(c, ccase[i][0], ccase[i][1], ccase[i][2], ccase[i][3], ccase[i][4], ccase[i][5], ccase[i][6], &rng),
             "moe_combine T=%d k=%d E=%d D=%d", ccase[i][0], ccase[i][1], ccase[i][2], ccase[i][3]);
    return 1;
}

TEST(backend_ops_cpu_against_itself) {
    /* the plumbing of this file (descriptors, poisoning, comparisons) on every machine */
    char msg[1024];
    static tctx c;
    c.be[0] = c.be[1] = dsv4_backend_cpu(), c.msg = msg, c.len = sizeof msg;
    CHECK_MSG(all_ops(&c, 0), "%s", msg);
}

#if DSV4_HAVE_CUDA
static dsv4_backend *cuda_or_skip(void) {
    if (!gpu_available()) return NULL;
    dsv4_backend *be = NULL;
    dsv4_backend_cuda_options o = {256u << 20, 32u << 20};
    return dsv4_backend_cuda(0, &o, &be) == DSV4_OK ? be : NULL;
}

/* Every op on the CUDA backend against the CPU one, directly or (graph) through the graph
 * harness: the test body of the two tests below. */
static void cuda_against_cpu(int graph) {
    if (!gpu_available()) SKIP("no GPU");
    dsv4_backend *be = cuda_or_skip();
    CHECK_MSG(be, "dsv4_backend_cuda: %s", dsv4_last_error());
    char msg[1024];
    static tctx c; /* large: not on the stack; both tests start it from zero */
    memset(&c, 0, sizeof c);
    c.be[0] = dsv4_backend_cpu(), c.be[1] = be, c.msg = msg, c.len = sizeof msg;
    int ok = all_ops(&c, graph);
    dsv4_backend_destroy(be);
    CHECK_MSG(ok, "%s", msg);
}

TEST(backend_ops_cuda_matches_cpu) { cuda_against_cpu(0); }
TEST(backend_ops_cuda_graph_safe) { cuda_against_cpu(1); }
#else
TEST(backend_ops_cuda_matches_cpu) { SKIP("built without CUDA"); }
TEST(backend_ops_cuda_graph_safe) { SKIP("built without CUDA"); }
#endif
