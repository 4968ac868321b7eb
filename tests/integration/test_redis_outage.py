"""Redis goes away and comes back: /health says degraded (still 200), Lua
routes keep answering, Redis calls fail fast, and the engine reconnects
within a second of Redis answering again."""
import concurrent.futures as cf
import time

from harness import Engine, Redis, Runner, wait_until


def health_on_fresh_connections(e, n=8):
    # SO_REUSEPORT spreads connections over workers: ask several times
    return [e.json("GET", "/health")[2] for _ in range(n)]


def test_outage_and_recovery():
    r = Redis()
    e = Engine(r.port)
    try:
        wait_until(lambda: all(h["redis"]["status"] == "up" for h in health_on_fresh_connections(e)), 5,
                   what="redis up on every worker")
        st, _, doc = e.json("GET", "/test/redis")
        assert st == 200 and doc["counter"] >= 1

        r.stop()
        wait_until(lambda: all(h["redis"]["status"] == "down" for h in health_on_fresh_connections(e)), 5,
                   what="redis down on every worker")
        for h in health_on_fresh_connections(e):
            assert h["status"] == "degraded"
        st, hdrs, _ = e.get("/health")
        assert st == 200
        # Lua routes still answer; Redis calls fail fast with a clear error
        assert e.get("/test/ok")[0] == 200
        t0 = time.monotonic()
        st, _, doc = e.json("GET", "/test/redis")
        assert st == 503 and doc["error"] == "redis unavailable", doc
        assert time.monotonic() - t0 < 0.5

        r.start()
        t_up = time.monotonic()

        def all_up():
            return all(h["redis"]["status"] == "up" for h in health_on_fresh_connections(e, 6))
        wait_until(all_up, 5, 0.02, "reconnect")
        elapsed = time.monotonic() - t_up
        print(f"     reconnected {elapsed:.3f}s after redis answered")
        assert elapsed < 1.0, elapsed
        st, _, doc = e.json("GET", "/test/redis")
        assert st == 200
        for h in health_on_fresh_connections(e):
            assert h["redis"]["reconnects"] >= 1
    finally:
        e.close()
        r.close()


def test_requests_during_outage_all_get_answers():
    r = Redis()
    e = Engine(r.port)
    try:
        def hit(_):
            return e.get("/test/redis", timeout=10)[0]
        with cf.ThreadPoolExecutor(8) as ex:
            futs = [ex.submit(hit, i) for i in range(200)]
            time.sleep(0.05)
            r.stop()
            time.sleep(0.3)
            r.start()
            codes = [f.result() for f in futs]
        assert set(codes) <= {200, 503}, set(codes)
        wait_until(lambda: e.json("GET", "/test/redis")[0] == 200, 5, what="redis route after restart")
    finally:
        e.close()
        r.close()


def test_wrong_password_reports_down_with_error():
    r = Redis(password="right-password")
    e = Engine(r.port, env={"REDIS_PASSWORD": "wrong-password"}, wait_redis=False)
    try:
        time.sleep(0.5)
        h = e.json("GET", "/health")[2]
        assert h["redis"]["status"] == "down"
        assert h["redis"]["last_error"], h
    finally:
        e.close()
    e = Engine(r.port, env={"REDIS_URL": f"redis://:right-password@127.0.0.1:{r.port}/2"})
    try:
        wait_until(lambda: e.json("GET", "/health")[2]["redis"]["status"] == "up", 5, what="auth ok")
    finally:
        e.close()
        r.close()


def main():
    t = Runner()
    t.run("redis stopped and restarted: degraded, still serving, reconnected within 1 s", test_outage_and_recovery)
    t.run("requests during a redis restart all get an answer", test_requests_during_outage_all_get_answers)
    t.run("AUTH with a wrong password stays down with an error; the right one connects",
          test_wrong_password_reports_down_with_error)
    t.done()


if __name__ == "__main__":
    main()
