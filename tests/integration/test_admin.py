"""The admin API (Authorization: Bearer $ADMIN_TOKEN), the O(1) purge by
cache epoch across workers, and /health, /health/live, /health/ready."""
import json
import os
import time
import urllib.parse

from harness import Engine, Monitor, Redis, Runner, wait_until

TOKEN = "admin-token-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

ADMIN_ROUTES = [
    ("GET", "/api/cache/stats"),
    ("DELETE", "/api/cache"),
    ("DELETE", "/api/cache/tags/products"),
    ("GET", "/api/cache/keys"),
    ("GET", "/api/cache/keys/product:p-0001"),
    ("DELETE", "/api/cache/keys/product:p-0001"),
    ("GET", "/api/admin/ratelimit/default/ip:127.0.0.1"),
    ("DELETE", "/api/admin/ratelimit/default/ip:127.0.0.1"),
    ("POST", "/api/admin/reload"),
]


def admin(e, method, path, headers=None):
    h = dict(AUTH)
    h.update(headers or {})
    return e.json(method, path, headers=h)


def on_fresh_connections(e, path, n=8):
    """SO_REUSEPORT spreads new connections over the workers."""
    return [e.json("GET", path) for _ in range(n)]


def x_cache(e, path):
    st, hdrs, _ = e.request("GET", path)
    assert st == 200, (path, st)
    return hdrs.get("X-Cache")


# ------------------------------------------------------------------ auth

def test_admin_routes_are_404_while_admin_token_is_unset(r):
    e = Engine(r.port)
    try:
        for method, path in ADMIN_ROUTES:
            for headers in ({}, AUTH):
                st, hdrs, doc = e.json(method, path, headers=headers)
                assert st == 404, (method, path, st, doc)
                assert doc == {"success": False, "error": "not_found",
                               "message": "admin API is disabled: set ADMIN_TOKEN"}, doc
                assert "WWW-Authenticate" not in hdrs
        # the public routes do not care
        assert e.get("/health")[0] == 200
        assert e.get("/api/cache/metrics")[0] == 200
    finally:
        e.close()


def test_every_admin_route_needs_the_bearer_token(e, r):
    wrong = [
        ({}, "Bearer"),                                                    # no header
        ({"Authorization": "Bearer not-the-admin-token-0123456789"}, 'Bearer error="invalid_token"'),
        ({"Authorization": f"Bearer {TOKEN}x"}, 'Bearer error="invalid_token"'),   # longer
        ({"Authorization": f"Bearer {TOKEN[:-1]}"}, 'Bearer error="invalid_token"'),  # a prefix
        ({"Authorization": f"Basic {TOKEN}"}, "Bearer"),                   # wrong scheme
        ({"Authorization": TOKEN}, "Bearer"),                              # no scheme
        ({"Authorization": "Bearer "}, "Bearer"),                          # no token
    ]
    for method, path in ADMIN_ROUTES:
        for headers, www in wrong:
            st, hdrs, doc = e.json(method, path, headers=headers)
            assert st == 401, (method, path, headers, st, doc)
            assert doc["success"] is False and doc["error"] == "unauthorized", doc
            assert hdrs.get("WWW-Authenticate") == www, (headers, hdrs)
            assert hdrs.get("Cache-Control") == "no-store"
    # the scheme is case-insensitive
    st, _, doc = e.json("GET", "/api/cache/stats", headers={"Authorization": f"bearer {TOKEN}"})
    assert st == 200 and doc["success"] is True, doc


# ---------------------------------------------------------------- health

def test_health_reports_redis_version_role_memory_and_clients(e, r):
    for st, hdrs, h in on_fresh_connections(e, "/health"):
        assert st == 200 and h["status"] == "ok", h
        rd = h["redis"]
        assert rd["status"] == "up"
        assert rd["version"].count(".") == 2, rd
        assert rd["role"] == "master"
        assert isinstance(rd["used_memory"], int) and rd["used_memory"] > 0
        assert isinstance(rd["maxmemory"], int) and rd["maxmemory"] >= 0
        assert isinstance(rd["connected_clients"], int) and rd["connected_clients"] >= 2
        assert "last_error" in rd and "latency_ms" in rd and "reconnects" in rd
        assert h["policies"]["generation"] >= 1
        assert "epoch" in h["cache"]
        assert hdrs.get("Cache-Control") == "no-store"


def test_health_live_and_ready(e, r):
    for st, _, doc in on_fresh_connections(e, "/health/live"):
        assert st == 200 and doc == {"status": "ok"}, doc
    for st, _, doc in on_fresh_connections(e, "/health/ready"):
        assert st == 200, doc
        assert doc["status"] == "ready" and doc["reasons"] == []
        assert doc["checks"] == {"redis": "up", "database": "up", "policies": "loaded"}, doc


def test_health_ready_is_503_while_redis_is_stopped_and_health_stays_fast():
    r = Redis()
    e = Engine(r.port, env={"RATELIMIT_ENABLED": "true"})
    try:
        r.stop()
        wait_until(lambda: all(doc["redis"]["status"] == "down" for _, _, doc in on_fresh_connections(e, "/health")),
                   5, what="redis down on every worker")
        for st, _, doc in on_fresh_connections(e, "/health"):
            assert st == 200 and doc["status"] == "degraded"
            rd = doc["redis"]
            for f in ("version", "role", "used_memory", "maxmemory", "connected_clients"):
                assert rd[f] is None, (f, rd)
            assert rd["last_error"], rd
        for st, _, doc in on_fresh_connections(e, "/health/ready"):
            assert st == 503, doc
            assert doc["status"] == "not_ready" and doc["checks"]["redis"] == "down"
            assert any("redis" in reason for reason in doc["reasons"]), doc
        for st, _, doc in on_fresh_connections(e, "/health/live"):
            assert st == 200 and doc == {"status": "ok"}
        # never rate limited, even with the limiter on and its Redis gone (failure_mode local)
        for _ in range(150):
            assert e.get("/health/live")[0] == 200
        r.start()
        wait_until(lambda: all(st == 200 for st, _, _ in on_fresh_connections(e, "/health/ready")), 5,
                   what="ready again")
    finally:
        e.close()
        r.close()


# ----------------------------------------------------------------- stats

def test_cache_stats(e, r):
    x_cache(e, "/api/products/p-0003")
    st, hdrs, doc = admin(e, "GET", "/api/cache/stats")
    assert st == 200 and doc["success"] is True, doc
    assert hdrs.get("Cache-Control") == "no-store"
    rd = doc["redis"]
    assert rd["status"] == "up"
    for f in ("usedMemory", "maxmemory", "keyspaceHits", "keyspaceMisses", "evictedKeys", "expiredKeys",
              "connectedClients", "version", "maxmemoryPolicy"):
        assert f in rd, (f, rd)
    assert rd["usedMemory"] > 0 and rd["keyspaceHits"] + rd["keyspaceMisses"] > 0
    assert rd["keyspace"]["db0"]["keys"] >= 1, rd["keyspace"]
    eng = doc["engine"]
    assert eng["worker"] in (0, 1) and eng["generation"] >= 1
    assert isinstance(eng["l1"], dict)
    assert eng["cache"]["misses"] >= 1 and "hitRate" in eng["cache"]
    assert isinstance(eng["cacheEpoch"], int)


# ----------------------------------------------------------------- purge

def epoch_in_redis(e, r):
    raw = r.command("GET", f"it{e.port}:epoch")
    return 0 if raw.startswith(b"$-1") else int(raw.split(b"\r\n")[1])


def test_purge_makes_every_entry_a_miss_on_every_worker(r):
    """With the L1 on (bounded, 60 s lag) a worker that missed the purge
    would keep answering HIT: every GET after the purge must be a MISS."""
    e = Engine(r.port, start=False, env={"ADMIN_TOKEN": TOKEN})
    try:
        with open(os.path.join(e.policy_dir, "cache.lua"), "w") as f:
            f.write("return { namespaces = { product = { consistency = 'bounded', max_lag_ms = 60000 } } }\n")
        e.start()
        ids = [f"p-{i:04d}" for i in range(21, 41)]
        for pid in ids:
            for _ in range(6):      # both workers hold it in L1 and Redis
                x_cache(e, f"/api/products/{pid}")
        m = e.json("GET", "/api/cache/metrics")[2]
        assert m["l1Hits"] > 0, m
        before = epoch_in_redis(e, r)
        st, _, doc = admin(e, "DELETE", "/api/cache")
        assert st == 200 and doc["success"] is True and doc["epoch"] == before + 1, doc
        assert epoch_in_redis(e, r) == before + 1
        # every worker heard it
        wait_until(lambda: all(h["cache"]["epoch"] == before + 1 for _, _, h in on_fresh_connections(e, "/health")),
                   3, what="every worker on the new epoch")
        workers = {h["worker"] for _, _, h in on_fresh_connections(e, "/health", 16)}
        assert workers == {0, 1}, workers
        # one GET per product on fresh connections, spread over both workers: all MISS
        sources = [x_cache(e, f"/api/products/{pid}") for pid in ids]
        assert sources == ["MISS"] * len(ids), sources
        assert [x_cache(e, f"/api/products/{pid}") for pid in ids[:5]] == ["HIT"] * 5
        # the old entries are left to expire by their TTL
        raw = r.command("PTTL", f"it{e.port}:c:{before}:product:{ids[0]}")
        assert int(raw[1:].split(b"\r\n")[0]) > 0, raw
    finally:
        e.close()


def test_purge_while_redis_is_down_is_503():
    r = Redis()
    e = Engine(r.port, env={"ADMIN_TOKEN": TOKEN})
    try:
        r.stop()
        wait_until(lambda: all(doc["redis"]["status"] == "down" for _, _, doc in on_fresh_connections(e, "/health")),
                   5, what="redis down")
        st, _, doc = admin(e, "DELETE", "/api/cache")
        assert st == 503 and doc["error"] == "redis_unavailable", doc
    finally:
        e.close()
        r.close()


# ------------------------------------------------------------------ tags

def test_tag_invalidation_makes_list_pages_miss(e, r):
    path = "/api/products?category=books&limit=5"
    x_cache(e, path)
    assert x_cache(e, path) == "HIT"
    st, _, doc = admin(e, "DELETE", "/api/cache/tags/products")
    assert st == 200 and doc == {"success": True, "tag": "products", "journaled": False,
                                 "message": "every entry tagged products is now a miss"}, doc
    assert x_cache(e, path) == "MISS"
    assert x_cache(e, path) == "HIT"
    st, _, doc = admin(e, "DELETE", "/api/cache/tags/" + urllib.parse.quote("a\nb", safe=""))
    assert st == 400 and doc["error"] == "bad_request", doc


# ------------------------------------------------------------------ keys

def test_key_get_shows_the_envelope_and_delete_invalidates(e, r):
    pid = "p-0061"
    _, _, body = e.request("GET", f"/api/products/{pid}")
    st, hdrs, doc = admin(e, "GET", f"/api/cache/keys/product:{pid}")
    assert st == 200 and doc["success"] is True, doc
    assert hdrs.get("Cache-Control") == "no-store"
    assert doc["key"] == f"product:{pid}" and doc["namespace"] == "product"
    ent = doc["entry"]
    assert ent["value"] == body.decode()
    assert ent["version"] == json.loads(body)["version"]
    assert ent["state"] == "fresh" and ent["negative"] is False
    assert 0 < ent["ttl"] <= 1800 * 1.1 + 1 and ent["redisTtlMs"] > ent["ttl"] * 1000
    assert ent["expiresAt"] > ent["storedAt"] > 0
    assert ent["inL1"] is False                     # product is "strong": never in L1
    assert ent["epoch"] == epoch_in_redis(e, r)
    assert ent["redisKey"] == f"it{e.port}:c:{ent['epoch']}:product:{pid}"
    assert ent["tags"] == {} and ent["tagsCurrent"] is True

    # a list page carries the products tag
    x_cache(e, "/api/products?limit=3")
    st, _, doc = admin(e, "GET", "/api/cache/keys?prefix=list:&count=1000")
    assert st == 200 and doc["keys"], doc
    lkey = doc["keys"][0]
    st, _, doc = admin(e, "GET", "/api/cache/keys/" + urllib.parse.quote(lkey, safe=""))
    assert st == 200 and "products" in doc["entry"]["tags"] and doc["entry"]["tagsCurrent"] is True, doc

    st, _, doc = admin(e, "DELETE", f"/api/cache/keys/product:{pid}")
    assert st == 200 and doc["success"] is True and doc["existed"] is True, doc
    st, _, doc = admin(e, "GET", f"/api/cache/keys/product:{pid}")
    assert st == 404 and doc["error"] == "not_found", doc
    assert x_cache(e, f"/api/products/{pid}") == "MISS"
    st, _, doc = admin(e, "DELETE", "/api/cache/keys/product:never-cached")
    assert st == 200 and doc["existed"] is False, doc

    for path, status in (("/api/cache/keys/nope:x", 404), ("/api/cache/keys/product", 400),
                         ("/api/cache/keys/product:", 400), ("/api/cache/keys/product:absent-key", 404)):
        st, _, doc = admin(e, "GET", path)
        assert st == status and doc["success"] is False, (path, st, doc)


def test_key_delete_reaches_every_workers_l1(r):
    e = Engine(r.port, start=False, env={"ADMIN_TOKEN": TOKEN})
    try:
        with open(os.path.join(e.policy_dir, "cache.lua"), "w") as f:
            f.write("return { namespaces = { product = { consistency = 'bounded', max_lag_ms = 60000 } } }\n")
        e.start()
        pid = "p-0071"
        for _ in range(8):
            x_cache(e, f"/api/products/{pid}")
        st, _, doc = admin(e, "DELETE", f"/api/cache/keys/product:{pid}")
        assert st == 200 and doc["existed"] is True, doc
        time.sleep(0.05)   # pub/sub is asynchronous: let the other worker's subscriber read it
        sources = [x_cache(e, f"/api/products/{pid}") for _ in range(8)]
        assert sources[0] == "MISS" and sources.count("MISS") == 1, sources
    finally:
        e.close()


def test_key_listing_pages_through_more_keys_than_one_page_with_scan(r):
    e = Engine(r.port, env={"ADMIN_TOKEN": TOKEN})
    mon = Monitor(r)
    try:
        ids = {f"p-{i:04d}" for i in range(1, 131)}
        for pid in ids:
            x_cache(e, f"/api/products/{pid}")
        got, cursor, pages = [], "0", 0
        while True:
            st, _, doc = admin(e, "GET", f"/api/cache/keys?prefix=product:&count=50&cursor={cursor}")
            assert st == 200 and doc["success"] is True, doc
            assert doc["count"] == len(doc["keys"]) and doc["count"] <= 60, doc["count"]
            got += doc["keys"]
            pages += 1
            cursor = doc["cursor"]
            assert doc["complete"] == (cursor == "0")
            if cursor == "0":
                break
            assert pages < 200
        assert pages >= 3, pages
        assert len(got) == len(set(got))
        assert set(got) == {f"product:{pid}" for pid in ids}, set(got) ^ {f"product:{pid}" for pid in ids}
        # a narrower prefix
        st, _, doc = admin(e, "GET", "/api/cache/keys?prefix=product:p-000&count=1000")
        keys = set(doc["keys"])
        while doc["cursor"] != "0":
            st, _, doc = admin(e, "GET", f"/api/cache/keys?prefix=product:p-000&count=1000&cursor={doc['cursor']}")
            keys |= set(doc["keys"])
        assert keys == {f"product:p-000{i}" for i in range(1, 10)}, keys
        # default count, bad parameters
        st, _, doc = admin(e, "GET", "/api/cache/keys")
        assert st == 200 and doc["count"] <= 200
        for q in ("count=0", "count=1001", "count=x", "cursor=abc", "cursor=-1"):
            st, _, doc = admin(e, "GET", "/api/cache/keys?" + q)
            assert st == 400 and doc["error"] == "bad_request", (q, doc)
        # after a purge nothing of the old epoch is listed
        admin(e, "DELETE", "/api/cache")
        keys, cursor = [], "0"
        while True:
            doc = admin(e, "GET", f"/api/cache/keys?prefix=product:&count=1000&cursor={cursor}")[2]
            keys += doc["keys"]
            cursor = doc["cursor"]
            if cursor == "0":
                break
        assert keys == [], keys[:5]
        mon.stop()
        seen = mon.commands()
        assert "scan" in seen and "keys" not in seen
    finally:
        e.close()


# ------------------------------------------------------------ rate limits

def test_ratelimit_peek_and_reset():
    r = Redis()
    e = Engine(r.port, env={"ADMIN_TOKEN": TOKEN, "RATELIMIT_ENABLED": "true"})
    try:
        path = "/api/admin/ratelimit/default/ip:127.0.0.1"
        st, _, fresh = admin(e, "GET", path)      # this request itself is under /api/: it counts
        assert st == 200 and fresh["success"] is True and fresh["enabled"] is True, fresh
        assert fresh["rule"] == "default" and fresh["key"] == "ip:127.0.0.1" and fresh["limit"] == 100
        for _ in range(10):
            assert e.get("/api/products/p-0001")[0] == 200
        st, _, doc = admin(e, "GET", path)
        assert st == 200 and doc["remaining"] <= fresh["remaining"] - 9, (fresh, doc)
        assert doc["allowed"] is True and doc["retryAfter"] == 0
        st, _, doc = admin(e, "DELETE", path)
        assert st == 200 and doc["success"] is True, doc
        st, _, doc = admin(e, "GET", path)
        assert doc["remaining"] >= doc["limit"] - 1, doc
        # another client's budget is untouched by ours, and peeking spends nothing
        for _ in range(3):
            st, _, doc = admin(e, "GET", "/api/admin/ratelimit/default/ip:10.9.8.7")
            assert st == 200 and doc["remaining"] == doc["limit"], doc
        # unknown rule, malformed key
        st, _, doc = admin(e, "GET", "/api/admin/ratelimit/no-such-rule/ip:127.0.0.1")
        assert st == 404 and doc["error"] == "not_found", doc
        st, _, doc = admin(e, "DELETE", "/api/admin/ratelimit/no-such-rule/ip:127.0.0.1")
        assert st == 404, doc
        for key in ("127.0.0.1", "bogus:1", "ip:"):
            st, _, doc = admin(e, "GET", "/api/admin/ratelimit/default/" + key)
            assert st == 400 and doc["error"] == "bad_request", (key, doc)
        # route budgets have spaces and slashes: percent-encoded
        quoted = urllib.parse.quote("route:GET /api/products", safe="")
        st, _, doc = admin(e, "GET", "/api/admin/ratelimit/search/" + quoted)
        assert st == 200 and doc["key"] == "route:GET /api/products", doc
    finally:
        e.close()
        r.close()


# ---------------------------------------------------------------- reload

def test_reload_through_the_admin_route_reaches_every_worker(e, r):
    gens = {h["policies"]["generation"] for _, _, h in on_fresh_connections(e, "/health", 12)}
    before = max(gens)
    st, _, doc = admin(e, "POST", "/api/admin/reload")
    assert st == 202 and doc["success"] is True and doc["generation"] in gens, doc
    wait_until(lambda: all(h["policies"]["generation"] > before and h["policies"]["last_reload_error"] is None
                           for _, _, h in on_fresh_connections(e, "/health", 12)), 10,
               what="every worker on a new generation")
    assert "SIGHUP: reloading every worker" in e.log_text()
    # the admin API still answers on the new generation
    assert admin(e, "GET", "/api/cache/stats")[0] == 200


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port, env={"ADMIN_TOKEN": TOKEN})
    try:
        t.run_all(globals(), e, r)
        t.run_all(globals(), r)
        t.run_all(globals())
    finally:
        e.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
