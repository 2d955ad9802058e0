#!/usr/bin/env python3
"""Draws chapter 3's figure of how threads share the five loops, as SVG.

    python3 book/figures/threads_figure.py OUT.svg chapters/03-gemm/gemm.c chapters/03-gemm/gemm_avx2.c

Two threads on one MC-row by NC-column region of C, drawn twice. Left, loop 2
(jr) split: the NR-wide panels are cut into one contiguous range per thread, and
every thread walks every MC block, packing its own copy of the A block. Right,
loop 3 (ic) split: the MC blocks are dealt round-robin, each thread computing all
the NR panels of its blocks. The rule the engine uses to choose (split loop 2 when
the B block has at least F * T panels) is read from gemm.c, MR/NR/MC from
cr_kernel_avx2.
"""
import re
import sys

from svgkit import Svg, kernel_constants

THREAD = [('#1f5f99', '#d6e6f5'), ('#2e7d32', '#dcefdc')]


def split_factor(gemm_c):
    """F in the engine's `split_jr = np >= F * T`."""
    m = re.search(r'split_jr\s*=\s*np\s*>=\s*(\d+)\s*\*\s*T', open(gemm_c, encoding='utf-8').read())
    if not m:
        sys.exit(f'figure: no "split_jr = np >= F * T" in {gemm_c}')
    return int(m.group(1))


def draw(out, gemm_c, avx2_c):
    F = split_factor(gemm_c)
    k = kernel_constants(avx2_c, 'cr_kernel_avx2')
    T, nblk, npan = 2, 4, 8                     # drawn: 2 threads, 4 MC blocks, 8 panels
    w, h = 260, 200
    s = Svg(720, 385, 'Two ways to share a GEMM between threads: loop 2 or loop 3',
            f'Left: the NR-wide panels split into one range per thread. Right: the MC-row '
            f'blocks dealt round-robin. The engine splits loop 2 when there are at least '
            f'{F} panels per thread.')
    for side, (x0, title) in enumerate(((50, 'split loop 2 (jr): panels'),
                                        (380, 'split loop 3 (ic): blocks'))):
        y0 = 84
        s.text(x0 + w / 2, y0 - 30, title, 15, weight='bold')
        for b in range(nblk):
            for p in range(npan):
                t = (p * T // npan) if side == 0 else (b % T)
                s.rect(x0 + p * w / npan, y0 + b * h / nblk, w / npan, h / nblk,
                       THREAD[t][1], '#aaa', 0.8)
        for b in range(nblk + 1):
            s.line(x0, y0 + b * h / nblk, x0 + w, y0 + b * h / nblk, '#555', 1.5)
        s.rect(x0, y0, w, h, 'none', '#333', 1.5)
        for b in range(nblk):
            s.text(x0 - 6, y0 + (b + 0.5) * h / nblk + 5, f'ic {b}', 11, anchor='end', fill='#555')
        s.text(x0 + w / 2, y0 - 8, f'{npan} panels of N<tspan font-size="9" dy="3">R</tspan>'
               f'<tspan dy="-3"> = {k["nr"]} columns</tspan>', 11, fill='#555')
        if side == 0:
            for t in range(T):
                s.text(x0 + (t + 0.5) * w / T, y0 + h + 20, f'thread {t}', 13,
                       fill=THREAD[t][0], weight='bold')
            s.text(x0 + w / 2, y0 + h + 42, 'every thread packs every A block', 12, fill='#444')
            s.text(x0 + w / 2, y0 + h + 58, '(its own copy, in its own L2)', 12, fill='#444')
        else:
            for b in range(nblk):
                s.text(x0 + w + 8, y0 + (b + 0.5) * h / nblk + 5, f'thread {b % T}', 12,
                       anchor='start', fill=THREAD[b % T][0], weight='bold')
            s.text(x0 + w / 2, y0 + h + 42, 'each thread packs only its blocks;', 12, fill='#444')
            s.text(x0 + w / 2, y0 + h + 58, 'few blocks share unevenly', 12, fill='#444')
    s.text(360, 372, f'The engine splits loop 2 when the B block has at least {F}·T panels '
           f'(T threads), else loop 3.', 13)
    s.text(360, 18, f'C within one N<tspan font-size="9" dy="3">C</tspan><tspan dy="-3"> strip, '
           f'in blocks of M</tspan><tspan font-size="9" dy="3">C</tspan><tspan dy="-3"> = '
           f'{k["mc"]} rows</tspan>', 12, fill='#555')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 4:
        sys.exit('usage: threads_figure.py OUT.svg chapters/03-gemm/gemm.c chapters/03-gemm/gemm_avx2.c')
    draw(*sys.argv[1:4])
