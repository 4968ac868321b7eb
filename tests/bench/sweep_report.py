#!/usr/bin/env python3
"""The report of tests/bench/sweep.sh (standard library only).

  sweep_report.py --out JSON --runs RUNS --clk-tck N --metrics-dir DIR --meta k=v ...

RUNS has one line per wrk run: W ROW SIDE ROUND WRK_FILE SRV_USER SRV_SYS
REDIS_USER REDIS_SYS (clock ticks). Prints the table (ratios of median
req/s over nginx static's for the same URLs, per worker count), the p99s and
CPU per request of every side, the targets; writes everything to JSON.
Exit 1 when a run could not be measured (a missed target is reported only).
"""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402  (wrk parsing)

ROWS = [  # label, row, side, baseline side, target ratio
    ("JollyJet Lua route (bench.lua, 400 B)", "lua", "engine", 1.00),
    ("OpenResty style route, content_by_lua", "lua", "peer", None),
    ("JollyJet product, Redis hit (shipped)", "products", "redis", 0.95),
    ("OpenResty style + Redis GET (RESP)", "products", "peer-redis", None),
    ("JollyJet product, L1 hit (bounded)", "products", "l1", 1.20),
    ("OpenResty style, worker table 1 s TTL", "products", "peer-table", None),
]
STATIC = {"lua": "nginx static /bench/fixed", "products": "nginx static products"}


def fmt_ms(v):
    return report.fmt_ms(v)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--runs", required=True)
    ap.add_argument("--clk-tck", type=int, default=100)
    ap.add_argument("--metrics-dir")
    ap.add_argument("--meta", nargs="*", default=[])
    a = ap.parse_args()
    meta = dict(kv.split("=", 1) for kv in a.meta)

    cells, problems = {}, []
    for line in open(a.runs):
        f = line.split()
        if len(f) != 9:
            continue
        w, row, side, rnd, path = int(f[0]), f[1], f[2], f[3], f[4]
        su, ss, ru, rs = (int(x) for x in f[5:9])
        r, p = report.parse(path)
        problems += [f"w{w} {row} {side} {rnd}: {x}" for x in p]
        if rnd == "warmup":
            continue
        c = cells.setdefault((w, row, side), {"runs": [], "ticks": 0, "redis_ticks": 0, "requests": 0})
        r["round"] = rnd
        c["runs"].append(r)
        c["ticks"] += su + ss
        c["redis_ticks"] += ru + rs
        c["requests"] += r.get("requests", 0)

    def fig(c):
        rps = [r["rps"] for r in c["runs"] if "rps" in r]
        p99 = [r["p99_ms"] for r in c["runs"] if "p99_ms" in r]
        us = 1e6 / a.clk_tck
        n = c["requests"] or 1
        return {"rps": statistics.median(rps) if rps else None, "p99_ms": statistics.median(p99) if p99 else None,
                "cpu_us": c["ticks"] * us / n, "redis_cpu_us": c["redis_ticks"] * us / n,
                "rps_rounds": rps}

    figs = {k: fig(c) for k, c in cells.items()}
    ws = sorted({k[0] for k in cells})
    out = {"meta": meta, "cells": [], "targets": [], "problems": problems}

    print(f"== JollyJet sweep (issue 11): every path vs nginx static (sendfile, open_file_cache), "
          f"same bytes, {meta.get('ids', '?')} product ids cycled ==")
    print(f"   wrk -t{meta.get('threads')} -c{meta.get('connections')} -d{meta.get('duration_s')}s --latency, "
          f"{meta.get('rounds')} alternating rounds, medians; {meta.get('cpus')} CPUs shared by wrk, redis-server "
          f"and the servers; {meta.get('nginx_version')}; engine {meta.get('engine_commit')}; {meta.get('date')}")
    head = "| path | " + " | ".join(f"{w} worker{'s' if w > 1 else ''}" for w in ws) + " |"
    print()
    print("ratio = req/s / nginx static's (same URLs)")
    print(head)
    print("|---|" + "---|" * len(ws))
    ratio = {}
    for label, row, side, _ in ROWS:
        vals = []
        for w in ws:
            e, s = figs.get((w, row, side)), figs.get((w, row, "static"))
            if e and s and e["rps"] and s["rps"]:
                ratio[(w, row, side)] = e["rps"] / s["rps"]
                vals.append(f"{ratio[(w, row, side)]:.2f}")
            else:
                vals.append("n/a")
                problems.append(f"w{w} {row} {side}: not measured")
        print(f"| {label} | " + " | ".join(vals) + " |")

    print()
    print("req/s, p99 and CPU per request (server: master + workers, user + system; redis-server apart)")
    print("| side | " + " | ".join(f"{w}w req/s | p99 | cpu us/req" for w in ws) + " |")
    print("|---|" + "---|---|---|" * len(ws))
    sides = [(STATIC["lua"], "lua", "static")] + [(l, r, s) for l, r, s, _ in ROWS[:2]] + \
            [(STATIC["products"], "products", "static")] + [(l, r, s) for l, r, s, _ in ROWS[2:]]
    for label, row, side in sides:
        vals = []
        for w in ws:
            f = figs.get((w, row, side))
            if not f or f["rps"] is None:
                vals.append("n/a | n/a | n/a")
                continue
            cpu = f"{f['cpu_us']:.1f}"
            if row == "products" and side not in ("static",) and f["redis_cpu_us"] >= 0.05:
                cpu += f" (+redis {f['redis_cpu_us']:.1f})"
            vals.append(f"{f['rps']:.0f} | {fmt_ms(f['p99_ms'])} | {cpu}")
            out["cells"].append({"workers": w, "row": row, "side": side, **f,
                                 "ratio": ratio.get((w, row, side))})
        print(f"| {label} | " + " | ".join(vals) + " |")

    print()
    for label, row, side, target in ROWS:
        if target is None:
            continue
        for w in ws:
            rt = ratio.get((w, row, side))
            e, s = figs.get((w, row, side)), figs.get((w, row, "static"))
            if rt is None:
                continue
            p99_ok = e["p99_ms"] is not None and s["p99_ms"] is not None and e["p99_ms"] <= s["p99_ms"]
            met = rt >= target
            per_round = [x / y for x, y in zip(e["rps_rounds"], s["rps_rounds"]) if y]
            print(f"{label}, {w} worker(s): {rt:.2f}x (target >= {target:.2f}) - "
                  f"{'target met' if met else 'TARGET MISSED'}; p99 {fmt_ms(e['p99_ms'])} vs nginx "
                  f"{fmt_ms(s['p99_ms'])} - {'no worse' if p99_ok else 'WORSE'}; per round "
                  + " ".join(f"{x:.2f}" for x in per_round))
            out["targets"].append({"row": row, "side": side, "workers": w, "ratio": rt, "target": target,
                                   "met": met, "p99_ms": e["p99_ms"], "nginx_p99_ms": s["p99_ms"],
                                   "p99_no_worse": p99_ok})

    # CPU per request moves far less with the machine's other load than req/s
    print("cpu per request, nginx static / side (server alone; > 1: the side spends less CPU per request):")
    for label, row, side, _ in ROWS:
        vals = []
        for w in ws:
            e, s = figs.get((w, row, side)), figs.get((w, row, "static"))
            vals.append(f"{w}w {s['cpu_us'] / e['cpu_us']:.2f}" if e and s and e["cpu_us"] else f"{w}w n/a")
        print(f"   {label}: " + ", ".join(vals))

    if a.metrics_dir:   # the L1 engine served from L1, the shipped one from Redis
        for w in ws:
            for name, want_l1 in (("l1", True), ("redis", False)):
                p = os.path.join(a.metrics_dir, f"{name}-w{w}.json")
                if not os.path.exists(p):
                    problems.append(f"w{w}: no cache metrics of engine {name}")
                    continue
                m = json.load(open(p))
                l1, l2 = m.get("l1Hits", 0), m.get("l2Hits", 0)
                share = l1 / (l1 + l2) if l1 + l2 else 0
                fast = m.get("fastPathHits")
                print(f"   w{w} engine {name}: L1 hits {l1}, L2 hits {l2} ({share * 100:.1f} % from L1), "
                      f"fast-path hits {fast}")
                if want_l1 and share < 0.9:
                    problems.append(f"w{w}: engine-l1 took {share * 100:.1f} % of its hits from L1 (< 90 %)")
                if not want_l1 and l1:
                    problems.append(f"w{w}: the shipped policy served {l1} L1 hits (product is not 'strong'?)")

    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(out, f, indent=1)
    if problems:
        print("NOT MEASURED:", file=sys.stderr)
        for p in problems:
            print("   " + p, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
