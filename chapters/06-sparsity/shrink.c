/* shrink.c — chapter 6: cutting pruned filters out of a model (see shrink.h). */
#include "shrink.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- tensors with some indices of one dimension removed ---------------------------------- */

/* out = t with only the indices i of dimension dim (0 or 1) where keep[i] is 1; t has rank
 * 1 (dim 0) or 4. Fails (CR_EINVAL) if nothing would be left. */
static cr_status select_dim(const cr_tensor *t, int dim, const uint8_t *keep, cr_tensor *out)
{
    int64_t kept = 0;
    for (int64_t i = 0; i < t->shape[dim]; i++) kept += keep[i] != 0;
    if (kept == 0) return cr_fail(CR_EINVAL, "shrink: every channel would be removed");
    int64_t shape[CR_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    shape[dim] = kept;
    cr_status st = cr_tensor_alloc(out, t->ndim, shape);
    if (st) return st;
    /* the tensor as outer x shape[dim] x inner blocks */
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < dim; d++) outer *= t->shape[d];
    for (int d = dim + 1; d < t->ndim; d++) inner *= t->shape[d];
    float *dst = out->data;
    for (int64_t a = 0; a < outer; a++)
        for (int64_t i = 0; i < t->shape[dim]; i++)
            if (keep[i]) {
                memcpy(dst, t->data + (a * t->shape[dim] + i) * inner, (size_t)inner * sizeof(float));
                dst += inner;
            }
    return CR_OK;
}

/* Replaces *t (if allocated) by its selection along dim. */
static cr_status shrink_tensor(cr_tensor *t, int dim, const uint8_t *keep)
{
    if (!t->data) return CR_OK;
    cr_tensor nt;
    cr_status st = select_dim(t, dim, keep, &nt);
    if (st) return st;
    cr_tensor_free(t);
    *t = nt;
    return CR_OK;
}

/* Reallocates the gradient g (if allocated) to the shape of its parameter p, zeroed. */
static cr_status match_grad(cr_tensor *g, const cr_tensor *p)
{
    if (!g->data) return CR_OK;
    cr_tensor_free(g);
    cr_status st = cr_tensor_alloc(g, p->ndim, p->shape);
    if (!st) cr_tensor_fill(g, 0.0f);
    return st;
}

int64_t cr_conv_live_filters(const cr_tensor *w, uint8_t *keep)
{
    const int64_t rows = w->shape[0], cols = (int64_t)w->numel / rows;
    int64_t live = 0;
    for (int64_t o = 0; o < rows; o++) {
        keep[o] = 0;
        for (int64_t k = 0; k < cols && !keep[o]; k++) keep[o] = w->data[o * cols + k] != 0.0f;
        live += keep[o];
    }
    return live;
}

/* Checks that keep (cout entries) selects whole groups of cout / groups channels. */
static int whole_groups(const uint8_t *keep, int64_t cout, int64_t groups)
{
    const int64_t cg = cout / groups;
    for (int64_t o = 0; o < cout; o++)
        if (keep[o] != keep[o / cg * cg]) return 0;
    return 1;
}

cr_status cr_conv_keep_filters(const cr_conv_params *p, const cr_tensor *w, const cr_tensor *b,
                               const uint8_t *keep, cr_conv_params *p2, cr_tensor *w2,
                               cr_tensor *b2, uint8_t *in_keep)
{
    if (!p || !w || !keep || !p2 || !w2 || !b2 || !w->data || w->ndim != 4 ||
        w->shape[0] != p->out_channels)
        return cr_fail(CR_EINVAL, "shrink: p, w (Cout x Cin_g x kh x kw), keep, p2, w2, b2 needed");
    if (p->bias != (b != NULL)) return cr_fail(CR_EINVAL, "shrink: b must be given exactly when p->bias");
    const int64_t G = p->groups, cg = p->out_channels / G, cin_g = p->in_channels / G;
    if (G > 1 && !whole_groups(keep, p->out_channels, G))
        return cr_fail(CR_EINVAL, "shrink: a grouped conv (%lld groups) loses whole groups only",
                       (long long)G);
    memset(b2, 0, sizeof *b2);
    cr_status st = select_dim(w, 0, keep, w2);
    if (st) return st;
    if (b && (st = select_dim(b, 0, keep, b2))) {
        cr_tensor_free(w2);
        return st;
    }
    *p2 = *p;
    p2->out_channels = w2->shape[0];
    if (G > 1) {
        p2->groups = p2->out_channels / cg;
        p2->in_channels = p2->groups * cin_g;
    }
    if (in_keep)
        for (int64_t c = 0; c < p->in_channels; c++) in_keep[c] = G > 1 ? keep[c / cin_g * cg] : 1;
    return CR_OK;
}

/* ---- the model's graph ----------------------------------------------------------------------- */

/* The modules that read module i's output (at most max of them into r); returns the count. */
static int readers(const cr_model *m, int i, int *r, int max)
{
    int n = 0;
    for (int j = i + 1; j < m->n; j++)
        if (m->mods[j].in == i || (m->mods[j].kind == CR_MOD_ADD && m->mods[j].in2 == i)) {
            if (n < max) r[n] = j;
            n++;
        }
    return n;
}

/* True for the modules that act on each channel on its own (or, GroupNorm, on groups). */
static int per_channel(cr_module_kind k)
{
    return k == CR_MOD_BATCHNORM || k == CR_MOD_GROUPNORM || k == CR_MOD_RELU || k == CR_MOD_DROPOUT;
}

#define MAX_READERS 16

/* A producer conv, the per-channel modules after it (each the only reader of the one
 * before), and the convolutions that read the last of them. */
typedef struct {
    int chain[MAX_READERS], nchain;
    int cons[MAX_READERS], ncons;
} conv_chain;

/* Fills ch for producer conv i; 0 if its output reaches anything but convolutions (an
 * add, a pool, the model's output) or the chain is too long. */
static int forward_chain(const cr_model *m, int i, conv_chain *ch)
{
    int r[MAX_READERS], cur = i;
    ch->nchain = 0;
    for (;;) {
        const int n = readers(m, cur, r, MAX_READERS);
        if (n == 1 && per_channel(m->mods[r[0]].kind) && ch->nchain < MAX_READERS) {
            cur = ch->chain[ch->nchain++] = r[0];
            continue;
        }
        if (n < 1 || n > MAX_READERS) return 0;   /* the model's output, or too many */
        for (int k = 0; k < n; k++) {
            if (m->mods[r[k]].kind != CR_MOD_CONV || m->mods[r[k]].in != cur) return 0;
            ch->cons[k] = r[k];
        }
        ch->ncons = n;
        return 1;
    }
}

/* The constant that a pruned filter's channel carries after the chain: v[o] for the
 * channels with dead[o]; dead[o] is cleared where a GroupNorm group is only partly dead. */
static void chain_constants(const cr_model *m, const conv_chain *ch, uint8_t *dead, double *v,
                            int64_t C)
{
    for (int k = 0; k < ch->nchain; k++) {
        const cr_module *d = &m->mods[ch->chain[k]];
        if (d->kind == CR_MOD_BATCHNORM) {
            for (int64_t o = 0; o < C; o++)
                v[o] = (v[o] - d->running_mean.data[o]) /
                           sqrt((double)d->running_var.data[o] + d->bn.eps) * d->weight.data[o] +
                       d->bias.data[o];
        } else if (d->kind == CR_MOD_RELU) {
            for (int64_t o = 0; o < C; o++) v[o] = v[o] > 0 ? v[o] : 0.0;
        } else if (d->kind == CR_MOD_GROUPNORM) {
            const int64_t cg = C / d->groups;
            for (int64_t g0 = 0; g0 < C; g0 += cg) {
                int all = 1;
                for (int64_t o = g0; o < g0 + cg; o++) all &= dead[o] != 0;
                if (!all) {
                    for (int64_t o = g0; o < g0 + cg; o++) dead[o] = 0;
                    continue;
                }
                double mean = 0, var = 0;   /* the group is constant per channel */
                for (int64_t o = g0; o < g0 + cg; o++) mean += v[o] / (double)cg;
                for (int64_t o = g0; o < g0 + cg; o++) var += (v[o] - mean) * (v[o] - mean) / (double)cg;
                for (int64_t o = g0; o < g0 + cg; o++)
                    v[o] = (v[o] - mean) / sqrt(var + d->eps) * d->weight.data[o] + d->bias.data[o];
            }
        }   /* dropout: the identity in evaluation mode */
    }
}

/* True if conv c reads no zero padding (so a constant input channel adds a constant). */
static int reads_no_zero_pad(const cr_conv_params *c)
{
    return c->pad_mode != CR_PAD_ZEROS ||
           (c->pad_top == 0 && c->pad_bottom == 0 && c->pad_left == 0 && c->pad_right == 0);
}

/* Where conv c (index ci) can absorb a constant input: its bias (1), the running mean of
 * the BatchNorm that alone reads it (2), or nowhere (0); *bn receives that BatchNorm. */
static int absorber(const cr_model *m, int ci, int *bn)
{
    const cr_module *c = &m->mods[ci];
    if (!reads_no_zero_pad(&c->conv) || c->conv.groups != 1) return 0;
    if (c->conv.bias) return 1;
    int r[2];
    if (readers(m, ci, r, 2) == 1 && m->mods[r[0]].kind == CR_MOD_BATCHNORM) {
        *bn = r[0];
        return 2;
    }
    return 0;
}

/* Adds constant v on input channel ch of conv ci (groups 1) to what follows: its bias, or
 * minus the BatchNorm's running mean (x + delta - mean == x - (mean - delta)). */
static void absorb(cr_model *m, int ci, int64_t ch, double v)
{
    cr_module *c = &m->mods[ci];
    int bn = -1;
    const int where = absorber(m, ci, &bn);
    const int64_t cin = c->conv.in_channels, taps = c->conv.kernel_h * c->conv.kernel_w;
    for (int64_t o = 0; o < c->conv.out_channels; o++) {
        double s = 0;
        for (int64_t t = 0; t < taps; t++) s += c->weight.data[(o * cin + ch) * taps + t];
        if (where == 1) c->bias.data[o] += (float)(v * s);
        else m->mods[bn].running_mean.data[o] -= (float)(v * s);
    }
}

/* Cuts channels (keep[c] == 0) out of the per-channel modules of a chain. */
static cr_status shrink_chain_modules(cr_model *m, const int *chain, int n, const uint8_t *keep)
{
    for (int k = 0; k < n; k++) {
        cr_module *d = &m->mods[chain[k]];
        if (d->kind != CR_MOD_BATCHNORM && d->kind != CR_MOD_GROUPNORM) continue;
        const int64_t cg = d->kind == CR_MOD_GROUPNORM ? d->channels / d->groups : 1;
        cr_status st;
        if ((st = shrink_tensor(&d->weight, 0, keep)) || (st = shrink_tensor(&d->bias, 0, keep)) ||
            (st = shrink_tensor(&d->running_mean, 0, keep)) ||
            (st = shrink_tensor(&d->running_var, 0, keep)) ||
            (st = match_grad(&d->dweight, &d->weight)) || (st = match_grad(&d->dbias, &d->bias)))
            return st;
        d->channels = d->weight.shape[0];
        if (d->kind == CR_MOD_GROUPNORM) d->groups = d->channels / cg;
    }
    return CR_OK;
}

/* Cuts output channels of conv d (grouped: whole groups, with their input channels). */
static cr_status shrink_conv_outputs(cr_module *d, const uint8_t *keep)
{
    cr_conv_params p2;
    cr_tensor w2, b2;
    cr_status st = cr_conv_keep_filters(&d->conv, &d->weight, d->conv.bias ? &d->bias : NULL, keep,
                                        &p2, &w2, &b2, NULL);
    if (st) return st;
    cr_tensor_free(&d->weight);
    d->weight = w2;
    if (d->conv.bias) {
        cr_tensor_free(&d->bias);
        d->bias = b2;
    }
    d->conv = p2;
    if ((st = match_grad(&d->dweight, &d->weight))) return st;
    return match_grad(&d->dbias, &d->bias);
}

/* Cuts input channels of conv d (groups 1). */
static cr_status shrink_conv_inputs(cr_module *d, const uint8_t *keep)
{
    cr_status st = shrink_tensor(&d->weight, 1, keep);
    if (st) return st;
    d->conv.in_channels = d->weight.shape[1];
    return match_grad(&d->dweight, &d->weight);
}

/* The producer chain that feeds conv i: per-channel modules back to a groups-1 conv whose
 * output only i reads (through them). Fills chain (the modules, conv first) and returns
 * the conv's index, or -1 if there is none. */
static int backward_chain(const cr_model *m, int i, int *chain, int *n)
{
    int r[2], cur = m->mods[i].in, next = i;
    int tmp[MAX_READERS], k = 0;
    while (cur >= 0 && k < MAX_READERS) {
        if (readers(m, cur, r, 2) != 1 || r[0] != next) return -1;
        const cr_module *d = &m->mods[cur];
        if (d->kind == CR_MOD_CONV) {
            if (d->conv.groups != 1) return -1;
            *n = k;
            for (int j = 0; j < k; j++) chain[j] = tmp[k - 1 - j];   /* in forward order */
            return cur;
        }
        if (!per_channel(d->kind)) return -1;
        tmp[k++] = cur;
        next = cur;
        cur = d->in;
    }
    return -1;
}

/* True if keep drops only whole groups of every GroupNorm in chain. */
static int norms_accept(const cr_model *m, const int *chain, int n, const uint8_t *keep)
{
    for (int k = 0; k < n; k++) {
        const cr_module *d = &m->mods[chain[k]];
        if (d->kind == CR_MOD_GROUPNORM && !whole_groups(keep, d->channels, d->groups)) return 0;
    }
    return 1;
}

/* Zeroes the weights of grouped reader c for its input groups whose channels are all dead
 * with the constant 0 (exact: they multiply zeros). */
static void zero_dead_groups(cr_module *c, const uint8_t *dead, const double *v)
{
    const int64_t G = c->conv.groups, cin_g = c->conv.in_channels / G, cg = c->conv.out_channels / G;
    const int64_t per = (int64_t)c->weight.numel / c->conv.out_channels;
    for (int64_t g = 0; g < G; g++) {
        int zero = 1;
        for (int64_t ch = g * cin_g; ch < (g + 1) * cin_g; ch++) zero &= dead[ch] && v[ch] == 0.0;
        if (zero) memset(c->weight.data + g * cg * per, 0, (size_t)(cg * per) * sizeof(float));
    }
}

/* Everything cr_model_shrink does for producer conv i: finds its pruned filters, the
 * constants they carry through the chain, which of them its readers absorb, and cuts. */
static cr_status shrink_producer(cr_model *m, int i, cr_shrink_report *rep)
{
    conv_chain ch;
    if (!forward_chain(m, i, &ch)) return CR_OK;
    cr_module *P = &m->mods[i];
    const int64_t C = P->conv.out_channels, G = P->conv.groups;
    uint8_t *dead = calloc((size_t)C, 1), *keep = malloc((size_t)C);
    double *v = malloc((size_t)C * sizeof *v);
    int bchain[MAX_READERS], nb = 0;
    cr_status st = CR_OK;
    if (!dead || !keep || !v) {
        st = cr_fail(CR_ENOMEM, "shrink: out of memory");
        goto done;
    }
    const int64_t live = cr_conv_live_filters(&P->weight, keep);
    for (int64_t o = 0; o < C; o++) {
        dead[o] = !keep[o];
        v[o] = P->conv.bias ? P->bias.data[o] : 0.0;
    }
    if (live == C) goto done;
    chain_constants(m, &ch, dead, v, C);
    for (int k = 0; k < ch.ncons; k++)   /* grouped readers: zero what reads only zeros */
        if (m->mods[ch.cons[k]].conv.groups > 1) zero_dead_groups(&m->mods[ch.cons[k]], dead, v);
    /* a dead channel goes if every reader absorbs its constant (dense readers only) */
    for (int64_t o = 0; o < C; o++) {
        keep[o] = 1;
        if (!dead[o]) continue;
        int ok = 1;
        for (int k = 0; k < ch.ncons; k++) {
            int bn;
            const cr_module *c = &m->mods[ch.cons[k]];
            ok &= c->conv.groups == 1 && (v[o] == 0.0 || absorber(m, ch.cons[k], &bn));
        }
        keep[o] = !ok;
    }
    if (G > 1) {          /* whole groups, whose inputs the producer chain must give up */
        const int64_t cg = C / G;
        for (int64_t g0 = 0; g0 < C; g0 += cg) {
            int all = 1;
            for (int64_t o = g0; o < g0 + cg; o++) all &= !keep[o];
            for (int64_t o = g0; o < g0 + cg; o++) keep[o] = !all;
        }
    }
    if (!norms_accept(m, ch.chain, ch.nchain, keep))
        for (int64_t o = 0; o < C; o++) keep[o] = 1;
    int64_t removed = 0;
    for (int64_t o = 0; o < C; o++) removed += !keep[o];
    if (removed == 0 || removed == C) goto count_dead;
    uint8_t *in_keep = NULL;
    int q = -1;
    const int64_t cin_before = P->conv.in_channels;
    if (G > 1) {
        q = backward_chain(m, i, bchain, &nb);
        const int64_t cin = P->conv.in_channels, cin_g = cin / G, cg = C / G;
        in_keep = malloc((size_t)cin);
        if (!in_keep) {
            st = cr_fail(CR_ENOMEM, "shrink: out of memory");
            goto done;
        }
        for (int64_t c = 0; c < cin; c++) in_keep[c] = keep[c / cin_g * cg];
        if (q < 0 || !norms_accept(m, bchain, nb, in_keep)) {   /* inputs cannot go: keep all */
            free(in_keep);
            for (int64_t o = 0; o < C; o++) keep[o] = 1;
            goto count_dead;
        }
    }
    for (int64_t o = 0; o < C; o++)   /* fold the constants, then cut */
        if (!keep[o] && v[o] != 0.0)
            for (int k = 0; k < ch.ncons; k++) absorb(m, ch.cons[k], o, v[o]);
    if (G > 1 && rep) rep->groups_removed += removed / (C / G);
    if ((st = shrink_conv_outputs(P, keep)) || (st = shrink_chain_modules(m, ch.chain, ch.nchain, keep)))
        goto cut_done;
    for (int k = 0; k < ch.ncons && !st; k++) st = shrink_conv_inputs(&m->mods[ch.cons[k]], keep);
    if (!st && G > 1 && !(st = shrink_conv_outputs(&m->mods[q], in_keep)))
        st = shrink_chain_modules(m, bchain, nb, in_keep);   /* their producer loses them */
    if (rep) {   /* this conv's filters, and (grouped) its producer's */
        rep->channels_removed += removed + (G > 1 ? removed / (C / G) * (cin_before / G) : 0);
    }
cut_done:
    free(in_keep);
    goto done;
count_dead:   /* nothing cut here */
done:
    free(dead);
    free(keep);
    free(v);
    return st;
}

cr_status cr_model_shrink(cr_model *m, cr_shrink_report *rep)
{
    if (!m) return cr_fail(CR_EINVAL, "shrink: m is NULL");
    if (m->training)
        return cr_fail(CR_EINVAL, "shrink: the model must be in evaluation mode "
                       "(cr_model_train(m, false)): BatchNorm's running statistics are folded");
    if (rep) memset(rep, 0, sizeof *rep);
    int64_t before = 0, after = 0;
    for (int i = 0; i < m->n; i++)
        if (m->mods[i].kind == CR_MOD_CONV) before += (int64_t)m->mods[i].weight.numel;
    for (int i = 0; i < m->n; i++) {
        if (m->mods[i].kind != CR_MOD_CONV) continue;
        cr_status st = shrink_producer(m, i, rep);
        if (st) return st;
    }
    for (int i = 0; i < m->n; i++)
        if (m->mods[i].kind == CR_MOD_CONV) after += (int64_t)m->mods[i].weight.numel;
    if (rep) {
        rep->weights_before = before;
        rep->weights_after = after;
        for (int i = 0; i < m->n; i++)   /* pruned filters still there */
            if (m->mods[i].kind == CR_MOD_CONV) {
                const cr_tensor *w = &m->mods[i].weight;
                uint8_t *live = malloc((size_t)w->shape[0]);
                if (!live) return cr_fail(CR_ENOMEM, "shrink: out of memory");
                rep->channels_kept_dead += w->shape[0] - cr_conv_live_filters(w, live);
                free(live);
            }
    }
    return CR_OK;
}
