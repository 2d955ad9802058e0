/* prune.c — chapter 6: magnitude pruning, its masks and its schedules (see prune.h). */
#include "prune.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- masks of one tensor ------------------------------------------------------------ */

int64_t cr_prune_count(int64_t n, double s)
{
    return (int64_t)((double)n * s);   /* truncation toward zero, as Python's int() */
}

cr_status cr_prune_check_sparsity(double s, const char *what)
{
    if (!(s >= 0.0 && s <= 1.0))
        return cr_fail(CR_EINVAL, "%s: sparsity must be a number in [0, 1], got %g", what, s);
    return CR_OK;
}

cr_status cr_prune_mask_alloc(cr_mask *m, const cr_tensor *t)
{
    cr_status s = cr_mask_alloc(m, t->ndim, t->shape);
    if (!s) memset(m->data, 1, m->numel);
    return s;
}

/* Fails unless m (the argument named what) has t's shape. */
static cr_status same_shape(const cr_mask *m, const cr_tensor *t, const char *what)
{
    if (!m || !m->data) return cr_fail(CR_EINVAL, "%s: no mask (allocate it with cr_prune_mask_alloc)", what);
    bool same = m->ndim == t->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = m->shape[d] == t->shape[d];
    if (!same) {
        char a[64], b[80] = "[";
        cr_tensor_shape_str(t, a, sizeof a);
        for (int d = 0; d < m->ndim && d < CR_MAX_DIMS; d++)
            snprintf(b + strlen(b), sizeof b - strlen(b), "%s%lld", d ? ", " : "",
                     (long long)m->shape[d]);
        strcat(b, "]");
        return cr_fail(CR_EINVAL, "%s: the mask is %s, the tensor %s", what, b, a);
    }
    return CR_OK;
}

/* Fails naming the first NaN of w (a NaN has no magnitude to rank). */
static cr_status check_finite_order(const cr_tensor *w, const char *what)
{
    for (size_t i = 0; i < w->numel; i++)
        if (isnan(w->data[i]))
            return cr_fail(CR_EINVAL, "%s: weight element %zu is NaN: it has no magnitude to rank",
                           what, i);
    return CR_OK;
}

/* Swaps a[i] and a[j]. */
static void swap_d(double *a, int64_t i, int64_t j)
{
    const double t = a[i];
    a[i] = a[j];
    a[j] = t;
}

/* The median of three values (the pivot of kth_smallest). */
static double median3(double a, double b, double c)
{
    if (a > b) { const double t = a; a = b; b = t; }
    if (b > c) b = c;
    return a > b ? a : b;
}

/* The value of rank k (0-based) of a[0..n-1] in ascending order: quickselect with a
 * three-way partition (many equal values, such as the zeros of a pruned layer, cost
 * one pass); reorders a. */
static double kth_smallest(double *a, int64_t n, int64_t k)
{
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const double pivot = median3(a[lo], a[lo + (hi - lo) / 2], a[hi]);
        int64_t lt = lo, i = lo, gt = hi;   /* a[lo..lt) < pivot, a[lt..i) == pivot, a(gt..hi] > pivot */
        while (i <= gt) {
            if (a[i] < pivot) swap_d(a, lt++, i++);
            else if (a[i] > pivot) swap_d(a, i, gt--);
            else i++;
        }
        if (k < lt) hi = lt - 1;
        else if (k > gt) lo = gt + 1;
        else return pivot;
    }
    return a[lo];
}

// @snippet select_smallest
cr_status cr_prune_select_smallest(const double *score, int64_t n, int64_t k, uint8_t *keep)
{
    if (n < 1 || k < 0 || k > n)
        return cr_fail(CR_EINVAL, "prune: cannot drop %lld of %lld scores", (long long)k,
                       (long long)n);
    // @solution prune_select: drop the k smallest scores, exactly k, the lower index first among equal ones
    if (k == 0 || k == n) {
        memset(keep, k == 0, (size_t)n);
        return CR_OK;
    }
    double *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp) return cr_fail(CR_ENOMEM, "prune: out of memory for %lld scores", (long long)n);
    memcpy(tmp, score, (size_t)n * sizeof *tmp);
    const double t = kth_smallest(tmp, n, k - 1);   /* the largest value that is dropped */
    free(tmp);
    int64_t below = 0;                              /* scores < t: all dropped */
    for (int64_t i = 0; i < n; i++) below += score[i] < t;
    int64_t ties = k - below;                       /* of the scores == t, drop this many */
    for (int64_t i = 0; i < n; i++) {
        if (score[i] < t) keep[i] = 0;
        else if (score[i] > t) keep[i] = 1;
        else if (ties > 0) { keep[i] = 0; ties--; }
        else keep[i] = 1;
    }
    return CR_OK;
    // @stub
    // (void)score;
    // (void)keep;
    // return cr_todo("prune_select");
    // @end-solution
}
// @end select_smallest

// @snippet unstructured
cr_status cr_prune_unstructured(const cr_tensor *w, double s, const cr_mask *prev, cr_mask *out)
{
    cr_status st;
    if ((st = cr_prune_check_sparsity(s, "prune_unstructured")) ||
        (st = same_shape(out, w, "prune_unstructured: out")) ||
        (prev && (st = same_shape(prev, w, "prune_unstructured: prev"))) ||
        (st = check_finite_order(w, "prune_unstructured")))
        return st;
    const int64_t n = (int64_t)w->numel;
    double *score = malloc((size_t)n * sizeof *score);
    if (!score) return cr_fail(CR_ENOMEM, "prune_unstructured: out of memory");
    for (int64_t i = 0; i < n; i++)   /* what prev dropped ranks first: -1 < any |w| */
        score[i] = prev && !prev->data[i] ? -1.0 : fabs((double)w->data[i]);
    st = cr_prune_select_smallest(score, n, cr_prune_count(n, s), out->data);
    free(score);
    return st;
}
// @end unstructured

/* Elements per slice of dimension dim (dim 0: a filter; dim 1: one input channel of one
 * filter, `inner` elements each, shape[0] of them per channel). */
static int64_t inner_size(const cr_tensor *w, int from)
{
    int64_t n = 1;
    for (int d = from; d < w->ndim; d++) n *= w->shape[d];
    return n;
}

cr_status cr_prune_channel_scores(const cr_tensor *w, int dim, cr_prune_norm norm,
                                  const cr_mask *prev, double *score)
{
    cr_status st;
    if (dim != 0 && dim != 1)
        return cr_fail(CR_EINVAL, "prune_structured: dim must be 0 (filters) or 1 (input "
                       "channels), got %d", dim);
    if (dim == 1 && w->ndim < 2)
        return cr_fail(CR_EINVAL, "prune_structured: dim 1 needs a weight of rank >= 2, got "
                       "rank %d", w->ndim);
    if (norm != CR_PRUNE_L2 && norm != CR_PRUNE_L1)
        return cr_fail(CR_EINVAL, "prune_structured: norm must be CR_PRUNE_L2 or CR_PRUNE_L1, "
                       "got %d", (int)norm);
    if ((prev && (st = same_shape(prev, w, "prune_structured: prev"))) ||
        (st = check_finite_order(w, "prune_structured")))
        return st;
    // @snippet channel_scores
    // @solution channel_norms: the L2 or L1 norm of each slice of w along dim, over what prev keeps; -1 for a slice prev drops whole
    const int64_t outer = dim == 0 ? 1 : w->shape[0];    /* filters a dim-1 slice spans */
    const int64_t C = w->shape[dim], inner = inner_size(w, dim + 1);
    for (int64_t c = 0; c < C; c++) {
        double sum = 0;
        int64_t kept = 0;
        for (int64_t o = 0; o < outer; o++) {
            const int64_t base = (o * C + c) * inner;    /* w[o, c, ...] or w[c, ...] */
            for (int64_t j = base; j < base + inner; j++) {
                if (prev && !prev->data[j]) continue;
                const double v = w->data[j];
                sum += norm == CR_PRUNE_L2 ? v * v : fabs(v);
                kept++;
            }
        }
        score[c] = kept == 0 ? -1.0 : norm == CR_PRUNE_L2 ? sqrt(sum) : sum;
    }
    return CR_OK;
    // @stub
    // (void)score;
    // return cr_todo("channel_norms");
    // @end-solution
    // @end channel_scores
}

cr_status cr_prune_structured(const cr_tensor *w, int dim, cr_prune_norm norm, double s,
                              const cr_mask *prev, cr_mask *out)
{
    cr_status st;
    if ((st = cr_prune_check_sparsity(s, "prune_structured")) ||
        (st = same_shape(out, w, "prune_structured: out")))
        return st;
    if (dim != 0 && dim != 1) return cr_prune_channel_scores(w, dim, norm, prev, NULL);
    const int64_t C = w->shape[dim];
    double *score = malloc((size_t)C * sizeof *score);
    uint8_t *keep = malloc((size_t)C);
    if (!score || !keep) st = cr_fail(CR_ENOMEM, "prune_structured: out of memory");
    if (!st) st = cr_prune_channel_scores(w, dim, norm, prev, score);
    if (!st) st = cr_prune_select_smallest(score, C, cr_prune_count(C, s), keep);
    if (!st) {
        const int64_t outer = dim == 0 ? 1 : w->shape[0], inner = inner_size(w, dim + 1);
        for (int64_t o = 0; o < outer; o++)
            for (int64_t c = 0; c < C; c++)
                for (int64_t j = (o * C + c) * inner; j < (o * C + c + 1) * inner; j++)
                    out->data[j] = keep[c] && (!prev || prev->data[j]);
    }
    free(score);
    free(keep);
    return st;
}

cr_status cr_prune_global(const cr_tensor *const *w, int n, double s,
                          const cr_mask *const *prev, cr_mask *const *out)
{
    cr_status st = cr_prune_check_sparsity(s, "prune_global");
    if (st) return st;
    if (n < 1) return cr_fail(CR_EINVAL, "prune_global: no tensor to prune (n = %d)", n);
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        char what[64];
        snprintf(what, sizeof what, "prune_global: out[%d]", i);
        if ((st = same_shape(out[i], w[i], what))) return st;
        snprintf(what, sizeof what, "prune_global: prev[%d]", i);
        if (prev && prev[i] && (st = same_shape(prev[i], w[i], what))) return st;
        snprintf(what, sizeof what, "prune_global: tensor %d", i);
        if ((st = check_finite_order(w[i], what))) return st;
        total += (int64_t)w[i]->numel;
    }
    double *score = malloc((size_t)total * sizeof *score);
    uint8_t *keep = malloc((size_t)total);
    if (!score || !keep) st = cr_fail(CR_ENOMEM, "prune_global: out of memory for %lld scores",
                                      (long long)total);
    for (int64_t i = 0, off = 0; !st && i < n; off += (int64_t)w[i]->numel, i++) {
        const cr_mask *pm = prev ? prev[i] : NULL;
        for (size_t j = 0; j < w[i]->numel; j++)
            score[off + (int64_t)j] = pm && !pm->data[j] ? -1.0 : fabs((double)w[i]->data[j]);
    }
    if (!st) st = cr_prune_select_smallest(score, total, cr_prune_count(total, s), keep);
    for (int64_t i = 0, off = 0; !st && i < n; off += (int64_t)w[i]->numel, i++)
        memcpy(out[i]->data, keep + off, w[i]->numel);
    free(score);
    free(keep);
    return st;
}

// @snippet threshold_rule
cr_status cr_prune_threshold_rule(const cr_tensor *w, double s, cr_mask *out)
{
    cr_status st;
    if ((st = cr_prune_check_sparsity(s, "prune_threshold_rule")) ||
        (st = same_shape(out, w, "prune_threshold_rule: out")) ||
        (st = check_finite_order(w, "prune_threshold_rule")))
        return st;
    const int64_t n = (int64_t)w->numel, k = cr_prune_count(n, s);
    if (k == 0)
        return cr_fail(CR_EINVAL, "prune_threshold_rule: k = int(%lld * %g) = 0, and "
                       "kthvalue(|w|, 0) is undefined (PyTorch raises); "
                       "cr_prune_unstructured prunes nothing there", (long long)n, s);
    double *a = malloc((size_t)n * sizeof *a);
    if (!a) return cr_fail(CR_ENOMEM, "prune_threshold_rule: out of memory");
    for (int64_t i = 0; i < n; i++) a[i] = fabs((double)w->data[i]);
    const double threshold = kth_smallest(a, n, k - 1);   /* kthvalue is 1-based */
    for (int64_t i = 0; i < n; i++) out->data[i] = fabs((double)w->data[i]) > threshold;
    free(a);
    return CR_OK;
}
// @end threshold_rule

cr_status cr_prune_mask_apply(const cr_mask *m, cr_tensor *t)
{
    cr_status st = same_shape(m, t, "prune_mask_apply");
    if (st) return st;
    for (size_t i = 0; i < t->numel; i++)
        if (!m->data[i]) t->data[i] = 0.0f;
    return CR_OK;
}

int64_t cr_prune_zeros(const cr_tensor *t)
{
    int64_t z = 0;
    for (size_t i = 0; i < t->numel; i++) z += t->data[i] == 0.0f;
    return z;
}

/* ---- schedules ---------------------------------------------------------------------- */

cr_iterative_schedule cr_iterative_schedule_default(void)
{
    return (cr_iterative_schedule){.initial = 0.0, .final = 0.9, .iterations = 14,
                                   .epochs_per_iteration = 3};
}

/* Fails unless 0 <= initial <= final <= 1 (what names the schedule). */
static cr_status check_range(double initial, double final, const char *what)
{
    cr_status st = cr_prune_check_sparsity(initial, what);
    if (!st) st = cr_prune_check_sparsity(final, what);
    if (!st && initial > final)
        st = cr_fail(CR_EINVAL, "%s: initial sparsity %g is above the final %g", what, initial,
                     final);
    return st;
}

cr_status cr_iterative_step(const cr_iterative_schedule *s, double *step)
{
    cr_status st = check_range(s->initial, s->final, "iterative schedule");
    if (st) return st;
    if (s->iterations < 1 || s->epochs_per_iteration < 1)
        return cr_fail(CR_EINVAL, "iterative schedule: iterations (%d) and epochs_per_iteration "
                       "(%d) must be >= 1", s->iterations, s->epochs_per_iteration);
    // @snippet iterative_step
    // @solution iterative_schedule: the original's step, (final - initial) / ((iterations + 1) / epochs_per_iteration - 1), a true division
    const double divisor = (double)(s->iterations + 1) / s->epochs_per_iteration - 1.0;
    if (!(divisor > 0))
        return cr_fail(CR_EINVAL, "iterative schedule: (iterations + 1) / epochs_per_iteration "
                       "- 1 = (%d + 1) / %d - 1 = %g must be > 0 (the step divides by it)",
                       s->iterations, s->epochs_per_iteration, divisor);
    *step = (s->final - s->initial) / divisor;
    return CR_OK;
    // @stub
    // (void)step;
    // return cr_todo("iterative_schedule");
    // @end-solution
    // @end iterative_step
}

cr_status cr_iterative_sparsity(const cr_iterative_schedule *s, int iteration, double *out)
{
    double step = 0;
    cr_status st = cr_iterative_step(s, &step);
    if (st) return st;
    if (iteration < 0 || iteration >= s->iterations)
        return cr_fail(CR_EINVAL, "iterative schedule: iteration %d is outside 0..%d", iteration,
                       s->iterations - 1);
    // @snippet iterative_sparsity
    const double v = s->initial + step * iteration;
    *out = v < s->final ? v : s->final;
    // @end iterative_sparsity
    return CR_OK;
}

cr_status cr_cubic_sparsity(const cr_cubic_schedule *s, int64_t t, double *out)
{
    cr_status st = check_range(s->initial, s->final, "cubic schedule");
    if (st) return st;
    if (s->t0 < 0 || s->n < 1 || s->dt < 1 || t < 0)
        return cr_fail(CR_EINVAL, "cubic schedule: needs t0 >= 0, n >= 1, dt >= 1 and t >= 0; "
                       "got t0 %lld, n %lld, dt %lld, t %lld", (long long)s->t0,
                       (long long)s->n, (long long)s->dt, (long long)t);
    // @snippet cubic
    // @solution cubic_schedule: Zhu & Gupta's s_t, held between pruning steps, initial before t0 and final after the last step
    if (t < s->t0) {
        *out = s->initial;
        return CR_OK;
    }
    const int64_t j = (t - s->t0) / s->dt;           /* pruning steps taken since t0 */
    if (j >= s->n) {
        *out = s->final;
        return CR_OK;
    }
    const double left = 1.0 - (double)j / (double)s->n;   /* 1 - (t - t0) / (n dt) */
    *out = s->final + (s->initial - s->final) * left * left * left;
    return CR_OK;
    // @stub
    // (void)out;
    // return cr_todo("cubic_schedule");
    // @end-solution
    // @end cubic
}

/* ---- pruning a model ---------------------------------------------------------------- */

/* Index of name in p->params, or -1. */
static int param_index(const cr_pruner *p, const char *name)
{
    for (int i = 0; i < p->params.n; i++)
        if (strcmp(p->params.names[i], name) == 0) return i;
    return -1;
}

/* Marks in conv[0..params.n-1] the parameters that are convolution weights. */
static void find_conv_weights(const cr_pruner *p, bool *conv)
{
    for (int j = 0; j < p->model->n; j++) {
        const cr_module *md = &p->model->mods[j];
        if (md->kind != CR_MOD_CONV) continue;
        char name[CR_PARAM_NAME_MAX];
        snprintf(name, sizeof name, "%s.weight", md->name);
        const int i = param_index(p, name);
        if (i >= 0) conv[i] = true;
    }
}

/* The index of a listed name (what: "include" or "exclude"), failing unless it is a
 * convolution weight of the model. */
static cr_status listed_index(const cr_pruner *p, const bool *conv, const char *name,
                              const char *what, int *i)
{
    *i = param_index(p, name);
    if (*i < 0)
        return cr_fail(CR_EINVAL, "prune: %s names unknown layer '%s': no parameter of the "
                       "model has that state-dict name (they look like '%s')", what, name,
                       p->params.n ? p->params.names[0] : "conv.weight");
    if (!conv[*i])
        return cr_fail(CR_EINVAL, "prune: %s names '%s', which is not a convolution weight",
                       what, name);
    return CR_OK;
}

/* Sets sel[i] for every parameter c selects (include, then exclude). */
static cr_status select_layers(const cr_pruner *p, const cr_prune_config *c, bool *sel)
{
    const int n = p->params.n;
    bool *conv = calloc((size_t)(n ? n : 1), sizeof *conv);
    if (!conv) return cr_fail(CR_ENOMEM, "prune: out of memory");
    find_conv_weights(p, conv);
    cr_status st = CR_OK;
    int i;
    if (!c->include) memcpy(sel, conv, (size_t)n * sizeof *sel);
    for (int k = 0; !st && c->include && c->include[k]; k++)
        if (!(st = listed_index(p, conv, c->include[k], "include", &i))) sel[i] = true;
    for (int k = 0; !st && c->exclude && c->exclude[k]; k++)
        if (!(st = listed_index(p, conv, c->exclude[k], "exclude", &i))) sel[i] = false;
    free(conv);
    return st;
}

void cr_pruner_free(cr_pruner *p)
{
    for (int i = 0; p->masks && i < p->params.n; i++) cr_mask_free(&p->masks[i]);
    free(p->masks);
    free(p->active);
    cr_tensor_list_free(&p->params);
    memset(p, 0, sizeof *p);
}

cr_status cr_pruner_init(cr_pruner *p, cr_model *m, const cr_prune_config *c)
{
    memset(p, 0, sizeof *p);
    if (c->kind < CR_PRUNE_UNSTRUCTURED || c->kind > CR_PRUNE_GLOBAL)
        return cr_fail(CR_EINVAL, "prune: unknown kind %d", (int)c->kind);
    if (c->norm != CR_PRUNE_L2 && c->norm != CR_PRUNE_L1)
        return cr_fail(CR_EINVAL, "prune: norm must be CR_PRUNE_L2 or CR_PRUNE_L1, got %d",
                       (int)c->norm);
    p->model = m;
    p->cfg = *c;
    p->cfg.include = p->cfg.exclude = NULL;
    cr_status st = cr_model_param_list(m, &p->params);
    if (st) return st;
    const size_t n = (size_t)(p->params.n ? p->params.n : 1);
    p->masks = calloc(n, sizeof *p->masks);
    p->active = calloc(n, sizeof *p->active);
    bool *sel = calloc(n, sizeof *sel);
    if (!p->masks || !p->active || !sel) st = cr_fail(CR_ENOMEM, "prune: out of memory");
    if (!st) st = select_layers(p, c, sel);
    for (int i = 0; !st && i < p->params.n; i++) {
        if (!sel[i]) continue;
        if (!(st = cr_prune_mask_alloc(&p->masks[i], p->params.tensors[i]))) {
            p->active[i] = &p->masks[i];
            p->selected++;
        }
    }
    free(sel);
    if (!st && p->selected == 0)
        st = cr_fail(CR_EINVAL, "prune: no layer selected (the include and exclude lists leave "
                     "no convolution weight)");
    if (st) cr_pruner_free(p);
    return st;
}

void cr_pruner_apply(const cr_pruner *p)
{
    for (int i = 0; i < p->params.n; i++)
        if (p->active[i]) cr_prune_mask_apply(p->active[i], p->params.tensors[i]);
}

void cr_pruner_mask_grads(const cr_pruner *p)
{
    for (int i = 0; i < p->params.n; i++)
        if (p->active[i] && p->params.grads[i]) cr_prune_mask_apply(p->active[i], p->params.grads[i]);
}

// @snippet pruner_prune
cr_status cr_pruner_prune(cr_pruner *p, double s)
{
    cr_status st = cr_prune_check_sparsity(s, "pruner");
    if (st) return st;
    if (p->cfg.kind == CR_PRUNE_GLOBAL) {
        const cr_tensor **w = malloc((size_t)p->selected * sizeof *w);
        cr_mask **mk = malloc((size_t)p->selected * sizeof *mk);
        int n = 0;
        if (!w || !mk) st = cr_fail(CR_ENOMEM, "pruner: out of memory");
        for (int i = 0; !st && i < p->params.n; i++)
            if (p->active[i]) {
                w[n] = p->params.tensors[i];
                mk[n++] = p->active[i];
            }
        if (!st) st = cr_prune_global(w, n, s, (const cr_mask *const *)mk, mk);
        free(w);
        free(mk);
    }
    for (int i = 0; !st && p->cfg.kind != CR_PRUNE_GLOBAL && i < p->params.n; i++) {
        cr_mask *mk = p->active[i];   /* the old mask ranks first: no weight revives */
        if (!mk) continue;
        if (p->cfg.kind == CR_PRUNE_UNSTRUCTURED)
            st = cr_prune_unstructured(p->params.tensors[i], s, mk, mk);
        else
            st = cr_prune_structured(p->params.tensors[i], p->cfg.kind == CR_PRUNE_FILTERS ? 0 : 1,
                                     p->cfg.norm, s, mk, mk);
    }
    if (!st) cr_pruner_apply(p);
    return st;
}
// @end pruner_prune

cr_status cr_pruner_attach(cr_pruner *p, cr_trainer *t)
{
    bool same = t->model == p->model && t->params.n == p->params.n;
    for (int i = 0; same && i < p->params.n; i++)
        same = t->params.tensors[i] == p->params.tensors[i];
    if (!same)
        return cr_fail(CR_EINVAL, "pruner_attach: the trainer trains another model than the "
                       "pruner's");
    t->masks = p->active;
    return CR_OK;
}

cr_status cr_pruner_iterative_epoch(cr_pruner *p, const cr_iterative_schedule *sched, int epoch,
                                    bool *pruned, double *s)
{
    double step = 0;
    cr_status st = cr_iterative_step(sched, &step);
    if (st) return st;
    if (epoch < 0) return cr_fail(CR_EINVAL, "iterative pruning: epoch %d < 0", epoch);
    if (pruned) *pruned = false;
    const int round = epoch / sched->epochs_per_iteration;
    if (epoch % sched->epochs_per_iteration != 0 || round >= sched->iterations) return CR_OK;
    double v;
    if ((st = cr_iterative_sparsity(sched, round, &v)) || (st = cr_pruner_prune(p, v))) return st;
    if (pruned) *pruned = true;
    if (s) *s = v;
    return CR_OK;
}

void cr_pruner_count(const cr_pruner *p, int i, int64_t *zeros, int64_t *total)
{
    *zeros = *total = 0;
    for (int j = 0; j < p->params.n; j++) {
        if (i >= 0 ? j != i : (i == -1 && !p->active[j])) continue;
        *zeros += cr_prune_zeros(p->params.tensors[j]);
        *total += (int64_t)p->params.tensors[j]->numel;
    }
}

/* One report line: label, zeros / total and the percentage. */
static void report_line(FILE *f, const char *label, const char *shape, int64_t z, int64_t n)
{
    fprintf(f, "%-40s %-16s %10lld / %-10lld %6.2f%%\n", label, shape, (long long)z, (long long)n,
            n ? 100.0 * (double)z / (double)n : 0.0);
}

void cr_pruner_report(const cr_pruner *p, FILE *f)
{
    int64_t z, n;
    fprintf(f, "%-40s %-16s %10s / %-10s %7s\n", "parameter", "shape", "zeros", "total", "sparsity");
    for (int i = 0; i < p->params.n; i++) {
        if (!p->active[i]) continue;
        char shape[64];
        cr_tensor_shape_str(p->params.tensors[i], shape, sizeof shape);
        cr_pruner_count(p, i, &z, &n);
        report_line(f, p->params.names[i], shape, z, n);
    }
    cr_pruner_count(p, -1, &z, &n);
    report_line(f, "pruned layers", "", z, n);
    cr_pruner_count(p, -2, &z, &n);
    report_line(f, "whole model (every parameter)", "", z, n);
}
