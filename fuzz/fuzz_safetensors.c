/* libFuzzer target: any byte string handed to the safetensors reader must either be
 * rejected with a status or yield tensors whose every byte lies inside the input. */
#include <stddef.h>
#include <stdint.h>

#include "format/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dsv4_st_file *f = NULL;
    if (dsv4_st_open_memory(data, size, "fuzz", &f) != DSV4_OK) return 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < dsv4_st_count(f); i++) {
        const dsv4_tensor_view *t = dsv4_st_tensor(f, i);
        const uint8_t *p = t->data;
        /* Out-of-range views would trip ASan here (the input buffer is exactly `size`). */
        if (p < data || p + t->nbytes > data + size) __builtin_trap();
        if ((uint64_t)dsv4_tensor_numel(t) * (uint64_t)dsv4_dtype_bits(t->dtype) != 8 * (uint64_t)t->nbytes)
            __builtin_trap();
        if (dsv4_st_find(f, t->name) != t) __builtin_trap();
        for (size_t b = 0; b < t->nbytes; b++) sink ^= p[b];
    }
    (void)dsv4_st_metadata(f, "format");
    dsv4_st_close(f);
    return 0;
}
