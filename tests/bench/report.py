#!/usr/bin/env python3
"""Helpers for tests/bench/run.sh: wrk --latency output parsing, the report,
and a tiny HTTP GET (so the bench needs no curl). Standard library only.

  report.py fetch PORT PATH [--body FILE] [--headers FILE]
      GET http://127.0.0.1:PORT/PATH (2 s timeout); prints the status code,
      saves the body / header lines; exit 1 if no response.

  report.py check FILE
      One line for one wrk run; exit 1 if the run is not a clean measurement
      (no Requests/sec, socket errors, non-2xx/3xx responses, no requests).
  report.py report --out JSON --target 0.9 --meta k=v ... \
                   --nginx F1 F2 ... --engine F1 F2 ...
      Medians per side, the engine/nginx ratio against the target, the JSON
      file. Exit 1 only if a run could not be measured; a missed target is
      reported, not failed.
"""
import argparse
import json
import os
import re
import statistics
import sys

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}
_SIZE = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}


def _ms(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m|h)", text.strip())
    if not m:
        raise ValueError(f"cannot read latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse(path):
    """Returns a dict of figures and a list of problems for one wrk output."""
    with open(path, encoding="utf-8", errors="replace") as f:
        text = f.read()
    r = {"file": os.path.basename(path)}
    problems = []

    m = re.search(r"^Requests/sec:\s+([0-9.]+)\s*$", text, re.M)
    if m:
        r["rps"] = float(m.group(1))
    else:
        problems.append("no 'Requests/sec' line")

    m = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+), ([0-9.]+)([KMGT]?)B read", text, re.M)
    if m:
        r["requests"] = int(m.group(1))
        r["duration_ms"] = _ms(m.group(2))
        r["bytes_read"] = int(float(m.group(3)) * _SIZE[m.group(4)])
        if r["requests"] == 0:
            problems.append("0 requests completed")
    else:
        problems.append("no 'N requests in' line")

    for pct, key in (("50", "p50_ms"), ("75", "p75_ms"), ("90", "p90_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.0+)?%\s+(\S+)\s*$", text, re.M)
        if m:
            r[key] = _ms(m.group(1))
        elif key in ("p50_ms", "p99_ms"):
            problems.append(f"no {pct}% latency (was --latency given?)")

    m = re.search(r"^\s+Latency\s+(\S+)\s+(\S+)\s+(\S+)", text, re.M)
    if m:
        r["avg_ms"], r["max_ms"] = _ms(m.group(1)), _ms(m.group(3))

    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        errs = dict(zip(("connect", "read", "write", "timeout"), map(int, m.groups())))
        r["socket_errors"] = errs
        if any(errs.values()):
            problems.append("socket errors: " + ", ".join(f"{k} {v}" for k, v in errs.items()))

    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m:
        r["non_2xx_3xx"] = int(m.group(1))
        if r["non_2xx_3xx"]:
            problems.append(f"{m.group(1)} non-2xx/3xx responses")

    return r, problems


def fmt_ms(v):
    return "n/a" if v is None else (f"{v * 1000:.0f}us" if v < 1 else f"{v:.2f}ms")


def cmd_check(args):
    r, problems = parse(args.file)
    line = (f"{r.get('rps', 0):>10.0f} req/s  p50 {fmt_ms(r.get('p50_ms'))}  "
            f"p99 {fmt_ms(r.get('p99_ms'))}  ({r.get('requests', 0)} requests)")
    if problems:
        print(line + "  ** " + "; ".join(problems), flush=True)
        return 1
    print(line, flush=True)
    return 0


def side(files):
    runs, problems = [], []
    for f in files:
        r, p = parse(f)
        runs.append(r)
        problems += [f"{os.path.basename(f)}: {x}" for x in p]

    def med(key):
        vals = [r[key] for r in runs if key in r]
        return statistics.median(vals) if vals else None

    return {
        "rounds": len(runs),
        "rps_median": med("rps"),
        "p50_ms_median": med("p50_ms"),
        "p99_ms_median": med("p99_ms"),
        "rps_min": min((r["rps"] for r in runs if "rps" in r), default=None),
        "rps_max": max((r["rps"] for r in runs if "rps" in r), default=None),
        "runs": runs,
    }, problems


def cmd_report(args):
    meta = {}
    for kv in args.meta or []:
        k, _, v = kv.partition("=")
        meta[k] = int(v) if v.isdigit() and k != "engine_commit" else v
    nginx, p1 = side(args.nginx)
    engine, p2 = side(args.engine)
    problems = p1 + p2
    ratio = None
    if nginx["rps_median"] and engine["rps_median"] is not None:
        ratio = engine["rps_median"] / nginx["rps_median"]
    met = ratio is not None and ratio >= args.target
    # Ratio of each (nginx, engine) pair of consecutive runs: shows how much
    # of the spread is machine noise shared by both sides.
    round_ratios = [e["rps"] / n["rps"] for n, e in zip(nginx["runs"], engine["runs"])
                    if n.get("rps") and "rps" in e]
    ok = not problems and ratio is not None

    w = meta.get("workers", "?")
    ws = f"{w} worker{'' if w == 1 else 's'}"
    print()
    print(f"== JollyJet core benchmark: GET /bench/fixed, {meta.get('body_bytes', 400)}-byte JSON body ==")
    print(f"   wrk -t{meta.get('threads', '?')} -c{meta.get('connections', '?')} "
          f"-d{meta.get('duration_s', '?')}s --latency, {nginx['rounds']}+{engine['rounds']} "
          f"alternating rounds, medians; {ws} each; {meta.get('cpus', '?')} CPUs shared with wrk")
    print(f"   {'':8} {'req/s':>10} {'p50':>9} {'p99':>9}   {'req/s per round':<}")
    for name, s in (("nginx", nginx), ("engine", engine)):
        rounds = " ".join(f"{r['rps']:.0f}" for r in s["runs"] if "rps" in r)
        rps = "n/a" if s["rps_median"] is None else f"{s['rps_median']:.0f}"
        print(f"   {name:8} {rps:>10} {fmt_ms(s['p50_ms_median']):>9} {fmt_ms(s['p99_ms_median']):>9}   {rounds}")
    if ratio is not None:
        verdict = "target met" if met else "TARGET MISSED"
        print(f"lua route vs nginx (same {meta.get('body_bytes', 400)}-byte body, {ws} each): "
              f"{ratio:.2f}x (target >= {args.target:.2f}) - {verdict}")
    if round_ratios:
        print(f"   per-round engine/nginx: {' '.join(f'{x:.2f}' for x in round_ratios)}"
              f" (median {statistics.median(round_ratios):.2f})")
    spread = max((s["rps_max"] / s["rps_min"] for s in (nginx, engine) if s["rps_min"]), default=1.0)
    if spread > 1.25:
        print(f"   note: noisy machine (a side's rounds differ by up to {spread:.2f}x); "
              f"rerun, or raise BENCH_ROUNDS / BENCH_DURATION")
    for p in problems:
        print(f"   measurement problem: {p}", file=sys.stderr)

    out = {
        "benchmark": "core",
        "route": "GET /bench/fixed",
        "target_ratio": args.target,
        "ratio": ratio,
        "round_ratios": round_ratios,
        "round_ratio_median": statistics.median(round_ratios) if round_ratios else None,
        "max_round_spread": spread,
        "target_met": met,
        "valid": ok,
        "problems": problems,
        "params": meta,
        "nginx": nginx,
        "engine": engine,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"   results: {args.out}")
    return 0 if ok else 1


def cmd_fetch(args):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=args.timeout)
    try:
        c.request("GET", args.path)
        r = c.getresponse()
        body = r.read()
    except (OSError, http.client.HTTPException) as e:
        print(f"fetch 127.0.0.1:{args.port}{args.path}: {e}", file=sys.stderr)
        return 1
    finally:
        c.close()
    if args.body:
        with open(args.body, "wb") as f:
            f.write(body)
    if args.headers:
        with open(args.headers, "w", encoding="latin-1") as f:
            for k, v in r.getheaders():
                f.write(f"{k}: {v}\n")
    print(r.status)
    return 0


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("file")
    r = sub.add_parser("report")
    r.add_argument("--out", required=True)
    r.add_argument("--target", type=float, default=0.9)
    r.add_argument("--meta", nargs="*")
    r.add_argument("--nginx", nargs="+", required=True)
    r.add_argument("--engine", nargs="+", required=True)
    g = sub.add_parser("fetch")
    g.add_argument("port", type=int)
    g.add_argument("path")
    g.add_argument("--body")
    g.add_argument("--headers")
    g.add_argument("--timeout", type=float, default=2.0)
    a = ap.parse_args()
    sys.exit({"check": cmd_check, "report": cmd_report, "fetch": cmd_fetch}[a.cmd](a))


if __name__ == "__main__":
    main()
