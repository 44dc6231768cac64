// Prefill-regime fp4 linear on Hopper (sm_90a): warpgroup MMA (wgmma) with the weight as the
// M operand, NVFP4 and MXFP4 weights, BF16 (W4A16) or NVFP4 (W4A4) activations, dense and
// grouped (MoE).
//
// Orientation ("swap AB"). The CTA computes yᵀ for WGMMA_BM weight rows (output features) ×
// BNT tokens: D[feature, token] = Σ_k W[feature, k] · x[token, k]. The weight is the wgmma
// A operand (M = 64 per instruction), the tokens its N (BNT = 32, 64 or 128: wgmma takes N in
// steps of 8), so a grouped tile is as wide as an expert's tokens need and no wider.
//
// The weight never exists as BF16 in shared memory. Its raw fp4 bytes and block scales are
// copied into the ring (cp.async), and each consumer thread expands the words its A fragment
// needs straight into registers (wgmma with A from registers): the shared-memory traffic per
// 64-wide slab is 9 KB of raw weight instead of 32 KB of BF16 written and 64 KB read by wgmma.
//
// The k order inside a 32-wide block. A device-layout weight word (fp4_layout.cuh) holds 8
// consecutive k and expands (e2m1x8_pairs_dev) into the BF16 pairs (i, i + 4), i = 0..3. The
// A fragment of thread t (lane 4g + t) takes pairs at fragment k (2t, 2t + 1) and
// (2t + 8, 2t + 9) of each k16 step. A dot product does not care about the order of k as long
// as both operands use the same one, so fragment k within block b (steps 2b, 2b + 1) is
// assigned to element
//     fragment k 16j + 8h + 2t + d  ->  element 8t + 2j + h + 4d    (j step, h half, d 0/1)
// i.e. thread t's fragment registers of the block are exactly the 4 pairs of word t: pair
// 2j + h of the word is the register (step j, half h). x is stored in shared memory in the
// same order: the B chunk (8 fragment k) c = 4b + 2j + h of a token holds, in word t, the
// pair (x[32b + 8t + 2j + h], x[32b + 8t + 2j + h + 4]). The producer builds those words from
// x with one byte permute each (W4A16), or they are exactly the pairs e2m1x8_pairs gives for
// an NVFP4 x word (W4A4).
//
// Warp specialisation. The first WGMMA_PRODUCER_WGS warpgroups produce: per slab of WGMMA_BK k
// they copy the raw weight rows into a ring stage (cp.async), store their block scales, and
// store the x slab in the order above into the stage's B buffer (x and scales loaded into
// registers one slab ahead; W4A16: 16-byte chunks, a warp reading 8 tokens × 64 contiguous
// bytes per instruction). The last two warpgroups consume: each owns 128 features of the tile as two m64 wgmma per k16 step (acc[2][BNT / 2]
// fp32 per thread); per 32-wide block and m64 block they read two weight words and their
// scales, expand them into the fragments of two k16 steps and issue those 2 wgmma as one
// commit group (the two m64 blocks' fragments double-buffer: one is expanded while the other's
// group runs). The stages are handed over with mbarriers:
//   full[s]  (WGMMA_PRODUCERS arrivals) the stage is written and visible: a producer thread
//            arrives for slab kt after its cp.async group of kt has landed, which it checks
//            one slab later (cp.async.wait_group 1), then fence.proxy.async (B is read by
//            wgmma, the async proxy).
//   empty[s] (8 consumer-warp arrivals) the wgmma that read the stage have completed.
//
// Shared-memory layout of a stage (bytes; the ring is 1024-aligned, a stage 25 KB at BNT = 128):
//   B      token n's 64 k (128 bytes) at n·128, its 16-byte chunk c at position c ^ (n % 8):
//          wgmma's 128-byte swizzle (wgmma_desc_sw128), which spreads both the wgmma reads and
//          the producer's stores of 8 consecutive tokens' chunk c over all banks.
//   raw    feature r, 16-byte block b at r·32 + 16·(b ^ ((r / 4) & 1)): the swap of the two
//          blocks for r % 8 >= 4 spreads a warp's word reads (rows g, word t) over 32 banks.
//   scales feature r at r·4: its 4 NVFP4 e4m3 (16-blocks of the slab) or 2 MXFP4 ue8m0.
//
// Grouped mode (MoE) is the layout of cpu/moe_route.h with tile = BNT: token tile i belongs
// to expert tile_expert[i] (-1: the CTA exits), uses that expert's weight and factor
// out_scale · group_scale[e]; rows past offsets[e] + counts[e] are padding (zero-filled, not
// stored); x row = row_token[r] (gather) or r. With p.swiglu_out (the routed L1 stack, gate and
// up rows interleaved in blocks of 8) the epilogue writes SwiGLU(h) in BF16 instead of h.
#include <stdlib.h>

#include "cuda/cp_async.cuh"
#include "cuda/linear_expand.cuh"
#include "cuda/linear_grouped.cuh"
#include "cuda/linear_internal.cuh"
#include "cuda/moe_math.cuh" // swiglu_as_cpu (the fused SwiGLU epilogue of the routed L1)
#include "cuda/wgmma.cuh"

#define WGMMA_BM 256        // weight rows per CTA: 2 consumer warpgroups × 2 × m64
#define WGMMA_BK 64         // k per slab (two 32-wide blocks)
#ifndef WGMMA_PRODUCER_WGS
#define WGMMA_PRODUCER_WGS 2 // producer warpgroups (1 or 2; overridable for experiments)
#endif
#define WGMMA_PRODUCERS (128 * WGMMA_PRODUCER_WGS)
#define WGMMA_THREADS (WGMMA_PRODUCERS + 256) // producers + 2 consumer warpgroups
#ifndef WGMMA_STAGES
#define WGMMA_STAGES 5      // ring depth (overridable for experiments: tests/gpu/prefill_experiments.sh)
#endif

// Registers per thread: what the launch allocates (__launch_bounds__(WGMMA_THREADS, 1): 64 K /
// 512 = 128 with two producer warpgroups, 64 K / 384 rounded down to 8 = 168 with one), then moved
// by setmaxnreg from the producer to the consumers. The
// increase draws on the registers the decrease released: a total above the launch's would
// make the consumers wait forever, so init checks the launch value (cudaFuncGetAttributes).
#ifndef WGMMA_PRODUCER_REGS // overridable for experiments
#define WGMMA_PRODUCER_REGS (WGMMA_PRODUCER_WGS == 1 ? 104 : 56)
#define WGMMA_CONSUMER_REGS 200
#endif
static constexpr int kLaunchRegs = WGMMA_PRODUCER_WGS == 1 ? 168 : 128;
static constexpr int kProducerRegs = WGMMA_PRODUCER_REGS, kConsumerRegs = WGMMA_CONSUMER_REGS;
static_assert(WGMMA_PRODUCERS * kProducerRegs + 256 * kConsumerRegs <= WGMMA_THREADS * kLaunchRegs, "register pool");
static_assert(WGMMA_THREADS * kLaunchRegs <= 65536, "register file");

template <int BNT>
struct WgShape {
    static constexpr int kBStage = BNT * 128;                 // x: a 128-byte swizzled row per token
    static constexpr int kRawOff = kBStage;
    static constexpr int kScaleOff = kRawOff + WGMMA_BM * 32; // after 32 raw bytes per row
    static constexpr int kStage = kScaleOff + WGMMA_BM * 4;   // a multiple of 1024: B stays atom-aligned
    // + full/empty barriers, + 1024 to align the ring (dynamic shared memory is only 16-aligned)
    static constexpr int kSmem = WGMMA_STAGES * kStage + 2 * WGMMA_STAGES * 8 + 1024;
    static constexpr int kXChunks = 8 * BNT / WGMMA_PRODUCERS; // W4A16: 16-byte x chunks per producer thread
    static constexpr int kXUnits = (2 * BNT + WGMMA_PRODUCERS - 1) / WGMMA_PRODUCERS; // W4A4: (token, block) units
    static_assert(kXChunks >= 1, "every producer thread copies x");
    static_assert(BNT == 32 || BNT == 64 || BNT == 128, "token tile: 32, 64 or 128 (wgmma_bf16_rs)");
    static_assert((4 * BNT) % WGMMA_PRODUCERS == 0 || WGMMA_PRODUCERS % (4 * BNT) == 0, "x chunk split");
    static_assert(kStage % 1024 == 0, "stage alignment");
};

// 16 bytes read once (x, by the CTAs of one token tile each through L2): not kept in L1.
__device__ __forceinline__ uint4 ldg_stream16(const void *p) {
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

// Byte offset of 16-byte chunk c (0..7) of token n's row in a 128-byte swizzled B buffer.
__device__ __forceinline__ int b_chunk_off(int n, int c) { return n * 128 + 16 * (c ^ (n & 7)); }

__device__ __forceinline__ void sts32(uint32_t addr, uint32_t v) {
    asm volatile("st.shared.u32 [%0], %1;" ::"r"(addr), "r"(v) : "memory");
}

// x row of tile token n (-1: zeros, for padding or rows past M)
template <bool GROUPED>
__device__ __forceinline__ int64_t x_row(const LinearParams &p, int64_t m0, int64_t m_end, int n) {
    const int64_t m = m0 + n;
    return m >= m_end ? -1 : GROUPED && p.grp.row_token ? p.grp.row_token[m] : m;
}

// Warpgroups 0 .. WGMMA_PRODUCER_WGS-1: copy the weight and store x for every slab of the CTA's
// K loop (P = WGMMA_PRODUCERS threads share each slab's work).
template <int FMT, int ACT, int BNT, bool GROUPED>
__device__ __forceinline__ void wgmma_producer(const LinearParams &p, int64_t n0, int64_t m0, int64_t m_end,
                                               unsigned char *smem, uint32_t bars, int nk) {
    using S = WgShape<BNT>;
    constexpr int P = WGMMA_PRODUCERS;
    const int tid = threadIdx.x; // 0 .. P-1
    // W4A16: x chunks i = tid + P·j: chunk t = i % 4 (x[8t .. 8t + 7] of the block) of token
    // n = (i / 4) % BNT, 32-block b = i / (4·BNT). A warp reads 8 tokens × 64 contiguous bytes
    // per instruction. n % 8 = (tid / 4) % 8 for every j (P / 4 is a multiple of 8); the token
    // of chunk j repeats every kXRows chunks; b is a constant of j unless P > 4·BNT.
    constexpr int kXRows = ACT == LIN_ACT_BF16 && 4 * BNT > P ? 4 * BNT / P : 1;
    auto chunk_b = [&](int j) { return P <= 4 * BNT ? P * j / (4 * BNT) : (tid + P * j) / (4 * BNT); };
    const int n_base = (tid / 4) % BNT;
    const __nv_bfloat16 *xb[kXRows];
#pragma unroll
    for (int j = 0; j < kXRows; j++) {
        const int64_t xr = x_row<GROUPED>(p, m0, m_end, (tid / 4 + P / 4 * j) % BNT);
        xb[j] = xr >= 0 && ACT == LIN_ACT_BF16 ? p.x + xr * p.K + 8 * (tid % 4) : nullptr;
    }
    // W4A4: units u = tid + P·i < 2·BNT: token u / 2, 32-block u % 2 (16 payload bytes and the
    // block's two e4m3; two lanes read a token's 32 contiguous bytes)
    constexpr int kU = ACT == LIN_ACT_NVFP4 ? S::kXUnits : 1;
    const uint8_t *xq[kU], *xs[kU];
#pragma unroll
    for (int i = 0; i < kU; i++) {
        const int u = tid + P * i;
        const int64_t xr = u >= 2 * BNT ? -1 : x_row<GROUPED>(p, m0, m_end, u / 2);
        xq[i] = xr >= 0 && ACT == LIN_ACT_NVFP4 ? p.xq + xr * (p.K / 2) + 16 * (u % 2) : nullptr;
        xs[i] = xr >= 0 && ACT == LIN_ACT_NVFP4 ? p.xq_scale + xr * (p.K / 16) + 2 * (u % 2) : nullptr;
    }
    // the slab's x in registers, loaded one slab ahead
    constexpr int kXRegs = ACT == LIN_ACT_BF16 ? S::kXChunks : S::kXUnits;
    uint4 xv[kXRegs];
    uint32_t xsv[kU];
    // block scales: rows tid + P·r of the tile
    constexpr int kSB = FMT == LIN_NVFP4 ? 16 : 32; // elements per scale byte
    constexpr int kSRows = WGMMA_BM / P;
    uint32_t sv[kSRows];
    auto load_slab = [&](int kt) {
        const int64_t k0 = (int64_t)kt * WGMMA_BK;
        if (ACT == LIN_ACT_BF16) {
#pragma unroll
            for (int j = 0; j < S::kXChunks; j++) {
#ifndef WGMMA_EXP_NOPERM // (the experiment copies x by cp.async instead)
                const __nv_bfloat16 *src = xb[j % kXRows];
                xv[j] = src ? ldg_stream16(src + k0 + 32 * chunk_b(j)) : make_uint4(0, 0, 0, 0);
#endif
            }
        } else {
#pragma unroll
            for (int i = 0; i < kU; i++) {
                xv[i] = xq[i] ? __ldg(reinterpret_cast<const uint4 *>(xq[i] + k0 / 2)) : make_uint4(0, 0, 0, 0);
                xsv[i] = xq[i] ? __ldg(reinterpret_cast<const uint16_t *>(xs[i] + k0 / 16)) : 0u;
            }
        }
#pragma unroll
        for (int r = 0; r < kSRows; r++) {
            const int64_t n = n0 + tid + P * r;
            const uint8_t *sp = p.w_scale + n * (p.K / kSB) + k0 / kSB;
            sv[r] = n >= p.N ? 0u
                    : FMT == LIN_NVFP4 ? __ldg(reinterpret_cast<const uint32_t *>(sp))
                                       : (uint32_t)__ldg(reinterpret_cast<const uint16_t *>(sp));
        }
    };

    load_slab(0);
    for (int kt = 0; kt < nk; kt++) {
        const int st = kt % WGMMA_STAGES;
        mbar_wait(bars + 8 * (WGMMA_STAGES + st), ((kt / WGMMA_STAGES) & 1) ^ 1); // empty[st]
        unsigned char *stage = smem + st * S::kStage;
        // raw weight: 16-byte blocks q = tid + P·j, row q / 2, block q % 2
#pragma unroll
        for (int j = 0; j < 2 * WGMMA_BM / P; j++) {
            const int q = tid + P * j, r = q / 2, b = q % 2;
            const bool in = n0 + r < p.N; // rows past N expand to zeros
            cp_async16(stage + S::kRawOff + r * 32 + 16 * (b ^ ((r / 4) & 1)),
                       in ? p.w + (n0 + r) * (p.K / 2) + kt * (WGMMA_BK / 2) + 16 * b : p.w, in ? 16 : 0);
        }
#ifdef WGMMA_EXP_NOPERM // timing experiment, wrong results: x copied in natural order by cp.async
        if (ACT == LIN_ACT_BF16) {
            const int64_t k0 = (int64_t)kt * WGMMA_BK;
#pragma unroll
            for (int j = 0; j < S::kXChunks; j++) {
                const int b = chunk_b(j), n = n_base + P / 4 * j % BNT;
                const __nv_bfloat16 *src = xb[j % kXRows];
                cp_async16(stage + b_chunk_off(n, 4 * b + tid % 4), src ? src + k0 + 32 * b : p.x, src ? 16 : 0);
            }
        }
#endif
        cp_async_commit();
        // hand over slab kt-1: its copies have landed (all but the newest group)
        if (kt > 0) {
            cp_async_wait<1>();
            fence_proxy_async_smem();
            mbar_arrive(bars + 8 * ((kt - 1) % WGMMA_STAGES)); // full
        }
#pragma unroll
        for (int r = 0; r < kSRows; r++)
            *reinterpret_cast<uint32_t *>(stage + S::kScaleOff + 4 * (tid + P * r)) = sv[r];
        // x in fragment order: chunk 4b + q (q = 2j + h), word t = (x[8t + q], x[8t + q + 4])
#ifdef WGMMA_EXP_NOPERM
        if (ACT == LIN_ACT_BF16) {
        } else
#endif
        if (ACT == LIN_ACT_BF16) {
            // chunk j: token n_base + (P/4·j) % BNT: the swizzle is the same for every j, so 8
            // chunk addresses and immediates for the rest
            auto chunk_addr = [&](int c) { return smem_u32(stage) + b_chunk_off(n_base, c) + 4 * (tid % 4); };
            uint32_t cb[8];
#pragma unroll
            for (int c = 0; c < 8; c++) cb[c] = chunk_addr(c);
#pragma unroll
            for (int j = 0; j < S::kXChunks; j++) {
                const int nb = 128 * (P / 4 * j % BNT);
                const uint32_t in[4] = {xv[j].x, xv[j].y, xv[j].z, xv[j].w}; // x[8t + 2m], x[8t + 2m + 1]
#pragma unroll
                for (int q = 0; q < 4; q++) {
                    const uint32_t w = __byte_perm(in[q / 2], in[2 + q / 2], q % 2 ? 0x7632 : 0x5410);
                    if (P <= 4 * BNT) {
                        sts32(cb[4 * chunk_b(j) + q] + nb, w);
                    } else { // b differs between threads: no register array indexed by it
                        sts32(chunk_addr(4 * chunk_b(j) + q), w);
                    }
                }
            }
        } else {
#pragma unroll
            for (int i = 0; i < kU; i++) {
                const int u = tid + P * i, n = u / 2, b = u % 2;
                if (u >= 2 * BNT) continue;
                const uint32_t words[4] = {xv[i].x, xv[i].y, xv[i].z, xv[i].w};
                const uint32_t c0 = e4m3_scale_c(xsv[i], 0x4040), c1 = e4m3_scale_c(xsv[i], 0x4141);
                uint32_t out[4][4]; // [q][t]: pairs (q, q + 4) of word t, each · scale · 2^-9
#pragma unroll
                for (int t = 0; t < 4; t++) {
                    uint32_t pr[4];
                    e2m1x8_pairs(words[t], t < 2 ? c0 : c1, pr);
#pragma unroll
                    for (int q = 0; q < 4; q++) out[q][t] = pr[q];
                }
#pragma unroll
                for (int q = 0; q < 4; q++)
                    *reinterpret_cast<uint4 *>(stage + b_chunk_off(n, 4 * b + q)) =
                        make_uint4(out[q][0], out[q][1], out[q][2], out[q][3]);
            }
        }
        if (kt + 1 < nk) load_slab(kt + 1);
    }
    cp_async_wait<0>();
    fence_proxy_async_smem();
    mbar_arrive(bars + 8 * ((nk - 1) % WGMMA_STAGES));
}

// The two consumer warpgroups: consumer c owns features 128·c .. 128·c + 127 of the tile; expands its
// weight fragments and runs the MMAs over the ring, then the epilogue.
template <int FMT, int ACT, int BNT, bool GROUPED>
__device__ __forceinline__ void wgmma_consumer(const LinearParams &p, int64_t n0, int64_t m0, int64_t m_end,
                                               float factor, unsigned char *smem, uint32_t bars, int nk, int c) {
    using S = WgShape<BNT>;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;
    float acc[2][BNT / 2];
#pragma unroll
    for (int s = 0; s < 2; s++)
#pragma unroll
        for (int i = 0; i < BNT / 2; i++) acc[s][i] = 0.0f;
    // this thread's rows: r(s, rr) = 128c + 64s + 16·(warp % 4) + g + 8·rr; r % 8 = g
    const int row0 = 128 * c + 16 * (warp % 4) + g, swz = (g / 4) & 1;
    // a[s][j]: the fragment of m64 block s for k16 step 2b + j of the current 32-wide block b.
    // One commit group per (block, s): a[s] is rebuilt while the other m64 block's group runs.
    uint32_t a[2][2][4];
    // a[s]'s last use, after the wait that covers the wgmma reading it: ptxas would otherwise
    // reuse its registers while the wgmma reads them, and serialise the wgmma to allow it
    uint32_t frag_use = 0;
    auto last_use = [&](int s) {
#pragma unroll
        for (int j = 0; j < 2; j++) frag_use ^= a[s][j][0] ^ a[s][j][1] ^ a[s][j][2] ^ a[s][j][3];
    };
    for (int kt = 0; kt < nk; kt++) {
        const int st = kt % WGMMA_STAGES;
        mbar_wait(bars + 8 * st, (kt / WGMMA_STAGES) & 1); // full[st]
        const unsigned char *stage = smem + st * S::kStage;
        const uint32_t b_base = smem_u32(stage);
        uint32_t sc[2][2];
#pragma unroll
        for (int s = 0; s < 2; s++)
#pragma unroll
            for (int rr = 0; rr < 2; rr++)
                sc[s][rr] = *reinterpret_cast<const uint32_t *>(stage + S::kScaleOff + 4 * (row0 + 64 * s + 8 * rr));
#pragma unroll
        for (int b = 0; b < 2; b++)
#pragma unroll
            for (int s = 0; s < 2; s++) {
                if (kt > 0 || b > 0) {
                    wgmma_wait<1>(); // all but the newest group are done: a[s] is free
                    last_use(s);
                }
                // the last group that read slab kt-1 (block 1, s 1) has completed: release its stage
                if (b == 0 && s == 1 && kt > 0 && lane == 0)
                    mbar_arrive(bars + 8 * (WGMMA_STAGES + (kt - 1) % WGMMA_STAGES));
#pragma unroll
                for (int rr = 0; rr < 2; rr++) {
                    const int r = row0 + 64 * s + 8 * rr;
                    const uint32_t w =
                        *reinterpret_cast<const uint32_t *>(stage + S::kRawOff + r * 32 + 16 * (b ^ swz) + 4 * t);
                    uint32_t pr[4]; // pairs (q, q + 4) of word t: k 32b + 8t + q (+4)
#ifdef WGMMA_EXP_NOEXPAND // timing experiment, wrong results: the raw word as the fragment
                    if (true) {
                        pr[0] = w, pr[1] = w ^ sc[s][rr], pr[2] = w + 1, pr[3] = w + 2;
                    } else
#endif
                    if (FMT == LIN_NVFP4) {
                        // e4m3 of the 16-block 2b + t/2 of the slab
                        e2m1x8_pairs_dev(w, e4m3_scale_c_pos(sc[s][rr], 0x4040u + 0x0101u * (2 * b + t / 2)), pr);
                    } else {
                        e2m1x8_pairs_dev(w, BF16X2_2P126, pr);
                        const uint32_t post = ue8m0_c((sc[s][rr] >> (8 * b)) & 0xFFu);
#pragma unroll
                        for (int q = 0; q < 4; q++) pr[q] = bf16x2_mul(pr[q], post);
                    }
#pragma unroll
                    for (int q = 0; q < 4; q++) a[s][q / 2][2 * (q % 2) + rr] = pr[q];
                }
                wgmma_fence();
#pragma unroll
                for (int j = 0; j < 2; j++)
                    wgmma_bf16_rs<BNT>(acc[s], a[s][j], wgmma_desc_sw128(b_base + 32 * (2 * b + j)),
                                       kt > 0 || b > 0 || j > 0);
                wgmma_commit();
#pragma unroll
                for (int i = 0; i < BNT / 2; i++) wgmma_fence_operand(acc[s][i]);
            }
    }
    wgmma_wait<0>();
#pragma unroll
    for (int s = 0; s < 2; s++) {
#pragma unroll
        for (int i = 0; i < BNT / 2; i++) wgmma_fence_operand(acc[s][i]);
        last_use(s);
    }
    if (p.M < 0) p.partials[0] = (float)frag_use; // never (M >= 1): keeps the uses above

    // epilogue: acc[s][4j + e] is feature 128·c + 64·s + 16·(warp%4) + g (+8 for e >= 2),
    // token column 8j + 2t (+1 for odd e); row m's factor (W4A4 per-token scales: of the x row)
    auto out_factor = [&](int64_t m) {
        return ACT == LIN_ACT_NVFP4 && p.token_scales
                   ? factor * p.token_scales[GROUPED && p.grp.row_token ? p.grp.row_token[m] : m]
                   : factor;
    };
    if (GROUPED && p.swiglu_out) {
        // the routed L1 stack (gate / up rows interleaved in blocks of 8): this thread's rows g
        // and g + 8 of each 16 are a gate and its up, so SwiGLU of the values the plain store
        // would write (the same products) goes out as BF16 h[row][intermediate]
#pragma unroll
        for (int s = 0; s < 2; s++) {
            const int64_t f = n0 + 128 * c + 64 * s + 16 * (warp % 4) + g; // the gate's row
            const int64_t i = (f - g) / 2 + g;                                // its intermediate index
#pragma unroll
            for (int j = 0; j < BNT / 8; j++)
#pragma unroll
                for (int e = 0; e < 2; e++) {
                    const int64_t m = m0 + 8 * j + 2 * t + e;
                    if (m >= m_end || f >= p.N) continue;
                    const float fm = out_factor(m);
                    swiglu_store_bf16(p.swiglu_out, m * (p.N / 2) + i,
                                      swiglu_as_cpu(acc[s][4 * j + e] * fm, acc[s][4 * j + e + 2] * fm, p.swiglu_limit));
                }
        }
        return;
    }
#pragma unroll
    for (int s = 0; s < 2; s++) {
        const int64_t f = n0 + 128 * c + 64 * s + 16 * (warp % 4) + g;
#pragma unroll
        for (int j = 0; j < BNT / 8; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int64_t m = m0 + 8 * j + 2 * t + (e & 1), n = f + (e >= 2 ? 8 : 0);
                if (m >= m_end || n >= p.N) continue;
                linear_store(p, m, n, acc[s][4 * j + e] * out_factor(m));
            }
    }
}

template <int FMT, int ACT, int BNT, bool GROUPED>
__global__ void __launch_bounds__(WGMMA_THREADS, 1)
    linear_prefill_wgmma(const LinearParams p0, const int32_t *tile_expert) {
#if DSV4_WGMMA
    using S = WgShape<BNT>;
    extern __shared__ __align__(1024) unsigned char wg_smem_raw[];
    unsigned char *wg_smem = wg_smem_raw + ((1024 - (smem_u32(wg_smem_raw) & 1023)) & 1023); // ring: 1024-aligned
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
            mbar_init(bars + 8 * s, WGMMA_PRODUCERS);    // full: every producer thread
            mbar_init(bars + 8 * (WGMMA_STAGES + s), 8); // empty: every consumer warp
        }
    }
    __syncthreads();

    // one if/else, so that setmaxnreg applies (kLaunchRegs above)
    if (wg < WGMMA_PRODUCER_WGS) {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kProducerRegs));
        wgmma_producer<FMT, ACT, BNT, GROUPED>(p, n0, m0, m_end, wg_smem, bars, nk);
    } else {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kConsumerRegs));
        wgmma_consumer<FMT, ACT, BNT, GROUPED>(p, n0, m0, m_end, factor, wg_smem, bars, nk, wg - WGMMA_PRODUCER_WGS);
    }
#else
    (void)p0;
    (void)tile_expert;
#endif
}

// ---- host side ----

static int force_mma = 0;
static int wgmma_ok = -1; // built for sm_90a and running on an sm_90 device (linear_prefill_wgmma_init)
static int wgmma_refused = 0; // it would apply, but a kernel attribute check turned it off

template <int FMT, int ACT, int BNT, bool GROUPED>
static dsv4_status set_smem(void) {
    // any failure here only turns the kernel off: prefill then runs on mma.sync
    auto k = linear_prefill_wgmma<FMT, ACT, BNT, GROUPED>;
    cudaFuncAttributes fa;
    if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, WgShape<BNT>::kSmem) != cudaSuccess ||
        cudaFuncGetAttributes(&fa, k) != cudaSuccess) {
        (void)cudaGetLastError(); // not sticky: clear it
        wgmma_ok = 0, wgmma_refused = 1;
    } else if (fa.numRegs != kLaunchRegs) { // the setmaxnreg split would not match the pool
        wgmma_ok = 0, wgmma_refused = 1;
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

extern "C" int dsv4_cuda_linear_prefill_wgmma_state(void) {
    if (wgmma_ok == 1) return 1;
    return wgmma_refused ? 0 : -1;
}

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
