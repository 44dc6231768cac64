// Development probe (not part of `make bench`): how fast HBM streams a weight matrix read in
// the decode kernel's access pattern, and in variants of it. Every variant reads every byte of
// an [N, row_bytes] buffer exactly once through the decode kernel's structure (a grid of about
// 4 CTAs per SM walking 128-thread items, each warp a 2-stage cp.async ring, warps taking K
// steps round-robin); they differ in how many rows an item covers (RT) and how many
// consecutive 16-byte chunks of a row a lane copies per step (CK):
//   RT 32, CK 1: the decode kernel (4 lanes x 16 B = 64 B of each of 32 rows per warp step)
//   RT 16, CK 2: 128 B of each of 16 rows per warp step (the same bytes per step)
//   RT 16, CK 4: 256 B of each of 16 rows (twice the bytes per step)
//   RT  8, CK 4 / RT 8, CK 8: fewer rows, longer runs
//   warp-owned items of 16 or 32 rows: each warp reads its rows' K in order, 64 B a row a step
// It prints one JSON line per variant with the time and GB/s, beside a plain grid-stride read.
//   nvcc -O3 -arch=sm_90a -o /tmp/read_pattern bench/read_pattern.cu && /tmp/read_pattern [MB] [row_bytes]
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define WARPS 4
#define STAGES 2

__device__ __forceinline__ void cp16(void *dst, const void *src) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"((uint32_t)__cvta_generic_to_shared(dst)), "l"(src)
                 : "memory");
}

template <int RT, int CK>
__global__ void __launch_bounds__(WARPS * 32, 4) pattern_read(const uint8_t *w, int64_t N, int64_t row_bytes, uint32_t *sink) {
    constexpr int kRowsPerLane = RT / 8;        // rows g, g + 8, ... of the item
    constexpr int kC = kRowsPerLane * CK;       // chunks per lane per step
    constexpr int kStepBytes = 4 * 16 * CK;     // bytes of a row one warp step covers
    __shared__ __align__(16) uint4 ring[WARPS][STAGES][kC][32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int64_t n_items = N / RT, n_steps = row_bytes / kStepBytes;
    const int ns_w = (int)((n_steps - warp + WARPS - 1) / WARPS);
    uint32_t acc = 0;
    // producer state
    int64_t p_item = blockIdx.x;
    int p_q = 0, p_slot = 0;
    auto produce = [&]() {
        if (p_item < n_items) {
            const int64_t off = (int64_t)(warp + p_q * WARPS) * kStepBytes + t * 16 * CK;
#pragma unroll
            for (int r = 0; r < kRowsPerLane; r++)
#pragma unroll
                for (int c = 0; c < CK; c++)
                    cp16(&ring[warp][p_slot][r * CK + c][lane], w + (p_item * RT + g + 8 * r) * row_bytes + off + 16 * c);
            if (++p_q == ns_w) p_q = 0, p_item += gridDim.x;
        }
        asm volatile("cp.async.commit_group;" ::: "memory");
        p_slot ^= 1;
    };
    produce();
    int c_slot = 0;
    for (int64_t item = blockIdx.x; item < n_items; item += gridDim.x) {
        for (int q = 0; q < ns_w; q++) {
            asm volatile("cp.async.wait_group 0;" ::: "memory");
            produce();
#pragma unroll
            for (int c = 0; c < kC; c++) acc ^= ring[warp][c_slot][c][lane].x;
            c_slot ^= 1;
        }
        __syncthreads(); // the decode kernel's per-item reduction barrier
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;
}

// Each warp owns its items (RT rows, all of K, 64 B of each row per step in order), no
// cross-warp K split: the layout a warp-per-item decode would read.
template <int RT>
__global__ void __launch_bounds__(WARPS * 32, 4) warp_item_read(const uint8_t *w, int64_t N, int64_t row_bytes, uint32_t *sink) {
    constexpr int kC = RT / 8;
    __shared__ __align__(16) uint4 ring[WARPS][STAGES][kC][32];
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    const int64_t n_items = N / RT, n_steps = row_bytes / 64, gw = (int64_t)gridDim.x * WARPS;
    uint32_t acc = 0;
    int64_t p_item = (int64_t)blockIdx.x * WARPS + warp;
    int p_q = 0, p_slot = 0;
    auto produce = [&]() {
        if (p_item < n_items) {
#pragma unroll
            for (int r = 0; r < kC; r++)
                cp16(&ring[warp][p_slot][r][lane], w + (p_item * RT + g + 8 * r) * row_bytes + (int64_t)p_q * 64 + t * 16);
            if (++p_q == n_steps) p_q = 0, p_item += gw;
        }
        asm volatile("cp.async.commit_group;" ::: "memory");
        p_slot ^= 1;
    };
    produce();
    int c_slot = 0;
    for (int64_t item = (int64_t)blockIdx.x * WARPS + warp; item < n_items; item += gw) {
        for (int q = 0; q < n_steps; q++) {
            asm volatile("cp.async.wait_group 0;" ::: "memory");
            produce();
#pragma unroll
            for (int c = 0; c < kC; c++) acc ^= ring[warp][c_slot][c][lane].x;
            c_slot ^= 1;
        }
    }
    asm volatile("cp.async.wait_group 0;" ::: "memory");
    if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;
}

__global__ void plain_read(const uint4 *p, int64_t n16, uint32_t *sink) {
    uint32_t acc = 0;
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n16; i += stride) {
        uint4 v;
        asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                     : "l"(p + i));
        acc ^= v.x ^ v.y;
    }
    if (acc == 0x9e3779b9u) sink[blockIdx.x] = acc;
}

template <typename F>
static float time_it(F launch, int reps) {
    cudaEvent_t a, b;
    cudaEventCreate(&a), cudaEventCreate(&b);
    launch(0), launch(1);
    cudaEventRecord(a);
    for (int i = 0; i < reps; i++) launch(i);
    cudaEventRecord(b);
    cudaEventSynchronize(b);
    float ms = 0;
    cudaEventElapsedTime(&ms, a, b);
    return ms * 1e3f / reps;
}

template <int RT>
static void run_warp_items(const char *name, uint8_t *buf[2], int64_t N, int64_t rb, uint32_t *sink, int sms, double bytes) {
    const int64_t items = N / RT, warps = (items + 0) / 1;
    const int64_t want = 4LL * sms * WARPS, per = (warps + want - 1) / want, grid = ((warps + per - 1) / per + WARPS - 1) / WARPS;
    const float us = time_it([&](int i) { warp_item_read<RT><<<(unsigned)grid, WARPS * 32>>>(buf[i & 1], N, rb, sink); }, 20);
    printf("{\"pattern\": \"%s\", \"rows_per_item\": %d, \"grid\": %lld, \"us\": %.2f, \"gbs\": %.1f}\n", name, RT,
           (long long)grid, us, bytes / us / 1e3);
}

template <int RT, int CK>
static void run(const char *name, uint8_t *buf[2], int64_t N, int64_t rb, uint32_t *sink, int sms, double bytes) {
    const int64_t items = N / RT;
    const int64_t want = 4LL * sms, per = (items + want - 1) / want, grid = (items + per - 1) / per;
    const float us = time_it([&](int i) { pattern_read<RT, CK><<<(unsigned)grid, WARPS * 32>>>(buf[i & 1], N, rb, sink); }, 20);
    printf("{\"pattern\": \"%s\", \"rows_per_item\": %d, \"chunks_per_lane\": %d, \"grid\": %lld, \"us\": %.2f, \"gbs\": %.1f}\n",
           name, RT, CK, (long long)grid, us, bytes / us / 1e3);
}

int main(int argc, char **argv) {
    const int64_t mb = argc > 1 ? atoll(argv[1]) : 66, rb = argc > 2 ? atoll(argv[2]) : 2048;
    const int64_t N = mb * 1000000 / rb / 32 * 32;
    const double bytes = (double)N * rb;
    uint8_t *buf[2];
    uint32_t *sink;
    cudaMalloc(&buf[0], (size_t)bytes), cudaMalloc(&buf[1], (size_t)bytes), cudaMalloc(&sink, 1 << 20);
    cudaMemset(buf[0], 1, (size_t)bytes), cudaMemset(buf[1], 2, (size_t)bytes);
    int sms = 0;
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
    const float us = time_it([&](int i) { plain_read<<<sms * 8, 256>>>((const uint4 *)buf[i & 1], (int64_t)(bytes / 16), sink); }, 20);
    printf("{\"pattern\": \"grid-stride\", \"rows\": %lld, \"row_bytes\": %lld, \"us\": %.2f, \"gbs\": %.1f}\n", (long long)N,
           (long long)rb, us, bytes / us / 1e3);
    run<32, 1>("decode (32 rows x 64 B per warp step)", buf, N, rb, sink, sms, bytes);
    run<16, 2>("16 rows x 128 B", buf, N, rb, sink, sms, bytes);
    run<16, 4>("16 rows x 256 B", buf, N, rb, sink, sms, bytes);
    run<8, 4>("8 rows x 256 B", buf, N, rb, sink, sms, bytes);
    run<8, 8>("8 rows x 512 B", buf, N, rb, sink, sms, bytes);
    run_warp_items<16>("warp-owned items, 16 rows x 64 B per step", buf, N, rb, sink, sms, bytes);
    run_warp_items<32>("warp-owned items, 32 rows x 64 B per step", buf, N, rb, sink, sms, bytes);
    const cudaError_t e = cudaDeviceSynchronize();
    if (e != cudaSuccess) { fprintf(stderr, "CUDA error: %s\n", cudaGetErrorString(e)); return 1; }
    return 0;
}
