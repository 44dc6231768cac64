/* Format conversions of a bound linear weight (see weight.h). */
#include "format/weight.h"

#include <math.h>
#include <string.h>

#include "base/status.h"
#include "format/fp.h"
#include "format/quant.h"

static const char *const wformat_names[DSV4_WF_COUNT] = {"NVFP4", "MXFP4", "FP8-B128", "BF16", "F16", "F32"};

const char *dsv4_wformat_name(dsv4_wformat f) {
    return (f >= 0 && f < DSV4_WF_COUNT) ? wformat_names[f] : "?";
}


static float f16_to_f32(uint16_t h) {
    int sign = h >> 15, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v = exp == 0 ? ldexpf((float)man, -24)
            : exp == 31 ? (man ? NAN : INFINITY)
                        : ldexpf((float)(man | 0x400), exp - 25);
    return sign ? -v : v;
}

void dsv4_dense_to_f32(dsv4_dtype dt, const void *src, size_t n, float *out) {
    const uint8_t *p = src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h;
        switch (dt) {
        case DSV4_DT_BF16: memcpy(&h, p + 2 * i, 2); out[i] = dsv4_bf16_decode(h); break;
        case DSV4_DT_F16: memcpy(&h, p + 2 * i, 2); out[i] = f16_to_f32(h); break;
        default: memcpy(&out[i], p + 4 * i, 4); break;
        }
    }
}

int64_t dsv4_tensor_int(const dsv4_tensor_view *t, int64_t i) {
    if (t->dtype == DSV4_DT_I32) {
        int32_t x;
        memcpy(&x, (const char *)t->data + 4 * i, 4);
        return x;
    }
    int64_t v;
    memcpy(&v, (const char *)t->data + 8 * i, 8);
    return v;
}

void dsv4_tensor_to_f32(const dsv4_tensor_view *t, float *out) {
    dsv4_dense_to_f32(t->dtype, t->data, (size_t)dsv4_tensor_numel(t), out);
}

dsv4_status dsv4_weight_dequantize_rows(const dsv4_weight *w, int64_t r0, int64_t n, float *out) {
    const char *what = w->src ? w->src->name : "weight";
    if (r0 < 0 || n < 0 || r0 + n > w->rows)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: rows [%lld, %lld) outside [0, %lld)", what, (long long)r0,
                         (long long)(r0 + n), (long long)w->rows);
    const int64_t K = w->cols;
    const uint8_t *q = w->data, *s = w->scale;
    switch (w->format) {
    case DSV4_WF_NVFP4:
        dsv4_nvfp4_dequantize(q + r0 * K / 2, s + r0 * K / 16, w->global_scale, n, K, out);
        return DSV4_OK;
    case DSV4_WF_MXFP4:
        return dsv4_mxfp4_dequantize(q + r0 * K / 2, s + r0 * K / 32, n, K, out, what);
    case DSV4_WF_FP8_B128: {
        /* one call per 128-row scale block, so each slice starts on its own scale row */
        const int64_t kb = (K + 127) / 128;
        const size_t ssz = w->scale_dtype == DSV4_DT_F32 ? 4 : 1;
        const dsv4_scale_kind kind = w->scale_dtype == DSV4_DT_F32 ? DSV4_SCALE_F32 : DSV4_SCALE_UE8M0;
        for (int64_t r = r0; r < r0 + n;) {
            int64_t end = (r / 128 + 1) * 128;
            if (end > r0 + n) end = r0 + n;
            DSV4_TRY(dsv4_fp8_block128_dequantize(q + r * K, end - r, K, s + (size_t)(r / 128 * kb) * ssz, kind,
                                                  out + (r - r0) * K, what));
            r = end;
        }
        return DSV4_OK;
    }
    case DSV4_WF_BF16: dsv4_dense_to_f32(DSV4_DT_BF16, q + r0 * K * 2, (size_t)(n * K), out); return DSV4_OK;
    case DSV4_WF_F16: dsv4_dense_to_f32(DSV4_DT_F16, q + r0 * K * 2, (size_t)(n * K), out); return DSV4_OK;
    case DSV4_WF_F32: dsv4_dense_to_f32(DSV4_DT_F32, q + r0 * K * 4, (size_t)(n * K), out); return DSV4_OK;
    default: return dsv4_fail(DSV4_ERR_INTERNAL, "%s: unknown weight format %d", what, (int)w->format);
    }
}

dsv4_status dsv4_weight_dequantize(const dsv4_weight *w, float *out) {
    return dsv4_weight_dequantize_rows(w, 0, w->rows, out);
}
