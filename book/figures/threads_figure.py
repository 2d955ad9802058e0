#!/usr/bin/env python3
"""Draws chapter 3's figure of how threads share the five loops, as SVG.

    python3 book/figures/threads_figure.py OUT.svg chapters/03-gemm/gemm.c chapters/03-gemm/gemm_avx2.c

Two threads on C, drawn twice. Left, N split: the NR-wide panels of all of N are
cut into one contiguous range per thread; every thread walks every MC block and
packs its own B blocks (A, when small, is packed once for all). Right, the MC
blocks dealt round-robin, each thread computing all the NR panels of its blocks
and packing its own B. The rule the engine uses to choose (split N when there
are at least F * T panels, T threads) is read from gemm.c's plan_engine, MR/NR/MC
from cr_kernel_avx2.
"""
import re
import sys

from svgkit import Svg, kernel_constants

THREAD = [('#1f5f99', '#d6e6f5'), ('#2e7d32', '#dcefdc')]


def split_factor(gemm_c):
    """F in the engine's `split_n = nt == 1 || panels >= F * (int64_t)nt`."""
    m = re.search(r'split_n\s*=\s*nt\s*==\s*1\s*\|\|\s*panels\s*>=\s*(\d+)\s*\*\s*\(int64_t\)nt',
                  open(gemm_c, encoding='utf-8').read())
    if not m:
        sys.exit(f'figure: no "split_n = nt == 1 || panels >= F * (int64_t)nt" in {gemm_c}')
    return int(m.group(1))


def draw(out, gemm_c, avx2_c):
    F = split_factor(gemm_c)
    k = kernel_constants(avx2_c, 'cr_kernel_avx2')
    T, nblk, npan = 2, 4, 8                     # drawn: 2 threads, 4 MC blocks, 8 panels
    w, h = 260, 200
    s = Svg(720, 385, 'Two ways to share a GEMM between threads: loop 2 or loop 3',
            f'Left: the NR-wide panels split into one range per thread. Right: the MC-row '
            f'blocks dealt round-robin. The engine splits N when there are at least '
            f'{F} panels per thread.')
    for side, (x0, title) in enumerate(((50, 'split N: ranges of panels'),
                                        (380, 'deal the MC blocks'))):
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
            s.text(x0 + w / 2, y0 + h + 42, 'each thread packs its own B blocks;', 12, fill='#444')
            s.text(x0 + w / 2, y0 + h + 58, 'a small A is packed once, shared', 12, fill='#444')
        else:
            for b in range(nblk):
                s.text(x0 + w + 8, y0 + (b + 0.5) * h / nblk + 5, f'thread {b % T}', 12,
                       anchor='start', fill=THREAD[b % T][0], weight='bold')
            s.text(x0 + w / 2, y0 + h + 42, 'each thread packs its own B too;', 12, fill='#444')
            s.text(x0 + w / 2, y0 + h + 58, 'few blocks share unevenly', 12, fill='#444')
    s.text(360, 372, f'The engine splits N when N has at least {F}·T panels '
           f'(T threads), else deals the blocks: no barrier in the loops.', 13)
    s.text(360, 18, f'C, in blocks of M<tspan font-size="9" dy="3">C</tspan><tspan dy="-3"> = '
           f'{k["mc"]} rows</tspan>', 12, fill='#555')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 4:
        sys.exit('usage: threads_figure.py OUT.svg chapters/03-gemm/gemm.c chapters/03-gemm/gemm_avx2.c')
    draw(*sys.argv[1:4])
