/* NVFP4 activation quantization, GPU-kernel semantics (header: quantize.h): the unchecked
 * row quantizer of src/format/quant.c, so that the kernels' behaviour on NaN/Inf is pinned too. */
#include "cpu/quantize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/status.h"
#include "format/fp.h"
#include "format/quant.h"

#define AMAX_DIVISOR (DSV4_E2M1_MAX * DSV4_E4M3_MAX) /* 2688 */

static float dynamic_scale(float amax) { return amax == 0.0f ? 1.0f : amax / AMAX_DIVISOR; }

dsv4_status dsv4_cpu_quantize_nvfp4_act(const float *x, int64_t M, int64_t K, dsv4_act_scale_mode mode,
                                        dsv4_sf_layout layout, float *input_scale, uint8_t *q,
                                        uint8_t *sf) {
    if (!x || !input_scale || !q || !sf)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "quantize_nvfp4_act: NULL argument");
    if (M < 0 || K <= 0 || K % DSV4_NVFP4_BLOCK)
        return dsv4_fail(DSV4_ERR_SHAPE, "quantize_nvfp4_act: bad shape [%lld, %lld] (K must be a positive multiple of 16)",
                         (long long)M, (long long)K);
    if ((int)mode < 0 || mode > DSV4_ACT_SCALE_DYNAMIC_TOKEN || (int)layout < 0 || layout > DSV4_SF_SWIZZLED)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "quantize_nvfp4_act: unknown scale mode %d or layout %d",
                         (int)mode, (int)layout);
    const int64_t kb = K / DSV4_NVFP4_BLOCK;
    uint8_t *lin = sf;
    if (layout == DSV4_SF_SWIZZLED && M > 0) {
        lin = malloc((size_t)(M * kb));
        if (!lin) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "quantize_nvfp4_act: %lld scale bytes", (long long)(M * kb));
    }
    if (mode == DSV4_ACT_SCALE_DYNAMIC_TENSOR) input_scale[0] = dynamic_scale(dsv4_amax(x, M * K));
    for (int64_t r = 0; r < M; r++) {
        const float *xr = x + r * K;
        float s = input_scale[0];
        if (mode == DSV4_ACT_SCALE_DYNAMIC_TOKEN) s = input_scale[r] = dynamic_scale(dsv4_amax(xr, K));
        dsv4_nvfp4_quantize_act_row(xr, K, 1.0f / s, q + r * K / 2, lin + r * kb);
    }
    if (layout == DSV4_SF_SWIZZLED && M > 0) {
        dsv4_scale_swizzle_128x4(lin, M, kb, sf);
        free(lin);
    }
    return DSV4_OK;
}
