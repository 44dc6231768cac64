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

/* ---- checkpoints ---------------------------------------------------------- */

typedef struct dsv4_model dsv4_model;

/* Opens a checkpoint directory (config.json + one or more .safetensors files),
 * validates every tensor against the config and builds the weight table.
 * Nothing is copied: tensors stay memory-mapped. */
dsv4_status dsv4_model_open(const char *dir, dsv4_model **out);
void dsv4_model_close(dsv4_model *m);
/* Writes a readable summary of the model to `f` (a FILE*). */
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

#ifdef __cplusplus
}
#endif
#endif /* DSV4_H */
