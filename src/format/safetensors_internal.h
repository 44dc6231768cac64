/* Helpers shared by safetensors.c (reader, checkpoints) and safetensors_write.c.
 * Not part of the module's contract. */
#ifndef DSV4_FORMAT_SAFETENSORS_INTERNAL_H
#define DSV4_FORMAT_SAFETENSORS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* 1 if s[0..n) is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF):
 * the format requires a UTF-8 header and Python's reader rejects anything else. */
int dsv4_st_utf8_valid(const char *s, size_t n);

/* An open-addressing name -> index table. It stores only indices; the caller's `key`
 * callback maps an index back to its name, so the names are never copied. */
typedef const char *(*dsv4_st_key_fn)(const void *ctx, int32_t index);
typedef struct dsv4_st_names {
    int32_t *slots; /* -1 = empty */
    size_t mask;    /* capacity - 1, capacity a power of two >= 2 x entries */
    dsv4_st_key_fn key;
    const void *ctx;
} dsv4_st_names;

/* Sized for up to `max_entries`; returns 0 on OOM. */
int dsv4_st_names_init(dsv4_st_names *t, size_t max_entries, dsv4_st_key_fn key, const void *ctx);
void dsv4_st_names_free(dsv4_st_names *t);
/* Index of `name`, or -1. */
int32_t dsv4_st_names_find(const dsv4_st_names *t, const char *name);
/* Inserts `index` (whose key() is its name); returns -1 if inserted, else the index
 * already holding that name. The table must have been sized for every insert. */
int32_t dsv4_st_names_insert(dsv4_st_names *t, int32_t index);

#endif
