#!/usr/bin/env python3
"""Suite `kits`: a chapter's kit fails cleanly on its stubs, grades each task on its
own, catches the cheats the grader knows about, and passes when solved.

    test_kit.py CHAPTER WORKDIR

1. Generates the stub kit in WORKDIR/stubs and checks it gives nothing away: no
   @solution/@stub/@end-solution text, every stub line present uncommented, no line
   of any solution region that is not also in a stub.
2. Builds it (meson setup + ninja) and grades it: every task must FAIL as a
   normal test failure — not a crash, a time-out or "no test ran".
3. Independence: for each task, the chapter's sources with ONLY that task solved (and
   the tasks kit.ini says it comes after), the others stubs: that task must PASS.
4. Cheats (CHEATS below, per chapter): the solved sources with one task's code replaced
   by a cheat (calling the reference, a scalar loop where speed is the task): that task
   must FAIL, with the message that says why.
5. Every task solved (the sources of make_kit.py --solutions): every task must PASS.
Steps 3-5 rewrite the chapter's sources inside the stub kit and rebuild incrementally.
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


def build_and_grade(kitdir, setup=True):
    meson = shutil.which('meson')
    r = run([meson, 'setup', os.path.join(kitdir, 'build'), kitdir]) if setup else None
    if r and r.returncode != 0:
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


# The body of a function computing one image and group (s, x_g, w_g, b_g, y_g, col) by
# calling chapter 1's convolution: the status is returned, or dropped in a void function.
DIRECT_CONV_CHEAT = [
    '    (void)col;',
    '    cr_conv_params p = s->p;',
    '    p.in_channels = s->cin_g;',
    '    p.out_channels = s->cout_g;',
    '    p.groups = 1;',
    '    p.bias = b_g != NULL;',
    '    cr_tensor x = {4, {1, s->cin_g, s->h_in, s->w_in},',
    '                   (size_t)(s->cin_g * s->h_in * s->w_in), (float *)x_g};',
    '    cr_tensor w = {4, {s->cout_g, s->cin_g, p.kernel_h, p.kernel_w},',
    '                   (size_t)(s->cout_g * cr_im2col_rows(s)), (float *)w_g};',
    '    cr_tensor b = {1, {s->cout_g, 1, 1, 1}, (size_t)s->cout_g, (float *)b_g};',
    '    cr_tensor y = {4, {1, s->cout_g, s->h_out, s->w_out},',
    '                   (size_t)(s->cout_g * s->h_out * s->w_out), y_g};',
    '    return cr_conv2d_direct(&p, &x, &w, b_g ? &b : NULL, &y);']

# Cheats the grader must catch: chapter -> [(task graded, {task: replacement lines} for
# solution regions, (file, anchor, text put first in the body of the function whose
# definition begins with the anchor) or None, message expected)].
CHEATS = {
    '03-gemm': [
        ('loop_order', {'loop_order': [
            '    (void)rsa; (void)csa; (void)rsb; (void)csb;',
            '    return cr_gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);']},
         None, 'cr_gemm_loop_ikj calls cr_gemm_ref'),
        ('loop_order', {'loop_order': [
            '    for (int64_t i = 0; i < M; i++)',
            '        for (int64_t j = 0; j < N; j++) {',
            '            float acc = 0.0f;',
            '            for (int64_t k = 0; k < K; k++) acc += A[i * rsa + k * csa] * B[k * rsb + j * csb];',
            '            C[i * ldc + j] = alpha * acc + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);',
            '        }',
            '    return CR_OK;']},
         None, 'cr_gemm_loop_ikj too slow'),
        ('micro_kernel', {'micro_kernel': [
            '    for (int i = 0; i < 6; i++)',
            '        for (int j = 0; j < 16; j++) {',
            '            float acc = 0.0f;',
            '            for (int64_t k = 0; k < kc; k++) acc += Ap[k * 6 + i] * Bp[k * 16 + j];',
            '            C[i * ldc + j] = acc + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);',
            '        }']},
         None, 'micro-kernel too slow'),
        ('micro_kernel', {'micro_kernel': [
            '    cr_avx2_kernel_unpacked(kc, Ap, 1, 6, Bp, 16, 1, C, ldc, 1.0f, beta);']},
         None, 'avx2_kernel_6x16 calls cr_avx2_kernel_unpacked'),
        ('conv_gemm', {'conv_gemm': [
            '    (void)add_bias; (void)is_pointwise;'] + DIRECT_CONV_CHEAT},
         None, 'conv_group_gemm calls cr_conv2d_direct'),
    ],
    '02-im2col': [
        ('conv_as_gemm', {'conv_as_gemm': DIRECT_CONV_CHEAT[:-1] + [
            DIRECT_CONV_CHEAT[-1].replace('return ', '(void)')]},
         None, 'calls cr_conv2d_direct'),
    ],
    '04-backward': [
        ('grad_weight', {}, ('chapters/04-backward/conv_backward.c',
                             'cr_status cr_conv2d_backward(',
                             '    return cr_conv2d_backward_ref(p, x, w, dy, dx, dw, db);\n'),
         'cr_conv2d_backward calls cr_conv2d_backward_ref'),
    ],
}



def cpu_has(flags):
    try:
        text = open('/proc/cpuinfo').read()
    except OSError:
        return False
    have = set(re.findall(r'^flags\s*:(.*)$', text, re.M)[0].split()) if 'flags' in text else set()
    return all(f in have for f in flags)


def write_sources(kitdir, chapter, solutions, replace=None, patch=None):
    """Rewrites the chapter's sources inside kitdir: the tasks in solutions solved (True:
    all), the others stubs, replace's regions replaced, patch=(file, anchor, text) applied.
    Files whose text does not change are left alone (ninja rebuilds only what changed)."""
    m = make_kit.load_manifest(chapter)
    for p in m['sources'] + m['headers']:
        text = open(os.path.join(ROOT, p), encoding='utf-8').read()
        new, _ = make_kit.transform(os.path.join(ROOT, p), text, solutions, replace)
        if patch and patch[0] == p:     # text put at the start of the body after anchor
            at = new.find(patch[1])
            body = new.find('\n{\n', at) if at >= 0 else -1
            if body < 0:
                check(False, f'cheat patch: no function body after {patch[1]!r} in {p}')
            else:
                new = new[:body + 3] + patch[2] + new[body + 3:]
        dst = os.path.join(kitdir, p)
        old = open(dst, encoding='utf-8').read() if os.path.exists(dst) else None
        if old != new:
            with open(dst, 'w', encoding='utf-8') as f:
                f.write(new)


def grade_tasks(kitdir, tasks):
    """Runs the kit's grader on the given tasks; {task: result} (None if no results)."""
    out = os.path.join(kitdir, 'grade-tasks.json')
    if os.path.exists(out):
        os.remove(out)
    r = run([sys.executable, os.path.join(kitdir, 'grade.py'), '--json', out] + tasks)
    if not os.path.exists(out):
        print(r.stdout[-6000:])
        check(False, f'the grader wrote no results for {", ".join(tasks)} (exit {r.returncode})')
        return None
    res = json.load(open(out))
    by_id = {t['id']: t for t in res['tasks']}
    for t in res['tasks']:
        print(f'  {t["id"]}: {brief(t)}')
        for line in t.get('output', '').splitlines():
            if 'micro-kernel:' in line or 'loop order i-k-j:' in line:   # speeds, for the log
                print(f'    {line.strip()}')
    if not res.get('built', True):
        print(r.stdout[-6000:])
    return by_id


def brief(t):
    """One task's result in a line or a few."""
    if not t:
        return 'no result'
    msgs = '; '.join(t.get('messages', [])[:3])
    return f'{t["status"]} ({t.get("detail")}){": " + msgs if msgs else ""}'


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

    # 3. Each task is graded on its own: only it solved (and what it comes after).
    after = {t['id']: t.get('after', []) for t in info['tasks']}
    for task in tasks:
        solved = {task, *after[task]}
        print(f'--- independence: {task} solved alone'
              f'{" (with " + ", ".join(after[task]) + ")" if after[task] else ""}', flush=True)
        write_sources(stubs, chapter, solved)
        got = grade_tasks(stubs, [task])
        if got is not None:
            check(got.get(task, {}).get('status') == 'PASS',
                  f'only {", ".join(sorted(solved))} solved: task {task} is '
                  f'{brief(got.get(task))}, expected PASS (does it depend on another task?)')

    # 4. The cheats are caught.
    for task, replace, patch, expect in CHEATS.get(chapter, []):
        if 'too slow' in expect and not cpu_has(['avx2', 'fma']):
            print(f'--- cheat for {task} ({expect}): no AVX2 here, the speed test skips: not run')
            continue
        print(f'--- cheat for {task}: expecting "{expect}"', flush=True)
        write_sources(stubs, chapter, True, replace, patch)
        got = grade_tasks(stubs, [task])
        if got is not None:
            t = got.get(task, {})
            text = t.get('detail', '') + ' ' + ' '.join(t.get('messages', [])) + t.get('output', '')
            check(t.get('status') == 'FAIL' and expect in text,
                  f'cheat in {task} not caught: {brief(t)}; expected FAIL saying "{expect}"')

    # 5. Every task passes once solved: the --solutions kit's sources, built in place.
    sols = os.path.join(work, 'solutions')
    make_kit.make_kit(chapter, sols, solutions=True)
    m = make_kit.load_manifest(chapter)
    for p in m['sources'] + m['headers']:
        with open(os.path.join(sols, p), encoding='utf-8') as f, \
                open(os.path.join(stubs, p), 'w', encoding='utf-8') as g:
            g.write(f.read())
    res = build_and_grade(stubs, setup=False)
    if res:
        check(res['exit'] == 0, f'the grader of the solved kit exited {res["exit"]}, expected 0')
        for t in res['tasks']:
            check(t['status'] == 'PASS',
                  f'solved kit: task {t["id"]} is {t["status"]} ({t.get("detail")}), expected PASS')

    if problems:
        print(f'{chapter}: {len(problems)} problem(s)')
        sys.exit(1)
    print(f'{chapter}: the kit fails on its stubs, grades each task on its own, catches '
          f'{len(CHEATS.get(chapter, []))} cheat(s) and passes when solved ({len(tasks)} tasks)')


if __name__ == '__main__':
    main()
