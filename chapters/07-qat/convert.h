/* convert.h — chapter 7: a QAT-prepared (or PTQ-calibrated) model converted to a real int8
 * model, and its evaluation forward.
 *
 * cr_qat_prepare (qat.h) decided, module by module, what the int8 model runs: a quantized
 * convolution group conv [-> BatchNorm] [-> ReLU] becomes one cr_int8_conv (int8_conv.h)
 * with the BatchNorm folded into its weights and bias (the running statistics, as the
 * fake-quantized evaluation forward uses them), the bias in s32, fixed-point
 * requantization to the group's output quantizer and the ReLU fused. Its input is the u8
 * grid the fake-quantized model put there (the producer's output quantizer), or, where
 * the values come from float (the model's input, a float module), the convolution's own
 * input quantizer. Everything else runs in float32 on the dequantized values, exactly as
 * the float model's modules do (GroupNorm, up-sampling, adds, pools, the layers kept in
 * float), and a module that has an output quantizer quantizes its result to u8 again; an
 * add followed by a quantized ReLU (a bottleneck's end) is one pass from the two inputs'
 * bytes to the output's, with the same float operations.
 *
 * Which scale and zero point: the ones the fake quantizers use in an evaluation forward
 * (the fused rule, cr_qparams_choose, on their running min/max), so that the int8 model
 * computes what the fake-quantized evaluation forward computes; PyTorch's convert takes
 * the observer's rule instead (fakequant.h explains the difference).
 * Outputs are clamped to the quantizer's range (0..127 with reduce_range), as the fake
 * quantizer clamps; PyTorch's quantized kernels clamp at 255.
 *
 * What differs from the fake-quantized forward: the convolution's sum is exact in int32
 * where the float model rounds, the bias is rounded to the accumulator's grid
 * (s_x s_w), and the requantization rounds in fixed point (int8_conv.h); each can move an
 * output across a rounding boundary: one step of its quantizer, which later layers may
 * carry on. A weight channel whose fused-rule zero point is not 0 (every weight of the
 * channel of one sign) is quantized with the symmetric rule instead (the int8
 * convolution takes symmetric weights only) and counted in weight_fallbacks.
 *
 * Layout: every tensor N x C x H x W; u8 values on a grid read (q - zero_point) * scale. */
#ifndef CR_CONVERT_H
#define CR_CONVERT_H

#include <stdbool.h>
#include <stdint.h>

#include "int8_conv.h"
#include "model.h"
#include "qat.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A u8 grid: real = (q - zp) * scale, q in [qmin, qmax]. */
typedef struct {
    float scale;
    int32_t zp, qmin, qmax;
} cr_qgrid;

/* What the int8 model runs for one module of the float model. */
typedef enum {
    CR_I8_FLOAT = 0,   /* the float module on dequantized values (then quantized if out) */
    CR_I8_CONV,        /* the int8 convolution of a quantized group */
    CR_I8_ADD_RELU,    /* a quantized add + ReLU in one pass over u8 (or float) inputs */
    CR_I8_INSIDE       /* a BatchNorm or ReLU inside the step before (a group, an add) */
} cr_i8_step_kind;

typedef struct {
    cr_i8_step_kind kind;
    int end;             /* CR_I8_CONV, CR_I8_ADD_RELU: the module whose output it produces */
    cr_int8_conv qc;     /* CR_I8_CONV */
    cr_qgrid in;         /* CR_I8_CONV: the grid its input is quantized to */
    bool in_own;         /* CR_I8_CONV: that grid is its own input quantizer's */
    bool out;            /* the output is quantized to og (a conv group: always) */
    bool out_shared;     /* og is its input's quantizer's (a pool) */
    cr_qgrid og;
} cr_i8_step;

/* One module's output during a forward: float values, u8 values on a grid, or both. */
typedef struct {
    cr_tensor f;         /* float (empty until needed; storage from the model's pool) */
    size_t f_cap;        /* bytes of f's storage */
    uint8_t *q;          /* u8 on grid g (NULL: none) */
    size_t q_cap;
    bool has_f, has_q;
    cr_qgrid g;
    int64_t shape[4];
} cr_i8_value;

typedef struct {
    cr_model *m;         /* borrowed: the float model (parameters of the float modules,
                            geometry); unchanged by the int8 model */
    int n;
    cr_i8_step *steps;   /* one per module */
    cr_i8_value *vals;   /* one per module: its output in the last forward */
    int *readers;        /* steps that read each module's output */
    int *left;           /* during a forward: readers that have not run yet */
    bool keep;           /* keep every module's output after the forward (tests); default
                            false: an output is freed after its last reader */
    const cr_model *teacher;  /* tests (NULL: off): every step reads the teacher's output of
                            its input module from the teacher's last forward (module by
                            module: a hooked model) instead of the int8 model's own, so
                            that each step's difference is its own, not carried on */
    int convs, float_convs, weight_fallbacks;
    void **pool_ptr;     /* released buffers, reused by later outputs */
    size_t *pool_cap;
    int pool_n, pool_max;
    uint8_t *qin;        /* a float input quantized for a convolution */
    size_t qin_cap;
    bool profile;        /* time every step (off by default: two clock reads a step) */
    double *prof_s;      /* per module, summed over forwards while profile is on: wall
                            seconds of the step that module starts (0 for folded modules) */
    double *prof_cvt_s;  /* per module: of prof_s, seconds spent converting values between
                            u8 and float (dequantizing inputs, quantizing the output) */
} cr_int8_model;

/* Converts: q must be prepared on q->m and have run at least one forward (calibration or
 * QAT) so that every quantizer has its parameters. The float model must stay alive and
 * unchanged while im is used (its weights are copied into im; the float modules read
 * theirs). CR_EINVAL names a quantizer without parameters or a module that cannot be
 * converted. im is zeroed first; free with cr_int8_model_free (also after a failure). */
cr_status cr_int8_convert(cr_int8_model *im, const cr_qat *q);
/* Frees what im holds and zeroes it (safe on a zeroed struct). */
void cr_int8_model_free(cr_int8_model *im);

/* The evaluation forward of the int8 model on x (N x Cin x H x W float32, the float
 * model's input); *out (owned by im, valid until the next forward) receives the last
 * module's output as float. With im->keep every module's output stays readable through
 * cr_int8_value_of. */
cr_status cr_int8_forward(cr_int8_model *im, const cr_tensor *x, const cr_tensor **out);

/* Zeroes the profile counters (prof_s, prof_cvt_s). */
void cr_int8_profile_reset(cr_int8_model *im);

/* Module i's output of the last forward (kept only with im->keep, else NULL once freed):
 * NULL for a module folded into a convolution group (its group's end holds it). */
const cr_i8_value *cr_int8_value_of(const cr_int8_model *im, int i);

/* Bytes of the int8 model's parameters: a quantized convolution's weights 1 byte each,
 * its scale (4) and s32 bias (4) per output channel; a folded BatchNorm nothing; every
 * other parameter 4 bytes; each activation quantizer 8 (scale, zero point). */
int64_t cr_int8_model_bytes(const cr_int8_model *im);

/* Quantizes n floats to the grid as the fake quantizer does (same float operations):
 * q = clamp(zp + nearbyint(x * (1 / scale)), qmin, qmax). */
void cr_qgrid_quantize(const cr_qgrid *g, const float *x, int64_t n, uint8_t *q);
/* x = (q - zp) * scale in float32 (the fake quantizer's output). */
void cr_qgrid_dequantize(const cr_qgrid *g, const uint8_t *q, int64_t n, float *x);

/* The max-pool p of x (planes of H x W u8) into y (planes of Ho x Wo, from
 * cr_maxpool2d_out_size), each maximum clamped to [qmin, qmax]: on bytes of one grid, the
 * float max-pool's bytes (the dequantization does not decrease). CR_ENOMEM if a row
 * buffer cannot be had. */
cr_status cr_u8_maxpool(const cr_pool_params *p, int64_t planes, int64_t H, int64_t W,
                        int64_t Ho, int64_t Wo, const uint8_t *x, uint8_t qmin, uint8_t qmax,
                        uint8_t *y);

#ifdef __cplusplus
}
#endif

#endif
