#!/usr/bin/env python3
"""Builds one libFuzzer target with clang and runs it for a bounded time over its corpus.

    run_fuzz.py --root SRC --workdir DIR --target NAME [--seconds T | --runs N] [--build-only]

Meson builds the project with one C compiler (gcc); the fuzz targets need clang's
-fsanitize=fuzzer, so this script compiles them itself: tests/fuzz/fuzz_NAME.c and
the library sources it needs (SOURCES below) into DIR/fuzz_NAME, with AddressSanitizer
and UndefinedBehaviorSanitizer (fatal), rebuilding when a source is newer. Then it
runs the target over tests/fuzz/corpus/NAME/ (read-only: new inputs go to
DIR/corpus-NAME/, crashes to DIR/crash-NAME-*). Exit 0 when nothing was found,
1 on a finding, 77 (a skip for meson) when clang or its fuzzer runtime is absent.
CLANG in the environment names the compiler (default: clang).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

SKIP = 77

# Library sources each target links (paths relative to the repository root).
SOURCES = {
    'safetensors': ['lib/safetensors.c', 'lib/dtype.c', 'lib/json.c', 'lib/tensor.c',
                    'lib/atomic_file.c', 'lib/error.c'],
    'png': ['lib/png_io.c', 'lib/atomic_file.c', 'lib/error.c'],
    'conv_desc': ['lib/conv_desc.c', 'lib/tensor.c', 'lib/error.c'],
    'args': ['lib/args.c', 'lib/error.c'],
    'dataset': ['lib/dataset.c', 'lib/png_io.c', 'lib/jpeg_io.c', 'lib/augment.c', 'lib/rng.c',
                'lib/tensor.c', 'lib/atomic_file.c', 'lib/error.c'],
    'jpeg': ['lib/jpeg_io.c', 'lib/png_io.c', 'lib/atomic_file.c', 'lib/error.c'],
}
LIBS = {'png': ['-lpng'], 'dataset': ['-lpng', '-ljpeg', '-lm'], 'jpeg': ['-ljpeg', '-lpng'], 'safetensors': ['-lm'], 'conv_desc': ['-lm'], 'args': ['-lm']}
CFLAGS = ['-std=c11', '-D_POSIX_C_SOURCE=200809L', '-g', '-O1', '-Wall', '-Wextra', '-Werror',
          '-fsanitize=fuzzer,address,undefined', '-fno-sanitize-recover=all',
          '-fno-omit-frame-pointer']


def fuzzer_available(clang, workdir):
    """True if clang links a trivial libFuzzer target (the runtime is installed)."""
    if not shutil.which(clang):
        print(f'run_fuzz: {clang} not found (Debian: apt-get install clang); skipping')
        return False
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        src = os.path.join(d, 't.c')
        with open(src, 'w') as f:
            f.write('#include <stdint.h>\n#include <stddef.h>\n'
                    'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)'
                    '{ (void)d; (void)n; return 0; }\n')
        r = subprocess.run([clang, '-fsanitize=fuzzer,address,undefined', src, '-o',
                            os.path.join(d, 't')], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            print(f'run_fuzz: {clang} has no libFuzzer runtime; skipping\n{r.stdout[-800:]}')
            return False
    return True


def build(clang, root, workdir, target):
    """Compiles DIR/fuzz_TARGET when missing or older than a source; returns its path."""
    srcs = [os.path.join(root, 'tests', 'fuzz', f'fuzz_{target}.c')] + \
        [os.path.join(root, s) for s in SOURCES[target]]
    headers = [os.path.join(root, 'lib', h) for h in os.listdir(os.path.join(root, 'lib'))
               if h.endswith('.h')]
    exe = os.path.join(workdir, f'fuzz_{target}')
    newest = max(os.path.getmtime(p) for p in srcs + headers + [os.path.abspath(__file__)])
    if os.path.exists(exe) and os.path.getmtime(exe) >= newest:
        return exe
    tmp = exe + '.tmp'
    cmd = [clang] + CFLAGS + ['-I', os.path.join(root, 'lib')] + srcs + ['-o', tmp] + \
        LIBS[target]
    r = subprocess.run(cmd)
    if r.returncode != 0:
        print(f'run_fuzz: building {target} failed: {" ".join(cmd)}', file=sys.stderr)
        sys.exit(1)
    os.replace(tmp, exe)
    return exe


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--root', required=True)
    ap.add_argument('--workdir', required=True)
    ap.add_argument('--target', required=True, choices=sorted(SOURCES))
    ap.add_argument('--seconds', type=int, default=20)
    ap.add_argument('--runs', type=int, help='a number of executions instead of a time')
    ap.add_argument('--build-only', action='store_true')
    a, extra = ap.parse_known_args()
    root, workdir = os.path.abspath(a.root), os.path.abspath(a.workdir)
    os.makedirs(workdir, exist_ok=True)
    clang = os.environ.get('CLANG', 'clang')
    if not fuzzer_available(clang, workdir):
        return SKIP
    exe = build(clang, root, workdir, a.target)
    if a.build_only:
        print(exe)
        return 0
    seeds = os.path.join(root, 'tests', 'fuzz', 'corpus', a.target)
    work = os.path.join(workdir, f'corpus-{a.target}')
    os.makedirs(work, exist_ok=True)
    limit = [f'-runs={a.runs}'] if a.runs else [f'-max_total_time={a.seconds}']
    cmd = [exe, '-timeout=10', '-rss_limit_mb=2048', '-print_final_stats=1',
           f'-artifact_prefix={os.path.join(workdir, "crash-" + a.target + "-")}'] + \
        limit + extra + [work, seeds]
    print('run_fuzz:', ' '.join(cmd), flush=True)
    env = dict(os.environ)
    # ASan keeps freed memory in quarantine (256 MiB by default) to catch late uses; a
    # 20-second png run once ended out of memory (rss limit 2048 MiB) with 2 GB
    # quarantined and 24 MB live (2026-12-01). 64 MiB still catches a use right after a
    # free, and the runs' peak rss fell from 390 to 131 MiB.
    env.setdefault('ASAN_OPTIONS', 'detect_leaks=1:quarantine_size_mb=64')
    r = subprocess.run(cmd, env=env)
    if r.returncode != 0:
        print(f'run_fuzz: {a.target}: the fuzzer found a problem (exit {r.returncode}); '
              f'the input is in {workdir}/crash-{a.target}-*', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
