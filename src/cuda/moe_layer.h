/* The whole MoE layer on the GPU: device-resident stacked expert weights, the grouped expert
 * GEMMs (decode and prefill regimes) and the layer forward
 *   router -> permute (+ active experts) -> grouped L1 (gate|up) -> SwiGLU (+ NVFP4 requantize)
 *   -> grouped L2 (down) -> combine with the shared expert.
 * CPU reference: dsv4_cpu_router + dsv4_cpu_moe (src/cpu/router.c, src/cpu/moe.c). Design and
 * numerics: docs/gpu-moe.md. Only in CUDA builds. */
#ifndef DSV4_CUDA_MOE_LAYER_H
#define DSV4_CUDA_MOE_LAYER_H

#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

#include "cpu/moe_route.h"  /* dsv4_moe_layout */
#include "cuda/linear.h"    /* dsv4_cuda_weight, dsv4_cuda_act_nvfp4, dsv4_cuda_out, paths */
#include "cuda/moe.h"       /* DSV4_CUDA_MOE_L1_BLOCK */
#include "cuda/moe_route.h" /* dsv4_cuda_router_cfg */
#include "cuda/quantize.h"  /* dsv4_cuda_dtype */
#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_cpu_expert dsv4_cpu_expert; /* cpu/ops.h */

/* G NVFP4 weights of one shape [N, K], stacked in device memory: group g's payload at
 * data + g·w_stride ([N, K/2], element 2i in the low nibble), its e4m3 block scales at
 * scale + g·s_stride ([N, K/16], linear layout). Strides are 256-byte multiples. */
typedef struct dsv4_cuda_moe_stack {
    int groups;
    int64_t rows, cols; /* N, K */
    const uint8_t *data, *scale;
    int64_t w_stride, s_stride;
    float *global;      /* device [G]: each group's weight_scale_2 */
    float *input_scale; /* device [G]: each group's static input_scale (0 when it has none) */
    float *global_in;   /* device [G]: global · input_scale (the W4A4 factor of a static scale) */
} dsv4_cuda_moe_stack;

/* One MoE layer's weights on the device (one allocation).
 *   l1 [E][2I, D]: gate and up unified per expert, interleaved in blocks of
 *                  DSV4_CUDA_MOE_L1_BLOCK (8) rows: rows 16b .. 16b+7 are w1 rows 8b .. 8b+7, rows
 *                  16b+8 .. 16b+15 are w3 rows 8b .. 8b+7 (dsv4_cuda_moe_l1_row), so every 16-row
 *                  MMA tile of the grouped decode holds the gate and the up of the same 8
 *                  intermediate indices and its epilogue can apply SwiGLU; h follows this order;
 *   l2 [E][D, I]:  down;
 *   s1 [1][2Is, D], s2 [1][D, Is]: the shared expert (when has_shared): group E of l1 / l2
 *                  when shared_grouped (interleaved rows), else stacks of their own with
 *                  [w1 | w3] rows.
 * Loading (dsv4_cuda_moe_weights_upload):
 *   - MXFP4 experts are converted exactly to NVFP4 (dsv4_mxfp4_to_nvfp4): same payload,
 *     power-of-two global; a tensor whose scale range NVFP4 cannot hold fails the load.
 *   - w1 and w3 with different global scales are unified with dsv4_nvfp4_unify_global
 *     (normalised to the max, the smaller half's block scales re-rounded). Exact when the
 *     ratio is a power of two (always so for converted MXFP4); scales_rerounded counts the
 *     block scales whose value changed.
 *   - W4A4 input scales: the routed L1 reads one quantization of x shared by all experts,
 *     so it uses the max of the experts' w1/w3 input_scale (vLLM's choice; the CPU quantizes
 *     x per expert with its own scale: identical when they are all equal, as in ModelOpt
 *     checkpoints that share them); if any expert has none, x is quantized per token
 *     (dynamic). L2 uses each expert's own w2 input_scale (static) when all have one,
 *     else per row (dynamic). The shared expert likewise with its own scales. */
/* Up to this many tokens a W4A16 decode step runs a grouped shared expert as slot k of every
 * token (one more expert of the grouped GEMMs) instead of a parallel chain. */
#define DSV4_CUDA_MOE_FOLD_SHARED_MAX_T 2

/* The l1 stack row of natural row n of [w1 | w3] (n < 2I). */
static inline int64_t dsv4_cuda_moe_l1_row(int64_t n, int64_t I) {
    const int64_t j = n < I ? n : n - I; /* the intermediate index */
    return j / DSV4_CUDA_MOE_L1_BLOCK * 2 * DSV4_CUDA_MOE_L1_BLOCK + (n < I ? 0 : DSV4_CUDA_MOE_L1_BLOCK) +
           j % DSV4_CUDA_MOE_L1_BLOCK;
}

typedef struct dsv4_cuda_moe_weights {
    int E, D, I, Is; /* Is = 0 when there is no shared expert */
    int has_shared;
    int shared_grouped; /* the shared expert is group E of l1 / l2 (its rows interleaved like the
                           routed ones; s1 / s2 view that group): it has the routed shape and
                           E < DSV4_CUDA_MOE_MAX_EXPERTS. Decode steps of up to
                           DSV4_CUDA_MOE_FOLD_SHARED_MAX_T tokens then run it as one more expert of
                           the grouped GEMMs (dsv4_cuda_moe_forward; W4A4 when its inputs quantize
                           the way the routed experts' do) */
    dsv4_cuda_moe_stack l1, l2, s1, s2;
    float l1_x_scale, s1_x_scale;    /* host copies; 0 = dynamic per token */
    int l2_static, s2_static;        /* 1: static input_scale per expert (else dynamic per row) */
    float s1_global, s2_global, s2_input_scale; /* host copies for the shared expert's linears */
    float *x_scales;                 /* device [2]: l1_x_scale, s1_x_scale (the quantize kernel reads them) */
    size_t weight_bytes;             /* payload + block-scale bytes of all experts (routed + shared) */
    size_t expert_bytes;             /* of one routed expert (L1 + L2) */
    size_t scales_rerounded;         /* block scales changed by the gate/up unification */
    void *alloc;
} dsv4_cuda_moe_weights;

/* experts [E] (every entry complete, all of one shape and format: NVFP4 or MXFP4), shared
 * or NULL. Copies (synchronously: load time) into one device allocation. Errors name the
 * expert and tensor; DSV4_ERR_UNSUPPORTED for other formats. */
dsv4_status dsv4_cuda_moe_weights_upload(const dsv4_cpu_expert *experts, int E, const dsv4_cpu_expert *shared,
                                         dsv4_cuda_moe_weights *out);
/* Frees the allocation (safe on a zeroed struct); leaves *w zeroed. */
void dsv4_cuda_moe_weights_free(dsv4_cuda_moe_weights *w);

/* Borrowed view of group g of a stack as a single linear weight (dsv4_cuda_linear). */
dsv4_cuda_weight dsv4_cuda_moe_stack_view(const dsv4_cuda_moe_stack *s, int g, float global);

/* active[0 .. n−1] = ids e < E with counts[e] > 0, ascending; active[n .. E−1] = −1;
 * *n_active = n. One block; E <= DSV4_CUDA_MOE_MAX_EXPERTS. Errors name "moe_active". */
dsv4_status dsv4_cuda_moe_active(cudaStream_t stream, const int32_t *counts, int E, int32_t *active,
                                 int32_t *n_active);

/* One grouped expert GEMM over the row layout (all pointers device memory):
 *   y[r, :] = factor · x[xrow(r), :] · W_eᵀ   for every row r < offsets[e] + counts[e] of each
 *   expert e (rows offsets[e] .. ), xrow(r) = row_token ? row_token[r] : r,
 *   factor = (xq per-tensor ? xq->input_scale : 1) · group_scale[e] · (xq token_scales ?
 *   token_scales[xrow(r)] : 1). Padding rows and rows past offsets[E] are not written.
 * Paths:
 *   DECODE  the decode kernel in grouped mode: the CTAs walk the tiles of every active expert
 *           (active / n_active from dsv4_cuda_moe_active), rows offsets[e] .. + counts[e];
 *           `bound` is the host-known maximum of counts[] (T with top-k routing, T·k with
 *           hash routing). It picks the token bucket (capped at 64; larger groups take
 *           ceil(bound / 64) chunks) and is a contract: rows of an expert past `bound` are
 *           not computed. Any layout tile. Needs K % 32 == 0.
 *   PREFILL a grouped prefill kernel: M tile i -> expert tile_expert[i]. The wgmma kernel
 *           (Hopper, K % 64 == 0, BF16 or NVFP4 x) takes layout tiles 32, 64 and 128; otherwise the
 *           mma.sync kernel runs and the tile must be dsv4_cuda_moe_prefill_tile() (128).
 *   AUTO    DECODE when bound <= 64 and K % 32 == 0, else PREFILL.
 * Deterministic, graph-safe (nothing read on the host). Errors name "moe_grouped_linear". */
typedef struct dsv4_cuda_moe_gemm_args {
    const dsv4_cuda_moe_stack *w;
    const float *group_scale;       /* device [G]; NULL = w->global */
    const void *x;                  /* W4A16: BF16 [x rows, K] */
    const dsv4_cuda_act_nvfp4 *xq;  /* W4A4: NVFP4 [x rows, K] (linear scale layout) */
    const int32_t *row_token;       /* gather (L1) or NULL (L2: x rows = layout rows) */
    const dsv4_moe_layout *layout;  /* counts, offsets, tile_expert used */
    int tile;                       /* the layout's tile */
    int64_t rows;                   /* rows of y: the layout's max_rows */
    const int32_t *active, *n_active;
    int max_active;                 /* DECODE: upper bound of *n_active (sizes the grid) */
    int bound;                      /* >= every counts[e] (see DECODE above) */
    void *y;                        /* [rows, N] */
    dsv4_cuda_out out;
    dsv4_cuda_linear_path path;
    void *swiglu_out;               /* the routed L1 stack (interleaved rows) on DECODE, or on PREFILL
                                       where dsv4_cuda_moe_fused_swiglu_prefill says so; else NULL:
                                       write BF16 SwiGLU(h) [rows, N / 2] (moe.c's expression with
                                       swiglu_limit) instead of y: the SwiGLU kernel's output, fused */
    float swiglu_limit;
    const void *l2_warm[4];         /* DECODE: up to 4 ranges of weight bytes (16-byte aligned) known
                                       before the routing, e.g. the folded shared expert's L1 and L2,
                                       pulled into L2 while the routing runs; NULL = none */
    int64_t l2_warm_bytes[4];
} dsv4_cuda_moe_gemm_args;

int dsv4_cuda_moe_prefill_tile(void);
/* The layout tile dsv4_cuda_moe_forward uses for a prefill of T tokens: 32, 64 or 128 by the
 * average rows per expert where the wgmma kernel runs both GEMMs, else 128. Never more than
 * dsv4_cuda_moe_prefill_tile(), so a workspace sized for that holds every layout. */
int dsv4_cuda_moe_prefill_tile_for(int T, int k, int E, int64_t D, int64_t I, int w4a4);
/* 1 when a PREFILL grouped linear over K = cols with layout tile `tile` runs on the Hopper
 * kernel, whose epilogue can apply the SwiGLU (swiglu_out); the mma.sync kernel cannot. */
int dsv4_cuda_moe_fused_swiglu_prefill(int w4a4, int64_t cols, int tile);
dsv4_status dsv4_cuda_moe_grouped_linear(cudaStream_t stream, const dsv4_cuda_moe_gemm_args *a);

/* Buffers of the layer forward for up to max_T tokens, allocated once (cudaMalloc here, never
 * in dsv4_cuda_moe_forward). Sizes: the layout for tile 128 (max_rows = max_T·k + E·127),
 * h [max_rows, 2I] fp32, a [max_rows, I] BF16 or NVFP4, y [max_rows, D] fp32, the shared
 * expert's [max_T, ·] buffers and the decode split-K workspace. The routing results of the
 * last forward stay readable: idx / weights [T, idx_k], layout, active / n_active. */
typedef struct dsv4_cuda_moe_workspace {
    int max_T, k, E;
    int64_t max_rows;
    int32_t *idx;
    float *weights;
    dsv4_moe_layout layout;
    int32_t *active, *n_active;
    uint8_t *xq, *xsf, *xsq, *xssf;   /* W4A4 x for the routed L1 and for the shared L1 */
    float *xts, *xsts;                /* their per-token scales (dynamic) */
    float *h, *y;                     /* [max_rows, 2I], [max_rows, D] */
    void *a;                          /* BF16 [max_rows, I] */
    uint8_t *aq, *asf;                /* NVFP4 [max_rows, I] */
    float *ats;                       /* [max_rows] */
    float *hs, *ys;                   /* shared: [max_T, 2Is], [max_T, D] */
    void *as_;                        /* shared BF16 [max_T, Is] */
    uint8_t *asq, *assf;
    float *asts;
    void *lin_ws;                     /* split-K partials of the shared expert's linears */
    size_t lin_ws_bytes;
    unsigned int *route_done;         /* the fused router's block counter (0 between calls) */
    int idx_k;                        /* slots per token in idx / weights / inv of the last
                                         forward: k, or k + 1 when the shared expert ran as slot k */
    /* The shared expert runs on a side stream forked from the caller's stream and joined
     * before the combine (event fork/join: legal inside graph capture, where it becomes a
     * parallel branch), so its launches are off the routed experts' critical path. */
    cudaStream_t side;
    cudaEvent_t fork, join;
    size_t bytes;
    void *alloc;
} dsv4_cuda_moe_workspace;

dsv4_status dsv4_cuda_moe_workspace_create(const dsv4_cuda_moe_weights *w, int max_T, int k,
                                           dsv4_cuda_moe_workspace *out);
void dsv4_cuda_moe_workspace_free(dsv4_cuda_moe_workspace *ws);

typedef struct dsv4_cuda_moe_args {
    int T;                       /* 0 .. ws->max_T */
    const void *x;               /* BF16 [T, D]: the normed FFN input */
    const float *logits;         /* [T, E] fp32 router logits (x · gateᵀ, the caller's) */
    dsv4_cuda_router_cfg router; /* n_experts = E, topk = ws->k */
    const float *bias;           /* [E] or NULL */
    const int32_t *tid2eid;      /* hash routing [vocab, k] or NULL (then token_ids, vocab) */
    const int32_t *token_ids;
    int vocab;
    float limit;                 /* swiglu_limit */
    dsv4_numerics mode;          /* DSV4_W4A16 or DSV4_W4A4 */
    void *out;                   /* [T, D] */
    dsv4_cuda_dtype out_dtype;
    dsv4_cuda_linear_path path;  /* AUTO: decode-grouped when T <= 64, else prefill-grouped */
    /* profiling (benchmarks time prefixes of the chain; 0 = the whole layer): run only the first
     * `stages` routed steps (1 router, 2 permute, 3 L1, 4 SwiGLU, 5 L2, 6 combine; -1: none, the
     * shared expert alone), and leave the shared expert out when skip_shared is set. `out` is
     * complete only with both 0. */
    int stages;
    int skip_shared;
} dsv4_cuda_moe_args;

/* Enqueues the layer on `stream`: no allocation, no host synchronisation, no host read of a
 * device value, so a fixed-T call can be captured into a CUDA graph. Deterministic. In W4A16
 * the L1 input is x (BF16) and the SwiGLU output is rounded to BF16 for L2; h, y, the shared
 * output and the combine are fp32. In W4A4 x and the SwiGLU output are quantized to NVFP4
 * (scales as dsv4_cuda_moe_weights says). Errors name "moe_forward" or the failing step. */
dsv4_status dsv4_cuda_moe_forward(cudaStream_t stream, const dsv4_cuda_moe_weights *w, dsv4_cuda_moe_workspace *ws,
                                  const dsv4_cuda_moe_args *a);

#ifdef __cplusplus
}
#endif
#endif
