#!/usr/bin/env python3
"""Draws chapter 8's network, smp's FPN with a ResNeXt-50 32x4d encoder, as SVG.

    python3 book/figures/fpn_figure.py OUT.svg chapters/08-fpn-camvid/fpn.c \\
        chapters/04-backward/model.h lib/dataset.h labs/lab08-fpn.c

One box per piece of the network, named as the state dict names it, with the shape
(channels x H x W) of its output for one input frame. Left, the encoder going down
(conv1, maxpool, layer1..layer4); middle, the pyramid going up (p5, then p4..p2, each
the level above up-sampled plus a 1x1 skip conv of the encoder's feature at its size);
right, the segmentation block of each level, the adds that merge them, Dropout2d and
the head, going up to the output beside the input.

Every number is computed here from the code: the config (cr_fpn_config_resnext50: stem,
planes, blocks, groups, width_per_group, pyramid, segmentation, dropout), the kernel
sizes, strides and scales of the modules cr_fpn_build appends (fpn.c), the bottleneck's
3x3 padding (model.h), the classes (lab08-fpn's default, CR_CAMVID_CLASSES in
dataset.h) and the input size (lab08-fpn's default --size). A regex that no longer
matches its source stops the script with the text it looked for.
"""
import re
import sys

from svgkit import Svg, esc, MONO


def find(text, pattern, what, source, flags=0):
    """The groups of pattern's first match in text, as ints where they are numbers;
    exits naming what was looked for when the source no longer has it."""
    m = re.search(pattern, text, flags)
    if not m:
        sys.exit(f'figure: no {what} in {source}')
    return tuple(int(g) if re.fullmatch(r'\d+', g) else g for g in m.groups())


def body(text, signature, source):
    """The body of the C function whose definition starts with signature (to its first
    closing brace at the start of a line)."""
    m = re.search(re.escape(signature) + r'[^{;]*\{(.*?)\n\}', text, re.S)
    if not m:
        sys.exit(f'figure: no definition of {signature}(...) in {source}')
    return m.group(1)


def config(fpn_c, model_h, dataset_h, lab_c):
    """Everything the figure prints, read from the four sources."""
    src = open(fpn_c, encoding='utf-8').read()
    cfg = body(src, 'cr_fpn_config cr_fpn_config_resnext50', fpn_c)
    c = {}
    for key in ('stem', 'groups', 'width_per_group', 'pyramid', 'segmentation'):
        c[key], = find(cfg, r'\.' + key + r'\s*=\s*(\d+)\s*,', f'.{key} = N in cr_fpn_config_resnext50', fpn_c)
    for key in ('planes', 'blocks'):
        vals = find(cfg, r'\.' + key + r'\s*=\s*\{\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\}',
                    f'.{key} = {{a, b, c, d}} in cr_fpn_config_resnext50', fpn_c)
        c[key] = list(vals)
    c['dropout'], = find(cfg, r'\.dropout\s*=\s*([0-9.]+)\s*,', '.dropout = P in cr_fpn_config_resnext50', fpn_c)
    c['dropout'] = float(c['dropout'])

    # conv(): padding k/2 on every side.
    find(body(src, 'static int conv', fpn_c), r'(cr_conv_set_padding\(&p,\s*k\s*/\s*2,\s*k\s*/\s*2\))',
         'cr_conv_set_padding(&p, k / 2, k / 2) in conv()', fpn_c)
    enc = body(src, 'static cr_status encoder', fpn_c)
    c['conv1_in'], c['conv1_k'], c['conv1_s'] = find(
        enc, r'conv\(m,\s*"encoder\.conv1",\s*CR_MODEL_INPUT,\s*(\d+),\s*c->stem,\s*(\d+),\s*(\d+),\s*1,',
        'conv(m, "encoder.conv1", CR_MODEL_INPUT, 3, c->stem, K, S, 1, ...)', fpn_c)
    c['pool_k'], c['pool_s'], c['pool_p'] = find(
        enc, r'cr_pool_params_make\((\d+),\s*(\d+),\s*(\d+)\)', 'cr_pool_params_make(k, s, p)', fpn_c)
    find(enc, r'(width\s*=\s*c->planes\[s\]\s*\*\s*c->width_per_group\s*/\s*64\s*\*\s*c->groups)',
         'width = c->planes[s] * c->width_per_group / 64 * c->groups', fpn_c)
    c['expansion'], = find(enc, r'cout\s*=\s*(\d+)\s*\*\s*c->planes\[s\]', 'cout = E * c->planes[s]', fpn_c)
    c['stage_s'], = find(enc, r'stride\s*=\s*i\s*==\s*0\s*&&\s*s\s*>\s*0\s*\?\s*(\d+)\s*:\s*1\s*;',
                         'stride = i == 0 && s > 0 ? S : 1', fpn_c)
    c['b3_pad'], = find(open(model_h, encoding='utf-8').read(),
                        r'conv3x3\(width,\s*stride,\s*groups,\s*padding\s+(\d+)\)',
                        'conv3x3(width, stride, groups, padding P) in the bottleneck\'s comment', model_h)

    top = body(src, 'static int fpn_block', fpn_c)
    c['near'], c['near_w'] = find(top, r'CR_UPSAMPLE_NEAREST,\s*\.scale_h\s*=\s*(\d+),\s*\.scale_w\s*=\s*(\d+)',
                                  '{.mode = CR_UPSAMPLE_NEAREST, .scale_h = S, .scale_w = S} in fpn_block', fpn_c)
    c['skip_k'], c['skip_s'] = find(top, r'"%s\.skip_conv",\s*pre\),\s*skip,\s*skip_ch,\s*c->pyramid,\s*(\d+),\s*(\d+),',
                                    'conv(m, name_of(a, "%s.skip_conv", pre), skip, skip_ch, c->pyramid, K, S, ...) in fpn_block', fpn_c)
    seg = body(src, 'static int seg_block', fpn_c)
    c['bil'], c['bil_w'] = find(seg, r'CR_UPSAMPLE_BILINEAR,\s*\.align_corners\s*=\s*true,\s*'
                                r'\.scale_h\s*=\s*(\d+),\s*\.scale_w\s*=\s*(\d+)',
                                '{.mode = CR_UPSAMPLE_BILINEAR, .align_corners = true, .scale_h = S, .scale_w = S} in seg_block', fpn_c)
    c['seg_k'], c['seg_s'] = find(seg, r'c->segmentation,\s*c->segmentation,\s*(\d+),\s*(\d+),\s*1,\s*false',
                                  'conv(..., c->segmentation, c->segmentation, K, S, 1, false) in seg_block', fpn_c)
    c['gn'], = find(seg, r'cr_model_add_groupnorm\(.*?x,\s*(\d+),\s*c->segmentation', 'cr_model_add_groupnorm(..., x, G, c->segmentation, ...) in seg_block',
                    fpn_c, re.S)
    build = body(src, 'cr_status cr_fpn_build', fpn_c)
    c['p5_k'], c['p5_s'] = find(build, r'conv\(m,\s*"decoder\.p5",\s*feat\[3\],\s*ch\[3\],\s*c->pyramid,\s*(\d+),\s*(\d+),',
                                'conv(m, "decoder.p5", feat[3], ch[3], c->pyramid, K, S, ...)', fpn_c)
    c['n_up0'], = find(build, r'seg_block\(m,\s*s,\s*p\[3\s*-\s*s\],\s*(\d+)\s*-\s*s,\s*c\)',
                       'seg_block(m, s, p[3 - s], N - s, c)', fpn_c)
    find(build, r'(cr_model_add_dropout2d\(m,\s*"decoder\.dropout",\s*merged,\s*c->dropout\))',
         'cr_model_add_dropout2d(m, "decoder.dropout", merged, c->dropout)', fpn_c)
    c['head_k'], c['head_s'] = find(
        build, r'conv\(m,\s*"segmentation_head\.0",\s*x,\s*c->segmentation,\s*c->classes,\s*(\d+),\s*(\d+),',
        'conv(m, "segmentation_head.0", x, c->segmentation, c->classes, K, S, ...)', fpn_c)
    c['head_up'], c['head_up_w'] = find(build, r'up4\s*=\s*\{\s*\.mode\s*=\s*CR_UPSAMPLE_BILINEAR,.*?'
                                        r'\.scale_h\s*=\s*(\d+),\s*\.scale_w\s*=\s*(\d+)',
                                        'up4 = {.mode = CR_UPSAMPLE_BILINEAR, ..., .scale_h = S, .scale_w = S} in cr_fpn_build', fpn_c, re.S)

    lab = open(lab_c, encoding='utf-8').read()
    find(lab, r'(classes\s*=\s*CR_CAMVID_CLASSES\s*;)', 'classes = CR_CAMVID_CLASSES (the default)', lab_c)
    c['classes'], = find(open(dataset_h, encoding='utf-8').read(), r'#define\s+CR_CAMVID_CLASSES\s+(\d+)',
                         '#define CR_CAMVID_CLASSES N', dataset_h)
    c['H'], c['W'] = find(lab, r'\*size_str\s*=\s*"(\d+)x(\d+)"', 'size_str = "HxW" (the default --size)', lab_c)
    for a, b in (('near', 'near_w'), ('bil', 'bil_w'), ('head_up', 'head_up_w')):
        if c[a] != c[b]:
            sys.exit(f'figure: {a}: scale_h {c[a]} != scale_w {c[b]} in {fpn_c}; the figure draws one scale')
    return c


def out_size(n, k, s, p):
    """A convolution's or pooling's output size: floor((n + 2p - k) / s) + 1."""
    return (n + 2 * p - k) // s + 1


def shapes(c):
    """[(state-dict name, what it does, (C, H, W))] in the order the figure draws them,
    and the numbers the boxes print; exits if two tensors an add joins differ."""
    H, W = c['H'], c['W']
    t = {'input': (3, H, W)}
    if c['conv1_in'] != 3:
        sys.exit(f'figure: conv1 reads {c["conv1_in"]} channels, the figure draws RGB')

    def conv(x, cout, k, s):
        return (cout, out_size(x[1], k, s, k // 2), out_size(x[2], k, s, k // 2))

    t['encoder.conv1'] = conv(t['input'], c['stem'], c['conv1_k'], c['conv1_s'])
    x = t['encoder.conv1']
    t['encoder.maxpool'] = (x[0], out_size(x[1], c['pool_k'], c['pool_s'], c['pool_p']),
                            out_size(x[2], c['pool_k'], c['pool_s'], c['pool_p']))
    x = t['encoder.maxpool']
    widths = []
    for s in range(4):
        stride = c['stage_s'] if s > 0 else 1
        widths.append(c['planes'][s] * c['width_per_group'] // 64 * c['groups'])
        x = (c['expansion'] * c['planes'][s], out_size(x[1], 3, stride, c['b3_pad']),
             out_size(x[2], 3, stride, c['b3_pad']))
        t[f'encoder.layer{s + 1}'] = x
    feat = [t[f'encoder.layer{s + 1}'] for s in range(4)]
    t['decoder.p5'] = conv(feat[3], c['pyramid'], c['p5_k'], c['p5_s'])
    above = t['decoder.p5']
    for lvl in (4, 3, 2):
        up = (above[0], above[1] * c['near'], above[2] * c['near'])
        skip = conv(feat[lvl - 2], c['pyramid'], c['skip_k'], c['skip_s'])
        if up != skip:
            sys.exit(f'figure: decoder.p{lvl} adds {up} and {skip}')
        t[f'decoder.p{lvl}'] = above = up
    segs = []
    for s in range(4):
        n_up = c['n_up0'] - s
        x = t[f'decoder.p{5 - s}']
        for b in range(max(n_up, 1)):
            x = conv(x, c['segmentation'], c['seg_k'], c['seg_s'])
            if n_up > 0:
                x = (x[0], x[1] * c['bil'], x[2] * c['bil'])
        t[f'decoder.seg_blocks.{s}'] = x
        segs.append((n_up, max(n_up, 1)))
    if len({t[f'decoder.seg_blocks.{s}'] for s in range(4)}) != 1:
        sys.exit('figure: the four segmentation blocks\' outputs differ: ' +
                 ', '.join(str(t[f'decoder.seg_blocks.{s}']) for s in range(4)))
    t['decoder.dropout'] = t['decoder.seg_blocks.0']
    t['segmentation_head.0'] = conv(t['decoder.dropout'], c['classes'], c['head_k'], c['head_s'])
    x = t['segmentation_head.0']
    t['segmentation_head.1'] = (x[0], x[1] * c['head_up'], x[2] * c['head_up'])
    if t['segmentation_head.1'][1:] != (H, W):
        sys.exit(f'figure: the output {t["segmentation_head.1"]} is not the input\'s size {H} x {W}')
    return t, widths, segs


def shape_text(x):
    return ' × '.join(str(v) for v in x)


def draw(out, *sources):
    c = config(*sources)
    t, widths, segs = shapes(c)

    X1, W1 = 10, 170          # encoder column
    X2, W2 = 216, 150         # pyramid column
    X3, W3 = 402, 164         # segmentation blocks and head
    BUS = X3 + W3 + 22        # the merge's adds
    Y0, BH, PITCH = 12, 56, 72
    width, height = BUS + 20, Y0 + 7 * PITCH - (PITCH - BH) + 12

    def row_y(r):
        return Y0 + r * PITCH

    def mid(r):
        return row_y(r) + BH / 2

    s = Svg(width, height, "smp's FPN with a ResNeXt-50 32x4d encoder, shape by shape",
            f'Input {shape_text(t["input"])}. Encoder down the left: conv1 7x7 stride '
            f'{c["conv1_s"]}, max-pool, layer1 to layer4 of {", ".join(map(str, c["blocks"]))} '
            f'bottlenecks with {c["groups"]} groups, down to {shape_text(t["encoder.layer4"])}. '
            f'Pyramid up the middle: p5 to p2 with {c["pyramid"]} channels. Right: a segmentation '
            f'block per level, each to {shape_text(t["decoder.seg_blocks.0"])}, added, Dropout2d, '
            f'a 1x1 conv to {c["classes"]} classes and bilinear x{c["head_up"]} to '
            f'{shape_text(t["segmentation_head.1"])}.')

    COL = {'in': ('#555', '#f2f2f2'), 'enc': ('#1f5f99', '#d6e6f5'), 'pyr': ('#2e7d32', '#dcefdc'),
           'seg': ('#d2691e', '#fbe3cf'), 'head': ('#b00020', '#f7d4da')}

    def box(x, y, w, name, op, kind):
        stroke, fill = COL[kind]
        s.add(f'<g data-module="{esc(name)}">')
        s.rect(x, y, w, BH, fill, stroke, 1.2, 'rx="5"')
        s.text(x + w / 2, y + 17, esc(name), 12, weight='bold', mono=True)
        s.text(x + w / 2, y + 32, esc(op), 10.5, fill='#444')
        s.text(x + w / 2, y + 49, shape_text(t[name]), 12.5, weight='bold', fill='#111')
        s.add('</g>')

    # The encoder, going down.
    enc = [('input', 'RGB frame', 'in'),
           ('encoder.conv1', f'{c["conv1_k"]}×{c["conv1_k"]}, stride {c["conv1_s"]}; bn1, relu', 'enc'),
           ('encoder.maxpool', f'{c["pool_k"]}×{c["pool_k"]}, stride {c["pool_s"]}', 'enc')]
    for st in range(4):
        n = c['blocks'][st]
        enc.append((f'encoder.layer{st + 1}', f'{n} bottlenecks' +
                    (f', stride {c["stage_s"]}' if st > 0 else ''), 'enc'))
    for r, (name, op, kind) in enumerate(enc):
        box(X1, row_y(r), W1, name, op, kind)
        if r:
            s.arrow(X1 + W1 / 2, row_y(r) - (PITCH - BH) + 1, X1 + W1 / 2, row_y(r) - 1)

    # The pyramid, going up: p2 in layer1's row ... p5 in layer4's row.
    for lvl in (5, 4, 3, 2):
        r = lvl + 1
        op = (f'{c["p5_k"]}×{c["p5_k"]} conv' if lvl == 5 else
              f'nearest ×{c["near"]} + {c["skip_k"]}×{c["skip_k"]} skip')
        box(X2, row_y(r), W2, f'decoder.p{lvl}', op, 'pyr')
        y = mid(r)
        s.arrow(X1 + W1 + 1, y, X2 - 1, y)
        s.text((X1 + W1 + X2) / 2, y - 5, f'c{lvl}', 10.5, fill='#444', italic=True)
        k = c['p5_k'] if lvl == 5 else c['skip_k']
        s.text((X1 + W1 + X2) / 2, y + 14, f'{k}×{k}', 10, fill='#444')
        if lvl < 5:
            s.arrow(X2 + W2 / 2, row_y(r + 1) - 1, X2 + W2 / 2, row_y(r) + BH + 1)

    # A segmentation block per level, beside it; the adds on a bus going up.
    for st, (n_up, steps) in enumerate(segs):
        r = 6 - st
        up = c['bil'] ** n_up
        op = (f'{steps} step{"s" if steps > 1 else ""}: ×{up}' if n_up > 0 else
              '1 step, no up-sampling')
        box(X3, row_y(r), W3, f'decoder.seg_blocks.{st}', op, 'seg')
        y = mid(r)
        s.arrow(X2 + W2 + 1, y, X3 - 1, y)
        if st == 0:
            s.line(X3 + W3, y, BUS, y)
            s.arrow(BUS, y, BUS, mid(r - 1) + 9)
        else:
            s.arrow(X3 + W3 + 1, y, BUS - 8, y)
            s.add(f'<circle cx="{BUS:.1f}" cy="{y:.1f}" r="8" fill="#fff" stroke="#444" stroke-width="1.5"/>')
            s.line(BUS - 5, y, BUS + 5, y, '#444', 1.8)
            s.line(BUS, y - 5, BUS, y + 5, '#444', 1.8)
            if st < 3:
                s.arrow(BUS, y - 8, BUS, mid(r - 1) + 9)
    # From the last add into the dropout, then the head, going up to the output.
    s.line(BUS, mid(3) - 8, BUS, mid(2))
    s.arrow(BUS, mid(2), X3 + W3 + 1, mid(2))
    box(X3, row_y(2), W3, 'decoder.dropout', f'Dropout2d, p = {c["dropout"]:g}', 'head')
    box(X3, row_y(1), W3, 'segmentation_head.0', f'{c["head_k"]}×{c["head_k"]} conv to {c["classes"]} classes',
        'head')
    box(X3, row_y(0), W3, 'segmentation_head.1', f'bilinear ×{c["head_up"]}: logits', 'head')
    for r in (2, 1):
        s.arrow(X3 + W3 / 2, row_y(r) - 1, X3 + W3 / 2, row_y(r - 1) + BH + 1)

    # The legend, where the pyramid has no level: what a bottleneck and a step are.
    lx, ly = X2 + 4, row_y(0) + 4
    lines = [('bottleneck', True),
             ('1×1, 3×3 in ' + str(c['groups']) + ' groups, 1×1', False),
             ('+ identity or downsample', False),
             ('3×3 width in layer1..4:', False),
             (', '.join(map(str, widths)), False),
             ('step of a seg block', True),
             (f'{c["seg_k"]}×{c["seg_k"]} conv, GroupNorm({c["gn"]}),', False),
             (f'ReLU, bilinear ×{c["bil"]}', False),
             ('⊕  add (decoder.merge)', True)]
    for i, (txt, bold) in enumerate(lines):
        s.text(lx, ly + 12 + i * 15, esc(txt), 11 if bold else 10.5, anchor='start',
               weight='bold' if bold else 'normal', fill='#222' if bold else '#444')
    s.save(out)


if __name__ == '__main__':
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    draw(*sys.argv[1:])
