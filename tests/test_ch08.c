/* test_ch08.c — suite ch08: the FPN + ResNeXt network equals smp's, built in PyTorch.
 *
 * Golden data from reference/make_golden_fpn.py: the full-size state dict's names and
 * shapes (smp.FPN("resnext50_32x4d"), 12 classes), and a width-reduced variant of the
 * same structure with its weights, input, outputs (evaluation and training mode) and
 * every parameter's gradient. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "cr_test.h"
#include "fpn.h"
#include "safetensors.h"

#define Y_TOL 1e-4     /* outputs, relative L2 (float32 sums in another order) */
#define GRAD_TOL 1e-4  /* parameter gradients, relative L2 */

/* $CR_GOLDEN_DIR/name into buf; fails the test when the variable is unset. */
static const char *golden_path(char *buf, size_t len, const char *name)
{
    const char *dir = getenv("CR_GOLDEN_DIR");
    if (!dir || !*dir) fail_msg("CR_GOLDEN_DIR is not set: run the tests through meson test");
    snprintf(buf, len, "%s/%s", dir, name);
    return buf;
}

/* Fails unless out is within relative L2 tol of ref, printing the first faults. */
static void expect_close(const char *what, const cr_tensor *out, const cr_tensor *ref, double tol)
{
    if (out->numel != ref->numel)
        fail_msg("%s: %zu values, expected %zu", what, out->numel, ref->numel);
    cr_cmp c = cr_compare(out->data, ref->data, ref->numel, tol, tol);
    if (!cr_cmp_ok(&c, tol)) {
        cr_print_faults(stderr, out->data, ref->data, ref->numel, NULL, 0, tol, tol, 5);
        fail_msg("%s: relative L2 error %.3g > %.0e (max abs %.3g at %zu)", what, c.rel_l2, tol,
                 c.max_abs, c.worst);
    }
}

/* A comma-separated list of 4 integers from the golden metadata into v. */
static void meta_ints(const cr_st_file *f, const char *key, int64_t v[4])
{
    const char *s = cr_st_meta(f, key);
    if (!s || sscanf(s, "%lld,%lld,%lld,%lld", (long long *)&v[0], (long long *)&v[1],
                     (long long *)&v[2], (long long *)&v[3]) != 4)
        fail_msg("golden metadata '%s' is not 4 integers: %s", key, s ? s : "(absent)");
}

static int64_t meta_int(const cr_st_file *f, const char *key)
{
    const char *s = cr_st_meta(f, key);
    if (!s) fail_msg("golden metadata '%s' is absent", key);
    return atoll(s);
}

/* The reduced variant's config, read from the golden file's metadata (dropout off). */
static cr_fpn_config reduced_config(const cr_st_file *f)
{
    cr_fpn_config c = {0};
    c.classes = meta_int(f, "classes");
    c.stem = meta_int(f, "stem");
    meta_ints(f, "planes", c.planes);
    meta_ints(f, "blocks", c.blocks);
    c.groups = meta_int(f, "groups");
    c.width_per_group = meta_int(f, "width_per_group");
    c.pyramid = meta_int(f, "pyramid");
    c.segmentation = meta_int(f, "seg");
    c.dropout = 0.0;
    return c;
}

/* Our full-size state dict has exactly smp's names and shapes, in PyTorch's order
 * (num_batches_tracked aside: we keep no step counter), and its parameter count. */
static void fpn__state_dict_matches_smp(void **state)
{
    (void)state;
    cr_model m;
    cr_model_init(&m);
    const cr_fpn_config c = cr_fpn_config_resnext50(12);
    assert_cr_ok(cr_fpn_build(&m, &c));
    cr_tensor_list l = {0};
    assert_cr_ok(cr_model_state_list(&m, &l));
    char path[1024], line[512];
    FILE *f = fopen(golden_path(path, sizeof path, "fpn_resnext50_state_dict.txt"), "r");
    if (!f) fail_msg("cannot open %s (run /usr/bin/python3 reference/make_golden_fpn.py)", path);
    int i = 0;
    int64_t params = 0, golden_params = 0;
    while (fgets(line, sizeof line, f)) {
        char name[256], dims[128] = "";
        if (sscanf(line, "%255s %127s", name, dims) < 1) fail_msg("%s: bad line '%s'", path, line);
        if (strstr(name, "num_batches_tracked")) continue;   /* a rank-0 I64 counter */
        if (!*dims) fail_msg("%s: no shape for '%s'", path, name);
        if (i >= l.n) fail_msg("our state dict ends after %d entries; smp has '%s' next", i, name);
        if (strcmp(l.names[i], name) != 0)
            fail_msg("state dict entry %d: ours is '%s', smp's is '%s'", i, l.names[i], name);
        char ours[128] = "";
        for (int d = 0; d < l.tensors[i]->ndim; d++)
            snprintf(ours + strlen(ours), sizeof ours - strlen(ours), "%s%lld", d ? "," : "",
                     (long long)l.tensors[i]->shape[d]);
        if (strcmp(ours, dims) != 0)
            fail_msg("'%s': our shape [%s], smp's [%s]", name, ours, dims);
        int64_t numel = 1;
        for (char *p = dims; p; p = strchr(p, ',')) numel *= atoll(*p == ',' ? ++p : p);
        if (!strstr(name, "running_")) golden_params += numel;
        i++;
    }
    fclose(f);
    if (i != l.n) fail_msg("our state dict has %d entries, smp's %d", l.n, i);
    params = cr_model_num_scalars(&m);
    if (params != golden_params)
        fail_msg("%lld trainable scalars, smp's FPN has %lld", (long long)params,
                 (long long)golden_params);
    cr_tensor_list_free(&l);
    cr_model_free(&m);
}

/* Reads tensor name of f into a fresh tensor t. */
static void get(const cr_st_file *f, const char *name, cr_tensor *t)
{
    assert_cr_ok(cr_st_get(f, name, t));
}

/* The reduced network with PyTorch's weights: evaluation output, training output (batch
 * statistics), every parameter gradient and the updated running statistics match. */
static void fpn__reduced_matches_pytorch(void **state)
{
    (void)state;
    char path[1024];
    cr_st_file *io = NULL;
    assert_cr_ok(cr_st_load(&io, golden_path(path, sizeof path, "fpn_reduced_io.safetensors")));
    const cr_fpn_config c = reduced_config(io);
    cr_model m;
    cr_model_init(&m);
    assert_cr_ok(cr_fpn_build(&m, &c));
    assert_cr_ok(cr_model_load(&m, golden_path(path, sizeof path, "fpn_reduced_state.safetensors")));

    cr_tensor x = {0}, y_eval = {0}, y_train = {0}, dy = {0};
    get(io, "x", &x);
    get(io, "y_eval", &y_eval);
    get(io, "y_train", &y_train);
    get(io, "dy", &dy);
    const cr_tensor *y = NULL;
    cr_model_train(&m, false);
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    expect_close("evaluation-mode output", y, &y_eval, Y_TOL);
    cr_model_train(&m, true);
    assert_cr_ok(cr_model_forward(&m, &x, &y));
    expect_close("training-mode output", y, &y_train, Y_TOL);
    cr_model_zero_grad(&m);
    assert_cr_ok(cr_model_backward(&m, &dy));

    cr_tensor_list l = {0};
    assert_cr_ok(cr_model_state_list(&m, &l));
    int grads = 0, stats = 0;
    for (int i = 0; i < l.n; i++) {
        char key[CR_PARAM_NAME_MAX + 16];
        cr_tensor want = {0};
        if (l.grads[i]) {
            snprintf(key, sizeof key, "grad.%s", l.names[i]);
            get(io, key, &want);
            expect_close(key, l.grads[i], &want, GRAD_TOL);
            grads++;
        } else {
            snprintf(key, sizeof key, "after.%s", l.names[i]);
            get(io, key, &want);
            expect_close(key, l.tensors[i], &want, Y_TOL);
            stats++;
        }
        cr_tensor_free(&want);
    }
    assert_true(grads > 50 && stats > 10);
    cr_tensor_list_free(&l);
    cr_tensor_free(&x);
    cr_tensor_free(&y_eval);
    cr_tensor_free(&y_train);
    cr_tensor_free(&dy);
    cr_model_free(&m);
    cr_st_free(io);
}

/* A config that cannot be built is refused, naming the field. */
static void fpn__bad_config_refused(void **state)
{
    (void)state;
    static const char *const fields[] = {"segmentation", "classes", "blocks[2]", "dropout"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++) {
        cr_fpn_config c = cr_fpn_config_resnext50(11);
        switch (i) {
        case 0: c.segmentation = 48; break;   /* GroupNorm(32) needs a multiple of 32 */
        case 1: c.classes = 0; break;
        case 2: c.blocks[2] = 0; break;
        default: c.dropout = 1.0; break;
        }
        cr_model m;
        cr_model_init(&m);
        assert_cr_fails(cr_fpn_build(&m, &c), CR_EINVAL);
        if (!strstr(cr_last_error(), fields[i]))
            fail_msg("the message does not name '%s': %s", fields[i], cr_last_error());
        cr_model_free(&m);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fpn__bad_config_refused),
        cmocka_unit_test(fpn__state_dict_matches_smp),
        cmocka_unit_test(fpn__reduced_matches_pytorch),
    };
    return cr_run_tests("ch08", tests);
}
