"""tests/embed_host.c: a host of its own embeds the engine through
jollyjet.h and serves a product through the Lua handlers and policies.
(Run by ctest as `embed_host`, with JJ_EMBED_HOST pointing at the binary.)"""
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402

BIN = os.environ.get("JJ_EMBED_HOST") or os.path.join(harness.SRC, "build", "tests", "embed_host")


class Host:
    def __init__(self, redis_port):
        self.dir = tempfile.mkdtemp(prefix="jj-embed-")
        self.lua_dir = os.path.join(self.dir, "lua")
        self.policy_dir = os.path.join(self.dir, "policies")
        shutil.copytree(os.path.join(harness.SRC, "lua"), self.lua_dir)
        shutil.copytree(os.path.join(harness.SRC, "policies"), self.policy_dir)
        env = dict(os.environ)
        env.pop("REDIS_URL", None)
        env.update({
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port),
            "REDIS_KEY_PREFIX": f"embed{os.getpid()}:",
            "DB_PATH": os.path.join(self.dir, "var", "jj.db"),
            "LUA_DIR": self.lua_dir, "POLICY_DIR": self.policy_dir,
            "MIGRATIONS_DIR": os.path.join(harness.SRC, "engine", "migrations"),
            "LOG_LEVEL": "info",
        })
        if harness.PG_URL:   # the PostgreSQL pass: a database of its own
            env["DATABASE_URL"] = harness.pg_database(f"jj_embed_{os.getpid()}")
        self.log_path = os.path.join(self.dir, "host.log")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([BIN, "0"], env=env, stdout=subprocess.PIPE, stderr=self.log, cwd=self.dir)
        harness._procs.append(self.proc)
        line = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(20)
        if not line or not line[0].startswith(b"listening on "):
            raise AssertionError(f"embed_host did not start: {line!r}\n{self.log_text()}")
        self.port = int(line[0].split()[-1])

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        out = self.proc.stdout.read()
        self.log.close()
        text = self.log_text()
        for mark in harness.Engine.SANITIZER_MARKS:
            if mark in text:
                sys.stderr.write(text)
                raise AssertionError(f"embed_host log has a sanitizer report: {mark}")
        return rc, out

    def close(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_redis_up(h):
    harness.wait_until(lambda: b'"up"' in h.request("GET", "/health")[2], 10, 0.05, "redis up in /health")


def test_serves_a_product_through_the_engine(h):
    wait_redis_up(h)
    status, hdrs, body = h.request("GET", "/api/products/p-0001")
    assert status == 200, (status, body)
    p = json.loads(body)
    assert p["id"] == "p-0001" and p["version"] >= 1 and isinstance(p["price"], (int, float)), p
    assert hdrs.get("content-type", "").startswith("application/json"), hdrs
    assert hdrs.get("x-cache") in ("MISS", "HIT"), hdrs
    status, hdrs, body2 = h.request("GET", "/api/products/p-0001")
    assert status == 200 and json.loads(body2)["id"] == "p-0001"
    assert hdrs.get("x-cache") == "HIT", hdrs


def test_policies_apply_errors_and_writes(h):
    status, _, body = h.request("GET", "/api/products/p-nope")
    assert status == 404 and json.loads(body)["error"] == "not_found", (status, body)
    status, _, body = h.request("DELETE", "/health")
    assert status == 405, (status, body)
    status, hdrs, body = h.request("POST", "/api/products", body=json.dumps(
        {"name": "Embedded", "price": 9.99, "category": "embed"}), headers={"Content-Type": "application/json"})
    assert status == 201, (status, body)
    pid = json.loads(body)["id"]
    assert hdrs.get("location") == f"/api/products/{pid}", hdrs
    status, _, body = h.request("GET", f"/api/products/{pid}")
    assert status == 200 and json.loads(body)["name"] == "Embedded", body


def test_calls_a_lua_function_and_the_host_module(h):
    status, _, body = h.request("GET", "/host/call/host.greeting.hello?lua")
    assert status == 200 and body == b"hello, lua, from embed_host", (status, body)
    status, _, body = h.request("GET", "/host/call/jollyjet.policy.get?cache")
    assert status == 200, (status, body)
    assert json.loads(body)["ttl"]["product"] >= 1, body
    status, _, body = h.request("GET", "/host/call/no.such.fn")
    assert status == 500 and b"no.such" in body, (status, body)


def test_reload_keeps_the_host_module(h):
    status, _, body = h.request("POST", "/host/reload")
    assert status == 200, (status, body)
    status, _, body = h.request("GET", "/health")
    assert status == 200 and json.loads(body)["policies"]["generation"] == 2, body
    status, _, body = h.request("GET", "/host/call/host.greeting.hello?again")
    assert status == 200 and body == b"hello, again, from embed_host", (status, body)
    # a bad policy is rejected and the current generation keeps serving
    with open(os.path.join(h.policy_dir, "cache.lua"), "w") as f:
        f.write("return { ttl = { product = -5 } }\n")
    status, _, body = h.request("POST", "/host/reload")
    assert status == 500 and b"cache.lua" in body, (status, body)
    status, _, body = h.request("GET", "/api/products/p-0002")
    assert status == 200, (status, body)


def check_stop(h):
    rc, out = h.stop()
    assert rc == 0 and b"stopped" in out, f"exit {rc}, stdout {out!r}\n{h.log_text()[-3000:]}"


def main():
    if not os.path.exists(BIN):
        print(f"FAIL embed_host binary not found: {BIN}")
        sys.exit(1)
    redis = harness.Redis()
    h = Host(redis.port)
    r = harness.Runner()
    try:
        r.run_all(dict(globals()), h)
        r.run("stops cleanly on SIGTERM", check_stop, h)
    finally:
        if h.proc.poll() is None:
            h.proc.kill()
        h.close()
        redis.close()
    r.done()


if __name__ == "__main__":
    main()
