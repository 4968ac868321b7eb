"""GET /dashboard in a real browser: Debian's chromium, headless, driven over
the DevTools protocol on a pipe (--remote-debugging-pipe: NUL-separated JSON
on file descriptors 3 and 4; standard library only, no websocket).

1. Its arithmetic: the page (as the engine serves it, CSP included) is
   served from a small Python server next to a scripted GET /metrics whose
   counters grow at known rates (requests, hits/misses, latency buckets,
   rejections over two routes) and a scripted GET /health; the DOM must show
   those rates, the hit ratio, the p99 and the Redis and policy figures.
2. Live: the engine (2 workers, rate limiting on with a small rule) serves
   product GETs, 404s and rate-limited searches from a background thread
   while the page polls the engine's own /metrics and /health; the test
   waits until the charts have plotted numbers, checks them against the
   engine, that the line pixels were drawn on each canvas and that nothing
   broke the Content-Security-Policy, and keeps a screenshot:
   <build dir>/artifacts/dashboard.png.

Exit 77 (ctest: skipped) only when no chromium binary exists at all
(engine/scripts/deps.sh test installs it)."""
import base64
import fcntl
import http.client
import http.server
import json
import os
import select
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

ARTIFACTS = os.path.join(os.path.dirname(os.path.abspath(harness.BIN)), "artifacts")
SKIP = 77

LIMITS = """return {
  rules = {
    { name = "dash_search", limit = 5, period = 60, route = "/api/products", methods = { "GET" },
      query = { "search" }, key = "ip" },
  },
}
"""


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """A headless chromium on the DevTools pipe."""

    def __init__(self, binary, workdir):
        self.workdir = workdir
        self.log_path = os.path.join(workdir, "chromium.log")
        self.buf = b""
        self.seq = 0
        self.events = []
        to_r, to_w = os.pipe()          # we write, chromium reads (its fd 3)
        from_r, from_w = os.pipe()      # chromium writes (its fd 4), we read
        # the child's ends above 10, so dup2 onto 3 and 4 cannot clobber them
        child_r = fcntl.fcntl(to_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_r)
        os.close(from_w)
        log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        env = dict(os.environ, HOME=workdir, XDG_CONFIG_HOME=workdir, XDG_CACHE_HOME=workdir)
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--remote-debugging-pipe", f"--user-data-dir={os.path.join(workdir, 'profile')}",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-sync",
                "--disable-background-networking", "--disable-component-update", "--disable-default-apps",
                "--disable-domain-reliability", "--no-pings", "--mute-audio", "--hide-scrollbars",
                "--window-size=1280,900",
                # nothing but the engine on loopback can be reached
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", "--proxy-server=direct://",
                "about:blank"]
        try:
            self.pid = os.posix_spawn(binary, args, env, setpgroup=0, file_actions=[
                (os.POSIX_SPAWN_DUP2, null, 0), (os.POSIX_SPAWN_DUP2, log, 1), (os.POSIX_SPAWN_DUP2, log, 2),
                (os.POSIX_SPAWN_DUP2, child_r, 3), (os.POSIX_SPAWN_DUP2, child_w, 4)])
        finally:
            for fd in (child_r, child_w, log, null):
                os.close(fd)
        self.w, self.r = to_w, from_r
        self.session = None

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("chromium did not answer in time; log:\n" + self.log_tail())
            ready, _, _ = select.select([self.r], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.r, 1 << 20)
                if not chunk:
                    raise AssertionError("chromium closed the DevTools pipe; log:\n" + self.log_tail())
                self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method, params=None, session=True, timeout=30):
        self.seq += 1
        msg = {"id": self.seq, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self.w, data):]
        deadline = time.monotonic() + timeout
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.seq:
                if "error" in m:
                    raise AssertionError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method, timeout=30):
        deadline = time.monotonic() + timeout
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        while True:
            m = self._read_message(deadline)
            if m.get("method") == method:
                return m
            self.events.append(m)

    def evaluate(self, expression):
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in r:
            raise AssertionError(f"page script failed: {r['exceptionDetails']}")
        return r["result"].get("value")

    def open(self, url):
        targets = self.call("Target.getTargets", session=False)["targetInfos"]
        page = next(t for t in targets if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", {"targetId": page["targetId"], "flatten": True},
                                 session=False)["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.call(domain + ".enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 900, "deviceScaleFactor": 1,
                                                         "mobile": False})
        self.call("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def problems(self):
        """Console errors, exceptions and CSP violations seen so far."""
        out = []
        for ev in self.events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append("exception: " + json.dumps(p.get("exceptionDetails", {}))[:500])
            elif m == "Log.entryAdded":
                e = p.get("entry", {})
                text = e.get("text", "")
                # a 404 of /metrics (before it exists) is logged by the browser; that is expected
                if e.get("level") == "error" and "Failed to load resource" not in text:
                    out.append(f"log: {text}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") == "error":
                out.append("console.error: " + json.dumps(p.get("args", []))[:500])
        return out

    def screenshot(self, path):
        data = self.call("Page.captureScreenshot", {"format": "png"})["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-3000:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self):
        try:
            self.call("Browser.close", session=False, timeout=5)
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid, _ = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            time.sleep(0.05)
        else:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        try:   # its helper processes share its process group
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for fd in (self.w, self.r):
            os.close(fd)


class Traffic:
    """Product GETs (mostly cache hits), 404s and rate-limited searches until stopped."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.counts = {}
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        paths = [f"/api/products/p-{i:04d}" for i in range(1, 21)] + ["/api/products/p-9999", "/no/such/path",
                                                                       "/api/products?search=dash"]
        conn = None
        i = 0
        while not self.stop.is_set():
            path = paths[i % len(paths)]
            i += 1
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                conn.request("GET", path)
                r = conn.getresponse()
                r.read()
                self.counts[r.status] = self.counts.get(r.status, 0) + 1
                if r.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException):
                if conn:
                    conn.close()
                conn = None
                time.sleep(0.05)
            time.sleep(0.003)
        if conn:
            conn.close()

    def finish(self):
        self.stop.set()
        self.thread.join(timeout=10)


STATE_JS = r"""
(() => {
  const st = document.getElementById('status');
  const out = { polls: +st.getAttribute('data-polls'), metrics: st.getAttribute('data-metrics'),
                health: st.getAttribute('data-health'), text: st.textContent, values: {}, texts: {}, charts: {} };
  document.querySelectorAll('[id^="v-"]').forEach(e => {
    out.values[e.id.slice(2)] = e.getAttribute('data-value');
    out.texts[e.id.slice(2)] = e.textContent;
  });
  document.querySelectorAll('canvas').forEach(c => {
    // pixels of the series' own colour: the line was really drawn
    const hex = c.getAttribute('data-color') || '#000000';
    const want = [1, 3, 5].map(i => parseInt(hex.slice(i, i + 2), 16));
    const px = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    for (let i = 0; i < px.length; i += 4) {
      if (px[i + 3] > 200 && Math.abs(px[i] - want[0]) < 24 && Math.abs(px[i + 1] - want[1]) < 24 &&
          Math.abs(px[i + 2] - want[2]) < 24) ink++;
    }
    out.charts[c.id.slice(2)] = { points: +c.getAttribute('data-points'), last: c.getAttribute('data-last'),
                                  max: c.getAttribute('data-max'), ink: ink, width: c.width };
  });
  return out;
})()
"""


def number(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


class ScriptedMetrics:
    """A server of its own: /dashboard (the engine's bytes and headers), and a
    /metrics whose counters grow at known rates since the server started."""

    RATE = 100.0          # requests per second, half on each of two routes
    HIT_RATE = 0.9        # of 50 lookups per second
    REJECT_RATE = 5.0     # 429s per second
    # per second, over both routes: 90 observations <= 5 ms, 8 in (10, 25] ms, 2 in (100, 250] ms
    BUCKETS = [("0.001", 0), ("0.005", 90), ("0.01", 90), ("0.025", 98), ("0.1", 98), ("0.25", 100),
               ("1", 100), ("+Inf", 100)]
    P99_MS = 175.0        # rank 99 of 100: half-way into the (100, 250] ms bucket (linear interpolation)

    def __init__(self, page, page_headers):
        outer = self
        self.t0 = time.monotonic()
        self.scrapes = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/dashboard":
                    self.reply(200, page, {k: v for k, v in page_headers.items()
                                           if k.lower() in ("content-type", "content-security-policy")})
                elif self.path == "/metrics":
                    outer.scrapes += 1
                    self.reply(200, outer.exposition().encode(), {"Content-Type": "text/plain; version=0.0.4"})
                elif self.path == "/health":
                    self.reply(200, json.dumps(outer.health()).encode(), {"Content-Type": "application/json"})
                else:
                    self.reply(404, b'{"success":false,"error":"not_found","message":"no"}',
                               {"Content-Type": "application/json"})

            def reply(self, status, body, headers):
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def exposition(self):
        # Counters grow in proportion to time (fractional values are valid in the
        # text format), so every ratio between two scrapes is exact.
        t = time.monotonic() - self.t0 + 10   # counters already at 10 s worth when the page first looks
        half = self.RATE * t / 2
        lookups = self.RATE / 2 * t
        lines = ["# HELP jollyjet_http_requests_total Requests answered.",
                 "# TYPE jollyjet_http_requests_total counter"]
        for route, status in (("/api/products/{id}", "200"), ("/api/products", "200")):
            lines.append(f'jollyjet_http_requests_total{{route="{route}",method="GET",status="{status}"}} '
                         f"{half:.4f}")
        lines.append('jollyjet_http_requests_total{route="unmatched",method="GET",status="404"} 0')
        lines.append("# TYPE jollyjet_http_request_duration_seconds histogram")
        for route in ("/api/products/{id}", "/api/products"):
            for le, per_s in self.BUCKETS:
                lines.append(f'jollyjet_http_request_duration_seconds_bucket{{route="{route}",le="{le}"}} '
                             f"{per_s * t / 2:.4f}")
            lines.append(f'jollyjet_http_request_duration_seconds_sum{{route="{route}"}} {0.003 * half:.6f}')
            lines.append(f'jollyjet_http_request_duration_seconds_count{{route="{route}"}} {half:.4f}')
        lines += [
            "# TYPE jollyjet_cache_hits_total counter",
            f'jollyjet_cache_hits_total{{ns="product"}} {lookups * self.HIT_RATE * 0.8:.4f}',
            f'jollyjet_cache_hits_total{{ns="list"}} {lookups * self.HIT_RATE * 0.2:.4f}',
            f'jollyjet_cache_misses_total{{ns="product"}} {lookups * (1 - self.HIT_RATE):.4f}',
            f'jollyjet_cache_stale_total{{ns="product"}} 3',
            f'jollyjet_ratelimit_allowed_total{{rule="default"}} {self.RATE * t:.4f}',
            f'jollyjet_ratelimit_rejected_total{{rule="default"}} {self.REJECT_RATE * t:.4f}',
            'jollyjet_odd_label{path="a \\"quoted\\" \\\\ value",x="}"} 1',
            "jollyjet_gauge_without_labels 42",
            "",
        ]
        return "\n".join(lines)

    @staticmethod
    def health():
        return {"status": "ok", "redis": {"status": "up", "used_memory": 50 * 1048576, "maxmemory": 100 * 1048576},
                "database": {"status": "up"}, "policies": {"generation": 7, "last_reload_error": None},
                "worker": 0, "version": "scripted"}

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def wait_for_state(browser, ready, shot_name, timeout=60):
    try:
        return harness.wait_until(lambda: ready(browser.evaluate(STATE_JS)), timeout, 0.5,
                                  "the dashboard to plot live data")
    except AssertionError:
        os.makedirs(ARTIFACTS, exist_ok=True)
        path = os.path.join(ARTIFACTS, shot_name.replace(".png", "-failed.png"))
        browser.screenshot(path)
        print("last state:", json.dumps(browser.evaluate(STATE_JS), indent=1))
        print("screenshot:", path)
        raise


def screenshot(browser, name):
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, name)
    browser.screenshot(shot)
    with open(shot, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return shot


def close_to(value, want, rel):
    v = number(value)
    return v is not None and abs(v - want) <= rel * want


def test_dashboard_arithmetic_against_a_scripted_metrics_endpoint(redis, chromium):
    engine = harness.Engine(redis.port, workers=1)
    work = tempfile.mkdtemp(prefix="jj-chromium-")
    server = browser = None
    try:
        st, headers, page = engine.get("/dashboard")
        assert st == 200
        server = ScriptedMetrics(page, headers)
        browser = Browser(chromium, work)
        browser.open(f"http://127.0.0.1:{server.port}/dashboard")
        S = ScriptedMetrics

        def ready(s):
            v, c = s["values"], s["charts"]
            ok = s["polls"] >= 4 and s["metrics"] == "ok" and s["health"] == "ok" and all(
                c[k]["points"] >= 3 for k in ("hit-ratio", "request-rate", "p99", "ratelimit-rejections"))
            return s if ok and close_to(v["request-rate"], S.RATE, 0.3) else None

        state = wait_for_state(browser, ready, "dashboard-scripted.png")
        v, texts = state["values"], state["texts"]
        print("    scripted:", json.dumps({k: texts[k] for k in sorted(texts)}))
        assert close_to(v["hit-ratio"], S.HIT_RATE, 0.001), v["hit-ratio"]
        assert close_to(v["request-rate"], S.RATE, 0.3), v["request-rate"]
        assert close_to(v["p99"], S.P99_MS, 0.001), v["p99"]
        assert close_to(v["ratelimit-rejections"], S.REJECT_RATE, 0.35), v["ratelimit-rejections"]
        assert v["redis-status"] == "up" and int(v["redis-memory"]) == 50 * 1048576, v
        sub = browser.evaluate("document.getElementById('s-redis-memory').textContent")
        assert texts["redis-memory"] == "50.0 MiB" and sub == "of 100.0 MiB (50.0%)", (texts, sub)
        assert v["generation"] == "7", v
        for key, chart in state["charts"].items():
            assert chart["points"] >= 3 and chart["ink"] > 20, (key, chart)
        problems = browser.problems()
        assert not problems, "browser reported:\n" + "\n".join(problems)
        assert server.scrapes >= 4
        print("    screenshot:", screenshot(browser, "dashboard-scripted.png"))
    finally:
        if browser:
            browser.close()
        if server:
            server.close()
        engine.close()
        shutil.rmtree(work, ignore_errors=True)


def test_dashboard_renders_live_charts(redis, chromium):
    engine = harness.Engine(redis.port, workers=2, env={"RATELIMIT_ENABLED": "true"}, start=False)
    work = tempfile.mkdtemp(prefix="jj-chromium-")
    browser = traffic = None
    t0 = time.monotonic()
    try:
        with open(os.path.join(engine.policy_dir, "ratelimits.lua"), "w") as f:
            f.write(LIMITS)
        engine.start()
        has_metrics = engine.get("/metrics")[0] == 200
        health = engine.json("GET", "/health")[2]
        has_memory = isinstance(health["redis"].get("used_memory"), int)
        assert has_metrics, "GET /metrics does not answer 200"
        traffic = Traffic(engine.port)
        browser = Browser(chromium, work)
        browser.open(f"http://127.0.0.1:{engine.port}/dashboard")

        def ready(s):
            v, c = s["values"], s["charts"]
            ok = (s["polls"] >= 5 and s["health"] == "ok" and number(v["generation"]) is not None
                  and v["redis-status"] == "up" and c["generation"]["points"] >= 3
                  and number(v["hit-ratio"]) is not None and c["hit-ratio"]["points"] >= 3)
            if has_metrics:
                ok = ok and s["metrics"] == "ok" and all(
                    number(v[k]) is not None and c[k]["points"] >= 3
                    for k in ("request-rate", "p99", "ratelimit-rejections"))
                ok = ok and number(c["ratelimit-rejections"]["max"] or "0") > 0
            if has_memory:
                ok = ok and number(v["redis-memory"]) is not None and c["redis-memory"]["points"] >= 3
            return s if ok else None

        state = wait_for_state(browser, ready, "dashboard.png")
        v, c = state["values"], state["charts"]
        print("    dashboard:", json.dumps({k: state["texts"][k] for k in sorted(state["texts"])}))
        print("    points:", json.dumps({k: c[k]["points"] for k in sorted(c)}), "metrics:", state["metrics"],
              "polls:", state["polls"])

        # values agree with the engine
        assert 0 <= number(v["hit-ratio"]) <= 1, v["hit-ratio"]
        assert number(v["hit-ratio"]) > 0.5, f"product GETs are mostly cache hits: {v['hit-ratio']}"
        assert int(number(v["generation"])) == engine.json("GET", "/health")[2]["policies"]["generation"]
        if has_metrics:
            assert state["metrics"] == "ok"
            assert number(v["request-rate"]) > 5, v["request-rate"]   # the traffic thread alone does far more
            assert 0 < number(v["p99"]) < 5000, v["p99"]
            assert number(v["ratelimit-rejections"]) >= 0
        if not has_memory:
            assert state["texts"]["redis-memory"] == "no data", state
        # every chart with points has its line on the canvas
        for key, chart in c.items():
            assert chart["width"] > 0, key
            if chart["points"] >= 2:
                assert chart["ink"] > 20, f"{key}: {chart['points']} points but no line pixels ({chart['ink']})"
        problems = browser.problems()
        assert not problems, "browser reported:\n" + "\n".join(problems)
        assert traffic.counts.get(200, 0) > 50 and traffic.counts.get(404, 0) > 0 and traffic.counts.get(429, 0) > 0, \
            traffic.counts

        shot = screenshot(browser, "dashboard.png")
        print(f"    screenshot: {shot} ({os.path.getsize(shot)} bytes); {time.monotonic() - t0:.1f}s")
    finally:
        if traffic:
            traffic.finish()
        if browser:
            browser.close()
        engine.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    binary = find_chromium()
    if not binary:
        print("SKIP: no chromium binary on PATH (engine/scripts/deps.sh test installs Debian's chromium)")
        sys.exit(SKIP)
    redis = harness.Redis()
    runner = harness.Runner()
    try:
        runner.run_all(dict(globals()), redis, binary)
    finally:
        redis.close()
    runner.done()
