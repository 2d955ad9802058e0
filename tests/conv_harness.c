/* conv_harness.c — golden cases and random configurations, checked once for every chapter. */
#include "conv_harness.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "cr_test.h"
#include "safetensors.h"

/* Directory of the golden files ($CR_GOLDEN_DIR, which meson sets). */
static const char *golden_dir(void)
{
    const char *d = getenv("CR_GOLDEN_DIR");
    if (!d || !*d) fail_msg("CR_GOLDEN_DIR is not set: run the tests through meson test");
    return d;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int cr_golden_list(const char *prefix, char ***paths)
{
    const char *dir = golden_dir();
    DIR *d = opendir(dir);
    if (!d) fail_msg("cannot open golden directory %s: %s", dir, strerror(errno));
    int n = 0, cap = 16;
    char **list = malloc(cap * sizeof *list);
    struct dirent *e;
    while (list && (e = readdir(d))) {
        size_t len = strlen(e->d_name), suf = strlen(".safetensors");
        if (strncmp(e->d_name, prefix, strlen(prefix)) != 0 || len <= suf ||
            strcmp(e->d_name + len - suf, ".safetensors") != 0)
            continue;
        if (n == cap) {
            char **grown = realloc(list, (cap *= 2) * sizeof *list);
            if (!grown) break;
            list = grown;
        }
        size_t sz = strlen(dir) + len + 2;
        list[n] = malloc(sz);
        if (list[n]) snprintf(list[n++], sz, "%s/%s", dir, e->d_name);
    }
    closedir(d);
    if (!list) fail_msg("out of memory listing %s", dir);
    qsort(list, n, sizeof *list, cmp_str);
    *paths = list;
    return n;
}

void cr_free_list(char **paths, int n)
{
    for (int i = 0; i < n; i++) free(paths[i]);
    free(paths);
}

/* Reads integer metadata key of a golden file; fails the test if absent or malformed. */
static int64_t meta_int(const cr_st_file *f, const char *path, const char *key)
{
    const char *v = cr_st_meta(f, key);
    if (!v) fail_msg("%s: metadata '%s' missing", path, key);
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) fail_msg("%s: metadata '%s' = '%s' is not an integer", path, key, v);
    return x;
}

/* Copies a metadata string into dst (empty if absent). */
static void meta_str(const cr_st_file *f, const char *key, char *dst, size_t len)
{
    const char *v = cr_st_meta(f, key);
    snprintf(dst, len, "%s", v ? v : "");
}

void cr_golden_conv_load(const char *path, cr_golden_conv *c)
{
    memset(c, 0, sizeof *c);
    cr_st_file *f;
    assert_cr_ok(cr_st_load(&f, path));
    const char *base = strrchr(path, '/');
    snprintf(c->name, sizeof c->name, "%s", base ? base + 1 : path);
    meta_str(f, "description", c->description, sizeof c->description);
    meta_str(f, "padding_spec", c->padding_spec, sizeof c->padding_spec);
    cr_conv_params *p = &c->p;
    p->in_channels = meta_int(f, path, "in_channels");
    p->out_channels = meta_int(f, path, "out_channels");
    p->kernel_h = meta_int(f, path, "kernel_h");
    p->kernel_w = meta_int(f, path, "kernel_w");
    p->stride_h = meta_int(f, path, "stride_h");
    p->stride_w = meta_int(f, path, "stride_w");
    p->pad_top = meta_int(f, path, "pad_top");
    p->pad_bottom = meta_int(f, path, "pad_bottom");
    p->pad_left = meta_int(f, path, "pad_left");
    p->pad_right = meta_int(f, path, "pad_right");
    p->dilation_h = meta_int(f, path, "dilation_h");
    p->dilation_w = meta_int(f, path, "dilation_w");
    p->groups = meta_int(f, path, "groups");
    p->bias = meta_int(f, path, "bias") != 0;
    const char *mode = cr_st_meta(f, "padding_mode");
    assert_cr_ok(cr_pad_mode_parse(mode, &p->pad_mode));
    assert_cr_ok(cr_st_get(f, "x", &c->x));
    assert_cr_ok(cr_st_get(f, "w", &c->w));
    assert_cr_ok(cr_st_get(f, "y", &c->y));
    if (p->bias) assert_cr_ok(cr_st_get(f, "b", &c->b));
    cr_st_free(f);
}

void cr_golden_conv_free(cr_golden_conv *c)
{
    cr_tensor_free(&c->x);
    cr_tensor_free(&c->w);
    cr_tensor_free(&c->b);
    cr_tensor_free(&c->y);
}

/* Prints where out and ref differ (first faults, with N,C,H,W indices). */
static void print_faults4(const cr_tensor *out, const cr_tensor *ref)
{
    const long long shape[4] = {out->shape[0], out->shape[1], out->shape[2], out->shape[3]};
    cr_print_faults(stderr, out->data, ref->data, ref->numel, shape, 4, 1e-4, 1e-5, 5);
}

void cr_check_conv_golden(cr_conv2d_fn impl, const char *impl_name, double tol, int min_cases)
{
    char **paths;
    int n = cr_golden_list("conv_", &paths), failures = 0;
    if (n < min_cases)
        fail_msg("found %d golden convolution cases in %s, expected at least %d", n,
                 golden_dir(), min_cases);
    for (int i = 0; i < n; i++) {
        cr_golden_conv c;
        cr_golden_conv_load(paths[i], &c);
        cr_tensor out;
        assert_cr_ok(cr_tensor_alloc(&out, 4, c.y.shape));
        cr_tensor_poison(&out);
        cr_status st = impl(&c.p, &c.x, &c.w, c.p.bias ? &c.b : NULL, &out);
        cr_cmp cmp = cr_compare(out.data, c.y.data, out.numel, 1e-4, 1e-5);
        if (st != CR_OK || !cr_cmp_ok(&cmp, tol)) {
            char desc[512];
            cr_conv_params_str(&c.p, desc, sizeof desc);
            fprintf(stderr, "%s FAILED golden case %s (%s)\n  %s\n", impl_name, c.name,
                    c.description, desc);
            if (st != CR_OK)
                fprintf(stderr, "  returned %s: %s\n", cr_status_name(st), cr_last_error());
            else {
                fprintf(stderr, "  relative L2 error %.3g > %.1g\n", cmp.rel_l2, tol);
                print_faults4(&out, &c.y);
            }
            failures++;
        }
        cr_tensor_free(&out);
        cr_golden_conv_free(&c);
    }
    cr_free_list(paths, n);
    if (failures)
        fail_msg("%s: %d of %d golden cases differ from PyTorch (bound: relative L2 <= %.1g)",
                 impl_name, failures, n, tol);
}

/* A size drawn to favour the awkward ones: 1, primes, odd numbers. */
static int64_t awkward_size(cr_rng *r, int64_t hi)
{
    static const int64_t primes[] = {2, 3, 5, 7, 11, 13};
    switch (cr_rng_int(r, 0, 3)) {
    case 0: return 1;
    case 1: {
        int64_t v = primes[cr_rng_int(r, 0, 5)];
        return v <= hi ? v : hi;
    }
    default: return cr_rng_int(r, 1, hi);
    }
}

void cr_random_conv_config(cr_rng *r, cr_conv_params *p, int64_t *n, int64_t *h, int64_t *w)
{
    for (;;) {
        *n = cr_rng_int(r, 1, 3);
        *h = awkward_size(r, 13);
        *w = awkward_size(r, 13);
        int64_t groups = 1, cin_g = cr_rng_int(r, 1, 4), cout_g = cr_rng_int(r, 1, 4);
        switch (cr_rng_int(r, 0, 3)) {
        case 0: break;                                          /* dense */
        case 1: groups = cr_rng_int(r, 2, 4); break;            /* a few groups */
        case 2: groups = cr_rng_int(r, 4, 8); cin_g = cout_g = cr_rng_int(r, 1, 4); break; /* ResNeXt-like */
        case 3: groups = cr_rng_int(r, 1, 6); cin_g = 1; cout_g = cr_rng_int(r, 1, 2); break; /* depthwise */
        }
        *p = cr_conv_params_default(groups * cin_g, groups * cout_g, 1);
        p->groups = groups;
        p->kernel_h = awkward_size(r, 7);
        p->kernel_w = cr_rng_int(r, 0, 2) ? p->kernel_h : awkward_size(r, 7);
        p->stride_h = cr_rng_int(r, 1, 4);                      /* may exceed the kernel */
        p->stride_w = cr_rng_int(r, 0, 1) ? p->stride_h : cr_rng_int(r, 1, 4);
        p->dilation_h = cr_rng_int(r, 0, 2) ? 1 : cr_rng_int(r, 2, 3);
        p->dilation_w = cr_rng_int(r, 0, 2) ? 1 : cr_rng_int(r, 2, 3);
        p->bias = cr_rng_int(r, 0, 3) != 0;
        p->pad_mode = (cr_pad_mode)cr_rng_int(r, 0, 3);
        p->pad_top = cr_rng_int(r, 0, 4);
        p->pad_bottom = cr_rng_int(r, 0, 1) ? p->pad_top : cr_rng_int(r, 0, 4);
        p->pad_left = cr_rng_int(r, 0, 4);
        p->pad_right = cr_rng_int(r, 0, 1) ? p->pad_left : cr_rng_int(r, 0, 4);
        cr_conv_shape s;
        cr_status st = cr_conv_shape_init(&s, p, *n, *h, *w);
        if (st == CR_OK) return;  /* otherwise an invalid draw (e.g. reflect pad >= size): again */
    }
}

void cr_conv_tensors_random(const cr_conv_shape *s, cr_rng *r, cr_tensor *x, cr_tensor *w,
                            cr_tensor *b, cr_tensor *y)
{
    const cr_conv_params *p = &s->p;
    assert_cr_ok(cr_tensor_alloc4(x, s->batch, p->in_channels, s->h_in, s->w_in));
    assert_cr_ok(cr_tensor_alloc4(w, p->out_channels, s->cin_g, p->kernel_h, p->kernel_w));
    assert_cr_ok(cr_tensor_alloc4(y, s->batch, p->out_channels, s->h_out, s->w_out));
    cr_tensor_fill_uniform(x, r, -1.0f, 1.0f);
    cr_tensor_fill_uniform(w, r, -1.0f, 1.0f);
    cr_tensor_poison(y);
    memset(b, 0, sizeof *b);
    if (p->bias) {
        const int64_t bs[1] = {p->out_channels};
        assert_cr_ok(cr_tensor_alloc(b, 1, bs));
        cr_tensor_fill_uniform(b, r, -1.0f, 1.0f);
    }
}

/* True when ||y - y_ref|| <= tol * ||ref(|x|, |w|, |b|)||: the error is within float
 * rounding of the sums' magnitudes. A relative error against ||y_ref|| alone fails
 * spuriously when the few products of a small output cancel (a 1 x 7 kernel on a
 * 5-pixel row gave 4.6e-5 against a bound of 3e-5); a wrong tap or index still fails,
 * since its error is of the order of the magnitudes themselves. All finite values. */
static bool within_rounding(cr_conv2d_fn ref, const cr_conv_params *p, const cr_tensor *x,
                            const cr_tensor *w, const cr_tensor *b, const cr_tensor *y,
                            const cr_tensor *y_ref, double tol)
{
    cr_tensor ax = {0}, aw = {0}, ab = {0}, ay = {0};
    bool ok = cr_tensor_alloc(&ax, x->ndim, x->shape) == CR_OK &&
              cr_tensor_alloc(&aw, w->ndim, w->shape) == CR_OK &&
              (!b || cr_tensor_alloc(&ab, b->ndim, b->shape) == CR_OK) &&
              cr_tensor_alloc(&ay, y_ref->ndim, y_ref->shape) == CR_OK;
    if (ok) {
        for (size_t i = 0; i < x->numel; i++) ax.data[i] = fabsf(x->data[i]);
        for (size_t i = 0; i < w->numel; i++) aw.data[i] = fabsf(w->data[i]);
        if (b) for (size_t i = 0; i < b->numel; i++) ab.data[i] = fabsf(b->data[i]);
        ok = ref(p, &ax, &aw, b ? &ab : NULL, &ay) == CR_OK;
    }
    double err = 0, mag = 0;
    for (size_t i = 0; ok && i < y->numel; i++) {
        const double d = (double)y->data[i] - y_ref->data[i];
        if (!isfinite(d)) ok = false;
        err += d * d;
        mag += (double)ay.data[i] * ay.data[i];
    }
    cr_tensor_free(&ax);
    cr_tensor_free(&aw);
    cr_tensor_free(&ab);
    cr_tensor_free(&ay);
    return ok && sqrt(err) <= tol * sqrt(mag);
}

void cr_check_conv_random(cr_conv2d_fn ref, cr_conv2d_fn impl, const char *impl_name,
                          int count, double tol)
{
    const uint64_t seed = cr_seed_from_env();
    cr_rng r;
    cr_rng_seed(&r, seed);
    for (int i = 0; i < count; i++) {
        cr_conv_params p;
        int64_t n, h, w;
        cr_random_conv_config(&r, &p, &n, &h, &w);
        cr_conv_shape s;
        assert_cr_ok(cr_conv_shape_init(&s, &p, n, h, w));
        cr_tensor x, wt, b, y_ref, y;
        cr_conv_tensors_random(&s, &r, &x, &wt, &b, &y_ref);
        assert_cr_ok(cr_tensor_alloc(&y, 4, y_ref.shape));
        cr_tensor_poison(&y);
        const cr_tensor *bp = p.bias ? &b : NULL;
        assert_cr_ok(ref(&p, &x, &wt, bp, &y_ref));
        cr_status st = impl(&p, &x, &wt, bp, &y);
        cr_cmp cmp = cr_compare(y.data, y_ref.data, y.numel, 1e-4, 1e-5);
        if (st == CR_OK && !cr_cmp_ok(&cmp, tol) && within_rounding(ref, &p, &x, &wt, bp, &y, &y_ref, tol))
            cmp.rel_l2 = 0;   /* cancellation: the error is rounding, small beside sum |w||x| */
        if (st != CR_OK || !cr_cmp_ok(&cmp, tol)) {
            char desc[512];
            cr_conv_params_str(&p, desc, sizeof desc);
            fprintf(stderr, "%s differs from the reference on random configuration %d "
                    "(replay with CR_SEED=%" PRIu64 ")\n  input %lld x %lld x %lld x %lld, %s\n",
                    impl_name, i, seed, (long long)n, (long long)p.in_channels, (long long)h,
                    (long long)w, desc);
            if (st != CR_OK)
                fprintf(stderr, "  returned %s: %s\n", cr_status_name(st), cr_last_error());
            else
                print_faults4(&y, &y_ref);
            fail_msg("%s: random configuration %d of %d failed (seed %" PRIu64
                     ", relative L2 %.3g, bound %.1g)", impl_name, i, count, seed, cmp.rel_l2, tol);
        }
        cr_tensor_free(&x);
        cr_tensor_free(&wt);
        cr_tensor_free(&b);
        cr_tensor_free(&y_ref);
        cr_tensor_free(&y);
    }
    printf("%s: %d random configurations equal the reference (seed %" PRIu64 ")\n", impl_name,
           count, seed);
}
