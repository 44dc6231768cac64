/* The CPU "device": what the reference backend runs on. Also the build's CUDA flag. */
#include <unistd.h>

#include "cpu/device.h"

int dsv4_has_cuda(void) {
#if defined(DSV4_HAVE_CUDA)
    return 1;
#else
    return 0;
#endif
}

int dsv4_cpu_thread_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}
