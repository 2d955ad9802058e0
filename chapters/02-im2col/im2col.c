/* im2col.c — chapter 2: convolution as a matrix product.
 *
 * Each output pixel of chapter 1 is a dot product between one filter and one
 * patch of the input. Copy every patch into a column of a matrix (im2col), and
 * all those dot products become one matrix product: filters x patches. */
#include "im2col.h"

#include <string.h>

#include "direct.h"  /* cr_pad_index: chapter 1's padding rule */
#include "tensor.h"

int64_t cr_im2col_rows(const cr_conv_shape *s)
{
    return s->cin_g * s->p.kernel_h * s->p.kernel_w;
}

int64_t cr_im2col_cols(const cr_conv_shape *s) { return s->h_out * s->w_out; }

/* True when the patch matrix would equal the input itself: a 1x1, stride-1, unpadded kernel. */
static int is_pointwise(const cr_conv_shape *s)
{
    const cr_conv_params *p = &s->p;
    return p->kernel_h == 1 && p->kernel_w == 1 && p->stride_h == 1 && p->stride_w == 1 &&
           p->pad_top == 0 && p->pad_bottom == 0 && p->pad_left == 0 && p->pad_right == 0;
}

size_t cr_im2col_workspace_bytes(const cr_conv_shape *s)
{
    if (is_pointwise(s)) return 0;
    return (size_t)cr_im2col_rows(s) * (size_t)cr_im2col_cols(s) * sizeof(float);
}

// @snippet im2col_gather
void cr_im2col(const cr_conv_shape *s, const float *x, float *col)
{
    // @solution im2col_gather: copy every receptive field into one column of the patch matrix
    const cr_conv_params *p = &s->p;
    const int64_t H = s->h_in, W = s->w_in, Ho = s->h_out, Wo = s->w_out;
    const int64_t R = p->kernel_h, S = p->kernel_w;
    for (int64_t c = 0; c < s->cin_g; c++)
        for (int64_t r = 0; r < R; r++)
            for (int64_t q = 0; q < S; q++) {
                float *row = col + ((c * R + r) * S + q) * Ho * Wo;  /* row (c, r, q) */
                for (int64_t oh = 0; oh < Ho; oh++) {
                    const int64_t ih = cr_pad_index(
                        oh * p->stride_h - p->pad_top + r * p->dilation_h, H, p->pad_mode);
                    for (int64_t ow = 0; ow < Wo; ow++) {
                        const int64_t iw = cr_pad_index(
                            ow * p->stride_w - p->pad_left + q * p->dilation_w, W, p->pad_mode);
                        row[oh * Wo + ow] =
                            (ih < 0 || iw < 0) ? 0.0f : x[(c * H + ih) * W + iw];
                    }
                }
            }
    // @stub
    // (void)s; (void)x;
    // (void)col;
    // (void)cr_todo("im2col_gather"); /* TODO: fill all of col */
    // @end-solution
}
// @end im2col_gather

// @snippet gemm_naive
void cr_gemm_naive(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, float *C, int64_t ldc)
{
    // @solution gemm_naive: the textbook triple loop, C = A * B
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float acc = 0.0f;
            for (int64_t k = 0; k < K; k++) acc += A[i * lda + k] * B[k * ldb + j];
            C[i * ldc + j] = acc;
        }
    // @stub
    // (void)M; (void)N; (void)K; (void)A; (void)lda; (void)B; (void)ldb; (void)C; (void)ldc;
    // (void)cr_todo("gemm_naive"); /* TODO: C = A * B */
    // @end-solution
}
// @end gemm_naive

// @snippet conv_as_gemm
/* One image, one group: Y_g (Cout_g x Ho*Wo) = W_g (Cout_g x Cin_g*kh*kw) * cols + bias. */
static void conv_group_gemm(const cr_conv_shape *s, const float *x_g, const float *w_g,
                            const float *b_g, float *y_g, float *col)
{
    // @solution conv_as_gemm: one GEMM per image and group, the 1x1 case without im2col, then bias
    const int64_t M = s->cout_g, N = cr_im2col_cols(s), K = cr_im2col_rows(s);
    const float *B = x_g;             /* 1x1, stride 1, no padding: the input is the matrix */
    if (!is_pointwise(s)) {
        cr_im2col(s, x_g, col);
        B = col;
    }
    cr_gemm_naive(M, N, K, w_g, K, B, N, y_g, N);
    if (b_g)
        for (int64_t m = 0; m < M; m++)
            for (int64_t j = 0; j < N; j++) y_g[m * N + j] += b_g[m];
    // @stub
    // (void)s; (void)x_g; (void)w_g; (void)b_g; (void)y_g; (void)col;
    // (void)cr_todo("conv_as_gemm"); /* TODO: im2col, GEMM, bias */
    // @end-solution
}

cr_status cr_conv2d_im2col(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                           const cr_tensor *b, cr_tensor *y)
{
    cr_conv_shape s;
    cr_status st = cr_conv_bind(&s, p, x, w, b, y);
    if (st) return st;
    const int64_t G = p->groups, H = s.h_in, W = s.w_in;
    const int64_t Ho = s.h_out, Wo = s.w_out, KK = cr_im2col_rows(&s);
    const size_t ws = cr_im2col_workspace_bytes(&s);

    int failed = 0;
#pragma omp parallel reduction(|| : failed)
    {
        /* Each thread owns one patch matrix and reuses it for its (image, group) pairs. */
        float *col = ws ? cr_aligned_alloc(ws) : NULL;
        if (ws && !col) failed = 1;
#pragma omp for collapse(2) schedule(static)
        for (int64_t n = 0; n < s.batch; n++)
            for (int64_t g = 0; g < G; g++) {
                if (ws && !col) continue;
                const float *x_g = x->data + (n * p->in_channels + g * s.cin_g) * H * W;
                const float *w_g = w->data + g * s.cout_g * KK;
                const float *b_g = b ? b->data + g * s.cout_g : NULL;
                float *y_g = y->data + (n * p->out_channels + g * s.cout_g) * Ho * Wo;
                conv_group_gemm(&s, x_g, w_g, b_g, y_g, col);
            }
        cr_aligned_free(col);
    }
    if (failed)
        return cr_fail(CR_ENOMEM, "im2col workspace of %zu bytes: out of memory", ws);
    return CR_OK;
}
// @end conv_as_gemm
