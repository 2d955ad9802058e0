#!/usr/bin/env python3
"""Grades a conv2d-reimagined coursework kit, task by task.

    python3 grade.py                 # rebuild, run every task's tests, print a score
    python3 grade.py TASK [TASK...]  # only these tasks, with their tests' full output
    python3 grade.py --json out.json # also write the results as JSON

A task's tests are the chapter's cmocka tests whose names begin with TASK__; the
grader runs them with CR_TEST_FILTER='TASK__*' and a time limit, so a crash or an
endless loop fails the task instead of stopping the grader. A task whose kit.json
entry names given functions runs in its own test program (given code in place of
other tasks' functions, so it is graded on its own), and a task fails if its source
file's code calls a function kit.json forbids it (read from the object's relocations
with readelf). Exit status: 0 when every graded task passes, 1 otherwise, 2 when the
kit cannot be built.
"""
import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile

KIT = os.path.dirname(os.path.abspath(__file__))
RUN_LINE = re.compile(r'\[=+\] .*?(\d+) test\(s\) run\.')
PASSED_LINE = re.compile(r'\[\s+PASSED\s+\] (\d+) test\(s\)')
FAILED_LINE = re.compile(r'\[\s+FAILED\s+\] (\d+) test\(s\)')


def build(builddir, quiet):
    """meson setup (first time) and ninja; returns (ok, output)."""
    log = []
    if not os.path.exists(os.path.join(builddir, 'build.ninja')):
        meson = shutil.which('meson')
        if not meson:
            return False, 'meson not found (Debian: apt-get install meson ninja-build)'
        r = subprocess.run([meson, 'setup', builddir, KIT], cwd=KIT, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        log.append(r.stdout)
        if r.returncode != 0:
            return False, ''.join(log)
    ninja = shutil.which('ninja') or shutil.which('samu')
    cmd = [ninja, '-C', builddir] if ninja else [shutil.which('meson') or 'meson', 'compile',
                                                 '-C', builddir]
    r = subprocess.run(cmd, cwd=KIT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log.append(r.stdout)
    return r.returncode == 0, ''.join(log)


def object_of(builddir, source):
    """The object file meson built from source (a path relative to the kit), or None."""
    want = source.replace('/', '_').replace('\\', '_') + '.o'
    for dirpath, _, files in os.walk(builddir):
        if want in files and '.a.p' in dirpath:
            return os.path.join(dirpath, want)
    return None


def relocation_calls(obj):
    """{function: set of symbols its code refers to} from the object's relocations
    (readelf -rW); the kit compiles the chapter with one section per function. Returns
    None when readelf is missing or fails."""
    readelf = shutil.which('readelf') or shutil.which('llvm-readelf')
    if not readelf:
        return None
    try:
        r = subprocess.run([readelf, '-rW', obj], stdout=subprocess.PIPE,
                           stderr=subprocess.DEVNULL, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode != 0:
        return None
    calls, section = {}, None
    head = re.compile(r"^Relocation section '\.rela?(?P<sec>\S*)'")
    for line in r.stdout.splitlines():
        h = head.match(line)
        if h:
            sec = h.group('sec')
            if sec == '.text' or sec.startswith('.text.'):
                fn = re.sub(r'^\.text\.?((unlikely|hot|startup|exit|split)\.)?', '', sec)
                # gcc's clones and outlined parts count as the function they came from
                section = re.sub(r'(\.(cold|part|constprop|isra|_omp_fn|localalias)(\.\d+)?)+$',
                                 '', fn) or '(text)'
            else:
                section = None      # data (tables of function pointers) are not calls
            continue
        parts = line.split()
        if section is None or len(parts) < 5 or not re.fullmatch(r'[0-9a-fA-F]+', parts[0]):
            continue
        sym = re.sub(r'^\.text\.', '', parts[4])
        calls.setdefault(section, set()).add(sym)
    return calls


def forbidden_calls(task, builddir):
    """(list of 'FUNCTION calls SYMBOL', note): calls the kit forbids this task's source
    to make, from any function of it but the forbidden ones themselves."""
    forbid = task.get('forbid') or []
    if not forbid:
        return [], None
    obj = object_of(builddir, task['file'])
    if not obj:
        return [], f'forbidden calls not checked: no object file of {task["file"]} found'
    calls = relocation_calls(obj)
    if calls is None:
        return [], 'forbidden calls not checked: readelf (binutils) not found'
    found = []
    for fn, syms in sorted(calls.items()):
        if fn in forbid:
            continue
        for f in forbid:
            if f in syms:
                found.append(f'{fn} calls {f}')
    return found, None


def run_task(task, builddir, timeout):
    exe = os.path.join(builddir, task['test'])
    res = {'id': task['id'], 'description': task['description'], 'test': task['test']}
    notes = []
    if not os.path.exists(exe) and task.get('shared_test') and \
            os.path.exists(os.path.join(builddir, task['shared_test'])):
        notes.append(f'{task["test"]} was not built (no objcopy?): graded with the other '
                     f'tasks\' code ({", ".join(task.get("given", []))}) instead of given code')
        exe = os.path.join(builddir, task['shared_test'])
    if not os.path.exists(exe):
        res.update(status='ERROR', detail=f'{exe} was not built', returncode=None, output='')
        return res
    res['notes'] = notes
    found, note = forbidden_calls(task, builddir)
    if note:
        notes.append(note)
    if found:
        res.update(status='FAIL', returncode=None, output='', tests_run=0,
                   detail='calls a function this task must not call: ' + '; '.join(found),
                   messages=[f'{task["file"]}: {f} (forbidden for task {task["id"]}: write '
                             f'the code instead of calling the reference)' for f in found])
        return res
    env = dict(os.environ, CR_TEST_FILTER=task['id'] + '__*',
               CR_GOLDEN_DIR=os.path.join(KIT, 'reference', 'golden'))
    try:
        r = subprocess.run([exe], cwd=KIT, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=timeout, start_new_session=True)
        out = r.stdout.decode('utf-8', errors='replace')
        rc = r.returncode
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b'').decode('utf-8', errors='replace')
        res.update(status='TIMEOUT', detail=f'still running after {timeout} s',
                   returncode=None, output=out)
        return res
    res['returncode'] = rc
    res['output'] = out
    ran = [int(x) for x in RUN_LINE.findall(out)]
    passed = [int(x) for x in PASSED_LINE.findall(out)]
    failed = [int(x) for x in FAILED_LINE.findall(out)]
    res['tests_run'] = sum(ran)
    if rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f'signal {-rc}'
        res.update(status='CRASH', detail=f'the test program died of {name}')
    elif rc == 0 and sum(ran) > 0 and sum(passed) == sum(ran) and not sum(failed):
        res.update(status='PASS', detail=f'{sum(passed)} test(s) passed')
    elif rc == 0 and sum(ran) == 0:
        res.update(status='ERROR', detail='no test ran for this task')
    else:
        msgs = []
        for l in out.splitlines():
            l = l.strip()
            if not ('ERROR' in l or 'FAILED' in l or 'Failure' in l or 'error:' in l or
                    'coursework stub' in l):
                continue
            if FAILED_LINE.search(l) or re.fullmatch(r'\d+ FAILED TEST\(S\)', l) or l in msgs:
                continue    # cmocka's summary repeats each failed test's name
            msgs.append(l)
        res.update(status='FAIL', detail=(f'{sum(failed)} of {sum(ran)} test(s) failed'
                                          if ran else f'exit status {rc}'),
                   messages=msgs[:6])
    return res


def write_json(path, obj):
    """Writes obj as JSON to path with the library's rule (lib/atomic_file.h): a
    directory is refused; a device, FIFO or /dev/stdout is written directly; a link
    is followed (the file it names is replaced, the link stays); otherwise the JSON
    goes to a unique temporary file PATH.tmp.XXXXXXXX next to it (tempfile), is
    fsynced and renamed to path, so no half-written report carries the name."""
    text = json.dumps(obj, indent=2)
    if os.path.isdir(path):
        raise SystemExit(f'grade: --json {path}: is a directory, expected a file name')
    descriptor = path in ('/dev/stdout', '/dev/stderr') or path.startswith(('/dev/fd/', '/proc/'))
    if descriptor or (os.path.exists(path) and not os.path.isfile(path)):
        with open(path, 'a') as f:
            f.write(text)
        return
    target = os.path.realpath(path)
    mask = os.umask(0)
    os.umask(mask)
    mode = (os.stat(target).st_mode & 0o7777) if os.path.exists(target) else 0o666 & ~mask
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(target) + '.tmp.',
                               dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, 'w') as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('tasks', nargs='*', help='tasks to grade (default: all)')
    ap.add_argument('-C', '--builddir', default='build', help='build directory (default: build)')
    ap.add_argument('--timeout', type=float, help='seconds per task (default: from kit.json)')
    ap.add_argument('--no-build', action='store_true', help='do not run meson/ninja first')
    ap.add_argument('-v', '--verbose', action='store_true', help='show every test output')
    ap.add_argument('--json', metavar='FILE', help='write the results as JSON')
    a = ap.parse_args()

    kit = json.load(open(os.path.join(KIT, 'kit.json')))
    tasks = kit['tasks']
    if a.tasks:
        known = {t['id']: t for t in tasks}
        bad = [t for t in a.tasks if t not in known]
        if bad:
            sys.exit(f'grade: no task {", ".join(bad)} (tasks: {", ".join(known)})')
        tasks = [known[t] for t in a.tasks]
    timeout = a.timeout or kit.get('timeout', 120)
    builddir = a.builddir if os.path.isabs(a.builddir) else os.path.join(KIT, a.builddir)

    print(f'grading {kit["kit"]}: {kit["title"]}')
    if not a.no_build:
        ok, log = build(builddir, quiet=not a.verbose)
        if not ok:
            print(log[-4000:])
            print('the kit does not build: every task fails until it compiles')
            for t in tasks:
                print(f'FAIL  {t["id"]:<16} {t["description"]}')
            print(f'score: 0/{len(tasks)} tasks')
            if a.json:
                write_json(a.json, {'kit': kit['kit'], 'built': False, 'passed': 0,
                                    'total': len(tasks), 'tasks': []})
            sys.exit(2)

    results, passed = [], 0
    width = max(len(t['id']) for t in tasks)
    for t in tasks:
        res = run_task(t, builddir, timeout)
        results.append(res)
        ok = res['status'] == 'PASS'
        passed += ok
        label = 'PASS' if ok else 'FAIL'
        print(f'{label}  {t["id"]:<{width}}  {t["description"]}', flush=True)
        if not ok:
            print(f'      {res["status"].lower()}: {res["detail"]}')
            for m in res.get('messages', []):
                print(f'      {m}')
        for n in res.get('notes', []):
            print(f'      note: {n}')
        if a.verbose or a.tasks:
            print(res.get('output', ''))
    print(f'score: {passed}/{len(tasks)} tasks')
    if a.json:
        write_json(a.json, {'kit': kit['kit'], 'built': True, 'passed': passed,
                            'total': len(tasks), 'tasks': results})
    sys.exit(0 if passed == len(tasks) else 1)


if __name__ == '__main__':
    main()
