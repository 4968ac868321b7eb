"""Lua host: handler errors, runaway handlers and bad responses become 500s
with a JSON body and request id; the worker keeps serving."""
import json
import time

from harness import Engine, Redis, Runner


def check_500(e, path, fragment):
    t0 = time.monotonic()
    st, hdrs, doc = e.json("GET", path, timeout=30)
    assert st == 500, (st, doc)
    assert doc["success"] is False and doc["error"] == "internal_error"
    assert doc["requestId"] == hdrs["X-Request-Id"]
    assert fragment in doc["message"], doc
    return time.monotonic() - t0


def test_handler_error_is_500_with_request_id_and_logged_traceback(e):
    check_500(e, "/test/error", "handler error")
    time.sleep(0.2)
    log = e.log_text()
    assert "boom from the test handler" in log
    assert "stack traceback" in log


def test_infinite_loop_is_stopped(e):
    check_500(e, "/test/loop", "instruction budget")
    assert e.get("/test/ok")[0] == 200


def test_infinite_loop_inside_pcall_is_stopped(e):
    check_500(e, "/test/pcall-loop", "instruction budget")
    assert e.get("/test/ok")[0] == 200


def test_infinite_loop_in_a_coroutine_of_the_handler_is_stopped(e):
    # The count hook is set on a request's coroutine only once it has run
    # for a tick of CPU time (engine/src/vm.c); coroutines it creates get
    # the hook at once, so their loops are counted too.
    check_500(e, "/test/coroutine-loop", "instruction budget")
    check_500(e, "/test/coroutine-pcall-loop", "instruction budget")
    assert e.get("/test/ok")[0] == 200


def test_memory_blow_up_is_stopped(e):
    check_500(e, "/test/memory", "")
    for _ in range(10):
        assert e.get("/test/ok")[0] == 200


def test_invalid_status_and_header_are_500(e):
    check_500(e, "/test/bad-status", "invalid response")
    check_500(e, "/test/bad-header", "invalid header")


def test_http_fail_answers_its_status(e):
    st, _, doc = e.json("GET", "/test/fail")
    assert st == 418 and doc["error"] == "teapot" and doc["message"] == "short and stout"


def test_every_request_has_its_own_coroutine(e):
    # 20 concurrent sleeping requests on 2 workers finish in about one sleep
    import concurrent.futures as cf
    t0 = time.monotonic()
    with cf.ThreadPoolExecutor(20) as ex:
        res = list(ex.map(lambda _: e.get("/test/sleep?ms=300")[0], range(20)))
    assert res == [200] * 20
    assert time.monotonic() - t0 < 2.5


def test_workers_still_serve_after_all_of_that(e):
    for _ in range(20):
        st, _, doc = e.json("GET", "/test/ok")
        assert st == 200 and doc["ok"] is True
    assert "worker" in e.log_text()
    st, _, h = e.json("GET", "/health")
    assert h["status"] == "ok", h


def main():
    t = Runner()
    r = Redis()
    e = Engine(r.port, env={"LUA_INSTRUCTION_LIMIT": "20000000", "LUA_MEMORY_MB": "64"})
    try:
        t.run_all(globals(), e)
        assert e.stop() == 0
    finally:
        e.close()
        r.close()
    t.done()


if __name__ == "__main__":
    main()
