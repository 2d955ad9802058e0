#!/usr/bin/env python3
"""Draws chapter 3's figure of the direct convolution's phases layout (one padded copy,
its rows and columns split by stride phase) and register block, as SVG.

    python3 book/figures/grouped_phase_figure.py OUT.svg chapters/03-gemm/conv_gemm.c \
        chapters/03-gemm/gemm_internal.h chapters/03-gemm/conv_avx2.c

A small example: a 10 x 10 input, a 3 x 3 kernel, stride 2, padding 1 (so Ho = Wo = 5).
Top: one padded input row (padded row 3, input row 2), its columns split into the
stride's two phases, which the padded copy xp stores apart, each a contiguous run of
lp places; the xp offsets are the code's (grouped_pad's layout, for channel 0). Middle:
the three taps of kernel row 1 for output row 1: each reads lp-place runs of one phase
at unit stride, at the offset tap_off of conv_grouped. Bottom: the AVX2 kernel's
register block, COB output channels x OWB flat output places (OWB / 8 ymm per channel)
over the example's flattened output plane: the places with ow >= Wo are computed and
dropped. Every index is computed here with the code's formulas (checked against the
source by regex), and every tap's reads are checked against the padded image.
"""
import re
import sys

from svgkit import LEVEL, Svg

LANES = 8                                  # floats per ymm register
H = W = 10                                 # the example
KH = KW = 3
SH = SW = 2
PAD = 1
ROW = 3                                    # the padded row drawn (input row ROW - PAD)
PHASE = [LEVEL['L1'], LEVEL['L2'], LEVEL['L3']]
REG = LEVEL['reg']


def need(pattern, text, source, what):
    m = re.search(pattern, text, re.S | re.M)
    if not m:
        sys.exit(f'figure: {source} no longer has {what}; update the figure')
    return m


def check_source(conv_gemm_c, internal_h, avx2_c):
    """The layout formulas this script re-computes, and the kernel's block: {owb, cob,
    loads, owb512, cob512}. Exits naming the change when the code no longer matches."""
    g = open(conv_gemm_c, encoding='utf-8').read()
    need(r'g\.hq = \(g\.hp \+ sh - 1\) / sh;', g, conv_gemm_c, 'hq = (hp + sh - 1) / sh')
    need(r'g\.lp = g\.shifted \? s->w_out : \(s->w_in \+ p->pad_left \+ p->pad_right \+ sw - 1\) / sw;',
         g, conv_gemm_c, 'phases: lp = (W + pad_left + pad_right + sw - 1) / sw')
    need(r'g\.plane = g\.shifted \? sh \* g\.hq \* g\.lp : sh \* sw \* g\.hq \* g\.lp;', g,
         conv_gemm_c, 'phases: plane = sh * sw * hq * lp')
    need(r'g\.flat = s->h_out \* g\.lp - \(g\.lp - s->w_out\);', g, conv_gemm_c,
         'flat = Ho * lp - (lp - Wo)')
    need(r': c \* gm->plane \+ \(\(i % sh\) \* sw \+ k\) \* gm->hq \* lp \+\s*i / sh \* lp\);', g,
         conv_gemm_c, "grouped_pad's phase-ph row address c*plane + ((i%sh)*sw + ph)*hq*lp + i/sh*lp")
    need(r'const int64_t j0 = gm->shifted \? k \* p->dilation_w : k;', g, conv_gemm_c,
         "grouped_pad's phase ph: place e = padded column e*sw + ph")
    need(r'else for \(int64_t e = e0; e < e1; e\+\+\) dst\[e\] = row\[e \* sw \+ j0 - pl\];', g,
         conv_gemm_c, "pad_row's place e = padded column e*sw + j0")
    need(r': c \* gm->plane \+ \(\(ri % sh\) \* sw \+ qj % sw\) \* gm->hq \* gm->lp \+\s*'
         r'ri / sh \* gm->lp \+ qj / sw;', g, conv_gemm_c,
         'phases: tap_off = c*plane + ((r%sh)*sw + q%sw)*hq*lp + r/sh*lp + q/sw')
    return kernel_block(g, conv_gemm_c, internal_h, avx2_c)


def kernel_block(g, conv_gemm_c, internal_h, avx2_c):
    """The direct kernels' blocks, read from the sources (g: conv_gemm.c's text): {owb,
    cob, loads, owb512, cob512}; exits when the AVX2 block no longer matches them. Shared
    with grouped_shift_figure.py."""
    cob = int(need(r'grouped_avx2\s*=\s*\{"avx2",\s*CR_GROUPED_OWB,\s*(\d+),', g, conv_gemm_c,
                   'grouped_avx2 = {"avx2", CR_GROUPED_OWB, <cob>, ...}').group(1))
    h = open(internal_h, encoding='utf-8').read()
    d = {}
    for n in ('CR_GROUPED_OWB', 'CR_GROUPED_OWB_AVX512', 'CR_GROUPED_COB_AVX512'):
        d[n] = int(need(r'^#define\s+' + n + r'\s+(\d+)\b', h, internal_h, f'#define {n}').group(1))
    a = open(avx2_c, encoding='utf-8').read()
    block = need(r'// @snippet grouped_block\n(.*?)// @end grouped_block', a, avx2_c,
                 'the grouped_block snippet').group(1)
    need(r'_mm256_loadu_ps\(xt \+ 8 \* v\)', block, avx2_c, 'the NV loads at xt + 8 * v')
    acc = need(r'__m256 acc\[(\d+)\]\[(\d+)\];', block, avx2_c, '__m256 acc[COB][NV]')
    loads = int(acc.group(2))
    if int(acc.group(1)) != cob or loads * LANES != d['CR_GROUPED_OWB']:
        sys.exit(f'figure: {avx2_c}: acc[{acc.group(1)}][{acc.group(2)}], '
                 f'CR_GROUPED_OWB {d["CR_GROUPED_OWB"]} and cob {cob} disagree')
    return dict(owb=d['CR_GROUPED_OWB'], cob=cob, loads=loads,
                owb512=d['CR_GROUPED_OWB_AVX512'], cob512=d['CR_GROUPED_COB_AVX512'])


def geometry(owb):
    """grouped_geom for the example in the phases layout (padding mode zeros)."""
    hp = H + 2 * PAD
    hq = (hp + SH - 1) // SH
    lp = (W + 2 * PAD + SW - 1) // SW
    ho, wo = (H + 2 * PAD - KH) // SH + 1, (W + 2 * PAD - KW) // SW + 1
    return dict(hp=hp, hq=hq, lp=lp, ho=ho, wo=wo, plane=SH * SW * hq * lp,
                flat=ho * lp - (lp - wo))


def xp_index(gm, c, i, j):
    """Where padded (row i, column j) of channel c lies in xp (grouped_pad's layout)."""
    return c * gm['plane'] + ((i % SH) * SW + j % SW) * gm['hq'] * gm['lp'] + i // SH * gm['lp'] + j // SW


def tap_off(gm, c, r, q):
    """conv_grouped's tap_off for tap (c, r, q), dilation 1."""
    return c * gm['plane'] + ((r % SH) * SW + q % SW) * gm['hq'] * gm['lp'] + r // SH * gm['lp'] + q // SW


def input_col(j):
    """The input column padded column j copies, or None for a zero."""
    return j - PAD if 0 <= j - PAD < W else None


def verify(gm):
    """Every output reads, for every tap, the padded pixel the convolution needs, at flat
    place oh*lp + ow + tap_off; the xp places are distinct."""
    seen = {}
    for i in range(gm['hq'] * SH):
        for j in range(gm['lp'] * SW):
            k = xp_index(gm, 0, i, j)
            if seen.setdefault(k, (i, j)) != (i, j):
                sys.exit(f'figure: xp place {k} holds two pixels')
    for oh in range(gm['ho']):
        for ow in range(gm['wo']):
            for r in range(KH):
                for q in range(KW):
                    k = oh * gm['lp'] + ow + tap_off(gm, 0, r, q)
                    if seen.get(k) != (oh * SH + r, ow * SW + q):
                        sys.exit(f'figure: output ({oh},{ow}) tap ({r},{q}) reads place {k}')
    return seen


def draw(out, conv_gemm_c, internal_h, avx2_c):
    k = check_source(conv_gemm_c, internal_h, avx2_c)
    OWB, COB, NV = k['owb'], k['cob'], k['loads']
    gm = geometry(OWB)
    verify(gm)
    lp, wo, ho = gm['lp'], gm['wo'], gm['ho']
    oh, r = ROW // SH, ROW % SH          # output row and kernel row that read ROW
    assert oh * SH + r == ROW
    cell = 34
    WID = 720
    s = Svg(WID, 690, 'Grouped convolution: stride phases and the register block',
            f'A padded input row of {W} pixels and padding {PAD}, stride {SW}, is stored as '
            f'{SW} phases of {lp} places; each of the {KW} taps of a kernel row then reads '
            f'{wo} consecutive places of one phase for {wo} outputs. The AVX2 kernel keeps '
            f'{COB} output channels by {OWB} flat output places in {COB * NV} ymm registers.')
    s.text(20, 26, f'Stride {SW}: each padded row stored as {SW} phases', 15, anchor='start',
           weight='bold')
    s.text(20, 44, f'example: {H}×{W} input, padding {PAD}, {KH}×{KW} kernel → {ho}×{wo} output',
           12, anchor='start', fill='#555')
    # The padded row.
    x0, y0 = 150, 72
    s.text(x0 - 12, y0 + 22, f'padded row {ROW}', 13, anchor='end')
    s.text(x0 - 12, y0 + 38, f'(input row {ROW - PAD})', 11, anchor='end', fill='#555')
    for j in range(W + 2 * PAD):
        col, ph = input_col(j), j % SW
        x = x0 + j * cell
        s.text(x + cell / 2, y0 - 6, f'j={j}', 10, fill='#777')
        if col is None:
            s.rect(x, y0, cell, cell, '#fff', '#999', 1, 'stroke-dasharray="3,2"')
            s.text(x + cell / 2, y0 + 22, '0', 12, fill='#999')
        else:
            s.rect(x, y0, cell, cell, PHASE[ph][1], PHASE[ph][0], 1)
            s.text(x + cell / 2, y0 + 22, f'{col}', 12)
    # The phases, stored apart in xp.
    y1 = y0 + 100
    gap = 84
    starts = []
    for ph in range(SW):
        x = x0 + ph * (lp * cell + gap)
        base = xp_index(gm, 0, ROW, ph)
        starts.append((x, base))
        s.text(x + lp * cell / 2, y1 - 8, f'phase {ph}: j = {ph}, {ph + SW}, …', 12,
               fill=PHASE[ph][0], weight='bold')
        for e in range(lp):
            j = e * SW + ph
            assert xp_index(gm, 0, ROW, j) == base + e
            col = input_col(j)
            xx = x + e * cell
            if col is None:
                s.rect(xx, y1, cell, cell, '#fff', '#999', 1, 'stroke-dasharray="3,2"')
                s.text(xx + cell / 2, y1 + 22, '0', 12, fill='#999')
            else:
                s.rect(xx, y1, cell, cell, PHASE[ph][1], PHASE[ph][0], 1)
                s.text(xx + cell / 2, y1 + 22, f'{col}', 12)
            s.text(xx + cell / 2, y1 + cell + 13, f'{base + e}', 10, fill='#777', mono=True)
            s.line(x0 + j * cell + cell / 2, y0 + cell + 2, xx + cell / 2, y1 - 22, PHASE[ph][0],
                   0.8, 'stroke-opacity="0.6"')
    s.text(x0 - 12, y1 + 22, 'xp', 13, anchor='end', mono=True)
    s.text(x0 - 12, y1 + cell + 13, 'place', 10, anchor='end', fill='#777')
    mid = x0 + lp * cell + gap / 2
    b0, b1 = starts[0][1], starts[1][1]
    s.text(mid, y1 + 16, '…', 14, fill='#777')
    s.text(mid, y1 + 30, f'{b1 - b0 - lp} places', 10, fill='#777')
    # The taps of kernel row r, for output row oh.
    y2 = y1 + cell + 46
    s.text(20, y2, f'Output row {oh}, kernel row {r}: tap q reads phase q mod {SW} at unit '
           f'stride', 13, anchor='start', weight='bold')
    for q in range(KW):
        ph = q % SW
        x, base = starts[ph]
        first = oh * lp + tap_off(gm, 0, r, q)          # flat place ow = 0
        e0 = first - base
        assert 0 <= e0 and e0 + wo <= lp
        yy = y2 + 14 + (q // SW) * 22             # taps of one phase, one under the other
        bx = x + e0 * cell + 3
        s.rect(bx, yy, wo * cell - 6, 14, PHASE[ph][1], PHASE[ph][0], 1.5)
        s.text(bx + (wo * cell - 6) / 2, yy + 11,
               f'q={q}: xp[{first}…{first + wo - 1}] → ow 0…{wo - 1}', 10, mono=True)
    # The register block over the flattened output plane.
    y3 = y2 + 92
    s.line(20, y3 - 26, WID - 20, y3 - 26, '#ccc', 1)
    s.text(20, y3, f'The AVX2 block: {COB} channels × {OWB} flat outputs, {COB * NV} ymm', 15,
           anchor='start', weight='bold')
    c2 = 24
    gx, gy = 110, y3 + 44
    for f in range(OWB):
        o_h, o_w = divmod(f, lp)
        s.text(gx + f * c2 + c2 / 2, gy - 6, f'{o_h},{o_w}', 9, fill='#999' if o_w >= wo else '#555')
    s.text(gx - 8, gy - 6, 'oh,ow', 10, anchor='end', fill='#555')
    for co in range(COB):
        y = gy + co * c2
        s.text(gx - 8, y + 16, f'channel {co}', 11, anchor='end')
        for f in range(OWB):
            dead = f % lp >= wo
            s.rect(gx + f * c2, y, c2, c2, '#f4f4f4' if dead else REG[1], '#ccc' if dead else '#e0a0aa',
                   0.8)
            if dead:
                s.text(gx + f * c2 + c2 / 2, y + 16, '×', 12, fill='#aaa')
        for v in range(NV):
            s.rect(gx + v * LANES * c2, y, LANES * c2, c2, 'none', REG[0], 2)
    for v in range(NV):
        s.text(gx + (v + 0.5) * LANES * c2, gy + COB * c2 + 16,
               f'ymm: places {v * LANES}…{v * LANES + LANES - 1}', 11, fill=REG[0])
    yt = gy + COB * c2 + 44
    lines = [
        f'Per tap: {NV} loads of {LANES} from xp (places f + tap_off), {COB} broadcasts of w, '
        f'{COB * NV} FMAs.',
        f'Flat place f is output (f div {lp}, f mod {lp}): blocks run across row ends, and '
        f'the places ×',
        f'(ow ≥ {wo}) are computed and dropped: {gm["flat"]} flat places for '
        f'{ho * wo} outputs.',
        f'AVX-512: {k["cob512"]} channels × {k["owb512"]} places in '
        f'{k["cob512"] * k["owb512"] // 16} zmm.',
    ]
    for n, t in enumerate(lines):
        s.text(20, yt + n * 20, t, 12, anchor='start', fill='#333')
    s.h = yt + len(lines) * 20 + 10
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 5:
        sys.exit('usage: grouped_phase_figure.py OUT.svg chapters/03-gemm/conv_gemm.c '
                 'chapters/03-gemm/gemm_internal.h chapters/03-gemm/conv_avx2.c')
    draw(*sys.argv[1:])
