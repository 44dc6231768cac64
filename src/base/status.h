/* Internal error reporting: set the thread's last-error message and return the code. */
#ifndef DSV4_BASE_STATUS_H
#define DSV4_BASE_STATUS_H

#include "dsv4.h"

#if defined(__GNUC__)
#define DSV4_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define DSV4_PRINTF(a, b)
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Records "<message>" as the last error and returns `st`. Usage:
 *   return dsv4_fail(DSV4_ERR_SHAPE, "%s: tensor '%s' has shape ...", file, name); */
dsv4_status dsv4_fail(dsv4_status st, const char *fmt, ...) DSV4_PRINTF(2, 3);
/* Prefixes the current last-error message with "<context>: " and returns `st`
 * (for adding the layer/file when an inner call already explained the problem). */
dsv4_status dsv4_fail_context(dsv4_status st, const char *fmt, ...) DSV4_PRINTF(2, 3);
void dsv4_clear_error(void);

#ifdef __cplusplus
}
#endif

/* Propagate a failure: DSV4_TRY(f(x)); */
#define DSV4_TRY(expr)                            \
    do {                                          \
        dsv4_status dsv4_try_st_ = (expr);        \
        if (dsv4_try_st_ != DSV4_OK) return dsv4_try_st_; \
    } while (0)

#endif
