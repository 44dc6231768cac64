/* A CUDA context for one session: the device, one non-blocking stream, a cuBLAS handle
 * bound to that stream, and a device memory pool allocated once at creation.
 *
 * The pool is a bump allocator: dsv4_cuda_ctx_alloc hands out 256-byte aligned slices,
 * never calls cudaMalloc, and fails with DSV4_ERR_OUT_OF_MEMORY naming what was asked for
 * when the pool is exhausted; dsv4_cuda_ctx_mark / _reset_to release everything allocated
 * after a mark (scratch of one step), _reset everything but the cuBLAS workspace. Nothing
 * here synchronizes except dsv4_cuda_ctx_sync and destroy (explicit API boundaries), so
 * work enqueued between them can be captured into a CUDA graph. Not thread-safe: one
 * context per session thread. */
#ifndef DSV4_CUDA_CONTEXT_H
#define DSV4_CUDA_CONTEXT_H

#include <cublas_v2.h>
#include <cuda_runtime_api.h>
#include <stddef.h>

#include "cuda/device.h"
#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_cuda_ctx dsv4_cuda_ctx;

/* Workspace handed to cuBLAS (cublasSetWorkspace) from the pool, so that cuBLAS never
 * allocates while a graph is being captured. */
#define DSV4_CUDA_CUBLAS_WORKSPACE (32u << 20)

/* device: CUDA ordinal; pool_bytes: device memory to reserve (the cuBLAS workspace comes
 * out of it too, so it must be at least DSV4_CUDA_CUBLAS_WORKSPACE). DSV4_ERR_NO_DEVICE when
 * there is no such GPU, DSV4_ERR_OUT_OF_MEMORY when the pool cannot be allocated. */
dsv4_status dsv4_cuda_ctx_create(int device, size_t pool_bytes, dsv4_cuda_ctx **out);
/* Waits for the stream, then frees everything. NULL is fine. */
void dsv4_cuda_ctx_destroy(dsv4_cuda_ctx *ctx);

int dsv4_cuda_ctx_device(const dsv4_cuda_ctx *ctx);
const dsv4_device_info *dsv4_cuda_ctx_info(const dsv4_cuda_ctx *ctx);
cudaStream_t dsv4_cuda_ctx_stream(const dsv4_cuda_ctx *ctx);
cublasHandle_t dsv4_cuda_ctx_cublas(const dsv4_cuda_ctx *ctx);

/* Bump allocation from the pool (256-byte aligned; bytes = 0 gives a valid non-NULL
 * pointer of no size). `what` names the buffer in the error message. */
dsv4_status dsv4_cuda_ctx_alloc(dsv4_cuda_ctx *ctx, size_t bytes, const char *what, void **ptr);
size_t dsv4_cuda_ctx_used(const dsv4_cuda_ctx *ctx);
size_t dsv4_cuda_ctx_capacity(const dsv4_cuda_ctx *ctx);
size_t dsv4_cuda_ctx_mark(const dsv4_cuda_ctx *ctx);
/* Releases every allocation made after `mark` (a value from dsv4_cuda_ctx_mark). The
 * caller must make sure no enqueued work still uses that memory. */
dsv4_status dsv4_cuda_ctx_reset_to(dsv4_cuda_ctx *ctx, size_t mark);
void dsv4_cuda_ctx_reset(dsv4_cuda_ctx *ctx);

/* Waits for all work on the context's stream (an API boundary; never inside a step). */
dsv4_status dsv4_cuda_ctx_sync(dsv4_cuda_ctx *ctx);

/* cuBLAS status -> dsv4_status naming the op (DSV4_ERR_CUDA, or OUT_OF_MEMORY for
 * CUBLAS_STATUS_ALLOC_FAILED). */
dsv4_status dsv4_cublas_check(cublasStatus_t st, const char *op);

#ifdef __cplusplus
}
#endif
#endif
