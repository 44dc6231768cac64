/* The FP8 KV cache's rounding (spec nvfp4.md "FP8 KV cache"; dsv4-reference.md §5.3-5.4): the
 * nope dims of a cached KV row go through e4m3 with one power-of-two scale per block of 64
 * (DeepSeek trains with exactly this round trip), the trailing rope dims through BF16. The
 * reference applies it to window rows and compressed entries when the session asks for an FP8
 * cache, so that the GPU cache, which stores these bytes, has a CPU twin to be checked against. */
#include <math.h>

#include "base/status.h"
#include "cpu/ops.h"
#include "format/fp.h"
#include "format/quant.h"

dsv4_status dsv4_cpu_kv_fp8_roundtrip(float *rows, int n, int dim, int rope_dim) {
    if (n < 0 || dim <= 0 || rope_dim < 0 || rope_dim > dim || (n > 0 && !rows))
        return dsv4_fail(DSV4_ERR_SHAPE, "kv_fp8: bad sizes n=%d dim=%d rope_dim=%d", n, dim, rope_dim);
    const int nope = dim - rope_dim;
    for (int r = 0; r < n; r++) {
        float *x = rows + (size_t)r * dim;
        for (int b = 0; b < nope; b += DSV4_KV_FP8_BLOCK) {
            const int len = nope - b < DSV4_KV_FP8_BLOCK ? nope - b : DSV4_KV_FP8_BLOCK;
            for (int i = 0; i < len; i++) /* amax ignores NaN: look for it explicitly */
                if (!isfinite(x[b + i]))
                    return dsv4_fail(DSV4_ERR_NONFINITE, "kv_fp8: row %d value %d is NaN/Inf", r, b + i);
            const float amax = dsv4_amax(x + b, len);
            /* the smallest power of two that keeps the block inside e4m3's range */
            const float scale = amax > 0.0f ? dsv4_ue8m0_decode(dsv4_ue8m0_encode_ceil(amax / DSV4_E4M3_MAX)) : 1.0f;
            for (int i = 0; i < len; i++) x[b + i] = dsv4_e4m3_decode(dsv4_e4m3_encode(x[b + i] / scale)) * scale;
        }
        for (int i = nope; i < dim; i++) x[i] = dsv4_bf16_round(x[i]);
    }
    return DSV4_OK;
}
