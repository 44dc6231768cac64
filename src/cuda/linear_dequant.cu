// Large-M linear (W4A16): expand the block-scaled weight once to BF16 in a workspace, then
// one cuBLAS BF16 GEMM with fp32 accumulation. At M = 4096 the GEMM is compute-bound and the
// expansion (one read of the packed weight, one write of 2 bytes per element) costs a few
// percent of it, so this reaches 0.84-0.97x cuBLAS's BF16 speed while the weight stays packed
// in memory between calls; from M = 128 (DSV4_CUDA_LINEAR_DEQUANT_MIN_M) it still beats the
// prefill kernels, whose grids are small there. The expansion is exact (the same math as
// the decode kernel, linear_expand.cuh): e2m1 · e4m3 · 2^-9 in BF16; the 2^9, the global and
// the input scale go into cuBLAS's alpha. FP8 with fp32 block scales is not exact in BF16,
// so it never takes this path (linear.cu checks).
#include <cublas_v2.h>

#include "cuda/context.h" /* dsv4_cublas_check */
#include "cuda/linear_expand.cuh"

#define EXPAND_THREADS 256

// One thread per 16-byte payload chunk (32 fp4 or 16 fp8 elements of one row).
template <int FMT>
__global__ void __launch_bounds__(EXPAND_THREADS) linear_expand_bf16(const LinearParams p, __nv_bfloat16 *wbf) {
    constexpr int kElems = FMT == LIN_FP8 ? 16 : 32;
    const int64_t chunks_per_row = p.K / kElems, total = p.N * chunks_per_row;
    for (int64_t c = (int64_t)blockIdx.x * EXPAND_THREADS + threadIdx.x; c < total; c += (int64_t)gridDim.x * EXPAND_THREADS) {
        const int64_t n = c / chunks_per_row, k = (c % chunks_per_row) * kElems;
        uint32_t nat[kElems / 2];
        if constexpr (FMT == LIN_FP8) {
            const uint4 q = __ldg(reinterpret_cast<const uint4 *>(p.w + n * p.K + k));
            const uint32_t words[4] = {q.x, q.y, q.z, q.w};
            const uint32_t blk = ue8m0_c(__ldg(p.w_scale + (n / 128) * ((p.K + 127) / 128) + k / 128));
#pragma unroll
            for (int w = 0; w < 4; w++) {
                uint32_t pr[2];
                e4m3x4_pairs(words[w], BF16X2_2P111, pr); // (0, 2), (1, 3)
                nat[2 * w + 0] = bf16x2_mul(__byte_perm(pr[0], pr[1], 0x5410), blk);
                nat[2 * w + 1] = bf16x2_mul(__byte_perm(pr[0], pr[1], 0x7632), blk);
            }
        } else {
            const uint4 q = __ldg(reinterpret_cast<const uint4 *>(p.w + n * (p.K / 2) + k / 2));
            const uint32_t s = FMT == LIN_NVFP4
                                   ? __ldg(reinterpret_cast<const uint16_t *>(p.w_scale + n * (p.K / 16) + k / 16))
                                   : __ldg(p.w_scale + n * (p.K / 32) + k / 32);
            fp4_chunk32_bf16<FMT>(q, s, nat);
        }
        uint4 *dst = reinterpret_cast<uint4 *>(wbf + n * p.K + k);
#pragma unroll
        for (int v = 0; v < kElems / 8; v++) dst[v] = make_uint4(nat[4 * v], nat[4 * v + 1], nat[4 * v + 2], nat[4 * v + 3]);
    }
}

dsv4_status linear_dequant_gemm_launch(int fmt, const LinearParams &p, void *workspace, cublasHandle_t cublas,
                                       cudaStream_t s) {
    __nv_bfloat16 *wbf = static_cast<__nv_bfloat16 *>(workspace);
    const int64_t total = p.N * p.K / (fmt == LIN_FP8 ? 16 : 32);
    int64_t blocks = (total + EXPAND_THREADS - 1) / EXPAND_THREADS;
    if (blocks > 132 * 16) blocks = 132 * 16;
    switch (fmt) {
    case LIN_NVFP4: linear_expand_bf16<LIN_NVFP4><<<(unsigned)blocks, EXPAND_THREADS, 0, s>>>(p, wbf); break;
    case LIN_MXFP4: linear_expand_bf16<LIN_MXFP4><<<(unsigned)blocks, EXPAND_THREADS, 0, s>>>(p, wbf); break;
    case LIN_FP8: linear_expand_bf16<LIN_FP8><<<(unsigned)blocks, EXPAND_THREADS, 0, s>>>(p, wbf); break;
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear dequant: unknown format %d", fmt);
    }
    DSV4_CUDA_LAUNCHED("linear_expand_bf16 launch");
    // y[M, N] = x[M, K] · Wᵀ; column-major view: C[N, M] = op_T(W as K x N) · (x as K x M)
    const float alpha = p.out_scale * (fmt == LIN_MXFP4 ? 1.0f : 512.0f), beta = 0.0f;
    DSV4_TRY(dsv4_cublas_check(cublasSetStream(cublas, s), "linear dequant: cublasSetStream"));
    return dsv4_cublas_check(cublasGemmEx(cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)p.N, (int)p.M, (int)p.K, &alpha, wbf,
                                          CUDA_R_16BF, (int)p.K, p.x, CUDA_R_16BF, (int)p.K, &beta, p.y,
                                          p.out_bf16 ? CUDA_R_16BF : CUDA_R_32F, (int)p.N, CUBLAS_COMPUTE_32F,
                                          CUBLAS_GEMM_DEFAULT),
                             "linear dequant: cublasGemmEx");
}
