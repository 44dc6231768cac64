/* safetensors reader: parse and validate a whole header before handing out any tensor.
 * The input is untrusted (downloaded checkpoints, the fuzzer), so every size is checked
 * before use and all arithmetic on header values is overflow-checked. */
#include "format/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/status.h"
#include "format/safetensors_internal.h"

/* ---- dtypes ---- */

static const struct {
    const char *name;
    int bits;
} dtype_info[DSV4_DT_COUNT] = {
    [DSV4_DT_BOOL] = {"BOOL", 8},         [DSV4_DT_U8] = {"U8", 8},
    [DSV4_DT_I8] = {"I8", 8},             [DSV4_DT_U16] = {"U16", 16},
    [DSV4_DT_I16] = {"I16", 16},          [DSV4_DT_F16] = {"F16", 16},
    [DSV4_DT_BF16] = {"BF16", 16},        [DSV4_DT_U32] = {"U32", 32},
    [DSV4_DT_I32] = {"I32", 32},          [DSV4_DT_F32] = {"F32", 32},
    [DSV4_DT_U64] = {"U64", 64},          [DSV4_DT_I64] = {"I64", 64},
    [DSV4_DT_F64] = {"F64", 64},          [DSV4_DT_C64] = {"C64", 64},
    [DSV4_DT_F8_E4M3] = {"F8_E4M3", 8},   [DSV4_DT_F8_E5M2] = {"F8_E5M2", 8},
    [DSV4_DT_F8_E8M0] = {"F8_E8M0", 8},   [DSV4_DT_F4] = {"F4", 4},
    [DSV4_DT_F6_E2M3] = {"F6_E2M3", 6},   [DSV4_DT_F6_E3M2] = {"F6_E3M2", 6},
    [DSV4_DT_F8_E4M3FNUZ] = {"F8_E4M3FNUZ", 8}, [DSV4_DT_F8_E5M2FNUZ] = {"F8_E5M2FNUZ", 8},
};

const char *dsv4_dtype_name(dsv4_dtype dt) {
    if ((int)dt < 0 || dt >= DSV4_DT_COUNT) return "?";
    return dtype_info[dt].name;
}

int dsv4_dtype_from_name(const char *name, dsv4_dtype *out) {
    if (!name) return 0;
    for (int i = 0; i < DSV4_DT_COUNT; i++)
        if (strcmp(name, dtype_info[i].name) == 0) {
            if (out) *out = (dsv4_dtype)i;
            return 1;
        }
    return 0;
}

int dsv4_dtype_bits(dsv4_dtype dt) {
    if ((int)dt < 0 || dt >= DSV4_DT_COUNT) return 0;
    return dtype_info[dt].bits;
}

int64_t dsv4_tensor_numel(const dsv4_tensor_view *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i]; /* validated on open: cannot overflow */
    return n;
}

/* ---- shared helpers ---- */

int dsv4_st_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t cp, min;
        if ((c & 0xe0) == 0xc0) { len = 2; cp = c & 0x1f; min = 0x80; }
        else if ((c & 0xf0) == 0xe0) { len = 3; cp = c & 0x0f; min = 0x800; }
        else if ((c & 0xf8) == 0xf0) { len = 4; cp = c & 0x07; min = 0x10000; }
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
        i += len;
    }
    return 1;
}

static uint64_t hash_name(const char *s) { /* FNV-1a */
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

int dsv4_st_names_init(dsv4_st_names *t, size_t max_entries, dsv4_st_key_fn key, const void *ctx) {
    size_t cap = 8;
    while (cap < max_entries * 2) {
        if (cap > SIZE_MAX / 4 / sizeof(int32_t)) return 0;
        cap *= 2;
    }
    t->slots = malloc(cap * sizeof(int32_t));
    if (!t->slots) return 0;
    memset(t->slots, 0xff, cap * sizeof(int32_t)); /* all -1 */
    t->mask = cap - 1;
    t->key = key;
    t->ctx = ctx;
    return 1;
}

void dsv4_st_names_free(dsv4_st_names *t) {
    free(t->slots);
    t->slots = NULL;
}

int32_t dsv4_st_names_find(const dsv4_st_names *t, const char *name) {
    if (!t->slots || !name) return -1;
    for (size_t i = hash_name(name) & t->mask;; i = (i + 1) & t->mask) {
        int32_t v = t->slots[i];
        if (v < 0) return -1;
        if (strcmp(t->key(t->ctx, v), name) == 0) return v;
    }
}

int32_t dsv4_st_names_insert(dsv4_st_names *t, int32_t index) {
    const char *name = t->key(t->ctx, index);
    for (size_t i = hash_name(name) & t->mask;; i = (i + 1) & t->mask) {
        int32_t v = t->slots[i];
        if (v < 0) {
            t->slots[i] = index;
            return -1;
        }
        if (strcmp(t->key(t->ctx, v), name) == 0) return v;
    }
}

/* ---- one file ---- */

struct dsv4_st_file {
    char *label;
    void *map; /* mmap'ed file, NULL for in-memory images */
    size_t map_len;
    const uint8_t *data; /* data area */
    size_t data_len;
    int count;
    dsv4_tensor_view *tensors; /* header order */
    char *names;               /* arena holding every tensor name */
    dsv4_st_names index;
    int nmeta;
    const char **meta; /* key, value pairs pointing into meta_arena */
    char *meta_arena;
};

static const char *file_key(const void *ctx, int32_t i) {
    return ((const dsv4_st_file *)ctx)->tensors[i].name;
}

/* JSON numbers come back as doubles; integers up to 2^53 are exact, which covers any real
 * offset (8 PiB) or dimension. Returns 0 ok, 1 not a non-negative integer, 2 too large. */
static int json_uint(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return 1;
    double d = item->valuedouble;
    if (!(d >= 0.0)) return 1; /* negative or NaN */
    if (d > 9007199254740992.0) return 2;
    uint64_t u = (uint64_t)d;
    if ((double)u != d) return 1;
    *out = u;
    return 0;
}

typedef struct range {
    uint64_t begin, end;
    int idx;
} range;

static int range_cmp(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

/* Fills tensor `t` from its header entry, validating everything. */
static dsv4_status parse_entry(const dsv4_st_file *f, const cJSON *e, dsv4_tensor_view *t,
                               uint64_t *begin_out, uint64_t *end_out) {
    const char *lab = f->label, *nm = t->name;
    if (!cJSON_IsObject(e))
        return dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s': header entry is not a JSON object", lab, nm);
    const cJSON *jd = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *jo = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jd))
        return dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s': missing or non-string \"dtype\"", lab, nm);
    if (!cJSON_IsArray(js))
        return dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s': missing or non-array \"shape\"", lab, nm);
    if (!cJSON_IsArray(jo) || cJSON_GetArraySize(jo) != 2)
        return dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s': \"data_offsets\" is not a [begin, end] array",
                         lab, nm);
    if (!dsv4_dtype_from_name(jd->valuestring, &t->dtype))
        return dsv4_fail(DSV4_ERR_DTYPE, "%s: tensor '%s': unknown dtype \"%.40s\"", lab, nm,
                         jd->valuestring);

    int ndim = 0;
    uint64_t numel = 1;
    int overflow = 0;
    for (const cJSON *d = js->child; d; d = d->next) {
        if (ndim == DSV4_MAX_DIMS)
            return dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s': more than %d dimensions", lab, nm,
                             DSV4_MAX_DIMS);
        uint64_t v = 0;
        int r = json_uint(d, &v);
        if (r == 1)
            return dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s': shape[%d] is not a non-negative integer",
                             lab, nm, ndim);
        if (r == 2)
            return dsv4_fail(DSV4_ERR_SHAPE, "%s: tensor '%s': shape[%d] is absurdly large", lab, nm, ndim);
        if (v != 0 && numel > UINT64_MAX / v) overflow = 1; /* a later 0 does not rescue it */
        numel *= v;
        t->shape[ndim++] = (int64_t)v;
    }
    t->ndim = ndim;
    /* Numel must fit int64 for dsv4_tensor_numel; checked on the product. */
    if (overflow || numel > (uint64_t)INT64_MAX)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: tensor '%s': element count overflows", lab, nm);

    uint64_t begin = 0, end = 0;
    int rb = json_uint(jo->child, &begin), re = json_uint(jo->child->next, &end);
    if (rb == 1 || re == 1)
        return dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s': data_offsets are not non-negative integers",
                         lab, nm);
    if (rb == 2 || re == 2)
        return dsv4_fail(DSV4_ERR_RANGE, "%s: tensor '%s': data_offsets are past the %zu-byte data area",
                         lab, nm, f->data_len);
    if (begin > end)
        return dsv4_fail(DSV4_ERR_RANGE, "%s: tensor '%s': data_offsets begin %llu > end %llu", lab, nm,
                         (unsigned long long)begin, (unsigned long long)end);
    if (end > f->data_len)
        return dsv4_fail(DSV4_ERR_RANGE,
                         "%s: tensor '%s': data_offsets [%llu, %llu) run past the %zu-byte data area "
                         "(file truncated?)",
                         lab, nm, (unsigned long long)begin, (unsigned long long)end, f->data_len);

    unsigned bits = (unsigned)dsv4_dtype_bits(t->dtype);
    if (numel > UINT64_MAX / bits)
        return dsv4_fail(DSV4_ERR_SHAPE, "%s: tensor '%s': byte size overflows", lab, nm);
    uint64_t nbits = numel * bits;
    if (nbits % 8 != 0)
        return dsv4_fail(DSV4_ERR_SHAPE,
                         "%s: tensor '%s': %llu elements of %s do not fill whole bytes", lab, nm,
                         (unsigned long long)numel, dsv4_dtype_name(t->dtype));
    if (nbits / 8 != end - begin)
        return dsv4_fail(DSV4_ERR_SHAPE,
                         "%s: tensor '%s': shape x %s needs %llu bytes but data_offsets give %llu", lab,
                         nm, dsv4_dtype_name(t->dtype), (unsigned long long)(nbits / 8),
                         (unsigned long long)(end - begin));
    t->data = f->data + begin;
    t->nbytes = (size_t)(end - begin);
    t->file = f->label;
    *begin_out = begin;
    *end_out = end;
    return DSV4_OK;
}

static dsv4_status parse_metadata(dsv4_st_file *f, const cJSON *m) {
    if (cJSON_IsNull(m)) return DSV4_OK; /* the reference reader treats null as absent */
    if (!cJSON_IsObject(m))
        return dsv4_fail(DSV4_ERR_JSON, "%s: __metadata__ is not a JSON object", f->label);
    size_t n = 0, bytes = 0;
    for (const cJSON *kv = m->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv))
            return dsv4_fail(DSV4_ERR_JSON, "%s: __metadata__ value of '%s' is not a string", f->label,
                             kv->string);
        n++;
        bytes += strlen(kv->string) + strlen(kv->valuestring) + 2;
    }
    if (n == 0) return DSV4_OK;
    f->meta = malloc(2 * n * sizeof *f->meta);
    f->meta_arena = malloc(bytes);
    if (!f->meta || !f->meta_arena)
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory for __metadata__", f->label);
    char *p = f->meta_arena;
    for (const cJSON *kv = m->child; kv; kv = kv->next) {
        size_t kl = strlen(kv->string) + 1, vl = strlen(kv->valuestring) + 1;
        memcpy(p, kv->string, kl);
        f->meta[2 * f->nmeta] = p;
        p += kl;
        memcpy(p, kv->valuestring, vl);
        f->meta[2 * f->nmeta + 1] = p;
        p += vl;
        f->nmeta++;
    }
    return DSV4_OK;
}

static dsv4_status check_overlaps(const dsv4_st_file *f, range *r, int n) {
    qsort(r, (size_t)n, sizeof *r, range_cmp);
    uint64_t max_end = 0;
    int max_idx = -1;
    for (int i = 0; i < n; i++) {
        if (r[i].begin == r[i].end) continue; /* an empty range shares no bytes */
        if (max_idx >= 0 && r[i].begin < max_end)
            return dsv4_fail(DSV4_ERR_OVERLAP, "%s: tensors '%s' and '%s' share bytes [%llu, %llu)",
                             f->label, f->tensors[max_idx].name, f->tensors[r[i].idx].name,
                             (unsigned long long)r[i].begin,
                             (unsigned long long)(max_end < r[i].end ? max_end : r[i].end));
        if (r[i].end > max_end) {
            max_end = r[i].end;
            max_idx = r[i].idx;
        }
    }
    return DSV4_OK;
}

static dsv4_status parse_header(dsv4_st_file *f, const uint8_t *buf, size_t len) {
    const char *lab = f->label;
    if (len < 8)
        return dsv4_fail(DSV4_ERR_TRUNCATED, "%s: file is %zu bytes, too short for the 8-byte header length",
                         lab, len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | buf[i];
    if (n > DSV4_ST_MAX_HEADER)
        return dsv4_fail(DSV4_ERR_HEADER, "%s: header length %llu exceeds the %u-byte limit", lab,
                         (unsigned long long)n, DSV4_ST_MAX_HEADER);
    if (n > len - 8)
        return dsv4_fail(DSV4_ERR_TRUNCATED, "%s: header length %llu runs past the end of the %zu-byte file",
                         lab, (unsigned long long)n, len);
    const char *hdr = (const char *)buf + 8;
    f->data = buf + 8 + n;
    f->data_len = len - 8 - (size_t)n;
    if (!dsv4_st_utf8_valid(hdr, (size_t)n))
        return dsv4_fail(DSV4_ERR_JSON, "%s: header is not valid UTF-8", lab);

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, (size_t)n, &end, 0);
    if (!root) {
        size_t at = (end && end >= hdr && end <= hdr + n) ? (size_t)(end - hdr) : 0;
        return dsv4_fail(DSV4_ERR_JSON, "%s: header is not valid JSON (near byte %zu)", lab, at);
    }
    dsv4_status st = DSV4_OK;
    range *ranges = NULL;
    /* Only the space padding writers add may follow the JSON value. */
    for (const char *p = end; p < hdr + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = dsv4_fail(DSV4_ERR_JSON, "%s: unexpected bytes after the header JSON at byte %zu", lab,
                           (size_t)(p - hdr));
            goto done;
        }
    if (!cJSON_IsObject(root)) {
        st = dsv4_fail(DSV4_ERR_JSON, "%s: header is not a JSON object", lab);
        goto done;
    }

    size_t count = 0, name_bytes = 0;
    const cJSON *meta = NULL;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if (meta) {
                st = dsv4_fail(DSV4_ERR_JSON, "%s: __metadata__ appears twice", lab);
                goto done;
            }
            meta = e;
            continue;
        }
        count++;
        name_bytes += strlen(e->string) + 1;
    }
    if (count > INT32_MAX / 2) {
        st = dsv4_fail(DSV4_ERR_HEADER, "%s: too many tensors (%zu)", lab, count);
        goto done;
    }
    if (meta && (st = parse_metadata(f, meta)) != DSV4_OK) goto done;

    f->tensors = calloc(count ? count : 1, sizeof *f->tensors);
    f->names = malloc(name_bytes ? name_bytes : 1);
    ranges = malloc((count ? count : 1) * sizeof *ranges);
    if (!f->tensors || !f->names || !ranges ||
        !dsv4_st_names_init(&f->index, count, file_key, f)) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu tensors", lab, count);
        goto done;
    }
    char *np = f->names;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (e == meta) continue;
        dsv4_tensor_view *t = &f->tensors[f->count];
        size_t nl = strlen(e->string) + 1;
        memcpy(np, e->string, nl);
        t->name = np;
        np += nl;
        range *r = &ranges[f->count];
        r->idx = f->count;
        if ((st = parse_entry(f, e, t, &r->begin, &r->end)) != DSV4_OK) goto done;
        int32_t prev = dsv4_st_names_insert(&f->index, f->count);
        if (prev >= 0) {
            st = dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s' appears twice in the header", lab, t->name);
            goto done;
        }
        f->count++;
    }
    st = check_overlaps(f, ranges, f->count);
done:
    free(ranges);
    cJSON_Delete(root);
    return st;
}

static dsv4_status new_file(const char *label, dsv4_st_file **out) {
    dsv4_st_file *f = calloc(1, sizeof *f);
    if (f) f->label = strdup(label ? label : "<memory>");
    if (!f || !f->label) {
        free(f);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", label ? label : "<memory>");
    }
    *out = f;
    return DSV4_OK;
}

dsv4_status dsv4_st_open_memory(const void *buf, size_t len, const char *label, dsv4_st_file **out) {
    if (!out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: dsv4_st_open_memory: out is NULL",
                               label ? label : "<memory>");
    *out = NULL;
    if (!buf && len)
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "%s: dsv4_st_open_memory: NULL buffer",
                         label ? label : "<memory>");
    dsv4_st_file *f;
    DSV4_TRY(new_file(label, &f));
    dsv4_status st = parse_header(f, buf, len);
    if (st != DSV4_OK) {
        dsv4_st_close(f);
        return st;
    }
    *out = f;
    return DSV4_OK;
}

dsv4_status dsv4_st_open(const char *path, dsv4_st_file **out) {
    if (!out || !path) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_st_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return dsv4_fail(DSV4_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return dsv4_fail(DSV4_ERR_IO, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return dsv4_fail(DSV4_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > SIZE_MAX) {
        close(fd);
        return dsv4_fail(DSV4_ERR_IO, "%s: file too large to map", path);
    }
    dsv4_st_file *f;
    dsv4_status st = new_file(path, &f);
    if (st != DSV4_OK) {
        close(fd);
        return st;
    }
    size_t len = (size_t)sb.st_size;
    if (len >= 8) { /* mmap of 0 bytes fails; short files are reported by the parser */
        void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            dsv4_st_close(f);
            return dsv4_fail(DSV4_ERR_IO, "%s: mmap of %zu bytes failed: %s", path, len, strerror(e));
        }
        f->map = m;
        f->map_len = len;
    }
    close(fd);
    static const uint8_t empty[8];
    st = parse_header(f, f->map ? f->map : empty, len);
    if (st != DSV4_OK) {
        dsv4_st_close(f);
        return st;
    }
    *out = f;
    return DSV4_OK;
}

void dsv4_st_close(dsv4_st_file *f) {
    if (!f) return;
    if (f->map) munmap(f->map, f->map_len);
    dsv4_st_names_free(&f->index);
    free(f->tensors);
    free(f->names);
    free(f->meta);
    free(f->meta_arena);
    free(f->label);
    free(f);
}

int dsv4_st_count(const dsv4_st_file *f) { return f ? f->count : 0; }

const dsv4_tensor_view *dsv4_st_tensor(const dsv4_st_file *f, int i) {
    if (!f || i < 0 || i >= f->count) return NULL;
    return &f->tensors[i];
}

const dsv4_tensor_view *dsv4_st_find(const dsv4_st_file *f, const char *name) {
    if (!f) return NULL;
    int32_t i = dsv4_st_names_find(&f->index, name);
    return i < 0 ? NULL : &f->tensors[i];
}

const char *dsv4_st_metadata(const dsv4_st_file *f, const char *key) {
    if (!f || !key) return NULL;
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta[2 * i], key) == 0) return f->meta[2 * i + 1];
    return NULL;
}
