/* fold.c — chapter 7: BatchNorm folded into the convolution before it, for inference and
 * during quantization-aware training (see fold.h). Float32 operations in PyTorch's order;
 * compiled with -ffp-contract=off like fakequant.c. */
#include "fold.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv_gemm.h"

/* True if t is an allocated vector of n elements. */
static bool is_vec(const cr_tensor *t, int64_t n)
{
    return t && t->data && t->numel == (size_t)n;
}

/* Makes t an allocated tensor shaped like ref (reallocating when the shape changes). */
static cr_status ensure_like(cr_tensor *t, const cr_tensor *ref)
{
    if (t->data && cr_tensor_same_shape(t, ref)) return CR_OK;
    cr_tensor_free(t);
    return cr_tensor_alloc(t, ref->ndim, ref->shape);
}

// @snippet fold_inference
cr_status cr_fold_conv_bn(const cr_tensor *w, const cr_tensor *b, const cr_tensor *gamma,
                          const cr_tensor *beta, const cr_tensor *mean, const cr_tensor *var,
                          double eps, cr_tensor *w_out, cr_tensor *b_out)
{
    if (!w || !w->data || w->ndim != 4 || !w_out || !w_out->data || w_out->numel != w->numel)
        return cr_fail(CR_EINVAL, "fold_conv_bn: w (Cout x Cin/g x kh x kw) and w_out of its "
                       "size are required");
    const int64_t C = w->shape[0];
    const size_t inner = w->numel / (size_t)C;
    if (!is_vec(gamma, C) || !is_vec(beta, C) || !is_vec(mean, C) || !is_vec(var, C) ||
        !is_vec(b_out, C) || (b && !is_vec(b, C)))
        return cr_fail(CR_EINVAL, "fold_conv_bn: gamma, beta, mean, var, b_out (and b) must "
                       "have %lld elements, one per output channel", (long long)C);
    if (!(eps > 0)) return cr_fail(CR_EINVAL, "fold_conv_bn: eps must be > 0, got %g", eps);
    // @solution fold_bn: w' = w * gamma / sigma, b' = (b - mean) / sigma * gamma + beta
    for (int64_t c = 0; c < C; c++) {
        const float r = 1.0f / sqrtf(var->data[c] + (float)eps);   /* torch.rsqrt */
        const float k = gamma->data[c] * r;
        for (size_t i = 0; i < inner; i++) w_out->data[c * inner + i] = w->data[c * inner + i] * k;
        const float bc = b ? b->data[c] : 0.0f;
        b_out->data[c] = (bc - mean->data[c]) * r * gamma->data[c] + beta->data[c];
    }
    return CR_OK;
    // @stub
    // (void)inner;
    // return cr_todo("fold_bn");
    // @end-solution
}
// @end fold_inference

cr_status cr_qconv_init(cr_qconv *q)
{
    memset(q, 0, sizeof *q);
    return cr_fake_quant_init_weight(&q->wfq);
}

void cr_qconv_free(cr_qconv *q)
{
    cr_fake_quant_free(&q->wfq);
    cr_tensor *ts[] = {&q->sf, &q->std, &q->wq, &q->conv, &q->dwq};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) cr_tensor_free(ts[i]);
    free(q->wmask);
    memset(q, 0, sizeof *q);
}

/* Sizes the weight-shaped buffers of q like w. */
static cr_status qconv_buffers(cr_qconv *q, const cr_tensor *w)
{
    const bool same = q->wq.data && cr_tensor_same_shape(&q->wq, w);
    cr_status s = ensure_like(&q->wq, w);
    if (s) return s;
    if (!same || !q->wmask) {
        free(q->wmask);
        q->wmask = malloc(w->numel);
        if (!q->wmask) return cr_fail(CR_ENOMEM, "qconv: out of memory for the weight mask");
    }
    const int64_t C = w->shape[0];
    if (!is_vec(&q->sf, C)) {
        cr_tensor_free(&q->sf);
        cr_tensor_free(&q->std);
        if ((s = cr_tensor_alloc(&q->sf, 1, &C)) || (s = cr_tensor_alloc(&q->std, 1, &C))) return s;
    }
    return CR_OK;
}

// @snippet qconv_forward
cr_status cr_qconv_forward(cr_qconv *q, const cr_conv_params *p, cr_conv2d_fn conv,
                           const cr_tensor *x, const cr_tensor *w, const cr_tensor *b,
                           const cr_tensor *gamma, const cr_tensor *running_var, double eps,
                           cr_tensor *y)
{
    if (!p || !w || !w->data || w->ndim != 4 || !y || !y->data)
        return cr_fail(CR_EINVAL, "qconv_forward: p, w (4-D) and y are required");
    const int64_t C = w->shape[0];
    const bool bn = gamma || running_var;
    if (bn && (!is_vec(gamma, C) || !is_vec(running_var, C) || !(eps > 0)))
        return cr_fail(CR_EINVAL, "qconv_forward: a folded BatchNorm needs gamma and running_var "
                       "of %lld elements and eps > 0", (long long)C);
    if (!conv) conv = cr_conv2d_fast;
    cr_status s = qconv_buffers(q, w);
    if (s) return s;
    const size_t inner = w->numel / (size_t)C;
    for (int64_t c = 0; c < C; c++) {   /* sf = gamma / sqrt(running_var + eps) */
        q->std.data[c] = bn ? sqrtf(running_var->data[c] + (float)eps) : 1.0f;
        q->sf.data[c] = bn ? gamma->data[c] / q->std.data[c] : 1.0f;
        for (size_t i = 0; i < inner; i++)
            q->wq.data[c * inner + i] = w->data[c * inner + i] * q->sf.data[c];
    }
    if ((s = cr_fake_quant_forward(&q->wfq, &q->wq, &q->wq, q->wmask))) return s;
    q->folded = bn;
    if (!bn) return conv(p, x, &q->wq, b, y);   /* nn.qat.Conv2d: the bias inside */
    cr_conv_params pz = *p;                     /* zero bias: it is added after */
    pz.bias = false;
    if ((s = ensure_like(&q->conv, y)) || (s = conv(&pz, x, &q->wq, NULL, &q->conv))) return s;
    const size_t hw = (size_t)(y->shape[2] * y->shape[3]);
    for (int64_t n = 0; n < y->shape[0]; n++)
        for (int64_t c = 0; c < C; c++) {
            const float *cv = q->conv.data + (n * C + c) * hw;
            float *yc = y->data + (n * C + c) * hw;
            const float bc = b ? b->data[c] : 0.0f;
            for (size_t i = 0; i < hw; i++) yc[i] = b ? cv[i] / q->sf.data[c] + bc
                                                      : cv[i] / q->sf.data[c];
        }
    return CR_OK;
}
// @end qconv_forward

// @snippet qconv_backward
cr_status cr_qconv_backward(cr_qconv *q, const cr_conv_params *p, cr_conv2d_backward_fn bwd,
                            const cr_tensor *x, const cr_tensor *w, const cr_tensor *dy,
                            cr_tensor *dx, cr_tensor *dw, cr_tensor *db, cr_tensor *dgamma)
{
    if (!q->wq.data || !w || !cr_tensor_same_shape(w, &q->wq) || !dw || !dw->data ||
        dw->numel != w->numel || !dy || !dy->data)
        return cr_fail(CR_EINVAL, "qconv_backward: needs a forward first, then w, dy and dw of "
                       "w's size");
    if (!bwd) bwd = cr_conv2d_backward;
    const int64_t C = w->shape[0];
    const size_t inner = w->numel / (size_t)C;
    cr_status s = ensure_like(&q->dwq, w);
    if (s) return s;
    double *dsf = calloc((size_t)C, sizeof *dsf);
    if (!dsf) return cr_fail(CR_ENOMEM, "qconv_backward: out of memory");
    if (!q->folded) {
        s = bwd(p, x, &q->wq, dy, dx, &q->dwq, db);
    } else {
        if (db && !is_vec(db, C))
            s = cr_fail(CR_EINVAL, "qconv_backward: db must have Cout elements");
        if (!s && !cr_tensor_same_shape(dy, &q->conv))
            s = cr_fail(CR_EINVAL, "qconv_backward: dy must have the forward output's shape");
        /* y = conv / sf + b:  db = sum dy,  dsf = -sum dy * conv / sf^2,  dconv = dy / sf */
        const size_t hw = s ? 0 : (size_t)(dy->shape[2] * dy->shape[3]);
        for (int64_t c = 0; !s && c < C; c++) {
            double sb = 0, sc = 0;
            const float f = q->sf.data[c];
            for (int64_t n = 0; n < dy->shape[0]; n++) {
                const float *g = dy->data + (n * C + c) * hw;
                float *cv = q->conv.data + (n * C + c) * hw;
                for (size_t i = 0; i < hw; i++) {
                    sb += g[i];
                    sc += (double)g[i] * cv[i];
                    cv[i] = g[i] / f;             /* conv's buffer becomes dconv */
                }
            }
            if (db) db->data[c] = (float)sb;
            dsf[c] = -sc / ((double)f * f);
        }
        cr_conv_params pz = *p;
        pz.bias = false;
        if (!s) s = bwd(&pz, x, &q->wq, &q->conv, dx, &q->dwq, NULL);
    }
    if (s) {
        free(dsf);
        return s;
    }
    // @solution qconv_weight_grad: through the fake quantizer (STE) and the scale factor
    for (int64_t c = 0; c < C; c++) {    /* dws = STE(dwq); dw = dws * sf; dsf += dws . w */
        double acc = 0;
        for (size_t i = 0; i < inner; i++) {
            const size_t k = c * inner + i;
            const float dws = q->wmask[k] ? q->dwq.data[k] : 0.0f;
            dw->data[k] = dws * q->sf.data[c];
            acc += (double)dws * w->data[k];
        }
        dsf[c] += acc;
    }
    // @stub
    // (void)inner;
    // free(dsf);
    // return cr_todo("qconv_weight_grad");
    // @end-solution
    if (q->folded && dgamma)   /* sf = gamma / std */
        for (int64_t c = 0; c < C; c++) dgamma->data[c] += (float)(dsf[c] / q->std.data[c]);
    free(dsf);
    return CR_OK;
}
// @end qconv_backward
