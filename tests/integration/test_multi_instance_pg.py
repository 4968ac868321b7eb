"""Two engine instances (2 workers each) on one database and one Redis, the
multi-instance setup PostgreSQL is for (DATABASE_URL; the PostgreSQL pass of
make test). In the SQLite pass the two instances share one database file,
which is the single-host form of the same setup, and the same guarantees hold.

- 1000 concurrent GETs of a cold product spread over both: exactly one
  database query between them (the fill lease is cluster-wide);
- a write on instance A: instance B's next read sees it (0 stale in 200);
- writes from both at once: no lost update (every version increment and
  every wishlist count lands).
Figures are printed."""
import json
import os
import re
import resource
import socket
import threading

from harness import Engine, Redis, Runner, db_sql, first_responses, wait_until

BACKEND = "PostgreSQL" if os.environ.get("JJ_TEST_DATABASE_URL") else "SQLite (one shared file)"
QUIET = "return { verifier = { enabled = false }, alerts = { enabled = false } }\n"


def db_queries(e):
    """Every database statement instance e ran (all workers, all kinds)."""
    text = e.get("/metrics")[2].decode()
    return sum(int(float(v)) for v in re.findall(r'^jollyjet_db_queries_total\{[^}]*\} (\S+)$', text, re.M))


def loader_calls(e):
    return e.json("GET", "/api/cache/metrics")[2]["namespaces"].get("product", {}).get("loaderCalls", 0)


def burst(targets, method, paths, body=b""):
    """Every connection opened first, then every request sent, then every
    response read: the requests really are in flight together. targets[i]
    serves paths[i]."""
    socks = [socket.create_connection(("127.0.0.1", e.port), timeout=30) for e in targets]
    for s, p in zip(socks, paths):
        head = (f"{method} {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        s.sendall(head.encode() + body)
    return first_responses(socks)


def start_pair(r):
    engines = []
    shared = None
    for _ in range(2):
        e = Engine(r.port, workers=2, start=False,
                   env={"REDIS_KEY_PREFIX": "mi%d:" % os.getpid(), **({"DB_PATH": shared} if shared else {})})
        shared = e.env["DB_PATH"]
        with open(os.path.join(e.policy_dir, "monitoring.lua"), "w") as f:
            f.write(QUIET)   # no verifier rounds: every database query below is the test's
        e.start()
        engines.append(e)
    a, b = engines
    assert a.env.get("DATABASE_URL") == b.env.get("DATABASE_URL") and a.env["DB_PATH"] == b.env["DB_PATH"]
    return a, b


def test_cold_stampede_across_instances_costs_one_query(a, b):
    pid = "p-0150"
    # Every worker first replays the invalidation journal once (one query
    # when it first trusts Redis): 100 other cold products, 50 connections
    # per instance, reach every worker before the measured burst.
    warm = burst([(a, b)[i % 2] for i in range(100)], "GET", [f"/api/products/p-{i + 1:04d}" for i in range(100)])
    assert {st for st, _, _ in warm} == {200}
    q0, l0 = db_queries(a) + db_queries(b), loader_calls(a) + loader_calls(b)
    n = 1000
    res = burst([(a, b)[i % 2] for i in range(n)], "GET", [f"/api/products/{pid}"] * n)
    q1, l1 = db_queries(a) + db_queries(b), loader_calls(a) + loader_calls(b)
    statuses = {st for st, _, _ in res}
    versions = {json.loads(body)["version"] for _, _, body in res}
    sources = [h.get("x-cache") for _, h, _ in res]
    print(f"     [{BACKEND}] {n} concurrent cold GETs over 2 instances x 2 workers: "
          f"{q1 - q0} database quer{'y' if q1 - q0 == 1 else 'ies'}, {l1 - l0} loader call(s); "
          f"MISS {sources.count('MISS')}, HIT {sources.count('HIT')}, statuses {sorted(statuses)}")
    assert statuses == {200}, statuses
    assert len(versions) == 1, versions
    assert l1 - l0 == 1, l1 - l0
    assert q1 - q0 == 1, q1 - q0


def test_a_write_on_one_instance_is_read_on_the_other(a, b):
    pid = "p-0151"
    assert b.get(f"/api/products/{pid}")[0] == 200   # cached on B (L1 and Redis)
    stale = 0
    tries = 200
    for i in range(tries):
        writer, reader = (a, b) if i % 2 == 0 else (b, a)
        st, _, doc = writer.json("PATCH", f"/api/products/{pid}", json.dumps({"stock": 1000 + i}))
        assert st == 200, (st, doc)
        st, _, seen = reader.json("GET", f"/api/products/{pid}")
        assert st == 200, st
        if seen["stock"] != 1000 + i or seen["version"] != doc["version"]:
            stale += 1
    print(f"     [{BACKEND}] {tries} writes, each read at once on the other instance: {stale} stale")
    assert stale == 0, stale


def test_writes_from_both_instances_lose_no_update(a, b):
    pid = "p-0152"
    v0 = a.json("GET", f"/api/products/{pid}")[2]["version"]
    n = 200
    # wishlist toggles from fresh sessions: each adds one to wishlistCount and to version
    res = burst([(a, b)[i % 2] for i in range(n)], "POST", [f"/api/products/{pid}/wishlist"] * n)
    st = {s for s, _, _ in res}
    assert st == {200}, st
    counts = sorted(json.loads(body)["wishlistCount"] for _, _, body in res)
    # and partial updates racing on both instances: each bumps version once
    m = 100
    threads, results = [], []

    def patch(e, i):
        results.append(e.json("PATCH", f"/api/products/{pid}", json.dumps({"stock": i}))[:3:2])

    for i in range(m):
        threads.append(threading.Thread(target=patch, args=((a, b)[i % 2], i)))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(s == 200 for s, _ in results) and len(results) == m, {s for s, _ in results}
    last = max(results, key=lambda x: x[1]["version"])[1]
    row = db_sql(a, "SELECT version, wishlist_count, stock FROM products WHERE id = ?", (pid,))[0]
    wl = db_sql(a, "SELECT count(*) FROM wishlist WHERE product_id = ?", (pid,))[0][0]
    seen_a = a.json("GET", f"/api/products/{pid}")[2]
    seen_b = b.json("GET", f"/api/products/{pid}")[2]
    print(f"     [{BACKEND}] {n} wishlist toggles + {m} PATCHes at once over both instances: "
          f"version {v0} -> {row[0]} (expected {v0 + n + m}), wishlistCount {row[1]} (rows {wl}, "
          f"expected {n}), final stock {row[2]} = the highest-version write's {last['stock']}")
    assert counts == list(range(1, n + 1)), counts[:5]   # every toggle saw its own increment
    assert row[0] == v0 + n + m, row
    assert row[1] == n == wl, (row, wl)
    assert row[2] == last["stock"] and last["version"] == row[0], (row, last)
    for seen in (seen_a, seen_b):
        assert (seen["version"], seen["wishlistCount"], seen["stock"]) == (row[0], row[1], row[2]), seen


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096:   # 1000 sockets at once, here and in the engines (inherited)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    t = Runner()
    r = Redis()
    a, b = start_pair(r)
    try:
        wait_until(lambda: all(e.get("/health")[0] == 200 for e in (a, b) for _ in range(4)), 10,
                   what="both instances healthy")
        t.run_all(globals(), a, b)
    finally:
        a.close()
        b.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
