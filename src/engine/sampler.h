/* Token sampling from logits: greedy, temperature and nucleus (top-p), seeded. */
#ifndef DSV4_ENGINE_SAMPLER_H
#define DSV4_ENGINE_SAMPLER_H

#include <stdint.h>

#include "dsv4.h"

typedef struct dsv4_sampler {
    float temperature; /* 0: greedy (argmax, lowest id on ties) */
    float top_p;       /* keep the smallest set of tokens whose probability reaches top_p (1: all) */
    uint64_t state;    /* RNG state (splitmix64), seeded by dsv4_sampler_init */
} dsv4_sampler;

void dsv4_sampler_init(dsv4_sampler *s, float temperature, float top_p, uint64_t seed);
/* Picks a token from logits [vocab]. DSV4_ERR_NONFINITE if a logit is NaN;
 * DSV4_ERR_INVALID_ARGUMENT for a bad temperature/top_p. */
dsv4_status dsv4_sample(dsv4_sampler *s, const float *logits, int vocab, int32_t *token);

#endif
