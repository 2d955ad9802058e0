/* train.h — chapter 4: the training engine chapters 6 to 8 share: one step, one epoch,
 * the learning-rate schedule, evaluation over a split, and checkpoints that resume a
 * run exactly.
 *
 * A step is: learning rate from the schedule (linear warm-up, then cosine decay to 0),
 * forward, cross-entropy ignoring the void label, zero_grad, backward, one optimizer
 * step. An epoch shuffles the train split (Fisher-Yates on the trainer's data stream),
 * takes floor(count / batch) batches in that order (the last partial batch is dropped)
 * and, with flips on, draws one left-right flip per frame from the same stream. The
 * same seed, data and thread count give the same bits.
 *
 * A checkpoint is one safetensors file (written atomically by lib/safetensors.h): the
 * model's state dict under PyTorch's names, the optimizer state under
 * "optimizer.state.NAME.exp_avg" / ".exp_avg_sq" (AdamW; SGD: ".momentum_buffer"), and
 * metadata: optimizer step, scheduler step, completed epochs, batch, lr, weight decay,
 * and the two random streams (dropout, data order and flips) as 4 x 64-bit hex words.
 * Loading it into a trainer built the same way continues the run as if it had never
 * stopped: 4 epochs in one go and 2 + resume to 4 give bit-identical weights.
 *
 * Pruning (chapter 6) hooks in through one optional field, t->masks: byte masks
 * multiplied into the gradients before every optimizer step and into the parameters after
 * it, saved in checkpoints as "mask.NAME" (U8) and restored from them. */
#ifndef CR_TRAIN_H
#define CR_TRAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "dataset.h"
#include "dtype.h"
#include "metrics.h"
#include "model.h"
#include "optim.h"
#include "rng.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What a training run is: AdamW with decoupled weight decay, the schedule, the batch. */
typedef struct {
    double lr;               /* peak learning rate: finite, > 0 */
    double weight_decay;     /* AdamW's decoupled decay, >= 0 */
    int64_t batch;           /* frames per step, >= 1 */
    int epochs;              /* total epochs: the schedule spans epochs * steps_per_epoch */
    int warmup_epochs;       /* linear warm-up length in epochs (0: none) */
    uint64_t seed;           /* the data stream: order and flips */
    bool flips;              /* a random left-right flip per frame */
    int32_t ignore_index;    /* the label the loss and the metrics skip */
} cr_train_config;

/* The lab's run: lr 2e-3, weight decay 1e-4, batch 8, 25 epochs, one warm-up epoch,
 * seed 1, flips, CR_IGNORE_INDEX. */
cr_train_config cr_train_config_default(void);

/* The learning rate of step (0-based) out of total steps, peak lr, warm warm-up steps:
 *   step < warm: peak * (step + 1) / warm;  else peak * (1 + cos(pi * t)) / 2 with
 *   t = (step - warm) / max(total - warm, 1). */
double cr_lr_schedule(double peak, int64_t step, int64_t total, int64_t warm);

typedef struct {
    cr_model *model;             /* borrowed: the network being trained */
    cr_train_config cfg;
    cr_tensor_list params;       /* the model's parameters and gradients */
    cr_optimizer opt;
    int64_t steps_per_epoch, total_steps, warmup_steps;
    int64_t step;                /* optimizer steps taken (the scheduler's position) */
    int epoch;                   /* epochs completed */
    double lr;                   /* the learning rate of the last step */
    cr_rng data_rng;             /* order and flips */
    /* per-step buffers */
    cr_tensor x, dlogits;
    int32_t *labels;
    int64_t *order;
    uint8_t *flip;
    int64_t train_count, frame_h, frame_w;
    /* NULL (cr_trainer_init's default), or params.n masks, borrowed (chapter 6's pruner
     * sets them): masks[i] NULL leaves parameter i dense, else it has the parameter's
     * shape and every step multiplies it into the gradient before the optimizer step and
     * into the parameter after it, so that a pruned weight stays exactly zero */
    cr_mask *const *masks;
} cr_trainer;

/* Prepares training of m on a train split of train_count frames of h x w: validates c,
 * lists the parameters, allocates the optimizer state and buffers, seeds the data
 * stream. Fails (CR_EINVAL, naming both numbers) when train_count < batch: an epoch
 * would have no step. The model must already hold its initial weights. */
cr_status cr_trainer_init(cr_trainer *t, cr_model *m, const cr_train_config *c,
                          int64_t train_count, int64_t h, int64_t w);
/* Frees what the trainer allocated (not the model); safe on a zeroed struct. */
void cr_trainer_free(cr_trainer *t);

/* One training step on x (B x 3 x H x W) and labels (B*H*W): *loss receives the batch's
 * cross-entropy. A non-finite loss stops before backward with CR_EINVAL "loss became
 * NaN at step N (lr X)" (N counted from 1), leaving the weights as they were. */
cr_status cr_train_step(cr_trainer *t, const cr_tensor *x, const int32_t *labels, double *loss);

/* What the per-step callback of an epoch sees. */
typedef struct {
    int epoch;          /* 1-based */
    int64_t step;       /* 1-based, over the whole run */
    double loss, lr, ms;
} cr_step_info;
typedef void (*cr_step_fn)(void *ctx, const cr_step_info *info);

/* Renders the frames idx[0..n-1] of a split into x (n x 3 x H x W, allocated) and labels
 * (n*H*W): a data source's one job. rng is the trainer's data stream while training (the
 * source draws its random choices, flips or crops, from it) and NULL when evaluating. */
typedef cr_status (*cr_batch_fn)(void *src, const int64_t *idx, int64_t n, cr_rng *rng,
                                 cr_tensor *x, int32_t *labels);

/* One epoch over t->train_count frames that make(src, ...) renders: shuffle (from the data
 * stream), floor(count / batch) batches in that order, one cr_train_step each; calls
 * fn(ctx, info) after each step (fn may be NULL); *mean_loss (may be NULL) receives the
 * mean of the steps' losses. Increments t->epoch. Any data source trains this way. */
cr_status cr_train_epoch_with(cr_trainer *t, cr_batch_fn make, void *src, cr_step_fn fn,
                              void *ctx, double *mean_loss);

/* cr_train_epoch_with over ds (the train split, t->train_count frames of the trainer's
 * size), drawing one left-right flip per frame from the data stream when flips are on. */
cr_status cr_train_epoch(cr_trainer *t, const cr_dataset *ds, cr_step_fn fn, void *ctx,
                         double *mean_loss);

/* Runs m in evaluation mode over count frames of h x w that make(src, ..., NULL, ...)
 * renders, in batches of `batch` (the last one smaller), restoring its mode afterwards:
 * *loss (may be NULL) receives the mean of the batches' cross-entropy, and the
 * predictions are ADDED to conf (may be NULL; m's classes; reset it first for one split). */
cr_status cr_evaluate_with(cr_model *m, int64_t count, int64_t h, int64_t w, int64_t batch,
                           cr_batch_fn make, void *src, int32_t ignore_index, double *loss,
                           cr_confusion *conf);

/* cr_evaluate_with over every frame of ds at its size. */
cr_status cr_evaluate(cr_model *m, const cr_dataset *ds, int64_t batch, int32_t ignore_index,
                      double *loss, cr_confusion *conf);

/* Writes the checkpoint of t (see above) to path, atomically; meta: NULL or
 * NULL-terminated key/value pairs added to the metadata. With t->masks, each mask is
 * saved as "mask.NAME" (U8, the parameter's shape). */
cr_status cr_checkpoint_save(const cr_trainer *t, const char *path, const char *const *meta);
/* Restores a checkpoint into t (built with the same model and config; the epoch count
 * may differ). Refuses, naming the first mismatch, a file from another model (a tensor
 * missing, unknown or of another shape), another optimizer, batch, lr or weight decay,
 * or a train split of another length; a refused file changes nothing. Masks: the file
 * must hold "mask.NAME" for exactly the parameters t->masks masks (same shapes, bytes 0
 * or 1); they are copied into t->masks (the weights are loaded as saved, already
 * masked). */
cr_status cr_checkpoint_load(cr_trainer *t, const char *path);

#ifdef __cplusplus
}
#endif

#endif
