/* The MoE row layout: which token each row of the grouped expert GEMMs reads, and where
 * each (token, slot) pair's expert output lands. CPU reference of the GPU permutation in
 * src/cuda/moe_route.cu (same file stem), and the definition of the layout:
 *
 *   pairs      p = t·k + j for token t and slot j, expert idx[p]; a pair whose expert is
 *              outside [0, E) (only possible with a corrupt tid2eid) is dropped.
 *   counts[e]  number of pairs routed to expert e.
 *   offsets[e] exclusive prefix sum of the counts padded up to a multiple of `tile`
 *              ([E+1]; offsets[E] = rows in use, a multiple of tile). Expert e owns rows
 *              offsets[e] .. offsets[e+1]−1: first its pairs in ascending p (token order,
 *              then slot order: deterministic), then padding.
 *   row_token[r]  token of row r, −1 for a padding row and for every row from offsets[E] to
 *              max_rows−1 ([max_rows]).
 *   tile_expert[i]  expert owning rows i·tile .. (i+1)·tile−1, −1 for tiles at or past
 *              offsets[E] ([max_rows / tile]); the grouped GEMM's M-tile → expert map.
 *   inv[p]     row of pair p, −1 for a dropped pair ([T·k]); the combine's gather index.
 * max_rows = T·k + E·(tile−1) bounds offsets[E] for every routing (each expert pads at most
 * tile−1 rows), so buffers sized by it never overflow, whatever the router chose. */
#ifndef DSV4_CPU_MOE_ROUTE_H
#define DSV4_CPU_MOE_ROUTE_H

#include <stdint.h>

#include "dsv4.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dsv4_moe_layout {
    int32_t *counts;      /* [E] */
    int32_t *offsets;     /* [E + 1] */
    int32_t *row_token;   /* [max_rows] */
    int32_t *tile_expert; /* [max_rows / tile] */
    int32_t *inv;         /* [T · k] */
} dsv4_moe_layout;

/* T·k + E·(tile−1), or −1 when a size is negative/zero where it may not be or the result
 * does not fit in int32 (row indices are int32 on the device). */
int64_t dsv4_moe_max_rows(int T, int k, int E, int tile);

/* Fills every entry of every array of `out` (host memory) from idx [T, k]. */
dsv4_status dsv4_cpu_moe_permute(const int32_t *idx, int T, int k, int E, int tile, const dsv4_moe_layout *out);

#ifdef __cplusplus
}
#endif
#endif
