#!/usr/bin/env python3
"""Draws chapter 3's packing figure as SVG: an A block cut into MR-row panels,
stored k-major, the last panel padded with zeros.

    python3 book/figures/packing_figure.py OUT.svg chapters/03-gemm/gemm_avx2.c

Top: a small block of A, MR + 2 rows by 4 of depth (MR read from cr_kernel_avx2),
each cell naming its row i and depth k; the rows fall into two panels of MR rows.
Bottom: the packed buffer in memory order, panel by panel: for each k, the MR
values of the panel's rows side by side (the order the micro-kernel broadcasts
them); the second panel has only 2 real rows and MR - 2 zeros in each group, so
the kernel always computes a full tile. B is packed the same way with NR columns.
"""
import sys

from svgkit import LEVEL, Svg, kernel_constants

ROW_FILL = ['#d6e6f5', '#fbe3cf', '#dcefdc', '#efe0f5', '#fff3c4', '#d9f2f2', '#f7d4da',
            '#e6e6e6']


def draw(out, source):
    MR = kernel_constants(source, 'cr_kernel_avx2')['mr']
    rows, depth = MR + 2, 4
    cell = 26
    s = Svg(620, 250 + rows * cell, 'Packing A into MR-row panels, k-major, zero-padded',
            f'A block of {rows} rows and {depth} columns of depth is packed into panels of '
            f'MR={MR} rows; in each panel the {MR} values of one depth k are stored side by '
            f'side, then the next k; the last panel is padded with zeros.')
    ax, ay = 90, 50
    s.text(ax + depth * cell / 2, ay - 22, f'block of <tspan font-style="italic">A</tspan>', 15,
           weight='bold')
    for k in range(depth):
        s.text(ax + k * cell + cell / 2, ay - 5, f'k={k}', 11, fill='#555')
    for i in range(rows):
        for k in range(depth):
            s.rect(ax + k * cell, ay + i * cell, cell, cell, ROW_FILL[i % len(ROW_FILL)], '#888')
            s.text(ax + k * cell + cell / 2, ay + i * cell + 17, f'{i},{k}', 10)
        s.text(ax - 8, ay + i * cell + 17, f'i={i}', 11, anchor='end', fill='#555')
    # Panel outlines.
    for p, (r0, r1) in enumerate(((0, MR), (MR, rows))):
        s.rect(ax - 3, ay + r0 * cell - 1, depth * cell + 6, (r1 - r0) * cell + 2, 'none',
               LEVEL['L2'][0], 2)
        s.text(ax + depth * cell + 12, ay + (r0 + r1) / 2 * cell + 5,
               f'panel {p}: rows {r0}–{r1 - 1}' + ('' if r1 - r0 == MR else
                                                 f', padded to M<tspan font-size="9" dy="3">R'
                                                 f'</tspan><tspan dy="-3"> = {MR}</tspan>'),
               13, anchor='start', fill=LEVEL['L2'][0])
    # The packed buffer, in memory order.
    my = ay + rows * cell + 55
    s.text(20, my - 14, 'packed buffer, in memory order (left to right, then the next line)',
           14, anchor='start', weight='bold')
    gap = 10
    c2 = 20
    for p, (r0, r1) in enumerate(((0, MR), (MR, rows))):
        y = my + p * (c2 + 34)
        x = 20
        s.text(x, y + 14, f'panel {p}', 12, anchor='start', fill=LEVEL['L2'][0])
        x += 58
        for k in range(depth):
            s.text(x + MR * c2 / 2, y - 3 + c2 + 14 + 4, f'k={k}', 10, fill='#555')
            for j in range(MR):
                i = r0 + j
                if i < r1:
                    s.rect(x + j * c2, y, c2, c2, ROW_FILL[i % len(ROW_FILL)], '#888')
                    s.text(x + j * c2 + c2 / 2, y + 14, f'{i}', 10)
                else:
                    s.rect(x + j * c2, y, c2, c2, '#fff', '#bbb', 1, 'stroke-dasharray="2,2"')
                    s.text(x + j * c2 + c2 / 2, y + 14, '0', 10, fill='#999')
            x += MR * c2 + gap
    s.text(20, my + 2 * (c2 + 34) + 6,
           f'Each group is one k: the M<tspan font-size="9" dy="3">R</tspan><tspan dy="-3"> = '
           f'{MR}</tspan> values the micro-kernel broadcasts, one after the other.', 12, anchor='start',
           fill='#444')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit('usage: packing_figure.py OUT.svg chapters/03-gemm/gemm_avx2.c')
    draw(sys.argv[1], sys.argv[2])
