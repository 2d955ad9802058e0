/* kit_given_ch08.c — given code for chapter 8's coursework kit (kits/README.md).
 *
 * The epoch task's test trains a network for a few epochs of augmented crops, and the
 * network it asks for, cr_fpn_build, holds another task (fpn, the top-down merge). The
 * kit compiles this file with CR_GIVEN_cr_fpn_build for the epoch's test program and
 * makes the student's definition weak, so the epoch is graded on its own. It gives away
 * nothing of the FPN on purpose: what it builds is not an FPN at all but the smallest
 * network that can learn the test's synthetic rule (a class per range of the red
 * channel) from crops: two 3x3 convolutions with BatchNorm and ReLU and a 1x1 head. */
#include <stdio.h>

#include "fpn.h"

#ifdef CR_GIVEN_cr_fpn_build
/* conv k x k (padding k/2, stride 1) from in, with or without bias; the module's index. */
static int given_conv(cr_model *m, const char *name, int in, int64_t cin, int64_t cout,
                      int64_t k, bool bias)
{
    cr_conv_params p = cr_conv_params_default(cin, cout, k);
    cr_conv_set_padding(&p, k / 2, k / 2);
    p.bias = bias;
    return cr_model_add_conv(m, name, in, &p);
}

/* Not the FPN: N x 3 x H x W -> conv3x3(16)-BN-ReLU -> conv3x3(16)-BN-ReLU -> conv1x1
 * (c->classes, bias) -> N x classes x H x W. Only c->classes is read. */
cr_status cr_fpn_build(cr_model *m, const cr_fpn_config *c)
{
    if (c->classes < 1)
        return cr_fail(CR_EINVAL, "fpn: classes = %lld: expected >= 1", (long long)c->classes);
    const cr_bn_params bnp = cr_bn_params_default();
    int x = given_conv(m, "given.conv1", CR_MODEL_INPUT, 3, 16, 3, false);
    if (x >= 0) x = cr_model_add_batchnorm(m, "given.bn1", x, 16, &bnp);
    if (x >= 0) x = cr_model_add_relu(m, "given.relu1", x);
    if (x >= 0) x = given_conv(m, "given.conv2", x, 16, 16, 3, false);
    if (x >= 0) x = cr_model_add_batchnorm(m, "given.bn2", x, 16, &bnp);
    if (x >= 0) x = cr_model_add_relu(m, "given.relu2", x);
    if (x >= 0) x = given_conv(m, "given.head", x, 16, c->classes, 1, true);
    return x < 0 ? cr_last_status() : CR_OK;
}
#endif
