/* Rotary position embedding, interleaved pairs on the trailing rope_dim of a vector
 * (spec model.md "Attention", dsv4-reference.md §5.1). Frequencies follow HF's
 * _compute_default_rope_parameters / _compute_yarn_parameters (truncate = true,
 * attention_factor forced to 1 by DeepseekV4Config, so cos/sin are not scaled). */
#include <math.h>

#include "base/status.h"
#include "cpu/ops.h"

/* YaRN: the pair index at which a wavelength completes `rotations` turns within the
 * original context (HF find_correction_dim). */
static double yarn_correction_dim(double rotations, int dim, double base, double orig_max) {
    return (dim * log(orig_max / (rotations * 2.0 * M_PI))) / (2.0 * log(base));
}

dsv4_status dsv4_cpu_rope_inv_freq(const dsv4_cpu_rope_cfg *cfg, float *inv_freq) {
    if (!cfg || !inv_freq) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rope_inv_freq: NULL argument");
    int R = cfg->rope_dim;
    if (R <= 0 || R % 2 || !(cfg->theta > 1.0))
        return dsv4_fail(DSV4_ERR_SHAPE, "rope_inv_freq: bad rope_dim=%d or theta=%g", R,
                         cfg->theta);
    int half = R / 2;
    int yarn = cfg->yarn_factor > 1.0;
    float low = 0.0f, high = 0.0f;
    if (yarn) {
        if (!(cfg->yarn_orig_max > 0.0) || !(cfg->beta_fast > 0.0) || !(cfg->beta_slow > 0.0))
            return dsv4_fail(DSV4_ERR_CONFIG, "rope_inv_freq: bad YaRN parameters");
        double lo = floor(yarn_correction_dim(cfg->beta_fast, R, cfg->theta, cfg->yarn_orig_max));
        double hi = ceil(yarn_correction_dim(cfg->beta_slow, R, cfg->theta, cfg->yarn_orig_max));
        if (lo < 0) lo = 0;
        if (hi > R - 1) hi = R - 1;
        low = (float)lo;
        high = (float)hi;
        if (low == high) high += 0.001f; /* HF's guard against a zero-width ramp */
    }
    for (int i = 0; i < half; i++) {
        /* θ_i = theta^(−2i/R): the exponent is an fp32 value in HF (arange(0,R,2).float()/R) */
        float expo = (float)(2 * i) / (float)R;
        float pos_freq = (float)pow(cfg->theta, (double)expo);
        float extrap = 1.0f / pos_freq;
        if (!yarn) {
            inv_freq[i] = extrap;
            continue;
        }
        float interp = 1.0f / ((float)cfg->yarn_factor * pos_freq);
        float ramp = ((float)i - low) / (high - low);
        ramp = ramp < 0.0f ? 0.0f : ramp > 1.0f ? 1.0f : ramp;
        float extrap_factor = 1.0f - ramp; /* 1 for fast (short-wavelength) pairs: unscaled */
        inv_freq[i] = interp * (1.0f - extrap_factor) + extrap * extrap_factor;
    }
    return DSV4_OK;
}

dsv4_status dsv4_cpu_rope(float *x, int T, int n_vec, int width, int rope_dim, const int *pos,
                          const float *inv_freq, int inverse) {
    if (!x || !pos || !inv_freq) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "rope: NULL argument");
    if (T < 0 || n_vec < 0 || rope_dim <= 0 || rope_dim % 2 || width < rope_dim)
        return dsv4_fail(DSV4_ERR_SHAPE, "rope: bad sizes T=%d n_vec=%d width=%d rope_dim=%d", T,
                         n_vec, width, rope_dim);
    int half = rope_dim / 2;
    for (int t = 0; t < T; t++) {
        for (int i = 0; i < half; i++) {
            /* angle in fp32 as HF does (inv_freq @ position_ids in float) */
            float ang = (float)pos[t] * inv_freq[i];
            float c = (float)cos((double)ang), s = (float)sin((double)ang);
            if (inverse) s = -s;
            for (int v = 0; v < n_vec; v++) {
                float *r = x + ((size_t)t * n_vec + v) * width + (width - rope_dim) + 2 * i;
                float a = r[0], b = r[1];
                r[0] = a * c - b * s;
                r[1] = b * c + a * s;
            }
        }
    }
    return DSV4_OK;
}
