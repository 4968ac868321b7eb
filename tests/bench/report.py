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

  For products.sh and zipf.sh:
  report.py metrics PORT OUT          GET /api/cache/metrics into OUT (exit 1 unless 200)
  report.py save-products PORT IDS DIR
      GET /api/products/<id> for each id of the file IDS; the bodies go to
      DIR/api/products/<id> (what nginx serves); exit 1 unless all are 200 JSON.
  report.py verify PORT IDS DIR [--x-cache HIT]
      The server answers each id with 200, application/json and the bytes
      of DIR/api/products/<id> (and that X-Cache).
  report.py seed DB N      insert products p-NNNN up to N (clones of the seeded rows)
  report.py dbstat DB      prints "count sum(version)" of the products table
  report.py products ...   the products report (see cmd_products)
  report.py zipf ...       the zipf report (see cmd_zipf)
"""
import argparse
import http.client
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


# ------------------------------------------------ products.sh / zipf.sh


def _meta(kvs):
    meta = {}
    for kv in kvs or []:
        k, _, v = kv.partition("=")
        meta[k] = int(v) if v.isdigit() and k != "engine_commit" else v
    return meta


def _write_json(path, out):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(out, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    print(f"   results: {path}")


def _get(conn, path):
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()


def _ids(path):
    with open(path, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def cmd_metrics(args):
    c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=5)
    try:
        status, _, body = _get(c, "/api/cache/metrics")
    except (OSError, http.client.HTTPException) as e:
        print(f"metrics 127.0.0.1:{args.port}: {e}", file=sys.stderr)
        return 1
    finally:
        c.close()
    try:
        m = json.loads(body)
    except ValueError:
        m = None
    if status != 200 or not isinstance(m, dict) or m.get("success") is not True:
        print(f"metrics 127.0.0.1:{args.port}: HTTP {status} {body[:200]!r}", file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(m, f)
    return 0


def cmd_save_products(args):
    ids = _ids(args.ids)
    d = os.path.join(args.dir, "api", "products")
    os.makedirs(d, exist_ok=True)
    os.chmod(os.path.join(args.dir, "api"), 0o755)
    os.chmod(d, 0o755)
    c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
    total = 0
    try:
        for pid in ids:
            status, h, body = _get(c, "/api/products/" + pid)
            if status != 200 or h.get("content-type") != "application/json":
                print(f"GET /api/products/{pid}: {status} {h.get('content-type')} {body[:200]!r}",
                      file=sys.stderr)
                return 1
            json.loads(body)
            f = os.path.join(d, pid)
            with open(f, "wb") as out:
                out.write(body)
            os.chmod(f, 0o644)
            total += len(body)
    except (OSError, http.client.HTTPException, ValueError) as e:
        print(f"save-products: {e}", file=sys.stderr)
        return 1
    finally:
        c.close()
    print(f"{len(ids)} {total}")
    return 0


def cmd_verify(args):
    ids = _ids(args.ids)
    c = http.client.HTTPConnection("127.0.0.1", args.port, timeout=10)
    caches = {}
    try:
        for pid in ids:
            status, h, body = _get(c, "/api/products/" + pid)
            with open(os.path.join(args.dir, "api", "products", pid), "rb") as f:
                want = f.read()
            if status != 200:
                print(f"{args.name}: GET /api/products/{pid} answered {status}", file=sys.stderr)
                return 1
            if h.get("content-type") != "application/json":
                print(f"{args.name}: GET /api/products/{pid}: Content-Type {h.get('content-type')!r}",
                      file=sys.stderr)
                return 1
            if body != want:
                print(f"{args.name}: GET /api/products/{pid}: body differs from the nginx file "
                      f"({len(body)} bytes, expected {len(want)})", file=sys.stderr)
                return 1
            xc = h.get("x-cache")
            caches[xc] = caches.get(xc, 0) + 1
            if args.x_cache and xc != args.x_cache:
                print(f"{args.name}: GET /api/products/{pid}: X-Cache {xc!r}, expected {args.x_cache}",
                      file=sys.stderr)
                return 1
    except (OSError, http.client.HTTPException) as e:
        print(f"{args.name}: {e}", file=sys.stderr)
        return 1
    finally:
        c.close()
    seen = ", ".join(f"X-Cache {k}: {v}" for k, v in caches.items() if k) or "no X-Cache"
    print(f"{args.name}: {len(ids)} product(s) answered 200 application/json, same bytes as nginx's files ({seen})")
    return 0


def cmd_seed(args):
    """Products p-0001 .. p-N: the missing ones are clones of the seeded rows
    (same descriptions, prices, images, so the same JSON sizes), with their
    own id, a unique name, some stock and fixed timestamps."""
    import sqlite3
    con = sqlite3.connect(args.db, timeout=30)
    try:
        con.execute("PRAGMA busy_timeout = 30000")
        base = con.execute("SELECT name, description, price_cents, category, images FROM products "
                           "ORDER BY id").fetchall()
        if not base:
            print(f"seed: no products in {args.db} (migrations not applied?)", file=sys.stderr)
            return 1
        have = {r[0] for r in con.execute("SELECT id FROM products")}
        rows = []
        for n in range(1, args.n + 1):
            pid = f"p-{n:04d}"
            if pid in have:
                continue
            name, desc, price, cat, images = base[n % len(base)]
            ts = "2025-%02d-%02dT%02d:%02d:00.000Z" % (1 + n % 12, 1 + n % 28, n % 24, n % 60)
            rows.append((pid, f"{name} #{n}", desc, price, (n * 37) % 120, cat, images, 1, 0, 1, ts, ts))
        with con:
            con.executemany("INSERT INTO products (id, name, description, price_cents, stock, category, "
                            "images, is_active, wishlist_count, version, created_at, updated_at) "
                            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        ids = [f"p-{n:04d}" for n in range(1, args.n + 1)]
        found = 0
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            found += con.execute(f"SELECT count(*) FROM products WHERE id IN ({','.join('?' * len(chunk))})",
                                 chunk).fetchone()[0]
    finally:
        con.close()
    if found != args.n:
        print(f"seed: only {found} of p-0001..p-{args.n:04d} exist", file=sys.stderr)
        return 1
    print(f"{len(rows)} {found}")
    return 0


def cmd_dbstat(args):
    import sqlite3
    con = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True, timeout=30)
    try:
        con.execute("PRAGMA busy_timeout = 30000")
        n, v = con.execute("SELECT count(*), coalesce(sum(version), 0) FROM products").fetchone()
    finally:
        con.close()
    print(n, v)
    return 0


_COUNTERS = ("cacheHits", "cacheMisses", "l1Hits", "l2Hits", "loaderCalls", "staleReads",
             "coalescedWaits", "leaseWaits", "bypassed", "invalidations", "staleFillsRefused",
             "redisErrors", "loaderErrors", "journaledInvalidations", "earlyRefreshes")


def _load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _delta(before, after):
    b, a = _load_json(before), _load_json(after)
    return {k: a.get(k, 0) - b.get(k, 0) for k in _COUNTERS}


def _pct(part, whole):
    return None if not whole else 100.0 * part / whole


def _cpu_lines(path):
    """Lines "NAME SERVER_USER SERVER_SYS REDIS_USER REDIS_SYS" (clock ticks)."""
    out = {}
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                p = line.split()
                if len(p) == 5:
                    out[p[0]] = tuple(int(x) for x in p[1:])
    return out


def _cpu_per_req(r, t, clk_tck):
    """Adds CPU microseconds per request of the server and of redis-server."""
    n = r.get("requests")
    if not t or not n:
        return
    us = 1e6 / clk_tck / n
    r["server_cpu_us_per_req"] = (t[0] + t[1]) * us
    r["server_user_us_per_req"] = t[0] * us
    r["server_sys_us_per_req"] = t[1] * us
    r["redis_cpu_us_per_req"] = (t[2] + t[3]) * us


def cmd_products(args):
    meta = _meta(args.meta)
    cpu = _cpu_lines(args.cpu)
    problems = list(args.problem)
    sides = {}
    for name, files in (("nginx", args.nginx), ("engine-redis", args.redis), ("engine-l1", args.l1)):
        s, p = side(files)
        problems += p
        for f, r in zip(files, s["runs"]):
            _cpu_per_req(r, cpu.get(os.path.basename(f)[:-4] if f.endswith(".txt") else os.path.basename(f)),
                         args.clk_tck)
        for key in ("server_cpu_us_per_req", "server_user_us_per_req", "server_sys_us_per_req",
                    "redis_cpu_us_per_req"):
            vals = [r[key] for r in s["runs"] if key in r]
            s[key + "_median"] = statistics.median(vals) if vals else None
        s["requests_total"] = sum(r.get("requests", 0) for r in s["runs"])
        sides[name] = s

    cache = {"engine-redis": _delta(*args.metrics_redis), "engine-l1": _delta(*args.metrics_l1)}
    for name, d in cache.items():
        d["hit_ratio_pct"] = _pct(d["cacheHits"], d["cacheHits"] + d["cacheMisses"])
        d["l1_share_pct"] = _pct(d["l1Hits"], d["l1Hits"] + d["l2Hits"])
        d["wrk_requests"] = sides[name]["requests_total"]
        if d["hit_ratio_pct"] is None or d["hit_ratio_pct"] < 99.0:
            problems.append(f"{name}: the measured URL was not served from the cache "
                            f"(hits +{d['cacheHits']}, misses +{d['cacheMisses']})")
        if d["cacheHits"] < 0.9 * d["wrk_requests"]:
            problems.append(f"{name}: cache hits (+{d['cacheHits']}) fall short of wrk's "
                            f"{d['wrk_requests']} requests")
    if cache["engine-redis"]["l1Hits"] != 0:
        problems.append(f"engine-redis: {cache['engine-redis']['l1Hits']} L1 hits: the shipped policy "
                        "does not keep product off L1 ('strong'); the 'from Redis' figure is not that")
    if (cache["engine-l1"]["l1_share_pct"] or 0) < 90.0:
        problems.append(f"engine-l1: only {cache['engine-l1']['l1_share_pct'] or 0:.1f} % of the hits came "
                        "from L1")

    nginx = sides["nginx"]
    ratios, round_ratios, met = {}, {}, {}
    for name, target in (("engine-redis", args.target_redis), ("engine-l1", args.target_l1)):
        s = sides[name]
        ratios[name] = (s["rps_median"] / nginx["rps_median"]
                        if nginx["rps_median"] and s["rps_median"] is not None else None)
        met[name] = ratios[name] is not None and ratios[name] >= target
        round_ratios[name] = [e["rps"] / n["rps"] for n, e in zip(nginx["runs"], s["runs"])
                              if n.get("rps") and "rps" in e]
    ok = not problems and all(v is not None for v in ratios.values())

    w = meta.get("workers", "?")
    ws = f"{w} worker{'' if w == 1 else 's'}"
    nids = meta.get("ids", 1)
    what = (f"GET /api/products/{meta.get('hot_id', '?')} (one hot id, {meta.get('body_bytes', '?')}-byte product JSON)"
            if nids == 1 else f"GET /api/products/{{id}} cycling over {nids} ids "
                              f"({meta.get('body_bytes', '?')} bytes of product JSON in all)")
    print()
    print(f"== JollyJet products benchmark: {what} vs nginx serving the same bytes ==")
    print(f"   wrk -t{meta.get('threads', '?')} -c{meta.get('connections', '?')} -d{meta.get('duration_s', '?')}s "
          f"--latency, {nginx['rounds']} alternating rounds (nginx, redis, l1), medians; {ws} each; "
          f"{meta.get('cpus', '?')} CPUs shared with wrk and redis-server")
    print(f"   {'':13} {'req/s':>8} {'p50':>9} {'p99':>9}  {'cpu us/req: server (user)':>25} {'redis':>6}"
          f"   req/s per round")
    for name, s in sides.items():
        rounds = " ".join(f"{r['rps']:.0f}" for r in s["runs"] if "rps" in r)
        rps = "n/a" if s["rps_median"] is None else f"{s['rps_median']:.0f}"
        sc, su = s["server_cpu_us_per_req_median"], s["server_user_us_per_req_median"]
        rc = s["redis_cpu_us_per_req_median"]
        cpu_s = "n/a" if sc is None else f"{sc:.1f} ({su:.1f})"
        print(f"   {name:13} {rps:>8} {fmt_ms(s['p50_ms_median']):>9} {fmt_ms(s['p99_ms_median']):>9}  "
              f"{cpu_s:>25} {'' if rc is None or name == 'nginx' else f'{rc:.1f}':>6}   {rounds}")
    labels = {"engine-redis": "from Redis, L1 off (product \"strong\", the shipped policy)",
              "engine-l1": f"from L1 (product \"bounded\", max_lag_ms {meta.get('max_lag_ms', 1000)})"}
    targets = {"engine-redis": args.target_redis, "engine-l1": args.target_l1}
    for name in ("engine-redis", "engine-l1"):
        if ratios[name] is not None:
            verdict = "target met" if met[name] else "TARGET MISSED"
            print(f"{labels[name]} vs nginx: {ratios[name]:.2f}x (target >= {targets[name]:.2f}) - {verdict}")
    cpu_ratio = {}
    nc = nginx.get("server_cpu_us_per_req_median")
    for name in ("engine-redis", "engine-l1"):
        s = sides[name]
        if nc and s.get("server_cpu_us_per_req_median"):
            cpu_ratio[name] = nc / (s["server_cpu_us_per_req_median"] + (s["redis_cpu_us_per_req_median"] or 0))
    if cpu_ratio:
        print("   cpu per request, nginx / engine (+ redis-server): " + "; ".join(
            f"{n.split('-')[1]} {x:.2f}x" for n, x in cpu_ratio.items())
            + " (less sensitive to other load on the machine than req/s)")
    print("   per-round vs nginx: " + "; ".join(
        f"{n.split('-')[1]} {' '.join(f'{x:.2f}' for x in rr)}" for n, rr in round_ratios.items() if rr))
    for name, d in cache.items():
        share = d["l1_share_pct"]
        print(f"   {name} cache over the measured runs: hits +{d['cacheHits']} "
              f"({d['hit_ratio_pct'] or 0:.2f} % of lookups; wrk counted {d['wrk_requests']} requests), "
              f"L1 +{d['l1Hits']} / L2 +{d['l2Hits']}"
              f"{'' if share is None else f' ({share:.2f} % from L1)'}, loader calls +{d['loaderCalls']}")
    spread = max((s["rps_max"] / s["rps_min"] for s in sides.values() if s["rps_min"]), default=1.0)
    if spread > 1.25:
        print(f"   note: noisy machine (a side's rounds differ by up to {spread:.2f}x); "
              f"rerun, or raise BENCH_ROUNDS / BENCH_DURATION")
    for p in problems:
        print(f"   measurement problem: {p}", file=sys.stderr)

    _write_json(args.out, {
        "benchmark": "products",
        "route": "GET /api/products/{id}",
        "targets": {"engine-redis": args.target_redis, "engine-l1": args.target_l1},
        "ratios": ratios,
        "round_ratios": round_ratios,
        "cpu_per_request_ratios": cpu_ratio,
        "target_met": met,
        "max_round_spread": spread,
        "valid": ok,
        "problems": problems,
        "params": meta,
        "cache": cache,
        "nginx": sides["nginx"],
        "engine_redis": sides["engine-redis"],
        "engine_l1": sides["engine-l1"],
    })
    return 0 if ok else 1


def _dbstat(path):
    with open(path, encoding="utf-8") as f:
        n, v = f.read().split()
    return int(n), int(v)


def _zipf_script(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        m = re.search(r"^zipf-script: gets=(\d+) puts=(\d+)", f.read(), re.M)
    return (int(m.group(1)), int(m.group(2))) if m else (None, None)


def _zipf_phase(wrk_file, before, after, db_before, db_after):
    r, problems = parse(wrk_file)
    d = _delta(before, after)
    gets, puts = _zipf_script(wrk_file)
    if gets is None:
        problems.append("no 'zipf-script:' line (did the wrk script run?)")
    n0, v0 = _dbstat(db_before)
    n1, v1 = _dbstat(db_after)
    writes = v1 - v0            # each successful PUT bumps one row's version by 1
    req = r.get("requests") or 0
    lookups = d["cacheHits"] + d["cacheMisses"]
    ph = {
        "wrk": r,
        "requests": req,
        "rps": r.get("rps"),
        "p50_ms": r.get("p50_ms"),
        "p99_ms": r.get("p99_ms"),
        "non_2xx_3xx": r.get("non_2xx_3xx", 0),
        "script_gets": gets,
        "script_puts": puts,
        "writes_committed": writes,
        "products": n1,
        "cache": d,
        "hit_ratio_pct": _pct(d["cacheHits"], lookups),
        # Coalesced waiters (same key, same worker) and lease waiters (other
        # worker) count as misses but are answered with the one fill's value
        # (X-Cache: HIT): the share of lookups that needed no database read.
        "no_db_read_pct": _pct(lookups - d["loaderCalls"], lookups),
        "db_reads": d["loaderCalls"],
        "db_reads_per_1000": d["loaderCalls"] * 1000 / req if req else None,
        # catalog.update: SELECT (catalog.get), then UPDATE + SELECT in one
        # db.batch transaction; a journaled invalidation (Redis down) adds an INSERT.
        "db_write_statements": 3 * writes + d["journaledInvalidations"],
    }
    ph["db_write_statements_per_1000"] = ph["db_write_statements"] * 1000 / req if req else None
    ph["db_statements_per_1000"] = ((ph["db_reads"] + ph["db_write_statements"]) * 1000 / req) if req else None
    if n1 != n0:
        problems.append(f"the product count changed ({n0} -> {n1})")
    return ph, problems


def cmd_zipf(args):
    meta = _meta(args.meta)
    problems = list(args.problem)
    m0, m1, m2 = args.metrics
    d0, d1, d2 = args.db
    run, p = _zipf_phase(args.wrk, m1, m2, d1, d2)
    problems += p
    warm = None
    if args.warmup_wrk:
        warm, _ = _zipf_phase(args.warmup_wrk, m0, m1, d0, d1)
    _cpu_per_req(run, _cpu_lines(args.cpu).get("measured"), args.clk_tck)
    hit_met = run["hit_ratio_pct"] is not None and run["hit_ratio_pct"] > args.target_hit
    db_met = run["db_reads_per_1000"] is not None and run["db_reads_per_1000"] < args.target_db
    ok = not problems and run["hit_ratio_pct"] is not None and run["db_reads_per_1000"] is not None

    def v(x, f="{:.1f}"):
        return "n/a" if x is None else f.format(x)

    c = run["cache"]
    mode = meta.get("consistency", "?")
    l1_note = (f"L1 hits +{c['l1Hits']}" if c["l1Hits"] else "no L1 hits")
    mode = (f"the shipped policy ({l1_note})" if mode == "shipped" else f"product \"{mode}\" ({l1_note})")
    print()
    print(f"== JollyJet zipf benchmark: Zipf(s={meta.get('s', '?')}) over {meta.get('products', '?')} products, "
          f"{100 - float(meta.get('write_pct', 5)):g} % GET / {meta.get('write_pct', 5)} % PUT ==")
    print(f"   wrk -t{meta.get('threads', '?')} -c{meta.get('connections', '?')} -d{meta.get('duration_s', '?')}s "
          f"--latency -s zipf.lua; {meta.get('workers', '?')} workers, {mode}; "
          f"measured after a {meta.get('warmup_s', '?')} s warm-up with the same mix; "
          f"{meta.get('cpus', '?')} CPUs shared with wrk and redis-server")
    print(f"   requests          {run['requests']}  ({v(run['rps'], '{:.0f}')} req/s; the script sent "
          f"{run['script_gets']} GET + {run['script_puts']} PUT; {run['writes_committed']} writes committed)")
    print(f"   latency           p50 {fmt_ms(run['p50_ms'])}  p99 {fmt_ms(run['p99_ms'])}  (GET and PUT together)")
    print(f"   non-2xx           {run['non_2xx_3xx']}")
    print(f"   hit ratio         {v(run['hit_ratio_pct'], '{:.2f}')} %  (target > {args.target_hit:g} %) - "
          f"{'target met' if hit_met else 'TARGET MISSED'}   [cacheHits +{c['cacheHits']}, "
          f"cacheMisses +{c['cacheMisses']}]")
    print(f"   lookups without a db read {v(run['no_db_read_pct'], '{:.2f}')} %  [misses +{c['cacheMisses']} = "
          f"fills +{c['loaderCalls']} + requests that waited for another request's fill of the same key "
          f"(coalesced +{c['coalescedWaits']} in a worker, the rest across workers)]")
    print(f"   db reads /1000    {v(run['db_reads_per_1000'], '{:.2f}')}  (target < {args.target_db:g}) - "
          f"{'target met' if db_met else 'TARGET MISSED'}   [loaderCalls +{c['loaderCalls']}: one SELECT "
          f"per cache fill]")
    print(f"   db writes /1000   {v(run['db_write_statements_per_1000'], '{:.2f}')}  [{run['db_write_statements']}"
          f" statements: 3 per committed PUT (SELECT; UPDATE + SELECT in one transaction)"
          f"{', + journaled invalidations' if c['journaledInvalidations'] else ''}]")
    print(f"   db all /1000      {v(run['db_statements_per_1000'], '{:.2f}')}")
    if "server_cpu_us_per_req" in run:
        print(f"   cpu per request   engine {run['server_cpu_us_per_req']:.1f} us "
              f"({run['server_user_us_per_req']:.1f} user), redis-server {run['redis_cpu_us_per_req']:.1f} us")
    other = {k: c[k] for k in ("leaseWaits", "staleFillsRefused", "invalidations",
                               "bypassed", "redisErrors", "loaderErrors") if c[k]}
    if other:
        print("   cache events      " + ", ".join(f"{k} +{x}" for k, x in other.items()))
    if warm:
        print(f"   warm-up (from a cold cache, not counted): {warm['requests']} requests, hit ratio "
              f"{v(warm['hit_ratio_pct'], '{:.2f}')} %, db reads /1000 {v(warm['db_reads_per_1000'], '{:.2f}')}, "
              f"p99 {fmt_ms(warm['p99_ms'])}, non-2xx {warm['non_2xx_3xx']}")
    for p in problems:
        print(f"   measurement problem: {p}", file=sys.stderr)

    _write_json(args.out, {
        "benchmark": "zipf",
        "targets": {"hit_ratio_pct_above": args.target_hit, "db_reads_per_1000_below": args.target_db},
        "target_met": {"hit_ratio": hit_met, "db_reads": db_met},
        "valid": ok,
        "problems": problems,
        "params": meta,
        "measured": run,
        "warmup": warm,
        "counted": {
            "db_reads": "loaderCalls delta of GET /api/cache/metrics: each is one cache fill, "
                        "one SELECT by id (catalog.get)",
            "db_write_statements": "3 per committed PUT (catalog.update: SELECT by id, then UPDATE + SELECT "
                                   "in one db.batch transaction), committed PUTs = growth of sum(version), "
                                   "plus journaled invalidations (0 while Redis is up)",
        },
    })
    return 0 if ok else 1


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
    m = sub.add_parser("metrics")
    m.add_argument("port", type=int)
    m.add_argument("out")
    sp = sub.add_parser("save-products")
    sp.add_argument("port", type=int)
    sp.add_argument("ids")
    sp.add_argument("dir")
    v = sub.add_parser("verify")
    v.add_argument("port", type=int)
    v.add_argument("ids")
    v.add_argument("dir")
    v.add_argument("--x-cache")
    v.add_argument("--name", default="server")
    sd = sub.add_parser("seed")
    sd.add_argument("db")
    sd.add_argument("n", type=int)
    ds = sub.add_parser("dbstat")
    ds.add_argument("db")
    p = sub.add_parser("products")
    p.add_argument("--out", required=True)
    p.add_argument("--meta", nargs="*")
    p.add_argument("--target-redis", type=float, default=0.9)
    p.add_argument("--target-l1", type=float, default=1.0)
    p.add_argument("--nginx", nargs="+", required=True)
    p.add_argument("--redis", nargs="+", required=True)
    p.add_argument("--l1", nargs="+", required=True)
    p.add_argument("--cpu", help="lines: wrk-output-basename server-user server-sys redis-user redis-sys (ticks)")
    p.add_argument("--clk-tck", type=int, default=100)
    p.add_argument("--metrics-redis", nargs=2, metavar=("BEFORE", "AFTER"), required=True)
    p.add_argument("--metrics-l1", nargs=2, metavar=("BEFORE", "AFTER"), required=True)
    p.add_argument("--problem", action="append", default=[])
    z = sub.add_parser("zipf")
    z.add_argument("--out", required=True)
    z.add_argument("--meta", nargs="*")
    z.add_argument("--wrk", required=True)
    z.add_argument("--warmup-wrk")
    z.add_argument("--metrics", nargs=3, metavar=("BEFORE_WARMUP", "BEFORE", "AFTER"), required=True)
    z.add_argument("--db", nargs=3, metavar=("BEFORE_WARMUP", "BEFORE", "AFTER"), required=True,
                   help='files holding "count sum(version)"')
    z.add_argument("--target-hit", type=float, default=95.0)
    z.add_argument("--target-db", type=float, default=50.0)
    z.add_argument("--cpu", help="one line: measured server-user server-sys redis-user redis-sys (ticks)")
    z.add_argument("--clk-tck", type=int, default=100)
    z.add_argument("--problem", action="append", default=[])
    a = ap.parse_args()
    sys.exit({"check": cmd_check, "report": cmd_report, "fetch": cmd_fetch, "metrics": cmd_metrics,
              "save-products": cmd_save_products, "verify": cmd_verify, "seed": cmd_seed,
              "dbstat": cmd_dbstat, "products": cmd_products, "zipf": cmd_zipf}[a.cmd](a))


if __name__ == "__main__":
    main()
