// Internal launchers of the grouped (MoE) linears, shared by linear_prefill.cu and moe_layer.cu.
// The decode-regime grouped launch is linear_decode_launch with LinearParams.grouped = 1
// (linear_internal.cuh); the prefill-regime one is here, behind its own launcher so that a
// faster prefill kernel can replace it without touching the MoE code.
#pragma once

#include "cuda/linear_internal.cuh"

// The M tile of the grouped mma.sync prefill kernel, and the largest tile of any grouped
// prefill: layouts sized for it fit every smaller tile.
int linear_prefill_group_tile(void);

// Grid (ceil(N / BN), n_tiles): M tile i computes layout rows i·tile .. +tile−1 for expert
// tile_expert[i] (−1: exits). p.M = rows of y (the layout's max_rows); p.grp gives row_begin /
// row_count (offsets / counts), row_token (x gather or NULL), w_stride / s_stride and
// group_scale (NULL = 1); p.grouped, grp.active, grp.n_active and grp.max_active are unused.
// Output factor: p.out_scale · group_scale[e] · (token_scales ? token_scales[x row] : 1).
// NVFP4 and MXFP4 weights only. n_tiles = 0 enqueues nothing.
dsv4_status linear_prefill_grouped_launch(int fmt, int act, const LinearParams &p, const int32_t *tile_expert,
                                          int64_t n_tiles, cudaStream_t s);

// The grouped wgmma kernel (linear_prefill_wgmma.cu): token tile `tile` = 32, 64 or 128 (the
// layout's tile), otherwise as linear_prefill_grouped_launch; NVFP4 experts, where
// linear_prefill_wgmma_takes (NVFP4 x: 16-byte aligned payload).
dsv4_status linear_prefill_wgmma_grouped_launch(int fmt, int act, int tile, const LinearParams &p,
                                                const int32_t *tile_expert, int64_t n_tiles, cudaStream_t s);
