/* The CPU forward pass: chunked prefill and decode agree with one-shot prefill, schemes
 * holding the same values give the same logits, batches equal single runs, bad input fails
 * cleanly. (Agreement with HF transformers: tests/test_golden.c and tests/oracle/.) */
#include <math.h>

#include "base/status.h"
#include "fixtures.h"
#include "format/safetensors.h"
#include "model/model.h"
#include "test.h"

#define N_IDS 40

static void make_ids(int32_t *ids, int n, uint64_t seed, int vocab) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(test_rand_u64(&seed) % (uint64_t)vocab);
}

/* logits [n, V] for `ids` run as chunks of the given sizes (summing to n), numerics mode. */
static dsv4_status run_chunks(const char *dir, dsv4_numerics mode, const int32_t *ids, const int *chunks,
                              int n_chunks, float *logits, int *vocab) {
    dsv4_model *m;
    DSV4_TRY(dsv4_model_open(dir, &m));
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.numerics = mode;
    o.max_seq_len = 256;
    dsv4_session *s;
    dsv4_status st = dsv4_session_create(m, &o, &s);
    int V = dsv4_model_vocab_size(m), done = 0;
    for (int c = 0; st == DSV4_OK && c < n_chunks; c++) {
        st = dsv4_session_forward(s, 0, ids + done, chunks[c], logits + (size_t)done * V);
        done += chunks[c];
    }
    if (vocab) *vocab = V;
    dsv4_session_free(s);
    dsv4_model_close(m);
    return st;
}


TEST(forward_chunked_prefill_and_decode_equal_one_shot) {
    const char *dir = fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1);
    CHECK(dir);
    int32_t ids[N_IDS];
    make_ids(ids, N_IDS, 17, 512);
    static float one[N_IDS * 512], chunked[N_IDS * 512], decoded[N_IDS * 512];
    int V = 0;
    const int whole[] = {N_IDS}, three[] = {7, 13, N_IDS - 20};
    int singles[N_IDS];
    for (int i = 0; i < N_IDS; i++) singles[i] = 1;
    const int prefill_then_decode[] = {17, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};
    CHECK_OK(run_chunks(dir, DSV4_W4A16, ids, whole, 1, one, &V));
    CHECK(V == 512);
    CHECK_OK(run_chunks(dir, DSV4_W4A16, ids, three, 3, chunked, NULL));
    /* each output is computed by the same ops in the same order whatever T is: bitwise equal */
    for (int i = 0; i < N_IDS * V; i++)
        CHECK_MSG(one[i] == chunked[i], "3 chunks: logit %d (position %d) %g vs %g", i, i / V, chunked[i], one[i]);
    CHECK_OK(run_chunks(dir, DSV4_W4A16, ids, prefill_then_decode, 24, decoded, NULL));
    for (int i = 0; i < N_IDS * V; i++)
        CHECK_MSG(one[i] == decoded[i], "prefill+decode: logit %d (position %d) %g vs %g", i, i / V, decoded[i], one[i]);
    CHECK_OK(run_chunks(dir, DSV4_W4A16, ids, singles, N_IDS, decoded, NULL));
    CHECK(!memcmp(one, decoded, sizeof one));
    /* the logits are not degenerate: positions differ and values spread */
    double spread = 0;
    for (int i = 0; i < V; i++) spread += fabs(one[i] - one[(N_IDS - 1) * V + i]);
    CHECK_MSG(spread / V > 1e-3, "first and last positions give nearly identical logits (%g)", spread / V);
}

TEST(forward_schemes_with_equal_values_give_equal_logits) {
    int32_t ids[24];
    make_ids(ids, 24, 5, 512);
    static float nv[24 * 512], hf[24 * 512], st[24 * 512];
    const int whole[] = {24};
    CHECK_OK(run_chunks(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), DSV4_W4A16, ids, whole, 1, nv, NULL));
    CHECK_OK(run_chunks(fixture_tiny_dir(DSV4_TINY_HF, 1), DSV4_W4A16, ids, whole, 1, hf, NULL));
    CHECK_OK(run_chunks(fixture_tiny_dir(DSV4_TINY_HF_STACKED, 1), DSV4_W4A16, ids, whole, 1, st, NULL));
    CHECK_MSG(!memcmp(nv, hf, sizeof nv), "native-nvfp4 and hf logits differ (cos %.9f)", fixture_cosine(nv, hf, 24 * 512));
    CHECK_MSG(!memcmp(nv, st, sizeof nv), "native-nvfp4 and hf-stacked logits differ");
}

TEST(forward_w4a4_stays_close_to_w4a16) {
    int32_t ids[24];
    make_ids(ids, 24, 6, 512);
    static float a16[24 * 512], a4[24 * 512];
    const int whole[] = {24};
    const char *dir = fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1);
    CHECK_OK(run_chunks(dir, DSV4_W4A16, ids, whole, 1, a16, NULL));
    CHECK_OK(run_chunks(dir, DSV4_W4A4, ids, whole, 1, a4, NULL));
    double c = fixture_cosine(a16, a4, 24 * 512);
    printf("     W4A4 vs W4A16 logits cosine on the tiny model: %.6f\n", c);
    CHECK_MSG(memcmp(a16, a4, sizeof a16) != 0, "W4A4 changed nothing");
    CHECK_MSG(c > 0.95, "W4A4 cosine %g", c);
}

TEST(forward_batch_decode_equals_single_sequences) {
    const char *dir = fixture_tiny_dir(DSV4_TINY_NATIVE_MXFP4, 1);
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(dir, &m));
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.max_batch = 3;
    o.max_seq_len = 64;
    dsv4_session *s;
    CHECK_OK(dsv4_session_create(m, &o, &s));
    int32_t a[12], b[5];
    make_ids(a, 12, 1, 512);
    make_ids(b, 5, 2, 512);
    static float la[13 * 512], lb[6 * 512], step[2 * 512];
    /* alone: sequence 0 gets a + one token, sequence 1 gets b + one token */
    int32_t next[2] = {3, 4};
    CHECK_OK(dsv4_session_forward(s, 0, a, 12, la));
    CHECK_OK(dsv4_session_forward(s, 0, &next[0], 1, la + 12 * 512));
    CHECK_OK(dsv4_session_forward(s, 1, b, 5, lb));
    CHECK_OK(dsv4_session_forward(s, 1, &next[1], 1, lb + 5 * 512));
    /* together: reset, prefill both, then one batched decode step */
    CHECK_OK(dsv4_session_reset(s, 0));
    CHECK_OK(dsv4_session_reset(s, 1));
    CHECK(dsv4_session_length(s, 0) == 0);
    CHECK_OK(dsv4_session_forward(s, 1, b, 5, NULL));
    CHECK_OK(dsv4_session_forward(s, 0, a, 12, NULL));
    int seqs[2] = {1, 0};
    int32_t toks[2] = {next[1], next[0]};
    CHECK_OK(dsv4_session_decode(s, 2, seqs, toks, step));
    CHECK(dsv4_session_length(s, 0) == 13 && dsv4_session_length(s, 1) == 6);
    int ok = !memcmp(step, lb + 5 * 512, 512 * 4) && !memcmp(step + 512, la + 12 * 512, 512 * 4);
    /* bad batches */
    int dup[2] = {0, 0};
    CHECK_STATUS(dsv4_session_decode(s, 2, dup, toks, step), DSV4_ERR_INVALID_ARGUMENT);
    int out_of_range[1] = {3};
    CHECK_STATUS(dsv4_session_decode(s, 1, out_of_range, toks, step), DSV4_ERR_INVALID_ARGUMENT);
    dsv4_session_free(s);
    dsv4_model_close(m);
    CHECK_MSG(ok, "batched decode differs from the single-sequence runs");
}

TEST(forward_rejects_bad_input_and_keeps_the_sequence) {
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), &m));
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.max_seq_len = 8;
    dsv4_session *s;
    CHECK_OK(dsv4_session_create(m, &o, &s));
    int32_t ids[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK_OK(dsv4_session_forward(s, 0, ids, 3, NULL));
    int32_t bad[2] = {5, 512};
    CHECK_STATUS(dsv4_session_forward(s, 0, bad, 2, NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dsv4_last_error(), "512") && strstr(dsv4_last_error(), "vocabulary"));
    bad[1] = -1;
    CHECK_STATUS(dsv4_session_forward(s, 0, bad, 2, NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(dsv4_session_length(s, 0) == 3);
    CHECK_STATUS(dsv4_session_forward(s, 0, ids, 6, NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dsv4_last_error(), "max_seq_len"));
    CHECK_OK(dsv4_session_forward(s, 0, ids, 5, NULL));
    CHECK(dsv4_session_length(s, 0) == 8);
    CHECK_STATUS(dsv4_session_forward(s, 1, ids, 1, NULL), DSV4_ERR_INVALID_ARGUMENT);
    dsv4_session_options bado = o;
    bado.max_batch = 0;
    dsv4_session *s2 = NULL;
    CHECK_STATUS(dsv4_session_create(m, &bado, &s2), DSV4_ERR_INVALID_ARGUMENT);
    dsv4_session_free(s);
    dsv4_model_close(m);
}

/* A session whose layer-2 attention sink `head` is NaN. The session copies parameters at
 * creation, so a poisoned copy of the view stands in for the checkpoint's bytes only then. */
static dsv4_status session_with_nan_sink(dsv4_model *m, const dsv4_session_options *o, int head,
                                         dsv4_session **s) {
    dsv4_layer_weights *L = &m->w.layers[2];
    float *copy = malloc(L->attn_sink->nbytes);
    if (!copy) return DSV4_ERR_OUT_OF_MEMORY;
    memcpy(copy, L->attn_sink->data, L->attn_sink->nbytes);
    copy[head] = NAN;
    dsv4_tensor_view poisoned = *L->attn_sink;
    poisoned.data = copy;
    const dsv4_tensor_view *orig = L->attn_sink;
    L->attn_sink = &poisoned;
    dsv4_status st = dsv4_session_create(m, o, s);
    L->attn_sink = orig;
    free(copy);
    return st;
}

/* A NaN that enters an activation is reported with the layer and op, never passed on. */
TEST(forward_reports_nan_with_layer_and_op) {
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_HF, 1), &m));
    dsv4_session *s;
    CHECK_OK(session_with_nan_sink(m, NULL, 0, &s));
    int32_t ids[6] = {1, 2, 3, 4, 5, 6};
    dsv4_status st = dsv4_session_forward(s, 0, ids, 6, NULL);
    char msg[512];
    snprintf(msg, sizeof msg, "%s", dsv4_last_error());
    dsv4_session_free(s);
    dsv4_model_close(m);
    CHECK_STATUS(st, DSV4_ERR_NONFINITE);
    CHECK_MSG(strstr(msg, "layer 2") && strstr(msg, "attention"), "message: %s", msg);
}

/* A failure part-way through a call leaves the sequence's state half-advanced: it must refuse
 * further use until reset, and bad input in a batch must be found before anything runs. */
TEST(forward_broken_sequences_and_batches_validated_up_front) {
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_HF, 1), &m));
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.max_batch = 2;
    dsv4_session *s = NULL;
    CHECK_OK(session_with_nan_sink(m, &o, 1, &s));
    int32_t ids[3] = {4, 5, 6}, bad_ids[2] = {7, 100000};
    int seqs_ok[2] = {1, 0}, seqs_bad[2] = {1, 7};
    /* validation happens before any sequence runs */
    CHECK_STATUS(dsv4_session_decode(s, 2, seqs_bad, ids, NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_session_decode(s, 2, seqs_ok, bad_ids, NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(dsv4_session_length(s, 0) == 0 && dsv4_session_length(s, 1) == 0);
    /* a computation failure marks the sequence broken until reset */
    CHECK_STATUS(dsv4_session_forward(s, 0, ids, 3, NULL), DSV4_ERR_NONFINITE);
    CHECK_STATUS(dsv4_session_forward(s, 0, ids, 1, NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK(strstr(dsv4_last_error(), "reset"));
    CHECK_OK(dsv4_session_reset(s, 0));
    CHECK_STATUS(dsv4_session_forward(s, 0, ids, 3, NULL), DSV4_ERR_NONFINITE); /* the model is still poisoned */
    dsv4_session_free(s);
    dsv4_model_close(m);
}

TEST(api_rejects_null_arguments) {
    dsv4_model *m = NULL;
    CHECK_STATUS(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_HF, 1), NULL), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_model_open(NULL, &m), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_session_create(NULL, NULL, NULL), DSV4_ERR_INVALID_ARGUMENT);
    dsv4_session *s = NULL;
    CHECK_STATUS(dsv4_session_create(NULL, NULL, &s), DSV4_ERR_INVALID_ARGUMENT);
    CHECK_STATUS(dsv4_inspect_dir(fixture_tiny_dir(DSV4_TINY_HF, 1), NULL), DSV4_ERR_INVALID_ARGUMENT);
    dsv4_session_options_default(NULL); /* must not crash */
    CHECK_STATUS(dsv4_session_forward(NULL, 0, NULL, 1, NULL), DSV4_ERR_INVALID_ARGUMENT);
}

/* The CLI's generate follows the API's greedy argmax; its chunked prefill changes nothing;
 * logits writes every position. */
TEST(cli_generate_and_logits) {
    const char *model = fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), *dir = test_tmpdir();
    CHECK(model);
    CHECK(test_system("%s generate --model '%s' --ids 5,6,7,8,9 -n 6 > '%s/a.txt'", test_cli(), model, dir) == 0);
    CHECK(test_system("%s generate --model '%s' --ids 5,6,7,8,9 -n 6 --chunk 2 > '%s/b.txt'", test_cli(), model, dir) == 0);
    CHECK(test_system("cmp -s '%s/a.txt' '%s/b.txt'", dir, dir) == 0);
    char path[700];
    snprintf(path, sizeof path, "%s/a.txt", dir);
    char *text = test_read_file(path, NULL);
    CHECK(text);
    int toks[6], n = sscanf(text, "%d,%d,%d,%d,%d,%d", &toks[0], &toks[1], &toks[2], &toks[3], &toks[4], &toks[5]);
    free(text);
    CHECK_MSG(n == 6, "generate printed %d ids", n);
    /* the same greedy decode through the API */
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(model, &m));
    dsv4_session *s;
    CHECK_OK(dsv4_session_create(m, NULL, &s));
    int32_t ids[5] = {5, 6, 7, 8, 9};
    static float logits[5 * 512];
    dsv4_status st = dsv4_session_forward(s, 0, ids, 5, logits);
    const float *last = logits + 4 * 512;
    int ok = 1;
    for (int i = 0; st == DSV4_OK && i < 6 && ok; i++) {
        int32_t best = 0;
        for (int v = 1; v < 512; v++)
            if (last[v] > last[best]) best = v;
        ok = best == toks[i];
        if (i < 5) st = dsv4_session_forward(s, 0, &best, 1, logits), last = logits;
    }
    dsv4_session_free(s);
    dsv4_model_close(m);
    CHECK_OK(st);
    CHECK_MSG(ok, "CLI greedy tokens differ from the API's");
    CHECK(test_system("%s logits --model '%s' --ids 5,6,7 --out '%s/l.safetensors'", test_cli(), model, dir) == 0);
    snprintf(path, sizeof path, "%s/l.safetensors", dir);
    dsv4_st_file *f;
    CHECK_OK(dsv4_st_open(path, &f));
    const dsv4_tensor_view *lg = dsv4_st_find(f, "logits");
    int shape_ok = lg && lg->ndim == 2 && lg->shape[0] == 3 && lg->shape[1] == 512 && lg->dtype == DSV4_DT_F32;
    dsv4_st_close(f);
    CHECK(shape_ok);
    CHECK(test_system("%s generate --model '%s' --ids 5,600 -n 2 2>/dev/null", test_cli(), model) != 0);
}

/* The FP8 KV cache rounds each row on its own: chunking still changes nothing. */
TEST(forward_kv_fp8_chunked_equals_one_shot) {
    dsv4_model *m;
    CHECK_OK(dsv4_model_open(fixture_tiny_dir(DSV4_TINY_NATIVE_NVFP4, 1), &m));
    dsv4_session_options o;
    dsv4_session_options_default(&o);
    o.kv_fp8 = 1;
    o.max_batch = 2;
    o.max_seq_len = 64;
    dsv4_session *s;
    CHECK_OK(dsv4_session_create(m, &o, &s));
    int32_t ids[30];
    make_ids(ids, 30, 23, 512);
    static float one[30 * 512], parts[30 * 512];
    dsv4_status st = dsv4_session_forward(s, 0, ids, 30, one);
    for (int i = 0; st == DSV4_OK && i < 30; i += 7)
        st = dsv4_session_forward(s, 1, ids + i, 30 - i < 7 ? 30 - i : 7, parts + (size_t)i * 512);
    dsv4_session_free(s);
    dsv4_model_close(m);
    CHECK_OK(st);
    CHECK(!memcmp(one, parts, sizeof one));
}
