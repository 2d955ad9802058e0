/* shrink.h — chapter 6: structured sparsity made physical. Pruned filters (output channels
 * whose weights are all zero) are cut out of a convolution, together with the matching
 * input channels of the convolutions that read them and the BatchNorm / GroupNorm entries
 * in between, giving a smaller dense model that computes what the masked one computes.
 *
 * What "computes the same" allows. A pruned filter outputs a constant (its bias, or 0);
 * a BatchNorm after it turns that into another constant (beta - mean * gamma / std, in
 * evaluation mode), a ReLU into max(c, 0). A channel whose constant is 0 is removed
 * freely. A nonzero constant c is removed only where the reader can absorb it exactly:
 * a convolution that reads no zero padding adds c * sum(w[o, ch, :, :]) to every output
 * o, which goes into its bias or, if it has none and its only reader is a BatchNorm, into
 * that BatchNorm's running mean (evaluation mode). A zero-padded 3x3 reader sees the
 * constant at the borders differently, so such a channel stays (the report counts it).
 * GroupNorm: a channel goes only with its whole group (the other groups' statistics are
 * then untouched), and the group count drops. Grouped convolutions lose whole groups only:
 * a group whose filters are all zero goes, with its input channels, which are then cut
 * from the convolution (and norms) that produce them. A grouped reader whose input group
 * is entirely zero has those weights zeroed first (exactly: they multiply zeros), so that
 * its own group goes when it is reached.
 *
 * The shrink runs in evaluation mode (BatchNorm's running statistics are what it folds);
 * the model must be in it (cr_model_train(m, false)). */
#ifndef CR_SHRINK_H
#define CR_SHRINK_H

#include <stdint.h>

#include "conv_desc.h"
#include "model.h"
#include "tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What cr_model_shrink did. */
typedef struct {
    int64_t channels_removed;   /* conv output channels cut, over all convolutions */
    int64_t channels_kept_dead; /* pruned (all-zero) filters still there afterwards: their
                                   constant could not be absorbed, or they feed an add */
    int64_t groups_removed;     /* whole groups cut from grouped convolutions */
    int64_t weights_before, weights_after;   /* convolution weights, all layers */
} cr_shrink_report;

/* Cuts every removable pruned filter of m (in evaluation mode) as the header describes;
 * rep may be NULL. Module names, order and kinds are unchanged; conv, BatchNorm and
 * GroupNorm parameters shrink (their gradients are resized and zeroed; an optimizer's
 * state, sized for the old parameters, must be made anew). */
cr_status cr_model_shrink(cr_model *m, cr_shrink_report *rep);

/* One convolution on its own: keep[o] (Cout entries, 0 or 1) selects output channels;
 * w (Cout x Cin_g x kh x kw) and b (Cout or NULL) become new tensors w2, b2 (b2 empty when
 * b is NULL) and p2 the parameters of the smaller conv. With groups > 1, keep must select
 * whole groups, and the kept groups' input channels are the new conv's inputs (*in_keep,
 * if not NULL, receives Cin entries saying which input channels stay). */
cr_status cr_conv_keep_filters(const cr_conv_params *p, const cr_tensor *w, const cr_tensor *b,
                               const uint8_t *keep, cr_conv_params *p2, cr_tensor *w2,
                               cr_tensor *b2, uint8_t *in_keep);
/* Marks in keep (Cout entries) the filters of w (Cout x Cin_g x kh x kw) with a nonzero
 * weight; returns how many. */
int64_t cr_conv_live_filters(const cr_tensor *w, uint8_t *keep);

#ifdef __cplusplus
}
#endif

#endif
