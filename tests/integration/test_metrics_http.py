"""GET /metrics and the access log: requests are counted once per response
in C and summed over the workers (exactly), the exposition is valid
Prometheus text 0.0.4 (a strict parser below), the subsystems' metrics
appear once exercised, and ACCESS_LOG=true writes one JSON line per response
whose fields match the response."""
import concurrent.futures as cf
import http.client
import json
import math
import os
import re
import signal
import time

from harness import Engine, Redis, Runner, wait_until

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# ------------------------------------------------------------------ parser

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
VALUE = r"(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]Inf|NaN)"
SAMPLE = re.compile(rf"^({NAME})(\{{(?:{LABEL}(?:,{LABEL})*)?\}})? ({VALUE})(?: -?\d+)?$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
HELP = re.compile(rf"^# HELP ({NAME}) (.*)$")
TYPE = re.compile(rf"^# TYPE ({NAME}) (counter|gauge|histogram|summary|untyped)$")


def unescape(v):
    return re.sub(r'\\(.)', lambda m: {"n": "\n", "\\": "\\", '"': '"'}[m.group(1)], v)


def parse_exposition(text):
    """Strict: returns {family: {"type", "help", "samples": [(name, labels dict, value)]}}.
    Raises AssertionError on anything a Prometheus server would refuse or
    that this engine promises not to do."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families = {}
    current = None
    closed = set()
    for n, line in enumerate(text[:-1].split("\n"), 1):
        assert line != "", f"line {n}: empty line"
        if line.startswith("#"):
            m = HELP.match(line) or TYPE.match(line)
            assert m, f"line {n}: not a HELP or TYPE line: {line!r}"
            fam = m.group(1)
            assert fam.startswith("jollyjet_"), f"line {n}: {fam} has no jollyjet_ prefix"
            if current != fam:
                assert fam not in closed, f"line {n}: family {fam} appears twice (not contiguous)"
                if current:
                    closed.add(current)
                current = fam
            f = families.setdefault(fam, {"type": None, "help": None, "samples": []})
            assert not f["samples"], f"line {n}: {fam}: HELP/TYPE after its samples"
            if line.startswith("# HELP"):
                assert f["help"] is None, f"line {n}: second HELP for {fam}"
                f["help"] = m.group(2)
            else:
                assert f["type"] is None, f"line {n}: second TYPE for {fam}"
                f["type"] = m.group(2)
            continue
        m = SAMPLE.match(line)
        assert m, f"line {n}: not a valid sample line: {line!r}"
        name, labels_text, value = m.group(1), m.group(2) or "", m.group(3)
        assert current is not None, f"line {n}: sample before any TYPE"
        f = families[current]
        t = f["type"]
        assert t is not None, f"line {n}: {current} has no TYPE before its samples"
        if t == "histogram":
            assert name in (current + "_bucket", current + "_sum", current + "_count"), \
                f"line {n}: {name} is not a sample of histogram {current}"
        else:
            assert name == current, f"line {n}: {name} outside its family (current {current})"
        if t == "counter":
            assert name.endswith("_total"), f"line {n}: counter {name} without _total"
        labels = {}
        for k, v in LABEL_RE.findall(labels_text):
            assert k not in labels, f"line {n}: label {k} twice"
            labels[k] = unescape(v)
        f["samples"].append((name, labels, float(value)))
    for fam, f in families.items():
        assert f["type"] and f["help"] is not None, f"{fam}: missing TYPE or HELP"
        assert f["samples"], f"{fam}: no samples"
        seen = set()
        for name, labels, _ in f["samples"]:
            key = (name, tuple(sorted(labels.items())))
            assert key not in seen, f"{fam}: duplicate sample {key}"
            seen.add(key)
        if f["type"] == "histogram":
            check_histogram(fam, f["samples"])
    return families


def check_histogram(fam, samples):
    series = {}
    for name, labels, value in samples:
        base = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
        if name.endswith("_bucket"):
            assert "le" in labels, f"{fam}: bucket without le"
            s["buckets"].append((float(labels["le"]), value))
        elif name.endswith("_sum"):
            assert "le" not in labels
            s["sum"] = value
        else:
            assert "le" not in labels
            s["count"] = value
    for base, s in series.items():
        b = s["buckets"]
        assert b and s["sum"] is not None and s["count"] is not None, f"{fam}{base}: incomplete"
        les = [le for le, _ in b]
        assert les == sorted(les) and len(set(les)) == len(les), f"{fam}{base}: le not increasing: {les}"
        assert math.isinf(les[-1]) and les[-1] > 0, f"{fam}{base}: last bucket is not +Inf"
        counts = [c for _, c in b]
        assert all(x <= y for x, y in zip(counts, counts[1:])), f"{fam}{base}: buckets not cumulative: {counts}"
        assert counts[-1] == s["count"], f"{fam}{base}: +Inf {counts[-1]} != _count {s['count']}"
        assert s["sum"] >= 0


def scrape(e):
    status, hdrs, body = e.get("/metrics")
    assert status == 200, (status, body[:300])
    assert hdrs.get("Content-Type") == CONTENT_TYPE, hdrs
    return parse_exposition(body.decode("utf-8"))


def value(fams, family, sample=None, **labels):
    """Sum of the samples of family (sample name, default the family's own
    or _count for histograms) whose labels include `labels`."""
    f = fams.get(family)
    if not f:
        return 0
    sample = sample or (family + "_count" if f["type"] == "histogram" else family)
    want = {k: str(v) for k, v in labels.items()}
    return sum(v for n, l, v in f["samples"] if n == sample and all(l.get(k) == x for k, x in want.items()))


def requests_by_label(fams):
    out = {}
    for n, l, v in fams.get("jollyjet_http_requests_total", {"samples": []})["samples"]:
        out[(l["route"], l["method"], l["status"])] = v
    return out


def delta(after, before):
    keys = set(after) | set(before)
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


# --------------------------------------------------------------- requests

def fresh_request(e, method, path, body=None, headers=None):
    """One request on a connection of its own (SO_REUSEPORT spreads them)."""
    c = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        c.close()


# ------------------------------------------------------------------ tests

def test_exposition_is_strict_prometheus_text(e):
    e.get("/nope")
    fams = scrape(e)
    for fam in ("jollyjet_http_requests_total", "jollyjet_http_request_duration_seconds", "jollyjet_workers",
                "jollyjet_metrics_overflow_total", "jollyjet_policy_generation", "jollyjet_build_info"):
        assert fam in fams, (fam, sorted(fams))
    assert fams["jollyjet_http_requests_total"]["type"] == "counter"
    assert fams["jollyjet_http_request_duration_seconds"]["type"] == "histogram"
    assert value(fams, "jollyjet_workers") == 2
    les = [l["le"] for n, l, _ in fams["jollyjet_http_request_duration_seconds"]["samples"]
           if n.endswith("_bucket") and l["route"] == "unmatched"]
    assert les[0] == "0.0005" and les[-1] == "+Inf" and "1" in les, les   # seconds, not ms
    # the parser can fail
    for bad in ("jollyjet_x_total 1\n", "# TYPE jollyjet_x counter\njollyjet_x{a=b} 1\n",
                "# HELP jollyjet_x_total x\n# TYPE jollyjet_x_total counter\njollyjet_x_total 1"):
        try:
            parse_exposition(bad)
        except AssertionError:
            continue
        raise AssertionError(f"the strict parser accepted {bad!r}")


def test_every_response_is_counted_once_over_both_workers(e):
    before = scrape(e)
    b_req = requests_by_label(before)
    plan = []   # (method, path, expected (route, method, status))
    for i in range(60):
        plan.append(("GET", "/test/ok", ("/test/ok", "GET", "200")))
        plan.append(("GET", f"/test/items/{i}", ("/test/items/{id}", "GET", "200")))
        plan.append(("GET", f"/nope/{i}", ("unmatched", "GET", "404")))
    for _ in range(20):
        plan.append(("POST", "/health", ("unmatched", "POST", "405")))
        plan.append(("HEAD", "/test/ok", ("/test/ok", "HEAD", "200")))
    for _ in range(5):
        plan.append(("GET", "/test/error", ("/test/error", "GET", "500")))   # a handler bug keeps its route
    workers = set()

    def one(item):
        method, path, want = item
        status, _, body = fresh_request(e, method, path)
        assert status == int(want[2]), (method, path, status, body[:200])
        if path == "/test/ok" and method == "GET":
            workers.add(json.loads(body)["worker"])
        return want
    with cf.ThreadPoolExecutor(8) as ex:
        sent = list(ex.map(one, plan))
    # the server's own answers: malformed requests (400) and an unknown method
    for _ in range(3):
        out = e.raw(b"NOT A REQUEST\r\n\r\n")
        assert out.startswith(b"HTTP/1.1 400"), out[:100]
        sent.append(("unmatched", "OTHER", "400"))
    status, _, _ = fresh_request(e, "BREW", "/pot")
    assert status == 404, status
    sent.append(("unmatched", "OTHER", "404"))
    assert workers == {0, 1}, f"both workers must serve: {workers}"

    after = scrape(e)
    want = {}
    for k in sent:
        want[k] = want.get(k, 0) + 1
    want[("/metrics", "GET", "200")] = 1   # the first scrape, counted once it was answered
    got = delta(requests_by_label(after), b_req)
    assert got == want, f"\n got {sorted(got.items())}\nwant {sorted(want.items())}"
    n = len(sent) + 1
    assert value(after, "jollyjet_http_requests_total") - value(before, "jollyjet_http_requests_total") == n
    # one latency observation per response, by route
    by_route = {}
    for (route, _, _), c in want.items():
        by_route[route] = by_route.get(route, 0) + c
    for route, c in by_route.items():
        d = (value(after, "jollyjet_http_request_duration_seconds", route=route)
             - value(before, "jollyjet_http_request_duration_seconds", route=route))
        assert d == c, (route, d, c)
    d = (value(after, "jollyjet_http_request_duration_seconds")
         - value(before, "jollyjet_http_request_duration_seconds"))
    assert d == n, (d, n)


def test_subsystem_metrics_appear(e):
    before = scrape(e)
    # database (and Redis) through the product list
    status, _, body = e.get("/api/products?limit=3")
    assert status == 200, body[:200]
    status, _, body = e.get("/test/redis")
    assert status == 200, body[:200]
    # locks: two holders at once, the second waits
    with cf.ThreadPoolExecutor(2) as ex:
        res = list(ex.map(lambda _: fresh_request(e, "POST", "/test/lock?name=m&hold_ms=200")[0], range(2)))
    assert res == [200, 200], res
    # rate limiting: the shipped "search" rule allows 30 searches a minute per address
    codes = [e.get("/api/products?search=zzz")[0] for _ in range(35)]
    assert codes.count(429) == 5 and codes.count(200) == 30, codes
    after = scrape(e)

    def d(family, sample=None, **labels):
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)
    assert d("jollyjet_db_queries_total", kind="query", result="ok") >= 1
    assert d("jollyjet_db_query_duration_seconds", kind="query") >= 1
    assert d("jollyjet_redis_command_duration_seconds") >= 1
    assert d("jollyjet_lock_acquisitions_total", result="acquired") == 2
    assert d("jollyjet_lock_contended_total") >= 1
    assert d("jollyjet_lock_wait_seconds") == 2
    assert value(after, "jollyjet_lock_wait_seconds", "jollyjet_lock_wait_seconds_sum") >= 0.1
    assert d("jollyjet_ratelimit_allowed_total", rule="search") == 30
    assert d("jollyjet_ratelimit_rejected_total", rule="search") == 5
    assert d("jollyjet_ratelimit_allowed_total", rule="default") == 35 + 1   # + the product list
    assert d("jollyjet_ratelimit_rejected_total", rule="default") == 0
    assert d("jollyjet_http_requests_total", route="/api/products", status="429") == 5
    # the scrape itself is not limited (not under /api/) and needs no auth
    _, hdrs, _ = e.get("/metrics")
    assert not any(k.lower().startswith("ratelimit") for k in hdrs), hdrs
    for fam in ("jollyjet_policy_generation", "jollyjet_lua_memory_bytes", "jollyjet_http_connections"):
        assert {l.get("worker") for _, l, _ in after[fam]["samples"]} == {"0", "1"}, (fam, after[fam])


def test_l1_size_and_evictions(e):
    # bounded product namespace, L1 of 3 items per worker (see main)
    for _ in range(3):
        for i in range(1, 9):
            status, _, body = fresh_request(e, "GET", f"/api/products/p-{i:04d}")
            assert status == 200, body[:200]

    def l1_published():
        fams = scrape(e)
        items = {l["worker"]: v for _, l, v in fams.get("jollyjet_l1_items", {"samples": []})["samples"]
                 if l.get("ns") == "product"}
        ev = value(fams, "jollyjet_l1_evictions_total", ns="product")
        # each worker publishes its gauges on its own turn: wait for both to
        # show the items of this test, not an earlier 0
        return (fams, items) if len(items) == 2 and all(v > 0 for v in items.values()) and ev > 0 else None
    fams, items = wait_until(l1_published, 5, 0.2, "L1 gauges of both workers and evictions")
    assert all(0 < v <= 3 for v in items.values()), items
    nbytes = {l["worker"]: v for _, l, v in fams["jollyjet_l1_bytes"]["samples"] if l.get("ns") == "product"}
    assert set(nbytes) == {"0", "1"} and all(v > 0 for v in nbytes.values()), nbytes
    # a cyclic walk over 8 keys never hits an L1 of 3; the same key twice on
    # one connection (one worker) does: the first read keeps it in the L1
    c = http.client.HTTPConnection("127.0.0.1", e.port, timeout=10)
    try:
        for _ in range(2):
            c.request("GET", "/api/products/p-0009")
            r = c.getresponse()
            assert r.status == 200, r.status
            r.read()
    finally:
        c.close()
    fams = scrape(e)
    assert value(fams, "jollyjet_cache_level_hits_total", ns="product", level="L1") > 0
    assert value(fams, "jollyjet_cache_level_hits_total", ns="product", level="L2") \
        + value(fams, "jollyjet_cache_misses_total", ns="product") > 0


def test_redis_script_reloads_and_reconnects(e):
    r = e.test_redis
    before = scrape(e)
    assert r.command("SCRIPT", "FLUSH").startswith(b"+OK")
    status, _, body = fresh_request(e, "POST", "/test/lock?name=noscript")   # EVALSHA -> NOSCRIPT -> reload
    assert status == 200, body[:200]
    mid = scrape(e)
    assert value(mid, "jollyjet_redis_script_reloads_total") - value(before, "jollyjet_redis_script_reloads_total") >= 1
    # drop every command connection: each worker reconnects once
    assert r.command("CLIENT", "KILL", "TYPE", "normal").startswith(b":")
    wait_until(lambda: value(scrape(e), "jollyjet_redis_reconnects_total")
               - value(before, "jollyjet_redis_reconnects_total") == 2, 15, 0.2, "a reconnect of each worker")
    wait_until(lambda: all(e.json("GET", "/health", timeout=2)[2]["redis"]["status"] == "up" for _ in range(6)),
               10, 0.1, "redis up again on every worker")


def reloads(e):
    fams = scrape(e)
    return (value(fams, "jollyjet_reloads_total", result="ok"), value(fams, "jollyjet_reloads_total", result="failed"),
            {l["worker"]: v for _, l, v in fams["jollyjet_policy_generation"]["samples"]})


def test_reloads_are_counted(e):
    ok0, failed0, gens0 = reloads(e)
    e.signal(signal.SIGHUP)
    wait_until(lambda: reloads(e)[0] == ok0 + 2, 10, 0.1, "two successful reloads (one per worker)")
    ok1, failed1, gens1 = reloads(e)
    assert failed1 == failed0
    assert all(gens1[w] == gens0[w] + 1 for w in ("0", "1")), (gens0, gens1)
    path = os.path.join(e.policy_dir, "ratelimits.lua")
    with open(path) as f:
        good = f.read()
    with open(path, "w") as f:
        f.write("return { rules = \n")
    try:
        e.signal(signal.SIGHUP)
        wait_until(lambda: reloads(e)[1] == failed1 + 2, 10, 0.1, "two failed reloads")
        assert reloads(e)[0] == ok1
    finally:
        with open(path, "w") as f:
            f.write(good)


def test_access_log_is_off_here(e):
    assert '"event":"access"' not in e.log_text()


def test_access_log_lines():
    r = Redis()
    e = Engine(r.port, workers=2, start=False, env={"ACCESS_LOG": "true"})
    try:
        with open(os.path.join(e.policy_dir, "cache.lua"), "w") as f:
            f.write("return { namespaces = { product = { consistency = 'bounded', max_lag_ms = 60000 } } }\n")
        e.start()
        sent = []   # (method, path, status, headers, body, route)
        for _ in range(12):
            s, h, b = fresh_request(e, "GET", "/api/products/p-0007")
            sent.append(("GET", "/api/products/p-0007", s, h, b, "/api/products/{id}"))
        for method, path, route in (("GET", "/nope?x=1", "unmatched"), ("POST", "/health", "unmatched"),
                                    ("GET", "/api/products?limit=2", "/api/products"),
                                    ("HEAD", "/test/ok", "/test/ok"), ("GET", "/p%22q%0a", "unmatched")):
            s, h, b = fresh_request(e, method, path)
            sent.append((method, path.split("?")[0], s, h, b, route))
        caches = [h.get("X-Cache") for m, p, s, h, b, _ in sent if p == "/api/products/p-0007"]
        assert "MISS" in caches and "HIT" in caches, caches

        def lines():
            out = {}
            for line in e.log_text().splitlines():
                doc = json.loads(line)   # every log line is JSON
                if doc.get("event") == "access":
                    out[doc["request_id"]] = doc
            return out
        ids = [h["X-Request-Id"] for _, _, _, h, _, _ in sent]
        got = wait_until(lambda: (lambda l: l if all(i in l for i in ids) else None)(lines()), 5, 0.05,
                         "an access line for every response")
        for method, path, status, h, body, route in sent:
            doc = got[h["X-Request-Id"]]
            assert doc["level"] == "info" and doc["msg"] == "access", doc
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", doc["time"]), doc
            assert doc["worker"] in (0, 1), doc
            assert doc["method"] == method, (doc, method)
            assert doc["path"] == path, (doc, path)
            assert doc["route"] == route, (doc, route)
            assert doc["status"] == status, (doc, status)
            assert doc["bytes"] == (0 if method == "HEAD" else len(body)), (doc, len(body))
            assert isinstance(doc["duration_ms"], (int, float)) and 0 <= doc["duration_ms"] < 5000, doc
            assert doc["cache"] == h.get("X-Cache"), (doc, h.get("X-Cache"))
            assert doc["remote"] == "127.0.0.1", doc
        assert {got[i]["worker"] for i in ids} == {0, 1}, "both workers log"
        # fast-path answers are counted and logged like the others
        fams = scrape(e)
        assert value(fams, "jollyjet_http_requests_total", route="/api/products/{id}", method="GET",
                     status="200") == 12
        assert value(fams, "jollyjet_cache_fastpath_hits_total") > 0, "the C fast path answered none"
    finally:
        e.close()
        r.close()


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port, workers=2, start=False, env={"RATELIMIT_ENABLED": "true", "WATCH": "false"})
    try:
        with open(os.path.join(e.policy_dir, "cache.lua"), "w") as f:
            f.write("return { namespaces = { product = { consistency = 'bounded', max_lag_ms = 60000 } },\n"
                    "         l1 = { max_items = 3 } }\n")
        e.start()
        e.test_redis = r
        t.run_all(globals(), e)
    finally:
        try:
            e.close()
        finally:
            r.close()
    t.run("access log lines", test_access_log_lines)
    t.done()


if __name__ == "__main__":
    main()
