"""A small HTTP/1.1 load generator for the chaos and memory tests, plus the
figures every fault test records. Standard library only.

    load = Load(port, make_request, conns=8)      # make_request(i) -> (method, path, body|None)
    load.start(); ...faults...; load.stop()
    load.records                                   # one Record per request, in completion order
    blast(port, paths, total, conns, depth)        # pipelined GETs: (statuses, errors, seconds)
    fig = Figures("test_chaos_redis"); fig.add(scenario, metric, value, bound, ok); fig.write()

Each client thread owns one keep-alive connection (raw socket, Content-Length
framing). When the connection fails the request is recorded with status 0 and
the error, and the next request opens a new connection: `conn` in a Record
counts connections per thread, so a test can tell "this request was on a
connection that existed before the fault" from "this one was opened after".
Every wait is bounded by the socket timeout and every loop by stop()/count.
"""
import json
import os
import socket
import threading
import time

# ---------------------------------------------------------------- client


class HttpError(Exception):
    pass


def _read_response(sock, buf, head_only=False):
    """One response from sock (buf: bytes already read). Returns
    (status, headers, body, rest). Raises OSError/HttpError on a broken stream."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed before a response" if not buf else "closed inside a head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise HttpError("bad status line %r" % lines[0])
    status = int(parts[1])
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    n = int(headers.get("content-length", "0"))
    if head_only or status in (204, 304):
        n = 0
    while len(rest) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise HttpError("connection closed inside a body")
        rest += chunk
    return status, headers, rest[:n], rest[n:]


class Client:
    """One keep-alive connection, reopened after a failure."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.sock = None
        self.buf = b""
        self.opened = 0   # connections opened so far

    def _connect(self):
        self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.opened += 1

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body); raises on a connection failure (and
        closes, so the next call opens a new connection)."""
        if self.sock is None:
            self._connect()
        data = body.encode() if isinstance(body, str) else body
        h = {"Host": "127.0.0.1"}
        if data is not None:
            h["Content-Type"] = "application/json"
            h["Content-Length"] = str(len(data))
        h.update(headers or {})
        req = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        try:
            self.sock.sendall(req.encode() + (data or b""))
            status, hdrs, rbody, self.buf = _read_response(self.sock, self.buf, method == "HEAD")
        except (OSError, HttpError):
            self.close()
            raise
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, rbody


# ------------------------------------------------------------------ load


class Record:
    __slots__ = ("t0", "t1", "status", "error", "thread", "conn", "xcache", "body")

    def __init__(self, t0, t1, status, error, thread, conn, xcache, body):
        self.t0, self.t1, self.status, self.error = t0, t1, status, error
        self.thread, self.conn, self.xcache, self.body = thread, conn, xcache, body

    @property
    def latency(self):
        return self.t1 - self.t0


class Load:
    """conns client threads calling make_request(i) -> (method, path, body)
    in a loop until stop() (or `count` requests per thread, or `duration`
    seconds). keep_body(record) decides whether a response body is kept."""

    def __init__(self, port, make_request, conns=8, timeout=10.0, count=None, duration=60.0,
                 keep_body=False, pause=0.0):
        self.port = port
        self.make_request = make_request
        self.conns = conns
        self.timeout = timeout
        self.count = count
        self.duration = duration
        self.keep_body = keep_body
        self.pause = pause
        self.records = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = []
        self.started_at = None

    def _run(self, tid):
        c = Client(self.port, self.timeout)
        i = 0
        deadline = time.monotonic() + self.duration
        mine = []
        while not self._stop.is_set() and time.monotonic() < deadline and (self.count is None or i < self.count):
            method, path, body = self.make_request(tid * 1000003 + i)
            i += 1
            t0 = time.monotonic()
            conn = c.opened + (1 if c.sock is None else 0)
            try:
                st, h, b = c.request(method, path, body)
                rec = Record(t0, time.monotonic(), st, None, tid, conn, h.get("x-cache"),
                             b if self.keep_body else None)
            except Exception as e:  # noqa: BLE001 - every failure is a record
                rec = Record(t0, time.monotonic(), 0, f"{type(e).__name__}: {e}", tid, conn, None, None)
                time.sleep(0.005)   # a refused connect must not spin
            mine.append(rec)
            if len(mine) >= 256:
                with self._lock:
                    self.records.extend(mine)
                mine = []
            if self.pause:
                time.sleep(self.pause)
        c.close()
        with self._lock:
            self.records.extend(mine)

    def start(self):
        self.started_at = time.monotonic()
        for tid in range(self.conns):
            t = threading.Thread(target=self._run, args=(tid,), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, join_timeout=None):
        self._stop.set()
        return self.join(join_timeout)

    def join(self, timeout=None):
        limit = timeout if timeout is not None else self.timeout + 5
        for t in self._threads:
            t.join(limit)
        if any(t.is_alive() for t in self._threads):
            raise AssertionError("load threads did not finish")
        self.records.sort(key=lambda r: r.t1)
        return self.records

    def snapshot(self):
        with self._lock:
            return list(self.records)


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * len(v) + 0.5)) - 1))
    return v[k]


def summary(records):
    lat = [r.latency for r in records]
    codes = {}
    for r in records:
        codes[r.status] = codes.get(r.status, 0) + 1
    return {"requests": len(records), "codes": codes,
            "p50_ms": round(percentile(lat, 50) * 1000, 2), "p99_ms": round(percentile(lat, 99) * 1000, 2),
            "max_ms": round(max(lat) * 1000, 2) if lat else 0.0}


# ------------------------------------------------------------ pipelining


def _blast_one(port, paths, n, depth, timeout, out, idx):
    statuses = {}
    done = 0
    reqs = [f"GET {p} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode() for p in paths]
    at = idx
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        buf = b""
        while done < n:
            k = min(depth, n - done)
            batch = []
            for _ in range(k):
                batch.append(reqs[at % len(reqs)])
                at += 1
            s.sendall(b"".join(batch))
            for _ in range(k):
                st, _, _, buf = _read_response(s, buf)
                statuses[st] = statuses.get(st, 0) + 1
            done += k
        s.close()
    except (OSError, HttpError) as e:
        statuses[0] = statuses.get(0, 0) + (n - done)
        out[idx] = (statuses, str(e))
        return
    out[idx] = (statuses, None)


def blast(port, paths, total, conns=4, depth=32, timeout=30.0):
    """total pipelined GETs over conns keep-alive connections, depth requests
    per write, cycling through paths (a path or a list). Returns (statuses,
    errors, seconds)."""
    if isinstance(paths, str):
        paths = [paths]
    out = [None] * conns
    per = [total // conns + (1 if i < total % conns else 0) for i in range(conns)]
    t0 = time.monotonic()
    ts = [threading.Thread(target=_blast_one, args=(port, paths, per[i], depth, timeout, out, i), daemon=True)
          for i in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout * 10)
    statuses, errors = {}, []
    for r in out:
        if r is None:
            errors.append("thread did not finish")
            continue
        for k, v in r[0].items():
            statuses[k] = statuses.get(k, 0) + v
        if r[1]:
            errors.append(r[1])
    return statuses, errors, time.monotonic() - t0


# --------------------------------------------------------------- figures


def sanitized_build():
    """True when the engine under test is the ASan+UBSan build (run-tests.sh
    sets JJ_SANITIZED; without it, the binary is looked at)."""
    v = os.environ.get("JJ_SANITIZED")
    if v is not None:
        return v == "1"
    path = os.environ.get("JJ_BIN") or ""
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


class Figures:
    """Figures of one test file: printed as they come, and written as JSON
    to $JJ_FIGURES_DIR/<build>.<test>.json for tests/tools/figures.py."""

    def __init__(self, test):
        self.test = test
        self.build = ("asan" if sanitized_build() else "release") + \
            ("+pg" if os.environ.get("JJ_TEST_DATABASE_URL") else "")
        self.rows = []

    def add(self, scenario, metric, value, bound="", ok=True):
        row = {"test": self.test, "build": self.build, "scenario": scenario, "metric": metric,
               "value": value, "bound": bound, "ok": None if ok is None else bool(ok)}
        self.rows.append(row)
        verdict = {True: "ok", False: "FAIL", None: "-"}[row["ok"]]
        print(f"     figure: {scenario} | {metric} = {value} (bound: {bound or '-'}) {verdict}", flush=True)
        self.write()
        return ok

    def write(self):
        d = os.environ.get("JJ_FIGURES_DIR")
        if not d:
            return
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, f"{self.build}.{self.test}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(self.rows, f, indent=1)
        os.replace(path + ".tmp", path)
