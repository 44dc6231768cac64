#include "base/files.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/status.h"

dsv4_status dsv4_ensure_dir(const char *path) {
    if (mkdir(path, 0755) == 0) return DSV4_OK;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) return DSV4_OK;
    return dsv4_fail(DSV4_ERR_IO, "%s: cannot create directory", path);
}

dsv4_status dsv4_write_text_file(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return dsv4_fail(DSV4_ERR_IO, "%s: cannot create file", path);
    size_t n = strlen(text);
    int ok = fwrite(text, 1, n, f) == n;
    ok &= fclose(f) == 0;
    return ok ? DSV4_OK : dsv4_fail(DSV4_ERR_IO, "%s: write failed", path);
}

dsv4_status dsv4_read_text_file(const char *path, size_t max_bytes, int quiet, char **out, size_t *len) {
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (errno == ENOENT)
            return quiet ? DSV4_ERR_MISSING : dsv4_fail(DSV4_ERR_MISSING, "%s: file not found", path);
        return dsv4_fail(DSV4_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap + 1);
    while (buf) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (n < cap) break;
        if (cap >= max_bytes) {
            free(buf);
            fclose(f);
            return dsv4_fail(DSV4_ERR_IO, "%s: larger than %zu bytes", path, max_bytes);
        }
        char *grown = realloc(buf, 2 * cap + 1);
        if (!grown) free(buf);
        buf = grown, cap *= 2;
    }
    if (!buf) {
        fclose(f);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (err) {
        free(buf);
        return dsv4_fail(DSV4_ERR_IO, "%s: read failed: %s", path, strerror(err));
    }
    buf[n] = '\0';
    *out = buf, *len = n;
    return DSV4_OK;
}
