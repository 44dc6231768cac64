/* Shared test fixtures: tiny checkpoints made once per run. */
#ifndef DSV4_TEST_FIXTURES_H
#define DSV4_TEST_FIXTURES_H

#include <stdint.h>

#include "dsv4.h"

/* Directory of a tiny checkpoint of `scheme` made with `seed` (seed % 4 distinguishes the
 * cache slot); made on first use, NULL (message printed) if make-tiny fails. */
const char *fixture_tiny_dir(dsv4_tiny_scheme scheme, uint64_t seed);

#endif
