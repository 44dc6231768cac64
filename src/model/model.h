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
/* The summary printed by `dsv4 inspect`. */
void dsv4_model_print(const dsv4_model *m, FILE *f);

#endif
