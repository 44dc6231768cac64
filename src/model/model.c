/* Placeholder until the weight table lands (this session). */
#include "base/status.h"

struct dsv4_model { int unused; };

dsv4_status dsv4_model_open(const char *dir, dsv4_model **out) {
    *out = NULL;
    return dsv4_fail(DSV4_ERR_UNSUPPORTED, "%s: model loading is not built yet", dir);
}
void dsv4_model_close(dsv4_model *m) { (void)m; }
dsv4_status dsv4_model_inspect(const dsv4_model *m, void *f) {
    return dsv4_fail(DSV4_ERR_UNSUPPORTED, "inspect is not built yet");
}
dsv4_status dsv4_make_tiny(const char *dir, dsv4_tiny_scheme scheme, uint64_t seed) {
    return dsv4_fail(DSV4_ERR_UNSUPPORTED, "%s: make-tiny is not built yet", dir);
}
