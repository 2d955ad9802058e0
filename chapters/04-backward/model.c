/* model.c — chapter 4: the module list, its forward and backward passes, and the state
 * dict (see model.h). */
#include "model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "conv_gemm.h"
#include "optim.h"
#include "safetensors.h"
#include "timing.h"

/* Fails with status, naming the module before the last error's message (copied first:
 * cr_fail writes into the buffer cr_last_error returns). */
static cr_status fail_in(cr_status status, const char *what, const char *name, const char *kind)
{
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", cr_last_error());
    return cr_fail(status, "model: %s'%s' (%s): %s", what, name, kind, msg);
}

static void infer_free(struct cr_infer *e);

static const char *const kind_names[] = {"conv", "batchnorm", "groupnorm", "relu", "maxpool",
                                         "avgpool", "upsample", "add", "dropout"};

const char *cr_module_kind_name(cr_module_kind k)
{
    return (unsigned)k < sizeof kind_names / sizeof *kind_names ? kind_names[k] : "?";
}

void cr_model_profile_reset(cr_model *m)
{
    for (int i = 0; i < m->n; i++) {
        m->mods[i].fwd_s = m->mods[i].bwd_s = 0;
        m->mods[i].fwd_calls = m->mods[i].bwd_calls = 0;
    }
}

void cr_model_init(cr_model *m)
{
    memset(m, 0, sizeof *m);
    m->training = true;
    m->conv_forward = cr_conv2d_fast;
    m->conv_backward = cr_conv2d_backward;
    cr_rng_seed(&m->rng, 0);
}

/* Frees one module's tensors and buffers. */
static void module_free(cr_module *d)
{
    cr_tensor *ts[] = {&d->weight, &d->bias, &d->running_mean, &d->running_var, &d->dweight,
                       &d->dbias, &d->dout, &d->save_mean, &d->save_invstd, &d->mask, &d->fold};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) cr_tensor_free(ts[i]);
    if (!d->out_view) cr_tensor_free(&d->out);   /* a view borrows the model's pool */
    d->out_view = false;
    free(d->argmax);
    d->argmax = NULL;
}

void cr_model_free(cr_model *m)
{
    for (int i = 0; i < m->n; i++) module_free(&m->mods[i]);
    free(m->mods);
    infer_free(m->infer);
    cr_tensor_free(&m->scratch);
    cr_tensor_free(&m->scratch_w);
    cr_tensor_free(&m->scratch_b);
    memset(m, 0, sizeof *m);
}

/* Makes t an N x C x H x W tensor, reallocating only when the shape changes. */
static cr_status ensure4(cr_tensor *t, int64_t n, int64_t c, int64_t h, int64_t w)
{
    if (t->data && t->ndim == 4 && t->shape[0] == n && t->shape[1] == c && t->shape[2] == h &&
        t->shape[3] == w)
        return CR_OK;
    cr_tensor_free(t);
    return cr_tensor_alloc4(t, n, c, h, w);
}

/* Makes t a rank-1 tensor of n elements (reallocating when n changes). */
static cr_status ensure1(cr_tensor *t, int64_t n)
{
    if (t->data && t->ndim == 1 && t->shape[0] == n) return CR_OK;
    cr_tensor_free(t);
    return cr_tensor_alloc(t, 1, &n);
}

/* Makes t the shape of ref. */
static cr_status ensure_like(cr_tensor *t, const cr_tensor *ref)
{
    if (t->data && cr_tensor_same_shape(t, ref)) return CR_OK;
    cr_tensor_free(t);
    return cr_tensor_alloc(t, ref->ndim, ref->shape);
}

/* Appends a module of the given kind reading from in (resolved); returns it or NULL. */
static cr_module *append(cr_model *m, cr_module_kind kind, const char *name, int in, int *idx)
{
    if (!name || !*name || strlen(name) >= CR_MODULE_NAME_MAX) {
        cr_fail(CR_EINVAL, "model: a module name must be 1..%d characters", CR_MODULE_NAME_MAX - 1);
        return NULL;
    }
    for (int i = 0; i < m->n; i++)
        if (strcmp(m->mods[i].name, name) == 0) {
            cr_fail(CR_EINVAL, "model: module name '%s' is used twice", name);
            return NULL;
        }
    if (in == CR_PREV) in = m->n - 1;    /* the first module's previous is the input */
    if (in < CR_MODEL_INPUT || in >= m->n) {
        cr_fail(CR_EINVAL, "model: module '%s' reads from %d, which is not an earlier module",
                name, in);
        return NULL;
    }
    if (m->n == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        cr_module *mods = realloc(m->mods, (size_t)cap * sizeof *mods);
        if (!mods) {
            cr_fail(CR_ENOMEM, "model: out of memory");
            return NULL;
        }
        m->mods = mods;
        m->cap = cap;
    }
    cr_module *d = &m->mods[m->n];
    memset(d, 0, sizeof *d);
    d->kind = kind;
    snprintf(d->name, sizeof d->name, "%s", name);
    d->in = in;
    d->in2 = CR_PREV;   /* none (only add has a second input) */
    d->up_like = -1;
    *idx = m->n++;
    return d;
}

int cr_model_add_conv(cr_model *m, const char *name, int in, const cr_conv_params *p)
{
    int idx;
    cr_conv_shape s;
    if (cr_conv_shape_init(&s, p, 1, p->kernel_h * p->dilation_h + p->pad_top + 1,
                           p->kernel_w * p->dilation_w + p->pad_left + 1) != CR_OK)
        return -1;
    cr_module *d = append(m, CR_MOD_CONV, name, in, &idx);
    if (!d) return -1;
    d->conv = *p;
    const int64_t cout = p->out_channels;
    if (cr_tensor_alloc4(&d->weight, cout, p->in_channels / p->groups, p->kernel_h, p->kernel_w) ||
        cr_tensor_alloc4(&d->dweight, cout, p->in_channels / p->groups, p->kernel_h, p->kernel_w) ||
        (p->bias && (cr_tensor_alloc(&d->bias, 1, &cout) || cr_tensor_alloc(&d->dbias, 1, &cout))))
        return -1;
    cr_tensor_fill(&d->dweight, 0.0f);
    if (p->bias) cr_tensor_fill(&d->dbias, 0.0f);
    return idx;
}

/* Allocates a norm layer's C-sized weight, bias, gradients (and running stats if bn). */
static int add_norm(cr_model *m, cr_module_kind kind, const char *name, int in, int64_t c)
{
    int idx;
    if (c < 1) {
        cr_fail(CR_EINVAL, "model: '%s' needs at least one channel", name);
        return -1;
    }
    cr_module *d = append(m, kind, name, in, &idx);
    if (!d) return -1;
    d->channels = c;
    if (cr_tensor_alloc(&d->weight, 1, &c) || cr_tensor_alloc(&d->bias, 1, &c) ||
        cr_tensor_alloc(&d->dweight, 1, &c) || cr_tensor_alloc(&d->dbias, 1, &c))
        return -1;
    if (kind == CR_MOD_BATCHNORM &&
        (cr_tensor_alloc(&d->running_mean, 1, &c) || cr_tensor_alloc(&d->running_var, 1, &c)))
        return -1;
    cr_init_norm_default(&d->weight, &d->bias, kind == CR_MOD_BATCHNORM ? &d->running_mean : NULL,
                         kind == CR_MOD_BATCHNORM ? &d->running_var : NULL);
    cr_tensor_fill(&d->dweight, 0.0f);
    cr_tensor_fill(&d->dbias, 0.0f);
    return idx;
}

int cr_model_add_batchnorm(cr_model *m, const char *name, int in, int64_t channels,
                           const cr_bn_params *p)
{
    int idx = add_norm(m, CR_MOD_BATCHNORM, name, in, channels);
    if (idx >= 0) m->mods[idx].bn = p ? *p : cr_bn_params_default();
    return idx;
}

int cr_model_add_groupnorm(cr_model *m, const char *name, int in, int64_t groups,
                           int64_t channels, double eps)
{
    if (groups < 1 || channels % groups != 0) {
        cr_fail(CR_EINVAL, "model: '%s': %lld channels do not split into %lld groups", name,
                (long long)channels, (long long)groups);
        return -1;
    }
    int idx = add_norm(m, CR_MOD_GROUPNORM, name, in, channels);
    if (idx >= 0) {
        m->mods[idx].groups = groups;
        m->mods[idx].eps = eps;
    }
    return idx;
}

int cr_model_add_relu(cr_model *m, const char *name, int in)
{
    int idx;
    return append(m, CR_MOD_RELU, name, in, &idx) ? idx : -1;
}

int cr_model_add_maxpool(cr_model *m, const char *name, int in, const cr_pool_params *p)
{
    int idx;
    int64_t ho, wo;
    if (cr_maxpool2d_out_size(p, p->kernel_h, p->kernel_w, &ho, &wo)) return -1;
    cr_module *d = append(m, CR_MOD_MAXPOOL, name, in, &idx);
    if (!d) return -1;
    d->pool = *p;
    return idx;
}

int cr_model_add_avgpool(cr_model *m, const char *name, int in)
{
    int idx;
    return append(m, CR_MOD_AVGPOOL, name, in, &idx) ? idx : -1;
}

int cr_model_add_upsample(cr_model *m, const char *name, int in, const cr_upsample_params *p,
                          int like)
{
    int idx;
    if (like < -1 || like >= m->n) {
        cr_fail(CR_EINVAL, "model: '%s' takes its size from %d, not an earlier module", name, like);
        return -1;
    }
    cr_module *d = append(m, CR_MOD_UPSAMPLE, name, in, &idx);
    if (!d) return -1;
    d->up = *p;
    d->up_like = like;
    return idx;
}

int cr_model_add_add(cr_model *m, const char *name, int a, int b)
{
    int idx;
    if (b == CR_PREV) b = m->n - 1;
    if (b < CR_MODEL_INPUT || b >= m->n) {
        cr_fail(CR_EINVAL, "model: '%s' adds %d, which is not an earlier module", name, b);
        return -1;
    }
    cr_module *d = append(m, CR_MOD_ADD, name, a, &idx);
    if (!d) return -1;
    d->in2 = b;
    return idx;
}

int cr_model_add_dropout(cr_model *m, const char *name, int in, double p)
{
    int idx;
    if (!(p >= 0 && p < 1)) {
        cr_fail(CR_EINVAL, "model: dropout '%s' needs 0 <= p < 1, got %g", name, p);
        return -1;
    }
    cr_module *d = append(m, CR_MOD_DROPOUT, name, in, &idx);
    if (!d) return -1;
    d->drop_p = p;
    return idx;
}

int cr_model_add_dropout2d(cr_model *m, const char *name, int in, double p)
{
    const int idx = cr_model_add_dropout(m, name, in, p);
    if (idx >= 0) m->mods[idx].drop_2d = true;
    return idx;
}

/* Initialises every parameter as PyTorch's constructors do, in module order. */
cr_status cr_model_init_params(cr_model *m, uint64_t seed)
{
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        if (d->kind == CR_MOD_CONV) {
            cr_status s = cr_init_conv_default(&r, &d->weight, d->conv.bias ? &d->bias : NULL);
            if (s) return s;
        } else if (d->kind == CR_MOD_BATCHNORM || d->kind == CR_MOD_GROUPNORM) {
            cr_init_norm_default(&d->weight, &d->bias,
                                 d->running_mean.data ? &d->running_mean : NULL,
                                 d->running_var.data ? &d->running_var : NULL);
        }
    }
    cr_rng_seed(&m->rng, seed ^ 0x9e3779b97f4a7c15ull);
    return CR_OK;
}

void cr_model_train(cr_model *m, bool training)
{
    m->training = training;
}

/* The tensor module index i reads (the model's input for CR_MODEL_INPUT). */
static const cr_tensor *source(const cr_model *m, int i)
{
    return i == CR_MODEL_INPUT ? m->input : &m->mods[i].out;
}

/* An up-sampling to another module's output size takes that size (no scale factor). */
static void upsample_target(const cr_model *m, cr_module *d)
{
    if (d->up_like < 0) return;
    const cr_tensor *like = &m->mods[d->up_like].out;
    d->up.out_h = like->shape[2];
    d->up.out_w = like->shape[3];
    d->up.scale_h = d->up.scale_w = 0;
}

/* Runs module d on its input(s) in training mode, (re)allocating its output and saved state. */
static cr_status module_forward(cr_model *m, cr_module *d)
{
    if (d->out_view) {   /* an evaluation forward's view: the pool is gone */
        memset(&d->out, 0, sizeof d->out);
        d->out_view = false;
    }
    const cr_tensor *x = source(m, d->in);
    if (!x || !x->data || x->ndim != 4)
        return cr_fail(CR_EINVAL, "model: '%s' has no N x C x H x W input", d->name);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    cr_status s = CR_OK;
    switch (d->kind) {
    case CR_MOD_CONV: {
        cr_conv_shape cs;
        if ((s = cr_conv_shape_init(&cs, &d->conv, N, H, W)) ||
            (s = ensure4(&d->out, N, d->conv.out_channels, cs.h_out, cs.w_out)))
            break;
        s = d->hook && d->hook->conv_forward
            ? d->hook->conv_forward(d->hook, m, d, x)
            : m->conv_forward(&d->conv, x, &d->weight, d->conv.bias ? &d->bias : NULL, &d->out);
        break;
    }
    case CR_MOD_BATCHNORM:
        if ((s = ensure_like(&d->out, x)) || (s = ensure1(&d->save_mean, C)) ||
            (s = ensure1(&d->save_invstd, C)))
            break;
        s = cr_batchnorm2d_forward(&d->bn, m->training && !d->frozen, x, &d->weight, &d->bias,
                                   &d->running_mean, &d->running_var, &d->out, &d->save_mean,
                                   &d->save_invstd);
        break;
    case CR_MOD_GROUPNORM:
        if ((s = ensure_like(&d->out, x)) || (s = ensure1(&d->save_mean, N * d->groups)) ||
            (s = ensure1(&d->save_invstd, N * d->groups)))
            break;
        s = cr_groupnorm_forward(d->groups, d->eps, x, &d->weight, &d->bias, &d->out,
                                 &d->save_mean, &d->save_invstd);
        break;
    case CR_MOD_RELU:
        if (!(s = ensure_like(&d->out, x))) s = cr_relu_forward(x, &d->out);
        break;
    case CR_MOD_MAXPOOL: {
        int64_t ho, wo;
        if ((s = cr_maxpool2d_out_size(&d->pool, H, W, &ho, &wo)) ||
            (s = ensure4(&d->out, N, C, ho, wo)))
            break;
        if (d->argmax_len != d->out.numel) {
            free(d->argmax);
            d->argmax = malloc(d->out.numel * sizeof *d->argmax);
            d->argmax_len = d->argmax ? d->out.numel : 0;
            if (!d->argmax) {
                s = cr_fail(CR_ENOMEM, "model: out of memory");
                break;
            }
        }
        s = cr_maxpool2d_forward(&d->pool, x, &d->out, d->argmax);
        break;
    }
    case CR_MOD_AVGPOOL:
        if (!(s = ensure4(&d->out, N, C, 1, 1))) s = cr_global_avgpool_forward(x, &d->out);
        break;
    case CR_MOD_UPSAMPLE: {
        upsample_target(m, d);
        int64_t ho, wo;
        if ((s = cr_upsample_out_size(&d->up, H, W, &ho, &wo)) ||
            (s = ensure4(&d->out, N, C, ho, wo)))
            break;
        s = cr_upsample_forward(&d->up, x, &d->out);
        break;
    }
    case CR_MOD_ADD:
        if (!(s = ensure_like(&d->out, x))) s = cr_add_forward(x, source(m, d->in2), &d->out);
        break;
    case CR_MOD_DROPOUT:
        if ((s = ensure_like(&d->out, x))) break;
        if (m->training) {
            if (d->drop_2d) {
                if (!(s = ensure1(&d->mask, x->shape[0] * x->shape[1])))
                    s = cr_dropout2d_forward(d->drop_p, &m->rng, x, &d->out, &d->mask);
            } else if (!(s = ensure_like(&d->mask, x))) {
                s = cr_dropout_forward(d->drop_p, &m->rng, x, &d->out, &d->mask);
            }
        } else {
            memcpy(d->out.data, x->data, x->numel * sizeof(float));
        }
        break;
    }
    if (!s && d->hook && d->hook->after_forward) s = d->hook->after_forward(d->hook, m, d);
    if (s) return fail_in(s, "module ", d->name, kind_names[d->kind]);
    return CR_OK;
}

/* ---- evaluation: nothing kept for backward, buffers shared by liveness --------------------- */

/* The pool of activation buffers an evaluation forward shares between modules, and what
 * each module's output still owes: a per-channel affine (a BatchNorm not yet applied) and
 * a ReLU, applied by the first reader that needs the values. */
struct cr_infer {
    int n;                        /* modules the per-module arrays are sized for */
    int nbuf, capbuf;
    float **buf;                  /* pool buffers */
    size_t *cap;                  /* their sizes in floats */
    int *ref;                     /* live module outputs in each buffer (0: free) */
    int *bufof;                   /* module -> its output's buffer, -1 none */
    int *readers, *left;          /* modules reading each output; how many have not run */
    int *sole;                    /* the only reader of an output, or -1 */
    const float **scale;          /* pending affine of an output: scale, shift per channel */
    const float **shift;
    bool *relu;                   /* pending ReLU of an output */
    bool *relu_done;              /* a ReLU whose producer (add) applied it already */
    double mat_s;                 /* profile: seconds the current module spent on its inputs */
};

/* Frees the pool and the per-module arrays. */
static void infer_free(struct cr_infer *e)
{
    if (!e) return;
    for (int b = 0; b < e->nbuf; b++) cr_aligned_free(e->buf[b]);
    free(e->buf);
    free(e->cap);
    free(e->ref);
    free(e->bufof);
    free(e->readers);
    free(e->left);
    free(e->sole);
    free(e->scale);
    free(e->shift);
    free(e->relu);
    free(e->relu_done);
    free(e);
}

/* The inputs module d reads (in, and in2 for an add): writes them to in[0..1], returns how many. */
static int module_inputs(const cr_module *d, int in[2])
{
    in[0] = d->in;
    if (d->kind != CR_MOD_ADD) return 1;
    in[1] = d->in2;
    return 2;
}

/* Sizes m->infer's per-module arrays for m->n modules and counts every output's readers. */
static cr_status infer_prepare(cr_model *m)
{
    struct cr_infer *e = m->infer;
    if (!e) {
        if (!(e = m->infer = calloc(1, sizeof *e))) return cr_fail(CR_ENOMEM, "model: out of memory");
    }
    if (e->n != m->n) {
        const size_t n = (size_t)m->n;
        int **ints[] = {&e->bufof, &e->readers, &e->left, &e->sole};
        for (size_t k = 0; k < sizeof ints / sizeof *ints; k++) {
            free(*ints[k]);
            *ints[k] = malloc(n * sizeof(int));
        }
        free(e->scale);
        free(e->shift);
        free(e->relu);
        free(e->relu_done);
        e->scale = malloc(n * sizeof *e->scale);
        e->shift = malloc(n * sizeof *e->shift);
        e->relu = malloc(n);
        e->relu_done = malloc(n);
        e->n = m->n;
        if (!e->bufof || !e->readers || !e->left || !e->sole || !e->scale || !e->shift ||
            !e->relu || !e->relu_done) {
            e->n = 0;
            return cr_fail(CR_ENOMEM, "model: out of memory");
        }
    }
    for (int i = 0; i < m->n; i++) {
        e->bufof[i] = e->sole[i] = -1;
        e->readers[i] = 0;
        e->scale[i] = e->shift[i] = NULL;
        e->relu[i] = e->relu_done[i] = false;
    }
    for (int i = 0; i < m->n; i++) {
        int in[2];
        for (int k = 0, c = module_inputs(&m->mods[i], in); k < c; k++)
            if (in[k] >= 0) {
                e->readers[in[k]]++;
                e->sole[in[k]] = e->readers[in[k]] == 1 ? i : -1;
            }
    }
    for (int i = 0; i < m->n; i++) e->left[i] = e->readers[i];
    for (int b = 0; b < e->nbuf; b++) e->ref[b] = 0;
    return CR_OK;
}

/* Makes module i's output an N x C x H x W view of a free pool buffer (the smallest that
 * fits; else the largest free one, grown; else a new one). */
static cr_status infer_alloc(cr_model *m, int i, int64_t n, int64_t c, int64_t h, int64_t w)
{
    struct cr_infer *e = m->infer;
    const size_t need = (size_t)(n * c * h * w);
    int best = -1, largest = -1;
    for (int b = 0; b < e->nbuf; b++) {
        if (e->ref[b]) continue;
        if (e->cap[b] >= need && (best < 0 || e->cap[b] < e->cap[best])) best = b;
        if (largest < 0 || e->cap[b] > e->cap[largest]) largest = b;
    }
    if (best < 0 && largest >= 0) {                 /* grow the largest free buffer */
        cr_aligned_free(e->buf[largest]);
        e->buf[largest] = NULL;
        e->cap[largest] = 0;
        best = largest;
    }
    if (best < 0) {                                 /* a new buffer */
        if (e->nbuf == e->capbuf) {
            const int cap = e->capbuf ? 2 * e->capbuf : 16;
            float **nb = realloc(e->buf, (size_t)cap * sizeof *nb);
            if (nb) e->buf = nb;
            size_t *nc = realloc(e->cap, (size_t)cap * sizeof *nc);
            if (nc) e->cap = nc;
            int *nr = realloc(e->ref, (size_t)cap * sizeof *nr);
            if (nr) e->ref = nr;
            if (!nb || !nc || !nr) return cr_fail(CR_ENOMEM, "model: out of memory");
            e->capbuf = cap;
        }
        best = e->nbuf++;
        e->buf[best] = NULL;
        e->cap[best] = 0;
    }
    if (!e->buf[best]) {
        e->buf[best] = cr_aligned_alloc(need * sizeof(float));
        if (!e->buf[best])
            return cr_fail(CR_ENOMEM, "model: out of memory for a %zu-value activation", need);
        e->cap[best] = need;
    }
    e->ref[best] = 1;
    e->bufof[i] = best;
    cr_module *d = &m->mods[i];
    d->out = (cr_tensor){.ndim = 4, .shape = {n, c, h, w}, .numel = need, .data = e->buf[best]};
    d->out_view = true;
    return CR_OK;
}

/* Makes module i's output the same buffer as module j's (i is j's only reader), with
 * j's pending operations. */
static void infer_alias(cr_model *m, int i, int j)
{
    struct cr_infer *e = m->infer;
    e->bufof[i] = e->bufof[j];
    e->ref[e->bufof[j]]++;
    e->scale[i] = e->scale[j];
    e->shift[i] = e->shift[j];
    e->relu[i] = e->relu[j];
    m->mods[i].out = m->mods[j].out;
    m->mods[i].out_view = true;
}

/* Module j's output has no reader left: its buffer goes back to the pool (its shape stays). */
static void infer_release(cr_model *m, int j)
{
    struct cr_infer *e = m->infer;
    if (e->bufof[j] >= 0) e->ref[e->bufof[j]]--;
    e->bufof[j] = -1;
    m->mods[j].out.data = NULL;
}

/* y = x * scale[c] + shift[c] (scale NULL: y = x), then max(y, 0) when relu, over an
 * N x C x HW tensor; y may be x. NaN stays NaN. The options become constants of the
 * loop (a lower bound of 0 or -inf), so the inner loop has no branch and vectorises. */
static void affine_relu(const float *x, float *y, int64_t N, int64_t C, int64_t HW,
                        const float *scale, const float *shift, bool relu)
{
    const float lo = relu ? 0.0f : -INFINITY;
#pragma omp parallel for schedule(static) if (N * C * HW >= 32768)
    for (int64_t pl = 0; pl < N * C; pl++) {
        const float a = scale ? scale[pl % C] : 1.0f, b = scale ? shift[pl % C] : 0.0f;
        const float *xp = x + pl * HW;
        float *yp = y + pl * HW;
        for (int64_t i = 0; i < HW; i++) {
            const float v = xp[i] * a + b;
            yp[i] = v < lo ? lo : v;   /* NaN < lo is false: NaN stays */
        }
    }
}

/* Applies module j's pending operations to its buffer, in place (j is the buffer's only
 * live output); the time goes to module j's profile. */
static void infer_materialize(cr_model *m, int j)
{
    struct cr_infer *e = m->infer;
    if (j < 0 || (!e->scale[j] && !e->relu[j])) return;
    const double t0 = m->profile ? cr_now() : 0;
    cr_tensor *t = &m->mods[j].out;
    affine_relu(t->data, t->data, t->shape[0], t->shape[1], t->shape[2] * t->shape[3], e->scale[j],
                e->shift[j], e->relu[j]);
    e->scale[j] = e->shift[j] = NULL;
    e->relu[j] = false;
    if (m->profile) {
        const double dt = cr_now() - t0;
        m->mods[j].fwd_s += dt;
        e->mat_s += dt;
    }
}

/* True if module i may take over module j's buffer: j is a module (not the model's
 * input) and i its only reader. */
static bool infer_may_reuse(const cr_model *m, int i, int j)
{
    return j >= 0 && m->infer->sole[j] == i;
}

/* BatchNorm i in evaluation: its per-channel scale = gamma / sqrt(var + eps) and shift =
 * beta - mean * scale, computed in double, into d->fold (2C floats). */
static cr_status bn_fold(cr_module *d, const cr_tensor *x)
{
    const int64_t C = d->channels;
    if (x->shape[1] != C)
        return cr_fail(CR_EINVAL, "batchnorm x has %lld channels, expected %lld",
                       (long long)x->shape[1], (long long)C);
    if (!(d->bn.eps > 0)) return cr_fail(CR_EINVAL, "batchnorm: eps must be > 0, got %g", d->bn.eps);
    cr_status s = ensure1(&d->fold, 2 * C);
    if (s) return s;
    for (int64_t c = 0; c < C; c++) {
        const double invstd = 1.0 / sqrt((double)d->running_var.data[c] + d->bn.eps);
        const double scale = d->weight.data[c] * invstd;
        d->fold.data[c] = (float)scale;
        d->fold.data[C + c] = (float)(d->bias.data[c] - d->running_mean.data[c] * scale);
    }
    return CR_OK;
}

/* y = a' + b' (then max(y, 0) when relu), a' and b' being a and b with their pending
 * operations applied on the fly; y may be a or b. All N x C x HW. Branch-free inner loop
 * (scale 1 and shift 0 where none is pending, lower bounds 0 or -inf for the ReLUs). */
static void add_pending(const struct cr_infer *e, int ia, int ib, const float *a, const float *b,
                        float *y, int64_t N, int64_t C, int64_t HW, bool relu)
{
    const float *sa = ia >= 0 ? e->scale[ia] : NULL, *ta = ia >= 0 ? e->shift[ia] : NULL;
    const float *sb = ib >= 0 ? e->scale[ib] : NULL, *tb = ib >= 0 ? e->shift[ib] : NULL;
    const float loa = ia >= 0 && e->relu[ia] ? 0.0f : -INFINITY;
    const float lob = ib >= 0 && e->relu[ib] ? 0.0f : -INFINITY;
    const float lo = relu ? 0.0f : -INFINITY;
#pragma omp parallel for schedule(static) if (N * C * HW >= 32768)
    for (int64_t pl = 0; pl < N * C; pl++) {
        const int64_t c = pl % C;
        const float ka = sa ? sa[c] : 1.0f, da = sa ? ta[c] : 0.0f;
        const float kb = sb ? sb[c] : 1.0f, db = sb ? tb[c] : 0.0f;
        const float *ap = a + pl * HW, *bp = b + pl * HW;
        float *yp = y + pl * HW;
        for (int64_t i = 0; i < HW; i++) {
            float u = ap[i] * ka + da, v = bp[i] * kb + db;
            u = u < loa ? loa : u;
            v = v < lob ? lob : v;
            const float r = u + v;
            yp[i] = r < lo ? lo : r;
        }
    }
}

/* Runs module i in evaluation mode (see cr_model_forward). */
static cr_status infer_module(cr_model *m, int i)
{
    struct cr_infer *e = m->infer;
    cr_module *d = &m->mods[i];
    const int j = d->in;
    const cr_tensor *x = source(m, j);
    if (!x || !x->data || x->ndim != 4)
        return cr_fail(CR_EINVAL, "model: '%s' has no N x C x H x W input", d->name);
    const int64_t N = x->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const bool reuse = infer_may_reuse(m, i, j);
    cr_status s = CR_OK;
    switch (d->kind) {
    case CR_MOD_BATCHNORM:
        if ((s = bn_fold(d, x))) break;
        if (reuse && !e->scale[j] && !e->relu[j]) {   /* deferred to the next reader */
            infer_alias(m, i, j);
            e->scale[i] = d->fold.data;
            e->shift[i] = d->fold.data + C;
            break;
        }
        infer_materialize(m, j);
        if (reuse) infer_alias(m, i, j);
        else if ((s = infer_alloc(m, i, N, C, H, W))) break;
        affine_relu(x->data, d->out.data, N, C, H * W, d->fold.data, d->fold.data + C, false);
        break;
    case CR_MOD_RELU:
        if (reuse) {                                  /* deferred (or done by an add) */
            infer_alias(m, i, j);
            e->relu[i] = !e->relu_done[i];
            break;
        }
        infer_materialize(m, j);
        if (!(s = infer_alloc(m, i, N, C, H, W))) s = cr_relu_forward(x, &d->out);
        break;
    case CR_MOD_DROPOUT:                              /* identity in evaluation */
        if (reuse) {
            infer_alias(m, i, j);
            break;
        }
        infer_materialize(m, j);
        if (!(s = infer_alloc(m, i, N, C, H, W)))
            memcpy(d->out.data, x->data, x->numel * sizeof(float));
        break;
    case CR_MOD_ADD: {
        const int k = d->in2;
        const cr_tensor *b = source(m, k);
        if (!b || !b->data || !cr_tensor_same_shape(b, x)) {
            char sa[64], sb[64] = "nothing";
            cr_tensor_shape_str(x, sa, sizeof sa);
            if (b && b->data) cr_tensor_shape_str(b, sb, sizeof sb);
            s = cr_fail(CR_EINVAL, "add b is %s, expected %s (the shape of a)", sb, sa);
            break;
        }
        const int r = e->sole[i];                     /* a ReLU right after: same pass */
        const bool relu = r >= 0 && m->mods[r].kind == CR_MOD_RELU;
        const bool reuse_b = k != j && infer_may_reuse(m, i, k);
        if (reuse && k != j) infer_alias(m, i, j);
        else if (reuse_b) infer_alias(m, i, k);
        else if ((s = infer_alloc(m, i, N, C, H, W))) break;
        add_pending(e, j, k, x->data, b->data, d->out.data, N, C, H * W, relu);
        e->scale[i] = e->shift[i] = NULL;
        e->relu[i] = false;
        if (relu) e->relu_done[r] = true;
        break;
    }
    case CR_MOD_GROUPNORM:
        infer_materialize(m, j);
        if ((s = ensure1(&d->save_mean, N * d->groups)) ||
            (s = ensure1(&d->save_invstd, N * d->groups)))
            break;
        if (reuse) infer_alias(m, i, j);
        else if ((s = infer_alloc(m, i, N, C, H, W))) break;
        s = cr_groupnorm_forward(d->groups, d->eps, x, &d->weight, &d->bias, &d->out,
                                 &d->save_mean, &d->save_invstd);
        break;
    default: {                                        /* conv, pools, upsample: a new buffer */
        infer_materialize(m, j);
        int64_t shape[4] = {N, C, 1, 1};
        if (d->kind == CR_MOD_CONV) {
            cr_conv_shape cs;
            if ((s = cr_conv_shape_init(&cs, &d->conv, N, H, W))) break;
            shape[1] = d->conv.out_channels;
            shape[2] = cs.h_out;
            shape[3] = cs.w_out;
        } else if (d->kind == CR_MOD_MAXPOOL) {
            s = cr_maxpool2d_out_size(&d->pool, H, W, &shape[2], &shape[3]);
        } else if (d->kind == CR_MOD_UPSAMPLE) {
            upsample_target(m, d);
            s = cr_upsample_out_size(&d->up, H, W, &shape[2], &shape[3]);
        }
        if (s || (s = infer_alloc(m, i, shape[0], shape[1], shape[2], shape[3]))) break;
        if (d->kind == CR_MOD_CONV)
            s = m->conv_forward(&d->conv, x, &d->weight, d->conv.bias ? &d->bias : NULL, &d->out);
        else if (d->kind == CR_MOD_MAXPOOL)
            s = cr_maxpool2d_forward(&d->pool, x, &d->out, NULL);
        else if (d->kind == CR_MOD_UPSAMPLE)
            s = cr_upsample_forward(&d->up, x, &d->out);
        else
            s = cr_global_avgpool_forward(x, &d->out);
        break;
    }
    }
    if (s) return fail_in(s, "module ", d->name, kind_names[d->kind]);
    return CR_OK;
}

/* Frees what training mode keeps per module (outputs, gradients, saved statistics). */
static void drop_training_state(cr_model *m)
{
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        if (!d->out_view) cr_tensor_free(&d->out);
        cr_tensor_free(&d->dout);
        cr_tensor_free(&d->mask);
        free(d->argmax);
        d->argmax = NULL;
        d->argmax_len = 0;
    }
    cr_tensor_free(&m->scratch);
}

/* The evaluation forward over every module (see cr_model_forward). */
static cr_status forward_eval(cr_model *m)
{
    if (m->kept_for_backward) drop_training_state(m);
    m->kept_for_backward = false;
    cr_status s = infer_prepare(m);
    if (s) return s;
    struct cr_infer *e = m->infer;
    for (int i = 0; i < m->n; i++) {
        e->mat_s = 0;
        const double t0 = m->profile ? cr_now() : 0;
        if ((s = infer_module(m, i))) return s;
        int in[2];
        for (int k = 0, c = module_inputs(&m->mods[i], in); k < c; k++)
            if (in[k] >= 0 && --e->left[in[k]] == 0 && in[k] != m->n - 1) infer_release(m, in[k]);
        if (e->readers[i] == 0 && i != m->n - 1) infer_release(m, i);
        if (m->profile) {
            m->mods[i].fwd_s += cr_now() - t0 - e->mat_s;
            m->mods[i].fwd_calls++;
        }
    }
    infer_materialize(m, m->n - 1);
    return CR_OK;
}

/* True if a later chapter has hooked a module (chapter 7's fake quantization): the
 * evaluation forward's fusions (BatchNorm into its reader, add + ReLU) would bypass it. */
static bool any_hook(const cr_model *m)
{
    for (int i = 0; i < m->n; i++)
        if (m->mods[i].hook) return true;
    return false;
}

/* Forward through every module in order. */
cr_status cr_model_forward(cr_model *m, const cr_tensor *x, const cr_tensor **out)
{
    if (m->n == 0) return cr_fail(CR_EINVAL, "model: no modules");
    m->input = x;
    if (!m->training && !any_hook(m)) {
        cr_status s = forward_eval(m);
        if (s) return s;
        if (out) *out = &m->mods[m->n - 1].out;
        return CR_OK;
    }
    infer_free(m->infer);   /* the evaluation pool is not needed while training */
    m->infer = NULL;
    m->kept_for_backward = true;
    for (int i = 0; i < m->n; i++) {
        const double t0 = m->profile ? cr_now() : 0;
        cr_status s = module_forward(m, &m->mods[i]);
        if (s) return s;
        if (m->profile) {
            m->mods[i].fwd_s += cr_now() - t0;
            m->mods[i].fwd_calls++;
        }
        m->mods[i].dout_set = false;
    }
    if (out) *out = &m->mods[m->n - 1].out;
    return CR_OK;
}

/* Where the gradient for module j's output goes: straight into its dout the first time
 * (*direct = 1), else into the model's scratch, to be added afterwards. */
static cr_status grad_target(cr_model *m, int j, cr_tensor **t, int *direct)
{
    cr_module *src = &m->mods[j];
    cr_status s = ensure_like(&src->dout, &src->out);
    if (s) return s;
    if (!src->dout_set) {
        *t = &src->dout;
        *direct = 1;
        return CR_OK;
    }
    if ((s = ensure_like(&m->scratch, &src->out))) return s;
    *t = &m->scratch;
    *direct = 0;
    return CR_OK;
}

/* Adds the gradient just written to t into module j's dout (if it went to scratch). */
static void grad_commit(cr_model *m, int j, const cr_tensor *t, int direct)
{
    cr_module *src = &m->mods[j];
    if (direct) {
        src->dout_set = true;
        return;
    }
    cr_add_f(src->dout.data, t->data, (int64_t)t->numel);
}

/* Adds a freshly computed parameter gradient (tmp) into acc. */
static void accumulate(cr_tensor *acc, const cr_tensor *tmp)
{
    cr_add_f(acc->data, tmp->data, (int64_t)acc->numel);
}

/* Back-propagates module i's dout into its inputs' douts and its parameter gradients. */
static cr_status module_backward(cr_model *m, int i)
{
    cr_module *d = &m->mods[i];
    const cr_tensor *x = source(m, d->in), *dy = &d->dout;
    const int want_dx = d->in != CR_MODEL_INPUT;
    cr_tensor *dx = NULL;
    int direct = 0;
    cr_status s = CR_OK;
    if (want_dx && (s = grad_target(m, d->in, &dx, &direct))) return s;
    if (d->hook && d->hook->before_backward && (s = d->hook->before_backward(d->hook, m, d)))
        return fail_in(s, "backward of ", d->name, kind_names[d->kind]);
    switch (d->kind) {
    case CR_MOD_CONV:
        if ((s = ensure_like(&m->scratch_w, &d->weight)) ||
            (d->conv.bias && (s = ensure_like(&m->scratch_b, &d->bias))))
            break;
        s = d->hook && d->hook->conv_backward
            ? d->hook->conv_backward(d->hook, m, d, x, dx, &m->scratch_w,
                                     d->conv.bias ? &m->scratch_b : NULL)
            : m->conv_backward(&d->conv, x, &d->weight, dy, dx, &m->scratch_w,
                               d->conv.bias ? &m->scratch_b : NULL);
        if (!s) {
            accumulate(&d->dweight, &m->scratch_w);
            if (d->conv.bias) accumulate(&d->dbias, &m->scratch_b);
        }
        break;
    case CR_MOD_BATCHNORM:
    case CR_MOD_GROUPNORM:
        if ((s = ensure_like(&m->scratch_w, &d->weight)) ||
            (s = ensure_like(&m->scratch_b, &d->bias)))
            break;
        s = d->kind == CR_MOD_BATCHNORM
            ? cr_batchnorm2d_backward(m->training && !d->frozen, x, &d->weight, &d->save_mean,
                                      &d->save_invstd, dy, dx, &m->scratch_w, &m->scratch_b)
            : cr_groupnorm_backward(d->groups, x, &d->weight, &d->save_mean, &d->save_invstd, dy,
                                    dx, &m->scratch_w, &m->scratch_b);
        if (!s) {
            accumulate(&d->dweight, &m->scratch_w);
            accumulate(&d->dbias, &m->scratch_b);
        }
        break;
    case CR_MOD_RELU:
        if (dx) s = cr_relu_backward(&d->out, dy, dx);
        break;
    case CR_MOD_MAXPOOL:
        if (dx) s = cr_maxpool2d_backward(d->argmax, dy, dx);
        break;
    case CR_MOD_AVGPOOL:
        if (dx) s = cr_global_avgpool_backward(dy, dx);
        break;
    case CR_MOD_UPSAMPLE:
        if (dx) s = cr_upsample_backward(&d->up, dy, dx);
        break;
    case CR_MOD_ADD:
        if (dx) s = cr_add_backward(dy, dx, NULL);
        break;
    case CR_MOD_DROPOUT:
        if (dx) s = d->drop_2d ? cr_dropout2d_backward(&d->mask, dy, dx)
                               : cr_dropout_backward(&d->mask, dy, dx);
        break;
    }
    if (!s && d->hook && d->hook->after_backward) s = d->hook->after_backward(d->hook, m, d);
    if (!s && want_dx) grad_commit(m, d->in, dx, direct);
    if (!s && d->kind == CR_MOD_ADD && d->in2 != CR_MODEL_INPUT) {   /* the second branch */
        if (!(s = grad_target(m, d->in2, &dx, &direct)) && !(s = cr_add_backward(dy, dx, NULL)))
            grad_commit(m, d->in2, dx, direct);
    }
    if (s) return fail_in(s, "backward of ", d->name, kind_names[d->kind]);
    return CR_OK;
}

/* Reverse pass over the list from the last module's output gradient dout. */
cr_status cr_model_backward(cr_model *m, const cr_tensor *dout)
{
    if (m->n == 0 || !m->input) return cr_fail(CR_EINVAL, "model: backward before forward");
    if (!m->training)
        return cr_fail(CR_EINVAL, "model: backward needs training mode (cr_model_train)");
    if (!m->kept_for_backward)
        return cr_fail(CR_EINVAL, "model: backward needs a forward in training mode first (an "
                       "evaluation forward keeps nothing for it)");
    cr_module *last = &m->mods[m->n - 1];
    if (!dout || !dout->data || !cr_tensor_same_shape(dout, &last->out))
        return cr_fail(CR_EINVAL, "model: dout must have the shape of the last output");
    for (int i = 0; i < m->n; i++) m->mods[i].dout_set = false;
    cr_status s = ensure_like(&last->dout, &last->out);
    if (s) return s;
    memcpy(last->dout.data, dout->data, dout->numel * sizeof(float));
    last->dout_set = true;
    // @snippet model_backward
    for (int i = m->n - 1; i >= 0; i--) {
        if (!m->mods[i].dout_set) continue;   /* nothing downstream used this output */
        const double t0 = m->profile ? cr_now() : 0;
        if ((s = module_backward(m, i))) return s;
        if (m->profile) {
            m->mods[i].bwd_s += cr_now() - t0;
            m->mods[i].bwd_calls++;
        }
    }
    // @end model_backward
    return CR_OK;
}

void cr_model_zero_grad(cr_model *m)
{
    for (int i = 0; i < m->n; i++) {
        if (m->mods[i].dweight.data) cr_tensor_fill(&m->mods[i].dweight, 0.0f);
        if (m->mods[i].dbias.data) cr_tensor_fill(&m->mods[i].dbias, 0.0f);
    }
}

/* Fills l (if not NULL) with the module's tensors in state_dict order, weight then bias
 * (then running_mean, running_var when buffers); returns how many there are. */
static int list_tensors(cr_model *m, bool buffers, cr_tensor_list *l)
{
    static const char *const suffix[4] = {"weight", "bias", "running_mean", "running_var"};
    int k = 0;
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        cr_tensor *tv[4] = {&d->weight, &d->bias, &d->running_mean, &d->running_var};
        cr_tensor *gv[4] = {&d->dweight, &d->dbias, NULL, NULL};
        for (int j = 0; j < (buffers ? 4 : 2); j++) {
            if (!tv[j]->data) continue;
            if (l) {
                l->tensors[k] = tv[j];
                l->grads[k] = gv[j];
                snprintf(l->names[k], CR_PARAM_NAME_MAX, "%s.%s", d->name, suffix[j]);
            }
            k++;
        }
    }
    return k;
}

/* Allocates *out for the model's parameters (and buffers) and fills it. */
static cr_status make_list(cr_model *m, bool buffers, cr_tensor_list *out)
{
    memset(out, 0, sizeof *out);
    const int n = list_tensors(m, buffers, NULL);
    const size_t cnt = (size_t)(n ? n : 1);
    out->tensors = calloc(cnt, sizeof *out->tensors);
    out->grads = calloc(cnt, sizeof *out->grads);
    out->names = calloc(cnt, sizeof *out->names);
    if (!out->tensors || !out->grads || !out->names) {
        cr_tensor_list_free(out);
        return cr_fail(CR_ENOMEM, "model: out of memory listing %d tensors", n);
    }
    out->n = list_tensors(m, buffers, out);
    return CR_OK;
}

cr_status cr_model_param_list(cr_model *m, cr_tensor_list *out)
{
    return make_list(m, false, out);
}

cr_status cr_model_state_list(cr_model *m, cr_tensor_list *out)
{
    return make_list(m, true, out);
}

void cr_tensor_list_free(cr_tensor_list *l)
{
    free(l->tensors);
    free(l->grads);
    free(l->names);
    memset(l, 0, sizeof *l);
}

int64_t cr_model_num_scalars(const cr_model *m)
{
    int64_t n = 0;
    for (int i = 0; i < m->n; i++)
        n += (int64_t)(m->mods[i].weight.data ? m->mods[i].weight.numel : 0) +
             (int64_t)(m->mods[i].bias.data ? m->mods[i].bias.numel : 0);
    return n;
}

/* Calls fn(name, tensor, ctx) for every state_dict entry in order; stops on an error. */
static cr_status for_each_state(cr_model *m,
                                cr_status (*fn)(const char *, cr_tensor *, void *), void *ctx)
{
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        cr_tensor *tv[4] = {&d->weight, &d->bias, &d->running_mean, &d->running_var};
        const char *suffix[4] = {"weight", "bias", "running_mean", "running_var"};
        for (int j = 0; j < 4; j++) {
            if (!tv[j]->data) continue;
            char name[CR_PARAM_NAME_MAX];
            snprintf(name, sizeof name, "%s.%s", d->name, suffix[j]);
            cr_status s = fn(name, tv[j], ctx);
            if (s) return s;
        }
    }
    return CR_OK;
}

/* for_each_state callback: adds the tensor to the writer. */
static cr_status save_one(const char *name, cr_tensor *t, void *ctx)
{
    return cr_st_writer_add(ctx, name, t);
}

cr_status cr_model_save(const cr_model *m, const char *path, const char *const *meta)
{
    cr_st_writer *w;
    cr_status s = cr_st_writer_new(&w);
    if (s) return s;
    s = for_each_state((cr_model *)m, save_one, w);
    if (!s) s = cr_st_writer_meta(w, "format", "pt");
    for (int i = 0; !s && meta && meta[i] && meta[i + 1]; i += 2) s = cr_st_writer_meta(w, meta[i], meta[i + 1]);
    if (!s) s = cr_st_writer_save(w, path);
    cr_st_writer_free(w);
    return s;
}

typedef struct {
    const cr_st_file *f;
    const char *path;
    int copy;   /* 0: check names and shapes only; 1: copy */
} load_ctx;

/* for_each_state callback: checks the file's tensor of that name has t's exact shape;
 * copies it into t when c->copy. */
static cr_status load_one(const char *name, cr_tensor *t, void *ctx)
{
    load_ctx *c = ctx;
    if (!cr_st_has(c->f, name))
        return cr_fail(CR_EFORMAT, "%s: missing tensor '%s' of the model", c->path, name);
    cr_tensor v = {0};
    cr_status s = cr_st_get(c->f, name, &v);
    if (s) return s;
    if (!cr_tensor_same_shape(&v, t)) {
        char a[64], b[64];
        cr_tensor_shape_str(&v, a, sizeof a);
        cr_tensor_shape_str(t, b, sizeof b);
        cr_tensor_free(&v);
        return cr_fail(CR_EFORMAT, "%s: '%s' is %s in the file, the model expects %s", c->path,
                       name, a, b);
    }
    if (c->copy) memcpy(t->data, v.data, t->numel * sizeof(float));
    cr_tensor_free(&v);
    return CR_OK;
}

/* True if name is one of module d's state_dict entries (PREFIX.weight, ...). */
static bool module_has(const cr_module *d, const char *name)
{
    const size_t len = strlen(d->name);
    if (strncmp(name, d->name, len) != 0 || name[len] != '.') return false;
    const char *suf = name + len + 1;
    return (strcmp(suf, "weight") == 0 && d->weight.data) ||
           (strcmp(suf, "bias") == 0 && d->bias.data) ||
           (strcmp(suf, "running_mean") == 0 && d->running_mean.data) ||
           (strcmp(suf, "running_var") == 0 && d->running_var.data);
}

cr_status cr_model_load_st(cr_model *m, const cr_st_file *f, const char *path,
                           const char *skip_prefix)
{
    /* strict: every name in the file must belong to the model */
    for (int i = 0; i < cr_st_count(f); i++) {
        const char *name = cr_st_name(f, i);
        const char *dot = strrchr(name, '.');
        if (dot && strcmp(dot, ".num_batches_tracked") == 0) continue;
        if (skip_prefix && strncmp(name, skip_prefix, strlen(skip_prefix)) == 0) continue;
        bool known = false;
        for (int j = 0; j < m->n && !known; j++) known = module_has(&m->mods[j], name);
        if (!known)
            return cr_fail(CR_EFORMAT, "%s: tensor '%s' belongs to no module of the model", path,
                           name);
    }
    /* every tensor checked before any is copied: a bad file leaves the model unchanged */
    load_ctx c = {f, path, 0};
    cr_status s = for_each_state(m, load_one, &c);
    c.copy = 1;
    if (!s) s = for_each_state(m, load_one, &c);
    return s;
}

cr_status cr_model_load(cr_model *m, const char *path)
{
    cr_st_file *f;
    cr_status s = cr_st_load(&f, path);
    if (s) return s;
    s = cr_model_load_st(m, f, path, NULL);
    cr_st_free(f);
    return s;
}

/* Appends PREFIX.SUFFIX conv (no bias) + BatchNorm; returns the BatchNorm's index or -1. */
static int conv_bn(cr_model *m, const char *prefix, const char *conv, const char *bn, int in,
                   int64_t cin, int64_t cout, int64_t k, int64_t stride, int64_t groups)
{
    char name[CR_MODULE_NAME_MAX + 32];
    cr_conv_params p = cr_conv_params_default(cin, cout, k);
    p.bias = false;
    p.stride_h = p.stride_w = stride;
    p.groups = groups;
    cr_conv_set_padding(&p, k / 2, k / 2);
    snprintf(name, sizeof name, "%s.%s", prefix, conv);
    if (cr_model_add_conv(m, name, in, &p) < 0) return -1;
    snprintf(name, sizeof name, "%s.%s", prefix, bn);
    return cr_model_add_batchnorm(m, name, CR_PREV, cout, NULL);
}

/* Appends PREFIX.SUFFIX ReLU reading from in; returns its index or -1. */
static int relu_named(cr_model *m, const char *prefix, const char *suffix, int in)
{
    char name[CR_MODULE_NAME_MAX + 32];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    return cr_model_add_relu(m, name, in);
}

// @snippet bottleneck
int cr_model_add_bottleneck(cr_model *m, const char *prefix, int in, int64_t in_channels,
                            int64_t width, int64_t out_channels, int64_t groups,
                            int64_t stride, bool downsample)
{
    if (!prefix || strlen(prefix) + 16 >= CR_MODULE_NAME_MAX) {
        cr_fail(CR_EINVAL, "model: a bottleneck prefix must be 1..%d characters",
                CR_MODULE_NAME_MAX - 17);
        return -1;
    }
    if (!downsample && (stride != 1 || in_channels != out_channels)) {
        cr_fail(CR_EINVAL, "model: bottleneck '%s' changes the shape (stride %lld, %lld -> %lld "
                "channels): it needs a downsample branch", prefix, (long long)stride,
                (long long)in_channels, (long long)out_channels);
        return -1;
    }
    if (in == CR_PREV) in = m->n - 1;
    int t;
    if ((t = conv_bn(m, prefix, "conv1", "bn1", in, in_channels, width, 1, 1, 1)) < 0 ||
        (t = relu_named(m, prefix, "relu1", t)) < 0 ||
        (t = conv_bn(m, prefix, "conv2", "bn2", t, width, width, 3, stride, groups)) < 0 ||
        (t = relu_named(m, prefix, "relu2", t)) < 0 ||
        (t = conv_bn(m, prefix, "conv3", "bn3", t, width, out_channels, 1, 1, 1)) < 0)
        return -1;
    int identity = in;
    if (downsample &&
        (identity = conv_bn(m, prefix, "downsample.0", "downsample.1", in, in_channels,
                            out_channels, 1, stride, 1)) < 0)
        return -1;
    char name[CR_MODULE_NAME_MAX];
    snprintf(name, sizeof name, "%s.add", prefix);
    if ((t = cr_model_add_add(m, name, t, identity)) < 0) return -1;
    return relu_named(m, prefix, "relu3", t);
}
// @end bottleneck

/* Lab 4's small FCN (see model.h), classes outputs. */
cr_status cr_model_build_fcn(cr_model *m, int64_t classes)
{
    cr_model_init(m);
    const cr_bn_params bn = cr_bn_params_default();
    const cr_pool_params pool = cr_pool_params_make(2, 2, 0);
    const cr_upsample_params up = {.mode = CR_UPSAMPLE_BILINEAR, .align_corners = false};
    int ok = 1, e1, e2;
    cr_conv_params p;
    int idx;
    /* one stage: NAME.conv (3x3, padding 1), NAME.bn, NAME.relu; idx = the relu */
#define CONV_BN_RELU(name, in, cin, cout)                                                 \
    do {                                                                                  \
        p = cr_conv_params_default(cin, cout, 3);                                         \
        cr_conv_set_padding(&p, 1, 1);                                                    \
        ok &= cr_model_add_conv(m, name ".conv", in, &p) >= 0;                           \
        ok &= cr_model_add_batchnorm(m, name ".bn", CR_PREV, cout, &bn) >= 0;            \
        ok &= (idx = cr_model_add_relu(m, name ".relu", CR_PREV)) >= 0;                   \
    } while (0)
    CONV_BN_RELU("enc1", CR_MODEL_INPUT, 3, 16);
    e1 = idx;
    ok &= cr_model_add_maxpool(m, "pool1", CR_PREV, &pool) >= 0;
    CONV_BN_RELU("enc2", CR_PREV, 16, 32);
    e2 = idx;
    ok &= cr_model_add_maxpool(m, "pool2", CR_PREV, &pool) >= 0;
    CONV_BN_RELU("enc3", CR_PREV, 32, 32);
    ok &= cr_model_add_upsample(m, "up2", CR_PREV, &up, e2) >= 0;
    ok &= cr_model_add_add(m, "skip2", CR_PREV, e2) >= 0;
    CONV_BN_RELU("dec2", CR_PREV, 32, 16);
    ok &= cr_model_add_upsample(m, "up1", CR_PREV, &up, e1) >= 0;
    ok &= cr_model_add_add(m, "skip1", CR_PREV, e1) >= 0;
    CONV_BN_RELU("dec1", CR_PREV, 16, 16);
#undef CONV_BN_RELU
    p = cr_conv_params_default(16, classes, 1);
    ok &= cr_model_add_conv(m, "head", CR_PREV, &p) >= 0;
    if (!ok) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", cr_last_error());
        return cr_fail(CR_EINVAL, "building the FCN: %s", msg);
    }
    return CR_OK;
}

void cr_model_print(const cr_model *m, FILE *f)
{
    for (int i = 0; i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        char in[32], shape[64] = "-";
        if (d->in == CR_MODEL_INPUT) snprintf(in, sizeof in, "input");
        else snprintf(in, sizeof in, "%d", d->in);
        if (d->kind == CR_MOD_ADD) snprintf(in + strlen(in), sizeof in - strlen(in), "+%d", d->in2);
        if (d->out.ndim) cr_tensor_shape_str(&d->out, shape, sizeof shape);
        fprintf(f, "%3d %-16s %-10s in %-7s out %s\n", i, d->name, kind_names[d->kind], in, shape);
    }
}
