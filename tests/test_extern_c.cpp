/* test_extern_c.cpp — suite lib: the library and the chapters link from C++ (and, built by
 * nvcc as test_extern_c_cuda, from CUDA), so chapter 5's kernels and any later GPU code can
 * call them. Every header is included; a function of each module is called and checked.
 * Without the extern "C" blocks in the headers this program does not link. */
#include <cmath>
#include <cstdio>
#include <cstring>

#include "args.h"
#include "atomic_file.h"
#include "augment.h"
#include "compare.h"
#include "conv_backward.h"
#include "conv_desc.h"
#include "conv_gemm.h"
#include "csv.h"
#include "dataset.h"
#include "direct.h"
#include "dtype.h"
#include "error.h"
#include "fpn.h"
#include "gemm.h"
#include "im2col.h"
#include "jpeg_io.h"
#include "json.h"
#include "layers.h"
#include "loss.h"
#include "metrics.h"
#include "model.h"
#include "optim.h"
#include "png_io.h"
#include "progress.h"
#include "prune.h"
#include "rng.h"
#include "safetensors.h"
#include "tensor.h"
#include "timing.h"
#include "train.h"

static int failures = 0;

/* Prints and counts a failed check. */
static void check(bool ok, const char *what)
{
    if (!ok) {
        std::fprintf(stderr, "FAILED: %s (%s)\n", what, cr_last_error());
        failures++;
    }
}

int main()
{
    cr_rng r;
    cr_rng_seed(&r, 7);
    cr_conv_params p = cr_conv_params_default(4, 6, 3);
    cr_conv_set_padding(&p, 1, 1);
    cr_conv_shape s;
    check(cr_conv_shape_init(&s, &p, 2, 7, 5) == CR_OK, "cr_conv_shape_init");
    cr_tensor x = {}, w = {}, b = {}, y1 = {}, y2 = {};
    check(cr_tensor_alloc4(&x, 2, 4, 7, 5) == CR_OK && cr_tensor_alloc4(&w, 6, 4, 3, 3) == CR_OK &&
              cr_tensor_alloc4(&y1, 2, 6, s.h_out, s.w_out) == CR_OK &&
              cr_tensor_alloc4(&y2, 2, 6, s.h_out, s.w_out) == CR_OK,
          "cr_tensor_alloc4");
    const int64_t bs[1] = {6};
    check(cr_tensor_alloc(&b, 1, bs) == CR_OK, "cr_tensor_alloc");
    for (size_t i = 0; i < x.numel; i++) x.data[i] = cr_rng_uniform_f(&r, -1, 1);
    for (size_t i = 0; i < w.numel; i++) w.data[i] = cr_rng_uniform_f(&r, -1, 1);
    for (size_t i = 0; i < b.numel; i++) b.data[i] = cr_rng_uniform_f(&r, -1, 1);
    check(cr_conv2d_direct(&p, &x, &w, &b, &y1) == CR_OK, "chapter 1 from C++");
    check(cr_conv2d_im2col(&p, &x, &w, &b, &y2) == CR_OK, "chapter 2 from C++");
    const cr_cmp c = cr_compare(y2.data, y1.data, y1.numel, 1e-5, 1e-5);
    check(cr_cmp_ok(&c, 1e-5) != 0, "chapter 2 equals chapter 1 from C++");
    check(cr_conv2d_fast(&p, &x, &w, &b, &y2) == CR_OK, "chapter 3 from C++");
    const cr_cmp c3 = cr_compare(y2.data, y1.data, y1.numel, 1e-5, 1e-5);
    check(cr_cmp_ok(&c3, 1e-5) != 0, "chapter 3 equals chapter 1 from C++");
    check(cr_f16_to_f32(cr_f32_to_f16(1.5f)) == 1.5f, "dtype conversions");
    cr_model m;
    cr_model_init(&m);
    check(cr_model_add_conv(&m, "c", CR_MODEL_INPUT, &p) == 0, "chapter 4's model");
    check(cr_model_add_relu(&m, "r", CR_PREV) == 1, "chapter 4's relu");
    cr_model_free(&m);
    cr_mask mk;
    check(cr_prune_mask_alloc(&mk, &w) == CR_OK &&
          cr_prune_unstructured(&w, 0.5, nullptr, &mk) == CR_OK &&
          cr_mask_count(&mk) == w.numel - w.numel / 2, "chapter 6's pruning");
    cr_mask_free(&mk);
    cr_fpn_config bad = cr_fpn_config_resnext50(0);
    cr_model_init(&m);
    check(cr_fpn_build(&m, &bad) == CR_EINVAL && std::strstr(cr_last_error(), "classes"),
          "chapter 8 refuses 0 classes");
    cr_model_free(&m);
    cr_tensor_free(&x);
    cr_tensor_free(&w);
    cr_tensor_free(&b);
    cr_tensor_free(&y1);
    cr_tensor_free(&y2);
    std::printf("%s: %d failed checks\n", failures ? "FAIL" : "OK", failures);
    return failures ? 1 : 0;
}
