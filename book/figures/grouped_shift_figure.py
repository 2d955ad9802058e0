#!/usr/bin/env python3
"""Draws chapter 3's figure of the direct convolution's shifted-copies layout and register
block, as SVG.

    python3 book/figures/grouped_shift_figure.py OUT.svg chapters/03-gemm/conv_gemm.c \
        chapters/03-gemm/gemm_internal.h chapters/03-gemm/conv_avx2.c

A small example: a 10 x 10 input, a 3 x 3 kernel, stride 2, padding 1 (so Ho = Wo = 5).
Top: one padded input row (padded row 3, input row 2) and the three shifted copies the
padded copy xp keeps of it, one per kernel column q: copy q holds the Wo padded columns
ow * 2 + q that q reads; the xp places are the code's (grouped_pad's layout, channel 0).
Middle: output row 1 with kernel row 1 reads that padded row: tap (1, q) reads Wo
consecutive places of copy q at oh * Wo + tap_off (conv_grouped's offsets). Bottom: the
AVX2 kernel's register block, COB output channels x OWB flat output places (OWB / 8 ymm
per channel) over the example's output plane: every place is an output, rows follow
each other; the last block is one vector. Every index is computed here with the code's
formulas (checked against the source by regex), and every tap's reads are checked
against the padded image.
"""
import sys

from svgkit import LEVEL, Svg
# the example, the regex check and the kernels' blocks: the phases figure's own
from grouped_phase_figure import H, KH, KW, LANES, PAD, ROW, SH, SW, W, input_col, kernel_block, need

COPY = [LEVEL['L1'], LEVEL['L2'], LEVEL['L3']]
REG = LEVEL['reg']


def check_source(conv_gemm_c, internal_h, avx2_c):
    """The layout formulas this script re-computes, and the kernel's block: {owb, cob,
    loads, owb512, cob512}. Exits naming the change when the code no longer matches."""
    g = open(conv_gemm_c, encoding='utf-8').read()
    need(r'g\.hq = \(g\.hp \+ sh - 1\) / sh;', g, conv_gemm_c, 'hq = (hp + sh - 1) / sh')
    need(r'g\.lp = g\.shifted \? s->w_out :', g, conv_gemm_c, 'shifted: lp = Wo')
    need(r'g\.plane = g\.shifted \? sh \* g\.hq \* g\.lp :', g, conv_gemm_c,
         'shifted: plane = sh * hq * lp')
    need(r'dst = xp \+ \(gm->shifted \? \(c \* S \+ k\) \* gm->plane \+\s*'
         r'\(\(i % sh\) \* gm->hq \+ i / sh\) \* lp', g, conv_gemm_c,
         "grouped_pad's copy row address (c*kw + q)*plane + ((i%sh)*hq + i/sh)*lp")
    need(r'const int64_t j0 = gm->shifted \? k \* p->dilation_w : k;', g, conv_gemm_c,
         "grouped_pad's j0 = q * dilation_w")
    need(r'else for \(int64_t e = e0; e < e1; e\+\+\) dst\[e\] = row\[e \* sw \+ j0 - pl\];', g,
         conv_gemm_c, "pad_row's place ow = padded column ow*sw + j0")
    need(r'tap_off\[t\] = gm->shifted \? \(c \* p->kernel_w \+ q\) \* gm->plane \+\s*'
         r'\(\(ri % sh\) \* gm->hq \+ ri / sh\) \* gm->lp', g, conv_gemm_c,
         'shifted: tap_off = (c*kw + q)*plane + ((r%sh)*hq + r/sh)*lp')
    return kernel_block(g, conv_gemm_c, internal_h, avx2_c)


def geometry():
    """grouped_geom for the example (padding mode zeros)."""
    hp = H + 2 * PAD
    hq = (hp + SH - 1) // SH
    ho, wo = (H + 2 * PAD - KH) // SH + 1, (W + 2 * PAD - KW) // SW + 1
    return dict(hp=hp, hq=hq, ho=ho, wo=wo, plane=SH * hq * wo)


def xp_index(gm, c, q, i, ow):
    """Where place ow of padded row i of copy (c, q) lies in xp (grouped_pad's layout)."""
    return (c * KW + q) * gm['plane'] + ((i % SH) * gm['hq'] + i // SH) * gm['wo'] + ow


def tap_off(gm, c, r, q):
    """conv_grouped's tap_off for tap (c, r, q), dilation 1."""
    return (c * KW + q) * gm['plane'] + ((r % SH) * gm['hq'] + r // SH) * gm['wo']


def verify(gm):
    """Every output reads, for every tap, the padded pixel the convolution needs, at flat
    place oh*Wo + ow + tap_off; the xp places are distinct."""
    seen = {}
    for q in range(KW):
        for i in range(gm['hq'] * SH):
            for ow in range(gm['wo']):
                k = xp_index(gm, 0, q, i, ow)
                if seen.setdefault(k, (i, ow * SW + q)) != (i, ow * SW + q):
                    sys.exit(f'figure: xp place {k} holds two pixels')
    for oh in range(gm['ho']):
        for ow in range(gm['wo']):
            for r in range(KH):
                for q in range(KW):
                    k = oh * gm['wo'] + ow + tap_off(gm, 0, r, q)
                    if seen.get(k) != (oh * SH + r, ow * SW + q):
                        sys.exit(f'figure: output ({oh},{ow}) tap ({r},{q}) reads place {k}')
    return seen


def cellbox(s, x, y, cell, col, colour):
    """One place: the input column it holds, or a dashed zero of the padding."""
    if col is None:
        s.rect(x, y, cell, cell, '#fff', '#999', 1, 'stroke-dasharray="3,2"')
        s.text(x + cell / 2, y + 22, '0', 12, fill='#999')
    else:
        s.rect(x, y, cell, cell, colour[1], colour[0], 1)
        s.text(x + cell / 2, y + 22, f'{col}', 12)


def draw(out, conv_gemm_c, internal_h, avx2_c):
    k = check_source(conv_gemm_c, internal_h, avx2_c)
    OWB, COB, NV = k['owb'], k['cob'], k['loads']
    gm = geometry()
    verify(gm)
    wo, ho = gm['wo'], gm['ho']
    oh, r = ROW // SH, ROW % SH          # output row and kernel row that read ROW
    assert oh * SH + r == ROW
    cell = 34
    WID = 720
    s = Svg(WID, 700, 'Direct convolution: shifted copies and the register block',
            f'A padded input row of {W} pixels and padding {PAD} is kept as {KW} shifted '
            f'copies, one per kernel column q, each holding the {wo} padded columns '
            f'ow × {SW} + q that q reads (stride {SW}); each tap then reads {wo} consecutive '
            f'places of one copy for {wo} outputs, and the next output row follows at once. '
            f'The AVX2 kernel keeps {COB} output channels by {OWB} flat output places in '
            f'{COB * NV} ymm registers; no place is wasted but at the plane\'s end.')
    s.text(20, 26, f'One copy per kernel column: copy q holds padded columns q, q+{SW}, q+{2 * SW}, …',
           15, anchor='start', weight='bold')
    s.text(20, 44, f'example: {H}×{W} input, padding {PAD}, {KH}×{KW} kernel, stride {SW} → '
           f'{ho}×{wo} output', 12, anchor='start', fill='#555')
    # The padded row.
    x0, y0 = 150, 72
    s.text(x0 - 12, y0 + 22, f'padded row {ROW}', 13, anchor='end')
    s.text(x0 - 12, y0 + 38, f'(input row {ROW - PAD})', 11, anchor='end', fill='#555')
    for j in range(W + 2 * PAD):
        x = x0 + j * cell
        s.text(x + cell / 2, y0 - 6, f'j={j}', 10, fill='#777')
        s.rect(x, y0, cell, cell, '#fff', '#999', 1, 'stroke-dasharray="3,2"') \
            if input_col(j) is None else s.rect(x, y0, cell, cell, '#f4f4f4', '#666', 1)
        s.text(x + cell / 2, y0 + 22, '0' if input_col(j) is None else f'{input_col(j)}', 12,
               fill='#999' if input_col(j) is None else '#222')
    # The copies, stored apart in xp.
    y1 = y0 + 96
    gap = 30
    for q in range(KW):
        x = x0 + q * (wo * cell + gap) - 40
        base = xp_index(gm, 0, q, ROW, 0)
        s.text(x + wo * cell / 2, y1 - 8, f'copy q={q}', 12, fill=COPY[q][0], weight='bold')
        for ow in range(wo):
            j = ow * SW + q
            xx = x + ow * cell
            cellbox(s, xx, y1, cell, input_col(j), COPY[q])
            s.text(xx + cell / 2, y1 + cell + 13, f'{base + ow}', 10, fill='#777', mono=True)
            s.line(x0 + j * cell + cell / 2, y0 + cell + 2, xx + cell / 2, y1 - 22, COPY[q][0],
                   0.8, 'stroke-opacity="0.6"')
    s.text(x0 - 52, y1 + 22, 'xp', 13, anchor='end', mono=True)
    s.text(x0 - 52, y1 + cell + 13, 'place', 10, anchor='end', fill='#777')
    # The taps of kernel row r, for output row oh.
    y2 = y1 + cell + 46
    s.text(20, y2, f'Output row {oh}, kernel row {r}: tap ({r}, q) reads {wo} consecutive places '
           f'of copy q', 13, anchor='start', weight='bold')
    for q in range(KW):
        first = oh * wo + tap_off(gm, 0, r, q)          # flat place ow = 0
        assert first == xp_index(gm, 0, q, ROW, 0)
        yy = y2 + 14 + q * 20
        s.rect(40, yy, 420, 15, COPY[q][1], COPY[q][0], 1.5)
        s.text(250, yy + 11, f'q={q}: xp[{first}…{first + wo - 1}] → ow 0…{wo - 1}; '
               f'next: row {oh + 1} at xp[{first + wo}…]', 10, mono=True)
    # The register block over the output plane.
    y3 = y2 + 106
    s.line(20, y3 - 26, WID - 20, y3 - 26, '#ccc', 1)
    s.text(20, y3, f'The AVX2 block: {COB} channels × {OWB} flat outputs, {COB * NV} ymm', 15,
           anchor='start', weight='bold')
    c2 = 24
    gx, gy = 110, y3 + 44
    for f in range(OWB):
        o_h, o_w = divmod(f, wo)
        s.text(gx + f * c2 + c2 / 2, gy - 6, f'{o_h},{o_w}', 9, fill='#555')
    s.text(gx - 8, gy - 6, 'oh,ow', 10, anchor='end', fill='#555')
    for co in range(COB):
        y = gy + co * c2
        s.text(gx - 8, y + 16, f'channel {co}', 11, anchor='end')
        for f in range(OWB):
            s.rect(gx + f * c2, y, c2, c2, REG[1], '#e0a0aa', 0.8)
            if f % wo == 0 and f:
                s.line(gx + f * c2, y, gx + f * c2, y + c2, '#777', 1.5)
        for v in range(NV):
            s.rect(gx + v * LANES * c2, y, LANES * c2, c2, 'none', REG[0], 2)
    for v in range(NV):
        s.text(gx + (v + 0.5) * LANES * c2, gy + COB * c2 + 16,
               f'ymm: places {v * LANES}…{v * LANES + LANES - 1}', 11, fill=REG[0])
    plane = ho * wo
    full, rest = divmod(plane, OWB)
    tail_nv = -(-rest // LANES)
    yt = gy + COB * c2 + 44
    lines = [
        f'Per tap: {NV} loads of {LANES} from xp (places f + tap_off), {COB} broadcasts of w, '
        f'{COB * NV} FMAs.',
        f'Flat place f is output (f div {wo}, f mod {wo}): blocks run across row ends with '
        f'every place an output.',
        f'{ho} rows × {wo} = {plane} places: {full} block{"s" if full != 1 else ""} of {OWB}, '
        f'then {rest} place{"s" if rest != 1 else ""} in a block of {tail_nv} ymm '
        f'({tail_nv * LANES - rest} computed and dropped).',
        f'AVX-512: {k["cob512"]} channels × {k["owb512"]} places in '
        f'{k["cob512"] * k["owb512"] // 16} zmm.',
    ]
    for n, t in enumerate(lines):
        s.text(20, yt + n * 20, t, 12, anchor='start', fill='#333')
    s.h = yt + len(lines) * 20 + 10
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 5:
        sys.exit('usage: grouped_shift_figure.py OUT.svg chapters/03-gemm/conv_gemm.c '
                 'chapters/03-gemm/gemm_internal.h chapters/03-gemm/conv_avx2.c')
    draw(*sys.argv[1:])
