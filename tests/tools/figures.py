#!/usr/bin/env python3
"""Prints the figures the fault tests wrote (tests/integration/loadgen.py
Figures: one JSON file per build and test file in JJ_FIGURES_DIR) as one
table: build, test, scenario, metric, value, bound, result.

    python3 tests/tools/figures.py build/figures

Informational: it exits 0 (the tests themselves fail the run)."""
import glob
import json
import os
import sys
import textwrap

COLS = [("build", 10), ("test", 18), ("scenario", 34), ("metric", 44), ("value", 18), ("bound", 30), ("result", 6)]


def rows_of(d):
    rows = []
    for path in sorted(glob.glob(os.path.join(d, "*.json"))):
        try:
            with open(path) as f:
                rows.extend(json.load(f))
        except (OSError, ValueError) as e:
            print(f"figures: cannot read {path}: {e}", file=sys.stderr)
    order = {"release": 0, "asan": 1}
    rows.sort(key=lambda r: order.get(r.get("build"), 2))   # stable: each file in its order
    return rows


def cells(r, prev):
    same = prev is not None and (prev["build"], prev["test"], prev["scenario"]) == (r["build"], r["test"], r["scenario"])
    result = {True: "ok", False: "FAIL", None: "-"}[r.get("ok")]
    return ["" if same else r["build"], "" if same else r["test"].replace("test_", ""),
            "" if same else r["scenario"], r["metric"], str(r["value"]), str(r.get("bound") or "-"), result]


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("JJ_FIGURES_DIR", "build/figures")
    rows = rows_of(d)
    if not rows:
        print(f"(no figures in {d})")
        return 0
    line = "+".join("-" * (w + 2) for _, w in COLS)
    print("== fault-test figures (" + d + ")")
    print(" " + " | ".join(name.ljust(w) for name, w in COLS))
    print(line)
    prev = None
    for r in rows:
        if prev is not None and prev["test"] != r["test"]:
            print(line)
        wrapped = [textwrap.wrap(c, w) or [""] for c, (_, w) in zip(cells(r, prev), COLS)]
        for i in range(max(len(w) for w in wrapped)):
            print(" " + " | ".join((w[i] if i < len(w) else "").ljust(cw) for w, (_, cw) in zip(wrapped, COLS)))
        prev = r
    failed = sum(1 for r in rows if r.get("ok") is False)
    print(line)
    print(f"{len(rows)} figures, {failed} out of bounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
