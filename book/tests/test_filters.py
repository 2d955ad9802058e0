#!/usr/bin/env python3
"""Suite `book`: the Lua filters do what book/README.md says, and fail loudly.

Runs pandoc with book/filters/*.lua on tiny Markdown files in a temporary folder:
a snippet with a solution region shows the real line numbers in consecutive blocks
and hides markers and the stub; a csv-table filters, picks and renames columns and
carries the provenance caption; a plot runs gnuplot (when present). Then the
failures: missing file, missing snippet, unknown column (in columns= and where=),
empty table — each must stop pandoc with a message naming the culprit. And
if_built.lua: a part shown only when the build made its file, else its otherwise part;
chapters.lua: chapters numbered by their directories (5, then 8), their sections
under them, previous/next links closing each chapter.
Exit 77 (skip) without pandoc.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

SOURCE = """\
#include <stdio.h>
// @snippet demo
int demo(int x)
{
    // @solution demo_task: return twice x
    int y = 2 * x;
    return y;
    // @stub
    // return -1;
    // @end-solution
}
// @end demo
"""

CSV = """\
# program: labdemo
# machine: testbox
# cpu: Test CPU 9000
# threads: 2
# git: 0123456789
# date: 2025-01-02T03:04:05Z
lab,kind,k,impl,ms
demo,stack,1,direct,1.5
demo,stack,3,direct,4.25
demo,stack,3,im2col,2.125
demo,layer,3,im2col,9.0
"""

GP = """\
set datafile separator comma
set datafile columnheaders
set terminal svg size 400,300
set output ARG2
plot ARG1 using "k":"ms" with points title "ms"
"""

failures = []


def check(cond, msg):
    print(('ok      ' if cond else 'NOT OK  ') + msg)
    if not cond:
        failures.append(msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--root', required=True)
    ap.add_argument('--pandoc', default='')
    ap.add_argument('--gnuplot', default='')
    ap.add_argument('--workdir', required=True)
    a = ap.parse_args()
    pandoc = a.pandoc or shutil.which('pandoc')
    if not pandoc:
        print('pandoc not found: skipping')
        sys.exit(77)
    filters = [os.path.join(a.root, 'book', 'filters', f)
               for f in ('include_snippet.lua', 'csv_table.lua', 'plot.lua')]

    w = os.path.abspath(a.workdir)
    shutil.rmtree(w, ignore_errors=True)
    os.makedirs(os.path.join(w, 'src'))
    os.makedirs(os.path.join(w, 'labs'))
    os.makedirs(os.path.join(w, 'figs'))
    open(os.path.join(w, 'src', 'demo.c'), 'w').write(SOURCE)
    open(os.path.join(w, 'labs', 'labdemo.csv'), 'w').write(CSV)
    open(os.path.join(w, 'src', 'demo.gp'), 'w').write(GP)
    env = dict(os.environ, CRBOOK_ROOT=w, CRBOOK_LABDIR=os.path.join(w, 'labs'),
               CRBOOK_FIGDIR=os.path.join(w, 'figs'))

    def pandoc_run(name, md, edition=None):
        p = os.path.join(w, name + '.md')
        open(p, 'w').write(md)
        cmd = [pandoc, p, '-t', 'html5', '-o', os.path.join(w, name + '.html')]
        for f in filters:
            cmd += ['--lua-filter', f]
        e = dict(env, CRBOOK_EDITION=edition) if edition else env
        r = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=60)
        html = open(os.path.join(w, name + '.html')).read() if r.returncode == 0 else ''
        html = re.sub(r'\s+', ' ', html)   # pandoc wraps lines
        return r, html

    # -- what works ----------------------------------------------------------
    r, html = pandoc_run('good', """
```{.include file="src/demo.c" snippet="demo"}
```

```{.csv-table src="lab:labdemo" where="kind=stack,k=3" columns="impl,ms" headers="implementation,time (ms)" caption="Demo"}
```
""")
    check(r.returncode == 0, f'a good document builds (stderr: {r.stderr.strip()[:300]})')
    check('class="listing"' in html, 'the excerpt is a listing')
    check('src/demo.c' in html and 'lines 3–4, 6–7, 11' in html,
          'the listing is headed by the file and the real line ranges 3–4, 6–7, 11')
    starts = re.findall(r'data-startFrom="(\d+)"', html)
    check(starts == ['3', '6', '11'], f'three blocks numbered from 3, 6, 11 (got {starts})')
    check('@snippet' not in html and '@solution' not in html and '@stub' not in html
          and 'return -1' not in html, 'markers and the stub are hidden')
    check('int y = 2' in html or ('2</span>' in html and 'y' in html), 'the solution code is shown')
    rows = re.findall(r'<tr', html)
    check(len(rows) == 3, f'the table has a header and the 2 rows where kind=stack,k=3 (got {len(rows)} rows)')
    check('time (ms)' in html and 'implementation' in html, 'the headers are renamed')
    check('Measured on testbox (Test CPU 9000), 2 threads, 2025-01-02 03:04 UTC, git 0123456789'
          in html, 'the caption carries the provenance')
    check('layer' not in html and '>1.5<' not in html, 'the where filter dropped the other rows')
    check('<caption' not in html and 'class="table-caption"' in html and
          html.find('</table>') < html.find('class="table-caption"'),
          'the caption follows the table, outside its scroll box')

    check('listing-wrap' not in html, 'a listing of short lines does not wrap')
    open(os.path.join(w, 'src', 'long.c'), 'w').write(
        '// @snippet long\nint f(void) { return ' + ' + '.join(['1'] * 40) + '; }\n// @end long\n')
    r, html = pandoc_run('long', '```{.include file="src/long.c" snippet="long"}\n```\n')
    check(r.returncode == 0 and 'class="listing listing-wrap"' in html,
          'a listing with a line over 100 characters wraps instead of being clipped')

    # -- the student edition: statement and stub in place of the solution ----
    r, html = pandoc_run('student', '```{.include file="src/demo.c" snippet="demo"}\n```\n',
                         edition='student')
    check(r.returncode == 0, f'the student edition builds (stderr: {r.stderr.strip()[:300]})')
    check('2 * x' not in html and '2</span>' not in html and 'return y' not in html,
          'student: the solution code is hidden')
    check('return twice x' in html and 'demo_task' in html, 'student: the task statement is shown')
    text = re.sub(r'<[^>]+>', '', html)
    check('return -1;' in text,
          'student: the stub is shown')
    check('// return -1' not in html, 'student: the stub is shown uncommented')
    check('lines 3–5, 9, 11' in html, f'student: real line ranges 3–5, 9, 11 in the header')
    starts = re.findall(r'data-startFrom="(\d+)"', html)
    check(starts == ['3', '9', '11'], f'student: blocks numbered from 3, 9, 11 (got {starts})')
    check('@solution' not in html and '@stub' not in html, 'student: no marker shown')
    r, _ = pandoc_run('bad-edition', '```{.include file="src/demo.c" snippet="demo"}\n```\n',
                      edition='pupil')
    check(r.returncode != 0 and 'pupil' in r.stderr, 'an unknown CRBOOK_EDITION fails, named')

    # -- what must fail ------------------------------------------------------
    cases = [
        ('missing-snippet', '```{.include file="src/demo.c" snippet="nope"}\n```\n',
         ['nope', 'src/demo.c']),
        ('missing-file', '```{.include file="src/absent.c" snippet="demo"}\n```\n',
         ['src/absent.c', 'demo']),
        ('unknown-column', '```{.csv-table src="lab:labdemo" columns="impl,seconds"}\n```\n',
         ['seconds']),
        ('unknown-where-column', '```{.csv-table src="lab:labdemo" where="kernel=3"}\n```\n',
         ['kernel']),
        ('empty-table', '```{.csv-table src="lab:labdemo" where="k=99"}\n```\n',
         ['empty', 'k=99']),
        ('missing-lab', '```{.csv-table src="lab:nolab"}\n```\n', ['nolab']),
        ('header-count', '```{.csv-table src="lab:labdemo" columns="k,ms" headers="k"}\n```\n',
         ['headers']),
    ]
    for name, md, words in cases:
        r, _ = pandoc_run(name, md)
        msg = r.stderr
        check(r.returncode != 0, f'{name}: pandoc fails (exit {r.returncode})')
        check(all(word in msg for word in words),
              f'{name}: the message names {", ".join(words)}: {msg.strip()[:200]!r}')

    # -- chapter numbers from directory names, previous/next links ------------
    # (build_book.py writes the markers; chapters 6 and 7 missing, 8 after 5)
    chap_filter = os.path.join(a.root, 'book', 'filters', 'chapters.lua')

    def chapters_run(name, md):
        p = os.path.join(w, name + '.md')
        open(p, 'w').write(md)
        out = os.path.join(w, name + '.html')
        r = subprocess.run([pandoc, p, '-t', 'html5', '--toc', '--number-sections', '-s',
                            '--metadata', 'title=t', '--lua-filter', chap_filter, '-o', out],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           timeout=60)
        return r, re.sub(r'\s+', ' ', open(out).read()) if r.returncode == 0 else ''

    def mark(n, d):
        return f'::: {{.crbook-chapter number="{n}" dir="{d}"}}\n:::\n\n'
    r, html = chapters_run('chapters', '# Front {.unnumbered}\n\ntext\n\n'
                           + mark(5, '05-gpu') + '# The GPU {#ch-gpu}\n\n## Kernels\n\n### One\n\n## Tiles\n\n'
                           + mark(8, '08-fpn') + '# A network {#ch-fpn}\n\n## Shapes\n\n'
                           + '::: {.crbook-chapters-end}\n:::\n\n# Appendix {.unnumbered}\n\n## Part {.unnumbered}\n')
    check(r.returncode == 0, f'chapters: a book with chapters 5 and 8 builds ({r.stderr.strip()[:300]})')
    heads = re.findall(r'<h(\d) data-number="([^"]+)" id="([^"]+)"', html)
    check(heads == [('1', '5', 'ch-gpu'), ('2', '5.1', 'kernels'), ('3', '5.1.1', 'one'),
                    ('2', '5.2', 'tiles'), ('1', '8', 'ch-fpn'), ('2', '8.1', 'shapes')],
          f'chapters: numbered by their directories, 5 then 8, sections under them (got {heads})')
    toc = re.findall(r'toc-section-number">([^<]+)<', html)
    check(toc == ['5', '5.1', '5.1.1', '5.2', '8', '8.1'], f'chapters: the contents agree ({toc})')
    check('id="front"' in html and 'data-number' not in html.split('id="front"')[1][:5]
          and 'Appendix' in html, 'chapters: front matter and appendix stay unnumbered')
    navs = re.findall(r'<div class="chapter-nav" data-chapter="(\d+)">(.*?)</div>', html)
    check([n for n, _ in navs] == ['5', '8'], f'chapters: one link block per chapter ({navs})')
    if len(navs) == 2:
        check('href="#ch-fpn" rel="next"' in navs[0][1] and 'rel="prev"' not in navs[0][1]
              and 'Chapter 8, A network' in navs[0][1],
              'chapters: chapter 5 links to chapter 8 as the next, to no previous one')
        check('href="#ch-gpu" rel="prev"' in navs[1][1] and 'rel="next"' not in navs[1][1],
              'chapters: chapter 8 links back to chapter 5, to no next one')
        check(html.find('chapter-nav" data-chapter="5"') < html.find('id="ch-fpn"') and
              html.find('chapter-nav" data-chapter="8"') < html.find('id="appendix"'),
              'chapters: each link block closes its chapter')
    check('crbook-chapter' not in html, 'chapters: the markers are removed')
    r, _ = chapters_run('chapters-no-title', mark(3, '03-x') + 'no heading here\n')
    check(r.returncode != 0 and '03-x' in r.stderr and 'heading' in r.stderr,
          f'chapters: a chapter without its "# " title fails, named ({r.stderr.strip()[:200]!r})')

    # -- if-built: a part shown only when the build made a file -------------
    iff = os.path.join(a.root, 'book', 'filters', 'if_built.lua')
    os.makedirs(os.path.join(w, 'broot', 'figs'), exist_ok=True)
    doc = ('::::: {.if-built file="figs/made.png"}\nPANEL-SHOWN\n\n'
           '::: otherwise\nNOT-MADE-TEXT\n:::\n:::::\n\nAFTER\n')

    def if_built_run(name, md):
        p = os.path.join(w, name + '.md')
        open(p, 'w').write(md)
        r = subprocess.run([pandoc, p, '-t', 'html5', '--lua-filter', iff],
                           env=dict(env, CRBOOK_BUILDROOT=os.path.join(w, 'broot')),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=60)
        return r, r.stdout
    r, html = if_built_run('ifb-missing', doc)
    check(r.returncode == 0 and 'NOT-MADE-TEXT' in html and 'PANEL-SHOWN' not in html
          and 'AFTER' in html, 'if-built: without the file only the otherwise part shows')
    open(os.path.join(w, 'broot', 'figs', 'made.png'), 'wb').write(b'x')
    r, html = if_built_run('ifb-made', doc)
    check(r.returncode == 0 and 'PANEL-SHOWN' in html and 'NOT-MADE-TEXT' not in html
          and 'AFTER' in html, 'if-built: with the file the part shows, not the otherwise part')
    r, _ = if_built_run('ifb-bad', '::: {.if-built file="figs/made.png"}\nX\n:::\n')
    check(r.returncode != 0 and 'otherwise' in r.stderr, 'if-built: no otherwise part fails, named')

    # -- plots ---------------------------------------------------------------
    if a.gnuplot or shutil.which('gnuplot'):
        r, html = pandoc_run('plot', '```{.plot src="lab:labdemo" script="src/demo.gp" '
                             'where="kind=stack" caption="A plot"}\n```\n')
        check(r.returncode == 0, f'a plot builds (stderr: {r.stderr.strip()[:300]})')
        svgs = [f for f in os.listdir(os.path.join(w, 'figs')) if f.endswith('.svg')]
        check(len(svgs) == 1 and os.path.getsize(os.path.join(w, 'figs', svgs[0])) > 0,
              f'gnuplot wrote one SVG ({svgs})')
        check('<figure' in html and 'Measured on testbox' in html,
              'the plot is a figure with the provenance in its caption')
        r, _ = pandoc_run('plot-bad', '```{.plot src="lab:labdemo" script="src/none.gp"}\n```\n')
        check(r.returncode != 0 and 'none.gp' in r.stderr, 'a missing gnuplot script fails, named')
    else:
        print('skip    plots (gnuplot not found)')

    if failures:
        print(f'{len(failures)} check(s) failed')
        sys.exit(1)
    print('all filter checks passed')


if __name__ == '__main__':
    main()
