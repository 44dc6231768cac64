// Prefill-regime fp4 linear on Hopper (sm_90a): warpgroup MMA (wgmma) with the weight as the
// M operand, W4A16 (BF16 activations), NVFP4 and MXFP4 weights, dense and grouped (MoE).
//
// Orientation ("swap AB"). The CTA computes yᵀ for WGMMA_BM weight rows (output features) ×
// BNT tokens: D[feature, token] = Σ_k W[feature, k] · x[token, k]. The weight is the wgmma
// A operand (M = 64 per instruction), the tokens are its N (BNT = 32, 64 or 128: wgmma
// takes N in steps of 8), so a grouped tile is as wide as an expert's tokens need and no
// wider. Both operands are K-major BF16 in shared memory (no swizzle, wgmma.cuh).
//
// Work split. Two warpgroups; warpgroup w owns features 128w .. 128w + 127 of the tile as two
// m64 instructions per k16 step (acc[2][BNT / 2] fp32 per thread). Every thread also expands:
// the fp4 weight slab (WGMMA_BM × WGMMA_BK) is loaded raw into registers one slab ahead,
// expanded exactly to BF16 (fp4_chunk32_bf16: e2m1 · block scale [· 2^-9]) and stored into the
// A stage the tensor cores read next; the activation slab goes by cp.async into a B stage.
//
// Pipeline per slab kt (one barrier):
//   issue the wgmma of slab kt on A[kt % 2], B[kt % 3]     (asynchronous: the tensor cores run)
//   expand raw slab kt+1 into A[(kt+1) % 2]                 (its last reader, kt-1, has finished)
//   cp.async x slab kt+2 into B[(kt+2) % 3]; load raw weight slab kt+2 into registers
//   wait for this warpgroup's wgmma; wait for x slab kt+1; fence.proxy.async; __syncthreads
// So the expansion of one slab overlaps the MMAs of the previous one.
//
// Shared-memory layouts (bytes; core matrix = 8 rows × 16 bytes):
//   A stage: feature r, k chunk c (8 BF16) at (r/8)·1024 + c·128 + (r%8)·16
//            -> LBO (next core matrix in K) 128, SBO (next 8 features) 1024.
//            A quarter-warp stores 8 consecutive features of one chunk: 128 contiguous bytes.
//   B stage: token n, chunk c at c·kBPlane + n·16, kBPlane = BNT·16 + 64
//            -> LBO kBPlane, SBO 128. Two neighbouring threads load chunks 2c', 2c'+1 of one
//            token (one 32-byte sector); the +64 puts them in different banks.
//
// Grouped mode (MoE) is the layout of cpu/moe_route.h with tile = BNT: token tile i belongs
// to expert tile_expert[i] (-1: the CTA exits), uses that expert's weight and factor
// out_scale · group_scale[e]; rows past offsets[e] + counts[e] are padding (zero-filled, not
// stored); x row = row_token[r] (gather) or r.
#include <stdlib.h>

#include "cuda/linear_expand.cuh"
#include "cuda/linear_grouped.cuh"
#include "cuda/linear_internal.cuh"
#include "cuda/wgmma.cuh"

#define WGMMA_BM 256      // weight rows per CTA: 2 warpgroups × 2 × m64
#define WGMMA_BK 64       // k per slab
#define WGMMA_THREADS 256 // 2 warpgroups
#define WGMMA_A_STAGES 2
#define WGMMA_B_STAGES 3

template <int BNT>
struct WgShape {
    static constexpr int kAStage = WGMMA_BM * WGMMA_BK * 2;        // 32 KB
    static constexpr int kBPlane = BNT * 16 + 64;                  // bytes between k chunks
    static constexpr int kBStage = (WGMMA_BK / 8) * kBPlane;
    static constexpr int kSmem = WGMMA_A_STAGES * kAStage + WGMMA_B_STAGES * kBStage;
    static constexpr int kBChunks = BNT * (WGMMA_BK / 8) / WGMMA_THREADS; // 16-byte x chunks per thread
    static constexpr int kUnits = WGMMA_BM * (WGMMA_BK / 32) / WGMMA_THREADS; // 32-element weight units per thread
    static_assert(BNT % 32 == 0 && BNT <= 128, "token tile: 32, 64 or 128");
    static_assert(kBChunks >= 1 && kUnits == 2, "even split");
};

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

__device__ __forceinline__ void cp_async16_zfill(uint32_t dst, const void *src, bool valid) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit_group() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait_group() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

// Raw weight unit of a slab: 32 elements (16 bytes) of one feature row. Lanes 0-15 of a warp
// take 16 rows' first k halves, lanes 16-31 their second halves.
struct WUnit {
    uint4 q;
    uint32_t s; // NVFP4: 2 e4m3 scales; MXFP4: 1 ue8m0
};

template <int FMT, int BNT, bool GROUPED>
__global__ void __launch_bounds__(WGMMA_THREADS, 1)
    linear_prefill_wgmma(const LinearParams p0, const int32_t *tile_expert) {
#if DSV4_WGMMA
    using S = WgShape<BNT>;
    extern __shared__ __align__(128) unsigned char wg_smem[];
    unsigned char *As = wg_smem;                                // [A_STAGES][kAStage]
    unsigned char *Bs = wg_smem + WGMMA_A_STAGES * S::kAStage; // [B_STAGES][kBStage]

    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, wg = warp / 4;
    const int64_t n0 = (int64_t)blockIdx.x * WGMMA_BM, m0 = (int64_t)blockIdx.y * BNT;
    LinearParams p = p0;
    int64_t m_end = p.M;
    float factor = p.out_scale * (FMT == LIN_NVFP4 ? 512.0f : 1.0f); // the expansion's 2^-9
    if (GROUPED) {
        const int e = tile_expert[blockIdx.y];
        if (e < 0) return; // past the rows in use: exits before any barrier
        const int64_t end = (int64_t)p.grp.row_begin[e] + p.grp.row_count[e];
        m_end = end < p.M ? end : p.M;
        p.w += (int64_t)e * p.grp.w_stride;
        p.w_scale += (int64_t)e * p.grp.s_stride;
        if (p.grp.group_scale) factor *= p.grp.group_scale[e];
    }
    const int nk = (int)(p.K / WGMMA_BK);

    // this thread's x chunks: one token n = (tid/2) % BNT, chunks c0 + j·(256/BNT), c0 =
    // 2·(tid / (2·BNT)) + tid%2 (chunk q = tid + 256·j: n = (q/2) % BNT, c = 2·(q/(2·BNT)) + q%2)
    const int xn = (tid / 2) % BNT, xc0 = 2 * (tid / (2 * BNT)) + tid % 2;
    const __nv_bfloat16 *xsrc = nullptr; // this token's x row at chunk c0, NULL: zero-fill
    {
        const int64_t m = m0 + xn;
        const int64_t xr = m >= m_end ? -1 : GROUPED && p.grp.row_token ? p.grp.row_token[m] : m;
        if (xr >= 0) xsrc = p.x + xr * p.K + xc0 * 8;
    }
    const uint32_t bdst0 = (uint32_t)(xc0 * S::kBPlane + xn * 16);
    // this thread's weight units j: feature row r0 + 128·j, k half h; A offset adst0 + 16 KB·j
    const int wr0 = (tid / 32) * 16 + tid % 16, wh = (tid % 32) / 16;
    const uint32_t adst0 = (uint32_t)((wr0 / 8) * 1024 + (4 * wh) * 128 + (wr0 % 8) * 16);
    const uint8_t *wq0 = p.w + (n0 + wr0) * (p.K / 2) + wh * 16;
    const uint8_t *ws0 = p.w_scale + (n0 + wr0) * (p.K / (FMT == LIN_NVFP4 ? 16 : 32)) + wh * (FMT == LIN_NVFP4 ? 2 : 1);
    const int64_t wq_row = 128 * (p.K / 2), ws_row = 128 * (p.K / (FMT == LIN_NVFP4 ? 16 : 32));

    auto issue_x = [&](int kt) {
        const uint32_t base = smem_u32(Bs + (kt % WGMMA_B_STAGES) * S::kBStage) + bdst0;
#pragma unroll
        for (int j = 0; j < S::kBChunks; j++)
            cp_async16_zfill(base + j * (256 / BNT) * S::kBPlane,
                             xsrc ? xsrc + (int64_t)kt * WGMMA_BK + j * (256 / BNT) * 8 : p.x, xsrc != nullptr);
    };
    WUnit raw[S::kUnits];
    auto load_w = [&](int kt) {
#pragma unroll
        for (int j = 0; j < S::kUnits; j++) {
            raw[j].q = make_uint4(0, 0, 0, 0);
            raw[j].s = 0;
            if (n0 + wr0 + 128 * j < p.N) { // rows past N expand to zeros
                raw[j].q = __ldg(reinterpret_cast<const uint4 *>(wq0 + j * wq_row + kt * (WGMMA_BK / 2)));
                const uint8_t *sp = ws0 + j * ws_row + kt * (WGMMA_BK / (FMT == LIN_NVFP4 ? 16 : 32));
                raw[j].s = FMT == LIN_NVFP4 ? __ldg(reinterpret_cast<const uint16_t *>(sp)) : __ldg(sp);
            }
        }
    };
    auto expand_w = [&](int kt) {
        unsigned char *a = As + (kt % WGMMA_A_STAGES) * S::kAStage + adst0;
#pragma unroll
        for (int j = 0; j < S::kUnits; j++) {
            uint32_t nat[16];
            fp4_chunk32_bf16<FMT>(raw[j].q, raw[j].s, nat);
#pragma unroll
            for (int v = 0; v < 4; v++)
                *reinterpret_cast<uint4 *>(a + j * 16 * 1024 + v * 128) =
                    make_uint4(nat[4 * v], nat[4 * v + 1], nat[4 * v + 2], nat[4 * v + 3]);
        }
    };

    float acc[2][BNT / 2];
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int i = 0; i < BNT / 2; i++) acc[s][i] = 0.0f;

    // prologue: x slabs 0 and 1 in flight, weight slab 0 expanded, raw weight slab 1 loaded
    load_w(0);
    issue_x(0);
    cp_async_commit_group();
    if (nk > 1) issue_x(1);
    cp_async_commit_group();
    expand_w(0);
    if (nk > 1) load_w(1);
    cp_async_wait_group<1>();
    fence_proxy_async_smem();
    __syncthreads();

    for (int kt = 0; kt < nk; kt++) {
        const uint32_t a_base = smem_u32(As + (kt % WGMMA_A_STAGES) * S::kAStage) + wg * 16 * 1024;
        const uint32_t b_base = smem_u32(Bs + (kt % WGMMA_B_STAGES) * S::kBStage);
        wgmma_fence();
#pragma unroll
        for (int ks = 0; ks < WGMMA_BK / 16; ks++) {
            const uint64_t db = wgmma_desc(b_base + 2 * ks * S::kBPlane, S::kBPlane, 128);
#pragma unroll
            for (int s = 0; s < 2; s++)
                wgmma_bf16_ss<BNT>(acc[s], wgmma_desc(a_base + s * 8 * 1024 + 2 * ks * 128, 128, 1024), db,
                                   kt > 0 || ks > 0);
        }
        wgmma_commit();
        if (kt + 1 < nk) expand_w(kt + 1);
        if (kt + 2 < nk) issue_x(kt + 2);
        cp_async_commit_group(); // possibly empty: keeps "all but the newest group" = slab kt+1
        if (kt + 2 < nk) load_w(kt + 2);
        wgmma_wait<0>();
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int i = 0; i < BNT / 2; i++) wgmma_fence_operand(acc[s][i]);
        cp_async_wait_group<1>();
        fence_proxy_async_smem();
        __syncthreads();
    }

    // epilogue: acc[s][4j + e] is feature 128·wg + 64·s + 16·(warp%4) + g (+8 for e >= 2),
    // token column 8j + 2t (+1 for odd e)
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int s = 0; s < 2; s++) {
        const int64_t f = n0 + 128 * wg + 64 * s + 16 * (warp % 4) + g;
#pragma unroll
        for (int j = 0; j < BNT / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t m = m0 + 8 * j + 2 * t + (e & 1), n = f + (e >= 2 ? 8 : 0);
                if (m < m_end && n < p.N) linear_store(p, m, n, acc[s][4 * j + e] * factor);
            }
    }
#else
    (void)p0;
    (void)tile_expert;
#endif
}

// ---- host side ----

static int force_mma = 0;
static int wgmma_ok = -1; // built for sm_90a and running on an sm_90 device (linear_prefill_wgmma_init)

template <int FMT, int BNT, bool GROUPED>
static dsv4_status set_smem(void) {
    return dsv4_cuda_check(cudaFuncSetAttribute(linear_prefill_wgmma<FMT, BNT, GROUPED>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, WgShape<BNT>::kSmem),
                           "linear_prefill_wgmma: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

template <int FMT>
static dsv4_status init_fmt(void) {
    DSV4_TRY((set_smem<FMT, 128, false>()));
    DSV4_TRY((set_smem<FMT, 32, true>()));
    DSV4_TRY((set_smem<FMT, 64, true>()));
    return set_smem<FMT, 128, true>();
}

dsv4_status linear_prefill_wgmma_init(void) {
    int dev = 0, major = 0;
    DSV4_CUDA_TRY(cudaGetDevice(&dev), "linear_prefill_wgmma: cudaGetDevice");
    DSV4_CUDA_TRY(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev),
                  "linear_prefill_wgmma: cudaDeviceGetAttribute");
#if defined(DSV4_CUDA_ARCH_90a) // the kernels above have bodies only in sm_90a code
    wgmma_ok = major == 9;
#else
    wgmma_ok = 0;
#endif
    const char *env = getenv("DSV4_PREFILL_MMA");
    if (env && env[0] == '1') force_mma = 1;
    if (!wgmma_ok) return DSV4_OK;
    DSV4_TRY(init_fmt<LIN_NVFP4>());
    return init_fmt<LIN_MXFP4>();
}

extern "C" void dsv4_cuda_linear_prefill_force_mma(int on) { force_mma = on != 0; }

bool linear_prefill_wgmma_takes(int fmt, int act, int64_t K) {
    return wgmma_ok == 1 && !force_mma && (fmt == LIN_NVFP4 || fmt == LIN_MXFP4) && act == LIN_ACT_BF16 &&
           K % WGMMA_BK == 0;
}

template <int FMT, int BNT, bool GROUPED>
static dsv4_status launch(const LinearParams &p, const int32_t *tile_expert, int64_t m_tiles, cudaStream_t s) {
    const dim3 grid((unsigned)((p.N + WGMMA_BM - 1) / WGMMA_BM), (unsigned)m_tiles);
    linear_prefill_wgmma<FMT, BNT, GROUPED><<<grid, WGMMA_THREADS, WgShape<BNT>::kSmem, s>>>(p, tile_expert);
    DSV4_CUDA_LAUNCHED(GROUPED ? "linear_prefill_wgmma grouped launch" : "linear_prefill_wgmma launch");
    return DSV4_OK;
}

dsv4_status linear_prefill_wgmma_launch(int fmt, const LinearParams &p, cudaStream_t s) {
    const int64_t tiles = (p.M + 127) / 128;
    if (tiles > 65535) return dsv4_fail(DSV4_ERR_SHAPE, "linear_prefill_wgmma: M = %lld is too large", (long long)p.M);
    return fmt == LIN_NVFP4 ? launch<LIN_NVFP4, 128, false>(p, nullptr, tiles, s)
                            : launch<LIN_MXFP4, 128, false>(p, nullptr, tiles, s);
}

template <int FMT>
static dsv4_status launch_grouped_fmt(int tile, const LinearParams &p, const int32_t *tile_expert, int64_t n_tiles,
                                      cudaStream_t s) {
    switch (tile) {
    case 32: return launch<FMT, 32, true>(p, tile_expert, n_tiles, s);
    case 64: return launch<FMT, 64, true>(p, tile_expert, n_tiles, s);
    case 128: return launch<FMT, 128, true>(p, tile_expert, n_tiles, s);
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear_prefill_wgmma grouped: token tile %d", tile);
    }
}

dsv4_status linear_prefill_wgmma_grouped_launch(int fmt, int tile, const LinearParams &p, const int32_t *tile_expert,
                                                int64_t n_tiles, cudaStream_t s) {
    return fmt == LIN_NVFP4 ? launch_grouped_fmt<LIN_NVFP4>(tile, p, tile_expert, n_tiles, s)
                            : launch_grouped_fmt<LIN_MXFP4>(tile, p, tile_expert, n_tiles, s);
}
