/* test_ch04_workspace.c — cr_conv2d_backward_workspace_bytes tells the truth.
 *
 * This program counts every byte the heap hands out (labs/heap_count.c replaces malloc,
 * calloc, realloc, aligned_alloc, posix_memalign, memalign and forwards to glibc), and
 * compares the peak that cr_conv2d_backward really holds during one call with what
 * cr_conv2d_backward_workspace_bytes promised, on every route of the backward (dX by the
 * forward convolution or by col2im, dW by the implicit GEMM, by NT GEMMs, split over the
 * depth, shared by groups) and on 1, 2 and 3 threads. Under AddressSanitizer or
 * valgrind, which replace the allocator themselves, nothing is counted and the test says
 * so. */
#include <stdio.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "conv_backward.h"
#include "heap_count.h"
#include "cr_test.h"
#include "rng.h"
#include "tensor.h"

/* Bytes the OpenMP runtime may allocate inside one call for its nested teams of one
 * thread (a team structure each); every workspace buffer of the backward is larger. */
#define RUNTIME_SLACK 8192

/* The OpenMP thread count now (1 without OpenMP). */
static int get_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* One layer of the table: what it exercises, its parameters and input size. */
typedef struct {
    const char *what;
    int64_t cin, cout, k, stride, pad, dil, groups, batch, h, w;
    cr_pad_mode mode;
} ws_case;

/* Peak heap bytes held during one cr_conv2d_backward call on the case (after a warm-up
 * call, so that the OpenMP runtime's pools exist), and the promise for it. */
static void measure(const ws_case *c, cr_rng *rng, long long *held, size_t *promised)
{
    cr_conv_params p = cr_conv_params_default(c->cin, c->cout, c->k);
    p.stride_h = p.stride_w = c->stride;
    p.dilation_h = p.dilation_w = c->dil;
    p.groups = c->groups;
    p.pad_mode = c->mode;
    cr_conv_set_padding(&p, c->pad, c->pad);
    cr_conv_shape s;
    assert_cr_ok(cr_conv_shape_init(&s, &p, c->batch, c->h, c->w));
    const int64_t xs[4] = {c->batch, c->cin, c->h, c->w};
    const int64_t ws[4] = {c->cout, c->cin / c->groups, c->k, c->k};
    const int64_t ys[4] = {c->batch, c->cout, s.h_out, s.w_out};
    cr_tensor x, w, dy, dx, dw, db;
    assert_cr_ok(cr_tensor_alloc(&x, 4, xs));
    assert_cr_ok(cr_tensor_alloc(&dx, 4, xs));
    assert_cr_ok(cr_tensor_alloc(&w, 4, ws));
    assert_cr_ok(cr_tensor_alloc(&dw, 4, ws));
    assert_cr_ok(cr_tensor_alloc(&dy, 4, ys));
    assert_cr_ok(cr_tensor_alloc(&db, 1, &p.out_channels));
    cr_tensor_fill_uniform(&x, rng, -1, 1);
    cr_tensor_fill_uniform(&w, rng, -1, 1);
    cr_tensor_fill_uniform(&dy, rng, -1, 1);
    assert_cr_ok(cr_conv2d_backward(&p, &x, &w, &dy, &dx, &dw, &db));   /* warm-up */
    const long long base = cr_heap_mark();
    assert_cr_ok(cr_conv2d_backward(&p, &x, &w, &dy, &dx, &dw, &db));
    *held = cr_heap_peak() - base;
    *promised = cr_conv2d_backward_workspace_bytes(&s);
    cr_tensor_free(&x); cr_tensor_free(&dx); cr_tensor_free(&w); cr_tensor_free(&dw);
    cr_tensor_free(&dy); cr_tensor_free(&db);
}

/* Every route of the backward, on 1, 2 and 3 threads: the bytes held at the peak are at
 * most the promise plus the runtime's small team structures (no buffer forgotten), and on
 * one thread, where the peak does not depend on timing, at least the promise (no buffer
 * counted that is not allocated). With more threads the promise is the worst case, every
 * thread's buffers live at once, which a run may or may not reach. */
static void backward_api__workspace_bytes_are_allocated(void **state)
{
    (void)state;
    static const ws_case cases[] = {
        {"3x3, dX forward, dW split over the depth", 16, 24, 3, 1, 1, 1, 1, 1, 48, 48, CR_PAD_ZEROS},
        {"3x3, batch 3, small", 5, 7, 3, 1, 1, 1, 1, 3, 9, 11, CR_PAD_ZEROS},
        {"1x1 pointwise: NT GEMMs and a fused forward", 32, 48, 1, 1, 0, 1, 1, 2, 14, 15, CR_PAD_ZEROS},
        {"3x3 stride 2: dX by col2im", 8, 12, 3, 2, 1, 1, 1, 2, 17, 16, CR_PAD_ZEROS},
        {"reflect padding: dX by col2im", 6, 10, 3, 1, 1, 1, 1, 1, 13, 12, CR_PAD_REFLECT},
        {"groups of 4: direct dX, groups shared", 32, 32, 3, 1, 1, 1, 8, 2, 12, 12, CR_PAD_ZEROS},
        {"depthwise, dilation 2", 12, 12, 3, 1, 2, 2, 12, 1, 15, 14, CR_PAD_ZEROS},
        {"1x1 stride 2: col2im dX, implicit dW", 16, 8, 1, 2, 0, 1, 1, 1, 21, 20, CR_PAD_ZEROS},
        {"32 -> 16, 3x3: dW in place (AVX-512), split", 32, 16, 3, 1, 1, 1, 1, 2, 40, 40, CR_PAD_ZEROS},
        {"2 groups of 32 -> 8, stride 2: dW in place", 64, 16, 3, 2, 1, 1, 2, 2, 20, 21, CR_PAD_REFLECT},
        {"32 -> 8, 3x3, one image: dW in place", 32, 8, 3, 1, 1, 1, 1, 1, 12, 13, CR_PAD_ZEROS},
        {"groups of 4, stride 2, reflect: dX scattered", 32, 32, 3, 2, 1, 1, 8, 2, 13, 12, CR_PAD_REFLECT},
        {"groups of 16, stride 2: dX scattered, one pair", 32, 32, 3, 2, 1, 1, 2, 1, 24, 24, CR_PAD_ZEROS},
    };
    const int threads0 = get_threads();
    cr_rng rng;
    cr_rng_seed(&rng, 20261130);
    for (int t = 1; t <= 3; t++) {
        cr_test_set_threads(t);
        for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
            long long held;
            size_t promised;
            measure(&cases[i], &rng, &held, &promised);
            print_message("%-45s %d thread(s): held %9lld B, promised %9zu B\n", cases[i].what,
                          t, held, promised);
            if ((t == 1 && held < (long long)promised) ||
                held > (long long)promised + RUNTIME_SLACK) {
                cr_test_set_threads(threads0);
                fail_msg("%s, %d thread(s): cr_conv2d_backward held %lld bytes at its peak, "
                         "cr_conv2d_backward_workspace_bytes says %zu (allowed: %sthat plus "
                         "at most %d for the OpenMP runtime)", cases[i].what, t, held, promised,
                         t == 1 ? "at least that and " : "", RUNTIME_SLACK);
            }
        }
    }
    cr_test_set_threads(threads0);
}

int main(void)
{
    /* Nothing can be counted: SKIP (exit 77), never a pass that checked nothing. */
    if (!CR_HEAP_COUNTING || !cr_heap_counting_works()) {
        printf("test_ch04_workspace: the allocator is %s: allocations are not counted, "
               "skipped\n", CR_HEAP_COUNTING ? "replaced (valgrind?)" : "a sanitizer's");
        return 77;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(backward_api__workspace_bytes_are_allocated),
    };
    return cr_run_tests("ch04_workspace", tests);
}
