/* A linear weight in its stored format, bound to bytes owned elsewhere (the mapped
 * checkpoint), plus the conversions every backend's reference path needs. */
#ifndef DSV4_FORMAT_WEIGHT_H
#define DSV4_FORMAT_WEIGHT_H

#include <stddef.h>
#include <stdint.h>

#include "format/safetensors.h"

/* Storage format of a linear weight [rows = out, cols = in]. */
typedef enum dsv4_wformat {
    DSV4_WF_NVFP4 = 0, /* u8 [out, in/2] e2m1 + e4m3 [out, in/16] + fp32 global (+ input_scale) */
    DSV4_WF_MXFP4,     /* [out, in/2] e2m1 + ue8m0 [out, in/32] */
    DSV4_WF_FP8_B128,  /* e4m3 [out, in] + ue8m0 or fp32 [ceil(out/128), ceil(in/128)] */
    DSV4_WF_BF16,
    DSV4_WF_F16,
    DSV4_WF_F32,
    DSV4_WF_COUNT
} dsv4_wformat;

const char *dsv4_wformat_name(dsv4_wformat f);

typedef struct dsv4_weight {
    dsv4_wformat format;
    int64_t rows, cols;          /* logical (unpacked) [out, in] */
    const void *data;            /* first byte of row 0 (rows are contiguous) */
    const void *scale;           /* block scales (NULL for dense formats) */
    dsv4_dtype scale_dtype;      /* F8_E4M3 (NVFP4), F8_E8M0/U8 (MXFP4, FP8 ue8m0) or F32 */
    float global_scale;          /* NVFP4 weight_scale_2; 1 otherwise */
    float input_scale;           /* NVFP4 input_scale; 0 when the checkpoint has none */
    const dsv4_tensor_view *src; /* the payload tensor (its name and file, for messages) */
    size_t bytes;                /* payload + scale bytes this weight occupies */
} dsv4_weight;

/* Expands any stored format to fp32 [rows, cols]. */
dsv4_status dsv4_weight_dequantize(const dsv4_weight *w, float *out);
/* Rows [r0, r0+n) only, into out[n, cols] (FP8 block-128 picks each row's scale block). */
dsv4_status dsv4_weight_dequantize_rows(const dsv4_weight *w, int64_t r0, int64_t n, float *out);
/* A float tensor (F32/BF16/F16) to fp32, numel values. */
void dsv4_tensor_to_f32(const dsv4_tensor_view *t, float *out);
/* Element i of an I32 or I64 tensor (tables such as tid2eid), widened. */
int64_t dsv4_tensor_int(const dsv4_tensor_view *t, int64_t i);
/* n dense values of dtype F32/BF16/F16 to fp32. */
void dsv4_dense_to_f32(dsv4_dtype dt, const void *src, size_t n, float *out);

#endif
