/* kit_given_ch01.c — given code for chapter 1's coursework kit (kits/README.md).
 *
 * direct_loops's test program in the kit runs on this cr_pad_index in place of the
 * student's (the pad_index task), so that the seven loops are graded on their own: the
 * kit compiles this file with CR_GIVEN_cr_pad_index and makes the student's definition
 * weak. It takes another road on purpose: instead of the closed form per mode that the
 * task asks for, it builds the padded row outwards from the image's edge one pixel at a
 * time, each new pixel's source one step from the source of the pixel before it. */
#include "direct.h"

#ifdef CR_GIVEN_cr_pad_index
/* Which input index the padded coordinate i of a row of n pixels copies (-1: none, a
 * zero), found by walking from the nearest edge to i: replicate stays on the edge,
 * reflect walks back into the row (turning at its ends), circular walks on from the
 * other end. Takes |i| steps at most. */
int64_t cr_pad_index(int64_t i, int64_t n, cr_pad_mode m)
{
    if (i >= 0 && i < n) return i;
    if (n < 1 || (m != CR_PAD_REFLECT && m != CR_PAD_REPLICATE && m != CR_PAD_CIRCULAR))
        return -1;                                   /* zeros: no source pixel */
    const int64_t out = i < 0 ? -1 : 1;              /* the walk's direction */
    int64_t at = i < 0 ? 0 : n - 1;                  /* the padded position reached */
    int64_t src = at;                                /* the input pixel it copies */
    int64_t back = -out;                             /* reflect: where the source moves */
    while (at != i) {
        at += out;
        if (m == CR_PAD_REFLECT && n > 1) {
            if (src + back < 0 || src + back >= n) back = -back;   /* turn at an end */
            src += back;
        } else if (m == CR_PAD_CIRCULAR) {
            src += out;
            if (src < 0) src = n - 1;
            if (src >= n) src = 0;
        }                                            /* replicate: the edge again */
    }
    return src;
}
#endif
