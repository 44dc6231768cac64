/* bench_stream_read: a kernel that only reads `bytes` (16-byte aligned) once; `sink` holds
 * sm_count * 8 uint32 (practically never written). Returns 0, or -1 on a launch error. */
#ifndef DSV4_BENCH_STREAM_READ_H
#define DSV4_BENCH_STREAM_READ_H
#include <cuda_runtime_api.h>
#include <stddef.h>
#ifdef __cplusplus
extern "C" {
#endif
int bench_stream_read(const void *buf, size_t bytes, void *sink, int sm_count, cudaStream_t s);
#ifdef __cplusplus
}
#endif
#endif
