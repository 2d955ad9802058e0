#!/usr/bin/env python3
"""Draws the im2col figure of chapter 2 as SVG (Python standard library only).

    python3 book/figures/im2col_figure.py OUT.svg

Chapter 2's notation: output position (p, q), filter tap (c, r, s), patch-matrix
row (c*R + r)*S + s and column p*Wo + q. Left: a 4x4 input with padding 1 (a ring
of zeros) and two 3x3 windows, those of outputs (0,0) and (1,2). Right: the 9x16
patch matrix, one column per output position, the two windows' columns in the
same colours; every cell names the input pixel copied there (or 0 from the
padding), so the reader sees each pixel land in up to nine columns. Bottom: the
product W_g (K_g x 9) X_col (9 x 16) = Y_g (K_g x 16), already in NCHW order.
"""
import os
import sys

from svgkit import write_atomically

H = W = 4          # input
KH = KW = 3        # kernel
PAD = 1            # zero padding on every side
HO, WO = H + 2 * PAD - KH + 1, W + 2 * PAD - KW + 1
# The two windows drawn, by output position (p, q): stroke and fill colours.
HILITE = {(0, 0): ('#1f77b4', '#d6e6f5'), (1, 2): ('#d2691e', '#fbe3cf')}

CELL = 40          # input grid cell
MW, MH = 46, 30    # patch-matrix cell


def esc(s):
    return s.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


class Svg:
    def __init__(self, w, h):
        self.w, self.h, self.parts = w, h, []

    def add(self, s):
        self.parts.append(s)

    def rect(self, x, y, w, h, fill='#fff', stroke='#444', sw=1, extra=''):
        self.add(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="{fill}" '
                 f'stroke="{stroke}" stroke-width="{sw}" {extra}/>')

    def text(self, x, y, s, size=14, anchor='middle', weight='normal', fill='#222',
             italic=False):
        style = ' font-style="italic"' if italic else ''
        self.add(f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{fill}"{style}>{s}</text>')

    def xlabel(self, x, y, i, j, size=14, fill='#222'):
        """x with subscript ij."""
        self.add(f'<text x="{x}" y="{y}" font-size="{size}" text-anchor="middle" '
                 f'fill="{fill}"><tspan font-style="italic">x</tspan>'
                 f'<tspan font-size="{size * 0.7:.1f}" dy="4">{i}{j}</tspan></text>')

    def line(self, x1, y1, x2, y2, stroke='#444', sw=1.5, extra=''):
        self.add(f'<path d="M{x1},{y1} L{x2},{y2}" stroke="{stroke}" stroke-width="{sw}" '
                 f'fill="none" {extra}/>')

    def curve(self, x1, y1, cx1, cy1, cx2, cy2, x2, y2, stroke, marker):
        self.add(f'<path d="M{x1},{y1} C{cx1},{cy1} {cx2},{cy2} {x2},{y2}" stroke="{stroke}" '
                 f'stroke-width="2" fill="none" marker-end="url(#{marker})"/>')

    def render(self):
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.w} {self.h}" '
                f'width="{self.w}" height="{self.h}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" '
                f'role="img" aria-labelledby="title desc">\n'
                '<title id="title">im2col: receptive fields become columns of the patch matrix</title>\n'
                '<desc id="desc">A 4 by 4 input with padding 1 and two 3 by 3 windows; each window '
                'is copied into one column of a 9 by 16 patch matrix; the convolution is then the '
                'product of the weight matrix and the patch matrix.</desc>\n<defs>\n')
        for name, (stroke, _) in (('arrow-a', HILITE[(0, 0)]), ('arrow-b', HILITE[(1, 2)])):
            head += (f'<marker id="{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                     f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
                     f'fill="{stroke}"/></marker>\n')
        head += '</defs>\n<rect width="100%" height="100%" fill="#fff"/>\n'
        return head + '\n'.join(self.parts) + '\n</svg>\n'


def draw(out):
    s = Svg(900, 580)
    # ---- input, padding 1 drawn as a ring of zeros ------------------------
    cell = 36
    ix, iy = 24, 120
    s.text(ix + (W + 2 * PAD) * cell / 2, iy - 72,
           'input <tspan font-style="italic">x</tspan> (4×4), padding 1', size=16, weight='bold')
    s.text(ix + (W + 2 * PAD) * cell / 2, iy - 52, 'two 3×3 windows; shared pixels violet',
           size=12, fill='#555')
    inside = {}
    for (p, q), (stroke, fill) in HILITE.items():
        for r in range(KH):
            for c in range(KW):
                inside.setdefault((p - PAD + r, q - PAD + c), []).append(fill)
    for a in range(-PAD, H + PAD):
        for b in range(-PAD, W + PAD):
            pad = not (0 <= a < H and 0 <= b < W)
            fills = inside.get((a, b), [])
            fill = fills[0] if len(fills) == 1 else ('#e3dcef' if fills else
                                                      ('#f0f0f0' if pad else '#fff'))
            x0, y0 = ix + (b + PAD) * cell, iy + (a + PAD) * cell
            s.rect(x0, y0, cell, cell, fill=fill, stroke='#bbb' if pad else '#888',
                   extra='stroke-dasharray="3,2"' if pad else '')
            if pad:
                s.text(x0 + cell / 2, y0 + cell / 2 + 5, '0', size=13, fill='#999')
            else:
                s.xlabel(x0 + cell / 2, y0 + cell / 2 + 3, a, b, size=13)
    for (p, q), (stroke, _) in HILITE.items():
        inset = 3 if (p, q) == (0, 0) else -1
        s.rect(ix + q * cell + inset, iy + p * cell + inset, KW * cell - 2 * inset,
               KH * cell - 2 * inset, fill='none', stroke=stroke, sw=3)
        s.text(ix + (q + 1.5) * cell, iy + (H + 2 * PAD) * cell + 18 if (p, q) != (0, 0)
               else iy - 8, f'output ({p},{q})', size=12, fill=stroke, weight='bold')

    # ---- patch matrix: 9 rows (r, s) x 16 columns p*Wo + q ----------------
    mw, mh = 29, 26
    ncol = HO * WO
    mx, my = 380, 120
    s.text(mx + ncol * mw / 2, my - 58, 'patch matrix X_col (9×16)'.replace('X_col',
           'X<tspan font-size="11" dy="4">col</tspan><tspan dy="-4"> </tspan>'),
           size=16, weight='bold')
    s.text(mx + ncol * mw / 2, my - 36, 'row (c·R + r)·S + s,  column p·Wo + q', size=12,
           fill='#555')
    for col in range(ncol):
        p, q = divmod(col, WO)
        color = HILITE.get((p, q), ('#777', None))[0]
        s.text(mx + col * mw + mw / 2, my - 8, str(col), size=11, fill=color,
               weight='bold' if (p, q) in HILITE else 'normal')
    for row in range(KH * KW):
        r, c = divmod(row, KW)
        s.text(mx - 8, my + row * mh + mh / 2 + 4, f'(r,s)=({r},{c})', size=11, anchor='end',
               fill='#555')
        for col in range(ncol):
            p, q = divmod(col, WO)
            stroke, fill = HILITE.get((p, q), ('#999', '#fff'))
            a, b = p - PAD + r, q - PAD + c
            pad = not (0 <= a < H and 0 <= b < W)
            if pad and (p, q) not in HILITE:
                fill = '#f0f0f0'
            x0, y0 = mx + col * mw, my + row * mh
            s.rect(x0, y0, mw, mh, fill=fill, stroke='#aaa')
            if pad:
                s.text(x0 + mw / 2, y0 + mh / 2 + 4, '0', size=11, fill='#999')
            else:
                s.xlabel(x0 + mw / 2, y0 + mh / 2 + 3, a, b, size=11)
    for (p, q), (stroke, _) in HILITE.items():
        col = p * WO + q
        s.rect(mx + col * mw + 1.5, my + 1.5, mw - 3, KH * KW * mh - 3, fill='none',
               stroke=stroke, sw=3)

    # arrows: window -> its column
    bx = ix + (W + 2 * PAD) * cell
    s.curve(ix + 1.5 * cell + 46, iy - 12, bx + 40, iy - 12, mx - 30, my - 34,
            mx + mw / 2 - 2, my - 22, HILITE[(0, 0)][0], 'arrow-a')
    c2 = (1 * WO + 2)
    lx = ix + 3.5 * cell + 48
    ly = iy + (H + 2 * PAD) * cell + 14
    s.curve(lx, ly, lx + 80, ly + 60, mx + c2 * mw + mw / 2, my + KH * KW * mh + 60,
            mx + c2 * mw + mw / 2, my + KH * KW * mh + 4, HILITE[(1, 2)][0], 'arrow-b')

    # ---- the GEMM ---------------------------------------------------------
    gy = 500
    gx = 60
    s.text(gx, gy - 48, 'then one matrix product per image and group:', size=14,
           anchor='start', weight='bold')
    s.rect(gx, gy - 8, 80, 34, fill='#eef5e9', stroke='#5a8f3c', sw=1.5)
    s.text(gx + 40, gy + 15, 'W_g'.replace('W_g', 'W<tspan font-size="11" dy="4">g</tspan>'),
           size=16, italic=True)
    s.text(gx + 40, gy + 44, 'K_g × 9'.replace('K_g', 'K<tspan font-size="9" dy="3">g</tspan><tspan dy="-3"> </tspan>'),
           size=12, fill='#555')
    s.text(gx + 96, gy + 16, '·', size=26)
    px = gx + 112
    s.rect(px, gy - 30, 16 * 12, 78, fill='#fafafa', stroke='#888', sw=1.5)
    for (p, q), (stroke, fill) in HILITE.items():
        col = p * WO + q
        s.rect(px + col * 12, gy - 30, 12, 78, fill=fill, stroke=stroke, sw=1)
    s.text(px + 96, gy + 64, 'X_col: 9 × 16'.replace('X_col', 'X<tspan font-size="9" dy="3">col</tspan><tspan dy="-3"></tspan>'),
           size=12, fill='#555')
    s.text(px + 16 * 12 + 18, gy + 16, '=', size=22)
    yx = px + 16 * 12 + 40
    s.rect(yx, gy - 8, 16 * 12, 34, fill='#fafafa', stroke='#888', sw=1.5)
    for (p, q), (stroke, fill) in HILITE.items():
        col = p * WO + q
        s.rect(yx + col * 12, gy - 8, 12, 34, fill=fill, stroke=stroke, sw=1)
    s.text(yx + 96, gy + 44, 'Y_g: K_g × 16, already NCHW'.replace('Y_g', 'Y<tspan font-size="9" dy="3">g</tspan><tspan dy="-3"></tspan>').replace('K_g', 'K<tspan font-size="9" dy="3">g</tspan><tspan dy="-3"> </tspan>'),
           size=12, fill='#555')
    s.text(yx + 16 * 12 + 16, gy - 2, 'each output:', size=12, anchor='start', fill='#333')
    s.text(yx + 16 * 12 + 16, gy + 15, 'one filter row', size=12, anchor='start', fill='#333')
    s.text(yx + 16 * 12 + 16, gy + 32, '× one column', size=12, anchor='start', fill='#333')

    write_atomically(out, s.render())  # never a half-written figure


if __name__ == '__main__':
    if len(sys.argv) != 2:
        sys.exit('usage: im2col_figure.py OUT.svg')
    draw(sys.argv[1])
