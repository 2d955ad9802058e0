/* optim.c — chapter 4: SGD with momentum, AdamW, and PyTorch's default initialisation
 * (see optim.h). */
#include "optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gemm_internal.h"   /* the CPU's vector units, as chapter 3 chose them */

cr_optim_config cr_sgd_config(double lr, double momentum, double weight_decay)
{
    return (cr_optim_config){.kind = CR_OPTIM_SGD, .lr = lr, .momentum = momentum,
                             .weight_decay = weight_decay, .beta1 = 0.9, .beta2 = 0.999,
                             .eps = 1e-8};
}

cr_optim_config cr_adamw_config(double lr, double weight_decay)
{
    return (cr_optim_config){.kind = CR_OPTIM_ADAMW, .lr = lr, .beta1 = 0.9, .beta2 = 0.999,
                             .eps = 1e-8, .weight_decay = weight_decay};
}

/* Fails unless t is allocated with n elements (what names it). */
static cr_status need_numel(const cr_tensor *t, size_t n, const char *what)
{
    if (!t || !t->data || t->numel != n)
        return cr_fail(CR_EINVAL, "%s: expected %zu elements, got %zu", what, n,
                       t && t->data ? t->numel : 0);
    return CR_OK;
}

/* Checks a config's ranges as PyTorch's constructors do. */
static cr_status check_config(const cr_optim_config *c)
{
    if (!(c->lr >= 0)) return cr_fail(CR_EINVAL, "optimizer: lr must be >= 0, got %g", c->lr);
    if (!(c->weight_decay >= 0))
        return cr_fail(CR_EINVAL, "optimizer: weight_decay must be >= 0, got %g", c->weight_decay);
    if (c->kind == CR_OPTIM_SGD) {
        if (!(c->momentum >= 0))
            return cr_fail(CR_EINVAL, "SGD: momentum must be >= 0, got %g", c->momentum);
        if (c->nesterov && (c->momentum <= 0 || c->dampening != 0))
            return cr_fail(CR_EINVAL, "SGD: nesterov needs momentum > 0 and dampening 0");
    } else if (c->kind == CR_OPTIM_ADAMW) {
        if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
            return cr_fail(CR_EINVAL, "AdamW: betas must be in [0, 1), got (%g, %g)", c->beta1,
                           c->beta2);
        if (!(c->eps >= 0)) return cr_fail(CR_EINVAL, "AdamW: eps must be >= 0, got %g", c->eps);
    } else {
        return cr_fail(CR_EINVAL, "optimizer: unknown kind %d", (int)c->kind);
    }
    return CR_OK;
}

/* p (any shape) -= lr * (momentum-filtered g + weight_decay * p); buf: same numel. */
cr_status cr_sgd_update(const cr_optim_config *c, cr_tensor *p, const cr_tensor *g,
                        cr_tensor *buf, bool first)
{
    cr_status s;
    if ((s = check_config(c)) || (s = need_numel(g, p->numel, "SGD grad")) ||
        (c->momentum != 0 && (s = need_numel(buf, p->numel, "SGD momentum buffer"))))
        return s;
    // @snippet sgd_update
    for (size_t i = 0; i < p->numel; i++) {
        double d = (double)g->data[i] + c->weight_decay * p->data[i];
        if (c->momentum != 0) {
            const double b = first ? d : c->momentum * buf->data[i] + (1 - c->dampening) * d;
            buf->data[i] = (float)b;
            d = c->nesterov ? d + c->momentum * b : b;
        }
        p->data[i] = (float)(p->data[i] - c->lr * d);
    }
    // @end sgd_update
    return CR_OK;
}

/* AdamW step t on p (any shape) with gradient g and moments m, v (same numel). */
cr_status cr_adamw_update(const cr_optim_config *c, int64_t t, cr_tensor *p, const cr_tensor *g,
                          cr_tensor *m, cr_tensor *v)
{
    cr_status s;
    if ((s = check_config(c)) || (s = need_numel(g, p->numel, "AdamW grad")) ||
        (s = need_numel(m, p->numel, "AdamW m")) || (s = need_numel(v, p->numel, "AdamW v")))
        return s;
    if (t < 1) return cr_fail(CR_EINVAL, "AdamW: step number must be >= 1, got %lld", (long long)t);
    // @snippet adamw_update
    // @solution adamw_step: decoupled weight decay, the two moments, bias correction, eps outside the sqrt
    const double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    const double step_size = c->lr / bc1, sqrt_bc2 = sqrt(bc2);
    for (size_t i = 0; i < p->numel; i++) {
        const double gi = g->data[i];
        double pi = p->data[i] * (1.0 - c->lr * c->weight_decay);   /* decoupled decay */
        const double mi = c->beta1 * m->data[i] + (1 - c->beta1) * gi;
        const double vi = c->beta2 * v->data[i] + (1 - c->beta2) * gi * gi;
        m->data[i] = (float)mi;
        v->data[i] = (float)vi;
        pi -= step_size * mi / (sqrt(vi) / sqrt_bc2 + c->eps);
        p->data[i] = (float)pi;
    }
    // @stub
    // return cr_todo("adamw_step");
    // @end-solution
    // @end adamw_update
    return CR_OK;
}

/* ---- AdamW, fast: float, vector lanes, threads ---------------------------------------- */

/* The float constants of step t: the same formula as cr_adamw_update, in the order
 * PyTorch's AdamW computes it in float: p *= decay; m = b1 m + (1 - b1) g;
 * v = b2 v + (1 - b2) g g; p -= step * m / (sqrt(v) / sqrt_bc2 + eps). */
typedef struct {
    float decay, b1, c1, b2, c2, step, sqrt_bc2, eps;
} adamw_consts;

/* Elements [i0, i1) of p, m, v from g, one element at a time (the portable path, and the
 * arithmetic every vector lane repeats: each operation rounds once, nothing fused). */
static void adamw_scalar(const adamw_consts *k, float *p, const float *g, float *m, float *v,
                         int64_t i0, int64_t i1)
{
    for (int64_t i = i0; i < i1; i++) {
        const float gi = g[i];
        const float mi = k->b1 * m[i] + k->c1 * gi;
        const float vi = k->b2 * v[i] + (k->c2 * gi) * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * k->decay - k->step * mi / (sqrtf(vi) / k->sqrt_bc2 + k->eps);
    }
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

// @snippet adamw_fast
/* Elements [i0, i1) on 16 lanes: adamw_scalar's operations, one instruction each (mul,
 * add, sqrt, div: each rounds as the scalar one does), the tail through a mask. */
__attribute__((target("avx512f")))
static void adamw_avx512(const adamw_consts *k, float *p, const float *g, float *m, float *v,
                         int64_t i0, int64_t i1)
{
    const __m512 decay = _mm512_set1_ps(k->decay), b1 = _mm512_set1_ps(k->b1),
                 c1 = _mm512_set1_ps(k->c1), b2 = _mm512_set1_ps(k->b2),
                 c2 = _mm512_set1_ps(k->c2), step = _mm512_set1_ps(k->step),
                 sbc2 = _mm512_set1_ps(k->sqrt_bc2), eps = _mm512_set1_ps(k->eps);
    for (int64_t i = i0; i < i1; i += 16) {
        const __mmask16 u = i1 - i >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (i1 - i)) - 1);
        const __m512 gi = _mm512_maskz_loadu_ps(u, g + i);
        const __m512 mi = _mm512_add_ps(_mm512_mul_ps(b1, _mm512_maskz_loadu_ps(u, m + i)),
                                        _mm512_mul_ps(c1, gi));
        const __m512 vi = _mm512_add_ps(_mm512_mul_ps(b2, _mm512_maskz_loadu_ps(u, v + i)),
                                        _mm512_mul_ps(_mm512_mul_ps(c2, gi), gi));
        const __m512 den = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), sbc2), eps);
        const __m512 pi = _mm512_sub_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(u, p + i), decay),
                                        _mm512_div_ps(_mm512_mul_ps(step, mi), den));
        _mm512_mask_storeu_ps(m + i, u, mi);
        _mm512_mask_storeu_ps(v + i, u, vi);
        _mm512_mask_storeu_ps(p + i, u, pi);
    }
}
// @end adamw_fast

/* The same on 8 lanes (AVX2); the tail of fewer than 8 elements goes to adamw_scalar,
 * whose operations round the same way, so the bits do not depend on where a range ends. */
__attribute__((target("avx2")))
static void adamw_avx2(const adamw_consts *k, float *p, const float *g, float *m, float *v,
                       int64_t i0, int64_t i1)
{
    const __m256 decay = _mm256_set1_ps(k->decay), b1 = _mm256_set1_ps(k->b1),
                 c1 = _mm256_set1_ps(k->c1), b2 = _mm256_set1_ps(k->b2),
                 c2 = _mm256_set1_ps(k->c2), step = _mm256_set1_ps(k->step),
                 sbc2 = _mm256_set1_ps(k->sqrt_bc2), eps = _mm256_set1_ps(k->eps);
    int64_t i = i0;
    for (; i + 8 <= i1; i += 8) {
        const __m256 gi = _mm256_loadu_ps(g + i);
        const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)),
                                        _mm256_mul_ps(c1, gi));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)),
                                        _mm256_mul_ps(_mm256_mul_ps(c2, gi), gi));
        const __m256 den = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), sbc2), eps);
        const __m256 pi = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), decay),
                                        _mm256_div_ps(_mm256_mul_ps(step, mi), den));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
        _mm256_storeu_ps(p + i, pi);
    }
    adamw_scalar(k, p, g, m, v, i, i1);
}
#endif

typedef void (*adamw_fn)(const adamw_consts *, float *, const float *, float *, float *,
                         int64_t, int64_t);

/* The widest path chapter 3 chose for this CPU (CR_GEMM_KERNEL=avx2|portable narrows it). */
static adamw_fn adamw_kernel(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    const cr_gemm_kernel *k = cr_gemm_active_kernel();
    if (k == &cr_kernel_avx512 || k == &cr_kernel_avx512_small_m) return adamw_avx512;
    if (k == &cr_kernel_avx2) return adamw_avx2;
#endif
    return adamw_scalar;
}

cr_status cr_adamw_update_fast(const cr_optim_config *c, int64_t t, cr_tensor *p,
                               const cr_tensor *g, cr_tensor *m, cr_tensor *v)
{
    cr_status s;
    if ((s = check_config(c)) || (s = need_numel(g, p->numel, "AdamW grad")) ||
        (s = need_numel(m, p->numel, "AdamW m")) || (s = need_numel(v, p->numel, "AdamW v")))
        return s;
    if (t < 1) return cr_fail(CR_EINVAL, "AdamW: step number must be >= 1, got %lld", (long long)t);
    const double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    const adamw_consts k = {(float)(1.0 - c->lr * c->weight_decay), (float)c->beta1,
                            (float)(1.0 - c->beta1), (float)c->beta2, (float)(1.0 - c->beta2),
                            (float)(c->lr / bc1), (float)sqrt(bc2), (float)c->eps};
    const adamw_fn fn = adamw_kernel();
    const int64_t n = (int64_t)p->numel, chunk = 1 << 14;   /* 64 KiB of each array */
    float *pd = p->data, *md = m->data, *vd = v->data;
    const float *gd = g->data;
    /* elements are independent: any split gives the same bits */
#pragma omp parallel for schedule(static) if (n > 4 * chunk && cr_gemm_threads_available() > 1)
    for (int64_t i0 = 0; i0 < n; i0 += chunk)
        fn(&k, pd, gd, md, vd, i0, i0 + chunk < n ? i0 + chunk : n);
    return CR_OK;
}

/* Allocates zeroed state like each of params[0..n-1]. */
cr_status cr_optim_init(cr_optimizer *o, const cr_optim_config *c, cr_tensor *const *params,
                        int n)
{
    memset(o, 0, sizeof *o);
    cr_status s = check_config(c);
    if (s) return s;
    if (n < 0) return cr_fail(CR_EINVAL, "optimizer: negative parameter count");
    o->cfg = *c;
    o->n = n;
    o->state1 = calloc((size_t)(n ? n : 1), sizeof(cr_tensor));
    o->state2 = calloc((size_t)(n ? n : 1), sizeof(cr_tensor));
    if (!o->state1 || !o->state2) {
        cr_optim_free(o);
        return cr_fail(CR_ENOMEM, "optimizer: out of memory");
    }
    for (int i = 0; i < n; i++) {
        if ((s = cr_tensor_alloc(&o->state1[i], params[i]->ndim, params[i]->shape)) ||
            (s = cr_tensor_alloc(&o->state2[i], params[i]->ndim, params[i]->shape))) {
            cr_optim_free(o);
            return s;
        }
        cr_tensor_fill(&o->state1[i], 0.0f);
        cr_tensor_fill(&o->state2[i], 0.0f);
    }
    return CR_OK;
}

/* Updates every parameter from its gradient; increments the step count. */
cr_status cr_optim_step(cr_optimizer *o, cr_tensor *const *params, const cr_tensor *const *grads)
{
    o->step++;
    for (int i = 0; i < o->n; i++) {
        cr_status s = o->cfg.kind == CR_OPTIM_SGD
            ? cr_sgd_update(&o->cfg, params[i], grads[i], &o->state1[i], o->step == 1)
            : cr_adamw_update_fast(&o->cfg, o->step, params[i], grads[i], &o->state1[i],
                              &o->state2[i]);
        if (s) return s;
    }
    return CR_OK;
}

void cr_optim_set_lr(cr_optimizer *o, double lr)
{
    o->cfg.lr = lr;
}

/* Frees the optimizer's state tensors. */
void cr_optim_free(cr_optimizer *o)
{
    for (int i = 0; i < o->n; i++) {
        if (o->state1) cr_tensor_free(&o->state1[i]);
        if (o->state2) cr_tensor_free(&o->state2[i]);
    }
    free(o->state1);
    free(o->state2);
    memset(o, 0, sizeof *o);
}

/* Fills weight (Cout x Cin_g x kh x kw) and bias (Cout) uniform in +-1/sqrt(Cin_g*kh*kw). */
cr_status cr_init_conv_default(cr_rng *rng, cr_tensor *weight, cr_tensor *bias)
{
    if (!rng || !weight || !weight->data || weight->ndim != 4)
        return cr_fail(CR_EINVAL, "init: weight must be an allocated Cout x Cin/groups x kh x kw tensor");
    if (bias && (!bias->data || (int64_t)bias->numel != weight->shape[0]))
        return cr_fail(CR_EINVAL, "init: bias must hold Cout = %lld values",
                       (long long)weight->shape[0]);
    // @snippet init_conv
    /* kaiming_uniform_(a=sqrt(5)): gain = sqrt(2 / (1 + a^2)) = sqrt(1/3), bound =
     * sqrt(3) * gain / sqrt(fan_in) = 1 / sqrt(fan_in); the bias uses the same bound */
    const double fan_in = (double)(weight->shape[1] * weight->shape[2] * weight->shape[3]);
    const float bound = (float)(1.0 / sqrt(fan_in));
    cr_tensor_fill_uniform(weight, rng, -bound, bound);
    if (bias) cr_tensor_fill_uniform(bias, rng, -bound, bound);
    // @end init_conv
    return CR_OK;
}

/* weight = 1, bias = 0, running_mean = 0, running_var = 1 (each may be NULL). */
void cr_init_norm_default(cr_tensor *weight, cr_tensor *bias, cr_tensor *running_mean,
                          cr_tensor *running_var)
{
    if (weight) cr_tensor_fill(weight, 1.0f);
    if (bias) cr_tensor_fill(bias, 0.0f);
    if (running_mean) cr_tensor_fill(running_mean, 0.0f);
    if (running_var) cr_tensor_fill(running_var, 1.0f);
}
