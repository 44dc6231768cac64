#include "fixtures.h"

#include <stdio.h>

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
