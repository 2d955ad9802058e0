/* layers.c — chapter 4: forward and backward passes of the layers around the
 * convolution (see layers.h for the contracts). Statistics are summed in double, so
 * that a channel of a million pixels keeps float32's accuracy. */
#include "layers.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* ---- shape checks ------------------------------------------------------------------ */

/* Fails naming `what` unless t is allocated with rank 4. */
static cr_status need4(const cr_tensor *t, const char *what)
{
    if (!t || !t->data || t->ndim != 4)
        return cr_fail(CR_EINVAL, "%s: expected an allocated N x C x H x W tensor", what);
    return CR_OK;
}

/* Fails naming `what` unless t has the same shape as ref (shape strings in the message). */
static cr_status need_same(const cr_tensor *t, const cr_tensor *ref, const char *what,
                           const char *ref_name)
{
    if (!t || !t->data) return cr_fail(CR_EINVAL, "%s: not allocated", what);
    if (!cr_tensor_same_shape(t, ref)) {
        char a[64], b[64];
        cr_tensor_shape_str(t, a, sizeof a);
        cr_tensor_shape_str(ref, b, sizeof b);
        return cr_fail(CR_EINVAL, "%s is %s, expected %s (the shape of %s)", what, a, b,
                       ref_name);
    }
    return CR_OK;
}

/* Fails naming `what` unless t (if non-NULL, or always when required) holds exactly n floats. */
static cr_status need_numel(const cr_tensor *t, size_t n, const char *what, int required)
{
    if (!t) return required ? cr_fail(CR_EINVAL, "%s: missing", what) : CR_OK;
    if (!t->data || t->numel != n)
        return cr_fail(CR_EINVAL, "%s holds %zu values, expected %zu", what,
                       t->data ? t->numel : 0, n);
    return CR_OK;
}

/* Fails naming `what` unless t has rank 4 with the given sizes. */
static cr_status need_shape4(const cr_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w,
                             const char *what)
{
    cr_status s = need4(t, what);
    if (s) return s;
    if (t->shape[0] != n || t->shape[1] != c || t->shape[2] != h || t->shape[3] != w) {
        char a[64];
        cr_tensor_shape_str(t, a, sizeof a);
        return cr_fail(CR_EINVAL, "%s is %s, expected [%lld, %lld, %lld, %lld]", what, a,
                       (long long)n, (long long)c, (long long)h, (long long)w);
    }
    return CR_OK;
}

/* ---- sums and element-wise loops -------------------------------------------------------- */

/* Below this many values an element-wise loop runs on one thread (a team costs more). */
#define PAR_MIN 32768
/* Values summed in float before a block's total is added in double: the result keeps
 * double's accuracy over a million values. Within a block, 16 independent float sums
 * (lane l takes every 16th value) held in one v16f, GCC's vector extension: the
 * compiler maps it onto the vector registers the build allows (four SSE registers in a
 * baseline x86-64 build), so the adds do not wait on each other. The lanes are then added
 * as a tree (lane l + lane l+8, then l + l+4, ...). Same bits on any thread count: one
 * thread sums a whole run. */
#define SUM_BLOCK 256
#define LANES 16
typedef float v16f __attribute__((vector_size(LANES * sizeof(float))));

/* The sums below are compiled three times, for AVX-512, AVX2 and the baseline, and the
 * loader picks the one this CPU runs (GCC's target_clones): a v16f is then one, two or
 * four registers. Each is the same lane-wise float arithmetic, so the same bits. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CR_SUM_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CR_SUM_CLONES
#endif

/* The 16 floats at p (any alignment) as one v16f. */
#define LOAD16(v, p) memcpy(&(v), (p), sizeof(v16f))

/* The sum of a's lanes, as a tree: (l + l+8), then (l + l+4), (l + l+2), (l + l+1). */
static float lanes_sum(const float *a)
{
    float t[LANES];
    memcpy(t, a, sizeof t);
    for (int w = LANES / 2; w > 0; w /= 2)
        for (int l = 0; l < w; l++) t[l] += t[l + w];
    return t[0];
}

/* The sum of x[0..n-1]. */
CR_SUM_CLONES static double sum_f(const float *x, int64_t n)
{
    double total = 0.0;
    for (int64_t b = 0; b < n; b += SUM_BLOCK) {
        const int64_t e = b + SUM_BLOCK < n ? b + SUM_BLOCK : n;
        v16f acc = {0}, v;
        int64_t i = b;
        for (; i + LANES <= e; i += LANES) {
            LOAD16(v, x + i);
            acc += v;
        }
        float a[LANES];
        memcpy(a, &acc, sizeof a);
        for (; i < e; i++) a[0] += x[i];
        total += lanes_sum(a);
    }
    return total;
}

/* The sum of (x[i] - mean)^2 over i < n. */
CR_SUM_CLONES static double sumsq_f(const float *x, int64_t n, float mean)
{
    double total = 0.0;
    for (int64_t b = 0; b < n; b += SUM_BLOCK) {
        const int64_t e = b + SUM_BLOCK < n ? b + SUM_BLOCK : n;
        v16f acc = {0}, v;
        int64_t i = b;
        for (; i + LANES <= e; i += LANES) {
            LOAD16(v, x + i);
            v -= mean;
            acc += v * v;
        }
        float a[LANES];
        memcpy(a, &acc, sizeof a);
        for (; i < e; i++) a[0] += (x[i] - mean) * (x[i] - mean);
        total += lanes_sum(a);
    }
    return total;
}

/* *sdy += sum of dy[i], *sdyx += sum of dy[i] * (x[i] - mean), over i < n. */
CR_SUM_CLONES static void sums_dy_f(const float *x, const float *dy, int64_t n, float mean,
                                   double *sdy, double *sdyx)
{
    for (int64_t b = 0; b < n; b += SUM_BLOCK) {
        const int64_t e = b + SUM_BLOCK < n ? b + SUM_BLOCK : n;
        v16f s = {0}, t = {0}, vx, vd;
        int64_t i = b;
        for (; i + LANES <= e; i += LANES) {
            LOAD16(vx, x + i);
            LOAD16(vd, dy + i);
            s += vd;
            t += vd * (vx - mean);
        }
        float a[LANES], c[LANES];
        memcpy(a, &s, sizeof a);
        memcpy(c, &t, sizeof c);
        for (; i < e; i++) {
            a[0] += dy[i];
            c[0] += dy[i] * (x[i] - mean);
        }
        *sdy += lanes_sum(a);
        *sdyx += lanes_sum(c);
    }
}

/* ---- ReLU ---------------------------------------------------------------------------- */

/* y = max(x, 0), element-wise over x->numel values (NaN propagates). */
cr_status cr_relu_forward(const cr_tensor *x, cr_tensor *y)
{
    cr_status s = need_same(y, x, "relu y", "x");
    if (s) return s;
    const int64_t n = (int64_t)x->numel;
    const float *xd = x->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float v = xd[i];
        yd[i] = (v > 0.0f || v != v) ? v : 0.0f;          /* NaN stays NaN, as in PyTorch */
    }
    return CR_OK;
}

/* dx = dy * [y > 0] element-wise; y is relu's output. */
cr_status cr_relu_backward(const cr_tensor *y, const cr_tensor *dy, cr_tensor *dx)
{
    cr_status s;
    if ((s = need_same(dy, y, "relu dy", "y")) || (s = need_same(dx, y, "relu dx", "y")))
        return s;
    const int64_t n = (int64_t)y->numel;
    const float *yd = y->data, *dyd = dy->data;
    float *dxd = dx->data;
    // @snippet relu_backward
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) {
        const float g = dyd[i];   /* loaded always: the choice becomes a blend, not a branch */
        dxd[i] = yd[i] > 0.0f ? g : 0.0f;
    }
    // @end relu_backward
    return CR_OK;
}

/* ---- add ------------------------------------------------------------------------------- */

void cr_copy_f(float *dst, const float *src, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] = src[i];
}

void cr_add_f(float *dst, const float *src, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

/* y = a + b element-wise (same shapes). */
cr_status cr_add_forward(const cr_tensor *a, const cr_tensor *b, cr_tensor *y)
{
    cr_status s;
    if ((s = need_same(b, a, "add b", "a")) || (s = need_same(y, a, "add y", "a"))) return s;
    const int64_t n = (int64_t)a->numel;
    const float *ad = a->data, *bd = b->data;
    float *yd = y->data;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) yd[i] = ad[i] + bd[i];
    return CR_OK;
}

/* da = db = dy (either may be NULL). */
cr_status cr_add_backward(const cr_tensor *dy, cr_tensor *da, cr_tensor *db)
{
    cr_status s;
    if ((da && (s = need_same(da, dy, "add da", "dy"))) ||
        (db && (s = need_same(db, dy, "add db", "dy"))))
        return s;
    if (da && da->data != dy->data) cr_copy_f(da->data, dy->data, (int64_t)dy->numel);
    if (db && db->data != dy->data) cr_copy_f(db->data, dy->data, (int64_t)dy->numel);
    return CR_OK;
}

/* ---- BatchNorm2d ----------------------------------------------------------------------- */

cr_bn_params cr_bn_params_default(void)
{
    return (cr_bn_params){.eps = 1e-5, .momentum = 0.1};
}

/* Checks the per-channel tensors of batch norm: each non-NULL one holds C values. */
static cr_status bn_check(const cr_tensor *x, const cr_tensor *gamma, const cr_tensor *beta,
                          const cr_tensor *a, const char *an, const cr_tensor *b,
                          const char *bn_)
{
    cr_status s = need4(x, "batchnorm x");
    if (s) return s;
    const size_t C = (size_t)x->shape[1];
    if ((!gamma) != (!beta))
        return cr_fail(CR_EINVAL, "batchnorm: gamma and beta must both be given or both NULL");
    if ((s = need_numel(gamma, C, "batchnorm gamma", 0)) ||
        (s = need_numel(beta, C, "batchnorm beta", 0)) || (s = need_numel(a, C, an, 0)) ||
        (s = need_numel(b, C, bn_, 0)))
        return s;
    return CR_OK;
}

/* Batch norm over x (N x C x H x W), per channel; see layers.h. */
cr_status cr_batchnorm2d_forward(const cr_bn_params *p, bool training, const cr_tensor *x,
                                 const cr_tensor *gamma, const cr_tensor *beta,
                                 cr_tensor *running_mean, cr_tensor *running_var,
                                 cr_tensor *y, cr_tensor *save_mean, cr_tensor *save_invstd)
{
    cr_status s;
    if ((s = bn_check(x, gamma, beta, running_mean, "batchnorm running_mean", running_var,
                      "batchnorm running_var")) ||
        (s = need_numel(save_mean, (size_t)x->shape[1], "batchnorm save_mean", 1)) ||
        (s = need_numel(save_invstd, (size_t)x->shape[1], "batchnorm save_invstd", 1)) ||
        (s = need_same(y, x, "batchnorm y", "x")))
        return s;
    if ((!running_mean) != (!running_var))
        return cr_fail(CR_EINVAL, "batchnorm: running_mean and running_var go together");
    if (!training && !running_mean)
        return cr_fail(CR_EINVAL, "batchnorm: evaluation mode needs the running statistics");
    if (!(p->eps > 0)) return cr_fail(CR_EINVAL, "batchnorm: eps must be > 0, got %g", p->eps);
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t M = N * HW;
    if (training && M < 2)
        return cr_fail(CR_EINVAL, "batchnorm: training needs more than 1 value per channel "
                       "(got N*H*W = %lld), as in PyTorch", (long long)M);
    // @snippet batchnorm_forward
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; c++) {
        double mean, var;
        if (training) {                      /* batch statistics, summed in double */
            double sum = 0.0, sq = 0.0;
            for (int64_t n = 0; n < N; n++) sum += sum_f(x->data + (n * C + c) * HW, HW);
            mean = sum / (double)M;
            for (int64_t n = 0; n < N; n++) sq += sumsq_f(x->data + (n * C + c) * HW, HW, (float)mean);
            var = sq / (double)M;            /* biased: normalises this batch */
            if (running_mean) {              /* unbiased: estimates the population */
                const double m = p->momentum;
                running_mean->data[c] = (float)((1 - m) * running_mean->data[c] + m * mean);
                running_var->data[c] =
                    (float)((1 - m) * running_var->data[c] + m * sq / (double)(M - 1));
            }
        } else {
            mean = running_mean->data[c];
            var = running_var->data[c];
        }
        const double invstd = 1.0 / sqrt(var + p->eps);
        save_mean->data[c] = (float)mean;
        save_invstd->data[c] = (float)invstd;
        const double g = gamma ? gamma->data[c] : 1.0, b = beta ? beta->data[c] : 0.0;
        const float scale = (float)(g * invstd), shift = (float)(b - mean * g * invstd);
        for (int64_t n = 0; n < N; n++) {
            const float *xc = x->data + (n * C + c) * HW;
            float *yc = y->data + (n * C + c) * HW;
            for (int64_t i = 0; i < HW; i++) yc[i] = xc[i] * scale + shift;
        }
    }
    // @end batchnorm_forward
    return CR_OK;
}

/* Gradients of batch norm for x, dy, dx (N x C x H x W) and gamma/beta (C); see layers.h. */
cr_status cr_batchnorm2d_backward(bool training, const cr_tensor *x, const cr_tensor *gamma,
                                  const cr_tensor *save_mean, const cr_tensor *save_invstd,
                                  const cr_tensor *dy, cr_tensor *dx, cr_tensor *dgamma,
                                  cr_tensor *dbeta)
{
    cr_status s;
    if ((s = bn_check(x, gamma, gamma, dgamma, "batchnorm dgamma", dbeta, "batchnorm dbeta")) ||
        (s = need_numel(save_mean, (size_t)x->shape[1], "batchnorm save_mean", 1)) ||
        (s = need_numel(save_invstd, (size_t)x->shape[1], "batchnorm save_invstd", 1)) ||
        (s = need_same(dy, x, "batchnorm dy", "x")) ||
        (dx && (s = need_same(dx, x, "batchnorm dx", "x"))))
        return s;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const double M = (double)(N * HW);
    // @snippet batchnorm_backward
    // @solution batchnorm_backward: dbeta = sum dy, dgamma = sum dy*xhat, and dx through the batch statistics
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < C; c++) {
        const double mean = save_mean->data[c], invstd = save_invstd->data[c];
        const double g = gamma ? gamma->data[c] : 1.0;
        double sum_dy = 0.0, sum_dy_xc = 0.0;   /* sums of dy and of dy * (x - mean) */
        for (int64_t n = 0; n < N; n++)
            sums_dy_f(x->data + (n * C + c) * HW, dy->data + (n * C + c) * HW, HW,
                      save_mean->data[c], &sum_dy, &sum_dy_xc);
        const double sum_dy_xhat = sum_dy_xc * invstd;
        if (dbeta) dbeta->data[c] = (float)sum_dy;
        if (dgamma) dgamma->data[c] = (float)sum_dy_xhat;
        if (!dx) continue;
        /* training: mean and variance depend on every x of the channel, so dx loses
         * the mean of dy and the part of dy along xhat; evaluation: constants.
         * dx = k * (dy - a - xhat * b) = k * dy + kx * x + k0 */
        const double k = g * invstd;
        const double a = training ? sum_dy / M : 0.0, b = training ? sum_dy_xhat / M : 0.0;
        const float kf = (float)k, kx = (float)(-k * invstd * b),
                    k0 = (float)(-k * a + k * invstd * b * mean);
        for (int64_t n = 0; n < N; n++) {
            const float *xc = x->data + (n * C + c) * HW, *dyc = dy->data + (n * C + c) * HW;
            float *dxc = dx->data + (n * C + c) * HW;
            for (int64_t i = 0; i < HW; i++) dxc[i] = kf * dyc[i] + kx * xc[i] + k0;
        }
    }
    // @stub
    // (void)training; (void)N; (void)C; (void)HW; (void)M;
    // return cr_todo("batchnorm_backward");
    // @end-solution
    // @end batchnorm_backward
    return CR_OK;
}

/* ---- GroupNorm ---------------------------------------------------------------------------- */

/* Checks group norm's operands: x rank 4, C divisible by groups, per-channel and
 * per-(image, group) tensors of the right sizes. */
static cr_status gn_check(int64_t groups, const cr_tensor *x, const cr_tensor *gamma,
                          const cr_tensor *beta, const cr_tensor *save_mean,
                          const cr_tensor *save_invstd)
{
    cr_status s = need4(x, "groupnorm x");
    if (s) return s;
    if (groups < 1 || x->shape[1] % groups != 0)
        return cr_fail(CR_EINVAL, "groupnorm: %lld channels are not divisible into %lld groups",
                       (long long)x->shape[1], (long long)groups);
    if ((!gamma) != (!beta))
        return cr_fail(CR_EINVAL, "groupnorm: gamma and beta must both be given or both NULL");
    const size_t C = (size_t)x->shape[1], NG = (size_t)(x->shape[0] * groups);
    if ((s = need_numel(gamma, C, "groupnorm gamma", 0)) ||
        (s = need_numel(beta, C, "groupnorm beta", 0)) ||
        (s = need_numel(save_mean, NG, "groupnorm save_mean", 1)) ||
        (s = need_numel(save_invstd, NG, "groupnorm save_invstd", 1)))
        return s;
    return CR_OK;
}

/* Group norm over x (N x C x H x W): statistics per (image, group); see layers.h. */
cr_status cr_groupnorm_forward(int64_t groups, double eps, const cr_tensor *x,
                               const cr_tensor *gamma, const cr_tensor *beta, cr_tensor *y,
                               cr_tensor *save_mean, cr_tensor *save_invstd)
{
    cr_status s;
    if ((s = gn_check(groups, x, gamma, beta, save_mean, save_invstd)) ||
        (s = need_same(y, x, "groupnorm y", "x")))
        return s;
    if (!(eps > 0)) return cr_fail(CR_EINVAL, "groupnorm: eps must be > 0, got %g", eps);
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t Cg = C / groups, M = Cg * HW;
#pragma omp parallel for schedule(static)
    for (int64_t ng = 0; ng < N * groups; ng++) {
        const float *xg = x->data + ng * M;   /* the group's channels are contiguous */
        const double mean = sum_f(xg, M) / (double)M;
        const double invstd = 1.0 / sqrt(sumsq_f(xg, M, (float)mean) / (double)M + eps);
        save_mean->data[ng] = (float)mean;
        save_invstd->data[ng] = (float)invstd;
        for (int64_t cc = 0; cc < Cg; cc++) {
            const int64_t c = (ng % groups) * Cg + cc;
            const double g = gamma ? gamma->data[c] : 1.0, b = beta ? beta->data[c] : 0.0;
            const float scale = (float)(invstd * g), shift = (float)(b - mean * invstd * g);
            const float *xc = xg + cc * HW;
            float *yc = y->data + ng * M + cc * HW;
            for (int64_t i = 0; i < HW; i++) yc[i] = xc[i] * scale + shift;
        }
    }
    return CR_OK;
}

/* Gradients of group norm for x, dy, dx (N x C x H x W) and gamma/beta (C); see layers.h. */
cr_status cr_groupnorm_backward(int64_t groups, const cr_tensor *x, const cr_tensor *gamma,
                                const cr_tensor *save_mean, const cr_tensor *save_invstd,
                                const cr_tensor *dy, cr_tensor *dx, cr_tensor *dgamma,
                                cr_tensor *dbeta)
{
    cr_status s;
    if ((s = gn_check(groups, x, gamma, gamma, save_mean, save_invstd)) ||
        (s = need_same(dy, x, "groupnorm dy", "x")) ||
        (dx && (s = need_same(dx, x, "groupnorm dx", "x"))) ||
        (s = need_numel(dgamma, (size_t)x->shape[1], "groupnorm dgamma", 0)) ||
        (s = need_numel(dbeta, (size_t)x->shape[1], "groupnorm dbeta", 0)))
        return s;
    const int64_t N = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    const int64_t Cg = C / groups, M = Cg * HW;
    /* per (image, channel): the sums of dy and of dy * (x - mean), group by group; dx
     * follows from its group's sums at once, while the group's planes are in the cache:
     * x and dy are read from memory once. */
    const size_t nc = (size_t)(N * C > 0 ? N * C : 1);
    double *sdy = malloc(nc * sizeof *sdy), *sdyx = malloc(nc * sizeof *sdyx);
    if (!sdy || !sdyx) {
        free(sdy);
        free(sdyx);
        return cr_fail(CR_ENOMEM, "groupnorm backward: out of memory");
    }
#pragma omp parallel for schedule(static)
    for (int64_t ng = 0; ng < N * groups; ng++) {
        const double mean = save_mean->data[ng], invstd = save_invstd->data[ng];
        const int64_t c0 = (ng % groups) * Cg, nc0 = (ng / groups) * C + c0;
        double sg = 0.0, sgx = 0.0;   /* with g = dy * gamma: sums of g and of g * xhat */
        for (int64_t cc = 0; cc < Cg; cc++) {
            const int64_t k = ng * M + cc * HW;
            const double gm = gamma ? gamma->data[c0 + cc] : 1.0;
            sdy[nc0 + cc] = sdyx[nc0 + cc] = 0.0;
            sums_dy_f(x->data + k, dy->data + k, HW, save_mean->data[ng], &sdy[nc0 + cc],
                      &sdyx[nc0 + cc]);
            sg += gm * sdy[nc0 + cc];
            sgx += gm * sdyx[nc0 + cc] * invstd;
        }
        if (!dx) continue;
        sg /= (double)M;
        sgx /= (double)M;
        /* dx = invstd * (g - mean(g) - xhat * mean(g * xhat)) = kd * dy + kx * x + k0 */
        const float kx = (float)(-invstd * invstd * sgx),
                    k0 = (float)(-invstd * sg + invstd * invstd * sgx * mean);
        for (int64_t cc = 0; cc < Cg; cc++) {
            const int64_t k = ng * M + cc * HW;
            const float kd = (float)(invstd * (gamma ? gamma->data[c0 + cc] : 1.0));
            const float *xc = x->data + k, *dyc = dy->data + k;
            float *dxc = dx->data + k;
            for (int64_t i = 0; i < HW; i++) dxc[i] = kd * dyc[i] + kx * xc[i] + k0;
        }
    }
    /* parameter gradients: per channel, the images' sums in image order */
    for (int64_t c = 0; c < C && (dgamma || dbeta); c++) {
        double gsum = 0.0, bsum = 0.0;
        for (int64_t n = 0; n < N; n++) {
            bsum += sdy[n * C + c];
            gsum += sdyx[n * C + c] * save_invstd->data[n * groups + c / Cg];
        }
        if (dgamma) dgamma->data[c] = (float)gsum;
        if (dbeta) dbeta->data[c] = (float)bsum;
    }
    free(sdy);
    free(sdyx);
    return CR_OK;
}

/* ---- max-pool ----------------------------------------------------------------------------- */

cr_pool_params cr_pool_params_make(int64_t k, int64_t s, int64_t p)
{
    return (cr_pool_params){k, k, s, s, p, p};
}

/* Output size of max_pool2d on h x w (PyTorch's rule, ceil_mode False). */
cr_status cr_maxpool2d_out_size(const cr_pool_params *p, int64_t h, int64_t w,
                                int64_t *h_out, int64_t *w_out)
{
    if (p->kernel_h < 1 || p->kernel_w < 1 || p->stride_h < 1 || p->stride_w < 1 ||
        p->pad_h < 0 || p->pad_w < 0)
        return cr_fail(CR_EINVAL, "maxpool: kernel and stride must be >= 1 and padding >= 0");
    if (2 * p->pad_h > p->kernel_h || 2 * p->pad_w > p->kernel_w)
        return cr_fail(CR_EINVAL, "maxpool: padding (%lld, %lld) must be at most half the "
                       "kernel (%lld, %lld)", (long long)p->pad_h, (long long)p->pad_w,
                       (long long)p->kernel_h, (long long)p->kernel_w);
    const int64_t ho = (h + 2 * p->pad_h - p->kernel_h) / p->stride_h + 1;
    const int64_t wo = (w + 2 * p->pad_w - p->kernel_w) / p->stride_w + 1;
    if (h + 2 * p->pad_h < p->kernel_h || w + 2 * p->pad_w < p->kernel_w || ho < 1 || wo < 1)
        return cr_fail(CR_EINVAL, "maxpool: a %lldx%lld input is smaller than the %lldx%lld "
                       "kernel", (long long)h, (long long)w, (long long)p->kernel_h,
                       (long long)p->kernel_w);
    *h_out = ho;
    *w_out = wo;
    return CR_OK;
}

// @snippet maxpool_takes
/* True if v replaces best in a max-pool window scanned row by row: v is greater, or NaN,
 * and no NaN was chosen before. So the first maximum wins and NaN propagates. */
static inline int pool_takes(float v, float best)
{
    return !(v <= best) & (best == best);
}

/* Output columns [a, b) of one output row, each window inside the plane's width: rows
 * i0..i1-1 of plane xp (W columns); yr, ar: the row's maxima and their argmax. Taps in
 * the window's row-major order, each over the whole run of columns, without branches. */
CR_SUM_CLONES static void pool_row_inner(const float *xp, int64_t W, int64_t i0, int64_t i1,
                                         const cr_pool_params *p, int64_t a, int64_t b,
                                         float *yr, int64_t *ar)
{
    const int64_t sw = p->stride_w, pw = p->pad_w;
    for (int64_t ow = a; ow < b; ow++) {
        yr[ow] = xp[i0 * W + ow * sw - pw];
        ar[ow] = i0 * W + ow * sw - pw;
    }
    for (int64_t i = i0; i < i1; i++)
        for (int64_t j = 0; j < p->kernel_w; j++) {
            const int64_t off = i * W + j - pw;
            for (int64_t ow = a; ow < b; ow++) {
                const float v = xp[off + ow * sw], best = yr[ow];
                const int take = pool_takes(v, best);
                yr[ow] = take ? v : best;
                ar[ow] = take ? off + ow * sw : ar[ow];
            }
        }
}
// @end maxpool_takes

/* Max over each window of x (N x C x H x W) into y (N x C x Ho x Wo), argmax per output. */
cr_status cr_maxpool2d_forward(const cr_pool_params *p, const cr_tensor *x, cr_tensor *y,
                               int64_t *argmax)
{
    cr_status s = need4(x, "maxpool x");
    int64_t Ho = 0, Wo = 0;
    if (s || (s = cr_maxpool2d_out_size(p, x->shape[2], x->shape[3], &Ho, &Wo)) ||
        (s = need_shape4(y, x->shape[0], x->shape[1], Ho, Wo, "maxpool y")))
        return s;
    const int64_t H = x->shape[2], W = x->shape[3], planes = x->shape[0] * x->shape[1];
    if (!argmax) {   /* evaluation: no indices to keep, a branch-free max per window */
#pragma omp parallel for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            const float *xp = x->data + pl * H * W;
            for (int64_t oh = 0; oh < Ho; oh++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    const int64_t h0 = oh * p->stride_h - p->pad_h, w0 = ow * p->stride_w - p->pad_w;
                    const int64_t i0 = h0 > 0 ? h0 : 0, i1 = h0 + p->kernel_h < H ? h0 + p->kernel_h : H;
                    const int64_t j0 = w0 > 0 ? w0 : 0, j1 = w0 + p->kernel_w < W ? w0 + p->kernel_w : W;
                    float best = -INFINITY;
                    int nan = 0;
                    for (int64_t i = i0; i < i1; i++)
                        for (int64_t j = j0; j < j1; j++) {
                            const float v = xp[i * W + j];
                            best = v > best ? v : best;
                            nan |= v != v;
                        }
                    y->data[(pl * Ho + oh) * Wo + ow] = nan ? NAN : best;
                }
        }
        return CR_OK;
    }
    // @snippet maxpool_forward
#pragma omp parallel for schedule(static)
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *xp = x->data + pl * H * W;
        for (int64_t oh = 0; oh < Ho; oh++) {
            const int64_t h0 = oh * p->stride_h - p->pad_h;
            const int64_t i0 = h0 > 0 ? h0 : 0, i1 = h0 + p->kernel_h < H ? h0 + p->kernel_h : H;
            float *yr = y->data + (pl * Ho + oh) * Wo;
            int64_t *ar = argmax + (pl * Ho + oh) * Wo;
            /* columns whose window lies inside the plane's width: one tap at a time for
             * the whole row, so that neighbouring outputs run in vector lanes */
            int64_t a = (p->pad_w + p->stride_w - 1) / p->stride_w, b = (W - p->kernel_w + p->pad_w) / p->stride_w + 1;
            if (b > Wo) b = Wo;
            if (a > b) a = b;
            pool_row_inner(xp, W, i0, i1, p, a, b, yr, ar);
            for (int64_t ow = 0; ow < Wo; ow++) {
                if (ow == a) ow = b;           /* the edges, one window at a time */
                if (ow >= Wo) break;
                const int64_t w0 = ow * p->stride_w - p->pad_w;
                /* the window clipped to the plane: padding is -inf, never chosen */
                const int64_t j0 = w0 > 0 ? w0 : 0, j1 = w0 + p->kernel_w < W ? w0 + p->kernel_w : W;
                float best = xp[i0 * W + j0];
                int64_t at = i0 * W + j0;
                for (int64_t i = i0; i < i1; i++)
                    for (int64_t j = j0; j < j1; j++) {
                        const float v = xp[i * W + j];
                        if (pool_takes(v, best)) {
                            best = v;
                            at = i * W + j;
                        }
                    }
                yr[ow] = best;
                ar[ow] = at;
            }
        }
    }
    // @end maxpool_forward
    return CR_OK;
}

/* dx (N x C x H x W) = scatter of dy (N x C x Ho x Wo) to the argmax positions. */
cr_status cr_maxpool2d_backward(const int64_t *argmax, const cr_tensor *dy, cr_tensor *dx)
{
    cr_status s;
    if ((s = need4(dy, "maxpool dy")) || (s = need4(dx, "maxpool dx"))) return s;
    if (!argmax) return cr_fail(CR_EINVAL, "maxpool backward: argmax is NULL");
    if (dy->shape[0] != dx->shape[0] || dy->shape[1] != dx->shape[1])
        return cr_fail(CR_EINVAL, "maxpool backward: dy and dx differ in N or C");
    const int64_t HW = dx->shape[2] * dx->shape[3], HWo = dy->shape[2] * dy->shape[3];
    const int64_t planes = dx->shape[0] * dx->shape[1];
    int64_t bad = -1;   /* an argmax outside its plane, if any */
#pragma omp parallel for schedule(static) reduction(max : bad)
    for (int64_t pl = 0; pl < planes; pl++) {
        float *dxp = dx->data + pl * HW;
        for (int64_t i = 0; i < HW; i++) dxp[i] = 0.0f;
        for (int64_t o = 0; o < HWo; o++) {
            const int64_t at = argmax[pl * HWo + o];
            if (at < 0 || at >= HW) {
                bad = pl * HWo + o;
                break;
            }
            dxp[at] += dy->data[pl * HWo + o];
        }
    }
    if (bad >= 0)
        return cr_fail(CR_EINVAL, "maxpool backward: argmax %lld outside the %lld-pixel plane",
                       (long long)argmax[bad], (long long)HW);
    return CR_OK;
}

/* ---- global average pool -------------------------------------------------------------------- */

/* y[n][c] = mean of x[n][c] (N x C x H x W -> N x C x 1 x 1). */
cr_status cr_global_avgpool_forward(const cr_tensor *x, cr_tensor *y)
{
    cr_status s = need4(x, "avgpool x");
    if (s || (s = need_shape4(y, x->shape[0], x->shape[1], 1, 1, "avgpool y"))) return s;
    const int64_t HW = x->shape[2] * x->shape[3], planes = x->shape[0] * x->shape[1];
    for (int64_t pl = 0; pl < planes; pl++) {
        double sum = 0.0;
        for (int64_t i = 0; i < HW; i++) sum += x->data[pl * HW + i];
        y->data[pl] = (float)(sum / (double)HW);
    }
    return CR_OK;
}

/* dx[n][c][h][w] = dy[n][c] / (H*W). */
cr_status cr_global_avgpool_backward(const cr_tensor *dy, cr_tensor *dx)
{
    cr_status s = need4(dx, "avgpool dx");
    if (s || (s = need_shape4(dy, dx->shape[0], dx->shape[1], 1, 1, "avgpool dy"))) return s;
    const int64_t HW = dx->shape[2] * dx->shape[3], planes = dx->shape[0] * dx->shape[1];
    for (int64_t pl = 0; pl < planes; pl++) {
        const float g = (float)(dy->data[pl] / (double)HW);
        for (int64_t i = 0; i < HW; i++) dx->data[pl * HW + i] = g;
    }
    return CR_OK;
}

/* ---- up-sampling ---------------------------------------------------------------------------- */

/* Output size of the interpolation on an h x w input. */
cr_status cr_upsample_out_size(const cr_upsample_params *p, int64_t h, int64_t w,
                               int64_t *h_out, int64_t *w_out)
{
    if (p->mode != CR_UPSAMPLE_NEAREST && p->mode != CR_UPSAMPLE_BILINEAR)
        return cr_fail(CR_EINVAL, "upsample: unknown mode %d", (int)p->mode);
    if (p->mode == CR_UPSAMPLE_NEAREST && p->align_corners)
        return cr_fail(CR_EINVAL, "upsample: align_corners only applies to bilinear, as in PyTorch");
    const int64_t ho = p->scale_h > 0 ? (int64_t)floor((double)h * p->scale_h) : p->out_h;
    const int64_t wo = p->scale_w > 0 ? (int64_t)floor((double)w * p->scale_w) : p->out_w;
    if (ho < 1 || wo < 1)
        return cr_fail(CR_EINVAL, "upsample: output size %lldx%lld (from a %lldx%lld input) is "
                       "empty; give out_h/out_w or scale_h/scale_w > 0", (long long)ho,
                       (long long)wo, (long long)h, (long long)w);
    *h_out = ho;
    *w_out = wo;
    return CR_OK;
}

/* One axis of the interpolation: for each output index, the two source indices and
 * weights (nearest: i0 == i1, l0 = 1). in, out: sizes; scale: the scale_factor or 0. */
typedef struct { int64_t i0, i1; double l0, l1; } axis_tap;

/* Fills taps[0..out-1] for one axis, as PyTorch 1.13's upsample kernels compute them. */
static void axis_taps(const cr_upsample_params *p, int64_t in, int64_t out, double scale,
                      axis_tap *taps)
{
    // @snippet upsample_source_index
    for (int64_t d = 0; d < out; d++) {
        axis_tap t;
        if (p->mode == CR_UPSAMPLE_NEAREST) {      /* legacy 'nearest', in float as PyTorch */
            int64_t src;
            if (out == in) src = d;
            else if (out == 2 * in) src = d >> 1;
            else {
                const float r = scale > 0 ? (float)(1.0 / scale) : (float)in / (float)out;
                src = (int64_t)floorf((float)d * r);
                if (src > in - 1) src = in - 1;
            }
            t = (axis_tap){src, src, 1.0, 0.0};
        } else {
            double src;
            if (p->align_corners) {                /* corners coincide */
                src = out > 1 ? (double)(in - 1) / (double)(out - 1) * (double)d : 0.0;
            } else {                               /* pixel centres: (d + 0.5) / s - 0.5 */
                const double r = scale > 0 ? 1.0 / scale : (double)in / (double)out;
                src = r * ((double)d + 0.5) - 0.5;
                if (src < 0) src = 0;
            }
            const int64_t i0 = (int64_t)src;
            const int64_t i1 = i0 + (i0 < in - 1 ? 1 : 0);
            const double l1 = src - (double)i0;
            t = (axis_tap){i0, i1, 1.0 - l1, l1};
        }
        taps[d] = t;
    }
    // @end upsample_source_index
}

/* Builds both axes' taps for x's size (caller frees *th, *tw); checks y's or dy's shape. */
static cr_status upsample_plan(const cr_upsample_params *p, const cr_tensor *in,
                               const cr_tensor *out, const char *what, axis_tap **th,
                               axis_tap **tw)
{
    int64_t Ho = 0, Wo = 0;
    cr_status s = cr_upsample_out_size(p, in->shape[2], in->shape[3], &Ho, &Wo);
    if (s || (s = need_shape4(out, in->shape[0], in->shape[1], Ho, Wo, what))) return s;
    *th = malloc((size_t)Ho * sizeof **th);
    *tw = malloc((size_t)Wo * sizeof **tw);
    if (!*th || !*tw) {
        free(*th);
        free(*tw);
        return cr_fail(CR_ENOMEM, "upsample: out of memory");
    }
    axis_taps(p, in->shape[2], Ho, p->scale_h, *th);
    axis_taps(p, in->shape[3], Wo, p->scale_w, *tw);
    return CR_OK;
}

/* Nearest x2 (each source pixel to a 2 x 2 block), one plane: x (H x W) -> y (2H x 2W).
 * Each doubled row is written once and copied below itself. */
CR_SUM_CLONES static void nearest2_plane(const float *x, int64_t H, int64_t W, float *y)
{
    for (int64_t h = 0; h < H; h++) {
        const float *row = x + h * W;
        float *y0 = y + 2 * h * 2 * W;
        for (int64_t w = 0; w < W; w++) y0[2 * w] = y0[2 * w + 1] = row[w];
        memcpy(y0 + 2 * W, y0, (size_t)(2 * W) * sizeof *y0);
    }
}

/* Its adjoint, one plane: dx (H x W) = the sum of each 2 x 2 block of dy (2H x 2W), added
 * as the general path adds it (down the rows first, then along them). */
CR_SUM_CLONES static void nearest2_plane_backward(const float *dy, int64_t H, int64_t W,
                                                  float *dx)
{
    for (int64_t h = 0; h < H; h++) {
        const float *g0 = dy + 2 * h * 2 * W, *g1 = g0 + 2 * W;
        float *xr = dx + h * W;
        for (int64_t w = 0; w < W; w++)
            xr[w] = (g0[2 * w] + g1[2 * w]) + (g0[2 * w + 1] + g1[2 * w + 1]);
    }
}

/* y (N x C x Ho x Wo) = interpolation of x (N x C x H x W). Bilinear in two passes per
 * plane: every source row interpolated along the width into t (H x Wo), then each output
 * row the blend of two rows of t; the sums are PyTorch's,
 * h0 * (w0 * x00 + w1 * x01) + h1 * (w0 * x10 + w1 * x11), in float. */
cr_status cr_upsample_forward(const cr_upsample_params *p, const cr_tensor *x, cr_tensor *y)
{
    axis_tap *th = NULL, *tw = NULL;
    cr_status s = need4(x, "upsample x");
    if (s || (s = upsample_plan(p, x, y, "upsample y", &th, &tw))) return s;
    const int64_t H = x->shape[2], W = x->shape[3], Ho = y->shape[2], Wo = y->shape[3];
    const int64_t planes = x->shape[0] * x->shape[1];
    const bool nearest = p->mode == CR_UPSAMPLE_NEAREST;
    if (nearest && Ho == 2 * H && Wo == 2 * W) {   /* the FPN's x2: no index tables */
#pragma omp parallel for schedule(static) if (planes * Ho * Wo >= PAR_MIN)
        for (int64_t pl = 0; pl < planes; pl++)
            nearest2_plane(x->data + pl * H * W, H, W, y->data + pl * Ho * Wo);
        free(th);
        free(tw);
        return CR_OK;
    }
    int oom = 0;
#pragma omp parallel reduction(| : oom) if (planes * Ho * Wo >= PAR_MIN)
    {
        float *t = nearest ? NULL : malloc((size_t)(H * Wo) * sizeof *t);
        oom = !nearest && !t;
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            if (oom) continue;
            const float *xp = x->data + pl * H * W;
            float *yp = y->data + pl * Ho * Wo;
            if (nearest) {
                for (int64_t oh = 0; oh < Ho; oh++) {
                    const float *row = xp + th[oh].i0 * W;
                    for (int64_t ow = 0; ow < Wo; ow++) yp[oh * Wo + ow] = row[tw[ow].i0];
                }
                continue;
            }
            for (int64_t h = 0; h < H; h++)
                for (int64_t ow = 0; ow < Wo; ow++) {
                    const axis_tap b = tw[ow];
                    t[h * Wo + ow] = (float)b.l0 * xp[h * W + b.i0] + (float)b.l1 * xp[h * W + b.i1];
                }
            for (int64_t oh = 0; oh < Ho; oh++) {
                const float l0 = (float)th[oh].l0, l1 = (float)th[oh].l1;
                const float *r0 = t + th[oh].i0 * Wo, *r1 = t + th[oh].i1 * Wo;
                float *yr = yp + oh * Wo;
                for (int64_t ow = 0; ow < Wo; ow++) yr[ow] = l0 * r0[ow] + l1 * r1[ow];
            }
        }
        free(t);
    }
    free(th);
    free(tw);
    if (oom) return cr_fail(CR_ENOMEM, "upsample: out of memory");
    return CR_OK;
}

/* dx (N x C x H x W) = adjoint of the interpolation applied to dy (N x C x Ho x Wo): each
 * output row's gradient spread over its source rows into t (H x Wo), then each row of t
 * over the source columns. Nearest sends each gradient to its one source pixel. */
cr_status cr_upsample_backward(const cr_upsample_params *p, const cr_tensor *dy, cr_tensor *dx)
{
    axis_tap *th = NULL, *tw = NULL;
    cr_status s = need4(dx, "upsample dx");
    if (s || (s = upsample_plan(p, dx, dy, "upsample dy", &th, &tw))) return s;
    const int64_t H = dx->shape[2], W = dx->shape[3], Ho = dy->shape[2], Wo = dy->shape[3];
    const int64_t planes = dx->shape[0] * dx->shape[1];
    const bool nearest = p->mode == CR_UPSAMPLE_NEAREST;
    if (nearest && Ho == 2 * H && Wo == 2 * W) {   /* the FPN's x2 */
#pragma omp parallel for schedule(static) if (planes * Ho * Wo >= PAR_MIN)
        for (int64_t pl = 0; pl < planes; pl++)
            nearest2_plane_backward(dy->data + pl * Ho * Wo, H, W, dx->data + pl * H * W);
        free(th);
        free(tw);
        return CR_OK;
    }
    int oom = 0;
#pragma omp parallel reduction(| : oom) if (planes * Ho * Wo >= PAR_MIN)
    {
        float *t = malloc((size_t)(H * Wo) * sizeof *t);
        oom = !t;
#pragma omp for schedule(static)
        for (int64_t pl = 0; pl < planes; pl++) {
            if (oom) continue;
            float *xp = dx->data + pl * H * W;
            const float *yp = dy->data + pl * Ho * Wo;
            for (int64_t i = 0; i < H * Wo; i++) t[i] = 0.0f;
            for (int64_t oh = 0; oh < Ho; oh++) {
                const float *g = yp + oh * Wo;
                float *t0 = t + th[oh].i0 * Wo, *t1 = t + th[oh].i1 * Wo;
                if (nearest) {
                    for (int64_t ow = 0; ow < Wo; ow++) t0[ow] += g[ow];
                    continue;
                }
                const float l0 = (float)th[oh].l0, l1 = (float)th[oh].l1;
                for (int64_t ow = 0; ow < Wo; ow++) t0[ow] += l0 * g[ow];
                for (int64_t ow = 0; ow < Wo; ow++) t1[ow] += l1 * g[ow];
            }
            for (int64_t i = 0; i < H * W; i++) xp[i] = 0.0f;
            for (int64_t h = 0; h < H; h++) {
                const float *tr = t + h * Wo;
                float *xr = xp + h * W;
                if (nearest) {
                    for (int64_t ow = 0; ow < Wo; ow++) xr[tw[ow].i0] += tr[ow];
                    continue;
                }
                for (int64_t ow = 0; ow < Wo; ow++) {
                    xr[tw[ow].i0] += (float)tw[ow].l0 * tr[ow];
                    xr[tw[ow].i1] += (float)tw[ow].l1 * tr[ow];
                }
            }
        }
        free(t);
    }
    free(th);
    free(tw);
    if (oom) return cr_fail(CR_ENOMEM, "upsample: out of memory");
    return CR_OK;
}

/* ---- dropout -------------------------------------------------------------------------------- */

/* y = x * mask, mask = 1/(1-p) with probability 1-p else 0, drawn from rng in element order. */
cr_status cr_dropout_forward(double p, cr_rng *rng, const cr_tensor *x, cr_tensor *y,
                             cr_tensor *mask)
{
    cr_status s;
    if ((s = need_same(y, x, "dropout y", "x")) ||
        (s = need_numel(mask, x->numel, "dropout mask", 1)))
        return s;
    if (!(p >= 0.0 && p < 1.0))
        return cr_fail(CR_EINVAL, "dropout: p must be in [0, 1), got %g", p);
    if (!rng) return cr_fail(CR_EINVAL, "dropout: rng is NULL");
    // @snippet dropout_forward
    const float keep_scale = (float)(1.0 / (1.0 - p));
    for (size_t i = 0; i < x->numel; i++) {
        const float m = (p == 0.0 || cr_rng_uniform(rng) >= p) ? keep_scale : 0.0f;
        mask->data[i] = m;
        y->data[i] = x->data[i] * m;
    }
    // @end dropout_forward
    return CR_OK;
}

/* dx = dy * mask, element-wise. */
cr_status cr_dropout_backward(const cr_tensor *mask, const cr_tensor *dy, cr_tensor *dx)
{
    cr_status s;
    if ((s = need_numel(mask, dy->numel, "dropout mask", 1)) ||
        (s = need_same(dx, dy, "dropout dx", "dy")))
        return s;
    const int64_t n = (int64_t)dy->numel;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx->data[i] = dy->data[i] * mask->data[i];
    return CR_OK;
}

/* Plane-wise dropout: mask[n*C + c] = 1/(1-p) or 0, drawn in (n, c) order; y = x * mask. */
cr_status cr_dropout2d_forward(double p, cr_rng *rng, const cr_tensor *x, cr_tensor *y,
                               cr_tensor *mask)
{
    cr_status s;
    if (x->ndim != 4) return cr_fail(CR_EINVAL, "dropout2d: x must be N x C x H x W");
    const size_t planes = (size_t)(x->shape[0] * x->shape[1]), hw = x->numel / planes;
    if ((s = need_same(y, x, "dropout2d y", "x")) ||
        (s = need_numel(mask, planes, "dropout2d mask", 1)))
        return s;
    if (!(p >= 0.0 && p < 1.0))
        return cr_fail(CR_EINVAL, "dropout2d: p must be in [0, 1), got %g", p);
    if (!rng) return cr_fail(CR_EINVAL, "dropout2d: rng is NULL");
    const float keep_scale = (float)(1.0 / (1.0 - p));
    for (size_t i = 0; i < planes; i++)
        mask->data[i] = (p == 0.0 || cr_rng_uniform(rng) >= p) ? keep_scale : 0.0f;
#pragma omp parallel for schedule(static) if (planes * hw >= PAR_MIN)
    for (size_t i = 0; i < planes; i++)
        for (size_t j = 0; j < hw; j++) y->data[i * hw + j] = x->data[i * hw + j] * mask->data[i];
    return CR_OK;
}

/* dx = dy * mask[plane]. */
cr_status cr_dropout2d_backward(const cr_tensor *mask, const cr_tensor *dy, cr_tensor *dx)
{
    cr_status s;
    if (dy->ndim != 4) return cr_fail(CR_EINVAL, "dropout2d: dy must be N x C x H x W");
    const size_t planes = (size_t)(dy->shape[0] * dy->shape[1]), hw = dy->numel / planes;
    if ((s = need_numel(mask, planes, "dropout2d mask", 1)) ||
        (s = need_same(dx, dy, "dropout2d dx", "dy")))
        return s;
#pragma omp parallel for schedule(static) if (planes * hw >= PAR_MIN)
    for (size_t i = 0; i < planes; i++)
        for (size_t j = 0; j < hw; j++) dx->data[i * hw + j] = dy->data[i * hw + j] * mask->data[i];
    return CR_OK;
}
