"""PostgreSQL down or slow (a cluster of this test's own, stopped and started
under the engine; runs in every pass, so db_pg.c also runs under ASan):
writes get a clear 503 JSON at once, reads are served from the cache where
the policy allows (fresh hits, and stale-if-error past the TTL), uncached
reads get a 503, and the engine recovers without a restart. A table lock
makes the database slow: writes end with a 503 after DB_TIMEOUT_MS, cached
reads stay fast, and the pool works again once the lock is gone.
Figures are printed."""
import json
import os
import subprocess
import time

from harness import BIN, Engine, Postgres, Redis, Runner, psql, wait_until

CACHE_POLICY = "return { ttl = { product = 1 }, jitter = 0, beta = 0, grace = 600 }\n"


def timed(fn, *args, **kw):
    t0 = time.monotonic()
    out = fn(*args, **kw)
    return out, (time.monotonic() - t0) * 1000


def patch(e, pid, stock):
    return e.json("PATCH", f"/api/products/{pid}", json.dumps({"stock": stock}))


def test_server_down_then_back(e, pg):
    # A worker trusts Redis only once it has replayed the invalidation
    # journal, which needs the database: every worker serves before the
    # outage (each connection may land on any worker).
    for _ in range(20):
        for pid in ("p-0001", "p-0002"):
            assert e.get(f"/api/products/{pid}")[0] == 200
    pg.stop()
    try:
        down(e)
    finally:
        pg.start()
    t0 = time.monotonic()
    wait_until(lambda: patch(e, "p-0001", 6)[0] == 200 and patch(e, "p-0001", 6)[0] == 200, 15, 0.1,
               what="writes succeed again")
    print(f"     server started again: writes succeed after {(time.monotonic() - t0) * 1000:.0f} ms, no restart")
    # every worker's pool is back (each request may land on any worker): a
    # worker whose pool was in its reconnect backoff (capped at 2 s) when the
    # server came back tries again when that backoff ends, so the run of 20
    # writes in a row is waited for, within a bound
    runs = []

    def twenty_in_a_row():
        sts = [patch(e, "p-0002", 10 + i)[0] for i in range(20)]
        runs.append(sts)
        return sts == [200] * 20

    wait_until(twenty_in_a_row, 10, 0.1, what="20 writes in a row on every worker")
    print(f"     every worker's pool back {(time.monotonic() - t0) * 1000:.0f} ms after the server started "
          f"({len(runs)} rounds of 20 writes)")
    wait_until(lambda: all(e.json("GET", "/health")[0] == 200 for _ in range(6)), 10, 0.1, what="healthy")
    st, hdrs, doc = e.json("GET", "/api/products/p-0001")
    assert st == 200 and doc["stock"] == 6, (st, doc)


def down(e):
    time.sleep(1.2)   # past the 1 s TTL: only stale-if-error can serve p-0001 now
    (st, hdrs, doc), ms = timed(patch, e, "p-0001", 5)
    print(f"     server stopped: PATCH -> {st} {doc} in {ms:.0f} ms")
    assert st == 503 and doc["error"] == "unavailable", (st, doc)
    assert hdrs.get("Content-Type", "").startswith("application/json"), hdrs
    assert ms < 2000, ms
    created, ms2 = timed(e.json, "POST", "/api/products",
                         json.dumps({"name": "Down", "price": 1, "category": "books"}))
    assert created[0] == 503, created
    stale = [e.get("/api/products/p-0001") for _ in range(10)]
    sources = {h.get("X-Cache") for _, h, _ in stale}
    print(f"     cached product past its TTL: {[s for s, _, _ in stale].count(200)}/10 served, X-Cache {sources}")
    assert all(s == 200 for s, _, _ in stale), [s for s, _, _ in stale]
    assert sources <= {"STALE", "HIT"} and "STALE" in sources, sources
    st, _, cold = e.json("GET", "/api/products/p-0099")   # never cached
    print(f"     uncached product: {st} {cold}")
    assert st == 503 and cold["error"] == "unavailable", (st, cold)
    hst, _, health = e.json("GET", "/health")
    assert hst == 503 and health["database"]["status"] == "down", (hst, health)


def test_slow_database_times_out_writes_and_recovers(e, pg, db_url):
    for _ in range(10):
        assert e.get("/api/products/p-0003")[0] == 200
    # hold an exclusive lock on products for 4 s: every statement on it waits
    locker = subprocess.Popen(["psql", db_url, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c",
                               "BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(lambda: psql(db_url, "SELECT count(*) FROM pg_locks WHERE relation = 'products'::regclass "
                                        "AND mode = 'AccessExclusiveLock' AND granted;\n")[0][0] == 1,
                   5, 0.05, what="the lock")
        (st, _, doc), ms = timed(patch, e, "p-0003", 1)
        print(f"     table locked: PATCH -> {st} in {ms:.0f} ms (DB_TIMEOUT_MS=1000)")
        assert st == 503 and doc["error"] == "unavailable", (st, doc)
        assert 900 <= ms < 3000, ms
        (st, hdrs, _), rms = timed(e.get, "/api/products/p-0003")
        print(f"     table locked: cached GET -> {st} {hdrs.get('X-Cache')} in {rms:.0f} ms")
        assert st == 200 and rms < 500, (st, rms)
    finally:
        locker.wait(timeout=30)
    assert locker.returncode == 0, locker.stderr.read()
    t0 = time.monotonic()
    wait_until(lambda: patch(e, "p-0003", 2)[0] == 200, 10, 0.05, what="writes after the lock")
    print(f"     lock released: writes succeed after {(time.monotonic() - t0) * 1000:.0f} ms")
    sts = [patch(e, "p-0003", 3 + i)[0] for i in range(20)]
    assert sts == [200] * 20, sts
    # the timed-out connection was reset: no backend is left waiting on the lock
    assert psql(db_url, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock';\n")[0][0] == 0


def test_bad_or_unreachable_database_url_stops_the_start(r):
    for url, expect in (("postgres://app:s3cret@127.0.0.1/x?sslmode=maybe", "DATABASE_URL: sslmode"),
                        ("mysql://app:s3cret@127.0.0.1/x", "DATABASE_URL: must start with postgres://"),
                        ("postgres://app:s3cret@127.0.0.1:1/x", "DATABASE_URL: migrations failed: cannot connect")):
        e = Engine(r.port, start=False, env={"DATABASE_URL": url})
        try:
            out = subprocess.run([BIN, "serve"], env=e.env, capture_output=True, text=True, timeout=60)
            print(f"     {url.replace('s3cret', '***')}: exit {out.returncode}: {out.stderr.strip()[:160]}")
            assert out.returncode == 2 and expect in out.stderr, (out.returncode, out.stderr)
            assert "s3cret" not in out.stderr, out.stderr
        finally:
            e.close()


def main():
    t = Runner()
    r = Redis()
    pg = Postgres()
    psql(pg.url(), "CREATE DATABASE outage;\n")
    db_url = pg.url("outage")
    e = Engine(r.port, workers=2, start=False, env={"DATABASE_URL": db_url, "DB_TIMEOUT_MS": "1000"})
    with open(os.path.join(e.policy_dir, "cache.lua"), "w") as f:
        f.write(CACHE_POLICY)
    e.start()
    try:
        t.run("server down then back", test_server_down_then_back, e, pg)
        t.run("slow database times out writes and recovers", test_slow_database_times_out_writes_and_recovers,
              e, pg, db_url)
        t.run("bad or unreachable database url stops the start", test_bad_or_unreachable_database_url_stops_the_start, r)
    finally:
        e.close()
        pg.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
