/* model_common.h — what the tests of whole networks share (test_ch05_layers.c,
 * test_ch06_exec.c, test_ch06_fpn.c, test_onnx_runtime.c, test_onnx_models.h): a seeded
 * generator, random norm parameters and inputs, a forward into a tensor of one's own, and
 * chapter 8's reduced FPN with PyTorch's weights from reference/golden. Header-only (static inline), like
 * test_onnx_models.h: no build list has to name it. Needs chapter 8's headers (fpn.h). */
#ifndef CR_TEST_MODEL_COMMON_H
#define CR_TEST_MODEL_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cr_test.h"
#include "fpn.h"
#include "model.h"
#include "rng.h"
#include "safetensors.h"

/* Seeds r from CR_SEED (else from the time and pid: cr_seed_from_env) and returns the seed. */
static inline uint64_t seed_rng(cr_rng *r)
{
    const uint64_t seed = cr_seed_from_env();
    cr_rng_seed(r, seed);
    return seed;
}

/* A new n x c x h x w tensor x, values uniform in [lo, hi). */
static inline void random_input(cr_tensor *x, int64_t n, int64_t c, int64_t h, int64_t w,
                                cr_rng *r, float lo, float hi)
{
    assert_cr_ok(cr_tensor_alloc4(x, n, c, h, w));
    cr_tensor_fill_uniform(x, r, lo, hi);
}

/* Gives every BatchNorm and GroupNorm of m random affine parameters (weight in [0.5, 1.5],
 * bias in [-0.5, 0.5]) and every BatchNorm random running statistics (mean in [-0.5, 0.5],
 * variance in [0.5, var_hi]): the defaults, 1 and 0, would make evaluation mode an identity. */
static inline void randomize_norms(cr_model *m, cr_rng *r, float var_hi)
{
    for (int i = 0; i < m->n; i++) {
        cr_module *d = &m->mods[i];
        if (d->kind != CR_MOD_BATCHNORM && d->kind != CR_MOD_GROUPNORM) continue;
        cr_tensor_fill_uniform(&d->weight, r, 0.5f, 1.5f);
        cr_tensor_fill_uniform(&d->bias, r, -0.5f, 0.5f);
        if (d->running_mean.data) cr_tensor_fill_uniform(&d->running_mean, r, -0.5f, 0.5f);
        if (d->running_var.data) cr_tensor_fill_uniform(&d->running_var, r, 0.5f, var_hi);
    }
}

/* Random weights for m (from seed), then random norm parameters and statistics (from r,
 * variance up to 1.5: randomize_norms), m left in evaluation mode. */
static inline void random_eval_params(cr_model *m, uint64_t seed, cr_rng *r)
{
    assert_cr_ok(cr_model_init_params(m, seed));
    randomize_norms(m, r, 1.5f);
    cr_model_train(m, false);
}

/* Runs m (in its current mode) on x into a new tensor out, a copy of the model's output. */
static inline void run_model(cr_model *m, const cr_tensor *x, cr_tensor *out)
{
    const cr_tensor *y;
    assert_cr_ok(cr_model_forward(m, x, &y));
    assert_cr_ok(cr_tensor_alloc(out, y->ndim, y->shape));
    memcpy(out->data, y->data, y->numel * sizeof(float));
}

/* An integer from the golden file's metadata (fails the test when absent). */
static inline int64_t golden_meta_int(const cr_st_file *f, const char *key)
{
    const char *s = cr_st_meta(f, key);
    if (!s) fail_msg("golden metadata '%s' is absent", key);
    return atoll(s);
}

/* A comma-separated list of 4 integers from the golden metadata into v. */
static inline void golden_meta_ints(const cr_st_file *f, const char *key, int64_t v[4])
{
    const char *s = cr_st_meta(f, key);
    if (!s || sscanf(s, "%lld,%lld,%lld,%lld", (long long *)&v[0], (long long *)&v[1],
                     (long long *)&v[2], (long long *)&v[3]) != 4)
        fail_msg("golden metadata '%s' is not 4 integers: %s", key, s ? s : "(absent)");
}

/* Chapter 8's reduced FPN (reference/make_golden_fpn.py), from $CR_GOLDEN_DIR: *io gets
 * fpn_reduced_io.safetensors (its input x and outputs), m the network its metadata
 * describes, with the given dropout and PyTorch's weights (fpn_reduced_state). */
static inline void golden_fpn_load(cr_model *m, cr_st_file **io, double dropout)
{
    const char *dir = getenv("CR_GOLDEN_DIR");
    if (!dir || !*dir) fail_msg("CR_GOLDEN_DIR is not set: run the tests through meson test");
    char path[1024];
    snprintf(path, sizeof path, "%s/fpn_reduced_io.safetensors", dir);
    *io = NULL;
    assert_cr_ok(cr_st_load(io, path));
    cr_fpn_config c = {0};
    c.classes = golden_meta_int(*io, "classes");
    c.stem = golden_meta_int(*io, "stem");
    golden_meta_ints(*io, "planes", c.planes);
    golden_meta_ints(*io, "blocks", c.blocks);
    c.groups = golden_meta_int(*io, "groups");
    c.width_per_group = golden_meta_int(*io, "width_per_group");
    c.pyramid = golden_meta_int(*io, "pyramid");
    c.segmentation = golden_meta_int(*io, "seg");
    c.dropout = dropout;
    cr_model_init(m);
    assert_cr_ok(cr_fpn_build(m, &c));
    snprintf(path, sizeof path, "%s/fpn_reduced_state.safetensors", dir);
    assert_cr_ok(cr_model_load(m, path));
}

#endif
