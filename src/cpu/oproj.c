/* Grouped output projection (spec model.md "Attention", dsv4-reference.md §5.6; HF
 * DeepseekV4GroupedLinear + o_b_proj): heads split into g contiguous groups, each group's
 * (H/g)·Dh vector through its own [lora_rank, H·Dh/g] block of wo_a, concatenated, then wo_b. */
#include <stdlib.h>

#include "base/status.h"
#include "cpu/ops.h"

dsv4_status dsv4_cpu_grouped_oproj(const dsv4_cpu_oproj_dims *d, int T, const float *o,
                                   const float *wo_a, const float *wo_b, float *out) {
    if (!d || (T > 0 && (!o || !wo_a || !wo_b || !out)))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "grouped_oproj: NULL argument");
    int H = d->n_heads, Dh = d->head_dim, G = d->groups, Ro = d->lora_rank, D = d->hidden;
    if (T < 0 || H <= 0 || Dh <= 0 || G <= 0 || H % G || Ro <= 0 || D <= 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "grouped_oproj: bad sizes T=%d H=%d Dh=%d g=%d rank=%d D=%d",
                         T, H, Dh, G, Ro, D);
    size_t gw = (size_t)(H / G) * Dh; /* input width of one group */
    float *u = malloc(sizeof(float) * (size_t)G * Ro);
    if (!u) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "grouped_oproj: scratch of %d floats", G * Ro);
    for (int t = 0; t < T; t++) {
        const float *ot = o + (size_t)t * H * Dh;
        for (int g = 0; g < G; g++)
            dsv4_cpu_matmul(u + (size_t)g * Ro, ot + g * gw, wo_a + (size_t)g * Ro * gw, 1, (int)gw, Ro);
        dsv4_cpu_matmul(out + (size_t)t * D, u, wo_b, 1, G * Ro, D);
    }
    free(u);
    return DSV4_OK;
}
