/* sparse_model.c — chapter 6: a chapter 4 model with its pruned convolutions run sparse
 * (see sparse_model.h). */
#include "sparse_model.h"

#include <stdlib.h>
#include <string.h>

#include "conv_gemm.h"
#include "shrink.h"

/* The attached models: the dispatcher, a plain cr_conv2d_fn, has no other context. */
static cr_sparse_model *attached;

const char *cr_sparse_path_name(cr_sparse_path p)
{
    static const char *const names[] = {"dense", "csr", "filters"};
    return (unsigned)p < 3 ? names[p] : "?";
}

cr_sparse_model_config cr_sparse_model_config_default(void)
{
    cr_sparse_model_config c = {.csr = true, .filters = true};
    return c;
}

/* ---- running one convolution ------------------------------------------------------------ */

// @snippet sparse_model_filters
/* Path filters: y (N x Cout x Ho x Wo) = the live filters' conv, copied plane by plane;
 * the dead filters' planes hold their bias (or 0). */
static cr_status run_filters(cr_sparse_model *e, cr_sparse_layer *L, const cr_conv_params *p,
                             const cr_tensor *x, const cr_tensor *b, cr_tensor *y)
{
    const int64_t N = y->shape[0], C = y->shape[1], plane = y->shape[2] * y->shape[3];
    if (L->live > 0) {
        const size_t need = (size_t)(N * L->live * plane);
        if (e->scratch.numel < need) {
            cr_tensor_free(&e->scratch);
            cr_status st = cr_tensor_alloc4(&e->scratch, N, L->live, y->shape[2], y->shape[3]);
            if (st) return st;
        }
        cr_tensor t = e->scratch;   /* a view of the scratch with the smaller conv's shape */
        t.ndim = 4;
        t.shape[0] = N;
        t.shape[1] = L->live;
        t.shape[2] = y->shape[2];
        t.shape[3] = y->shape[3];
        t.numel = need;
        cr_status st = e->dense(&L->small, x, &L->w_small, L->small.bias ? &L->b_small : NULL, &t);
        if (st) return st;
    }
#pragma omp parallel for schedule(static) if (N * C * plane >= 32768)
    for (int64_t pl = 0; pl < N * C; pl++) {
        const int64_t n = pl / C, o = pl % C;
        float *dst = y->data + pl * plane;
        /* where filter o is among the live ones (live_idx is increasing) */
        int64_t lo = 0, hi = L->live;
        while (lo < hi) {
            const int64_t mid = (lo + hi) / 2;
            if (L->live_idx[mid] < o) lo = mid + 1;
            else hi = mid;
        }
        if (lo < L->live && L->live_idx[lo] == o) {
            memcpy(dst, e->scratch.data + (n * L->live + lo) * plane, (size_t)plane * sizeof(float));
        } else {
            const float v = p->bias && b ? b->data[o] : 0.0f;
            for (int64_t i = 0; i < plane; i++) dst[i] = v;
        }
    }
    return CR_OK;
}
// @end sparse_model_filters

/* The layer of an attached model whose module holds p, or NULL (*owner: its model). */
static cr_sparse_layer *find_layer(const cr_conv_params *p, cr_sparse_model **owner)
{
    for (cr_sparse_model *e = attached; e; e = e->next) {
        const cr_module *first = e->model->mods, *last = first + e->model->n;
        if ((const void *)p < (const void *)first || (const void *)p >= (const void *)last) continue;
        *owner = e;
        for (int i = 0; i < e->n; i++)
            if (&e->model->mods[e->layers[i].module].conv == p) return &e->layers[i];
        return NULL;
    }
    *owner = NULL;
    return NULL;
}

/* The dispatcher installed as an attached model's conv_forward (a cr_conv2d_fn). */
static cr_status sparse_model_conv(const cr_conv_params *p, const cr_tensor *x, const cr_tensor *w,
                                   const cr_tensor *b, cr_tensor *y)
{
    cr_sparse_model *e;
    cr_sparse_layer *L = find_layer(p, &e);
    if (!L || !w || w->data != L->weight || L->path == CR_SPARSE_PATH_DENSE) {
        if (L) e->calls[CR_SPARSE_PATH_DENSE]++;
        return (e ? e->dense : cr_conv2d_fast)(p, x, w, b, y);
    }
    e->calls[L->path]++;
    if (L->path == CR_SPARSE_PATH_CSR) return cr_conv2d_auto(p, x, w, &L->csr, b, y);
    return run_filters(e, L, p, x, b, y);
}

/* ---- attaching ---------------------------------------------------------------------------- */

/* Frees one layer's path data. */
static void layer_free(cr_sparse_layer *L)
{
    cr_csr_free(&L->csr);
    cr_tensor_free(&L->w_small);
    cr_tensor_free(&L->b_small);
    free(L->live_idx);
    L->live_idx = NULL;
}

// @snippet sparse_model_plan
/* Chooses and builds layer L's path from conv module d's weight. */
static cr_status plan_layer(cr_sparse_layer *L, const cr_module *d, const cr_sparse_model_config *c)
{
    const cr_tensor *w = &d->weight;
    const int64_t cout = w->shape[0], per = (int64_t)w->numel / cout;
    L->weight = w->data;
    L->numel = (int64_t)w->numel;
    L->zeros = 0;
    for (size_t i = 0; i < w->numel; i++) L->zeros += w->data[i] == 0.0f;
    uint8_t *keep = malloc((size_t)cout);
    if (!keep) return cr_fail(CR_ENOMEM, "sparse model: out of memory");
    L->live = cr_conv_live_filters(w, keep);
    L->path = CR_SPARSE_PATH_DENSE;
    cr_status st = CR_OK;
    const double s_all = (double)L->zeros / (double)L->numel;
    const int64_t live_n = L->live * per, live_zeros = L->zeros - (cout - L->live) * per;
    const double s_live = live_n > 0 ? (double)live_zeros / (double)live_n : 1.0;
    if (L->zeros == 0) {
        /* dense */
    } else if (c->filters && L->live < cout && d->conv.groups == 1 && !(c->csr && cr_sparse_pays(s_live))) {
        L->path = CR_SPARSE_PATH_FILTERS;
        L->live_idx = malloc((size_t)(L->live > 0 ? L->live : 1) * sizeof *L->live_idx);
        if (!L->live_idx) st = cr_fail(CR_ENOMEM, "sparse model: out of memory");
        for (int64_t o = 0, k = 0; !st && o < cout; o++)
            if (keep[o]) L->live_idx[k++] = o;
        if (!st && L->live > 0)
            st = cr_conv_keep_filters(&d->conv, w, d->conv.bias ? &d->bias : NULL, keep, &L->small,
                                      &L->w_small, &L->b_small, NULL);
    } else if (c->csr && cr_sparse_pays(s_all)) {
        L->path = CR_SPARSE_PATH_CSR;
        st = cr_csr_from_weight(&L->csr, w, NULL);
    }
    free(keep);
    return st;
}
// @end sparse_model_plan

cr_status cr_sparse_model_attach(cr_sparse_model *e, cr_model *m, const cr_sparse_model_config *c)
{
    if (!e || !m) return cr_fail(CR_EINVAL, "sparse model: e and m must not be NULL");
    const cr_sparse_model_config def = cr_sparse_model_config_default();
    if (!c) c = &def;
    if (m->conv_forward == sparse_model_conv)
        return cr_fail(CR_EINVAL, "sparse model: the model is already attached (detach it first)");
    memset(e, 0, sizeof *e);
    for (int i = 0; i < m->n; i++) e->n += m->mods[i].kind == CR_MOD_CONV;
    if (e->n == 0) return cr_fail(CR_EINVAL, "sparse model: the model has no convolution");
    e->layers = calloc((size_t)e->n, sizeof *e->layers);
    if (!e->layers) return cr_fail(CR_ENOMEM, "sparse model: out of memory");
    e->model = m;
    e->dense = m->conv_forward ? m->conv_forward : cr_conv2d_fast;
    for (int i = 0, k = 0; i < m->n; i++) {
        if (m->mods[i].kind != CR_MOD_CONV) continue;
        cr_sparse_layer *L = &e->layers[k++];
        L->module = i;
        cr_status st = plan_layer(L, &m->mods[i], c);
        if (st) {
            e->model = NULL;   /* not in the list yet: free only */
            for (int j = 0; j < k; j++) layer_free(&e->layers[j]);
            free(e->layers);
            memset(e, 0, sizeof *e);
            return st;
        }
        e->count[L->path]++;
    }
    e->next = attached;
    attached = e;
    m->conv_forward = sparse_model_conv;
    return CR_OK;
}

void cr_sparse_model_detach(cr_sparse_model *e)
{
    if (!e) return;
    for (cr_sparse_model **q = &attached; *q; q = &(*q)->next)
        if (*q == e) {
            *q = e->next;
            break;
        }
    if (e->model && e->model->conv_forward == sparse_model_conv) e->model->conv_forward = e->dense;
    for (int i = 0; i < e->n && e->layers; i++) layer_free(&e->layers[i]);
    free(e->layers);
    cr_tensor_free(&e->scratch);
    memset(e, 0, sizeof *e);
}

/* ---- memory and report ------------------------------------------------------------------- */

/* Bytes of a module's float32 tensors other than a conv's weight. */
static size_t other_bytes(const cr_module *d)
{
    const cr_tensor *t[4] = {&d->weight, &d->bias, &d->running_mean, &d->running_var};
    size_t n = 0;
    for (int k = d->kind == CR_MOD_CONV ? 1 : 0; k < 4; k++)
        if (t[k]->data) n += t[k]->numel;
    return n * sizeof(float);
}

size_t cr_model_param_bytes(const cr_model *m)
{
    size_t n = 0;
    for (int i = 0; m && i < m->n; i++)
        n += other_bytes(&m->mods[i]) +
             (m->mods[i].kind == CR_MOD_CONV ? m->mods[i].weight.numel * sizeof(float) : 0);
    return n;
}

size_t cr_sparse_model_bytes(const cr_sparse_model *e)
{
    if (!e || !e->model) return 0;
    const cr_model *m = e->model;
    size_t n = 0;
    for (int i = 0; i < m->n; i++) n += other_bytes(&m->mods[i]);
    for (int k = 0; k < e->n; k++) {
        const cr_sparse_layer *L = &e->layers[k];
        if (L->path == CR_SPARSE_PATH_CSR) n += cr_csr_bytes(&L->csr);
        else if (L->path == CR_SPARSE_PATH_FILTERS)
            n += L->w_small.numel * sizeof(float) + (size_t)L->live * sizeof(int64_t);
        else n += (size_t)L->numel * sizeof(float);
    }
    return n;
}

void cr_sparse_model_report(const cr_sparse_model *e, FILE *f)
{
    if (!e || !e->model) return;
    for (int k = 0; k < e->n; k++) {
        const cr_sparse_layer *L = &e->layers[k];
        if (L->zeros == 0) continue;
        const cr_module *d = &e->model->mods[L->module];
        char shape[64];
        cr_tensor_shape_str(&d->weight, shape, sizeof shape);
        fprintf(f, "  %-44s %-18s zeros %6.2f%%  live filters %5lld/%-5lld %s\n", d->name, shape,
                100.0 * (double)L->zeros / (double)L->numel, (long long)L->live,
                (long long)d->weight.shape[0], cr_sparse_path_name(L->path));
    }
    fprintf(f, "  convolutions: %d dense, %d csr, %d filters\n", e->count[0], e->count[1], e->count[2]);
}
