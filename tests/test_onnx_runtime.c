/* test_onnx_runtime.c — suite ch08: the ONNX files cr_onnx_export writes, checked by
 * others' code. Two meson tests run this program:
 *   test_onnx_runtime (argument "runtime"): each model runs in ONNX Runtime (npm
 *     onnxruntime-node, through tests/test_onnx_run.js) on a random input, and its
 *     output must equal our evaluation-mode forward within relative L2 1e-4;
 *   test_onnx_checker (argument "checker"): python3-onnx's onnx.checker.check_model
 *     (full check, with strict shape inference) accepts each file
 *     (tests/test_onnx_check.py).
 * Models: every chapter-4 module kind with every padding mode (test_onnx_models.h),
 * lab 4's FCN, and the reduced FPN with PyTorch's weights (reference/golden). With
 * CR_ONNX_FULL=1 also the full-size FPN (ResNeXt-50, 11 classes, random weights) on
 * one 1 x 3 x 384 x 480 input, timed (not part of the default run: minutes here).
 * Exits 77 (SKIP) with one line when node, onnxruntime-node or python3-onnx is missing.
 * Environment (tests/meson.build sets it): CR_NODE, CR_PYTHON (the programs, empty when
 * not found), CR_ONNX_SCRIPTS (tests/), NODE_PATH (where npm put onnxruntime-node). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "compare.h"
#include "fpn.h"
#include "model_common.h"
#include "onnx_export.h"
#include "safetensors.h"
#include "test_onnx_models.h"
#include "timing.h"

#define ORT_TOL 1e-4   /* relative L2: float32 sums in another order */

static int g_runtime;  /* 1: run in ONNX Runtime; 0: python3-onnx's checker */

/* Runs argv (argv[0] a path) and returns its exit status, or -1 if it did not exit. */
static int run_prog(char *const argv[])
{
    fflush(stdout);
    fflush(stderr);
    const pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        execv(argv[0], argv);
        fprintf(stderr, "cannot run %s\n", argv[0]);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* $CR_ONNX_SCRIPTS/name into buf. */
static char *script(char *buf, size_t len, const char *name)
{
    const char *dir = getenv("CR_ONNX_SCRIPTS");
    snprintf(buf, len, "%s/%s", dir && *dir ? dir : "tests", name);
    return buf;
}

/* A fresh temporary directory into dir (fails the test if none can be made). */
static void make_tmpdir(char *dir, size_t len)
{
    const char *t = getenv("TMPDIR");
    snprintf(dir, len, "%s/cr_onnx_XXXXXX", t && *t ? t : "/tmp");
    if (!mkdtemp(dir)) fail_msg("cannot create a temporary directory under %s", t ? t : "/tmp");
}

/* Writes t's floats raw (host order, as test_onnx_run.js reads them) to path. */
static void write_raw(const char *path, const cr_tensor *t)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(t->data, sizeof(float), t->numel, f) != t->numel || fclose(f) != 0)
        fail_msg("cannot write %s", path);
}

/* Exports m for x's shape into a temporary directory and checks the file: in ONNX
 * Runtime against our evaluation-mode output, or with python3-onnx's checker. */
static void check_model(const char *what, cr_model *m, const cr_tensor *x)
{
    char dir[512], model[600], xin[600], yout[600], dims[128], tol[32], js[600], py[600];
    make_tmpdir(dir, sizeof dir);
    snprintf(model, sizeof model, "%s/%s.onnx", dir, what);
    snprintf(xin, sizeof xin, "%s/x.bin", dir);
    snprintf(yout, sizeof yout, "%s/y.bin", dir);
    const double t0 = cr_now();
    assert_cr_ok(cr_onnx_export(m, x->shape[0], x->shape[2], x->shape[3], model));
    const double t1 = cr_now();
    int rc;
    if (g_runtime) {
        const cr_tensor *y = NULL;
        cr_model_train(m, false);
        assert_cr_ok(cr_model_forward(m, x, &y));
        const double t2 = cr_now();
        struct stat st;
        printf("# %s: export %.2f s (%.1f MB), our forward %.2f s\n", what, t1 - t0,
               stat(model, &st) == 0 ? (double)st.st_size / 1e6 : -1.0, t2 - t1);
        write_raw(xin, x);
        write_raw(yout, y);
        snprintf(dims, sizeof dims, "%lld,%lld,%lld,%lld", (long long)x->shape[0],
                 (long long)x->shape[1], (long long)x->shape[2], (long long)x->shape[3]);
        snprintf(tol, sizeof tol, "%g", ORT_TOL);
        char *argv[] = {getenv("CR_NODE"), script(js, sizeof js, "test_onnx_run.js"), model, xin,
                        dims, yout, tol, NULL};
        rc = run_prog(argv);
    } else {
        char *argv[] = {getenv("CR_PYTHON"), script(py, sizeof py, "test_onnx_check.py"), model,
                        NULL};
        rc = run_prog(argv);
    }
    unlink(xin);
    unlink(yout);
    unlink(model);
    rmdir(dir);
    if (rc != 0)
        fail_msg("%s: %s exited %d", what, g_runtime ? "ONNX Runtime's comparison" :
                 "python3-onnx's checker", rc);
}

/* Every module kind, every padding mode, random weights and input. */
static void onnx__every_kind(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    printf("# seed %" PRIu64 " (CR_SEED replays)\n", seed);
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_model m;
    cr_model_init(&m);
    build_every_kind(&m);
    randomize_state(&m, &r);
    cr_tensor x = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, EK_N, EK_C, EK_H, EK_W));
    cr_tensor_fill_uniform(&x, &r, -2, 2);
    check_model("every_kind", &m, &x);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* Lab 4's FCN (bilinear half_pixel up-sampling to a skip's size). */
static void onnx__lab4_fcn(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_model m;
    assert_cr_ok(cr_model_build_fcn(&m, 11));
    randomize_state(&m, &r);
    cr_tensor x = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 3, 20, 28));
    cr_tensor_fill_uniform(&x, &r, -2, 2);
    check_model("fcn", &m, &x);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* The reduced FPN of reference/make_golden_fpn.py with PyTorch's weights, on its input. */
static void onnx__reduced_fpn(void **state)
{
    (void)state;
    cr_st_file *io = NULL;
    cr_model m;
    golden_fpn_load(&m, &io, 0.2);   /* dropout: exported as Identity (evaluation mode) */
    cr_tensor x = {0};
    assert_cr_ok(cr_st_get(io, "x", &x));
    check_model("fpn_reduced", &m, &x);
    cr_tensor_free(&x);
    cr_st_free(io);
    cr_model_free(&m);
}

/* smp's full FPN (ResNeXt-50 32x4d, 11 classes), random weights, one 384 x 480 image:
 * only with CR_ONNX_FULL=1 (the example run of lab 8's export). */
static void onnx__full_fpn(void **state)
{
    (void)state;
    const char *full = getenv("CR_ONNX_FULL");
    if (!full || strcmp(full, "1") != 0) {
        printf("# full-size FPN left out (CR_ONNX_FULL=1 runs it)\n");
        skip();
    }
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    cr_model m;
    cr_model_init(&m);
    const cr_fpn_config c = cr_fpn_config_resnext50(11);
    assert_cr_ok(cr_fpn_build(&m, &c));
    randomize_state(&m, &r);
    cr_tensor x = {0};
    assert_cr_ok(cr_tensor_alloc4(&x, 1, 3, 384, 480));
    cr_tensor_fill_uniform(&x, &r, -2, 2);
    check_model("fpn_resnext50", &m, &x);
    cr_tensor_free(&x);
    cr_model_free(&m);
}

/* 0 when the tool this run needs is there; else prints why and returns 77 (SKIP) when
 * it is missing, 1 when it is there but crashes. */
static int probe(void)
{
    char buf[600];
    const char *prog = getenv(g_runtime ? "CR_NODE" : "CR_PYTHON");
    if (!prog || !*prog || access(prog, X_OK) != 0) {
        printf("SKIP: %s not found (%s)\n", g_runtime ? "node" : "python3",
               g_runtime ? "apt-get install nodejs npm" : "apt-get install python3");
        return 77;
    }
    char *argv[] = {(char *)prog,
                    script(buf, sizeof buf, g_runtime ? "test_onnx_run.js" : "test_onnx_check.py"),
                    "--probe", NULL};
    const int rc = run_prog(argv);
    if (rc == 0 || rc == 77) return rc;   /* 77: the script said what is missing */
    printf("probing %s with %s exited %d: the tool is there but broken\n", buf, prog, rc);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "runtime") != 0 && strcmp(argv[1], "checker") != 0)) {
        fprintf(stderr, "usage: %s runtime | checker\n", argv[0]);
        return 2;
    }
    g_runtime = strcmp(argv[1], "runtime") == 0;
    const int p = probe();
    if (p) return p;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(onnx__every_kind),
        cmocka_unit_test(onnx__lab4_fcn),
        cmocka_unit_test(onnx__reduced_fpn),
        cmocka_unit_test(onnx__full_fpn),
    };
    return cr_run_tests(g_runtime ? "onnx_runtime" : "onnx_checker", tests);
}
