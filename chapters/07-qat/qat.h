/* qat.h — chapter 7: quantization-aware training of chapter 4's model, configured per
 * layer by state-dict name.
 *
 * cr_qat_prepare walks a built cr_model and places fake quantizers as PyTorch's FX
 * prepare_qat_fx does with the x86 QAT qconfig mapping, on the patterns this model has:
 *   - every convolution not kept in float gets a weight quantizer (I8 per channel,
 *     symmetric); a BatchNorm that reads only that convolution is folded into it as
 *     torch.ao's QAT ConvBn2d does (fold.h);
 *   - the end of each quantized group, conv [-> bn] [-> relu], gets an activation
 *     quantizer on its output (U8 per tensor, 0..127), and so do an add [-> relu] and a
 *     bilinear up-sampling inside the quantized part;
 *   - a max-pool or a global average pool of a quantized tensor is quantized again with
 *     its input's quantizer (FX shares one object: it observes both tensors);
 *   - a quantized convolution whose input is not already on a quantization grid (the
 *     model's input, a float layer's output) quantizes its input with its own quantizer.
 * Where FX inserts one observer for a tensor read by several quantized convolutions
 * coming from float, each of those convolutions here has its own.
 *
 * Modules are hooked through cr_module.hook (model.h); the model itself is unchanged, so
 * cr_qat_free (before cr_model_free) gives the plain float model back. */
#ifndef CR_QAT_H
#define CR_QAT_H

#include <stdbool.h>
#include <stdint.h>

#include "fakequant.h"
#include "fold.h"
#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What is attached to one module (every flag false: nothing). */
typedef struct {
    cr_module_hook hook;     /* first member: the model calls back with &site->hook */
    int module;              /* its index in the model */
    /* a quantized convolution (weight quantizer, BatchNorm module bn folded or -1) */
    bool conv;
    int bn;
    cr_qconv qconv;
    /* its input quantizer, where the input is not on a grid */
    bool input;
    cr_fake_quant in_fq;
    cr_tensor in_q;          /* the quantized input the convolution read */
    uint8_t *in_mask;
    size_t in_mask_len;
    /* an output quantizer: its own, or (out_share) the one of its input's grid */
    bool output;
    cr_fake_quant out_fq;
    cr_fake_quant *out_share;
    cr_tensor pre;           /* the output before quantization (swapped in for backward) */
    uint8_t *out_mask;
    size_t mask_len;
} cr_qat_site;

typedef struct {
    cr_model *m;             /* borrowed */
    int n;                   /* = m->n when prepared */
    cr_qat_site *sites;      /* one per module */
} cr_qat;

/* The original project's partial QAT: the first convolution and the segmentation head
 * stay in float ({"encoder.conv1", "segmentation_head", NULL}). */
extern const char *const cr_qat_partial_float[];

/* Attaches quantizers to m as above; modules named by keep_float (NULL-terminated list of
 * state-dict prefixes: "encoder.conv1" matches that module and "encoder.conv1.*"; NULL
 * list: full QAT) stay float. Observers and fake quantization start enabled. */
cr_status cr_qat_prepare(cr_qat *q, cr_model *m, const char *const *keep_float);
/* Detaches every hook and frees the quantizers (the model is float again). */
void cr_qat_free(cr_qat *q);

/* Turns every observer and every fake quantizer on or off: QAT (true, true); calibration
 * for post-training quantization (true, false); evaluation of the quantized model after
 * either (false, true); float (false, false). */
void cr_qat_enable(cr_qat *q, bool observe, bool fake_quant);
/* Every observer keeps the extremes of what it sees (on) or the moving average (off, the
 * QAT recipe's): post-training calibration as PyTorch's MinMaxObserver and
 * PerChannelMinMaxObserver do it (its default x86 PTQ recipe uses a histogram observer
 * for activations instead). */
void cr_qat_observe_minmax(cr_qat *q, bool on);
/* torch.ao's freeze_bn_stats: every folded BatchNorm uses its running statistics from now
 * on, in training too (unfreeze: frozen = false). */
void cr_qat_freeze_bn(cr_qat *q, bool frozen);

/* The site of the module named name, or NULL. */
cr_qat_site *cr_qat_site_of(cr_qat *q, const char *name);
/* Counts of quantized convolutions, folded BatchNorms and activation quantizers (inputs
 * and outputs; a shared one once), for reports and tests (any may be NULL). */
void cr_qat_counts(const cr_qat *q, int *convs, int *folded, int *activations);

#ifdef __cplusplus
}
#endif

#endif
