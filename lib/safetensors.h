/* safetensors.h — reading and writing the safetensors format.
 *
 * File layout: 8-byte little-endian header length L, then L bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value", ...}}, then the raw little-endian data. This reader
 * accepts tensors of rank 0..4 in F32, F16, BF16, F64, I8, U8, I32 and I64 (other dtypes,
 * such as BOOL or U16, are refused) and rejects malformed files (bad lengths, overlapping
 * or out-of-range offsets, shapes that disagree with the byte count, invalid JSON) with
 * CR_EFORMAT and a message naming the file and the problem.
 *
 * Two ways to read a tensor: cr_st_get converts it to a float32 cr_tensor (what the float
 * kernels take); cr_st_get_typed copies it bit for bit in its file dtype (dtype.h). The
 * writer likewise takes float32 (cr_st_writer_add, written as F32) or typed tensors
 * (cr_st_writer_add_typed, written in their dtype), so a typed read followed by a typed
 * write reproduces every tensor's bytes. Lookups by name are O(log n). */
#ifndef CR_SAFETENSORS_H
#define CR_SAFETENSORS_H

#include <stddef.h>
#include "dtype.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_st_file cr_st_file;

/* Reads and validates a whole file. */
cr_status cr_st_load(cr_st_file **out, const char *path);
/* Parses a file already in memory (the fuzz target's entry point); name is used in messages. */
cr_status cr_st_parse(cr_st_file **out, const void *bytes, size_t len, const char *name);
void cr_st_free(cr_st_file *f);

/* Number of tensors and the name of the i-th (in file order). */
int cr_st_count(const cr_st_file *f);
const char *cr_st_name(const cr_st_file *f, int i);
/* True if a tensor of that name exists. */
int cr_st_has(const cr_st_file *f, const char *name);
/* Copies the named tensor into a newly allocated float32 t (rank-0 tensors become rank 1 of
 * size 1), converting as cr_dtensor_to_tensor does: F16/BF16 exactly, F64 and I32/I64
 * rounded to nearest. Fails with CR_EINVAL naming the tensor if absent or empty. */
cr_status cr_st_get(const cr_st_file *f, const char *name, cr_tensor *t);
/* Copies the named tensor bit for bit into a newly allocated t of its file dtype, rank
 * (0..4) and shape (zero sizes allowed). Fails with CR_EINVAL naming the tensor if absent. */
cr_status cr_st_get_typed(const cr_st_file *f, const char *name, cr_dtensor *t);
/* The dtype, rank and shape (unused entries 1) of the named tensor, without copying its data;
 * any output may be NULL. Fails with CR_EINVAL if absent. */
cr_status cr_st_info(const cr_st_file *f, const char *name, cr_dtype *dtype, int *ndim,
                     int64_t shape[CR_MAX_DIMS]);
/* The metadata value for key, or NULL. */
const char *cr_st_meta(const cr_st_file *f, const char *key);

/* A writer: add tensors and metadata, then save (atomically: PATH.tmp then rename). */
typedef struct cr_st_writer cr_st_writer;
cr_status cr_st_writer_new(cr_st_writer **out);
/* Adds a float32 tensor, written as F32 (data copied). Names must be unique (checked in
 * O(1)), non-empty, valid UTF-8 and not "__metadata__". */
cr_status cr_st_writer_add(cr_st_writer *w, const char *name, const cr_tensor *t);
/* Adds a typed tensor, written in its own dtype, rank 0..4 (data copied; same name rules). */
cr_status cr_st_writer_add_typed(cr_st_writer *w, const char *name, const cr_dtensor *t);
cr_status cr_st_writer_meta(cr_st_writer *w, const char *key, const char *value);
cr_status cr_st_writer_save(cr_st_writer *w, const char *path);
void cr_st_writer_free(cr_st_writer *w);

#ifdef __cplusplus
}
#endif

#endif
