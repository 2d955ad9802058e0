/* model_cuda.cu — chapter 5: a chapter 4 model (chapter 8's FPN, lab 4's network) in
 * evaluation mode on the device, composed of chapter 5's convolution (cr_cuda_conv2d) and
 * the layers of layer_kernels.cu (see cuda_layers.h). Host code only: no kernel here. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime_api.h>

#include "cuda_layers.h"
#include "timing.h"
#include "cuda_util.h"

/* One module's device state: its parameters and where its output lives. */
struct DevModule {
    float *w, *b, *rm, *rv;   /* conv weight, bias; norm weight, bias, running statistics */
    cr_cuda_nchw shape;       /* output shape of the last forward */
    int buf;                  /* its output's pool buffer (-1: none) */
    bool relu_fused;          /* a ReLU module that its input's module has applied */
};

struct cr_cuda_model {
    const cr_model *m;        /* the module list (borrowed) */
    int n;
    DevModule *mods;
    size_t param_bytes;
    /* the activation pool */
    int nbuf, capbuf;
    float **buf;
    size_t *cap;              /* floats per buffer */
    int *ref;                 /* live outputs in each buffer (0: free) */
    size_t pool_bytes;
    /* per module, per forward */
    int *readers, *left, *sole;
    cr_cuda_precision precision;  /* the convolutions' (cr_cuda_conv2d_at); FP32 by default */
};

/* Copies the n floats of host tensor t to a new device buffer *d (nothing when t is empty). */
static cr_status upload(cr_cuda_model *g, const cr_tensor *t, float **d, const char *what)
{
    *d = NULL;
    if (!t->data || t->numel == 0) return CR_OK;
    CR_TRY(cr_cuda_malloc((void **)d, t->numel * sizeof(float), what));
    g->param_bytes += t->numel * sizeof(float);
    return cr_cuda_to_device(*d, t->data, t->numel * sizeof(float));
}

void cr_cuda_model_free(cr_cuda_model *g)
{
    if (!g) return;
    for (int i = 0; g->mods && i < g->n; i++) {
        cr_cuda_free(g->mods[i].w);
        cr_cuda_free(g->mods[i].b);
        cr_cuda_free(g->mods[i].rm);
        cr_cuda_free(g->mods[i].rv);
    }
    for (int k = 0; k < g->nbuf; k++) cr_cuda_free(g->buf[k]);
    free(g->buf);
    free(g->cap);
    free(g->ref);
    free(g->mods);
    free(g->readers);
    free(g->left);
    free(g->sole);
    free(g);
}

cr_status cr_cuda_model_supported(const char *fn, const char *what, const cr_model *m)
{
    if (!m || m->n < 1) return cr_fail(CR_EINVAL, "%s: the model is NULL or empty", fn);
    for (int i = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        if (d->hook)
            return cr_fail(CR_EINVAL, "%s: module '%s' has a hook (a later chapter's, chapter "
                           "7's fake quantizers say); the device %s does not run hooks", fn,
                           d->name, what);
        if (d->kind == CR_MOD_AVGPOOL)
            return cr_fail(CR_EINVAL, "%s: module '%s': the global average pool is not on the "
                           "GPU yet", fn, d->name);
    }
    return CR_OK;
}

cr_status cr_cuda_model_create(const cr_model *m, cr_cuda_model **out)
{
    if (!out) return cr_fail(CR_EINVAL, "cr_cuda_model_create: out is NULL");
    *out = NULL;
    CR_TRY(cr_cuda_model_supported("cr_cuda_model_create", "forward", m));
    cr_cuda_model *g = (cr_cuda_model *)calloc(1, sizeof *g);
    if (!g) return cr_fail(CR_ENOMEM, "cr_cuda_model_create: out of memory");
    g->m = m;
    g->n = m->n;
    g->mods = (DevModule *)calloc((size_t)m->n, sizeof *g->mods);
    g->readers = (int *)calloc((size_t)m->n, sizeof(int));
    g->left = (int *)calloc((size_t)m->n, sizeof(int));
    g->sole = (int *)calloc((size_t)m->n, sizeof(int));
    if (!g->mods || !g->readers || !g->left || !g->sole) {
        cr_cuda_model_free(g);
        return cr_fail(CR_ENOMEM, "cr_cuda_model_create: out of memory");
    }
    cr_status s = CR_OK;
    for (int i = 0; i < m->n && !s; i++) {
        const cr_module *d = &m->mods[i];
        DevModule *v = &g->mods[i];
        v->buf = -1;
        if (d->kind == CR_MOD_CONV || d->kind == CR_MOD_BATCHNORM || d->kind == CR_MOD_GROUPNORM) {
            if (!(s = upload(g, &d->weight, &v->w, d->name)) && d->kind != CR_MOD_CONV &&
                (!v->w || d->bias.numel != d->weight.numel))
                s = cr_fail(CR_EINVAL, "cr_cuda_model_create: norm '%s' has no weight and bias",
                            d->name);
            if (!s && (d->kind != CR_MOD_CONV || d->conv.bias)) s = upload(g, &d->bias, &v->b, d->name);
        }
        if (!s && d->kind == CR_MOD_BATCHNORM) {
            if (!(s = upload(g, &d->running_mean, &v->rm, d->name)))
                s = upload(g, &d->running_var, &v->rv, d->name);
        }
    }
    if (s) {
        cr_cuda_model_free(g);
        return s;
    }
    *out = g;
    return CR_OK;
}

cr_status cr_cuda_model_set_precision(cr_cuda_model *g, cr_cuda_precision p)
{
    if (!g) return cr_fail(CR_EINVAL, "cr_cuda_model_set_precision: g is NULL");
    if (p != CR_CUDA_FP32 && p != CR_CUDA_TF32 && p != CR_CUDA_FP16 && p != CR_CUDA_BF16)
        return cr_fail(CR_EINVAL, "cr_cuda_model_set_precision: precision %d: expected "
                       "CR_CUDA_FP32, _TF32, _FP16 or _BF16", (int)p);
    g->precision = p;
    return CR_OK;
}

cr_cuda_nchw cr_cuda_model_shape(const cr_cuda_model *g, int i)
{
    const cr_cuda_nchw none = {0, 0, 0, 0};
    return g && i >= 0 && i < g->n ? g->mods[i].shape : none;
}

size_t cr_cuda_model_bytes(const cr_cuda_model *g)
{
    return g ? g->param_bytes + g->pool_bytes : 0;
}

/* ---- the activation pool ----------------------------------------------------------------------- */

/* Gives module i a free pool buffer of at least numel floats (the smallest that fits, else
 * a new one). */
static cr_status pool_take(cr_cuda_model *g, int i, size_t numel)
{
    int best = -1;
    for (int k = 0; k < g->nbuf; k++)
        if (g->ref[k] == 0 && g->cap[k] >= numel && (best < 0 || g->cap[k] < g->cap[best])) best = k;
    if (best < 0) {
        if (g->nbuf == g->capbuf) {
            const int nc = g->capbuf ? 2 * g->capbuf : 16;
            float **b = (float **)realloc(g->buf, (size_t)nc * sizeof *b);
            if (b) g->buf = b;
            size_t *c = (size_t *)realloc(g->cap, (size_t)nc * sizeof *c);
            if (c) g->cap = c;
            int *r = (int *)realloc(g->ref, (size_t)nc * sizeof *r);
            if (r) g->ref = r;
            if (!b || !c || !r) return cr_fail(CR_ENOMEM, "cr_cuda_model_forward: out of memory");
            g->capbuf = nc;
        }
        float *p;
        CR_TRY(cr_cuda_malloc((void **)&p, numel * sizeof(float), g->m->mods[i].name));
        best = g->nbuf++;
        g->buf[best] = p;
        g->cap[best] = numel;
        g->ref[best] = 0;
        g->pool_bytes += numel * sizeof(float);
    }
    g->ref[best]++;
    g->mods[i].buf = best;
    return CR_OK;
}

/* Module i's output becomes module j's buffer (i writes over j's output, or is j's output). */
static void pool_alias(cr_cuda_model *g, int i, int j)
{
    g->mods[i].buf = g->mods[j].buf;
    g->ref[g->mods[i].buf]++;
}

/* Module j's output is no longer needed: its buffer loses one live output. */
static void pool_release(cr_cuda_model *g, int j)
{
    if (g->mods[j].buf >= 0) g->ref[g->mods[j].buf]--;
    g->mods[j].buf = -1;
}

/* The device data of module j's output (the model's input for CR_MODEL_INPUT). */
static float *out_of(const cr_cuda_model *g, int j, const float *x)
{
    return j == CR_MODEL_INPUT ? (float *)x : g->buf[g->mods[j].buf];
}

/* ---- the forward ---------------------------------------------------------------------------------- */

/* Counts every output's readers (an add reading one output twice counts twice) and notes
 * each output's only reader (-1: none or several). */
static void count_readers(cr_cuda_model *g)
{
    const cr_model *m = g->m;
    for (int i = 0; i < g->n; i++) {
        g->readers[i] = 0;
        g->sole[i] = -1;
        g->mods[i].relu_fused = false;
        if (g->mods[i].buf >= 0) pool_release(g, i);
    }
    for (int i = 0; i < g->n; i++) {
        const cr_module *d = &m->mods[i];
        const int in[2] = {d->in, d->kind == CR_MOD_ADD ? d->in2 : CR_MODEL_INPUT};
        for (int k = 0; k < 2; k++)
            if (in[k] >= 0) g->readers[in[k]]++;
    }
    for (int i = 0; i < g->n; i++) g->left[i] = g->readers[i];
    for (int i = 0; i < g->n; i++) {
        const cr_module *d = &m->mods[i];
        const int in[2] = {d->in, d->kind == CR_MOD_ADD ? d->in2 : CR_MODEL_INPUT};
        for (int k = 0; k < 2; k++)
            if (in[k] >= 0 && g->readers[in[k]] == 1) g->sole[in[k]] = i;
    }
}

/* True when module i may write over module j's output: j is a module and i its only reader. */
static bool may_reuse(const cr_cuda_model *g, int i, int j)
{
    return j >= 0 && g->sole[j] == i;
}

/* True when the only reader of module i's output is a ReLU, which i then applies itself. */
static bool relu_follows(const cr_cuda_model *g, int i)
{
    const int r = g->sole[i];
    return r >= 0 && g->m->mods[r].kind == CR_MOD_RELU;
}

/* The output buffer of an element-wise module i reading j: j's own when i is its only
 * reader, else a new one of numel floats. */
static cr_status elementwise_out(cr_cuda_model *g, int i, int j, size_t numel)
{
    if (may_reuse(g, i, j)) {
        pool_alias(g, i, j);
        return CR_OK;
    }
    return pool_take(g, i, numel);
}

// @snippet gpu_model_module
/* Runs module i on the device (evaluation mode); x is the model's input. */
static cr_status run_module(cr_cuda_model *g, int i, const float *x, cr_cuda_nchw in_shape)
{
    const cr_module *d = &g->m->mods[i];
    DevModule *v = &g->mods[i];
    const int j = d->in;
    if (j >= i) return cr_fail(CR_EINVAL, "module '%s' reads module %d, not an earlier one", d->name, j);
    const cr_cuda_nchw s = j == CR_MODEL_INPUT ? in_shape : g->mods[j].shape;
    const size_t numel = (size_t)(s.n * s.c * s.h * s.w);
    const float *src = out_of(g, j, x);
    v->shape = s;
    switch (d->kind) {
    case CR_MOD_CONV: {
        cr_conv_shape cs;
        CR_TRY(cr_conv_shape_init(&cs, &d->conv, s.n, s.h, s.w));
        if (s.c != d->conv.in_channels)
            return cr_fail(CR_EINVAL, "its input has %lld channels, expected %lld", (long long)s.c,
                           (long long)d->conv.in_channels);
        v->shape.c = d->conv.out_channels;
        v->shape.h = cs.h_out;
        v->shape.w = cs.w_out;
        CR_TRY(pool_take(g, i, cs.y_numel));
        return cr_cuda_conv2d_at(&cs, g->precision, src, v->w, v->b, g->buf[v->buf]);
    }
    case CR_MOD_BATCHNORM:
    case CR_MOD_GROUPNORM: {
        if (s.c != d->channels)
            return cr_fail(CR_EINVAL, "its input has %lld channels, expected %lld", (long long)s.c,
                           (long long)d->channels);
        const bool relu = relu_follows(g, i);
        CR_TRY(elementwise_out(g, i, j, numel));
        float *y = g->buf[v->buf];
        if (relu) g->mods[g->sole[i]].relu_fused = true;
        return d->kind == CR_MOD_BATCHNORM
            ? cr_cuda_batchnorm_forward(&d->bn, false, s, src, v->w, v->b, v->rm, v->rv, y, NULL,
                                        NULL, relu)
            : cr_cuda_groupnorm_forward(d->groups, d->eps, s, src, v->w, v->b, y, NULL, NULL, relu);
    }
    case CR_MOD_RELU:
        if (v->relu_fused) {                 /* applied by its input's module */
            pool_alias(g, i, j);
            return CR_OK;
        }
        CR_TRY(elementwise_out(g, i, j, numel));
        return cr_cuda_relu((int64_t)numel, src, g->buf[v->buf]);
    case CR_MOD_DROPOUT:                     /* identity in evaluation */
        if (may_reuse(g, i, j)) {
            pool_alias(g, i, j);
            return CR_OK;
        }
        CR_TRY(pool_take(g, i, numel));
        return cr_cuda_check(cudaMemcpy(g->buf[v->buf], src, numel * sizeof(float),
                                        cudaMemcpyDeviceToDevice), "cudaMemcpy (dropout)");
    case CR_MOD_ADD: {
        const int k = d->in2;
        if (k >= i) return cr_fail(CR_EINVAL, "module '%s' reads module %d, not an earlier one", d->name, k);
        const cr_cuda_nchw t = k == CR_MODEL_INPUT ? in_shape : g->mods[k].shape;
        if (t.n != s.n || t.c != s.c || t.h != s.h || t.w != s.w)
            return cr_fail(CR_EINVAL, "add b is %lldx%lldx%lldx%lld, expected %lldx%lldx%lldx%lld "
                           "(the shape of a)", (long long)t.n, (long long)t.c, (long long)t.h,
                           (long long)t.w, (long long)s.n, (long long)s.c, (long long)s.h,
                           (long long)s.w);
        const bool relu = relu_follows(g, i);
        if (k != j && may_reuse(g, i, j)) pool_alias(g, i, j);
        else if (k != j && may_reuse(g, i, k)) pool_alias(g, i, k);
        else CR_TRY(pool_take(g, i, numel));
        if (relu) g->mods[g->sole[i]].relu_fused = true;
        return cr_cuda_add((int64_t)numel, src, out_of(g, k, x), g->buf[v->buf], relu);
    }
    case CR_MOD_MAXPOOL: {
        int64_t ho = 0, wo = 0;
        CR_TRY(cr_maxpool2d_out_size(&d->pool, s.h, s.w, &ho, &wo));
        v->shape.h = ho;
        v->shape.w = wo;
        CR_TRY(pool_take(g, i, (size_t)(s.n * s.c * ho * wo)));
        return cr_cuda_maxpool2d_forward(&d->pool, s, src, g->buf[v->buf], NULL);
    }
    case CR_MOD_UPSAMPLE: {
        cr_upsample_params up = d->up;
        if (d->up_like >= 0) {               /* another module's output size */
            up.out_h = g->mods[d->up_like].shape.h;
            up.out_w = g->mods[d->up_like].shape.w;
            up.scale_h = up.scale_w = 0;
        }
        int64_t ho = 0, wo = 0;
        CR_TRY(cr_upsample_out_size(&up, s.h, s.w, &ho, &wo));
        v->shape.h = ho;
        v->shape.w = wo;
        CR_TRY(pool_take(g, i, (size_t)(s.n * s.c * ho * wo)));
        return cr_cuda_upsample_forward(&up, s, src, g->buf[v->buf]);
    }
    default:
        return cr_fail(CR_EINVAL, "a %s module is not on the GPU yet", cr_module_kind_name(d->kind));
    }
}
// @end gpu_model_module

cr_status cr_cuda_model_forward(cr_cuda_model *g, const float *x, cr_cuda_nchw in,
                                const float **y, cr_cuda_nchw *out_shape)
{
    if (!g || !x || !y) return cr_fail(CR_EINVAL, "cr_cuda_model_forward: g, x or y is NULL");
    if (g->m->n != g->n)
        return cr_fail(CR_EINVAL, "cr_cuda_model_forward: the model has %d modules, %d when its "
                       "device copy was made", g->m->n, g->n);
    if (g->m->training)
        return cr_fail(CR_EINVAL, "cr_cuda_model_forward: the model is in training mode; the "
                       "device forward is evaluation only (cr_model_train(m, false))");
    if (in.n < 1 || in.c < 1 || in.h < 1 || in.w < 1)
        return cr_fail(CR_EINVAL, "cr_cuda_model_forward: input %lldx%lldx%lldx%lld", (long long)in.n,
                       (long long)in.c, (long long)in.h, (long long)in.w);
    count_readers(g);
    cr_module *prof = g->m->profile ? (cr_module *)g->m->mods : NULL;   /* see the header */
    if (prof) CR_TRY(cr_cuda_sync("cr_cuda_model_forward (profile)"));
    for (int i = 0; i < g->n; i++) {
        const double t0 = prof ? cr_now() : 0;
        cr_status s = run_module(g, i, x, in);
        if (!s && prof) {
            s = cr_cuda_sync(g->m->mods[i].name);
            prof[i].fwd_s += cr_now() - t0;
            prof[i].fwd_calls++;
        }
        if (s) {   /* the module's name before the message (copied: cr_fail writes over it) */
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", cr_last_error());
            return cr_fail(s, "cr_cuda_model_forward: module '%s' (%s): %s", g->m->mods[i].name,
                           cr_module_kind_name(g->m->mods[i].kind), msg);
        }
        const cr_module *d = &g->m->mods[i];
        const int inputs[2] = {d->in, d->kind == CR_MOD_ADD ? d->in2 : CR_MODEL_INPUT};
        for (int k = 0; k < 2; k++)
            if (inputs[k] >= 0 && --g->left[inputs[k]] == 0 && inputs[k] != g->n - 1)
                pool_release(g, inputs[k]);
        if (g->readers[i] == 0 && i != g->n - 1) pool_release(g, i);
    }
    *y = g->buf[g->mods[g->n - 1].buf];
    if (out_shape) *out_shape = g->mods[g->n - 1].shape;
    return CR_OK;
}

cr_status cr_cuda_model_forward_host(cr_cuda_model *g, const cr_tensor *x, cr_tensor *y)
{
    if (!x || !x->data || x->ndim != 4 || !y)
        return cr_fail(CR_EINVAL, "cr_cuda_model_forward_host: x must be an N x C x H x W tensor "
                       "and y given");
    memset(y, 0, sizeof *y);
    float *dx;
    CR_TRY(cr_cuda_malloc((void **)&dx, x->numel * sizeof(float), "model input"));
    cr_status s = cr_cuda_to_device(dx, x->data, x->numel * sizeof(float));
    const cr_cuda_nchw in = {x->shape[0], x->shape[1], x->shape[2], x->shape[3]};
    const float *dy = NULL;
    cr_cuda_nchw out = {0, 0, 0, 0};
    if (!s) s = cr_cuda_model_forward(g, dx, in, &dy, &out);
    if (!s) s = cr_cuda_sync("cr_cuda_model_forward");
    if (!s) {
        const int64_t shape[4] = {out.n, out.c, out.h, out.w};
        s = cr_tensor_alloc(y, 4, shape);
    }
    if (!s) s = cr_cuda_to_host(y->data, dy, y->numel * sizeof(float));
    if (s) cr_tensor_free(y);
    cr_cuda_free(dx);
    return s;
}
