#!/usr/bin/env python3
"""Draws chapter 6's figure of what each kind of magnitude pruning removes, as SVG.

    python3 book/figures/pruning_figure.py OUT.svg

One small convolution weight, 4 filters x 3 input channels x 3 x 3, drawn as 4 rows
(filters) of 3 blocks (input channels) of 3 x 3 cells, each cell shaded by |w|. The
same weight is pruned at sparsity 0.5 three ways, with chapter 6's rules (int(n * s)
dropped, smallest first, ties by index): unstructured (54 of 108 weights), whole
filters by L2 norm (2 of 4), whole input channels by L2 norm (int(3 * 0.5) = 1 of 3).
The weights are drawn from a fixed seed, so the figure is the same on every build.
"""
import math
import random
import sys

from svgkit import Svg

O, C, K = 4, 3, 3          # filters, input channels, kernel size
S = 0.5                    # sparsity
CELL, GAP_C, GAP_O = 13, 6, 8


def weights():
    rng = random.Random(6)
    return [[[[rng.uniform(-1, 1) for _ in range(K)] for _ in range(K)] for _ in range(C)]
            for _ in range(O)]


def drop_smallest(scores, k):
    """The indices of the k smallest scores, ties by index (chapter 6's selection)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i))
    return set(order[:k])


def masks(w):
    flat = [(o, c, r, q) for o in range(O) for c in range(C) for r in range(K) for q in range(K)]
    mag = [abs(w[o][c][r][q]) for o, c, r, q in flat]
    gone = drop_smallest(mag, int(len(flat) * S))
    unstructured = {flat[i] for i in range(len(flat)) if i not in gone}
    fnorm = [math.sqrt(sum(v * v for c in range(C) for row in w[o][c] for v in row)) for o in range(O)]
    fgone = drop_smallest(fnorm, int(O * S))
    filters = {t for t in flat if t[0] not in fgone}
    cnorm = [math.sqrt(sum(v * v for o in range(O) for row in w[o][c] for v in row)) for c in range(C)]
    cgone = drop_smallest(cnorm, int(C * S))
    channels = {t for t in flat if t[1] not in cgone}
    return [('unstructured', f'{len(flat) - len(unstructured)} of {len(flat)} weights,',
             'the smallest |w|', unstructured),
            ('whole filters (dim 0)', f'{len(fgone)} of {O} filters,', 'the smallest L2 norms',
             filters),
            ('input channels (dim 1)', f'{len(cgone)} of {C} input channels,',
             'the smallest L2 norm', channels)]


def shade(v):
    """A blue whose depth follows |v| (0..1)."""
    a = min(1.0, abs(v))
    r, g, b = (int(round(255 - a * (255 - t))) for t in (31, 95, 153))
    return f'#{r:02x}{g:02x}{b:02x}'


def draw(out):
    w = weights()
    panels = masks(w)
    pw = C * K * CELL + (C - 1) * GAP_C
    ph = O * K * CELL + (O - 1) * GAP_O
    margin, between = 70, 150
    width = margin + 3 * pw + 2 * between + 50
    s = Svg(width, ph + 150, 'What each kind of magnitude pruning removes',
            f'One weight of {O} filters, {C} input channels and {K} by {K} taps, shaded by '
            f'magnitude, pruned at sparsity {S} three ways: single weights of smallest '
            'magnitude, whole filters, or whole input channels of smallest L2 norm. '
            'Pruned weights are white with a grey cross.')
    for p, (title, sub, sub2, kept) in enumerate(panels):
        x0 = margin + p * (pw + between)
        y0 = 78
        s.text(x0 + pw / 2, 30, title, 14, weight='bold')
        s.text(x0 + pw / 2, 48, sub, 11, fill='#555')
        s.text(x0 + pw / 2, 62, sub2, 11, fill='#555')
        for o in range(O):
            if p == 0:
                s.text(x0 - 10, y0 + o * (K * CELL + GAP_O) + K * CELL / 2 + 4, f'filter {o}',
                       11, anchor='end', fill='#555')
            for c in range(C):
                bx = x0 + c * (K * CELL + GAP_C)
                by = y0 + o * (K * CELL + GAP_O)
                for r in range(K):
                    for q in range(K):
                        x, y = bx + q * CELL, by + r * CELL
                        if (o, c, r, q) in kept:
                            s.rect(x, y, CELL, CELL, shade(w[o][c][r][q]), '#888', 0.5)
                        else:
                            s.rect(x, y, CELL, CELL, '#fff', '#bbb', 0.5)
                            s.line(x + 3, y + 3, x + CELL - 3, y + CELL - 3, '#bbb', 1)
                            s.line(x + CELL - 3, y + 3, x + 3, y + CELL - 3, '#bbb', 1)
        for c in range(C):
            s.text(x0 + c * (K * CELL + GAP_C) + K * CELL / 2, y0 + ph + 18, f'in {c}', 11,
                   fill='#555')
    s.text(width / 2, ph + 130, 'darker blue: larger |w|; white with a cross: pruned (mask 0)',
           11, fill='#555')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    draw(sys.argv[1])
