// Prefill-regime linear (M >= 128, works for any M): BF16 tensor-core MMA
// (mma.sync m16n8k16 row.col, fp32 accumulate; sm_80+, so it runs on sm_90a and sm_100a).
//
// Tiles. A CTA computes a BM x BN tile of y over K in slabs of BK, with WARPS_M x WARPS_N
// warps, each owning a (BM/WARPS_M) x (BN/WARPS_N) sub-tile = MI x NI mma tiles.
//   As[2][BM][BK+PAD]  x slab, BF16, double-buffered (cp.async for BF16 activations)
//   Bs[BN][BK+PAD]     weight slab expanded to BF16
// PAD = 8 BF16 (16 bytes) shifts each row by 4 banks, so ldmatrix's 8 row addresses hit
// 8 distinct 4-bank groups.
//
// Pipeline per slab kt (two barriers, simple and obviously ordered):
//   expand the raw weight slab kt (held in registers) into Bs [W4A4: the raw x slab into As]
//   issue the loads of slab kt+1: cp.async of x into the other As buffer, raw weight bytes
//     (and raw fp4 x for W4A4) into registers -- they fly while slab kt is multiplied
//   wait for the cp.async group of slab kt; __syncthreads
//   MMAs over the slab; __syncthreads (Bs and As[kt%2] may now be overwritten)
//
// Expansion math. NVFP4: e2m1 · e4m3 is exact in BF16 (<= 6 significant bits), the global
// scale is applied to the fp32 sum. MXFP4: e2m1 · 2^e is exact too. FP8 block-128: the block
// scale (fp32 or ue8m0) is not folded into the BF16 value (an fp32 scale would round);
// instead the MMA sums of each 128-wide K block accumulate in `part` and are added to `acc`
// times that block's scale (the n tile lies inside one 128-row scale block: 128 % BN == 0).
//
// On Hopper the wgmma kernel (linear_prefill_wgmma.cu) takes fp4 weights with K % 64 == 0;
// this one runs everything else (FP8, K % 64 != 0, other architectures, forced mma).
//
// Grouped mode (MoE, GROUPED = true; linear_grouped.cuh): the M dimension is the row layout of
// cpu/moe_route.h with tile = PREFILL_BM. M tile i belongs to expert e = tile_expert[i] (-1:
// the CTA exits at once); it uses that expert's weight (p.w + e·w_stride, scales
// + e·s_stride) and factor out_scale · group_scale[e]; its rows past offsets[e] + counts[e]
// are padding (zero A rows, not stored); A row r reads x row row_token[r] (gather, L1) or r
// (L2). Everything routing-dependent is read on the device, so the launch is graph-safe.
#include "cuda/cp_async.cuh"
#include "cuda/linear_grouped.cuh"
#include "cuda/linear_expand.cuh"
#include "cuda/linear_internal.cuh"

#define PREFILL_BM 128
#define PREFILL_BN 128
#define PREFILL_BK 64
#define PREFILL_WARPS_M 2
#define PREFILL_WARPS_N 4
#define PREFILL_PAD 8
// 2 would halve the register budget to 128: measured 28-36 bytes of spills with ptxas (CUDA 13.0)
#define PREFILL_MIN_CTAS_PER_SM 1

template <int BM, int BN, int BK, int WARPS_M, int WARPS_N>
struct PrefillShape {
    static constexpr int kThreads = WARPS_M * WARPS_N * 32;
    static constexpr int kLd = BK + PREFILL_PAD; // BF16 per smem row
    static constexpr int kWM = BM / WARPS_M, kWN = BN / WARPS_N;
    static constexpr int kMI = kWM / 16, kNI = kWN / 8;
    // raw fp4 slab: 16-element blocks (8 payload bytes + 1 scale byte each)
    static constexpr int kBBlocks = BN * BK / 16, kABlocks = BM * BK / 16;
    static constexpr int kBBlocksPerThread = kBBlocks / kThreads, kABlocksPerThread = kABlocks / kThreads;
    // BF16 x slab in 16-byte chunks (8 elements)
    static constexpr int kAChunksPerThread = BM * BK / 8 / kThreads;
    static constexpr size_t kSmemBytes = (size_t)(2 * BM + BN) * kLd * sizeof(__nv_bfloat16);
    static_assert(BK % 16 == 0 && kNI % 2 == 0, "k16 steps; B fragments are loaded two n-tiles at a time");
    static_assert(kBBlocks % kThreads == 0 && kABlocks % kThreads == 0 && (BM * BK / 8) % kThreads == 0, "even split");
    static_assert(128 % BN == 0, "FP8: an n tile lies inside one 128-row scale block");
    static_assert(128 % BK == 0, "FP8 promotion at slab boundaries");
};
using PS = PrefillShape<PREFILL_BM, PREFILL_BN, PREFILL_BK, PREFILL_WARPS_M, PREFILL_WARPS_N>;

__device__ __forceinline__ void ldmatrix_x4(uint32_t r[4], const void *p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(smem_u32(p))
                 : "memory"); // ordered after the stores that expanded the tile
}

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi); // exact here: the values are representable
    return *reinterpret_cast<const uint32_t *>(&v);
}

// One raw 16-element block of a slab: payload (8 bytes of fp4 or 16 bytes of fp8) + scale.
struct RawBlock {
    uint4 q;     // fp4 uses .x, .y
    float scale; // value to fold into the BF16 element (1 for FP8: scaled on the accumulator)
};

// Raw weight block `blk` of slab k0: row n0 + blk / (BK/16), k = k0 + (blk % (BK/16)) · 16.
template <int FMT>
__device__ __forceinline__ RawBlock load_weight_block(const LinearParams &p, int64_t n0, int64_t k0, int blk) {
    constexpr int kPerRow = PREFILL_BK / 16;
    const int64_t n = n0 + blk / kPerRow, k = k0 + (blk % kPerRow) * 16;
    RawBlock r;
    r.q = make_uint4(0, 0, 0, 0);
    r.scale = 0.0f;
    if (n >= p.N || k >= p.K) return r; // K % 16 == 0: a block is all in or all out
    if (FMT == LIN_FP8) {
        r.q = __ldg(reinterpret_cast<const uint4 *>(p.w + n * p.K + k));
        r.scale = 1.0f;
    } else {
        const uint2 v = __ldg(reinterpret_cast<const uint2 *>(p.w + n * (p.K / 2) + k / 2));
        r.q.x = v.x;
        r.q.y = v.y;
        r.scale = FMT == LIN_NVFP4 ? e4m3_to_f32(__ldg(p.w_scale + n * (p.K / 16) + k / 16))
                                   : ue8m0_to_f32(__ldg(p.w_scale + n * (p.K / 32) + k / 32));
    }
    return r;
}

// Raw NVFP4 activation block (W4A4) of x row xr (< 0: a row past M or padding -> zeros);
// the k position is that of block `blk` of the slab.
__device__ __forceinline__ RawBlock load_act_block(const LinearParams &p, int64_t m, int64_t k0, int blk) {
    constexpr int kPerRow = PREFILL_BK / 16;
    const int64_t k = k0 + (blk % kPerRow) * 16;
    RawBlock r;
    r.q = make_uint4(0, 0, 0, 0);
    r.scale = 0.0f;
    if (m < 0 || k >= p.K) return r;
    const uint2 v = __ldg(reinterpret_cast<const uint2 *>(p.xq + m * (p.K / 2) + k / 2));
    r.q.x = v.x;
    r.q.y = v.y;
    r.scale = e4m3_to_f32(__ldg(p.xq_scale + m * (p.K / 16) + k / 16));
    return r;
}

// Writes the 16 BF16 values of a raw block to dst (16-byte aligned, 32 bytes). DEV: fp4 words
// in the weight device layout (fp4_layout.cuh), else nibble i = element i (activations).
template <bool FP8, bool DEV>
__device__ __forceinline__ void expand_block(const RawBlock &r, __nv_bfloat16 *dst) {
    uint32_t out[8];
    if (!FP8 && DEV) {
        const uint32_t w[2] = {r.q.x, r.q.y};
        float v[16];
#pragma unroll
        for (int j = 0; j < 2; j++) {
            uint32_t pr[4]; // pairs (i, i + 4) as exact BF16 e2m1 values
            fp4_device_pair_bits(w[j], pr);
#pragma unroll
            for (int i = 0; i < 4; i++) {
                pr[i] = bf16x2_mul(pr[i], BF16X2_2P126);
                v[8 * j + i] = __uint_as_float(pr[i] << 16);
                v[8 * j + i + 4] = __uint_as_float(pr[i] & 0xffff0000u);
            }
        }
#pragma unroll
        for (int i = 0; i < 8; i++) out[i] = pack_bf16x2(v[2 * i] * r.scale, v[2 * i + 1] * r.scale);
    } else if (FP8) {
        const uint32_t w[4] = {r.q.x, r.q.y, r.q.z, r.q.w};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t b = w[i / 2] >> (16 * (i % 2));
            out[i] = pack_bf16x2(e4m3_to_f32(b & 0xffu), e4m3_to_f32((b >> 8) & 0xffu)); // e4m3 is exact in BF16
        }
    } else {
        const uint32_t w[2] = {r.q.x, r.q.y};
#pragma unroll
        for (int i = 0; i < 8; i++) {
            const uint32_t byte = w[i / 4] >> (8 * (i % 4)); // elements 2i (low nibble), 2i+1
            out[i] = pack_bf16x2(e2m1_to_f32(byte & 15u) * r.scale, e2m1_to_f32((byte >> 4) & 15u) * r.scale);
        }
    }
    uint4 *d = reinterpret_cast<uint4 *>(dst);
    d[0] = make_uint4(out[0], out[1], out[2], out[3]);
    d[1] = make_uint4(out[4], out[5], out[6], out[7]);
}

// xr[j]: the x row of this thread's chunk j (< 0: zero-fill), see tile_x_rows.
template <int ACT>
__device__ __forceinline__ void issue_x_slab(const LinearParams &p, __nv_bfloat16 *as, const int32_t *xr, int64_t k0) {
#pragma unroll
    for (int j = 0; j < PS::kAChunksPerThread; j++) {
        const int c = threadIdx.x + j * PS::kThreads;
        const int row = c / (PREFILL_BK / 8), col = (c % (PREFILL_BK / 8)) * 8;
        const int64_t m = xr[j], k = k0 + col;
        const bool valid = m >= 0 && k < p.K; // K % 16 == 0: an 8-element chunk is all in or all out
        const __nv_bfloat16 *src = valid ? p.x + m * p.K + k : p.x;
        cp_async16(as + row * PS::kLd + col, src, valid ? 16 : 0); // zero-fill: rows past M, k past K
    }
}

// The x row that tile row `row` (0..BM-1) reads: -1 past m_end (rows past M, or an expert's
// padding rows), else row_token[m] (gather; -1 there for padding too) or m itself.
template <bool GROUPED>
__device__ __forceinline__ int32_t tile_x_row(const LinearParams &p, int64_t m0, int row, int64_t m_end) {
    const int64_t m = m0 + row;
    if (m >= m_end) return -1;
    return GROUPED && p.grp.row_token ? p.grp.row_token[m] : (int32_t)m;
}

template <int FMT, int ACT, bool GROUPED>
__global__ void __launch_bounds__(PS::kThreads, PREFILL_MIN_CTAS_PER_SM)
    linear_prefill(const LinearParams p0, const int32_t *tile_expert) {
    extern __shared__ __align__(16) unsigned char prefill_smem[];
    __nv_bfloat16 *As = reinterpret_cast<__nv_bfloat16 *>(prefill_smem); // [2][BM][kLd]
    __nv_bfloat16 *Bs = As + 2 * PREFILL_BM * PS::kLd;                      // [BN][kLd]
    constexpr bool kPromote = FMT == LIN_FP8;

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = warp / PREFILL_WARPS_N, wn = warp % PREFILL_WARPS_N;
    const int64_t m0 = (int64_t)blockIdx.y * PREFILL_BM, n0 = (int64_t)blockIdx.x * PREFILL_BN;
    // p: this CTA's view (the expert's weight in grouped mode); m_end: first row not computed
    LinearParams p = p0;
    int64_t m_end = p.M;
    float base_factor = p.out_scale;
    if (GROUPED) {
        const int e = tile_expert[blockIdx.y];
        if (e < 0) return; // a tile past the rows in use: the whole CTA exits before any barrier
        const int64_t end = (int64_t)p.grp.row_begin[e] + p.grp.row_count[e];
        m_end = end < p.M ? end : p.M;
        p.w += (int64_t)e * p.grp.w_stride;
        p.w_scale += (int64_t)e * p.grp.s_stride;
        if (p.grp.group_scale) base_factor = p.out_scale * p.grp.group_scale[e];
    }
    const int nk = (int)((p.K + PREFILL_BK - 1) / PREFILL_BK);
    // x rows of this thread's A loads, fixed for the whole K loop (chunk j of a BF16 slab is
    // tile row threadIdx.x / (BK/8) + j · kThreads / (BK/8); NVFP4 block j likewise per BK/16)
    int32_t xr[PS::kAChunksPerThread], xa[ACT == LIN_ACT_NVFP4 ? PS::kABlocksPerThread : 1];
    if (ACT == LIN_ACT_BF16) {
#pragma unroll
        for (int j = 0; j < PS::kAChunksPerThread; j++)
            xr[j] = tile_x_row<GROUPED>(p, m0, (threadIdx.x + j * PS::kThreads) / (PREFILL_BK / 8), m_end);
    } else {
#pragma unroll
        for (int j = 0; j < PS::kABlocksPerThread; j++)
            xa[j] = tile_x_row<GROUPED>(p, m0, (threadIdx.x + j * PS::kThreads) / (PREFILL_BK / 16), m_end);
    }

    float acc[PS::kMI][PS::kNI][4];
    float part[kPromote ? PS::kMI : 1][kPromote ? PS::kNI : 1][4];
#pragma unroll
    for (int i = 0; i < PS::kMI; i++)
#pragma unroll
        for (int j = 0; j < PS::kNI; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) acc[i][j][e] = 0.0f;
    if (kPromote) {
#pragma unroll
        for (int i = 0; i < PS::kMI; i++)
#pragma unroll
            for (int j = 0; j < PS::kNI; j++)
#pragma unroll
                for (int e = 0; e < 4; e++) part[kPromote ? i : 0][kPromote ? j : 0][e] = 0.0f;
    }

    RawBlock wraw[PS::kBBlocksPerThread], xraw[ACT == LIN_ACT_NVFP4 ? PS::kABlocksPerThread : 1];
    // prologue: slab 0
    if (ACT == LIN_ACT_BF16) {
        issue_x_slab<ACT>(p, As, xr, 0);
        cp_async_commit();
    } else {
#pragma unroll
        for (int j = 0; j < PS::kABlocksPerThread; j++) xraw[j] = load_act_block(p, xa[j], 0, threadIdx.x + j * PS::kThreads);
    }
#pragma unroll
    for (int j = 0; j < PS::kBBlocksPerThread; j++) wraw[j] = load_weight_block<FMT>(p, n0, 0, threadIdx.x + j * PS::kThreads);

    for (int kt = 0; kt < nk; kt++) {
        __nv_bfloat16 *as = As + (kt % 2) * PREFILL_BM * PS::kLd;
        // expand slab kt
#pragma unroll
        for (int j = 0; j < PS::kBBlocksPerThread; j++) {
            const int blk = threadIdx.x + j * PS::kThreads;
            expand_block<FMT == LIN_FP8, true>(wraw[j], Bs + (blk / (PREFILL_BK / 16)) * PS::kLd + (blk % (PREFILL_BK / 16)) * 16);
        }
        if (ACT == LIN_ACT_NVFP4) {
#pragma unroll
            for (int j = 0; j < PS::kABlocksPerThread; j++) {
                const int blk = threadIdx.x + j * PS::kThreads;
                expand_block<false, false>(xraw[j], as + (blk / (PREFILL_BK / 16)) * PS::kLd + (blk % (PREFILL_BK / 16)) * 16);
            }
        }
        // issue slab kt+1
        const bool more = kt + 1 < nk;
        if (more) {
            const int64_t k1 = (int64_t)(kt + 1) * PREFILL_BK;
            if (ACT == LIN_ACT_BF16) {
                issue_x_slab<ACT>(p, As + ((kt + 1) % 2) * PREFILL_BM * PS::kLd, xr, k1);
                cp_async_commit();
            } else {
#pragma unroll
                for (int j = 0; j < PS::kABlocksPerThread; j++)
                    xraw[j] = load_act_block(p, xa[j], k1, threadIdx.x + j * PS::kThreads);
            }
#pragma unroll
            for (int j = 0; j < PS::kBBlocksPerThread; j++)
                wraw[j] = load_weight_block<FMT>(p, n0, k1, threadIdx.x + j * PS::kThreads);
        }
        if (ACT == LIN_ACT_BF16) {
            if (more) cp_async_wait<1>();
            else cp_async_wait<0>();
        }
        __syncthreads();

#pragma unroll
        for (int ks = 0; ks < PREFILL_BK; ks += 16) {
            // B fragments of all kNI n-tiles first (2 registers each), then one m-tile of A at a
            // time (4 registers live instead of 4 · kMI)
            uint32_t bfr[PS::kNI][2];
#pragma unroll
            for (int j = 0; j < PS::kNI; j += 2) {
                // matrices: (n 0-7, k 0-7), (n 0-7, k 8-15), (n 8-15, k 0-7), (n 8-15, k 8-15)
                uint32_t r[4];
                const int n = wn * PS::kWN + j * 8 + (lane / 16) * 8 + lane % 8;
                ldmatrix_x4(r, Bs + n * PS::kLd + ks + ((lane / 8) % 2) * 8);
                bfr[j][0] = r[0];
                bfr[j][1] = r[1];
                bfr[j + 1][0] = r[2];
                bfr[j + 1][1] = r[3];
            }
#pragma unroll
            for (int i = 0; i < PS::kMI; i++) {
                // lanes 0-15: rows 0-15 at k+0; lanes 16-31: rows 0-15 at k+8 -> a0..a3
                uint32_t af[4];
                const int row = wm * PS::kWM + i * 16 + lane % 16;
                ldmatrix_x4(af, as + row * PS::kLd + ks + (lane / 16) * 8);
#pragma unroll
                for (int j = 0; j < PS::kNI; j++) {
                    if (kPromote)
                        mma_bf16_16816(part[kPromote ? i : 0][kPromote ? j : 0], af, bfr[j][0], bfr[j][1]);
                    else
                        mma_bf16_16816(acc[i][j], af, bfr[j][0], bfr[j][1]);
                }
            }
        }
        if (kPromote) {
            const int64_t k_next = (int64_t)(kt + 1) * PREFILL_BK;
            if (k_next % 128 == 0 || !more) { // end of a 128-wide K block (or of K)
                const int64_t kb = (k_next - 1) / 128;
                const int64_t si = (n0 / 128) * ((p.K + 127) / 128) + kb;
                const float s = p.w_scale_f32 ? reinterpret_cast<const float *>(p.w_scale)[si] : ue8m0_to_f32(p.w_scale[si]);
#pragma unroll
                for (int i = 0; i < PS::kMI; i++)
#pragma unroll
                    for (int j = 0; j < PS::kNI; j++)
#pragma unroll
                        for (int e = 0; e < 4; e++) {
                            float &pv = part[kPromote ? i : 0][kPromote ? j : 0][e];
                            acc[i][j][e] = fmaf(pv, s, acc[i][j][e]);
                            pv = 0.0f;
                        }
            }
        }
        __syncthreads();
    }

    // epilogue: c0,c1 at (row g, cols 2t, 2t+1); c2,c3 at (row g+8, same cols)
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < PS::kMI; i++)
#pragma unroll
        for (int h = 0; h < 2; h++) {
            const int64_t m = m0 + wm * PS::kWM + i * 16 + g + h * 8;
            if (m >= m_end) continue;
            // out_scale [· group_scale[e]] · token_scales[x row], left to right
            float f = base_factor;
            if (p.token_scales) f = f * p.token_scales[GROUPED && p.grp.row_token ? p.grp.row_token[m] : m];
#pragma unroll
            for (int j = 0; j < PS::kNI; j++) {
                const int64_t n = n0 + wn * PS::kWN + j * 8 + 2 * t;
                if (n < p.N) linear_store(p, m, n, acc[i][j][2 * h] * f);
                if (n + 1 < p.N) linear_store(p, m, n + 1, acc[i][j][2 * h + 1] * f);
            }
        }
}

template <int FMT, int ACT, bool GROUPED = false>
static dsv4_status set_smem(void) {
    return dsv4_cuda_check(cudaFuncSetAttribute(linear_prefill<FMT, ACT, GROUPED>,
                                                cudaFuncAttributeMaxDynamicSharedMemorySize, (int)PS::kSmemBytes),
                           "linear_prefill: cudaFuncSetAttribute(MaxDynamicSharedMemorySize)");
}

dsv4_status linear_prefill_init(void) {
    DSV4_TRY((set_smem<LIN_NVFP4, LIN_ACT_BF16>()));
    DSV4_TRY((set_smem<LIN_NVFP4, LIN_ACT_NVFP4>()));
    DSV4_TRY((set_smem<LIN_MXFP4, LIN_ACT_BF16>()));
    DSV4_TRY((set_smem<LIN_MXFP4, LIN_ACT_NVFP4>()));
    DSV4_TRY((set_smem<LIN_FP8, LIN_ACT_BF16>()));
    DSV4_TRY((set_smem<LIN_FP8, LIN_ACT_NVFP4>()));
    DSV4_TRY((set_smem<LIN_NVFP4, LIN_ACT_BF16, true>()));
    DSV4_TRY((set_smem<LIN_NVFP4, LIN_ACT_NVFP4, true>()));
    DSV4_TRY((set_smem<LIN_MXFP4, LIN_ACT_BF16, true>()));
    DSV4_TRY((set_smem<LIN_MXFP4, LIN_ACT_NVFP4, true>()));
    return DSV4_OK;
}

template <int FMT, int ACT>
static dsv4_status launch(const LinearParams &p, cudaStream_t s) {
    const dim3 grid((unsigned)((p.N + PREFILL_BN - 1) / PREFILL_BN), (unsigned)((p.M + PREFILL_BM - 1) / PREFILL_BM));
    linear_prefill<FMT, ACT, false><<<grid, PS::kThreads, PS::kSmemBytes, s>>>(p, nullptr);
    DSV4_CUDA_LAUNCHED("linear_prefill launch");
    return DSV4_OK;
}

template <int FMT, int ACT>
static dsv4_status launch_grouped(const LinearParams &p, const int32_t *tile_expert, int64_t n_tiles, cudaStream_t s) {
    const dim3 grid((unsigned)((p.N + PREFILL_BN - 1) / PREFILL_BN), (unsigned)n_tiles);
    linear_prefill<FMT, ACT, true><<<grid, PS::kThreads, PS::kSmemBytes, s>>>(p, tile_expert);
    DSV4_CUDA_LAUNCHED("linear_prefill grouped launch");
    return DSV4_OK;
}

int linear_prefill_group_tile(void) { return PREFILL_BM; }

dsv4_status linear_prefill_grouped_launch(int fmt, int act, const LinearParams &p, const int32_t *tile_expert,
                                          int64_t n_tiles, cudaStream_t s) {
    if (n_tiles < 1) return DSV4_OK;
    if (n_tiles > 65535)
        return dsv4_fail(DSV4_ERR_SHAPE, "linear_prefill grouped: %lld M tiles (at most 65535)", (long long)n_tiles);
    const bool a4 = act == LIN_ACT_NVFP4;
    switch (fmt) {
    case LIN_NVFP4:
        return a4 ? launch_grouped<LIN_NVFP4, LIN_ACT_NVFP4>(p, tile_expert, n_tiles, s)
                  : launch_grouped<LIN_NVFP4, LIN_ACT_BF16>(p, tile_expert, n_tiles, s);
    case LIN_MXFP4:
        return a4 ? launch_grouped<LIN_MXFP4, LIN_ACT_NVFP4>(p, tile_expert, n_tiles, s)
                  : launch_grouped<LIN_MXFP4, LIN_ACT_BF16>(p, tile_expert, n_tiles, s);
    default: return dsv4_fail(DSV4_ERR_UNSUPPORTED, "linear_prefill grouped: format %d (fp4 experts only)", fmt);
    }
}

dsv4_status linear_prefill_launch(int fmt, int act, const LinearParams &p, cudaStream_t s) {
    if (linear_prefill_wgmma_takes(fmt, act, p.K) && (act == LIN_ACT_BF16 || (uintptr_t)p.xq % 16 == 0))
        return linear_prefill_wgmma_launch(fmt, act, p, s);
    const bool a4 = act == LIN_ACT_NVFP4;
    switch (fmt) {
    case LIN_NVFP4: return a4 ? launch<LIN_NVFP4, LIN_ACT_NVFP4>(p, s) : launch<LIN_NVFP4, LIN_ACT_BF16>(p, s);
    case LIN_MXFP4: return a4 ? launch<LIN_MXFP4, LIN_ACT_NVFP4>(p, s) : launch<LIN_MXFP4, LIN_ACT_BF16>(p, s);
    case LIN_FP8: return a4 ? launch<LIN_FP8, LIN_ACT_NVFP4>(p, s) : launch<LIN_FP8, LIN_ACT_BF16>(p, s);
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear_prefill: unknown format %d", fmt);
    }
}
