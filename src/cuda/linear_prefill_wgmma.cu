// Prefill-regime fp4 linear on Hopper (sm_90a): warpgroup MMA (wgmma) with the weight as the
// M operand, NVFP4 and MXFP4 weights, BF16 (W4A16) or NVFP4 (W4A4) activations, dense and
// grouped (MoE).
//
// Orientation ("swap AB"). The CTA computes yᵀ for WGMMA_BM weight rows (output features) ×
// BNT tokens: D[feature, token] = Σ_k W[feature, k] · x[token, k]. The weight is the wgmma
// A operand (M = 64 per instruction), the tokens are its N (BNT = 32, 64 or 128: wgmma
// takes N in steps of 8), so a grouped tile is as wide as an expert's tokens need and no
// wider. Both operands are K-major BF16 in shared memory (no swizzle, wgmma.cuh).
//
// Warp specialisation. Warpgroup 0 produces: per slab of WGMMA_BK k it loads the raw fp4
// weight (kPrefetch - 1 slabs ahead, in registers), expands it exactly to BF16
// (fp4_chunk32_bf16: e2m1 · block scale [· 2^-9]) into the A buffer of a ring stage, and copies
// the activation slab into the B buffer by cp.async (W4A4: loads and expands the NVFP4 x). Warpgroups 1 and 2 consume: each owns 128 features of
// the tile as two m64 wgmma per k16 step (acc[2][BNT / 2] fp32 per thread). The stages of
// the ring are handed over with mbarriers:
//   full[s]  (128 producer arrivals) the stage's A and B are written and visible to wgmma. A
//            producer thread arrives for slab kt after its cp.async group of kt has landed,
//            which it checks one slab later (cp.async.wait_group 1), then fence.proxy.async.
//   empty[s] (8 consumer-warp arrivals) the wgmma that read the stage have completed: a
//            consumer releases slab kt-1 after wgmma.wait_group 1 in iteration kt.
// So the expansion and the loads run up to WGMMA_STAGES - 1 slabs ahead of the tensor cores.
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

#include "cuda/cp_async.cuh"
#include "cuda/linear_expand.cuh"
#include "cuda/linear_grouped.cuh"
#include "cuda/linear_internal.cuh"
#include "cuda/wgmma.cuh"

#define WGMMA_BM 256        // weight rows per CTA: 2 consumer warpgroups × 2 × m64
#define WGMMA_BK 64         // k per slab
#define WGMMA_THREADS 384   // producer warpgroup + 2 consumer warpgroups
#define WGMMA_STAGES 4      // ring depth (A and B of one slab per stage)

// Raw weight slabs in the producer's registers (W4A4: 2, its x pointers need the room)
template <int ACT>
struct Prefetch {
    static constexpr int kSlabs = ACT == LIN_ACT_NVFP4 ? 2 : 3;
};
// Registers per thread: what the launch allocates (__launch_bounds__(384, 1): 64 K / 384,
// rounded down to 8), then moved by setmaxnreg from the producer to the consumers. The
// increase draws on the registers the decrease released: a total above the launch's would
// make the consumers wait forever, so init checks the launch value (cudaFuncGetAttributes).
static constexpr int kLaunchRegs = 168, kProducerRegs = 136, kConsumerRegs = 184;
static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= WGMMA_THREADS * kLaunchRegs, "register pool");

template <int BNT>
struct WgShape {
    static constexpr int kAStage = WGMMA_BM * WGMMA_BK * 2;   // 32 KB
    static constexpr int kBPlane = BNT * 16 + 64;             // bytes between k chunks
    static constexpr int kBStage = (WGMMA_BK / 8) * kBPlane;
    static constexpr int kStage = kAStage + (kBStage + 127) / 128 * 128;
    static constexpr int kSmem = WGMMA_STAGES * kStage + 2 * WGMMA_STAGES * 8; // + full/empty barriers
    static constexpr int kBChunks = BNT * (WGMMA_BK / 8) / 128; // 16-byte x chunks per producer thread
    static constexpr int kXRows = BNT > 64 ? BNT / 64 : 1;      // distinct tokens among them
    static constexpr int kUnits = WGMMA_BM * (WGMMA_BK / 32) / 128; // 32-element weight units per producer thread
    static_assert(BNT % 32 == 0 && BNT <= 128, "token tile: 32, 64 or 128");
    static_assert(kUnits == 4 && kBChunks >= 2, "even split");
};

// 16 bytes read once: not kept in L1 (which then holds the block scales, read by 8 slabs per
// 32-byte sector)
__device__ __forceinline__ uint4 ldg_stream16(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// Raw weight unit of a slab: 32 elements (16 bytes) of one feature row.
struct WUnit {
    uint4 q;
    uint32_t s; // NVFP4: 2 e4m3 scales; MXFP4: 1 ue8m0
};

// Warpgroup 0: loads, expands and hands over every slab of the CTA's K loop.
template <int FMT, int ACT, int BNT, bool GROUPED>
__device__ __forceinline__ void wgmma_producer(const LinearParams &p, int64_t n0, int64_t m0, int64_t m_end,
                                               unsigned char *smem, uint32_t bars, int nk) {
    using S = WgShape<BNT>;
    const int tid = threadIdx.x; // 0..127
    // x chunks q = tid + 128·j: token (q/2) % BNT, chunk 2·(q / (2·BNT)) + q%2; token
    // (tid/2 + 64·j) % BNT is one of kXRows rows, chunk c(j) = 2·((tid + 128·j) / (2·BNT)) + tid%2
    const __nv_bfloat16 *xsrc[S::kXRows]; // NULL: zero-fill (padding or past M)
#pragma unroll
    for (int i = 0; i < S::kXRows; i++) {
        const int64_t m = m0 + (tid / 2 + 64 * i) % BNT;
        const int64_t xr = m >= m_end ? -1 : GROUPED && p.grp.row_token ? p.grp.row_token[m] : m;
        xsrc[i] = xr >= 0 && ACT == LIN_ACT_BF16 ? p.x + xr * p.K : nullptr;
    }
    // W4A4: x units j (32 NVFP4 elements) u = tid + 128·j < 2·BNT: token u % BNT, k half
    // u / BNT; consecutive threads take consecutive tokens (one 128-byte run per B chunk)
    constexpr int kXU = ACT == LIN_ACT_NVFP4 ? (2 * BNT + 127) / 128 : 1;
    const uint8_t *xq[kXU], *xs[kXU]; // NULL: zeros
#pragma unroll
    for (int j = 0; j < kXU; j++) {
        const int u = tid + 128 * j, h = u / BNT;
        const int64_t m = m0 + u % BNT;
        const int64_t xr = u >= 2 * BNT || m >= m_end ? -1 : GROUPED && p.grp.row_token ? p.grp.row_token[m] : m;
        xq[j] = xr >= 0 && ACT == LIN_ACT_NVFP4 ? p.xq + xr * (p.K / 2) + 16 * h : nullptr;
        xs[j] = xr >= 0 && ACT == LIN_ACT_NVFP4 ? p.xq_scale + xr * (p.K / 16) + 2 * h : nullptr;
    }
    // weight units j: feature row wr0 + 64·j, k half wh; A offset adst0 + 8 KB·j
    const int wr0 = (tid / 32) * 16 + tid % 16, wh = (tid % 32) / 16;
    const uint32_t adst0 = (uint32_t)((wr0 / 8) * 1024 + (4 * wh) * 128 + (wr0 % 8) * 16);
    constexpr int kSB = FMT == LIN_NVFP4 ? 16 : 32; // elements per scale byte
    const uint8_t *wq0 = p.w + (n0 + wr0) * (p.K / 2) + wh * 16;
    const uint8_t *ws0 = p.w_scale + (n0 + wr0) * (p.K / kSB) + wh * (32 / kSB);
    const int64_t wq_step = 64 * (p.K / 2), ws_step = 64 * (p.K / kSB);

    constexpr int kPrefetch = Prefetch<ACT>::kSlabs;
    // the raw weight of slab kt sits in raw[kt % kPrefetch], loaded kPrefetch - 1 slabs ahead:
    // under a busy L2 a load takes longer than a slab's MMAs
    WUnit raw[kPrefetch][S::kUnits];
    auto load_w = [&](int kt, WUnit(&r)[S::kUnits]) {
#pragma unroll
        for (int j = 0; j < S::kUnits; j++) {
            r[j].q = make_uint4(0, 0, 0, 0);
            r[j].s = 0;
            if (kt < nk && n0 + wr0 + 64 * j < p.N) { // rows past N expand to zeros
                r[j].q = ldg_stream16(wq0 + j * wq_step + kt * (WGMMA_BK / 2));
                const uint8_t *sp = ws0 + j * ws_step + kt * (WGMMA_BK / kSB);
                r[j].s = FMT == LIN_NVFP4 ? __ldg(reinterpret_cast<const uint16_t *>(sp)) : __ldg(sp);
            }
        }
    };
    auto step = [&](int kt, WUnit(&r)[S::kUnits]) {
        const int st = kt % WGMMA_STAGES;
        mbar_wait(bars + 8 * (WGMMA_STAGES + st), ((kt / WGMMA_STAGES) & 1) ^ 1); // empty[st]
        unsigned char *a = smem + st * S::kStage;
        const uint32_t b = smem_u32(a + S::kAStage);
        const int64_t k0 = (int64_t)kt * WGMMA_BK;
        if (ACT == LIN_ACT_BF16) {
#pragma unroll
            for (int j = 0; j < S::kBChunks; j++) {
                const int n = (tid / 2 + 64 * j) % BNT, c = 2 * ((tid + 128 * j) / (2 * BNT)) + tid % 2;
                const __nv_bfloat16 *src = xsrc[S::kXRows > 1 ? j % S::kXRows : 0];
                cp_async16(b + c * S::kBPlane + n * 16, src ? src + k0 + c * 8 : p.x, src ? 16 : 0);
            }
        } else { // expand the NVFP4 x slab (loaded here: it is small next to the weight)
#pragma unroll
            for (int j = 0; j < kXU; j++) {
                const int u = tid + 128 * j;
                if (u >= 2 * BNT) continue;
                uint32_t nat[16];
                uint4 q = make_uint4(0, 0, 0, 0);
                uint32_t s2 = 0;
                if (xq[j]) {
                    q = __ldg(reinterpret_cast<const uint4 *>(xq[j] + k0 / 2));
                    s2 = __ldg(reinterpret_cast<const uint16_t *>(xs[j] + k0 / 16));
                }
                nvfp4_act_chunk32_bf16(q, s2, nat);
                unsigned char *bp = a + S::kAStage + (u / BNT) * 4 * S::kBPlane + (u % BNT) * 16;
#pragma unroll
                for (int v = 0; v < 4; v++)
                    *reinterpret_cast<uint4 *>(bp + v * S::kBPlane) =
                        make_uint4(nat[4 * v], nat[4 * v + 1], nat[4 * v + 2], nat[4 * v + 3]);
            }
        }
        cp_async_commit(); // (empty for W4A4: keeps the group count uniform)
#pragma unroll
        for (int j = 0; j < S::kUnits; j++) {
            uint32_t nat[16];
            fp4_chunk32_bf16<FMT>(r[j].q, r[j].s, nat);
#pragma unroll
            for (int v = 0; v < 4; v++)
                *reinterpret_cast<uint4 *>(a + adst0 + j * 8192 + v * 128) =
                    make_uint4(nat[4 * v], nat[4 * v + 1], nat[4 * v + 2], nat[4 * v + 3]);
        }
        load_w(kt + kPrefetch, r); // the slot is free again
        // hand over slab kt-1: its x chunks have landed (all but the newest group)
        if (kt > 0) {
            cp_async_wait<1>();
            fence_proxy_async_smem();
            mbar_arrive(bars + 8 * ((kt - 1) % WGMMA_STAGES)); // full
        }
    };

#pragma unroll
    for (int d = 0; d < kPrefetch; d++) load_w(d, raw[d]);
    for (int kt0 = 0; kt0 < nk; kt0 += kPrefetch)
#pragma unroll
        for (int d = 0; d < kPrefetch; d++)
            if (kt0 + d < nk) step(kt0 + d, raw[d]);
    cp_async_wait<0>();
    fence_proxy_async_smem();
    mbar_arrive(bars + 8 * ((nk - 1) % WGMMA_STAGES));
}

// Warpgroups 1 and 2: warpgroup c owns features 128·c .. 128·c + 127 of the tile; MMAs over
// the ring, then the epilogue.
template <int FMT, int ACT, int BNT, bool GROUPED>
__device__ __forceinline__ void wgmma_consumer(const LinearParams &p, int64_t n0, int64_t m0, int64_t m_end,
                                               float factor, unsigned char *smem, uint32_t bars, int nk, int c) {
    using S = WgShape<BNT>;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float acc[2][BNT / 2];
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int i = 0; i < BNT / 2; i++) acc[s][i] = 0.0f;
    for (int kt = 0; kt < nk; kt++) {
        const int st = kt % WGMMA_STAGES;
        mbar_wait(bars + 8 * st, (kt / WGMMA_STAGES) & 1); // full[st]
        const uint32_t a_base = smem_u32(smem + st * S::kStage) + c * 16 * 1024;
        const uint32_t b_base = smem_u32(smem + st * S::kStage + S::kAStage);
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
        wgmma_wait<1>(); // slab kt-1's MMAs are done: release its stage
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int i = 0; i < BNT / 2; i++) wgmma_fence_operand(acc[s][i]);
        if (kt > 0 && lane == 0) mbar_arrive(bars + 8 * (WGMMA_STAGES + (kt - 1) % WGMMA_STAGES));
    }
    wgmma_wait<0>();
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int i = 0; i < BNT / 2; i++) wgmma_fence_operand(acc[s][i]);

    // epilogue: acc[s][4j + e] is feature 128·c + 64·s + 16·(warp%4) + g (+8 for e >= 2),
    // token column 8j + 2t (+1 for odd e)
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int s = 0; s < 2; s++) {
        const int64_t f = n0 + 128 * c + 64 * s + 16 * (warp % 4) + g;
#pragma unroll
        for (int j = 0; j < BNT / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t m = m0 + 8 * j + 2 * t + (e & 1), n = f + (e >= 2 ? 8 : 0);
                if (m >= m_end || n >= p.N) continue;
                float fm = factor; // W4A4 per-token scales: of the x row
                if (ACT == LIN_ACT_NVFP4 && p.token_scales)
                    fm *= p.token_scales[GROUPED && p.grp.row_token ? p.grp.row_token[m] : m];
                linear_store(p, m, n, acc[s][4 * j + e] * fm);
            }
    }
}

template <int FMT, int ACT, int BNT, bool GROUPED>
__global__ void __launch_bounds__(WGMMA_THREADS, 1)
    linear_prefill_wgmma(const LinearParams p0, const int32_t *tile_expert) {
#if DSV4_WGMMA
    using S = WgShape<BNT>;
    extern __shared__ __align__(128) unsigned char wg_smem[];
    const uint32_t bars = smem_u32(wg_smem + WGMMA_STAGES * S::kStage); // full[STAGES], empty[STAGES]

    const int wg = threadIdx.x / 128;
    const int64_t n0 = (int64_t)blockIdx.x * WGMMA_BM, m0 = (int64_t)blockIdx.y * BNT;
    LinearParams p = p0;
    int64_t m_end = p.M;
    // the expansions' 2^-9 (NVFP4 weights; NVFP4 activations)
    float factor = p.out_scale * (FMT == LIN_NVFP4 ? 512.0f : 1.0f) * (ACT == LIN_ACT_NVFP4 ? 512.0f : 1.0f);
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
    if (threadIdx.x == 0) {
        for (int s = 0; s < WGMMA_STAGES; s++) {
            mbar_init(bars + 8 * s, 128);                // full: every producer thread
            mbar_init(bars + 8 * (WGMMA_STAGES + s), 8); // empty: every consumer warp
        }
    }
    __syncthreads();

    // one if/else, so that setmaxnreg applies (kLaunchRegs above)
    if (wg == 0) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
        wgmma_producer<FMT, ACT, BNT, GROUPED>(p, n0, m0, m_end, wg_smem, bars, nk);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
        wgmma_consumer<FMT, ACT, BNT, GROUPED>(p, n0, m0, m_end, factor, wg_smem, bars, nk, wg - 1);
    }
#else
    (void)p0;
    (void)tile_expert;
#endif
}

// ---- host side ----

static int force_mma = 0;
static int wgmma_ok = -1; // built for sm_90a and running on an sm_90 device (linear_prefill_wgmma_init)

template <int FMT, int ACT, int BNT, bool GROUPED>
static dsv4_status set_smem(void) {
    // any failure here only turns the kernel off: prefill then runs on mma.sync
    auto k = linear_prefill_wgmma<FMT, ACT, BNT, GROUPED>;
    cudaFuncAttributes fa;
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, WgShape<BNT>::kSmem) != cudaSuccess ||
        cudaFuncGetAttributes(&fa, k) != cudaSuccess) {
        (void)cudaGetLastError(); // not sticky: clear it
        wgmma_ok = 0;
    } else if (fa.numRegs != kLaunchRegs) { // the setmaxnreg split would not match the pool
        wgmma_ok = 0;
    }
    return DSV4_OK;
}

// Dense: both fp4 formats; grouped (MoE experts are NVFP4 on the device): every token tile
template <int ACT>
static dsv4_status init_act(void) {
    DSV4_TRY((set_smem<LIN_NVFP4, ACT, 128, false>()));
    DSV4_TRY((set_smem<LIN_MXFP4, ACT, 128, false>()));
    DSV4_TRY((set_smem<LIN_NVFP4, ACT, 32, true>()));
    DSV4_TRY((set_smem<LIN_NVFP4, ACT, 64, true>()));
    return set_smem<LIN_NVFP4, ACT, 128, true>();
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
    DSV4_TRY(init_act<LIN_ACT_BF16>());
    return init_act<LIN_ACT_NVFP4>(); // may clear wgmma_ok (register check)
}

extern "C" void dsv4_cuda_linear_prefill_force_mma(int on) { force_mma = on != 0; }

bool linear_prefill_wgmma_takes(int fmt, int act, int64_t K) {
    return wgmma_ok == 1 && !force_mma && (fmt == LIN_NVFP4 || fmt == LIN_MXFP4) && K >= WGMMA_BK && K % WGMMA_BK == 0;
}

template <int FMT, int ACT, int BNT, bool GROUPED>
static dsv4_status launch(const LinearParams &p, const int32_t *tile_expert, int64_t m_tiles, cudaStream_t s) {
    const dim3 grid((unsigned)((p.N + WGMMA_BM - 1) / WGMMA_BM), (unsigned)m_tiles);
    linear_prefill_wgmma<FMT, ACT, BNT, GROUPED><<<grid, WGMMA_THREADS, WgShape<BNT>::kSmem, s>>>(p, tile_expert);
    DSV4_CUDA_LAUNCHED(GROUPED ? "linear_prefill_wgmma grouped launch" : "linear_prefill_wgmma launch");
    return DSV4_OK;
}

dsv4_status linear_prefill_wgmma_launch(int fmt, int act, const LinearParams &p, cudaStream_t s) {
    const int64_t tiles = (p.M + 127) / 128;
    if (tiles > 65535) return dsv4_fail(DSV4_ERR_SHAPE, "linear_prefill_wgmma: M = %lld is too large", (long long)p.M);
    if (act == LIN_ACT_NVFP4)
        return fmt == LIN_NVFP4 ? launch<LIN_NVFP4, LIN_ACT_NVFP4, 128, false>(p, nullptr, tiles, s)
                                : launch<LIN_MXFP4, LIN_ACT_NVFP4, 128, false>(p, nullptr, tiles, s);
    return fmt == LIN_NVFP4 ? launch<LIN_NVFP4, LIN_ACT_BF16, 128, false>(p, nullptr, tiles, s)
                            : launch<LIN_MXFP4, LIN_ACT_BF16, 128, false>(p, nullptr, tiles, s);
}

template <int ACT>
static dsv4_status launch_grouped_act(int tile, const LinearParams &p, const int32_t *tile_expert, int64_t n_tiles,
                                      cudaStream_t s) {
    switch (tile) {
    case 32: return launch<LIN_NVFP4, ACT, 32, true>(p, tile_expert, n_tiles, s);
    case 64: return launch<LIN_NVFP4, ACT, 64, true>(p, tile_expert, n_tiles, s);
    case 128: return launch<LIN_NVFP4, ACT, 128, true>(p, tile_expert, n_tiles, s);
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear_prefill_wgmma grouped: token tile %d", tile);
    }
}

dsv4_status linear_prefill_wgmma_grouped_launch(int fmt, int act, int tile, const LinearParams &p,
                                                const int32_t *tile_expert, int64_t n_tiles, cudaStream_t s) {
    if (fmt != LIN_NVFP4) return dsv4_fail(DSV4_ERR_UNSUPPORTED, "linear_prefill_wgmma grouped: NVFP4 experts only");
    if (n_tiles < 1) return DSV4_OK;
    if (n_tiles > 65535)
        return dsv4_fail(DSV4_ERR_SHAPE, "linear_prefill_wgmma grouped: %lld token tiles (at most 65535)", (long long)n_tiles);
    return act == LIN_ACT_NVFP4 ? launch_grouped_act<LIN_ACT_NVFP4>(tile, p, tile_expert, n_tiles, s)
                                : launch_grouped_act<LIN_ACT_BF16>(tile, p, tile_expert, n_tiles, s);
}
