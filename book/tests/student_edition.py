"""The student edition hides every coursework solution (used by test_render.py).

Reads the solution regions of the chapter sources the way the kit generator does
(`// @solution TASK: statement` ... `// @stub` ... `// @end-solution`) and checks a
rendered book: no line of solution code is in its listings, and every task that one
of the book's excerpts covers shows its statement and its stub. A line counts as
solution code when it is not trivial (a brace, `return CR_OK;`) and appears nowhere
in the sources outside a solution region (such a line is no secret).
"""
import html
import os
import re

MARKER = re.compile(r'^\s*(?://+|#+|/\*)\s*@(?P<kind>snippet|end-solution|end|solution|stub)'
                    r'\b\s*(?P<arg>.*?)\s*(?:\*/)?\s*$')
SOURCE_EXT = ('.c', '.h', '.cu', '.cuh')
INCLUDE = re.compile(r'\{\.include\s+file="(?P<file>[^"]+)"(?:\s+snippet="(?P<snippet>[^"]+)")?')


def norm(line):
    """A code line with its whitespace collapsed, for comparing listings with sources."""
    return ' '.join(line.split())


def parse(path):
    """Returns (tasks, plain_lines, snippets) of one source file: tasks =
    [{id, statement, line, solution: [text], stub: [text]}], plain_lines = every
    normalised line outside a solution region, snippets = {name: (first, last)}."""
    tasks, plain, snippets, open_snips = [], set(), {}, {}
    state, task = 'code', None
    for n, line in enumerate(open(path, encoding='utf-8').read().split('\n'), start=1):
        m = MARKER.match(line)
        kind = m.group('kind') if m else None
        if kind == 'snippet':
            open_snips[m.group('arg')] = n
        elif kind == 'end':
            name = m.group('arg')
            if name in open_snips:
                snippets[name] = (open_snips.pop(name), n)
        elif kind == 'solution':
            tid, _, statement = m.group('arg').partition(':')
            task = {'id': tid.strip(), 'statement': statement.strip(), 'line': n,
                    'solution': [], 'stub': [], 'file': path}
            tasks.append(task)
            state = 'solution'
        elif kind == 'stub':
            state = 'stub'
        elif kind == 'end-solution':
            state = 'code'
        elif state == 'solution':
            task['solution'].append(norm(line))
        elif state == 'stub':
            task['stub'].append(norm(re.sub(r'^\s*// ?', '', line)))
        else:
            plain.add(norm(line))
    return tasks, plain, snippets


def trivial(line):
    """Lines that give nothing away: braces, blank, return CR_OK;, a lone keyword."""
    return len(line) < 8 or re.fullmatch(r'[{}();\s]*|return CR_OK;|break;|continue;|'
                                          r'default:|\} else \{|#pragma omp .*', line) is not None


def listing_lines(page):
    """The normalised text lines of every <pre> block of an HTML page."""
    out = []
    for block in re.findall(r'<pre\b.*?</pre>', page, re.S):
        text = html.unescape(re.sub(r'<[^>]+>', '', block))
        out.extend(norm(l) for l in text.split('\n'))
    return out


def check_student(root, chapters, student_html, teacher_html, check):
    """Runs the checks through check(cond, msg)."""
    tasks, plain, snippets = [], set(), {}
    for top in ('chapters', 'lib', 'labs'):
        for d, _, files in os.walk(os.path.join(root, top)):
            for f in sorted(files):
                if f.endswith(SOURCE_EXT):
                    p = os.path.join(d, f)
                    t, pl, sn = parse(p)
                    tasks += t
                    plain |= pl
                    snippets[os.path.relpath(p, root)] = sn
    check(len(tasks) > 0, f'{len(tasks)} coursework tasks found in the sources')
    secret = {l for t in tasks for l in t['solution'] if not trivial(l) and l not in plain}
    check(len(secret) > 20, f'{len(secret)} solution lines to look for')

    # Tasks the book's excerpts cover.
    covered = set()
    for ch in chapters:
        md = open(os.path.join(root, 'chapters', ch, 'chapter.md'), encoding='utf-8').read()
        for m in INCLUDE.finditer(md):
            sn = snippets.get(m.group('file'), {})
            rng = sn.get(m.group('snippet')) if m.group('snippet') else (0, 10 ** 9)
            for t in tasks:
                if rng and os.path.relpath(t['file'], root) == m.group('file') and \
                        rng[0] < t['line'] < rng[1]:
                    covered.add(t['id'])
    check(len(covered) > 0, f'the book excerpts {len(covered)} tasks: {sorted(covered)}')

    student = open(student_html, encoding='utf-8').read()
    teacher = open(teacher_html, encoding='utf-8').read()
    s_lines, t_lines = set(listing_lines(student)), set(listing_lines(teacher))
    leaked = sorted(secret & s_lines)
    check(not leaked, f'student edition: no solution line in its listings '
                      f'(leaked: {leaked[:3]}{" ..." if len(leaked) > 3 else ""})')
    shown = sorted({l for t in tasks if t['id'] in covered for l in t['solution']
                    if l in secret and l in t_lines})
    check(len(shown) > 20, f'teacher edition: shows {len(shown)} of those solution lines')
    for t in tasks:
        if t['id'] not in covered:
            continue
        stub = [l for l in t['stub'] if l]
        statement = norm(f"// Task {t['id']}: {t['statement']}")
        check(statement in s_lines, f'student edition: task {t["id"]} states its task')
        check(stub and all(l in s_lines for l in stub),
              f'student edition: task {t["id"]} shows its stub ({len(stub)} lines)')
        check(statement not in t_lines, f'teacher edition: task {t["id"]} shows no task line')
    check('class="edition"' in student and 'class="edition"' not in teacher,
          'the student edition says so under its title; the teacher\'s does not')
