/* sparse_conv.h — chapter 6: convolution with an unstructured sparse weight.
 *
 * The weight (Cout x Cin/groups x kh x kw, OIHW) is stored in CSR over its rows: one row
 * per output channel, whose columns are the taps k = (c*kh + r)*kw + s of that channel's
 * group (the rows of chapter 2's patch matrix). Only the kept weights are stored: a value
 * and a 32-bit column each, plus one row start per output channel.
 *
 * Execution is "sparse weight times dense input" (Elsen et al., Fast Sparse ConvNets,
 * 2019): every kept weight w[o,k] adds w[o,k] times a whole row of the patch matrix to
 * output row o. That row is never built: as in chapter 3's grouped kernel, the input is
 * copied once into a padded plane (split into stride phases along W when the stride is
 * not 1), and patch row k is that plane shifted by a fixed offset, so each kept weight is
 * one broadcast and a run of vector FMAs over 64 consecutive output pixels. The weights
 * are walked in blocks of input channels, every output channel finishing one block
 * before the next, so that the input a block reads stays in the L1 cache. The SIMD
 * kernel (AVX-512, AVX2 or portable C) is chosen at run time, following chapter 3's
 * cr_sgemm choice.
 *
 * Every convolution here has chapter 1's contract except that the weight comes as a
 * cr_csr_weight: x is N x Cin x H x W, b is Cout or NULL, y is N x Cout x Ho x Wo
 * (preallocated, overwritten); every nn.Conv2d option is supported. */
#ifndef CR_SPARSE_CONV_H
#define CR_SPARSE_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "conv_desc.h"
#include "dtype.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A convolution weight in CSR over output channels. */
typedef struct {
    int64_t cout, cin_g, kh, kw;  /* the dense weight's shape */
    int64_t *row_ptr;             /* cout + 1: row o's entries are [row_ptr[o], row_ptr[o+1]) */
    int32_t *col;                 /* nnz taps k = (c*kh + r)*kw + s, increasing in each row */
    float *val;                   /* nnz weights */
    size_t nnz;                   /* kept weights */
} cr_csr_weight;

/* Builds the CSR of w (Cout x Cin_g x kh x kw), keeping w's nonzeros where mask is 1
 * (mask: NULL, or w's shape); a weight the mask drops or that is 0 is not stored. */
cr_status cr_csr_from_weight(cr_csr_weight *out, const cr_tensor *w, const cr_mask *mask);
/* Frees the arrays and zeroes the struct (safe on a zeroed struct). */
void cr_csr_free(cr_csr_weight *c);
/* Bytes of the CSR: row starts (8 each), columns (4 each) and values (4 each). */
size_t cr_csr_bytes(const cr_csr_weight *c);
/* Fraction of the dense weight's elements that are stored (nnz / numel). */
double cr_csr_density(const cr_csr_weight *c);
/* Writes the dense weight (Cout x Cin_g x kh x kw, zeros where nothing is stored) into w,
 * which must have that shape. */
cr_status cr_csr_to_dense(const cr_csr_weight *c, cr_tensor *w);

/* The plain reference: seven loops as chapter 1's, the inner two over a row's stored taps. */
cr_status cr_sparse_conv2d_ref(const cr_conv_params *p, const cr_tensor *x,
                               const cr_csr_weight *w, const cr_tensor *b, cr_tensor *y);
/* The fast version: each kept weight a broadcast FMA over 64 output pixels of the shifted
 * padded plane at a time; OpenMP threads share the pixel blocks, or the (image, group)
 * pairs when there are many. */
cr_status cr_sparse_conv2d(const cr_conv_params *p, const cr_tensor *x,
                           const cr_csr_weight *w, const cr_tensor *b, cr_tensor *y);
/* The kernel cr_sparse_conv2d runs now: "avx512", "avx2" or "portable" (it follows
 * chapter 3's cr_gemm_kernel_name(), so CR_GEMM_KERNEL and cr_gemm_set_kernel pick it). */
const char *cr_sparse_conv2d_kernel(void);
/* Bytes of workspace cr_sparse_conv2d uses per (image, group) in flight. */
size_t cr_sparse_conv2d_workspace_bytes(const cr_conv_shape *s);

/* ---- choosing sparse or dense ------------------------------------------------------- */

/* Break-even sparsities (fraction of weights zero) at and above which cr_conv2d_auto runs
 * cr_sparse_conv2d instead of chapter 3's cr_conv2d_fast: the highest break-even lab 6
 * measured over the seven standard layers, one thread, rounded up to 0.05 (AMD EPYC
 * Zen 5 with AVX-512, 2 cores, 2026-11-29; the AVX2 pair measured on the same CPU with
 * CR_GEMM_KERNEL=avx2, so an AVX2-only CPU may differ; see execution.md). */
#define CR_SPARSE_BREAK_EVEN_AVX512 0.75
#define CR_SPARSE_BREAK_EVEN_AVX2 0.60
/* CR_GEMM_KERNEL=portable on the same CPU (lab 6 --quick; the dense 3x3 layers still took
 * chapter 3's AVX2 direct kernel there): a CPU without AVX2 was not measured. */
#define CR_SPARSE_BREAK_EVEN_PORTABLE 0.95

/* The break-even sparsity of the kernel cr_sparse_conv2d runs now. */
double cr_sparse_break_even(void);
/* True if the sparse path should run a convolution whose weight has this sparsity. */
int cr_sparse_pays(double sparsity);

/* Runs cr_sparse_conv2d(csr) if cr_sparse_pays(1 - density of csr), else chapter 3's
 * cr_conv2d_fast(w_dense); w_dense and csr must hold the same (masked) weight. */
cr_status cr_conv2d_auto(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w_dense,
                         const cr_csr_weight *csr, const cr_tensor *b, cr_tensor *y);

#ifdef __cplusplus
}
#endif

#endif
