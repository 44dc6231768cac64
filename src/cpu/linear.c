#include "cpu/linear.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/parallel.h"
#include "base/status.h"
#include "format/quant.h"

/* Output rows expanded per task: enough to amortise a task, small enough to stay in cache. */
#define LINEAR_ROW_BLOCK 16

typedef struct {
    const dsv4_weight *w;
    const float *x;
    int64_t T;
    int64_t ldx;            /* floats between tokens of x */
    int64_t rows_per_group; /* output rows that share one cols-wide slice of a token's x */
    float *y;
    /* the first failure of any worker, with its message (last errors are per thread) */
    pthread_mutex_t lock;
    dsv4_status st;
    char msg[512];
} linear_job;

static void job_failed(linear_job *job, dsv4_status st) {
    pthread_mutex_lock(&job->lock);
    if (job->st == DSV4_OK) {
        job->st = st;
        snprintf(job->msg, sizeof job->msg, "%s", st == DSV4_ERR_OUT_OF_MEMORY ? "out of memory" : dsv4_last_error());
    }
    pthread_mutex_unlock(&job->lock);
}

static void linear_rows(void *ctx, int64_t r_begin, int64_t r_end) {
    linear_job *job = ctx;
    const int64_t K = job->w->cols, N = job->w->rows;
    float *wrow = malloc((size_t)(LINEAR_ROW_BLOCK * K) * sizeof *wrow);
    if (!wrow) {
        job_failed(job, DSV4_ERR_OUT_OF_MEMORY);
        return;
    }
    for (int64_t r0 = r_begin; r0 < r_end; r0 += LINEAR_ROW_BLOCK) {
        int64_t nr = r_end - r0 < LINEAR_ROW_BLOCK ? r_end - r0 : LINEAR_ROW_BLOCK;
        dsv4_status st = dsv4_weight_dequantize_rows(job->w, r0, nr, wrow);
        if (st != DSV4_OK) { /* e.g. a NaN byte in an FP8 weight, named with its row and column */
            job_failed(job, st);
            break;
        }
        for (int64_t t = 0; t < job->T; t++) {
            for (int64_t i = 0; i < nr; i++) {
                const float *xt = job->x + t * job->ldx + (r0 + i) / job->rows_per_group * K;
                const float *wr = wrow + i * K;
                float acc = 0.0f;
                for (int64_t k = 0; k < K; k++) acc += xt[k] * wr[k];
                job->y[t * N + r0 + i] = acc;
            }
        }
    }
    free(wrow);
}

dsv4_status dsv4_cpu_quantize_act_roundtrip(float *x, int64_t T, int64_t K, float input_scale, const char *what) {
    uint8_t *q = malloc((size_t)K / 2), *s = malloc((size_t)K / 16);
    dsv4_status st = (q && s) ? DSV4_OK : dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "%s: out of memory", what);
    for (int64_t t = 0; t < T && st == DSV4_OK; t++) {
        float *xt = x + t * K, scale = input_scale;
        if (scale > 0.0f) st = dsv4_nvfp4_quantize_act(xt, 1, K, scale, q, s, what);
        else st = dsv4_nvfp4_quantize_act_dynamic(xt, 1, K, q, s, &scale, what); /* per-token scale */
        if (st == DSV4_OK) dsv4_nvfp4_dequantize(q, s, scale, 1, K, xt);
    }
    free(q);
    free(s);
    return st;
}

dsv4_status dsv4_cpu_linear_grouped(const dsv4_weight *w, int groups, const float *x, int64_t T, float *y,
                                    dsv4_numerics mode) {
    const char *what = w->src ? w->src->name : "linear";
    if (T < 0 || !x || !y || groups < 1) return dsv4_fail(DSV4_ERR_INVALID_ARGUMENT, "linear %s: bad arguments", what);
    if (w->rows % groups)
        return dsv4_fail(DSV4_ERR_SHAPE, "linear %s: %lld output rows do not split into %d groups", what,
                         (long long)w->rows, groups);
    const int64_t ldx = groups * w->cols;
    float *xq = NULL;
    if (mode == DSV4_W4A4 && w->format == DSV4_WF_NVFP4) {
        xq = malloc((size_t)(T * ldx) * sizeof *xq);
        if (!xq) return dsv4_fail(DSV4_ERR_OUT_OF_MEMORY, "linear %s: out of memory", what);
        memcpy(xq, x, (size_t)(T * ldx) * sizeof *xq);
        dsv4_status st = dsv4_cpu_quantize_act_roundtrip(xq, T, ldx, w->input_scale, what);
        if (st != DSV4_OK) { free(xq); return st; }
        x = xq;
    }
    linear_job job = {.w = w, .x = x, .T = T, .ldx = ldx, .rows_per_group = w->rows / groups, .y = y, .st = DSV4_OK};
    pthread_mutex_init(&job.lock, NULL);
    dsv4_parallel_for(w->rows, LINEAR_ROW_BLOCK, linear_rows, &job);
    pthread_mutex_destroy(&job.lock);
    free(xq);
    if (job.st != DSV4_OK) return dsv4_fail(job.st, "linear %s: %s", what, job.msg);
    return DSV4_OK;
}

dsv4_status dsv4_cpu_linear(const dsv4_weight *w, const float *x, int64_t T, float *y, dsv4_numerics mode) {
    return dsv4_cpu_linear_grouped(w, 1, x, T, y, mode);
}
