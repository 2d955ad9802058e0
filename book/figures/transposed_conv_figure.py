#!/usr/bin/env python3
"""Draws chapter 4's figure of a strided transposed convolution as SVG: the
gradient of a stride-2 convolution is a stride-1 convolution of the output
gradient spread out with zeros.

    python3 book/figures/transposed_conv_figure.py OUT.svg

The example: a forward convolution of a 5x5 input with a 3x3 kernel, stride 2,
no padding, gives a 2x2 output. Backwards: the 2x2 gradient is spread out, stride
- 1 zeros inserted between its pixels, padded with kernel - 1 zeros on every
side, and convolved (stride 1) with the filter flipped in space, which gives the
5x5 input gradient. Every size is computed from those four numbers.
"""
import sys

from svgkit import Svg

H, R, STRIDE, PAD = 5, 3, 2, 0
HO = (H + 2 * PAD - R) // STRIDE + 1                 # forward output size
SPREAD = (HO - 1) * STRIDE + 1                        # with stride-1 zeros between
BORDER = R - 1 - PAD                                  # zeros around it
FULL = SPREAD + 2 * BORDER                            # the grid convolved
OUT = FULL - R + 1                                    # = H


def draw(out):
    assert OUT == H, 'the transposed convolution must give back the input size'
    s = Svg(800, 400, 'A strided transposed convolution: zeros inserted, then a convolution',
            f'The {HO} by {HO} gradient of a stride-{STRIDE} convolution is spread out with '
            f'{STRIDE - 1} zero between pixels, padded with {BORDER} zeros, and convolved with '
            f'the flipped {R} by {R} filter, giving the {H} by {H} input gradient.')
    blue, pale, inserted = '#1f5f99', '#d6e6f5', '#fbe3cf'
    # 1. The output gradient.
    c1 = 40
    x1, y1 = 60, 150
    s.text(x1 + HO * c1 / 2, 40, 'output gradient', 14, weight='bold')
    s.text(x1 + HO * c1 / 2, 58, f'{HO}×{HO}', 14, weight='bold')
    s.text(x1 + HO * c1 / 2, y1 + HO * c1 + 22, f'forward: {H}×{H} input,', 11, fill='#555')
    s.text(x1 + HO * c1 / 2, y1 + HO * c1 + 38, f'{R}×{R} filter, stride {STRIDE}', 11, fill='#555')
    for i in range(HO):
        for j in range(HO):
            s.rect(x1 + j * c1, y1 + i * c1, c1, c1, pale, blue, 1.5)
            s.text(x1 + j * c1 + c1 / 2, y1 + i * c1 + 25, f'ȳ{i}{j}', 13)
    s.arrow(x1 + HO * c1 + 10, y1 + HO * c1 / 2, x1 + HO * c1 + 50, y1 + HO * c1 / 2, '#444', 2)
    # 2. Spread out and padded.
    c2 = 30
    x2, y2 = 230, 80
    s.text(x2 + FULL * c2 / 2, 40, f'spread out and padded, {FULL}×{FULL}', 14, weight='bold')
    s.text(x2 + FULL * c2 / 2, 58, f'{STRIDE - 1} zero between pixels (orange), {BORDER} around '
           f'(white)', 11, fill='#555')
    for i in range(FULL):
        for j in range(FULL):
            a, b = i - BORDER, j - BORDER
            inside = 0 <= a < SPREAD and 0 <= b < SPREAD
            if inside and a % STRIDE == 0 and b % STRIDE == 0:
                s.rect(x2 + j * c2, y2 + i * c2, c2, c2, pale, blue, 1.5)
                s.text(x2 + j * c2 + c2 / 2, y2 + i * c2 + 20, f'ȳ{a // STRIDE}{b // STRIDE}', 10)
            else:
                s.rect(x2 + j * c2, y2 + i * c2, c2, c2, inserted if inside else '#fff', '#bbb', 0.8)
                s.text(x2 + j * c2 + c2 / 2, y2 + i * c2 + 20, '0', 10, fill='#999')
    # The flipped filter's window at input position (1, 2).
    wi, wj = 1, 2
    s.rect(x2 + wj * c2, y2 + wi * c2, R * c2, R * c2, 'none', '#b00020', 3)
    s.text(x2 + FULL * c2 / 2, y2 + FULL * c2 + 22, f'a {R}×{R} window of the flipped filter, '
           f'stride 1', 12, fill='#b00020')
    s.arrow(x2 + FULL * c2 + 10, y2 + FULL * c2 / 2, x2 + FULL * c2 + 50, y2 + FULL * c2 / 2,
            '#444', 2)
    # 3. The input gradient.
    c3 = 32
    x3, y3 = x2 + FULL * c2 + 70, 110
    s.text(x3 + H * c3 / 2, 40, f'input gradient, {H}×{H}', 14, weight='bold')
    for i in range(OUT):
        for j in range(OUT):
            hit = (i, j) == (wi, wj)
            s.rect(x3 + j * c3, y3 + i * c3, c3, c3, '#f7d4da' if hit else '#f7f7f4',
                   '#b00020' if hit else '#888', 2 if hit else 1)
            s.text(x3 + j * c3 + c3 / 2, y3 + i * c3 + 21, f'x̄{i}{j}', 10)
    s.text(400, 385, f'{FULL} − {R} + 1 = {OUT}: the transposed convolution gives back the '
           f'input\'s size.', 13)
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: transposed_conv_figure.py OUT.svg')
    draw(sys.argv[1])
