/* CPU references: CSA/HCA compressors. Prefill against a naive per-entry formulation in
 * double (explicit slot lists over the whole sequence), and the streaming state against
 * prefill, bit for bit, for every chunking. */
#include <math.h>

#include "cpu/ops.h"
#include "test.h"

static void fill_normal(float *a, size_t n, float scale, uint64_t *rng) {
    for (size_t i = 0; i < n; i++) a[i] = scale * test_rand_normal(rng);
}

typedef struct fixture {
    dsv4_cpu_compress_dims d;
    dsv4_cpu_compress_params p;
    int n, width;                  /* tokens from position 0, projection width */
    float *kv, *gate, *ape, *norm_w, inv_freq[32];
} fixture;

static void fixture_make(fixture *f, int ratio, int head_dim, int overlap, int n, uint64_t seed) {
    uint64_t rng = seed;
    f->d = (dsv4_cpu_compress_dims){ratio, head_dim, overlap, 8, 1e-6f};
    f->n = n;
    f->width = (overlap ? 2 : 1) * head_dim;
    f->kv = malloc(sizeof(float) * (size_t)(n ? n : 1) * f->width);
    f->gate = malloc(sizeof(float) * (size_t)(n ? n : 1) * f->width);
    f->ape = malloc(sizeof(float) * (size_t)ratio * f->width);
    f->norm_w = malloc(sizeof(float) * head_dim);
    fill_normal(f->kv, (size_t)n * f->width, 1.0f, &rng);
    fill_normal(f->gate, (size_t)n * f->width, 2.0f, &rng);
    fill_normal(f->ape, (size_t)ratio * f->width, 1.0f, &rng);
    fill_normal(f->norm_w, head_dim, 1.0f, &rng);
    dsv4_cpu_rope_cfg rc = {8, 160000.0, 16.0, 65536.0, 32.0, 1.0};
    dsv4_cpu_rope_inv_freq(&rc, f->inv_freq);
    f->p = (dsv4_cpu_compress_params){f->ape, f->norm_w, f->inv_freq};
}

static void fixture_free(fixture *f) { free(f->kv), free(f->gate), free(f->ape), free(f->norm_w); }

/* Entry w straight from the spec: list the slots, softmax each channel, sum, norm, rope. */
static void naive_entry(const fixture *f, int w, double *out) {
    int m = f->d.ratio, hd = f->d.head_dim, W = f->width;
    for (int e = 0; e < hd; e++) {
        double z[256], c[256];
        int ns = 0;
        if (f->d.overlap && w > 0)
            for (int t = (w - 1) * m; t < w * m; t++) {
                z[ns] = (double)(f->gate[t * W + e] + f->ape[(t % m) * W + e]);
                c[ns++] = f->kv[t * W + e];
            }
        int off = f->d.overlap ? hd : 0; /* b half for CSA, the only half for HCA */
        for (int t = w * m; t < (w + 1) * m; t++) {
            z[ns] = (double)(f->gate[t * W + off + e] + f->ape[(t % m) * W + off + e]);
            c[ns++] = f->kv[t * W + off + e];
        }
        double mx = -INFINITY, s = 0, acc = 0;
        for (int i = 0; i < ns; i++) mx = fmax(mx, z[i]);
        for (int i = 0; i < ns; i++) s += exp(z[i] - mx);
        for (int i = 0; i < ns; i++) acc += c[i] * exp(z[i] - mx) / s;
        out[e] = acc;
    }
    double ss = 0;
    for (int e = 0; e < hd; e++) ss += out[e] * out[e];
    double inv = 1.0 / sqrt(ss / hd + 1e-6);
    for (int e = 0; e < hd; e++) out[e] = out[e] * inv * f->norm_w[e];
    int R = f->d.rope_dim;
    for (int i = 0; i < R / 2; i++) {
        double ang = (double)((float)(w * m) * f->inv_freq[i]);
        double re = out[hd - R + 2 * i], im = out[hd - R + 2 * i + 1];
        out[hd - R + 2 * i] = re * cos(ang) - im * sin(ang);
        out[hd - R + 2 * i + 1] = re * sin(ang) + im * cos(ang);
    }
}

/* Feeds the fixture's tokens in chunks of `chunk` (0: random 1..7) and collects the entries. */
static dsv4_status stream(const fixture *f, int chunk, uint64_t *rng, float *out, int *n_out) {
    dsv4_cpu_compress_state s;
    dsv4_status st = dsv4_cpu_compress_state_init(&s, &f->d, 0);
    if (st != DSV4_OK) return st;
    int done = 0, n = 0, hd = f->d.head_dim;
    while (done < f->n && st == DSV4_OK) {
        int c = chunk > 0 ? chunk : 1 + (int)(test_rand_u64(rng) % 7);
        if (c > f->n - done) c = f->n - done;
        int got = 0;
        st = dsv4_cpu_compress_feed(&s, &f->p, c, f->kv + (size_t)done * f->width,
                                    f->gate + (size_t)done * f->width, out + (size_t)n * hd,
                                    f->n / f->d.ratio - n, &got);
        done += c, n += got;
    }
    dsv4_cpu_compress_state_free(&s);
    *n_out = n;
    return st;
}

static void check_case(int ratio, int head_dim, int overlap, int n, uint64_t seed, int *failed) {
    fixture f;
    fixture_make(&f, ratio, head_dim, overlap, n, seed);
    int ne = n / ratio, got = -1, hd = head_dim;
    float *pre = malloc(sizeof(float) * (size_t)(ne ? ne : 1) * hd);
    float *str = malloc(sizeof(float) * (size_t)(ne ? ne : 1) * hd);
    double want[64];
    *failed = 1;
    if (dsv4_cpu_compress_prefill(&f.d, &f.p, 0, n, f.kv, f.gate, NULL, NULL, pre, &got) != DSV4_OK ||
        got != ne) {
        fprintf(stderr, "     prefill failed or gave %d entries, want %d\n", got, ne);
        goto out;
    }
    for (int w = 0; w < ne; w++) {
        naive_entry(&f, w, want);
        for (int e = 0; e < hd; e++)
            if (fabs(pre[w * hd + e] - want[e]) > 1e-5 * (1 + fabs(want[e]))) {
                fprintf(stderr, "     m=%d entry %d dim %d: %.8g vs %.8g\n", ratio, w, e,
                        pre[w * hd + e], want[e]);
                goto out;
            }
    }
    uint64_t rng = seed + 99;
    int chunks[3] = {1, 3, 0}; /* token by token, by 3, random 1..7 */
    for (int c = 0; c < 3; c++) {
        if (stream(&f, chunks[c], &rng, str, &got) != DSV4_OK || got != ne ||
            (ne && memcmp(pre, str, sizeof(float) * ne * hd) != 0)) {
            fprintf(stderr, "     m=%d chunk %d: streaming differs (%d entries)\n", ratio, chunks[c], got);
            goto out;
        }
    }
    *failed = 0;
out:
    free(pre), free(str);
    fixture_free(&f);
}

TEST(cpu_compress_csa_prefill_and_streaming) {
    int failed;
    int lens[] = {0, 3, 4, 5, 8, 23, 64};  /* empty, shorter than a window, exactly one, ... */
    for (int i = 0; i < 7; i++) {
        check_case(4, 16, 1, lens[i], 31 + i, &failed);
        CHECK_MSG(!failed, "CSA, %d tokens", lens[i]);
    }
}

TEST(cpu_compress_hca_prefill_and_streaming) {
    int failed;
    int lens[] = {127, 128, 300};
    for (int i = 0; i < 3; i++) {
        check_case(128, 16, 0, lens[i], 41 + i, &failed);
        CHECK_MSG(!failed, "HCA, %d tokens", lens[i]);
    }
    check_case(4, 16, 0, 37, 45, &failed); /* the no-overlap scheme at m = 4 too */
    CHECK(!failed);
}

TEST(cpu_compress_prefill_hands_over_overlap) {
    /* prefill of [0, 12) then of [12, 28) with the a-halves of window 2 (gate + ape)
     * equals one prefill of [0, 28), bit for bit */
    fixture f;
    fixture_make(&f, 4, 16, 1, 28, 51);
    float all[7 * 16], first[3 * 16], second[4 * 16], pk[4 * 16], pg[4 * 16];
    int n1, n2, n;
    CHECK_OK(dsv4_cpu_compress_prefill(&f.d, &f.p, 0, 28, f.kv, f.gate, NULL, NULL, all, &n));
    CHECK_OK(dsv4_cpu_compress_prefill(&f.d, &f.p, 0, 12, f.kv, f.gate, NULL, NULL, first, &n1));
    for (int r = 0; r < 4; r++)
        for (int e = 0; e < 16; e++) {
            pk[r * 16 + e] = f.kv[(8 + r) * 32 + e];
            pg[r * 16 + e] = f.gate[(8 + r) * 32 + e] + f.ape[r * 32 + e];
        }
    CHECK_OK(dsv4_cpu_compress_prefill(&f.d, &f.p, 12, 16, f.kv + 12 * 32, f.gate + 12 * 32, pk, pg,
                                       second, &n2));
    CHECK(n == 7 && n1 == 3 && n2 == 4);
    CHECK(memcmp(all, first, sizeof first) == 0);
    CHECK(memcmp(all + 3 * 16, second, sizeof second) == 0);
    /* without the hand-over window 3 loses its a-slots and changes */
    CHECK_OK(dsv4_cpu_compress_prefill(&f.d, &f.p, 12, 16, f.kv + 12 * 32, f.gate + 12 * 32, NULL,
                                       NULL, second, &n2));
    CHECK(memcmp(all + 3 * 16, second, 16 * sizeof(float)) != 0);
    CHECK_STATUS(dsv4_cpu_compress_prefill(&f.d, &f.p, 2, 8, f.kv, f.gate, NULL, NULL, second, &n2),
                 DSV4_ERR_SHAPE);
    CHECK(strstr(dsv4_last_error(), "compress_prefill") != NULL);
    fixture_free(&f);
}

TEST(cpu_compress_feed_refuses_overflow_without_changing_state) {
    fixture f;
    fixture_make(&f, 4, 16, 1, 10, 61);
    dsv4_cpu_compress_state s;
    float out[2 * 16];
    int got;
    CHECK_OK(dsv4_cpu_compress_state_init(&s, &f.d, 0));
    CHECK_OK(dsv4_cpu_compress_feed(&s, &f.p, 3, f.kv, f.gate, out, 0, &got));
    CHECK(got == 0 && s.n_buf == 3 && s.next_pos == 3);
    /* 7 more tokens close 2 windows: room for 1 is refused, nothing consumed */
    CHECK_STATUS(dsv4_cpu_compress_feed(&s, &f.p, 7, f.kv + 3 * 32, f.gate + 3 * 32, out, 1, &got),
                 DSV4_ERR_SHAPE);
    CHECK(s.n_buf == 3 && s.next_pos == 3 && !s.have_prev);
    CHECK_OK(dsv4_cpu_compress_feed(&s, &f.p, 7, f.kv + 3 * 32, f.gate + 3 * 32, out, 2, &got));
    CHECK(got == 2 && s.n_buf == 2 && s.next_pos == 10 && s.have_prev);
    dsv4_cpu_compress_state_free(&s);
    CHECK_STATUS(dsv4_cpu_compress_state_init(&s, &f.d, 6), DSV4_ERR_SHAPE);
    dsv4_cpu_compress_state_free(&s);
    fixture_free(&f);
}
