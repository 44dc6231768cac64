/* safetensors reader, checkpoint directories and writer: round trips, interop with Python's
 * safetensors, and a corpus of malformed files that must each fail with a precise status
 * and a message naming the file and tensor. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "base/status.h"
#include "format/safetensors.h"
#include "test.h"

/* ---- helpers ---- */

/* An image: u64 header length, the header as given, then `data_len` bytes 0, 1, 2, ... */
static uint8_t *make_image(const char *json, uint64_t hdr_len, size_t data_len, size_t *len) {
    size_t jl = strlen(json);
    *len = 8 + jl + data_len;
    uint8_t *b = malloc(*len + 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hdr_len >> (8 * i));
    memcpy(b + 8, json, jl);
    for (size_t i = 0; i < data_len; i++) b[8 + jl + i] = (uint8_t)i;
    return b;
}

/* One scratch directory for the corpus files (test_tmpdir() makes a new one per call). */
static const char *scratch(void) {
    static char dir[256];
    if (!dir[0]) snprintf(dir, sizeof dir, "%s", test_tmpdir());
    return dir;
}

static int contains(const char *hay, const char *needle) { return needle == NULL || strstr(hay, needle); }

/* Opens `img` in memory and as a file; both must fail with `want`, and the message must name
 * the label (or path) and `tensor` (if not NULL). Returns 0 after reporting a failure. */
static int expect_bad_image(int line, const char *what, const uint8_t *img, size_t len, dsv4_status want,
                            const char *tensor) {
    char label[160], path[512];
    snprintf(label, sizeof label, "mem:%s", what);
    dsv4_st_file *f = (dsv4_st_file *)1;
    dsv4_status st = dsv4_st_open_memory(img, len, label, &f);
    if (st != want || f != NULL || !contains(dsv4_last_error(), label) ||
        !contains(dsv4_last_error(), tensor)) {
        test_fail_at(__FILE__, line, "%s (memory): got %s, want %s naming '%s'; message: %s", what,
                     dsv4_status_name(st), dsv4_status_name(want), tensor ? tensor : "-", dsv4_last_error());
        if (st == DSV4_OK) dsv4_st_close(f);
        return 0;
    }
    static int seq;
    snprintf(path, sizeof path, "%s/bad%d.safetensors", scratch(), seq++);
    test_write_file(path, img, len);
    f = (dsv4_st_file *)1;
    st = dsv4_st_open(path, &f);
    if (st != want || f != NULL || !contains(dsv4_last_error(), path) || !contains(dsv4_last_error(), tensor)) {
        test_fail_at(__FILE__, line, "%s (file): got %s, want %s naming '%s'; message: %s", what,
                     dsv4_status_name(st), dsv4_status_name(want), tensor ? tensor : "-", dsv4_last_error());
        if (st == DSV4_OK) dsv4_st_close(f);
        return 0;
    }
    return 1;
}

static int expect_bad(int line, const char *json, size_t data_len, dsv4_status want, const char *tensor) {
    size_t len;
    uint8_t *img = make_image(json, strlen(json), data_len, &len);
    int ok = expect_bad_image(line, json, img, len, want, tensor);
    free(img);
    return ok;
}

#define EXPECT_BAD(json, data_len, want, tensor) \
    do { if (!expect_bad(__LINE__, json, data_len, want, tensor)) return; } while (0)

static int open_ok(const char *json, size_t data_len, int *count) {
    size_t len;
    uint8_t *img = make_image(json, strlen(json), data_len, &len);
    dsv4_st_file *f = NULL;
    dsv4_status st = dsv4_st_open_memory(img, len, "ok", &f);
    if (st == DSV4_OK) *count = dsv4_st_count(f);
    dsv4_st_close(f);
    free(img);
    return st == DSV4_OK;
}

static void fill_random(uint8_t *p, size_t n, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)test_rand_u64(rng);
}

/* ---- dtypes ---- */

TEST(st_dtype_table) {
    for (int i = 0; i < DSV4_DT_COUNT; i++) {
        dsv4_dtype back = DSV4_DT_COUNT;
        const char *n = dsv4_dtype_name((dsv4_dtype)i);
        CHECK_MSG(dsv4_dtype_from_name(n, &back) && back == (dsv4_dtype)i, "dtype %d (%s)", i, n);
        for (int j = 0; j < i; j++) CHECK(strcmp(n, dsv4_dtype_name((dsv4_dtype)j)) != 0);
    }
    CHECK(dsv4_dtype_bits(DSV4_DT_F4) == 4 && dsv4_dtype_bits(DSV4_DT_F6_E2M3) == 6 &&
          dsv4_dtype_bits(DSV4_DT_F6_E3M2) == 6 && dsv4_dtype_bits(DSV4_DT_F8_E8M0) == 8 &&
          dsv4_dtype_bits(DSV4_DT_BF16) == 16 && dsv4_dtype_bits(DSV4_DT_C64) == 64 &&
          dsv4_dtype_bits(DSV4_DT_BOOL) == 8 && dsv4_dtype_bits(DSV4_DT_F64) == 64);
    CHECK(strcmp(dsv4_dtype_name(DSV4_DT_F8_E4M3), "F8_E4M3") == 0);
    CHECK(!dsv4_dtype_from_name("F8_E4M3FN", NULL) && !dsv4_dtype_from_name("f32", NULL) &&
          !dsv4_dtype_from_name(NULL, NULL));
    CHECK(dsv4_dtype_bits(DSV4_DT_COUNT) == 0 && strcmp(dsv4_dtype_name(DSV4_DT_COUNT), "?") == 0);
}

/* ---- round trips ---- */

typedef struct rt_tensor {
    char name[32];
    dsv4_dtype dt;
    int ndim;
    int64_t shape[4];
    uint8_t *data;
    size_t nbytes;
} rt_tensor;

/* One tensor of every dtype (shape 2x4: whole bytes even for F4/F6), a 0-d, a zero-sized
 * and a 3-d tensor, with random bytes. Returns the count. */
static int make_tensors(rt_tensor *t, uint64_t seed) {
    uint64_t rng = seed;
    int n = 0;
    for (int d = 0; d < DSV4_DT_COUNT; d++, n++) {
        snprintf(t[n].name, sizeof t[n].name, "t.%s", dsv4_dtype_name((dsv4_dtype)d));
        t[n].dt = (dsv4_dtype)d;
        t[n].ndim = 2;
        t[n].shape[0] = 2;
        t[n].shape[1] = 4;
        t[n].nbytes = (size_t)(8 * dsv4_dtype_bits((dsv4_dtype)d) / 8);
    }
    t[n] = (rt_tensor){"scalar", DSV4_DT_F32, 0, {0}, NULL, 4};
    t[n + 1] = (rt_tensor){"empty", DSV4_DT_BF16, 2, {0, 3}, NULL, 0};
    t[n + 2] = (rt_tensor){"cube \"q\"\\é", DSV4_DT_I16, 3, {3, 1, 5}, NULL, 30};
    n += 3;
    for (int i = 0; i < n; i++) {
        t[i].data = malloc(t[i].nbytes + 1);
        fill_random(t[i].data, t[i].nbytes, &rng);
        if (t[i].dt == DSV4_DT_BOOL)
            for (size_t k = 0; k < t[i].nbytes; k++) t[i].data[k] &= 1;
    }
    return n;
}

static void free_tensors(rt_tensor *t, int n) {
    for (int i = 0; i < n; i++) free(t[i].data);
}

static int check_tensor(int line, const dsv4_tensor_view *v, const rt_tensor *t) {
    if (!v) {
        test_fail_at(__FILE__, line, "tensor '%s' not found", t->name);
        return 0;
    }
    int ok = strcmp(v->name, t->name) == 0 && v->dtype == t->dt && v->ndim == t->ndim &&
             v->nbytes == t->nbytes && (t->nbytes == 0 || memcmp(v->data, t->data, t->nbytes) == 0);
    for (int d = 0; ok && d < t->ndim; d++) ok = v->shape[d] == t->shape[d];
    /* The writer lays tensors out widest first, so each is aligned to its element size. */
    int align = dsv4_dtype_bits(t->dt) >= 64 ? 8 : dsv4_dtype_bits(t->dt) / 8;
    if (ok && align > 1 && t->nbytes) ok = (uintptr_t)v->data % (uintptr_t)align == 0;
    if (!ok) test_fail_at(__FILE__, line, "tensor '%s' differs after the round trip", t->name);
    return ok;
}

TEST(st_roundtrip_every_dtype) {
    rt_tensor t[DSV4_DT_COUNT + 3];
    int n = make_tensors(t, 42);
    dsv4_st_writer *w = dsv4_st_writer_new();
    CHECK(w);
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        CHECK_OK(dsv4_st_writer_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape, t[i].data, t[i].nbytes));
        total += t[i].nbytes;
    }
    CHECK(dsv4_st_writer_bytes(w) == total);
    CHECK_OK(dsv4_st_writer_set_metadata(w, "format", "pt"));
    CHECK_OK(dsv4_st_writer_set_metadata(w, "note", "x"));
    CHECK_OK(dsv4_st_writer_set_metadata(w, "note", "quote \" and \n newline"));
    char path[512];
    snprintf(path, sizeof path, "%s/all.safetensors", test_tmpdir());
    CHECK_OK(dsv4_st_writer_write(w, path));
    dsv4_st_writer_free(w);

    size_t len = 0;
    char *img = test_read_file(path, &len);
    CHECK(img && len > 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)img[i];
    CHECK_MSG(hl % 8 == 0 && len == 8 + hl + total, "header %llu, file %zu, data %zu", (unsigned long long)hl,
              len, total);
    CHECK(img[8 + hl - 1] == ' ' || img[8 + hl - 1] == '}');

    for (int pass = 0; pass < 2; pass++) {
        dsv4_st_file *f = NULL;
        if (pass == 0) CHECK_OK(dsv4_st_open(path, &f));
        else CHECK_OK(dsv4_st_open_memory(img, len, "image", &f));
        CHECK(dsv4_st_count(f) == n);
        for (int i = 0; i < n; i++) {
            const dsv4_tensor_view *v = dsv4_st_tensor(f, i); /* header order = order added */
            if (!check_tensor(__LINE__, v, &t[i])) return;
            CHECK(dsv4_st_find(f, t[i].name) == v);
            CHECK(strcmp(v->file, pass == 0 ? path : "image") == 0);
            CHECK(dsv4_tensor_numel(v) == (t[i].ndim == 0 ? 1 : t[i].shape[0] * (t[i].ndim > 1 ? t[i].shape[1] : 1) *
                                                                    (t[i].ndim > 2 ? t[i].shape[2] : 1)));
        }
        CHECK(dsv4_st_tensor(f, n) == NULL && dsv4_st_tensor(f, -1) == NULL);
        CHECK(dsv4_st_find(f, "nope") == NULL && dsv4_st_find(f, "t.F3") == NULL);
        CHECK(strcmp(dsv4_st_metadata(f, "format"), "pt") == 0);
        CHECK(strcmp(dsv4_st_metadata(f, "note"), "quote \" and \n newline") == 0);
        CHECK(dsv4_st_metadata(f, "missing") == NULL);
        dsv4_st_close(f);
    }
    free(img);
    free_tensors(t, n);
}

TEST(st_empty_and_permissive_but_valid) {
    int count = -1;
    CHECK(open_ok("{}", 0, &count) && count == 0);
    CHECK(open_ok("{\"__metadata__\":null}  ", 0, &count) && count == 0);
    /* A gap between tensors and trailing bytes are tolerated; empty ranges share no bytes. */
    CHECK(open_ok("{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]},"
                  "\"z\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[1,1]},"
                  "\"y\":{\"dtype\":\"F4\",\"shape\":[0],\"data_offsets\":[1,1]}}",
                  20, &count) &&
          count == 4);
    /* Sub-byte tensors: 4 F4 values = 2 bytes; 4 F6 values = 3 bytes. */
    CHECK(open_ok("{\"a\":{\"dtype\":\"F4\",\"shape\":[2,2],\"data_offsets\":[0,2]},"
                  "\"b\":{\"dtype\":\"F6_E3M2\",\"shape\":[4],\"data_offsets\":[2,5]}}",
                  5, &count) &&
          count == 2);
}

/* ---- malformed corpus ---- */

TEST(st_malformed_headers) {
    size_t len;
    uint8_t *img;
    dsv4_st_file *f;
    /* Shorter than the length field. */
    img = make_image("", 0, 5, &len);
    len = 5;
    if (!expect_bad_image(__LINE__, "five-bytes", img, len, DSV4_ERR_TRUNCATED, NULL)) return;
    free(img);
    CHECK_STATUS(dsv4_st_open_memory(NULL, 0, "nothing", &f), DSV4_ERR_TRUNCATED);
    CHECK(strstr(dsv4_last_error(), "nothing"));
    /* Header length past EOF, 2^63, just over the limit. */
    const char *j = "{\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}";
    img = make_image(j, strlen(j) + 3, 2, &len);
    if (!expect_bad_image(__LINE__, "past-eof", img, len, DSV4_ERR_TRUNCATED, NULL)) return;
    free(img);
    img = make_image(j, 1ull << 63, 2, &len);
    if (!expect_bad_image(__LINE__, "2^63", img, len, DSV4_ERR_HEADER, NULL)) return;
    free(img);
    img = make_image(j, UINT64_MAX, 2, &len);
    if (!expect_bad_image(__LINE__, "2^64-1", img, len, DSV4_ERR_HEADER, NULL)) return;
    free(img);
    img = make_image(j, (uint64_t)DSV4_ST_MAX_HEADER + 1, 2, &len);
    if (!expect_bad_image(__LINE__, "limit+1", img, len, DSV4_ERR_HEADER, NULL)) return;
    free(img);
    /* Not UTF-8. */
    img = make_image("{\"w\xff\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, 0, &len);
    for (int i = 0; i < 8; i++) img[i] = (uint8_t)((len - 8) >> (8 * i));
    if (!expect_bad_image(__LINE__, "not-utf8", img, len, DSV4_ERR_JSON, NULL)) return;
    free(img);

    EXPECT_BAD("", 0, DSV4_ERR_JSON, NULL);
    EXPECT_BAD("{\"w\":", 0, DSV4_ERR_JSON, NULL);
    EXPECT_BAD("[1,2]", 0, DSV4_ERR_JSON, NULL);
    EXPECT_BAD("\"str\"", 0, DSV4_ERR_JSON, NULL);
    EXPECT_BAD("{} {}", 0, DSV4_ERR_JSON, NULL);
    /* A NUL inside the header (cJSON would stop there): only padding may follow the JSON. */
    static const uint8_t nul_img[12] = {4, 0, 0, 0, 0, 0, 0, 0, '{', '}', 0, ' '};
    img = malloc(sizeof nul_img);
    memcpy(img, nul_img, sizeof nul_img);
    len = sizeof nul_img;
    if (!expect_bad_image(__LINE__, "embedded-nul", img, len, DSV4_ERR_JSON, NULL)) return;
    free(img);
}

TEST(st_malformed_tensors) {
#define T(body) "{\"w\":{" body "}}"
    EXPECT_BAD("{\"w\":5}", 0, DSV4_ERR_JSON, "w");
    EXPECT_BAD("{\"w\":[]}", 0, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"shape\":[1],\"data_offsets\":[0,1]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,1]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"data_offsets\":[0,1]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":1,\"data_offsets\":[0,1]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]"), 2, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":{\"a\":0,\"b\":1}"), 1, DSV4_ERR_JSON, "w");
    /* unknown dtypes */
    EXPECT_BAD(T("\"dtype\":\"F7\",\"shape\":[1],\"data_offsets\":[0,1]"), 1, DSV4_ERR_DTYPE, "w");
    EXPECT_BAD(T("\"dtype\":\"f32\",\"shape\":[1],\"data_offsets\":[0,4]"), 4, DSV4_ERR_DTYPE, "w");
    /* shape entries */
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]"), 1, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[\"2\"],\"data_offsets\":[0,2]"), 2, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[null],\"data_offsets\":[0,2]"), 2, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,1]"), 1, DSV4_ERR_JSON,
               "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1e30],\"data_offsets\":[0,1]"), 1, DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]"), 0,
               DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"F64\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]"), 0,
               DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"F64\",\"shape\":[9007199254740992,1024],\"data_offsets\":[0,0]"), 0,
               DSV4_ERR_SHAPE, "w");
    /* bytes vs shape x dtype */
    EXPECT_BAD(T("\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,8]"), 16, DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,0]"), 4, DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,1]"), 2, DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]"), 2, DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"F6_E2M3\",\"shape\":[2],\"data_offsets\":[0,2]"), 2, DSV4_ERR_SHAPE, "w");
    EXPECT_BAD(T("\"dtype\":\"F4\",\"shape\":[4],\"data_offsets\":[0,4]"), 4, DSV4_ERR_SHAPE, "w");
    /* offsets */
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]"), 8, DSV4_ERR_RANGE, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[9,9]"), 8, DSV4_ERR_RANGE, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,4]"), 8, DSV4_ERR_RANGE, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1e300,1e300]"), 8, DSV4_ERR_RANGE, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,0]"), 8,
               DSV4_ERR_RANGE, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]"), 8, DSV4_ERR_JSON, "w");
    EXPECT_BAD(T("\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0.5,1.5]"), 8, DSV4_ERR_JSON, "w");
    /* overlaps: partial, containment, identical; the message names both tensors */
    EXPECT_BAD("{\"aa\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
               "\"bb\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
               12, DSV4_ERR_OVERLAP, "bb");
    EXPECT_BAD("{\"bb\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
               "\"aa\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
               "\"cc\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[16,20]}}",
               20, DSV4_ERR_OVERLAP, "aa");
    EXPECT_BAD("{\"aa\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
               "\"bb\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
               4, DSV4_ERR_OVERLAP, "aa");
    /* duplicate names */
    EXPECT_BAD("{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
               "\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
               2, DSV4_ERR_JSON, "w");
    /* metadata */
    EXPECT_BAD("{\"__metadata__\":{\"k\":1}}", 0, DSV4_ERR_JSON, "k");
    EXPECT_BAD("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, DSV4_ERR_JSON, "k");
    EXPECT_BAD("{\"__metadata__\":\"text\"}", 0, DSV4_ERR_JSON, "__metadata__");
    EXPECT_BAD("{\"__metadata__\":[]}", 0, DSV4_ERR_JSON, "__metadata__");
    EXPECT_BAD("{\"__metadata__\":{},\"__metadata__\":{}}", 0, DSV4_ERR_JSON, "__metadata__");
#undef T
}

/* Every proper prefix of a valid file is an error (never a crash or an OK). */
TEST(st_every_truncation_fails) {
    dsv4_st_writer *w = dsv4_st_writer_new();
    float a[3] = {1, 2, 3};
    uint8_t b[5] = {9, 8, 7, 6, 5};
    int64_t sa[1] = {3}, sb[2] = {5, 1};
    CHECK_OK(dsv4_st_writer_add(w, "alpha", DSV4_DT_F32, 1, sa, a, sizeof a));
    CHECK_OK(dsv4_st_writer_add(w, "beta", DSV4_DT_U8, 2, sb, b, sizeof b));
    CHECK_OK(dsv4_st_writer_set_metadata(w, "k", "v"));
    char path[512];
    snprintf(path, sizeof path, "%s/small.safetensors", test_tmpdir());
    CHECK_OK(dsv4_st_writer_write(w, path));
    dsv4_st_writer_free(w);
    size_t len;
    char *img = test_read_file(path, &len);
    CHECK(img && len > 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)img[i];
    for (size_t n = 0; n < len; n++) {
        char label[32], p2[600];
        snprintf(label, sizeof label, "prefix%zu", n);
        uint8_t *copy = malloc(n ? n : 1); /* exact-size copy so ASan sees any overread */
        memcpy(copy, img, n);
        dsv4_st_file *f = NULL;
        dsv4_status st = dsv4_st_open_memory(copy, n, label, &f);
        free(copy);
        CHECK_MSG(st != DSV4_OK && f == NULL, "prefix of %zu/%zu bytes opened", n, len);
        CHECK_MSG(strstr(dsv4_last_error(), label), "prefix %zu: message lacks label: %s", n, dsv4_last_error());
        dsv4_status want = n < 8 + hl ? DSV4_ERR_TRUNCATED : DSV4_ERR_RANGE; /* then the data is cut */
        CHECK_MSG(st == want, "prefix %zu: %s, want %s", n, dsv4_status_name(st), dsv4_status_name(want));
        snprintf(p2, sizeof p2, "%s/prefix%zu.safetensors", scratch(), n);
        test_write_file(p2, img, n);
        dsv4_status st2 = dsv4_st_open(p2, &f);
        CHECK_MSG(st2 == st, "prefix %zu: file gives %s, memory %s", n, dsv4_status_name(st2),
                  dsv4_status_name(st));
        CHECK(strstr(dsv4_last_error(), p2));
    }
    dsv4_st_file *f = NULL;
    CHECK_OK(dsv4_st_open_memory(img, len, "whole", &f));
    dsv4_st_close(f);
    free(img);
}

/* Random byte flips, insertions of digits and length tweaks around a valid file: each must
 * open or fail cleanly; opened files are fully valid (ASan checks the data touch). */
TEST(st_mutations_never_crash) {
    rt_tensor t[DSV4_DT_COUNT + 3];
    int n = make_tensors(t, 7);
    dsv4_st_writer *w = dsv4_st_writer_new();
    for (int i = 0; i < n; i++)
        CHECK_OK(dsv4_st_writer_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape, t[i].data, t[i].nbytes));
    char path[512];
    snprintf(path, sizeof path, "%s/m.safetensors", test_tmpdir());
    CHECK_OK(dsv4_st_writer_write(w, path));
    dsv4_st_writer_free(w);
    free_tensors(t, n);
    size_t len;
    char *orig = test_read_file(path, &len);
    CHECK(orig);
    uint64_t rng = 99;
    int opened = 0, failed = 0;
    static const char digits[] = "0123456789-.e[]{}\",:";
    for (int iter = 0; iter < 4000; iter++) {
        uint8_t *m = malloc(len);
        memcpy(m, orig, len);
        int flips = 1 + (int)(test_rand_u64(&rng) % 4);
        for (int k = 0; k < flips; k++) {
            size_t at = (size_t)(test_rand_u64(&rng) % len);
            if (at >= 8 && test_rand_u64(&rng) % 2) m[at] = (uint8_t)digits[test_rand_u64(&rng) % (sizeof digits - 1)];
            else m[at] ^= (uint8_t)(1u << (test_rand_u64(&rng) % 8));
        }
        size_t mlen = len - (size_t)(test_rand_u64(&rng) % 3 == 0 ? test_rand_u64(&rng) % 16 : 0);
        dsv4_st_file *f = NULL;
        dsv4_status st = dsv4_st_open_memory(m, mlen, "mut", &f);
        if (st == DSV4_OK) {
            unsigned sum = 0;
            for (int i = 0; i < dsv4_st_count(f); i++) {
                const dsv4_tensor_view *v = dsv4_st_tensor(f, i);
                CHECK(v->nbytes == (size_t)(dsv4_tensor_numel(v) * dsv4_dtype_bits(v->dtype) / 8));
                CHECK((const uint8_t *)v->data >= m && (const uint8_t *)v->data + v->nbytes <= m + mlen);
                for (size_t b = 0; b < v->nbytes; b++) sum += ((const uint8_t *)v->data)[b];
            }
            (void)sum;
            dsv4_st_close(f);
            opened++;
        } else {
            CHECK_MSG(f == NULL && strstr(dsv4_last_error(), "mut"), "%s: %s", dsv4_status_name(st),
                      dsv4_last_error());
            failed++;
        }
        free(m);
    }
    CHECK(opened > 0 && failed > 0);
    free(orig);
}

/* ---- writer errors ---- */

TEST(st_writer_rejects_bad_input) {
    dsv4_st_writer *w = dsv4_st_writer_new();
    CHECK(w);
    uint8_t buf[64] = {0};
    int64_t s2[2] = {2, 3}, s1[1] = {3}, neg[1] = {-1};
    CHECK_STATUS(dsv4_st_writer_add(w, "w1", DSV4_DT_F32, 2, s2, buf, 20), DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "'w1'"));
    CHECK_STATUS(dsv4_st_writer_add(w, "w2", DSV4_DT_F4, 1, s1, buf, 2), DSV4_ERR_SHAPE); /* 1.5 bytes */
    CHECK(strstr(dsv4_last_error(), "'w2'") && strstr(dsv4_last_error(), "whole bytes"));
    CHECK_STATUS(dsv4_st_writer_add(w, "w3", DSV4_DT_F6_E2M3, 1, s1, buf, 2), DSV4_ERR_SHAPE);
    CHECK_STATUS(dsv4_st_writer_add(w, "w4", DSV4_DT_U8, 1, neg, buf, 0), DSV4_ERR_SHAPE);
    CHECK_STATUS(dsv4_st_writer_add(w, "w5", DSV4_DT_COUNT, 1, s1, buf, 3), DSV4_ERR_DTYPE);
    CHECK_STATUS(dsv4_st_writer_add(w, "w6", DSV4_DT_U8, 9, s1, buf, 3), DSV4_ERR_SHAPE);
    CHECK_STATUS(dsv4_st_writer_add(w, "w7", DSV4_DT_U8, 1, s1, NULL, 3), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_st_writer_add(w, NULL, DSV4_DT_U8, 1, s1, buf, 3), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_st_writer_add(w, "__metadata__", DSV4_DT_U8, 1, s1, buf, 3), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_st_writer_add(w, "bad\xc3", DSV4_DT_U8, 1, s1, buf, 3), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_st_writer_set_metadata(w, "k", NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(dsv4_st_writer_bytes(w) == 0);
    CHECK_OK(dsv4_st_writer_add(w, "ok", DSV4_DT_F6_E3M2, 1, (int64_t[]){4}, buf, 3));
    CHECK_OK(dsv4_st_writer_add(w, "nodata", DSV4_DT_F32, 2, (int64_t[]){0, 7}, NULL, 0));
    CHECK_STATUS(dsv4_st_writer_add(w, "ok", DSV4_DT_U8, 1, s1, buf, 3), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dsv4_last_error(), "'ok'"));
    CHECK(dsv4_st_writer_bytes(w) == 3);
    char path[512];
    snprintf(path, sizeof path, "%s/no/such/dir/x.safetensors", test_tmpdir());
    CHECK_STATUS(dsv4_st_writer_write(w, path), DSV4_ERR_IO);
    CHECK(strstr(dsv4_last_error(), path));
    snprintf(path, sizeof path, "%s/file", test_tmpdir());
    CHECK(test_write_file(path, "x", 1) == 0);
    CHECK_STATUS(dsv4_st_writer_write_sharded(w, path, 100), DSV4_ERR_IO); /* a file, not a dir */
    CHECK(strstr(dsv4_last_error(), path));
    CHECK_STATUS(dsv4_st_writer_write_sharded(w, test_tmpdir(), 0), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_st_open(test_tmpdir(), &(dsv4_st_file *){NULL}), DSV4_ERR_IO);
    snprintf(path, sizeof path, "%s/missing.safetensors", test_tmpdir());
    CHECK_STATUS(dsv4_st_open(path, &(dsv4_st_file *){NULL}), DSV4_ERR_IO);
    CHECK(strstr(dsv4_last_error(), path));
    dsv4_st_writer_free(w);
    dsv4_st_writer_free(NULL);
}

/* ---- checkpoints ---- */

static int file_exists(const char *dir, const char *name) {
    char p[600];
    struct stat sb;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &sb) == 0;
}

TEST(st_sharded_roundtrip) {
    /* Sizes chosen so that a 100-byte limit gives shards {a,b}, {c}, {big}, {d,e,f}. */
    static const size_t sizes[] = {40, 60, 70, 300, 10, 0, 90};
    static const char *names[] = {"a", "b", "c", "big", "d", "e", "f"};
    enum { N = 7 };
    uint8_t *data[N];
    uint64_t rng = 5;
    dsv4_st_writer *w = dsv4_st_writer_new();
    for (int i = 0; i < N; i++) {
        data[i] = malloc(sizes[i] + 1);
        fill_random(data[i], sizes[i], &rng);
        int64_t shape[1] = {(int64_t)sizes[i]};
        CHECK_OK(dsv4_st_writer_add(w, names[i], DSV4_DT_U8, 1, shape, data[i], sizes[i]));
    }
    CHECK_OK(dsv4_st_writer_set_metadata(w, "format", "pt"));
    char dir[512];
    snprintf(dir, sizeof dir, "%s/ckpt", test_tmpdir());
    CHECK_OK(dsv4_st_writer_write_sharded(w, dir, 100));
    CHECK(file_exists(dir, "model.safetensors.index.json"));
    CHECK(file_exists(dir, "model-00001-of-00004.safetensors") && file_exists(dir, "model-00004-of-00004.safetensors"));
    CHECK(!file_exists(dir, "model-00005-of-00005.safetensors") && !file_exists(dir, "model.safetensors"));

    char ip[600];
    snprintf(ip, sizeof ip, "%s/model.safetensors.index.json", dir);
    char *itext = test_read_file(ip, NULL);
    cJSON *idx = cJSON_Parse(itext);
    CHECK(idx);
    CHECK(cJSON_GetObjectItem(cJSON_GetObjectItem(idx, "metadata"), "total_size")->valuedouble == 570);
    cJSON *wm = cJSON_GetObjectItem(idx, "weight_map");
    CHECK(cJSON_GetArraySize(wm) == N);
    CHECK(strcmp(cJSON_GetObjectItem(wm, "b")->valuestring, "model-00001-of-00004.safetensors") == 0);
    CHECK(strcmp(cJSON_GetObjectItem(wm, "c")->valuestring, "model-00002-of-00004.safetensors") == 0);
    CHECK(strcmp(cJSON_GetObjectItem(wm, "big")->valuestring, "model-00003-of-00004.safetensors") == 0);
    CHECK(strcmp(cJSON_GetObjectItem(wm, "f")->valuestring, "model-00004-of-00004.safetensors") == 0);
    cJSON_Delete(idx);
    free(itext);

    dsv4_checkpoint *c = NULL;
    CHECK_OK(dsv4_ckpt_open(dir, &c));
    CHECK(dsv4_ckpt_file_count(c) == 4 && dsv4_ckpt_count(c) == N);
    for (int i = 0; i < N; i++) {
        const dsv4_tensor_view *v = dsv4_ckpt_find(c, names[i]);
        CHECK_MSG(v && v->nbytes == sizes[i] && (sizes[i] == 0 || memcmp(v->data, data[i], sizes[i]) == 0),
                  "tensor %s", names[i]);
        CHECK(dsv4_ckpt_tensor(c, i) == v); /* file by file, header order: same as added here */
    }
    CHECK(strstr(dsv4_ckpt_find(c, "big")->file, "model-00003-of-00004.safetensors"));
    CHECK(dsv4_ckpt_find(c, "zz") == NULL && dsv4_ckpt_tensor(c, N) == NULL);
    dsv4_ckpt_close(c);

    /* One shard: model.safetensors and no index (a stale one is removed). */
    CHECK_OK(dsv4_st_writer_write_sharded(w, dir, 1000));
    CHECK(file_exists(dir, "model.safetensors") && !file_exists(dir, "model.safetensors.index.json"));
    char d2[600];
    snprintf(d2, sizeof d2, "%s/one", dir);
    CHECK_OK(dsv4_st_writer_write_sharded(w, d2, 1u << 20));
    CHECK_OK(dsv4_ckpt_open(d2, &c));
    CHECK(dsv4_ckpt_file_count(c) == 1 && dsv4_ckpt_count(c) == N);
    CHECK(memcmp(dsv4_ckpt_find(c, "d")->data, data[4], sizes[4]) == 0);
    dsv4_ckpt_close(c);
    dsv4_st_writer_free(w);
    for (int i = 0; i < N; i++) free(data[i]);
}

static void write_one(const char *dir, const char *file, const char *const *names, int n) {
    dsv4_st_writer *w = dsv4_st_writer_new();
    static const uint8_t bytes[4] = {1, 2, 3, 4};
    int64_t shape[1] = {4};
    for (int i = 0; i < n; i++) dsv4_st_writer_add(w, names[i], DSV4_DT_U8, 1, shape, bytes, 4);
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    dsv4_st_writer_write(w, p);
    dsv4_st_writer_free(w);
}

static void write_text(const char *dir, const char *file, const char *text) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    test_write_file(p, text, strlen(text));
}

TEST(st_checkpoint_without_index) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    dsv4_checkpoint *c = (dsv4_checkpoint *)1;
    CHECK_STATUS(dsv4_ckpt_open(dir, &c), DSV4_ERR_MISSING);
    CHECK(c == NULL && strstr(dsv4_last_error(), dir));
    write_one(dir, "b.safetensors", (const char *[]){"y", "z"}, 2);
    write_one(dir, "a.safetensors", (const char *[]){"x"}, 1);
    write_text(dir, "notes.txt", "ignored");
    CHECK_OK(dsv4_ckpt_open(dir, &c));
    CHECK(dsv4_ckpt_file_count(c) == 2 && dsv4_ckpt_count(c) == 3);
    CHECK(strcmp(dsv4_ckpt_tensor(c, 0)->name, "x") == 0 && strstr(dsv4_ckpt_tensor(c, 0)->file, "/a.safetensors"));
    CHECK(strcmp(dsv4_ckpt_tensor(c, 2)->name, "z") == 0);
    CHECK(dsv4_ckpt_find(c, "y") == dsv4_ckpt_tensor(c, 1));
    dsv4_ckpt_close(c);
    write_one(dir, "c.safetensors", (const char *[]){"q", "y"}, 2);
    CHECK_STATUS(dsv4_ckpt_open(dir, &c), DSV4_ERR_OVERLAP);
    CHECK(strstr(dsv4_last_error(), "'y'") && strstr(dsv4_last_error(), "b.safetensors") &&
          strstr(dsv4_last_error(), "c.safetensors"));
    write_text(dir, "c.safetensors", "garbage!garbage!");
    CHECK_STATUS(dsv4_ckpt_open(dir, &c), DSV4_ERR_HEADER);
    CHECK(strstr(dsv4_last_error(), "c.safetensors"));
    char p[600];
    snprintf(p, sizeof p, "%s/nonexistent", dir);
    CHECK_STATUS(dsv4_ckpt_open(p, &c), DSV4_ERR_MISSING);
    CHECK(strstr(dsv4_last_error(), p));
}

static int expect_ckpt(int line, const char *dir, const char *index, dsv4_status want, const char *n1,
                       const char *n2) {
    write_text(dir, "model.safetensors.index.json", index);
    dsv4_checkpoint *c = (dsv4_checkpoint *)1;
    dsv4_status st = dsv4_ckpt_open(dir, &c);
    const char *m = dsv4_last_error();
    if (st != want || c != NULL || !strstr(m, "model.safetensors.index.json") || !contains(m, n1) ||
        !contains(m, n2)) {
        test_fail_at(__FILE__, line, "index %s: got %s, want %s naming '%s', '%s'; message: %s", index,
                     dsv4_status_name(st), dsv4_status_name(want), n1 ? n1 : "-", n2 ? n2 : "-", m);
        if (st == DSV4_OK) dsv4_ckpt_close(c);
        return 0;
    }
    return 1;
}
#define EXPECT_CKPT(index, want, n1, n2) \
    do { if (!expect_ckpt(__LINE__, dir, index, want, n1, n2)) return; } while (0)

TEST(st_checkpoint_index_errors) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    write_one(dir, "s1.safetensors", (const char *[]){"a", "b"}, 2);
    write_one(dir, "s2.safetensors", (const char *[]){"c"}, 1);
    write_one(dir, "stray.safetensors", (const char *[]){"a"}, 1); /* not indexed: never opened */
    dsv4_checkpoint *c = NULL;
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\":{},\"weight_map\":{\"c\":\"s2.safetensors\",\"a\":\"s1.safetensors\","
               "\"b\":\"s1.safetensors\"}}");
    CHECK_OK(dsv4_ckpt_open(dir, &c));
    CHECK(dsv4_ckpt_file_count(c) == 2 && dsv4_ckpt_count(c) == 3);
    CHECK(strstr(dsv4_ckpt_find(c, "c")->file, "s2.safetensors") && strcmp(dsv4_ckpt_tensor(c, 0)->name, "a") == 0);
    dsv4_ckpt_close(c);

    EXPECT_CKPT("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"gone.safetensors\"}}",
                DSV4_ERR_MISSING, "gone.safetensors", NULL);
    EXPECT_CKPT("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s2.safetensors\",\"c\":\"s2.safetensors\"}}",
                DSV4_ERR_MISSING, "'b'", "s2.safetensors");
    EXPECT_CKPT("{\"weight_map\":{\"a\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}", DSV4_ERR_MISSING, "'b'",
                "s1.safetensors");
    EXPECT_CKPT("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\","
                "\"d\":\"s2.safetensors\"}}",
                DSV4_ERR_MISSING, "'d'", "s2.safetensors");
    EXPECT_CKPT("{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\","
                "\"a\":\"s1.safetensors\"}}",
                DSV4_ERR_JSON, "'a'", NULL);
    EXPECT_CKPT("{\"weight_map\":{\"a\":\"../s1.safetensors\"}}", DSV4_ERR_JSON, "'a'", NULL);
    EXPECT_CKPT("{\"weight_map\":{\"a\":\"/etc/passwd\"}}", DSV4_ERR_JSON, "'a'", NULL);
    EXPECT_CKPT("{\"weight_map\":{\"a\":5}}", DSV4_ERR_JSON, "'a'", NULL);
    EXPECT_CKPT("{\"weight_map\":[]}", DSV4_ERR_JSON, "weight_map", NULL);
    EXPECT_CKPT("{\"metadata\":{}}", DSV4_ERR_JSON, "weight_map", NULL);
    EXPECT_CKPT("[1]", DSV4_ERR_JSON, NULL, NULL);
    EXPECT_CKPT("{\"weight_map\":", DSV4_ERR_JSON, NULL, NULL);
    /* A broken shard is reported with its own path. */
    char p2[600];
    snprintf(p2, sizeof p2, "%s/s2.safetensors", dir);
    CHECK(test_write_file(p2, "\x10\0\0\0\0\0\0\0{\"c\":[]}        ", 24) == 0);
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"a\":\"s1.safetensors\",\"b\":\"s1.safetensors\",\"c\":\"s2.safetensors\"}}");
    CHECK_STATUS(dsv4_ckpt_open(dir, &c), DSV4_ERR_JSON);
    CHECK(strstr(dsv4_last_error(), "s2.safetensors") && strstr(dsv4_last_error(), "'c'"));
}

/* Real checkpoints have ~70k tensors: opening and looking every name up must be quick. */
TEST(st_many_tensors_find_fast) {
    enum { N = 70000 };
    static uint8_t bytes[N];
    dsv4_st_writer *w = dsv4_st_writer_new();
    char name[64];
    int64_t one[1] = {1};
    for (int i = 0; i < N; i++) {
        bytes[i] = (uint8_t)(i * 7);
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.w%d.weight", i / 1000, i % 1000 / 3, i % 3);
        CHECK_OK(dsv4_st_writer_add(w, name, DSV4_DT_U8, 1, one, &bytes[i], 1));
    }
    char dir[512];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    CHECK_OK(dsv4_st_writer_write_sharded(w, dir, N / 3));
    dsv4_st_writer_free(w);
    clock_t t0 = clock();
    dsv4_checkpoint *c = NULL;
    CHECK_OK(dsv4_ckpt_open(dir, &c));
    CHECK(dsv4_ckpt_file_count(c) == 3 + (N % (N / 3) != 0) && dsv4_ckpt_count(c) == N);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof name, "model.layers.%d.mlp.experts.%d.w%d.weight", i / 1000, i % 1000 / 3, i % 3);
        const dsv4_tensor_view *v = dsv4_ckpt_find(c, name);
        CHECK_MSG(v && *(const uint8_t *)v->data == (uint8_t)(i * 7), "tensor %s", name);
    }
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    dsv4_ckpt_close(c);
    CHECK_MSG(secs < 5.0, "open + %d lookups took %.2fs", N, secs);
}

/* ---- interop with Python's safetensors ---- */

static void hex_append(FILE *fp, const uint8_t *p, size_t n) {
    for (size_t i = 0; i < n; i++) fprintf(fp, "%02x", p[i]);
}

TEST(st_interop_dsv4_to_python) {
    if (!test_python_has("numpy,safetensors")) SKIP("python3 lacks numpy/safetensors");
    char dir[512];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    for (int variant = 0; variant < 2; variant++) {
        /* variant 0: every dtype (checked through the reference deserializer's raw bytes);
         * variant 1: numpy dtypes only (also loaded as numpy arrays and compared by value). */
        rt_tensor t[DSV4_DT_COUNT + 3];
        int n = make_tensors(t, 11 + (uint64_t)variant);
        dsv4_st_writer *w = dsv4_st_writer_new();
        char path[600], expect[600];
        snprintf(path, sizeof path, "%s/dsv4_%d.safetensors", dir, variant);
        snprintf(expect, sizeof expect, "%s/dsv4_%d.json", dir, variant);
        FILE *fp = fopen(expect, "w");
        CHECK(fp);
        fprintf(fp, "{\"metadata\": {\"format\": \"pt\", \"who\": \"dsv4 \\u00e9\"}, \"tensors\": {");
        int first = 1;
        static const float vals[4] = {1.5f, -2.25f, 3e10f, 0.0f};
        static const int64_t vshape[1] = {4};
        for (int i = 0; i < n; i++) {
            const char *dn = dsv4_dtype_name(t[i].dt);
            int numpy_ok = strchr(dn, '8') == NULL || !strcmp(dn, "U8") || !strcmp(dn, "I8");
            numpy_ok = numpy_ok && strcmp(dn, "BF16") && strcmp(dn, "F4") && strncmp(dn, "F6", 2);
            if (variant == 1 && !numpy_ok) continue;
            CHECK_OK(dsv4_st_writer_add(w, t[i].name, t[i].dt, t[i].ndim, t[i].shape, t[i].data, t[i].nbytes));
            fprintf(fp, "%s\"%s\": {\"dtype\": \"%s\", \"shape\": [", first ? "" : ", ",
                    strcmp(t[i].name, "cube \"q\"\\é") ? t[i].name : "cube \\\"q\\\"\\\\é", dn);
            for (int d = 0; d < t[i].ndim; d++) fprintf(fp, "%s%lld", d ? ", " : "", (long long)t[i].shape[d]);
            fprintf(fp, "], \"hex\": \"");
            hex_append(fp, t[i].data, t[i].nbytes);
            fprintf(fp, "\"}");
            first = 0;
        }
        CHECK_OK(dsv4_st_writer_add(w, "values", DSV4_DT_F32, 1, vshape, vals, sizeof vals));
        fprintf(fp, ", \"values\": {\"dtype\": \"F32\", \"shape\": [4], \"hex\": \"");
        hex_append(fp, (const uint8_t *)vals, sizeof vals);
        fprintf(fp, "\", \"values\": [1.5, -2.25, 30000001024.0, 0.0]}}}\n");
        fclose(fp);
        CHECK_OK(dsv4_st_writer_set_metadata(w, "format", "pt"));
        CHECK_OK(dsv4_st_writer_set_metadata(w, "who", "dsv4 é"));
        CHECK_OK(dsv4_st_writer_write(w, path));
        dsv4_st_writer_free(w);
        free_tensors(t, n);
        int rc = test_system("python3 tests/py/st_interop.py check '%s' '%s'", path, expect);
        CHECK_MSG(rc == 0, "variant %d: st_interop.py check exited %d", variant, rc);
    }
}

TEST(st_interop_python_to_dsv4) {
    if (!test_python_has("numpy,safetensors")) SKIP("python3 lacks numpy/safetensors");
    char dir[512], path[600], expect[600];
    snprintf(dir, sizeof dir, "%s", test_tmpdir());
    snprintf(path, sizeof path, "%s/py.safetensors", dir);
    snprintf(expect, sizeof expect, "%s/py.json", dir);
    CHECK(test_system("python3 tests/py/st_interop.py write '%s' '%s'", path, expect) == 0);
    char *text = test_read_file(expect, NULL);
    cJSON *want = cJSON_Parse(text);
    free(text);
    CHECK(want);
    dsv4_st_file *f = NULL;
    dsv4_status st = dsv4_st_open(path, &f);
    if (st != DSV4_OK) cJSON_Delete(want);
    CHECK_OK(st);
    const cJSON *tensors = cJSON_GetObjectItem(want, "tensors");
    int n = cJSON_GetArraySize(tensors), bad = 0;
    char why[256] = "";
    for (const cJSON *e = tensors->child; e && !bad; e = e->next) {
        const dsv4_tensor_view *v = dsv4_st_find(f, e->string);
        const char *hex = cJSON_GetObjectItem(e, "hex")->valuestring;
        const cJSON *shape = cJSON_GetObjectItem(e, "shape");
        if (!v || strcmp(dsv4_dtype_name(v->dtype), cJSON_GetObjectItem(e, "dtype")->valuestring) ||
            v->ndim != cJSON_GetArraySize(shape) || v->nbytes * 2 != strlen(hex)) {
            bad = 1;
        } else {
            for (int d = 0; d < v->ndim; d++)
                if (v->shape[d] != (int64_t)cJSON_GetArrayItem(shape, d)->valuedouble) bad = 1;
            for (size_t b = 0; b < v->nbytes; b++) {
                unsigned x;
                sscanf(hex + 2 * b, "%2x", &x);
                if (((const uint8_t *)v->data)[b] != x) bad = 1;
            }
        }
        if (bad) snprintf(why, sizeof why, "tensor '%s' differs", e->string);
    }
    int count = dsv4_st_count(f);
    const char *fmt = dsv4_st_metadata(f, "format"), *note = dsv4_st_metadata(f, "note");
    int meta_ok = fmt && note && strcmp(fmt, "np") == 0 &&
                  strcmp(note, cJSON_GetObjectItem(cJSON_GetObjectItem(want, "metadata"), "note")->valuestring) == 0;
    dsv4_st_close(f);
    cJSON_Delete(want);
    CHECK_MSG(!bad, "%s", why);
    CHECK_MSG(count == n && n >= 16, "%d tensors, expected %d", count, n);
    CHECK(meta_ok);
}
