#!/usr/bin/env python3
"""Builds the book: front matter + chapters -> HTML (self-contained), EPUB, PDF.

Called by the `book` target of book/meson.build (ninja -C build book), after the
labs have written their --quick CSVs and the figures are drawn:

    build_book.py --root SRC --outdir BUILD/book --pandoc PANDOC
                  [--chromium CHROMIUM] [--depfile F --dep-target T]
                  [--edition teacher|student]
                  --front book/front.md --chapter 01-direct --chapter 02-im2col ...

The teacher's edition (the default) writes conv2d-reimagined.{html,epub,pdf}, with
every coursework solution shown. The student edition writes
conv2d-reimagined-student.html: each solution region shows its task's statement and
its stub instead (CRBOOK_EDITION=student for include_snippet.lua).

Chapters are numbered by their directory names (08-fpn-camvid is chapter 8, whatever
its place in the list, so chapters may be missing): a marker file before each chapter's
text gives book/filters/chapters.lua the number, and that filter writes it into the
headings and adds the previous/next links at each chapter's end.

The Lua filters (book/filters/) read CRBOOK_ROOT, CRBOOK_LABDIR (= outdir,
where the lab CSVs NAME.csv are), CRBOOK_FIGDIR (outdir/plots) and CRBOOK_DEPS
(every file they read, which becomes the depfile, so editing an excerpted source
rebuilds the book). pandoc runs the filters once into a JSON AST, then writes
HTML and EPUB from it; headless Chromium prints the HTML to PDF when present.
"""
import argparse
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile

NAME = 'conv2d-reimagined'


def die(msg):
    print(f'book: error: {msg}', file=sys.stderr)
    sys.exit(1)


def run(cmd, env=None, what='command'):
    r = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout)
        sys.stderr.write(r.stderr)
        die(f'{what} failed (exit {r.returncode}): {" ".join(cmd[:3])} ...')
    if r.stderr.strip():
        sys.stderr.write(r.stderr)
    return r


_pending = set()  # temporary files not yet renamed into place, removed at exit


def _remove_pending():
    for tmp in list(_pending):
        if os.path.exists(tmp):
            os.remove(tmp)
    _pending.clear()


atexit.register(_remove_pending)


def tmp_name(path):
    """A fresh, unique temporary file next to path (PATH.tmp.XXXXXXXX.EXT, empty, made
    by mkstemp with the usual 0666-less-umask mode) that an output is written under
    before it is renamed to path; two builds at once never share one. Removed at exit
    unless published."""
    head, ext = os.path.splitext(os.path.basename(path))
    fd, tmp = tempfile.mkstemp(prefix=f'{head}{ext}.tmp.', suffix=ext,
                               dir=os.path.dirname(path) or '.')
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    _pending.add(tmp)
    return tmp


def publish(tmp, path, what):
    """Renames the finished tmp to path (atomic: readers see the old file or the new
    one, never a half-written one); dies if tmp is missing or empty."""
    if not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
        die(f'{what} wrote nothing at {tmp}')
    os.replace(tmp, path)
    _pending.discard(tmp)


def depfile_escape(p):
    return p.replace('\\', '\\\\').replace(' ', '\\ ').replace('#', '\\#').replace('$', '$$')


def chromium_print(chromium, html, pdf):
    """Prints the page html to pdf with headless Chromium; True on success."""
    profile = tempfile.mkdtemp(prefix='crbook-chromium-')
    tmp = tmp_name(pdf)
    try:
        cmd = [chromium, '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic',
               '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync', f'--user-data-dir={profile}',
               '--no-pdf-header-footer', '--print-to-pdf-no-header',
               f'--print-to-pdf={tmp}', 'file://' + os.path.abspath(html)]
        try:
            r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               timeout=180)
        except subprocess.TimeoutExpired:
            print('book: PDF skipped: chromium timed out', file=sys.stderr)
            return False
        if r.returncode != 0 or not os.path.exists(tmp) or os.path.getsize(tmp) == 0:
            sys.stderr.write(r.stderr[-2000:])
            print('book: PDF failed: chromium returned', r.returncode, file=sys.stderr)
            return False
        publish(tmp, pdf, 'chromium (PDF)')
        return True
    finally:
        shutil.rmtree(profile, ignore_errors=True)
        if os.path.exists(tmp):
            os.remove(tmp)
        _pending.discard(tmp)


TOC_LINK = re.compile(r'<a href="#([^"]+)"')


def toc_targets(page):
    """The ids the table of contents links to, in order."""
    m = re.search(r'<nav id="TOC".*?</nav>', page, re.S)
    return TOC_LINK.findall(m.group(0)) if m else []


def with_page_marks(page, ids):
    """The page with an invisible token "CRBKPG<n>Q" at the start of the heading
    each TOC entry links to (positioned absolutely: the layout does not change)."""
    for n, ident in enumerate(ids):
        page = re.sub(r'(<h[1-6][^>]*\bid="' + re.escape(ident) + r'"[^>]*>)',
                      lambda m, n=n: m.group(1) + f'<span style="position:absolute;'
                      f'font-size:2px;color:#fff">CRBKPG{n}Q</span>', page, count=1)
    return page


def with_toc_pages(page, pages):
    """The page with <span class="toc-page">N</span> at the end of every TOC link
    whose heading was found on PDF page N (pages: {id: N})."""
    m = re.search(r'<nav id="TOC".*?</nav>', page, re.S)
    if not m:
        return page

    def add(a):
        n = pages.get(a.group(1))
        if not n:
            return a.group(0)
        return f'<a href="#{a.group(1)}"{a.group(2)}>{a.group(3)}<span class="toc-page">{n}</span></a>'
    nav = re.sub(r'<a href="#([^"]+)"([^>]*)>(.*?)</a>', add, m.group(0), flags=re.S)
    return page[:m.start()] + nav + page[m.end():]


def chromium_pdf(chromium, html, pdf):
    """Prints html to pdf. Chromium cannot number the contents itself (CSS
    target-counter() is not implemented), so where pdftotext (poppler-utils) is
    found the book is printed twice: first with an invisible token in every heading
    the contents link to, whose page pdftotext reports; then with those page numbers
    written into the contents. The printed copies are temporary; the HTML is not
    changed. Returns True when the PDF was written."""
    pdftotext = shutil.which('pdftotext')
    page = open(html, encoding='utf-8').read()
    ids = toc_targets(page)
    if not pdftotext or not ids:
        if not pdftotext:
            print('book: the PDF\'s contents have no page numbers: pdftotext not found '
                  '(apt-get install poppler-utils)')
        return chromium_print(chromium, html, pdf)
    work = tempfile.mkdtemp(prefix='crbook-print-')
    try:
        marked = os.path.join(work, 'marked.html')
        with open(marked, 'w', encoding='utf-8') as f:
            f.write(with_page_marks(page, ids))
        first = os.path.join(work, 'first.pdf')
        if not chromium_print(chromium, marked, first):
            return False
        r = subprocess.run([pdftotext, first, '-'], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
        found = {}
        for pno, text in enumerate(r.stdout.split('\f'), start=1):
            for tok in re.findall(r'CRBKPG(\d+)Q', text):
                if int(tok) < len(ids):
                    found.setdefault(ids[int(tok)], pno)
        if len(found) < len(ids):
            print(f'book: {len(ids) - len(found)} of {len(ids)} contents entries got no page '
                  'number', file=sys.stderr)
        numbered = os.path.join(work, 'numbered.html')
        with open(numbered, 'w', encoding='utf-8') as f:
            f.write(with_toc_pages(page, found))
        return chromium_print(chromium, numbered, pdf)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_depfile(a, inputs, filters, meta, css, filters_dir, deps_tmp, html):
    """Writes --depfile: the inputs, the filters' files and everything they read."""
    if not a.depfile:
        return
    deps = set(inputs + filters + [meta, css, os.path.abspath(__file__),
                                   os.path.join(filters_dir, 'crbook.lua')])
    with open(deps_tmp) as f:
        deps.update(line.strip() for line in f if line.strip())
    deps = sorted(os.path.abspath(p) for p in deps if os.path.exists(p))
    target = a.dep_target or html
    tmp = tmp_name(a.depfile)
    with open(tmp, 'w') as f:
        f.write(depfile_escape(target) + ': \\\n')
        f.write(' \\\n'.join('  ' + depfile_escape(p) for p in deps) + '\n')
    os.replace(tmp, a.depfile)
    _pending.discard(tmp)


PROV_KEYS = [('machine', 'machine'), ('cpu', 'CPU'), ('gpu', 'GPU'), ('driver', 'driver'),
             ('cuda', 'CUDA'), ('threads', 'threads'), ('compiler', 'compiler'),
             ('flags', 'flags')]
BLOCK = re.compile(r'^\s*(?:```+|~~~+)\s*\{(?P<attrs>[^}]*\.(?:csv-table|plot)\b[^}]*)\}', re.M)


def read_provenance(path):
    """The "# key: value" header of a lab CSV as a dict (keys lower-case)."""
    prov = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            if not line.startswith('#'):
                break
            m = re.match(r'#\s*([\w-]+)\s*:\s*(.*?)\s*$', line)
            if m:
                prov[m.group(1).lower()] = m.group(2)
    return prov


def md_escape(text):
    """Text safe to put in Markdown as it is (no emphasis, no math, no links)."""
    return re.sub(r'([\\`*_{}\[\]<>$#|~^])', r'\\\1', text)


def chapter_number(ch):
    """The chapter's number from its directory name: '08-fpn-camvid' -> 8. The book
    numbers chapters by it, not by their place in the list, so a chapter may be
    missing (6 and 7 before 8) without renumbering the others."""
    m = re.match(r'(\d+)-', ch)
    if not m:
        die(f'chapter "{ch}": its directory name must begin with its number (NN-name, '
            'e.g. 08-fpn-camvid): the book numbers chapters by it')
    return int(m.group(1))


def check_chapter_order(chapters):
    """Dies unless the chapters' numbers rise strictly in book order."""
    nums = [chapter_number(c) for c in chapters]
    for a, b, ca, cb in zip(nums, nums[1:], chapters, chapters[1:]):
        if b <= a:
            die(f'chapters out of order in book/meson.build: {cb} (chapter {b}) comes after '
                f'{ca} (chapter {a}); list them by number, each number once')


def write_marker(path, text, what):
    """Writes a marker file (text) at path unless it holds text already (so that an
    unchanged marker does not look new to the build); returns path."""
    if not os.path.exists(path) or open(path, encoding='utf-8').read() != text:
        tmp = tmp_name(path)
        with open(tmp, 'w', encoding='utf-8') as f:
            f.write(text)
        publish(tmp, path, what)
    return path


def chapter_marker(outdir, stem, ch):
    """Writes the marker that book/filters/chapters.lua reads before chapter ch's text
    (its number, from the directory name); returns its path."""
    return write_marker(os.path.join(outdir, f'{stem}.mark-{ch}.md'),
                        f'::: {{.crbook-chapter number="{chapter_number(ch)}" dir="{ch}"}}\n:::\n\n',
                        f'the marker of chapter {ch}')


def chapter_marker_end(outdir, stem):
    """Writes the marker that ends the last chapter (before the appendix); its path."""
    return write_marker(os.path.join(outdir, f'{stem}.mark-end.md'),
                        '::: {.crbook-chapters-end}\n:::\n\n', 'the end-of-chapters marker')


def uses_of_results(root, chapters):
    """{src: [(chapter title, section title, kind, caption)]} for every table and
    plot of the given chapters, in book order; the chapter title begins with its
    number ("8 A real network: ...")."""
    uses = {}
    for ch in chapters:
        text = open(os.path.join(root, 'chapters', ch, 'chapter.md'), encoding='utf-8').read()
        chapter, section = ch, ''
        for m in re.finditer(r'^(#{1,2}) (.*?)\s*(?:\{[^}]*\})?\s*$|' + BLOCK.pattern, text, re.M):
            if m.group(1):
                if len(m.group(1)) == 1:
                    chapter, section = f'{chapter_number(ch)} {m.group(2)}', ''
                else:
                    section = m.group(2)
                continue
            attrs = m.group('attrs')
            src = re.search(r'\bsrc="([^"]+)"', attrs)
            cap = re.search(r'\bcaption="([^"]*)"', attrs)
            if src:
                kind = 'plot' if re.search(r'\.plot\b', attrs) else 'table'
                uses.setdefault(src.group(1), []).append(
                    (chapter, section, kind, cap.group(1) if cap else ''))
    return uses


def machines_appendix(root, outdir, chapters, out_path):
    """Writes the appendix "Machines and results" (Markdown) to out_path: for every CSV
    the book's numbers come from (the committed ones under book/results/ and the
    labs this build ran), the machine and build its header names and the tables
    and plots it made. Generated from the headers, never typed."""
    uses = uses_of_results(root, chapters)
    sources = []                       # (src, path, where it comes from)
    for d in sorted(os.listdir(os.path.join(root, 'book', 'results'))):
        full = os.path.join(root, 'book', 'results', d)
        if os.path.isdir(full):
            for f in sorted(os.listdir(full)):
                if f.endswith('.csv'):
                    src = f'results/{d}/{f}'
                    sources.append((src, os.path.join(full, f),
                                    f'committed, `book/results/{d}/{f}`'))
    for src in sorted(uses):
        if src.startswith('lab:'):
            sources.append((src, os.path.join(outdir, src[4:] + '.csv'),
                            f'measured by this build (`{src[4:]} --quick`)'))
    out = ['# Machines and results {.unnumbered #machines-and-results}', '',
           'Every measured table and plot in this book comes from one of the CSV files below. This '
           'appendix is written by the book build from their provenance headers; the '
           'tables and plots each one made are listed under it.', '']
    for src, path, origin in sources:
        if not os.path.exists(path):
            continue
        prov = read_provenance(path)
        used = uses.get(src, []) + uses.get('book/' + src, [])
        out += [f'## {md_escape(os.path.basename(path))} {{.unnumbered}}', '',
                f'{origin[0].upper()}{origin[1:]}; written by `{md_escape(prov.get("program", "?"))}`.', '']
        rows = [(label, prov[k]) for k, label in PROV_KEYS if prov.get(k)]
        rows += [('git revision', prov['git'])] if prov.get('git') else []
        rows += [('date', prov['date'])] if prov.get('date') else []
        out += ['| provenance | |', '|---|---|'] + [f'| {label} | {md_escape(v)} |' for label, v in rows]
        out += ['', ': Provenance header of ' + md_escape(os.path.basename(path)), '']
        if used:
            out.append('Used for:')
            out.append('')
            for chapter, section, kind, cap in used:
                where = f'{chapter}' + (f' › {section}' if section else '')
                out.append(f'- the {kind} in *{where}*' + (f': {cap}' if cap else ''))
            out.append('')
        else:
            out += ['Not used by a table or plot of the chapters in this edition.', '']
    tmp = tmp_name(out_path)
    with open(tmp, 'w', encoding='utf-8') as f:
        f.write('\n'.join(out) + '\n')
    publish(tmp, out_path, 'the machines appendix')


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--root', required=True, help='repository root')
    ap.add_argument('--outdir', required=True, help='build/book')
    ap.add_argument('--build-root', help='the build directory (generated figures: '
                    'book/figures/X.svg is found there)')
    ap.add_argument('--pandoc', default='', help='pandoc program ("" = not found)')
    ap.add_argument('--chromium', default='', help='chromium program ("" = no PDF)')
    ap.add_argument('--front', required=True, help='front matter (Markdown)')
    ap.add_argument('--metadata', required=True, help='metadata YAML file')
    ap.add_argument('--css', required=True, help='style sheet')
    ap.add_argument('--chapter', action='append', default=[],
                    help='chapter directory name under chapters/, NN-name: chapter NN (in book order)')
    ap.add_argument('--depfile', help='write a Makefile-style depfile here')
    ap.add_argument('--dep-target', help='target named in the depfile')
    ap.add_argument('--no-pdf', action='store_true')
    ap.add_argument('--edition', choices=('teacher', 'student'), default='teacher',
                    help='teacher: solutions shown (HTML, EPUB, PDF); student: each task '
                    'as its statement and stub (HTML only)')
    a = ap.parse_args()

    if not a.pandoc or not shutil.which(a.pandoc):
        die('pandoc not found; the book needs pandoc 2.17 or newer '
            '(Debian: apt-get install pandoc), then reconfigure: meson setup --reconfigure build')
    root = os.path.abspath(a.root)
    outdir = os.path.abspath(a.outdir)
    student = a.edition == 'student'
    stem = NAME + ('-student' if student else '')
    # Each edition has its own plot folder and deps list: the two may build at once.
    figdir = os.path.join(outdir, 'plots-student' if student else 'plots')
    os.makedirs(figdir, exist_ok=True)

    meta = a.metadata if os.path.isabs(a.metadata) else os.path.join(root, a.metadata)
    front = a.front if os.path.isabs(a.front) else os.path.join(root, a.front)
    inputs = [front]
    check_chapter_order(a.chapter)
    for ch in a.chapter:
        md = os.path.join(root, 'chapters', ch, 'chapter.md')
        if not os.path.exists(md):
            die(f'chapter "{ch}" has no text: {md} not found (chapters are listed in book/meson.build)')
        # Before each chapter, a marker with its number (book/filters/chapters.lua).
        inputs += [chapter_marker(outdir, stem, ch), md]
    for p in inputs + [meta]:
        if not os.path.exists(p):
            die(f'{p} not found')
    # The appendix on where every number was measured, from the CSV headers.
    appendix = os.path.join(outdir, f'{stem}.machines.md')
    machines_appendix(root, outdir, a.chapter, appendix)
    inputs += [chapter_marker_end(outdir, stem), appendix]
    results_dir = os.path.join(root, 'book', 'results')
    result_csvs = [os.path.join(d, f) for d, _, fs in os.walk(results_dir) for f in fs
                   if f.endswith('.csv')]

    filters_dir = os.path.join(root, 'book', 'filters')
    filters = [os.path.join(filters_dir, f) for f in
               ('if_built.lua', 'include_snippet.lua', 'csv_table.lua', 'plot.lua', 'chapters.lua')]
    css = a.css if os.path.isabs(a.css) else os.path.join(root, a.css)

    deps_tmp = tmp_name(os.path.join(outdir, f'{stem}.deps.txt'))  # removed at exit
    # Images: a path as in the source tree (book/figures/im2col.svg) is looked up
    # in the build root first (generated figures), then in the source root.
    build_root = os.path.abspath(a.build_root) if a.build_root else os.path.dirname(outdir)
    env = dict(os.environ, CRBOOK_ROOT=root, CRBOOK_LABDIR=outdir, CRBOOK_FIGDIR=figdir,
               CRBOOK_DEPS=deps_tmp, CRBOOK_EDITION=a.edition, CRBOOK_BUILDROOT=build_root)
    resource_path = os.pathsep.join([build_root, root, outdir, os.path.join(root, 'book')])

    # 1. Markdown -> filtered AST (the filters run once).
    ast = os.path.join(outdir, f'{stem}.json')
    tmp = tmp_name(ast)
    cmd = [a.pandoc, '--from', 'markdown', '--to', 'json', '--metadata-file', meta,
           '-o', tmp]
    for f in filters:
        cmd += ['--lua-filter', f]
    run(cmd + inputs, env=env, what='pandoc (filters)')
    publish(tmp, ast, 'pandoc (filters)')

    common = ['--from', 'json', '--standalone', '--mathml', '--toc', '--toc-depth=2',
              '--number-sections', '--highlight-style=tango', f'--resource-path={resource_path}',
              '--css', css]
    if student:
        banner = os.path.join(outdir, f'{stem}.banner.html')
        with open(banner, 'w', encoding='utf-8') as f:
            f.write('<p class="edition">Student edition: in every listing that holds a '
                    'coursework task you see the task\'s statement and its stub, as in your '
                    'kit; the solution is yours to write.</p>\n')
        common += ['--include-before-body', banner]
    # 2. HTML, one self-contained file.
    html = os.path.join(outdir, f'{stem}.html')
    tmp = tmp_name(html)
    run([a.pandoc, ast, '--to', 'html5', '--self-contained', '-o', tmp] + common,
        env=env, what='pandoc (HTML)')
    publish(tmp, html, 'pandoc (HTML)')
    if student:
        print(f'book: wrote {html}')
        write_depfile(a, inputs + result_csvs, filters, meta, css, filters_dir, deps_tmp, html)
        return
    # 3. EPUB.
    epub = os.path.join(outdir, f'{NAME}.epub')
    tmp = tmp_name(epub)
    run([a.pandoc, ast, '--to', 'epub3', '--epub-chapter-level=1', '-o', tmp]
        + common, env=env, what='pandoc (EPUB)')
    publish(tmp, epub, 'pandoc (EPUB)')
    print(f'book: wrote {html}')
    print(f'book: wrote {epub}')

    # 4. PDF through headless Chromium.
    pdf = os.path.join(outdir, f'{NAME}.pdf')
    if a.no_pdf:
        print('book: PDF skipped (--no-pdf)')
    elif a.chromium and shutil.which(a.chromium):
        if chromium_pdf(a.chromium, html, pdf):
            print(f'book: wrote {pdf}')
    else:
        print('book: PDF skipped: chromium not found (Debian: apt-get install chromium, '
              'then meson setup --reconfigure build)')

    # 5. Depfile: everything the filters read, plus the inputs and the tools' files.
    write_depfile(a, inputs + result_csvs, filters, meta, css, filters_dir, deps_tmp, html)

if __name__ == '__main__':
    main()
