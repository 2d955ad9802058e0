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
#include "bf16_conv.h"
#include "compare.h"
#include "conv_backward.h"
#include "conv_desc.h"
#include "conv_gemm.h"
#include "csv.h"
#include "dataset.h"
#include "direct.h"
#include "dtype.h"
#include "error.h"
#include "fakequant.h"
#include "fold.h"
#include "fpn.h"
#include "gemm.h"
#include "im2col.h"
#include "int8_conv.h"
#include "int8_gemm.h"
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
#include "qat.h"
#include "rng.h"
#include "safetensors.h"
#include "scratch.h"
#include "shrink.h"
#include "sparse_conv.h"
#include "sparse_model.h"
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
    {   /* lib's scratch pool */
        size_t cap = 0;
        void *p = cr_scratch_get(100, &cap);
        check(p != nullptr && cap >= 100, "cr_scratch_get");
        cr_scratch_put(p, cap);
        check(cr_scratch_kept_bytes() >= 100, "cr_scratch_put");
        cr_scratch_release();
    }
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
    cr_csr_weight csr;
    std::memset(&csr, 0, sizeof csr);
    check(cr_csr_from_weight(&csr, &w, nullptr) == CR_OK && csr.nnz == w.numel,
          "chapter 6's CSR weight");
    check(cr_sparse_conv2d_ref(&p, &x, &csr, &b, &y2) == CR_OK, "chapter 6's sparse conv");
    const cr_cmp c6 = cr_compare(y2.data, y1.data, y1.numel, 1e-5, 1e-5);
    check(cr_cmp_ok(&c6, 1e-5) != 0, "chapter 6 (dense CSR) equals chapter 1 from C++");
    cr_csr_free(&csr);
    check(std::strcmp(cr_sparse_path_name(CR_SPARSE_PATH_CSR), "csr") == 0, "chapter 6's sparse model");
    float qs = 0;
    int32_t qz = -1;
    check(cr_qparams_calculate(-1.0f, 1.0f, 0, 255, false, CR_DT_U8, &qs, &qz) == CR_OK &&
          std::fabs(qs - 2.0f / 255.0f) < 1e-7f && qz == 127,   /* PyTorch 1.13's MinMaxObserver */
          "chapter 7's scale and zero point");
    const int8_t qa[2] = {-128, 127};
    const uint8_t qb[2] = {255, 3};
    int32_t qc = 0;
    check(cr_gemm_s8u8s32_ref(1, 1, 2, qa, 2, qb, 1, &qc, 1, 0) == CR_OK &&
          qc == -128 * 255 + 127 * 3, "chapter 7's int8 GEMM");
    check(cr_bf16_conv_set_path("nonsense") == CR_EINVAL, "chapter 7's bf16 convolution");
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
