#include "engine/sampler.h"

#include <math.h>
#include <stdlib.h>

#include "base/status.h"

void dsv4_sampler_init(dsv4_sampler *s, float temperature, float top_p, uint64_t seed) {
    s->temperature = temperature;
    s->top_p = top_p;
    s->state = seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull;
}

static double next_uniform(dsv4_sampler *s) {
    uint64_t z = (s->state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double)(z >> 11) / 9007199254740992.0; /* [0, 1) */
}

typedef struct { double p; int32_t id; } prob_id;

/* descending probability, ascending id on ties: a deterministic order */
static int by_prob_desc(const void *a, const void *b) {
    const prob_id *x = a, *y = b;
    if (x->p != y->p) return x->p < y->p ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id);
}

dsv4_status dsv4_sample(dsv4_sampler *s, const float *logits, int vocab, int32_t *token) {
    if (!s || !logits || vocab < 1 || !token) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "sample: bad arguments");
    if (!(s->temperature >= 0.0f) || !(s->top_p > 0.0f && s->top_p <= 1.0f))
        return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "sample: temperature %g must be >= 0 and top_p %g in (0, 1]",
                         s->temperature, s->top_p);
    int best = 0;
    for (int i = 0; i < vocab; i++) {
        if (isnan(logits[i])) return dsv4_fail(DSV4_ERR_NONFINITE, "sample: logit %d is NaN", i);
        if (logits[i] > logits[best]) best = i;
    }
    if (s->temperature == 0.0f) {
        *token = best;
        return DSV4_OK;
    }
    prob_id *pi = malloc(sizeof *pi * (size_t)vocab);
    if (!pi) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "sample: out of memory");
    double sum = 0.0;
    for (int i = 0; i < vocab; i++) {
        pi[i].id = i;
        pi[i].p = exp(((double)logits[i] - logits[best]) / s->temperature);
        sum += pi[i].p;
    }
    qsort(pi, (size_t)vocab, sizeof *pi, by_prob_desc);
    int keep = 0;
    double kept = 0.0;
    while (keep < vocab && (keep == 0 || kept < s->top_p * sum)) kept += pi[keep++].p;
    double r = next_uniform(s) * kept, acc = 0.0;
    *token = pi[keep - 1].id;
    for (int i = 0; i < keep; i++) {
        acc += pi[i].p;
        if (r < acc) { *token = pi[i].id; break; }
    }
    free(pi);
    return DSV4_OK;
}
