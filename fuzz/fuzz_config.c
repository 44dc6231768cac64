/* libFuzzer: arbitrary bytes as config.json and as hf_quant_config.json. Beyond "no crash,
 * no leak", a config that parses must survive to_json -> parse unchanged. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/config.h"

/* Same struct bytes (parse zeroes it first) and the same exclude patterns. */
static int same(const dsv4_config *a, const dsv4_config *b) {
    dsv4_config x = *a, y = *b;
    x.quant.exclude = y.quant.exclude = NULL;
    if (memcmp(&x, &y, sizeof x) != 0) return 0;
    for (int i = 0; i < a->quant.n_exclude; i++)
        if (strcmp(a->quant.exclude[i], b->quant.exclude[i]) != 0) return 0;
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *text = (const char *)data;
    dsv4_config cfg, again;
    if (dsv4_config_parse(text, size, "fuzz", &cfg) == DSV4_OK) {
        char *json = dsv4_config_to_json(&cfg);
        if (!json) abort();
        if (dsv4_config_parse(json, strlen(json), "fuzz-rt", &again) != DSV4_OK) {
            fprintf(stderr, "round trip failed: %s\n%s\n", dsv4_last_error(), json);
            abort();
        }
        if (!same(&cfg, &again)) {
            fprintf(stderr, "round trip changed the config\n%s\n", json);
            abort();
        }
        free(json);
        dsv4_config_free(&again);
        (void)dsv4_config_excluded(&cfg, "layers.0.attn.wq_a");
        for (int l = -1; l <= cfg.num_hidden_layers; l++) (void)dsv4_config_compress_rate(&cfg, l);
        /* Replacing the quant block of a valid config must leave it valid either way. */
        (void)dsv4_config_parse_hf_quant(text, size, "fuzz-hq", &cfg);
        if (dsv4_config_validate(&cfg, "fuzz") != DSV4_OK) abort();
        dsv4_config_free(&cfg);
    }
    dsv4_config z;
    memset(&z, 0, sizeof z);
    if (dsv4_config_parse_hf_quant(text, size, "fuzz-hq", &z) == DSV4_OK) {
        if (dsv4_config_validate_quant(&z.quant, "fuzz-hq") != DSV4_OK) abort();
        (void)dsv4_config_excluded(&z, "model.layers.1.self_attn.q_a_proj");
        dsv4_config_free(&z);
    }
    return 0;
}
