/* Checkpoint directories: a sharded set of .safetensors files, with or without
 * model.safetensors.index.json. The index is untrusted like the shards: it must agree with
 * the files exactly, so a stale or hand-edited index is reported rather than half-used. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/status.h"
#include "format/safetensors.h"
#include "format/safetensors_internal.h"

#define INDEX_NAME "model.safetensors.index.json"
#define INDEX_MAX_BYTES (1u << 30)

struct dsv4_checkpoint {
    int nfiles;
    dsv4_st_file **files;
    int count;
    const dsv4_tensor_view **tensors;
    dsv4_st_names index;
};

static const char *ckpt_key(const void *ctx, int32_t i) {
    return ((const dsv4_checkpoint *)ctx)->tensors[i]->name;
}

static char *join_path(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p) return NULL;
    memcpy(p, dir, a);
    p[a] = '/';
    memcpy(p + a + 1, name, b + 1);
    return p;
}

void dsv4_ckpt_close(dsv4_checkpoint *c) {
    if (!c) return;
    for (int i = 0; i < c->nfiles; i++) dsv4_st_close(c->files[i]);
    free(c->files);
    free(c->tensors);
    dsv4_st_names_free(&c->index);
    free(c);
}

/* Opens dir/names[i] for every i into c->files (c->nfiles counts those opened). */
static dsv4_status open_files(dsv4_checkpoint *c, const char *dir, const char *const *names, int n,
                              const char *index_path) {
    c->files = calloc((size_t)(n ? n : 1), sizeof *c->files);
    if (!c->files) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    for (int i = 0; i < n; i++) {
        char *path = join_path(dir, names[i]);
        if (!path) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
        struct stat sb;
        if (index_path && stat(path, &sb) != 0 && errno == ENOENT) {
            dsv4_status st = dsv4_fail(DSV4_ERR_MISSING, "%s: names shard '%s', but %s does not exist",
                                       index_path, names[i], path);
            free(path);
            return st;
        }
        dsv4_status st = dsv4_st_open(path, &c->files[i]);
        free(path);
        if (st != DSV4_OK) return st;
        c->nfiles++;
    }
    return DSV4_OK;
}

/* Collects every tensor into c->tensors and the name table; a name in two files is an error. */
static dsv4_status build_table(dsv4_checkpoint *c, const char *dir) {
    size_t total = 0;
    for (int i = 0; i < c->nfiles; i++) total += (size_t)dsv4_st_count(c->files[i]);
    if (total > INT32_MAX / 2) return dsv4_fail(DSV4_ERR_HEADER, "%s: too many tensors (%zu)", dir, total);
    c->tensors = malloc((total ? total : 1) * sizeof *c->tensors);
    if (!c->tensors || !dsv4_st_names_init(&c->index, total, ckpt_key, c))
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory for %zu tensors", dir, total);
    for (int i = 0; i < c->nfiles; i++) {
        for (int k = 0; k < dsv4_st_count(c->files[i]); k++) {
            const dsv4_tensor_view *t = dsv4_st_tensor(c->files[i], k);
            c->tensors[c->count] = t;
            int32_t prev = dsv4_st_names_insert(&c->index, c->count);
            if (prev >= 0)
                return dsv4_fail(DSV4_ERR_OVERLAP, "%s: tensor '%s' is in both %s and %s", dir, t->name,
                                 c->tensors[prev]->file, t->file);
            c->count++;
        }
    }
    return DSV4_OK;
}

static int str_cmp(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static dsv4_status open_unindexed(dsv4_checkpoint *c, const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return dsv4_fail(DSV4_ERR_IO, "%s: cannot open directory: %s", dir, strerror(errno));
    char **names = NULL;
    int n = 0, cap = 0;
    dsv4_status st = DSV4_OK;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        size_t l = strlen(de->d_name);
        const char *ext = ".safetensors";
        size_t el = strlen(ext);
        if (l <= el || strcmp(de->d_name + l - el, ext) != 0) continue;
        if (n == cap) {
            int ncap = cap ? cap * 2 : 16;
            char **nn = realloc(names, (size_t)ncap * sizeof *names);
            if (!nn) { st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir); goto done; }
            names = nn;
            cap = ncap;
        }
        if (!(names[n] = strdup(de->d_name))) {
            st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
            goto done;
        }
        n++;
    }
    if (n == 0) {
        st = dsv4_fail(DSV4_ERR_MISSING, "%s: no %s and no *.safetensors files", dir, INDEX_NAME);
        goto done;
    }
    qsort(names, (size_t)n, sizeof *names, str_cmp);
    if ((st = open_files(c, dir, (const char *const *)names, n, NULL)) != DSV4_OK) goto done;
    st = build_table(c, dir);
done:
    closedir(d);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    return st;
}

/* ---- indexed ---- */

typedef struct wm_entry {
    const char *tensor; /* points into the parsed index JSON */
    const char *file;
    int file_idx;
} wm_entry;

static const char *wm_key(const void *ctx, int32_t i) { return ((const wm_entry *)ctx)[i].tensor; }
static const char *fname_key(const void *ctx, int32_t i) { return ((const char *const *)ctx)[i]; }

/* The index names files relative to the checkpoint; one that escapes it is rejected so an
 * index cannot make us map arbitrary files. */
static int safe_relative(const char *p) {
    if (!*p || *p == '/') return 0;
    for (const char *s = p; *s;) {
        const char *e = strchr(s, '/');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (l == 2 && s[0] == '.' && s[1] == '.') return 0;
        if (!e) break;
        s = e + 1;
    }
    return 1;
}

static dsv4_status read_index(const char *path, char **text, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return dsv4_fail(DSV4_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    dsv4_status st = DSV4_OK;
    char *buf = NULL;
    long sz = -1;
    if (fseek(fp, 0, SEEK_END) == 0) sz = ftell(fp);
    if (sz < 0 || fseek(fp, 0, SEEK_SET) != 0) {
        st = dsv4_fail(DSV4_ERR_IO, "%s: cannot determine size: %s", path, strerror(errno));
    } else if ((unsigned long)sz > INDEX_MAX_BYTES) {
        st = dsv4_fail(DSV4_ERR_HEADER, "%s: %ld bytes is too large for an index", path, sz);
    } else if (!(buf = malloc((size_t)sz + 1))) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", path);
    } else if (fread(buf, 1, (size_t)sz, fp) != (size_t)sz) {
        st = dsv4_fail(DSV4_ERR_IO, "%s: read failed", path);
    }
    fclose(fp);
    if (st != DSV4_OK) {
        free(buf);
        return st;
    }
    buf[sz] = '\0';
    *text = buf;
    *len = (size_t)sz;
    return DSV4_OK;
}

static dsv4_status open_indexed(dsv4_checkpoint *c, const char *dir, const char *ipath) {
    char *text = NULL;
    size_t len = 0;
    DSV4_TRY(read_index(ipath, &text, &len));
    dsv4_status st = DSV4_OK;
    cJSON *root = cJSON_ParseWithLength(text, len);
    wm_entry *wm = NULL;
    const char **fnames = NULL;
    dsv4_st_names wm_tab = {0}, fn_tab = {0};
    int nwm = 0, nf = 0;
    const cJSON *map = root ? cJSON_GetObjectItemCaseSensitive(root, "weight_map") : NULL;
    if (!root || !cJSON_IsObject(root)) {
        st = dsv4_fail(DSV4_ERR_JSON, "%s: not a JSON object", ipath);
        goto done;
    }
    if (!cJSON_IsObject(map)) {
        st = dsv4_fail(DSV4_ERR_JSON, "%s: no \"weight_map\" object", ipath);
        goto done;
    }
    int n = cJSON_GetArraySize(map);
    wm = malloc((size_t)(n ? n : 1) * sizeof *wm);
    fnames = malloc((size_t)(n ? n : 1) * sizeof *fnames);
    if (!wm || !fnames || !dsv4_st_names_init(&wm_tab, (size_t)n, wm_key, wm) ||
        !dsv4_st_names_init(&fn_tab, (size_t)n, fname_key, fnames)) {
        st = dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", ipath);
        goto done;
    }
    for (const cJSON *e = map->child; e; e = e->next) {
        if (!cJSON_IsString(e)) {
            st = dsv4_fail(DSV4_ERR_JSON, "%s: weight_map entry for tensor '%s' is not a file name", ipath,
                           e->string);
            goto done;
        }
        if (!safe_relative(e->valuestring)) {
            st = dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s' maps to '%s', outside the checkpoint directory",
                           ipath, e->string, e->valuestring);
            goto done;
        }
        wm[nwm] = (wm_entry){e->string, e->valuestring, -1};
        if (dsv4_st_names_insert(&wm_tab, nwm) >= 0) {
            st = dsv4_fail(DSV4_ERR_JSON, "%s: tensor '%s' appears twice in weight_map", ipath, e->string);
            goto done;
        }
        nwm++;
        fnames[nf] = e->valuestring;
        if (dsv4_st_names_insert(&fn_tab, nf) < 0) nf++;
    }
    /* Shard order = file name order (model-00001-of-..., model-00002-...). */
    qsort(fnames, (size_t)nf, sizeof *fnames, str_cmp);
    memset(fn_tab.slots, 0xff, (fn_tab.mask + 1) * sizeof *fn_tab.slots);
    for (int i = 0; i < nf; i++) dsv4_st_names_insert(&fn_tab, i);
    for (int i = 0; i < nwm; i++) wm[i].file_idx = dsv4_st_names_find(&fn_tab, wm[i].file);

    if ((st = open_files(c, dir, fnames, nf, ipath)) != DSV4_OK) goto done;
    int matched = 0;
    for (int fi = 0; fi < c->nfiles; fi++) {
        const dsv4_st_file *f = c->files[fi];
        for (int k = 0; k < dsv4_st_count(f); k++) {
            const dsv4_tensor_view *t = dsv4_st_tensor(f, k);
            int32_t w = dsv4_st_names_find(&wm_tab, t->name);
            if (w < 0) {
                st = dsv4_fail(DSV4_ERR_MISSING, "%s: tensor '%s' in %s is not in the index", ipath,
                               t->name, t->file);
                goto done;
            }
            if (wm[w].file_idx != fi) {
                st = dsv4_fail(DSV4_ERR_MISSING, "%s: index puts tensor '%s' in '%s', but it is in %s",
                               ipath, t->name, wm[w].file, t->file);
                goto done;
            }
            matched++;
        }
    }
    if (matched != nwm) {
        for (int i = 0; i < nwm; i++)
            if (!dsv4_st_find(c->files[wm[i].file_idx], wm[i].tensor)) {
                st = dsv4_fail(DSV4_ERR_MISSING, "%s: index puts tensor '%s' in '%s', which has no such tensor",
                               ipath, wm[i].tensor, wm[i].file);
                goto done;
            }
        st = dsv4_fail(DSV4_ERR_INTERNAL, "%s: index and shards disagree", ipath);
        goto done;
    }
    st = build_table(c, dir);
done:
    dsv4_st_names_free(&wm_tab);
    dsv4_st_names_free(&fn_tab);
    free(wm);
    free(fnames);
    cJSON_Delete(root);
    free(text);
    return st;
}

dsv4_status dsv4_ckpt_open(const char *dir, dsv4_checkpoint **out) {
    if (!dir || !out) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "dsv4_ckpt_open: NULL argument");
    *out = NULL;
    struct stat sb;
    if (stat(dir, &sb) != 0)
        return dsv4_fail(errno == ENOENT ? DSV4_ERR_MISSING : DSV4_ERR_IO, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return dsv4_fail(DSV4_ERR_IO, "%s: not a directory", dir);
    dsv4_checkpoint *c = calloc(1, sizeof *c);
    char *ipath = join_path(dir, INDEX_NAME);
    if (!c || !ipath) {
        free(c);
        free(ipath);
        return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", dir);
    }
    dsv4_status st = stat(ipath, &sb) == 0 ? open_indexed(c, dir, ipath) : open_unindexed(c, dir);
    free(ipath);
    if (st != DSV4_OK) {
        dsv4_ckpt_close(c);
        return st;
    }
    *out = c;
    return DSV4_OK;
}

int dsv4_ckpt_count(const dsv4_checkpoint *c) { return c ? c->count : 0; }
int dsv4_ckpt_file_count(const dsv4_checkpoint *c) { return c ? c->nfiles : 0; }

const dsv4_tensor_view *dsv4_ckpt_tensor(const dsv4_checkpoint *c, int i) {
    if (!c || i < 0 || i >= c->count) return NULL;
    return c->tensors[i];
}

const dsv4_tensor_view *dsv4_ckpt_find(const dsv4_checkpoint *c, const char *name) {
    if (!c) return NULL;
    int32_t i = dsv4_st_names_find(&c->index, name);
    return i < 0 ? NULL : c->tensors[i];
}
