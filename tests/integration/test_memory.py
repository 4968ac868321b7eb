"""Memory: the RSS of every worker idle, after 200k requests and after 100
reloads, with a bound on growth (a leak test under a realistic mix).

The mix cycles over a fixed set of URLs (every seeded product on the C fast
path, list and search pages, Lua routes, 404s, misses of unknown ids), so
every cache (L1 LRUs, the response cache, the negative cache, Lua's
interned strings) is filled during the warm-up pass; after that, growth is
what the requests leak. Bounds (per worker, RSS from /proc/<pid>/status):

  * 200k requests after a 20k warm-up: at most 4 MiB. Each worker serves
    ~100k of them, so a leak of one small allocation per request (>= 48
    bytes with malloc's overhead) would pass 4.5 MiB; what remains below is
    allocator and Lua GC noise (about 1 MiB on this machine).
  * 100 reloads (SIGHUP, 100 ms apart, requests between): at most 8 MiB over
    the figure after the 200k requests. A generation is a whole Lua VM
    (~1.5 MiB with the shipped lua/ and policies/); if old generations were
    not freed, 100 of them would add > 100 MiB. The allowance covers the
    one or two generations alive at any time and the allocator keeping
    freed pages.

Under ASan+UBSan the allocator (quarantine, redzones, shadow memory) makes
RSS meaningless as a leak signal: the workload runs in full, the figures are
printed, and the bounds are skipped (LeakSanitizer checks at exit instead).
"""
import signal
import time

from harness import Engine, Redis, Runner, wait_until
from loadgen import Figures, blast, sanitized_build

FIG = Figures("test_memory")
SANITIZED = sanitized_build()
REQUESTS = 200_000
WARMUP = 20_000
RELOADS = 100
GROWTH_REQUESTS_MIB = 4.0
GROWTH_RELOADS_MIB = 8.0

PATHS = ([f"/api/products/p-{n:04d}" for n in range(1, 241)]
         + [f"/api/products?page={n}&limit=10" for n in range(1, 25)]
         + [f"/api/products?category=electronics&page={n}&limit=5" for n in range(1, 5)]
         + [f"/api/products?search=pro&page={n}" for n in range(1, 4)]
         + [f"/test/echo?i={n}" for n in range(50)]
         + [f"/api/products/p-9{n:03d}" for n in range(40)]        # unknown ids: negative cache
         + ["/test/ok", "/health", "/api/nope", "/api/products/bad%20id"])


def workers_of(e):
    pid = e.proc.pid
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return sorted(int(x) for x in f.read().split())


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def rss_all(e):
    return {p: rss_kib(p) for p in workers_of(e)}


def mib(kib):
    return round(kib / 1024.0, 2)


def run_mix(e, n):
    statuses, errors, secs = blast(e.port, PATHS, n, conns=4, depth=32, timeout=60)
    assert not errors, errors
    assert 0 not in statuses and 500 not in statuses, statuses
    return statuses, secs


def test_rss_idle_after_200k_requests_and_after_100_reloads():
    r = Redis()
    e = Engine(r.port, workers=2)
    try:
        workers = wait_until(lambda: (lambda w: w if len(w) == 2 else None)(workers_of(e)), 5, what="2 workers")
        time.sleep(0.5)
        idle = rss_all(e)
        tasks0 = max(e.json("GET", "/test/info")[2]["tasks"] for _ in range(6))
        run_mix(e, WARMUP)
        warm = rss_all(e)
        statuses, secs = run_mix(e, REQUESTS)
        after_req = rss_all(e)
        print(f"     {REQUESTS} requests in {secs:.1f} s ({REQUESTS / secs:.0f}/s): {statuses}")
        g0 = e.json("GET", "/test/policy")[2]["generation"]
        t0 = time.monotonic()
        for k in range(RELOADS):
            e.signal(signal.SIGHUP)
            run_mix(e, 200)   # requests on every generation (~100 ms each)
            time.sleep(max(0, t0 + (k + 1) * 0.1 - time.monotonic()))
        wait_until(lambda: all(e.json("GET", "/test/policy")[2]["generation"] >= g0 + 10 for _ in range(6)), 10,
                   what="generations moved on")
        run_mix(e, 2000)
        time.sleep(1.0)   # the last old generation closes when its requests end
        after_rel = rss_all(e)
        gens = sorted({e.json("GET", "/test/policy")[2]["generation"] for _ in range(6)})
        # old generations' background loops ended at their reload (core.idle)
        tasks1 = max(e.json("GET", "/test/info")[2]["tasks"] for _ in range(6))
        assert workers_of(e) == workers, "a worker was restarted during the test"

        grow_req = max(after_req[p] - warm[p] for p in workers)
        grow_rel = max(after_rel[p] - after_req[p] for p in workers)
        for p in workers:
            print(f"     worker {p}: idle {mib(idle[p])} MiB, warm {mib(warm[p])}, "
                  f"after {REQUESTS} requests {mib(after_req[p])}, after {RELOADS} reloads {mib(after_rel[p])}"
                  f" (generation {g0} -> {gens})")
        sc = "RSS per worker (2 workers)"
        why = "ASan: bound skipped (RSS meaningless under the sanitizer allocator)" if SANITIZED else None
        FIG.add(sc, "idle MiB (per worker)", " / ".join(str(mib(idle[p])) for p in workers), "", None)
        FIG.add(sc, f"after {WARMUP // 1000}k warm-up MiB", " / ".join(str(mib(warm[p])) for p in workers), "", None)
        ok1 = FIG.add(sc, f"growth over {REQUESTS // 1000}k requests MiB (max worker)", mib(grow_req),
                      why or f"<= {GROWTH_REQUESTS_MIB}", None if SANITIZED else mib(grow_req) <= GROWTH_REQUESTS_MIB)
        ok2 = FIG.add(sc, f"growth over {RELOADS} reloads MiB (max worker)", mib(grow_rel),
                      why or f"<= {GROWTH_RELOADS_MIB}", None if SANITIZED else mib(grow_rel) <= GROWTH_RELOADS_MIB)
        FIG.add(sc, "request rate (pipelined, 4 conns)", f"{REQUESTS / secs:.0f}/s", "", None)
        ok3 = FIG.add(sc, "live Lua tasks per worker, idle -> after reloads", f"{tasks0} -> {tasks1}",
                      "no growth", tasks1 <= tasks0)
        assert ok3, (tasks0, tasks1)
        if SANITIZED:
            print("     ASan+UBSan build: RSS bounds skipped (quarantine and shadow memory dominate RSS); "
                  "LeakSanitizer reports leaks at exit")
            return
        assert ok1, (warm, after_req)
        assert ok2, (after_req, after_rel)
    finally:
        e.close()
        r.close()


def main():
    t = Runner()
    t.run("RSS per worker: idle, after 200k requests, after 100 reloads; growth bounded",
          test_rss_idle_after_200k_requests_and_after_100_reloads)
    t.done()


if __name__ == "__main__":
    main()
