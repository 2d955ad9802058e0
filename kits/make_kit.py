#!/usr/bin/env python3
"""Generates a coursework kit for a chapter (Python 3 standard library only).

    python3 kits/make_kit.py CHAPTER OUTDIR [--solutions] [--tar]
    python3 kits/make_kit.py --all OUTDIR [--tar]      # every chapter with a kit.ini

CHAPTER is a directory name under chapters/ ("02-im2col"), a path to it, or its
number ("2"). The chapter's manifest chapters/CHAPTER/kit.ini names its sources,
headers, tests, data and the earlier chapters it needs (see kits/README.md).

The kit is a self-contained meson project: lib/ copied, the earlier chapters with
their solutions, the chapter's sources with every solution region

    // @solution TASK: description
    ...real code...
    // @stub
    // ...stub code, commented...
    // @end-solution

replaced by its stub lines uncommented (with --solutions: by the real code), the
chapter's tests plus the test harness, its data, a meson.build, a README.md for
the student, kit.json (the tasks) and grade.py (the grader). Snippet markers
(// @snippet NAME, // @end NAME) are dropped. With --all, OUTDIR gets NN-name/
(stubs) and NN-name-solutions/ for every chapter, and with --tar a .tar.gz of each.
"""
import argparse
import configparser
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.dirname(os.path.abspath(__file__))

# Every kit gets these (relative to the repository root).
COMMON_GLOBS = ['lib/*.c', 'lib/*.h', 'lib/git_rev.h.in',
                'tests/cr_test.h', 'tests/conv_harness.c', 'tests/conv_harness.h',
                'tests/*_common.h']   # the tests' shared header-only helpers
# A kit whose manifest names a lab gets these too (the labs' shared code).
LAB_COMMON = ['labs/lab_common.c', 'labs/lab_common.h']

MARKER = re.compile(r'^(?P<indent>\s*)(?://+|#+|/\*)\s*@(?P<kind>snippet|end-solution|end|solution|stub)'
                    r'\b\s*(?P<arg>.*?)\s*(?:\*/)?\s*$')
SOLUTION_ARG = re.compile(r'^(?P<task>[A-Za-z_][A-Za-z0-9_]*)\s*:\s*(?P<desc>.+)$')
STUB_LINE = re.compile(r'^(?P<indent>\s*)//(?: (?P<code>.*)|(?P<empty>\s*))$')
LEFTOVER = re.compile(r'@(solution|stub|end-solution)\b')


class KitError(Exception):
    pass


def die(msg):
    print(f'make_kit: error: {msg}', file=sys.stderr)
    sys.exit(1)


def rel(path):
    return os.path.relpath(path, ROOT)


# ---------------------------------------------------------------------------
# Solution regions

def transform(path, text, solutions, replace=None):
    """Returns (new_text, tasks): regions replaced by stubs (or kept solved when
    solutions), marker lines removed. tasks: [{id, description, file, line}].
    solutions: True (all solved), False (all stubs) or a set of the task ids to keep
    solved; replace: {task id: [lines]} put in place of those regions (test_kit.py's
    cheats)."""
    replace = replace or {}

    def solved(tid):
        return solutions is True or (not isinstance(solutions, bool) and tid in solutions)
    out, tasks = [], []
    state = 'code'           # code | solution | stub
    task = None
    for n, line in enumerate(text.split('\n'), start=1):
        m = MARKER.match(line)
        kind = m.group('kind') if m else None
        where = f'{rel(path)}:{n}'
        if kind == 'solution':
            if state != 'code':
                raise KitError(f'{where}: @solution inside the region of task "{task["id"]}"')
            a = SOLUTION_ARG.match(m.group('arg'))
            if not a:
                raise KitError(f'{where}: expected "// @solution TASK: description" '
                               f'(TASK a C identifier), got "{line.strip()}"')
            task = {'id': a.group('task'), 'description': a.group('desc').strip(),
                    'file': rel(path), 'line': n, 'stub_lines': []}
            tasks.append(task)
            state = 'solution'
        elif kind == 'stub':
            if state != 'solution':
                raise KitError(f'{where}: @stub outside a @solution region')
            state = 'stub'
        elif kind == 'end-solution':
            if state != 'stub':
                raise KitError(f'{where}: @end-solution without a @stub before it '
                               f'(task "{task["id"] if task else "?"}")')
            if not task['stub_lines']:
                raise KitError(f'{where}: task "{task["id"]}" has an empty stub')
            if task['id'] in replace:
                out.extend(replace[task['id']])
            elif not solved(task['id']):
                out.extend(task['stub_lines'])
            state = 'code'
        elif kind in ('snippet', 'end'):
            continue        # book markers mean nothing to the student
        elif state == 'solution':
            if solved(task['id']) and task['id'] not in replace:
                out.append(line)
        elif state == 'stub':
            s = STUB_LINE.match(line)
            if not s:
                raise KitError(f'{where}: stub lines of task "{task["id"]}" must be code '
                               f'commented with "// ", got "{line.strip()}"')
            code = s.group('code') if s.group('code') is not None else ''
            task['stub_lines'].append((s.group('indent') + code).rstrip())
        else:
            out.append(line)
    if state != 'code':
        raise KitError(f'{rel(path)}: the region of task "{task["id"]}" (line {task["line"]}) '
                       f'has no @end-solution')
    return '\n'.join(out), tasks


# ---------------------------------------------------------------------------
# Manifests

def list_field(sec, key):
    raw = sec.get(key, fallback='')
    return [x.strip() for x in re.split(r'[,\n]', raw) if x.strip()]


def chapter_dir(name):
    """'02-im2col', 'chapters/02-im2col', '2' -> '02-im2col'."""
    name = name.rstrip('/')
    base = os.path.basename(name)
    if os.path.isdir(os.path.join(ROOT, 'chapters', base)):
        return base
    if re.fullmatch(r'\d+', base):
        hits = sorted(d for d in os.listdir(os.path.join(ROOT, 'chapters'))
                      if re.match(r'%02d-' % int(base), d))
        if len(hits) == 1:
            return hits[0]
    raise KitError(f'no chapter "{name}" (chapters with a kit: {", ".join(all_chapters())})')


def all_chapters():
    return sorted(os.path.basename(os.path.dirname(p))
                  for p in glob.glob(os.path.join(ROOT, 'chapters', '*', 'kit.ini')))


def load_manifest(ch):
    path = os.path.join(ROOT, 'chapters', ch, 'kit.ini')
    if not os.path.exists(path):
        raise KitError(f'chapter {ch} has no kit manifest {rel(path)}')
    cp = configparser.ConfigParser()
    cp.read(path)
    if 'kit' not in cp:
        raise KitError(f'{rel(path)}: no [kit] section')
    sec = cp['kit']
    m = {
        'chapter': ch,
        'number': int(re.match(r'(\d+)', ch).group(1)) if re.match(r'\d+', ch) else 0,
        'title': sec.get('title', fallback=ch),
        'sources': list_field(sec, 'sources'),
        'headers': list_field(sec, 'headers'),
        'tests': list_field(sec, 'tests'),
        'data': list_field(sec, 'data'),
        'needs': list_field(sec, 'needs'),
        'timeout': sec.getint('timeout', fallback=120),
        'given_source': sec.get('given_source', fallback='').strip(),
        'lab': sec.get('lab', fallback='').strip(),
        'lab_paths': list_field(sec, 'lab_paths'),
        # a meson fragment that builds the chapter's library (mine_lib) itself, for a
        # chapter that is not plain C (chapter 5: CUDA on the emulator)
        'build': sec.get('build', fallback='').strip(),
        'task_cfg': {},
    }
    if not m['sources'] or not m['tests']:
        raise KitError(f'{rel(path)}: sources and tests are required')
    for p in m['sources'] + m['headers'] + m['tests'] + m['data'] + \
            ([m['given_source']] if m['given_source'] else []) + \
            ([m['build']] if m['build'] else []) + \
            ([m['lab']] + LAB_COMMON if m['lab'] else []):
        if not os.path.exists(os.path.join(ROOT, p)):
            raise KitError(f'{rel(path)}: {p} does not exist')
    if m['lab_paths'] and not m['lab']:
        raise KitError(f'{rel(path)}: lab_paths without a lab')
    for d in m['lab_paths']:
        if not re.fullmatch(r'[A-Za-z_]\w*=[\w./-]+', d):
            raise KitError(f'{rel(path)}: lab_paths: "{d}" is not NAME=PATH (PATH a file of the kit)')
        f = d.split('=', 1)[1]
        if not os.path.exists(os.path.join(ROOT, f)):
            raise KitError(f'{rel(path)}: lab_paths: {f} does not exist')
        if not any(f == x or f.startswith(x.rstrip('/') + '/') for x in m['data']):
            raise KitError(f'{rel(path)}: lab_paths: {f} is not shipped: add it to data')
    # [task.NAME] sections: what the grader knows about one task (kits/README.md).
    for name in cp.sections():
        if name == 'kit':
            continue
        t = re.fullmatch(r'task\.([A-Za-z_]\w*)', name)
        if not t:
            raise KitError(f'{rel(path)}: unknown section [{name}] (expected [kit] or [task.NAME])')
        tsec = cp[name]
        unknown = set(tsec.keys()) - set(TASK_KEYS) - set(cp.defaults().keys())
        if unknown:
            raise KitError(f'{rel(path)}: [{name}]: unknown key(s) {", ".join(sorted(unknown))} '
                           f'(known: {", ".join(TASK_KEYS)})')
        cfg = {k: list_field(tsec, k) for k in ('given', 'forbid', 'after')}
        cfg['note'] = ' '.join(tsec.get('note', fallback='').split())
        for sym in cfg['given'] + cfg['forbid']:
            if not re.fullmatch(r'[A-Za-z_]\w*', sym):
                raise KitError(f'{rel(path)}: [{name}]: "{sym}" is not a C identifier')
        if cfg['given'] and not m['given_source']:
            raise KitError(f'{rel(path)}: [{name}] gives {", ".join(cfg["given"])} but [kit] '
                           f'names no given_source')
        m['task_cfg'][t.group(1)] = cfg
    return m


# Keys of a [task.NAME] section of kit.ini.
TASK_KEYS = ('given', 'forbid', 'after', 'note')


def closure(ch):
    """The chapter's earlier chapters (transitively, in order), then itself."""
    order, seen = [], set()

    def visit(c, stack):
        if c in stack:
            raise KitError(f'chapters need each other in a cycle: {" -> ".join(stack + [c])}')
        if c in seen:
            return
        for n in load_manifest(c)['needs']:
            visit(chapter_dir(n), stack + [c])
        seen.add(c)
        order.append(c)
    visit(ch, [])
    return [load_manifest(c) for c in order]


def test_prefixes(test_paths):
    """{prefix: [test function names]} from cmocka_unit_test(...) entries."""
    found = {}
    for p in test_paths:
        text = open(os.path.join(ROOT, p), encoding='utf-8').read()
        for name in re.findall(r'cmocka_unit_test\w*\(\s*([A-Za-z_]\w*)', text):
            if '__' in name:
                found.setdefault(name.split('__', 1)[0], []).append(name)
    return found


def git_revision():
    try:
        r = subprocess.run(['git', '-C', ROOT, 'describe', '--always', '--dirty', '--abbrev=10'],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           timeout=20)
        return r.stdout.strip() or 'unknown'
    except (OSError, subprocess.SubprocessError):
        return 'unknown'


# ---------------------------------------------------------------------------
# The kit's build files

def meson_list(items, indent='  '):
    return '[\n' + ''.join(f"{indent}  '{i}',\n" for i in items) + indent + ']'


def kit_meson_build(kit_name, chapters, lib_sources, test_exes, tasks, other_prefixes,
                    timeout, suite, given_source=None, lab=None, lab_paths=()):
    """The kit's meson.build: mirrors the project's (cr_config.h, git_rev.h, lib). With
    lab (a labs/ source), the lab is built too and every test gets it as argv[1];
    lab_paths ('NAME=PATH') become -DNAME="the kit's PATH, absolute"."""
    inc_dirs = ['.', 'lib', 'tests'] + [f'chapters/{c["chapter"]}' for c in chapters] + \
        (['labs'] if lab else [])
    lines = [f"""# {kit_name} — generated by conv2d-reimagined's kits/make_kit.py; do not edit
# except where README.md says so. Build: meson setup build && ninja -C build
# Grade: python3 grade.py   (or: meson test -C build --suite grade)
project('{kit_name}', 'c',
  version : '1.0',
  meson_version : '>=1.0.0',
  default_options : [
    'c_std=c11',
    'warning_level=2',
    'buildtype=release',
    'b_ndebug=false',
  ])

cc = meson.get_compiler('c')
add_project_arguments('-D_POSIX_C_SOURCE=200809L', language : 'c')
# A stub leaves its parameters unused; that warning would only be noise here.
add_project_arguments(cc.get_supported_arguments('-Wno-unused-parameter'), language : 'c')
m_dep = cc.find_library('m', required : false)
openmp_dep = dependency('openmp', required : false)
png_dep = dependency('libpng')
jpeg_dep = dependency('libjpeg')
cmocka_dep = dependency('cmocka')

build_conf = configuration_data()
build_conf.set_quoted('CR_BUILD_COMPILER', cc.get_id() + ' ' + cc.version())
build_conf.set_quoted('CR_BUILD_FLAGS', ' '.join(
  ['-O' + get_option('optimization'), 'buildtype=' + get_option('buildtype')]
  + get_option('c_args')))
build_conf.set10('CR_HAVE_OPENMP', openmp_dep.found())
build_conf.set10('CR_HAVE_CUDA', false)
configure_file(output : 'cr_config.h', configuration : build_conf)

git_rev_h = vcs_tag(
  command : ['git', 'describe', '--always', '--dirty', '--abbrev=10'],
  input : 'lib/git_rev.h.in',
  output : 'git_rev.h',
  fallback : 'kit')

kit_inc = include_directories({', '.join(repr(d) for d in inc_dirs)})

cr_lib = static_library('cr', {meson_list(lib_sources)}, git_rev_h,
  include_directories : kit_inc,
  dependencies : [png_dep, jpeg_dep, m_dep])
cr_dep = declare_dependency(link_with : cr_lib, include_directories : kit_inc,
  dependencies : [png_dep, jpeg_dep, m_dep, openmp_dep], sources : [git_rev_h])

chapter_libs = []
"""]
    for c in chapters:
        srcs = [s for s in c['sources'] if s.endswith('.c')]
        if c is chapters[-1] and c.get('build'):
            lines.append(f"""# chapter {c['chapter']} (yours), built by its own rules ({c['build']}):
earlier_libs = chapter_libs
""" + open(os.path.join(ROOT, c['build']), encoding='utf-8').read() + """chapter_libs += mine_lib
""")
            continue
        if c is not chapters[-1]:
            lines.append(f"""# chapter {c['chapter']} (solved)
chapter_libs += static_library('cr_{c['chapter'].replace('-', '_')}', {meson_list(srcs)},
  dependencies : [cr_dep, openmp_dep])
""")
            continue
        lines.append(f"""# chapter {c['chapter']} (yours). One section per function and calls to exported
# functions kept as calls (position-independent, interposable): the grader reads which
# functions your code calls from the relocations of these objects (grade.py), and a task's
# test program can put given code in place of another task's function (kit.json "given").
earlier_libs = chapter_libs
mine_lib = static_library('cr_{c['chapter'].replace('-', '_')}', {meson_list(srcs)},
  c_args : cc.get_supported_arguments('-ffunction-sections', '-fsemantic-interposition'),
  pic : true,
  # "installed" only so that meson makes a full archive (objcopy cannot copy a thin one)
  install : true,
  dependencies : [cr_dep, openmp_dep])
chapter_libs += mine_lib
""")
    lines.append(f"""
conv_harness = static_library('conv_harness', 'tests/conv_harness.c',
  dependencies : [cr_dep, cmocka_dep])

golden_dir = meson.current_source_dir() / 'reference' / 'golden'
""")
    test_args = ''
    if lab:
        name = os.path.splitext(os.path.basename(lab))[0]
        defs = ''.join(f"""
    '-D{d.split('=', 1)[0]}="' + (meson.current_source_dir() / '{d.split('=', 1)[1]}') + '"',"""
                       for d in lab_paths)
        lines.append(f"""# The chapter's lab, built on your code (build/{name}); the tests of its command
# line run it (every test program gets it as argv[1]).
lab = executable('{name}', '{lab}', 'labs/lab_common.c',
  c_args : [{defs}
  ],
  link_with : chapter_libs,
  dependencies : [cr_dep, openmp_dep])

""")
        test_args = ', args : [lab]'
    for exe_name, src in test_exes:
        lines.append(f"""{exe_name} = executable('{exe_name}', '{src}',
  link_with : [conv_harness] + chapter_libs,
  dependencies : [cmocka_dep, cr_dep, openmp_dep])
test('{suite}-all', {exe_name}, suite : '{suite}', timeout : {timeout}{test_args},
  env : {{'CR_GOLDEN_DIR' : golden_dir}})
""")
    given_tasks = [t for t in tasks if t.get('given')]
    if given_tasks:
        lines.append(f"""
# Tasks whose tests run on given code in place of other tasks' functions (kit.json "given"):
# a copy of your chapter's library with those functions made weak (objcopy), and
# {given_source} compiled with CR_GIVEN_<function> for each, so one task's tests
# do not fail because another task is still a stub. Without objcopy, the task's tests
# run in the ordinary test program (and need the other tasks written).
objcopy = find_program('objcopy', 'llvm-objcopy', required : false)
""")
    for t in given_tasks:
        weak = ', '.join(f"'--weaken-symbol={g}'" for g in t['given'])
        defs = ', '.join(f"'-DCR_GIVEN_{g}'" for g in t['given'])
        src = dict((e, p) for e, p in test_exes)[t['shared_test']]
        lines.append(f"""if objcopy.found()
  {t['test']}_lib = custom_target('{t['test']}_lib', input : mine_lib,
    output : 'lib{t['test']}.a',
    command : [objcopy, {weak}, '@INPUT@', '@OUTPUT@'])
  {t['test']} = executable('{t['test']}', '{src}', '{given_source}',
    c_args : [{defs}],
    link_with : [conv_harness] + earlier_libs + [{t['test']}_lib],
    dependencies : [cmocka_dep, cr_dep, openmp_dep])
else
  {t['test']} = {t['shared_test']}
endif
""")
    lines.append('# One test per task: the tests whose names begin with TASK__.\n')
    for t in tasks:
        lines.append(f"""test('{t['id']}', {t['test']}, suite : 'grade', timeout : {timeout}{test_args},
  env : {{'CR_GOLDEN_DIR' : golden_dir, 'CR_TEST_FILTER' : '{t['id']}__*'}})
""")
    for p, exe in other_prefixes:
        lines.append(f"""test('{p} (not a task)', {exe}, suite : 'checks', timeout : {timeout}{test_args},
  env : {{'CR_GOLDEN_DIR' : golden_dir, 'CR_TEST_FILTER' : '{p}__*'}})
""")
    return ''.join(lines)


def task_rules(t, tasks):
    """The README's sentences about one task: order, given code, forbidden calls, note."""
    out = []
    if t['after']:
        out.append('needs ' + ', '.join(f'`{a}`' for a in t['after']) +
                   ' written first: its tests run your code of '
                   f"{'that task' if len(t['after']) == 1 else 'those tasks'}")
    if t['given']:
        owners = []
        for g in t['given']:
            owners.append(f'`{g}`')
        out.append('its tests run on given code in place of ' + ', '.join(owners) +
                   ' (another task\'s function, or one it calls), so it is graded on its own')
    if t['forbid']:
        out.append('must not call ' + ', '.join(f'`{f}`' for f in t['forbid']) +
                   f" (the grader reads the calls of `{t['file']}`'s object file)")
    if t['note']:
        out.append(t['note'].rstrip('.'))
    if not out:
        out.append('independent of the other tasks')
    return '; '.join(out) + '.'


def kit_readme(m, chapters, tasks, other_prefixes, solutions, rev, book_note=''):
    ch = m['chapter']
    earlier = [c['chapter'] for c in chapters[:-1]]
    task_lines = '\n'.join(
        f"| `{t['id']}` | {t['description']} | `{t['file']}` (search for `{t['id']}`) |"
        for t in tasks)
    order_lines = '\n'.join(f"{i}. `{t['id']}`: {task_rules(t, tasks)}"
                             for i, t in enumerate(tasks, start=1))
    solved_note = ('**This is the teacher\'s copy: every task is already solved.**\n\n'
                   if solutions is True else '')
    earlier_note = (f"The earlier chapter{'s' if len(earlier) > 1 else ''} "
                    f"({', '.join(earlier)}) {'are' if len(earlier) > 1 else 'is'} included "
                    "already solved: the tests use them as a reference.\n\n" if earlier else '')
    others = ''
    if other_prefixes:
        others = ('The chapter\'s tests also hold checks that are not tasks (' +
                  ', '.join(f'`{p}__*`' for p, _ in other_prefixes) +
                  '); they test code you are given, and run with '
                  f'`meson test -C build --suite checks`.\n\n')
    lab_line = ''
    if m['lab']:
        lab_name = os.path.splitext(os.path.basename(m['lab']))[0]
        lab_line = (f"- `labs/` — the chapter's lab, built on your code as `build/{lab_name}` "
                    f"(`build/{lab_name} --help`); the tests of its command line run it.\n")
    given_file = (f"; `{m['given_source']}` holds the given code that some tasks' tests run "
                  "in place of other tasks' functions" if m['given_source'] else '')
    return f"""# Coursework kit: chapter {m['number']}, {m['title']}

{solved_note}This kit comes from the book *conv2d, reimagined* (chapter `{ch}`, generated from
revision `{rev}`). Read the chapter first: it explains every task below.

## Your tasks

Each task is a function, or part of one, in which the code has been replaced by a
stub. A stub compiles and makes that task's tests fail with a message, so you can
build and grade the kit at once and then work on one task at a time.

| task | what to write | where |
|---|---|---|
{task_lines}

Suggested order (the chapter's), and what each task's grading rests on:

{order_lines}

{earlier_note}Change only the chapter's source files (`chapters/{ch}/`); the tests
(`tests/`), the library (`lib/`) and the build files stay as they are: the grader
uses the same tests as the course.

## Build

You need a C11 compiler, meson (1.0 or newer), ninja, pkg-config, cmocka and
libpng and libjpeg (Debian: `apt-get install meson ninja-build pkgconf gcc libcmocka-dev
libpng-dev libjpeg-dev`).

```sh
meson setup build
ninja -C build
```

## Grade

```sh
python3 grade.py              # rebuilds, runs every task's tests, prints a score
python3 grade.py TASK         # one task, showing its tests' full output
python3 grade.py --help       # options: build directory, time limit, ...
```

You get one line per task and a score:

```
PASS  {tasks[0]['id'] if tasks else 'task'}   ...
FAIL  ...
score: 1/{len(tasks)} tasks
```

A task passes when all of its tests pass (tests named `TASK__something` in
`tests/`) and its code calls none of the functions the list above forbids (the
grader reads the relocations of your objects with `readelf` from binutils; where
`readelf` is missing it says the check was not made). Each task has {m['timeout']} s: an endless loop or a crash counts as a
failure, and the grader says which. The same tests run through meson with
`meson test -C build --suite grade` (one test per task) or
`meson test -C build --suite {'ch%02d' % m['number']}` (all of the chapter's tests at once);
`CR_TEST_FILTER='TASK__*' build/TEST` runs one task's tests by hand and `CR_SEED=...`
replays a failing random case (the seed is printed when one fails).

{others}## Files

{book_note}

- `chapters/{ch}/` — your chapter: the sources with the stubs, and its header (the API).
{''.join(f'- `chapters/{c}/` — an earlier chapter, solved.' + chr(10) for c in earlier)}- `lib/` — the common library (tensors, the convolution descriptor, errors, RNG, I/O).
- `tests/` — the chapter's cmocka tests and their harness{given_file}.
- `reference/golden/` — test cases computed by PyTorch (the tests read them).
{lab_line}- `grade.py`, `kit.json` — the grader and the task list.
"""


# ---------------------------------------------------------------------------

def make_kit(chapter, outdir, solutions=False, quiet=False, replace=None, book=None):
    """Writes the kit into a temporary sibling of outdir, then renames it into place
    (replacing an older kit there), so an interrupted run never leaves a half kit
    under the real name; the temporary directory is removed on any error."""
    final = os.path.abspath(outdir)
    if os.path.exists(final) and not (os.path.isdir(final) and (
            os.path.exists(os.path.join(final, 'kit.json')) or not os.listdir(final))):
        raise KitError(f'{final} exists and is not a kit; refusing to overwrite it')
    parent, name = os.path.split(final)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(prefix=f'.{name}.tmp-', dir=parent)
    try:
        info = _write_kit(chapter, stage, final, solutions, quiet, replace, book)
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f'.{name}.old-', dir=parent)
            os.rename(final, os.path.join(old, name))
            os.rename(stage, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(stage, final)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return info


def _write_kit(chapter, outdir, final, solutions, quiet, replace=None, book=None):
    """Writes the kit's files into the empty directory outdir (named final when done)."""
    ch = chapter_dir(chapter)
    chapters = closure(ch)
    m = chapters[-1]
    rev = git_revision()
    os.chmod(outdir, 0o755)  # mkdtemp made it 0700

    def copy(relpath):
        dst = os.path.join(outdir, relpath)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(os.path.join(ROOT, relpath), dst)

    # lib/ and the test harness, as they are.
    lib_sources = []
    for g in COMMON_GLOBS:
        hits = sorted(glob.glob(os.path.join(ROOT, g)))
        if not hits:
            raise KitError(f'nothing matches {g}')
        for p in hits:
            copy(rel(p))
            if rel(p).startswith('lib/') and p.endswith('.c'):
                lib_sources.append(rel(p))

    # Chapters: the earlier ones solved, this one with stubs (unless --solutions).
    tasks = []
    for c in chapters:
        mine = c is m
        for p in c['sources'] + c['headers']:
            text = open(os.path.join(ROOT, p), encoding='utf-8').read()
            new, found = transform(os.path.join(ROOT, p), text, solutions if mine else True,
                                   replace if mine else None)
            if mine:
                tasks.extend(found)
            dst = os.path.join(outdir, p)
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with open(dst, 'w', encoding='utf-8') as f:
                f.write(new)
    if not tasks:
        raise KitError(f'chapter {ch} marks no task (no "// @solution TASK: ..." in '
                       f'{", ".join(m["sources"])})')
    ids = [t['id'] for t in tasks]
    if not isinstance(solutions, bool) and set(solutions) - set(ids):
        raise KitError(f'--solve: no task {", ".join(sorted(set(solutions) - set(ids)))} in '
                       f'{ch} (tasks: {", ".join(ids)})')
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise KitError(f'task ids used twice in {ch}: {", ".join(dup)}')

    # Tests: which executable grades which task.
    test_exes = []
    for p in m['tests']:
        copy(p)
        test_exes.append((os.path.splitext(os.path.basename(p))[0], p))
    exe_of = {}
    for exe, p in test_exes:
        for prefix in test_prefixes([p]):
            exe_of.setdefault(prefix, exe)
    missing = [t['id'] for t in tasks if t['id'] not in exe_of]
    if missing:
        raise KitError(f'no test grades task{"s" if len(missing) > 1 else ""} '
                       f'{", ".join(missing)}: expected test functions named TASK__what in '
                       f'{", ".join(m["tests"])}')
    unknown = sorted(set(m['task_cfg']) - set(ids))
    if unknown:
        raise KitError(f'chapters/{ch}/kit.ini: [task.{unknown[0]}] names no task of the chapter '
                       f'(tasks: {", ".join(ids)})')
    for t in tasks:
        cfg = m['task_cfg'].get(t['id'], {})
        for k in ('given', 'forbid', 'after'):
            t[k] = cfg.get(k, [])
        t['note'] = cfg.get('note', '')
        bad = [a for a in t['after'] if a not in ids]
        if bad:
            raise KitError(f'chapters/{ch}/kit.ini: [task.{t["id"]}] after = {", ".join(bad)}: '
                           f'not a task of the chapter')
        t['shared_test'] = exe_of[t['id']]
        t['test'] = f'{exe_of[t["id"]]}_{t["id"]}' if t['given'] else exe_of[t['id']]
    if m['given_source']:
        copy(m['given_source'])
    if m['lab']:
        for p in [m['lab']] + LAB_COMMON:
            copy(p)
    other = sorted((p, e) for p, e in exe_of.items() if p not in ids)

    # Data.
    for d in sorted({d for c in chapters for d in c['data']}):
        src = os.path.join(ROOT, d)
        if os.path.isdir(src):
            shutil.copytree(src, os.path.join(outdir, d),
                            ignore=shutil.ignore_patterns('__pycache__', '*.pyc'))
        else:
            copy(d)
    os.makedirs(os.path.join(outdir, 'reference', 'golden'), exist_ok=True)

    kit_name = f'conv2d-kit-{ch}' + ('-solutions' if solutions is True else '')
    suite = 'ch%02d' % m['number']
    with open(os.path.join(outdir, 'meson.build'), 'w') as f:
        f.write(kit_meson_build(kit_name, chapters, lib_sources, test_exes, tasks, other,
                                m['timeout'], suite, m['given_source'], m['lab'],
                                m['lab_paths']))
    book_note = copy_book(book, outdir, quiet)
    with open(os.path.join(outdir, 'README.md'), 'w') as f:
        f.write(kit_readme(m, chapters, tasks, other, solutions, rev, book_note))
    with open(os.path.join(outdir, '.gitignore'), 'w') as f:
        f.write('/build*/\n__pycache__/\n')
    info = {
        'kit': kit_name, 'chapter': ch, 'title': m['title'], 'suite': suite,
        'solutions': solutions if isinstance(solutions, bool) else sorted(solutions),
        'revision': rev, 'timeout': m['timeout'],
        'tasks': [{k: t[k] for k in ('id', 'description', 'file', 'test', 'shared_test',
                                     'given', 'forbid', 'after', 'note')} for t in tasks],
        'checks': [{'prefix': p, 'test': e} for p, e in other],
    }
    with open(os.path.join(outdir, 'kit.json'), 'w') as f:
        json.dump(info, f, indent=2)
        f.write('\n')
    shutil.copy2(os.path.join(HERE, 'grade.py'), os.path.join(outdir, 'grade.py'))
    os.chmod(os.path.join(outdir, 'grade.py'), 0o755)

    # A stub kit must not give the solutions away.
    if solutions is not True:
        for dirpath, _, files in os.walk(outdir):
            for fn in files:
                p = os.path.join(dirpath, fn)
                if fn.endswith(('.c', '.h', '.cu', '.md', '.build', '.in')):
                    text = open(p, encoding='utf-8', errors='replace').read()
                    hit = LEFTOVER.search(text)
                    if hit and fn != 'README.md':
                        where = os.path.join(final, os.path.relpath(p, outdir))
                        raise KitError(f'{where}: "{hit.group(0)}" left in a stub kit')
    if not quiet:
        kind = ('solutions' if solutions is True else 'stubs' if not solutions
                else 'solved: ' + ', '.join(sorted(solutions)))
        print(f'make_kit: {ch} ({kind}) -> {final}: {len(tasks)} task(s): {", ".join(ids)}')
    return info


# The student edition of the book (book/, built by the project's book target): shipped
# in every kit when it has been built.
BOOK_NAME = 'conv2d-reimagined-student.html'
DEFAULT_BOOK = os.path.join(ROOT, 'build', 'book', BOOK_NAME)


def copy_book(book, outdir, quiet):
    """Copies the student edition into outdir/book/ when it exists; returns the README's
    sentence about it."""
    book = book or DEFAULT_BOOK
    if os.path.isfile(book):
        os.makedirs(os.path.join(outdir, 'book'), exist_ok=True)
        shutil.copy2(book, os.path.join(outdir, 'book', BOOK_NAME))
        return f'The book is in `book/{BOOK_NAME}` (open it in a browser).'
    if not quiet:
        print(f'make_kit: note: {book} not found (build the book first to ship it): '
              f'kit without the book')
    return ('The book is not included in this kit: ask your teacher for it (or build it from '
            'the project: its student edition).')


def make_tar(kitdir):
    base = os.path.basename(kitdir.rstrip('/'))
    out = kitdir.rstrip('/') + '.tar.gz'

    def skip_build(ti):
        parts = ti.name.split('/')
        if len(parts) > 1 and (parts[1].startswith('build') or parts[1] == '__pycache__'):
            return None
        ti.uid = ti.gid = 0
        ti.uname = ti.gname = ''
        return ti
    # a unique temporary file next to out (two runs never share one), renamed into
    # place when complete, with the usual 0666-less-umask mode
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out) + '.tmp.',
                               dir=os.path.dirname(out) or '.')
    os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(tmp, 0o666 & ~mask)
    try:
        with tarfile.open(tmp, 'w:gz') as tar:
            tar.add(kitdir, arcname=base, filter=skip_build)
        os.replace(tmp, out)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return out


def main():
    ap = argparse.ArgumentParser(
        description='Generate a coursework kit for a chapter of conv2d-reimagined.',
        epilog='Examples: make_kit.py 02-im2col /tmp/kit02; make_kit.py 1 /tmp/key01 '
               '--solutions; make_kit.py --all build/kits --tar')
    ap.add_argument('chapter', nargs='?', help='chapter directory name, path or number')
    ap.add_argument('outdir', nargs='?', help='where the kit goes (replaced if it is a kit)')
    ap.add_argument('--solutions', action='store_true',
                    help='keep the solutions (the teacher\'s copy) instead of stubs')
    ap.add_argument('--all', metavar='OUTDIR',
                    help='every chapter with a kit.ini: OUTDIR/NN-name and OUTDIR/NN-name-solutions')
    ap.add_argument('--tar', action='store_true', help='also write OUTDIR.tar.gz')
    ap.add_argument('--list', action='store_true', help='list the chapters that have a kit')
    ap.add_argument('--book', metavar='HTML',
                    help=f'the student edition to ship (default: build/book/{BOOK_NAME}; '
                         'a kit without it when it does not exist)')
    ap.add_argument('--solve', metavar='TASK[,TASK]',
                    help='keep only these tasks solved, the others stubs (for checking that '
                         'each task is graded on its own)')
    a = ap.parse_args()
    try:
        if a.list:
            for c in all_chapters():
                m = load_manifest(c)
                print(f'{c}: {m["title"]}')
            return
        if a.all:
            os.makedirs(a.all, exist_ok=True)
            for c in all_chapters():
                for sol in (False, True):
                    d = os.path.join(a.all, c + ('-solutions' if sol else ''))
                    make_kit(c, d, solutions=sol, book=a.book)
                    if a.tar:
                        print(f'make_kit: {make_tar(d)}')
            return
        if not a.chapter or not a.outdir:
            ap.error('give CHAPTER OUTDIR, or --all OUTDIR')
        if a.solve and a.solutions:
            ap.error('--solve and --solutions exclude each other')
        sol = set(x.strip() for x in a.solve.split(',') if x.strip()) if a.solve else a.solutions
        make_kit(a.chapter, a.outdir, solutions=sol, book=a.book)
        if a.tar:
            print(f'make_kit: {make_tar(a.outdir)}')
    except KitError as e:
        die(str(e))


if __name__ == '__main__':
    main()
