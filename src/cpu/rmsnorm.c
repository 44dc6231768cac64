/* RMSNorm, weighted and unweighted (spec: "RMSNorm(x) = x · rsqrt(mean(x²) + eps)").
 * HF order: normalise in fp32, then multiply by the weight. */
#include <math.h>

#include "base/status.h"
#include "cpu/ops.h"

dsv4_status dsv4_cpu_rmsnorm(float *out, const float *x, const float *weight, int rows, int dim,
                             float eps) {
    if (!out || !x) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rmsnorm: NULL argument");
    if (rows < 0 || dim <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "rmsnorm: bad sizes rows=%d dim=%d", rows, dim);
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * dim;
        float *yr = out + (size_t)r * dim;
        float ss = 0.0f;
        for (int i = 0; i < dim; i++) ss += xr[i] * xr[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++) {
            float v = xr[i] * inv;
            yr[i] = weight ? weight[i] * v : v;
        }
    }
    return DSV4_OK;
}
