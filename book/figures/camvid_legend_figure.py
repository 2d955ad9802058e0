#!/usr/bin/env python3
"""Draws the legend of chapter 8's colour masks, as SVG.

    python3 book/figures/camvid_legend_figure.py OUT.svg chapters/08-fpn-camvid/train8.c

The colours are read from the palette the C code paints with (cr_camvid_palette in
train8.c, one `{r, g, b},  /* index name */` line per class), so the legend follows the
code: eleven classes and void, a swatch and a name each, four a row.
"""
import re
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


def draw(out, source):
    classes = palette(source)
    per_row, cw, ch = 4, 140, 24
    rows = (len(classes) + per_row - 1) // per_row
    s = Svg(per_row * cw + 20, rows * ch + 20, 'CamVid colour legend',
            'The colour our masks paint for each class: ' +
            ', '.join(name for _, name, _ in classes) + '.')
    for k, (_, name, (r, g, b)) in enumerate(classes):
        x, y = 10 + (k % per_row) * cw, 10 + (k // per_row) * ch
        s.rect(x, y + 3, 16, 16, f'#{r:02x}{g:02x}{b:02x}', '#444', 0.8)
        s.text(x + 22, y + 16, esc(name), 12, anchor='start')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    draw(sys.argv[1], sys.argv[2])
