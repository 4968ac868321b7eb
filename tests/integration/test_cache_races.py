"""Cache races that count: stampedes, stale fills, read-your-write across
workers, and invalidations that could not reach Redis."""
import json
import os
import socket
import threading
import time

from harness import Engine, Monitor, Redis, Runner, first_responses, wait_until


def metrics(e):
    return e.json("GET", "/api/cache/metrics")[2]


def loader_calls(e, ns="product"):
    return metrics(e)["namespaces"].get(ns, {}).get("loaderCalls", 0)


def concurrent_gets(e, path, n):
    """n connections opened first, then every request sent, then every
    response read: the requests really are in flight together."""
    socks = [socket.create_connection(("127.0.0.1", e.port), timeout=30) for _ in range(n)]
    req = f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    for s in socks:
        s.sendall(req)
    return first_responses(socks)


def test_stampede_on_a_cold_product_runs_the_loader_once(e, r):
    before = loader_calls(e)
    res = concurrent_gets(e, "/api/products/p-0042", 500)
    assert all(st == 200 for st, _, _ in res), {st for st, _, _ in res}
    assert len({json.loads(b)["version"] for _, _, b in res}) == 1
    sources = [h.get("x-cache") for _, h, _ in res]
    after = loader_calls(e)
    print(f"     500 concurrent cold GETs: loader calls {after - before}; "
          f"MISS {sources.count('MISS')}, HIT {sources.count('HIT')}")
    assert after - before == 1, after - before


def vkey(e, r, pid):
    """Redis key of product pid's cached value: <prefix>c:<cache epoch>:product:<pid>."""
    raw = r.command("GET", f"it{e.port}:epoch")
    ep = 0 if raw.startswith(b"$-1") else int(raw.split(b"\r\n")[1])
    return f"it{e.port}:c:{ep}:product:{pid}"


def get_version(e, pid):
    st, _, doc = e.json("GET", f"/api/products/{pid}")
    assert st == 200, (st, doc)
    return doc["version"]


def test_write_during_a_held_fill_never_stores_the_old_value(e, r):
    pid = "p-0077"
    r.command("DEL", vkey(e, r, pid))
    e.request("PUT", f"/api/products/{pid}", json.dumps({"stock": 5}), {"Content-Type": "application/json"})
    # invalidate whatever the PUT cached so the slow fill below is a real miss
    r.command("DEL", vkey(e, r, pid))
    result = {}

    def slow():
        result["fill"] = e.request("GET", f"/test/slowfill/{pid}?ms=600", timeout=30)
    th = threading.Thread(target=slow)
    th.start()
    time.sleep(0.2)           # the fill has read the row and is holding it
    st, _, doc = e.json("PUT", f"/api/products/{pid}", json.dumps({"stock": 6}),
                        {"Content-Type": "application/json"})
    assert st == 200, doc
    new_version = doc["version"]
    th.join()
    old = json.loads(result["fill"][2])
    assert old["version"] < new_version
    time.sleep(0.1)
    raw = r.command("GET", vkey(e, r, pid))
    assert f'"version":{old["version"]},'.encode() not in raw, raw[:200]
    for _ in range(10):
        assert get_version(e, pid) == new_version


def test_after_an_update_every_worker_reads_the_new_version(e, r):
    stale = 0
    for i in range(30):
        pid = f"p-{100 + i:04d}"
        for _ in range(4):
            get_version(e, pid)     # warm the cache on both workers
        st, _, doc = e.json("PUT", f"/api/products/{pid}", json.dumps({"stock": 100 + i}),
                            {"Content-Type": "application/json"})
        assert st == 200
        for _ in range(8):          # fresh connections spread over both workers
            if get_version(e, pid) != doc["version"]:
                stale += 1
    print(f"     stale reads after 30 updates x 8 reads: {stale}")
    assert stale == 0


def test_update_while_redis_is_down_is_not_stale_when_it_returns():
    r = Redis()
    e = Engine(r.port)
    try:
        pid = "p-0150"
        for _ in range(4):
            v0 = get_version(e, pid)            # cached in Redis
        r.command("SAVE")                        # Redis will come back with this data
        r.stop()
        wait_until(lambda: all(e.json("GET", "/health")[2]["redis"]["status"] == "down" for _ in range(6)), 5,
                   what="redis down")
        st, _, doc = e.json("PUT", f"/api/products/{pid}", json.dumps({"stock": 77}),
                            {"Content-Type": "application/json"})
        assert st == 200, doc
        assert doc["version"] > v0
        st, hdrs, doc2 = e.json("GET", f"/api/products/{pid}")
        assert st == 200 and doc2["version"] == doc["version"] and hdrs["X-Cache"] == "BYPASS"
        r.start()                                # loads the old cached value from its dump
        assert f'"version":{v0},'.encode() in r.command("GET", vkey(e, r, pid))
        wait_until(lambda: all(e.json("GET", "/health")[2]["redis"]["status"] == "up" for _ in range(6)), 5,
                   what="redis up")
        stale = sum(get_version(e, pid) != doc["version"] for _ in range(20))
        print(f"     stale reads after the outage: {stale}")
        assert stale == 0
    finally:
        e.close()
        r.close()


def test_bounded_l1_lags_a_write_by_at_most_max_lag():
    r = Redis()
    e = Engine(r.port, start=False)
    try:
        with open(os.path.join(e.policy_dir, "cache.lua"), "w") as f:
            f.write("return { namespaces = { product = { consistency = 'bounded', max_lag_ms = 400 } } }\n")
        e.start()
        pid = "p-0201"
        for _ in range(10):
            v0 = get_version(e, pid)
        m = e.json("GET", "/api/cache/metrics")[2]
        assert m["l1Hits"] > 0, m
        st, _, doc = e.json("PUT", f"/api/products/{pid}", json.dumps({"stock": 9}),
                            {"Content-Type": "application/json"})
        assert st == 200 and doc["version"] > v0
        t_write = time.monotonic()
        last_stale = None
        while time.monotonic() - t_write < 1.5:
            if get_version(e, pid) != doc["version"]:
                last_stale = time.monotonic() - t_write
        print(f"     last stale read {last_stale if last_stale is None else round(last_stale, 3)} s after the write "
              f"(max_lag_ms 400)")
        assert last_stale is None or last_stale <= 0.45, last_stale
        assert sum(get_version(e, pid) != doc["version"] for _ in range(20)) == 0
    finally:
        e.close()
        r.close()


def main():
    t = Runner()
    r = Redis()
    mon = Monitor(r)
    e = Engine(r.port)
    try:
        t.run_all(globals(), e, r)
        t.run_all(globals())
        assert e.stop() == 0

        def no_keys_command_reached_redis():
            time.sleep(0.3)
            mon.stop()
            seen = mon.commands()
            print(f"     MONITOR saw {len(seen)} commands of {len(set(seen))} kinds: {sorted(set(seen))}")
            assert len(seen) > 1000, len(seen)
            assert "keys" not in seen
        t.run("no code path sends KEYS to redis (MONITOR over the whole run)", no_keys_command_reached_redis)
    finally:
        e.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
