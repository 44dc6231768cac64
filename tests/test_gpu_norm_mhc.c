/* Fused RMSNorm (+NVFP4) and mHC kernels against the CPU references, each through the
 * graph-safety harness.
 * Tolerances (stated in src/cuda/rmsnorm.h and mhc.h):
 *   rmsnorm fp32 out        |gpu - cpu| <= 1e-5 (1 + |cpu|)        (block-reduced sum of squares)
 *   BF16 outputs            add one half BF16 ulp: 2^-8 |cpu|
 *   hc_pre post/comb/x/y    |gpu - cpu| <= 3e-5 (1 + |cpu|): the CPU's own sequential fp32
 *                           error against a double reference is ~5e-6 at hc=4, D=7168, and the
 *                           device expf differs from glibc's by an ulp or two
 *   hc_post                 bit-identical (same operations in the same order)
 *   NVFP4 outputs           bit-identical to dsv4_cpu_quantize_nvfp4_act on the kernel's own
 *                           BF16 output (the values it quantizes). */
#include <math.h>

#include "cpu/ops.h"
#include "cpu/quantize.h"
#include "format/fp.h"
#include "format/quant.h"
#include "test.h"

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "cuda/mhc.h"
#include "cuda/rmsnorm.h"
#include "gpu_harness.h"

static void fill_normal(float *a, size_t n, float mean, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) a[i] = mean + scale * test_rand_normal(rng);
}

static void round_bf16(float *a, size_t n) {
    for (size_t i = 0; i < n; i++) a[i] = dsv4_bf16_round(a[i]);
}

/* Device copy of n floats as F32 or BF16. */
static void *upload_as(const float *x, size_t n, int bf16) {
    if (!bf16) return gpu_upload(x, n * sizeof(float));
    uint16_t *b = malloc(n * sizeof *b);
    if (!b) return NULL;
    for (size_t i = 0; i < n; i++) b[i] = dsv4_bf16_encode(x[i]);
    void *d = gpu_upload(b, n * sizeof *b);
    free(b);
    return d;
}

/* Host bytes of an F32/BF16 output -> floats. */
static void decode_out(const void *host, size_t n, int bf16, float *out) {
    for (size_t i = 0; i < n; i++)
        out[i] = bf16 ? dsv4_bf16_decode(((const uint16_t *)host)[i]) : ((const float *)host)[i];
}

/* First index where |got - want| > rel * (1 + |want|) + half_ulp_bf16 * 2^-8 |want|; -1 if none. */
static long first_bad(const float *got, const float *want, size_t n, double rel, int bf16) {
    for (size_t i = 0; i < n; i++) {
        double tol = rel * (1.0 + fabs(want[i])) + (bf16 ? ldexp(fabs(want[i]), -8) : 0.0);
        if (!(fabs((double)got[i] - want[i]) <= tol)) return (long)i;
    }
    return -1;
}

/* NVFP4 output buffers on the device for [M, K]. */
typedef struct qbufs {
    dsv4_cuda_nvfp4_out out;
    size_t nq, nsf, nscale;
} qbufs;

static int qbufs_make(qbufs *b, int64_t M, int64_t K, dsv4_act_scale_mode mode, dsv4_sf_layout layout, float static_scale) {
    b->nq = (size_t)(M * K / 2);
    b->nsf = layout == DSV4_SF_SWIZZLED ? dsv4_swizzled_scale_bytes(M, K / 16) : (size_t)(M * K / 16);
    b->nscale = mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN ? (size_t)M : 1;
    b->out.q = gpu_upload(NULL, b->nq);
    b->out.sf = gpu_upload(NULL, b->nsf);
    b->out.scale = gpu_upload(mode == DSV4_ACT_SCALE_STATIC ? &static_scale : NULL, b->nscale * sizeof(float));
    b->out.mode = mode;
    b->out.layout = layout;
    return b->out.q && b->out.sf && b->out.scale;
}

static void qbufs_free(qbufs *b) {
    cudaFree(b->out.q), cudaFree(b->out.sf), cudaFree(b->out.scale);
}

/* Adds q/sf (and dynamic scales) to a harness output list. */
static int qbufs_outs(const qbufs *b, gpu_buf *outs, int n) {
    outs[n++] = (gpu_buf){"nvfp4 q", b->out.q, b->nq, NULL};
    outs[n++] = (gpu_buf){"nvfp4 sf", b->out.sf, b->nsf, NULL};
    if (b->out.mode != DSV4_ACT_SCALE_STATIC) outs[n++] = (gpu_buf){"nvfp4 scale", b->out.scale, b->nscale * 4, NULL};
    return n;
}

/* The kernel's NVFP4 (outs[first..]) equals the CPU reference on the BF16 values y. */
static int check_nvfp4(const gpu_buf *outs, int first, const float *y, int64_t M, int64_t K, const qbufs *b,
                       float static_scale, char *msg, size_t len) {
    uint8_t *q = malloc(b->nq), *sf = malloc(b->nsf);
    float *sc = malloc(b->nscale * sizeof(float));
    int ok = 0;
    if (!q || !sf || !sc) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    sc[0] = static_scale;
    if (dsv4_cpu_quantize_nvfp4_act(y, M, K, b->out.mode, b->out.layout, sc, q, sf) != DSV4_OK) {
        snprintf(msg, len, "CPU quantize: %s", dsv4_last_error());
        goto done;
    }
    if (memcmp(outs[first].host, q, b->nq)) {
        size_t i = 0;
        while (((uint8_t *)outs[first].host)[i] == q[i]) i++;
        snprintf(msg, len, "NVFP4 payload byte %zu: gpu 0x%02x cpu 0x%02x", i, ((uint8_t *)outs[first].host)[i], q[i]);
        goto done;
    }
    if (memcmp(outs[first + 1].host, sf, b->nsf)) {
        size_t i = 0;
        while (((uint8_t *)outs[first + 1].host)[i] == sf[i]) i++;
        snprintf(msg, len, "NVFP4 scale byte %zu: gpu 0x%02x cpu 0x%02x", i, ((uint8_t *)outs[first + 1].host)[i], sf[i]);
        goto done;
    }
    if (b->out.mode != DSV4_ACT_SCALE_STATIC && memcmp(outs[first + 2].host, sc, b->nscale * 4)) {
        snprintf(msg, len, "NVFP4 per-token scale differs (row 0: gpu %a cpu %a)", (double)((float *)outs[first + 2].host)[0],
                 (double)sc[0]);
        goto done;
    }
    ok = 1;
done:
    free(q), free(sf), free(sc);
    return ok;
}

/* ---------------------------------------------------------------- RMSNorm */

typedef struct norm_job {
    const void *x;
    dsv4_cuda_dtype in;
    const float *w;
    int64_t rows;
    int dim;
    void *out;
    dsv4_cuda_dtype out_dtype;
    const dsv4_cuda_nvfp4_out *q;
} norm_job;

static dsv4_status enqueue_norm(cudaStream_t s, void *arg) {
    norm_job *j = arg;
    return dsv4_cuda_rmsnorm(s, j->x, j->in, j->w, j->rows, j->dim, 1e-6f, j->out, j->out_dtype, j->q);
}

/* qmode < 0: no NVFP4 output. */
static int norm_case(int64_t rows, int dim, int in_bf16, int weighted, int out_bf16, int qmode, int swizzled,
                     uint64_t *rng, char *msg, size_t len) {
    const size_t n = (size_t)rows * dim;
    float *x = malloc(n * 4), *w = malloc((size_t)dim * 4), *ref = malloc(n * 4), *got = malloc(n * 4);
    void *dx = NULL, *dw = NULL, *dout = NULL;
    qbufs qb = {0};
    gpu_buf outs[4] = {{0}};
    int n_outs = 0, ok = 0;
    if (!x || !w || !ref || !got) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    for (int64_t r = 0; r < rows; r++) fill_normal(x + r * dim, (size_t)dim, 0.0f, (float)exp(test_rand_normal(rng) * 2), rng);
    if (rows > 2) memset(x + 2 * dim, 0, (size_t)dim * 4); /* an all-zero row: output zeros */
    fill_normal(w, (size_t)dim, 1.0f, 0.3f, rng);
    if (in_bf16) round_bf16(x, n);
    if (dsv4_cpu_rmsnorm(ref, x, weighted ? w : NULL, (int)rows, dim, 1e-6f) != DSV4_OK) {
        snprintf(msg, len, "CPU rmsnorm: %s", dsv4_last_error());
        goto done;
    }
    float amax = 0;
    for (size_t i = 0; i < n; i++) amax = fmaxf(amax, fabsf(ref[i]));
    const float static_scale = amax / 2688.0f * 0.8f;
    dx = upload_as(x, n, in_bf16);
    dw = gpu_upload(w, (size_t)dim * 4);
    dout = gpu_upload(NULL, n * (out_bf16 ? 2 : 4));
    if (!dx || !dw || !dout || (qmode >= 0 && !qbufs_make(&qb, rows, dim, (dsv4_act_scale_mode)qmode,
                                                            swizzled ? DSV4_SF_SWIZZLED : DSV4_SF_LINEAR, static_scale))) {
        snprintf(msg, len, "cudaMalloc failed");
        goto done;
    }
    norm_job job = {dx, in_bf16 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32, weighted ? (const float *)dw : NULL, rows, dim,
                    dout, out_bf16 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32, qmode >= 0 ? &qb.out : NULL};
    outs[n_outs++] = (gpu_buf){"out", dout, n * (out_bf16 ? 2 : 4), NULL};
    if (qmode >= 0) n_outs = qbufs_outs(&qb, outs, n_outs);
    if (!gpu_graph_check(gpu_test_stream(), enqueue_norm, &job, outs, n_outs, msg, len)) goto done;
    decode_out(outs[0].host, n, out_bf16, got);
    long bad = first_bad(got, ref, n, 1e-5, out_bf16);
    if (bad >= 0) {
        snprintf(msg, len, "output [%ld, %ld]: gpu %.9g cpu %.9g", bad / dim, bad % dim, (double)got[bad], (double)ref[bad]);
        goto done;
    }
    if (qmode >= 0) {
        /* the NVFP4 output quantizes the BF16-rounded y (rmsnorm.h), also beside an fp32 output */
        if (!out_bf16) round_bf16(got, n);
        if (!check_nvfp4(outs, 1, got, rows, dim, &qb, static_scale, msg, len)) goto done;
        /* NVFP4 only (no BF16 output): the same bytes */
        gpu_buf outs2[3] = {{0}};
        int n2 = qbufs_outs(&qb, outs2, 0), same;
        job.out = NULL;
        same = gpu_graph_check(gpu_test_stream(), enqueue_norm, &job, outs2, n2, msg, len);
        for (int i = 0; same && i < n2; i++) same = memcmp(outs2[i].host, outs[1 + i].host, outs2[i].bytes) == 0;
        gpu_bufs_free(outs2, n2);
        if (!same) {
            if (!msg[0]) snprintf(msg, len, "NVFP4-only output differs from NVFP4 + BF16 output");
            goto done;
        }
    }
    ok = 1;
done:
    gpu_bufs_free(outs, n_outs);
    cudaFree(dx), cudaFree(dw), cudaFree(dout);
    if (qmode >= 0) qbufs_free(&qb);
    free(x), free(w), free(ref), free(got);
    return ok;
}

TEST(gpu_rmsnorm_matches_cpu) {
    if (!gpu_available()) SKIP("no GPU");
    static const int64_t rows[] = {1, 3, 131};
    static const int dims[] = {16, 48, 4096, 7168};
    uint64_t rng = 5;
    char msg[1024];
    for (int ri = 0; ri < 3; ri++)
        for (int di = 0; di < 4; di++)
            for (int in_bf16 = 0; in_bf16 < 2; in_bf16++)
                for (int weighted = 0; weighted < 2; weighted++) {
                    /* fp32 out; BF16 out + static NVFP4 swizzled; BF16 out + per-token NVFP4 linear */
                    static const int variants[3][3] = {{0, -1, 0}, {1, DSV4_ACT_SCALE_STATIC, 1}, {1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 0}};
                    for (int v = 0; v < 3; v++)
                        CHECK_MSG(norm_case(rows[ri], dims[di], in_bf16, weighted, variants[v][0], variants[v][1],
                                            variants[v][2], &rng, msg, sizeof msg),
                                  "rmsnorm rows=%lld dim=%d in=%s %s out=%s nvfp4=%d%s: %s", (long long)rows[ri], dims[di],
                                  in_bf16 ? "bf16" : "f32", weighted ? "weighted" : "unweighted",
                                  variants[v][0] ? "bf16" : "f32", variants[v][1], variants[v][2] ? " swizzled" : "", msg);
                }
}

/* Prefill-sized batches: the row kernel's many-row layouts (64 to 256 threads per row), with
 * partial last row blocks and swizzled padding past them. */
TEST(gpu_rmsnorm_many_rows) {
    if (!gpu_available()) SKIP("no GPU");
    static const struct { int64_t rows; int dim; int weighted, out_bf16, qmode, swizzled; } cases[] = {
        {4096, 4096, 1, 1, DSV4_ACT_SCALE_STATIC, 1},       {4097, 4096, 1, 0, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 0},
        {2001, 7168, 1, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 1}, {5001, 1024, 0, 1, DSV4_ACT_SCALE_STATIC, 1},
        {5001, 48, 1, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 1},   {3001, 2048, 1, 1, -1, 0},
    };
    uint64_t rng = 17;
    char msg[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK_MSG(norm_case(cases[i].rows, cases[i].dim, 1, cases[i].weighted, cases[i].out_bf16, cases[i].qmode,
                            cases[i].swizzled, &rng, msg, sizeof msg),
                  "rmsnorm rows=%lld dim=%d bf16 in, out=%s nvfp4=%d%s: %s", (long long)cases[i].rows, cases[i].dim,
                  cases[i].out_bf16 ? "bf16" : "f32", cases[i].qmode, cases[i].swizzled ? " swizzled" : "", msg);
}

TEST(gpu_rmsnorm_rejects_bad_arguments) {
    float dummy[16] = {0};
    CHECK_STATUS(dsv4_cuda_rmsnorm(NULL, dummy, DSV4_CUDA_F32, NULL, 1, DSV4_CUDA_NORM_MAX_DIM + 1, 1e-6f, dummy,
                                   DSV4_CUDA_F32, NULL),
                 DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "rmsnorm") != NULL);
    dsv4_cuda_nvfp4_out q = {(uint8_t *)dummy, (uint8_t *)dummy, dummy, DSV4_ACT_SCALE_DYNAMIC_TENSOR, DSV4_SF_LINEAR};
    CHECK_STATUS(dsv4_cuda_rmsnorm(NULL, dummy, DSV4_CUDA_F32, NULL, 1, 16, 1e-6f, NULL, DSV4_CUDA_F32, &q),
                 DSV4_ERR_UNSUPPORTED);
    q.mode = DSV4_ACT_SCALE_STATIC;
    CHECK_STATUS(dsv4_cuda_rmsnorm(NULL, dummy, DSV4_CUDA_F32, NULL, 1, 24, 1e-6f, NULL, DSV4_CUDA_F32, &q), DSV4_ERR_SHAPE);
    CHECK_STATUS(dsv4_cuda_rmsnorm(NULL, dummy, DSV4_CUDA_F32, NULL, 1, 16, 1e-6f, NULL, DSV4_CUDA_F32, NULL),
                 DSV4_ERR_INVALID_ARGUMENT);
}

/* ---------------------------------------------------------------- mHC */

typedef struct pre_job {
    dsv4_cuda_hc_dims d;
    int T;
    dsv4_cuda_hc_pre_args a;
} pre_job;

static dsv4_status enqueue_pre(cudaStream_t s, void *arg) {
    pre_job *j = arg;
    return dsv4_cuda_hc_pre(s, &j->d, j->T, &j->a);
}

/* y_kind: -1 no normed output (collapse only), 0 fp32, 1 bf16. qmode < 0: no NVFP4. */
static int pre_case(int T, int hc, int D, int x_bf16, int y_kind, int qmode, int swizzled, uint64_t *rng, char *msg,
                    size_t len) {
    const int nmix = (2 + hc) * hc;
    const size_t nX = (size_t)T * hc * D, nfn = (size_t)nmix * hc * D, nx = (size_t)T * D;
    float *X = malloc(nX * 4), *fn = malloc(nfn * 4), *base = malloc((size_t)nmix * 4), *w = malloc((size_t)D * 4);
    float *x_ref = malloc(nx * 4), *y_ref = malloc(nx * 4), *post_ref = malloc((size_t)T * hc * 4);
    float *comb_ref = malloc((size_t)T * hc * hc * 4), *got = malloc(nx * 4), *got2 = malloc(nx * 4);
    float scale[3] = {0.7f, 1.3f, 0.9f};
    void *dX = NULL, *dfn = NULL, *dbase = NULL, *dscale = NULL, *dw = NULL, *dpost = NULL, *dcomb = NULL, *dx = NULL;
    void *dy = NULL, *dws = NULL;
    qbufs qb = {0};
    gpu_buf outs[7] = {{0}};
    int n_outs = 0, ok = 0;
    if (!X || !fn || !base || !w || !x_ref || !y_ref || !post_ref || !comb_ref || !got || !got2) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    fill_normal(X, nX, 0.0f, 1.0f, rng);
    fill_normal(fn, nfn, 0.0f, 2.0f / sqrtf((float)(hc * D)), rng); /* mix values of order 1 */
    fill_normal(base, (size_t)nmix, 0.0f, 0.5f, rng);
    fill_normal(w, (size_t)D, 1.0f, 0.3f, rng);
    if (x_bf16) round_bf16(X, nX);
    dsv4_cpu_hc_dims cd = {hc, D, 20, 1e-6f, 1e-6f};
    if (dsv4_cpu_hc_pre(&cd, T, X, fn, base, scale, x_ref, post_ref, comb_ref) != DSV4_OK ||
        dsv4_cpu_rmsnorm(y_ref, x_ref, w, T, D, 1e-6f) != DSV4_OK) {
        snprintf(msg, len, "CPU reference: %s", dsv4_last_error());
        goto done;
    }
    float amax = 0;
    for (size_t i = 0; i < nx; i++) amax = fmaxf(amax, fabsf(y_ref[i]));
    const float static_scale = amax / 2688.0f * 0.8f;
    dsv4_cuda_hc_dims d = {hc, D, 20, 1e-6f, 1e-6f};
    size_t ws = dsv4_cuda_hc_pre_workspace_bytes(&d, T);
    dX = upload_as(X, nX, x_bf16);
    dfn = gpu_upload(fn, nfn * 4), dbase = gpu_upload(base, (size_t)nmix * 4), dscale = gpu_upload(scale, 12);
    dw = gpu_upload(w, (size_t)D * 4), dpost = gpu_upload(NULL, (size_t)T * hc * 4);
    dcomb = gpu_upload(NULL, (size_t)T * hc * hc * 4), dx = gpu_upload(NULL, nx * 4), dws = gpu_upload(NULL, ws);
    if (y_kind >= 0) dy = gpu_upload(NULL, nx * (y_kind ? 2 : 4));
    if (!dX || !dfn || !dbase || !dscale || !dw || !dpost || !dcomb || !dx || !dws || (y_kind >= 0 && !dy) ||
        (qmode >= 0 && !qbufs_make(&qb, T, D, (dsv4_act_scale_mode)qmode, swizzled ? DSV4_SF_SWIZZLED : DSV4_SF_LINEAR,
                                   static_scale))) {
        snprintf(msg, len, "cudaMalloc failed");
        goto done;
    }
    pre_job job = {d, T, {0}};
    job.a.X = dX, job.a.x_dtype = x_bf16 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32;
    job.a.fn = dfn, job.a.base = dbase, job.a.scale = dscale, job.a.post = dpost, job.a.comb = dcomb, job.a.x = dx;
    job.a.norm_w = dw, job.a.norm_eps = 1e-6f, job.a.y = dy, job.a.y_dtype = y_kind == 1 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32;
    job.a.q = qmode >= 0 ? &qb.out : NULL, job.a.workspace = dws, job.a.workspace_bytes = ws;
    outs[n_outs++] = (gpu_buf){"post", dpost, (size_t)T * hc * 4, NULL};
    outs[n_outs++] = (gpu_buf){"comb", dcomb, (size_t)T * hc * hc * 4, NULL};
    outs[n_outs++] = (gpu_buf){"x", dx, nx * 4, NULL};
    if (y_kind >= 0) outs[n_outs++] = (gpu_buf){"y", dy, nx * (y_kind ? 2 : 4), NULL};
    int qfirst = n_outs;
    if (qmode >= 0) n_outs = qbufs_outs(&qb, outs, n_outs);
    if (!gpu_graph_check(gpu_test_stream(), enqueue_pre, &job, outs, n_outs, msg, len)) goto done;
    long bad;
    if ((bad = first_bad(outs[0].host, post_ref, (size_t)T * hc, 3e-5, 0)) >= 0) {
        snprintf(msg, len, "post[%ld]: gpu %.9g cpu %.9g", bad, (double)((float *)outs[0].host)[bad], (double)post_ref[bad]);
        goto done;
    }
    if ((bad = first_bad(outs[1].host, comb_ref, (size_t)T * hc * hc, 3e-5, 0)) >= 0) {
        snprintf(msg, len, "comb[%ld]: gpu %.9g cpu %.9g", bad, (double)((float *)outs[1].host)[bad], (double)comb_ref[bad]);
        goto done;
    }
    if ((bad = first_bad(outs[2].host, x_ref, nx, 3e-5, 0)) >= 0) {
        snprintf(msg, len, "x[%ld]: gpu %.9g cpu %.9g", bad, (double)((float *)outs[2].host)[bad], (double)x_ref[bad]);
        goto done;
    }
    if (y_kind >= 0) {
        decode_out(outs[3].host, nx, y_kind, got);
        if ((bad = first_bad(got, y_ref, nx, 3e-5, y_kind)) >= 0) {
            snprintf(msg, len, "y[%ld]: gpu %.9g cpu %.9g", bad, (double)got[bad], (double)y_ref[bad]);
            goto done;
        }
        /* the kernel quantizes exactly the BF16 rounding of the y it writes */
        for (size_t i = 0; i < nx; i++) got2[i] = dsv4_bf16_round(got[i]);
        if (qmode >= 0 && !check_nvfp4(outs, qfirst, got2, T, D, &qb, static_scale, msg, len)) goto done;
    }
    ok = 1;
done:
    gpu_bufs_free(outs, n_outs);
    cudaFree(dX), cudaFree(dfn), cudaFree(dbase), cudaFree(dscale), cudaFree(dw), cudaFree(dpost);
    cudaFree(dcomb), cudaFree(dx), cudaFree(dy), cudaFree(dws);
    if (qmode >= 0) qbufs_free(&qb);
    free(X), free(fn), free(base), free(w), free(x_ref), free(y_ref), free(post_ref), free(comb_ref), free(got), free(got2);
    return ok;
}

TEST(gpu_hc_pre_matches_cpu) {
    if (!gpu_available()) SKIP("no GPU");
    /* {T, hc, D}: decode (T=1), odd T, a prefill chunk; V4-Flash D=4096 and Pro D=7168 */
    static const int shapes[][3] = {{1, 4, 4096}, {1, 4, 7168}, {3, 4, 48}, {5, 4, 4096}, {37, 4, 1024},
                                    {129, 4, 256}, {2, 2, 64}, {3, 1, 32}, {4, 3, 160}};
    uint64_t rng = 17;
    char msg[1024];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int v = 0; v < 5; v++) {
            /* variants: {x bf16, y kind, nvfp4 mode, swizzled} */
            static const int var[5][4] = {{0, 0, -1, 0}, {1, 1, DSV4_ACT_SCALE_STATIC, 1}, {0, 1, DSV4_ACT_SCALE_DYNAMIC_TOKEN, 0},
                                          {1, -1, -1, 0}, {0, 0, DSV4_ACT_SCALE_STATIC, 0}};
            const int T = shapes[s][0], hc = shapes[s][1], D = shapes[s][2];
            CHECK_MSG(pre_case(T, hc, D, var[v][0], var[v][1], var[v][2], var[v][3], &rng, msg, sizeof msg),
                      "hc_pre T=%d hc=%d D=%d X=%s y=%d nvfp4=%d%s: %s", T, hc, D, var[v][0] ? "bf16" : "f32", var[v][1],
                      var[v][2], var[v][3] ? " swizzled" : "", msg);
        }
}

typedef struct post_job {
    dsv4_cuda_hc_dims d;
    int T;
    const void *X, *y;
    dsv4_cuda_dtype xd, yd;
    const float *post, *comb;
    dsv4_cuda_hc_merge merge;
    void *out;
} post_job;

static dsv4_status enqueue_post(cudaStream_t s, void *arg) {
    post_job *j = arg;
    return dsv4_cuda_hc_post(s, &j->d, j->T, j->X, j->xd, j->y, j->yd, j->post, j->comb, j->merge, j->out);
}

static int post_case(int T, int hc, int D, int x_bf16, int y_bf16, int merge, uint64_t *rng, char *msg, size_t len) {
    const size_t nX = (size_t)T * hc * D, ny = (size_t)T * D;
    float *X = malloc(nX * 4), *y = malloc(ny * 4), *post = malloc((size_t)T * hc * 4), *comb = malloc((size_t)T * hc * hc * 4);
    float *ref = malloc(nX * 4);
    void *dX = NULL, *dy = NULL, *dpost = NULL, *dcomb = NULL, *dout = NULL;
    gpu_buf outs[1] = {{0}};
    int ok = 0;
    if (!X || !y || !post || !comb || !ref) {
        snprintf(msg, len, "out of memory");
        goto done;
    }
    fill_normal(X, nX, 0.0f, 1.0f, rng);
    fill_normal(y, ny, 0.0f, 2.0f, rng);
    for (int i = 0; i < T * hc; i++) post[i] = 2.0f * test_rand_uniform(rng);
    for (int i = 0; i < T * hc * hc; i++) comb[i] = test_rand_uniform(rng) / (float)hc;
    if (x_bf16) round_bf16(X, nX);
    if (y_bf16) round_bf16(y, ny);
    dsv4_cpu_hc_dims cd = {hc, D, 20, 1e-6f, 1e-6f};
    if (dsv4_cpu_hc_post(&cd, T, X, y, post, comb, (dsv4_cpu_hc_merge)merge, ref) != DSV4_OK) {
        snprintf(msg, len, "CPU hc_post: %s", dsv4_last_error());
        goto done;
    }
    dX = upload_as(X, nX, x_bf16), dy = upload_as(y, ny, y_bf16);
    dpost = gpu_upload(post, (size_t)T * hc * 4), dcomb = gpu_upload(comb, (size_t)T * hc * hc * 4);
    dout = gpu_upload(NULL, nX * (x_bf16 ? 2 : 4));
    if (!dX || !dy || !dpost || !dcomb || !dout) {
        snprintf(msg, len, "cudaMalloc failed");
        goto done;
    }
    post_job job = {{hc, D, 20, 1e-6f, 1e-6f}, T, dX, dy, x_bf16 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32,
                    y_bf16 ? DSV4_CUDA_BF16 : DSV4_CUDA_F32, dpost, dcomb, (dsv4_cuda_hc_merge)merge, dout};
    outs[0] = (gpu_buf){"X_out", dout, nX * (x_bf16 ? 2 : 4), NULL};
    if (!gpu_graph_check(gpu_test_stream(), enqueue_post, &job, outs, 1, msg, len)) goto done;
    for (size_t i = 0; i < nX; i++) {
        uint32_t g, c;
        if (x_bf16) {
            g = ((uint16_t *)outs[0].host)[i], c = dsv4_bf16_encode(ref[i]);
        } else {
            memcpy(&g, (float *)outs[0].host + i, 4);
            memcpy(&c, ref + i, 4);
        }
        if (g != c) {
            snprintf(msg, len, "X_out[%zu] bits 0x%08x, cpu 0x%08x (%.9g)", i, g, c, (double)ref[i]);
            goto done;
        }
    }
    ok = 1;
done:
    gpu_bufs_free(outs, 1);
    cudaFree(dX), cudaFree(dy), cudaFree(dpost), cudaFree(dcomb), cudaFree(dout);
    free(X), free(y), free(post), free(comb), free(ref);
    return ok;
}

TEST(gpu_hc_post_bit_exact) {
    if (!gpu_available()) SKIP("no GPU");
    static const int shapes[][3] = {{1, 4, 4096}, {3, 4, 48}, {37, 4, 7168}, {2, 2, 300}, {5, 1, 16}, {1, 3, 4096}};
    uint64_t rng = 23;
    char msg[1024];
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int v = 0; v < 8; v++)
            CHECK_MSG(post_case(shapes[s][0], shapes[s][1], shapes[s][2], v & 1, (v >> 1) & 1, (v >> 2) & 1, &rng, msg,
                                sizeof msg),
                      "hc_post T=%d hc=%d D=%d X=%s y=%s merge=%s: %s", shapes[s][0], shapes[s][1], shapes[s][2],
                      v & 1 ? "bf16" : "f32", (v >> 1) & 1 ? "bf16" : "f32", (v >> 2) & 1 ? "fp32" : "bf16-weights", msg);
}

TEST(gpu_hc_rejects_bad_arguments) {
    dsv4_cuda_hc_dims d = {5, 64, 20, 1e-6f, 1e-6f};
    float dummy[64] = {0};
    dsv4_cuda_hc_pre_args a = {0};
    a.X = dummy, a.fn = dummy, a.base = dummy, a.scale = dummy, a.post = dummy, a.comb = dummy;
    CHECK_STATUS(dsv4_cuda_hc_pre(NULL, &d, 1, &a), DSV4_ERR_UNSUPPORTED);
    CHECK(strstr(dsv4_last_error(), "hc_pre") != NULL);
    d.hc = 4;
    CHECK_STATUS(dsv4_cuda_hc_pre(NULL, &d, 1, &a), DSV4_ERR_INVALID_ARGUMENT); /* no workspace */
    CHECK(strstr(dsv4_last_error(), "workspace") != NULL);
    CHECK_STATUS(dsv4_cuda_hc_post(NULL, &d, 1, dummy, DSV4_CUDA_F32, dummy, DSV4_CUDA_F32, dummy, dummy,
                                   (dsv4_cuda_hc_merge)7, dummy),
                 DSV4_ERR_INVALID_ARGUMENT);
    CHECK(dsv4_cuda_hc_pre_workspace_bytes(&d, 1) > 0);
}
#else
TEST(gpu_rmsnorm_matches_cpu) { SKIP("built without CUDA"); }
TEST(gpu_rmsnorm_many_rows) { SKIP("built without CUDA"); }
TEST(gpu_hc_pre_matches_cpu) { SKIP("built without CUDA"); }
TEST(gpu_hc_post_bit_exact) { SKIP("built without CUDA"); }
#endif
