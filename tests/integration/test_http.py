"""HTTP/1.1 server behaviour over real sockets: keep-alive, pipelining,
HEAD, HTTP/1.0, Date, and every limit with its status and JSON body."""
import json
import socket
import time

from harness import Engine, Redis, Runner, parse_responses, wait_until


def test_keep_alive_reuses_one_connection(e):
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
        for i in range(5):
            s.sendall(f"GET /test/echo?i={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data or len(parse_responses(data)) < 1:
                data += s.recv(65536)
            (status, hdrs, body), = parse_responses(data)
            assert status == 200, status
            assert json.loads(body)["args"]["i"] == str(i)
            assert "close" not in hdrs.get("connection", "")


def test_pipelined_requests_are_answered_in_order(e):
    reqs = b"".join(f"GET /test/echo?n={i} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for i in range(20))
    reqs += b"GET /test/sleep?ms=50 HTTP/1.1\r\nHost: x\r\n\r\nGET /test/echo?n=last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    out = e.raw(reqs)
    rs = parse_responses(out)
    assert len(rs) == 22, len(rs)
    for i in range(20):
        assert json.loads(rs[i][2])["args"]["n"] == str(i)
    assert json.loads(rs[20][2])["slept_ms"] == 50
    assert json.loads(rs[21][2])["args"]["n"] == "last"
    assert rs[21][1]["connection"] == "close"


def test_head_has_length_but_no_body(e):
    out = e.raw(b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    head, _, body = out.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"Content-Length: " in head and not head.endswith(b"Content-Length: 0")
    assert body == b""


def test_http10_closes_unless_keep_alive(e):
    out = e.raw(b"GET /test/echo HTTP/1.0\r\n\r\n")
    rs = parse_responses(out)
    assert rs[0][0] == 200 and rs[0][1]["connection"] == "close"
    assert json.loads(rs[0][2])["http_version"] == "1.0"
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
        s.sendall(b"GET /test/echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        time.sleep(0.2)
        data = s.recv(65536)
        assert b"Connection: keep-alive" in data
        s.sendall(b"GET /test/echo HTTP/1.0\r\n\r\n")
        time.sleep(0.2)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")


def test_date_and_request_id_headers(e):
    status, hdrs, _ = e.get("/health")
    assert status == 200
    assert hdrs["Date"].endswith("GMT")
    assert len(hdrs["X-Request-Id"]) == 16


def test_body_with_content_length(e):
    body = json.dumps({"a": "x" * 3000})  # under MAX_BODY_BYTES (4096)
    status, _, data = e.json("POST", "/test/echo", body, {"Content-Type": "application/json"})
    assert status == 200 and data["body"] == body


def test_expect_100_continue(e):
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
        s.sendall(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        first = s.recv(100)
        assert first.startswith(b"HTTP/1.1 100 Continue"), first
        s.sendall(b"hello")
        data = b""
        deadline = time.time() + 5
        while b"hello" not in data and time.time() < deadline:
            data += s.recv(65536)
        assert b"HTTP/1.1 200" in data


def expect_error(out, status):
    rs = parse_responses(out)
    assert rs, out[:200]
    st, hdrs, body = rs[0]
    assert st == status, (st, body)
    assert hdrs["content-type"] == "application/json"
    doc = json.loads(body)
    assert doc["success"] is False and doc["error"] and doc["message"]
    return doc


def test_header_over_16k_is_431(e):
    expect_error(e.raw(b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 17000 + b"\r\n\r\n"), 431)


def test_body_over_limit_is_413(e):
    # MAX_BODY_BYTES is 4096 for this engine
    expect_error(e.raw(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000), 413)


def test_malformed_request_is_400(e):
    expect_error(e.raw(b"GARBAGE\r\n\r\n"), 400)
    expect_error(e.raw(b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n"), 400)
    expect_error(e.raw(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"), 400)
    expect_error(e.raw(b"GET / HTTP/1.1\r\n\r\n"), 400)   # no Host


def test_unsupported_transfer_encoding_is_501(e):
    expect_error(e.raw(b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"), 501)


CHUNKED = b"POST /test/echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"


def test_chunked_body_is_decoded_and_the_next_request_answered(e):
    body = b"5\r\nhello\r\n6;ext=\"a;b\"\r\n world\r\n0\r\nX-Trailer: dropped\r\n\r\n"
    out = e.raw(CHUNKED + body + b"GET /test/echo?n=after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    rs = parse_responses(out)
    assert len(rs) == 2, out[:300]
    assert rs[0][0] == 200 and json.loads(rs[0][2])["body"] == "hello world"
    assert "x-trailer" not in {k.lower() for k in json.loads(rs[0][2])["headers"]}
    assert rs[1][0] == 200 and json.loads(rs[1][2])["args"]["n"] == "after"


def test_chunked_body_trickled_byte_by_byte(e):
    payload = json.dumps({"a": "y" * 100}).encode()
    body = b"".join(b"%x\r\n%s\r\n" % (len(payload[i:i + 7]), payload[i:i + 7]) for i in range(0, len(payload), 7))
    body += b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(CHUNKED.replace(b"Host: x", b"Host: x\r\nExpect: 100-continue"))
        assert s.recv(100).startswith(b"HTTP/1.1 100 Continue")
        for i in range(len(body)):
            s.sendall(body[i:i + 1])
        data = b""
        while not parse_responses(data):
            data += s.recv(65536)
    (st, _, rbody), = parse_responses(data)
    assert st == 200 and json.loads(rbody)["body"] == payload.decode()


def test_chunked_body_over_limit_is_413_before_its_data(e):
    # MAX_BODY_BYTES is 4096: a chunk size line alone that passes it is refused
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
        s.sendall(CHUNKED + b"1001\r\n")
        data = b""
        while not parse_responses(data):
            data += s.recv(65536)
    doc = expect_error(data, 413)
    assert doc["error"] == "payload_too_large"
    # many chunks under the limit each, over it together
    doc = expect_error(e.raw(CHUNKED + b"400\r\n" + b"x" * 1024 + b"\r\n" + (b"400\r\n" + b"x" * 1024 + b"\r\n") * 4
                             + b"0\r\n\r\n"), 413)
    # exactly at the limit is fine
    st = parse_responses(e.raw(CHUNKED + (b"400\r\n" + b"x" * 1024 + b"\r\n") * 4 + b"0\r\n\r\n"))[0][0]
    assert st == 200, st


def test_malformed_chunked_body_is_400_and_closes(e):
    for bad in (b"x\r\nhello\r\n0\r\n\r\n", b"5\nhello\r\n0\r\n\r\n", b"5\r\nhelloX\r\n0\r\n\r\n",
                b"10000000000000000\r\n", b"5\r\nhello\r\n0\r\nbad trailer\r\n\r\n"):
        out = e.raw(CHUNKED + bad + b"GET /test/echo?n=smuggled HTTP/1.1\r\nHost: x\r\n\r\n")
        rs = parse_responses(out)
        assert len(rs) == 1 and rs[0][1]["connection"] == "close", (bad, out[:300])
        expect_error(out, 400)


def test_http2_version_is_505(e):
    expect_error(e.raw(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n"), 505)


def test_slow_header_gets_408_and_close(e):
    # HEADER_TIMEOUT is 1 s for this engine; trickle bytes to try to keep it alive
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", e.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")
        data = b""
        for _ in range(40):
            try:
                s.sendall(b"X-Slow: 1\r\n")
            except OSError:
                break
            s.settimeout(0.1)
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            except socket.timeout:
                pass
        s.settimeout(5)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (socket.timeout, ConnectionResetError):
            pass
    elapsed = time.monotonic() - t0
    expect_error(data, 408)
    assert elapsed < 5, elapsed


def test_idle_keep_alive_connection_is_closed(e):
    # KEEPALIVE_TIMEOUT is 1 s for this engine
    with socket.create_connection(("127.0.0.1", e.port), timeout=5) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        assert s.recv(100) == b""
        assert time.monotonic() - t0 < 3


def test_unknown_route_is_404_and_wrong_method_is_405(e):
    st, _, doc = e.json("GET", "/nope")
    assert st == 404 and doc["error"] == "not_found"
    st, hdrs, doc = e.json("DELETE", "/health")
    assert st == 405 and doc["error"] == "method_not_allowed"
    assert hdrs["Allow"] == "GET, HEAD"


def test_path_parameters_are_decoded(e):
    st, _, doc = e.json("GET", "/test/items/a%20b")
    assert st == 200 and doc["id"] == "a b"
    st, _, doc = e.json("GET", "/test/echo?q=%ZZ")
    assert st == 400


def test_connection_cap_answers_503():
    r = Redis()
    e = Engine(r.port, workers=1, env={"MAX_CONNECTIONS": "4"})
    socks = []
    try:
        for _ in range(4):
            socks.append(socket.create_connection(("127.0.0.1", e.port), timeout=5))
        time.sleep(0.3)
        out = e.raw(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        expect_error(out, 503)
        for s in socks:
            s.close()
        socks = []
        wait_until(lambda: e.get("/health")[0] == 200, 5, what="service after closing connections")
    finally:
        for s in socks:
            s.close()
        e.close()
        r.close()


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port, env={"MAX_BODY_BYTES": "4096", "HEADER_TIMEOUT": "1", "KEEPALIVE_TIMEOUT": "1"})
    try:
        t.run_all(globals(), e)
        t.run("connection cap answers 503", test_connection_cap_answers_503)
        assert e.stop() == 0
    finally:
        e.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
