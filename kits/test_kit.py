#!/usr/bin/env python3
"""Suite `kits`: a chapter's kit fails cleanly on its stubs and passes when solved.

    test_kit.py CHAPTER WORKDIR

1. Generates the stub kit in WORKDIR/stubs and checks it gives nothing away: no
   @solution/@stub/@end-solution text, every stub line present uncommented, no line
   of any solution region that is not also in a stub.
2. Builds it (meson setup + ninja) and grades it: every task must FAIL as a
   normal test failure — not a crash, a time-out or "no test ran".
3. Generates WORKDIR/solutions with --solutions, builds and grades it: every task
   must PASS.
"""
import json
from collections import Counter
import os
import re
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True   # no __pycache__ in the source tree
sys.path.insert(0, HERE)
import make_kit  # noqa: E402

problems = []


def check(cond, msg):
    if not cond:
        problems.append(msg)
        print(f'  NOT OK: {msg}')
    return cond


def run(cmd, **kw):
    print('$ ' + ' '.join(cmd), flush=True)
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def build_and_grade(kitdir):
    meson = shutil.which('meson')
    r = run([meson, 'setup', os.path.join(kitdir, 'build'), kitdir])
    if r.returncode != 0:
        print(r.stdout[-4000:])
        check(False, f'meson setup failed for {kitdir}')
        return None
    out = os.path.join(kitdir, 'grade.json')
    r = run([sys.executable, os.path.join(kitdir, 'grade.py'), '--json', out])
    print(r.stdout[-6000:])
    if not check(os.path.exists(out), f'{kitdir}: the grader wrote no results (exit {r.returncode})'):
        return None
    res = json.load(open(out))
    res['exit'] = r.returncode
    res['stdout'] = r.stdout
    return res


def source_regions(chapter):
    """[(task, solution lines, stub lines uncommented)] from the real sources."""
    m = make_kit.load_manifest(chapter)
    regions = []
    for p in m['sources'] + m['headers']:
        lines = open(os.path.join(ROOT, p), encoding='utf-8').read().split('\n')
        state, cur = 'code', None
        for line in lines:
            mk = make_kit.MARKER.match(line)
            kind = mk.group('kind') if mk else None
            if kind == 'solution':
                cur = (mk.group('arg').split(':')[0].strip(), [], [], p)
                regions.append(cur)
                state = 'solution'
            elif kind == 'stub':
                state = 'stub'
            elif kind == 'end-solution':
                state = 'code'
            elif state == 'solution':
                cur[1].append(line)
            elif state == 'stub':
                s = make_kit.STUB_LINE.match(line)
                cur[2].append(((s.group('indent') + (s.group('code') or '')).rstrip()) if s else line)
    return regions


def outside_lines(path):
    """The lines of a source outside every solution region, markers dropped."""
    out, state = [], 'code'
    for line in open(os.path.join(ROOT, path), encoding='utf-8').read().split('\n'):
        mk = make_kit.MARKER.match(line)
        kind = mk.group('kind') if mk else None
        if kind == 'solution':
            state = 'region'
        elif kind == 'end-solution':
            state = 'code'
        elif kind is None and state == 'code':
            out.append(line)
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    chapter, work = make_kit.chapter_dir(sys.argv[1]), os.path.abspath(sys.argv[2])
    if not shutil.which('meson') or not (shutil.which('ninja') or shutil.which('samu')):
        print('meson or ninja not found: skipping')
        sys.exit(77)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)

    # 1. The stub kit gives nothing away.
    stubs = os.path.join(work, 'stubs')
    info = make_kit.make_kit(chapter, stubs)
    tasks = [t['id'] for t in info['tasks']]
    print(f'{chapter}: tasks {", ".join(tasks)}')
    check(len(tasks) > 0, 'the chapter has no task')
    for dirpath, _, files in os.walk(stubs):
        for fn in files:
            if fn.endswith(('.c', '.h', '.cu', '.build')):
                text = open(os.path.join(dirpath, fn), encoding='utf-8', errors='replace').read()
                check(not re.search(r'@(solution|stub|end-solution)\b', text),
                      f'{os.path.relpath(os.path.join(dirpath, fn), stubs)}: a solution marker is left')
    regions = source_regions(chapter)
    for path in sorted({r[3] for r in regions}):
        kit_lines = [l.rstrip() for l in
                     open(os.path.join(stubs, path), encoding='utf-8').read().split('\n')]
        kit_set = set(kit_lines)
        allowed = Counter(l.rstrip() for l in outside_lines(path))
        for task, sol, stub, p in regions:
            if p != path:
                continue
            for l in stub:
                check(l in kit_set, f'{path}: stub line of {task} missing or still commented: {l!r}')
            allowed.update(stub)
        # A line of the kit that is neither outside the regions nor in a stub came
        # from a solution.
        extra = Counter(kit_lines) - allowed
        leaked = [l for l in extra if l.strip()]
        check(not leaked, f'{path}: solution lines left in the stub kit: {leaked[:3]}')

    # 2. Every task fails, cleanly.
    res = build_and_grade(stubs)
    if res:
        check(res['built'], 'the stub kit does not build')
        check(res['exit'] == 1, f'the grader of the stub kit exited {res["exit"]}, expected 1')
        check(f'score: 0/{len(tasks)} tasks' in res['stdout'], 'the stub kit does not score 0')
        for t in res['tasks']:
            check(t['status'] == 'FAIL',
                  f'stub kit: task {t["id"]} is {t["status"]} ({t.get("detail")}), expected FAIL')
            rc = t.get('returncode')
            check(rc is not None and 0 < rc < 126,
                  f'stub kit: task {t["id"]}: exit status {rc} is not a normal test failure')
            check(t.get('tests_run', 0) > 0, f'stub kit: task {t["id"]}: no test ran')

    # 3. Every task passes once solved.
    sols = os.path.join(work, 'solutions')
    make_kit.make_kit(chapter, sols, solutions=True)
    res = build_and_grade(sols)
    if res:
        check(res['exit'] == 0, f'the grader of the solved kit exited {res["exit"]}, expected 0')
        for t in res['tasks']:
            check(t['status'] == 'PASS',
                  f'solved kit: task {t["id"]} is {t["status"]} ({t.get("detail")}), expected PASS')

    if problems:
        print(f'{chapter}: {len(problems)} problem(s)')
        sys.exit(1)
    print(f'{chapter}: the kit fails on its stubs and passes when solved ({len(tasks)} tasks)')


if __name__ == '__main__':
    main()
