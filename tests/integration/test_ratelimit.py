"""Rate limiting end to end (jollyjet.ratelimit, engine.ratelimit): headers,
429s, exactness across two engine instances sharing one Redis, a burst at a
window boundary, every failure mode with Redis down, RATELIMIT_ENABLED=false
and hot reload of policies/ratelimits.lua.

The harness runs engines with RATELIMIT_ENABLED=false; these tests opt in."""
import http.client
import json
import math
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Engine, Redis, Runner, wait_until  # noqa: E402

# Test routes: each answers 200 {"worker": N} without touching Redis or the
# database, so a Redis outage changes nothing but the rate limiter.
HANDLER = """-- routes of tests/integration/test_ratelimit.py
local core = require "engine.core"
local function hello(req)
  return 200, { worker = core.info().worker, path = req.path }
end
local routes = {}
for _, name in ipairs({ "open", "closed", "local", "gcra", "window", "tight", "free" }) do
  routes[#routes + 1] = { "GET", "/api/rl/" .. name, hello }
end
return { routes = routes }
"""

RL_HEADERS = ("ratelimit-policy", "ratelimit", "x-ratelimit-limit", "x-ratelimit-remaining",
              "x-ratelimit-reset")


def policy(*rules, extra=""):
    """A ratelimits.lua with the given rules (Lua table constructors)."""
    return "return {\n%s  rules = {\n%s\n  },\n}\n" % (extra, ",\n".join("    " + r for r in rules))


def start(redis, policy_text=None, workers=2, env=None):
    e = Engine(redis.port, workers=workers, env=dict({"RATELIMIT_ENABLED": "true"}, **(env or {})), start=False)
    with open(os.path.join(e.lua_dir, "handlers", "zz_ratelimit_test.lua"), "w") as f:
        f.write(HANDLER)
    if policy_text is not None:
        with open(os.path.join(e.policy_dir, "ratelimits.lua"), "w") as f:
            f.write(policy_text)
    e.start()
    return e


def lower(headers):
    return {k.lower(): v for k, v in headers.items()}


def test_headers_on_api_routes_not_on_health(redis):
    e = start(redis)   # the shipped policy
    try:
        s, h, _ = e.get("/api/products/p-0001")
        h = lower(h)
        assert s == 200, s
        assert h["ratelimit-policy"] == '"default";q=100;w=60', h
        assert h["ratelimit"] == '"default";r=99;t=1', h
        assert (h["x-ratelimit-limit"], h["x-ratelimit-remaining"], h["x-ratelimit-reset"]) == ("100", "99", "1"), h
        s, h, _ = e.get("/health")
        assert s == 200
        assert not set(lower(h)) & set(RL_HEADERS), h
        # 404 and 405 are not counted (and carry no headers)
        s, h, _ = e.get("/api/no-such-thing")
        assert s == 404 and not set(lower(h)) & set(RL_HEADERS), (s, h)
        s, h, _ = e.request("DELETE", "/api/products")
        assert s == 405 and not set(lower(h)) & set(RL_HEADERS), (s, h)
        # every /api/ route, whatever its answer (here a 400 from the handler)
        s, h, _ = e.request("POST", "/api/products", body=b"{}", headers={"Content-Type": "application/json"})
        h = lower(h)
        assert s == 400, s
        assert h["x-ratelimit-remaining"] == "98", h
        s, h, _ = e.get("/api/wishlist")
        assert s == 200 and lower(h)["x-ratelimit-remaining"] == "97", (s, h)
        # a search is limited by "default" and "search" (30/min): both listed,
        # the legacy trio tells the most restrictive
        s, h, _ = e.get("/api/products?search=wireless")
        h = lower(h)
        assert s == 200, s
        assert h["ratelimit-policy"] == '"default";q=100;w=60, "search";q=30;w=60', h
        assert re.fullmatch(r'"default";r=96;t=\d+, "search";r=29;t=2', h["ratelimit"]), h
        assert (h["x-ratelimit-limit"], h["x-ratelimit-remaining"]) == ("30", "29"), h
        s, h, _ = e.get("/api/products?page=1")
        h = lower(h)
        assert h["ratelimit-policy"] == '"default";q=100;w=60', h
    finally:
        e.close()


def test_429_body_and_retry_after(redis):
    e = start(redis, policy('{ name = "tight", limit = 3, period = 30, route = "/api/rl/tight" }'))
    try:
        for left in (2, 1, 0):
            s, h, _ = e.get("/api/rl/tight")
            h = lower(h)
            assert s == 200, s
            assert h["x-ratelimit-remaining"] == str(left), h
            assert h["ratelimit"] == '"tight";r=%d;t=%d' % (left, 10 * (3 - left)), h
        s, h, body = e.get("/api/rl/tight")
        h = lower(h)
        assert s == 429, s
        assert h["retry-after"] == "10", h           # one unit every 30/3 s
        assert h["content-type"] == "application/json", h
        assert h["ratelimit-policy"] == '"tight";q=3;w=30', h
        assert h["ratelimit"] == '"tight";r=0;t=30', h
        assert (h["x-ratelimit-limit"], h["x-ratelimit-remaining"], h["x-ratelimit-reset"]) == ("3", "0", "30"), h
        j = json.loads(body)
        assert j == {"success": False, "error": "Rate limit exceeded",
                     "message": "Too many requests, please try again later.", "retryAfter": 10}, j
        # other routes have no rule in this policy
        s, h, _ = e.get("/api/rl/free")
        assert s == 200 and not set(lower(h)) & set(RL_HEADERS), (s, h)
    finally:
        e.close()


class Client(threading.Thread):
    """One keep-alive client sending GET path until `stop`; records
    (send time, receive time, status) of every request."""

    def __init__(self, port, path, barrier, stop):
        super().__init__(daemon=True)
        self.port, self.path, self.barrier, self.stop = port, path, barrier, stop
        self.log = []
        self.error = None

    def run(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            self.barrier.wait(timeout=30)
            while time.monotonic() < self.stop[0]:
                t0 = time.monotonic()
                conn.request("GET", self.path)
                r = conn.getresponse()
                r.read()
                self.log.append((t0, time.monotonic(), r.status))
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        except Exception as ex:  # noqa: BLE001
            self.error = ex
        finally:
            conn.close()


def test_two_instances_admit_exactly_what_gcra_allows(redis):
    exactly(redis, "/api/rl/gcra", "/api/rl/gcra", "rlx%d:" % os.getpid())


def test_two_instances_exact_on_the_c_fast_path(redis):
    # a cached product: the C fast path checks the rule (one shared budget)
    exactly(redis, "/api/products/{id}", "/api/products/p-0001", "rlf%d:" % os.getpid(), warm=True)


def exactly(redis, route, path, prefix, warm=False):
    pol = policy('{ name = "exact", limit = 100, period = 60, route = "%s" }' % route)
    a = start(redis, pol, env={"REDIS_KEY_PREFIX": prefix})
    b = start(redis, pol, env={"REDIS_KEY_PREFIX": prefix})
    try:
        if warm:   # cache the product, then forget what that cost
            assert a.get(path)[0] == 200
            assert a.get(path, headers={"Cache-Control": "no-cache"})[0] == 200
            # the C fast path serves a worker once its cache library trusts
            # Redis (fastpath.trust, after the journal replay of its first
            # cache read): reach every worker of both instances first (each
            # request is a new connection, on any worker)
            for e in (a, b):
                for _ in range(16):
                    assert e.get(path)[0] == 200
            redis.command("DEL", prefix + "rl:g:exact:ip:127.0.0.1")
        n, duration = 200, 3.0
        barrier = threading.Barrier(n + 1)
        stop = [math.inf]
        clients = [Client((a, b)[i % 2].port, path, barrier, stop) for i in range(n)]
        for c in clients:
            c.start()
        barrier.wait(timeout=30)
        stop[0] = time.monotonic() + duration
        for c in clients:
            c.join(timeout=60)
        errors = [c.error for c in clients if c.error]
        assert not errors, errors[:3]
        log = [x for c in clients for x in c.log]
        statuses = {}
        for _, _, s in log:
            statuses[s] = statuses.get(s, 0) + 1
        assert set(statuses) <= {200, 429}, statuses
        ok = statuses.get(200, 0)
        first_send = min(x[0] for x in log)
        first_recv = min(x[1] for x in log)
        last_send = max(x[0] for x in log)
        last_recv = max(x[1] for x in log)
        # GCRA: the first admitted request empties nothing; the bucket holds
        # 100 and gets one unit back every 0.6 s. Whatever Redis's clock
        # read for the first and last admitted requests lies inside what the
        # clients saw, so:
        upper = 100 + math.floor((last_recv - first_send) / 0.6)
        lower_ = 100 + math.floor((last_send - first_recv) / 0.6) - 1   # the last refill may find no taker
        print(f"    {len(log)} requests from {n} clients over {last_recv - first_send:.2f}s on 2 instances: "
              f"{ok} admitted (allowed between {lower_} and {upper}), {statuses.get(429, 0)} refused", flush=True)
        assert ok <= upper, f"admitted {ok} > {upper}"
        assert ok >= lower_, f"admitted {ok} < {lower_}"
        per_instance = {}
        for i, c in enumerate(clients):
            per_instance[i % 2] = per_instance.get(i % 2, 0) + sum(1 for x in c.log if x[2] == 200)
        assert per_instance[0] > 0 and per_instance[1] > 0, per_instance   # both really shared one budget
        if warm:   # the admitted ones were answered in C
            assert fast_hits(a) + fast_hits(b) >= ok // 2, (fast_hits(a), fast_hits(b), ok)
    finally:
        a.close()
        b.close()


def burst(port, path, n):
    """n requests at once (one connection each); [(send, recv, status)]."""
    barrier = threading.Barrier(n)
    out = []
    lock = threading.Lock()

    def one():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            c.connect()
            barrier.wait(timeout=10)
            t0 = time.time()
            c.request("GET", path)
            r = c.getresponse()
            r.read()
            with lock:
                out.append((t0, time.time(), r.status))
        finally:
            c.close()

    ts = [threading.Thread(target=one, daemon=True) for _ in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=30)
    assert len(out) == n, f"{len(out)} of {n} answered"
    return out


def sleep_until_phase(period, phase):
    """Sleeps until time.time() % period == phase (the next such moment)."""
    now = time.time()
    wait = (phase - now % period) % period
    time.sleep(wait)


def test_sliding_window_burst_at_a_boundary(redis):
    period, limit = 2, 10
    e = start(redis, policy('{ name = "window", limit = %d, period = %d, algorithm = "sliding_window", '
                            'route = "/api/rl/window" }' % (limit, period)))
    try:
        admitted = []
        # just before a period boundary (where a fixed window would reset) ...
        sleep_until_phase(period, period - 0.3)
        first = burst(e.port, "/api/rl/window", 2 * limit)
        n1 = sum(1 for x in first if x[2] == 200)
        admitted += [x for x in first if x[2] == 200]
        # ... and just after it: a fixed window would admit `limit` again
        sleep_until_phase(period, 0.05)
        second = burst(e.port, "/api/rl/window", 2 * limit)
        n2 = sum(1 for x in second if x[2] == 200)
        admitted += [x for x in second if x[2] == 200]
        # once the first burst has left the window: exactly `limit` again
        time.sleep(max(0.0, max(x[1] for x in first) + period + 0.1 - time.time()))
        third = burst(e.port, "/api/rl/window", 2 * limit)
        n3 = sum(1 for x in third if x[2] == 200)
        admitted += [x for x in third if x[2] == 200]
        print(f"    bursts of {2 * limit}: {n1} admitted before the boundary, {n2} just after it, "
              f"{n3} one window later", flush=True)
        assert (n1, n2, n3) == (limit, 0, limit), (n1, n2, n3)
        # never more than `limit` admitted inside any window: requests i..j
        # surely shared one when j's answer came less than `period` after i
        # was sent
        admitted.sort()
        for i, (send_i, _, _) in enumerate(admitted):
            inside = sum(1 for (_, recv_j, _) in admitted[i:] if recv_j - send_i < period)
            assert inside <= limit, (i, inside)
    finally:
        e.close()


def get_json(e, path):
    c = http.client.HTTPConnection("127.0.0.1", e.port, timeout=5)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def test_redis_down_each_failure_mode(_redis):
    rd = Redis()
    workers, local_limit = 2, 5
    e = start(rd, policy(
        '{ name = "open", limit = 1, period = 60, route = "/api/rl/open", failure_mode = "open" }',
        '{ name = "closed", limit = 1, period = 60, route = "/api/rl/closed", failure_mode = "closed" }',
        '{ name = "local", limit = %d, period = 600, route = "/api/rl/local", failure_mode = "local" }' % local_limit),
        workers=workers)
    try:
        # with Redis up every rule limits as usual
        assert e.get("/api/rl/open")[0] == 200
        assert e.get("/api/rl/open")[0] == 429
        assert e.get("/api/rl/closed")[0] == 200
        assert e.get("/api/rl/closed")[0] == 429
        rd.stop()
        # every worker must have noticed (each /health answers for one worker)
        down = set()

        def all_down():
            s, _, body = get_json(e, "/health")
            j = json.loads(body)
            if j["redis"]["status"] == "down":
                down.add(j["worker"])
            return len(down) == workers
        wait_until(all_down, 20, 0.05, "every worker to see Redis down")

        # open: allowed (the limit of 1 was spent while Redis was up)
        for _ in range(10):
            s, h, _ = get_json(e, "/api/rl/open")
            assert s == 200, s
            assert "ratelimit" not in h, h
        # closed: 503 with a clear JSON message
        s, h, body = get_json(e, "/api/rl/closed")
        assert s == 503, s
        j = json.loads(body)
        assert j["success"] is False and j["error"] == "rate_limit_unavailable", j
        assert "Redis" in j["message"] and "rate limiting" in j["message"].lower(), j
        assert h["content-type"] == "application/json" and "retry-after" in h, h
        # local: each worker admits at most ceil(limit / workers)
        per_worker = {}
        seen = {}
        refused = 0
        for _ in range(60):
            s, h, body = get_json(e, "/api/rl/local")   # a new connection each: both workers get some
            if s == 200:
                w = json.loads(body)["worker"]
                per_worker[w] = per_worker.get(w, 0) + 1
                assert h["ratelimit-policy"] == '"local";q=%d;w=600' % local_limit, h
            else:
                assert s == 429, s
                assert int(h["retry-after"]) >= 1, h
                refused += 1
            seen[s] = seen.get(s, 0) + 1
        share = math.ceil(local_limit / workers)
        print(f"    Redis down: open 10/10 allowed, closed 503, local admitted {per_worker} "
              f"(at most {share} per worker), {refused} refused", flush=True)
        assert all(n <= share for n in per_worker.values()), per_worker
        assert sum(per_worker.values()) <= share * workers
        assert max(per_worker.values()) == share, per_worker   # the local budget is really used
        assert "failing to the local limiter" in e.log_text()
        assert "failing open" in e.log_text() and "failing closed" in e.log_text()
    finally:
        e.close()
        rd.close()


def test_ratelimit_enabled_false_switches_every_rule_off(redis):
    e = start(redis, policy('{ name = "tight", limit = 1, period = 60, prefix = "/api/" }'),
              env={"RATELIMIT_ENABLED": "false"})
    try:
        for _ in range(5):
            s, h, _ = e.get("/api/rl/tight")
            assert s == 200, s
            assert not set(lower(h)) & set(RL_HEADERS), h
        assert "RATELIMIT_ENABLED=false" in e.log_text()
    finally:
        e.close()
    bad = Engine(redis.port, env={"RATELIMIT_ENABLED": "maybe"}, start=False)
    try:
        bad.start(wait=False)
        rc = bad.proc.wait(timeout=20)
        assert rc != 0
        assert "RATELIMIT_ENABLED" in bad.log_text(), bad.log_text()[-500:]
    finally:
        bad.close()


def test_policy_is_validated_and_hot_reloaded(redis):
    path_rule = '{ name = "tight", limit = %d, period = 60, route = "/api/rl/tight" }'
    e = start(redis, policy(path_rule % 3))
    try:
        assert lower(e.get("/api/rl/tight")[1])["ratelimit-policy"] == '"tight";q=3;w=60'
        with open(os.path.join(e.policy_dir, "ratelimits.lua"), "w") as f:
            f.write(policy(path_rule % 7))
        wait_until(lambda: all(lower(e.get("/api/rl/tight")[1]).get("ratelimit-policy") == '"tight";q=7;w=60'
                               for _ in range(4)), 20, 0.1, "the new limit")
        # a bad edit is rejected and reported; the good policy keeps serving
        for text, reason in ((policy('{ name = "x", limit = 2, period = 60, route = "/api/rl/tight", cost = 3 }'),
                              "can ever allow"),
                             (policy('{ name = "x", limit = 2, period = 60, route = "/api/rl/typo" }'),
                              "no route"),
                             (policy('{ name = "x", preset = "nope", prefix = "/api/" }'), "unknown preset")):
            with open(os.path.join(e.policy_dir, "ratelimits.lua"), "w") as f:
                f.write(text)

            def reported():
                j = json.loads(e.get("/health")[2])
                err = j["policies"]["last_reload_error"]
                return err and "ratelimits.lua" in err and reason in err
            wait_until(reported, 20, 0.1, "the reload error " + reason)
            assert lower(e.get("/api/rl/tight")[1])["ratelimit-policy"] == '"tight";q=7;w=60'
    finally:
        e.close()


def fast_hits(e):
    s, _, body = e.get("/api/cache/metrics")
    assert s == 200, s
    return json.loads(body)["fastPathHits"]


def test_fast_path_checks_the_rules_itself(redis):
    """GET /api/products/{id} answered by the C fast path applies the rules
    that C can check (keyed by ip or route) with the same budgets, headers
    and 429 as the Lua middleware, which still handles requests the fast
    path leaves to Lua (here: Cache-Control: no-cache)."""
    e = start(redis, policy(
        '{ name = "default", limit = 100, period = 60, prefix = "/api/", key = "ip" }',
        '{ name = "prod", limit = 4, period = 60, route = "/api/products/{id}", methods = { "GET" }, '
        'key = "route" }'), workers=1)
    try:
        path = "/api/products/p-0007"
        s, h, first = e.get(path)          # a miss: the handler, limits applied by C before it
        h = lower(h)
        assert s == 200, s
        assert h["ratelimit-policy"] == '"default";q=100;w=60, "prod";q=4;w=60', h
        assert re.fullmatch(r'"default";r=99;t=\d+, "prod";r=3;t=15', h["ratelimit"]), h
        assert (h["x-ratelimit-limit"], h["x-ratelimit-remaining"], h["x-ratelimit-reset"]) == ("4", "3", "15"), h
        before = fast_hits(e)                                     # default: 98 left
        s, h, body = e.get(path)            # a fresh hit: answered in C
        h = lower(h)
        assert s == 200 and body == first and h["x-cache"] == "HIT", (s, h)
        assert fast_hits(e) == before + 1                         # default: 96 left
        assert re.fullmatch(r'"default";r=97;t=\d+, "prod";r=2;t=30', h["ratelimit"]), h
        assert h["x-ratelimit-remaining"] == "2", h
        # HEAD: "prod" is for GET only, so only "default" applies
        s, h, _ = e.request("HEAD", path)
        h = lower(h)
        assert s == 200 and h["ratelimit-policy"] == '"default";q=100;w=60', h
        assert re.fullmatch(r'"default";r=95;t=\d+', h["ratelimit"]), h
        # the Lua middleware (no-cache sends the request to the handler) shares the budgets
        s, h, _ = e.get(path, headers={"Cache-Control": "no-cache"})
        h = lower(h)
        assert s == 200, s
        assert re.fullmatch(r'"default";r=94;t=\d+, "prod";r=1;t=45', h["ratelimit"]), h
        s, h, _ = e.get(path)
        assert lower(h)["x-ratelimit-remaining"] == "0", h
        # refused in C: the 429 of the middleware; "default" was charged first
        fast = e.get(path)
        lua = e.get(path, headers={"Cache-Control": "no-cache"})
        for s, h, body in (fast, lua):
            h = lower(h)
            assert s == 429, s
            assert h["content-type"] == "application/json", h
            assert h["retry-after"] == "15", h
            assert h["ratelimit-policy"] == '"default";q=100;w=60, "prod";q=4;w=60', h
            assert (h["x-ratelimit-limit"], h["x-ratelimit-remaining"], h["x-ratelimit-reset"]) == ("4", "0", "60"), h
            assert json.loads(body) == {"success": False, "error": "Rate limit exceeded",
                                        "message": "Too many requests, please try again later.",
                                        "retryAfter": 15}, body
        assert re.fullmatch(r'"default";r=92;t=\d+, "prod";r=0;t=60', lower(fast[1])["ratelimit"]), fast[1]
        assert re.fullmatch(r'"default";r=91;t=\d+, "prod";r=0;t=60', lower(lua[1])["ratelimit"]), lua[1]
        # an allow-listed client is not limited on either path
    finally:
        e.close()
    e = start(redis, policy('{ name = "tiny", limit = 1, period = 60, route = "/api/products/{id}", key = "ip" }',
                            extra='  allow = { "127.0.0.0/8" },\n'), workers=1)
    try:
        for _ in range(3):
            s, h, _ = e.get("/api/products/p-0008")
            assert s == 200 and not set(lower(h)) & set(RL_HEADERS), (s, h)
    finally:
        e.close()


def main():
    redis = Redis()
    r = Runner()
    try:
        r.run_all(globals(), redis)
    finally:
        redis.close()
    r.done()


if __name__ == "__main__":
    main()
