/* cuda_train.h — chapter 5: training a chapter 4 model (chapter 8's FPN, lab 4's network) on
 * the device: chapter 4's training step (forward in training mode, cross-entropy, backward,
 * AdamW) with chapter 5's kernels, every buffer in device memory.
 *
 * The step mirrors cr_train_step (train.h) module by module: convolutions by
 * cr_cuda_conv2d and cr_cuda_conv2d_backward, the layers by cuda_layers.h, dropout masks
 * drawn on the host from the model's own stream in chapter 4's order (the same masks as a
 * CPU step from the same state), AdamW by cr_cuda_adamw_update. Errors as in cuda_gemm.h. */
#ifndef CR_CUDA_TRAIN_H
#define CR_CUDA_TRAIN_H

#include <stdint.h>

#include "cuda_layers.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cr_cuda_trainer cr_cuda_trainer;

/* A device copy of m for training with optimizer c (kind CR_OPTIM_ADAMW): parameters,
 * running statistics, gradients, AdamW's moments (zero), and per module its output and
 * output gradient (allocated at the first step). m must stay alive and in training mode
 * for the steps; global average pools and modules with a later chapter's hook are
 * refused. */
cr_status cr_cuda_trainer_create(cr_model *m, const cr_optim_config *c, cr_cuda_trainer **out);
/* One step at learning rate lr on x (device, shape in) with labels (device, N*H*W int32,
 * each in 0..classes-1 or ignore_index): the forward in training mode (batch statistics,
 * running statistics updated), the mean cross-entropy into *loss (host), the backward,
 * then AdamW step t+1. Waits for the device (the loss comes back). */
cr_status cr_cuda_train_step(cr_cuda_trainer *t, const float *x, cr_cuda_nchw in,
                             const int32_t *labels, int32_t ignore_index, double lr,
                             double *loss);
/* Copies the device parameters and running statistics back into m's tensors, and with
 * grads the last step's gradients into m's dweight and dbias. */
cr_status cr_cuda_trainer_to_host(cr_cuda_trainer *t, bool grads);
/* Device bytes t holds (parameters, moments, gradients, activations, their gradients). */
size_t cr_cuda_trainer_bytes(const cr_cuda_trainer *t);
/* Frees t and its device memory (NULL is fine). */
void cr_cuda_trainer_free(cr_cuda_trainer *t);

#ifdef __cplusplus
}
#endif

#endif
