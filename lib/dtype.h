/* dtype.h — element types other than float32: their storage, their conversions, and
 * the descriptions of quantized tensors and byte masks.
 *
 * Where each piece lives, and why: this library owns *storage and I/O* of every dtype
 * the later chapters use (f32, f16, bf16, i8, u8, i32; i64 and f64 for what PyTorch
 * writes: BatchNorm's `num_batches_tracked` counter is an I64 scalar), because the
 * safetensors reader and writer, the tests and every chapter need the same bytes. The
 * *arithmetic* of a dtype lives in the chapter that teaches it: chapter 7 owns
 * quantizing, dequantizing, observers, requantization and the int8 kernels (here only
 * cr_qparams, the description they work from); chapter 6 owns what masks and sparse
 * formats compute (here only cr_mask, the storage). Conversions below are the ones a
 * loader needs: f32 <-> f16 and f32 <-> bf16 round to nearest, ties to even, exactly as
 * PyTorch 1.13 does (bit for bit, NaNs included: see cr_f32_to_bf16).
 *
 * cr_dtensor is the typed companion of the float32 cr_tensor (tensor.h), which stays
 * the type every float kernel takes. Unlike cr_tensor it may have rank 0 (a scalar,
 * numel 1) and zero sizes (numel 0), so that any safetensors tensor round-trips. */
#ifndef CR_DTYPE_H
#define CR_DTYPE_H

#include <stddef.h>
#include <stdint.h>
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types, named as safetensors names them (I8 is PyTorch's int8, "s8" in oneDNN). */
typedef enum {
    CR_DT_F32,   /* IEEE binary32 */
    CR_DT_F16,   /* IEEE binary16 (torch.float16) */
    CR_DT_BF16,  /* bfloat16: the top 16 bits of a binary32 (torch.bfloat16) */
    CR_DT_I8,    /* int8_t */
    CR_DT_U8,    /* uint8_t */
    CR_DT_I32,   /* int32_t */
    CR_DT_I64,   /* int64_t (PyTorch's counters and indices) */
    CR_DT_F64,   /* IEEE binary64 */
    CR_DT_COUNT  /* number of dtypes, not a dtype */
} cr_dtype;

/* The safetensors name of dt ("F32", "BF16", "I64", ...), or "?" if dt is not a dtype. */
const char *cr_dtype_name(cr_dtype dt);
/* Bytes per element of dt (0 if dt is not a dtype). */
size_t cr_dtype_size(cr_dtype dt);
/* Finds the dtype whose safetensors name is the n bytes at name; 0 if none. */
int cr_dtype_from_name(const char *name, size_t n, cr_dtype *dt);
/* True for I8, U8, I32, I64. */
int cr_dtype_is_int(cr_dtype dt);

/* ------------------------------------------------------------ scalar conversions */

/* binary16 bits to float32, exact (subnormals, infinities kept); a NaN keeps its sign and
 * payload and is made quiet (0x7C01 -> 0x7FC02000), as PyTorch 1.13 does. */
float cr_f16_to_f32(uint16_t h);
/* float32 to binary16 bits, round to nearest even: overflow (|x| >= 65520) gives +-inf,
 * tiny values become subnormals or +-0; every NaN gives 0x7E00 with x's sign (PyTorch). */
uint16_t cr_f32_to_f16(float x);
/* bfloat16 bits to float32 (exact: the bits shifted up, NaN payloads kept). */
float cr_bf16_to_f32(uint16_t b);
/* float32 to bfloat16 bits, round to nearest even (overflow gives +-inf). Every NaN gives
 * 0xFFFF: what PyTorch 1.13's x.to(torch.bfloat16) writes on x86 for a NaN of either
 * sign (its vectorized path, measured). PyTorch's scalar c10::BFloat16(float) gives
 * 0x7FC0 instead; both are NaNs, and only the tensor conversion reaches a file. */
uint16_t cr_f32_to_bf16(float x);

/* ------------------------------------------------------------ typed tensors */

typedef struct {
    cr_dtype dtype;
    int ndim;                    /* 0..4; 0 is a scalar with numel 1 */
    int64_t shape[CR_MAX_DIMS];  /* sizes >= 0, outermost first; unused entries are 1 */
    size_t numel;                /* product of shape (may be 0) */
    void *data;                  /* numel * cr_dtype_size(dtype) bytes, host order,
                                    CR_ALIGN-aligned, owned */
} cr_dtensor;

/* Allocates t (rank 0..4, sizes >= 0, at most 2^36 bytes) with every byte zero. */
cr_status cr_dtensor_alloc(cr_dtensor *t, cr_dtype dt, int ndim, const int64_t *shape);
/* Frees t's storage and zeroes the struct (safe on a zeroed struct). */
void cr_dtensor_free(cr_dtensor *t);
/* numel * element size. */
size_t cr_dtensor_bytes(const cr_dtensor *t);
/* Typed views of the data (NULL if t is not of that dtype). */
float *cr_dtensor_f32(const cr_dtensor *t);
uint16_t *cr_dtensor_u16(const cr_dtensor *t);  /* F16 or BF16 bits */
int8_t *cr_dtensor_i8(const cr_dtensor *t);
uint8_t *cr_dtensor_u8(const cr_dtensor *t);
int32_t *cr_dtensor_i32(const cr_dtensor *t);
int64_t *cr_dtensor_i64(const cr_dtensor *t);
double *cr_dtensor_f64(const cr_dtensor *t);

/* Converts src into a new tensor *out of dtype dt, same shape. Float targets (F32, F16,
 * BF16, F64) round to nearest as PyTorch's .to() does (F16/BF16 through float32, as
 * c10::Half/BFloat16 do; I32/I64 to F32 may round). Integer targets are exact or
 * refused: every element must be an integer in dt's range, else CR_EINVAL naming the
 * first element that is not (saturating and rounding conversions are chapter 7's). */
cr_status cr_dtensor_convert(cr_dtensor *out, const cr_dtensor *src, cr_dtype dt);
/* Converts a float32 cr_tensor into a new tensor of dtype dt (rules as above). */
cr_status cr_dtensor_from_tensor(cr_dtensor *out, const cr_tensor *src, cr_dtype dt);
/* Converts src into a new float32 cr_tensor (rules as above). A rank-0 src becomes rank 1
 * of size 1; a src with no elements is refused (CR_EINVAL: cr_tensor cannot be empty). */
cr_status cr_dtensor_to_tensor(cr_tensor *out, const cr_dtensor *src);

/* ------------------------------------------------------------ quantized tensors */

/* How a quantized tensor's integers map to reals: real = (q - zero_point) * scale, with
 * one (scale, zero_point) for the whole tensor or one per index along axis (PyTorch's
 * per_tensor_affine and per_channel_affine). The arithmetic is chapter 7's. */
typedef enum { CR_QSCHEME_PER_TENSOR, CR_QSCHEME_PER_CHANNEL } cr_qscheme;

typedef struct {
    cr_dtype dtype;       /* CR_DT_U8 or CR_DT_I8 */
    cr_qscheme scheme;
    int axis;             /* per channel: the dimension the parameters follow; -1 per tensor */
    int64_t channels;     /* entries in scale and zero_point: 1 per tensor */
    double *scale;        /* channels finite scales > 0 (double, as PyTorch keeps them) */
    int32_t *zero_point;  /* channels zero points, each within dtype's range */
} cr_qparams;

/* One scale and zero point for the whole tensor. */
cr_status cr_qparams_per_tensor(cr_qparams *p, cr_dtype dt, double scale, int32_t zero_point);
/* One scale and zero point per index of dimension axis (channels of them, copied). */
cr_status cr_qparams_per_channel(cr_qparams *p, cr_dtype dt, int axis, int64_t channels,
                                 const double *scale, const int32_t *zero_point);
/* Frees the parameter arrays and zeroes p (safe on a zeroed struct). */
void cr_qparams_free(cr_qparams *p);

/* A quantized tensor: the integers (q.dtype == p.dtype) and how to read them. */
typedef struct {
    cr_dtensor q;
    cr_qparams p;
} cr_qtensor;

/* Allocates qt's integers (zeroed) with the given shape and takes a copy of p; per
 * channel, p.axis must be < ndim and p.channels == shape[p.axis] (CR_EINVAL otherwise). */
cr_status cr_qtensor_alloc(cr_qtensor *qt, const cr_qparams *p, int ndim, const int64_t *shape);
/* Checks that p describes q (dtype, axis, channel count, scales, zero points). */
cr_status cr_qparams_check(const cr_qparams *p, const cr_dtensor *q);
void cr_qtensor_free(cr_qtensor *qt);

/* ------------------------------------------------------------ byte masks */

/* A mask of the same shape as the tensor it selects from: one byte per element, 1 keeps
 * the element, 0 drops it (what pruning and sparse formats in chapter 6 read and
 * write; stored in files as U8). */
typedef struct {
    int ndim;                    /* 1..4, as cr_tensor */
    int64_t shape[CR_MAX_DIMS];
    size_t numel;
    uint8_t *data;               /* numel bytes, each 0 or 1, CR_ALIGN-aligned, owned */
} cr_mask;

/* Allocates m with the given shape, every byte 0 (nothing kept). */
cr_status cr_mask_alloc(cr_mask *m, int ndim, const int64_t *shape);
void cr_mask_free(cr_mask *m);
/* Number of elements that are 1. */
size_t cr_mask_count(const cr_mask *m);
/* Copies a U8 tensor (rank 1..4, every byte 0 or 1) into a new mask; CR_EINVAL names the
 * first offending element otherwise. */
cr_status cr_mask_from_dtensor(cr_mask *m, const cr_dtensor *src);
/* Copies m into a new U8 tensor (for writing it with cr_st_writer_add_typed). */
cr_status cr_mask_to_dtensor(cr_dtensor *out, const cr_mask *m);

#ifdef __cplusplus
}
#endif

#endif
