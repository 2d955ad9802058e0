/* optim.h — chapter 4: the optimizers and the initialisation PyTorch uses by default.
 *
 * The update rules are PyTorch 1.13's (torch.optim.SGD and torch.optim.AdamW, with
 * maximize=False, amsgrad=False); each update is computed in double from the float32
 * parameter, gradient and state, then rounded once. A parameter, its gradient and its
 * state tensors have the same number of elements (any shape). */
#ifndef CR_OPTIM_H
#define CR_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "error.h"
#include "rng.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { CR_OPTIM_SGD = 0, CR_OPTIM_ADAMW } cr_optim_kind;

/* The options of torch.optim.SGD (lr, momentum, dampening, weight_decay, nesterov) and
 * torch.optim.AdamW (lr, beta1, beta2, eps, weight_decay); unused fields are ignored. */
typedef struct {
    cr_optim_kind kind;
    double lr;
    double momentum, dampening;   /* SGD */
    bool nesterov;                /* SGD: needs momentum > 0 and dampening == 0 */
    double beta1, beta2, eps;     /* AdamW */
    double weight_decay;          /* SGD: added to the gradient (L2); AdamW: decoupled */
} cr_optim_config;

/* PyTorch's defaults: SGD(lr) with no momentum, no weight decay; AdamW(lr) with
 * betas (0.9, 0.999), eps 1e-8, weight_decay 0.01. */
cr_optim_config cr_sgd_config(double lr, double momentum, double weight_decay);
cr_optim_config cr_adamw_config(double lr, double weight_decay);

/* One SGD step on one parameter p (any shape) with gradient g and momentum buffer buf
 * (same numel; unused without momentum). first: this is the buffer's first step, when
 * PyTorch sets buf = d_p without dampening. With d_p = g + weight_decay * p:
 *   buf = momentum * buf + (1 - dampening) * d_p;  d_p = nesterov ? d_p + momentum * buf : buf;
 *   p -= lr * d_p. */
cr_status cr_sgd_update(const cr_optim_config *c, cr_tensor *p, const cr_tensor *g,
                        cr_tensor *buf, bool first);

/* One AdamW step number t (1, 2, ...) on p (any shape) with gradient g and moment
 * buffers m, v (same numel, zero before step 1):
 *   p *= 1 - lr * weight_decay;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
 *   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps). */
cr_status cr_adamw_update(const cr_optim_config *c, int64_t t, cr_tensor *p, const cr_tensor *g,
                          cr_tensor *m, cr_tensor *v);
/* The same step in float (cr_adamw_update computes in double), element by element in the
 * order PyTorch's float AdamW uses, on the CPU's vector lanes and OpenMP threads: within a
 * few float roundings of cr_adamw_update, and the same bits for any thread count. What
 * cr_optim_step runs. */
cr_status cr_adamw_update_fast(const cr_optim_config *c, int64_t t, cr_tensor *p,
                               const cr_tensor *g, cr_tensor *m, cr_tensor *v);

/* An optimizer over n parameters: the config, the step count and per-parameter state
 * (SGD: the momentum buffer; AdamW: m and v), allocated by cr_optim_init. */
typedef struct {
    cr_optim_config cfg;
    int n;
    int64_t step;        /* steps taken */
    cr_tensor *state1;   /* n tensors: SGD momentum buffer / AdamW m */
    cr_tensor *state2;   /* n tensors: AdamW v (unused by SGD) */
} cr_optimizer;

/* Validates the config and allocates zeroed state for params[0..n-1] (their shapes). */
cr_status cr_optim_init(cr_optimizer *o, const cr_optim_config *c, cr_tensor *const *params,
                        int n);
/* One step: params[i] updated from grads[i] (same shapes as at init). */
cr_status cr_optim_step(cr_optimizer *o, cr_tensor *const *params, const cr_tensor *const *grads);
/* Sets the learning rate for the next steps (schedules). */
void cr_optim_set_lr(cr_optimizer *o, double lr);
/* Frees the state (safe on a zeroed struct). */
void cr_optim_free(cr_optimizer *o);

/* nn.Conv2d's default initialisation, seeded: weight (Cout x Cin/groups x kh x kw) by
 * kaiming_uniform_(a = sqrt(5)), i.e. uniform in +-1/sqrt(fan_in) with fan_in =
 * Cin/groups * kh * kw, and bias (Cout, may be NULL) uniform in the same +-1/sqrt(fan_in).
 * Same seed, same values (our stream, not PyTorch's). */
cr_status cr_init_conv_default(cr_rng *rng, cr_tensor *weight, cr_tensor *bias);
/* nn.BatchNorm2d / nn.GroupNorm's initialisation: weight 1, bias 0, and (if given)
 * running_mean 0, running_var 1 (all C). */
void cr_init_norm_default(cr_tensor *weight, cr_tensor *bias, cr_tensor *running_mean,
                          cr_tensor *running_var);

#ifdef __cplusplus
}
#endif

#endif
