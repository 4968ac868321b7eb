"""Consistency verifier and alerts (policies/monitoring.lua): a row changed
behind the engine's back is found, repaired and logged; alerts fire once and
resolve once; a hot reload leaves one verifier loop per worker."""
import json
import os
import signal
import time

from harness import Engine, Redis, Runner, db_sql, wait_until


def start(redis, policy, workers=2):
    e = Engine(redis.port, workers=workers, start=False)
    with open(os.path.join(e.policy_dir, "monitoring.lua"), "w") as f:
        f.write(policy)
    e.start()
    return e


def metrics(e):
    status, _, body = e.json("GET", "/api/cache/metrics")
    assert status == 200, (status, body)
    return body


def log_events(e, event):
    out = []
    for line in e.log_text().splitlines():
        if f'"event":"{event}"' in line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def test_mismatch_is_detected_repaired_and_logged(r):
    e = start(r, "return { verifier = { interval = 1 }, alerts = { enabled = false } }\n")
    try:
        ids = ["p-0001", "p-0002", "p-0003", "p-0004"]
        for pid in ids:
            assert e.get(f"/api/products/{pid}")[0] == 200
        status, hdrs, body = e.get("/api/products/p-0002")
        assert status == 200 and hdrs["X-Cache"] == "HIT", hdrs
        old = json.loads(body)
        # rounds run and find the cache consistent
        wait_until(lambda: metrics(e)["consistencyChecks"] >= 4, 10, 0.1, what="a verification round")
        m0 = metrics(e)
        assert m0["consistencyErrors"] == 0 and m0["consistencyScore"] == 100, m0
        assert m0["lastVerification"]["time"], m0

        # change two rows behind the engine's back: p-0002's price and version, p-0003 deleted
        # (sqlite3 on the file, psql on PostgreSQL: harness.db_sql)
        db_sql(e, "UPDATE products SET price_cents = price_cents + 1234, version = version + 1 WHERE id = 'p-0002'")
        db_sql(e, "DELETE FROM products WHERE id = 'p-0003'")
        new_cents, new_version = db_sql(e, "SELECT price_cents, version FROM products WHERE id = 'p-0002'")[0]
        # the cache still serves the old row until the verifier notices
        assert json.loads(e.get("/api/products/p-0002")[2])["version"] == old["version"]

        wait_until(lambda: metrics(e)["consistencyErrors"] >= 2, 10, 0.1, what="the mismatches detected")
        m1 = metrics(e)
        assert m1["consistencyErrors"] == 2, m1
        assert m1["consistencyRepairs"] == 2, m1
        assert m1["consistencyScore"] < 100, m1
        expected = round((m1["consistencyChecks"] - 2) / m1["consistencyChecks"] * 100, 2)
        assert abs(m1["consistencyScore"] - expected) < 0.011, (m1, expected)

        # repaired: the next read goes to the database and has the new row
        status, hdrs, body = e.get("/api/products/p-0002")
        assert status == 200 and hdrs["X-Cache"] == "MISS", (status, hdrs)
        doc = json.loads(body)
        assert doc["version"] == new_version == old["version"] + 1, doc
        assert round(doc["price"] * 100) == new_cents, doc
        status, hdrs, _ = e.get("/api/products/p-0003")
        assert status == 404, status

        # one structured warning per repair
        repairs = {ev["key"]: ev for ev in log_events(e, "consistency_repair")}
        assert set(repairs) == {"p-0002", "p-0003"}, repairs
        assert repairs["p-0002"]["level"] == "warn"
        assert repairs["p-0002"]["reason"] == "version"
        assert repairs["p-0002"]["cached_version"] == old["version"]
        assert repairs["p-0002"]["db_version"] == new_version
        assert repairs["p-0003"]["reason"] == "deleted" and repairs["p-0003"]["db_version"] is None

        # and later rounds find everything consistent again
        n = metrics(e)["consistencyChecks"]
        wait_until(lambda: metrics(e)["consistencyChecks"] > n + 2, 10, 0.1, what="more rounds")
        assert metrics(e)["consistencyErrors"] == 2
    finally:
        e.close()


def test_metrics_keep_their_fields_and_add_the_verifier_s(r):
    e = start(r, "return { verifier = { enabled = false }, alerts = { enabled = false } }\n")
    try:
        e.get("/api/products/p-0005")
        e.get("/api/products/p-0005")
        m = metrics(e)
        for field in ("cacheHits", "cacheMisses", "hitRate", "loaderCalls", "staleReads", "namespaces",
                      "consistencyChecks", "consistencyErrors", "consistencyRepairs", "consistencyScore",
                      "lastVerification", "alerts"):
            assert field in m, (field, m)
        assert m["namespaces"]["product"]["cacheHits"] >= 1, m
        assert m["consistencyChecks"] == 0 and m["consistencyScore"] == 100, m
        assert m["lastVerification"] == {"time": None, "checked": 0, "errors": 0}, m
        assert m["alerts"] == [], m
        time.sleep(1.5)   # disabled: no round ever runs
        assert metrics(e)["consistencyChecks"] == 0
        assert not log_events(e, "loop_started")
    finally:
        e.close()


def test_reload_leaves_one_verifier_loop_per_worker(r):
    e = start(r, "return { verifier = { interval = 1 }, alerts = { interval = 1 } }\n", workers=1)
    try:
        wait_until(lambda: metrics(e)["lastVerification"]["time"] is not None, 10, 0.1, what="a round")
        tasks0 = e.json("GET", "/test/info")[2]["tasks"]
        for gen in (2, 3, 4):
            e.signal(signal.SIGHUP)
            wait_until(lambda: e.json("GET", "/test/info")[2]["generation"] == gen, 10, 0.05,
                       what=f"generation {gen}")
        # every replaced generation's loops see it within one interval and end
        wait_until(lambda: len(log_events(e, "loop_stopped")) >= 6, 10, 0.1, what="old loops stopped")
        time.sleep(1.5)
        stopped = log_events(e, "loop_stopped")
        assert sorted((ev["loop"], ev["generation"]) for ev in stopped) == sorted(
            [(loop, g) for loop in ("verifier", "alerts") for g in (1, 2, 3)]), stopped
        started = [(ev["loop"], ev["generation"]) for ev in log_events(e, "loop_started")]
        assert sorted(started) == sorted([(loop, g) for loop in ("verifier", "alerts") for g in (1, 2, 3, 4)])
        # nothing of the old generations lingers: the same live tasks as before the reloads
        info = e.json("GET", "/test/info")[2]
        assert info["vm_generation"] == info["generation"] == 4, info
        assert info["tasks"] == tasks0, (info, tasks0)
        # and the current generation's verifier goes on
        t0 = metrics(e)["consistencyChecks"]
        e.get("/api/products/p-0006")
        wait_until(lambda: metrics(e)["consistencyChecks"] > t0, 10, 0.1, what="rounds after the reloads")
    finally:
        e.close()


def alert_events(e, event, name):
    return [ev for ev in log_events(e, event) if ev.get("alert") == name]


def metric(e, name):
    return e.json("GET", "/test/metrics/get?name=" + name.replace('"', "%22").replace("{", "%7B")
                  .replace("}", "%7D").replace("=", "%3D"))[2]["value"]


def test_hit_ratio_alert_fires_once_and_resolves_once(r):
    policy = """return {
  verifier = { enabled = false },
  alerts = { interval = 1, hit_ratio = { min_percent = 99, min_lookups = 5 } },
}
"""
    e = start(r, policy)
    try:
        name = "hit_ratio_low"
        # misses for about three evaluations: ids nobody has (distinct, so
        # negative caching cannot turn them into hits)
        deadline = time.monotonic() + 3.5
        i = 0
        while time.monotonic() < deadline:
            i += 1
            assert e.get(f"/api/products/p-missing-{i}")[0] == 404
            time.sleep(0.01)
        m = metrics(e)
        assert [a["name"] for a in m["alerts"]] == [name], m["alerts"]
        assert m["alerts"][0]["threshold"] == 99 and m["alerts"][0]["since"], m["alerts"]
        fired = alert_events(e, "alert_firing", name)
        assert len(fired) == 1, fired                    # once, though it fired at several evaluations
        assert fired[0]["level"] == "warn" and fired[0]["value"] < 99 and fired[0]["threshold"] == 99, fired
        assert metric(e, 'alerts{alert="hit_ratio_low"}') == 1
        assert metric(e, 'alert_active{alert="hit_ratio_low"}') == 1
        # no lookups any more: too few to judge, it resolves, once
        wait_until(lambda: metrics(e)["alerts"] == [], 10, 0.1, what="the alert resolved")
        time.sleep(2.2)
        assert len(alert_events(e, "alert_resolved", name)) == 1
        assert len(alert_events(e, "alert_firing", name)) == 1
        assert metric(e, 'alert_active{alert="hit_ratio_low"}') == 0
    finally:
        e.close()


def info_memory(r):
    text = r.command("INFO", "memory").decode("latin-1")
    return {k: v for k, _, v in (line.partition(":") for line in text.split("\r\n")) if v}


def test_redis_memory_alert_follows_maxmemory(r):
    policy = """return {
  verifier = { enabled = false },
  alerts = { interval = 1, redis_memory = { max_percent = 80 } },
}
"""
    e = start(r, policy, workers=1)
    name = "redis_memory_high"
    try:
        time.sleep(1.5)
        assert alert_events(e, "alert_firing", name) == []   # maxmemory 0: no limit, no alert
        used = int(info_memory(r)["used_memory"])
        r.command("CONFIG", "SET", "maxmemory", str(int(used / 0.9)))   # ~90 % used
        wait_until(lambda: [a["name"] for a in metrics(e)["alerts"]] == [name], 10, 0.1, what="memory alert")
        fired = alert_events(e, "alert_firing", name)
        assert len(fired) == 1 and fired[0]["value"] > 80, fired
        r.command("CONFIG", "SET", "maxmemory", "0")
        wait_until(lambda: metrics(e)["alerts"] == [], 10, 0.1, what="memory alert resolved")
        assert len(alert_events(e, "alert_resolved", name)) == 1
    finally:
        r.command("CONFIG", "SET", "maxmemory", "0")
        e.close()


def test_redis_down_alert_fires_and_resolves(r):
    policy = """return {
  verifier = { interval = 1 },
  alerts = { interval = 1, redis_connection = { down_rounds = 2 } },
}
"""
    e = start(r, policy, workers=1)
    name = "redis_connection_failures"
    try:
        time.sleep(1.2)
        r.stop()
        wait_until(lambda: [a["name"] for a in metrics(e)["alerts"]] == [name], 15, 0.1, what="connection alert")
        assert len(alert_events(e, "alert_firing", name)) == 1
        r.start()
        wait_until(lambda: metrics(e)["alerts"] == [], 20, 0.1, what="connection alert resolved")
        assert len(alert_events(e, "alert_resolved", name)) == 1
        assert len(alert_events(e, "alert_firing", name)) == 1
    finally:
        if not r.ping():
            r.start()
        e.close()


def main():
    t = Runner()
    r = Redis()
    try:
        t.run_all(globals(), r)
    finally:
        r.close()
    t.done()


if __name__ == "__main__":
    main()
