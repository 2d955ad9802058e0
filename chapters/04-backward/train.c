/* train.c — chapter 4: the training step, epoch, schedule, evaluation and checkpoints
 * (see train.h). */
#include "train.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "loss.h"
#include "safetensors.h"
#include "timing.h"

cr_train_config cr_train_config_default(void)
{
    return (cr_train_config){.lr = 2e-3, .weight_decay = 1e-4, .batch = 8, .epochs = 25,
                             .warmup_epochs = 1, .seed = 1, .flips = true,
                             .ignore_index = CR_IGNORE_INDEX};
}

// @snippet lr_schedule
double cr_lr_schedule(double peak, int64_t step, int64_t total, int64_t warm)
{
    if (step < warm) return peak * (double)(step + 1) / (double)warm;
    const double t = (double)(step - warm) / (double)(total - warm > 0 ? total - warm : 1);
    return peak * 0.5 * (1.0 + cos(3.14159265358979323846 * t));
}
// @end lr_schedule

/* Checks a config's ranges, naming the field. */
static cr_status check_config(const cr_train_config *c)
{
    if (!(c->lr > 0) || !isfinite(c->lr))
        return cr_fail(CR_EINVAL, "train: lr must be a finite number > 0, got %g", c->lr);
    if (!(c->weight_decay >= 0) || !isfinite(c->weight_decay))
        return cr_fail(CR_EINVAL, "train: weight_decay must be finite and >= 0, got %g",
                       c->weight_decay);
    if (c->batch < 1) return cr_fail(CR_EINVAL, "train: batch must be >= 1, got %lld", (long long)c->batch);
    if (c->epochs < 1) return cr_fail(CR_EINVAL, "train: epochs must be >= 1, got %d", c->epochs);
    if (c->warmup_epochs < 0)
        return cr_fail(CR_EINVAL, "train: warmup_epochs must be >= 0, got %d", c->warmup_epochs);
    return CR_OK;
}

void cr_trainer_free(cr_trainer *t)
{
    cr_tensor_list_free(&t->params);
    cr_optim_free(&t->opt);
    cr_tensor_free(&t->x);
    cr_tensor_free(&t->dlogits);
    free(t->labels);
    free(t->order);
    free(t->flip);
    memset(t, 0, sizeof *t);
}

cr_status cr_trainer_init(cr_trainer *t, cr_model *m, const cr_train_config *c,
                          int64_t train_count, int64_t h, int64_t w)
{
    memset(t, 0, sizeof *t);
    cr_status s = check_config(c);
    if (s) return s;
    if (train_count < c->batch)
        return cr_fail(CR_EINVAL, "train: the train split has %lld frame%s, fewer than the batch "
                       "of %lld: an epoch would have no step", (long long)train_count,
                       train_count == 1 ? "" : "s", (long long)c->batch);
    if (h < 1 || w < 1) return cr_fail(CR_EINVAL, "train: frames of %lldx%lld", (long long)w, (long long)h);
    t->model = m;
    t->cfg = *c;
    t->train_count = train_count;
    t->frame_h = h;
    t->frame_w = w;
    t->steps_per_epoch = train_count / c->batch;
    t->total_steps = t->steps_per_epoch * c->epochs;
    t->warmup_steps = t->steps_per_epoch * c->warmup_epochs;
    const cr_optim_config oc = cr_adamw_config(c->lr, c->weight_decay);
    if ((s = cr_model_param_list(m, &t->params)) ||
        (s = cr_optim_init(&t->opt, &oc, t->params.tensors, t->params.n)) ||
        (s = cr_tensor_alloc4(&t->x, c->batch, 3, h, w))) {
        cr_trainer_free(t);
        return s;
    }
    t->labels = malloc((size_t)(c->batch * h * w) * sizeof *t->labels);
    t->order = malloc((size_t)train_count * sizeof *t->order);
    t->flip = malloc((size_t)c->batch);
    if (!t->labels || !t->order || !t->flip) {
        cr_trainer_free(t);
        return cr_fail(CR_ENOMEM, "train: out of memory");
    }
    cr_rng_seed(&t->data_rng, c->seed * 7919u + 17u);
    return CR_OK;
}

/* Multiplies t->masks[i] (where set) into ts[i] (same shape), element by element: the
 * gradients before an optimizer step, the parameters after it (chapter 6's pruning).
 * A dropped element is set to 0 rather than multiplied, so that even NaN becomes 0. */
static void apply_masks(const cr_trainer *t, cr_tensor *const *ts)
{
    for (int i = 0; t->masks && i < t->params.n; i++) {
        const cr_mask *mk = t->masks[i];
        if (!mk) continue;
        for (size_t j = 0; j < ts[i]->numel; j++)
            if (!mk->data[j]) ts[i]->data[j] = 0.0f;
    }
}

cr_status cr_train_step(cr_trainer *t, const cr_tensor *x, const int32_t *labels, double *loss)
{
    cr_model *m = t->model;
    const cr_tensor *y;
    cr_status s;
    t->lr = cr_lr_schedule(t->cfg.lr, t->step, t->total_steps, t->warmup_steps);
    // @snippet train_step
    cr_optim_set_lr(&t->opt, t->lr);
    if ((s = cr_model_forward(m, x, &y))) return s;
    if (!cr_tensor_same_shape(&t->dlogits, y)) {
        cr_tensor_free(&t->dlogits);
        if ((s = cr_tensor_alloc(&t->dlogits, 4, y->shape))) return s;
    }
    if ((s = cr_cross_entropy_fast(y, labels, t->cfg.ignore_index, loss, &t->dlogits))) return s;
    if (!isfinite(*loss))
        return cr_fail(CR_EINVAL, "loss became %s at step %lld (lr %g)", isnan(*loss) ? "NaN" : "infinite",
                       (long long)t->step + 1, t->lr);
    cr_model_zero_grad(m);
    if ((s = cr_model_backward(m, &t->dlogits))) return s;
    apply_masks(t, t->params.grads);           /* pruned weights get no gradient */
    if ((s = cr_optim_step(&t->opt, t->params.tensors,
                           (const cr_tensor *const *)t->params.grads)))
        return s;
    apply_masks(t, t->params.tensors);         /* nor weight decay, nor old momentum */
    // @end train_step
    t->step++;
    return CR_OK;
}

/* Fisher-Yates shuffle of 0..n-1 into order, from the data stream. */
static void shuffle(cr_rng *r, int64_t *order, int64_t n)
{
    for (int64_t i = 0; i < n; i++) order[i] = i;
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = cr_rng_int(r, 0, i), tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

cr_status cr_train_epoch_with(cr_trainer *t, cr_batch_fn make, void *src, cr_step_fn fn,
                              void *ctx, double *mean_loss)
{
    const int64_t B = t->cfg.batch;
    shuffle(&t->data_rng, t->order, t->train_count);
    double sum = 0;
    for (int64_t b = 0; b < t->steps_per_epoch; b++) {
        const double t0 = cr_now();
        double loss;
        cr_status s = make(src, t->order + b * B, B, &t->data_rng, &t->x, t->labels);
        if (!s) s = cr_train_step(t, &t->x, t->labels, &loss);
        if (s) return s;
        sum += loss;
        if (fn) {
            const cr_step_info info = {.epoch = t->epoch + 1, .step = t->step, .loss = loss,
                                       .lr = t->lr, .ms = (cr_now() - t0) * 1e3};
            fn(ctx, &info);
        }
    }
    t->epoch++;
    if (mean_loss) *mean_loss = sum / (double)t->steps_per_epoch;
    return CR_OK;
}

/* A cr_dataset as a data source: whole frames, a flip per frame drawn while training. */
typedef struct {
    const cr_dataset *ds;
    uint8_t *flip;   /* the trainer's flip buffer, or NULL: no flips */
} dataset_source;

/* cr_batch_fn of a dataset_source (flips drawn only when rng and flip are given). */
static cr_status dataset_batch(void *src, const int64_t *idx, int64_t n, cr_rng *rng,
                               cr_tensor *x, int32_t *labels)
{
    const dataset_source *d = src;
    const bool flips = rng && d->flip;
    if (flips)
        for (int64_t i = 0; i < n; i++) d->flip[i] = (uint8_t)cr_rng_int(rng, 0, 1);
    return cr_dataset_batch(d->ds, idx, n, flips ? d->flip : NULL, x, labels);
}

cr_status cr_train_epoch(cr_trainer *t, const cr_dataset *ds, cr_step_fn fn, void *ctx,
                         double *mean_loss)
{
    if (ds->count != t->train_count || ds->height != t->frame_h || ds->width != t->frame_w)
        return cr_fail(CR_EINVAL, "train: the split has %lld frames of %lldx%lld, the trainer "
                       "was built for %lld of %lldx%lld", (long long)ds->count,
                       (long long)ds->width, (long long)ds->height, (long long)t->train_count,
                       (long long)t->frame_w, (long long)t->frame_h);
    dataset_source src = {ds, t->cfg.flips ? t->flip : NULL};
    return cr_train_epoch_with(t, dataset_batch, &src, fn, ctx, mean_loss);
}

cr_status cr_evaluate_with(cr_model *m, int64_t count, int64_t h, int64_t w, int64_t batch,
                           cr_batch_fn make, void *src, int32_t ignore_index, double *loss,
                           cr_confusion *conf)
{
    if (batch < 1) return cr_fail(CR_EINVAL, "evaluate: batch must be >= 1, got %lld", (long long)batch);
    if (count < 1) return cr_fail(CR_EINVAL, "evaluate: the split has no frame");
    if (h < 1 || w < 1)
        return cr_fail(CR_EINVAL, "evaluate: frame size %lldx%lld", (long long)h, (long long)w);
    const int64_t B = batch < count ? batch : count;
    cr_tensor x = {0};
    int32_t *lab = malloc((size_t)(B * h * w) * sizeof *lab);
    int64_t *idx = malloc((size_t)B * sizeof *idx);
    double total = 0;
    int64_t batches = 0;
    cr_status s = lab && idx ? CR_OK : cr_fail(CR_ENOMEM, "evaluate: out of memory");
    const bool was_training = m->training;
    cr_model_train(m, false);
    for (int64_t b0 = 0; !s && b0 < count; b0 += B) {
        const int64_t nb = count - b0 < B ? count - b0 : B;
        for (int64_t i = 0; i < nb; i++) idx[i] = b0 + i;
        if (!x.data || x.shape[0] != nb) {
            cr_tensor_free(&x);
            if ((s = cr_tensor_alloc4(&x, nb, 3, h, w))) break;
        }
        const cr_tensor *y;
        double l = 0;
        if ((s = make(src, idx, nb, NULL, &x, lab)) || (s = cr_model_forward(m, &x, &y)) ||
            (loss && (s = cr_cross_entropy_fast(y, lab, ignore_index, &l, NULL))) ||
            (conf && (s = cr_confusion_add_logits(conf, y, lab, ignore_index))))
            break;
        total += l;
        batches++;
    }
    cr_model_train(m, was_training);
    cr_tensor_free(&x);
    free(lab);
    free(idx);
    if (loss) *loss = batches ? total / (double)batches : NAN;
    return s;
}

cr_status cr_evaluate(cr_model *m, const cr_dataset *ds, int64_t batch, int32_t ignore_index,
                      double *loss, cr_confusion *conf)
{
    dataset_source src = {ds, NULL};
    return cr_evaluate_with(m, ds->count, ds->height, ds->width, batch, dataset_batch, &src,
                            ignore_index, loss, conf);
}

/* ---- checkpoints ------------------------------------------------------------------------ */

#define OPT_PREFIX "optimizer.state."
#define MASK_PREFIX "mask."

/* The names of parameter i's optimizer state tensors (AdamW: exp_avg, exp_avg_sq; SGD:
 * momentum_buffer and none). */
static void state_names(const cr_trainer *t, int i, char *a, char *b, size_t len)
{
    const bool adamw = t->opt.cfg.kind == CR_OPTIM_ADAMW;
    snprintf(a, len, OPT_PREFIX "%s.%s", t->params.names[i], adamw ? "exp_avg" : "momentum_buffer");
    snprintf(b, len, OPT_PREFIX "%s.%s", t->params.names[i], adamw ? "exp_avg_sq" : "");
}

/* Formats an RNG's state as four 16-digit hex words separated by ':'. */
static void rng_hex(const cr_rng *r, char *buf, size_t len)
{
    snprintf(buf, len, "%016" PRIx64 ":%016" PRIx64 ":%016" PRIx64 ":%016" PRIx64, r->s[0],
             r->s[1], r->s[2], r->s[3]);
}

/* Parses rng_hex's format; fails naming the key. */
static cr_status rng_parse(const char *v, const char *key, const char *path, cr_rng *r)
{
    const char *p = v;
    for (int i = 0; i < 4; i++) {
        char *end;
        if (!p || !((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            break;
        r->s[i] = strtoull(p, &end, 16);
        if (end - p != 16 || (i < 3 && *end != ':') || (i == 3 && *end)) break;
        p = end + 1;
        if (i == 3) return (r->s[0] | r->s[1] | r->s[2] | r->s[3]) ? CR_OK
                     : cr_fail(CR_EFORMAT, "%s: metadata '%s' is an all-zero state", path, key);
    }
    return cr_fail(CR_EFORMAT, "%s: metadata '%s' = '%s' is not four 16-digit hex words "
                   "separated by ':'", path, key, v ? v : "");
}

cr_status cr_checkpoint_save(const cr_trainer *t, const char *path, const char *const *meta)
{
    cr_tensor_list st;
    cr_st_writer *w = NULL;
    cr_status s = cr_model_state_list(t->model, &st);
    if (s) return s;
    if ((s = cr_st_writer_new(&w))) goto done;
    for (int i = 0; i < st.n && !s; i++) s = cr_st_writer_add(w, st.names[i], st.tensors[i]);
    for (int i = 0; i < t->params.n && !s; i++) {
        char a[CR_PARAM_NAME_MAX + 64], b[CR_PARAM_NAME_MAX + 64];
        state_names(t, i, a, b, sizeof a);
        s = cr_st_writer_add(w, a, &t->opt.state1[i]);
        if (!s && t->opt.cfg.kind == CR_OPTIM_ADAMW) s = cr_st_writer_add(w, b, &t->opt.state2[i]);
    }
    for (int i = 0; t->masks && i < t->params.n && !s; i++) {
        if (!t->masks[i]) continue;
        char name[CR_PARAM_NAME_MAX + 8];
        cr_dtensor u8 = {0};
        snprintf(name, sizeof name, MASK_PREFIX "%s", t->params.names[i]);
        if (!(s = cr_mask_to_dtensor(&u8, t->masks[i]))) s = cr_st_writer_add_typed(w, name, &u8);
        cr_dtensor_free(&u8);
    }
    char v[9][96];
    rng_hex(&t->model->rng, v[0], sizeof v[0]);
    rng_hex(&t->data_rng, v[1], sizeof v[1]);
    snprintf(v[2], sizeof v[2], "%lld", (long long)t->opt.step);
    snprintf(v[3], sizeof v[3], "%lld", (long long)t->step);
    snprintf(v[4], sizeof v[4], "%d", t->epoch);
    snprintf(v[5], sizeof v[5], "%lld", (long long)t->cfg.batch);
    snprintf(v[6], sizeof v[6], "%.17g", t->cfg.lr);
    snprintf(v[7], sizeof v[7], "%.17g", t->cfg.weight_decay);
    snprintf(v[8], sizeof v[8], "%lld", (long long)t->train_count);
    const char *kv[] = {"format", "pt", "checkpoint", "conv2d-reimagined trainer 1",
                        "optimizer", t->opt.cfg.kind == CR_OPTIM_ADAMW ? "adamw" : "sgd",
                        "rng.dropout", v[0], "rng.data", v[1], "optimizer.step", v[2],
                        "scheduler.step", v[3], "epoch", v[4], "batch", v[5], "lr", v[6],
                        "weight_decay", v[7], "train_frames", v[8], NULL};
    for (int i = 0; !s && kv[i]; i += 2) s = cr_st_writer_meta(w, kv[i], kv[i + 1]);
    for (int i = 0; !s && meta && meta[i] && meta[i + 1]; i += 2)
        s = cr_st_writer_meta(w, meta[i], meta[i + 1]);
    if (!s) s = cr_st_writer_save(w, path);
done:
    cr_st_writer_free(w);
    cr_tensor_list_free(&st);
    return s;
}

/* The metadata value of key, or a failure naming it. */
static cr_status need_meta(const cr_st_file *f, const char *path, const char *key, const char **v)
{
    *v = cr_st_meta(f, key);
    return *v ? CR_OK : cr_fail(CR_EFORMAT, "%s: not a checkpoint: no metadata '%s'", path, key);
}

/* Parses a metadata integer >= 0. */
static cr_status meta_int(const cr_st_file *f, const char *path, const char *key, long long *out)
{
    const char *v;
    cr_status s = need_meta(f, path, key, &v);
    if (s) return s;
    char *end;
    *out = strtoll(v, &end, 10);
    if (end == v || *end || *out < 0)
        return cr_fail(CR_EFORMAT, "%s: metadata '%s' = '%s' is not an integer >= 0", path, key, v);
    return CR_OK;
}

/* Fails unless metadata key, as a double, equals want (what names the setting). */
static cr_status meta_same(const cr_st_file *f, const char *path, const char *key, double want)
{
    const char *v;
    cr_status s = need_meta(f, path, key, &v);
    if (s) return s;
    char *end;
    const double got = strtod(v, &end);
    if (end == v || *end) return cr_fail(CR_EFORMAT, "%s: metadata '%s' = '%s' is not a number", path, key, v);
    if (got != want)
        return cr_fail(CR_EINVAL, "%s: the checkpoint was trained with %s %.17g, this run has %.17g",
                       path, key, got, want);
    return CR_OK;
}

/* Checks the optimizer tensors of the file against t's parameters: present, same shape. */
static cr_status check_opt_tensors(const cr_trainer *t, const cr_st_file *f, const char *path,
                                   bool copy)
{
    for (int i = 0; i < t->params.n; i++) {
        char n2[2][CR_PARAM_NAME_MAX + 64];
        state_names(t, i, n2[0], n2[1], sizeof n2[0]);
        cr_tensor *dst[2] = {&t->opt.state1[i], &t->opt.state2[i]};
        for (int k = 0; k < (t->opt.cfg.kind == CR_OPTIM_ADAMW ? 2 : 1); k++) {
            if (!cr_st_has(f, n2[k]))
                return cr_fail(CR_EFORMAT, "%s: missing tensor '%s' of the optimizer", path, n2[k]);
            cr_tensor v = {0};
            cr_status s = cr_st_get(f, n2[k], &v);
            if (s) return s;
            if (!cr_tensor_same_shape(&v, dst[k])) {
                char a[64], b[64];
                cr_tensor_shape_str(&v, a, sizeof a);
                cr_tensor_shape_str(dst[k], b, sizeof b);
                cr_tensor_free(&v);
                return cr_fail(CR_EFORMAT, "%s: '%s' is %s in the file, the model expects %s",
                               path, n2[k], a, b);
            }
            if (copy) memcpy(dst[k]->data, v.data, v.numel * sizeof(float));
            cr_tensor_free(&v);
        }
    }
    /* no optimizer tensor for a parameter the model lacks */
    for (int i = 0; i < cr_st_count(f); i++) {
        const char *name = cr_st_name(f, i);
        if (strncmp(name, OPT_PREFIX, strlen(OPT_PREFIX)) != 0) continue;
        bool known = false;
        for (int j = 0; j < t->params.n && !known; j++) {
            char n2[2][CR_PARAM_NAME_MAX + 64];
            state_names(t, j, n2[0], n2[1], sizeof n2[0]);
            known = strcmp(name, n2[0]) == 0 ||
                    (t->opt.cfg.kind == CR_OPTIM_ADAMW && strcmp(name, n2[1]) == 0);
        }
        if (!known)
            return cr_fail(CR_EFORMAT, "%s: tensor '%s' belongs to no parameter of the model",
                           path, name);
    }
    return CR_OK;
}

/* Checks (copy false) or restores (copy true) t->masks from the file's "mask.NAME"
 * tensors: one for exactly the masked parameters, of their shapes, bytes 0 or 1. */
static cr_status check_masks(const cr_trainer *t, const cr_st_file *f, const char *path,
                             bool copy)
{
    for (int i = 0; i < t->params.n; i++) {
        char name[CR_PARAM_NAME_MAX + 8];
        snprintf(name, sizeof name, MASK_PREFIX "%s", t->params.names[i]);
        const bool want = t->masks && t->masks[i], has = cr_st_has(f, name);
        if (want != has)
            return cr_fail(CR_EINVAL, "%s: the checkpoint %s '%s' and this run %s", path,
                           has ? "holds the pruning mask" : "has no pruning mask",
                           name, has ? "prunes no such parameter (attach the pruner's "
                           "masks before loading)" : "prunes that parameter");
        if (!want) continue;
        cr_dtensor u8 = {0};
        cr_mask mk = {0};
        cr_status s = cr_st_get_typed(f, name, &u8);
        if (!s && u8.dtype != CR_DT_U8)
            s = cr_fail(CR_EFORMAT, "%s: mask '%s' is %s, expected U8", path, name,
                        cr_dtype_name(u8.dtype));
        if (!s && (s = cr_mask_from_dtensor(&mk, &u8))) {
            char why[256];
            snprintf(why, sizeof why, "%s", cr_last_error());
            s = cr_fail(s, "%s: '%s': %s", path, name, why);
        }
        cr_mask *dst = t->masks[i];
        if (!s && (mk.ndim != dst->ndim ||
                   memcmp(mk.shape, dst->shape, sizeof mk.shape) != 0))
            s = cr_fail(CR_EFORMAT, "%s: mask '%s' has %zu elements in another shape than "
                        "the parameter's %zu", path, name, mk.numel, dst->numel);
        if (!s && copy) memcpy(dst->data, mk.data, mk.numel);
        cr_mask_free(&mk);
        cr_dtensor_free(&u8);
        if (s) return s;
    }
    return CR_OK;
}

/* Fails naming the first tensor of f that is neither the model's (nor BatchNorm's
 * num_batches_tracked), nor under OPT_PREFIX (check_opt_tensors checks those), nor
 * "mask." + a parameter's name (check_masks checks which parameters have one). */
static cr_status check_names(const cr_trainer *t, const cr_st_file *f, const char *path)
{
    cr_tensor_list st;
    cr_status s = cr_model_state_list(t->model, &st);
    const size_t nm = strlen(MASK_PREFIX);
    for (int i = 0; !s && i < cr_st_count(f); i++) {
        const char *name = cr_st_name(f, i), *dot = strrchr(name, '.');
        const bool mask = strncmp(name, MASK_PREFIX, nm) == 0;
        bool known = (dot && strcmp(dot, ".num_batches_tracked") == 0) ||
                     strncmp(name, OPT_PREFIX, strlen(OPT_PREFIX)) == 0;
        for (int j = 0; !mask && j < st.n && !known; j++) known = strcmp(name, st.names[j]) == 0;
        for (int j = 0; mask && j < t->params.n && !known; j++)
            known = strcmp(name + nm, t->params.names[j]) == 0;
        if (!known)
            s = cr_fail(CR_EFORMAT, "%s: tensor '%s' belongs to no module of the model", path,
                        name);
    }
    cr_tensor_list_free(&st);
    return s;
}

cr_status cr_checkpoint_load(cr_trainer *t, const char *path)
{
    cr_st_file *f;
    cr_status s = cr_st_load(&f, path);
    if (s) return s;
    const char *kind;
    long long opt_step, sched_step, epoch, batch, frames;
    cr_rng rd, rdata;
    const char *want_kind = t->opt.cfg.kind == CR_OPTIM_ADAMW ? "adamw" : "sgd";
    /* everything checked first, so that a refused file changes nothing */
    if ((s = need_meta(f, path, "checkpoint", &kind)) ||
        (s = need_meta(f, path, "optimizer", &kind)))
        goto done;
    if (strcmp(kind, want_kind) != 0) {
        s = cr_fail(CR_EINVAL, "%s: the checkpoint's optimizer is %s, this run uses %s", path,
                    kind, want_kind);
        goto done;
    }
    if ((s = meta_int(f, path, "optimizer.step", &opt_step)) ||
        (s = meta_int(f, path, "scheduler.step", &sched_step)) ||
        (s = meta_int(f, path, "epoch", &epoch)) || (s = meta_int(f, path, "batch", &batch)) ||
        (s = meta_int(f, path, "train_frames", &frames)) ||
        (s = rng_parse(cr_st_meta(f, "rng.dropout"), "rng.dropout", path, &rd)) ||
        (s = rng_parse(cr_st_meta(f, "rng.data"), "rng.data", path, &rdata)) ||
        (s = meta_same(f, path, "lr", t->cfg.lr)) ||
        (s = meta_same(f, path, "weight_decay", t->cfg.weight_decay)))
        goto done;
    if (batch != t->cfg.batch || frames != t->train_count) {
        s = cr_fail(CR_EINVAL, "%s: the checkpoint was trained with batch %lld on %lld frames, "
                    "this run has batch %lld on %lld", path, batch, frames,
                    (long long)t->cfg.batch, (long long)t->train_count);
        goto done;
    }
    if (sched_step != epoch * t->steps_per_epoch || opt_step != sched_step) {
        s = cr_fail(CR_EFORMAT, "%s: %lld optimizer and %lld scheduler steps after %lld epochs "
                    "of %lld steps do not agree", path, opt_step, sched_step, epoch,
                    (long long)t->steps_per_epoch);
        goto done;
    }
    /* the names checked here, the model's load skips its own name check (prefix "") */
    if ((s = check_opt_tensors(t, f, path, false)) || (s = check_masks(t, f, path, false)) ||
        (s = check_names(t, f, path)) ||
        (s = cr_model_load_st(t->model, f, path, "")))           /* checks, then copies */
        goto done;
    check_opt_tensors(t, f, path, true);                         /* checked: cannot fail */
    check_masks(t, f, path, true);
    t->opt.step = opt_step;
    t->step = sched_step;
    t->epoch = (int)epoch;
    t->model->rng = rd;
    t->data_rng = rdata;
done:
    cr_st_free(f);
    return s;
}
