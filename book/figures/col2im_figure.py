#!/usr/bin/env python3
"""Draws chapter 4's col2im figure as SVG: the im2col figure of chapter 2 run
backwards.

    python3 book/figures/col2im_figure.py OUT.svg

The same example as chapter 2 (a 4x4 input, padding 1, a 3x3 kernel, stride 1):
left, the 9 x 16 patch matrix, each entry naming the input pixel im2col copied
there (0 where it came from the padding); right, the input, each pixel with the
number of patch entries col2im adds onto it (counted here from the same windows,
not typed): 4 at a corner, 6 on an edge, 9 inside. Entries from the padding are
dropped. Two columns (outputs (0,0) and (1,2)) and their windows are coloured.
"""
import sys

from svgkit import Svg

H = W = 4
KH = KW = 3
PAD = 1
HO, WO = H + 2 * PAD - KH + 1, W + 2 * PAD - KW + 1
HILITE = {(0, 0): ('#1f77b4', '#d6e6f5'), (1, 2): ('#d2691e', '#fbe3cf')}


def source(row, col):
    """The input pixel (i, j) patch entry (row, col) was copied from, or None (padding)."""
    r, s = divmod(row, KW)
    p, q = divmod(col, WO)
    i, j = p - PAD + r, q - PAD + s
    return (i, j) if 0 <= i < H and 0 <= j < W else None


def draw(out):
    mw, mh = 24, 22
    mx, my = 60, 90
    s = Svg(800, 370, 'col2im: every patch entry is added back onto the pixel it came from',
            'The 9 by 16 patch matrix of a 4 by 4 input with padding 1 and a 3 by 3 kernel; '
            'col2im adds each entry onto its source pixel, so a corner pixel receives 4 '
            'entries, an edge pixel 6 and an inner pixel 9; entries from the padding are dropped.')
    s.text(mx + 16 * mw / 2, 30, 'patch matrix (gradient), 9 × 16', 16, weight='bold')
    s.text(mx + 16 * mw / 2, 50, 'one column per output position, one row per filter tap', 12,
           fill='#555')
    count = {}
    for col in range(HO * WO):
        pq = divmod(col, WO)
        for row in range(KH * KW):
            src = source(row, col)
            fill = HILITE[pq][1] if pq in HILITE else '#fff'
            s.rect(mx + col * mw, my + row * mh, mw, mh, fill, '#bbb', 0.7)
            if src:
                count[src] = count.get(src, 0) + 1
                s.text(mx + col * mw + mw / 2, my + row * mh + 15, f'{src[0]}{src[1]}', 9.5)
            else:
                s.text(mx + col * mw + mw / 2, my + row * mh + 15, '0', 9.5, fill='#aaa')
    for (p, q), (stroke, _) in HILITE.items():
        col = p * WO + q
        s.rect(mx + col * mw, my, mw, KH * KW * mh, 'none', stroke, 2)
        s.text(mx + col * mw + mw / 2, my - 6, f'({p},{q})', 10, fill=stroke)
    s.text(mx - 8, my + 4.5 * mh + 5, 'taps', 11, anchor='end', fill='#555')
    s.text(mx + 16 * mw / 2, my + 9 * mh + 24, 'each entry names its source pixel ij; 0: padding, '
           'dropped by col2im', 12, fill='#555')
    # Arrow to the input.
    ax0 = mx + 16 * mw + 12
    s.arrow(ax0, my + 4.5 * mh, ax0 + 56, my + 4.5 * mh, '#444', 2)
    s.text(ax0 + 28, my + 4.5 * mh - 10, 'col2im', 13, weight='bold')
    s.text(ax0 + 28, my + 4.5 * mh + 22, 'add', 12, fill='#555')
    # The input with counts.
    cell = 44
    ix, iy = ax0 + 80, my + 10
    s.text(ix + W * cell / 2, 30, 'input gradient, 4 × 4', 16, weight='bold')
    s.text(ix + W * cell / 2, 50, 'entries added onto each pixel', 12, fill='#555')
    for i in range(H):
        for j in range(W):
            s.rect(ix + j * cell, iy + i * cell, cell, cell, '#f7f7f4', '#888')
            s.text(ix + j * cell + cell / 2, iy + i * cell + 19, f'x{i}{j}', 11, fill='#555')
            s.text(ix + j * cell + cell / 2, iy + i * cell + 36, f'+{count[(i, j)]}', 14,
                   weight='bold')
    for (p, q), (stroke, _) in HILITE.items():
        i0, j0 = max(p - PAD, 0), max(q - PAD, 0)
        i1, j1 = min(p - PAD + KH, H), min(q - PAD + KW, W)
        off = 3 if (p, q) == (0, 0) else -3
        s.rect(ix + j0 * cell + off, iy + i0 * cell + off, (j1 - j0) * cell - 2 * off,
               (i1 - i0) * cell - 2 * off, 'none', stroke, 2.5)
    s.text(ix + W * cell / 2, iy + H * cell + 26, 'window of output (0,0) / (1,2)', 12,
           fill='#555')
    total = sum(count.values())
    s.text(400, 355, f'{total} of the {KH * KW * HO * WO} patch entries land on a pixel; '
           f'the other {KH * KW * HO * WO - total} came from the padding.', 13)
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: col2im_figure.py OUT.svg')
    draw(sys.argv[1])
