"""The bad-input catalogue: one table of malformed, hostile or odd requests
over raw sockets. Every case states the status and the JSON error code it
must get; after each one the engine must still answer /health, and nothing
may have been stored: the products and wishlist tables (every row, hashed)
and the Redis keys under the engine's prefix (counted with SCAN, never KEYS)
are compared before and after. Read cases that may fill the cache say so
(cache_ok) and then only cache keys may appear. One line per case, then
the summary."""
import hashlib
import json
import socket
import sys
import time
import urllib.parse

from harness import Engine, Redis, db_sql, parse_responses

MAX_BODY = 65536       # MAX_BODY_BYTES of this engine
HEADER_TIMEOUT = 1     # seconds
SID_LEN = 43


# ---------------------------------------------------------------- plumbing

def raw(e, payload, timeout=5, trickle=None):
    """Sends payload (optionally trickle=(bytes per send, pause)), reads until
    the server closes or timeout. Returns (responses, closed, seconds)."""
    t0 = time.monotonic()
    out = b""
    closed = False
    with socket.create_connection(("127.0.0.1", e.port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            if trickle:
                step, pause = trickle
                s.settimeout(pause)
                for i in range(0, len(payload), step):
                    try:
                        s.sendall(payload[i:i + step])
                    except OSError:
                        break
                    try:
                        chunk = s.recv(65536)
                        if not chunk:
                            closed = True
                            break
                        out += chunk
                    except socket.timeout:
                        pass
                    if time.monotonic() - t0 > timeout:
                        break
                s.settimeout(max(0.1, timeout - (time.monotonic() - t0)))
            else:
                s.sendall(payload)
            while not closed:
                chunk = s.recv(65536)
                if not chunk:
                    closed = True
                    break
                out += chunk
        except (socket.timeout, ConnectionResetError, BrokenPipeError):
            pass
    return parse_responses(out), closed, time.monotonic() - t0


def http_req(method, path, body=None, headers=None):
    """A well-framed request (Content-Length) that asks to close."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    if body is not None:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + (body or b"")


class RedisScan:
    """A minimal RESP client: SCAN with MATCH over the engine's prefix."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def _line(self):
        while b"\r\n" not in self.buf:
            self.buf += self.sock.recv(65536)
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t in (b"+", b":"):
            return rest
        if t == b"-":
            raise AssertionError(rest.decode())
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            while len(self.buf) < n + 2:
                self.buf += self.sock.recv(65536)
            data, self.buf = self.buf[:n], self.buf[n + 2:]
            return data
        if t == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise AssertionError(f"unexpected RESP {line!r}")

    def command(self, *args):
        msg = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            msg += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(msg)
        return self._reply()

    def keys(self, prefix):
        found, cursor = set(), b"0"
        while True:
            cursor, batch = self.command("SCAN", cursor, "MATCH", prefix + "*", "COUNT", 1000)
            found.update(batch)
            if cursor == b"0":
                return found


def table_hash(e, table, order):
    h = hashlib.sha256()
    n = 0
    for row in db_sql(e, f"SELECT * FROM {table} ORDER BY {order}"):
        h.update(repr(row).encode())
        n += 1
    return n, h.hexdigest()


class State:
    """What a case may have stored: every row of products and wishlist
    (hashed), and the keys under the engine's prefix. The rows are read behind
    the engine's back, on either database (harness.db_sql: sqlite3 on the
    file, or psql)."""

    def __init__(self, e, r):
        self.e = e
        self.prefix = e.env["REDIS_KEY_PREFIX"]
        self.redis = RedisScan(r.port)

    def snapshot(self):
        products = table_hash(self.e, "products", "id")
        wishlist = table_hash(self.e, "wishlist", "session_id, product_id")
        # the consistency verifier's own lock and cursor come and go on its
        # timer, whatever the requests do: not what a case stored
        own = (self.prefix + "lock:verifier", self.prefix + "verifier:")
        keys = {k for k in self.redis.keys(self.prefix) if not k.decode("latin-1").startswith(own)}
        return {"products": products, "wishlist": wishlist, "keys": keys}

    def sql(self, q, *params):
        return db_sql(self.e, q, params)


# ------------------------------------------------------------- the catalogue

def deep(n, open_, close):
    return open_ * n + close * n


def product(**over):
    body = {"name": "Bad Input Probe", "price": 1.5, "category": "probe"}
    body.update(over)
    return body


def C(name, request, status, code, **kw):
    """A case: request is raw bytes; kw: cache_ok, trickle, timeout, check
    (fn(state, responses, closed, seconds) for more), closes (True: the
    connection must close after the one answer), responses (exact count)."""
    return dict(name=name, request=request, status=status, code=code, **kw)


ODD_IDS = [
    ("colon", "a:b"), ("star", "*"), ("dotdot slash encoded", "..%2F..%2Fetc%2Fpasswd"),
    ("dotdot encoded", "%2e%2e"), ("1000 chars", "a" * 1000), ("unicode", "%C3%A9t%C3%A9"),
    ("emoji", "%F0%9F%98%80"), ("negative", "-1"), ("float", "1.5"),
    ("overflow", "99999999999999999999999999"), ("space", "a%20b"), ("nul", "a%00b"),
    ("quote", "p-0001%27%20OR%20%271%27%3D%271"), ("like wildcard", "p-%25"),
    ("encoded slash", "p-0001%2Fwishlist"), ("bad escape", "%ZZ"),
    ("64 chars (longest valid)", "p" * 64), ("65 chars", "p" * 65), ("15000 chars", "b" * 15000),
]

WRONG_TYPES = {
    "name": [1, True, None, [], {}, ""],
    "description": [1, False, None, ["x"], {"a": 1}],
    "price": ["1.50", True, None, [], {}, -1, 1.005, 1e300, 0.30000000000000004],
    "stock": ["5", 1.5, True, None, [], -1, 1e10],
    "category": [2, True, None, [], {}, "   "],
    # ({} is not here: lua-cjson decodes {} and [] to the same empty table,
    # so {"images":{}} is taken as the empty list; nothing else is lost)
    "images": ["http://x.example/a.png", 1, True, {"a": 1}, [1], ["ftp://x.example/a"], ["javascript:alert(1)"],
               ["http://"], ["http://x.example/" + "a" * 2100], ["http://x.example/a"] * 21, {"0": "http://a.b/c"}],
    "isActive": ["true", 1, 0, None, [], {}],
}

HUGE = [
    ("name", 201), ("name", 10000), ("description", 2001), ("category", 101),
]


def cases():
    out = []
    # --- request line
    for name, line in [
        ("garbage line", b"GARBAGE\r\n\r\n"),
        ("method only", b"GET\r\n\r\n"),
        ("double space", b"GET  /health HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("trailing token", b"GET /health HTTP/1.1 extra\r\nHost: x\r\n\r\n"),
        ("space in target", b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("NUL in target", b"GET /he\x00alth HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("control in target", b"GET /he\x01alth HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("lowercase version", b"GET /health http/1.1\r\nHost: x\r\n\r\n"),
        ("missing version", b"GET /health\r\nHost: x\r\n\r\n"),
        ("no Host", b"GET /health HTTP/1.1\r\n\r\n"),
        ("two Hosts", b"GET /health HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
        ("absolute form other Host", b"GET http://evil.example/health HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("userinfo in target", b"GET http://a@x/health HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bare CR", b"GET /health HTTP/1.1\rHost: x\r\n\r\n"),
        ("obs fold", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n"),
        ("space before colon", b"GET /health HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("header without colon", b"GET /health HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n"),
        ("TLS hello", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 32 + b"\r\n\r\n"),
        ("asterisk with GET", b"GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
    ]:
        out.append(C(f"request line: {name}", line, 400, "bad_request", closes=True))
    out.append(C("request line: HTTP/2.0", b"GET /health HTTP/2.0\r\nHost: x\r\n\r\n", 505,
                 "http_version_not_supported", closes=True))
    out.append(C("request line: h2 preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505,
                 "http_version_not_supported", closes=True))
    out.append(C("request line: HTTP/1.2", b"GET /health HTTP/1.2\r\nHost: x\r\n\r\n", 505,
                 "http_version_not_supported", closes=True))

    # --- framing and request smuggling: the pipelined create must never run
    smuggled = http_req("POST", "/api/products", product(name="Smuggled"))
    body = b'{"name":"x"}'
    for name, head in [
        ("duplicate Content-Length", b"Content-Length: %d\r\nContent-Length: %d\r\n" % (len(body), len(body))),
        ("conflicting Content-Length", b"Content-Length: %d\r\nContent-Length: 0\r\n" % len(body)),
        ("Content-Length list", b"Content-Length: %d, %d\r\n" % (len(body), len(body))),
        ("negative Content-Length", b"Content-Length: -1\r\n"),
        ("signed Content-Length", b"Content-Length: +12\r\n"),
        ("hex Content-Length", b"Content-Length: 0xc\r\n"),
        ("overflowing Content-Length", b"Content-Length: 99999999999999999999999\r\n"),
        ("CL then TE", b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body)),
        ("TE then CL", b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n" % len(body)),
        ("CL with TE identity", b"Content-Length: %d\r\nTransfer-Encoding: identity\r\n" % len(body)),
        ("TE chunked twice", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
        ("TE chunked not last", b"Transfer-Encoding: chunked, gzip\r\n"),
        ("TE space before colon", b"Transfer-Encoding : chunked\r\nContent-Length: %d\r\n" % len(body)),
    ]:
        req = b"POST /api/products HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + body + smuggled
        out.append(C(f"smuggling: {name}", req, 400, "bad_request", closes=True, responses=1))
    out.append(C("smuggling: TE in HTTP/1.0",
                 b"POST /api/products HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + smuggled,
                 400, "bad_request", closes=True, responses=1))
    out.append(C("smuggling: unknown transfer coding",
                 b"POST /api/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n" + smuggled,
                 501, "not_implemented", closes=True, responses=1))
    chunked = b"POST /api/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    for name, framing in [
        ("bare LF chunk line", b"5\nhello\r\n0\r\n\r\n"),
        ("bad chunk size", b"zz\r\nhello\r\n0\r\n\r\n"),
        ("chunk longer than its size", b"2\r\nhello\r\n0\r\n\r\n"),
        ("overflowing chunk size", b"fffffffffffffffff\r\nx\r\n0\r\n\r\n"),
        ("smuggling via LF in extension", b"5;a\nhello\r\n0\r\n\r\n"),
        ("malformed trailer", b"0\r\nno colon here\r\n\r\n"),
    ]:
        out.append(C(f"chunked: {name}", chunked + framing + smuggled, 400, "bad_request", closes=True,
                     responses=1))
    # decoded, then validated: a chunked create with a wrong type is refused as such
    out.append(C("chunked: decoded body is validated",
                 chunked.replace(b"Host: x", b"Host: x\r\nConnection: close")
                 + b"8\r\n{\"name\":\r\n3;x=y\r\n12}\r\n0\r\n\r\n", 400, "validation_failed"))

    # --- sizes
    out.append(C("oversized head (17 KB header)",
                 b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n",
                 431, "request_header_too_large", closes=True))
    out.append(C("101 headers", b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(
        b"X-H%d: v\r\n" % i for i in range(101)) + b"\r\n", 431, "request_header_too_large", closes=True))
    out.append(C("20 KB URL", b"GET /api/products?search=" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
                 431, "request_header_too_large", closes=True))
    out.append(C("oversized body (Content-Length)",
                 b"POST /api/products HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (MAX_BODY + 1)
                 + b"x" * 1000, 413, "payload_too_large", closes=True))
    out.append(C("oversized body (Content-Length 2^63-1)",
                 b"POST /api/products HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n",
                 413, "payload_too_large", closes=True))
    out.append(C("oversized body (chunked, decoded size)",
                 chunked + (b"4000\r\n" + b"x" * 0x4000 + b"\r\n") * 5 + b"0\r\n\r\n", 413,
                 "payload_too_large", closes=True))
    out.append(C("oversized chunk trailer", chunked + b"0\r\n" + b"X-T: " + b"a" * 17000 + b"\r\n\r\n",
                 431, "request_header_too_large", closes=True))
    out.append(C("oversized cookie", http_req("GET", "/api/wishlist", headers={"Cookie": "a=" + "b" * 17000}),
                 431, "request_header_too_large", closes=True))

    # --- slow clients: 408 within HEADER_TIMEOUT, however the bytes trickle
    def bounded(limit):
        def check(st, rs, closed, secs):
            assert secs < limit, f"answered after {secs:.2f}s (limit {limit}s)"
        return check
    slow_head = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: 1\r\n" * 200
    out.append(C("slowloris: head byte by byte", slow_head, 408, "request_timeout", closes=True,
                 trickle=(1, 0.02), timeout=8, check=bounded(HEADER_TIMEOUT + 2)))
    out.append(C("slowloris: body stalls", b"POST /api/products HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
                 408, "request_timeout", closes=True, timeout=8, check=bounded(HEADER_TIMEOUT + 2)))
    slow_chunks = chunked + b"1\r\n{\r\n" * 400
    out.append(C("slowloris: chunked body trickled", slow_chunks, 408, "request_timeout", closes=True,
                 trickle=(6, 0.02), timeout=8, check=bounded(HEADER_TIMEOUT + 2)))

    # --- escapes and traversal
    for name, path, status, code in [
        ("bad escape in query", "/api/products?search=%ZZ", 400, "bad_request"),
        ("truncated escape in query", "/api/products?search=%2", 400, "bad_request"),
        ("NUL escape in query", "/api/products?search=a%00b", 400, "bad_request"),
        ("invalid UTF-8 in search", "/api/products?search=%C3%28", 400, "validation_failed"),
        ("overlong UTF-8 in search", "/api/products?search=%C0%AF", 400, "validation_failed"),
        ("bad escape in path", "/api/products/%ZZ", 404, "not_found"),
        ("traversal", "/../../etc/passwd", 404, "not_found"),
        ("traversal into api", "/api/../api/products/p-0001", 404, "not_found"),
        ("encoded traversal", "/%2e%2e/%2e%2e/etc/passwd", 404, "not_found"),
        ("encoded slash", "/api%2Fproducts", 404, "not_found"),
        ("traversal under docs", "/docs/../../../etc/passwd", 404, "not_found"),
        ("backslash traversal", "/docs/..\\..\\etc\\passwd", 404, "not_found"),
        ("page not a number", "/api/products?page=abc", 400, "validation_failed"),
        ("page zero", "/api/products?page=0", 400, "validation_failed"),
        ("page negative", "/api/products?page=-1", 400, "validation_failed"),
        ("page overflow", "/api/products?page=99999999999999999999", 400, "validation_failed"),
        ("limit over max", "/api/products?limit=101", 400, "validation_failed"),
        ("limit float", "/api/products?limit=1.5", 400, "validation_failed"),
        ("isActive not boolean", "/api/products?isActive=yes", 400, "validation_failed"),
        ("search over 100 chars", "/api/products?search=" + "a" * 101, 400, "validation_failed"),
    ]:
        out.append(C(f"path/query: {name}", http_req("GET", path), status, code))

    # --- bodies that are not a JSON object
    for name, b, code in [
        ("empty body", "", "invalid_json"), ("whitespace body", "  \r\n ", "invalid_json"),
        ("array", "[]", "invalid_body"), ("array of object", '[{"name":"x"}]', "invalid_body"),
        ("number", "1", "invalid_body"), ("string", '"x"', "invalid_body"), ("null", "null", "invalid_body"),
        ("true", "true", "invalid_body"), ("truncated", '{"name":', "invalid_json"),
        ("trailing garbage", '{"name":"a"} x', "invalid_json"), ("single quotes", "{'name':'a'}", "invalid_json"),
        ("NaN", '{"price":NaN}', "invalid_json"), ("Infinity", '{"price":Infinity}', "invalid_json"),
        ("hex number", '{"price":0x10}', "invalid_json"), ("BOM", "\ufeff{}", "invalid_json"),
        ("comment", '{"name":"a" /* c */}', "invalid_json"), ("invalid UTF-8 bytes", b'{"name":"\xff\xfe"}', None),
        ("10000-deep arrays", deep(10000, "[", "]"), "invalid_json"),
        ("10000-deep objects", '{"a":' * 10000 + "1" + "}" * 10000, "invalid_json"),
        ("10000-deep in a field", '{"name":' + deep(10000, "[", "]") + "}", "invalid_json"),
        ("33-deep (past the limit)", '{"images":' + deep(32, "[", "]") + "}", "invalid_json"),
    ]:
        code = code or "validation_failed"
        bb = b if isinstance(b, bytes) else b.encode()
        out.append(C(f"body: {name} (POST)", http_req("POST", "/api/products", bb), 400, code))
        if name in ("array", "10000-deep arrays", "10000-deep objects", "truncated", "null"):
            out.append(C(f"body: {name} (PATCH)", http_req("PATCH", "/api/products/p-0001", bb), 400, code))
    # the sessions route decodes with its own settings
    out.append(C("body: 10000-deep session data", http_req("POST", "/api/sessions",
                 '{"data":' + deep(10000, "[", "]") + "}"), 400, "invalid_json"))
    out.append(C("body: session body array", http_req("POST", "/api/sessions", "[1]"), 400, "validation_failed"))

    # --- wrong types in every product field, on create and on update
    def field_is(field):
        def check(st, rs, closed, secs):
            doc = json.loads(rs[0][2])
            fields = [d["field"] for d in doc.get("details", [])]
            assert any(f == field or f.startswith(field + "[") for f in fields), fields
        return check
    for field, values in WRONG_TYPES.items():
        for v in values:
            label = json.dumps(v)
            label = label if len(label) < 40 else label[:37] + "..."
            out.append(C(f"type: {field}={label} (POST)", http_req("POST", "/api/products", product(**{field: v})),
                         400, "validation_failed", check=field_is(field)))
            out.append(C(f"type: {field}={label} (PATCH)", http_req("PATCH", "/api/products/p-0001", {field: v}),
                         400, "validation_failed", check=field_is(field)))
    for field in ("id", "version", "wishlistCount", "createdAt", "updatedAt", "unknown", ""):
        out.append(C(f"type: read-only/unknown {field!r} (PATCH)",
                     http_req("PATCH", "/api/products/p-0001", {field: "x"}), 400, "validation_failed",
                     check=field_is(field)))
    for field in ("name", "price", "category"):
        b = product()
        del b[field]
        out.append(C(f"type: missing {field} (POST)", http_req("POST", "/api/products", b), 400,
                     "validation_failed", check=field_is(field)))
    for field, n in HUGE:
        out.append(C(f"huge: {field} of {n} chars (POST)", http_req("POST", "/api/products", product(**{field: "é" * n})),
                     400, "validation_failed", check=field_is(field)))
    out.append(C("huge: 60 KB name (PUT)", http_req("PUT", "/api/products/p-0001", {"name": "x" * 60000}), 400,
                 "validation_failed", check=field_is("name")))
    out.append(C("huge: 3000 unknown fields", http_req("POST", "/api/products", dict(
        product(), **{f"f{i}": i for i in range(3000)})), 400, "validation_failed"))
    out.append(C("huge: NUL in name", http_req("POST", "/api/products", product(name="a\u0000b")), 400,
                 "validation_failed", check=field_is("name")))
    out.append(C("huge: control characters in category", http_req(
        "POST", "/api/products", product(category="a\u001b[31mred")), 400, "validation_failed",
        check=field_is("category")))
    out.append(C("huge: NUL in description", http_req("POST", "/api/products", product(description="a\u0000")), 400,
                 "validation_failed", check=field_is("description")))

    # --- odd ids: every id route, never a 5xx, never a row or key
    for name, pid in ODD_IDS:
        for method, body in (("GET", None), ("PATCH", {"stock": 1}), ("PUT", {"stock": 1}), ("DELETE", None)):
            status, code = 404, "not_found"
            out.append(C(f"id {name}: {method}", http_req(method, "/api/products/" + pid, body), status, code,
                         cache_ok=method == "GET"))
        out.append(C(f"id {name}: wishlist toggle", http_req("POST", f"/api/products/{pid}/wishlist"), 404,
                     "not_found", check=no_cookie))
    out.append(C("id empty: GET is the list (trailing slash)", http_req("GET", "/api/products/"), 200, None,
                 cache_ok=True))
    out.append(C("id empty: DELETE", http_req("DELETE", "/api/products/"), 405, "method_not_allowed"))
    out.append(C("id unknown well-formed: wishlist toggle", http_req("POST", "/api/products/p-ffffffffffffffff/wishlist"),
                 404, "not_found", check=no_cookie))

    # --- SQL and LIKE wildcards in search: literal matches only
    for term in ["%", "_", "'", "\\", "%%", "_%_", "' OR '1'='1", "'; DROP TABLE products; --", "\" OR 1=1 --",
                 "a%", "%a", "_a", "[a]", "*", "?", "\u00e9", "\u0000"[0:0] + "mug%"]:
        q = urllib.parse.quote(term, safe="")
        out.append(C(f"search literal {term!r}", http_req("GET", f"/api/products?search={q}&limit=100"), 200, None,
                     cache_ok=True, check=literal_search(term)))
    for term in ["%", "' OR '1'='1", "_"]:
        q = urllib.parse.quote(term, safe="")
        out.append(C(f"category literal {term!r}", http_req("GET", f"/api/products?category={q}"), 200, None,
                     cache_ok=True, check=literal_category(term)))

    # --- cookies and sessions
    unknown = "A" * SID_LEN
    for name, cookie in [
        ("unknown sid", f"sid={unknown}"),
        ("two unknown sids", f"sid={unknown}; sid={'B' * SID_LEN}"),
        ("sid too short", "sid=abc"),
        ("sid too long", "sid=" + "A" * 200),
        ("sid with bad characters", "sid=" + "!" * SID_LEN),
        ("sid traversal", "sid=../../../../etc/passwd"),
        ("empty cookie", ""),
        ("cookie of 1000 pairs", "; ".join(f"k{i}=v" for i in range(1000))),
        ("cookie without =", "sid"),
        ("cookie of separators", ";;;,,,==="),
        ("cookie with high bytes", "sid=\u00e9\u00e9"),
    ]:
        out.append(C(f"cookie: {name}: wishlist read", http_req("GET", "/api/wishlist", headers={"Cookie": cookie}),
                     200, None, check=empty_wishlist))
        out.append(C(f"cookie: {name}: session read", http_req("GET", "/api/sessions/me", headers={"Cookie": cookie}),
                     401, "no_session"))
    out.append(C("cookie: NUL in cookie", b"GET /api/wishlist HTTP/1.1\r\nHost: x\r\nCookie: sid=a\x00b\r\n\r\n",
                 400, "bad_request", closes=True))
    out.append(C("cookie: unknown sid is never adopted by a toggle",
                 http_req("POST", "/api/products/p-0002/wishlist", headers={"Cookie": f"theme=x; sid={unknown}"}),
                 200, None, mutates=True, check=not_adopted(unknown)))
    return out


# -------------------------------------------------------------- extra checks

def no_cookie(st, rs, closed, secs):
    assert "set-cookie" not in rs[0][1], rs[0][1]


def empty_wishlist(st, rs, closed, secs):
    assert json.loads(rs[0][2]) == {"products": []}, rs[0][2][:200]
    assert "set-cookie" not in rs[0][1]


def literal_search(term):
    def check(st, rs, closed, secs):
        doc = json.loads(rs[0][2])
        t = term.lower()
        for p in doc["products"]:
            assert t in p["name"].lower() or t in p["description"].lower(), (term, p["name"])
        # the same count from the database with a literal substring test
        pos = "strpos" if st.e.env.get("DATABASE_URL") else "instr"   # PostgreSQL / SQLite
        want = st.sql(f"SELECT count(*) FROM products WHERE {pos}(lower(name), ?) > 0 "
                      f"OR {pos}(lower(description), ?) > 0", t, t)[0][0]
        assert doc["total"] == want, (term, doc["total"], want)
    return check


def literal_category(term):
    def check(st, rs, closed, secs):
        doc = json.loads(rs[0][2])
        want = st.sql("SELECT count(*) FROM products WHERE category = ?", term)[0][0]
        assert doc["total"] == want and all(p["category"] == term for p in doc["products"])
    return check


def not_adopted(sent):
    def check(st, rs, closed, secs):
        cookie = rs[0][1].get("set-cookie", "")
        assert cookie.startswith("sid="), f"no fresh session: {rs[0][1]}"
        fresh = cookie[4:].split(";")[0]
        assert fresh != sent and len(fresh) == SID_LEN, cookie
        assert st.sql("SELECT count(*) FROM wishlist WHERE session_id = ?", sent)[0][0] == 0
        assert not st.redis.keys(st.prefix + "sess:" + sent), "the sent id became a session"
        assert st.redis.keys(st.prefix + "sess:" + fresh), "the fresh session is not stored"
        assert st.sql("SELECT count(*) FROM wishlist WHERE session_id = ?", fresh)[0][0] == 1
        # undo: toggle again with the fresh session, the wishlist is as before
        rs2, _, _ = raw(st.e, http_req("POST", "/api/products/p-0002/wishlist", headers={"Cookie": f"sid={fresh}"}))
        assert rs2 and rs2[0][0] == 200 and json.loads(rs2[0][2])["wishlisted"] is False
        st.redis.command("DEL", st.prefix + "sess:" + fresh)
    return check


# ------------------------------------------------------------------- runner

def run_case(st, c):
    before = st.snapshot()
    rs, closed, secs = raw(st.e, c["request"], timeout=c.get("timeout", 5), trickle=c.get("trickle"))
    assert rs, f"no response (closed={closed}, {secs:.2f}s)"
    status, hdrs, body = rs[0]
    assert status == c["status"], f"status {status}, body {body[:200]!r}"
    if c["status"] >= 400:
        assert hdrs.get("content-type") == "application/json", hdrs
        doc = json.loads(body)
        assert doc["success"] is False and doc["message"], doc
        assert doc["error"] == c["code"], f"error {doc['error']!r}: {doc['message']}"
    if c.get("closes"):
        assert hdrs.get("connection") == "close", hdrs
    if "responses" in c:
        assert len(rs) == c["responses"], f"{len(rs)} responses: a pipelined request was executed"
    if c.get("check"):
        c["check"](st, rs, closed, secs)
    h = raw(st.e, http_req("GET", "/health"))[0]
    assert h and h[0][0] == 200, f"engine not healthy after the case: {h[:1]}"
    after = st.snapshot()
    if c.get("mutates"):
        assert after["wishlist"] == before["wishlist"], "wishlist changed"
        assert after["products"][0] == before["products"][0], "product count changed"
    else:
        assert after["products"] == before["products"], "products table changed"
        assert after["wishlist"] == before["wishlist"], "wishlist table changed"
        new = after["keys"] - before["keys"]
        gone = before["keys"] - after["keys"]
        if c.get("cache_ok"):
            bad = [k for k in new if b":sess:" in k or b":user_sessions:" in k]
            assert not bad, f"session keys appeared: {bad[:3]}"
        else:
            assert not new, f"Redis keys appeared: {sorted(new)[:3]}"
        assert not gone or c.get("cache_ok"), f"Redis keys vanished: {sorted(gone)[:3]}"
    return status, c["code"], secs


def main():
    r = Redis()
    e = Engine(r.port, env={"MAX_BODY_BYTES": str(MAX_BODY), "HEADER_TIMEOUT": str(HEADER_TIMEOUT),
                            "KEEPALIVE_TIMEOUT": "2"})
    passed = failed = 0
    try:
        st = State(e, r)
        # warm the cache once so read cases only add what they look up
        raw(e, http_req("GET", "/api/products"))
        table = cases()
        t0 = time.monotonic()
        for c in table:
            try:
                status, code, secs = run_case(st, c)
                passed += 1
                print(f"ok   {c['name']} -> {status} {code or ''} ({secs:.2f}s)", flush=True)
            except Exception as ex:  # noqa: BLE001 - report every case
                failed += 1
                print(f"FAIL {c['name']}: {ex}", flush=True)
                if e.proc.poll() is not None:
                    print("engine exited: stopping", flush=True)
                    break
        print(f"bad-input catalogue: {len(table)} cases, {passed} passed, {failed} failed "
              f"in {time.monotonic() - t0:.1f}s", flush=True)
        assert e.stop() == 0
    finally:
        e.close()
        r.close()
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
