/* dsv4 verify: per-layer agreement with the W4A16 reference. */
#include "fixtures.h"
#include "model/model.h"
#include "test.h"

TEST(verify_reference_against_itself_is_exact_and_w4a4_is_close) {
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), &m));
    int32_t ids[20];
    for (int i = 0; i < 20; i++) ids[i] = (int32_t)((i * 37 + 11) % 512);
    dsv4_verify_row same[8], w4a4[8];
    int n1 = 0, n2 = 0;
    dsv4_status a = dsv4_verify(m, DSV4_W4A16, ids, 20, same, 8, &n1);
    dsv4_status b = dsv4_verify(m, DSV4_W4A4, ids, 20, w4a4, 8, &n2);
    dsv4_status c = dsv4_verify(m, DSV4_W4A4, ids, 20, w4a4, 4, &n2); /* too few rows for 4 layers + logits */
    dsv4_model_close(m);
    CHECK_OK(a);
    CHECK_OK(b);
    CHECK_STATUS(c, DSV4_ERR_INVALID_ARGUMENT);
    CHECK(n1 == 5 && same[4].layer == -1 && same[2].layer == 2);
    for (int i = 0; i < n1; i++) CHECK_MSG(same[i].cosine_min == 1.0 && same[i].rel_err_max == 0.0, "row %d", i);
    int any_below_one = 0;
    for (int i = 0; i < n1; i++) {
        CHECK_MSG(w4a4[i].cosine_min > 0.8 && w4a4[i].cosine_min <= 1.0, "row %d cosine %g", i, w4a4[i].cosine_min);
        any_below_one |= w4a4[i].cosine_min < 0.9999;
    }
    CHECK_MSG(any_below_one, "W4A4 agrees with W4A16 to 1e-4 everywhere: were activations quantized?");
}
