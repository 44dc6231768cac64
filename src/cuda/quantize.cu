// NVFP4 activation quantize kernels (header: quantize.h; semantics: src/cpu/quantize.h).
//
// One block of 256 threads per row (per padding row too, in the swizzled layout, so the
// padding scales are written zero); each thread owns whole 16-element blocks: two or four
// 16-byte loads, one scale byte, one 8-byte payload store. DYNAMIC_TENSOR first reduces the
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

// Partial amax of n16 16-element groups: block b writes partial[b]. NaN is ignored.
__global__ void __launch_bounds__(QUANT_THREADS) k_amax_partial(const void *x, int dtype, int64_t n16,
                                                                 float *partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ float sh[33];
    float m = 0.0f;
    for (int64_t gi = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; gi < n16; gi += (int64_t)gridDim.x * blockDim.x) {
        float v[16];
        load_group16(x, dtype, gi * 16, v);
#pragma unroll
        for (int k = 0; k < 16; k++) m = f_max_nan_ignored(m, f_abs(v[k]));
    }
    m = block_reduce(m, sh, 1);
    if (threadIdx.x == 0) partial[blockIdx.x] = m;
}

__global__ void __launch_bounds__(QUANT_THREADS) k_quantize_rows(const void *x, int dtype, int64_t M, int64_t K,
                                                                  nvfp4_dst d, const float *partial,
                                                                  int n_partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ float sh[33];
    const int64_t r = blockIdx.x, kb = K / 16;
    if (r >= M) { // a padding row of the swizzled layout
        nvfp4_zero_pad(&d, r, kb, 1);
        return;
    }
    const void *xr = (const char *)x + r * K * (dtype == DT_F32 ? 4 : 2);
    float s;
    if (d.mode == 0) { // STATIC
        s = d.scale[0];
    } else if (d.mode == 1) { // DYNAMIC_TENSOR
        float m = 0.0f;
        if (n_partial > 0) {
            for (int i = threadIdx.x; i < n_partial; i += blockDim.x) m = f_max_nan_ignored(m, partial[i]);
        } else { // small tensor: the whole amax here (max is order-free, so every block agrees)
            for (int64_t gi = threadIdx.x; gi < M * kb; gi += blockDim.x) {
                float v[16];
                load_group16(x, dtype, gi * 16, v);
#pragma unroll
                for (int k = 0; k < 16; k++) m = f_max_nan_ignored(m, f_abs(v[k]));
            }
        }
        s = nvfp4_dynamic_scale(block_reduce(m, sh, 1));
        if (r == 0 && threadIdx.x == 0) d.scale[0] = s;
    } else { // DYNAMIC_TOKEN
        float m = 0.0f;
        for (int64_t c = threadIdx.x; c < kb; c += blockDim.x) {
            float v[16];
            load_group16(xr, dtype, c * 16, v);
#pragma unroll
            for (int k = 0; k < 16; k++) m = f_max_nan_ignored(m, f_abs(v[k]));
        }
        s = nvfp4_dynamic_scale(block_reduce(m, sh, 1));
        if (threadIdx.x == 0) d.scale[r] = s;
    }
    const float g = f_div(1.0f, s);
    for (int64_t c = threadIdx.x; c < kb; c += blockDim.x) {
        float v[16];
        load_group16(xr, dtype, c * 16, v);
        uint32_t packed[2];
        d.sf[nvfp4_sf_index(d.swizzled, r, c, kb)] = (uint8_t)nvfp4_quant_group16_fast(v, g, packed);
        *(uint2 *)(d.q + r * (K / 2) + c * 8) = make_uint2(packed[0], packed[1]);
    }
    nvfp4_zero_pad(&d, r, kb, 0);
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
        (void)dsv4_launch_pdl(k_amax_partial, dim3(n_partial), dim3(QUANT_THREADS), 0, stream, x, (int)dtype, n16, (float *)workspace);
        DSV4_CUDA_LAUNCHED("quantize_nvfp4: amax kernel");
    }
    int64_t grid = d.swizzled ? (M + 127) / 128 * 128 : M;
    (void)dsv4_launch_pdl(k_quantize_rows, dim3((unsigned)grid), dim3(QUANT_THREADS), 0, stream, x, (int)dtype, M, K, d, (const float *)workspace,
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
