#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' from meson's testlog.json; exits 1 on any failure.

    summarize.py [LOG ...]    (default: build/meson-logs/testlog.json)

Each line of a log is one test's JSON record with a 'result' of OK, FAIL, SKIP,
TIMEOUT, ERROR, EXPECTEDFAIL or UNEXPECTEDPASS. With several logs (CI's normal,
sanitizer and valgrind passes) the counts are summed into the one line. An empty
or unreadable log counts as one failure: a run that tested nothing has proven nothing."""
import json
import sys


def count(path, several):
    """(passed, failed, skipped) of one log; failures are named on stderr."""
    passed = failed = skipped = 0
    where = f' in {path}' if several else ''
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        print(f"summarize.py: cannot read {path}: {e}", file=sys.stderr)
        return 0, 1, 0
    for r in records:
        result = r.get("result")
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
            print(f"failed: {r.get('name')} ({result}){where}", file=sys.stderr)
    if not records:
        failed = 1
        print(f"summarize.py: the test log {path} is empty", file=sys.stderr)
    return passed, failed, skipped


def main(paths):
    totals = [0, 0, 0]
    for p in paths:
        for i, n in enumerate(count(p, len(paths) > 1)):
            totals[i] += n
    passed, failed, skipped = totals
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or ["build/meson-logs/testlog.json"]))
