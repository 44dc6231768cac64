/* safetensors writer: single files and sharded checkpoints with an index. Everything a
 * reader would reject (bad sizes, duplicate names, non-UTF-8 text) is refused at add time
 * so that a written file always loads, in dsv4 and in Python's safetensors. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"
#include "format/safetensors.h"
#include "format/safetensors_internal.h"

typedef struct wentry {
    char *name;
    dsv4_dtype dtype;
    int ndim;
    int64_t shape[DSV4_MAX_DIMS];
    const void *data;
    size_t nbytes;
} wentry;

struct dsv4_st_writer {
    wentry *e;
    int n, cap;
    dsv4_st_names names; /* rebuilt on growth */
    char **meta;         /* key, value pairs */
    int nmeta, meta_cap;
    size_t bytes;
};

static const char *writer_key(const void *ctx, int32_t i) {
    return ((const dsv4_st_writer *)ctx)->e[i].name;
}

dsv4_st_writer *dsv4_st_writer_new(void) { return calloc(1, sizeof(dsv4_st_writer)); }

void dsv4_st_writer_free(dsv4_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    free(w->e);
    dsv4_st_names_free(&w->names);
    for (int i = 0; i < 2 * w->nmeta; i++) free(w->meta[i]);
    free(w->meta);
    free(w);
}

size_t dsv4_st_writer_bytes(const dsv4_st_writer *w) { return w ? w->bytes : 0; }

static int valid_text(const char *s) { return s && dsv4_st_utf8_valid(s, strlen(s)); }

dsv4_status dsv4_st_writer_add(dsv4_st_writer *w, const char *name, dsv4_dtype dtype, int ndim,
                               const int64_t *shape, const void *data, size_t nbytes) {
    const char *nm = name ? name : "(null)";
    if (!w) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "writer: tensor '%s': NULL writer", nm);
    if (!valid_text(name) || strcmp(name, "__metadata__") == 0)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "writer: tensor name '%s' is NULL, reserved or not UTF-8",
                         nm);
    if ((int)dtype < 0 || dtype >= DSV4_DT_COUNT)
        return dsv4_fail(DSV4_ERR_DTYPE, "writer: tensor '%s': unknown dtype %d", nm, (int)dtype);
    if (ndim < 0 || ndim > DSV4_MAX_DIMS || (ndim > 0 && !shape))
        return dsv4_fail(DSV4_ERR_SHAPE, "writer: tensor '%s': %d dimensions (0..%d allowed)", nm, ndim,
                         DSV4_MAX_DIMS);
    uint64_t numel = 1;
    int overflow = 0;
    for (int i = 0; i < ndim; i++) {
        /* Readers parse JSON integers as doubles: keep dimensions exact there. */
        if (shape[i] < 0 || shape[i] > ((int64_t)1 << 53))
            return dsv4_fail(DSV4_ERR_SHAPE, "writer: tensor '%s': shape[%d] = %" PRId64 " is invalid", nm,
                             i, shape[i]);
        uint64_t v = (uint64_t)shape[i];
        if (v && numel > UINT64_MAX / v) overflow = 1;
        numel *= v;
    }
    unsigned bits = (unsigned)dsv4_dtype_bits(dtype);
    if (overflow || numel > (uint64_t)INT64_MAX || numel > UINT64_MAX / bits)
        return dsv4_fail(DSV4_ERR_SHAPE, "writer: tensor '%s': element count overflows", nm);
    if (numel * bits % 8 != 0 || numel * bits / 8 != nbytes)
        return dsv4_fail(DSV4_ERR_SHAPE,
                         "writer: tensor '%s': %" PRIu64 " elements of %s are %" PRIu64
                         "%s bits but %zu bytes were given",
                         nm, numel, dsv4_dtype_name(dtype), numel * bits,
                         numel * bits % 8 ? " (not whole bytes)" : "", nbytes);
    if (!data && nbytes)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "writer: tensor '%s': NULL data", nm);
    if (w->bytes > SIZE_MAX - nbytes)
        return dsv4_fail(DSV4_ERR_SHAPE, "writer: tensor '%s': total size overflows", nm);

    if (w->n == w->cap) {
        int ncap = w->cap ? w->cap * 2 : 64;
        wentry *ne = w->cap < (1 << 28) ? realloc(w->e, (size_t)ncap * sizeof *ne) : NULL;
        if (!ne) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "writer: tensor '%s': out of memory", nm);
        w->e = ne;
        dsv4_st_names grown;
        if (!dsv4_st_names_init(&grown, (size_t)ncap, writer_key, w))
            return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "writer: tensor '%s': out of memory", nm);
        dsv4_st_names_free(&w->names);
        w->names = grown;
        w->cap = ncap;
        for (int i = 0; i < w->n; i++) dsv4_st_names_insert(&w->names, i);
    }
    wentry *e = &w->e[w->n];
    memset(e, 0, sizeof *e);
    if (!(e->name = strdup(name)))
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "writer: tensor '%s': out of memory", nm);
    if (dsv4_st_names_insert(&w->names, w->n) >= 0) {
        free(e->name);
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "writer: tensor '%s' was already added", nm);
    }
    e->dtype = dtype;
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    e->data = data;
    e->nbytes = nbytes;
    w->n++;
    w->bytes += nbytes;
    return DSV4_OK;
}

dsv4_status dsv4_st_writer_set_metadata(dsv4_st_writer *w, const char *key, const char *value) {
    if (!w || !valid_text(key) || !valid_text(value))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "writer: metadata '%s': NULL or not UTF-8",
                         key ? key : "(null)");
    for (int i = 0; i < w->nmeta; i++)
        if (strcmp(w->meta[2 * i], key) == 0) { /* replace */
            char *v = strdup(value);
            if (!v) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "writer: metadata '%s': out of memory", key);
            free(w->meta[2 * i + 1]);
            w->meta[2 * i + 1] = v;
            return DSV4_OK;
        }
    if (w->nmeta == w->meta_cap) {
        int ncap = w->meta_cap ? w->meta_cap * 2 : 8;
        char **nm = realloc(w->meta, 2 * (size_t)ncap * sizeof *nm);
        if (!nm) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "writer: metadata '%s': out of memory", key);
        w->meta = nm;
        w->meta_cap = ncap;
    }
    char *k = strdup(key), *v = strdup(value);
    if (!k || !v) {
        free(k);
        free(v);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "writer: metadata '%s': out of memory", key);
    }
    w->meta[2 * w->nmeta] = k;
    w->meta[2 * w->nmeta + 1] = v;
    w->nmeta++;
    return DSV4_OK;
}

/* ---- a growable string for the JSON header ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->cap - b->len < n + 1) {
        size_t ncap = b->cap ? b->cap : 256;
        while (ncap - b->len < n + 1) {
            if (ncap > SIZE_MAX / 2) { b->oom = 1; return; }
            ncap *= 2;
        }
        char *np = realloc(b->p, ncap);
        if (!np) { b->oom = 1; return; }
        b->p = np;
        b->cap = ncap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(sbuf *b, uint64_t v) {
    char t[24];
    int n = snprintf(t, sizeof t, "%" PRIu64, v);
    sb_put(b, t, (size_t)n);
}

/* A JSON string literal; UTF-8 passes through, only quotes, backslashes and controls are escaped. */
static void sb_json_str(sbuf *b, const char *s) {
    sb_put(b, "\"", 1);
    for (const char *r = s; *r; r++) {
        unsigned char c = (unsigned char)*r;
        if (c == '"' || c == '\\') {
            char t[2] = {'\\', (char)c};
            sb_put(b, t, 2);
        } else if (c < 0x20) {
            char t[8];
            snprintf(t, sizeof t, "\\u%04x", c);
            sb_put(b, t, 6);
        } else {
            sb_put(b, r, 1);
        }
    }
    sb_put(b, "\"", 1);
}

/* ---- writing files ---- */

/* Writes entries [lo, hi) of `w` to `path` (via path.tmp + rename). */
static dsv4_status write_range(const dsv4_st_writer *w, int lo, int hi, const char *path) {
    int n = hi - lo;
    int *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    uint64_t *begin = malloc((size_t)(n ? n : 1) * sizeof *begin);
    sbuf hdr = {0};
    char *tmp = malloc(strlen(path) + 5);
    FILE *fp = NULL;
    dsv4_status st = DSV4_OK;
    if (!order || !begin || !tmp) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
        goto done;
    }
    /* Data layout: widest element first, stable. Bucketing by the few distinct widths keeps
     * this linear for checkpoints of ~100k tensors. */
    static const int widths[] = {64, 32, 16, 8, 6, 4};
    int k = 0;
    for (size_t wi = 0; wi < sizeof widths / sizeof widths[0]; wi++)
        for (int i = lo; i < hi; i++)
            if (dsv4_dtype_bits(w->e[i].dtype) == widths[wi]) order[k++] = i;
    if (k != n) {
        st = dsv4_fail(DSV4_ERR_INTERNAL, "%s: a dtype has a width the writer does not lay out", path);
        goto done;
    }
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        begin[order[i] - lo] = off;
        off += w->e[order[i]].nbytes;
    }

    sb_put(&hdr, "{", 1);
    int first = 1;
    if (w->nmeta) {
        sb_str(&hdr, "\"__metadata__\":{");
        for (int i = 0; i < w->nmeta; i++) {
            if (i) sb_put(&hdr, ",", 1);
            sb_json_str(&hdr, w->meta[2 * i]);
            sb_put(&hdr, ":", 1);
            sb_json_str(&hdr, w->meta[2 * i + 1]);
        }
        sb_put(&hdr, "}", 1);
        first = 0;
    }
    for (int i = lo; i < hi; i++) {
        const wentry *e = &w->e[i];
        if (!first) sb_put(&hdr, ",", 1);
        first = 0;
        sb_json_str(&hdr, e->name);
        sb_str(&hdr, ":{\"dtype\":\"");
        sb_str(&hdr, dsv4_dtype_name(e->dtype));
        sb_str(&hdr, "\",\"shape\":[");
        for (int d = 0; d < e->ndim; d++) {
            if (d) sb_put(&hdr, ",", 1);
            sb_u64(&hdr, (uint64_t)e->shape[d]);
        }
        sb_str(&hdr, "],\"data_offsets\":[");
        sb_u64(&hdr, begin[i - lo]);
        sb_put(&hdr, ",", 1);
        sb_u64(&hdr, begin[i - lo] + e->nbytes);
        sb_str(&hdr, "]}");
    }
    sb_put(&hdr, "}", 1);
    while (!hdr.oom && hdr.len % 8) sb_put(&hdr, " ", 1); /* data area starts 8-byte aligned */
    if (hdr.oom) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory for the header", path);
        goto done;
    }
    if (hdr.len > DSV4_ST_MAX_HEADER) {
        st = dsv4_fail(DSV4_ERR_HEADER, "%s: header of %zu bytes exceeds the %u-byte limit readers accept",
                       path, hdr.len, DSV4_ST_MAX_HEADER);
        goto done;
    }

    sprintf(tmp, "%s.tmp", path);
    fp = fopen(tmp, "wb");
    if (!fp) {
        st = dsv4_fail(DSV4_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
        goto done;
    }
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)hdr.len >> (8 * i));
    int ok = fwrite(len8, 1, 8, fp) == 8 && fwrite(hdr.p, 1, hdr.len, fp) == hdr.len;
    for (int i = 0; ok && i < n; i++) {
        const wentry *e = &w->e[order[i]];
        if (e->nbytes) ok = fwrite(e->data, 1, e->nbytes, fp) == e->nbytes;
    }
    int err = ok ? 0 : errno;
    if (fflush(fp) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (fclose(fp) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    fp = NULL;
    if (!ok) {
        st = dsv4_fail(DSV4_ERR_IO, "%s: write failed: %s", tmp, strerror(err));
        unlink(tmp);
        goto done;
    }
    if (rename(tmp, path) != 0) {
        st = dsv4_fail(DSV4_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
        unlink(tmp);
    }
done:
    free(order);
    free(begin);
    free(hdr.p);
    free(tmp);
    return st;
}

dsv4_status dsv4_st_writer_write(const dsv4_st_writer *w, const char *path) {
    if (!w || !path) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "writer: NULL writer or path");
    return write_range(w, 0, w->n, path);
}

static dsv4_status ensure_dir(const char *dir) {
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) {
        struct stat sb;
        if (stat(dir, &sb) == 0 && S_ISDIR(sb.st_mode)) return DSV4_OK;
        return dsv4_fail(DSV4_ERR_IO, "%s: exists and is not a directory", dir);
    }
    return dsv4_fail(DSV4_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
}

dsv4_status dsv4_st_writer_write_sharded(const dsv4_st_writer *w, const char *dir,
                                         size_t max_shard_bytes) {
    if (!w || !dir) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "writer: NULL writer or directory");
    if (max_shard_bytes == 0)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: max_shard_bytes must be > 0", dir);
    DSV4_TRY(ensure_dir(dir));
    /* Shard boundaries: greedy in insertion order; start[s] = first tensor of shard s. */
    int *start = malloc((size_t)(w->n + 1) * sizeof *start);
    if (!start) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    int nshards = 0;
    size_t cur = 0; /* bytes in the current shard, saturated at max_shard_bytes */
    for (int i = 0; i < w->n; i++) {
        size_t b = w->e[i].nbytes;
        if (nshards == 0 || (i > start[nshards - 1] && b > max_shard_bytes - cur)) {
            start[nshards++] = i;
            cur = 0;
        }
        /* A tensor larger than a shard gets one to itself: it saturates the count. */
        cur = b > max_shard_bytes - cur ? max_shard_bytes : cur + b;
    }
    if (nshards == 0) start[nshards++] = 0; /* no tensors: still write one (empty) file */
    start[nshards] = w->n;

    dsv4_status st = DSV4_OK;
    size_t plen = strlen(dir) + 64;
    char *path = malloc(plen);
    sbuf idx = {0};
    if (!path) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
        goto done;
    }
    if (nshards == 1) {
        snprintf(path, plen, "%s/model.safetensors.index.json", dir);
        unlink(path); /* a stale index from an earlier sharded write would shadow the file */
        snprintf(path, plen, "%s/model.safetensors", dir);
        st = write_range(w, 0, w->n, path);
        goto done;
    }
    sb_str(&idx, "{\n  \"metadata\": {\"total_size\": ");
    sb_u64(&idx, (uint64_t)w->bytes);
    sb_str(&idx, "},\n  \"weight_map\": {");
    for (int s = 0; s < nshards; s++) {
        char fname[64];
        snprintf(fname, sizeof fname, "model-%05d-of-%05d.safetensors", s + 1, nshards);
        snprintf(path, plen, "%s/%s", dir, fname);
        if ((st = write_range(w, start[s], start[s + 1], path)) != DSV4_OK) goto done;
        for (int i = start[s]; i < start[s + 1]; i++) {
            sb_str(&idx, i ? ",\n    " : "\n    ");
            sb_json_str(&idx, w->e[i].name);
            sb_str(&idx, ": ");
            sb_json_str(&idx, fname);
        }
    }
    sb_str(&idx, "\n  }\n}\n");
    if (idx.oom) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory for the index", dir);
        goto done;
    }
    snprintf(path, plen, "%s/model.safetensors.index.json", dir);
    FILE *fp = fopen(path, "wb");
    if (!fp) {
        st = dsv4_fail(DSV4_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        goto done;
    }
    int ok = fwrite(idx.p, 1, idx.len, fp) == idx.len;
    int err = errno;
    if (fclose(fp) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (!ok) st = dsv4_fail(DSV4_ERR_IO, "%s: write failed: %s", path, strerror(err));
done:
    free(start);
    free(path);
    free(idx.p);
    return st;
}
