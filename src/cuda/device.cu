// CUDA device discovery and error translation: every CUDA runtime call in dsv4
// goes through dsv4_cuda_check so that failures become a dsv4_status naming the op.
#include <cstdio>
#include <cuda_runtime.h>

#include "base/status.h"
#include "cuda/device.h"

extern "C" dsv4_status dsv4_cuda_check(cudaError_t err, const char *op) {
    if (err == cudaSuccess) return DSV4_OK;
    dsv4_status st = (err == cudaErrorMemoryAllocation) ? DSV4_ERR_OUT_OF_MEMORY
                   : (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver) ? DSV4_ERR_NO_DEVICE
                                                                                     : DSV4_ERR_CUDA;
    return dsv4_fail(st, "%s: CUDA error %d (%s): %s", op, (int)err, cudaGetErrorName(err),
                     cudaGetErrorString(err));
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
