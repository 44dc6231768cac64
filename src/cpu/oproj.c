/* Grouped output projection (spec model.md "Attention", dsv4-reference.md §5.6; HF
 * DeepseekV4GroupedLinear + o_b_proj): heads split into g contiguous groups, each group's
 * (H/g)·Dh vector through its own [lora_rank, H·Dh/g] block of wo_a, concatenated, then wo_b. */
#include <stdlib.h>

#include "base/status.h"
#include "cpu/ops.h"

dsv4_status dsv4_cpu_grouped_oproj(const dsv4_cpu_oproj_dims *d, int T, const float *o, const dsv4_weight *wo_a,
                                   const dsv4_weight *wo_b, dsv4_numerics mode, float *out) {
    if (!d || !wo_a || !wo_b || (T > 0 && (!o || !out)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "grouped_oproj: NULL argument");
    int H = d->n_heads, Dh = d->head_dim, G = d->groups, Ro = d->lora_rank, D = d->hidden;
    if (T < 0 || H <= 0 || Dh <= 0 || G <= 0 || H % G || Ro <= 0 || D <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "grouped_oproj: bad sizes T=%d H=%d Dh=%d g=%d rank=%d D=%d",
                         T, H, Dh, G, Ro, D);
    if (wo_a->rows != (int64_t)G * Ro || wo_a->cols != (int64_t)H / G * Dh || wo_b->rows != D ||
        wo_b->cols != (int64_t)G * Ro)
        return dsv4_fail(DSV4_ERR_SHAPE, "grouped_oproj: wo_a [%lld, %lld] / wo_b [%lld, %lld] do not match H=%d Dh=%d "
                         "g=%d rank=%d D=%d", (long long)wo_a->rows, (long long)wo_a->cols, (long long)wo_b->rows,
                         (long long)wo_b->cols, H, Dh, G, Ro, D);
    if (T == 0) return DSV4_OK;
    float *u = malloc(sizeof(float) * (size_t)T * G * Ro);
    if (!u) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "grouped_oproj: out of memory");
    dsv4_status st = dsv4_cpu_linear_grouped(wo_a, G, o, T, u, mode);
    if (st == DSV4_OK) st = dsv4_cpu_linear(wo_b, u, T, out, mode);
    free(u);
    return st;
}
