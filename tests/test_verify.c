/* dsv4 verify: per-layer agreement with the W4A16 reference. */
#include <math.h>

#include "cpu/ops.h"
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
    dsv4_session_options o16, o4;
    dsv4_session_options_default(&o16);
    dsv4_session_options_default(&o4);
    o4.numerics = DSV4_W4A4;
    dsv4_status a = dsv4_verify(m, &o16, ids, 20, same, 8, &n1);
    dsv4_status b = dsv4_verify(m, &o4, ids, 20, w4a4, 8, &n2);
    dsv4_status c = dsv4_verify(m, &o4, ids, 20, w4a4, 4, &n2); /* too few rows for 4 layers + logits */
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

/* The FP8 KV cache's round trip: exact on values it can hold, within e4m3's half step
 * otherwise, rope dims in BF16; in the model a small, visible change. */
TEST(kv_fp8_roundtrip_and_its_effect_on_the_model) {
    enum { DIM = 80, ROPE = 16 };
    float row[2 * DIM], orig[2 * DIM];
    uint64_t rng = 3;
    for (int i = 0; i < 2 * DIM; i++) orig[i] = row[i] = test_rand_normal(&rng) * (i < DIM ? 3.0f : 0.01f);
    CHECK_OK(dsv4_cpu_kv_fp8_roundtrip(row, 2, DIM, ROPE));
    for (int r = 0; r < 2; r++)
        for (int i = 0; i < DIM; i++) {
            float x = orig[r * DIM + i], y = row[r * DIM + i];
            if (i >= DIM - ROPE) {
                CHECK(y == dsv4_bf16_round(x));
                continue;
            }
            /* the block's scale, computed here from its definition: the smallest power of two
             * with amax / scale <= 448 */
            int b0 = i / 64 * 64, b1 = b0 + 64 < DIM - ROPE ? b0 + 64 : DIM - ROPE;
            double amax = 0;
            for (int k = b0; k < b1; k++) amax = fmax(amax, fabs(orig[r * DIM + k]));
            double scale = exp2(ceil(log2(amax / 448.0)));
            float unit = (float)(y / scale);
            /* y is an e4m3 value times the scale, and the nearest one to x (3 mantissa bits) */
            CHECK_MSG(dsv4_e4m3_decode(dsv4_e4m3_encode(unit)) == unit, "row %d dim %d: %g not on the grid", r, i, y);
            CHECK_MSG(fabs(y - x) <= fabs(x) / 16.0 + scale * 0x1p-10, "row %d dim %d: %g -> %g", r, i, x, y);
        }
    float again[2 * DIM];
    memcpy(again, row, sizeof row);
    CHECK_OK(dsv4_cpu_kv_fp8_roundtrip(again, 2, DIM, ROPE));
    CHECK_MSG(!memcmp(again, row, sizeof row), "the round trip is not idempotent");
    float bad[DIM] = {0};
    bad[3] = NAN;
    CHECK_STATUS(dsv4_cpu_kv_fp8_roundtrip(bad, 1, DIM, ROPE), DSV4_ERR_NONFINITE);

    dsv4_model *m;
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), &m));
    int32_t ids[40];
    for (int i = 0; i < 40; i++) ids[i] = (int32_t)((i * 53 + 7) % 512);
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.kv_fp8 = 1;
    dsv4_verify_row rows[8];
    int n = 0;
    dsv4_status st = dsv4_verify(m, &o, ids, 40, rows, 8, &n);
    dsv4_model_close(m);
    CHECK_OK(st);
    printf("     FP8 KV vs fp32 KV: layer cosines");
    for (int i = 0; i < n; i++) printf(" %.6f", rows[i].cosine_min);
    printf("\n");
    CHECK(rows[0].cosine_min < 1.0);
    /* a random tiny model amplifies small errors (W4A4 gives 0.95 here too): a sanity bound */
    for (int i = 0; i < n; i++) CHECK_MSG(rows[i].cosine_min > 0.9, "row %d cosine %g", i, rows[i].cosine_min);
}
