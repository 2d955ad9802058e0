/* sparse_model.h — chapter 6: a whole chapter 4 model (chapter 8's FPN, say) run with its
 * pruned convolutions executed sparse.
 *
 * cr_sparse_model_attach looks at every convolution's weight once and picks its path:
 *   dense    no zero weight, or too few zeros for the sparse paths to pay: the model's
 *            own convolution (chapter 3's cr_conv2d_fast by default);
 *   csr      unstructured zeros at or above the measured break-even (cr_sparse_pays):
 *            the weight in CSR, run by cr_conv2d_auto (which then runs cr_sparse_conv2d);
 *   filters  some filters entirely zero (structured pruning that cr_model_shrink could
 *            not cut out, because the channel feeds an add or a zero-padded reader): a
 *            smaller dense convolution of the live filters only, whose planes are copied
 *            into the output; a dead filter's plane is its bias (or 0), which is exactly
 *            what the masked convolution computes. Groups 1 only; if the live filters are
 *            themselves sparse enough to pay, the CSR path runs instead (CSR skips empty
 *            rows anyway).
 * It then installs its dispatcher as the model's conv_forward, so the model's evaluation
 * forward keeps all of chapter 4's fusions (BatchNorm into its reader, add + ReLU, the
 * shared buffer pool): a module hook would switch those off and make the comparison with
 * the dense model unfair. The dispatcher finds the layer by its module's convolution
 * parameters (&mods[i].conv) among the attached models; a convolution it does not know,
 * or whose weight storage has changed since the attach, runs the dense way.
 *
 * The paths are chosen from the weights at attach time: change no weight value while a
 * model is attached (detach, train, attach again). Attaching and detaching are not
 * thread-safe (a process-wide list of attached models); forwards are as safe as the
 * model's own. */
#ifndef CR_SPARSE_MODEL_H
#define CR_SPARSE_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "sparse_conv.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CR_SPARSE_PATH_DENSE = 0, CR_SPARSE_PATH_CSR, CR_SPARSE_PATH_FILTERS } cr_sparse_path;

/* The name of a path ("dense", "csr", "filters"). */
const char *cr_sparse_path_name(cr_sparse_path p);

/* One convolution of an attached model. */
typedef struct {
    int module;                /* index of the conv module in the model */
    const float *weight;       /* its weight's storage at attach time */
    cr_sparse_path path;
    int64_t zeros, numel;      /* zero weights, weights */
    int64_t live;              /* filters with a nonzero weight */
    cr_csr_weight csr;         /* path csr */
    cr_conv_params small;      /* path filters: the conv of the live filters, */
    cr_tensor w_small, b_small;/* its weight and bias (b_small empty without bias), */
    int64_t *live_idx;         /* and their output channels (live entries) */
} cr_sparse_layer;

/* What to allow (both true by default, cr_sparse_model_config_default). */
typedef struct {
    bool csr;                  /* the CSR path where cr_sparse_pays */
    bool filters;              /* the filters path where whole filters are zero */
} cr_sparse_model_config;

cr_sparse_model_config cr_sparse_model_config_default(void);

typedef struct cr_sparse_model {
    cr_model *model;           /* borrowed */
    cr_conv2d_fn dense;        /* the model's conv_forward before the attach */
    int n;                     /* convolutions */
    cr_sparse_layer *layers;   /* n, in module order */
    int count[3];              /* layers per path */
    int64_t calls[3];          /* convolutions run per path since the attach */
    cr_tensor scratch;         /* path filters: the smaller conv's output */
    struct cr_sparse_model *next;   /* the list of attached models */
} cr_sparse_model;

/* Chooses every convolution's path (above) and installs the dispatcher as m's
 * conv_forward. Fails (CR_EINVAL) on a NULL argument, a model with no convolution, or a
 * model already attached. */
cr_status cr_sparse_model_attach(cr_sparse_model *e, cr_model *m, const cr_sparse_model_config *c);
/* Restores the model's conv_forward, leaves the list and frees what the attach made;
 * safe on a zeroed struct. */
void cr_sparse_model_detach(cr_sparse_model *e);

/* Bytes the executed model's parameters and buffers take: each convolution as its path
 * stores it (dense float32; CSR: cr_csr_bytes; filters: the smaller weight plus 8 bytes
 * per live filter's index), its bias, and every other module's tensors (norms' weights,
 * biases, running statistics) as float32. */
size_t cr_sparse_model_bytes(const cr_sparse_model *e);
/* The same for a plain model: every parameter and buffer as float32. */
size_t cr_model_param_bytes(const cr_model *m);

/* Prints one line per sparse layer (name, shape, zeros, live filters, path) and the
 * count per path. */
void cr_sparse_model_report(const cr_sparse_model *e, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
