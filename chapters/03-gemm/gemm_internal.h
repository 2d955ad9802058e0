/* gemm_internal.h — what the chapter's translation units share and the public
 * header does not promise: the micro-kernel contract, the kernels' block sizes,
 * the packing interface and the five-loop engine that the GEMM steps and the
 * fused convolution both run on. */
#ifndef CR_GEMM_INTERNAL_H
#define CR_GEMM_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "error.h"

/* The micro-kernel contract (BLIS's): C (MR x NR, row stride ldc) = beta * C +
 * Ap * Bp, where Ap is a packed kc x MR panel of A (k-major: MR values of one k
 * after another) and Bp a packed kc x NR panel of B (NR values per k). With
 * beta == 0, C is written without being read. */
typedef void (*cr_ukernel_fn)(int64_t kc, const float *Ap, const float *Bp, float *C,
                              int64_t ldc, float beta);
/* The same product with B read in place: row k of the kc x NR panel is B + k * ldb (a
 * row-major B's columns jr..jr+NR-1, not copied). next (NULL: none): the next panel's
 * row 0, whose rows the kernel prefetches as it goes (B's rows are far apart in memory,
 * which the hardware prefetchers do not follow). */
typedef void (*cr_ukernel_ldb_fn)(int64_t kc, const float *Ap, const float *B, int64_t ldb,
                                  const float *next, float *C, int64_t ldc, float beta);

/* The same product with B read in place in segments of rows: rows of one segment are
 * ldb floats apart, and skip floats more separate the last row of a segment from the
 * first of the next; the first segment has `first` rows, every later one `seg` (a
 * convolution's pixels: one output row after another, each a row of the padded input
 * apart). next (NULL: none): a panel to prefetch row by row, in the same segments. */
typedef void (*cr_ukernel_seg_fn)(int64_t kc, const float *Ap, const float *B, int64_t ldb,
                                  int64_t first, int64_t seg, int64_t skip, const float *next,
                                  float *C, int64_t ldc, float beta);

/* A micro-kernel and the cache blocks that go with it. */
typedef struct {
    const char *name;   /* "avx2", "avx512", "portable" */
    int mr, nr;         /* the register tile */
    int64_t mc, kc, nc; /* cache blocks: A block mc x kc in L2, B panel kc x nr in L1, B block kc x nc in L3 */
    cr_ukernel_fn kernel;
    cr_ukernel_ldb_fn kernel_ldb;  /* NULL: this kernel always reads B packed */
    cr_ukernel_fn kernel_half;     /* the left NR/2 columns of a packed panel, for an edge
                                      of at most NR/2 (NULL: the full kernel does it) */
    cr_ukernel_seg_fn kernel_seg;  /* B in place in segments (NULL: this kernel has none) */
} cr_gemm_kernel;

#define CR_MAX_MR 16
#define CR_MAX_NR 32

extern const cr_gemm_kernel cr_kernel_portable;  /* gemm.c, plain C */
extern const cr_gemm_kernel cr_kernel_avx2;      /* gemm_avx2.c, -mavx2 -mfma */
extern const cr_gemm_kernel cr_kernel_avx512;    /* gemm_avx512.c, -mavx512f */
extern const cr_gemm_kernel cr_kernel_avx512_small_m;  /* the same, 8 rows, for M <= 256 */

/* True if the CPU runs AVX2 and FMA (and the OS saves ymm state). */
int cr_cpu_has_avx2(void);
/* True if the CPU runs AVX-512F (and the OS saves zmm state). */
int cr_cpu_has_avx512(void);
/* The kernel cr_sgemm uses now (see cr_gemm_set_kernel). */
const cr_gemm_kernel *cr_gemm_active_kernel(void);
/* The variant of kernel k for a product with M rows (AVX-512: 8 rows when M <= 256). */
const cr_gemm_kernel *cr_gemm_kernel_for(const cr_gemm_kernel *k, int64_t M);

/* ---- packing ------------------------------------------------------------------ */

/* Packs rows [r0, r0+rows) and depth [k0, k0+kc) of an operand into panels of
 * `panel` rows: panel q holds, for each k, `panel` consecutive values (rows past
 * the operand's end are zero), each multiplied by scale. For A the rows are M;
 * for B the rows are N (B is packed as its transpose: NR columns per panel). */
typedef void (*cr_pack_fn)(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                           int panel, float scale, float *dst);

/* An operand as the engine sees it: a packing function and its context. For B, rows
 * (optional, NULL: none) says that B is also a plain row-major K x N matrix, element
 * (k, n) at rows[k * ld + n]: the engine may then read its full NR-column panels in place
 * instead of packing them (see cr_gemm_engine). */
typedef struct {
    cr_pack_fn pack;
    const void *ctx;
    const float *rows;
    int64_t ld;
} cr_gemm_operand;

/* A matrix read through strides: element (row r, depth k) is p[r * rs + k * cs]. */
typedef struct {
    const float *p;
    int64_t rs, cs;
} cr_strided;

/* cr_pack_fn for a cr_strided context: handles op(A) and op(B) in either orientation. */
void cr_pack_strided(const void *ctx, int64_t r0, int64_t rows, int64_t k0, int64_t kc,
                     int panel, float scale, float *dst);

/* ---- the engine ----------------------------------------------------------------- */

/* C (M x N, ldc) = beta * C + alpha * A * B through the five loops around kd's
 * micro-kernel; A yields M x K, B yields (as its transpose) N x K. threads: 1 for
 * one thread, 0 for as many as OpenMP offers (1 inside a parallel region). When B has
 * rows, kd has kernel_ldb and all of M fits in one MC block of kd, B's full panels are
 * read in place (only an edge panel is packed): the same products in the same order, so
 * the same bits as packing. */
cr_status cr_gemm_engine(const cr_gemm_kernel *kd, int64_t M, int64_t N, int64_t K,
                         const cr_gemm_operand *A, const cr_gemm_operand *B, float alpha,
                         float beta, float *C, int64_t ldc, int threads);

/* Bytes of packing buffers cr_gemm_engine allocates for this product and thread count. */
size_t cr_gemm_engine_workspace(const cr_gemm_kernel *kd, int64_t M, int64_t N, int64_t K,
                                int threads);

/* ---- helpers of the unpacked steps -------------------------------------------- */

/* C block (m x n, ldc) = beta * C + alpha * A (m x k, strides rsa/csa) * B (k x n,
 * strides rsb/csb), scalar; the edges of the unpacked steps. */
void cr_gemm_tile_scalar(int64_t m, int64_t n, int64_t k, float alpha, const float *A,
                         int64_t rsa, int64_t csa, const float *B, int64_t rsb, int64_t csb,
                         float beta, float *C, int64_t ldc);

/* The AVX2 6 x 16 kernel of steps 3 and 4, reading A (6 x kc) and B (kc x 16)
 * through strides: C = beta * C + alpha * A * B (beta == 0: C not read). */
void cr_avx2_kernel_unpacked(int64_t kc, const float *A, int64_t rsa, int64_t csa,
                             const float *B, int64_t rsb, int64_t csb, float *C, int64_t ldc,
                             float alpha, float beta);
#define CR_UNPACKED_MR 6
#define CR_UNPACKED_NR 16

/* Number of OpenMP threads a parallel region started here would get (1 without OpenMP
 * or inside a parallel region). */
int cr_gemm_threads_available(void);
/* How many times, since the program started, cr_gemm_threads_available was asked from
 * inside a parallel region of one thread (an OpenMP `if` that was false). A fork there
 * starts a nested team, which cost 1.7 ms against 0.18 for one GEMM on a Zen 5 VM
 * (chapter 4); tests check that the library's paths never do it. */
long cr_gemm_one_thread_region_calls(void);

/* ---- the grouped convolution's direct kernels (conv_avx2.c, conv_avx512.c) ------- */

#include "conv_desc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The column block of the AVX2 direct grouped kernel (3 ymm vectors), 4 channels. */
#define CR_GROUPED_OWB 24
/* The column block of the AVX-512 one (3 zmm vectors) and its channel block. */
#define CR_GROUPED_OWB_AVX512 48
#define CR_GROUPED_COB_AVX512 8

/* A direct kernel: y (one image and group, Cout_g x flat, channels ystride apart) = b_g
 * (NULL: no bias) + the convolution's sums at flat places [0, flat), place f of output
 * channel o reading tap t = (c*kh + r)*kw + q at xp[f + tap_off[t]] with weight
 * w_g[o][t] (w_g: Cout_g x Cin_g x kh x kw). The caller's layout of xp makes place f an
 * output (conv_gemm.c: grouped_geom_t). Only the output channels of channel blocks
 * [blk0, blk1) are computed, each in passes of tc >= 1 taps over all places (the sums
 * kept in y between passes, in the same order as one pass: the same bits). */
typedef void (*cr_grouped_fn)(const cr_conv_shape *s, const int64_t *tap_off, const float *xp,
                              const float *w_g, const float *b_g, float *y, int64_t ystride,
                              int64_t flat, int64_t blk0, int64_t blk1, int64_t tc);

/* For tests and the lab: the direct convolution's input layout, 0 one padded copy split
 * by column phases, 1 shifted copies per kernel column, anything else (-1) the one its
 * cost model picks per shape (the default). Not thread-safe against running convolutions. */
void cr_grouped_force_layout(int layout);

/* For tests and the lab: the direct kernel's taps a pass (>= 1), or anything else (0) the
 * one grouped_tap_pass picks per shape (the default). Not thread-safe against running
 * convolutions. */
void cr_grouped_force_tap_pass(int64_t taps);

/* The taps a pass cr_conv2d_grouped's kernel takes for shape s (Cin_g*kh*kw: one pass). */
int64_t cr_grouped_tap_pass(const cr_conv_shape *s);

/* The layout cr_conv2d_grouped takes for shape s ("phases" or "shifted"): the forced one
 * while a layout is forced, else the cost model's. Call only where the CPU has AVX2. */
const char *cr_grouped_layout_name(const cr_conv_shape *s);

/* A direct kernel and its blocks. */
typedef struct {
    const char *name;   /* "avx2", "avx512" */
    int64_t owb, cob;   /* column block (outputs per register row), channel block */
    cr_grouped_fn fn;
} cr_grouped_kernel;

/* cr_grouped_fn with AVX2: 4 channels x 24 outputs in 12 ymm. */
void cr_grouped_conv_avx2(const cr_conv_shape *s, const int64_t *tap_off, const float *xp,
                          const float *w_g, const float *b_g, float *y, int64_t ystride,
                          int64_t flat, int64_t blk0, int64_t blk1, int64_t tc);
/* cr_grouped_fn with AVX-512: 8 channels x 48 outputs in 24 zmm. */
void cr_grouped_conv_avx512(const cr_conv_shape *s, const int64_t *tap_off, const float *xp,
                            const float *w_g, const float *b_g, float *y, int64_t ystride,
                            int64_t flat, int64_t blk0, int64_t blk1, int64_t tc);

#ifdef __cplusplus
}
#endif

#endif
