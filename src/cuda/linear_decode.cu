// Decode-regime linear (M = 1..64): a split-K GEMV that streams every weight byte once.
//
// Work split. A CTA of DECODE_WARPS warps owns kRowsPerCta output rows and one K range
// (blockIdx.y = split). Inside a warp, kLanesK consecutive lanes share a row group and walk
// along K, each loading 16 bytes of packed payload per row per step (32 fp4 or 16 fp8
// elements): the kLanesK lanes of a row read kLanesK·16 contiguous bytes, so every 32-byte
// sector is fully used. Each lane handles kR rows at once (kR independent 16-byte loads in
// flight, and each activation read from shared memory is used kR times).
//
// Activations. The CTA stages its K range in chunks of kSmemK values for all MT tokens into
// shared memory as fp32 (BF16 and NVFP4 activations are both exact in fp32), zero-filled past M
// and past K. The chunk is stored lane-interleaved, so that the float4 a lane reads sits next
// to its neighbours' float4s (conflict-free, see act_slot()).
//
// Math. fp4 elements are expanded exactly to fp32 through fp16: the half bits
// (sign << 15) | (code << 9) encode e2m1 · 2^-14 exactly (codes 0 and 1 are fp16 subnormals,
// which the fp16 -> fp32 conversion handles exactly). The block scale multiplies the element
// (exact: e2m1 · scale has at most 6 significant bits), the 2^14 goes into out_scale with
// the global scale. Every product is one fp32 FMA into acc[row][token]; the lanes of a row
// are reduced with shuffles in a fixed order. With splits > 1 each split writes raw sums to
// partials[split] and linear_splitk_reduce (linear.cu) adds them in split order: no atomics,
// bitwise reproducible.
#include "cuda/linear_internal.cuh"

#define DECODE_WARPS 8
#define DECODE_THREADS (DECODE_WARPS * 32)
#define DECODE_SMEM_FLOATS 8192 // 32 KB of staged activations per CTA (static shared memory)

template <int FMT, int MT>
struct DecodeShape {
    static constexpr int kElems = FMT == LIN_FP8 ? 16 : 32; // weight elements per 16-byte load
    static constexpr int kSmemK = DECODE_SMEM_FLOATS / MT;  // K values per staged chunk
    static constexpr int kLanesK = kSmemK / kElems < 8 ? kSmemK / kElems : 8;
    static constexpr int kRowGroups = 32 / kLanesK;
    static constexpr int kR = MT >= 32 ? 1 : 2; // rows per lane (acc registers = kR · MT)
    static constexpr int kRowsPerWarp = kRowGroups * kR;
    static constexpr int kRowsPerCta = DECODE_WARPS * kRowsPerWarp;
    static constexpr int kStep = kLanesK * kElems; // K covered by one step of a row group
    static_assert(kSmemK % kStep == 0, "a staged chunk holds whole steps");
    static_assert(kElems % 4 == 0 && kLanesK >= 1, "float4 activation reads");
};

// Where chunk-relative k lives in the staged buffer of one token: within a step, element j of
// lane lk goes to (j / 4) · (kLanesK · 4) + lk · 4 + j % 4.
template <int FMT, int MT>
__device__ __forceinline__ int act_slot(int kk) {
    using S = DecodeShape<FMT, MT>;
    const int step = kk / S::kStep, o = kk % S::kStep;
    const int lk = o / S::kElems, j = o % S::kElems;
    return step * S::kStep + (j / 4) * (S::kLanesK * 4) + lk * 4 + (j % 4);
}

// One activation value as fp32: BF16 as is; NVFP4 as e2m1 · e4m3 (exact; the input scale is
// applied with the output factor).
template <int ACT>
__device__ __forceinline__ float load_act(const LinearParams &p, int64_t m, int64_t k) {
    if (ACT == LIN_ACT_BF16) return __bfloat162float(p.x[m * p.K + k]);
    const uint32_t byte = p.xq[(m * p.K + k) >> 1];
    const uint32_t nib = (k & 1) ? byte >> 4 : byte & 15u;
    return e2m1_to_f32(nib) * e4m3_to_f32(p.xq_scale[(m * p.K + k) >> 4]);
}

// 8 packed e2m1 (nibble i = element i) -> 8 floats, each e2m1 · 2^-14 exactly.
__device__ __forceinline__ void e2m1x8_to_f32_times_2m14(uint32_t q, float out[8]) {
#pragma unroll
    for (int i = 0; i < 4; i++) {
        const uint32_t t = q >> (4 * i); // nibble i in bits 0..3, nibble i + 4 in bits 16..19
        const uint32_t h = ((t & 0x00070007u) << 9) | ((t & 0x00080008u) << 12);
        const float2 f = __half22float2(__halves2half2(__ushort_as_half((unsigned short)(h & 0xffffu)),
                                                       __ushort_as_half((unsigned short)(h >> 16))));
        out[i] = f.x;
        out[i + 4] = f.y;
    }
}

// 4 packed e4m3 (byte i = element i) -> 4 floats (hardware e4m3 -> f16 conversion, exact).
__device__ __forceinline__ void e4m3x4_to_f32(uint32_t q, float out[4]) {
    const __half2_raw lo = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(q & 0xffffu), __NV_E4M3);
    const __half2_raw hi = __nv_cvt_fp8x2_to_halfraw2((__nv_fp8x2_storage_t)(q >> 16), __NV_E4M3);
    const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
    out[0] = a.x;
    out[1] = a.y;
    out[2] = b.x;
    out[3] = b.y;
}

template <int FMT, int ACT, int MT>
__global__ void __launch_bounds__(DECODE_THREADS) linear_decode(const LinearParams p) {
    using S = DecodeShape<FMT, MT>;
    __shared__ __align__(16) float xs[MT * S::kSmemK];

    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int lk = lane % S::kLanesK, rg = lane / S::kLanesK;
    // rows of this lane: row0 + i · kRowGroups, i < kR
    const int64_t row0 = (int64_t)blockIdx.x * S::kRowsPerCta + warp * S::kRowsPerWarp + rg;
    const int64_t k_begin = (int64_t)blockIdx.y * p.k_per_split;
    const int64_t k_end = k_begin + p.k_per_split < p.K ? k_begin + p.k_per_split : p.K;
    const int64_t row_bytes = FMT == LIN_FP8 ? p.K : p.K / 2;

    float acc[S::kR][MT];
#pragma unroll
    for (int i = 0; i < S::kR; i++)
#pragma unroll
        for (int m = 0; m < MT; m++) acc[i][m] = 0.0f;

    for (int64_t kc = k_begin; kc < k_end; kc += S::kSmemK) {
        const int kn = (int)(k_end - kc < S::kSmemK ? k_end - kc : S::kSmemK); // a multiple of kElems
        __syncthreads(); // the previous chunk's readers are done
        for (int idx = threadIdx.x; idx < MT * S::kSmemK; idx += DECODE_THREADS) {
            const int m = idx / S::kSmemK, kk = idx % S::kSmemK;
            const float v = (m < p.M && kk < kn) ? load_act<ACT>(p, m, kc + kk) : 0.0f;
            xs[m * S::kSmemK + act_slot<FMT, MT>(kk)] = v;
        }
        __syncthreads();

#pragma unroll 2
        for (int s = 0; s < kn; s += S::kStep) {
            const int kk = s + lk * S::kElems;
            if (kk >= kn) continue; // a partial last step: this lane's unit lies past K
            const int64_t k = kc + kk;
            uint4 raw[S::kR];
            float scale[S::kR][2]; // NVFP4: blocks k/16 and k/16 + 1; others: [0]
#pragma unroll
            for (int i = 0; i < S::kR; i++) {
                const int64_t row = row0 + (int64_t)i * S::kRowGroups;
                raw[i] = make_uint4(0, 0, 0, 0);
                scale[i][0] = scale[i][1] = 0.0f;
                if (row >= p.N) continue;
                const int64_t elem_off = FMT == LIN_FP8 ? k : k / 2;
                raw[i] = __ldg(reinterpret_cast<const uint4 *>(p.w + row * row_bytes + elem_off));
                if (FMT == LIN_NVFP4) {
                    const uint16_t s2 = __ldg(reinterpret_cast<const uint16_t *>(p.w_scale + row * (p.K / 16) + k / 16));
                    scale[i][0] = e4m3_to_f32(s2 & 0xffu);
                    scale[i][1] = e4m3_to_f32(s2 >> 8);
                } else if (FMT == LIN_MXFP4) {
                    scale[i][0] = scale[i][1] = ue8m0_to_f32(__ldg(p.w_scale + row * (p.K / 32) + k / 32));
                } else {
                    const int64_t si = (row / 128) * ((p.K + 127) / 128) + k / 128;
                    scale[i][0] = p.w_scale_f32 ? __ldg(reinterpret_cast<const float *>(p.w_scale) + si)
                                                : ue8m0_to_f32(__ldg(p.w_scale + si));
                }
            }
            const float *xk = xs + (s / S::kStep) * S::kStep + lk * 4; // + m · kSmemK + g · kLanesK · 4
            const uint32_t *words[S::kR];
#pragma unroll
            for (int i = 0; i < S::kR; i++) words[i] = reinterpret_cast<const uint32_t *>(&raw[i]);
            // one 32-bit word at a time: 8 fp4 or 4 fp8 elements per row
#pragma unroll
            for (int wd = 0; wd < 4; wd++) {
                constexpr int kPerWord = FMT == LIN_FP8 ? 4 : 8;
                float wv[S::kR][kPerWord];
#pragma unroll
                for (int i = 0; i < S::kR; i++) {
                    if (FMT == LIN_FP8) {
                        e4m3x4_to_f32(words[i][wd], wv[i]);
                    } else {
                        e2m1x8_to_f32_times_2m14(words[i][wd], wv[i]);
                    }
                    const float sc = scale[i][FMT == LIN_NVFP4 ? wd / 2 : 0];
#pragma unroll
                    for (int e = 0; e < kPerWord; e++) wv[i][e] *= sc;
                }
#pragma unroll
                for (int m = 0; m < MT; m++) {
#pragma unroll
                    for (int g = 0; g < kPerWord / 4; g++) {
                        const int group = wd * (kPerWord / 4) + g; // float4 group within the lane's unit
                        const float4 xv = *reinterpret_cast<const float4 *>(xk + m * S::kSmemK + group * S::kLanesK * 4);
#pragma unroll
                        for (int i = 0; i < S::kR; i++) {
                            float a = acc[i][m];
                            a = fmaf(wv[i][g * 4 + 0], xv.x, a);
                            a = fmaf(wv[i][g * 4 + 1], xv.y, a);
                            a = fmaf(wv[i][g * 4 + 2], xv.z, a);
                            a = fmaf(wv[i][g * 4 + 3], xv.w, a);
                            acc[i][m] = a;
                        }
                    }
                }
            }
        }
    }

    // Reduce the kLanesK lanes of each row (contiguous lanes; fixed xor order).
#pragma unroll
    for (int i = 0; i < S::kR; i++)
#pragma unroll
        for (int m = 0; m < MT; m++)
#pragma unroll
            for (int off = S::kLanesK / 2; off > 0; off /= 2)
                acc[i][m] += __shfl_xor_sync(0xffffffffu, acc[i][m], off);
    if (lk != 0) return;
#pragma unroll
    for (int i = 0; i < S::kR; i++) {
        const int64_t row = row0 + (int64_t)i * S::kRowGroups;
        if (row >= p.N) continue;
#pragma unroll
        for (int m = 0; m < MT; m++) {
            if (m >= p.M) break;
            if (gridDim.y > 1)
                p.partials[((int64_t)blockIdx.y * p.M + m) * p.N + row] = acc[i][m];
            else
                linear_store(p, m, row, acc[i][m] * linear_out_factor(p, m));
        }
    }
}

int linear_decode_mt(int64_t M) {
    int mt = 1;
    while (mt < M) mt *= 2;
    return mt;
}

template <int FMT>
static int rows_per_cta_for(int mt) {
    switch (mt) {
    case 1: return DecodeShape<FMT, 1>::kRowsPerCta;
    case 2: return DecodeShape<FMT, 2>::kRowsPerCta;
    case 4: return DecodeShape<FMT, 4>::kRowsPerCta;
    case 8: return DecodeShape<FMT, 8>::kRowsPerCta;
    case 16: return DecodeShape<FMT, 16>::kRowsPerCta;
    case 32: return DecodeShape<FMT, 32>::kRowsPerCta;
    default: return DecodeShape<FMT, 64>::kRowsPerCta;
    }
}

template <int FMT>
static int k_step_for(int mt) {
    switch (mt) {
    case 1: return DecodeShape<FMT, 1>::kStep;
    case 2: return DecodeShape<FMT, 2>::kStep;
    case 4: return DecodeShape<FMT, 4>::kStep;
    case 8: return DecodeShape<FMT, 8>::kStep;
    case 16: return DecodeShape<FMT, 16>::kStep;
    case 32: return DecodeShape<FMT, 32>::kStep;
    default: return DecodeShape<FMT, 64>::kStep;
    }
}

int linear_decode_rows_per_cta(int fmt, int mt) {
    return fmt == LIN_NVFP4 ? rows_per_cta_for<LIN_NVFP4>(mt)
         : fmt == LIN_MXFP4 ? rows_per_cta_for<LIN_MXFP4>(mt)
                            : rows_per_cta_for<LIN_FP8>(mt);
}

int linear_decode_k_step(int fmt, int mt) {
    return fmt == LIN_NVFP4 ? k_step_for<LIN_NVFP4>(mt) : fmt == LIN_MXFP4 ? k_step_for<LIN_MXFP4>(mt) : k_step_for<LIN_FP8>(mt);
}

template <int FMT, int ACT, int MT>
static dsv4_status launch_mt(const LinearParams &p, int splits, cudaStream_t s) {
    using S = DecodeShape<FMT, MT>;
    const dim3 grid((unsigned)((p.N + S::kRowsPerCta - 1) / S::kRowsPerCta), (unsigned)splits);
    linear_decode<FMT, ACT, MT><<<grid, DECODE_THREADS, 0, s>>>(p);
    DSV4_CUDA_LAUNCHED("linear_decode launch");
    return DSV4_OK;
}

template <int FMT, int ACT>
static dsv4_status launch_act(const LinearParams &p, int splits, cudaStream_t s) {
    switch (linear_decode_mt(p.M)) {
    case 1: return launch_mt<FMT, ACT, 1>(p, splits, s);
    case 2: return launch_mt<FMT, ACT, 2>(p, splits, s);
    case 4: return launch_mt<FMT, ACT, 4>(p, splits, s);
    case 8: return launch_mt<FMT, ACT, 8>(p, splits, s);
    case 16: return launch_mt<FMT, ACT, 16>(p, splits, s);
    case 32: return launch_mt<FMT, ACT, 32>(p, splits, s);
    case 64: return launch_mt<FMT, ACT, 64>(p, splits, s);
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear_decode: M = %lld above the decode limit", (long long)p.M);
    }
}

template <int FMT>
static dsv4_status launch_fmt(int act, const LinearParams &p, int splits, cudaStream_t s) {
    return act == LIN_ACT_NVFP4 ? launch_act<FMT, LIN_ACT_NVFP4>(p, splits, s) : launch_act<FMT, LIN_ACT_BF16>(p, splits, s);
}

dsv4_status linear_decode_launch(int fmt, int act, const LinearParams &p, int splits, cudaStream_t s) {
    switch (fmt) {
    case LIN_NVFP4: return launch_fmt<LIN_NVFP4>(act, p, splits, s);
    case LIN_MXFP4: return launch_fmt<LIN_MXFP4>(act, p, splits, s);
    case LIN_FP8: return launch_fmt<LIN_FP8>(act, p, splits, s);
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "linear_decode: unknown format %d", fmt);
    }
}
