// MoE router and permutation kernels (header: moe_route.h; CPU references: src/cpu/router.c
// and src/cpu/moe_route.c).
//
// Router: one block per token. The E <= 384 scores are computed one or a few per thread (the
// exact exp / log1p are long double-precision sequences: one warp doing all 256 of a
// one-token step took ~14 us) into shared memory; then warp 0 does the top-k as k rounds of a
// warp argmax over the scores it holds in registers. The sums the CPU does serially (the
// softmax denominator, the sum of the k weights) are done serially by one thread in the CPU's
// order, because a tree sum would round differently; they are E and k additions per token.
//
// Permutation: a one-block kernel counts pairs per expert (shared-memory atomics; an
// integer count does not depend on the order of the increments) and writes the padded
// offsets and the tile -> expert map; then one block per expert ranks that expert's pairs in
// ascending pair order (ballot + popc per warp, warp totals per block) and writes rows and
// the inverse map, and one extra block fills the unused tail of row_token with -1. Each
// expert's block stops scanning once it has placed all of its pairs. Up to PLACE_FUSED_PAIRS
// pairs (decode steps) the count kernel ranks and places them itself, and the router does
// all of it in its last block (k_moe_route_place): routing and layout in one launch.
#include <limits.h>
#include <math.h>

#include "cuda/common.cuh"
#include "cuda/moe_math.cuh"
#include "cuda/moe_route.h"
#include "cuda/nvfp4.cuh"

#define ROUTER_THREADS 128 // per token: up to DSV4_CUDA_MOE_MAX_EXPERTS / 128 experts per thread
#define COUNT_THREADS 1024 // >= DSV4_CUDA_MOE_MAX_EXPERTS: one thread per expert in the scans
#define PLACE_THREADS 256
#define PLACE_FUSED_PAIRS DSV4_CUDA_MOE_ONE_LAUNCH_PAIRS // up to this many (token, expert) pairs the count kernel places them too
#define ROUTE_PLACE_THREADS DSV4_CUDA_MOE_MAX_EXPERTS // the fused router: one thread per expert
#define SCORE_SQRTSOFTPLUS 0
#define SCORE_SIGMOID 1
#define SCORE_SOFTMAX 2

// dsv4_cpu_softplus: max(x, 0) + log1p(e^-|x|), the same float roundings in between.
__device__ __forceinline__ float softplus_as_cpu(float x) {
    return f_add(fmaxf(x, 0.0f), moe_log1pf(moe_expf(-fabsf(x))));
}

__device__ __forceinline__ int warp_min_int(int v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = min(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// One token's routing (router.c's route_one) by a block of NT threads: scores into s, the k
// choices into idx[t·ks ..], their weights into weights[t·ks ..] (ks = k, or k + 1 with the
// shared expert as slot k: id shared_e, weight 1). Every thread must call it; thread 0 writes.
//
// Selection (warp 0): lane l holds the biased scores of experts l, l + 32, ... in registers;
// each of the k rounds is a warp reduction over them. router.c scans upward from the first
// unused expert and replaces it only by a strictly larger value, so if that first value is
// NaN it is chosen; otherwise the winner is the largest non-NaN unused value with the lowest
// id (-0 equals +0, as in its '>' scan). (value, id) with id ascending is a total order the
// butterfly reduces exactly, so every lane gets the same answer.
template <int NT>
__device__ void route_token(int t, int E, int k, int score, int normalize, float scaling, const float *logits,
                            const float *bias, const int32_t *tid2eid, const int32_t *token_ids, int vocab,
                            int32_t *idx, float *weights, int ks, int shared_e) {
    constexpr int kPer = (DSV4_CUDA_MOE_MAX_EXPERTS + NT - 1) / NT; // experts per thread
    constexpr int kLane = DSV4_CUDA_MOE_MAX_EXPERTS / 32;           // experts per lane in the selection
    __shared__ float s[DSV4_CUDA_MOE_MAX_EXPERTS]; // scores
    __shared__ float b[DSV4_CUDA_MOE_MAX_EXPERTS]; // score + bias
    __shared__ int sel[DSV4_CUDA_MOE_MAX_TOPK];
    __shared__ float red[NT / 32];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const float *l = logits + (int64_t)t * E;
    // every load of the token up front (one round trip): the thread's logits and selection biases
    float lv[kPer], bv[kPer];
#pragma unroll
    for (int j = 0; j < kPer; j++) {
        const int e = tid + NT * j;
        lv[j] = e < E ? l[e] : 0.0f;
        bv[j] = e < E && bias && !tid2eid ? bias[e] : 0.0f;
    }

    // ---- scores (router.c score_row), spread over the block: the exact exp / log1p are
    // long double-precision sequences, so one expert per thread rather than E per lane
    if (score == SCORE_SOFTMAX) {
        // fmaxf with NaN as identity folds to the CPU's fmaxf(l[0], ...) value in any order
        float mx = __int_as_float(0x7fc00000);
#pragma unroll
        for (int j = 0; j < kPer; j++)
            if (tid + NT * j < E) mx = fmaxf(mx, lv[j]);
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
        if (lane == 0) red[warp] = mx;
        __syncthreads();
#pragma unroll
        for (int w = 0; w < NT / 32; w++) mx = fmaxf(mx, red[w]);
#pragma unroll
        for (int j = 0; j < kPer; j++)
            if (tid + NT * j < E) s[tid + NT * j] = moe_expf(__fsub_rn(lv[j], mx));
        __syncthreads();
        if (tid == 0) { // the CPU's serial order
            float sum = 0.0f;
            for (int e = 0; e < E; e++) sum = f_add(sum, s[e]);
            red[0] = sum;
        }
        __syncthreads();
        const float sum = red[0];
#pragma unroll
        for (int j = 0; j < kPer; j++)
            if (tid + NT * j < E) s[tid + NT * j] = f_div(s[tid + NT * j], sum);
    } else {
#pragma unroll
        for (int j = 0; j < kPer; j++) {
            const int e = tid + NT * j;
            if (e < E)
                s[e] = score == SCORE_SIGMOID ? f_div(1.0f, f_add(1.0f, moe_expf(-lv[j]))) : f_sqrt(softplus_as_cpu(lv[j]));
        }
    }
    if (!tid2eid) {
#pragma unroll
        for (int j = 0; j < kPer; j++) {
            const int e = tid + NT * j;
            if (e < E) b[e] = f_add(s[e], bv[j]); // the bias steers the choice only (0 without one, as router.c)
        }
    }
    __syncthreads();

    if (warp == 0) {
        // ---- selection
        if (tid2eid) {
            if (lane < k) {
                const int32_t tok = token_ids[t];
                int32_t e = -1;
                if (tok >= 0 && tok < vocab) e = tid2eid[(int64_t)tok * k + lane];
                sel[lane] = e >= 0 && e < E ? e : -1; // out of range: dropped (router.c fails instead)
            }
        } else {
            float v[kLane];
            bool live[kLane]; // expert lane + 32 j exists and is not chosen yet
#pragma unroll
            for (int j = 0; j < kLane; j++) {
                live[j] = lane + 32 * j < E;
                v[j] = live[j] ? b[lane + 32 * j] : 0.0f;
            }
            for (int r = 0; r < k; r++) {
                int first = INT_MAX, bi = -1; // the lane's lowest unused id; its best non-NaN one
                float bval = 0.0f;
#pragma unroll
                for (int j = kLane - 1; j >= 0; j--) // descending: the last assignment is the lowest id
                    if (live[j]) first = lane + 32 * j;
#pragma unroll
                for (int j = 0; j < kLane; j++) // ascending: strict '>' keeps the lowest id
                    if (live[j] && !isnan(v[j]) && (bi < 0 || v[j] > bval)) bval = v[j], bi = lane + 32 * j;
                first = warp_min_int(first);
#pragma unroll
                for (int o = 16; o > 0; o >>= 1) {
                    const float ov = __shfl_xor_sync(0xffffffffu, bval, o);
                    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
                    if (oi >= 0 && (bi < 0 || ov > bval || (ov == bval && oi < bi))) bval = ov, bi = oi;
                }
                const int best = isnan(b[first]) ? first : bi;
#pragma unroll
                for (int j = 0; j < kLane; j++)
                    if (lane + 32 * j == best) live[j] = false;
                if (lane == 0) sel[r] = best;
            }
        }
        __syncwarp();

        // ---- weights (lane 0: k <= 8 values, the CPU's serial sum)
        if (lane == 0) {
            float sum = 0.0f;
            for (int j = 0; j < k; j++) sum = f_add(sum, sel[j] >= 0 ? s[sel[j]] : 0.0f);
            for (int j = 0; j < k; j++) {
                float v = sel[j] >= 0 ? s[sel[j]] : 0.0f;
                if (normalize) v = f_div(v, f_add(sum, 1e-20f));
                v = f_mul(v, scaling);
                idx[(int64_t)t * ks + j] = sel[j];
                weights[(int64_t)t * ks + j] = sel[j] >= 0 ? v : 0.0f;
            }
            if (shared_e >= 0) idx[(int64_t)t * ks + k] = shared_e, weights[(int64_t)t * ks + k] = 1.0f;
        }
    }
}

__global__ void __launch_bounds__(ROUTER_THREADS)
    k_moe_router(int E, int k, int score, int normalize, float scaling, int T, const float *logits,
                 const float *bias, const int32_t *tid2eid, const int32_t *token_ids, int vocab, int32_t *idx,
                 float *weights) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    route_token<ROUTER_THREADS>(blockIdx.x, E, k, score, normalize, scaling, logits, bias, tid2eid, token_ids, vocab,
                                idx, weights, k, -1);
}

static dsv4_status router_check(const dsv4_cuda_router_cfg *cfg, int T, const float *logits, const int32_t *tid2eid,
                                const int32_t *token_ids, int vocab, const int32_t *idx, const float *weights) {
    if (!cfg || (T > 0 && (!logits || !idx || !weights)) || (tid2eid && !token_ids))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_router: NULL argument");
    const int E = cfg->n_experts, k = cfg->topk;
    if (T < 0 || E <= 0 || E > DSV4_CUDA_MOE_MAX_EXPERTS || k <= 0 || k > DSV4_CUDA_MOE_MAX_TOPK ||
        (!tid2eid && k > E) || (tid2eid && vocab <= 0))
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_router: bad sizes T=%d E=%d k=%d vocab=%d (E <= %d, k <= %d)", T, E, k,
                         vocab, DSV4_CUDA_MOE_MAX_EXPERTS, DSV4_CUDA_MOE_MAX_TOPK);
    if (cfg->score < SCORE_SQRTSOFTPLUS || cfg->score > SCORE_SOFTMAX)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_router: unknown scoring function %d", cfg->score);
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_moe_router(cudaStream_t stream, const dsv4_cuda_router_cfg *cfg, int T,
                                            const float *logits, const float *bias, const int32_t *tid2eid,
                                            const int32_t *token_ids, int vocab, int32_t *idx, float *weights) {
    DSV4_TRY(router_check(cfg, T, logits, tid2eid, token_ids, vocab, idx, weights));
    if (T == 0) return DSV4_OK;
    (void)dsv4_launch_pdl(k_moe_router, dim3((unsigned)T), dim3(ROUTER_THREADS), 0, stream, cfg->n_experts, cfg->topk,
                          cfg->score, cfg->normalize, cfg->scaling, T, logits, bias, tid2eid, token_ids, vocab, idx,
                          weights);
    DSV4_CUDA_LAUNCHED("moe_router: kernel");
    return DSV4_OK;
}

// ---------------------------------------------------------------- permutation

// The expert owning layout row r < off[E]: the largest e with off[e] <= r (an empty expert's
// offset equals the next one's, so it never owns a row).
__device__ __forceinline__ int row_owner(const int *off, int E, int r) {
    int lo = 0, hi = E - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (off[mid] <= r)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

// Counts, padded offsets, the tile -> expert map and (active != NULL) the active-expert list,
// by one block of NT >= E threads. With `k` > 0 (n_pairs <= PLACE_FUSED_PAIRS, a decode step)
// it also does k_moe_place's work: a pair's rank among its expert's pairs is the count of
// earlier pairs with the same expert (the same ascending-pair order), so the layout costs no
// launch of its own. idx is read through L2 (__ldcg): in the fused router other blocks wrote it.
template <int NT>
__device__ void count_place(const int32_t *idx, int n_pairs, int E, int tile, int max_tiles, int32_t *counts,
                            int32_t *offsets, int32_t *tile_expert, int32_t *inv, int32_t *active, int32_t *n_active,
                            int k, int max_rows, int32_t *row_token) {
    static_assert(NT >= DSV4_CUDA_MOE_MAX_EXPERTS && NT % 32 == 0 && NT <= 1024, "one thread per expert in the scans");
    constexpr int kWarps = NT / 32;
    __shared__ int cnt[DSV4_CUDA_MOE_MAX_EXPERTS];
    __shared__ int off[DSV4_CUDA_MOE_MAX_EXPERTS + 1];
    __shared__ int act[DSV4_CUDA_MOE_MAX_EXPERTS];
    __shared__ int32_t pair_e[PLACE_FUSED_PAIRS];
    __shared__ int n_act;
    __shared__ int w_off[kWarps], w_act[kWarps];
    for (int e = threadIdx.x; e < E; e += NT) cnt[e] = 0;
    __syncthreads();
    for (int p = threadIdx.x; p < n_pairs; p += NT) {
        const int32_t e = __ldcg(idx + p);
        if (k > 0) pair_e[p] = e;
        if (e >= 0 && e < E)
            atomicAdd(&cnt[e], 1);
        else
            inv[p] = -1; // a dropped pair; the placing writes every other entry
    }
    __syncthreads();
    // Exclusive scans over experts (thread e <-> expert e, E <= NT): the padded counts give
    // the offsets, the "has pairs" flags the position in the ascending active-expert list.
    // Integer sums: any order gives the serial result.
    {
        const int e = threadIdx.x, lane = e & 31, warp = e >> 5;
        const int pc = e < E ? (cnt[e] + tile - 1) / tile * tile : 0, fa = e < E && cnt[e] > 0;
        int x = pc, y = fa; // inclusive warp scans
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const int xo = __shfl_up_sync(0xffffffffu, x, o), yo = __shfl_up_sync(0xffffffffu, y, o);
            if (lane >= o) x += xo, y += yo;
        }
        if (lane == 31) w_off[warp] = x, w_act[warp] = y;
        __syncthreads();
        if (warp == 0) { // exclusive scan of the warp totals
            const int a0 = lane < kWarps ? w_off[lane] : 0, b0 = lane < kWarps ? w_act[lane] : 0;
            int a = a0, b = b0;
#pragma unroll
            for (int o = 1; o < 32; o <<= 1) {
                const int ao = __shfl_up_sync(0xffffffffu, a, o), bo = __shfl_up_sync(0xffffffffu, b, o);
                if (lane >= o) a += ao, b += bo;
            }
            if (lane < kWarps) w_off[lane] = a - a0, w_act[lane] = b - b0;
        }
        __syncthreads();
        const int ox = w_off[warp] + x - pc, ay = w_act[warp] + y - fa; // exclusive
        if (e < E) {
            off[e] = ox;
            if (fa) act[ay] = e;
        }
        if (e == E - 1) off[E] = ox + pc, n_act = ay + fa;
    }
    __syncthreads();
    if (active) {
        for (int e = threadIdx.x; e < E; e += NT) active[e] = e < n_act ? act[e] : -1;
        if (threadIdx.x == 0) *n_active = n_act;
    }
    for (int e = threadIdx.x; e < E; e += NT) counts[e] = cnt[e];
    for (int e = threadIdx.x; e <= E; e += NT) offsets[e] = off[e];
    for (int i = threadIdx.x; i < max_tiles; i += NT) {
        const int r = i * tile;
        tile_expert[i] = r < off[E] ? row_owner(off, E, r) : -1;
    }
    if (k > 0) { // the place step (k_moe_place) for a few pairs
        for (int p = threadIdx.x; p < n_pairs; p += NT) {
            const int e = pair_e[p];
            if (e < 0 || e >= E) continue;
            int rank = 0;
            for (int q = 0; q < p; q++) rank += pair_e[q] == e;
            const int r = off[e] + rank;
            row_token[r] = p / k;
            inv[p] = r;
        }
        for (int r = threadIdx.x; r < max_rows; r += NT) { // padding rows and the tail
            bool pad = r >= off[E];
            if (!pad) {
                const int e = row_owner(off, E, r);
                pad = r >= off[e] + cnt[e];
            }
            if (pad) row_token[r] = -1;
        }
    }
}

__global__ void __launch_bounds__(COUNT_THREADS)
    k_moe_count(const int32_t *idx, int n_pairs, int E, int tile, int max_tiles, int32_t *counts, int32_t *offsets,
                int32_t *tile_expert, int32_t *inv, int32_t *active, int32_t *n_active, int k, int max_rows,
                int32_t *row_token) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    count_place<COUNT_THREADS>(idx, n_pairs, E, tile, max_tiles, counts, offsets, tile_expert, inv, active, n_active, k,
                               max_rows, row_token);
}

// The router and the fused count + place in one launch (a decode step): every block routes its
// token; the last block to finish (a device counter, reset by that block for the next launch)
// lays out all pairs. Which block is last does not change a bit of the result. shared_e >= 0
// (= E): every token gets slot k = (shared_e, weight 1) as well, and the layout has E + 1 groups.
__global__ void __launch_bounds__(ROUTE_PLACE_THREADS)
    k_moe_route_place(int E, int k, int score, int normalize, float scaling, int T, const float *logits,
                      const float *bias, const int32_t *tid2eid, const int32_t *token_ids, int vocab, int32_t *idx,
                      float *weights, int tile, int max_tiles, int max_rows, dsv4_moe_layout L, int32_t *active,
                      int32_t *n_active, unsigned int *done, int shared_e) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    const int ks = k + (shared_e >= 0); // slots per token
    route_token<ROUTE_PLACE_THREADS>(blockIdx.x, E, k, score, normalize, scaling, logits, bias, tid2eid, token_ids,
                                     vocab, idx, weights, ks, shared_e);
    __shared__ bool last;
    __syncthreads(); // whichever threads wrote this token's idx and weights (today thread 0) are
                     // done before thread 0's fence publishes them
    if (threadIdx.x == 0) {
        if (gridDim.x == 1) {
            last = true; // one token: the barrier below publishes them to this block; no round trips
        } else {
            __threadfence();
            last = atomicAdd(done, 1u) == (unsigned)T - 1u;
        }
    }
    __syncthreads();
    if (!last) return;
    if (gridDim.x > 1) __threadfence();
    count_place<ROUTE_PLACE_THREADS>(idx, T * ks, E + (shared_e >= 0), tile, max_tiles, L.counts, L.offsets,
                                     L.tile_expert, L.inv, active, n_active, ks, max_rows, L.row_token);
    if (threadIdx.x == 0) *done = 0u;
}

__global__ void __launch_bounds__(PLACE_THREADS)
    k_moe_place(const int32_t *idx, int n_pairs, int k, int E, int max_rows, const int32_t *counts,
                const int32_t *offsets, int32_t *row_token, int32_t *inv) {
    pdl_launch_dependents();
    pdl_wait(); // PDL: see common.cuh
    __shared__ int warp_total[PLACE_THREADS / 32];
    const int e = blockIdx.x, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    if (e == E) { // the tail past the rows in use
        for (int r = offsets[E] + threadIdx.x; r < max_rows; r += blockDim.x) row_token[r] = -1;
        return;
    }
    const int base = offsets[e], c = counts[e], end = offsets[e + 1];
    for (int r = base + c + threadIdx.x; r < end; r += blockDim.x) row_token[r] = -1; // padding
    int placed = 0; // the same in every thread: the loop condition is block-uniform
    for (int chunk = 0; chunk < n_pairs && placed < c; chunk += blockDim.x) {
        const int p = chunk + threadIdx.x;
        const bool mine = p < n_pairs && idx[p] == e;
        const unsigned ballot = __ballot_sync(0xffffffffu, mine);
        if (lane == 0) warp_total[warp] = __popc(ballot);
        __syncthreads();
        int before = 0, total = 0;
        for (int w = 0; w < PLACE_THREADS / 32; w++) {
            before += w < warp ? warp_total[w] : 0;
            total += warp_total[w];
        }
        if (mine) {
            const int r = base + placed + before + __popc(ballot & ((1u << lane) - 1u));
            row_token[r] = p / k;
            inv[p] = r;
        }
        placed += total;
        __syncthreads(); // warp_total is rewritten by the next chunk
    }
}

extern "C" dsv4_status dsv4_cuda_moe_permute(cudaStream_t stream, const int32_t *idx, int T, int k, int E, int tile,
                                             const dsv4_moe_layout *out) {
    return dsv4_cuda_moe_permute_active(stream, idx, T, k, E, tile, out, NULL, NULL);
}

static dsv4_status permute_check(const int32_t *idx, int T, int k, int E, int tile, const dsv4_moe_layout *out,
                                 const int32_t *active, const int32_t *n_active) {
    const int64_t max_rows = dsv4_moe_max_rows(T, k, E, tile);
    if (max_rows < 0 || E > DSV4_CUDA_MOE_MAX_EXPERTS)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_permute: bad sizes T=%d k=%d E=%d tile=%d (E <= %d, rows < 2^31)", T, k,
                         E, tile, DSV4_CUDA_MOE_MAX_EXPERTS);
    if (!out || !out->counts || !out->offsets || !out->row_token || !out->tile_expert || !out->inv ||
        (T > 0 && !idx) || (!active) != (!n_active))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_permute: NULL argument");
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_moe_permute_active(cudaStream_t stream, const int32_t *idx, int T, int k, int E,
                                                    int tile, const dsv4_moe_layout *out, int32_t *active,
                                                    int32_t *n_active) {
    DSV4_TRY(permute_check(idx, T, k, E, tile, out, active, n_active));
    const int64_t max_rows = dsv4_moe_max_rows(T, k, E, tile);
    // T = 0 still runs: the layout (all padding, no tiles) is written either way
    const int n_pairs = T * k, max_tiles = (int)(max_rows / tile);
    const bool fused = n_pairs <= PLACE_FUSED_PAIRS; // count and place in one launch
    (void)dsv4_launch_pdl(k_moe_count, dim3(1), dim3(COUNT_THREADS), 0, stream, idx, n_pairs, E, tile, max_tiles, out->counts,
                          out->offsets, out->tile_expert, out->inv, active, n_active, fused ? k : 0, (int)max_rows,
                          out->row_token);
    DSV4_CUDA_LAUNCHED("moe_permute: count kernel");
    if (fused) return DSV4_OK;
    (void)dsv4_launch_pdl(k_moe_place, dim3((unsigned)E + 1), dim3(PLACE_THREADS), 0, stream, idx, n_pairs, k, E, (int)max_rows, out->counts,
                                                               out->offsets, out->row_token, out->inv);
    DSV4_CUDA_LAUNCHED("moe_permute: place kernel");
    return DSV4_OK;
}

extern "C" dsv4_status dsv4_cuda_moe_route_permute(cudaStream_t stream, const dsv4_cuda_router_cfg *cfg, int T,
                                                   const float *logits, const float *bias, const int32_t *tid2eid,
                                                   const int32_t *token_ids, int vocab, int32_t *idx, float *weights,
                                                   int tile, const dsv4_moe_layout *out, int32_t *active,
                                                   int32_t *n_active, unsigned int *done, int with_shared) {
    DSV4_TRY(router_check(cfg, T, logits, tid2eid, token_ids, vocab, idx, weights));
    const int E = cfg->n_experts, k = cfg->topk, sh = with_shared ? 1 : 0;
    DSV4_TRY(permute_check(idx, T, k + sh, E + sh, tile, out, active, n_active));
    const bool one_launch = T >= 1 && (int64_t)T * (k + sh) <= PLACE_FUSED_PAIRS && done;
    if (sh && (!one_launch || E + 1 > DSV4_CUDA_MOE_MAX_EXPERTS))
        return dsv4_fail(DSV4_ERR_UNSUPPORTED, "moe_route_permute: the shared-expert slot needs T x (k + 1) <= %d pairs "
                         "(T = %d, k = %d), E < %d and the block counter", PLACE_FUSED_PAIRS, T, k,
                         DSV4_CUDA_MOE_MAX_EXPERTS);
    if (!one_launch) { // the two-step path
        DSV4_TRY(dsv4_cuda_moe_router(stream, cfg, T, logits, bias, tid2eid, token_ids, vocab, idx, weights));
        return dsv4_cuda_moe_permute_active(stream, idx, T, k, E, tile, out, active, n_active);
    }
    const int64_t max_rows = dsv4_moe_max_rows(T, k + sh, E + sh, tile);
    (void)dsv4_launch_pdl(k_moe_route_place, dim3((unsigned)T), dim3(ROUTE_PLACE_THREADS), 0, stream, E, k, cfg->score,
                          cfg->normalize, cfg->scaling, T, logits, bias, tid2eid, token_ids, vocab, idx, weights, tile,
                          (int)(max_rows / tile), (int)max_rows, *out, active, n_active, done, sh ? E : -1);
    DSV4_CUDA_LAUNCHED("moe_route_permute: kernel");
    return DSV4_OK;
}
