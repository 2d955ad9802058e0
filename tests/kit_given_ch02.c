/* kit_given_ch02.c — given code for chapter 2's coursework kit (kits/README.md).
 *
 * conv_as_gemm's test program in the kit runs on these in place of the other tasks'
 * functions (cr_im2col, cr_gemm_naive), so that it is graded on its own: the kit
 * compiles this file with CR_GIVEN_<function> for each function kit.ini gives and makes
 * the student's definitions weak. They take another road on purpose: the patch matrix
 * comes from chapter 1 (a convolution of an image of pixel numbers with one-hot
 * weights tells which pixel each entry copies), the product from float64 loops. */
#include <stdlib.h>

#include "direct.h"
#include "im2col.h"
#include "tensor.h"

#ifdef CR_GIVEN_cr_im2col
/* cr_im2col through chapter 1: convolving the numbers 1..H*W of one plane with a one-hot
 * kernel per tap (r, q) gives, at each output position, the number of the pixel that tap
 * reads there (0 where it reads zero padding); channel c reads the same place of its own
 * plane. Aborts when out of memory (test code). */
void cr_im2col(const cr_conv_shape *s, const float *x, float *col)
{
    const int64_t H = s->h_in, W = s->w_in, taps = s->p.kernel_h * s->p.kernel_w;
    const int64_t cols = cr_im2col_cols(s);
    cr_conv_params p = s->p;
    p.in_channels = 1;
    p.out_channels = taps;
    p.groups = 1;
    p.bias = false;
    cr_tensor num, w, y;
    if (cr_tensor_alloc4(&num, 1, 1, H, W) || cr_tensor_alloc4(&w, taps, 1, p.kernel_h, p.kernel_w) ||
        cr_tensor_alloc4(&y, 1, taps, s->h_out, s->w_out))
        abort();
    for (int64_t i = 0; i < H * W; i++) num.data[i] = (float)(i + 1);   /* exact below 2^24 */
    for (int64_t i = 0; i < taps * taps; i++) w.data[i] = i % (taps + 1) == 0 ? 1.0f : 0.0f;
    if (cr_conv2d_direct(&p, &num, &w, NULL, &y)) abort();
    for (int64_t c = 0; c < s->cin_g; c++)
        for (int64_t t = 0; t < taps; t++)
            for (int64_t j = 0; j < cols; j++) {
                const int64_t at = (int64_t)y.data[t * cols + j];   /* pixel number, 0: pad */
                col[(c * taps + t) * cols + j] = at == 0 ? 0.0f : x[c * H * W + at - 1];
            }
    cr_tensor_free(&num);
    cr_tensor_free(&w);
    cr_tensor_free(&y);
}
#endif

#ifdef CR_GIVEN_cr_gemm_naive
/* cr_gemm_naive with float64 sums: C = A * B. */
void cr_gemm_naive(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double acc = 0;
            for (int64_t k = 0; k < K; k++) acc += (double)A[i * lda + k] * B[k * ldb + j];
            C[i * ldc + j] = (float)acc;
        }
}
#endif
