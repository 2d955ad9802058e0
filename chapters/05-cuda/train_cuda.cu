/* train_cuda.cu — chapter 5: chapter 4's training step on the device (cuda_train.h).
 * Host code, except the dropout kernel: the same walk over the module list as chapter 4's
 * model.c, forward then backward, with every tensor in device memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cuda_train.h"
#include "cuda_util.h"

/* One module's device state for training. */
struct TrainModule {
    float *w, *b, *rm, *rv;        /* parameters and running statistics (BatchNorm) */
    float *dw, *db;                /* their gradients */
    float *mw, *vw, *mb, *vb;      /* AdamW's first and second moments */
    size_t nw, nb;                 /* floats in w and b */
    float *out, *dout;             /* output and its gradient */
    size_t out_cap, dout_cap;      /* floats each can hold */
    cr_cuda_nchw shape;            /* output shape of the last forward */
    float *save_mean, *save_invstd;
    size_t mean_cap, invstd_cap;
    int64_t *argmax;               /* max-pool */
    size_t argmax_cap;
    float *mask;                   /* dropout: the mask drawn on the host, on the device */
    size_t mask_cap;
    bool dout_set;                 /* the backward has written dout */
};

struct cr_cuda_trainer {
    cr_model *m;
    int n;
    TrainModule *mods;
    cr_optim_config cfg;
    int64_t step;
    size_t bytes;
    float *scratch;                /* a gradient to be added into an already written dout */
    size_t scratch_cap;
};

/* ---- buffers ------------------------------------------------------------------------------------ */

/* Makes *p hold at least n elements of size es (a new buffer when it is smaller). */
static cr_status ensure(cr_cuda_trainer *t, void **p, size_t *cap, size_t n, size_t es,
                        const char *what)
{
    if (*p && *cap >= n) return CR_OK;
    cr_cuda_free(*p);
    t->bytes -= *cap * es;   /* what the old buffer counted */
    *p = NULL;
    *cap = 0;
    CR_TRY(cr_cuda_malloc(p, (n ? n : 1) * es, what));
    *cap = n;
    t->bytes += n * es;
    return CR_OK;
}
#define ENSURE_F(t, p, cap, n, what) ensure((t), (void **)&(p), &(cap), (n), sizeof(float), (what))

/* A device buffer of n floats holding the host tensor's values, or zeros (values NULL). */
static cr_status upload(cr_cuda_trainer *t, const float *values, size_t n, float **d,
                        const char *what)
{
    CR_TRY(cr_cuda_malloc((void **)d, n * sizeof(float), what));
    t->bytes += n * sizeof(float);
    if (values) return cr_cuda_to_device(*d, values, n * sizeof(float));
    return cr_cuda_check(cudaMemset(*d, 0, n * sizeof(float)), "cudaMemset (trainer)");
}

static size_t numel(cr_cuda_nchw s)
{
    return (size_t)(s.n * s.c * s.h * s.w);
}

void cr_cuda_trainer_free(cr_cuda_trainer *t)
{
    if (!t) return;
    for (int i = 0; t->mods && i < t->n; i++) {
        TrainModule *v = &t->mods[i];
        float *fs[] = {v->w, v->b, v->rm, v->rv, v->dw, v->db, v->mw, v->vw, v->mb, v->vb,
                       v->out, v->dout, v->save_mean, v->save_invstd, v->mask};
        for (size_t k = 0; k < sizeof fs / sizeof *fs; k++) cr_cuda_free(fs[k]);
        cr_cuda_free(v->argmax);
    }
    cr_cuda_free(t->scratch);
    free(t->mods);
    free(t);
}

size_t cr_cuda_trainer_bytes(const cr_cuda_trainer *t)
{
    return t ? t->bytes : 0;
}

cr_status cr_cuda_trainer_create(cr_model *m, const cr_optim_config *c, cr_cuda_trainer **out)
{
    if (!out) return cr_fail(CR_EINVAL, "cr_cuda_trainer_create: out is NULL");
    *out = NULL;
    CR_TRY(cr_cuda_model_supported("cr_cuda_trainer_create", "step", m));
    if (!c || c->kind != CR_OPTIM_ADAMW)
        return cr_fail(CR_EINVAL, "cr_cuda_trainer_create: the optimizer must be AdamW "
                       "(cr_adamw_config)");
    cr_cuda_trainer *t = (cr_cuda_trainer *)calloc(1, sizeof *t);
    if (!t) return cr_fail(CR_ENOMEM, "cr_cuda_trainer_create: out of memory");
    t->m = m;
    t->n = m->n;
    t->cfg = *c;
    t->mods = (TrainModule *)calloc((size_t)m->n, sizeof *t->mods);
    cr_status s = t->mods ? CR_OK : cr_fail(CR_ENOMEM, "cr_cuda_trainer_create: out of memory");
    for (int i = 0; i < m->n && !s; i++) {
        const cr_module *d = &m->mods[i];
        TrainModule *v = &t->mods[i];
        const bool conv = d->kind == CR_MOD_CONV;
        if (!conv && d->kind != CR_MOD_BATCHNORM && d->kind != CR_MOD_GROUPNORM) continue;
        if (!d->weight.data || (!conv && d->bias.numel != d->weight.numel))
            s = cr_fail(CR_EINVAL, "cr_cuda_trainer_create: '%s' has no weight (and bias)", d->name);
        v->nw = d->weight.numel;
        v->nb = conv && !d->conv.bias ? 0 : d->bias.numel;
        if (!s) s = upload(t, d->weight.data, v->nw, &v->w, d->name);
        if (!s) s = upload(t, NULL, v->nw, &v->dw, d->name);
        if (!s) s = upload(t, NULL, v->nw, &v->mw, d->name);
        if (!s) s = upload(t, NULL, v->nw, &v->vw, d->name);
        if (!s && v->nb) s = upload(t, d->bias.data, v->nb, &v->b, d->name);
        if (!s && v->nb) s = upload(t, NULL, v->nb, &v->db, d->name);
        if (!s && v->nb) s = upload(t, NULL, v->nb, &v->mb, d->name);
        if (!s && v->nb) s = upload(t, NULL, v->nb, &v->vb, d->name);
        if (!s && d->kind == CR_MOD_BATCHNORM) {
            s = upload(t, d->running_mean.data, d->running_mean.numel, &v->rm, d->name);
            if (!s) s = upload(t, d->running_var.data, d->running_var.numel, &v->rv, d->name);
        }
    }
    if (s) {
        cr_cuda_trainer_free(t);
        return s;
    }
    *out = t;
    return CR_OK;
}

/* ---- forward in training mode -------------------------------------------------------------------- */

/* y = x * mask over planes of `plane` values (mask: one value per plane; plane 1: per value). */
__global__ void dropout_apply_kernel(const float *__restrict__ x, const float *__restrict__ mask,
                                     float *__restrict__ y, long long n, long long plane)
{
    const long long e = blockIdx.x * (long long)blockDim.x + threadIdx.x;
    if (e < n) y[e] = x[e] * mask[e / plane];
}

static cr_status dropout_apply(const float *x, const float *mask, float *y, size_t n, size_t plane)
{
    unsigned blocks = 1;
    CR_TRY(cr_cuda_grid_1d((long long)n, 256, "dropout_apply_kernel", &blocks));
    dropout_apply_kernel<<<blocks, 256>>>(x, mask, y, (long long)n, (long long)plane);
    return CR_CUDA_LAUNCHED("dropout_apply_kernel");
}

/* Draws module d's dropout mask for input shape s on the host, from the model's stream in
 * chapter 4's order (cr_dropout_forward / cr_dropout2d_forward on a stand-in input of the
 * mask's size), and copies it to v->mask. */
static cr_status draw_mask(cr_cuda_trainer *t, const cr_module *d, TrainModule *v, cr_cuda_nchw s)
{
    const size_t count = d->drop_2d ? (size_t)(s.n * s.c) : numel(s);
    cr_tensor x, y, mask;
    memset(&x, 0, sizeof x);
    memset(&y, 0, sizeof y);
    memset(&mask, 0, sizeof mask);
    const int64_t shape[4] = {s.n, s.c, d->drop_2d ? 1 : s.h, d->drop_2d ? 1 : s.w};
    const int64_t mshape[1] = {(int64_t)count};
    cr_status st = cr_tensor_alloc(&x, 4, shape);
    if (!st) st = cr_tensor_alloc(&y, 4, shape);
    if (!st) st = d->drop_2d ? cr_tensor_alloc(&mask, 1, mshape) : cr_tensor_alloc(&mask, 4, shape);
    if (!st) {
        cr_tensor_fill(&x, 1.0f);
        st = d->drop_2d ? cr_dropout2d_forward(d->drop_p, &t->m->rng, &x, &y, &mask)
                        : cr_dropout_forward(d->drop_p, &t->m->rng, &x, &y, &mask);
    }
    if (!st) st = ENSURE_F(t, v->mask, v->mask_cap, count, d->name);
    if (!st) st = cr_cuda_to_device(v->mask, mask.data, count * sizeof(float));
    cr_tensor_free(&x);
    cr_tensor_free(&y);
    cr_tensor_free(&mask);
    return st;
}

static const float *input_of(const cr_cuda_trainer *t, int j, const float *x)
{
    return j == CR_MODEL_INPUT ? x : t->mods[j].out;
}

static cr_cuda_nchw shape_of(const cr_cuda_trainer *t, int j, cr_cuda_nchw in)
{
    return j == CR_MODEL_INPUT ? in : t->mods[j].shape;
}

// @snippet gpu_train_forward
/* Module i's forward in training mode; x: the model's input (shape in). */
static cr_status forward_module(cr_cuda_trainer *t, int i, const float *x, cr_cuda_nchw in)
{
    const cr_module *d = &t->m->mods[i];
    TrainModule *v = &t->mods[i];
    if (d->in >= i) return cr_fail(CR_EINVAL, "reads module %d, not an earlier one", d->in);
    const cr_cuda_nchw s = shape_of(t, d->in, in);
    const float *src = input_of(t, d->in, x);
    cr_cuda_nchw o = s;
    cr_conv_shape cs;
    cr_upsample_params up = d->up;
    switch (d->kind) {   /* the output's shape first */
    case CR_MOD_CONV:
        CR_TRY(cr_conv_shape_init(&cs, &d->conv, s.n, s.h, s.w));
        if (s.c != d->conv.in_channels)
            return cr_fail(CR_EINVAL, "its input has %lld channels, expected %lld",
                           (long long)s.c, (long long)d->conv.in_channels);
        o.c = d->conv.out_channels, o.h = cs.h_out, o.w = cs.w_out;
        break;
    case CR_MOD_MAXPOOL:
        CR_TRY(cr_maxpool2d_out_size(&d->pool, s.h, s.w, &o.h, &o.w));
        break;
    case CR_MOD_UPSAMPLE:
        if (d->up_like >= 0) {
            up.out_h = t->mods[d->up_like].shape.h, up.out_w = t->mods[d->up_like].shape.w;
            up.scale_h = up.scale_w = 0;
        }
        CR_TRY(cr_upsample_out_size(&up, s.h, s.w, &o.h, &o.w));
        break;
    default:
        break;
    }
    v->shape = o;
    CR_TRY(ENSURE_F(t, v->out, v->out_cap, numel(o), d->name));
    switch (d->kind) {
    case CR_MOD_CONV:
        return cr_cuda_conv2d(&cs, src, v->w, v->b, v->out);
    case CR_MOD_BATCHNORM:
    case CR_MOD_GROUPNORM: {
        const size_t ns = d->kind == CR_MOD_BATCHNORM ? (size_t)s.c : (size_t)(s.n * d->groups);
        CR_TRY(ENSURE_F(t, v->save_mean, v->mean_cap, ns, d->name));
        CR_TRY(ENSURE_F(t, v->save_invstd, v->invstd_cap, ns, d->name));
        return d->kind == CR_MOD_BATCHNORM
            ? cr_cuda_batchnorm_forward(&d->bn, !d->frozen, s, src, v->w, v->b, v->rm, v->rv,
                                        v->out, v->save_mean, v->save_invstd, false)
            : cr_cuda_groupnorm_forward(d->groups, d->eps, s, src, v->w, v->b, v->out,
                                        v->save_mean, v->save_invstd, false);
    }
    case CR_MOD_RELU:
        return cr_cuda_relu((int64_t)numel(s), src, v->out);
    case CR_MOD_MAXPOOL:
        CR_TRY(ensure(t, (void **)&v->argmax, &v->argmax_cap, numel(o), sizeof(int64_t), d->name));
        return cr_cuda_maxpool2d_forward(&d->pool, s, src, v->out, v->argmax);
    case CR_MOD_UPSAMPLE:
        return cr_cuda_upsample_forward(&up, s, src, v->out);
    case CR_MOD_ADD: {
        const cr_cuda_nchw b = shape_of(t, d->in2, in);
        if (d->in2 >= i) return cr_fail(CR_EINVAL, "reads module %d, not an earlier one", d->in2);
        if (b.n != s.n || b.c != s.c || b.h != s.h || b.w != s.w)
            return cr_fail(CR_EINVAL, "add: its inputs' shapes differ");
        return cr_cuda_add((int64_t)numel(s), src, input_of(t, d->in2, x), v->out, false);
    }
    case CR_MOD_DROPOUT:
        CR_TRY(draw_mask(t, d, v, s));
        return dropout_apply(src, v->mask, v->out, numel(s),
                             d->drop_2d ? (size_t)(s.h * s.w) : 1);
    default:
        return cr_fail(CR_EINVAL, "a %s module is not on the GPU yet", cr_module_kind_name(d->kind));
    }
}
// @end gpu_train_forward

/* ---- backward ------------------------------------------------------------------------------------ */

/* Where the gradient for module j's output goes: its dout when nothing has been written
 * there yet (*direct), else the scratch buffer, added afterwards (grad_commit). */
static cr_status grad_target(cr_cuda_trainer *t, int j, float **dst, bool *direct)
{
    TrainModule *v = &t->mods[j];
    const size_t n = numel(v->shape);
    CR_TRY(ENSURE_F(t, v->dout, v->dout_cap, n, t->m->mods[j].name));
    if (!v->dout_set) {
        *dst = v->dout;
        *direct = true;
        return CR_OK;
    }
    CR_TRY(ENSURE_F(t, t->scratch, t->scratch_cap, n, "the gradient scratch buffer"));
    *dst = t->scratch;
    *direct = false;
    return CR_OK;
}

static cr_status grad_commit(cr_cuda_trainer *t, int j, const float *g, bool direct)
{
    TrainModule *v = &t->mods[j];
    if (direct) {
        v->dout_set = true;
        return CR_OK;
    }
    return cr_cuda_add((int64_t)numel(v->shape), v->dout, g, v->dout, false);
}

static cr_status copy_dev(float *dst, const float *src, size_t n)
{
    return cr_cuda_check(cudaMemcpy(dst, src, n * sizeof(float), cudaMemcpyDeviceToDevice),
                         "cudaMemcpy (gradient)");
}

// @snippet gpu_train_backward
/* Back-propagates module i's dout into its input(s) and its parameters' gradients. */
static cr_status backward_module(cr_cuda_trainer *t, int i, const float *x, cr_cuda_nchw in)
{
    const cr_module *d = &t->m->mods[i];
    TrainModule *v = &t->mods[i];
    const cr_cuda_nchw s = shape_of(t, d->in, in);
    const float *src = input_of(t, d->in, x), *dy = v->dout;
    float *dx = NULL;
    bool direct = false;
    if (d->in != CR_MODEL_INPUT) CR_TRY(grad_target(t, d->in, &dx, &direct));
    switch (d->kind) {
    case CR_MOD_CONV: {
        cr_conv_shape cs;
        CR_TRY(cr_conv_shape_init(&cs, &d->conv, s.n, s.h, s.w));
        CR_TRY(cr_cuda_conv2d_backward(&cs, src, v->w, dy, dx, v->dw, v->nb ? v->db : NULL));
        break;
    }
    case CR_MOD_BATCHNORM:
        CR_TRY(cr_cuda_batchnorm_backward(!d->frozen, s, src, v->w, v->save_mean,
                                          v->save_invstd, NULL, dy, dx, v->dw, v->db));
        break;
    case CR_MOD_GROUPNORM:
        CR_TRY(cr_cuda_groupnorm_backward(d->groups, s, src, v->w, v->save_mean, v->save_invstd,
                                          NULL, dy, dx, v->dw, v->db));
        break;
    case CR_MOD_RELU:
        if (dx) CR_TRY(cr_cuda_relu_backward((int64_t)numel(s), v->out, dy, dx));
        break;
    case CR_MOD_MAXPOOL:
        if (dx) CR_TRY(cr_cuda_maxpool2d_backward(&d->pool, s, v->shape, v->argmax, dy, dx));
        break;
    case CR_MOD_UPSAMPLE: {
        cr_upsample_params up = d->up;
        if (d->up_like >= 0) {
            up.out_h = v->shape.h, up.out_w = v->shape.w;
            up.scale_h = up.scale_w = 0;
        }
        if (dx) CR_TRY(cr_cuda_upsample_backward(&up, s, v->shape, dy, dx));
        break;
    }
    case CR_MOD_ADD:
        if (dx) CR_TRY(copy_dev(dx, dy, numel(s)));
        break;
    case CR_MOD_DROPOUT:
        if (dx) CR_TRY(dropout_apply(dy, v->mask, dx, numel(s), d->drop_2d ? (size_t)(s.h * s.w) : 1));
        break;
    default:
        return cr_fail(CR_EINVAL, "a %s module is not on the GPU yet", cr_module_kind_name(d->kind));
    }
    if (dx) CR_TRY(grad_commit(t, d->in, dx, direct));
    if (d->kind == CR_MOD_ADD && d->in2 != CR_MODEL_INPUT) {   /* the second branch */
        CR_TRY(grad_target(t, d->in2, &dx, &direct));
        CR_TRY(copy_dev(dx, dy, numel(s)));
        CR_TRY(grad_commit(t, d->in2, dx, direct));
    }
    return CR_OK;
}
// @end gpu_train_backward

/* Prefixes the failing module's name to the message (copied: cr_fail writes over it). */
static cr_status in_module(cr_status s, const char *pass, const cr_module *d)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", cr_last_error());
    return cr_fail(s, "cr_cuda_train_step: %s of module '%s' (%s): %s", pass, d->name,
                   cr_module_kind_name(d->kind), msg);
}

// @snippet gpu_train_step
cr_status cr_cuda_train_step(cr_cuda_trainer *t, const float *x, cr_cuda_nchw in,
                             const int32_t *labels, int32_t ignore_index, double lr,
                             double *loss)
{
    if (!t || !x || !labels || !loss)
        return cr_fail(CR_EINVAL, "cr_cuda_train_step: t, x, labels or loss is NULL");
    cr_model *m = t->m;
    if (m->n != t->n)
        return cr_fail(CR_EINVAL, "cr_cuda_train_step: the model has %d modules, %d when its "
                       "trainer was made", m->n, t->n);
    if (!m->training)
        return cr_fail(CR_EINVAL, "cr_cuda_train_step: the model is in evaluation mode "
                       "(cr_model_train(m, true))");
    if (in.n < 1 || in.c < 1 || in.h < 1 || in.w < 1)
        return cr_fail(CR_EINVAL, "cr_cuda_train_step: input %lldx%lldx%lldx%lld",
                       (long long)in.n, (long long)in.c, (long long)in.h, (long long)in.w);
    if (!(lr >= 0)) return cr_fail(CR_EINVAL, "cr_cuda_train_step: lr = %g, expected >= 0", lr);
    cr_status s = CR_OK;
    for (int i = 0; i < t->n && !s; i++)            /* forward, keeping every output */
        if ((s = forward_module(t, i, x, in))) return in_module(s, "forward", &m->mods[i]);
    TrainModule *last = &t->mods[t->n - 1];             /* the loss's gradient is its dout */
    CR_TRY(ENSURE_F(t, last->dout, last->dout_cap, numel(last->shape), "dlogits"));
    CR_TRY(cr_cuda_cross_entropy(last->shape, last->out, labels, ignore_index, loss, last->dout));
    if (!isfinite(*loss))
        return cr_fail(CR_EINVAL, "cr_cuda_train_step: the loss became %s (step %lld, lr %g)",
                       isnan(*loss) ? "NaN" : "infinite", (long long)t->step + 1, lr);
    for (int i = 0; i < t->n; i++) {                /* gradients start at zero */
        TrainModule *v = &t->mods[i];
        v->dout_set = false;
        if (v->dw) CR_TRY(cr_cuda_check(cudaMemset(v->dw, 0, v->nw * sizeof(float)), "cudaMemset"));
        if (v->db) CR_TRY(cr_cuda_check(cudaMemset(v->db, 0, v->nb * sizeof(float)), "cudaMemset"));
    }
    last->dout_set = true;
    for (int i = t->n - 1; i >= 0; i--) {           /* backward */
        if (!t->mods[i].dout_set) continue;         /* nothing downstream used this output */
        if ((s = backward_module(t, i, x, in))) return in_module(s, "backward", &m->mods[i]);
    }
    cr_optim_config c = t->cfg;                     /* AdamW, every parameter */
    c.lr = lr;
    t->step++;
    for (int i = 0; i < t->n; i++) {
        TrainModule *v = &t->mods[i];
        if (v->w) CR_TRY(cr_cuda_adamw_update(&c, t->step, (int64_t)v->nw, v->w, v->dw, v->mw, v->vw));
        if (v->b) CR_TRY(cr_cuda_adamw_update(&c, t->step, (int64_t)v->nb, v->b, v->db, v->mb, v->vb));
    }
    return cr_cuda_sync("cr_cuda_train_step");
}
// @end gpu_train_step

cr_status cr_cuda_trainer_to_host(cr_cuda_trainer *t, bool grads)
{
    if (!t) return cr_fail(CR_EINVAL, "cr_cuda_trainer_to_host: t is NULL");
    CR_TRY(cr_cuda_sync("cr_cuda_trainer_to_host"));
    for (int i = 0; i < t->n; i++) {
        cr_module *d = &t->m->mods[i];
        TrainModule *v = &t->mods[i];
        if (v->w) CR_TRY(cr_cuda_to_host(d->weight.data, v->w, v->nw * sizeof(float)));
        if (v->b) CR_TRY(cr_cuda_to_host(d->bias.data, v->b, v->nb * sizeof(float)));
        if (v->rm) CR_TRY(cr_cuda_to_host(d->running_mean.data, v->rm, d->running_mean.numel * sizeof(float)));
        if (v->rv) CR_TRY(cr_cuda_to_host(d->running_var.data, v->rv, d->running_var.numel * sizeof(float)));
        if (!grads) continue;
        if (v->dw) {
            if (!d->dweight.data || d->dweight.numel != v->nw)
                return cr_fail(CR_EINVAL, "cr_cuda_trainer_to_host: '%s' has no dweight of its "
                               "weight's size (run a CPU backward once, or allocate it)", d->name);
            CR_TRY(cr_cuda_to_host(d->dweight.data, v->dw, v->nw * sizeof(float)));
        }
        if (v->db) {
            if (!d->dbias.data || d->dbias.numel != v->nb)
                return cr_fail(CR_EINVAL, "cr_cuda_trainer_to_host: '%s' has no dbias of its "
                               "bias's size", d->name);
            CR_TRY(cr_cuda_to_host(d->dbias.data, v->db, v->nb * sizeof(float)));
        }
    }
    return CR_OK;
}
