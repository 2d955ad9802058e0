#!/usr/bin/env python3
"""Draws chapter 8's figure of predicted masks, with the legend of their colours, as SVG.

    python3 book/figures/fpn_masks_figure.py OUT.svg chapters/08-fpn-camvid/train8.c MASK.png...

The masks (PNG files `lab08-fpn predict` wrote, named FRAME_mask.png) are embedded side by
side, two a row, each titled with its frame's name. The legend's colours are read from
the palette the C code paints with (cr_camvid_palette in train8.c, one
`{r, g, b},  /* index name */` line per class), so the legend follows the code: eleven
classes and void, a swatch and a name each.
"""
import base64
import os
import re
import struct
import sys

from svgkit import Svg, esc


def palette(source):
    """[(index, name, (r, g, b))] of cr_camvid_palette in source."""
    text = open(source, encoding='utf-8').read()
    block = re.search(r'cr_camvid_palette\[\d+\]\[3\]\s*=\s*\{(.*?)\n\};', text, re.S)
    if not block:
        sys.exit(f'figure: no cr_camvid_palette in {source}')
    rows = re.findall(r'\{\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\}\s*,?\s*/\*\s*(\d+)\s+([^*]+?)\s*\*/',
                      block.group(1))
    if len(rows) < 2:
        sys.exit(f'figure: cr_camvid_palette in {source} has {len(rows)} readable rows')
    return [(int(i), name, (int(r), int(g), int(b))) for r, g, b, i, name in rows]


def png_size(path):
    """(width, height) of a PNG file, from its IHDR chunk."""
    data = open(path, 'rb').read(32)
    if data[:8] != b'\x89PNG\r\n\x1a\n' or data[12:16] != b'IHDR':
        sys.exit(f'figure: {path} is not a PNG file')
    return struct.unpack('>II', data[16:24])


def draw(out, source, masks):
    classes = palette(source)
    sizes = [png_size(m) for m in masks]
    mw, mh = sizes[0]
    if any(sz != (mw, mh) for sz in sizes):
        sys.exit('figure: the masks differ in size')
    per_row, gap, title_h = 2, 12, 18
    rows = (len(masks) + per_row - 1) // per_row
    width = per_row * mw + (per_row - 1) * gap + 20
    legend_per_row = 4
    cw, ch = width // legend_per_row, 24
    legend_rows = (len(classes) + legend_per_row - 1) // legend_per_row
    top = 10 + rows * (title_h + mh + gap)
    names = [os.path.basename(m).replace('_mask.png', '') for m in masks]
    s = Svg(width, top + legend_rows * ch + 10, 'Predicted masks of CamVid test frames',
            'The colour masks our trained FPN predicts for the test frames ' + ', '.join(names) +
            '; legend: ' + ', '.join(name for _, name, _ in classes) + '.')
    for k, (m, name) in enumerate(zip(masks, names)):
        x = 10 + (k % per_row) * (mw + gap)
        y = 10 + (k // per_row) * (title_h + mh + gap)
        s.text(x + mw / 2, y + 13, esc(name), 12, mono=True)
        b64 = base64.b64encode(open(m, 'rb').read()).decode()
        s.add(f'<image x="{x}" y="{y + title_h}" width="{mw}" height="{mh}" '
              f'href="data:image/png;base64,{b64}"/>')
    for k, (_, name, (r, g, b)) in enumerate(classes):
        x, y = 10 + (k % legend_per_row) * cw, top + (k // legend_per_row) * ch
        s.rect(x, y + 3, 16, 16, f'#{r:02x}{g:02x}{b:02x}', '#444', 0.8)
        s.text(x + 22, y + 16, esc(name), 12, anchor='start')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    draw(sys.argv[1], sys.argv[2], sys.argv[3:])
