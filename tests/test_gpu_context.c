/* The session CUDA context (pool allocator, stream, cuBLAS) and the graph harness itself:
 * that it accepts graph-safe work and rejects a host sync inside the captured work. */
#include "test.h"

#if DSV4_HAVE_CUDA
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include "base/status.h"
#include "cuda/context.h"
#include "gpu_harness.h"

TEST(gpu_context_pool_and_handles) {
    if (!gpu_available()) SKIP("no GPU");
    dsv4_cuda_ctx *ctx = NULL;
    CHECK_STATUS(dsv4_cuda_ctx_create(0, 1 << 20, &ctx), DSV4_ERR_INVALID_ARGUMENT); /* below the cuBLAS workspace */
    CHECK_STATUS(dsv4_cuda_ctx_create(999, 64 << 20, &ctx), DSV4_ERR_NO_DEVICE);
    CHECK_OK(dsv4_cuda_ctx_create(0, 64 << 20, &ctx));
    CHECK(dsv4_cuda_ctx_stream(ctx) != NULL && dsv4_cuda_ctx_cublas(ctx) != NULL);
    CHECK(dsv4_cuda_ctx_info(ctx)->sm_count > 0);
    size_t base = dsv4_cuda_ctx_used(ctx);
    CHECK(base >= DSV4_CUDA_CUBLAS_WORKSPACE);
    void *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(dsv4_cuda_ctx_alloc(ctx, 100, "a", &a));
    size_t mark = dsv4_cuda_ctx_mark(ctx);
    CHECK_OK(dsv4_cuda_ctx_alloc(ctx, 1000, "b", &b));
    CHECK(((uintptr_t)a & 255) == 0 && ((uintptr_t)b & 255) == 0 && (char *)b >= (char *)a + 100);
    /* the pool is real device memory */
    CHECK(cudaMemsetAsync(b, 0x3c, 1000, dsv4_cuda_ctx_stream(ctx)) == cudaSuccess);
    unsigned char host[1000];
    CHECK_OK(dsv4_cuda_ctx_sync(ctx)); /* the context's stream does not order with cudaMemcpy's */
    CHECK(cudaMemcpy(host, b, 1000, cudaMemcpyDeviceToHost) == cudaSuccess);
    CHECK(host[0] == 0x3c && host[999] == 0x3c);
    CHECK_OK(dsv4_cuda_ctx_reset_to(ctx, mark));
    CHECK_OK(dsv4_cuda_ctx_alloc(ctx, 10, "c", &c));
    CHECK(c == b);
    /* past the pool: OUT_OF_MEMORY naming the buffer and the size */
    void *big = NULL;
    CHECK_STATUS(dsv4_cuda_ctx_alloc(ctx, 64u << 20, "kv cache layer 7", &big), DSV4_ERR_OUT_OF_MEMORY);
    CHECK(big == NULL && strstr(dsv4_last_error(), "kv cache layer 7") && strstr(dsv4_last_error(), "67108864"));
    CHECK_STATUS(dsv4_cuda_ctx_reset_to(ctx, 0), DSV4_ERR_INVALID_ARGUMENT); /* below the cuBLAS workspace */
    dsv4_cuda_ctx_reset(ctx);
    CHECK(dsv4_cuda_ctx_used(ctx) == base);
    CHECK_OK(dsv4_cuda_ctx_sync(ctx));
    dsv4_cuda_ctx_destroy(ctx);
}

typedef struct gemm_job {
    cublasHandle_t h;
    const float *a, *b;
    float *c;
    int n;
} gemm_job;

static dsv4_status enqueue_gemm(cudaStream_t s, void *arg) {
    gemm_job *j = arg;
    const float one = 1.0f, zero = 0.0f;
    if (cublasSetStream(j->h, s) != CUBLAS_STATUS_SUCCESS) return DSV4_ERR_CUDA;
    return cublasSgemm(j->h, CUBLAS_OP_N, CUBLAS_OP_N, j->n, j->n, j->n, &one, j->a, j->n, j->b, j->n, &zero, j->c, j->n) ==
                   CUBLAS_STATUS_SUCCESS
               ? DSV4_OK
               : DSV4_ERR_CUDA;
}

/* cuBLAS with the context's pool workspace can be captured (no allocation inside). */
TEST(gpu_context_cublas_is_graph_safe) {
    if (!gpu_available()) SKIP("no GPU");
    dsv4_cuda_ctx *ctx = NULL;
    CHECK_OK(dsv4_cuda_ctx_create(0, 64 << 20, &ctx));
    enum { N = 64 };
    float ha[N * N];
    for (int i = 0; i < N * N; i++) ha[i] = (float)(i % 13) - 6.0f;
    void *a = NULL, *c = NULL;
    dsv4_status st = dsv4_cuda_ctx_alloc(ctx, sizeof ha, "a", &a);
    if (st == DSV4_OK) st = dsv4_cuda_ctx_alloc(ctx, sizeof ha, "c", &c);
    if (st == DSV4_OK && (cudaMemcpy(a, ha, sizeof ha, cudaMemcpyHostToDevice) != cudaSuccess ||
                          cudaDeviceSynchronize() != cudaSuccess))
        st = DSV4_ERR_CUDA;
    gemm_job job = {dsv4_cuda_ctx_cublas(ctx), a, a, c, N};
    gpu_buf out = {"c", c, sizeof ha, NULL};
    char msg[512] = "";
    int ok = st == DSV4_OK && gpu_graph_check(dsv4_cuda_ctx_stream(ctx), enqueue_gemm, &job, &out, 1, msg, sizeof msg);
    float c0 = ok ? ((float *)out.host)[0] : 0.0f;
    gpu_bufs_free(&out, 1);
    dsv4_cuda_ctx_destroy(ctx);
    CHECK_MSG(ok, "cuBLAS under capture: %s (%s)", msg, dsv4_last_error());
    float want = 0.0f; /* c[0,0] = sum_k a[0,k] * a[k,0], column-major */
    for (int k = 0; k < N; k++) want += ha[k * N] * ha[k];
    CHECK_MSG(c0 == want, "c[0] = %g, want %g", (double)c0, (double)want);
}

typedef struct sync_job {
    void *buf;
} sync_job;

/* Graph-unsafe on purpose: a host synchronisation in the middle of the step. */
static dsv4_status enqueue_with_sync(cudaStream_t s, void *arg) {
    sync_job *j = arg;
    if (cudaMemsetAsync(j->buf, 1, 256, s) != cudaSuccess) return DSV4_ERR_CUDA;
    cudaError_t e = cudaStreamSynchronize(s);
    return e == cudaSuccess ? DSV4_OK : dsv4_fail(DSV4_ERR_CUDA, "cudaStreamSynchronize: %s", cudaGetErrorName(e));
}

static dsv4_status enqueue_memset(cudaStream_t s, void *arg) {
    sync_job *j = arg;
    return cudaMemsetAsync(j->buf, 7, 256, s) == cudaSuccess ? DSV4_OK : DSV4_ERR_CUDA;
}

TEST(gpu_harness_catches_host_sync_in_capture) {
    if (!gpu_available()) SKIP("no GPU");
    cudaStream_t s = NULL;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess);
    sync_job job = {gpu_upload(NULL, 256)};
    CHECK(job.buf != NULL);
    gpu_buf out = {"buf", job.buf, 256, NULL};
    char msg[512];
    int ok = gpu_graph_check(s, enqueue_with_sync, &job, &out, 1, msg, sizeof msg);
    gpu_bufs_free(&out, 1);
    CHECK_MSG(!ok, "a host sync inside the captured work was not detected");
    CHECK_MSG(strstr(msg, "capture") != NULL, "message does not mention the capture: %s", msg);
    /* the stream is usable again, and graph-safe work passes */
    ok = gpu_graph_check(s, enqueue_memset, &job, &out, 1, msg, sizeof msg);
    int all7 = ok && ((unsigned char *)out.host)[0] == 7 && ((unsigned char *)out.host)[255] == 7;
    gpu_bufs_free(&out, 1);
    cudaFree(job.buf);
    cudaStreamDestroy(s);
    CHECK_MSG(ok, "graph-safe memset failed the harness: %s", msg);
    CHECK(all7);
}
#else
TEST(gpu_context_pool_and_handles) { SKIP("built without CUDA"); }
#endif
