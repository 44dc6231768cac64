// Shared by the CUDA sources: checked calls that turn failures into a dsv4_status naming
// the op, and small device helpers. C-style CUDA: extern "C" launchers, templates only for
// tile sizes.
#pragma once

#include <cuda_runtime.h>
#include <stdint.h>

#include "base/status.h"
#include "cuda/device.h"

// Runs a CUDA runtime call; on failure returns from the enclosing function with the status.
#define DSV4_CUDA_TRY(call, op) DSV4_TRY(dsv4_cuda_check((call), (op)))
// After a kernel launch: reports launch-configuration errors (not asynchronous faults).
#define DSV4_CUDA_LAUNCHED(op) DSV4_TRY(dsv4_cuda_check(cudaGetLastError(), (op)))

// ---- programmatic dependent launch (PDL, sm_90+) ----
// A kernel launched with dsv4_launch_pdl() may start while the kernel before it in the stream
// is still running (its launch and its first weight loads overlap the predecessor's tail).
// Such a kernel must call pdl_wait() in every CTA before it reads anything an earlier kernel
// wrote or writes anything an earlier kernel reads; pdl_wait() returns once the predecessor
// has completed and its memory is visible. Kernels call pdl_launch_dependents() to let their
// own successor start early (a hint; without it the successor starts as this grid exits).
// Both are no-ops for kernels launched the ordinary way. DSV4_PDL=0 in the environment
// launches everything the ordinary way (A/B benchmarks).
__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}
__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

template <typename... KArgs, typename... Args>
static inline cudaError_t dsv4_launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                          cudaStream_t s, Args... args) {
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = s;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = dsv4_cuda_pdl_enabled() ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, args...);
}
