#!/usr/bin/env python3
"""Draws chapter 6's figure of the CSR weight and how one stored weight reads its input.

    python3 book/figures/csr_figure.py OUT.svg chapters/06-sparsity/sparse_conv.c

A pruned weight of 3 filters x 2 input channels x 3 x 3 taps (9 of 54 weights kept;
filter 1 is the row chapter 6 writes out as text) and the three arrays that
cr_csr_from_weight builds from it: row o is output channel o, and column
k = (c*kh + r)*kw + s is the tap (input channel c, kernel row r, kernel column s); a
weight is stored where it is not zero, row by row, k increasing; row_ptr[o] is the index
of row o's first entry and row_ptr[Cout] = nnz. Below, one entry on a 4 x 4 input with
padding 1 and stride 1: sparse_offsets gives it the offset
off = ((c*hp + r*dh)*sw + t % sw)*lp + t / sw (t = s*dw) into the padded copy, and the
output at flat position oh*lp + ow adds val times padded float off + oh*lp + ow, run
straight across row ends (the outputs past each row's end are computed and dropped).
Every array and offset is computed here with those rules, and the script checks that
sparse_conv.c still contains the lines they mirror.
"""
import re
import sys

from svgkit import Svg

O, C, K = 3, 2, 3                       # filters, input channels, kernel size
H = W = 4                               # the example input
PAD, STRIDE, DIL = 1, 1, 1
# The kept weights, {(o, k): value}; everything else is pruned (0). Filter 1 is chapter
# 6's text example (taps 2, 10, 14, 17).
KEPT = {(0, 0): 0.5, (0, 4): -0.3, (0, 13): 0.8,
        (1, 2): 0.7, (1, 10): -1.2, (1, 14): 0.4, (1, 17): 0.9,
        (2, 7): -0.6, (2, 9): 1.1}
SHOW = (1, 14)                          # the entry whose gather is drawn
ROW_FILL = ['#d6e6f5', '#fbe3cf', '#dcefdc']
ROW_EDGE = ['#1f5f99', '#d2691e', '#2e7d32']
DROPPED = '#cfcfcf'                     # read or written, then dropped

# The lines of sparse_conv.c this figure mirrors (whitespace-insensitive): the column and
# the row starts of cr_csr_from_weight, the tap decoding of cr_sparse_conv2d_ref, the
# padded geometry of sparse_geometry (stride 1: lp = padded width) and the offsets of
# sparse_offsets.
MIRRORS = [
    'const size_t i = (size_t)(o * cols + k);',
    'if ((!mask || mask->data[i]) && w->data[i] != 0.0f) {',
    'out->col[j] = (int32_t)k;',
    'out->row_ptr[o] = (int64_t)j;',
    'out->row_ptr[rows] = (int64_t)j;',
    'c = k / RS, r = k / p->kernel_w % p->kernel_h, t = k % p->kernel_w;',
    'g.hp = s->h_in + p->pad_top + p->pad_bottom;',
    'g.wp = s->w_in + p->pad_left + p->pad_right;',
    'g.lp = g.wp;',
    'const int64_t j = t * p->dilation_w;',
    'tap[k] = ((c * g->hp + r * p->dilation_h) * g->sw + j % g->sw) * g->lp + j / g->sw;',
    'off[j] = tap[w->col[j]];',
]


def check_source(path):
    text = re.sub(r'\s+', '', open(path, encoding='utf-8').read())
    for line in MIRRORS:
        if re.sub(r'\s+', '', line) not in text:
            sys.exit(f'csr_figure: {path} no longer has "{line}"; redraw the figure to match')


def dense():
    """The weight, O x (C*K*K), flattened as cr_csr_from_weight reads it (o * cols + k)."""
    w = [[0.0] * (C * K * K) for _ in range(O)]
    for (o, k), v in KEPT.items():
        w[o][k] = v
    return w


def csr(w):
    """cr_csr_from_weight with no mask: row_ptr, col, val."""
    rows, cols = len(w), len(w[0])
    row_ptr, col, val = [], [], []
    for o in range(rows):
        row_ptr.append(len(col))
        for k in range(cols):
            if w[o][k] != 0.0:
                col.append(k)
                val.append(w[o][k])
    row_ptr.append(len(col))
    return row_ptr, col, val


def decode(k):
    """cr_sparse_conv2d_ref's (c, r, t) of tap k."""
    return k // (K * K), k // K % K, k % K


def fmt(v):
    return f'{v:g}'.replace('-', '\u2212')


def draw(out, source):
    check_source(source)
    w = dense()
    row_ptr, col, val = csr(w)
    nnz = len(col)
    assert row_ptr[-1] == nnz and all(w[o][col[j]] == val[j] for o in range(O)
                                      for j in range(row_ptr[o], row_ptr[o + 1]))
    hp, wp = H + 2 * PAD, W + 2 * PAD
    lp = wp                                   # stride 1: one phase, the padded width
    ho = (H + 2 * PAD - DIL * (K - 1) - 1) // STRIDE + 1
    wo = (W + 2 * PAD - DIL * (K - 1) - 1) // STRIDE + 1
    tap = {}
    for c in range(C):
        for r in range(K):
            for t in range(K):
                jj = t * DIL
                tap[(c * K + r) * K + t] = ((c * hp + r * DIL) * STRIDE + jj % STRIDE) * lp + jj // STRIDE
    off = [tap[k] for k in col]
    js = next(j for j in range(row_ptr[SHOW[0]], row_ptr[SHOW[0] + 1]) if col[j] == SHOW[1])
    sc, sr, st = decode(col[js])

    s = Svg(820, 720, 'A pruned convolution weight in CSR, and what one stored weight reads',
            f'A weight of {O} filters, {C} input channels and {K} by {K} taps with {nnz} of '
            f'{O * C * K * K} weights kept, its CSR arrays row_ptr, col and val, and how entry '
            f'{js} (filter {SHOW[0]}, tap {col[js]}) reads the padded input at offset {off[js]}.')
    cw, ch = 34, 22                    # a weight cell
    bw = K * cw
    wx, wy = 90, 78                    # the dense weight's top left
    rowh = K * ch + 16
    # ---- the dense weight, filter by filter ----
    s.text(wx + bw + 6, 30, 'pruned weight', 14, weight='bold')
    s.text(wx + bw + 6, 48, f'{O} filters \u00d7 {C} input channels \u00d7 {K}\u00d7{K}', 11,
           fill='#555')
    for c in range(C):
        s.text(wx + c * (bw + 12) + bw / 2, wy - 8, f'in {c}', 11, fill='#555')
    for o in range(O):
        y0 = wy + o * rowh
        s.text(wx - 10, y0 + K * ch / 2 + 4, f'filter {o}', 11, anchor='end', fill=ROW_EDGE[o])
        for c in range(C):
            for r in range(K):
                for t in range(K):
                    k = (c * K + r) * K + t
                    x, y = wx + c * (bw + 12) + t * cw, y0 + r * ch
                    if w[o][k] != 0.0:
                        s.rect(x, y, cw, ch, ROW_FILL[o], ROW_EDGE[o], 1)
                        s.text(x + cw / 2, y + 15, fmt(w[o][k]), 11, mono=True)
                    else:
                        s.rect(x, y, cw, ch, '#fff', '#ccc', 0.5)
            if (o, 0) == (SHOW[0], 0) and c == sc:
                x, y = wx + c * (bw + 12) + st * cw, y0 + sr * ch
                s.rect(x, y, cw, ch, 'none', '#b00020', 2.5)
    # the tap numbers k, once
    ky = wy + O * rowh + 14
    s.text(wx + bw + 6, ky, f'column k = (c\u00b7{K} + r)\u00b7{K} + s', 12, weight='bold')
    for c in range(C):
        for r in range(K):
            for t in range(K):
                x, y = wx + c * (bw + 12) + t * cw, ky + 10 + r * ch
                s.rect(x, y, cw, ch, '#f4f4f4', '#bbb', 0.5)
                s.text(x + cw / 2, y + 15, (c * K + r) * K + t, 11, fill='#555', mono=True)
    s.text(wx - 10, ky + 10 + K * ch / 2 + 4, 'tap k', 11, anchor='end', fill='#555')

    # ---- the CSR arrays ----
    ax, aw = 400, 42                   # arrays' left edge, one entry's width
    s.text(ax + nnz * aw / 2, 30, 'CSR (cr_csr_from_weight)', 14, weight='bold')
    s.text(ax + nnz * aw / 2, 48, f'nnz = {nnz}: a value and a 32-bit column each', 11, fill='#555')
    ay = 78
    s.text(ax - 8, ay + 15, 'j', 11, anchor='end', fill='#555', italic=True)
    s.text(ax - 8, ay + 22 + 15, 'col', 12, anchor='end', mono=True)
    s.text(ax - 8, ay + 44 + 15, 'val', 12, anchor='end', mono=True)
    for j in range(nnz):
        o = next(o for o in range(O) if row_ptr[o] <= j < row_ptr[o + 1])
        x = ax + j * aw
        s.text(x + aw / 2, ay + 15, j, 11, fill='#555')
        for i, v in enumerate((col[j], fmt(val[j]))):
            s.rect(x, ay + 22 * (i + 1), aw, 22, ROW_FILL[o], ROW_EDGE[o], 1)
            s.text(x + aw / 2, ay + 22 * (i + 1) + 15, v, 12, mono=True)
        if j == js:
            s.rect(x, ay + 22, aw, 44, 'none', '#b00020', 2.5)
    # row_ptr, with an arrow from each start to its entry
    py = ay + 120
    s.text(ax - 8, py + 15, 'row_ptr', 12, anchor='end', mono=True)
    pw = 48
    for o in range(O + 1):
        x = ax + o * (pw + 14)
        edge = ROW_EDGE[o] if o < O else '#444'
        s.rect(x, py, pw, 22, ROW_FILL[o] if o < O else '#eee', edge, 1)
        s.text(x + pw / 2, py + 15, row_ptr[o], 12, mono=True)
        s.text(x + pw / 2, py + 38, f'o = {o}' if o < O else 'end', 11, fill=edge)
        s.arrow(x + pw / 2, py - 2, ax + row_ptr[o] * aw + 2, ay + 68, edge, 1.2)
    s.text(ax, py + 64, f'row o: entries row_ptr[o] \u2026 row_ptr[o+1] \u2212 1', 11,
           anchor='start', fill='#555')
    s.text(ax, py + 80, f'row_ptr[{O}] = nnz = {nnz}', 11, anchor='start', fill='#555')

    # ---- one entry's gather ----
    gy = ky + 10 + K * ch + 50
    s.line(20, gy - 22, 800, gy - 22, '#ccc', 1)
    s.text(410, gy, f'entry j = {js}: filter {SHOW[0]}, k = {col[js]} \u2192 c = {sc}, r = {sr}, '
           f's = {st}; val = {fmt(val[js])}', 13, weight='bold')
    s.text(410, gy + 20, f'{H}\u00d7{W} input, padding {PAD}, stride {STRIDE}: padded planes '
           f'{hp}\u00d7{lp}; off = (c\u00b7{hp} + r)\u00b7{lp} + s = {off[js]}', 12, fill='#555')
    pc = 18                            # a padded-input cell
    px, py0 = 60, gy + 58
    first, last = off[js], off[js] + (ho - 1) * lp + lp - 1   # the floats one run reads
    for c in range(C):
        x0 = px + c * (lp * pc + 24)
        s.text(x0 + lp * pc / 2, py0 - 8, f'padded in {c}', 11, fill='#555')
        for i in range(hp):
            for e in range(lp):
                f = (c * hp + i) * lp + e      # its position in the padded copy
                x, y = x0 + e * pc, py0 + i * pc
                inside = PAD <= i < PAD + H and PAD <= e < PAD + W
                fill, edge = ('#fff', '#999') if inside else ('#f7f7f7', '#ddd')
                if first <= f <= last:
                    used = (f - first) % lp < wo
                    fill = ROW_FILL[SHOW[0]] if used else DROPPED
                    edge = ROW_EDGE[SHOW[0]] if used else '#888'
                s.rect(x, y, pc, pc, fill, edge, 0.8)
                if f == first:
                    s.rect(x, y, pc, pc, 'none', '#b00020', 2.5)
                    s.text(x + pc / 2, y + 13, off[js], 10, fill='#b00020')
    s.text(px, py0 + hp * pc + 18, f'outputs 0\u2026{ho * lp - 1} read floats {first}\u2026{last}', 11,
           anchor='start', fill='#555')
    s.text(px, py0 + hp * pc + 34, 'grey: read for outputs past a row\u2019s end', 11,
           anchor='start', fill='#555')
    # the output plane on the padded grid
    ox = px + C * (lp * pc + 24) + 110
    s.text(ox + lp * pc / 2, py0 - 8, f'output {SHOW[0]} (flat, row pitch {lp})', 11, fill='#555')
    for i in range(ho):
        for e in range(lp):
            x, y = ox + e * pc, py0 + i * pc
            if e < wo:
                s.rect(x, y, pc, pc, ROW_FILL[SHOW[0]], ROW_EDGE[SHOW[0]], 0.8)
            else:
                s.rect(x, y, pc, pc, DROPPED, '#888', 0.8)
    s.rect(ox, py0, pc, pc, 'none', '#b00020', 2.5)
    s.text(ox + lp * pc / 2, py0 + ho * pc + 18, f'{ho}\u00d7{wo} kept, columns {wo}\u2013{lp - 1} dropped',
           11, fill='#555')
    fx = px + sc * (lp * pc + 24) + (first - sc * hp * lp) % lp * pc + pc
    fy = py0 + (first - sc * hp * lp) // lp * pc + pc / 2
    s.arrow(fx + 4, fy, ox - 6, py0 + pc / 2, '#b00020', 1.5)
    s.text((fx + ox) / 2, fy - 10, f'\u00d7 {fmt(val[js])}', 12, fill='#b00020', mono=True)
    s.text(410, py0 + hp * pc + 64,
           f'y[{SHOW[0]}][oh\u00b7{lp} + ow] += {fmt(val[js])} \u00d7 xp[{off[js]} + oh\u00b7{lp} + ow]'
           f'  (sparse_offsets: off[j] = tap[col[j]])', 12, mono=True)
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    draw(sys.argv[1], sys.argv[2])
