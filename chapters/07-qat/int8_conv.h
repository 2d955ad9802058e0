/* int8_conv.h — chapter 7: requantization and the int8 convolution.
 *
 * A quantized convolution as PyTorch's converted model runs it (torch.ao.nn.quantized
 * Conv2d / ConvReLU2d): input x u8 per tensor (scale s_x, zero point z_x), weights
 * s8 per output channel, symmetric (scale s_w[o], zero point 0), bias float, output
 * y u8 per tensor (s_y, z_y). In integers:
 *
 *     acc[o][j] = sum_k w[o][k] * (x[k][j] - z_x)             (int32, exact)
 *     y[o][j]   = clamp(z_y + round(M[o] * (acc + b_q[o])), lo, 255)
 *
 * with b_q[o] = round(b[o] / (s_x s_w[o])), M[o] = s_x s_w[o] / s_y, lo = z_y with
 * ReLU fused, else 0. M[o] is applied in fixed point: M ~ mult * 2^-shift (see
 * cr_qmul_from_real), the product rounded half to even. */
#ifndef CR_INT8_CONV_H
#define CR_INT8_CONV_H

#include <stddef.h>
#include <stdint.h>

#include "conv_desc.h"
#include "dtype.h"
#include "error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- requantization ---------------------------------------------------------------- */

/* A real multiplier in fixed point: real ~ mult * 2^-shift. */
typedef struct {
    int32_t mult;    /* in [2^30, 2^31), or smaller only when shift is 61 */
    int32_t shift;   /* in [1, 61] */
} cr_qmul;

/* Writes the fixed-point form of real into *m: mult = round(real * 2^shift) with the
 * shift that puts mult in [2^30, 2^31) (relative error below 2^-31). real must be
 * finite and in (0, 2^30), else CR_EINVAL; below 2^-30 the shift stays at 61 and
 * mult loses bits (at real < 2^-62 it is 0: every output is the zero point). */
cr_status cr_qmul_from_real(double real, cr_qmul *m);

// @snippet requant_scalar
/* One output: clamp(zp + round_half_even((acc + bias) * mult / 2^shift), lo, 255), in
 * int64 (|acc + bias| < 2^31 and mult < 2^31, so the product is below 2^62). */
static inline uint8_t cr_requant(int32_t acc, int32_t bias, cr_qmul m, int32_t zp, int32_t lo)
{
    const int64_t p = ((int64_t)acc + bias) * m.mult;
    const int64_t odd = (p >> m.shift) & 1;      /* the truncated quotient's last bit */
    int64_t q = (p + ((int64_t)1 << (m.shift - 1)) - 1 + odd) >> m.shift;
    q += zp;                                     /* a tie goes to the even neighbour */
    return (uint8_t)(q < lo ? lo : q > 255 ? 255 : q);
}
// @end requant_scalar

/* out[j] = cr_requant(acc[j], bias, m, zp, lo) for j < n, with the widest SIMD this CPU
 * runs (the forms below give the same bytes). Needs |acc[j] + bias| < 2^31. */
void cr_requant_row(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m, int32_t zp,
                    int32_t lo, uint8_t *out);
/* The same with AVX2, and with AVX-512 (call only where the CPU has them). */
void cr_requant_row_avx2(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m, int32_t zp,
                         int32_t lo, uint8_t *out);
void cr_requant_row_avx512(const int32_t *acc, int64_t n, int32_t bias, cr_qmul m,
                           int32_t zp, int32_t lo, uint8_t *out);

/* Runs of a tile of sums, the same for every row: row i's run q is T[i * ldt + src[q]],
 * len[q] sums, going to out[i * plane + dst[q]] (a convolution's output rows). */
typedef struct {
    int64_t n, src[64], dst[64], len[64];   /* at most one run per column (<= 64) of a tile */
} cr_requant_runs;

/* Rows [0, mr) of a tile T (ldt int32 per row) through cr_requant, row i with bias[i] and
 * m[i], then clamped to at most hi (<= 255; 127 for a 7-bit output grid), run by run into
 * out: the same bytes as cr_requant_row per row and run followed by that clamp, with the
 * widest SIMD this CPU runs, and no call per row. */
void cr_requant_tile(const int32_t *T, int64_t ldt, int64_t mr, const int32_t *bias,
                     const cr_qmul *m, int32_t zp, int32_t lo, int32_t hi,
                     const cr_requant_runs *r,
                     uint8_t *out, int64_t plane);
/* The AVX-512 form (call only where the CPU has it). */
void cr_requant_tile_avx512(const int32_t *T, int64_t ldt, int64_t mr, const int32_t *bias,
                            const cr_qmul *m, int32_t zp, int32_t lo, int32_t hi,
                            const cr_requant_runs *r,
                            uint8_t *out, int64_t plane);

/* ---- the int8 convolution ----------------------------------------------------------- */

/* A prepared int8 convolution: everything that does not depend on the input. */
typedef struct {
    cr_conv_params p;     /* zero padding only (PyTorch's quantized conv has no other) */
    int64_t cin_g, cout_g, K;  /* K = Cin_g * kh * kw */
    int8_t *w;            /* Cout x K, the weights as given (OIHW) */
    int32_t *bias_q;      /* Cout: round(b / (s_x s_w)), 0 without bias */
    int32_t *bias_fold;   /* Cout: bias_q - z_x * (sum of the row's weights) */
    cr_qmul *mul;         /* Cout: s_x s_w[o] / s_y in fixed point */
    double *w_scale;      /* Cout */
    double x_scale, y_scale;
    int32_t x_zp, y_zp;
    int relu;
    int32_t y_max;        /* outputs clamped to at most this byte (255 from prepare; 127 for
                             an output observer with reduce_range, set by the caller) */
    int8_t *wpack;        /* the weights packed for the kernel below, group after group */
    int pack_mr;          /* that kernel's tile rows and depth block (0: none) */
    int64_t pack_kc;
    size_t pack_group_bytes;
    int8_t *wdirect;      /* the weights in the direct path's order (channel quads, taps,
                             the 4 channels of a quad), packed per group; NULL: no direct path */
    int direct_mr;        /* the tile rows they are packed for */
    int64_t K4;           /* round_up(Cin_g, 4) * kh * kw: the direct path's depth */
    size_t direct_group_bytes;
} cr_int8_conv;

/* Prepares y = conv(x, w) + b, requantized (ReLU fused if relu): p's geometry (zero
 * padding); w an I8 tensor Cout x Cin/groups x kh x kw, per channel along axis 0 (or
 * per tensor), every zero point 0; bias NULL or Cout floats (p->bias says which); the
 * input's and output's u8 scale and zero point. CR_EINVAL names what does not fit. */
cr_status cr_int8_conv_prepare(cr_int8_conv *qc, const cr_conv_params *p, const cr_qtensor *w,
                           const float *bias, double x_scale, int32_t x_zp, double y_scale,
                           int32_t y_zp, int relu);
/* Frees what qc holds and zeroes it (safe on a zeroed struct). */
void cr_int8_conv_free(cr_int8_conv *qc);

/* y (n x Cout x Ho x Wo u8) = the prepared convolution of x (n x Cin x h x w u8):
 * padded copies of the input with z_x as padding value, the int8 GEMM, the
 * requantization fused into its tiles. Stride 1 with a kernel that has a direct form
 * (AVX512-VNNI): the padded copy interleaves 4 channels, so every tap of the patch
 * matrix is an offset into it and nothing is packed; otherwise im2col is fused into
 * the GEMM's packing of B. */
cr_status cr_int8_conv_run(const cr_int8_conv *qc, int64_t n, int64_t h, int64_t w, const uint8_t *x,
                       uint8_t *y);

/* The path cr_int8_conv_run takes for n x Cin x h x w input with the kernel chosen now:
 * "direct/flat" (stride 1), "direct/phase-split rows" (stride > 1), "packed GEMM" (a
 * kernel with no direct form: all but avx512_vnni), those behind "subsampled/" (1x1
 * with stride), or "invalid". A static string without commas (it goes into CSV notes). */
const char *cr_int8_conv_path(const cr_int8_conv *qc, int64_t n, int64_t h, int64_t w);

/* The same by the definition: seven loops over (x - z_x) in int32, then cr_requant. */
cr_status cr_int8_conv_run_ref(const cr_int8_conv *qc, int64_t n, int64_t h, int64_t w,
                           const uint8_t *x, uint8_t *y);
/* cr_int8_conv_run on quantized tensors: x U8 per tensor with the prepared scale and zero
 * point, 4-d; y allocated here (U8, N x Cout x Ho x Wo, the output's parameters). */
cr_status cr_int8_conv_forward(const cr_int8_conv *qc, const cr_qtensor *x, cr_qtensor *y);

#ifdef __cplusplus
}
#endif

#endif
