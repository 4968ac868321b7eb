"""Integration-test harness: real redis-server, real jollyjet processes,
real HTTP over sockets. Standard library only.

Every wait is bounded; every process started here is stopped at exit."""
import atexit
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SRC = os.environ.get("JJ_SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("JJ_BIN") or os.path.join(SRC, "build", "jollyjet")
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

_procs = []

# Set by run-tests.sh for the PostgreSQL pass: the throwaway cluster's admin
# URL (postgres://postgres@127.0.0.1:PORT/postgres). Every engine then gets
# DATABASE_URL to a database of its own (named after its DB_PATH, so engines
# that share a DB_PATH share the database, as they would share the file).
PG_URL = os.environ.get("JJ_TEST_DATABASE_URL") or None


def _cleanup():
    for p in _procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass


atexit.register(_cleanup)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = pred()
            if last:
                return last
        except Exception as e:  # noqa: BLE001 - keep polling until the deadline
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Redis:
    """A redis-server of the test's own on a free loopback port."""

    def __init__(self, port=None, password=None):
        self.port = port or free_port()
        self.password = password
        self.dir = tempfile.mkdtemp(prefix="jj-redis-")
        self.proc = None
        self.start()

    def start(self):
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", self.dir, "--logfile", os.path.join(self.dir, "redis.log")]
        if self.password:
            args += ["--requirepass", self.password]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _procs.append(self.proc)
        wait_until(self.ping, 5, what=f"redis on {self.port}")

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                if self.password:
                    s.sendall(f"AUTH {self.password}\r\n".encode())
                    s.recv(100)
                s.sendall(b"PING\r\n")
                return s.recv(100).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            payload = f"*{len(args)}\r\n" + "".join(f"${len(str(a).encode())}\r\n{a}\r\n" for a in args)
            s.sendall(payload.encode())
            return s.recv(65536)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class Monitor:
    """Records every command a redis-server receives (MONITOR)."""

    def __init__(self, redis):
        self.sock = socket.create_connection(("127.0.0.1", redis.port), timeout=1)
        self.sock.sendall(b"MONITOR\r\n")
        self.lines = []
        self.stopped = False
        import threading
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        buf = b""
        while not self.stopped:
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\r\n")
            self.lines.extend(done)

    def commands(self):
        """Lower-cased command names seen so far."""
        out = []
        for line in self.lines:
            parts = line.split(b'"')
            if len(parts) > 1:
                out.append(parts[1].decode("latin-1").lower())
        return out

    def stop(self):
        self.stopped = True
        self.thread.join(timeout=3)
        self.sock.close()


def psql(url, sql, variables=None, timeout=30):
    """Runs sql with psql against url; returns the rows (tuples of strings,
    None for NULL; integers converted). variables become psql :'name'
    literals, quoted by psql itself."""
    args = ["psql", url, "-X", "-q", "-tA", "-F", "\x1f", "-R", "\x1e", "-P", "null=\x01",
            "-v", "ON_ERROR_STOP=1"]
    for k, v in (variables or {}).items():
        args += ["-v", f"{k}={v}"]
    # psql interpolates variables in -f/stdin input, not in -c
    out = subprocess.run(args, input=sql, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"psql failed: {out.stderr.strip()}")
    rows = []
    for line in out.stdout.split("\x1e"):
        line = line.strip("\n")
        if not line:
            continue
        row = []
        for f in line.split("\x1f"):
            if f == "\x01":
                row.append(None)
            elif f.lstrip("-").isdigit():
                row.append(int(f))
            else:
                row.append(f)
        rows.append(tuple(row))
    return rows


def pg_database(name):
    """The URL of database name on the test cluster, created if missing."""
    base = PG_URL.rsplit("/", 1)[0]
    if not psql(PG_URL, "SELECT 1 FROM pg_database WHERE datname = :'n';\n", {"n": name}):
        try:
            psql(PG_URL, f'CREATE DATABASE "{name}" STRATEGY FILE_COPY;\n')
        except AssertionError as e:
            if "already exists" not in str(e):
                raise
    return f"{base}/{name}"


def db_sql(e, sql, params=()):
    """Runs one statement on engine e's database behind its back (sqlite3 on
    the file, or psql on PostgreSQL) and commits; returns the rows. sql uses
    ? placeholders."""
    url = e.env.get("DATABASE_URL")
    if not url:
        import sqlite3
        con = sqlite3.connect(e.env["DB_PATH"], timeout=10)
        try:
            rows = [tuple(r) for r in con.execute(sql, params).fetchall()]
            con.commit()
            return rows
        finally:
            con.close()
    parts = sql.split("?")
    assert len(parts) == len(params) + 1, "one parameter per ?"
    text = parts[0] + "".join(f":'p{i}'" + parts[i + 1] for i in range(len(params)))
    return psql(url, text + ";\n", {f"p{i}": v for i, v in enumerate(params)})


class Postgres:
    """A PostgreSQL 15 cluster of the test's own (initdb + pg_ctl into a
    temporary directory, a free loopback port, no system service), for
    tests that stop and start the server. As root it runs as the postgres
    user (initdb refuses root)."""

    BIN = "/usr/lib/postgresql/15/bin"

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="jj-pgown-")
        self.port = free_port()
        self.asuser = []
        if os.getuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.asuser = ["runuser", "-u", "postgres", "--"]
        self.data = os.path.join(self.dir, "data")
        subprocess.run(self.asuser + [f"{self.BIN}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                                      "-E", "UTF8", "--no-locale"], check=True, capture_output=True, timeout=120)
        self.start()

    def start(self):
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off")
        subprocess.run(self.asuser + [f"{self.BIN}/pg_ctl", "-D", self.data, "-l", os.path.join(self.dir, "log"),
                                      "-w", "-t", "60", "-o", opts, "start"], check=True, capture_output=True,
                       timeout=90)

    def stop(self, mode="fast"):
        subprocess.run(self.asuser + [f"{self.BIN}/pg_ctl", "-D", self.data, "-m", mode, "-w", "stop"],
                       capture_output=True, timeout=90)

    def url(self, db="postgres"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def close(self):
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class Engine:
    """A jollyjet master with its workers, on a copy of lua/ and policies/
    (plus the test handlers) so tests can edit files freely."""

    def __init__(self, redis_port, workers=2, env=None, extra_handlers=True, wait=True, start=True,
                 wait_redis=True):
        self.dir = tempfile.mkdtemp(prefix="jj-engine-")
        self.workers = workers
        self.lua_dir = os.path.join(self.dir, "lua")
        self.policy_dir = os.path.join(self.dir, "policies")
        shutil.copytree(os.path.join(SRC, "lua"), self.lua_dir)
        shutil.copytree(os.path.join(SRC, "policies"), self.policy_dir)
        if extra_handlers:
            for f in os.listdir(os.path.join(FIXTURES, "handlers")):
                shutil.copy(os.path.join(FIXTURES, "handlers", f), os.path.join(self.lua_dir, "handlers", f))
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update({
            "PORT": str(self.port), "HOST": "127.0.0.1", "WORKERS": str(workers),
            "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(redis_port),
            "REDIS_KEY_PREFIX": f"it{self.port}:",
            "DB_PATH": os.path.join(self.dir, "var", "jj.db"),
            "LUA_DIR": self.lua_dir, "POLICY_DIR": self.policy_dir,
            "MIGRATIONS_DIR": os.path.join(SRC, "engine", "migrations"),
            "PID_FILE": os.path.join(self.dir, "var", "jj.pid"),
            "LOG_LEVEL": "info",
            # The shipped policy limits every /api/ route to 100/min per IP and
            # every test client is 127.0.0.1: tests opt in (test_ratelimit.py).
            "RATELIMIT_ENABLED": "false",
            # A line per response would make the load tests' logs huge; the
            # access log test turns it on (test_metrics_http.py).
            "ACCESS_LOG": "false",
        })
        self.env.pop("REDIS_URL", None)
        self.env.pop("DATABASE_URL", None)
        if env:
            self.env.update(env)
        if PG_URL and "DATABASE_URL" not in (env or {}):
            import hashlib
            name = "jj_" + hashlib.sha1(self.env["DB_PATH"].encode()).hexdigest()[:16]
            self.env["DATABASE_URL"] = pg_database(name)
        self.log_path = os.path.join(self.dir, "engine.log")
        self.proc = None
        self.wait_redis = wait_redis
        self.log = open(self.log_path, "ab")
        if start:
            self.start(wait)

    def start(self, wait=True):
        self.proc = subprocess.Popen([BIN, "serve"], env=self.env, stdout=self.log, stderr=self.log,
                                     cwd=SRC)
        _procs.append(self.proc)
        if wait:
            wait_until(lambda: self.get("/health", timeout=1)[0] in (200, 503), 20, 0.05, "engine /health")
            if self.wait_redis:   # /health answers before every worker has reached Redis
                wait_until(lambda: all(self.json("GET", "/health", timeout=2)[2]["redis"]["status"] == "up"
                                       for _ in range(6)), 10, 0.05, "redis up on every worker")

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def request(self, method, path, body=None, headers=None, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict(r.getheaders()), data
        finally:
            c.close()

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def json(self, method, path, body=None, headers=None, timeout=10):
        status, hdrs, data = self.request(method, path, body, headers, timeout)
        return status, hdrs, (json.loads(data) if data else None)

    def raw(self, payload, timeout=5, read_until_close=True):
        """Send raw bytes, return everything read until close or timeout."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as s:
            s.sendall(payload)
            out = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    out += chunk
                    if not read_until_close:
                        break
            except socket.timeout:
                pass
            return out

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=30):
        if self.proc is None:
            return 0
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("engine did not stop within %ss" % timeout)
        return self.proc.returncode

    SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                       "Assertion", "PANIC")

    def close(self):
        try:
            self.stop()
        finally:
            self.log.close()
            text = self.log_text()
            found = [m for m in self.SANITIZER_MARKS if m in text]
            if found:
                i = text.find(found[0])
                sys.stderr.write(text[max(0, i - 2000): i + 6000])
                shutil.rmtree(self.dir, ignore_errors=True)
                raise AssertionError(f"engine log has a sanitizer/panic report: {found}")
            if os.environ.get("JJ_KEEP_TMP") != "1":
                shutil.rmtree(self.dir, ignore_errors=True)


def first_responses(socks):
    """Reads each socket (requests already sent, Connection: close) until the
    server closes it, closes it, and returns the first response of each, in
    order, as parse_responses gives them."""
    out = []
    for s in socks:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        out.append(parse_responses(data)[0])
    return out


def parse_responses(data):
    """Split a byte stream into (status, headers, body) triples (Content-Length framing)."""
    out = []
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        if not sep:
            break
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        if status in (100,):
            data = rest
            continue
        out.append((status, hdrs, rest[:n]))
        data = rest[n:]
    return out


class Runner:
    """Tiny test runner: named checks, one line each, the plain summary line."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def run(self, name, fn, *args):
        t0 = time.monotonic()
        try:
            fn(*args)
            self.passed += 1
            print(f"ok   {name} ({time.monotonic() - t0:.2f}s)", flush=True)
        except Exception as e:  # noqa: BLE001
            self.failed += 1
            import traceback
            print(f"FAIL {name}: {e}", flush=True)
            traceback.print_exc()

    def run_all(self, namespace, *args):
        """Runs every test_* function of a module, in definition order."""
        for name, fn in list(namespace.items()):
            if name.startswith("test_") and callable(fn) and fn.__code__.co_argcount == len(args):
                self.run(name[5:].replace("_", " "), fn, *args)

    def done(self):
        print(f"{self.passed} passed, {self.failed} failed", flush=True)
        sys.exit(1 if self.failed else 0)
