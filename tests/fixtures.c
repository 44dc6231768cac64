#include "fixtures.h"

#include <math.h>
#include <stdio.h>

#include "base/status.h"
#include "format/safetensors.h"
#include "test.h"

const char *fixture_tiny_dir(dsv4_tiny_scheme scheme, uint64_t seed) {
    static char dirs[8][4][600];
    static int made[8][4];
    int s = (int)scheme & 7, k = (int)(seed % 4);
    if (!made[s][k]) {
        snprintf(dirs[s][k], sizeof dirs[s][k], "%s", test_tmpdir());
        if (dsv4_make_tiny(dirs[s][k], scheme, seed) != DSV4_OK) {
            fprintf(stderr, "make-tiny failed: %s\n", dsv4_last_error());
            return NULL;
        }
        made[s][k] = 1;
    }
    return dirs[s][k];
}

dsv4_status fixture_write_mutated(const char *src, const char *dst, const mutation *mu) {
    dsv4_checkpoint *ck;
    DSV4_TRY(dsv4_ckpt_open(src, &ck));
    dsv4_st_writer *w = dsv4_st_writer_new();
    void *copy = NULL;
    dsv4_status st = DSV4_OK;
    for (int i = 0; i < dsv4_ckpt_count(ck) && st == DSV4_OK; i++) {
        const dsv4_tensor_view *t = dsv4_ckpt_tensor(ck, i);
        if (mu->drop && !strcmp(t->name, mu->drop)) continue;
        const void *data = t->data;
        if (mu->corrupt && !strcmp(t->name, mu->corrupt)) {
            copy = malloc(t->nbytes);
            memcpy(copy, t->data, t->nbytes);
            memcpy(copy, mu->bytes, mu->n_bytes);
            data = copy;
            if (mu->duplicate_as)
                st = dsv4_st_writer_add(w, mu->duplicate_as, t->dtype, t->ndim, t->shape, data, t->nbytes);
        }
        if (st == DSV4_OK) st = dsv4_st_writer_add(w, t->name, t->dtype, t->ndim, t->shape, data, t->nbytes);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dst);
    if (st == DSV4_OK) st = dsv4_st_writer_write(w, path);
    dsv4_st_writer_free(w);
    free(copy);
    dsv4_ckpt_close(ck);
    /* config.json, optionally edited */
    snprintf(path, sizeof path, "%s/config.json", src);
    char *cfg = test_read_file(path, NULL);
    if (!cfg) return DSV4_ERR_IO;
    char *out = malloc(strlen(cfg) + 256);
    strcpy(out, cfg);
    if (mu->config_from) {
        char *p = strstr(cfg, mu->config_from);
        if (!p) { free(cfg); free(out); return dsv4_fail(DSV4_ERR_INTERNAL, "config.json lacks '%s'", mu->config_from); }
        sprintf(out + (p - cfg), "%s%s", mu->config_to, p + strlen(mu->config_from));
    }
    snprintf(path, sizeof path, "%s/config.json", dst);
    test_write_file(path, out, strlen(out));
    free(cfg);
    free(out);
    return st;
}


double fixture_cosine(const float *a, const float *b, size_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (size_t i = 0; i < n; i++) ab += (double)a[i] * b[i], aa += (double)a[i] * a[i], bb += (double)b[i] * b[i];
    return ab / sqrt(aa * bb);
}
