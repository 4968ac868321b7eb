#!/usr/bin/env python3
"""cgdiff.py MODE SHORT LONG N: per-function (callgrind_annotate, MODE
inclusive yes|no) instruction counts of the LONG run minus the SHORT run,
over N requests, largest first (tests/bench/callgrind.sh)."""
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(\S.*)$")


def counts(mode, path):
    out = subprocess.run(["callgrind_annotate", f"--inclusive={mode}", "--threshold=100", path],
                         capture_output=True, text=True, check=True).stdout
    res = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if not m or "PROGRAM TOTALS" in line or "=>" in line or "events annotated" in line:
            continue
        name = re.sub(r"\s+", " ", m.group(2)).strip()
        name = re.sub(r"\[/\S*/(build|wt-[^/]*)/[^\]]*\]", "[jollyjet]", name)
        res[name] = res.get(name, 0) + int(m.group(1).replace(",", ""))
    return res


def main():
    mode, short, long_, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    top = int(sys.argv[5]) if len(sys.argv) > 5 else 40
    a, b = counts(mode, short), counts(mode, long_)
    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / n, k) for k in set(a) | set(b))
    for d, k in reversed(rows[-top:]):
        if d >= 20:
            print(f"{d:10.0f}  {k}")
    neg = [(d, k) for d, k in rows[:5] if d <= -20]
    if neg:
        print("   (fewer in the long run: " + "; ".join(f"{d:.0f} {k}" for d, k in neg) + ")")


if __name__ == "__main__":
    main()
