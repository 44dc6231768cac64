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
// mode costs one launch there. The per-block math is bit-identical to the reference form
// nvfp4_quant_group16: nvfp4_quant_group16_bf16 for BF16 rows (two elements per integer op,
// ~11 instructions per element), nvfp4_quant_group16_amax for fp32 rows. Prefill batches of
// BF16 rows (more row blocks than fit at once, rows of <= 512 groups) take
// k_quantize_rows_stream, which walks the rows with the next row block's loads in flight.
#include <limits.h>

#include "cuda/common.cuh"
#include "cuda/nvfp4.cuh"
#include "cuda/quantize.h"

#define QUANT_THREADS 256
#define MAX_PARTIALS (DSV4_CUDA_QUANTIZE_WORKSPACE_BYTES / 4)
#define SMALL_TENSOR 32768

// amax16 of a raw group (BF16: from its largest key, nvfp4_bf16_kmax).
template <int DT>
__device__ __forceinline__ float group_amax(const uint32_t w[RAW_WORDS(DT)]) {
    if constexpr (DT == DT_BF16) {
        return nvfp4_bf16_amax(w, nvfp4_bf16_kmax(w));
    } else {
        float v[16];
        unpack16<DT>(w, v);
        return amax16(v);
    }
}

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
            m = f_max_nan_ignored(m, group_amax<DT>(w[u]));
        }
    }
    m = block_reduce(m, sh, 1);
    if (threadIdx.x == 0) partial[blockIdx.x] = m;
}

// DYNAMIC_TENSOR's scale, by every block of a quantize kernel (all threads call it): the max of
// the amax kernel's n_partial partials, or (n_partial 0, a small tensor) of all n16 groups of x
// (max is order-free, so every block agrees); block 0 writes it to d.scale[0].
template <int DT>
__device__ __forceinline__ float tensor_scale(const void *x, int64_t n16, const float *partial, int n_partial, float *sh,
                                              const nvfp4_dst &d) {
    float m = 0.0f;
    if (n_partial > 0) {
        for (int i = threadIdx.x; i < n_partial; i += blockDim.x) m = f_max_nan_ignored(m, partial[i]);
    } else {
        for (int64_t gi = threadIdx.x; gi < n16; gi += blockDim.x) {
            uint32_t u[RAW_WORDS(DT)];
            load_raw16<DT>(x, gi * 16, u);
            m = f_max_nan_ignored(m, group_amax<DT>(u));
        }
    }
    const float s = nvfp4_dynamic_scale(block_reduce(m, sh, 1));
    if (blockIdx.x == 0 && threadIdx.x == 0) d.scale[0] = s;
    return s;
}

// TPR threads per row (row_threads), 256 / TPR rows per block, S groups per thread and pass
// (nvfp4.cuh: thread t holds groups t + j*TPR). A row of at most TPR*S groups is loaded once
// with all its loads in flight; DYNAMIC_TOKEN reduces its amax from those registers (warp
// shuffles, plus shared memory across the TPR/32 warps of a row) and quantizes them with the
// block amaxes it kept. Longer rows take several passes (DYNAMIC_TOKEN then reads the row
// twice, the second time mostly from L1/L2). Rows past M of the last block are padding rows
// of the swizzled layout (scales written zero) or, in the linear layout, nothing.
// BF16 rows go through nvfp4_quant_group16_bf16 (two elements per integer op) with the
// breakpoint table of their g, which each warp builds in shared memory (one entry a lane);
// F32 rows through nvfp4_quant_group16_amax.
// Thread t's group t + j*TPR has its scale byte sf_step*j bytes and its payload 8*TPR*j bytes
// after its first one (TPR is a multiple of 4, so the 128x4 swizzle only moves j's part by
// whole 512-byte tiles), so the stores take a constant offset per slot.
// Blocks per SM the BF16 kernels are register-bound for: 4 at S <= 4 (64 registers; S = 4,
// the 4096-row layout, then keeps ~5 words a group in L1 spill slots, where an unbound build
// takes 74 registers and 3 blocks: an A/B to run), 2 at S = 8 (128). fp32: 0, no bound (1
// would let ptxas spend up to 255 registers).
#define QUANT_MIN_BLOCKS(DT, S) ((DT) == DT_F32 ? 0 : (S) <= 4 ? 4 : 2)
template <int DT, int TPR, int S>
__global__ void __launch_bounds__(QUANT_THREADS, QUANT_MIN_BLOCKS(DT, S))
    k_quantize_rows(const void *x, int64_t M, int64_t K, nvfp4_dst d, const float *partial, int n_partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    constexpr int RPB = QUANT_THREADS / TPR, NW = TPR / 32, STEP = TPR * S, ES = DT == DT_F32 ? 4 : 2;
    __shared__ float sh[33];
    __shared__ __align__(16) uint32_t tbl[DT == DT_BF16 ? QUANT_THREADS / 32 : 1][32]; // BF16: a table per warp
    const int t = threadIdx.x % TPR, warp = threadIdx.x / 32;
    const int64_t r0 = (int64_t)blockIdx.x * RPB, r = r0 + threadIdx.x / TPR;
    const int kb = (int)(K / 16); // the launcher checks that it fits
    if (r0 >= M) { // a block of padding rows only
        nvfp4_zero_pad_n(&d, r, kb, 1, t, TPR);
        return;
    }
    const bool real = r < M; // warp-uniform (TPR >= 32); every thread stays for the barriers
    // this thread's first group; slot j of the pass at group `base` is group base + t + j*TPR
    const char *xt = (const char *)x + ((real ? r : 0) * K + (int64_t)t * 16) * ES;
    uint32_t w[S][RAW_WORDS(DT)];
    float ga[S];    // F32, DYNAMIC_TOKEN, one pass: each group's amax
    uint32_t gk[S]; // BF16, DYNAMIC_TOKEN, one pass: each group's largest key (nvfp4_bf16_kmax)
    float s;
    if (d.mode == 0) { // STATIC
        s = d.scale[0];
    } else if (d.mode == 1) { // DYNAMIC_TENSOR
        s = tensor_scale<DT>(x, M * kb, partial, n_partial, sh, d);
    } else { // DYNAMIC_TOKEN
        float m = 0.0f;
        for (int base = 0; real && base < kb; base += STEP) {
#pragma unroll
            for (int j = 0; j < S; j++)
                if (base + t + j * TPR < kb) load_raw16<DT>(xt, (int64_t)(base + j * TPR) * 16, w[j]);
#pragma unroll
            for (int j = 0; j < S; j++) {
                float a = 0.0f;
                if (base + t + j * TPR < kb) {
                    if constexpr (DT == DT_BF16) {
                        gk[j] = nvfp4_bf16_kmax(w[j]);
                        a = nvfp4_bf16_amax(w[j], gk[j]);
                    } else {
                        float v[16];
                        unpack16<DT>(w[j], v);
                        a = ga[j] = amax16(v);
                    }
                }
                m = f_max_nan_ignored(m, a);
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
    const bool have = d.mode == 2 && kb <= STEP; // one pass: the row is still in w[], its amaxes in ga[] / gk[]
    const nvfp4_bf16_g q = nvfp4_bf16_g_of(g); // BF16: q.fast is uniform over the row
    if (DT == DT_BF16) { // (a junk table for a g outside the BF16 path: its blocks are redone)
        tbl[warp][threadIdx.x % 32] = nvfp4_bf16_bp_entry(q.fast ? q.G : 1.0f, threadIdx.x % 32);
        __syncwarp();
    }
    const nvfp4_bf16_tbl tb = nvfp4_bf16_tbl_shared(tbl[DT == DT_BF16 ? warp : 0]);
    uint8_t *sfp = d.sf + nvfp4_sf_index(d.swizzled, r, t, kb);
    const int sf_step = d.swizzled ? TPR * 128 : TPR;
    uint2 *qp = (uint2 *)(d.q + r * (K / 2)) + t;
    for (int base = 0; base < kb; base += STEP, xt += STEP * 16 * ES, sfp += S * sf_step, qp += STEP) {
        const int rem = kb - base - t; // this pass holds slots j < nj
        const int nj = rem > TPR * (S - 1) ? S : rem <= 0 ? 0 : (rem + TPR - 1) / TPR;
        if (!have) {
#pragma unroll
            for (int j = 0; j < S; j++)
                if (j < nj) load_raw16<DT>(xt, j * TPR * 16, w[j]);
        }
        uint32_t redo = 0; // BF16: bit j set for a slot the BF16 path cannot do (a NaN, or g)
#pragma unroll
        for (int j = 0; j < S; j++) {
            if (j >= nj) break;
            uint32_t packed[2], sc;
            if constexpr (DT == DT_BF16) {
                uint32_t ax[8];
                const uint32_t km = nvfp4_bf16_keys(w[j], ax), kk = have ? gk[j] : km;
                sc = nvfp4_quant_group16_bf16(w[j], ax, kk, q, tb, packed);
                redo |= nvfp4_bf16_ok(q, kk) ? 0u : 1u << j;
            } else {
                float v[16];
                unpack16<DT>(w[j], v);
                sc = nvfp4_quant_group16_amax(v, have ? ga[j] : amax16(v), g, packed);
            }
            sfp[j * sf_step] = (uint8_t)sc;
            qp[j * TPR] = make_uint2(packed[0], packed[1]);
        }
        // Those again through the float path, from memory (this thread's own stores above are
        // overwritten in program order).
        if constexpr (DT == DT_BF16) {
#pragma unroll 1
            for (int j = 0; redo; j++, redo >>= 1) {
                if (!(redo & 1u)) continue;
                uint32_t u[8], packed[2];
                load_raw16<DT>(xt, j * TPR * 16, u);
                sfp[j * sf_step] = (uint8_t)nvfp4_quant_group16_raw_bf16(u, g, packed);
                qp[j * TPR] = make_uint2(packed[0], packed[1]);
            }
        }
    }
    nvfp4_zero_pad_n(&d, r, kb, 0, t, TPR);
}

// BF16 rows of at most S·TPR groups with more row blocks than fit at once (a prefill batch):
// a grid of STREAM_BLOCKS_PER_SM(S) blocks per SM walks the row blocks (block b: b, b + grid,
// ...) and loads its next row block while it quantizes the current one. k_quantize_rows
// instead gives each thread one row block: its loads, then its arithmetic, then its stores,
// with nothing in flight during the arithmetic (ncu at 4096x4096: 53 % of DRAM bandwidth,
// 41 % issue; two waves of blocks, each waiting for its loads). Same arithmetic per group,
// so bit-identical to it. STATIC / DYNAMIC_TENSOR build the breakpoint table once.
// H100, 4096x4096 (k_quantize_rows: 22.9 / 23.7 / 37.2 us static / per token / per tensor):
// S = 2, 3 blocks per SM (85 registers, both row blocks in registers without spills):
// 18.4 / 20.3 / 31.5 us; S = 1, 4 blocks per SM: 17.5 / 23.8 / 33.0 us (a row block per
// 256 threads: a shorter tail, but eight warps meet per row for a per-token amax). So
// static scales take S = 1, the others S = 2. (4 blocks per SM at S = 2 spilled: 20.5 us
// static. The same streaming for the fused RMSNorm was slower, 32.8 -> 34.9 us: its per-row
// barrier couples the block's rows every iteration.)
#define STREAM_BLOCKS_PER_SM(S) ((S) == 1 ? 4 : 3)
template <int TPR, int S>
__global__ void __launch_bounds__(QUANT_THREADS, STREAM_BLOCKS_PER_SM(S))
    k_quantize_rows_stream(const void *x, int64_t M, int64_t K, int64_t rows, nvfp4_dst d, const float *partial,
                           int n_partial) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    constexpr int RPB = QUANT_THREADS / TPR, NW = TPR / 32;
    __shared__ float sh[2][QUANT_THREADS / 32]; // DYNAMIC_TOKEN: the row's warp maxima, by iteration parity
    __shared__ float shr[33];
    __shared__ __align__(16) uint32_t tbl[QUANT_THREADS / 32][32];
    const int t = threadIdx.x % TPR, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int kb = (int)(K / 16); // <= S·TPR (the launcher)
    const int64_t real_blocks = (M + RPB - 1) / RPB, all_blocks = (rows + RPB - 1) / RPB;
    float s = 0.0f;
    if (d.mode == 0) {
        s = d.scale[0];
    } else if (d.mode == 1) { // (the launcher gives this kernel the partials)
        s = tensor_scale<DT_BF16>(x, M * kb, partial, n_partial, shr, d);
    }
    nvfp4_bf16_g q = nvfp4_bf16_g_of(f_div(1.0f, s));
    if (d.mode != 2) {
        tbl[warp][lane] = nvfp4_bf16_bp_entry(q.fast ? q.G : 1.0f, lane);
        __syncwarp();
    }
    nvfp4_bf16_tbl tb = nvfp4_bf16_tbl_shared(tbl[warp]);

    uint32_t cur[S][8] = {}, nxt[S][8] = {}; // (slots past the row or past M are never used)
    auto load_rows = [&](int64_t rb, uint32_t (&w)[S][8]) {
        const int64_t r = rb * RPB + threadIdx.x / TPR;
#pragma unroll
        for (int j = 0; j < S; j++)
            if (r < M && t + j * TPR < kb) load_raw16<DT_BF16>(x, r * K + (int64_t)(t + j * TPR) * 16, w[j]);
    };
    if (blockIdx.x < real_blocks) load_rows(blockIdx.x, cur);
    int parity = 0;
    for (int64_t rb = blockIdx.x; rb < real_blocks; rb += gridDim.x, parity ^= 1) {
        const int64_t r = rb * RPB + threadIdx.x / TPR;
        const bool real = r < M; // warp-uniform; every thread stays for the barriers
        if (rb + gridDim.x < real_blocks) load_rows(rb + gridDim.x, nxt); // in flight during this block's work
        uint32_t gk[S];
#pragma unroll
        for (int j = 0; j < S; j++) gk[j] = real && t + j * TPR < kb ? nvfp4_bf16_kmax(cur[j]) : 0u;
        if (d.mode == 2) { // DYNAMIC_TOKEN: the row's amax, its scale and its table
            float m = 0.0f;
#pragma unroll
            for (int j = 0; j < S; j++) m = f_max_nan_ignored(m, gk[j] ? nvfp4_bf16_amax(cur[j], gk[j]) : 0.0f);
#pragma unroll
            for (int o = 16; o > 0; o >>= 1) m = f_max_nan_ignored(m, __shfl_xor_sync(0xffffffffu, m, o));
            if (NW > 1) {
                if (lane == 0) sh[parity][warp] = m;
                // the row's warps only (barrier 1 + its row in the block; 0 is __syncthreads), so
                // the block's rows do not wait for each other; sh[parity] is rewritten two
                // iterations on, after the row's next barrier (H100, per token: 22.0 -> 21.6 us
                // against __syncthreads, same run)
                if (RPB > 1)
                    asm volatile("bar.sync %0, %1;" ::"r"(1 + (int)(threadIdx.x / TPR)), "r"(TPR) : "memory");
                else
                    __syncthreads();
                const int w0 = warp / NW * NW;
#pragma unroll
                for (int i = 0; i < NW; i++) m = f_max_nan_ignored(m, sh[parity][w0 + i]);
            }
            s = nvfp4_dynamic_scale(m);
            if (real && t == 0) d.scale[r] = s;
            q = nvfp4_bf16_g_of(f_div(1.0f, s));
            __syncwarp(); // the previous row's table reads are done
            tbl[warp][lane] = nvfp4_bf16_bp_entry(q.fast ? q.G : 1.0f, lane);
            __syncwarp();
            tb = nvfp4_bf16_tbl_shared(tbl[warp]); // after the rebuild: pins the table reads below it
        }
        if (real) {
#pragma unroll
            for (int j = 0; j < S; j++) {
                const int c = t + j * TPR;
                if (c >= kb) break;
                nvfp4_store_group_bf16(d, r, c, kb, cur[j], gk[j], q, tb);
            }
            nvfp4_zero_pad_n(&d, r, kb, 0, t, TPR);
        } else {
            nvfp4_zero_pad_n(&d, r, kb, 1, t, TPR);
        }
#pragma unroll
        for (int j = 0; j < S; j++)
#pragma unroll
            for (int k = 0; k < 8; k++) cur[j][k] = nxt[j][k];
    }
    // the swizzled layout's padding row blocks past the last real one
    for (int64_t rb = real_blocks + blockIdx.x; rb < all_blocks; rb += gridDim.x)
        nvfp4_zero_pad_n(&d, rb * RPB + threadIdx.x / TPR, kb, 1, t, TPR);
}

typedef void (*quantize_kernel)(const void *, int64_t, int64_t, nvfp4_dst, const float *, int);
#define QK_S(DT, TPR) {k_quantize_rows<DT, TPR, 1>, k_quantize_rows<DT, TPR, 2>, k_quantize_rows<DT, TPR, 4>, \
                       k_quantize_rows<DT, TPR, DT == DT_F32 ? 4 : 8>}
#define QK_T(DT) {QK_S(DT, 32), QK_S(DT, 64), QK_S(DT, 128), QK_S(DT, 256)}
// [dtype][log2(TPR/32)][log2(S)]; fp32 stops at 4 groups per thread (64 registers of input,
// as BF16's 8).
static const quantize_kernel k_quantize_table[2][4][4] = {QK_T(DT_F32), QK_T(DT_BF16)};

typedef void (*quantize_kernel_stream)(const void *, int64_t, int64_t, int64_t, nvfp4_dst, const float *, int);

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
    if (M < 0 || K <= 0 || K % 16 || M > INT_MAX / 2 || K / 16 > INT_MAX / 2 || K > INT64_MAX / 4 / (M > 0 ? M : 1))
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
    if (dtype == DSV4_CUDA_BF16 && kb <= 2 * QUANT_THREADS && !dsv4_cuda_row_threads_override() &&
        (out->mode != DSV4_ACT_SCALE_DYNAMIC_TENSOR || n_partial > 0)) {
        // rows of <= 512 groups: the streaming kernel once the rows outnumber one pass of the grid
        // groups per thread: one for a static scale (more, smaller row blocks: a shorter tail),
        // two otherwise (a per-token amax is a barrier per row block, across twice the warps)
        const int sg = out->mode == DSV4_ACT_SCALE_STATIC && kb <= QUANT_THREADS ? 1 : 2;
        int tpr = 32;
        while (tpr * sg < kb) tpr *= 2;
        const int64_t blocks = (M + QUANT_THREADS / tpr - 1) / (QUANT_THREADS / tpr);
        const int64_t grid = (int64_t)dsv4_cuda_sm_count() * STREAM_BLOCKS_PER_SM(sg);
        if (blocks > grid) {
            const quantize_kernel_stream ks[2][4] = {
                {k_quantize_rows_stream<32, 1>, k_quantize_rows_stream<64, 1>, k_quantize_rows_stream<128, 1>,
                 k_quantize_rows_stream<256, 1>},
                {k_quantize_rows_stream<32, 2>, k_quantize_rows_stream<64, 2>, k_quantize_rows_stream<128, 2>,
                 k_quantize_rows_stream<256, 2>}};
            (void)dsv4_launch_pdl(ks[sg - 1][ilog2(tpr / 32)], dim3((unsigned)grid), dim3(QUANT_THREADS), 0, stream, x, M, K, rows,
                                  d, (const float *)workspace, n_partial);
            DSV4_CUDA_LAUNCHED("quantize_nvfp4: streaming quantize kernel");
            return DSV4_OK;
        }
    }
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
// The BF16 path (nvfp4_quant_group16_bf16 with the table of g built as the kernels do).
extern "C" uint8_t dsv4_cuda_host_quant_group16_bf16(const uint16_t v[16], float g, uint8_t packed[8]) {
    uint32_t x[8], ax[8], w[2];
    alignas(16) uint32_t tbl[32];
    for (int h = 0; h < 8; h++) x[h] = v[2 * h] | ((uint32_t)v[2 * h + 1] << 16);
    const nvfp4_bf16_g q = nvfp4_bf16_g_of(g);
    for (int i = 0; i < 32; i++) tbl[i] = nvfp4_bf16_bp_entry(q.fast ? q.G : 1.0f, i);
    const uint32_t kk = nvfp4_bf16_keys(x, ax);
    uint8_t s = (uint8_t)nvfp4_quant_group16_bf16(x, ax, kk, q, nvfp4_bf16_tbl{0, tbl}, w);
    if (!nvfp4_bf16_ok(q, kk)) s = (uint8_t)nvfp4_quant_group16_raw_bf16(x, g, w);
    for (int i = 0; i < 8; i++) packed[i] = (uint8_t)(w[i / 4] >> (8 * (i % 4)));
    return s;
}
extern "C" void dsv4_cuda_host_bf16_payload(const uint16_t *v, int64_t n16, float g, uint8_t code, uint8_t *packed) {
    alignas(16) uint32_t tbl[32];
    for (int i = 0; i < 32; i++) tbl[i] = nvfp4_bf16_bp_entry(f_abs(g), i);
    for (int64_t b = 0; b < n16; b++) {
        uint32_t x[8], ax[8], w[2];
        for (int h = 0; h < 8; h++) x[h] = v[16 * b + 2 * h] | ((uint32_t)v[16 * b + 2 * h + 1] << 16);
        (void)nvfp4_bf16_keys(x, ax);
        nvfp4_bf16_payload(x, ax, code & 0x7fu, nvfp4_bf16_tbl{0, tbl}, w);
        for (int i = 0; i < 8; i++) packed[8 * b + i] = (uint8_t)(w[i / 4] >> (8 * (i % 4)));
    }
}
extern "C" uint8_t dsv4_cuda_host_bf16_scale(uint16_t amax_bits, float g) {
    return (uint8_t)(nvfp4_bf16_scale((uint32_t)amax_bits * 0x10001u, f_abs(g)) | ((f2u(g) >> 24) & 0x80u));
}
extern "C" uint8_t dsv4_cuda_host_e4m3_div6(float x) { return (uint8_t)e4m3_code_nonneg(nvfp4_div6(x)); }
extern "C" uint16_t dsv4_cuda_host_bf16_breakpoint(float g, int i) {
    return (uint16_t)(0x8000u + (127u << 7) - (nvfp4_bf16_bp_entry(f_abs(g), i) & 0xffffu));
}
extern "C" int dsv4_cuda_host_bf16_fast_g(float g) { return nvfp4_bf16_fast_g(g); }
extern "C" void dsv4_cuda_host_bf16_encode16(const float v[16], uint16_t out[16]) {
    uint32_t b[8];
    bf16_encode16(v, b);
    for (int i = 0; i < 16; i++) out[i] = (uint16_t)(b[i / 2] >> (16 * (i % 2)));
}
