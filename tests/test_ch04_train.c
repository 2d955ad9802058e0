/* test_ch04_train.c — suite ch04: the training engine chapters 6 to 8 build on: the
 * segmentation metrics against NumPy (reference/make_golden_metrics.py), a ResNeXt
 * bottleneck's forward and backward against PyTorch's float64 autograd, strict loading,
 * the schedule, evaluation over a split, and checkpoints that resume bit for bit.
 *
 * Bounds: the bottleneck's outputs and running statistics within relative L2 1e-5 of
 * PyTorch (float32 against float64; observed ~1e-7), its parameter gradients within 1e-4
 * (training-mode BatchNorm subtracts nearly equal sums; both observed below 1e-6); the
 * metrics exactly (counts) or to float32 rounding (IoU stored as float32). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compare.h"
#include "cr_test.h"
#include "dataset.h"
#include "loss.h"
#include "metrics.h"
#include "model.h"
#include "rng.h"
#include "safetensors.h"
#include "train.h"

#define FWD_TOL 1e-5
#define GRAD_TOL 1e-4

/* Opens reference/golden/NAME.safetensors (from $CR_GOLDEN_DIR); fails the test if absent. */
static cr_st_file *golden(const char *name)
{
    const char *dir = getenv("CR_GOLDEN_DIR");
    if (!dir) fail_msg("CR_GOLDEN_DIR is not set (meson test sets it to reference/golden)");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    cr_st_file *f = NULL;
    if (cr_st_load(&f, path) != CR_OK)
        fail_msg("cannot read %s: %s (run /usr/bin/python3 reference/make_golden_metrics.py)",
                 path, cr_last_error());
    return f;
}

/* Reads tensor name of f into t. */
static void get(const cr_st_file *f, const char *name, cr_tensor *t)
{
    if (cr_st_get(f, name, t) != CR_OK) fail_msg("golden tensor '%s': %s", name, cr_last_error());
}

/* Float32-stored integers of t as int32 (malloc'd). */
static int32_t *as_int(const cr_tensor *t)
{
    int32_t *v = malloc(t->numel * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < t->numel; i++) v[i] = (int32_t)lrintf(t->data[i]);
    return v;
}

/* Fails unless out is within relative L2 tol of ref (same numel). */
static void expect_close(const char *what, const cr_tensor *out, const cr_tensor *ref, double tol)
{
    if (out->numel != ref->numel) fail_msg("%s: %zu values, expected %zu", what, out->numel, ref->numel);
    cr_cmp c = cr_compare(out->data, ref->data, ref->numel, tol, tol);
    if (!cr_cmp_ok(&c, tol)) {
        cr_print_faults(stderr, out->data, ref->data, ref->numel, NULL, 0, tol, tol, 5);
        fail_msg("%s: relative L2 error %.3g > %.0e", what, c.rel_l2, tol);
    }
}

/* ---- metrics ---------------------------------------------------------------------------- */

/* Confusion, per-class IoU (NaN for the two absent classes), mean IoU and pixel accuracy
 * equal NumPy's on committed predictions and labels, accumulated in two unequal parts;
 * ignored pixels do not count whatever was predicted there; argmax of logits too. */
static void metrics__golden(void **state)
{
    (void)state;
    cr_st_file *f = golden("metrics_confusion");
    const int C = atoi(cr_st_meta(f, "classes"));
    const int32_t ignore = (int32_t)atoi(cr_st_meta(f, "ignore_index"));
    cr_tensor tp = {0}, tt = {0}, conf = {0}, iou = {0}, miou = {0}, acc = {0}, lg = {0}, tl = {0},
              confl = {0};
    get(f, "pred", &tp); get(f, "truth", &tt); get(f, "conf", &conf); get(f, "iou", &iou);
    get(f, "miou", &miou); get(f, "pixel_acc", &acc); get(f, "logits", &lg);
    get(f, "truth_l", &tl); get(f, "conf_l", &confl);
    int32_t *pred = as_int(&tp), *truth = as_int(&tt), *truth_l = as_int(&tl);
    const int64_t n = (int64_t)tp.numel, half = n / 3;
    cr_confusion cm;
    assert_cr_ok(cr_confusion_init(&cm, C));
    assert_cr_ok(cr_confusion_add(&cm, pred, truth, half, ignore));      /* a split in parts */
    assert_cr_ok(cr_confusion_add(&cm, pred + half, truth + half, n - half, ignore));
    for (int i = 0; i < C * C; i++)
        if (cm.counts[i] != (int64_t)conf.data[i])
            fail_msg("confusion[%d][%d] = %lld, NumPy %g", i / C, i % C, (long long)cm.counts[i],
                     conf.data[i]);
    double got[16];
    const double mean = cr_confusion_iou(&cm, got);
    int absent = 0;
    for (int c = 0; c < C; c++) {
        if (isnan(iou.data[c]) != isnan(got[c]))
            fail_msg("class %d: IoU %g, NumPy %g (NaN: absent from truth and prediction)", c,
                     got[c], iou.data[c]);
        if (isnan(got[c])) { absent++; continue; }
        if (fabs(got[c] - iou.data[c]) > 1e-6) fail_msg("class %d: IoU %.9g, NumPy %.9g", c, got[c], iou.data[c]);
    }
    assert_int_equal(absent, 2);                 /* classes 4 and 5 (5: predicted on void only) */
    if (fabs(mean - miou.data[0]) > 1e-6) fail_msg("mean IoU %.9g, NumPy %.9g", mean, miou.data[0]);
    const double pa = cr_confusion_pixel_accuracy(&cm);
    if (fabs(pa - acc.data[0]) > 1e-6) fail_msg("pixel accuracy %.9g, NumPy %.9g", pa, acc.data[0]);
    /* the absent classes are out of the mean, not zeros in it */
    double s = 0;
    for (int c = 0; c < C; c++) s += isnan(got[c]) ? 0 : got[c];
    assert_true(fabs(mean - s / (C - 2)) < 1e-12);
    /* argmax of logits */
    cr_confusion_reset(&cm);
    assert_int_equal(cr_confusion_total(&cm), 0);
    assert_cr_ok(cr_confusion_add_logits(&cm, &lg, truth_l, ignore));
    for (int i = 0; i < C * C; i++)
        if (cm.counts[i] != (int64_t)confl.data[i])
            fail_msg("logits confusion[%d][%d] = %lld, torch.argmax %g", i / C, i % C,
                     (long long)cm.counts[i], confl.data[i]);
    /* bad labels: refused, naming value and position, nothing added */
    const int64_t before = cr_confusion_total(&cm);
    int32_t bp[3] = {0, 1, 2}, bt[3] = {0, 7, 1};
    assert_cr_fails(cr_confusion_add(&cm, bp, bt, 3, ignore), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "truth[1] = 7"));
    bt[1] = 1;
    bp[2] = -1;
    assert_cr_fails(cr_confusion_add(&cm, bp, bt, 3, ignore), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "pred[2] = -1"));
    assert_int_equal(cr_confusion_total(&cm), before);
    /* nothing counted: NaN, not 0 */
    cr_confusion_reset(&cm);
    assert_true(isnan(cr_confusion_iou(&cm, NULL)) && isnan(cr_confusion_pixel_accuracy(&cm)));
    cr_confusion_free(&cm);
    free(pred); free(truth); free(truth_l);
    cr_tensor *ts[] = {&tp, &tt, &conf, &iou, &miou, &acc, &lg, &tl, &confl};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) cr_tensor_free(ts[i]);
    cr_st_free(f);
}

/* ---- the bottleneck ---------------------------------------------------------------------- */

/* The golden file's network: stem conv 3x3 (3 -> 8) and layer1.0, a ResNeXt bottleneck. */
static void build_bottleneck_net(cr_model *m)
{
    cr_model_init(m);
    cr_conv_params p = cr_conv_params_default(3, 8, 3);
    cr_conv_set_padding(&p, 1, 1);
    assert_true(cr_model_add_conv(m, "stem", CR_MODEL_INPUT, &p) >= 0);
    if (cr_model_add_bottleneck(m, "layer1.0", CR_PREV, 8, 8, 16, 4, 2, true) < 0)
        fail_msg("bottleneck: %s", cr_last_error());
}

/* Forward (training and evaluation), backward and the running statistics of a stem conv
 * followed by a bottleneck (grouped 3x3 with stride 2, downsample branch, add, fan-out
 * of the block's input) equal PyTorch's float64 autograd; names are torchvision's. */
static void model__bottleneck_golden(void **state)
{
    (void)state;
    cr_st_file *f = golden("model_bottleneck");
    cr_model m;
    build_bottleneck_net(&m);
    cr_tensor_list st, pl;
    assert_cr_ok(cr_model_state_list(&m, &st));
    assert_int_equal(st.n, 2 + 4 + 4 * 4);   /* stem w, b; 4 convs (no bias); 4 BNs x 4 */
    for (int i = 0; i < st.n; i++) {   /* the state dict, by torchvision's names */
        cr_tensor v = {0};
        get(f, st.names[i], &v);
        if (!cr_tensor_same_shape(&v, st.tensors[i])) fail_msg("'%s': shape differs", st.names[i]);
        memcpy(st.tensors[i]->data, v.data, v.numel * sizeof(float));
        cr_tensor_free(&v);
    }
    cr_tensor x = {0}, dy = {0}, ref = {0};
    get(f, "x", &x);
    get(f, "dy", &dy);
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    get(f, "out", &ref);
    expect_close("training-mode output", y, &ref, FWD_TOL);
    cr_tensor_free(&ref);
    cr_model_zero_grad(&m);
    assert_cr_ok(cr_model_backward(&m, &dy));
    assert_cr_ok(cr_model_param_list(&m, &pl));
    assert_int_equal(pl.n, 2 + 4 + 4 * 2);   /* stem w, b; 4 convs; 4 BNs x 2 */
    for (int i = 0; i < pl.n; i++) {
        char name[CR_PARAM_NAME_MAX + 8];
        snprintf(name, sizeof name, "grad.%s", pl.names[i]);
        get(f, name, &ref);
        if (strcmp(pl.names[i], "stem.bias") == 0) {
            /* 0 in exact arithmetic: both users of the stem (conv1 and the downsample conv)
             * feed a training-mode BatchNorm, which removes a constant shift per channel */
            for (size_t k = 0; k < ref.numel; k++)
                if (fabsf(pl.grads[i]->data[k]) > 1e-5f || fabsf(ref.data[k]) > 1e-5f)
                    fail_msg("stem.bias gradient %g (PyTorch %g), expected 0",
                             pl.grads[i]->data[k], ref.data[k]);
        } else {
            expect_close(name, pl.grads[i], &ref, GRAD_TOL);
        }
        cr_tensor_free(&ref);
    }
    for (int i = 0; i < st.n; i++) {
        if (!strstr(st.names[i], "running")) continue;
        char name[CR_PARAM_NAME_MAX + 8];
        snprintf(name, sizeof name, "after.%s", st.names[i]);
        get(f, name, &ref);
        expect_close(name, st.tensors[i], &ref, FWD_TOL);
        cr_tensor_free(&ref);
    }
    cr_model_train(&m, false);
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    get(f, "out_eval", &ref);
    expect_close("evaluation-mode output", y, &ref, FWD_TOL);
    /* a shape the block cannot keep without a downsample branch is refused */
    assert_true(cr_model_add_bottleneck(&m, "layer2.0", CR_PREV, 16, 8, 32, 1, 1, false) < 0);
    assert_non_null(strstr(cr_last_error(), "downsample"));
    cr_tensor_free(&ref); cr_tensor_free(&x); cr_tensor_free(&dy);
    cr_tensor_list_free(&st);
    cr_tensor_list_free(&pl);
    cr_model_free(&m);
    cr_st_free(f);
}

/* ---- strict loading ---------------------------------------------------------------------- */

/* A conv "c" 3 -> 16 (bias [16]) and BatchNorm "bn". */
static void build_small(cr_model *m)
{
    cr_model_init(m);
    cr_conv_params p = cr_conv_params_default(3, 16, 3);
    assert_true(cr_model_add_conv(m, "c", CR_MODEL_INPUT, &p) >= 0);
    assert_true(cr_model_add_batchnorm(m, "bn", CR_PREV, 16, NULL) >= 0);
    assert_cr_ok(cr_model_init_params(m, 3));
}

/* Writes m's state dict plus one extra tensor (name, shape dims) to path; replace: the
 * extra one replaces the model's tensor of that name instead of adding to them. */
static void write_state(cr_model *m, const char *path, const char *name, int ndim,
                        const int64_t *shape)
{
    cr_tensor_list st;
    cr_st_writer *w;
    assert_cr_ok(cr_model_state_list(m, &st));
    assert_cr_ok(cr_st_writer_new(&w));
    for (int i = 0; i < st.n; i++)
        if (strcmp(st.names[i], name) != 0) assert_cr_ok(cr_st_writer_add(w, st.names[i], st.tensors[i]));
    cr_tensor t = {0};
    assert_cr_ok(cr_tensor_alloc(&t, ndim, shape));
    cr_tensor_fill(&t, 0.25f);
    assert_cr_ok(cr_st_writer_add(w, name, &t));
    assert_cr_ok(cr_st_writer_save(w, path));
    cr_st_writer_free(w);
    cr_tensor_free(&t);
    cr_tensor_list_free(&st);
}

/* Loading is strict: a [4, 4] bias for a [16] one and an unknown nosuchmodule.* key are
 * refused by name and change nothing; num_batches_tracked is accepted (skipped). */
static void model__load_strict(void **state)
{
    (void)state;
    char path[] = "/tmp/cr_ch04_strict_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    cr_model m;
    build_small(&m);
    const float w0 = m.mods[0].weight.data[0];
    const int64_t s44[2] = {4, 4}, s16[1] = {16}, s1[1] = {1};
    write_state(&m, path, "c.bias", 2, s44);
    assert_cr_fails(cr_model_load(&m, path), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "'c.bias' is [4, 4] in the file, the model expects [16]"));
    write_state(&m, path, "nosuchmodule.weight", 1, s16);
    assert_cr_fails(cr_model_load(&m, path), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "'nosuchmodule.weight' belongs to no module"));
    assert_true(m.mods[0].weight.data[0] == w0);
    write_state(&m, path, "bn.num_batches_tracked", 1, s1);   /* F32 until the reader has I64 */
    assert_cr_ok(cr_model_load(&m, path));
    write_state(&m, path, "c.bias", 1, s16);                  /* the right shape: loaded */
    assert_cr_ok(cr_model_load(&m, path));
    assert_true(m.mods[0].bias.data[7] == 0.25f);
    unlink(path);
    cr_model_free(&m);
}

/* Lab 4's FCN: 21 691 parameters for 11 classes, logits of the input's size on a 6 x 5
 * frame (odd sizes: the up-sampling follows the skip's size). */
static void model__fcn_builds(void **state)
{
    (void)state;
    cr_model m;
    assert_cr_ok(cr_model_build_fcn(&m, 11));
    assert_cr_ok(cr_model_init_params(&m, 1));
    assert_int_equal(cr_model_num_scalars(&m), 21691);
    cr_tensor x = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 2, 3, 6, 5));
    cr_rng r;
    cr_rng_seed(&r, 2);
    cr_tensor_fill_uniform(&x, &r, -1, 1);
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    assert_int_equal(y->shape[1], 11);
    assert_int_equal(y->shape[2], 6);
    assert_int_equal(y->shape[3], 5);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* ---- schedule, evaluation, training, checkpoints ------------------------------------------ */

/* Linear warm-up to the peak, then a half cosine to 0. */
static void train__schedule(void **state)
{
    (void)state;
    assert_true(fabs(cr_lr_schedule(1.0, 0, 100, 10) - 0.1) < 1e-15);
    assert_true(fabs(cr_lr_schedule(1.0, 9, 100, 10) - 1.0) < 1e-15);
    assert_true(fabs(cr_lr_schedule(1.0, 10, 100, 10) - 1.0) < 1e-15);
    assert_true(fabs(cr_lr_schedule(1.0, 55, 100, 10) - 0.5) < 1e-12);   /* half-way */
    assert_true(cr_lr_schedule(1.0, 99, 100, 10) < 1e-3);
    assert_true(fabs(cr_lr_schedule(2.0, 0, 10, 0) - 2.0) < 1e-15);      /* no warm-up */
}

enum { DS_C = 5 };

/* A synthetic split of count frames of 8 x 6 whose labels depend on the image (so the
 * net can learn), with some void pixels; free with free_ds. */
static void make_ds(cr_dataset *ds, int64_t count, uint64_t seed)
{
    const int64_t H = 6, W = 8;
    memset(ds, 0, sizeof *ds);
    ds->count = count;
    ds->height = H;
    ds->width = W;
    ds->images = malloc((size_t)(count * 3 * H * W) * sizeof(float));
    ds->labels = malloc((size_t)(count * H * W) * sizeof(int32_t));
    assert_non_null(ds->images);
    assert_non_null(ds->labels);
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int64_t i = 0; i < count * 3 * H * W; i++) ds->images[i] = cr_rng_uniform_f(&r, -1, 1);
    for (int64_t n = 0; n < count; n++)
        for (int64_t p = 0; p < H * W; p++) {
            const float v = ds->images[n * 3 * H * W + p];   /* the red channel decides */
            int32_t lab = (int32_t)((v + 1.0f) * 0.5f * DS_C);
            ds->labels[n * H * W + p] = cr_rng_int(&r, 0, 9) == 0 ? CR_IGNORE_INDEX
                                        : lab >= DS_C ? DS_C - 1 : lab;
        }
}

static void free_ds(cr_dataset *ds)
{
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* conv 3x3 (3 -> 8) + BN + ReLU + dropout + conv 1x1 (8 -> classes): small, with every
 * kind of state a checkpoint must carry (weights, BN buffers, dropout stream). */
static void build_tiny(cr_model *m, int64_t width, uint64_t seed)
{
    cr_model_init(m);
    cr_conv_params p = cr_conv_params_default(3, width, 3), h = cr_conv_params_default(width, DS_C, 1);
    cr_conv_set_padding(&p, 1, 1);
    assert_true(cr_model_add_conv(m, "enc.conv", CR_MODEL_INPUT, &p) >= 0);
    assert_true(cr_model_add_batchnorm(m, "enc.bn", CR_PREV, width, NULL) >= 0);
    assert_true(cr_model_add_relu(m, "enc.relu", CR_PREV) >= 0);
    assert_true(cr_model_add_dropout(m, "drop", CR_PREV, 0.2) >= 0);
    assert_true(cr_model_add_conv(m, "head", CR_PREV, &h) >= 0);
    assert_cr_ok(cr_model_init_params(m, seed));
}

static cr_train_config tiny_config(void)
{
    cr_train_config c = cr_train_config_default();
    c.lr = 1e-2;
    c.batch = 4;
    c.epochs = 4;
    c.seed = 5;
    return c;
}

/* Fails unless models a and b hold bit-identical state dicts and trainers a and b the same
 * optimizer moments. */
static void expect_same_state(cr_trainer *a, cr_trainer *b)
{
    cr_tensor_list sa, sb;
    assert_cr_ok(cr_model_state_list(a->model, &sa));
    assert_cr_ok(cr_model_state_list(b->model, &sb));
    assert_int_equal(sa.n, sb.n);
    for (int i = 0; i < sa.n; i++)
        if (memcmp(sa.tensors[i]->data, sb.tensors[i]->data, sa.tensors[i]->numel * sizeof(float)))
            fail_msg("'%s' differs between the run in one go and the resumed run", sa.names[i]);
    for (int i = 0; i < a->params.n; i++)
        if (memcmp(a->opt.state1[i].data, b->opt.state1[i].data, a->opt.state1[i].numel * 4) ||
            memcmp(a->opt.state2[i].data, b->opt.state2[i].data, a->opt.state2[i].numel * 4))
            fail_msg("the AdamW moments of '%s' differ", a->params.names[i]);
    assert_int_equal(a->opt.step, b->opt.step);
    cr_tensor_list_free(&sa);
    cr_tensor_list_free(&sb);
}

/* 4 epochs in one go and 2 epochs + checkpoint + resume (into a model initialised
 * differently) to 4 give bit-identical weights, BN statistics and AdamW moments; the loss
 * falls; the checkpoint carries the PyTorch names. */
static void train__resume_is_bit_identical(void **state)
{
    (void)state;
    char path[] = "/tmp/cr_ch04_ckpt_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    cr_dataset ds;
    make_ds(&ds, 10, 21);   /* 10 frames, batch 4: 2 steps per epoch, 2 frames dropped */
    const cr_train_config c = tiny_config();
    cr_model ma, mb, mc;
    cr_trainer ta, tb, tc;
    build_tiny(&ma, 8, 7);
    build_tiny(&mb, 8, 7);
    assert_cr_ok(cr_trainer_init(&ta, &ma, &c, ds.count, ds.height, ds.width));
    assert_cr_ok(cr_trainer_init(&tb, &mb, &c, ds.count, ds.height, ds.width));
    double first = NAN, last = NAN;
    for (int e = 0; e < 4; e++) {
        assert_cr_ok(cr_train_epoch(&ta, &ds, NULL, NULL, &last));
        if (e == 0) first = last;
    }
    if (!(last < first)) fail_msg("the loss did not fall in 4 epochs: %g -> %g", first, last);
    for (int e = 0; e < 2; e++) assert_cr_ok(cr_train_epoch(&tb, &ds, NULL, NULL, NULL));
    assert_cr_ok(cr_checkpoint_save(&tb, path, NULL));
    cr_trainer_free(&tb);
    cr_model_free(&mb);
    /* a fresh process's view: other initial weights, fresh streams */
    build_tiny(&mc, 8, 99);
    assert_cr_ok(cr_trainer_init(&tc, &mc, &c, ds.count, ds.height, ds.width));
    assert_cr_ok(cr_checkpoint_load(&tc, path));
    assert_int_equal(tc.epoch, 2);
    assert_int_equal(tc.step, 4);
    while (tc.epoch < c.epochs) assert_cr_ok(cr_train_epoch(&tc, &ds, NULL, NULL, NULL));
    expect_same_state(&ta, &tc);
    /* the file is a state dict PyTorch can read: model names, then optimizer.state.* */
    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    assert_true(cr_st_has(f, "enc.bn.running_var"));
    assert_true(cr_st_has(f, "optimizer.state.head.weight.exp_avg_sq"));
    assert_string_equal(cr_st_meta(f, "epoch"), "2");
    cr_st_free(f);
    unlink(path);
    cr_trainer_free(&ta); cr_trainer_free(&tc);
    cr_model_free(&ma); cr_model_free(&mc);
    free_ds(&ds);
}

/* A checkpoint of another model (8 channels wide instead of 6) is refused naming the
 * first mismatched tensor, as are another batch and another lr; the model is unchanged. */
static void train__checkpoint_mismatch(void **state)
{
    (void)state;
    char path[] = "/tmp/cr_ch04_ckpt_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    cr_dataset ds;
    make_ds(&ds, 8, 3);
    cr_train_config c = tiny_config();
    cr_model ma, mb;
    cr_trainer ta, tb;
    build_tiny(&ma, 8, 1);
    build_tiny(&mb, 6, 2);
    assert_cr_ok(cr_trainer_init(&ta, &ma, &c, ds.count, ds.height, ds.width));
    assert_cr_ok(cr_train_epoch(&ta, &ds, NULL, NULL, NULL));
    assert_cr_ok(cr_checkpoint_save(&ta, path, NULL));
    assert_cr_ok(cr_trainer_init(&tb, &mb, &c, ds.count, ds.height, ds.width));
    const float w0 = mb.mods[0].weight.data[0];
    assert_cr_fails(cr_checkpoint_load(&tb, path), CR_EFORMAT);
    if (!strstr(cr_last_error(), "'optimizer.state.enc.conv.weight.exp_avg' is [8, 3, 3, 3] "
                                 "in the file, the model expects [6, 3, 3, 3]"))
        fail_msg("message: %s", cr_last_error());
    assert_true(mb.mods[0].weight.data[0] == w0);
    assert_int_equal(tb.epoch, 0);
    cr_trainer_free(&tb);
    cr_model_free(&mb);
    /* the same model, another lr or batch */
    build_tiny(&mb, 8, 2);
    c.lr = 5e-3;
    assert_cr_ok(cr_trainer_init(&tb, &mb, &c, ds.count, ds.height, ds.width));
    assert_cr_fails(cr_checkpoint_load(&tb, path), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "lr 0.01"));
    cr_trainer_free(&tb);
    c = tiny_config();
    c.batch = 2;
    assert_cr_ok(cr_trainer_init(&tb, &mb, &c, ds.count, ds.height, ds.width));
    assert_cr_fails(cr_checkpoint_load(&tb, path), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "batch 4 on 8 frames"));
    cr_trainer_free(&tb);
    cr_model_free(&mb);
    unlink(path);
    cr_trainer_free(&ta);
    cr_model_free(&ma);
    free_ds(&ds);
}

/* A train split smaller than the batch is refused naming both numbers; an lr of 1e30
 * (finite) stops at the first non-finite loss naming the step and the lr. */
static void train__refusals(void **state)
{
    (void)state;
    cr_dataset ds;
    make_ds(&ds, 3, 4);
    cr_train_config c = tiny_config();
    cr_model m;
    cr_trainer t;
    build_tiny(&m, 8, 1);
    assert_cr_fails(cr_trainer_init(&t, &m, &c, ds.count, ds.height, ds.width), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "3 frames, fewer than the batch of 4"));
    c.lr = 0;
    c.batch = 2;
    assert_cr_fails(cr_trainer_init(&t, &m, &c, ds.count, ds.height, ds.width), CR_EINVAL);
    c.lr = 1e30;
    c.warmup_epochs = 0;
    assert_cr_ok(cr_trainer_init(&t, &m, &c, ds.count, ds.height, ds.width));
    cr_status s = CR_OK;
    for (int e = 0; e < 4 && !s; e++) s = cr_train_epoch(&t, &ds, NULL, NULL, NULL);
    assert_int_equal(s, CR_EINVAL);
    if (!strstr(cr_last_error(), "loss became NaN at step ") || !strstr(cr_last_error(), "(lr "))
        fail_msg("message: %s", cr_last_error());
    cr_trainer_free(&t);
    cr_model_free(&m);
    free_ds(&ds);
}

/* Evaluation over a split does not depend on the batch (8 frames in batches of 1, 3 and
 * 20), leaves the model's mode as it was, and counts every labelled pixel. */
static void train__evaluate_any_batch(void **state)
{
    (void)state;
    cr_dataset ds;
    make_ds(&ds, 8, 9);
    cr_model m;
    build_tiny(&m, 8, 4);
    cr_confusion c1, c3;
    assert_cr_ok(cr_confusion_init(&c1, DS_C));
    assert_cr_ok(cr_confusion_init(&c3, DS_C));
    double l1, l3;
    assert_cr_ok(cr_evaluate(&m, &ds, 1, CR_IGNORE_INDEX, &l1, &c1));
    assert_true(m.training);
    assert_cr_ok(cr_evaluate(&m, &ds, 3, CR_IGNORE_INDEX, &l3, &c3));
    assert_memory_equal(c1.counts, c3.counts, sizeof(int64_t) * DS_C * DS_C);
    int64_t labelled = 0;
    for (int64_t i = 0; i < ds.count * ds.height * ds.width; i++) labelled += ds.labels[i] >= 0;
    assert_int_equal(cr_confusion_total(&c1), labelled);
    cr_confusion_reset(&c3);
    assert_cr_ok(cr_evaluate(&m, &ds, 20, CR_IGNORE_INDEX, NULL, &c3));
    assert_memory_equal(c1.counts, c3.counts, sizeof(int64_t) * DS_C * DS_C);
    assert_true(fabs(l1 - l3) < 1e-3 * fabs(l1));   /* means of batch means: close, not equal */
    cr_confusion_free(&c1);
    cr_confusion_free(&c3);
    cr_model_free(&m);
    free_ds(&ds);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(metrics__golden),
        cmocka_unit_test(model__bottleneck_golden),
        cmocka_unit_test(model__load_strict),
        cmocka_unit_test(model__fcn_builds),
        cmocka_unit_test(train__schedule),
        cmocka_unit_test(train__resume_is_bit_identical),
        cmocka_unit_test(train__checkpoint_mismatch),
        cmocka_unit_test(train__refusals),
        cmocka_unit_test(train__evaluate_any_batch),
    };
    return cr_run_tests("ch04_train", tests);
}
