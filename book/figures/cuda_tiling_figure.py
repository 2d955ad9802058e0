#!/usr/bin/env python3
"""Draws chapter 5's figure of the GEMM kernels' tiling on the GPU as SVG.

    python3 book/figures/cuda_tiling_figure.py OUT.svg chapters/05-cuda/gemm_kernels.cu \
        chapters/05-cuda/tc_tile.h chapters/05-cuda/conv_kernels.cu

Top, kernels 5 and 6 (R2_*): a block's BM x BN tile of C; the loop over K in steps of
BK, with the A tile (BM x BK) and the B tile (BK x BN) of the current step staged in
shared memory; the 256 threads' TM x TN register tiles; one warp's share (the
threads t / (BN/TN) put in one block row: a strip, since these kernels have no warp
tile) and one thread's tile, with the rows of A and the columns of B it reads.
Bottom, kernels 7-9 (TC_*): the same block tile cut into the warps' WM x WN tiles,
one warp's tile drawn as its 16 x 16 accumulator fragments, and the 16 x FK and
FK x 16 fragments of A and B it loads from the shared tiles (FK of TF32). Every
size is read from the sources (kernels 7-9's tile from tc_tile.h, which they share with
the tensor-core convolution); the footer gives the implicit GEMM's (IG_*).
"""
import re
import sys

from svgkit import LEVEL, Svg, kib

SCALE = 2                 # pixels per element of C
WARP = 32                 # threads per warp
SHARED = LEVEL['L1']      # shared memory: the colour of chapter 3's L1 (near, small)
REG = LEVEL['reg']
WARPC = ('#6a3d9a', '#efe0f5')
GHOST = '#bbb'


def defines(text, source, names):
    """{name: int} of `#define NAME <integer>` for each name; exits if one is missing."""
    out = {}
    for n in names:
        m = re.search(r'^#define\s+' + n + r'\s+(\d+)\b', text, re.M)
        if not m:
            sys.exit(f'figure: no "#define {n} <integer>" in {source}')
        out[n] = int(m.group(1))
    return out


def need(pattern, text, source, what):
    """The match of pattern in text; exits naming what was expected if it is absent."""
    m = re.search(pattern, text, re.S)
    if not m:
        sys.exit(f'figure: {source} no longer has {what}; update the figure')
    return m


def constants(gemm_cu, tile_h, conv_cu):
    """The block sizes of kernels 5-6 (r2), 7-9 (tc, from tc_tile.h) and the implicit
    GEMM (ig)."""
    g = open(gemm_cu, encoding='utf-8').read()
    r2 = defines(g, gemm_cu, ['R2_BM', 'R2_BN', 'R2_BK', 'R2_TM', 'R2_TN'])
    need(r'#define\s+R2_THREADS\s+\(R2_BM \* R2_BN / \(R2_TM \* R2_TN\)\)', g, gemm_cu,
         'R2_THREADS = R2_BM * R2_BN / (R2_TM * R2_TN)')
    need(r'trow = t / \(R2_BN / R2_TN\), tcol = t % \(R2_BN / R2_TN\)', g, gemm_cu,
         "kernel 5's thread map trow = t / (R2_BN / R2_TN), tcol = t % (R2_BN / R2_TN)")
    need(r'#include "tc_tile.h"', g, gemm_cu, "kernels 7-9's tile from tc_tile.h")
    t = open(tile_h, encoding='utf-8').read()
    tc = defines(t, tile_h, ['TC_BM', 'TC_BN', 'TC_BK', 'TC_WARPS', 'TC_WM', 'TC_WN'])
    frag = int(need(r'#define\s+TC_FM\s+\(TC_WM / (\d+)\)', t, tile_h,
                    '#define TC_FM (TC_WM / <fragment rows>)').group(1))
    need(r'#define\s+TC_FN\s+\(TC_WN / ' + str(frag) + r'\)', t, tile_h,
         f'#define TC_FN (TC_WN / {frag})')
    need(r'wmma::fragment<wmma::accumulator,\s*' + str(frag) + r',\s*' + str(frag) +
         r',\s*TensorCore<T>::FK', t, tile_h, f'{frag} x {frag} accumulator fragments')
    need(r'wm = warp / \(TC_BN / TC_WN\), wn = warp % \(TC_BN / TC_WN\)', t, tile_h,
         "the warp map wm = warp / (TC_BN / TC_WN), wn = warp % (TC_BN / TC_WN)")
    fk = {}
    for typ, name in (('float', 'TF32'), ('__half', 'FP16'), ('__nv_bfloat16', 'BF16')):
        body = need(r'struct TensorCore<' + typ + r'>\s*\{(.*?)\n\};', t, tile_h,
                    f'struct TensorCore<{typ}>').group(1)
        vals = set(re.findall(r'static const int FK = (\d+);', body))
        if len(vals) != 1:
            sys.exit(f'figure: TensorCore<{typ}> in {tile_h} has FK {sorted(vals)}, not one value')
        fk[name] = int(vals.pop())
    c = open(conv_cu, encoding='utf-8').read()
    ig = defines(c, conv_cu, ['IG_BM', 'IG_BN', 'IG_BK', 'IG_TM', 'IG_TN'])
    for d, a, b, what in ((r2, 'R2_BM', 'R2_TM', 'R2_BM/R2_TM'), (r2, 'R2_BN', 'R2_TN', 'R2_BN/R2_TN'),
                          (tc, 'TC_BM', 'TC_WM', 'TC_BM/TC_WM'), (tc, 'TC_BN', 'TC_WN', 'TC_BN/TC_WN'),
                          (tc, 'TC_WM', None, 'TC_WM/16'), (tc, 'TC_BK', None, 'TC_BK/FK')):
        div = d[b] if b else (frag if a == 'TC_WM' else max(fk.values()))
        if d[a] % div:
            sys.exit(f'figure: {what} is not whole in {gemm_cu} or {tile_h}')
    if (tc['TC_BM'] // tc['TC_WM']) * (tc['TC_BN'] // tc['TC_WN']) != tc['TC_WARPS']:
        sys.exit(f'figure: TC_WARPS is not (TC_BM/TC_WM) * (TC_BN/TC_WN) in {tile_h}')
    return r2, tc, frag, fk, ig


def ksteps(s, cx, cy, bm, bn, bk, nslots, rows_hi, cols_hi):
    """The A slots left of the C tile at (cx, cy) and the B slots above it, the first of
    each (step k0) filled as staged in shared memory; rows_hi / cols_hi: (first, count)
    of the rows of A / columns of B highlighted in red. Returns the slots' outer edges."""
    gap, w = 10, bk * SCALE
    for j in range(nslots):
        ax, by = cx - gap - (j + 1) * w, cy - gap - (j + 1) * w
        if j == 0:
            s.rect(ax, cy, w, bm * SCALE, SHARED[1], SHARED[0], 1.5)
            s.rect(cx, by, bn * SCALE, w, SHARED[1], SHARED[0], 1.5)
            r0, rn = rows_hi
            s.rect(ax, cy + r0 * SCALE, w, rn * SCALE, REG[1], REG[0], 1.5)
            c0, cn = cols_hi
            s.rect(cx + c0 * SCALE, by, cn * SCALE, w, REG[1], REG[0], 1.5)
        else:
            dash = 'stroke-dasharray="3,3"'
            s.rect(ax, cy, w, bm * SCALE, 'none', GHOST, 1, dash)
            s.rect(cx, by, bn * SCALE, w, 'none', GHOST, 1, dash)
    left, top = cx - gap - nslots * w, cy - gap - nslots * w
    # The K loop: arrows from the current step to the next ones.
    s.arrow(cx - gap - w / 2, cy + bm * SCALE + 14, left + 2, cy + bm * SCALE + 14, SHARED[0], 1.5)
    s.arrow(cx + bn * SCALE + 14, cy - gap - w / 2, cx + bn * SCALE + 14, top + 2, SHARED[0], 1.5)
    return left, top


def labels(s, cx, cy, bm, bn, left, top):
    """'A' left of the A slots, 'B' above the B slots (edges from ksteps)."""
    s.text(left - 8, cy + bm * SCALE / 2 + 5, 'A', 15, anchor='end', weight='bold', italic=True,
           fill=SHARED[0])
    s.text(cx + bn * SCALE / 2, top - 8, 'B', 15, weight='bold', italic=True, fill=SHARED[0])


def draw(out, gemm_cu, tile_h, conv_cu):
    r2, tc, frag, fk, ig = constants(gemm_cu, tile_h, conv_cu)
    BM, BN, BK, TM, TN = (r2[k] for k in ('R2_BM', 'R2_BN', 'R2_BK', 'R2_TM', 'R2_TN'))
    threads = BM * BN // (TM * TN)
    tcols = BN // TN
    TBM, TBN, TBK, WM, WN, NW = (tc[k] for k in ('TC_BM', 'TC_BN', 'TC_BK', 'TC_WM', 'TC_WN',
                                                'TC_WARPS'))
    FK = fk['TF32']
    FM, FN = WM // frag, WN // frag
    wcols = TBN // WN
    W = 780
    cx = 40 + 2 * TBK * SCALE + 10 + 20       # room for two K steps of the widest tile
    tx = cx + max(BN, TBN) * SCALE + 36        # the notes column
    y1 = 60 + 3 * BK * SCALE + 10             # panel 1's C tile
    p2 = y1 + BM * SCALE + 60                 # panel 2's title
    y2 = p2 + 30 + 2 * TBK * SCALE + 10       # panel 2's C tile
    H = y2 + TBM * SCALE + 80
    s = Svg(W, H, 'How the GEMM kernels of chapter 5 tile C: block, K step, warp, thread',
            f'Kernels 5 and 6: a {BM} by {BN} block tile of C, {threads} threads with {TM} by {TN} '
            f'register tiles, the A and B tiles of each step of {BK} along K in shared memory. '
            f'Kernels 7 to 9: the same tile cut into {NW} warp tiles of {WM} by {WN}, each '
            f'{FM} by {FN} accumulator fragments of {frag} by {frag}, fed by {frag} by {FK} '
            f'fragments of A and {FK} by {frag} of B (TF32).')

    # ---- kernels 5 and 6 ----------------------------------------------------------------
    s.text(20, 28, f'Kernels 5, 6 (FP32): a {BM}×{BN} tile of C per block, {threads} threads',
           15, anchor='start', weight='bold')
    warp = 1
    tids = range(warp * WARP, (warp + 1) * WARP)
    wrows = sorted({t // tcols for t in tids})
    wcls = sorted({t % tcols for t in tids})
    if wrows != list(range(wrows[0], wrows[-1] + 1)) or len(wrows) * len(wcls) != WARP:
        sys.exit('figure: a warp of kernel 5 is not a rectangle of threads')
    th = warp * WARP + 5
    trow, tcol = th // tcols, th % tcols
    left, top = ksteps(s, cx, y1, BM, BN, BK, 3, (trow * TM, TM), (tcol * TN, TN))
    # C: thread tiles, the warp's strip, one thread's registers.
    s.rect(cx, y1, BN * SCALE, BM * SCALE, '#fff', '#333', 1.5)
    for i in range(1, BM // TM):
        s.line(cx, y1 + i * TM * SCALE, cx + BN * SCALE, y1 + i * TM * SCALE, '#ddd', 0.8)
    for j in range(1, tcols):
        s.line(cx + j * TN * SCALE, y1, cx + j * TN * SCALE, y1 + BM * SCALE, '#ddd', 0.8)
    s.rect(cx + wcls[0] * TN * SCALE, y1 + wrows[0] * TM * SCALE, len(wcls) * TN * SCALE,
           len(wrows) * TM * SCALE, WARPC[1], WARPC[0], 2)
    s.rect(cx + tcol * TN * SCALE, y1 + trow * TM * SCALE, TN * SCALE, TM * SCALE, REG[1], REG[0], 2)
    s.rect(cx, y1, BN * SCALE, BM * SCALE, 'none', '#333', 1.5)
    s.text(cx + BN * SCALE / 2, y1 + BM * SCALE / 2 + 30, f'C: {BM}×{BN}', 16, weight='bold',
           fill='#333')
    s.text(cx + BN * SCALE / 2, y1 + BM * SCALE / 2 + 50, f'{BM // TM}×{tcols} threads', 13,
           fill='#555')
    labels(s, cx, y1, BM, BN, left, top)
    s.text(left, y1 + BM * SCALE + 34, f'K: steps of {BK}', 12, anchor='start', fill=SHARED[0])
    rows = [
        ((SHARED[0], 'bold'), f'shared: A {BM}×{BK}, B {BK}×{BN}'),
        ((SHARED[0], 'normal'), f'({kib(BK * BM + BK * BN)}), one K step'),
        ((WARPC[0], 'bold'), f'warp {warp} (threads {tids[0]}–{tids[-1]}):'),
        ((WARPC[0], 'normal'), f'{len(wrows) * TM}×{len(wcls) * TN}, a strip: no warp tile'),
        ((REG[0], 'bold'), f'thread {th}: {TM}×{TN} in registers'),
        ((REG[0], 'normal'), f'per k: {TM} + {TN} shared loads,'),
        ((REG[0], 'normal'), f'{TM * TN} FMAs'),
    ]
    for n, ((col, wt), line) in enumerate(rows):
        s.text(tx, y1 + 16 + n * 22 + (8 if n >= 2 else 0) + (8 if n >= 4 else 0), line, 13,
               anchor='start', fill=col, weight=wt)

    # ---- kernels 7 to 9 -------------------------------------------------------------------
    s.line(20, p2 - 26, W - 20, p2 - 26, '#ccc', 1)
    s.text(20, p2, f'Kernels 7–9 (tensor cores): the same {TBM}×{TBN} tile, {NW} warps', 15,
           anchor='start', weight='bold')
    wsel = wcols + 1                               # a warp off the first row and column
    wm, wn = wsel // wcols, wsel % wcols
    left, top = ksteps(s, cx, y2, TBM, TBN, TBK, 2, (wm * WM, WM), (wn * WN, WN))
    ax, by = cx - 10 - TBK * SCALE, y2 - 10 - TBK * SCALE
    for i in range(1, TBK // FK):                  # the fragments of A and B it loads
        s.line(ax + i * FK * SCALE, y2 + wm * WM * SCALE, ax + i * FK * SCALE,
               y2 + (wm + 1) * WM * SCALE, REG[0], 0.8)
        s.line(cx + wn * WN * SCALE, by + i * FK * SCALE, cx + (wn + 1) * WN * SCALE,
               by + i * FK * SCALE, REG[0], 0.8)
    for i in range(1, FM):
        s.line(ax, y2 + (wm * WM + i * frag) * SCALE, cx - 10, y2 + (wm * WM + i * frag) * SCALE,
               REG[0], 0.8)
    for j in range(1, FN):
        s.line(cx + (wn * WN + j * frag) * SCALE, by, cx + (wn * WN + j * frag) * SCALE, y2 - 10,
               REG[0], 0.8)
    s.rect(cx, y2, TBN * SCALE, TBM * SCALE, '#fff', '#333', 1.5)
    for w in range(NW):
        r, c = w // wcols, w % wcols
        x, y = cx + c * WN * SCALE, y2 + r * WM * SCALE
        if w == wsel:
            for fm in range(FM):
                for fn in range(FN):
                    s.rect(x + fn * frag * SCALE, y + fm * frag * SCALE, frag * SCALE, frag * SCALE,
                           REG[1], REG[0], 1)
                    s.text(x + (fn + 0.5) * frag * SCALE, y + (fm + 0.5) * frag * SCALE + 4,
                           f'{fm},{fn}', 10, fill=REG[0])
            s.rect(x, y, WN * SCALE, WM * SCALE, 'none', WARPC[0], 2.5)
        else:
            s.rect(x, y, WN * SCALE, WM * SCALE, WARPC[1], WARPC[0], 1.2)
            s.text(x + WN * SCALE / 2, y + WM * SCALE / 2 + 5, f'warp {w}', 12, fill=WARPC[0])
    s.rect(cx, y2, TBN * SCALE, TBM * SCALE, 'none', '#333', 1.5)
    labels(s, cx, y2, TBM, TBN, left, top)
    s.text(cx - 10 - 2 * TBK * SCALE, y2 + TBM * SCALE + 34, f'K: steps of {TBK}', 12,
           anchor='start', fill=SHARED[0])
    steps = ', '.join(f'{v} ({", ".join(k for k in fk if fk[k] == v)})'
                      for v in sorted(set(fk.values())))
    rows = [
        ((SHARED[0], 'bold'), f'shared: A {TBM}×{TBK}, B {TBK}×{TBN}'),
        ((SHARED[0], 'normal'), 'rounded to the input type'),
        ((WARPC[0], 'bold'), f'{TBM // WM}×{wcols} warps of {WM}×{WN}'),
        ((REG[0], 'bold'), f'warp {wsel}: {FM}×{FN} accumulator'),
        ((REG[0], 'normal'), f'fragments of {frag}×{frag} floats'),
        ((REG[0], 'normal'), f'per depth step: {FM} of A ({frag}×FK),'),
        ((REG[0], 'normal'), f'{FN} of B (FK×{frag}), {FM * FN} mma_sync'),
        (('#444', 'normal'), f'FK = {steps}'),
        (('#444', 'normal'), f'(drawn: {FK}, TF32)'),
    ]
    for n, ((col, wt), line) in enumerate(rows):
        extra = 8 * sum(1 for k in (2, 3, 7) if n >= k)
        s.text(tx, y2 + 16 + n * 22 + extra, line, 13, anchor='start', fill=col, weight=wt)
    s.text(20, H - 22, f'Implicit GEMM (conv_implicit_kernel): {ig["IG_BM"]}×{ig["IG_BN"]} per '
           f'block, steps of {ig["IG_BK"]}, {ig["IG_TM"]}×{ig["IG_TN"]} per thread, as kernels 5, 6.',
           13, anchor='start', fill='#444')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 5:
        sys.exit('usage: cuda_tiling_figure.py OUT.svg chapters/05-cuda/gemm_kernels.cu '
                 'chapters/05-cuda/tc_tile.h chapters/05-cuda/conv_kernels.cu')
    draw(*sys.argv[1:])
