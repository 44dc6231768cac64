/* MoE routing on the GPU: the router (scores, top-k or hash selection, weights) and the
 * permutation that turns the chosen experts into the row layout of the grouped expert
 * GEMMs (cpu/moe_route.h defines the layout). Both enqueue on `stream` only: no
 * allocation, no host sync, no host<->device copy, nothing the host must read, so they
 * can be captured into a CUDA graph; the per-expert sizes stay on the device. */
#ifndef DSV4_CUDA_MOE_ROUTE_H
#define DSV4_CUDA_MOE_ROUTE_H

#include <cuda_runtime_api.h>
#include <stdint.h>

#include "cpu/moe_route.h" /* dsv4_moe_layout, dsv4_moe_max_rows */
#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest expert count and top-k the kernels hold in shared memory / registers. */
#define DSV4_CUDA_MOE_ONE_LAUNCH_PAIRS 512 /* dsv4_cuda_moe_route_permute: one launch up to T·k pairs */
#define DSV4_CUDA_MOE_MAX_EXPERTS 384
#define DSV4_CUDA_MOE_MAX_TOPK 8
/* Slots per token the combine takes: top-k plus the shared expert as a slot. */
#define DSV4_CUDA_MOE_COMBINE_MAX_K (DSV4_CUDA_MOE_MAX_TOPK + 1)

/* The router's configuration; the same fields and meaning as dsv4_cpu_router_cfg
 * (cpu/ops.h), `score` taking dsv4_cpu_score_func's values: 0 sqrtsoftplus, 1 sigmoid,
 * 2 softmax. */
typedef struct dsv4_cuda_router_cfg {
    int n_experts; /* E, 1 .. DSV4_CUDA_MOE_MAX_EXPERTS */
    int topk;      /* k, 1 .. DSV4_CUDA_MOE_MAX_TOPK (and <= E without tid2eid) */
    int score;
    int normalize; /* weights /= (sum + 1e-20) */
    float scaling; /* routed_scaling_factor */
} dsv4_cuda_router_cfg;

/* dsv4_cpu_router on the device, one block per token (all pointers device memory):
 *   logits [T, E] fp32; bias [E] or NULL; tid2eid [vocab, k] or NULL (hash routing, then
 *   token_ids [T] is read and bias ignored); idx [T, k] int32; weights [T, k] fp32.
 * Same fp32 operations in the same order as the CPU, ties to the lowest expert id, NaN
 * handled as the CPU's scan does. Bit-exact with the CPU wherever the host's expf/log1pf
 * are correctly rounded (cuda/moe_math.cuh says why and how often they are not).
 * A kernel cannot fail: a token id outside [0, vocab) or a table entry outside [0, E)
 * (where the CPU returns DSV4_ERR_RANGE; the loader checks tid2eid) gives expert −1 and
 * weight 0 for that slot, and the permutation and combine skip such slots.
 * T = 0 enqueues nothing. Errors (before any launch): DSV4_ERR_SHAPE, _INVALID_ARGUMENT,
 * DSV4_ERR_CUDA, each naming "moe_router". */
dsv4_status dsv4_cuda_moe_router(cudaStream_t stream, const dsv4_cuda_router_cfg *cfg, int T, const float *logits,
                                 const float *bias, const int32_t *tid2eid, const int32_t *token_ids, int vocab,
                                 int32_t *idx, float *weights);

/* The row layout of cpu/moe_route.h from idx [T, k] (device), into the device arrays of
 * `out` sized for dsv4_moe_max_rows(T, k, E, tile) rows; every entry of every array is
 * written, equal to dsv4_cpu_moe_permute's. Deterministic: counting uses shared-memory
 * atomics (integer sums, order-free), and placement is a separate pass in which the block
 * of expert e ranks e's pairs in ascending pair order with warp ballots: two launches (count +
 * offsets, 1 block; place, E + 1 blocks). Up to 512 pairs the count kernel places them itself
 * (a pair's rank: the earlier pairs with the same expert), one launch. E <= DSV4_CUDA_MOE_MAX_EXPERTS,
 * T = 0 still launches (the layout is then all padding). Errors name "moe_permute";
 * T·k must fit in int32 with the padding (dsv4_moe_max_rows >= 0). */
dsv4_status dsv4_cuda_moe_permute(cudaStream_t stream, const int32_t *idx, int T, int k, int E, int tile,
                                  const dsv4_moe_layout *out);

/* The same, and also the active-expert list of dsv4_cuda_moe_active (moe_layer.h) from the
 * count kernel, without a launch of its own: active [E] = ids with counts > 0 ascending, then
 * −1; *n_active = their number. active and n_active both NULL = dsv4_cuda_moe_permute. */
dsv4_status dsv4_cuda_moe_permute_active(cudaStream_t stream, const int32_t *idx, int T, int k, int E, int tile,
                                         const dsv4_moe_layout *out, int32_t *active, int32_t *n_active);

/* dsv4_cuda_moe_router followed by dsv4_cuda_moe_permute_active (active and n_active may be
 * NULL), the same results; up to 512 pairs (T·k, a decode step) in one launch: every block
 * routes its token and the last one to finish lays out all pairs. `done` is a device counter
 * that must be 0 before the first call; each call leaves it 0 (NULL: always two steps).
 * with_shared: every token also gets slot k = (expert E, weight 1), the shared expert as one
 * more group: idx / weights are [T, k + 1] and the layout is that of k + 1 slots over E + 1
 * experts (one launch only: T·(k + 1) <= 512, E < DSV4_CUDA_MOE_MAX_EXPERTS, `done` given;
 * else DSV4_ERR_UNSUPPORTED). Errors as the two functions'. */
dsv4_status dsv4_cuda_moe_route_permute(cudaStream_t stream, const dsv4_cuda_router_cfg *cfg, int T,
                                        const float *logits, const float *bias, const int32_t *tid2eid,
                                        const int32_t *token_ids, int vocab, int32_t *idx, float *weights, int tile,
                                        const dsv4_moe_layout *out, int32_t *active, int32_t *n_active,
                                        unsigned int *done, int with_shared);

#ifdef __cplusplus
}
#endif
#endif
