"""Small SVG writer shared by the figure scripts (Python standard library only),
and the reader of chapter 3's kernel constants, so that figures show the block
sizes the code uses instead of retyped ones."""
import os
import re
import sys
import tempfile

FONT = 'DejaVu Sans, Helvetica, Arial, sans-serif'
MONO = 'DejaVu Sans Mono, Menlo, Consolas, monospace'

# Colours of the memory levels, the same in every figure.
LEVEL = {'L3': ('#2e7d32', '#dcefdc'), 'L2': ('#d2691e', '#fbe3cf'),
         'L1': ('#1f5f99', '#d6e6f5'), 'reg': ('#b00020', '#f7d4da')}


def esc(s):
    """Text made safe for SVG."""
    return str(s).replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')


class Svg:
    """An SVG picture of w x h user units, built from shapes in drawing order."""

    def __init__(self, w, h, title, desc):
        self.w, self.h, self.title, self.desc, self.parts = w, h, title, desc, []

    def add(self, s):
        self.parts.append(s)

    def rect(self, x, y, w, h, fill='#fff', stroke='#444', sw=1, extra=''):
        self.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" fill="{fill}" '
                 f'stroke="{stroke}" stroke-width="{sw}" {extra}/>')

    def text(self, x, y, s, size=14, anchor='middle', weight='normal', fill='#222',
             mono=False, italic=False):
        fam = f' font-family="{MONO}"' if mono else ''
        sty = ' font-style="italic"' if italic else ''
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
                 f'font-weight="{weight}" fill="{fill}"{fam}{sty}>{s}</text>')

    def line(self, x1, y1, x2, y2, stroke='#444', sw=1.5, extra=''):
        self.add(f'<path d="M{x1:.1f},{y1:.1f} L{x2:.1f},{y2:.1f}" stroke="{stroke}" '
                 f'stroke-width="{sw}" fill="none" {extra}/>')

    def arrow(self, x1, y1, x2, y2, stroke='#444', sw=1.5):
        self.line(x1, y1, x2, y2, stroke, sw, 'marker-end="url(#arrow)"')

    def render(self):
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {self.w} {self.h}" '
                f'width="{self.w}" height="{self.h}" font-family="{FONT}" role="img" '
                f'aria-labelledby="title desc">\n<title id="title">{esc(self.title)}</title>\n'
                f'<desc id="desc">{esc(self.desc)}</desc>\n<defs>\n'
                '<marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
                'fill="#444"/></marker>\n</defs>\n<rect width="100%" height="100%" fill="#fff"/>\n')
        return head + '\n'.join(self.parts) + '\n</svg>\n'

    def save(self, out):
        """Writes the SVG to out (never a half-written figure): see write_atomically."""
        write_atomically(out, self.render())


def write_atomically(out, text):
    """Writes text to a unique temporary file beside out, then renames it to out: two
    builds at once never share a temporary, and a reader never sees half a figure."""
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + '.tmp.',
                               dir=os.path.dirname(out) or '.')
    try:
        with os.fdopen(fd, 'w', encoding='utf-8') as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def kernel_constants(source, name):
    """{mr, nr, mc, kc, nc} of the cr_gemm_kernel `name` defined in source, e.g.
    `const cr_gemm_kernel cr_kernel_avx2 = {"avx2", 6, 16, 144, 256, 4080, ...}`."""
    text = open(source, encoding='utf-8').read()
    m = re.search(r'cr_gemm_kernel\s+' + re.escape(name) +
                  r'\s*=\s*\{\s*"[^"]*"\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)',
                  text)
    if not m:
        sys.exit(f'figure: no "{name} = {{name, mr, nr, mc, kc, nc, ...}}" in {source}')
    return dict(zip(('mr', 'nr', 'mc', 'kc', 'nc'), (int(g) for g in m.groups())))


def kib(nfloats):
    """A float count as KiB (4-byte floats), e.g. '144 KiB'."""
    v = nfloats * 4 / 1024
    return f'{v:.0f} KiB' if v == int(v) else f'{v:.1f} KiB'
