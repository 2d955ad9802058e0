/* test_ch06_prune.c — suite ch06: chapter 6's pruning. Masks equal torch.nn.utils.prune's
 * (l1_unstructured, ln_structured with n = 2 and 1 on dims 0 and 1, global_unstructured)
 * and the original project's threshold rule (reference/make_golden_prune.py); exact zero
 * counts and the smallest-first order on random shapes with ties (fresh seed, CR_SEED
 * replays); the iterative schedule's sequence for the original's defaults and Zhu &
 * Gupta's cubic one; a pruned model through chapter 4's trainer (AdamW with weight decay
 * and momentum leaves pruned weights at exactly zero), checkpoints that carry the masks,
 * and clear errors on bad input.
 *
 * Bounds: masks and counts exactly; slice norms within 1e-12 relative of torch.norm in
 * float64 (our sums run in another order); schedules exactly (the original's) or within
 * 1e-15 (the cubic: Python's ** 3 against x * x * x). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cr_test.h"
#include "dataset.h"
#include "dtype.h"
#include "model.h"
#include "prune.h"
#include "rng.h"
#include "safetensors.h"
#include "train.h"

static const double SPARSITIES[] = {0.3, 0.5, 0.7};

/* Opens reference/golden/NAME.safetensors (from $CR_GOLDEN_DIR); fails the test if absent. */
static cr_st_file *golden(const char *name)
{
    const char *dir = getenv("CR_GOLDEN_DIR");
    if (!dir) fail_msg("CR_GOLDEN_DIR is not set (meson test sets it to reference/golden)");
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    cr_st_file *f = NULL;
    if (cr_st_load(&f, path) != CR_OK)
        fail_msg("cannot read %s: %s (run /usr/bin/python3 reference/make_golden_prune.py)",
                 path, cr_last_error());
    return f;
}

/* Reads the float tensor name of f into t. */
static void get(const cr_st_file *f, const char *name, cr_tensor *t)
{
    if (cr_st_get(f, name, t) != CR_OK) fail_msg("golden tensor '%s': %s", name, cr_last_error());
}

/* Reads the U8 mask name of f into m. */
static void get_mask(const cr_st_file *f, const char *name, cr_mask *m)
{
    cr_dtensor d = {0};
    if (cr_st_get_typed(f, name, &d) != CR_OK || cr_mask_from_dtensor(m, &d) != CR_OK)
        fail_msg("golden mask '%s': %s", name, cr_last_error());
    cr_dtensor_free(&d);
}

/* Fails unless masks got and want are equal, naming the first differing element. */
static void expect_mask(const char *what, const cr_mask *got, const cr_mask *want)
{
    if (got->numel != want->numel) fail_msg("%s: %zu elements, expected %zu", what, got->numel, want->numel);
    for (size_t i = 0; i < got->numel; i++)
        if (got->data[i] != want->data[i])
            fail_msg("%s: element %zu is %u, PyTorch's mask has %u (%zu of %zu kept, PyTorch %zu)",
                     what, i, got->data[i], want->data[i], cr_mask_count(got), got->numel,
                     cr_mask_count(want));
}

/* Number of dropped elements of m. */
static int64_t dropped(const cr_mask *m)
{
    return (int64_t)(m->numel - cr_mask_count(m));
}

/* ---- prune_select: unstructured and global masks ------------------------------------------ */

/* l1_unstructured's masks on three weights at three sparsities, exactly int(n * s) zeros. */
static void prune_select__golden_l1_unstructured(void **state)
{
    (void)state;
    cr_st_file *f = golden("prune_unstructured");
    const char *names[] = {"w_a", "w_b", "w_c"};
    for (int i = 0; i < 3; i++) {
        cr_tensor w = {0};
        get(f, names[i], &w);
        for (int j = 0; j < 3; j++) {
            char key[64];
            snprintf(key, sizeof key, "l1.%s.%g", names[i], SPARSITIES[j]);
            cr_mask want = {0}, got = {0};
            get_mask(f, key, &want);
            assert_cr_ok(cr_prune_mask_alloc(&got, &w));
            assert_cr_ok(cr_prune_unstructured(&w, SPARSITIES[j], NULL, &got));
            expect_mask(key, &got, &want);
            assert_int_equal(dropped(&got), (int64_t)((double)w.numel * SPARSITIES[j]));
            cr_mask_free(&want);
            cr_mask_free(&got);
        }
        cr_tensor_free(&w);
    }
    cr_st_free(f);
}

/* global_unstructured over three layers: one ranking, the layers end unequal. */
static void prune_select__golden_global(void **state)
{
    (void)state;
    cr_st_file *f = golden("prune_global");
    cr_tensor w[3] = {{0}};
    cr_mask got[3] = {{0}}, prev[3] = {{0}};
    const cr_tensor *wp[3];
    cr_mask *gp[3];
    const cr_mask *pp[3];
    for (int i = 0; i < 3; i++) {
        char key[16];
        snprintf(key, sizeof key, "g%d", i);
        get(f, key, &w[i]);
        assert_cr_ok(cr_prune_mask_alloc(&got[i], &w[i]));
        assert_cr_ok(cr_prune_mask_alloc(&prev[i], &w[i]));
        wp[i] = &w[i];
        gp[i] = &got[i];
        pp[i] = &prev[i];
    }
    for (int j = 0; j < 3; j++) {
        /* without prev, and with an all-kept prev given for every tensor */
        for (int with_prev = 0; with_prev < 2; with_prev++) {
            assert_cr_ok(cr_prune_global(wp, 3, SPARSITIES[j], with_prev ? pp : NULL, gp));
            int64_t zeros = 0, total = 0, per[3];
            for (int i = 0; i < 3; i++) {
                char key[64];
                snprintf(key, sizeof key, "global.g%d.%g", i, SPARSITIES[j]);
                cr_mask want = {0};
                get_mask(f, key, &want);
                expect_mask(key, &got[i], &want);
                cr_mask_free(&want);
                per[i] = dropped(&got[i]);
                zeros += per[i];
                total += (int64_t)w[i].numel;
            }
            assert_int_equal(zeros, (int64_t)((double)total * SPARSITIES[j]));
            if (per[0] * (int64_t)w[1].numel == per[1] * (int64_t)w[0].numel &&
                per[1] * (int64_t)w[2].numel == per[2] * (int64_t)w[1].numel)
                fail_msg("global pruning at %g left every layer at the same sparsity", SPARSITIES[j]);
        }
    }
    for (int i = 0; i < 3; i++) {
        cr_tensor_free(&w[i]);
        cr_mask_free(&got[i]);
        cr_mask_free(&prev[i]);
    }
    cr_st_free(f);
}

/* Sort key of the independent reference below: magnitude, then index. */
typedef struct {
    double mag;
    int64_t idx;
} ranked;

static int by_mag_then_index(const void *a, const void *b)
{
    const ranked *x = a, *y = b;
    if (x->mag != y->mag) return x->mag < y->mag ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* On random shapes and sparsities (0 and 1 included), with magnitudes drawn from a few
 * levels so that ties are many: exactly int(n * s) dropped, and they are the first
 * int(n * s) of a full sort by (|w|, index) — a different algorithm from the
 * quickselect under test. */
static void prune_select__exact_count_random(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    const int cases = cr_test_count(300);
    for (int c = 0; c < cases; c++) {
        const int ndim = (int)cr_rng_int(&r, 1, 4);
        int64_t shape[4];
        for (int d = 0; d < ndim; d++) shape[d] = cr_rng_int(&r, 1, d < 2 ? 9 : 5);
        cr_tensor w = {0};
        assert_cr_ok(cr_tensor_alloc(&w, ndim, shape));
        const int levels = (int)cr_rng_int(&r, 1, 40);   /* 1: every magnitude tied */
        for (size_t i = 0; i < w.numel; i++)
            w.data[i] = (float)cr_rng_int(&r, 0, levels) / (float)levels *
                        (cr_rng_int(&r, 0, 1) ? 1.0f : -1.0f);
        const int pick = (int)cr_rng_int(&r, 0, 9);
        const double s = pick == 0 ? 0.0 : pick == 1 ? 1.0 : cr_rng_uniform(&r);
        cr_mask m = {0};
        assert_cr_ok(cr_prune_mask_alloc(&m, &w));
        assert_cr_ok(cr_prune_unstructured(&w, s, NULL, &m));
        const int64_t n = (int64_t)w.numel, k = (int64_t)((double)n * s);
        ranked *ref = malloc((size_t)n * sizeof *ref);
        assert_non_null(ref);
        for (int64_t i = 0; i < n; i++) ref[i] = (ranked){fabs((double)w.data[i]), i};
        qsort(ref, (size_t)n, sizeof *ref, by_mag_then_index);
        for (int64_t i = 0; i < n; i++)
            if (m.data[ref[i].idx] != (i >= k))
                fail_msg("seed %llu, case %d: %lld elements, s %.6f (k %lld): element %lld "
                         "(|w| %g, rank %lld) is %s", (unsigned long long)seed, c, (long long)n, s,
                         (long long)k, (long long)ref[i].idx, ref[i].mag, (long long)i,
                         m.data[ref[i].idx] ? "kept" : "dropped");
        assert_int_equal(dropped(&m), k);
        free(ref);
        cr_mask_free(&m);
        cr_tensor_free(&w);
    }
}

/* Raising the sparsity with the old mask as prev never revives a weight, even when the
 * dropped weights have grown back (no trainer kept them at zero); lowering it is exact too. */
static void prune_select__prev_ranks_first(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int c = 0; c < cr_test_count(50); c++) {
        cr_tensor w = {0};
        assert_cr_ok(cr_tensor_alloc4(&w, cr_rng_int(&r, 1, 8), cr_rng_int(&r, 1, 8), 3, 3));
        cr_tensor_fill_uniform(&w, &r, -1, 1);
        cr_mask a = {0}, b = {0};
        assert_cr_ok(cr_prune_mask_alloc(&a, &w));
        assert_cr_ok(cr_prune_mask_alloc(&b, &w));
        const double s1 = cr_rng_uniform(&r) * 0.6, s2 = s1 + cr_rng_uniform(&r) * 0.4;
        assert_cr_ok(cr_prune_unstructured(&w, s1, NULL, &a));
        for (size_t i = 0; i < w.numel; i++)   /* the dropped ones now the largest */
            if (!a.data[i]) w.data[i] = 10.0f + (float)i;
        assert_cr_ok(cr_prune_unstructured(&w, s2, &a, &b));
        for (size_t i = 0; i < w.numel; i++)
            if (!a.data[i] && b.data[i])
                fail_msg("seed %llu: element %zu dropped at %.4f revived at %.4f",
                         (unsigned long long)seed, i, s1, s2);
        assert_int_equal(dropped(&b), (int64_t)((double)w.numel * s2));
        assert_cr_ok(cr_prune_unstructured(&w, s2, &a, &a));   /* in place: out == prev */
        expect_mask("in place", &a, &b);
        cr_mask_free(&a);
        cr_mask_free(&b);
        cr_tensor_free(&w);
    }
}

/* cr_prune_select_smallest on hand-made scores: ties go lowest index first. */
static void prune_select__ties_by_index(void **state)
{
    (void)state;
    const double score[] = {0.5, 0.2, 0.5, 0.2, 0.9, 0.5};
    uint8_t keep[6];
    const uint8_t want3[] = {0, 0, 1, 0, 1, 1};   /* 0.2, 0.2, then the first 0.5 */
    assert_cr_ok(cr_prune_select_smallest(score, 6, 3, keep));
    assert_memory_equal(keep, want3, 6);
    const uint8_t want1[] = {1, 0, 1, 1, 1, 1};
    assert_cr_ok(cr_prune_select_smallest(score, 6, 1, keep));
    assert_memory_equal(keep, want1, 6);
    const uint8_t want5[] = {0, 0, 0, 0, 1, 0};
    assert_cr_ok(cr_prune_select_smallest(score, 6, 5, keep));
    assert_memory_equal(keep, want5, 6);
}

/* ---- channel_norms: structured masks ---------------------------------------------------- */

/* The slice norms equal torch.norm's (float64) for n = 2, 1 along dims 0 and 1. */
static void channel_norms__golden_norms(void **state)
{
    (void)state;
    cr_st_file *f = golden("prune_structured");
    const char *names[] = {"w_s", "w_r"};
    for (int i = 0; i < 2; i++) {
        cr_tensor w = {0};
        get(f, names[i], &w);
        for (int p = 1; p <= 2; p++)
            for (int dim = 0; dim < 2; dim++) {
                char key[64];
                snprintf(key, sizeof key, "norm%d.d%d.%s", p, dim, names[i]);
                cr_dtensor ref = {0};
                assert_cr_ok(cr_st_get_typed(f, key, &ref));
                const double *want = cr_dtensor_f64(&ref);
                assert_non_null(want);
                double got[64];
                assert_true(ref.numel == (size_t)w.shape[dim] && ref.numel <= 64);
                assert_cr_ok(cr_prune_channel_scores(&w, dim, p == 2 ? CR_PRUNE_L2 : CR_PRUNE_L1,
                                                     NULL, got));
                for (size_t c = 0; c < ref.numel; c++)
                    if (!(fabs(got[c] - want[c]) <= 1e-12 * want[c]))
                        fail_msg("%s[%zu] = %.17g, torch.norm %.17g", key, c, got[c], want[c]);
                cr_dtensor_free(&ref);
            }
        cr_tensor_free(&w);
    }
    cr_st_free(f);
}

/* ln_structured's masks (n = 2 and 1, dim 0 and 1) at three sparsities. */
static void channel_norms__golden_ln_structured(void **state)
{
    (void)state;
    cr_st_file *f = golden("prune_structured");
    const char *names[] = {"w_s", "w_r"};
    for (int i = 0; i < 2; i++) {
        cr_tensor w = {0};
        get(f, names[i], &w);
        for (int p = 1; p <= 2; p++)
            for (int dim = 0; dim < 2; dim++)
                for (int j = 0; j < 3; j++) {
                    char key[64];
                    snprintf(key, sizeof key, "ln%d.d%d.%s.%g", p, dim, names[i], SPARSITIES[j]);
                    cr_mask want = {0}, got = {0};
                    get_mask(f, key, &want);
                    assert_cr_ok(cr_prune_mask_alloc(&got, &w));
                    assert_cr_ok(cr_prune_structured(&w, dim, p == 2 ? CR_PRUNE_L2 : CR_PRUNE_L1,
                                                     SPARSITIES[j], NULL, &got));
                    expect_mask(key, &got, &want);
                    cr_mask_free(&want);
                    cr_mask_free(&got);
                }
        cr_tensor_free(&w);
    }
    cr_st_free(f);
}

/* Random shapes: exactly int(C * s) whole slices dropped, every other slice whole, and no
 * dropped slice has a larger L1 norm than a kept one (norms summed here, in float). */
static void channel_norms__random_whole_slices(void **state)
{
    (void)state;
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int c = 0; c < cr_test_count(100); c++) {
        const int ndim = (int)cr_rng_int(&r, 2, 4), dim = (int)cr_rng_int(&r, 0, 1);
        int64_t shape[4];
        for (int d = 0; d < ndim; d++) shape[d] = cr_rng_int(&r, 1, 7);
        cr_tensor w = {0};
        assert_cr_ok(cr_tensor_alloc(&w, ndim, shape));
        cr_tensor_fill_uniform(&w, &r, -1, 1);
        const double s = cr_rng_uniform(&r);
        cr_mask m = {0};
        assert_cr_ok(cr_prune_mask_alloc(&m, &w));
        assert_cr_ok(cr_prune_structured(&w, dim, CR_PRUNE_L1, s, NULL, &m));
        const int64_t C = shape[dim], k = (int64_t)((double)C * s);
        int64_t inner = 1;
        for (int d = dim + 1; d < ndim; d++) inner *= shape[d];
        const int64_t outer = dim == 0 ? 1 : shape[0];
        int64_t ndrop = 0;
        double max_dropped = -1, min_kept = INFINITY;
        for (int64_t ch = 0; ch < C; ch++) {
            int64_t kept = 0;
            double l1 = 0;
            for (int64_t o = 0; o < outer; o++)
                for (int64_t j = 0; j < inner; j++) {
                    const int64_t at = (o * C + ch) * inner + j;
                    kept += m.data[at];
                    l1 += fabs((double)w.data[at]);
                }
            if (kept != 0 && kept != outer * inner)
                fail_msg("seed %llu, case %d: slice %lld of dim %d is partly kept (%lld of %lld)",
                         (unsigned long long)seed, c, (long long)ch, dim, (long long)kept,
                         (long long)(outer * inner));
            if (!kept) { ndrop++; if (l1 > max_dropped) max_dropped = l1; }
            else if (l1 < min_kept) min_kept = l1;
        }
        if (ndrop != k)
            fail_msg("seed %llu, case %d: %lld slices dropped, expected int(%lld * %.6f) = %lld",
                     (unsigned long long)seed, c, (long long)ndrop, (long long)C, s, (long long)k);
        if (max_dropped > min_kept * (1 + 1e-12))
            fail_msg("seed %llu, case %d: a dropped slice has L1 %.9g > a kept one's %.9g",
                     (unsigned long long)seed, c, max_dropped, min_kept);
        cr_mask_free(&m);
        cr_tensor_free(&w);
    }
}

/* ---- iterative_schedule and cubic_schedule ------------------------------------------------ */

/* The original's defaults (0 -> 0.9, 14 rounds of 3 epochs): step 0.9 / (15 / 3 - 1) =
 * 0.225, so 0, 0.225, 0.45, 0.675, then 0.9 for the ten remaining rounds; equal to the
 * original's Python for it and three other configurations. */
static void iterative_schedule__original_defaults(void **state)
{
    (void)state;
    const cr_iterative_schedule d = cr_iterative_schedule_default();
    assert_true(d.initial == 0.0 && d.final == 0.9 && d.iterations == 14 && d.epochs_per_iteration == 3);
    double step;
    assert_cr_ok(cr_iterative_step(&d, &step));
    assert_true(fabs(step - 0.225) < 1e-15);
    const double hand[14] = {0, 0.225, 0.45, 0.675, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9};
    for (int i = 0; i < 14; i++) {
        double v;
        assert_cr_ok(cr_iterative_sparsity(&d, i, &v));
        if (fabs(v - hand[i]) > 1e-12) fail_msg("round %d: sparsity %.17g, expected %g", i, v, hand[i]);
    }
    cr_st_file *f = golden("prune_schedule");
    const char *names[] = {"default", "b", "c", "d"};
    for (int k = 0; k < 4; k++) {
        char key[32];
        snprintf(key, sizeof key, "iter.%s", names[k]);
        cr_iterative_schedule s;
        const char *cfg = cr_st_meta(f, key);
        assert_non_null(cfg);
        assert_int_equal(sscanf(cfg, "%lf,%lf,%d,%d", &s.initial, &s.final, &s.iterations,
                                &s.epochs_per_iteration), 4);
        cr_dtensor ref = {0};
        assert_cr_ok(cr_st_get_typed(f, key, &ref));
        assert_int_equal((int)ref.numel, s.iterations);
        for (int i = 0; i < s.iterations; i++) {
            double v;
            assert_cr_ok(cr_iterative_sparsity(&s, i, &v));
            if (v != cr_dtensor_f64(&ref)[i])
                fail_msg("%s (%s) round %d: %.17g, the original's Python %.17g", key, cfg, i, v,
                         cr_dtensor_f64(&ref)[i]);
        }
        cr_dtensor_free(&ref);
    }
    /* b = 0.1 -> 0.7, 10 rounds of 3: the division is a true one (11 / 3 - 1 = 2.667,
     * step 0.225); an integer one (11 // 3 - 1 = 2) would give 0.4 at round 1 */
    const cr_iterative_schedule b = {0.1, 0.7, 10, 3};
    double v;
    assert_cr_ok(cr_iterative_sparsity(&b, 1, &v));
    assert_true(fabs(v - 0.325) < 1e-12);
    cr_st_free(f);
}

/* Schedules the formula cannot take are refused, naming the problem. */
static void iterative_schedule__bad_config(void **state)
{
    (void)state;
    double v;
    const cr_iterative_schedule zero_div = {0, 0.9, 5, 3};   /* 6 / 3 - 1 = 1: fine */
    assert_cr_ok(cr_iterative_sparsity(&zero_div, 0, &v));
    const cr_iterative_schedule div0 = {0, 0.9, 5, 6};       /* 6 / 6 - 1 = 0 */
    assert_cr_fails(cr_iterative_step(&div0, &v), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "must be > 0"));
    const cr_iterative_schedule neg = {0, 0.9, 2, 4};        /* 3 / 4 - 1 < 0 */
    assert_cr_fails(cr_iterative_step(&neg, &v), CR_EINVAL);
    const cr_iterative_schedule down = {0.8, 0.2, 14, 3};
    assert_cr_fails(cr_iterative_step(&down, &v), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "above the final"));
    const cr_iterative_schedule big = {0, 1.5, 14, 3};
    assert_cr_fails(cr_iterative_step(&big, &v), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "[0, 1]"));
    const cr_iterative_schedule none = {0, 0.5, 0, 3};
    assert_cr_fails(cr_iterative_step(&none, &v), CR_EINVAL);
    const cr_iterative_schedule d = cr_iterative_schedule_default();
    assert_cr_fails(cr_iterative_sparsity(&d, 14, &v), CR_EINVAL);
    assert_cr_fails(cr_iterative_sparsity(&d, -1, &v), CR_EINVAL);
}

/* Zhu & Gupta's cubic schedule equals the Python of reference/make_golden_prune.py at
 * t = 0..29 (t0 2, n 5, dt 3, 0.05 -> 0.8): initial up to t0, held between steps, final
 * from t0 + n dt; it rises fast first and slowly at the end. */
static void cubic_schedule__golden(void **state)
{
    (void)state;
    cr_st_file *f = golden("prune_schedule");
    cr_cubic_schedule s;
    long long t0, n, dt;
    assert_int_equal(sscanf(cr_st_meta(f, "cubic"), "%lf,%lf,%lld,%lld,%lld", &s.initial, &s.final,
                            &t0, &n, &dt), 5);
    s.t0 = t0; s.n = n; s.dt = dt;
    cr_dtensor ref = {0};
    assert_cr_ok(cr_st_get_typed(f, "cubic", &ref));
    for (int64_t t = 0; t < (int64_t)ref.numel; t++) {
        double v;
        assert_cr_ok(cr_cubic_sparsity(&s, t, &v));
        if (fabs(v - cr_dtensor_f64(&ref)[t]) > 1e-15)
            fail_msg("cubic at t = %lld: %.17g, Python %.17g", (long long)t, v, cr_dtensor_f64(&ref)[t]);
    }
    double a, b, c, e;
    assert_cr_ok(cr_cubic_sparsity(&s, 2, &a));    /* t0 */
    assert_cr_ok(cr_cubic_sparsity(&s, 5, &b));    /* after one step */
    assert_cr_ok(cr_cubic_sparsity(&s, 14, &c));   /* before the last step */
    assert_cr_ok(cr_cubic_sparsity(&s, 17, &e));   /* t0 + n dt */
    assert_true(fabs(a - 0.05) < 1e-15 && e == 0.8);
    assert_true(b - a > e - c);                    /* fast first, slow at the end */
    cr_dtensor_free(&ref);
    cr_st_free(f);
    const cr_cubic_schedule bad = {0.1, 0.5, 0, 0, 1};
    assert_cr_fails(cr_cubic_sparsity(&bad, 0, &a), CR_EINVAL);
}

/* ---- the original's rule ------------------------------------------------------------------- */

/* The original's kthvalue rule equals its PyTorch masks; on distinct magnitudes it is
 * l1_unstructured; with ties it drops more than k, and at k = 0 it refuses. */
static void pruner__original_rule_golden(void **state)
{
    (void)state;
    cr_st_file *f = golden("prune_unstructured");
    const char *names[] = {"w_a", "w_b", "w_c", "w_ties"};
    int64_t extra = 0;
    for (int i = 0; i < 4; i++) {
        cr_tensor w = {0};
        get(f, names[i], &w);
        for (int j = 0; j < 3; j++) {
            char key[64];
            snprintf(key, sizeof key, "orig.%s.%g", names[i], SPARSITIES[j]);
            cr_mask want = {0}, got = {0};
            get_mask(f, key, &want);
            assert_cr_ok(cr_prune_mask_alloc(&got, &w));
            assert_cr_ok(cr_prune_threshold_rule(&w, SPARSITIES[j], &got));
            expect_mask(key, &got, &want);
            const int64_t k = (int64_t)((double)w.numel * SPARSITIES[j]);
            if (i < 3) assert_int_equal(dropped(&got), k);
            else extra += dropped(&got) - k;
            assert_cr_ok(cr_prune_unstructured(&w, SPARSITIES[j], NULL, &got));
            assert_int_equal(dropped(&got), k);               /* ours: exactly k, ties or not */
            cr_mask_free(&want);
            cr_mask_free(&got);
        }
        cr_mask m = {0};
        assert_cr_ok(cr_prune_mask_alloc(&m, &w));
        assert_cr_fails(cr_prune_threshold_rule(&w, 0.0, &m), CR_EINVAL);
        assert_non_null(strstr(cr_last_error(), "kthvalue"));
        assert_cr_ok(cr_prune_unstructured(&w, 0.0, NULL, &m));
        assert_int_equal(dropped(&m), 0);
        cr_mask_free(&m);
        cr_tensor_free(&w);
    }
    if (extra <= 0) fail_msg("the tied weights gave the original's rule no extra zeros");
    cr_st_free(f);
}

/* ---- a pruned model in chapter 4's trainer --------------------------------------------- */

enum { DS_C = 4 };

/* A synthetic split of count frames of 8 x 6 whose labels follow the red channel. */
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
            const int32_t lab = (int32_t)((ds->images[n * 3 * H * W + p] + 1.0f) * 0.5f * DS_C);
            ds->labels[n * H * W + p] = lab >= DS_C ? DS_C - 1 : lab;
        }
}

static void free_ds(cr_dataset *ds)
{
    free(ds->images);
    free(ds->labels);
    memset(ds, 0, sizeof *ds);
}

/* stem.conv 3x3 (3 -> 8) + BN + ReLU, body.conv 3x3 (8 -> 12) + BN + ReLU, head 1x1
 * (12 -> DS_C, with bias). */
static void build_net(cr_model *m, uint64_t seed)
{
    cr_model_init(m);
    cr_conv_params a = cr_conv_params_default(3, 8, 3), b = cr_conv_params_default(8, 12, 3),
                   h = cr_conv_params_default(12, DS_C, 1);
    cr_conv_set_padding(&a, 1, 1);
    cr_conv_set_padding(&b, 1, 1);
    assert_true(cr_model_add_conv(m, "stem.conv", CR_MODEL_INPUT, &a) >= 0);
    assert_true(cr_model_add_batchnorm(m, "stem.bn", CR_PREV, 8, NULL) >= 0);
    assert_true(cr_model_add_relu(m, "stem.relu", CR_PREV) >= 0);
    assert_true(cr_model_add_conv(m, "body.conv", CR_PREV, &b) >= 0);
    assert_true(cr_model_add_batchnorm(m, "body.bn", CR_PREV, 12, NULL) >= 0);
    assert_true(cr_model_add_relu(m, "body.relu", CR_PREV) >= 0);
    assert_true(cr_model_add_conv(m, "head", CR_PREV, &h) >= 0);
    assert_cr_ok(cr_model_init_params(m, seed));
}

static cr_train_config net_config(void)
{
    cr_train_config c = cr_train_config_default();
    c.lr = 1e-2;
    c.weight_decay = 0.05;   /* large, so that decay alone would move a weight */
    c.batch = 4;
    c.epochs = 3;
    c.warmup_epochs = 0;
    c.seed = 3;
    return c;
}

/* Index of parameter name in p, failing if absent. */
static int param(const cr_pruner *p, const char *name)
{
    for (int i = 0; i < p->params.n; i++)
        if (strcmp(p->params.names[i], name) == 0) return i;
    fail_msg("no parameter '%s'", name);
    return -1;
}

/* Layers by name: every conv weight by default; exclude keeps the first conv and the
 * head dense; include takes exactly the listed ones; unknown and non-conv names fail. */
static void pruner__layer_selection(void **state)
{
    (void)state;
    cr_model m;
    build_net(&m, 1);
    cr_pruner p;
    cr_prune_config c = {.kind = CR_PRUNE_UNSTRUCTURED};
    assert_cr_ok(cr_pruner_init(&p, &m, &c));
    assert_int_equal(p.selected, 3);
    assert_null(p.active[param(&p, "head.bias")]);
    assert_null(p.active[param(&p, "stem.bn.weight")]);
    cr_pruner_free(&p);
    const char *dense[] = {"stem.conv.weight", "head.weight", NULL};
    c.exclude = dense;
    assert_cr_ok(cr_pruner_init(&p, &m, &c));
    assert_int_equal(p.selected, 1);
    assert_non_null(p.active[param(&p, "body.conv.weight")]);
    assert_cr_ok(cr_pruner_prune(&p, 0.5));
    assert_int_equal(cr_prune_zeros(&m.mods[0].weight), 0);           /* stem stays dense */
    assert_int_equal(cr_prune_zeros(&m.mods[3].weight), 8 * 12 * 9 / 2);
    cr_pruner_free(&p);
    const char *only[] = {"head.weight", NULL};
    c.exclude = NULL;
    c.include = only;
    assert_cr_ok(cr_pruner_init(&p, &m, &c));
    assert_int_equal(p.selected, 1);
    cr_pruner_free(&p);
    const char *typo[] = {"body.conv1.weight", NULL};
    c.include = typo;
    assert_cr_fails(cr_pruner_init(&p, &m, &c), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "unknown layer 'body.conv1.weight'"));
    c.include = NULL;
    c.exclude = typo;
    assert_cr_fails(cr_pruner_init(&p, &m, &c), CR_EINVAL);
    const char *bn[] = {"stem.bn.weight", NULL};
    c.exclude = bn;
    assert_cr_fails(cr_pruner_init(&p, &m, &c), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "not a convolution weight"));
    const char *all[] = {"stem.conv.weight", "body.conv.weight", "head.weight", NULL};
    c.exclude = all;
    assert_cr_fails(cr_pruner_init(&p, &m, &c), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "no layer selected"));
    cr_model_free(&m);
}

/* Model-level kinds: per-layer counts for unstructured and structured, one count over
 * the layers for global; the report names each layer and sums them. */
static void pruner__kinds_and_report(void **state)
{
    (void)state;
    cr_model m;
    const cr_prune_kind kinds[] = {CR_PRUNE_UNSTRUCTURED, CR_PRUNE_FILTERS, CR_PRUNE_CHANNELS,
                                   CR_PRUNE_GLOBAL};
    for (int k = 0; k < 4; k++) {
        build_net(&m, 2);
        cr_pruner p;
        const cr_prune_config c = {.kind = kinds[k], .norm = CR_PRUNE_L1};
        assert_cr_ok(cr_pruner_init(&p, &m, &c));
        assert_cr_ok(cr_pruner_prune(&p, 0.5));
        int64_t z, n, zs = 0, ns = 0;
        for (int i = 0; i < p.params.n; i++) {
            if (!p.active[i]) continue;
            cr_pruner_count(&p, i, &z, &n);
            const cr_tensor *w = p.params.tensors[i];
            const int64_t per = kinds[k] == CR_PRUNE_FILTERS ? (int64_t)w->numel / w->shape[0]
                              : kinds[k] == CR_PRUNE_CHANNELS ? (int64_t)w->numel / w->shape[1] : 1;
            const int64_t slices = (int64_t)w->numel / per;
            if (kinds[k] != CR_PRUNE_GLOBAL && z != (slices / 2) * per)
                fail_msg("kind %d, %s: %lld zeros, expected %lld", k, p.params.names[i],
                         (long long)z, (long long)((slices / 2) * per));
            zs += z;
            ns += n;
        }
        cr_pruner_count(&p, -1, &z, &n);
        assert_int_equal(z, zs);
        assert_int_equal(n, ns);
        if (kinds[k] == CR_PRUNE_GLOBAL) assert_int_equal(z, ns / 2);
        cr_pruner_count(&p, -2, &z, &n);
        assert_int_equal(n, cr_model_num_scalars(&m));
        char buf[4096] = {0};
        FILE *f = fmemopen(buf, sizeof buf - 1, "w");
        assert_non_null(f);
        cr_pruner_report(&p, f);
        fclose(f);
        assert_non_null(strstr(buf, "body.conv.weight"));
        assert_non_null(strstr(buf, "pruned layers"));
        assert_null(strstr(buf, "stem.bn.weight"));
        cr_pruner_free(&p);
        cr_model_free(&m);
    }
}

/* A pruned model trained with AdamW (weight decay 0.05, moments built up by three steps
 * before pruning) keeps every pruned weight at exactly 0 through an epoch when its masks
 * are attached; the same run without them lets the weights grow back (the check can
 * fail); the kept weights do move. */
static void pruner__masks_survive_adamw(void **state)
{
    (void)state;
    cr_dataset ds;
    make_ds(&ds, 12, 31);
    const cr_train_config c = net_config();
    for (int attach = 1; attach >= 0; attach--) {
        cr_model m;
        cr_trainer t;
        cr_pruner p;
        build_net(&m, 4);
        assert_cr_ok(cr_trainer_init(&t, &m, &c, ds.count, ds.height, ds.width));
        assert_cr_ok(cr_train_epoch(&t, &ds, NULL, NULL, NULL));   /* moments are nonzero */
        const cr_prune_config pc = {.kind = CR_PRUNE_UNSTRUCTURED};
        assert_cr_ok(cr_pruner_init(&p, &m, &pc));
        assert_cr_ok(cr_pruner_prune(&p, 0.6));
        if (attach) assert_cr_ok(cr_pruner_attach(&p, &t));
        const int bw = param(&p, "body.conv.weight");
        cr_tensor before = {0};
        assert_cr_ok(cr_tensor_alloc(&before, 4, m.mods[3].weight.shape));
        memcpy(before.data, m.mods[3].weight.data, before.numel * sizeof(float));
        double v = 0;
        for (size_t j = 0; j < t.opt.state1[bw].numel; j++)
            if (!p.masks[bw].data[j]) v += fabs(t.opt.state1[bw].data[j]);
        assert_true(v > 0);   /* the pruned weights carry momentum into the next steps */
        assert_cr_ok(cr_train_epoch(&t, &ds, NULL, NULL, NULL));
        int64_t regrown = 0, moved = 0;
        for (int i = 0; i < p.params.n; i++) {
            if (!p.active[i]) continue;
            for (size_t j = 0; j < p.params.tensors[i]->numel; j++)
                regrown += !p.masks[i].data[j] && p.params.tensors[i]->data[j] != 0.0f;
        }
        for (size_t j = 0; j < before.numel; j++)
            moved += p.masks[bw].data[j] && m.mods[3].weight.data[j] != before.data[j];
        if (attach && regrown)
            fail_msg("%lld pruned weights are nonzero after an AdamW epoch with the masks attached",
                     (long long)regrown);
        if (!attach && !regrown)
            fail_msg("without the masks no pruned weight grew back: the test cannot fail");
        assert_true(moved > 0);
        cr_tensor_free(&before);
        cr_pruner_free(&p);
        cr_trainer_free(&t);
        cr_model_free(&m);
    }
    free_ds(&ds);
}

/* Pruned before the first step, masked weights get no gradient: after an epoch their
 * gradients and both AdamW moments are exactly 0 (the kept ones' are not);
 * cr_pruner_mask_grads does the same outside a trainer. */
static void pruner__gradients_masked(void **state)
{
    (void)state;
    cr_dataset ds;
    make_ds(&ds, 8, 37);
    const cr_train_config c = net_config();
    cr_model m;
    cr_trainer t;
    cr_pruner p;
    build_net(&m, 12);
    assert_cr_ok(cr_trainer_init(&t, &m, &c, ds.count, ds.height, ds.width));
    const cr_prune_config pc = {.kind = CR_PRUNE_CHANNELS};
    assert_cr_ok(cr_pruner_init(&p, &m, &pc));
    assert_cr_ok(cr_pruner_prune(&p, 0.5));
    assert_cr_ok(cr_pruner_attach(&p, &t));
    assert_cr_ok(cr_train_epoch(&t, &ds, NULL, NULL, NULL));
    int64_t nonzero_pruned = 0, nonzero_kept = 0;
    for (int i = 0; i < p.params.n; i++) {
        if (!p.active[i]) continue;
        for (size_t j = 0; j < p.params.tensors[i]->numel; j++) {
            const bool nz = p.params.grads[i]->data[j] != 0.0f || t.opt.state1[i].data[j] != 0.0f ||
                            t.opt.state2[i].data[j] != 0.0f;
            if (p.masks[i].data[j]) nonzero_kept += nz;
            else nonzero_pruned += nz;
        }
    }
    if (nonzero_pruned)
        fail_msg("%lld pruned weights have a gradient or AdamW moment", (long long)nonzero_pruned);
    assert_true(nonzero_kept > 0);
    const int bw = param(&p, "body.conv.weight");
    cr_tensor *g = p.params.grads[bw];
    for (size_t j = 0; j < g->numel; j++) g->data[j] = 1.0f + (float)j;
    cr_pruner_mask_grads(&p);
    for (size_t j = 0; j < g->numel; j++)
        assert_true(g->data[j] == (p.masks[bw].data[j] ? 1.0f + (float)j : 0.0f));
    cr_pruner_free(&p);
    cr_trainer_free(&t);
    cr_model_free(&m);
    free_ds(&ds);
}

/* The original's loop over 42 epochs prunes at epochs 0, 3, ..., 39 to 0, 0.225, 0.45,
 * 0.675 and 0.9 (held), and each layer follows: int(numel * s) zeros after each round. */
static void pruner__iterative_epochs(void **state)
{
    (void)state;
    cr_model m;
    build_net(&m, 5);
    cr_pruner p;
    const cr_prune_config c = {.kind = CR_PRUNE_UNSTRUCTURED};
    assert_cr_ok(cr_pruner_init(&p, &m, &c));
    const cr_iterative_schedule d = cr_iterative_schedule_default();
    int rounds = 0;
    for (int e = 0; e < 45; e++) {
        bool pruned;
        double s = -1;
        assert_cr_ok(cr_pruner_iterative_epoch(&p, &d, e, &pruned, &s));
        if (pruned != (e % 3 == 0 && e < 42)) fail_msg("epoch %d: pruned %d", e, (int)pruned);
        if (!pruned) continue;
        rounds++;
        const double want = e / 3 < 4 ? 0.225 * (e / 3) : 0.9;
        assert_true(fabs(s - want) < 1e-12);
        const int bw = param(&p, "body.conv.weight");
        int64_t z, n;
        cr_pruner_count(&p, bw, &z, &n);
        assert_int_equal(z, (int64_t)((double)n * s));
    }
    assert_int_equal(rounds, 14);
    cr_pruner_free(&p);
    cr_model_free(&m);
}

/* A checkpoint carries the masks as mask.NAME (U8): a fresh model, pruner and trainer
 * resumes with the same masks and weights; a run without masks, or with another
 * selection, refuses it naming the mask. */
static void pruner__checkpoint_round_trip(void **state)
{
    (void)state;
    char path[] = "/tmp/cr_ch06_ckpt_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    cr_dataset ds;
    make_ds(&ds, 8, 41);
    const cr_train_config c = net_config();
    const char *dense[] = {"stem.conv.weight", NULL};
    const cr_prune_config pc = {.kind = CR_PRUNE_FILTERS, .exclude = dense};
    cr_model ma, mb, mc;
    cr_trainer ta, tb, tc;
    cr_pruner pa, pb, pc2;
    build_net(&ma, 6);
    assert_cr_ok(cr_trainer_init(&ta, &ma, &c, ds.count, ds.height, ds.width));
    assert_cr_ok(cr_pruner_init(&pa, &ma, &pc));
    assert_cr_ok(cr_pruner_attach(&pa, &ta));
    assert_cr_ok(cr_pruner_prune(&pa, 0.5));
    assert_cr_ok(cr_train_epoch(&ta, &ds, NULL, NULL, NULL));
    assert_cr_ok(cr_checkpoint_save(&ta, path, NULL));
    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    cr_dtype dt;
    assert_cr_ok(cr_st_info(f, "mask.body.conv.weight", &dt, NULL, NULL));
    assert_int_equal(dt, CR_DT_U8);
    assert_false(cr_st_has(f, "mask.stem.conv.weight"));
    cr_st_free(f);
    /* a fresh run: other weights, masks that keep everything, then the checkpoint */
    build_net(&mb, 77);
    assert_cr_ok(cr_trainer_init(&tb, &mb, &c, ds.count, ds.height, ds.width));
    assert_cr_ok(cr_pruner_init(&pb, &mb, &pc));
    assert_cr_ok(cr_pruner_attach(&pb, &tb));
    assert_cr_ok(cr_checkpoint_load(&tb, path));
    for (int i = 0; i < pa.params.n; i++) {
        assert_true((pa.active[i] == NULL) == (pb.active[i] == NULL));
        if (pa.active[i]) expect_mask(pa.params.names[i], &pb.masks[i], &pa.masks[i]);
        assert_memory_equal(pa.params.tensors[i]->data, pb.params.tensors[i]->data,
                            pa.params.tensors[i]->numel * sizeof(float));
    }
    assert_true(dropped(&pb.masks[param(&pb, "body.conv.weight")]) == 6 * 8 * 9);
    /* both go on identically */
    assert_cr_ok(cr_train_epoch(&ta, &ds, NULL, NULL, NULL));
    assert_cr_ok(cr_train_epoch(&tb, &ds, NULL, NULL, NULL));
    for (int i = 0; i < pa.params.n; i++)
        assert_memory_equal(pa.params.tensors[i]->data, pb.params.tensors[i]->data,
                            pa.params.tensors[i]->numel * sizeof(float));
    /* no masks attached: refused, naming the mask */
    build_net(&mc, 8);
    assert_cr_ok(cr_trainer_init(&tc, &mc, &c, ds.count, ds.height, ds.width));
    assert_cr_fails(cr_checkpoint_load(&tc, path), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "mask.body.conv.weight"));
    /* another selection (the stem pruned too): refused, nothing changed */
    const cr_prune_config all = {.kind = CR_PRUNE_FILTERS};
    assert_cr_ok(cr_pruner_init(&pc2, &mc, &all));
    assert_cr_ok(cr_pruner_attach(&pc2, &tc));
    const float w0 = mc.mods[0].weight.data[0];
    assert_cr_fails(cr_checkpoint_load(&tc, path), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "mask.stem.conv.weight"));
    assert_true(mc.mods[0].weight.data[0] == w0);
    assert_int_equal(tc.epoch, 0);
    cr_pruner_free(&pa); cr_pruner_free(&pb); cr_pruner_free(&pc2);
    cr_trainer_free(&ta); cr_trainer_free(&tb); cr_trainer_free(&tc);
    cr_model_free(&ma); cr_model_free(&mb); cr_model_free(&mc);
    free_ds(&ds);
    unlink(path);
}

/* A checkpoint whose mask holds a byte other than 0 or 1, or a mask of the wrong shape,
 * is refused; a pruner cannot attach to a trainer of another model. */
static void pruner__bad_checkpoint_and_attach(void **state)
{
    (void)state;
    char path[] = "/tmp/cr_ch06_bad_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    cr_dataset ds;
    make_ds(&ds, 4, 43);
    const cr_train_config c = net_config();
    cr_model ma, mb;
    cr_trainer ta, tb;
    cr_pruner pa, pb;
    build_net(&ma, 9);
    build_net(&mb, 10);
    const cr_prune_config pc = {.kind = CR_PRUNE_UNSTRUCTURED};
    assert_cr_ok(cr_trainer_init(&ta, &ma, &c, ds.count, ds.height, ds.width));
    assert_cr_ok(cr_trainer_init(&tb, &mb, &c, ds.count, ds.height, ds.width));
    assert_cr_ok(cr_pruner_init(&pa, &ma, &pc));
    assert_cr_ok(cr_pruner_init(&pb, &mb, &pc));
    assert_cr_fails(cr_pruner_attach(&pa, &tb), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "another model"));
    assert_cr_ok(cr_pruner_attach(&pa, &ta));
    assert_cr_ok(cr_pruner_attach(&pb, &tb));
    assert_cr_ok(cr_pruner_prune(&pa, 0.4));
    /* a byte 2 in the head's mask */
    pa.masks[param(&pa, "head.weight")].data[3] = 2;
    assert_cr_ok(cr_checkpoint_save(&ta, path, NULL));
    assert_cr_fails(cr_checkpoint_load(&tb, path), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "0 or 1"));
    pa.masks[param(&pa, "head.weight")].data[3] = 1;
    /* a mask of another shape: the head's mask as [48] instead of [4, 12, 1, 1] */
    /* a mask for no parameter (a BatchNorm buffer), written beside a good checkpoint */
    {
        assert_cr_ok(cr_checkpoint_save(&ta, path, NULL));
        cr_st_file *g;
        cr_st_writer *w;
        assert_cr_ok(cr_st_load(&g, path));
        assert_cr_ok(cr_st_writer_new(&w));
        for (int i = 0; i < cr_st_count(g); i++) {
            cr_dtensor d = {0};
            assert_cr_ok(cr_st_get_typed(g, cr_st_name(g, i), &d));
            assert_cr_ok(cr_st_writer_add_typed(w, cr_st_name(g, i), &d));
            cr_dtensor_free(&d);
        }
        const char *keys[] = {"checkpoint", "optimizer", "rng.dropout", "rng.data",
                              "optimizer.step", "scheduler.step", "epoch", "batch", "lr",
                              "weight_decay", "train_frames", NULL};
        for (int k = 0; keys[k]; k++) assert_cr_ok(cr_st_writer_meta(w, keys[k], cr_st_meta(g, keys[k])));
        cr_dtensor extra = {0};
        const int64_t shp[1] = {8};
        assert_cr_ok(cr_dtensor_alloc(&extra, CR_DT_U8, 1, shp));
        assert_cr_ok(cr_st_writer_add_typed(w, "mask.stem.bn.running_mean", &extra));
        assert_cr_ok(cr_st_writer_save(w, path));
        cr_dtensor_free(&extra);
        cr_st_writer_free(w);
        cr_st_free(g);
        assert_cr_fails(cr_checkpoint_load(&tb, path), CR_EFORMAT);
        assert_non_null(strstr(cr_last_error(), "'mask.stem.bn.running_mean' belongs to no module"));
    }
    cr_mask *hm = &pa.masks[param(&pa, "head.weight")];
    hm->ndim = 1;
    hm->shape[0] = (int64_t)hm->numel;
    hm->shape[1] = hm->shape[2] = hm->shape[3] = 1;
    assert_cr_ok(cr_checkpoint_save(&ta, path, NULL));
    assert_cr_fails(cr_checkpoint_load(&tb, path), CR_EFORMAT);
    assert_non_null(strstr(cr_last_error(), "mask.head.weight"));
    cr_pruner_free(&pa); cr_pruner_free(&pb);
    cr_trainer_free(&ta); cr_trainer_free(&tb);
    cr_model_free(&ma); cr_model_free(&mb);
    free_ds(&ds);
    unlink(path);
}

/* Sparsity outside [0, 1] or NaN, masks of the wrong shape, a bad dim or norm, NaN
 * weights and impossible counts are refused with a message naming the argument. */
static void pruner__bad_input(void **state)
{
    (void)state;
    cr_tensor w = {0}, other = {0};
    assert_cr_ok(cr_tensor_alloc4(&w, 4, 3, 2, 2));
    assert_cr_ok(cr_tensor_alloc4(&other, 4, 3, 2, 1));
    cr_rng r;
    cr_rng_seed(&r, 6);
    cr_tensor_fill_uniform(&w, &r, -1, 1);
    cr_mask m = {0}, bad = {0};
    assert_cr_ok(cr_prune_mask_alloc(&m, &w));
    assert_cr_ok(cr_prune_mask_alloc(&bad, &other));
    const double wrong[] = {-0.1, 1.5, NAN, INFINITY};
    for (int i = 0; i < 4; i++) {
        assert_cr_fails(cr_prune_unstructured(&w, wrong[i], NULL, &m), CR_EINVAL);
        assert_non_null(strstr(cr_last_error(), "sparsity must be a number in [0, 1]"));
        assert_cr_fails(cr_prune_structured(&w, 0, CR_PRUNE_L2, wrong[i], NULL, &m), CR_EINVAL);
        assert_cr_fails(cr_prune_threshold_rule(&w, wrong[i], &m), CR_EINVAL);
    }
    assert_cr_fails(cr_prune_unstructured(&w, 0.5, NULL, &bad), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "out"));
    assert_cr_fails(cr_prune_unstructured(&w, 0.5, &bad, &m), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "prev"));
    assert_cr_fails(cr_prune_structured(&w, 2, CR_PRUNE_L2, 0.5, NULL, &m), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "dim must be 0"));
    assert_cr_fails(cr_prune_structured(&w, 0, (cr_prune_norm)7, 0.5, NULL, &m), CR_EINVAL);
    assert_cr_fails(cr_prune_mask_apply(&bad, &w), CR_EINVAL);
    const cr_tensor *wl[2] = {&w, &other};
    cr_mask *ml[2] = {&m, &m};
    assert_cr_fails(cr_prune_global(wl, 2, 0.5, NULL, ml), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "out[1]"));
    assert_cr_fails(cr_prune_global(wl, 0, 0.5, NULL, ml), CR_EINVAL);
    w.data[5] = NAN;
    assert_cr_fails(cr_prune_unstructured(&w, 0.5, NULL, &m), CR_EINVAL);
    assert_non_null(strstr(cr_last_error(), "element 5 is NaN"));
    const double sc[3] = {1, 2, 3};
    uint8_t keep[3];
    assert_cr_fails(cr_prune_select_smallest(sc, 3, 4, keep), CR_EINVAL);
    assert_cr_fails(cr_prune_select_smallest(sc, 3, -1, keep), CR_EINVAL);
    cr_model mdl;
    build_net(&mdl, 11);
    cr_pruner p;
    const cr_prune_config c = {.kind = CR_PRUNE_GLOBAL};
    assert_cr_ok(cr_pruner_init(&p, &mdl, &c));
    assert_cr_fails(cr_pruner_prune(&p, 1.01), CR_EINVAL);
    assert_cr_ok(cr_pruner_prune(&p, 1.0));   /* everything pruned is a sparsity too */
    int64_t z, n;
    cr_pruner_count(&p, -1, &z, &n);
    assert_int_equal(z, n);
    cr_pruner_free(&p);
    const cr_prune_config k = {.kind = (cr_prune_kind)9};
    assert_cr_fails(cr_pruner_init(&p, &mdl, &k), CR_EINVAL);
    cr_model_free(&mdl);
    cr_mask_free(&m);
    cr_mask_free(&bad);
    cr_tensor_free(&w);
    cr_tensor_free(&other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(prune_select__golden_l1_unstructured),
        cmocka_unit_test(prune_select__golden_global),
        cmocka_unit_test(prune_select__exact_count_random),
        cmocka_unit_test(prune_select__prev_ranks_first),
        cmocka_unit_test(prune_select__ties_by_index),
        cmocka_unit_test(channel_norms__golden_norms),
        cmocka_unit_test(channel_norms__golden_ln_structured),
        cmocka_unit_test(channel_norms__random_whole_slices),
        cmocka_unit_test(iterative_schedule__original_defaults),
        cmocka_unit_test(iterative_schedule__bad_config),
        cmocka_unit_test(cubic_schedule__golden),
        cmocka_unit_test(pruner__original_rule_golden),
        cmocka_unit_test(pruner__layer_selection),
        cmocka_unit_test(pruner__kinds_and_report),
        cmocka_unit_test(pruner__masks_survive_adamw),
        cmocka_unit_test(pruner__gradients_masked),
        cmocka_unit_test(pruner__iterative_epochs),
        cmocka_unit_test(pruner__checkpoint_round_trip),
        cmocka_unit_test(pruner__bad_checkpoint_and_attach),
        cmocka_unit_test(pruner__bad_input),
    };
    return cr_run_tests("ch06", tests);
}
