// GPU linear front end: weight upload, argument validation, the decode split-K plan, the
// deterministic split-K reduction, and the choice between the decode and prefill kernels.
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda/fp4_layout.cuh"
#include "cuda/linear_internal.cuh"

// Decode split-K plan: aim for this many CTAs (about eight 4-warp CTAs per SM of a 132-SM
// chip) so that a narrow weight (N = 2048) still keeps enough loads in flight on every SM. A constant, not the device's SM count:
// the plan (and so the summation order) is the same on every device.
#define DECODE_TARGET_CTAS 1024
#define DECODE_MAX_SPLITS 16
#define DECODE_MIN_K_PER_SPLIT 512

static const char *weight_name(const dsv4_weight *w) { return w->src && w->src->name ? w->src->name : "weight"; }

static int fmt_of(dsv4_wformat f) { return f == DSV4_WF_NVFP4 ? LIN_NVFP4 : f == DSV4_WF_MXFP4 ? LIN_MXFP4 : LIN_FP8; }

// Payload and scale bytes of a block-scaled weight; 0 for formats the GPU linear does not take.
static void weight_sizes(dsv4_wformat f, int64_t rows, int64_t cols, int scale_f32, size_t *payload, size_t *scales) {
    *payload = *scales = 0;
    switch (f) {
    case DSV4_WF_NVFP4: *payload = (size_t)(rows * cols / 2); *scales = (size_t)(rows * cols / 16); break;
    case DSV4_WF_MXFP4: *payload = (size_t)(rows * cols / 2); *scales = (size_t)(rows * cols / 32); break;
    case DSV4_WF_FP8_B128:
        *payload = (size_t)(rows * cols);
        *scales = (size_t)(((rows + 127) / 128) * ((cols + 127) / 128)) * (scale_f32 ? 4 : 1);
        break;
    default: break;
    }
}

static dsv4_status check_shape(dsv4_wformat f, int64_t rows, int64_t cols, const char *what) {
    if (f != DSV4_WF_NVFP4 && f != DSV4_WF_MXFP4 && f != DSV4_WF_FP8_B128)
        return dsv4_fail(DSV4_ERR_UNSUPPORTED, "%s: the GPU linear takes NVFP4, MXFP4 or FP8 block-128, not %s", what,
                         dsv4_wformat_name(f));
    const int64_t kmul = f == DSV4_WF_MXFP4 ? 32 : 16;
    if (rows < 1 || cols < kmul || cols % kmul || rows > INT32_MAX / 2 || cols > INT32_MAX / 2)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: %s weight [%lld, %lld]: needs rows >= 1 and cols a positive multiple of %lld",
                         what, dsv4_wformat_name(f), (long long)rows, (long long)cols, (long long)kmul);
    return DSV4_OK;
}

// ---- the device layout of fp4 payloads (fp4_layout.cuh) ----

#define LAYOUT_THREADS 256

// One thread per 16-element block: two payload words and (NVFP4) scale byte b.
__global__ void __launch_bounds__(LAYOUT_THREADS) k_fp4_device_layout(uint32_t *q, uint8_t *s, int64_t n_blocks,
                                                                       int nvfp4) {
    for (int64_t b = (int64_t)blockIdx.x * LAYOUT_THREADS + threadIdx.x; b < n_blocks;
         b += (int64_t)gridDim.x * LAYOUT_THREADS) {
        uint32_t w0 = q[2 * b], w1 = q[2 * b + 1];
        if (nvfp4 && (s[b] & 0x80u)) { // -scale · e = scale · -e (natural layout: bit 3 of each nibble)
            s[b] &= 0x7fu;
            w0 ^= 0x88888888u;
            w1 ^= 0x88888888u;
        }
        q[2 * b] = fp4_to_device_word(w0);
        q[2 * b + 1] = fp4_to_device_word(w1);
    }
}

extern "C" dsv4_status dsv4_cuda_fp4_device_layout(uint8_t *q, uint8_t *s, int64_t rows, int64_t cols, dsv4_wformat f) {
    if (f != DSV4_WF_NVFP4 && f != DSV4_WF_MXFP4) return DSV4_OK;
    if (!q || !s || rows < 1 || cols < 16 || cols % 16 || ((uintptr_t)q & 3))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "fp4 device layout: bad weight [%lld, %lld] or payload pointer",
                         (long long)rows, (long long)cols);
    const int64_t n_blocks = rows * (cols / 16);
    int64_t grid = (n_blocks + LAYOUT_THREADS - 1) / LAYOUT_THREADS;
    if (grid > 65535) grid = 65535;
    k_fp4_device_layout<<<(unsigned)grid, LAYOUT_THREADS>>>(reinterpret_cast<uint32_t *>(q), s, n_blocks,
                                                            f == DSV4_WF_NVFP4);
    DSV4_CUDA_LAUNCHED("fp4 device layout: kernel");
    return DSV4_OK;
}

extern "C" uint32_t dsv4_cuda_host_fp4_to_device_word(uint32_t q) { return fp4_to_device_word(q); }
extern "C" uint32_t dsv4_cuda_host_fp4_from_device_word(uint32_t r) { return fp4_from_device_word(r); }
extern "C" void dsv4_cuda_host_fp4_device_pair_bits(uint32_t r, uint32_t out[4]) { fp4_device_pair_bits(r, out); }

extern "C" dsv4_status dsv4_cuda_weight_upload(const dsv4_weight *w, dsv4_cuda_weight *out) {
    memset(out, 0, sizeof *out);
    const char *what = weight_name(w);
    DSV4_TRY(check_shape(w->format, w->rows, w->cols, what));
    int scale_f32 = 0;
    const dsv4_dtype sd = w->scale_dtype;
    if (w->format == DSV4_WF_NVFP4 && sd != DSV4_DT_F8_E4M3)
        return dsv4_fail(DSV4_ERR_DTYPE, "%s: NVFP4 scales must be F8_E4M3, not %s", what, dsv4_dtype_name(sd));
    if (w->format == DSV4_WF_MXFP4 && sd != DSV4_DT_F8_E8M0 && sd != DSV4_DT_U8)
        return dsv4_fail(DSV4_ERR_DTYPE, "%s: MXFP4 scales must be F8_E8M0 or U8, not %s", what, dsv4_dtype_name(sd));
    if (w->format == DSV4_WF_FP8_B128) {
        if (sd != DSV4_DT_F8_E8M0 && sd != DSV4_DT_U8 && sd != DSV4_DT_F32)
            return dsv4_fail(DSV4_ERR_DTYPE, "%s: FP8 block-128 scales must be F8_E8M0, U8 or F32, not %s", what,
                             dsv4_dtype_name(sd));
        scale_f32 = sd == DSV4_DT_F32;
    }
    if (!w->data || !w->scale) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: no payload or no scales to upload", what);
    if (w->format == DSV4_WF_NVFP4 && !(w->global_scale > 0.0f && w->global_scale < INFINITY))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: NVFP4 global scale %g is not finite and positive", what,
                         (double)w->global_scale);
    size_t payload, scales;
    weight_sizes(w->format, w->rows, w->cols, scale_f32, &payload, &scales);
    const size_t scale_off = (payload + 255) / 256 * 256; // scales start 256-byte aligned
    void *buf = NULL;
    char op[512];
    /* + DSV4_CUDA_WEIGHT_TAIL (linear.h) */
    snprintf(op, sizeof op, "upload %s: cudaMalloc(%zu bytes)", what, scale_off + scales + DSV4_CUDA_WEIGHT_TAIL);
    DSV4_CUDA_TRY(cudaMalloc(&buf, scale_off + scales + DSV4_CUDA_WEIGHT_TAIL), op);
    snprintf(op, sizeof op, "upload %s: cudaMemcpy payload", what);
    dsv4_status st = dsv4_cuda_check(cudaMemcpy(buf, w->data, payload, cudaMemcpyHostToDevice), op);
    if (st == DSV4_OK) {
        snprintf(op, sizeof op, "upload %s: cudaMemcpy scales", what);
        st = dsv4_cuda_check(cudaMemcpy((uint8_t *)buf + scale_off, w->scale, scales, cudaMemcpyHostToDevice), op);
    }
    if (st == DSV4_OK) // after the copies on the legacy stream, before the synchronisation below
        st = dsv4_cuda_fp4_device_layout((uint8_t *)buf, (uint8_t *)buf + scale_off, w->rows, w->cols, w->format);
    if (st == DSV4_OK) {
        /* a copy from pageable memory may return before the DMA lands; kernels on a
         * non-blocking stream must not read half-copied weights (upload is load time) */
        snprintf(op, sizeof op, "upload %s: cudaDeviceSynchronize", what);
        st = dsv4_cuda_check(cudaDeviceSynchronize(), op);
    }
    if (st != DSV4_OK) {
        cudaFree(buf);
        return st;
    }
    out->format = w->format;
    out->rows = w->rows;
    out->cols = w->cols;
    out->data = (const uint8_t *)buf;
    out->scale = (const uint8_t *)buf + scale_off;
    out->scale_f32 = scale_f32;
    out->global_scale = w->format == DSV4_WF_NVFP4 ? w->global_scale : 1.0f;
    out->input_scale = w->input_scale;
    out->alloc = buf;
    out->bytes = payload + scales;
    return DSV4_OK;
}

extern "C" void dsv4_cuda_weight_free(dsv4_cuda_weight *w) {
    if (w->alloc) cudaFree(w->alloc);
    memset(w, 0, sizeof *w);
}

// ---- decode plan ----

typedef struct {
    int splits;
    int64_t k_per_split;
} decode_plan;

static decode_plan plan_decode(int fmt, int64_t M, int64_t N, int64_t K) {
    const int mt = linear_decode_mt(M);
    const int64_t rows = linear_decode_rows_per_cta(fmt, mt), step = linear_decode_k_step(fmt, mt);
    const int64_t ctas = (N + rows - 1) / rows;
    int64_t splits = (DECODE_TARGET_CTAS + ctas - 1) / ctas;
    if (splits > DECODE_MAX_SPLITS) splits = DECODE_MAX_SPLITS;
    const int64_t max_by_k = K / DECODE_MIN_K_PER_SPLIT;
    if (splits > max_by_k) splits = max_by_k;
    if (splits < 1) splits = 1;
    // a whole number of steps per split, then drop splits that would be empty
    int64_t kps = (K + splits - 1) / splits;
    kps = (kps + step - 1) / step * step;
    decode_plan pl;
    pl.k_per_split = kps;
    pl.splits = (int)((K + kps - 1) / kps);
    return pl;
}

static bool decode_takes(const dsv4_cuda_weight *w, int64_t M) {
    return M >= 1 && M <= DSV4_CUDA_LINEAR_DECODE_MAX_M && !(w->format == DSV4_WF_NVFP4 && w->cols % 32);
}

// The dequant + cuBLAS path: W4A16 only, exact expansions only (no fp32 FP8 block scales).
static bool dequant_takes(const dsv4_cuda_weight *w) {
    if (w->format == DSV4_WF_FP8_B128) return !w->scale_f32;
    return w->cols % 32 == 0;
}

static size_t dequant_bytes(const dsv4_cuda_weight *w) { return (size_t)w->rows * (size_t)w->cols * 2; }

extern "C" size_t dsv4_cuda_linear_workspace_bytes(const dsv4_cuda_weight *w, int64_t max_M) {
    size_t need = 0;
    if (max_M >= DSV4_CUDA_LINEAR_DEQUANT_MIN_M && dequant_takes(w)) need = dequant_bytes(w);
    for (int64_t M = 1; M <= max_M && M <= DSV4_CUDA_LINEAR_DECODE_MAX_M; M++) {
        if (!decode_takes(w, M)) continue;
        const decode_plan pl = plan_decode(fmt_of(w->format), M, w->rows, w->cols);
        if (pl.splits > 1) {
            const size_t b = (size_t)pl.splits * (size_t)M * (size_t)w->rows * sizeof(float);
            if (b > need) need = b;
        }
    }
    return need;
}

// ---- split-K reduction: y[m, n] = (sum over splits in order) · factor(m) ----

#define REDUCE_THREADS 256

__global__ void __launch_bounds__(REDUCE_THREADS) linear_splitk_reduce(const LinearParams p, int splits) {
    pdl_launch_dependents();
    pdl_wait(); // the partials come from the decode kernel just before
    const int64_t total = p.M * p.N;
    for (int64_t i = (int64_t)blockIdx.x * REDUCE_THREADS + threadIdx.x; i < total; i += (int64_t)gridDim.x * REDUCE_THREADS) {
        float s = 0.0f;
        for (int z = 0; z < splits; z++) s += p.partials[(int64_t)z * total + i];
        const int64_t m = i / p.N, n = i % p.N;
        linear_store(p, m, n, s * linear_out_factor(p, m));
    }
}

// ---- entry ----

// cudaFuncSetAttribute applies to the current device only: one flag per device.
#define LINEAR_MAX_DEVICES 64
static bool g_init_done[LINEAR_MAX_DEVICES];

extern "C" dsv4_status dsv4_cuda_linear_init(void) {
    int dev = 0;
    DSV4_CUDA_TRY(cudaGetDevice(&dev), "cuda linear init: cudaGetDevice");
    if (dev < 0 || dev >= LINEAR_MAX_DEVICES)
        return dsv4_fail(DSV4_ERR_UNSUPPORTED, "cuda linear init: device %d beyond %d", dev, LINEAR_MAX_DEVICES);
    if (g_init_done[dev]) return DSV4_OK;
    DSV4_TRY(linear_prefill_init());
    DSV4_TRY(linear_prefill_wgmma_init());
    DSV4_TRY(linear_decode_init());
    g_init_done[dev] = true;
    return DSV4_OK;
}

static bool aligned(const void *p, size_t a) { return ((uintptr_t)p % a) == 0; }

extern "C" dsv4_status dsv4_cuda_linear(const dsv4_cuda_linear_args *a, cudaStream_t stream) {
    if (!a || !a->w || !a->y) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda linear: missing weight or output");
    const dsv4_cuda_weight *w = a->w;
    DSV4_TRY(check_shape(w->format, w->rows, w->cols, "cuda linear"));
    if (a->M < 1) return dsv4_fail(DSV4_ERR_SHAPE, "cuda linear: M = %lld", (long long)a->M);
    if ((a->x == NULL) == (a->xq == NULL))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda linear: give exactly one of x (BF16) and xq (NVFP4)");
    if (a->xq && (!a->xq->q || !a->xq->scale || (w->cols % 16)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda linear: NVFP4 activations need q and scale");
    if (a->xq && !a->xq->token_scales && !(a->xq->input_scale > 0.0f && a->xq->input_scale < INFINITY))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda linear: NVFP4 activations: input_scale %g is not finite and positive",
                         (double)a->xq->input_scale);
    /* the kernels' vector loads: a misaligned pointer would be a sticky launch failure that
     * takes the whole CUDA context down, so refuse it here */
    if ((a->x && !aligned(a->x, 16)) || (a->xq && (!aligned(a->xq->q, 8) || !aligned(a->xq->scale, 2))) ||
        !aligned(w->data, 16) || !aligned(w->scale, 4) || !aligned(a->y, 16))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda linear: x and y need 16-byte, NVFP4 activations 8-byte, "
                         "weights 16-byte (payload) and 4-byte (scales) alignment");
    /* the prefill grid has ceil(M/128) rows in gridDim.y (at most 65535) */
    if (a->M > (int64_t)65535 * 128)
        return dsv4_fail(DSV4_ERR_SHAPE, "cuda linear: M = %lld is more rows than one call takes (%d)", (long long)a->M,
                         65535 * 128);
    DSV4_TRY(dsv4_cuda_linear_init());

    const int fmt = fmt_of(w->format), act = a->xq ? LIN_ACT_NVFP4 : LIN_ACT_BF16;
    LinearParams p;
    memset(&p, 0, sizeof p);
    p.M = a->M;
    p.N = w->rows;
    p.K = w->cols;
    p.w = w->data;
    p.w_scale = w->scale;
    p.w_scale_f32 = w->scale_f32;
    const float act_scale = linear_params_set_io(p, a->x, a->xq, a->y, a->out);
    const float global = w->format == DSV4_WF_NVFP4 ? w->global_scale : 1.0f;

    dsv4_cuda_linear_path path = a->path;
    if (path == DSV4_LINEAR_AUTO)
        path = decode_takes(w, a->M)                                                          ? DSV4_LINEAR_DECODE
             : a->M >= DSV4_CUDA_LINEAR_DEQUANT_MIN_M && a->x && a->cublas && dequant_takes(w) ? DSV4_LINEAR_DEQUANT_GEMM
                                                                                               : DSV4_LINEAR_PREFILL;
    if (path == DSV4_LINEAR_DEQUANT_GEMM) {
        if (!a->x || !dequant_takes(w) || !a->cublas)
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "cuda linear: the dequant + cuBLAS path takes BF16 activations, a cuBLAS "
                             "handle and NVFP4/MXFP4 with K %% 32 == 0 or FP8 with ue8m0 scales");
        const size_t need = dequant_bytes(w);
        if (!a->workspace || a->workspace_bytes < need || !aligned(a->workspace, 16))
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda linear: dequant path for [%lld, %lld] needs %zu workspace bytes "
                             "(16-byte aligned), got %zu", (long long)p.N, (long long)p.K, need,
                             a->workspace ? a->workspace_bytes : 0);
        p.out_scale = global * act_scale;
        return linear_dequant_gemm_launch(fmt, p, a->workspace, a->cublas, stream);
    }
    if (path == DSV4_LINEAR_DECODE) {
        if (!decode_takes(w, a->M))
            return dsv4_fail(DSV4_ERR_UNSUPPORTED, "cuda linear: the decode kernel takes M <= %d (and NVFP4 K %% 32 == 0); "
                             "got M = %lld, K = %lld", DSV4_CUDA_LINEAR_DECODE_MAX_M, (long long)a->M, (long long)w->cols);
        // (the power-of-two factor of the kernel's exact BF16 expansion is applied in the kernel)
        p.out_scale = global * act_scale;
        if (a->xq && !aligned(a->xq->q, 16))
            return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda linear: the decode kernel needs 16-byte aligned NVFP4 activations");
        const decode_plan pl = plan_decode(fmt, a->M, p.N, p.K);
        p.k_per_split = pl.k_per_split;
        if (pl.splits > 1) {
            const size_t need = (size_t)pl.splits * (size_t)p.M * (size_t)p.N * sizeof(float);
            if (!a->workspace || a->workspace_bytes < need)
                return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT,
                                 "cuda linear: decode M = %lld, N = %lld, K = %lld needs %zu workspace bytes, got %zu",
                                 (long long)p.M, (long long)p.N, (long long)p.K, need, a->workspace ? a->workspace_bytes : 0);
            p.partials = static_cast<float *>(a->workspace);
        }
        DSV4_TRY(linear_decode_launch(fmt, act, p, pl.splits, stream));
        if (pl.splits > 1) {
            const int64_t total = p.M * p.N;
            int64_t blocks = (total + REDUCE_THREADS - 1) / REDUCE_THREADS;
            if (blocks > 4096) blocks = 4096;
            DSV4_CUDA_TRY(dsv4_launch_pdl(linear_splitk_reduce, dim3((unsigned)blocks), dim3(REDUCE_THREADS), 0, stream, p,
                                          pl.splits),
                          "linear_splitk_reduce launch");
        }
        return DSV4_OK;
    }
    p.out_scale = global * act_scale;
    return linear_prefill_launch(fmt, act, p, stream);
}
