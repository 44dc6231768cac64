/* Small file helpers shared by the writers (make-tiny, convert, config). */
#ifndef DSV4_BASE_FILES_H
#define DSV4_BASE_FILES_H

#include <stddef.h>

#include "dsv4.h"

/* Creates directory `path` (one level) unless it already is one. DSV4_ERR_IO naming it. */
dsv4_status dsv4_ensure_dir(const char *path);
/* Writes `text` to `path`, replacing it. DSV4_ERR_IO naming the path on any failure. */
dsv4_status dsv4_write_text_file(const char *path, const char *text);

/* Whole file into a malloc'ed NUL-terminated buffer (*len bytes before the NUL). A missing
 * file is DSV4_ERR_MISSING (message left unset if `quiet`), over max_bytes DSV4_ERR_IO. */
dsv4_status dsv4_read_text_file(const char *path, size_t max_bytes, int quiet, char **out, size_t *len);

#endif
