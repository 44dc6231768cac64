/* dsv4 — DeepSeek-V4 inference with NVFP4 weights. The public C API.
 *
 * Every function that can fail returns a dsv4_status; on failure dsv4_last_error()
 * gives a message naming the file, tensor, layer or op involved. The library never
 * aborts or exits the process. Handles are opaque. */
#ifndef DSV4_H
#define DSV4_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DSV4_VERSION_MAJOR 0
#define DSV4_VERSION_MINOR 1
#define DSV4_VERSION_PATCH 0

typedef enum dsv4_status {
    DSV4_OK = 0,
    DSV4_ERR_INVALID_ARGUMENT,  /* a caller passed something unusable (NULL, bad size) */
    DSV4_ERR_IO,                /* open/read/write/mmap failed */
    DSV4_ERR_OUT_OF_MEMORY,     /* host or device allocation failed */
    DSV4_ERR_TRUNCATED,         /* file shorter than its header says */
    DSV4_ERR_HEADER,            /* safetensors header length/layout invalid */
    DSV4_ERR_JSON,              /* JSON does not parse or has the wrong structure */
    DSV4_ERR_DTYPE,             /* unknown or unexpected dtype */
    DSV4_ERR_SHAPE,             /* shape does not match bytes, config or op */
    DSV4_ERR_RANGE,             /* offsets outside the data area */
    DSV4_ERR_OVERLAP,           /* two tensors share bytes */
    DSV4_ERR_MISSING,           /* a required tensor, key or file is absent */
    DSV4_ERR_CONFIG,            /* config value missing, invalid or inconsistent */
    DSV4_ERR_NONFINITE,         /* NaN or Inf where finite values are required */
    DSV4_ERR_NOT_REPRESENTABLE, /* an exact conversion is impossible */
    DSV4_ERR_UNSUPPORTED,       /* valid input this build cannot handle */
    DSV4_ERR_CUDA,              /* a CUDA or cuBLAS call failed */
    DSV4_ERR_NO_DEVICE,         /* no usable GPU */
    DSV4_ERR_INTERNAL,          /* a bug in dsv4 */
    DSV4_STATUS_COUNT
} dsv4_status;

/* Short stable name of a status code, e.g. "DSV4_ERR_SHAPE". */
const char *dsv4_status_name(dsv4_status st);
/* The message of the last failure on this thread ("" if none). */
const char *dsv4_last_error(void);
/* "MAJOR.MINOR.PATCH". */
const char *dsv4_version(void);
/* 1 if this build contains the CUDA backend, else 0. */
int dsv4_has_cuda(void);

/* Numerics of NVFP4 linears. */
typedef enum dsv4_numerics {
    DSV4_W4A16 = 0, /* activations stay in high precision (most accurate on Hopper) */
    DSV4_W4A4       /* activations of NVFP4 linears quantized to NVFP4 as Blackwell does */
} dsv4_numerics;

/* ---- checkpoints ---------------------------------------------------------- */

typedef struct dsv4_model dsv4_model;

/* Opens a checkpoint directory (config.json + one or more .safetensors files),
 * validates every tensor against the config and builds the weight table.
 * Nothing is copied: tensors stay memory-mapped. */
dsv4_status dsv4_model_open(const char *dir, dsv4_model **out);
void dsv4_model_close(dsv4_model *m);
/* Writes a readable summary of the model to `f` (a FILE*; void* keeps stdio out of this header). */
dsv4_status dsv4_model_inspect(const dsv4_model *m, void *f);
/* Opens `dir` leniently and writes the summary plus every problem found (missing tensors,
 * wrong shapes or dtypes, bad scales) to `f`; returns the first problem's status. */
dsv4_status dsv4_inspect_dir(const char *dir, void *f);

typedef enum dsv4_tiny_scheme {
    DSV4_TINY_NATIVE_NVFP4 = 0, /* NVIDIA ModelOpt-like: NVFP4 experts, FP8 elsewhere, native names */
    DSV4_TINY_NATIVE_MXFP4,     /* DeepSeek official-like: MXFP4 experts, FP8 elsewhere, native names */
    DSV4_TINY_HF,               /* HF save_pretrained: F32/BF16, native names under "model.", per-expert */
    DSV4_TINY_HF_STACKED        /* HF in-memory names (self_attn.q_a_proj, stacked experts.gate_up_proj) */
} dsv4_tiny_scheme;

/* Writes a deterministic tiny random DeepSeek-V4 checkpoint into `dir`
 * (created if needed). Weights are exactly representable in their format. */
dsv4_status dsv4_make_tiny(const char *dir, dsv4_tiny_scheme scheme, uint64_t seed);
/* The same with the model's shape taken from a config.json at `config_path` (NULL: the
 * built-in tiny shape); its quantization settings are replaced by the scheme's. */
dsv4_status dsv4_make_tiny_config(const char *dir, dsv4_tiny_scheme scheme, uint64_t seed, const char *config_path);

/* `dsv4 convert`: which linears to rewrite in NVFP4. */
typedef struct dsv4_convert_options {
    int experts;        /* routed experts: MXFP4 exactly, other formats by quantizing */
    int dense;          /* attention, indexer wq_b, shared experts, MTP projections (lossy) */
    int lossy_mxfp4;    /* quantize MXFP4 tensors whose scale range NVFP4 cannot carry exactly,
                           instead of failing with DSV4_ERR_NOT_REPRESENTABLE */
    size_t shard_bytes; /* output shard size (0: 4 GiB) */
} dsv4_convert_options;

/* Reads the checkpoint in `src`, writes it to `dst` (created if needed) with the chosen
 * linears in NVFP4 (ModelOpt layout, DeepSeek names, sharded with an index) and everything
 * else unchanged. Progress lines go to `progress` (a FILE*, or NULL). */
dsv4_status dsv4_convert(const char *src, const char *dst, const dsv4_convert_options *o, void *progress);

int dsv4_model_vocab_size(const dsv4_model *m);
int dsv4_model_eos_token(const dsv4_model *m);

/* ---- running the model ---------------------------------------------------- */

typedef struct dsv4_session dsv4_session;

typedef struct dsv4_session_options {
    dsv4_numerics numerics; /* default DSV4_W4A16 */
    int max_batch;          /* sequences held at once (default 1) */
    int max_seq_len;        /* tokens per sequence (default 4096) */
    int kv_fp8;             /* KV rows and compressed entries as an FP8 cache holds them: nope
                               dims e4m3 with a power-of-two scale per 64, rope dims BF16
                               (DeepSeek's training-time round trip); 0: fp32, as HF */
} dsv4_session_options;

void dsv4_session_options_default(dsv4_session_options *o);
/* A session runs the model on the CPU reference backend; it holds every sequence's decode
 * state (sliding windows, compressor buffers, compressed entries). The model must outlive it. */
dsv4_status dsv4_session_create(const dsv4_model *m, const dsv4_session_options *o, dsv4_session **out);
void dsv4_session_free(dsv4_session *s);
/* Empties sequence `seq` (0 <= seq < max_batch). */
dsv4_status dsv4_session_reset(dsv4_session *s, int seq);
/* Tokens already processed in sequence `seq`. */
int dsv4_session_length(const dsv4_session *s, int seq);
/* Appends n tokens to sequence `seq` and runs them: a prefill when n > 1; several calls are
 * a chunked prefill and give the same results as one. logits: NULL, or [n, vocab] (fp32) for
 * every new position. Bad input (token id out of range, length past max_seq_len) fails
 * before anything runs and leaves the sequence as it was; a failure during the computation
 * (NaN/Inf in an activation, out of memory) marks it broken: later calls on it fail with
 * DSV4_ERR_INVALID_ARGUMENT until dsv4_session_reset. */
dsv4_status dsv4_session_forward(dsv4_session *s, int seq, const int32_t *ids, int n, float *logits);
/* One decode step for B sequences: ids[b] is appended to seqs[b]; logits [B, vocab] or NULL.
 * Every sequence and token is checked before any runs; if the computation then fails for one
 * sequence, that one needs a reset and the sequences before it in `seqs` have advanced. */
dsv4_status dsv4_session_decode(dsv4_session *s, int B, const int *seqs, const int32_t *ids, float *logits);

#ifdef __cplusplus
}
#endif
#endif /* DSV4_H */
