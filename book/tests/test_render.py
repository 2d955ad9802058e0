#!/usr/bin/env python3
"""Suite `book`: build the book, then look at it in headless Chromium.

1. Builds the `book` target (ninja -C BUILD_ROOT book): labs --quick, figures,
   pandoc with our filters. A failure here is this test's failure, with the
   build's message (a missing snippet, an unknown column, ...).
2. Static checks of the HTML: one listing per {.include}, one non-empty table per
   {.csv-table}, one figure per {.plot}, every image embedded and non-empty, no
   unresolved block left, MathML for the formulas, a table of contents.
3. In Chromium (exit 77 when absent): loads a copy of the page with a small
   checking script, then checks that every image decoded (naturalWidth > 0), that
   every table has rows, and that on a phone-sized window the page does not
   scroll sideways. Screenshots of the first pages at laptop and phone sizes are
   kept in WORKDIR (build/book/test-render/), never in the repository.
"""
import argparse
import base64
import html
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

failures = []


def check(cond, msg):
    print(('ok      ' if cond else 'NOT OK  ') + msg, flush=True)
    if not cond:
        failures.append(msg)
    return cond


class Scan(html.parser.HTMLParser):
    """Counts what the checks need, keeping a stack of open elements."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.listings = 0
        self.listing_code_chars = []
        self.tables = []          # rows per .csv-table
        self.figures = 0
        self.images = []          # src of every <img>
        self.inline_svgs = 0
        self.math = 0
        self.toc = False
        self.text = []
        self._in_table = None
        self._in_listing = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        cls = (a.get('class') or '').split()
        if tag not in ('img', 'br', 'hr', 'meta', 'link', 'input', 'col', 'source'):
            self.stack.append((tag, cls))
        if tag == 'div' and 'listing' in cls:
            self.listings += 1
            self._in_listing = len(self.stack)
            self.listing_code_chars.append(0)
        if tag == 'div' and 'csv-table' in cls:
            self.tables.append(0)
            self._in_table = len(self.stack)
        if tag == 'tr' and self._in_table and any(t == 'tbody' for t, _ in self.stack):
            self.tables[-1] += 1
        if tag == 'figure':
            self.figures += 1
        if tag == 'img':
            self.images.append(a.get('src') or '')
        if tag == 'svg':
            self.inline_svgs += 1
        if tag == 'math':
            self.math += 1
        if tag == 'nav' and a.get('id') == 'TOC':
            self.toc = True

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if self._in_table and len(self.stack) < self._in_table:
                self._in_table = None
            if self._in_listing and len(self.stack) < self._in_listing:
                self._in_listing = None
            if t == tag:
                break

    def handle_data(self, data):
        self.text.append(data)
        if self._in_listing and any(t == 'code' for t, _ in self.stack):
            self.listing_code_chars[-1] += len(data.strip())


IF_BUILT = re.compile(r'^(:{3,})\s*\{\.if-built\s+file="([^"]+)"\}\s*\n(.*?)^\1\s*$', re.M | re.S)
OTHERWISE = re.compile(r'^(:{3,})\s*otherwise\s*\n(.*?)^\1\s*$', re.M | re.S)


def resolve_if_built(text, build_root):
    """The Markdown as book/filters/if_built.lua leaves it: an {.if-built file=F} part
    without its `otherwise` part where build_root/F exists, else the `otherwise` part."""
    def one(m):
        made = os.path.exists(os.path.join(build_root, m.group(2)))
        body = m.group(3)
        if made:
            return OTHERWISE.sub('', body)
        return ''.join(o.group(2) for o in OTHERWISE.finditer(body))
    return IF_BUILT.sub(one, text)


def expected_blocks(md_files, build_root):
    counts = {'include': 0, 'csv-table': 0, 'plot': 0, 'image': 0}
    for p in md_files:
        text = resolve_if_built(open(p, encoding='utf-8').read(), build_root)
        for cls in ('include', 'csv-table', 'plot'):
            counts[cls] += len(re.findall(r'^\s*(?:```+|~~~+)\s*\{[^}]*\.' + re.escape(cls) + r'\b',
                                          text, re.M))
        counts['image'] += len(re.findall(r'!\[[^\]]*\]\([^)]+\)', text))
    return counts


CHECK_JS = """
<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var broken = imgs.filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  var tables = Array.prototype.slice.call(document.querySelectorAll('.csv-table table'));
  var r = {
    images: imgs.length,
    broken: broken.map(function (i) { return (i.getAttribute('src') || '').slice(0, 80); }),
    tables: tables.length,
    empty_tables: tables.filter(function (t) { return t.querySelectorAll('tbody tr').length === 0; }).length,
    listings: document.querySelectorAll('.listing').length,
    math: document.querySelectorAll('math').length,
    clipped: Array.prototype.slice.call(document.querySelectorAll(
        '.listing pre, div.sourceCode, pre, .table-scroll, .csv-table'))
      .filter(function (e) { return e.scrollWidth > e.clientWidth + 1; })
      .map(function (e) {
        var l = e.closest('.listing'), t = e.closest('.csv-table');
        return (l ? 'listing ' + l.getAttribute('data-file') + ':' + (l.getAttribute('data-snippet') || '')
                  : t ? 'table ' + t.getAttribute('data-csv') : e.tagName) +
               ' (' + e.scrollWidth + ' > ' + e.clientWidth + ' px)';
      }),
    scroll_width: document.documentElement.scrollWidth,
    inner_width: window.innerWidth
  };
  var pre = document.createElement('pre');
  pre.id = 'crbook-check';
  pre.textContent = 'CRBOOK-' + 'CHECK' + JSON.stringify(r) + 'CRBOOK-' + 'END';
  document.body.appendChild(pre);
});
</script>
"""

CHROME_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                '--disable-background-networking', '--disable-component-update', '--disable-sync',
                '--hide-scrollbars']


def chromium(binary, args, timeout=180):
    profile = tempfile.mkdtemp(prefix='crbook-test-')
    try:
        return subprocess.run([binary] + CHROME_FLAGS + [f'--user-data-dir={profile}'] + args,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def check_pdf(pdf, n_chapters):
    """The PDF (where Chromium made one) has page numbers and a numbered contents."""
    pdftotext = shutil.which('pdftotext')
    if not os.path.exists(pdf) or not pdftotext:
        print(f'skip    PDF checks ({"no " + pdf if not os.path.exists(pdf) else "pdftotext not found: apt-get install poppler-utils"})')
        return
    r = subprocess.run([pdftotext, '-layout', pdf, '-'], stdout=subprocess.PIPE, text=True)
    pages = r.stdout.split('\f')
    if pages and not pages[-1].strip():
        pages.pop()
    numbered = [n for n, text in enumerate(pages, start=1)
                if [l.strip() for l in text.split('\n') if l.strip()][-1:] == [str(n)]]
    check(len(pages) > 5 and len(numbered) >= len(pages) - 1,
          f'PDF: {len(numbered)} of {len(pages)} pages end with their page number')
    toc = '\n'.join(pages[:4])
    # one contents line each (a page's number at its foot, then the next page's first
    # line, is not an entry: no whitespace here crosses a line)
    entries = re.findall(r'^[ \t]*(\d+(?:\.\d+)?)[ \t]+\S.*?[ \t]{2,}(\d+)[ \t]*$', toc, re.M)
    chapters_found = [e for e in entries if '.' not in e[0]]
    check(len(chapters_found) >= n_chapters and len(entries) > 3 * n_chapters,
          f'PDF: the contents give page numbers ({len(entries)} numbered entries, '
          f'{len(chapters_found)} chapters)')
    ok = all(0 < int(p) <= len(pages) for _, p in entries) and \
        all(int(b[1]) >= int(a[1]) for a, b in zip(entries, entries[1:]))
    check(ok, 'PDF: contents page numbers are within the book and never go back')
    # Each numbered section begins on the page the contents name.
    wrong = [f'{num} on p. {p}' for num, p in entries
             if not re.search(r'^\s*' + re.escape(num) + r'\s', pages[int(p) - 1], re.M)]
    check(not wrong, f'PDF: every section is on the page the contents name (wrong: {wrong[:4]})')


def chapter_heading(root, ch):
    """The id of chapter ch's "# " heading ({#id} in chapter.md, or pandoc's own)."""
    for line in open(os.path.join(root, 'chapters', ch, 'chapter.md'), encoding='utf-8'):
        if line.startswith('# '):
            m = re.search(r'\{[^}]*#([\w-]+)[^}]*\}\s*$', line)
            return m.group(1) if m else None
    return None


def check_chapter_numbers(page, root, chapters, edition):
    """Every chapter is numbered by its directory (08-fpn-camvid: 8, its sections 8.1, ...)
    in its heading and in the contents, and ends with links to the chapters before and
    after it in the book."""
    ids = [chapter_heading(root, ch) for ch in chapters]
    nums = [str(int(re.match(r'(\d+)', ch).group(1))) for ch in chapters]
    for ch, ident, num in zip(chapters, ids, nums):
        if not check(ident is not None, f'{edition}: chapter {ch} has a {{#id}} on its heading'):
            continue
        h = re.search(r'<h1 data-number="([^"]+)" id="' + re.escape(ident) + '"', page)
        check(h is not None and h.group(1) == num,
              f'{edition}: chapter {ch} is numbered {num} (heading: {h.group(1) if h else None})')
        toc = re.search(r'<a href="#' + re.escape(ident) + r'"[^>]*><span class="toc-section-number">'
                        r'([^<]+)</span>', page)
        check(toc is not None and toc.group(1) == num,
              f'{edition}: the contents number chapter {ch} {num} ({toc.group(1) if toc else None})')
        # its sections: 8.1, 8.2, ... up to the next chapter
        start = h.end() if h else 0
        nxt = re.search(r'<h1 data-number=', page[start:])
        body = page[start:start + nxt.start()] if nxt else page[start:]
        subs = re.findall(r'<h2 data-number="([^"]+)"', body)
        check(all(x.split('.')[0] == num for x in subs) and len(subs) > 0,
              f'{edition}: the sections of chapter {ch} are numbered {num}.n ({subs[:3]}...)')
    navs = {m.group(1): m.group(2) for m in
            re.finditer(r'<div class="chapter-nav" data-chapter="(\d+)">(.*?)</div>', page, re.S)}
    for i, (ch, num) in enumerate(zip(chapters, nums)):
        nav = navs.get(num, '')
        want = [('prev', ids[i - 1]) if i > 0 else None,
                ('next', ids[i + 1]) if i + 1 < len(chapters) else None]
        ok = bool(nav) and all(re.search(r'href="#' + re.escape(t) + r'" rel="' + r + '"', nav)
                               for r, t in filter(None, want))
        ok = ok and (i > 0 or 'rel="prev"' not in nav) and \
            (i + 1 < len(chapters) or 'rel="next"' not in nav)
        check(ok, f'{edition}: chapter {ch} ends with links to the previous and next chapter '
              f'({", ".join(f"{r} #{t}" for r, t in filter(None, want))})')


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--root', required=True)
    ap.add_argument('--build-root', required=True)
    ap.add_argument('--html', required=True)
    ap.add_argument('--pandoc', default='')
    ap.add_argument('--chromium', default='')
    ap.add_argument('--workdir', required=True)
    ap.add_argument('--chapter', action='append', default=[],
                    help='a chapter of the book, in order (book/meson.build passes book_chapters)')
    ap.add_argument('--student-html', help='the student edition, checked against --html')
    ap.add_argument('--no-build', action='store_true', help='check the HTML as it is')
    a = ap.parse_args()

    if not a.pandoc:
        print('pandoc not found: the book cannot be built; skipping')
        sys.exit(77)

    # 1. Build.
    if not a.no_build:
        ninja = shutil.which('ninja') or shutil.which('samu')
        cmd = [ninja, '-C', a.build_root, 'book'] if ninja else \
              [shutil.which('meson') or 'meson', 'compile', '-C', a.build_root, 'book']
        print('$ ' + ' '.join(cmd), flush=True)
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        print(r.stdout[-6000:])
        if not check(r.returncode == 0, 'the book builds (ninja book)'):
            sys.exit(1)

    # 2. Static checks.
    if not check(os.path.exists(a.html), f'{a.html} exists'):
        sys.exit(1)
    page = open(a.html, encoding='utf-8').read()
    s = Scan()
    s.feed(page)
    text = ' '.join(s.text)
    chapters = [os.path.join(a.root, 'chapters', c, 'chapter.md') for c in a.chapter]
    if not check(bool(chapters), 'the chapter list is given (--chapter)'):
        sys.exit(1)
    md = [os.path.join(a.root, 'book', 'front.md')] + chapters
    want = expected_blocks(md, a.build_root)
    print(f'expected from the Markdown: {want}')
    check(s.toc, 'a table of contents')
    check(s.listings == want['include'] and s.listings > 0,
          f'{s.listings} code listings for {want["include"]} {{.include}} blocks')
    check(all(n > 0 for n in s.listing_code_chars), 'every listing has code in it')
    check(len(s.tables) == want['csv-table'],
          f'{len(s.tables)} CSV tables for {want["csv-table"]} {{.csv-table}} blocks')
    check(all(n > 0 for n in s.tables), f'no empty table (rows per table: {s.tables})')
    check(s.figures >= want['plot'] + want['image'],
          f'{s.figures} figures for {want["plot"]} plots and {want["image"]} images')
    check(len(s.images) >= want['plot'] + want['image'], f'{len(s.images)} <img> elements')
    for src in s.images:
        m = re.match(r'data:([^;,]+)(;base64)?,(.*)$', src, re.S)
        if not check(m is not None, f'image embedded as data: ({src[:60]!r})'):
            continue
        data = base64.b64decode(m.group(3)) if m.group(2) else m.group(3).encode()
        ok = len(data) > 200 and (b'<svg' in data[:2000] or data[:8] == b'\x89PNG\r\n\x1a\n'
                                  or data[:3] == b'\xff\xd8\xff')
        check(ok, f'image {m.group(1)} of {len(data)} bytes is a real SVG/PNG/JPEG')
    for marker in ('{.include', '{.csv-table', '{.plot', '@snippet', '@solution', '@end-solution'):
        check(marker not in text, f'no unresolved "{marker}" in the text')
    check(not re.search(r'class="[^"]*\b(include|csv-table|plot)\b[^"]*"[^>]*>\s*<code', page),
          'no code block left unfiltered')
    if '$' in ''.join(open(p, encoding='utf-8').read() for p in chapters):
        check(s.math > 0, f'{s.math} MathML formulas')
    check('Measured on' in text, 'measured results carry their provenance')
    for ch in chapters:
        title = next((l.lstrip('#').strip() for l in open(ch, encoding='utf-8')
                      if l.startswith('# ')), None)
        if title:
            title = re.sub(r'\s*\{[^}]*\}\s*$', '', title)
            check(title.split('`')[0][:20] in text, f'chapter "{title}" is in the book')

    check_chapter_numbers(page, a.root, a.chapter, 'teacher\'s edition')

    if a.student_html:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        import student_edition
        if check(os.path.exists(a.student_html), f'{a.student_html} exists'):
            student_edition.check_student(a.root, a.chapter, a.student_html, a.html, check)
            check_chapter_numbers(open(a.student_html, encoding='utf-8').read(), a.root,
                                  a.chapter, 'student edition')

    check_pdf(a.html[:-len('.html')] + '.pdf', len(chapters))

    # 3. Chromium.
    if not a.chromium or not shutil.which(a.chromium):
        print('chromium not found: skipping the rendering checks')
        if failures:
            sys.exit(1)
        sys.exit(77)
    os.makedirs(a.workdir, exist_ok=True)
    probe = os.path.join(a.workdir, 'check.html')
    with open(probe, 'w', encoding='utf-8') as f:
        f.write(page.replace('</body>', CHECK_JS + '</body>'))
    runs = [('laptop', '1280,900', probe), ('phone', '390,844', probe)]
    if a.student_html and os.path.exists(a.student_html):
        sprobe = os.path.join(a.workdir, 'check-student.html')
        with open(sprobe, 'w', encoding='utf-8') as f:
            f.write(open(a.student_html, encoding='utf-8').read().replace('</body>', CHECK_JS + '</body>'))
        runs.append(('laptop (student edition)', '1280,900', sprobe))
    for label, size, page_file in runs:
        r = chromium(a.chromium, [f'--window-size={size}', '--virtual-time-budget=15000',
                                  '--dump-dom', 'file://' + page_file])
        m = re.search(r'CRBOOK-CHECK(.*?)CRBOOK-END', r.stdout, re.S)
        if not check(m is not None, f'{label}: Chromium rendered the page and ran the checks'
                     + ('' if m else f' (exit {r.returncode}; {r.stderr.strip()[-300:]!r})')):
            continue
        res = json.loads(html.unescape(m.group(1)))
        print(f'{label}: {res}')
        check(res['images'] >= len(s.images) and not res['broken'],
              f'{label}: all {res["images"]} images decoded (broken: {res["broken"]})')
        check(res['tables'] == len(s.tables) and res['empty_tables'] == 0,
              f'{label}: {res["tables"]} tables rendered, none empty')
        if label.startswith('laptop'):
            check(not res['clipped'], f'{label}: no listing or table is clipped (scrolls '
                  f'sideways) in a {res["inner_width"]} px window: {res["clipped"][:4]}')
        check(res['scroll_width'] <= res['inner_width'] + 2,
              f'{label}: no sideways scrolling (page {res["scroll_width"]} px, '
              f'window {res["inner_width"]} px)')
    for label, size in (('laptop', '1280,2400'), ('phone', '390,2400')):
        shot = os.path.join(a.workdir, f'book-{label}.png')
        if os.path.exists(shot):
            os.remove(shot)
        chromium(a.chromium, [f'--window-size={size}', '--virtual-time-budget=10000',
                              f'--screenshot={shot}', 'file://' + os.path.abspath(a.html)])
        check(os.path.exists(shot) and os.path.getsize(shot) > 10000,
              f'screenshot {shot} taken')
    if failures:
        print(f'{len(failures)} check(s) failed')
        sys.exit(1)
    print('the book renders')


if __name__ == '__main__':
    main()
