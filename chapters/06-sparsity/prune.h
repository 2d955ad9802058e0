/* prune.h — chapter 6: magnitude pruning, its masks and its schedules.
 *
 * A mask (lib/dtype.h's cr_mask: one byte per element, 1 keeps, 0 drops) has the shape
 * of the weight it prunes. Three ways to choose it, each from magnitudes:
 *   unstructured  the int(numel * s) elements of smallest |w| are dropped, exactly that
 *                 many (ties broken by index: the lower flat index is dropped first);
 *   structured    the int(C * s) slices of dimension 0 (whole filters) or dimension 1
 *                 (whole input channels) of smallest L2 (or L1) norm are dropped;
 *   global        unstructured over several tensors at once: one ranking of |w| over
 *                 all of them, int(total * s) dropped, so layers end at different sparsity.
 * int() truncates, as Python's int(numel * sparsity) does, in double arithmetic.
 * torch.nn.utils.prune rounds instead (round(amount * numel), ties to even): with an
 * integer amount both prune the same count.
 *
 * The original project's rule is here too, for comparison: threshold = the k-th smallest
 * |w| (torch.kthvalue, k = int(numel * s)), keep |w| > threshold. It drops every element
 * tied with the threshold (more than k zeros when magnitudes repeat, as zeros of an
 * already pruned layer do) and is undefined at k = 0, where kthvalue(., 0) raises.
 *
 * A pruner (cr_pruner) holds one mask per selected parameter of a chapter 4 model,
 * selected by state-dict name; cr_pruner_attach lends the masks to a chapter 4 trainer,
 * which multiplies them into the gradients and re-applies them after every optimizer
 * step, and saves them in checkpoints as "mask.NAME". Schedules: the original's
 * iterative one and Zhu & Gupta's (2017) gradual cubic one.
 *
 * Sparsity arguments must lie in [0, 1] (NaN refused); weights must not hold NaN. */
#ifndef CR_PRUNE_H
#define CR_PRUNE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "dtype.h"
#include "error.h"
#include "model.h"
#include "tensor.h"
#include "train.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- masks of one tensor ------------------------------------------------------------ */

/* The number of elements (or slices) that sparsity s drops out of n: int(n * s), the
 * product in double, truncated as Python's int(); s must be checked first. */
int64_t cr_prune_count(int64_t n, double s);

/* Fails (CR_EINVAL, naming what) unless s is a number in [0, 1]. */
cr_status cr_prune_check_sparsity(double s, const char *what);

/* Allocates m with t's shape, every element kept (1). */
cr_status cr_prune_mask_alloc(cr_mask *m, const cr_tensor *t);

/* The k entries of score[0..n-1] with the smallest values get keep 0, the others 1;
 * among equal scores the lower index is dropped first. 0 <= k <= n. */
cr_status cr_prune_select_smallest(const double *score, int64_t n, int64_t k, uint8_t *keep);

/* Unstructured: out (w's shape) drops the int(numel * s) elements of smallest |w|.
 * prev (NULL: none) is an earlier mask of w: the elements it drops rank first, so that
 * raising s never revives a pruned weight. out may be prev. */
cr_status cr_prune_unstructured(const cr_tensor *w, double s, const cr_mask *prev, cr_mask *out);

/* The norm of each slice of w along dim (0: filters, w[o, ...]; 1: input channels,
 * w[:, c, ...]; needs rank >= 2) over the elements prev keeps (NULL: all): L2 =
 * sqrt(sum w^2) or L1 = sum |w|, in double, into score[0..shape[dim]-1]; a slice prev
 * drops entirely scores -1 (it ranks first). */
typedef enum { CR_PRUNE_L2 = 0, CR_PRUNE_L1 } cr_prune_norm;
cr_status cr_prune_channel_scores(const cr_tensor *w, int dim, cr_prune_norm norm,
                                  const cr_mask *prev, double *score);

/* Structured: out (w's shape) drops the int(shape[dim] * s) slices of smallest norm
 * (whole filters for dim 0, whole input channels for dim 1), as
 * torch.nn.utils.prune.ln_structured(n = 2 or 1) does; inside the kept slices, what
 * prev (NULL: none) dropped stays dropped. out may be prev. */
cr_status cr_prune_structured(const cr_tensor *w, int dim, cr_prune_norm norm, double s,
                              const cr_mask *prev, cr_mask *out);

/* Global unstructured over n tensors w[0..n-1]: one ranking of |w| over all of them drops
 * int(total * s) elements (torch.nn.utils.prune.global_unstructured with L1Unstructured);
 * out[i] has w[i]'s shape; prev (NULL, or n entries that may be NULL) ranks first what it
 * dropped. out[i] may be prev[i]. */
cr_status cr_prune_global(const cr_tensor *const *w, int n, double s,
                          const cr_mask *const *prev, cr_mask *const *out);

/* The original project's rule: k = int(numel * s), threshold = the k-th smallest |w|,
 * out keeps |w| > threshold (every element tied with the threshold is dropped). k = 0
 * fails with CR_EINVAL, as kthvalue(., 0) does in PyTorch. */
cr_status cr_prune_threshold_rule(const cr_tensor *w, double s, cr_mask *out);

/* t *= m, element by element (t and m of one shape; dropped elements become exactly 0). */
cr_status cr_prune_mask_apply(const cr_mask *m, cr_tensor *t);

/* Number of elements of t equal to zero. */
int64_t cr_prune_zeros(const cr_tensor *t);

/* ---- schedules ---------------------------------------------------------------------- */

/* The original's iterative pruning: iterations rounds of epochs_per_iteration epochs;
 * round i (0-based) starts by pruning to min(initial + step * i, final) with
 *   step = (final - initial) / ((iterations + 1) / epochs_per_iteration - 1),
 * the inner division a true (floating-point) one, as Python 3's /. */
typedef struct {
    double initial, final;      /* sparsities, 0 <= initial <= final <= 1 */
    int iterations;             /* rounds, >= 1 */
    int epochs_per_iteration;   /* epochs per round, >= 1 */
} cr_iterative_schedule;

/* The original's defaults: 0 -> 0.9, 14 iterations of 3 epochs. */
cr_iterative_schedule cr_iterative_schedule_default(void);

/* The step of s (above); fails naming the field if s is out of range, or if the
 * divisor (iterations + 1) / epochs_per_iteration - 1 is not > 0 (Python would divide
 * by zero, or step backwards). */
cr_status cr_iterative_step(const cr_iterative_schedule *s, double *step);

/* The sparsity of round iteration (0 <= iteration < iterations) into *out. */
cr_status cr_iterative_sparsity(const cr_iterative_schedule *s, int iteration, double *out);

/* Zhu & Gupta (2017), "To prune, or not to prune": n pruning steps dt apart from t0,
 *   s_t = final + (initial - final) * (1 - (t - t0) / (n dt))^3,
 * held between steps (t rounded down to t0 + j dt); initial before t0, final from
 * t0 + n dt on. t counts whatever the caller steps (optimizer steps or epochs). */
typedef struct {
    double initial, final;      /* 0 <= initial <= final <= 1 */
    int64_t t0, n, dt;          /* t0 >= 0, n >= 1, dt >= 1 */
} cr_cubic_schedule;

/* The sparsity at time t (any t >= 0) into *out; fails naming a field out of range. */
cr_status cr_cubic_sparsity(const cr_cubic_schedule *s, int64_t t, double *out);

/* ---- pruning a model ---------------------------------------------------------------- */

typedef enum {
    CR_PRUNE_UNSTRUCTURED = 0,  /* per layer, elements */
    CR_PRUNE_FILTERS,           /* per layer, slices of dimension 0 */
    CR_PRUNE_CHANNELS,          /* per layer, slices of dimension 1 */
    CR_PRUNE_GLOBAL             /* elements, one ranking over every selected layer */
} cr_prune_kind;

typedef struct {
    cr_prune_kind kind;
    cr_prune_norm norm;          /* FILTERS and CHANNELS: L2 (default) or L1 */
    /* layers by state-dict name, NULL-terminated lists (NULL: none): include NULL selects
     * every convolution weight ("NAME.weight" of each conv module), else exactly those
     * listed; exclude then removes names (e.g. "enc1.conv.weight", the first conv).
     * Every name must be a convolution weight of the model. */
    const char *const *include;
    const char *const *exclude;
} cr_prune_config;

typedef struct {
    cr_model *model;             /* borrowed */
    cr_prune_config cfg;         /* include and exclude are not kept (NULL here) */
    cr_tensor_list params;       /* the model's parameters, in state-dict order */
    cr_mask *masks;              /* params.n; data NULL where the parameter is not pruned */
    cr_mask **active;            /* params.n: &masks[i] where pruned, else NULL (what a
                                    trainer borrows) */
    int selected;                /* number of pruned parameters */
} cr_pruner;

/* Selects the layers of m that c names (see cr_prune_config) and gives each a mask that
 * keeps everything. Fails (CR_EINVAL) naming an unknown name, a name that is not a
 * convolution weight, or a selection with no layer. */
cr_status cr_pruner_init(cr_pruner *p, cr_model *m, const cr_prune_config *c);
/* Frees the masks and lists (not the model); safe on a zeroed struct. */
void cr_pruner_free(cr_pruner *p);

/* Re-prunes every selected layer to sparsity s (each layer, or all together for
 * CR_PRUNE_GLOBAL), never reviving a weight while s grows, then zeroes the dropped
 * weights. */
cr_status cr_pruner_prune(cr_pruner *p, double s);
/* Zeroes the weights the masks drop (after loading weights, or a step outside a trainer). */
void cr_pruner_apply(const cr_pruner *p);
/* Zeroes the gradients of the weights the masks drop. */
void cr_pruner_mask_grads(const cr_pruner *p);

/* Lends p's masks to trainer t (built on the same model): from now on every step masks
 * the gradients and re-applies the masks after the optimizer step, and checkpoints carry
 * them. Fails if t trains another model. */
cr_status cr_pruner_attach(cr_pruner *p, cr_trainer *t);

/* The original's loop, at the start of epoch (0-based): when epoch is a multiple of
 * epochs_per_iteration and its round epoch / epochs_per_iteration is < iterations,
 * prunes to that round's sparsity; *pruned (may be NULL) says whether it did and *s (may
 * be NULL) receives the sparsity it pruned to. */
cr_status cr_pruner_iterative_epoch(cr_pruner *p, const cr_iterative_schedule *sched, int epoch,
                                    bool *pruned, double *s);

/* Zeros and total elements of parameter i of p->params (i >= 0), or of every pruned
 * parameter together (i = -1), or of every parameter of the model (i = -2). */
void cr_pruner_count(const cr_pruner *p, int i, int64_t *zeros, int64_t *total);
/* Prints one line per pruned parameter (name, shape, zeros / total, sparsity), then the
 * pruned layers together and the whole model. */
void cr_pruner_report(const cr_pruner *p, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
