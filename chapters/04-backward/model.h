/* model.h — chapter 4: a small, explicit network: an ordered list of named modules.
 *
 * Each module reads the output of an earlier module (or the model's input) and owns
 * its output, the gradient of that output, its parameters and their gradients. The
 * list runs forward in order and backward in reverse; a module's output may feed
 * several later modules (a skip connection into an `add`), and the gradients that
 * flow back into it are summed. There is no autograd tape: what each backward needs
 * is exactly what its forward kept.
 *
 * Names follow PyTorch's state_dict: a conv module named "enc1.conv" holds
 * "enc1.conv.weight" (Cout x Cin/groups x kh x kw) and "enc1.conv.bias" (Cout); a
 * BatchNorm2d module "enc1.bn" holds "enc1.bn.weight", ".bias", ".running_mean",
 * ".running_var" (C each; num_batches_tracked, BatchNorm's step counter, is not kept:
 * load the file into PyTorch with strict=False, or add it; cr_model_load skips it). Saved and loaded through lib/safetensors.h (F32,
 * OIHW), so a state dict moves both ways between this model and the same network
 * written in PyTorch. */
#ifndef CR_MODEL_H
#define CR_MODEL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "conv_backward.h"
#include "conv_desc.h"
#include "layers.h"
#include "rng.h"
#include "safetensors.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CR_MOD_CONV = 0, CR_MOD_BATCHNORM, CR_MOD_GROUPNORM, CR_MOD_RELU, CR_MOD_MAXPOOL,
    CR_MOD_AVGPOOL, CR_MOD_UPSAMPLE, CR_MOD_ADD, CR_MOD_DROPOUT
} cr_module_kind;

/* Where a module reads from: the model's input, the previous module, or an index. */
enum { CR_MODEL_INPUT = -1, CR_PREV = -2 };

#define CR_MODULE_NAME_MAX 64

/* A later chapter's wrapper around one module (chapter 7: fake quantization); below. */
typedef struct cr_module_hook cr_module_hook;

typedef struct cr_module {
    cr_module_kind kind;
    char name[CR_MODULE_NAME_MAX];   /* state_dict prefix, e.g. "enc1.conv" */
    int in, in2;                     /* input module indices (in2: add's second input) */
    /* options */
    cr_conv_params conv;             /* CR_MOD_CONV */
    cr_bn_params bn;                 /* CR_MOD_BATCHNORM */
    int64_t channels, groups;        /* norms: C; GroupNorm: groups */
    double eps;                      /* GroupNorm */
    cr_pool_params pool;             /* CR_MOD_MAXPOOL */
    cr_upsample_params up;           /* CR_MOD_UPSAMPLE */
    int up_like;                     /* up-sample to this module's output size (-1: use up) */
    double drop_p;                   /* CR_MOD_DROPOUT */
    bool drop_2d;                    /* CR_MOD_DROPOUT: whole channels (nn.Dropout2d) */
    /* parameters (empty tensors where the kind has none) and their gradients */
    cr_tensor weight, bias, running_mean, running_var;
    cr_tensor dweight, dbias;
    /* kept by forward for backward */
    cr_tensor out, dout;             /* output N x C x H x W and d(loss)/d(out) */
    bool dout_set;                   /* dout holds a gradient in this backward pass */
    cr_tensor save_mean, save_invstd, mask;
    cr_tensor fold;                  /* evaluation: BatchNorm's per-channel scale, shift (2C) */
    bool out_view;                   /* evaluation: out borrows a buffer of the model's pool */
    int64_t *argmax;
    size_t argmax_len;
    /* set by a later chapter, not owned by the model (NULL: none) */
    cr_module_hook *hook;            /* wraps this module's forward and backward */
    bool frozen;                     /* BatchNorm: running statistics even in training mode
                                        (torch.ao's freeze_bn_stats) */
    /* cr_model.profile: wall seconds spent in this module's forward and backward, and calls */
    double fwd_s, bwd_s;
    int64_t fwd_calls, bwd_calls;
} cr_module;

typedef struct cr_model {
    cr_module *mods;
    int n, cap;
    bool training;                   /* train(): batch statistics, dropout on */
    cr_conv2d_fn conv_forward;       /* default cr_conv2d_fast (chapter 3) */
    cr_conv2d_backward_fn conv_backward;  /* default cr_conv2d_backward */
    cr_rng rng;                      /* dropout's stream (seeded by cr_model_init_params) */
    const cr_tensor *input;          /* the last forward's input (borrowed) */
    cr_tensor scratch, scratch_w, scratch_b;  /* backward: gradients to be summed */
    bool profile;                    /* time every module (cr_module fwd_s, bwd_s) */
    bool kept_for_backward;          /* the last forward ran in training mode */
    struct cr_infer *infer;          /* evaluation: the shared activation buffers (model.c) */
} cr_model;

/* What a hook may change (each callback NULL: the model's own behaviour). Owned by its
 * setter, who must clear d->hook before freeing it. For a conv module, conv_forward writes
 * d->out (allocated) in place of m->conv_forward, and conv_backward writes dx (NULL: not
 * wanted) and the parameter gradients dw, db (NULL without a bias; the model adds them
 * into dweight, dbias) from d->dout in place of m->conv_backward. For any module,
 * after_forward runs on d->out once the module has computed it; before_backward runs
 * before the module's backward (d->dout holds its gradient) and after_backward after it. */
struct cr_module_hook {
    cr_status (*conv_forward)(cr_module_hook *h, struct cr_model *m, cr_module *d,
                              const cr_tensor *x);
    cr_status (*conv_backward)(cr_module_hook *h, struct cr_model *m, cr_module *d,
                               const cr_tensor *x, cr_tensor *dx, cr_tensor *dw, cr_tensor *db);
    cr_status (*after_forward)(cr_module_hook *h, struct cr_model *m, cr_module *d);
    cr_status (*before_backward)(cr_module_hook *h, struct cr_model *m, cr_module *d);
    cr_status (*after_backward)(cr_module_hook *h, struct cr_model *m, cr_module *d);
};

/* An empty model in training mode with chapter 3's forward and chapter 4's backward. */
void cr_model_init(cr_model *m);
/* Frees every module and tensor (safe on an initialised, empty or half-built model). */
void cr_model_free(cr_model *m);

/* Builders: each appends a module reading from `in` (CR_MODEL_INPUT, CR_PREV or an
 * index) and returns its index, or -1 with the message in cr_last_error(). Parameters
 * are allocated here and initialised by cr_model_init_params. */
int cr_model_add_conv(cr_model *m, const char *name, int in, const cr_conv_params *p);
int cr_model_add_batchnorm(cr_model *m, const char *name, int in, int64_t channels,
                           const cr_bn_params *p);
int cr_model_add_groupnorm(cr_model *m, const char *name, int in, int64_t groups,
                           int64_t channels, double eps);
int cr_model_add_relu(cr_model *m, const char *name, int in);
int cr_model_add_maxpool(cr_model *m, const char *name, int in, const cr_pool_params *p);
int cr_model_add_avgpool(cr_model *m, const char *name, int in);
/* like >= 0: the output takes module `like`'s output height and width (p's sizes and
 * scales are then ignored); like == -1: p decides. */
int cr_model_add_upsample(cr_model *m, const char *name, int in, const cr_upsample_params *p,
                          int like);
int cr_model_add_add(cr_model *m, const char *name, int a, int b);
int cr_model_add_dropout(cr_model *m, const char *name, int in, double p);
/* nn.Dropout2d(p): whole channels dropped (cr_dropout2d_forward); identity in eval mode. */
int cr_model_add_dropout2d(cr_model *m, const char *name, int in, double p);

/* PyTorch's default initialisation of every parameter, in module order, from seed
 * (conv: kaiming_uniform_(a=sqrt(5)) and its bias rule; norms: 1, 0, running 0, 1);
 * also seeds the dropout stream. */
cr_status cr_model_init_params(cr_model *m, uint64_t seed);
/* Training (batch statistics, dropout) or evaluation mode, as nn.Module.train(mode). */
void cr_model_train(cr_model *m, bool training);

/* Runs every module in order on x (N x Cin x H x W); *out points at the last module's
 * output (owned by the model, valid until the next forward or free).
 * In training mode every module keeps its output and what its backward needs. In
 * evaluation mode nothing is kept for a backward pass: outputs live in a pool of buffers
 * that a module's output leaves once its last reader has run, element-wise modules
 * (BatchNorm, ReLU, add, dropout) write over their input when they are its only reader,
 * a BatchNorm (and a ReLU after it) is applied when the next module reads the values, in
 * the same pass, and an add followed by a ReLU is one pass. Only the last module's
 * output is then valid; the others keep their shapes (cr_model_print). A model with a
 * hooked module (chapter 7) runs module by module in evaluation mode too, so that each
 * hook sees its module's output. */
cr_status cr_model_forward(cr_model *m, const cr_tensor *x, const cr_tensor **out);
/* Back-propagates dout (the shape of the last forward's output) through the list in
 * reverse, ADDING the parameter gradients to dweight/dbias (as PyTorch's .grad). The
 * input's gradient is not computed. Must follow a forward in training mode (an
 * evaluation forward in between is refused: it kept nothing). */
cr_status cr_model_backward(cr_model *m, const cr_tensor *dout);
/* Zeroes every parameter gradient. */
void cr_model_zero_grad(cr_model *m);

#define CR_PARAM_NAME_MAX (CR_MODULE_NAME_MAX + 16)

/* A list of the model's named tensors, allocated to the model's size (no fixed limit):
 * tensors[i] is the model's own tensor (borrowed), grads[i] its gradient (NULL for a
 * buffer such as running_mean), names[i] its state_dict name ("layer1.0.conv1.weight"). */
typedef struct {
    int n;
    cr_tensor **tensors;
    cr_tensor **grads;
    char (*names)[CR_PARAM_NAME_MAX];
} cr_tensor_list;

/* The trainable parameters in state_dict order (name.weight, name.bias per module),
 * with their gradients: *out is allocated (cr_tensor_list_free). */
cr_status cr_model_param_list(cr_model *m, cr_tensor_list *out);
/* Every state_dict entry in order: parameters and buffers (running_mean, running_var;
 * grads[i] NULL for buffers). num_batches_tracked is not kept: see cr_model_load. */
cr_status cr_model_state_list(cr_model *m, cr_tensor_list *out);
/* Frees the list's arrays (not the model's tensors); safe on a zeroed list. */
void cr_tensor_list_free(cr_tensor_list *l);
/* Total number of trainable scalars. */
int64_t cr_model_num_scalars(const cr_model *m);

/* Writes the state dict (parameters and BatchNorm running statistics, PyTorch's names)
 * to path as safetensors, atomically; meta: NULL or NULL-terminated key/value pairs. */
cr_status cr_model_save(const cr_model *m, const char *path, const char *const *meta);
/* Reads a state dict written by cr_model_save (or by PyTorch through safetensors),
 * strictly, as load_state_dict(strict=True): every tensor of the model must be present
 * with exactly its shape (a [4, 4] tensor for a [16] bias is refused), and a name the
 * model does not know is refused, naming it. num_batches_tracked entries (BatchNorm's
 * step counter, unused with a fixed momentum) are accepted and skipped. Every tensor is
 * checked before any is copied: a refused file leaves the model unchanged. */
cr_status cr_model_load(cr_model *m, const char *path);

/* cr_model_load on a file already open (named path in messages); names that begin with
 * skip_prefix (NULL: none) are left to the caller (a checkpoint's optimizer state). */
cr_status cr_model_load_st(cr_model *m, const cr_st_file *f, const char *path,
                           const char *skip_prefix);

/* ---- a ResNeXt bottleneck ------------------------------------------------------------ */

/* torchvision's Bottleneck (ResNeXt: width = groups * width_per_group), as modules
 * named PREFIX.conv1, .bn1, .conv2, .bn2, .conv3, .bn3 and, when downsample, PREFIX.
 * downsample.0 (conv 1x1, stride) and .downsample.1 (BatchNorm), as torchvision names
 * them; the ReLUs are PREFIX.relu1..3 and the sum PREFIX.add (no parameters):
 *   conv1x1(in -> width) bn relu, conv3x3(width, stride, groups, padding 1) bn relu,
 *   conv1x1(width -> out) bn, + identity (or downsample(x)), relu.
 * Convolutions have no bias. Returns the index of the final ReLU, or -1. */
int cr_model_add_bottleneck(cr_model *m, const char *prefix, int in, int64_t in_channels,
                            int64_t width, int64_t out_channels, int64_t groups,
                            int64_t stride, bool downsample);

/* ---- lab 4's network -------------------------------------------------------------------- */

/* A small fully-convolutional network for segmentation (lab 4's): three encoder stages
 * enc1..enc3 (conv 3x3 padding 1 + BatchNorm + ReLU; 2x2 max-pools pool1, pool2 between),
 * two decoder stages (bilinear up-sampling up2, up1 to the skip's size, add skip2, skip1,
 * then dec2, dec1: conv + BN + ReLU) and a 1x1 conv "head" with `classes` outputs;
 * 3 -> 16 -> 32 -> 32 -> 16 -> 16 channels at full, 1/2, 1/4 size (21 691 parameters for
 * 11 classes). Inputs need H, W >= 4. m is initialised here (free with cr_model_free,
 * also on failure); weights by cr_model_init_params. */
cr_status cr_model_build_fcn(cr_model *m, int64_t classes);

/* Zeroes every module's profile counters (fwd_s, bwd_s and their call counts). Timing
 * happens only while m->profile is true; the cost is two clock reads per module call. */
void cr_model_profile_reset(cr_model *m);

/* The short name of a module kind ("conv", "batchnorm", ...). */
const char *cr_module_kind_name(cr_module_kind k);

/* Prints one line per module (index, name, kind, input, output shape if run). */
void cr_model_print(const cr_model *m, FILE *f);

#ifdef __cplusplus
}
#endif

#endif
