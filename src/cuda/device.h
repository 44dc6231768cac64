/* CUDA device queries (implemented in device.cu; absent in CPU-only builds). */
#ifndef DSV4_CUDA_DEVICE_H
#define DSV4_CUDA_DEVICE_H

#include <stddef.h>
#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_device_info {
    char name[256];
    int cc_major, cc_minor, sm_count;
    size_t total_mem, l2_bytes, smem_per_block_optin;
} dsv4_device_info;

/* Number of usable GPUs; 0 (and DSV4_OK) when there is no GPU or no driver. */
dsv4_status dsv4_cuda_device_count(int *count);
dsv4_status dsv4_cuda_device_info(int device, dsv4_device_info *info);
/* 1 unless the environment has DSV4_PDL=0: kernels that support programmatic dependent
 * launch are then launched the ordinary way (A/B benchmarks; common.cuh). */
int dsv4_cuda_pdl_enabled(void);
/* SMs of the current device, cached per device (132 when the query fails): grid sizing that
 * stays legal inside a stream capture (no runtime call after the first). */
int dsv4_cuda_sm_count(void);
/* 1 unless the environment has DSV4_L2_HINTS=0: the decode kernel then streams weights without
 * the evict-first L2 policy and warms no weights into L2 ahead of use (A/B benchmarks;
 * linear_decode.cu). Results do not depend on it. */
int dsv4_cuda_l2_hints_enabled(void);
/* 0 unless the environment has DSV4_ROW_THREADS=32, 64, 128 or 256: the quantize and fused
 * RMSNorm kernels then give every row that many threads whatever the row count (tests and
 * benchmarks of each layout; nvfp4.cuh row_threads). */
int dsv4_cuda_row_threads_override(void);

#ifdef __CUDACC__
dsv4_status dsv4_cuda_check(cudaError_t err, const char *op);
#endif

#ifdef __cplusplus
}
#endif
#endif
