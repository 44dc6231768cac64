/* Graph-safety harness (header: gpu_harness.h). Uses only the CUDA runtime C API. */
#include "gpu_harness.h"

#if DSV4_HAVE_CUDA
#include <cuda_runtime_api.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/device.h"

static int failf(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int failf(char *msg, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, len, fmt, ap);
    va_end(ap);
    return 0;
}

#define CU(call, what)                                                                                    \
    do {                                                                                                  \
        cudaError_t e_ = (call);                                                                          \
        if (e_ != cudaSuccess) {                                                                          \
            ok = failf(msg, msg_len, "%s: %s: %s", what, cudaGetErrorName(e_), cudaGetErrorString(e_)); \
            goto done;                                                                                    \
        }                                                                                                 \
    } while (0)

static cudaError_t poison(cudaStream_t s, gpu_buf *outs, int n, int byte) {
    for (int i = 0; i < n; i++) {
        cudaError_t e = cudaMemsetAsync(outs[i].dev, byte, outs[i].bytes, s);
        if (e != cudaSuccess) return e;
    }
    return cudaStreamSynchronize(s);
}

int gpu_graph_check(cudaStream_t stream, gpu_enqueue_fn fn, void *arg, gpu_buf *outs, int n_outs, char *msg,
                    size_t msg_len) {
    int ok = 1;
    cudaGraph_t graph = NULL;
    cudaGraphExec_t exec = NULL;
    void *replay = NULL;
    size_t max_bytes = 0;
    msg[0] = 0;
    for (int i = 0; i < n_outs; i++) {
        outs[i].host = malloc(outs[i].bytes ? outs[i].bytes : 1);
        if (!outs[i].host) return failf(msg, msg_len, "out of host memory for %s", outs[i].name);
        if (outs[i].bytes > max_bytes) max_bytes = outs[i].bytes;
    }
    replay = malloc(max_bytes ? max_bytes : 1);
    if (!replay) return failf(msg, msg_len, "out of host memory");

    /* 1. direct run (after everything the test enqueued elsewhere, uploads included) */
    CU(cudaDeviceSynchronize(), "cudaDeviceSynchronize before the direct run");
    cudaGetLastError();
    CU(poison(stream, outs, n_outs, 0xA5), "poisoning outputs before the direct run");
    dsv4_status st = fn(stream, arg);
    if (st != DSV4_OK) {
        ok = failf(msg, msg_len, "direct run returned %s: %s", dsv4_status_name(st), dsv4_last_error());
        goto done;
    }
    CU(cudaStreamSynchronize(stream), "direct run (asynchronous fault)");
    CU(cudaGetLastError(), "direct run (a CUDA call whose error was not checked)");
    for (int i = 0; i < n_outs; i++)
        CU(cudaMemcpy(outs[i].host, outs[i].dev, outs[i].bytes, cudaMemcpyDeviceToHost), "copying direct outputs back");

    /* 2. capture (the last-error state is cleared first, so that an unchecked failing call
     * inside fn shows up below) */
    cudaGetLastError();
    CU(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    st = fn(stream, arg);
    {
        cudaError_t end = cudaStreamEndCapture(stream, &graph); /* always leave capture mode */
        if (st != DSV4_OK) {
            ok = failf(msg, msg_len, "capture: the work returned %s: %s (end capture: %s)", dsv4_status_name(st),
                       dsv4_last_error(), cudaGetErrorName(end));
            cudaGetLastError();
            goto done;
        }
        if (end != cudaSuccess) {
            ok = failf(msg, msg_len, "capture broken: cudaStreamEndCapture: %s: %s (a host sync, host<->device copy "
                       "or allocation inside the captured work?)", cudaGetErrorName(end), cudaGetErrorString(end));
            cudaGetLastError();
            goto done;
        }
    }
    CU(cudaGetLastError(), "capture (a CUDA call inside the captured work failed unchecked)");
    CU(cudaGraphInstantiate(&exec, graph, 0), "cudaGraphInstantiate");

    /* 3. replays */
    for (int rep = 0; rep < 2; rep++) {
        CU(poison(stream, outs, n_outs, 0x5A), "poisoning outputs before a replay");
        CU(cudaGraphLaunch(exec, stream), "cudaGraphLaunch");
        CU(cudaStreamSynchronize(stream), "graph replay (asynchronous fault)");
        for (int i = 0; i < n_outs; i++) {
            CU(cudaMemcpy(replay, outs[i].dev, outs[i].bytes, cudaMemcpyDeviceToHost), "copying replay outputs back");
            if (memcmp(replay, outs[i].host, outs[i].bytes) != 0) {
                size_t b = 0;
                while (((unsigned char *)replay)[b] == ((unsigned char *)outs[i].host)[b]) b++;
                ok = failf(msg, msg_len, "replay %d: output %s differs from the direct run at byte %zu of %zu "
                           "(direct 0x%02x, replay 0x%02x; 0xa5/0x5a mean unwritten)", rep, outs[i].name, b,
                           outs[i].bytes, ((unsigned char *)outs[i].host)[b], ((unsigned char *)replay)[b]);
                goto done;
            }
        }
    }
done:
    if (exec) cudaGraphExecDestroy(exec);
    if (graph) cudaGraphDestroy(graph);
    free(replay);
    return ok;
}

void gpu_bufs_free(gpu_buf *outs, int n_outs) {
    for (int i = 0; i < n_outs; i++) {
        free(outs[i].host);
        outs[i].host = NULL;
    }
}

int gpu_available(void) {
    int n = 0;
    return dsv4_cuda_device_count(&n) == DSV4_OK && n > 0;
}

cudaStream_t gpu_test_stream(void) {
    static cudaStream_t s;
    if (!s && cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess) s = NULL;
    return s;
}

void *gpu_upload(const void *host, size_t n) {
    void *d = NULL;
    if (cudaMalloc(&d, n ? n : 1) != cudaSuccess) return NULL;
    /* A pageable-memory copy may return before its DMA lands, and the tests' streams are
     * non-blocking (not ordered after the legacy stream): wait for the device. */
    if (host && (cudaMemcpy(d, host, n, cudaMemcpyHostToDevice) != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess)) {
        cudaFree(d);
        return NULL;
    }
    return d;
}
#else
typedef int dsv4_gpu_harness_unused; /* ISO C wants a translation unit to declare something */
#endif
