#!/usr/bin/env python3
"""Suite `book`: every figure script draws an SVG that decodes, and it is the one the
book embeds.

    test_figures.py --root SRC --figdir BUILD/book/figures NAME.svg=SCRIPT[:SOURCE...] ...

For each figure: runs its script into a temporary folder, parses the SVG (XML, an
<svg> root with a viewBox, a <title>, at least 10 shapes and some text), and checks
that a chapter references it (`book/figures/NAME.svg`). For the figures that read
chapter 3's kernel constants, the block sizes printed in the figure are the ones in
the source; likewise chapter 5's tiles (cuda_tiling) and the grouped kernels' blocks
(grouped_phase, grouped_shift), read by the figure scripts' own parsers; for chapter 8's network (fpn.svg),
every box's printed shape is the one computed here from each piece's stride and channels.
Exit 77 never: only Python is needed.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET

NS = '{http://www.w3.org/2000/svg}'
failures = []

# fpn.svg at its 3 x 384 x 480 input: each piece's output channels and its stride (the
# input's size over the output's), as chapter 8 states them; the shape is then
# channels x 384/stride x 480/stride.
FPN_INPUT = (384, 480)
FPN_SHAPES = {'input': (3, 1), 'encoder.conv1': (64, 2), 'encoder.maxpool': (64, 4),
              'encoder.layer1': (256, 4), 'encoder.layer2': (512, 8),
              'encoder.layer3': (1024, 16), 'encoder.layer4': (2048, 32),
              'decoder.p5': (256, 32), 'decoder.p4': (256, 16), 'decoder.p3': (256, 8),
              'decoder.p2': (256, 4), 'decoder.seg_blocks.0': (128, 4),
              'decoder.seg_blocks.1': (128, 4), 'decoder.seg_blocks.2': (128, 4),
              'decoder.seg_blocks.3': (128, 4), 'decoder.dropout': (128, 4),
              'segmentation_head.0': (11, 4), 'segmentation_head.1': (11, 1)}


def check(cond, msg):
    print(('ok      ' if cond else 'NOT OK  ') + msg, flush=True)
    if not cond:
        failures.append(msg)
    return cond


def check_fpn(root):
    """Every box of fpn.svg (a <g data-module=NAME>) prints C x H x W equal to FPN_SHAPES's
    channels and the input's size over the stride, and every piece there has its box."""
    shown = {}
    for g in root.iter(NS + 'g'):
        if g.get('data-module'):
            text = ' '.join(''.join(e.itertext()) for e in g.iter(NS + 'text'))
            m = re.findall(r'(\d+) × (\d+) × (\d+)', text)
            shown[g.get('data-module')] = tuple(map(int, m[0])) if len(m) == 1 else m
    want = {k: (c, FPN_INPUT[0] // st, FPN_INPUT[1] // st) for k, (c, st) in FPN_SHAPES.items()}
    check(set(shown) == set(want), f'fpn.svg: a box for each piece (missing: '
          f'{sorted(set(want) - set(shown))}, extra: {sorted(set(shown) - set(want))})')
    bad = {k: (shown.get(k), v) for k, v in want.items() if shown.get(k) != v}
    check(not bad, f'fpn.svg: every shape is channels x 384/stride x 480/stride '
          f'(wrong, shown and expected: {bad})')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--root', required=True)
    ap.add_argument('figures', nargs='+', help='NAME.svg=SCRIPT[:SOURCE...]')
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(a.root, 'book', 'figures'))
    import svgkit
    chapters = ''
    for d in sorted(os.listdir(os.path.join(a.root, 'chapters'))):
        p = os.path.join(a.root, 'chapters', d, 'chapter.md')
        if os.path.exists(p):
            chapters += open(p, encoding='utf-8').read()
    with tempfile.TemporaryDirectory(prefix='crbook-fig-') as tmp:
        for spec in a.figures:
            name, _, rest = spec.partition('=')
            script, *sources = rest.split(':')
            out = os.path.join(tmp, name)
            r = subprocess.run([sys.executable, os.path.join(a.root, 'book', 'figures', script),
                                out] + [os.path.join(a.root, s) for s in sources],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if not check(r.returncode == 0 and os.path.exists(out),
                         f'{name}: {script} draws it ({r.stderr.strip()[-200:]})'):
                continue
            try:
                root = ET.parse(out).getroot()
            except ET.ParseError as e:
                check(False, f'{name}: decodes as XML ({e})')
                continue
            check(root.tag == NS + 'svg' and root.get('viewBox'), f'{name}: an <svg> with a viewBox')
            check(root.find(NS + 'title') is not None and root.find(NS + 'title').text,
                  f'{name}: has a title (what a screen reader says)')
            shapes = [e for e in root.iter() if e.tag in (NS + 'rect', NS + 'path', NS + 'line')]
            texts = ''.join(''.join(e.itertext()) for e in root.iter(NS + 'text'))
            check(len(shapes) >= 10 and len(texts) > 20,
                  f'{name}: {len(shapes)} shapes and {len(texts)} characters of text')
            check(f'book/figures/{name}' in chapters, f'{name}: a chapter shows it')
            for src in sources:
                if os.path.basename(src) == 'gemm_avx2.c':   # not chapter 7's int8_gemm_avx2.c
                    k = svgkit.kernel_constants(os.path.join(a.root, src), 'cr_kernel_avx2')
                    flat = texts.replace('\u00a0', '').replace(' ', '')
                    shown = {key: re.findall(key.upper() + r'=(\d+)', flat) for key in k}
                    want = {key: v for key, v in k.items() if shown[key]}
                    check(want and all(int(x) == k[key] for key in want for x in shown[key]),
                          f'{name}: every block size it shows is the code\'s {want} '
                          f'(shown: {shown})')
            if name == 'fpn.svg':
                check_fpn(root)
            if script == 'cuda_tiling_figure.py':
                import cuda_tiling_figure as ct
                r2, tc, frag, fk, ig = ct.constants(*(os.path.join(a.root, x) for x in sources))
                want = [f'{r2["R2_BM"]}×{r2["R2_BN"]}', f'{r2["R2_TM"]}×{r2["R2_TN"]}',
                        f'{tc["TC_WM"]}×{tc["TC_WN"]}', f'{frag}×{frag}',
                        f'{ig["IG_BM"]}×{ig["IG_BN"]}', f'{ig["IG_TM"]}×{ig["IG_TN"]}']
                check(all(x in texts for x in want),
                      f'{name}: shows the .cu sources\' tiles {want}')
            if script in ('grouped_phase_figure.py', 'grouped_shift_figure.py'):
                import importlib
                gp = importlib.import_module(script[:-3])
                k = gp.check_source(*(os.path.join(a.root, x) for x in sources))
                want = [f'{k["cob"]} channels × {k["owb"]} flat outputs',
                        f'{k["cob512"]} channels × {k["owb512"]} places']
                check(all(x in texts for x in want), f'{name}: shows the kernels\' blocks {want}')
    if failures:
        print(f'{len(failures)} check(s) failed')
        sys.exit(1)
    print('all figures draw and decode')


if __name__ == '__main__':
    main()
