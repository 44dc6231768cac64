/* The backend op table: one struct of function pointers per backend (CPU reference, CUDA),
 * so that the forward pass is written once and a test can run every op on every backend
 * against the CPU (ggml/llama.cpp style; docs/design-notes.md "Op table").
 *
 * What lives here:
 *   - dsv4_tensor: a data pointer in the backend's memory space, a dtype and a shape;
 *   - dsv4_act_nvfp4: an NVFP4 activation (payload, block scales, per-tensor/row scales);
 *   - dsv4_backend_ops: memory (alloc/free/upload/download/synchronize), a stream, weights,
 *     and the ops that exist on both backends today: rmsnorm (+NVFP4), hc_pre (+RMSNorm,
 *     +NVFP4), hc_post, quantize_nvfp4, linear (W4A16 and W4A4), moe_router, moe_permute,
 *     moe_swiglu, moe_combine;
 *   - dsv4_backend_<op>(): the entry points. They check the arguments once for every
 *     backend (shapes and dtypes, errors naming the op), then call the table; a failure
 *     inside a backend comes back prefixed with "<backend> <op>: ".
 * Semantics of each op are those of its CPU reference and CUDA launcher (src/cpu/ops.h,
 * src/cpu/quantize.h, src/cuda/<op>.h); the comments below say only what the table adds.
 * Ops enqueue on the backend's stream and never synchronize (CPU: they run to completion);
 * only download, synchronize and destroy wait. Not thread-safe: one backend per thread. */
#ifndef DSV4_BACKEND_H
#define DSV4_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "cpu/moe_route.h" /* dsv4_moe_layout */
#include "cpu/ops.h"       /* dsv4_cpu_hc_dims, dsv4_cpu_hc_merge, dsv4_cpu_router_cfg */
#include "cpu/quantize.h"  /* dsv4_act_scale_mode, dsv4_sf_layout */
#include "dsv4.h"
#include "format/weight.h" /* dsv4_weight, dsv4_dtype */

#define DSV4_TENSOR_MAX_DIMS 4

/* Dense row-major tensor in a backend's memory; ne[0] is the outermost dimension. */
typedef struct dsv4_tensor {
    void *data;
    dsv4_dtype dtype; /* F32, BF16, I32 or U8 (what the ops take) */
    int ndim;
    int64_t ne[DSV4_TENSOR_MAX_DIMS];
} dsv4_tensor;

dsv4_tensor dsv4_tensor_1d(void *data, dsv4_dtype dt, int64_t n0);
dsv4_tensor dsv4_tensor_2d(void *data, dsv4_dtype dt, int64_t n0, int64_t n1);
dsv4_tensor dsv4_tensor_3d(void *data, dsv4_dtype dt, int64_t n0, int64_t n1, int64_t n2);
int64_t dsv4_tensor_elems(const dsv4_tensor *t);
size_t dsv4_tensor_nbytes(const dsv4_tensor *t);

/* An NVFP4 activation [M, K] (K % 16 == 0) in backend memory, as src/cpu/quantize.h defines it:
 *   q      U8 [M, K/2], element 2i in the low nibble
 *   sf     e4m3 block scales, [M, K/16] (LINEAR) or dsv4_swizzled_scale_bytes(M, K/16) bytes
 *   scale  STATIC: scale[0] is read by the quantizing op; DYNAMIC_TENSOR: scale[0] is written;
 *          DYNAMIC_TOKEN: scale[0..M-1] are written
 *   input_scale  STATIC only: the same value on the host. The linear multiplies by it; the
 *          device copy cannot be read there without a host round trip inside a step. */
typedef struct dsv4_act_nvfp4 {
    uint8_t *q;
    uint8_t *sf;
    float *scale;
    float input_scale;
    int64_t M, K;
    dsv4_act_scale_mode mode;
    dsv4_sf_layout layout;
} dsv4_act_nvfp4;

/* Bytes of the three buffers of an NVFP4 activation of this shape, mode and layout. */
void dsv4_act_nvfp4_sizes(int64_t M, int64_t K, dsv4_act_scale_mode mode, dsv4_sf_layout layout, size_t *q_bytes,
                          size_t *sf_bytes, size_t *scale_bytes);

/* A linear weight loaded onto a backend (CPU: the host weight borrowed; CUDA: a device copy
 * in the stored format). Made by dsv4_backend_weight_load, freed by _weight_free. */
typedef struct dsv4_bweight {
    dsv4_wformat format;
    int64_t rows, cols; /* N (out), K (in) */
    void *impl;
} dsv4_bweight;

/* hc_pre: the mHC pre step of one site, optionally followed by the sublayer's weighted
 * RMSNorm (y) and its NVFP4 (q). Tensors are [T, hc, D] X (F32/BF16), fn [(2+hc)hc, hc·D],
 * base [(2+hc)hc], scale [3] (F32); outputs post [T, hc], comb [T, hc, hc] (F32), and the
 * optional (NULL) x [T, D] F32 (collapse before the norm), y [T, D] F32/BF16 and q.
 * q quantizes the BF16 rounding of y (as an unfused RMSNorm -> BF16 -> quantize would). */
typedef struct dsv4_hc_pre_io {
    const dsv4_tensor *X, *fn, *base, *scale;
    const dsv4_tensor *post, *comb;
    const dsv4_tensor *x;      /* optional */
    const dsv4_tensor *norm_w; /* optional [D] F32 (NULL: unweighted) */
    float norm_eps;
    const dsv4_tensor *y;        /* optional */
    const dsv4_act_nvfp4 *q;     /* optional: STATIC or DYNAMIC_TOKEN */
} dsv4_hc_pre_io;

/* moe_swiglu: h [rows, 2·I] (gate | up, F32/BF16) -> out [rows, I] (F32/BF16) and/or q
 * (STATIC or DYNAMIC_TOKEN), the fp32 activation quantized (not its BF16 rounding).
 * n_rows (backend memory, optional): rows >= *n_rows are left unwritten. tile_expert
 * (optional, [rows / tile]): rows of a tile owned by no expert (-1) are left unwritten, and a
 * STATIC q takes q->scale[tile_expert[r / tile]] (each expert's w2 has its own input_scale). */
typedef struct dsv4_swiglu_io {
    const dsv4_tensor *h;
    float limit;
    const int32_t *n_rows;
    const dsv4_tensor *out;
    const dsv4_act_nvfp4 *q;
    const int32_t *tile_expert;
    int tile;
} dsv4_swiglu_io;

typedef struct dsv4_backend dsv4_backend;

/* The table. Arguments reaching an op have been checked by the dsv4_backend_<op> entry
 * points below (shapes, dtypes, non-NULL); a backend checks only what is its own (a
 * dtype or size its kernels do not take: DSV4_ERR_UNSUPPORTED). */
typedef struct dsv4_backend_ops {
    const char *name; /* "cpu", "cuda" */
    void (*destroy)(dsv4_backend *be);

    /* memory */
    dsv4_status (*alloc)(dsv4_backend *be, size_t bytes, const char *what, void **ptr);
    dsv4_status (*free)(dsv4_backend *be, void *ptr);
    dsv4_status (*upload)(dsv4_backend *be, void *dst, const void *host, size_t bytes);
    dsv4_status (*download)(dsv4_backend *be, void *host, const void *src, size_t bytes);
    dsv4_status (*synchronize)(dsv4_backend *be);
    void *(*stream)(dsv4_backend *be); /* cudaStream_t for CUDA; NULL on the CPU */

    /* weights */
    dsv4_status (*weight_load)(dsv4_backend *be, const dsv4_weight *w, dsv4_bweight *out);
    void (*weight_free)(dsv4_backend *be, dsv4_bweight *w);

    /* ops */
    dsv4_status (*rmsnorm)(dsv4_backend *be, const dsv4_tensor *x, const dsv4_tensor *w, float eps,
                           const dsv4_tensor *out, const dsv4_act_nvfp4 *q);
    dsv4_status (*hc_pre)(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_hc_pre_io *io);
    dsv4_status (*hc_post)(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_tensor *X, const dsv4_tensor *y,
                           const dsv4_tensor *post, const dsv4_tensor *comb, dsv4_cpu_hc_merge merge,
                           const dsv4_tensor *X_out);
    dsv4_status (*quantize_nvfp4)(dsv4_backend *be, const dsv4_tensor *x, const dsv4_act_nvfp4 *q);
    dsv4_status (*linear)(dsv4_backend *be, const dsv4_bweight *w, const dsv4_tensor *x, const dsv4_act_nvfp4 *xq,
                          const dsv4_tensor *y);
    dsv4_status (*moe_router)(dsv4_backend *be, const dsv4_cpu_router_cfg *cfg, const dsv4_tensor *logits,
                              const dsv4_tensor *bias, const dsv4_tensor *tid2eid, const dsv4_tensor *token_ids,
                              const dsv4_tensor *idx, const dsv4_tensor *weights);
    dsv4_status (*moe_permute)(dsv4_backend *be, const dsv4_tensor *idx, int E, int tile, const dsv4_moe_layout *out);
    dsv4_status (*moe_swiglu)(dsv4_backend *be, const dsv4_swiglu_io *io);
    dsv4_status (*moe_combine)(dsv4_backend *be, const dsv4_tensor *y, const dsv4_tensor *idx, const dsv4_tensor *inv,
                               const dsv4_tensor *weights, const dsv4_tensor *shared, const dsv4_tensor *out);
} dsv4_backend_ops;

struct dsv4_backend {
    const dsv4_backend_ops *ops;
    void *impl; /* the backend's own state (CUDA: context, pool stack) */
};

/* The CPU reference backend (a process-wide object without state; destroy does nothing). */
dsv4_backend *dsv4_backend_cpu(void);

/* CUDA backend options; NULL or zero fields take the defaults. */
typedef struct dsv4_backend_cuda_options {
    size_t pool_bytes;    /* device memory reserved at creation for every alloc (default 1 GiB) */
    size_t scratch_bytes; /* part of it kept for the ops' workspaces (default 64 MiB) */
} dsv4_backend_cuda_options;

/* The CUDA backend on GPU `device`: the session context of src/cuda/context.h (stream,
 * cuBLAS handle, one pool allocated here, never again). DSV4_ERR_NO_DEVICE when there is no
 * such GPU, DSV4_ERR_OUT_OF_MEMORY when the pool does not fit, DSV4_ERR_UNSUPPORTED in a
 * build without CUDA; every message starts "cuda backend". */
dsv4_status dsv4_backend_cuda(int device, const dsv4_backend_cuda_options *o, dsv4_backend **out);

void dsv4_backend_destroy(dsv4_backend *be);
const char *dsv4_backend_name(const dsv4_backend *be);
/* Allocations are a stack on the CUDA pool: memory comes back once everything allocated
 * after it is freed too. The CPU frees at once. */
dsv4_status dsv4_backend_alloc(dsv4_backend *be, size_t bytes, const char *what, void **ptr);
dsv4_status dsv4_backend_free(dsv4_backend *be, void *ptr);
/* upload is ordered on the stream (host memory may be reused on return); download waits
 * for the stream and the copy (an API boundary, never inside a step). */
dsv4_status dsv4_backend_upload(dsv4_backend *be, void *dst, const void *host, size_t bytes);
dsv4_status dsv4_backend_download(dsv4_backend *be, void *host, const void *src, size_t bytes);
dsv4_status dsv4_backend_synchronize(dsv4_backend *be);
void *dsv4_backend_stream(dsv4_backend *be);

dsv4_status dsv4_backend_weight_load(dsv4_backend *be, const dsv4_weight *w, dsv4_bweight *out);
void dsv4_backend_weight_free(dsv4_backend *be, dsv4_bweight *w);

/* x [rows, dim] F32/BF16; w [dim] F32 or NULL; out [rows, dim] F32/BF16 (may be NULL when q
 * is given; may equal x when the dtypes match); q (optional, STATIC or DYNAMIC_TOKEN) the
 * NVFP4 of the BF16 rounding of the normed values. */
dsv4_status dsv4_backend_rmsnorm(dsv4_backend *be, const dsv4_tensor *x, const dsv4_tensor *w, float eps,
                                 const dsv4_tensor *out, const dsv4_act_nvfp4 *q);
dsv4_status dsv4_backend_hc_pre(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_hc_pre_io *io);
/* X [T, hc, D] and y [T, D] F32/BF16, post [T, hc], comb [T, hc, hc] F32 -> X_out [T, hc, D]
 * in X's dtype (not aliasing X). */
dsv4_status dsv4_backend_hc_post(dsv4_backend *be, const dsv4_cpu_hc_dims *d, const dsv4_tensor *X,
                                 const dsv4_tensor *y, const dsv4_tensor *post, const dsv4_tensor *comb,
                                 dsv4_cpu_hc_merge merge, const dsv4_tensor *X_out);
/* x [M, K] F32/BF16 -> q (M, K must match). */
dsv4_status dsv4_backend_quantize_nvfp4(dsv4_backend *be, const dsv4_tensor *x, const dsv4_act_nvfp4 *q);
/* y [M, N] (F32/BF16) = x · Wᵀ. Exactly one of x (W4A16: [M, K]; CUDA takes BF16, the CPU
 * F32 or BF16) and xq (W4A4: LINEAR scales; STATIC uses xq->input_scale, DYNAMIC_TOKEN the
 * per-row scales; the CPU also takes DYNAMIC_TENSOR). */
dsv4_status dsv4_backend_linear(dsv4_backend *be, const dsv4_bweight *w, const dsv4_tensor *x,
                                const dsv4_act_nvfp4 *xq, const dsv4_tensor *y);
/* logits [T, E] F32, bias [E] F32 (optional), tid2eid [vocab, k] I32 with token_ids [T] I32
 * (optional: hash routing) -> idx [T, k] I32, weights [T, k] F32. */
dsv4_status dsv4_backend_moe_router(dsv4_backend *be, const dsv4_cpu_router_cfg *cfg, const dsv4_tensor *logits,
                                    const dsv4_tensor *bias, const dsv4_tensor *tid2eid,
                                    const dsv4_tensor *token_ids, const dsv4_tensor *idx,
                                    const dsv4_tensor *weights);
/* idx [T, k] I32 -> the row layout (arrays in backend memory, sized by dsv4_moe_max_rows). */
dsv4_status dsv4_backend_moe_permute(dsv4_backend *be, const dsv4_tensor *idx, int E, int tile,
                                     const dsv4_moe_layout *out);
dsv4_status dsv4_backend_moe_swiglu(dsv4_backend *be, const dsv4_swiglu_io *io);
/* y [rows, D] F32/BF16, idx/inv [T, k] I32, weights [T, k] F32, shared [T, D] (optional)
 * -> out [T, D] F32/BF16: dsv4_cpu_moe's accumulation order (experts ascending, slot order
 * within one expert, each w·y rounded before the add, shared last). */
dsv4_status dsv4_backend_moe_combine(dsv4_backend *be, const dsv4_tensor *y, const dsv4_tensor *idx,
                                     const dsv4_tensor *inv, const dsv4_tensor *weights, const dsv4_tensor *shared,
                                     const dsv4_tensor *out);

#endif
