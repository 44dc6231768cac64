/* The loaded model (internal view of the public dsv4_model handle). */
#ifndef DSV4_MODEL_MODEL_H
#define DSV4_MODEL_MODEL_H

#include <stdio.h>

#include "model/config.h"
#include "model/weights.h"

struct dsv4_model {
    char *dir;
    dsv4_config cfg;
    dsv4_checkpoint *ckpt;
    dsv4_weights w;
};

/* Opens `dir`; lenient mode keeps going past weight-table problems (recorded in w.problems)
 * so that inspect can list all of them. Config and file-level errors always fail. */
dsv4_status dsv4_model_open_ex(const char *dir, int lenient, dsv4_model **out);
/* Called after every decoder layer with the residual streams X [T, width] (width = hc·D):
 * how `dsv4 verify` compares numerics layer by layer. */
typedef void (*dsv4_layer_observer)(void *ctx, int layer, int T, const float *X, int width);
void dsv4_session_observe_layers(dsv4_session *s, dsv4_layer_observer fn, void *ctx);

/* One row of `dsv4 verify`: a layer's residual streams (layer >= 0) or the logits (-1). */
typedef struct dsv4_verify_row {
    int layer;
    double cosine_min;  /* worst over tokens */
    double rel_err_max; /* worst over tokens of max |Δ| / max |reference| */
} dsv4_verify_row;

/* Runs `ids` twice, the reference (CPU, W4A16, fp32 KV: the default options) and the run
 * under test (`run`: numerics, kv_fp8), and fills rows[0..L-1] with each layer's agreement
 * and rows[L] with the logits'. */
dsv4_status dsv4_verify(const dsv4_model *m, const dsv4_session_options *run, const int32_t *ids, int n,
                        dsv4_verify_row *rows, int max_rows, int *n_rows);

/* The summary printed by `dsv4 inspect`. */
void dsv4_model_print(const dsv4_model *m, FILE *f);

#endif
