// CUDA device discovery, error translation and the session context. Every CUDA runtime call
// in dsv4 goes through dsv4_cuda_check so that failures become a dsv4_status naming the op.
// The context (header: context.h): everything that may allocate or synchronize happens in
// create/destroy; the pool makes later allocations pointer arithmetic.
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

#include "base/status.h"
#include "cuda/common.cuh"
#include "cuda/context.h"
#include "cuda/device.h"

extern "C" dsv4_status dsv4_cuda_check(cudaError_t err, const char *op) {
    if (err == cudaSuccess) return DSV4_OK;
    dsv4_status st = (err == cudaErrorMemoryAllocation) ? DSV4_ERR_OUT_OF_MEMORY
                   : (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) ? DSV4_ERR_NO_DEVICE
                                                                                     : DSV4_ERR_CUDA;
    return dsv4_fail(st, "%s: CUDA error %d (%s): %s", op, (int)err, cudaGetErrorName(err),
                     cudaGetErrorString(err));
}

// A switch that is on unless the environment sets it to 0, read once into *cache (-1 until
// then; a benign race: every thread computes the same value).
static int env_switch_on(const char *name, int *cache) {
    if (*cache < 0) {
        const char *e = getenv(name);
        *cache = !(e && e[0] == '0');
    }
    return *cache;
}

extern "C" int dsv4_cuda_pdl_enabled(void) {
    static int v = -1;
    return env_switch_on("DSV4_PDL", &v);
}

extern "C" int dsv4_cuda_sm_count(void) {
    static int cached[64]; // benign race: every thread computes the same value
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) return 132;
    if (cached[dev] == 0) {
        int n = 0;
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || n < 1) n = 132;
        cached[dev] = n;
    }
    return cached[dev];
}

extern "C" int dsv4_cuda_l2_hints_enabled(void) {
    static int v = -1;
    return env_switch_on("DSV4_L2_HINTS", &v);
}

extern "C" int dsv4_cuda_row_threads_override(void) {
    static int v = -1; // benign race, as above
    if (v < 0) {
        const char *e = getenv("DSV4_ROW_THREADS");
        int n = e ? atoi(e) : 0;
        v = (n == 32 || n == 64 || n == 128 || n == 256) ? n : 0;
    }
    return v;
}

extern "C" dsv4_status dsv4_cuda_device_count(int *count) {
    *count = 0;
    cudaError_t err = cudaGetDeviceCount(count);
    if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) {
        cudaGetLastError(); /* clear the sticky-free error so later calls start clean */
        *count = 0;
        return DSV4_OK;
    }
    return dsv4_cuda_check(err, "cudaGetDeviceCount");
}

extern "C" dsv4_status dsv4_cuda_device_info(int device, dsv4_device_info *info) {
    cudaDeviceProp p;
    DSV4_TRY(dsv4_cuda_check(cudaGetDeviceProperties(&p, device), "cudaGetDeviceProperties"));
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->cc_major = p.major;
    info->cc_minor = p.minor;
    info->sm_count = p.multiProcessorCount;
    info->total_mem = p.totalGlobalMem;
    info->l2_bytes = p.l2CacheSize;
    info->smem_per_block_optin = p.sharedMemPerBlockOptin;
    return DSV4_OK;
}

// ---- the session context ----

#define POOL_ALIGN 256

struct dsv4_cuda_ctx {
    int device;
    dsv4_device_info info;
    cudaStream_t stream;
    cublasHandle_t cublas;
    char *pool;
    size_t capacity, used, base; // base: end of the cuBLAS workspace, the floor of _reset
};

extern "C" dsv4_status dsv4_cublas_check(cublasStatus_t st, const char *op) {
    if (st == CUBLAS_STATUS_SUCCESS) return DSV4_OK;
    return dsv4_fail(st == CUBLAS_STATUS_ALLOC_FAILED ? DSV4_ERR_OUT_OF_MEMORY : DSV4_ERR_CUDA,
                     "%s: cuBLAS error %d (%s)", op, (int)st, cublasGetStatusString(st));
}

extern "C" dsv4_status dsv4_cuda_ctx_create(int device, size_t pool_bytes, dsv4_cuda_ctx **out) {
    if (!out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda_ctx_create: NULL out");
    *out = NULL;
    int count = 0;
    DSV4_TRY(dsv4_cuda_device_count(&count));
    if (device < 0 || device >= count)
        return dsv4_fail(DSV4_ERR_NO_DEVICE, "cuda_ctx_create: GPU %d requested, %d present", device, count);
    if (pool_bytes < DSV4_CUDA_CUBLAS_WORKSPACE)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda_ctx_create: pool of %zu bytes is smaller than the %u-byte cuBLAS workspace",
                         pool_bytes, DSV4_CUDA_CUBLAS_WORKSPACE);
    dsv4_cuda_ctx *c = (dsv4_cuda_ctx *)calloc(1, sizeof *c);
    if (!c) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "cuda_ctx_create: host struct");
    c->device = device;
    dsv4_status st = dsv4_cuda_check(cudaSetDevice(device), "cuda_ctx_create: cudaSetDevice");
    if (st == DSV4_OK) st = dsv4_cuda_device_info(device, &c->info);
    // Non-blocking: the stream never waits on the legacy default stream, which other
    // threads or libraries may use while this session captures a graph.
    if (st == DSV4_OK)
        st = dsv4_cuda_check(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking), "cuda_ctx_create: cudaStreamCreate");
    if (st == DSV4_OK) {
        cudaError_t e = cudaMalloc((void **)&c->pool, pool_bytes);
        if (e == cudaErrorMemoryAllocation) {
            cudaGetLastError(); // not sticky; clear it so later calls start clean
            c->pool = NULL;
            st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "cuda_ctx_create: device pool of %zu bytes (%.2f GiB) on GPU %d (%s, %.2f GiB total)",
                           pool_bytes, pool_bytes / 1073741824.0, device, c->info.name, c->info.total_mem / 1073741824.0);
        } else {
            st = dsv4_cuda_check(e, "cuda_ctx_create: cudaMalloc pool");
        }
    }
    if (st == DSV4_OK) c->capacity = pool_bytes;
    if (st == DSV4_OK) st = dsv4_cublas_check(cublasCreate(&c->cublas), "cuda_ctx_create: cublasCreate");
    if (st == DSV4_OK) st = dsv4_cublas_check(cublasSetStream(c->cublas, c->stream), "cuda_ctx_create: cublasSetStream");
    void *ws = NULL;
    if (st == DSV4_OK) st = dsv4_cuda_ctx_alloc(c, DSV4_CUDA_CUBLAS_WORKSPACE, "cuBLAS workspace", &ws);
    if (st == DSV4_OK)
        st = dsv4_cublas_check(cublasSetWorkspace(c->cublas, ws, DSV4_CUDA_CUBLAS_WORKSPACE), "cuda_ctx_create: cublasSetWorkspace");
    if (st != DSV4_OK) {
        dsv4_cuda_ctx_destroy(c);
        return st;
    }
    c->base = c->used;
    *out = c;
    return DSV4_OK;
}

extern "C" void dsv4_cuda_ctx_destroy(dsv4_cuda_ctx *c) {
    if (!c) return;
    // Best effort: a destroy has no one to report to, and must free what it can.
    if (c->stream) cudaStreamSynchronize(c->stream);
    if (c->cublas) cublasDestroy(c->cublas);
    if (c->pool) cudaFree(c->pool);
    if (c->stream) cudaStreamDestroy(c->stream);
    free(c);
}

extern "C" int dsv4_cuda_ctx_device(const dsv4_cuda_ctx *c) { return c->device; }
extern "C" const dsv4_device_info *dsv4_cuda_ctx_info(const dsv4_cuda_ctx *c) { return &c->info; }
extern "C" cudaStream_t dsv4_cuda_ctx_stream(const dsv4_cuda_ctx *c) { return c->stream; }
extern "C" cublasHandle_t dsv4_cuda_ctx_cublas(const dsv4_cuda_ctx *c) { return c->cublas; }

extern "C" dsv4_status dsv4_cuda_ctx_alloc(dsv4_cuda_ctx *c, size_t bytes, const char *what, void **ptr) {
    if (!c || !ptr) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda_ctx_alloc %s: NULL argument", what ? what : "?");
    *ptr = NULL;
    size_t start = (c->used + POOL_ALIGN - 1) / POOL_ALIGN * POOL_ALIGN;
    if (start > c->capacity || bytes > c->capacity - start)
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY,
                         "cuda_ctx_alloc %s: %zu bytes requested, %zu of the %zu-byte device pool free",
                         what ? what : "buffer", bytes, start > c->capacity ? 0 : c->capacity - start, c->capacity);
    *ptr = c->pool + start;
    c->used = start + bytes;
    return DSV4_OK;
}

extern "C" size_t dsv4_cuda_ctx_used(const dsv4_cuda_ctx *c) { return c->used; }
extern "C" size_t dsv4_cuda_ctx_capacity(const dsv4_cuda_ctx *c) { return c->capacity; }
extern "C" size_t dsv4_cuda_ctx_mark(const dsv4_cuda_ctx *c) { return c->used; }

extern "C" dsv4_status dsv4_cuda_ctx_reset_to(dsv4_cuda_ctx *c, size_t mark) {
    if (mark < c->base || mark > c->used)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "cuda_ctx_reset_to: mark %zu outside [%zu, %zu]", mark, c->base, c->used);
    c->used = mark;
    return DSV4_OK;
}

extern "C" void dsv4_cuda_ctx_reset(dsv4_cuda_ctx *c) { c->used = c->base; }

extern "C" dsv4_status dsv4_cuda_ctx_sync(dsv4_cuda_ctx *c) {
    return dsv4_cuda_check(cudaStreamSynchronize(c->stream), "cuda_ctx_sync: cudaStreamSynchronize");
}
