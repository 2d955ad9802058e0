/* cuda_gemm.h — chapter 5: the GEMM and convolution road of chapters 2-4, on an NVIDIA GPU.
 *
 * A plain C API over the CUDA kernels of gemm_kernels.cu and conv_kernels.cu: C files
 * include it without any CUDA header, and the library links the CUDA runtime only
 * (libcudart, never the driver library), so every program built on it starts on a
 * machine without a GPU; cr_cuda_available() then says 0.
 *
 * Memory: every float pointer marked "device" lives in GPU memory (cr_cuda_malloc);
 * the functions taking device pointers launch their kernels on the default stream and
 * return without waiting; cr_cuda_sync() waits and reports a kernel's failure.
 *
 * Errors: every CUDA call is checked; a failing one becomes CR_EIO (the device or its
 * runtime failed, like a failed read or write) with the CUDA message, e.g.
 * "cudaMalloc(1073741824 bytes for x): out of memory". Bad arguments are CR_EINVAL,
 * as on the CPU. lib/error.h has no CUDA-specific code, on purpose. */
#ifndef CR_CUDA_GEMM_H
#define CR_CUDA_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "conv_desc.h"
#include "error.h"
#include "gemm.h"   /* cr_trans */

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the device ----------------------------------------------------------------------- */

/* 1 if the CUDA runtime finds at least one device, else 0 (no driver, no GPU, or a
 * runtime error); never fails. The reason for a 0 is in cr_cuda_unavailable_reason(). */
int cr_cuda_available(void);
/* Why cr_cuda_available() returned 0 ("" if it returned 1 or was not called). */
const char *cr_cuda_unavailable_reason(void);
/* 1 in the emulated build (the kernels run on the CPU under emu/cr_emu.h), 0 with nvcc. */
int cr_cuda_emulated(void);

/* What the labs' CSV provenance header says about the GPU. */
typedef struct {
    char name[256];          /* "NVIDIA H100 80GB HBM3" */
    int cc_major, cc_minor;  /* compute capability */
    int driver_version;      /* cudaDriverGetVersion: 13000 for 13.0 */
    int runtime_version;     /* cudaRuntimeGetVersion */
    int sm_count;            /* streaming multiprocessors */
    size_t total_mem;        /* bytes of device memory */
    size_t l2_bytes;         /* L2 cache size */
} cr_cuda_info;

/* Fills info for device 0. */
cr_status cr_cuda_device_info(cr_cuda_info *info);

/* ---- buffers and copies (every CUDA call checked) -------------------------------------- */

/* *p = bytes of device memory; what names the buffer in the error message. */
cr_status cr_cuda_malloc(void **p, size_t bytes, const char *what);
/* Frees device memory (NULL is fine). */
void cr_cuda_free(void *p);
/* Copies bytes from host src to device dst. */
cr_status cr_cuda_to_device(void *dst, const void *src, size_t bytes);
/* Copies bytes from device src to host dst. */
cr_status cr_cuda_to_host(void *dst, const void *src, size_t bytes);
/* Fills n floats of device memory with a NaN pattern (the GPU twin of cr_tensor_poison). */
cr_status cr_cuda_poison(float *p, size_t n);
/* Waits for the device; reports a failed kernel as CR_EIO naming what. */
cr_status cr_cuda_sync(const char *what);
/* Free and total device memory in bytes (cudaMemGetInfo). */
cr_status cr_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);

/* The convolution paths share one scratch buffer (the patch matrix), grown on demand and
 * kept between calls so that timed runs do not pay for cudaMalloc. Not thread-safe.
 * Releasing it lets a lab measure each variant's peak memory from a clean start. */
cr_status cr_cuda_workspace(size_t bytes, void **p);
void cr_cuda_workspace_release(void);
/* Bytes the scratch buffer holds now. */
size_t cr_cuda_workspace_bytes(void);

/* ---- timing ------------------------------------------------------------------------------ */

/* The spread of repeated timings, in milliseconds. */
typedef struct {
    double median_ms, min_ms, max_ms;
} cr_cuda_timing;

/* Times fn(arg) with CUDA events: warmup untimed runs, then repeats timed runs, each
 * preceded, outside the timed region, by a kernel that reads twice the L2 cache's size
 * (clean lines: a write would leave dirty ones to be written back inside the timing) and
 * a synchronisation; *t receives median, min and max. fn launches work and returns a
 * status; the first failure stops the timing and is returned. */
cr_status cr_cuda_time_stats(cr_status (*fn)(void *arg), void *arg, int warmup, int repeats,
                             cr_cuda_timing *t);
/* cr_cuda_time_stats, the median only. */
cr_status cr_cuda_time(cr_status (*fn)(void *arg), void *arg, int warmup, int repeats,
                       double *median_ms);

/* ---- precisions ---------------------------------------------------------------------------- */

typedef enum {
    CR_CUDA_FP32 = 0,  /* float multiply-adds on the CUDA cores */
    CR_CUDA_TF32,      /* tensor cores, inputs rounded to TF32 (10-bit mantissa), FP32 sums */
    CR_CUDA_FP16,      /* tensor cores, inputs rounded to IEEE half, FP32 sums */
    CR_CUDA_BF16       /* tensor cores, inputs rounded to bfloat16, FP32 sums */
} cr_cuda_precision;

/* "fp32", "tf32", "fp16", "bf16". */
const char *cr_cuda_precision_name(cr_cuda_precision p);
/* The bound on ||C - C64|| / ||C64|| (C64: the float64 product) that a GEMM of precision p
 * and depth K meets on operands drawn uniformly from [-1, 1]: the one table the tests and
 * lab 5 share. FP32 grows with K (chapter 3's bounds). TF32 and FP16 keep 11 significant
 * bits (unit roundoff u = 2^-11), BF16 8 (u = 2^-8): each product a*b picks up a relative
 * error d1 + d2 (the two roundings, each about uniform on [-u, u], variance u^2/3), the
 * sums are FP32, so the expected relative L2 error is sqrt(2/3) u: 4.0e-4 (TF32, FP16),
 * 3.2e-3 (BF16). The bounds are 2.5 times that. */
double cr_cuda_gemm_tolerance(cr_cuda_precision p, int64_t K);
/* Converts n floats (device src) to fp16 or bf16 (device dst, 2 bytes each), round to
 * nearest even; the lab feeds cuBLAS's half-precision GEMMs with it. */
cr_status cr_cuda_convert(const float *src, void *dst, size_t n, cr_cuda_precision to);

/* ---- GEMM on device pointers ------------------------------------------------------------------ */

/* C (M x N, ldc) = alpha * op(A) (M x K) * op(B) (K x N) + beta * C, row-major, with
 * chapter 3's BLAS semantics (gemm.h): beta == 0 means C is not read, K == 0 or
 * alpha == 0 leave only beta * C; sizes may be 0. A, B and C are device pointers. The
 * arguments are checked like chapter 3's (CR_EINVAL naming lda, ldb, ldc, ...). */
typedef cr_status (*cr_cuda_gemm_fn)(cr_trans ta, cr_trans tb, int64_t M, int64_t N,
                                     int64_t K, float alpha, const float *A, int64_t lda,
                                     const float *B, int64_t ldb, float beta, float *C,
                                     int64_t ldc);

/* Kernel 1: one thread per element of C, consecutive threads down a column (uncoalesced). */
cr_status cr_cuda_gemm_naive(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                             float alpha, const float *A, int64_t lda, const float *B,
                             int64_t ldb, float beta, float *C, int64_t ldc);
/* Kernel 2: the same, consecutive threads along a row of C and B (coalesced). */
cr_status cr_cuda_gemm_coalesced(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                                 float alpha, const float *A, int64_t lda, const float *B,
                                 int64_t ldb, float beta, float *C, int64_t ldc);
/* Kernel 3: 32 x 32 tiles of A and B staged in shared memory. */
cr_status cr_cuda_gemm_smem(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                            float alpha, const float *A, int64_t lda, const float *B,
                            int64_t ldb, float beta, float *C, int64_t ldc);
/* Kernel 4: 64 x 64 block tiles, each thread 8 elements of a column (1-D register tile). */
cr_status cr_cuda_gemm_reg1d(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                             float alpha, const float *A, int64_t lda, const float *B,
                             int64_t ldb, float beta, float *C, int64_t ldc);
/* Kernel 5: 128 x 128 block tiles, each thread an 8 x 8 tile (2-D register tile). */
cr_status cr_cuda_gemm_reg2d(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                             float alpha, const float *A, int64_t lda, const float *B,
                             int64_t ldb, float beta, float *C, int64_t ldc);
/* Kernel 6: kernel 5 with 16-byte (float4) loads and stores where layout and alignment
 * allow (falls back to scalar loads for transposed or unaligned operands). The FP32
 * default (cr_cuda_sgemm). */
cr_status cr_cuda_gemm_vec4(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                            float alpha, const float *A, int64_t lda, const float *B,
                            int64_t ldb, float beta, float *C, int64_t ldc);
/* Kernels 7-9: tensor cores through WMMA, 128 x 128 block tiles, 8 warps of 64 x 32,
 * operands rounded to TF32, FP16 or BF16 as they are staged in shared memory, FP32
 * accumulation. Need compute capability 8.0 or newer. */
cr_status cr_cuda_gemm_tf32(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                            float alpha, const float *A, int64_t lda, const float *B,
                            int64_t ldb, float beta, float *C, int64_t ldc);
cr_status cr_cuda_gemm_fp16(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                            float alpha, const float *A, int64_t lda, const float *B,
                            int64_t ldb, float beta, float *C, int64_t ldc);
cr_status cr_cuda_gemm_bf16(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K,
                            float alpha, const float *A, int64_t lda, const float *B,
                            int64_t ldb, float beta, float *C, int64_t ldc);
/* The FP32 default: kernel 6. */
cr_status cr_cuda_sgemm(cr_trans ta, cr_trans tb, int64_t M, int64_t N, int64_t K, float alpha,
                        const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                        float *C, int64_t ldc);

/* One kernel of the progression, for tables (the chapter 3 step-table pattern). */
typedef struct {
    const char *name;              /* "naive", "coalesced", ..., "tf32", "fp16", "bf16" */
    cr_cuda_gemm_fn fn;
    cr_cuda_precision precision;
    const char *what;              /* one line for tables and messages */
} cr_cuda_gemm_step;
/* The kernels in reading order; *count receives their number. */
const cr_cuda_gemm_step *cr_cuda_gemm_steps(int *count);

/* ---- convolution on device pointers ------------------------------------------------------------ */

/* y = conv2d(x, w, b) for the bound shape s (cr_conv_shape_init): x (N x Cin x H x W),
 * w (Cout x Cin/groups x kh x kw, OIHW), b (Cout, NULL exactly when s->p.bias is false),
 * y (N x Cout x Ho x Wo, overwritten); all device pointers, NCHW float32. Every
 * nn.Conv2d option: stride, dilation, per-side padding in the four padding modes, groups. */
typedef cr_status (*cr_cuda_conv2d_fn)(const cr_conv_shape *s, const float *x, const float *w,
                                       const float *b, float *y);

/* Chapter 1 on the GPU: one thread per output element, the seven loops' inner three. */
cr_status cr_cuda_conv2d_direct(const cr_conv_shape *s, const float *x, const float *w,
                                const float *b, float *y);
/* Chapter 2's recipe: im2col of one image into the workspace, then one cr_cuda_sgemm per
 * group (y pre-filled with the bias, beta = 1). */
cr_status cr_cuda_conv2d_im2col(const cr_conv_shape *s, const float *x, const float *w,
                                const float *b, float *y);
/* Implicit GEMM: one kernel, M = Cout/groups, N = batch * Ho * Wo, K = Cin/groups * kh * kw;
 * the B tile is gathered from the image as it is staged, the patch matrix never exists. */
cr_status cr_cuda_conv2d_implicit(const cr_conv_shape *s, const float *x, const float *w,
                                  const float *b, float *y);
/* The chapter's default: direct for few channels per group, implicit GEMM otherwise. */
cr_status cr_cuda_conv2d(const cr_conv_shape *s, const float *x, const float *w,
                         const float *b, float *y);
/* Which path cr_cuda_conv2d takes for s: "direct" or "implicit". */
const char *cr_cuda_conv2d_path(const cr_conv_shape *s);
/* The im2col recipe on the tensor cores: per image, its patch matrix (none for a 1 x 1,
 * stride-1, unpadded kernel: the image is its own patch matrix), then one WMMA GEMM per
 * group (cr_cuda_gemm_tf32, _fp16 or _bf16 for prec TF32, FP16, BF16): the GEMM's operands
 * rounded to prec, sums and y in FP32. Same arguments as cr_cuda_conv2d. */
cr_status cr_cuda_conv2d_tc(const cr_conv_shape *s, cr_cuda_precision prec, const float *x,
                            const float *w, const float *b, float *y);
/* The implicit GEMM on the tensor cores: one kernel, M = Cout/groups, N = batch * Ho * Wo,
 * K = Cin/groups * kh * kw (groups on the grid), kernels 7-9's 128 x 128 block tile; the
 * OIHW weights and the NCHW patches gathered from x rounded to prec (TF32, FP16, BF16) as
 * they are staged, FP32 sums, bias added in FP32, y NCHW. Same arguments as cr_cuda_conv2d_tc. */
cr_status cr_cuda_conv2d_implicit_tc(const cr_conv_shape *s, cr_cuda_precision prec,
                                     const float *x, const float *w, const float *b, float *y);
/* The default at a precision: at TF32, FP16, BF16, convolutions with at least 64 output
 * channels per group (half the 128-row tile) take cr_cuda_conv2d_implicit_tc; FP32 and
 * fewer channels per group (ResNeXt's grouped layers: a tile mostly empty) cr_cuda_conv2d. */
cr_status cr_cuda_conv2d_at(const cr_conv_shape *s, cr_cuda_precision prec, const float *x,
                            const float *w, const float *b, float *y);
/* The path cr_cuda_conv2d_at takes: "direct", "implicit", "tf32_implicit", "fp16_implicit"
 * or "bf16_implicit". */
const char *cr_cuda_conv2d_path_at(const cr_conv_shape *s, cr_cuda_precision prec);
/* Bytes of workspace a path uses for s (im2col: one image's patch matrix; others: 0). */
size_t cr_cuda_conv2d_workspace_bytes(const cr_conv_shape *s, cr_cuda_conv2d_fn fn);

/* One convolution path, for tables. */
typedef struct {
    const char *name;              /* "direct", "im2col", "implicit", "default" */
    cr_cuda_conv2d_fn fn;
    const char *what;
} cr_cuda_conv_path;
/* The paths in reading order, the default last; *count receives their number. */
const cr_cuda_conv_path *cr_cuda_conv_paths(int *count);

/* The backward pass (chapter 4's contract, conv_backward.h) on device pointers: given
 * dy (N x Cout x Ho x Wo), writes dx (like x), dw (like w), db (Cout); each of dx, dw, db
 * may be NULL (not computed; db must be NULL when s->p.bias is false). Per image and group:
 *   dX_g = col2im(W_g^T dY_g)   (cr_cuda_sgemm with A transposed, then an atomic scatter
 *                                through the padding map)
 *   dW_g += dY_g cols_g^T       (im2col, then cr_cuda_sgemm with B transposed, beta = 1)
 *   db    = per-channel sums of dY (one block per channel). */
cr_status cr_cuda_conv2d_backward(const cr_conv_shape *s, const float *x, const float *w,
                                  const float *dy, float *dx, float *dw, float *db);

#ifdef __cplusplus
}
#endif

#endif
