#!/usr/bin/env python3
"""Draws chapter 3's figure of the AVX2 micro-kernel's registers as SVG.

    python3 book/figures/register_map_figure.py OUT.svg chapters/03-gemm/gemm_avx2.c

For one step k of the micro-kernel (MR x NR from cr_kernel_avx2; a ymm register
holds 8 floats): on top the NR values of the packed B panel at k, loaded into
NR/8 registers; at the left the MR values of the packed A panel at k, each in turn
broadcast into one register; in the middle the MR x NR tile of C, held in
MR * NR/8 accumulator registers, each updated by one FMA per k. The register count
under it is computed from the same constants.
"""
import sys

from svgkit import LEVEL, Svg, kernel_constants

LANES = 8          # floats per 256-bit ymm register


def draw(out, source):
    k = kernel_constants(source, 'cr_kernel_avx2')
    MR, NR = k['mr'], k['nr']
    nv = NR // LANES
    acc = MR * nv
    lane = 22
    regw = LANES * lane
    gx, gy = 190, 130              # accumulator grid
    rowh = 34
    w = gx + nv * (regw + 14) + 40
    s = Svg(max(w, 640), gy + MR * rowh + 130,
            'Registers of the AVX2 micro-kernel for one step k',
            f'{acc} ymm accumulators hold the {MR} by {NR} tile of C; per k, {nv} loads of B, '
            f'{MR} broadcasts of A into one register, and {acc} FMAs.')
    blue, red, orange = LEVEL['L1'], LEVEL['reg'], LEVEL['L2']
    # B at k: nv registers of 8 lanes.
    s.text(gx, 30, f'packed <tspan font-style="italic">B</tspan>, step k: N'
           f'<tspan font-size="10" dy="3">R</tspan><tspan dy="-3"> = {NR} floats, {nv} loads</tspan>',
           14, anchor='start', weight='bold', fill=blue[0])
    for v in range(nv):
        x = gx + v * (regw + 14)
        for l in range(LANES):
            s.rect(x + l * lane, 45, lane, lane, blue[1], '#9bb5d0')
        s.rect(x, 45, regw, lane, 'none', blue[0], 2)
        s.text(x + regw / 2, 45 + lane + 16, f'b{v} (ymm): B[k, {v * LANES}..{v * LANES + LANES - 1}]',
               12, fill=blue[0], mono=True)
        s.arrow(x + regw / 2, 45 + lane + 22, x + regw / 2, gy - 6, blue[0], 1.2)
    # A at k: MR values, each broadcast into one register.
    s.text(20, gy - 30, f'packed <tspan font-style="italic">A</tspan>, step k', 14, anchor='start',
           weight='bold', fill=orange[0])
    s.text(20, gy - 14, f'M<tspan font-size="10" dy="3">R</tspan><tspan dy="-3"> = {MR} floats</tspan>',
           12, anchor='start', fill=orange[0])
    for i in range(MR):
        y = gy + i * rowh + 4
        s.rect(30, y, lane + 6, lane, orange[1], orange[0], 1.5)
        s.text(30 + (lane + 6) / 2, y + 15, f'a{i}', 11, mono=True)
        s.arrow(30 + lane + 10, y + lane / 2, gx - 8, y + lane / 2, orange[0], 1)
    s.text(60 + lane, gy + MR * rowh + 8, 'broadcast: one ymm, 8 copies, reused for every row',
           11, anchor='start', fill=orange[0])
    # The accumulators.
    for i in range(MR):
        for v in range(nv):
            x, y = gx + v * (regw + 14), gy + i * rowh + 4
            s.rect(x, y, regw, lane, red[1], red[0], 2)
            s.text(x + regw / 2, y + 15, f'c{i}{v} += a{i} × b{v}', 12, mono=True, fill=red[0])
    total = acc + nv + 1
    s.text(20, gy + MR * rowh + 45,
           f'{acc} accumulators (the {MR}×{NR} tile of C) + {nv} for B + 1 for A\'s broadcast',
           13, anchor='start')
    s.text(20, gy + MR * rowh + 65, f'= {total} of the 16 ymm registers. Per k: {nv} loads, '
           f'{MR} broadcasts, {acc} FMAs ({acc * LANES * 2} flops);', 13, anchor='start')
    s.text(20, gy + MR * rowh + 85, 'C is read and written once, after the last k.', 13,
           anchor='start')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit('usage: register_map_figure.py OUT.svg chapters/03-gemm/gemm_avx2.c')
    draw(sys.argv[1], sys.argv[2])
