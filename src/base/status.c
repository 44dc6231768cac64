#include "base/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define DSV4_ERRMSG_MAX 1024

static _Thread_local char last_error[DSV4_ERRMSG_MAX];

static const char *const status_names[DSV4_STATUS_COUNT] = {
    [DSV4_OK] = "DSV4_OK",
    [DSV4_ERR_INVALID_ARGUMENT] = "DSV4_ERR_INVALID_ARGUMENT",
    [DSV4_ERR_IO] = "DSV4_ERR_IO",
    [DSV4_ERR_OUT_OF_MEMORY] = "DSV4_ERR_OUT_OF_MEMORY",
    [DSV4_ERR_TRUNCATED] = "DSV4_ERR_TRUNCATED",
    [DSV4_ERR_HEADER] = "DSV4_ERR_HEADER",
    [DSV4_ERR_JSON] = "DSV4_ERR_JSON",
    [DSV4_ERR_DTYPE] = "DSV4_ERR_DTYPE",
    [DSV4_ERR_SHAPE] = "DSV4_ERR_SHAPE",
    [DSV4_ERR_RANGE] = "DSV4_ERR_RANGE",
    [DSV4_ERR_OVERLAP] = "DSV4_ERR_OVERLAP",
    [DSV4_ERR_MISSING] = "DSV4_ERR_MISSING",
    [DSV4_ERR_CONFIG] = "DSV4_ERR_CONFIG",
    [DSV4_ERR_NONFINITE] = "DSV4_ERR_NONFINITE",
    [DSV4_ERR_NOT_REPRESENTABLE] = "DSV4_ERR_NOT_REPRESENTABLE",
    [DSV4_ERR_UNSUPPORTED] = "DSV4_ERR_UNSUPPORTED",
    [DSV4_ERR_CUDA] = "DSV4_ERR_CUDA",
    [DSV4_ERR_NO_DEVICE] = "DSV4_ERR_NO_DEVICE",
    [DSV4_ERR_INTERNAL] = "DSV4_ERR_INTERNAL",
};

const char *dsv4_status_name(dsv4_status st) {
    if ((int)st < 0 || st >= DSV4_STATUS_COUNT) return "DSV4_ERR_UNKNOWN";
    return status_names[st];
}

const char *dsv4_last_error(void) { return last_error; }

void dsv4_clear_error(void) { last_error[0] = '\0'; }

dsv4_status dsv4_fail(dsv4_status st, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error, sizeof last_error, fmt, ap);
    va_end(ap);
    return st;
}

dsv4_status dsv4_fail_context(dsv4_status st, const char *fmt, ...) {
    char prefix[256], old[DSV4_ERRMSG_MAX - 256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    snprintf(old, sizeof old, "%s", last_error);
    snprintf(last_error, sizeof last_error, "%s: %s", prefix, old);
    return st;
}

const char *dsv4_version(void) {
#define DSV4_STR_(x) #x
#define DSV4_STR(x) DSV4_STR_(x)
    return DSV4_STR(DSV4_VERSION_MAJOR) "." DSV4_STR(DSV4_VERSION_MINOR) "." DSV4_STR(DSV4_VERSION_PATCH);
}
