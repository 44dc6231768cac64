#include <string.h>

#include "base/status.h"
#include "cpu/device.h"
#include "dsv4.h"
#include "test.h"
#if DSV4_HAVE_CUDA
#include "cuda/device.h"
#endif

TEST(status_names_are_distinct_and_complete) {
    for (int i = 0; i < DSV4_STATUS_COUNT; i++) {
        const char *n = dsv4_status_name((dsv4_status)i);
        CHECK_MSG(n && strncmp(n, "DSV4_", 5) == 0, "status %d has no name", i);
        for (int j = 0; j < i; j++) CHECK(strcmp(n, dsv4_status_name((dsv4_status)j)) != 0);
    }
    CHECK(strcmp(dsv4_status_name((dsv4_status)999), "DSV4_ERR_UNKNOWN") == 0);
}

TEST(last_error_records_message_and_context) {
    dsv4_clear_error();
    CHECK(dsv4_last_error()[0] == '\0');
    CHECK(dsv4_fail(DSV4_ERR_SHAPE, "tensor '%s' is %d wide", "w", 3) == DSV4_ERR_SHAPE);
    CHECK(strcmp(dsv4_last_error(), "tensor 'w' is 3 wide") == 0);
    CHECK(dsv4_fail_context(DSV4_ERR_SHAPE, "layer %d", 7) == DSV4_ERR_SHAPE);
    CHECK(strcmp(dsv4_last_error(), "layer 7: tensor 'w' is 3 wide") == 0);
}

TEST(version_matches_macros) {
    char want[32];
    snprintf(want, sizeof want, "%d.%d.%d", DSV4_VERSION_MAJOR, DSV4_VERSION_MINOR, DSV4_VERSION_PATCH);
    CHECK(strcmp(dsv4_version(), want) == 0);
    CHECK(dsv4_cpu_thread_count() >= 1);
}

TEST(gpu_device_query) {
#if DSV4_HAVE_CUDA
    int n = -1;
    CHECK_OK(dsv4_cuda_device_count(&n));
    if (n == 0) SKIP("no GPU");
    dsv4_device_info info;
    CHECK_OK(dsv4_cuda_device_info(0, &info));
    CHECK(info.sm_count > 0 && info.total_mem > ((size_t)1 << 30));
    printf("     GPU 0: %s, sm_%d%d, %d SMs, %.1f GiB\n", info.name, info.cc_major, info.cc_minor,
           info.sm_count, info.total_mem / 1073741824.0);
#else
    SKIP("built without CUDA");
#endif
}
