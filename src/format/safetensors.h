/* safetensors: a validating reader on mmap, sharded checkpoints, and a writer.
 *
 * File layout: u64 little-endian N, then N bytes of UTF-8 JSON header
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
 * then the data area; offsets are relative to the data area start.
 * Opening validates everything before any tensor is handed out: header length within the
 * file (and <= DSV4_ST_MAX_HEADER = 100 MiB), JSON object structure, known dtype, shape x element size == byte
 * range, ranges inside the data area, no two ranges overlapping. Errors name the file and
 * tensor. Status codes: DSV4_ERR_TRUNCATED (file < 8 bytes or < 8 + N), DSV4_ERR_HEADER (N >
 * DSV4_ST_MAX_HEADER), DSV4_ERR_JSON (not JSON / not UTF-8 / wrong structure / negative or
 * non-integer shape or offset / duplicate name / __metadata__ not str->str), DSV4_ERR_DTYPE,
 * DSV4_ERR_SHAPE (bytes != shape x dtype, fractional bytes for sub-byte dtypes, overflow),
 * DSV4_ERR_RANGE (begin > end or end past the data), DSV4_ERR_OVERLAP, DSV4_ERR_IO.
 * Unlike the reference reader, gaps between tensors and trailing bytes after the last one
 * are accepted: they are harmless, and some writers align tensors with padding. */
#ifndef DSV4_FORMAT_SAFETENSORS_H
#define DSV4_FORMAT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dsv4.h"

#define DSV4_MAX_DIMS 8
#define DSV4_ST_MAX_HEADER (100u << 20)

/* Every dtype of the safetensors format (huggingface/safetensors Dtype, 2025). Sub-byte
 * dtypes (F4, F6_*) are packed; a tensor of them must fill whole bytes. */
typedef enum dsv4_dtype {
    DSV4_DT_BOOL, DSV4_DT_U8, DSV4_DT_I8, DSV4_DT_U16, DSV4_DT_I16, DSV4_DT_F16, DSV4_DT_BF16,
    DSV4_DT_U32, DSV4_DT_I32, DSV4_DT_F32, DSV4_DT_U64, DSV4_DT_I64, DSV4_DT_F64, DSV4_DT_C64,
    DSV4_DT_F8_E4M3, DSV4_DT_F8_E5M2, DSV4_DT_F8_E8M0, DSV4_DT_F4, DSV4_DT_F6_E2M3, DSV4_DT_F6_E3M2,
    DSV4_DT_F8_E4M3FNUZ, DSV4_DT_F8_E5M2FNUZ, /* AMD-style fp8 (what torch calls *fnuz) */
    DSV4_DT_COUNT
} dsv4_dtype;

const char *dsv4_dtype_name(dsv4_dtype dt);               /* "F8_E4M3"; "?" if out of range */
int dsv4_dtype_from_name(const char *name, dsv4_dtype *out); /* 1 if known */
int dsv4_dtype_bits(dsv4_dtype dt);                       /* 4 for F4, 6 for F6_*, 8*bytes else; 0 if out of range */

typedef struct dsv4_tensor_view {
    const char *name;
    dsv4_dtype dtype;
    int ndim;
    int64_t shape[DSV4_MAX_DIMS];
    const void *data; /* into the mapping; valid until the file is closed */
    size_t nbytes;
    const char *file; /* path of the file it lives in */
} dsv4_tensor_view;

int64_t dsv4_tensor_numel(const dsv4_tensor_view *t);

/* ---- one file ---- */
typedef struct dsv4_st_file dsv4_st_file;
dsv4_status dsv4_st_open(const char *path, dsv4_st_file **out);
/* Parses an in-memory image (not copied; `buf` must outlive the handle). `label` names it
 * in messages. Used by tests and the fuzzer. */
dsv4_status dsv4_st_open_memory(const void *buf, size_t len, const char *label, dsv4_st_file **out);
void dsv4_st_close(dsv4_st_file *f);
int dsv4_st_count(const dsv4_st_file *f);
const dsv4_tensor_view *dsv4_st_tensor(const dsv4_st_file *f, int i); /* in header order */
const dsv4_tensor_view *dsv4_st_find(const dsv4_st_file *f, const char *name);
/* __metadata__ value or NULL. */
const char *dsv4_st_metadata(const dsv4_st_file *f, const char *key);

/* ---- a checkpoint directory: model.safetensors.index.json (sharded) or *.safetensors ----
 * With an index, every file it names is opened once and every tensor must be in the file the
 * index says (DSV4_ERR_MISSING names the tensor and both files otherwise; also for a file
 * the index names that does not exist, and for an indexed tensor absent from its file).
 * Without an index every *.safetensors in `dir` is opened, in name order. Tensor names
 * must be unique across files (DSV4_ERR_OVERLAP names both files). Tensors are numbered
 * file by file, each in header order. */
typedef struct dsv4_checkpoint dsv4_checkpoint;
dsv4_status dsv4_ckpt_open(const char *dir, dsv4_checkpoint **out);
void dsv4_ckpt_close(dsv4_checkpoint *c);
int dsv4_ckpt_count(const dsv4_checkpoint *c);
const dsv4_tensor_view *dsv4_ckpt_tensor(const dsv4_checkpoint *c, int i);
const dsv4_tensor_view *dsv4_ckpt_find(const dsv4_checkpoint *c, const char *name); /* O(1) avg */
int dsv4_ckpt_file_count(const dsv4_checkpoint *c);

/* ---- writer ----
 * Tensors are referenced, not copied: their data must stay valid until write/free.
 * The header lists tensors in the order added; the header is padded with spaces to a
 * multiple of 8 so the data area starts 8-byte aligned. The data area has no gaps (the
 * reference reader, and so Python's safetensors, rejects files with holes), so tensors are
 * laid out by element size, largest first (stable), which puts every tensor at an offset
 * aligned to its element size (8 for 64-bit dtypes) without padding.
 * add: DSV4_ERR_SHAPE if nbytes != shape x dtype (or fractional bytes), DSV4_ERR_DTYPE for
 * an unknown dtype, DSV4_ERR_INVALID_ARGUMENT for a NULL/duplicate/reserved/non-UTF-8 name.
 * write: DSV4_ERR_IO naming the path; the file is written to path.tmp and renamed. */
typedef struct dsv4_st_writer dsv4_st_writer;
dsv4_st_writer *dsv4_st_writer_new(void); /* NULL on OOM */
void dsv4_st_writer_free(dsv4_st_writer *w);
dsv4_status dsv4_st_writer_add(dsv4_st_writer *w, const char *name, dsv4_dtype dtype, int ndim,
                               const int64_t *shape, const void *data, size_t nbytes);
dsv4_status dsv4_st_writer_set_metadata(dsv4_st_writer *w, const char *key, const char *value);
size_t dsv4_st_writer_bytes(const dsv4_st_writer *w); /* data bytes added so far */
dsv4_status dsv4_st_writer_write(const dsv4_st_writer *w, const char *path);
/* Writes the tensors as dir/model-0000i-of-0000n.safetensors shards of at most
 * max_shard_bytes data each (a larger tensor gets its own shard) plus
 * dir/model.safetensors.index.json ({"metadata": {"total_size": N}, "weight_map": {...}}).
 * With one shard only, writes dir/model.safetensors and no index. */
dsv4_status dsv4_st_writer_write_sharded(const dsv4_st_writer *w, const char *dir,
                                         size_t max_shard_bytes);

#endif
