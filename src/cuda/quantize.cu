// NVFP4 activation quantize kernels (header: quantize.h; semantics: src/cpu/quantize.h).
//
// TPR threads per row (256 for a few rows down to a warp for thousands: nvfp4.cuh
// row_threads), S 16-element groups per thread, all their 16-byte loads in flight before the
// first use; each group gives one scale byte and one 8-byte payload store. Blocks are
// launched for the padding rows of the swizzled layout too, so their scales are written
// zero. DYNAMIC_TENSOR first reduces the
// tensor's amax into <= 1024 per-block partials; every quantize block then re-reduces those
// partials itself (4 KB, from L2) instead of waiting on a grid-wide result, so there is no
// atomic, no memset and no second synchronisation point, and the result repeats bit for bit.
// A tensor of at most SMALL_TENSOR elements (a decode step's activation) skips the partial
// kernel: every block reduces the whole tensor (<= 64 KB of BF16, from L2) itself, so the
// mode costs one launch there. The per-element math is nvfp4_quant_group16_fast
// (division-free, bit-identical to the reference form).
#include <limits.h>

#include "cuda/common.cuh"
#include "cuda/nvfp4.cuh"
#include "cuda/quantize.h"

#define QUANT_THREADS 256
#define MAX_PARTIALS (DSV4_CUDA_QUANTIZE_WORKSPACE_BYTES / 4)
#define SMALL_TENSOR 32768

// Partial amax of n16 16-element groups: block b writes partial[b]. NaN is ignored. Each
// thread issues AMAX_UNROLL groups' loads before it reduces them. The tensor is walked from
// its end, so the quantize kernel, walking from row 0, starts on what L2 still holds.
#define AMAX_UNROLL 4
template <int DT>
__global__ void __launch_bounds__(QUANT_THREADS) k_amax_partial(const void *x, int64_t n16, float *partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ float sh[33];
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    float m = 0.0f;
    for (int64_t g0 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; g0 < n16; g0 += AMAX_UNROLL * stride) {
        uint32_t w[AMAX_UNROLL][RAW_WORDS(DT)];
#pragma unroll
        for (int u = 0; u < AMAX_UNROLL; u++)
            if (g0 + u * stride < n16) load_raw16<DT>(x, (n16 - 1 - (g0 + u * stride)) * 16, w[u]);
#pragma unroll
        for (int u = 0; u < AMAX_UNROLL; u++) {
            if (g0 + u * stride >= n16) break;
            float v[16];
            unpack16<DT>(w[u], v);
            m = f_max_nan_ignored(m, amax16(v));
        }
    }
    m = block_reduce(m, sh, 1);
    if (threadIdx.x == 0) partial[blockIdx.x] = m;
}

// TPR threads per row (row_threads), 256 / TPR rows per block, S groups per thread and pass
// (nvfp4.cuh: thread t holds groups t + j*TPR). A row of at most TPR*S groups is loaded once
// with all its loads in flight; DYNAMIC_TOKEN reduces its amax from those registers (warp
// shuffles, plus shared memory across the TPR/32 warps of a row) and quantizes them with the
// block amaxes it kept. Longer rows take several passes (DYNAMIC_TOKEN then reads the row
// twice, the second time mostly from L1/L2). Rows past M of the last block are padding rows
// of the swizzled layout (scales written zero) or, in the linear layout, nothing.
template <int DT, int TPR, int S>
__global__ void __launch_bounds__(QUANT_THREADS) k_quantize_rows(const void *x, int64_t M, int64_t K, nvfp4_dst d,
                                                                  const float *partial, int n_partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    constexpr int RPB = QUANT_THREADS / TPR, NW = TPR / 32;
    __shared__ float sh[33];
    const int t = threadIdx.x % TPR, warp = threadIdx.x / 32;
    const int64_t r0 = (int64_t)blockIdx.x * RPB, r = r0 + threadIdx.x / TPR, kb = K / 16;
    if (r0 >= M) { // a block of padding rows only
        nvfp4_zero_pad_n(&d, r, kb, 1, t, TPR);
        return;
    }
    const bool real = r < M; // warp-uniform (TPR >= 32); every thread stays for the barriers
    const void *xr = (const char *)x + (real ? r : 0) * K * (DT == DT_F32 ? 4 : 2);
    const int64_t step = (int64_t)TPR * S;
    const bool one_pass = kb <= step;
    uint32_t w[S][RAW_WORDS(DT)];
    float ga[S]; // DYNAMIC_TOKEN, one pass: each group's amax
    float s;
    if (d.mode == 0) { // STATIC
        s = d.scale[0];
    } else if (d.mode == 1) { // DYNAMIC_TENSOR
        float m = 0.0f;
        if (n_partial > 0) {
            for (int i = threadIdx.x; i < n_partial; i += blockDim.x) m = f_max_nan_ignored(m, partial[i]);
        } else { // small tensor: the whole amax here (max is order-free, so every block agrees)
            for (int64_t gi = threadIdx.x; gi < M * kb; gi += blockDim.x) {
                uint32_t u[RAW_WORDS(DT)];
                float v[16];
                load_raw16<DT>(x, gi * 16, u);
                unpack16<DT>(u, v);
                m = f_max_nan_ignored(m, amax16(v));
            }
        }
        s = nvfp4_dynamic_scale(block_reduce(m, sh, 1));
        if (blockIdx.x == 0 && threadIdx.x == 0) d.scale[0] = s;
    } else { // DYNAMIC_TOKEN
        float m = 0.0f;
        for (int64_t base = 0; real && base < kb; base += step) {
#pragma unroll
            for (int j = 0; j < S; j++)
                if (base + t + j * TPR < kb) load_raw16<DT>(xr, (base + t + j * TPR) * 16, w[j]);
#pragma unroll
            for (int j = 0; j < S; j++) {
                ga[j] = 0.0f;
                if (base + t + j * TPR < kb) {
                    float v[16];
                    unpack16<DT>(w[j], v);
                    ga[j] = amax16(v);
                }
                m = f_max_nan_ignored(m, ga[j]);
            }
        }
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) m = f_max_nan_ignored(m, __shfl_xor_sync(0xffffffffu, m, o));
        if (NW > 1) { // the row's warps meet in shared memory
            if (threadIdx.x % 32 == 0) sh[warp] = m;
            __syncthreads();
            const int w0 = warp / NW * NW;
#pragma unroll
            for (int i = 0; i < NW; i++) m = f_max_nan_ignored(m, sh[w0 + i]);
        }
        s = nvfp4_dynamic_scale(m);
        if (real && t == 0) d.scale[r] = s;
    }
    if (!real) {
        nvfp4_zero_pad_n(&d, r, kb, 1, t, TPR);
        return;
    }
    const float g = f_div(1.0f, s);
    const bool have = d.mode == 2 && one_pass; // the row is still in w[], its amaxes in ga[]
    for (int64_t base = 0; base < kb; base += step) {
        if (!have) {
#pragma unroll
            for (int j = 0; j < S; j++)
                if (base + t + j * TPR < kb) load_raw16<DT>(xr, (base + t + j * TPR) * 16, w[j]);
        }
#pragma unroll
        for (int j = 0; j < S; j++) {
            const int64_t c = base + t + j * TPR;
            if (c >= kb) break;
            float v[16];
            unpack16<DT>(w[j], v);
            uint32_t packed[2];
            const uint32_t sc = nvfp4_quant_group16_amax(v, have ? ga[j] : amax16(v), g, packed);
            d.sf[nvfp4_sf_index(d.swizzled, r, c, kb)] = (uint8_t)sc;
            *(uint2 *)(d.q + r * (K / 2) + c * 8) = make_uint2(packed[0], packed[1]);
        }
    }
    nvfp4_zero_pad_n(&d, r, kb, 0, t, TPR);
}

typedef void (*quantize_kernel)(const void *, int64_t, int64_t, nvfp4_dst, const float *, int);
#define QK_S(DT, TPR) {k_quantize_rows<DT, TPR, 1>, k_quantize_rows<DT, TPR, 2>, k_quantize_rows<DT, TPR, 4>, \
                       k_quantize_rows<DT, TPR, DT == DT_F32 ? 4 : 8>}
#define QK_T(DT) {QK_S(DT, 32), QK_S(DT, 64), QK_S(DT, 128), QK_S(DT, 256)}
// [dtype][log2(TPR/32)][log2(S)]; fp32 stops at 4 groups per thread (64 registers of input,
// as BF16's 8).
static const quantize_kernel k_quantize_table[2][4][4] = {QK_T(DT_F32), QK_T(DT_BF16)};

static int ilog2(int v) {
    int l = 0;
    while (v > 1) v >>= 1, l++;
    return l;
}

extern "C" dsv4_status dsv4_cuda_quantize_nvfp4(cudaStream_t stream, const void *x, dsv4_cuda_dtype dtype,
                                                int64_t M, int64_t K, const dsv4_cuda_nvfp4_out *out,
                                                void *workspace) {
    if (!out || !x || !out->q || !out->sf || !out->scale)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "quantize_nvfp4: NULL argument");
    if (M < 0 || K <= 0 || K % 16 || M > INT_MAX / 2 || K > INT64_MAX / 4 / (M > 0 ? M : 1))
        return dsv4_fail(DSV4_ERR_SHAPE, "quantize_nvfp4: bad shape [%lld, %lld] (K must be a positive multiple of 16)",
                         (long long)M, (long long)K);
    if ((dtype != DSV4_CUDA_F32 && dtype != DSV4_CUDA_BF16) || (int)out->mode < 0 ||
        out->mode > DSV4_ACT_SCALE_DYNAMIC_TOKEN || (out->layout != DSV4_SF_LINEAR && out->layout != DSV4_SF_SWIZZLED))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "quantize_nvfp4: unknown dtype %d, scale mode %d or layout %d",
                         (int)dtype, (int)out->mode, (int)out->layout);
    if (((uintptr_t)x & 15) || ((uintptr_t)out->q & 7))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT,
                         "quantize_nvfp4: input must be 16-byte and payload 8-byte aligned (%p, %p)", x,
                         (void *)out->q);
    if (out->mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR && !workspace)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "quantize_nvfp4: DYNAMIC_TENSOR needs a workspace");
    if (M == 0) return DSV4_OK;

    nvfp4_dst d = {out->q, out->sf, out->scale, (int)out->mode, out->layout == DSV4_SF_SWIZZLED};
    int n_partial = 0;
    if (out->mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR && M * K > SMALL_TENSOR) {
        int64_t n16 = M * K / 16, blocks = (n16 + QUANT_THREADS - 1) / QUANT_THREADS;
        n_partial = (int)(blocks < MAX_PARTIALS ? blocks : MAX_PARTIALS);
        (void)dsv4_launch_pdl(dtype == DSV4_CUDA_F32 ? k_amax_partial<DT_F32> : k_amax_partial<DT_BF16>, dim3(n_partial),
                              dim3(QUANT_THREADS), 0, stream, x, n16, (float *)workspace);
        DSV4_CUDA_LAUNCHED("quantize_nvfp4: amax kernel");
    }
    const int64_t rows = d.swizzled ? (M + 127) / 128 * 128 : M, kb = K / 16;
    const int tpr = row_threads(M), smax = dtype == DSV4_CUDA_F32 ? 4 : 8, sl = row_slots(kb, tpr, smax);
    const quantize_kernel k = k_quantize_table[dtype == DSV4_CUDA_BF16][ilog2(tpr / 32)][ilog2(sl)];
    const int64_t grid = (rows * tpr + QUANT_THREADS - 1) / QUANT_THREADS;
    (void)dsv4_launch_pdl(k, dim3((unsigned)grid), dim3(QUANT_THREADS), 0, stream, x, M, K, d, (const float *)workspace,
                          n_partial);
    DSV4_CUDA_LAUNCHED("quantize_nvfp4: quantize kernel");
    return DSV4_OK;
}

extern "C" uint8_t dsv4_cuda_host_e2m1_encode(float x) { return (uint8_t)e2m1_encode(x); }
extern "C" uint8_t dsv4_cuda_host_e4m3_encode(float x) { return (uint8_t)e4m3_encode(x); }
extern "C" float dsv4_cuda_host_e4m3_decode(uint8_t code) { return e4m3_decode(code); }
extern "C" uint16_t dsv4_cuda_host_bf16_encode(float x) { return (uint16_t)bf16_encode(x); }
extern "C" uint8_t dsv4_cuda_host_quant_group16(const float v[16], float g, uint8_t packed[8]) {
    uint32_t w[2];
    uint8_t s = (uint8_t)nvfp4_quant_group16(v, g, w);
    for (int i = 0; i < 8; i++) packed[i] = (uint8_t)(w[i / 4] >> (8 * (i % 4)));
    return s;
}
extern "C" uint8_t dsv4_cuda_host_quant_group16_fast(const float v[16], float g, uint8_t packed[8]) {
    uint32_t w[2];
    uint8_t s = (uint8_t)nvfp4_quant_group16_fast(v, g, w);
    for (int i = 0; i < 8; i++) packed[i] = (uint8_t)(w[i / 4] >> (8 * (i % 4)));
    return s;
}
