/* The reference linear: y = x · Wᵀ for W in any stored format, fp32 accumulation. */
#ifndef DSV4_CPU_LINEAR_H
#define DSV4_CPU_LINEAR_H

#include "format/weight.h"

/* x [T, w->cols] -> y [T, w->rows]. Weights are expanded row by row to fp32 (exact for every
 * format) and each output is one fp32 dot product in k order, so results do not depend on
 * the thread count. In W4A4 mode an NVFP4 weight's activations are first quantized per token
 * to NVFP4 with the weight's static input_scale when the checkpoint has one, else with a
 * dynamic per-token scale amax/(6·448); other formats ignore the mode. */
dsv4_status dsv4_cpu_linear(const dsv4_weight *w, const float *x, int64_t T, float *y, dsv4_numerics mode);

/* Grouped: x [T, groups·w->cols]; output row r reads the slice of group r / (rows/groups).
 * (The grouped output projection wo_a: each group of heads through its own row block.) */
dsv4_status dsv4_cpu_linear_grouped(const dsv4_weight *w, int groups, const float *x, int64_t T, float *y,
                                    dsv4_numerics mode);

/* The activation side of W4A4: x [T, K] replaced by its NVFP4 round trip (per token). */
dsv4_status dsv4_cpu_quantize_act_roundtrip(float *x, int64_t T, int64_t K, float input_scale, const char *what);

#endif
