// Asynchronous global -> shared copies (cp.async, sm_80+), shared by the linear kernels.
// src_bytes < the copy size zero-fills the rest of the destination (0: all zeros, src unread).
#pragma once

#include <stdint.h>

__device__ __forceinline__ uint32_t smem_u32(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// 16 bytes, cached in L2 only.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async16(void *dst, const void *src, int src_bytes) {
    cp_async16(smem_u32(dst), src, src_bytes);
}
// The same with an L2 policy (l2_policy_evict_first below), asking L2 to fetch the whole
// aligned 256-byte block on a miss: the decode kernel's warps read a row's 256 bytes in
// 64-byte pieces at about the same time (H100: within 1-2 % either way; kept as the hint).
__device__ __forceinline__ void cp_async16_256(void *dst, const void *src, int src_bytes, uint64_t policy) {
    asm volatile("cp.async.cg.shared.global.L2::cache_hint.L2::256B [%0], [%1], 16, %2, %3;" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(src_bytes), "l"(policy)
                 : "memory");
}
// 4 bytes (cp.async.cg takes only 16).
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int src_bytes) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" ::"r"(smem_u32(dst)), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async4(void *dst, const void *src, int src_bytes, uint64_t policy) {
    asm volatile("cp.async.ca.shared.global.L2::cache_hint [%0], [%1], 4, %2, %3;" ::"r"(smem_u32(dst)), "l"(src),
                 "r"(src_bytes), "l"(policy)
                 : "memory");
}
// 4 bytes, with a policy and the 256-byte fetch.
__device__ __forceinline__ void cp_async4_256(void *dst, const void *src, int src_bytes, uint64_t policy) {
    asm volatile("cp.async.ca.shared.global.L2::cache_hint.L2::256B [%0], [%1], 4, %2, %3;" ::"r"(smem_u32(dst)),
                 "l"(src), "r"(src_bytes), "l"(policy)
                 : "memory");
}
// An L2 policy that makes the lines it touches the first to be evicted: weights streamed once
// per step should not push out what is read again (activations, or weights warmed ahead).
__device__ __forceinline__ uint64_t l2_policy_evict_first() {
    uint64_t p;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;" : "=l"(p));
    return p;
}
// The default priority, as a policy (the A/B switch of the one above).
__device__ __forceinline__ uint64_t l2_policy_evict_normal() {
    uint64_t p;
    asm volatile("createpolicy.fractional.L2::evict_normal.b64 %0, 1.0;" : "=l"(p));
    return p;
}
// Pulls [p, p + bytes) into L2 without waiting (a bulk prefetch; p and bytes multiples of 16).
__device__ __forceinline__ void l2_prefetch_bulk(const void *p, uint32_t bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
// Waits until at most N of this thread's committed groups are pending.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}
