/* bf16_conv.h — chapter 7: convolution executed in bf16 with fp32 sums, and a whole
 * chapter 4 model (chapter 8's FPN, say) run with its convolutions in bf16; and the same
 * with IEEE fp16 storage (CR_HALF_FP16, at the end of this comment).
 *
 * bf16 keeps float32's 8-bit exponent and cuts the significand to 8 bits (7 stored).
 * The product of two bf16 numbers has at most 16 significant bits, so it is exact in
 * float32; only the sums round. The convolution here is
 *
 *     y[n][o][j] = b[o] + sum_k bf16(w[o][k]) * bf16(patch_n[k][j])       (f32 sums)
 *
 * with the weights rounded to bf16 once (cr_bf16_conv_prepare, round to nearest even,
 * lib's cr_f32_to_bf16), the patches of each image and group (every padding mode,
 * stride, dilation, groups) gathered straight into bf16, multiplied with vdpbf16ps in
 * the bf16 GEMM's order (int8_gemm.h), and the float bias added to each sum. Where the
 * CPU has AVX512-BF16 the gather writes the GEMM's packed panels itself (path
 * "packed"); elsewhere it writes a bf16 patch matrix for cr_gemm_bf16's portable loop
 * (path "gemm"; a 1x1 stride-1 unpadded convolution only converts its input rows).
 * Output and input stay float32 NCHW: the model's other modules (norms, ReLU, pools,
 * up-sampling, adds) do not change.
 *
 * fp16 (IEEE binary16: 11-bit significand, 5-bit exponent, largest finite 65504) has no
 * multiply with fp32 sums on this book's CPUs, so fp16 is a *storage* format here: the
 * weights are kept as fp16 bits, each image's input is converted to fp16 once per
 * convolution (half the bytes of float32's), and chapter 3's fp32 GEMM engine multiplies
 * them, its packing gathering the patches from the fp16 input as chapter 3's fused
 * convolution does (no patch matrix) and widening both operands to float32 (vcvtph2ps
 * where the CPU has F16C) — exactly, so every product of two fp16 values (22 significant
 * bits) is exact in float32 and only the sums round:
 *
 *     y[n][o][j] = b[o] + sum_k fp16(w[o][k]) * fp16(patch_n[k][j])       (f32 sums)
 *
 * in chapter 3's kernel's order: the same bits as cr_sgemm on the widened im2col matrices.
 * Rounding to fp16 is lib's cr_f32_to_f16 (nearest even; from 65520 up: infinity). */
#ifndef CR_BF16_CONV_H
#define CR_BF16_CONV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "conv_desc.h"
#include "error.h"
#include "model.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The 16-bit format a prepared convolution keeps its operands in. */
typedef enum { CR_HALF_BF16 = 0, CR_HALF_FP16 = 1 } cr_half_format;

/* A prepared bf16 (or fp16) convolution: everything that does not depend on the input. */
typedef struct {
    cr_conv_params p;
    cr_half_format fmt;        /* CR_HALF_BF16 for cr_bf16_conv_prepare */
    int64_t cin_g, cout_g, K;  /* K = Cin/groups * kh * kw: the GEMM's depth */
    uint16_t *w;               /* Cout x K bits of fmt (OIHW order), group after group */
    float *bias;               /* Cout floats as given, NULL without bias */
} cr_bf16_conv;

/* Rounds w (Cout x Cin/groups x kh x kw float, OIHW) to bf16 once and keeps a copy of b
 * (Cout, or NULL exactly when p->bias is false). CR_EINVAL names what does not fit. */
cr_status cr_bf16_conv_prepare(cr_bf16_conv *bc, const cr_conv_params *p, const cr_tensor *w,
                               const cr_tensor *b);
/* The same in format fmt: CR_HALF_FP16 rounds w to fp16 (cr_f32_to_f16) once, and the
 * forward then runs the fp16-storage path above. */
cr_status cr_half_conv_prepare(cr_bf16_conv *bc, cr_half_format fmt, const cr_conv_params *p,
                               const cr_tensor *w, const cr_tensor *b);
/* Frees what bc holds and zeroes it (safe on a zeroed struct). */
void cr_bf16_conv_free(cr_bf16_conv *bc);
/* Bytes of the prepared weights and bias: 2 per weight, 4 per bias entry. */
size_t cr_bf16_conv_bytes(const cr_bf16_conv *bc);

/* y (N x Cout x Ho x Wo float, preallocated, overwritten) = the prepared convolution of
 * x (N x Cin x H x W float), on the path cr_bf16_conv_path() names (an fp16 convolution:
 * the fp16 input and chapter 3's engine, cr_fp16_storage_path()). Threaded with
 * OpenMP, the same bits for any thread count. CR_EINVAL names a tensor that does not
 * fit. */
cr_status cr_bf16_conv_forward(const cr_bf16_conv *bc, const cr_tensor *x, cr_tensor *y);

/* Which forward cr_bf16_conv_forward runs: "packed" (the gather writes the bf16 GEMM's
 * packed panels directly, rounding with vcvtne2ps2bf16, and the panel kernel multiplies
 * them: no patch matrix, AVX512-BF16 only), "gemm" (a bf16 patch matrix per image and
 * group, then cr_gemm_bf16: any CPU), or "auto" (packed where the CPU runs it; the
 * default). Both give the same bits where both run. CR_EINVAL for an unknown name, or
 * packed on a CPU without AVX512-BF16. Not thread-safe (one process-wide choice). */
cr_status cr_bf16_conv_set_path(const char *name);
/* The path that runs now: "packed" or "gemm". */
const char *cr_bf16_conv_path(void);

/* A cr_conv2d_fn: prepare, forward and free in one call (tests and one-off layers). */
cr_status cr_conv2d_bf16(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y);

/* The definition, a cr_conv2d_fn: the seven loops on x and w rounded to bf16, each
 * product exact in float, the sums in double, + bias, rounded once to float. */
cr_status cr_conv2d_bf16_ref(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                             const cr_tensor *b, cr_tensor *y);

/* ---- fp16 storage ------------------------------------------------------------------- */

/* cr_conv2d_bf16 and cr_conv2d_bf16_ref with fp16 in place of bf16 (cr_conv2d_fn). */
cr_status cr_conv2d_fp16(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                         const cr_tensor *b, cr_tensor *y);
cr_status cr_conv2d_fp16_ref(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                             const cr_tensor *b, cr_tensor *y);

/* C (M x N float, ldc, overwritten) = A (M x K fp16 bits, row-major, lda) * B (K x N fp16
 * bits, row-major, ldb): chapter 3's engine and kernel for M rows (cr_gemm_kernel_for),
 * its packing widening fp16 to float32, so the same bits as cr_sgemm on the widened
 * matrices. threads: 1, or 0 for OpenMP's (as cr_gemm_engine). */
cr_status cr_gemm_fp16(int64_t M, int64_t N, int64_t K, const uint16_t *A, int64_t lda,
                       const uint16_t *B, int64_t ldb, float *C, int64_t ldc, int threads);
/* How fp16 is converted now: "f16c512" (vcvtps2ph / vcvtph2ps on 16 lanes, AVX-512F),
 * "f16c" (8 lanes, AVX2 with F16C) or "portable" (lib's scalar cr_f32_to_f16 and
 * cr_f16_to_f32); all give the same bits. */
const char *cr_fp16_storage_path(void);
/* Chooses it: "auto" (the best this CPU runs; the default) or one of the names above
 * that this CPU runs (the tests run each). CR_EINVAL otherwise. Not thread-safe. */
cr_status cr_fp16_storage_set_path(const char *name);
/* n floats to fp16 bits, lib's cr_f32_to_f16 bit for bit (NaNs included), vectorized
 * where the CPU has F16C. */
void cr_f32_to_f16_row(const float *src, uint16_t *dst, int64_t n);

/* Frees the scratch the gemm path and fp16 keep between calls (bf16 patch matrices, fp16
 * inputs: cr_bf16_conv_forward keeps up to 8, so that a model's next convolution does not
 * map fresh pages; the last attached model's detach calls this). Safe at any time no
 * forward runs. */
void cr_half_scratch_release(void);

/* ---- a whole model in bf16 ---------------------------------------------------------- */

/* A model whose convolutions run in bf16. cr_bf16_model_attach prepares every conv
 * module's weights once and installs a dispatcher as the model's conv_forward (as
 * chapter 6's sparse model does, not a module hook: a hook makes the evaluation forward
 * run module by module and switches off chapter 4's fusions, BatchNorm into its
 * reader, add + ReLU, the shared buffers, which would make the fp32 / bf16 latency
 * comparison unfair). The dispatcher finds the layer by its module's parameters
 * (&mods[i].conv). Evaluation only: a forward in training mode fails with CR_EINVAL.
 * Change no weight while attached (the bf16 copies were taken at attach time; a weight
 * whose storage moved is refused). Attaching and detaching are not thread-safe (a
 * process-wide list of attached models). */
typedef struct cr_bf16_model {
    cr_model *model;           /* borrowed */
    cr_conv2d_fn prev;         /* the model's conv_forward before the attach */
    int n;                     /* convolutions */
    int *module;               /* n: the conv modules' indices */
    const float **weight;      /* n: their weights' storage at attach time */
    cr_bf16_conv *convs;       /* n: prepared */
    int64_t calls;             /* bf16 convolutions run since the attach */
    struct cr_bf16_model *next;  /* the list of attached models */
} cr_bf16_model;

/* Prepares every conv module of m in bf16 and installs the dispatcher. CR_EINVAL on a
 * NULL argument, a model without convolutions, a model or a bm already attached; bm is
 * zeroed on every failure but the last, so detaching it afterwards is always safe. */
cr_status cr_bf16_model_attach(cr_bf16_model *bm, cr_model *m);
/* The same in format fmt (CR_HALF_FP16: the model's convolutions with fp16 storage). */
cr_status cr_half_model_attach(cr_bf16_model *bm, cr_model *m, cr_half_format fmt);
/* Restores m's conv_forward, leaves the list and frees the prepared weights; safe on a
 * zeroed struct. */
void cr_bf16_model_detach(cr_bf16_model *bm);
/* Bytes of the executed model's parameters and buffers: convolution weights 2 bytes
 * each (bf16 or fp16), their biases and every other module's tensors (norms' weights, biases, running
 * statistics) 4. */
size_t cr_bf16_model_bytes(const cr_bf16_model *bm);

#ifdef __cplusplus
}
#endif

#endif
