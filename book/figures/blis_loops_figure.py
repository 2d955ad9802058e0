#!/usr/bin/env python3
"""Draws chapter 3's figure of BLIS's five loops around the micro-kernel as SVG.

    python3 book/figures/blis_loops_figure.py OUT.svg chapters/03-gemm/gemm_avx2.c

Top: C += A B with the blocks each loop cuts, not to scale: loop 5 an NC-wide
strip of B and C, loop 4 a KC-deep band of it (the packed B block, kept in L3),
loop 3 an MC x KC block of A (packed, kept in L2), loop 2 a KC x NR panel of the
B block (L1), loop 1 an MR x KC sliver of A, and their MR x NR tile of C held in
registers. Bottom: the loop nest, each loop with the block it makes resident and
its size. The block sizes are read from cr_kernel_avx2 in the source given, so
the figure follows the code.
"""
import sys

from svgkit import LEVEL, Svg, esc, kernel_constants, kib


def draw(out, source):
    k = kernel_constants(source, 'cr_kernel_avx2')
    MR, NR, MC, KC, NC = k['mr'], k['nr'], k['mc'], k['kc'], k['nc']
    s = Svg(760, 640, 'The five loops of a BLIS GEMM and the cache level each block lives in',
            f'C plus-equals A times B cut into blocks: an NC={NC} column strip, a KC={KC} deep '
            f'block of B packed into L3, an MC={MC} by KC block of A packed into L2, a KC by '
            f'NR={NR} panel of B in L1, and an MR={MR} by NR tile of C in registers.')
    # Matrices (schematic): A is M x K at the left, B is K x N on top, C is M x N.
    ax, ay, aw, ah = 110, 230, 140, 200
    bx, by, bw, bh = 300, 40, 430, 150
    cx, cy = bx, ay
    s.rect(ax, ay, aw, ah, '#f4f4f1')
    s.rect(bx, by, bw, bh, '#f4f4f1')
    s.rect(cx, cy, bw, ah, '#f4f4f1')
    s.text(ax + aw / 2, ay + ah + 24, '<tspan font-style="italic">A</tspan> (M × K)', 16)
    s.text(bx - 16, by + bh / 2 + 5, '<tspan font-style="italic">B</tspan>', 16, anchor='end')
    s.text(bx - 16, by + bh / 2 + 24, '(K × N)', 13, anchor='end', fill='#555')
    s.text(cx + bw / 2, cy + ah + 24, '<tspan font-style="italic">C</tspan> (M × N)', 16)

    # Loop 5: NC columns of B and C.
    sx, sw = bx + 110, 240
    s.rect(sx, by, sw, bh, 'none', '#777', 1, 'stroke-dasharray="5,3"')
    s.rect(sx, cy, sw, ah, 'none', '#777', 1, 'stroke-dasharray="5,3"')
    s.text(sx + sw / 2, by - 10, f'loop 5: N<tspan font-size="10" dy="3">C</tspan>'
           f'<tspan dy="-3"> = {NC} columns</tspan>', 13, fill='#444')
    # Loop 4: KC of depth: the B block (L3) and A's KC columns.
    ky, kh = by + 45, 55
    kx, kw = ax + 40, 55
    s.rect(sx, ky, sw, kh, LEVEL['L3'][1], LEVEL['L3'][0], 2)
    s.rect(kx, ay, kw, ah, 'none', '#777', 1, 'stroke-dasharray="5,3"')
    s.text(bx + bw - 4, ky + kh / 2 + 5, f'K<tspan font-size="10" dy="3">C</tspan>'
           f'<tspan dy="-3"> = {KC}</tspan>', 13, anchor='end', fill='#444')
    s.text(kx + kw / 2, ay - 8, f'K<tspan font-size="10" dy="3">C</tspan>', 13, fill='#444')
    # Loop 3: MC rows: the A block (L2) and the MC x NC block of C.
    my, mh = ay + 50, 90
    s.rect(kx, my, kw, mh, LEVEL['L2'][1], LEVEL['L2'][0], 2)
    s.rect(sx, my, sw, mh, 'none', '#999', 1)
    s.text(ax - 8, my + mh / 2 + 5, f'M<tspan font-size="10" dy="3">C</tspan>'
           f'<tspan dy="-3"> = {MC}</tspan>', 13, anchor='end', fill='#444')
    # Loop 2: an NR-wide panel of the B block (L1). Loop 1: an MR sliver of A.
    px, pw = sx + 60, 18
    s.rect(px, ky, pw, kh, LEVEL['L1'][1], LEVEL['L1'][0], 2)
    s.text(px + pw / 2, ky + kh + 16, f'N<tspan font-size="10" dy="3">R</tspan>', 13,
           fill=LEVEL['L1'][0])
    ry, rh = my + 30, 12
    s.rect(kx, ry, kw, rh, '#fff', LEVEL['L2'][0], 1.5)
    s.text(kx + kw + 6, ry + rh - 1, f'M<tspan font-size="10" dy="3">R</tspan>', 13,
           anchor='start', fill=LEVEL['L2'][0])
    # The register tile of C.
    s.rect(px, ry, pw, rh, LEVEL['reg'][1], LEVEL['reg'][0], 2)
    s.line(px + pw / 2, ky + kh + 20, px + pw / 2, ry - 2, LEVEL['L1'][0], 1,
           'stroke-dasharray="2,2"')
    s.line(kx + kw + 30, ry + rh / 2, px - 2, ry + rh / 2, LEVEL['L2'][0], 1,
           'stroke-dasharray="2,2"')

    # The loop nest, with what each loop makes resident.
    y0, dy = 500, 22
    rows = [
        ('loop 5', f'for jc in 0..N step NC={NC}', None, ''),
        ('loop 4', f'  for pc in 0..K step KC={KC}', 'L3',
         f'pack B block KC×NC ({kib(KC * NC)}) → L3'),
        ('loop 3', f'    for ic in 0..M step MC={MC}', 'L2',
         f'pack A block MC×KC ({kib(MC * KC)}) → L2'),
        ('loop 2', f'      for jr in 0..NC step NR={NR}', 'L1',
         f'B panel KC×NR ({kib(KC * NR)}) → L1'),
        ('loop 1', f'        for ir in 0..MC step MR={MR}', 'reg',
         f'C tile MR×NR ({MR * NR // 8} ymm) → registers'),
        ('', '          micro-kernel: KC rank-1 updates', None, ''),
    ]
    s.text(20, y0 - 28, 'The loop nest (AVX2 kernel: cr_kernel_avx2)', 15, anchor='start',
           weight='bold')
    for i, (tag, code, level, note) in enumerate(rows):
        y = y0 + i * dy
        s.text(20, y, tag, 12, anchor='start', fill='#777')
        s.text(78, y, esc(code).replace(' ', '&#160;'), 13, anchor='start', mono=True)
        if level:
            stroke, fill = LEVEL[level]
            s.rect(430, y - 12, 14, 14, fill, stroke, 1.5)
            s.text(452, y, esc(note), 13, anchor='start', fill=stroke)
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit('usage: blis_loops_figure.py OUT.svg chapters/03-gemm/gemm_avx2.c')
    draw(sys.argv[1], sys.argv[2])
