#!/usr/bin/env python3
"""Prints 'N passed, N failed, N skipped' from meson's testlog.json; exits 1 on any failure.

Each line of the log is one test's JSON record with a 'result' of OK, FAIL, SKIP,
TIMEOUT, ERROR, EXPECTEDFAIL or UNEXPECTEDPASS. An empty log counts as a failure:
a run that tested nothing has proven nothing."""
import json
import sys


def main(path):
    passed = failed = skipped = 0
    try:
        with open(path, encoding="utf-8") as f:
            records = [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        print(f"summarize.py: cannot read {path}: {e}", file=sys.stderr)
        print("0 passed, 1 failed, 0 skipped")
        return 1
    for r in records:
        result = r.get("result")
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result == "SKIP":
            skipped += 1
        else:
            failed += 1
            print(f"failed: {r.get('name')} ({result})", file=sys.stderr)
    if not records:
        failed = 1
        print("summarize.py: the test log is empty", file=sys.stderr)
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/meson-logs/testlog.json"))
