/* qat.c — chapter 7: fake quantizers placed on chapter 4's model by name (see qat.h). */
#include "qat.h"

#include <stdlib.h>
#include <string.h>

const char *const cr_qat_partial_float[] = {"encoder.conv1", "segmentation_head", NULL};

/* Makes t an allocated tensor shaped like ref (reallocating when the shape changes). */
static cr_status ensure_like(cr_tensor *t, const cr_tensor *ref)
{
    if (t->data && cr_tensor_same_shape(t, ref)) return CR_OK;
    cr_tensor_free(t);
    return cr_tensor_alloc(t, ref->ndim, ref->shape);
}

/* Makes *mask hold n bytes. */
static cr_status ensure_mask(uint8_t **mask, size_t *len, size_t n)
{
    if (*mask && *len == n) return CR_OK;
    free(*mask);
    *mask = malloc(n ? n : 1);
    *len = *mask ? n : 0;
    return *mask ? CR_OK : cr_fail(CR_ENOMEM, "qat: out of memory for a mask of %zu", n);
}

/* The tensor a conv site's convolution reads: its quantized input, or x. */
static const cr_tensor *conv_input(const cr_qat_site *s, const cr_tensor *x)
{
    return s->input ? &s->in_q : x;
}

// @snippet qat_hooks
/* Conv forward: quantize the input (if this site does), then the fake-quantized conv with
 * the BatchNorm's scale folded in (fold.h). */
static cr_status site_conv_forward(cr_module_hook *h, cr_model *m, cr_module *d,
                                   const cr_tensor *x)
{
    cr_qat_site *s = (cr_qat_site *)h;
    cr_status st;
    if (s->input) {
        if ((st = ensure_like(&s->in_q, x)) ||
            (st = ensure_mask(&s->in_mask, &s->in_mask_len, x->numel)) ||
            (st = cr_fake_quant_forward(&s->in_fq, x, &s->in_q, s->in_mask)))
            return st;
    }
    const cr_module *bn = s->bn >= 0 ? &m->mods[s->bn] : NULL;
    return cr_qconv_forward(&s->qconv, &d->conv, m->conv_forward, conv_input(s, x), &d->weight,
                            d->conv.bias ? &d->bias : NULL, bn ? &bn->weight : NULL,
                            bn ? &bn->running_var : NULL, bn ? bn->bn.eps : 0, &d->out);
}

/* Conv backward: through the folded conv (gamma's share goes to the BatchNorm's dweight),
 * then the input quantizer's straight-through mask. */
static cr_status site_conv_backward(cr_module_hook *h, cr_model *m, cr_module *d,
                                    const cr_tensor *x, cr_tensor *dx, cr_tensor *dw,
                                    cr_tensor *db)
{
    cr_qat_site *s = (cr_qat_site *)h;
    cr_tensor *dgamma = s->bn >= 0 ? &m->mods[s->bn].dweight : NULL;
    cr_status st = cr_qconv_backward(&s->qconv, &d->conv, m->conv_backward, conv_input(s, x),
                                     &d->weight, &d->dout, dx, dw, db, dgamma);
    if (!st && s->input && dx) st = cr_fake_quantize_backward(s->in_mask, dx, dx);
    return st;
}

/* After the module's forward: keep its output, fake-quantize it in place. */
static cr_status site_after_forward(cr_module_hook *h, cr_model *m, cr_module *d)
{
    (void)m;
    cr_qat_site *s = (cr_qat_site *)h;
    if (!s->output) return CR_OK;
    cr_status st;
    if ((st = ensure_like(&s->pre, &d->out)) ||
        (st = ensure_mask(&s->out_mask, &s->mask_len, d->out.numel)))
        return st;
    memcpy(s->pre.data, d->out.data, d->out.numel * sizeof(float));
    return cr_fake_quant_forward(s->out_share ? s->out_share : &s->out_fq, &s->pre, &d->out,
                                 s->out_mask);
}

/* Swaps the module's output and the site's copy before quantization. */
static void swap_out(cr_qat_site *s, cr_module *d)
{
    cr_tensor t = d->out;
    d->out = s->pre;
    s->pre = t;
}

/* Before the module's backward: the straight-through mask on its output gradient, and the
 * output before quantization back in place (a ReLU's backward reads its own output). */
static cr_status site_before_backward(cr_module_hook *h, cr_model *m, cr_module *d)
{
    (void)m;
    cr_qat_site *s = (cr_qat_site *)h;
    if (!s->output) return CR_OK;
    cr_status st = cr_fake_quantize_backward(s->out_mask, &d->dout, &d->dout);
    if (!st) swap_out(s, d);
    return st;
}

/* After the module's backward: the quantized output back in place. */
static cr_status site_after_backward(cr_module_hook *h, cr_model *m, cr_module *d)
{
    (void)m;
    cr_qat_site *s = (cr_qat_site *)h;
    if (s->output) swap_out(s, d);
    return CR_OK;
}
// @end qat_hooks

/* True if name is prefix or starts with prefix followed by a dot. */
static bool has_prefix(const char *name, const char *prefix)
{
    const size_t n = strlen(prefix);
    return strncmp(name, prefix, n) == 0 && (name[n] == '\0' || name[n] == '.');
}

/* True if the module named name is kept in float. */
static bool kept_float(const char *name, const char *const *keep)
{
    for (int i = 0; keep && keep[i]; i++)
        if (has_prefix(name, keep[i])) return true;
    return false;
}

/* Number of modules that read module j's output. */
static int consumers(const cr_model *m, int j)
{
    int c = 0;
    for (int i = j + 1; i < m->n; i++)
        c += (m->mods[i].in == j) + (m->mods[i].kind == CR_MOD_ADD && m->mods[i].in2 == j);
    return c;
}

/* If module j is followed by a module of kind k reading only j, its index; else j. */
static int absorb(const cr_model *m, int j, cr_module_kind k)
{
    if (j + 1 < m->n && m->mods[j + 1].kind == k && m->mods[j + 1].in == j && consumers(m, j) == 1)
        return j + 1;
    return j;
}

/* Marks site e for an output quantizer. */
static cr_status want_output(cr_qat *q, int e)
{
    if (q->sites[e].output) return CR_OK;
    q->sites[e].output = true;
    return cr_fake_quant_init_act(&q->sites[e].out_fq);
}

// @snippet qat_prepare
cr_status cr_qat_prepare(cr_qat *q, cr_model *m, const char *const *keep_float)
{
    memset(q, 0, sizeof *q);
    if (!m || m->n == 0) return cr_fail(CR_EINVAL, "qat_prepare: the model has no modules");
    for (int i = 0; i < m->n; i++)
        if (m->mods[i].hook)
            return cr_fail(CR_EINVAL, "qat_prepare: module '%s' already has a hook",
                           m->mods[i].name);
    q->sites = calloc((size_t)m->n, sizeof *q->sites);
    bool *qreg = calloc((size_t)m->n, sizeof *qreg);
    cr_fake_quant **grid = calloc((size_t)m->n, sizeof *grid);   /* the grid j lies on */
    if (!q->sites || !qreg || !grid) {
        free(qreg), free(grid), free(q->sites);
        q->sites = NULL;
        return cr_fail(CR_ENOMEM, "qat_prepare: out of memory");
    }
    q->m = m;
    q->n = m->n;
    cr_status st = CR_OK;
    for (int i = 0; i < m->n; i++) q->sites[i].module = i, q->sites[i].bn = -1;
    /* pass 1: quantized convolutions, their folded BatchNorm, their group's output */
    for (int i = 0; !st && i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        if (d->kind != CR_MOD_CONV || kept_float(d->name, keep_float)) continue;
        cr_qat_site *s = &q->sites[i];
        s->conv = true;
        if ((st = cr_qconv_init(&s->qconv))) break;
        const int bn = absorb(m, i, CR_MOD_BATCHNORM);
        s->bn = bn > i ? bn : -1;
        st = want_output(q, absorb(m, bn, CR_MOD_RELU));
    }
    /* pass 2: which outputs lie in the quantized part (qreg) and on which grid; the other
     * quantized operators; inputs of quantized convolutions that are off the grid */
    for (int i = 0; !st && i < m->n; i++) {
        const cr_module *d = &m->mods[i];
        cr_qat_site *s = &q->sites[i];
        const bool in_q = d->in >= 0 && qreg[d->in];
        cr_fake_quant *in_grid = d->in >= 0 ? grid[d->in] : NULL;
        switch (d->kind) {
        case CR_MOD_CONV: qreg[i] = q->sites[i].conv; break;
        case CR_MOD_ADD: qreg[i] = in_q || (d->in2 >= 0 && qreg[d->in2]); break;
        default: qreg[i] = in_q; break;
        }
        if (s->conv && !in_grid) {
            s->input = true;
            if ((st = cr_fake_quant_init_act(&s->in_fq))) break;
        }
        const bool pool = d->kind == CR_MOD_MAXPOOL || d->kind == CR_MOD_AVGPOOL;
        if (pool && in_grid && !s->output) {   /* again through its input's quantizer */
            s->output = true;
            s->out_share = in_grid;
        }
        const bool offgrid_op = d->kind == CR_MOD_ADD || d->kind == CR_MOD_AVGPOOL ||
                                (d->kind == CR_MOD_UPSAMPLE && d->up.mode != CR_UPSAMPLE_NEAREST);
        if (qreg[i] && offgrid_op && !s->output && (st = want_output(q, absorb(m, i, CR_MOD_RELU))))
            break;
        if (s->output) grid[i] = s->out_share ? s->out_share : &s->out_fq;
        else if (d->kind == CR_MOD_RELU ||
                 (d->kind == CR_MOD_UPSAMPLE && d->up.mode == CR_UPSAMPLE_NEAREST))
            grid[i] = in_grid;   /* values stay on their input's grid */
    }
    free(qreg);
    free(grid);
    if (st) {
        cr_qat_free(q);
        return st;
    }
    for (int i = 0; i < m->n; i++) {
        cr_qat_site *s = &q->sites[i];
        if (!s->conv && !s->output) continue;
        s->hook.conv_forward = s->conv ? site_conv_forward : NULL;
        s->hook.conv_backward = s->conv ? site_conv_backward : NULL;
        s->hook.after_forward = site_after_forward;
        s->hook.before_backward = site_before_backward;
        s->hook.after_backward = site_after_backward;
        m->mods[i].hook = &s->hook;
    }
    return CR_OK;
}
// @end qat_prepare

void cr_qat_free(cr_qat *q)
{
    for (int i = 0; q->sites && i < q->n; i++) {
        cr_qat_site *s = &q->sites[i];
        if (q->m && i < q->m->n && q->m->mods[i].hook == &s->hook) q->m->mods[i].hook = NULL;
        if (q->m && s->bn >= 0 && s->bn < q->m->n) q->m->mods[s->bn].frozen = false;
        cr_qconv_free(&s->qconv);
        cr_fake_quant_free(&s->in_fq);
        cr_fake_quant_free(&s->out_fq);
        cr_tensor_free(&s->in_q);
        cr_tensor_free(&s->pre);
        free(s->in_mask);
        free(s->out_mask);
    }
    free(q->sites);
    memset(q, 0, sizeof *q);
}

/* Sets one quantizer's switches. */
static void set_fq(cr_fake_quant *fq, bool observe, bool fake_quant)
{
    fq->observer_enabled = observe;
    fq->fake_quant_enabled = fake_quant;
}

void cr_qat_enable(cr_qat *q, bool observe, bool fake_quant)
{
    for (int i = 0; i < q->n; i++) {
        set_fq(&q->sites[i].qconv.wfq, observe, fake_quant);
        set_fq(&q->sites[i].in_fq, observe, fake_quant);
        set_fq(&q->sites[i].out_fq, observe, fake_quant);
    }
}

void cr_qat_observe_minmax(cr_qat *q, bool on)
{
    for (int i = 0; i < q->n; i++) {
        q->sites[i].qconv.wfq.minmax = on;
        q->sites[i].in_fq.minmax = on;
        q->sites[i].out_fq.minmax = on;
    }
}

void cr_qat_freeze_bn(cr_qat *q, bool frozen)
{
    for (int i = 0; i < q->n; i++)
        if (q->sites[i].bn >= 0) q->m->mods[q->sites[i].bn].frozen = frozen;
}

cr_qat_site *cr_qat_site_of(cr_qat *q, const char *name)
{
    for (int i = 0; i < q->n; i++)
        if (strcmp(q->m->mods[i].name, name) == 0) return &q->sites[i];
    return NULL;
}

void cr_qat_counts(const cr_qat *q, int *convs, int *folded, int *activations)
{
    int c = 0, f = 0, a = 0;
    for (int i = 0; i < q->n; i++) {
        c += q->sites[i].conv;
        f += q->sites[i].bn >= 0;
        a += q->sites[i].input + (q->sites[i].output && !q->sites[i].out_share);
    }
    if (convs) *convs = c;
    if (folded) *folded = f;
    if (activations) *activations = a;
}
