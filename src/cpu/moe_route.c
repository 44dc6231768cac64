/* CPU reference of the MoE row layout (header: cpu/moe_route.h). Written as the plainest
 * loops over the definition, so that the GPU permutation can be compared with it entry by
 * entry. */
#include <stdint.h>

#include "base/status.h"
#include "cpu/moe_route.h"

int64_t dsv4_moe_max_rows(int T, int k, int E, int tile) {
    if (T < 0 || k <= 0 || E <= 0 || tile <= 0) return -1;
    int64_t n = (int64_t)T * k + (int64_t)E * (tile - 1);
    return n > INT32_MAX ? -1 : n;
}

dsv4_status dsv4_cpu_moe_permute(const int32_t *idx, int T, int k, int E, int tile, const dsv4_moe_layout *out) {
    int64_t max_rows = dsv4_moe_max_rows(T, k, E, tile);
    if (max_rows < 0)
        return dsv4_fail(DSV4_ERR_SHAPE, "moe_permute: bad sizes T=%d k=%d E=%d tile=%d", T, k, E, tile);
    if (!out || !out->counts || !out->offsets || !out->row_token || !out->tile_expert || !out->inv ||
        (T > 0 && !idx))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "moe_permute: NULL argument");
    const int64_t n_pairs = (int64_t)T * k, max_tiles = max_rows / tile;
    for (int e = 0; e < E; e++) out->counts[e] = 0;
    for (int64_t p = 0; p < n_pairs; p++)
        if (idx[p] >= 0 && idx[p] < E) out->counts[idx[p]]++;
    int32_t o = 0;
    for (int e = 0; e < E; e++) {
        out->offsets[e] = o;
        o += (out->counts[e] + tile - 1) / tile * tile;
    }
    out->offsets[E] = o;
    for (int64_t r = 0; r < max_rows; r++) out->row_token[r] = -1;
    for (int e = 0; e < E; e++) {
        int32_t r = out->offsets[e];
        for (int64_t p = 0; p < n_pairs; p++)
            if (idx[p] == e) {
                out->row_token[r] = (int32_t)(p / k);
                out->inv[p] = r++;
            }
        for (int64_t i = out->offsets[e] / tile; i < out->offsets[e + 1] / tile; i++) out->tile_expert[i] = e;
    }
    for (int64_t i = o / tile; i < max_tiles; i++) out->tile_expert[i] = -1;
    for (int64_t p = 0; p < n_pairs; p++)
        if (idx[p] < 0 || idx[p] >= E) out->inv[p] = -1;
    return DSV4_OK;
}
