/* Shared test fixtures: tiny checkpoints made once per run. */
#ifndef DSV4_TEST_FIXTURES_H
#define DSV4_TEST_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"

/* Directory of a tiny checkpoint of `scheme` made with `seed` (seed % 4 distinguishes the
 * cache slot); made on first use, NULL (message printed) if make-tiny fails. */
const char *fixture_tiny_dir(dsv4_tiny_scheme scheme, uint64_t seed);

/* Cosine similarity of two float vectors, accumulated in double. */
double fixture_cosine(const float *a, const float *b, size_t n);

/* A copy of checkpoint `src` in `dst` (one model.safetensors + config.json) with one change. */
typedef struct mutation {
    const char *drop;         /* tensor to leave out */
    const char *corrupt;      /* tensor whose first bytes are overwritten */
    const uint8_t *bytes;     /* ... with these */
    size_t n_bytes;
    const char *duplicate_as; /* add `corrupt`'s data a second time under this name */
    const char *config_from, *config_to; /* textual edit of config.json */
} mutation;
dsv4_status fixture_write_mutated(const char *src, const char *dst, const mutation *mu);

#endif
