#!/usr/bin/env python3
"""Draws chapter 7's figure of what one 32-bit lane of each int8 instruction computes.

    python3 book/figures/int8_lanes_figure.py OUT.svg chapters/07-qat/int8_gemm_avx2.c \
        chapters/07-qat/int8_gemm_avx512.c chapters/07-qat/int8_gemm.c chapters/07-qat/fakequant.c

Three lanes, each four u8 activations b times four s8 weights a added to an int32
accumulator c, with numbers a reader can check by hand:
  1. AVX2 with full-range activations: vpmaddubsw adds the products in pairs into int16
     and saturates (255*127 + 255*127 = 64770 becomes 32767), vpmaddwd multiplies the
     two int16 by the ones16 register and adds them into int32, vpaddd adds that to c
     (dot4_7bit and avx2_7bit_kernel in int8_gemm_avx2.c): the lane is wrong.
  2. The same on 7-bit activations (reduce_range: fake_quant's u8 qmax floored to half,
     127, the largest byte for which the library's avx2 rule runs the 7-bit kernel): every
     pair fits in int16, the lane is exact.
  3. AVX-512 VNNI's vpdpbusd on the bytes of lane 1: the four products added into c in
     one instruction, in 32 bits, exact.
Every value is computed here with the instructions' rules; the multiplier of vpmaddwd,
the 7-bit bound and the byte ranges are read from the sources, and the script checks
that the lines it depicts are still there.
"""
import math
import re
import sys

from svgkit import LEVEL, Svg

S16_MIN, S16_MAX = -32768, 32767
S32_MIN, S32_MAX = -2 ** 31, 2 ** 31 - 1
C0 = 1000                                   # the accumulator before the step
FULL = ([255, 255, 200, 3], [127, 127, -50, 9])   # b (u8), a (s8) of lanes 1 and 3
SEVEN = ([127, 127, 100, 1], [127, 127, -50, 9])  # lane 2: 7-bit activations


def need(pattern, path, what):
    """The groups of pattern's first match in path (whitespace-insensitive), or exit."""
    text = re.sub(r'\s+', '', open(path, encoding='utf-8').read())
    m = re.search(pattern, text)
    if not m:
        sys.exit(f'int8_lanes_figure: {path} no longer has {what}; redraw the figure to match')
    return [int(g) for g in m.groups()]


def read_sources(avx2, avx512, gemm, fq):
    """{ones, bound7, u8_max, s8_min, s8_max, reduced} from the four sources."""
    need(r'return_mm256_madd_epi16\(_mm256_maddubs_epi16\(b,a\),ones16\);', avx2,
         'dot4_7bit = vpmaddwd(vpmaddubsw(b, a), ones16)')
    need(r'c\[i\]\[0\]=_mm256_add_epi32\(c\[i\]\[0\],dot4_7bit\(b0,a,ones16\)\);', avx2,
         'the vpaddd of dot4_7bit into the accumulator')
    (ones,) = need(r'ones16=_mm256_set1_epi16\((\d+)\)', avx2, 'ones16 = _mm256_set1_epi16(N)')
    need(r'c\[i\]\[0\]=_mm512_dpbusd_epi32\(c\[i\]\[0\],b0,a\);', avx512,
         'c = vpdpbusd(c, b, a) in avx512_vnni_kernel')
    (bound7,) = need(r'b_max<=(\d+)\?&cr_i8_kernel_avx2_7bit', gemm,
                     'the avx2 rule "b_max <= N ? avx2_7bit : avx2_split"')
    lo_u8, s8_min, u8_max, s8_max = need(
        r'lo=dtype==CR_DT_U8\?(-?\d+):(-?\d+),hi=dtype==CR_DT_U8\?(\d+):(\d+);', fq,
        'the u8 and s8 ranges of cr_fake_quant_init')
    need(r'fq->qmax=reduce_range\?\(int32_t\)floor\(qmax/2\.0\):qmax;', fq,
         'reduce_range: qmax floored to half')
    reduced = math.floor(u8_max / 2.0)
    if reduced != bound7 or lo_u8 != 0:
        sys.exit(f'int8_lanes_figure: reduce_range gives 0..{reduced} but the 7-bit kernel '
                 f'runs for bytes <= {bound7}; the figure assumes they agree')
    return dict(ones=ones, bound7=bound7, u8_max=u8_max, s8_min=s8_min, s8_max=s8_max)


def sat16(v):
    return max(S16_MIN, min(S16_MAX, v))


def wrap32(v):
    return (v - S32_MIN) % 2 ** 32 + S32_MIN


def avx2_lane(b, a, c, ones):
    """vpmaddubsw (pairs into s16, saturating), vpmaddwd by ones (into s32), vpaddd."""
    exact_pairs = [b[0] * a[0] + b[1] * a[1], b[2] * a[2] + b[3] * a[3]]
    p16 = [sat16(p) for p in exact_pairs]
    d32 = wrap32(p16[0] * ones + p16[1] * ones)
    return exact_pairs, p16, d32, wrap32(c + d32)


def vnni_lane(b, a, c):
    """vpdpbusd: c + the four products, in 32 bits (wrapping, never saturating)."""
    prods = [b[i] * a[i] for i in range(4)]
    return prods, wrap32(c + sum(prods))


def n(v):
    return str(v).replace('-', '\u2212')


def draw(out, sources):
    k = read_sources(*sources)
    ones = k['ones']
    assert ones == 1, 'the figure writes vpmaddwd as a plain sum of the two pairs'
    for b, a in (FULL, SEVEN):
        assert all(0 <= x <= k['u8_max'] for x in b) and all(k['s8_min'] <= x <= k['s8_max'] for x in a)
    assert max(SEVEN[0]) <= k['bound7'] < max(FULL[0])
    lanes = [avx2_lane(*FULL, C0, ones), avx2_lane(*SEVEN, C0, ones)]
    prods, vnni = vnni_lane(*FULL, C0)
    exact = [C0 + sum(x * y for x, y in zip(*FULL)), C0 + sum(x * y for x, y in zip(*SEVEN))]
    hi7 = 2 * k['bound7'] * k['s8_max']           # the extreme 7-bit pairs
    lo7 = 2 * k['bound7'] * k['s8_min']
    assert S16_MIN <= lo7 and hi7 <= S16_MAX
    assert lanes[0][3] != exact[0] and lanes[1][3] == exact[1] and vnni == exact[0]

    bw, bh = 58, 24                   # a byte
    cw = 4 * bw                       # a lane
    gap, gx = 44, 74
    xs = [gx + i * (cw + gap) for i in range(3)]
    width = xs[2] + cw + 24
    red, green = LEVEL['reg'][0], LEVEL['L3'][0]
    blue, orange = LEVEL['L1'], LEVEL['L2']
    s = Svg(width, 486, 'One 32-bit lane of the int8 instructions, with numbers',
            f'Four u8 activations times four s8 weights added to an int32 accumulator of {C0}. '
            f'AVX2 vpmaddubsw adds the products in pairs into 16 bits and saturates: with bytes '
            f'of 255 the pair {FULL[0][0]} times {FULL[1][0]} plus {FULL[0][1]} times {FULL[1][1]}'
            f' = {lanes[0][0][0]} becomes {lanes[0][1][0]}, and the lane ends at {lanes[0][3]} '
            f'instead of {exact[0]}. With 7-bit activations the pairs fit and the lane is exact. '
            f'AVX-512 VNNI vpdpbusd adds the four products into 32 bits in one instruction: '
            f'{vnni}, exact.')
    heads = [('AVX2, full-range u8', f'activations 0..{k["u8_max"]}'),
             ('AVX2, 7-bit u8', f'reduce_range: 0..{k["bound7"]}'),
             ('AVX-512 VNNI', 'the bytes of the first lane')]
    yb, ya = 62, 92
    s.text(gx - 8, yb + 17, 'b (u8)', 11, anchor='end', fill=blue[0])
    s.text(gx - 8, ya + 17, 'a (s8)', 11, anchor='end', fill=orange[0])
    for col, (x0, (title, sub)) in enumerate(zip(xs, heads)):
        b, a = SEVEN if col == 1 else FULL
        s.text(x0 + cw / 2, 26, title, 14, weight='bold')
        s.text(x0 + cw / 2, 44, sub, 11, fill='#555')
        for i in range(4):
            s.rect(x0 + i * bw, yb, bw, bh, blue[1], blue[0], 1)
            s.text(x0 + i * bw + bw / 2, yb + 17, n(b[i]), 13, mono=True)
            s.rect(x0 + i * bw, ya, bw, bh, orange[1], orange[0], 1)
            s.text(x0 + i * bw + bw / 2, ya + 17, n(a[i]), 13, mono=True)
    y1, y2, y3 = 172, 284, 378        # the three steps' boxes
    l1, l2, l3 = 134, 248, 344        # the labels above them; arrows start under a label
    bxh = 40
    for col in (0, 1):
        x0 = xs[col]
        b, a = SEVEN if col == 1 else FULL
        pairs, p16, d32, c1 = lanes[col]
        s.text(x0 + cw / 2, l1, 'vpmaddubsw \u2192 int16', 12, mono=True)
        for h in range(2):
            x = x0 + h * 2 * bw + 2
            sat = p16[h] != pairs[h]
            for i in (2 * h, 2 * h + 1):
                s.arrow(x0 + i * bw + bw / 2, l1 + 6, x + bw - 2, y1 - 3, '#888', 1)
            s.rect(x, y1, 2 * bw - 4, bxh, '#fff7f8' if sat else '#fff', red if sat else '#444',
                   2 if sat else 1)
            s.text(x + bw - 2, y1 + 15, f'{b[2*h]}\u00b7{n(a[2*h]) if a[2*h] >= 0 else "(" + n(a[2*h]) + ")"}'
                   f'+{b[2*h+1]}\u00b7{n(a[2*h+1]) if a[2*h+1] >= 0 else "(" + n(a[2*h+1]) + ")"}',
                   11, fill='#555')
            if sat:
                s.text(x + bw - 2, y1 + 32, f'{n(pairs[h])} \u2192 {n(p16[h])}', 12, weight='bold',
                       fill=red, mono=True)
                s.text(x + bw - 2, y1 + bxh + 14, f'> {S16_MAX}: saturated', 11, fill=red)
            else:
                s.text(x + bw - 2, y1 + 32, n(p16[h]), 12, weight='bold', mono=True)
            s.arrow(x + bw - 2, l2 + 6, x0 + cw / 2, y2 - 3, '#888', 1)
        s.text(x0 + cw / 2, l2, f'vpmaddwd (\u00d7 {ones}) \u2192 int32', 12, mono=True)
        s.rect(x0, y2, cw, bxh, '#fff', '#444', 1)
        s.text(x0 + cw / 2, y2 + 15, f'{n(p16[0])} + {n(p16[1]) if p16[1] >= 0 else "(" + n(p16[1]) + ")"}',
               11, fill='#555')
        s.text(x0 + cw / 2, y2 + 32, n(d32), 12, weight='bold', mono=True)
        s.arrow(x0 + cw / 2, l3 + 6, x0 + cw / 2, y3 - 3, '#888', 1)
        s.text(x0 + cw / 2, l3, 'vpaddd into c (int32)', 12, mono=True)
        ok = c1 == exact[col]
        s.rect(x0, y3, cw, bxh, '#fff', green if ok else red, 2)
        s.text(x0 + cw / 2, y3 + 15, f'{C0} + {n(d32)}', 11, fill='#555')
        s.text(x0 + cw / 2, y3 + 32, f'c = {n(c1)}', 12, weight='bold', mono=True,
               fill=green if ok else red)
        s.text(x0 + cw / 2, y3 + bxh + 24,
               'exact \u2714' if ok else f'exact sum: {n(exact[col])} \u2718', 12, weight='bold',
               fill=green if ok else red)
    # the VNNI lane: one instruction, four 32-bit products straight into c
    x0 = xs[2]
    s.rect(x0 - 8, l1 - 18, cw + 16, y3 + bxh + 6 - (l1 - 18), 'none', '#888', 1,
           'stroke-dasharray="5,4"')
    s.text(x0 + cw / 2, l1, 'vpdpbusd: one instruction', 12, mono=True)
    for i in range(4):
        s.arrow(x0 + i * bw + bw / 2, l1 + 6, x0 + i * bw + bw / 2, y1 - 3, '#888', 1)
        s.rect(x0 + i * bw + 2, y1, bw - 4, bxh, '#fff', '#444', 1)
        s.text(x0 + i * bw + bw / 2, y1 + 15, 'b\u00b7a', 11, fill='#555', italic=True)
        s.text(x0 + i * bw + bw / 2, y1 + 32, n(prods[i]), 12, weight='bold', mono=True)
        s.arrow(x0 + i * bw + bw / 2, l2 + 6, x0 + cw / 2, y2 - 3, '#888', 1)
    s.text(x0 + cw / 2, l2, 'four products, 32-bit sums', 12, fill='#555')
    s.rect(x0, y2, cw, bxh, '#fff', '#444', 1)
    s.text(x0 + cw / 2, y2 + 15, ' + '.join(n(p) if p >= 0 else '(' + n(p) + ')' for p in prods),
           11, fill='#555')
    s.text(x0 + cw / 2, y2 + 32, n(sum(prods)), 12, weight='bold', mono=True)
    s.arrow(x0 + cw / 2, l3 + 6, x0 + cw / 2, y3 - 3, '#888', 1)
    s.text(x0 + cw / 2, l3, 'added to c, same instruction', 12, fill='#555')
    s.rect(x0, y3, cw, bxh, '#fff', green, 2)
    s.text(x0 + cw / 2, y3 + 15, f'{C0} + {n(sum(prods))}', 11, fill='#555')
    s.text(x0 + cw / 2, y3 + 32, f'c = {n(vnni)}', 12, weight='bold', mono=True, fill=green)
    s.text(x0 + cw / 2, y3 + bxh + 24, 'exact \u2714', 12, weight='bold', fill=green)
    s.text(width / 2, 470, f'Only vpmaddubsw\u2019s int16 pair can saturate (\u00b1{S16_MAX}); '
           f'with b \u2264 {k["bound7"]} a pair stays within {n(lo7)}..{hi7}.', 12, fill='#333')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    draw(sys.argv[1], sys.argv[2:])
