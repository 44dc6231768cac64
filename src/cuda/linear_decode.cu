// Decode-regime linear (M = 1..64 rows of activations): streams every weight byte once and
// multiplies on the BF16 tensor cores with the operands swapped (y^T = W · x^T), so the
// weight rows fill the 16-row side of mma.m16n8k16 and the few tokens its 8-column side.
//
// Work split. A CTA of DECODE_WARPS warps owns R 16-row tiles (16·R output rows) and one K
// range (blockIdx.y = split); its warps take the range's K steps round-robin and add their
// partial sums in a fixed order at the end (shared memory). One K step of a warp: each lane
// loads one 16-byte chunk (32 fp4 or 16 fp8 elements) of rows g and g+8 of every tile
// (g = lane / 4); the 4 lanes of a row group read 64 contiguous bytes of their row. Weights
// are staged through a per-warp cp.async ring (below), activations read through L1 (re-read
// by every warp of the CTA).
//
// Fragment mapping. mma.m16n8k16 gives lane (g, t = lane % 4) the A values of rows g and
// g+8 at logical k {2t, 2t+1, 2t+8, 2t+9} and the B values of token g at the same k. The
// logical k of each lane may map to any physical k as long as A and B agree, so each lane
// keeps its own 16-byte chunk: a 32-bit word of 8 fp4 elements expands into 4 BF16 pairs
// (element i, element i+4), i = 0..3, and two consecutive pairs feed one MMA; an fp8 word
// of 4 elements expands into the pairs (0, 2) and (1, 3) for one MMA. The activations are
// paired the same way (act_pairs below).
//
// Expansion math (exact). The bits of an e2m1 magnitude placed at BF16 bits 6..8 (and its
// sign at bit 15) are e2m1 · 2^-126 (code 1, 0.5, becomes a BF16 subnormal, which BF16
// multiplication takes as is). One BF16 multiply by c = scale · 2^117 then gives
// e2m1 · scale · 2^-9 exactly: the product has at most 6 significant bits and lies in
// [2^-19, 5.25], inside BF16's normal range, for every e4m3 scale. FP8: the 7 magnitude bits
// of e4m3 at BF16 bits 4..10 are e4m3 · 2^-120; times 2^111 that is e4m3 · 2^-9 (normal).
// MXFP4: two multiplies, by 2^126 (the exact e2m1 value) and by the block's 2^(e-127).
// NVFP4 activations (W4A4) expand like NVFP4 weights. The 2^9 factors are restored after
// the sum (decode_unit), which is exact. The tensor cores multiply BF16 pairs exactly and add in
// fp32, so only the summation order differs from the fp32 CPU reference.
//
// FP8 block-128 scales (fp32 or ue8m0) are not folded into the BF16 value (an fp32 scale
// would round): a warp's K step (64 elements) and its 16-row tile lie inside one 128 × 128
// scale block, so the step's MMA sums go to a temporary and are added to the accumulator
// times that block's scale.
//
// Split-K. With splits > 1 each split writes its sums (times decode_unit) to partials[split] and
// linear_splitk_reduce (linear.cu) adds them in split order: no atomics, reproducible.
//
// Grouped mode (MoE experts, p.grouped): the CTAs walk one flattened list of (active group,
// bucket chunk, tile) items (DecodeItem below); see LinearGroups in linear_internal.cuh.
#include <stdlib.h>

#include "cuda/cp_async.cuh"
#include "cuda/linear_expand.cuh"
#include "cuda/linear_internal.cuh"
#include "cuda/moe_math.cuh" // swiglu_as_cpu (the fused SwiGLU epilogue)

#define DECODE_WARPS 4
#define DECODE_THREADS (DECODE_WARPS * 32)
// 4 CTAs (16 warps) per SM keep >= 64 KB of weight loads in flight per SM; caps registers at 128
#ifndef DECODE_MIN_CTAS // (a development build may set it)
#define DECODE_MIN_CTAS 4
#endif

template <int FMT, int MT>
struct DecodeShape {
    static constexpr int kElems = FMT == LIN_FP8 ? 16 : 32; // weight elements per 16-byte chunk
    static constexpr int kPairs = kElems / 2;                // BF16 pairs per chunk
    static constexpr int kMmas = kElems / 4;                 // MMAs per chunk (4 elements per lane each)
    static constexpr int kStep = 4 * kElems;                 // K covered by one warp step
    static constexpr int kNT = MT / 8;                       // 8-token MMA column tiles
    static constexpr int kR = kNT >= 4 ? 1 : 2;              // 16-row tiles per CTA
    static constexpr int kRowsPerCta = 16 * kR;
    static constexpr int kAcc = kR * kNT * 4; // fp32 accumulators per lane
    static_assert(MT == 8 || MT == 16 || MT == 32 || MT == 64, "token buckets of 8");
};

// The factor the expansions leave in every sum (see the header comment).
template <int FMT, int ACT>
__device__ __forceinline__ float decode_unit() {
    return (FMT == LIN_MXFP4 ? 1.0f : 512.0f) * (ACT == LIN_ACT_NVFP4 ? 512.0f : 1.0f);
}


// The scale multipliers of a lane's fp4 chunk from its copied 4-byte scale word: NVFP4 c0 =
// (scale0 · 2^117) in both halves for elements 0-15 and c1 likewise for 16-31 (the two e4m3
// bytes decode together: [b0, 0, b1, 0] << 4 puts both at BF16 bits 4..10, b < 0x80 in the
// device layout, then two exact multiplies as in e4m3_scale_c_pos); MXFP4 c0 = c1 = the
// block's 2^(e-127) in both halves. `sel` is the lane's byte selector (decode_scale_sel).
template <int FMT>
__device__ __forceinline__ void fp4_chunk_scales(uint32_t word, uint32_t sel, uint32_t &c0, uint32_t &c1) {
    if (FMT == LIN_NVFP4) {
        const uint32_t c = bf16x2_mul(bf16x2_mul(__byte_perm(word, 0u, sel) << 4, BF16X2_2P120), BF16X2_2P117);
        c0 = __byte_perm(c, 0u, 0x1010);
        c1 = __byte_perm(c, 0u, 0x3232);
    } else {
        c0 = c1 = __byte_perm(word, 0u, sel) << 7; // ue8m0_c: [e, 0, e, 0] << 7
    }
}

// The byte selector that takes the lane's scale bytes at byte offset sh of its word: NVFP4
// [b_sh, 0, b_sh+1, 0], MXFP4 [b_sh, 0, b_sh, 0].
template <int FMT>
__device__ __forceinline__ uint32_t decode_scale_sel(uint32_t sh) {
    return (FMT == LIN_NVFP4 ? 0x4140u : 0x4040u) + sh * 0x0101u;
}

// Expands a lane's 16-byte weight chunk into its BF16 pairs (the A fragments of kMmas MMAs
// for one row). fp4: c0 / c1 from fp4_chunk_scales.
template <int FMT>
__device__ __forceinline__ void expand_w_chunk(uint4 q, uint32_t c0, uint32_t c1, uint32_t out[]) {
    const uint32_t words[4] = {q.x, q.y, q.z, q.w};
    if (FMT == LIN_NVFP4) {
#pragma unroll
        for (int w = 0; w < 4; w++) e2m1x8_pairs_dev(words[w], w < 2 ? c0 : c1, out + 4 * w);
    } else if (FMT == LIN_MXFP4) {
#pragma unroll
        for (int w = 0; w < 4; w++) {
            e2m1x8_pairs_dev(words[w], BF16X2_2P126, out + 4 * w);
#pragma unroll
            for (int i = 0; i < 4; i++) out[4 * w + i] = bf16x2_mul(out[4 * w + i], c0);
        }
    } else {
#pragma unroll
        for (int w = 0; w < 4; w++) e4m3x4_pairs(words[w], BF16X2_2P111, out + 2 * w);
    }
}

// The activations of one lane's chunk for one token as loaded (element offset `xo` in x, or
// in xq / its scales for NVFP4 activations), so that a step can issue them early and pair
// them later: BF16 kElems values; NVFP4 16 (FP8 weights) or 32 packed values and their scales.
template <int FMT, int ACT>
struct ActRaw {
    static constexpr int kV = ACT == LIN_ACT_BF16 ? (FMT == LIN_FP8 ? 2 : 4) : 1;
    uint4 v[kV];
    uint32_t s;
};

// Issues the loads of a lane's activation chunk; zeros when !valid (a missing token or a chunk
// past the split's K end: zero payload and zero scale pair to zeros).
template <int FMT, int ACT>
__device__ __forceinline__ void load_act_raw(const LinearParams &p, uint32_t xo, bool valid, ActRaw<FMT, ACT> &r) {
    using R = ActRaw<FMT, ACT>;
    r.s = 0;
#pragma unroll
    for (int v = 0; v < R::kV; v++) r.v[v] = make_uint4(0, 0, 0, 0);
    if (!valid) return;
    if (ACT == LIN_ACT_BF16) {
        const uint4 *src = reinterpret_cast<const uint4 *>(p.x + xo);
#pragma unroll
        for (int v = 0; v < R::kV; v++) r.v[v] = __ldg(src + v);
    } else if (FMT == LIN_FP8) { // 16 packed values (8 bytes), one scale
        const uint2 u = __ldg(reinterpret_cast<const uint2 *>(p.xq + xo / 2));
        r.v[0].x = u.x, r.v[0].y = u.y;
        r.s = __ldg(p.xq_scale + xo / 16);
    } else { // 32 packed values (16 bytes), two scales
        r.v[0] = __ldg(reinterpret_cast<const uint4 *>(p.xq + xo / 2));
        r.s = __ldg(reinterpret_cast<const uint16_t *>(p.xq_scale + xo / 16));
    }
}

// The B fragments of a loaded activation chunk: paired like the weight chunk.
template <int FMT, int ACT>
__device__ __forceinline__ void act_pairs(const ActRaw<FMT, ACT> &r, uint32_t out[]) {
    constexpr int kPairs = FMT == LIN_FP8 ? 8 : 16;
    if (ACT == LIN_ACT_BF16) {
        uint32_t nat[kPairs];
#pragma unroll
        for (int v = 0; v < ActRaw<FMT, ACT>::kV; v++) {
            nat[4 * v + 0] = r.v[v].x;
            nat[4 * v + 1] = r.v[v].y;
            nat[4 * v + 2] = r.v[v].z;
            nat[4 * v + 3] = r.v[v].w;
        }
        pair_natural<FMT>(nat, out);
    } else if (FMT == LIN_FP8) {
        // 16 elements: expand to (i, i+4) pairs, back to natural order, then fp8 pairing
        const uint32_t c = e4m3_scale_c(r.s, 0x4040);
        uint32_t pr[8], nat[8];
        e2m1x8_pairs(r.v[0].x, c, pr);
        e2m1x8_pairs(r.v[0].y, c, pr + 4);
        pairs_to_natural(pr, nat);
        pairs_to_natural(pr + 4, nat + 4);
        pair_natural<FMT>(nat, out);
    } else {
        // 32 elements in the same nibble layout as the weight chunk: same pairing directly
        const uint32_t c0 = e4m3_scale_c(r.s, 0x4040), c1 = e4m3_scale_c(r.s, 0x4141);
        e2m1x8_pairs(r.v[0].x, c0, out);
        e2m1x8_pairs(r.v[0].y, c0, out + 4);
        e2m1x8_pairs(r.v[0].z, c1, out + 8);
        e2m1x8_pairs(r.v[0].w, c1, out + 12);
    }
}

__device__ __forceinline__ void mma_bf16_16816(float d[4], const uint32_t a[4], const uint32_t b[2]) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                 "{%8, %9}, {%0, %1, %2, %3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// DECODE_STAGES-deep ring in shared memory: lane l copies its chunks (and the 4-byte word
// holding its scale bytes) with cp.async into slots only it reads back, so a per-thread
// cp.async.wait_group is the whole synchronisation (no barrier, no cross-lane data). While a
// warp expands and multiplies stage i, stages i+1 .. i+STAGES-1 are in flight, including the
// first steps of its next item while the CTA reduces the current one.
//
// Each output's sum order (K steps of a warp in order, warps in order, splits in order) is
// a function of the plan only, not of which CTA runs the item, so the grid can follow the
// device's SM count without changing a bit of the result.
//
// Addressing. Per item a lane keeps one 64-bit pointer per chunk (its row at the warp's first
// K step) and a step adds a compile-time multiple of its index, so a step's copies cost two
// integer operations each. The lane's scale bytes (fp4) sit at the same offset sh in their
// aligned 4-byte word for all its rows and steps (its rows are 8 apart and a ring step moves
// 32 (NVFP4) or 16 (MXFP4) scale bytes), so the whole word is copied (DSV4_CUDA_WEIGHT_TAIL keeps the last word
// inside the allocation) and a byte permute with a per-item selector picks them. Chunks at or
// past the split's K end (only in the last split's last step when K is not a multiple of the
// step) are zero-filled (src-size 0) and their activations are zero. Rows past N (the last
// tile) read row N - 1 instead: their sums are computed and dropped at the store.
// Two stages: one step in flight per warp while it computes another. Deeper rings were slower
// (H100, wq_b M = 1: 11.2 / 10.1 / 9.2 us with 4 / 3 / 2 stages, same run): with every warp's
// requests issued at once the queue holds several times the bandwidth-delay product, so each
// warp's first step arrives late and the in-order consumption cannot catch up. A development
// build may set it (2..4; 4 fills the 48 KB of static shared memory).
#ifndef DECODE_STAGES
#define DECODE_STAGES 2
#endif

// Development experiments, compiled only with -DDSV4_DECODE_EXPERIMENTS (the environment's
// DSV4_DECODE_EXPERIMENT, read by linear_decode_init): 1 expands and multiplies nothing (the
// weight stream alone, through the same ring), 2 copies no weights (the expansion and MMAs
// alone, on whatever the ring holds). Results are garbage in both; only the time means anything.
#ifdef DSV4_DECODE_EXPERIMENTS
__device__ int g_decode_experiment;
#define DECODE_EXPERIMENT g_decode_experiment
#else
#define DECODE_EXPERIMENT 0
#endif

dsv4_status linear_decode_init(void) {
#ifdef DSV4_DECODE_EXPERIMENTS
    const char *e = getenv("DSV4_DECODE_EXPERIMENT");
    const int v = e ? atoi(e) : 0;
    DSV4_CUDA_TRY(cudaMemcpyToSymbol(g_decode_experiment, &v, sizeof v), "linear_decode_init: experiment switch");
#endif
    return DSV4_OK;
}

// A work item: one CTA tile of rows (and, grouped, one bucket chunk of one active group's
// rows). Dense calls have n_tiles items. Grouped calls flatten (active group index, chunk,
// tile) into one index space of n_active · per_group items, walked by every CTA of a grid
// sized to the device, so the work spreads over all SMs however the tokens are routed (a
// grid with a z slot per possible group left most CTAs idle under skewed routing). Items
// of chunks past a group's rows are empty (found the same way by producer and consumer).
struct DecodeItem {
    const uint8_t *w;      // the group's payload and block scales
    const uint8_t *ws;
    int row_base;          // first weight row of the tile
    int y_begin;           // first y row of the chunk
    int m_count;           // rows of x / y in the chunk (<= MT)
    int grp;               // group id (grouped mode)
};

template <int MT, bool GROUPED>
__device__ __forceinline__ bool decode_item(const LinearParams &p, int item, int n_tiles, int per_group, int rows_per_tile,
                                            DecodeItem &it) {
    if (!GROUPED) { // one tile per item: no division
        it.w = p.w, it.ws = p.w_scale, it.row_base = item * rows_per_tile, it.y_begin = 0, it.m_count = (int)p.M, it.grp = 0;
        return true;
    }
    const LinearGroups &G = p.grp;
    const int a = item / per_group, rem = item - a * per_group;
    const int chunk = rem / n_tiles;
    it.row_base = (rem - chunk * n_tiles) * rows_per_tile;
    it.grp = G.active[a];
    const int count = G.row_count[it.grp];
    if (chunk * MT >= count) return false;
    it.w = p.w + (int64_t)it.grp * G.w_stride;
    it.ws = p.w_scale + (int64_t)it.grp * G.s_stride;
    it.y_begin = G.row_begin[it.grp] + chunk * MT;
    it.m_count = count - chunk * MT < MT ? count - chunk * MT : MT;
    return true;
}

// Grouped calls wait for the routing before they know their weights, but some are known
// before it (the shared expert's, run as a routed slot): the CTAs split p.l2_warm into
// DECODE_WARM_CHUNK pieces and bulk-prefetch them into L2 first, so those bytes stream while the
// routing runs and HBM is idle. The weight copies use the evict-first policy
// (p.w_evict_first), so the routed stream evicts its own lines before the warmed ones.
#define DECODE_WARM_CHUNK 4096
__device__ __forceinline__ void l2_warm(const LinearParams &p) {
    int64_t chunks[4], total = 0;
#pragma unroll
    for (int i = 0; i < 4; i++) {
        chunks[i] = p.l2_warm[i] ? (p.l2_warm_bytes[i] / 16 * 16 + DECODE_WARM_CHUNK - 1) / DECODE_WARM_CHUNK : 0;
        total += chunks[i];
    }
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < total; c += (int64_t)gridDim.x * blockDim.x) {
        int64_t ci = c;
        int i = 0;
        while (ci >= chunks[i]) ci -= chunks[i++];
        const int64_t off = ci * DECODE_WARM_CHUNK, left = p.l2_warm_bytes[i] / 16 * 16 - off;
        l2_prefetch_bulk(p.l2_warm[i] + off, (uint32_t)(left < DECODE_WARM_CHUNK ? left : DECODE_WARM_CHUNK));
    }
}

// GROUPED: p.grouped (a separate instantiation, so dense calls carry no group state).
template <int FMT, int ACT, int MT, bool GROUPED>
__global__ void __launch_bounds__(DECODE_THREADS, DECODE_MIN_CTAS) linear_decode_v2(const LinearParams p) {
    using S = DecodeShape<FMT, MT>;
    constexpr int kC = 2 * S::kR; // chunks per lane per step (rows g and g+8 of each tile)
    // a step of the warp moves DECODE_WARPS K steps on: payload and fp4 scale bytes per row
    constexpr uint32_t kQStride = DECODE_WARPS * S::kStep / (FMT == LIN_FP8 ? 1 : 2);
    constexpr uint32_t kSStride = DECODE_WARPS * S::kStep / (FMT == LIN_NVFP4 ? 16 : 32);
    constexpr uint32_t kXStride = DECODE_WARPS * S::kStep; // activation elements
    __shared__ __align__(16) uint4 ring_q[DECODE_WARPS][DECODE_STAGES][kC][32];
    __shared__ uint32_t ring_s[DECODE_WARPS][DECODE_STAGES][kC][32];
    __shared__ float red[DECODE_WARPS * S::kAcc * 32];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, t = lane % 4;

    // PDL (common.cuh): the successor may launch now. A dense call loads its first weight
    // stages before waiting for the predecessor (weights are never written by a kernel); a
    // grouped call waits first, since the active-expert list comes from the routing kernels.
    pdl_launch_dependents();
    if (GROUPED) {
        l2_warm(p);
        pdl_wait();
    }
    const uint64_t w_policy = p.w_evict_first ? l2_policy_evict_first() : l2_policy_evict_normal();
    // item counts fit 32 bits (linear_decode_launch checks n_tiles x max_active x chunks)
    const int n_tiles = (int)((p.N + S::kRowsPerCta - 1) / S::kRowsPerCta);
    const int per_group = n_tiles * ((p.grp.bound + MT - 1) / MT); // grouped: tiles x bucket chunks
    const int n_items = GROUPED ? *p.grp.n_active * per_group : n_tiles;
    const int64_t k_begin = (int64_t)blockIdx.y * p.k_per_split;
    const int64_t k_end = k_begin + p.k_per_split < p.K ? k_begin + p.k_per_split : p.K;
    const int64_t n_steps = (k_end - k_begin + S::kStep - 1) / S::kStep;
    const int ns_w = n_steps > warp ? (int)((n_steps - warp + DECODE_WARPS - 1) / DECODE_WARPS) : 0; // per item
    const int64_t row_bytes = FMT == LIN_FP8 ? p.K : p.K / 2;
    const int64_t srow_bytes = FMT == LIN_NVFP4 ? p.K / 16 : p.K / 32; // fp4 scale row
    const int64_t kblocks = (p.K + 127) / 128;
    const int64_t k_first = k_begin + (int64_t)warp * S::kStep + t * S::kElems; // the lane's chunk at step 0
    // the steps in which this lane's chunk lies before the split's K end (all of them unless
    // K is not a multiple of the step)
    const int q_lim = k_end > k_first ? (int)((k_end - k_first + kXStride - 1) / kXStride) : 0;

    // ---- producer: the warp's (item, step) sequence, STAGES - 1 stages ahead ----
    int p_item = blockIdx.x;
    int p_q = 0, p_slot = 0;
    const uint8_t *p_wq[kC]; // chunk c's payload at step 0 of the item
    const uint8_t *p_ws[kC]; // fp4: the aligned scale word of chunk c at step 0
    int p_row0[S::kR];       // FP8: the first row of tile r (its block-scale row)
    const uint8_t *p_fs = p.w_scale; // FP8: the item's block scales
    // moves the producer to the first non-empty item from p_item on (stride gridDim.x) and
    // sets up its rows; a warp with no steps loads nothing
    auto p_seek = [&]() {
        DecodeItem it;
        while (p_item < n_items && !decode_item<MT, GROUPED>(p, p_item, n_tiles, per_group, S::kRowsPerCta, it)) p_item += gridDim.x;
        if (ns_w == 0) p_item = n_items;
        if (p_item >= n_items) return;
#pragma unroll
        for (int c = 0; c < kC; c++) {
            int64_t row = it.row_base + 16 * (c / 2) + g + 8 * (c % 2);
            row = row < p.N ? row : p.N - 1;
            p_wq[c] = it.w + row * row_bytes + (FMT == LIN_FP8 ? k_first : k_first / 2);
            if (FMT != LIN_FP8) {
                const uint8_t *a = it.ws + row * srow_bytes + (FMT == LIN_NVFP4 ? k_first / 16 : k_first / 32);
                p_ws[c] = a - ((uintptr_t)a & 3u);
            }
        }
        if (FMT == LIN_FP8) {
#pragma unroll
            for (int r = 0; r < S::kR; r++) p_row0[r] = it.row_base + 16 * r < p.N ? it.row_base + 16 * r : (int)p.N - 1;
            p_fs = it.ws;
        }
    };
    p_seek();
    auto produce = [&]() {
        if (p_item < n_items && DECODE_EXPERIMENT != 2) {
            const bool in = p_q < q_lim;
            const int bytes = in ? 16 : 0;
            const uint32_t dq = in ? (uint32_t)p_q * kQStride : 0u, ds = in ? (uint32_t)p_q * kSStride : 0u;
#pragma unroll
            for (int c = 0; c < kC; c++) {
                cp_async16_256(&ring_q[warp][p_slot][c][lane], p_wq[c] + dq, bytes, w_policy);
                if (FMT != LIN_FP8) cp_async4_256(&ring_s[warp][p_slot][c][lane], p_ws[c] + ds, bytes / 4, w_policy);
            }
            if (FMT == LIN_FP8) { // the step's block scale of tile r (one for the warp; 16-row tiles
                                  // never straddle a 128-row block)
                const int64_t k0 = k_begin + (int64_t)warp * S::kStep + (int64_t)p_q * kXStride;
#pragma unroll
                for (int r = 0; r < S::kR; r++) {
                    const int64_t si = p_row0[r] / 128 * kblocks + k0 / 128;
                    if (p.w_scale_f32) {
                        cp_async4(&ring_s[warp][p_slot][2 * r][lane], p_fs + 4 * si, 4, w_policy);
                    } else { // the aligned word holding the ue8m0 byte (the weight tail covers it)
                        const uint8_t *a = p_fs + si;
                        cp_async4(&ring_s[warp][p_slot][2 * r][lane], a - ((uintptr_t)a & 3u), 4, w_policy);
                    }
                }
            }
        }
        if (p_item < n_items && ++p_q == ns_w) {
            p_q = 0;
            p_item += gridDim.x;
            p_seek();
        }
        cp_async_commit(); // possibly empty: keeps the group count uniform
        p_slot = p_slot + 1 == DECODE_STAGES ? 0 : p_slot + 1;
    };
#pragma unroll
    for (int i = 0; i < DECODE_STAGES - 1; i++) produce();
    if (!GROUPED) pdl_wait(); // activations and outputs from here on

    // ---- consumer ----
    const float unit = decode_unit<FMT, ACT>();
    int c_slot = 0;
    const int32_t *row_token = GROUPED ? p.grp.row_token : nullptr;
    // One token tile (MT = 8): the activations are loaded a step ahead (cur: this step's),
    // since waiting for them right before the MMAs was the largest single stall (ncu). Dense
    // calls read the same x rows in every item, so the last step of an item prefetches the
    // first of the next; grouped calls load an item's first step when it starts.
    constexpr bool kAhead = S::kNT == 1;
    ActRaw<FMT, ACT> cur;
    bool cur_loaded = false;
    for (int item = blockIdx.x; item < n_items; item += gridDim.x) {
        DecodeItem it;
        if (!decode_item<MT, GROUPED>(p, item, n_tiles, per_group, S::kRowsPerCta, it)) continue; // uniform per CTA
        const int row_base = it.row_base, y_begin = it.y_begin, m_count = it.m_count;
        const float factor = p.out_scale * (GROUPED && p.grp.group_scale ? p.grp.group_scale[it.grp] : 1.0f);

        // the element offset of this lane's activation chunk at step 0 per token tile (x has
        // fewer than 2^32 elements: checked by the launchers)
        uint32_t xo[S::kNT];
        bool has[S::kNT];
#pragma unroll
        for (int nt = 0; nt < S::kNT; nt++) {
            const int m = nt * 8 + g;
            const int xr = m < m_count ? (row_token ? row_token[y_begin + m] : y_begin + m) : -1;
            has[nt] = xr >= 0;
            xo[nt] = has[nt] ? (uint32_t)((int64_t)xr * p.K + k_first) : 0u;
        }
        // the byte selector of the lane's scale bytes in its copied word (fp4), as the
        // producer aligned them
        uint32_t sel = 0;
        if (FMT != LIN_FP8) {
            const int64_t row = row_base + g < p.N ? row_base + g : p.N - 1;
            const uint8_t *a = it.ws + row * srow_bytes + (FMT == LIN_NVFP4 ? k_first / 16 : k_first / 32);
            sel = decode_scale_sel<FMT>((uint32_t)((uintptr_t)a & 3u));
        }

        float acc[S::kR][S::kNT][4];
#pragma unroll
        for (int r = 0; r < S::kR; r++)
#pragma unroll
            for (int nt = 0; nt < S::kNT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++) acc[r][nt][i] = 0.0f;
        if (kAhead && (GROUPED || !cur_loaded) && ns_w > 0) load_act_raw<FMT, ACT>(p, xo[0], 0 < q_lim && has[0], cur);
        cur_loaded = true;

        for (int q = 0; q < ns_w; q++) {
            cp_async_wait<DECODE_STAGES - 2>(); // this lane's copies of stage c_slot have landed
            produce();                          // refill the slot consumed last iteration
            const bool in = q < q_lim;
            const uint32_t dx = (uint32_t)q * kXStride;
            ActRaw<FMT, ACT> nxt;
            if (kAhead) { // the next step's activations (dense: the next item's first after the last)
                const int qn = q + 1 < ns_w ? q + 1 : 0;
                if (!GROUPED || qn > 0) load_act_raw<FMT, ACT>(p, xo[0] + (uint32_t)qn * kXStride, qn < q_lim && has[0], nxt);
            }
            if (DECODE_EXPERIMENT == 1) { // the weight stream alone: one word of each chunk kept
#pragma unroll
                for (int c = 0; c < kC; c++) acc[0][0][c % 4] += __uint_as_float(ring_q[warp][c_slot][c][lane].x & 0x3f3f3f3fu);
                if (kAhead) cur = nxt;
                c_slot = c_slot + 1 == DECODE_STAGES ? 0 : c_slot + 1;
                continue;
            }

            // expands tile r's two chunks (rows g and g + 8) into A fragments; FP8: its block scale
            auto expand_tile = [&](int r, uint32_t (&a)[2][S::kPairs], float &fp8_scale) {
                fp8_scale = 0.0f;
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const uint4 raw = ring_q[warp][c_slot][2 * r + h][lane];
                    uint32_t c0 = 0, c1 = 0;
                    if (FMT != LIN_FP8) fp4_chunk_scales<FMT>(ring_s[warp][c_slot][2 * r + h][lane], sel, c0, c1);
                    expand_w_chunk<FMT>(raw, c0, c1, a[h]);
                }
                if (FMT == LIN_FP8) {
                    const uint32_t word = ring_s[warp][c_slot][2 * r][lane];
                    if (p.w_scale_f32) {
                        fp8_scale = __uint_as_float(word);
                    } else {
                        const int64_t r0 = row_base + 16 * r < p.N ? row_base + 16 * r : p.N - 1; // as the producer
                        const int64_t si = r0 / 128 * kblocks + (k_begin + (int64_t)(warp + q * DECODE_WARPS) * S::kStep) / 128;
                        const uint32_t sh = (uint32_t)((uintptr_t)(it.ws + si) & 3u);
                        fp8_scale = ue8m0_to_f32((word >> (8 * sh)) & 0xffu);
                    }
                }
            };
            // acc[r][nt] += tile r x token tile nt over this step's chunk
            auto mma_tile = [&](const uint32_t (&a)[2][S::kPairs], const uint32_t (&b)[S::kPairs], float fp8_scale,
                                float (&accv)[4]) {
                float d[4];
#pragma unroll
                for (int i = 0; i < 4; i++) d[i] = FMT == LIN_FP8 ? 0.0f : accv[i];
#pragma unroll
                for (int j = 0; j < S::kMmas; j++) {
                    const uint32_t af[4] = {a[0][2 * j], a[1][2 * j], a[0][2 * j + 1], a[1][2 * j + 1]};
                    const uint32_t bf[2] = {b[2 * j], b[2 * j + 1]};
                    mma_bf16_16816(d, af, bf);
                }
#pragma unroll
                for (int i = 0; i < 4; i++) accv[i] = FMT == LIN_FP8 ? fmaf(d[i], fp8_scale, accv[i]) : d[i];
            };
            // Loop order. MT = 8: this step's activations paired, then each row tile expanded
            // and multiplied in turn (few registers live; the loads were issued a step ago).
            // MT = 16: both token tiles' activations loaded and paired first (holding them
            // across the first tile's expansion as well would spill), each row tile expanded in
            // turn. MT >= 32 (one row tile): the tile expanded first, then each token tile
            // loaded and multiplied.
            if (kAhead) {
                uint32_t b[S::kPairs];
                act_pairs<FMT, ACT>(cur, b);
#pragma unroll
                for (int r = 0; r < S::kR; r++) {
                    uint32_t a[2][S::kPairs];
                    float fs;
                    expand_tile(r, a, fs);
                    mma_tile(a, b, fs, acc[r][0]);
                }
                cur = nxt;
            } else if (S::kR == 2) {
                uint32_t b[S::kNT][S::kPairs];
#pragma unroll
                for (int nt = 0; nt < S::kNT; nt++)
                    if (nt * 8 < m_count) {
                        ActRaw<FMT, ACT> raw;
                        load_act_raw<FMT, ACT>(p, xo[nt] + dx, in && has[nt], raw);
                        act_pairs<FMT, ACT>(raw, b[nt]);
                    }
#pragma unroll
                for (int r = 0; r < S::kR; r++) {
                    uint32_t a[2][S::kPairs];
                    float fs;
                    expand_tile(r, a, fs);
#pragma unroll
                    for (int nt = 0; nt < S::kNT; nt++)
                        if (nt * 8 < m_count) mma_tile(a, b[nt], fs, acc[r][nt]); // uniform per CTA
                }
            } else {
                uint32_t a[S::kR][2][S::kPairs];
                float fs[S::kR];
#pragma unroll
                for (int r = 0; r < S::kR; r++) expand_tile(r, a[r], fs[r]);
#pragma unroll
                for (int nt = 0; nt < S::kNT; nt++) {
                    if (nt * 8 >= m_count) continue; // token tiles past this chunk's rows (uniform per CTA)
                    ActRaw<FMT, ACT> raw;
                    load_act_raw<FMT, ACT>(p, xo[nt] + dx, in && has[nt], raw);
                    uint32_t b[S::kPairs];
                    act_pairs<FMT, ACT>(raw, b);
#pragma unroll
                    for (int r = 0; r < S::kR; r++) mma_tile(a[r], b, fs[r], acc[r][nt]);
                }
            }
            c_slot = c_slot + 1 == DECODE_STAGES ? 0 : c_slot + 1;
        }

        // Add the warps' sums in warp order. red: [DECODE_WARPS][kAcc][32]
#pragma unroll
        for (int r = 0; r < S::kR; r++)
#pragma unroll
            for (int nt = 0; nt < S::kNT; nt++)
#pragma unroll
                for (int i = 0; i < 4; i++)
                    red[((warp * S::kAcc) + (r * S::kNT + nt) * 4 + i) * 32 + lane] = acc[r][nt][i];
        __syncthreads();
        if (GROUPED && p.swiglu_out) { // the routed L1: rows g and g + 8 of a tile are a gate and its up
            for (int o = threadIdx.x; o < S::kAcc * 16; o += DECODE_THREADS) {
                const int ln = o % 32, pair = o / 32; // pair: (r, nt, i < 2), its up at slot + 2
                const int i = pair % 2, nt = (pair / 2) % S::kNT, r = pair / 2 / S::kNT;
                const int sg = ((r * S::kNT + nt) * 4 + i) * 32 + ln, su = sg + 2 * 32;
                const int m = nt * 8 + 2 * (ln % 4) + i;
                const int row = row_base + 16 * r + ln / 4; // the gate's row (N is a multiple of 16)
                if (m >= m_count || row >= p.N) continue;
                float gate = 0.0f, up = 0.0f;
#pragma unroll
                for (int wi = 0; wi < DECODE_WARPS; wi++) gate += red[wi * S::kAcc * 32 + sg], up += red[wi * S::kAcc * 32 + su];
                const int64_t yr = y_begin + m;
                float f = factor; // the same operations as the h store below, so SwiGLU sees h's values
                if (p.token_scales) f *= p.token_scales[row_token ? row_token[yr] : yr];
                gate = gate * unit * f, up = up * unit * f;
                const int64_t j = (row_base + 16 * r) / 2 + ln / 4; // the intermediate index
                swiglu_store_bf16(p.swiglu_out, yr * (p.N / 2) + j, swiglu_as_cpu(gate, up, p.swiglu_limit));
            }
            __syncthreads(); // red is reused by the next item
            continue;
        }
        for (int o = threadIdx.x; o < S::kAcc * 32; o += DECODE_THREADS) {
            const int ln = o % 32, slot = o / 32;
            const int i = slot % 4, nt = (slot / 4) % S::kNT, r = slot / 4 / S::kNT;
            const int m = nt * 8 + 2 * (ln % 4) + (i & 1);
            const int row = row_base + 16 * r + ln / 4 + (i >= 2 ? 8 : 0);
            if (m >= m_count || row >= p.N) continue;
            float sum = 0.0f;
#pragma unroll
            for (int wi = 0; wi < DECODE_WARPS; wi++) sum += red[wi * S::kAcc * 32 + o];
            const int64_t yr = y_begin + m;
            sum *= unit; // exact: a power of two
            if (gridDim.y > 1) {
                p.partials[((int64_t)blockIdx.y * p.M + yr) * p.N + row] = sum;
            } else {
                float f = factor;
                if (p.token_scales) f *= p.token_scales[row_token ? row_token[yr] : yr];
                linear_store(p, yr, row, sum * f);
            }
        }
        __syncthreads(); // red is reused by the next item
    }
    cp_async_wait<0>(); // only empty groups can be left; nothing outlives the CTA
}

int linear_decode_mt(int64_t M) {
    int mt = 8;
    while (mt < M) mt *= 2;
    return mt;
}

int linear_decode_rows_per_cta(int fmt, int mt) {
    (void)fmt;
    return mt >= 32 ? 16 : 32; // DecodeShape::kRowsPerCta
}

int linear_decode_k_step(int fmt, int mt) {
    (void)mt;
    return fmt == LIN_FP8 ? 64 : 128; // DecodeShape::kStep
}

int linear_decode_warps(void) { return DECODE_WARPS; }

template <int FMT, int ACT, int MT>
static dsv4_status launch_mt(const LinearParams &p, int splits, cudaStream_t s) {
    using S = DecodeShape<FMT, MT>;
    static_assert(S::kRowsPerCta == (MT >= 32 ? 16 : 32) && S::kStep == (FMT == LIN_FP8 ? 64 : 128),
                  "linear_decode_rows_per_cta / linear_decode_k_step");
    if (p.grouped && (p.grp.max_active < 1 || p.grp.bound < 1)) return DSV4_OK;
    // grouped: the items of up to max_active groups (one bucket chunk each while the bound fits
    // the bucket) share one grid
    const int64_t n_tiles = (p.N + S::kRowsPerCta - 1) / S::kRowsPerCta *
                            (p.grouped ? (int64_t)p.grp.max_active * ((p.grp.bound + MT - 1) / MT) : 1);
    if (n_tiles >= ((int64_t)1 << 30)) // the kernel counts its items in 32 bits
        return dsv4_fail(DSV4_ERR_UNSUPPORTED, "linear_decode: %lld work items (N = %lld) is too many", (long long)n_tiles,
                         (long long)p.N);
    // About one wave of resident CTAs (DECODE_MIN_CTAS per SM: the launch bounds cap the
    // registers for it and the static shared memory, <= 48 KB per CTA, fits it), each looping
    // over tiles; the result does not depend on the grid (see above). No runtime API call but
    // two cached device queries, so this is safe inside a stream capture.
    const int per_sm = DECODE_MIN_CTAS;
    const int64_t resident = (int64_t)dsv4_cuda_sm_count() * per_sm;
    const int64_t others = splits; // CTAs along y
    int64_t want = (resident + others - 1) / others;
    if (want < 1) want = 1;
    const int64_t per_cta = (n_tiles + want - 1) / want; // tiles per CTA, then spread them evenly
    const int64_t gx = (n_tiles + per_cta - 1) / per_cta;
    const dim3 grid((unsigned)gx, (unsigned)splits, 1);
    if (p.grouped)
        DSV4_CUDA_TRY(dsv4_launch_pdl(linear_decode_v2<FMT, ACT, MT, true>, grid, dim3(DECODE_THREADS), 0, s, p),
                      "linear_decode_v2 launch (grouped)");
    else
        DSV4_CUDA_TRY(dsv4_launch_pdl(linear_decode_v2<FMT, ACT, MT, false>, grid, dim3(DECODE_THREADS), 0, s, p),
                      "linear_decode_v2 launch");
    return DSV4_OK;
}

template <int FMT, int ACT>
static dsv4_status launch_act(const LinearParams &p, int splits, cudaStream_t s) {
    switch (linear_decode_mt(p.M)) {
    case 8: return launch_mt<FMT, ACT, 8>(p, splits, s);
    case 16: return launch_mt<FMT, ACT, 16>(p, splits, s);
    case 32: return launch_mt<FMT, ACT, 32>(p, splits, s);
    case 64: return launch_mt<FMT, ACT, 64>(p, splits, s);
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear_decode: M = %lld above the decode limit", (long long)p.M);
    }
}

template <int FMT>
static dsv4_status launch_fmt(int act, const LinearParams &p, int splits, cudaStream_t s) {
    return act == LIN_ACT_NVFP4 ? launch_act<FMT, LIN_ACT_NVFP4>(p, splits, s) : launch_act<FMT, LIN_ACT_BF16>(p, splits, s);
}

dsv4_status linear_decode_launch(int fmt, int act, const LinearParams &p0, int splits, cudaStream_t s) {
    if (p0.grouped && splits != 1) return dsv4_fail(DSV4_ERR_INTERNAL, "linear_decode: grouped mode has no split-K");
    LinearParams p = p0;
    p.w_evict_first = dsv4_cuda_l2_hints_enabled();
    if (!p.w_evict_first || !p.grouped) // (dsv4_cuda_moe_grouped_linear checked the ranges it set)
        for (int i = 0; i < 4; i++) p.l2_warm[i] = NULL, p.l2_warm_bytes[i] = 0;
    // the kernel keeps element offsets into x in 32 bits (dense: x is [M, K]; grouped calls
    // check their x rows in dsv4_cuda_moe_grouped_linear)
    if (!p.grouped && p.M * p.K >= ((int64_t)1 << 32))
        return dsv4_fail(DSV4_ERR_UNSUPPORTED, "linear_decode: x [%lld, %lld] has 2^32 elements or more", (long long)p.M,
                         (long long)p.K);
    switch (fmt) {
    case LIN_NVFP4: return launch_fmt<LIN_NVFP4>(act, p, splits, s);
    case LIN_MXFP4: return launch_fmt<LIN_MXFP4>(act, p, splits, s);
    case LIN_FP8: return launch_fmt<LIN_FP8>(act, p, splits, s);
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear_decode: unknown format %d", fmt);
    }
}
