/* conv_harness.h — the equality harness every chapter's tests reuse.
 *
 * Two proofs, written once: (1) an implementation reproduces PyTorch's golden
 * cases in reference/golden/; (2) an implementation equals a reference
 * implementation on many random configurations (fresh seed per run, printed on
 * failure; CR_SEED=... replays one). */
#ifndef CR_CONV_HARNESS_H
#define CR_CONV_HARNESS_H

#include "conv_desc.h"
#include "rng.h"
#include "tensor.h"

/* One golden case: parameters and tensors as PyTorch made them. */
typedef struct {
    char name[128];
    char description[256];
    char padding_spec[32];  /* what was passed to nn.Conv2d: "1", "(1, 2)", "same", ... */
    cr_conv_params p;
    cr_tensor x, w, b, y;   /* b is empty (data NULL) when p.bias is false */
} cr_golden_conv;

/* Lists reference/golden/PREFIX*.safetensors (directory from $CR_GOLDEN_DIR), sorted.
 * Returns the count; *paths is a malloc'd array of malloc'd strings (free with cr_free_list). */
int cr_golden_list(const char *prefix, char ***paths);
void cr_free_list(char **paths, int n);
/* Loads one golden convolution case; fails the current test with a message on error. */
void cr_golden_conv_load(const char *path, cr_golden_conv *c);
void cr_golden_conv_free(cr_golden_conv *c);

/* Proof 1: impl reproduces every golden case within relative L2 error tol
 * (and at least min_cases cases exist). Fails naming the case and its first faults. */
void cr_check_conv_golden(cr_conv2d_fn impl, const char *impl_name, double tol, int min_cases);

/* Draws a random valid configuration: odd and prime sizes, kernels larger than the
 * input (made valid by padding), stride larger than the kernel, dilation, every
 * padding mode, groups (ResNeXt-style and depthwise), batch 1..3. */
void cr_random_conv_config(cr_rng *r, cr_conv_params *p, int64_t *n, int64_t *h, int64_t *w);

/* Proof 2: impl equals ref on count random configurations (relative L2 <= tol). */
void cr_check_conv_random(cr_conv2d_fn ref, cr_conv2d_fn impl, const char *impl_name,
                          int count, double tol);

/* Allocates x, w, b (if p->bias), y for the shape, random x/w/b, poisoned y. */
void cr_conv_tensors_random(const cr_conv_shape *s, cr_rng *r, cr_tensor *x, cr_tensor *w,
                            cr_tensor *b, cr_tensor *y);

#endif
