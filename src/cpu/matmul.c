/* Dense fp32 matmul (weights already dequantized): the building block of the op references. */
#include "base/status.h"
#include "cpu/ops.h"

dsv4_status dsv4_cpu_matmul(float *y, const float *x, const float *w, int T, int n_in, int n_out) {
    if (!y || !x || !w) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "matmul: NULL argument");
    if (T < 0 || n_in <= 0 || n_out <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "matmul: bad sizes T=%d in=%d out=%d", T, n_in, n_out);
    for (int t = 0; t < T; t++) {
        const float *xt = x + (size_t)t * n_in;
        for (int o = 0; o < n_out; o++) {
            const float *wo = w + (size_t)o * n_in;
            float acc = 0.0f;
            for (int i = 0; i < n_in; i++) acc += xt[i] * wo[i];
            y[(size_t)t * n_out + o] = acc;
        }
    }
    return DSV4_OK;
}
