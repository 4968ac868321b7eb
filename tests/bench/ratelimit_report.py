#!/usr/bin/env python3
"""The report of tests/bench/ratelimit.sh: product GET through a rate-limit
rule (engine-limited) against the same route without one (engine-plain).
Medians of the alternating wrk rounds, the limited/plain ratio against the
target, CPU per request, build/bench/ratelimit.json. Standard library only;
wrk outputs are read with report.parse.

  ratelimit_report.py --out JSON --target 0.8 --meta k=v ... [--cpu FILE --clk-tck N]
                      --plain F1 F2 ... --limited F1 F2 ...

Exit 1 only if a run could not be measured; a missed target is reported."""
import argparse
import json
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import fmt_ms, parse  # noqa: E402


def side(files):
    runs, problems = [], []
    for f in files:
        r, p = parse(f)
        runs.append(r)
        problems += [f"{os.path.basename(f)}: {x}" for x in p]

    def med(key):
        vals = [r[key] for r in runs if key in r]
        return statistics.median(vals) if vals else None

    return {"rounds": len(runs), "rps_median": med("rps"), "p50_ms_median": med("p50_ms"),
            "p99_ms_median": med("p99_ms"), "runs": runs}, problems


def cpu_per_request(path, clk_tck, runs_by_name):
    """Median CPU microseconds per request of the engine and of redis-server,
    from the "name user sys redis_user redis_sys" lines of measure()."""
    if not path or not os.path.exists(path):
        return {}
    ticks = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 5:
                ticks[parts[0]] = [int(x) for x in parts[1:]]
    out = {}
    for side_name, runs in runs_by_name.items():
        eng, red = [], []
        for r in runs:
            t = ticks.get(r["file"][:-4]) if r.get("file", "").endswith(".txt") else None
            if t and r.get("requests"):
                eng.append((t[0] + t[1]) / clk_tck * 1e6 / r["requests"])
                red.append((t[2] + t[3]) / clk_tck * 1e6 / r["requests"])
        if eng:
            out[side_name] = {"engine_us_per_req": statistics.median(eng),
                              "redis_us_per_req": statistics.median(red)}
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--target", type=float, default=0.8)
    ap.add_argument("--meta", nargs="*")
    ap.add_argument("--cpu")
    ap.add_argument("--clk-tck", type=float, default=100)
    ap.add_argument("--plain", nargs="+", required=True)
    ap.add_argument("--limited", nargs="+", required=True)
    args = ap.parse_args()

    meta = {}
    for kv in args.meta or []:
        k, _, v = kv.partition("=")
        meta[k] = int(v) if v.isdigit() else v
    plain, p1 = side(args.plain)
    limited, p2 = side(args.limited)
    problems = p1 + p2
    ratio = None
    if plain["rps_median"] and limited["rps_median"] is not None:
        ratio = limited["rps_median"] / plain["rps_median"]
    met = ratio is not None and ratio >= args.target
    round_ratios = [b["rps"] / a["rps"] for a, b in zip(plain["runs"], limited["runs"])
                    if a.get("rps") and "rps" in b]
    cpu = cpu_per_request(args.cpu, args.clk_tck, {"plain": plain["runs"], "limited": limited["runs"]})

    w = meta.get("workers", "?")
    print()
    print(f"== JollyJet rate-limit benchmark: GET {meta.get('path', '/api/products/{id}')} "
          f"with a {meta.get('algorithm', 'gcra')} rule vs without ==")
    print(f"   wrk -t{meta.get('threads', '?')} -c{meta.get('connections', '?')} -d{meta.get('duration_s', '?')}s "
          f"--latency, {plain['rounds']}+{limited['rounds']} alternating rounds, medians; {w} workers each; "
          f"{meta.get('cpus', '?')} CPUs shared with wrk and redis-server")
    print(f"   {'':15} {'req/s':>10} {'p50':>9} {'p99':>9} {'engine CPU':>11} {'redis CPU':>10}   req/s per round")
    for name, s in (("without rule", plain), ("with rule", limited)):
        rounds = " ".join(f"{r['rps']:.0f}" for r in s["runs"] if "rps" in r)
        rps = "n/a" if s["rps_median"] is None else f"{s['rps_median']:.0f}"
        c = cpu.get("plain" if s is plain else "limited", {})
        ec = f"{c['engine_us_per_req']:.1f}us/req" if c else "n/a"
        rc = f"{c['redis_us_per_req']:.1f}us/req" if c else "n/a"
        print(f"   {name:15} {rps:>10} {fmt_ms(s['p50_ms_median']):>9} {fmt_ms(s['p99_ms_median']):>9} "
              f"{ec:>11} {rc:>10}   {rounds}")
    if ratio is not None:
        verdict = "target met" if met else "TARGET MISSED"
        print(f"rate-limited route vs the same route without a rule: {ratio:.2f}x "
              f"(target >= {args.target:.2f}) - {verdict}")
    if round_ratios:
        print(f"   per-round with/without: {' '.join(f'{x:.2f}' for x in round_ratios)}"
              f" (median {statistics.median(round_ratios):.2f})")
    for p in problems:
        print(f"   measurement problem: {p}", file=sys.stderr)

    out = {
        "benchmark": "ratelimit",
        "route": "GET " + str(meta.get("path", "")),
        "target_ratio": args.target,
        "ratio": ratio,
        "round_ratios": round_ratios,
        "target_met": met,
        "valid": not problems and ratio is not None,
        "problems": problems,
        "params": meta,
        "cpu": cpu,
        "without_rule": plain,
        "with_rule": limited,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"   details: {args.out}")
    return 0 if out["valid"] else 1


if __name__ == "__main__":
    sys.exit(main())
