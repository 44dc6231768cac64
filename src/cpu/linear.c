/* Dense fp32 linear (weights already dequantized) and a bf16 rounding helper. */
#include <string.h>

#include "base/status.h"
#include "cpu/ops.h"

dsv4_status dsv4_cpu_linear(float *y, const float *x, const float *w, int T, int n_in, int n_out) {
    if (!y || !x || !w) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "linear: NULL argument");
    if (T < 0 || n_in <= 0 || n_out <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "linear: bad sizes T=%d in=%d out=%d", T, n_in, n_out);
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

float dsv4_cpu_bf16_round(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) {
        u |= 0x00400000u; /* keep NaN a quiet NaN after truncation */
        u &= 0xffff0000u;
    } else {
        /* round to nearest, ties to even, on the 16 dropped bits */
        u += 0x7fffu + ((u >> 16) & 1u);
        u &= 0xffff0000u;
    }
    memcpy(&x, &u, 4);
    return x;
}
