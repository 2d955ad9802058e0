/* safetensors.h — reading and writing the safetensors format (float32 tensors).
 *
 * File layout: 8-byte little-endian header length L, then L bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {"key": "value", ...}}, then the raw data. This reader accepts
 * F32 tensors (F64 and F16/BF16 are converted to float32) of rank 0..4 and
 * rejects malformed files (bad lengths, overlapping or out-of-range offsets,
 * shapes that disagree with the byte count, invalid JSON) with CR_EFORMAT and a
 * message naming the file and the problem. */
#ifndef CR_SAFETENSORS_H
#define CR_SAFETENSORS_H

#include <stddef.h>
#include "tensor.h"

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
/* Copies the named tensor into a newly allocated t (rank-0 tensors become rank 1 of size 1).
 * Fails with CR_EINVAL naming the tensor if absent. */
cr_status cr_st_get(const cr_st_file *f, const char *name, cr_tensor *t);
/* The metadata value for key, or NULL. */
const char *cr_st_meta(const cr_st_file *f, const char *key);

/* A writer: add tensors and metadata, then save (atomically: PATH.tmp then rename). */
typedef struct cr_st_writer cr_st_writer;
cr_status cr_st_writer_new(cr_st_writer **out);
/* Adds a tensor (data copied). Names must be unique and non-empty. */
cr_status cr_st_writer_add(cr_st_writer *w, const char *name, const cr_tensor *t);
cr_status cr_st_writer_meta(cr_st_writer *w, const char *key, const char *value);
cr_status cr_st_writer_save(cr_st_writer *w, const char *path);
void cr_st_writer_free(cr_st_writer *w);

#endif
